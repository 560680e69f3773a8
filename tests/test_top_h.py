"""Top-H: kept sets equal a loop-based numpy reference (both rules), and transformers' TopHLogitsWarper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import decoding as dc
from decoding.kernels.random import FixedUniforms


def reference_kept(logprobs: np.ndarray, alpha: float, top_n: int, rule: str) -> set[int]:
    """The rules of ALGORITHMS.md, one token at a time, in float64."""
    order = np.argsort(-logprobs, kind="stable")[:top_n].tolist()  # ties in id order
    order = [i for i in order if logprobs[i] > -math.inf]
    p = np.exp(logprobs.astype(np.float64))
    if rule == "reference":
        q = p[order] / p[order].sum()
        terms = [-x * math.log(x) if x > 0 else 0.0 for x in q]
        tau = alpha * sum(terms)
        kept, partial = {order[0]}, 0.0
        for i, term in zip(order, terms):
            partial += term
            if partial <= tau + 1e-9:
                kept.add(i)
        return kept
    h_full = -float(np.sum(p[p > 0] * np.log(p[p > 0])))
    kept: list[int] = []
    for i in order:
        trial = p[kept + [i]] / p[kept + [i]].sum()
        h = -sum(x * math.log(x) for x in trial if x > 0)
        if kept and h > alpha * h_full:
            break
        kept.append(i)
    return set(kept)


def kept_sets(logprobs: torch.Tensor, sampler: dc.TopH) -> list[set[int]]:
    out = torch.isfinite(sampler.transform(logprobs, None))
    return [set(row.nonzero()[:, 0].tolist()) for row in out]


def random_logprobs(rows: int, vocab: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(rows, vocab, generator=g) * scale, -1)


@pytest.mark.parametrize("rule", ["reference", "paper"])
@pytest.mark.parametrize("alpha", [0.1, 0.4, 1.0])
@pytest.mark.parametrize("scale", [0.5, 2.0, 5.0])
def test_kept_sets_equal_the_reference_on_random_logits(rule, alpha, scale):
    logprobs = random_logprobs(6, 3000, scale, seed=int(scale * 10))
    logprobs[0, 10:] = -math.inf  # a row with fewer finite entries than top_n
    sampler = dc.TopH(alpha, top_n=100, rule=rule)
    for row, kept in zip(logprobs, kept_sets(logprobs, sampler)):
        assert kept == reference_kept(row.numpy(), alpha, 100, rule)


@pytest.mark.parametrize("alpha", [0.1, 0.4, 0.7])
def test_reference_rule_equals_transformers_top_h_warper(alpha):
    from transformers.generation.logits_process import TopHLogitsWarper

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 5000, generator=g) * 3
    ours = torch.isfinite(dc.TopH(alpha).transform(torch.log_softmax(logits, -1), None))
    theirs = torch.isfinite(TopHLogitsWarper(alpha)(None, logits))
    assert torch.equal(ours, theirs)


def test_alpha_one_keeps_the_whole_top_n():
    logprobs = random_logprobs(16, 2000, 3.0, seed=2)
    assert (torch.isfinite(dc.TopH(1.0, top_n=50).transform(logprobs, None)).sum(-1) == 50).all()


def test_paper_rule_keeps_more_than_the_reference_rule():
    logprobs = random_logprobs(32, 5000, 2.0, seed=3)
    ref = torch.isfinite(dc.TopH(0.4).transform(logprobs, None)).sum(-1).double().mean()
    paper = torch.isfinite(dc.TopH(0.4, rule="paper").transform(logprobs, None)).sum(-1).double().mean()
    assert paper > ref


def test_draw_is_exactly_the_renormalised_kept_set():
    """Enumerate a grid of uniforms: each token's frequency is its truncated probability within 1/M."""
    logprobs = torch.log(torch.tensor([[0.35, 0.25, 0.2, 0.1, 0.06, 0.04]]))
    sampler = dc.TopH(0.6)
    law = sampler.transform(logprobs, None).exp()[0]
    m = 20_000
    u = ((torch.arange(m, dtype=torch.float64) + 0.5) / m)[:, None]
    tokens = sampler.sample(logprobs.expand(m, -1), None, FixedUniforms(u)).tokens
    freq = torch.bincount(tokens, minlength=6).double() / m
    assert (freq - law.double()).abs().max() <= 1.0 / m + 1e-9
    assert law[0] > 0 and (law > 0).sum() < 6


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(alpha=0), "alpha"), (dict(alpha=1.5), "alpha"), (dict(top_n=0), "top_n"), (dict(rule="other"), "rule")],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dc.TopH(**kwargs)


def test_undefined_rows_raise():
    logprobs = torch.full((2, 5), -math.inf)
    logprobs[0] = torch.log_softmax(torch.randn(5), -1)
    with pytest.raises(ValueError, match="row 1"):
        dc.TopH(0.4).sample(logprobs)


@pytest.fixture(scope="module")
def gemma_logprobs(gemma):
    """The default model's next-token log-probs after three prompts (262,144 entries a row), computed once."""
    prompts = ["The capital of France is", "Once upon a time, there", "def quicksort(arr):\n   "]
    return gemma.start([gemma.encode(p) for p in prompts]).logprobs


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["reference", "paper"])
def test_kept_sets_on_real_gemma_logits(gemma_logprobs, rule):
    logprobs = gemma_logprobs
    for alpha in (0.1, 0.4, 1.0):
        sampler = dc.TopH(alpha, rule=rule)
        for row, kept in zip(logprobs, kept_sets(logprobs, sampler)):
            assert kept == reference_kept(row.numpy(), alpha, 100, rule)
