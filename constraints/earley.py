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

from decoding.constraints.cfg import Cfg, deriving

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
        self._predicted: dict[frozenset, tuple[dict[int, tuple[int, ...]], frozenset]] = {}

    def predicted(self, roots: frozenset) -> tuple[dict[int, tuple[int, ...]], frozenset]:
        """The items a set predicts for the nonterminals ``roots``, transitively (their origin is the set itself),
        grouped by the symbol they wait for; and the terminals they wait for. Depends on nothing but ``roots``, so
        it is memoised."""
        out = self._predicted.get(roots)
        if out is None:
            waiting: dict[int, list[int]] = {}
            seen_items: set[int] = set()
            expanded = set(roots)
            agenda = [item for a in roots for item in self.predictions[a]]
            while agenda:
                item = agenda.pop()
                if item in seen_items:
                    continue
                seen_items.add(item)
                symbol = self.next_symbol[item]
                if symbol is _END:
                    continue  # an ε-completion inside the set: the nullable rule already moved its parents
                waiting.setdefault(symbol, []).append(item)
                if symbol >= 0:
                    if symbol not in expanded:
                        expanded.add(symbol)
                        agenda += self.predictions[symbol]
                    if self.nullable[symbol]:
                        agenda.append(item + 1)
            out = self._predicted[roots] = ({symbol: tuple(items) for symbol, items in waiting.items()},
                                            frozenset(~s for s in waiting if s < 0))
        return out


def _nullable(cfg: Cfg) -> list[bool]:
    nullable = [False] * len(cfg.nonterminals)
    for a in deriving(cfg.rules, [False] * len(cfg.terminals))[0]:
        nullable[a] = True
    return nullable


class EarleySet:
    """One Earley set ``k``: the items ``(item, origin)`` grouped by the symbol they wait for.

    The items that set ``k`` predicts (origin ``k``) are a memoised table shared by every set with the same
    predicted nonterminals (:meth:`EarleyTables.predicted`); only the items carried over from earlier sets are
    stored per set.

    Attributes:
        index: ``k``.
        allowed: the terminals some item waits for (the lexemes that may come next), as terminal indices.
        accepts: a complete start item with origin 0 is present (the input so far is a sentence).
        lexer_start: the lexer's state for a new lexeme here (set by the lexer's owner).
    """

    __slots__ = ("index", "carried", "predicted", "allowed", "accepts", "lexer_start", "_waiting")

    def __init__(self, index: int, carried: dict[int, list[tuple[int, int]]],
                 predicted: tuple[dict[int, tuple[int, ...]], frozenset], accepts: bool):
        self.index = index
        self.carried = carried
        self.predicted, allowed = predicted
        scanned = [~s for s in carried if s < 0]
        self.allowed = allowed.union(scanned) if scanned else allowed  # shared by sets predicting alike
        self.accepts = accepts
        self.lexer_start: int | None = None
        self._waiting: dict[int, list[tuple[int, int]]] = {}

    def waiting(self, symbol: int) -> list[tuple[int, int]]:
        """The items ``(item, origin)`` whose next symbol is ``symbol`` (memoised)."""
        items = self._waiting.get(symbol)
        if items is None:
            k = self.index
            items = self._waiting[symbol] = self.carried.get(symbol, []) + [
                (item, k) for item in self.predicted.get(symbol, ())]
        return items


class Chart:
    """A persistent Earley chart (see the module docstring). Build the first with :meth:`start`."""

    __slots__ = ("tables", "sets", "_scans", "__weakref__")

    def __init__(self, tables: EarleyTables, sets: tuple[EarleySet, ...]):
        self.tables = tables
        self.sets = sets
        self._scans: dict[frozenset, Chart | None] = {}

    @classmethod
    def start(cls, tables: EarleyTables) -> Chart:
        start = tables.cfg.start
        return cls(tables, (EarleySet(0, {}, tables.predicted(frozenset([start])), tables.nullable[start]),))

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
            last = self.sets[-1]
            seeds = [(item + 1, origin) for t in key for item, origin in last.waiting(~t)]
            self._scans[key] = Chart(self.tables, self.sets + (_closure(self.tables, seeds, self.sets),)) \
                if seeds else None
        return self._scans[key]


def _closure(tables: EarleyTables, seeds: list[tuple[int, int]], previous: tuple[EarleySet, ...]) -> EarleySet:
    """Complete from ``seeds`` (all from earlier sets) until nothing new; predictions come from the memo."""
    k = len(previous)
    next_symbol, lhs, nullable, start = tables.next_symbol, tables.lhs, tables.nullable, tables.cfg.start
    seen = set(seeds)
    agenda = list(seen)
    carried: dict[int, list[tuple[int, int]]] = {}
    accepts = False
    while agenda:
        entry = agenda.pop()
        item, origin = entry
        symbol = next_symbol[item]
        if symbol is _END:
            a = lhs[item]
            accepts = accepts or (a == start and origin == 0)
            for parent, parent_origin in previous[origin].waiting(a):
                nxt = (parent + 1, parent_origin)
                if nxt not in seen:
                    seen.add(nxt)
                    agenda.append(nxt)
            continue
        carried.setdefault(symbol, []).append(entry)
        if symbol >= 0 and nullable[symbol]:
            nxt = (item + 1, origin)
            if nxt not in seen:
                seen.add(nxt)
                agenda.append(nxt)
    roots = frozenset(s for s in carried if s >= 0)
    return EarleySet(k, carried, tables.predicted(roots), accepts)
