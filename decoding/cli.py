"""The ``decoding`` command line: ``decoding generate``, ``decoding model``, ``decoding bench SUITE`` and
``decoding select`` (DSIR corpus selection). ``--sampler`` takes a spec of :mod:`decoding.sampler_spec`.

Examples::

    decoding generate "The capital of France is" --sampler "temperature=0.7|top_p=0.9" --max-new-tokens 32
    decoding generate "def fib(n):" --sampler greedy --stop '\\n\\n'
    decoding model                      # prepare the default model (Gemma 3 270M) and print its directory
    decoding bench samplers --repeats 5 # writes bench-results/samplers.json and .png
    decoding select pile.jsonl --target wiki.jsonl -k 100000 --out selected.jsonl
    decoding select pile/*.jsonl --target wiki.jsonl -k 100000 --engine ray --out selected.jsonl
"""

from __future__ import annotations

import argparse
import codecs
import json
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TextIO

import numpy as np

import decoding as dc
from decoding import dsir
from decoding.bench import DEFAULT_OUT, SUITES, BenchConfig, BenchSetupError, run_suite
from decoding.default_model import prepare
from decoding.model import is_model_name
from decoding.progress import progress_bar
from decoding.sampler_spec import known_samplers, parse_sampler
from decoding.samplers.base import SamplerChain

DEFAULT_SAMPLER = "categorical"


# ---------------------------------------------------------------------------------------------------------------
# argument types: checked while parsing, before any model work


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected an integer >= 1, got 0")
    return value


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _stop_string(text: str) -> str:
    """A stop string, with the escapes \\n, \\t, \\r and \\\\ read as the characters they name."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    if not out:
        raise argparse.ArgumentTypeError("stop strings must be non-empty")
    return "".join(out)


def _checkpoint(text: str) -> str:
    """--model: a checkpoint directory or a hub id ``org/model``, the names ``dc.load`` accepts; checked here so that
    the message says how the command line asks for the default model."""
    if is_model_name(text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is neither a checkpoint directory nor a hub id of the form "
                                     "'org/model' (leave out --model for the default model)")


def _regex(text: str):
    try:
        return dc.Regex(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _json_schema_file(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot read {path!r}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"{path!r} is not JSON: {err}") from None


def _grammar_file(path: str):
    """A grammar file: ``.gbnf`` is llama.cpp's GBNF, anything else Lark's syntax."""
    try:
        return dc.Grammar.from_file(path)
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot read {path!r}: {err.strerror}") from None
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{path!r}: {err}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decoding",
        description="Exact constrained, entropy-controlled and speculative decoding for Hugging Face causal LMs.",
    )
    parser.add_argument("--version", action="version", version=f"decoding {dc.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = commands.add_parser(
        "generate", help="generate text from a prompt, streamed as it is produced",
        description="Generate a continuation of PROMPT and stream it to stdout; a one-line summary (tokens, "
                    "tokens/s, forwards, why it ended, model log-probability) goes to stderr.",
    )
    gen.add_argument("prompt", help="the prompt text ('-' reads it from stdin, without its final newline)")
    gen.add_argument("--model", metavar="PATH", type=_checkpoint, default=None,
                     help="HF checkpoint directory or hub id (default: the embedded Gemma 3 270M)")
    gen.add_argument("--sampler", metavar="SPEC", type=parse_sampler, default=DEFAULT_SAMPLER,
                     help="stages separated by '|', applied left to right, e.g. 'temperature=0.8|top_k=50|top_p=0.9'"
                          f"; known: {known_samplers()} (default: {DEFAULT_SAMPLER})")
    gen.add_argument("--max-new-tokens", metavar="N", type=_non_negative_int, default=64,
                     help="generated tokens at most (default: 64)")
    gen.add_argument("--seed", metavar="S", type=int, default=0, help="random seed (default: 0)")
    gen.add_argument("--stop", metavar="STR", type=_stop_string, nargs="+", action="extend", default=None,
                     help="stop strings: the text ends before the first one (\\n, \\t, \\r, \\\\ are read as escapes)")
    gen.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    constrained = gen.add_argument_group(
        "constraints", "constrain the output to a language; --sampler stages then transform the distribution first")
    language = constrained.add_mutually_exclusive_group()
    language.add_argument("--regex", metavar="R", type=_regex, default=None,
                          help="the whole output must match R (re.fullmatch semantics)")
    language.add_argument("--json-schema", metavar="FILE", type=_json_schema_file, default=None,
                          help="the output must be JSON valid under the schema in FILE")
    language.add_argument("--grammar", metavar="FILE", type=_grammar_file, default=None,
                          help="the output must be a sentence of the context-free grammar in FILE (Lark syntax; "
                               "GBNF when FILE ends in .gbnf)")
    constrained.add_argument("--json-whitespace", metavar="R", default=None,
                             help="regex of the whitespace allowed around JSON punctuation (default: compact)")
    how = constrained.add_mutually_exclusive_group()
    how.add_argument("--awrs", action="store_true",
                     help="adaptive weighted rejection sampling: check only drawn tokens (the default)")
    how.add_argument("--masked", action="store_true", help="locally constrained decoding by full token masks "
                     "(with --sampler greedy: the most probable allowed token)")
    constrained.add_argument("--estimator", choices=["auto", "recursive", "geometric", "paper"], default="auto",
                             help="AWRS's estimator of the allowed mass (default: auto)")
    constrained.add_argument("--smc", metavar="N", type=_positive_int, default=None,
                             help="sequential Monte Carlo with N particles; prints the posterior draw (no streaming)")
    constrained.add_argument("--ess-threshold", metavar="F", type=float, default=0.5,
                             help="SMC resamples when ESS < F * N (default: 0.5)")
    gen.set_defaults(handler=partial(_generate, gen))

    model = commands.add_parser(
        "model", help="prepare the embedded default model and print its directory",
        description="Convert the embedded default model (Gemma 3 270M, from its PyPI packages) once into the "
                    "cache directory, and print that directory.",
    )
    model.set_defaults(handler=partial(_model, model))

    bench = commands.add_parser(
        "bench", help="run a benchmark suite: prints a table, writes SUITE.json and SUITE.png",
        description="Run a benchmark suite from decoding.benchmarks. Suites report ratios (overhead %, speedups) "
                    "with medians over repeats.",
    )
    bench.add_argument("suite", metavar="SUITE", choices=sorted(SUITES),
                       help=f"one of: {', '.join(sorted(SUITES))}")
    bench.add_argument("--model", metavar="PATH", type=_checkpoint, default=None,
                       help="HF checkpoint directory or hub id (default: the embedded Gemma 3 270M)")
    bench.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    bench.add_argument("--repeats", metavar="N", type=_positive_int, default=None,
                       help="timed repetitions per case (default: the suite's)")
    bench.add_argument("--quick", action="store_true", help="few repeats: a smoke run, not a measurement")
    bench.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    bench.set_defaults(handler=partial(_bench, bench))

    select = commands.add_parser(
        "select", help="draw K documents of a raw corpus that resemble a target corpus (DSIR)",
        description="Importance resampling of a corpus (DSIR, Xie et al. 2023): hashed n-gram models of the raw and "
                    "target corpora weight every raw document, K are drawn without replacement (Gumbel top-k), "
                    "and their input lines are written unchanged, in input order. Files ending in .jsonl/.json "
                    "hold one JSON object per line; other files one document per line. A one-line summary goes "
                    "to stderr.",
    )
    select.add_argument("raw", metavar="RAW", nargs="+", help="the raw corpus: JSONL or text files, read twice")
    select.add_argument("--target", metavar="FILE", nargs="+", required=True,
                        help="the target corpus: JSONL or text files")
    select.add_argument("-k", metavar="K", type=_positive_int, required=True, help="documents to select")
    select.add_argument("--text-field", metavar="NAME", default="text",
                        help="the JSONL field holding the text (default: text)")
    select.add_argument("--ngrams", metavar="N", type=_positive_int, default=2,
                        help="features are the unigrams .. N-grams (default: 2)")
    select.add_argument("--buckets", metavar="B", type=_positive_int, default=10_000,
                        help="hash buckets (default: 10000)")
    select.add_argument("--seed", metavar="S", type=int, default=0, help="seed of the Gumbel noise (default: 0)")
    select.add_argument("--out", metavar="FILE", default=None,
                        help="write the selected lines to FILE (default: stdout)")
    select.add_argument("--engine", choices=dsir.ENGINES, default="local",
                        help="where both passes run: local (this process, the default) or ray (a Ray Data pipeline "
                             "on a Ray cluster, same selection; needs pip install 'decoding[ray]')")
    select.add_argument("--ray-address", metavar="ADDRESS", default=None,
                        help="with --engine ray: the cluster to join (default: RAY_ADDRESS, else a local one)")
    select.set_defaults(handler=partial(_select, select))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``decoding`` command line; returns the exit status (argparse exits with 2 on bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)  # the subcommand's handler, given the subcommand's parser for its errors


# ---------------------------------------------------------------------------------------------------------------
# decoding generate


class TextStream:
    """Writes one sequence's text as its tokens arrive, equal to the final ``Generation.text``.

    Token bytes go through an incremental UTF-8 decoder (a character split across tokens appears once whole;
    invalid bytes become U+FFFD as in ``LanguageModel.decode``); special tokens are skipped. With stop strings,
    the last ``len(longest stop) - 1`` characters are held back until they cannot start a stop string, so the
    stream is cut before the stop exactly where ``dc.generate`` cuts the text.
    """

    def __init__(self, vocabulary, stop: Sequence[str] = (), out: TextIO | None = None):
        self.vocabulary = vocabulary
        self.stop = tuple(stop)
        self.out = out if out is not None else sys.stdout
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._written: list[str] = []
        self.stopped = False

    def __call__(self, row: int, token: int) -> None:
        """The ``on_token`` callback of ``dc.generate`` (one sequence: row 0)."""
        if self.stopped or self.vocabulary.is_special[token]:
            return
        self._push(self._decoder.decode(self.vocabulary.token_bytes[token]))

    def _push(self, text: str) -> None:
        window = self._pending + text
        cuts = [i for i in (window.find(s) for s in self.stop) if i >= 0]
        if cuts:
            self._write(window[: min(cuts)])
            self._pending, self.stopped = "", True
            return
        split = max(len(window) - self.hold, 0)
        self._write(window[:split])
        self._pending = window[split:]

    def _write(self, text: str) -> None:
        if text:
            self._written.append(text)
            self.out.write(text)
            self.out.flush()

    def finish(self, text: str) -> None:
        """Write what is still held back, given the sequence's final text, then a newline."""
        written = "".join(self._written)
        if text.startswith(written):
            self._write(text[len(written):])
        self.out.write("\n")
        self.out.flush()


def _generate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    sampler = _constrained_sampler(parser, args)  # argument errors before any model work
    prompt = _read_prompt(args.prompt)
    try:
        lm = dc.load(args.model, device=args.device)
        stream = TextStream(lm.vocabulary, args.stop or ()) if args.smc is None else None
        out = dc.generate(lm, prompt, sampler, max_new_tokens=args.max_new_tokens, seed=args.seed,
                          stop=args.stop, on_token=stream)
    except (ValueError, ImportError) as err:
        print(f"decoding generate: error: {err}", file=sys.stderr)
        return 1
    seq, stats = out[0], out.stats
    if stream is not None:
        stream.finish(seq.text)
    else:
        print(seq.text)
    print(summary(seq, stats), file=sys.stderr)
    if args.regex is not None or args.json_schema is not None or args.grammar is not None:
        print(constraint_summary(seq, stats, lm.vocab_size, args.masked), file=sys.stderr)
    return 0


def _read_prompt(text: str) -> str:
    """The prompt: ``text``, or for ``-`` stdin's text without its final line ending (one ``\\n`` or ``\\r\\n``;
    other whitespace is part of the prompt)."""
    if text != "-":
        return text
    prompt = sys.stdin.read()
    for ending in ("\r\n", "\n"):
        if prompt.endswith(ending):
            return prompt[: -len(ending)]
    return prompt


def _constrained_sampler(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The sampler ``decoding generate`` runs: --sampler's stages, then AWRS or Masked, wrapped in SMC."""
    constraint = args.regex if args.grammar is None else args.grammar
    if args.json_schema is not None:
        try:
            constraint = dc.JsonSchema(args.json_schema, whitespace=args.json_whitespace)
        except (ValueError, TypeError) as err:
            parser.error(f"--json-schema: {err}")
    elif args.json_whitespace is not None:
        parser.error("--json-whitespace needs --json-schema")
    if constraint is None and (args.awrs or args.masked):
        parser.error("--awrs and --masked need a constraint: --regex R, --json-schema FILE or --grammar FILE")
    if not 0 <= args.ess_threshold <= 1:
        parser.error(f"--ess-threshold must be in [0, 1], got {args.ess_threshold}")
    sampler = args.sampler
    if constraint is not None:
        stages = [s for s in sampler.stages if not isinstance(s, dc.Categorical)]
        greedy = bool(stages) and isinstance(stages[-1], dc.Greedy) and args.masked
        stages = stages[:-1] if greedy else stages  # greedy under masks: the most probable allowed token
        if stages and stages[-1].terminal:
            parser.error(f"--sampler {stages[-1]!r} draws tokens itself; with a constraint, --sampler may only "
                         "transform the distribution (temperature, top_k, top_p, ...), or end in greedy with "
                         "--masked")
        terminal = dc.Masked(constraint, greedy=greedy) if args.masked else dc.AWRS(constraint,
                                                                                   estimator=args.estimator)
        sampler = SamplerChain(stages + [terminal]) if stages else terminal
    if args.smc is not None:
        sampler = dc.SMC(sampler, particles=args.smc, ess_threshold=args.ess_threshold)
    return sampler


def constraint_summary(seq, stats, vocab_size: int, masked: bool) -> str:
    """One line of constraint statistics: checks per token (AWRS) or the mask width (Masked), and SMC's set."""
    tokens = max(stats.new_tokens, 1)
    if masked:
        parts = [f"masked: every step checks the {vocab_size} tokens (memoised per automaton state)"]
    else:
        checks = stats.counters.get("constraint_checks", 0.0)
        parts = [f"awrs: {checks:.0f} constraint checks, {checks / tokens:.2f} per token (masking: {vocab_size})"]
    particles = getattr(seq, "particles", None)
    if particles:
        low = min(seq.ess) if seq.ess else float(len(particles))
        parts.append(f"smc: {len(particles)} particles, min ESS {low:.2f}, resampled {len(seq.resampled)} times, "
                     f"log Z_hat {seq.log_marginal_likelihood:.3f}")
    return "[" + "; ".join(parts) + "]"


def summary(seq, stats) -> str:
    """One line about a generation: tokens, speed, forwards, how it ended, log-probabilities."""
    ended = "finished" if seq.finished else "not finished"
    parts = [
        f"{len(seq.token_ids)} tokens",
        f"{stats.tokens_per_second:.1f} tokens/s",
        f"{stats.forwards} forwards",
        f"{ended} ({seq.reason})",
        f"logprob {seq.logprob:.3f}",
    ]
    if seq.log_weight != 0.0:
        parts.append(f"log_weight {seq.log_weight:.3f}")
    return "[" + ", ".join(parts) + "]"


# ---------------------------------------------------------------------------------------------------------------
# decoding model / decoding bench


def _model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        path = prepare(progress=True)
    except ImportError as err:
        print(f"decoding model: error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out: {str(out)!r} exists and is not a directory")
    config = BenchConfig(model=args.model, repeats=args.repeats, quick=args.quick, device=args.device)
    try:
        run_suite(args.suite, config, out)
    except BenchSetupError as err:
        print(f"decoding bench: error: {err}", file=sys.stderr)
        return 1
    return 0


def _select(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.out is not None and not Path(args.out).absolute().parent.is_dir():
        parser.error(f"--out: the directory of {args.out!r} does not exist")
    if args.ray_address is not None and args.engine != "ray":
        parser.error("--ray-address needs --engine ray")
    start = time.perf_counter()
    try:
        selection = dsir.select([Path(p) for p in args.raw], [Path(p) for p in args.target], args.k, args.ngrams,
                                args.buckets, args.seed, text_field=args.text_field, texts=False, progress=True,
                                engine=args.engine, ray_address=args.ray_address)
        out = sys.stdout if args.out is None else open(args.out, "w", encoding="utf-8")
    except (ValueError, TypeError, OSError, ImportError) as err:
        print(f"decoding select: error: {err}", file=sys.stderr)
        return 1
    with progress_bar(total=len(selection), desc="dsir: writing", unit=" docs") as bar:
        for line in dsir.selected_lines(args.raw, selection.indices.tolist()):
            out.write(line)
            bar.update()
    if out is not sys.stdout:
        out.close()
    seconds = time.perf_counter() - start
    n = selection.corpus_size
    print(f"selected {len(selection)} of {n} documents ({len(selection) / n:.2%}) in {seconds:.1f} s "
          f"({n / seconds:,.0f} documents/s); log w of the selected: median {np.median(selection.log_weights):.1f}, "
          f"min {selection.log_weights.min():.1f} (ngrams={args.ngrams}, buckets={args.buckets}, seed={args.seed}, "
          f"engine={args.engine})"
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
