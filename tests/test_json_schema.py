"""Tests for decoding.constraints.json_schema.schema_to_regex.

Soundness: every text the regex fully matches is valid JSON that ``jsonschema`` accepts (texts drawn from the
regex itself with hypothesis). Completeness within the documented subset: compact serialisations of valid values,
properties in schema order, match. A JSONSchemaBench sample: compiles (soundly) or refuses with a clear error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import interegular
import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from decoding.constraints.json_schema import UnsupportedSchemaError, schema_to_regex

BENCH = Path(__file__).parent / "data" / "jsonschemabench"  # a vendored sample, see its README.md
FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def compact(value, ascii_only: bool = False) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_only)


def one_of_as_any_of(schema):
    """The documented reading of oneOf (as anyOf), for validating the texts the regex produces."""
    if isinstance(schema, dict):
        return {("anyOf" if k == "oneOf" else k): one_of_as_any_of(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [one_of_as_any_of(v) for v in schema]
    return schema


def validator(schema):
    """The validator of the schema's draft (2020-12 by default), asserting formats."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def is_valid(value, schema) -> bool:
    return validator(schema).is_valid(value)


# (schema, valid values, invalid values); valid values are written compactly with keys in schema order.
CASES = {
    "null": ({"type": "null"}, [None], [0, False, "null"]),
    "boolean": ({"type": "boolean"}, [True, False], [0, None, "true"]),
    "integer": ({"type": "integer"}, [0, -1, 12345678901234567890], [1.5, "1", None]),
    "number": ({"type": "number"}, [0, -1.5, 2.5e-10, 1e300], ["1", None, True]),
    "string": ({"type": "string"}, ["", "a\"b\\c\n\t\u0001", "é漢字😀", "/"], [1, None]),
    "type list": ({"type": ["string", "null"]}, ["x", None], [1, True]),
    "enum": ({"enum": ["a", 1, None, [1, 2], {"k": "v"}]}, ["a", 1, None, [1, 2], {"k": "v"}], ["b", 2, [1]]),
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
    "pattern + maxLength": ({"type": "string", "pattern": "^[a-zA-Z0-9_\\.]+$", "maxLength": 4}, ["a.b_", "x"],
                            ["abcde", "", "a b"]),
    "pattern + fixed width": ({"type": "string", "pattern": "^[0-9]{4}$", "minLength": 2, "maxLength": 8},
                              ["1234"], ["123"]),
    "date": ({"type": "string", "format": "date"}, ["2024-02-28", "1999-12-31"], ["2024-13-01", "2024-04-31"]),
    "time": ({"type": "string", "format": "time"}, ["12:30:00Z", "23:59:59.5+01:00"], ["24:00:00Z", "12:30"]),
    "date-time": ({"type": "string", "format": "date-time"}, ["2024-01-31T00:00:00Z"], ["2024-01-31 00:00:00Z"]),
    "email": ({"type": "string", "format": "email"}, ["a.b+c@example.co.uk"], ["a@", "@b.com", "a b@c.d"]),
    "uuid": ({"type": "string", "format": "uuid"}, ["123e4567-e89b-12d3-a456-426614174000"], ["123e4567"]),
    "uri": ({"type": "string", "format": "uri"}, ["https://x.org/a?b=c#d"], ["no scheme"]),
    "ipv4": ({"type": "string", "format": "ipv4"}, ["192.168.0.255"], ["256.1.1.1", "1.2.3"]),
    "integer range": ({"type": "integer", "minimum": -15, "maximum": 130}, [-15, -9, 0, 7, 99, 130],
                      [-16, 131, 1000, -100]),
    "integer exclusive": ({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}, [1, 9], [0, 10]),
    "integer draft4 exclusive": ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer", "minimum": 0, "exclusiveMinimum": True}, [1, 50], [0, -1]),
    "integer minimum only": ({"type": "integer", "minimum": 7}, [7, 10, 123456], [6, -7, 0]),
    "integer maximum only": ({"type": "integer", "maximum": -3}, [-3, -10, -123456], [-2, 0, 5]),
    "number range": ({"type": "number", "minimum": -1, "maximum": 2}, [-1, -0.5, 0, 1.25, 2, 2.0],
                     [-1.01, 2.01, 3]),
    "number exclusive": ({"type": "number", "exclusiveMinimum": 0}, [0.001, 5], [0, -0.5]),
    "array": ({"type": "array", "items": {"type": "integer"}}, [[], [1], [1, 2, 3]], [[1.5], ["a"], {}]),
    "array bounds": ({"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2},
                     [[True], [True, False]], [[], [True, True, True]]),
    "prefixItems": ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
                    [[], [1], [1, "a"]], [["a"], [1, "a", 2]]),
    "draft4 tuple": ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "array", "items": [{"type": "null"}], "additionalItems": {"type": "integer"},
                      "minItems": 2}, [[None, 1], [None, 1, 2]], [[None], [1, 1]]),
    "object": ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                "required": ["b"], "additionalProperties": False},
               [{"b": ""}, {"a": 1, "b": "x"}], [{}, {"a": 1}, {"b": 1}, {"b": "x", "c": 1}]),
    "object all optional": ({"type": "object", "properties": {"a": {"type": "null"}, "b": {"type": "null"},
                                                              "c": {"type": "null"}}},
                            [{}, {"a": None}, {"b": None}, {"a": None, "c": None}, {"a": None, "b": None, "c": None}],
                            [{"a": 1}]),
    "object required only": ({"type": "object", "required": ["x"]}, [{"x": 1}, {"x": {"y": [None]}}], [{}]),
    "generic object": ({"type": "object"}, [{}, {"a": 1, "b": [True, {"c": None}]}], [[], "x"]),
    "additionalProperties schema": ({"type": "object", "additionalProperties": {"type": "integer"},
                                     "minProperties": 1}, [{"a": 1}, {"a": 1, "b": 2}], [{}, {"a": "x"}]),
    "nested": ({"type": "object", "properties": {"p": {"type": "object", "properties": {
        "q": {"type": "array", "items": {"enum": ["x", "y"]}}}, "required": ["q"]}}, "required": ["p"]},
               [{"p": {"q": []}}, {"p": {"q": ["x", "y"]}}], [{"p": {}}, {"p": {"q": ["z"]}}]),
    "anyOf": ({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 1}]}, [1, "a", ""], ["ab", None]),
    "oneOf with siblings": ({"type": "object", "oneOf": [
        {"properties": {"kind": {"const": "a"}, "x": {"type": "integer"}}, "required": ["kind"],
         "additionalProperties": False},
        {"properties": {"kind": {"const": "b"}}, "required": ["kind"], "additionalProperties": False}]},
                            [{"kind": "a"}, {"kind": "a", "x": 1}, {"kind": "b"}], [{"kind": "b", "x": 1}]),
    "allOf": ({"allOf": [{"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}},
                          "required": ["a"]},
                         {"properties": {"a": {"maximum": 5}}}]}, [{"a": 0}, {"a": 5}], [{"a": 6}, {}]),
    "ref defs": ({"$defs": {"pos": {"type": "integer", "minimum": 1}}, "type": "array",
                  "items": {"$ref": "#/$defs/pos"}}, [[1, 2]], [[0]]),
    "ref definitions": ({"definitions": {"s": {"type": "string", "maxLength": 1}},
                         "properties": {"k": {"$ref": "#/definitions/s"}}, "required": ["k"]},
                        [{"k": "a"}], [{"k": "ab"}]),
    "recursive ref": ({"$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["v"], "additionalProperties": False}}, "$ref": "#/$defs/node"},
                      [{"v": 1}, {"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}]}]}], [{"kids": []}]),
    "ref with siblings": ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"type": "integer", "maximum": 9}},
                           "$ref": "#/$defs/a", "minimum": 3}, [3, 9], [2, 10]),
    "empty prefixItems": ({"type": "array", "prefixItems": [], "items": {"type": "null"}, "maxItems": 2},
                          [[], [None, None]], [[1], [None] * 3]),
    "boolean subschemas": ({"type": "object", "properties": {"a": True, "b": False}},
                           [{}, {"a": [1, "x"]}], [{"b": 1}]),
    "patternProperties listed": ({"type": "object", "properties": {"ab": {"type": "integer"}},
                                  "patternProperties": {"^a": {"minimum": 5}}, "required": ["ab", "ax"]},
                                 [{"ab": 5, "ax": 7}], [{"ab": 4, "ax": 7}, {"ab": 5, "ax": 1}]),
    "patternProperties generic": ({"type": "object", "patternProperties": {"^x-[a-z]+$": {"type": "integer"}},
                                   "additionalProperties": False}, [{}, {"x-ab": 1, "x-c": 2}],
                                  [{"y": 1}, {"x-ab": "s"}, {"x-": 1}]),
    "format within length limits": ({"type": "string", "format": "date", "minLength": 10, "maxLength": 12},
                                    ["2020-01-01"], ["2020-1-1"]),
    "annotations ignored": ({"title": "T", "description": "d", "examples": [1], "default": 1, "$comment": "c",
                             "x-custom": 3, "type": "integer"}, [1], ["1"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_feature_valid_and_invalid_texts(name):
    schema, valid, invalid = CASES[name]
    rx = schema_to_regex(schema)
    interegular.parse_pattern(rx)
    for value in valid:
        assert is_valid(value, one_of_as_any_of(schema)), f"bad test data {value!r}"
        assert re.fullmatch(rx, compact(value)), f"{name}: should accept {compact(value)}"
    for value in invalid:
        assert not re.fullmatch(rx, compact(value)), f"{name}: should reject {compact(value)}"


@pytest.mark.parametrize("name", list(CASES))
def test_feature_regex_is_sound(name):
    """Texts drawn from the regex itself parse as JSON and validate (oneOf read as anyOf)."""
    schema = CASES[name][0]
    rx = schema_to_regex(schema)

    @FAST
    @given(st.from_regex(rx, fullmatch=True))
    def check(text):
        value = json.loads(text)
        assert is_valid(value, one_of_as_any_of(schema)), text

    check()


def test_regexes_build_interegular_automata():
    for name in ("object", "integer range", "number range", "pattern + maxLength", "date-time", "recursive ref"):
        fsm = interegular.parse_pattern(schema_to_regex(CASES[name][0])).to_fsm()
        assert fsm.accepts(compact(CASES[name][1][0]))


def test_whitespace_option():
    schema = CASES["object"][0]
    rx = schema_to_regex(schema, whitespace=r"[ \n]?")
    interegular.parse_pattern(rx)
    assert re.fullmatch(rx, '{ "a" : 1 ,\n"b": "x" }')
    assert re.fullmatch(rx, '{"a":1,"b":"x"}')
    assert not re.fullmatch(rx, '{  "b":"x"}')
    assert not re.fullmatch(schema_to_regex(schema), '{ "b":"x"}')
    arr = schema_to_regex({"type": "array", "items": {"type": "integer"}}, whitespace=" ?")
    assert re.fullmatch(arr, "[ 1 , 2 ]") and re.fullmatch(arr, "[ ]")


def test_json_text_schema_and_true_schema():
    assert re.fullmatch(schema_to_regex('{"type": "integer"}'), "12")
    rx = schema_to_regex(True)
    for value in (None, 1, "x", [1, {"a": 2}], {"a": {"b": 1}}):  # generic values nest 2 levels
        assert re.fullmatch(rx, compact(value))


# --- completeness on generated values (compact, keys in schema order) -----------------------------------------

@FAST
@given(st.integers(-300, 300), st.integers(-300, 300), st.integers(-10**6, 10**6))
def test_integer_ranges_exact(lo, hi, x):
    lo, hi = min(lo, hi), max(lo, hi)
    rx = schema_to_regex({"type": "integer", "minimum": lo, "maximum": hi})
    for v in (x, lo, hi, lo - 1, hi + 1, (lo + hi) // 2):
        assert bool(re.fullmatch(rx, str(v))) == (lo <= v <= hi), (lo, hi, v)


@FAST
@given(st.one_of(st.none(), st.integers(-50, 50)), st.one_of(st.none(), st.integers(-50, 50)),
       st.booleans(), st.booleans(), st.integers(-60, 60), st.integers(0, 99), st.booleans())
def test_number_ranges_exact(lo, hi, lo_ex, hi_ex, whole, frac, with_frac):
    schema = {"type": "number"}
    if lo is not None:
        schema["exclusiveMinimum" if lo_ex else "minimum"] = lo
    if hi is not None:
        schema["exclusiveMaximum" if hi_ex else "maximum"] = hi
    try:
        rx = schema_to_regex(schema)
    except ValueError:  # empty range
        assert lo is not None and hi is not None and (lo > hi or (lo == hi and (lo_ex or hi_ex)))
        return
    text = f"{whole}.{frac:02d}" if with_frac else str(whole)
    value = float(text)
    assert bool(re.fullmatch(rx, text)) == is_valid(value, schema), (schema, text)


@FAST
@given(st.integers(0, 5), st.integers(0, 5), st.text(max_size=8), st.booleans())
def test_string_lengths_exact(lo, extra, s, ascii_only):
    # surrogate-pair escapes (ascii_only writing of astral characters) are outside the documented subset
    assume(not (ascii_only and any(ord(c) > 0xFFFF for c in s)))
    schema = {"type": "string", "minLength": lo, "maxLength": lo + extra}
    rx = schema_to_regex(schema)
    assert bool(re.fullmatch(rx, compact(s, ascii_only))) == is_valid(s, schema)


OBJ = {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0}, "name": {"type": "string"},
                                        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                                        "ok": {"type": "boolean"}},
       "required": ["name"], "additionalProperties": False}


@FAST
@given(st.fixed_dictionaries({"name": st.text(max_size=5)},
                             optional={"id": st.integers(0, 10**9), "tags": st.lists(st.text(max_size=3), max_size=3),
                                       "ok": st.booleans()}))
def test_object_completeness(value):
    ordered = {k: value[k] for k in OBJ["properties"] if k in value}
    assert re.fullmatch(schema_to_regex(OBJ), compact(ordered))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
    max_leaves=8,
)


@pytest.mark.parametrize("name", ["object", "anyOf", "array bounds", "generic object", "number range",
                                  "integer range", "string", "prefixItems", "additionalProperties schema"])
def test_random_values_sound(name):
    """Random JSON values: a regex match implies validity."""
    schema = CASES[name][0]
    rx = re.compile(schema_to_regex(schema))

    @FAST
    @given(JSON_VALUES)
    def check(value):
        if rx.fullmatch(compact(value)):
            assert is_valid(value, schema)

    check()


# --- soundness regressions: every accepted instance validates --------------------------------------------------


def accepts(schema, text: str) -> bool:
    """Whether the translation accepts ``text`` (False when the schema admits no value at all)."""
    try:
        rx = schema_to_regex(schema)
    except ValueError as exc:
        if "admits no JSON value" in str(exc):
            return False
        raise
    return re.fullmatch(rx, text) is not None


def assert_exact(schema, valid: list[str], invalid: list[str]) -> None:
    """``valid`` texts validate and are accepted; ``invalid`` ones do not validate and are rejected."""
    for text in valid:
        assert is_valid(json.loads(text), schema), f"bad test data {text}"
        assert accepts(schema, text), f"should accept {text}"
    for text in invalid:
        assert not is_valid(json.loads(text), schema), f"bad test data {text}"
        assert not accepts(schema, text), f"accepts invalid {text}"


@pytest.mark.parametrize("schema, valid, invalid", [
    ({"allOf": [{"const": 1}, {"const": True}]}, [], ["1", "true"]),
    ({"allOf": [{"const": 0}, {"const": False}]}, [], ["0", "false"]),
    ({"allOf": [{"const": 0}, {"enum": [False, "x"]}]}, [], ["0", "false"]),
    ({"allOf": [{"enum": [1, "a", None]}, {"enum": [True, "a", 0]}]}, ['"a"'], ["1", "true", "0", "null"]),
    ({"const": False, "enum": [0, False]}, ["false"], ["0"]),
    ({"allOf": [{"const": 1}, {"const": 1.0}]}, ["1"], ["true"]),
    ({"allOf": [{"enum": [[1], {"a": 0}]}, {"enum": [[True], {"a": False}]}]}, [], ["[1]", '{"a":0}', "[true]"]),
    ({"allOf": [{"enum": [[1.0], {"a": 0}]}, {"enum": [[1], {"a": 0.0}]}]}, ["[1.0]", '{"a":0}'], ["[true]"]),
    ({"type": "object", "properties": {"k": {"const": 1}}, "allOf": [{"properties": {"k": {"const": True}}}],
      "required": ["k"]}, [], ['{"k":1}', '{"k":true}']),
])
def test_const_and_enum_compare_json_values_with_types(schema, valid, invalid):
    """1 != true and 0 != false in JSON (Python's 1 == True must not leak in); 1 == 1.0."""
    assert_exact(schema, valid, invalid)


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys {keys}"
    return dict(pairs)


@pytest.mark.parametrize("schema, pointer", [
    ({"type": "object", "minProperties": 2}, "/"),
    ({"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 3}, "/"),
    ({"type": "object", "patternProperties": {"^a": {"type": "integer"}}, "minProperties": 2}, "/"),
    ({"type": "array", "items": {"type": "object", "minProperties": 2, "maxProperties": 4}}, "/items"),
])
def test_min_properties_over_free_keys_is_refused(schema, pointer):
    """{"a":1,"a":1} has one property once parsed: with free-form keys a regex cannot count distinct keys."""
    with pytest.raises(UnsupportedSchemaError) as info:
        schema_to_regex(schema)
    assert "'minProperties'" in str(info.value) and f"at {pointer}" in str(info.value)
    text = '[{"a":1,"a":1}]' if schema["type"] == "array" else '{"a":1,"a":1}'
    assert not is_valid(json.loads(text), schema)


COUNTED = [
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}},
      "minProperties": 2},
     ['{"a":1,"b":2}', '{"a":1,"c":2}', '{"b":1,"c":2}', '{"a":1,"b":2,"c":3}'], ["{}", '{"a":1}', '{"c":1}']),
    ({"type": "object", "properties": {k: {"type": "integer"} for k in "abcd"}, "required": ["b"], "minProperties": 2,
      "maxProperties": 3}, ['{"a":1,"b":2}', '{"b":1,"d":2}', '{"a":1,"b":2,"c":3}'],
     ['{"b":1}', '{"a":1,"b":2,"c":3,"d":4}', '{"a":1,"c":2}']),
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "null"}}, "maxProperties": 1},
     ["{}", '{"a":1}', '{"b":null}'],
     ['{"a":1,"b":2}']),
    ({"type": "object", "required": ["x", "y"], "properties": {"z": {"type": "null"}}, "maxProperties": 2,
      "additionalProperties": {"type": "integer"}}, ['{"x":1,"y":2}'], ['{"x":1}', '{"x":1,"y":2,"z":null}']),
]


@pytest.mark.parametrize("schema, valid, invalid", COUNTED)
def test_property_counts_over_listed_properties_are_exact(schema, valid, invalid):
    """Listed properties appear once each, in order, so minProperties/maxProperties are counted exactly (these
    were refused)."""
    ordered = [compact(json.loads(t)) for t in valid]
    assert_exact(schema, ordered, invalid)


@pytest.mark.parametrize("case", range(len(COUNTED)))
def test_property_counts_sound_and_without_duplicate_keys(case):
    schema = COUNTED[case][0]
    rx = schema_to_regex(schema, whitespace=" ?")

    @FAST
    @given(st.from_regex(rx, fullmatch=True))
    def check(text):
        assert is_valid(json.loads(text, object_pairs_hook=no_duplicate_keys), schema), text

    check()


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
    "draft-07 $id": (
        {"$schema": D7, "$id": "http://example.com/root.json", "properties": {"a": {"$ref": "#/definitions/A"}},
         "required": ["a"], "definitions": {
             "B": {"type": "string"},
             "A": {"$id": "http://example.com/a.json", "definitions": {"B": {"type": "integer"}},
                   "properties": {"p": {"$ref": "#/definitions/B"}}, "required": ["p"]}}},
        ['{"a":{"p":1}}'], ['{"a":{"p":"x"}}']),
    "draft-07 $id beside $ref is ignored": (
        {"$schema": D7, "definitions": {"B": {"type": "string"}},
         "properties": {"x": {"$id": "http://example.com/other.json", "$ref": "#/definitions/B"}}, "required": ["x"]},
        ['{"x":"s"}'], ['{"x":1}']),
    "draft-04 id": (
        {"$schema": D4, "id": "http://example.com/root.json", "properties": {"a": {"$ref": "#/definitions/A"}},
         "required": ["a"], "definitions": {
             "B": {"type": "string"},
             "A": {"id": "http://example.com/a.json", "definitions": {"B": {"type": "integer"}},
                   "properties": {"p": {"$ref": "#/definitions/B"}}, "required": ["p"]}}},
        ['{"a":{"p":1}}'], ['{"a":{"p":"x"}}']),
    "relative refs": (
        {"$id": "https://example.com/schemas/root.json", "type": "object",
         "properties": {"n": {"$ref": "item.json"}, "f": {"$ref": "sub/thing.json#/$defs/flag"},
                        "d": {"$ref": "dir/"}, "m": {"$ref": "https://example.com/schemas/item.json"}},
         "required": ["n", "f"],
         "$defs": {"item": {"$id": "item.json", "type": "integer", "minimum": 0},
                   "thing": {"$id": "sub/thing.json", "$defs": {"flag": {"type": "boolean"}}},
                   "dir": {"$id": "dir/", "type": "object", "properties": {"z": {"$ref": "x.json"}}, "required": ["z"],
                           "$defs": {"x": {"$id": "x.json", "type": "null"}}}}},
        ['{"n":1,"f":true}', '{"n":0,"f":false,"d":{"z":null},"m":3}'],
        ['{"n":-1,"f":true}', '{"n":1,"f":1}', '{"n":1,"f":true,"d":{"z":1}}']),
    "anchors": (
        {"$id": "https://example.com/root.json", "type": "array", "items": False,
         "prefixItems": [{"$ref": "#positive"}, {"$ref": "other.json"}, {"$ref": "other.json#positive"}],
         "$defs": {"pos": {"$anchor": "positive", "type": "integer", "minimum": 1},
                   "other": {"$id": "other.json", "$ref": "#positive",
                             "$defs": {"neg": {"$anchor": "positive", "type": "integer", "maximum": -1}}}}},
        ["[1,-1,-2]", "[]"], ["[0,-1,-1]", "[1,1,-1]", "[1,-1,1]"]),
    "draft-07 plain-name $id": (
        {"$schema": D7, "definitions": {"s": {"$id": "#short", "type": "string", "maxLength": 2}},
         "properties": {"k": {"$ref": "#short"}}, "required": ["k"]},
        ['{"k":"ab"}'], ['{"k":"abc"}']),
    "properties named $id and $ref": (
        {"$id": "https://example.com/root.json", "properties": {"$id": {"type": "integer"}, "$ref": {"type": "string"}},
         "required": ["$id", "$ref"]},
        ['{"$id":1,"$ref":"x"}'], ['{"$id":"x","$ref":"x"}']),
}


@pytest.mark.parametrize("name", list(BASE_URI_CASES))
def test_refs_resolve_against_the_base_uri_of_their_id(name):
    """$ref is resolved against the base URI set by the enclosing $id (id in draft 4), as validators do."""
    schema, valid, invalid = BASE_URI_CASES[name]
    assert_exact(schema, valid, invalid)


def test_one_subschema_object_under_two_base_uris():
    """A dict used twice in a Python-built schema resolves in each place against that place's base URI, and the
    caller's schema is left unchanged."""
    shared = {"$ref": "#/$defs/B"}
    schema = {"$id": "https://example.com/root.json", "type": "object",
              "properties": {"q": shared, "a": {"$ref": "a.json"}}, "required": ["q", "a"],
              "$defs": {"B": {"type": "string"},
                        "A": {"$id": "a.json", "$defs": {"B": {"type": "integer"}}, "type": "object",
                              "properties": {"p": shared}, "required": ["p"]}}}
    before = json.dumps(schema)
    assert_exact(schema, ['{"q":"s","a":{"p":1}}'], ['{"q":1,"a":{"p":1}}', '{"q":"s","a":{"p":"x"}}'])
    assert json.dumps(schema) == before


def test_refs_outside_the_document_are_refused():
    for ref in ("other.json#/a", "https://example.com/x.json", "#nowhere"):
        with pytest.raises(UnsupportedSchemaError, match="'\\$ref' at /properties/p"):
            schema_to_regex({"$id": "https://example.com/root.json", "properties": {"p": {"$ref": ref}}, "required": ["p"]})


# --- refusals and bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema, keyword, pointer", [
    ({"type": "object", "properties": {"foo": {"type": "object", "patternProperties": {"a": {}, "b": {}}}}},
     "patternProperties", "/properties/foo"),
    ({"type": "object", "properties": {"foo": {"propertyNames": {"maxLength": 2}}}}, "propertyNames", "/properties/foo"),
    ({"type": "object", "dependencies": {"a": ["b"]}}, "dependencies", "/"),
    ({"type": "string", "format": "date", "maxLength": 5}, "format", "/"),
    ({"not": {"type": "null"}}, "not", "/"),
    ({"type": "integer", "multipleOf": 3}, "multipleOf", "/"),
    ({"type": "array", "items": {"type": "string", "format": "hostname-ish"}}, "format", "/items"),
    ({"type": "string", "pattern": "^(?=a)b$"}, "pattern", "/"),
    ({"type": "string", "pattern": "^(a)\\1$"}, "pattern", "/"),
    ({"type": "string", "pattern": "(?i)abc"}, "pattern", "/"),
    ({"type": "string", "pattern": "a\\bc"}, "pattern", "/"),
    ({"type": "string", "pattern": "^a+b$", "maxLength": 4}, "pattern", "/"),
    ({"type": "number", "minimum": 0.5}, "minimum", "/"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems", "/"),
    ({"$ref": "other.json#/a"}, "$ref", "/"),
    ({"$defs": {"x": {"if": {}}}, "$ref": "#/$defs/x"}, "if", "/$defs/x"),
])
def test_unsupported_keywords_are_named(schema, keyword, pointer):
    with pytest.raises(UnsupportedSchemaError) as info:
        schema_to_regex(schema)
    message = str(info.value)
    assert f"'{keyword}'" in message and f"at {pointer}" in message


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", "3", False, 17, None,
                                 {"type": "strange"}, {"$ref": "#/missing"}, {"type": "integer", "minimum": 5,
                                                                                "maximum": 1},
                                 {"type": "string", "maxLength": -1}])
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        schema_to_regex(bad)


def test_bad_arguments():
    with pytest.raises(ValueError):
        schema_to_regex({}, max_depth=-1)
    with pytest.raises(ValueError):
        schema_to_regex({}, whitespace=3)  # type: ignore[arg-type]


def test_unsatisfiable_recursion_raises():
    with pytest.raises(ValueError, match="no JSON value"):
        schema_to_regex({"$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/a"}, "minItems": 1}},
                         "$ref": "#/$defs/a"})


def test_max_depth_bounds_recursion():
    schema = CASES["recursive ref"][0]
    deep = {"v": 1, "kids": [{"v": 2, "kids": [{"v": 3, "kids": [{"v": 4}]}]}]}
    assert not re.fullmatch(schema_to_regex(schema, max_depth=2), compact(deep))
    assert re.fullmatch(schema_to_regex(schema, max_depth=4), compact(deep))


# --- JSONSchemaBench sample ----------------------------------------------------------------------------------

# What each vendored schema that does not compile is refused for: the keyword named (None: admits no value).
BENCH_REFUSED = {
    "Github_easy/o17683.json": None, "Github_easy/o25191.json": "maximum", "Github_easy/o39448.json": "format",
    "Github_easy/o46895.json": "extends", "Github_easy/o4834.json": "if", "Github_easy/o67010.json": "patternProperties",
    "Github_easy/o82725.json": "pattern", "Github_easy/o9939.json": "format", "Github_trivial/o23153.json": "not",
    "Github_trivial/o25195.json": "multipleOf", "Github_trivial/o78404.json": "dependencies",
    "Github_trivial/o89151.json": "minimum",
}
BENCH_FILES = sorted(p.relative_to(BENCH).as_posix() for p in BENCH.glob("*/*.json"))


def test_bench_sample_is_vendored():
    assert len(BENCH_FILES) == 39 and set(BENCH_REFUSED) <= set(BENCH_FILES)


@pytest.mark.parametrize("name", BENCH_FILES)
def test_bench_sample(name):
    """Each schema compiles, to a regex interegular parses whose drawn texts validate (oneOf read as anyOf), or is
    refused with the keyword and its pointer named."""
    text = (BENCH / name).read_text()
    if name in BENCH_REFUSED:
        keyword = BENCH_REFUSED[name]
        with pytest.raises(UnsupportedSchemaError if keyword else ValueError) as info:
            schema_to_regex(text)
        assert (f"'{keyword}' at /" if keyword else "admits no JSON value") in str(info.value)
        return
    rx = schema_to_regex(text)
    interegular.parse_pattern(rx)
    check_schema = validator(one_of_as_any_of(json.loads(text)))

    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.from_regex(rx, fullmatch=True))
    def check(drawn):
        assert check_schema.is_valid(json.loads(drawn)), drawn

    check()
