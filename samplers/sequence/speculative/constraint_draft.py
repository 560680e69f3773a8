"""``dc.ConstraintDraft``: draft the tokens a constraint (nearly) dictates: keys, punctuation, enum values, the
rest of a forced literal.

Under a constraint, many positions leave the model no real choice of bytes: after ``{`` in schema-ordered JSON the
key ``"name":"`` must follow, after ``"e`` in an enum the rest of ``engineer"``. There the constraint is a good draft
by itself, if it guesses how the model splits those bytes into tokens. At each node the draft reads the node's
constraint state (:class:`~decoding.samplers.sequence.speculative.constrained.TreeStates`):

- the forced bytes F (``TokenConstraint.forced_bytes``): its candidates are the canonical first token of F (the
  tokenizer's own encoding of F, the split a model sees in training), then the other tokens spelling a prefix of
  F, longest first (``":"`` encodes as one token, but a model may write ``":`` then ``"``);
- where at most ``max_choices`` tokens are allowed (an enum's values), those tokens too, longest first;

with ``q`` decreasing geometrically along that ranking, so a tree puts the canonical split on its main path and the
other splits on side branches (several tokenizations when the split is ambiguous). Tokens with the same bytes
(byte-fallback pieces) count once, as the tokenizer would write them. Elsewhere the ``inner`` drafter proposes
(an ``NGramDraft`` for free text copied from the prompt, a ``ModelDraft``), masked like every draft.

Nothing is forced: the draft is verified like any other, so a split the model would not have written is rejected
with exactly the right probability and the output law is that of ``Masked`` decoding. This differs from
jump-forward decoding (SGLang) and fast-forward tokens (llguidance), which emit the constraint's canonical tokens
without the model's verdict and so change the law whenever the model would have split the bytes otherwise.

Rankings are memoised by (forced bytes, allowed set): one tokenizer call per distinct case in a run.

Example:
    >>> draft = dc.ConstraintDraft(dc.NGramDraft(3))
    >>> spec = dc.Speculative(draft, dc.DynamicTree(budget=16, top_k=3),
    ...                       sampler=dc.Masked(dc.JsonSchema(schema), greedy=True))   # doctest: +SKIP
"""

from __future__ import annotations

import math
import weakref

import torch

from decoding.model import LanguageModel
from decoding.samplers.base import check_int
from decoding.samplers.sequence.speculative.drafter import Drafter, ModelDraft
from decoding.samplers.sequence.speculative.trees import DraftTree

NEG_INF = float("-inf")
DECAY = math.log(4.0)  # log q falls by this much per rank: 0.75, 0.19, 0.05, ... of the mass
_SPELLINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # vocabulary -> {bytes: token}


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
        self._ranked: dict[tuple[bytes, tuple[int, ...]], tuple[list[int], list[float]]] = {}

    def bind(self, lm: LanguageModel) -> "ConstraintDraft":
        bound = ConstraintDraft(self.inner.bind(lm) if self.inner is not None else None, self.max_choices)
        bound._lm = lm
        return bound

    def start(self, prompts, vocab_size, device):
        return None if self.inner is None else self.inner.start(prompts, vocab_size, device)

    def top(self, state, tree: DraftTree, nodes: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        handled, logq, tokens = self._choices(tree, nodes, k)
        if self.inner is not None and bool((~handled & (nodes >= 0)).any()):
            inner_lq, inner_tokens = self.inner.top(state, tree, torch.where(handled, -1, nodes), k)
            width = min(k, inner_lq.shape[-1])
            mine = handled[..., None]
            logq[..., :width] = torch.where(mine, logq[..., :width], inner_lq[..., :width])
            tokens[..., :width] = torch.where(mine, tokens[..., :width], inner_tokens[..., :width])
        return logq, tokens

    def expand(self, state, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:
        handled, logq, tokens = self._choices(tree, nodes, None)
        if self.inner is not None:
            out = self.inner.expand(state, tree, torch.where(handled, -1, nodes)).clone()
        else:
            out = torch.full((*nodes.shape, self._lm.vocab_size), NEG_INF, device=nodes.device)
        mine = torch.full_like(out, NEG_INF).scatter_reduce(-1, tokens.clamp_min(0), logq, "amax")
        return torch.where(handled[..., None], mine, out)

    def extend(self, state, tree, accepted, final) -> None:
        if self.inner is not None:
            self.inner.extend(state, tree, accepted, final)

    def select(self, state, rows: torch.Tensor):
        return None if self.inner is None else self.inner.select(state, rows)

    def _choices(self, tree: DraftTree, nodes: torch.Tensor, k: int | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which nodes the constraint drafts ([B, F] bool), and their ranked tokens (the best ``k``; None: all)
        and log q ([B, F, K], -1 / -inf padded). Worked out once per distinct state, gathered for the nodes."""
        if tree.constraint is None:
            raise ValueError("ConstraintDraft drafts from a constraint's states: end Speculative's sampler with "
                             "dc.Masked(constraint)")
        states = tree.constraint
        index = states.index(nodes)
        distinct = torch.unique(index[index >= 0])
        found = [self._state_choices(states, i) for i in distinct.tolist()]  # host work per distinct state
        width = max([len(ids) for ids, _ in found], default=0) if k is None else k
        table_tokens = torch.full((len(found) + 1, max(width, 1)), -1, dtype=torch.long)
        table_logq = torch.full((len(found) + 1, max(width, 1)), NEG_INF)
        for j, (ids, lq) in enumerate(found):
            n = min(len(ids), width)
            table_tokens[j, :n], table_logq[j, :n] = torch.tensor(ids[:n]), torch.tensor(lq[:n])
        row = torch.full_like(index, len(found))  # the last table row drafts nothing
        row[index >= 0] = torch.searchsorted(distinct, index[index >= 0])
        tokens, logq = table_tokens[row].to(nodes.device), table_logq[row].to(nodes.device)
        return tokens[..., 0] >= 0, logq, tokens

    def _state_choices(self, states, i: int) -> tuple[list[int], list[float]]:
        """The ranked allowed tokens the constraint drafts in pool state ``i`` (none: the inner drafter's turn)."""
        forced = states.constraint.forced_bytes(states.pool[i])
        narrow = 0 < states.count_of(i) <= self.max_choices
        mask = states.mask_of(i)
        allowed = tuple(mask.nonzero()[:, 0].tolist()) if narrow else ()
        if not (forced or allowed):
            return [], []
        ids, lq = self._rank(forced, allowed)
        keep = mask[torch.tensor(ids, dtype=torch.long, device=mask.device)].tolist() if ids else []
        ids = [t for t, ok in zip(ids, keep) if ok]
        return ids, lq[: len(ids)]

    def _rank(self, forced: bytes, allowed: tuple[int, ...]) -> tuple[list[int], list[float]]:
        """The draft's tokens in order (see the module docstring) and their log q."""
        key = (forced, allowed)
        ranked = self._ranked.get(key)
        if ranked is None:
            order = list(dict.fromkeys(self._splits(forced) + self._longest_first(allowed)))
            log_mass = math.log(sum(math.exp(-DECAY * i) for i in range(len(order)))) if order else 0.0
            ranked = self._ranked[key] = (order, [-DECAY * i - log_mass for i in range(len(order))])
        return ranked

    def _splits(self, forced: bytes) -> list[int]:
        """The canonical first token of ``forced``, then every token spelling a prefix of it, longest first."""
        if not forced or self._lm.tokenizer is None:
            return []
        out = []
        try:
            encoded = self._lm.tokenizer(forced.decode("utf-8"), add_special_tokens=False)["input_ids"]
            out += encoded[:1]
        except UnicodeDecodeError:  # F ends inside a character: only the prefix tokens
            pass
        spell = self._spellings()
        out += [spell[forced[:n]] for n in range(len(forced), 0, -1) if forced[:n] in spell]
        return out

    def _longest_first(self, ids: tuple[int, ...]) -> list[int]:
        """Allowed tokens, longest first (ties to the lower id), one per spelling."""
        if self._lm.tokenizer is None:
            return list(ids)
        pieces, spell = self._lm.vocabulary.token_bytes, self._spellings()
        return [spell.get(pieces[t], t) for t in sorted(ids, key=lambda t: (-len(pieces[t]), t))]

    def _spellings(self) -> dict[bytes, int]:
        """bytes -> the token the tokenizer writes for them (one per spelling; byte-fallback pieces only where
        nothing else spells the byte). Built once per vocabulary."""
        vocab = self._lm.vocabulary
        spell = _SPELLINGS.get(vocab)
        if spell is None:
            by_bytes: dict[bytes, list[int]] = {}
            for t, piece in enumerate(vocab.token_bytes):  # once per vocabulary
                if piece and not vocab.is_special[t]:
                    by_bytes.setdefault(piece, []).append(t)
            spell = _SPELLINGS[vocab] = {b: ids[0] if len(ids) == 1 else self._preferred(b, ids)
                                         for b, ids in by_bytes.items()}
        return spell

    def _preferred(self, piece: bytes, ids: list[int]) -> int:
        """Of several tokens with the same bytes, the one the tokenizer writes (else the highest id: byte-fallback
        pieces come first in SentencePiece vocabularies)."""
        try:
            encoded = self._lm.tokenizer(piece.decode("utf-8"), add_special_tokens=False)["input_ids"]
        except UnicodeDecodeError:
            return max(ids)
        return encoded[0] if len(encoded) == 1 and encoded[0] in ids else max(ids)

    def __repr__(self) -> str:
        return f"ConstraintDraft({self.inner!r}, max_choices={self.max_choices})"
