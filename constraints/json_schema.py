"""JSON Schema -> regular expression, for JSON-constrained decoding.

``schema_to_regex(schema)`` returns a Python ``re`` pattern (also parseable by ``interegular``) whose full matches
are JSON texts that validate against ``schema``: the translation is *sound*, and complete only within the subset
of valid texts that the decisions below describe. :class:`JsonSchema` is that regex as a constraint.

    >>> import re
    >>> rx = schema_to_regex({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
    ...                       "required": ["n"], "additionalProperties": False})
    >>> bool(re.fullmatch(rx, '{"n":42}')), bool(re.fullmatch(rx, '{"n":0}'))
    (True, False)

Supported: ``type``; ``properties``, ``required``, ``additionalProperties``, ``patternProperties``,
``minProperties``/``maxProperties``; ``items`` (also draft-4 tuples), ``prefixItems``, ``additionalItems``,
``minItems``, ``maxItems``, ``uniqueItems`` (false, or maxItems <= 1); ``enum``, ``const``; ``minLength``,
``maxLength``, ``pattern`` (:mod:`~decoding.constraints.json_pattern`), ``format`` (date, time, date-time, email,
uuid, uri/url, ipv4); ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` (draft-4 booleans too);
``anyOf``, ``oneOf``, ``allOf``; ``$ref`` to anything in the document, against the base URI of the enclosing
``$id`` (:mod:`~decoding.constraints.json_refs`). Other keywords that constrain values raise
:class:`UnsupportedSchemaError` naming the keyword and its JSON pointer; annotations (``title``, ``x-...``) are
ignored, as validators ignore them.

Decisions (each keeps the language a subset of the valid texts):

* Layout: compact unless ``whitespace`` (a regex such as ``r"[ \\n]?"``) is given; it may then appear after
  ``{ [ , :`` and before ``} ] , :``, never around the whole value.
* Objects with ``properties``/``required`` hold only those members, in the schema's order, each at most once (so
  ``minProperties``/``maxProperties`` count exactly), optional ones possibly absent, each also under the
  ``patternProperties`` it matches; no extra member even where allowed. Other objects are generic:
  any keys (or keys matching the one ``patternProperties`` pattern), values under ``additionalProperties``. A
  free-form key may repeat (no regex can rule that out); that changes no validity result except
  ``minProperties`` >= 2, which is refused for generic objects.
* ``oneOf`` is read as ``anyOf`` (sound when its branches are disjoint, as tagged unions are). ``allOf`` and
  ``$ref`` beside other keywords merge the subschemas; ``enum``/``const`` values merge as JSON values
  (``1 == 1.0``, ``1 != true``); keywords that cannot merge are refused.
* ``$ref`` recursion unrolls at most ``max_depth`` times along a path; generic values nest at most
  ``min(max_depth, 2)`` levels; a schema left with no value raises ``ValueError`` (as ``false`` does).
* Strings use the JSON escapes but never ``\\u`` escapes of surrogates (each escape is one code point, so lengths
  count exactly). Numbers with bounds: integers exactly, ``number`` with integer-valued bounds only, written
  without exponent (:mod:`~decoding.constraints.number_ranges`). ``format`` takes length limits only when its own
  length range satisfies them.
* Counts above 10,000 are lowered to it; regexes over 10**6 characters are refused.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any
from urllib.parse import unquote

from decoding.constraints.json_lexical import (
    CHAR, FORMATS, INT, NUMBER, STRING, Rx, alt, dumps, format_width, group, json_literal, lit, repeat,
)
from decoding.constraints.json_pattern import UnsupportedPattern, pattern_content
from decoding.constraints.json_refs import local_refs
from decoding.constraints.number_ranges import signed_range
from decoding.constraints.regex import Regex

__all__ = ["JsonSchema", "UnsupportedSchemaError", "schema_to_regex"]


class UnsupportedSchemaError(ValueError):
    """A schema keyword (or keyword value) this translator cannot express; names the keyword and its pointer."""


Schema = dict | bool

_MAX_COUNT = 10_000  # larger length/count limits are lowered to this (a subset)
_GENERIC_DEPTH = 2  # unconstrained values ({} / true) nest at most this deep (and at most max_depth)
_MAX_REGEX = 1_000_000  # characters; bigger translations are refused (an automaton could not be built anyway)

# Keywords that constrain values and are not supported at all.
_UNSUPPORTED = frozenset({
    "propertyNames", "dependencies", "dependentRequired", "dependentSchemas", "not", "if",
    "then", "else", "contains", "minContains", "maxContains", "unevaluatedProperties", "unevaluatedItems",
    "multipleOf", "$dynamicRef", "$recursiveRef", "extends", "disallow", "divisibleBy",
})
# Keywords that constrain values (everything else is an annotation or unknown, hence ignored).
_ASSERTIONS = frozenset({
    "type", "enum", "const", "properties", "patternProperties", "required", "additionalProperties", "minProperties", "maxProperties",
    "items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems", "minLength", "maxLength",
    "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf", "allOf",
    "$ref",
}) | _UNSUPPORTED
_OBJECT_KW = ("properties", "patternProperties", "required", "additionalProperties", "minProperties", "maxProperties")
_ARRAY_KW = ("items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems")
_STRING_KW = ("minLength", "maxLength", "pattern", "format")
_NUMBER_KW = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


def _load(schema: dict | str | bool) -> Schema:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise ValueError(f"schema is not valid JSON: {exc}") from None
    if isinstance(schema, bool):
        if not schema:
            raise ValueError("schema is false: no JSON value is valid")
        return schema
    if not isinstance(schema, dict):
        raise ValueError(f"schema must be a JSON object (or true), got {type(schema).__name__}")
    return schema


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: booleans are not numbers (1 != true, 0 != false), numbers compare by value
    (1 == 1.0), arrays and objects member by member."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _at(ptr: str) -> str:
    """The JSON pointer shown in messages ("/" for the document root)."""
    return ptr or "/"


def _esc_ptr(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _constraining(schema: dict) -> list[str]:
    return [k for k in schema if k in _ASSERTIONS]


def _number_bound(schema: dict, ptr: str, lower: bool) -> tuple[float | None, bool]:
    """(bound, exclusive) combining draft-4 boolean and draft-6 numeric exclusive bounds."""
    key, ex_key = ("minimum", "exclusiveMinimum") if lower else ("maximum", "exclusiveMaximum")
    best: tuple[float | None, bool] = (None, False)
    for name, value, exclusive in ((key, schema.get(key), bool(schema.get(ex_key) is True)),
                                   (ex_key, schema.get(ex_key), True)):
        if isinstance(value, bool) or value is None:
            continue
        if not isinstance(value, (int, float)):
            raise ValueError(f"'{name}' at {_at(ptr)} must be a number, got {value!r}")
        if math.isinf(value) or math.isnan(value):
            continue
        if best[0] is None or (value > best[0] if lower else value < best[0]) or (value == best[0] and exclusive):
            best = (value, exclusive)
    return best


def _count(schema: dict, key: str, ptr: str, default: int | None) -> int | None:
    value = schema.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise ValueError(f"'{key}' at {ptr}/{key} must be a non-negative integer, got {value!r}")
    value = int(value)
    if key.startswith("min") and value > _MAX_COUNT:
        raise UnsupportedSchemaError(f"unsupported keyword '{key}' at {_at(ptr)}: {value} is above {_MAX_COUNT}")
    return min(value, _MAX_COUNT)


class _Translator:
    def __init__(self, root: Schema, whitespace: str, max_depth: int):
        self.root, self.max_depth = root, max_depth
        self.ws = group(whitespace) if whitespace else ""
        self.generic_depth = min(max_depth, _GENERIC_DEPTH)
        self._any_cache: dict[int, str] = {}

    # -- tokens ------------------------------------------------------------------------------------------------
    def tok(self, char: str) -> str:
        """A structural character with optional whitespace around it."""
        return f"{self.ws}{lit(char)}{self.ws}"

    def any_value(self, depth: int) -> str:
        if depth not in self._any_cache:
            options = [STRING, NUMBER, "true", "false", "null"]
            if depth > 0:
                inner = self.any_value(depth - 1)
                options.append(self.array_of(inner, 0, None))
                options.append(self.generic_object(inner, 0, None))
            self._any_cache[depth] = group("|".join(options))
        return self._any_cache[depth]

    def array_of(self, item: Rx, lo: int, hi: int | None) -> Rx:
        open_, close, comma = lit("[") + self.ws, self.ws + lit("]"), self.tok(",")
        if hi is not None and hi < lo:
            return None
        if item is None or hi == 0:
            return open_ + close if lo == 0 else None
        body = item + repeat(comma + item, max(lo - 1, 0), None if hi is None else hi - 1)
        return open_ + (body if lo > 0 else f"{group(body)}?") + close

    def generic_object(self, value: Rx, lo: int, hi: int | None, key: str = STRING, ptr: str = "") -> Rx:
        """Objects of ``lo`` to ``hi`` members with keys from ``key`` (free-form: a key may repeat)."""
        if hi is not None and hi < lo:
            return None
        open_, close = lit("{") + self.ws, self.ws + lit("}")
        if value is None or hi == 0:
            return open_ + close if lo == 0 else None
        if lo >= 2:  # {"a":1,"a":2} has one property once parsed, and no regex can exclude repeated free keys
            raise UnsupportedSchemaError(
                f"unsupported keyword 'minProperties' at {_at(ptr)}: {lo} distinct keys without listed properties")
        pair = key + self.tok(":") + value
        body = pair + repeat(self.tok(",") + pair, max(lo - 1, 0), None if hi is None else hi - 1)
        return open_ + (body if lo > 0 else f"{group(body)}?") + close

    # -- references and merging -----------------------------------------------------------------------------------
    def resolve(self, ref: Any, ptr: str) -> Schema:
        """The schema at ``ref``, a pointer from the document root (:func:`local_refs` rewrote every reference
        that the document holds in that form)."""
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise UnsupportedSchemaError(
                f"unsupported keyword '$ref' at {_at(ptr)}: {ref!r} is not in this document (no remote references)")
        fragment = unquote(ref[1:])
        node: Any = self.root
        for part in fragment.split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ValueError(f"'$ref' at {_at(ptr)}: {ref!r} does not resolve")
        if not isinstance(node, (dict, bool)):
            raise ValueError(f"'$ref' at {_at(ptr)}: {ref!r} is not a schema")
        return node

    def deref(self, schema: Schema, ptr: str, stack: tuple) -> tuple[Schema | None, str, tuple]:
        """Follow a top-level ``$ref`` (merging siblings); None once recursion exceeds max_depth."""
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            if stack.count(ref) >= self.max_depth:
                return None, ptr, stack
            target = self.resolve(ref, f"{ptr}/$ref")
            stack = stack + (ref,)
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            if _constraining(siblings):  # $ref beside other keywords: both apply (allOf)
                return {**siblings, "allOf": [target, *siblings.get("allOf", [])]}, ptr, stack
            schema, ptr = target, unquote(ref[1:])
        return schema, ptr, stack

    def merge(self, a: Schema, b: Schema, ptr: str) -> Schema:
        """A schema whose instances are those of both ``a`` and ``b`` (allOf), for the supported keywords."""
        if a is True or b is False:
            return b
        if b is True or a is False:
            return a
        if "$ref" in a or "$ref" in b:
            raise UnsupportedSchemaError(f"unsupported keyword '$ref' at {_at(ptr)}: nested in a merged allOf")
        for x, y in ((a, b), (b, a)):
            if "patternProperties" in x and ("properties" in y or "additionalProperties" in y):
                raise UnsupportedSchemaError(
                    f"unsupported keyword 'patternProperties' at {_at(ptr)}: cannot combine with properties in allOf")
        out = dict(a)
        for key, vb in b.items():
            if key not in out or json_equal(out[key], vb) or key not in _ASSERTIONS:
                out.setdefault(key, vb)
                continue
            va = out[key]
            if key == "type":
                out[key] = self.merge_types(va, vb)
            elif key == "required":
                out[key] = list(dict.fromkeys(list(va) + list(vb)))
            elif key == "enum":
                out[key] = [v for v in va if any(json_equal(v, w) for w in vb)]
            elif key == "const":  # two different values
                return False
            elif key in ("minimum", "minLength", "minItems", "minProperties"):
                out[key] = max(va, vb)
            elif key in ("maximum", "maxLength", "maxItems", "maxProperties"):
                out[key] = min(va, vb)
            elif key == "allOf":
                out[key] = list(va) + list(vb)
            elif key in ("items", "additionalProperties", "additionalItems") and not isinstance(va, list) \
                    and not isinstance(vb, list):
                out[key] = self.merge(va, vb, f"{ptr}/{key}")
            elif key == "properties":
                out[key] = self.merge_properties(a, b, ptr)
            else:
                raise UnsupportedSchemaError(f"unsupported keyword '{key}' at {_at(ptr)}: cannot combine two values in allOf")
        if "properties" in out and ("properties" in a) != ("properties" in b):
            out["properties"] = self.merge_properties(a, b, ptr)
        return out

    def merge_properties(self, a: dict, b: dict, ptr: str) -> dict:
        pa, pb = a.get("properties", {}), b.get("properties", {})
        out = {}
        for name in list(dict.fromkeys(list(pa) + list(pb))):
            sa = pa.get(name, a.get("additionalProperties", True))
            sb = pb.get(name, b.get("additionalProperties", True))
            out[name] = self.merge(sa, sb, f"{ptr}/properties/{_esc_ptr(name)}")
        return out

    @staticmethod
    def merge_types(va: Any, vb: Any) -> list[str]:
        ta = [va] if isinstance(va, str) else list(va)
        tb = [vb] if isinstance(vb, str) else list(vb)
        out = [t for t in ta if t in tb]
        out += [t for t in ("integer",) if ("integer" in ta and "number" in tb) or ("number" in ta and "integer" in tb)]
        return list(dict.fromkeys(out))

    # -- schemas ---------------------------------------------------------------------------------------------------
    def build(self, schema: Any, ptr: str, stack: tuple = (), depth: int = 0) -> Rx:
        if schema is True:
            return self.any_value(self.generic_depth)
        if schema is False:
            return None
        if not isinstance(schema, dict):
            raise ValueError(f"schema at {_at(ptr)} must be an object or a boolean, got {type(schema).__name__}")
        for key in schema:
            if key in _UNSUPPORTED:
                raise UnsupportedSchemaError(f"unsupported keyword '{key}' at {_at(ptr)}")
        if "$ref" in schema:
            target, new_ptr, new_stack = self.deref(schema, ptr, stack)
            return None if target is None else self.build(target, new_ptr, new_stack)
        if "allOf" in schema:
            return self.build_all_of(schema, ptr, stack)
        if "anyOf" in schema or "oneOf" in schema:
            return self.build_any_of(schema, ptr, stack)
        if "enum" in schema or "const" in schema:
            return self.build_enum(schema, ptr, stack)
        return alt([self.build_type(t, schema, ptr, stack) for t in self.types(schema, ptr)])

    def build_all_of(self, schema: dict, ptr: str, stack: tuple) -> Rx:
        subs = schema["allOf"]
        if not isinstance(subs, list):
            raise ValueError(f"'allOf' at {_at(ptr)} must be a list")
        merged: Schema = {k: v for k, v in schema.items() if k != "allOf"}
        for i, sub in enumerate(subs):
            sub, _, stack = self.deref(sub, f"{ptr}/allOf/{i}", stack)
            if sub is None:
                return None
            merged = self.merge(merged, sub, f"{ptr}/allOf/{i}")
        return self.build(merged, ptr, stack)

    def build_any_of(self, schema: dict, ptr: str, stack: tuple) -> Rx:
        if "anyOf" in schema and "oneOf" in schema:
            raise UnsupportedSchemaError(f"unsupported keyword 'oneOf' at {_at(ptr)}: together with 'anyOf'")
        key = "anyOf" if "anyOf" in schema else "oneOf"
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise ValueError(f"'{key}' at {_at(ptr)} must be a non-empty list")
        siblings = {k: v for k, v in schema.items() if k != key}
        options = []
        for i, branch in enumerate(branches):
            bptr = f"{ptr}/{key}/{i}"
            if _constraining(siblings):
                branch, bptr2, bstack = self.deref(branch, bptr, stack)
                if branch is None:
                    continue
                options.append(self.build(self.merge(siblings, branch, bptr), bptr, bstack))
            else:
                options.append(self.build(branch, bptr, stack))
        return alt(options)

    def build_enum(self, schema: dict, ptr: str, stack: tuple) -> Rx:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if "const" in schema and "enum" in schema:
            values = [v for v in schema["enum"] if json_equal(v, schema["const"])]
        if not isinstance(values, list):
            raise ValueError(f"'enum' at {_at(ptr)} must be a list")
        rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
        if _constraining(rest):
            checker = _Translator(self.root, "", self.max_depth).build(rest, ptr, stack)
            checked = [] if checker is None else [v for v in values if re.fullmatch(checker, dumps(v))]
        else:
            checked = values
        return alt([json_literal(v) for v in checked])

    def types(self, schema: dict, ptr: str) -> list[str]:
        declared = schema.get("type")
        if declared is None:
            inferred = [t for t, kws in (("object", _OBJECT_KW), ("array", _ARRAY_KW), ("string", _STRING_KW),
                                         ("number", _NUMBER_KW)) if any(k in schema for k in kws)]
            return inferred or list(_TYPES[:4]) + ["boolean", "null"]
        names = [declared] if isinstance(declared, str) else declared
        if not isinstance(names, list):
            raise ValueError(f"'type' at {ptr}/type must be a string or a list")
        if "any" in names:
            return [t for t in _TYPES if t != "integer"]
        for name in names:
            if name not in _TYPES:
                raise ValueError(f"unknown type {name!r} at {ptr}/type")
        if "number" in names:
            names = [n for n in names if n != "integer"]
        return list(dict.fromkeys(names))

    def build_type(self, name: str, schema: dict, ptr: str, stack: tuple) -> Rx:
        if name == "null":
            return "null"
        if name == "boolean":
            return "(?:true|false)"
        if name in ("integer", "number"):
            return self.build_number(schema, ptr, integer=name == "integer")
        if name == "string":
            return self.build_string(schema, ptr)
        if name == "array":
            return self.build_array(schema, ptr, stack)
        return self.build_object(schema, ptr, stack)

    # -- scalars ---------------------------------------------------------------------------------------------------
    def build_number(self, schema: dict, ptr: str, integer: bool) -> Rx:
        lo, lo_ex = _number_bound(schema, ptr, lower=True)
        hi, hi_ex = _number_bound(schema, ptr, lower=False)
        if lo is None and hi is None:
            return INT if integer else NUMBER
        if integer:  # round bounds inwards to integers, inclusive
            ilo = None if lo is None else (math.floor(lo) + 1 if lo_ex else math.ceil(lo))
            ihi = None if hi is None else (math.ceil(hi) - 1 if hi_ex else math.floor(hi))
            return signed_range(ilo, False, ihi, False, fractions=False)
        for name, bound in (("minimum", lo), ("maximum", hi)):
            if bound is not None and bound != int(bound):
                raise UnsupportedSchemaError(
                    f"unsupported keyword '{name}' at {_at(ptr)}: non-integer bound {bound!r} for type number")
        return signed_range(None if lo is None else int(lo), lo_ex, None if hi is None else int(hi), hi_ex,
                             fractions=True)

    def build_string(self, schema: dict, ptr: str) -> Rx:
        min_len = _count(schema, "minLength", ptr, 0) or 0
        max_len = _count(schema, "maxLength", ptr, None)
        if max_len is not None and max_len < min_len:
            return None
        has_len = min_len > 0 or max_len is not None
        if "format" in schema:
            fmt = schema["format"]
            if fmt not in FORMATS:
                raise UnsupportedSchemaError(f"unsupported keyword 'format' at {_at(ptr)}: unknown format {fmt!r}")
            width = format_width(fmt)
            if "pattern" in schema or (has_len and not (min_len <= width[0] and (max_len is None or width[1] <= max_len))):
                raise UnsupportedSchemaError(
                    f"unsupported keyword 'format' at {_at(ptr)}: combined with pattern or length limits")
            return f'"{FORMATS[fmt]}"'
        if "pattern" in schema:
            return self.build_pattern(schema["pattern"], min_len, max_len, ptr)
        return f'"{repeat(CHAR, min_len, max_len)}"'

    def build_pattern(self, pattern: Any, min_len: int, max_len: int | None, ptr: str) -> Rx:
        if not isinstance(pattern, str):
            raise ValueError(f"'pattern' at {_at(ptr)} must be a string")
        try:
            content = pattern_content(pattern, min_len, max_len)
        except UnsupportedPattern as exc:
            raise UnsupportedSchemaError(f"unsupported keyword 'pattern' at {_at(ptr)}: {exc}") from None
        return None if content is None else f'"{content}"'

    # -- containers ------------------------------------------------------------------------------------------------
    def build_array(self, schema: dict, ptr: str, stack: tuple) -> Rx:
        lo = _count(schema, "minItems", ptr, 0) or 0
        hi = _count(schema, "maxItems", ptr, None)
        if schema.get("uniqueItems") is True and (hi is None or hi > 1):
            raise UnsupportedSchemaError(f"unsupported keyword 'uniqueItems' at {_at(ptr)}")
        items = schema.get("items", True)
        if "prefixItems" in schema:
            prefix, rest, rest_key = schema["prefixItems"], items, "items"
        elif isinstance(items, list):
            prefix, rest, rest_key = items, schema.get("additionalItems", True), "additionalItems"
        else:
            return self.array_of(self.build(items, f"{ptr}/items", stack), lo, hi)
        if not isinstance(prefix, list):
            raise ValueError(f"'prefixItems' at {_at(ptr)} must be a list")
        prefix_rx = [self.build(p, f"{ptr}/{'prefixItems' if rest_key == 'items' else 'items'}/{i}", stack)
                     for i, p in enumerate(prefix)]
        rest_rx = self.build(rest, f"{ptr}/{rest_key}", stack)
        return self.tuple_array(prefix_rx, rest_rx, lo, hi)

    def tuple_array(self, prefix: list[Rx], rest: Rx, lo: int, hi: int | None) -> Rx:
        comma, k = self.tok(","), len(prefix)
        if k == 0:
            return self.array_of(rest, lo, hi)
        extra_lo, extra_hi = max(0, lo - k), None if hi is None else hi - k
        if extra_hi is not None and extra_hi < extra_lo:
            tail: Rx = None
        elif rest is None:
            tail = "" if extra_lo == 0 else None
        else:
            tail = repeat(comma + rest, extra_lo, extra_hi)
        # tail after j >= 1 items: stop, or one more prefix item and its tail
        for j in range(k - 1, 0, -1):
            more = None if (tail is None or prefix[j] is None) else comma + prefix[j] + tail
            tail = alt(["" if j >= lo and (hi is None or j <= hi) else None, more])
        first = None if tail is None or prefix[0] is None else prefix[0] + tail
        open_, close = lit("[") + self.ws, self.ws + lit("]")
        if first is None:
            return open_ + close if lo == 0 else None
        return open_ + (f"{group(first)}?" if lo == 0 else first) + close

    def build_object(self, schema: dict, ptr: str, stack: tuple) -> Rx:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        addl = schema.get("additionalProperties", True)
        if not isinstance(props, dict) or not isinstance(required, list):
            raise ValueError(f"'properties' must be an object and 'required' a list at {_at(ptr)}")
        lo = _count(schema, "minProperties", ptr, 0) or 0
        hi = _count(schema, "maxProperties", ptr, None)
        patterns = schema.get("patternProperties", {})
        if not isinstance(patterns, dict):
            raise ValueError(f"'patternProperties' at {_at(ptr)} must be an object")
        if not props and not required:
            return self.generic_members(schema, addl, patterns, lo, hi, ptr, stack)
        entries: list[tuple[str, Any, bool, str, tuple]] = []
        for name in list(props) + [n for n in dict.fromkeys(required) if n not in props]:
            sub, sub_ptr, sub_stack = self.member_schema(schema, name, ptr, stack)
            entries.append((name, sub, name in required, sub_ptr, sub_stack))
        pairs: list[tuple[str, bool]] = []
        for name, sub, req, sub_ptr, sub_stack in entries:
            value = None if sub is None else self.build(sub, sub_ptr, sub_stack)
            if value is None:
                if req:
                    return None
                continue
            pairs.append((json_literal(name) + self.tok(":") + value, req))
        if lo <= sum(req for _, req in pairs) and (hi is None or hi >= len(pairs)):
            body: Rx = self.object_body(pairs)
        else:
            body = self.counted_body(pairs, lo, hi, ptr)
        return None if body is None else lit("{") + self.ws + body + self.ws + lit("}")

    def member_schema(self, schema: dict, name: str, ptr: str, stack: tuple) -> tuple[Schema | None, str, tuple]:
        """What constrains member ``name``: its ``properties`` entry and every ``patternProperties`` entry whose
        pattern it contains, else ``additionalProperties`` (merged as allOf)."""
        props, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
        subs = [(props[name], f"{ptr}/properties/{_esc_ptr(name)}")] if name in props else []
        for pat, sub in patterns.items():
            try:
                hit = re.search(pat, name)
            except re.error:
                raise UnsupportedSchemaError(
                    f"unsupported keyword 'patternProperties' at {_at(ptr)}: invalid pattern {pat!r}") from None
            if hit:
                subs.append((sub, f"{ptr}/patternProperties/{_esc_ptr(pat)}"))
        if not subs:
            subs.append((schema.get("additionalProperties", True), f"{ptr}/additionalProperties"))
        if len(subs) == 1:
            return subs[0][0], subs[0][1], stack
        merged: Schema = True
        for sub, sub_ptr in subs:
            sub, _, stack = self.deref(sub, sub_ptr, stack)
            if sub is None:
                return None, ptr, stack
            merged = self.merge(merged, sub, sub_ptr)
        return merged, ptr, stack

    def generic_members(self, schema: dict, addl: Any, patterns: dict, lo: int, hi: int | None, ptr: str,
                        stack: tuple) -> Rx:
        """Objects without listed members: any keys under additionalProperties, or (a subset) only keys
        matching the single pattern of patternProperties."""
        if not patterns:
            return self.generic_object(self.build(addl, f"{ptr}/additionalProperties", stack), lo, hi, ptr=ptr)
        if len(patterns) > 1:
            raise UnsupportedSchemaError(
                f"unsupported keyword 'patternProperties' at {_at(ptr)}: several patterns without listed properties")
        (pat, sub), = patterns.items()
        sub_ptr = f"{ptr}/patternProperties/{_esc_ptr(pat)}"
        try:
            key = pattern_content(pat) if isinstance(pat, str) else None
        except UnsupportedPattern as exc:
            raise UnsupportedSchemaError(f"unsupported keyword 'pattern' at {_at(sub_ptr)}: {exc}") from None
        if key is None:
            return self.generic_object(None, lo, hi)
        return self.generic_object(self.build(sub, sub_ptr, stack), lo, hi, key=f'"{key}"', ptr=ptr)

    def counted_body(self, pairs: list[tuple[str, bool]], lo: int, hi: int | None, ptr: str) -> Rx:
        """:meth:`object_body` with ``lo`` to ``hi`` members present: each listed member appears at most once, so
        the count is exact. ``tail(j, c)``: members ``j..`` after ``c`` present ones; a regex cannot share the
        states, so its size grows like the number of ways to reach the bounds (refused past ``_MAX_REGEX``)."""
        comma, n = self.tok(","), len(pairs)

        @functools.cache
        def tail(j: int, c: int) -> Rx:
            if (hi is not None and c > hi) or c + n - j < lo:
                return None
            if c == 0 and lo == 0 and (hi is None or n - j <= hi):
                return self.object_body(pairs[j:])
            if c > 0 and c >= lo and (hi is None or c + n - j <= hi):  # no bound can bind any more
                return "".join(comma + rx if req else f"{group(comma + rx)}?" for rx, req in pairs[j:])
            rx, req = pairs[j]
            rest = tail(j + 1, c + 1)
            present = None if rest is None else ("" if c == 0 else comma) + rx + rest
            out = alt([present, None if req else tail(j + 1, c)])
            if out is not None and len(out) > _MAX_REGEX:
                raise UnsupportedSchemaError(
                    f"unsupported keyword '{'minProperties' if lo else 'maxProperties'}' at {_at(ptr)}: counting "
                    f"{n} listed properties needs a regex over {_MAX_REGEX:,} characters")
            return out

        return tail(0, 0)

    def object_body(self, pairs: list[tuple[str, bool]]) -> str:
        """Members in order, optional ones may be absent, commas only between present members.

        Linear-size construction: Q_k (non-empty selections among the first k members) is
        ``Q_{k-1}(,x_k)? | x_k`` for an optional member and ``Q_{k-1},x_k | x_k`` for a required one, where the
        bare ``x_k`` branch exists only while no earlier member is required.
        """
        comma = self.tok(",")
        nonempty: Rx = None
        can_be_empty = True
        for rx, req in pairs:
            extend = None if nonempty is None else nonempty + (comma + rx if req else f"{group(comma + rx)}?")
            nonempty = alt([extend, rx if can_be_empty else None])
            can_be_empty = can_be_empty and not req
        if nonempty is None:
            return ""
        return f"{group(nonempty)}?" if can_be_empty else nonempty


def schema_to_regex(schema: dict | str, whitespace: str | None = None, max_depth: int = 3) -> str:
    """Regular expression whose full matches are JSON texts valid under ``schema`` (see the module docstring).

    ``schema``: a dict or its JSON text. ``whitespace``: regex allowed between tokens (None: compact JSON).
    ``max_depth``: how often one ``$ref`` may recurse along a path, and how deep generic values nest.
    Raises :class:`UnsupportedSchemaError` for keywords it cannot express, ``ValueError`` for invalid schemas.
    """
    if not isinstance(max_depth, int) or max_depth < 0:
        raise ValueError(f"max_depth must be a non-negative integer, got {max_depth!r}")
    if whitespace is not None and not isinstance(whitespace, str):
        raise ValueError("whitespace must be a regex string or None")
    root = _load(schema)
    try:
        root = local_refs(root) if isinstance(root, dict) else root
        regex = _Translator(root, whitespace or "", max_depth).build(root, "")
    except RecursionError:
        raise UnsupportedSchemaError("unsupported schema: nesting too deep") from None
    if regex is None:
        raise ValueError(f"schema admits no JSON value (within max_depth={max_depth})")
    if len(regex) > _MAX_REGEX:
        raise UnsupportedSchemaError(
            f"unsupported schema: its regex has {len(regex):,} characters (limit {_MAX_REGEX:,}); lower max_depth")
    return regex


class JsonSchema(Regex):
    """A JSON Schema as a constraint: :func:`schema_to_regex`, then the regex's minimised byte automaton.

    Args:
        schema: a dict, a JSON text, or ``True``.
        whitespace: a regex allowed around structural characters (default: compact JSON, no whitespace).
        max_depth: how many times recursion through ``$ref`` is unrolled.

    Example:
        >>> c = JsonSchema({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})
        >>> c.matches('{"ok":true}'), c.matches('{"ok":1}')
        (True, False)
    """

    def __init__(self, schema: dict | str | bool, whitespace: str | None = None, max_depth: int = 3):
        self.schema = schema
        super().__init__(schema_to_regex(schema, whitespace=whitespace, max_depth=max_depth))

    def __repr__(self) -> str:
        text = json.dumps(self.schema) if not isinstance(self.schema, str) else self.schema
        return f"JsonSchema({text[:60] + '...' if len(text) > 60 else text})"
