"""Context-free grammars over regular terminals: the intermediate form every grammar front end produces.

A :class:`Cfg` has terminals (byte languages, :mod:`~decoding.constraints.rx` expressions), nonterminals, rules
``A -> X1 ... Xn`` over both, a start nonterminal and the terminals skipped between lexemes (``%ignore``). Symbols
are ints: a nonterminal is its index ``>= 0``, terminal ``t`` is ``~t`` (negative). Front ends (Lark, GBNF, JSON
Schema) build one with :class:`GrammarBuilder`, which checks it the way a user needs: every rule used is defined,
the start symbol derives some text, and terminals that match the empty string are split into "non-empty or
absent" (a lexeme is never empty).

Example:
    >>> from decoding.constraints import rx
    >>> g = GrammarBuilder()
    >>> expr, num = g.nonterminal("expr"), g.terminal(rx.from_regex("[0-9]+"), "NUM")
    >>> g.rule(expr, [num]); g.rule(expr, [g.terminal(rx.literal("(")), expr, g.terminal(rx.literal(")"))])
    >>> cfg = g.build(expr)
    >>> len(cfg.rules), cfg.nonterminals[cfg.start]
    (2, 'expr')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from decoding.constraints import rx

__all__ = ["Cfg", "GrammarBuilder", "GrammarError", "deriving"]


class GrammarError(ValueError):
    """A grammar that cannot be used: undefined or unproductive rules, an empty language, bad syntax."""


@dataclass(frozen=True)
class Cfg:
    """A checked context-free grammar (see the module docstring).

    Attributes:
        terminals: each terminal's language (never containing the empty string).
        terminal_names: for messages.
        nonterminals: names, indexed by symbol.
        rules: ``(lhs, rhs)`` pairs; ``rhs`` a tuple of symbols.
        start: the start nonterminal.
        ignore: terminals skipped between lexemes.
    """

    terminals: tuple[rx.Rx, ...]
    terminal_names: tuple[str, ...]
    nonterminals: tuple[str, ...]
    rules: tuple[tuple[int, tuple[int, ...]], ...]
    start: int
    ignore: tuple[int, ...] = ()

    def symbol_name(self, symbol: int) -> str:
        return self.nonterminals[symbol] if symbol >= 0 else self.terminal_names[~symbol]


class GrammarBuilder:
    """Collects terminals, nonterminals and rules; :meth:`build` checks them into a :class:`Cfg`.

    Terminals are interned by expression: the same language asked for twice is one terminal (so the lexer never
    sees two identical candidates).
    """

    def __init__(self) -> None:
        self._terminals: list[rx.Rx] = []
        self._terminal_names: list[str] = []
        self._terminal_of: dict[rx.Rx, int] = {}
        self._nonterminals: list[str] = []
        self._names: set[str] = set()
        self._suffix: dict[str, int] = {}
        self._rules: list[tuple[int, tuple[int, ...]]] = []
        self._ignore: list[int] = []

    def terminal(self, language: rx.Rx, name: str | None = None) -> int:
        """The symbol of the terminal matching ``language`` (created on first use)."""
        t = self._terminal_of.get(language)
        if t is None:
            t = self._terminal_of[language] = len(self._terminals)
            self._terminals.append(language)
            self._terminal_names.append(name or _show_terminal(language))
        return ~t

    def nonterminal(self, name: str) -> int:
        """A new nonterminal; a name already taken gets a numeric suffix."""
        unique = name
        while unique in self._names:  # the next free suffix for this name, remembered: no rescans
            self._suffix[name] = self._suffix.get(name, 1) + 1
            unique = f"{name}_{self._suffix[name]}"
        self._names.add(unique)
        self._nonterminals.append(unique)
        return len(self._nonterminals) - 1

    def rule(self, lhs: int, rhs: Sequence[int]) -> None:
        """Add the alternative ``lhs -> rhs`` (an empty ``rhs`` derives the empty string)."""
        if not 0 <= lhs < len(self._nonterminals):
            raise GrammarError(f"rule: lhs {lhs} is not a nonterminal of this builder")
        rhs = tuple(rhs)
        if rhs and (max(rhs) >= len(self._nonterminals) or ~min(rhs) >= len(self._terminals)):
            bad = max(rhs) if max(rhs) >= len(self._nonterminals) else min(rhs)
            raise GrammarError(f"rule: symbol {bad} is not a symbol of this builder")
        self._rules.append((lhs, rhs))

    def ignore(self, language: rx.Rx, name: str | None = None) -> None:
        """Skip ``language`` between lexemes (Lark's ``%ignore``)."""
        self._ignore.append(~self.terminal(language, name))

    def build(self, start: int) -> Cfg:
        """The checked grammar.

        Raises:
            GrammarError: a nonterminal used but never defined, or a start symbol that derives no text.
        """
        defined = {lhs for lhs, _ in self._rules}
        for lhs, rhs in self._rules:
            for s in rhs:
                if s >= 0 and s not in defined:
                    raise GrammarError(f"rule {self._nonterminals[s]!r} is used by {self._nonterminals[lhs]!r} "
                                       f"but never defined")
        if start not in defined:
            raise GrammarError(f"start rule {self._nonterminals[start]!r} has no definition")
        terminals, rules, names = self._split_nullable_terminals()
        rules = _productive_rules(rules, [rx.is_live(t) for t in terminals])
        if not any(lhs == start for lhs, _ in rules):
            raise GrammarError(f"the grammar's language is empty: {self._nonterminals[start]!r} derives no text")
        rules = _reachable_rules(rules, start)
        return Cfg(tuple(terminals), tuple(self._terminal_names), tuple(names), tuple(rules), start,
                   tuple(t for t in dict.fromkeys(self._ignore) if not self._terminals[t].nullable))

    def _split_nullable_terminals(self) -> tuple[list[rx.Rx], list[tuple[int, tuple[int, ...]]], list[str]]:
        """Terminals matching ε become "the non-empty part, or nothing" through a new nonterminal."""
        terminals = [rx.difference(t, rx.EPSILON) if t.nullable else t for t in self._terminals]
        names = list(self._nonterminals)
        optional: dict[int, int] = {}
        rules = []
        for t, language in enumerate(self._terminals):
            if language.nullable:
                optional[~t] = len(names)
                names.append(f"{self._terminal_names[t]}?")
                rules += [(optional[~t], (~t,)), (optional[~t], ())]
        rules += [(lhs, tuple(optional.get(s, s) for s in rhs)) for lhs, rhs in self._rules] if optional \
            else self._rules
        return terminals, rules, names


def _productive_rules(rules: list, live_terminals: list[bool]) -> list:
    """The rules whose every symbol derives some text."""
    return [rules[r] for r in deriving(rules, live_terminals)[1]]


def deriving(rules: Sequence[tuple[int, tuple[int, ...]]], usable: Sequence[bool]) -> tuple[set[int], list[int]]:
    """The nonterminals that derive a string of usable terminals only (``usable[t]``; none usable: the empty
    string), and the indices of the rules all of whose symbols do. A worklist over the rules waiting on each
    nonterminal, so each rule is looked at once per symbol in its body (linear, even for long chains of rules).

    Example:
        >>> deriving([(0, (1, ~0)), (1, ()), (2, (2,))], [True])       # 2 -> 2 never ends
        ({0, 1}, [0, 1])
    """
    missing = []  # per rule, its body's nonterminal occurrences not yet known to derive (-1: never)
    waiting: dict[int, list[int]] = {}  # nonterminal -> the rules waiting on it, once per occurrence
    agenda = []
    for r, (lhs, rhs) in enumerate(rules):
        count = 0
        for s in rhs:
            if s >= 0:
                count += 1
                waiting.setdefault(s, []).append(r)
            elif not usable[~s]:
                count = -1  # an unusable terminal: never
                break
        missing.append(count)
        if count == 0:
            agenda.append(lhs)
    found: set[int] = set()
    while agenda:
        a = agenda.pop()
        if a in found:
            continue
        found.add(a)
        for r in waiting.get(a, ()):
            if missing[r] > 0:
                missing[r] -= 1
                if missing[r] == 0:
                    agenda.append(rules[r][0])
    return found, [r for r, m in enumerate(missing) if m == 0]


def _reachable_rules(rules: list, start: int) -> list:
    by_lhs: dict[int, list] = {}
    for lhs, rhs in rules:
        by_lhs.setdefault(lhs, []).append(rhs)
    seen, stack = {start}, [start]
    while stack:
        for rhs in by_lhs.get(stack.pop(), ()):
            for s in rhs:
                if s >= 0 and s not in seen:
                    seen.add(s)
                    stack.append(s)
    return [(lhs, rhs) for lhs, rhs in rules if lhs in seen]


def _show_terminal(language: rx.Rx) -> str:
    return repr(language)[3:-1]
