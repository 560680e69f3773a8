"""A tensor-parallel model (transformers' ``tp_plan="auto"``, two CPU processes over gloo): the lazy LM head, whose
weight is then a sharded DTensor, gives the logits of the full forward."""

from __future__ import annotations

import multiprocessing
import os
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


def _tp_auto() -> dict:
    """transformers' argument for its own tensor-parallel plan (``tp_plan`` alone before DistributedConfig)."""
    try:
        from transformers.distributed import DistributedConfig
    except ImportError:
        return {"tp_plan": "auto"}
    return {"distributed_config": DistributedConfig(tp_plan="auto")}


def _rank(rank: int, port: int, path: str, results) -> None:
    """One process of the tensor-parallel group: its worst difference between lazy and full log-probs."""
    try:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)  # a forked child must not reuse the parent's thread pool
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                          LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **_tp_auto())
            assert type(model.get_output_embeddings().weight).__name__ == "DTensor"
            lm = dc.LanguageModel(model, eos_token_ids=[1])
            prompts = [[2, 3, 4], [5]]
            tree = (torch.tensor([[6, 7, 8], [9, 10, 11]]), torch.tensor([[-1, 0, 0], [-1, 0, 1]]))
            full = lm.start(prompts).tree_step(*tree)
            worst = 0.0
            for _ in range(2):  # the first lazy forward checks the head, the second uses it
                lazy = lm.start(prompts).tree_step(*tree, lazy_head=True)
                worst = max(worst, float((lazy.full() - full).abs().max()))
            results.put((rank, worst, lm._head_exact))
        finally:
            torch.distributed.destroy_process_group()
    except BaseException:
        results.put((rank, traceback.format_exc(), None))


def test_lazy_head_of_a_tensor_parallel_model_equals_the_full_forward(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, bos_token_id=0, eos_token_id=1)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    AutoModelForCausalLM.from_pretrained(tmp_path)  # the loading code imported once, here, not in each child
    from torch.distributed.tensor import parallel  # noqa: F401  (imported once, here, too)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("fork")  # the children reuse this process's imports
    results = context.Queue()
    procs = [context.Process(target=_rank, args=(rank, port, str(tmp_path), results)) for rank in range(WORLD)]
    for p in procs:
        p.start()
    try:
        outcomes = sorted(results.get(timeout=120) for _ in range(WORLD))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    for rank, worst, head_exact in outcomes:
        assert not isinstance(worst, str), f"rank {rank} failed:\n{worst}"
        assert worst < 1e-5, f"rank {rank}: lazy head differs from the full forward by {worst}"
        assert head_exact is True, f"rank {rank}: the head check failed, so the lazy head was not exercised"
