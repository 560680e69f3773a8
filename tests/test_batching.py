"""Bounded memory at any number of prompts: ``dc.generate(..., max_batch_rows=)``.

Outputs under a small row budget equal one big batch token for token (each row owns its random stream), for
ancestral sampling, SMC, SIR and speculative decoding, with stop strings and streaming; the model never sees more
rows than the budget nor a cache longer than the longest live row; bad budgets fail before any model work.
"""

from __future__ import annotations

import pytest
import torch
from conftest import decode
from test_smc import NoRepeat, toy_lm  # noqa: F401  (toy_lm: the 4-token Llama fixture NoRepeat fits)

import decoding as dc
from decoding import scheduling
from decoding.decode import DecodeTask

PROMPTS = [f"Prompt {i}:" + " word" * (i % 5) for i in range(9)]


class Seen:
    """A forward pre-hook on a HF model: the largest batch and the longest attention mask it was called with."""

    def __init__(self, lm: dc.LanguageModel):
        self.rows = self.keys = 0
        self.handle = lm.model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.rows = max(self.rows, kwargs["input_ids"].shape[0])
        mask = kwargs["attention_mask"]
        mask = next(iter(mask.values())) if isinstance(mask, dict) else mask
        self.keys = max(self.keys, mask.shape[-1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def run(lm, sampler, budget, **kw):
    """generate over PROMPTS with a row budget; also returns what the model saw and the streamed tokens per row."""
    streamed: dict[int, list[int]] = {}
    with Seen(lm) as seen:
        out = dc.generate(lm, PROMPTS, sampler, seed=5, max_batch_rows=budget,
                          on_token=lambda row, tok: streamed.setdefault(row, []).append(tok), **kw)
    return out, seen, streamed


def assert_same(big, small):
    assert [g.token_ids for g in small] == [g.token_ids for g in big]
    assert [g.reason for g in small] == [g.reason for g in big]
    assert [g.text for g in small] == [g.text for g in big]
    assert [g.logprob for g in small] == pytest.approx([g.logprob for g in big], abs=1e-4)


@pytest.mark.parametrize(("name", "stop"), [("llama", "e"), ("gemma", "o")])  # gemma: a 4-token sliding window
def test_ancestral_small_budget_equals_one_batch_with_stop_and_streaming(request, name, stop):
    lm = request.getfixturevalue(f"{name}_lm")
    sampler = dc.Temperature(1.5) | dc.TopK(30)
    big, _, big_streamed = run(lm, sampler, 10**6, max_new_tokens=10, stop=stop)  # rows end at different steps
    small, seen, streamed = run(lm, sampler, 3, max_new_tokens=10, stop=stop)
    assert_same(big, small)
    assert {g.reason for g in small} >= {"stop", "length"}
    assert seen.rows <= 3 and streamed == big_streamed
    for row, g in enumerate(small):  # streamed under each prompt's own index, the stop string's token included
        assert streamed[row][: len(g.token_ids)] == g.token_ids
    longest = max(len(lm.encode(p)) for p in PROMPTS) + 10
    assert seen.keys <= longest  # trimmed at each admission: the cache never outgrows its longest row


def test_a_stateful_sampler_keeps_each_rows_state_across_admissions(toy_lm):
    sampler = dc.Ancestral(dc.Temperature(2.0) | dc.Masked(NoRepeat()))  # a constraint state per row
    prompts = [[0] * (1 + i % 3) for i in range(12)]
    big, _ = decode(toy_lm, sampler, prompts, 6, seed=4)
    with Seen(toy_lm) as seen:
        small = sampler.run(toy_lm, DecodeTask(prompts, 6, 4, max_batch_rows=5))
    assert [g.token_ids for g in small] == [g.token_ids for g in big]
    assert len({len(g.token_ids) for g in big}) > 1 and seen.rows <= 5  # rows end at different steps


def test_sir_small_budget_equals_one_batch(llama_lm):
    sir = dc.SIR(dc.TopK(5), n=4, k=2)
    big, _, _ = run(llama_lm, sir, None, max_new_tokens=5, stop="e")
    small, seen, _ = run(llama_lm, sir, 9, max_new_tokens=5, stop="e")  # 2 groups of 4 rows at once, never 3
    assert_same(big, small)
    for a, b in zip(big, small):
        assert [d.token_ids for d in a.samples] == [d.token_ids for d in b.samples]
        assert [d.token_ids for d in a.draws] == [d.token_ids for d in b.draws]
        assert a.log_weights == pytest.approx(b.log_weights, abs=1e-4)
    assert seen.rows <= 8


def test_speculative_in_waves_equals_one_batch_with_stop_and_streaming(llama_lm):
    spec = dc.Speculative(dc.NGramDraft(1), dc.Chain(3), sampler=dc.Temperature(1.5) | dc.TopK(30))
    big, _, big_streamed = run(llama_lm, spec, None, max_new_tokens=8, stop="a")
    small, seen, streamed = run(llama_lm, spec, 5, max_new_tokens=8, stop="a")
    assert_same(big, small)
    assert seen.rows <= 5 and streamed == big_streamed


def test_smc_small_budget_equals_one_batch(toy_lm):
    """SMC resamples often here (a constraint's weights on a 4-token model): ancestors, ESS and resampling steps
    are each prompt's own, whichever prompts share its batch."""
    smc = dc.SMC(dc.Masked(NoRepeat()), particles=4, ess_threshold=0.9)
    prompts = [[0] * (1 + i % 3) for i in range(12)]
    big, _ = decode(toy_lm, smc, prompts, 6, seed=2)
    with Seen(toy_lm) as seen:
        small = smc.run(toy_lm, DecodeTask(prompts, 6, 2, max_batch_rows=8))
    assert seen.rows <= 8
    assert sum(len(g.resampled) for g in big) >= 4
    for a, b in zip(big, small):
        assert a.token_ids == b.token_ids and a.resampled == b.resampled
        assert [p.token_ids for p in a.particles] == [p.token_ids for p in b.particles]
        assert a.ess == pytest.approx(b.ess) and a.log_marginal_likelihood == pytest.approx(b.log_marginal_likelihood)


def test_bad_budgets_fail_before_model_work(llama_lm):
    before = llama_lm.forwards
    with pytest.raises(ValueError, match=r"max_batch_rows=16 is too small.*group is 64 rows"):
        dc.generate(llama_lm, PROMPTS, dc.SIR(dc.TopK(5), n=64), max_batch_rows=16)
    with pytest.raises(ValueError, match=r"max_batch_rows=3 .* 8 rows"):
        dc.generate(llama_lm, PROMPTS, dc.SMC(dc.TopK(5), particles=8), max_batch_rows=3)
    with pytest.raises(ValueError, match="max_batch_rows=0"):
        dc.generate(llama_lm, PROMPTS, max_batch_rows=0)
    for bad in (2.5, "8", True):
        with pytest.raises(TypeError, match="max_batch_rows: expected an int"):
            dc.generate(llama_lm, PROMPTS, max_batch_rows=bad)
    assert llama_lm.forwards == before


def test_derived_budget_follows_free_memory_and_keeps_groups_whole(llama_lm, monkeypatch):
    prompts = [llama_lm.encode(p) for p in PROMPTS]
    per_row = scheduling.row_bytes(llama_lm, 20)
    assert per_row >= llama_lm.vocab_size * scheduling.VOCAB_BYTES
    assert scheduling.row_bytes(llama_lm, 20, positions=5) - per_row == 4 * llama_lm.vocab_size * scheduling.VOCAB_BYTES
    monkeypatch.setattr(scheduling, "free_bytes", lambda device: 40 * per_row)  # 0.5 of it: 20 rows
    assert scheduling.max_rows(llama_lm, dc.Ancestral(dc.TopK(5)), prompts, 20 - max(map(len, prompts))) == 20
    assert scheduling.max_rows(llama_lm, dc.SIR(dc.TopK(5), n=8), prompts, 1) == 16  # whole groups
    assert scheduling.max_rows(llama_lm, dc.SIR(dc.TopK(5), n=64), prompts, 1) == 64  # never below one group
    monkeypatch.setattr(scheduling, "free_bytes", lambda device: 10**15)
    assert scheduling.max_rows(llama_lm, dc.Ancestral(dc.TopK(5)), prompts, 1) == scheduling.DEFAULT_MAX_ROWS["cpu"]
    assert scheduling.max_rows(llama_lm, dc.SIR(dc.TopK(5), n=24), prompts, 1) == 48  # whole groups under the cap
    monkeypatch.setattr(scheduling, "free_bytes", lambda device: 8 * per_row)
    with Seen(llama_lm) as seen:  # None: the derived budget bounds the batch
        dc.generate(llama_lm, PROMPTS, dc.TopK(5), max_new_tokens=2)
    assert seen.rows <= 4


def test_extend_appends_rows_that_decode_as_alone(tiny_lm):
    a, b = [1, 5, 9, 4, 7, 3], [2, 8]
    batch = tiny_lm.start([a])
    batch.step(torch.tensor([11]))
    batch.reorder(torch.tensor([], dtype=torch.long))  # every row left
    batch.extend(tiny_lm.start([a]))
    batch.step(torch.tensor([11]))
    batch.extend(tiny_lm.start([b, a]))  # one shorter row, one longer than the batch after trimming
    out = batch.step(torch.tensor([12, 13, 12]))
    for row, (prompt, fed) in enumerate([(a, [11, 12]), (b, [13]), (a, [12])]):
        alone = tiny_lm.start([prompt])
        for t in fed:
            expected = alone.step(torch.tensor([t]))
        torch.testing.assert_close(out[row], expected[0], atol=1e-4, rtol=0)


def test_bench_batching_quick_measures_every_case(llama_lm):
    from decoding.bench import BenchConfig
    from decoding.benchmarks import batching as suite

    report = suite.measure(llama_lm, BenchConfig(quick=True, progress=False))
    cases = [r["case"] for r in report.rows]
    assert cases[: len(suite.QUICK_HF_BATCH_SIZES)] == [f"HF bs={b}" for b in suite.QUICK_HF_BATCH_SIZES]
    assert cases[-1] == "decoding rows=4" and cases[-2].endswith("(derived)")
    best = max(r["tokens_per_s"] for r in report.rows if r["case"].startswith("HF"))
    for r in report.rows:
        assert r["over_best_hf"] == pytest.approx(r["tokens_per_s"] / best)
        assert 0 < r["new_tokens"] <= suite.QUICK_PROMPTS * suite.QUICK_MAX_NEW_TOKENS
        assert r["same_as_best_hf"] == suite.QUICK_PROMPTS  # greedy on both sides, no near-ties here
