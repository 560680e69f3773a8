"""The decode loop, and the seam sequence-level samplers plug into.

:class:`Decoder` holds B live sequences: the model's :class:`~decoding.model.KVBatch`, the token sampler's state,
each row's random stream, and per-row accumulators on the device. ``Decoder.step()`` advances every live row by
one token, ends rows at EOS, a stop string, a dead end (log weight -inf) or the token limit, and drops ended rows
from the batch. Ancestral sampling is a loop over ``step()``; SMC (resampling between steps with
``Decoder.reorder``), SIR (many decoders, then reweighting) and speculative decoding (several tokens per step)
drive the same object or replace ``step`` while reusing its bookkeeping.

A :class:`SequenceSampler` turns a :class:`DecodeTask` into one :class:`Generation` per prompt;
``dc.generate`` accepts one, and wraps a token sampler in :class:`Ancestral`.

The loop synchronises with the device once per step (one bool: did any row end?), plus a copy of the new
tokens when stop strings or a streaming callback need them on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from decoding.kernels.random import RowStreams
from decoding.model import LanguageModel
from decoding.samplers.base import TokenSampler

# Why a sequence ended; `finished` is True only for the natural ends (EOS, stop string).
EOS, STOP, LENGTH, DEAD = 1, 2, 3, 4
REASONS = {0: "running", EOS: "eos", STOP: "stop", LENGTH: "length", DEAD: "dead end: the sampler's weight is zero"}


@dataclass
class DecodeTask:
    """What to decode: token-id prompts, limits and randomness."""

    prompts: list[list[int]]
    max_new_tokens: int
    seed: int | Sequence[int] = 0
    stop: tuple[str, ...] = ()
    on_token: Callable[[int, int], None] | None = None  # (row, token id), called as tokens are produced


@dataclass
class Generation:
    """One generated sequence.

    Attributes:
        text: the generated text (special tokens dropped, cut before a stop string).
        token_ids: generated token ids (EOS included when it ended the sequence).
        logprob: sum of log p(token | prefix) under the unmodified model.
        log_weight: log importance weight relative to the law the sampler claims (0 for exact samplers).
        finished: True when the sequence ended at EOS or a stop string; False at the token limit or a dead end.
        reason: "eos", "stop", "length" or "dead end: ..." (why it ended).
        counters: the sampler's work for this sequence, e.g. ``{"constraint_checks": 37}`` for AWRS.
    """

    text: str
    token_ids: list[int]
    logprob: float
    log_weight: float
    finished: bool
    reason: str
    counters: dict[str, float] = field(default_factory=dict)


def sum_counters(generations: Sequence[Generation]) -> dict[str, float]:
    """The work counters of several generations, added up by name."""
    total: dict[str, float] = {}
    for g in generations:
        for name, value in g.counters.items():
            total[name] = total.get(name, 0.0) + value
    return total


@dataclass
class Stats:
    """Work done by one ``generate`` call."""

    forwards: int = 0  # model forward passes
    tokens: int = 0  # tokens fed to the model (prompts included, padding excluded)
    new_tokens: int = 0  # tokens generated
    wall_time: float = 0.0  # seconds
    counters: dict[str, float] = field(default_factory=dict)  # the sampler's work, summed (e.g. constraint_checks)

    def per_token(self, name: str) -> float:
        """A counter per generated token, e.g. ``stats.per_token("constraint_checks")`` (0 without tokens)."""
        return self.counters.get(name, 0.0) / self.new_tokens if self.new_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of wall time."""
        return self.new_tokens / self.wall_time if self.wall_time > 0 else 0.0


class SequenceSampler:
    """Base of samplers that own the whole decode (ancestral, SMC, SIR, speculative)."""

    def run(self, lm: LanguageModel, task: DecodeTask) -> list[Generation]:
        raise NotImplementedError


class Ancestral(SequenceSampler):
    """Plain left-to-right decoding: one token per step from a token sampler.

    Example:
        >>> dc.generate(lm, "Hi", sampler=Ancestral(dc.TopP(0.9)))   # doctest: +SKIP
    """

    def __init__(self, token_sampler: TokenSampler):
        if not isinstance(token_sampler, TokenSampler):
            raise TypeError(f"token_sampler: expected a TokenSampler, got {type(token_sampler).__name__}")
        self.token_sampler = token_sampler

    def run(self, lm: LanguageModel, task: DecodeTask) -> list[Generation]:
        decoder = Decoder(lm, task, self.token_sampler)
        while not decoder.done:
            decoder.step()
        return decoder.results()

    def __repr__(self) -> str:
        return f"Ancestral({self.token_sampler!r})"


class Decoder:
    """B sequences being decoded together. See the module docstring."""

    def __init__(self, lm: LanguageModel, task: DecodeTask, sampler: TokenSampler, rng: RowStreams | None = None):
        sampler = sampler.bind(lm)
        self.lm, self.task, self.sampler = lm, task, sampler
        n = len(task.prompts)
        self.batch = lm.start(task.prompts)
        device = self.batch.logprobs.device
        self.streams = rng if rng is not None else RowStreams.from_seed(task.seed, n)  # every row's, by row
        self.rng = self.streams.select(np.arange(n))  # the live rows' (their counters move on as they draw)
        self.counters: dict[str, torch.Tensor] = {}  # per row, float64 on the device
        self.state = sampler.init_state(n, device)
        self.rows = torch.arange(n, device=device)  # original row of each live slot
        self.tokens = torch.zeros((n, max(task.max_new_tokens, 1)), dtype=torch.long, device=device)
        self.n_tokens = torch.zeros(n, dtype=torch.long, device=device)
        self.logprob = torch.zeros(n, dtype=torch.float64, device=device)
        self.log_weight = torch.zeros(n, dtype=torch.float64, device=device)
        self.logq = torch.zeros(n, dtype=torch.float64, device=device)  # log q(x): the sampler's own law (SIR)
        self.reason = torch.zeros(n, dtype=torch.long, device=device)
        self._eos = torch.tensor(lm.eos_token_ids, device=device)
        self._steps = 0
        self._stop = _StopMatcher(task.stop, lm, n) if task.stop else None
        self.done = task.max_new_tokens == 0

    def step(self) -> None:
        """Advance every live row by one token and retire the rows that ended."""
        logprobs = self.batch.logprobs
        out = self.sampler.sample(logprobs, self.state, self.rng)
        self.state = out.state
        rows, tokens = self.rows, out.tokens
        for name, value in out.counters.items():
            zeros = torch.zeros(len(self.reason), dtype=torch.float64, device=rows.device)
            total = self.counters.setdefault(name, zeros)
            total.index_add_(0, rows, value.to(rows.device, torch.float64))
        alive = ~torch.isneginf(out.log_weight)
        self.log_weight.index_add_(0, rows, out.log_weight.double())
        model_lp = logprobs.gather(-1, tokens[:, None])[:, 0].double()
        self.logprob.index_add_(0, rows, torch.where(alive, model_lp, 0.0))
        self.logq.index_add_(0, rows, torch.where(alive, out.logq.double(), 0.0))
        self.tokens[rows, self.n_tokens[rows]] = tokens
        self.n_tokens.index_add_(0, rows, alive.long())
        self._steps += 1

        reason = torch.where(torch.isin(tokens, self._eos), EOS, 0)
        reason = torch.where(alive, reason, DEAD)
        if self._stop is not None or self.task.on_token is not None:
            host_rows, host_tokens = rows.tolist(), tokens.tolist()
            if self.task.on_token is not None:
                for r, t, ok in zip(host_rows, host_tokens, alive.tolist()):
                    if ok:
                        self.task.on_token(r, t)
            if self._stop is not None:
                hit = self._stop.feed(host_rows, host_tokens)
                reason = torch.where((reason == 0) & hit.to(reason.device), STOP, reason)
        if self._steps >= self.task.max_new_tokens:
            reason = torch.where(reason == 0, LENGTH, reason)
        self._retire(reason)
        if not self.done:
            self.batch.step(self.tokens[self.rows, self.n_tokens[self.rows] - 1])

    def _retire(self, reason: torch.Tensor) -> None:
        ended = reason > 0
        if not bool(ended.any()):
            return
        self.reason[self.rows] = reason
        self._save_streams()
        live = (~ended).nonzero()[:, 0]
        if live.numel() == 0:
            self.done = True
            return
        self.rows = self.rows[live]
        self.batch.reorder(live)
        self.state = self.sampler.select_state(self.state, live)
        self.rng = self.rng.select(live.cpu())

    def _save_streams(self) -> None:
        """Write the live rows' stream counters back to ``streams`` (the record of every row's)."""
        self.streams.counters = self.streams.counters.copy()
        self.streams.counters[self.rows.cpu().numpy()] = self.rng.counters

    def resample(self, ancestors: torch.Tensor) -> None:
        """Row i becomes a copy of row ``ancestors[i]`` (SMC resampling): its tokens, log-probability, weight,
        end reason, sampler state and KV cache. Each row keeps its own random stream, so copies diverge; work
        counters stay with the row that did the work.

        Args:
            ancestors: [n] int64, one ancestor per row (original row numbering; ended rows may be ancestors).
        """
        anc = ancestors.to(self.reason.device)
        slot = torch.full_like(self.reason, -1)
        slot[self.rows] = torch.arange(len(self.rows), device=slot.device)  # live position of each row
        for name in ("tokens", "n_tokens", "logprob", "log_weight", "logq", "reason"):
            setattr(self, name, getattr(self, name)[anc])
        if self._stop is not None:
            self._stop.tails = [self._stop.tails[a] for a in anc.tolist()]  # host text, only with stop strings
        self._save_streams()
        live = (self.reason == 0).nonzero()[:, 0]
        self.done = live.numel() == 0
        if self.done:
            return
        source = slot[anc[live]]
        self.rows = live
        self.batch.reorder(source)
        self.state = self.sampler.select_state(self.state, source)
        self.rng = self.streams.select(live.cpu())

    def results(self) -> list[Generation]:
        """One Generation per prompt, in prompt order."""
        return make_generations(self.lm, self.task, self.tokens, self.n_tokens, self.logprob, self.log_weight,
                                self.reason, self.counters)


def replicated(lm: LanguageModel, task: DecodeTask, sampler: TokenSampler, n: int) -> Decoder:
    """A Decoder over every prompt of ``task`` repeated ``n`` times (SMC's particles, SIR's proposals): prompt i's
    rows draw from stream group i (``RowStreams.grouped``), and nothing is streamed to ``task.on_token``."""
    prompts = [p for p in task.prompts for _ in range(n)]
    inner = DecodeTask(prompts, task.max_new_tokens, 0, task.stop, None)
    return Decoder(lm, inner, sampler, rng=RowStreams.grouped(task.seed, len(task.prompts), n))


def make_generations(lm: LanguageModel, task: DecodeTask, tokens: torch.Tensor, n_tokens: torch.Tensor,
                     logprob: torch.Tensor, log_weight: torch.Tensor, reason: torch.Tensor,
                     counters: dict[str, torch.Tensor]) -> list[Generation]:
    """One Generation per row from a decode loop's per-row buffers (tokens [B, W], counts, sums, end reasons and
    work counters), with texts decoded and cut at stop strings."""
    counts, ids_all, reasons = n_tokens.tolist(), tokens.tolist(), reason.tolist()
    logprob_h, log_weight_h = logprob.tolist(), log_weight.tolist()
    out = []
    for i, n in enumerate(counts):  # once per sequence, at the end
        ids = ids_all[i][:n]
        why = reasons[i] or LENGTH
        text = lm.decode(ids) if lm.tokenizer is not None else ""
        if why == STOP:
            text = _cut_at_stop(text, task.stop)
        row_counters = {name: float(total[i]) for name, total in counters.items()}
        out.append(Generation(text, ids, logprob_h[i], log_weight_h[i], why in (EOS, STOP), REASONS[why],
                              row_counters))
    return out


class _StopMatcher:
    """Finds stop strings in each row's generated bytes as tokens arrive (a stop string may span tokens)."""

    def __init__(self, stop: Sequence[str], lm: LanguageModel, n: int):
        self.stops = [s.encode() for s in stop]
        self.keep = max(len(s) for s in self.stops)
        self.vocab = lm.vocabulary
        self.tails = [b""] * n

    def feed(self, rows: list[int], tokens: list[int]) -> torch.Tensor:
        hit = torch.zeros(len(rows), dtype=torch.bool)
        for j, (r, t) in enumerate(zip(rows, tokens)):  # host-side text matching; only with stop strings
            piece = b"" if self.vocab.is_special[t] else self.vocab.token_bytes[t]
            window = self.tails[r] + piece
            hit[j] = any(s in window for s in self.stops)
            self.tails[r] = window[-(self.keep - 1) :] if self.keep > 1 else b""
        return hit


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(cuts)] if cuts else text
