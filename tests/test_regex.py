"""Regex constraints: the lazy byte automaton against Python's ``re``, token masks against brute force, on real
vocabularies.

- Random regexes from a grammar (non-ASCII and astral literals, raw or as ``\\x \\u \\U`` escapes, classes with
  ranges across the UTF-8 length boundaries and wide ones, negated classes, ``.``, alternation, groups,
  quantifiers) and strings drawn from the regex itself and then mutated, so most are matches or near-misses:
  ``Regex.matches`` must equal ``re.fullmatch(.., re.ASCII)``.
- The automaton, explored in full, accepts only valid UTF-8 (on the product with a UTF-8 validator), and every
  state it reaches can still reach a match (``can_finish`` is ``state >= 0``).
- Token level on the Gemma 3 (262k) and Llama 3 (128k) vocabularies: every token sequence drawn through ``mask``
  decodes to accepted bytes, and ``mask`` equals a per-token walk over the whole vocabulary by the expression's
  derivatives alone (no lexer, no trie, no kernel) at sampled reachable states.
- Patterns whose minimal DFA is large or exponential compile in milliseconds and mask exactly.

The kernels of ``kernels/automata.py`` are checked against their references in ``tests/test_kernels.py``.
"""

from __future__ import annotations

import copy
import random
import re
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoding.constraints import rx
from decoding.constraints.regex import DEAD, Regex
from decoding.vocabulary import Vocabulary

# --- random regexes ---------------------------------------------------------------------------------------------

# Literals: ASCII, 2-, 3- and 4-byte characters, and the last/first characters of each UTF-8 length.
LITERALS = ["a", "b", "c", "0", "7", " ", "-", ".", "é", "ß", "ж", "\u07ff", "\u0800", "中", "€", "\uffff",
            "\U00010000", "😀", "😂", "\U0010ffff", "\x7f", "\x80", "\n"]
# Class ranges: narrow ones that straddle each UTF-8 length boundary and the surrogate gap, and wide ones.
RANGES = [("0", "9"), ("a", "z"), ("\x00", "\x03"), ("\x7e", "\x81"), ("é", "ë"), ("а", "я"), ("\u07fe", "\u0802"),
          ("\x7f", "\u0801"), ("\ud7fe", "\ue001"), ("\ufffd", "\U00010002"), ("😀", "😂"), ("\U0010fffd", "\U0010ffff"),
          ("一", "丟"), (" ", "\uffff"), ("\u0100", "\U0010fffd")]


def _class_char(c: str) -> str:
    return f"\\x{ord(c):02x}" if ord(c) < 0x20 or c in "]\\^-[" else c


def _escape(c: str) -> str:
    """Python's escape for one character: \\xNN, \\uNNNN or \\UNNNNNNNN."""
    cp = ord(c)
    return f"\\x{cp:02x}" if cp < 0x100 else (f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")


def render(node) -> str:
    kind = node[0]
    if kind == "lit":
        return re.escape(node[1])
    if kind == "esc":
        return _escape(node[1])
    if kind == "dot":
        return "."
    if kind == "class":
        _, negated, items, escaped = node
        char = _escape if escaped else _class_char
        body = "".join(char(lo) if lo == hi else f"{char(lo)}-{char(hi)}" for lo, hi in items)
        return "[" + ("^" if negated else "") + body + "]"
    if kind == "cat":
        return "".join(render(n) for n in node[1])
    if kind == "alt":
        return "(?:" + "|".join(render(n) for n in node[1]) + ")"
    if kind == "group":
        return "(" + render(node[1]) + ")"
    _, sub, lo, hi = node  # rep
    inner = render(sub)
    if sub[0] in ("cat", "rep"):
        inner = "(?:" + inner + ")"
    if (lo, hi) == (0, None):
        return inner + "*"
    if (lo, hi) == (1, None):
        return inner + "+"
    if (lo, hi) == (0, 1):
        return inner + "?"
    if hi is None:
        return inner + "{%d,}" % lo
    return inner + ("{%d}" % lo if lo == hi else "{%d,%d}" % (lo, hi))


_range = st.sampled_from(RANGES)
_item = st.one_of(st.sampled_from(LITERALS).filter(lambda c: c != "\n").map(lambda c: (c, c)), _range)
_leaf = st.one_of(
    st.sampled_from(LITERALS).map(lambda c: ("lit", c)),
    st.sampled_from(LITERALS).map(lambda c: ("esc", c)),
    st.just(("dot",)),
    st.tuples(st.just("class"), st.booleans(), st.lists(_item, min_size=1, max_size=3), st.booleans()),
)
_bounds = st.sampled_from([(0, None), (1, None), (0, 1), (2, 2), (0, 2), (1, 3), (2, None)])
regex_trees = st.recursive(
    _leaf,
    lambda sub: st.one_of(
        st.lists(sub, min_size=2, max_size=4).map(lambda xs: ("cat", xs)),
        st.lists(sub, min_size=2, max_size=3).map(lambda xs: ("alt", xs)),
        sub.map(lambda x: ("group", x)),
        st.tuples(st.just("rep"), sub, _bounds).map(lambda t: ("rep", t[1], *t[2])),
    ),
    max_leaves=8,
)


def _any_char(draw) -> str:
    c = draw(st.one_of(st.sampled_from(LITERALS), st.integers(0, 0x10FFFF).map(chr)))
    return "x" if 0xD800 <= ord(c) < 0xE000 else c


def sample(draw, node) -> str:
    """A string the node matches (for classes that exclude everything drawn, some string anyway)."""
    kind = node[0]
    if kind in ("lit", "esc"):
        return node[1]
    if kind == "dot":
        c = _any_char(draw)
        return "x" if c == "\n" else c
    if kind == "class":
        _, negated, items, _ = node
        inside = lambda c: any(lo <= c <= hi for lo, hi in items)  # noqa: E731
        if negated:
            for _ in range(3):
                c = _any_char(draw)
                if not inside(c):
                    return c
            return c
        lo, hi = draw(st.sampled_from(items))
        cp = draw(st.integers(ord(lo), ord(hi)))
        return lo if 0xD800 <= cp < 0xE000 else chr(cp)
    if kind == "cat":
        return "".join(sample(draw, n) for n in node[1])
    if kind == "alt":
        return sample(draw, draw(st.sampled_from(node[1])))
    if kind == "group":
        return sample(draw, node[1])
    _, sub, lo, hi = node
    n = draw(st.integers(lo, lo + 3 if hi is None else hi))
    return "".join(sample(draw, sub) for _ in range(n))


def mutate(draw, s: str) -> str:
    """Unchanged, or one character inserted, deleted or replaced."""
    op = draw(st.sampled_from(["keep", "keep", "insert", "delete", "replace"]))
    if op == "keep" or (not s and op != "insert"):
        return s
    i = draw(st.integers(0, len(s) - (op != "insert")))
    if op == "delete":
        return s[:i] + s[i + 1:]
    c = _any_char(draw)
    return s[:i] + c + s[i + (op == "replace"):]


def python_fullmatch(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text, re.ASCII) is not None


# --- the automaton against re ------------------------------------------------------------------------------------

PROPERTY = settings(derandomize=True, max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _regex_or_empty(pattern: str) -> Regex | None:
    """The Regex, or None when it matches nothing (then re must agree on every sample: checked by the caller)."""
    try:
        return Regex(pattern)
    except ValueError as error:
        assert "empty language" in str(error), (pattern, error)
        return None


@PROPERTY
@given(st.data())
def test_matches_equals_python_re(data):
    tree = data.draw(regex_trees)
    pattern = render(tree)
    regex = _regex_or_empty(pattern)
    for _ in range(6):
        text = mutate(data.draw, sample(data.draw, tree))
        expected = python_fullmatch(pattern, text)
        got = False if regex is None else regex.matches(text)
        assert got == expected, (pattern, text)
        if regex is not None:
            assert regex.matches(text.encode()) == expected


def _utf8_step(u: tuple[int, int, int], b: int):
    """UTF-8 validator: state (continuation bytes left, lo, hi of the next byte); None when ``b`` is invalid."""
    left, lo, hi = u
    if left:
        return (left - 1, 0x80, 0xBF) if lo <= b <= hi else None
    if b < 0x80:
        return (0, 0, 0)
    if 0xC2 <= b <= 0xDF:
        return (1, 0x80, 0xBF)
    if 0xE0 <= b <= 0xEF:
        return (2, 0xA0 if b == 0xE0 else 0x80, 0x9F if b == 0xED else 0xBF)
    if 0xF0 <= b <= 0xF4:
        return (3, 0x90 if b == 0xF0 else 0x80, 0x8F if b == 0xF4 else 0xBF)
    return None


def assert_only_utf8_and_live(regex: Regex) -> None:
    """Exhaustive, building every row: on the product with the UTF-8 validator, no transition on an invalid byte
    and no accepting state in the middle of a character; and an accepting state is reachable from every state."""
    lexer = regex.lexer
    seen = {(regex.initial, (0, 0, 0))}
    stack = list(seen)
    edges: dict[int, set[int]] = {}
    while stack:
        q, u = stack.pop()
        assert not (lexer.accept_any[q] and u[0]), "accepts in the middle of a character"
        for b in range(256):
            nxt = lexer.step(q, b)
            if nxt < 0:
                continue
            edges.setdefault(q, set()).add(nxt)
            v = _utf8_step(u, b)
            assert v is not None, f"transition on invalid UTF-8 byte {b:#x}"
            if (nxt, v) not in seen:
                seen.add((nxt, v))
                stack.append((nxt, v))
    states = {q for q, _ in seen}
    live = {q for q in states if lexer.accept_any[q]}
    while True:
        more = {q for q in states if edges.get(q, set()) & live} - live
        if not more:
            break
        live |= more
    assert live == states, "a reachable state cannot reach a match"


def random_accepted(regex: Regex, rng: np.random.Generator, max_len: int = 40) -> bytes:
    """A random string the automaton accepts (a walk that stops in an accepting state; every state is live)."""
    lexer, out, state = regex.lexer, [], regex.initial
    while True:
        lexer.build_all([state])
        choices = np.flatnonzero(lexer.table[state] >= 0)
        if lexer.accept_any[state] and (not len(choices) or len(out) >= max_len or rng.random() < 0.3):
            return bytes(out)
        b = int(rng.choice(choices))
        out.append(b)
        state = int(lexer.table[state, b])


@PROPERTY
@given(regex_trees)
def test_automaton_accepts_only_utf8_of_matches(tree):
    pattern = render(tree)
    regex = _regex_or_empty(pattern)
    if regex is None:
        return
    assert_only_utf8_and_live(regex)
    rng = np.random.default_rng(0)
    for _ in range(5):
        data = random_accepted(regex, rng)
        assert python_fullmatch(pattern, data.decode("utf-8")), (pattern, data)


def test_byte_semantics():
    regex = Regex(r"[^a]")
    assert regex.matches("😀") and regex.matches("\n") and regex.matches("\U0010ffff") and not regex.matches("a")
    assert not regex.matches(b"\xed\xa0\x80")  # an encoded surrogate is not UTF-8
    assert not regex.matches(b"\xc0\x80")  # overlong
    assert not regex.matches(b"\xff") and not regex.matches(b"\xc3")
    dot = Regex(".")
    assert dot.matches("é") and not dot.matches("\n")
    assert Regex("").matches("") and Regex("a{0}b{0}").matches("")


@pytest.mark.parametrize("pattern, texts", [
    (r"[\u4e00-\u9fff]{2,4}", ["中文", "一二三四", "中", "一二三四五", "ab", "\u4dff\u4e00", "\u9fff\ua000"]),
    (r"\x41\u00e9", ["Aé", "A", "ae", "Ae\u0301"]),
    (r"\N{LATIN SMALL LETTER E WITH ACUTE}+", ["é", "éé", "e", ""]),
    (r"[\U0001F600-\U0001F602\x00-\x1f]", ["😀", "😂", "😃", "\x00", "\x1f", " "]),
    (r"\0\101\t", ["\x00A\t", "\x00A"]),
])
def test_escapes_compile_and_match_exactly(pattern, texts):
    """\\x \\u \\U \\N{...} and octal escapes are characters, matched byte-exactly."""
    regex = Regex(pattern)
    assert_only_utf8_and_live(regex)
    for text in texts:
        assert regex.matches(text) == regex.matches(text.encode()) == python_fullmatch(pattern, text), (pattern, text)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert python_fullmatch(pattern, random_accepted(regex, rng).decode("utf-8"))


@pytest.mark.parametrize("pattern, texts", [
    ("[]a]+", ["]", "a]a", "", "b", "]b"]),
    ("[^]a]", ["]", "a", "b", "é"]),
    ("(?#comment)abc", ["abc", "", "(?#comment)abc"]),
    ("a(?#one)b(?#two)*", ["a", "abbb", "ab#"]),
    ("[a-]{2}|[-z]|[\\]]", ["a-", "--", "z", "]", "\\", "b"]),
    ("a{2}\\{2\\}", ["aa{2}", "aaa", "aa{{"]),
    ("(?i)[a-c]é|X", ["Bé", "bÉ", "x", "X", "d"]),
    ("(?s).", ["\n", "a", ""]),
    ("(?x) a b # comment", ["ab", "a b", " ab"]),
    ("(?i:a)b", ["ab", "Ab", "aB"]),
])
def test_python_syntax_as_python_reads_it(pattern, texts):
    """A leading ] in a class is a member; (?#...) is a comment; (?i) is ASCII-only case folding under re.ASCII,
    (?s) lets . match a newline, (?x) is verbose, (?i:...) is scoped: all as re.fullmatch reads them."""
    regex = Regex(pattern)
    for text in texts:
        assert regex.matches(text) == python_fullmatch(pattern, text), (pattern, text)


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern, words", [
    ("ab[c", ["position 2"]),
    ("a(b", ["position 1"]),
    ("a)", ["position 1"]),
    ("x{3,1}", ["position"]),
    ("a(?=b)", ["look-ahead"]),
    ("a(?!a)", ["negative look-ahead"]),
    ("(?<=a)b", ["look-behind"]),
    (r"(a)\1", ["backreferences"]),
    (r"(?P<x>a)(?P=x)", ["backreferences"]),
    ("^a$", ["anchors"]),
    (r"\bword", ["anchors"]),
    ("(a)?(?(1)b|c)", ["conditional"]),
    ("(?>a)b", ["atomic groups"]),
    ("a*+b", ["possessive quantifiers"]),
    (r"[^\s\S]", ["empty language"]),
    (r"a[^\s\S]|[^\d\D]b", ["empty language"]),
])
def test_bad_patterns(pattern, words):
    with pytest.raises(ValueError) as info:
        Regex(pattern)
    for word in words:
        assert word in str(info.value)


def test_pattern_must_be_a_string():
    with pytest.raises(ValueError, match="pattern: bytes, expected str"):
        Regex(b"a")


@pytest.mark.parametrize("python_310", [False, True])
def test_re_parser_imports_on_every_python(monkeypatch, python_310):
    """The compat module picks re._parser (3.11+), or sre_parse where re._parser is missing (Python 3.10)."""
    import importlib.util
    import sys
    import types
    from pathlib import Path

    from decoding.constraints.re_parser import constants, parser

    if python_310:  # no re._parser; sre_parse and sre_constants are the modules themselves (stand-ins here)
        fakes = {name: types.ModuleType(name) for name in ("sre_parse", "sre_constants")}
        fakes["sre_parse"].__dict__.update({k: v for k, v in vars(parser).items() if not k.startswith("__")})
        fakes["sre_constants"].__dict__.update({k: v for k, v in vars(constants).items() if not k.startswith("__")})
        for name, module in (("re._parser", None), ("re._constants", None), *fakes.items()):
            monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.delattr(re, "_parser")
        monkeypatch.delattr(re, "_constants")
    spec = importlib.util.spec_from_file_location("re_parser_copy", Path(__file__).parents[1] / "constraints" / "re_parser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.parser.__name__ == ("sre_parse" if python_310 else "re._parser")
    assert module.constants.__name__ == ("sre_constants" if python_310 else "re._constants")
    items = list(module.parser.parse("a[bc]*"))
    assert items[0] == (module.constants.LITERAL, ord("a")) and items[1][0] is module.constants.MAX_REPEAT


# --- token level, real vocabularies ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_vocab(gemma_tokenizer):
    return Vocabulary(gemma_tokenizer)


@pytest.fixture(scope="module")
def llama_vocab(llama_tokenizer):
    return Vocabulary(llama_tokenizer)


@pytest.fixture(params=["gemma", "llama"])
def vocab(request):
    return request.getfixturevalue(f"{request.param}_vocab")


TOKEN_PATTERNS = [
    r"\d{4}-\d{2}-\d{2}",
    r"\+?1?[ -]?\(?\d{3}\)?[ -]?\d{3}-\d{4}",
    r'"[^"\\]*"',
    r"(?:привет|日本語|😀+) [a-zé]{1,6}",
]

_words = random.Random(0)
WORDS = sorted({"".join(_words.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_words.randint(3, 10)))
                for _ in range(1100)})[:1000]
# Patterns whose minimal DFA is big: 513 states for the line (3 s to build before), 2,760 for the words (93 s),
# 2**21 for the last (a subset construction that never finished).
BLOWUPS = {"line": r"[^\n]{1,64}", "words": "|".join(WORDS), "exponential": r"(a|b)*a(a|b){20}"}


def brute_force_mask(regex: Regex, prefix: bytes, vocab) -> np.ndarray:
    """The mask after ``prefix`` from the expression's derivatives alone: a token is allowed iff some match starts
    with ``prefix`` and its bytes; EOS iff ``prefix`` matches."""
    start = rx.derivative(regex.expression, prefix)
    out = np.zeros(vocab.size, dtype=bool)
    for t, data in enumerate(vocab.token_bytes):
        if vocab.is_special[t]:
            continue
        d = start
        for b in data:
            d = d.derive(b)
            if d is rx.EMPTY:
                break
        out[t] = rx.is_live(d)
    out[list(vocab.eos_token_ids)] = start.nullable
    return out


def reachable_states(tokens, rng: np.random.Generator, n_walks: int = 4, max_steps: int = 12) -> dict[int, bytes]:
    """Start plus states met on random walks through ``mask``, in order of first visit, with the bytes read."""
    vocab = tokens.vocabulary
    states = {tokens.start(): b""}
    for _ in range(n_walks):
        state, prefix = tokens.start(), b""
        for _ in range(max_steps):
            allowed = np.flatnonzero(tokens.mask(state).numpy() & ~vocab.is_special)
            if not len(allowed):
                break
            token = int(rng.choice(allowed))
            state, prefix = tokens.advance(state, token), prefix + vocab.token_bytes[token]
            assert state != DEAD
            states.setdefault(state, prefix)
    return states


def finish(tokens, state: int, ids: list[int], rng: np.random.Generator, max_steps: int = 8):
    """Extend a walk with allowed tokens, preferring one that accepts at once (from up to 4000 candidates)."""
    for _ in range(max_steps):
        if tokens.is_accepting(state):
            break
        mask = tokens.mask(state).numpy() & ~tokens.vocabulary.is_special
        allowed = rng.permutation(np.flatnonzero(mask))[:4000]
        if not len(allowed):
            break
        nexts = tokens.advance_batch([state] * len(allowed), allowed)
        accepting = [k for k, s in enumerate(nexts) if tokens.is_accepting(s)]
        k = accepting[0] if accepting else 0
        state = nexts[k]
        ids = [*ids, int(allowed[k])]
    return ids, state


@pytest.mark.parametrize("pattern", TOKEN_PATTERNS)
def test_mask_walks_decode_to_matches(vocab, pattern):
    regex = Regex(pattern)
    tokens = regex.bind(vocab)
    assert regex.bind(vocab) is tokens
    eos = list(vocab.eos_token_ids)
    rng = np.random.default_rng(1)
    finished = 0
    for _ in range(10):
        state, ids = tokens.start(), []
        for _ in range(60):
            mask = tokens.mask(state)
            assert mask.dtype == torch.bool and mask.shape == (vocab.size,)
            assert mask[eos].tolist() == [tokens.is_accepting(state)] * len(eos)
            allowed = np.flatnonzero(mask.numpy())
            if tokens.is_accepting(state) and rng.random() < 0.3:
                break
            choice = int(rng.choice(allowed))
            if choice in eos:
                break
            nxt = tokens.advance(state, choice)
            assert nxt != DEAD and tokens.can_finish(nxt)
            # a token the mask forbids dies
            forbidden = int(rng.choice(np.flatnonzero(~mask.numpy())))
            assert tokens.advance(state, forbidden) == DEAD
            state = nxt
            ids.append(choice)
        ids, state = finish(tokens, state, ids, rng)
        if tokens.is_accepting(state):
            data = vocab.decode_bytes(ids)
            assert regex.matches(data), (pattern, data)
            assert python_fullmatch(pattern, data.decode("utf-8"))
            finished += 1
    assert finished >= 5  # the check above ran


def assert_masks_equal_brute_force(regex: Regex, vocab, n_states: int, seed: int) -> None:
    tokens = regex.bind(vocab)
    states = list(reachable_states(tokens, np.random.default_rng(seed), n_walks=n_states).items())[:n_states]
    assert len(states) >= 2
    for state, prefix in states:
        tokens._masks.clear()  # compute again, now that the walks have built more rows
        np.testing.assert_array_equal(tokens.mask(state).numpy(), brute_force_mask(regex, prefix, vocab))
        assert tokens.mask(state) is tokens.mask(state)  # memoised


@pytest.mark.parametrize("pattern", TOKEN_PATTERNS)
def test_mask_equals_brute_force(vocab, pattern):
    regex = Regex(pattern)
    start_mask = regex.bind(vocab).mask(regex.initial).numpy()  # on a fresh automaton: the walk builds its rows
    np.testing.assert_array_equal(start_mask, brute_force_mask(regex, b"", vocab))
    assert_masks_equal_brute_force(regex, vocab, 4, seed=2)


@pytest.mark.parametrize("name", BLOWUPS)
def test_big_automata_compile_in_milliseconds_and_mask_exactly(vocab, name):
    """Compile time (pattern to a Regex), the first mask's time on a fresh automaton (it builds the rows the
    vocabulary's trie reaches), printed (run with -s); then masks equal brute force at reachable states and
    sampled texts match as re says. Bounds leave room for a loaded machine."""
    pattern = BLOWUPS[name]
    start = time.perf_counter()
    regex = Regex(pattern)
    compile_s = time.perf_counter() - start
    tokens = regex.bind(vocab)
    start = time.perf_counter()
    tokens.mask(tokens.start())
    first_s = time.perf_counter() - start
    print(f"\n[timing] {name} on {vocab.size:,} tokens: compile {compile_s * 1e3:.1f} ms, first mask "
          f"{first_s * 1e3:.1f} ms, {regex.lexer.n_states} states built")
    assert compile_s < (1.5 if name == "words" else 0.1)
    assert first_s < 5
    assert_masks_equal_brute_force(regex, vocab, 2, seed=6)
    rng = np.random.default_rng(7)
    for _ in range(20):
        text = random_accepted(regex, rng, max_len=100).decode("utf-8")
        assert python_fullmatch(pattern, text) and not regex.matches(text + "\n")


def test_exponential_automaton_builds_only_what_is_read():
    """``(a|b)*a(a|b){20}`` has 2**21 DFA states; reading 2,000 random bytes builds at most one row per byte, and
    every prefix is judged as re judges it."""
    pattern = BLOWUPS["exponential"]
    regex = Regex(pattern)
    text = "".join(random.Random(8).choice("ab") for _ in range(2000))
    for n in (0, 20, 21, 22, 500, 1999, 2000):
        assert regex.matches(text[:n]) == python_fullmatch(pattern, text[:n]), n
    assert regex.lexer.n_states <= 2001


def test_special_tokens_and_dead_state(gemma_vocab):
    tokens = Regex(r".*").bind(gemma_vocab)
    special = np.flatnonzero(gemma_vocab.is_special)[:50]
    assert all(tokens.advance(tokens.start(), int(t)) == DEAD for t in special)
    mask = tokens.mask(tokens.start())
    assert not mask[special[~np.isin(special, gemma_vocab.eos_token_ids)]].any()
    assert tokens.mask(DEAD).sum() == 0 and not tokens.can_finish(DEAD) and not tokens.is_accepting(DEAD)
    assert tokens.advance(DEAD, 100) == DEAD


def test_batched_advance_and_masks_equal_the_single_state_ones(llama_tokenizer, llama_vocab):
    """The batch walk (on a fresh automaton, so it stops at unbuilt rows and walks them again) and the gathered
    masks equal ``advance``/``mask`` row by row (EOS included)."""
    vocab = llama_vocab
    regex = Regex(r"\d{2}(-\d{2})?")
    tc = regex.bind(vocab)
    ids = {text: llama_tokenizer.convert_tokens_to_ids(text) for text in ("1", "2", "12", "-", "a")}
    eos = vocab.eos_token_ids[0]
    start = tc.start()
    assert regex.lexer.n_states == 1  # nothing built yet
    rng = np.random.default_rng(9)
    tokens = [ids["12"], ids["1"], ids["1"], eos, ids["12"], 5, *rng.integers(0, vocab.size, 200).tolist()]
    states = [start] * len(tokens)
    batch = tc.advance_batch(states, tokens)
    one = tc.advance(start, ids["1"])
    two = tc.advance(one, ids["2"])
    assert batch[:4] == [two, one, one, DEAD]
    # a second batch from the states reached, EOS and "-" included
    states = [start, one, two, two, DEAD, one, two, two]
    tokens = [ids["12"], eos, eos, ids["-"], 5, ids["a"], ids["-"], ids["12"]]
    expected = [(s if tc.is_accepting(s) else DEAD) if t == eos else tc.advance(s, t) for s, t in zip(states, tokens)]
    assert tc.advance_batch(states, tokens) == expected
    assert expected[2] == two and expected[1] == DEAD and expected[6] >= 0
    assert torch.equal(tc.mask_batch(states), torch.stack([tc.mask(s) for s in states]))


def test_sampler_shortcuts_equal_their_definitions(llama_vocab):
    """``narrow_batch`` (not accepting, exactly one byte may follow), ``only_eos_batch`` (accepting, no byte may
    follow) against the derivatives at reachable states; ``possible_tokens`` covers every mask and leaves out
    tokens with a byte the pattern never reads."""
    vocab = llama_vocab
    regex = Regex(r" (Lyon|Nice)x?")
    tokens = regex.bind(vocab)
    states = reachable_states(tokens, np.random.default_rng(10), n_walks=8, max_steps=5)
    possible = tokens.possible_tokens().numpy()
    narrow, only_eos = [], []
    for state, prefix in states.items():
        d = rx.derivative(regex.expression, prefix)
        n_next = sum(rx.is_live(d.derive(b)) for b in range(256))
        narrow.append(n_next == 1 and not d.nullable)
        only_eos.append(n_next == 0 and d.nullable)
        assert not (tokens.mask(state).numpy() & ~possible).any()
    batch = [*states, DEAD]
    assert tokens.narrow_batch(batch).tolist() == [*narrow, False]
    assert tokens.only_eos_batch(batch).tolist() == [*only_eos, False]
    assert any(narrow) and any(only_eos) and not all(narrow)
    text_ids = [t for t, data in enumerate(vocab.token_bytes) if data in (b" Lyon", b"P", b"Nice")]
    assert possible[text_ids].tolist() == [data != b"P" for data in (vocab.token_bytes[t] for t in text_ids)]
    assert possible[list(vocab.eos_token_ids)].all() and possible.sum() < 5000


def test_a_token_of_no_bytes_keeps_the_state(llama_vocab):
    """A non-special token whose bytes are empty (none in Gemma or Llama; possible in an added-tokens list)
    leaves the state as it is, so ``mask`` allows it wherever ``advance`` does."""
    vocab = copy.copy(llama_vocab)
    empty = 1000
    vocab.token_bytes = [b"" if t == empty else data for t, data in enumerate(llama_vocab.token_bytes)]
    tokens = Regex(r"ab?").bind(vocab)
    after = tokens.advance(tokens.start(), vocab.token_bytes.index(b"a"))
    for state in (tokens.start(), after):
        assert tokens.advance(state, empty) == state
        assert tokens.mask(state)[empty]
    assert not tokens.mask(DEAD)[empty]
