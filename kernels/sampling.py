"""Vectorised torch primitives shared by the token samplers. Shapes: B rows, V vocabulary entries.

All functions work on the tensors' own device, never loop over rows or vocabulary entries in Python, and never
change their inputs in place.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")
_BLOCK = 512  # inverse-CDF block width: V / 512 block sums, then one block of 512


def renormalize(logprobs: torch.Tensor) -> torch.Tensor:
    """Log-probabilities rescaled to sum to one over the entries that are not -inf. [B, V] -> [B, V]"""
    return torch.log_softmax(logprobs, dim=-1)  # one fused kernel: a [B, V] pass costs more than the arithmetic


def keep(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Truncate to the entries where ``mask`` is True and renormalise. [B, V], bool [B, V] -> [B, V]"""
    return renormalize(logprobs.masked_fill(~mask, NEG_INF))


def keep_listed(logprobs: torch.Tensor, values: torch.Tensor, idx: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Truncate to a few listed entries and renormalise, touching the full [B, V] tensor once (a write).

    Args:
        logprobs: [B, V], only for the shape, dtype and device.
        values, idx: [B, N] the log-probs of the listed entries and their ids (e.g. from ``topk``).
        kept: [B, N] bool, which listed entries stay.
    """
    listed = torch.log_softmax(values.masked_fill(~kept, NEG_INF), dim=-1)
    return torch.full_like(logprobs, NEG_INF).scatter_(-1, idx, listed)


def entropy(logprobs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of each row of normalised log-probabilities (-inf entries count 0). [B, V] -> [B]"""
    return torch.special.entr(logprobs.exp()).sum(-1)


def check_logprobs(logprobs: torch.Tensor, name: str = "logprobs") -> None:
    """Raise ValueError naming ``name`` if a row holds NaN or has no finite entry (one device sync)."""
    if logprobs.dim() != 2:
        raise ValueError(f"{name}: expected shape [batch, vocab], got {tuple(logprobs.shape)}")
    top = logprobs.amax(-1)  # NaN propagates through amax
    bad = ~torch.isfinite(top)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        what = ("NaN" if bool(torch.isnan(top[row])) else "+inf" if bool(top[row] > 0)
                else "no finite entry (every token is -inf)")
        raise ValueError(
            f"{name}: row {row} has {what}; a sampler never draws from an undefined distribution "
            "(check the model's logits or the constraint that removed every token)"
        )


def mass_cutoff(scores: torch.Tensor, probs: torch.Tensor, mass: float, start: int = 256, *,
                log: bool = False) -> torch.Tensor:
    """Per-row score threshold of the smallest top-scored set holding at least ``mass`` probability.

    A token is kept iff the probability of the tokens scoring strictly higher is below ``mass``; ties with the
    last kept token are all kept, so the result does not depend on the sort order of equal scores.

    The masses that decide it are summed and compared with ``mass`` in float64 (float32 prefix sums are off by up
    to ~1e-7, enough to drop a boundary token of a 262k-token row). With ``log=True``, ``probs`` holds
    log-probabilities, exponentiated in float64 only where needed (the ``start`` candidates, and the rows of a
    larger set): the masses are then those of the float32 log-probabilities, without float32 exponentials' rounding.

    No full-vocabulary sort: one ``topk`` of ``start`` entries settles the usual language-model row; rows whose
    set is larger go through a bucket selection (:func:`_bucket_cutoff`), a few linear passes.

    Args:
        scores: [B, V] higher = kept first (-inf: never kept unless the row has nothing else).
        probs: [B, V] probabilities the mass is measured in (their logarithms with ``log=True``).
        mass: in (0, 1].
    Returns:
        [B, 1] threshold; keep ``scores >= threshold``.
    """
    k = min(start, scores.shape[-1])
    top, idx = scores.topk(k, dim=-1)  # [B, k], descending
    p = _float64(probs.gather(-1, idx), log)
    n_keep = ((p.cumsum(-1) - p) < mass).sum(-1, keepdim=True).clamp_min(1)  # kept prefix length
    cutoff = top.gather(-1, n_keep - 1)
    if k == scores.shape[-1]:
        return cutoff
    more = (n_keep[:, 0] == k).nonzero()[:, 0]  # rows whose kept set may extend past the top k
    if more.numel() == scores.shape[0]:  # every row: no copies of the rows
        return _bucket_cutoff(scores, probs, mass, log)
    if more.numel():
        cutoff = cutoff.index_copy(0, more, _bucket_cutoff(scores[more], probs[more], mass, log))
    return cutoff


def _float64(probs: torch.Tensor, log: bool) -> torch.Tensor:
    """Probabilities in a new float64 tensor, from probabilities or (``log``) from log-probabilities."""
    p = probs.to(torch.float64, copy=True)  # a copy even when float64: the in-place ops below must not reach probs
    return p.exp_() if log else p


def _bucket_cutoff(scores: torch.Tensor, probs: torch.Tensor, mass: float, log: bool = False,
                   n_bins: int = 1024) -> torch.Tensor:
    """``mass_cutoff`` by bucket selection: bin the scores (finest bins at the top score), sum the mass per bin
    with one ``bincount``, find the bin where the cumulative mass reaches ``mass``, and sort only that bin."""
    rows = scores.shape[0]
    finite = torch.isfinite(scores)
    top = scores.amax(-1, keepdim=True)
    low = torch.where(finite, scores, top).amin(-1, keepdim=True)
    scale = n_bins / (top - low).clamp_min(torch.finfo(scores.dtype).tiny)
    # bin 0 holds the highest scores; -inf scores go to the last bin (they carry no mass)
    bins = ((top - scores) * scale).nan_to_num(n_bins - 1, posinf=n_bins - 1).long().clamp_(0, n_bins - 1)
    offsets = torch.arange(rows, device=scores.device)[:, None] * n_bins
    weights = _float64(probs, log).masked_fill_(~finite, 0.0)  # [R, V] float64
    bin_mass = torch.bincount((bins + offsets).view(-1), weights.view(-1), minlength=rows * n_bins).view(rows, n_bins)
    through = bin_mass.cumsum(-1)
    last_nonempty = (n_bins - 1) - (bin_mass.flip(-1) > 0).int().argmax(-1, keepdim=True)
    boundary = torch.minimum((through < mass).sum(-1, keepdim=True), last_nonempty)  # [R, 1]
    above = through.gather(-1, boundary) - bin_mass.gather(-1, boundary)  # mass in the bins before it
    inside = (bins == boundary) & finite
    width = max(int(inside.sum(-1).max()), 1)  # rows with no finite score (a draft proposing nothing): one -inf
    cand, idx = torch.where(inside, scores, NEG_INF).topk(width, dim=-1)
    p = torch.where(torch.isfinite(cand), _float64(probs.gather(-1, idx), log), 0.0)
    before = above + p.cumsum(-1) - p
    n_keep = ((before < mass) & torch.isfinite(cand)).sum(-1, keepdim=True).clamp_min(1)
    return cand.gather(-1, n_keep - 1)


def inverse_cdf(logprobs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw one token per row with probability proportional to exp(logprobs), by inverting the CDF at ``u``.

    Two levels keep it exact and cheap on a 262k vocabulary (see :class:`BlockCDF`). A token of zero probability
    is never returned. The law is exact up to float rounding of the probabilities.

    Args:
        logprobs: [B, V], need not be normalised; every row needs a finite entry.
        u: [B] uniforms in (0, 1), float64.
    Returns:
        [B] int64 token ids.
    """
    return BlockCDF(logprobs).draw(u)[0]


class BlockCDF:
    """The CDF of each row of ``exp(logprobs)`` in two levels, built once and inverted many times.

    Block masses (float32 sums of 512 entries, or of V when smaller, then a float64 cumulative sum over blocks)
    choose a block, and the conditional uniform picks the entry inside it. Building costs one pass over [B, V];
    each draw afterwards costs O(V / 512 + 512) per row. Tokens can be left out, for good with :meth:`remove` (their
    probability becomes 0 and their block's mass is summed again) or for one draw with ``excluded``: an excluded
    token is never returned and the others keep their exact relative probabilities. That is sampling without
    replacement, one uniform per draw (AWRS).

    Args:
        logprobs: [B, V], need not be normalised.

    Example:
        >>> cdf = BlockCDF(torch.log(torch.tensor([[0.5, 0.3, 0.2]])))
        >>> cdf.draw(torch.tensor([0.1], dtype=torch.float64), excluded=torch.tensor([[0]]))
        (tensor([1]), tensor([0.5000], dtype=torch.float64))
        >>> cdf.remove(torch.tensor([0]), torch.tensor([1]))
        >>> cdf.draw(torch.tensor([0.1], dtype=torch.float64))
        (tensor([0]), tensor([0.7000], dtype=torch.float64))
    """

    def __init__(self, logprobs: torch.Tensor):
        rows, vocab = logprobs.shape
        self.width = width = min(_BLOCK, vocab)
        pad = (-vocab) % width
        p = torch.softmax(logprobs, dim=-1)
        if pad:
            p = torch.nn.functional.pad(p, (0, pad))
        self.vocab = vocab
        self.probs = p[:, :vocab]  # [B, V] normalised
        self.blocks = p.view(rows, -1, width)  # [B, nb, width]
        self.block_mass = self.blocks.sum(-1).double()  # [B, nb]; 512-term float32 sums are accurate to ~1e-7
        self._owned = False  # blocks are a view of the softmax until the first remove()

    def restrict(self, allowed: torch.Tensor) -> None:
        """Leave out, in every row, the tokens where ``allowed`` ([V] bool) is False (one pass over [B, V])."""
        pad = self.blocks.shape[1] * self.width - self.vocab
        keep = torch.nn.functional.pad(allowed.to(self.blocks.dtype), (0, pad)).view(1, -1, self.width)
        self.blocks, self._owned = self.blocks * keep, True
        self.block_mass = self.blocks.sum(-1).double()

    def remove(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        """Leave ``tokens[i]`` out of row ``rows[i]``'s distribution for every later draw. [n], [n]"""
        if not self._owned:
            self.blocks, self.block_mass, self._owned = self.blocks.clone(), self.block_mass.clone(), True
        b, j = tokens // self.width, tokens % self.width
        self.blocks[rows, b, j] = 0.0
        self.block_mass[rows, b] = self.blocks[rows, b].sum(-1).double()  # exactly 0 once a block is emptied

    def draw(self, u: torch.Tensor, rows: torch.Tensor | None = None,
             excluded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row drawn from its distribution without the ``excluded`` tokens.

        Args:
            u: [n] uniforms in (0, 1), float64.
            rows: [n] which rows to draw for (default: every row).
            excluded: [n, K] token ids to leave out, -1 for none.
        Returns:
            tokens [n] int64, and the remaining mass [n] float64 (the probability of the tokens not excluded,
            0 when nothing is left: the token is then meaningless).
        """
        blocks, block_mass, width = self.blocks, self.block_mass, self.width
        if rows is not None:
            blocks, block_mass = blocks.index_select(0, rows), block_mass.index_select(0, rows)
        n = blocks.shape[0]
        if excluded is not None and excluded.numel():
            valid = excluded >= 0
            b_ex = torch.where(valid, excluded // width, 0)  # [n, K] the block of each excluded token
            touched = blocks.gather(1, b_ex[:, :, None].expand(-1, -1, width))  # [n, K, 512]
            same = (b_ex[:, :, None] == b_ex[:, None, :]) & valid[:, None, :]  # [n, K, K]: k' lies in k's block
            at = torch.where(same, (excluded % width)[:, None, :], width)  # out-of-block -> a spare column
            cleared = torch.nn.functional.pad(touched, (0, 1)).scatter(-1, at, 0.0)[..., :width]
            spare = block_mass.shape[1]  # -1 entries write to a spare column, dropped after
            block_mass = torch.nn.functional.pad(block_mass, (0, 1)).scatter(
                1, torch.where(valid, b_ex, spare), cleared.sum(-1).double())[:, :spare]
        block_cdf = block_mass.cumsum(-1)
        total = block_cdf[:, -1]
        target = (u.to(block_cdf.dtype) * total)[:, None]  # [n, 1]
        b = inverse_search(block_mass, block_cdf, target)  # [n, 1]
        below = block_cdf.gather(-1, b) - block_mass.gather(-1, b)
        u_in = ((target - below) / block_mass.gather(-1, b)).clamp(0.0, 1.0)  # the conditional uniform
        chosen = blocks.gather(1, b[:, :, None].expand(n, 1, width))[:, 0]  # [n, 512]
        if excluded is not None and excluded.numel():
            here = (excluded >= 0) & (excluded // width == b)
            chosen = torch.nn.functional.pad(chosen, (0, 1)).scatter(
                -1, torch.where(here, excluded % width, width), 0.0)[:, :width]
        inner = chosen.double().cumsum(-1)
        j = inverse_search(chosen, inner, u_in * inner[:, -1:])
        return (b * width + j)[:, 0].clamp_max(self.vocab - 1), total  # clamp: rows with nothing left


def inverse_search(mass: torch.Tensor, cdf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """First index whose cumulative mass exceeds ``target``, never an entry of zero mass (even when rounding puts
    ``target`` at or past the total). [B, n] masses, [B, n] their cumsum, [B, m] targets -> [B, m]"""
    first = torch.searchsorted(cdf, target.contiguous(), right=True).clamp_max(cdf.shape[-1] - 1)
    last_positive = (mass.shape[-1] - 1) - (mass.flip(-1) > 0).int().argmax(-1, keepdim=True)
    return torch.minimum(first, last_positive)


def restricted_draw(logprobs: torch.Tensor, u: torch.Tensor,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row from exp(logprobs) restricted to ``mask`` (default: the whole row), and the log of the
    restricted mass. A row whose mass is 0 has log mass -inf and a meaningless token (drawn from the whole row).

    Args:
        logprobs: [B, V]; u: [B] uniforms, float64; mask: [B, V] bool or None.
    Returns:
        tokens [B] int64, log_mass [B].
    """
    kept = logprobs if mask is None else logprobs.masked_fill(~mask, NEG_INF)
    log_mass = kept.logsumexp(-1)
    tokens = inverse_cdf(torch.where(torch.isfinite(log_mass)[:, None], kept, logprobs), u)
    return tokens, log_mass
