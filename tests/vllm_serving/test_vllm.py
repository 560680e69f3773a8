"""decoding.vllm on vLLM's CPU build: a tiny random Llama (Llama 3 tokenizer, head size 32) served in-process.

Run by ``.ci/vllm`` in its own virtual environment (vLLM pins its own torch and transformers); skipped where vLLM
is not installed. Cost there: one engine start (~20-50 s on 2 cores), then a few seconds per test.
"""

from __future__ import annotations

import json
import math
import re
import sys
from contextlib import contextmanager

import pytest
import torch

# a vLLM module, not the name `vllm`: without vLLM installed that name finds this test folder (a namespace package)
pytest.importorskip("vllm.v1.sample.logits_processor", reason="vLLM is not installed: .ci/vllm runs these tests in "
                    "its own virtual environment")

import vllm  # noqa: E402
from conftest import llama3_tokenizer  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

import decoding as dc  # noqa: E402
import decoding.vllm as dv  # noqa: E402

PROMPTS = ["The year was", "My phone number is", "Once upon a time", "Hello"]
CODE = r"[0-9]{3}-[a-z]{2,4}"  # bounded: every row ends with EOS within 16 tokens
ANSWER = r"(yes|no|maybe)!"
LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random Llama with the Llama 3 tokenizer, saved as a checkpoint vLLM loads (head size 32: vLLM's CPU
    attention needs >= 32; weights drawn wide, so next-token distributions are peaked and tokens' surprises differ)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = llama3_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.5, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@contextmanager
def _llvmlite_hidden():
    """vLLM 0.32's CPU worker, at start, scans every module's globals with ``vars(value).get(...)``, which fails on
    llvmlite's ``ffi.lib`` (its ``__dict__`` is a foreign function) once numba is imported, as decoding does: keep
    that module out of ``sys.modules`` while the in-process engine starts (the README's install notes)."""
    module = sys.modules.pop("llvmlite.binding.ffi", None)
    try:
        yield
    finally:
        if module is not None:
            sys.modules["llvmlite.binding.ffi"] = module


@pytest.fixture(scope="module")
def llm(model_dir):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: tests read the processor's state
        env.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
        with _llvmlite_hidden():
            engine = vllm.LLM(model=str(model_dir), dtype="float32", enforce_eager=True, max_model_len=128,
                              max_num_seqs=8, seed=0, **dv.llm_kwargs())
        yield engine


@pytest.fixture(scope="module")
def processor(llm):
    """The engine's DecodingLogitsProcessor."""
    def find(worker):
        return [p for p in worker.model_runner.input_batch.logitsprocs.all if isinstance(p, dv.DecodingLogitsProcessor)]

    (found,) = llm.collective_rpc(find)
    (processor,) = found
    return processor


@pytest.fixture(scope="module")
def hf_lm(model_dir):
    """The same checkpoint in transformers, for dc.generate."""
    from transformers import LlamaForCausalLM

    return dc.LanguageModel(LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32), llama3_tokenizer())


def ranks(completion) -> list[int]:
    """Rank of each emitted token under the unmodified model (vLLM's raw log-probs; 1 is the mode)."""
    return [lp[t].rank for t, lp in zip(completion.token_ids, completion.logprobs)]


def test_top_k_keeps_ranks(llm):
    params = dv.sampling_params(dc.TopK(3), max_tokens=16, logprobs=1, seed=0, ignore_eos=True)
    found = [r for out in llm.generate(PROMPTS[:2], params, use_tqdm=False) for r in ranks(out.outputs[0])]
    assert len(found) == 32
    assert max(found) <= 3  # every token among the model's top 3 (the tiny model is near uniform on 128k tokens)
    assert len(set(found)) > 1  # and drawn among them, not only the mode


def test_masked_regex_matches_and_equals_dc_generate(llm, hf_lm):
    greedy = dc.Masked(dc.Regex(CODE), greedy=True)  # the most probable allowed token: deterministic
    served = llm.generate(PROMPTS, dv.sampling_params(greedy, max_tokens=16), use_tqdm=False)
    local = dc.generate(hf_lm, PROMPTS, greedy, max_new_tokens=16)
    for out, ref in zip(served, local):
        completion = out.outputs[0]
        assert re.fullmatch(CODE, completion.text), completion.text
        assert completion.finish_reason == "stop"
        assert list(completion.token_ids) == ref.token_ids
        assert completion.text == ref.text


def test_requests_in_one_batch_keep_their_samplers(llm):
    samplers = [dc.Greedy(), dc.Masked(dc.Regex(CODE)), dc.Masked(dc.Regex(ANSWER)), dc.Masked(dc.Regex(CODE)),
                dc.TopK(2)]
    params = [dv.sampling_params(s, max_tokens=16, logprobs=1, seed=i) for i, s in enumerate(samplers)]
    params.append(vllm.SamplingParams(max_tokens=16, temperature=0.0, logprobs=1))  # not hosted: vLLM's greedy
    outs = [o.outputs[0] for o in llm.generate(PROMPTS + PROMPTS[:2], params, use_tqdm=False)]
    alone = llm.generate(PROMPTS[:1], dv.sampling_params(dc.Greedy(), max_tokens=16), use_tqdm=False)
    assert list(outs[0].token_ids) == list(alone[0].outputs[0].token_ids)
    assert set(ranks(outs[0])) == {1}
    for out, pattern in [(outs[1], CODE), (outs[2], ANSWER), (outs[3], CODE)]:
        assert re.fullmatch(pattern, out.text), out.text
    assert max(ranks(outs[4])) <= 2
    assert set(ranks(outs[5])) == {1}  # left alone by the processor


def test_a_row_left_without_allowed_tokens_gets_eos(llm):
    """min_tokens masks EOS before the sampler sees the logits: once the constraint allows only EOS, no token is
    left (a dead end), and the row gets EOS, never an unconstrained draw (vLLM stops at EOS whatever min_tokens)."""
    params = dv.sampling_params(dc.Masked(dc.Regex("[0-9]{3}")), max_tokens=12, min_tokens=8, seed=0)
    (out,) = llm.generate(PROMPTS[:1], params, use_tqdm=False)
    completion = out.outputs[0]
    assert re.fullmatch("[0-9]{3}", completion.text), completion.text
    assert completion.token_ids[-1] == llm.get_tokenizer().eos_token_id and len(completion.token_ids) < 8


def test_mirostat_mu_follows_emitted_tokens(llm, processor):
    sampler = dc.Mirostat(tau=3.0, eta=0.5)
    engine = llm.llm_engine
    for i, prompt in enumerate(PROMPTS[:2]):  # one group of two: their states are batched
        engine.add_request(f"mirostat-{i}", prompt, dv.sampling_params(sampler, max_tokens=12, logprobs=1, seed=i,
                                                                        ignore_eos=True))
    latest = {}
    while len(latest) < 2 or min(len(c.token_ids) for c in latest.values()) < 6:
        for out in engine.step():
            latest[out.request_id] = out.outputs[0]
    hosted = list(processor.rows.values())
    assert len(hosted) == 2
    for completion in latest.values():
        (request,) = [r for r in hosted if r.output == list(completion.token_ids)]
        assert request.committed == len(completion.token_ids) - 1  # the last token commits at the next step
        mu = [2.0 * sampler.tau]  # mu before each token (Algorithm 2: mu <- mu - eta (S - tau))
        for token, lp, rank in zip(completion.token_ids, completion.logprobs, ranks(completion)):
            surprise = -lp[token].logprob / LN2  # bits, on the distribution Mirostat received (the model's)
            assert rank == 1 or surprise <= mu[-1] + 1e-4  # version 2 kept it: surprise within mu, or the mode
            mu.append(mu[-1] - sampler.eta * (surprise - sampler.tau))
        assert request.state[0].item() == pytest.approx(mu[request.committed], abs=1e-4)
    while engine.has_unfinished_requests():
        engine.step()


def test_states_follow_requests_out_of_and_back_into_the_batch(llm):
    """Removed (unscheduled, preempted), condensed, re-added and swapped, as vLLM's batch does: each request keeps
    its own mu, committed with its own tokens and distributions."""
    sampler = dc.Mirostat(tau=2.0, eta=0.3)
    processor = dv.DecodingLogitsProcessor(llm.llm_engine.vllm_config, torch.device("cpu"), False)
    params = [dv.sampling_params(sampler) for _ in range(2)]
    plain = vllm.SamplingParams()
    outputs = {"a": [], "b": [], "c": []}
    reference = {k: sampler.init_state(1) for k in "ab"}
    generator = torch.Generator().manual_seed(0)

    def step(update: BatchUpdate | None, order: list[str]) -> None:
        processor.update_state(update)
        logits = torch.randn(len(order), 50, generator=generator)
        law = processor.apply(logits.clone())
        for row, key in enumerate(order):
            logprobs = torch.log_softmax(logits[row : row + 1], -1)
            if key == "c":
                assert torch.equal(law[row], logits[row])  # not hosted: untouched
                token = int(logits[row].argmax())
            else:
                assert torch.allclose(law[row : row + 1], sampler.transform(logprobs, reference[key]))
                token = int(law[row].argmax())
                reference[key] = sampler.accept(reference[key], torch.tensor([token]), logprobs)
            outputs[key].append(token)

    step(BatchUpdate(3, [], [(0, params[0], [1], outputs["a"]), (1, params[1], [1], outputs["b"]),
                             (2, plain, [1], outputs["c"])], []), ["a", "b", "c"])
    step(BatchUpdate(2, [0], [], [(2, 0, MoveDirectionality.UNIDIRECTIONAL)]), ["c", "b"])  # a out, c condensed
    step(BatchUpdate(3, [], [(2, params[0], [1], outputs["a"])], []), ["c", "b", "a"])  # a back
    step(BatchUpdate(3, [], [], [(0, 2, MoveDirectionality.SWAP)]), ["a", "b", "c"])
    step(None, ["a", "b", "c"])
    processor.apply(torch.randn(3, 50, generator=generator))  # commits the last tokens
    by_output = {id(r.output): r for r in processor.rows.values()}
    for key in "ab":
        request = by_output[id(outputs[key])]
        assert request.committed == len(outputs[key]) == {"a": 4, "b": 5}[key]  # a sat out one step
        assert request.state[0].item() == pytest.approx(reference[key].item())


class OwnTopK(dc.TopK):
    """A user's sampler: not in the spec language, so no request can carry it."""


@pytest.mark.parametrize("sampler, named", [
    (dc.AWRS(dc.Regex("[0-9]+")), "AWRS"),
    (dc.Temperature(0.7) | dc.AWRS(dc.Regex("[0-9]+")), "AWRS"),
    (dc.SMC(dc.Masked(dc.Regex("[0-9]+")), particles=4), "SMC"),
    (dc.SIR(proposal=dc.TopP(0.9), n=4), "SIR"),
    (dc.Speculative(dc.NGramDraft(), dc.Chain(3)), "Speculative"),
    (dc.Masked(dc.Predicate(lambda text: "x" not in text)), "Predicate"),
    (dc.Temperature(0.9) | OwnTopK(5), "OwnTopK"),
])
def test_unhostable_samplers_are_refused_by_name(sampler, named):
    with pytest.raises(ValueError, match=named):
        dv.sampling_params(sampler, max_tokens=8)


def test_settings_that_act_after_the_sampler_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        dv.sampling_params(dc.TopK(5), temperature=0.7)
    served = vllm.SamplingParams(top_p=0.9, extra_args=dv.request_args(dc.TopK(5)))
    with pytest.raises(ValueError, match="top_p"):
        dv.DecodingLogitsProcessor.validate_params(served)
    dv.DecodingLogitsProcessor.validate_params(vllm.SamplingParams(top_p=0.9))  # not ours: vLLM's business
    with pytest.raises(ValueError, match="unknown key 'decoding_regexp'"):
        dv.DecodingLogitsProcessor.validate_params(vllm.SamplingParams(extra_args={"decoding_regexp": "a"}))


@pytest.mark.parametrize("sampler", [
    dc.Temperature(0.8) | dc.TopP(0.9),
    dc.TopH(0.4) | dc.Greedy(),
    dc.Mirostat(tau=4.0, eta=0.2, version=1),
    dc.MinP(0.05) | dc.Typical(0.9) | dc.Masked(dc.Regex(CODE)),
    dc.TopK(1) | dc.Masked(dc.Regex(CODE), greedy=True),
    dc.Masked(dc.JsonSchema({"type": "object", "properties": {"ok": {"type": "boolean"}}}, whitespace=" ?",
                            key_order="any")),
    dc.Masked(dc.Grammar('root ::= "a" [0-9]+', syntax="gbnf")),
])
def test_request_args_are_json_and_rebuild_the_sampler(sampler):
    args = json.loads(json.dumps(dv.request_args(sampler)))  # what a `vllm serve` client sends as vllm_xargs
    assert all(isinstance(v, str) for v in args.values())
    assert repr(dv.sampler_from_args(args)) == repr(sampler)


def test_vllm_serve_loads_the_processor_by_name():
    from vllm.v1.sample.logits_processor import _load_logitsprocs_by_fqcns  # what --logits-processors runs

    assert _load_logitsprocs_by_fqcns(dv.llm_kwargs()["logits_processors"]) == [dv.DecodingLogitsProcessor]
