"""The layers of the library, read from the source: each layer imports only the layers below it.

kernels < constraints < token samplers (samplers/*.py) < the decode loop (decoding/decode.py) < sequence samplers
(samplers/sequence/) < generate, hf, the CLI and the tools. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (``from x import y`` counts as x and x.y), at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def library(folder: str, recursive: bool = False) -> list[Path]:
    files = (ROOT / folder).rglob("*.py") if recursive else (ROOT / folder).glob("*.py")
    return sorted(files)


def reaches(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports_of(path) if any(m == f or m.startswith(f + ".") for f in forbidden))


LOOP_AND_ABOVE = ("decoding.decode", "decoding.generate", "decoding.hf", "decoding.samplers.sequence",
                  "decoding.cli", "decoding.bench")
TOOLS = ("decoding.cli", "decoding.bench", "decoding.benchmarks")


@pytest.mark.parametrize("path", library("samplers"), ids=lambda p: p.name)
def test_token_samplers_never_import_the_loop_or_what_sits_on_it(path):
    assert reaches(path, LOOP_AND_ABOVE) == []


@pytest.mark.parametrize("path", library("kernels") + library("constraints"), ids=lambda p: p.name)
def test_kernels_and_constraints_import_no_sampler(path):
    assert reaches(path, ("decoding.samplers",) + LOOP_AND_ABOVE) == []


def test_the_loop_imports_no_sequence_sampler():
    for name in ("decode.py", "generate.py", "model.py"):
        assert reaches(ROOT / "decoding" / name, ("decoding.samplers.sequence",)) == [], name


@pytest.mark.parametrize("path", [p for p in library("decoding") if p.name not in ("cli.py", "bench.py", "__main__.py")]
                         + library("samplers", recursive=True) + library("constraints") + library("kernels"),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_library_modules_import_no_tool(path):
    """The CLI and the bench runner are tools on top of the library, never its dependencies."""
    assert reaches(path, TOOLS) == []


def test_sequence_samplers_live_in_their_own_package():
    token_level = {p.stem for p in library("samplers")}
    assert not token_level & {"smc", "sir", "speculative", "dsir"}
    assert {"smc", "sir", "speculative"} <= {p.stem for p in (ROOT / "samplers" / "sequence").iterdir()}


def test_names_renamed_in_0_2_still_work_with_a_deprecation_warning():
    import decoding as dc
    import decoding.decode
    import decoding.samplers
    from decoding.samplers.sequence.speculative.rrs import RRS

    cases = [(lambda: decoding.samplers.Chain, dc.SamplerChain), (lambda: decoding.samplers.select, dc.select),
             (lambda: decoding.decode.DEAD, dc.End.DEAD_END), (lambda: dc.MultiDraft(2, 2).law, "iid"),
             (lambda: RRS().drafts, "iid")]
    for old, new in cases:
        with pytest.warns(DeprecationWarning):
            assert old() == new
