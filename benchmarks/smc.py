"""Suite ``smc``: what SMC with AWRS weights buys over locally constrained decoding, and what it costs.

On the default model (or ``--model``), tasks with a known answer under a constraint (a year, a date, a number,
a JSON record). Per task and seed (0..R-1; R = 8 unless --repeats), in one run: LCD (``Masked``, one particle:
the myopic baseline) and ``SMC(AWRS(c), particles=N)`` for N in {1, 4, 8, 16} (ESS threshold 0.5, stratified
resampling). Reported per N: wall time relative to N = 1, the mean of the per-step minimum ESS / N, the
log-probability under the model of the valid posterior draws (per output and per token), and the exact-match rate
against the known answer. SMC samples the global p(x | x satisfies c); it does not maximise p(x), so the
log-probability measures how far a sampler strays into text the model finds unlikely, not a score to maximise.

Run: ``decoding bench smc [--model PATH] [--repeats N] [--quick]``.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from functools import partial

import decoding as dc
from decoding.bench import BenchConfig, Report, load_model
from decoding.progress import progress_bar
from decoding.benchmarks.awrs import DATE, Task

DESCRIPTION = (
    "SMC(AWRS) with N = 1, 4, 8, 16 particles against locally constrained decoding (Masked, one particle) on "
    "constrained questions with known answers: wall time relative to N = 1, ESS, model log-probability of the valid "
    "outputs and exact match."
)
PARTICLES = (1, 4, 8, 16)


@dataclass
class Question(Task):
    """A constrained task with a known answer: the expected text (regex) or JSON value."""

    answer: object = None

    def matches(self, text: str) -> bool:
        if self.kind == "json":
            try:
                return json.loads(text) == self.answer
            except ValueError:
                return False
        return text.strip() == self.answer


TASKS = (
    Question("ww2 year", "Q: In what year did World War II end?\nA: It ended in", "regex",
             r" (1[0-9]{3}|20[0-9]{2})\.", 8, "1945."),
    Question("apollo date", "Q: On what date did Apollo 11 land on the Moon? Answer as YYYY-MM-DD.\nA: ", "regex",
             DATE, 14, "1969-07-20"),
    Question("arithmetic", "Q: What is 12 + 30?\nA: The answer is", "regex", r" [0-9]{1,3}\.", 8, "42."),
    Question("json person", "Ada Lovelace was 36 years old. As JSON:\n```json\n", "json",
             {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 150}},
              "required": ["name", "age"], "additionalProperties": False},
             40, {"name": "Ada Lovelace", "age": 36}),
)


def run(config: BenchConfig) -> Report:
    lm = load_model(config)
    seeds = range(1 if config.quick else (config.repeats or 8))
    particles = (1, 4) if config.quick else PARTICLES
    tasks = TASKS[1:3] if config.quick else TASKS
    results: dict[str, list[dict]] = {}
    dc.generate(lm, "x", dc.SMC(dc.AWRS(dc.Regex("[ab]")), particles=2), max_new_tokens=2)  # warm-up, untimed
    cases = [("LCD (Masked)", None)] + [(f"SMC N={n}", n) for n in particles]
    for task in progress_bar(tasks, desc="smc", disable=not config.progress):
        constraint = task.constraint()
        for seed in seeds:
            for name, n in cases:  # round robin over the cases, per seed
                sampler = dc.Masked(constraint) if n is None else dc.SMC(dc.AWRS(constraint), particles=n)
                start = time.perf_counter()
                out = dc.generate(lm, task.prompt, sampler, max_new_tokens=task.max_new_tokens, seed=seed)
                seconds = time.perf_counter() - start
                seq = out[0]
                ok = seq.finished and task.valid(seq.text)
                match = task.matches(seq.text)
                ess = [e / n for e in seq.ess] if n else []
                results.setdefault(name, []).append({
                    "task": task.name, "seed": seed, "seconds": seconds, "text": seq.text, "valid": ok,
                    "exact_match": ok and match, "logprob": seq.logprob,
                    "min_ess_fraction": min(ess) if ess else None, "resampled": len(getattr(seq, "resampled", [])),
                    "checks": out.stats.counters.get("constraint_checks", 0.0), "tokens": len(seq.token_ids),
                })
    rows = [_row(name, results[name], results.get("SMC N=1")) for name, _ in cases]
    headers = ["sampler", "wall / N=1", "min ESS / N", "valid", "mean logprob of valid", "logprob/token of valid",
               "exact match", "AWRS checks per output token (all particles)"]
    table = [[r["sampler"], f"{r['wall_over_n1']:.2f}x", "-" if r["min_ess_fraction"] is None
              else f"{r['min_ess_fraction']:.2f}", r["valid"], f"{r['mean_logprob_valid']:.2f}",
              f"{r['logprob_per_token_valid']:.3f}",
              f"{r['exact_match']:.2f}", "-" if r["checks_per_token"] is None else f"{r['checks_per_token']:.2f}"]
             for r in rows]
    settings = {
        "model": config.model or "default: Gemma 3 270M (decoding.default_model)",
        "tasks": [{"name": t.name, "prompt": t.prompt, "kind": t.kind, "spec": t.spec,
                   "answer": t.answer, "max_new_tokens": t.max_new_tokens}
                  for t in tasks],
        "seeds": list(seeds), "particles": list(particles), "ess_threshold": 0.5, "resampling": "stratified",
        "estimator": "auto", "wall": "summed over tasks and seeds, relative to SMC N=1",
        "quality": "mean over valid posterior draws of log p(text | prompt) under the unmodified model",
    }
    return Report("smc", DESCRIPTION, settings, rows, headers, table, plot=partial(_plot, rows))


def _row(name: str, runs: list[dict], n1: list[dict] | None) -> dict:
    valid = [r for r in runs if r["valid"]]
    seconds = sum(r["seconds"] for r in runs)
    base = sum(r["seconds"] for r in n1) if n1 else seconds
    ess = [r["min_ess_fraction"] for r in runs if r["min_ess_fraction"] is not None]
    tokens = sum(r["tokens"] for r in runs)
    return {
        "sampler": name, "seconds": seconds, "wall_over_n1": seconds / base,
        "min_ess_fraction": statistics.mean(ess) if ess else None,
        "valid": f"{len(valid)}/{len(runs)}",
        "mean_logprob_valid": statistics.mean(r["logprob"] for r in valid) if valid else float("nan"),
        "logprob_per_token_valid": sum(r["logprob"] for r in valid) / max(sum(r["tokens"] for r in valid), 1),
        "exact_match": sum(r["exact_match"] for r in runs) / len(runs),
        # the work of all N particles per token of the posterior draws
        "checks_per_token": None if name.startswith("LCD") else sum(r["checks"] for r in runs) / max(tokens, 1),
        "runs": runs,
    }


def _plot(rows: list[dict], figure) -> None:
    left, right = figure.subplots(1, 2)
    names = [r["sampler"] for r in rows]
    left.bar(names, [r["mean_logprob_valid"] for r in rows], color="tab:blue")
    left.set_ylabel("mean log p(valid output) under the model")
    left.tick_params(axis="x", labelrotation=30, labelsize=7)
    right.bar(names, [r["wall_over_n1"] for r in rows], color="tab:orange")
    right.set_ylabel("wall time / SMC N=1")
    right.tick_params(axis="x", labelrotation=30, labelsize=7)
    figure.suptitle("SMC(AWRS) vs locally constrained decoding", fontsize=10)
