"""Per-sequence counter-based random streams.

Every sequence (row) of a batch owns a stream of uniforms, a pure function of its seed and of how many numbers
it has drawn (splitmix64, Steele et al., "Fast splittable pseudorandom number generators", OOPSLA 2014).
Consequences the samplers rely on:

- same seed, same output, on any device: the numbers are made on the CPU and copied to the logits' device;
- a row's draws do not depend on its neighbours, so a row decoded in a batch equals the row decoded alone
  with the same seed, and dropping finished rows from a batch changes nothing for the others;
- drawing costs one 64-bit mix per row, not one per vocabulary entry: samplers draw by inverse CDF
  (``kernels.sampling.inverse_cdf``) with one uniform per row.

Nothing reads global random state. Tests inject their own numbers with :class:`FixedUniforms`.

Example:
    >>> rng = RowStreams.from_seed(0, batch_size=2)
    >>> u = rng.uniform()          # tensor([u_0, u_1], dtype=torch.float64), each in (0, 1)
    >>> rng.select([1]).uniform().shape
    torch.Size([1])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 with good avalanche (wrap-around arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def row_keys(seed: int | Sequence[int], batch_size: int) -> np.ndarray:
    """One 64-bit key per row.

    An int seeds row ``i`` with ``(seed, i)``; a sequence gives each row its own seed (row ``i`` is keyed by
    ``(seed[i], 0)``), so a row decoded alone with ``seed=[s]`` draws what it drew in a batch with ``s`` at its place.
    """
    if isinstance(seed, (int, np.integer)):
        seeds = np.full(batch_size, int(seed) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
        slots = np.arange(batch_size, dtype=np.uint64)
    else:
        if len(seed) != batch_size:
            raise ValueError(f"seed: got {len(seed)} seeds for {batch_size} sequences; pass one int or one per prompt")
        seeds = np.array([int(s) & 0xFFFFFFFFFFFFFFFF for s in seed], dtype=np.uint64)
        slots = np.zeros(batch_size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix64(_mix64(seeds + _GOLDEN) ^ (slots * _GOLDEN + np.uint64(1)))


class RowStreams:
    """Independent uniform streams, one per row; ``uniform()`` advances every row's counter by the numbers drawn."""

    def __init__(self, keys: np.ndarray, counters: np.ndarray | None = None):
        self.keys = np.asarray(keys, dtype=np.uint64)
        self.counters = np.zeros_like(self.keys) if counters is None else np.asarray(counters, dtype=np.uint64)

    @classmethod
    def from_seed(cls, seed: int | Sequence[int], batch_size: int) -> "RowStreams":
        return cls(row_keys(seed, batch_size))

    @classmethod
    def grouped(cls, seed: int | Sequence[int], groups: int, size: int) -> "RowStreams":
        """Streams for ``groups`` x ``size`` rows (the particles of SMC, the proposals of SIR): row j of group i
        draws from stream (seed, i * size + j), or (seed[i], j) with one seed per group, so a prompt's rows draw
        the same alone and in a batch of prompts seeded per prompt."""
        if isinstance(seed, (int, np.integer)):
            return cls.from_seed(int(seed), groups * size)
        return cls(np.concatenate([row_keys(int(s), size) for s in seed]))

    @classmethod
    def tagged(cls, seed: int | Sequence[int], size: int, tag: int) -> "RowStreams":
        """``size`` streams keyed apart from ``from_seed(seed, size)`` by ``tag``: a second family of streams per
        prompt (the resampling draws of SMC and SIR, apart from their particles' token draws)."""
        return cls(row_keys(seed, size) ^ np.uint64(tag))

    def __len__(self) -> int:
        return len(self.keys)

    def uniform(self, n: int | None = None, device: torch.device | str = "cpu",
                rows: np.ndarray | None = None) -> torch.Tensor:
        """Uniforms in the open interval (0, 1), float64: shape [B] (n is None) or [B, n].

        ``rows`` (int indices) draws for those rows only and advances only their counters: a row's numbers then
        depend on how many it has drawn itself, never on how many rounds its neighbours needed (AWRS, SMC).
        """
        width = 1 if n is None else n
        rows = np.arange(len(self.keys)) if rows is None else np.asarray(rows, dtype=np.int64)
        steps = np.arange(width, dtype=np.uint64)
        with np.errstate(over="ignore"):
            x = _mix64(self.keys[rows, None] + (self.counters[rows, None] + steps[None, :] + np.uint64(1)) * _GOLDEN)
            self.counters = self.counters.copy()
            self.counters[rows] += np.uint64(width)
        u = ((x >> np.uint64(12)).astype(np.float64) + 0.5) * (1.0 / 2**52)  # 52 bits: max 1 - 2**-53 < 1
        out = torch.from_numpy(u).to(device)
        return out[:, 0] if n is None else out

    def select(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> "RowStreams":
        """The streams of the given rows, in that order (their counters come along)."""
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        return RowStreams(self.keys[idx], self.counters[idx])


class FixedUniforms(RowStreams):
    """Injected randomness for tests: ``uniform()`` returns the given numbers in order.

    Example:
        >>> rng = FixedUniforms(torch.tensor([[0.1], [0.9]]))   # 2 rows, 1 draw each
        >>> rng.uniform()
        tensor([0.1000, 0.9000], dtype=torch.float64)
    """

    def __init__(self, values: torch.Tensor):
        values = torch.as_tensor(values, dtype=torch.float64)
        super().__init__(np.zeros(values.shape[0], dtype=np.uint64))
        self.values = values
        self.used = np.zeros(values.shape[0], dtype=np.int64)  # numbers taken by each row

    def uniform(self, n: int | None = None, device: torch.device | str = "cpu",
                rows: np.ndarray | None = None) -> torch.Tensor:
        width = 1 if n is None else n
        rows = np.arange(len(self.used)) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(rows) and int(self.used[rows].max()) + width > self.values.shape[1]:
            raise IndexError("FixedUniforms ran out of numbers")
        cols = torch.from_numpy(self.used[rows, None] + np.arange(width)[None, :])
        out = self.values[torch.from_numpy(rows)[:, None], cols].to(device)
        self.used = self.used.copy()
        self.used[rows] += width
        return out[:, 0] if n is None else out

    def select(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> "FixedUniforms":
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        picked = FixedUniforms(self.values[torch.from_numpy(idx)])
        picked.used = self.used[idx]
        return picked
