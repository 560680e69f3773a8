"""The grammar engine: regular expressions by derivatives, Earley's parser, greedy lexing, token masks.

- ``rx``: membership against Python's ``re`` on random strings; intersection, complement and counted repetition
  against their definitions; UTF-8 classes exhaustively over code points (sampled).
- The parser: on random grammars over one-byte terminals (left and right recursion, ε-rules, ambiguity, cycles)
  ``Grammar.matches`` equals a fixpoint CYK reference on every string of length <= 6 over the alphabet.
- Greedy lexing, ``%ignore`` and the empty-terminal split, by examples.
- Token level on the Llama 3 (128k) and Gemma 3 (262k) vocabularies: along real token paths, ``mask`` equals the
  per-token walk over the whole vocabulary (every token stepped through the parser), and the kernel equals its
  reference; states are values (re-masking an old state after other work gives the same mask).
- Samplers: ``Masked``, ``AWRS`` and ``SMC`` generations with a recursive grammar all parse.
"""

from __future__ import annotations

import copy
import gc
import itertools
import json
import random
import re

import numpy as np
import pytest
import torch

import decoding as dc
from decoding.constraints import earley, rx
from decoding.constraints.cfg import GrammarBuilder, GrammarError
from decoding.constraints.grammar import Grammar
from decoding.kernels.automata import build_trie, trie_strings
from decoding.kernels.trie_lexing import walk_subtrees, walk_subtrees_reference
from decoding.vocabulary import Vocabulary

# --- rx -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [
    r"[0-9]+", r"\d{4}-\d{2}-\d{2}", r'"([^"\\]|\\.)*"', r"[^\n]{1,5}", r"(a|b)*a(a|b){3}", "é+", r"[\u00e9-\u0fff]x",
    ".", r"(ab|a)(bc|c)?", r"a{2,}b{0,2}", r"[^a-z\d]+", r"(?:x|é|😀){2}", r"(?i:ab)c", r"(?i)a(?-i:b)", r"a(?s:.)",
])
def test_rx_matches_python_re(pattern):
    r = rx.from_regex(pattern)
    rng = random.Random(0)
    alphabet = ["a", "b", "c", "0", "9", "-", '"', "\\", "x", "é", "\n", "ÿ", "\u0fff", "😀", "Z"]
    for _ in range(2000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7)))
        assert rx.matches(r, s) == bool(re.fullmatch(pattern, s, re.ASCII)), (pattern, s)


def test_rx_boolean_operators_and_counters():
    word, short = rx.from_regex("[a-z]+"), rx.from_regex(".{2,3}")
    both, either, minus = rx.inter(word, short), rx.alt(word, short), rx.difference(word, rx.literals(["ab", "b"]))
    for s in ["", "a", "ab", "abc", "abcd", "b", "1", "12", "a1", "ba"]:
        w, h = bool(re.fullmatch("[a-z]+", s)), 2 <= len(s) <= 3
        assert rx.matches(both, s) == (w and h), s
        assert rx.matches(either, s) == (w or h), s
        assert rx.matches(minus, s) == (w and s not in ("ab", "b")), s
    assert rx.is_empty(rx.inter(rx.from_regex("a+"), rx.from_regex("b+")))
    assert not rx.is_empty(rx.inter(rx.from_regex("(ab)*"), rx.from_regex(".{4}")))
    big = rx.repeat(rx.literal("ab"), 3000, 5000)  # a counter, not 5,000 copies
    assert rx.matches(big, "ab" * 3000) and rx.matches(big, "ab" * 5000)
    assert not rx.matches(big, "ab" * 2999) and not rx.matches(big, "ab" * 5001)


def test_rx_liveness_of_differences_and_intersections_is_exact():
    """``is_live`` proves most differences live by a short witness (``_witnessed``) before its derivative search:
    both must agree with brute force over the strings of length <= 6 (enough: every language here that has a
    string has one that short)."""
    words = ["".join(w) for n in range(7) for w in itertools.product("ab", repeat=n)]
    patterns = ["a*", "(ab)+", "a|b", "[ab]{2}", "a{0,3}", "b(a|b)", ""]
    finite = [[], [""], ["a"], ["a", "b"], ["ab", "ba", "aa", "bb"], ["", "a", "aa", "aaa"], ["ab"]]
    for pattern, other, excluded in itertools.product(patterns, patterns, finite):
        for r, truth in [
            (rx.difference(rx.from_regex(pattern), rx.literals(excluded)),
             any(re.fullmatch(pattern, w) and w not in excluded for w in words)),
            (rx.inter(rx.from_regex(pattern), rx.difference(rx.from_regex(other), rx.literals(excluded))),
             any(re.fullmatch(pattern, w) and re.fullmatch(other, w) and w not in excluded for w in words)),
        ]:
            assert rx.is_live(r) == truth, (pattern, other, excluded)


def test_rx_char_classes_are_utf8_exact():
    c = rx.char_class([(0x80, 0x10FFFF)])
    for cp in itertools.chain(range(0, 0x3000, 7), range(0xD000, 0xE100, 3), range(0x10000, 0x110000, 997)):
        data = chr(cp).encode("utf-8", "surrogatepass")
        assert rx.matches(c, data) == (cp >= 0x80 and not 0xD800 <= cp <= 0xDFFF), hex(cp)
    for bad in [b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xf4\x90\x80\x80", b"\xc3", b"\x80"]:
        assert not rx.matches(c, bad) and not rx.matches(rx.any_char(), bad)


def test_rx_refuses_what_an_automaton_cannot_express():
    for pattern, word in [(r"(a)\1", "backreferences"), (r"^a", "anchors"), (r"a(?=b)", "look-ahead"), ("(", "position")]:
        with pytest.raises(ValueError, match=word):
            rx.from_regex(pattern)


# --- the parser on random grammars ---------------------------------------------------------------------------------


def random_grammar(seed: int):
    """A random grammar over the one-byte terminals a, b: 3 nonterminals, 1-3 rules each, bodies of 0-3 symbols."""
    rng = random.Random(seed)
    rules = {n: [[rng.choice(["a", "b", "S", "A", "B"]) for _ in range(rng.randint(0, 3))]
                 for _ in range(rng.randint(1, 3))] for n in "SAB"}
    rules["S"].append([rng.choice("SAB"), "a"])  # keep some recursion in every grammar
    return rules


def build(rules: dict) -> GrammarBuilder:
    g = GrammarBuilder()
    nts = {n: g.nonterminal(n) for n in rules}
    for n, bodies in rules.items():
        for body in bodies:
            g.rule(nts[n], [nts[s] if s in nts else g.terminal(rx.literal(s)) for s in body])
    return g.build(nts["S"])


def cyk_fixpoint(rules: dict, w: str) -> bool:
    """Reference membership for any CFG: the nonterminals deriving each span, by monotone fixpoint."""
    n = len(w)
    derives = {(i, j): set() for i in range(n + 1) for j in range(i, n + 1)}

    def seq(body: list, i: int, j: int) -> bool:
        if not body:
            return i == j
        head, rest = body[0], body[1:]
        for k in range(i, j + 1):
            ok = (k == i + 1 and w[i] == head) if head not in rules else head in derives[(i, k)]
            if ok and seq(rest, k, j):
                return True
        return False

    changed = True
    while changed:
        changed = False
        for (i, j), have in derives.items():
            for a, bodies in rules.items():
                if a not in have and any(seq(body, i, j) for body in bodies):
                    have.add(a)
                    changed = True
    return "S" in derives[(0, n)]


@pytest.mark.parametrize("seed", range(12))
def test_earley_equals_cyk_on_random_grammars(seed):
    rules = random_grammar(seed)
    try:
        grammar = Grammar(build(rules))
    except GrammarError:  # an empty language: the reference must agree
        assert not any(cyk_fixpoint(rules, "".join(w)) for k in range(5) for w in itertools.product("ab", repeat=k))
        return
    for k in range(7):
        for w in itertools.product("ab", repeat=k):
            text = "".join(w)
            assert grammar.matches(text) == cyk_fixpoint(rules, text), (rules, text)


def test_ambiguous_and_left_recursive_grammar():
    g = Grammar("""
        start: e
        e: e "+" e | e "*" e | "(" e ")" | NUMBER
        %import common.NUMBER
    """)
    assert g.matches("1+2*3+(4*5)") and g.matches("((((7))))") and g.matches("1.5e3")
    assert not g.matches("1+") and not g.matches("(1") and not g.matches("")
    assert g.matches("(" * 200 + "1" + ")" * 200)  # unbounded nesting


def test_equal_parser_configurations_are_one_earley_set():
    """Earley sets are interned by their items, whose origins are sets: inputs that leave the parser in one
    configuration share a set (later list elements), and the same text nested one level deeper does not (its
    items wait on another origin). Merging by items alone would accept "[[1]"."""
    g = Grammar('start: list\nlist: "[" (item ("," item)*)? "]"\n?item: NUM | list\nNUM: /[0-9]+/')
    parser = g.parser

    def state(text: str):
        return parser.step(parser.start(), text.encode())

    assert state("[1,2,3") == state("[1,2,3,4,5") and state("[1,2,3").chart is state("[1,2,3,4,5").chart
    assert state("[[1,2,3").chart is not state("[1,2,3").chart
    assert g.matches("[[1]]") and g.matches("[1,[2,[3]],4]")
    assert not g.matches("[[1]") and not g.matches("[1]]") and not g.matches("[1,[2],3")


def test_earley_sets_are_freed_without_the_cycle_collector():
    """Sets point only at earlier sets and the memos live in the tables: a dropped parser leaves no cycle of
    Earley sets for the garbage collector (in a compile loop, cycles cost collector time on every schema)."""
    g = Grammar('start: list\nlist: "[" (item ("," item)*)? "]"\n?item: NUM | list\nNUM: /[0-9]+/')
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert g.matches("[1,[2,[3,4]],5]") and not g.matches("[1,[2]")
        del g
        gc.collect()
        assert not [o for o in gc.garbage if isinstance(o, earley.EarleySet)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_earley_stays_exact_when_its_intern_table_is_cleared(monkeypatch):
    """Past ``_MAX_SETS`` the intern table is cleared: equal sets made afterwards are other objects, which costs
    memo hits, never exactness (CYK reference, with a table cleared every few sets)."""
    monkeypatch.setattr(earley, "_MAX_SETS", 3)
    for seed in range(4):
        rules = random_grammar(seed)
        try:
            grammar = Grammar(build(rules))
        except GrammarError:
            continue
        for w in itertools.product("ab", repeat=5):
            assert grammar.matches("".join(w)) == cyk_fixpoint(rules, "".join(w)), (rules, w)


# --- lexing ---------------------------------------------------------------------------------------------------------


def test_greedy_lexing_and_ignore():
    words = Grammar("""
        start: NAME NAME
        NAME: /[a-z]+/
        %ignore " "
    """)
    assert words.matches("ab cd") and words.matches("  ab   cd ")
    assert not words.matches("abcd")  # greedy: one NAME, as Lark lexes it
    split = Grammar("""
        start: name name
        name: LETTER+
        LETTER: /[a-z]/
    """)
    assert split.matches("abcd")  # letters as terminals: every split is a parse


def test_empty_matching_terminals_become_optional():
    g = GrammarBuilder()
    s = g.nonterminal("s")
    g.rule(s, [g.terminal(rx.literal("<")), g.terminal(rx.from_regex("[0-9]*")), g.terminal(rx.literal(">"))])
    grammar = Grammar(g.build(s))
    assert grammar.matches("<>") and grammar.matches("<42>") and not grammar.matches("<4a>")


def test_grammar_errors_name_the_problem():
    g = GrammarBuilder()
    s, t = g.nonterminal("s"), g.nonterminal("t")
    g.rule(s, [t])
    with pytest.raises(GrammarError, match="'t'.*never defined"):
        g.build(s)
    g.rule(t, [t, g.terminal(rx.literal("x"))])  # t never terminates
    with pytest.raises(GrammarError, match="empty"):
        g.build(s)
    with pytest.raises(ValueError, match="syntax"):
        Grammar("start: 'a'", syntax="ebnf")


# --- token level ----------------------------------------------------------------------------------------------------

JSON_LARK = r"""
start: value
?value: object | array | STRING | NUMBER | "true" | "false" | "null"
object: "{" [pair ("," pair)*] "}"
pair: STRING ":" value
array: "[" [value ("," value)*] "]"
STRING: /"([^"\\\x00-\x1f]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/
NUMBER: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/
%ignore /[ \t\n]+/
"""
ARITH_LARK = r"""
start: sum
?sum: product | sum ("+" | "-") product
?product: atom | product ("*" | "/") atom
?atom: NUMBER | "(" sum ")" | "-" atom
%import common.NUMBER
%ignore " "
"""


@pytest.fixture(scope="module")
def llama_vocab(llama_tokenizer):
    return Vocabulary(llama_tokenizer)


@pytest.fixture(scope="module")
def gemma_vocab(gemma_tokenizer):
    return Vocabulary(gemma_tokenizer)


def brute_force_mask(tokens, state) -> np.ndarray:
    vocab = tokens.vocabulary
    out = np.zeros(vocab.size, dtype=bool)
    for t, data in enumerate(vocab.token_bytes):
        out[t] = not vocab.is_special[t] and tokens.parser.step(state, data) is not None
    out[list(vocab.eos_token_ids)] = tokens.is_accepting(state)
    return out


@pytest.mark.parametrize("vocab_name", ["llama", "gemma"])
@pytest.mark.parametrize("source, text", [
    (JSON_LARK, '{"name": "Ada", "tags": ["x", 12, -3.5e2], "n": {"d": [[1], [true, {"k": null}]]}}'),
    (ARITH_LARK, "(12 + 3.5) * -(4 - (2 / 7))"),
], ids=["json", "arithmetic"])
def test_masks_equal_brute_force_along_real_paths(request, vocab_name, source, text):
    vocab = request.getfixturevalue(f"{vocab_name}_vocab")
    tokenizer = request.getfixturevalue(f"{vocab_name}_tokenizer")
    grammar = Grammar(source)
    tokens = grammar.bind(vocab)
    ids = tokenizer.encode(text, add_special_tokens=False)
    state, states = tokens.start(), []
    for t in ids:
        states.append(state)
        assert tokens.mask(state)[t], vocab.token_bytes[t]
        state = tokens.advance(state, t)
        assert state != dc.constraints.DEAD
    assert tokens.is_accepting(state) and tokens.mask(state)[vocab.eos_token_ids[0]]
    for k in sorted({0, 1, len(ids) // 3, len(ids) // 2, len(ids) - 1}):  # the full walk costs ~1 s a state
        np.testing.assert_array_equal(tokens.mask(states[k]).numpy(), brute_force_mask(tokens, states[k]))
    first = tokens.mask(states[2]).clone()
    tokens._masks.clear()
    assert tokens.mask(states[2]).equal(first)  # an old state after other work: the same mask


def test_advance_batch_equals_advance(llama_vocab):
    """Rows inside a lexeme go through the lexer kernel, the others through the parser: the same states as
    ``advance`` one by one, for allowed and disallowed tokens, EOS and special tokens."""
    tokens = Grammar(JSON_LARK).bind(llama_vocab)
    rng = np.random.default_rng(0)
    states = [tokens.start()] * 8
    for _ in range(12):
        choices = [int(rng.choice(np.flatnonzero(tokens.mask(s).numpy()))) if not tokens.is_dead(s) else 0
                   for s in states]
        probes = choices + [int(t) for t in rng.integers(0, llama_vocab.size, 8)] + [llama_vocab.eos_token_ids[0]]
        rows = states + states + [states[0]]
        batch = tokens.advance_batch(rows, probes)
        for state, token, got in zip(rows, probes, batch):
            if token in llama_vocab.eos_token_ids:
                want = state if tokens.is_accepting(state) else dc.constraints.DEAD
            else:
                want = tokens.advance(state, token)
            assert tokens.is_dead(got) == tokens.is_dead(want)
            if not tokens.is_dead(got):
                assert got == want  # equal parser configurations are one interned Earley set
        states = batch[:8]


def test_walks_shared_across_grammars_keep_each_grammars_terminals(llama_vocab):
    """Walks from a lexer state are shared by content across grammars on one vocabulary; the boundaries come back
    under each grammar's own terminal numbers, so the masks stay exact in a grammar whose terminals are numbered
    differently."""
    string = r'/"([^"\\\x00-\x1f]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/'
    first = Grammar(JSON_LARK).bind(llama_vocab)
    other = Grammar(f'start: "<" (NUM | STRING) ">"\nNUM: /[0-9]+/\nSTRING: {string}').bind(llama_vocab)
    quote = llama_vocab.token_bytes.index(b'"')
    first.mask(first.advance(first.start(), quote))  # walks the string state first
    state = other.advance(other.advance(other.start(), llama_vocab.token_bytes.index(b"<")), quote)
    before = len(other._shared)
    np.testing.assert_array_equal(other.mask(state).numpy(), brute_force_mask(other, state))
    assert len(other._shared) == before  # the string state's walk was the first grammar's


def test_walks_past_boundaries_are_shared_across_grammars_numbered_differently(llama_vocab):
    """The walk past a lexeme boundary is shared by the lexing path's content: a second grammar whose terminals
    are numbered the other way round reuses the first one's walk and still gets its exact mask."""
    first = Grammar('start: "<" NUM ">" | "x"\nNUM: /[0-9]+/').bind(llama_vocab)
    other = Grammar('start: "x" | "<" NUM ">"\nNUM: /[0-9]+/').bind(llama_vocab)
    lt, digit = llama_vocab.token_bytes.index(b"<"), llama_vocab.token_bytes.index(b"7")
    first.mask(first.advance(first.advance(first.start(), lt), digit))
    state = other.advance(other.advance(other.start(), lt), digit)
    before = len(other._shared_paths)
    np.testing.assert_array_equal(other.mask(state).numpy(), brute_force_mask(other, state))
    assert len(other._shared_paths) == before > 0


def test_boundaries_ending_different_terminals_into_the_same_lexer_state_are_walked_apart(llama_vocab):
    """From one lexer state two lexemes ("o" as A, "on" as B) end into the same next state (a word): their walks
    past the boundary differ only by the terminals ended, which must key them apart ("oi" and "one")."""
    tokens = Grammar('start: (A | B) C\nA: "o"\nB: "on"\nC: /[a-z]+/').bind(llama_vocab)
    state = tokens.start()
    np.testing.assert_array_equal(tokens.mask(state).numpy(), brute_force_mask(tokens, state))


def test_states_taking_the_same_lexing_paths_share_one_exact_mask(llama_vocab):
    """Two states with different charts but the same lexer state and the same lexing paths past it (inside the
    first and the second number of a list) get the same mask object, exact for both."""
    tokens = Grammar('start: "[" NUM ("," NUM)* "]"\nNUM: /[0-9]+/').bind(llama_vocab)
    ids = {text: llama_vocab.token_bytes.index(text.encode()) for text in ("[", "1", ",", "2")}
    first = tokens.advance(tokens.advance(tokens.start(), ids["["]), ids["1"])
    second = first
    for text in (",", "2"):
        second = tokens.advance(second, ids[text])
    assert first != second
    assert tokens.mask(first) is tokens.mask(second)
    for state in (first, second):
        np.testing.assert_array_equal(tokens.mask(state).numpy(), brute_force_mask(tokens, state))


def test_signature_masks_are_shared_across_grammars_by_content(llama_vocab):
    """A state of another grammar with the same lexer state content and the same lexing paths past it gets the
    first grammar's mask object; one whose parser takes another path past the same lexer state ("<7" before ";"
    instead of ">") gets its own mask. Both exact (the second fails if the shared key drops the paths)."""
    first = Grammar('start: "<" NUM ">" | "x"\nNUM: /[0-9]+/').bind(llama_vocab)
    same = Grammar('start: "x" | "<" NUM ">"\nNUM: /[0-9]+/').bind(llama_vocab)
    other = Grammar('start: "<" NUM ";"\nNUM: /[0-9]+/').bind(llama_vocab)
    lt, digit = llama_vocab.token_bytes.index(b"<"), llama_vocab.token_bytes.index(b"7")
    states = [g.advance(g.advance(g.start(), lt), digit) for g in (first, same, other)]
    masks = [g.mask(state) for g, state in zip((first, same, other), states)]
    assert masks[1] is masks[0] and not torch.equal(masks[2], masks[0])
    for g, state, mask in zip((first, same, other), states, masks):
        np.testing.assert_array_equal(mask.numpy(), brute_force_mask(g, state))


def test_a_token_of_no_bytes_keeps_the_state(llama_vocab):
    """A non-special token of no bytes (possible in an added-tokens list) is allowed wherever it keeps a state."""
    vocab = copy.copy(llama_vocab)
    empty = 1000
    vocab.token_bytes = [b"" if t == empty else data for t, data in enumerate(llama_vocab.token_bytes)]
    tokens = Grammar(ARITH_LARK).bind(vocab)
    after = tokens.advance(tokens.start(), vocab.token_bytes.index(b"12"))
    for state in (tokens.start(), after):
        assert tokens.advance(state, empty) == state and tokens.advance_batch([state], [empty]) == [state]
        assert tokens.mask(state)[empty]


def test_kernel_equals_reference():
    rng = random.Random(1)
    token_bytes = sorted({bytes(rng.choice(b'ab"1 ') for _ in range(rng.randint(1, 5))) for _ in range(300)})
    token_bytes += token_bytes[::7] + token_bytes[::21]  # tokens with equal bytes: up to three on one node
    trie = build_trie(token_bytes)
    strings = trie_strings(trie)
    node_strings = list(strings)  # preorder = sorted order of node strings
    grammar = Grammar(JSON_LARK)
    lexer = grammar.parser.lexer
    for start in [lexer.start({t}) for t in range(len(grammar.cfg.terminals))]:
        frontier = [start]
        for s in frontier:  # build every reachable row, so the kernel never stops for one
            lexer.build(s)
            frontier += [int(n) for n in set(lexer.table[s].tolist()) if n >= 0 and n not in frontier]
        starts = np.flatnonzero(trie.depth == 1)
        marked = np.empty(len(token_bytes) + 1, np.int64)
        rec = (np.empty(trie.n_nodes, np.int64), np.empty(trie.n_nodes, np.int32), np.empty(trie.n_nodes, bool))
        counts = np.zeros(2, np.int64)
        walk_subtrees(lexer.table, lexer.accept_any, trie.byte, trie.depth, trie.end, trie.token_offsets,
                      trie.token_ids, starts, np.full(len(starts), start, np.int32), marked, *rec,
                      np.empty(trie.max_depth + 1, np.int32), counts)
        out = np.zeros(len(token_bytes), bool)
        out[marked[:counts[1]]] = True
        want_out, want_records = walk_subtrees_reference(lexer.table, lexer.accept_any, strings, node_strings, starts,
                                                         [start] * len(starts), len(token_bytes))
        np.testing.assert_array_equal(out, want_out)
        got = sorted((node_strings[n], int(s)) for n, s in zip(rec[0][:counts[0]], rec[1][:counts[0]]))
        assert got == want_records


# --- samplers -------------------------------------------------------------------------------------------------------

NESTED = r"""
start: list
list: "[" [item ("," item)*] "]"
?item: list | DIGIT
DIGIT: /[0-9]/
"""


@pytest.mark.parametrize("make", [lambda g: dc.Temperature(2.0) | dc.Masked(g), lambda g: dc.AWRS(g, max_rejects=20)])
def test_samplers_generate_sentences(tiny_lm, make):
    grammar = Grammar(NESTED)
    out = dc.generate(tiny_lm, ["x"] * 6, make(grammar), max_new_tokens=40, seed=4)
    finished = [seq for seq in out if seq.finished]
    assert len(finished) >= 3
    for seq in out:
        assert seq.reason in ("eos", "length"), seq
        text = seq.text
        assert grammar.matches(text) if seq.finished else _is_prefix(grammar, text), text


def test_smc_with_a_grammar(llama_lm):
    grammar = Grammar(NESTED)
    out = dc.generate(llama_lm, ["x", "y"], dc.SMC(dc.Masked(grammar), particles=4), max_new_tokens=30, seed=1)
    for o in out:
        for particle in o.particles:
            assert _is_prefix(grammar, particle.text)
            if particle.finished:
                assert grammar.matches(particle.text)


def _is_prefix(grammar: Grammar, text: str) -> bool:
    return grammar.parser.step(grammar.parser.start(), text.encode()) is not None


def test_json_lark_agrees_with_json_module():
    grammar = Grammar(JSON_LARK)
    for text in ['{"a": [1, 2.5e3, {"b": null}], "c": "x\\"y"}', "[[[[]]]]", '{"a":1,}', "[1 2]", '"é😀"', "-0.5",
                 "01", " [] ", '{"a" 1}', "[1, [2, [3, [4]]]]"]:
        try:
            json.loads(text)
            valid = True
        except ValueError:
            valid = False
        assert grammar.matches(text) == valid, text
