"""Lark's grammar syntax as a :class:`~decoding.constraints.cfg.Cfg`, read by the ``lark`` package itself.

Lark's own loader (``lark.load_grammar``) parses the text and compiles it to plain rules, so everything Lark's
grammar language means is taken from Lark: ``?rule`` and ``_rule`` inlining and aliases (tree shaping only: the
language is unchanged), EBNF operators (``* + ? [ ] ~ m..n``), templates, ``%import common.*``, ``%ignore``. This
module then writes each terminal as a byte language (:mod:`~decoding.constraints.rx`): a string is a literal (with
``i``, ASCII case-insensitive), a regex goes through :func:`~decoding.constraints.rx.from_regex` with its flags.

Where the language differs from Lark's parsers:

- Terminal priorities (``A.2: ...``) are ignored: the lexer scans every terminal that matches a lexeme and the
  parser keeps those it can use (see :mod:`~decoding.constraints.grammar` for the greedy lexing).
- A regex with a lazy quantifier (``*? +? ?? {m,n}?``) matches its *shortest* lexemes: the strings of its
  language with no proper prefix in the language, which is what ``re.match`` returns for the usual
  ``"/*" /(.|\\n)*?/ "*/"``. A regex mixing lazy and greedy quantifiers may differ from Python's choice.
- Look-around is refused, except Lark's own idiom for an escaped string (``common.ESCAPED_STRING`` and anything
  built on ``_STRING_ESC_INNER``), which is rewritten to the equivalent ``(?:[^\\\\\\n]|\\\\[^\\n])*?``.
- ``%declare`` terminals are refused: nothing says how to lex them.

Example:
    >>> cfg = lark_to_cfg('''
    ... start: sum
    ... ?sum: sum "+" NUMBER | NUMBER
    ... %import common.NUMBER
    ... %ignore " "
    ... ''')
    >>> cfg.nonterminals[cfg.start], sorted(cfg.terminal_names)
    ('start', ['NUMBER', 'PLUS', '__IGNORE_0'])
"""

from __future__ import annotations

import re

import lark
from lark.load_grammar import load_grammar
from lark.lexer import PatternStr, TerminalDef

from decoding.constraints import rx
from decoding.constraints.cfg import Cfg, GrammarBuilder, GrammarError
from decoding.constraints.re_parser import constants as _sre_constants
from decoding.constraints.re_parser import parser as _sre_parser

__all__ = ["lark_to_cfg"]

_LINE_COLUMN = re.compile(r"line (\d+),? column (\d+)")  # Lark writes both forms
# Lark's common.lark writes the inside of an escaped string as /.*?/ followed by /(?<!\\)(\\\\)*?/ ("stop at the
# first quote not escaped by a backslash"). Under shortest-match semantics this is the same language.
_LARK_IDIOMS = {r".*?(?<!\\)(\\\\)*?": r"(?:[^\\\n]|\\[^\n])*?"}


def lark_to_cfg(source: str, start: str = "start") -> Cfg:
    """The grammar of Lark grammar text ``source``, starting at rule ``start``.

    Args:
        source: a grammar in Lark's syntax.
        start: the start rule's name.

    Raises:
        GrammarError: a syntax error (Lark's message, with line and column), a rule or terminal used but not
            defined, an unknown start rule, an unsupported regex feature or a ``%declare`` terminal (named), or
            an empty language.

    Example:
        >>> cfg = lark_to_cfg('start: "(" start ")" | "x"')
        >>> [cfg.symbol_name(s) for s in cfg.rules[0][1]]
        ['LPAR', 'start', 'RPAR']
    """
    if not isinstance(source, str):
        raise GrammarError(f"source: {type(source).__name__}, expected the grammar's text (str)")
    grammar = _load(source)
    defined = {str(name).lstrip("?") for name, *_ in grammar.rule_defs}
    if start not in defined:
        raise GrammarError(f"start rule {start!r} is not defined; pass start= one of {sorted(defined)}")
    terminals, rules, ignore = _compile(grammar, start)
    return _build(rules, {t.name: _language(t) for t in terminals}, ignore, start)


def _build(rules: list, languages: dict[str, rx.Rx], ignore: list[str], start: str) -> Cfg:
    """Lark's compiled rules over ``languages`` (terminal name -> language) as a checked :class:`Cfg`."""
    for name in [s.name for r in rules for s in r.expansion if s.is_term] + list(ignore):
        if name not in languages:
            raise GrammarError(f"terminal {name} is declared (%declare) but has no pattern, so it cannot be lexed; "
                               f"define it instead ({name}: \"...\" or /.../)")
    builder = GrammarBuilder()
    nonterminals = {name: builder.nonterminal(str(name)) for name in dict.fromkeys(r.origin.name for r in rules)}
    if start not in nonterminals:
        raise GrammarError(f"start rule {start!r} derives nothing: Lark compiled no rule for it")
    for rule in rules:
        builder.rule(nonterminals[rule.origin.name],
                     [builder.terminal(languages[s.name], str(s.name)) if s.is_term else nonterminals[s.name]
                      for s in rule.expansion])
    for name in ignore:
        builder.ignore(languages[name], str(name))
    return builder.build(nonterminals[start])


def _load(source: str):
    """Lark's grammar object for ``source`` (its syntax and import errors as :class:`GrammarError`)."""
    try:
        grammar, _ = load_grammar(source, "<grammar>", [], False)
    except lark.exceptions.LarkError as error:
        raise _lark_error(error) from None
    except OSError as error:
        raise GrammarError(f"Lark grammar: %import of a grammar that is not available ({error}); only Lark's "
                           f"bundled grammars (common, unicode, ...) can be imported") from None
    return grammar


def _compile(grammar, start: str):
    """Lark's compiled ``(terminals, rules, ignored terminal names)``: templates expanded, EBNF written as rules."""
    try:
        return grammar.compile([start], set())
    except lark.exceptions.LarkError as error:
        raise _lark_error(error) from None


def _lark_error(error: lark.exceptions.LarkError) -> GrammarError:
    return GrammarError("Lark grammar: " + _LINE_COLUMN.sub(r"line \1, column \2", str(error).strip()))


def _language(terminal: TerminalDef) -> rx.Rx:
    """A Lark terminal's byte language (see the module docstring)."""
    pattern = terminal.pattern
    if isinstance(pattern, PatternStr):
        return _caseless(pattern.value) if "i" in pattern.flags else rx.literal(pattern.value)
    value = pattern.value
    for idiom, equivalent in _LARK_IDIOMS.items():
        value = value.replace(idiom, equivalent)
    flags = "".join(sorted(pattern.flags))
    try:
        language = rx.from_regex(value, flags)
        lazy = _has_lazy_quantifier(value, flags)
    except ValueError as error:
        raise GrammarError(f"terminal {terminal.name} (/{pattern.value}/{flags}): {error}") from None
    return rx.difference(language, rx.concat(language, rx.plus(rx.any_byte()))) if lazy else language


def _caseless(text: str) -> rx.Rx:
    """``text`` with ASCII letters in either case."""
    return rx.concat(*(rx.char_class([(ord(c.lower()),) * 2, (ord(c.upper()),) * 2])
                       if c.isascii() and c.isalpha() else rx.literal(c) for c in text))


def _has_lazy_quantifier(pattern: str, flags: str) -> bool:
    """Whether Python's parse of ``pattern`` holds a lazy repeat (``MIN_REPEAT``) anywhere."""
    stack: list = [_sre_parser.parse(pattern, _sre_flags(flags))]
    while stack:
        node = stack.pop()
        if node is _sre_constants.MIN_REPEAT:
            return True
        if isinstance(node, (list, tuple, _sre_parser.SubPattern)):
            stack.extend(node)
    return False


def _sre_flags(flags: str) -> int:
    return _sre_constants.SRE_FLAG_VERBOSE if "x" in flags else 0
