"""Context-free grammar constraints: a greedy lexer over lazily built automata, Earley's parser over its lexemes.

:class:`Grammar` takes Lark's grammar syntax or llama.cpp's GBNF (or a :class:`~decoding.constraints.cfg.Cfg`
built in code, as :class:`~decoding.constraints.json_schema.JsonSchema` does) and accepts exactly the texts the
grammar derives, byte for byte, on any tokenizer. Any context-free grammar works: left recursion, unbounded
nesting, ambiguity, ε-rules.

The language. Terminals (Lark's ``UPPERCASE`` names and quoted strings and regexes in rules; every character in
GBNF) are lexed greedily, as Lark's contextual lexer does: the lexer runs every terminal the parser allows next,
and the ``%ignore`` ones, in parallel (:mod:`~decoding.constraints.lexer`), and a lexeme ends only where the next
byte extends none of them. All terminals matching the lexeme are then scanned at once (Earley takes the union, so
Lark's terminal priorities are not needed); when none of them is one the parser allows, an ignored terminal skips
it. So ``start: NAME NAME`` with ``%ignore " "`` accepts ``"ab cd"`` but not ``"abcd"``, as Lark does; write a
rule instead of a terminal where a split inside a run of characters is wanted.

The engine. A parse state is a :class:`GrammarState`: the parser's last Earley set (:mod:`~decoding.constraints.
earley`: interned, so inputs that leave the parser in one configuration share it), the lexer state of the current
lexeme, and whether it holds bytes. States are values: SMC copies them, speculative decoding goes back to an earlier
one, equal configurations share successors and masks. A token mask walks the vocabulary's byte trie with the lexer
(:mod:`kernels.trie_lexing`, numba). What a token does inside the current lexeme depends on the lexer state alone,
so that walk is memoised per lexer state, and the parser is consulted only where a token crosses a lexeme boundary:
there the parser scans the lexeme (memoised) and the walk resumes on the subtrees past the boundary from the next
lexeme's start state.

One limit, shared with other greedy-lexing engines: a token is allowed when its bytes lex and every lexeme they
complete parses; with a grammar whose greedy lexing can paint itself into a corner (``A: /a+/``, ``start: A "ab"``
makes ``"aab"`` impossible), a sequence can reach a state no continuation completes (the sampler reports a dead
end). Grammars where lexemes are delimited, JSON among them, never do.

Example:
    >>> g = Grammar('''
    ... start: expr
    ... ?expr: NUMBER | expr "+" expr | "(" expr ")"
    ... %import common.NUMBER
    ... ''')
    >>> g.matches("(1+2)+3"), g.matches("(1+2")
    (True, False)
"""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch

from decoding.constraints.base import DEAD, Constraint, TokenConstraint
from decoding.constraints.cfg import Cfg, GrammarError
from decoding.constraints.earley import EarleySet, EarleyTables
from decoding.constraints.lexer import UNBUILT, Lexer
from decoding.constraints.regex import vocabulary_index
from decoding.constraints.trie_walk import TrieWalker
from decoding.kernels.trie_lexing import lex_tokens

__all__ = ["Grammar", "GrammarError", "GrammarState", "TokenGrammar"]

_SYNTAXES = ("lark", "gbnf")


class GrammarState(NamedTuple):
    """Where a parse stands.

    Attributes:
        chart: the parser after the lexemes completed so far: its last Earley set, which reaches the earlier sets
            it needs through its items' origins (:mod:`~decoding.constraints.earley`; equal sets are one object).
        lex: the lexer state of the current lexeme.
        pending: the current lexeme holds bytes (not yet scanned).
    """

    chart: EarleySet
    lex: int
    pending: bool


class Grammar(Constraint):
    """A context-free grammar as a constraint (see the module docstring).

    Args:
        source: grammar text, or a :class:`~decoding.constraints.cfg.Cfg`.
        syntax: ``"lark"`` (Lark's EBNF, parsed by the ``lark`` package) or ``"gbnf"`` (llama.cpp).
        start: the start rule (default ``start`` for Lark, ``root`` for GBNF).

    Raises:
        GrammarError: a syntax error (with line and column), an undefined rule, an unknown start rule, an empty
            language, or an unsupported construct; all before any model work.
    """

    def __init__(self, source: str | Cfg, syntax: str = "lark", start: str | None = None):
        # the text it was built from (None from a Cfg): what a request carries to another process (decoding.vllm)
        text = isinstance(source, str)
        self.source, self.syntax, self.start = (source, syntax, start) if text else (None, None, None)
        if isinstance(source, Cfg):
            self.cfg = source
        elif not isinstance(source, str):
            raise TypeError(f"source: {type(source).__name__}, expected grammar text (str) or a Cfg")
        elif syntax == "lark":
            from decoding.constraints.lark_grammar import lark_to_cfg
            self.cfg = lark_to_cfg(source, start or "start")
        elif syntax == "gbnf":
            from decoding.constraints.gbnf import gbnf_to_cfg
            self.cfg = gbnf_to_cfg(source, start or "root")
        else:
            raise ValueError(f"syntax: {syntax!r}; use one of {', '.join(map(repr, _SYNTAXES))}")
        self.parser = ByteParser(self.cfg)
        self._bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def from_file(cls, path: str | os.PathLike, start: str | None = None) -> Grammar:
        """A grammar file: ``.gbnf`` is GBNF, anything else Lark."""
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            source = f.read()
        return cls(source, syntax="gbnf" if path.endswith(".gbnf") else "lark", start=start)

    def matches(self, text: str | bytes) -> bool:
        """Whether the whole of ``text`` is in the language (``str`` is UTF-8 encoded)."""
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        state = self.parser.step(self.parser.start(), data)
        return state is not None and self.parser.accepts(state)

    def bind(self, vocabulary, device: str | torch.device = "cpu") -> TokenGrammar:
        """The token-level view over ``vocabulary``; cached per vocabulary object and device."""
        device = torch.device(device)
        per_vocabulary = self._bound.setdefault(vocabulary, {})
        if device not in per_vocabulary:
            per_vocabulary[device] = TokenGrammar(self.parser, vocabulary, device)
        return per_vocabulary[device]

    def __repr__(self) -> str:
        cfg = self.cfg
        return (f"{type(self).__name__}({len(cfg.rules)} rules, {len(cfg.terminals)} terminals, "
                f"start={cfg.nonterminals[cfg.start]!r})")


class ByteParser:
    """The lexer and the Earley tables of one grammar, stepping :class:`GrammarState` values over bytes."""

    def __init__(self, cfg: Cfg):
        self.cfg = cfg
        self.tables = EarleyTables(cfg)
        self.lexer = Lexer(cfg.terminals)
        self.ignore = frozenset(cfg.ignore)

    def start(self) -> GrammarState:
        chart = self.tables.start()
        return GrammarState(chart, self.lexeme_start(chart), False)

    def lexeme_start(self, chart: EarleySet) -> int:
        """The lexer state of an empty lexeme after ``chart`` (memoised on the set)."""
        if chart.lexer_start is None:  # sets predicting alike share one allowed set, and so its hash
            chart.lexer_start = self.lexer.start(chart.allowed | self.ignore if self.ignore else chart.allowed)
        return chart.lexer_start

    def end_lexeme(self, chart: EarleySet, accepted: tuple[int, ...]) -> EarleySet | None:
        """The parser after a lexeme matched by the terminals ``accepted`` ends, or None when none of them may."""
        allowed = chart.allowed
        real = [t for t in accepted if t in allowed]
        if real:
            return self.tables.scan(chart, real)
        return chart if any(t in self.ignore for t in accepted) else None

    def step(self, state: GrammarState, data: bytes) -> GrammarState | None:
        """The state after ``data``, or None once no continuation is possible."""
        chart, lex, pending = state
        lexer = self.lexer
        for b in data:
            nxt = lexer.step(lex, b)
            if nxt < 0:
                if not pending:
                    return None
                chart = self.end_lexeme(chart, lexer.accepts[lex])
                if chart is None:
                    return None
                nxt = lexer.step(self.lexeme_start(chart), b)
                if nxt < 0:
                    return None
            lex, pending = nxt, True
        return GrammarState(chart, lex, pending)

    def next_bytes(self, state: GrammarState) -> np.ndarray:
        """bool ``[256]``: the bytes :meth:`step` takes from ``state`` (a byte that extends the lexeme extends it,
        greedily; any other must start the next lexeme after this one ends)."""
        lexer = self.lexer
        lexer.build_all([state.lex])
        alive = lexer.table[state.lex] >= 0
        if state.pending:
            after = self.end_lexeme(state.chart, lexer.accepts[state.lex])
            fresh = -1 if after is None else self.lexeme_start(after)
            if fresh >= 0:
                lexer.build_all([fresh])
                alive = alive | (lexer.table[fresh] >= 0)
        return alive

    def forced_bytes(self, state: GrammarState, limit: int) -> bytes:
        """The bytes every continuation of ``state`` starts with, up to ``limit``; stops where the text may end."""
        out = bytearray()
        while len(out) < limit and not self.accepts(state):
            alive = np.flatnonzero(self.next_bytes(state))
            if len(alive) != 1:
                break
            out.append(int(alive[0]))
            state = self.step(state, bytes(out[-1:]))
        return bytes(out)

    def accepts(self, state: GrammarState) -> bool:
        """Whether the text so far is a sentence (the pending lexeme, if any, ended)."""
        if not state.pending:
            return state.chart.accepts
        chart = self.end_lexeme(state.chart, self.lexer.accepts[state.lex])
        return chart is not None and chart.accepts


class TokenGrammar(TokenConstraint):
    """A grammar over a vocabulary's token ids; states are :class:`GrammarState` values, ``DEAD`` is ``-1``.

    Masks are memoised at four depths: per state (the last 256 masks); per *signature*, the content of the lexer
    state and of the lexing paths the parser takes past it (states with different charts, in this grammar or
    another on the same vocabulary, share one mask tensor: the last 512); per lexer state (the tokens that stay
    in the current lexeme, and where the others cross a boundary); and per lexing path past boundaries: the key
    ``(lex, terminals ended, next start state, ...)`` fixes which subtrees are walked from which lexer state, so a
    walk past a boundary is done once per path and reused by every parser state that takes it. Walks are also shared
    across grammars on one vocabulary, keyed by content (lexer states' expressions, terminals' languages). What is
    left per mask is the parser's part: one memoised scan per boundary. Do not modify the returned tensors in place.
    """

    def __init__(self, parser: ByteParser, vocabulary, device: str | torch.device = "cpu"):
        self.parser = parser
        self.vocabulary = vocabulary
        self.device = torch.device(device)
        self._index = index = vocabulary_index(vocabulary)
        self._walker = TrieWalker(index.trie, parser.lexer)
        self._eos = np.asarray(vocabulary.eos_token_ids, dtype=np.int64)
        self._inner: OrderedDict = OrderedDict()
        self._shared = _shared_walks(index)
        self._shared_paths = _shared_paths(index)
        self._contents: dict[int, int] = {}  # lexer state -> interned content
        self._language_ids: dict[tuple, int] = {}  # terminals -> interned languages
        self._local_terminals: dict[int, tuple] = {}  # interned languages -> this grammar's terminals
        self._terminal_index = {language: t for t, language in enumerate(parser.cfg.terminals)}
        self._paths: dict[tuple, _Walked] = {}  # lexing path -> its content key and walk
        self._masks: OrderedDict = OrderedDict()
        self._by_signature = _shared_masks(index)  # (device, content of lex and paths taken, accepts) -> mask
        self._forced: dict = {}

    def start(self) -> GrammarState:
        return self.parser.start()

    def advance(self, state, token_id: int):
        """The state after ``token_id``, or ``DEAD``: dead state, special token, or no parse possible."""
        index = self._index
        if self.is_dead(state) or not 0 <= token_id < len(index.special) or index.special[token_id]:
            return DEAD
        nxt = self.parser.step(state, self.vocabulary.token_bytes[token_id])
        return DEAD if nxt is None else nxt

    def is_accepting(self, state) -> bool:
        return not self.is_dead(state) and self.parser.accepts(state)

    def can_finish(self, state) -> bool:
        """Whether the state is alive (see the module docstring for the one limit)."""
        return not self.is_dead(state)

    def advance_batch(self, states, tokens) -> list:
        """``advance`` for every row: the lexer walks all rows in one kernel; only rows whose token crosses a lexeme
        boundary go through the parser. EOS keeps an accepting state; other special tokens kill."""
        tokens = np.asarray(tokens, dtype=np.int64)
        special = self._index.special
        out: list = [DEAD] * len(tokens)
        alive = ~self.dead_batch(states) & (tokens >= 0) & (tokens < len(special))
        safe = np.where(alive, tokens, 0)
        eos = alive & np.isin(safe, self._eos)
        for i in np.flatnonzero(eos).tolist():  # a row ends: EOS keeps an accepting state
            out[i] = states[i] if self.parser.accepts(states[i]) else DEAD
        rows = np.flatnonzero(alive & ~eos & ~special[safe])
        if len(rows):
            self._lex_rows(rows, states, tokens, out)
        return out

    def _lex_rows(self, rows: np.ndarray, states, tokens: np.ndarray, out: list) -> None:
        lexer, index = self.parser.lexer, self._index
        lex = np.asarray([states[i].lex for i in rows.tolist()], dtype=np.int32)
        result, unbuilt = np.empty(len(rows), dtype=np.int32), np.empty(len(rows), dtype=np.int32)
        todo = np.arange(len(rows))
        while len(todo):
            lex_tokens(lexer.table, index.flat, index.offsets, lex[todo], tokens[rows[todo]], result[:len(todo)],
                       unbuilt[:len(todo)])
            again = result[:len(todo)] == UNBUILT
            lexer.build_all(unbuilt[:len(todo)][again].tolist())
            for j, nxt in zip(todo[~again].tolist(), result[:len(todo)][~again].tolist()):
                i = int(rows[j])
                if nxt >= 0:
                    empty = index.offsets[tokens[i] + 1] == index.offsets[tokens[i]]
                    out[i] = GrammarState(states[i].chart, nxt, states[i].pending or not empty)
                else:
                    out[i] = self.advance(states[i], int(tokens[i]))
            todo = todo[again]

    def forced_bytes(self, state, limit: int = 32) -> bytes:
        """The bytes every continuation of ``state`` starts with (memoised per state)."""
        if self.is_dead(state):
            return b""
        key = (state, limit)
        forced = self._forced.get(key)
        if forced is None:
            forced = self._forced[key] = self.parser.forced_bytes(state, limit)
            if len(self._forced) > 4096:
                self._forced.pop(next(iter(self._forced)))
        return forced

    def mask_batch(self, states) -> torch.Tensor:
        """[B, V]: one mask per distinct state, gathered by row."""
        distinct: dict = {}
        rows = [distinct.setdefault(s, len(distinct)) for s in states]
        table = torch.stack([self.mask(s) for s in distinct])
        return table[torch.as_tensor(rows, device=table.device)]

    def mask(self, state) -> torch.Tensor:
        """bool ``[V]``: the tokens ``advance`` keeps alive, and EOS ids iff ``state`` accepts."""
        if self.is_dead(state):
            return torch.zeros(self.vocabulary.size, dtype=torch.bool, device=self.device)
        cached = _recall(self._masks, state)
        if cached is not None:
            return cached
        inside, boundaries = self._inner_walk(state.lex)
        walks: list[_Walked] = []
        self._cross(state.chart, (state.lex,), boundaries, walks)
        accepts = self.parser.accepts(state)
        signature = (self.device, self._content(state.lex), tuple(w.shared_key for w in walks), accepts)
        mask = _recall(self._by_signature, signature)
        if mask is None:  # a new [V] array costs page faults (~0.1 ms at 262k here): shared, they are rarer
            out = inside.copy()
            for w in walks:
                out[w.tokens] = True
            out[self._eos] = accepts
            mask = _remember(self._by_signature, signature, torch.from_numpy(out).to(self.device), _SHARED_MASKS)
        return _remember(self._masks, state, mask)

    def _inner_walk(self, lex: int) -> tuple[np.ndarray, dict[tuple, np.ndarray]]:
        """bool ``[V]``: the tokens that stay inside the lexeme from lexer state ``lex``; and the boundaries keyed by
        the terminals the lexeme matches there. Memoised per state here (the last 256), and across grammars on the
        same vocabulary by the state's content (:func:`_shared_walks`): a JSON string or number terminal is walked
        once per process, not once per schema."""
        cached = _recall(self._inner, lex)
        if cached is None:
            key = self._content(lex)
            shared = self._shared.get(key)
            if shared is None:
                tokens, boundaries = self._walker.from_root(lex)
                inside = np.zeros(self.vocabulary.size, dtype=bool)
                inside[tokens] = True
                inside[self._walker.empty_tokens] = True  # no bytes: the state stays as it is
                inside.flags.writeable = False  # shared: masks copy it
                shared = (inside, self._by_language(boundaries))
                self._shared.put(key, shared)
            inside, by_language = shared
            cached = _remember(self._inner, lex, (inside, self._local(by_language)))
        return cached

    def _content(self, lex: int) -> int:
        """The lexer state's content (:meth:`Lexer.content`), interned (:func:`_interned`): what keys walks across
        grammars."""
        content = self._contents.get(lex)
        if content is None:
            content = self._contents[lex] = _interned(self.parser.lexer.content(lex))
        return content

    def _languages(self, terminals: tuple) -> int:
        """The terminals' languages, interned: how walks shared across grammars name them."""
        languages = self._language_ids.get(terminals)
        if languages is None:
            languages = self._language_ids[terminals] = _interned(
                frozenset(self.parser.cfg.terminals[t] for t in terminals))
        return languages

    def _local(self, by_language: dict[int, np.ndarray]) -> dict[tuple, np.ndarray]:
        """Boundaries keyed by languages (shared across grammars) rekeyed by this grammar's terminal indices."""
        return {self._terminals_of(k): nodes for k, nodes in by_language.items()}

    def _terminals_of(self, languages: int) -> tuple:
        terminals = self._local_terminals.get(languages)
        if terminals is None:
            index = self._terminal_index
            terminals = self._local_terminals[languages] = tuple(sorted(index[r] for r in _INTERNED[languages]))
        return terminals

    def _walk_path(self, key: tuple, nodes: np.ndarray) -> _Walked:
        """The walk of ``nodes`` from the last lexer state of the lexing path ``key`` (lexer states and the
        terminals ending between them). Shared across grammars on this vocabulary by the path's content: the
        lexer states' contents and the terminals' languages fix which subtrees are walked and how. The content
        key extends the key of the path's prefix (walked before it)."""
        prefix = (self._content(key[0]),) if len(key) == 3 else self._paths[key[:-2]].shared_key
        shared_key = prefix + (self._languages(key[-2]), self._content(key[-1]))
        shared = self._shared_paths.get(shared_key)
        if shared is None:
            tokens, more = self._walker.walk(nodes, key[-1])
            shared = (tokens.astype(np.int32), self._by_language(more))
            self._shared_paths.put(shared_key, shared)
        tokens, by_language = shared
        return _Walked(shared_key, tokens, self._local(by_language))

    def _by_language(self, boundaries: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Boundary nodes regrouped by the languages of the terminals the lexeme matches there."""
        grouped: dict = {}
        for end, nodes in boundaries.items():
            grouped.setdefault(self._languages(self.parser.lexer.accepts[end]), []).append(nodes)
        return {k: np.concatenate(parts) for k, parts in grouped.items()}

    def _cross(self, chart: EarleySet, path: tuple, boundaries: dict[tuple, np.ndarray], taken: list[_Walked]) -> None:
        """Append to ``taken`` the walks of the lexing paths past each boundary that the parser takes after ending
        the lexeme there (memoised in ``_paths``): with the lexer state, they fix the mask."""
        for terminals, nodes in boundaries.items():
            after = self.parser.end_lexeme(chart, terminals)
            if after is None:
                continue
            fresh = self.parser.lexeme_start(after)
            if fresh < 0:
                continue
            key = path + (terminals, fresh)
            walked = self._paths.get(key)
            if walked is None:
                walked = self._paths[key] = self._walk_path(key, nodes)
            taken.append(walked)
            if walked.boundaries:
                self._cross(after, key, walked.boundaries, taken)


class _Walked(NamedTuple):
    """A lexing path's walk in one grammar: its content key, the tokens allowed, the boundaries past it."""

    shared_key: tuple
    tokens: np.ndarray
    boundaries: dict[tuple, np.ndarray]


class _SharedWalks:
    """Trie walks keyed by content (lexer states' and terminals' languages), shared by every grammar on one
    vocabulary: ``(tokens, boundary nodes by languages)`` values, the least recently used dropped beyond
    ``max_bytes`` of arrays."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._walks: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._walks)

    def get(self, key: tuple):
        return _recall(self._walks, key)

    def put(self, key: tuple, walk: tuple[np.ndarray, dict]) -> None:
        self._walks[key] = walk
        self.bytes += _size(walk)
        while self.bytes > self.max_bytes and len(self._walks) > 1:
            self.bytes -= _size(self._walks.popitem(last=False)[1])


def _interned(value) -> int:
    """A small int standing for ``value`` (a lexer state's content, a set of terminal languages) in this process:
    the keys of walks shared across grammars hash as ints, not as nested tuples of expressions."""
    i = _INTERN_IDS.get(value)
    if i is None:
        i = _INTERN_IDS[value] = len(_INTERNED)
        _INTERNED.append(value)
    return i


_INTERN_IDS: dict = {}
_INTERNED: list = []  # id -> value


def _recall(cache: OrderedDict, key):
    """``cache[key]`` (None if absent), marked most recently used."""
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
    return value


def _remember(cache: OrderedDict, key, value, limit: int = 256):
    """Store ``value`` under ``key``, dropping the least recently used entry past ``limit``; returns ``value``."""
    cache[key] = value
    if len(cache) > limit:
        cache.popitem(last=False)
    return value


def _size(walk: tuple[np.ndarray, dict]) -> int:
    tokens, more = walk
    return tokens.nbytes + sum(nodes.nbytes for nodes in more.values())


# per vocabulary across grammars: walks from lexer states (a bool [V] each: 256 KB at 262k tokens) and past
# lexeme boundaries (token ids)
_ROOT_WALK_BYTES, _PATH_WALK_BYTES = 128 << 20, 64 << 20
_SHARED_MASKS = 512  # signature masks per vocabulary (128 MB at 262k tokens)
_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _shared_walks(index) -> _SharedWalks:
    """The walks from the trie root keyed by lexer-state content, shared by every grammar on one vocabulary."""
    return _stores(index)[0]


def _shared_paths(index) -> _SharedWalks:
    """The walks past lexeme boundaries keyed by lexing-path content, shared by every grammar on one vocabulary."""
    return _stores(index)[1]


def _shared_masks(index) -> OrderedDict:
    """Masks keyed by device and content signature (the lexer state's and the taken paths' contents, accepts),
    shared by every grammar on one vocabulary: the mask is their union, so equal keys mean equal masks."""
    return _stores(index)[2]


def _stores(index) -> tuple[_SharedWalks, _SharedWalks, OrderedDict]:
    stores = _STORES.get(index)
    if stores is None:
        stores = _STORES[index] = (_SharedWalks(_ROOT_WALK_BYTES), _SharedWalks(_PATH_WALK_BYTES), OrderedDict())
    return stores
