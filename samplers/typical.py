"""Locally typical sampling (Meister et al., "Locally Typical Sampling", TACL 2023)."""

from __future__ import annotations

from decoding.kernels.sampling import keep, mass_cutoff
from decoding.samplers.base import TokenSampler, check_fraction


class Typical(TokenSampler):
    """Keep the tokens whose surprise -log p(x) is closest to the entropy H(p), up to mass ``p``; renormalise.

    Tokens are ranked by |-log p(x) - H(p)| (eq. 5 of the paper); the kept set is the smallest prefix of that
    ranking holding at least ``p`` of the mass (ties at the boundary kept, as in ``TopP``). H, the ranking and the
    masses are computed in float64: in float32, H is off by ~1e-7 and sums over a 262k-token row drop boundary
    tokens.

    Args:
        p: in (0, 1]; 1 keeps everything.

    Example:
        >>> import torch
        >>> Typical(0.5).transform(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), None).exp()
        tensor([[0.6250, 0.3750, 0.0000]])
    """

    def __init__(self, p: float):
        self.p = check_fraction("typical_p", p)

    def transform(self, logprobs, state):
        if self.p >= 1:
            return logprobs
        lp = logprobs.double()  # [B, V]
        probs = lp.exp()
        h = (probs * lp).nan_to_num_(0.0).sum(-1, keepdim=True).neg_()  # entropy; 0 * -inf counts 0
        closeness = (lp + h).abs_().neg_()  # -|-log p - H|: higher = more typical; -inf if p = 0
        cutoff = mass_cutoff(closeness, probs, self.p)
        return keep(logprobs, closeness >= cutoff)
