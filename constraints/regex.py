"""Regular-expression constraints: a regex compiled to a byte automaton, and its token-level view.

The pattern is read by Python's own parser (``re``), so a syntax error reports its position, features a finite
automaton cannot express (look-around, backreferences, anchors, conditionals) are named, and escapes, comments and
class syntax mean what they mean to ``re``; it is then written back in plain syntax, compiled with ``interegular``
to a character-level FSM and expanded to a minimised automaton over UTF-8 bytes
(:class:`~constraints.automaton.ByteDFA`). Semantics are those of ``re.fullmatch(pattern, text, re.ASCII)`` on
``str``: the whole text must match, over Unicode characters (``.`` is any character but ``\\n``, ``[^a]`` any
character but ``a``, astral ones included), with ``\\d``, ``\\w``, ``\\s`` the ASCII classes. The byte automaton
accepts exactly the UTF-8 encodings of the matching strings.

:meth:`Regex.bind` gives the token-level automaton over a :class:`~decoding.vocabulary.Vocabulary`: a state is
a byte-automaton state, ``advance`` walks a token's bytes, and ``mask`` lists the tokens that keep a match
possible (kernels in :mod:`kernels.automata`).

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

import re
import weakref

import interegular
import numpy as np
import torch
from interegular.patterns import InvalidSyntax, Unsupported

from decoding.constraints.automaton import ByteDFA
from decoding.constraints.base import DEAD, Constraint, TokenConstraint
from decoding.constraints.re_parser import constants as _sre_constants
from decoding.constraints.re_parser import parser as _sre_parser
from decoding.kernels import automata

__all__ = ["DEAD", "Regex", "TokenAutomaton"]

_UNSUPPORTED_OPS = {
    "GROUPREF": "backreferences",
    "GROUPREF_EXISTS": "conditional groups (?(id)yes|no)",
    "AT": "anchors (^, $, \\A, \\Z, \\b, \\B)",
    "ATOMIC_GROUP": "atomic groups (?>...)",
    "POSSESSIVE_REPEAT": "possessive quantifiers (*+, ++, ?+, {m,n}+)",
}


class Regex(Constraint):
    """A regular expression over Unicode text, compiled to a minimised byte automaton.

    Args:
        pattern: a Python regular expression (full-match semantics, see the module docstring).

    Attributes:
        pattern: the pattern.
        dfa: the :class:`~constraints.automaton.ByteDFA` accepting the UTF-8 encodings of the matching strings.

    Raises:
        ValueError: invalid syntax (the message gives the position), an unsupported feature (named: look-ahead,
            look-behind, backreferences, anchors, inline flags, ...), or a pattern that matches nothing.
    """

    def __init__(self, pattern: str):
        if not isinstance(pattern, str):
            raise ValueError(f"pattern: {type(pattern).__name__}, expected str")
        self.pattern = pattern
        self.dfa = ByteDFA.from_fsm(_to_fsm(pattern))
        self._bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def matches(self, text: str | bytes) -> bool:
        """Whether the whole of ``text`` matches (``bytes`` are taken as UTF-8; invalid UTF-8 never matches)."""
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        return self.dfa.matches(data)

    def bind(self, vocabulary, device: str | torch.device = "cpu") -> TokenAutomaton:
        """The token-level automaton over ``vocabulary``; cached per vocabulary object and device."""
        device = torch.device(device)
        per_vocabulary = self._bound.setdefault(vocabulary, {})
        if device not in per_vocabulary:
            per_vocabulary[device] = TokenAutomaton(self.dfa, vocabulary, device)
        return per_vocabulary[device]

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


class TokenAutomaton(TokenConstraint):
    """A byte automaton seen through a vocabulary: states are byte-automaton states, steps are tokens.

    ``advance`` is the only transition; ``mask`` is pure and memoised per state. Special tokens never advance
    (DEAD); EOS ids are allowed by ``mask`` exactly in accepting states.

    Args:
        dfa: the byte automaton.
        vocabulary: a :class:`~decoding.vocabulary.Vocabulary`.
        device: where ``mask`` returns its tensors.
    """

    def __init__(self, dfa: ByteDFA, vocabulary, device: str | torch.device = "cpu"):
        self.dfa = dfa
        self.vocabulary = vocabulary
        self.device = torch.device(device)
        self._index = vocabulary_index(vocabulary)
        self._eos = np.asarray(vocabulary.eos_token_ids, dtype=np.int64)
        self._is_eos = np.zeros(len(self._index.special), dtype=bool)
        self._is_eos[self._eos] = True
        self._masks: dict[int, torch.Tensor] = {}
        self._only_eos = dfa.accepting & ~(dfa.transitions >= 0).any(axis=1)  # complete, and no byte may follow
        self._possible: torch.Tensor | None = None
        self._narrow = ((dfa.transitions >= 0).sum(axis=1) == 1) & ~dfa.accepting  # one byte forced next

    def start(self) -> int:
        return self.dfa.start

    def advance(self, state: int, token_id: int) -> int:
        """The state after ``token_id``, or ``DEAD`` (-1): dead state, special token, or no match possible."""
        index = self._index
        if state < 0 or not 0 <= token_id < len(index.special) or index.special[token_id]:
            return DEAD
        nxt = automata.walk(self.dfa.transitions, state, index.flat, index.offsets, token_id)
        return int(nxt) if nxt >= 0 and self.dfa.live[nxt] else DEAD

    def is_accepting(self, state: int) -> bool:
        return state >= 0 and bool(self.dfa.accepting[state])

    def can_finish(self, state: int) -> bool:
        """Whether an accepting state is still reachable from ``state``."""
        return state >= 0 and bool(self.dfa.live[state])

    def advance_batch(self, states, tokens) -> list[int]:
        """``advance`` for every row in one numba kernel (EOS keeps an accepting state, as the base class says)."""
        states = np.asarray(states, dtype=np.int64)
        out = np.empty_like(states)
        dfa, index = self.dfa, self._index
        automata.walk_batch(dfa.transitions, dfa.live, dfa.accepting, index.special, self._is_eos, index.flat,
                            index.offsets, states, np.asarray(tokens, dtype=np.int64), out)
        return out.tolist()

    def dead_batch(self, states) -> np.ndarray:
        return np.asarray(states, dtype=np.int64) < 0

    def possible_tokens(self) -> torch.Tensor:
        """bool ``[V]``: the tokens made only of bytes that label some transition of the automaton (any other
        token is dead from every state), and EOS; memoised."""
        if self._possible is None:
            index = self._index
            used = (self.dfa.transitions >= 0).any(axis=0)  # [256] bytes that some state can read
            bad = np.concatenate([[0], np.cumsum(~used[index.flat])])
            possible = (bad[index.offsets[1:]] == bad[index.offsets[:-1]]) & ~index.special
            possible[self._eos] = bool(self.dfa.accepting.any())
            self._possible = torch.from_numpy(possible).to(self.device)
        return self._possible

    def narrow_batch(self, states) -> np.ndarray:
        return _per_state(self._narrow, states)

    def only_eos_batch(self, states) -> np.ndarray:
        return _per_state(self._only_eos, states)

    def mask_batch(self, states) -> torch.Tensor:
        """[B, V]: the memoised mask of each distinct state, gathered by row (no work per row)."""
        distinct, row_of = np.unique(np.asarray(states, dtype=np.int64), return_inverse=True)
        table = torch.stack([self.mask(int(s)) for s in distinct])
        return table[torch.from_numpy(row_of.reshape(-1)).to(table.device)]

    def mask(self, state: int) -> torch.Tensor:
        """bool ``[V]``: True for each token ``advance`` does not kill, and for EOS ids iff ``state`` accepts.

        Computed on the first call for a state, then memoised: do not modify the returned tensor in place.
        """
        cached = self._masks.get(state)
        if cached is not None:
            return cached
        out = np.zeros(self.vocabulary.size, dtype=bool)
        if state >= 0:
            automata.mask_from_state(self.dfa.transitions, self.dfa.live, self._index.trie, state, out)
        out[self._eos] = self.is_accepting(state)
        mask = torch.from_numpy(out).to(self.device)
        self._masks[state] = mask
        return mask


def _per_state(table: np.ndarray, states) -> np.ndarray:
    """``table[state]`` for each state, False for DEAD. bool [S], [B] -> [B]"""
    states = np.asarray(states, dtype=np.int64)
    return (states >= 0) & table[np.maximum(states, 0)]


# --- checking and parsing the pattern -----------------------------------------------------------------------


def _plain_syntax(pattern: str) -> str:
    """``pattern`` as Python reads it, written back in the plain syntax interegular reads the same way.

    Python's parser does the reading (escapes ``\\x \\u \\U \\N{...}`` and octal become characters, ``(?#...)``
    comments vanish, a leading ``]`` in a class is a member), and features a finite automaton cannot express are
    refused by name. The output has only literal characters (ASCII punctuation backslash-escaped, controls as
    ``\\xNN``), classes, ``.``, ``(?:...)``, ``|`` and ``{m,n}``.
    """
    try:
        parsed = _sre_parser.parse(pattern)
    except re.error as error:
        raise ValueError(f"invalid regular expression {pattern!r} at position {error.pos}: {error.msg}") from None
    if parsed.state.flags & ~(re.UNICODE | re.ASCII):
        raise ValueError(f"unsupported in {pattern!r}: inline flags such as (?i), (?s), (?m), (?x)")
    return _render(pattern, parsed)


def _render(pattern: str, items) -> str:
    return "".join(_render_item(pattern, str(op), av) for op, av in items)


def _render_item(pattern: str, name: str, av) -> str:
    if name == "LITERAL":
        return _char(av)
    if name == "NOT_LITERAL":
        return f"[^{_char(av)}]"
    if name == "ANY":
        return "."
    if name == "IN":
        return _render_class(av)
    if name == "BRANCH":
        return "(?:" + "|".join(_render(pattern, branch) for branch in av[1]) + ")"
    if name == "SUBPATTERN":
        _, add_flags, del_flags, sub = av
        if add_flags or del_flags:
            raise ValueError(f"unsupported in {pattern!r}: scoped inline flags (?i:...)")
        return f"(?:{_render(pattern, sub)})"
    if name in ("MAX_REPEAT", "MIN_REPEAT"):  # laziness does not change the language of a full match
        lo, hi, sub = av
        bounds = f"{lo}" if hi == lo else f"{lo},{'' if hi == _sre_constants.MAXREPEAT else hi}"
        return f"(?:{_render(pattern, sub)}){{{bounds}}}"
    if name in ("ASSERT", "ASSERT_NOT"):
        kind = "look-ahead" if av[0] == 1 else "look-behind"
        raise ValueError(f"unsupported in {pattern!r}: {'negative ' if name == 'ASSERT_NOT' else ''}{kind} assertions")
    raise ValueError(f"unsupported in {pattern!r}: {_UNSUPPORTED_OPS.get(name, name)}")


_CATEGORY_ESCAPES = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_WORD": r"\w",
                     "CATEGORY_NOT_WORD": r"\W", "CATEGORY_SPACE": r"\s", "CATEGORY_NOT_SPACE": r"\S"}


def _render_class(items) -> str:
    """A class: interegular's \\d \\w \\s (and negations) are the ASCII classes, as under ``re.ASCII``."""
    out = []
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            out.append("^")
        elif name == "LITERAL":
            out.append(_char(av))
        elif name == "RANGE":
            out.append(f"{_char(av[0])}-{_char(av[1])}")
        else:  # CATEGORY
            out.append(_CATEGORY_ESCAPES[str(av)])
    return "[" + "".join(out) + "]"


def _char(code: int) -> str:
    """One character: ASCII punctuation escaped, controls as \\xNN, everything else raw."""
    char = chr(code)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if code < 0x80 and not char.isalnum() and char != " ":
        return "\\" + char
    return char


def _to_fsm(pattern: str):
    plain = _plain_syntax(pattern)
    try:
        return interegular.parse_pattern(plain).to_fsm()
    except (Unsupported, InvalidSyntax, ValueError) as error:  # not expected: the plain syntax is interegular's own
        raise ValueError(f"regular expression {pattern!r} (read as {plain!r}) not understood by interegular: "
                         f"{error}") from None


# --- per-vocabulary tables, shared by every regex -------------------------------------------------------------


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
