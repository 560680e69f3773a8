"""Min-p truncation (Nguyen et al., "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM
Outputs", ICLR 2025)."""

from __future__ import annotations

import math

from decoding.kernels.sampling import keep
from decoding.samplers.base import TokenSampler, check_fraction


class MinP(TokenSampler):
    """Keep tokens with probability at least ``p`` times the top token's, and renormalise.

    Args:
        p: in (0, 1]; p = 1 keeps only the tokens tied with the most probable one.

    Example:
        >>> import torch
        >>> MinP(0.5).transform(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), None).exp()
        tensor([[0.6250, 0.3750, 0.0000]])
    """

    def __init__(self, p: float):
        self.p = check_fraction("min_p", p)

    def transform(self, logprobs, state):
        threshold = logprobs.amax(-1, keepdim=True) + math.log(self.p)
        return keep(logprobs, logprobs >= threshold)
