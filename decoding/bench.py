"""The benchmark runner behind ``decoding bench SUITE``.

A suite is a module of ``decoding.benchmarks`` (registered in :data:`SUITES`) with a ``run(config) -> Report``
function. The runner runs it, prints its table, and writes ``DIR/SUITE.json`` (the rows, the suite's settings and
the machine) and ``DIR/SUITE.png`` (the suite's plot; skipped with a note when matplotlib, from the ``bench``
extra, is missing).

Timing follows DESIGN.md: medians over repeats, ratios as the figures. On shared machines, suites time their
cases round-robin (:func:`time_interleaved`) so a slow spell of the machine hits every case alike.

Example:
    >>> from decoding.bench import BenchConfig, run_suite
    >>> report = run_suite("samplers", BenchConfig(quick=True), "bench-results")   # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
import transformers

import decoding as dc
from decoding.progress import progress_bar

#: Suite name -> module holding ``run(config: BenchConfig) -> Report``. Imported only when the suite runs.
SUITES: dict[str, str] = {
    "samplers": "decoding.benchmarks.samplers",
    "entropy": "decoding.benchmarks.entropy",
    "constraints": "decoding.benchmarks.constraints",
    "json-conformance": "decoding.benchmarks.json_conformance",
    "awrs": "decoding.benchmarks.awrs",
    "smc": "decoding.benchmarks.smc",
    "speculative": "decoding.benchmarks.speculative",
    "constrained-speculative": "decoding.benchmarks.constrained_speculative",
    "sir": "decoding.benchmarks.sir",
    "batching": "decoding.benchmarks.batching",
}

DEFAULT_OUT = "bench-results"
_BENCH_HINT = "pip install 'decoding[bench]'"


class BenchSetupError(ValueError):
    """The suite cannot start (a model that does not load, a missing extra): a user error, not a failed run."""


@dataclass
class BenchConfig:
    """What ``decoding bench`` passes to a suite."""

    model: str | None = None  # checkpoint directory or hub id; None: the embedded default model
    repeats: int | None = None  # timed repetitions per case; None: the suite's default
    quick: bool = False  # few repeats: a smoke run (tests), not a measurement
    device: str | None = None  # None: cuda when available, else cpu
    progress: bool = True  # tqdm bars on stderr


@dataclass
class Report:
    """What a suite returns.

    Attributes:
        suite: the suite's name.
        description: one paragraph: what is measured against what.
        settings: model, prompts, seeds, sample sizes, repeats... (written to the JSON as they are).
        rows: the results, one flat dict per measured case (written to the JSON).
        headers, table: the printed table (cells already formatted).
        plot: draws the results on a matplotlib ``Figure``; None for no PNG.
    """

    suite: str
    description: str
    settings: dict[str, Any]
    rows: list[dict[str, Any]]
    headers: list[str]
    table: list[list[str]]
    plot: Callable[[Any], None] | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "description": self.description, "settings": self.settings,
                "environment": self.environment, "rows": self.rows}


def load_suite(name: str):
    """The suite's module."""
    if name not in SUITES:
        raise BenchSetupError(f"unknown suite {name!r}; suites: {', '.join(sorted(SUITES))}")
    return importlib.import_module(SUITES[name])


def load_model(config: BenchConfig):
    """``dc.load(config.model)``, with load failures turned into :class:`BenchSetupError`."""
    try:
        return dc.load(config.model, device=config.device, progress=config.progress)
    except (ValueError, ImportError, OSError) as err:
        raise BenchSetupError(str(err)) from err


def run_suite(name: str, config: BenchConfig | None = None, out_dir: str | os.PathLike | None = DEFAULT_OUT,
              stream: TextIO | None = None) -> Report:
    """Run suite ``name``, print its table to ``stream`` (stdout) and write ``SUITE.json`` and ``SUITE.png``
    under ``out_dir`` (None: write nothing)."""
    config = config if config is not None else BenchConfig()
    stream = stream if stream is not None else sys.stdout
    module = load_suite(name)
    start = time.perf_counter()
    report = module.run(config)
    report.environment = {**environment(), "wall_time_s": round(time.perf_counter() - start, 1),
                          "quick": config.quick}
    print(format_table(report.headers, report.table), file=stream)
    stream.flush()
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path = write_json(out / f"{name}.json", report.to_json())
        written = [json_path]
        if report.plot is not None and write_png(out / f"{name}.png", report.plot):
            written.append(out / f"{name}.png")
        print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return report


# ---------------------------------------------------------------------------------------------------------------
# timing


def time_median(fn: Callable[[], Any], repeats: int, warmup: int = 1, sync: Callable[[], Any] | None = None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls, after ``warmup`` untimed calls.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called after each call, inside the timing, so asynchronous
    device work is counted.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_interleaved(cases: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                     sync: Callable[[], Any] | None = None, desc: str = "cases",
                     progress: bool = True) -> dict[str, float]:
    """Median wall time in seconds of each case, timed round-robin: ``warmup`` untimed rounds, then ``repeats``
    timed rounds, each calling every case once. A progress bar counts the cases."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: dict[str, list[float]] = {name: [] for name in cases}
    rounds = warmup + repeats
    with progress_bar(total=rounds * len(cases), desc=desc, disable=not progress) as bar:
        for r in range(rounds):
            for name, fn in cases.items():
                bar.set_postfix_str(f"{name} ({'warm-up' if r < warmup else f'repeat {r - warmup + 1}/{repeats}'})",
                                    refresh=False)
                start = time.perf_counter()
                fn()
                if sync is not None:
                    sync()
                elapsed = time.perf_counter() - start
                if r >= warmup:
                    times[name].append(elapsed)
                bar.update()
    return {name: statistics.median(t) for name, t in times.items()}


# ---------------------------------------------------------------------------------------------------------------
# output


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def write_json(path: str | os.PathLike, data: Any) -> Path:
    path = Path(path)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def write_png(path: str | os.PathLike, plot: Callable[[Any], None]) -> bool:
    """Draw ``plot(figure)`` and save it as a PNG; False (with a note on stderr) when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend, no display needed
    except ImportError:
        print(f"note: matplotlib is not installed, so no plot was written ({_BENCH_HINT})", file=sys.stderr)
        return False
    figure = Figure(figsize=(9, 5), layout="constrained")
    plot(figure)
    figure.savefig(path, dpi=120)
    return True


def environment() -> dict[str, Any]:
    """The machine and versions a result was measured with."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "decoding": dc.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
