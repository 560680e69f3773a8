"""Suite ``json-conformance``: the official JSON-Schema-Test-Suite (draft 7, draft 2020-12) through decoding's
``JsonSchema`` and through llguidance, per keyword file.

For every case of the suite, each engine compiles the schema (a refusal is recorded, never an error) and then:

- sound: every instance marked invalid is rejected, written compactly in its own key order and in the order the
  constraint emits (``JsonSchema.dumps``); for decoding also under ``key_order="any"``;
- complete: every instance marked valid, of a compiled schema, is accepted as the constraint writes it (compact,
  integers without a fraction, named keys in the schema's order; for decoding also in its own key order under
  ``key_order="any"``).

Membership is exact: decoding's ``JsonSchema.matches``, and llguidance's ``LLMatcher`` over a 256-token byte
tokenizer fed the text's bytes (accepted when no byte errs and the matcher accepts at the end). The draft-7 files
carry no ``$schema``; draft 7's is added, so that ``$ref`` ignores its siblings as draft 7 says.

Run: ``python -m decoding.benchmarks.json_conformance`` (llguidance is skipped when absent), or
:func:`conformance` for the rows.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decoding.bench import BenchConfig, Report, format_table

DESCRIPTION = ("JSON-Schema-Test-Suite (draft7, draft2020-12) per keyword file: cases compiled, invalid instances "
               "rejected (sound), valid instances accepted where compiled (complete); decoding beside llguidance.")
DRAFTS = {"draft7": "http://json-schema.org/draft-07/schema#",
          "draft2020-12": "https://json-schema.org/draft/2020-12/schema"}
_HERE = Path(__file__).resolve().parent
SUITE_DIRS = (_HERE.parent / "tests" / "data" / "json-schema-test-suite",
              _HERE.parents[1] / "shared" / "data" / "json-schema-test-suite")


@dataclass
class Case:
    """One schema of the suite with its instances ``(description, data, valid)``."""

    draft: str
    file: str
    description: str
    schema: Any
    tests: list[tuple[str, Any, bool]]


@dataclass
class Outcome:
    """One engine on one case: refusal (None when compiled), and per instance whether the engine was right."""

    refusal: str | None
    sound: list[bool]  # per invalid instance: rejected
    complete: list[bool]  # per valid instance: accepted (empty when refused)


def suite_dir() -> Path:
    for path in SUITE_DIRS:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"JSON-Schema-Test-Suite not found in {', '.join(map(str, SUITE_DIRS))}")


def load_cases(root: Path | None = None, drafts: Iterable[str] = tuple(DRAFTS)) -> list[Case]:
    """Every case of the suite's files under ``root`` (default: the vendored copy), draft 7's ``$schema`` added."""
    root = root or suite_dir()
    cases = []
    for draft in drafts:
        for path in sorted((root / draft).glob("*.json")):
            for raw in json.loads(path.read_text(encoding="utf-8")):
                schema = raw["schema"]
                if isinstance(schema, dict) and "$schema" not in schema:
                    schema = {"$schema": DRAFTS[draft], **schema}
                tests = [(t["description"], t["data"], t["valid"]) for t in raw["tests"]]
                cases.append(Case(draft, path.stem, raw["description"], schema, tests))
    return cases


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def run_decoding(case: Case) -> Outcome:
    """decoding's ``JsonSchema`` (schema order, and ``key_order="any"``) on one case."""
    from decoding.constraints.json_schema import JsonSchema

    try:
        ordered = JsonSchema(case.schema)
        unordered = JsonSchema(case.schema, key_order="any")
    except ValueError as exc:  # UnsupportedSchemaError is a ValueError; so is "admits no value"
        if "admits no JSON value" not in str(exc):
            return Outcome(str(exc), [True] * sum(not v for _, _, v in case.tests), [])
        return Outcome(None, [True] * sum(not v for _, _, v in case.tests), [False] * sum(v for _, _, v in case.tests))
    sound, complete = [], []
    for _, data, valid in case.tests:
        if valid:
            complete.append(ordered.matches(ordered.dumps(data)) and unordered.matches(unordered.dumps(data)))
        else:
            texts = {compact(data), ordered.dumps(data), unordered.dumps(data)}
            sound.append(not any(ordered.matches(t) or unordered.matches(t) for t in texts))
    return Outcome(None, sound, complete)


class _LLGuidance:
    """llguidance's JSON Schema compiler, with membership over a byte-level tokenizer."""

    def __init__(self):
        import llguidance

        class Bytes:  # token i is byte i; 256 is EOS
            eos_token_id, bos_token_id, special_token_ids = 256, None, [256]
            tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]

            def __call__(self, text):
                return list(text if isinstance(text, bytes) else text.encode("utf-8"))

        self.llg = llguidance
        self.tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(Bytes()))

    def compile(self, schema: Any) -> str:
        grammar = self.llg.LLMatcher.grammar_from_json_schema(json.dumps(schema))
        error = self.llg.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error:
            raise ValueError(error)
        return grammar

    def accepts(self, grammar: str, text: str) -> bool:
        matcher = self.llg.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            return False
        matcher.consume_tokens(list(text.encode("utf-8")))
        return not matcher.is_error() and matcher.is_accepting()

    def run(self, case: Case, order: Any = None) -> Outcome:
        """``order``: decoding's constraint for the case, whose ``dumps`` gives the schema-order writing."""
        try:
            grammar = self.compile(case.schema)
        except (ValueError, RuntimeError) as exc:
            return Outcome(str(exc) or "refused", [True] * sum(not v for _, _, v in case.tests), [])
        sound, complete = [], []
        for _, data, valid in case.tests:
            texts = {compact(data)} | ({order.dumps(data)} if order is not None else set())
            hits = [self.accepts(grammar, t) for t in texts]
            (complete if valid else sound).append(any(hits) if valid else not any(hits))
        return Outcome(None, sound, complete)


def conformance(cases: list[Case] | None = None, engines: Iterable[str] = ("decoding", "llguidance")) -> list[dict]:
    """Per (draft, file, engine): cases, compiled, invalid instances and those rejected (over all cases), valid
    instances of compiled cases and those accepted; plus the unsound instances, named."""
    cases = load_cases() if cases is None else cases
    engines = [e for e in engines if e == "decoding" or importlib.util.find_spec(e) is not None]
    peer = _LLGuidance() if "llguidance" in engines else None
    rows: dict[tuple, dict] = {}
    for case in cases:
        ours = run_decoding(case)
        outcomes = {"decoding": ours}
        if peer is not None:
            order = None
            if ours.refusal is None:
                from decoding.constraints.json_schema import JsonSchema
                try:
                    order = JsonSchema(case.schema)
                except ValueError:
                    order = None
            outcomes["llguidance"] = peer.run(case, order)
        for engine, outcome in outcomes.items():
            if engine not in engines:
                continue
            row = rows.setdefault((case.draft, case.file, engine), {
                "draft": case.draft, "file": case.file, "engine": engine, "cases": 0, "compiled": 0,
                "invalid": 0, "sound": 0, "valid": 0, "complete": 0, "unsound": []})
            row["cases"] += 1
            row["compiled"] += outcome.refusal is None
            row["invalid"] += len(outcome.sound)
            row["sound"] += sum(outcome.sound)
            row["valid"] += len(outcome.complete)
            row["complete"] += sum(outcome.complete)
            invalid = [d for d, _, v in case.tests if not v]
            row["unsound"] += [f"{case.description} / {d}" for d, ok in zip(invalid, outcome.sound) if not ok]
    return list(rows.values())


def _table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    by_file: dict[tuple, dict] = {}
    for r in rows:
        by_file.setdefault((r["draft"], r["file"]), {})[r["engine"]] = r
    headers = ["draft", "file", "cases"] + [f"{e} {x}" for e in engines for x in ("compiled", "sound", "complete")]
    table = []
    for (draft, file), per in by_file.items():
        line = [draft, file, str(next(iter(per.values()))["cases"])]
        for e in engines:
            r = per.get(e)
            line += ["-"] * 3 if r is None else [f"{r['compiled']}", f"{r['sound']}/{r['invalid']}",
                                                 f"{r['complete']}/{r['valid']}"]
        table.append(line)
    totals = ["all", "", str(sum(r["cases"] for r in rows if r["engine"] == engines[0]))]
    for e in engines:
        mine = [r for r in rows if r["engine"] == e]
        totals += [str(sum(r["compiled"] for r in mine)), f"{sum(r['sound'] for r in mine)}/"
                   f"{sum(r['invalid'] for r in mine)}", f"{sum(r['complete'] for r in mine)}/"
                   f"{sum(r['valid'] for r in mine)}"]
    return headers, table + [totals]


def run(config: BenchConfig) -> Report:
    cases = load_cases()
    if config.quick:
        cases = cases[::10]
    rows = conformance(cases)
    headers, table = _table(rows)
    settings = {"suite": str(suite_dir()), "drafts": list(DRAFTS), "cases": len(cases)}
    return Report("json-conformance", DESCRIPTION, settings, rows, headers, table)


def _main(argv: list[str]) -> None:
    rows = conformance(engines=argv or ("decoding", "llguidance"))
    headers, table = _table(rows)
    print(format_table(headers, table))
    for r in rows:
        for name in r["unsound"]:
            print(f"UNSOUND {r['engine']} {r['draft']}/{r['file']}: {name}")


if __name__ == "__main__":
    _main(sys.argv[1:])
