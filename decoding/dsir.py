"""DSIR: select the k documents of a raw corpus that resemble a target corpus, by importance resampling.

S. M. Xie, S. Santurkar, T. Ma, P. Liang, "Data Selection for Language Models via Importance Resampling",
NeurIPS 2023 (Sec. 4, "hashed n-gram features"). With the paper's notation, p the target's law and q the raw's:

- feat(x) in N^B: the counts of x's hashed unigrams .. n-grams in B buckets (``kernels.hashing``);
- the bag-of-n-grams models of the two corpora: gamma_raw = sum_{x in raw} feat(x) / (its total), gamma_tgt
  likewise over the target corpus;
- log w(x) = feat(x) . (log(gamma_tgt + eps) - log(gamma_raw + eps)), the log importance weight p(x) / q(x)
  under those models; eps = 1e-8 as in the reference package ``data-selection`` (a bucket the target never saw
  costs about log(1e-8) per occurrence instead of -inf);
- k documents without replacement: the top k of log w(x_i) + G_i, G_i iid Gumbel(0, 1). This draws like k
  successive draws, each proportional to w among the documents not yet drawn (W. Kool, H. van Hoof, M. Welling,
  "Stochastic beams and where to find them", ICML 2019); with k = 1, document i has probability w_i / sum_j w_j.

Design decisions:

- Streaming, two passes over the raw corpus: the first counts gamma_raw, the second computes log w and keeps a
  running top k (k documents, never the corpus). The raw corpus must therefore be readable twice: a list or
  other sequence of strings, a file path, or file paths. A one-shot iterator (a generator) is refused with a
  TypeError saying so: storing its features for a second look would hold the corpus in memory in another
  form. The target corpus is read once and may be any iterable.
- Files: a ``str`` or ``os.PathLike`` is one file, a list of ``os.PathLike`` several (read in order; a list of
  ``str`` is a list of documents). ``*.jsonl`` / ``*.json`` files hold one JSON object per line, the document
  in ``text_field`` (blank lines skipped); other files hold one document per line (blank lines are empty
  documents, so document i is line i).
- Randomness: G_i comes from a counter-based stream keyed by ``seed`` (``kernels.random``): a function of
  (seed, i) alone, so the selection is the same from a list, from files, in any batch size, in any process.
- ``engine="ray"`` runs both passes and the top k as a Ray Data pipeline (:mod:`decoding.dsir_ray`, the extra
  ``decoding[ray]``): document i keeps its id i as a column, hence its noise, and its weight is the same kernel's
  sum, so the cluster selects exactly what this process selects.
- The result, :class:`Selection`, lists the selected documents in corpus order (ascending index), which is
  the order a second pass over a file meets them; sort by ``log_weights`` for a ranking.
- Differences from ``data-selection``'s ``HashedNgramDSIR``: bucket ids come from a fast stable hash, not
  SHA-256 (same tokens and n-grams, other collisions); gamma_raw is fitted on the whole raw corpus (it stops at
  10^9 features by default); no minimum document length is imposed (it drops documents under 100 tokens); the
  Gumbel noise is seeded.

Example:
    >>> raw = ["the cat sat on the mat", "stock prices fell sharply today", "a dog sat on a mat",
    ...        "bond yields rose again today"]
    >>> selection = select(raw, ["my cat sat on the rug", "the dog sat on the mat"], k=2, seed=0)
    >>> selection.indices.tolist(), selection.texts
    ([0, 2], ['the cat sat on the mat', 'a dog sat on a mat'])
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np

from decoding.kernels.hashing import char_classes, dot_features, encode, ngram_buckets
from decoding.kernels.random import RowStreams, row_keys
from decoding.progress import progress_bar
from decoding.samplers.base import check_int

EPS = 1e-8  # added to every bucket probability before the log, as data-selection does
BATCH = 2048  # documents per kernel call
JSONL_SUFFIXES = (".jsonl", ".json")
ENGINES = ("local", "ray")  # where select runs: this process, or a Ray cluster (decoding.dsir_ray)

Corpus = Union[str, os.PathLike, Sequence[os.PathLike], Iterable[str]]


# --- reading corpora --------------------------------------------------------------------------------------------


def read_file(path: str | os.PathLike, text_field: str = "text") -> Iterator[str]:
    """The documents of one file (see the module docstring for the formats).

    Raises:
        ValueError: a JSONL line that is not a JSON object with a string ``text_field`` (file and line named).
    """
    return parse_lines(_open_lines(path), path, text_field)


def parse_lines(lines: Iterable[str], path: str | os.PathLike, text_field: str = "text") -> Iterator[str]:
    """The documents held by ``lines``, lines of the file ``path`` (or of a part of it) as text mode reads them;
    :func:`read_file` with the file's lines. Line numbers in errors count from the first of ``lines``."""
    if not _is_jsonl(path):
        for line in lines:
            yield line.rstrip("\n")
        return
    for number, line in _nonblank(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err.msg}); a JSONL corpus holds one JSON "
                             f"object per line") from None
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            found = f"keys {sorted(record)}" if isinstance(record, dict) else f"a {type(record).__name__}"
            raise ValueError(f"{path}:{number}: no string field {text_field!r} (found {found}); "
                             f"name the text field with text_field=")
        yield text


def document_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of ``path`` that hold documents, as read (newline included): every line of a text file, the
    non-blank lines of a JSONL file; document i of :func:`read_file` comes from line i of these."""
    if _is_jsonl(path):
        return (line for _, line in _nonblank(_open_lines(path)))
    return _open_lines(path)


def selected_lines(paths: Sequence[str | os.PathLike], indices: Sequence[int]) -> Iterator[str]:
    """The document lines (:func:`document_lines`) of the files ``paths``, read in order, whose document index is
    in ``indices`` (ascending, as :class:`Selection` gives them), each ending with a newline; stops after the last.

    Example:
        >>> list(selected_lines(["corpus.jsonl"], [0, 2]))                   # doctest: +SKIP
        ['{"text": "first"}\\n', '{"text": "third"}\\n']
    """
    wanted = iter(indices)
    target = next(wanted, None)
    index = 0
    for path in paths:
        for line in document_lines(path):
            if target is None:
                return
            if index == target:
                yield line if line.endswith("\n") else line + "\n"
                target = next(wanted, None)
            index += 1


def _is_jsonl(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in JSONL_SUFFIXES


def _open_lines(path: str | os.PathLike) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        yield from f


def _nonblank(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """The non-blank ``lines`` (of a JSONL file) with their 1-based line numbers."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield number, line


class Files:
    """The documents of files (:func:`read_file`), read in order; iterating again reads them again."""

    def __init__(self, paths: Sequence[str | os.PathLike], text_field: str = "text"):
        self.paths, self.text_field = list(paths), text_field
        for path in self.paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f"no such file: {os.fspath(path)!r}")

    def __iter__(self) -> Iterator[str]:
        for path in self.paths:
            yield from read_file(path, self.text_field)

    def __repr__(self) -> str:
        return f"Files({[os.fspath(p) for p in self.paths]!r})"


def documents(corpus: Corpus, text_field: str = "text", name: str = "corpus", twice: bool = False) -> Iterable[str]:
    """The documents of ``corpus``: a path (str or PathLike) or a list of PathLikes become :class:`Files`; any
    other iterable is taken as the documents themselves.

    Args:
        twice: the caller reads the corpus twice: a one-shot iterator is refused.

    Raises:
        TypeError: ``corpus`` is not iterable, or ``twice`` and it is a one-shot iterator (the message names
            ``name`` and says what to pass instead).
        FileNotFoundError: a path that is not a file.
    """
    if isinstance(corpus, (str, os.PathLike)):
        return Files([corpus], text_field)
    if isinstance(corpus, (list, tuple)) and corpus and isinstance(corpus[0], os.PathLike):
        return Files(corpus, text_field)
    if isinstance(corpus, (bytes, bytearray)) or not isinstance(corpus, Iterable):
        raise TypeError(f"{name} must be a file path, a list of paths or an iterable of str documents, "
                        f"got a {type(corpus).__name__}")
    if twice and iter(corpus) is corpus:
        raise TypeError(f"{name} is a one-shot iterator ({type(corpus).__name__}), but DSIR reads the raw corpus "
                        f"twice (counts, then weights); pass a list of documents, a file path or a list of paths")
    return corpus


def _batches(docs: Iterable[str]) -> Iterator[list[str]]:
    """``docs`` in lists of :data:`BATCH` (the last one shorter)."""
    iterator = iter(docs)
    while batch := list(itertools.islice(iterator, BATCH)):
        yield batch


# --- features, models, weights ----------------------------------------------------------------------------------


class Features(NamedTuple):
    """The hashed n-gram features of a batch of documents in CSR form: document d's bucket ids (one per feature
    occurrence) are ``ids[offsets[d]:offsets[d + 1]]``."""

    offsets: np.ndarray  # int64 [D + 1]
    ids: np.ndarray  # int64 [F]
    buckets: int

    def counts(self) -> np.ndarray:
        """The dense count vectors feat(x_d): int64 [D, buckets]."""
        D = len(self.offsets) - 1
        rows = np.repeat(np.arange(D), np.diff(self.offsets))
        out = np.zeros((D, self.buckets), dtype=np.int64)
        np.add.at(out, (rows, self.ids), 1)
        return out


def featurize(texts: Sequence[str], ngrams: int = 2, buckets: int = 10_000) -> Features:
    """The hashed unigram .. ``ngrams``-gram features of ``texts`` (one kernel call; see ``kernels.hashing``).

    Example:
        >>> f = featurize(["To be, or not to be.", ""], ngrams=2, buckets=100)
        >>> np.diff(f.offsets).tolist()     # 8 tokens + 7 bigrams; none in the empty document
        [15, 0]
        >>> f.counts().shape
        (2, 100)
    """
    codepoints, offsets = encode(texts)
    feature_offsets, ids = ngram_buckets(codepoints, offsets, char_classes(), ngrams, buckets)
    return Features(feature_offsets, ids, buckets)


def bucket_counts(corpus: Iterable[str], ngrams: int = 2, buckets: int = 10_000,
                  progress: bool = False, desc: str = "counting") -> tuple[np.ndarray, int]:
    """The summed feature counts of a corpus (the numerator of its gamma) and its number of documents, in one
    streaming pass: (int64 [buckets], documents)."""
    counts = np.zeros(buckets, dtype=np.int64)
    n = 0
    with progress_bar(desc=desc, unit=" docs", total=_length(corpus), disable=not progress) as bar:
        for batch in _batches(corpus):
            counts += np.bincount(featurize(batch, ngrams, buckets).ids, minlength=buckets)
            n += len(batch)
            bar.update(len(batch))
    return counts, n


def log_ratio(target_counts: np.ndarray, raw_counts: np.ndarray) -> np.ndarray:
    """log(gamma_tgt + eps) - log(gamma_raw + eps) per bucket, float64 [B]: a document's log weight is its
    count vector dotted with this. Both count vectors need a positive total."""
    gamma_tgt = target_counts / target_counts.sum()
    gamma_raw = raw_counts / raw_counts.sum()
    return np.log(gamma_tgt + EPS) - np.log(gamma_raw + EPS)


def weighted_batches(corpus: Iterable[str], ratio: np.ndarray, ngrams: int = 2, progress: bool = False,
                     desc: str = "weighting") -> Iterator[tuple[list[str], np.ndarray]]:
    """The corpus in batches, each with its documents' log weights ``feat(x) . ratio`` (float64 [D])."""
    with progress_bar(desc=desc, unit=" docs", total=_length(corpus), disable=not progress) as bar:
        for batch in _batches(corpus):
            features = featurize(batch, ngrams, len(ratio))
            yield batch, dot_features(features.offsets, features.ids, ratio)
            bar.update(len(batch))


def log_weights(corpus: Iterable[str], ratio: np.ndarray, ngrams: int = 2) -> np.ndarray:
    """Every document's log importance weight, float64 [N] (N floats in memory; :func:`select` keeps k).

    Example:
        >>> raw = ["a cat", "a dog", "a cat and a dog"]
        >>> ratio = log_ratio(bucket_counts(["cat"])[0], bucket_counts(raw)[0])
        >>> log_weights(raw, ratio).argmax()
        np.int64(0)
    """
    chunks = [w for _, w in weighted_batches(corpus, ratio, ngrams)]
    return np.concatenate(chunks) if chunks else np.zeros(0)


def _length(corpus: Iterable[str]) -> int | None:
    return len(corpus) if isinstance(corpus, Sequence) else None


# --- Gumbel top-k -----------------------------------------------------------------------------------------------


class GumbelTopK:
    """The k largest ``log_weight + Gumbel`` keys of a stream of items, holding O(k + batch) items.

    Item i gets the noise G_i = -log(-log(u_i)), u_i the i-th uniform of the counter-based stream keyed by
    ``seed``: a function of (seed, i) alone. Items are numbered over every :meth:`push`, or by the ``ids`` a push
    gives them, so the result does not depend on how the items are split into pushes, nor (with ids) on their
    order or on the process that pushed them (``decoding.dsir_ray`` keeps a top k per block of the corpus, then
    merges those with one more instance). Candidates are pruned to the best k once 2k + :data:`BATCH` have
    gathered (linear time overall), and after the first pruning an item below the k-th best key so far is
    dropped as it arrives.

    Example:
        >>> top = GumbelTopK(k=1, seed=0)
        >>> top.push(np.log([0.001, 1000.0, 0.001]))
        >>> top.result()[0].tolist()
        [1]
    """

    def __init__(self, k: int, seed: int = 0):
        self.k = check_int("k", k, 1, " (the number of documents to select)")
        self.key = row_keys(seed, 1)[0]
        self.seen = 0
        self.threshold = -np.inf
        self.keys = np.zeros(0)
        self.index = np.zeros(0, dtype=np.int64)
        self.log_weights = np.zeros(0)
        self.items: np.ndarray | None = None

    def push(self, log_weights: np.ndarray, items: Sequence | None = None, ids: np.ndarray | None = None) -> None:
        """Offer the next ``len(log_weights)`` items (``items``: what to keep of each, e.g. its text; ``ids``:
        their numbers, int64, distinct over all pushes; default: the next ``len(log_weights)`` numbers)."""
        n = len(log_weights)
        index = np.arange(self.seen, self.seen + n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        u = RowStreams(np.full(n, self.key), index.astype(np.uint64)).uniform().numpy()  # u_i: draw i of the stream
        keys = log_weights - np.log(-np.log(u))
        self.seen += n
        keep = keys > self.threshold
        self.keys = np.concatenate([self.keys, keys[keep]])
        self.index = np.concatenate([self.index, index[keep]])
        self.log_weights = np.concatenate([self.log_weights, log_weights[keep]])
        if items is not None:
            kept = np.empty(n, dtype=object)
            kept[:] = items
            self.items = kept[keep] if self.items is None else np.concatenate([self.items, kept[keep]])
        if len(self.keys) >= 2 * self.k + BATCH:
            self._prune()

    def _prune(self) -> None:
        if len(self.keys) > self.k:
            best = np.argpartition(-self.keys, self.k - 1)[: self.k]
            self.keys, self.index, self.log_weights = self.keys[best], self.index[best], self.log_weights[best]
            if self.items is not None:
                self.items = self.items[best]
        if len(self.keys) == self.k:
            self.threshold = self.keys.min()

    def result(self) -> tuple[np.ndarray, np.ndarray, list | None]:
        """The best k (fewer if fewer were pushed) in push order: (indices int64, log weights, items or None)."""
        self._prune()
        order = np.argsort(self.index)
        items = None if self.items is None else self.items[order].tolist()
        return self.index[order], self.log_weights[order], items


def gumbel_top_k(log_weights: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k distinct indices, ascending, drawn without replacement proportionally to exp(log_weights): the top k of
    log w + Gumbel noise, the noise of :class:`GumbelTopK` (so :func:`select` draws the same from these weights).

    Example:
        >>> gumbel_top_k(np.log([1.0, 1e-9, 1.0, 1e-9]), k=2, seed=3).tolist()
        [0, 2]
    """
    log_weights = np.asarray(log_weights, dtype=np.float64)
    if not 1 <= k <= len(log_weights):
        raise ValueError(f"k must be in 1 .. {len(log_weights)} (the number of weights), got {k}")
    top = GumbelTopK(k, seed)
    top.push(log_weights)
    return top.result()[0]


# --- selection --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What :func:`select` returns.

    Attributes:
        indices: int64 [k], the selected documents' positions in the raw corpus (0-based), ascending.
        log_weights: float64 [k], their log importance weights log w(x) (without the Gumbel noise).
        texts: their texts (None with ``texts=False``).
        corpus_size: the number of documents in the raw corpus.
        log_ratio: float64 [buckets], log(gamma_tgt + eps) - log(gamma_raw + eps), the fitted weight model.
    """

    indices: np.ndarray
    log_weights: np.ndarray
    texts: list[str] | None
    corpus_size: int
    log_ratio: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


def select(raw_texts: Corpus, target_texts: Corpus, k: int, ngrams: int = 2, buckets: int = 10_000, seed: int = 0,
           *, text_field: str = "text", texts: bool = True, progress: bool = False, engine: str = "local",
           ray_address: str | None = None) -> Selection:
    """Select k documents of ``raw_texts`` without replacement, with probabilities following the importance
    weights p(x) / q(x) of the target corpus's law p over the raw corpus's q (DSIR; see the module docstring).

    Args:
        raw_texts: the raw corpus, read twice: a sequence of str documents, a file path or a list of paths.
        target_texts: the target corpus, read once: any iterable of str, a file path or a list of paths.
        k: how many documents to select, 1 .. the raw corpus's size.
        ngrams: features are the unigrams .. ``ngrams``-grams (2: unigrams and bigrams, as the paper).
        buckets: hash buckets B (10,000 in the paper).
        seed: the Gumbel noise's seed (same seed, same selection).
        text_field: the field holding the text in JSONL files.
        texts: keep the selected documents' texts (k strings in memory).
        progress: tqdm bars on stderr, one per pass (Ray Data's progress bars with ``engine="ray"``).
        engine: ``"local"``, this process; ``"ray"``, a Ray Data pipeline over the CPUs of a Ray cluster
            (:mod:`decoding.dsir_ray`), which selects the same documents.
        ray_address: with ``engine="ray"``, the cluster to join when Ray is not initialised yet (``ray.init``'s
            ``address``); None starts a local cluster (or joins ``RAY_ADDRESS``).

    Returns:
        a :class:`Selection`, documents in corpus order.

    Raises:
        ValueError: k, ngrams or buckets out of range (before reading anything when the corpus has a length),
            an empty corpus, a corpus without a single token, a malformed JSONL line, an unknown engine.
        TypeError: a one-shot iterator as ``raw_texts``, or a document that is not a str.
        ImportError: ``engine="ray"`` without Ray installed (the message names the extra).

    Example:
        >>> s = select(["a b c", "x y z", "a b"], ["a b a b"], k=1)
        >>> s.indices.tolist(), s.corpus_size
        ([2], 3)
    """
    check_int("k", k, 1, " (the number of documents to select)")
    check_int("ngrams", ngrams, 1, " (1: unigrams only; 2: unigrams and bigrams, the paper's choice)")
    check_int("buckets", buckets, 1, " (the number of hash buckets; the paper uses 10000)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    if ray_address is not None and engine != "ray":
        raise ValueError(f"ray_address={ray_address!r} needs engine='ray'")
    if engine == "ray":
        from decoding import dsir_ray  # the optional engine (imports Ray)

        dsir_ray.require_ray()
    raw = documents(raw_texts, text_field, "raw_texts", twice=True)
    if isinstance(raw, Sequence):
        _check_size(k, len(raw))
    target = documents(target_texts, text_field, "target_texts")
    if engine == "ray":
        return dsir_ray.select(raw, target, k, ngrams, buckets, int(seed), texts=texts, progress=progress,
                               address=ray_address)

    ratio, n_raw = fit(raw, target, ngrams, buckets, progress)
    _check_size(k, n_raw)

    top = GumbelTopK(k, seed)
    for batch, weights in weighted_batches(raw, ratio, ngrams, progress, "dsir: weighting"):
        top.push(weights, batch if texts else None)
    if top.seen != n_raw:
        raise ValueError(f"raw_texts gave {n_raw} documents on the first pass and {top.seen} on the second; "
                         f"pass a corpus that reads the same twice")
    indices, weights, kept = top.result()
    return Selection(indices, weights, kept, n_raw, ratio)


def fit(raw: Iterable[str], target: Iterable[str], ngrams: int, buckets: int,
        progress: bool = False) -> tuple[np.ndarray, int]:
    """DSIR's fit: the log importance ratio of each hash bucket, log p_target - log p_raw ([buckets]), and the
    number of raw documents. One pass over each corpus; a corpus without documents or tokens is a ValueError."""
    target_counts, n_target = bucket_counts(target, ngrams, buckets, progress, "dsir: target counts")
    _check_counts("target_texts", target_counts, n_target)
    raw_counts, n_raw = bucket_counts(raw, ngrams, buckets, progress, "dsir: raw counts")
    _check_counts("raw_texts", raw_counts, n_raw)
    return log_ratio(target_counts, raw_counts), n_raw


def _check_size(k: int, n: int) -> None:
    if n == 0:
        raise ValueError("raw_texts is empty: pass at least one document")
    if k > n:
        raise ValueError(f"k={k} is larger than the raw corpus ({n} documents); select at most k={n}")


def _check_counts(name: str, counts: np.ndarray, n: int) -> None:
    if n == 0:
        raise ValueError(f"{name} is empty: pass at least one document")
    if counts.sum() == 0:
        raise ValueError(f"{name} has no tokens in its {n} documents (all empty or whitespace); "
                         f"its n-gram distribution is undefined")
