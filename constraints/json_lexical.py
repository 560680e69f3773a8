"""The lexemes of JSON texts as byte-level expressions (:mod:`~decoding.constraints.rx`): strings, numbers, literals.

Strings are *canonical*: each character is written raw, except ``"`` and ``\\`` (``\\"``, ``\\\\``) and the
control characters U+0000..U+001F (``\\b \\f \\n \\r \\t``, the others ``\\u00xx`` in lower-case hex), as
``json.dumps(..., ensure_ascii=False)`` writes them. So a decoded string has exactly one spelling: keys that must
differ from named keys, values excluded by ``not``/``enum``, and ``pattern``/``minLength``/``maxLength`` are all
exact on the spelling. Numbers: :data:`NUMBER` is JSON's full grammar; constrained numbers use :data:`DECIMAL`
(no exponent), where a number's value is a regular property of its spelling; integers are :data:`INTEGER`, without
a fraction (``1.0`` is an integer to draft 6 and later, a float to draft 4 and to Python).

Example:
    >>> from decoding.constraints import rx
    >>> rx.matches(STRING, '"a\\\\nb"'), rx.matches(STRING, '"a\\\\/b"'), rx.matches(number_spellings(1), "1.00")
    (True, False, True)
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring
from decimal import Decimal
from typing import Any

from decoding.constraints import rx

__all__ = [
    "CHAR", "DECIMAL", "FLOAT_SAFE", "FRACTIONAL", "INTEGER", "NUMBER", "STRING", "char_in", "decimal_of", "dumps", "json_equal",
    "literal_values", "number_spellings", "quoted",
]

_SHORT = {0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x22: '\\"', 0x5C: "\\\\"}
_ESCAPED = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]  # never raw inside a JSON string


def _spelling(cp: int) -> str:
    """The canonical spelling of one escaped character."""
    return _SHORT.get(cp, f"\\u{cp:04x}")


def char_in(ranges: list[tuple[int, int]]) -> rx.Rx:
    """One canonically spelled string character whose code point lies in ``ranges`` (inclusive pairs)."""
    raw = rx.char_class(_subtract(ranges, _ESCAPED))
    escaped = [_spelling(cp) for lo, hi in ranges for cp in range(max(lo, 0), min(hi, 0x5C) + 1)
               if cp <= 0x1F or cp in (0x22, 0x5C)]
    return rx.alt(raw, rx.literals(escaped)) if escaped else raw


def _subtract(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for lo, hi in ranges:
        pieces = [(lo, hi)]
        for a, b in holes:
            pieces = [p for x, y in pieces for p in ((x, min(y, a - 1)), (max(x, b + 1), y)) if p[0] <= p[1]]
        out += pieces
    return out


CHAR = char_in([(0, 0x10FFFF)])
STRING = rx.concat(rx.literal('"'), rx.star(CHAR), rx.literal('"'))

NUMBER = rx.from_regex(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
DECIMAL = rx.from_regex(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
INTEGER = rx.from_regex(r"-?(0|[1-9][0-9]*)")  # no "1.0": draft 4 and Python validators read it as a float
FRACTIONAL = rx.from_regex(r"-?(0|[1-9][0-9]*)\.[0-9]*[1-9][0-9]*")  # decimals whose value is not an integer
# Integers, and decimals with a fraction and at most 15 significant digits: Python reads the latter as floats, and
# distinct decimals of 15 digits stay distinct and in order as floats, so bounds compare as they do exactly.
FLOAT_SAFE = rx.alt(INTEGER, rx.from_regex(r"-?0\.0*[0-9]{1,15}"), *(
    rx.from_regex(rf"-?[1-9][0-9]{{{k - 1}}}\.[0-9]{{1,{15 - k}}}") for k in range(1, 15)))


def quoted(content: rx.Rx) -> rx.Rx:
    """A JSON string whose spelled content (between the quotes) is in ``content``."""
    return rx.concat(rx.literal('"'), content, rx.literal('"'))


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``, non-ASCII characters raw (the canonical spelling)."""
    if isinstance(value, str):  # what json.dumps does for a str, without its encoder set-up (keys are most calls)
        return encode_basestring(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: booleans are not numbers (1 != true), numbers compare by value (1 == 1.0)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def decimal_of(value: int | float) -> Decimal:
    """The decimal a JSON number denotes (a float by its shortest repr: ``0.1`` is ``Decimal("0.1")``)."""
    return Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))


def number_spellings(value: int | float | Decimal) -> rx.Rx:
    """Every :data:`DECIMAL` spelling of ``value`` (``1``, ``1.0``, ``1.00``...), and its ``json.dumps`` text."""
    d = value if isinstance(value, Decimal) else decimal_of(value)
    if not math.isfinite(d):
        return rx.EMPTY
    sign, digits, exp = d.normalize().as_tuple()
    text = "".join(map(str, digits))
    if exp >= 0:
        whole, frac = text + "0" * exp, ""
    else:
        text = text.rjust(-exp + 1, "0")
        whole, frac = text[:exp], text[exp:]
    minus = "-" if sign and d != 0 else ""
    if frac:
        spelled = rx.concat(rx.literal(f"{minus}{whole}.{frac}"), rx.star(rx.literal("0")))
    else:
        zero_fraction = rx.optional(rx.concat(rx.literal("."), rx.plus(rx.literal("0"))))
        spelled = rx.concat(rx.literal(minus + whole), zero_fraction)
        if whole == "0":  # -0 is 0
            spelled = rx.concat(rx.optional(rx.literal("-")), spelled)
    return spelled if isinstance(value, Decimal) else rx.alt(spelled, rx.literal(dumps(value)))


def literal_values(values: list[Any]) -> rx.Rx:
    """The JSON texts of ``values``: compact; numbers in every decimal spelling of their value."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    others = [dumps(v) for v in values if not (isinstance(v, (int, float)) and not isinstance(v, bool))]
    return rx.alt(rx.literals(others), *(number_spellings(v) for v in numbers))
