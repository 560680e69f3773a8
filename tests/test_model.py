"""LanguageModel and KVBatch: every cached, padded, reordered or cropped log-prob equals a plain full forward."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

import decoding as dc
from decoding import LanguageModel
from decoding.model import Usage


def reference(lm: LanguageModel, ids: list[int]) -> torch.Tensor:
    """Next-token log-probs from one unpadded, uncached forward of the whole sequence."""
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0, -1].float()
    return lm.log_softmax(logits)


PROMPTS = ["Hello world, this prompt is longer than the sliding window", "Hi", "The quick brown fox jumps"]


def test_ragged_prefill_equals_each_prompt_alone(tiny_lm):
    prompts = [tiny_lm.encode(p) for p in PROMPTS]
    batch = tiny_lm.start(prompts)
    assert batch.logprobs.shape == (3, tiny_lm.vocab_size)
    assert batch.logprobs.dtype == torch.float32
    for i, ids in enumerate(prompts):
        torch.testing.assert_close(batch.logprobs[i], reference(tiny_lm, ids), atol=1e-5, rtol=0)


def test_incremental_steps_equal_full_forward(tiny_lm):
    prompts = [tiny_lm.encode(p) for p in PROMPTS]
    batch = tiny_lm.start(prompts)
    one = torch.tensor([11, 12, 13])
    batch.step(one)
    several = torch.tensor([[21, 22, 23], [24, 25, 26], [27, 28, 29]])
    every = batch.step(several, all_positions=True)  # [B, 3, V]
    assert every.shape == (3, 3, tiny_lm.vocab_size)
    for i, ids in enumerate(prompts):
        full = ids + [int(one[i])] + several[i].tolist()
        torch.testing.assert_close(batch.logprobs[i], reference(tiny_lm, full), atol=1e-5, rtol=0)
        torch.testing.assert_close(every[i, 0], reference(tiny_lm, full[:-2]), atol=1e-5, rtol=0)


def test_reorder_with_duplicates_then_step(tiny_lm):
    prompts = [tiny_lm.encode(p) for p in PROMPTS]
    batch = tiny_lm.start(prompts)
    batch.reorder(torch.tensor([2, 0, 0]))
    assert batch.batch_size == 3
    batch.step(torch.tensor([5, 6, 7]))
    for row, (src, tok) in enumerate([(2, 5), (0, 6), (0, 7)]):
        torch.testing.assert_close(batch.logprobs[row], reference(tiny_lm, prompts[src] + [tok]), atol=1e-5, rtol=0)
    assert batch.lengths.tolist() == [len(prompts[2]) + 1, len(prompts[0]) + 1, len(prompts[0]) + 1]


def test_crop_rolls_back_and_refeeds(tiny_lm):
    prompts = [tiny_lm.encode(p) for p in PROMPTS[:2]]
    batch = tiny_lm.start(prompts)
    start = batch.length
    batch.step(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    batch.crop(start + 1)  # keep the first new token only
    assert batch.length == start + 1 and batch.logprobs is None
    batch.step(torch.tensor([9, 9]))
    for i, first in enumerate([1, 4]):
        torch.testing.assert_close(batch.logprobs[i], reference(tiny_lm, prompts[i] + [first, 9]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="length"):
        batch.crop(0)


def test_counters_count_forwards_and_real_tokens(llama_lm):
    f0, t0 = llama_lm.forwards, llama_lm.tokens_processed
    prompts = [[1, 2, 3], [4]]
    batch = llama_lm.start(prompts)
    batch.step(torch.tensor([5, 6]))
    assert llama_lm.forwards - f0 == 2
    assert llama_lm.tokens_processed - t0 == 4 + 2  # padding is not counted
    valid = torch.tensor([[True, True, False], [True, False, False]])
    batch.tree_step(torch.tensor([[7, 8, 9], [7, 8, 9]]), torch.tensor([[-1, 0, 0], [-1, 0, 0]]), valid)
    assert llama_lm.forwards - f0 == 3
    assert llama_lm.tokens_processed - t0 == 4 + 2 + 3  # nor are padding nodes of a tree


def test_usage_counts_each_batch_apart_and_the_model_counts_all(llama_lm):
    """Two interleaved batches of one model (two concurrent calls) count their own forwards and fed tokens in
    their own Usage; together they make the model's lifetime counters' growth."""
    f0, t0 = llama_lm.forwards, llama_lm.tokens_processed
    a, b = Usage(), Usage()
    first = llama_lm.start([[1, 2, 3], [4]], usage=a)  # 4 tokens
    second = llama_lm.start([[5, 6]], usage=b)  # 2
    first.step(torch.tensor([7, 8]))  # 2
    second.step(torch.tensor([[9, 10, 11]]))  # 3
    second.tree_step(torch.tensor([[1, 2, 3]]), torch.tensor([[-1, 0, 0]]), torch.tensor([[True, True, False]]))  # 2
    second.commit(torch.tensor([[0, 1]]))
    second.step(torch.tensor([12]))  # 1, through the explicit-mask path (commit left a gap)
    first.reorder([1, 1, 0])
    first.step(torch.tensor([1, 2, 3]))  # 3
    assert first.usage is a and second.usage is b
    assert (a.forwards, a.tokens) == (3, 4 + 2 + 3)
    assert (b.forwards, b.tokens) == (4, 2 + 3 + 2 + 1)
    scored = Usage()
    llama_lm.score([[1, 2], [3]], [[4, 5, 6], [7]], usage=scored)  # prefill 3, then 2 per row (row 1 feeds 7 and a pad after its end)
    assert (scored.forwards, scored.tokens) == (2, 3 + 4)
    assert llama_lm.forwards - f0 == a.forwards + b.forwards + scored.forwards
    assert llama_lm.tokens_processed - t0 == a.tokens + b.tokens + scored.tokens
    assert llama_lm.start([[1]]).usage == Usage(forwards=1, tokens=1)  # a batch started without one has its own


def test_forwards_raise_no_deprecation_or_future_warnings(tiny_lm):
    """Prefill, steps, a lazy tree, a commit with gaps and scoring pass transformers the arguments it wants now
    (``cache``, not ``past_key_values``) and read nothing deprecated off its outputs: no warning at all, whether
    through ``warnings`` or transformers' logger."""
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()  # transformers logs some deprecations once per process
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = logged.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lm = dc.LanguageModel(tiny_lm.model, tiny_lm.tokenizer)  # its first lazy forward checks the head
            batch = lm.start([lm.encode(PROMPTS[0]), lm.encode(PROMPTS[1])])
            batch.step(torch.tensor([5, 6]))
            batch.step(torch.tensor([[7, 8], [9, 10]]), all_positions=True)
            for _ in range(2):
                tree = batch.tree_step(torch.tensor([[5, 6, 7], [8, 9, 10]]), torch.tensor([[-1, 0, 0], [-1, 0, 1]]),
                                       lazy_head=True)
                tree.at(torch.tensor([0, 1]), torch.tensor([[0], [2]]))
                batch.commit(torch.tensor([[0, 2], [0, -1]]))
            batch.step(torch.tensor([11, 12]))
            batch.reorder([1, 0])
            batch.crop(batch.length - 1)
            lm.score([[1, 2]], [[3, 4]])
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in logged] == []


def test_logits_rows_past_the_tokenizer_are_impossible(llama_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(llama_tokenizer) + 64, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    lm = LanguageModel(LlamaForCausalLM(config), llama_tokenizer)
    lp = lm.start([lm.encode("hi")]).logprobs
    assert torch.isneginf(lp[0, len(llama_tokenizer):]).all()
    torch.testing.assert_close(lp[0].exp().sum(), torch.tensor(1.0))
    logits = torch.zeros(2, lm.vocab_size)
    torch.testing.assert_close(lm.log_softmax(logits)[:, :len(llama_tokenizer)].exp().sum(-1), torch.ones(2))
    assert bool((logits == 0).all())  # the caller's logits are not changed


def test_eos_ids_from_model_and_tokenizer(gemma_lm, llama_lm):
    assert 1 in gemma_lm.eos_token_ids
    assert llama_lm.eos_token_ids == (128001,)


def test_bad_input_is_refused_before_model_work(llama_lm, llama_tokenizer):
    f0 = llama_lm.forwards
    with pytest.raises(ValueError, match="prompts"):
        llama_lm.start([])
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        llama_lm.start([[1], []])
    assert llama_lm.forwards == f0
    batch = llama_lm.start([[1, 2]])
    with pytest.raises(ValueError, match="tokens"):
        batch.step(torch.tensor([1, 2]))


def test_model_without_eos_is_refused(llama_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    config = LlamaConfig(vocab_size=len(llama_tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         bos_token_id=None, eos_token_id=None)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = None
    no_eos = PreTrainedTokenizerFast(tokenizer_object=llama_tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match="eos_token_ids"):
        LanguageModel(model, no_eos)
    assert LanguageModel(model, no_eos, eos_token_ids=[7]).eos_token_ids == (7,)


def test_load_refuses_unknown_paths(tmp_path):
    with pytest.raises(ValueError, match="name"):
        dc.load(str(tmp_path / "missing" / "model"))
    with pytest.raises(ValueError, match="name"):
        dc.load("./no-such-model")


def test_load_reads_a_saved_checkpoint(tmp_path, llama_lm, llama_tokenizer):
    llama_lm.model.save_pretrained(tmp_path)
    llama_tokenizer.save_pretrained(tmp_path)
    lm = dc.load(str(tmp_path), device="cpu")
    ids = lm.encode("Hello")
    torch.testing.assert_close(lm.start([ids]).logprobs, llama_lm.start([ids]).logprobs, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_default_model_ragged_batch_matches_alone(gemma):
    """The real Gemma 3 270M: batched, padded and cached log-probs equal each prompt alone."""
    prompts = [gemma.encode("The capital of France is"), gemma.encode("def fibonacci(n):")]
    batch = gemma.start(prompts)
    batch.step(torch.tensor([5, 6]))
    for i, ids in enumerate(prompts):
        torch.testing.assert_close(batch.logprobs[i], reference(gemma, ids + [5 + i]), atol=2e-4, rtol=0)
    assert gemma.vocab_size == 262144 and gemma.dtype == torch.float32


def test_tree_step_scores_every_node_as_its_own_path(tiny_lm):
    """One forward over a tree equals a plain forward of each node's path; the sliding window (tiny Gemma: 4)
    counts real positions; padding nodes change nothing."""
    prompts = [tiny_lm.encode(PROMPTS[0]), tiny_lm.encode(PROMPTS[1])]
    batch = tiny_lm.start(prompts)
    tokens = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    parents = torch.tensor([[-1, 0, 0, 1, 3], [-1, 0, 0, 1, 0]])
    valid = torch.tensor([[True] * 5, [True, True, True, True, False]])
    out = batch.tree_step(tokens, parents, valid)
    assert out.shape == (2, 5, tiny_lm.vocab_size)
    paths = {0: [[0], [0, 1], [0, 2], [0, 1, 3], [0, 1, 3, 4]], 1: [[0], [0, 1], [0, 2], [0, 1, 3]]}
    for row, row_paths in paths.items():
        for node, path in enumerate(row_paths):
            ids = prompts[row] + tokens[row, path].tolist()
            torch.testing.assert_close(out[row, node], reference(tiny_lm, ids), atol=2e-5, rtol=0)


def test_commit_keeps_the_accepted_path_and_later_forwards_see_it(tiny_lm):
    """Rows keep paths of different lengths (gaps in the cache); steps and trees after that stay exact."""
    prompts = [tiny_lm.encode(PROMPTS[0]), tiny_lm.encode(PROMPTS[1])]
    batch = tiny_lm.start(prompts)
    batch.tree_step(torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]]), torch.tensor([[-1, 0, 0, 1], [-1, 0, 0, 1]]))
    batch.commit(torch.tensor([[0, 2], [0, -1]]))  # row 0 keeps 5, 7; row 1 keeps 9
    history = [prompts[0] + [5, 7], prompts[1] + [9]]
    assert batch.lengths.tolist() == [len(h) for h in history]
    out = batch.step(torch.tensor([[20, 21], [22, 23]]), all_positions=True)
    history = [history[0] + [20, 21], history[1] + [22, 23]]
    for row in range(2):
        torch.testing.assert_close(out[row, -1], reference(tiny_lm, history[row]), atol=2e-5, rtol=0)
    batch.tree_step(torch.tensor([[30], [31]]), torch.tensor([[-1], [-1]]))  # a tree grown over two calls
    second = batch.tree_step(torch.tensor([[32, 33], [34, 35]]), torch.tensor([[0, 1], [0, 0]]))
    torch.testing.assert_close(second[0, 1], reference(tiny_lm, history[0] + [30, 32, 33]), atol=2e-5, rtol=0)
    torch.testing.assert_close(second[1, 1], reference(tiny_lm, history[1] + [31, 35]), atol=2e-5, rtol=0)
    batch.commit(torch.tensor([[0, 1, 2], [0, 2, -1]]))
    assert batch.lengths.tolist() == [len(history[0]) + 3, len(history[1]) + 2]


def test_tree_step_bad_parents_and_crop_during_a_tree(tiny_lm):
    batch = tiny_lm.start([tiny_lm.encode("Hi")])
    with pytest.raises(ValueError, match="parent"):
        batch.tree_step(torch.tensor([[5, 6]]), torch.tensor([[-1, 1]]))  # a node cannot be its own parent
    with pytest.raises(ValueError, match="commit"):
        batch.commit(torch.tensor([[0]]))
    assert not batch.tree_pending
    batch.tree_step(torch.tensor([[5]]), torch.tensor([[-1]]))
    assert batch.tree_pending
    with pytest.raises(ValueError, match="commit"):
        batch.crop(1)
    batch.commit(torch.tensor([[0]]))
    assert not batch.tree_pending


def test_score_equals_the_decode_loops_log_probabilities(tiny_lm):
    prompts = [tiny_lm.encode("Hello there"), tiny_lm.encode("A")]
    out = dc.Ancestral(dc.TopK(10)).run(tiny_lm, dc.DecodeTask(prompts, max_new_tokens=5, seed=1))
    continuations = [g.token_ids for g in out] + [[]]
    scores = tiny_lm.score(prompts + [prompts[0]], continuations, max_elements=6 * tiny_lm.vocab_size)  # 1 row/chunk
    assert scores[:2].tolist() == pytest.approx([g.logprob for g in out], abs=1e-4)
    assert scores[2] == 0.0
    tempered = tiny_lm.score(prompts, continuations[:2], law=lambda lp: torch.log_softmax(lp / 0.5, -1))
    assert not torch.allclose(tempered, scores[:2])
    with pytest.raises(ValueError, match="continuations"):
        tiny_lm.score(prompts, continuations)


def _tree(lm):
    prompts = [lm.encode(PROMPTS[0]), lm.encode(PROMPTS[1])]
    tokens = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    parents = torch.tensor([[-1, 0, 0, 1, 3], [-1, 0, 0, 1, 0]])
    valid = torch.tensor([[True] * 5, [True, True, True, True, False]])
    return prompts, (tokens, parents, valid)


def test_lazy_head_runs_only_for_the_entries_read_and_they_equal_the_full_forward(tiny_lm):
    """The first lazy forward of a model checks ``head_logits`` against the model's own logits (all computed);
    later ones compute nothing until read, then each entry once."""
    lm = dc.LanguageModel(tiny_lm.model, tiny_lm.tokenizer)  # a fresh LanguageModel: its head is not checked yet
    prompts, tree = _tree(lm)
    full = lm.start(prompts).tree_step(*tree)
    first = lm.start(prompts).tree_step(*tree, lazy_head=True)
    assert lm._head_exact is True and bool(first.computed.all())
    lazy = lm.start(prompts).tree_step(*tree, lazy_head=True)
    assert not bool(lazy.computed.any())
    rows = lm.head_rows
    torch.testing.assert_close(lazy.at(torch.tensor([1]), torch.tensor([[0, 3]]))[0], full[1, [0, 3]],
                               atol=2e-5, rtol=0)
    assert lazy.computed.sum() == 2 and lm.head_rows == rows + 2
    lazy.compute(torch.tensor([[True] * 5, [False] * 5]))
    assert bool(lazy.computed[0].all()) and lazy.computed[1].sum() == 2
    torch.testing.assert_close(lazy.full(), full, atol=2e-5, rtol=0)
    torch.testing.assert_close(first.full(), full, atol=2e-5, rtol=0)


def test_a_head_with_a_logit_scale_fails_the_check_and_lazy_forwards_stay_exact(llama_tokenizer):
    """Granite divides its logits by ``logits_scaling``: ``head_logits`` does not, so the check turns the lazy
    path off for that model and every lazy forward computes all logits in the model."""
    from transformers import GraniteConfig, GraniteForCausalLM

    torch.manual_seed(0)
    config = GraniteConfig(vocab_size=len(llama_tokenizer), hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, logits_scaling=4.0)
    lm = dc.LanguageModel(GraniteForCausalLM(config).eval(), llama_tokenizer)
    prompts, tree = _tree(lm)
    full = lm.start(prompts).tree_step(*tree)
    for _ in range(2):
        lazy = lm.start(prompts).tree_step(*tree, lazy_head=True)
        assert lm._head_exact is False and bool(lazy.computed.all())
        torch.testing.assert_close(lazy.full(), full, atol=2e-5, rtol=0)
