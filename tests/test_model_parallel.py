"""A tensor-parallel model (transformers' ``tp_plan="auto"``, two CPU processes over gloo), run once for the module:

- the lazy LM head, whose weight is then a sharded DTensor, gives the logits of the full forward;
- ``dc.generate`` gives on every rank the tokens of one process holding the same weights, for token samplers, a
  constraint, SMC and speculative decoding (an n-gram draft; the model's own first layer as a model draft with a
  trimmed head, over a two-branch tree), because every row draws from a counter-based stream that is the same on
  every rank. Ranks that diverge would wait in a collective: the fixture then fails after 120 s.

The model is a tiny Gemma 3 (a 4-token sliding window on one of its two layers: the tree masks come as a dict) on
the real Llama 3 tokenizer, with two key/value heads so that each rank holds one.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import socket
import traceback

import pytest
import torch

import decoding as dc

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or torch._C._get_accelerator().type != "cpu",
    reason="runs tensor parallelism over gloo on CPU (transformers puts the mesh on the accelerator where there is one)",
)

WORLD = 2
PROMPTS = ["The cat sat on", "A B A B A B"]
NEW_TOKENS = 8
SEED = 3
SAMPLERS = ("Temperature | TopP", "Masked(Regex)", "SMC(Masked(Regex))", "Speculative(NGramDraft, Greedy)",
            "Speculative(ModelDraft, MultiDraft)")


def _samplers(lm: dc.LanguageModel) -> dict:
    """The samplers by name, built in each process (a model draft holds that process's model)."""
    regex = dc.Regex(r"[a-z ]{1,12}")
    draft = dc.ModelDraft(dc.early_exit(lm, 1), keep_tokens=range(lm.vocab_size // 2))  # a trimmed head
    samplers = {
        "Temperature | TopP": dc.Temperature(0.8) | dc.TopP(0.9),
        "Masked(Regex)": dc.Masked(regex),
        "SMC(Masked(Regex))": dc.SMC(dc.Masked(regex), particles=3, ess_threshold=1.0),
        "Speculative(NGramDraft, Greedy)": dc.Speculative(dc.NGramDraft(2), dc.Chain(3), sampler=dc.Greedy()),
        "Speculative(ModelDraft, MultiDraft)": dc.Speculative(draft, dc.MultiDraft(2, 2)),
    }
    assert tuple(samplers) == SAMPLERS
    return samplers


def _generations(lm: dc.LanguageModel) -> dict:
    """Sampler name -> (each prompt's (token ids, logprob, resampling steps), target forwards)."""
    out = {}
    for name, sampler in _samplers(lm).items():
        gens = dc.generate(lm, PROMPTS, sampler, max_new_tokens=NEW_TOKENS, seed=SEED)
        out[name] = [(g.token_ids, g.logprob, getattr(g, "resampled", None)) for g in gens], gens.stats.forwards
    return out


def _tp_auto() -> dict:
    """transformers' argument for its own tensor-parallel plan (``tp_plan`` alone before DistributedConfig)."""
    try:
        from transformers.distributed import DistributedConfig
    except ImportError:
        return {"tp_plan": "auto"}
    return {"distributed_config": DistributedConfig(tp_plan="auto")}


def _lazy_head_error(lm: dc.LanguageModel) -> float:
    """The worst difference between the lazy head's log-probs and the full forward's, over a ragged tree step."""
    prompts = [[2, 3, 4], [5]]
    tree = (torch.tensor([[6, 7, 8], [9, 10, 11]]), torch.tensor([[-1, 0, 0], [-1, 0, 1]]))
    full = lm.start(prompts).tree_step(*tree)
    worst = 0.0
    for _ in range(2):  # the first lazy forward checks the head, the second uses it
        lazy = lm.start(prompts).tree_step(*tree, lazy_head=True)
        worst = max(worst, float((lazy.full() - full).abs().max()))
    return worst


def _rank(rank: int, port: int, path: str, tokenizer, results) -> None:
    """One process of the tensor-parallel group: its lazy-head error and its generations."""
    try:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)  # a forked child must not reuse the parent's thread pool
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                          LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **_tp_auto())
            assert type(model.get_output_embeddings().weight).__name__ == "DTensor"
            lm = dc.LanguageModel(model, tokenizer)
            worst = _lazy_head_error(lm)
            results.put((rank, {"head": (worst, lm._head_exact), "generations": _generations(lm)}))
        finally:
            torch.distributed.destroy_process_group()
    except BaseException:
        results.put((rank, traceback.format_exc()))


@pytest.fixture(scope="module")
def parallel(tmp_path_factory, llama_tokenizer):
    """One run of the 2-process group (the slow part, shared by the tests), and the same weights in this process:
    ``(one process's generations, [each rank's results])``."""
    from transformers import AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

    path = tmp_path_factory.mktemp("tp_model")
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(llama_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=16, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
        bos_token_id=llama_tokenizer.bos_token_id, eos_token_id=llama_tokenizer.eos_token_id,
    )
    Gemma3ForCausalLM(config).save_pretrained(path)
    single = dc.LanguageModel(AutoModelForCausalLM.from_pretrained(path), llama_tokenizer)  # loading code imported
    from torch.distributed.tensor import parallel  # noqa: F401  (imported once, here, not in each child)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("fork")  # the children reuse this process's imports
    results = context.Queue()
    procs = [context.Process(target=_rank, args=(rank, port, str(path), llama_tokenizer, results))
             for rank in range(WORLD)]
    for p in procs:
        p.start()
    try:
        reference = _generations(single)  # while the group runs
        try:
            ranks = [outcome for _, outcome in sorted(results.get(timeout=120) for _ in range(WORLD))]
        except queue.Empty:
            pytest.fail("a rank did not report within 120 s: ranks that diverge (a token, a batch, a forward more "
                        "on one of them) wait in a collective for ever")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    for rank, outcome in enumerate(ranks):
        assert not isinstance(outcome, str), f"rank {rank} failed:\n{outcome}"
    return reference, ranks


def test_lazy_head_of_a_tensor_parallel_model_equals_the_full_forward(parallel):
    for rank, outcome in enumerate(parallel[1]):
        worst, head_exact = outcome["head"]
        assert worst < 1e-5, f"rank {rank}: lazy head differs from the full forward by {worst}"
        assert head_exact is True, f"rank {rank}: the head check failed, so the lazy head was not exercised"


@pytest.mark.parametrize("name", SAMPLERS)
def test_generate_under_tensor_parallelism_gives_the_tokens_of_one_process(parallel, name):
    reference, ranks = parallel
    expected, forwards = reference[name]
    assert all(len(ids) > 0 for ids, _, _ in expected)
    for rank, outcome in enumerate(ranks):
        got, got_forwards = outcome["generations"][name]
        assert [ids for ids, _, _ in got] == [ids for ids, _, _ in expected], f"rank {rank}"
        assert [steps for _, _, steps in got] == [steps for _, _, steps in expected], f"rank {rank}: resampling"
        assert got_forwards == forwards, f"rank {rank}"
        for (_, logprob, _), (_, want, _) in zip(got, expected):
            assert logprob == pytest.approx(want, abs=1e-4), f"rank {rank}"


def test_the_parallel_run_exercises_resampling_and_accepted_drafts(parallel):
    """The equalities above cover SMC's resampling and speculative rounds that accept draft tokens."""
    reference = parallel[0]
    assert any(steps for _, _, steps in reference["SMC(Masked(Regex))"][0]), "SMC never resampled"
    generations, forwards = reference["Speculative(ModelDraft, MultiDraft)"]
    assert forwards < max(len(ids) for ids, _, _ in generations), "the model draft had no token accepted"
