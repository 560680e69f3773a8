"""decoding inside transformers' model.generate: the logits processor and the custom_generate callable."""

from __future__ import annotations

import pytest
import torch

import decoding as dc
from decoding.kernels.sampling import NEG_INF


def inputs(lm, prompts):
    lm.tokenizer.padding_side = "left"
    if lm.tokenizer.pad_token is None:
        lm.tokenizer.pad_token = lm.tokenizer.eos_token
    return lm.tokenizer(prompts, return_tensors="pt", padding=True)


def test_processor_returns_the_samplers_law(llama_lm):
    """The processor's output is exactly the chain's transformed distribution, and never edits its input."""
    sampler = dc.Temperature(0.7) | dc.TopK(4)
    processor = dc.hf.LogitsProcessor(sampler)
    scores = torch.randn(3, llama_lm.vocab_size)
    before = scores.clone()
    law = processor(torch.zeros(3, 2, dtype=torch.long), scores)
    torch.testing.assert_close(scores, before)
    expected = sampler.transform(torch.log_softmax(scores, -1), None)
    torch.testing.assert_close(law, expected)
    assert (torch.isfinite(law).sum(-1) == 4).all()


def test_processor_in_model_generate_samples_inside_the_kept_set(llama_lm):
    enc = inputs(llama_lm, ["Hello there", "A"])
    k = 3
    out = llama_lm.model.generate(**enc, do_sample=True, max_new_tokens=6, top_k=None, top_p=None,
                                  logits_processor=[dc.hf.LogitsProcessor(dc.TopK(k))],
                                  output_scores=True, return_dict_in_generate=True,
                                  pad_token_id=llama_lm.pad_token_id)
    prompt_len = enc["input_ids"].shape[1]
    for step, scores in enumerate(out.scores):
        chosen = out.sequences[:, prompt_len + step]
        assert (torch.isfinite(scores).sum(-1) == k).all()
        assert torch.isfinite(scores.gather(-1, chosen[:, None])).all()


def test_processor_greedy_matches_plain_greedy(llama_lm):
    enc = inputs(llama_lm, ["Hello there"])
    plain = llama_lm.model.generate(**enc, do_sample=False, max_new_tokens=6, pad_token_id=llama_lm.pad_token_id)
    ours = llama_lm.model.generate(**enc, do_sample=True, max_new_tokens=6, top_k=None, top_p=None,
                                   logits_processor=[dc.hf.LogitsProcessor(dc.Greedy())],
                                   pad_token_id=llama_lm.pad_token_id)
    assert torch.equal(plain, ours)


class CountAccepted(dc.TokenSampler):
    """A stateful transform for the test: remembers per row how many tokens were committed and the last one."""

    stateful = True

    def init_state(self, batch_size, device="cpu"):
        return torch.zeros(batch_size, 2, dtype=torch.long, device=device)

    def accept(self, state, tokens, logprobs):
        return torch.stack([state[:, 0] + 1, tokens], dim=1)


def test_processor_commits_the_token_hf_emitted(llama_lm):
    counter = CountAccepted()
    processor = dc.hf.LogitsProcessor(counter | dc.TopK(5))
    enc = inputs(llama_lm, ["one", "two two"])
    out = llama_lm.model.generate(**enc, do_sample=True, max_new_tokens=4, top_k=None, top_p=None,
                                  logits_processor=[processor], pad_token_id=llama_lm.pad_token_id)
    state = processor._states[0]  # committed before the last call: 3 of the 4 emitted tokens
    assert state[:, 0].tolist() == [3, 3]
    assert state[:, 1].tolist() == out[:, -2].tolist()
    # a new generate() starts afresh
    llama_lm.model.generate(**enc, do_sample=True, max_new_tokens=2, top_k=None, top_p=None,
                            logits_processor=[processor], pad_token_id=llama_lm.pad_token_id)
    assert processor._states[0][:, 0].tolist() == [1, 1]


def test_custom_generate_equals_dc_generate(tiny_lm):
    prompts = ["Hello there friend", "A"]
    enc = inputs(tiny_lm, prompts)
    sampler = dc.Temperature(0.9) | dc.TopP(0.8)
    out = tiny_lm.model.generate(**enc, max_new_tokens=5, custom_generate=dc.hf.custom_generate(sampler, seed=4))
    prompt_len = enc["input_ids"].shape[1]
    assert torch.equal(out[:, :prompt_len], enc["input_ids"])
    ours = dc.generate(tiny_lm, prompts, sampler, max_new_tokens=5, seed=4)
    for i, seq in enumerate(ours):
        n = len(seq.token_ids)
        assert out[i, prompt_len : prompt_len + n].tolist() == seq.token_ids
        assert (out[i, prompt_len + n :] == tiny_lm.pad_token_id).all()


def test_custom_generate_refuses_hf_sampling_settings(llama_lm):
    enc = inputs(llama_lm, ["Hello"])
    with pytest.raises(ValueError, match="custom_generate"):
        llama_lm.model.generate(**enc, max_new_tokens=2, do_sample=True, temperature=0.5, top_k=None, top_p=None,
                                custom_generate=dc.hf.custom_generate(dc.TopK(3)))


def test_processor_refuses_non_samplers_and_undefined_rows():
    with pytest.raises(TypeError, match="sampler"):
        dc.hf.LogitsProcessor("top_k")
    scores = torch.full((1, 4), NEG_INF)
    with pytest.raises(ValueError, match="scores"):
        dc.hf.LogitsProcessor(dc.TopK(2))(torch.zeros(1, 1, dtype=torch.long), scores)


def test_custom_generate_runs_smc_with_a_constraint(gemma_lm):
    """SMC(Masked) inside model.generate: the constraint binds to the tokenizer given to custom_generate, and
    each row's output is its posterior draw, which matches the pattern."""
    import re

    tokenizer = gemma_lm.tokenizer
    batch = inputs(gemma_lm, ["one", "two words"])
    smc = dc.SMC(dc.Masked(dc.Regex(r"[a-c]{2,5}")), particles=3)
    out = gemma_lm.model.generate(**batch, max_new_tokens=8,
                                  custom_generate=dc.hf.custom_generate(smc, seed=0, tokenizer=tokenizer))
    for row in out[:, batch["input_ids"].shape[1]:]:
        text = tokenizer.decode(row, skip_special_tokens=True)
        assert re.fullmatch(r"[a-c]{2,5}", text), text
