"""Enumerable toys shared by the exactness tests: real (random) HF Llamas with a 5-token vocabulary (EOS = 4), and
the exact laws of their next tokens and of their short continuations."""

from __future__ import annotations

from functools import lru_cache

import torch

import decoding as dc

EOS, V = 4, 5


def toy_llama(seed: int, layers: int = 1) -> dc.LanguageModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         initializer_range=0.5, eos_token_id=EOS, bos_token_id=0)
    return dc.LanguageModel(LlamaForCausalLM(config).eval(), None, eos_token_ids=[EOS])


def law_of(lm: dc.LanguageModel, sampler=None):
    """context tuple -> the sampler's law of lm's next token, float64 probabilities (cached)."""
    chain = dc.samplers.SamplerChain((sampler or dc.Temperature(1.0)).stages)

    @lru_cache(maxsize=None)
    def law(context: tuple[int, ...]) -> torch.Tensor:
        logprobs = lm.start([list(context)]).logprobs.double()
        return chain.law(logprobs, None)[0].exp()

    return law


def sequence_law(p, prompt: tuple[int, ...], length: int) -> dict[tuple[int, ...], float]:
    """Exact law of the first ``length`` tokens under p (sequences end early at EOS)."""
    out: dict[tuple[int, ...], float] = {}

    def walk(seq: tuple[int, ...], prob: float) -> None:
        if len(seq) == length or (seq and seq[-1] == EOS):
            out[seq] = out.get(seq, 0.0) + prob
            return
        dist = p(prompt + seq)
        for x in range(V):
            if dist[x] > 0:
                walk(seq + (x,), prob * float(dist[x]))

    walk((), 1.0)
    return out
