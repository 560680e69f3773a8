"""Token samplers proved against their claimed laws.

Every sampler claims a distribution; these tests fail if it samples any other one:

1. ``transform`` equals an independent float64 numpy reference written here from the papers' definitions
   (kept set exactly, probabilities to 1e-6), on hand-made tiny vocabularies and random rows up to V = 50,000;
2. the draw is exact: a grid of injected uniforms (``FixedUniforms``) enumerates the inverse CDF, so each token's
   frequency equals its reference probability within 1/M;
3. with the real generator (``RowStreams``) the frequencies pass a chi-square test against the reference law;
4. Greedy, the protocol (weights, logq, purity, chaining, seeding) and bad input.

The references never call library code. Shapes: ``logprobs[B, V]`` float32 as the library uses; references take
one row as float64.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types

import numpy as np
import pytest
import scipy.stats
import torch



from decoding.kernels.random import FixedUniforms, RowStreams
from decoding.samplers import (
    Categorical,
    Chain,
    Greedy,
    MinP,
    Temperature,
    TokenSampler,
    TopK,
    TopP,
    Typical,
)

NEG_INF = float("-inf")
PROB_TOL = 4e-6  # probabilities: float32 library (sums over up to 50k terms) vs float64 reference
# A case is "well posed" when no token is near enough to its keep/drop boundary for float32 rounding in the library
# to flip the decision: at least MASS_TOL of probability mass away (top-p, typical), and at least LOG_TOL away in
# log-probability (min-p) or in surprise distance |-log p - H| (typical, whose float32 H is off by ~1e-6). The
# references report the distance in these units (the "margin": well posed iff > 1); kept sets must then agree exactly.
MASS_TOL = 1e-6
LOG_TOL = 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Independent float64 references (numpy, from the definitions; never library code)
# ----------------------------------------------------------------------------------------------------------------


def logsumexp(x: np.ndarray) -> float:
    finite = np.isfinite(x)
    m = x[finite].max()
    return float(m + np.log(np.sum(np.exp(x[finite] - m))))


def row64(row: torch.Tensor) -> np.ndarray:
    """One row of float32 log-probabilities as float64, renormalised in float64."""
    x = row.detach().double().numpy().copy()
    return x - logsumexp(x)


def truncate(lp: np.ndarray, kept: np.ndarray) -> np.ndarray:
    out = np.where(kept, lp, NEG_INF)
    return out - logsumexp(out)


def mass_above_loop(score: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """For each x: the total weight of the y with score(y) > score(x). The definition, O(V^2)."""
    out = np.zeros(len(score))
    for x in range(len(score)):
        for y in range(len(score)):
            if score[y] > score[x]:
                out[x] += weight[y]
    return out


def mass_above(score: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``mass_above_loop`` for any V: sort once, count the strictly higher scores by binary search."""
    if len(score) <= 64:
        return mass_above_loop(score, weight)
    order = np.argsort(-score, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(weight[order])])
    n_higher = np.searchsorted(-score[order], -score, side="left")  # entries with -s < -score[x]
    return cum[n_higher]


def ref_temperature(lp: np.ndarray, t: float) -> tuple[np.ndarray, float]:
    """p_T(x) = p(x)^(1/T) / sum_y p(y)^(1/T)."""
    out = lp / t
    return out - logsumexp(out), math.inf


def ref_top_k(lp: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Keep x iff fewer than k tokens are strictly more probable (so ties with the k-th value are kept)."""
    n_higher = mass_above(lp, np.ones_like(lp))
    return truncate(lp, np.isfinite(lp) & (n_higher < k)), math.inf


def ref_top_p(lp: np.ndarray, top_p: float) -> tuple[np.ndarray, float]:
    """Keep x iff the tokens strictly more probable than x hold less than top_p (the top token always)."""
    finite = np.isfinite(lp)
    if top_p >= 1:  # in exact arithmetic the mass strictly above any possible token is < 1
        return lp.copy(), math.inf
    above = mass_above(lp, np.exp(lp))
    kept = finite & (above < top_p)
    decided = finite & (above > 0)  # the top tokens have nothing above them: kept exactly, no rounding
    margin = float(np.min(np.abs(above[decided] - top_p))) / MASS_TOL if decided.any() else math.inf
    return truncate(lp, kept), margin


def ref_min_p(lp: np.ndarray, min_p: float) -> tuple[np.ndarray, float]:
    """Keep x iff p(x) >= min_p * max_y p(y)."""
    finite = np.isfinite(lp)
    log_ratio = lp - lp[finite].max()
    kept = finite & (np.exp(log_ratio) >= min_p)
    untied = finite & (log_ratio != 0.0)  # tokens tied with the top decide exactly (ratio 1)
    margin = float(np.min(np.abs(log_ratio[untied] - math.log(min_p)))) / LOG_TOL if untied.any() else math.inf
    return truncate(lp, kept), margin


def ref_typical(lp: np.ndarray, typical_p: float) -> tuple[np.ndarray, float]:
    """Meister et al.: H = entropy in nats; keep x iff the tokens strictly closer to H than x,
    by |-log p - H|, hold less than typical_p."""
    finite = np.isfinite(lp)
    if typical_p >= 1:
        return lp.copy(), math.inf
    p = np.exp(lp)
    h = -np.sum(p[finite] * lp[finite])
    dist = np.where(finite, np.abs(-lp - h), np.inf)
    closer = mass_above(-dist, p)
    kept = finite & (closer < typical_p)
    dropped = finite & ~kept
    gap = dist[dropped].min() - dist[kept].max() if dropped.any() else math.inf
    decided = finite & (closer > 0)  # the closest tokens have nothing closer: kept exactly, no rounding
    margin = float(np.min(np.abs(closer[decided] - typical_p))) / MASS_TOL if decided.any() else math.inf
    margin = min(margin, float(gap) / LOG_TOL)
    return truncate(lp, kept), margin


def ref_greedy(lp: np.ndarray) -> tuple[np.ndarray, float]:
    """Point mass on the most probable token, the lowest id among ties."""
    out = np.full_like(lp, NEG_INF)
    out[int(np.flatnonzero(lp == lp.max())[0])] = 0.0
    return out, math.inf


def reference(sampler: TokenSampler, lp: np.ndarray) -> tuple[np.ndarray, float]:
    """The reference law of a sampler or chain on one float64 row: (log-probabilities, decision margin)."""
    margin = math.inf
    for stage in sampler.stages:
        if isinstance(stage, Temperature):
            lp, m = ref_temperature(lp, stage.temperature)
        elif isinstance(stage, TopK):
            lp, m = ref_top_k(lp, stage.k)
        elif isinstance(stage, TopP):
            lp, m = ref_top_p(lp, stage.p)
        elif isinstance(stage, MinP):
            lp, m = ref_min_p(lp, stage.p)
        elif isinstance(stage, Typical):
            lp, m = ref_typical(lp, stage.p)
        elif isinstance(stage, Greedy):
            lp, m = ref_greedy(lp)
        elif isinstance(stage, Categorical):
            m = math.inf
        else:
            raise TypeError(f"no reference for {stage!r}")
        margin = min(margin, m)
    return lp, margin


def reference_law(sampler: TokenSampler, lp: np.ndarray) -> np.ndarray:
    """The reference probabilities of a test case that is well posed (see MASS_TOL)."""
    want, margin = reference(sampler, lp)
    assert margin > 1, f"{sampler!r}: ill-posed test case (margin {margin:.2f} tolerances from a boundary)"
    return np.exp(want)


# ----------------------------------------------------------------------------------------------------------------
# Helpers: every library call goes through these, which also check that the input is left untouched
# ----------------------------------------------------------------------------------------------------------------


def law_of(sampler: TokenSampler, logprobs: torch.Tensor) -> torch.Tensor:
    """The law ``sampler.sample`` draws from, as the one-chain wraps it; asserts the input is unchanged."""
    before = logprobs.clone()
    out = Chain(sampler.stages).law(logprobs, None)
    assert torch.equal(logprobs, before), f"{sampler!r} changed its input in place"
    return out


def sample_of(sampler: TokenSampler, logprobs: torch.Tensor, rng):
    before = logprobs.clone()
    out = sampler.sample(logprobs, None, rng)
    assert torch.equal(logprobs, before), f"{sampler!r}.sample changed its input in place"
    return out


def logprobs_of(probs) -> torch.Tensor:
    """[V] or [B, V] probabilities (zeros allowed) -> float32 log-probabilities [B, V]."""
    t = torch.as_tensor(probs, dtype=torch.float64)
    t = t / t.sum(-1, keepdim=True)
    return torch.log(t).float().reshape(-1, t.shape[-1])


def random_logprobs(seed: int, scales, vocab: int, masked: float = 0.0) -> torch.Tensor:
    """One float32 row per scale: log_softmax(scale * N(0, 1) logits); a fraction ``masked`` of each row -inf."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(scales), vocab, generator=g, dtype=torch.float64)
    logits = logits * torch.tensor(scales, dtype=torch.float64)[:, None]
    if masked:
        drop = torch.rand(len(scales), vocab, generator=g) < masked
        drop[:, 0] = False  # every row keeps a finite entry
        logits = logits.masked_fill(drop, NEG_INF)
    return torch.log_softmax(logits, -1).float()  # normalised in float64, so the float32 row sums to 1 +- 1e-7


def assert_row_matches(sampler, got: torch.Tensor, lp: np.ndarray, where: str) -> None:
    """``got`` (one library row) has the reference's kept set exactly and its probabilities to PROB_TOL."""
    want, margin = reference(sampler, lp)
    assert margin > 1, f"{where}: ill-posed test case (margin {margin:.2f} tolerances from a boundary)"
    got64 = got.double().numpy()
    kept_got, kept_want = np.isfinite(got64), np.isfinite(want)
    diff = np.flatnonzero(kept_got != kept_want)
    assert diff.size == 0, (
        f"{sampler!r} {where}: kept sets differ at tokens {diff[:10].tolist()} "
        f"(library keeps {kept_got[diff[:10]].tolist()}, reference {kept_want[diff[:10]].tolist()}); "
        f"library keeps {kept_got.sum()}, reference {kept_want.sum()}"
    )
    err = np.abs(np.exp(got64) - np.exp(want)).max()
    assert err <= PROB_TOL, f"{sampler!r} {where}: probabilities differ by {err:.2e}"


# ----------------------------------------------------------------------------------------------------------------
# 1. transform == reference
# ----------------------------------------------------------------------------------------------------------------

TINY = {
    # ties, including a tie across the top-k / top-p boundary
    "ties": [0.3, 0.3, 0.2, 0.1, 0.1],
    "tie_at_kth": [0.4, 0.18, 0.18, 0.18, 0.06, 0.0],
    "single_finite": [0.0, 0.0, 1.0, 0.0, 0.0],
    "uniform": [1.0] * 6,
    "peaked_tail": [0.86, 0.06, 0.03, 0.03, 0.015, 0.005, 0.0],
    "neg_inf_mixed": [0.24, 0.0, 0.24, 0.13, 0.0, 0.13, 0.26, 0.0],
    "descending": [0.35, 0.25, 0.15, 0.1, 0.07, 0.05, 0.03],
    "two_top_ties": [0.1, 0.35, 0.05, 0.35, 0.15],
}

SINGLE_SAMPLERS = [
    Temperature(0.3), Temperature(1.0), Temperature(2.5),
    TopK(1), TopK(2), TopK(3), TopK(8), TopK(10_000_000),
    TopP(1e-9), TopP(0.33), TopP(0.62), TopP(0.87), TopP(0.955), TopP(1.0),
    MinP(0.05), MinP(0.3), MinP(0.62), MinP(1.0),
    Typical(1e-9), Typical(0.33), Typical(0.62), Typical(0.87), Typical(0.955), Typical(1.0),
    Greedy(),
]


@pytest.mark.parametrize("sampler", SINGLE_SAMPLERS, ids=repr)
@pytest.mark.parametrize("case", list(TINY))
def test_transform_matches_reference_on_tiny_vocabularies(sampler, case):
    """On hand-made V = 5..8 rows (ties, -inf entries, a single finite entry) every sampler's law equals the
    float64 reference: same kept set, probabilities to 1e-6, and each row is normalised."""
    logprobs = logprobs_of(TINY[case])
    got = law_of(sampler, logprobs)
    assert got.shape == logprobs.shape and got.dtype == logprobs.dtype
    assert_row_matches(sampler, got[0], row64(logprobs[0]), case)
    assert abs(float(got[0].double().logsumexp(-1))) < 1e-6


def test_tiny_cases_cover_boundary_ties():
    """The hand-made cases exercise what they claim: a three-way tie straddling the top-k and top-p boundaries is
    kept whole (or dropped whole), and min-p = 1 and top-k = 1 keep both tokens tied for the top."""
    ties = logprobs_of(TINY["tie_at_kth"])
    assert torch.isfinite(law_of(TopK(2), ties)[0]).tolist() == [True, True, True, True, False, False]
    assert torch.isfinite(law_of(TopP(0.5), ties)[0]).tolist() == [True, True, True, True, False, False]
    assert torch.isfinite(law_of(TopP(0.3), ties)[0]).tolist() == [True, False, False, False, False, False]
    two_top = logprobs_of(TINY["two_top_ties"])
    assert torch.isfinite(law_of(MinP(1.0), two_top)[0]).tolist() == [False, True, False, True, False]
    assert torch.isfinite(law_of(TopK(1), two_top)[0]).tolist() == [False, True, False, True, False]


SCALES = (0.5, 1.0, 3.0, 8.0)  # logit scales: flat to peaked; rows of one batch are checked independently


@pytest.mark.parametrize("sampler", SINGLE_SAMPLERS, ids=repr)
@pytest.mark.parametrize("vocab, masked", [(8, 0.0), (50, 0.3), (1000, 0.0), (1000, 0.5)])
def test_transform_matches_reference_on_random_rows(sampler, vocab, masked):
    """Random rows of one batch (flat to peaked, with and without -inf entries) each equal the reference, and
    each equals the same row transformed alone (rows are independent)."""
    logprobs = random_logprobs(1000 + vocab, SCALES, vocab, masked)
    got = law_of(sampler, logprobs)
    for i in range(len(SCALES)):
        assert_row_matches(sampler, got[i], row64(logprobs[i]), f"V={vocab} row {i}")
        alone = law_of(sampler, logprobs[i : i + 1])[0]
        assert torch.equal(torch.isfinite(alone), torch.isfinite(got[i]))
        torch.testing.assert_close(alone, got[i], rtol=0, atol=1e-6)


LARGE_V = 50_000
LARGE_SEED = 13  # a seed whose rows are well posed for every parameter below (margins > 3 tolerances)
LARGE_SCALES = (2.0, 4.0, 8.0)  # language-model-like rows; the flattest needs ~10^4 tokens for p = 0.9


@pytest.mark.parametrize(
    "sampler",
    [Temperature(0.7), Temperature(1.6), TopK(1), TopK(40), TopK(LARGE_V), TopP(0.5), TopP(0.9), TopP(1.0),
     MinP(0.01), MinP(0.2), MinP(1.0), Typical(0.5), Typical(0.9), Typical(1.0)],
    ids=repr,
)
def test_transform_matches_reference_on_large_vocabulary(sampler):
    """V = 50,000: for the flatter rows the kept set is thousands of tokens, far past ``mass_cutoff``'s first
    top-256 window, so its large-set path runs; the kept set still equals the reference exactly."""
    logprobs = random_logprobs(LARGE_SEED, LARGE_SCALES, LARGE_V)
    got = law_of(sampler, logprobs)
    for i in range(len(LARGE_SCALES)):
        assert_row_matches(sampler, got[i], row64(logprobs[i]), f"V={LARGE_V} row {i}")


def test_large_vocabulary_rows_reach_past_the_first_window():
    """The large-vocabulary case does keep more than 2048 tokens for top-p and typical (not just the top 256)."""
    logprobs = random_logprobs(LARGE_SEED, LARGE_SCALES, LARGE_V)
    for sampler in (TopP(0.9), Typical(0.9)):
        kept = int(torch.isfinite(law_of(sampler, logprobs[:1])).sum())
        assert kept > 2048, (sampler, kept)


FULL_V = 262_144  # Gemma 3's vocabulary: float32 sums over it are off by ~1e-7


def full_row(scale: float) -> torch.Tensor:
    """[1, 262144] float32 log-probabilities normalised in float64 (renormalising them moves masses by < 3e-9)."""
    return random_logprobs(0, (scale,), FULL_V)


def float64_scores(make, lp64: np.ndarray) -> np.ndarray:
    """The ranking of the float64 rule: log p (top-p) or -|-log p - H| (typical)."""
    if make is TopP:
        return lp64
    h = -np.sum(np.exp(lp64) * lp64)
    return -np.abs(-lp64 - h)


REFERENCES = {TopP: ref_top_p, Typical: ref_typical}


@pytest.mark.parametrize("make", [TopP, Typical], ids=lambda c: c.__name__)
def test_full_vocabulary_boundary_token_kept_as_in_float64(make):
    """Regression: on a 262,144-wide row, with p between the float64 and the float32 mass above a boundary token,
    float32 sums (what TopP and Typical used to do) drop the token; the float64 rule, on the row as given and
    renormalised, keeps it, and so do the samplers."""
    lp = full_row(6.0)  # a peaked row: the kept set lies in mass_cutoff's first window of 256
    lp64 = lp[0].double().numpy()
    if make is TopP:
        score32 = lp
    else:
        score32 = -(-lp - torch.special.entr(lp.exp()).sum(-1, keepdim=True)).abs()
    top, idx = score32.topk(256, dim=-1)  # the float32 evaluation: exclusive prefix sums of exp(log p) in float32
    p32 = lp.exp().gather(-1, idx)
    above32, idx = (p32.cumsum(-1) - p32)[0].double().numpy(), idx[0].numpy()
    above64 = mass_above(float64_scores(make, lp64), np.exp(lp64))[idx]
    j = int(np.argmax(above32 - above64))  # the token whose float32 mass above overshoots most
    token, p = idx[j], float(above64[j] + above32[j]) / 2
    assert np.float32(p) <= above32[j], "float32 keeps the token: no disagreement to test"
    for row in (lp64, row64(lp[0])):
        want, _ = REFERENCES[make](row, p)
        assert np.isfinite(want[token]), "the float64 rule drops the token"
    got = law_of(make(p), lp)[0]
    assert torch.isfinite(got[token]), f"{make(p)!r} drops token {token}, which the float64 rule keeps"
    assert_kept_set(got, want)


@pytest.mark.parametrize("make", [TopP, Typical], ids=lambda c: c.__name__)
def test_large_kept_sets_measure_mass_with_float64_exponentials(make):
    """Past mass_cutoff's first window (kept sets of thousands of tokens) the masses are float64 exponentials of
    the log-probabilities: with p between the mass above a boundary token summed from float64 and from float32
    exponentials, the samplers decide as the float64 rule on the row as given."""
    lp = full_row(2.5)
    lp64 = lp[0].double().numpy()
    score64 = float64_scores(make, lp64)
    above64 = mass_above(score64, np.exp(lp64))
    above_f32_exp = mass_above(score64, lp[0].exp().double().numpy())
    ranked = np.argsort(-score64, kind="stable")[256:20_000]  # boundaries past the first window
    token = ranked[int(np.argmax(np.abs(above_f32_exp - above64)[ranked]))]
    p = float(above64[token] + above_f32_exp[token]) / 2
    want, _ = REFERENCES[make](lp64, p)
    assert (above64[token] < p) != (above_f32_exp[token] < p), "float32 exponentials decide alike: nothing to test"
    assert_kept_set(law_of(make(p), lp)[0], want)


def assert_kept_set(got: torch.Tensor, want: np.ndarray) -> None:
    kept_got, kept_want = torch.isfinite(got).numpy(), np.isfinite(want)
    diff = np.flatnonzero(kept_got != kept_want)
    assert diff.size == 0, (f"kept sets differ at tokens {diff[:10].tolist()} (library keeps {kept_got.sum()}, "
                            f"the float64 rule {kept_want.sum()})")


@pytest.mark.parametrize("vocab", [5, 17, 64])
def test_reference_helper_sort_equals_definition(vocab):
    """The sort-based ``mass_above`` used by the references for large V equals the O(V^2) definition
    (ties and -inf included), so the large-V references are the definitions too."""
    rng = np.random.default_rng(vocab)
    for _ in range(20):
        score = np.round(rng.normal(size=vocab), 1)  # rounding makes ties
        score[rng.random(vocab) < 0.2] = NEG_INF
        weight = rng.random(vocab)
        order = np.argsort(-score, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(weight[order])])
        fast = cum[np.searchsorted(-score[order], -score, side="left")]
        np.testing.assert_allclose(fast, mass_above_loop(score, weight), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# 2. The draw is exact: enumerate a grid of injected uniforms
# ----------------------------------------------------------------------------------------------------------------

CHAINS = [
    Temperature(0.7) | TopK(3),
    TopP(0.9) | Temperature(2.0),
    MinP(0.1) | Typical(0.9),
    Temperature(0.5) | TopP(0.6) | MinP(0.2),
    TopK(5) | Typical(0.65) | Temperature(1.5),
]

DRAW_ROW = [0.22, 0.18, 0.18, 0.0, 0.15, 0.12, 0.08, 0.05, 0.02]  # ties, a zero, a long-ish tail
M_GRID = 8192


@pytest.mark.parametrize("sampler", SINGLE_SAMPLERS + CHAINS, ids=repr)
def test_draw_is_exact_by_enumeration(sampler):
    """M = 8192 rows with the same logprobs and injected uniforms u_j = (j + 0.5) / M, one call: the frequency
    of every token equals its reference probability within 1/M (inverse CDF on an even grid), tokens of
    probability 0 never appear, log_weight is 0 and logq is the drawn token's log-probability."""
    row = logprobs_of(DRAW_ROW)
    logprobs = row.repeat(M_GRID, 1)
    u = (torch.arange(M_GRID, dtype=torch.float64) + 0.5) / M_GRID
    out = sample_of(sampler, logprobs, FixedUniforms(u[:, None]))
    want = reference_law(sampler, row64(row[0]))
    freq = np.bincount(out.tokens.numpy(), minlength=len(DRAW_ROW)) / M_GRID
    assert np.all(freq[want == 0] == 0), f"{sampler!r} drew tokens of probability 0: {freq}"
    assert np.abs(freq - want).max() <= 1 / M_GRID + 1e-9, f"{sampler!r}: {freq} vs {want}"
    assert torch.all(out.log_weight == 0)
    np.testing.assert_allclose(out.logq.exp().numpy(), want[out.tokens.numpy()], rtol=0, atol=PROB_TOL)


# ----------------------------------------------------------------------------------------------------------------
# 3. Chi-square with the real generator
# ----------------------------------------------------------------------------------------------------------------

CHI2_SEED = 20_240_611
CHI2_N = 20_000
CHI2_ROWS = {
    8: [0.3, 0.2, 0.15, 0.12, 0.1, 0.07, 0.04, 0.02],
    10: [0.07, 0.2, 0.0, 0.15, 0.14, 0.1, 0.12, 0.08, 0.1, 0.04],
    12: [0.15, 0.13, 0.12, 0.11, 0.1, 0.09, 0.08, 0.07, 0.06, 0.04, 0.03, 0.02],
}


def chi2_pvalue(sampler: TokenSampler, probs, seed: int = CHI2_SEED, n: int = CHI2_N) -> float:
    """Sample n rows of ``probs`` with ``RowStreams.from_seed(seed, n)``; chi-square p-value against the
    reference law (zero-probability tokens must have zero counts)."""
    row = logprobs_of(probs)
    out = sample_of(sampler, row.repeat(n, 1), RowStreams.from_seed(seed, n))
    want = reference_law(sampler, row64(row[0]))
    counts = np.bincount(out.tokens.numpy(), minlength=len(probs))
    assert counts[want == 0].sum() == 0, f"{sampler!r} drew tokens of probability 0"
    support = want > 0
    assert support.sum() >= 2, "chi-square needs two possible tokens"
    expected = n * want[support] / want[support].sum()
    return float(scipy.stats.chisquare(counts[support], expected).pvalue)


CHI2_SAMPLERS = [
    Temperature(0.6), Temperature(1.8), TopK(3), TopP(0.8), MinP(0.25), Typical(0.8),
    *CHAINS,
]


@pytest.mark.parametrize(
    "sampler, vocab",
    [(s, v) for i, s in enumerate(CHI2_SAMPLERS) for v in [list(CHI2_ROWS)[i % 3], list(CHI2_ROWS)[(i + 1) % 3]]],
    ids=repr,
)
def test_real_rng_frequencies_pass_chi_square(sampler, vocab):
    """seed 20240611, N = 20,000 rows, each sampler on two of the V = 8, 10, 12 rows: the sampled frequencies
    match the reference law (chi-square p-value > 1e-3)."""
    assert chi2_pvalue(sampler, CHI2_ROWS[vocab]) > 1e-3


def test_chi_square_detects_a_wrong_law():
    """The chi-square test has power at this N: samples of Temperature(0.6) are rejected against the law of
    Temperature(0.7) (p-value < 1e-6), so a wrong temperature cannot hide behind the 1e-3 threshold."""
    row = logprobs_of(CHI2_ROWS[8])
    out = sample_of(Temperature(0.6), row.repeat(CHI2_N, 1), RowStreams.from_seed(CHI2_SEED, CHI2_N))
    claimed = np.exp(ref_temperature(row64(row[0]), 0.7)[0])
    counts = np.bincount(out.tokens.numpy(), minlength=8)
    assert scipy.stats.chisquare(counts, CHI2_N * claimed).pvalue < 1e-6


ORDER_ROW = [0.5, 0.3, 0.2]


@pytest.mark.parametrize(
    "first, second, differs",
    [
        # TopP and MinP depend on the shape of the distribution, which temperature changes: order matters.
        (Temperature(0.5), TopP(0.6), True),
        (Temperature(2.0), MinP(0.5), True),
        (Temperature(0.5), Typical(0.5), True),
        # TopK depends only on the ranking, which temperature preserves, and p^(1/T) renormalises the same
        # before or after truncation: Temperature | TopK == TopK | Temperature exactly.
        (Temperature(0.5), TopK(2), False),
    ],
    ids=repr,
)
def test_composition_order(first, second, differs):
    """``a | b`` applies a first: on [0.5, 0.3, 0.2] each order equals its own reference (transform and a
    chi-square of real draws), and the two orders differ exactly when the math says they do."""
    ab, ba = first | second, second | first
    row = logprobs_of(ORDER_ROW)
    law_ab, law_ba = law_of(ab, row)[0], law_of(ba, row)[0]
    assert_row_matches(ab, law_ab, row64(row[0]), "a|b")
    assert_row_matches(ba, law_ba, row64(row[0]), "b|a")
    gap = (law_ab.exp() - law_ba.exp()).abs().max().item()
    assert (gap > 0.05) if differs else (gap < 1e-6), gap
    for chain in (ab, ba):
        if int(torch.isfinite(law_of(chain, row)).sum()) >= 2:
            assert chi2_pvalue(chain, ORDER_ROW) > 1e-3


def test_composition_order_example_values():
    """The worked example: Temperature(0.5) | TopP(0.6) keeps only token 0 (p^2 puts 0.66 on it), while
    TopP(0.6) | Temperature(0.5) keeps {0, 1} with 0.25 / 0.34 and 0.09 / 0.34."""
    row = logprobs_of(ORDER_ROW)
    torch.testing.assert_close(law_of(Temperature(0.5) | TopP(0.6), row).exp(), torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(
        law_of(TopP(0.6) | Temperature(0.5), row).exp(), torch.tensor([[0.25 / 0.34, 0.09 / 0.34, 0.0]])
    )


# ----------------------------------------------------------------------------------------------------------------
# 4. Greedy
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "probs, expected",
    [
        ([0.2, 0.5, 0.3], 1),
        ([0.4, 0.4, 0.2], 0),  # tie: lowest id
        ([0.1, 0.0, 0.3, 0.0, 0.3, 0.3], 2),  # tie among three, -inf entries before them
        ([0.0, 0.0, 0.0, 1.0], 3),
        ([1.0] * 7, 0),
    ],
)
def test_greedy_is_argmax_lowest_id_on_ties(probs, expected):
    """Greedy returns the most probable token (lowest id among ties) whatever the uniforms; its law is a point
    mass on that token; log_weight and logq are 0."""
    logprobs = logprobs_of(probs).repeat(3, 1)
    out = sample_of(Greedy(), logprobs, RowStreams.from_seed(0, 3))
    assert out.tokens.tolist() == [expected] * 3
    assert torch.all(out.log_weight == 0) and torch.all(out.logq == 0)
    law = law_of(Greedy(), logprobs)
    point = torch.full_like(law, NEG_INF)
    point[:, expected] = 0.0
    assert torch.equal(law, point)


def test_greedy_after_transforms_is_argmax_of_transformed():
    """A chain ending in Greedy takes the mode of the transformed law (lowest id on ties)."""
    logprobs = random_logprobs(3, (0.5, 1.0, 4.0), 100, masked=0.3)
    for chain in (Temperature(0.5) | Greedy(), TopP(0.9) | Greedy(), Typical(0.2) | Greedy()):
        out = sample_of(chain, logprobs, RowStreams.from_seed(1, 3))
        for i in range(3):
            want = reference_law(chain, row64(logprobs[i]))
            assert out.tokens[i].item() == int(np.argmax(want))
        assert torch.all(out.logq == 0) and torch.all(out.log_weight == 0)


# ----------------------------------------------------------------------------------------------------------------
# 5. Protocol
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", SINGLE_SAMPLERS + CHAINS, ids=repr)
def test_sample_protocol(sampler):
    """For every sampler and chain on a random batch: tokens are int64 [B] inside the support, log_weight is 0
    (exact samplers), logq is exactly the law's log-probability of the drawn token, and neither ``transform``,
    ``law`` nor ``sample`` modifies its input."""
    logprobs = random_logprobs(11, (0.5, 1.0, 3.0, 8.0, 1.0), 300, masked=0.2)
    before = logprobs.clone()
    for stage in sampler.stages:
        if not stage.terminal:
            stage.transform(logprobs, None)
            assert torch.equal(logprobs, before), f"{stage!r}.transform changed its input"
    out = sample_of(sampler, logprobs, RowStreams.from_seed(5, 5))
    law = law_of(sampler, logprobs)
    assert out.tokens.dtype == torch.int64 and out.tokens.shape == (5,)
    assert torch.all(out.log_weight == 0)
    drawn = law.gather(-1, out.tokens[:, None])[:, 0]
    assert torch.all(torch.isfinite(drawn))
    assert torch.equal(out.logq, drawn)
    for i in range(5):
        want = reference_law(sampler, row64(logprobs[i]))[out.tokens[i].item()]
        assert abs(math.exp(out.logq[i].item()) - want) <= PROB_TOL


def test_chains_are_samplers_and_flatten():
    """A chain is a TokenSampler; ``a | b | c`` and ``a | (b | c)`` flatten to the stages (a, b, c); a chain of
    non-terminal stages ends with an implicit categorical draw equal to an explicit ``Categorical()``."""
    a, b, c = Temperature(0.7), TopK(5), TopP(0.9)
    for chain in (a | b | c, a | (b | c), (a | b) | c, Chain([a, b, c])):
        assert isinstance(chain, TokenSampler) and isinstance(chain, Chain)
        assert chain.stages == (a, b, c)
        assert all(x is y for x, y in zip(chain.stages, (a, b, c)))
    logprobs = random_logprobs(2, (1.0, 2.0, 3.0), 40)
    implicit = sample_of(a | b | c, logprobs, RowStreams.from_seed(9, 3))
    explicit = sample_of(a | b | c | Categorical(), logprobs, RowStreams.from_seed(9, 3))
    assert torch.equal(implicit.tokens, explicit.tokens) and torch.equal(implicit.logq, explicit.logq)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Greedy() | TopK(2),
        lambda: TopK(2) | Greedy() | Temperature(1.0),
        lambda: Categorical() | TopP(0.5),
        lambda: Chain([Temperature(1.0), Greedy(), Greedy()]),
        lambda: Chain([]),
    ],
)
def test_terminal_in_the_middle_raises(build):
    """A terminal sampler (one that draws) anywhere but last, or an empty chain, is a ValueError."""
    with pytest.raises(ValueError):
        build()


def test_same_seed_same_tokens_different_seed_different_tokens():
    """Seeding is reproducible: the same seed gives the same tokens; another seed gives other tokens (1000 rows
    of a flat 50-token law: equal outcomes would have probability ~1e-1700)."""
    logprobs = random_logprobs(4, (0.3,) * 1000, 50)
    sampler = Temperature(1.3) | TopP(0.95)
    a = sample_of(sampler, logprobs, RowStreams.from_seed(123, 1000)).tokens
    b = sample_of(sampler, logprobs, RowStreams.from_seed(123, 1000)).tokens
    c = sample_of(sampler, logprobs, RowStreams.from_seed(124, 1000)).tokens
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a != c).float().mean() > 0.8


def test_row_streams_do_not_depend_on_the_batch():
    """Row i's numbers are a function of its own seed and counter only: ``from_seed([s1, s2], 2)`` row 1 equals
    ``from_seed([s2], 1)`` row 0, and an int seed gives row i the same stream for any batch size."""
    s1, s2 = 17, 2**63 + 5
    pair, alone = RowStreams.from_seed([s1, s2], 2), RowStreams.from_seed([s2], 1)
    for n in (None, 3, 1, 7):
        x, y = pair.uniform(n), alone.uniform(n)
        assert torch.equal(x[1], y[0])
    small, big = RowStreams.from_seed(42, 3), RowStreams.from_seed(42, 8)
    for n in (None, 5):
        assert torch.equal(small.uniform(n), big.uniform(n)[:3])
    with pytest.raises(ValueError, match="seed"):
        RowStreams.from_seed([1, 2, 3], 2)


def test_row_streams_advance():
    """Each call continues every row's stream: ``uniform(5)`` equals five successive ``uniform()`` calls, the next
    call gives new numbers, and the counters count the numbers drawn."""
    block_rng, single_rng = RowStreams.from_seed(8, 4), RowStreams.from_seed(8, 4)
    block = block_rng.uniform(5)
    singles = torch.stack([single_rng.uniform() for _ in range(5)], 1)
    assert torch.equal(block, singles)
    later = block_rng.uniform(5)
    assert torch.unique(torch.cat([block.flatten(), later.flatten()])).numel() == 40
    assert block_rng.counters.tolist() == [10] * 4


def test_row_streams_select_keeps_streams():
    """``select`` carries each row's stream and counter: after some draws, the selected rows continue exactly as
    the same rows of the original would, and selecting leaves the original's counters alone."""
    rng = RowStreams.from_seed([3, 1, 4, 1, 5], 5)
    rng.uniform(4)
    rng.uniform()
    picked = rng.select([4, 0, 2])
    picked_t = rng.select(torch.tensor([4, 0, 2]))
    nxt = rng.uniform(6)
    assert torch.equal(picked.uniform(6), nxt[[4, 0, 2]])
    assert torch.equal(picked_t.uniform(6), nxt[[4, 0, 2]])
    fixed = FixedUniforms(torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype=torch.float64))
    fixed.uniform()
    assert torch.equal(fixed.select([2, 0]).uniform(), torch.tensor([0.6, 0.2], dtype=torch.float64))


def test_row_streams_uniforms_in_open_interval_and_uniform():
    """1000 rows x 200 numbers: all in (0, 1), float64, and uniform (Kolmogorov-Smirnov p > 1e-3, seed 0)."""
    u = RowStreams.from_seed(0, 1000).uniform(200)
    assert u.dtype == torch.float64 and u.shape == (1000, 200)
    assert bool((u > 0).all()) and bool((u < 1).all())
    assert scipy.stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3


def _invert_mix64(y: int) -> int:
    """The preimage of ``y`` under splitmix64's finaliser (each step is a bijection of uint64)."""
    mask = 2**64 - 1

    def unshift(v: int, s: int) -> int:
        x = v
        for _ in range(64 // s + 1):
            x = v ^ (x >> s)
        return x & mask

    y = unshift(y, 31)
    y = (y * pow(0x94D049BB133111EB, -1, 2**64)) & mask
    y = unshift(y, 27)
    y = (y * pow(0xBF58476D1CE4E5B9, -1, 2**64)) & mask
    return unshift(y, 30)


def test_row_streams_extreme_words_stay_inside_open_interval():
    """The extreme outputs of the mixer map inside (0, 1): keys chosen so the first mixed word is 0 or 2**64 - 1
    (found by inverting splitmix64's finaliser) still give 0 < u < 1, as ``uniform``'s docstring promises."""
    golden = 0x9E3779B97F4A7C15
    keys = [(_invert_mix64(word) - golden) % 2**64 for word in (0, 2**64 - 1)]
    u = RowStreams(np.array(keys, dtype=np.uint64)).uniform()
    assert 0 < u[0].item() < 1
    assert 0 < u[1].item() < 1, f"u = {u[1].item()!r}"


# ----------------------------------------------------------------------------------------------------------------
# 6. Bad input
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: Temperature(0), "temperature"),
        (lambda: Temperature(-1), "temperature"),
        (lambda: Temperature(float("nan")), "temperature"),
        (lambda: Temperature(float("inf")), "temperature"),
        (lambda: TopK(0), r"\bk\b"),
        (lambda: TopK(-3), r"\bk\b"),
        (lambda: TopK(1.5), r"\bk\b"),
        (lambda: TopK(True), r"\bk\b"),
        (lambda: TopP(0), "top_p"),
        (lambda: TopP(1.2), "top_p"),
        (lambda: TopP(float("nan")), "top_p"),
        (lambda: MinP(0), "min_p"),
        (lambda: MinP(1.5), "min_p"),
        (lambda: Typical(0), "typical_p"),
        (lambda: Typical(-0.1), "typical_p"),
        (lambda: Typical("0.5"), "typical_p"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_argument(build, name):
    """Out-of-range or ill-typed parameters raise ValueError whose message names the argument."""
    with pytest.raises(ValueError, match=name):
        build()


@pytest.mark.parametrize("sampler", [Temperature(0.7), TopK(2), TopP(0.9), MinP(0.1), Typical(0.9), Greedy(),
                                     TopP(0.9) | Temperature(2.0)], ids=repr)
@pytest.mark.parametrize("bad", ["nan", "all_neg_inf"])
def test_sample_rejects_undefined_rows(sampler, bad):
    """``sample`` on logprobs whose row 2 holds a NaN or has no finite entry raises a ValueError naming
    ``logprobs`` and row 2 (and changes nothing in the input)."""
    logprobs = random_logprobs(0, (1.0,) * 4, 6)
    if bad == "nan":
        logprobs[2, 3] = float("nan")
    else:
        logprobs[2] = NEG_INF
    before = logprobs.clone()
    with pytest.raises(ValueError, match=r"logprobs.*row 2"):
        sampler.sample(logprobs, None, RowStreams.from_seed(0, 4))
    torch.testing.assert_close(logprobs, before, rtol=0, atol=0, equal_nan=True)
