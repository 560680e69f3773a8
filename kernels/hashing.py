"""Hashed word n-gram features of text, in numba: tokenise, hash and bucket a batch of documents in one call.

The feature map of DSIR (S. M. Xie, S. Santurkar, T. Ma, P. Liang, "Data Selection for Language Models via
Importance Resampling", NeurIPS 2023, Sec. 4), with the definitions of its reference package ``data-selection``
(``HashedNgramDSIR``), so that bucket counts differ from it only by where the hash sends each n-gram:

- a document is lower-cased (``str.lower``) and split into maximal runs of word characters or of punctuation,
  whitespace separating tokens: the tokens of nltk's ``WordPunctTokenizer``, regex ``\\w+|[^\\w\\s]+``. Which
  characters are word, whitespace or punctuation is read once per process from that regex in the ``regex``
  engine (the one nltk >= 3.10 compiles it with; stdlib ``re`` differs on combining marks, on digits such as
  superscripts and on U+001C..U+001F), into the table :func:`char_classes`;
- its features are its tokens and, for m = 2 .. ngrams, its m-grams written as the tokens joined by one space;
- a feature's bucket is ``feature_hash(utf8(feature)) mod buckets``, :func:`feature_hash` being 64-bit FNV-1a
  (Fowler, Noll, Vo) over the UTF-8 bytes followed by MurmurHash3's 64-bit finaliser ``fmix64`` (plain FNV-1a
  leaves its low bits visibly uneven modulo 10,000 on keys such as "w1", "w2", ...; with ``fmix64`` the bucket
  counts pass the chi-square test that SHA-256 passes). The same value in every process and on every machine;
  ``data-selection`` takes SHA-256 instead, much slower per feature (Python's ``hash`` of a str is salted per
  process).

Documents travel as one buffer: their lower-cased text as UTF-32 code points end to end, with offsets
(:func:`encode`). The kernel returns each document's bucket ids in CSR form, one entry per feature occurrence,
so a document's count vector is ``np.bincount(ids[offsets[d]:offsets[d + 1]], minlength=buckets)``.

Example:
    >>> codepoints, offsets = encode(["Hello, world!", ""])
    >>> feature_offsets, ids = ngram_buckets(codepoints, offsets, char_classes(), 2, 10_000)
    >>> feature_offsets.tolist(), len(ids)          # hello , world ! + 3 bigrams; the empty document has none
    ([0, 7, 7], 7)
    >>> int(ids[0]) == feature_hash("hello".encode()) % 10_000
    True
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from numba import njit

FNV_OFFSET = 0xCBF29CE484222325  # FNV-1a 64-bit offset basis
FNV_PRIME = 0x100000001B3  # FNV 64-bit prime
_FMIX_1, _FMIX_2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53  # MurmurHash3 fmix64 multipliers
_MASK64 = 0xFFFFFFFFFFFFFFFF

SPACE, WORD, PUNCT = 0, 1, 2  # the classes of :func:`char_classes`
_MAX_CODEPOINT = 0x10FFFF


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a of ``data``, in plain Python.

    Example:
        >>> hex(fnv1a64(b"a"))       # the published test vector
        '0xaf63dc4c8601ec8c'
    """
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & _MASK64
    return h


def feature_hash(data: bytes) -> int:
    """``fmix64(fnv1a64(data))``, in plain Python: the hash of a feature's UTF-8 bytes, the definition the kernel
    is tested against.

    Example:
        >>> feature_hash("hello".encode())
        16844978562278765124
    """
    h = fnv1a64(data)
    h = ((h ^ (h >> 33)) * _FMIX_1) & _MASK64
    h = ((h ^ (h >> 33)) * _FMIX_2) & _MASK64
    return h ^ (h >> 33)


@functools.cache
def char_classes() -> np.ndarray:
    """uint8 [0x110000]: the class of every code point, :data:`WORD` (``\\w``), :data:`SPACE` (``\\s``) or
    :data:`PUNCT` (neither), as the ``regex`` engine matches them (nltk's WordPunctTokenizer). Built once per
    process from all code points (about 0.3 s); read-only."""
    import regex

    everything = "".join(map(chr, range(_MAX_CODEPOINT + 1)))  # surrogates included: they are punctuation
    classes = np.full(_MAX_CODEPOINT + 1, PUNCT, dtype=np.uint8)
    for pattern, cls in ((r"\w+", WORD), (r"\s+", SPACE)):
        for run in regex.finditer(pattern, everything):
            classes[run.start():run.end()] = cls
    classes.flags.writeable = False
    return classes


def encode(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Lower-case ``texts`` and lay them end to end: (code points uint32 [C], offsets int64 [D + 1]); document d
    is ``codepoints[offsets[d]:offsets[d + 1]]``. One ``str.lower`` per document (it may change a length:
    "İ" lower-cases to two code points), then one encode of the whole batch.

    Raises:
        TypeError: an entry is not a str (the message gives its index and type).
    """
    try:
        lowered = [text.lower() for text in texts]
    except AttributeError:
        index, bad = next((i, t) for i, t in enumerate(texts) if not isinstance(t, str))
        raise TypeError(f"document {index} is a {type(bad).__name__}, expected a str") from None
    offsets = np.zeros(len(lowered) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, lowered), dtype=np.int64, count=len(lowered)), out=offsets[1:])
    joined = "".join(lowered).encode("utf-32-le", "surrogatepass")  # lone surrogates pass through as code points
    return np.frombuffer(joined, dtype="<u4"), offsets


@njit(cache=True, inline="always")
def _feed(h, c):
    """FNV-1a step over the UTF-8 bytes of code point ``c`` (surrogates as their 3-byte forms)."""
    prime = np.uint64(FNV_PRIME)
    if c < 0x80:
        return (h ^ np.uint64(c)) * prime
    if c < 0x800:
        h = (h ^ np.uint64(0xC0 | (c >> 6))) * prime
    else:
        if c < 0x10000:
            h = (h ^ np.uint64(0xE0 | (c >> 12))) * prime
        else:
            h = (h ^ np.uint64(0xF0 | (c >> 18))) * prime
            h = (h ^ np.uint64(0x80 | ((c >> 12) & 0x3F))) * prime
        h = (h ^ np.uint64(0x80 | ((c >> 6) & 0x3F))) * prime
    return (h ^ np.uint64(0x80 | (c & 0x3F))) * prime


@njit(cache=True, inline="always")
def _bucket(h, modulus):
    """The bucket of FNV-1a state ``h``: fmix64(h) mod ``modulus``."""
    h = (h ^ (h >> np.uint64(33))) * np.uint64(_FMIX_1)
    h = (h ^ (h >> np.uint64(33))) * np.uint64(_FMIX_2)
    return np.int64((h ^ (h >> np.uint64(33))) % modulus)


@njit(cache=True)
def _token_spans(codepoints, offsets, classes):
    """Every token of every document: (starts, ends) int64 [T] into ``codepoints``, and tokens per document
    int64 [D]. A token is a maximal run of WORD or of PUNCT code points."""
    D = len(offsets) - 1
    per_doc = np.zeros(D, dtype=np.int64)
    for d in range(D):
        previous = SPACE
        for j in range(offsets[d], offsets[d + 1]):
            c = classes[codepoints[j]]
            if c != SPACE and c != previous:
                per_doc[d] += 1
            previous = c
    total = per_doc.sum()
    starts = np.empty(total, dtype=np.int64)
    ends = np.empty(total, dtype=np.int64)
    t = 0
    for d in range(D):
        previous = SPACE
        for j in range(offsets[d], offsets[d + 1]):
            c = classes[codepoints[j]]
            if c != previous:
                if previous != SPACE:
                    ends[t - 1] = j
                if c != SPACE:
                    starts[t] = j
                    t += 1
            previous = c
        if previous != SPACE:
            ends[t - 1] = offsets[d + 1]
    return starts, ends, per_doc


@njit(cache=True)
def ngram_buckets(codepoints, offsets, classes, ngrams, buckets):
    """The bucket of every feature of every document, in CSR form.

    Args:
        codepoints: uint32 [C], offsets: int64 [D + 1]: the documents, lower-cased (:func:`encode`).
        classes: uint8 [0x110000], :func:`char_classes`.
        ngrams: int >= 1, the longest n-gram; buckets: int >= 1.

    Returns:
        (feature_offsets int64 [D + 1], ids int64 [F]): document d's features are
        ``ids[feature_offsets[d]:feature_offsets[d + 1]]``: its T tokens' buckets, then its T - 1 bigrams',
        ... then its T - ngrams + 1 n-grams' (none of an order longer than the document).
    """
    starts, ends, per_doc = _token_spans(codepoints, offsets, classes)
    D = len(per_doc)
    feature_offsets = np.zeros(D + 1, dtype=np.int64)
    for d in range(D):
        n_features = 0
        for m in range(1, ngrams + 1):
            n_features += max(per_doc[d] - m + 1, 0)
        feature_offsets[d + 1] = feature_offsets[d] + n_features
    ids = np.empty(feature_offsets[D], dtype=np.int64)
    state = np.empty(len(starts), dtype=np.uint64)  # state[t]: FNV state of the m-gram starting at token t
    modulus = np.uint64(buckets)
    first = 0  # the document's first token
    for d in range(D):
        T = per_doc[d]
        out = feature_offsets[d]
        for t in range(first, first + T):
            h = np.uint64(FNV_OFFSET)
            for j in range(starts[t], ends[t]):
                h = _feed(h, codepoints[j])
            state[t] = h
            ids[out] = _bucket(h, modulus)
            out += 1
        for m in range(2, ngrams + 1):  # m-gram at t = (m-1)-gram at t, a space, token t + m - 1
            for t in range(first, first + T - m + 1):
                h = _feed(state[t], np.uint32(32))
                last = t + m - 1
                for j in range(starts[last], ends[last]):
                    h = _feed(h, codepoints[j])
                state[t] = h
                ids[out] = _bucket(h, modulus)
                out += 1
        first += T
    return feature_offsets, ids


@njit(cache=True)
def dot_features(feature_offsets, ids, vector):
    """float64 [D]: ``feat(x_d) . vector`` for each document, i.e. the sum of ``vector[ids[j]]`` over its feature
    occurrences j (0 for a document without features); the count vectors are never built."""
    D = len(feature_offsets) - 1
    out = np.zeros(D, dtype=np.float64)
    for d in range(D):
        total = 0.0
        for j in range(feature_offsets[d], feature_offsets[d + 1]):
            total += vector[ids[j]]
        out[d] = total
    return out
