"""DSIR on Ray (``decoding.dsir_ray``, ``select(..., engine="ray")``, ``decoding select --engine ray``).

The Ray Data pipeline must select exactly the documents the single-process run selects, with the same log
weights to the bit, from a list and from files (JSONL and text, several byte ranges each), on a 50,000-document
corpus. One local Ray cluster (2 CPUs) serves the module.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import ray

from decoding import dsir_ray
from decoding.cli import main
from decoding.dsir import gumbel_top_k, read_file, select, selected_lines

N_RAW, N_TARGET, K = 50_000, 2_000, 500
WORDS, TOPICS = 5_000, 4


def topic_corpus(n: int, seed: int, topics: list[int] | None = None) -> list[str]:
    """``n`` documents of 5 .. 60 words: Zipf 1.1 over pseudo-words, the ranks shifted by the document's topic
    (one of 4, or of ``topics``), some words capitalised or followed by punctuation; the same on any machine."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    stems = ["".join(rng.choice(letters, size=m)) for m in rng.integers(2, 9, size=WORDS)]
    forms = np.array(stems + [s.capitalize() for s in stems] + [s + "," for s in stems] + [s + "." for s in stems],
                     dtype=object)
    law = 1.0 / np.arange(1, WORDS + 1) ** 1.1
    lengths = rng.integers(5, 61, size=n)
    topic = rng.choice(topics or range(TOPICS), size=n)
    word = (rng.choice(WORDS, size=lengths.sum(), p=law / law.sum()) + np.repeat(topic, lengths) * 997) % WORDS
    flat = forms[word + WORDS * rng.choice(4, size=len(word), p=[0.85, 0.05, 0.05, 0.05])].tolist()
    ends = np.cumsum(lengths)
    return [" ".join(flat[end - m:end]) for m, end in zip(lengths.tolist(), ends.tolist())]


@pytest.fixture(scope="module")
def cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, object_store_memory=256 << 20, include_dashboard=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    raw = topic_corpus(N_RAW, seed=0)
    raw[7] = "Zoë's naïve café \ud800 — “quoted”, 東京 😀"  # a lone surrogate, as a JSON file may hold
    raw[8] = ""
    target = topic_corpus(N_TARGET, seed=1, topics=[3])
    folder = tmp_path_factory.mktemp("dsir_ray")
    half = N_RAW // 2
    jsonl, text, target_file = folder / "raw.jsonl", folder / "raw.txt", folder / "target.txt"
    with open(jsonl, "w", encoding="utf-8") as f:
        for i, doc in enumerate(raw[:half]):
            f.write(json.dumps({"text": doc}) + ("\n\n" if i % 1000 == 0 else "\n"))  # blank lines are skipped
    with open(text, "w", encoding="utf-8", newline="") as f:
        f.write("\r\n".join(raw[half:]))  # Windows line ends, no final one
    target_file.write_text("\n".join(target) + "\n", encoding="utf-8")
    return {"raw": raw, "target": target, "files": [jsonl, text], "target_file": target_file}


def assert_same(got, expected):
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.log_weights, expected.log_weights)  # to the bit
    np.testing.assert_array_equal(got.log_ratio, expected.log_ratio)
    assert got.texts == expected.texts and got.corpus_size == expected.corpus_size


def test_ray_selects_what_one_process_selects_from_a_list(cluster, corpus):
    expected = select(corpus["raw"], corpus["target"], k=K, seed=3)
    assert len(set(expected.indices.tolist())) == K
    assert_same(select(corpus["raw"], corpus["target"], k=K, seed=3, engine="ray"), expected)


@pytest.fixture(scope="module")
def from_files(corpus):
    """The single-process selection from the files (seed 3)."""
    return select(corpus["files"], corpus["target_file"], k=K, seed=3)


def test_ray_selects_what_one_process_selects_from_files(cluster, corpus, from_files):
    chunks = dsir_ray.file_chunks(corpus["files"], dsir_ray._chunk_bytes(corpus["files"], 2))
    assert len({path for path, _, _ in chunks}) == 2 and len(chunks) >= 6  # several ranges in each file
    assert from_files.texts == [corpus["raw"][i] for i in from_files.indices]  # the files hold the list's documents
    assert_same(select(corpus["files"], corpus["target_file"], k=K, seed=3, engine="ray"), from_files)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_byte_ranges_read_every_line_once(tmp_path, suffix):
    lines = ["first", "", "crlf\r", "lone\rcr", "naïve 東京 😀", "", "   ", "last"]
    if suffix == ".jsonl":
        lines = [json.dumps({"text": line}) if line.strip() else line for line in lines]
    path = tmp_path / f"corpus{suffix}"
    path.write_bytes("\n".join(lines).encode("utf-8"))  # no final newline
    expected = list(read_file(path))
    assert len(expected) == (9 if suffix == ".txt" else 5)  # text mode: "lone\rcr" is two lines
    for size in range(1, path.stat().st_size + 2):
        chunks = dsir_ray.file_chunks([path], size)
        assert chunks[0][1] == 0 and chunks[-1][2] == path.stat().st_size
        assert all(a[2] == b[1] for a, b in zip(chunks, chunks[1:]))
        assert [doc for c in chunks for doc in dsir_ray.chunk_documents(*c)] == expected, size


def test_many_small_ranges_and_ranges_without_documents(cluster, monkeypatch, tmp_path):
    monkeypatch.setattr(dsir_ray, "CHUNK_BYTES", (1024, 1024))
    path = tmp_path / "raw.jsonl"
    docs = topic_corpus(60, seed=2)
    path.write_text("".join(json.dumps({"text": d}) + "\n" * (1 + 2500 * (i % 20 == 19)) for i, d in enumerate(docs)))
    chunks = dsir_ray.file_chunks([path], 1024)
    assert sum(not dsir_ray.chunk_documents(*c) for c in chunks) >= 3  # ranges of blank lines, the last one too
    assert not dsir_ray.chunk_documents(*chunks[-1])
    expected = select(path, docs[:5], k=10, seed=1)
    assert_same(select(path, docs[:5], k=10, seed=1, engine="ray"), expected)
    # a one-shot target, counted in the driver: the raw corpus itself, so every log w is 0 and the Gumbel noise
    # alone draws (uniformly), keyed by the document ids
    uniform = select(path, iter(docs), k=10, seed=4, engine="ray", texts=False)
    assert uniform.texts is None and not uniform.log_weights.any()
    assert uniform.indices.tolist() == gumbel_top_k(np.zeros(len(docs)), 10, seed=4).tolist()


def test_a_malformed_jsonl_line_is_named_as_in_one_process(cluster, tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("".join(json.dumps({"text": f"doc {i} a b"}) + "\n" for i in range(200)))
    bad.write_text(good.read_text() + '{"body": 1}\n')
    with pytest.raises(ValueError) as error:
        select(bad, ["a b"], k=1, engine="ray")
    assert str(error.value) == f"{bad}:201: no string field 'text' (found keys ['body']); name the text field " \
                               f"with text_field="  # the error itself, not Ray's wrapper with its traceback
    with pytest.raises(ValueError, match=r"k=300 is larger than the raw corpus \(200 documents\)"):
        select(good, ["a b"], k=300, engine="ray")


def test_cli_engine_ray_writes_the_selected_lines(cluster, corpus, from_files, tmp_path, capsys):
    out = tmp_path / "selected.txt"
    assert main(["select", *map(str, corpus["files"]), "--target", str(corpus["target_file"]), "-k", str(K),
                 "--seed", "3", "--engine", "ray", "--out", str(out)]) == 0
    assert f"selected {K} of {N_RAW} documents" in capsys.readouterr().err
    expected = "".join(selected_lines(corpus["files"], from_files.indices.tolist()))  # what --engine local writes
    assert out.read_text(encoding="utf-8") == expected and expected.count("\n") == K


def test_missing_ray_names_the_extra_before_any_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    missing = tmp_path / "not-read.jsonl"  # an ImportError, not a FileNotFoundError: nothing was read
    with pytest.raises(ImportError, match=r"pip install 'decoding\[ray\]'"):
        select(missing, ["a b"], k=1, engine="ray")
    assert main(["select", str(missing), "--target", str(missing), "-k", "1", "--engine", "ray"]) == 1
    assert "pip install 'decoding[ray]'" in capsys.readouterr().err


def test_unknown_engine_and_misplaced_address_are_refused(capsys):
    with pytest.raises(ValueError, match="engine must be one of 'local', 'ray', got 'spark'"):
        select(["a b"], ["a b"], k=1, engine="spark")
    with pytest.raises(ValueError, match="ray_address='ray://head:10001' needs engine='ray'"):
        select(["a b"], ["a b"], k=1, ray_address="ray://head:10001")
    for extra in (["--engine", "spark"], ["--ray-address", "ray://head:10001"]):
        with pytest.raises(SystemExit) as exit_:
            main(["select", "raw.jsonl", "--target", "t.jsonl", "-k", "1", *extra])
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'spark'" in err and "--ray-address needs --engine ray" in err
