"""Drafters: where draft distributions come from. A drafter answers "what is q after this node of the tree?".

Protocol (all batched over the B live rows; ``state`` is the drafter's own):

- ``bind(lm)``: check the drafter fits the target (same vocabulary) and return it ready; called before any
  model work.
- ``start(contexts, vocab_size, device) -> state``: each row's prompt and first emitted token (the first root).
- ``expand(state, tree, nodes) -> logq [B, F, V]``: the raw draft log-probabilities after each node of ``nodes``
  ([B, F] node indices of ``tree``, -1 for none). The first call of a round asks for the root (node 0); later
  calls ask for nodes whose parents were expanded before. A row of -inf proposes nothing (the node gets no
  children). ``top(state, tree, nodes, k)`` is the same question for the k best tokens only (sparse), and
  ``chain(state, tree, depth)`` the whole argmax path below the root at once (None: no fast path).
- ``extend(state, tree, accepted, final)``: the round's outcome, the accepted draft nodes ([B, m], path order,
  -1 padded) then the token the target emitted after them ([B]).
- ``select(state, rows) -> state``: keep these rows (finished rows leave).

:class:`ModelDraft` runs any HF causal LM that shares the target's vocabulary, feeding each round's tree with
one draft forward per expansion (``KVBatch.tree_step``) and keeping the accepted path's cache entries.
``dc.NGramDraft`` (``ngram.py``) looks continuations up in the context. :func:`vocab_trim` picks the tokens a
trimmed draft head keeps (VocabTrim: Goel et al., 2025).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from decoding.model import KVBatch, LanguageModel
from decoding.samplers.sequence.speculative.trees import DraftTree

UNFED = -2  # draft_slot of a tree node the draft model has not seen


class Drafter:
    """Base of the drafters (see the module docstring for the protocol)."""

    def bind(self, lm: LanguageModel) -> "Drafter":
        return self

    def start(self, prompts: Sequence[Sequence[int]], vocab_size: int, device: torch.device):
        raise NotImplementedError

    def expand(self, state, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def top(self, state, tree: DraftTree, nodes: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most probable next tokens after each node: (log q [B, F, k], tokens [B, F, k]); tokens of
        zero probability are -1. Deterministic tree shapes need only this (a sparse drafter skips the V table)."""
        logq, tokens = self.expand(state, tree, nodes).topk(k, dim=-1)
        return logq, torch.where(torch.isfinite(logq), tokens, -1)

    def chain(self, state, tree: DraftTree, depth: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The draft's argmax path below the root (tree holding only its roots) in one call: (log q [B, depth],
        tokens [B, depth], -1 after the path ends), or None when the drafter has no faster way than ``depth``
        calls of :meth:`top` (a model draft needs the tree's nodes for its cache)."""
        return None

    def extend(self, state, tree: DraftTree, accepted: torch.Tensor, final: torch.Tensor) -> None:
        raise NotImplementedError

    def select(self, state, rows: torch.Tensor):
        raise NotImplementedError


@dataclass
class _ModelState:
    batch: KVBatch
    tail: torch.Tensor  # [B, T] emitted tokens the draft has not seen (the last one is the next root), 0 padded
    tail_len: torch.Tensor  # [B]
    fed: int = 0  # tree slots fed this round


class ModelDraft(Drafter):
    """A smaller causal LM as the draft. It must share the target's tokenizer.

    Args:
        lm: the draft model (``dc.load("path")`` or ``dc.LanguageModel(model, tokenizer)``).
        keep_tokens: VocabTrim: token ids the draft's LM head keeps (see :func:`vocab_trim`); the draft then puts
            no mass elsewhere. Lossless either way (verification corrects), cheaper drafting on big vocabularies.

    Example:
        >>> spec = dc.Speculative(draft=dc.load("small-model"), tree=dc.Chain(4))      # doctest: +SKIP
    """

    def __init__(self, lm: LanguageModel, keep_tokens: torch.Tensor | Sequence[int] | None = None):
        if not isinstance(lm, LanguageModel):
            raise TypeError(f"lm: expected a decoding.LanguageModel, got {type(lm).__name__}")
        self.lm = lm
        self.keep_tokens = None if keep_tokens is None else torch.as_tensor(list(keep_tokens), dtype=torch.long)
        self._head_lm = lm if self.keep_tokens is None else _trimmed(lm, self.keep_tokens)

    def bind(self, lm: LanguageModel) -> "ModelDraft":
        lm.check_same_vocabulary(self.lm, "draft")
        return self

    def start(self, prompts, vocab_size, device):
        for i, p in enumerate(prompts):
            if len(p) < 2:
                raise ValueError(f"prompts[{i}]: a draft starts from the prompt and the first emitted token")
        batch = self._head_lm.start([list(p)[:-1] for p in prompts])
        tail = torch.tensor([[p[-1]] for p in prompts], device=self._head_lm.device)
        self.vocab_size, self.device = vocab_size, device
        return _ModelState(batch, tail, torch.ones(len(prompts), dtype=torch.long, device=tail.device))

    def expand(self, state: _ModelState, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:
        if tree.size == 1 or "draft_slot" not in tree.data:
            return self._expand_root(state, tree, nodes)
        dev = state.batch.attention_mask.device
        nodes = nodes.to(dev)
        safe = nodes.clamp_min(0)
        slots = tree.data["draft_slot"].to(dev)
        parent_slot = slots.gather(1, tree.parent.to(dev).gather(1, safe).clamp_min(0))  # -1 nodes: not fed
        out = state.batch.tree_step(tree.tokens.to(dev).gather(1, safe), parent_slot, valid=nodes >= 0)
        new = state.fed + torch.arange(nodes.shape[1], device=dev).expand_as(nodes)
        tree.data["draft_slot"] = slots.scatter(1, safe, torch.where(nodes >= 0, new, slots.gather(1, safe)))
        state.fed += nodes.shape[1]
        return self._full(out)

    def _expand_root(self, state: _ModelState, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:
        """Feed the emitted tokens the draft has not seen (the root last) and keep them; q after the root."""
        b, dev = tree.batch_size, state.batch.attention_mask.device
        width = max(int(state.tail_len.max()), 1)
        tail, n = state.tail[:, :width], state.tail_len
        have = torch.arange(width, device=dev) < n[:, None]
        chain = torch.arange(-1, width - 1, device=dev).expand(b, width)
        out = state.batch.tree_step(tail, chain, valid=have, lazy_head=True)  # only the root's row of the head
        state.batch.commit(torch.where(have, torch.arange(width, device=dev), -1))
        state.fed = 0
        last = out.at(torch.arange(b, device=dev), (n - 1)[:, None])[:, 0]
        tree.data["draft_slot"] = torch.full((b, tree.tokens.shape[1]), UNFED, dtype=torch.long, device=dev)
        tree.data["draft_slot"][:, 0] = -1  # the root is in the draft's context now
        return self._full(last[:, None])

    def _full(self, logq: torch.Tensor) -> torch.Tensor:
        """Draft log-probs on the target's device and vocabulary (a trimmed head's tokens scattered back)."""
        logq = logq.to(self.device)
        if self.keep_tokens is None:
            if logq.shape[-1] == self.vocab_size:
                return logq
            pad = torch.full((*logq.shape[:-1], self.vocab_size - logq.shape[-1]), float("-inf"), device=self.device)
            return torch.cat([logq, pad], -1)[..., : self.vocab_size]
        full = torch.full((*logq.shape[:-1], self.vocab_size), float("-inf"), device=self.device)
        index = self.keep_tokens.to(self.device).expand(*logq.shape[:-1], -1)
        return full.scatter(-1, index, logq[..., : index.shape[-1]])

    def extend(self, state: _ModelState, tree: DraftTree, accepted: torch.Tensor, final: torch.Tensor) -> None:
        dev = state.batch.attention_mask.device
        accepted, final = accepted.to(dev), final.to(dev)
        slot = tree.data["draft_slot"].to(dev).gather(1, accepted.clamp_min(0))
        fed = (accepted >= 0) & (slot >= 0)
        if state.batch.tree_pending:
            state.batch.commit(torch.where(fed, slot, -1))
        unseen = (accepted >= 0) & ~fed  # accepted leaves the draft never expanded: fed next round
        tokens = torch.cat([tree.tokens.to(dev).gather(1, accepted.clamp_min(0)), final[:, None]], 1)
        have = torch.cat([unseen, torch.ones_like(final[:, None], dtype=torch.bool)], 1)
        order = torch.sort((~have).long(), dim=1, stable=True).indices
        state.tail = torch.where(have.gather(1, order), tokens.gather(1, order), 0)
        state.tail_len = have.sum(1)

    def select(self, state: _ModelState, rows: torch.Tensor) -> _ModelState:
        rows = rows.to(state.tail.device)
        state.batch.reorder(rows)
        return _ModelState(state.batch, state.tail[rows], state.tail_len[rows], state.fed)

    def __repr__(self) -> str:
        trim = "" if self.keep_tokens is None else f", keep_tokens=<{len(self.keep_tokens)} ids>"
        return f"ModelDraft({self.lm!r}{trim})"


def shared_copy(module: torch.nn.Module, children: dict[str, torch.nn.Module]) -> torch.nn.Module:
    """A copy of ``module`` that shares its parameters and submodules, with some children replaced (a trimmed
    head, a shorter layer list); the original is untouched."""
    out = copy.copy(module)
    out._modules = {**module._modules, **children}
    return out


def _trimmed(lm: LanguageModel, keep: torch.Tensor) -> LanguageModel:
    """The draft with an LM head of only the ``keep`` rows (the body's weights are shared, not copied)."""
    model = shared_copy(lm.model, {})
    head = lm.model.get_output_embeddings()
    small = torch.nn.Linear(head.weight.shape[1], len(keep), bias=head.bias is not None,
                            device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        small.weight.copy_(_whole(head.weight)[keep.to(head.weight.device)])
        if head.bias is not None:
            small.bias.copy_(_whole(head.bias)[keep.to(head.weight.device)])
    model.set_output_embeddings(small)
    return LanguageModel(model, None, eos_token_ids=lm.eos_token_ids)


def _whole(param: torch.Tensor) -> torch.Tensor:
    """The full tensor of a parameter: a tensor-parallel model's sharded DTensor (``tp_plan="auto"``) gathered
    from every rank (a collective: every rank builds the draft), any other parameter as it is."""
    return param.full_tensor() if hasattr(param, "full_tensor") else param


def vocab_trim(lm: LanguageModel, texts: Sequence[str], size: int) -> torch.Tensor:
    """The ``size`` most frequent token ids of ``lm``'s tokenisation of ``texts`` (target-generated text, ideally),
    EOS ids always included: the rows a trimmed draft head keeps (``ModelDraft(draft, keep_tokens=...)``).

    Example:
        >>> keep = vocab_trim(target, [o.text for o in dc.generate(target, prompts)], 32768)   # doctest: +SKIP
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    counts = torch.zeros(lm.vocab_size, dtype=torch.long)
    for text in texts:  # tokenisation is host work, once
        ids = torch.as_tensor(lm.encode(text), dtype=torch.long)
        counts.index_add_(0, ids, torch.ones_like(ids))
    counts[list(lm.eos_token_ids)] = counts.max() + 1
    keep = counts.topk(min(size, lm.vocab_size)).indices
    return keep.sort().values
