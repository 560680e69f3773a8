"""Suite ``awrs``: how many constraint checks AWRS makes per token, and what it costs in tokens per second.

On the default model (or ``--model``): regex tasks (a phone number after a one-shot example, a date answer), JSON
Schema tasks (three schemas, pretty-printed whitespace allowed as the model writes it), and a task where the
constraint fights the model (the capital of France must be Lyon, Marseille or Nice). Per task and repeat (seed r),
in one run, round robin: AWRS (``estimator="auto"``; states that force the next byte draw from the memoised mask,
reported as masks per token), then the unmodified model for as many tokens as AWRS made,
then Masked (fresh masks each run: computing them is masking's cost). Reported: checks per token (AWRS; masking
checks V = the vocabulary size), tokens/s of each with the ratios to unconstrained, and whether outputs finished
and are valid. When ``genlm-control`` is importable, its AWRS (proper weights, the same model in float32 on the same
device, one particle, ancestral) runs the regex tasks too: its checks per token and our tokens/s over its.

Run: ``decoding bench awrs [--model PATH] [--repeats N] [--quick]``.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

import decoding as dc
from decoding.bench import BenchConfig, Report, load_model
from decoding.progress import progress_bar

DESCRIPTION = (
    "AWRS against Masked (locally constrained decoding by full masks) and unconstrained sampling on the same "
    "prompts, in one run: constraint checks per token, tokens/s ratios, valid outputs; genlm-control's AWRS "
    "when installed."
)

JSON_WHITESPACE = r"[ \n]{0,8}"  # what Gemma writes around JSON punctuation ("{\n    "...)
PHONE = r"\(\d{3}\) \d{3}-\d{4}"
DATE = r"(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}
PRODUCT = {"type": "object", "properties": {"product": {"type": "string", "maxLength": 40},
                                            "price": {"type": "number", "minimum": 0},
                                            "in_stock": {"type": "boolean"}},
           "required": ["product", "price", "in_stock"], "additionalProperties": False}
EVENT = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                                          "date": {"type": "string", "pattern": f"^{DATE}$"},
                                          "attendees": {"type": "integer", "minimum": 1, "maximum": 100000}},
         "required": ["title", "date", "attendees"], "additionalProperties": False}


@dataclass
class Task:
    name: str
    prompt: str
    kind: str  # "regex" or "json"
    spec: object  # the pattern or the schema
    max_new_tokens: int

    def constraint(self):
        if self.kind == "regex":
            return dc.Regex(self.spec)
        return dc.JsonSchema(self.spec, whitespace=JSON_WHITESPACE)

    def valid(self, text: str) -> bool:
        if self.kind == "regex":
            return re.fullmatch(self.spec, text, re.ASCII) is not None
        try:
            import jsonschema

            jsonschema.validate(json.loads(text), self.spec)
            return True
        except Exception:  # noqa: BLE001 - any failure to parse or validate is "not valid"
            return False


TASKS = (
    Task("phone", "Contact: Jane Doe, phone (415) 555-0132.\nContact: John Roe, phone ", "regex", PHONE, 20),
    Task("date", "Q: On what date did Apollo 11 land on the Moon? Answer as YYYY-MM-DD.\nA: ", "regex", DATE, 16),
    Task("json person", "Ada Lovelace, a mathematician aged 36, as JSON:\n```json\n", "json", PERSON, 48),
    Task("json product", "A coffee grinder for $49.99, currently available, as JSON:\n```json\n", "json", PRODUCT, 48),
    Task("json event", "PyCon US 2024 took place on 2024-05-15 with 2500 attendees. As JSON:\n```json\n", "json",
         EVENT, 64),
    Task("conflict", "The capital of France is", "regex", r" (Lyon|Marseille|Nice)\.", 8),
)


def run(config: BenchConfig) -> Report:
    lm = load_model(config)
    repeats = 1 if config.quick else (config.repeats or 3)
    tasks = TASKS[:2] if config.quick else TASKS
    peer = _genlm_peer(lm) if not config.quick else None
    warm = dc.Regex("[ab]")  # builds the vocabulary's byte index and compiles the kernels, untimed
    for sampler in (dc.AWRS(warm), dc.Masked(warm), None):
        dc.generate(lm, "x", sampler, max_new_tokens=2)
    rows = []
    for task in progress_bar(tasks, desc="awrs", disable=not config.progress):
        constraint = task.constraint()
        runs: dict[str, list] = {"awrs": [], "masked": [], "unconstrained": [], "genlm": []}
        for seed in range(repeats):
            awrs = dc.generate(lm, task.prompt, dc.AWRS(constraint), max_new_tokens=task.max_new_tokens, seed=seed)
            runs["awrs"].append(awrs)
            n = max(len(awrs[0].token_ids), 1)
            runs["unconstrained"].append(dc.generate(lm, task.prompt, None, max_new_tokens=n, seed=seed))
            runs["masked"].append(dc.generate(lm, task.prompt, dc.Masked(constraint),
                                              max_new_tokens=task.max_new_tokens, seed=seed))
            if peer is not None and task.kind == "regex":
                runs["genlm"].append(peer(task, seed))
        rows.append(_row(task, runs, lm.vocab_size))
    headers = ["task", "AWRS checks/token", "AWRS masks/token", "masking checks/token", "AWRS tok/s", "Masked tok/s",
               "unconstrained tok/s", "AWRS / unconstrained", "Masked / unconstrained", "AWRS valid",
               "Masked valid", "genlm checks/token", "ours / genlm tok/s"]
    table = [[r["task"], f"{r['awrs_checks_per_token']:.2f}", f"{r['awrs_masks_per_token']:.2f}",
              str(r["masking_checks_per_token"]),
              f"{r['awrs_tokens_per_s']:.2f}", f"{r['masked_tokens_per_s']:.2f}",
              f"{r['unconstrained_tokens_per_s']:.2f}", f"{r['awrs_over_unconstrained']:.2f}x",
              f"{r['masked_over_unconstrained']:.2f}x", r["awrs_valid"], r["masked_valid"],
              "-" if r["genlm_checks_per_token"] is None else f"{r['genlm_checks_per_token']:.2f}",
              "-" if r["awrs_over_genlm"] is None else f"{r['awrs_over_genlm']:.1f}x"] for r in rows]
    json_rows = [r for r in rows if r["task"].startswith("json")]
    summary = {
        "task": "mean of JSON tasks",
        "awrs_checks_per_token": statistics.mean(r["awrs_checks_per_token"] for r in json_rows) if json_rows else 0,
        "awrs_over_unconstrained": statistics.mean(r["awrs_over_unconstrained"] for r in json_rows)
        if json_rows else 0,
    }
    table.append([summary["task"], f"{summary['awrs_checks_per_token']:.2f}", "", "", "", "", "",
                  f"{summary['awrs_over_unconstrained']:.2f}x", "", "", "", "", ""])
    settings = {
        "model": config.model or "default: Gemma 3 270M (decoding.default_model)",
        "tasks": [{"name": t.name, "prompt": t.prompt, "kind": t.kind, "spec": t.spec,
                   "max_new_tokens": t.max_new_tokens} for t in tasks],
        "json_whitespace": JSON_WHITESPACE, "repeats (seeds 0..R-1)": repeats, "estimator": "auto",
        "unconstrained": "categorical draw from the unmodified model, as many tokens as AWRS made in that repeat",
        "figures": "medians over repeats; tokens/s = generated tokens / wall time of the generate call",
        "genlm": "genlm-control AWRS(proper_weights=True), ancestral, same checkpoint in float32 on CPU; its HF "
                 "backend caches the prompt's KV only and recomputes generated tokens each step"
                 if peer is not None else "not installed (pip install genlm-control) or --quick",
        "summary": summary,
    }
    return Report("awrs", DESCRIPTION, settings, rows, headers, table, plot=partial(_plot, rows))


def _row(task: Task, runs: dict[str, list], vocab_size: int) -> dict:
    def median_speed(outs) -> float:
        return statistics.median(o.stats.tokens_per_second for o in outs)

    awrs_tokens = sum(o.stats.new_tokens for o in runs["awrs"])
    checks = sum(o.stats.counters.get("constraint_checks", 0.0) for o in runs["awrs"])
    masks = sum(o.stats.counters.get("masks", 0.0) for o in runs["awrs"])
    speeds = {k: median_speed(v) for k, v in runs.items() if k != "genlm"}
    row = {
        "task": task.name,
        "awrs_checks_per_token": checks / max(awrs_tokens, 1),
        "awrs_masks_per_token": masks / max(awrs_tokens, 1),
        "masking_checks_per_token": vocab_size,
        "awrs_tokens_per_s": speeds["awrs"], "masked_tokens_per_s": speeds["masked"],
        "unconstrained_tokens_per_s": speeds["unconstrained"],
        "awrs_over_unconstrained": speeds["awrs"] / speeds["unconstrained"],
        "masked_over_unconstrained": speeds["masked"] / speeds["unconstrained"],
        "awrs_valid": f"{sum(task.valid(o[0].text) and o[0].finished for o in runs['awrs'])}/{len(runs['awrs'])}",
        "masked_valid": f"{sum(task.valid(o[0].text) and o[0].finished for o in runs['masked'])}/"
                        f"{len(runs['masked'])}",
        "awrs_texts": [o[0].text for o in runs["awrs"]],
        "genlm_checks_per_token": None, "genlm_tokens_per_s": None, "awrs_over_genlm": None, "genlm_runs": None,
    }
    if runs["genlm"]:
        peer = runs["genlm"]
        row["genlm_checks_per_token"] = sum(p["checks"] for p in peer) / max(sum(p["tokens"] for p in peer), 1)
        row["genlm_tokens_per_s"] = statistics.median(p["tokens"] / p["seconds"] for p in peer)
        row["awrs_over_genlm"] = speeds["awrs"] / row["genlm_tokens_per_s"]
        row["genlm_runs"] = peer
    return row


def _genlm_peer(lm) -> Callable[[Task, int], dict] | None:
    """genlm-control's AWRS on the same checkpoint, or None when it is not installed."""
    try:
        from genlm.backend.llm import AsyncTransformer
        from genlm.control import AWRS, EOS, BoolFSA, PromptedLLM
    except ImportError:
        return None
    backend = AsyncTransformer(lm.model.float(), lm.tokenizer)

    def peer(task: Task, seed: int) -> dict:
        llm = PromptedLLM(backend)
        llm.set_prompt_from_str(task.prompt)
        backend.clear_cache()
        backend.cache_kv(llm.prompt_ids)  # genlm's own prompt cache
        condition = BoolFSA.from_regex(task.spec).coerce(llm, f=b"".join)
        sampler = AWRS(llm, condition, seed=seed)
        checks = {"n": 0}
        accept = sampler._accept

        async def counted(context, token, verbosity=0):
            checks["n"] += 1
            return await accept(context, token, verbosity)

        sampler._accept = counted

        async def go():
            context, log_w = [], 0.0
            for _ in range(task.max_new_tokens):
                token, w, _ = await sampler.sample(context)
                log_w += float(w)
                context.append(token)
                if token is EOS or w == float("-inf"):
                    break
            return context, log_w

        torch.manual_seed(seed)
        start = time.perf_counter()
        context, log_w = asyncio.run(go())
        seconds = time.perf_counter() - start
        body = [t for t in context if t is not EOS]
        text = b"".join(body).decode("utf-8", "replace")
        return {"tokens": len(context), "checks": checks["n"], "seconds": seconds, "text": text,
                "log_weight": log_w, "valid": task.valid(text)}

    return peer


def _plot(rows: list[dict], figure) -> None:
    ax = figure.subplots()
    names = [r["task"] for r in rows]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["awrs_over_unconstrained"] for r in rows], 0.4, label="AWRS / unconstrained")
    ax.bar([i + 0.2 for i in x], [r["masked_over_unconstrained"] for r in rows], 0.4, label="Masked / unconstrained")
    for i, r in zip(x, rows):
        ax.annotate(f"{r['awrs_checks_per_token']:.1f} checks/tok", (i - 0.2, r["awrs_over_unconstrained"]),
                    ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="gray", lw=1, ls=":")
    ax.set_xticks(list(x), names, rotation=20, fontsize=8)
    ax.set_ylabel("tokens/s relative to unconstrained")
    ax.set_title("AWRS vs masking on the default model", fontsize=10)
    ax.legend(fontsize=8)
