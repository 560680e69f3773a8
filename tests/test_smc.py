"""SMC: unbiased marginal likelihood, a posterior that approaches the global constrained law as N grows,
resampling that moves KV caches correctly, and dead particles reported without exceptions.

The toy is a real (random) HF Llama with a 4-token vocabulary (0, 1, 2 and EOS = 3), so every sequence the
constraint allows can be enumerated and scored exactly: Z = sum of p(x) over allowed x, the global law
p(x | allowed) and the locally constrained (LCD) law are known in closed form.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import decoding as dc
from decoding.constraints.base import DEAD, TokenConstraint
from decoding.kernels.resampling import SCHEMES, ess, resample

EOS, PROMPT = 3, [0]


class NoRepeat(TokenConstraint):
    """Tokens 0..2, never the same twice in a row, 1 to 3 of them, then EOS. State: count * 4 + last token."""

    class _Vocab:
        size, eos_token_ids, is_special = 4, (EOS,), [False, False, False, True]

    vocabulary = _Vocab()

    def start(self):
        return 3  # count 0, last "none"

    def advance(self, state, token_id):
        count, last = divmod(state, 4)
        if token_id == EOS or token_id == last or count >= 3:
            return DEAD
        return (count + 1) * 4 + token_id

    def is_accepting(self, state):
        return state >= 4

    def can_finish(self, state):
        return state >= 0

    def mask(self, state):
        allowed = torch.tensor([self.advance(state, t) != DEAD for t in range(3)] + [self.is_accepting(state)])
        return allowed


@pytest.fixture(scope="module")
def toy_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         initializer_range=0.6, eos_token_id=EOS, bos_token_id=0)
    return dc.LanguageModel(LlamaForCausalLM(config).eval(), None, eos_token_ids=[EOS])


def allowed_sequences():
    for k in (1, 2, 3):
        for seq in itertools.product(range(3), repeat=k):
            if all(a != b for a, b in zip(seq, seq[1:])):
                yield seq + (EOS,)


@torch.no_grad()
def laws(lm):
    """Exact p(x) of every allowed sequence, and its probability under locally constrained decoding."""
    tc = NoRepeat()
    p, lcd = {}, {}
    for seq in allowed_sequences():
        ids = torch.tensor([PROMPT + list(seq)], device=lm.device)
        logprobs = torch.log_softmax(lm.model(ids).logits[0, len(PROMPT) - 1 : -1].float(), -1)
        state, lp, lq = tc.start(), 0.0, 0.0
        for t, row in zip(seq, logprobs):
            mask = tc.mask(state).to(row.device)
            lp += float(row[t])
            lq += float(row[t] - row[mask].logsumexp(-1))
            state = tc.advance(state, t) if t != EOS else state
        p[seq], lcd[seq] = math.exp(lp), math.exp(lq)
    return p, lcd


@pytest.fixture(scope="module")
def toy_generate(toy_lm):
    """dc.generate on token-id prompts (the toy has no tokenizer): SMC driven through its run() seam."""

    def go(sampler, groups, seed=0):
        task = dc.DecodeTask([PROMPT] * groups, max_new_tokens=4, seed=seed)
        seqs = (sampler if isinstance(sampler, dc.SMC) else dc.Ancestral(sampler)).run(toy_lm, task)
        return seqs

    return go


def tv(counts: dict, law: dict) -> float:
    total = sum(counts.values())
    keys = set(counts) | set(law)
    return 0.5 * sum(abs(counts.get(k, 0) / total - law.get(k, 0.0)) for k in keys)


@pytest.mark.parametrize("resampling", SCHEMES)
@pytest.mark.parametrize("proposal", ["awrs", "masked"])
def test_smc_marginal_likelihood_is_unbiased(toy_lm, toy_generate, proposal, resampling):
    """3000 independent SMC runs (N = 4, resampling whenever ESS < 0.9 N) in one batch: the mean of
    exp(log Z_hat) equals the exact Z within 4 standard errors."""
    p, _ = laws(toy_lm)
    z = sum(p.values())
    token = dc.AWRS(NoRepeat()) if proposal == "awrs" else dc.Masked(NoRepeat())
    out = toy_generate(dc.SMC(token, particles=4, ess_threshold=0.9, resampling=resampling), 3000)
    z_hat = torch.tensor([o.log_marginal_likelihood for o in out], dtype=torch.float64).exp()
    se = float(z_hat.std()) / math.sqrt(len(z_hat))
    assert abs(float(z_hat.mean()) - z) < 4 * se, (float(z_hat.mean()), z, se)
    assert any(o.resampled for o in out)
    assert all(o.finished and tuple(o.token_ids) in p for o in out)


def test_smc_posterior_approaches_the_global_law_where_lcd_does_not(toy_lm, toy_generate):
    """Total variation to p(x | allowed) over G = 4000 posterior draws: LCD (Masked, one particle) stays at its
    exact bias (0.35; the sampling error of the empirical distance is about 0.008, the bound 0.03); SMC with AWRS
    shrinks it as N grows (N = 1, 4, 16: about 0.35, 0.28, 0.14 against the bound 0.18)."""
    p, lcd = laws(toy_lm)
    z = sum(p.values())
    target = {k: v / z for k, v in p.items()}
    bias = tv({k: v for k, v in lcd.items()}, target)  # LCD's exact distance (its law sums to 1)
    assert bias > 0.1, "the toy must make LCD myopic"
    G = 4000
    distances = {}
    for n in (1, 4, 16):
        out = toy_generate(dc.SMC(dc.AWRS(NoRepeat()), particles=n), G, seed=n)
        counts: dict = {}
        for o in out:
            counts[tuple(o.token_ids)] = counts.get(tuple(o.token_ids), 0) + 1
        distances[n] = tv(counts, target)
    lcd_out = toy_generate(dc.Masked(NoRepeat()), G)
    lcd_counts: dict = {}
    for o in lcd_out:
        lcd_counts[tuple(o.token_ids)] = lcd_counts.get(tuple(o.token_ids), 0) + 1
    assert abs(tv(lcd_counts, target) - bias) < 0.03
    assert distances[16] < distances[4] < distances[1]
    assert distances[16] < 0.5 * bias, (distances, bias)


def test_smc_resampling_moves_kv_caches_with_the_particles(gemma_lm):
    """With ess_threshold = 1 the particles are resampled at almost every step; each final particle's recorded
    log-probability must equal a fresh scoring of its tokens (a wrong cache row would change it)."""
    smc = dc.SMC(dc.Masked(dc.Regex(r"[a-e]{2,6}")), particles=4, ess_threshold=1.0)
    out = dc.generate(gemma_lm, ["hello", "a longer prompt here"], smc, max_new_tokens=6, seed=3)
    assert all(o.resampled for o in out)
    for prompt, o in zip(["hello", "a longer prompt here"], out):
        for particle in o.particles:
            assert abs(particle.logprob - score(gemma_lm, gemma_lm.encode(prompt), particle.token_ids)) < 1e-3


def score(lm, prompt: list[int], tokens: list[int]) -> float:
    """log p(tokens | prompt) by a fresh forward (no cache reuse)."""
    batch = lm.start([prompt])
    rows = [batch.logprobs[0]]
    if len(tokens) > 1:
        rows += list(batch.step(torch.tensor([tokens[:-1]]), all_positions=True)[0])
    return float(sum(row[t] for row, t in zip(rows, tokens)))


def test_smc_all_particles_dead_is_reported_and_other_prompts_finish(toy_lm, toy_generate):
    """Token 0 leads to a state that allows nothing; with one particle, some prompts die and the rest finish."""

    class Trap(NoRepeat):
        def advance(self, state, token_id):
            if state == 4:  # after token 0: nothing allowed
                return DEAD
            return super().advance(state, token_id)

        def is_accepting(self, state):
            return state >= 4 and state != 4

    out = toy_generate(dc.SMC(dc.Masked(Trap()), particles=1), 200)
    dead = [o for o in out if not o.finished]
    alive = [o for o in out if o.finished]
    assert dead and alive
    for o in dead:
        assert o.log_weight == float("-inf") and o.log_marginal_likelihood == float("-inf")
        assert "all 1 particles died" in o.reason
    assert all(math.isfinite(o.log_weight) for o in alive)


def test_smc_with_one_particle_and_exact_sampler_is_ancestral(gemma_lm):
    smc = dc.generate(gemma_lm, ["a", "b"], dc.SMC(dc.TopK(5), particles=1), max_new_tokens=5, seed=[7, 8])
    plain = dc.generate(gemma_lm, ["a", "b"], dc.TopK(5), max_new_tokens=5, seed=[7, 8])
    assert [o.token_ids for o in smc] == [o.token_ids for o in plain]
    assert all(o.log_marginal_likelihood == 0.0 and o.weights == [1.0] for o in smc)


def test_smc_bad_arguments_are_named():
    awrs = dc.AWRS(NoRepeat())
    with pytest.raises(ValueError, match="particles"):
        dc.SMC(awrs, particles=0)
    with pytest.raises(ValueError, match="ess_threshold"):
        dc.SMC(awrs, ess_threshold=1.5)
    with pytest.raises(ValueError, match="ess_threshold"):
        dc.SMC(awrs, ess_threshold=-0.1)
    with pytest.raises(ValueError, match="resampling"):
        dc.SMC(awrs, resampling="bootstrap")
    with pytest.raises(TypeError, match="token_sampler"):
        dc.SMC(dc.SMC(awrs))


# --- resampling kernels -------------------------------------------------------------------------------------------


def test_ess_formula():
    log_w = torch.log(torch.tensor([[0.5, 0.25, 0.25, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(ess(log_w), torch.tensor([1 / (0.25 + 0.0625 * 2), 4.0], dtype=torch.float64))
    assert ess(torch.full((1, 3), float("-inf"), dtype=torch.float64))[0] == 0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_resampling_is_unbiased_and_never_picks_zero_weights(scheme):
    """20,000 resamplings of N = 5 in one call: mean copies of particle i = N w_i within 4 standard errors."""
    g, n = 20_000, 5
    w = torch.tensor([0.05, 0.0, 0.4, 0.3, 0.25], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(g, n, generator=gen, dtype=torch.float64)
    anc = resample(w.log().expand(g, -1), u, scheme)
    copies = torch.nn.functional.one_hot(anc, n).sum(1).double()  # [g, n]
    mean, se = copies.mean(0), copies.std(0) / math.sqrt(g)
    assert (copies[:, 1] == 0).all()
    assert ((mean - n * w).abs() <= 4 * se + 1e-9).all(), (mean, n * w)
    if scheme in ("systematic", "residual"):  # floor(N w_i) copies at least
        assert (copies >= torch.floor(n * w)).all()
    if scheme == "systematic":  # and at most ceil(N w_i)
        assert (copies <= torch.ceil(n * w)).all()


def test_systematic_resampling_on_a_grid_of_uniforms_is_exact():
    n, m = 4, 10_000
    w = torch.tensor([0.1, 0.35, 0.05, 0.5], dtype=torch.float64)
    u = ((torch.arange(m, dtype=torch.float64) + 0.5) / m)[:, None].expand(-1, n)
    copies = torch.nn.functional.one_hot(resample(w.log().expand(m, -1), u, "systematic"), n).sum(1).double()
    torch.testing.assert_close(copies.mean(0), n * w, atol=1e-3, rtol=0)
