"""The token-sampler protocol and its composition.

A token sampler maps next-token log-probabilities ``logprobs[B, V]`` and a per-row ``state`` to tokens, log
importance weights and a new state, vectorised over the batch:

    sample(logprobs, state, rng) -> Sample(tokens[B], log_weight[B], logq[B], state)

It is built from three parts, after llama.cpp's sampler interface:

- ``transform(logprobs, state) -> logprobs``: pure; reshapes or truncates the distribution (temperature, top-p,
  ...). Output rows are normalised log-probabilities, -inf outside the support. Inputs are never changed in place.
- ``draw(logprobs, state, rng) -> (tokens, log_weight, logq[, counters, state])``: terminal samplers only (Greedy,
  the categorical draw, AWRS, Masked). ``logq`` is the log-probability of the drawn token under the law it was
  drawn from; a :class:`Draw` may add per-row work ``counters`` (AWRS's constraint checks) and the terminal's next
  ``state`` for the drawn tokens when the draw computed it anyway (AWRS's checks advance the constraint).
- ``accept(state, tokens, logprobs) -> state``: the only place state changes, called once with the token that
  was actually emitted and the distribution this sampler received. Stateful samplers (mirostat) therefore stay
  right under rejection, resampling and speculative rollback: nothing is committed for a token that is thrown away.

States are functional: ``sample`` returns a new state and leaves the old one usable (rollback = keep the old).
``a | b`` chains samplers left to right; a chain is a sampler (:class:`SamplerChain`). A chain that does not end
with a terminal sampler ends with a categorical draw from the transformed distribution. Before a constrained
terminal (``Masked``, ``AWRS``), transforms that truncate act among the allowed tokens: see :class:`SamplerChain`.

Example:
    >>> import torch, decoding as dc
    >>> sampler = dc.Temperature(0.7) | dc.TopP(0.9)
    >>> logprobs = torch.log_softmax(torch.randn(2, 10), -1)
    >>> out = sampler.sample(logprobs, sampler.init_state(2), RowStreams.from_seed(0, 2))
    >>> out.tokens.shape
    torch.Size([2])
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from decoding.constraints.base import Constraint, TokenConstraint
from decoding.kernels.random import RowStreams
from decoding.kernels.sampling import NEG_INF, check_logprobs, inverse_cdf

State = Any


class Draw(NamedTuple):
    """What a terminal sampler's ``draw`` returns (a plain 3-tuple is read as a Draw without counters)."""

    tokens: torch.Tensor  # [B] int64
    log_weight: torch.Tensor  # [B] log importance weight w.r.t. the claimed law (0 if exact)
    logq: torch.Tensor  # [B] log-probability of the token under the law it was drawn from
    counters: dict[str, torch.Tensor] = {}  # per-row work of this draw, e.g. {"constraint_checks": [B]}
    state: State = None  # the terminal's next state for ``tokens``, if the draw computed it (else ``accept`` runs)


class Sample(NamedTuple):
    """One token per row. log_weight: importance weight w.r.t. the claimed law (0 if exact)."""

    tokens: torch.Tensor  # [B] int64
    log_weight: torch.Tensor  # [B] float32
    logq: torch.Tensor  # [B] log-probability of the token under the law it was drawn from
    state: State
    counters: dict[str, torch.Tensor] = {}  # per-row work counters of the terminal draw (AWRS: constraint checks)


def check_fraction(name: str, value: float) -> float:
    """``value`` as a float in (0, 1], or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


def check_int(name: str, value: int, minimum: int, note: str = "") -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming ``name`` (``note`` says why, if given)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{note}, got {value!r}")
    return value


def stateless_law(sampler: "TokenSampler", name: str, why: str) -> "SamplerChain":
    """``sampler`` as a chain whose ``law`` is a pure function of the log-probs: stateless transforms, optionally
    ending in ``Greedy()`` or the categorical draw. Otherwise a ValueError naming ``name``; ``why`` says who needs
    the law (speculative decoding's verifier, SIR's tempered target)."""
    if not isinstance(sampler, TokenSampler):
        raise TypeError(f"{name}: expected a token sampler, got {type(sampler).__name__}")
    chain = SamplerChain(sampler.stages)
    for stage in chain._run:
        if stage.stateful:
            raise ValueError(f"{name}: {stage!r} keeps per-sequence state, but {why}; use stateless transforms "
                             "(Temperature, TopK, TopP, MinP, Typical, TopH), optionally ending in Greedy()")
        if stage.terminal and not stage.draws_from_law:
            raise ValueError(f"{name}: {stage!r} draws tokens itself, but {why}; end the chain with Greedy() or "
                             "nothing")
    return chain


def select_rows(state: State, indices: torch.Tensor) -> State:
    """Pick rows of a state (tensors, numpy arrays, lists, tuples, dicts of them; None stays None)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(0, indices.to(state.device))
    if isinstance(state, np.ndarray):
        return state[indices.cpu().numpy()]
    if isinstance(state, tuple):
        return tuple(select_rows(s, indices) for s in state)
    if isinstance(state, dict):
        return {k: select_rows(v, indices) for k, v in state.items()}
    if isinstance(state, list):
        return [state[i] for i in indices.tolist()]
    raise TypeError(f"cannot select rows of a state of type {type(state).__name__}")



def join_rows(parts: Sequence[State]) -> State:
    """The state of the rows of ``parts[0]``, then those of ``parts[1]``, ...: the inverse of :func:`select_rows`
    (admitting rows to a batch, batching requests that each keep their own state).

    Example:
        >>> join_rows([(torch.tensor([1.0]), [7], None), (torch.tensor([2.0]), [8], None)])
        (tensor([1., 2.]), [7, 8], None)
    """
    first = parts[0]
    if first is None:
        if any(p is not None for p in parts):
            raise TypeError("cannot join a sampler state with None")
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat([p.to(first.device) for p in parts])
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, tuple):
        return tuple(join_rows(column) for column in zip(*parts))
    if isinstance(first, dict):
        return {k: join_rows([p[k] for p in parts]) for k in first}
    if isinstance(first, list):
        return [row for p in parts for row in p]
    raise TypeError(f"cannot join sampler states of type {type(first).__name__}: joining rows needs tensors, arrays, "
                    "lists, tuples or dicts of them")

class TokenSampler:
    """Base class of every token sampler. Subclasses override ``transform`` or, if terminal, ``draw``."""

    #: True when the sampler keeps per-row state (it then needs ``accept`` for the emitted token).
    stateful: bool = False
    #: True when the sampler draws tokens itself; it must be the last stage of a chain.
    terminal: bool = False
    #: False when a terminal sampler cannot report the exact log-probability of its draws (``logq`` is NaN).
    exact_logq: bool = True
    #: True for terminal samplers whose draw is a pure function of their ``law`` (Greedy, the categorical draw).
    draws_from_law: bool = False
    #: True when ``transform`` maps each log-probability on its own and renormalises (temperature): it then commutes
    #: with restricting the support to a constraint's allowed tokens.
    pointwise: bool = False

    @property
    def stages(self) -> tuple["TokenSampler", ...]:
        return (self,)

    def bind(self, lm) -> "TokenSampler":
        """This sampler ready for ``lm`` (constraint samplers bind their constraint to its vocabulary).
        Called by the decode loop before the first step; the default returns the sampler itself."""
        return self

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        return None

    def transform(self, logprobs: torch.Tensor, state: State) -> torch.Tensor:
        return logprobs

    def draw(self, logprobs: torch.Tensor, state: State, rng: RowStreams) -> "Draw | tuple":
        raise NotImplementedError(f"{type(self).__name__} is not a terminal sampler")

    def law(self, logprobs: torch.Tensor, state: State) -> torch.Tensor:
        """The distribution ``sample`` draws from, as log-probabilities (for ``dc.hf.LogitsProcessor``).
        Terminal samplers override it (Greedy: a point mass); the categorical draw's law is its input."""
        if self.terminal:
            return logprobs
        chain = SamplerChain(self.stages)
        return chain.law(logprobs, None if state is None else (state,) + (None,) * (len(chain._run) - 1))

    def accept(self, state: State, tokens: torch.Tensor, logprobs: torch.Tensor) -> State:
        return state

    def select_state(self, state: State, indices: torch.Tensor) -> State:
        """The state of the given rows (SMC resampling, dropping finished rows)."""
        return select_rows(state, indices)

    def sample(self, logprobs: torch.Tensor, state: State = None, rng: RowStreams | None = None) -> Sample:
        """Transform, draw and commit, as the one-sampler chain ``SamplerChain([self])`` would."""
        chain = SamplerChain(self.stages)
        chain_state = None if state is None else (state,) + (None,) * (len(chain._run) - 1)
        out = chain.sample(logprobs, chain_state, rng)
        return out._replace(state=out.state[0])

    def __or__(self, other: "TokenSampler") -> "SamplerChain":
        if not isinstance(other, TokenSampler):
            return NotImplemented
        return SamplerChain(self.stages + other.stages)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Categorical(TokenSampler):
    """Draw a token from the distribution as given (the default end of every chain).

    Inverse-CDF sampling with one uniform per row (``kernels.sampling.inverse_cdf``): exact, no sync.

    Example:
        >>> Categorical().sample(torch.log(torch.tensor([[0.0, 1.0]]))).tokens
        tensor([1])
    """

    terminal = True
    draws_from_law = True

    def draw(self, logprobs, state, rng):
        tokens = inverse_cdf(logprobs, rng.uniform(device=logprobs.device))
        logq = logprobs.gather(-1, tokens[:, None])[:, 0]
        return tokens, torch.zeros_like(logq), logq


class SamplerChain(TokenSampler):
    """Samplers applied left to right; the last one draws (a categorical draw if none of them is terminal).

    The state of a chain is the tuple of its stages' states (the implicit categorical draw included).

    Before a constrained terminal (``Masked``, ``AWRS``), a transform that truncates (top-k, top-p, min-p, typical,
    top-H, Mirostat) acts among the allowed tokens, as in transformers and vLLM, where the constraint's mask comes
    first: ``dc.TopP(0.95) | dc.AWRS(c)`` draws from the nucleus of p restricted to c, never from a nucleus with
    no allowed token. The chain restricts p to the constraint's mask (memoised per state), renormalises, applies
    the transforms and draws; the log weight is the exact log p(allowed). Pointwise transforms (temperature) commute
    with the restriction, so ``dc.Temperature(0.8) | dc.AWRS(c)`` keeps AWRS's rejection path and its few checks.

    Example:
        >>> chain = dc.TopK(50) | dc.TopP(0.9)          # a SamplerChain ending in the categorical draw
        >>> out = chain.sample(torch.log_softmax(torch.randn(2, 100), -1))
    """

    terminal = True

    def __init__(self, stages: Sequence[TokenSampler]):
        stages = tuple(stages)
        if not stages:
            raise ValueError("stages: a chain needs at least one sampler")
        for s in stages[:-1]:
            if s.terminal:
                raise ValueError(f"{s!r} draws tokens, so it must be the last sampler of a chain")
        self._stages = stages  # as given: `a | b` concatenates these
        self._run = stages if stages[-1].terminal else stages + (Categorical(),)
        # truncation before a constraint acts among the allowed tokens (see the class docstring)
        self._restrict_first = isinstance(self._run[-1], ConstrainedSampler) and \
            not all(s.pointwise for s in self._run[:-1])
        if self._restrict_first and not self._run[-1].has_mask:
            cut = next(s for s in self._run[:-1] if not s.pointwise)
            raise ValueError(f"{cut!r} before {self._run[-1]!r}: a truncation before a constraint acts among the "
                             "tokens it allows, which needs the constraint's mask, and a Predicate has none (it is "
                             "checked token by token); keep only Temperature before it, or use a Regex or JsonSchema")

    @property
    def stages(self) -> tuple[TokenSampler, ...]:
        return self._stages

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        return any(s.stateful for s in self._run)

    def bind(self, lm) -> "SamplerChain":
        bound = tuple(s.bind(lm) for s in self._stages)
        return self if all(b is s for b, s in zip(bound, self._stages)) else SamplerChain(bound)

    def init_state(self, batch_size, device="cpu"):
        return tuple(s.init_state(batch_size, device) for s in self._run)

    def _states(self, state: State, logprobs: torch.Tensor | None = None) -> tuple:
        if state is not None:
            return state
        if logprobs is not None and self.stateful:
            return self.init_state(logprobs.shape[0], logprobs.device)
        return tuple(None for _ in self._run)

    def transform(self, logprobs, state):
        return self.transform_all(logprobs, self._states(state, logprobs))[0]

    def law(self, logprobs, state):
        states = self._states(state, logprobs)
        return self.terminal_law(self.transform(logprobs, states), states)

    def terminal_law(self, transformed: torch.Tensor, states: tuple) -> torch.Tensor:
        """The law the terminal stage draws from, given the transformed distribution (``transform_all``)."""
        return self._run[-1].law(transformed, states[-1])

    def select_state(self, state, indices):
        return tuple(s.select_state(st, indices) for s, st in zip(self._run, self._states(state)))

    def sample(self, logprobs, state=None, rng=None):
        check_logprobs(logprobs)
        rng = rng if rng is not None else RowStreams.from_seed(0, logprobs.shape[0])
        states = self._states(state, logprobs)
        terminal = self._run[-1]
        if self._restrict_first:
            restricted, log_mass = terminal.restrict(logprobs, states[-1])
            final, inputs = self._transform_from(restricted, states)
            draw = terminal.draw_restricted(final, log_mass, rng)
        else:
            final, inputs = self._transform_from(logprobs, states)
            draw = Draw(*terminal.draw(final, states[-1], rng))
        new_states = self.accept_all(states, draw.tokens, inputs, draw.state)
        return Sample(draw.tokens, draw.log_weight, draw.logq, new_states, draw.counters)

    def transform_all(self, logprobs: torch.Tensor, states: tuple) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The distribution the terminal stage draws from, and the input each stage received."""
        if self._restrict_first:
            logprobs = self._run[-1].restrict(logprobs, states[-1])[0]
        return self._transform_from(logprobs, states)

    def _transform_from(self, logprobs: torch.Tensor, states: tuple) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inputs = [logprobs]
        for s, st in zip(self._run[:-1], states):
            inputs.append(s.transform(inputs[-1], st))
        return inputs[-1], inputs

    def accept_all(self, states: tuple, tokens: torch.Tensor, inputs: list[torch.Tensor],
                   terminal_state: State = None) -> tuple:
        """Commit the emitted ``tokens`` to every stage (``inputs`` from ``transform_all``); ``terminal_state``,
        if given, is the terminal's next state as its draw computed it."""
        if not self.stateful:
            return states
        new = [s.accept(st, tokens, x) for s, st, x in zip(self._run[:-1], states, inputs)]
        last = self._run[-1].accept(states[-1], tokens, inputs[-1]) if terminal_state is None else terminal_state
        return (*new, last)

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self._stages)


class ConstrainedSampler(TokenSampler):
    """Base of the terminal samplers that follow a constraint (``Masked``, ``AWRS``): the state of a row is its
    constraint state; ``bind`` binds the constraint to the model's vocabulary and device."""

    terminal = True
    stateful = True

    def __init__(self, constraint):
        if not isinstance(constraint, (Constraint, TokenConstraint)):
            raise TypeError(f"constraint: expected a decoding constraint (dc.Regex, dc.JsonSchema, dc.Predicate), "
                            f"got {type(constraint).__name__}")
        self.constraint = constraint

    def bind(self, lm) -> "ConstrainedSampler":
        if isinstance(self.constraint, TokenConstraint):
            return self
        bound = copy.copy(self)
        bound.constraint = self.constraint.bind(lm.vocabulary, lm.device)
        return bound

    @property
    def token_constraint(self):
        """The bound constraint (a ``TokenConstraint``)."""
        if not isinstance(self.constraint, TokenConstraint):
            raise ValueError("constraint: not bound to a vocabulary; decode through dc.generate (which binds it) or "
                             "pass constraint.bind(lm.vocabulary)")
        return self.constraint

    def init_state(self, batch_size, device="cpu"):
        return [self.token_constraint.start()] * batch_size

    @property
    def has_mask(self) -> bool:
        """Whether the constraint computes full-vocabulary masks (a ``Predicate`` does not)."""
        return self.constraint.has_mask

    def law(self, logprobs, state):
        """The exact locally constrained law, p restricted to the allowed tokens and renormalised (by mask)."""
        return self.restrict(logprobs, state)[0]

    def restrict(self, logprobs: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """p restricted to each row's allowed tokens and renormalised, and log p(allowed) [B] (-inf: none allowed;
        such a row is returned unrestricted, so later transforms stay finite, and must not be drawn from)."""
        mask = self.token_constraint.mask_batch(state).to(logprobs.device)
        kept = logprobs.masked_fill(~mask, NEG_INF)
        log_mass = kept.logsumexp(-1, keepdim=True)
        alive = torch.isfinite(log_mass)
        return torch.where(alive, kept - log_mass, logprobs), log_mass[:, 0]

    def draw_restricted(self, logprobs: torch.Tensor, log_mass: torch.Tensor, rng: RowStreams) -> Draw:
        """An exact draw from ``logprobs``, already restricted to the allowed tokens (and transformed), weighted by
        the allowed mass ``log_mass`` [B] of ``restrict``; the next state comes from ``accept``."""
        tokens = inverse_cdf(logprobs, rng.uniform(device=logprobs.device))
        logq = logprobs.gather(-1, tokens[:, None])[:, 0]
        alive = torch.isfinite(log_mass)
        return Draw(tokens, log_mass.to(logprobs.dtype), torch.where(alive, logq, NEG_INF))
