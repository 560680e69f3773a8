"""Regex constraints: the byte automaton against Python's ``re``, token masks against brute force, on real vocabularies.

- Random regexes from a grammar (non-ASCII and astral literals, raw or as ``\\x \\u \\U`` escapes, classes with
  ranges across the UTF-8 length boundaries, negated classes, ``.``, alternation, groups, quantifiers) and strings
  drawn from the regex itself and then mutated, so most are matches or near-misses: ``Regex.matches`` must equal
  ``re.fullmatch(.., re.ASCII)``.
- The byte automaton accepts only valid UTF-8: checked exhaustively on the product with a UTF-8 validator.
- Token level on the Gemma 3 (262k) and Llama 3 (128k) vocabularies: every token sequence drawn through ``mask``
  decodes to accepted bytes, ``mask`` equals the per-token Python walk over the whole vocabulary at sampled
  reachable states, and every numba kernel equals its pure-Python reference.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoding.constraints.automaton import ByteDFA, minimise
from decoding.constraints.regex import DEAD, Regex
from decoding.kernels import automata
from decoding.vocabulary import Vocabulary

# --- random regexes ---------------------------------------------------------------------------------------------

# Literals: ASCII, 2-, 3- and 4-byte characters, and the last/first characters of each UTF-8 length.
LITERALS = ["a", "b", "c", "0", "7", " ", "-", ".", "é", "ß", "ж", "\u07ff", "\u0800", "中", "€", "\uffff",
            "\U00010000", "😀", "😂", "\U0010ffff", "\x7f", "\x80", "\n"]
# Class ranges: narrow ones that straddle each UTF-8 length boundary and the surrogate gap, and a few wider ones
# (interegular lists every character of a range in its alphabet, so ranges of 100k characters cost seconds).
RANGES = [("0", "9"), ("a", "z"), ("\x00", "\x03"), ("\x7e", "\x81"), ("é", "ë"), ("а", "я"), ("\u07fe", "\u0802"),
          ("\x7f", "\u0801"), ("\ud7fe", "\ue001"), ("\ufffd", "\U00010002"), ("😀", "😂"), ("\U0010fffd", "\U0010ffff"),
          ("一", "丟")]


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


# --- the byte automaton against re -------------------------------------------------------------------------------

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


def assert_only_utf8(dfa: ByteDFA) -> None:
    """Exhaustive: on the product with the UTF-8 validator, no live transition on an invalid byte and no
    accepting state in the middle of a character (every state is live, so either would be an accepted string)."""
    assert dfa.live.all()
    seen = {(dfa.start, (0, 0, 0))}
    stack = list(seen)
    while stack:
        q, u = stack.pop()
        assert not (dfa.accepting[q] and u[0]), "accepts in the middle of a character"
        for b in np.flatnonzero(dfa.transitions[q] >= 0):
            v = _utf8_step(u, int(b))
            assert v is not None, f"live transition on invalid UTF-8 byte {b:#x}"
            pair = (int(dfa.transitions[q, b]), v)
            if pair not in seen:
                seen.add(pair)
                stack.append(pair)


def random_accepted(dfa: ByteDFA, rng: np.random.Generator, max_len: int = 40) -> bytes:
    """A random string the automaton accepts (a walk on live transitions that stops in an accepting state)."""
    out, state = [], dfa.start
    while True:
        if dfa.accepting[state] and (len(out) >= max_len or rng.random() < 0.3):
            return bytes(out)
        choices = np.flatnonzero(dfa.transitions[state] >= 0)
        if not len(choices):
            return bytes(out)
        b = int(rng.choice(choices))
        out.append(b)
        state = int(dfa.transitions[state, b])


@PROPERTY
@given(regex_trees)
def test_byte_automaton_accepts_only_utf8_of_matches(tree):
    pattern = render(tree)
    regex = _regex_or_empty(pattern)
    if regex is None:
        return
    assert_only_utf8(regex.dfa)
    rng = np.random.default_rng(0)
    for _ in range(5):
        data = random_accepted(regex.dfa, rng)
        assert python_fullmatch(pattern, data.decode("utf-8")), (pattern, data)
    # minimal: another round of refinement merges nothing
    assert minimise(regex.dfa.transitions, regex.dfa.accepting, regex.dfa.start)[0].shape == regex.dfa.transitions.shape


@pytest.mark.parametrize("pattern, n_states", [("é+", 3), ("a|b", 2), ("[^a]", 9), (".*", 8), ("(?:ab)*", 2)])
def test_small_automata(pattern, n_states):
    regex = Regex(pattern)
    assert regex.dfa.n_states == n_states
    assert regex.matches(b"\xff") is False and regex.matches(b"\xc3") is False


def test_byte_semantics():
    regex = Regex(r"[^a]")
    assert regex.matches("😀") and regex.matches("\n") and regex.matches("\U0010ffff") and not regex.matches("a")
    assert not regex.matches(b"\xed\xa0\x80")  # an encoded surrogate is not UTF-8
    assert not regex.matches(b"\xc0\x80")  # overlong
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
    """\\x \\u \\U \\N{...} and octal escapes are characters (interegular alone refuses some), matched byte-exactly."""
    regex = Regex(pattern)
    assert_only_utf8(regex.dfa)
    for text in texts:
        assert regex.matches(text) == regex.matches(text.encode()) == python_fullmatch(pattern, text), (pattern, text)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert python_fullmatch(pattern, random_accepted(regex.dfa, rng).decode("utf-8"))


@pytest.mark.parametrize("pattern, texts", [
    ("[]a]+", ["]", "a]a", "", "b", "]b"]),
    ("[^]a]", ["]", "a", "b", "é"]),
    ("(?#comment)abc", ["abc", "", "(?#comment)abc"]),
    ("a(?#one)b(?#two)*", ["a", "abbb", "ab#"]),
    ("[a-]{2}|[-z]|[\\]]", ["a-", "--", "z", "]", "\\", "b"]),
    ("a{2}\\{2\\}", ["aa{2}", "aaa", "aa{{"]),
])
def test_python_syntax_that_interegular_reads_differently(pattern, texts):
    """A leading ] in a class is a member; (?#...) is a comment: Python's reading, as re.fullmatch."""
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
    ("(?i)a", ["inline flags"]),
    ("(a)?(?(1)b|c)", ["conditional"]),
    (r"[^\s\S]", ["empty language"]),
    (r"a[^\s\S]|[^\d\D]b", ["empty language"]),
])
def test_bad_patterns(pattern, words):
    with pytest.raises(ValueError) as info:
        Regex(pattern)
    for word in words:
        assert word in str(info.value)


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


def reachable_states(tokens, rng: np.random.Generator, n_walks: int = 4, max_steps: int = 12) -> list[int]:
    """Start plus states met on random walks through ``mask``, in order of first visit."""
    states = [tokens.start()]
    for _ in range(n_walks):
        state = tokens.start()
        for _ in range(max_steps):
            allowed = np.flatnonzero(tokens.mask(state).numpy() & ~tokens.vocabulary.is_special)
            if not len(allowed):
                break
            state = tokens.advance(state, int(rng.choice(allowed)))
            assert state != DEAD
            if state not in states:
                states.append(state)
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
        nexts = [tokens.advance(state, int(t)) for t in allowed]
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
    for _ in range(20):
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
            assert regex.dfa.matches(data), (pattern, data)
            assert python_fullmatch(pattern, data.decode("utf-8"))
            finished += 1
    assert finished >= 10  # the check above ran


@pytest.mark.parametrize("pattern", TOKEN_PATTERNS)
def test_mask_equals_brute_force(vocab, pattern):
    regex = Regex(pattern)
    tokens = regex.bind(vocab)
    include = ~vocab.is_special
    states = reachable_states(tokens, np.random.default_rng(2))[:4]
    assert len(states) >= 2
    for state in states:
        expected = automata.mask_from_state_reference(regex.dfa.transitions, regex.dfa.live, vocab.token_bytes,
                                                      include, state)
        expected[list(vocab.eos_token_ids)] = tokens.is_accepting(state)
        np.testing.assert_array_equal(tokens.mask(state).numpy(), expected)
        assert tokens.mask(state) is tokens.mask(state)  # memoised


def test_special_tokens_and_dead_state(gemma_vocab):
    tokens = Regex(r".*").bind(gemma_vocab)
    special = np.flatnonzero(gemma_vocab.is_special)[:50]
    assert all(tokens.advance(tokens.start(), int(t)) == DEAD for t in special)
    mask = tokens.mask(tokens.start())
    assert not mask[special[~np.isin(special, gemma_vocab.eos_token_ids)]].any()
    assert tokens.mask(DEAD).sum() == 0 and not tokens.can_finish(DEAD) and not tokens.is_accepting(DEAD)
    assert tokens.advance(DEAD, 100) == DEAD


def test_walk_kernel_equals_reference(vocab):
    regex = Regex(r"[a-z ]+(?:é|😀)?\d*")
    dfa = regex.dfa
    flat, offsets = automata.flatten(vocab.token_bytes)
    rng = np.random.default_rng(3)
    for t in rng.integers(0, vocab.size, 3000):
        for state in range(dfa.n_states):
            got = automata.walk(dfa.transitions, state, flat, offsets, int(t))
            assert got == automata.walk_reference(dfa.transitions, state, flat, offsets, int(t))


def test_trie_equals_reference(llama_vocab):
    include = ~llama_vocab.is_special
    trie = automata.build_trie(llama_vocab.token_bytes, include)
    assert automata.trie_strings(trie) == automata.build_trie_reference(llama_vocab.token_bytes, include)
    # preorder: each subtree is a contiguous range that ends before its parent's
    assert (trie.end > np.arange(trie.n_nodes)).all() and trie.end[0] == trie.n_nodes


def test_mask_kernel_equals_reference_random_automata(llama_vocab):
    """Random dense automata (not from regexes) stress pruning: most byte transitions live, some dead."""
    rng = np.random.default_rng(4)
    vocab = llama_vocab
    include = ~vocab.is_special
    trie = automata.build_trie(vocab.token_bytes, include)
    for n_states, p_dead in [(3, 0.02), (7, 0.2)]:
        transitions = rng.integers(0, n_states, (n_states, 256)).astype(np.int32)
        transitions[rng.random((n_states, 256)) < p_dead] = -1
        live = rng.random(n_states) < 0.7
        live[0], live[-1] = True, False
        transitions[~live] = n_states - 1  # a non-live state leads only to non-live states, as in any automaton
        for state in range(n_states):
            out = np.zeros(vocab.size, dtype=bool)
            automata.mask_from_state(transitions, live, trie, state, out)
            expected = automata.mask_from_state_reference(transitions, live, vocab.token_bytes, include, state)
            np.testing.assert_array_equal(out, expected)


# --- timings -----------------------------------------------------------------------------------------------------


def test_timings(gemma_vocab):
    """Prints trie build, first-mask and per-mask times on Gemma (run with -s); bounds are sanity checks only."""
    vocab = gemma_vocab
    start = time.perf_counter()
    automata.build_trie(vocab.token_bytes, ~vocab.is_special)
    trie_s = time.perf_counter() - start
    print(f"\n[timing] Gemma trie build ({vocab.size} tokens): {trie_s * 1e3:.0f} ms")
    assert trie_s < 10
    for pattern in [r"\d{4}-\d{2}-\d{2}", r'"[^"\\]*"', r"[a-zA-Z ,.]*", r".*"]:
        start = time.perf_counter()
        regex = Regex(pattern)
        compile_s = time.perf_counter() - start
        tokens = regex.bind(vocab, device="cpu")
        start = time.perf_counter()
        tokens.mask(tokens.start())
        first_s = time.perf_counter() - start
        states = reachable_states(tokens, np.random.default_rng(5), n_walks=3, max_steps=8)
        times = []
        for state in states:
            tokens._masks.pop(state, None)
            start = time.perf_counter()
            tokens.mask(state)
            times.append(time.perf_counter() - start)
        p50 = float(np.median(times))
        print(f"[timing] {pattern!r}: compile {compile_s * 1e3:.1f} ms, {regex.dfa.n_states} states, "
              f"first mask {first_s * 1e3:.2f} ms, mask p50 {p50 * 1e3:.3f} ms over {len(times)} states")
        assert p50 < 0.5


def test_batched_advance_and_masks_equal_the_single_state_ones(llama_tokenizer):
    """The one-kernel batch walk and the gathered masks equal ``advance``/``mask`` row by row (EOS included)."""
    from decoding.vocabulary import Vocabulary

    vocab = Vocabulary(llama_tokenizer)
    tc = Regex(r"\d{2}(-\d{2})?").bind(vocab)
    eos = vocab.eos_token_ids[0]
    one = tc.advance(tc.start(), llama_tokenizer.convert_tokens_to_ids("1"))
    two = tc.advance(one, llama_tokenizer.convert_tokens_to_ids("2"))
    states = [tc.start(), one, two, two, DEAD, one]
    tokens = [llama_tokenizer.convert_tokens_to_ids("12"), eos, eos, llama_tokenizer.convert_tokens_to_ids("-"),
              5, llama_tokenizer.convert_tokens_to_ids("a")]
    expected = [(s if tc.is_accepting(s) else DEAD) if t == eos else tc.advance(s, t) for s, t in zip(states, tokens)]
    assert tc.advance_batch(states, tokens) == expected
    assert expected[2] == two and expected[1] == DEAD
    assert torch.equal(tc.mask_batch(states), torch.stack([tc.mask(s) for s in states]))
