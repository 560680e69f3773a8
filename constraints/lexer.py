"""A lazily built byte automaton that runs a set of terminals in parallel: the lexer of a grammar.

A lexer state is the tuple of ``(terminal, derivative)`` pairs still alive after the bytes of the current lexeme
(:mod:`~decoding.constraints.rx`); the start state for a context holds each terminal the parser allows there, and
the ignored ones. States get an integer id when first reached and a row of 256 successors when first needed
(:meth:`Lexer.build`), so only the part of the automaton that text actually visits is ever built: no subset or
product construction up front, nothing exponential at compile time. ``table`` is the dense transition table the
mask kernels read (:data:`UNBUILT` for rows not built yet, ``-1`` for dead).

Lexing is greedy, as in Lark's contextual lexer: a lexeme ends when the next byte extends none of its terminals,
and then every terminal that matches it is scanned (see :mod:`~decoding.constraints.grammar`).

Example:
    >>> from decoding.constraints import rx
    >>> lexer = Lexer((rx.from_regex("[0-9]+"), rx.literal("+")))
    >>> s = lexer.start({0, 1})
    >>> s = lexer.step(lexer.step(s, ord("4")), ord("2"))
    >>> lexer.accepts[s], lexer.step(s, ord("+"))
    ((0,), -1)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from decoding.constraints import rx

__all__ = ["DEAD", "UNBUILT", "Lexer", "LexerLimit"]

DEAD = -1
UNBUILT = -2
MAX_STATES = 1_000_000


class LexerLimit(RuntimeError):
    """The lexer reached :data:`MAX_STATES` states (a pathological regular expression)."""


class Lexer:
    """The lazy automaton of a tuple of terminals (see the module docstring).

    Attributes:
        terminals: each terminal's expression.
        table: int32 ``[capacity, 256]``: next state, ``-1`` dead, ``-2`` row not built.
        accept_any: bool ``[capacity]``: the state matches some terminal (a lexeme may end here).
        accepts: per state, the terminals matching the lexeme read so far.
    """

    def __init__(self, terminals: tuple[rx.Rx, ...]):
        self.terminals = terminals
        self.table = np.full((64, 256), UNBUILT, dtype=np.int32)
        self.accept_any = np.zeros(64, dtype=bool)
        self.accepts: list[tuple[int, ...]] = []
        self._states: list[tuple[tuple[int, rx.Rx], ...]] = []
        self._ids: dict[tuple, int] = {}
        self._starts: dict[frozenset, int] = {}

    @property
    def n_states(self) -> int:
        return len(self._states)

    def start(self, terminals: Iterable[int]) -> int:
        """The state of an empty lexeme that may become any of ``terminals`` (memoised); ``-1`` if none."""
        key = frozenset(terminals)
        state = self._starts.get(key)
        if state is None:
            state = self._starts[key] = self._intern(tuple((t, self.terminals[t]) for t in sorted(key)))
        return state

    def step(self, state: int, byte: int) -> int:
        """The state after one more byte of the lexeme, or ``-1``."""
        if state < 0:
            return DEAD
        nxt = self.table[state, byte]
        if nxt == UNBUILT:
            self.build(state)
            nxt = self.table[state, byte]
        return int(nxt)

    def content(self, state: int) -> tuple[tuple[rx.Rx, rx.Rx], ...]:
        """What ``state`` is, independently of this lexer's numbering: its ``(terminal, derivative)`` expressions.
        Two lexers' states with equal contents read every byte string alike."""
        return tuple(sorted(((self.terminals[t], d) for t, d in self._states[state]), key=lambda pair: pair[0].id))

    def build(self, state: int) -> None:
        """Fill ``state``'s row: one derivative per byte class of its terminals (new states get ids)."""
        parts = self._states[state]
        classes: tuple[int, ...] = (rx.ONE_CLASS,)
        for _, expr in parts:
            classes = rx.refine(classes, expr.classes())
        targets = []
        for mask in classes:
            b = (mask & -mask).bit_length() - 1
            nxt = []
            for t, expr in parts:
                d = expr.derive(b)
                if d is not rx.EMPTY and rx.is_live(d):
                    nxt.append((t, d))
            targets.append(self._intern(tuple(nxt)) if nxt else DEAD)
        table = self.table  # _intern may have grown it
        table[state] = np.asarray(targets, dtype=np.int32)[np.frombuffer(rx.class_labels(classes), dtype=np.uint8)]

    def build_all(self, states: Iterable[int]) -> None:
        for s in set(states):
            if self.table[s, 0] == UNBUILT:
                self.build(s)

    def _intern(self, parts: tuple[tuple[int, rx.Rx], ...]) -> int:
        if not parts:
            return DEAD
        state = self._ids.get(parts)
        if state is None:
            state = self._ids[parts] = len(self._states)
            if state >= MAX_STATES:
                raise LexerLimit(f"the lexer grew past {MAX_STATES:,} states")
            self._states.append(parts)
            accepted = tuple(t for t, expr in parts if expr.nullable)
            self.accepts.append(accepted)
            if state >= len(self.accept_any):
                self._grow()
            self.accept_any[state] = bool(accepted)
        return state

    def _grow(self) -> None:
        capacity = 2 * len(self.accept_any)
        table = np.full((capacity, 256), UNBUILT, dtype=np.int32)
        table[:len(self.table)] = self.table
        self.table = table
        self.accept_any = np.concatenate([self.accept_any, np.zeros(capacity - len(self.accept_any), dtype=bool)])
