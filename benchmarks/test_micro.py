"""pytest-benchmark micro-benchmarks: one ``sampler.sample`` call on random log-probabilities over Gemma 3's
262,144-token vocabulary, at batch 1 and 32. Not part of the default test run (``testpaths`` is ``tests/``):

    pytest benchmarks/test_micro.py --benchmark-sort=mean
    pytest benchmarks/test_micro.py -k "B32" --benchmark-compare   # after --benchmark-autosave

The log-probabilities are a log-softmax of Gaussian logits scaled by 3: peaked like a language model's, with a
long tail, so nucleus-type samplers keep hundreds to thousands of tokens. ``decoding bench samplers`` measures the
same samplers on a real model's log-probabilities, relative to its forward pass.
"""

from __future__ import annotations

import pytest
import torch

from decoding.benchmarks.samplers import SAMPLERS  # the same specs as `decoding bench samplers`
from decoding.kernels.random import RowStreams
from decoding.sampler_spec import parse_sampler

VOCAB = 262_144


@pytest.fixture(scope="module", params=[1, 32], ids=lambda b: f"B{b}")
def logprobs(request) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.log_softmax(3.0 * torch.randn(request.param, VOCAB, generator=g), dim=-1)  # [B, V]


@pytest.mark.parametrize("spec", SAMPLERS)
def test_sample(benchmark, logprobs, spec):
    sampler = parse_sampler(spec)
    batch = logprobs.shape[0]
    state = sampler.init_state(batch, logprobs.device)
    rng = RowStreams.from_seed(0, batch)
    benchmark.group = f"sample [{batch}, {VOCAB}]"
    out = benchmark(sampler.sample, logprobs, state, rng)
    assert out.tokens.shape == (batch,)
    assert bool(torch.isfinite(logprobs.gather(-1, out.tokens[:, None])).all())
