"""JSON Schema as a context-free grammar: :func:`schema_to_cfg`, and :class:`JsonSchema`, its :class:`Grammar`.

Every subschema (more exactly every node of :mod:`~decoding.constraints.json_normal`: a set of conjoined
subschemas) is one rule, memoised, so ``$ref`` cycles are recursive rules: nesting is unbounded and nothing is
unrolled. A value rule's alternatives are one terminal for all its scalars (strings, numbers, ``true``/``false``/
``null``, ``enum`` values) and a rule per object or array alternative. Terminals are coarse, a whole string or number
each, so masks stay fast; the structure (``{ } [ ] , :``) is rules. The translation is *sound*: every text
accepted is a JSON text valid under the schema; it is *complete* for the compact texts with properties in the
schema's order (or in any order, ``key_order="any"``), within these decisions:

* Compact JSON, unless ``whitespace`` (a regex over JSON white space such as ``r"[ \\n]{0,4}"``) is given: then
  it may follow ``{ [ , :`` and precede ``} ] , :``, never around the whole text.
* Strings are spelled canonically (:mod:`~decoding.constraints.json_lexical`): ``\\u`` escapes only for control
  characters, never for surrogates, so each character has one spelling and lengths and exclusions are exact.
* Objects: the named properties (``properties``, then ``required``, ``dependentRequired`` names) come first, in
  the schema's order, each at most once; then other members, whose keys differ from every named one (free keys
  may repeat among themselves: ``{"x":1,"x":2}`` is one property once parsed, so a count of free keys counts
  one towards ``minProperties``: a minimum that needs two free keys is refused). ``key_order="any"`` lets
  named members come in any order, and free ones between them, up to 8 named properties per object.
* Numbers: ``type: number`` alone is JSON's number grammar; any other numeric keyword restricts numbers to
  decimals without exponent, where bounds of any value and ``multipleOf`` are exact
  (:mod:`~decoding.constraints.number_ranges`); a ``multipleOf`` whose remainder automaton is too big keeps 100
  multiples near the lower bound. Integers are written without a fraction (``2``, not ``2.0``, which draft 4
  and Python validators read as a float). Python validators check ``multipleOf`` by float division (``2.36 /
  0.01`` is 235.99999999999997), so a divisor that is not a binary float keeps only the integer multiples, where
  that division is exact (or 100 multiples checked one by one): valid under both readings. For the same reason
  a constrained number with a fraction has at most 15 significant digits (then its float compares to a bound as
  the decimal does).
* ``uniqueItems`` holds when at most one item fits, or when items come from at most 8 literal values (each used
  once); otherwise it is refused. ``maxItems``/``maxProperties`` beyond the lower bound plus 64 are lowered to it
  (each count is a chain of rules; ``minItems`` alone is a doubling run), ``maxLength`` above 100,000 too.
* ``oneOf``, ``not``, ``if``: exact (:mod:`~decoding.constraints.json_normal`); refused by name where a
  complement is not expressible or more than 64 alternatives would result.
* ``format``: see :mod:`~decoding.constraints.json_formats`; ``pattern``: :mod:`~decoding.constraints.json_pattern`.

Whatever cannot be expressed raises :class:`UnsupportedSchemaError` naming the keyword and its JSON pointer, and
so does a compile that passes its ``deadline`` (1 s by default). A schema that admits no value raises
``ValueError``.

Example:
    >>> c = JsonSchema({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
    ...                 "required": ["n"], "additionalProperties": False})
    >>> c.matches('{"n":42}'), c.matches('{"n":0}'), c.matches('{"n":1,"n":2}')
    (True, False, False)
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from itertools import combinations
from collections import deque
from decimal import Decimal
from typing import Any

from decoding.constraints import rx
from decoding.constraints.cfg import Cfg, GrammarBuilder, GrammarError
from decoding.constraints.grammar import Grammar
from decoding.constraints.json_formats import format_content
from decoding.constraints.json_lexical import (
    CHAR, FLOAT_SAFE, FRACTIONAL, INTEGER, NUMBER, STRING, dumps, json_equal, literal_values, number_spellings, quoted,
)
from decoding.constraints.json_normal import (
    Clock, Conj, Flat, Node, Normaliser, UnsupportedSchemaError, at, json_type, refuse,
)
from decoding.constraints.json_pattern import pattern_string, pattern_strings
from decoding.constraints.number_ranges import decimal_range, multiple_of

__all__ = ["JsonSchema", "UnsupportedSchemaError", "schema_to_cfg"]

KEY_ORDERS = ("schema", "any")
MAX_ANY_ORDER = 8  # named properties per object under key_order="any" (2^n states)
MAX_PATTERNS = 6  # patternProperties per object (2^n key regions)
MAX_UNIQUE_VALUES = 8  # uniqueItems over a finite set of values (2^n states)
MAX_WITNESSES = 3  # complements of additionalProperties & co. on one object (2^n states)
LIVENESS_BUDGET = 200  # derivative states searched to prove a terminal non-empty (see _Translator.terminal)
MAX_CHAIN = 1_024  # states of one count chain (minItems, minProperties...)
MAX_SPAN = 64  # how far maxItems/maxProperties are honoured above the lower bound
_MULTIPLES_KEPT = 100
_JSON_SPACE = rx.from_regex(r"[ \t\n\r]*")
_SCALARS = frozenset({"null", "boolean", "string", "integer", "fraction"})
_NUMERIC = frozenset({"integer", "fraction"})
_NULL, _BOOLEAN = rx.literal("null"), rx.literals(["true", "false"])
_SCALAR_LANGUAGES: dict[tuple, rx.Rx] = {}  # see _Translator.scalars


class JsonSchema(Grammar):
    """A JSON Schema as a constraint: :func:`schema_to_cfg`, run by the grammar engine.

    Args:
        schema: a dict, a JSON text, or ``True``.
        whitespace: a regex of JSON white space allowed around structural characters (default: compact).
        key_order: ``"schema"`` (named properties in the schema's order) or ``"any"``.
        deadline: seconds the compile may take before it is refused.

    Raises:
        UnsupportedSchemaError: a keyword that cannot be expressed (named, with its JSON pointer).
        ValueError: an invalid schema, or one that admits no value.

    Example:
        >>> c = JsonSchema({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})
        >>> c.matches('{"ok":true}'), c.matches('{"ok":1}')
        (True, False)
    """

    def __init__(self, schema: dict | str | bool, whitespace: str | None = None, key_order: str = "schema",
                 deadline: float = 1.0):
        self.schema, self.whitespace, self.key_order = schema, whitespace, key_order
        self._translator = _translate(schema, whitespace, key_order, deadline)
        super().__init__(self._translator.cfg)

    def dumps(self, value: Any) -> str:
        """``value`` as this constraint writes it: compact, integers without a fraction, and under
        ``key_order="schema"`` the named properties in the schema's order (the free ones after them, as given;
        under ``"any"`` all as given). A valid value so written is accepted; where no alternative of the schema
        fits a value, it is left as it is."""
        return dumps(self._translator.arrange(self._translator.normal.root_node(), value))

    def __repr__(self) -> str:
        text = self.schema if isinstance(self.schema, str) else json.dumps(self.schema)
        return f"JsonSchema({text[:60] + '...' if len(text) > 60 else text})"


def schema_to_cfg(schema: dict | str | bool, whitespace: str | None = None, key_order: str = "schema",
                  deadline: float = 1.0) -> Cfg:
    """The grammar of the JSON texts valid under ``schema`` (see the module docstring).

    Raises:
        UnsupportedSchemaError: a keyword that cannot be expressed, or a compile past ``deadline`` seconds.
        ValueError: an invalid schema or argument, or a schema that admits no value.
    """
    return _translate(schema, whitespace, key_order, deadline).cfg


def _translate(schema: Any, whitespace: str | None, key_order: str, deadline: float) -> _Translator:
    if key_order not in KEY_ORDERS:
        raise ValueError(f"key_order: {key_order!r}; use one of {', '.join(map(repr, KEY_ORDERS))}")
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not deadline > 0:
        raise ValueError(f"deadline: {deadline!r}; use a number of seconds above 0")
    space = _whitespace(whitespace)
    clock = Clock(deadline)
    try:
        translator = _Translator(Normaliser(_load(schema), clock), space, key_order, clock)
        translator.build()
        return translator
    except RecursionError:
        raise UnsupportedSchemaError("unsupported schema: nesting too deep") from None
    except GrammarError as exc:
        raise ValueError(f"schema admits no JSON value ({exc})") from None


def _load(schema: Any) -> dict | bool:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise ValueError(f"schema is not valid JSON: {exc}") from None
    if schema is False:
        raise ValueError("schema is false: it admits no JSON value")
    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"schema must be a JSON object or a boolean, got {type(schema).__name__}")
    return schema


def _whitespace(whitespace: str | None) -> rx.Rx:
    if whitespace is None:
        return rx.EPSILON
    if not isinstance(whitespace, str):
        raise ValueError(f"whitespace: {type(whitespace).__name__}; use a regex string or None")
    space = rx.from_regex(whitespace)
    if not rx.is_empty(rx.difference(space, _JSON_SPACE)):
        raise ValueError(f"whitespace: {whitespace!r} matches more than JSON white space (space, \\t, \\n, \\r)")
    return space


class _Translator:
    """Nodes to rules (values), flats to object and array rules, flats to scalar terminals."""

    def __init__(self, normal: Normaliser, space: rx.Rx, key_order: str, clock: Clock):
        self.normal, self.key_order, self.clock = normal, key_order, clock
        self.g = GrammarBuilder()
        punct = lambda ch, before, after: self.g.terminal(  # noqa: E731
            rx.concat(space if before else rx.EPSILON, rx.literal(ch), space if after else rx.EPSILON), repr(ch))
        self.lbrace, self.rbrace = punct("{", False, True), punct("}", True, False)
        self.lbracket, self.rbracket = punct("[", False, True), punct("]", True, False)
        self.comma, self.colon = punct(",", True, True), punct(":", True, True)
        self.values: dict[Node, int] = {}
        self.containers: dict[tuple, int] = {}
        self.queue: deque = deque()
        self.cfg: Cfg | None = None
        self.count = 0
        self.keys: dict[str, int] = {}

    def build(self) -> Cfg:
        start = self.value(self.normal.root_node())
        if start < 0:  # a scalar schema: its terminal under a start rule
            start, terminal = self.nonterminal("value", ""), start
            self.g.rule(start, [terminal])
        while self.queue:
            self.define_value(*self.queue.popleft())
        self.cfg = self.g.build(start)
        return self.cfg

    def arrange(self, node: Node, value: Any) -> Any:
        """``value`` with object members in the order the grammar emits them (see :meth:`JsonSchema.dumps`)."""
        flats = self.normal.alternatives(node)
        f = next((f for f in flats if self.admits_flat(f, value)), None) \
            or next((f for f in flats if json_type(value) in f.types), None)
        if f is None:
            return value
        if f.enum is not None:  # containers as their exact schema orders them, under key_order
            value = next((v for v in f.enum if json_equal(v, value)), value)
            if isinstance(value, (dict, list)):
                return self.arrange(frozenset([self.normal.conj(self.normal.exact(value), f.ptr)]), value)
        if isinstance(value, dict):
            named = named_members(f) if self.key_order == "schema" else []
            order = [k for k in named if k in value] + [k for k in value if k not in named]
            return {k: self.arrange(frozenset(self.normal.member(f, k)), value[k]) for k in order}
        if isinstance(value, list):
            return [self.arrange(frozenset(_position(f, i)), v) for i, v in enumerate(value)]
        if isinstance(value, float) and value.is_integer() and "fraction" not in f.types:
            return int(value)  # integers are written without a fraction
        return value

    # -- values ----------------------------------------------------------------------------------------------------
    def value(self, node: Node) -> int:
        """The symbol of ``node``'s values: the terminal of its scalars when it has no other values (no unit rule:
        fewer rules to build and for the parser to predict), else a rule, defined later so that recursion finds
        it."""
        symbol = self.values.get(node)
        if symbol is None:
            flats = self.normal.alternatives(node)
            scalars = self.scalar_terminal(flats)
            if scalars is not None and all(f.types <= _SCALARS for f in flats):
                symbol = scalars
            else:
                ptrs = sorted(self.normal.pointers[sid] for sid, _ in node)
                symbol = self.nonterminal("value", ptrs[0] if ptrs else "")
                self.queue.append((symbol, flats, scalars))
            self.values[node] = symbol
        return symbol

    def scalar_terminal(self, flats: list[Flat]) -> int | None:
        """The one terminal of all the scalar values of ``flats``; None when they have none."""
        scalars = rx.alt(*(self.scalars(f) for f in flats))
        return None if scalars is rx.EMPTY else self.terminal(scalars, f"scalar@{at(flats[0].ptr)}")

    def define_value(self, nt: int, flats: list[Flat], scalars: int | None) -> None:
        alternatives = [[scalars]] if scalars is not None else []
        for f in flats:
            self.clock.check(f.ptr)
            if f.enum is not None:
                alternatives += [[self.literal(v, f.ptr)] for v in f.enum if json_type(v) in f.types - _SCALARS
                                 and self.admits_flat(f, v)]
                continue
            if "object" in f.types:
                alternatives.append([self.object_rule(f)])
            if "array" in f.types:
                alternatives.append([self.array_rule(f)])
        self.rules(nt, alternatives)

    def terminal(self, language: rx.Rx, name: str) -> int:
        """A terminal; its liveness is searched here with a small budget, past which ``rx.is_live`` takes (and
        remembers) it as live, so that the grammar builder does not search again: an intersection such as an
        e-mail format within ``maxLength: 1000`` can take seconds to prove non-empty state by state. A terminal
        wrongly taken as live only leaves rules that never match."""
        self.clock.check("")
        rx.is_live(language, budget=LIVENESS_BUDGET)
        return self.g.terminal(language, name)

    def nonterminal(self, kind: str, ptr: str) -> int:
        """A new rule named after what it is and where (numbered here: the builder's own numbering of repeated
        names costs a scan per name)."""
        self.count += 1
        return self.g.nonterminal(f"{kind}@{at(ptr)}#{self.count}")

    def rules(self, nt: int, alternatives: list[list[int]]) -> None:
        """``nt``'s alternatives; none at all makes ``nt`` match nothing (the builder prunes it)."""
        for rhs in alternatives:
            self.g.rule(nt, rhs)
        if not alternatives:
            self.g.rule(nt, [self.g.terminal(rx.EMPTY, "nothing")])

    def literal(self, value: Any, ptr: str) -> int:
        """The rule of one JSON value (an ``enum`` member), its structure as rules so that lexemes stay those of
        any other JSON text, and objects follow ``key_order``."""
        return self.value(frozenset([self.normal.conj(self.normal.exact(value), f"{ptr}/enum")]))

    def key(self, name: str) -> int:
        if name not in self.keys:
            self.keys[name] = self.g.terminal(rx.literal(dumps(name)), dumps(name))
        return self.keys[name]

    # -- scalars ---------------------------------------------------------------------------------------------------
    def scalars(self, f: Flat, types: frozenset = _SCALARS) -> rx.Rx:
        """One terminal for all the scalar values of ``f`` of ``types``; without ``enum`` or its complement, a
        function of the string and number keywords alone, memoised across schemas (most are the same few)."""
        types = f.types & types
        if not types:
            return rx.EMPTY
        if f.enum is not None or f.not_enum:
            return self.scalar_language(f, types)
        key = (types, f.min_length, f.max_length, tuple(f.patterns), tuple(f.formats), tuple(f.not_patterns),
               f.lower, f.upper, tuple(f.multiples), tuple(f.not_multiples))
        language = _SCALAR_LANGUAGES.get(key)
        if language is None:
            if len(_SCALAR_LANGUAGES) >= 4096:
                _SCALAR_LANGUAGES.clear()
            language = _SCALAR_LANGUAGES[key] = self.scalar_language(f, types)
        return language

    def scalar_language(self, f: Flat, types: frozenset) -> rx.Rx:
        """What :meth:`scalars` returns, computed."""
        language = rx.alt(_NULL if "null" in types else rx.EMPTY, _BOOLEAN if "boolean" in types else rx.EMPTY,
                          self.strings(f) if "string" in types else rx.EMPTY,
                          self.numbers(f, types) if types & _NUMERIC else rx.EMPTY)
        if f.enum is not None:
            language = rx.inter(language, literal_values([v for v in f.enum if json_type(v) in types]))
        excluded = [v for v in f.not_enum if json_type(v) in _SCALARS]
        if excluded:
            language = rx.difference(language, literal_values(excluded))
        if any(json_type(v) in f.types - _SCALARS for v in f.not_enum):
            raise refuse("not", f.ptr, "the complement of an object or array value")
        return language

    def strings(self, f: Flat) -> rx.Rx:
        if f.min_length > rx.MAX_REPEAT:
            raise refuse("minLength", f.ptr, f"{f.min_length} is above {rx.MAX_REPEAT:,}")
        high = None if f.max_length is None else min(f.max_length, rx.MAX_REPEAT)
        if high is not None and high < f.min_length:
            return rx.EMPTY
        parts = [pattern_string(p) for p in f.patterns] + [quoted(format_content(x)) for x in f.formats]
        if f.min_length or high is not None or not parts:  # every part is a set of strings already
            parts.append(quoted(rx.repeat(CHAR, f.min_length, high)))
        language = rx.inter(*parts)
        for p in f.not_patterns:  # outside what either reading of the pattern matches
            language = rx.difference(language, pattern_strings(p)[1])
        return language

    def numbers(self, f: Flat, types: frozenset) -> rx.Rx:
        plain = not (f.lower or f.upper or f.multiples or f.not_multiples or f.enum is not None
                     or any(json_type(v) in ("integer", "fraction") for v in f.not_enum))
        if plain and {"integer", "fraction"} <= types:
            return NUMBER
        if {"integer", "fraction"} <= types:
            language = FLOAT_SAFE
        else:
            language = INTEGER if "integer" in types else rx.inter(FRACTIONAL, FLOAT_SAFE)
        if f.lower or f.upper:
            lo, hi = f.lower or (None, False), f.upper or (None, False)
            language = rx.inter(language, decimal_range(lo[0], lo[1], hi[0], hi[1]))
        for q in f.multiples:
            if _float_exact(q):
                multiples = multiple_of(q) or self.some_multiples(f, q)
            elif _integer_quotients_exact(q):  # Python validators divide floats: 2.36 / 0.01 is not 236
                multiples = rx.inter(multiple_of(q) or self.some_multiples(f, q), INTEGER)
            else:
                multiples = self.some_multiples(f, q)
            language = rx.inter(language, multiples)
        for q in f.not_multiples:
            multiples = multiple_of(q)
            if multiples is None:
                raise refuse("not", f.ptr, f"the complement of multipleOf {q} (too many remainders)")
            language = rx.difference(language, multiples)
        return language

    @staticmethod
    def some_multiples(f: Flat, q: Decimal) -> rx.Rx:
        """A sound subset of the multiples of ``q``: 100 of them from the lower bound (or around 0), each one that
        floating-point division also finds a multiple."""
        if f.lower is not None:
            first = math.ceil(f.lower[0] / q)
        elif f.upper is not None:
            first = math.floor(f.upper[0] / q) - _MULTIPLES_KEPT + 1
        else:
            first = -(_MULTIPLES_KEPT // 2)
        values = [k * q for k in range(first, first + _MULTIPLES_KEPT)]
        return rx.alt(*(number_spellings(v) for v in values if (float(v) / float(q)).is_integer()))

    def witness_keys(self, spec: dict) -> rx.Rx:
        """The keys a witness may have: matching ``patterns``, not ``not_names`` nor ``not_patterns``, and under
        the ``names`` schema."""
        language = rx.inter(STRING, *(pattern_string(p) for p in spec.get("patterns", [])))
        excluded = [rx.literals([dumps(k) for k in spec.get("not_names", [])])]
        excluded += [pattern_strings(p)[1] for p in spec.get("not_patterns", [])]
        if "names" in spec:
            language = rx.inter(language, self.strings_of(spec["names"]))
        return rx.difference(language, rx.alt(*excluded))

    def strings_of(self, c: Conj) -> rx.Rx:
        """The strings valid under the conjunct ``c``."""
        return rx.alt(*(self.scalars(g, frozenset({"string"})) for g in self.normal.alternatives(frozenset([c]))))

    def key_language(self, f: Flat) -> rx.Rx:
        """The keys ``propertyNames`` allows (all strings when absent)."""
        return rx.inter(STRING, *(self.strings_of(c) for c in f.property_names))

    # -- objects ---------------------------------------------------------------------------------------------------
    def object_rule(self, f: Flat) -> int:
        key = ("object", f.key)
        if key not in self.containers:
            nt = self.containers[key] = self.nonterminal("object", f.ptr)
            self.g.rule(nt, [self.lbrace, _ObjectBody(self, f).start(), self.rbrace])
        return self.containers[key]

    # -- arrays ----------------------------------------------------------------------------------------------------
    def array_rule(self, f: Flat) -> int:
        key = ("array", f.key)
        if key not in self.containers:
            nt = self.containers[key] = self.nonterminal("array", f.ptr)
            body = _ArrayBody(self, f).start()
            self.rules(nt, [] if body is None else [[self.lbracket, body, self.rbracket]])
        return self.containers[key]

    # -- membership of a value (enum members against other keywords) -----------------------------------------------
    def admits(self, node: Node, value: Any) -> bool:
        return any(self.admits_flat(f, value) for f in self.normal.alternatives(node))

    def admits_flat(self, f: Flat, value: Any) -> bool:
        kind = json_type(value)
        if kind not in f.types or (f.enum is not None and not any(json_equal(value, v) for v in f.enum)) \
                or any(json_equal(value, v) for v in f.not_enum):
            return False
        if kind in _SCALARS:
            return rx.matches(self.scalars(f), dumps(value))
        if kind == "object":
            return self.admits_object(f, value)
        return self.admits_array(f, value)

    def admits_object(self, f: Flat, value: dict) -> bool:
        names = self.key_language(f) if f.property_names else None
        for name, v in value.items():
            conjs = self.normal.member(f, name)
            if (names is not None and not rx.matches(names, dumps(name))) or not self.admits(frozenset(conjs), v):
                return False
        for spec, c in f.witnesses:
            keys = self.witness_keys(spec)
            if not any(rx.matches(keys, dumps(k)) and self.admits(frozenset([c]), v) for k, v in value.items()):
                return False
        return (all(r in value for r in f.required) and f.min_properties <= len(value)
                and (f.max_properties is None or len(value) <= f.max_properties)
                and all(b in value for a, bs in f.dependent_required.items() if a in value for b in bs))

    def admits_array(self, f: Flat, value: list) -> bool:
        for i, v in enumerate(value):
            conjs = _position(f, i)
            if not self.admits(frozenset(conjs), v):
                return False
        for c, lo, hi in f.contains:
            n = sum(self.admits(frozenset([c]), v) for v in value)
            if n < lo or (hi is not None and n > hi):
                return False
        unique = f.unique_ptr is None or all(not json_equal(a, b) for i, a in enumerate(value) for b in value[i + 1:])
        return unique and f.min_items <= len(value) and (f.max_items is None or len(value) <= f.max_items)


def _float_exact(q: Decimal) -> bool:
    """Whether ``q`` is a binary float exactly (0.5, 0.25, 12): its multiples are too, and dividing is exact."""
    return Fraction(float(q)) == Fraction(q)


def _integer_quotients_exact(q: Decimal) -> bool:
    """Whether ``n / float(q)`` rounds to the integer ``n / q`` for every integer multiple n of ``q``: the float
    of q is within a relative 2^-54 of q (0.01, 0.1 are; 0.07 is not, and 7 / 0.07 is 100.00000000000001)."""
    return abs(Fraction(float(q)) - Fraction(q)) <= Fraction(q) / 2**54


def named_members(f: Flat) -> list[str]:
    """The named members of the objects of ``f``, in emission order: ``properties`` (schema by schema), then
    ``required``, then the names of ``dependentRequired``."""
    names = [k for spec in f.objects for k in spec.properties] + list(f.required)
    for a, bs in f.dependent_required.items():
        names += [a, *bs]
    return list(dict.fromkeys(names))


def _position(f: Flat, i: int) -> list[Conj]:
    """The conjuncts of item ``i`` of an array of ``f``."""
    out = []
    for spec in f.arrays:
        c = spec.prefix[i] if i < len(spec.prefix) else spec.rest
        if c is not None:
            out.append(c)
    return out


def _is_false(normal: Normaliser, conjs: list[Conj]) -> bool:
    return any(normal.schemas[sid] is False for sid, _ in conjs)


class _ObjectBody:
    """The members of the objects of one flat, as rules over states (see the module docstring for the order).

    Schema order: state ``(j, c, first, pending, absent, done)``: named member j is next, c named members are
    present (counted only under min/maxProperties), ``pending`` names a present member's ``dependentRequired``
    made required, ``absent`` the earlier absent names that a later member would require. Then the free members:
    ``(c, g, first, done)`` with g free members so far. Any order: ``(used, g, done)``. Throughout, ``done`` is
    the set of witnesses found: a witness (from ``not additionalProperties`` and the like) is some member whose key
    is of a kind and whose value is under a schema; a member may be one, its value then under both schemas.
    """

    def __init__(self, t: _Translator, f: Flat):
        self.t, self.f, self.g, n = t, f, t.g, t.normal
        self.states: dict[tuple, int] = {}
        self.named = named_members(f)
        key_language = t.key_language(f)
        self.lo, self.hi = f.min_properties, f.max_properties
        if self.hi is not None:
            self.hi = min(self.hi, self.lo + MAX_SPAN)
        self.counting = self.lo > 0 or self.hi is not None
        if self.lo > MAX_CHAIN:
            raise refuse("minProperties", f.ptr, f"{self.lo} is above {MAX_CHAIN}")
        if len(f.witnesses) > MAX_WITNESSES:
            raise refuse("not", f.ptr, f"{len(f.witnesses)} complements of additionalProperties, patternProperties "
                         f"or propertyNames on one object (at most {MAX_WITNESSES})")
        self.witness_keys = [t.witness_keys(spec) for spec, _ in f.witnesses]
        self.all_done = frozenset(range(len(f.witnesses)))
        self.conjs: list[list[Conj] | None] = []
        for name in self.named:
            conjs = n.member(f, name)
            allowed = not _is_false(n, conjs) and rx.matches(key_language, dumps(name)) and self.hi != 0
            self.conjs.append(conjs if allowed else None)
        self.required = set(f.required)
        self.deps = {a: [b for b in bs if b in self.named] for a, bs in f.dependent_required.items()}
        self.regions = self.free_regions(rx.difference(key_language, rx.literals([dumps(k) for k in self.named])))
        self.members: dict[frozenset, int | None] = {}
        self.more: int | None = None
        reachable = sum(c is not None for c in self.conjs) + bool(self.regions)
        if self.lo > reachable:  # free keys may repeat: only one of them surely counts
            raise refuse("minProperties", f.ptr, f"{self.lo} properties need {self.lo - reachable + 1} distinct free "
                         "keys, and free keys are not kept distinct (name the properties instead)")

    def free_regions(self, keys: rx.Rx) -> list[tuple[rx.Rx, list[Conj], frozenset]]:
        """The free keys by region: (keys, value conjuncts, witnesses the key may be), split by the
        ``patternProperties`` they match and the witnesses' kinds of key."""
        f, n = self.f, self.t.normal
        patterns = [(pattern_strings(p), c, i) for i, spec in enumerate(f.objects) for p, c in spec.patterns]
        if len(patterns) + len(self.witness_keys) > MAX_PATTERNS:
            raise refuse("patternProperties", f.ptr, f"{len(patterns)} patterns on one object (at most "
                         f"{MAX_PATTERNS - len(self.witness_keys)})")
        # a key inside a pattern's region surely matches it, one outside surely does not (keys the two readings
        # of the pattern disagree on are not produced); a witness's kind of key is already sure
        cuts = [languages for languages, _, _ in patterns] + [(w, w) for w in self.witness_keys]
        regions: dict[tuple, rx.Rx] = {}

        def walk(k: int, language: rx.Rx, inside: tuple) -> None:
            self.t.clock.check(f.ptr)
            if not rx.is_live(language, budget=LIVENESS_BUDGET):
                return
            if k < len(cuts):
                sure, maybe = cuts[k]
                walk(k + 1, rx.inter(language, sure), inside + (True,))
                walk(k + 1, rx.difference(language, maybe), inside + (False,))
                return
            hits = inside[:len(patterns)]
            conjs = [c for (_, c, _), hit in zip(patterns, hits) if hit]
            hit_specs = {i for (_, _, i), hit in zip(patterns, hits) if hit}
            conjs += [spec.additional for i, spec in enumerate(f.objects)
                      if spec.additional is not None and i not in hit_specs]
            if not _is_false(n, conjs):
                group = (frozenset(conjs), frozenset(w for w, hit in enumerate(inside[len(patterns):]) if hit))
                regions[group] = rx.alt(regions.get(group, rx.EMPTY), language)

        walk(0, keys, ())
        return [] if self.hi == 0 else [(language, sorted(conjs), kinds) for (conjs, kinds), language in
                                        regions.items()]

    def member(self, witnesses: frozenset) -> int | None:
        """The rule of one free member that is each of ``witnesses`` (none: any free member); None if none can be."""
        if witnesses not in self.members:
            alternatives = []
            for language, conjs, kinds in self.regions:
                if witnesses <= kinds:
                    value = self.t.value(frozenset(conjs + [self.f.witnesses[w][1] for w in witnesses]))
                    alternatives.append([self.t.terminal(language, f"key@{at(self.f.ptr)}"), self.t.colon, value])
            nt = None
            if alternatives:
                nt = self.t.nonterminal("member", self.f.ptr)
                self.t.rules(nt, alternatives)
            self.members[witnesses] = nt
        return self.members[witnesses]

    def named_variants(self, j: int, done: frozenset) -> list[tuple[int, frozenset]]:
        """Named member j's value rules: as itself, and as each set of the witnesses still missing its key fits."""
        conjs, key = self.conjs[j], dumps(self.named[j])
        if conjs is None:
            return []
        kinds = [w for w in sorted(self.all_done - done) if rx.matches(self.witness_keys[w], key)]
        return [(self.t.value(frozenset(conjs + [self.f.witnesses[w][1] for w in subset])), frozenset(subset))
                for size in range(len(kinds) + 1) for subset in combinations(kinds, size)]

    def free_variants(self, done: frozenset) -> list[tuple[int, frozenset]]:
        missing = sorted(self.all_done - done)
        out = []
        for size in range(len(missing) + 1):
            for subset in combinations(missing, size):
                symbol = self.member(frozenset(subset))
                if symbol is not None:
                    out.append((symbol, frozenset(subset)))
        return out

    def start(self) -> int | None:
        if self.t.key_order == "any":
            if len(self.named) > MAX_ANY_ORDER:
                raise refuse("properties", self.f.ptr, f"key_order='any' with {len(self.named)} named properties "
                             f"(at most {MAX_ANY_ORDER}); use key_order='schema'")
            return self.state(("any", frozenset(), 0, frozenset()))
        return self.state(("seq", 0, 0, True, frozenset(), frozenset(), frozenset()))

    def state(self, s: tuple) -> int:
        """The rule of state ``s`` (its alternatives built on first use, iteratively)."""
        kinds = {"any": self.any_order, "seq": self.schema_order, "free": self.free_part}
        return _expand(self.t, self.states, s, "members", self.f.ptr, lambda state: kinds[state[0]](state))

    def sep(self, first: bool) -> list[int]:
        return [] if first else [self.t.comma]

    def schema_order(self, s: tuple) -> list[list]:
        _, j, c, first, pending, absent, done = s
        if j == len(self.named):
            return [[("free", c, 0, first, done)]]
        name = self.named[j]
        later = {b for b in self.deps.get(name, []) if self.named.index(b) > j}
        earlier = {b for b in self.deps.get(name, []) if self.named.index(b) < j}
        watched = any(name in bs and self.named.index(a) > j for a, bs in self.deps.items() if a in self.named)
        out = []
        if (self.hi is None or c < self.hi) and not earlier & absent:
            for value, found in self.named_variants(j, done):
                nxt = ("seq", j + 1, c + 1 if self.counting else 0, False, (pending | later) - {name}, absent,
                       done | found)
                out.append(self.sep(first) + [self.t.key(name), self.t.colon, value, nxt])
        if name not in self.required and name not in pending:
            out.append([("seq", j + 1, c, first, pending, absent | ({name} if watched else set()), done)])
        return out

    def free_part(self, s: tuple) -> list[list]:
        """Free members after ``c`` named ones: each counts towards maxProperties, the first towards min."""
        _, c, g, first, done = s
        out = [[]] if c + min(g, 1) >= self.lo and done == self.all_done else []
        if self.hi is not None and c + g + 1 > self.hi:
            return out
        member = self.member(frozenset())
        if self.hi is None and done == self.all_done:  # nothing left to count or find: a plain list
            return out + ([self.sep(first) + [member, self.more_members(member)]] if member is not None
                          and c + 1 >= self.lo else [])
        nxt_g = min(g + 1, 1) if self.hi is None else g + 1
        return out + [self.sep(first) + [symbol, ("free", c, nxt_g, False, done | found)]
                      for symbol, found in self.free_variants(done)]

    def more_members(self, member: int) -> int:
        """``(, member)*``, left-recursive."""
        if self.more is None:
            self.more = self.t.nonterminal("more", self.f.ptr)
            self.g.rule(self.more, [])
            self.g.rule(self.more, [self.more, self.t.comma, member])
        return self.more

    def any_order(self, s: tuple) -> list[list]:
        _, used, g, done = s
        first, c = not used and g == 0, len(used)
        room = self.hi is None or c + g + 1 <= self.hi
        out = []
        if self.required <= used and all(set(self.deps.get(a, [])) <= used for a in used) \
                and c + min(g, 1) >= self.lo and (self.hi is None or c + g <= self.hi) and done == self.all_done:
            out.append([])
        if not room:
            return out
        for j, name in enumerate(self.named):
            if name not in used:
                out += [self.sep(first) + [self.t.key(name), self.t.colon, value, ("any", used | {name}, g,
                                                                                   done | found)]
                        for value, found in self.named_variants(j, done)]
        nxt_g = min(g + 1, 1) if self.hi is None else g + 1
        out += [self.sep(first) + [symbol, ("any", used, nxt_g, done | found)]
                for symbol, found in self.free_variants(done)]
        return out


class _ArrayBody:
    """The items of the arrays of one flat, as rules over states ``(i, counts, first)``: i items so far (capped
    once only the tail schema and no bound is left), ``counts`` the items matching each ``contains`` (capped at
    its minimum when it has no maximum)."""

    def __init__(self, t: _Translator, f: Flat):
        self.t, self.f, self.g = t, f, t.g
        self.states: dict[tuple, int] = {}
        self.prefix = max((len(spec.prefix) for spec in f.arrays), default=0)
        closed = [len(spec.prefix) for spec in f.arrays if spec.rest is not None and _is_false(t.normal, [spec.rest])]
        self.lo, self.hi = f.min_items, f.max_items
        if closed:
            self.hi = min(closed) if self.hi is None else min(self.hi, min(closed))
        if self.hi is not None:
            self.hi = min(self.hi, max(self.lo, self.prefix) + MAX_SPAN)
        self.contains = [(c, lo, hi) for c, lo, hi in f.contains if lo > 0 or hi is not None]
        if self.lo > (MAX_CHAIN if self.contains or self.prefix > MAX_CHAIN else rx.MAX_REPEAT):
            raise refuse("minItems", f.ptr, f"{self.lo} items with contains or prefixItems (at most {MAX_CHAIN})")
        self.cap = max(self.lo, self.prefix)
        self.more: int | None = None
        self.runs: dict[tuple[int, int], int] = {}

    def start(self) -> int | None:
        if self.hi is not None and self.hi < self.lo:
            return None
        if self.f.unique_ptr is not None and (self.hi is None or self.hi > 1):
            return self.unique()
        return self.state(("items", 0, tuple(0 for _ in self.contains), True))

    def item(self, i: int, extra: list[Conj]) -> int | None:
        conjs = _position(self.f, i)
        if _is_false(self.t.normal, conjs + extra):
            return None
        return self.t.value(frozenset(conjs + extra))

    def state(self, s: tuple) -> int:
        return _expand(self.t, self.states, s, "items", self.f.ptr, self.transitions)

    def transitions(self, s: tuple) -> list[list]:
        _, i, counts, first = s
        sep = [] if first else [self.t.comma]
        done = i >= self.lo and all(n >= lo for n, (_, lo, _) in zip(counts, self.contains))
        out = [[]] if done else []
        if self.hi is not None and i >= self.hi:
            return out
        saturated = all(hi is None and n >= lo for n, (_, lo, hi) in zip(counts, self.contains))
        if self.hi is None and i >= self.cap and saturated:  # only the tail schema is left: a plain list
            tail = self.item(i, [])
            return out + ([sep + [tail, self.more_items(tail)]] if tail is not None else [])
        if not self.contains and self.prefix <= i < self.lo:  # a run of required items of the tail schema
            tail = self.item(i, [])
            if tail is None:
                return out
            run = ([tail] if first else [self.t.comma, tail]) + self.run(tail, self.lo - i - 1)
            return [run + [("items", self.lo, counts, False)]]
        nxt_i = i + 1 if self.hi is not None or i < self.cap else i
        for extra, nxt_counts in self.variants(counts):
            value = self.item(i, extra)
            if value is not None:
                out.append(sep + [value, ("items", nxt_i, nxt_counts, False)])
        return out

    def variants(self, counts: tuple) -> list[tuple[list[Conj], tuple]]:
        """For each ``contains``: the item matches it (counted) or not (when a maximum needs the count)."""
        out: list[tuple[list[Conj], tuple]] = [([], ())]
        for (c, lo, hi), n in zip(self.contains, counts):
            options = []
            if hi is None and n >= lo:
                options.append(([], n))
            else:
                if hi is None or n + 1 <= hi:
                    options.append(([c], n + 1 if hi is not None else min(n + 1, lo)))
                if hi is None:
                    options.append(([], n))
                else:
                    negated = self.t.normal.negate(self.t.normal.schemas[c[0]], self.t.normal.pointers[c[0]])
                    options.append(([self.t.normal.conj(negated, self.t.normal.pointers[c[0]] + "/not")], n))
            out = [(extra + e, cs + (m,)) for extra, cs in out for e, m in options]
        return out

    def run(self, item: int, k: int) -> list[int]:
        """``(, item){k}`` as at most one symbol: rules that double, so ``minItems: 600`` costs ten rules."""
        if k == 0:
            return []
        if (item, k) not in self.runs:
            nt = self.runs[(item, k)] = self.t.nonterminal("run", self.f.ptr)
            if k == 1:
                self.g.rule(nt, [self.t.comma, item])
            else:
                self.g.rule(nt, self.run(item, k // 2) * 2 + self.run(item, k % 2))
        return [self.runs[(item, k)]]

    def more_items(self, tail: int) -> int:
        if self.more is None:
            self.more = self.t.nonterminal("more", self.f.ptr)
            self.g.rule(self.more, [])
            self.g.rule(self.more, [self.more, self.t.comma, tail])
        return self.more

    def unique(self) -> int | None:
        """uniqueItems over at most 8 literal values, each used once: a state per set of values used."""
        f, normal = self.f, self.t.normal
        if self.prefix or self.contains:
            raise refuse("uniqueItems", f.unique_ptr, "items may repeat (only maxItems <= 1, or items from at most "
                         f"{MAX_UNIQUE_VALUES} literal values, can be guaranteed distinct)")
        tail = _position(f, 0)
        flats = normal.alternatives(frozenset(tail))
        values: list = []
        for g in flats:
            if g.enum is None and not g.types <= {"null", "boolean"}:
                raise refuse("uniqueItems", f.unique_ptr, "items may repeat (only maxItems <= 1, or items from at "
                             f"most {MAX_UNIQUE_VALUES} literal values, can be guaranteed distinct)")
            candidates = g.enum if g.enum is not None else [None, True, False]
            values += [v for v in candidates if json_type(v) in g.types and self.t.admits_flat(g, v)
                       and not any(json_equal(v, w) for w in values)]
        if len(values) > MAX_UNIQUE_VALUES:
            raise refuse("uniqueItems", f.unique_ptr, f"items from {len(values)} values (at most "
                         f"{MAX_UNIQUE_VALUES} can be tracked)")
        symbols = [self.t.literal(v, f.ptr) for v in values]
        states: dict[frozenset, int] = {}
        for size in range(len(values), -1, -1):
            for used in _subsets(len(values), size):
                nt = states[used] = self.t.nonterminal("unique", f.ptr)
                alternatives = [[]] if size >= self.lo else []
                if self.hi is None or size < self.hi:
                    alternatives += [([] if not used else [self.t.comma]) + [symbols[k], states[used | {k}]]
                                     for k in range(len(values)) if k not in used]
                self.t.rules(nt, alternatives)
        return states[frozenset()]


def _subsets(n: int, size: int) -> list[frozenset]:
    return [frozenset(c) for c in combinations(range(n), size)]


def _expand(t: _Translator, states: dict, s: tuple, name: str, ptr: str, transitions) -> int:
    """The nonterminal of state ``s`` of a counting automaton (an object's members, an array's items):
    ``transitions(state)`` lists right-hand sides whose tuples are states and ints symbols; every state reached
    from ``s`` gets a nonterminal (memoised in ``states``) and its rules."""
    if s in states:
        return states[s]
    todo = [s]
    states[s] = t.nonterminal(name, ptr)
    while todo:
        current = todo.pop()
        t.clock.check(ptr)
        alternatives = []
        for rhs in transitions(current):
            out = []
            for x in rhs:
                if isinstance(x, tuple):
                    if x not in states:
                        states[x] = t.nonterminal(name, ptr)
                        todo.append(x)
                    x = states[x]
                out.append(x)
            alternatives.append(out)
        t.rules(states[current], alternatives)
    return states[s]
