"""The ``constraints`` benchmark suite: a small end-to-end run (ours only, so it needs no peer), the engine adapters
on the Llama 3 vocabulary (each peer when installed), and how a compile is classified (refused, timeout)."""

from __future__ import annotations

import io
import json

import pytest

from decoding.bench import BenchConfig, run_suite
from decoding.benchmarks import constraints as suite
from conftest import tiny_gemma

ARITHMETIC = next(g for g in suite.GRAMMARS if g[0] == "arithmetic")
SCHEMA = json.dumps({"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                      "age": {"type": "integer", "minimum": 0}},
                     "required": ["name", "age"], "additionalProperties": False})


@pytest.fixture(scope="module")
def gemma_checkpoint(tmp_path_factory) -> str:
    """A tiny random Gemma 3 with the real Gemma 3 tokenizer: it writes the paths in a fraction of a second."""
    path = tmp_path_factory.mktemp("tiny-gemma")
    tokenizer = suite._tokenizer("gemma3")
    tiny_gemma(tokenizer, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_quick_run_reports_coverage_paths_and_grammar_rows(gemma_checkpoint, tmp_path, monkeypatch):
    """Worker processes, path generation, every section of the report and the JSON/PNG files, in one small run."""
    monkeypatch.setattr(suite, "ENGINES", (suite._Ours,))
    monkeypatch.setattr(suite, "SHARED_DATA", tmp_path / "no-shared")  # the repository's own schemas only
    monkeypatch.setattr(suite, "GRAMMARS", (ARITHMETIC,))
    monkeypatch.setattr(suite, "QUICK_PER_SPLIT", 1)
    monkeypatch.setattr(suite, "QUICK_PATH_SCHEMAS", 1)
    monkeypatch.setattr(suite, "QUICK_PATH_TOKENS", 6)
    config = BenchConfig(model=gemma_checkpoint, device="cpu", quick=True, progress=False)
    report = run_suite("constraints", config, tmp_path, stream=io.StringIO())
    rows = report.rows
    coverage = {r["case"]: r for r in rows if r["section"] == "coverage"}
    present = [split for split in suite.SPLITS if (suite.TEST_DATA / split).is_dir()]
    assert set(coverage) >= {"all", "common", *present} and coverage["all"]["schemas"] == len(present)
    assert all(r["engine"] == "decoding" for r in rows)
    walks = [r for r in rows if r["section"] in ("path", "grammar")]
    assert [r["case"] for r in walks if r["section"] == "grammar"] == ["arithmetic"]
    assert len([r for r in walks if r["section"] == "path"]) == 1
    for r in walks:  # ours wrote the path, so ours accepts all of it, and each state was masked once
        assert r["status"] == "ok" and r["rejected"] is None and 0 < r["accepted"] == r["path_tokens"] <= 6
    pooled = next(r for r in rows if r["section"] == "paths")
    assert pooled["states"] == pooled["accepted"] and pooled["mask_us_p50"] > 0
    assert report.settings["preparation_s"]["gemma3/decoding"] > 0 and "code_at_end" in report.settings
    saved = json.loads((tmp_path / "constraints.json").read_text())
    assert saved["settings"]["path_schemas"] == report.settings["path_schemas"]
    assert (tmp_path / "constraints.png").exists()


@pytest.fixture(scope="module")
def engines(llama_tokenizer):
    """Every installed engine, prepared on the Llama 3 vocabulary."""
    return [e(llama_tokenizer) for e in suite.ENGINES if e.available()]


def test_every_installed_engine_compiles_masks_and_walks_the_same_path(engines, llama_tokenizer):
    tokens = llama_tokenizer.encode('{"name":"Ada","age":36}', add_special_tokens=False)
    grammar = suite.Case("arithmetic", (suite.ROOT / "grammars" / ARITHMETIC[1]).read_text(), "lark")
    arithmetic = llama_tokenizer.encode("(1+2)*-3", add_special_tokens=False)
    for engine in engines:
        for case, path in ((suite.Case("person", SCHEMA), tokens), (grammar, arithmetic)):
            result = suite._walk(engine, case, path)
            assert result["status"] == "ok" and result["rejected"] is None, (engine.name, result)
            assert result["accepted"] == len(result["mask_s"]) == len(path)
        wrong = suite._walk(engine, suite.Case("person", SCHEMA), tokens[:2] + tokens[:2])  # '{"' '{"'
        assert wrong["rejected"] == {"index": 2, "token": tokens[0]}, engine.name


def test_refusals_and_timeouts_are_classified(engines, monkeypatch):
    ours = next(e for e in engines if e.name == "decoding")
    for engine in engines:
        result, matcher = suite._first(engine, suite.Case("broken", '{"type": "object", '))
        assert (result["status"], matcher) == ("refused", None), engine.name
    monkeypatch.setattr(suite, "LIMIT_S", 1e-6)
    result, matcher = suite._first(ours, suite.Case("person", SCHEMA))
    assert result["status"] == "timeout" and matcher is None
