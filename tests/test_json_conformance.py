"""The official JSON-Schema-Test-Suite (draft 7, draft 2020-12; vendored in tests/data, see its README.md) through
``JsonSchema``, in both directions, file by file.

Sound: every instance marked invalid is rejected, written compactly in its own key order and in the order the
constraint emits, under ``key_order="schema"`` and ``"any"``: no exception. Complete: every instance marked valid,
of a schema that compiles, is accepted as the constraint writes it (``JsonSchema.dumps``: compact, integers without
a fraction, named keys in schema order, or under ``key_order="any"`` in its own order); the exceptions are the
documented decisions listed in ``INCOMPLETE``.
A schema that does not compile is refused with the keyword and its pointer named.
"""

from __future__ import annotations

import pytest

from decoding.benchmarks.json_conformance import DRAFTS, load_cases, run_decoding, suite_dir

CASES = load_cases(suite_dir())
FILES = sorted({(c.draft, c.file) for c in CASES})

# Valid instances not accepted, by decision (see decoding.constraints.json_schema): (file, case, instance) -> why.
FORMATS = "formats are enforced (a subset of valid strings), though 2020-12 makes them annotations"
INCOMPLETE = {
    **{("format", f"{name} format", f"invalid {name} string is only an annotation by default"): FORMATS
       for name in ("email", "idn-email", "ipv4", "ipv6", "idn-hostname", "hostname", "date", "date-time", "time",
                    "json-pointer", "relative-json-pointer", "iri", "iri-reference", "uri", "uri-reference",
                    "uuid", "duration")},
    ("dependencies", "dependencies with escaped characters", "valid object 2"):
        "minProperties counts one free key at most (free keys are not kept distinct)",
    ("multipleOf", "by small number", "0.0075 is multiple of 0.0001"):
        "a divisor that is not a binary float keeps its integer multiples (Python validators divide floats)",
    ("vocabulary", "schema that uses custom metaschema with with no validation vocabulary",
     "no validation: invalid number, but it still validates"): "custom vocabularies are not read",
}


def test_suite_is_vendored():
    assert set(DRAFTS) == {c.draft for c in CASES} and len(CASES) == 640
    assert (suite_dir() / "LICENSE").is_file()


@pytest.mark.parametrize("draft, file", FILES)
def test_conformance(draft, file):
    refused, incomplete = [], []
    for case in (c for c in CASES if (c.draft, c.file) == (draft, file)):
        outcome = run_decoding(case)
        invalid = [d for d, _, valid in case.tests if not valid]
        unsound = [d for d, ok in zip(invalid, outcome.sound) if not ok]
        assert not unsound, f"{case.description}: accepts invalid instances {unsound}"
        if outcome.refusal is not None:
            assert "unsupported keyword '" in outcome.refusal and "' at /" in outcome.refusal, outcome.refusal
            refused.append(case.description)
            continue
        valid = [d for d, _, v in case.tests if v]
        incomplete += [(case.description, d) for d, ok in zip(valid, outcome.complete)
                       if not ok and (file, case.description, d) not in INCOMPLETE]
    assert not incomplete, f"valid instances rejected: {incomplete}"
