"""Tree shapes: which nodes each shape drafts, checked against brute-force enumeration of a fixed draft law."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import decoding as dc
from decoding.kernels.random import RowStreams
from decoding.samplers.sequence.speculative.trees import DraftTree, MultiDraft

NEG_INF = float("-inf")
VOCAB = 6


class TableDraft:
    """A draft whose q after a node depends only on the row and the node's last token: ``laws[row][token]`` is a
    {follower: q} dict (missing: no proposal)."""

    def __init__(self, laws: list[dict[int, dict[int, float]]]):
        self.laws = laws

    def _q(self, row: int, token: int) -> torch.Tensor:
        out = torch.full((VOCAB,), NEG_INF)
        for t, q in self.laws[row].get(token, {}).items():
            out[t] = math.log(q)
        return out

    def expand(self, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:
        out = torch.full((*nodes.shape, VOCAB), NEG_INF)
        for b, f in itertools.product(range(nodes.shape[0]), range(nodes.shape[1])):  # a test oracle: loops are fine
            if nodes[b, f] >= 0:
                out[b, f] = self._q(b, int(tree.tokens[b, nodes[b, f]]))
        return out

    def top(self, tree: DraftTree, nodes: torch.Tensor, k: int):
        logq, tokens = self.expand(tree, nodes).topk(k, dim=-1)
        return logq, torch.where(torch.isfinite(logq), tokens, -1)

    def chain(self, tree: DraftTree, depth: int):
        return None  # no fast path: shapes climb level by level


class ChainDraft(TableDraft):
    """The same table, with the argmax path drafted in one call (as NGramDraft does)."""

    def chain(self, tree: DraftTree, depth: int):
        logq = torch.full((tree.batch_size, depth), NEG_INF)
        tokens = torch.full((tree.batch_size, depth), -1)
        for b in range(tree.batch_size):
            last = int(tree.tokens[b, 0])
            for d in range(depth):
                law = self.laws[b].get(last, {})
                if not law:
                    break
                last, q = max(law.items(), key=lambda tq: tq[1])
                tokens[b, d], logq[b, d] = last, math.log(q)
        return logq, tokens


def grow(shape, draft: TableDraft, roots: list[int], law=lambda raw: torch.log_softmax(raw, -1)) -> DraftTree:
    tree = DraftTree(torch.tensor(roots), shape.capacity)
    rng = RowStreams.from_seed(0, len(roots)).select(torch.arange(len(roots)))
    shape.grow(tree, draft, law, rng)
    tree.subset(tree.valid)
    return tree


def node_paths(tree: DraftTree, row: int) -> set[tuple[int, ...]]:
    """Every drafted node of a row as its token path below the root."""
    out = set()
    for j in range(1, tree.size):
        if not tree.valid[row, j]:
            continue
        path, node = [], j
        while node > 0:
            path.append(int(tree.tokens[row, node]))
            node = int(tree.parent[row, node])
        out.add(tuple(reversed(path)))
    return out


def best_paths(laws: dict[int, dict[int, float]], root: int, budget: int, max_depth: int,
               top_k: int) -> set[tuple[int, ...]]:
    """Brute force: the ``budget`` most probable paths below ``root`` of depth <= max_depth whose every step is
    one of the ``top_k`` best followers."""
    scored, frontier = [], [((), root, 1.0)]
    for _ in range(max_depth):
        frontier = [(path + (t,), t, p * q) for path, last, p in frontier
                    for t, q in sorted(laws.get(last, {}).items(), key=lambda tq: -tq[1])[:top_k]]
        scored += [(p, path) for path, _, p in frontier]
    return top_set(scored, budget)


def top_set(scored: list[tuple[float, tuple]], count: int) -> set[tuple]:
    ranked = sorted(scored, reverse=True)
    if count < len(ranked):
        assert ranked[count - 1][0] > ranked[count][0] * (1 + 1e-6), "a tie at the cut: the oracle is ambiguous"
    return {path for _, path in ranked[:count]}


def eagle_paths(laws: dict[int, dict[int, float]], root: int, budget: int, max_depth: int, top_k: int):
    """Brute force EAGLE-2: per depth, the top_k children of the global top_k nodes of that depth; then the
    ``budget`` best of every node expanded."""
    def children(path, last, p):
        best = sorted(laws.get(last, {}).items(), key=lambda tq: -tq[1])[:top_k]
        return [(p * q, path + (t,), t) for t, q in best]

    scored, frontier = [], [(1.0, (), root)]
    for _ in range(max_depth):
        level = [c for node in frontier for c in children(node[1], node[2], node[0])]
        scored += [(p, path) for p, path, _ in level]
        frontier = sorted(level, reverse=True)[:top_k]
    return top_set(scored, budget)


# Row 0: a single follower everywhere (a chain); row 1: three followers whose q depends on the token, so no two
# paths tie.
CHAIN = {t: {(t + 1) % VOCAB: 1.0} for t in range(VOCAB)}
BUSHY = {t: {(t + 1) % VOCAB: 0.5 + 0.031 * t, (t + 2) % VOCAB: 0.3 - 0.017 * t, (t + 3) % VOCAB: 0.2 - 0.014 * t}
         for t in range(VOCAB)}


@pytest.mark.parametrize("budget,top_k", [(7, 3), (10, 2), (12, 4)])
def test_best_first_gives_every_row_its_budget_of_best_paths(budget, top_k):
    shape = dc.DynamicTree(budget=budget, max_depth=budget, top_k=top_k)
    tree = grow(shape, TableDraft([CHAIN, BUSHY]), [0, 0])
    assert tree.valid[:, 1:].sum(1).tolist() == [budget, budget]
    for row, laws in enumerate([CHAIN, BUSHY]):
        assert node_paths(tree, row) == best_paths(laws, 0, budget, budget, top_k)


def test_best_first_respects_max_depth_and_rows_without_proposals():
    draft = TableDraft([CHAIN, {}, BUSHY])
    tree = grow(dc.DynamicTree(budget=9, max_depth=2, top_k=3), draft, [0, 0, 0])
    assert tree.valid[:, 1:].sum(1).tolist() == [2, 0, 9]  # the chain stops at depth 2; row 1 proposes nothing
    assert int(tree.depth[tree.valid].max()) == 2
    assert node_paths(tree, 2) == best_paths(BUSHY, 0, 9, 2, 3)


@pytest.mark.parametrize("budget,max_depth,top_k", [(5, 3, 2), (8, 4, 3), (3, 2, 1)])
def test_eagle_keeps_the_best_nodes_of_its_expansion(budget, max_depth, top_k):
    shape = dc.DynamicTree(budget=budget, max_depth=max_depth, top_k=top_k, method="eagle")
    tree = grow(shape, TableDraft([BUSHY, BUSHY]), [0, 3])
    for row, root in enumerate([0, 3]):
        assert node_paths(tree, row) == eagle_paths(BUSHY, root, budget, max_depth, top_k)


def test_deterministic_multidraft_takes_the_top_k_and_stops_where_nothing_is_proposed():
    tree = grow(dc.MultiDraft(2, 2, draws="deterministic"), TableDraft([BUSHY, {}, {0: {1: 1.0}}]), [0, 0, 0])
    assert node_paths(tree, 0) == {(1,), (2,), (1, 2), (1, 3), (2, 3), (2, 4)}  # the two best of each node
    assert node_paths(tree, 1) == set()
    assert node_paths(tree, 2) == {(1,)}  # one follower of the root, none of token 1


def test_a_chain_drafted_in_one_call_equals_the_chain_climbed_level_by_level():
    laws = [BUSHY, {}, {0: {1: 1.0}}]
    slow = grow(dc.MultiDraft(1, 4, "deterministic"), TableDraft(laws), [0, 0, 0])
    fast = grow(dc.MultiDraft(1, 4, "deterministic"), ChainDraft(laws), [0, 0, 0])
    for name in ("tokens", "parent", "depth", "valid"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
    assert torch.allclose(fast.score[fast.valid], slow.score[slow.valid])
    assert node_paths(fast, 0) == {(1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)} and node_paths(fast, 1) == set()


@pytest.mark.parametrize("law", [lambda raw: torch.log_softmax(raw, -1), lambda raw: dc.Greedy().law(raw, None)])
def test_random_draws_skip_rows_without_proposals(law):  # a law of "no proposal" is no proposal, under any sampler
    tree = grow(dc.Chain(3), TableDraft([CHAIN, {}]), [0, 0], law)
    assert node_paths(tree, 0) == {(1,), (1, 2), (1, 2, 3)}
    assert node_paths(tree, 1) == set()


def test_under_greedy_random_laws_draft_the_argmax_chain():
    for shape in (dc.Chain(4), dc.MultiDraft(3, 4, "iid"), dc.MultiDraft(2, 4, "without_replacement"),
                  dc.MultiDraft(2, 4, "greedy")):
        greedy = shape.under_greedy()
        assert isinstance(greedy, MultiDraft) and (greedy.k, greedy.depth, greedy.draws) == (1, 4, "deterministic")
    for shape in (dc.MultiDraft(2, 3, "deterministic"), dc.DynamicTree(8)):
        assert shape.under_greedy() is shape
