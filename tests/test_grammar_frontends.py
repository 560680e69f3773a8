"""Grammar front ends: Lark's syntax and llama.cpp's GBNF to a Cfg, checked by membership against references.

- Lark: ``Grammar(lark_to_cfg(src)).matches`` against Lark's own Earley parser on the same grammar (``lexer=
  "dynamic"``, whose per-terminal longest match agrees with the greedy lexer on the strings used here: whole
  sentences drawn from the grammar with tokens split by spaces, and their token-level mutations), against
  ``json.loads`` for the JSON grammar, and against known answers.
- GBNF: against ``re.fullmatch`` on regular grammars (strings from hypothesis over small alphabets), against
  ``json.loads`` (and the Lark JSON grammar) for the JSON grammar, against counts for ``{m,n}``.
- Every bad input: the error message's content (line and column, the rule or terminal named).
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections import defaultdict
from pathlib import Path

import lark
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoding.constraints.cfg import GrammarError
from decoding.constraints.gbnf import MAX_REPEAT, gbnf_to_cfg
from decoding.constraints.grammar import Grammar
from decoding.constraints.lark_grammar import lark_to_cfg

GRAMMARS = Path(__file__).resolve().parent.parent / "benchmarks" / "grammars"
FEW = settings(max_examples=150, deadline=None, derandomize=True)


def joined(pieces: list[str], max_size: int = 6):
    """Strings made of ``pieces`` (so that a fair share are in the language, unlike uniform characters)."""
    return st.lists(st.sampled_from(pieces), max_size=max_size).map("".join)


@functools.cache
def lark_grammar(source: str, start: str = "start") -> Grammar:
    return Grammar(lark_to_cfg(source, start))


@functools.cache
def gbnf_grammar(source: str, start: str = "root") -> Grammar:
    return Grammar(gbnf_to_cfg(source, start))


@functools.cache
def lark_reference(source: str, start: str = "start") -> lark.Lark:
    return lark.Lark(source, parser="earley", lexer="dynamic", start=start)


def lark_accepts(source: str, text: str, start: str = "start") -> bool:
    try:
        lark_reference(source, start).parse(text)
    except lark.exceptions.LarkError:
        return False
    return True


def json_accepts(text: str) -> bool:
    def no_constants(name):
        raise ValueError(name)  # NaN, Infinity: Python's extension, not JSON

    try:
        json.loads(text, parse_constant=no_constants)
    except ValueError:
        return False
    return True


def read(name: str) -> str:
    return (GRAMMARS / name).read_text(encoding="utf-8")


# --- random sentences of a Lark grammar ---------------------------------------------------------------------------


def sentences(source: str, examples: dict[str, list[str]], n: int, seed: int, depth: int = 6) -> list[list[str]]:
    """``n`` random derivations (token lists) of Lark grammar ``source``; regex terminals draw from ``examples``,
    case-insensitive strings get random case; past ``depth`` each rule takes its shallowest expansion."""
    parser = lark_reference(source)
    by_origin = defaultdict(list)
    for rule in parser.rules:
        by_origin[rule.origin.name].append(rule.expansion)
    height: dict[str, int] = {}
    while len(height) < len(by_origin):
        for name, expansions in by_origin.items():
            known = [1 + max([height[s.name] for s in e if not s.is_term], default=0) for e in expansions
                     if all(s.is_term or s.name in height for s in e)]
            if known:
                height[name] = min(known)
    patterns = {t.name: t.pattern for t in parser.terminals}
    rng = random.Random(seed)

    def text_of(name: str) -> str:
        pattern = patterns[name]
        if isinstance(pattern, lark.lexer.PatternStr):
            value = pattern.value
            return "".join(rng.choice([c.lower(), c.upper()]) for c in value) if "i" in pattern.flags else value
        return rng.choice(examples[name])

    def expand(name: str, level: int) -> list[str]:
        options = by_origin[name]
        if level > depth:
            options = [min(options, key=lambda e: max([height[s.name] for s in e if not s.is_term], default=0))]
        return [t for s in rng.choice(options)
                for t in ([text_of(s.name)] if s.is_term else expand(s.name, level + 1))]

    return [expand(parser.options.start[0], 0) for _ in range(n)]


def mutations(tokens: list[str], rng: random.Random) -> list[list[str]]:
    """Near-misses: one token deleted, duplicated, swapped with its neighbour, or replaced by another token."""
    out = []
    for _ in range(3):
        t, i = list(tokens), rng.randrange(len(tokens))
        kind = rng.randrange(4)
        if kind == 0:
            del t[i]
        elif kind == 1:
            t.insert(i, t[i])
        elif kind == 2 and i + 1 < len(t):
            t[i], t[i + 1] = t[i + 1], t[i]
        else:
            t[i] = rng.choice(tokens)
        out.append(t)
    return out


def check_against_lark(source: str, examples: dict[str, list[str]], n: int, seed: int) -> tuple[int, int]:
    """Sampled sentences and their mutations: ours equals Lark's; returns (texts, accepted)."""
    rng, texts = random.Random(seed), []
    for tokens in sentences(source, examples, n, seed):
        texts += [" ".join(tokens)] + [" ".join(m) for m in mutations(tokens, rng) if m]
    grammar = lark_grammar(source)
    accepted = 0
    for text in texts:
        expected = lark_accepts(source, text)
        assert grammar.matches(text) == expected, (text, expected)
        accepted += expected
    return len(texts), accepted


# --- Lark: grammar features ------------------------------------------------------------------------------------


def test_arithmetic_left_recursion_and_nesting():
    source = read("arithmetic.lark")
    grammar = lark_grammar(source)
    for text in ["1", "1 + 2 * 3", "((((1))))", "1 - -2", "2*(3+4)/-5.5e3", "1 -2 - 3", "(" * 30 + "1" + ")" * 30]:
        assert grammar.matches(text), text
    for text in ["", "1 +", "(1", "1)", "()", "1 2", "+1", "(" * 30 + "1" + ")" * 29]:
        assert not grammar.matches(text), text
    total, accepted = check_against_lark(source, {"NUMBER": ["0", "12", "3.5", "1e3", ".5"]}, n=40, seed=1)
    assert 40 <= accepted < total


def test_balanced_parentheses_exhaustive():
    source = 'start: "(" start ")" start |'
    grammar = lark_grammar(source)
    for length in range(9):
        for bits in range(2 ** length):
            text = "".join("()"[bits >> i & 1] for i in range(length))
            depth = [0]
            for c in text:
                depth.append(depth[-1] + (1 if c == "(" else -1))
            assert grammar.matches(text) == (min(depth) >= 0 and depth[-1] == 0), text


def test_ambiguous_grammar():
    source = 'start: e\ne: e "+" e | e e | NUMBER | "(" e ")"\nNUMBER: /[0-9]+/\n%ignore " "'
    grammar = lark_grammar(source)
    for text in ["1+2+3+4", "1 2 3", "(1 2)+3 4", "1 (2)"]:
        assert grammar.matches(text) and lark_accepts(source, text), text
    for text in ["1+", "+1", "1++2", "()", "12)"]:
        assert not grammar.matches(text) and not lark_accepts(source, text), text
    check_against_lark(source, {"NUMBER": ["1", "23"]}, n=25, seed=2)


def test_tree_shaping_operators_keep_the_language():
    source = """
    start: _items? ["end"] tail
    _items: item ("," item)*
    ?item: pair | NAME -> single
    pair: NAME "=" value{NAME}
    value{x}: x | "(" x ")"
    tail: "!"~2..3 "?"*
    NAME: /[a-z]+/
    %ignore " "
    """
    grammar = lark_grammar(source)
    for text in ["!!", "a, b=c, d=(e) end !!!?", "a end !!??"]:
        assert grammar.matches(text) and lark_accepts(source, text), text
    for text in ["!", "!!!!", "a, !!", "b=(c !!", "end a !!"]:
        assert not grammar.matches(text) and not lark_accepts(source, text), text
    check_against_lark(source, {"NAME": ["a", "bc"]}, n=40, seed=3)


def test_common_imports_and_ignore():
    source = """
    start: (assignment ";")+
    assignment: CNAME "=" (SIGNED_NUMBER | ESCAPED_STRING | CNAME)
    %import common.CNAME
    %import common.SIGNED_NUMBER
    %import common.ESCAPED_STRING
    %import common.WS
    %ignore WS
    """
    grammar = lark_grammar(source)
    for text in ['x = 1;', '_a1 = -2.5e-3 ;\n\ty="s \\" ; t";', 'x=y;z="";']:
        assert grammar.matches(text) and lark_accepts(source, text), text
    for text in ['x = 1', '1x = 2;', 'x = "a;', 'x = "a"b";', 'x y = 1;', 'x = "a\\";']:
        assert not grammar.matches(text) and not lark_accepts(source, text), text
    examples = {"CNAME": ["x", "_a1", "camelCase"], "SIGNED_NUMBER": ["1", "-2.5", "+3e4"],
                "ESCAPED_STRING": ['""', '"a b"', '"\\"q\\""', '"\\\\"'], "WS": [" "]}
    check_against_lark(source, examples, n=40, seed=4)


ESCAPED = "start: ESCAPED_STRING\n%import common.ESCAPED_STRING"


@FEW
@given(st.one_of(joined(['"', "\\", '\\"', "\\\\", "a", "\n"]).map('"{}"'.format), joined(['"', "\\", "a"])))
def test_escaped_string_equals_lark(text):
    """common.ESCAPED_STRING (look-behind and lazy repeats in Lark) is rewritten to the same language."""
    assert lark_grammar(ESCAPED).matches(text) == lark_accepts(ESCAPED, text)


COMMENTS = 'start: (C_COMMENT | WORD)+\n%import common.C_COMMENT\n%import common.WORD\n%ignore " "'


@FEW
@given(joined(["/* a */", "/**/", "/*", "*/", "/", "*", " ", "a"], max_size=4))
def test_lazy_comment_is_shortest_match(text):
    """common.C_COMMENT ends at the first */ (lazy repeat), as Python's re.match gives Lark."""
    assert lark_grammar(COMMENTS).matches(text) == lark_accepts(COMMENTS, text)


def test_comment_ends_at_first_close():
    grammar = lark_grammar(COMMENTS)
    assert grammar.matches("/* a */ b /* c */")
    assert not grammar.matches("/* a */ b */")


def test_ignore_splits_but_never_joins():
    source = 'start: NAME NAME\nNAME: /[a-z]+/\n%ignore " "'
    grammar = lark_grammar(source)
    assert grammar.matches("ab cd") and grammar.matches(" ab  cd ")
    assert not grammar.matches("abcd")  # one greedy lexeme, as Lark's lexers give


CASELESS = 'start: "select"i NAME\nNAME: /[a-z]+/\n%ignore " "'


def test_case_insensitive_strings():
    grammar = lark_grammar(CASELESS)
    for text in ["select x", "SELECT x", "SeLeCt abc"]:
        assert grammar.matches(text), text
    for text in ["select X", "selec x", "sélect x", "SELECT"]:
        assert not grammar.matches(text), text
    accented = lark_grammar('start: "été"i')
    assert accented.matches("éTé") and not accented.matches("ÉTÉ")  # ASCII letters only


@FEW
@given(st.tuples(st.sampled_from(["select", "SELECT", "SeLeCt", "selec", "sélect", ""]),
                 joined([" ", "x", "X", "ab", "select"], max_size=3)).map("".join))
def test_case_insensitive_equals_lark(text):
    assert lark_grammar(CASELESS).matches(text) == lark_accepts(CASELESS, text)


def test_regex_flags():
    grammar = lark_grammar("start: A B\nA: /ab+/i\nB: /x.y/s")
    assert grammar.matches("aBbx\ny") and grammar.matches("ABx-y")
    assert not grammar.matches("abx\n\ny")


# --- Lark: the example grammars ----------------------------------------------------------------------------------


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.choice([0, -7, 12345, 2.5, -1e-7, 3e20])
    if kind in (2, 3, 4):
        return "".join(rng.choice('ab "\\/\n\té\u2028😀\x01') for _ in range(rng.randrange(5)))
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_json(rng, 3) if rng.random() < 0.9 else "k": random_json(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def json_texts(n: int, seed: int) -> list[str]:
    """Serialisations of random values (compact, spaced, indented, ASCII or not) and character-level mutations."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        value = random_json(rng)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]),
                          separators=rng.choice([(",", ":"), (", ", ": ")]))
        out.append(text if rng.random() < 0.7 else f" \r\n\t{text}\n")
        for _ in range(2):
            i = rng.randrange(len(text) + 1)
            edit = rng.choice(['', '', ' ', '"', ',', '}', ']', '[', '{', ':', '\\', '0', '-', '.', 'e', '\x01'])
            out.append(text[:i] + edit + text[i + (rng.random() < 0.5):])
    return out


def test_json_lark_equals_json_loads():
    grammar = lark_grammar(read("json.lark"))
    texts = json_texts(60, seed=5) + ["01", "1.", ".5", "-", "+1", "[1,]", '{"a" 1}', '"\\x41"', "NaN", "tru"]
    verdicts = [json_accepts(t) for t in texts]
    assert 60 <= sum(verdicts) < len(texts)
    for text, expected in zip(texts, verdicts):
        assert grammar.matches(text) == expected, text


SQL_EXAMPLES = {"NAME": ["a", "users", "t1", '"Order Id"'], "INT": ["0", "10"], "NUMBER": ["1", "2.5"],
                "STRING": ["'x'", "'it''s'", "''"], "COMPARISON": ["=", "<>", ">="], "WS": [" "]}


def test_sql_grammar():
    source = read("sql.lark")
    grammar = lark_grammar(source)
    for text in ["SELECT * FROM t", "select a, b AS c from t, u as v where a = 1 and not b is null order by a desc",
                 "SELECT COUNT(*) FROM (SELECT x FROM y) AS s WHERE x IN (1, 2) OR y LIKE 'a''b' LIMIT 10;",
                 "SELECT DISTINCT t.a FROM t WHERE a BETWEEN 1 AND 2 * (3 + b)"]:
        assert grammar.matches(text) and lark_accepts(source, text), text
    for text in ["SELECT FROM t", "SELECT * FROM", "SELECT * FROM t WHERE", "SELECT a b c FROM t",
                 "SELECT * FROM t LIMIT 1.5", "SELECT * FROM t WHERE a = 'x"]:
        assert not grammar.matches(text) and not lark_accepts(source, text), text
    total, accepted = check_against_lark(source, SQL_EXAMPLES, n=15, seed=6)
    assert 15 <= accepted < total


# --- GBNF --------------------------------------------------------------------------------------------------------


def test_gbnf_escapes():
    grammar = gbnf_grammar(r'root ::= "\x41\u00e9\U0001F600\n\r\t\\\"\[\]\-" [\x00-\x1F\]] "\x41BC"')
    assert grammar.matches('Aé😀\n\r\t\\"[]-\x07ABC')
    assert grammar.matches('Aé😀\n\r\t\\"[]-]ABC')
    assert not grammar.matches('Aé😀\n\r\t\\"[]- ABC')
    assert not grammar.matches('Aé😀\n\r\t\\"[]-\x07A')


REGULAR_GBNF = [  # (GBNF, the same language as a Python regex, pieces of test strings)
    ('root ::= [a-c]+ "-"? [^a]{1,3}', r"[a-c]+-?[^a]{1,3}", ["a", "b", "c", "-", "x", "\n"]),
    ('root ::= ("ab" | "a")* "b"{2,}', r"(?:ab|a)*b{2,}", ["a", "b", "bb", "ab", "c"]),
    ('root ::= . "x"? .', r"[\s\S]x?[\s\S]", ["a", "x", "\n", "é"]),
    ('root ::= [^\\]\\-a-c]*', r"[^\]\-a-c]*", ["a", "c", "d", "]", "-", "x", "é", "[", "\\"]),
    ('root ::= x y{0,2}\nx ::= "a"{2} | "b"\ny ::= ("a" "b"?){1,2}', r"(?:aa|b)(?:(?:ab?){1,2}){0,2}",
     ["a", "b", "aa", "ab"]),
    ('# leading comment\nroot ::= (\n  "a" # inside\n  | "b"\n)+ |\n  "c"\n\n# trailing\n', r"[ab]+|c",
     ["a", "b", "c", "#", " "]),
]


@pytest.mark.parametrize("gbnf, pattern, pieces", REGULAR_GBNF)
def test_gbnf_regular_equals_re(gbnf, pattern, pieces):
    grammar, regex = gbnf_grammar(gbnf), re.compile(pattern)

    @settings(max_examples=120, deadline=None, derandomize=True)
    @given(joined(pieces))
    def check(text):
        assert grammar.matches(text) == (regex.fullmatch(text) is not None)

    check()


@pytest.mark.parametrize("repeat, counts", [("{3}", {3}), ("{2,}", set(range(2, 12))), ("{0,3}", {0, 1, 2, 3}),
                                            ("{1,1}", {1}), ("*", set(range(12))), ("+", set(range(1, 12))),
                                            ("?", {0, 1}), ("{0}", {0})])
def test_gbnf_repeat_counts(repeat, counts):
    grammar = gbnf_grammar(f'root ::= "<" ("a" | "bc"){repeat} ">"')
    for k in range(12):
        assert grammar.matches("<" + "a" * k + ">") == (k in counts)
        assert grammar.matches("<" + "bc" * k + ">") == (k in counts)
    assert not grammar.matches("<" + "b" * max(counts) + ">") or max(counts) == 0


def test_gbnf_large_repeat_is_linear():
    assert len(gbnf_to_cfg(f'root ::= [0-9]{{2,{MAX_REPEAT}}}').rules) < 3 * MAX_REPEAT
    grammar = gbnf_grammar('root ::= [0-9]{2,200}')
    assert grammar.matches("1" * 200) and not grammar.matches("1" * 201) and not grammar.matches("1")


def test_gbnf_nesting_and_left_recursion():
    grammar = gbnf_grammar('root ::= list\nlist ::= "[" (item ("," item)*)? "]"\nitem ::= list | sum\n'
                           'sum ::= sum "+" num | num\nnum ::= [0-9]+')
    for text in ["[]", "[1]", "[1+2+3,[[]],[4,[5+6]]]", "[" * 40 + "]" * 40]:
        assert grammar.matches(text), text
    for text in ["", "[", "[1,]", "[+1]", "[1+]", "[[]", "[" * 40 + "]" * 39]:
        assert not grammar.matches(text), text


def test_json_gbnf_equals_json_loads_and_json_lark():
    gbnf, lark_json = gbnf_grammar(read("json.gbnf")), lark_grammar(read("json.lark"))
    texts = json_texts(50, seed=7) + ['"\\u00e9"', '"\\u00g9"', '"\x7f"', "-0.0e+0", "[01]", '{"a":1,}']
    for text in texts:
        expected = json_accepts(text)
        assert gbnf.matches(text) == expected, text
        assert lark_json.matches(text) == expected, text


def test_gbnf_start_and_names():
    grammar = gbnf_grammar('item-1 ::= "x" 2nd\n2nd ::= "y"\nroot ::= "r"', start="item-1")
    assert grammar.matches("xy") and not grammar.matches("r")
    assert gbnf_grammar('root ::= ""').matches("")


# --- bad input ---------------------------------------------------------------------------------------------------

LARK_ERRORS = [  # (source, start, every part the message must contain)
    ('start: "a" @', "start", ["line 1, column 12"]),
    ('start "a"', "start", ["line 1, column 7", "missing colon"]),
    ('start: "a"\n  | )', "start", ["line 2, column 5"]),
    ("start: foo", "start", ["'foo'", "not defined"]),
    ("start: A", "start", ["'A'", "not defined"]),
    ('start: "a"', "main", ["start rule 'main' is not defined", "['start']"]),
    ("start: a\na: a", "start", ["language is empty", "'start'"]),
    ('start: A\nA: /(?<=a)b/', "start", ["terminal A", "look-behind"]),
    ('start: A\nA: /a\\1/', "start", ["terminal A"]),
    ("start: A\n%declare A", "start", ["terminal A is declared", "cannot be lexed"]),
    ('start: "a"\n%import nowhere.B', "start", ["%import", "not available"]),
    ('start: "a"\nstart: "b"', "start", ["'start'", "more than once"]),
    ('start: ""', "start", ["Empty terminals"]),
]


@pytest.mark.parametrize("source, start, parts", LARK_ERRORS)
def test_lark_errors(source, start, parts):
    with pytest.raises(GrammarError) as error:
        lark_to_cfg(source, start)
    for part in parts:
        assert part in str(error.value), (part, str(error.value))


GBNF_ERRORS = [  # (source, every part the message must contain)
    ('root ::= "a"\n | "b"', ["line 2, column 2", "'|'", "after '|', '::=' or inside parentheses"]),
    ('root ::= "a" b ::= "c"', ["line 1, column 16", "'::='", "new line"]),
    ('root ::= "a"\n  "b"\n', ["line 2, column 3", "'\"b\"'"]),
    ('root = "a"', ["line 1, column 6", "unexpected character '='"]),
    ('root ::= *', ["line 1, column 10", "'*'"]),
    ('root ::= "ab', ["line 1, column 10", "closing quote"]),
    ('root ::= [ab', ["line 1, column 10", "closing ']'"]),
    ('root ::= ("a"\n', ["line 2, column 1", "end of input", "unclosed '('"]),
    ('root ::= "a\nb\\q"', ["line 2, column 2", "unknown escape \\q"]),
    ('root ::= [\\x4]', ["line 1, column 11", "\\x needs 2 hex digits"]),
    ('root ::= "\\u12"', ["line 1, column 11", "\\u needs 4 hex digits"]),
    ('root ::= "\\U00110000"', ["\\U00110000 is not a Unicode scalar value"]),
    ('root ::= "\\uD800"', ["\\uD800 is not a Unicode scalar value"]),
    ("root ::= []", ["line 1, column 10", "empty character class"]),
    ("root ::= [z-a]", ["line 1, column 10", "reversed range 'z'-'a'"]),
    ('root ::= x\nx ::= y "a"', ["undefined rule 'y'", "line 2, column 7"]),
    ('main ::= "a"', ["no rule 'root'", "['main']"]),
    ('root ::= "a"\nroot ::= "b"', ["'root' is defined twice", "lines 1 and 2"]),
    (f'root ::= "a"{{{MAX_REPEAT + 1}}}', ["line 1, column 14", f"bound {MAX_REPEAT + 1} is above {MAX_REPEAT}"]),
    ('root ::= "a"{3,2}', ["line 1, column 16", "maximum below its minimum"]),
    ("root ::= <|eot|>", ["line 1, column 10", "token reference <|eot|>"]),
    ('root ::= x\nx ::= x "a"', ["language is empty", "'root'"]),
]


@pytest.mark.parametrize("source, parts", GBNF_ERRORS)
def test_gbnf_errors(source, parts):
    with pytest.raises(GrammarError) as error:
        gbnf_to_cfg(source)
    for part in parts:
        assert part in str(error.value), (part, str(error.value))


@pytest.mark.parametrize("front_end", [lark_to_cfg, gbnf_to_cfg])
def test_source_must_be_text(front_end):
    with pytest.raises(GrammarError, match="source: bytes"):
        front_end(b"root ::= 'a'")


def test_example_grammar_files_compile():
    for path in sorted(GRAMMARS.iterdir()):
        cfg = (gbnf_to_cfg if path.suffix == ".gbnf" else lark_to_cfg)(path.read_text(encoding="utf-8"))
        assert cfg.rules, path.name
