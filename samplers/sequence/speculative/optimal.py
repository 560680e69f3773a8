"""Optimal multi-draft acceptance rates, and the exact and Monte Carlo acceptance of a node verifier.

Hu, Zheng, Viswanathan, Chen, Rossi, Wu, Manocha, Huang, "Towards Optimal Multi-draft Speculative Decoding",
ICLR 2025: for k drafts with joint law Q, the best acceptance rate a lossless verifier can reach (the value of
the optimal transport between Q and p, by LP duality a subset-selection problem) is

    alpha* = 1 + min over token sets H of [ p(H) - Q(every draft lies in H) ]

(H = {} gives 1; one draft gives sum min(p, q)). Per draft law (see :mod:`~.drafting`):

- "iid": Q = q(H)^k. The minimum is attained on a prefix of the tokens sorted by ascending p/q: if x in H and
  y not in H with p(y)/q(y) < p(x)/q(x), optimality of H against H - x and H + y gives
  p(x)/q(x) <= k q(H)^(k-1) <= p(y)/q(y) by convexity of t^k, and inside a group of equal ratios the objective is
  concave in the group's q-mass, so whole groups suffice. O(V log V).
- "without_replacement": Q(H) = 1 - lambda sum_{j<k} T_j(H) with lambda = q(outside H) and T_j the sum over ordered
  distinct j-tuples s of H of prod_i q(s_i) / q(outside s_1..s_{i-1}) / q(outside s): the probability that the
  first j draws are s and the next one falls outside H is lambda times that term (exact; the masses outside s are
  summed, not taken as 1 - q(s), which loses them when s holds nearly all of q). The minimum is taken over the
  prefixes of the "iid" order; no proof is given here, but it matched the minimum over all 2^V subsets in every
  case tried (thousands of random pairs with V <= 8, k <= 3, and the tests). Each T_j over all prefixes is a
  j-dimensional prefix sum of a V^j tensor: O(V^(k-1)) time and memory per row (about 80 bytes per entry at the
  peak), so V <= 4096 for k = 3 and V <= 256 for k = 4, V counting the tokens with q > 0 (ValueError beyond);
  restrict the support first (:func:`restrict_support`).
- "deterministic" (alias "topk"): the drafts are T = the top k of q, Q = 1{T in H}, so alpha* = p(T).
- "greedy": T = the top k - 1 of q and x ~ q' = q restricted to the rest: Q = 1{T in H} q'(H minus T), and
  alpha* = min(1, p(T) + sum_{x not in T} min(p(x), q'(x))): the greedy verifier's acceptance.
"""

from __future__ import annotations

import torch

from decoding.kernels.random import RowStreams
from decoding.kernels.sampling import mass_cutoff
from decoding.samplers.sequence.speculative.drafting import DRAFT_LAWS, draw_children, top_tokens
from decoding.samplers.sequence.speculative.verify import NodeLaw, NodeVerifier, as_law, token_mask

_WOR_BUDGET = 2**22  # entries of the V^(k-1) tuple tensors processed at once (rows are batched up to this)
_WOR_LIMIT = 2**24  # the most entries one row may need (V = 4096 for k = 3): about 1.3 GiB at the peak


def alpha_star(p: torch.Tensor, q: torch.Tensor, k: int, draft: str = "iid") -> torch.Tensor:
    """The optimal acceptance rate of ``k`` drafts drawn from ``q`` under ``draft``, for the target ``p``.

    Args:
        p, q: [..., V] probabilities (renormalised here; computed in float64).
        k: number of drafts, >= 1.
        draft: "iid", "without_replacement", "deterministic" (or "topk") or "greedy".
    Returns:
        [...] float64.

    Example:
        >>> p = torch.tensor([0.5, 0.3, 0.2]); q = torch.tensor([0.2, 0.3, 0.5])
        >>> alpha_star(p, q, 1)  # sum min(p, q)
        tensor(0.7000, dtype=torch.float64)
        >>> alpha_star(p, q, 2, "deterministic")  # p({2, 1})
        tensor(0.5000, dtype=torch.float64)
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    draft = "deterministic" if draft == "topk" else draft
    if draft not in DRAFT_LAWS:
        raise ValueError(f"draft must be one of {DRAFT_LAWS} or 'topk', got {draft!r}")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    batch, vocab = p.shape[:-1], p.shape[-1]
    p2, q2 = as_law(p.reshape(-1, vocab).double()), as_law(q.reshape(-1, vocab).double())
    if draft == "deterministic":
        out = _mass(p2, top_tokens(q2, k))
    elif draft == "greedy":
        top = top_tokens(q2, k - 1)
        rest = as_law(q2.masked_fill(token_mask(top, vocab), 0.0))
        out = (_mass(p2, top) + torch.minimum(p2, rest).sum(-1)).clamp(max=1.0)
    elif draft == "iid":
        ps, qs = _ratio_order(p2, q2)
        gap = _prefix(ps) - _prefix(qs) ** k  # [R, V+1] p(H_m) - q(H_m)^k
        out = 1.0 + gap.amin(-1).clamp(max=0.0)
    else:
        n = _wor_rows(max(int((q2 > 0).sum(-1).max()), 1), k)  # rows per chunk: memory is V^(k-1) per row
        out = torch.cat([_alpha_wor(p2[i:i + n], q2[i:i + n], k) for i in range(0, p2.shape[0], n)])
    return out.reshape(batch)


def _mass(p: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """p of the set of ``tokens`` [R, n] (-1 ignored, each token once). [R]"""
    return (p * token_mask(tokens, p.shape[-1])).sum(-1)


def _ratio_order(p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p and q sorted by ascending p/q (q = 0 last). [R, V] -> [R, V], [R, V]"""
    ratio = torch.where(q > 0, p / torch.where(q > 0, q, torch.ones_like(q)), torch.inf)
    order = ratio.argsort(dim=-1, stable=True)
    return p.gather(1, order), q.gather(1, order)


def _prefix(x: torch.Tensor) -> torch.Tensor:
    """Sums of the first m entries, m = 0..V. [R, V] -> [R, V+1]"""
    return torch.nn.functional.pad(x.cumsum(-1), (1, 0))


def _wor_rows(vocab: int, k: int) -> int:
    """Rows per chunk for :func:`_alpha_wor`, or ValueError past the documented limit."""
    size = vocab ** (k - 1)
    if size > _WOR_LIMIT:
        most = round(_WOR_LIMIT ** (1 / max(k - 1, 1)))
        raise ValueError(
            f"alpha_star(draft='without_replacement') needs V^(k-1) = {vocab}^{k - 1} = {size} entries per row "
            f"(V: tokens with q > 0); restrict the support first (restrict_support) to V <= {most}")
    return max(1, _WOR_BUDGET // size)


def _alpha_wor(p: torch.Tensor, q: torch.Tensor, k: int) -> torch.Tensor:
    """alpha* for k draws without replacement (module docstring). [R, V] normalised float64 -> [R]"""
    n_pos = (q > 0).sum(-1)  # [R] tokens that can be drawn
    width = max(int(n_pos.max()), 1)  # prefixes past the support only add p: never smaller
    ps, qs = _ratio_order(p, q)
    ps, qs = ps[:, :width], qs[:, :width]
    rows = qs.shape[0]
    outside = torch.nn.functional.pad(qs.flip(-1).cumsum(-1).flip(-1), (0, 1))  # [R, width+1] q(not H_m), exact 0
    rest = _Complement(qs)
    series = torch.ones_like(outside)  # sum_{j<k} T_j(H_m), T_0 = 1
    weight, left = None, None  # over ordered j-tuples s: prod_i q(s_i) / q(not s_<i), and q(not s)
    for j in range(1, k):
        q_new = qs.view((rows,) + (1,) * (j - 1) + (width,))  # the j-th token of the tuple on the last axis
        if j == 1:
            weight = qs
        else:
            weight = (weight * _reciprocal(left))[..., None] * q_new
            weight = torch.where(_new_token(width, j, qs.device), weight, torch.zeros_like(weight))
        left = rest(j)
        term = weight * _reciprocal(left)  # P(first j draws are s, then one outside H) / q(outside H)
        term = torch.where((n_pos > j).view((rows,) + (1,) * j), term, torch.zeros_like(term))  # j < |support|
        series = series + torch.nn.functional.pad(_diagonal_prefix(term, j), (1, 0))
    all_in = 1.0 - outside * series  # Q(H_m): every draft lies in H_m
    gap = _prefix(ps) - all_in
    return 1.0 + gap.amin(-1).clamp(max=0.0)


def _reciprocal(x: torch.Tensor) -> torch.Tensor:
    """1 / x where x > 0, else 0."""
    return torch.where(x > 0, 1.0 / torch.where(x > 0, x, torch.ones_like(x)), torch.zeros_like(x))


class _Complement:
    """q(not s) for every j-tuple s of token indices, to full relative precision even when s holds nearly all of
    q's mass (1 - q(s) would lose it): the mass outside s is a sum of gaps between s's members in ascending-q
    order, each a difference of prefix sums no larger than a small multiple of the gap."""

    def __init__(self, q: torch.Tensor):
        self.rank = q.argsort(dim=-1, stable=True).argsort(dim=-1)  # [R, W] position in ascending-q order
        ascending = q.sort(dim=-1).values
        self.pre = torch.nn.functional.pad(ascending.cumsum(-1), (1, 0))  # [R, W+1] sum of the i smallest
        self.suf = torch.nn.functional.pad(ascending.flip(-1).cumsum(-1).flip(-1), (0, 1))  # sum from i on

    def __call__(self, j: int) -> torch.Tensor:
        """[R, W^j] the mass outside each ordered j-tuple (meaningless for tuples with repeats)."""
        rows, width = self.rank.shape
        shape = (rows,) + (width,) * j
        ranks = [self.rank.view((rows,) + (1,) * a + (width,) + (1,) * (j - 1 - a)).expand(shape) for a in range(j)]
        e = torch.stack(ranks).sort(dim=0).values.reshape(j, rows, -1)  # members in ascending-q order
        out = self.pre.gather(1, e[0]) + self.suf.gather(1, e[-1] + 1)
        for a in range(j - 1):
            out = out + (self.pre.gather(1, e[a + 1]) - self.pre.gather(1, e[a] + 1)).clamp_min(0.0)
        return out.view(shape)


def _new_token(width: int, j: int, device: torch.device) -> torch.Tensor:
    """[width]^j bool: the last index differs from each of the j - 1 before it."""
    idx = [torch.arange(width, device=device).view((1,) * a + (width,) + (1,) * (j - 1 - a)) for a in range(j)]
    out = torch.ones((width,) * j, dtype=torch.bool, device=device)
    for a in range(j - 1):
        out = out & (idx[a] != idx[j - 1])
    return out


def _diagonal_prefix(term: torch.Tensor, j: int) -> torch.Tensor:
    """For m = 1..width, the sum of ``term`` [R, width^j] over tuples with every index < m. -> [R, width]"""
    for axis in range(1, j + 1):
        term = term.cumsum(axis)
    m = torch.arange(term.shape[-1], device=term.device)
    return term[(slice(None),) + (m,) * j]


def restrict_support(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep, per row, the union of the smallest top sets holding 1 - ``eps`` of p and of q; renormalise both.

    For acceptance estimates on real vocabularies (262k tokens): the tokens dropped carry at most ``eps`` of
    either distribution, so any acceptance rate moves by O(eps). Rows are padded with p = q = 0 tokens, which
    change no rate.

    Args:
        p, q: [..., V] probabilities.
    Returns:
        p, q: [..., W] float64 with W the largest kept count over the rows.

    Example:
        >>> restrict_support(torch.tensor([0.7, 0.3, 1e-9]), torch.tensor([0.5, 0.5, 0.0]))
        (tensor([0.7000, 0.3000], dtype=torch.float64), tensor([0.5000, 0.5000], dtype=torch.float64))
    """
    batch, vocab = p.shape[:-1], p.shape[-1]
    p2, q2 = p.reshape(-1, vocab).double(), q.reshape(-1, vocab).double()
    keep = (p2 >= mass_cutoff(p2, p2, 1.0 - eps)) & (p2 > 0) | (q2 >= mass_cutoff(q2, q2, 1.0 - eps)) & (q2 > 0)
    width = max(int(keep.sum(-1).max()), 1)
    idx = (keep.double() * 2.0 + torch.maximum(p2, q2)).topk(width, dim=-1).indices  # kept tokens first
    kept = keep.gather(1, idx)
    p3 = as_law(torch.where(kept, p2.gather(1, idx), 0.0))
    q3 = as_law(torch.where(kept, q2.gather(1, idx), 0.0))
    return p3.reshape(batch + (width,)), q3.reshape(batch + (width,))


def draft_tuples(q: torch.Tensor, k: int, law: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every child tuple ``law`` can draw from ``q`` [V], with its exact probability (zero-probability tuples left
    out). Tuples are padded with -1 as :func:`~.drafting.draw_children` pads them.

    Returns:
        tuples [N, k] int64 and probs [N] float64 (summing to 1).

    Example:
        >>> draft_tuples(torch.tensor([0.75, 0.25, 0.0]), 2, "without_replacement")
        (tensor([[0, 1],
                [1, 0]]), tensor([0.7500, 0.2500], dtype=torch.float64))
    """
    law = "deterministic" if law == "topk" else law
    if law not in DRAFT_LAWS:
        raise ValueError(f"law must be one of {DRAFT_LAWS}, got {law!r}")
    q = as_law(q.double()[None])[0]
    support = (q > 0).nonzero()[:, 0]
    if law == "deterministic":
        return top_tokens(q[None], k), q.new_ones(1)
    if law == "greedy":
        top = top_tokens(q[None], k - 1)  # [1, k-1]
        rest = as_law(q.masked_fill(token_mask(top, q.shape[0])[0], 0.0)[None])[0]
        xs = (rest > 0).nonzero()[:, 0]
        if xs.numel() == 0:
            return torch.cat([top, top.new_full((1, 1), -1)], dim=1), q.new_ones(1)
        return torch.cat([top.expand(xs.numel(), -1), xs[:, None]], dim=1), rest[xs]
    m = k if law == "iid" else min(k, support.numel())
    grid = torch.cartesian_prod(*([support] * m)).view(-1, m)  # [N, m] over the support
    probs = q[grid]  # [N, m]
    if law == "without_replacement":
        keep = torch.ones(grid.shape[0], dtype=torch.bool)
        for a in range(m):
            for b in range(a):
                keep &= grid[:, a] != grid[:, b]
        grid, probs = grid[keep], probs[keep]
        for a in range(1, m):  # the mass left after a draws, summed over what is left (not 1 - drawn: precision)
            probs[:, a] = probs[:, a] / (q * ~token_mask(grid[:, :a], q.shape[0])).sum(-1)
    tuples = torch.cat([grid, grid.new_full((grid.shape[0], k - m), -1)], dim=1)
    return tuples, probs.prod(-1)


def hit_probability(law: NodeLaw, children: torch.Tensor) -> torch.Tensor:
    """P(the emitted token is one of the present children) per row, integrating :func:`~.verify.decide` over its
    uniforms: 1 - prod_j (1 - a_j) + prod_j (1 - a_j) residual(children). [R]"""
    rejected = (1.0 - law.accept.double()).prod(-1)
    on_children = (law.residual.double() * token_mask(children, law.residual.shape[-1])).sum(-1)
    return 1.0 - rejected + rejected * on_children


def acceptance(verifier: NodeVerifier, p: torch.Tensor, q: torch.Tensor, k: int) -> float:
    """The exact acceptance rate of ``verifier`` with ``k`` children drawn under its draft law: P(the emitted token
    is a drafted child), residual draws that hit a child included. Enumerates every child tuple (V^k of them for
    iid: keep it below ~1e5).

    Args:
        p, q: [V] target and draft probabilities.

    Example:
        >>> from decoding.samplers.sequence.speculative.rrs import SpeculativeSampling
        >>> round(acceptance(SpeculativeSampling(), torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.3, 0.5]), 1), 6)
        0.7
    """
    tuples, probs = draft_tuples(q, k, verifier.draws)
    n = tuples.shape[0]
    pd, qd = as_law(p.double()[None]), as_law(q.double()[None])
    law = verifier.law(pd.expand(n, -1), qd.expand(n, -1), tuples)
    return float((probs * hit_probability(law, tuples)).sum())


def acceptance_mc(verifier: NodeVerifier, p: torch.Tensor, q: torch.Tensor, k: int, samples: int, seed: int = 0,
                  eps: float = 1e-7, chunk: int = 2**24) -> float:
    """Monte Carlo acceptance rate for large vocabularies: ``samples`` child tuples drawn with
    :func:`~.drafting.draw_children` (streams ``RowStreams.from_seed(seed, samples)``), each scored by its exact
    conditional acceptance (:func:`hit_probability`; Rao-Blackwellised over the verifier's own uniforms).

    p and q are first restricted to the support holding all but ``eps`` of either (:func:`restrict_support`,
    renormalised), so the estimate is that of the restricted pair (off by O(eps)). Each distinct tuple is scored
    once, in chunks of at most ``chunk`` [tuples x support] entries: the cost is one verifier law per distinct
    tuple over the restricted support (use a GPU for flat rows whose support stays near 262k).

    Args:
        p, q: [V] target and draft probabilities.
    Returns:
        The estimate (its standard error is at most 0.5 / sqrt(samples)).
    """
    p1, q1 = restrict_support(p, q, eps)
    width = p1.shape[-1]
    u = RowStreams.from_seed(seed, samples).uniform(k, device=p1.device)  # [S, k]
    rows = max(1, chunk // width)
    kids = torch.cat([draw_children(q1[None].expand(u[start:start + rows].shape[0], -1), k, verifier.draws,
                                    u[start:start + rows]) for start in range(0, samples, rows)])
    kids, counts = kids.unique(dim=0, return_counts=True)  # each distinct tuple scored once
    total = 0.0
    for start in range(0, kids.shape[0], rows):
        part = kids[start:start + rows]
        pe, qe = p1[None].expand(part.shape[0], -1), q1[None].expand(part.shape[0], -1)
        total += float((counts[start:start + rows] * hit_probability(verifier.law(pe, qe, part), part)).sum())
    return total / samples
