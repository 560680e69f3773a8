"""Regex pieces for JSON texts: strings, numbers, string formats, and the helpers that assemble regexes.

Every regex here is a Python ``re`` pattern that ``interegular`` also parses: literals, character classes, ``|``,
``(?:...)`` and ``* + ? {m,n}`` only. ``None`` stands for the empty language (no text) wherever an ``Rx`` is taken.
"""

from __future__ import annotations

import json
from typing import Any

from decoding.constraints.re_parser import parser as _sre_parser

__all__ = [
    "CHAR", "FORMATS", "HEX", "INT", "NUMBER", "STRING", "Rx", "alt", "dumps", "format_width", "group", "json_literal",
    "lit", "repeat",
]

Rx = str | None  # None is the empty language

HEX = "[0-9a-fA-F]"
_NON_SURROGATE_U = f"(?:[0-9a-cA-Ce-fE-F]{HEX}{{3}}|[dD][0-7]{HEX}{{2}})"
# One character of a JSON string: raw (no control characters), a short escape, or a \u escape of a non-surrogate
# (so each escape is one code point and length limits count exactly).
CHAR = rf'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u{_NON_SURROGATE_U})'
STRING = f'"{CHAR}*"'
INT = "-?(?:0|[1-9][0-9]*)"
NUMBER = rf"{INT}(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"

_DAY29 = "0[1-9]|1[0-9]|2[0-9]"
_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"  # year 0000 does not exist
_DATE = (
    f"{_YEAR}-(?:(?:0[13578]|1[02])-(?:{_DAY29}|3[01])|(?:0[469]|11)-(?:{_DAY29}|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)  # February 29 is not produced (leap years are not expressible compactly): a subset
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_ATOM = r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = "[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# String contents (between the quotes) of each supported `format`; ASCII only, no character needs a JSON escape.
FORMATS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f"{_DATE}T{_TIME}",
    "email": rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+",
    "uuid": f"{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}",
    "uri": r"[a-zA-Z][a-zA-Z0-9+.-]*:(?:[a-zA-Z0-9._~:/?#@!$&'()*+,;=-]|%[0-9a-fA-F]{2})+",
    "ipv4": rf"{_OCTET}(?:\.{_OCTET}){{3}}",
}
FORMATS["url"] = FORMATS["uri"]  # common non-standard spelling

_META = set(".^$*+?{}[]\\|()")


def format_width(name: str) -> tuple[int, int]:
    """(min, max) length in characters of the strings of format ``name`` (max is huge when unbounded)."""
    return _sre_parser.parse(FORMATS[name]).getwidth()


def lit(text: str) -> str:
    """Regex matching exactly ``text`` (escapes that both ``re`` and interegular understand)."""
    out = []
    for ch in text:
        if ch in _META:
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def group(rx: str) -> str:
    return f"(?:{rx})"


def alt(options: list[Rx]) -> Rx:
    """Alternation of the non-empty languages; None when all are empty."""
    kept = list(dict.fromkeys(o for o in options if o is not None))
    if not kept:
        return None
    if "" in kept and len(kept) > 1:
        return group(alt([o for o in kept if o])) + "?"
    return kept[0] if len(kept) == 1 else group("|".join(kept))


def repeat(rx: str, lo: int, hi: int | None) -> str:
    """``rx`` repeated ``lo`` to ``hi`` times (None: unbounded)."""
    if (lo, hi) == (0, None):
        return f"{group(rx)}*"
    if (lo, hi) == (1, None):
        return f"{group(rx)}+"
    if (lo, hi) == (0, 1):
        return f"{group(rx)}?"
    if hi == lo:
        return "" if lo == 0 else (rx if lo == 1 else f"{group(rx)}{{{lo}}}")
    return f"{group(rx)}{{{lo},{'' if hi is None else hi}}}"


def dumps(value: Any) -> str:
    """Compact JSON text of ``value`` (non-ASCII characters raw)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_literal(value: Any) -> str:
    """Regex matching exactly the compact JSON text of ``value``."""
    return lit(dumps(value))
