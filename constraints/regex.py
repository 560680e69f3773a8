"""Regular-expression constraints: a regex as a lazily built byte automaton, and its token-level view.

The pattern is read by Python's own parser into a byte-level regular expression (:func:`~decoding.constraints.
rx.from_regex`), so a syntax error reports its position, features a finite automaton cannot express
(look-around, backreferences, anchors, conditionals) are named, and escapes, comments and class syntax mean what
they mean to ``re``. Semantics are those of ``re.fullmatch(pattern, text, re.ASCII)`` on ``str``: the whole text
must match, over Unicode characters (``.`` is any character but ``\\n``, ``[^a]`` any character but ``a``, astral
ones included), with ``\\d``, ``\\w``, ``\\s`` the ASCII classes; the automaton accepts exactly the UTF-8
encodings of the matching strings.

The automaton is the grammar engine's :class:`~decoding.constraints.lexer.Lexer` with one terminal: a state is
a derivative of the expression, numbered when first reached, and its row of 256 successors is built when first
needed; dead derivatives are dropped, so every state can still reach a match. Nothing is built up front:
``[^\\n]{1,64}`` compiles in under 1 ms (3 s as a minimised DFA), ``(a|b)*a(a|b){20}`` (2**21 DFA states) too.

:meth:`Regex.bind` gives the token-level automaton over a :class:`~decoding.vocabulary.Vocabulary`: a state is a
lexer state, ``advance`` walks a token's bytes (:mod:`kernels.automata`), and ``mask`` walks the vocabulary's
byte trie (:class:`~decoding.constraints.trie_walk.TrieWalker`), building rows where the walk asks for them.

Example:
    >>> r = Regex(r"\\d{4}-\\d{2}-\\d{2}")
    >>> r.matches("2024-05-17"), r.matches("2024-5-17")
    (True, False)
    >>> tokens = r.bind(vocabulary)                                    # doctest: +SKIP
    >>> s = tokens.advance(tokens.start(), vocabulary_id_of("2024"))   # doctest: +SKIP
    >>> tokens.mask(s)                                                 # doctest: +SKIP
    tensor([False, False, ..., False])
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np
import torch

from decoding.constraints import rx
from decoding.constraints.base import DEAD, Constraint, TokenConstraint
from decoding.constraints.lexer import Lexer
from decoding.constraints.trie_walk import TrieWalker
from decoding.kernels import automata

__all__ = ["DEAD", "Regex", "TokenAutomaton"]

MASK_CACHE = 1024  # masks memoised per bound automaton (the most recently used states)


class Regex(Constraint):
    """A regular expression over Unicode text, matched by a lazily built byte automaton.

    Args:
        pattern: a Python regular expression (full-match semantics, see the module docstring).

    Attributes:
        pattern: the pattern.
        expression: the :class:`~decoding.constraints.rx.Rx` accepting the UTF-8 encodings of the matching strings.
        lexer: its automaton, shared by :meth:`matches` and every vocabulary it is bound to.
        initial: the automaton's start state.

    Raises:
        ValueError: invalid syntax (the message gives the position), an unsupported feature (named: look-ahead,
            look-behind, backreferences, anchors, conditionals, atomic groups, possessive quantifiers), or a
            pattern that matches nothing.
    """

    def __init__(self, pattern: str):
        self.expression = rx.from_regex(pattern)
        if rx.is_empty(self.expression):
            raise ValueError(f"the regular expression {pattern!r} matches no string at all (empty language)")
        self.pattern = pattern
        self.lexer = Lexer((self.expression,))
        self.initial = self.lexer.start((0,))
        self._bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def matches(self, text: str | bytes) -> bool:
        """Whether the whole of ``text`` matches (``bytes`` are taken as UTF-8; invalid UTF-8 never matches)."""
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        state = self.initial
        for b in data:
            state = self.lexer.step(state, b)
            if state < 0:
                return False
        return bool(self.lexer.accept_any[state])

    def bind(self, vocabulary, device: str | torch.device = "cpu") -> TokenAutomaton:
        """The token-level automaton over ``vocabulary``; cached per vocabulary object and device."""
        device = torch.device(device)
        per_vocabulary = self._bound.setdefault(vocabulary, {})
        if device not in per_vocabulary:
            per_vocabulary[device] = TokenAutomaton(self, vocabulary, device)
        return per_vocabulary[device]

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


class TokenAutomaton(TokenConstraint):
    """A regex's byte automaton seen through a vocabulary: states are its lexer states (ints), steps are tokens.

    ``advance`` is the only transition; ``mask`` is pure and memoised per state (the last :data:`MASK_CACHE`; do
    not modify the returned tensors in place). Special tokens never advance (DEAD); EOS ids are allowed by
    ``mask`` exactly in accepting states.

    Args:
        regex: the :class:`Regex`.
        vocabulary: a :class:`~decoding.vocabulary.Vocabulary`.
        device: where ``mask`` returns its tensors.
    """

    def __init__(self, regex: Regex, vocabulary, device: str | torch.device = "cpu"):
        self.regex, self.lexer = regex, regex.lexer
        self.vocabulary = vocabulary
        self.device = torch.device(device)
        self._index = index = vocabulary_index(vocabulary)
        self._walker = TrieWalker(index.trie, self.lexer)
        self._eos = np.asarray(vocabulary.eos_token_ids, dtype=np.int64)
        self._is_eos = np.zeros(len(index.special), dtype=bool)
        self._is_eos[self._eos] = True
        self._masks: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._possible: torch.Tensor | None = None

    def start(self) -> int:
        return self.regex.initial

    def advance(self, state: int, token_id: int) -> int:
        """The state after ``token_id``, or ``DEAD`` (-1): dead state, special token, or no match possible."""
        index, lexer = self._index, self.lexer
        if state < 0 or not 0 <= token_id < len(index.special) or index.special[token_id]:
            return DEAD
        start, stop = index.offsets[token_id], index.offsets[token_id + 1]
        while True:
            state, start = automata.walk(lexer.table, state, index.flat, start, stop)
            if start == stop:
                return int(state)
            lexer.build(int(state))

    def is_accepting(self, state: int) -> bool:
        return state >= 0 and bool(self.lexer.accept_any[state])

    def can_finish(self, state: int) -> bool:
        """Whether a match is still reachable from ``state``: true of every state but DEAD."""
        return state >= 0

    def advance_batch(self, states, tokens) -> list[int]:
        """``advance`` for every row in one numba kernel (EOS keeps an accepting state, as the base class says);
        rows that reach an unbuilt row are walked again once it is built."""
        states = np.asarray(states, dtype=np.int64)
        tokens = np.asarray(tokens, dtype=np.int64)
        out = self._walk_batch(states, tokens)
        stuck = np.flatnonzero(out == automata.UNBUILT)
        while len(stuck):
            again = self._walk_batch(states[stuck], tokens[stuck])
            out[stuck] = again
            stuck = stuck[again == automata.UNBUILT]
        return out.tolist()

    def _walk_batch(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """One kernel pass; builds the rows it stopped at (their walks come back as UNBUILT)."""
        out, unbuilt = np.empty_like(states), np.empty_like(states)
        lexer, index = self.lexer, self._index
        automata.walk_batch(lexer.table, lexer.accept_any, index.special, self._is_eos, index.flat, index.offsets,
                            states, tokens, out, unbuilt)
        lexer.build_all(unbuilt[out == automata.UNBUILT].tolist())
        return out

    def dead_batch(self, states) -> np.ndarray:
        return np.asarray(states, dtype=np.int64) < 0

    def possible_tokens(self) -> torch.Tensor:
        """bool ``[V]``: the tokens made only of bytes that occur in the expression (any other token is dead from
        every state), and EOS; memoised."""
        if self._possible is None:
            index = self._index
            used = rx.alphabet(self.regex.expression)
            used = np.array([used >> b & 1 for b in range(256)], dtype=bool)
            bad = np.concatenate([[0], np.cumsum(~used[index.flat])])
            possible = (bad[index.offsets[1:]] == bad[index.offsets[:-1]]) & ~index.special
            possible[self._eos] = True  # the language is not empty
            self._possible = torch.from_numpy(possible).to(self.device)
        return self._possible

    def forced_bytes(self, state: int, limit: int = 32) -> bytes:
        """The bytes every continuation of ``state`` starts with: the automaton's single live byte, repeatedly,
        until a state that may end or branches."""
        out = bytearray()
        lexer = self.lexer
        while len(out) < limit and state >= 0 and not lexer.accept_any[state]:
            lexer.build_all([state])
            alive = np.flatnonzero(lexer.table[state] >= 0)
            if len(alive) != 1:
                break
            out.append(int(alive[0]))
            state = int(lexer.table[state, alive[0]])
        return bytes(out)

    def narrow_batch(self, states) -> np.ndarray:
        """True where the state is not accepting and exactly one byte may follow."""
        states, rows = self._rows(states)
        return (states >= 0) & ((rows >= 0).sum(axis=1) == 1) & ~self.lexer.accept_any[np.maximum(states, 0)]

    def only_eos_batch(self, states) -> np.ndarray:
        """True where no byte may follow (such a state accepts: every state can reach a match)."""
        states, rows = self._rows(states)
        return (states >= 0) & (rows < 0).all(axis=1)

    def _rows(self, states) -> tuple[np.ndarray, np.ndarray]:
        """The states as int64 ``[B]`` and their transition rows ``[B, 256]``, built where needed (rows of DEAD
        entries are meaningless)."""
        states = np.asarray(states, dtype=np.int64)
        self.lexer.build_all(states[states >= 0].tolist())
        return states, self.lexer.table[np.maximum(states, 0)]

    def mask_batch(self, states) -> torch.Tensor:
        """[B, V]: the memoised mask of each distinct state, gathered by row (no work per row)."""
        distinct, row_of = np.unique(np.asarray(states, dtype=np.int64), return_inverse=True)
        table = torch.stack([self.mask(int(s)) for s in distinct])
        return table[torch.from_numpy(row_of.reshape(-1)).to(table.device)]

    def mask(self, state: int) -> torch.Tensor:
        """bool ``[V]``: True for each token ``advance`` does not kill, and for EOS ids iff ``state`` accepts."""
        cached = self._masks.get(state)
        if cached is not None:
            self._masks.move_to_end(state)
            return cached
        out = np.zeros(self.vocabulary.size, dtype=bool)
        if state >= 0:
            # the walk's boundaries are tokens that complete a match and go on: never allowed with one terminal
            tokens, _ = self._walker.from_root(state)
            out[tokens] = True
            out[self._walker.empty_tokens] = True
        out[self._eos] = self.is_accepting(state)
        mask = self._masks[state] = torch.from_numpy(out).to(self.device)
        if len(self._masks) > MASK_CACHE:
            self._masks.popitem(last=False)
        return mask


# --- per-vocabulary tables, shared by every regex and grammar ---------------------------------------------------


class _VocabularyIndex:
    """Flat token bytes and the trie of the non-special tokens of one vocabulary."""

    def __init__(self, vocabulary):
        self.special = np.asarray(vocabulary.is_special, dtype=bool)
        self.flat, self.offsets = automata.flatten(vocabulary.token_bytes)
        self.trie = automata.build_trie(vocabulary.token_bytes, ~self.special, self.flat, self.offsets)


_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def vocabulary_index(vocabulary) -> _VocabularyIndex:
    index = _INDEXES.get(vocabulary)
    if index is None:
        index = _INDEXES[vocabulary] = _VocabularyIndex(vocabulary)
    return index
