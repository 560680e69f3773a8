"""Nucleus (top-p) truncation (Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR 2020)."""

from __future__ import annotations

from decoding.kernels.sampling import keep, mass_cutoff
from decoding.samplers.base import TokenSampler, check_fraction


class TopP(TokenSampler):
    """Keep the smallest set of most probable tokens whose mass reaches ``p``, and renormalise.

    Rule: token x is kept iff the tokens strictly more probable than x hold less than ``p`` of the mass. This
    is the minimal nucleus, with ties at its boundary kept (independent of sort order); the most probable token
    is always kept. The masses are exp(logprobs), summed and compared with ``p`` in float64 (float32 sums over
    a 262k-token row drop boundary tokens).

    Args:
        p: in (0, 1]; 1 keeps everything.

    Example:
        >>> import torch
        >>> TopP(0.7).transform(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), None).exp()
        tensor([[0.6250, 0.3750, 0.0000]])
    """

    def __init__(self, p: float):
        self.p = check_fraction("top_p", p)

    def transform(self, logprobs, state):
        if self.p >= 1:
            return logprobs
        cutoff = mass_cutoff(logprobs, logprobs, self.p, log=True)
        return keep(logprobs, logprobs >= cutoff)
