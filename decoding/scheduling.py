"""Row budgets for ``dc.generate``: how many rows decode at once, and waves for the samplers that do not admit rows.

A row is one sequence in the model's batch: a prompt, or one of SMC's particles or SIR's proposals. While it
decodes a row holds

- its next-token distributions, ``positions_per_row`` of them (one, or a speculative tree's nodes), each of V
  entries: the model's logits, their float32 log-softmax and the sampler's temporaries (a sort's values and int64
  indices, a cumulative sum, a transformed copy): :data:`VOCAB_BYTES` bytes per entry;
- its KV cache, 2 x layers x KV heads x head size x dtype bytes per token, and a few hidden states per token, for
  the longest prompt plus ``max_new_tokens``.

``max_batch_rows=None`` divides :data:`MEMORY_FRACTION` of the device's free memory (CUDA:
``torch.cuda.mem_get_info``, the model already loaded; CPU: MemAvailable of /proc/meminfo) by the bytes per row,
caps it at :data:`DEFAULT_MAX_ROWS` (256 on CUDA, 64 on CPU) and never goes below one prompt's rows; under
``torch.distributed`` (tensor parallelism) every rank takes the smallest rank's budget, so all run the same
batches. Ancestral sampling, SMC and SIR admit new prompts as rows end (``decode.Decoder``); any other sequence
sampler (speculative decoding) runs in waves of whole prompts (:func:`run`), each prompt with its own random
streams, so the outputs are those of one big batch.

Example:
    >>> budget = max_rows(lm, dc.SIR(dc.TopP(0.9), n=64), prompts, max_new_tokens=32)   # doctest: +SKIP
    >>> budget                        # whole groups of 64 rows                          # doctest: +SKIP
    64
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from decoding.decode import DecodeTask, Generation, SequenceSampler, check_max_batch_rows
from decoding.model import LanguageModel

#: bytes per vocabulary entry and position a row holds: logits, log-softmax and the sampler's temporaries
VOCAB_BYTES = 32
#: hidden-state floats per token held besides the KV cache (the forward's activations)
HIDDEN_FLOATS = 4
#: the share of the device's free memory a derived budget uses
MEMORY_FRACTION = {"cuda": 0.8, "cpu": 0.5}
#: the most rows a derived budget gives, by device type: vLLM's default max_num_seqs on CUDA; on CPU, where a step
#: soon costs in proportion to its rows, 64 (1,000 prompts on a tiny Llama-3-vocabulary model: 256 rows ran at
#: 0.6-0.7x the tokens/s of 64, as transformers' generate did at batch size 256; ``decoding bench batching``)
DEFAULT_MAX_ROWS = {"cuda": 256, "cpu": 64}


def row_bytes(lm: LanguageModel, context: int, positions: int = 1) -> int:
    """Bytes one row holds while it decodes ``context`` tokens (prompt and generated) with ``positions``
    next-token distributions at once (see the module docstring)."""
    config = lm.model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    heads = int(getattr(config, "num_attention_heads", 0) or 1)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    itemsize = torch.empty((), dtype=lm.dtype).element_size()
    per_token = (2 * layers * kv_heads * head_dim + HIDDEN_FLOATS * hidden) * itemsize
    return positions * lm.vocab_size * VOCAB_BYTES + context * per_token


def free_bytes(device: torch.device) -> int | None:
    """The device's free memory in bytes, or None where it is not known (then only the row cap applies)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def max_rows(lm: LanguageModel, sampler: SequenceSampler, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             max_batch_rows: int | None = None) -> int:
    """The row budget of a call: ``max_batch_rows`` checked (an int, at least one prompt's rows: a TypeError or
    ValueError naming it and the group size), or, for None, derived from the device's free memory.

    The budget holds whole prompts: a multiple of ``sampler.rows_per_prompt()`` where it is derived."""
    group = sampler.rows_per_prompt()
    given = check_max_batch_rows(max_batch_rows, group)
    if given is not None:
        return given
    context = max(len(p) for p in prompts) + max_new_tokens
    cost = row_bytes(lm, context, sampler.positions_per_row())
    device = lm.device
    free, cap = free_bytes(device), DEFAULT_MAX_ROWS.get(device.type, DEFAULT_MAX_ROWS["cpu"])
    fits = cap if free is None else int(MEMORY_FRACTION[device.type] * free) // cost
    return _smallest_over_ranks(max(group, min(fits, cap) // group * group), device)


def _smallest_over_ranks(rows: int, device: torch.device) -> int:
    """Under ``torch.distributed`` (a tensor-parallel model), the smallest budget of all ranks: every rank must run
    the same batches, and each reads its own free memory."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return rows
    value = torch.tensor([rows], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())


def run(sampler: SequenceSampler, lm: LanguageModel, task: DecodeTask) -> list[Generation]:
    """``sampler.run`` under ``task.max_batch_rows``: directly for samplers that admit rows themselves
    (``schedules_rows``), else in waves of as many whole prompts as the budget holds, in prompt order, each wave
    a ``task.subtask`` (its prompts keep their streams and the rows ``on_token`` reports)."""
    n = len(task.prompts)
    budget = check_max_batch_rows(task.max_batch_rows, sampler.rows_per_prompt())
    per_wave = n if budget is None else budget // sampler.rows_per_prompt()
    if sampler.schedules_rows or per_wave >= n:
        return sampler.run(lm, task)
    out: list[Generation] = []
    for start in range(0, n, per_wave):
        out += sampler.run(lm, task.subtask(range(start, min(n, start + per_wave))))
    return out
