"""The greedy multi-draft verifier (Hu, Zheng, Viswanathan, Chen, Rossi, Wu, Manocha, Huang, "Towards Optimal
Multi-draft Speculative Decoding", ICLR 2025, Section 6 "greedy draft sampling").

The children are the K - 1 most probable draft tokens T (deterministic) and one x drawn from q' = q restricted
to the complement of T and renormalised (law "greedy", :func:`~.drafting.draw_children`). Verification is
speculative sampling of x against q':

    accept x with probability min(1, p(x) / q'(x));   else y ~ norm((p - q')+)

q' is 0 on T, so the residual keeps p's mass on T and a residual y in T moves to that child
(:func:`~.verify.decide`). Acceptance = p(T) + sum_{x not in T} min(p(x), q'(x)), which is the optimal acceptance
rate of the greedy draft law (:func:`~.optimal.alpha_star`): 1 + min_H [p(H) - 1{T in H} q'(H \\ T)].
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
    token_mask,
    token_probs,
)


class GreedyMultiDraft(NodeVerifier):
    """Verify K - 1 deterministic top tokens plus one draw from the rest of q (``draws = "greedy"``).

    The last slot holds the random child, -1 when T already holds every token of q (q' = 0): the token is then
    drawn from p, as it is for a row without children.

    Example:
        >>> p = torch.tensor([[0.2, 0.3, 0.5]]); q = torch.tensor([[0.6, 0.3, 0.1]])
        >>> law = GreedyMultiDraft().law(p, q, torch.tensor([[0, 2]]))  # T = {0}, x = 2 ~ q' = (0, 0.75, 0.25)
        >>> law.accept, law.residual
        (tensor([[0., 1.]]), tensor([[0.4444, 0.0000, 0.5556]]))
    """

    draws = "greedy"

    def law(self, p: torch.Tensor, q: torch.Tensor, children: torch.Tensor) -> NodeLaw:
        check_node_inputs(p, q, children)
        if children.shape[1] == 0:
            raise ValueError("GreedyMultiDraft needs K >= 1 children per node")
        p, q = as_law(p), as_law(q)
        top = children[:, :-1]  # [R, K-1] T, -1 where q has fewer tokens
        x = children[:, -1]
        rest = as_law(q.masked_fill(token_mask(top, q.shape[1]), 0.0))  # q'
        rest = rest * (x >= 0)[:, None]  # x absent: T holds all of q (q' = 0), or the node was not drafted
        accept = torch.zeros_like(children, dtype=p.dtype)
        accept[:, -1] = accept_ratio(token_probs(p, x), token_probs(rest, x))
        residual = normalize((p - rest).clamp_min(0.0), p)  # mass 0 only if p = q' (then x is always accepted)
        return NodeLaw(accept, residual)
