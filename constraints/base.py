"""The constraint protocol.

A :class:`Constraint` is a language of byte strings (a regex, a JSON Schema, a predicate on the text). Token work
happens on a :class:`TokenConstraint`, the constraint bound to a model's vocabulary:

- ``start() -> state``; ``advance(state, token_id) -> state`` or :data:`DEAD` (the only state change);
- ``is_accepting(state)``: the text so far is a complete member of the language;
- ``can_finish(state)``: some continuation reaches an accepting state;
- ``mask(state) -> bool[V]``: the tokens ``advance`` would not kill, EOS ids iff accepting (pure, memoised).

States are values: ``advance`` returns a new state and leaves its argument as it was, so a sampler may keep old
states and branch from them (SMC's copies, a speculative draft tree, rolled back by dropping branches). A
constraint that cannot promise this sets ``states_are_values = False`` and is refused where it matters.

Batched forms (``advance_batch``, ``mask_batch``) have slow but correct defaults here; automata override them
with vectorised kernels. AWRS only calls ``advance`` on drawn tokens; ``Masked`` uses ``mask``.

Example:
    >>> tc = dc.Regex(r"[0-9]+").bind(lm.vocabulary)        # doctest: +SKIP
    >>> s = tc.advance(tc.start(), lm.encode("42")[-1])      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

DEAD = -1  # the state of a prefix no continuation can save
State = Any


class Constraint:
    """A language of byte strings; ``bind`` gives its token-level view for a vocabulary."""

    #: False when ``mask`` is not available (a predicate would be called once per vocabulary entry).
    has_mask: bool = True
    #: False when ``advance`` changes its state in place: the state then cannot be kept while other branches are
    #: tried (SMC copies, speculative draft trees), so samplers that need that refuse the constraint.
    states_are_values: bool = True

    def bind(self, vocabulary, device: torch.device | str = "cpu") -> "TokenConstraint":
        raise NotImplementedError


class TokenConstraint:
    """A constraint over a vocabulary's token ids. Subclasses implement the four single-state methods."""

    vocabulary = None
    device: torch.device | str = "cpu"
    has_mask: bool = True  # see Constraint.has_mask
    states_are_values: bool = True  # see Constraint.states_are_values

    def start(self) -> State:
        raise NotImplementedError

    def advance(self, state: State, token_id: int) -> State:
        raise NotImplementedError

    def is_accepting(self, state: State) -> bool:
        raise NotImplementedError

    def can_finish(self, state: State) -> bool:
        raise NotImplementedError

    def mask(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def is_dead(self, state: State) -> bool:
        return isinstance(state, int) and state == DEAD

    def possible_tokens(self) -> torch.Tensor | None:
        """bool ``[V]``: False for tokens no state can ever allow (a vocabulary pre-filter, the same at every step),
        or None when unknown (the default). Samplers may drop those tokens without checking them."""
        return None

    def forced_bytes(self, state: State, limit: int = 32) -> bytes:
        """The bytes every continuation of ``state`` starts with (at most ``limit``; empty where the next byte is
        free or the text may end here): a key, a literal's rest. Drafters use it; the default knows nothing."""
        return b""

    def narrow_batch(self, states: Sequence[State]) -> np.ndarray:
        """numpy bool ``[B]``: True where the constraint leaves a single possible next byte (a forced key or
        literal), so that ``mask`` is cheap and few tokens are allowed. The default knows nothing (all False)."""
        return np.zeros(len(states), dtype=bool)

    def only_eos_batch(self, states: Sequence[State]) -> np.ndarray:
        """numpy bool ``[B]``: True where the text is complete and nothing may follow (only EOS is allowed).
        A shortcut for samplers; the default knows nothing (all False), automata read it off their tables."""
        return np.zeros(len(states), dtype=bool)

    def dead_batch(self, states: Sequence[State]) -> np.ndarray:
        """numpy bool ``[B]``: which states are DEAD."""
        return np.fromiter((self.is_dead(s) for s in states), dtype=bool, count=len(states))

    def advance_batch(self, states: Sequence[State], tokens: Sequence[int]) -> list[State]:
        """``advance`` for each (state, token) pair; EOS keeps an accepting state, any other use of EOS is DEAD."""
        eos = set(self.vocabulary.eos_token_ids)
        out = []
        for s, t in zip(states, tokens):  # slow default; automata walk all rows in one kernel
            if t in eos:
                out.append(s if self.is_accepting(s) else DEAD)
            else:
                out.append(self.advance(s, t))
        return out

    def mask_batch(self, states: Sequence[State]) -> torch.Tensor:
        """[B, V] stacked masks."""
        return torch.stack([self.mask(s) for s in states])
