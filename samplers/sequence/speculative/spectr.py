"""SpecTr's K-SEQ verifier (Sun, Suresh, Ro, Beirami, Jain, Yu, "SpecTr: Fast Speculative Decoding via Optimal
Transport", NeurIPS 2023, Algorithm 3 "K-SEQ").

k children drawn iid from q are tried in order, each with the SAME acceptance probability (no residual update in
between) made smaller by a factor rho >= 1:

    beta(rho) = sum_x min(q(x), p(x)/rho),   gamma(rho) = (1 - (1 - beta)^k) / beta = sum_{i<k} (1 - beta)^i
    rho = the smallest value in [1, k] with gamma(rho) <= rho
    accept x_i with probability min(1, p(x_i) / (rho q(x_i)))
    none accepted: y ~ [p - min(q, p/rho) gamma] / (1 - beta)^k

A token x is accepted with total probability min(q, p/rho)(x) gamma; gamma <= rho keeps the residual
non-negative, so the law is exact. The acceptance rate 1 - (1 - beta)^k grows as rho shrinks, hence the smallest
feasible rho. With k = 1, gamma = 1 and rho = 1: chain speculative sampling.
"""

from __future__ import annotations

import torch

from decoding.samplers.sequence.speculative.verify import (
    NodeLaw,
    NodeVerifier,
    accept_ratio,
    as_law,
    check_node_inputs,
    normalize,
    token_probs,
)


def spectr_gamma(beta: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """gamma = sum_{i<k} (1 - beta)^i = (1 - (1 - beta)^k) / beta, without 0/0 (k at beta = 0; 0 for k = 0).

    Example:
        >>> spectr_gamma(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([3.0, 3.0, 3.0]))
        tensor([3.0000, 1.7500, 1.0000])
    """
    b = beta.clamp(min=torch.finfo(beta.dtype).tiny, max=1.0)  # at the smallest normal the ratio is exactly k
    return torch.where(k > 0, -torch.expm1(k * torch.log1p(-b)) / b, torch.zeros_like(b))


def spectr_rho(p: torch.Tensor, q: torch.Tensor, k: torch.Tensor, steps: int = 48) -> torch.Tensor:
    """The smallest rho in [1, k] with gamma(rho) <= rho, per row, by bisection. Every returned rho is feasible
    (the upper end of the bracket), so the law is exact whatever ``steps``; more steps only get closer to the best.

    Args:
        p, q: [R, V] normalised target and draft; k: [R] float number of children (0 gives rho = 1).
        steps: bisection halvings of [1, k].
    Returns:
        [R] rho.
    """
    kk = k.clamp_min(1.0)

    def feasible(rho: torch.Tensor) -> torch.Tensor:
        return spectr_gamma(torch.minimum(q, p / rho[:, None]).sum(-1), kk) <= rho

    lo, hi = torch.ones_like(kk), kk.clone()  # gamma <= k always: k is feasible
    at_one = feasible(lo)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        ok = feasible(mid)
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    return torch.where(at_one, lo.new_ones(()), hi)


class SpecTr(NodeVerifier):
    """SpecTr K-SEQ verification of k children drawn iid from q (``draws = "iid"``).

    Rows may have fewer present children (-1 padded); k is then that row's count.

    Example:
        >>> p = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)
        >>> q = torch.tensor([[0.25, 0.25, 0.5]], dtype=torch.float64)
        >>> SpecTr().law(p, q, torch.tensor([[2, 0]])).accept  # beta = 0.5, gamma = 1.5 = rho
        tensor([[0., 1.]], dtype=torch.float64)
    """

    draws = "iid"

    def law(self, p: torch.Tensor, q: torch.Tensor, children: torch.Tensor) -> NodeLaw:
        check_node_inputs(p, q, children)
        p, q = as_law(p), as_law(q)
        present = children >= 0
        k = present.sum(-1).to(p.dtype)  # [R]
        rho = spectr_rho(p, q, k)[:, None]  # [R, 1]
        kept = torch.minimum(q, p / rho)  # [R, V] min(q, p/rho)
        gamma = spectr_gamma(kept.sum(-1), k)[:, None]
        accept = torch.stack(
            [accept_ratio(token_probs(p, children[:, j]), rho[:, 0] * token_probs(q, children[:, j]))
             for j in range(children.shape[1])], dim=-1) if children.shape[1] else p.new_zeros(children.shape)
        residual = normalize((p - kept * gamma).clamp_min(0.0), p)  # mass 0: every draw is accepted
        return NodeLaw(accept * present, residual)
