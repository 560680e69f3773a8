"""Regexes for the decimal writings of the numbers in an interval with integer bounds.

Integers are written canonically (no leading zeros, no ``-0``); with ``fractions``, a number is an integer part
and an optional fraction, never an exponent (a subset of JSON numbers).
"""

from __future__ import annotations

from decoding.constraints.json_lexical import Rx, alt, group

__all__ = ["signed_range"]

_ANY_FRACTION = r"(?:\.[0-9]+)?"
_ZERO_FRACTION = r"(?:\.0+)?"
_NONZERO_FRACTION = r"\.[0-9]*[1-9][0-9]*"


def _digits_range(lo: str, hi: str) -> str:
    """Regex for the decimal strings of equal length ``n`` between ``lo`` and ``hi`` (inclusive, digit-wise)."""
    if not lo:
        return ""
    if lo == hi:
        return lo
    n = len(lo) - 1
    a, b = int(lo[0]), int(hi[0])
    if a == b:
        return lo[0] + _digits_range(lo[1:], hi[1:])
    parts = []
    low_full, high_full = lo[1:] == "0" * n, hi[1:] == "9" * n
    first = a if low_full else a + 1
    last = b if high_full else b - 1
    if not low_full:
        parts.append(lo[0] + group(_digits_range(lo[1:], "9" * n)) if n else lo[0])
    if first <= last:
        cls = str(first) if first == last else f"[{first}-{last}]"
        parts.append(cls + ("[0-9]" + (f"{{{n}}}" if n > 1 else "") if n else ""))
    if not high_full:
        parts.append(hi[0] + group(_digits_range("0" * n, hi[1:])) if n else hi[0])
    return group("|".join(parts)) if len(parts) > 1 else parts[0]


def _natural_range(lo: int, hi: int | None) -> Rx:
    """Regex for the canonical decimal writings of the integers in ``[lo, hi]`` (``lo >= 0``; hi None = infinity)."""
    if hi is not None and hi < lo:
        return None
    parts = []
    top_len = len(str(hi)) if hi is not None else len(str(lo))
    for length in range(len(str(lo)), top_len + 1):
        a = lo if length == len(str(lo)) else 10 ** (length - 1)
        b = hi if (hi is not None and length == len(str(hi))) else 10**length - 1
        parts.append(_digits_range(str(a), str(b)))
    if hi is None:
        parts.append(f"[1-9][0-9]{{{top_len},}}")
    return alt(parts)


def _magnitude(a: int, a_ex: bool, b: int | None, b_ex: bool, fractions: bool) -> Rx:
    """Non-negative decimals m with a <(=) m <(=) b, written without exponent (integers only unless fractions)."""
    if not fractions:
        lo = a + 1 if a_ex else a
        hi = None if b is None else (b - 1 if b_ex else b)
        return _natural_range(lo, hi)
    if b is not None and (b < a or (b == a and (a_ex or b_ex))):
        return None
    if b is not None and b == a:
        return str(a) + _ZERO_FRACTION
    parts: list[Rx] = [str(a) + (_NONZERO_FRACTION if a_ex else _ANY_FRACTION)]
    middle = _natural_range(a + 1, None if b is None else b - 1)
    if middle is not None:
        parts.append(group(middle) + _ANY_FRACTION)
    if b is not None and not b_ex:
        parts.append(str(b) + _ZERO_FRACTION)
    return alt(parts)


def signed_range(lo: int | None, lo_ex: bool, hi: int | None, hi_ex: bool, fractions: bool) -> Rx:
    """Numbers x with lo <(=) x <(=) hi (``*_ex``: exclusive; None: unbounded); None when there are none."""
    parts: list[Rx] = []
    if hi is None or hi > 0 or (hi == 0 and not hi_ex):  # x >= 0 part
        a, a_ex = (lo, lo_ex) if lo is not None and lo >= 0 else (0, False)
        parts.append(_magnitude(a, a_ex, hi, hi_ex, fractions))
    if lo is None or lo < 0:  # x < 0 part, written -m with m > 0
        if hi is not None and hi < 0:
            a, a_ex = -hi, hi_ex
        else:
            a, a_ex = 0, True
        neg = _magnitude(a, a_ex, None if lo is None else -lo, lo_ex, fractions)
        parts.append(None if neg is None else "-" + group(neg))
    return alt(parts)
