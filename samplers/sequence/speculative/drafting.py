"""Drawing the children of one draft-tree node under each draft law a verifier can check.

The laws (see :class:`~decoding.samplers.sequence.speculative.verify.NodeVerifier`):

- "iid": k independent draws from q (SpecInfer, Miao et al., ASPLOS 2024; chain speculative sampling for k = 1);
- "without_replacement": k distinct draws, each from q with the earlier children removed and renormalised
  (Sequoia, Chen et al., 2024);
- "deterministic": the k most probable tokens of q (EAGLE's static top-k tree, Li et al., ICML 2024);
- "greedy": the k - 1 most probable tokens T of q, then one draw from q restricted to the complement of T
  (Hu et al., "Towards Optimal Multi-draft Speculative Decoding", ICLR 2025).

Tokens with q = 0 are never drawn. When fewer than k tokens have q > 0, the laws that need distinct tokens pad
with -1 (absent children, always after the present ones). Ties in q are broken towards the lower token id, so the
deterministic children do not depend on how a kernel orders equal values.
"""

from __future__ import annotations

import torch

from decoding.kernels.sampling import BlockCDF

DRAFT_LAWS = ("iid", "without_replacement", "deterministic", "greedy")


def top_tokens(q: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` most probable tokens of each row, most probable first, ties towards the lower id; -1 where fewer
    than ``k`` tokens have q > 0.

    Args:
        q: [R, V] non-negative weights (need not be normalised).
        k: int >= 0.
    Returns:
        [R, k] int64.

    Example:
        >>> top_tokens(torch.tensor([[0.2, 0.4, 0.2, 0.2, 0.0]]), 3)
        tensor([[1, 0, 2]])
        >>> top_tokens(torch.tensor([[0.0, 1.0, 0.0]]), 2)
        tensor([[ 1, -1]])
    """
    rows, vocab = q.shape
    width = min(k, vocab)
    out = torch.full((rows, k), -1, dtype=torch.long, device=q.device)
    if width == 0:
        return out
    kth = q.topk(width, dim=-1).values[:, -1:]  # [R, 1] the width-th largest value
    above, tied = q > kth, q == kth
    room = width - above.sum(-1, keepdim=True)  # how many of the tied tokens fit
    chosen = above | (tied & (tied.cumsum(-1) <= room))  # exactly `width` per row, lowest ids among ties
    ids = chosen.nonzero()[:, 1].view(rows, width)  # ascending ids
    order = q.gather(1, ids).sort(dim=-1, descending=True, stable=True).indices  # stable: ties keep the lower id
    ids = ids.gather(1, order)
    out[:, :width] = torch.where(q.gather(1, ids) > 0, ids, -1)
    return out


def draw_children(q: torch.Tensor, k: int, law: str, u: torch.Tensor) -> torch.Tensor:
    """Draw ``k`` children per row from the draft ``q`` under ``law`` (one of :data:`DRAFT_LAWS`).

    Child j uses ``u[:, j]`` (inverse CDF, exact); "deterministic" ignores ``u`` and "greedy" uses only
    ``u[:, k - 1]``. A row whose q is all zero (no proposal) gets only absent children.

    Args:
        q: [R, V] non-negative draft weights (normalised or not).
        k: number of children, >= 1.
        law: "iid", "without_replacement", "deterministic" or "greedy".
        u: [R, k] float64 uniforms in (0, 1).
    Returns:
        [R, k] int64 token ids, -1 for absent children (after the present ones).

    Example:
        >>> q = torch.tensor([[0.5, 0.3, 0.2, 0.0]], dtype=torch.float64)
        >>> u = torch.tensor([[0.1, 0.1, 0.1]], dtype=torch.float64)
        >>> draw_children(q, 3, "iid", u), draw_children(q, 3, "without_replacement", u)
        (tensor([[0, 0, 0]]), tensor([[0, 1, 2]]))
        >>> draw_children(q, 3, "greedy", u)
        tensor([[0, 1, 2]])
    """
    if law not in DRAFT_LAWS:
        raise ValueError(f"law must be one of {DRAFT_LAWS}, got {law!r}")
    if k < 1 or u.shape != (q.shape[0], k):
        raise ValueError(f"u: expected shape {(q.shape[0], k)} with k >= 1, got {tuple(u.shape)}")
    if law == "deterministic":
        return top_tokens(q, k)
    live = q.sum(-1) > 0  # [R] rows with a proposal
    cdf = BlockCDF(torch.log(torch.where(live[:, None], q, torch.ones_like(q))))  # dead rows: any valid law
    if law == "iid":
        kids = torch.stack([cdf.draw(u[:, j])[0] for j in range(k)], dim=-1)
        return torch.where(live[:, None], kids, -1)
    if law == "greedy":
        kids = top_tokens(q, k)
        first = kids[:, : k - 1]
        token, mass = cdf.draw(u[:, k - 1], excluded=first)
        kids[:, k - 1] = torch.where(live & (mass > 0), token, -1)  # mass 0: T already holds every token of q
        return kids
    kids = torch.full((q.shape[0], k), -1, dtype=torch.long, device=q.device)  # without replacement
    for j in range(k):
        token, mass = cdf.draw(u[:, j], excluded=kids[:, :j])
        kids[:, j] = torch.where(live & (mass > 0), token, -1)
    return kids
