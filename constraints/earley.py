"""Earley's recogniser over lexemes, with interned sets: a parse is its last Earley set, and equal sets are one object.

J. Earley, "An efficient context-free parsing algorithm", CACM 1970, with the nullable-symbol fix of J. Aycock and
R. N. Horspool, "Practical Earley parsing", The Computer Journal 2002 (predicting a nullable nonterminal also moves
the dot over it, so no completion inside one set is ever missed). It accepts every context-free grammar: left and
right recursion, ε-rules, ambiguity.

An item's origin is the :class:`EarleySet` it started in (the object, not a position), so a set alone fixes every
continuation of the input: completions reach back through the origins, and the sets no item points at are never
consulted again. Sets are interned per grammar by their items and whether they accept, so inputs that leave the
parser in the same configuration (the third and the seventh element of a list, say) reach the same set object
and share its memoised scans, its lexer start state, and the token masks keyed on it. :meth:`EarleySet.scan`
returns a set and never changes one, so a sampler may hold many parse states, copy them for free (SMC) and go back
to an earlier one (speculative decoding).

Example:
    >>> from decoding.constraints import rx
    >>> from decoding.constraints.cfg import GrammarBuilder
    >>> g = GrammarBuilder(); s = g.nonterminal("s"); a = g.terminal(rx.literal("a"))
    >>> g.rule(s, [s, a]); g.rule(s, [])      # left recursion and an ε-rule
    >>> first = EarleyTables(g.build(s)).start()
    >>> first.accepts, first.scan([~a]).scan([~a]).accepts
    (True, True)
    >>> first.scan([~a]).scan([~a]) is first.scan([~a])      # after "a" and "aa" the parser is in one configuration
    True
"""

from __future__ import annotations

from collections.abc import Iterable

from decoding.constraints.cfg import Cfg, deriving

__all__ = ["EarleySet", "EarleyTables"]

_END = None  # the "next symbol" of a completed item
_MAX_SETS = 1 << 14  # interned sets per grammar


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
        self._sets: dict[tuple, EarleySet] = {}  # by content; cleared past _MAX_SETS (states keep their sets)

    def start(self) -> EarleySet:
        """The set before any input (the same object while some parse state holds it)."""
        start = self.cfg.start
        first = self.intern({}, frozenset([start]), self.nullable[start])
        first.initial = True  # no later set carries nothing while predicting the start symbol: the key is its own
        return first

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
        existing object when an equal set is alive. Equal items (with the same origin objects) and roots mean
        equal continuations; ``accepts`` depends on the complete items, which are not kept, so it is in the key."""
        key = (frozenset([entry for items in carried.values() for entry in items]), roots, accepts)
        found = self._sets.get(key)
        if found is None:
            if len(self._sets) >= _MAX_SETS:  # a bound on memory: an equal set made later is then another object
                self._sets.clear()
            found = self._sets[key] = EarleySet(self, carried, self.predicted(roots), accepts)
        return found


def _nullable(cfg: Cfg) -> list[bool]:
    nullable = [False] * len(cfg.nonterminals)
    for a in deriving(cfg.rules, [False] * len(cfg.terminals))[0]:
        nullable[a] = True
    return nullable


class EarleySet:
    """An Earley set: the items ``(item, origin set)`` grouped by the symbol they wait for. Get the first from
    :meth:`EarleyTables.start` and the others from :meth:`scan` (sets are interned: never construct one).

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

    __slots__ = ("tables", "carried", "predicted", "allowed", "accepts", "initial", "lexer_start", "_waiting",
                 "_scans", "__weakref__")

    def __init__(self, tables: EarleyTables, carried: dict[int, list[tuple[int, EarleySet]]],
                 predicted: tuple[dict[int, tuple[int, ...]], frozenset], accepts: bool):
        self.tables = tables
        self.carried = carried
        self.predicted, allowed = predicted
        scanned = [~s for s in carried if s < 0]
        self.allowed = allowed.union(scanned) if scanned else allowed  # shared by sets predicting alike
        self.accepts = accepts
        self.initial = False
        self.lexer_start: int | None = None
        self._waiting: dict[int, list[tuple[int, EarleySet]]] = {}
        self._scans: dict[frozenset, EarleySet | None] = {}

    def waiting(self, symbol: int) -> list[tuple[int, EarleySet]]:
        """The items ``(item, origin)`` whose next symbol is ``symbol`` (memoised)."""
        items = self._waiting.get(symbol)
        if items is None:
            items = self._waiting[symbol] = self.carried.get(symbol, []) + [
                (item, self) for item in self.predicted.get(symbol, ())]
        return items

    def scan(self, terminals: Iterable[int]) -> EarleySet | None:
        """The set after one lexeme matched by all of ``terminals`` (terminal indices), or None when the parser
        takes none of them. Memoised."""
        key = frozenset(terminals)
        if key not in self._scans:
            seeds = [(item + 1, origin) for t in key for item, origin in self.waiting(~t)]
            self._scans[key] = _closure(self.tables, seeds) if seeds else None
        return self._scans[key]


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
    return tables.intern(carried, frozenset(s for s in carried if s >= 0), accepts)
