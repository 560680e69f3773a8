"""The verifier protocol shared by every speculative verifier, and the sampling step that applies one.

A node verifier decides, at one node of a draft tree, which child (if any) the target accepts. It is written as a
*law*, not as a sampler: given the target ``p`` at the node, the draft law ``q`` the children were drawn from and
the children themselves, it returns

- ``accept[R, K]``: the probability that child j is accepted given that children 0..j-1 were rejected, and
- ``residual[R, V]``: the distribution of the token emitted when every child is rejected.

:func:`decide` turns a law into a decision with K + 1 uniforms per row. A residual token equal to a child's token
moves to that child too (its subtree was drafted for exactly that prefix, independently of the decision), which
is how the deterministic top-k verifier accepts at all. Writing verifiers as laws lets the tests enumerate every
draft and integrate the decision exactly.

Notation: ``p`` is the target, ``q`` the draft; both are probabilities (not logs) over the vocabulary.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from decoding.kernels.sampling import inverse_cdf


class NodeLaw(NamedTuple):
    """What a verifier does at one node, as probabilities (see the module docstring)."""

    accept: torch.Tensor  # [R, K] sequential acceptance probability of each child (0 for absent children)
    residual: torch.Tensor  # [R, V] law of the emitted token when all children are rejected (sums to 1)


class NodeVerifier:
    """Base of the verifiers applied node by node in a draft tree.

    ``draws`` names the law the children must have been drawn with: "iid" (K independent draws from q),
    "without_replacement" (K distinct draws, each from q with earlier children removed), "deterministic" (any
    set chosen without randomness, e.g. top-k) or "greedy" (the K-1 first children deterministic, the last drawn
    from q restricted to the others' complement). A tree shape is checked against it when ``dc.Speculative`` is
    built.
    """

    draws: str = "iid"

    @property
    def drafts(self) -> str:
        """Deprecated name of ``draws`` (until 0.3)."""
        warnings.warn("NodeVerifier.drafts is deprecated; use .draws", DeprecationWarning, stacklevel=2)
        return self.draws

    def law(self, p: torch.Tensor, q: torch.Tensor, children: torch.Tensor) -> NodeLaw:
        """Args: p [R, V], q [R, V] probabilities; children [R, K] token ids, -1 for absent children (absent
        children come after present ones)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# The arithmetic the verifiers share; every function works row-wise on [R, ...] tensors and never in place.


def accept_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``min(1, num / den)`` elementwise, with x / 0 = 1 for x > 0 and 0 / 0 = 0 (never NaN).

    A child whose draft probability is 0 cannot have been drawn, so its acceptance does not change the law; these
    conventions only keep the arithmetic finite.

    Example:
        >>> accept_ratio(torch.tensor([0.2, 0.5, 0.3, 0.0]), torch.tensor([0.4, 0.25, 0.0, 0.0]))
        tensor([0.5000, 1.0000, 1.0000, 0.0000])
    """
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, (num / safe).clamp(max=1.0), (num > 0).to(num.dtype))


def normalize(weights: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Rows of non-negative ``weights`` [R, V] scaled to sum to one; a row of zero mass becomes ``fallback``'s row.

    The fallback only fills rows that a correct verifier never samples from (the rejection that leads there has
    probability 0), so that :func:`decide` always has a distribution to invert.

    Example:
        >>> normalize(torch.tensor([[1.0, 3.0], [0.0, 0.0]]), torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
        tensor([[0.2500, 0.7500],
                [0.9000, 0.1000]])
    """
    mass = weights.sum(-1, keepdim=True)
    return torch.where(mass > 0, weights / torch.where(mass > 0, mass, torch.ones_like(mass)), fallback)


def decide(law: NodeLaw, children: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a node law with K + 1 uniforms per row: which child the target moves to, and the emitted token.

    Child j is accepted when children 0..j-1 were rejected and ``u[:, j] < accept[:, j]``. When every child is
    rejected the token is drawn from ``residual`` by inverse CDF with ``u[:, K]`` (exact; never a token of
    probability 0), and the node moves to the FIRST present child carrying that token, if any (-1 otherwise).

    Args:
        law: accept [R, K], residual [R, V].
        children: [R, K] token ids, -1 for absent children (their accept must be 0; they never match).
        u: [R, K + 1] float64 uniforms in (0, 1).
    Returns:
        child [R] int64 index into ``children`` or -1, and token [R] int64 the emitted token.

    Example:
        >>> law = NodeLaw(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0]]))
        >>> decide(law, torch.tensor([[1, 2]]), torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64))
        (tensor([1]), tensor([2]))
    """
    rows, k = children.shape
    if u.shape != (rows, k + 1):
        raise ValueError(f"u: expected shape {(rows, k + 1)} (K + 1 uniforms per row), got {tuple(u.shape)}")
    residual = inverse_cdf(torch.log(law.residual), u[:, k])  # [R] the token if every child is rejected
    if k == 0:
        return torch.full_like(residual, -1), residual
    hit = (u[:, :k] < law.accept.to(u.dtype)) & (children >= 0)  # [R, K]
    accepted = hit.any(-1)
    first = hit.to(torch.int8).argmax(-1)  # first True (argmax returns the first maximum)
    match = children == residual[:, None]  # [R, K]; absent children (-1) never match a token
    matched = torch.where(match.any(-1), match.to(torch.int8).argmax(-1), -1)
    child = torch.where(accepted, first, matched)
    token = torch.where(accepted, children.gather(1, first[:, None])[:, 0], residual)
    return child, token


def token_mask(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """[R, V] bool: which tokens appear in each row of ``tokens`` [R, n] (-1 entries ignored).

    Example:
        >>> token_mask(torch.tensor([[2, 0, -1]]), 4)
        tensor([[ True, False,  True, False]])
    """
    spare = torch.where(tokens >= 0, tokens, vocab)  # -1 writes to a spare column, dropped after
    out = torch.zeros((tokens.shape[0], vocab + 1), dtype=torch.bool, device=tokens.device)
    return out.scatter(1, spare, True)[:, :vocab]


def check_node_inputs(p: torch.Tensor, q: torch.Tensor | None, children: torch.Tensor) -> None:
    """Raise ValueError unless p [R, V], q [R, V] (or None) and children [R, K] agree."""
    if p.dim() != 2:
        raise ValueError(f"p: expected shape [R, V], got {tuple(p.shape)}")
    if q is not None and q.shape != p.shape:
        raise ValueError(f"q: expected the shape of p {tuple(p.shape)}, got {tuple(q.shape)}")
    if children.dim() != 2 or children.shape[0] != p.shape[0]:
        raise ValueError(f"children: expected shape [{p.shape[0]}, K], got {tuple(children.shape)}")


def as_law(w: torch.Tensor) -> torch.Tensor:
    """Rows of non-negative weights normalised (a zero row stays zero). [R, V] -> [R, V]"""
    return normalize(w, torch.zeros_like(w))


def token_probs(dist: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``dist[r, tokens[r]]``, 0 for absent tokens (-1). [R, V], [R] -> [R]"""
    got = dist.gather(1, tokens.clamp_min(0)[:, None])[:, 0]
    return torch.where(tokens >= 0, got, torch.zeros_like(got))
