"""Locally constrained decoding by token masks: the classic baseline (as in Outlines, llguidance, XGrammar).

Each step keeps the tokens the constraint allows from the row's state (``TokenConstraint.mask``: EOS only in
accepting states), renormalises, and draws. The draw is exact for the locally constrained distribution; the log
weight is log Z, the model mass the mask kept (unnormalised weight of the globally constrained target, as SMC
needs). A row with no allowed token ends with weight -inf (the decode loop reports it as a dead end; the other
rows go on), never an exception.
"""

from __future__ import annotations

import torch

from decoding.kernels.sampling import NEG_INF, restricted_draw
from decoding.samplers.base import ConstrainedSampler


class Masked(ConstrainedSampler):
    """Terminal sampler: draw from the distribution restricted to the constraint's mask.

    Args:
        constraint: a ``Constraint`` (bound to the model's vocabulary when decoding starts) or a ``TokenConstraint``.

    Example:
        >>> out = dc.generate(lm, "Year: ", dc.Masked(dc.Regex(r"[12][0-9]{3}")), max_new_tokens=8)   # doctest: +SKIP
    """

    def draw(self, logprobs, state, rng):
        mask = self.token_constraint.mask_batch(state).to(logprobs.device)
        tokens, log_z = restricted_draw(logprobs, rng.uniform(device=logprobs.device), mask)  # dead rows: -inf
        logq = logprobs.gather(-1, tokens[:, None])[:, 0] - log_z
        return tokens, log_z, torch.where(torch.isfinite(log_z), logq, NEG_INF)

    def accept(self, state, tokens, logprobs):
        return self.token_constraint.advance_batch(state, tokens.tolist())

    def __repr__(self) -> str:
        return f"Masked({self.constraint!r})"
