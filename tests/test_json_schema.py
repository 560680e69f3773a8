"""Tests for decoding.constraints.json_schema: JSON Schema through the grammar engine.

Soundness: texts drawn at random from the compiled grammar itself (a random derivation, each terminal a random
member of its language) parse as JSON, keep named keys distinct and validate under ``jsonschema``; random JSON
values the constraint accepts validate. Completeness within the documented decisions: compact texts, properties in
schema order (``JsonSchema.dumps``) or any order (``key_order="any"``). Refusals name the keyword and its pointer;
compiles stay under the deadline. The official test suite runs in test_json_conformance.py.
"""

from __future__ import annotations

import json
import random
import time
import unicodedata
from collections import deque
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoding.constraints import rx
from decoding.constraints.json_schema import JsonSchema, UnsupportedSchemaError, schema_to_cfg

BENCH = Path(__file__).parent / "data" / "jsonschemabench"  # a vendored sample, see its README.md
FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def compact(value, ascii_only: bool = False) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_only)


def validator(schema):
    """The validator of the schema's draft (2020-12 by default), asserting formats."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def is_valid(value, schema) -> bool:
    return validator(schema).is_valid(value)


def named_keys(schema) -> set:
    """Every property name a schema names (properties, required, dependentRequired), anywhere in it."""
    out: set = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("properties", "dependentRequired") and isinstance(value, dict):
                out |= set(value) | {n for v in value.values() if isinstance(v, list) for n in v if isinstance(n, str)}
            if key == "required" and isinstance(value, list):
                out |= {n for n in value if isinstance(n, str)}
            out |= named_keys(value) if key not in ("enum", "const") else set()
    elif isinstance(schema, list):
        for value in schema:
            out |= named_keys(value)
    return out


def distinct(named: set):
    """A json.loads hook: named keys appear at most once in an object (free keys may repeat, as documented)."""
    def hook(pairs):
        keys = [k for k, _ in pairs if k in named]
        assert len(keys) == len(set(keys)), f"duplicate named keys {keys}"
        return dict(pairs)
    return hook


# --- texts drawn from a grammar -----------------------------------------------------------------------------------

def _live(r: rx.Rx) -> bool:
    return r is not rx.EMPTY and rx.is_live(r)


def _finish(r: rx.Rx) -> bytes:
    """A shortest completion of ``r`` (breadth-first over derivatives)."""
    seen, queue = {r}, deque([(r, b"")])
    while queue:
        node, path = queue.popleft()
        if node.nullable:
            return path
        for mask in node.classes():
            b = (mask & -mask).bit_length() - 1
            nxt = node.derive(b)
            if nxt not in seen and _live(nxt):
                seen.add(nxt)
                queue.append((nxt, path + bytes([int(b)])))
    raise AssertionError("a live expression has no completion")


def sample_terminal(r: rx.Rx, rng: random.Random, budget: int = 12) -> bytes:
    """A random member of ``r``: random live bytes, stopping at random where it may, finished shortest."""
    out = bytearray()
    while len(out) < budget:
        if r.nullable and rng.random() < 0.25:
            return bytes(out)
        options = [mask for mask in r.classes() if _live(r.derive((mask & -mask).bit_length() - 1))]
        if not options:
            return bytes(out)
        chosen = rng.choice(options)
        b = rng.choice([b for b in range(256) if chosen >> b & 1])
        out.append(b)
        r = r.derive(b)
    return bytes(out) + _finish(r)


def sample_text(cfg, rng: random.Random, depth: int = 8) -> bytes:
    """A random sentence of ``cfg``: random rules, the shallowest ones once ``depth`` is reached."""
    rules: dict[int, list] = {}
    for lhs, rhs in cfg.rules:
        rules.setdefault(lhs, []).append(rhs)
    height = {nt: float("inf") for nt in rules}
    changed = True
    while changed:
        changed = False
        for nt, options in rules.items():
            best = min(1 + max([height.get(s, 0) if s >= 0 else 0 for s in rhs], default=0) for rhs in options)
            if best < height[nt]:
                height[nt], changed = best, True

    def tallest(rhs) -> float:
        return max([height.get(s, 0) if s >= 0 else 0 for s in rhs], default=0)

    def expand(symbol: int, level: int) -> bytes:
        if symbol < 0:
            return sample_terminal(cfg.terminals[~symbol], rng)
        options = rules[symbol]
        if level >= depth:
            low = min(tallest(rhs) for rhs in options)
            options = [rhs for rhs in options if tallest(rhs) == low]
        return b"".join(expand(s, level + 1) for s in rng.choice(options))

    return expand(cfg.start, 0)


def assert_samples_valid(schema, constraint: JsonSchema, n: int = 30, seed: int = 0) -> None:
    """``n`` texts drawn from the constraint's grammar: accepted by it, JSON, named keys distinct, valid."""
    rng = random.Random(seed)
    schema = json.loads(schema) if isinstance(schema, str) else schema
    check, hook = validator(schema), distinct(named_keys(schema))
    for _ in range(n):
        text = sample_text(constraint.cfg, rng).decode("utf-8")
        assert constraint.matches(text), f"drawn from the grammar but rejected: {text}"
        assert check.is_valid(json.loads(text, object_pairs_hook=hook)), f"invalid text drawn: {text}"


# --- features: valid and invalid texts, and texts drawn from the grammar ------------------------------------------

# (schema, valid values, invalid values); valid values are written compactly with keys in schema order.
CASES = {
    "null": ({"type": "null"}, [None], [0, False, "null"]),
    "boolean": ({"type": "boolean"}, [True, False], [0, None, "true"]),
    "integer": ({"type": "integer"}, [0, -1, 12345678901234567890, 2.0], [1.5, "1", None]),
    "number": ({"type": "number"}, [0, -1.5, 2.5e-10, 1e300], ["1", None, True]),
    "string": ({"type": "string"}, ["", "a\"b\\c\n\t\u0001", "é漢字😀", "/"], [1, None]),
    "type list": ({"type": ["string", "null"]}, ["x", None], [1, True]),
    "no type": ({"minLength": 2}, ["ab", 1, None, [1], {}], ["a"]),
    "enum": ({"enum": ["a", 1, None, [1, 2], {"k": "v"}]}, ["a", 1, 1.0, None, [1, 2], {"k": "v"}], ["b", 2, [1]]),
    "enum with type": ({"type": "string", "enum": ["a", 1]}, ["a"], [1]),
    "const": ({"const": {"a": [True]}}, [{"a": [True]}], [{"a": [False]}, None]),
    "minLength/maxLength": ({"type": "string", "minLength": 2, "maxLength": 3}, ["ab", "a\nc", "\u00e9\u00e9"],
                            ["a", "abcd", ""]),
    "pattern anchored": ({"type": "string", "pattern": "^[a-z]+-[0-9]{2}$"}, ["ab-12"], ["ab-1", "Ab-12", "xab-123"]),
    "pattern unanchored": ({"type": "string", "pattern": "[0-9]{3}"}, ["123", "a1234b", "x\"999\\"], ["12a3", ""]),
    "pattern special chars": ({"type": "string", "pattern": "^[^a]\\.\\d\\s?$"}, ["\".1", "\\.2\n", "b.3"],
                              ["a.1", "bx1"]),
    "pattern alternation": ({"type": "string", "pattern": "^(cat|dog)s?$|^bird$"}, ["cat", "dogs", "bird"],
                            ["birds", "cow"]),
    "pattern + length": ({"type": "string", "pattern": "^a+b$", "minLength": 3, "maxLength": 4}, ["aab", "aaab"],
                         ["ab", "aaaab"]),
    "date": ({"type": "string", "format": "date"}, ["2024-02-29", "1999-12-31"], ["2023-02-29", "2024-04-31"]),
    "time": ({"type": "string", "format": "time"}, ["12:30:00Z", "23:59:59.5+01:00"], ["24:00:00Z", "12:30"]),
    "date-time": ({"type": "string", "format": "date-time"}, ["2024-01-31T00:00:00Z"], ["2024-01-31 00:00:00Z"]),
    "email": ({"type": "string", "format": "email"}, ["a.b+c@example.co.uk"], ["a@", "@b.com", "a b@c.d"]),
    "hostname": ({"type": "string", "format": "hostname"}, ["example.com", "a-b.c"], ["-a.com", "a..b", "a" * 64]),
    "ipv6": ({"type": "string", "format": "ipv6"}, ["::1", "fe80::1:2", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8"],
             ["1::2::3", "12345::", "1:2:3:4:5:6:7:8:9"]),
    "uuid": ({"type": "string", "format": "uuid"}, ["123e4567-e89b-12d3-a456-426614174000"], ["123e4567"]),
    "uri": ({"type": "string", "format": "uri"}, ["https://x.org/a?b=c#d", "urn:isbn:1"], ["no scheme", "/a"]),
    "uri-reference": ({"type": "string", "format": "uri-reference"}, ["/a/b?c", "#f", "https://x.org"], ["a b"]),
    "ipv4": ({"type": "string", "format": "ipv4"}, ["192.168.0.255"], ["256.1.1.1", "1.2.3"]),
    "unknown format is an annotation": ({"type": "string", "format": "x-colour"}, ["red", ""], [1]),
    "integer range": ({"type": "integer", "minimum": -15, "maximum": 130}, [-15, -9, 0, 7, 99, 130],
                      [-16, 131, 1000, -100]),
    "integer exclusive": ({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}, [1, 9], [0, 10]),
    "integer draft4 exclusive": ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer",
                                  "minimum": 0, "exclusiveMinimum": True}, [1, 50], [0, -1]),
    "number range": ({"type": "number", "minimum": -1, "maximum": 2}, [-1, -0.5, 0, 1.25, 2, 2.0], [-1.01, 2.01, 3]),
    "decimal bounds": ({"type": "number", "exclusiveMinimum": 0.25, "maximum": 1.5}, [0.26, 1, 1.5],
                       [0.25, 0.2, 1.51]),
    "multipleOf integer": ({"type": "integer", "multipleOf": 7}, [0, 7, -14, 700], [1, 15, 7.5]),
    "multipleOf decimal": ({"type": "number", "multipleOf": 0.25, "maximum": 2}, [0.5, 1.75, -3], [0.3, 2.25]),
    "multipleOf 0.01": ({"type": "number", "multipleOf": 0.01, "minimum": 0}, [0, 80, 12345], [80.04, -1, 0.001]),
    "array": ({"type": "array", "items": {"type": "integer"}}, [[], [1], [1, 2, 3]], [[1.5], ["a"], {}]),
    "array bounds": ({"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2},
                     [[True], [True, False]], [[], [True, True, True]]),
    "prefixItems": ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
                    [[], [1], [1, "a"]], [["a"], [1, "a", 2]]),
    "draft4 tuple": ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "array",
                      "items": [{"type": "null"}], "additionalItems": {"type": "integer"}, "minItems": 2},
                     [[None, 1], [None, 1, 2]], [[None], [1, 1]]),
    "contains": ({"type": "array", "contains": {"type": "string"}, "minContains": 2, "maxContains": 3},
                 [["a", 1, "b"], ["a", "b", "c"]], [["a"], ["a", "b", "c", "d"], [1, 2]]),
    "uniqueItems of values": ({"type": "array", "items": {"enum": [1, "x", None]}, "uniqueItems": True},
                              [[], [1, "x"], [None, 1, "x"]], [[1, 1], [1, "x", 1], [2]]),
    "object": ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                "required": ["b"], "additionalProperties": False},
               [{"b": ""}, {"a": 1, "b": "x"}], [{}, {"a": 1}, {"b": 1}, {"b": "x", "c": 1}]),
    "object all optional": ({"type": "object", "properties": {"a": {"type": "null"}, "b": {"type": "null"},
                                                              "c": {"type": "null"}}},
                            [{}, {"a": None}, {"b": None}, {"a": None, "c": None}, {"a": None, "b": None, "c": None}],
                            [{"a": 1}]),
    "generic object": ({"type": "object"}, [{}, {"a": 1, "b": [True, {"c": None}]}], [[], "x"]),
    "additionalProperties schema": ({"type": "object", "additionalProperties": {"type": "integer"},
                                     "minProperties": 1}, [{"a": 1}, {"a": 1, "b": 2}], [{}, {"a": "x"}]),
    "patternProperties": ({"type": "object", "properties": {"ab": {"type": "integer"}},
                           "patternProperties": {"^a": {"minimum": 5}, "b$": {"maximum": 9}},
                           "additionalProperties": False},
                          [{"ab": 5}, {"ab": 9, "ax": 7, "xb": -1}], [{"ab": 4}, {"ab": 10}, {"x": 1}, {"ax": 1}]),
    "propertyNames": ({"type": "object", "propertyNames": {"pattern": "^[a-z]+$", "maxLength": 3}},
                      [{}, {"abc": 1, "x": [2]}], [{"abcd": 1}, {"A": 1}]),
    "dependentRequired": ({"type": "object", "properties": {"a": {}, "b": {}, "c": {}},
                           "dependentRequired": {"c": ["a"], "a": ["b"]}},
                          [{}, {"b": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}], [{"a": 1}, {"c": 1, "b": 2}]),
    "dependentSchemas": ({"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}},
                         [{}, {"b": 1}, {"a": 1, "b": 2}], [{"a": 1}]),
    "anyOf": ({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 1}]}, [1, "a", ""], ["ab", None]),
    "oneOf overlapping": ({"oneOf": [{"type": "integer"}, {"minimum": 2}]}, [1, 2.5, "x"], [3, 2]),
    "oneOf tagged": ({"type": "object", "oneOf": [
        {"properties": {"kind": {"const": "a"}, "x": {"type": "integer"}}, "required": ["kind"],
         "additionalProperties": False},
        {"properties": {"kind": {"const": "b"}}, "required": ["kind"], "additionalProperties": False}]},
                     [{"kind": "a"}, {"kind": "a", "x": 1}, {"kind": "b"}], [{"kind": "b", "x": 1}, {}]),
    "not": ({"not": {"type": "string", "maxLength": 2}}, [1, None, "abc"], ["ab", ""]),
    "not properties": ({"type": "object", "not": {"properties": {"a": {"const": 1}}, "required": ["a"]}},
                       [{}, {"a": 2}], [{"a": 1}]),
    "not additionalProperties": ({"type": "object", "properties": {"a": {}, "b": {"type": "integer"}},
                                  "not": {"properties": {"a": {}}, "additionalProperties": False}},
                                 [{"b": 1}, {"a": 1, "b": 2}, {"c": None}], [{}, {"a": 1}, {"b": "x"}]),
    "not patternProperties": ({"not": {"patternProperties": {"^a": {"type": "integer"}}}},
                              [{"ab": "x"}, {"b": 1, "a": None}], [{"ab": 1}, {"b": "x"}, 1]),
    "not propertyNames": ({"not": {"propertyNames": {"maxLength": 2}}}, [{"abc": 1}, {"a": 0, "abc": 1}],
                          [{"ab": 1}, {}, "x"]),
    "oneOf closed objects": ({"type": "object", "oneOf": [
        {"additionalProperties": False, "properties": {"key": {"type": "string"}}},
        {"additionalProperties": False, "properties": {"keys": {"type": "array"}}}]},
                             [{"key": "x"}, {"keys": []}], [{}, {"key": "x", "keys": []}, {"other": 1}]),
    "if/then/else": ({"type": "object", "if": {"properties": {"k": {"const": "a"}}, "required": ["k"]},
                      "then": {"required": ["x"]}, "else": {"required": ["y"]}},
                     [{"k": "a", "x": 1}, {"k": "b", "y": 1}, {"y": 1}], [{"k": "a", "y": 1}, {"k": "b", "x": 1}]),
    "allOf": ({"allOf": [{"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}},
                          "required": ["a"]},
                         {"properties": {"a": {"maximum": 5}}}]}, [{"a": 0}, {"a": 5}], [{"a": 6}, {}]),
    "ref defs": ({"$defs": {"pos": {"type": "integer", "minimum": 1}}, "type": "array",
                  "items": {"$ref": "#/$defs/pos"}}, [[1, 2]], [[0]]),
    "recursive ref": ({"$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["v"], "additionalProperties": False}}, "$ref": "#/$defs/node"},
                      [{"v": 1}, {"v": 1, "kids": [{"v": 2, "kids": [{"v": 3, "kids": [{"v": 4}]}]}]}],
                      [{"kids": []}, {"v": 1, "kids": [{"v": "x"}]}]),
    "ref into anyOf": ({"$defs": {"t": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/u"}]},
                                  "u": {"type": "array", "items": {"$ref": "#/$defs/t"}}}, "$ref": "#/$defs/t"},
                       [None, [], [None, [[None]]]], [1, [1]]),
    "ref with siblings": ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"type": "integer", "maximum": 9}},
                           "$ref": "#/$defs/a", "minimum": 3}, [3, 9], [2, 10]),
    "annotations ignored": ({"title": "T", "description": "d", "examples": [1], "default": 1, "$comment": "c",
                             "x-custom": 3, "type": "integer"}, [1], ["1"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_feature_valid_and_invalid_texts(name):
    schema, valid, invalid = CASES[name]
    c = JsonSchema(schema)
    for value in valid:
        assert is_valid(value, schema), f"bad test data {value!r}"
        assert c.matches(c.dumps(value)), f"{name}: should accept {c.dumps(value)}"
    for value in invalid:  # formats: ours are subsets of jsonschema's lax checks
        assert "format" in schema or not is_valid(value, schema), f"bad test data {value!r}"
        assert not c.matches(compact(value)), f"{name}: should reject {compact(value)}"


@pytest.mark.parametrize("name", list(CASES))
def test_feature_texts_drawn_from_the_grammar_validate(name):
    schema = CASES[name][0]
    assert_samples_valid(schema, JsonSchema(schema))


@pytest.mark.parametrize("pattern", [r"^\p{Lu}\p{Letter}*$", r"[\p{N}\p{Zs}]{2}", r"^\P{L}+$", r"\p{gc=Sc}"])
def test_unicode_property_escapes(pattern):
    """\\p{...} general categories (ECMA's u mode; Python's re has none): checked against the regex package."""
    import regex

    c = JsonSchema({"type": "string", "pattern": pattern})
    rng = random.Random(0)
    alphabet = "aZéÉ漢1٣ ½$€-\u2003_"
    for _ in range(300):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))
        assert c.matches(compact(s)) == bool(regex.search(pattern.replace("$", r"\Z"), s)), (pattern, s)
    for _ in range(20):
        value = json.loads(sample_text(c.cfg, rng).decode())
        if any(unicodedata.category(ch) == "Cn" for ch in value):
            continue  # unassigned in Python's Unicode: the regex package's newer tables may have assigned it
        assert regex.search(pattern.replace("$", r"\Z"), value), value


def test_json_text_schema_and_true_schema():
    assert JsonSchema('{"type": "integer"}').matches("12")
    c = JsonSchema(True)
    for value in (None, 1, "x", [1, {"a": 2}], {"a": {"b": {"c": [[[[1]]]]}}}):  # generic values nest freely
        assert c.matches(compact(value))


def test_whitespace_option():
    schema = CASES["object"][0]
    c = JsonSchema(schema, whitespace=r"[ \n]?")
    assert c.matches('{ "a" : 1 ,\n"b": "x" }') and c.matches('{"a":1,"b":"x"}')
    assert not c.matches(' {"b":"x"}') and not c.matches('{"b":"x"} ')
    assert not JsonSchema(schema).matches('{ "b":"x"}')
    arr = JsonSchema({"type": "array", "items": {"type": "integer"}}, whitespace=" ?")
    assert arr.matches("[ 1 , 2 ]") and arr.matches("[ ]") and arr.matches("[]")


def test_key_order():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a"]}
    ordered, free = JsonSchema(schema), JsonSchema(schema, key_order="any")
    assert ordered.matches('{"a":1,"b":"x"}') and not ordered.matches('{"b":"x","a":1}')
    assert free.matches('{"a":1,"b":"x"}') and free.matches('{"b":"x","a":1}') and free.matches('{"c":0,"a":1}')
    assert not free.matches('{"a":1,"a":2}') and not free.matches('{"b":"x"}')
    assert ordered.dumps({"x": None, "b": "y", "a": 2}) == '{"a":2,"b":"y","x":null}'


def test_recursion_is_rules_not_unrolling():
    schema = CASES["recursive ref"][0]
    c = JsonSchema(schema)
    deep = {"v": 0}
    for depth in range(1, 60):
        deep = {"v": depth, "kids": [deep]}
    assert c.matches(compact(deep))
    assert len(c.cfg.rules) < 40


def test_scalar_values_are_terminals_not_unit_rules():
    """A value with scalars only is its terminal in the rules that use it: no ``value -> terminal`` rule."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer", "minimum": 1}},
              "required": ["a", "b"], "additionalProperties": False}
    cfg = schema_to_cfg(schema)
    assert not [rhs for _, rhs in cfg.rules if len(rhs) == 1 and rhs[0] < 0]
    assert JsonSchema(schema).matches('{"a":"x","b":2}') and not JsonSchema(schema).matches('{"a":"x","b":0}')
    scalar = schema_to_cfg({"type": "string", "maxLength": 2})  # a scalar schema: a start rule over its terminal
    assert JsonSchema({"type": "string", "maxLength": 2}).matches('"ab"') and len(scalar.rules) == 1


@pytest.mark.parametrize("extra, valid, invalid", [
    ({}, '"abcdef"', "1"),
    ({"minLength": 3}, '"abc"', '"ab"'),
    ({"maxLength": 2}, '"ab"', '"abc"'),
    ({"pattern": "^a+$"}, '"aa"', '"ab"'),
    ({"format": "date"}, '"2024-01-31"', '"2024-1-31"'),
    ({"type": ["string", "integer"], "minimum": 5}, "5", "4"),
    ({"type": "integer", "maximum": 5}, "5", "6"),
    ({"type": "integer", "exclusiveMaximum": 5}, "4", "5"),
    ({"type": "integer", "multipleOf": 3}, "6", "7"),
    ({"type": "number", "minimum": 0.5}, "0.5", "0.4"),
    ({"type": "integer", "not": {"multipleOf": 2}}, "3", "4"),
    ({"type": "string", "not": {"pattern": "^b"}}, '"ab"', '"ba"'),
])
def test_scalar_languages_shared_across_schemas_stay_exact(extra, valid, invalid):
    """Scalar languages are memoised across schemas by their keywords: each variant, compiled after the others in
    one process, still accepts exactly its own values (fails if the memo's key drops a keyword)."""
    c = JsonSchema({"type": "string", **extra})
    assert c.matches(valid) and not c.matches(invalid)


def test_strings_are_canonical():
    """One spelling per string: escapes only where JSON needs them, lower-case hex, no surrogate escapes."""
    c = JsonSchema({"type": "string", "maxLength": 1})
    assert c.matches(r'"\n"') and c.matches(r'"\u001f"') and c.matches('"é"') and c.matches('"😀"')
    for spelling in (r'"\u0041"', r'"\/"', r'"\u001F"', r'"\ud83d\ude00"', r'"\u000a"'):
        assert not c.matches(spelling), spelling


# --- completeness on generated values (compact, keys in schema order) ---------------------------------------------

@FAST
@given(st.integers(-300, 300), st.integers(-300, 300), st.integers(-10**6, 10**6))
def test_integer_ranges_exact(lo, hi, x):
    lo, hi = min(lo, hi), max(lo, hi)
    c = JsonSchema({"type": "integer", "minimum": lo, "maximum": hi})
    for v in (x, lo, hi, lo - 1, hi + 1, (lo + hi) // 2):
        assert c.matches(str(v)) == (lo <= v <= hi), (lo, hi, v)


@FAST
@given(st.one_of(st.none(), st.decimals(-50, 50, places=2)), st.one_of(st.none(), st.decimals(-50, 50, places=2)),
       st.booleans(), st.booleans(), st.decimals(-60, 60, places=3), st.sampled_from([None, 1, 3, 0.5, 0.25, 7]))
def test_number_bounds_and_multiples_exact(lo, hi, lo_ex, hi_ex, x, step):
    schema = {"type": "number"}
    if lo is not None:
        schema["exclusiveMinimum" if lo_ex else "minimum"] = float(lo)
    if hi is not None:
        schema["exclusiveMaximum" if hi_ex else "maximum"] = float(hi)
    if step is not None:
        schema["multipleOf"] = step
    text = str(x)
    try:
        c = JsonSchema(schema)
    except ValueError as exc:  # an empty range
        assert "admits no JSON value" in str(exc)
        assert not is_valid(float(text), schema)
        return
    assert c.matches(text) == is_valid(json.loads(text), schema), (schema, text)


@FAST
@given(st.integers(0, 5), st.integers(0, 5), st.text(max_size=8))
def test_string_lengths_exact(lo, extra, s):
    schema = {"type": "string", "minLength": lo, "maxLength": lo + extra}
    assert JsonSchema(schema).matches(compact(s)) == is_valid(s, schema)


OBJ = {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0}, "name": {"type": "string"},
                                        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                                        "ok": {"type": "boolean"}},
       "required": ["name"], "additionalProperties": False}


@FAST
@given(st.fixed_dictionaries({"name": st.text(max_size=5)},
                             optional={"id": st.integers(0, 10**9), "tags": st.lists(st.text(max_size=3), max_size=3),
                                       "ok": st.booleans()}))
def test_object_completeness(value):
    c = JsonSchema(OBJ)
    assert c.matches(c.dumps(value))
    assert JsonSchema(OBJ, key_order="any").matches(compact(value))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
    max_leaves=8,
)


@pytest.mark.parametrize("name", ["object", "anyOf", "array bounds", "generic object", "number range", "not",
                                  "integer range", "string", "prefixItems", "additionalProperties schema",
                                  "oneOf overlapping", "if/then/else", "patternProperties", "contains"])
def test_random_values_sound(name):
    """Random JSON values: acceptance implies validity."""
    schema = CASES[name][0]
    c, free = JsonSchema(schema), JsonSchema(schema, key_order="any")

    @FAST
    @given(JSON_VALUES)
    def check(value):
        if c.matches(compact(value)) or free.matches(compact(value)):
            assert is_valid(value, schema)

    check()


# --- JSON equality, counts, references ----------------------------------------------------------------------------

def accepts(schema, text: str) -> bool:
    """Whether the constraint accepts ``text`` (False when the schema admits no value at all)."""
    try:
        c = JsonSchema(schema)
    except ValueError as exc:
        if "admits no JSON value" in str(exc):
            return False
        raise
    return c.matches(text)


def assert_exact(schema, valid: list[str], invalid: list[str]) -> None:
    for text in valid:
        assert is_valid(json.loads(text), schema), f"bad test data {text}"
        assert accepts(schema, text), f"should accept {text}"
    for text in invalid:
        assert not is_valid(json.loads(text), schema), f"bad test data {text}"
        assert not accepts(schema, text), f"accepts invalid {text}"


@pytest.mark.parametrize("schema, valid, invalid", [
    ({"allOf": [{"const": 1}, {"const": True}]}, [], ["1", "true"]),
    ({"allOf": [{"const": 0}, {"const": False}]}, [], ["0", "false"]),
    ({"allOf": [{"enum": [1, "a", None]}, {"enum": [True, "a", 0]}]}, ['"a"'], ["1", "true", "0", "null"]),
    ({"const": False, "enum": [0, False]}, ["false"], ["0"]),
    ({"allOf": [{"const": 1}, {"const": 1.0}]}, ["1"], ["true"]),
    ({"allOf": [{"enum": [[1], {"a": 0}]}, {"enum": [[True], {"a": False}]}]}, [], ["[1]", '{"a":0}', "[true]"]),
    ({"allOf": [{"enum": [[1.0], {"a": 0}]}, {"enum": [[1], {"a": 0.0}]}]}, ["[1]", '{"a":0}'], ["[true]"]),
    ({"not": {"enum": [1, "a"]}}, ["2", '"b"', "1.5"], ["1", "1.0", '"a"']),
])
def test_const_and_enum_compare_json_values(schema, valid, invalid):
    """1 != true and 0 != false in JSON; 1 == 1.0, whichever way either is written."""
    assert_exact(schema, valid, invalid)


COUNTED = [
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}},
      "minProperties": 2},
     ['{"a":1,"b":2}', '{"a":1,"c":2}', '{"b":1,"c":2}', '{"a":1,"b":2,"c":3}', '{"a":1,"x":2}'],
     ["{}", '{"a":1}', '{"c":1}']),
    ({"type": "object", "properties": {k: {"type": "integer"} for k in "abcd"}, "required": ["b"], "minProperties": 2,
      "maxProperties": 3}, ['{"a":1,"b":2}', '{"b":1,"d":2}', '{"a":1,"b":2,"c":3}'],
     ['{"b":1}', '{"a":1,"b":2,"c":3,"d":4}', '{"b":1,"x":1,"y":2,"z":3}']),
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "null"}}, "maxProperties": 1},
     ["{}", '{"a":1}', '{"b":null}', '{"x":0}'], ['{"a":1,"b":2}', '{"a":1,"x":2}']),
    ({"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 2},
     ["{}", '{"x":1}', '{"x":1,"y":2}'], ['{"x":1,"y":2,"z":3}']),
]


@pytest.mark.parametrize("schema, valid, invalid", COUNTED)
def test_property_counts_are_exact(schema, valid, invalid):
    """Named properties appear once each, so minProperties/maxProperties count them exactly; a free member counts
    one towards the minimum and each towards the maximum."""
    assert_exact(schema, valid, invalid)
    assert_samples_valid(schema, JsonSchema(schema, whitespace=" ?"))
    assert_samples_valid(schema, JsonSchema(schema, key_order="any"), seed=1)


@pytest.mark.parametrize("schema, pointer", [
    ({"type": "object", "minProperties": 2}, "/"),
    ({"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 3}, "/"),
    ({"type": "array", "items": {"type": "object", "properties": {"a": {}}, "minProperties": 3}}, "/items"),
])
def test_min_properties_over_free_keys_is_refused(schema, pointer):
    """{"a":1,"a":1} has one property once parsed: free keys are not kept distinct, so only one counts."""
    with pytest.raises(UnsupportedSchemaError, match=f"'minProperties' at {pointer}"):
        JsonSchema(schema)


D7 = "http://json-schema.org/draft-07/schema#"
D4 = "http://json-schema.org/draft-04/schema#"
BASE_URI_CASES = {
    "fragment ref in a nested $id": (
        {"$id": "https://example.com/root.json", "$ref": "#/$defs/A",
         "$defs": {"B": {"type": "string"},
                   "A": {"$id": "https://example.com/a.json", "$defs": {"B": {"type": "integer"}},
                         "type": "object", "properties": {"p": {"$ref": "#/$defs/B"}}, "required": ["p"]}}},
        ['{"p":1}'], ['{"p":"x"}']),
    "'#' is the nested resource": (
        {"$id": "https://example.com/root.json", "type": "object", "properties": {"x": {"$ref": "#/$defs/A"}},
         "$defs": {"A": {"$id": "a.json", "type": "array", "items": {"anyOf": [{"type": "integer"}, {"$ref": "#"}]}}}},
        ['{"x":[1,[2,[]]]}'], ['{"x":[{}]}', '{"x":[{"x":[]}]}']),
    "draft-07 $ref ignores siblings": (
        {"$schema": D7, "definitions": {"B": {"type": "string"}},
         "properties": {"x": {"$ref": "#/definitions/B", "maxLength": 1}}, "required": ["x"]},
        ['{"x":"long"}'], ['{"x":1}']),
    "draft-04 id": (
        {"$schema": D4, "id": "http://example.com/root.json", "properties": {"a": {"$ref": "#/definitions/A"}},
         "required": ["a"], "definitions": {
             "B": {"type": "string"},
             "A": {"id": "http://example.com/a.json", "definitions": {"B": {"type": "integer"}},
                   "properties": {"p": {"$ref": "#/definitions/B"}}, "required": ["p"]}}},
        ['{"a":{"p":1}}'], ['{"a":{"p":"x"}}']),
    "anchors": (
        {"$id": "https://example.com/root.json", "type": "array", "items": False,
         "prefixItems": [{"$ref": "#positive"}, {"$ref": "other.json"}, {"$ref": "other.json#positive"}],
         "$defs": {"pos": {"$anchor": "positive", "type": "integer", "minimum": 1},
                   "other": {"$id": "other.json", "$ref": "#positive",
                             "$defs": {"neg": {"$anchor": "positive", "type": "integer", "maximum": -1}}}}},
        ["[1,-1,-2]", "[]"], ["[0,-1,-1]", "[1,1,-1]", "[1,-1,1]"]),
}


@pytest.mark.parametrize("name", list(BASE_URI_CASES))
def test_refs_resolve_against_the_base_uri_of_their_id(name):
    schema, valid, invalid = BASE_URI_CASES[name]
    assert_exact(schema, valid, invalid)


def test_refs_outside_the_document_are_refused():
    for ref in ("other.json#/a", "https://example.com/x.json", "#nowhere"):
        with pytest.raises(UnsupportedSchemaError, match="'\\$ref' at /properties/p"):
            JsonSchema({"$id": "https://example.com/root.json", "properties": {"p": {"$ref": ref}}, "required": ["p"]})


# --- refusals and bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema, keyword, pointer", [
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems", "/"),
    ({"type": "object", "properties": {"a": {"unevaluatedProperties": False, "allOf": [{}]}}},
     "unevaluatedProperties", "/properties/a"),
    ({"not": {"type": "array", "uniqueItems": True}}, "not", "/not"),
    ({"oneOf": [{"type": "array", "uniqueItems": True}, {"type": "array"}]}, "oneOf", "/"),
    ({"$dynamicRef": "#x"}, "$dynamicRef", "/"),
    ({"type": "string", "pattern": "^(?=a)b$"}, "pattern", "/"),
    ({"type": "string", "pattern": "^(a)\\1$"}, "pattern", "/"),
    ({"type": "string", "pattern": "(?i)abc"}, "pattern", "/"),
    ({"type": "string", "pattern": "a\\bc"}, "pattern", "/"),
    ({"type": "object", "patternProperties": {"\\p{Script=Greek}": {}}}, "patternProperties", "/"),
    ({"$ref": "other.json#/a"}, "$ref", "/"),
    ({"$defs": {"x": {"extends": {}}}, "$ref": "#/$defs/x"}, "extends", "/$defs/x"),
    ({"type": "object", "properties": {k: {} for k in "abcdefghi"}}, None, "/"),  # only under key_order="any"
])
def test_unsupported_keywords_are_named(schema, keyword, pointer):
    if keyword is None:
        JsonSchema(schema)
        schema, keyword = schema, "properties"
        with pytest.raises(UnsupportedSchemaError, match=f"'{keyword}' at {pointer}"):
            JsonSchema(schema, key_order="any")
        return
    with pytest.raises(UnsupportedSchemaError) as info:
        JsonSchema(schema)
    assert f"'{keyword}' at {pointer}" in str(info.value)


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", "3", False, 17, None, {"type": "strange"},
                                 {"$ref": "#/missing"}, {"type": "integer", "minimum": 5, "maximum": 1},
                                 {"type": "string", "maxLength": -1}, {"required": "a"}, {"properties": []},
                                 {"multipleOf": 0}, {"enum": 3}, {"allOf": {}}])
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        JsonSchema(bad)


def test_bad_arguments():
    for kwargs in ({"key_order": "sorted"}, {"deadline": 0}, {"whitespace": 3}, {"whitespace": "[ x]*"}):
        with pytest.raises(ValueError):
            JsonSchema({}, **kwargs)


_KEYWORDS = ["type", "properties", "required", "additionalProperties", "patternProperties", "items", "prefixItems",
             "minItems", "maxLength", "pattern", "format", "enum", "const", "anyOf", "oneOf", "allOf", "not", "if",
             "minimum", "multipleOf", "$ref", "dependencies", "dependentRequired", "propertyNames", "contains",
             "uniqueItems", "minProperties", "$defs", "unevaluatedProperties"]
_VALUES = [None, True, False, 0, -1, 1.5, 10**20, "", "x", "#", "#/definitions/a", "(", [], [1], ["a"], [{}], {},
           {"a": {}}, {"a": True}, {"type": "string"}, {"a": ["b"]}, 1e308]


def _mutate(value, rng: random.Random):
    if isinstance(value, dict):
        value = {k: _mutate(v, rng) for k, v in value.items()}
        if rng.random() < 0.05:
            value[rng.choice(_KEYWORDS)] = rng.choice(_VALUES)
        return value
    return [_mutate(v, rng) for v in value] if isinstance(value, list) else value


def test_mutated_schemas_compile_or_raise_value_errors():
    """Keyword values of every wrong kind, anywhere: a ValueError (an UnsupportedSchemaError, or one naming the
    keyword and pointer), never another exception, never past the deadline."""
    rng = random.Random(0)
    schemas = [json.loads((BENCH / name).read_text()) for name in BENCH_FILES]
    for _ in range(400):
        schema = _mutate(rng.choice(schemas), rng)
        start = time.perf_counter()
        try:
            JsonSchema(schema)
        except ValueError:
            pass
        assert time.perf_counter() - start < 1.5


def test_unsatisfiable_recursion_raises():
    with pytest.raises(ValueError, match="admits no JSON value"):
        JsonSchema({"$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/a"}, "minItems": 1}},
                    "$ref": "#/$defs/a"})


def test_deadline_refuses_instead_of_hanging():
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "pattern": f"^[a-z]{{{i}}}x"}
                                               for i in range(40)}}
    with pytest.raises(UnsupportedSchemaError, match="deadline"):
        schema_to_cfg(schema, deadline=1e-4)


# --- JSONSchemaBench sample ---------------------------------------------------------------------------------------

# What each vendored schema that does not compile is refused for (the keyword named).
BENCH_REFUSED = {"Github_easy/o46895.json": "extends"}
BENCH_FILES = sorted(p.relative_to(BENCH).as_posix() for p in BENCH.glob("*/*.json"))


def test_bench_sample_is_vendored():
    assert len(BENCH_FILES) == 39 and set(BENCH_REFUSED) <= set(BENCH_FILES)


@pytest.mark.parametrize("name", BENCH_FILES)
def test_bench_sample(name):
    """Each schema compiles within the deadline, and texts drawn from its grammar validate; or it is refused with
    the keyword and its pointer named."""
    text = (BENCH / name).read_text()
    if name in BENCH_REFUSED:
        with pytest.raises(UnsupportedSchemaError, match=f"'{BENCH_REFUSED[name]}' at /"):
            JsonSchema(text)
        return
    start = time.perf_counter()
    c = JsonSchema(text)
    assert time.perf_counter() - start < 1.0
    assert_samples_valid(json.loads(text), c, n=5)
