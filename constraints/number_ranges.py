"""Numbers in an interval, and multiples of a number, as expressions over decimal spellings (no exponent).

A decimal is ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?``; its value is a regular property of the spelling, so bounds with any
decimal value (``minimum: 0.25``) and ``multipleOf`` are exact over it. Bounds compare the integer part, then the
fraction digit by digit (``x >= 1.25``: integer part >= 2, or 1 and fraction >= .25). A multiple of ``q = p/10^s``
is a decimal whose digits past the s-th fraction digit are zeros and whose digits, read as an integer, leave
remainder 0 mod p: a finite automaton of remainders, written as an expression by state elimination (J. A.
Brzozowski and E. J. McCluskey, "Signal flow graph techniques for sequential circuit state diagrams", 1963).
``-0`` spellings are left out of ranges (the value 0 is written ``0``).

Example:
    >>> from decimal import Decimal
    >>> from decoding.constraints import rx
    >>> r = rx.inter(decimal_range(Decimal("-1.5"), False, Decimal(10), True), multiple_of(Decimal("0.5")))
    >>> [rx.matches(r, t) for t in ("-1.5", "9.5", "10", "0.25", "3.50")]
    [True, True, False, False, True]
"""

from __future__ import annotations

from decimal import Decimal

from decoding.constraints import rx

__all__ = ["MAX_REMAINDER_STATES", "decimal_range", "multiple_of", "natural_range"]

MAX_REMAINDER_STATES = 40  # multipleOf automata above this size are not built (see multiple_of)

_D = rx.char_class([(0x30, 0x39)])
_POINT = rx.literal(".")
_FRACTION = rx.optional(rx.concat(_POINT, rx.plus(_D)))
_NATURAL = rx.from_regex("0|[1-9][0-9]*")


def _digit(a: int, b: int) -> rx.Rx:
    return rx.char_class([(0x30 + a, 0x30 + b)])


def _same_length(lo: str, hi: str) -> rx.Rx:
    """Digit strings of the common length of ``lo <= hi`` between them (digit-wise comparison)."""
    if not lo:
        return rx.EPSILON
    if lo == hi:
        return rx.literal(lo)
    n, a, b = len(lo) - 1, int(lo[0]), int(hi[0])
    if a == b:
        return rx.concat(rx.literal(lo[0]), _same_length(lo[1:], hi[1:]))
    low_full, high_full = lo[1:] == "0" * n, hi[1:] == "9" * n
    first, last = (a if low_full else a + 1), (b if high_full else b - 1)
    parts = []
    if not low_full:
        parts.append(rx.concat(rx.literal(lo[0]), _same_length(lo[1:], "9" * n)))
    if first <= last:
        parts.append(rx.concat(_digit(first, last), rx.repeat(_D, n, n)))
    if not high_full:
        parts.append(rx.concat(rx.literal(hi[0]), _same_length("0" * n, hi[1:])))
    return rx.alt(*parts)


def natural_range(lo: int, hi: int | None = None) -> rx.Rx:
    """The canonical spellings (no leading zero) of the integers ``lo..hi`` (``lo >= 0``; ``hi=None``: no bound)."""
    if hi is not None and hi < lo:
        return rx.EMPTY
    a = str(lo)
    if hi is not None and len(str(hi)) == len(a):
        return _same_length(a, str(hi))
    parts = [_same_length(a, "9" * len(a))]
    if hi is None:
        parts.append(rx.concat(_digit(1, 9), rx.repeat(_D, len(a), None)))
    else:
        b = str(hi)
        if len(b) - 1 > len(a):  # every length strictly between
            parts.append(rx.concat(_digit(1, 9), rx.repeat(_D, len(a), len(b) - 2)))
        parts.append(_same_length("1" + "0" * (len(b) - 1), b))
    return rx.alt(*parts)


def _split(a: Decimal) -> tuple[int, str]:
    """``a >= 0`` as (integer part, fraction digits without trailing zeros)."""
    whole = int(a)
    frac = format(a - whole, "f").partition(".")[2].rstrip("0")
    return whole, frac


def _fraction_equal(f: str) -> rx.Rx:
    """Optional fractions ``(\\.[0-9]+)?`` whose value is ``0.f``."""
    zeros = rx.star(rx.literal("0"))
    if not f:
        return rx.optional(rx.concat(_POINT, rx.plus(rx.literal("0"))))
    return rx.concat(_POINT, rx.literal(f), zeros)


def _digits_at_least(f: str) -> rx.Rx:
    """Non-empty digit strings D with 0.D >= 0.f (``f`` non-empty)."""
    c, rest = int(f[0]), f[1:]
    tail = rx.star(_D) if not rest else _digits_at_least(rest)
    above = rx.concat(_digit(c + 1, 9), rx.star(_D)) if c < 9 else rx.EMPTY
    return rx.alt(above, rx.concat(rx.literal(f[0]), tail))


def _digits_at_most(f: str) -> rx.Rx:
    """Digit strings D, possibly empty, with 0.D <= 0.f."""
    if not f:
        return rx.star(rx.literal("0"))
    c, rest = int(f[0]), f[1:]
    below = rx.concat(_digit(0, c - 1), rx.star(_D)) if c > 0 else rx.EMPTY
    return rx.alt(rx.EPSILON, below, rx.concat(rx.literal(f[0]), _digits_at_most(rest)))


def _magnitude_at_least(a: Decimal, strict: bool) -> rx.Rx:
    """Unsigned decimals m with m >= a (m > a when ``strict``), ``a >= 0``."""
    whole, f = _split(a)
    frac = _FRACTION if not f else rx.concat(_POINT, _digits_at_least(f))
    if strict:
        frac = rx.difference(frac, _fraction_equal(f))
    return rx.alt(rx.concat(natural_range(whole + 1), _FRACTION), rx.concat(rx.literal(str(whole)), frac))


def _magnitude_at_most(b: Decimal, strict: bool) -> rx.Rx:
    """Unsigned decimals m with m <= b (m < b when ``strict``), ``b >= 0``."""
    whole, f = _split(b)
    frac = rx.alt(rx.EPSILON, rx.concat(_POINT, rx.difference(_digits_at_most(f), rx.EPSILON)))
    if strict:
        frac = rx.difference(frac, _fraction_equal(f))
    below = rx.concat(natural_range(0, whole - 1), _FRACTION) if whole > 0 else rx.EMPTY
    return rx.alt(below, rx.concat(rx.literal(str(whole)), frac))


def decimal_range(lo: Decimal | None, lo_strict: bool, hi: Decimal | None, hi_strict: bool) -> rx.Rx:
    """Decimals x with lo <= x <= hi (``<`` where strict; None: no bound)."""
    unsigned = rx.concat(_NATURAL, _FRACTION)
    parts = []
    if hi is None or hi > 0 or (hi == 0 and not hi_strict):  # x >= 0, written without a sign
        conditions = [unsigned]
        if lo is not None and lo >= 0:
            conditions.append(_magnitude_at_least(lo, lo_strict))
        if hi is not None:
            conditions.append(_magnitude_at_most(hi, hi_strict))
        parts.append(rx.inter(*conditions))
    if lo is None or lo < 0:  # x = -m < 0
        conditions = [unsigned, _magnitude_at_least(Decimal(0), True)]
        if lo is not None:
            conditions.append(_magnitude_at_most(-lo, lo_strict))
        if hi is not None and hi < 0:
            conditions.append(_magnitude_at_least(-hi, hi_strict))
        parts.append(rx.concat(rx.literal("-"), rx.inter(*conditions)))
    return rx.alt(*parts)


def multiple_of(q: Decimal) -> rx.Rx | None:
    """Decimals that are integer multiples of ``q > 0``; None when the remainder automaton, minimised, would have
    more than :data:`MAX_REMAINDER_STATES` states (the caller decides what to do then)."""
    _, digits, exp = q.normalize().as_tuple()
    p, s = int("".join(map(str, digits))), max(-exp, 0)
    zero_fraction = rx.optional(rx.concat(_POINT, rx.plus(rx.literal("0"))))
    if exp > 0:  # q = p * 10^exp: an integer ending in exp zeros, the rest a multiple of p
        rest = _remainders(p, 0, integers_only=True)
        if rest is None:
            return None
        nonzero = rx.difference(rest, rx.literal("0"))
        whole = rx.alt(rx.literal("0"), rx.concat(nonzero, rx.literal("0" * exp)))
        return rx.concat(rx.optional(rx.literal("-")), whole, zero_fraction)
    if p == 1:  # x * 10^s is an integer: at most s significant fraction digits
        fraction = rx.concat(_POINT, rx.repeat(_D, 1, s), rx.star(rx.literal("0"))) if s else zero_fraction
        return rx.concat(rx.optional(rx.literal("-")), _NATURAL, rx.optional(fraction))
    unsigned = _remainders(p, s)
    return None if unsigned is None else rx.concat(rx.optional(rx.literal("-")), unsigned)


_STATE_LIMIT = 20_000  # remainder automata are not even built above this size


def _remainders(p: int, s: int, integers_only: bool = False) -> rx.Rx | None:
    """Canonical unsigned decimals ``I(.F)?`` with ``I F'`` divisible by ``p``, where F' is F padded or cut to
    ``s`` digits and the digits of F past ``s`` are zeros. States ``(j, r)``: j fraction digits read (-1: in the
    integer part; s: past the s-th), remainder r mod p."""
    if p * (s + 2) > _STATE_LIMIT:
        return None
    states = [(j, r) for j in range(-1, (-1 if integers_only else s) + 1) for r in range(p)]
    index = {state: i for i, state in enumerate(states)}
    delta: list[dict[int, int]] = [{} for _ in states]  # symbol 0-9 = digit, 10 = "."
    for (j, r), i in index.items():
        if j < s:
            for d in range(10):
                delta[i][d] = index.get((j + 1 if j >= 0 else -1, (10 * r + d) % p), -1)
        else:
            delta[i][0] = i
        if j == -1 and not integers_only:
            delta[i][10] = index[(0, r)]
    accepting = [r * 10 ** (s - max(j, 0)) % p == 0 for j, r in states]
    classes = _minimise(delta, accepting)
    n = max(classes) + 1
    if n > MAX_REMAINDER_STATES:
        return None
    edges: dict[tuple[int, int], rx.Rx] = {}
    for i, row in enumerate(delta):
        for symbol, k in row.items():
            if k >= 0:
                label = _POINT if symbol == 10 else _digit(symbol, symbol)
                key = (classes[i], classes[k])
                edges[key] = rx.alt(edges.get(key, rx.EMPTY), label)
    finals = sorted({classes[i] for i in range(len(states)) if accepting[i]})
    language = _eliminate(n, classes[0], finals, edges)
    return rx.inter(language, _NATURAL if integers_only else rx.concat(_NATURAL, _FRACTION))


def _minimise(delta: list[dict[int, int]], accepting: list[bool]) -> list[int]:
    """Moore's partition refinement: the class of each state (-1 in ``delta`` is the dead state)."""
    classes = [int(a) for a in accepting]
    while True:
        signatures = [(classes[i], tuple(sorted((sym, classes[k] if k >= 0 else -1) for sym, k in row.items())))
                      for i, row in enumerate(delta)]
        numbering: dict = {}
        refined = [numbering.setdefault(sig, len(numbering)) for sig in signatures]
        if len(numbering) == len(set(classes)):
            return refined
        classes = refined


def _eliminate(n: int, start: int, accepting: list[int], edges: dict[tuple[int, int], rx.Rx]) -> rx.Rx:
    """The language of an automaton by state elimination; states ``n`` and ``n + 1`` are the new start and end."""
    out: dict[int, dict[int, rx.Rx]] = {i: {} for i in range(n + 2)}
    into: dict[int, dict[int, rx.Rx]] = {i: {} for i in range(n + 2)}

    def add(i: int, k: int, label: rx.Rx) -> None:
        label = rx.alt(out[i].get(k, rx.EMPTY), label)
        out[i][k] = into[k][i] = label

    for (i, k), label in edges.items():
        add(i, k, label)
    add(n, start, rx.EPSILON)
    for a in accepting:
        add(a, n + 1, rx.EPSILON)
    remaining = set(range(n))
    while remaining:
        j = min(remaining, key=lambda s: (len(into[s]) * len(out[s]), s))
        remaining.discard(j)
        loop = rx.star(out[j].pop(j, rx.EMPTY))
        into[j].pop(j, None)
        for i, a in list(into[j].items()):
            for k, b in out[j].items():
                add(i, k, rx.concat(a, loop, b))
            del out[i][j]
        for k in out[j]:
            del into[k][j]
        out[j], into[j] = {}, {}
    return out[n].get(n + 1, rx.EMPTY)
