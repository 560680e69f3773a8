"""Earley's recogniser over lexemes, with interned sets: a parse is its last Earley set, and equal sets are one object.

J. Earley, "An efficient context-free parsing algorithm", CACM 1970, with the nullable-symbol fix of J. Aycock and
R. N. Horspool, "Practical Earley parsing", The Computer Journal 2002 (predicting a nullable nonterminal also moves
the dot over it, so no completion inside one set is ever missed). It accepts every context-free grammar: left and
right recursion, ε-rules, ambiguity.

An item's origin is the :class:`EarleySet` it started in (the object, not a position), so a set alone fixes every
continuation of the input: completions reach back through the origins, and the sets no item points at are never
consulted again. Sets are interned per grammar by their items and whether they accept, so inputs that leave the
parser in the same configuration (the third and the seventh element of a list, say) reach the same set object
and share its memoised scans, its lexer start state, and the token masks keyed on it. :meth:`EarleyTables.scan`
returns a set and never changes one, so a sampler may hold many parse states, copy them for free (SMC) and go back
to an earlier one (speculative decoding). Sets point only at earlier sets (an item predicted in a set names no
origin), and the memos live in the tables, so a grammar's sets are freed by reference counting, with no cycles
for the garbage collector to find.

Example:
    >>> from decoding.constraints import rx
    >>> from decoding.constraints.cfg import GrammarBuilder
    >>> g = GrammarBuilder(); s = g.nonterminal("s"); a = g.terminal(rx.literal("a"))
    >>> g.rule(s, [s, a]); g.rule(s, [])      # left recursion and an ε-rule
    >>> tables = EarleyTables(g.build(s))
    >>> first = tables.start(); after_a = tables.scan(first, [~a])
    >>> first.accepts, after_a.accepts
    (True, True)
    >>> tables.scan(after_a, [~a]) is after_a      # after "a" and "aa" the parser is in one configuration
    True
"""

from __future__ import annotations

from collections.abc import Iterable

from decoding.constraints.cfg import Cfg, deriving

__all__ = ["EarleySet", "EarleyTables"]

_END = None  # the "next symbol" of a completed item
_MAX_SETS = 1 << 14  # interned sets and memoised scans per grammar
_UNSEEN = object()


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
            self.next_symbol += rhs
            self.next_symbol.append(_END)
            self.lhs += [lhs] * (len(rhs) + 1)
        self.nullable = _nullable(cfg)
        self._predicted: dict[frozenset, tuple[dict[int, tuple[int, ...]], frozenset]] = {}
        self._sets: dict[tuple, EarleySet] = {}  # by content; cleared past _MAX_SETS (states keep theirs)
        self._scans: dict[tuple[EarleySet, frozenset], EarleySet | None] = {}

    def start(self) -> EarleySet:
        """The set before any input (one object until the intern table is cleared)."""
        start = self.cfg.start
        first = self.intern({}, frozenset([start]), self.nullable[start])
        first.initial = True  # no later set carries nothing while predicting the start symbol: the key is its own
        return first

    def scan(self, chart: EarleySet, terminals: Iterable[int]) -> EarleySet | None:
        """The set after ``chart`` and one lexeme matched by all of ``terminals`` (terminal indices), or None when
        the parser takes none of them. Memoised."""
        key = (chart, frozenset(terminals))
        out = self._scans.get(key, _UNSEEN)
        if out is _UNSEEN:
            seeds = [(item + 1, chart if origin is None else origin)
                     for t in key[1] for item, origin in chart.waiting(~t)]
            if len(self._scans) >= _MAX_SETS:
                self._scans.clear()
            out = self._scans[key] = _closure(self, seeds) if seeds else None
        return out

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

    def intern(self, carried: dict[int, list[tuple[int, EarleySet]]], roots: frozenset, accepts: bool) -> EarleySet:
        """The set holding the items ``carried`` (grouped by the symbol they wait for), predicting ``roots``: the
        interned object when there is an equal one. Equal items (with the same origin objects) and roots mean equal
        continuations; ``accepts`` depends on the complete items, which are not kept, so it is in the key."""
        key = (frozenset([entry for items in carried.values() for entry in items]), roots, accepts)
        found = self._sets.get(key)
        if found is None:
            if len(self._sets) >= _MAX_SETS:  # a bound on memory: an equal set made later is then another object
                self._sets.clear()
            found = self._sets[key] = EarleySet(carried, self.predicted(roots), accepts)
        return found


def _nullable(cfg: Cfg) -> list[bool]:
    nullable = [False] * len(cfg.nonterminals)
    for a in deriving(cfg.rules, [False] * len(cfg.terminals))[0]:
        nullable[a] = True
    return nullable


class EarleySet:
    """An Earley set: the items ``(item, origin set)`` grouped by the symbol they wait for. Get the first from
    :meth:`EarleyTables.start` and the others from :meth:`EarleyTables.scan` (interned: never construct one).

    The items a set predicts (their origin is the set itself) are a memoised table shared by every set with the
    same predicted nonterminals (:meth:`EarleyTables.predicted`); only the items carried over from earlier sets
    are stored per set.

    Attributes:
        carried: the items from earlier sets by the symbol they wait for.
        allowed: the terminals some item waits for (the lexemes that may come next), as terminal indices.
        accepts: a complete start item that began in the first set is present (the input so far is a sentence).
        initial: this is the first set (before any input).
        lexer_start: the lexer's state for a new lexeme here (set by the lexer's owner).
    """

    __slots__ = ("carried", "predicted", "allowed", "accepts", "initial", "lexer_start", "_waiting")

    def __init__(self, carried: dict[int, list[tuple[int, EarleySet]]],
                 predicted: tuple[dict[int, tuple[int, ...]], frozenset], accepts: bool):
        self.carried = carried
        self.predicted, allowed = predicted
        scanned = [~s for s in carried if s < 0]
        self.allowed = allowed.union(scanned) if scanned else allowed  # shared by sets predicting alike
        self.accepts = accepts
        self.initial = False
        self.lexer_start: int | None = None
        self._waiting: dict[int, list[tuple[int, EarleySet | None]]] = {}

    def waiting(self, symbol: int) -> list[tuple[int, EarleySet | None]]:
        """The items ``(item, origin)`` whose next symbol is ``symbol`` (memoised); the origin of an item this set
        predicted is None (this set: no set points at itself)."""
        items = self._waiting.get(symbol)
        if items is None:
            items = self._waiting[symbol] = self.carried.get(symbol, []) + [
                (item, None) for item in self.predicted.get(symbol, ())]
        return items


def _closure(tables: EarleyTables, seeds: list[tuple[int, EarleySet]]) -> EarleySet:
    """Complete from ``seeds`` (all begun in earlier sets) until nothing new; predictions come from the memo."""
    next_symbol, lhs, nullable = tables.next_symbol, tables.lhs, tables.nullable
    start = tables.cfg.start
    seen = set(seeds)
    agenda = list(seen)
    carried: dict[int, list[tuple[int, EarleySet]]] = {}
    accepts = False
    while agenda:
        entry = agenda.pop()
        item, origin = entry
        symbol = next_symbol[item]
        if symbol is _END:
            a = lhs[item]
            accepts = accepts or (a == start and origin.initial)
            for parent, parent_origin in origin.waiting(a):
                nxt = (parent + 1, origin if parent_origin is None else parent_origin)
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
    return tables.intern(carried, frozenset(s for s in carried if s >= 0), accepts)
