"""dc.generate and the decode loop: what it returns, when it stops, that it is reproducible and batch-invariant."""

from __future__ import annotations

import math

import pytest
import torch

import decoding as dc
from decoding.kernels.random import RowStreams


def hf_greedy(lm, prompt: str, n: int) -> list[int]:
    ids = torch.tensor([lm.encode(prompt)])
    out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                            eos_token_id=None, pad_token_id=lm.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def forced_logprob(lm, prompt: str, tokens: list[int]) -> float:
    """Sum of log p(token | prefix) under the model, by one full forward."""
    ids = lm.encode(prompt)
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids + tokens])).logits[0].float()
    lp = lm.log_softmax(logits)[len(ids) - 1 : -1]
    return float(lp.gather(-1, torch.tensor(tokens)[:, None]).sum())


def test_greedy_equals_hf_generate(tiny_lm):
    prompts = ["Once upon a time", "Hi"]
    out = dc.generate(tiny_lm, prompts, dc.Greedy(), max_new_tokens=8)  # 5 + 8 tokens: past Gemma's window of 4
    for prompt, seq in zip(prompts, out):
        expected = hf_greedy(tiny_lm, prompt, 8)
        n = len(seq.token_ids)
        assert seq.token_ids == expected[:n]
        assert n == 8 or seq.token_ids[-1] in tiny_lm.eos_token_ids


def test_outputs_logprob_weight_text_and_stats(llama_lm):
    out = dc.generate(llama_lm, ["a", "bb"], dc.Temperature(0.5) | dc.TopK(5), max_new_tokens=6, seed=3)
    assert len(out) == 2
    for i, seq in enumerate(out):
        assert math.isclose(seq.logprob, forced_logprob(llama_lm, ["a", "bb"][i], seq.token_ids), abs_tol=1e-3)
        assert seq.log_weight == 0.0  # exact sampler
        assert seq.text == llama_lm.decode(seq.token_ids)
        assert seq.reason in ("eos", "length") and seq.finished == (seq.reason == "eos")
    stats = out.stats
    assert stats.new_tokens == sum(len(s.token_ids) for s in out)
    assert stats.forwards >= 1 and stats.tokens >= stats.new_tokens and stats.wall_time > 0
    assert stats.tokens_per_second > 0


def test_same_seed_same_output_and_rows_independent_of_batch(llama_lm):
    sampler = dc.Temperature(1.5)
    a = dc.generate(llama_lm, ["x", "y", "z"], sampler, max_new_tokens=8, seed=[5, 6, 7])
    b = dc.generate(llama_lm, ["x", "y", "z"], sampler, max_new_tokens=8, seed=[5, 6, 7])
    assert [s.token_ids for s in a] == [s.token_ids for s in b]
    alone = dc.generate(llama_lm, ["y"], sampler, max_new_tokens=8, seed=[6])
    assert alone[0].token_ids == a[1].token_ids
    other = dc.generate(llama_lm, ["x", "y", "z"], sampler, max_new_tokens=8, seed=[8, 9, 10])
    assert [s.token_ids for s in other] != [s.token_ids for s in a]


def test_stats_count_this_call_alone_while_another_runs_on_the_model(llama_lm):
    """A second generate on the same model in the middle of the first (as two threads would interleave): each call's
    stats count its own forwards and tokens, not the model's totals in between."""
    alone = dc.generate(llama_lm, "a b c", dc.Greedy(), max_new_tokens=5).stats
    inner = []
    nested = lambda row, token: inner.append(dc.generate(llama_lm, "x", dc.Greedy(), max_new_tokens=3).stats)  # noqa: E731
    outer = dc.generate(llama_lm, "a b c", dc.Greedy(), max_new_tokens=5, on_token=nested).stats
    assert len(inner) == 5 and all((s.forwards, s.tokens) == (inner[0].forwards, inner[0].tokens) for s in inner)
    assert (outer.forwards, outer.tokens) == (alone.forwards, alone.tokens) == (5, len(llama_lm.encode("a b c")) + 4)


def test_eos_ends_a_row_and_others_continue(llama_lm):
    """Row 0 emits EOS at once: it stops, finished, EOS kept in its ids but not in its text; row 1 runs on."""
    eos = llama_lm.eos_token_ids[0]
    out = dc.generate(llama_lm, ["stop here", "keep going"], ForceEosOnRow0(eos), max_new_tokens=5)
    assert out[0].token_ids == [eos] and out[0].finished and out[0].reason == "eos" and out[0].text == ""
    assert len(out[1].token_ids) == 5 and not out[1].finished and out[1].reason == "length"


@pytest.fixture(scope="module")
def hash_eos_lm(llama_tokenizer):
    """A tiny Llama whose EOS is an ordinary token: id 2 is "#" in Llama 3."""
    from conftest import tiny_llama

    assert llama_tokenizer.decode([2]) == "#"
    return dc.LanguageModel(tiny_llama(llama_tokenizer, seed=3), llama_tokenizer, eos_token_ids=[2])


def test_text_of_a_sequence_ended_by_an_ordinary_eos_token_leaves_it_out(hash_eos_lm):
    """The constraint ends the text at "ab" and only EOS ("#") may follow: the text is "ab", and satisfies it."""
    out = dc.generate(hash_eos_lm, ["x", "y"], dc.Masked(dc.Regex("ab")), max_new_tokens=8)
    for seq in out:
        assert seq.reason == "eos" and seq.token_ids[-1] == 2 and seq.text == "ab"


class ForceEosOnRow0(dc.TokenSampler):
    """Terminal test sampler: EOS where the row's state says so, else greedy. State: a bool per row."""

    terminal = True

    def __init__(self, eos: int):
        self.eos = eos

    def init_state(self, batch_size, device="cpu"):
        return torch.arange(batch_size, device=device) == 0

    def draw(self, logprobs, state, rng):
        tokens = torch.where(state, self.eos, logprobs.argmax(-1))
        zeros = torch.zeros(tokens.shape, device=logprobs.device)
        return tokens, zeros, zeros


class EosAfter(dc.TokenSampler):
    """Terminal test sampler: a categorical draw, but EOS once a row has emitted its quota of tokens."""

    terminal = True
    stateful = True

    def __init__(self, eos: int, quotas: list[int]):
        self.eos, self.quotas = eos, quotas

    def init_state(self, batch_size, device="cpu"):
        return torch.tensor(self.quotas, device=device)

    def draw(self, logprobs, state, rng):
        drawn = dc.Categorical().draw(logprobs, None, rng)[0]
        tokens = torch.where(state == 0, self.eos, drawn)
        zeros = torch.zeros(tokens.shape, device=logprobs.device)
        return tokens, zeros, zeros

    def accept(self, state, tokens, logprobs):
        return state - 1


def test_rows_that_end_early_do_not_disturb_the_others(llama_lm):
    """Rows leave the batch as they end; the rows left keep their own random streams and caches."""
    eos = llama_lm.eos_token_ids[0]
    prompts, seeds = ["a b c", "d", "e f"], [7, 8, 9]
    batch = dc.generate(llama_lm, prompts, EosAfter(eos, [1, 50, 3]), max_new_tokens=10, seed=seeds)
    assert [len(s.token_ids) for s in batch] == [2, 10, 4]
    for i in (1, 2):
        alone = dc.generate(llama_lm, [prompts[i]], EosAfter(eos, [[1, 50, 3][i]]), max_new_tokens=10,
                            seed=[seeds[i]])
        assert alone[0].token_ids == batch[i].token_ids


class DieOnRow1(dc.TokenSampler):
    """Terminal test sampler whose row 1 hits a dead end (weight -inf) at the second step."""

    terminal = True
    stateful = True

    def init_state(self, batch_size, device="cpu"):
        return {"step": torch.zeros(batch_size, dtype=torch.long, device=device),
                "row": torch.arange(batch_size, device=device)}

    def draw(self, logprobs, state, rng):
        tokens = logprobs.argmax(-1)
        dead = (state["row"] == 1) & (state["step"] == 1)
        weight = torch.where(dead, float("-inf"), 0.0)
        return tokens, weight, torch.zeros_like(weight)

    def accept(self, state, tokens, logprobs):
        return {"step": state["step"] + 1, "row": state["row"]}


def test_dead_end_is_reported_in_its_row_and_others_finish(llama_lm):
    out = dc.generate(llama_lm, ["a", "b", "c"], DieOnRow1(), max_new_tokens=4)
    assert not out[1].finished and out[1].reason.startswith("dead end")
    assert out[1].log_weight == float("-inf") and len(out[1].token_ids) == 1
    assert len(out[0].token_ids) == 4 and len(out[2].token_ids) == 4
    assert out[0].log_weight == 0.0


def test_stop_strings_cut_the_text(llama_lm):
    free = dc.generate(llama_lm, "Hello", dc.Greedy(), max_new_tokens=10)[0]
    assert len(free.text) > 3
    stop = free.text[2:4]  # a stop string inside the greedy continuation, possibly spanning tokens
    out = dc.generate(llama_lm, "Hello", dc.Greedy(), max_new_tokens=10, stop=[stop, "never-there"])[0]
    assert out.finished and out.reason == "stop"
    assert out.text == free.text[: free.text.find(stop)]
    assert out.token_ids == free.token_ids[: len(out.token_ids)]
    assert stop in llama_lm.decode(out.token_ids)


def test_streaming_callback_sees_every_token_in_order(llama_lm):
    seen: dict[int, list[int]] = {0: [], 1: []}
    out = dc.generate(llama_lm, ["a", "b"], dc.TopK(3), max_new_tokens=5,
                      on_token=lambda row, tok: seen[row].append(tok))
    assert seen[0] == out[0].token_ids and seen[1] == out[1].token_ids


def test_zero_new_tokens_does_no_decoding(llama_lm):
    out = dc.generate(llama_lm, "a", max_new_tokens=0)
    assert out[0].token_ids == [] and out[0].reason == "length"


@pytest.fixture(scope="module")
def peaked_lm(llama_tokenizer):
    """A tiny Llama with its LM head scaled 50x: after "The" its next-token law is peaked (the top 5 tokens hold
    0.54 of the mass, the first 0.19), so a sampler that is not the model itself shows in a thousand draws (the
    plain tiny models are nearly uniform over 128,256 tokens: no sample size shows a temperature there)."""
    from conftest import tiny_llama

    model = tiny_llama(llama_tokenizer, seed=4)
    with torch.no_grad():
        model.lm_head.weight.mul_(50)
    return dc.LanguageModel(model, llama_tokenizer)


def test_default_sampler_is_the_unmodified_model(peaked_lm):
    """No sampler: the draw follows the model itself. 1,000 first tokens (seed 11) against the model's next-token
    law: chi-square over its top 5 tokens and the rest, p > 1e-3. Power against a changed law at this size:
    Temperature 0.8 or 1.2, TopK(10), MinP(0.05) about 1; Temperature(0.9) 0.58."""
    from scipy.stats import chisquare

    n = 1000
    out = dc.generate(peaked_lm, ["The"] * n, max_new_tokens=1, seed=11)
    first = torch.tensor([s.token_ids[0] for s in out])
    p = peaked_lm.start([peaked_lm.encode("The")]).logprobs[0].double().exp()
    top = p.topk(5).indices
    observed = [int((first == t).sum()) for t in top]
    observed.append(n - sum(observed))
    cells = torch.cat([p[top], (p.sum() - p[top].sum())[None]])
    assert chisquare(observed, (cells / cells.sum() * n).tolist()).pvalue > 1e-3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompts=[]), "prompts"),
        (dict(prompts=["a", 3]), r"prompts\[1\]"),
        (dict(prompts="a", max_new_tokens=-1), "max_new_tokens"),
        (dict(prompts="a", max_new_tokens=2.5), "max_new_tokens"),
        (dict(prompts="a", stop=[""]), "stop"),
        (dict(prompts=["a", "b"], seed=[1]), "seed"),
        (dict(prompts="a", sampler="top_p"), "sampler"),
    ],
)
def test_bad_input_is_refused_before_model_work(llama_lm, kwargs, match):
    f0 = llama_lm.forwards
    with pytest.raises((ValueError, TypeError), match=match):
        dc.generate(llama_lm, **kwargs)
    assert llama_lm.forwards == f0


def test_bad_sampler_arguments_name_the_argument():
    with pytest.raises(ValueError, match="temperature"):
        dc.Temperature(0)
    with pytest.raises(ValueError, match="top_p"):
        dc.TopP(1.5)


def test_nan_logits_raise_a_clear_error():
    logprobs = torch.log_softmax(torch.randn(2, 5), -1)
    logprobs[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"logprobs: row 1 has NaN"):
        dc.TopP(0.9).sample(logprobs, None, RowStreams.from_seed(0, 2))


@pytest.mark.slow
def test_default_model_greedy_equals_hf_and_reads_well(gemma):
    out = dc.generate(gemma, "The capital of France is", dc.Greedy(), max_new_tokens=8)[0]
    assert out.token_ids == hf_greedy(gemma, "The capital of France is", 8)[: len(out.token_ids)]
    assert "Paris" in out.text or "capital" in out.text
    assert math.isclose(out.logprob, forced_logprob(gemma, "The capital of France is", out.token_ids), abs_tol=1e-2)


@pytest.mark.slow
def test_default_model_batch_of_samplers(gemma):
    prompts = ["Once upon a time", "def add(a, b):", "Paris is"]
    out = dc.generate(gemma, prompts, dc.Temperature(0.8) | dc.TopP(0.9) | dc.MinP(0.05), max_new_tokens=6,
                      seed=1, stop=["\n\n"])
    assert len(out) == 3 and all(len(s.token_ids) >= 1 for s in out)
    assert all(s.logprob < 0 for s in out)
