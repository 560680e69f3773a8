"""``pattern`` (Python regex syntax, over decoded characters) -> a regex over the contents of JSON strings.

Semantics are Python's ``re.search``, as the ``jsonschema`` package uses: a pattern anchored with ``^...$`` at its
ends matches whole strings, otherwise any characters may pad it. ``\\d \\w \\s`` produce their ASCII members only
(a subset). A character is produced raw, or escaped where JSON requires it (``\\"``, ``\\\\``, controls).
Look-around, back-references, inline flags and anchors or word boundaries inside the pattern raise
:class:`UnsupportedPattern`. Length limits (``minLength``/``maxLength``) combine with a pattern only when it is one
repeated character class or its own length range already satisfies them.
"""

from __future__ import annotations

import re
from typing import Any

from decoding.constraints.json_lexical import CHAR, HEX, Rx, alt, group, lit, repeat
from decoding.constraints.re_parser import constants as _sre_c
from decoding.constraints.re_parser import parser as _sre_p

__all__ = ["UnsupportedPattern", "pattern_content"]


class UnsupportedPattern(ValueError):
    """A pattern this translator cannot express (or cannot parse); the message names the construct."""


def pattern_content(pattern: str, min_len: int = 0, max_len: int | None = None) -> Rx:
    """Regex for the JSON string contents (between the quotes) whose decoded text ``re.search``-matches
    ``pattern`` and has ``min_len`` to ``max_len`` characters; None when there are none."""
    translator = _PatternTranslator(pattern)
    if min_len > 0 or max_len is not None:
        return translator.content_with_length(min_len, max_len)
    return translator.content()


_MAX_CP = 0x10FFFF
_FORBIDDEN = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]  # must be escaped inside a JSON string
_CATEGORIES = {  # ASCII members only: a subset of Python's Unicode classes
    "CATEGORY_DIGIT": [(0x30, 0x39)],
    "CATEGORY_WORD": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "CATEGORY_SPACE": [(0x09, 0x0D), (0x20, 0x20)],
}
_ASCII = [(0, 0x7F)]
_SHORT_ESCAPES = {0x22: '\\\\"', 0x5C: r"\\\\", 0x08: r"\\b", 0x0C: r"\\f", 0x0A: r"\\n", 0x0D: r"\\r", 0x09: r"\\t"}


def _normalise(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: list[tuple[int, int]], universe: list[tuple[int, int]] | None = None) -> list:
    universe = universe or [(0, _MAX_CP)]
    out, ranges = [], _normalise(ranges)
    for ulo, uhi in universe:
        cur = ulo
        for lo, hi in ranges:
            if hi < cur or lo > uhi:
                continue
            if lo > cur:
                out.append((cur, lo - 1))
            cur = max(cur, hi + 1)
        if cur <= uhi:
            out.append((cur, uhi))
    return _normalise(out)


def _intersect(a: list, b: list) -> list:
    return _complement(_complement(a) + _complement(b))


def _class_char(cp: int) -> str:
    ch = chr(cp)
    if ch in "\\]^-[":
        return "\\" + ch
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    return ch


def _class_body(ranges: list[tuple[int, int]]) -> str:
    return "".join(_class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges)


def _charset_rx(ranges: list[tuple[int, int]]) -> Rx:
    """Regex for one JSON-string character (raw or escaped) whose decoded value lies in ``ranges``."""
    ranges = _normalise(ranges)
    safe = _intersect(ranges, _complement(_FORBIDDEN))
    options: list[Rx] = []
    if len(safe) == 1 and safe[0][0] == safe[0][1]:
        options.append(lit(chr(safe[0][0])))
    elif safe and safe[-1][1] == _MAX_CP:  # mostly everything: a negated class is far smaller
        options.append(f"[^{_class_body(_complement(safe))}]")
    elif safe:
        options.append(f"[{_class_body(safe)}]")
    members = lambda cp: any(lo <= cp <= hi for lo, hi in ranges)  # noqa: E731
    if all(members(cp) for cp in range(0x20)):
        options.append(rf"\\(?:[bfnrt]|u00[01]{HEX})")
        controls: list[int] = []
    else:
        controls = [cp for cp in range(0x20) if members(cp)]
    for cp in controls + [0x22, 0x5C, 0x2F]:
        if not members(cp):
            continue
        hexs = "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{cp:04x}")
        short = _SHORT_ESCAPES.get(cp, r"\\/" if cp == 0x2F else None)
        options.append(short if cp in (0x22, 0x5C, 0x2F) else alt([short, r"\\u" + hexs]))
    return alt(options)


_BEGIN = ((_sre_c.AT, _sre_c.AT_BEGINNING), (_sre_c.AT, _sre_c.AT_BEGINNING_STRING))
_END = ((_sre_c.AT, _sre_c.AT_END), (_sre_c.AT, _sre_c.AT_END_STRING))


class _PatternTranslator:
    """Translate a Python-syntax regex over decoded characters into one over JSON string contents."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        try:
            self.parsed = _sre_p.parse(pattern)
        except (re.error, OverflowError, RecursionError) as exc:
            raise UnsupportedPattern(f"{pattern!r} ({exc})") from None
        flags = self.parsed.state.flags
        if flags & (re.IGNORECASE | re.MULTILINE | re.LOCALE | re.ASCII):
            self.fail("inline flags")
        self.dotall = bool(flags & re.DOTALL)

    def fail(self, what: str) -> None:
        raise UnsupportedPattern(f"{what} in {self.pattern!r}")

    def translate(self, items: list) -> tuple[Rx, bool, bool]:
        """(regex of ``items`` without edge anchors, anchored at start, anchored at end)."""
        begin = bool(items) and items[0] in _BEGIN
        items = items[1:] if begin else items
        end = bool(items) and items[-1] in _END
        items = items[:-1] if end else items
        return self.seq(items), begin, end

    def content_with_length(self, min_len: int, max_len: int | None) -> Rx:
        """:meth:`content` limited to ``min_len`` to ``max_len`` characters, where that stays exact."""
        core, begin, end = self.translate(list(self.parsed))
        if core is None:
            return None
        items = list(self.parsed)[int(begin):len(self.parsed) - int(end)]
        lo, hi = _sre_p.SubPattern(self.parsed.state, items).getwidth()
        if begin and end and min_len <= lo and (max_len is None or hi <= max_len):
            return core  # the pattern's own length range already satisfies the limits
        if begin and end and len(items) == 1 and items[0][0] is _sre_c.MAX_REPEAT and len(items[0][1][2]) == 1 \
                and items[0][1][2][0][0] in (_sre_c.IN, _sre_c.LITERAL, _sre_c.ANY, _sre_c.NOT_LITERAL):
            rlo, rhi, sub = items[0][1]
            rhi = None if rhi == _sre_c.MAXREPEAT else rhi
            new_lo = max(rlo, min_len)
            new_hi = max_len if rhi is None else (rhi if max_len is None else min(rhi, max_len))
            if new_hi is not None and new_hi < new_lo:
                return None
            char = self.item(*sub[0])
            return None if char is None else repeat(char, new_lo, new_hi)
        raise UnsupportedPattern("combined with minLength/maxLength")

    def content(self) -> Rx:
        """Regex for JSON string contents whose decoded text contains a match (``re.search`` semantics)."""
        return self.edges(list(self.parsed), True, True)

    def edges(self, items: list, left: bool, right: bool) -> Rx:
        """``items`` padded with any characters on the open sides; anchors are honoured at the edges, including
        inside alternations that sit at an edge (``^a$|^b$``)."""
        if items and items[0] in _BEGIN:
            items, left = items[1:], False
        if items and items[-1] in _END:
            items, right = items[:-1], False
        if len(items) == 1 and items[0][0] is _sre_c.BRANCH and (left or right):
            return alt([self.edges(list(branch), left, right) for branch in items[0][1][1]])
        if len(items) > 1 and left and items[0][0] is _sre_c.BRANCH:
            head, tail = self.edges(items[:1], left, False), self.edges(items[1:], False, right)
            return None if head is None or tail is None else head + tail
        if len(items) > 1 and right and items[-1][0] is _sre_c.BRANCH:
            head, tail = self.edges(items[:-1], left, False), self.edges(items[-1:], False, right)
            return None if head is None or tail is None else head + tail
        core = self.seq(items)
        pad = f"{CHAR}*"
        return None if core is None else f"{pad if left else ''}{core}{pad if right else ''}"

    def seq(self, items: list) -> Rx:
        out = []
        for op, av in items:
            rx = self.item(op, av)
            if rx is None:
                return None
            out.append(rx)
        return "".join(out)

    def item(self, op: Any, av: Any) -> Rx:
        c = _sre_c
        if op is c.LITERAL:
            return _charset_rx([(av, av)])
        if op is c.NOT_LITERAL:
            return _charset_rx(_complement([(av, av)]))
        if op is c.ANY:
            return _charset_rx([(0, _MAX_CP)] if self.dotall else _complement([(0x0A, 0x0A)]))
        if op is c.IN:
            return _charset_rx(self.charset(av))
        if op is c.BRANCH:
            return alt([self.seq(list(branch)) for branch in av[1]])
        if op is c.SUBPATTERN:
            _, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                self.fail("inline flags")
            inner = self.seq(list(sub))
            return None if inner is None else group(inner)
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):  # laziness does not change the language of re.search
            lo, hi, sub = av
            inner = self.seq(list(sub))
            hi = None if hi == c.MAXREPEAT else hi
            if inner is None:
                return "" if lo == 0 else None
            return repeat(inner, lo, hi) if inner else ""
        if op is c.AT:
            self.fail("anchor or word boundary not at the pattern's ends")
        if op in (c.ASSERT, c.ASSERT_NOT):
            self.fail("look-around")
        if op in (c.GROUPREF, c.GROUPREF_EXISTS):
            self.fail("back-reference")
        self.fail(f"construct {op}")
        return None  # unreachable

    def charset(self, items: list) -> list[tuple[int, int]]:
        c = _sre_c
        negate, ranges, ascii_only = False, [], False
        for op, av in items:
            if op is c.NEGATE:
                negate = True
            elif op is c.LITERAL:
                ranges.append((av, av))
            elif op is c.RANGE:
                ranges.append(av)
            elif op is c.CATEGORY:
                name = str(av)
                base = name.replace("CATEGORY_NOT_", "CATEGORY_")
                if base not in _CATEGORIES:
                    self.fail(f"character category {name}")
                if name.startswith("CATEGORY_NOT_"):
                    ranges += _complement(_CATEGORIES[base], _ASCII)
                    ascii_only = True
                else:
                    ranges += _CATEGORIES[base]
                    ascii_only = ascii_only or negate
            else:
                self.fail(f"character class item {op}")
        if negate:
            ranges = _complement(ranges)
            ascii_only = ascii_only or any(op is c.CATEGORY for op, _ in items)
        if ascii_only:  # Python's Unicode \d \w \s differ from their ASCII members: stay inside ASCII
            ranges = _intersect(ranges, _ASCII)
        return ranges


