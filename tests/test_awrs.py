"""AWRS: exact constrained draws, unbiased and properly weighted estimates of the allowed mass, few checks.

The toys have a 6-token vocabulary and a known distribution, so the constrained law p(. | A) and Z = p(A) are
known exactly. Each Monte Carlo test draws n = 100,000 rows in ONE vectorised call at seed 0 and compares:
token frequencies with the constrained law (chi-square, p > 1e-3), the mean of exp(log_weight) with Z, and
E[exp(log_weight) 1{x = a}] with p(a) for each allowed a (proper weighting), each within 4 standard errors.

At this n, 4 standard errors of the mean weight are 1.0-1.1% of Z on FLAT, 0.1-0.3% on PEAKED, 1.6-2.2% on RARE
(3.3% for "paper", the noisiest): an estimator off by more fails. Checked by breaking each estimator in turn
(geometric m/N for Haldane's (m - 1)/(N - 1), recursive without its lookahead, paper dividing by n_rej + 2): all
fail on every case, as at n = 200,000; a bias under the bounds (paper x 1.03 on RARE) now passes (it failed
at 200,000).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import decoding as dc
from decoding.constraints.base import DEAD, TokenConstraint
from decoding.kernels.random import FixedUniforms, RowStreams
from decoding.kernels.sampling import BlockCDF
from decoding.samplers.awrs import AWRS

N = 100_000


class SetConstraint(TokenConstraint):
    """Toy constraint over 6 tokens: state 0 allows the tokens in ``allowed`` (each leads to state 1, which
    accepts); token 5 is EOS, allowed only in accepting states. Counts every ``advance`` call."""

    class _Vocab:
        size, eos_token_ids = 6, (5,)

    vocabulary = _Vocab()

    def __init__(self, allowed=(1, 3)):
        self.allowed = set(allowed)
        self.calls = 0
        self._masks = {}  # state -> its mask, built once (a 100,000-row draw asks for ~100,000 masks of 2 states)

    def start(self):
        return 0

    def advance_batch(self, states, tokens):
        self.calls += len(tokens)
        return super().advance_batch(states, tokens)

    def advance(self, state, token_id):
        return 1 if state == 0 and token_id in self.allowed else DEAD

    def is_accepting(self, state):
        return state == 1

    def can_finish(self, state):
        return state in (0, 1)

    def mask(self, state):
        if state not in self._masks:
            allowed = torch.tensor([state == 0 and t in self.allowed for t in range(6)])
            allowed[5] = self.is_accepting(state)
            self._masks[state] = allowed
        return self._masks[state]


FLAT = [0.3, 0.1, 0.25, 0.2, 0.05, 0.1]  # allowed {1, 3}: Z = 0.3, the model mostly wants other tokens
PEAKED = [0.02, 0.85, 0.05, 0.04, 0.03, 0.01]  # allowed {1, 3}: Z = 0.89, top token allowed
RARE = [0.45, 0.01, 0.3, 0.005, 0.2, 0.035]  # allowed {1, 3}: Z = 0.015, the constraint fights the model
CASES = {"flat": FLAT, "peaked": PEAKED, "rare": RARE}
ESTIMATORS = ["recursive", "geometric", "paper", "auto"]


def draw(probs, estimator, n=N, seed=0, allowed=(1, 3), **kwargs):
    sampler = AWRS(SetConstraint(allowed), estimator=estimator, **kwargs)
    logprobs = torch.tensor(probs).log().expand(n, -1).contiguous()
    return sampler.draw(logprobs, [0] * n, RowStreams.from_seed(seed, n))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_awrs_draws_the_constrained_law_with_properly_weighted_unbiased_weights(estimator, case):
    probs = torch.tensor(CASES[case], dtype=torch.float64)
    allowed = [1, 3]
    z = float(probs[allowed].sum())
    out = draw(CASES[case], estimator)
    counts = torch.bincount(out.tokens, minlength=6).double()
    assert counts[[0, 2, 4, 5]].sum() == 0, "a token the constraint rejects was returned"
    expected = (probs[allowed] / z * N).numpy()
    assert scipy.stats.chisquare(counts[allowed].numpy(), expected).pvalue > 1e-3
    w = out.log_weight.double().exp()
    se = float(w.std()) / math.sqrt(N)
    assert abs(float(w.mean()) - z) < 4 * se + 1e-6, (float(w.mean()), z, se)
    for a in allowed:  # proper weighting: E[w 1{x = a}] = p(a)
        wa = w * (out.tokens == a)
        assert abs(float(wa.mean()) - float(probs[a])) < 4 * float(wa.std()) / math.sqrt(N) + 1e-6


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_awrs_at_an_accepting_state_allows_eos(estimator):
    """State 1 allows only EOS (token 5): the draw is EOS with weight p(EOS) exactly in every estimator."""
    sampler = AWRS(SetConstraint(), estimator=estimator)
    logprobs = torch.tensor(FLAT).log().expand(1000, -1).contiguous()
    out = sampler.draw(logprobs, [1] * 1000, RowStreams.from_seed(0, 1000))
    assert (out.tokens == 5).all()
    torch.testing.assert_close(out.log_weight.exp().mean(), torch.tensor(0.1), atol=0.01, rtol=0)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_awrs_dead_end_gives_minus_inf_and_the_other_rows_finish(estimator):
    sampler = AWRS(SetConstraint(allowed=()), estimator=estimator)
    logprobs = torch.tensor(FLAT).log().expand(2, -1).contiguous()
    out = sampler.draw(logprobs, [0, 1], RowStreams.from_seed(0, 2))  # row 0: nothing allowed; row 1: EOS
    assert out.log_weight[0] == float("-inf") and torch.isfinite(out.log_weight[1]) and out.tokens[1] == 5
    assert out.counters["constraint_checks"][0] == 6  # every token with mass (EOS included) was checked once


def test_awrs_checks_each_token_at_most_once_and_few_when_the_model_agrees():
    """Memo: no token is checked twice in a step; the geometric estimator's re-draws of the accepted token are
    free, so a peaked model costs about 1 check per token, against V = 6 for masking."""
    for estimator in ESTIMATORS:
        out = draw(RARE, estimator, n=2000)
        assert int(out.counters["constraint_checks"].max()) <= 6  # V: no token twice
    geometric = draw(PEAKED, "geometric", n=20000).counters["constraint_checks"].double().mean()
    recursive = draw(PEAKED, "recursive", n=20000).counters["constraint_checks"].double().mean()
    assert geometric < 1.4 < 1.9 < recursive  # recursive always checks one more token
    assert draw(PEAKED, "auto", n=20000).counters["constraint_checks"].double().mean() == geometric


def test_awrs_counts_the_checks_it_makes():
    tc = SetConstraint()
    sampler = AWRS(tc, estimator="recursive")
    out = sampler.draw(torch.tensor(FLAT).log().expand(500, -1).contiguous(), [0] * 500, RowStreams.from_seed(3, 500))
    assert tc.calls == int(out.counters["constraint_checks"].sum())


def test_awrs_max_rejects_finishes_exactly_by_mask_and_stays_unbiased():
    out = draw(RARE, "recursive", max_rejects=1)
    probs = torch.tensor(RARE, dtype=torch.float64)
    assert int(out.counters["constraint_checks"].max()) <= 2  # one rejection, or an accept and its lookahead
    counts = torch.bincount(out.tokens, minlength=6).double()
    assert counts[[0, 2, 4, 5]].sum() == 0
    expected = (probs[[1, 3]] / probs[[1, 3]].sum() * N).numpy()
    assert scipy.stats.chisquare(counts[[1, 3]].numpy(), expected).pvalue > 1e-3
    w = out.log_weight.double().exp()
    assert abs(float(w.mean()) - 0.015) < 4 * float(w.std()) / math.sqrt(N) + 1e-9


def test_awrs_rows_draw_the_same_alone_and_in_a_batch():
    """Each row's uniforms come from its own stream, so rows needing more rounds do not shift the others, in
    this step or the next."""
    logprobs = torch.tensor([FLAT, PEAKED, RARE]).log()
    rng = RowStreams.from_seed([4, 5, 6], 3)
    together = [AWRS(SetConstraint(), "auto").draw(logprobs, [0, 0, 0], rng) for _ in range(3)]
    for i, seed in enumerate([4, 5, 6]):
        alone_rng = RowStreams.from_seed([seed], 1)
        for step in together:
            alone = AWRS(SetConstraint(), "auto").draw(logprobs[i : i + 1], [0], alone_rng)
            assert alone.tokens[0] == step.tokens[i]
            assert alone.log_weight[0] == step.log_weight[i]


class Successor(SetConstraint):
    """Each allowed token leads to its own state (10 + token), so a committed state names the token."""

    def advance(self, state, token_id):
        return 10 + token_id if state == 0 and token_id in self.allowed else DEAD

    def is_accepting(self, state):
        return state >= 10


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_awrs_commits_the_state_of_the_token_it_returns(estimator):
    """The lookahead and later rounds check other allowed tokens too; the state committed must be the one of
    the returned token."""
    logprobs = torch.tensor(FLAT).log().expand(2000, -1).contiguous()
    sampler = AWRS(Successor(), estimator)
    out = sampler.sample(logprobs, [0] * 2000, RowStreams.from_seed(0, 2000))
    assert out.state == [10 + t for t in out.tokens.tolist()]


def test_awrs_returns_the_next_states_with_its_draw_and_keeps_no_hidden_state():
    """States are functional: the draw hands back the states its checks computed; the sampler object is unchanged,
    so two decoders (or SMC's particles, or a rollback) can share it."""
    logprobs = torch.tensor(FLAT).log().expand(50, -1).contiguous()
    sampler = AWRS(Successor())
    before = dict(vars(sampler))
    drawn = sampler.draw(logprobs, [0] * 50, RowStreams.from_seed(1, 50))
    assert vars(sampler) == before
    assert drawn.state == [10 + t for t in drawn.tokens.tolist()]
    assert sampler.accept([0] * 50, drawn.tokens, logprobs) == drawn.state  # accept alone agrees


def test_awrs_recursive_weights_on_forced_paths():
    """Inject the uniforms: order (2, 1, then 3 as lookahead): R = 0.25, x = 1 accepted, y = 3 allowed -> 1 - R;
    order (1, 0): x = 1, y = 0 rejected -> p(1)."""
    logprobs = torch.tensor([FLAT, FLAT]).log()
    # row 0 draws 2 (cdf 0.4..0.65), then 1 among {0,1,3,4,5} (0.3..0.4 of 0.75), then 3 among {0,3,4,5}
    # row 1 draws 1, then 0 among {0,2,3,4,5} (first 0.3 of 0.9)
    u = torch.tensor([[0.5, 0.5, 0.45, 0.5, 0.55, 0.5], [0.35, 0.5, 0.1, 0.5, 0.5, 0.5]], dtype=torch.float64)
    out = AWRS(SetConstraint(), "recursive").draw(logprobs, [0, 0], FixedUniforms(u))
    assert out.tokens.tolist() == [1, 1]
    torch.testing.assert_close(out.log_weight.exp(), torch.tensor([0.75, 0.1]), atol=1e-6, rtol=0)
    assert out.counters["constraint_checks"].tolist() == [3, 2]


def test_block_cdf_without_excluded_tokens_is_exact_on_a_grid():
    """V = 1300 spans three 512-blocks; excluding tokens in two of them leaves the others' relative law intact."""
    torch.manual_seed(0)
    logprobs = torch.log_softmax(torch.randn(1, 1300) * 2, -1)
    excluded = torch.tensor([[3, 700, 701, 1299, -1]])
    m = 20000
    u = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    cdf = BlockCDF(logprobs.expand(m, -1))
    tokens, total = cdf.draw(u, excluded=excluded.expand(m, -1))
    p = logprobs[0].double().exp()
    keep = torch.ones(1300, dtype=torch.bool)
    keep[[3, 700, 701, 1299]] = False
    law = torch.where(keep, p, 0.0) / p[keep].sum()
    freq = torch.bincount(tokens, minlength=1300).double() / m
    assert (freq - law).abs().max() <= 1.0 / m + 1e-6
    torch.testing.assert_close(total[0], p[keep].sum(), atol=1e-6, rtol=0)
    everything = BlockCDF(logprobs).draw(u[:1], excluded=torch.arange(1300)[None])[1]
    assert everything[0] == 0.0


def test_awrs_law_is_the_masked_law():
    logprobs = torch.log_softmax(torch.randn(3, 6), -1)
    awrs, masked = AWRS(SetConstraint()), dc.Masked(SetConstraint())
    torch.testing.assert_close(awrs.law(logprobs, [0, 1, 0]), masked.law(logprobs, [0, 1, 0]))


def test_awrs_bad_arguments_are_named():
    with pytest.raises(ValueError, match="estimator"):
        AWRS(SetConstraint(), estimator="gumbel")
    with pytest.raises(ValueError, match="max_rejects"):
        AWRS(SetConstraint(), max_rejects=0)
    with pytest.raises(ValueError, match="estimator='recursive'"):
        AWRS(SetConstraint(), estimator="paper", max_rejects=5)
    with pytest.raises(ValueError, match="max_accepts"):
        AWRS(SetConstraint(), max_accepts=1)
    with pytest.raises(TypeError, match="constraint"):
        AWRS("[0-9]+")
    with pytest.raises(ValueError, match="must be the last"):
        AWRS(SetConstraint()) | dc.TopP(0.9)


# --- on real tokenizers (tiny random models) and the real model -------------------------------------------------


def test_awrs_predicate_generations_satisfy_it_and_report_checks(gemma_lm):
    """A Predicate never builds a mask: AWRS checks only drawn tokens (a sharpened random model)."""
    no_a = dc.Predicate(lambda text: "a" not in text.lower())
    out = dc.generate(gemma_lm, ["x", "y"], dc.Temperature(0.1) | dc.AWRS(no_a), max_new_tokens=8, seed=0)
    for seq in out:
        assert "a" not in seq.text.lower() and len(seq.token_ids) == 8
        assert 8 <= seq.counters["constraint_checks"] < 8 * 21
    assert out.stats.counters["constraint_checks"] == sum(s.counters["constraint_checks"] for s in out)


def test_awrs_predicate_that_raises_names_the_prefix(gemma_lm):
    def picky(text):
        if len(text) > 3:
            raise KeyError("too long")
        return True

    with pytest.raises(dc.constraints.predicate.PredicateError, match="prefix"):
        dc.generate(gemma_lm, "x", dc.Temperature(0.1) | dc.AWRS(dc.Predicate(picky)), max_new_tokens=10)


def test_awrs_regex_generations_fullmatch_on_tiny_models(tiny_lm):
    """A random model puts ~1/V on each token, so plain rejection would take ~V/|A| checks; max_rejects caps it
    and finishes by mask. Every finished text matches."""
    import re

    pattern = r"[0-9]{2}-[a-c]"
    out = dc.generate(tiny_lm, ["a", "bb"], dc.AWRS(dc.Regex(pattern), max_rejects=20), max_new_tokens=12, seed=2)
    for seq in out:
        assert seq.finished and re.fullmatch(pattern, seq.text, re.ASCII)
        assert seq.counters["constraint_checks"] <= 20 * len(seq.token_ids)


@pytest.mark.slow
def test_awrs_json_on_the_default_model_validates_with_few_checks(gemma):
    import json

    import jsonschema

    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer"}}, "required": ["name", "age"],
              "additionalProperties": False}
    prompt = 'Ada Lovelace, aged 36, as JSON:\n```json\n'
    constraint = dc.JsonSchema(schema, whitespace=r"[ \n]{0,8}")
    out = dc.generate(gemma, [prompt], dc.AWRS(constraint), max_new_tokens=40, seed=0)
    seq = out[0]
    assert seq.finished, seq.reason
    jsonschema.validate(json.loads(seq.text), schema)
    assert out.stats.per_token("constraint_checks") < 20  # masking checks all 262,144 tokens
    assert np.isfinite(seq.log_weight) and seq.log_weight <= 0


@pytest.fixture(scope="module")
def gemma_vocabulary(gemma_tokenizer):
    """The real Gemma 3 vocabulary (262,144 tokens' bytes), built once for the tests that bind regexes to it."""
    from decoding.vocabulary import Vocabulary

    return Vocabulary(gemma_tokenizer)


def test_awrs_complete_text_takes_eos_exactly_without_checks(gemma_tokenizer, gemma_vocabulary):
    """Regex "ab" after "ab": complete, and no byte may follow. The step draws among the EOS ids with
    Z = p(EOS) exactly and checks nothing."""
    vocabulary = gemma_vocabulary
    tc = dc.Regex("ab").bind(vocabulary)
    done = tc.advance(tc.start(), gemma_tokenizer.convert_tokens_to_ids("ab"))
    assert tc.only_eos_batch([done, tc.start(), DEAD]).tolist() == [True, False, False]
    torch.manual_seed(0)
    logprobs = torch.log_softmax(torch.randn(4, vocabulary.size), -1)
    out = AWRS(tc).draw(logprobs, [done] * 4, RowStreams.from_seed(0, 4))
    eos = list(vocabulary.eos_token_ids)
    assert set(out.tokens.tolist()) <= set(eos) and out.counters["constraint_checks"].sum() == 0
    torch.testing.assert_close(out.log_weight, logprobs[:, eos].logsumexp(-1))


def test_awrs_leaves_out_impossible_tokens_without_checks(gemma_tokenizer, gemma_vocabulary):
    """Regex " (Lyon|Nice)": a token with any byte outside the pattern's alphabet is never checked, and the
    weight still averages to Z over the draws (the left-out mass counts as rejected)."""
    vocabulary = gemma_vocabulary
    tc = dc.Regex(r" (Lyon|Nice)").bind(vocabulary)
    possible = tc.possible_tokens()
    assert possible[gemma_tokenizer.convert_tokens_to_ids("▁Paris")] == False  # noqa: E712 - 'P' not in the pattern
    assert possible[gemma_tokenizer.convert_tokens_to_ids("▁Lyon")] and possible.sum() < 5000
    mask = tc.mask(tc.start())
    assert not (mask & ~possible).any()  # the pre-filter never removes an allowed token
    assert possible[list(vocabulary.eos_token_ids)].all()  # the pattern has accepting states
    torch.manual_seed(0)
    logprobs = torch.log_softmax(torch.randn(1, vocabulary.size) * 3, -1)
    logprobs[0, mask] += 4.0  # the allowed tokens hold a fair share
    logprobs = torch.log_softmax(logprobs, -1).expand(400, -1)
    start = [tc.start()] * 400
    out = AWRS(tc, "recursive", narrow_masks=False).draw(logprobs, start, RowStreams.from_seed(0, 400))
    assert mask[out.tokens].all()
    z = float(logprobs[0, mask].double().exp().sum())
    w = out.log_weight.double().exp()
    assert abs(float(w.mean()) - z) < 4 * float(w.std()) / math.sqrt(400) + 1e-6
    assert out.counters["constraint_checks"].double().mean() < possible.sum()
    # the start state forces " ": with narrow_masks (the default) the draw is from the mask, Z exact, no check
    narrow = AWRS(tc).draw(logprobs[:50], start[:50], RowStreams.from_seed(0, 50))
    assert tc.narrow_batch(start[:1]).tolist() == [True]
    assert mask[narrow.tokens].all() and narrow.counters["constraint_checks"].sum() == 0
    assert (narrow.counters["masks"] == 1).all()
    torch.testing.assert_close(narrow.log_weight.double().exp(), torch.full((50,), z, dtype=torch.float64),
                               rtol=1e-5, atol=0)
