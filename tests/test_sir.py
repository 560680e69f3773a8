"""SIR: exact importance weights (against enumeration), the ESS formula, resampling laws, and convergence of the
resampled law to the target as n grows, on real (random) HF Llamas with a 5-token vocabulary (EOS = 4)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

import decoding as dc
from decoding.constraints.base import DEAD, TokenConstraint
from decoding.kernels.random import RowStreams
from decoding.kernels.resampling import SCHEMES, resample
from toys import EOS, V, law_of, sequence_law, toy_llama

PROMPT = (0, 1)
LENGTH = 2


@pytest.fixture(scope="module")
def toy():
    return toy_llama(1)


def run(sampler, lm, groups: int = 1, seed: int = 0, max_new_tokens: int = LENGTH):
    """dc.generate on token-id prompts (the toy has no tokenizer), through the sampler's run() seam."""
    return sampler.run(lm, dc.DecodeTask([list(PROMPT)] * groups, max_new_tokens=max_new_tokens, seed=seed))


def log_prob(law, tokens) -> float:
    """log of the product of the law's next-token probabilities along ``tokens`` after PROMPT."""
    return sum(math.log(float(law(PROMPT + tuple(tokens[:t]))[x])) for t, x in enumerate(tokens))


def tv(counts: Counter, law: dict) -> float:
    total = sum(counts.values())
    return 0.5 * sum(abs(counts.get(x, 0) / total - law.get(x, 0.0)) for x in set(counts) | set(law))


# --- exact weights ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("proposal", [dc.TopK(3), dc.Temperature(1.7), dc.Temperature(0.8) | dc.TopP(0.7),
                                      dc.TopH(0.95), dc.MinP(0.2)])
def test_weights_are_log_p_minus_log_q_of_the_proposals_own_law(toy, proposal):
    out = run(dc.SIR(proposal, n=64), toy)[0]
    p, q = law_of(toy), law_of(toy, proposal)
    for sample, log_w in zip(out.samples, out.log_weights):
        expected = log_prob(p, sample.token_ids) - log_prob(q, sample.token_ids)
        assert log_w == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("target", ["tempered", "other model"])
def test_rescored_targets_weigh_by_their_own_law(toy, target):
    target = dc.Temperature(0.5) if target == "tempered" else toy_llama(2)
    proposal = dc.TopK(4)
    out = run(dc.SIR(proposal, n=48, target=target), toy)[0]
    p = law_of(toy, target) if isinstance(target, dc.TokenSampler) else law_of(target)
    q = law_of(toy, proposal)
    for sample, log_w in zip(out.samples, out.log_weights):
        assert log_w == pytest.approx(log_prob(p, sample.token_ids) - log_prob(q, sample.token_ids), abs=1e-4)


class NoToken2(TokenConstraint):
    """Any tokens but 2 (EOS allowed anywhere)."""

    class _Vocab:
        size, eos_token_ids, is_special = V, (EOS,), [False] * (V - 1) + [True]

    vocabulary = _Vocab()

    def start(self):
        return 0

    def advance(self, state, token_id):
        return DEAD if token_id == 2 else 0

    def is_accepting(self, state):
        return state == 0


def test_constraint_and_reward_targets_add_their_potential(toy, gemma_lm):
    plain = run(dc.SIR(dc.Temperature(1.5), n=64), toy)[0]
    constrained = run(dc.SIR(dc.Temperature(1.5), n=64, target=NoToken2()), toy)[0]
    assert [s.token_ids for s in plain.samples] == [s.token_ids for s in constrained.samples]  # same seed
    for sample, a, b in zip(plain.samples, plain.log_weights, constrained.log_weights):
        assert b == (-math.inf if 2 in sample.token_ids else a)
    assert all(2 not in d.token_ids for d in constrained.draws)

    prompt = gemma_lm.encode("Hello")
    reward = lambda text: 0.25 * len(text)  # noqa: E731
    tasks = [dc.DecodeTask([prompt], max_new_tokens=4, seed=3) for _ in range(2)]
    base = dc.SIR(dc.TopK(20), n=8).run(gemma_lm, tasks[0])[0]
    tilted = dc.SIR(dc.TopK(20), n=8, target=reward).run(gemma_lm, tasks[1])[0]
    for sample, a, b in zip(base.samples, base.log_weights, tilted.log_weights):
        assert b == pytest.approx(a + reward(sample.text), abs=1e-9)
    with pytest.raises(ValueError, match=r"^target: the reward function failed on proposal 0 .*ZeroDivisionError"):
        dc.SIR(dc.TopK(20), n=2, target=lambda text: 1 / 0).run(gemma_lm, tasks[0])


def test_ess_and_marginal_likelihood_follow_their_formulas(toy):
    out = run(dc.SIR(dc.TopK(2), n=32), toy)[0]
    log_w = torch.tensor(out.log_weights, dtype=torch.float64)
    w = torch.softmax(log_w, 0)
    assert out.ess == pytest.approx(float(1 / (w * w).sum()), rel=1e-12)
    assert out.weights == pytest.approx(w.tolist(), abs=1e-12)
    assert out.log_marginal_likelihood == pytest.approx(float(log_w.logsumexp(0) - math.log(32)), abs=1e-12)
    assert out.log_weight == out.log_marginal_likelihood  # the draw is properly weighted for the target
    assert 1.0 <= out.ess <= 32


def test_marginal_likelihood_estimates_the_mass_the_proposal_misses(toy):
    """E[(1/n) sum w] = sum over q's support of p(x): below 1 when top-k cuts part of p's support."""
    out = run(dc.SIR(dc.TopK(2), n=64), toy, groups=200)
    estimate = sum(math.exp(g.log_marginal_likelihood) for g in out) / len(out)
    p = sequence_law(law_of(toy), PROMPT, LENGTH)
    q = sequence_law(law_of(toy, dc.TopK(2)), PROMPT, LENGTH)
    covered = sum(p[x] for x in q)
    assert estimate == pytest.approx(covered, rel=0.02)  # 12,800 proposals; the relative s.e. is about 0.3%


# --- resampling ---------------------------------------------------------------------------------------------------


def test_resampled_law_converges_to_the_target_as_n_grows(toy):
    """4,000 prompts per n at seed 0, k = 1: TV(draws, p) starts at TV(q, p), falls with n, and reaches the TV of
    4,000 exact draws from p (the sampling noise, about 0.02 over these 21 outcomes)."""
    proposal = dc.Temperature(2.0)  # full support, far from p
    p = sequence_law(law_of(toy), PROMPT, LENGTH)
    q = sequence_law(law_of(toy, proposal), PROMPT, LENGTH)
    outcomes = list(p)
    exact = torch.multinomial(torch.tensor([p[x] for x in outcomes]), 4000, replacement=True,
                              generator=torch.Generator().manual_seed(0))
    noise = tv(Counter(outcomes[i] for i in exact.tolist()), p)
    distances = []
    for n in (1, 3, 9, 27):
        out = run(dc.SIR(proposal, n=n), toy, groups=4000)
        distances.append(tv(Counter(tuple(g.token_ids) for g in out), p))
    assert distances[0] == pytest.approx(0.5 * sum(abs(q[x] - p[x]) for x in p), abs=0.03)
    assert distances[0] > distances[1] > distances[2], distances
    assert distances[3] < 2 * noise + 0.01 and distances[3] < 0.2 * distances[0], (distances, noise)


@pytest.mark.parametrize("replace", [True, False])
def test_k_draws_come_from_the_proposals(toy, replace):
    out = run(dc.SIR(dc.TopK(3), n=6, k=6 if not replace else 10, replace=replace), toy, groups=3)
    for g in out:
        ids = [id(s) for s in g.samples]
        assert all(id(d) in ids for d in g.draws) and g.draws[0].token_ids == g.token_ids
        if not replace:
            assert sorted(id(d) for d in g.draws) == sorted(ids)  # k = n distinct: every proposal once
        else:
            assert len(g.draws) == 10


def test_without_replacement_k1_is_a_draw_by_weight(toy):
    """Gumbel top-1 = a categorical draw by the normalised weights: one proposal per prompt, 20,000 prompts."""
    with_w = run(dc.SIR(dc.TopK(2), n=2, replace=False), toy, groups=20000)
    hits = sum(g.draws[0] is g.samples[0] for g in with_w)
    expected = sum(g.weights[0] for g in with_w)
    assert abs(hits - expected) < 4 * math.sqrt(expected * (1 - expected / len(with_w)))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_k_resampling_draws_each_particle_k_w_times_on_average(scheme):
    torch.manual_seed(0)
    log_w = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)).expand(20000, 4)
    picked = resample(log_w, RowStreams.from_seed(0, 20000).uniform(3), scheme)  # K = 3 draws among N = 4
    counts = torch.bincount(picked.flatten(), minlength=4) / 20000
    assert counts.tolist() == pytest.approx([1.5, 0.9, 0.6, 0.0], abs=0.02)


def test_no_positive_weight_is_reported_and_other_prompts_finish(toy):
    class Nothing(NoToken2):
        def is_accepting(self, state):
            return False

    out = run(dc.SIR(dc.TopK(3), n=4, target=Nothing()), toy)[0]
    assert not out.finished and "no proposal" in out.reason and out.draws == []
    assert out.ess == 0.0


# --- bad input ----------------------------------------------------------------------------------------------------


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"^n must be"):
        dc.SIR(dc.TopK(3), n=0)
    with pytest.raises(ValueError, match=r"^k must be"):
        dc.SIR(dc.TopK(3), k=0)
    with pytest.raises(ValueError, match=r"k=5 distinct draws from n=4"):
        dc.SIR(dc.TopK(3), n=4, k=5, replace=False)
    with pytest.raises(ValueError, match=r"^proposal: AWRS.*exact probability"):
        dc.SIR(dc.AWRS(dc.Regex("a+")))
    with pytest.raises(TypeError, match=r"^proposal: SMC is a sequence sampler"):
        dc.SIR(dc.SMC(dc.TopK(3)))
    with pytest.raises(ValueError, match=r"^target: Mirostat"):
        dc.SIR(dc.TopK(3), target=dc.Mirostat(3.0))
    with pytest.raises(TypeError, match=r"^target: expected"):
        dc.SIR(dc.TopK(3), target=3)
    with pytest.raises(ValueError, match=r"^resampling must be"):
        dc.SIR(dc.TopK(3), resampling="best")


def test_a_target_model_with_another_tokenizer_is_refused_before_decoding(llama_lm, gemma_lm):
    forwards = llama_lm.forwards
    with pytest.raises(ValueError, match=r"^target: its vocabulary differs from this model's at token id \d+"):
        dc.generate(llama_lm, "x", dc.SIR(dc.TopK(5), n=2, target=gemma_lm), max_new_tokens=2)
    assert llama_lm.forwards == forwards
