"""``decoding bench constrained-speculative``: exact speculative decoding under a constraint, against Masked decoding
and against llguidance's fast-forward tokens.

Tasks on the default model, batch 1: JSON Schema extraction and generation (schemas with several required keys,
enums, nested objects and arrays of objects; compact JSON in the schema's key order) and grammar tasks (the
arithmetic and SQL Lark grammars of ``benchmarks/grammars``), at T=0 (``Masked(c, greedy=True)``) and T=1
(``Masked(c)``). Cases:

- ``Masked``: one token per target forward, the baseline;
- ``spec n-gram``: ``Speculative(NGramDraft(3), DynamicTree(16, 12, 3), sampler=Masked(...))`` (at T=1 a 6-node
  tree, see ``TREES``): the draft masked at every node;
- ``spec constraint``: the same with ``ConstraintDraft(NGramDraft(3))``: the constraint drafts where it leaves few
  tokens (keys, punctuation, enum values), the n-gram elsewhere;
- ``llguidance FF``: llguidance's mask for the model's token and its fast-forward tokens (``compute_ff_tokens``)
  appended without the model's verdict, fed in the next forward with it: the reference for what forcing gains.
  Its outputs are compared with greedy Masked decoding's: forcing the canonical tokenization changes the tokens
  (and can change the text) where the model would have split the bytes otherwise.

Figures: tokens per target forward after the prefill; tokens per second and its ratio to Masked's in the same run
(cases timed round robin per prompt, best of ``REPEATS``), by the wall clock and by this process's CPU time (on a
shared virtual machine the hypervisor's steal time slows the wall clock by whatever other guests do; the steal
share is reported); and at T=0 whether the output equals Masked's token for token (it must, for the exact cases).

Example:
    >>> from decoding.bench import BenchConfig, run_suite
    >>> run_suite("constrained-speculative", BenchConfig(quick=True), None)        # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.resources import files

import torch

import decoding as dc
from decoding.bench import BenchConfig, Report, load_model
from decoding.progress import progress_bar

DESCRIPTION = (
    "Exact constrained speculative decoding (dc.Speculative with a Masked(constraint) sampler, n-gram and "
    "constraint drafts) on JSON Schema and grammar tasks at T=0 and T=1, batch 1: tokens per target forward and "
    "wall-clock speed-up over Masked decoding in the same run, and llguidance's fast-forward tokens (forced, not "
    "verified) as the reference for what forcing gains, with its token differences from greedy Masked output."
)

MAX_NEW_TOKENS, QUICK_MAX_NEW_TOKENS = 96, 12
REPEATS = 2  # timed runs per case, rotated; the fastest is kept (the outputs are the same at a fixed seed)
TEMPERATURES = (0.0, 1.0)
SEED = 0
# Tree size per temperature: at T=0 the schema and n-gram drafts are often right for several tokens; at T=1 the
# target's own sampling rejects long drafts, and on a CPU a 16-node tree forward costs about two 1-token forwards
# (on the person/order/event tasks, one run: budget 16 gave 1.04x Masked's tokens/s at T=1, budget 6 1.30x; at T=0
# budget 16 gave 1.76x, budget 8 1.66x).
TREES = {0.0: dict(budget=16, max_depth=12, top_k=3), 1.0: dict(budget=6, max_depth=12, top_k=3)}
WARMUP_TOKENS = 8

PERSON = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}, "email": {"type": "string"},
    "city": {"type": "string"}, "role": {"enum": ["engineer", "designer", "manager", "analyst"]}},
    "required": ["name", "age", "email", "city", "role"], "additionalProperties": False}
ORDER = {"type": "object", "properties": {
    "order_id": {"type": "string"},
    "customer": {"type": "object", "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
                 "required": ["name", "email"], "additionalProperties": False},
    "items": {"type": "array", "items": {"type": "object", "properties": {
        "sku": {"type": "string"}, "quantity": {"type": "integer"}, "price": {"type": "number"}},
        "required": ["sku", "quantity", "price"], "additionalProperties": False}},
    "status": {"enum": ["pending", "shipped", "delivered", "cancelled"]}},
    "required": ["order_id", "customer", "items", "status"], "additionalProperties": False}
EVENT = {"type": "object", "properties": {
    "title": {"type": "string"}, "date": {"type": "string", "format": "date"},
    "location": {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                 "required": ["city", "country"], "additionalProperties": False},
    "speakers": {"type": "array", "items": {"type": "string"}},
    "kind": {"enum": ["conference", "workshop", "meetup"]}},
    "required": ["title", "date", "location", "speakers", "kind"], "additionalProperties": False}


@dataclass
class Task:
    name: str
    group: str  # "json" or "grammar"
    constraint: Callable[[], dc.Constraint]
    prompt: str
    llguidance: tuple[str, str]  # ("json", schema text) or ("lark", grammar text)


def _grammar(name: str) -> str:
    return (files("decoding.benchmarks") / "grammars" / name).read_text()


def tasks() -> list[Task]:
    person_text = ("Extract the employee as JSON.\nText: Priya Raman, 34, joined our Lisbon office as a senior "
                   "engineer. Write to her at priya.raman@example.com.\nJSON: ")
    order_text = ("Extract the order as JSON.\nText: Order B-5521 from Tom Becker (tom.becker@example.org): two "
                  "USB-C hubs (sku HB-220) at 34.5 each and one laptop stand (sku ST-090) at 49.0. It has been "
                  "shipped.\nJSON: ")
    event_text = ("Write a JSON record of a tech event with its title, date, location, speakers and kind.\nJSON: ")
    sql = _grammar("sql.lark")
    arithmetic = _grammar("arithmetic.lark")
    return [
        Task("person", "json", lambda: dc.JsonSchema(PERSON), person_text, ("json", json.dumps(PERSON))),
        Task("order", "json", lambda: dc.JsonSchema(ORDER), order_text, ("json", json.dumps(ORDER))),
        Task("event", "json", lambda: dc.JsonSchema(EVENT), event_text, ("json", json.dumps(EVENT))),
        Task("sql", "grammar", lambda: dc.Grammar(sql),
             "-- the names and ages of the users older than 30, oldest first\nSELECT", ("lark", sql)),
        Task("arithmetic", "grammar", lambda: dc.Grammar(arithmetic),
             "Twelve times the sum of three and four, as an arithmetic expression: ", ("lark", arithmetic)),
    ]


@dataclass
class Outcome:
    tokens: list[int]
    forwards: int  # target forwards after the prefill
    seconds: float  # wall
    cpu_seconds: float  # this process's CPU time (all its threads)
    steal_seconds: float | None  # CPU time the hypervisor gave to other guests meanwhile, all cores (Linux)


def _steal() -> float | None:
    """Seconds of steal time since boot, summed over cores (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def timed(run: Runner, prompt: str, max_new: int) -> Outcome:
    steal, cpu, start = _steal(), time.process_time(), time.perf_counter()
    tokens, forwards = run(prompt, max_new)
    seconds, cpu, after = time.perf_counter() - start, time.process_time() - cpu, _steal()
    return Outcome(tokens, forwards, seconds, cpu, None if steal is None or after is None else after - steal)


Runner = Callable[[str, int], tuple[list[int], int]]


def ours(lm, sampler) -> Runner:
    def run(text: str, max_new_tokens: int) -> tuple[list[int], int]:
        out = dc.generate(lm, text, sampler, max_new_tokens=max_new_tokens, seed=SEED)
        return list(out[0].token_ids), out.stats.forwards - 1

    return run


class FastForward:
    """llguidance's mask and fast-forward tokens on our model loop: each step draws the model's token under the
    mask (argmax at T=0, a draw at T=1), then appends the tokens llguidance says are forced and feeds them all in
    one forward. Forced tokens are never judged by the model: that is the difference from ``ConstraintDraft``."""

    JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}

    def __init__(self, lm):
        import llguidance.hf
        import llguidance.torch

        self.lm = lm
        self.tokenizer = llguidance.hf.from_tokenizer(lm.tokenizer)
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, self.tokenizer.vocab_size)
        self.fill = llguidance.torch.fill_next_token_bitmask

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("llguidance") is not None

    def runner(self, spec: tuple[str, str], temperature: float) -> Runner:
        from llguidance import LLMatcher

        kind, text = spec
        grammar = (LLMatcher.grammar_from_json_schema(text, defaults=self.JSON_OPTIONS) if kind == "json"
                   else LLMatcher.grammar_from_lark(text))

        def run(prompt: str, max_new_tokens: int) -> tuple[list[int], int]:
            matcher = LLMatcher(self.tokenizer, grammar, log_level=0)
            batch = self.lm.start([self.lm.encode(prompt)])
            generator = torch.Generator().manual_seed(SEED)
            out, forwards = [], 0
            while len(out) < max_new_tokens:
                token = self._choose(matcher, batch.logprobs[0], temperature, generator)
                matcher.consume_token(token)
                out.append(token)
                if token in self.lm.eos_token_ids or matcher.is_stopped() or len(out) >= max_new_tokens:
                    break
                forced = matcher.compute_ff_tokens()[: max_new_tokens - len(out)]
                matcher.consume_tokens(forced)
                out += forced
                batch.step(torch.tensor([[token, *forced]]))
                forwards += 1
            return out, forwards

        return run

    def _choose(self, matcher, logprobs: torch.Tensor, temperature: float, generator: torch.Generator) -> int:
        self.fill(matcher, self.bitmask, 0)
        allowed = _unpack(self.bitmask[0], logprobs.shape[-1])
        kept = logprobs.float().cpu().masked_fill(~allowed, float("-inf"))
        if temperature == 0:
            return int(kept.argmax())
        return int(torch.multinomial((kept / temperature).softmax(-1), 1, generator=generator))


def _unpack(words: torch.Tensor, size: int) -> torch.Tensor:
    """A 32-bit-word token bitmask (llguidance's layout: token i is bit i % 32 of word i // 32) as bool [size]."""
    shifts = torch.arange(32, dtype=torch.int32)
    bits = ((words[:, None].to(torch.int32) >> shifts) & 1).bool().reshape(-1)
    out = torch.zeros(size, dtype=torch.bool)
    n = min(size, bits.numel())
    out[:n] = bits[:n]
    return out


def cases(lm, task: Task, temperature: float, ff: FastForward | None) -> dict[str, Runner]:
    constraint = task.constraint()
    masked = dc.Masked(constraint, greedy=temperature == 0)
    sampler = masked if temperature == 0 else dc.Temperature(temperature) | masked
    tree = dc.DynamicTree(**TREES[temperature])
    out = {"Masked": ours(lm, sampler),
           "spec n-gram": ours(lm, dc.Speculative(dc.NGramDraft(3), tree, sampler=sampler)),
           "spec constraint": ours(lm, dc.Speculative(dc.ConstraintDraft(dc.NGramDraft(3)), tree, sampler=sampler))}
    if ff is not None:
        out["llguidance FF"] = ff.runner(task.llguidance, temperature)
    return out


def measure(lm, all_tasks: list[Task], max_new: int, quick: bool, progress: bool,
            ff: FastForward | None) -> dict[tuple[float, str, str], Outcome]:
    """Every case of every task at every temperature, the cases of one (task, T) timed back to back in a rotated
    order after one untimed warm-up each, ``REPEATS`` times (once with ``quick``), the fastest run kept; keyed
    (temperature, task, case)."""
    table = {(t, task.name): (task, cases(lm, task, t, ff)) for t in TEMPERATURES for task in all_tasks}
    results: dict[tuple[float, str, str], Outcome] = {}
    repeats = 1 if quick else REPEATS
    total = sum(len(c) for _, c in table.values()) * repeats
    with progress_bar(total=total, desc="constrained-speculative", disable=not progress) as bar:
        for i, ((temperature, name), (task, row)) in enumerate(table.items()):
            names = list(row)
            for case in names if not quick else ():
                row[case](task.prompt, WARMUP_TOKENS)
            for r in range(repeats):
                shift = (i + r) % len(names)
                for case in names[shift:] + names[:shift]:
                    bar.set_postfix_str(f"{name}, T={temperature:g}, {case}", refresh=False)
                    outcome = timed(row[case], task.prompt, max_new)
                    best = results.get((temperature, name, case))
                    if best is None or outcome.seconds < best.seconds:
                        results[(temperature, name, case)] = outcome
                    bar.update()
    return results


def rows_of(lm, all_tasks: list[Task], results: dict[tuple[float, str, str], Outcome]) -> list[dict]:
    rows = []
    for (temperature, name, case), o in results.items():
        base = results[(temperature, name, "Masked")]
        row = {"task": name, "group": next(t.group for t in all_tasks if t.name == name), "T": temperature,
               "case": case, "new_tokens": len(o.tokens), "forwards": o.forwards,
               "tokens_per_forward": len(o.tokens) / max(o.forwards, 1), "seconds": round(o.seconds, 3),
               "cpu_seconds": round(o.cpu_seconds, 3),
               "steal_seconds": None if o.steal_seconds is None else round(o.steal_seconds, 2),
               "speedup_over_masked": _rate(len(o.tokens), o.seconds) / _rate(len(base.tokens), base.seconds),
               "text": lm.decode(o.tokens)}
        if temperature == 0:
            row["equals_masked_tokens"] = o.tokens == base.tokens
            row["equals_masked_text"] = lm.decode(o.tokens) == lm.decode(base.tokens)
        rows.append(row)
    return rows


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per (group, T, case): tokens per forward and speed-up over Masked, totals over the group's tasks."""
    out = []
    keys = dict.fromkeys((r["group"], r["T"], r["case"]) for r in rows)
    for group, temperature, case in keys:
        mine = [r for r in rows if (r["group"], r["T"], r["case"]) == (group, temperature, case)]
        base = [r for r in rows if (r["group"], r["T"], r["case"]) == (group, temperature, "Masked")]
        tokens, forwards = sum(r["new_tokens"] for r in mine), sum(r["forwards"] for r in mine)
        base_tpf = sum(r["new_tokens"] for r in base) / max(sum(r["forwards"] for r in base), 1)
        base_tokens = sum(r["new_tokens"] for r in base)
        seconds, base_seconds = sum(r["seconds"] for r in mine), sum(r["seconds"] for r in base)
        cpu, base_cpu = sum(r["cpu_seconds"] for r in mine), sum(r["cpu_seconds"] for r in base)
        steal = [r["steal_seconds"] for r in mine]
        row = {"summary": True, "group": group, "T": temperature, "case": case, "tasks": len(mine),
               "tokens_per_forward": tokens / max(forwards, 1),
               "tokens_per_forward_over_masked": (tokens / max(forwards, 1)) / base_tpf,
               "tokens_per_second": _rate(tokens, seconds), "seconds": round(seconds, 2),
               "speedup_over_masked": _rate(tokens, seconds) / _rate(base_tokens, base_seconds),
               "cpu_speedup_over_masked": _rate(tokens, cpu) / _rate(base_tokens, base_cpu),
               "steal_share": None if None in steal else round(sum(steal) / (seconds * (os.cpu_count() or 1)), 3)}
        if temperature == 0:
            row["equal_to_masked"] = f"{sum(r['equals_masked_tokens'] for r in mine)}/{len(mine)}"
            row["text_equal_to_masked"] = f"{sum(r['equals_masked_text'] for r in mine)}/{len(mine)}"
        out.append(row)
    return out


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else float("nan")


def run(config: BenchConfig) -> Report:
    load_at_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    lm = load_model(config)
    all_tasks = tasks()[:2] if config.quick else tasks()
    max_new = QUICK_MAX_NEW_TOKENS if config.quick else MAX_NEW_TOKENS
    ff = FastForward(lm) if FastForward.available() else None
    results = measure(lm, all_tasks, max_new, config.quick, config.progress, ff)
    rows = rows_of(lm, all_tasks, results)
    summary = summary_rows(rows)
    headers = ["group", "T", "case", "tasks", "tokens/forward", "x Masked (tok/fwd)", "tokens/s", "x Masked (wall)",
               "x Masked (CPU)", "steal", "= Masked tokens", "= Masked text"]
    table = [[s["group"], f"{s['T']:g}", s["case"], s["tasks"], f"{s['tokens_per_forward']:.2f}",
              f"{s['tokens_per_forward_over_masked']:.2f}", f"{s['tokens_per_second']:.2f}",
              f"{s['speedup_over_masked']:.2f}", f"{s['cpu_speedup_over_masked']:.2f}",
              "-" if s["steal_share"] is None else f"{s['steal_share']:.0%}",
              s.get("equal_to_masked", "-"), s.get("text_equal_to_masked", "-")] for s in summary]
    settings = {
        "model": config.model or "default: Gemma 3 270M (decoding.default_model)", "device": str(lm.device),
        "load_average_1min_at_start": load_at_start, "torch_threads": torch.get_num_threads(),
        "tasks": [{"name": t.name, "group": t.group, "prompt": t.prompt} for t in all_tasks],
        "schemas": {"person": PERSON, "order": ORDER, "event": EVENT}, "max_new_tokens": max_new, "seed": SEED,
        "batch_size": 1, "temperatures": list(TEMPERATURES),
        "trees": {f"T={t:g}": f"dc.DynamicTree({kw})" for t, kw in TREES.items()},
        "drafts": {"spec n-gram": "dc.NGramDraft(3)", "spec constraint": "dc.ConstraintDraft(dc.NGramDraft(3))"},
        "samplers": "T=0: dc.Masked(c, greedy=True); T=1: dc.Temperature(1.0) | dc.Masked(c)",
        "llguidance": (f"llguidance {_version('llguidance')}: LLMatcher mask + compute_ff_tokens, JSON options "
                       f"{FastForward.JSON_OPTIONS}" if ff is not None else "not installed (pip install llguidance)"),
        "timing": "per (task, T) the cases back to back in a rotated order, each after one untimed warm-up of "
                  f"{WARMUP_TOKENS} tokens, {REPEATS} timed runs each, rotated, the fastest kept (--quick: no "
                  "warm-up, one run)",
        "figures": "tokens/forward = generated tokens / target forwards after the prefill; x Masked (wall) = ratio "
                   "of tokens per wall second to Masked decoding's in the same run, over the group's tasks (the "
                   "outputs' lengths differ at T=1 and for llguidance FF); x Masked (CPU) = the same per second of "
                   "this process's CPU time, which steal (CPU time the hypervisor gave other guests, share of "
                   "all cores' wall time) does not inflate; = Masked: outputs equal to greedy Masked's (T=0)",
    }
    return Report("constrained-speculative", DESCRIPTION, settings, summary + rows, headers, table,
                  plot=partial(_plot, summary))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _plot(summary: list[dict], figure) -> None:
    groups = list(dict.fromkeys((s["group"], s["T"]) for s in summary))
    ax = figure.subplots(1, 1)
    names = list(dict.fromkeys(s["case"] for s in summary))
    width = 0.8 / len(names)
    for j, case in enumerate(names):
        values = [next((s["speedup_over_masked"] for s in summary if (s["group"], s["T"], s["case"]) == (*g, case)),
                       0.0) for g in groups]
        ax.bar([i + j * width for i in range(len(groups))], values, width, label=case)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], [f"{g} T={t:g}" for g, t in groups])
    ax.set_ylabel("tokens/s over Masked's (wall clock)")
    ax.legend()
    ax.set_title("Constrained speculative decoding (batch 1)")
