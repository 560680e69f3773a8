"""Top-H: entropy-bounded truncation (Baghaei et al., "Top-H Decoding: Adapting the Creativity and Coherence
with Bounded Entropy in Text Generation", NeurIPS 2025, arXiv:2509.02510).

Two rules, because the public code and the paper's wording disagree (see ALGORITHMS.md):

- ``rule="reference"`` (the authors' code and transformers' ``TopHLogitsWarper``): over the top-N tokens,
  q = softmax of their log-probs, tau = alpha * H(q), and token k (in descending order) is kept while the
  *partial* entropy sum_{i<=k} -q_i log q_i stays <= tau. The top token is always kept.
- ``rule="paper"``: keep the longest prefix (in descending order, within the top-N) whose *renormalised*
  entropy H(p_1..k / sum p_1..k) stays <= alpha * H(p), H(p) over the full distribution; greedy, so the prefix
  ends at the first token that would break the bound. It keeps several times more tokens than the reference rule.

Both are computed on [B, top_n] tensors with cumulative sums: no loop over rows or over k.
"""

from __future__ import annotations

import torch

from decoding.kernels.sampling import NEG_INF, entropy, keep_listed
from decoding.samplers.base import TokenSampler, check_fraction, check_int

RULES = ("reference", "paper")


class TopH(TokenSampler):
    """Keep a top set whose entropy is bounded by ``alpha`` times an entropy of the distribution; renormalise.

    Args:
        alpha: in (0, 1]; smaller keeps fewer tokens. 1 keeps all of the top-N under the reference rule.
        top_n: >= 1 candidates considered (the reference code's cap, 100).
        rule: "reference" (partial-entropy prefix, as transformers) or "paper" (renormalised-entropy prefix).

    Example:
        >>> import torch
        >>> lp = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
        >>> TopH(0.9).transform(lp, None).exp()
        tensor([[0.6667, 0.3333, 0.0000]])
    """

    def __init__(self, alpha: float = 0.4, top_n: int = 100, rule: str = "reference"):
        check_int("top_n", top_n, 1)
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.alpha, self.top_n, self.rule = check_fraction("alpha", alpha), top_n, rule

    def transform(self, logprobs, state):
        top, idx = logprobs.topk(min(self.top_n, logprobs.shape[-1]), dim=-1)  # [B, N] descending
        kept = self._reference(top) if self.rule == "reference" else self._paper(top, logprobs)
        kept[:, 0] = True
        kept &= top > NEG_INF
        return keep_listed(logprobs, top, idx, kept)

    def _reference(self, top: torch.Tensor) -> torch.Tensor:
        q_log = torch.log_softmax(top, dim=-1)
        terms = torch.special.entr(q_log.exp())  # -q log q, 0 where q = 0
        partial = terms.cumsum(-1)
        tau = self.alpha * partial[:, -1:]  # H(q) as the last partial sum: alpha = 1 keeps all N exactly
        return partial <= tau

    def _paper(self, top: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
        p = top.double().exp()
        mass = p.cumsum(-1)
        plogp = (-torch.special.entr(p)).cumsum(-1)  # sum p log p over the prefix
        prefix_entropy = mass.log() - plogp / mass  # entropy of the renormalised prefix
        bound = self.alpha * entropy(logprobs).double()[:, None]
        broken = (prefix_entropy > bound + 1e-12).cumsum(-1) > 0  # greedy: stop at the first violation
        return ~broken
