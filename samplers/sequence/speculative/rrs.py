"""Recursive rejection sampling at a draft-tree node, and the verifiers it specialises to.

Recursive rejection sampling (RRS): SpecInfer (Miao et al., "SpecInfer: Accelerating Large Language Model Serving
with Tree-based Speculative Inference and Verification", ASPLOS 2024, Algorithm 2). Children c_1..c_K of a node are
tried in order; with p_1 = p the target at the node,

    accept c_j with probability min(1, p_j(c_j) / q_j(c_j));   on rejection p_{j+1} = norm((p_j - q_j)+),

and when every child is rejected the token is drawn from p_{K+1}. q_j is the law c_j was drawn from given the
earlier children:

- :class:`RRS` ``(replacement=True)``: q_j = q, children drawn iid (SpecInfer). With K = 1 this is the speculative
  sampling of Leviathan et al. (ICML 2023) and Chen et al. (2023): :class:`SpeculativeSampling`.
- :class:`RRS` ``(replacement=False)``: q_j = q with c_1..c_{j-1} removed and renormalised, children drawn without
  replacement (Sequoia, Chen et al., "Sequoia: Scalable, Robust, and Hardware-aware Speculative Decoding", 2024).
- :class:`TopKVerifier`: children chosen deterministically (the top-k of q: EAGLE, Li et al., ICML 2024). Nothing
  is random to correct, so no child is accepted by a ratio test: the token is drawn from p and the node moves to
  the child carrying it (:func:`~.verify.decide`).

Every law is exact for its draft law: P(emit y) = p(y). Degenerate steps (q_j(c_j) = 0, a zero-mass residual) are
resolved by :func:`~.verify.accept_ratio` and :func:`~.verify.normalize` on paths of probability 0.
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


def rrs_law(p: torch.Tensor, q: torch.Tensor, children: torch.Tensor, replacement: bool) -> NodeLaw:
    """The RRS law at a node (see the module docstring); absent children (-1) are skipped and accept 0.

    Args:
        p, q: [R, V] target and draft probabilities; children: [R, K] ids, -1 absent.
        replacement: True if the children were drawn iid from q, False if without replacement.
    """
    p, q = as_law(p), as_law(q)
    residual = p  # p_j: the target given children 0..j-1 rejected
    draft = q  # q_j unnormalised (without replacement: earlier children removed)
    accept = []
    for j in range(children.shape[1]):
        c = children[:, j]
        present = (c >= 0)[:, None]
        q_j = draft if replacement else as_law(draft)
        accept.append(accept_ratio(token_probs(residual, c), token_probs(q_j, c)))
        after = normalize((residual - q_j).clamp_min(0.0), residual)  # mass 0: p_j = q_j, rejection impossible
        residual = torch.where(present, after, residual)
        if not replacement:
            draft = draft.masked_fill(token_mask(c[:, None], draft.shape[1]), 0.0)  # never drawn again
    accept_t = torch.stack(accept, dim=-1) if accept else p.new_zeros((p.shape[0], 0))
    return NodeLaw(accept_t, residual)


class RRS(NodeVerifier):
    """Recursive rejection sampling (SpecInfer; Sequoia without replacement).

    Args:
        replacement: True for children drawn iid from q (``draws = "iid"``), False for children drawn without
            replacement (``draws = "without_replacement"``).

    Example:
        >>> p = torch.tensor([[0.5, 0.5, 0.0]]); q = torch.tensor([[0.25, 0.25, 0.5]])
        >>> law = RRS().law(p, q, torch.tensor([[2, 1]]))  # 2 is rejected, then 1 accepted for sure
        >>> law.accept, law.residual
        (tensor([[0., 1.]]), tensor([[0.5000, 0.5000, 0.0000]]))
    """

    def __init__(self, replacement: bool = True):
        if not isinstance(replacement, bool):
            raise ValueError(f"replacement must be a bool, got {replacement!r}")
        self.replacement = replacement
        self.draws = "iid" if replacement else "without_replacement"

    def law(self, p: torch.Tensor, q: torch.Tensor, children: torch.Tensor) -> NodeLaw:
        check_node_inputs(p, q, children)
        return rrs_law(p, q, children, self.replacement)

    def __repr__(self) -> str:
        return f"RRS(replacement={self.replacement})"


class SpeculativeSampling(RRS):
    """Chain speculative sampling (Leviathan et al., ICML 2023; Chen et al., 2023): one child x ~ q per node,
    accepted with probability min(1, p(x)/q(x)), else y ~ norm((p - q)+). RRS restricted to K = 1.

    Example:
        >>> law = SpeculativeSampling().law(torch.tensor([[0.6, 0.4]]), torch.tensor([[0.2, 0.8]]), torch.tensor([[1]]))
        >>> law.accept, law.residual
        (tensor([[0.5000]]), tensor([[1., 0.]]))
    """

    def __init__(self):
        super().__init__(replacement=True)

    def law(self, p: torch.Tensor, q: torch.Tensor, children: torch.Tensor) -> NodeLaw:
        if children.dim() == 2 and children.shape[1] != 1:
            raise ValueError(f"SpeculativeSampling verifies one child per node, got K = {children.shape[1]}; use RRS()")
        return super().law(p, q, children)

    def __repr__(self) -> str:
        return "SpeculativeSampling()"


ChainVerifier = SpeculativeSampling  # the name a chain (one draft continuation) is usually verified under


class TopKVerifier(NodeVerifier):
    """Verification of deterministic children (EAGLE's top-k tree): draw y ~ p and move to the child carrying y.

    No child is accepted by a ratio test (``accept`` is 0) and ``residual`` is p itself; :func:`~.verify.decide`
    then follows the child whose token the target drew. ``q`` is ignored (it may be None).

    Example:
        >>> law = TopKVerifier().law(torch.tensor([[0.7, 0.3]]), None, torch.tensor([[0, 1]]))
        >>> law.accept, law.residual
        (tensor([[0., 0.]]), tensor([[0.7000, 0.3000]]))
    """

    draws = "deterministic"

    def law(self, p: torch.Tensor, q: torch.Tensor | None, children: torch.Tensor) -> NodeLaw:
        check_node_inputs(p, None, children)
        return NodeLaw(p.new_zeros(children.shape), as_law(p))
