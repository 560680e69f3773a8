"""``pattern`` (an ECMA-262 regular expression over a string's characters) as an expression over JSON string texts.

Semantics are JSON Schema's: a pattern matches a string when it matches *somewhere* in it (not anchored), ``^``
and ``$`` match only at the string's ends, ``.`` is any character but the line terminators ``\\n \\r \\u2028
\\u2029``. Where ECMA-262 (the standard) and Python's ``re`` (Python validators) disagree, the language keeps what
both accept: ``\\d \\w`` are ASCII, ``\\s`` the white space both count, and ``\\D \\W \\S`` or negated classes leave
out what either counts in (``\\W`` is then ASCII). The pattern is read by Python's own regex parser
(ECMA's ``(?<name>...)`` groups and ``\\p{...}`` general categories, from ``unicodedata``, are accepted too);
look-around, backreferences, word boundaries, inline flags and other Unicode properties (scripts) are refused
with :class:`UnsupportedPattern` naming them.

The translation: each character class becomes the canonical spellings of its characters
(:func:`~decoding.constraints.json_lexical.char_in`), and the anchors become the string's quotes. ``^`` and ``$``
are the bytes ``"`` that open and close the string (a canonical string holds no other raw ``"``), so the searching
language is ``("CHAR* | ε) R (CHAR*" | ε)`` intersected with the strings: exact, anchors anywhere included
(``a^b`` matches nothing). Anchors at the ends only, the common case, need no intersection: ``^R`` is ``"R CHAR*"``.

Example:
    >>> from decoding.constraints import rx
    >>> p = pattern_string("^[a-z]+$|[0-9]{3}")
    >>> rx.matches(p, '"abc"'), rx.matches(p, '"x1234y"'), rx.matches(p, '"ab1"')
    (True, True, False)
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata

from decoding.constraints import rx
from decoding.constraints.json_lexical import CHAR, STRING, char_in
from decoding.constraints.re_parser import constants as _c
from decoding.constraints.re_parser import parser as _parser

__all__ = ["UnsupportedPattern", "pattern_string", "pattern_strings"]


class UnsupportedPattern(ValueError):
    """A pattern this translator cannot express, or cannot parse; the message names the construct."""


_ALL = [(0, 0x10FFFF)]
_ASCII_DIGIT = [(0x30, 0x39)]
_ASCII_WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_ECMA_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029),
               (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)]
_PYTHON_SPACE = [(0x09, 0x0D), (0x1C, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                 (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]
_DIGIT_BLOCKS = (  # Unicode decimal digits (category Nd, up to Unicode 16) beyond ASCII: runs of ten
    0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6, 0xE50, 0xED0, 0xF20,
    0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0,
    0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10, 0x104A0, 0x10D30, 0x10D40, 0x11066, 0x110F0, 0x11136, 0x111D0,
    0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x116D0, 0x11730, 0x118E0, 0x11950, 0x11BF0, 0x11C50, 0x11D50,
    0x11DA0, 0x11F50, 0x16130, 0x16A60, 0x16AC0, 0x16B50, 0x16D70, 0x1CCF0, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC,
    0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E5F1, 0x1E950, 0x1FBF0)
_ANY_DIGIT = _ASCII_DIGIT + [(a, a + 9) for a in _DIGIT_BLOCKS]
_ANY_WORD = _ASCII_WORD + [(0x80, 0x10FFFF)]  # Python's Unicode \w, over-approximated by everything non-ASCII
_LINE_TERMINATORS = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]  # ECMA's "." matches none (Python's: not \n)
_QUOTE = rx.literal('"')
_NAMED_GROUP = re.compile(r"\(\?<(?![=!])")
_PROPERTY = re.compile(r"\\(?:\\|([pP])\{([^}]*)\})")  # an escaped backslash, or \p{...} / \P{...}
_PLACEHOLDER = 0xF0000  # \p{...} escapes are read as private-use characters from here, then replaced
_CATEGORY_NAMES = {
    "Letter": "L", "Cased_Letter": "LC", "Uppercase_Letter": "Lu", "Lowercase_Letter": "Ll", "Titlecase_Letter": "Lt",
    "Modifier_Letter": "Lm", "Other_Letter": "Lo", "Mark": "M", "Nonspacing_Mark": "Mn", "Spacing_Mark": "Mc",
    "Enclosing_Mark": "Me", "Number": "N", "Decimal_Number": "Nd", "digit": "Nd", "Letter_Number": "Nl",
    "Other_Number": "No", "Punctuation": "P", "punct": "P", "Connector_Punctuation": "Pc", "Dash_Punctuation": "Pd",
    "Open_Punctuation": "Ps", "Close_Punctuation": "Pe", "Initial_Punctuation": "Pi", "Final_Punctuation": "Pf",
    "Other_Punctuation": "Po", "Symbol": "S", "Math_Symbol": "Sm", "Currency_Symbol": "Sc", "Modifier_Symbol": "Sk",
    "Other_Symbol": "So", "Separator": "Z", "Space_Separator": "Zs", "Line_Separator": "Zl",
    "Paragraph_Separator": "Zp", "Other": "C", "Control": "Cc", "cntrl": "Cc", "Format": "Cf", "Surrogate": "Cs",
    "Private_Use": "Co", "Unassigned": "Cn",
}


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, prev = [], 0
    for lo, hi in sorted(ranges):
        if lo > prev:
            out.append((prev, lo - 1))
        prev = max(prev, hi + 1)
    return out + ([(prev, 0x10FFFF)] if prev <= 0x10FFFF else [])


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return _complement(_complement(a) + _complement(b))


# Each class escape as (sure, maybe): the characters that both readings of a pattern, ECMA-262's (the standard's)
# and Python's ``re`` (Python validators'), put in it, and those that either one does. A class holds its sure
# members; a negated class leaves out the maybe ones. So the language is valid under both readings.
_CATEGORIES = {
    "DIGIT": (_ASCII_DIGIT, _ANY_DIGIT),
    "NOT_DIGIT": (_complement(_ANY_DIGIT), _complement(_ASCII_DIGIT)),
    "WORD": (_ASCII_WORD, _ANY_WORD),
    "NOT_WORD": (_complement(_ANY_WORD), _complement(_ASCII_WORD)),
    "SPACE": (_intersect(_ECMA_SPACE, _PYTHON_SPACE), _ECMA_SPACE + _PYTHON_SPACE),
    "NOT_SPACE": (_complement(_ECMA_SPACE + _PYTHON_SPACE), _complement(_intersect(_ECMA_SPACE, _PYTHON_SPACE))),
}


def pattern_string(pattern: str) -> rx.Rx:
    """The JSON string texts (quotes included, canonical spelling) whose content ``pattern`` surely matches
    somewhere: under ECMA-262's reading and Python's alike.

    Raises:
        UnsupportedPattern: syntax errors and the constructs named in the module docstring.
    """
    return pattern_strings(pattern)[0]


@functools.lru_cache(maxsize=1024)
def pattern_strings(pattern: str) -> tuple[rx.Rx, rx.Rx]:
    """(sure, maybe): the strings the pattern matches under both readings, and under either one. ``pattern``
    takes the sure ones; its complement (``not``), and the keys a ``patternProperties`` entry leaves to others,
    take the strings outside the maybe ones."""
    properties: list[list[tuple[int, int]]] = []
    try:
        parsed = _parser.parse(_PROPERTY.sub(lambda m: _property(m, properties, pattern),
                                             _NAMED_GROUP.sub("(?P<", pattern)))
    except (re.error, OverflowError, RecursionError) as exc:
        raise UnsupportedPattern(f"{pattern!r}: {exc}") from None
    if parsed.state.flags & (re.IGNORECASE | re.MULTILINE | re.LOCALE | re.VERBOSE | re.ASCII):
        raise UnsupportedPattern(f"inline flags in {pattern!r}")
    dotall = bool(parsed.state.flags & re.DOTALL)
    return tuple(_language(_Reader(pattern, dotall, properties, sure), parsed) for sure in (True, False))


def _language(reader: _Reader, parsed) -> rx.Rx:
    content = reader.search(list(parsed))
    if content is not None:  # anchors only at the ends (of each top-level branch): no intersection needed
        return rx.concat(_QUOTE, content, _QUOTE)
    around = rx.star(CHAR)
    body = reader.seq(parsed)
    search = rx.concat(rx.optional(rx.concat(_QUOTE, around)), body, rx.optional(rx.concat(around, _QUOTE)))
    return rx.inter(search, STRING)


_BEGIN = (_c.AT_BEGINNING, _c.AT_BEGINNING_STRING)
_END = (_c.AT_END, _c.AT_END_STRING)


def _trim(items: list, end: int) -> list:
    """``items`` with the repetitions at ``end`` (0 or -1) cut to their minimum: next to ``CHAR*``, ``R{lo,hi}``
    matches what ``R{lo}`` does (``CHAR* R{0,k}`` is ``CHAR*``), and the automaton is far smaller."""
    items = list(items)
    while items and items[end][0] in (_c.MAX_REPEAT, _c.MIN_REPEAT):
        lo, hi, sub = items[end][1]
        if lo > 0:
            items[end] = (items[end][0], (lo, lo, sub))
            break
        items.pop(end)
    return items


def _has_anchor(items) -> bool:
    for op, av in items:
        if op is _c.AT or (op is _c.BRANCH and any(_has_anchor(b) for b in av[1])):
            return True
        if (op is _c.SUBPATTERN and _has_anchor(av[3])) or (op in (_c.MAX_REPEAT, _c.MIN_REPEAT)
                                                           and _has_anchor(av[2])):
            return True
    return False


def _property(match: re.Match, properties: list, pattern: str) -> str:
    """``\\p{...}``/``\\P{...}`` (a Unicode general category, ECMA's ``u`` mode) as a placeholder character."""
    if match.group(1) is None:
        return match.group(0)
    name = match.group(2).split("=", 1)
    if len(name) == 2 and name[0] not in ("General_Category", "gc"):
        raise UnsupportedPattern(f"the Unicode property {match.group(2)!r} in {pattern!r} (only general categories)")
    category = _CATEGORY_NAMES.get(name[-1], name[-1])
    ranges = _categories().get(category)
    if ranges is None:
        raise UnsupportedPattern(f"the Unicode property {match.group(2)!r} in {pattern!r}")
    properties.append(_complement(ranges) if match.group(1) == "P" else ranges)
    return f"\\U{_PLACEHOLDER + len(properties) - 1:08x}"


@functools.cache
def _categories() -> dict[str, list[tuple[int, int]]]:
    """Every general category's code points (and the one-letter groups, and LC), from ``unicodedata``."""
    out: dict[str, list[tuple[int, int]]] = {}
    cp = 0
    for category, run in itertools.groupby(map(unicodedata.category, map(chr, range(0x110000)))):
        n = sum(1 for _ in run)
        for name in (category, category[0]) + (("LC",) if category in ("Lu", "Ll", "Lt") else ()):
            out.setdefault(name, []).append((cp, cp + n - 1))
        cp += n
    return out


class _Reader:
    """A parsed pattern to an expression, under one reading: ``sure`` (what ECMA-262 and Python's ``re`` both
    match) or not (what either matches: Python's ``.`` takes ``\\r``, its ``$`` a final ``\\n``)."""

    def __init__(self, pattern: str, dotall: bool, properties: list[list[tuple[int, int]]], sure: bool):
        self.pattern, self.dotall, self.properties, self.sure = pattern, dotall, properties, sure
        self.end = rx.EPSILON if sure else rx.optional(rx.literal("\\n"))  # before the end: Python's $

    def members(self, cp: int) -> list[tuple[int, int]]:
        """The code points a literal stands for: itself, or a ``\\p{...}`` placeholder's category."""
        k = cp - _PLACEHOLDER
        return self.properties[k] if 0 <= k < len(self.properties) else [(cp, cp)]

    def fail(self, what: str) -> None:
        raise UnsupportedPattern(f"{what} in {self.pattern!r}")

    def search(self, items: list) -> rx.Rx | None:
        """The contents the pattern matches somewhere in, when its anchors sit only at its ends, possibly at the
        ends of the branches of a group there (``^(a|$)`` is ``^a|^$``); None otherwise."""
        if len(items) == 1 and items[0][0] is _c.BRANCH:
            return self.union([list(branch) for branch in items[0][1][1]])
        for k in (0, len(items) - 1):  # a group at an end holding anchors: distribute its branches
            if items and _has_anchor(items[k:k + 1]) and items[k][0] in (_c.SUBPATTERN, _c.BRANCH):
                inner = list(items[k][1][3]) if items[k][0] is _c.SUBPATTERN else [items[k]]
                if items[k][0] is _c.SUBPATTERN and (items[k][1][1] or items[k][1][2]):
                    return None
                branches = inner[0][1][1] if len(inner) == 1 and inner[0][0] is _c.BRANCH else [inner]
                return self.union([items[:k] + list(b) + items[k + 1:] for b in branches])
        left = bool(items) and items[0][0] is _c.AT and items[0][1] in _BEGIN
        right = len(items) > left and items[-1][0] is _c.AT and items[-1][1] in _END
        core = items[int(left):len(items) - int(right)]
        if _has_anchor(core):
            return None
        core = _trim(core, 0) if not left else core  # "any characters" absorb a repetition's optional part
        core = _trim(core, -1) if not right else core
        around = rx.star(CHAR)
        return rx.concat(rx.EPSILON if left else around, self.seq(core), self.end if right else around)

    def union(self, alternatives: list[list]) -> rx.Rx | None:
        parts = [self.search(a) for a in alternatives]
        return None if any(p is None for p in parts) else rx.alt(*parts)

    def seq(self, items) -> rx.Rx:
        return rx.concat(*(self.item(op, av) for op, av in items))

    def item(self, op, av) -> rx.Rx:
        if op is _c.LITERAL:
            return char_in(self.members(av))
        if op is _c.NOT_LITERAL:
            return char_in(_complement(self.members(av)))
        if op is _c.ANY:
            excluded = _LINE_TERMINATORS if self.sure else [(0x0A, 0x0A)]
            return char_in(_ALL if self.dotall else _complement(excluded))
        if op is _c.IN:
            return char_in(self.charset(av))
        if op is _c.BRANCH:
            return rx.alt(*(self.seq(branch) for branch in av[1]))
        if op is _c.SUBPATTERN:
            if av[1] or av[2]:
                self.fail("inline flags")
            return self.seq(av[3])
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):  # laziness changes no language
            lo, hi, sub = av
            hi = None if hi == _c.MAXREPEAT else hi
            if lo > rx.MAX_REPEAT or (hi is not None and hi > rx.MAX_REPEAT):
                self.fail(f"a repetition bound above {rx.MAX_REPEAT:,}")
            return rx.repeat(self.seq(sub), lo, hi)
        if op is _c.AT:
            if av in _BEGIN:
                return _QUOTE
            if av in _END:
                return rx.concat(self.end, _QUOTE)
            self.fail("word boundaries (\\b, \\B)")
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            self.fail("look-around assertions")
        if op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
            self.fail("backreferences")
        self.fail(f"the construct {op}")
        raise AssertionError  # unreachable

    def charset(self, items) -> list[tuple[int, int]]:
        negate = any(op is _c.NEGATE for op, _ in items)
        ranges = []
        for op, av in items:
            if op is _c.LITERAL:
                ranges += self.members(av)
            elif op is _c.RANGE:
                ranges.append(av)
            elif op is _c.CATEGORY:
                sure, maybe = _CATEGORIES[str(av).replace("CATEGORY_", "")]
                ranges += maybe if negate == self.sure else sure
            elif op is not _c.NEGATE:
                self.fail(f"the class item {op}")
        return _complement(ranges) if negate else ranges
