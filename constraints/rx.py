"""Regular expressions over bytes with Brzozowski derivatives: the lazy automata behind grammars and regexes.

A regular expression is an immutable, hash-consed node (:class:`Rx`): two equal expressions are the same object,
so an expression is its own automaton state. The derivative of ``r`` by a byte ``b`` is the expression matching
``{w : bw in L(r)}`` (J. A. Brzozowski, "Derivatives of regular expressions", JACM 1964); reading bytes is
taking derivatives, and a state accepts when its expression matches the empty string. States are built only when
reached (no subset or product construction up front), so nothing is exponential at compile time, and
intersection, complement and bounded repetition cost no more than union: ``x{1,10000}`` is one node with a
counter, ``pattern & .{2,8}`` a pair of states. The smart constructors keep expressions in a normal form
(associative, commutative, idempotent unions and intersections, ``∅`` and ``ε`` folded) so that every expression
has finitely many distinct derivatives (Owens, Reppy & Turon, "Regular-expression derivatives re-examined",
JFP 2009, whose byte classes this module also uses).

Expressions are over bytes; Unicode enters through :func:`char_class`, which writes a set of code points as the
alternation of their UTF-8 byte sequences (surrogates excluded), so every expression built from characters
accepts valid UTF-8 only. :func:`neg` complements over *all* byte strings: intersect it with a character-built
expression (``difference`` does) to stay within text.

Example:
    >>> key = difference(from_regex(r"[a-z]+"), literals(["id", "name"]))
    >>> matches(key, b"ids"), matches(key, b"id"), is_empty(inter(key, literal("name")))
    (True, False, True)
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Iterator

from decoding.constraints.re_parser import constants as _sre_constants
from decoding.constraints.re_parser import parser as _sre_parser

__all__ = [
    "EMPTY", "EPSILON", "ONE_CLASS", "Rx", "alphabet", "alt", "any_byte", "any_char", "byte_set", "char_class", "concat", "derivative",
    "difference", "from_regex", "inter", "class_labels", "is_empty", "is_live", "literal", "literals", "matches", "neg",
    "optional", "plus", "refine", "repeat", "star",
]

_EMPTY, _EPS, _BYTES, _CAT, _OR, _AND, _NOT, _REP = range(8)
_ALL_BYTES = (1 << 256) - 1
MAX_REPEAT = 100_000  # a larger finite bound is refused; use hi=None for unbounded


class Rx:
    """One hash-consed regular expression over bytes; build it with the module's functions, never directly.

    Attributes:
        kind: the constructor (internal).
        args: its arguments (internal).
        nullable: the expression matches the empty string.
        id: creation order (unions and intersections sort their members by it).
    """

    __slots__ = ("kind", "args", "nullable", "id", "_classes", "_labels", "_by_class", "_live", "_has_boolean",
                 "__weakref__")

    def __repr__(self) -> str:
        return f"Rx({_show(self)})"

    def __lt__(self, other: Rx) -> bool:
        return self.id < other.id

    def derive(self, b: int) -> Rx:
        """The derivative by byte ``b`` (memoised per byte class: an expression keeps one derivative per class and
        the partition's shared byte -> class table, not a 256-entry list; expressions live as long as the process)."""
        by_class = self._by_class
        if by_class is None:
            classes = self.classes()
            self._labels = class_labels(classes)
            by_class = self._by_class = tuple(_derive(self, (m & -m).bit_length() - 1) for m in classes)
        return by_class[self._labels[b]]

    def classes(self) -> tuple[int, ...]:
        """A partition of the 256 bytes into classes (256-bit masks) such that bytes of one class have equal
        derivatives (memoised)."""
        if self._classes is None:
            self._classes = _classes(self)
        return self._classes


_TABLE: dict[tuple, Rx] = {}


def _make(kind: int, args: tuple, nullable: bool) -> Rx:
    key = (kind, args)
    node = _TABLE.get(key)
    if node is None:
        node = Rx()
        node.kind, node.args, node.nullable, node.id = kind, args, nullable, len(_TABLE)
        node._classes = node._labels = node._by_class = node._live = None
        node._has_boolean = _has_boolean(kind, args)
        _TABLE[key] = node
    return node


def _has_boolean(kind: int, args: tuple) -> bool:
    if kind == _CAT:
        return args[0]._has_boolean or args[1]._has_boolean
    if kind == _OR:
        return any(p._has_boolean for p in args[0])
    if kind == _REP:
        return args[0]._has_boolean
    return kind in (_AND, _NOT)


EMPTY = _make(_EMPTY, (), False)
EPSILON = _make(_EPS, (), True)
_SINGLE = [_make(_BYTES, (1 << b,), False) for b in range(256)]  # each byte alone


# --- constructors -----------------------------------------------------------------------------------------------


def byte_set(bytes_: Iterable[int] | int) -> Rx:
    """One byte from a set (an iterable of byte values, or a 256-bit mask)."""
    mask = bytes_ if isinstance(bytes_, int) else sum(1 << b for b in set(bytes_))
    return EMPTY if mask == 0 else _make(_BYTES, (mask,), False)


def any_byte() -> Rx:
    return byte_set(_ALL_BYTES)


def literal(text: str | bytes) -> Rx:
    """Exactly ``text`` (a ``str`` is UTF-8 encoded; memoised: a schema's keys are asked for more than once)."""
    data = _utf8(text)
    out = _LITERALS.get(data)
    if out is None:
        out = _LITERALS[data] = _chain(data, EPSILON)
    return out


_LITERALS: dict[bytes, Rx] = {}  # like every expression, kept for the process (_TABLE)


def _utf8(text: str | bytes) -> bytes:
    return text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)


def _chain(data: bytes, tail: Rx) -> Rx:
    """``data`` then ``tail`` (not EMPTY): what ``concat`` builds, made directly, since a byte is never nullable
    nor a concatenation (literals are most of a schema's terminals and keys)."""
    out = tail
    for b in reversed(data):
        out = _SINGLE[b] if out is EPSILON else _make(_CAT, (_SINGLE[b], out), False)
    return out


def concat(*parts: Rx) -> Rx:
    """The concatenation, right-associated."""
    out = EPSILON
    for part in reversed(parts):
        out = _cat(part, out)
    return out


def _cat(a: Rx, b: Rx) -> Rx:
    if a is EMPTY or b is EMPTY:
        return EMPTY
    if a is EPSILON:
        return b
    if b is EPSILON:
        return a
    if a.kind == _CAT:
        return _cat(a.args[0], _cat(a.args[1], b))
    return _make(_CAT, (a, b), a.nullable and b.nullable)


def alt(*parts: Rx) -> Rx:
    """The union; byte sets among the members merge into one."""
    members: set[Rx] = set()
    mask = 0
    for part in parts:
        for p in (part.args[0] if part.kind == _OR else (part,)):
            if p.kind == _BYTES:
                mask |= p.args[0]
            elif p is not EMPTY:
                members.add(p)
    if mask:
        members.add(byte_set(mask))
    everything = neg(EMPTY)
    if everything in members:
        return everything
    if not members:
        return EMPTY
    if len(members) == 1:
        return members.pop()
    ordered = tuple(sorted(members))
    return _make(_OR, (ordered,), any(p.nullable for p in ordered))


def inter(*parts: Rx) -> Rx:
    """The intersection."""
    members: set[Rx] = set()
    everything = neg(EMPTY)
    for part in parts:
        for p in (part.args[0] if part.kind == _AND else (part,)):
            if p is EMPTY:
                return EMPTY
            if p is not everything:
                members.add(p)
    if not members:
        return everything
    if len(members) == 1:
        return members.pop()
    if all(p.kind == _BYTES for p in members):
        mask = _ALL_BYTES
        for p in members:
            mask &= p.args[0]
        return byte_set(mask)
    if EPSILON in members:
        return EPSILON if all(p.nullable for p in members) else EMPTY
    ordered = tuple(sorted(members))
    return _make(_AND, (ordered,), all(p.nullable for p in ordered))


def neg(a: Rx) -> Rx:
    """The complement over all byte strings (see the module docstring)."""
    if a.kind == _NOT:
        return a.args[0]
    return _make(_NOT, (a,), not a.nullable)


def difference(a: Rx, b: Rx) -> Rx:
    """The strings of ``a`` that are not in ``b``."""
    return inter(a, neg(b))


def repeat(a: Rx, lo: int, hi: int | None = None) -> Rx:
    """``a{lo,hi}`` (``hi=None``: unbounded). Counters stay in the node: no copies of ``a``.

    Raises:
        ValueError: negative or inverted bounds, or a finite bound above 100,000.
    """
    if lo < 0 or (hi is not None and hi < lo):
        raise ValueError(f"repeat: bounds {{{lo},{hi}}} are not 0 <= lo <= hi")
    if hi is not None and hi > MAX_REPEAT or lo > MAX_REPEAT:
        raise ValueError(f"repeat: a bound above {MAX_REPEAT:,} ({lo}, {hi}); use an unbounded repeat")
    if a.nullable:
        lo = 0  # (ε|x){lo,hi} = x{0,hi}
    if hi == 0 or a is EPSILON:
        return EPSILON
    if a is EMPTY:
        return EPSILON if lo == 0 else EMPTY
    if lo == 1 and hi == 1:
        return a
    return _make(_REP, (a, lo, hi), lo == 0)


def optional(a: Rx) -> Rx:
    return alt(a, EPSILON)


def star(a: Rx) -> Rx:
    return repeat(a, 0, None)


def plus(a: Rx) -> Rx:
    return repeat(a, 1, None)


# --- Unicode ----------------------------------------------------------------------------------------------------

_UTF8_BOUNDS = ((0, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, 0x10FFFF))


def _utf8_sequences(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """The code points ``lo..hi`` (one encoded length) as sequences of byte ranges, each a full product."""
    a, b = chr(lo).encode("utf-8", "surrogatepass"), chr(hi).encode("utf-8", "surrogatepass")
    n = len(a)
    for i in range(1, n):  # split where a trailing part is not full (80..BF)
        tail = (1 << (6 * (n - i))) - 1  # mask of the code point bits below byte i
        if lo & ~tail != hi & ~tail:
            if lo & tail != 0:
                return _utf8_sequences(lo, lo | tail) + _utf8_sequences((lo | tail) + 1, hi)
            if hi & tail != tail:
                return _utf8_sequences(lo, (hi & ~tail) - 1) + _utf8_sequences(hi & ~tail, hi)
    return [[(a[i], b[i]) for i in range(n)]]


def char_class(ranges: Iterable[tuple[int, int]], negate: bool = False) -> Rx:
    """One character from Unicode scalar ranges ``[(lo, hi), ...]`` (inclusive), or from their complement.

    Surrogates (U+D800..U+DFFF) are never matched; the result matches the UTF-8 encoding of one character.
    """
    return _char_class(tuple(_normalise_ranges(ranges)), negate)


@functools.lru_cache(maxsize=65_536)
def _char_class(spans: tuple[tuple[int, int], ...], negate: bool) -> Rx:
    spans = list(spans)
    if negate:
        spans = _complement_ranges(spans)
    spans = _intersect_ranges(spans, _complement_ranges([(0xD800, 0xDFFF)]))  # never a surrogate
    options = []
    for lo, hi in spans:
        for blo, bhi in _UTF8_BOUNDS:
            s, e = max(lo, blo), min(hi, bhi)
            if s <= e:
                for seq in _utf8_sequences(s, e):
                    options.append(concat(*(byte_set(((1 << (y + 1)) - 1) ^ ((1 << x) - 1)) for x, y in seq)))
    return alt(*options)


def any_char(newline: bool = True) -> Rx:
    """Any one Unicode character (``newline=False``: any but ``\\n``, as ``.`` without DOTALL)."""
    return char_class([(0x0A, 0x0A)], negate=True) if not newline else char_class([(0, 0x10FFFF)])


def _normalise_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def _complement_ranges(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` complemented within 0..0x10FFFF."""
    out, prev = [], 0
    for lo, hi in _normalise_ranges(spans):
        if lo > prev:
            out.append((prev, lo - 1))
        prev = hi + 1
    if prev <= 0x10FFFF:
        out.append((prev, 0x10FFFF))
    return out


def _intersect_ranges(a: list, b: list) -> list:
    return [(max(x, u), min(y, v)) for x, y in a for u, v in b if max(x, u) <= min(y, v)]


def literals(texts: Iterable[str | bytes]) -> Rx:
    """The union of literal strings: up to 16, the union of their :func:`literal` expressions (the ones a grammar
    builds for them anyway, as key terminals); more, factored as a trie (shared prefixes are one path)."""
    strings = dict.fromkeys(map(_utf8, texts))  # in order: ids, so the expression's structure, are reproducible
    if len(strings) <= 16:
        out = alt(*map(literal, strings))
        _FINITE[out] = frozenset(strings)
        return out
    trie: dict = {}
    for data in strings:
        node = trie
        for b in data:
            node = node.setdefault(b, {})
        node[None] = True

    def build(node: dict) -> Rx:
        run = bytearray()  # a chain of single children is one _chain
        while len(node) == 1 and None not in node:
            (b, node), = node.items()
            run.append(b)
        options = [_chain(bytes([b]), build(child)) for b, child in node.items() if b is not None]
        if None in node:
            options.append(EPSILON)
        return _chain(bytes(run), options[0] if len(options) == 1 else alt(*options))

    out = build(trie) if trie else EMPTY
    _FINITE[out] = frozenset(strings)
    return out


# the strings of expressions built by ``literals`` (a set lookup where matching would derive new states); like
# every expression, kept for the process (_TABLE)
_FINITE: dict[Rx, frozenset[bytes]] = {}


# --- derivatives, byte classes, matching --------------------------------------------------------------------------


def _derive(r: Rx, b: int) -> Rx:
    kind, args = r.kind, r.args
    if kind == _BYTES:
        return EPSILON if args[0] >> b & 1 else EMPTY
    if kind == _CAT:
        head, tail = args
        out = _cat(head.derive(b), tail)
        return alt(out, tail.derive(b)) if head.nullable else out
    if kind == _OR:
        return alt(*(p.derive(b) for p in args[0]))
    if kind == _AND:
        return inter(*(p.derive(b) for p in args[0]))
    if kind == _NOT:
        return neg(args[0].derive(b))
    if kind == _REP:
        sub, lo, hi = args
        return _cat(sub.derive(b), repeat(sub, max(lo - 1, 0), None if hi is None else hi - 1))
    return EMPTY


def alphabet(r: Rx) -> int:
    """The bytes (a 256-bit mask) that occur in ``r``'s byte sets, or all bytes under a complement: no string ``r``
    matches holds a byte outside it."""
    mask, seen, todo = 0, set(), [r]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.kind == _NOT:
            return _ALL_BYTES
        if node.kind == _BYTES:
            mask |= node.args[0]
        for arg in node.args:
            todo.extend(a for a in (arg if isinstance(arg, tuple) else (arg,)) if isinstance(a, Rx))
    return mask


def derivative(r: Rx, data: bytes) -> Rx:
    """The expression left after reading ``data``."""
    for b in data:
        r = r.derive(b)
    return r


ONE_CLASS = (_ALL_BYTES,)  # the partition with every byte in one class
_LABELS: dict[tuple[int, ...], bytes] = {}


def refine(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The coarsest partition finer than both."""
    if len(a) == 1:
        return b
    if len(b) == 1:
        return a
    return tuple(sorted(x & y for x in a for y in b if x & y))


def _classes(r: Rx) -> tuple[int, ...]:
    kind, args = r.kind, r.args
    if kind == _BYTES:
        inside = args[0]
        return (inside,) if inside == _ALL_BYTES else tuple(sorted((inside, _ALL_BYTES ^ inside)))
    if kind == _CAT:
        head = args[0].classes()
        return refine(head, args[1].classes()) if args[0].nullable else head
    if kind in (_OR, _AND):
        out = ONE_CLASS
        for p in args[0]:
            out = refine(out, p.classes())
        return out
    if kind in (_NOT, _REP):
        return args[0].classes()
    return ONE_CLASS


def class_labels(classes: tuple[int, ...]) -> bytes:
    """Byte -> index of its class (memoised per partition)."""
    labels = _LABELS.get(classes)
    if labels is None:
        largest = max(range(len(classes)), key=lambda c: classes[c].bit_count())
        table = bytearray([largest]) * 256  # then only the bytes of the other classes are visited
        for c, mask in enumerate(classes):
            while c != largest and mask:
                low = mask & -mask
                table[low.bit_length() - 1] = c
                mask ^= low
        labels = _LABELS[classes] = bytes(table)
    return labels


def matches(r: Rx, data: bytes | str) -> bool:
    """Whether ``r`` matches all of ``data`` (``str`` is UTF-8 encoded)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return derivative(r, data).nullable


def is_live(r: Rx, budget: int = 20_000) -> bool:
    """Whether ``r`` matches some string. Exact for expressions without ``inter``/``neg``; with them, a breadth-first
    search over derivatives up to ``budget`` states, then assumed live (memoised)."""
    if r._live is None:
        r._live = _search_live(r, budget)
    return r._live


def is_empty(r: Rx) -> bool:
    """Whether ``r`` matches no string at all (see :func:`is_live`)."""
    return not is_live(r)


def _search_live(r: Rx, budget: int) -> bool:
    """Depth first over derivatives (a short accepted string is usually found in a few steps)."""
    if r is EMPTY:
        return False
    if not r._has_boolean or r.nullable or _witnessed(r):
        return True
    seen, stack = {r}, [r]
    while stack and len(seen) < budget:
        node = stack.pop()
        if node._live is not None:
            if node._live:
                return True
            continue
        for m in reversed(node.classes()):
            nxt = node.derive((m & -m).bit_length() - 1)
            if nxt.nullable or (nxt is not EMPTY and not nxt._has_boolean):
                return True
            if nxt not in seen and nxt is not EMPTY:
                seen.add(nxt)
                stack.append(nxt)
    if stack:
        return True  # budget spent: assume live
    for node in seen:
        node._live = False
    return False


def _witnessed(r: Rx, budget: int = 64) -> bool:
    """A cheap proof that ``A & B & ~C & ~D...`` (each part without ``inter``/``neg``) is live, before the
    derivative search builds rows of new states: an infinite ``A`` minus finite languages (a free key: any string
    but the named keys), or a short string of ``A`` that the other parts accept."""
    parts = r.args[0] if r.kind == _AND else (r,)
    positive = [p for p in parts if p.kind != _NOT]
    negative = [p.args[0] for p in parts if p.kind == _NOT]
    if not positive or any(p._has_boolean for p in positive + negative):
        return False
    if len(positive) == 1 and not _finite(positive[0]) and all(_finite(n) for n in negative):
        return True  # an infinite language minus finitely many strings: a lexer inside a free key, every byte
    return any(all(matches(p, text) for p in positive[1:]) and not any(_accepts(n, text) for n in negative)
               for text in _shortest(positive[0], budget))


def _finite(r: Rx) -> bool:
    """Whether ``r`` (boolean-free, so every sub-expression but EMPTY matches something) matches finitely many
    strings (memoised)."""
    out = _FINITENESS.get(r)
    if out is None:
        kind, args = r.kind, r.args
        if kind == _CAT:
            out = _finite(args[0]) and _finite(args[1])
        elif kind == _OR:
            out = all(_finite(p) for p in args[0])
        elif kind == _REP:
            out = _finite(args[0]) and (args[2] is not None or args[0] is EPSILON)
        else:
            out = True
        _FINITENESS[r] = out
    return out


_FINITENESS: dict[Rx, bool] = {}


def _accepts(r: Rx, text: bytes) -> bool:
    finite = _FINITE.get(r)
    return text in finite if finite is not None else matches(r, text)


def _shortest(r: Rx, budget: int) -> Iterator[bytes]:
    """Strings of ``r`` (boolean-free), shortest first: breadth first over derivatives, one byte per byte class,
    ``budget`` prefixes expanded at most."""
    frontier = [(r, b"")]
    while frontier:
        nxt = []
        for node, text in frontier:
            if node.nullable:
                yield text
            budget -= 1
            if budget < 0:
                return
            for m in node.classes():
                b = (m & -m).bit_length() - 1
                d = node.derive(b)
                if d is not EMPTY:
                    nxt.append((d, text + bytes([b])))
        frontier = nxt


# --- Python regular-expression syntax -------------------------------------------------------------------------

_UNSUPPORTED_OPS = {
    "GROUPREF": "backreferences",
    "GROUPREF_EXISTS": "conditional groups (?(id)yes|no)",
    "AT": "anchors (^, $, \\A, \\Z, \\b, \\B)",
    "ATOMIC_GROUP": "atomic groups (?>...)",
    "POSSESSIVE_REPEAT": "possessive quantifiers (*+, ++, ?+, {m,n}+)",
}
_DIGIT = [(0x30, 0x39)]
_WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE = [(0x09, 0x0D), (0x20, 0x20)]
_CATEGORIES = {
    "CATEGORY_DIGIT": (_DIGIT, False), "CATEGORY_NOT_DIGIT": (_DIGIT, True),
    "CATEGORY_WORD": (_WORD, False), "CATEGORY_NOT_WORD": (_WORD, True),
    "CATEGORY_SPACE": (_SPACE, False), "CATEGORY_NOT_SPACE": (_SPACE, True),
}


def from_regex(pattern: str, flags: str = "") -> Rx:
    """A Python regular expression (full-match semantics, ``\\d \\w \\s`` ASCII) as an expression.

    Args:
        pattern: Python ``re`` syntax; look-around, backreferences, anchors and atomic groups are refused.
        flags: any of ``i`` (ASCII case-insensitive), ``s`` (``.`` matches ``\\n``), ``x`` (verbose), ``m``
            (no effect: anchors are refused anyway), ``u``.

    Raises:
        ValueError: invalid syntax (with the position), an unsupported feature (named), or an unknown flag.
    """
    if not isinstance(pattern, str):
        raise ValueError(f"pattern: {type(pattern).__name__}, expected str")
    unknown = set(flags) - set("isxmu")
    if unknown:
        raise ValueError(f"flags: unsupported {''.join(sorted(unknown))!r}; use a subset of 'isxmu'")
    re_flags = re.ASCII | (re.VERBOSE if "x" in flags else 0) | (re.DOTALL if "s" in flags else 0)
    try:
        parsed = _sre_parser.parse(pattern, re_flags)
    except re.error as error:
        raise ValueError(f"invalid regular expression {pattern!r} at position {error.pos}: {error.msg}") from None
    extra = parsed.state.flags & ~(re.UNICODE | re.ASCII | re.VERBOSE | re.DOTALL | re.IGNORECASE | re.MULTILINE)
    if extra:
        raise ValueError(f"unsupported in {pattern!r}: inline flags other than (?i), (?s), (?x), (?m)")
    flag_state = parsed.state.flags
    reader = _RegexReader(pattern, ignore_case="i" in flags or bool(flag_state & re.IGNORECASE),
                          dotall=bool(re_flags & re.DOTALL or flag_state & re.DOTALL))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        return reader.seq(parsed)
    finally:
        sys.setrecursionlimit(limit)


class _RegexReader:
    def __init__(self, pattern: str, ignore_case: bool, dotall: bool):
        self.pattern, self.ignore_case, self.dotall = pattern, ignore_case, dotall

    def fail(self, what: str) -> None:
        raise ValueError(f"unsupported in {self.pattern!r}: {what}")

    def seq(self, items) -> Rx:
        return concat(*(self.item(str(op), av) for op, av in items))

    def chars(self, ranges: list[tuple[int, int]], negate: bool = False) -> Rx:
        if self.ignore_case:
            ranges = ranges + _swap_case(ranges)
        return char_class(ranges, negate)

    def item(self, name: str, av) -> Rx:
        if name == "LITERAL":
            return self.chars([(av, av)])
        if name == "NOT_LITERAL":
            return self.chars([(av, av)], negate=True)
        if name == "ANY":
            return any_char(newline=self.dotall)
        if name == "IN":
            return self.in_class(av)
        if name == "BRANCH":
            return alt(*(self.seq(branch) for branch in av[1]))
        if name == "SUBPATTERN":  # scoped flags (?i:...), (?-s:...): i and s change how the inside reads
            _, add_flags, del_flags, sub = av
            saved = self.ignore_case, self.dotall
            self.ignore_case = bool(add_flags & re.IGNORECASE) or (self.ignore_case and not del_flags & re.IGNORECASE)
            self.dotall = bool(add_flags & re.DOTALL) or (self.dotall and not del_flags & re.DOTALL)
            try:
                return self.seq(sub)
            finally:
                self.ignore_case, self.dotall = saved
        if name in ("MAX_REPEAT", "MIN_REPEAT"):  # laziness does not change the language of a full match
            lo, hi, sub = av
            return repeat(self.seq(sub), lo, None if hi == _sre_constants.MAXREPEAT else hi)
        if name in ("ASSERT", "ASSERT_NOT"):
            kind = "look-ahead" if av[0] == 1 else "look-behind"
            self.fail(f"{'negative ' if name == 'ASSERT_NOT' else ''}{kind} assertions")
        self.fail(_UNSUPPORTED_OPS.get(name, name))

    def in_class(self, items) -> Rx:
        negate, ranges = False, []
        for op, av in items:
            name = str(op)
            if name == "NEGATE":
                negate = True
            elif name == "LITERAL":
                ranges.append((av, av))
            elif name == "RANGE":
                ranges.append((av[0], av[1]))
            elif name == "CATEGORY":
                spans, negated = _CATEGORIES[str(av)]
                ranges.extend(_complement_ranges(spans) if negated else spans)
            else:
                self.fail(f"class item {name}")
        return self.chars(ranges, negate)


def _swap_case(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The other ASCII case of the letters in ``ranges``."""
    out = []
    for lo, hi in ranges:
        for a, z, shift in ((0x41, 0x5A, 32), (0x61, 0x7A, -32)):
            s, e = max(lo, a), min(hi, z)
            if s <= e:
                out.append((s + shift, e + shift))
    return out


# --- display ----------------------------------------------------------------------------------------------------


def _show(r: Rx, depth: int = 0) -> str:
    if depth > 6:
        return "…"
    kind, args = r.kind, r.args
    if kind == _EMPTY:
        return "∅"
    if kind == _EPS:
        return "ε"
    if kind == _BYTES:
        members = [b for b in range(256) if args[0] >> b & 1]
        if len(members) == 1:
            return repr(bytes(members))[2:-1]
        return f"[{len(members)} bytes]"
    if kind == _CAT:
        return _show(args[0], depth + 1) + _show(args[1], depth + 1)
    if kind in (_OR, _AND):
        sep = "|" if kind == _OR else "&"
        return "(" + sep.join(_show(p, depth + 1) for p in args[0]) + ")"
    if kind == _NOT:
        return f"¬({_show(args[0], depth + 1)})"
    sub, lo, hi = args
    return f"({_show(sub, depth + 1)}){{{lo},{'' if hi is None else hi}}}"
