"""Speculative verifiers proved against their laws, exactly, on tiny vocabularies.

Every node verifier claims to emit a token distributed as the target p whatever children its draft law drew:

1. exact enumeration: every child tuple with its exact probability (written here from each draft law's definition,
   independently of ``draw_children``), integrated exactly over :func:`decide`'s uniforms: one uniform placed in
   each outcome's interval (first accepted child j, or the residual token y) and weighted by its length. The
   emitted token's law must equal p to 1e-9 (float64), and the child decide reports must carry the token;
2. block verification: the same on a context-dependent toy chain, for the law of the first g + 1 tokens;
3. sampling: chi-square tests with the real streams (``RowStreams``) for decide and for ``draw_children``;
4. optimal acceptance: ``alpha_star`` against a minimum over all 2^V token sets, and every verifier's exact
   acceptance against it.
"""

from __future__ import annotations

import doctest
import importlib
import itertools

import numpy as np
import pytest
import scipy.stats
import torch

from decoding.kernels.random import RowStreams
from decoding.samplers.sequence.speculative.block import BlockVerifier
from decoding.samplers.sequence.speculative.drafting import draw_children, top_tokens
from decoding.samplers.sequence.speculative.greedy_multi_draft import GreedyMultiDraft
from decoding.samplers.sequence.speculative.optimal import (
    acceptance,
    acceptance_mc,
    alpha_star,
    draft_tuples,
    restrict_support,
)
from decoding.samplers.sequence.speculative.rrs import RRS, ChainVerifier, SpeculativeSampling, TopKVerifier
from decoding.samplers.sequence.speculative.spectr import SpecTr
from decoding.samplers.sequence.speculative.verify import NodeLaw, decide

LAWS = ("iid", "without_replacement", "deterministic", "greedy")
TOL = 1e-9

# ----------------------------------------------------------------------------------------------------------------
# references, written from the definitions (numpy, float64)


def _dirichlet(rng, v, a=1.0):
    return rng.dirichlet(np.full(v, a))


def _renorm(x):
    return x / x.sum()


def toy_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(p, q) pairs on V = 5..8 covering the degenerate cases."""
    rng = np.random.default_rng(7)
    pairs = {
        "random8": (_dirichlet(rng, 8), _dirichlet(rng, 8)),
        "peaked7": (_dirichlet(rng, 7, 0.3), _dirichlet(rng, 7, 0.3)),
    }
    p, q = _dirichlet(rng, 6), _dirichlet(rng, 6)
    q[[1, 4]] = 0.0
    pairs["q_zero_where_p6"] = (p, _renorm(q))
    p, q = _dirichlet(rng, 7), _dirichlet(rng, 7)
    p[[0, 2, 5]] = 0.0
    pairs["p_zero_where_q7"] = (_renorm(p), q)
    p = _dirichlet(rng, 5)
    pairs["equal5"] = (p, p.copy())
    pairs["onehot_p6"] = (np.eye(6)[2], _dirichlet(rng, 6))
    q = np.zeros(6)
    q[[1, 3]] = [0.7, 0.3]
    pairs["q_two_tokens6"] = (_dirichlet(rng, 6), q)  # fewer than K tokens of q: padded children
    pairs["q_ties8"] = (_dirichlet(rng, 8), np.array([0.2, 0.1, 0.2, 0.1, 0.2, 0.1, 0.1, 0.0]))
    pairs["q_onehot_first5"] = (_dirichlet(rng, 5), np.eye(5)[0])  # one draftable token, and it is token 0
    return pairs


PAIRS = toy_pairs()


def ref_top(q: np.ndarray, n: int) -> list[int]:
    """The n most probable tokens with q > 0, ties towards the lower id, padded with -1."""
    order = [t for t in sorted(range(len(q)), key=lambda t: (-q[t], t)) if q[t] > 0][:n]
    return order + [-1] * (n - len(order))


def ref_tuples(q: np.ndarray, k: int, law: str) -> list[tuple[tuple[int, ...], float]]:
    """Every ordered child tuple the draft law can produce, with its exact probability."""
    support = [t for t in range(len(q)) if q[t] > 0]
    if law == "iid":
        return [(t, float(np.prod(q[list(t)]))) for t in itertools.product(support, repeat=k)]
    if law == "without_replacement":
        m, out = min(k, len(support)), []
        for t in itertools.permutations(support, m):
            prob, left = 1.0, list(support)
            for x in t:
                prob *= q[x] / sum(q[y] for y in left)
                left.remove(x)
            out.append((t + (-1,) * (k - m), prob))
        return out
    if law == "deterministic":
        return [(tuple(ref_top(q, k)), 1.0)]
    top = ref_top(q, k - 1)  # greedy
    rest = [t for t in support if t not in top]
    if not rest:
        return [(tuple(top) + (-1,), 1.0)]
    mass = sum(q[t] for t in rest)
    return [(tuple(top) + (x,), q[x] / mass) for x in rest]


def brute_alpha(p: np.ndarray, q: np.ndarray, k: int, law: str) -> float:
    """1 + min over all 2^V token sets H of [p(H) - P(every present draft lies in H)]."""
    tuples = ref_tuples(q, k, law)
    best = 0.0
    for mask in range(1 << len(p)):
        inside = {t for t in range(len(p)) if mask >> t & 1}
        all_in = sum(prob for t, prob in tuples if {x for x in t if x >= 0} <= inside)
        best = min(best, sum(p[t] for t in inside) - all_in)
    return 1.0 + best


def residual_grid(residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of a law [n, V]: uniforms at the middle of each token's CDF interval [n, V], and their weights
    (the token probabilities, 0 for tokens of probability 0)."""
    r = residual / residual.sum(-1, keepdim=True)
    upper = r.cumsum(-1)
    mid = (upper - 0.5 * r).clamp(1e-12, 1 - 1e-12)
    return torch.where(r > 0, mid, 0.5), r


def exact_decisions(law: NodeLaw, kids: torch.Tensor, probs: torch.Tensor):
    """Integrate decide() exactly: rows = (tuple, outcome) with outcome "first accepted child j" (j < K) or
    "every child rejected, residual token y" (V of them). Each acceptance uniform sits in the middle of its
    interval ([0, a) or [a, 1); only the residual's uniform must lie strictly inside (0, 1)). Returns child, token,
    kids and weights, one per row."""
    n, k = kids.shape
    vocab = law.residual.shape[1]
    a = law.accept.double()
    u_reject = (1.0 + a) / 2  # in the rejection interval [a, 1)
    rows_u, rows_w, rows_i = [], [], []
    for j in range(k):  # first accepted child j
        u = torch.cat([u_reject, torch.full((n, 1), 0.5, dtype=torch.float64)], dim=1)
        u[:, j] = a[:, j] / 2
        w = (1.0 - a[:, :j]).prod(-1) * a[:, j]
        rows_u.append(u), rows_w.append(w), rows_i.append(torch.arange(n))
    mid, r = residual_grid(law.residual.double())  # every child rejected, then y
    rejected = (1.0 - a).prod(-1)
    for y in range(vocab):
        u = torch.cat([u_reject, mid[:, y:y + 1]], dim=1)
        rows_u.append(u), rows_w.append(rejected * r[:, y]), rows_i.append(torch.arange(n))
    u, w, idx = torch.cat(rows_u), torch.cat(rows_w), torch.cat(rows_i)
    expanded = NodeLaw(law.accept[idx], law.residual[idx])
    child, token = decide(expanded, kids[idx], u)
    return child, token, kids[idx], w * probs[idx]


def emitted(verifier, p: np.ndarray, q: np.ndarray, k: int, law: str):
    """The exact law of the emitted token and the exact acceptance rate, through decide()."""
    tuples = ref_tuples(q, k, law)
    kids = torch.tensor([t for t, _ in tuples], dtype=torch.long)
    probs = torch.tensor([pr for _, pr in tuples], dtype=torch.float64)
    n = kids.shape[0]
    pt, qt = torch.tensor(p)[None].expand(n, -1), torch.tensor(q)[None].expand(n, -1)
    node = verifier.law(pt, qt, kids)
    assert torch.isfinite(node.accept).all() and torch.isfinite(node.residual).all()
    assert ((node.accept >= 0) & (node.accept <= 1)).all()
    assert (node.accept[kids < 0] == 0).all()
    child, token, kids_r, w = exact_decisions(node, kids, probs)
    live = w > 0
    got = kids_r.gather(1, child.clamp_min(0)[:, None])[:, 0]
    assert (got[live & (child >= 0)] == token[live & (child >= 0)]).all(), "decide's child must carry the token"
    first = torch.where((kids_r == token[:, None]).any(-1), (kids_r == token[:, None]).int().argmax(-1), -1)
    assert (child[live & (child < 0)] == first[live & (child < 0)]).all()  # -1 only if no child carries it
    law_out = torch.zeros(len(p), dtype=torch.float64).index_add_(0, token, w)
    return law_out.numpy(), float(w[child >= 0].sum())


# ----------------------------------------------------------------------------------------------------------------
# 1. exact laws of the node verifiers

VERIFIERS = {
    "rrs_iid": (RRS(replacement=True), "iid"),
    "rrs_without_replacement": (RRS(replacement=False), "without_replacement"),
    "spectr": (SpecTr(), "iid"),
    "greedy": (GreedyMultiDraft(), "greedy"),
    "topk": (TopKVerifier(), "deterministic"),
}


@pytest.mark.parametrize("name", list(VERIFIERS))
@pytest.mark.parametrize("pair", list(PAIRS))
def test_node_verifier_emits_p_exactly(name, pair):
    verifier, law = VERIFIERS[name]
    assert verifier.draws == law
    p, q = PAIRS[pair]
    for k in (1, 2, 3):
        out, acc = emitted(verifier, p, q, k, law)
        np.testing.assert_allclose(out, p, atol=TOL, err_msg=f"{name} {pair} K={k}")
        assert acc == pytest.approx(acceptance(verifier, torch.tensor(p), torch.tensor(q), k), abs=1e-12)


@pytest.mark.parametrize("law", LAWS)
def test_topk_verifier_is_exact_under_any_draft_law(law):
    for pair in ("random8", "q_two_tokens6"):
        p, q = PAIRS[pair]
        out, _ = emitted(TopKVerifier(), p, q, 3, law)
        np.testing.assert_allclose(out, p, atol=TOL)


@pytest.mark.parametrize("pair", list(PAIRS))
def test_chain_speculative_sampling(pair):
    p, q = PAIRS[pair]
    assert ChainVerifier is SpeculativeSampling
    out, acc = emitted(SpeculativeSampling(), p, q, 1, "iid")
    np.testing.assert_allclose(out, p, atol=TOL)
    assert acc == pytest.approx(np.minimum(p, q).sum(), abs=1e-12)
    with pytest.raises(ValueError, match="one child"):
        SpeculativeSampling().law(torch.tensor(p)[None], torch.tensor(q)[None], torch.tensor([[0, 1]]))


def test_rrs_residual_hand_computed():
    p = torch.tensor([[0.5, 0.3, 0.2, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    law = RRS().law(p, q, torch.tensor([[3, 2]]))
    # child 3: p = 0 -> accept 0, p1 = norm((p - q)+) = (0.25, 0.05, 0, 0)/0.3; child 2: p1(2) = 0 -> accept 0
    torch.testing.assert_close(law.accept, torch.tensor([[0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(law.residual, torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    law = RRS(replacement=False).law(p, q, torch.tensor([[3, 0]]))
    # child 0 is drawn from q without token 3: q_2 = (1/3, 1/3, 1/3, 0); p1 = (0.25, 0.05, 0, 0)/0.3
    torch.testing.assert_close(law.accept, torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    assert repr(RRS(replacement=False)) == "RRS(replacement=False)"


# ----------------------------------------------------------------------------------------------------------------
# 2. block verification


def chain_toy(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Target and draft conditionals P[a] = p(. | last token a), Q[a] likewise, with zeros in both."""
    rng = np.random.default_rng(seed)
    P, Q = rng.dirichlet(np.full(vocab, 0.7), size=vocab), rng.dirichlet(np.full(vocab, 0.7), size=vocab)
    P[0, 1] = 0.0
    Q[1, 2] = Q[2, 0] = 0.0
    return P / P.sum(1, keepdims=True), Q / Q.sum(1, keepdims=True)


def block_inputs(P, Q, start, g, length):
    """Every draft chain of ``length`` tokens (then -1 up to g) with its probability, and p [N, g+1, V],
    q [N, g, V] (q past the end is arbitrary: the verifier must ignore it)."""
    vocab = P.shape[0]
    chains = list(itertools.product(range(vocab), repeat=length))
    probs, ps, qs, drafts = [], [], [], []
    for c in chains:
        ctx = (start,) + c
        probs.append(np.prod([Q[ctx[i], ctx[i + 1]] for i in range(length)]))
        ps.append([P[ctx[min(i, length)]] for i in range(g + 1)])
        qs.append([Q[ctx[i]] if i < length else np.full(vocab, 1.0 / vocab) for i in range(g)])
        drafts.append(list(c) + [-1] * (g - length))
    t = lambda x: torch.tensor(np.array(x), dtype=torch.float64)
    return t(probs), t(ps), t(qs), torch.tensor(drafts, dtype=torch.long).view(len(chains), g)


def block_outputs(P, Q, start, g, length):
    """Exact law of the first g + 1 tokens (block verification, then exact p), and E[tau]."""
    vocab = P.shape[0]
    probs, p, q, drafts = block_inputs(P, Q, start, g, length)
    h, residual = BlockVerifier().law(p, q, drafts)
    assert torch.isfinite(h).all() and torch.isfinite(residual).all()
    assert (h[:, 0] == 1).all() and (h[:, length + 1:] == 0).all()
    n = drafts.shape[0]
    rows_u, rows_w, rows_i, rows_tau = [], [], [], []
    for tau in range(g + 1):  # u_tau <= h_tau, u_j > h_j for j > tau
        mid, r = residual_grid(residual[:, tau])
        for y in range(vocab):
            u = torch.full((n, g + 2), 0.5, dtype=torch.float64)
            u[:, tau] = h[:, tau] / 2
            u[:, tau + 1:g + 1] = (1.0 + h[:, tau + 1:]) / 2
            u[:, g + 1] = mid[:, y]
            w = h[:, tau] * (1.0 - h[:, tau + 1:]).prod(-1) * r[:, y]
            rows_u.append(u), rows_w.append(w * probs)
            rows_i.append(torch.arange(n)), rows_tau.append(torch.full((n,), tau))
    u, w, idx, want = torch.cat(rows_u), torch.cat(rows_w), torch.cat(rows_i), torch.cat(rows_tau)
    tau, token = BlockVerifier.decide(h[idx], residual[idx], u)
    assert (tau[w > 0] == want[w > 0]).all()
    joint = np.zeros((vocab,) * (g + 1))
    for i in (w > 0).nonzero()[:, 0].tolist():
        prefix = tuple(drafts[idx[i], :tau[i]].tolist()) + (int(token[i]),)
        steps = g + 1 - len(prefix)  # then continue with the exact target
        joint[prefix] += float(w[i]) * (_continue(P, prefix[-1], steps) if steps else 1.0)
    e_tau = float((w * tau.double()).sum())
    return joint, e_tau


def _continue(P, last, steps):
    """Joint law [V] * steps of ``steps`` tokens drawn from the chain P after ``last``."""
    out = P[last]
    for _ in range(steps - 1):
        out = out[..., None] * P.reshape((1,) * (out.ndim - 1) + P.shape)
    return out


def target_joint(P, start, n):
    return _continue(P, start, n)


@pytest.mark.parametrize("vocab,g", [(4, 2), (5, 2), (4, 3)])
def test_block_verification_is_exact(vocab, g):
    P, Q = chain_toy(vocab, seed=vocab + g)
    for length in range(g + 1):  # full chains and rows that end early (-1 padding)
        joint, _ = block_outputs(P, Q, 0, g, length)
        np.testing.assert_allclose(joint, target_joint(P, 0, g + 1), atol=TOL, err_msg=f"length {length}")


def chain_expected_accepted(P, Q, start, g):
    """E[number of accepted drafts] of token-by-token speculative sampling (SpeculativeSampling's law)."""
    probs, p, q, drafts = block_inputs(P, Q, start, g, g)
    run, total = torch.ones_like(probs), torch.zeros_like(probs)
    for i in range(g):
        a = SpeculativeSampling().law(p[:, i], q[:, i], drafts[:, i:i + 1]).accept[:, 0]
        run = run * a
        total = total + run
    return float((probs * total).sum())


@pytest.mark.parametrize("vocab,g,seed", [(4, 2, 2), (5, 3, 1), (4, 3, 3)])
def test_block_verification_accepts_at_least_as_much_as_chain(vocab, g, seed):
    P, Q = chain_toy(vocab, seed)
    _, block = block_outputs(P, Q, 0, g, g)
    chain = chain_expected_accepted(P, Q, 0, g)
    assert block >= chain - 1e-12
    assert block > chain + 1e-4  # strictly better on these toys


def test_block_degenerate_rows():
    # p = q everywhere: every draft is accepted; q = 0 at a drafted token: no NaN
    p = torch.full((2, 3, 4), 0.25, dtype=torch.float64)
    q = torch.full((2, 2, 4), 0.25, dtype=torch.float64)
    q[1, 0] = torch.tensor([0.5, 0.5, 0.0, 0.0])
    drafts = torch.tensor([[1, 2], [3, 0]])
    h, residual = BlockVerifier().law(p, q, drafts)
    assert torch.isfinite(h).all() and torch.isfinite(residual).all()
    torch.testing.assert_close(h[0], torch.ones(3, dtype=torch.float64))
    tau, token = BlockVerifier.decide(h, residual, RowStreams.from_seed(0, 2).uniform(4))
    assert tau[0] == 2 and ((token >= 0) & (token < 4)).all()
    h, _ = BlockVerifier().law(p, q, torch.full((2, 2), -1))  # empty chains
    torch.testing.assert_close(h, torch.tensor([[1.0, 0, 0]] * 2, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------------
# 3. sampling with the real streams


def chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Chi-square p-value of ``counts`` against ``probs``, cells expecting fewer than 5 merged into one."""
    n = counts.sum()
    small = probs * n < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(probs[~small] * n, probs[small].sum() * n)
    keep = exp > 0
    return float(scipy.stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue)


N_SAMPLES = 20_000


@pytest.mark.parametrize("name", list(VERIFIERS) + ["chain"])
def test_decide_samples_p(name):
    verifier, law = VERIFIERS.get(name, (SpeculativeSampling(), "iid"))
    k = 1 if name == "chain" else 2
    p, q = PAIRS["random8"]
    pt, qt = torch.tensor(p)[None].expand(N_SAMPLES, -1), torch.tensor(q)[None].expand(N_SAMPLES, -1)
    kids = draw_children(qt, k, law, RowStreams.from_seed(1, N_SAMPLES).uniform(k))
    child, token = decide(verifier.law(pt, qt, kids), kids, RowStreams.from_seed(0, N_SAMPLES).uniform(k + 1))
    counts = np.bincount(token.numpy(), minlength=len(p))
    assert chi2_pvalue(counts, p) > 1e-3
    carried = kids.gather(1, child.clamp_min(0)[:, None])[:, 0]
    assert (carried[child >= 0] == token[child >= 0]).all()


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("pair", ["random8", "q_two_tokens6", "q_ties8"])
def test_draw_children_follows_the_draft_law(law, pair):
    _, q = PAIRS[pair]
    k = 3
    tuples = ref_tuples(q, k, law)
    index = {t: i for i, (t, _) in enumerate(tuples)}
    qt = torch.tensor(q)[None].expand(N_SAMPLES, -1)
    kids = draw_children(qt, k, law, RowStreams.from_seed(2, N_SAMPLES).uniform(k))
    seen = [index.get(tuple(row)) for row in kids.tolist()]
    assert None not in seen, "a tuple of probability 0 was drawn"
    counts = np.bincount(np.array(seen), minlength=len(tuples))
    probs = np.array([pr for _, pr in tuples])
    if len(tuples) > 1:
        assert chi2_pvalue(counts, probs) > 1e-3
    lib_tuples, lib_probs = draft_tuples(torch.tensor(q), k, law)  # the library's enumeration agrees
    lib = {tuple(t): pr for t, pr in zip(lib_tuples.tolist(), lib_probs.tolist())}
    assert set(lib) == set(index)
    for t, pr in tuples:
        assert lib[t] == pytest.approx(pr, abs=1e-14)


def test_draw_children_float32_and_empty_rows():
    q = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])  # float32; row 1 has no proposal
    u = RowStreams.from_seed(0, 2).uniform(2)
    for law in LAWS:
        kids = draw_children(q, 2, law, u)
        assert (kids[1] == -1).all() and (kids[0] >= 0).all() and (kids[0] < 2).all()
    with pytest.raises(ValueError, match="law"):
        draw_children(q, 2, "beam", u)


def test_top_tokens_ties_and_padding():
    q = torch.tensor([[0.1, 0.3, 0.3, 0.0, 0.3], [0.0, 0.0, 1.0, 0.0, 0.0]])
    assert top_tokens(q, 2).tolist() == [[1, 2], [2, -1]]
    assert top_tokens(q, 7).tolist() == [[1, 2, 4, 0, -1, -1, -1], [2, -1, -1, -1, -1, -1, -1]]


# ----------------------------------------------------------------------------------------------------------------
# 4. optimal acceptance


def random_pairs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        v = int(rng.integers(3, 9))
        p, q = _dirichlet(rng, v, rng.choice([0.2, 1.0])), _dirichlet(rng, v, rng.choice([0.2, 1.0]))
        if i % 3 == 0:
            q[rng.integers(v)] = 0.0
        if i % 4 == 0:
            p[rng.integers(v)] = 0.0
        yield _renorm(p), _renorm(q), int(rng.integers(1, 4))


@pytest.mark.parametrize("law", LAWS)
def test_alpha_star_equals_brute_force(law):
    cases = [(p, q, k) for p, q in PAIRS.values() for k in (1, 2, 3)] + list(random_pairs(24, seed=3))
    for p, q, k in cases:
        want = brute_alpha(p, q, k, law)
        got = float(alpha_star(torch.tensor(p), torch.tensor(q), k, law))
        assert got == pytest.approx(want, abs=1e-12), (law, k, p, q)


def test_alpha_star_batched_and_named():
    p = torch.tensor(np.stack([PAIRS["random8"][0], PAIRS["q_ties8"][0]]))
    q = torch.tensor(np.stack([PAIRS["random8"][1], PAIRS["q_ties8"][1]]))
    for law in LAWS:
        rows = torch.stack([alpha_star(p[i], q[i], 3, law) for i in range(2)])
        torch.testing.assert_close(alpha_star(p[None], q[None], 3, law), rows[None], rtol=0, atol=1e-14)
    torch.testing.assert_close(alpha_star(p, q, 2, "topk"), alpha_star(p, q, 2, "deterministic"))
    torch.testing.assert_close(alpha_star(p, q, 1), torch.minimum(p, q).sum(-1).double())
    with pytest.raises(ValueError, match="draft"):
        alpha_star(p, q, 2, "beam")


def test_alpha_star_without_replacement_keeps_precision():
    # q holds nearly all its mass on two tokens: 1 - q(s) would round to 0
    p = torch.tensor(_renorm(np.array([4.7e-19, 0.946, 0.053, 9.3e-4])))
    q = torch.tensor([0.0, 6.4e-20, 8.2e-5, 1.0 - 8.2e-5 - 6.4e-20], dtype=torch.float64)
    want = brute_alpha(p.numpy(), q.numpy(), 3, "without_replacement")
    assert float(alpha_star(p, q, 3, "without_replacement")) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("pair", list(PAIRS))
def test_acceptance_against_alpha_star(pair):
    p, q = PAIRS[pair]
    pt, qt = torch.tensor(p), torch.tensor(q)
    for k in (1, 2, 3):
        for name, (verifier, law) in VERIFIERS.items():
            bound = float(alpha_star(pt, qt, k, law))
            acc = acceptance(verifier, pt, qt, k)
            assert acc <= bound + 1e-12, (name, k)
            if name == "greedy":  # Hu et al.: the greedy verifier reaches the optimum of its draft law
                assert acc == pytest.approx(bound, abs=1e-12)
        assert acceptance(SpeculativeSampling(), pt, qt, 1) == pytest.approx(np.minimum(p, q).sum(), abs=1e-12)


def test_acceptance_mc_and_restricted_support():
    p, q = PAIRS["random8"]
    pt, qt = torch.tensor(p), torch.tensor(q)
    for verifier, law in VERIFIERS.values():
        exact = acceptance(verifier, pt, qt, 3)
        mc = acceptance_mc(verifier, pt, qt, 3, samples=4000, seed=0, chunk=4000)
        assert abs(mc - exact) < 0.02
    rng = np.random.default_rng(0)
    big_p = torch.tensor(rng.dirichlet(np.full(5000, 0.05)))
    big_q = torch.tensor(rng.dirichlet(np.full(5000, 0.05)))
    p2, q2 = restrict_support(big_p, big_q, eps=1e-7)
    assert p2.shape[0] < 5000
    assert float(alpha_star(p2, q2, 1)) == pytest.approx(float(alpha_star(big_p, big_q, 1)), abs=1e-6)
    assert float(alpha_star(p2, q2, 3, "iid")) == pytest.approx(float(alpha_star(big_p, big_q, 3, "iid")), abs=1e-6)
    assert 0 < float(alpha_star(p2, q2, 2, "without_replacement")) <= 1


# ----------------------------------------------------------------------------------------------------------------
# 5. edge cases and the protocol


NODE = [RRS(), RRS(replacement=False), SpecTr(), GreedyMultiDraft(), TopKVerifier()]


@pytest.mark.parametrize("verifier", NODE, ids=repr)
def test_child_of_zero_draft_probability_is_finite(verifier):
    p = torch.tensor([[0.4, 0.3, 0.3, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.5, 0.5, 0.0]], dtype=torch.float64)
    for kids in ([[0, 1]], [[3, 0]], [[0, 0]]):
        law = verifier.law(p, q, torch.tensor(kids))
        assert torch.isfinite(law.accept).all() and torch.isfinite(law.residual).all()
        torch.testing.assert_close(law.residual.sum(-1), torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize("verifier", NODE, ids=repr)
def test_rows_without_children(verifier):
    p, q = (torch.tensor(x)[None].expand(3, -1) for x in PAIRS["random8"])
    q = q.clone()
    q[2] = 0.0  # a row with no proposal at all
    kids = torch.full((3, 2), -1)
    law = verifier.law(p, q, kids)
    assert (law.accept == 0).all()
    torch.testing.assert_close(law.residual, p)
    child, token = decide(law, kids, RowStreams.from_seed(0, 3).uniform(3))
    assert (child == -1).all() and (p.gather(1, token[:, None]) > 0).all()


@pytest.mark.parametrize("verifier", NODE + [SpeculativeSampling()], ids=repr)
def test_law_leaves_inputs_unchanged(verifier):
    p, q = (torch.tensor(x)[None].expand(2, -1).clone() for x in PAIRS["random8"])
    k = 1 if isinstance(verifier, SpeculativeSampling) else 3
    kids = draw_children(q, k, verifier.draws, RowStreams.from_seed(0, 2).uniform(k))
    before = (p.clone(), q.clone(), kids.clone())
    verifier.law(p, q, kids)
    for x, y in zip((p, q, kids), before):
        assert torch.equal(x, y)


def test_decide_rules():
    law = NodeLaw(torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[0.0, 0.5, 0.5, 0.0]]))
    kids = torch.tensor([[2, 1, 2]])
    u = lambda *x: torch.tensor([x], dtype=torch.float64)
    assert decide(law, kids, u(0.4, 0.9, 0.9, 0.1)) == (torch.tensor([0]), torch.tensor([2]))
    assert decide(law, kids, u(0.6, 0.4, 0.9, 0.1)) == (torch.tensor([1]), torch.tensor([1]))
    assert decide(law, kids, u(0.6, 0.6, 0.0001, 0.9)) == (torch.tensor([0]), torch.tensor([2]))  # first carrier
    law = NodeLaw(torch.zeros(1, 1), torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    assert decide(law, torch.tensor([[2]]), u(0.5, 0.5)) == (torch.tensor([-1]), torch.tensor([3]))
    with pytest.raises(ValueError, match="K \\+ 1"):
        decide(law, torch.tensor([[2]]), u(0.5))
    law = NodeLaw(torch.zeros(1, 0), torch.tensor([[0.0, 1.0]]))  # K = 0
    assert decide(law, torch.zeros(1, 0, dtype=torch.long), u(0.5)) == (torch.tensor([-1]), torch.tensor([1]))


def test_spectr_rho_is_feasible_and_reduces_to_chain():
    from decoding.samplers.sequence.speculative.spectr import spectr_gamma, spectr_rho

    p, q = (torch.tensor(x)[None] for x in PAIRS["random8"])
    for k in (1, 2, 3, 5):
        kk = torch.tensor([float(k)], dtype=torch.float64)
        rho = spectr_rho(p, q, kk)
        gamma = spectr_gamma(torch.minimum(q, p / rho[:, None]).sum(-1), kk)
        assert 1.0 <= float(rho) <= k and float(gamma) <= float(rho) + 1e-12
        slightly = rho * (1 - 1e-9)  # the smallest feasible value, up to the bisection's precision
        if float(slightly) >= 1:
            assert float(spectr_gamma(torch.minimum(q, p / slightly[:, None]).sum(-1), kk)) > float(slightly)
    law = SpecTr().law(p, q, torch.tensor([[3]]))
    chain = SpeculativeSampling().law(p, q, torch.tensor([[3]]))
    torch.testing.assert_close(law.accept, chain.accept)
    torch.testing.assert_close(law.residual, chain.residual)


@pytest.mark.parametrize("module", ["verify", "rrs", "spectr", "greedy_multi_draft", "drafting", "block", "optimal"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"decoding.samplers.sequence.speculative.{module}")
    result = doctest.testmod(mod, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
