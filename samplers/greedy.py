"""Greedy decoding: the most probable token (lowest id among ties)."""

from __future__ import annotations

import torch

from decoding.kernels.sampling import NEG_INF
from decoding.samplers.base import TokenSampler


class Greedy(TokenSampler):
    """Terminal sampler returning ``argmax`` of the (transformed) distribution; its law is a point mass.

    Example:
        >>> import torch
        >>> Greedy().sample(torch.log(torch.tensor([[0.2, 0.5, 0.3]]))).tokens
        tensor([1])
    """

    terminal = True
    draws_from_law = True

    def draw(self, logprobs, state, rng):
        tokens = logprobs.argmax(-1)
        zeros = torch.zeros(tokens.shape, dtype=logprobs.dtype, device=logprobs.device)
        return tokens, zeros, zeros

    def law(self, logprobs, state):
        point = torch.full_like(logprobs, NEG_INF)
        return point.scatter(-1, logprobs.argmax(-1, keepdim=True), 0.0)
