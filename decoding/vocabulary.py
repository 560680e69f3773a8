"""The exact bytes of every token id of a Hugging Face tokenizer.

Text is a sequence of bytes; a language model emits token ids. Constrained and speculative decoding need
to know, for every id, exactly which bytes it appends to the output, including tokens that are only part
of a UTF-8 character (byte-level BPE pieces such as ``"âĢ"``, the bytes E2 80, SentencePiece byte-fallback pieces
such as ``<0xE2>``). ``tokenizer.decode`` cannot say that: it works on whole strings and replaces invalid UTF-8
with U+FFFD. :class:`Vocabulary` reads the tokenizer's pieces once and turns each into its bytes.

Two tokenizer families are supported, told apart by the ``decoder`` of the tokenizer's backend
(``tokenizers``) configuration:

- ``"byte_level"``: GPT-2 style byte-level BPE (Llama 3, GPT-2, Qwen, ...), decoder ``ByteLevel``. Every
  byte is written as one printable character (GPT-2's ``bytes_to_unicode`` table, e.g. ``"Ġ"`` is a space).
- ``"sentencepiece"``: SentencePiece-style BPE with byte fallback (Gemma, Llama 2, Mistral, ...), decoder
  ``Replace("▁", " ")`` (or ``Metaspace``) with ``ByteFallback``. ``"▁"`` is a space and ``<0xNN>`` is the
  single byte NN.

Added tokens (``<bos>``, ``<|end_of_text|>``, Gemma's ``"\\n\\n"`` ...) are read exactly as
``tokenizer.decode(ids, skip_special_tokens=False)`` writes them: ``tokenizers`` passes their content through
the same decoder as every other piece. For the usual ones that is their literal text (``b"<bos>"``); an added
token with ``▁`` or byte-level characters in it (``"<|Ġx|>"``) is converted like any piece (``b"<| x|>"``).
The special ones are flagged in ``is_special``. Ids the model's logits have but the tokenizer does not
(``size > len(tokenizer)``) are empty and special.

Example:
    >>> from transformers import AutoTokenizer
    >>> from decoding.default_model import prepare
    >>> vocab = Vocabulary(AutoTokenizer.from_pretrained(prepare()))    # doctest: +SKIP
    >>> vocab.kind, len(vocab), vocab.eos_token_ids                      # doctest: +SKIP
    ('sentencepiece', 262144, (1,))
    >>> vocab[506], vocab[248]                                           # doctest: +SKIP
    (b' the', b'\\n')
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterable

import numpy as np

__all__ = ["Vocabulary"]

BYTE_LEVEL = "byte_level"
SENTENCEPIECE = "sentencepiece"

_SPACE_MARK = "\u2581"  # "▁", SentencePiece's space
# ``tokenizers`` reads NN with Rust's u8::from_str_radix, which also takes a sign: "<0x+A>" is byte 0x0A.
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2}|\+[0-9A-Fa-f])>")
_SUPPORTED = (
    "supported decoders: ByteLevel (GPT-2 byte-level BPE, e.g. Llama 3) or a Sequence of Replace('▁', ' ') "
    "or Metaspace('▁') with ByteFallback, optionally Fuse and a Strip after Fuse (SentencePiece, e.g. Gemma)"
)


class Vocabulary:
    """Exact bytes of every token id of a HF tokenizer, its special tokens and EOS ids.

    Args:
        tokenizer: a fast (``tokenizers``-backed) Hugging Face tokenizer.
        size: number of ids, the model's logits dimension; default ``len(tokenizer)``. Ids from
            ``len(tokenizer)`` up to ``size`` (padding rows of the output embedding) are ``b""`` and special;
            a ``size`` below ``len(tokenizer)`` drops the tokenizer's ids the model cannot emit.
        eos_token_ids: ids that end a sequence; default ``tokenizer.eos_token_id``.

    Attributes:
        size: number of ids.
        token_bytes: ``token_bytes[i]`` is the exact bytes token ``i`` contributes to decoded text.
        is_special: boolean array ``[size]``; True for special added tokens (``<bos>``, ``<eos>``, ...) and for
            ids beyond the tokenizer.
        eos_token_ids: sorted, distinct EOS ids.
        kind: ``"sentencepiece"`` or ``"byte_level"``.

    Raises:
        ValueError: unsupported tokenizer (the message names its decoder), no EOS id, or ids out of range.

    Example:
        >>> vocab = Vocabulary(llama3_tokenizer)                             # doctest: +SKIP
        >>> vocab.kind, vocab.eos_token_ids, vocab.decode_bytes([9906, 1917])  # doctest: +SKIP
        ('byte_level', (128001,), b'Hello world')
    """

    size: int
    token_bytes: list[bytes]
    is_special: np.ndarray
    eos_token_ids: tuple[int, ...]
    kind: str

    def __init__(self, tokenizer, size: int | None = None, eos_token_ids: Iterable[int] | None = None):
        backend = _backend(tokenizer)
        n_tokenizer = len(tokenizer)
        self.size = n_tokenizer if size is None else _positive_size(size)
        self.kind = _detect_kind(_decoder_config(backend))
        pieces = _pieces_by_id(backend, n_tokenizer)
        added = backend.get_added_tokens_decoder()
        self.token_bytes, self.is_special = _token_table(pieces, added, self.kind, self.size)
        self.eos_token_ids = _eos_ids(tokenizer, eos_token_ids, self.size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, token_id: int) -> bytes:
        """The bytes of one token id."""
        i = operator.index(token_id)
        if not 0 <= i < self.size:
            raise IndexError(f"token_id {i} outside 0..{self.size - 1}")
        return self.token_bytes[i]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes of a sequence of ids, special tokens included (as ``decode`` writes them)."""
        return b"".join([self[i] for i in ids])

    def __repr__(self) -> str:
        return f"Vocabulary(kind={self.kind!r}, size={self.size}, eos_token_ids={self.eos_token_ids})"


# --- reading the tokenizer -------------------------------------------------------------------------------


def _backend(tokenizer):
    """The ``tokenizers.Tokenizer`` behind a fast HF tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"tokenizer: {type(tokenizer).__name__} has no backend_tokenizer; Vocabulary needs a fast "
            "(tokenizers-backed) tokenizer, e.g. AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    return backend


def _positive_size(size: int) -> int:
    size = operator.index(size)
    if size < 1:
        raise ValueError(f"size: {size}; pass the model's logits dimension (a positive number of ids)")
    return size


def _decoder_config(backend) -> dict | None:
    """The ``decoder`` section of the backend's JSON configuration (None when it has no decoder)."""
    decoder = backend.decoder
    if decoder is None:
        return None
    try:  # the decoder alone serialises in microseconds; the whole tokenizer takes about a second
        return json.loads(decoder.__getstate__())
    except (AttributeError, TypeError, ValueError):
        return json.loads(backend.to_str())["decoder"]


def _pieces_by_id(backend, n: int) -> list[str | None]:
    """Every id's piece (the token string before decoding), added tokens included; None for unused ids."""
    pieces: list[str | None] = [None] * n
    for piece, i in backend.get_vocab(with_added_tokens=True).items():
        if i < n:
            pieces[i] = piece
    return pieces


# --- which kind of tokenizer ------------------------------------------------------------------------------


def _detect_kind(decoder: dict | None) -> str:
    """``"byte_level"`` or ``"sentencepiece"`` from the backend's decoder configuration.

    Raises:
        ValueError: no decoder, or one that is neither kind; the message names it.
    """
    if decoder is None:
        raise ValueError(f"tokenizer: its backend has no decoder, so its token bytes are unknown; {_SUPPORTED}")
    parts = decoder.get("decoders", []) if decoder.get("type") == "Sequence" else [decoder]
    types = [part.get("type") for part in parts]
    if types == ["ByteLevel"]:
        return BYTE_LEVEL
    if _is_sentencepiece(parts):
        return SENTENCEPIECE
    raise ValueError(f"tokenizer: unsupported decoder {_describe(decoder)}; {_SUPPORTED}")


def _is_sentencepiece(parts: list[dict]) -> bool:
    """Replace('▁', ' ') or Metaspace('▁'), plus ByteFallback, plus only Fuse, and Strip once fused."""
    spaces = [p for p in parts if _is_space_replace(p) or _is_metaspace(p)]
    fallbacks = [p for p in parts if p.get("type") == "ByteFallback"]
    fuses = [i for i, p in enumerate(parts) if p.get("type") == "Fuse"]
    strips = [i for i, p in enumerate(parts) if p.get("type") == "Strip"]
    # A Strip after Fuse trims the whole text (Llama 2's leading space), not each token.
    strips_ok = all(fuses and i > fuses[0] for i in strips)
    known = len(spaces) + len(fallbacks) + len(fuses) + len(strips) == len(parts)
    return len(spaces) == 1 and len(fallbacks) == 1 and known and strips_ok


def _is_space_replace(part: dict) -> bool:
    is_replace = part.get("type") == "Replace" and part.get("pattern") == {"String": _SPACE_MARK}
    return is_replace and part.get("content") == " "


def _is_metaspace(part: dict) -> bool:
    return part.get("type") == "Metaspace" and part.get("replacement", _SPACE_MARK) == _SPACE_MARK


def _describe(decoder: dict) -> str:
    if decoder.get("type") == "Sequence":
        return "Sequence[" + ", ".join(str(p.get("type")) for p in decoder.get("decoders", [])) + "]"
    return str(decoder.get("type"))


# --- pieces to bytes --------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: each byte as a printable character.

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves; the other 68 bytes
    (controls, space, DEL, NBSP, soft hyphen), in increasing order, take the characters from U+0100 on.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    for k, b in enumerate(shifted):
        table[b] = chr(256 + k)
    return dict(sorted(table.items()))


def _byte_level_translation() -> dict[int, int]:
    """``str.translate`` table from byte-level characters to the code points 0..255 of their bytes.

    Characters below U+0100 that are not in the table map to U+FFFF, so the Latin-1 encoding that follows
    fails for any piece with a character outside the table, as do characters from U+0144 on (left as is).
    """
    translation = {x: 0xFFFF for x in range(256)}
    translation.update({ord(char): b for b, char in _bytes_to_unicode().items()})
    return translation


_BYTE_LEVEL_TRANSLATION = _byte_level_translation()


def _byte_level_bytes(piece: str) -> bytes:
    """The bytes of a byte-level BPE piece: ``"Ġthe"`` -> ``b" the"``.

    A piece with a character outside GPT-2's table is taken as its own UTF-8, as ``tokenizers``' ByteLevel
    decoder does.
    """
    try:
        return piece.translate(_BYTE_LEVEL_TRANSLATION).encode("latin-1")
    except UnicodeEncodeError:
        return piece.encode("utf-8")


def _sentencepiece_bytes(piece: str) -> bytes:
    """The bytes of a SentencePiece piece: ``"▁the"`` -> ``b" the"``, ``"<0x0A>"`` -> ``b"\\n"``.

    As ``tokenizers``' ByteFallback decoder: ``<0x`` + two hex digits (either case) + ``>`` is a byte, and so
    is ``<0x+N>`` with one hex digit (Rust's number parser takes a sign); any other piece is text.
    """
    if len(piece) == 6 and piece.startswith("<0x"):
        match = _BYTE_PIECE.fullmatch(piece)
        if match:
            return bytes([int(match.group(1), 16)])
    return piece.replace(_SPACE_MARK, " ").encode("utf-8")


_PIECE_BYTES = {BYTE_LEVEL: _byte_level_bytes, SENTENCEPIECE: _sentencepiece_bytes}


def _token_table(pieces: list[str | None], added: dict, kind: str, size: int) -> tuple[list[bytes], np.ndarray]:
    """``token_bytes`` and ``is_special`` for ids ``0..size-1``.

    Every piece goes through the kind's conversion, added tokens' content too (``tokenizers`` decodes them
    with the same decoder; an added token wins over a model piece with its id, as in ``decode``). Only added
    tokens marked special are special, besides ids without a piece and ids beyond the tokenizer (empty).
    """
    piece_bytes = _PIECE_BYTES[kind]
    n = min(len(pieces), size)
    pieces = pieces[:n]
    is_special = np.ones(size, dtype=bool)
    is_special[:n] = [piece is None for piece in pieces]
    for i, token in added.items():
        if i < n:
            pieces[i] = token.content
            is_special[i] = bool(token.special)
    token_bytes = [b"" if piece is None else piece_bytes(piece) for piece in pieces]
    return token_bytes + [b""] * (size - n), is_special


# --- end of sequence --------------------------------------------------------------------------------------


def _eos_ids(tokenizer, eos_token_ids: Iterable[int] | int | None, size: int) -> tuple[int, ...]:
    """Sorted distinct EOS ids: the given ones, else the tokenizer's ``eos_token_id``.

    Raises:
        ValueError: no EOS id at all, or one outside ``0..size-1``.
    """
    if eos_token_ids is None:
        eos_token_ids = getattr(tokenizer, "eos_token_id", None)
    if eos_token_ids is None:
        eos_token_ids = ()
    try:  # a single id
        eos_token_ids = (operator.index(eos_token_ids),)
    except TypeError:
        pass
    ids = sorted({operator.index(i) for i in eos_token_ids})
    if not ids:
        raise ValueError(
            "eos_token_ids: none given and the tokenizer has no eos_token_id; pass the ids that end a sequence, "
            "e.g. Vocabulary(tokenizer, eos_token_ids=[tokenizer.convert_tokens_to_ids('<|end_of_text|>')]), "
            "or set tokenizer.eos_token"
        )
    outside = [i for i in ids if not 0 <= i < size]
    if outside:
        raise ValueError(f"eos_token_ids: {outside} outside the vocabulary 0..{size - 1}")
    return tuple(ids)
