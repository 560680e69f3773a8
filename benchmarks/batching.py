"""Suite ``batching``: throughput of ``dc.generate`` over many prompts under a row budget, against transformers.

On the default model (or ``--model``; the README's figure is on a tiny random Llama with the Llama 3 vocabulary,
128,256 tokens, where the per-row vocabulary work dominates), ``PROMPTS`` prompts of 4 to 40 words (built from a
fixed word list) are decoded greedily for up to ``MAX_NEW_TOKENS`` tokens, in one run, by

- ``HF bs=B``: transformers' ``model.generate`` (``do_sample=False``) over the prompts in consecutive batches of B,
  left-padded, for each B of ``HF_BATCH_SIZES``; its figure is its best B;
- ``decoding rows=R``: one ``dc.generate(lm, prompts, dc.Greedy(), max_batch_rows=R)`` call, continuous batching
  under the budget, for R = None (derived from free memory; the row shows what it came to) and ``OUR_ROWS``.

Generated tokens per second of wall time (EOS included, padding after it excluded), the median over repeats, timed
round robin after one untimed warm-up round; the ratio over HF's best batch size; and how many prompts got the same
tokens as HF's best batch size (greedy on both sides: a difference can only come from a float near-tie). ``--quick``:
12 prompts, 3 tokens, no warm-up: a smoke run.

Run: ``decoding bench batching [--model PATH] [--repeats N] [--quick]``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from functools import partial

import torch

import decoding as dc
from decoding import scheduling
from decoding.bench import BenchConfig, Report, load_model, time_interleaved

DESCRIPTION = (
    "dc.generate over 1,000 prompts with continuous batching under a row budget (derived from free memory, and "
    "fixed) against transformers' model.generate at its best batch size, greedy, same model, same run: generated "
    "tokens per second and the ratio."
)
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there one all we their been has more when will would who so no").split()
PROMPTS, QUICK_PROMPTS = 1000, 12
MAX_NEW_TOKENS, QUICK_MAX_NEW_TOKENS = 32, 3
HF_BATCH_SIZES, QUICK_HF_BATCH_SIZES = (16, 32, 64, 256), (4, 12)
OUR_ROWS, QUICK_OUR_ROWS = (None, 16, 32, 256), (None, 4)
REPEATS, QUICK_REPEATS = 3, 1


def prompts(count: int) -> list[str]:
    """``count`` prompts of 4 to 40 words, a fixed function of their index."""
    return [" ".join(WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(4 + (i * 37) % 37)) for i in range(count)]


def run(config: BenchConfig) -> Report:
    return measure(load_model(config), config)


def measure(lm: dc.LanguageModel, config: BenchConfig) -> Report:
    """The suite on a loaded model."""
    quick = config.quick
    texts = prompts(QUICK_PROMPTS if quick else PROMPTS)
    new_tokens = QUICK_MAX_NEW_TOKENS if quick else MAX_NEW_TOKENS
    repeats = QUICK_REPEATS if quick else (config.repeats or REPEATS)
    ids = [lm.encode(t) for t in texts]
    outputs: dict[str, list[list[int]]] = {}
    cases: dict[str, Callable[[], None]] = {}
    for b in QUICK_HF_BATCH_SIZES if quick else HF_BATCH_SIZES:
        cases[f"HF bs={b}"] = partial(_record, outputs, f"HF bs={b}", partial(hf_generate, lm, ids, new_tokens, b))
    derived = scheduling.max_rows(lm, dc.Ancestral(dc.Greedy()), ids, new_tokens)
    for rows in QUICK_OUR_ROWS if quick else OUR_ROWS:
        name = f"decoding rows={rows or f'{derived} (derived)'}"
        cases[name] = partial(_record, outputs, name, partial(ours, lm, texts, new_tokens, rows))
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else None
    seconds = time_interleaved(cases, repeats, warmup=0 if quick else 1, sync=sync, desc="batching",
                               progress=config.progress)
    rows = _rows(seconds, outputs)
    headers = ["case", "tokens/s", "x best HF", "same tokens as best HF"]
    table = [[r["case"], f"{r['tokens_per_s']:.1f}", f"{r['over_best_hf']:.2f}x", f"{r['same_as_best_hf']}/{len(ids)}"]
             for r in rows]
    settings = {
        "model": config.model or "default: Gemma 3 270M (decoding.default_model)", "vocab_size": lm.vocab_size,
        "prompts": len(texts), "prompt_tokens": {"min": min(map(len, ids)), "max": max(map(len, ids)),
                                                 "mean": statistics.mean(map(len, ids))},
        "max_new_tokens": new_tokens, "sampler": "greedy (dc.Greedy(); HF do_sample=False)",
        "derived_max_batch_rows": derived, "repeats": repeats, "device": str(lm.device),
        "timing": "median wall time over repeats, cases round robin after one untimed warm-up round (none with "
                  "--quick)",
        "hf_call": "model.generate(ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, do_sample=False), "
                   "consecutive left-padded batches of bs prompts",
    }
    return Report("batching", DESCRIPTION, settings, rows, headers, table, plot=partial(_plot, rows))


def _record(outputs: dict, name: str, fn: Callable[[], list[list[int]]]) -> None:
    outputs[name] = fn()


def ours(lm: dc.LanguageModel, texts: list[str], new_tokens: int, rows: int | None) -> list[list[int]]:
    out = dc.generate(lm, texts, dc.Greedy(), max_new_tokens=new_tokens, max_batch_rows=rows)
    return [g.token_ids for g in out]


def hf_generate(lm: dc.LanguageModel, ids: Sequence[Sequence[int]], new_tokens: int,
                batch_size: int) -> list[list[int]]:
    """transformers' greedy ``generate`` over ``ids`` in consecutive left-padded batches; each row's tokens up to
    and with its first EOS."""
    eos = set(lm.eos_token_ids)
    out = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        width = max(map(len, chunk))
        tokens = torch.full((len(chunk), width), lm.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(tokens)
        for i, p in enumerate(chunk):
            tokens[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        with torch.no_grad():
            generated = lm.model.generate(tokens.to(lm.device), attention_mask=mask.to(lm.device),
                                          max_new_tokens=new_tokens, do_sample=False,
                                          eos_token_id=list(lm.eos_token_ids), pad_token_id=lm.pad_token_id)
        for row in generated[:, width:].tolist():
            end = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
            out.append(row[:end])
    return out


def _rows(seconds: dict[str, float], outputs: dict[str, list[list[int]]]) -> list[dict]:
    rate = {name: sum(map(len, outputs[name])) / s for name, s in seconds.items()}
    best_hf = max((n for n in rate if n.startswith("HF")), key=rate.get)
    return [{"case": name, "seconds": seconds[name], "new_tokens": sum(map(len, outputs[name])),
             "tokens_per_s": rate[name], "over_best_hf": rate[name] / rate[best_hf], "best_hf": best_hf,
             "same_as_best_hf": sum(a == b for a, b in zip(outputs[name], outputs[best_hf]))}
            for name in seconds]


def _plot(rows: list[dict], figure) -> None:
    axes = figure.subplots()
    names = [r["case"] for r in rows]
    axes.bar(names, [r["tokens_per_s"] for r in rows],
             color=["tab:gray" if n.startswith("HF") else "tab:blue" for n in names])
    axes.set_ylabel("generated tokens / s")
    axes.tick_params(axis="x", labelrotation=20, labelsize=8)
    figure.suptitle("dc.generate under a row budget (continuous batching) vs transformers' generate, greedy",
                    fontsize=10)
