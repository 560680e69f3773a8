"""Speculative decoding is lossless: for every verifier and tree shape, the law of the output equals the target's.

Three levels of proof:

- exact enumeration (no sampling): on real random HF models with a 5-token vocabulary (EOS = 4), every draft tree a
  shape can draw is enumerated with its probability, each node's verifier law is integrated exactly, and the
  resulting law of the first depth + 1 tokens equals the target's, to 1e-9;
- chi-square through the whole pipeline (drafting, one tree forward with a 4D mask, the walk, KV commit, several
  rounds): 10,000 rows of one prompt decoded in one batch at seed 0 against the exact law of 3-token outputs;
- greedy speculative output equals greedy plain output token for token, on tiny models and on the default model.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import decoding as dc
from decoding.samplers.sequence.speculative.block import BlockVerifier
from decoding.samplers.sequence.speculative.greedy_multi_draft import GreedyMultiDraft
from decoding.samplers.sequence.speculative.optimal import draft_tuples
from decoding.samplers.sequence.speculative.rrs import RRS, TopKVerifier
from decoding.samplers.sequence.speculative.spectr import SpecTr

from conftest import GREEDY_PROMPTS, GREEDY_TOKENS, decode
from toys import EOS, V, law_of, sequence_law


# --- exact enumeration ----------------------------------------------------------------------------------------


def round_law(p, q, verifier, k: int, law: str, context: tuple[int, ...], depth: int,
              memo: dict | None = None) -> dict[tuple, float]:
    """Exact law of what one round emits below ``context`` with a full k-ary tree of ``depth`` drawn by ``law``
    (each node's children drawn independently of the others), verified node by node.

    The verifier judges every child tuple of a node in ONE batched call (a row per tuple, as the pipeline batches
    rows), and the law below a child context is computed once (``memo``): it depends on the context alone."""
    memo = {} if memo is None else memo
    if (context, depth) in memo:
        return memo[context, depth]
    target = p(context)
    if depth == 0:
        return {(y,): float(target[y]) for y in range(V) if target[y] > 0}
    out: dict[tuple, float] = {}
    draft = q(context)
    tuples, probs = draft_tuples(draft, k, law)
    n = tuples.shape[0]
    node = verifier.law(target[None].expand(n, -1).contiguous(), draft[None].expand(n, -1).contiguous(), tuples)
    for kids, w, accept, residual in zip(tuples.tolist(), probs.tolist(), node.accept.double(),
                                         node.residual.double()):
        reach = 1.0  # P(children 0..j-1 rejected)
        moves: dict[int, float] = {}  # child index -> probability of going there
        for j, c in enumerate(kids):
            if c < 0:
                continue
            moves[j] = moves.get(j, 0.0) + reach * float(accept[j])
            reach *= 1.0 - float(accept[j])
        firsts = {}
        for j, c in enumerate(kids):
            firsts.setdefault(c, j)
        for y in range(V):
            mass = reach * float(residual[y])
            if mass <= 0:
                continue
            if y in firsts and y >= 0:
                moves[firsts[y]] = moves.get(firsts[y], 0.0) + mass
            else:
                out[(y,)] = out.get((y,), 0.0) + w * mass
        for j, m in moves.items():
            c = kids[j]
            below = {(): 1.0} if c == EOS else round_law(p, q, verifier, k, law, context + (c,), depth - 1, memo)
            for seq, pr in below.items():
                key = (c,) + seq
                out[key] = out.get(key, 0.0) + w * m * pr
    memo[context, depth] = out
    return out


def compose(p, prompt, emitted: dict[tuple, float], length: int) -> dict[tuple, float]:
    """The law of the first ``length`` tokens when a round emits ``emitted`` and plain sampling from p goes on."""
    out: dict[tuple, float] = {}
    for seq, prob in emitted.items():
        if EOS in seq:
            seq = seq[: seq.index(EOS) + 1]
        rest = sequence_law(p, prompt + seq, length - len(seq)) if len(seq) < length and seq[-1] != EOS else {(): 1.0}
        for tail, pr in rest.items():
            key = (seq + tail)[:length]
            out[key] = out.get(key, 0.0) + prob * pr
    return out


def assert_same_law(a: dict, b: dict, tol: float = 1e-9) -> None:
    keys = set(a) | set(b)
    worst = max(abs(a.get(s, 0.0) - b.get(s, 0.0)) for s in keys)
    assert worst < tol, f"laws differ by {worst:.3g}"
    assert abs(sum(a.values()) - 1.0) < tol


CASES = [  # (verifier, k, draft law); k = 1 with "iid" is chain speculative sampling
    (RRS(replacement=True), 1, "iid"),
    (RRS(replacement=True), 2, "iid"),
    (RRS(replacement=False), 2, "without_replacement"),
    (SpecTr(), 2, "iid"),
    (GreedyMultiDraft(), 3, "greedy"),
    (TopKVerifier(), 2, "deterministic"),
]


@pytest.mark.parametrize("verifier,k,law", CASES, ids=[f"{type(v).__name__}-{k}-{law}" for v, k, law in CASES])
@pytest.mark.parametrize("sampler", [None, dc.Temperature(0.6) | dc.TopK(3)], ids=["T1", "T0.6-top3"])
def test_every_tree_enumerated_gives_the_target_law(target, draft, verifier, k, law, sampler):
    """Depth-2 trees (k children per node, 2 levels): all draws enumerated, decisions integrated exactly."""
    p, q, prompt = law_of(target, sampler), law_of(draft, sampler), (0, 1)
    emitted = round_law(p, q, verifier, k, law, prompt, depth=2)
    assert_same_law(compose(p, prompt, emitted, 3), sequence_law(p, prompt, 3))


def test_greedy_target_every_verifier_follows_the_argmax(target, draft):
    p, q, prompt = law_of(target, dc.Greedy()), law_of(draft), (0, 1)
    for verifier, k, law in CASES:
        emitted = round_law(p, q, verifier, k, law, prompt, depth=2)
        assert_same_law(compose(p, prompt, emitted, 3), sequence_law(p, prompt, 3))


@pytest.mark.parametrize("g", [2, 3])
def test_block_verification_enumerated_gives_the_target_law(target, draft, g):
    """Every chain of g drafts, h_i integrated exactly: P(tau = i) = h_i prod_{j > i} (1 - h_j)."""
    p, q, prompt = law_of(target), law_of(draft), (0, 1)
    chains, weights = [], []
    for chain in itertools.product(range(V), repeat=g):
        ctx, w = prompt, 1.0
        for x in chain:
            w *= float(q(ctx)[x])
            ctx += (x,)
        if w > 0:
            chains.append(chain)
            weights.append(w)
    ps = torch.stack([torch.stack([p(prompt + c[:i]) for i in range(g + 1)]) for c in chains])  # [N, g + 1, V]
    qs = torch.stack([torch.stack([q(prompt + c[:i]) for i in range(g)]) for c in chains])  # [N, g, V]
    h, residual = BlockVerifier().law(ps, qs, torch.tensor(chains))  # every chain at once, a row each
    out = {}
    for chain, w, hc, rc in zip(chains, weights, h.double(), residual.double()):
        for tau in range(g + 1):
            p_tau = float(hc[tau] * torch.prod(1 - hc[tau + 1 :]))
            for y in range(V):
                mass = w * p_tau * float(rc[tau, y])
                if mass > 0:
                    key = chain[:tau] + (y,)
                    out[key] = out.get(key, 0.0) + mass
    assert_same_law(compose(p, prompt, out, g + 1), sequence_law(p, prompt, g + 1))


# --- the pipeline, by chi-square ------------------------------------------------------------------------------

ROWS = 10_000
SHAPES = [
    ("chain-rrs", lambda d: dc.Speculative(d, dc.Chain(3))),
    ("chain-block", lambda d: dc.Speculative(d, dc.Chain(3), verify="block")),
    ("iid-rrs", lambda d: dc.Speculative(d, dc.MultiDraft(2, 2, "iid"))),
    ("iid-spectr", lambda d: dc.Speculative(d, dc.MultiDraft(2, 2, "iid"), verify="spectr")),
    ("wor-rrs", lambda d: dc.Speculative(d, dc.MultiDraft(2, 2, "without_replacement"))),
    ("greedy", lambda d: dc.Speculative(d, dc.MultiDraft(3, 2, "greedy"))),
    ("topk", lambda d: dc.Speculative(d, dc.MultiDraft(2, 2, "deterministic"))),
    ("dynamic", lambda d: dc.Speculative(d, dc.DynamicTree(budget=5, max_depth=3, top_k=2))),
    ("eagle", lambda d: dc.Speculative(d, dc.DynamicTree(budget=5, max_depth=3, top_k=2, method="eagle"))),
    ("chain-T0.6-top3", lambda d: dc.Speculative(d, dc.Chain(2), sampler=dc.Temperature(0.6) | dc.TopK(3))),
]


def chi_square_p(counts: dict, law: dict, n: int) -> float:
    """Chi-square p-value of observed outputs against an exact law; outputs expected fewer than 5 times are
    pooled into one cell (the test's usual validity condition)."""
    from scipy.stats import chisquare

    assert set(counts) <= set(law), f"impossible outputs: {set(counts) - set(law)}"
    big = [s for s in law if law[s] * n >= 5]
    small = [s for s in law if law[s] * n < 5]
    observed = [counts.get(s, 0) for s in big] + [sum(counts.get(s, 0) for s in small)]
    expected = [law[s] * n for s in big] + [sum(law[s] for s in small) * n]
    return float(chisquare(observed, expected).pvalue)


def pipeline_p(spec, target, prompt: tuple[int, ...], min_accepted: int = 0) -> float:
    """Decode ROWS copies of ``prompt`` (3 new tokens, seed 0) in one batch; the chi-square p-value of the
    outputs against the exact law of the target under ``spec.sampler``. At least ``min_accepted`` drafts accepted."""
    out = spec.run(target, dc.DecodeTask([list(prompt)] * ROWS, max_new_tokens=3, seed=0))
    counts: dict[tuple, int] = {}
    for g in out:
        counts[tuple(g.token_ids)] = counts.get(tuple(g.token_ids), 0) + 1
    assert sum(g.counters["accepted_tokens"] for g in out) >= min_accepted
    return chi_square_p(counts, sequence_law(law_of(target, spec.sampler), prompt, 3), ROWS)


@pytest.mark.parametrize("name,make", SHAPES, ids=[s[0] for s in SHAPES])
def test_pipeline_output_has_the_target_law(target, draft, name, make):
    """10,000 rows of one prompt in one batch, seed 0, 3 new tokens, model draft: chi-square p > 0.001."""
    spec = make(dc.ModelDraft(draft))
    assert pipeline_p(spec, target, (0, 1, 2)) > 1e-3


def test_pipeline_with_the_ngram_draft_has_the_target_law(target):
    prompt = (0, 1, 2, 0, 1, 2, 0, 1)  # repeats, so the lookup proposes
    spec = dc.Speculative(dc.NGramDraft(2), dc.DynamicTree(budget=4, max_depth=3, top_k=2))
    assert pipeline_p(spec, target, prompt, min_accepted=1) > 1e-3


def test_logprob_is_the_unmodified_models(target, draft):
    spec = dc.Speculative(draft, dc.Chain(3), sampler=dc.Temperature(0.5))
    out = spec.run(target, dc.DecodeTask([[0, 1, 2]] * 8, max_new_tokens=5, seed=3))
    raw = law_of(target)
    for g in out:
        expected, ctx = 0.0, (0, 1, 2)
        for t in g.token_ids:
            expected += float(torch.log(raw(ctx)[t]))
            ctx += (t,)
        assert g.logprob == pytest.approx(expected, abs=1e-4)


# --- greedy equality, batches, limits -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_draft(window_lm):
    """The target as its own draft (a second LanguageModel on the same weights): every draft token is right."""
    return dc.LanguageModel(window_lm.model, None, eos_token_ids=window_lm.eos_token_ids)


@pytest.mark.parametrize("tree", [dc.Chain(4), dc.DynamicTree(6, 4, 2), dc.DynamicTree(6, 4, 2, method="eagle"),
                                  dc.MultiDraft(2, 2, "deterministic")], ids=repr)
def test_greedy_speculative_equals_greedy_plain_on_a_sliding_window_model(window_lm, window_greedy, self_draft, tree):
    """The lookup draft (some rounds accept a few tokens, most reject at the root) and the self-draft (every draft
    accepted) give plain greedy's tokens and log-probabilities across the window."""
    plain, plain_forwards = window_greedy
    for d in (dc.NGramDraft(2), self_draft):
        out, forwards = decode(window_lm, dc.Speculative(d, tree, sampler=dc.Greedy()), GREEDY_PROMPTS, GREEDY_TOKENS)
        assert [o.token_ids for o in out] == [o.token_ids for o in plain]
        assert [o.logprob for o in out] == pytest.approx([o.logprob for o in plain], abs=1e-3)
    assert forwards < plain_forwards / 2  # the self-draft is always right


class SecondBestFirst(dc.ModelDraft):
    """The target as its own draft, but each node's best token drafted as its LAST child: the walk must find the
    target's token past the first child."""

    def top(self, state, tree, nodes, k):
        logq, tokens = super().top(state, tree, nodes, k)
        return logq, tokens.flip(-1)


@pytest.mark.parametrize("tree", [dc.MultiDraft(2, 2, "deterministic"), dc.DynamicTree(6, 4, 2)], ids=repr)
def test_greedy_walk_accepts_the_child_holding_the_target_token(window_lm, window_greedy, self_draft, tree):
    plain, plain_forwards = window_greedy
    spec = dc.Speculative(SecondBestFirst(self_draft), tree, sampler=dc.Greedy())
    out, forwards = decode(window_lm, spec, GREEDY_PROMPTS, GREEDY_TOKENS)
    assert [o.token_ids for o in out] == [o.token_ids for o in plain]
    assert forwards < plain_forwards / 2  # the second child is always right


class SecondBestOnly(dc.ModelDraft):
    """The target's second-best token as the only child of each node: under Greedy, wrong at every root."""

    def top(self, state, tree, nodes, k):
        logq, tokens = super().top(state, tree, nodes, k + 1)
        return logq[..., 1:], tokens[..., 1:]


@pytest.fixture(scope="module")
def second_best_only(window_lm):
    """SecondBestOnly on a copy of the target's weights: the draft's head rows are counted on its own model."""
    import copy

    return SecondBestOnly(dc.LanguageModel(copy.deepcopy(window_lm.model), None, eos_token_ids=window_lm.eos_token_ids))


@pytest.mark.parametrize("sampler", [dc.Greedy(), dc.Temperature(1e-3)], ids=repr)
def test_a_round_rejected_at_the_root_runs_the_lm_head_for_the_root_only(window_lm, second_best_only, sampler):
    """The lazy head runs for one root row per round: a tree of 5 nodes, every round rejected at the root, costs
    no other head row (the greedy walk and the node walk)."""
    spec = dc.Speculative(second_best_only, dc.MultiDraft(1, 4, "deterministic"), verify="topk", sampler=sampler)
    prompts = GREEDY_PROMPTS[::2]
    decode(window_lm, spec, prompts, 2)  # a model's first lazy forward checks its head
    before = window_lm.head_rows
    out, _ = decode(window_lm, spec, prompts, 6)  # 5 rounds a row, each 4 draft forwards
    assert sum(g.counters["accepted_tokens"] for g in out) == 0
    assert window_lm.head_rows - before == sum(g.counters["rounds"] for g in out) > 0


def test_rounds_that_keep_accepting_run_the_lm_head_once_per_round(window_lm, self_draft, monkeypatch):
    """A run whose first draft tokens keep being accepted runs the head for the whole tree in one call per round
    (root first, then the rest, while its acceptance rate is still below EAGER_HEAD: the first 3 rounds)."""
    calls = []
    head = window_lm.head_logits
    monkeypatch.setattr(window_lm, "head_logits", lambda hidden: calls.append(len(hidden)) or head(hidden))
    spec = dc.Speculative(self_draft, dc.Chain(4), sampler=dc.Greedy())
    out, _ = decode(window_lm, spec, GREEDY_PROMPTS, 40)
    rounds = max(g.counters["rounds"] for g in out)
    assert rounds >= 6 and sum(g.counters["accepted_tokens"] for g in out) > 0
    assert len(calls) == rounds + 3


def test_a_row_alone_equals_the_row_in_a_batch(gemma_lm):
    """Each row draws from its own stream, so its output does not depend on its neighbours (T = 1)."""
    spec = dc.Speculative(dc.NGramDraft(2), dc.MultiDraft(2, 2, "iid"))
    both = dc.generate(gemma_lm, ["Hi there", "One two one two one"], spec, max_new_tokens=8, seed=[5, 6])
    alone = dc.generate(gemma_lm, ["One two one two one"], spec, max_new_tokens=8, seed=[6])
    assert both[1].token_ids == alone[0].token_ids


def test_eos_in_an_accepted_path_and_the_token_limit(target):
    spec = dc.Speculative(dc.NGramDraft(1), dc.Chain(4))
    out = spec.run(target, dc.DecodeTask([[0, 1, 4, 0, 1, 4, 0]] * 200, max_new_tokens=6, seed=1))
    for g in out:
        assert len(g.token_ids) <= 6
        if EOS in g.token_ids:
            assert g.token_ids.index(EOS) == len(g.token_ids) - 1 and g.finished and g.reason == "eos"
        else:
            assert len(g.token_ids) == 6 and g.reason == "length"
    zero = spec.run(target, dc.DecodeTask([[0, 1]], max_new_tokens=0))
    assert zero[0].token_ids == [] and zero[0].reason == "length"
    itself = dc.Speculative(target, dc.Chain(4), sampler=dc.Greedy())  # every draft accepted, 2 of 4 kept
    for g in itself.run(target, dc.DecodeTask([[0, 1, 2], [1, 2], [3]], max_new_tokens=3)):
        assert g.counters["accepted_tokens"] == len(g.token_ids) - 1  # after the prefill's token, only drafts


def test_stop_strings_and_streaming(gemma_lm):
    seen: list[tuple[int, int]] = []
    spec = dc.Speculative(dc.NGramDraft(2), dc.Chain(4), sampler=dc.Greedy())
    plain = dc.generate(gemma_lm, ["a b a b a b"], dc.Greedy(), max_new_tokens=16)
    stop = plain[0].text[3:5] if len(plain[0].text) >= 5 else None
    out = dc.generate(gemma_lm, ["a b a b a b"], spec, max_new_tokens=16, stop=stop,
                      on_token=lambda r, t: seen.append((r, t)))
    assert [t for _, t in seen] == out[0].token_ids
    if stop:
        assert out[0].reason == "stop" and stop not in out[0].text


# --- bad input ------------------------------------------------------------------------------------------------


def test_bad_arguments_name_the_argument(draft):
    for bad in (dict(k=0, depth=2), dict(k=2, depth=0)):
        with pytest.raises(ValueError, match="k|depth"):
            dc.MultiDraft(**bad)
    with pytest.raises(ValueError, match="budget"):
        dc.DynamicTree(budget=0)
    with pytest.raises(ValueError, match="k must"):
        dc.Chain(0)
    with pytest.raises(ValueError, match="Mirostat"):
        dc.Speculative(draft, sampler=dc.Mirostat(3.0))
    with pytest.raises(ValueError, match="block"):
        dc.Speculative(draft, dc.MultiDraft(2, 2), verify="block")
    with pytest.raises(ValueError, match="without_replacement"):
        dc.Speculative(draft, dc.MultiDraft(2, 2, "iid"), verify="rrs_without_replacement")
    with pytest.raises(ValueError, match="unknown verifier"):
        dc.Speculative(draft, verify="nope")
    with pytest.raises(TypeError, match="draft"):
        dc.Speculative("gpt2")


def test_a_draft_with_another_vocabulary_is_refused_before_decoding(gemma_lm, llama_lm):
    gemma_lm.check_same_vocabulary(dc.LanguageModel(gemma_lm.model, gemma_lm.tokenizer), "draft")  # same: passes
    before = gemma_lm.forwards
    with pytest.raises(ValueError, match="token id 0"):
        dc.generate(gemma_lm, "Hi", dc.Speculative(llama_lm))
    assert gemma_lm.forwards == before


@pytest.mark.slow
def test_default_model_greedy_speculative_equals_plain(gemma):
    """16 tokens: the rows repeat what they read (the JSON row its own first line, the other its prompt) from about
    the 9th token on, so the lookup drafts and long paths are accepted (7 and 8 drafts, 10 forwards against 16).
    One tree, a dynamic one (branching paths, per-node positions and masks on the real model's layers); the other
    shapes run on the tiny sliding-window model."""
    prompts = ['Repeat this JSON exactly: {"name": "Ada Lovelace", "born": 1815, "field": "mathematics"}\n',
               "The three primary colours are"]
    plain = dc.generate(gemma, prompts, dc.Greedy(), max_new_tokens=16)
    tree = dc.DynamicTree(budget=16, max_depth=12, top_k=4)
    out = dc.generate(gemma, prompts, dc.Speculative(dc.NGramDraft(3), tree, sampler=dc.Greedy()), max_new_tokens=16)
    assert [o.token_ids for o in out] == [o.token_ids for o in plain]
    assert out.stats.forwards < plain.stats.forwards
    assert all(g.counters["accepted_tokens"] >= 4 for g in out)
