"""Suite ``sir``: sampling-importance-resampling of sequences on the default model, and DSIR corpus selection
against the ``data-selection`` package.

SIR (``dc.SIR``): four open-ended prompts, ``MAX_NEW_TOKENS`` tokens, seed 0. Proposals: top-p (0.9, 0.95) and
top-H (0.4); the target is the unmodified model at T=1 (``target=None``), so the weights undo the proposal's
truncation. Per proposal, n = ``N`` proposals per prompt in one batched run, resampled k = n times (systematic).
Reported, averaged over the prompts: ESS / n; the log marginal-likelihood estimate log (1/n) sum w (its exponential
estimates the share of p's mass on q's support, 1 for an untruncated proposal); the mean log p(x) of the raw
proposals, the weighted mean sum w~ log p(x) (what resampling targets, Rao-Blackwellised), the mean over the
resampled draws, and the gain of each over the raw mean (negative when the target is less peaked than the proposal:
undoing truncation puts back the tail); and the wall time of the n-proposal run over one plain sequence
(``dc.generate`` with the same proposal), the cost of n batched proposals.

DSIR (``dc.select``): see ``benchmarks/dsir.py`` (documents/s of the importance weighting against
``data-selection``'s ``HashedNgramDSIR`` on the same synthetic corpus in the same run, and the agreement of the
selected sets).

Run: ``decoding bench sir [--model PATH] [--repeats N] [--quick]``.
"""

from __future__ import annotations

import math
import statistics
import time
from functools import partial

import decoding as dc
from decoding.bench import BenchConfig, Report, load_model
from decoding.benchmarks import dsir
from decoding.progress import progress_bar

DESCRIPTION = (
    "SIR with top-p / top-H proposals and the unmodified model as the target (ESS / n, log marginal likelihood, "
    "model log-likelihood of the resampled draws against the raw proposals, cost of n batched proposals), and DSIR "
    "corpus selection (dc.select) against data-selection's HashedNgramDSIR: documents/s and agreement."
)
PROMPTS = (
    "Once upon a time, in a small village by the sea,",
    "The three most important things to know about volcanoes are",
    "Dear hiring manager, I am writing to apply for",
    "In the year 2150, cities will",
)
MAX_NEW_TOKENS, QUICK_MAX_NEW_TOKENS = 32, 8
N, QUICK_N = 16, 4
SEED = 0


def proposals():
    return {"top-p 0.9": dc.TopP(0.9), "top-p 0.95": dc.TopP(0.95), "top-H 0.4": dc.TopH(0.4)}


def sir_rows(lm, quick: bool, repeats: int, progress: bool) -> tuple[list[dict], dict]:
    n = QUICK_N if quick else N
    tokens = QUICK_MAX_NEW_TOKENS if quick else MAX_NEW_TOKENS
    prompts = PROMPTS[:2] if quick else PROMPTS
    dc.generate(lm, prompts[0], dc.SIR(dc.TopP(0.9), n=2), max_new_tokens=2)  # warm-up, untimed
    rows = []
    for name, proposal in progress_bar(proposals().items(), desc="sir", disable=not progress):
        sir = dc.SIR(proposal, n=n, k=n, resampling="systematic")
        sir_s, one_s, per_prompt = [], [], []
        for r in range(repeats):  # the same seed each repeat: the timings vary, the draws do not
            start = time.perf_counter()
            out = dc.generate(lm, list(prompts), sir, max_new_tokens=tokens, seed=SEED)
            sir_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            dc.generate(lm, list(prompts), proposal, max_new_tokens=tokens, seed=SEED)
            one_s.append(time.perf_counter() - start)
            if r == 0:
                per_prompt = [_prompt_figures(g, n) for g in out]
        rows.append(_row(name, repr(proposal), per_prompt, statistics.median(sir_s), statistics.median(one_s)))
    settings = {"prompts": list(prompts), "max_new_tokens": tokens, "n": n, "k": n, "resampling": "systematic",
                "target": "the unmodified model at T=1 (target=None)", "seed": SEED, "repeats": repeats,
                "timing": "median over repeats of one dc.generate call over all prompts (SIR: n proposals per "
                          "prompt in one batch; one sample: the proposal sampler alone)"}
    return rows, settings


def _prompt_figures(g, n: int) -> dict:
    raw = [s.logprob for s in g.samples]
    weighted = sum(w * lp for w, lp in zip(g.weights, raw))
    return {"ess_fraction": g.ess / n, "log_ml": g.log_marginal_likelihood, "raw": statistics.mean(raw),
            "weighted": weighted, "resampled": statistics.mean(d.logprob for d in g.draws)}


def _row(name: str, proposal: str, per_prompt: list[dict], sir_s: float, one_s: float) -> dict:
    mean = {key: statistics.mean(p[key] for p in per_prompt) for key in per_prompt[0]}
    return {
        "kind": "sir", "proposal": name, "sampler": proposal,
        "ess_over_n": mean["ess_fraction"], "log_marginal_likelihood": mean["log_ml"],
        "p_mass_on_support": math.exp(mean["log_ml"]),
        "logp_raw": mean["raw"], "logp_weighted": mean["weighted"], "logp_resampled": mean["resampled"],
        "gain_weighted": mean["weighted"] - mean["raw"], "gain_resampled": mean["resampled"] - mean["raw"],
        "seconds_sir": sir_s, "seconds_one_sample": one_s, "sir_over_one_sample": sir_s / one_s,
    }


def run(config: BenchConfig) -> Report:
    lm = load_model(config)
    repeats = 1 if config.quick else (config.repeats or 3)
    rows, settings = sir_rows(lm, config.quick, repeats, config.progress)
    dsir_rows, dsir_settings = dsir.measure(config.quick, config.progress)
    settings = {"model": config.model or "default: Gemma 3 270M (decoding.default_model)", "sir": settings,
                "dsir": dsir_settings}
    headers = ["proposal", "ESS / n", "p mass on q's support", "log p raw", "log p weighted (gain)",
               "log p resampled (gain)", "SIR wall / one sample"]
    table = [[r["proposal"], f"{r['ess_over_n']:.2f}", f"{r['p_mass_on_support']:.3f}", f"{r['logp_raw']:.2f}",
              f"{r['logp_weighted']:.2f} ({r['gain_weighted']:+.2f})",
              f"{r['logp_resampled']:.2f} ({r['gain_resampled']:+.2f})", f"{r['sir_over_one_sample']:.2f}x"]
             for r in rows]
    table += dsir.table_rows(dsir_rows, len(headers))
    return Report("sir", DESCRIPTION, settings, rows + dsir_rows, headers, table, plot=partial(_plot, rows, dsir_rows))


def _plot(rows: list[dict], dsir_rows: list[dict], figure) -> None:
    left, right = figure.subplots(1, 2)
    names = [r["proposal"] for r in rows]
    left.bar(names, [r["ess_over_n"] for r in rows], label="ESS / n")
    left.bar(names, [r["p_mass_on_support"] for r in rows], alpha=0.5, label="p mass on q's support")
    left.set_ylim(0, 1)
    left.set_title("SIR toward the full model")
    left.legend()
    dsir.plot(right, dsir_rows)
