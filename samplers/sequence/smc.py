"""Sequential Monte Carlo over sequences: N weighted particles per prompt, resampled when their weights degenerate.

P. Del Moral, A. Doucet, A. Jasra, "Sequential Monte Carlo samplers", JRSS B 2006; for constrained generation
with AWRS weights, Lipkin et al., COLM 2025 (AWRS-SMC), and Loula et al., "Syntactic and semantic control of
large language models via sequential Monte Carlo", ICLR 2025.

A token sampler that reports log importance weights (``dc.AWRS``: an unbiased estimate of the allowed mass;
``dc.Masked``: its exact value) makes each particle's running weight w = prod_t Z_t, and the weighted particle set
targets the global constrained distribution p(x | x satisfies c) rather than the myopic product of local
renormalisations that locally constrained decoding (one particle) samples.

Each step every live particle takes one token-sampler step (the N particles of a prompt are always in one batch of
the LanguageModel; under ``max_batch_rows`` prompts join the batch N rows at a time as others end). Then, per
prompt, ESS = 1 / sum(w~^2) over its N particles (finished ones included, with the weights they finished with); if
ESS < ess_threshold * N the prompt's particles are resampled (ancestor indices from ``kernels.resampling``; the KV
cache, sampler state, tokens and weights follow the ancestors; each particle keeps its own random stream so copies
diverge) and every weight is set to the average, logsumexp(log w) - log N. With that reset, the log
marginal-likelihood estimate is logsumexp(final log w) - log N, unbiased for
Z = sum over accepted sequences of p(x) (on the exponential scale).

``out[i]`` is a posterior draw: one particle chosen with probability proportional to its final weight, with
``log_weight`` = the log marginal-likelihood estimate (so the draw is properly weighted for the unnormalised target,
e.g. for SIR over SMC runs). ``out[i].particles``, ``.weights`` (normalised), ``.ess`` (after each of the prompt's
steps, before any resampling), ``.resampled`` (its steps that resampled, 1-based) and ``.log_marginal_likelihood``
give the weighted set; ``out[i].counters`` sums the work of all N particles. A prompt whose particles all die ends
with ``finished=False``, a reason, and -inf weights; the other prompts finish.

Example:
    >>> smc = dc.SMC(dc.AWRS(dc.Regex(r"[0-9]{3}-[0-9]{4}")), particles=8)
    >>> out = dc.generate(lm, "Call 555-", smc, max_new_tokens=8)                 # doctest: +SKIP
    >>> out[0].text, out[0].weights, out[0].log_marginal_likelihood               # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from decoding.decode import DecodeTask, Decoder, Generation, SequenceSampler, replicated, sum_counters
from decoding.kernels.random import RowStreams
from decoding.kernels.resampling import check_scheme, ess, normalised, resample
from decoding.model import LanguageModel
from decoding.samplers.base import TokenSampler, check_int

_RESAMPLING_STREAM = 0x5EED_5A3C  # the prompts' resampling streams are keyed apart from the particles'


@dataclass
class SMCGeneration(Generation):
    """A posterior draw (the Generation fields) and the weighted particle set it was drawn from."""

    particles: list[Generation] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # normalised final weights of ``particles``
    ess: list[float] = field(default_factory=list)  # effective sample size after each step
    resampled: list[int] = field(default_factory=list)  # steps (1-based) after which the particles were resampled
    log_marginal_likelihood: float = 0.0


class SMC(SequenceSampler):
    """Sequential Monte Carlo with a token sampler as the proposal and its weights as incremental weights.

    Args:
        token_sampler: e.g. ``dc.AWRS(constraint)``, ``dc.Masked(constraint)``, ``dc.TopP(0.9) | dc.AWRS(c)``.
        particles: N >= 1 particles per prompt.
        ess_threshold: resample when ESS < ess_threshold * N; in [0, 1] (0: never, 1: whenever weights differ).
        resampling: "stratified" (default), "systematic", "multinomial" or "residual".

    Example:
        >>> smc = SMC(dc.AWRS(dc.Regex(r"(yes|no)")), particles=4, ess_threshold=0.5)
    """

    def __init__(self, token_sampler: TokenSampler, particles: int = 8, ess_threshold: float = 0.5,
                 resampling: str = "stratified"):
        if not isinstance(token_sampler, TokenSampler):
            raise TypeError(f"token_sampler: expected a token sampler such as dc.AWRS(constraint), "
                            f"got {type(token_sampler).__name__}")
        check_int("particles", particles, 1)
        if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, (int, float)) \
                or not 0 <= ess_threshold <= 1:
            raise ValueError(f"ess_threshold must be in [0, 1] (a fraction of the particles), got {ess_threshold!r}")
        self.token_sampler, self.particles = token_sampler, particles
        self.ess_threshold, self.resampling = float(ess_threshold), check_scheme(resampling)

    schedules_rows = True  # replicated() admits a prompt's particles together under task.max_batch_rows

    def rows_per_prompt(self) -> int:
        return self.particles

    def run(self, lm: LanguageModel, task: DecodeTask) -> list[SMCGeneration]:
        b, n = len(task.prompts), self.particles
        decoder = replicated(lm, task, self.token_sampler, n)
        groups = task.streams(tag=_RESAMPLING_STREAM)
        history: list[tuple[torch.Tensor, torch.Tensor]] = []  # per step: the prompts that took it, their ESS
        resampled: list[list[int]] = [[] for _ in range(b)]
        steps = torch.zeros(b, dtype=torch.long)  # each prompt's own steps (from its admission to the batch)
        while not decoder.done:
            decoder.admit()
            ran = torch.unique(decoder.rows.live // n)  # the prompts taking this step
            decoder.step()
            log_w = decoder.rows.log_weight.view(b, n)[ran]
            sizes = ess(log_w)
            history.append((ran, sizes))
            steps[ran.cpu()] += 1
            running = (decoder.rows.reason.view(b, n)[ran] == 0).any(-1)
            need = running & (sizes < self.ess_threshold * n) & torch.isfinite(log_w).any(-1)
            if bool(need.any()):
                picked = ran[need]
                self._resample(decoder, picked, groups)
                for g in picked.tolist():
                    resampled[g].append(int(steps[g]))
        return self._results(decoder.results(), decoder.rows.log_weight.view(b, n), history, resampled, groups)

    def _resample(self, decoder: Decoder, picked: torch.Tensor, groups: RowStreams) -> None:
        b, n = decoder.rows.log_weight.numel() // self.particles, self.particles
        log_w = decoder.rows.log_weight.view(b, n)[picked]
        u = groups.uniform(n, rows=picked.cpu().numpy(), device=log_w.device)
        ancestors = torch.arange(b * n, device=log_w.device).view(b, n)
        ancestors[picked] = resample(log_w, u, self.resampling) + (picked * n)[:, None]
        mean = log_w.logsumexp(-1, keepdim=True) - math.log(n)
        decoder.resample(ancestors.view(-1))
        decoder.rows.log_weight.view(b, n)[picked] = mean.expand(-1, n)

    def _results(self, particles: list[Generation], log_w: torch.Tensor,
                 history: list[tuple[torch.Tensor, torch.Tensor]], resampled: list[list[int]],
                 groups: RowStreams) -> list[SMCGeneration]:
        n = self.particles
        log_ml, weights = normalised(log_w)
        log_ml = log_ml.tolist()
        alive = torch.isfinite(log_w).any(-1)
        u = groups.uniform(1, device=log_w.device)
        pick = resample(torch.where(alive[:, None], log_w, 0.0), u, "multinomial")[:, 0]  # one draw by weight
        pick = torch.where(alive, pick, 0).tolist()
        sizes = _per_prompt(history, len(log_ml))
        out = []
        for g, (chosen, ok) in enumerate(zip(pick, alive.tolist())):  # once per prompt, at the end
            own = particles[g * n : (g + 1) * n]
            draw = own[chosen]
            reason = draw.reason if ok else f"dead end: all {n} particles died (every weight is zero)"
            out.append(SMCGeneration(
                draw.text, draw.token_ids, draw.logprob, log_ml[g], draw.finished and ok, reason,
                sum_counters(own),
                particles=own, weights=weights[g].tolist(), ess=sizes[g], resampled=resampled[g],
                log_marginal_likelihood=log_ml[g],
            ))
        return out

    def __repr__(self) -> str:
        return (f"SMC({self.token_sampler!r}, particles={self.particles}, ess_threshold={self.ess_threshold}, "
                f"resampling={self.resampling!r})")


def _per_prompt(history: list[tuple[torch.Tensor, torch.Tensor]], b: int) -> list[list[float]]:
    """Each prompt's ESS after each of its steps, from the steps' (prompts that took it, their ESS)."""
    if not history:
        return [[] for _ in range(b)]
    prompts = torch.cat([p for p, _ in history]).cpu()
    values = torch.cat([v for _, v in history]).cpu()
    order = torch.argsort(prompts, stable=True)  # by prompt, in step order within each
    return [v.tolist() for v in values[order].split(torch.bincount(prompts, minlength=b).tolist())]
