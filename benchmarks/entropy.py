"""Suite ``entropy``: does Mirostat control the surprise of what it writes?

On the default model (or ``--model``), 4 prompts x 128 new tokens per run, seed 0. For each target tau in
{2, 3, 4, 5} bits, Mirostat v1 and v2 (eta 0.5, m 100) on the model itself (T = 1) and on the model at temperature
1.5 (``Temperature(1.5) | Mirostat(...)``); top-p 0.9 and top-H 0.4 as uncontrolled references (no tau).

Reported per run: the observed mean surprise in bits, -log2 p_T(x | prefix) averaged over every generated token,
where p_T is the distribution Mirostat receives (the model at temperature T; rescored by one forward pass per
sequence), its gap to tau, and the surprise under the unmodified model.

Mirostat only truncates, so it cannot push the surprise above the untruncated sampling rate of the distribution it
receives: on Gemma 3 270M at T = 1 that rate is about 3.7-3.9 bits on these prompts, so tau = 4, 5 saturate
there; at T = 1.5 the rate is higher and tau up to 5 is reachable.

Run: ``decoding bench entropy [--model PATH] [--quick]``.
"""

from __future__ import annotations

import math
from functools import partial

import torch

import decoding as dc
from decoding.bench import BenchConfig, Report, load_model
from decoding.progress import progress_bar
from decoding.sampler_spec import parse_sampler

DESCRIPTION = (
    "Observed mean surprise (bits per token, on the distribution Mirostat receives: the model at T = 1 or 1.5) of "
    "Mirostat v1/v2 against its target tau, beside top-p 0.9 and top-H 0.4; 4 prompts x 128 tokens per run, seed 0."
)

TAUS = (2.0, 3.0, 4.0, 5.0)
TEMPERATURES = (1.0, 1.5)
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
    lm = load_model(config)
    taus = (3.0,) if config.quick else TAUS
    new_tokens = 8 if config.quick else NEW_TOKENS
    runs = [(f"mirostat v{v}", t, tau, dc.Temperature(t) | dc.Mirostat(tau=tau, eta=ETA, version=v))
            for t in TEMPERATURES for v in (1, 2) for tau in taus]
    runs += [(spec, 1.0, None, parse_sampler(spec)) for spec in REFERENCES]

    rows = []
    for name, temperature, tau, sampler in progress_bar(runs, desc="entropy", disable=not config.progress):
        out = dc.generate(lm, list(PROMPTS), sampler, max_new_tokens=new_tokens, seed=SEED)
        tokens = sum(len(s.token_ids) for s in out)
        surprise = surprise_bits(lm, PROMPTS, [s.token_ids for s in out], temperature)
        model_surprise = -sum(s.logprob for s in out) / tokens / math.log(2)
        rows.append({"sampler": name, "temperature": temperature, "tau": tau,
                     "mean_surprise_bits": round(surprise, 4),
                     "gap_bits": None if tau is None else round(surprise - tau, 4),
                     "model_surprise_bits": round(model_surprise, 4), "tokens": tokens,
                     "tokens_per_second": round(out.stats.tokens_per_second, 2)})

    headers = ["sampler", "T", "tau", "observed surprise (bits)", "gap (bits)", "under the model (bits)", "tokens"]
    table = [[r["sampler"], f"{r['temperature']:g}", "-" if r["tau"] is None else f"{r['tau']:.0f}",
              f"{r['mean_surprise_bits']:.2f}", "-" if r["gap_bits"] is None else f"{r['gap_bits']:+.2f}",
              f"{r['model_surprise_bits']:.2f}", str(r["tokens"])] for r in rows]
    settings = {
        "model": config.model or "default: Gemma 3 270M (decoding.default_model)", "prompts": list(PROMPTS),
        "new_tokens_per_prompt": new_tokens, "seed": SEED, "taus": list(taus), "temperatures": list(TEMPERATURES),
        "eta": ETA, "m": 100, "mirostat_surprise": "reference (on the distribution Mirostat receives)",
        "observed_surprise": "-log2 p_T(token | prefix), p_T the model at the run's temperature, mean over all "
                             "generated tokens (rescored with one forward pass per sequence)",
        "references": list(REFERENCES),
    }
    return Report("entropy", DESCRIPTION, settings, rows, headers, table, plot=partial(_plot, rows))


def surprise_bits(lm, prompts, generated: list[list[int]], temperature: float) -> float:
    """Mean -log2 p_T(token | prefix) over all generated tokens, p_T = softmax(logits / temperature)."""
    total, count = 0.0, 0
    for prompt, ids in zip(prompts, generated):  # one forward per sequence, after decoding
        context = lm.encode(prompt)
        with torch.no_grad():
            logits = lm.model(torch.tensor([context + ids], device=lm.device)).logits[0, len(context) - 1 : -1]
        logprobs = torch.log_softmax(logits.float() / temperature, -1)
        total -= float(logprobs.gather(-1, torch.tensor(ids, device=logprobs.device)[:, None]).sum())
        count += len(ids)
    return total / count / math.log(2)


def _plot(rows: list[dict], figure) -> None:
    ax = figure.subplots()
    taus = sorted({r["tau"] for r in rows if r["tau"] is not None})
    ax.plot(taus, taus, "k--", lw=1, label="target (surprise = tau)")
    for (version, t), marker in zip([(v, t) for t in TEMPERATURES for v in ("mirostat v1", "mirostat v2")],
                                    ("o-", "s-", "o:", "s:")):
        points = [(r["tau"], r["mean_surprise_bits"]) for r in rows if r["sampler"] == version and r["temperature"] == t]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker, label=f"{version}, T = {t:g}")
    for r, style in zip((r for r in rows if r["tau"] is None), (":", "-.")):
        ax.axhline(r["mean_surprise_bits"], ls=style, color="gray", label=f"{r['sampler']} (no target)")
    ax.set_xlabel("target surprise tau (bits)")
    ax.set_ylabel("observed mean surprise on p_T (bits / token)")
    ax.set_title("Mirostat surprise control on the default model", fontsize=10)
    ax.legend(fontsize=8)
