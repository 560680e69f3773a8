"""Sampling-importance-resampling over sequences: n proposals per prompt, weighted by p / q, k of them resampled.

D. B. Rubin, "Using the SIR algorithm to simulate posterior distributions", Bayesian Statistics 3 (1988);
A. F. M. Smith and A. E. Gelfand, "Bayesian statistics without tears: a sampling-resampling perspective", The
American Statistician (1992). Without replacement, the k draws are the top k of log w + Gumbel noise
(W. Kool, H. van Hoof, M. Welling, "Stochastic beams and where to find them", ICML 2019).

For each prompt, one batched run of the proposal sampler draws x_1 .. x_n ~ q (a prompt's n proposals are always
in one batch; under ``max_batch_rows`` prompts join the batch n rows at a time as others end), where
q(x) = prod_t q_t(x_t) is the exact law the sampler drew each token from (its truncation and temperature included;
``Decoder.logq``).
The target p is, up to a constant:

- ``None``: the unmodified model, p(x) = prod_t p_t(x_t) (the run's ``logprob``; no extra forward);
- a token sampler of stateless transforms (``dc.Temperature(0.5)``): the model's law under those transforms,
  rescored in one forward per chunk (``LanguageModel.score``);
- another ``LanguageModel`` sharing the tokenizer: that model's probability, rescored;
- a constraint (``dc.Regex``, ``dc.JsonSchema``...): p(x) * 1[x in the language] (a 0/-inf potential on the text,
  EOS excluded, on top of the unmodified model);
- a function of the text returning a float r(x): p(x) * exp(r(x)) (a reward-tilted model; scale r yourself).

Log weights log w_i = log p(x_i) - log q(x_i); normalised weights w~ = softmax(log w); ESS = 1 / sum w~^2; the
log marginal-likelihood estimate log (1/n) sum w_i (unbiased for Z_p / Z_q on the exponential scale). Resampling
draws k indices with replacement (``resampling``: multinomial, stratified, systematic or residual, as SMC) or, with
``replace=False``, k distinct indices by the top k of log w + Gumbel; proposals of weight 0 are never drawn.

Sequences cut at ``max_new_tokens`` are weighted as prefixes: p and q are then both laws of the first
``max_new_tokens`` tokens, and SIR targets p's law of them.

``out[i]`` is the first resampled draw (with ``log_weight`` = the log marginal-likelihood estimate, so it is
properly weighted for the unnormalised target, as SMC's draws are); ``out[i].draws`` all k, ``.samples`` the n
proposals, ``.log_weights``, ``.weights`` (normalised), ``.ess`` and ``.log_marginal_likelihood`` the weighted set.

Example:
    >>> sir = dc.SIR(dc.TopP(0.9), n=16, k=1)            # undo top-p's truncation, approximately
    >>> out = dc.generate(lm, "Once upon a time", sir, max_new_tokens=32)    # doctest: +SKIP
    >>> out[0].text, out[0].ess                                               # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from decoding.constraints.base import Constraint, TokenConstraint
from decoding.decode import DecodeTask, Generation, SequenceSampler, replicated, sum_counters
from decoding.kernels.random import RowStreams
from decoding.kernels.resampling import check_scheme, ess, normalised, resample
from decoding.model import LanguageModel, Usage
from decoding.samplers.base import SamplerChain, TokenSampler, check_int, stateless_law

_RESAMPLING_STREAM = 0x51_2E5A  # the prompts' resampling streams are keyed apart from the proposals'
Target = None | TokenSampler | LanguageModel | Constraint | TokenConstraint | Callable[[str], float]


@dataclass
class SIRGeneration(Generation):
    """The first resampled draw (the Generation fields) and the weighted proposals it was drawn from."""

    draws: list[Generation] = field(default_factory=list)  # the k resampled sequences
    samples: list[Generation] = field(default_factory=list)  # the n proposals
    log_weights: list[float] = field(default_factory=list)  # log p(x_i) - log q(x_i) (p up to a constant)
    weights: list[float] = field(default_factory=list)  # normalised
    ess: float = 0.0
    log_marginal_likelihood: float = 0.0


class SIR(SequenceSampler):
    """Sampling-importance-resampling: ``n`` proposals from ``proposal``, weighted toward ``target``, ``k`` kept.

    Args:
        proposal: a token sampler whose law of each token is exact (``dc.TopP(0.9)``, ``dc.TopH(0.4)``,
            ``dc.Temperature(0.7) | dc.TopK(50)``, ``dc.Mirostat(...)``, ``dc.Masked(c)``). AWRS is refused: its
            law's normaliser is only estimated.
        n: proposals per prompt (>= 1).
        target: None, a token sampler of stateless transforms, a LanguageModel, a constraint or a function of the
            text (see the module docstring).
        k: draws kept per prompt (>= 1; <= n without replacement).
        replace: draw with replacement (``resampling``) or k distinct proposals (Gumbel top-k).
        resampling: "multinomial" (default), "stratified", "systematic" or "residual" (with replacement).

    Example:
        >>> SIR(dc.TopP(0.9), n=8, k=2, replace=False)
        SIR(proposal=TopP(p=0.9), n=8, target=None, k=2, replace=False, resampling='multinomial')
    """

    def __init__(self, proposal: TokenSampler, n: int = 16, target: Target = None, k: int = 1, replace: bool = True,
                 resampling: str = "multinomial"):
        self.proposal = _check_proposal(proposal)
        self.n = check_int("n", n, 1, " (proposals per prompt)")
        self.k = check_int("k", k, 1, " (draws kept per prompt)")
        if not isinstance(replace, bool):
            raise TypeError(f"replace: expected a bool, got {type(replace).__name__}")
        if not replace and k > n:
            raise ValueError(f"k={k} distinct draws from n={n} proposals: without replacement k must be <= n; "
                             "raise n or pass replace=True")
        self.target, self._target_law = target, _check_target(target)
        self.replace, self.resampling = replace, check_scheme(resampling)

    schedules_rows = True  # replicated() admits a prompt's proposals together under task.max_batch_rows

    def rows_per_prompt(self) -> int:
        return self.n

    def run(self, lm: LanguageModel, task: DecodeTask) -> list[SIRGeneration]:
        score = _scorer(self.target, self._target_law, lm, task.usage)  # binds and checks the target before any model work
        b, n = len(task.prompts), self.n
        prompts = [p for p in task.prompts for _ in range(n)]
        decoder = replicated(lm, task, self.proposal, n)
        while not decoder.done:
            decoder.step()
        samples = decoder.results()
        log_p = score(prompts, samples, decoder.rows.logprob.cpu())
        log_w = log_p - decoder.rows.logq.cpu()
        dead = torch.isneginf(decoder.rows.log_weight.cpu()) | torch.isnan(log_w)  # died on the way: weight 0
        log_w = torch.where(dead, -math.inf, log_w).view(b, n)
        groups = task.streams(tag=_RESAMPLING_STREAM)
        return self._results(samples, log_w, self._draw(log_w, groups))

    def _draw(self, log_w: torch.Tensor, groups: RowStreams) -> torch.Tensor:
        """[B, k] indices of the kept proposals, -1 where fewer proposals have a positive weight (no replacement)."""
        alive = torch.isfinite(log_w).any(-1, keepdim=True)
        safe = torch.where(alive, log_w, 0.0)
        if self.replace:
            picked = resample(safe, groups.uniform(self.k, device=log_w.device), self.resampling)
            return torch.where(alive, picked, -1)
        gumbel = -torch.log(-torch.log(groups.uniform(self.n, device=log_w.device)))
        keys, picked = (log_w + gumbel).topk(self.k, dim=-1)
        return torch.where(torch.isfinite(keys), picked, -1)

    def _results(self, samples: list[Generation], log_w: torch.Tensor, picked: torch.Tensor) -> list[SIRGeneration]:
        n = self.n
        log_ml, weights = (x.tolist() for x in normalised(log_w))
        sizes, log_w_h = ess(log_w).tolist(), log_w.tolist()
        out = []
        for g, chosen in enumerate(picked.tolist()):  # once per prompt, at the end
            own = samples[g * n : (g + 1) * n]
            draws = [own[i] for i in chosen if i >= 0]
            if draws:
                first, finished, reason = draws[0], draws[0].finished, draws[0].reason
            else:
                first, finished = own[0], False
                reason = f"no proposal has a positive target weight: all {n} weights are zero"
            out.append(SIRGeneration(
                first.text, first.token_ids, first.logprob, log_ml[g], finished, reason, sum_counters(own),
                draws=draws, samples=own, log_weights=log_w_h[g], weights=weights[g], ess=sizes[g],
                log_marginal_likelihood=log_ml[g],
            ))
        return out

    def __repr__(self) -> str:
        return (f"SIR(proposal={self.proposal!r}, n={self.n}, target={self.target!r}, k={self.k}, "
                f"replace={self.replace}, resampling={self.resampling!r})")


def _check_proposal(proposal) -> TokenSampler:
    if isinstance(proposal, SequenceSampler):
        raise TypeError(f"proposal: {type(proposal).__name__} is a sequence sampler, whose probability of a "
                        "sequence is not computed exactly; pass a token sampler (for speculative decoding, its "
                        "sampler: the output law is the same)")
    if not isinstance(proposal, TokenSampler):
        raise TypeError(f"proposal: expected a token sampler such as dc.TopP(0.9), got {type(proposal).__name__}")
    last = proposal.stages[-1]
    if not last.exact_logq:
        raise ValueError(f"proposal: {last!r} cannot report the exact probability of its draws (its law's "
                         "normaliser is only estimated), so SIR cannot weight them; use dc.Masked(constraint) as "
                         "the proposal, or dc.SMC for AWRS")
    return proposal


def _check_target(target) -> SamplerChain | None:
    """A TypeError unless ``target`` is a kind SIR weights toward; a tempered target's checked law (else None)."""
    ok = target is None or isinstance(target, (TokenSampler, LanguageModel, Constraint, TokenConstraint)) \
        or callable(target)
    if not ok:
        raise TypeError(f"target: expected None, a token sampler, a LanguageModel, a constraint or a function of "
                        f"the text, got {type(target).__name__}")
    if isinstance(target, TokenSampler):
        return stateless_law(target, "target", "a tempered target is the model's law under stateless transforms "
                                               "such as dc.Temperature(0.5) | dc.TopK(50)")
    return None


Scorer = Callable[[list[list[int]], list[Generation], torch.Tensor], torch.Tensor]


def _scorer(target, law: SamplerChain | None, lm: LanguageModel, usage: Usage) -> Scorer:
    """log p(x) (up to a constant) of each proposal, from its prompt, its Generation and the run's log p_model;
    ``law`` is a tempered target's checked law; rescoring forwards are added to ``usage``."""
    if target is None:
        return lambda prompts, samples, model_lp: model_lp
    if law is not None:
        return lambda prompts, samples, model_lp: lm.score(prompts, [s.token_ids for s in samples],
                                                           lambda lp: law.law(lp, None), usage=usage)
    if isinstance(target, LanguageModel):
        lm.check_same_vocabulary(target, "target")
        return lambda prompts, samples, model_lp: target.score(prompts, [s.token_ids for s in samples], usage=usage)
    if isinstance(target, (Constraint, TokenConstraint)):
        bound = target.bind(lm.vocabulary, lm.device) if isinstance(target, Constraint) else target
        return lambda prompts, samples, model_lp: model_lp + _potential(bound, samples)
    return lambda prompts, samples, model_lp: model_lp + _rewards(target, samples)


def _rewards(reward: Callable[[str], float], samples: list[Generation]) -> torch.Tensor:
    """r(x) of each proposal's text (host work, once per proposal at the end); an error names the proposal."""
    out = []
    for i, sample in enumerate(samples):
        try:
            out.append(float(reward(sample.text)))
        except Exception as err:
            raise ValueError(f"target: the reward function failed on proposal {i} (text {sample.text[:60]!r}): "
                             f"{type(err).__name__}: {err}; it must return a float for every text") from err
    return torch.tensor(out, dtype=torch.float64)


def _potential(constraint: TokenConstraint, samples: list[Generation]) -> torch.Tensor:
    """0 where the sequence (EOS kept only if the text is complete) is in the language, else -inf; rows advance
    together, one token position per pass."""
    states = [constraint.start()] * len(samples)
    for t in range(max((len(s.token_ids) for s in samples), default=0)):
        dead = constraint.dead_batch(states)
        rows = [i for i, s in enumerate(samples) if t < len(s.token_ids) and not dead[i]]
        moved = constraint.advance_batch([states[i] for i in rows], [samples[i].token_ids[t] for i in rows])
        for i, state in zip(rows, moved):
            states[i] = state
    dead = constraint.dead_batch(states)
    ok = [not d and constraint.is_accepting(s) for d, s in zip(dead, states)]
    return torch.tensor([0.0 if a else -math.inf for a in ok], dtype=torch.float64)
