"""Top-k truncation (Fan et al., "Hierarchical Neural Story Generation", ACL 2018)."""

from __future__ import annotations

from decoding.kernels.sampling import keep
from decoding.samplers.base import TokenSampler, check_int


class TopK(TokenSampler):
    """Keep the ``k`` most probable tokens and renormalise.

    Ties with the k-th probability are all kept (as in transformers' TopKLogitsWarper), so the result does
    not depend on how equal values are ordered.

    Args:
        k: int >= 1; k >= V keeps everything.

    Example:
        >>> import torch
        >>> TopK(2).transform(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), None).exp()
        tensor([[0.6250, 0.3750, 0.0000]])
    """

    def __init__(self, k: int):
        check_int("k", k, 1)
        self.k = k

    def transform(self, logprobs, state):
        if self.k >= logprobs.shape[-1]:
            return logprobs
        kth = logprobs.topk(self.k, dim=-1).values[:, -1:]
        return keep(logprobs, logprobs >= kth)
