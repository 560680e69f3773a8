"""Temperature scaling: p_T(x) proportional to p(x)^(1/T)."""

from __future__ import annotations

from decoding.kernels.sampling import renormalize
from decoding.samplers.base import TokenSampler


class Temperature(TokenSampler):
    """Divide the log-probabilities by ``temperature`` and renormalise.

    Args:
        temperature: > 0. Below 1 sharpens, above 1 flattens. For T -> 0 use ``Greedy()``.

    Example:
        >>> import torch
        >>> Temperature(0.5).transform(torch.log(torch.tensor([[0.25, 0.75]])), None).exp()
        tensor([[0.1000, 0.9000]])
    """

    pointwise = True

    def __init__(self, temperature: float):
        finite_number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
        if not finite_number or not 0 < temperature < float("inf"):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}; use Greedy() for T = 0")
        self.temperature = float(temperature)

    def transform(self, logprobs, state):
        return renormalize(logprobs / self.temperature)
