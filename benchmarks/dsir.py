"""DSIR corpus selection (``decoding.dsir``) against the reference package ``data-selection``.

Part of ``decoding bench sir``: :func:`measure` returns its rows and settings. A synthetic corpus, generated
here deterministically (:func:`synthetic_corpus`): raw documents from four "domains", each a Zipf law over its
own vocabulary of pseudo-words (with a shared core of frequent words, capitalised words and punctuation), mixed
40/30/20/10 %; the target corpus is fresh documents of the rarest domain. Both are written to JSONL files,
and both implementations read those files, single-process (``data-selection`` with ``num_proc=1``: joblib then
runs in this process).

Timed, round-robin over repeats (medians): fitting the two bag-of-n-grams models (a pass over the raw and the
target corpus), and weighting (log w of every raw document, a second pass over the raw corpus). Reported per
stage: raw documents per second for each side and the speedup. Agreement: the correlation of the two log
weights (they share tokens, n-grams and smoothing; the buckets differ because ``data-selection`` hashes with
SHA-256), the overlap of the top 10 % by log weight, and the share of the target domain in each top 10 %. An
exactness check runs ``data-selection`` with its hash replaced by ours (``feature_hash``) on a small slice:
its log weights must then equal ours to rounding, which shows the feature definitions are the same.

Example:
    >>> rows, settings = measure(quick=True, progress=False)           # doctest: +SKIP
    >>> table_rows(rows, width=4)[0]                                    # doctest: +SKIP
    ['dsir fit', 'decoding 35,649 docs/s', 'data-selection 1,158 docs/s', 'speedup 30.8x']
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from decoding.bench import time_interleaved
from decoding.kernels.hashing import feature_hash
from decoding.dsir import Files, fit, log_weights

MIXTURE = (0.4, 0.3, 0.2, 0.1)  # share of each domain in the raw corpus; the target is the last domain
SUFFIXES = ("", ",", ".", "!", "?", ";", ":", "'s")
SUFFIX_LAW = (0.86, 0.05, 0.05, 0.01, 0.01, 0.005, 0.005, 0.01)
VOCABULARY, SHARED, POOL = 4000, 300, 30_000  # words per domain, of which shared by all domains; pseudo-words
LENGTHS = (40, 240)  # words per document, uniform
SIZES = {"quick": (2_000, 400), "full": (50_000, 5_000)}  # (raw documents, target documents)
REPEATS = {"quick": 1, "full": 3}
EXACT_SLICE = (300, 100)  # raw and target documents of the exactness check
TOP_SHARE = 0.1
UNICODE = [  # added to the exactness slice: case changes, combining marks, digits, symbols, scripts
    "Ça va? NAÏVE café — “quoted”, ½ and x² İstanbul ΣΟΦΟΣ.",
    "Zoë's co-op: 3.14 ≈ π!! (a\u0301) naïve\u0308",
    "東京は晴れ。 서울 — नमस्ते दुनिया, مرحبا 😀👍 ...",
    "tab\there\x1cand\x1f\u00a0nbsp\u2028line",
]
SEED = 0
NGRAMS, BUCKETS = 2, 10_000


def synthetic_corpus(n_raw: int, n_target: int, seed: int = SEED) -> tuple[list[str], np.ndarray, list[str]]:
    """(raw documents, the domain of each raw document int64 [n_raw], target documents), the same for the same
    arguments on any machine (numpy's PCG64)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    pool = ["".join(rng.choice(letters, size=n)) for n in rng.integers(2, 10, size=POOL)]
    domains = []
    for _ in MIXTURE:
        words = [pool[i] for i in range(SHARED)] + [pool[i] for i in rng.choice(np.arange(SHARED, POOL),
                                                                                 VOCABULARY - SHARED, replace=False)]
        words = [words[i] for i in rng.permutation(VOCABULARY)]
        forms = np.array([w.capitalize() if cap else w for w in words for cap in (0, 1)], dtype=object)
        forms = np.array([f + s for f in forms for s in SUFFIXES], dtype=object)  # (word, cap, suffix) -> form
        law = 1.0 / np.arange(1, VOCABULARY + 1) ** 1.1
        domains.append((forms, law / law.sum()))
    raw_domain = rng.choice(len(MIXTURE), size=n_raw, p=MIXTURE)
    raw = [_document(rng, *domains[d]) for d in raw_domain]
    target = [_document(rng, *domains[-1]) for _ in range(n_target)]
    return raw, raw_domain.astype(np.int64), target


def _document(rng: np.random.Generator, forms: np.ndarray, law: np.ndarray) -> str:
    n = int(rng.integers(*LENGTHS))
    word = rng.choice(len(law), size=n, p=law)
    cap = rng.random(n) < 0.1
    suffix = rng.choice(len(SUFFIXES), size=n, p=SUFFIX_LAW)
    return " ".join(forms[(word * 2 + cap) * len(SUFFIXES) + suffix])


def write_jsonl(path: Path, texts: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    return path


def measure(quick: bool, progress: bool) -> tuple[list[dict], dict]:
    """Time and compare both implementations on the synthetic corpus; (rows, settings) for ``bench sir``.

    Rows: one per stage (``fit``, ``weights``, ``fit + weights``) with raw documents per second for each side
    and the speedup (data-selection's time / ours), then one ``agreement`` row. Without ``data-selection``
    installed, its columns are None and ``settings["peer"]`` says why.
    """
    mode = "quick" if quick else "full"
    n_raw, n_target = SIZES[mode]
    raw, domain, target = synthetic_corpus(n_raw, n_target)
    peer = _peer()
    settings = {
        "corpus": f"synthetic: {len(MIXTURE)} domains (Zipf 1.1 over {VOCABULARY} pseudo-words each, {SHARED} "
                  f"shared), mixed {'/'.join(f'{p:.0%}' for p in MIXTURE)}; target = the last domain",
        "raw_documents": n_raw, "target_documents": n_target, "words_per_document": f"uniform {LENGTHS}",
        "raw_characters": sum(map(len, raw)), "seed": SEED, "ngrams": NGRAMS, "buckets": BUCKETS,
        "repeats": REPEATS[mode], "processes": "1 each (data-selection num_proc=1; decoding is single-threaded)",
        "input": "JSONL files on local disk, read by each implementation",
        "top_share": TOP_SHARE,
        "peer": "data-selection" if peer else "data-selection is not installed (pip install 'decoding[bench]')",
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw_path, target_path = write_jsonl(tmp / "raw.jsonl", raw), write_jsonl(tmp / "target.jsonl", target)
        exact = _exactness(tmp, raw[:EXACT_SLICE[0]] + UNICODE, target[:EXACT_SLICE[1]] + UNICODE[:2], peer)
        ours: dict = {}
        cases = {"decoding fit": lambda: ours.update(ratio=_fit(raw_path, target_path)),
                 "decoding weights": lambda: ours.update(weights=log_weights(Files([raw_path]), ours["ratio"], NGRAMS))}
        if peer:
            model = peer(raw_path, target_path, tmp / "cache")
            cases["data-selection fit"] = lambda: _quiet(model.fit_importance_estimator, num_tokens_to_fit="all")
            cases["data-selection weights"] = lambda: _quiet(model.compute_importance_weights)
        times = time_interleaved(cases, REPEATS[mode], warmup=0, desc="bench dsir", progress=progress)
        peer_weights = np.load(tmp / "cache" / "log_importance_weights" / "0.npy") if peer else None
    rows = []
    for stage, names in (("fit", ["fit"]), ("weights", ["weights"]), ("fit + weights", ["fit", "weights"])):
        ours_s = sum(times[f"decoding {n}"] for n in names)
        peer_s = sum(times[f"data-selection {n}"] for n in names) if peer else None
        rows.append({"kind": "dsir", "case": stage, "raw_documents": n_raw, "decoding_s": ours_s,
                     "decoding_docs_per_s": n_raw / ours_s, "data_selection_s": peer_s,
                     "data_selection_docs_per_s": n_raw / peer_s if peer else None,
                     "speedup": peer_s / ours_s if peer else None})
    rows.append({"kind": "dsir", "case": "agreement", **_agreement(ours["weights"], peer_weights, domain), **exact})
    return rows, settings


def table_rows(rows: list[dict], width: int) -> list[list[str]]:
    """The DSIR rows as table lines of ``width`` cells (the first names the row; blanks pad the rest)."""
    lines = []
    for r in rows:
        if r["case"] != "agreement":
            cells = [f"decoding {r['decoding_docs_per_s']:,.0f} docs/s"]
            if r["speedup"] is not None:
                cells += [f"data-selection {r['data_selection_docs_per_s']:,.0f} docs/s",
                          f"speedup {r['speedup']:.1f}x"]
        else:
            cells = [f"top {TOP_SHARE:.0%} target share {r['target_share_decoding']:.2f}"]
            if "pearson" in r:
                cells += [f"vs data-selection: {r['target_share_data_selection']:.2f}",
                          f"top {TOP_SHARE:.0%} overlap {r['top_k_overlap']:.3f}", f"pearson {r['pearson']:.4f}",
                          f"same hash: max rel diff {r['same_hash_max_rel_diff']:.0e}"]
        lines.append([f"dsir {r['case']}"] + cells[: width - 1] + [""] * (width - 1 - len(cells)))
    return lines


def plot(axes, rows: list[dict]) -> None:
    """Documents per second of each stage, both implementations (log scale), the speedup over each pair."""
    stages = [r for r in rows if r["case"] != "agreement"]
    x = np.arange(len(stages))
    axes.bar(x - 0.2, [r["decoding_docs_per_s"] for r in stages], 0.4, label="decoding (numba)")
    if stages and stages[0]["speedup"] is not None:
        axes.bar(x + 0.2, [r["data_selection_docs_per_s"] for r in stages], 0.4, label="data-selection")
        for i, r in enumerate(stages):
            axes.annotate(f"{r['speedup']:.0f}x", (i, r["decoding_docs_per_s"]), ha="center", va="bottom")
    axes.set_xticks(x, [r["case"] for r in stages])
    axes.set_yscale("log")
    axes.set_ylabel("raw documents / s (one process)")
    axes.set_title("DSIR weighting")
    axes.legend()


def _fit(raw_path: Path, target_path: Path) -> np.ndarray:
    return fit(Files([raw_path]), Files([target_path]), NGRAMS, BUCKETS)[0]


def _peer():
    """A factory of configured ``HashedNgramDSIR`` models, or None without data-selection."""
    try:
        from data_selection import HashedNgramDSIR
    except ImportError:
        return None

    def make(raw_path: Path, target_path: Path, cache: Path):
        return HashedNgramDSIR([str(raw_path)], [str(target_path)], cache_dir=str(cache), num_proc=1,
                               ngrams=NGRAMS, num_buckets=BUCKETS, min_example_length=0)
    return make


def _quiet(fn, *args, **kwargs):
    """Call ``fn`` with its tqdm bars (written to stderr) swallowed."""
    with contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def _agreement(ours: np.ndarray, peer: np.ndarray | None, domain: np.ndarray) -> dict:
    """How alike the two weightings are, and how much of the target domain each one's top share holds."""
    k = max(1, int(TOP_SHARE * len(ours)))
    target_domain = len(MIXTURE) - 1
    top_ours = np.argsort(-ours, kind="stable")[:k]
    out = {"top_k": k, "target_share_decoding": float(np.mean(domain[top_ours] == target_domain)),
           "target_share_raw": float(np.mean(domain == target_domain))}
    if peer is None:
        return out
    top_peer = np.argsort(-peer, kind="stable")[:k]
    common = len(np.intersect1d(top_ours, top_peer))
    ranks = [np.argsort(np.argsort(w, kind="stable"), kind="stable") for w in (ours, peer)]
    return {**out, "target_share_data_selection": float(np.mean(domain[top_peer] == target_domain)),
            "top_k_overlap": common / k, "top_k_jaccard": common / (2 * k - common),
            "pearson": float(np.corrcoef(ours, peer)[0, 1]), "spearman": float(np.corrcoef(*ranks)[0, 1])}


def _exactness(tmp: Path, raw: list[str], target: list[str], peer) -> dict:
    """Our log weights against data-selection's with its SHA-256 bucketing replaced by :func:`feature_hash`, on
    a slice: equal to rounding when tokenisation, n-grams, normalisation and smoothing all agree."""
    raw_path, target_path = write_jsonl(tmp / "raw_slice.jsonl", raw), write_jsonl(tmp / "target_slice.jsonl", target)
    ours = log_weights(Files([raw_path]), _fit(raw_path, target_path), NGRAMS)
    if not peer:
        return {}
    from data_selection import hashed_ngram_dsir

    original = hashed_ngram_dsir.hash_buckets
    hashed_ngram_dsir.hash_buckets = lambda text, num_buckets=BUCKETS: feature_hash(text.encode("utf-8")) % num_buckets
    try:
        model = peer(raw_path, target_path, tmp / "slice_cache")
        _quiet(model.fit_importance_estimator, num_tokens_to_fit="all")
        _quiet(model.compute_importance_weights)
    finally:
        hashed_ngram_dsir.hash_buckets = original
    theirs = np.load(tmp / "slice_cache" / "log_importance_weights" / "0.npy")
    return {"same_hash_documents": len(raw),
            "same_hash_max_abs_diff": float(np.max(np.abs(ours - theirs))),
            "same_hash_max_rel_diff": float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-300)))}
