"""A minimised deterministic automaton over bytes, built from a character-level FSM by UTF-8 expansion.

A regular language over Unicode characters is a regular language over their UTF-8 encodings: UTF-8 is a prefix
code, so replacing every character transition ``s --c--> t`` of a deterministic FSM by the byte path of ``c``'s
encoding keeps the automaton deterministic, provided the paths leaving one state share their common prefixes.
:func:`ByteDFA.from_fsm` builds those paths bottom-up for all 1,112,064 Unicode scalar values at once with numpy
(a state in the middle of a character is identified by the table of what its remaining bytes lead to, so equal
tables are one state), then removes the states that cannot reach acceptance and minimises by Moore's partition
refinement (E. F. Moore, "Gedanken-experiments on sequential machines", 1956).

Tables: ``transitions[s, b]`` is the next state or ``-1`` (dead); ``accepting[s]``; ``live[s]`` (an accepting
state is reachable from ``s``; after :func:`ByteDFA.from_fsm` every kept state is live, as dead states become
``-1``); ``start``.

Example:
    >>> import interegular
    >>> dfa = ByteDFA.from_fsm(interegular.parse_pattern("é+").to_fsm())
    >>> dfa.matches("éé".encode()), dfa.matches(b"\\xc3"), dfa.n_states
    (True, False, 3)
"""

from __future__ import annotations

import numpy as np
from interegular.fsm import anything_else

__all__ = ["ByteDFA", "DEAD"]

DEAD = -1
_N_CODEPOINTS = 0x110000
_SURROGATES = slice(0xD800, 0xE000)


class ByteDFA:
    """A deterministic automaton over bytes stored as dense numpy tables (see the module docstring).

    Args:
        transitions: int32 ``[n_states, 256]``, ``-1`` for dead.
        accepting: bool ``[n_states]``.
        start: the start state.

    The constructor takes the tables as they are (``live`` is computed from them); use :meth:`from_fsm` to build
    a trimmed, minimised automaton from a character-level FSM.

    Raises:
        ValueError: tables of the wrong shape, a transition outside the states, or a start state from which no
            accepting state is reachable (the empty language).
    """

    transitions: np.ndarray
    accepting: np.ndarray
    live: np.ndarray
    start: int

    def __init__(self, transitions: np.ndarray, accepting: np.ndarray, start: int):
        transitions = np.ascontiguousarray(transitions, dtype=np.int32)
        accepting = np.ascontiguousarray(accepting, dtype=bool)
        n = len(accepting)
        if transitions.shape != (n, 256):
            raise ValueError(f"transitions: shape {transitions.shape}, expected ({n}, 256) for {n} states")
        if n and (transitions.min() < DEAD or transitions.max() >= n):
            raise ValueError(f"transitions: entries must lie in -1..{n - 1}")
        if not 0 <= start < n:
            raise ValueError(f"start: {start} outside 0..{n - 1}")
        self.transitions = transitions
        self.accepting = accepting
        self.start = int(start)
        self.live = _live_states(transitions, accepting)
        if not self.live[self.start]:
            raise ValueError("the automaton accepts no string at all (empty language)")

    @property
    def n_states(self) -> int:
        return len(self.accepting)

    @classmethod
    def from_fsm(cls, fsm) -> ByteDFA:
        """The minimised byte automaton accepting exactly the UTF-8 encodings of the strings ``fsm`` accepts.

        Args:
            fsm: an ``interegular.FSM`` (deterministic, over characters; its ``anything_else`` symbol stands for
                every Unicode scalar value not named in its alphabet; surrogates are never matched).

        Raises:
            ValueError: ``fsm`` accepts nothing.
        """
        transitions, accepting, start = _utf8_expand(fsm)
        return cls(*minimise(*trim(transitions, accepting, start)))

    def step(self, state: int, data: bytes) -> int:
        """The state after reading ``data`` from ``state``, or ``-1`` once dead."""
        for b in data:
            if state < 0:
                return DEAD
            state = int(self.transitions[state, b])
        return state if state < 0 or self.live[state] else DEAD

    def matches(self, data: bytes) -> bool:
        """Whether the automaton accepts ``data`` (all of it)."""
        state = self.step(self.start, data)
        return state >= 0 and bool(self.accepting[state])

    def __repr__(self) -> str:
        return f"ByteDFA(n_states={self.n_states}, start={self.start}, n_accepting={int(self.accepting.sum())})"


# --- UTF-8 expansion -------------------------------------------------------------------------------------------


def _codepoint_targets(fsm) -> tuple[list, np.ndarray]:
    """The FSM's states in a fixed order and, per state, the target index of every code point (-1: none).

    Returns ``(states, targets)`` with ``targets`` a function of the state index returning int32 ``[0x110000]``.
    """
    states = sorted(fsm.states, key=repr) if not all(isinstance(s, int) for s in fsm.states) else sorted(fsm.states)
    index = {s: i for i, s in enumerate(states)}
    explicit = [(sym, key) for sym, key in fsm.alphabet.items() if sym is not anything_else]
    other_key = fsm.alphabet[anything_else] if anything_else in fsm.alphabet else None
    chars = np.array([ord(sym) for sym, _ in explicit], dtype=np.int64)
    keys = [key for _, key in explicit]

    def targets(i: int) -> np.ndarray:
        out_of = fsm.map.get(states[i], {})
        by_key = {key: index[t] for key, t in out_of.items()}
        default = by_key.get(other_key, DEAD) if other_key is not None else DEAD
        table = np.full(_N_CODEPOINTS, default, dtype=np.int32)
        if len(chars):
            table[chars] = np.array([by_key.get(key, DEAD) for key in keys], dtype=np.int32)
        table[_SURROGATES] = DEAD
        return table

    return states, targets


class _Interner:
    """Gives one id to every distinct continuation row (64 next states for bytes 0x80..0xBF); all-dead is -1."""

    def __init__(self, first_id: int):
        self.rows: list[np.ndarray] = []
        self.ids: dict[bytes, int] = {}
        self.first_id = first_id

    def __call__(self, rows: np.ndarray) -> np.ndarray:  # rows: [R, 64] -> ids [R]
        ids = np.empty(len(rows), dtype=np.int32)
        constant = (rows == rows[:, :1]).all(axis=1)  # most rows: a whole block of 64 code points goes one way
        values, inverse = np.unique(rows[constant, 0], return_inverse=True)
        ids[constant] = np.array([self._id(np.full(64, v, dtype=np.int32)) for v in values], dtype=np.int32)[
            inverse.reshape(-1)] if len(values) else 0
        varied = ~constant
        if varied.any():
            unique, inverse = np.unique(rows[varied], axis=0, return_inverse=True)
            ids[varied] = np.array([self._id(row) for row in unique], dtype=np.int32)[inverse.reshape(-1)]
        return ids

    def _id(self, row: np.ndarray) -> int:
        if (row == DEAD).all():
            return DEAD
        key = row.tobytes()
        if key not in self.ids:
            self.ids[key] = self.first_id + len(self.rows)
            self.rows.append(row.astype(np.int32))
        return self.ids[key]


def _utf8_expand(fsm) -> tuple[np.ndarray, np.ndarray, int]:
    """Untrimmed byte tables: the FSM's states first (same order), then the mid-character states."""
    states, targets = _codepoint_targets(fsm)
    n = len(states)
    intern = _Interner(first_id=n)
    top = np.full((n, 256), DEAD, dtype=np.int32)
    for i in range(n):
        cp = targets(i)
        top[i, :0x80] = cp[:0x80]  # one byte: 0xxxxxxx
        # two bytes 110xxxxx 10xxxxxx: code points 0x80..0x7FF, leads C2..DF (C0, C1 would be overlong)
        two = intern(cp[:0x800].reshape(32, 64))
        top[i, 0xC2:0xE0] = two[2:]
        # three bytes 1110xxxx 10xxxxxx 10xxxxxx: 0x800..0xFFFF, leads E0..EF (below 0x800 is overlong)
        three = cp[:0x10000].reshape(16, 64, 64).copy()
        three[0, :32] = DEAD
        last = intern(three.reshape(-1, 64)).reshape(16, 64)
        top[i, 0xE0:0xF0] = intern(last)
        # four bytes 11110xxx + 3 x 10xxxxxx: 0x10000..0x10FFFF, leads F0..F4
        four = np.full(5 * 64 ** 3, DEAD, dtype=np.int32)
        four[0x10000:_N_CODEPOINTS] = cp[0x10000:]
        last = intern(four.reshape(-1, 64)).reshape(-1, 64)
        middle = intern(last).reshape(5, 64)
        top[i, 0xF0:0xF5] = intern(middle)
    mid = np.full((len(intern.rows), 256), DEAD, dtype=np.int32)
    if intern.rows:
        mid[:, 0x80:0xC0] = np.stack(intern.rows)
    transitions = np.concatenate([top, mid])
    accepting = np.zeros(len(transitions), dtype=bool)
    accepting[[states.index(s) for s in fsm.finals]] = True
    return transitions, accepting, states.index(fsm.initial)


# --- trimming and minimisation ---------------------------------------------------------------------------------


def _live_states(transitions: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """``live[s]``: an accepting state is reachable from ``s`` (backward fixpoint, vectorised per round)."""
    live = accepting.copy()
    while True:
        nxt = transitions
        reach = np.where(nxt >= 0, live[np.maximum(nxt, 0)], False).any(axis=1) | live
        if (reach == live).all():
            return live
        live = reach


def _reachable(transitions: np.ndarray, start: int) -> np.ndarray:
    seen = np.zeros(len(transitions), dtype=bool)
    seen[start] = True
    frontier = np.array([start])
    while len(frontier):
        nxt = np.unique(transitions[frontier])
        nxt = nxt[nxt >= 0]
        nxt = nxt[~seen[nxt]]
        seen[nxt] = True
        frontier = nxt
    return seen


def trim(transitions: np.ndarray, accepting: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the states reachable from ``start`` that can reach acceptance; transitions to the others become -1.

    Raises:
        ValueError: no accepting state is reachable from ``start`` (the empty language).
    """
    live = _live_states(transitions, accepting)
    if not live[start]:
        raise ValueError("the regular expression matches no string at all (empty language)")
    transitions = np.where((transitions >= 0) & live[np.maximum(transitions, 0)], transitions, DEAD)
    keep = _reachable(transitions, start) & live
    new_id = np.full(len(keep) + 1, DEAD, dtype=np.int32)  # new_id[-1] stays -1 for dead entries
    new_id[:-1][keep] = np.arange(int(keep.sum()), dtype=np.int32)
    return new_id[transitions[keep]], accepting[keep], int(new_id[start])


def minimise(transitions: np.ndarray, accepting: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge equivalent states by Moore's partition refinement; the classes are numbered in order of first state.

    Two states are equivalent when they agree on acceptance and, byte for byte, go to equivalent states (or are
    both dead). Each round refines the partition by the signature ``(class, class of each successor)`` with one
    ``np.unique`` over rows; it stops when a round splits nothing.
    """
    classes = accepting.astype(np.int64)
    n_classes = len(np.unique(classes))
    while True:
        succ = np.where(transitions >= 0, classes[np.maximum(transitions, 0)], -1)
        signature = np.concatenate([classes[:, None], succ], axis=1)
        _, first, inverse = np.unique(signature, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        # number classes by their first state, so the result does not depend on the sort order of signatures
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first)] = np.arange(len(first))
        classes = rank[inverse]
        if len(first) == n_classes:
            break
        n_classes = len(first)
    representative = np.sort(first)  # representative[c]: the first state of class c
    new_transitions = np.where(transitions[representative] >= 0,
                               classes[np.maximum(transitions[representative], 0)], DEAD).astype(np.int32)
    return new_transitions, accepting[representative], int(classes[start])
