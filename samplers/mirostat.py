"""Mirostat: perplexity-controlled sampling by feedback on the observed surprise (Basu et al., "Mirostat: A Neural
Text Decoding Algorithm that Directly Controls Perplexity", ICLR 2021).

Each sequence keeps a threshold ``mu`` (initially 2 tau). Each step truncates the distribution using mu, a token
is drawn from the renormalised rest, and mu moves against the error of the observed surprise S (in bits):
mu <- mu - eta (S - tau)  (Algorithm 1).

- version 1 (Algorithm 1): estimate the Zipf exponent s from the top m probabilities (eq. 30),
  s_hat = sum t_i b_i / sum t_i^2 with t_i = ln((i+1)/i), b_i = ln(p_i / p_{i+1}); then keep the top
  k = ((eps 2^mu) / (1 - N^-eps))^(1/s_hat) tokens, eps = s_hat - 1, N the vocabulary size.
- version 2 (Algorithm 2 of the appendix, as in llama.cpp): keep the tokens whose surprise -log2 p is <= mu (at
  least the top one).

The surprise S of the emitted token is measured on the distribution mirostat received (``surprise="reference"``,
the authors' code) or on the renormalised truncation it drew from (``surprise="truncated"``, llama.cpp).

mu changes only in ``accept``, with the token actually emitted: under rejection sampling, SMC resampling or
speculative rollback, nothing is committed for a discarded token (llama.cpp updates mu inside its apply step).
"""

from __future__ import annotations

import math

import torch

from decoding.kernels.sampling import keep
from decoding.samplers.base import TokenSampler, check_int

LN2 = math.log(2.0)
SURPRISES = ("reference", "truncated")


class Mirostat(TokenSampler):
    """Truncation steered so the average surprise of the output tracks ``tau`` bits; per-row state ``mu`` [B].

    Args:
        tau: target surprise in bits, > 0 (reference default 3; llama.cpp 5).
        eta: learning rate, > 0 (reference default 1; llama.cpp 0.1).
        version: 1 (Zipf-estimated top-k) or 2 (surprise threshold).
        m: number of top probabilities for the Zipf estimate (version 1), >= 2.
        surprise: "reference" (S on the received distribution) or "truncated" (S on the renormalised truncation).

    Example:
        >>> import torch
        >>> sampler = Mirostat(tau=3.0, eta=0.1, version=2)
        >>> mu = sampler.init_state(1)                       # tensor([6.], dtype=torch.float64)
        >>> out = sampler.sample(torch.log_softmax(torch.randn(1, 50), -1), mu)
        >>> out.state.shape                                  # mu after the emitted token
        torch.Size([1])
    """

    stateful = True

    def __init__(self, tau: float = 3.0, eta: float = 0.1, version: int = 2, m: int = 100,
                 surprise: str = "reference"):
        if not isinstance(tau, (int, float)) or not 0 < tau < float("inf"):
            raise ValueError(f"tau must be a finite number > 0 (bits), got {tau!r}")
        if not isinstance(eta, (int, float)) or not 0 < eta < float("inf"):
            raise ValueError(f"eta must be a finite number > 0, got {eta!r}")
        if version not in (1, 2) or isinstance(version, bool):
            raise ValueError(f"version must be 1 or 2, got {version!r}")
        check_int("m", m, 2)
        if surprise not in SURPRISES:
            raise ValueError(f"surprise must be one of {SURPRISES}, got {surprise!r}")
        self.tau, self.eta, self.version, self.m, self.surprise = float(tau), float(eta), version, m, surprise

    def init_state(self, batch_size, device="cpu"):
        return torch.full((batch_size,), 2.0 * self.tau, dtype=torch.float64, device=device)

    def transform(self, logprobs, state):
        mu = self._mu(state, logprobs)
        if self.version == 2:
            kept = logprobs >= (-mu * LN2).to(logprobs.dtype)[:, None]
            kept |= logprobs >= logprobs.amax(-1, keepdim=True)
            return keep(logprobs, kept)
        k = self.top_k(logprobs, mu)  # [B]
        top = logprobs.topk(int(k.max()), dim=-1).values
        kth = top.gather(-1, (k - 1)[:, None])
        return keep(logprobs, logprobs >= kth)

    def top_k(self, logprobs: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """Version 1's k per row (eqs. 30 and 31 of the paper), clamped to [1, V]. [B, V], [B] -> [B] int64"""
        vocab = logprobs.shape[-1]
        top = logprobs.topk(min(self.m, vocab), dim=-1).values.double()  # [B, m] descending
        i = torch.arange(1, top.shape[-1], dtype=torch.float64, device=top.device)
        t = torch.log((i + 1) / i)  # t_i = ln((i+1)/i), i = 1..m-1
        b = top[:, :-1] - top[:, 1:]  # b_i = ln(p_i / p_{i+1})
        valid = torch.isfinite(b)  # pairs past the support carry no information about s
        s_hat = (torch.where(valid, t * b, 0.0).sum(-1) / torch.where(valid, t * t, 0.0).sum(-1).clamp_min(1e-12))
        s_hat = s_hat.clamp_min(1e-6)
        eps = s_hat - 1.0
        log_n = math.log(vocab)
        # eps / (1 - N^-eps), continuous at eps = 0 where it is 1 / ln N
        small = eps.abs() < 1e-9
        one_minus = -torch.expm1(-eps * log_n)  # 1 - N^-eps
        ratio = torch.where(small, 1.0 / log_n, eps / torch.where(small, 1.0, one_minus))
        log_k = (ratio.log() + mu * LN2) / s_hat
        k = torch.exp(log_k.clamp(max=math.log(vocab) + 1.0)).round()
        return k.clamp(1, vocab).long()

    def accept(self, state, tokens, logprobs):
        mu = self._mu(state, logprobs)
        dist = logprobs if self.surprise == "reference" else self.transform(logprobs, mu)
        surprise = -dist.gather(-1, tokens[:, None])[:, 0].double() / LN2
        return mu - self.eta * (surprise - self.tau)

    def _mu(self, state, logprobs: torch.Tensor) -> torch.Tensor:
        if state is None:
            return self.init_state(logprobs.shape[0], logprobs.device)
        return state.to(logprobs.device)
