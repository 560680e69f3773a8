"""Locally constrained decoding by token masks: the classic baseline (as in Outlines, llguidance, XGrammar).

Each step keeps the tokens the constraint allows from the row's state (``TokenConstraint.mask``: EOS only in
accepting states), renormalises, and draws; ``greedy=True`` takes the most probable allowed token instead (T = 0
under the constraint). The draw is exact for the locally constrained distribution; the log weight is log Z, the
model mass the mask kept (unnormalised weight of the globally constrained target, as SMC needs). A row with no
allowed token ends with weight -inf (the decode loop reports it as a dead end; the other rows go on), never an
exception.
"""

from __future__ import annotations

import torch

from decoding.kernels.sampling import NEG_INF, restricted_draw
from decoding.samplers.base import ConstrainedSampler, Draw


class Masked(ConstrainedSampler):
    """Terminal sampler: draw from the distribution restricted to the constraint's mask.

    Args:
        constraint: a ``Constraint`` (bound to the model's vocabulary when decoding starts) or a ``TokenConstraint``.
        greedy: take the most probable allowed token (lowest id among ties) instead of drawing: the law is a point
            mass, the constrained counterpart of ``dc.Greedy()``.

    Example:
        >>> out = dc.generate(lm, "Year: ", dc.Masked(dc.Regex(r"[12][0-9]{3}")), max_new_tokens=8)   # doctest: +SKIP
        >>> out = dc.generate(lm, "Year: ", dc.Masked(dc.Regex(r"[12][0-9]{3}"), greedy=True))        # doctest: +SKIP
    """

    def __init__(self, constraint, greedy: bool = False):
        super().__init__(constraint)
        if not isinstance(greedy, bool):
            raise TypeError(f"greedy: expected True or False, got {greedy!r}")
        self.greedy = greedy

    def draw(self, logprobs, state, rng):
        if self.greedy:
            restricted, log_z = self.restrict(logprobs, state)  # dead rows: log_z -inf
            return self.draw_restricted(restricted, log_z, rng)
        mask = self.token_constraint.mask_batch(state).to(logprobs.device)
        tokens, log_z = restricted_draw(logprobs, rng.uniform(device=logprobs.device), mask)  # dead rows: -inf
        logq = logprobs.gather(-1, tokens[:, None])[:, 0] - log_z
        return tokens, log_z, torch.where(torch.isfinite(log_z), logq, NEG_INF)

    def draw_restricted(self, logprobs, log_mass, rng):
        if not self.greedy:
            return super().draw_restricted(logprobs, log_mass, rng)
        tokens = logprobs.argmax(-1)
        alive = torch.isfinite(log_mass)
        return Draw(tokens, log_mass.to(logprobs.dtype), torch.where(alive, 0.0, NEG_INF).to(logprobs.dtype))

    def law(self, logprobs, state):
        restricted = self.restrict(logprobs, state)[0]
        if not self.greedy:
            return restricted
        return torch.full_like(restricted, NEG_INF).scatter(-1, restricted.argmax(-1, keepdim=True), 0.0)

    def accept(self, state, tokens, logprobs):
        return self.token_constraint.advance_batch(state, tokens.tolist())

    def __repr__(self) -> str:
        return f"Masked({self.constraint!r}{', greedy=True' if self.greedy else ''})"
