"""Resampling for sequential Monte Carlo: ancestor indices from normalised weights, vectorised over groups.

Every scheme is unbiased: the expected number of copies of particle i is N w_i. They differ in variance
(R. Douc, O. Cappé, E. Moulines, "Comparison of resampling schemes for particle filtering", ISPA 2005):

- ``multinomial``: a_i = F^-1(u_i), u_i iid uniform;
- ``stratified``: a_i = F^-1((i + u_i) / N), one uniform per stratum;
- ``systematic``: a_i = F^-1((i + u_0) / N), one uniform shared by the strata;
- ``residual``: floor(N w_i) copies of each i, the remaining slots multinomial on the residual weights.

F^-1 is the inverse of the cumulative weights; a particle of weight 0 is never chosen.

Example:
    >>> log_w = torch.log(torch.tensor([[0.5, 0.25, 0.25, 0.0]], dtype=torch.float64))
    >>> resample(log_w, torch.full((1, 4), 0.5, dtype=torch.float64), "systematic")
    tensor([[0, 0, 1, 2]])
"""

from __future__ import annotations

import math

import torch

from decoding.kernels.sampling import inverse_search

SCHEMES = ("stratified", "systematic", "multinomial", "residual")


def ess(log_weights: torch.Tensor) -> torch.Tensor:
    """Effective sample size 1 / sum(w~^2) of each row, w~ = softmax(log_weights); 0 when every weight is 0.
    [G, N] -> [G]"""
    w = torch.softmax(log_weights, dim=-1)
    out = 1.0 / (w * w).sum(-1)
    return torch.where(torch.isneginf(log_weights).all(-1), 0.0, out)


def check_scheme(scheme: str) -> str:
    """``scheme`` if it is one of :data:`SCHEMES`, else a ValueError naming ``resampling``."""
    if scheme not in SCHEMES:
        raise ValueError(f"resampling must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    return scheme


def normalised(log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row [G, N]: the log of the mean weight (log Z_hat, [G]) and the normalised weights ([G, N], 0 for a
    row whose weights are all 0)."""
    log_ml = log_weights.logsumexp(-1) - math.log(log_weights.shape[-1])
    return log_ml, torch.softmax(log_weights, -1).nan_to_num(0.0)


def resample(log_weights: torch.Tensor, u: torch.Tensor, scheme: str = "stratified") -> torch.Tensor:
    """Ancestor indices [G, K] of each row: K draws among its N particles (K = N for SMC; SIR draws any K).

    Args:
        log_weights: [G, N] unnormalised log weights; every row needs a finite entry.
        u: [G, K] uniforms in (0, 1) (systematic uses the first column only).
        scheme: one of :data:`SCHEMES`; the strata are the K slots.
    """
    check_scheme(scheme)
    k = u.shape[1]
    w = torch.softmax(log_weights.double(), dim=-1)
    strata = torch.arange(k, dtype=torch.float64, device=w.device)[None, :]
    if scheme == "multinomial":
        return _inverse(w, u)
    if scheme == "stratified":
        return _inverse(w, (strata + u) / k)
    if scheme == "systematic":
        return _inverse(w, (strata + u[:, :1]) / k)
    copies = torch.floor(k * w)
    fixed = _inverse(copies, (strata + 0.5) / copies.sum(-1, keepdim=True).clamp_min(1))  # slot j -> its owner
    residual = _inverse(k * w - copies, u)
    return torch.where(strata < copies.sum(-1, keepdim=True), fixed, residual)


def _inverse(mass: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Index whose cumulative share of ``mass`` first exceeds each position in [0, 1); never an entry of zero
    mass. [G, N], [G, M] -> [G, M]"""
    cdf = mass.cumsum(-1)
    return inverse_search(mass, cdf, positions * cdf[:, -1:])
