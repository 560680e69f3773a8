"""The `decoding` command line: the sampler spec language, `generate` (streamed text equals dc.generate's),
`bench samplers` (JSON with every row), and the console script. A tiny random Llama on the real Llama 3
tokenizer, saved to a temporary checkpoint directory, stands in for the model."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import decoding as dc
from decoding import cli
from decoding.cli import main
from decoding.sampler_spec import SAMPLERS, SamplerSpecError, parse_sampler

from conftest import llama3_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A tiny random Llama with the Llama 3 tokenizer, saved as an HF checkpoint directory."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = llama3_tokenizer()
    tiny_llama(tokenizer, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def lm(checkpoint):
    return dc.load(checkpoint, device="cpu")


# --- parse_sampler --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "spec, cls, attrs",
    [
        ("greedy", dc.Greedy, {}),
        ("categorical", dc.Categorical, {}),
        ("temperature=0.8", dc.Temperature, {"temperature": 0.8}),
        ("top_k=50", dc.TopK, {"k": 50}),
        ("top_p=0.9", dc.TopP, {"p": 0.9}),
        ("min_p=0.05", dc.MinP, {"p": 0.05}),
        ("typical=0.95", dc.Typical, {"p": 0.95}),
        (" Top-K = k=7 ", dc.TopK, {"k": 7}),  # spaces, case, '-' for '_', the parameter by name
    ],
)
def test_parse_every_registered_sampler(spec, cls, attrs):
    sampler = parse_sampler(spec)
    assert type(sampler) is cls
    assert {k: getattr(sampler, k) for k in attrs} == attrs


def test_every_registered_name_is_tested():
    tested = {"greedy", "categorical", "temperature", "top_k", "top_p", "min_p", "typical"}
    assert tested <= set(SAMPLERS), "a sampler of the brief is missing from the registry"
    for name in set(SAMPLERS) - tested:  # samplers added later: at least their bare name or usage must parse
        factory = SAMPLERS[name]
        if not factory.required:
            assert isinstance(parse_sampler(name), dc.TokenSampler)


def test_parse_chain_keeps_order_and_parameters():
    chain = parse_sampler("temperature=0.8|top_k=50|top_p=0.9")
    assert isinstance(chain, dc.samplers.SamplerChain)
    assert [type(s) for s in chain.stages] == [dc.Temperature, dc.TopK, dc.TopP]
    assert (chain.stages[0].temperature, chain.stages[1].k, chain.stages[2].p) == (0.8, 50, 0.9)
    ends_greedy = parse_sampler("min_p=0.1|greedy")
    assert [type(s) for s in ends_greedy.stages] == [dc.MinP, dc.Greedy]
    logprobs = torch.log_softmax(torch.randn(3, 40, generator=torch.Generator().manual_seed(0)), -1)
    expected = (dc.Temperature(0.8) | dc.TopK(50) | dc.TopP(0.9)).sample(logprobs, None, dc.RowStreams.from_seed(4, 3))
    got = chain.sample(logprobs, None, dc.RowStreams.from_seed(4, 3))
    assert torch.equal(got.tokens, expected.tokens)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nucleus=0.9", "known samplers: categorical, greedy"),
        ("tmperature=0.7", "did you mean 'temperature'"),
        ("top_k=5.5", "k must be an integer, got '5.5'"),
        ("temperature=hot", "temperature must be a number, got 'hot'"),
        ("temperature=0", "temperature must be a finite number > 0"),  # the sampler's own ValueError
        ("top_p=1.5", "top_p must be in (0, 1]"),
        ("top_k=0", "k must be an int >= 1"),
        ("top_k", "top_k needs a value: top_k=K"),
        ("greedy=1", "greedy takes no value"),
        ("top_k=5,6", "too many values"),
        ("top_k=n=5", "unknown parameter 'n'"),
        ("greedy|top_k=5", "must be the last sampler of a chain"),
        ("top_k=5||top_p=0.9", "empty stage"),
    ],
)
def test_parse_errors_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=None) as err:
        parse_sampler(spec)
    assert isinstance(err.value, SamplerSpecError)
    assert message in str(err.value)


def test_cli_rejects_bad_sampler_and_bad_numbers_before_loading(capsys, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model must not be loaded for bad arguments")

    monkeypatch.setattr(dc, "load", no_load)
    for argv, message in [
        (["generate", "hi", "--sampler", "nucleus=0.9"], "known samplers: categorical, greedy, min_p=P"),
        (["generate", "hi", "--sampler", "top_p=2"], "top_p must be in (0, 1], got 2.0"),
        (["generate", "hi", "--max-new-tokens", "-1"], "expected an integer >= 0, got -1"),
        (["generate", "hi", "--stop", ""], "stop strings must be non-empty"),
        (["bench", "nosuch"], "invalid choice: 'nosuch' (choose from"),  # then the suites: 'samplers'...
        (["bench", "samplers", "--repeats", "0"], "expected an integer >= 1"),
        ([], "the following arguments are required: COMMAND"),
        (["generate", "hi", "--masked"], "--awrs and --masked need a constraint"),
        (["generate", "hi", "--regex", "(?=a)b"], "look-ahead"),
        (["generate", "hi", "--json-schema", "/no/such/schema.json"], "cannot read '/no/such/schema.json'"),
        (["generate", "hi", "--regex", "a", "--json-whitespace", " "], "--json-whitespace needs --json-schema"),
        (["generate", "hi", "--regex", "a", "--smc", "0"], "expected an integer >= 1, got 0"),
        (["generate", "hi", "--regex", "a", "--smc", "4", "--ess-threshold", "2"], "--ess-threshold must be in [0, 1]"),
        (["generate", "hi", "--regex", "a", "--sampler", "greedy"], "draws tokens itself"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err, argv


def _no_load(*args, **kwargs):
    raise AssertionError("the model must not be loaded for bad arguments")


@pytest.mark.parametrize("command", [[], ["generate"], ["model"], ["bench"], ["select"]])
def test_help_prints_plain_text(command, capsys):
    """Help texts are printed as written: no doubled '%%' (argparse only %-formats help strings, not
    descriptions) and no Python reprs such as None."""
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal width
    assert "%%" not in out and "None" not in out
    if command == ["bench"]:
        assert "ratios (overhead %, speedups)" in out


@pytest.mark.parametrize("command", [["generate", "hi"], ["bench", "samplers"]])
def test_a_bad_model_name_is_refused_in_cli_words(command, capsys):
    """A --model that is neither a directory nor a hub id is refused by the subcommand's parser before any model
    work, telling the user to leave out --model (not to pass the library's None)."""
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--model", "no/such/checkpoint"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: decoding {command[0]} ")
    assert "'no/such/checkpoint' is neither a checkpoint directory nor a hub id" in err
    assert "leave out --model for the default model" in err and "None" not in err


@pytest.mark.parametrize("stdin, prompt", [
    ("Once upon a time\n", "Once upon a time"),
    ("Once upon a time\r\n", "Once upon a time"),
    ("  two\nlines \n\n", "  two\nlines \n"),  # one newline stripped, other whitespace kept
    ("no newline ", "no newline "),
])
def test_generate_reads_a_stdin_prompt_without_its_final_newline(stdin, prompt, lm, capsys, monkeypatch):
    """`echo "prompt" | decoding generate -` prompts with "prompt", not "prompt\\n" (exactly one \\n or \\r\\n
    is stripped)."""
    prompts = []
    generate = dc.generate

    def spy(lm, prompt, *args, **kwargs):
        prompts.append(prompt)
        return generate(lm, prompt, *args, **kwargs)

    monkeypatch.setattr(dc, "load", lambda *args, **kwargs: lm)
    monkeypatch.setattr(dc, "generate", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["generate", "-", "--sampler", "greedy", "--max-new-tokens", "1"]) == 0
    assert prompts == [prompt]


@pytest.mark.parametrize("argv, message", [
    (["generate", "hi", "--json-schema", "{schema}"], "--json-schema: unknown type 'nosuchtype' at /type"),
    (["generate", "hi", "--regex", "a", "--json-whitespace", " "], "--json-whitespace needs --json-schema"),
    (["generate", "hi", "--masked"], "--awrs and --masked need a constraint"),
    (["generate", "hi", "--regex", "a", "--sampler", "greedy"], "draws tokens itself"),
    (["bench", "samplers", "--out", "{schema}"], "exists and is not a directory"),
    (["select", "raw.txt", "--target", "t.txt", "-k", "1", "--out", "/no/such/dir/out.jsonl"],
     "the directory of '/no/such/dir/out.jsonl' does not exist"),
])
def test_errors_found_after_parsing_come_from_the_subcommand(argv, message, tmp_path, capsys, monkeypatch):
    """Errors raised by a subcommand after argparse's own checks (an unsupported JSON schema, options that
    need each other) print the subcommand's usage line, not the top-level one, and come before any model
    work."""
    monkeypatch.setattr(dc, "load", _no_load)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "nosuchtype"}))
    with pytest.raises(SystemExit) as exit_:
        main([a.replace("{schema}", str(schema)) for a in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: decoding {argv[0]} "), err
    assert f"decoding {argv[0]}: error: " in err and message in err


# --- decoding generate ----------------------------------------------------------------------------------------

def test_generate_streams_the_same_text_as_dc_generate(checkpoint, lm, capsys):
    expected = dc.generate(lm, "hi", dc.Greedy(), max_new_tokens=5)[0]
    assert main(["generate", "hi", "--model", checkpoint, "--sampler", "greedy", "--max-new-tokens", "5"]) == 0
    captured = capsys.readouterr()
    assert captured.out == expected.text + "\n"
    summary = captured.err.strip().splitlines()[-1]
    assert f"{len(expected.token_ids)} tokens" in summary
    assert "tokens/s" in summary and "forwards" in summary
    assert expected.reason in summary and f"logprob {expected.logprob:.3f}" in summary


def test_generate_with_sampler_seed_and_stop_matches_dc_generate(checkpoint, lm, capsys):
    sampler = "temperature=1.5|top_k=200"
    full = dc.generate(lm, "Once", parse_sampler(sampler), max_new_tokens=12, seed=7)[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), "the tiny model's text is too short to cut"
    expected = dc.generate(lm, "Once", parse_sampler(sampler), max_new_tokens=12, seed=7, stop=[stop])[0]
    assert expected.reason == "stop"
    argv = ["generate", "Once", "--model", checkpoint, "--sampler", sampler, "--max-new-tokens", "12", "--seed", "7",
            "--stop", stop, "zzz-not-in-text"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == expected.text + "\n"
    assert "finished (stop)" in captured.err


def test_text_stream_holds_back_a_stop_split_across_tokens(lm):
    """Stop strings spanning tokens, and multi-byte characters split across tokens, stream exactly the final text."""
    import io

    vocab = lm.vocabulary
    ids = lm.tokenizer("Hello world. Bye", add_special_tokens=False)["input_ids"]
    assert len(ids) >= 4
    text = vocab.decode_bytes(ids).decode()
    assert text == "Hello world. Bye"
    for stop, cut in [("world", "Hello "), ("o w", "Hell"), (". B", "Hello world"), ("Bye", "Hello world. ")]:
        out = io.StringIO()
        stream = cli.TextStream(vocab, [stop], out)
        for t in ids:
            stream(0, t)
        assert stream.stopped and out.getvalue() == cut, stop  # cut as it streams, not only at the end
        stream.finish(cut)
        assert out.getvalue() == cut + "\n"
    out = io.StringIO()
    stream = cli.TextStream(vocab, ["nope"], out)
    for t in ids:
        stream(0, t)
    assert not stream.stopped and out.getvalue() == text[:-3]  # len("nope") - 1 characters held back
    stream.finish(text)
    assert out.getvalue() == text + "\n"
    # "é" is two bytes; split it over two byte-level tokens: nothing printed until it is whole
    e_bytes = "é".encode()
    byte_ids = [vocab.token_bytes.index(bytes([b])) for b in e_bytes]
    out = io.StringIO()
    stream = cli.TextStream(vocab, (), out)
    stream(0, byte_ids[0])
    assert out.getvalue() == ""
    stream(0, byte_ids[1])
    assert out.getvalue() == "é"


def test_generate_with_a_regex_prints_a_match_and_constraint_statistics(checkpoint, capsys, tmp_path):
    """AWRS (random model: capped by --sampler top_k), Masked with SMC, and a JSON schema from a file."""
    import json
    import re

    argv = ["generate", "hi", "--model", checkpoint, "--max-new-tokens", "8", "--regex", "[0-9]{2}"]
    assert main(argv + ["--masked"]) == 0
    out = capsys.readouterr()
    assert re.fullmatch("[0-9]{2}", out.out.strip()) and "masked: every step checks the" in out.err
    assert main(argv + ["--masked", "--smc", "3"]) == 0
    out = capsys.readouterr()
    assert re.fullmatch("[0-9]{2}", out.out.strip()) and "smc: 3 particles" in out.err
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "boolean"}))
    assert main(["generate", "hi", "--model", checkpoint, "--json-schema", str(schema), "--masked"]) == 0
    assert capsys.readouterr().out.strip() in ("true", "false")
    assert main(["generate", "hi", "--model", checkpoint, "--max-new-tokens", "4", "--regex", "[a-z ]{1,3}",
                 "--sampler", "top_k=50000"]) == 0
    out = capsys.readouterr()
    assert re.fullmatch("[a-z ]{1,3}", out.out.rstrip("\n")) and "constraint checks" in out.err
    assert main(argv + ["--masked", "--sampler", "greedy"]) == 0  # the most probable allowed token
    lm = dc.load(checkpoint, progress=False)
    greedy = dc.generate(lm, "hi", dc.Masked(dc.Regex("[0-9]{2}"), greedy=True), max_new_tokens=8)[0].text
    assert capsys.readouterr().out.strip() == greedy


def test_generate_with_a_grammar_file(checkpoint, capsys, tmp_path):
    """--grammar FILE: Lark syntax, or GBNF by the .gbnf suffix; bad files are refused before the model loads."""
    lark_file, gbnf_file, broken = tmp_path / "nest.lark", tmp_path / "ab.gbnf", tmp_path / "broken.lark"
    lark_file.write_text('start: "[" [start ("," start)*] "]"\n')
    gbnf_file.write_text('root ::= "a" root "b" | "ab"\n')
    broken.write_text('start: "a"\nb: (\n')
    assert main(["generate", "hi", "--model", checkpoint, "--max-new-tokens", "16", "--grammar", str(lark_file),
                 "--masked"]) == 0
    out = capsys.readouterr()
    text = out.out.strip()
    assert dc.Grammar.from_file(lark_file).matches(text) or out.err.count("length"), text
    assert main(["generate", "hi", "--model", checkpoint, "--max-new-tokens", "12", "--grammar", str(gbnf_file),
                 "--masked"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("a") and set(text) <= {"a", "b"}, text
    for argv, message in [(["--grammar", str(tmp_path / "none.lark")], "cannot read"),
                          (["--grammar", str(broken)], "line 2"),
                          (["--grammar", str(lark_file), "--regex", "a"], "not allowed with argument")]:
        with pytest.raises(SystemExit):
            main(["generate", "hi", "--model", checkpoint] + argv)
        assert message in capsys.readouterr().err, argv


def test_generate_reports_library_errors_cleanly(tmp_path, capsys):
    assert main(["generate", "hi", "--model", str(tmp_path)]) == 1  # a directory without a checkpoint
    assert "decoding generate: error: " in capsys.readouterr().err


# --- decoding bench ---------------------------------------------------------------------------------------------

def test_bench_samplers_quick_writes_every_row(checkpoint, tmp_path, capsys):
    from decoding.benchmarks import samplers as suite

    out = tmp_path / "results"
    assert main(["bench", "samplers", "--model", checkpoint, "--quick", "--out", str(out)]) == 0
    data = json.loads((out / "samplers.json").read_text())
    assert data["suite"] == "samplers"
    rows = {(r["sampler"], r["batch"]): r for r in data["rows"]}
    assert set(rows) == {(s, b) for s in suite.SAMPLERS for b in (1, 32)}
    for r in rows.values():
        assert r["sampler_ms"] > 0 and r["forward_ms"] > 0
        assert r["overhead_pct"] == pytest.approx(100 * r["sampler_ms"] / r["forward_ms"], rel=1e-2)
    settings = data["settings"]
    assert settings["vocab_size"] == 128256 and settings["repeats"] == suite.QUICK_REPEATS
    assert settings["model"] == checkpoint and settings["torch_threads"] >= 1
    assert len(settings["prompts"]) == 32 and set(settings["prompt_tokens"]) == {16}
    assert data["environment"]["torch"] == torch.__version__
    printed = capsys.readouterr().out
    for spec in suite.SAMPLERS:
        assert spec in printed
    assert "B=32 overhead" in printed
    pytest.importorskip("matplotlib")
    assert (out / "samplers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_speculative_quick_writes_every_case(checkpoint, tmp_path, capsys):
    from decoding.benchmarks import speculative as suite

    out = tmp_path / "results"
    assert main(["bench", "speculative", "--model", checkpoint, "--quick", "--out", str(out)]) == 0
    data = json.loads((out / "speculative.json").read_text())
    assert data["suite"] == "speculative"
    decode = [r for r in data["rows"] if r["kind"] == "decode"]
    names = {"plain", "HF plain"} | {f"HF PL K={k}" for k in suite.QUICK_HF_LOOKUP} | {
        f"{family} B={b}" for b in suite.QUICK_BUDGETS for family in ("chain", "multi", "dynamic")}
    assert {(r["case"], r["temperature"], r["group"]) for r in decode} == {
        (n, t, g) for n in names for t in suite.TEMPERATURES for g in (suite.GROUNDED, suite.OPEN)}
    for r in decode:
        assert r["forwards"] >= 1 and r["tokens_per_forward"] > 0 and r["over_hf_lookup"] > 0
        if r["temperature"] == 0:  # lossless: every case writes plain greedy's text (no near-ties on this model)
            assert r["same_as_plain"] == r["prompts"], r["case"]
        if r["family"] == "plain":
            n = suite.QUICK_MAX_NEW_TOKENS  # the first token comes with the prompt's forward
            assert r["over_plain"] == 1.0 and 1.0 <= r["tokens_per_forward"] <= n / (n - 1) + 1e-9
    accept = [r for r in data["rows"] if r["kind"] == "acceptance"]
    assert {(r["verifier"], r["k"]) for r in accept} == {
        (v, k) for v in suite.verifiers() for k in suite.DRAFT_COUNTS}
    for r in accept:  # alpha* bounds every verifier (Monte Carlo: 200 draws per distribution)
        assert 0 <= r["acceptance"] <= r["alpha_star"] + 0.1 and r["alpha_star"] <= 1 + 1e-9
    self_draft = [r for r in data["rows"] if r["kind"] == "self_draft"]
    assert {(r["family"], r["temperature"]) for r in self_draft} == {
        (f, t) for f in ("chain", "dynamic") for t in suite.TEMPERATURES}
    assert all(r["tokens_per_forward"] > 0 and r["exit_layers"] == 1 for r in self_draft)  # of the 2 layers
    assert set(data["settings"]["done_conditions"]["self_draft_dynamic_over_chain_tokens_per_forward"]) == {"T=0", "T=1"}
    assert data["settings"]["prompt_format"].startswith("plain text")
    assert "chain B=6" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert (out / "speculative.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_constrained_speculative_quick_writes_every_case(checkpoint, tmp_path, capsys):
    from decoding.benchmarks import constrained_speculative as suite

    out = tmp_path / "results"
    assert main(["bench", "constrained-speculative", "--model", checkpoint, "--quick", "--out", str(out)]) == 0
    data = json.loads((out / "constrained-speculative.json").read_text())
    cases = {"Masked", "spec n-gram", "spec constraint"} | ({"llguidance FF"} if suite.FastForward.available() else set())
    rows = [r for r in data["rows"] if not r.get("summary")]
    assert {(r["task"], r["T"], r["case"]) for r in rows} == {
        (t.name, T, c) for t in suite.tasks()[:2] for T in suite.TEMPERATURES for c in cases}
    for r in rows:
        assert r["forwards"] >= 1 and r["seconds"] > 0 and r["cpu_seconds"] > 0 and r["speedup_over_masked"] > 0
        if r["T"] == 0 and r["case"] != "llguidance FF":  # exact: greedy Masked's tokens
            assert r["equals_masked_tokens"], r
    summary = [r for r in data["rows"] if r.get("summary")]
    assert {(r["T"], r["case"]) for r in summary} == {(T, c) for T in suite.TEMPERATURES for c in cases}
    for r in summary:
        assert r["speedup_over_masked"] > 0 and r["cpu_speedup_over_masked"] > 0
        if r["case"] == "Masked":
            assert r["speedup_over_masked"] == r["cpu_speedup_over_masked"] == 1.0
        assert r["steal_share"] is None or 0 <= r["steal_share"] <= 1
    assert set(data["settings"]["trees"]) == {f"T={T:g}" for T in suite.TEMPERATURES}
    assert "x Masked (CPU)" in capsys.readouterr().out


def test_bench_sir_quick_writes_every_row(checkpoint, tmp_path, capsys):
    from decoding.benchmarks import sir as suite

    out = tmp_path / "results"
    assert main(["bench", "sir", "--model", checkpoint, "--quick", "--out", str(out)]) == 0
    data = json.loads((out / "sir.json").read_text())
    sir = [r for r in data["rows"] if r["kind"] == "sir"]
    assert [r["proposal"] for r in sir] == list(suite.proposals())
    for r in sir:
        assert 0 < r["ess_over_n"] <= 1 + 1e-9 and 0 < r["p_mass_on_support"] <= 1 + 1e-9
        assert r["gain_weighted"] == pytest.approx(r["logp_weighted"] - r["logp_raw"])
        assert r["sir_over_one_sample"] > 0
    dsir = [r for r in data["rows"] if r["kind"] == "dsir"]
    assert {r["case"] for r in dsir} >= {"fit", "weights", "fit + weights", "agreement"}
    assert all(r["decoding_docs_per_s"] > 0 for r in dsir if r["case"] != "agreement")
    assert data["settings"]["sir"]["n"] == suite.QUICK_N
    assert "top-p 0.9" in capsys.readouterr().out


def test_bench_runner_helpers(capsys, monkeypatch):
    from decoding import bench

    calls = []
    assert bench.time_median(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5
    medians = bench.time_interleaved({"a": lambda: None, "b": lambda: None}, repeats=2, warmup=1, progress=False)
    assert set(medians) == {"a", "b"}
    table = bench.format_table(["name", "ms"], [["x", "1.0"], ["longer", "10.5"]])
    assert table.splitlines()[0].startswith("name") and table.splitlines()[3].endswith("10.5")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if the bench extra were missing
    assert bench.write_png("unused.png", lambda fig: None) is False
    assert "decoding[bench]" in capsys.readouterr().err


# --- the console script -----------------------------------------------------------------------------------------

def test_console_script_runs():
    exe = shutil.which("decoding") or str(Path(sys.executable).parent / "decoding")
    assert os.path.exists(exe), "the `decoding` console script is not installed (pip install -e .)"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("generate", "bench", "model"):
        assert command in result.stdout
