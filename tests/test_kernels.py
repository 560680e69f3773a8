"""The sampling kernels (``kernels/sampling.py``) against slow float64 references written here, and the automaton
kernels (``kernels/automata.py``) against their pure-Python references on the real Llama 3 vocabulary.

``mass_cutoff`` decides every truncation sampler's kept set and ``inverse_cdf`` every categorical draw, so both are
checked exactly: ``mass_cutoff`` on dyadic probabilities (multiples of 2**-20, whose float32 partial sums are exact,
so even masses that land exactly on a boundary have one right answer), ``inverse_cdf`` uniform by uniform against
the float64 CDF. The references never call library code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decoding.kernels import automata
from decoding.kernels.sampling import (
    check_logprobs,
    entropy,
    inverse_cdf,
    keep,
    mass_cutoff,
    renormalize,
)

NEG_INF = float("-inf")
DYADIC = 2**20  # probabilities are multiples of 2**-20: float32 and float64 partial sums are exact


# ----------------------------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------------------------


def kept_by_rule(scores: np.ndarray, probs: np.ndarray, mass: float) -> np.ndarray:
    """Keep x iff the probability of the tokens scoring strictly higher than x is below ``mass``.

    Sort-based (a stable sort, then a binary search for the number of strictly higher scores); for V <= 64 the
    O(V^2) definition is used instead, and ``test_reference_sort_equals_loop`` checks the two agree."""
    if len(scores) <= 64:
        above = np.array([sum(probs[y] for y in range(len(scores)) if scores[y] > scores[x])
                          for x in range(len(scores))])
    else:
        order = np.argsort(-scores, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(probs[order])])
        above = cum[np.searchsorted(-scores[order], -scores, side="left")]
    return above < mass


def dyadic_probs(rng: np.random.Generator, vocab: int, zeros: float = 0.0, low: int = 1, high: int = 100) -> np.ndarray:
    """Random probabilities that are multiples of 2**-20 and sum to exactly 1 (a fraction ``zeros`` are 0)."""
    w = rng.integers(low, high, size=vocab).astype(np.float64)
    w[rng.random(vocab) < zeros] = 0
    w[int(rng.integers(vocab))] += 1  # at least one positive entry
    counts = np.floor(w / w.sum() * DYADIC)
    counts[int(np.argmax(counts))] += DYADIC - counts.sum()
    return counts / DYADIC


def check_cutoff(scores: torch.Tensor, probs: torch.Tensor, mass: float, **kwargs) -> None:
    """mass_cutoff's threshold keeps exactly the reference set in every row, and it is the lowest kept score."""
    s_before, p_before = scores.clone(), probs.clone()
    threshold = mass_cutoff(scores, probs, mass, **kwargs)
    assert torch.equal(scores, s_before) and torch.equal(probs, p_before), "mass_cutoff changed its input"
    assert threshold.shape == (scores.shape[0], 1)
    for i in range(scores.shape[0]):
        s, p = scores[i].double().numpy(), probs[i].double().numpy()
        want = kept_by_rule(s, p, mass)
        got = (scores[i] >= threshold[i]).numpy()
        diff = np.flatnonzero(want != got)
        assert diff.size == 0, (
            f"row {i}, mass {mass}: kept sets differ at {diff[:8].tolist()} "
            f"(reference keeps {want.sum()}, library {got.sum()})"
        )
        assert threshold[i, 0].item() == s[want].min()


# ----------------------------------------------------------------------------------------------------------------
# mass_cutoff
# ----------------------------------------------------------------------------------------------------------------


def test_reference_sort_equals_loop():
    """The sort-based branch of the reference equals its O(V^2) definition (ties, zeros and -inf scores)."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        v = int(rng.integers(2, 60))
        scores = np.round(rng.normal(size=v), 1)
        scores[rng.random(v) < 0.2] = NEG_INF
        probs = dyadic_probs(rng, v, zeros=0.2)
        mass = float(rng.choice([0.1, 0.25, 0.5, 0.9, 1.0]))
        order = np.argsort(-scores, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(probs[order])])
        fast = cum[np.searchsorted(-scores[order], -scores, side="left")] < mass
        assert np.array_equal(fast, kept_by_rule(scores, probs, mass))


@pytest.mark.parametrize("vocab", [1, 2, 7, 300, 1000])
@pytest.mark.parametrize("mass", [1e-9, 0.1, 0.5, 0.75, 0.9, 0.999, 1.0])
def test_mass_cutoff_matches_reference(vocab, mass):
    """Scores independent of the probabilities (as in typical sampling), with ties and zero-probability entries;
    five rows per batch checked independently."""
    rng = np.random.default_rng(vocab)
    scores = torch.tensor(np.round(rng.normal(size=(5, vocab)), 1), dtype=torch.float32)  # ties
    probs = torch.tensor(np.stack([dyadic_probs(rng, vocab, zeros=0.2) for _ in range(5)]), dtype=torch.float32)
    check_cutoff(scores, probs, mass)


def test_mass_cutoff_exact_boundary_is_strict():
    """A token whose strictly-higher mass equals ``mass`` exactly is dropped (the rule is ``< mass``), one whose
    strictly-higher mass is one ulp-of-2**-20 below is kept; ties at the boundary are kept whole."""
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125]])
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert (scores >= mass_cutoff(scores, probs, 0.75)).tolist() == [[True, True, False, False]]
    assert (scores >= mass_cutoff(scores, probs, 0.75 + 2**-20)).tolist() == [[True, True, True, False]]
    assert (scores >= mass_cutoff(scores, probs, 0.5)).tolist() == [[True, False, False, False]]
    tied = torch.tensor([[4.0, 3.0, 3.0, 1.0]])
    assert (tied >= mass_cutoff(tied, probs, 0.6)).tolist() == [[True, True, True, False]]
    for mass in (0.5, 0.75, 0.75 + 2**-20, 0.6, 1.0):
        check_cutoff(scores, probs, mass)
        check_cutoff(tied, probs, mass)


@pytest.mark.parametrize("mass", [0.01, 0.05, 0.2, 0.5, 0.9, 0.97, 1.0])
@pytest.mark.parametrize("start", [1, 7, 256])
def test_mass_cutoff_large_kept_sets(mass, start):
    """A near-uniform law over 5000 tokens needs far more than the first ``start`` sorted entries (0.9 of the mass
    is ~4500 tokens); batched with a peaked row that needs one token and a half-masked row, every row still gets
    its exact kept set."""
    rng = np.random.default_rng(5000)
    peaked = rng.integers(0, 3, size=5000).astype(np.float64)  # counts of 2**-20; token 17 takes the rest
    peaked[17] = 0
    peaked[17] = DYADIC - peaked.sum()
    rows = [
        dyadic_probs(rng, 5000, low=150, high=270),  # near uniform
        dyadic_probs(rng, 5000, zeros=0.5, low=150, high=270),  # near uniform on half the tokens
        peaked / DYADIC,
    ]
    probs = torch.tensor(np.stack(rows), dtype=torch.float32)
    assert float(probs[0].sum()) == 1.0 and float(probs[2].max()) > 0.9
    scores = torch.log(probs)  # top-p: scores are the log-probabilities (-inf where 0)
    check_cutoff(scores, probs, mass, start=start)
    if mass >= 0.5:
        kept = int((scores[0] >= mass_cutoff(scores, probs, mass, start=start)[0]).sum())
        assert kept > 2048, "the case must keep far more than the first window"


@pytest.mark.parametrize("start", [1, 7, 256])
@pytest.mark.parametrize("score_kind", ["logprobs", "coarse", "fine"])
def test_mass_cutoff_exact_boundaries_past_the_first_window(start, score_kind):
    """Past the first ``start`` entries too, a mass that equals exactly the mass of the top groups of tied scores
    drops the next group (strict ``<``), and one 2**-20 more keeps it: 5000 dyadic near-uniform tokens, scores
    the log-probabilities (top-p), or independent of them (typical) with many ties (coarse) or with several
    distinct values packed close together (fine: neighbouring groups share any score bucket an implementation
    may use)."""
    rng = np.random.default_rng(77)
    probs64 = dyadic_probs(rng, 5000, low=150, high=270)
    scores64 = {
        "logprobs": np.log(probs64),
        "coarse": np.round(rng.normal(size=5000), 2),
        "fine": np.round(rng.normal(size=5000), 4),
    }[score_kind]
    scores64 = scores64.astype(np.float32).astype(np.float64)  # the scores as the library sees them
    groups = np.unique(scores64)[::-1]  # distinct scores, highest first
    group_mass = np.array([probs64[scores64 == g].sum() for g in groups])
    through = np.cumsum(group_mass)  # exact: dyadic
    probs = torch.tensor(probs64, dtype=torch.float32)[None]
    scores = torch.tensor(scores64, dtype=torch.float32)[None]
    for g in (0, 1, len(groups) // 3, len(groups) // 2, len(groups) - 3):
        for mass in (through[g] - 2**-20, through[g], through[g] + 2**-20):
            check_cutoff(scores, probs, float(mass), start=start)
        n_kept = int((scores >= mass_cutoff(scores, probs, float(through[g]), start=start)).sum())
        assert n_kept == int((scores64 >= groups[g]).sum())


def test_mass_cutoff_ties_across_the_window():
    """A tie group straddling the first window (positions 200..599 tied) is kept whole or dropped whole."""
    vocab = 1000
    scores = torch.zeros(3, vocab)
    scores[:, :200] = torch.arange(200, 0, -1, dtype=torch.float32)[None] + 1.0  # strictly decreasing head
    scores[:, 200:600] = 0.5  # a tie group across position 256
    scores[:, 600:] = -torch.arange(400, dtype=torch.float32)[None] / 400
    probs = torch.full((3, vocab), 1.0 / 1024)
    probs[:, :24] = 2.0 / 1024  # sums to exactly 1
    assert float(probs[0].sum()) == 1.0
    for mass in (0.1, 224 / 1024, 224 / 1024 + 1e-6, 0.3, 0.6, 0.99):
        check_cutoff(scores, probs, mass)


def test_mass_cutoff_of_rows_with_no_finite_score():
    """A row of -inf only (a draft that proposes nothing, speculative decoding's n-gram draft) gets -inf: the
    bucket path found no candidate in it and failed on an empty index."""
    scores = torch.full((2, 300), float("-inf"))
    scores[0, :4] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    probs = torch.softmax(scores, -1).nan_to_num(0.0)
    for rows in (scores, scores[1:]):
        threshold = mass_cutoff(rows, probs[-len(rows):], 0.9)
        assert threshold[-1].item() == float("-inf")
    assert (scores[0] >= mass_cutoff(scores, probs, 0.9)[0]).sum() == 3  # 0.64 + 0.24 + 0.09 reach 0.9


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    data=st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 8)), min_size=1, max_size=40),
    mass_num=st.integers(1, 64),
    start=st.integers(1, 8),
)
def test_mass_cutoff_property(data, mass_num, start):
    """Hypothesis: any small row of integer scores (many ties) and dyadic weights (zeros allowed), any dyadic
    mass in (0, 1] and any initial window give exactly the reference kept set."""
    scores = np.array([float(s) for s, _ in data])
    weights = np.array([float(w) for _, w in data])
    if weights.sum() == 0:
        weights[0] = 1.0
    # a total that is a power of two keeps every partial sum exact
    total = 2 ** math.ceil(math.log2(weights.sum()))
    weights[int(np.argmax(weights))] += total - weights.sum()
    probs = torch.tensor(weights / total, dtype=torch.float32)[None]
    check_cutoff(torch.tensor(scores, dtype=torch.float32)[None], probs, mass_num / 64, start=start)


# ----------------------------------------------------------------------------------------------------------------
# inverse_cdf
# ----------------------------------------------------------------------------------------------------------------


def layout(name: str) -> torch.Tensor:
    """One row of float32 logprobs [V] for each named layout of zero-probability blocks and entries."""
    g = torch.Generator().manual_seed(len(name))
    if name == "small":
        lp = torch.randn(7, generator=g)
    elif name == "one_block":
        lp = torch.randn(512, generator=g)
    elif name == "v1000_first_block_zero":
        lp = torch.randn(1000, generator=g)
        lp[:512] = NEG_INF
    elif name == "v1537_zero_middle_block":  # 4 blocks, the last holds one entry
        lp = torch.randn(1537, generator=g)
        lp[512:1024] = NEG_INF
        lp[1024:1536:3] = NEG_INF
    elif name == "v1537_zero_last_block":
        lp = torch.randn(1537, generator=g)
        lp[1500:] = NEG_INF
    elif name == "v513_only_last_entry":
        lp = torch.full((513,), NEG_INF)
        lp[512] = 0.0
    elif name == "v5000_scattered":
        lp = torch.randn(5000, generator=g) * 2
        lp[torch.rand(5000, generator=g) < 0.3] = NEG_INF
        lp[1024:2560] = NEG_INF
    elif name == "v5000_unnormalised_peaked":
        lp = torch.randn(5000, generator=g) * 6 + 300.0  # not normalised; inverse_cdf must not care
    else:
        raise KeyError(name)
    return lp


LAYOUTS = ["small", "one_block", "v1000_first_block_zero", "v1537_zero_middle_block", "v1537_zero_last_block",
           "v513_only_last_entry", "v5000_scattered", "v5000_unnormalised_peaked"]


def cdf64(lp: torch.Tensor) -> np.ndarray:
    x = lp.double().numpy()
    p = np.exp(x - x[np.isfinite(x)].max())
    p = np.where(np.isfinite(x), p, 0.0)
    return np.cumsum(p / p.sum())


def allowed_tokens(cdf: np.ndarray, u: float, tol: float) -> np.ndarray:
    """Positive-probability tokens whose CDF interval [cdf[k-1], cdf[k]) meets [u - tol, u + tol]."""
    lo = np.concatenate([[0.0], cdf[:-1]])
    positive = cdf > lo
    return np.flatnonzero(positive & (lo <= u + tol) & (cdf > u - tol))


@pytest.mark.parametrize("name", LAYOUTS)
def test_inverse_cdf_inverts_the_cdf(name):
    """Uniform by uniform (an even grid of 3000 and 1000 random ones): the token is the one whose float64 CDF
    interval holds u, up to 1e-6 of float32 rounding near an interval's ends; never a zero-probability token."""
    lp = layout(name)
    cdf = cdf64(lp)
    grid = (torch.arange(3000, dtype=torch.float64) + 0.5) / 3000
    u = torch.cat([grid, torch.rand(1000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)])
    logprobs = lp[None].repeat(len(u), 1)
    before = logprobs.clone()
    tokens = inverse_cdf(logprobs, u)
    assert torch.equal(logprobs, before)
    assert tokens.dtype == torch.int64 and tokens.shape == u.shape
    p = np.diff(np.concatenate([[0.0], cdf]))
    assert np.all(p[tokens.numpy()] > 0), "drew a token of probability 0"
    exact = 0
    for uj, tok in zip(u.tolist(), tokens.tolist()):
        ok = allowed_tokens(cdf, uj, 1e-6)
        assert tok in ok, f"u={uj}: token {tok}, allowed {ok.tolist()}"
        exact += len(ok) == 1
    assert exact > 0.99 * len(u)  # the slack only matters right at interval ends


@pytest.mark.parametrize("name", LAYOUTS)
def test_inverse_cdf_extreme_uniforms(name):
    """u next to 0 gives the first possible token and u next to 1 the last one, never a zero-probability (or
    padding) entry; u = 0 and u = 1 exactly, outside the contract, still give possible tokens."""
    lp = layout(name)
    finite = torch.isfinite(lp).nonzero()[:, 0]
    first, last = int(finite[0]), int(finite[-1])
    cdf = cdf64(lp)
    p = np.diff(np.concatenate([[0.0], cdf]))
    # tokens whose probability is below double rounding are not "first"/"last" in any meaningful sense
    first_sig = int(np.flatnonzero(p > 1e-12)[0])
    last_sig = int(np.flatnonzero(p > 1e-12)[-1])
    u = torch.tensor([2.0**-54, 1e-300, 1e-15, 1 - 2.0**-53, 1 - 1e-15, 0.0, 1.0], dtype=torch.float64)
    tokens = inverse_cdf(lp[None].repeat(len(u), 1), u).tolist()
    for uj, tok in zip(u.tolist(), tokens):
        assert math.isfinite(lp[tok].item()), f"u={uj}: drew impossible token {tok}"
        if uj < 0.5:
            assert first <= tok <= first_sig, (uj, tok, first, first_sig)
        else:
            assert last_sig <= tok <= last, (uj, tok, last_sig, last)
    if name == "v1537_zero_last_block":
        assert tokens[3] == 1499 and tokens[6] == 1499


def test_inverse_cdf_rows_are_independent():
    """A batch of different layouts of the same width with one uniform each equals each row drawn alone."""
    rows = torch.stack([layout("v1537_zero_middle_block"), layout("v1537_zero_last_block"),
                        torch.log_softmax(torch.randn(1537, generator=torch.Generator().manual_seed(3)), -1)])
    u = torch.tensor([0.3, 0.999, 0.61], dtype=torch.float64)
    batch = inverse_cdf(rows, u)
    alone = torch.cat([inverse_cdf(rows[i : i + 1], u[i : i + 1]) for i in range(3)])
    assert torch.equal(batch, alone)


def test_inverse_cdf_grid_frequencies_equal_probabilities():
    """Across block boundaries: on an even grid of M = 8192 uniforms each token's frequency is its float64
    probability within 1/M (the enumeration test of the draw, at V = 1537 with zero blocks)."""
    lp = layout("v1537_zero_middle_block")
    m = 8192
    u = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    tokens = inverse_cdf(lp[None].repeat(m, 1), u)
    freq = np.bincount(tokens.numpy(), minlength=1537) / m
    p = np.diff(np.concatenate([[0.0], cdf64(lp)]))
    assert np.abs(freq - p).max() <= 1 / m + 1e-9
    assert freq[p == 0].sum() == 0


# ----------------------------------------------------------------------------------------------------------------
# check_logprobs, entropy, renormalize, keep
# ----------------------------------------------------------------------------------------------------------------


def test_check_logprobs_accepts_valid_rows():
    """Rows with -inf entries, a single finite entry, or unnormalised values are valid."""
    x = torch.log_softmax(torch.randn(4, 10), -1)
    x[0, :5] = NEG_INF
    x[1, :] = NEG_INF
    x[1, 7] = -3.0
    x[2] += 100.0
    check_logprobs(x)


@pytest.mark.parametrize("shape", [(10,), (2, 3, 10), ()])
def test_check_logprobs_rejects_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"^logprobs: expected shape \[batch, vocab\]"):
        check_logprobs(torch.zeros(shape))


@pytest.mark.parametrize(
    "row, fill, what",
    [
        (3, "nan_one", "NaN"),  # one NaN among finite values: amax must propagate it
        (0, "nan_all", "NaN"),
        (1, "neg_inf", "no finite entry"),
        (4, "nan_and_neg_inf", "NaN"),
    ],
)
def test_check_logprobs_names_the_first_bad_row(row, fill, what):
    """A NaN anywhere in a row, or a row of only -inf, raises ValueError naming the argument and the first bad
    row (a later bad row is not reported first)."""
    x = torch.log_softmax(torch.randn(6, 9), -1)
    if fill == "nan_one":
        x[row, 4] = float("nan")
    elif fill == "nan_all":
        x[row] = float("nan")
    elif fill == "neg_inf":
        x[row] = NEG_INF
    else:
        x[row, :] = NEG_INF
        x[row, 2] = float("nan")
    x[5] = NEG_INF  # a later bad row
    with pytest.raises(ValueError, match=rf"^scores: row {row} has {what}"):
        check_logprobs(x, name="scores")


def test_check_logprobs_rejects_positive_infinity():
    """+inf is no log-probability: rejected (whatever the message says)."""
    x = torch.zeros(2, 4)
    x[1, 2] = float("inf")
    with pytest.raises(ValueError, match="row 1"):
        check_logprobs(x)


def entropy_reference(row: np.ndarray) -> float:
    p = np.exp(row[np.isfinite(row)])
    return float(-np.sum(p * np.log(p)))


def test_entropy_matches_numpy():
    """Entropy in nats equals the float64 sum -p log p over possible tokens: random rows with -inf entries,
    a one-hot row (0), a uniform row over 37 tokens (log 37), and a 50,000-token row."""
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([[0.3], [1.0], [3.0], [9.0]], dtype=torch.float64)
    rows = torch.randn(4, 300, dtype=torch.float64, generator=g) * scales
    rows[1, ::3] = NEG_INF
    rows = torch.log_softmax(rows, -1).float()
    special = torch.full((2, 300), NEG_INF)
    special[0, 5] = 0.0
    special[1, :37] = -math.log(37)
    x = torch.cat([rows, special])
    before = x.clone()
    h = entropy(x)
    assert torch.equal(x, before) and h.shape == (6,)
    want = [entropy_reference(r) for r in x.double().numpy()]
    np.testing.assert_allclose(h.double().numpy(), want, rtol=1e-6, atol=1e-6)
    assert h[4].item() == 0.0
    assert abs(h[5].item() - math.log(37)) < 1e-6
    big = torch.log_softmax(torch.randn(1, 50_000, dtype=torch.float64, generator=g) * 2, -1).float()
    assert abs(entropy(big).item() - entropy_reference(big[0].double().numpy())) < 1e-4


def test_renormalize():
    """Rows come out normalised (logsumexp 0 to 1e-6; 1e-4 for rows offset by +-1000, where float32 itself is
    that coarse), shifted by a constant on finite entries, -inf kept, and the input is unchanged."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 50, generator=g) * 3
    x[0, ::2] = NEG_INF
    x[1] += 1000.0
    x[2] -= 1000.0
    x[3, :49] = NEG_INF
    before = x.clone()
    y = renormalize(x)
    assert torch.equal(x, before)
    assert torch.equal(torch.isfinite(y), torch.isfinite(x))
    x64, y64 = x.double().numpy(), y.double().numpy()
    for i in range(4):
        f = np.isfinite(x64[i])
        lse = np.log(np.sum(np.exp(x64[i, f] - x64[i, f].max()))) + x64[i, f].max()
        tol = 1e-4 if i in (1, 2) else 1e-6  # float32 near 1000 is spaced 6e-5: lse rounds at that scale
        np.testing.assert_allclose(y64[i, f], x64[i, f] - lse, rtol=0, atol=tol)
        assert abs(np.log(np.sum(np.exp(y64[i, f])))) < tol
    assert y[3, 49].item() == 0.0


def test_keep():
    """``keep`` sets the unmasked entries to -inf and renormalises the rest; input unchanged."""
    x = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]))
    mask = torch.tensor([[True, True, False], [False, False, True]])
    before = x.clone()
    y = keep(x, mask)
    assert torch.equal(x, before)
    torch.testing.assert_close(y.exp(), torch.tensor([[0.625, 0.375, 0.0], [0.0, 0.0, 1.0]]))
    assert torch.equal(torch.isfinite(y), mask)


# ----------------------------------------------------------------------------------------------------------------
# automata: token walks over partly built tables, the vocabulary trie
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_vocab(llama_tokenizer):
    from decoding.vocabulary import Vocabulary

    return Vocabulary(llama_tokenizer)


def lazy_table(rng: np.random.Generator, n_states: int, p_dead: float, p_unbuilt: float) -> np.ndarray:
    """A random table as a lazily built automaton has it: entries are states or -1, and whole rows are -2."""
    table = rng.integers(0, n_states, (n_states, 256)).astype(np.int32)
    table[rng.random((n_states, 256)) < p_dead] = -1
    table[rng.random(n_states) < p_unbuilt] = automata.UNBUILT
    return table


def test_walk_kernel_equals_reference(llama_vocab):
    """Dense tables (most walks reach the end of the token) and sparse ones (most die), some rows unbuilt: state
    and stopping position equal the reference's for 2,000 random tokens from every state."""
    vocab = llama_vocab
    flat, offsets = automata.flatten(vocab.token_bytes)
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, vocab.size, 2000)
    outcomes = set()
    for n_states, p_dead, p_unbuilt in [(6, 0.01, 0.3), (9, 0.5, 0.3)]:
        table = lazy_table(rng, n_states, p_dead, p_unbuilt)
        for t in tokens.tolist():
            data = vocab.token_bytes[t]
            for state in range(n_states):
                got = automata.walk(table, state, flat, offsets[t], offsets[t + 1])
                state_ref, read = automata.walk_reference(table, state, data)
                assert (int(got[0]), int(got[1] - offsets[t])) == (state_ref, read), (t, state)
                outcomes.add("stuck" if read < len(data) else "dead" if state_ref < 0 else "done")
    assert outcomes == {"stuck", "dead", "done"}


def test_walk_batch_equals_reference(llama_vocab):
    """Rows with DEAD states, EOS (kept only by accepting states), other special tokens, and walks that stop at
    an unbuilt row (reported with the state whose row is missing)."""
    vocab = llama_vocab
    flat, offsets = automata.flatten(vocab.token_bytes)
    special = np.asarray(vocab.is_special, dtype=bool)
    is_eos = np.zeros(vocab.size, dtype=bool)
    is_eos[list(vocab.eos_token_ids)] = True
    rng = np.random.default_rng(4)
    table = lazy_table(rng, 8, 0.05, 0.3)
    accepting = rng.random(8) < 0.5
    b = 5000
    states = rng.integers(-1, 8, b)
    tokens = rng.integers(0, vocab.size, b)
    tokens[::50] = vocab.eos_token_ids[0]
    tokens[1::50] = np.flatnonzero(special)[0]
    out, unbuilt = np.empty(b, dtype=np.int64), np.full(b, -7, dtype=np.int64)
    automata.walk_batch(table, accepting, special, is_eos, flat, offsets, states, tokens, out, unbuilt)
    want, want_unbuilt = automata.walk_batch_reference(table, accepting, special, is_eos, vocab.token_bytes,
                                                       states.tolist(), tokens.tolist())
    assert out.tolist() == want
    stuck = out == automata.UNBUILT
    assert unbuilt[stuck].tolist() == [s for s in want_unbuilt if s is not None]
    assert stuck.sum() > 100 and (out >= 0).sum() > 100 and (out == -1).sum() > 100


def test_trie_equals_reference(llama_vocab):
    include = ~llama_vocab.is_special
    trie = automata.build_trie(llama_vocab.token_bytes, include)
    assert automata.trie_strings(trie) == automata.build_trie_reference(llama_vocab.token_bytes, include)
    # preorder: each subtree is a contiguous range that ends before its parent's
    assert (trie.end > np.arange(trie.n_nodes)).all() and trie.end[0] == trie.n_nodes
