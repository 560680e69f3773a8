"""Draft trees: the batched tree a drafter grows each round, and the shapes that decide how it grows.

A :class:`DraftTree` holds B trees at once as [B, N] tensors. Node 0 of every row is the root: the last emitted
token, which the target has not seen yet, so one target forward over the N nodes yields the target's
distribution at the root and after every drafted node. Nodes are stored parents first, children in the order
they were drawn; padding nodes are marked invalid.

Shapes (each names the law its children are drawn with, which fixes the verifiers that may check them):

- :class:`Chain` ``(k)``: one child per node, drawn from q: speculative sampling (Leviathan et al., ICML 2023;
  Chen et al., 2023). Law "iid".
- :class:`MultiDraft` ``(k, depth, draws)``: k children per node, a full k-ary tree; ``draws`` is "iid" (SpecInfer,
  Miao et al., ASPLOS 2024), "without_replacement" (Sequoia, Chen et al., 2024), "greedy" (the top k-1 tokens of q
  plus one draw from the rest: Hu et al., ICLR 2025) or "deterministic" (the top k of q: EAGLE's static tree).
- :class:`DynamicTree` ``(budget, max_depth, top_k)``: children chosen without randomness, best first by the draft's
  path probability (DySpec, Xiong et al., 2024): the tree spends its node budget where the draft expects
  acceptance. ``method="eagle"`` grows it as EAGLE-2 does (Li et al., EMNLP 2024): per depth, expand the global
  top-k nodes, then rerank every node and keep the best ``budget``. Law "deterministic".

Deterministic children are chosen from the draft's own distribution (untransformed), so a tree still branches
when the sampler is ``Greedy()``; random children are drawn from the draft transformed by the sampler, the same
law the verifier is given.

Example:
    >>> tree = DynamicTree(budget=16, max_depth=8, top_k=4)      # 16 draft tokens per target forward
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Protocol

import torch

from decoding.kernels.random import RowStreams
from decoding.samplers.base import check_int
from decoding.samplers.sequence.speculative.drafting import draw_children

NEG_INF = float("-inf")
LAWS = ("iid", "without_replacement", "greedy", "deterministic")


class DraftTree:
    """B draft trees of at most N nodes each, as tensors; node 0 is the root.

    Attributes:
        tokens, parent, depth: [B, N] int64 (parent -1 at the root and at padding).
        valid: [B, N] bool, False for padding nodes.
        score: [B, N] float32 log-probability of the node's path under the (untransformed) draft.
        logq: [B, N, V] the transformed draft law each expanded node's children were drawn from (random laws
            only; None for deterministic shapes, whose verifier needs no q).
        data: per-node tensors [B, N, ...] a drafter keeps with the tree (a model draft's cache slots); they are
            carried through :meth:`subset`.
        constraint: under a constraint, the nodes' constraint states and masks (``constrained.TreeStates``),
            for drafters that read them (``dc.ConstraintDraft``); None otherwise.
    """

    def __init__(self, roots: torch.Tensor, capacity: int):
        b, device = roots.shape[0], roots.device
        self.tokens = torch.zeros((b, capacity), dtype=torch.long, device=device)
        self.tokens[:, 0] = roots
        self.parent = torch.full((b, capacity), -1, dtype=torch.long, device=device)
        self.depth = torch.zeros((b, capacity), dtype=torch.long, device=device)
        self.valid = torch.zeros((b, capacity), dtype=torch.bool, device=device)
        self.valid[:, 0] = True
        self.score = torch.full((b, capacity), NEG_INF, device=device)
        self.score[:, 0] = 0.0
        self.size = 1
        self.logq: torch.Tensor | None = None
        self.data: dict[str, torch.Tensor] = {}
        self.constraint = None

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def add(self, parents: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Append F nodes per row (children of ``parents``, [B, F]); returns their node indices [B, F]."""
        f = parents.shape[1]
        cols = slice(self.size, self.size + f)
        rows = torch.arange(self.batch_size, device=parents.device)[:, None]
        valid = valid & (parents >= 0)
        self.tokens[:, cols] = torch.where(valid, tokens, 0)
        self.parent[:, cols] = torch.where(valid, parents, -1)
        self.depth[:, cols] = self.depth[rows, parents.clamp_min(0)] + 1
        self.valid[:, cols] = valid
        self.score[:, cols] = torch.where(valid, score, NEG_INF)
        self.size += f
        return torch.arange(cols.start, cols.stop, device=parents.device).expand(self.batch_size, f)

    def paths(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens from below the root down to each node: paths [B, F, D] (-1 padded) and lengths [B, F]."""
        rows = torch.arange(self.batch_size, device=nodes.device)[:, None]
        lengths = torch.where(nodes >= 0, self.depth[rows, nodes.clamp_min(0)], 0)
        width = max(int(lengths.max()) if lengths.numel() else 0, 1)
        paths = torch.full((*nodes.shape, width), -1, dtype=torch.long, device=nodes.device)
        cur = nodes.clamp_min(0)
        for _ in range(width):  # climb one level per pass, every row and node at once
            d = self.depth[rows, cur]
            here = (nodes >= 0) & (d > 0)
            at = (d - 1).clamp_min(0)[..., None]
            paths.scatter_(2, at, torch.where(here[..., None], self.tokens[rows, cur][..., None], paths.gather(2, at)))
            cur = torch.where(here, self.parent[rows, cur], cur)
        return paths, lengths

    def subset(self, keep: torch.Tensor) -> None:
        """Keep the nodes where ``keep`` [B, size] is True (ancestor-closed), renumbered in their order."""
        keep = keep[:, : self.size] & self.valid[:, : self.size]
        keep[:, 0] = True
        width = int(keep.sum(-1).max())
        order = torch.sort((~keep).long(), dim=1, stable=True).indices[:, :width]  # kept nodes first, in order
        new_index = torch.where(keep, keep.long().cumsum(-1) - 1, -1)
        rows = torch.arange(self.batch_size, device=keep.device)[:, None]
        kept = keep.gather(1, order)
        parent = self.parent[:, : self.size].gather(1, order)
        self.parent = torch.where(kept & (parent >= 0), new_index[rows, parent.clamp_min(0)], -1)
        for name in ("tokens", "depth", "valid", "score"):
            setattr(self, name, getattr(self, name)[:, : self.size].gather(1, order))
        self.valid &= kept
        self.data = {k: v[rows, order] for k, v in self.data.items()}
        self.logq = None if self.logq is None else self.logq[rows, order]
        self.size = width

    def children(self) -> torch.Tensor:
        """[B, N, K] the node indices of each node's children in the order they were added, -1 padded."""
        n = self.size
        parent = torch.where(self.valid[:, :n], self.parent[:, :n], -1)
        is_child = parent[:, :, None] == torch.arange(n, device=parent.device)  # [B, child, parent]
        rank = is_child.long().cumsum(1) - 1
        k = max(int(is_child.sum(1).max()), 1)
        out = torch.full((self.batch_size, n, k), -1, dtype=torch.long, device=parent.device)
        b, child, par = is_child.nonzero(as_tuple=True)
        out[b, par, rank[b, child, par]] = child
        return out


class Draft(Protocol):
    """A drafter bound to its state: the draft distributions after tree nodes ([B, F] node indices, -1: none)."""

    def expand(self, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:  # raw log q [B, F, V]
        ...

    def top(self, tree: DraftTree, nodes: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        ...  # the k best (log q [B, F, k], tokens [B, F, k], -1 where q = 0)

    def chain(self, tree: DraftTree, depth: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        ...  # the argmax path below the root in one call (log q [B, depth], tokens [B, depth]), or None


Law = Callable[[torch.Tensor], torch.Tensor]  # raw draft log q [R, V] -> the sampler's law of it [R, V]


class TreeShape:
    """How a draft tree grows each round. ``draws`` names how its children are drawn (see the module docstring)."""

    draws: str = "deterministic"

    @property
    def law(self) -> str:
        """Deprecated name of ``draws`` (until 0.3)."""
        warnings.warn("TreeShape.law is deprecated; use .draws", DeprecationWarning, stacklevel=2)
        return self.draws

    @property
    def max_nodes(self) -> int:
        """Draft nodes at most (the root excluded): the budget of one round."""
        raise NotImplementedError

    @property
    def capacity(self) -> int:
        """Nodes the tree may hold while it grows, the root included."""
        return 1 + self.max_nodes

    def grow(self, tree: DraftTree, draft: Draft, transform: Law, rng: RowStreams) -> None:
        """Grow ``tree`` (holding only its roots) with draft distributions from ``draft``."""
        raise NotImplementedError

    def under_greedy(self) -> "TreeShape":
        """The shape that drafts the same children when the sampler is ``Greedy()`` (its law a point mass)."""
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class MultiDraft(TreeShape):
    """A full tree: ``k`` children for every node down to ``depth``, drawn by ``draws`` (see the module docstring).

    Args:
        k: children per node (>= 1).
        depth: levels below the root (>= 1); the tree has k + k^2 + ... + k^depth draft nodes.
        draws: "iid", "without_replacement", "greedy" or "deterministic".

    Example:
        >>> MultiDraft(k=2, depth=3, draws="without_replacement").max_nodes
        14
    """

    def __init__(self, k: int, depth: int, draws: str = "iid"):
        self.k = check_int("k", k, 1)
        self.depth = check_int("depth", depth, 1)
        if draws not in LAWS:
            raise ValueError(f"draws must be one of {LAWS}, got {draws!r}")
        self.draws = draws

    @property
    def max_nodes(self) -> int:
        return sum(self.k**d for d in range(1, self.depth + 1))

    def under_greedy(self) -> "MultiDraft":
        """Random draws from a point mass are its one token: k i.i.d. copies would be duplicates the target can
        never accept twice, so under a ``Greedy()`` sampler the random laws draft a chain of the draft's argmax."""
        return self if self.draws == "deterministic" else MultiDraft(1, self.depth, "deterministic")

    def grow(self, tree, draft, transform, rng):
        if self.k == 1 and self.draws == "deterministic" and self._grow_chain(tree, draft):
            return
        b, device = tree.batch_size, tree.tokens.device
        frontier = torch.zeros((b, 1), dtype=torch.long, device=device)  # same node numbers in every row
        live = torch.ones((b, 1), dtype=torch.bool, device=device)
        for _ in range(self.depth):
            if not bool(live.any()):
                break
            nodes = torch.where(live, frontier, -1)
            if self.draws == "deterministic":  # the k best tokens, sparse: no [B, F, V] table
                raw_lq, kids = draft.top(tree, nodes, self.k)
                raw_lq, kids = raw_lq.reshape(b, -1), kids.reshape(b, -1)
            else:
                raw_lq, kids = self._draw(tree, draft, transform, rng, frontier, nodes)
            parents = frontier.repeat_interleave(self.k, dim=1)
            valid = (kids >= 0) & live.repeat_interleave(self.k, dim=1)
            score = tree.score.gather(1, parents) + raw_lq
            frontier = tree.add(parents, kids.clamp_min(0), valid, score)
            live = valid

    def _grow_chain(self, tree: DraftTree, draft: Draft) -> bool:
        """The argmax chain in one drafter call, when the drafter has one (``Draft.chain``); False otherwise."""
        found = draft.chain(tree, self.depth)
        if found is None:
            return False
        logq, tokens = (t.to(tree.tokens.device) for t in found)
        valid = tokens >= 0  # -1 after the path ends
        score = logq.cumsum(1)
        node = torch.zeros((tree.batch_size, 1), dtype=torch.long, device=tree.tokens.device)
        for d in range(self.depth):  # one level per pass, every row at once
            ok = valid[:, d : d + 1]
            node = tree.add(node, tokens[:, d : d + 1].clamp_min(0), ok, score[:, d : d + 1])
        return True

    def _draw(self, tree: DraftTree, draft: Draft, transform: Law, rng: RowStreams, frontier: torch.Tensor,
              nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random children of ``nodes`` from the transformed draft, recorded in ``tree.logq``: (raw log q of
        each child, child tokens), each [B, F * k], -1 where a law has no further token."""
        b = tree.batch_size
        raw = draft.expand(tree, nodes)  # [B, F, V]
        f, v = raw.shape[1], raw.shape[2]
        some = torch.isfinite(raw).any(-1).reshape(b * f, 1)  # a row of q = 0 proposes nothing
        law = torch.where(some, transform(raw.reshape(b * f, v)), NEG_INF)
        u = rng.uniform(f * self.k, device=raw.device).reshape(b * f, self.k)
        kids = draw_children(law.exp(), self.k, self.draws, u).reshape(b, f * self.k)
        if tree.logq is None:
            tree.logq = torch.full((b, tree.tokens.shape[1], v), NEG_INF, device=raw.device)
        tree.logq[:, frontier[0]] = law.reshape(b, f, v)  # node numbers are the same in every row
        return raw.gather(2, kids.clamp_min(0).reshape(b, f, self.k)).reshape(b, f * self.k), kids


class Chain(MultiDraft):
    """One draft continuation of ``k`` tokens, each drawn from the transformed draft (speculative sampling).

    Example:
        >>> Chain(4).max_nodes
        4
    """

    def __init__(self, k: int):
        super().__init__(1, check_int("k", k, 1), "iid")

    def __repr__(self) -> str:
        return f"Chain({self.depth})"


class DynamicTree(TreeShape):
    """Best-first token tree under a node budget (DySpec), or EAGLE-2's expand-then-rerank (``method="eagle"``).

    Every node's value is the draft probability of its path, the draft's estimate that the target accepts it.
    ``best_first``: take the best candidates (children of drafted nodes), ``top_k`` per draft call, until the
    budget is spent; a candidate's children become candidates when it is drafted. ``eagle``: at each depth expand
    the global top ``top_k`` nodes of that depth (their top ``top_k`` children each), then keep the ``budget``
    best nodes overall (ties keep parents before children, so the kept set is a tree).

    Args:
        budget: draft nodes per round (>= 1), the tree's size without its root.
        max_depth: deepest level (>= 1).
        top_k: children considered per drafted node, and nodes drafted per draft call (>= 1).
        method: "best_first" (DySpec) or "eagle" (EAGLE-2).

    Example:
        >>> DynamicTree(budget=32, max_depth=12, top_k=4).max_nodes
        32
    """

    draws = "deterministic"

    def __init__(self, budget: int, max_depth: int = 16, top_k: int = 4, method: str = "best_first"):
        self.budget = check_int("budget", budget, 1)
        self.max_depth = check_int("max_depth", max_depth, 1)
        self.top_k = check_int("top_k", top_k, 1)
        if method not in ("best_first", "eagle"):
            raise ValueError(f"method must be 'best_first' or 'eagle', got {method!r}")
        self.method = method

    @property
    def max_nodes(self) -> int:
        return self.budget

    @property
    def capacity(self) -> int:
        if self.method == "eagle":  # every expanded candidate stays until the rerank
            return 1 + self.top_k + (self.max_depth - 1) * self.top_k**2
        return 1 + self.budget * self.top_k  # a pass adds up to top_k columns, some of them padding in some rows

    def grow(self, tree, draft, transform, rng):
        if self.method == "eagle":
            self._grow_eagle(tree, draft)
        else:
            self._grow_best_first(tree, draft)

    def _candidates(self, tree: DraftTree, nodes: torch.Tensor, draft: Draft):
        """The top_k children of each node in ``nodes`` [B, F]: (scores, parents, tokens), each [B, F * top_k]."""
        logq, tokens = draft.top(tree, nodes, self.top_k)
        b, f, k = logq.shape
        ok = (nodes >= 0)[..., None] & torch.isfinite(logq) & (tokens >= 0)
        base = tree.score.gather(1, nodes.clamp_min(0))[..., None]
        scores = torch.where(ok, base + logq, NEG_INF).reshape(b, f * k)
        parents = nodes[..., None].expand(b, f, k).reshape(b, f * k)
        return scores, parents, tokens.clamp_min(0).reshape(b, f * k)

    def _grow_best_first(self, tree: DraftTree, draft: Draft) -> None:
        b, device = tree.batch_size, tree.tokens.device
        new = torch.zeros((b, 1), dtype=torch.long, device=device)
        pool = None  # candidates: (path log q, parent node, token), each [B, C]; taken ones score -inf
        left = torch.full((b,), self.budget, device=device)  # nodes each row may still add
        while True:
            deep_enough = tree.depth.gather(1, new.clamp_min(0)) >= self.max_depth
            expandable = torch.where(deep_enough, -1, new)
            if bool((expandable >= 0).any()):
                found = self._candidates(tree, expandable, draft)
                pool = found if pool is None else tuple(torch.cat([a, c], 1) for a, c in zip(pool, found))
            if pool is None:
                return
            w = int(torch.minimum(torch.isfinite(pool[0]).sum(1), left).clamp_max(self.top_k).max())
            if w == 0:  # every row has spent its budget or run out of candidates
                return
            score, pick = pool[0].topk(w, dim=1)
            valid = torch.isfinite(score) & (torch.arange(w, device=device) < left[:, None])
            new = tree.add(pool[1].gather(1, pick), pool[2].gather(1, pick), valid, score)
            new = torch.where(valid, new, -1)
            pool = (pool[0].scatter(1, pick, torch.where(valid, NEG_INF, score)),) + pool[1:]
            left -= valid.sum(1)

    def _grow_eagle(self, tree: DraftTree, draft: Draft) -> None:
        frontier = torch.zeros((tree.batch_size, 1), dtype=torch.long, device=tree.tokens.device)
        for _ in range(self.max_depth):
            if not bool((frontier >= 0).any()):
                break
            score, parents, tokens = self._candidates(tree, frontier, draft)
            valid = torch.isfinite(score)
            nodes = torch.where(valid, tree.add(parents, tokens, valid, score), -1)
            k = min(self.top_k, nodes.shape[1])
            best, pick = score.topk(k, dim=1)
            frontier = torch.where(torch.isfinite(best), nodes.gather(1, pick), -1)
        order = torch.sort(tree.score[:, : tree.size], dim=1, descending=True, stable=True).indices
        keep = torch.zeros_like(tree.valid[:, : tree.size])
        keep.scatter_(1, order[:, : self.budget + 1], True)  # the root (score 0, first) and the best `budget`
        tree.subset(keep)
