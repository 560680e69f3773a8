"""Mirostat: kept sets and mu updates equal a numpy transcription of the paper's equations; state is per row,
committed only for the emitted token, and survives model.generate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import decoding as dc
from decoding.kernels.random import FixedUniforms, RowStreams


def reference_k(logprobs: np.ndarray, mu: float, m: int) -> int:
    """Version 1's k, eqs. 30-31, a loop over the top m sorted probabilities (float64)."""
    p = np.sort(np.exp(logprobs.astype(np.float64)))[::-1]
    num = den = 0.0
    for i in range(m - 1):  # paper's i = 1..m-1 is i + 1 here
        if p[i + 1] <= 0:
            continue
        t = math.log((i + 2) / (i + 1))
        b = math.log(p[i] / p[i + 1])
        num, den = num + t * b, den + t * t
    s_hat = max(num / den, 1e-6)
    eps, n = s_hat - 1, len(p)
    k = ((eps * 2**mu) / (1 - n ** (-eps))) ** (1 / s_hat)
    return int(min(max(round(k), 1), n))


def reference_kept(logprobs: np.ndarray, mu: float, version: int, m: int = 100) -> set[int]:
    if version == 2:
        top = logprobs.max()
        return {i for i, lp in enumerate(logprobs) if -lp / math.log(2) <= mu or lp == top}
    k = reference_k(logprobs, mu, m)
    kth = np.sort(logprobs)[::-1][k - 1]
    return {i for i, lp in enumerate(logprobs) if lp >= kth}


def reference_mu(logprobs: np.ndarray, mu: float, token: int, tau: float, eta: float, kept: set[int],
                 surprise: str) -> float:
    p = np.exp(logprobs.astype(np.float64))
    prob = p[token] if surprise == "reference" else p[token] / sum(p[i] for i in kept)
    return mu - eta * (-math.log2(prob) - tau)


def zipf_logprobs(rows: int, vocab: int, seed: int) -> torch.Tensor:
    """Language-model-like rows: Zipf-shaped with noise, different exponents per row."""
    g = torch.Generator().manual_seed(seed)
    rank = torch.arange(1, vocab + 1, dtype=torch.float64)
    s = torch.linspace(0.8, 1.6, rows, dtype=torch.float64)[:, None]
    logits = -s * rank.log() + 0.3 * torch.randn(rows, vocab, generator=g, dtype=torch.float64)
    perm = torch.randperm(vocab, generator=g)
    return torch.log_softmax(logits[:, perm], -1).float()


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("mu", [1.0, 3.0, 6.0, 10.0])
def test_kept_sets_equal_the_papers_equations(version, mu):
    logprobs = zipf_logprobs(6, 2000, seed=version)
    sampler = dc.Mirostat(tau=3.0, eta=0.1, version=version)
    state = torch.full((6,), mu, dtype=torch.float64)
    kept = torch.isfinite(sampler.transform(logprobs, state))
    for row, got in zip(logprobs.numpy(), kept):
        assert set(got.nonzero()[:, 0].tolist()) == reference_kept(row, mu, version)


def test_version_one_k_equals_the_reference():
    logprobs = zipf_logprobs(8, 5000, seed=3)
    mu = torch.linspace(2.0, 9.0, 8, dtype=torch.float64)
    sampler = dc.Mirostat(tau=3.0, version=1)
    got = sampler.top_k(logprobs, mu).tolist()
    assert got == [reference_k(row, float(m), 100) for row, m in zip(logprobs.numpy(), mu)]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("surprise", ["reference", "truncated"])
def test_one_step_mu_update(version, surprise):
    logprobs = zipf_logprobs(5, 1000, seed=7)
    tau, eta = 3.0, 0.3
    sampler = dc.Mirostat(tau=tau, eta=eta, version=version, surprise=surprise)
    mu0 = sampler.init_state(5)
    assert torch.equal(mu0, torch.full((5,), 6.0, dtype=torch.float64))
    out = sampler.sample(logprobs, mu0, RowStreams.from_seed(1, 5))
    for i, row in enumerate(logprobs.numpy()):
        kept = reference_kept(row, 6.0, version)
        token = int(out.tokens[i])
        assert token in kept
        expected = reference_mu(row, 6.0, token, tau, eta, kept, surprise)
        assert out.state[i].item() == pytest.approx(expected, abs=1e-5)
    assert torch.equal(mu0, torch.full((5,), 6.0, dtype=torch.float64))  # the old state is untouched


def test_transform_never_changes_state_only_accept_does():
    sampler = dc.Mirostat(tau=3.0, eta=1.0)
    logprobs = zipf_logprobs(2, 500, seed=0)
    mu = sampler.init_state(2)
    first = sampler.transform(logprobs, mu)
    assert torch.equal(first, sampler.transform(logprobs, mu))
    token = logprobs.argmax(-1)
    mu_after = sampler.accept(mu, token, logprobs)
    expected = 6.0 - 1.0 * (-logprobs.gather(-1, token[:, None])[:, 0].double() / math.log(2) - 3.0)
    torch.testing.assert_close(mu_after, expected)


def test_draw_is_exactly_the_renormalised_truncation():
    logprobs = torch.log(torch.tensor([[0.4, 0.3, 0.15, 0.1, 0.05]]))
    sampler = dc.Mirostat(tau=1.5, version=2)  # mu = 3 bits: keeps p >= 1/8
    law = sampler.transform(logprobs, sampler.init_state(1)).exp()[0]
    assert (law > 0).tolist() == [True, True, True, False, False]
    m = 10_000
    u = ((torch.arange(m, dtype=torch.float64) + 0.5) / m)[:, None]
    tokens = sampler.sample(logprobs.expand(m, -1), sampler.init_state(m), FixedUniforms(u)).tokens
    freq = torch.bincount(tokens, minlength=5).double() / m
    assert (freq - law.double()).abs().max() <= 1.0 / m + 1e-9


def test_batched_rows_evolve_as_if_alone(llama_lm):
    """A row's trajectory (tokens, hence mu) in a batch equals the same row decoded alone with its seed."""
    sampler = dc.Temperature(1.5) | dc.Mirostat(tau=4.0, eta=0.5, version=1)
    prompts, seeds = ["alpha", "beta gamma", "delta"], [3, 4, 5]
    batch = dc.generate(llama_lm, prompts, sampler, max_new_tokens=10, seed=seeds)
    for i in range(3):
        alone = dc.generate(llama_lm, [prompts[i]], sampler, max_new_tokens=10, seed=[seeds[i]])
        assert alone[0].token_ids == batch[i].token_ids


def test_mu_in_model_generate_follows_the_emitted_tokens(llama_lm):
    """Through dc.hf.LogitsProcessor, mu per row is the paper's recursion over the tokens HF emitted."""
    tau, eta = 5.0, 0.5
    processor = dc.hf.LogitsProcessor(dc.Mirostat(tau=tau, eta=eta, version=2))
    tok = llama_lm.tokenizer
    tok.padding_side = "left"
    tok.pad_token = tok.eos_token
    enc = tok(["one two", "three"], return_tensors="pt", padding=True)
    steps = 6
    out = llama_lm.model.generate(**enc, do_sample=True, max_new_tokens=steps, top_k=None, top_p=None,
                                  logits_processor=[processor], pad_token_id=llama_lm.pad_token_id)
    start = enc["input_ids"].shape[1]
    for row in range(2):
        ids = out[row][enc["attention_mask"][row].bool().tolist() + [True] * steps].tolist()
        prompt_len = int(enc["attention_mask"][row].sum())
        with torch.no_grad():
            logprobs = llama_lm.log_softmax(llama_lm.model(torch.tensor([ids])).logits[0])
        mu = 2 * tau
        for t in range(steps - 1):  # the last token is emitted after the last processor call
            token = ids[prompt_len + t]
            mu -= eta * (-logprobs[prompt_len + t - 1, token].item() / math.log(2) - tau)
        assert processor._states[0][row].item() == pytest.approx(mu, abs=1e-3)
    assert out.shape[1] == start + steps


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(tau=0), "tau"), (dict(tau=-1), "tau"), (dict(eta=0), "eta"), (dict(version=3), "version"),
     (dict(m=1), "m must"), (dict(surprise="x"), "surprise")],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dc.Mirostat(**kwargs)


def test_nan_rows_raise_instead_of_drawing():
    logprobs = zipf_logprobs(2, 100, seed=0)
    logprobs[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dc.Mirostat().sample(logprobs)
