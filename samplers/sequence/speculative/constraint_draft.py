"""``dc.ConstraintDraft``: draft the tokens a constraint (nearly) dictates: keys, punctuation, enum values, the
rest of a forced literal.

Under a constraint, many positions leave the model a handful of allowed tokens: after ``{`` in schema-ordered JSON
only the pieces of ``"name":`` may follow, inside an enum only the pieces of its values. There the constraint
is a good draft by itself, if it guesses how the model splits those bytes into tokens. At a node whose allowed set
(the constraint's mask, :class:`~decoding.samplers.sequence.speculative.constrained.TreeStates`) holds at most
``max_choices`` tokens, the draft ranks them:

1. the canonical first token of the longest allowed piece: the tokenizer's own encoding of its text, the split
   a model sees in training (``"name":`` encodes as ``"`` ``name`` ``":``, and models write it that way);
2. then the other allowed tokens, longest first (an enum's values, other splits), ties to the lower id;

with ``q`` decreasing geometrically along that ranking, so a tree puts the canonical split on its main path and the
other splits on side branches (several tokenizations when the split is ambiguous). Elsewhere the ``inner`` drafter
proposes (an ``NGramDraft`` for free text copied from the prompt, a ``ModelDraft``), masked like every draft.

Nothing is forced: the draft is verified like any other, so a split the model would not have written is rejected
with exactly the right probability and the output law is that of ``Masked`` decoding. This differs from
jump-forward decoding (SGLang) and fast-forward tokens (llguidance), which emit the constraint's canonical tokens
without the model's verdict and so change the law whenever the model would have split the bytes otherwise.

Rankings are memoised by allowed set (one tokenizer call per distinct set in a run).

Example:
    >>> draft = dc.ConstraintDraft(dc.NGramDraft(3))
    >>> spec = dc.Speculative(draft, dc.DynamicTree(budget=16, top_k=3),
    ...                       sampler=dc.Masked(dc.JsonSchema(schema), greedy=True))   # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch

from decoding.model import LanguageModel
from decoding.samplers.base import check_int
from decoding.samplers.sequence.speculative.drafter import Drafter, ModelDraft
from decoding.samplers.sequence.speculative.trees import DraftTree

NEG_INF = float("-inf")
DECAY = math.log(4.0)  # log q falls by this much per rank: 0.75, 0.19, 0.05, ... of the mass


class ConstraintDraft(Drafter):
    """Draft the allowed tokens where a constraint leaves few of them; elsewhere ask ``inner``.

    Args:
        inner: the drafter for the rest (``dc.NGramDraft(3)``, a ``ModelDraft`` or a ``LanguageModel``), or None
            (no proposal where the constraint leaves many tokens).
        max_choices: the most allowed tokens a node may have for the constraint to draft there (>= 1).

    Example:
        >>> dc.ConstraintDraft(dc.NGramDraft(3), max_choices=16)
        ConstraintDraft(NGramDraft(n=3, max_followers=None, min_n=1), max_choices=16)
    """

    needs_constraint = True  # Speculative refuses it without Masked(constraint) in its sampler

    def __init__(self, inner: Drafter | LanguageModel | None = None, max_choices: int = 16):
        inner = ModelDraft(inner) if isinstance(inner, LanguageModel) else inner
        if inner is not None and not isinstance(inner, Drafter):
            raise TypeError(f"inner: expected a drafter (dc.NGramDraft, dc.ModelDraft), a dc.LanguageModel or None, "
                            f"got {type(inner).__name__}")
        self.inner = inner
        self.max_choices = check_int("max_choices", max_choices, 1)
        self._lm: LanguageModel | None = None
        self._ranked: dict[tuple[int, ...], tuple[list[int], list[float]]] = {}

    def bind(self, lm: LanguageModel) -> "ConstraintDraft":
        bound = ConstraintDraft(self.inner.bind(lm) if self.inner is not None else None, self.max_choices)
        bound._lm = lm
        return bound

    def start(self, prompts, vocab_size, device):
        return None if self.inner is None else self.inner.start(prompts, vocab_size, device)

    def top(self, state, tree: DraftTree, nodes: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        narrow, choices = self._choices(tree, nodes)
        b, f = nodes.shape
        logq = torch.full((b, f, k), NEG_INF, device=nodes.device)
        tokens = torch.full((b, f, k), -1, dtype=torch.long, device=nodes.device)
        if self.inner is not None and bool((~narrow & (nodes >= 0)).any()):
            inner_lq, inner_tokens = self.inner.top(state, tree, torch.where(narrow, -1, nodes), k)
            width = min(k, inner_lq.shape[-1])
            logq[..., :width], tokens[..., :width] = inner_lq[..., :width], inner_tokens[..., :width]
        for (r, c), (ids, lq) in choices.items():  # host work per narrow node, memoised per allowed set
            n = min(k, len(ids))
            tokens[r, c, :n] = torch.tensor(ids[:n], device=nodes.device)
            logq[r, c, :n] = torch.tensor(lq[:n], device=nodes.device)
        return logq, tokens

    def expand(self, state, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:
        narrow, choices = self._choices(tree, nodes)
        if self.inner is not None:
            out = self.inner.expand(state, tree, torch.where(narrow, -1, nodes)).clone()
        else:
            out = torch.full((*nodes.shape, self._lm.vocab_size), NEG_INF, device=nodes.device)
        for (r, c), (ids, lq) in choices.items():
            out[r, c] = NEG_INF
            out[r, c, ids] = torch.tensor(lq, device=out.device, dtype=out.dtype)
        return out

    def extend(self, state, tree, accepted, final) -> None:
        if self.inner is not None:
            self.inner.extend(state, tree, accepted, final)

    def select(self, state, rows: torch.Tensor):
        return None if self.inner is None else self.inner.select(state, rows)

    def _choices(self, tree: DraftTree, nodes: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Which nodes are narrow ([B, F] bool) and, for each, its ranked allowed tokens and their log q."""
        if tree.constraint is None:
            raise ValueError("ConstraintDraft drafts from a constraint's states: end Speculative's sampler with "
                             "dc.Masked(constraint)")
        masks = tree.constraint.masks(nodes)
        counts = masks.sum(-1)
        narrow = (counts > 0) & (counts <= self.max_choices) & (nodes >= 0)
        r, c = narrow.nonzero(as_tuple=True)
        allowed = masks[r, c].nonzero()  # [n, 2] (narrow node, token), grouped by node in order
        per_node = torch.split(allowed[:, 1], counts[r, c].tolist())
        choices = {(i, j): self._rank(tuple(ids.tolist()))
                   for i, j, ids in zip(r.tolist(), c.tolist(), per_node)}
        return narrow.to(nodes.device), choices

    def _rank(self, ids: tuple[int, ...]) -> tuple[list[int], list[float]]:
        """The allowed tokens ``ids`` in draft order (see the module docstring) and their log q."""
        ranked = self._ranked.get(ids)
        if ranked is None:
            if self._lm.tokenizer is None:  # token ids alone: lowest first
                first, length = None, (lambda t: 0)
            else:
                pieces = self._lm.vocabulary.token_bytes
                length = lambda t: len(pieces[t])  # noqa: E731
                first = self._canonical(max(ids, key=lambda t: (length(t), -t)), ids)
            order = sorted(ids, key=lambda t: (t != first, -length(t), t))
            log_mass = math.log(sum(math.exp(-DECAY * i) for i in range(len(order))))
            ranked = self._ranked[ids] = (order, [-DECAY * i - log_mass for i in range(len(order))])
        return ranked

    def _canonical(self, longest: int, ids: tuple[int, ...]) -> int | None:
        """The first token of the tokenizer's encoding of token ``longest``'s text, if it is allowed."""
        try:
            text = self._lm.vocabulary.token_bytes[longest].decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not text:
            return None
        encoded = self._lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        return encoded[0] if encoded and encoded[0] in ids else None

    def __repr__(self) -> str:
        return f"ConstraintDraft({self.inner!r}, max_choices={self.max_choices})"
