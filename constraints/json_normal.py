"""A JSON Schema's normal form: each subschema as a disjunction of flat conjunctions of keywords.

A *node* is a set of conjuncts, each a subschema of the document (or one synthesised from it) with some of its
keywords set aside; its instances are the values valid under all of them. :meth:`Normaliser.alternatives` expands a
node into :class:`Flat` alternatives (their union is the node's language): ``$ref`` and ``allOf`` add conjuncts,
``anyOf`` branches, and the keywords that need a complement are rewritten into these first:

* ``not S`` is pushed inward (:meth:`Normaliser.negate`): ``not`` of a conjunction of keywords is the union of
  each keyword's complement *within its type* (``not {"maxLength": 3}`` is a string of 4 characters or more;
  ``not {"properties": {"a": S}}`` an object holding ``a`` with a value under ``not S``), lazily, so recursion
  never unrolls. Complements that are not regular-and-local (``additionalProperties``, ``uniqueItems``, ...) are
  refused by name.
* ``if I then T else E`` is ``(I and T) or (not I and E)``; ``dependentSchemas {a: S}`` is ``a absent, or S``.
* ``oneOf`` is exact: a branch keeps ``not B`` of every other branch B unless the two are disjoint by their types,
  their ``const``/``enum`` values or a required property whose values are (tagged unions need no complement).

Internal keywords ``$$notEnum``, ``$$notPattern`` and ``$$notMultipleOf`` carry complements of scalar keywords
(``format`` has none: an annotation to some validators, it never fails under every reading); ``$$some`` those of ``additionalProperties``, ``patternProperties`` and ``propertyNames`` (some
member whose key is of a kind has a value under a schema). A :class:`Flat` merges one alternative's keywords
(types intersected, bounds tightened, per-schema ``properties``/``additionalProperties`` kept apart because each
schema's ``additionalProperties`` sees only its own ``properties``). A flat says nothing about emission order or
grammar: see :mod:`~decoding.constraints.json_schema`.

Example:
    >>> n = Normaliser({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 3}]})
    >>> [sorted(f.types) for f in n.alternatives(n.root_node())]
    [['string'], ['integer']]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from decoding.constraints import rx
from decoding.constraints.json_formats import format_content
from decoding.constraints.json_lexical import decimal_of, dumps, json_equal
from decoding.constraints.json_pattern import UnsupportedPattern, pattern_string, pattern_strings
from decoding.constraints.json_refs import local_refs

__all__ = ["Conj", "Flat", "Normaliser", "UnsupportedSchemaError", "json_type"]


class UnsupportedSchemaError(ValueError):
    """A schema keyword (or keyword value) the translator cannot express; names the keyword and its pointer."""


Conj = tuple[int, frozenset]  # (schema id, keywords set aside)
Node = frozenset  # of Conj

TYPES = ("null", "boolean", "string", "integer", "fraction", "object", "array")  # "number" = integer | fraction
ALL_TYPES = frozenset(TYPES)
MAX_ALTERNATIVES = 64  # per node, after distributing anyOf/oneOf/if/not
_LEGACY = ("draft-03", "draft-04", "draft-06", "draft-07")
_UNSUPPORTED = {"$dynamicRef", "$recursiveRef", "extends", "disallow", "divisibleBy"}
_IGNORED = {  # annotations and structure: no effect on validity here
    "$schema", "$id", "id", "$defs", "definitions", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$comment",
    "$vocabulary", "title", "description", "default", "examples", "readOnly", "writeOnly", "deprecated",
    "contentMediaType", "contentEncoding", "contentSchema", "then", "else", "minContains", "maxContains",
}
_NUMBER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_APPLICATORS = ("allOf", "anyOf", "oneOf", "if", "$ref", "$dynamicRef", "dependentSchemas", "dependencies")


def at(ptr: str) -> str:
    """A pointer as messages show it (``/`` for the root)."""
    return ptr or "/"


def _escape(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def refuse(keyword: str, ptr: str, why: str = "") -> UnsupportedSchemaError:
    return UnsupportedSchemaError(f"unsupported keyword '{keyword}' at {at(ptr)}" + (f": {why}" if why else ""))


def json_type(value: Any) -> str:
    """The member of :data:`TYPES` a JSON value belongs to."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "fraction"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


@dataclass
class ObjectSpec:
    """One schema's ``properties``, ``patternProperties`` (pattern, conjunct) and ``additionalProperties``."""

    properties: dict[str, Conj]
    patterns: list[tuple[str, Conj]]
    additional: Conj | None
    ptr: str


@dataclass
class ArraySpec:
    """One schema's positional items and the schema of the items after them (None: anything)."""

    prefix: list[Conj]
    rest: Conj | None
    ptr: str


@dataclass
class Flat:
    """One alternative of a node: the merged keywords of a conjunction without applicators."""

    key: frozenset  # the conjuncts merged (identifies the flat)
    ptr: str
    types: frozenset = ALL_TYPES
    enum: list | None = None
    not_enum: list = field(default_factory=list)
    min_length: int = 0
    max_length: int | None = None
    patterns: list[str] = field(default_factory=list)
    not_patterns: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    lower: tuple[Decimal, bool] | None = None  # (bound, strict)
    upper: tuple[Decimal, bool] | None = None
    multiples: list[Decimal] = field(default_factory=list)
    not_multiples: list[Decimal] = field(default_factory=list)
    objects: list[ObjectSpec] = field(default_factory=list)
    required: list[str] = field(default_factory=list)
    min_properties: int = 0
    max_properties: int | None = None
    dependent_required: dict[str, list[str]] = field(default_factory=dict)
    property_names: list[Conj] = field(default_factory=list)
    witnesses: list[tuple[dict, Conj]] = field(default_factory=list)  # $$some: (key spec, value conjunct)
    arrays: list[ArraySpec] = field(default_factory=list)
    min_items: int = 0
    max_items: int | None = None
    contains: list[tuple[Conj, int, int | None]] = field(default_factory=list)
    unique_ptr: str | None = None  # where uniqueItems: true is, if anywhere


class Clock:
    """A compile deadline: :meth:`check` raises once ``seconds`` have passed."""

    def __init__(self, seconds: float):
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def check(self, ptr: str) -> None:
        if time.monotonic() > self.end:
            raise UnsupportedSchemaError(f"unsupported schema: compiling took more than {self.seconds:g} s "
                                         f"(deadline reached at {at(ptr)})")


class Normaliser:
    """The schemas of one document (refs made local), by id, and the expansion of nodes into flats.

    Args:
        root: the schema document (dict or bool).
        clock: the compile deadline (default: none).
    """

    def __init__(self, root: dict | bool, clock: Clock | None = None):
        self.clock = clock or Clock(math.inf)
        dialect = root.get("$schema") if isinstance(root, dict) and isinstance(root.get("$schema"), str) else ""
        self.legacy = any(d in dialect for d in _LEGACY)  # $ref ignores its siblings
        self.root = local_refs(root) if isinstance(root, dict) else root
        self.schemas: list[Any] = []
        self.pointers: list[str] = []
        self._ids: dict[int, int] = {}
        self._synthesised: dict[tuple, Any] = {}
        self._alternatives: dict[Node, list[Flat]] = {}

    # -- the registry ----------------------------------------------------------------------------------------------
    def conj(self, schema: Any, ptr: str, drop: frozenset = frozenset()) -> Conj:
        """The conjunct for ``schema`` (registered on first sight with its pointer)."""
        sid = self._ids.get(id(schema))
        if sid is None:
            if not isinstance(schema, (dict, bool)):
                raise ValueError(f"schema at {at(ptr)} must be an object or a boolean, got {type(schema).__name__}")
            sid = self._ids[id(schema)] = len(self.schemas)
            self.schemas.append(schema)
            self.pointers.append(ptr)
        return sid, drop

    def root_node(self) -> Node:
        return frozenset([self.conj(self.root, "")])

    def synthesise(self, key: tuple, build) -> Any:
        """A schema made from others, built once per ``key`` (so recursion through it ends)."""
        if key not in self._synthesised:
            self._synthesised[key] = build()
        return self._synthesised[key]

    def exact(self, value: Any) -> Any:
        """A schema whose only instance is ``value`` (``enum`` objects and arrays, written out as structure)."""
        def build() -> Any:
            if isinstance(value, dict):
                return {"type": "object", "properties": {k: self.exact(v) for k, v in value.items()},
                        "required": list(value), "additionalProperties": False}
            if isinstance(value, list):
                return {"type": "array", "prefixItems": [self.exact(v) for v in value], "items": False,
                        "minItems": len(value)}
            return {"const": value}
        return self.synthesise(("exact", dumps(value)), build)

    def resolve(self, ref: Any, ptr: str) -> tuple[Any, str]:
        """The schema a local ``$ref`` (``#`` + pointer, see :func:`local_refs`) points to, and its pointer."""
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise refuse("$ref", ptr, f"{ref!r} is not in this document (no remote references)")
        node: Any = self.root
        path = unquote(ref[1:])
        for part in path.split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ValueError(f"'$ref' at {at(ptr)}: {ref!r} does not resolve")
        if not isinstance(node, (dict, bool)):
            raise ValueError(f"'$ref' at {at(ptr)}: {ref!r} is not a schema")
        return node, path

    def view(self, c: Conj) -> tuple[Any, str, frozenset]:
        sid, drop = c
        return self.schemas[sid], self.pointers[sid], drop

    # -- expansion -------------------------------------------------------------------------------------------------
    def alternatives(self, node: Node) -> list[Flat]:
        """The flats whose union is the language of ``node`` (memoised)."""
        if node not in self._alternatives:
            plains = self._expand(node)
            flats = [self._merge(p) for p in plains]
            self._alternatives[node] = [f for f in flats if f is not None]
        return self._alternatives[node]

    def _expand(self, node: Node) -> list[frozenset]:
        """Distribute the applicators: the sets of plain conjuncts (no applicator left) whose union is ``node``."""
        out: list[frozenset] = []
        stack = [(frozenset(), tuple(sorted(node)), frozenset(), ALL_TYPES)]
        while stack:
            plain, todo, seen, types = stack.pop()
            if not todo:
                if plain not in out:
                    out.append(plain)
                    if len(out) > MAX_ALTERNATIVES:
                        ptrs = sorted({self.pointers[s] for s, _ in node})
                        raise refuse("anyOf", ptrs[0], f"more than {MAX_ALTERNATIVES} alternatives once anyOf, "
                                     "oneOf, if and not are distributed")
                continue
            pick = next((i for i, c in enumerate(todo) if not self._branches(c)), 0)
            c, rest = todo[pick], todo[:pick] + todo[pick + 1:]
            if c in seen:
                stack.append((plain, rest, seen, types))
                continue
            seen = seen | {c}
            schema, ptr, drop = self.view(c)
            self.clock.check(ptr)
            if schema is True:
                stack.append((plain, rest, seen, types))
                continue
            if schema is False:
                continue
            types = types & self._declared_types(schema, ptr, drop)
            if not types:
                continue
            for branch in reversed(self._step(schema, ptr, drop, c)):  # the first branch is popped first
                if branch is None:  # c is plain
                    stack.append((plain | {c}, rest, seen, types))
                else:
                    stack.append((plain, rest + tuple(branch), seen, types))
        return out

    def _branches(self, c: Conj) -> bool:
        schema, _, drop = self.view(c)
        return isinstance(schema, dict) and any(k in schema and k not in drop for k in ("anyOf", "oneOf", "if"))

    def _step(self, s: dict, ptr: str, drop: frozenset, c: Conj) -> list:
        """One applicator of ``s`` taken out: the alternatives, each the conjuncts replacing ``c``; ``[None]`` when
        ``c`` has no applicator left."""
        sid = c[0]
        for key in _UNSUPPORTED:
            if key in s and key not in drop:
                raise refuse(key, ptr)
        if "$ref" in s and "$ref" not in drop:
            target, tptr = self.resolve(s["$ref"], ptr)
            if self.legacy:  # draft 7 and before: the siblings of $ref are ignored
                return [[self.conj(target, tptr)]]
            return [[self.conj(target, tptr), (sid, drop | {"$ref"})]]
        if "allOf" in s and "allOf" not in drop:
            subs = _schema_list(s, "allOf", ptr)
            return [[self.conj(x, f"{ptr}/allOf/{i}") for i, x in enumerate(subs)] + [(sid, drop | {"allOf"})]]
        if "not" in s and "not" not in drop:
            return [[self.conj(self.negate(s["not"], f"{ptr}/not"), f"{ptr}/not"), (sid, drop | {"not"})]]
        if "if" in s and "if" not in drop and ("then" in s or "else" in s):  # an if alone constrains nothing
            return [[self.conj(self._if_then_else(s, ptr), f"{ptr}/if"), (sid, drop | {"if"})]]
        for key in ("dependentSchemas", "dependencies"):  # list-valued dependencies stay for _merge_object
            marker = f"{key}:schemas"
            if isinstance(s.get(key), dict) and marker not in drop and key not in drop:
                return [[*self._dependent_schemas(s, key, ptr), (sid, drop | {marker})]]
        for key in ("anyOf", "oneOf"):
            if key in s and key not in drop:
                branches = _schema_list(s, key, ptr) if key == "anyOf" else self._one_of(s, ptr)
                return [[self.conj(b, f"{ptr}/{key}/{i}"), (sid, drop | {key})] for i, b in enumerate(branches)]
        return [None]

    def _if_then_else(self, s: dict, ptr: str) -> dict:
        def build() -> dict:
            cond, then, other = s["if"], s.get("then", True), s.get("else", True)
            for key, sub in (("if", cond), ("then", then), ("else", other)):
                self.conj(sub, f"{ptr}/{key}")  # register the pointers for messages
            return {"anyOf": [{"allOf": [cond, then]}, {"allOf": [self.negate(cond, f"{ptr}/if"), other]}]}
        return self.synthesise(("if", id(s)), build)

    def _dependent_schemas(self, s: dict, key: str, ptr: str) -> list[Conj]:
        deps = s[key]
        if not isinstance(deps, dict):
            raise ValueError(f"'{key}' at {at(ptr)} must be an object")
        out = []
        for name, sub in deps.items():
            if isinstance(sub, list):  # dependencies with a list of names: dependentRequired, merged in _merge
                continue
            either = self.synthesise(("dependency", id(s), key, name), lambda n=name, x=sub: {
                "anyOf": [{"properties": {n: False}}, {"allOf": [{"required": [n]}, x]}]})
            out.append(self.conj(either, f"{ptr}/{key}/{_escape(name)}"))
        return out

    # -- oneOf -----------------------------------------------------------------------------------------------------
    def _one_of(self, s: dict, ptr: str) -> list:
        """Branches of ``oneOf`` made disjoint: branch i and not-branch-j for every j it may overlap."""
        def build() -> list:
            subs = _schema_list(s, "oneOf", ptr)
            context = self._facts({k: v for k, v in s.items() if k != "oneOf"}, 3)  # the siblings hold too
            facts = [_conjoin(self._facts(x, 3), context) for x in subs]
            out = []
            for i, x in enumerate(subs):
                others = []
                for j, y in enumerate(subs):
                    if j != i and not _disjoint(facts[i], facts[j]):
                        try:
                            others.append(self.negate(y, f"{ptr}/oneOf/{j}"))
                        except UnsupportedSchemaError as exc:
                            raise refuse("oneOf", ptr, f"branches {i} and {j} may overlap, and exactly one must "
                                         f"hold, but branch {j} has no complement ({exc})") from None
                out.append({"allOf": [x, *others]} if others else x)
            return out
        return self.synthesise(("oneOf", id(s)), build)

    def _facts(self, s: Any, depth: int, ptr: str = "") -> dict:
        """What a schema says at its top level, through $ref and allOf: types, values, required names, the
        property schemas' facts (for disjointness: a summary, never used to accept anything)."""
        out: dict = {"types": ALL_TYPES, "values": None, "required": set(), "properties": {}}
        pending, seen = [s], set()
        while pending:
            x = pending.pop()
            if id(x) in seen or not isinstance(x, dict):
                if x is False:
                    out["types"] = frozenset()
                continue
            seen.add(id(x))
            if "$ref" in x:
                try:
                    pending.append(self.resolve(x["$ref"], ptr)[0])
                except ValueError:
                    pass
                if self.legacy:
                    continue
            if isinstance(x.get("allOf"), list):
                pending += x["allOf"]
            out["types"] = out["types"] & _types_of(x.get("type"))
            for key in ("const", "enum"):
                if key in x and (key == "const" or isinstance(x[key], list)):
                    values = [x[key]] if key == "const" else x[key]
                    if out["values"] is not None:
                        values = [v for v in values if any(json_equal(v, w) for w in out["values"])]
                    out["values"] = values
            if isinstance(x.get("required"), list):
                out["required"] |= {r for r in x["required"] if isinstance(r, str)}
            if isinstance(x.get("properties"), dict) and depth > 0:
                for name, sub in x["properties"].items():
                    out["properties"].setdefault(name, []).append(sub)
        if out["values"] is not None:
            out["types"] = out["types"] & frozenset(json_type(v) for v in out["values"])
        out["properties"] = {name: [self._facts(sub, depth - 1) for sub in subs]
                             for name, subs in out["properties"].items()}
        return out

    # -- not -------------------------------------------------------------------------------------------------------
    def negate(self, schema: Any, ptr: str) -> Any:
        """A schema whose instances are the values ``schema`` rejects (see the module docstring)."""
        if isinstance(schema, bool):
            return not schema
        if not isinstance(schema, dict):
            raise ValueError(f"schema at {at(ptr)} must be an object or a boolean, got {type(schema).__name__}")
        return self.synthesise(("not", id(schema)), lambda: self._negation(schema, ptr))

    def _negation(self, s: dict, ptr: str) -> Any:
        if "$ref" in s and self.legacy:
            return {"not": self.resolve(s["$ref"], ptr)[0]}
        out: list = []
        for key, value in s.items():
            out += self._negate_keyword(s, key, value, ptr)
        return False if not out else out[0] if len(out) == 1 else {"anyOf": out}

    def _negate_keyword(self, s: dict, key: str, value: Any, ptr: str) -> list:
        """The schemas whose union is the complement of ``key`` alone (within the types it constrains)."""
        if key in _IGNORED or key.startswith("x-") or key in ("uniqueItems",) and value is False:
            return []
        if key == "$ref":
            return [{"not": self.resolve(value, ptr)[0]}]
        if key == "allOf":
            return [{"not": x} for x in _schema_list(s, key, ptr)]
        if key == "anyOf":
            return [{"allOf": [{"not": x} for x in _schema_list(s, key, ptr)]}]
        if key == "oneOf":
            subs = _schema_list(s, key, ptr)
            pairs = [{"allOf": [a, b]} for i, a in enumerate(subs) for b in subs[i + 1:]]
            return [{"allOf": [{"not": x} for x in subs]}, *pairs]
        if key == "not":
            return [value]
        if key == "if":
            then, other = s.get("then", True), s.get("else", True)
            return [{"allOf": [value, {"not": then}]}, {"allOf": [{"not": value}, {"not": other}]}]
        if key == "type":
            types = _types_of(value)
            rest = ALL_TYPES - types
            names = [t for t in TYPES if t in rest and t not in ("integer", "fraction")]
            if {"integer", "fraction"} <= rest:
                names.append("number")
            out = [{"type": names}] if names else []
            if "fraction" in rest and "integer" not in rest:  # type integer: the numbers with a fraction
                out.append({"type": "number", "$$notMultipleOf": 1})
            return out
        if key in ("const", "enum"):
            return [{"$$notEnum": [value] if key == "const" else _list(value, key, ptr)}]
        if key == "$$notEnum":
            return [{"enum": value}]
        string_negations = {"minLength": lambda n: [{"type": "string", "maxLength": n - 1}] if n > 0 else [],
                            "maxLength": lambda n: [{"type": "string", "minLength": n + 1}]}
        if key in string_negations:
            return string_negations[key](_count(value, key, ptr))
        if key in ("pattern", "$$notPattern"):
            return [{"type": "string", ("$$notPattern" if key == "pattern" else "pattern"): value}]
        if key == "format":  # an annotation to some validators, it never fails under every reading
            return []
        if key in _NUMBER_BOUNDS:
            return self._negate_bound(s, key, ptr)
        if key in ("multipleOf", "$$notMultipleOf"):
            return [{"type": "number", ("$$notMultipleOf" if key == "multipleOf" else "multipleOf"): value}]
        counts = {"minProperties": ("object", "maxProperties", -1), "maxProperties": ("object", "minProperties", 1),
                  "minItems": ("array", "maxItems", -1), "maxItems": ("array", "minItems", 1)}
        if key in counts:
            kind, other, step = counts[key]
            n = _count(value, key, ptr)
            return [] if n + step < 0 else [{"type": kind, other: n + step}]
        if key == "required":
            return [{"type": "object", "properties": {r: False}} for r in _names(value, key, ptr)]
        if key == "properties":
            return [{"type": "object", "required": [k], "properties": {k: {"not": v}}}
                    for k, v in _dict(value, key, ptr).items()]
        if key in ("dependentRequired", "dependencies", "dependentSchemas"):
            out = []
            for name, dep in _dict(value, key, ptr).items():
                if isinstance(dep, list):
                    out += [{"type": "object", "required": [name], "properties": {b: False}}
                            for b in _names(dep, key, ptr)]
                else:
                    out.append({"type": "object", "required": [name], "allOf": [{"not": dep}]})
            return out
        if key == "items" and isinstance(value, list) or key == "prefixItems":
            return [{"type": "array", "minItems": i + 1, "prefixItems": [True] * i + [{"not": x}]}
                    for i, x in enumerate(_schema_list(s, key, ptr))]
        if key == "items" and "prefixItems" not in s:
            return [{"type": "array", "contains": {"not": value}}]
        if key == "contains" and "minContains" not in s and "maxContains" not in s:
            return [{"type": "array", "items": {"not": value}}]
        if key == "additionalItems" and not isinstance(s.get("items"), list):
            return []  # additionalItems without a list of items constrains nothing
        if key in ("additionalProperties", "unevaluatedProperties") and not (
                key == "unevaluatedProperties" and ("additionalProperties" in s or any(k in s for k in _APPLICATORS))):
            if value is True:
                return []
            keys = {"not_names": list(_dict(s.get("properties", {}), "properties", ptr)),
                    "not_patterns": list(_dict(s.get("patternProperties", {}), "patternProperties", ptr))}
            return [{"type": "object", "$$some": {**keys, "schema": {"not": value}}}]
        if key == "patternProperties":
            return [{"type": "object", "$$some": {"patterns": [p], "schema": {"not": v}}}
                    for p, v in _dict(value, key, ptr).items()]
        if key == "propertyNames":
            return [{"type": "object", "$$some": {"names": {"not": value}, "schema": True}}]
        if key in ("additionalProperties", "patternProperties", "propertyNames", "additionalItems", "items",
                   "contains", "uniqueItems", "unevaluatedProperties", "unevaluatedItems", "$$some") \
                or key in _UNSUPPORTED:
            raise refuse("not", ptr, f"the complement of '{key}' is not supported")
        return []  # unknown keywords are annotations

    def _negate_bound(self, s: dict, key: str, ptr: str) -> list:
        """The complement of the number bounds of ``s``; produced once, for the first bound keyword."""
        if key != next(k for k in s if k in _NUMBER_BOUNDS):
            return []
        lower, upper = number_bounds(s, ptr)
        out = []
        if lower is not None:
            out.append({"type": "number", ("maximum" if lower[1] else "exclusiveMaximum"): _plain(lower[0])})
        if upper is not None:
            out.append({"type": "number", ("minimum" if upper[1] else "exclusiveMinimum"): _plain(upper[0])})
        return out

    # -- merging ---------------------------------------------------------------------------------------------------
    def _merge(self, plain: frozenset) -> Flat | None:
        """The flat of a conjunction of plain conjuncts; None when the types contradict."""
        ordered = sorted(plain)
        flat = Flat(key=plain, ptr=self.pointers[ordered[0][0]] if ordered else "")
        for c in ordered:
            schema, ptr, drop = self.view(c)
            keys = {k: v for k, v in schema.items() if k not in drop}
            _merge_types(flat, keys, ptr)
            self._merge_scalars(flat, keys, ptr)
            self._merge_object(flat, keys, schema, ptr)
            self._merge_array(flat, keys, schema, ptr)
        return flat if flat.types else None

    def _merge_scalars(self, flat: Flat, s: dict, ptr: str) -> None:
        if "$$notEnum" in s:
            flat.not_enum += s["$$notEnum"]
        if "minLength" in s:
            flat.min_length = max(flat.min_length, _count(s["minLength"], "minLength", ptr))
        if "maxLength" in s:
            flat.max_length = _min(flat.max_length, _count(s["maxLength"], "maxLength", ptr))
        for key, target in (("pattern", flat.patterns), ("$$notPattern", flat.not_patterns)):
            if key in s:
                if not isinstance(s[key], str):
                    raise ValueError(f"'{key}' at {at(ptr)} must be a string")
                try:
                    pattern_string(s[key])
                except UnsupportedPattern as exc:
                    raise refuse("pattern", ptr, str(exc)) from None
                target.append(s[key])
        if isinstance(s.get("format"), str) and format_content(s["format"]) is not None:
            flat.formats.append(s["format"])
        lower, upper = number_bounds(s, ptr)
        if lower is not None and (flat.lower is None or lower[0] > flat.lower[0]
                                  or (lower[0] == flat.lower[0] and lower[1])):
            flat.lower = lower
        if upper is not None and (flat.upper is None or upper[0] < flat.upper[0]
                                  or (upper[0] == flat.upper[0] and upper[1])):
            flat.upper = upper
        for key, target in (("multipleOf", flat.multiples), ("$$notMultipleOf", flat.not_multiples)):
            if key in s:
                q = s[key]
                if isinstance(q, bool) or not isinstance(q, (int, float)) or not q > 0 or not math.isfinite(q):
                    raise ValueError(f"'{key}' at {at(ptr)} must be a number above 0, got {q!r}")
                target.append(decimal_of(q))

    def _merge_object(self, flat: Flat, s: dict, whole: dict, ptr: str) -> None:
        keys = ("properties", "patternProperties", "additionalProperties", "unevaluatedProperties")
        if any(k in s for k in keys):
            props = {name: self.conj(v, f"{ptr}/properties/{_escape(name)}")
                     for name, v in _dict(s.get("properties", {}), "properties", ptr).items()}
            patterns = []
            for p, v in _dict(s.get("patternProperties", {}), "patternProperties", ptr).items():
                try:
                    pattern_string(p)
                except UnsupportedPattern as exc:
                    raise refuse("patternProperties", ptr, str(exc)) from None
                patterns.append((p, self.conj(v, f"{ptr}/patternProperties/{_escape(p)}")))
            additional = None
            if "additionalProperties" in s:
                additional = self.conj(s["additionalProperties"], f"{ptr}/additionalProperties")
            elif "unevaluatedProperties" in s:
                if any(k in whole for k in _APPLICATORS):
                    raise refuse("unevaluatedProperties", ptr, "beside in-place applicators (allOf, anyOf, $ref...)")
                additional = self.conj(s["unevaluatedProperties"], f"{ptr}/unevaluatedProperties")
            flat.objects.append(ObjectSpec(props, patterns, additional, ptr))
        if "required" in s:
            for name in _names(s["required"], "required", ptr):
                if name not in flat.required:
                    flat.required.append(name)
        if "minProperties" in s:
            flat.min_properties = max(flat.min_properties, _count(s["minProperties"], "minProperties", ptr))
        if "maxProperties" in s:
            flat.max_properties = _min(flat.max_properties, _count(s["maxProperties"], "maxProperties", ptr))
        for key in ("dependentRequired", "dependencies"):
            for name, names in _dict(s.get(key, {}), key, ptr).items():
                if isinstance(names, list):
                    merged = flat.dependent_required.setdefault(name, [])
                    merged += [n for n in _names(names, key, ptr) if n not in merged and n != name]
                elif key == "dependentRequired":
                    raise ValueError(f"'{key}' at {at(ptr)}: {name!r} must list strings")
        if "propertyNames" in s:
            flat.property_names.append(self.conj(s["propertyNames"], f"{ptr}/propertyNames"))
        if "$$some" in s:  # some member whose key fits the spec has a value under the schema
            spec = s["$$some"]
            names = {"names": self.conj(spec["names"], f"{ptr}/propertyNames")} if "names" in spec else {}
            flat.witnesses.append(({**spec, **names}, self.conj(spec["schema"], f"{ptr}/$$some")))

    def _merge_array(self, flat: Flat, s: dict, whole: dict, ptr: str) -> None:
        items = s.get("items")
        if "prefixItems" in s or isinstance(items, list):
            key = "prefixItems" if "prefixItems" in s else "items"
            prefix = [self.conj(x, f"{ptr}/{key}/{i}") for i, x in enumerate(_schema_list(s, key, ptr))]
            rest_key = "items" if key == "prefixItems" else "additionalItems"
            rest = s.get(rest_key) if not isinstance(s.get(rest_key), list) else None
            if rest is None and "unevaluatedItems" in s:
                rest_key, rest = "unevaluatedItems", s["unevaluatedItems"]
            flat.arrays.append(ArraySpec(prefix, None if rest is None else self.conj(rest, f"{ptr}/{rest_key}"), ptr))
        elif "items" in s or "unevaluatedItems" in s:
            key = "items" if "items" in s else "unevaluatedItems"
            flat.arrays.append(ArraySpec([], self.conj(s[key], f"{ptr}/{key}"), ptr))
        if "unevaluatedItems" in s and (any(k in whole for k in _APPLICATORS) or "contains" in whole):
            raise refuse("unevaluatedItems", ptr, "beside in-place applicators or contains")
        if "minItems" in s:
            flat.min_items = max(flat.min_items, _count(s["minItems"], "minItems", ptr))
        if "maxItems" in s:
            flat.max_items = _min(flat.max_items, _count(s["maxItems"], "maxItems", ptr))
        if s.get("uniqueItems") is True:
            flat.unique_ptr = ptr
        if "contains" in s:
            lo = _count(whole.get("minContains", 1), "minContains", ptr)
            hi = _count(whole["maxContains"], "maxContains", ptr) if "maxContains" in whole else None
            flat.contains.append((self.conj(s["contains"], f"{ptr}/contains"), lo, hi))

    def _declared_types(self, s: Any, ptr: str, drop: frozenset) -> frozenset:
        """The types a schema allows by its own ``type``/``const``/``enum`` (for early pruning)."""
        if not isinstance(s, dict):
            return ALL_TYPES
        types = _types_of(s["type"], ptr) if "type" in s and "type" not in drop else ALL_TYPES
        if "const" in s and "const" not in drop:
            types &= {json_type(s["const"])}
        if isinstance(s.get("enum"), list) and "enum" not in drop:
            types &= {json_type(v) for v in s["enum"]}
        return types

    # -- member schemas --------------------------------------------------------------------------------------------
    def member(self, flat: Flat, name: str) -> list[Conj]:
        """The conjuncts constraining the value of member ``name``: per object schema, its ``properties`` entry
        and the ``patternProperties`` entries whose pattern matches, or else its ``additionalProperties``."""
        out = []
        spelled = dumps(name)
        for spec in flat.objects:  # under every reading of the patterns: those either reading matches apply, and
            hits = [c for p, c in spec.patterns if rx.matches(pattern_strings(p)[1], spelled)]
            sure = any(rx.matches(pattern_strings(p)[0], spelled) for p, _ in spec.patterns)
            if name in spec.properties:
                hits.append(spec.properties[name])
            out += hits
            if name not in spec.properties and not sure and spec.additional is not None:  # additional unless one
                out.append(spec.additional)  # matches under both
        return out


# -- keyword values ------------------------------------------------------------------------------------------------

def _types_of(value: Any, ptr: str = "") -> frozenset:
    names = [value] if isinstance(value, str) else value
    if value is None:
        return ALL_TYPES
    if not isinstance(names, list):
        raise ValueError(f"'type' at {at(ptr)} must be a string or a list of strings")
    out: set = set()
    for name in names:
        if name == "number":
            out |= {"integer", "fraction"}
        elif name == "any":
            out |= ALL_TYPES
        elif name in TYPES and name != "fraction":
            out.add(name)
        else:
            raise ValueError(f"unknown type {name!r} at {ptr}/type; use null, boolean, string, number, integer, "
                             "object or array")
    return frozenset(out)


def _merge_types(flat: Flat, s: dict, ptr: str) -> None:
    if "type" in s:
        flat.types &= _types_of(s["type"], ptr)
    for key in ("const", "enum"):
        if key in s:
            values = [s[key]] if key == "const" else _list(s[key], key, ptr)
            if flat.enum is not None:
                values = [v for v in values if any(json_equal(v, w) for w in flat.enum)]
            flat.enum = values
    if flat.enum is not None:
        flat.types &= frozenset(json_type(v) for v in flat.enum)


def _conjoin(a: dict, b: dict) -> dict:
    """The facts of both schemas at once (values kept from ``a``)."""
    properties = {k: a["properties"].get(k, []) + b["properties"].get(k, [])
                  for k in set(a["properties"]) | set(b["properties"])}
    return {"types": a["types"] & b["types"], "values": a["values"] if a["values"] is not None else b["values"],
            "required": a["required"] | b["required"], "properties": properties}


def _disjoint(a: dict, b: dict) -> bool:
    """Whether two schemas' facts (see :meth:`Normaliser._facts`) prove that no value is valid under both."""
    if not a["types"] & b["types"]:
        return True
    if a["values"] is not None and b["values"] is not None:
        if not any(json_equal(v, w) for v in a["values"] for w in b["values"]):
            return True
    if a["types"] & b["types"] <= {"object"}:  # a tag: a property both require, with disjoint values
        for name in a["required"] & b["required"]:
            if any(_disjoint(x, y) for x in a["properties"].get(name, []) for y in b["properties"].get(name, [])):
                return True
    return False


def number_bounds(s: dict, ptr: str) -> tuple[tuple[Decimal, bool] | None, tuple[Decimal, bool] | None]:
    """(lower, upper) bounds of ``s`` as (value, strict), from draft-6 numbers and draft-4 booleans alike."""
    return _bound(s, ptr, True), _bound(s, ptr, False)


def _bound(s: dict, ptr: str, lower: bool) -> tuple[Decimal, bool] | None:
    key, ex_key = ("minimum", "exclusiveMinimum") if lower else ("maximum", "exclusiveMaximum")
    best: tuple[Decimal, bool] | None = None
    for name, value, strict in ((key, s.get(key), s.get(ex_key) is True), (ex_key, s.get(ex_key), True)):
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)):
            raise ValueError(f"'{name}' at {at(ptr)} must be a number, got {value!r}")
        if not math.isfinite(value):
            continue
        d = decimal_of(value)
        if best is None or (d > best[0] if lower else d < best[0]) or (d == best[0] and strict):
            best = (d, strict)
    return best


def _plain(d: Decimal) -> int | float:
    return int(d) if d == d.to_integral_value() else float(d)


def _schema_list(s: dict, key: str, ptr: str) -> list:
    value = s[key]
    if not isinstance(value, list):
        raise ValueError(f"'{key}' at {at(ptr)} must be a list of schemas")
    return value


def _list(value: Any, key: str, ptr: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"'{key}' at {at(ptr)} must be a list, got {type(value).__name__}")
    return value


def _names(value: Any, key: str, ptr: str) -> list[str]:
    names = _list(value, key, ptr)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"'{key}' at {at(ptr)} must list property names (strings), got {value!r}")
    return names


def _dict(value: Any, key: str, ptr: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"'{key}' at {at(ptr)} must be an object, got {type(value).__name__}")
    return value


def _count(value: Any, key: str, ptr: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise ValueError(f"'{key}' at {at(ptr)} must be a non-negative integer, got {value!r}")
    return int(value)


def _min(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)
