"""``dc.early_exit``: the target's first layers as a draft, sharing its weights; lossless as any draft is."""

from __future__ import annotations

import pytest
import torch

import decoding as dc
from conftest import GREEDY_PROMPTS, GREEDY_TOKENS, decode
from test_speculative import pipeline_p
from toys import toy_llama

PROMPTS = ["Hello there, how are you", "A"]


def exit_logprobs(lm: dc.LanguageModel, ids: list[int], layers: int) -> torch.Tensor:
    """The reference: the full model's hidden state after ``layers`` layers, its final norm and its LM head."""
    with torch.no_grad():
        out = lm.model(torch.tensor([ids]), output_hidden_states=True)
        decoder = lm.model.get_decoder()
        norm = decoder.norm if hasattr(decoder, "norm") else decoder.ln_f
        hidden = out.hidden_states[layers][0, -1]
        if layers < len(out.hidden_states) - 1:  # the last entry is normed already
            hidden = norm(hidden)
        return torch.log_softmax(lm.model.get_output_embeddings()(hidden).float(), -1)


def test_the_draft_is_the_models_early_exit_and_shares_its_weights(tiny_lm):
    draft = dc.early_exit(tiny_lm, 1)
    prompts = [tiny_lm.encode(p) for p in PROMPTS]
    batch = draft.start(prompts)
    for i, ids in enumerate(prompts):
        torch.testing.assert_close(batch.logprobs[i], exit_logprobs(tiny_lm, ids, 1), atol=2e-5, rtol=0)
    whole = dc.early_exit(tiny_lm, 2).start(prompts).logprobs  # all the layers: the model itself
    torch.testing.assert_close(whole, tiny_lm.start(prompts).logprobs, atol=2e-5, rtol=0)
    assert draft.model.get_output_embeddings().weight is tiny_lm.model.get_output_embeddings().weight
    assert draft.model.config.num_hidden_layers == 1 and tiny_lm.model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in draft.model.parameters()) < sum(p.numel() for p in tiny_lm.model.parameters())


def test_bad_layers_name_the_argument(llama_lm):
    for bad in (0, 3, True, 1.5):
        with pytest.raises(ValueError, match="layers must be an int in 1..2"):
            dc.early_exit(llama_lm, bad)
    with pytest.raises(TypeError, match="lm: expected a decoding.LanguageModel"):
        dc.early_exit(llama_lm.model, 1)


def test_greedy_speculative_with_the_self_draft_equals_greedy_plain(window_lm, window_greedy):
    """The sliding-window Gemma drafting with its first layer: the output is plain greedy's (the shared reference)."""
    for tree in (dc.Chain(4), dc.DynamicTree(6, 4, 2)):
        spec = dc.Speculative(dc.early_exit(window_lm, 1), tree, sampler=dc.Greedy())
        out, _ = decode(window_lm, spec, GREEDY_PROMPTS, GREEDY_TOKENS)
        assert [o.token_ids for o in out] == [o.token_ids for o in window_greedy[0]]


def test_pipeline_with_the_self_draft_has_the_target_law():
    """10,000 rows of one prompt, seed 0, 3 new tokens, a 2-layer toy drafting with its first layer: chi-square."""
    target = toy_llama(3, layers=2)
    spec = dc.Speculative(dc.early_exit(target, 1), dc.DynamicTree(budget=5, max_depth=3, top_k=2))
    assert pipeline_p(spec, target, (0, 1, 2), min_accepted=1) > 1e-3
