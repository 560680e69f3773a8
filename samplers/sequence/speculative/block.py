"""Block verification of one draft chain (Sun, Mendlovic, Leviathan, Aharoni, Beirami, Ro, Suresh, "Block
Verification Accelerates Speculative Decoding", ICLR 2025, Algorithm 2).

Token-by-token speculative sampling stops at the first rejected draft. Block verification decides on the whole
block at once and is optimal among valid verifiers of one chain: its expected number of accepted drafts is never
smaller than speculative sampling's. With drafts x_1..x_g ~ q_1..q_g and targets p_1..p_{g+1} (p_{i+1} after
x_1..x_i):

    w_0 = 1;  w_i = min(1, w_{i-1} p_i(x_i) / q_i(x_i))
    s_i = sum_x (w_i p_{i+1}(x) - q_{i+1}(x))+
    h_0 = 1;  h_i = s_i / (s_i + 1 - w_i) for 0 < i < g;  h_g = w_g
    tau = max{i : U_i <= h_i};  emit x_1..x_tau, then y ~ norm((w_tau p_{tau+1} - q_{tau+1})+), or p_{g+1} if tau = g

so P(tau = i) = h_i prod_{j > i} (1 - h_j). Here h is written as a law (like :class:`~.verify.NodeLaw`) and
:meth:`BlockVerifier.decide` draws from it.

Degenerate cases: h_i = 1 when s_i + 1 - w_i = 0 (w_i = 1 and p_{i+1} = q_{i+1}: then h_{i+1} = 1 as well, so
tau = i never happens); a residual of zero mass is replaced by p_{i+1} (it is reached with probability 0).
"""

from __future__ import annotations

import torch

from decoding.kernels.sampling import inverse_cdf
from decoding.samplers.sequence.speculative.verify import accept_ratio, as_law, normalize, token_probs


class BlockVerifier:
    """Block verification of a chain of g drafts per row (lossless; optimal for one chain).

    Rows may have shorter chains: drafts are padded with -1 at the end, and a row's chain ends at its first -1
    (its ``h`` is 0 past the end and ``residual`` at the end is the target after the last draft).

    Example:
        >>> p = torch.tensor([[[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]]], dtype=torch.float64)  # [R=1, g+1=3, V=2]
        >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)           # [R=1, g=2, V=2]
        >>> h, residual = BlockVerifier().law(p, q, torch.tensor([[0, 1]]))
        >>> h
        tensor([[1.0000, 0.3333, 0.2500]], dtype=torch.float64)
        >>> BlockVerifier.decide(h, residual, torch.full((1, 4), 0.3, dtype=torch.float64))  # keeps x_1, then y = 0
        (tensor([1]), tensor([0]))
    """

    drafts = "iid"  # one draw per position: a chain

    def law(self, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: p [R, g+1, V] targets after 0..g drafts; q [R, g, V] the draft law of each draft; drafts [R, g]
        token ids, -1 past a row's end. Returns h [R, g+1] and residual [R, g+1, V] (see the module docstring)."""
        rows, g = drafts.shape
        if p.dim() != 3 or p.shape[:2] != (rows, g + 1):
            raise ValueError(f"p: expected shape [{rows}, {g + 1}, V], got {tuple(p.shape)}")
        if q.shape != (rows, g, p.shape[2]):
            raise ValueError(f"q: expected shape [{rows}, {g}, {p.shape[2]}], got {tuple(q.shape)}")
        p = as_law(p.reshape(-1, p.shape[2])).view(p.shape)
        q = as_law(q.reshape(-1, q.shape[2])).view(q.shape)
        length = (drafts >= 0).long().cumprod(-1).sum(-1, keepdim=True)  # [R, 1] drafts before the first -1
        w = p.new_ones(rows)  # w_0
        ws, masses, residuals = [w], [], []
        for i in range(g):
            excess = (w[:, None] * p[:, i] - q[:, i]).clamp_min(0.0)  # [R, V] (w_i p_{i+1} - q_{i+1})+
            residuals.append(normalize(excess, p[:, i]))
            masses.append(excess.sum(-1))
            x = drafts[:, i]
            w = accept_ratio(w * token_probs(p[:, i], x), token_probs(q[:, i], x))  # w_{i+1}
            ws.append(w)
        residuals.append(p[:, g])
        w, s = torch.stack(ws, dim=-1), torch.stack(masses, dim=-1)  # [R, g+1], [R, g]
        den = s + 1.0 - w[:, :g]
        inner = torch.where(den > 0, s / torch.where(den > 0, den, torch.ones_like(den)), torch.ones_like(s))
        inner = torch.nn.functional.pad(inner.clamp(0.0, 1.0), (0, 1))  # [R, g+1]; rounding can pass 1 at w = 1
        pos = torch.arange(g + 1, device=drafts.device)[None, :]
        h = torch.where(pos == length, w.gather(1, length), torch.where(pos < length, inner, torch.zeros_like(inner)))
        h[:, 0] = 1.0  # h_0 = 1 (= w_0 when the chain is empty)
        residual = torch.stack(residuals, dim=1)  # [R, g+1, V]
        residual = torch.where((pos >= length)[:, :, None], p, residual)  # at the end: the target after the last draft
        return h, residual

    @staticmethod
    def decide(h: torch.Tensor, residual: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tau = max{i : u[:, i] <= h[:, i]} and the token y ~ residual[:, tau] (inverse CDF with u[:, g+1]).

        Args:
            h: [R, g+1]; residual: [R, g+1, V]; u: [R, g+2] float64 uniforms in (0, 1).
        Returns:
            tau [R] int64 (drafts[:, :tau] are emitted) and the token [R] emitted after them.
        """
        rows, width = h.shape
        if u.shape != (rows, width + 1):
            raise ValueError(f"u: expected shape {(rows, width + 1)}, got {tuple(u.shape)}")
        pos = torch.arange(width, device=h.device)
        tau = torch.where(u[:, :width] <= h.to(u.dtype), pos, 0).amax(-1)  # h_0 = 1: position 0 always qualifies
        chosen = residual[torch.arange(rows, device=h.device), tau]  # [R, V]
        return tau, inverse_cdf(torch.log(chosen), u[:, width])
