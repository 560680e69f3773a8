"""Earley's recogniser over lexemes, as a persistent chart: every parse state is a value that can be kept and shared.

J. Earley, "An efficient context-free parsing algorithm", CACM 1970, with the nullable-symbol fix of J. Aycock and
R. N. Horspool, "Practical Earley parsing", The Computer Journal 2002 (predicting a nullable nonterminal also moves
the dot over it, so no completion inside one set is ever missed). It accepts every context-free grammar: left and
right recursion, ε-rules, ambiguity.

A :class:`Chart` is a tuple of Earley sets; :meth:`Chart.scan` returns a *new* chart one set longer and never
changes the old one, so a sampler may hold many states, copy them for free (SMC) and go back to an earlier one
(speculative decoding). Scans are memoised on the chart, so equal histories share their successors.

Example:
    >>> from decoding.constraints import rx
    >>> from decoding.constraints.cfg import GrammarBuilder
    >>> g = GrammarBuilder(); s = g.nonterminal("s"); a = g.terminal(rx.literal("a"))
    >>> g.rule(s, [s, a]); g.rule(s, [])      # left recursion and an ε-rule
    >>> chart = Chart.start(EarleyTables(g.build(s)))
    >>> chart.accepts, chart.scan([~a]).scan([~a]).accepts
    (True, True)
"""

from __future__ import annotations

from collections.abc import Iterable

from decoding.constraints.cfg import Cfg

__all__ = ["Chart", "EarleySet", "EarleyTables"]

_END = None  # the "next symbol" of a completed item


class EarleyTables:
    """The grammar as dotted items: item ``i`` is a rule with the dot at some position; ``i + 1`` moves the dot.

    Attributes:
        cfg: the grammar.
        next_symbol: per item, the symbol after the dot, or None when the item is complete.
        lhs: per item, its rule's left-hand side.
        predictions: per nonterminal, the items of its rules with the dot at the start.
        nullable: per nonterminal, whether it derives the empty string.
    """

    def __init__(self, cfg: Cfg):
        self.cfg = cfg
        self.next_symbol: list[int | None] = []
        self.lhs: list[int] = []
        self.predictions: list[list[int]] = [[] for _ in cfg.nonterminals]
        for lhs, rhs in cfg.rules:
            self.predictions[lhs].append(len(self.next_symbol))
            for symbol in rhs:
                self.next_symbol.append(symbol)
                self.lhs.append(lhs)
            self.next_symbol.append(_END)
            self.lhs.append(lhs)
        self.nullable = _nullable(cfg)


def _nullable(cfg: Cfg) -> list[bool]:
    nullable = [False] * len(cfg.nonterminals)
    changed = True
    while changed:
        changed = False
        for lhs, rhs in cfg.rules:
            if not nullable[lhs] and all(s >= 0 and nullable[s] for s in rhs):
                nullable[lhs] = changed = True
    return nullable


class EarleySet:
    """One Earley set: its items ``(item, origin)`` grouped by the symbol they wait for.

    Attributes:
        waiting: symbol -> the items whose next symbol it is.
        allowed: the terminals some item waits for (the lexemes that may come next), as terminal indices.
        accepts: a complete start item with origin 0 is present (the input so far is a sentence).
    """

    __slots__ = ("waiting", "allowed", "accepts", "lexer_start")

    def __init__(self, waiting: dict[int, list[tuple[int, int]]], accepts: bool):
        self.waiting = waiting
        self.allowed = frozenset(~s for s in waiting if s < 0)
        self.accepts = accepts
        self.lexer_start: int | None = None  # the lexer's state for a new lexeme here (set by the lexer's owner)


class Chart:
    """A persistent Earley chart (see the module docstring). Build the first with :meth:`start`."""

    __slots__ = ("tables", "sets", "_scans", "__weakref__")

    def __init__(self, tables: EarleyTables, sets: tuple[EarleySet, ...]):
        self.tables = tables
        self.sets = sets
        self._scans: dict[frozenset, Chart | None] = {}

    @classmethod
    def start(cls, tables: EarleyTables) -> Chart:
        seeds = [(item, 0) for item in tables.predictions[tables.cfg.start]]
        return cls(tables, (_closure(tables, seeds, ()),))

    @property
    def last(self) -> EarleySet:
        return self.sets[-1]

    @property
    def accepts(self) -> bool:
        return self.sets[-1].accepts

    @property
    def allowed(self) -> frozenset:
        return self.sets[-1].allowed

    def scan(self, terminals: Iterable[int]) -> Chart | None:
        """The chart after one lexeme matched by all of ``terminals`` (terminal indices), or None when the parser
        takes none of them. Memoised."""
        key = frozenset(terminals)
        if key not in self._scans:
            waiting = self.sets[-1].waiting
            seeds = [(item + 1, origin) for t in key for item, origin in waiting.get(~t, ())]
            self._scans[key] = Chart(self.tables, self.sets + (_closure(self.tables, seeds, self.sets),)) \
                if seeds else None
        return self._scans[key]


def _closure(tables: EarleyTables, seeds: list[tuple[int, int]], previous: tuple[EarleySet, ...]) -> EarleySet:
    """Predict and complete from ``seeds`` until nothing new: the set at index ``len(previous)``."""
    k = len(previous)
    next_symbol, lhs, nullable = tables.next_symbol, tables.lhs, tables.nullable
    start = tables.cfg.start
    seen = set(seeds)
    agenda = list(seen)
    waiting: dict[int, list[tuple[int, int]]] = {}
    accepts = False

    def add(entry: tuple[int, int]) -> None:
        if entry not in seen:
            seen.add(entry)
            agenda.append(entry)

    while agenda:
        item, origin = agenda.pop()
        symbol = next_symbol[item]
        if symbol is _END:
            a = lhs[item]
            if a == start and origin == 0:
                accepts = True
            if origin < k:  # completions within this set come from the nullable rule at prediction
                for parent, parent_origin in previous[origin].waiting.get(a, ()):
                    add((parent + 1, parent_origin))
            continue
        items = waiting.get(symbol)
        if items is None:
            items = waiting[symbol] = []
            if symbol >= 0:
                for predicted in tables.predictions[symbol]:
                    add((predicted, k))
        items.append((item, origin))
        if symbol >= 0 and nullable[symbol]:
            add((item + 1, origin))
    return EarleySet(waiting, accepts)
