"""DSIR on a Ray cluster: ``select(..., engine="ray")`` runs both passes and the top k as Ray Data pipelines.

The algorithm is :mod:`decoding.dsir`'s (S. M. Xie, S. Santurkar, T. Ma, P. Liang, "Data Selection for Language
Models via Importance Resampling", NeurIPS 2023), its steps spread over the CPUs of a Ray cluster with Ray Data
(``ray.data``, P. Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018): the
documents are rows ``(chunk, id, text)`` of a dataset, each step a ``map_batches`` over whole blocks.

1. Counts: every block's bucket counts (and its number of documents per chunk) come back to the driver, which
   sums them; the target corpus likewise (or in the driver when it is a one-shot iterator).
2. Weights and top k: the driver fits log(gamma_tgt + eps) - log(gamma_raw + eps) from the integer counts (the
   same float64 numbers as in one process) and ships it; each block weighs its documents and keeps its own top k
   of log w + Gumbel; the driver merges those (k per block at most travel back, never the corpus).

Exactly the single-process selection: a document's id is its position in the corpus order, carried as a column,
and its Gumbel noise is keyed by (seed, id) (:class:`decoding.dsir.GumbelTopK`); weights are the same kernel's
per-document sums, so neither blocks nor their order change a key.

Sources: a list of documents is cut into blocks in the driver (ids known). Files are cut into byte ranges ending
after a newline and read by the workers (line i of a file is read by one range only, as text mode reads it:
universal newlines, UTF-8); the first pass counts each range's documents, which numbers them for the second.
``ray.data.read_text``/``read_json`` are not used: they number no lines and split lines otherwise. Texts travel
as UTF-8 bytes (lone surrogates, which JSON may hold, pass). Workers import ``decoding``: install it on a
remote cluster's nodes.

Example:
    >>> import decoding as dc
    >>> s = dc.select(["a b c", "x y z", "a b"], ["a b a b"], k=1, engine="ray")   # doctest: +SKIP
    >>> s.indices.tolist()                                                          # doctest: +SKIP
    [2]
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence, Sized
from itertools import islice
from typing import Any

import numpy as np

from decoding.dsir import (BATCH, Files, GumbelTopK, Selection, _check_counts, _check_size, bucket_counts,
                           log_ratio, log_weights, parse_lines, read_file)

BLOCKS_PER_CPU = 4  # blocks per CPU of the cluster, for balance
MAX_BLOCK_DOCS = 16 * BATCH  # documents per block of a list
CHUNK_BYTES = (1 << 20, 64 << 20)  # bytes per range of a file: at least, at most
INSTALL = "pip install 'decoding[ray]'"


def require_ray() -> Any:
    """The ``ray`` module, with Ray Data; an ImportError naming the extra when it is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError(f"engine='ray' needs Ray Data, which is not installed: {INSTALL}") from err
    return ray


def select(raw: Iterable[str] | Files, target: Iterable[str], k: int, ngrams: int, buckets: int, seed: int, *,
           texts: bool = True, progress: bool = False, address: str | None = None) -> Selection:
    """:func:`decoding.dsir.select` on Ray (called by it with ``engine="ray"``, arguments checked): connects to
    the cluster at ``address`` (``ray.init``) unless Ray is already initialised; None starts a local one (or
    joins ``RAY_ADDRESS``), which stays up for the next call."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    with _data_context(ray, progress):
        target_counts, n_target = _target_counts(target, ngrams, buckets, cpus)
        _check_counts("target_texts", target_counts, n_target)
        source = _Source(raw, cpus)
        raw_counts, sizes = _counts(source.dataset(), source.chunks, ngrams, buckets)
        n_raw = int(sizes.sum())
        _check_counts("raw_texts", raw_counts, n_raw)
        _check_size(k, n_raw)
        ratio = log_ratio(target_counts, raw_counts)
        indices, weights, kept = _top_k(source.dataset(sizes), ratio, ngrams, k, seed, texts)
    return Selection(indices, weights, kept, n_raw, ratio)


# --- sources: a dataset of documents (chunk, id, text) ----------------------------------------------------------


class _Source:
    """A corpus as Ray datasets of documents, cut in ``chunks`` chunks: blocks of a list (made once, in the
    driver), byte ranges of files (read by the workers on each pass)."""

    def __init__(self, corpus: Iterable[str] | Files, cpus: int):
        self.files = corpus if isinstance(corpus, Files) else None
        if self.files is not None:
            self.ranges = file_chunks(self.files.paths, _chunk_bytes(self.files.paths, cpus))
            self.chunks = len(self.ranges)
        else:
            size = -(-len(corpus) // (BLOCKS_PER_CPU * cpus)) if isinstance(corpus, Sized) else MAX_BLOCK_DOCS
            self.blocks, self.chunks = _list_dataset(corpus, size)

    def dataset(self, sizes: np.ndarray | None = None) -> Any:
        """The documents; with the documents of each chunk (``sizes``, int64 [chunks]) they get their ids."""
        if self.files is None:
            return self.blocks
        import ray.data

        first = np.zeros(self.chunks, dtype=np.int64) if sizes is None else np.cumsum(sizes) - sizes
        rows = [{"chunk": c, "path": path, "start": start, "end": end, "first": int(first[c]),
                 "documents": -1 if sizes is None else int(sizes[c])}
                for c, (path, start, end) in enumerate(self.ranges)]
        return ray.data.from_items(rows).map_batches(_read_chunks, batch_size=1, batch_format="pyarrow",
                                                     fn_kwargs={"text_field": self.files.text_field})


def _list_dataset(docs: Iterable[str], block: int) -> tuple[Any, int]:
    """(the documents of ``docs``, ``block`` (at most :data:`MAX_BLOCK_DOCS`) per block, numbered from 0; the
    number of blocks)."""
    import ray.data

    block = max(1, min(block, MAX_BLOCK_DOCS))
    tables, iterator, first = [], iter(docs), 0
    while part := list(islice(iterator, block)):
        tables.append(_documents_table(len(tables), first, part))
        first += len(part)
    return ray.data.from_arrow(tables or [_documents_table(0, 0, [])]), len(tables)


def _documents_table(chunk: int, first: int, docs: list[str]) -> Any:
    import pyarrow as pa

    try:
        text = [doc.encode("utf-8", "surrogatepass") for doc in docs]
    except AttributeError:
        index, bad = next((i, d) for i, d in enumerate(docs) if not isinstance(d, str))
        raise TypeError(f"document {first + index} is a {type(bad).__name__}, expected a str") from None
    return pa.table({"chunk": np.full(len(docs), chunk, dtype=np.int64),
                     "id": np.arange(first, first + len(docs), dtype=np.int64),
                     "text": pa.array(text, pa.binary())})


def file_chunks(paths: Sequence[str | os.PathLike], size: int) -> list[tuple[str, int, int]]:
    """The files cut in byte ranges (path, start, end) of about ``size`` bytes, each ending just after a newline
    (or at the end of its file), in corpus order: the documents of the ranges, in order, are the files'.

    Example:
        >>> file_chunks(["corpus.txt"], 1 << 20)                         # doctest: +SKIP
        [('corpus.txt', 0, 1048601), ('corpus.txt', 1048601, 1500000)]
    """
    out = []
    for path in paths:
        length = os.path.getsize(path)
        with open(path, "rb") as f:
            start = 0
            while start < length:
                f.seek(start + size - 1)
                f.readline()  # to the end of the line holding byte start + size - 1
                out.append((os.fspath(path), start, min(f.tell(), length)))
                start = out[-1][2]
    return out


def chunk_documents(path: str | os.PathLike, start: int, end: int, text_field: str = "text") -> list[str]:
    """The documents of bytes [start, end) of ``path`` (a range of :func:`file_chunks`). A malformed JSONL line
    raises the error of the single-process reader, naming the file's first bad line."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        return list(parse_lines(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"), path, text_field))
    except ValueError:
        for _ in read_file(path, text_field):  # line numbers from the start of the file
            pass
        raise


def _read_chunks(rows: Any, text_field: str) -> Any:
    """map_batches: chunk rows (chunk, path, start, end, first, documents) -> their documents (chunk, id, text);
    ``documents`` >= 0 (the second pass) is checked: a file that changed since the first pass is an error."""
    import pyarrow as pa

    tables = []
    for row in rows.to_pylist():
        try:
            docs = chunk_documents(row["path"], row["start"], row["end"], text_field)
            if row["documents"] >= 0 and len(docs) != row["documents"]:
                raise ValueError(f"{row['path']}: bytes {row['start']}..{row['end']} held {row['documents']} "
                                 f"documents on the first pass and {len(docs)} on the second; the file changed")
        except (ValueError, OSError) as err:
            raise _ReadError(err) from None
        tables.append(_documents_table(row["chunk"], row["first"], docs))
    return pa.concat_tables(tables)


class _ReadError(Exception):
    """Carries an error of reading a file to the driver unchanged (Ray Data appends its retry advice to the
    message of an error raised in a map; here it lands after the original error, in ``args``)."""


def _chunk_bytes(paths: Sequence[str | os.PathLike], cpus: int) -> int:
    total = sum(os.path.getsize(p) for p in paths)
    low, high = CHUNK_BYTES
    return max(low, min(high, -(-total // (BLOCKS_PER_CPU * cpus))))


def _texts(column: np.ndarray) -> list[str]:
    return [b.decode("utf-8", "surrogatepass") for b in column]


# --- the passes -------------------------------------------------------------------------------------------------


def _target_counts(target: Iterable[str], ngrams: int, buckets: int, cpus: int) -> tuple[np.ndarray, int]:
    """The target's summed counts and size: on the cluster from files or a sequence, in the driver otherwise."""
    if not isinstance(target, (Files, Sequence)):
        return bucket_counts(target, ngrams, buckets)
    source = _Source(target, cpus)
    counts, sizes = _counts(source.dataset(), source.chunks, ngrams, buckets)
    return counts, int(sizes.sum())


def _counts(documents: Any, chunks: int, ngrams: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """The first pass: (summed bucket counts int64 [buckets], documents of each chunk int64 [chunks])."""
    counts, sizes = np.zeros(buckets, dtype=np.int64), np.zeros(chunks, dtype=np.int64)
    blocks = documents.map_batches(_count_block, batch_size=None, batch_format="numpy",
                                   fn_kwargs={"ngrams": ngrams, "buckets": buckets})
    for batch in blocks.iter_batches(batch_size=None, batch_format="numpy"):
        counts += batch["counts"].sum(axis=0)
        np.add.at(sizes, batch["chunk"], batch["documents"])
    return counts, sizes


def _count_block(batch: dict[str, np.ndarray], ngrams: int, buckets: int) -> dict[str, np.ndarray]:
    """map_batches: documents -> one row per chunk in the block: (chunk, documents, counts int64 [buckets])."""
    texts = _texts(batch["text"])
    chunks = np.unique(batch["chunk"])
    rows = [bucket_counts([t for t, c in zip(texts, batch["chunk"]) if c == chunk], ngrams, buckets)
            for chunk in chunks]
    return {"chunk": chunks, "documents": np.array([n for _, n in rows], dtype=np.int64),
            "counts": np.stack([c for c, _ in rows]) if rows else np.zeros((0, buckets), dtype=np.int64)}


def _top_k(documents: Any, ratio: np.ndarray, ngrams: int, k: int, seed: int,
           texts: bool) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """The corpus's best k documents by log w + Gumbel: a top k per block, merged in the driver."""
    top = GumbelTopK(k, seed)
    blocks = documents.map_batches(_top_k_block, batch_size=None, batch_format="numpy",
                                   fn_kwargs={"ratio": ratio, "ngrams": ngrams, "k": k, "seed": seed,
                                              "texts": texts})
    for batch in blocks.iter_batches(batch_size=None, batch_format="numpy"):
        top.push(batch["log_weight"], _texts(batch["text"]) if texts else None, ids=batch["id"])
    return top.result()


def _top_k_block(batch: dict[str, np.ndarray], ratio: np.ndarray, ngrams: int, k: int, seed: int,
                 texts: bool) -> dict[str, np.ndarray]:
    """map_batches: documents (id, text) -> the block's top k (id, log_weight, text: empty without ``texts``)."""
    docs = _texts(batch["text"])
    top = GumbelTopK(k, seed)
    top.push(log_weights(docs, ratio, ngrams), batch["text"] if texts else None, ids=batch["id"])
    ids, weights, kept = top.result()
    text = np.array(kept if texts else [b""] * len(ids), dtype=object)
    return {"id": ids, "log_weight": weights, "text": text}


@contextlib.contextmanager
def _data_context(ray: Any, progress: bool) -> Iterator[None]:
    """Ray Data's progress bars and INFO logs on ``progress`` only, and errors of reading files raised as they
    were (a ValueError naming a JSONL line stays that ValueError); the settings are restored afterwards."""
    context, logger = ray.data.DataContext.get_current(), logging.getLogger("ray.data")
    names = ("enable_progress_bars", "raise_original_map_exception")
    saved, level = {name: getattr(context, name) for name in names}, logger.level
    context.enable_progress_bars = progress
    context.raise_original_map_exception = True
    if not progress:
        logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, _ReadError):
            raise err.cause.args[0] from None
        raise
    finally:
        logger.setLevel(level)
        for name, value in saved.items():
            setattr(context, name, value)
