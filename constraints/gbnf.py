"""llama.cpp's GBNF grammar syntax as a :class:`~decoding.constraints.cfg.Cfg`.

GBNF (llama.cpp ``grammars/README.md``) is character-level BNF: ``name ::= alternatives``, sequences, groups
``( )``, strings ``"..."``, character classes ``[a-z]``/``[^...]``, ``.`` (any character), rule references,
``* + ? {m} {m,} {m,n}``, ``#`` comments. Escapes in strings and classes: ``\\n \\r \\t \\\\ \\" \\[ \\] \\-``,
``\\xHH``, ``\\uHHHH``, ``\\UHHHHHHHH`` (a code point each). Newlines end a rule, except inside parentheses and
after ``::=`` or ``|``, as in llama.cpp; rule names are ``[a-zA-Z0-9-]+``.

The text is parsed by the ``lark`` package with :data:`GBNF_SYNTAX` (LALR, plus a post-lexer that drops the
newlines llama.cpp skips, as Lark's own indenter does inside brackets). The tree is then written as rules.
GBNF has no lexer, so every character position is its own one-character terminal (``"abc"`` is three, a class is
one; the builder interns equal ones): with terminals one character long, greedy lexing splits text exactly as
GBNF does. ``x*`` and ``x+`` become left-recursive helper rules, ``x?`` an optional one, ``x{m,n}`` ``m`` copies
of ``x`` and ``n - m`` nested optionals (bounds up to :data:`MAX_REPEAT`).

Where this differs from llama.cpp: a rule defined twice, an empty class ``[]`` and a reversed range ``[z-a]`` are
refused (llama.cpp keeps the last definition and matches nothing, respectively); token references ``<...>``
are refused (a grammar here is over text, not token ids); ``{m,n}`` above :data:`MAX_REPEAT` is refused rather
than made unbounded.

Example:
    >>> cfg = gbnf_to_cfg('root ::= "(" root ")" | [0-9]+  # nested digits')
    >>> cfg.nonterminals[cfg.start], len(cfg.terminals)
    ('root', 3)
"""

from __future__ import annotations

import functools
import re

import lark
from lark import Token, Transformer, v_args

from decoding.constraints import rx
from decoding.constraints.cfg import Cfg, GrammarBuilder, GrammarError

__all__ = ["GBNF_SYNTAX", "MAX_REPEAT", "gbnf_to_cfg"]

MAX_REPEAT = 1000  # largest m or n in x{m,n}

GBNF_SYNTAX = r"""
start: _NL* (rule _NL+)* rule?
rule: NAME DEFINE alternatives
alternatives: sequence (OR sequence)*
sequence: item*
item: atom repeat*
?atom: STRING -> string
     | CLASS -> char_class
     | "." -> any_char
     | NAME -> reference
     | LPAR alternatives RPAR -> group
     | TOKEN -> token
repeat: "*" -> star
      | "+" -> plus
      | "?" -> optional
      | "{" INT "}" -> exactly
      | "{" INT "," "}" -> at_least
      | "{" INT "," INT "}" -> between

NAME: /[a-zA-Z0-9-]+/
INT: /[0-9]+/
DEFINE: "::="
OR: "|"
LPAR: "("
RPAR: ")"
STRING: /"(?:[^"\\]|\\.)*"/s
CLASS: /\[(?:[^\]\\]|\\.)*\]/s
TOKEN: /!?<[^>\r\n]*>/
_NL: /\r\n?|\n/
COMMENT: /#[^\r\n]*/
%ignore /[ \t]+/
%ignore COMMENT
"""

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}
_CHAR = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))|(.)", re.S)


class _Newlines:
    """Lark post-lexer: drop the newlines llama.cpp skips (inside parentheses, after ``::=`` and ``|``)."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth, previous = 0, None
        for token in stream:
            if token.type == "_NL" and (depth > 0 or previous in ("DEFINE", "OR", "_NL")):
                continue
            depth += (token.type == "LPAR") - (token.type == "RPAR")
            previous = token.type
            yield token


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(GBNF_SYNTAX, parser="lalr", lexer="contextual", postlex=_Newlines(), maybe_placeholders=False)


def gbnf_to_cfg(source: str, start: str = "root") -> Cfg:
    """The grammar of GBNF text ``source``, starting at rule ``start``.

    Args:
        source: a grammar in llama.cpp's GBNF.
        start: the start rule's name (GBNF's is ``root``).

    Raises:
        GrammarError: a syntax error or a bad escape (with line and column), an undefined or twice-defined rule,
            no ``start`` rule, a repetition bound above :data:`MAX_REPEAT`, or an empty language.

    Example:
        >>> cfg = gbnf_to_cfg('root ::= item ("," item)*\\nitem ::= [a-z]{1,3}')
        >>> cfg.nonterminals[cfg.start], "item" in cfg.nonterminals
        ('root', True)
    """
    if not isinstance(source, str):
        raise GrammarError(f"source: {type(source).__name__}, expected the grammar's text (str)")
    try:
        tree = _parser().parse(source)
    except lark.exceptions.UnexpectedInput as error:
        raise GrammarError(_syntax_error(source, error)) from None
    writer = _RuleWriter(source)
    try:
        writer.transform(tree)
    except lark.exceptions.VisitError as error:  # Lark wraps what a transformer method raises
        raise error.orig_exc from None
    return writer.build(start)


def _syntax_error(source: str, error: lark.exceptions.UnexpectedInput) -> str:
    if isinstance(error, lark.exceptions.UnexpectedCharacters):
        char = source[error.pos_in_stream]
        what = f"unexpected character {char!r}" + _UNCLOSED.get(char, "")
    elif isinstance(error, lark.exceptions.UnexpectedEOF) or error.token.type == "$END":
        lines = source.split("\n")
        return (f"GBNF syntax error at line {len(lines)}, column {len(lines[-1]) + 1}: unexpected end of input "
                f"(an unclosed '(' ?)")
    else:
        what = f"unexpected {str(error.token)!r}" + _MISPLACED.get(error.token.type, "")
    return f"GBNF syntax error at line {error.line}, column {error.column}: {what}\n{error.get_context(source)}"


_UNCLOSED = {'"': " (a string without its closing quote?)", "[": " (a character class without its closing ']'?)"}
_MISPLACED = {
    "OR": " (a rule continues on the next line only after '|', '::=' or inside parentheses)",
    "DEFINE": " (a rule ends at the end of its line: put the next rule on a new line)",
}


@v_args(inline=True)
class _RuleWriter(Transformer):
    """Writes the parse tree's rules into a :class:`GrammarBuilder`, bottom-up.

    An item becomes a list of symbols (the characters of a string, a class's one terminal, a rule or helper
    nonterminal), so a repeat applies to all of them.
    """

    def __init__(self, source: str):
        super().__init__()
        self.source = source
        self.builder = GrammarBuilder()
        self.symbols: dict[str, int] = {}
        self.defined: dict[str, Token] = {}
        self.used: dict[str, Token] = {}

    def build(self, start: str) -> Cfg:
        for name, token in self.used.items():
            if name not in self.defined:
                raise GrammarError(f"undefined rule {name!r} at line {token.line}, column {token.column}: "
                                   f"define it ({name} ::= ...)")
        if start not in self.defined:
            raise GrammarError(f"no rule {start!r} to start from; define it ({start} ::= ...) or pass start= one "
                               f"of {sorted(self.defined)}")
        return self.builder.build(self.symbols[start])

    def _nonterminal(self, name: str) -> int:
        if name not in self.symbols:
            self.symbols[name] = self.builder.nonterminal(name)
        return self.symbols[name]

    def _helper_rules(self, lhs: int, alternatives: list[list[int]]) -> list[int]:
        for rhs in alternatives:
            self.builder.rule(lhs, rhs)
        return [lhs]

    # --- rules ------------------------------------------------------------------------------------------------

    def rule(self, name: Token, _define, alternatives: list[list[int]]) -> None:
        if name in self.defined:
            first = self.defined[name]
            self._fail(name, 0, f"rule {str(name)!r} is defined twice (lines {first.line} and {name.line}); join "
                                f"the definitions with '|'")
        self.defined[str(name)] = name
        for rhs in alternatives:
            self.builder.rule(self._nonterminal(str(name)), rhs)

    def alternatives(self, *children) -> list[list[int]]:
        return [child for child in children if not isinstance(child, Token)]

    def sequence(self, *items: list[int]) -> list[int]:
        return [s for item in items for s in item]

    def item(self, atom: list[int], *repeats: tuple[int, int | None]) -> list[int]:
        for lo, hi in repeats:
            atom = self._repeat(atom, lo, hi)
        return atom

    # --- atoms ------------------------------------------------------------------------------------------------

    def string(self, token: Token) -> list[int]:
        return [self.builder.terminal(rx.char_class([(c, c)])) for c in self._chars(token, token[1:-1], 1)]

    def char_class(self, token: Token) -> list[int]:
        negate = token.startswith("[^")
        body_start = 2 if negate else 1
        chars = self._chars(token, token[body_start:-1], body_start, keep_dash=True)
        if not chars:
            self._fail(token, 0, f"empty character class {token!s}: it matches nothing")
        return [self.builder.terminal(rx.char_class(_ranges(chars, lambda why: self._fail(token, 0, why)),
                                                    negate))]

    def any_char(self) -> list[int]:
        return [self.builder.terminal(rx.any_char())]

    def reference(self, name: Token) -> list[int]:
        self.used.setdefault(str(name), name)
        return [self._nonterminal(str(name))]

    def group(self, _open, alternatives: list[list[int]], _close) -> list[int]:
        if len(alternatives) == 1:
            return alternatives[0]
        return self._helper_rules(self.builder.nonterminal("(group)"), alternatives)

    def token(self, token: Token) -> list[int]:
        self._fail(token, 0, f"token reference {token!s}: a grammar here is over text, not token ids; write the "
                             f"token's text as a string")

    # --- repeats: each is its (min, max) count, max None for unbounded -------------------------------------------

    def star(self) -> tuple[int, None]:
        return 0, None

    def plus(self) -> tuple[int, None]:
        return 1, None

    def optional(self) -> tuple[int, int]:
        return 0, 1

    def exactly(self, m: Token) -> tuple[int, int]:
        return self._bound(m), self._bound(m)

    def at_least(self, m: Token) -> tuple[int, None]:
        return self._bound(m), None

    def between(self, m: Token, n: Token) -> tuple[int, int]:
        lo, hi = self._bound(m), self._bound(n)
        if hi < lo:
            self._fail(n, 0, f"repetition {{{lo},{hi}}} has its maximum below its minimum")
        return lo, hi

    def _repeat(self, x: list[int], lo: int, hi: int | None) -> list[int]:
        """``x{lo,hi}``: ``lo`` copies, then a left-recursive tail (``hi`` None) or nested optionals."""
        if not x:
            return []
        if hi is None:
            return x * (lo - 1) + self._plus(x) if lo else self._star(x)
        return x * lo + self._optional(x, hi - lo)

    def _star(self, x: list[int]) -> list[int]:
        """``S -> S x | ε``."""
        lhs = self.builder.nonterminal("(star)")
        return self._helper_rules(lhs, [[lhs, *x], []])

    def _plus(self, x: list[int]) -> list[int]:
        """``P -> P x | x``."""
        lhs = self.builder.nonterminal("(plus)")
        return self._helper_rules(lhs, [[lhs, *x], x])

    def _optional(self, x: list[int], count: int) -> list[int]:
        """Up to ``count`` copies of ``x``: ``O_k -> x O_(k-1) | ε``, nested ``count`` deep."""
        inner: list[int] = []
        for _ in range(count):
            inner = self._helper_rules(self.builder.nonterminal("(optional)"), [x + inner, []])
        return inner

    def _bound(self, token: Token) -> int:
        value = int(token)
        if value > MAX_REPEAT:
            self._fail(token, 0, f"repetition bound {value} is above {MAX_REPEAT}; use * or + for long runs")
        return value

    # --- characters ---------------------------------------------------------------------------------------------

    def _chars(self, token: Token, body: str, offset: int, keep_dash: bool = False) -> list:
        """The code points of a string's or class's ``body`` (escapes decoded); in a class, a raw ``-`` stays
        ``None`` (a range marker)."""
        out: list = []
        for match in _CHAR.finditer(body):
            *hex_digits, escaped, raw = match.groups()
            where = offset + match.start()
            if raw is not None:
                out.append(None if keep_dash and raw == "-" else ord(raw))
            elif escaped in _HEX_DIGITS:
                self._fail(token, where, f"\\{escaped} needs {_HEX_DIGITS[escaped]} hex digits")
            elif escaped is not None:
                if escaped not in _ESCAPES:
                    self._fail(token, where, f"unknown escape \\{escaped}; GBNF knows \\n \\r \\t \\\\ \\\" \\[ \\] "
                                             f"\\- \\xHH \\uHHHH \\UHHHHHHHH")
                out.append(ord(_ESCAPES[escaped]))
            else:
                value = int(next(d for d in hex_digits if d is not None), 16)
                if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                    self._fail(token, where, f"{match.group()} is not a Unicode scalar value")
                out.append(value)
        return out

    def _fail(self, token: Token, offset: int, why: str):
        """Raise a GrammarError at ``offset`` characters into ``token``."""
        before = self.source[token.start_pos:token.start_pos + offset]
        line = token.line + before.count("\n")
        column = offset - before.rfind("\n") if "\n" in before else token.column + offset
        raise GrammarError(f"GBNF error at line {line}, column {column}: {why}")


def _ranges(chars: list, fail) -> list[tuple[int, int]]:
    """A class's ``[(lo, hi), ...]`` from its code points, ``None`` marking a raw ``-``."""
    ranges, i = [], 0
    while i < len(chars):
        lo = chars[i] if chars[i] is not None else ord("-")
        if i + 2 < len(chars) and chars[i + 1] is None:
            hi = chars[i + 2] if chars[i + 2] is not None else ord("-")
            if hi < lo:
                fail(f"reversed range {chr(lo)!r}-{chr(hi)!r} in a character class")
            ranges.append((lo, hi))
            i += 3
        else:
            ranges.append((lo, lo))
            i += 1
    return ranges
