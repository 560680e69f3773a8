"""The decode loop, and the seam sequence-level samplers plug into.

:class:`Rows` is the per-row record every loop keeps: emitted tokens, model log-probability, log weight, end
reason, random streams and the live rows; it alone decides how a row ends (EOS, a stop string, the token limit, a
dead end). :class:`Decoder` drives it one token per step with the model's :class:`~decoding.model.KVBatch` and a
token sampler's state. Ancestral sampling is a loop over ``Decoder.step()``; SMC resamples between steps
(``Decoder.resample``), SIR reweights finished decoders, and speculative decoding (several tokens per round) keeps
its own loop over the same :class:`Rows`.

A :class:`SequenceSampler` turns a :class:`DecodeTask` into one :class:`Generation` per prompt;
``dc.generate`` accepts one, and wraps a token sampler in :class:`Ancestral`.

The loop synchronises with the device once per step (one bool: did any row end?), plus a copy of the new
tokens when stop strings or a streaming callback need them on the host.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch

from decoding.kernels.random import RowStreams
from decoding.model import KVBatch, LanguageModel, Usage
from decoding.samplers.base import TokenSampler, join_rows



class End(IntEnum):
    """Why a row ended (0 while it runs); ``Generation.finished`` is True only for the natural ends."""

    RUNNING = 0
    EOS = 1
    STOP = 2
    LENGTH = 3
    DEAD_END = 4  # the sampler's weight is zero (no allowed token)


REASONS = {End.RUNNING: "running", End.EOS: "eos", End.STOP: "stop", End.LENGTH: "length",
           End.DEAD_END: "dead end: the sampler's weight is zero"}


@dataclass
class DecodeTask:
    """What to decode: token-id prompts, limits and randomness.

    ``max_batch_rows`` bounds the rows of the model's batch (None: every row at once); a part of a bigger call
    (``subtask``) keeps each prompt's number in the call in ``row_ids``, which keys its random streams and the row
    ``on_token`` reports, so a prompt decodes the same whichever part it is in.
    """

    prompts: list[list[int]]
    max_new_tokens: int
    seed: int | Sequence[int] = 0
    stop: tuple[str, ...] = ()
    on_token: Callable[[int, int], None] | None = None  # (row, token id), called as tokens are produced
    usage: Usage = field(default_factory=Usage)  # this task's model work: every forward it runs adds to it
    max_batch_rows: int | None = None  # rows of the model's batch at once; None: all of them
    row_ids: Sequence[int] | None = None  # each prompt's number in the whole call; None: 0, 1, ...

    def __post_init__(self):
        check_max_batch_rows(self.max_batch_rows)

    def row_id(self, i: int) -> int:
        """Prompt ``i``'s number in the whole call."""
        return i if self.row_ids is None else int(self.row_ids[i])

    def streams(self, group: int = 1, tag: int = 0) -> RowStreams:
        """The random streams of the task's rows, ``group`` consecutive rows per prompt (SMC's particles, SIR's
        proposals): row j of prompt i draws from stream (seed, row_id(i) * group + j), or (seed[i], j) with one
        seed per prompt (``RowStreams.grouped``). A nonzero ``tag`` keys a second family apart (``RowStreams.tagged``:
        SMC's and SIR's resampling draws, one stream per prompt)."""
        if not isinstance(self.seed, (int, np.integer)) or self.row_ids is None:
            streams = RowStreams.grouped(self.seed, len(self.prompts), group)
        else:
            ids = np.asarray(self.row_ids, dtype=np.int64)
            rows = (ids[:, None] * group + np.arange(group)).reshape(-1)
            streams = RowStreams.from_seed(int(self.seed), int(rows.max()) + 1 if len(rows) else 0).select(rows)
        return RowStreams(streams.keys ^ np.uint64(tag)) if tag else streams

    def subtask(self, indices: Sequence[int]) -> "DecodeTask":
        """The task of the prompts ``indices`` (ascending), with their numbers in the call, seeds and callback;
        its forwards count in this task's ``usage``."""
        seed = self.seed if isinstance(self.seed, (int, np.integer)) else [self.seed[i] for i in indices]
        return DecodeTask([self.prompts[i] for i in indices], self.max_new_tokens, seed, self.stop, self.on_token,
                          self.usage, self.max_batch_rows, [self.row_id(i) for i in indices])


def check_max_batch_rows(max_batch_rows, group: int = 1) -> int | None:
    """``max_batch_rows`` as None or an int >= ``group`` (the rows one prompt decodes in one batch), else a
    TypeError or a ValueError naming it and the group size."""
    if max_batch_rows is None:
        return None
    if isinstance(max_batch_rows, bool) or not isinstance(max_batch_rows, (int, np.integer)):
        raise TypeError(f"max_batch_rows: expected an int number of rows (or None: derived from free memory), got "
                        f"{max_batch_rows!r} ({type(max_batch_rows).__name__})")
    if max_batch_rows < max(group, 1):
        what = "rows" if group <= 1 else (f"rows, and one prompt's group is {group} rows (SMC's particles, SIR's "
                                          "proposals), which decode in one batch")
        raise ValueError(f"max_batch_rows={max_batch_rows} is too small: it needs at least {max(group, 1)} {what}; "
                         f"pass max_batch_rows >= {max(group, 1)}, or None to derive it from free memory")
    return int(max_batch_rows)


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
    """Base of samplers that own the whole decode (ancestral, SMC, SIR, speculative).

    What a sampler declares for the row budget (``dc.generate(..., max_batch_rows=)``): ``rows_per_prompt``, the
    rows one prompt holds in the batch at once (they are never split across batches); ``positions_per_row``, the
    next-token distributions ([V] log-probs) one row holds at once (a speculative tree's nodes); and
    ``schedules_rows``, True when ``run`` itself keeps at most ``task.max_batch_rows`` rows in the batch and admits
    new prompts as rows finish (continuous batching). ``dc.generate`` runs the other samplers in waves of whole
    prompts (``decoding.scheduling``).
    """

    schedules_rows: bool = False

    def rows_per_prompt(self) -> int:
        return 1

    def positions_per_row(self) -> int:
        return 1

    def run(self, lm: LanguageModel, task: DecodeTask) -> list[Generation]:
        raise NotImplementedError


class Ancestral(SequenceSampler):
    """Plain left-to-right decoding: one token per step from a token sampler, new prompts admitted as rows end.

    Example:
        >>> dc.generate(lm, "Hi", sampler=Ancestral(dc.TopP(0.9)))   # doctest: +SKIP
    """

    schedules_rows = True

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
    """The rows of a task decoded together, one token per step, at most ``task.max_batch_rows`` at once.

    Rows are admitted in order, ``group`` consecutive rows (one prompt's SMC particles or SIR proposals) at a time,
    as others end (continuous batching): the new prompts are prefilled in one forward and appended to the model's
    cache (``KVBatch.extend``) and to the sampler's state. Each row draws from its own stream (``rng``: every row's
    streams, default ``task.streams()``), so a row's tokens do not depend on which rows share its batch.

    Attributes:
        rows: the per-row record (:class:`Rows`): tokens, sums, end reasons, streams, live rows.
        batch: the model's cache over the live rows; ``state``: the token sampler's state of the live rows.
        group: rows admitted together; ``budget``: the most live rows at once.
    """

    def __init__(self, lm: LanguageModel, task: DecodeTask, sampler: TokenSampler, rng: RowStreams | None = None,
                 group: int = 1):
        n = len(task.prompts)
        budget = check_max_batch_rows(task.max_batch_rows, group)  # before any model work
        if n % group:
            raise ValueError(f"group: {n} rows are not whole groups of {group}")
        self.lm, self.task, self.sampler, self.group = lm, task, sampler.bind(lm), group
        self.budget = n if budget is None else budget
        if task.max_new_tokens == 0:  # nothing to decode: no model work
            self.batch = None
            self.rows = Rows(lm, task, 1, lm.device, rng)
            self.rows.retire(torch.full_like(self.rows.live, int(End.LENGTH)))
            return
        first = self._fitting(0, 0)
        self.batch = self._prefill(0, first)
        self.rows = Rows(lm, task, task.max_new_tokens, self.batch.logprobs.device, rng, admitted=0)
        self.rows.admit(first)
        self.state = self.sampler.init_state(first, self.batch.logprobs.device)

    @property
    def done(self) -> bool:
        return self.rows.done

    def step(self) -> None:
        """Admit waiting rows where the budget has room, advance every live row by one token and retire the rows
        that ended."""
        self.admit()
        rows, logprobs = self.rows, self.batch.logprobs
        out = self.sampler.sample(logprobs, self.state, rows.rng)
        self.state = out.state
        for name, value in out.counters.items():
            rows.count(name, value)
        alive = ~torch.isneginf(out.log_weight)
        rows.add(rows.log_weight, out.log_weight.double())
        rows.add(rows.logq, torch.where(alive, out.logq.double(), 0.0))
        model_lp = logprobs.gather(-1, out.tokens[:, None]).double()
        _, reason = rows.emit(out.tokens[:, None], alive.long(), model_lp)
        self._retire(torch.where(alive, reason, End.DEAD_END))
        if len(rows.live):
            self.batch.step(rows.last_tokens())

    def admit(self) -> None:
        """Admit waiting rows, whole groups, if the budget has room for enough of them (``step`` does it first);
        prefilled in one forward (a group's prompt once) and appended to the cache and the sampler's state."""
        count = self._fitting(self.rows.admitted, len(self.rows.live))
        if count == 0:
            return
        start = self.rows.admitted
        self.batch.extend(self._prefill(start, count))
        self.state = join_rows([self.state, self.sampler.init_state(count, self.batch.logprobs.device)])
        self.rows.admit(count)

    def _fitting(self, admitted: int, live: int) -> int:
        """How many waiting rows to admit, ``admitted`` rows in and ``live`` of them live: whole groups, as many as
        the budget holds, once they make up an eighth of the budget or all the waiting rows (fewer prefills)."""
        waiting = len(self.task.prompts) - admitted
        room = min(waiting, self.budget - live) // self.group * self.group
        return room if room >= min(waiting, max(self.group, self.budget // 8)) else 0

    def _prefill(self, start: int, count: int) -> KVBatch:
        """Prefill rows start .. start + count - 1; a group's rows share a prompt: it is prefilled once."""
        prompts = self.task.prompts[start : start + count : self.group]
        batch = self.lm.start(prompts, usage=self.task.usage)
        if self.group > 1:
            batch.reorder(torch.arange(len(prompts)).repeat_interleave(self.group))
        return batch

    def _retire(self, reason: torch.Tensor) -> None:
        live = self.rows.retire(reason)
        if live is not None:
            self.batch.reorder(live)
            self.batch.trim()  # the cache no longer than its longest live row
            self.state = self.sampler.select_state(self.state, live)

    def resample(self, ancestors: torch.Tensor) -> None:
        """Row i becomes a copy of row ``ancestors[i]`` (SMC resampling): its tokens, log-probability, weight,
        end reason, sampler state and KV cache. Each row keeps its own random stream, so copies diverge; work
        counters stay with the row that did the work.

        Args:
            ancestors: [n] int64, one ancestor per row (original row numbering; ended rows may be ancestors, rows
                not admitted yet must be their own).
        """
        source = self.rows.resample(ancestors)
        self.batch.reorder(source)
        self.state = self.sampler.select_state(self.state, source)

    def results(self) -> list[Generation]:
        """One Generation per prompt, in prompt order."""
        return self.rows.results()


class Rows:
    """The per-row record of a decode loop, shared by :class:`Decoder` and speculative decoding: each row's
    emitted tokens, model log-probability, log weight, log q, work counters and end reason, its random stream, and
    which rows are still live. How a row ends (EOS, a stop string, the token limit, a dead end) is decided here
    and only here (:meth:`emit`, :meth:`retire`).

    Per-row tensors are indexed by the original row; ``live`` maps each live slot (the batch order of the model's
    cache and the sampler's state) to its row, and ``rng`` holds the live rows' streams in slot order. Rows start
    live, or (``admitted=0``) wait until :meth:`admit` lets them in, in row order; ``done`` once every row is
    admitted and none is live.
    """

    def __init__(self, lm: LanguageModel, task: DecodeTask, width: int, device: torch.device,
                 streams: RowStreams | None = None, admitted: int | None = None):
        n = len(task.prompts)
        self.lm, self.task = lm, task
        self.streams = streams if streams is not None else task.streams()  # every row's
        self.admitted = n if admitted is None else admitted  # rows 0 .. admitted - 1 are (or were) live
        self.live = torch.arange(self.admitted, device=device)  # original row of each live slot
        self.rng = self.streams.select(np.arange(self.admitted))  # the live rows' (counters move on as they draw)
        self.tokens = torch.zeros((n, width), dtype=torch.long, device=device)
        self.n_tokens = torch.zeros(n, dtype=torch.long, device=device)
        self.logprob = torch.zeros(n, dtype=torch.float64, device=device)
        self.log_weight = torch.zeros(n, dtype=torch.float64, device=device)
        self.logq = torch.zeros(n, dtype=torch.float64, device=device)  # log q(x): the sampler's own law (SIR)
        self.reason = torch.zeros(n, dtype=torch.long, device=device)
        self.counters: dict[str, torch.Tensor] = {}  # per row, float64 on the device
        self._eos = torch.tensor(lm.eos_token_ids, device=device)
        self._stop = _StopMatcher(task.stop, lm, n) if task.stop else None
        self.done = False

    def admit(self, count: int) -> None:
        """Let the next ``count`` waiting rows in: they become the last live slots."""
        if count <= 0 or self.admitted + count > len(self.reason):
            raise ValueError(f"count: {count} rows to admit, {len(self.reason) - self.admitted} waiting")
        self._save_streams()
        new = torch.arange(self.admitted, self.admitted + count, device=self.live.device)
        self.admitted += count
        self.live = torch.cat([self.live, new])
        self.rng = self.streams.select(self.live.cpu())
        self.done = False

    def add(self, total: torch.Tensor, value: torch.Tensor) -> None:
        """Add a value per live slot ([R]) into a per-row total."""
        total.index_add_(0, self.live, value.to(total.dtype))

    def count(self, name: str, value: torch.Tensor) -> None:
        """Add per-slot work ([R]) to the counter ``name`` (created at zero)."""
        zeros = torch.zeros(len(self.reason), dtype=torch.float64, device=self.live.device)
        self.add(self.counters.setdefault(name, zeros), value.to(self.live.device))

    def last_tokens(self) -> torch.Tensor:
        """The last emitted token of each live row: [R]."""
        return self.tokens[self.live, self.n_tokens[self.live] - 1]

    def emit(self, tokens: torch.Tensor, count: torch.Tensor, logprobs: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
        """Append each live row's first ``count`` ``tokens`` ([R, W]; their model log-probs ``logprobs`` [R, W]),
        cut after the first EOS, at a stop string and at the token limit. Returns how many each row kept and why
        it ends (0: it goes on), for :meth:`retire`."""
        rows, width = self.live, tokens.shape[1]
        col = torch.arange(width, device=tokens.device)
        is_eos = torch.isin(tokens, self._eos) & (col < count[:, None])
        first_eos = torch.where(is_eos, col, width).min(1).values
        reason = torch.where(first_eos < width, End.EOS, 0)
        count = torch.minimum(count, first_eos + 1)
        room = self.task.max_new_tokens - self.n_tokens[rows]
        reason = torch.where(count > room, End.LENGTH, reason)  # an EOS past the limit is cut away
        count = torch.minimum(count, room)
        reason = torch.where((count == room) & (reason == 0), End.LENGTH, reason)
        if self._stop is not None or self.task.on_token is not None:
            count, reason = self._host(tokens, count, reason)
        keep = col < count[:, None]
        pos = (self.n_tokens[rows][:, None] + col).clamp_max(self.tokens.shape[1] - 1)
        r2 = rows[:, None].expand_as(pos)
        self.tokens[r2[keep], pos[keep]] = tokens[keep]
        self.n_tokens.index_add_(0, rows, count)
        self.logprob.index_add_(0, rows, torch.where(keep, logprobs, 0.0).sum(1))
        return count, reason

    def _host(self, tokens: torch.Tensor, count: torch.Tensor, reason: torch.Tensor):
        """Stop strings and streaming: host work token by token, only when asked for."""
        count_h, reason_h = count.tolist(), reason.tolist()
        eos = set(self.lm.eos_token_ids)
        for i, (r, row_tokens) in enumerate(zip(self.live.tolist(), tokens.tolist())):  # host text
            for j, t in enumerate(row_tokens[: count_h[i]]):
                if self.task.on_token is not None:
                    self.task.on_token(self.task.row_id(r), t)
                if self._stop is not None and t not in eos and self._stop.feed(r, t):
                    count_h[i], reason_h[i] = j + 1, End.STOP
                    break
        return torch.tensor(count_h, device=count.device), torch.tensor(reason_h, device=reason.device)

    def retire(self, reason: torch.Tensor) -> torch.Tensor | None:
        """Record why rows ended (``reason`` per live slot, 0: goes on) and drop them. Returns the slots that stay
        live (for the caller's cache and states), or None if no row ended."""
        ended = reason > 0
        if not bool(ended.any()):
            return None
        self.reason[self.live] = reason
        self._save_streams()
        live = (~ended).nonzero()[:, 0]
        self.live = self.live[live]
        self.done = live.numel() == 0 and self.admitted == len(self.reason)
        self.rng = self.rng.select(live.cpu())
        return live

    def _save_streams(self) -> None:
        """Write the live rows' stream counters back to ``streams`` (the record of every row's)."""
        self.streams.counters = self.streams.counters.copy()
        self.streams.counters[self.live.cpu().numpy()] = self.rng.counters

    def resample(self, ancestors: torch.Tensor) -> torch.Tensor:
        """Row i becomes a copy of row ``ancestors[i]`` (see :meth:`Decoder.resample`). Returns, for each new live
        slot, the old slot it copies (for the caller's cache and states; empty when no row is live)."""
        anc = ancestors.to(self.reason.device)
        slot = torch.full_like(self.reason, -1)
        slot[self.live] = torch.arange(len(self.live), device=slot.device)  # live slot of each row
        for name in ("tokens", "n_tokens", "logprob", "log_weight", "logq", "reason"):
            setattr(self, name, getattr(self, name)[anc])
        if self._stop is not None:
            self._stop.tails = [self._stop.tails[a] for a in anc.tolist()]  # host text, only with stop strings
        self._save_streams()
        live = (self.reason[: self.admitted] == 0).nonzero()[:, 0]
        self.done = live.numel() == 0 and self.admitted == len(self.reason)
        self.live = live
        self.rng = self.streams.select(live.cpu())
        return slot[anc[live]]

    def results(self) -> list[Generation]:
        """One Generation per row, in row order: texts decoded (without the EOS token that ended a row) and cut at stop
        strings."""
        counts, ids_all, reasons = self.n_tokens.tolist(), self.tokens.tolist(), self.reason.tolist()
        logprob, log_weight = self.logprob.tolist(), self.log_weight.tolist()
        out = []
        for i, n in enumerate(counts):  # once per sequence, at the end
            ids = ids_all[i][:n]
            why = reasons[i] or End.LENGTH
            shown = ids[:-1] if why == End.EOS else ids  # an EOS id may be an ordinary token: it is not text
            text = self.lm.decode(shown) if self.lm.tokenizer is not None else ""
            if why == End.STOP:
                text = _cut_at_stop(text, self.task.stop)
            row_counters = {name: float(total[i]) for name, total in self.counters.items()}
            out.append(Generation(text, ids, logprob[i], log_weight[i], why in (End.EOS, End.STOP), REASONS[why],
                                  row_counters))
        return out


def replicated(lm: LanguageModel, task: DecodeTask, sampler: TokenSampler, n: int) -> Decoder:
    """A Decoder over every prompt of ``task`` repeated ``n`` times (SMC's particles, SIR's proposals), admitted a
    prompt's n rows at a time under ``task.max_batch_rows``: prompt i's rows draw from stream group i
    (``DecodeTask.streams``), and nothing is streamed to ``task.on_token``."""
    prompts = [p for p in task.prompts for _ in range(n)]
    inner = DecodeTask(prompts, task.max_new_tokens, 0, task.stop, None, task.usage, task.max_batch_rows)
    return Decoder(lm, inner, sampler, rng=task.streams(n), group=n)


class _StopMatcher:
    """Finds stop strings in each row's generated bytes as tokens arrive (a stop string may span tokens)."""

    def __init__(self, stop: Sequence[str], lm: LanguageModel, n: int):
        self.stops = [s.encode() for s in stop]
        self.keep = max(len(s) for s in self.stops)
        self.vocab = lm.vocabulary
        self.tails = [b""] * n

    def feed(self, row: int, token: int) -> bool:
        """Add one token to ``row``'s text; True if a stop string now ends it."""
        piece = b"" if self.vocab.is_special[token] else self.vocab.token_bytes[token]
        window = self.tails[row] + piece
        self.tails[row] = window[-(self.keep - 1) :] if self.keep > 1 else b""
        return any(s in window for s in self.stops)


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(cuts)] if cuts else text


def __getattr__(name: str):
    """The end-reason constants of 0.1 (``DEAD`` also meant a constraint state): deprecated until 0.3."""
    old = {"EOS": End.EOS, "STOP": End.STOP, "LENGTH": End.LENGTH, "DEAD": End.DEAD_END}
    if name not in old:
        raise AttributeError(f"module 'decoding.decode' has no attribute {name!r}")
    warnings.warn(f"decoding.decode.{name} is deprecated; use decoding.End.{old[name].name}", DeprecationWarning,
                  stacklevel=2)
    return old[name]
