"""Suite ``entropy``: does Mirostat control the surprise of what it writes?

On the default model (or ``--model``), 4 prompts x 128 new tokens per run, seed 0. For each target tau in
{2, 3, 4, 5} bits, Mirostat v1 and v2 (eta 0.5, m 100, surprise measured on the model's distribution); top-p 0.9
and top-H 0.4 as uncontrolled references (they have no tau). Reported per run: the observed mean surprise in bits,
-log2 p(x | prefix) under the model averaged over every generated token, and its gap to tau.

Run: ``decoding bench entropy [--model PATH] [--quick]``.
"""

from __future__ import annotations

import math
from functools import partial

from decoding.bench import BenchConfig, Report, load_model, progress_bar

DESCRIPTION = (
    "Observed mean surprise (bits per token under the model) of Mirostat v1/v2 against its target tau, beside "
    "top-p 0.9 and top-H 0.4; 4 prompts x 128 tokens per run, seed 0."
)

TAUS = (2.0, 3.0, 4.0, 5.0)
ETA = 0.5
NEW_TOKENS = 128
SEED = 0
PROMPTS = (
    "Once upon a time, in a village at the edge of a vast forest,",
    "The most important scientific discovery of the twentieth century was",
    "Here is my honest review of the new coffee shop on Main Street:",
    "In the year 2150, the first city on Mars",
)
REFERENCES = ("top_p=0.9", "top_h=0.4")


def run(config: BenchConfig) -> Report:
    import decoding as dc
    from decoding.cli import parse_sampler

    lm = load_model(config)
    taus = (3.0,) if config.quick else TAUS
    new_tokens = 8 if config.quick else NEW_TOKENS
    runs = [(f"mirostat v{v}", tau, dc.Mirostat(tau=tau, eta=ETA, version=v)) for v in (1, 2) for tau in taus]
    runs += [(spec, None, parse_sampler(spec)) for spec in REFERENCES]

    rows = []
    for name, tau, sampler in progress_bar(runs, desc="entropy", disable=not config.progress):
        out = dc.generate(lm, list(PROMPTS), sampler, max_new_tokens=new_tokens, seed=SEED)
        tokens = sum(len(s.token_ids) for s in out)
        surprise = -sum(s.logprob for s in out) / tokens / math.log(2)
        rows.append({"sampler": name, "tau": tau, "mean_surprise_bits": round(surprise, 4),
                     "gap_bits": None if tau is None else round(surprise - tau, 4), "tokens": tokens,
                     "tokens_per_second": round(out.stats.tokens_per_second, 2)})

    headers = ["sampler", "tau", "observed surprise (bits)", "gap (bits)", "tokens"]
    table = [[r["sampler"], "-" if r["tau"] is None else f"{r['tau']:.0f}", f"{r['mean_surprise_bits']:.2f}",
              "-" if r["gap_bits"] is None else f"{r['gap_bits']:+.2f}", str(r["tokens"])] for r in rows]
    settings = {
        "model": config.model or "default: Gemma 3 270M (decoding.default_model)", "prompts": list(PROMPTS),
        "new_tokens_per_prompt": new_tokens, "seed": SEED, "taus": list(taus), "eta": ETA, "m": 100,
        "surprise": "-log2 p(token | prefix) under the unmodified model, mean over all generated tokens",
        "references": list(REFERENCES),
    }
    return Report("entropy", DESCRIPTION, settings, rows, headers, table, plot=partial(_plot, rows))


def _plot(rows: list[dict], figure) -> None:
    ax = figure.subplots()
    taus = sorted({r["tau"] for r in rows if r["tau"] is not None})
    ax.plot(taus, taus, "k--", lw=1, label="target (surprise = tau)")
    for version, marker in (("mirostat v1", "o-"), ("mirostat v2", "s-")):
        points = [(r["tau"], r["mean_surprise_bits"]) for r in rows if r["sampler"] == version]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker, label=version)
    for r, style in zip((r for r in rows if r["tau"] is None), (":", "-.")):
        ax.axhline(r["mean_surprise_bits"], ls=style, color="gray", label=f"{r['sampler']} (no target)")
    ax.set_xlabel("target surprise tau (bits)")
    ax.set_ylabel("observed mean surprise (bits / token)")
    ax.set_title("Mirostat surprise control on the default model", fontsize=10)
    ax.legend(fontsize=8)
