"""DSIR corpus selection (``decoding.dsir``, ``kernels.hashing``, ``decoding select``).

The numba features are checked against a pure-Python definition (the regex of nltk's WordPunctTokenizer on the
lower-cased text, n-grams joined by a space, FNV-1a + fmix64 of the UTF-8 bytes), the weights against a
pure-numpy computation, and the Gumbel top-k against its law (chi-square at fixed seeds).
"""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import regex
from scipy.stats import chisquare

import decoding as dc
from decoding.cli import main
from decoding.kernels.hashing import char_classes, feature_hash, fnv1a64
from decoding import dsir
from decoding.dsir import GumbelTopK, featurize, gumbel_top_k, log_ratio, log_weights, select

ALPHABET = ("abcXYZ 0123 ,.!?'\"-_\t()[]{}$%&@#"  # ASCII words, digits, punctuation runs, whitespace
            "éÉßİΣσς²½\u0301\u0308\u00a0\u2028\u3000\x1c\x1f\ud800"  # case, marks, spaces, a surrogate
            "😀中文한국어ँा़Ωω")


def random_texts(n: int, seed: int, max_len: int = 60) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_len))) for _ in range(n)]


def reference_features(text: str, ngrams: int) -> list[str]:
    """DSIR's features, in plain Python: the tokens of nltk's WordPunctTokenizer on the lower-cased text, then
    the m-grams (m = 2 .. ngrams) joined by one space."""
    tokens = regex.findall(r"\w+|[^\w\s]+", text.lower())
    features = list(tokens)
    for m in range(2, ngrams + 1):
        features += [" ".join(tokens[i:i + m]) for i in range(len(tokens) - m + 1)]
    return features


def reference_buckets(text: str, ngrams: int, buckets: int) -> list[int]:
    return [feature_hash(f.encode("utf-8", "surrogatepass")) % buckets for f in reference_features(text, ngrams)]


def reference_counts(texts: list[str], ngrams: int, buckets: int) -> np.ndarray:
    out = np.zeros((len(texts), buckets), dtype=np.int64)
    for d, text in enumerate(texts):
        for b in reference_buckets(text, ngrams, buckets):
            out[d, b] += 1
    return out


def domain_corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Documents from two word distributions: domain 1 ("cats") and domain 0 ("markets"), 1 in 4 from domain 1."""
    rng = np.random.default_rng(seed)
    cats = "cat dog sat mat purr fur paw the a on".split()
    markets = "stock bond yield rate fell rose price the a on".split()
    domain = (rng.random(n) < 0.25).astype(np.int64)
    texts = [" ".join(rng.choice(cats if d else markets, size=rng.integers(5, 30))) + "." for d in domain]
    return texts, domain


# --- the hash -----------------------------------------------------------------------------------------------


def test_fnv1a_matches_the_published_test_vectors():
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


def test_feature_hash_is_a_fixed_value_in_this_and_another_process():
    assert feature_hash(b"hello") == 16844978562278765124
    big = 2**62  # buckets this large leave the hash itself visible
    here = featurize(["Hello, World! ünïcödé ½"], ngrams=3, buckets=big).ids.tolist()
    assert here[0] == feature_hash(b"hello") % big
    code = ("from decoding.dsir import featurize; "
            f"print(featurize(['Hello, World! ünïcödé ½'], ngrams=3, buckets={big}).ids.tolist())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # Python's own str hash would change with it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == here


def test_buckets_are_uniform_on_structured_keys():
    """Keys like w0, w1, ... (plain FNV-1a fails this at 10,000 buckets: chi-square 17,506 on 9,999 dof)."""
    ids = featurize([" ".join(f"w{i}" for i in range(100_000))], ngrams=1, buckets=10_000).ids
    assert chisquare(np.bincount(ids, minlength=10_000)).pvalue > 1e-3


# --- features -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ngrams, buckets", [(1, 10_000), (2, 10_000), (3, 97), (5, 1)])
def test_features_equal_the_pure_python_definition(ngrams, buckets):
    texts = random_texts(400, seed=ngrams) + ["", "   \n\t", "Word", "İİ ΣΑΣ. x²y", "a\u0301b c\x1cd", "..!?,;"]
    features = featurize(texts, ngrams, buckets)
    for d, text in enumerate(texts):
        assert features.ids[features.offsets[d]:features.offsets[d + 1]].tolist() == \
            reference_buckets(text, ngrams, buckets), repr(text)
    np.testing.assert_array_equal(features.counts(), reference_counts(texts, ngrams, buckets))


def test_tokens_follow_the_regex_engine_on_every_code_point():
    """The class table is nltk's regex: word runs, punctuation runs, whitespace between."""
    classes = char_classes()
    rng = np.random.default_rng(0)
    sample = [chr(c) for c in rng.integers(0, 0x110000, size=3000)]
    for c in sample:
        expected = 1 if regex.fullmatch(r"\w", c) else 0 if regex.fullmatch(r"\s", c) else 2
        assert classes[ord(c)] == expected, hex(ord(c))


def test_lower_casing_that_changes_lengths_keeps_documents_apart():
    texts = ["İİİ a", "b", "ΑΣ"]  # "İ".lower() is two code points; a final sigma lower-cases to "ς"
    features = featurize(texts, ngrams=2, buckets=1000)
    assert np.diff(features.offsets).tolist() == [3, 1, 1]
    assert features.ids[4] == feature_hash("ας".encode()) % 1000


def test_a_document_that_is_not_a_string_is_named():
    with pytest.raises(TypeError, match=r"document 1 is a int"):
        featurize(["fine", 3])


# --- weights --------------------------------------------------------------------------------------------------


def test_log_weights_equal_the_numpy_computation():
    raw, target = random_texts(300, seed=5), random_texts(40, seed=6)
    ngrams, buckets = 2, 512
    raw_counts, target_counts = reference_counts(raw, ngrams, buckets), reference_counts(target, ngrams, buckets)
    gamma_raw = raw_counts.sum(0) / raw_counts.sum()
    gamma_tgt = target_counts.sum(0) / target_counts.sum()
    expected_ratio = np.log(gamma_tgt + 1e-8) - np.log(gamma_raw + 1e-8)
    expected = raw_counts @ expected_ratio

    ratio = log_ratio(dsir.bucket_counts(target, ngrams, buckets)[0], dsir.bucket_counts(raw, ngrams, buckets)[0])
    np.testing.assert_allclose(ratio, expected_ratio, rtol=1e-12)
    np.testing.assert_allclose(log_weights(raw, ratio, ngrams), expected, rtol=1e-9, atol=1e-9)
    selection = select(raw, target, k=20, ngrams=ngrams, buckets=buckets)
    np.testing.assert_allclose(selection.log_ratio, expected_ratio, rtol=1e-12)
    np.testing.assert_allclose(selection.log_weights, expected[selection.indices], rtol=1e-9, atol=1e-9)
    assert selection.texts == [raw[i] for i in selection.indices]


def test_select_prefers_the_target_domain():
    raw, domain = domain_corpus(400, seed=0)
    target, _ = domain_corpus(100, seed=1)
    target = [t for t, d in zip(target, _) if d == 1]
    selection = select(raw, target, k=50, seed=0)
    assert np.mean(domain[selection.indices]) > 0.9  # 25 % of the raw corpus
    assert list(selection.indices) == sorted(selection.indices) and len(set(selection.indices)) == 50


# --- Gumbel top-k -----------------------------------------------------------------------------------------------


def test_gumbel_top_k_is_reproducible_and_depends_on_the_seed():
    log_w = np.zeros(1000)
    first = gumbel_top_k(log_w, 10, seed=7)
    np.testing.assert_array_equal(first, gumbel_top_k(log_w, 10, seed=7))
    assert not np.array_equal(first, gumbel_top_k(log_w, 10, seed=8))
    assert len(set(first.tolist())) == 10


def test_k_equal_1_draws_i_with_probability_w_i_over_the_sum():
    """Chi-square over 8,000 seeds (0 .. 7,999), 5 categories."""
    w = np.array([0.4, 0.25, 0.2, 0.1, 0.05])
    draws = np.array([gumbel_top_k(np.log(w) + 3.0, 1, seed=s)[0] for s in range(8_000)])  # unnormalised
    assert chisquare(np.bincount(draws, minlength=5), 8_000 * w).pvalue > 1e-3


def test_k_equal_2_draws_pairs_as_successive_draws_without_replacement():
    """P({i, j}) = w_i / W * w_j / (W - w_i) + w_j / W * w_i / (W - w_j); chi-square over 8,000 seeds."""
    w = np.array([0.5, 0.3, 0.15, 0.05])
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    law = np.array([w[i] * w[j] / (1 - w[i]) + w[j] * w[i] / (1 - w[j]) for i, j in pairs])
    draws = collections.Counter(tuple(gumbel_top_k(np.log(w), 2, seed=s).tolist()) for s in range(8_000))
    assert chisquare([draws[p] for p in pairs], 8_000 * law).pvalue > 1e-3


def test_the_selection_does_not_depend_on_how_items_are_pushed(monkeypatch):
    log_w = np.random.default_rng(0).normal(size=5000) * 3
    whole = gumbel_top_k(log_w, 40, seed=1)
    monkeypatch.setattr(dsir, "BATCH", 7)  # prune often
    top = GumbelTopK(40, seed=1)
    for chunk in np.array_split(log_w, 333):
        top.push(chunk)
    indices, weights, _ = top.result()
    np.testing.assert_array_equal(indices, whole)
    np.testing.assert_array_equal(weights, log_w[whole])


# --- corpora: lists, files, streams -------------------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path):
    raw, _ = domain_corpus(300, seed=2)
    raw[10] = ""  # an empty document
    raw[11] = "Ünïcödé — “quoted”, ½ and x²!"
    target, domain = domain_corpus(60, seed=3)
    target = [t for t, d in zip(target, domain) if d == 1]
    jsonl = tmp_path / "raw.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" + ("\n" if i == 5 else "")
                             for i, t in enumerate(raw)), encoding="utf-8")  # a blank line after record 5
    text = tmp_path / "raw.txt"
    text.write_text("".join(t + "\n" for t in raw), encoding="utf-8")
    halves = tmp_path / "a.txt", tmp_path / "b.txt"
    halves[0].write_text("".join(t + "\n" for t in raw[:123]), encoding="utf-8")
    halves[1].write_text("".join(t + "\n" for t in raw[123:]), encoding="utf-8")
    target_file = tmp_path / "target.txt"
    target_file.write_text("\n".join(target), encoding="utf-8")  # no final newline
    return {"raw": raw, "target": target, "jsonl": jsonl, "text": text, "halves": list(halves),
            "target_file": target_file}


def test_streaming_from_files_equals_selecting_from_a_list(corpus, monkeypatch):
    expected = select(corpus["raw"], corpus["target"], k=25, seed=4)
    monkeypatch.setattr(dsir, "BATCH", 16)  # many batches per pass
    for raw in (corpus["jsonl"], str(corpus["text"]), corpus["halves"], tuple(corpus["raw"])):
        got = select(raw, corpus["target_file"], k=25, seed=4, text_field="body")
        np.testing.assert_array_equal(got.indices, expected.indices)
        np.testing.assert_allclose(got.log_weights, expected.log_weights, rtol=1e-12)
        assert got.texts == expected.texts and got.corpus_size == len(corpus["raw"])
    assert select(corpus["raw"], iter(corpus["target"]), k=25, seed=4).indices.tolist() == \
        expected.indices.tolist()  # the target may be a one-shot iterator


def test_selected_lines_are_the_input_lines(corpus):
    indices = [0, 5, 6, 299]
    lines = list(dsir.selected_lines([corpus["jsonl"]], indices))
    assert [json.loads(line)["id"] for line in lines] == indices
    assert list(dsir.selected_lines(corpus["halves"], [122, 123])) == [corpus["raw"][122] + "\n",
                                                                        corpus["raw"][123] + "\n"]


# --- the CLI --------------------------------------------------------------------------------------------------


def test_cli_writes_the_selected_lines_unchanged(corpus, tmp_path, capsys):
    out = tmp_path / "selected.jsonl"
    args = [str(corpus["jsonl"]), "--target", str(corpus["target_file"]), "-k", "12", "--text-field", "body",
            "--seed", "3", "--ngrams", "2", "--buckets", "4096"]
    assert main(["select", *args, "--out", str(out)]) == 0
    expected = select(corpus["raw"], corpus["target"], k=12, seed=3, buckets=4096)
    lines = corpus["jsonl"].read_text(encoding="utf-8").splitlines(keepends=True)
    records = [line for line in lines if line.strip()]
    assert out.read_text(encoding="utf-8") == "".join(records[i] for i in expected.indices)
    err = capsys.readouterr().err
    assert f"selected 12 of {len(corpus['raw'])} documents" in err and "dsir: weighting" in err

    assert main(["select", *args]) == 0  # to stdout
    assert capsys.readouterr().out == out.read_text(encoding="utf-8")


def test_cli_reports_bad_input(corpus, capsys):
    assert main(["select", str(corpus["jsonl"]), "--target", str(corpus["target_file"]), "-k", "9999",
                 "--text-field", "body"]) == 1
    assert "k=9999 is larger than the raw corpus (300 documents)" in capsys.readouterr().err
    assert main(["select", str(corpus["jsonl"]), "--target", str(corpus["target_file"]), "-k", "2"]) == 1
    assert "raw.jsonl:1: no string field 'text'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["select", str(corpus["jsonl"]), "--target", str(corpus["target_file"]), "-k", "0"])
    assert exit_.value.code == 2


# --- bad input --------------------------------------------------------------------------------------------------


def refuse_reading():
    raise AssertionError("the corpus was read before the arguments were checked")
    yield ""


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, r"k must be an int >= 1"),
    ({"k": True}, r"k must be an int >= 1"),
    ({"k": 4}, r"k=4 is larger than the raw corpus \(3 documents\); select at most k=3"),
    ({"k": 1, "ngrams": 0}, r"ngrams must be an int >= 1"),
    ({"k": 1, "buckets": 0}, r"buckets must be an int >= 1"),
    ({"k": 1, "seed": 0.5}, r"seed must be an int"),
])
def test_bad_arguments_are_refused_before_reading(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select(["a b", "c d", "e"], refuse_reading(), **kwargs)


def test_empty_corpora_are_refused():
    with pytest.raises(ValueError, match=r"raw_texts is empty"):
        select([], ["a"], k=1)
    with pytest.raises(ValueError, match=r"target_texts is empty"):
        select(["a"], [], k=1)
    with pytest.raises(ValueError, match=r"target_texts has no tokens in its 2 documents"):
        select(["a"], ["", "  \n"], k=1)
    with pytest.raises(ValueError, match=r"raw_texts has no tokens"):
        select(["", " "], ["a"], k=1)


def test_a_one_shot_raw_corpus_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"raw_texts is a one-shot iterator .* pass a list of documents"):
        select((t for t in ["a", "b"]), ["a"], k=1)


def test_a_corpus_that_reads_differently_twice_is_caught():
    class Shrinking:
        def __init__(self):
            self.passes = 0

        def __iter__(self):  # a generator: iter() alone starts no pass
            self.passes += 1
            yield from ["a b", "c d", "e f"][: 4 - self.passes]

    with pytest.raises(ValueError, match=r"3 documents on the first pass and 2 on the second"):
        select(Shrinking(), ["a"], k=1)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file: .*missing.jsonl"):
        select(tmp_path / "missing.jsonl", ["a"], k=1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON line"):
        select(bad, ["a"], k=1)
    bad.write_text('{"text": "ok"}\n["a list"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no string field 'text' \(found a list\)"):
        select(bad, ["a"], k=1)
    with pytest.raises(TypeError, match=r"raw_texts must be a file path, a list of paths or an iterable"):
        select(3, ["a"], k=1)


def test_select_is_exported():
    assert dc.select is select and dc.Selection is dsir.Selection
