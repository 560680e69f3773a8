"""NGramDraft: exact q on hand-made histories, agreement with a brute-force reference, state handling, bad input."""

from __future__ import annotations

import doctest
import math
import random
from collections import Counter

import numpy as np
import pytest
import torch

import decoding.samplers.sequence.speculative.ngram as ngram_module
from decoding.samplers.sequence.speculative.ngram import NGramDraft
from decoding.samplers.sequence.speculative.trees import DraftTree

INF = float("inf")


def reference_ranking(context: list[int], n: int, max_followers: int | None = None,
                      min_n: int = 1) -> list[tuple[int, float]]:
    """Brute force: (token, q) best first, for the longest suffix (min_n <= length <= n) that occurred before with
    a follower."""
    for k in range(min(n, len(context)), min_n - 1, -1):
        suffix = context[len(context) - k:]
        starts = [i for i in range(len(context) - k) if context[i:i + k] == suffix]
        if starts:
            counts = Counter(context[i + k] for i in starts)
            latest = {context[i + k]: i for i in starts}  # later starts overwrite: the most recent occurrence
            ranked = sorted(counts, key=lambda t: (counts[t], latest[t]), reverse=True)
            ranked = ranked[:max_followers] if max_followers is not None else ranked
            total = sum(counts[t] for t in ranked)
            return [(t, counts[t] / total) for t in ranked]
    return []


def reference_logq(context: list[int], n: int, vocab_size: int, max_followers: int | None = None,
                   min_n: int = 1) -> np.ndarray:
    out = np.full(vocab_size, -INF)
    for t, q in reference_ranking(context, n, max_followers, min_n):
        out[t] = math.log(q)
    return out


def pad(paths: list[list[list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged paths [B][F][*] -> (paths [B, F, D] with -1 pads, lengths [B, F])."""
    D = max((len(p) for row in paths for p in row), default=0)
    out = torch.full((len(paths), len(paths[0]), D), -1, dtype=torch.long)
    lengths = torch.zeros(len(paths), len(paths[0]), dtype=torch.long)
    for b, row in enumerate(paths):
        for f, p in enumerate(row):
            out[b, f, :len(p)] = torch.tensor(p, dtype=torch.long)
            lengths[b, f] = len(p)
    return out, lengths


def q_of(history: list[int], n: int, vocab_size: int = 10, path: list[int] = (), **kw) -> dict[int, float]:
    draft = NGramDraft(n, **kw)
    state = draft.start([history], vocab_size, "cpu")
    paths, lengths = pad([[list(path)]])
    q = draft.dense(state, paths, lengths)[0, 0].exp()
    return {t: round(float(q[t]), 6) for t in torch.nonzero(q).flatten().tolist()}


# --- exact q on hand-made histories -------------------------------------------------------------------------------


def test_two_occurrences_split_q():
    assert q_of([1, 2, 3, 1, 2, 4, 1, 2], n=2) == {3: 0.5, 4: 0.5}


def test_counts_weight_followers():
    assert q_of([1, 2, 3, 1, 2, 3, 1, 2, 4, 1, 2], n=2) == {3: round(2 / 3, 6), 4: round(1 / 3, 6)}


def test_longer_n_falls_back_to_shorter_suffixes():
    assert q_of([1, 2, 3, 1, 2, 4, 1, 2], n=4) == {3: 0.5, 4: 0.5}  # (4, 1, 2) never occurred before
    assert q_of([5, 6, 7, 9, 6, 7], n=3) == {9: 1.0}  # (9, 6, 7) no; (6, 7) yes


def test_longest_match_wins_over_shorter():
    history = [1, 2, 3, 2, 4, 1, 2]
    assert q_of(history, n=2) == {3: 1.0}  # (1, 2) occurred once, followed by 3
    assert q_of(history, n=1) == {3: 0.5, 4: 0.5}  # (2,) occurred twice


def test_no_match_is_all_minus_inf():
    draft = NGramDraft(3)
    state = draft.start([[1, 2, 3], [], [4]], 6, "cpu")
    logq = draft.dense(state, torch.full((3, 1, 0), -1), torch.zeros(3, 1, dtype=torch.long))
    assert logq.shape == (3, 1, 6) and logq.dtype == torch.float32
    assert torch.all(logq == -INF)


def test_overlapping_occurrences_count():
    assert q_of([1, 1, 1], n=2) == {1: 1.0}  # (1, 1) at 0, followed by the last 1
    assert q_of([1, 1], n=3) == {1: 1.0}  # only (1,) fits before the end


def test_path_tokens_are_context():
    assert q_of([1, 2, 3], n=2) == {}
    assert q_of([1, 2, 3], n=2, path=[1, 2]) == {3: 1.0}  # the path creates the match
    assert q_of([7, 8], n=2, path=[9, 7]) == {8: 1.0}
    assert q_of([0], n=2, path=[5, 6, 5]) == {6: 1.0}  # a match wholly inside the path


def test_rows_queries_and_padding():
    draft = NGramDraft(2)
    histories = [[1, 2, 3, 1, 2, 4, 1, 2], [5, 6, 5, 7], [3]]
    state = draft.start(histories, 9, "cpu")
    ragged = [[[], [3], [4, 1], [8, 8, 8]], [[], [6], [5], [0, 5, 6]], [[], [3], [4, 3], [3, 4, 3]]]
    paths, lengths = pad(ragged)
    assert paths[0, 0, 0] == -1 and lengths[1, 3] == 3
    logq = draft.dense(state, paths, lengths)
    assert logq.shape == (3, 4, 9)
    for b in range(3):
        for f in range(4):
            expected = reference_logq(histories[b] + ragged[b][f], 2, 9)
            np.testing.assert_allclose(logq[b, f].numpy(), expected, rtol=1e-6)
    assert torch.all(logq[2, 0] == -INF)
    assert logq[2, 1, 3].item() == pytest.approx(0.0)  # [3, 3]: (3,) then 3


def test_fewer_rows_than_the_state_use_the_first_rows():
    draft = NGramDraft(1)
    state = draft.start([[1, 2, 1], [4, 4]], 5, "cpu")
    logq = draft.dense(state, torch.full((1, 1, 0), -1), torch.zeros(1, 1, dtype=torch.long))
    assert logq.shape == (1, 1, 5) and logq[0, 0, 2] == 0.0


def test_empty_queries():
    draft = NGramDraft(2)
    state = draft.start([[1, 1, 1]], 4, "cpu")
    assert draft.dense(state, torch.zeros(1, 0, 3, dtype=torch.long), torch.zeros(1, 0, dtype=torch.long)).shape \
        == (1, 0, 4)


# --- against the brute-force reference ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_on_random_histories(seed):
    rng = random.Random(seed)
    for _ in range(8):
        n = rng.randint(1, 4)
        vocab = rng.randint(2, 8)
        max_followers = rng.choice([None, None, 1, 2, 3])
        min_n = rng.choice([1, 1, rng.randint(1, n)])
        B, F, D = rng.randint(1, 3), rng.randint(1, 12), rng.randint(0, 6)
        histories = [[rng.randrange(vocab) for _ in range(rng.randint(0, 200))] for _ in range(B)]
        ragged = [[[rng.randrange(vocab) for _ in range(rng.randint(0, D))] for _ in range(F)] for _ in range(B)]
        draft = NGramDraft(n, max_followers, min_n)
        state = draft.start(histories, vocab, "cpu")
        paths, lengths = pad(ragged)
        logq = draft.dense(state, paths, lengths)
        tokens, ranked_logq = draft.followers(state, paths, lengths)
        for b in range(B):
            for f in range(F):
                context = histories[b] + ragged[b][f]
                np.testing.assert_allclose(logq[b, f].numpy(), reference_logq(context, n, vocab, max_followers, min_n),
                                           rtol=1e-6, atol=1e-7)
                ranking = reference_ranking(context, n, max_followers, min_n)
                k = len(ranking)
                assert tokens[b, f, :k].tolist() == [t for t, _ in ranking]
                assert torch.all(tokens[b, f, k:] == -1) and torch.all(ranked_logq[b, f, k:] == -INF)
                np.testing.assert_allclose(ranked_logq[b, f, :k].exp().numpy(), [q for _, q in ranking], rtol=1e-6)


def test_q_rows_are_distributions():
    rng = np.random.default_rng(0)
    draft = NGramDraft(3)
    state = draft.start([rng.integers(0, 5, 150).tolist() for _ in range(4)], 5, "cpu")
    paths = torch.from_numpy(rng.integers(0, 5, (4, 16, 5)))
    lengths = torch.from_numpy(rng.integers(0, 6, (4, 16)))
    q = draft.dense(state, paths, lengths).exp().sum(-1)
    torch.testing.assert_close(q, torch.ones_like(q))  # a 150-token history over 5 tokens always matches


# --- ties, max_followers ------------------------------------------------------------------------------------------


def test_ties_break_toward_the_most_recent_occurrence():
    # After (5, 1): 7 once, then 8 once; the later 8 wins the single slot.
    assert q_of([5, 1, 7, 5, 1, 8, 5, 1], n=2, max_followers=1) == {8: 1.0}
    assert q_of([5, 1, 8, 5, 1, 7, 5, 1], n=2, max_followers=1) == {7: 1.0}
    # Frequency beats recency: 7 twice, 8 once (latest).
    assert q_of([5, 1, 7, 5, 1, 7, 5, 1, 8, 5, 1], n=2, max_followers=1) == {7: 1.0}


def test_max_followers_renormalises_the_kept_ones():
    history = [0, 1, 0, 2, 0, 2, 0, 3, 0, 3, 0, 3, 0]
    assert q_of(history, n=1) == {1: round(1 / 6, 6), 2: round(2 / 6, 6), 3: 0.5}
    assert q_of(history, n=1, max_followers=2) == {2: 0.4, 3: 0.6}


def test_followers_are_ranked():
    draft = NGramDraft(1)
    state = draft.start([[0, 1, 0, 2, 0, 2, 0, 3, 0, 3, 0, 3, 0, 4, 0]], 6, "cpu")
    tokens, logq = draft.followers(state, torch.full((1, 1, 0), -1), torch.zeros(1, 1, dtype=torch.long))
    assert tokens[0, 0].tolist() == [3, 2, 4, 1]  # 3 (x3), 2 (x2), then 4 and 1 once each, the later 4 first
    assert logq[0, 0].exp().tolist() == pytest.approx([3 / 7, 2 / 7, 1 / 7, 1 / 7])


# --- state: extend, select ----------------------------------------------------------------------------------------


def test_extend_appends_and_grows():
    draft = NGramDraft(2)
    state = draft.start([[1, 2], [3]], 100, "cpu")
    draft.append(state, [[4, 5], []])
    draft.append(state, [[6], [7, 8, 9]])
    assert [state.history(r) for r in range(2)] == [[1, 2, 4, 5, 6], [3, 7, 8, 9]]
    long = list(range(100)) * 3
    draft.append(state, [long, [1]])  # past the initial capacity
    assert state.history(0) == [1, 2, 4, 5, 6] + long and state.history(1) == [3, 7, 8, 9, 1]
    assert q_of(state.history(0), n=2, vocab_size=100) == {
        t: v for t, v in q_of([1, 2, 4, 5, 6] + long, n=2, vocab_size=100).items()}


def test_extended_tokens_are_looked_up():
    draft = NGramDraft(2)
    state = draft.start([[1, 2, 3]], 5, "cpu")
    no_path = (torch.full((1, 1, 0), -1), torch.zeros(1, 1, dtype=torch.long))
    assert torch.all(draft.dense(state, *no_path) == -INF)
    draft.append(state, [[1, 2]])
    assert draft.dense(state, *no_path)[0, 0, 3] == 0.0


def test_select_reorders_and_drops():
    draft = NGramDraft(1)
    state = draft.start([[0, 1, 0], [2, 3, 2], [4, 4]], 5, "cpu")
    picked = draft.select(state, torch.tensor([2, 0]))
    assert [picked.history(r) for r in range(picked.rows)] == [[4, 4], [0, 1, 0]]
    logq = draft.dense(picked, torch.full((2, 1, 0), -1), torch.zeros(2, 1, dtype=torch.long))
    assert logq[0, 0, 4] == 0.0 and logq[1, 0, 1] == 0.0
    draft.append(picked, [[1], [3]])  # the new state shares nothing with the old one
    assert [picked.history(r) for r in range(2)] == [[4, 4, 1], [0, 1, 0, 3]]
    assert [state.history(r) for r in range(3)] == [[0, 1, 0], [2, 3, 2], [4, 4]]
    twice = draft.select(state, torch.tensor([1, 1]))
    draft.append(twice, [[0], [1]])
    assert [twice.history(r) for r in range(2)] == [[2, 3, 2, 0], [2, 3, 2, 1]]


def test_inputs_are_not_changed():
    draft = NGramDraft(2)
    state = draft.start([[1, 2, 1, 2]], 4, "cpu")
    paths, lengths = pad([[[1], [], [2, 1]]])
    before = paths.clone(), lengths.clone()
    draft.dense(state, paths, lengths)
    assert torch.equal(paths, before[0]) and torch.equal(lengths, before[1])


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, True, 1.5, "3", None])
def test_bad_n_names_n(n):
    with pytest.raises(ValueError, match=r"^n must be an int >= 1"):
        NGramDraft(n)


def test_min_n_ignores_shorter_matches():
    # (7, 1) never occurred before; the last token 1 did (followed by 2), a one-token match
    assert q_of([1, 2, 7, 1], 3) == {2: 1.0}
    assert q_of([1, 2, 7, 1], 3, min_n=2) == {}
    assert q_of([7, 1, 2, 7, 1], 3, min_n=2) == {2: 1.0}


@pytest.mark.parametrize("m", [0, 4, 1.0, True])
def test_bad_min_n_names_min_n(m):
    with pytest.raises(ValueError, match=r"^min_n must be"):
        NGramDraft(3, min_n=m)


@pytest.mark.parametrize("m", [0, False, 2.0])
def test_bad_max_followers(m):
    with pytest.raises(ValueError, match="max_followers"):
        NGramDraft(2, max_followers=m)


def test_bad_tokens_and_shapes():
    draft = NGramDraft(2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        draft.start([[1, 9]], 5, "cpu")
    state = draft.start([[1, 2]], 5, "cpu")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        draft.append(state, [[5]])
    with pytest.raises(ValueError, match="rows_tokens"):
        draft.append(state, [[1], [2]])
    paths, lengths = pad([[[1, 2]]])
    with pytest.raises(ValueError, match="lengths must lie"):
        draft.dense(state, paths, lengths + 1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        draft.dense(state, torch.tensor([[[1, -1]]]), torch.tensor([[2]]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        draft.dense(state, paths, lengths[0])


def test_bind_returns_self():
    draft = NGramDraft()
    assert draft.bind(object()) is draft and repr(draft) == "NGramDraft(n=3, max_followers=None, min_n=1)"


def test_docstring_examples():
    assert doctest.testmod(ngram_module).failed == 0


def test_chain_takes_the_best_follower_then_looks_again():
    draft = NGramDraft(2)
    state = draft.start([[5, 1, 7, 5, 1, 8, 5, 1, 8, 9]], 10, "cpu")  # 9 never occurred before: no match
    logq, tokens = draft.chain(state, DraftTree(torch.tensor([9]), 4), 3)
    assert tokens.tolist() == [[-1, -1, -1]] and torch.all(logq == -INF)
    state = draft.start([[5, 1, 7, 5, 1, 8, 5, 1]], 10, "cpu")
    logq, tokens = draft.chain(state, DraftTree(torch.tensor([1]), 4), 3)
    assert tokens.tolist() == [[8, 5, 1]]  # 7 and 8 tie once each after (5, 1); 8 is more recent
    assert logq.exp()[0].tolist() == pytest.approx([0.5, 1.0, 1.0])


@pytest.mark.parametrize("seed", range(4))
def test_chain_follows_the_best_follower_as_repeated_lookups_do(seed):
    rng = random.Random(seed)
    branching = 0
    for _ in range(6):
        n, vocab, depth = rng.choice([1, 1, 2, 3]), rng.randint(2, 5), rng.randint(1, 8)
        min_n = rng.randint(1, n)
        histories = [[rng.randrange(vocab) for _ in range(rng.randint(1, 60))] for _ in range(3)]
        draft = NGramDraft(n, rng.choice([None, None, 2]), min_n)
        state = draft.start(histories, vocab, "cpu")
        logq, tokens = draft.chain(state, DraftTree(torch.tensor([h[-1] for h in histories]), 1 + depth), depth)
        for b, history in enumerate(histories):
            path: list[int] = []
            for d in range(depth):
                ranking = reference_ranking(history + path, n, draft.max_followers, min_n)
                if not ranking:
                    break
                branching += len(ranking) > 1
                best, q = ranking[0]
                assert tokens[b, d] == best and logq[b, d].exp() == pytest.approx(q, rel=1e-6)
                path.append(best)
            assert torch.all(tokens[b, len(path):] == -1) and torch.all(logq[b, len(path):] == -INF)
    assert branching > 10  # the choice among several followers is exercised
