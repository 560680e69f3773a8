"""Speculative decoding under a constraint has exactly the law of ``Masked`` decoding.

- exact enumeration: every depth-2 draft tree of every verifier family, with the target's and the draft's laws
  masked at each node, integrates to Masked decoding's law of 3 tokens (1e-9);
- chi-square through the whole pipeline on real random HF models with a 5-token vocabulary (EOS = 4) and a token
  constraint with a dead end: 10,000 rows of one prompt in one batch at seed 0 against the exact law of Masked
  decoding's 3-token outputs (dead ends included), for every tree shape and verifier family, with a model draft and
  with ``ConstraintDraft``; the log weight is Masked's (log Z summed over the tokens output);
- greedy constrained speculative output equals greedy ``Masked`` output token for token on the default model, for a
  JSON Schema, a Lark grammar and a regex;
- what cannot follow a tree is refused by name before any model work.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import decoding as dc
from decoding.constraints.base import DEAD, TokenConstraint

from test_speculative import CASES, assert_same_law, chi_square_p, compose, round_law
from toys import EOS, V, law_of, sequence_law

ROWS = 10_000
PROMPT = (0, 1, 2, 0, 1)
STUCK = "stuck"


class NoRepeat(TokenConstraint):
    """A token constraint over the toy vocabulary: no token repeats the one before it, EOS only after two tokens, and
    token 3 leads into a state that allows nothing (a dead end that is not DEAD: Masked must report it), unless
    ``stuck=False``."""

    vocabulary = SimpleNamespace(eos_token_ids=[EOS], size=V)

    def __init__(self, stuck: bool = True):
        self.stuck = stuck

    def start(self):
        return (None, 0)

    def advance(self, state, token_id):
        if state == DEAD or state == STUCK or not self.mask(state)[token_id]:
            return DEAD
        if token_id == EOS:
            return state
        return STUCK if token_id == 3 and self.stuck else (token_id, state[1] + 1)

    def is_accepting(self, state):
        return isinstance(state, tuple) and state[1] >= 2

    def can_finish(self, state):
        return isinstance(state, tuple)

    def mask(self, state):
        out = torch.zeros(V, dtype=torch.bool)
        if state in (DEAD, STUCK):
            return out
        out[:EOS] = True
        if state[0] is not None:
            out[state[0]] = False
        out[EOS] = self.is_accepting(state)
        return out


def masked_law(target, transforms, constraint: TokenConstraint, length: int) -> dict[tuple, float]:
    """The exact law of the first ``length`` tokens of Masked decoding (sequences end at EOS and at dead ends)."""
    raw = law_of(target)
    out: dict[tuple, float] = {}

    def walk(seq: tuple, state, prob: float) -> None:
        mask = constraint.mask(state)
        if len(seq) == length or (seq and seq[-1] == EOS) or not bool(mask.any()):
            out[seq] = out.get(seq, 0.0) + prob
            return
        p = raw(PROMPT + seq).log().masked_fill(~mask, float("-inf"))
        p = p - p.logsumexp(-1)
        law = (dc.samplers.SamplerChain((*transforms, dc.Categorical())).law(p[None], None)[0]).exp()
        for x in range(V):
            if law[x] > 0:
                walk(seq + (x,), constraint.advance(state, x), prob * float(law[x]))

    walk((), constraint.start(), 1.0)
    return out


def restricted(law, constraint: TokenConstraint, prompt: tuple):
    """context -> ``law`` restricted to the tokens the constraint allows after the context's generated part."""
    def p(context: tuple) -> torch.Tensor:
        state = constraint.start()
        for x in context[len(prompt):]:
            state = constraint.advance(state, x)
        kept = law(context) * constraint.mask(state)
        return kept / kept.sum()

    return p


@pytest.mark.parametrize("verifier,k,law", CASES, ids=[f"{type(v).__name__}-{k}-{law}" for v, k, law in CASES])
def test_every_masked_tree_enumerated_gives_the_masked_law(target, draft, verifier, k, law):
    """Depth-2 trees whose target and draft laws are masked at every node (as the pipeline masks them): all draws
    enumerated, decisions integrated exactly; the output law is Masked decoding's to 1e-9."""
    prompt, c = PROMPT[:2], NoRepeat(stuck=False)
    p, q = restricted(law_of(target), c, prompt), restricted(law_of(draft), c, prompt)
    emitted = round_law(p, q, verifier, k, law, prompt, depth=2)
    assert_same_law(compose(p, prompt, emitted, 3), sequence_law(p, prompt, 3))


def constrained(transforms=()) -> dc.samplers.SamplerChain | dc.Masked:
    masked = dc.Masked(NoRepeat())
    return dc.samplers.SamplerChain((*transforms, masked)) if transforms else masked


SHAPES = [
    ("chain", lambda d: dc.Speculative(d, dc.Chain(3), sampler=constrained()), ()),
    ("iid-rrs", lambda d: dc.Speculative(d, dc.MultiDraft(2, 2, "iid"), sampler=constrained()), ()),
    ("iid-spectr", lambda d: dc.Speculative(d, dc.MultiDraft(2, 2, "iid"), verify="spectr", sampler=constrained()),
     ()),
    ("wor-rrs", lambda d: dc.Speculative(d, dc.MultiDraft(2, 2, "without_replacement"), sampler=constrained()), ()),
    ("greedy-draws", lambda d: dc.Speculative(d, dc.MultiDraft(3, 2, "greedy"), sampler=constrained()), ()),
    ("dynamic", lambda d: dc.Speculative(d, dc.DynamicTree(budget=5, max_depth=3, top_k=2), sampler=constrained()),
     ()),
    ("constraint-draft", lambda d: dc.Speculative(dc.ConstraintDraft(d, max_choices=3),
                                                  dc.DynamicTree(budget=5, max_depth=3, top_k=2),
                                                  sampler=constrained()), ()),
    ("constraint-draft-chain", lambda d: dc.Speculative(dc.ConstraintDraft(None, max_choices=4), dc.Chain(2),
                                                        sampler=constrained()), ()),
    ("T0.6-top3", lambda d: dc.Speculative(d, dc.Chain(2), sampler=constrained((dc.Temperature(0.6), dc.TopK(3)))),
     (dc.Temperature(0.6), dc.TopK(3))),
]


@pytest.mark.parametrize("name,make,transforms", SHAPES, ids=[s[0] for s in SHAPES])
def test_pipeline_output_has_the_masked_law(target, draft, name, make, transforms):
    """10,000 rows, seed 0, 3 new tokens: chi-square p > 0.001 against Masked decoding's exact law; drafts were
    accepted; the log weight of every row is Masked's (log Z of each output token's step, -inf at a dead end)."""
    spec = make(dc.ModelDraft(draft))
    out = spec.run(target, dc.DecodeTask([list(PROMPT)] * ROWS, max_new_tokens=3, seed=0))
    counts: dict[tuple, int] = {}
    for g in out:
        counts[tuple(g.token_ids)] = counts.get(tuple(g.token_ids), 0) + 1
    law = masked_law(target, transforms, NoRepeat(), 3)
    assert chi_square_p(counts, law, ROWS) > 1e-3
    assert sum(g.counters["accepted_tokens"] for g in out) > ROWS / 10
    for g in out[:200]:
        assert g.log_weight == pytest.approx(masked_log_weight(target, g.token_ids), abs=1e-4)
        assert (g.reason == "dead end: the sampler's weight is zero") == (g.log_weight == -math.inf)


def masked_log_weight(target, tokens: list[int]) -> float:
    """Masked decoding's log weight of a 3-token-limit output: log Z of each step's state, -inf if it ended stuck."""
    raw, c = law_of(target), NoRepeat()
    state, total, seq = c.start(), 0.0, ()
    for t in tokens:
        total += math.log(float(raw(PROMPT + seq)[c.mask(state)].sum()))
        state, seq = c.advance(state, t), seq + (t,)
    return total if len(seq) == 3 or seq[-1:] == (EOS,) else -math.inf


def test_the_dead_end_is_reported_like_masked(target, draft):
    """Rows that reach token 3 end there (nothing is allowed after it) with weight -inf, as under Masked."""
    spec = dc.Speculative(dc.ModelDraft(draft), dc.Chain(3), sampler=constrained())
    out = spec.run(target, dc.DecodeTask([list(PROMPT)] * 64, max_new_tokens=6, seed=1))
    stuck = [g for g in out if 3 in g.token_ids and len(g.token_ids) < 6]  # at the limit, the length ends it first
    assert stuck and all(g.token_ids[-1] == 3 and g.reason.startswith("dead end") for g in stuck)
    plain = dc.Ancestral(constrained()).run(target, dc.DecodeTask([list(PROMPT)] * 64, max_new_tokens=6, seed=1))
    assert any(3 in g.token_ids and g.reason.startswith("dead end") for g in plain)


def test_greedy_masked_takes_the_best_allowed_token(target):
    logprobs = torch.log(torch.tensor([[0.5, 0.2, 0.2, 0.05, 0.05]]))
    c = NoRepeat()
    greedy = dc.Masked(c, greedy=True)
    state = [c.advance(c.start(), 0)]
    assert greedy.sample(logprobs, [state[0]]).tokens.tolist() == [1]  # 0 may not repeat
    law = greedy.law(logprobs, state)
    assert law.exp().tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0]]
    out = dc.Ancestral(greedy).run(target, dc.DecodeTask([list(PROMPT)], max_new_tokens=5))
    spec = dc.Speculative(dc.ConstraintDraft(None, max_choices=4), dc.DynamicTree(4, 3, 2), sampler=greedy)
    assert spec.run(target, dc.DecodeTask([list(PROMPT)], max_new_tokens=5))[0].token_ids == out[0].token_ids
    with pytest.raises(TypeError, match="greedy"):
        dc.Masked(c, greedy=1)


# --- the default model ----------------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
    "city": {"enum": ["Paris", "London", "Berlin"]},
    "pets": {"type": "array", "items": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]},
                                                                         "legs": {"type": "integer"}},
                                        "required": ["kind", "legs"], "additionalProperties": False}, "maxItems": 2}},
    "required": ["name", "age", "city", "pets"], "additionalProperties": False}
ARITHMETIC = 'start: sum\n?sum: product (("+" | "-") product)*\n?product: atom (("*" | "/") atom)*\n' \
             '?atom: NUMBER | "(" sum ")"\n%import common.NUMBER\n'


@pytest.mark.slow
@pytest.mark.parametrize("constraint", [
    pytest.param(lambda: dc.JsonSchema(SCHEMA), id="json-schema"),
    pytest.param(lambda: dc.Grammar(ARITHMETIC), id="lark"),
    pytest.param(lambda: dc.Regex(r"[A-Z][a-z]+ (is|was) born in [0-9]{4}\."), id="regex"),
])
def test_default_model_greedy_constrained_speculative_equals_masked(gemma, constraint):
    """Token for token, with the log weights, on Gemma 3 270M; fewer target forwards."""
    prompts = ["A person as JSON with name, age, city and pets:\n", "Compute (3 + 4) * 12 = "]
    c = constraint()
    plain = dc.generate(gemma, prompts, dc.Masked(c, greedy=True), max_new_tokens=40)
    spec = dc.Speculative(dc.ConstraintDraft(dc.NGramDraft(3)), dc.DynamicTree(budget=12, max_depth=10, top_k=3),
                          sampler=dc.Masked(c, greedy=True))
    out = dc.generate(gemma, prompts, spec, max_new_tokens=40)
    assert [o.token_ids for o in out] == [o.token_ids for o in plain]
    assert [o.log_weight for o in out] == pytest.approx([o.log_weight for o in plain], abs=1e-3)
    assert out.stats.forwards < plain.stats.forwards


# --- bad input ------------------------------------------------------------------------------------------------


def test_what_cannot_follow_a_tree_is_refused_by_name(draft):
    c = NoRepeat()
    with pytest.raises(ValueError, match="AWRS.*dc.Masked"):
        dc.Speculative(draft, sampler=dc.AWRS(c))
    with pytest.raises(ValueError, match="Predicate.*mask"):
        dc.Speculative(draft, sampler=dc.Masked(dc.Predicate(lambda text: True)))
    with pytest.raises(ValueError, match="Mirostat"):
        dc.Speculative(draft, sampler=dc.Mirostat(3.0) | dc.Masked(c))
    with pytest.raises(ValueError, match="verify: block"):
        dc.Speculative(draft, dc.Chain(3), verify="block", sampler=dc.Masked(c))
    with pytest.raises(ValueError, match="draft: ConstraintDraft.*Masked"):
        dc.Speculative(dc.ConstraintDraft(draft), dc.Chain(3))
    with pytest.raises(TypeError, match="inner"):
        dc.ConstraintDraft("ngram")
    with pytest.raises(ValueError, match="max_choices"):
        dc.ConstraintDraft(max_choices=0)
    in_place = NoRepeat()
    in_place.states_are_values = False
    with pytest.raises(ValueError, match="NoRepeat.*in place"):
        dc.Speculative(draft, sampler=dc.Masked(in_place))


# --- what the constraint draft reads ----------------------------------------------------------------------------


def advanced(constraint, lm, text: str):
    state = constraint.start()
    for token in lm.encode(text)[1:]:  # without <bos>
        state = constraint.advance(state, token)
    return state


def test_forced_bytes_of_grammars_and_regexes(gemma_lm):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "role": {"enum": ["engineer", "designer"]}},
              "required": ["name", "role"], "additionalProperties": False}
    json = dc.JsonSchema(schema).bind(gemma_lm.vocabulary)
    expected = {"": b'{"name":"', '{"name":"Al': b"", '{"name":"Al"': b',"role":"', '{"name":"Al","role":"': b"",
                '{"name":"Al","role":"e': b'ngineer"}', '{"name":"Al","role":"engineer"}': b""}
    assert {text: json.forced_bytes(advanced(json, gemma_lm, text)) for text in expected} == expected
    assert json.forced_bytes(json.start(), limit=3) == b'{"n'
    regex = dc.Regex(r"Call me at \(\d{3}\)( now)?").bind(gemma_lm.vocabulary)
    assert regex.forced_bytes(regex.start()) == b"Call me at ("
    assert regex.forced_bytes(advanced(regex, gemma_lm, "Call me at (123)")) == b""  # it may end here


def test_the_constraint_draft_ranks_the_canonical_split_first(gemma_lm):
    draft = dc.ConstraintDraft(max_choices=8).bind(gemma_lm)
    tok = gemma_lm.tokenizer
    ids, logq = draft._rank(b'":"', ())
    assert ids[0] == tok('":"', add_special_tokens=False)["input_ids"][0]  # the tokenizer's own split first
    pieces = [gemma_lm.vocabulary.token_bytes[t] for t in ids]
    assert pieces[1:] == sorted(pieces[1:], key=len, reverse=True) and all(b'":"'.startswith(p) for p in pieces)
    assert len(set(pieces)) == len(pieces)  # one token per spelling: no byte-fallback twin of '"'
    assert logq == sorted(logq, reverse=True) and abs(sum(math.exp(x) for x in logq) - 1) < 1e-9
