"""Speculative decoding under a constraint: the constraint's state follows every node of the draft tree.

``Masked(constraint)`` decoding draws each token from the sampler's law of p restricted to the tokens the
constraint allows after the text so far. In a draft tree every node is another text, so every node has its own
constraint state: its parent's state advanced by the node's token. States are values (``TokenConstraint``), so a
node's state costs one advance and the rejected branches are simply dropped: there is nothing to roll back.

- The verifier is given the target's law after the mask at every node it visits (:meth:`TreeStates.masks`).
- The draft is masked the same way (:class:`MaskedDraft`): random children are drawn from the draft's law
  restricted to the node's allowed tokens (the ``q`` the verifier is given), deterministic children are the best
  allowed tokens, and a drafter's argmax chain is cut at its first disallowed token.

Every verifier returns its target law exactly, whatever the draft, so the output has exactly the law of
``Masked(constraint)`` decoding with the same sampler; masking the draft only spares the target tokens it could
never accept. A node's state is computed when first needed (a visited node, an expanded node, a checked child),
once per (parent state, token) in a round.

AWRS cannot run in speculative rounds: it checks drawn tokens only and estimates the allowed mass, while a
verifier needs the target's exact law after the mask at each node; ``Masked`` draws with the same law.

Example:
    >>> spec = dc.Speculative(dc.ConstraintDraft(dc.NGramDraft(3)), dc.DynamicTree(16),
    ...                       sampler=dc.Masked(dc.Regex(r"[a-z]+@example\\.com"), greedy=True))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from decoding.constraints.base import TokenConstraint
from decoding.samplers.base import Categorical, ConstrainedSampler, SamplerChain, TokenSampler, stateless_law
from decoding.samplers.greedy import Greedy
from decoding.samplers.masked import Masked
from decoding.samplers.sequence.speculative.drafter import Drafter
from decoding.samplers.sequence.speculative.trees import Draft, DraftTree

NEG_INF = float("-inf")
WHY = ("speculative decoding applies it as a law to the target and the draft at every node of a draft tree, "
       "before the target has judged the draft's tokens")


def tree_law(sampler: TokenSampler) -> tuple[SamplerChain, Masked | None]:
    """``sampler`` as the law speculative decoding verifies: stateless transforms, optionally ending in
    ``Greedy()`` or in ``Masked(constraint)`` (whose state follows the tree). Returns the chain and its
    ``Masked`` terminal (None without a constraint); a ValueError names what cannot follow a tree, and why."""
    if not isinstance(sampler, TokenSampler):
        raise TypeError(f"sampler: expected a token sampler, got {type(sampler).__name__}")
    stages = sampler.stages
    last = stages[-1]
    if not (isinstance(last, TokenSampler) and last.terminal and last.stateful):
        return stateless_law(sampler, "sampler", WHY), None
    if isinstance(last, ConstrainedSampler) and type(last) is not Masked:
        raise ValueError(f"sampler: {last!r} cannot verify draft trees: it checks only the tokens it draws and "
                         "estimates the allowed mass, while a speculative verifier needs the target's exact law after "
                         "the constraint's mask at every node; use dc.Masked(constraint) (the same token law, exact)")
    if type(last) is not Masked:
        raise ValueError(f"sampler: {last!r} keeps per-sequence state that speculative decoding cannot follow along a "
                         "draft tree; end the sampler with dc.Greedy(), dc.Masked(constraint) or nothing")
    if not last.has_mask:
        raise ValueError(f"sampler: {last!r} has no token mask (a Predicate is checked token by token), but a "
                         "speculative verifier needs the allowed set at every node; use a Regex, JsonSchema or Grammar")
    if not last.constraint.states_are_values:
        raise ValueError(f"sampler: the constraint {last.constraint!r} changes its states in place "
                         "(states_are_values=False), so its state cannot follow the branches of a draft tree and be "
                         "rolled back; decode it without speculation (dc.Masked alone)")
    head = stateless_law(SamplerChain(stages[:-1]), "sampler", WHY) if len(stages) > 1 else None
    return SamplerChain((*(head.stages if head else ()), last)), last


def draft_law(chain: SamplerChain, masked: Masked) -> SamplerChain:
    """The law random children are drawn with, given a draft already restricted to the allowed tokens: the chain's
    transforms then its draw (restricting twice to one mask is restricting once, so this is the chain's law)."""
    return SamplerChain((*chain.stages[:-1], Greedy() if masked.greedy else Categorical()))


class TreeStates:
    """The constraint state of each node of one round's draft tree, computed when first needed, and its mask.

    States live in ``pool``, once per distinct value (rows and branches in the same state share its mask, forced
    bytes and drafts); ``tree.data["state"]`` ([B, N] int64, -1: not computed yet) indexes it, so the tree's own
    bookkeeping (``subset``) carries it. A (parent state, token) pair is advanced once per round.

    Example:
        >>> states = TreeStates(constraint, tree, roots, lm.vocab_size)         # doctest: +SKIP
        >>> states.masks(torch.zeros(len(roots), 1, dtype=torch.long))  # the roots' masks, [B, 1, V]  # doctest: +SKIP
    """

    def __init__(self, constraint: TokenConstraint, tree: DraftTree, roots: Sequence, vocab_size: int):
        self.constraint, self.tree, self.vocab_size = constraint, tree, vocab_size
        self.pool: list = []
        self._ids: dict = {}  # state -> pool index
        self._children: dict[tuple[int, int], int] = {}  # (parent's pool index, token) -> child's
        self._masks: dict[int, torch.Tensor] = {}
        self._counts: dict[int, int] = {}
        index = torch.full(tree.tokens.shape, -1, dtype=torch.long)
        index[:, 0] = torch.tensor([self._intern(s) for s in roots], dtype=torch.long)
        tree.data["state"] = index.to(tree.tokens.device)
        tree.constraint = self

    def _intern(self, state) -> int:
        """The pool index of ``state``, added if new (states are values: equal states share one index; an
        unhashable state gets its own)."""
        try:
            index = self._ids.get(state)
        except TypeError:
            index = None
            self.pool.append(state)
            return len(self.pool) - 1
        if index is None:
            index = self._ids[state] = len(self.pool)
            self.pool.append(state)
        return index

    def index(self, nodes: torch.Tensor) -> torch.Tensor:
        """Pool indices of the states of ``nodes`` ([B, F] node numbers, -1: none): CPU int64 [B, F], -1 where
        none, computing the missing states."""
        nodes = nodes.cpu()
        rows = torch.arange(nodes.shape[0])[:, None].expand_as(nodes)
        some = nodes >= 0
        out = torch.full(nodes.shape, -1, dtype=torch.long)
        out[some] = self.index_at(rows[some], nodes[some])
        return out

    def index_at(self, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Pool indices of the states of nodes ``nodes`` of rows ``rows`` ([n] each): CPU int64 [n]."""
        rows, nodes = rows.cpu(), nodes.cpu()
        have = self.tree.data["state"].cpu()
        if bool((have[rows, nodes] < 0).any()):
            have = self._fill(rows, nodes)
        return have[rows, nodes]

    def _fill(self, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Compute the states of these nodes and of their missing ancestors, parents first."""
        tree = self.tree
        parent, depth = tree.parent[:, : tree.size].cpu(), tree.depth[:, : tree.size].cpu()
        tokens = tree.tokens[:, : tree.size].cpu()
        have = tree.data["state"].cpu().clone()
        need = torch.zeros_like(parent, dtype=torch.bool)
        need[rows, nodes] = True
        for _ in range(int(depth.max())):  # every missing ancestor is needed too
            up = need & (have[:, : tree.size] < 0) & (parent >= 0)
            rr, cc = up.nonzero(as_tuple=True)
            need[rr, parent[rr, cc]] = True
        for d in range(1, int(depth.max()) + 1):  # parents first
            rr, cc = (need & (have[:, : tree.size] < 0) & (depth == d)).nonzero(as_tuple=True)
            if len(rr):
                have[rr, cc] = self.advance(have[rr, parent[rr, cc]], tokens[rr, cc])
        tree.data["state"] = have.to(tree.tokens.device)
        return have

    def advance(self, parents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Pool indices of the states after ``tokens`` from the states ``parents`` (pool indices), [n] each."""
        keys = list(zip(parents.tolist(), tokens.tolist()))
        todo = list(dict.fromkeys(k for k in keys if k not in self._children))
        if todo:
            after = self.constraint.advance_batch([self.pool[p] for p, _ in todo], [t for _, t in todo])
            for key, state in zip(todo, after):
                self._children[key] = self._intern(state)
        return torch.tensor([self._children[k] for k in keys], dtype=torch.long)

    def states(self, index: torch.Tensor) -> list:
        """The states at pool indices (a flat list, in order)."""
        return [self.pool[i] for i in index.reshape(-1).tolist()]

    def allowed(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """bool [B, F, K]: whether each token may follow its node (one advance each, no mask), False where a node
        or a token is -1."""
        index = self.index(nodes)
        b, f, k = tokens.shape
        ok = (index[..., None] >= 0) & (tokens.cpu() >= 0)
        out = torch.zeros((b, f, k), dtype=torch.bool)
        if bool(ok.any()):
            parents = index[..., None].expand(b, f, k)[ok]
            children = self.advance(parents, tokens.cpu()[ok])
            out[ok] = self.alive(children)
        return out.to(tokens.device)

    def alive(self, index: torch.Tensor) -> torch.Tensor:
        """bool [n]: which pool states are not ``DEAD``."""
        return torch.from_numpy(~self.constraint.dead_batch(self.states(index)))

    def masks(self, nodes: torch.Tensor) -> torch.Tensor:
        """bool [B, F, V] on the tree's device: the tokens allowed after each node (all False where a node is -1)."""
        return self._masks_of(self.index(nodes))

    def masks_at(self, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """bool [n, V]: the tokens allowed after node ``nodes[i]`` of row ``rows[i]``."""
        return self._masks_of(self.index_at(rows, nodes))

    def _masks_of(self, index: torch.Tensor) -> torch.Tensor:
        flat = index.reshape(-1).tolist()
        self._compute_masks(flat)
        device = self.tree.tokens.device
        if min(flat, default=0) >= 0:
            rows = [self._masks[i].to(device) for i in flat]
        else:
            none = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
            rows = [self._masks[i].to(device) if i >= 0 else none for i in flat]
        return torch.stack(rows).reshape(*index.shape, self.vocab_size)

    def mask_of(self, index: int) -> torch.Tensor:
        """bool [V]: the tokens allowed in the pool state ``index`` (memoised for the round)."""
        self._compute_masks([index])
        return self._masks[index]

    def count_of(self, index: int) -> int:
        """How many tokens the pool state ``index`` allows (memoised for the round)."""
        count = self._counts.get(index)
        if count is None:
            count = self._counts[index] = int(self.mask_of(index).sum())
        return count

    def _compute_masks(self, index: list[int]) -> None:
        fresh = [i for i in dict.fromkeys(index) if i >= 0 and i not in self._masks]
        if fresh:
            for i, mask in zip(fresh, self.constraint.mask_batch([self.pool[i] for i in fresh])):
                self._masks[i] = mask


class MaskedDraft:
    """A bound drafter (the tree shapes' ``Draft``) whose every proposal is allowed by the node's state. Nothing is
    drafted below an EOS node (the row ends there)."""

    def __init__(self, draft: Draft, drafter: Drafter, states: TreeStates, eos: torch.Tensor):
        self.draft, self.states, self.eos = draft, states, eos
        self._sparse = type(drafter).top is not Drafter.top  # its top() needs no [B, F, V] table

    def _open(self, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:
        """``nodes`` with the EOS nodes taken out (-1)."""
        tokens = tree.tokens.gather(1, nodes.clamp_min(0))
        return torch.where(torch.isin(tokens, self.eos.to(tokens.device)), -1, nodes)

    def expand(self, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:
        """The draft's log q after each node restricted to the allowed tokens and renormalised: [B, F, V]."""
        nodes = self._open(tree, nodes)
        kept = self.draft.expand(tree, nodes).masked_fill(~self.states.masks(nodes), NEG_INF)
        mass = kept.logsumexp(-1, keepdim=True)
        return torch.where(torch.isfinite(mass), kept - mass, NEG_INF)

    def top(self, tree: DraftTree, nodes: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best allowed tokens: a sparse drafter's candidates checked one advance each (it is asked for 2k,
        the disallowed dropped), a dense drafter's table masked."""
        nodes = self._open(tree, nodes)
        if not self._sparse:
            logq, tokens = self.expand(tree, nodes).topk(k, dim=-1)
            return logq, torch.where(torch.isfinite(logq), tokens, -1)
        logq, tokens = self.draft.top(tree, nodes, 2 * k)
        ok = self.states.allowed(nodes, tokens) & torch.isfinite(logq)
        order = torch.sort((~ok).long(), dim=-1, stable=True).indices[..., :k]  # allowed first, in rank order
        ok, logq, tokens = ok.gather(-1, order), logq.gather(-1, order), tokens.gather(-1, order)
        return torch.where(ok, logq, NEG_INF), torch.where(ok, tokens, -1)

    def chain(self, tree: DraftTree, depth: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The drafter's argmax chain, cut before its first disallowed token."""
        found = self.draft.chain(tree, depth)
        if found is None:
            return None
        logq, tokens = found
        ok = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        state = self.states.index(torch.zeros((tokens.shape[0], 1), dtype=torch.long))[:, 0]
        for d in range(tokens.shape[1]):  # one level per pass, every row at once
            ok &= tokens[:, d] >= 0
            nxt = self.states.advance(state, tokens[:, d].cpu().clamp_min(0))
            ok &= self.states.alive(nxt).to(ok.device)
            tokens[:, d] = torch.where(ok, tokens[:, d], -1)
            state = nxt
        return logq, tokens

