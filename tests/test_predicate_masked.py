"""Predicate constraints and the Masked sampler (locally constrained decoding by masks)."""

from __future__ import annotations

import math

import pytest
import torch

import decoding as dc
from decoding.constraints.base import DEAD, TokenConstraint
from decoding.constraints.predicate import Predicate, PredicateError
from decoding.kernels.random import FixedUniforms


class ParityConstraint(TokenConstraint):
    """Toy automaton over a tiny vocabulary: state = number of tokens so far; even steps allow even ids only,
    odd steps odd ids only; accepting after 2 tokens; token 5 is EOS; state 9 allows nothing (a dead end)."""

    class _Vocab:
        size, eos_token_ids = 6, (5,)

    vocabulary = _Vocab()

    def __init__(self):
        self._masks = {}  # state -> its mask, built once (the 10,000-row grids ask for one per row)

    def start(self):
        return 0

    def advance(self, state, token_id):
        return state + 1 if token_id % 2 == state % 2 and token_id != 5 else DEAD

    def is_accepting(self, state):
        return state == 2

    def can_finish(self, state):
        return state != DEAD and state <= 2

    def mask(self, state):
        if state not in self._masks:
            allowed = torch.tensor([t % 2 == state % 2 and state != 9 for t in range(6)])
            allowed[5] = self.is_accepting(state)
            self._masks[state] = allowed
        return self._masks[state]


def test_masked_draw_is_the_renormalised_allowed_law_and_weight_is_log_z():
    """Enumerate a grid of uniforms: frequencies equal the masked law within 1/M; log_weight = log allowed mass."""
    probs = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.15, 0.1])
    sampler = dc.Masked(ParityConstraint())
    m = 10_000
    u = ((torch.arange(m, dtype=torch.float64) + 0.5) / m)[:, None]
    for state, allowed in [(0, [0, 2, 4]), (1, [1, 3]), (2, [0, 2, 4, 5])]:
        logprobs = probs.log().expand(m, -1).contiguous()
        tokens, log_weight, logq = sampler.draw(logprobs, [state] * m, FixedUniforms(u))
        z = probs[allowed].sum()
        law = torch.zeros(6)
        law[allowed] = probs[allowed] / z
        freq = torch.bincount(tokens, minlength=6).double() / m
        assert (freq - law.double()).abs().max() <= 1.0 / m + 1e-9
        torch.testing.assert_close(log_weight, torch.full((m,), math.log(z)), atol=1e-6, rtol=0)
        torch.testing.assert_close(logq, (probs[tokens] / z).log(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("terminal", [dc.Masked, dc.AWRS])
def test_truncation_before_a_constraint_acts_among_the_allowed_tokens(terminal):
    """TopK(2) | constraint keeps the 2 most probable ALLOWED tokens (state 0 allows 0, 2, 4: keep 2 and 4, law
    2/3, 1/3), not the allowed part of p's top 2 ({2, 1}: token 2 alone); the weight is log p(allowed) = log 0.55.
    Where p's top 2 holds no allowed token (state 1 after a shift), the old composition was a dead end."""
    probs = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.15, 0.1])
    sampler = dc.TopK(2) | terminal(ParityConstraint())
    m = 10_000
    u = ((torch.arange(m, dtype=torch.float64) + 0.5) / m)[:, None]
    out = sampler.sample(probs.log().expand(m, -1).contiguous(), sampler.init_state(m), FixedUniforms(u))
    freq = torch.bincount(out.tokens, minlength=6).double() / m
    law = torch.tensor([0, 0, 2 / 3, 0, 1 / 3, 0], dtype=torch.float64)
    assert (freq - law).abs().max() <= 1.0 / m + 1e-9
    torch.testing.assert_close(out.log_weight.double(), torch.full((m,), math.log(0.55), dtype=torch.float64),
                               atol=1e-6, rtol=0)
    assert out.state[-1][:3] == [1, 1, 1]  # the constraint's state follows the emitted token
    odd_low = torch.tensor([[0.3, 0.05, 0.3, 0.05, 0.2, 0.1]]).log()  # state 1 allows 1, 3: outside p's top 2
    state = (None, [1])
    out = sampler.sample(odd_low, state, FixedUniforms(torch.tensor([[0.7]])))
    assert out.tokens.item() in (1, 3) and out.log_weight.item() == pytest.approx(math.log(0.1))


def test_truncation_before_a_predicate_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="TopP.*before AWRS.*Temperature"):
        dc.TopP(0.9) | dc.AWRS(Predicate(lambda text: "a" not in text))
    dc.Temperature(0.7) | dc.AWRS(Predicate(lambda text: "a" not in text))  # pointwise: AWRS's own path


def test_masked_dead_end_has_zero_weight_not_an_exception():
    sampler = dc.Masked(ParityConstraint())
    logprobs = torch.log_softmax(torch.randn(2, 6), -1)
    tokens, log_weight, logq = sampler.draw(logprobs, [0, 9], FixedUniforms(torch.tensor([[0.5], [0.5]])))
    assert math.isfinite(log_weight[0]) and log_weight[1] == -math.inf and logq[1] == -math.inf


def test_masked_state_advances_only_with_the_emitted_token():
    sampler = dc.Masked(ParityConstraint())
    state = sampler.init_state(2)
    out = sampler.sample(torch.log_softmax(torch.randn(2, 6), -1), state, FixedUniforms(torch.tensor([[0.3], [0.9]])))
    assert state == [0, 0] and out.state == [1, 1]
    assert all(t % 2 == 0 for t in out.tokens.tolist())


def test_predicate_walks_bytes_and_waits_for_split_characters(llama_lm):
    vocab = llama_lm.vocabulary
    tc = Predicate(lambda text: "x" not in text, complete=lambda text: text.endswith("!")).bind(vocab)
    euro = "€".encode()
    first = next(i for i, b in enumerate(vocab.token_bytes) if b == euro[:2] and not vocab.is_special[i])
    last = next(i for i, b in enumerate(vocab.token_bytes) if b == euro[2:] and not vocab.is_special[i])
    state = tc.advance(tc.start(), first)  # half a character: judged on the complete part, kept
    assert state == euro[:2] and not tc.is_accepting(state) and tc.can_finish(state)
    state = tc.advance(state, last)
    assert state == euro
    bang = llama_lm.encode("!")[-1]
    assert tc.is_accepting(tc.advance(state, bang))
    assert tc.advance(state, llama_lm.encode("x")[-1]) == DEAD
    assert tc.advance(tc.start(), vocab.eos_token_ids[0]) == DEAD  # special tokens are not text


def test_predicate_errors_carry_the_prefix(llama_lm):
    def picky(text):
        if text.endswith("b"):
            raise KeyError("no b")
        return True

    tc = Predicate(picky).bind(llama_lm.vocabulary)
    with pytest.raises(PredicateError, match="'ab'"):
        tc.advance(b"a", llama_lm.encode("b")[-1])


def test_predicate_mask_needs_full_scan(llama_lm):
    tc = Predicate(lambda text: True).bind(llama_lm.vocabulary)
    with pytest.raises(ValueError, match="full_scan"):
        tc.mask(b"")
    with pytest.raises(TypeError, match="prefix_fn"):
        Predicate("not a function")


def test_masked_generation_obeys_a_predicate_and_reports_dead_ends(llama_lm):
    """Full-scan masks on the real Llama 3 vocabulary: every text satisfies the predicate on its complete
    characters. A token ending inside a character passes a prefix predicate (it cannot be judged yet) and may lead
    to a dead end: that row stops with weight -inf; the others go on."""
    digits = Predicate(lambda text: all(c in "0123456789" for c in text), full_scan=True)
    out = dc.generate(llama_lm, ["Number:", "Year:", "Count:"], dc.Masked(digits), max_new_tokens=3, seed=1)
    for seq in out:
        complete = seq.text.rstrip("\ufffd")
        assert all(c in "0123456789" for c in complete) and len(seq.token_ids) >= 1
        if seq.reason.startswith("dead end"):
            assert seq.log_weight == -math.inf and not seq.finished
        else:
            assert complete == seq.text and math.isfinite(seq.log_weight) and seq.log_weight <= 0
    dead = dc.generate(llama_lm, ["a", "b"], dc.Masked(Predicate(lambda t: False, full_scan=True)), max_new_tokens=2)
    assert all(not s.finished and s.reason.startswith("dead end") and s.log_weight == -math.inf for s in dead)


@pytest.mark.parametrize("pattern", [r"\d{4}-\d{2}-\d{2}", r"(yes|no|maybe)!", r"[a-zé]{1,6}( [a-zé]{1,6}){0,2}\."])
def test_masked_regex_generations_always_fullmatch(tiny_lm, pattern):
    """Locally constrained decoding with regex masks: every sequence ends at EOS with a full match."""
    import re

    n = 8
    out = dc.generate(tiny_lm, ["x"] * n, dc.Temperature(2.0) | dc.Masked(dc.Regex(pattern)), max_new_tokens=40,
                      seed=3)
    for seq in out:
        assert seq.finished and seq.reason == "eos", seq
        assert re.fullmatch(pattern, seq.text), seq.text
        assert seq.log_weight <= 0


@pytest.mark.slow
def test_masked_regex_on_the_default_model(gemma):
    import re

    pattern = r"(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    out = dc.generate(gemma, ["The Apollo 11 moon landing happened on (YYYY-MM-DD): "], dc.Masked(dc.Regex(pattern)),
                      max_new_tokens=16, seed=0)
    assert out[0].finished and re.fullmatch(pattern, out[0].text), out[0].text


def test_masked_json_schema_generations_validate(llama_lm):
    """Every finished generation under a JSON Schema mask is a JSON text the schema accepts."""
    import json

    import jsonschema

    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                               "tags": {"type": "array", "items": {"enum": ["a", "b"]},
                                                        "maxItems": 2}},
              "required": ["name", "age"], "additionalProperties": False}
    out = dc.generate(llama_lm, ["{"] * 6, dc.Temperature(1.5) | dc.Masked(dc.JsonSchema(schema)),
                      max_new_tokens=60, seed=5)
    finished = [s for s in out if s.finished]
    assert len(finished) >= 4
    for seq in finished:
        jsonschema.validate(json.loads(seq.text), schema)
