"""LanguageModel: batched next-token log-probabilities of a HF causal LM, with a KV cache over ragged batches.

``lm.start(prompts)`` prefills a batch of token-id prompts of different lengths (left-padded, with per-row position
ids, so every row sees exactly what it would see alone) and returns a :class:`KVBatch`, the live decoding state:
``step(tokens)`` feeds one or more tokens per row, ``reorder(indices)`` picks rows (SMC resampling, dropping
finished rows), ``crop(length)`` rolls the cache back. ``tree_step(tokens, parents)`` feeds a draft tree in one
forward (speculative verification: each node sees the context, its ancestors and itself) and ``commit(keep)``
keeps the accepted path's KV entries. Several batches of one model can be live at once (a target and its own
draft, a sampler scoring while another decodes); each counts its forwards and fed tokens in its own :class:`Usage`
(``lm.start(prompts, usage=...)``), the model in its lifetime ``forwards`` and ``tokens_processed``.

Log-probabilities are float32 whatever the model dtype; logits rows past the tokenizer (padding rows of the LM
head) are -inf. The device is read off the model's outputs, so ``device_map="auto"`` models work.

Example:
    >>> lm = dc.load()                                       # doctest: +SKIP
    >>> batch = lm.start([lm.encode("Hello"), lm.encode("The capital of France is")])
    >>> batch.logprobs.shape                                  # [B, V]
    torch.Size([2, 262144])
    >>> batch.step(batch.logprobs.argmax(-1)).shape           # one more token per row
    torch.Size([2, 262144])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from decoding.default_model import prepare
from decoding.vocabulary import Vocabulary


@dataclass
class Usage:
    """Model work done for one caller: forwards run and tokens fed (padding and padding tree nodes excluded).

    Pass one to :meth:`LanguageModel.start` or :meth:`LanguageModel.score`: every forward of that call adds to it,
    whatever else runs on the same model meanwhile (the model's ``forwards`` and ``tokens_processed`` count all).
    """

    forwards: int = 0
    tokens: int = 0


class LanguageModel:
    """A HF causal LM and its tokenizer, seen as next-token log-probabilities.

    Args:
        model: any ``transformers`` causal LM (``AutoModelForCausalLM``).
        tokenizer: its tokenizer; needed for text in and out (``encode``, ``decode``, ``vocabulary``).
        eos_token_ids: ids that end a sequence; default: the model's generation config and the tokenizer's EOS.

    Counters ``forwards`` and ``tokens_processed`` (non-padding tokens fed) are the model's lifetime totals, over
    every caller; a :class:`Usage` passed to :meth:`start` or :meth:`score` counts one call's share.
    ``head_rows`` counts the positions a lazy head (:class:`NodeLogprobs`) ran the LM head for.
    """

    def __init__(self, model, tokenizer=None, eos_token_ids: Iterable[int] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.eos_token_ids = _eos_ids(model, tokenizer, eos_token_ids)
        self.pad_token_id = _pad_id(tokenizer, self.eos_token_ids)
        n_text = len(tokenizer) if tokenizer is not None else self.vocab_size
        self._n_text = min(n_text, self.vocab_size)
        params = inspect.signature(model.forward).parameters
        self._keep_arg = "logits_to_keep" in params
        # transformers 5.x names the cache argument `cache` (`past_key_values` warns, and goes in 5.40)
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._vocabulary: Vocabulary | None = None
        self._head_exact: bool | None = None  # does head_logits reproduce the model's logits? (checked on first use)
        self.forwards = 0
        self.tokens_processed = 0
        self.head_rows = 0

    @property
    def device(self) -> torch.device:
        """Where inputs go (the input embeddings' device)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def vocabulary(self) -> Vocabulary:
        """The exact bytes of every token id (built on first use)."""
        if self._vocabulary is None:
            if self.tokenizer is None:
                raise ValueError("tokenizer: this LanguageModel was built without one; pass tokenizer= for text")
            self._vocabulary = Vocabulary(self.tokenizer, size=self.vocab_size, eos_token_ids=self.eos_token_ids)
        return self._vocabulary

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt, with the special tokens the tokenizer adds (Gemma: <bos>)."""
        if self.tokenizer is None:
            raise ValueError("tokenizer: this LanguageModel was built without one; pass token ids instead of text")
        return list(self.tokenizer(text)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, special tokens removed; exact bytes, invalid UTF-8 replaced by U+FFFD."""
        vocab = self.vocabulary
        return b"".join(vocab.token_bytes[i] for i in ids if not vocab.is_special[i]).decode("utf-8", "replace")

    @torch.no_grad()
    def start(self, prompts: Sequence[Sequence[int]], usage: Usage | None = None) -> "KVBatch":
        """Prefill a ragged batch of token-id prompts; the batch's ``logprobs`` are the next-token log-probs.

        Every forward the batch runs, this prefill included, is added to ``usage`` (a new :class:`Usage` if None;
        either way it is the batch's ``usage``)."""
        if len(prompts) == 0:
            raise ValueError("prompts: empty list; pass at least one prompt")
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompts[{i}] has no tokens; a model needs at least one token of context")
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # once per batch, at prefill: left padding
            ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
        batch = KVBatch(self, mask.to(self.device), usage)
        batch.logprobs = batch._forward(ids.to(self.device))
        return batch

    @torch.no_grad()
    def check_same_vocabulary(self, other: "LanguageModel", name: str) -> None:
        """Raise a ValueError naming the argument ``name`` (``other``) and the first token id on which the two
        tokenizers disagree; a draft or a target model must share this model's tokenizer."""
        if self.tokenizer is None or other.tokenizer is None:
            if self.vocab_size != other.vocab_size:
                raise ValueError(f"{name}: its vocabulary has {other.vocab_size} entries, this model's "
                                 f"{self.vocab_size}; it must share this model's tokenizer")
            return
        a, b = len(self.tokenizer), len(other.tokenizer)
        ids = list(range(min(a, b)))
        ta, tb = self.tokenizer.convert_ids_to_tokens(ids), other.tokenizer.convert_ids_to_tokens(ids)
        first = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), None)
        if first is None and a != b:
            first = min(a, b)
        if first is not None:
            shown = lambda tok, n: repr(tok.convert_ids_to_tokens(first)) if first < n else "no token"  # noqa: E731
            raise ValueError(f"{name}: its vocabulary differs from this model's at token id {first} (this model "
                             f"{shown(self.tokenizer, a)}, {name} {shown(other.tokenizer, b)}); it must share this "
                             "model's tokenizer")

    def score(self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
              law: Callable[[torch.Tensor], torch.Tensor] | None = None, max_elements: int = 2**26,
              usage: Usage | None = None) -> torch.Tensor:
        """log p(continuation | prompt) of each pair: the sum of the next-token log-probs of its tokens, [N] float64.

        One prefill of the prompts and one forward over the continuations per chunk of rows; chunks keep the
        [rows, length, V] log-probs under ``max_elements`` floats. ``law`` maps each position's log-probs [R, V]
        to the log-probs of another law first (a tempered model: a stateless sampler's ``law``). The forwards are
        added to ``usage`` where given.

        Example:
            >>> lm.score([lm.encode("The capital of France is")], [lm.encode(" Paris")])   # doctest: +SKIP
            tensor([-1.73], dtype=torch.float64)
        """
        if len(prompts) != len(continuations):
            raise ValueError(f"continuations: {len(continuations)} for {len(prompts)} prompts; pass one per prompt")
        out = torch.zeros(len(prompts), dtype=torch.float64)
        longest = max((len(c) for c in continuations), default=0)
        rows = max(1, max_elements // (max(longest, 1) * self.vocab_size))
        for start in range(0, len(prompts), rows):  # one chunk of rows per pass: bounded memory
            chunk = range(start, min(len(prompts), start + rows))
            lengths = torch.tensor([len(continuations[i]) for i in chunk])
            width = int(lengths.max())
            if width == 0:
                continue
            ids = torch.full((len(chunk), width), self.pad_token_id, dtype=torch.long)
            for j, i in enumerate(chunk):  # host token lists to one tensor, once per chunk
                ids[j, : lengths[j]] = torch.as_tensor(list(continuations[i]), dtype=torch.long)
            batch = self.start([prompts[i] for i in chunk], usage)
            logprobs = batch.logprobs[:, None]
            if width > 1:
                logprobs = torch.cat([logprobs, batch.step(ids[:, :-1], all_positions=True)], dim=1)
            if law is not None:
                logprobs = law(logprobs.reshape(-1, logprobs.shape[-1])).view_as(logprobs)
            ids = ids.to(logprobs.device)
            token_lp = logprobs.gather(2, ids[..., None])[..., 0].double()
            real = torch.arange(width, device=ids.device) < lengths.to(ids.device)[:, None]
            out[start : start + len(chunk)] = torch.where(real, token_lp, 0.0).sum(1).cpu()
        return out

    def new_cache(self):
        """An empty KV cache for :meth:`forward`: a transformers ``DynamicCache`` of full layers, so that cropping
        and reordering it are exact for sliding-window models too."""
        from transformers import DynamicCache  # transformers loads in seconds; `import decoding` does not need it

        return DynamicCache()

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, cache, attention_mask, position_ids: torch.Tensor, *,
                fed: torch.Tensor | None = None, all_positions: bool = False, lazy_head: bool = False,
                usage: Usage | None = None) -> "torch.Tensor | NodeLogprobs":
        """One model forward over ``ids`` [B, n] after the entries of ``cache`` (from :meth:`new_cache`; the model
        appends to it in place), counted in ``forwards``/``tokens_processed`` and in ``usage``.
        :class:`KVBatch` builds the masks and positions; this is the only place the model runs.

        Args:
            attention_mask: [B, past + n] 1 for real tokens, or additive masks (B, 1, n, past + n), or a dict of
                them by attention type (``"full_attention"``, ``"sliding_attention"``).
            position_ids: [B, n].
            fed: [B, n], nonzero for the tokens that count as work (padding excluded); default all of them.
            all_positions: log-probs after every position, [B, n, V]; else after the last one, [B, V].
            lazy_head: a :class:`NodeLogprobs` over every position that runs the LM head only where read. The first
                lazy forward of a model computes every position to check :meth:`head_logits` against the model's
                own logits; a model that fails the check computes every position in all its lazy forwards.
        """
        kwargs = {self._cache_arg: cache}
        lazy = lazy_head and self._keep_arg and self._head_exact is not False
        if lazy:
            kwargs["output_hidden_states"] = True  # the last entry is the final (normed) hidden state
            if self._head_exact:  # no position's logits (an empty index)
                kwargs["logits_to_keep"] = torch.zeros(0, dtype=torch.long, device=ids.device)
        elif self._keep_arg and not (all_positions or lazy_head):
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                         **kwargs)
        tokens = ids.numel() if fed is None else int(fed.sum())
        self.forwards += 1
        self.tokens_processed += tokens
        if usage is not None:
            usage.forwards += 1
            usage.tokens += tokens
        if not lazy:
            if lazy_head:
                return NodeLogprobs.of(self.log_softmax(out.logits))
            return self.log_softmax(out.logits if all_positions else out.logits[:, -1])
        hidden = out.hidden_states[-1]
        if self._head_exact is None:  # first lazy forward: every position's logits, to check the head once
            self._check_head(hidden, out.logits)
            return NodeLogprobs.of(self.log_softmax(out.logits))
        return NodeLogprobs(self, hidden)

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's logits from its final hidden states [M, d]: the output embeddings, then Gemma 2's final
        soft-capping where the config has one. A model whose head does more (a logit scale) fails the check run
        on the first lazy forward, and its lazy forwards then compute every position's logits in the model.

        A linear head with a plain weight is computed as ``W @ h^T``: for a few rows, ``h @ W^T`` makes the CPU
        BLAS repack the whole [V, d] weight on every call (Gemma 3 270M, 2 cores: 110-180 ms for 2-12 rows against
        40-120 ms). Any other head, or a weight that is a tensor subclass (a tensor-parallel DTensor, a quantised
        tensor), is called as a module, so its own hooks run (tensor parallelism gathers the sharded logits)."""
        head = self.model.get_output_embeddings()
        logits = None
        if isinstance(head, torch.nn.Linear) and type(head.weight) in (torch.Tensor, torch.nn.Parameter):
            try:
                logits = torch.mm(head.weight, hidden.reshape(-1, hidden.shape[-1]).T).T
                logits = logits.reshape(*hidden.shape[:-1], -1)
                logits = logits if head.bias is None else logits + head.bias
            except RuntimeError:  # a head whose weight W @ h^T cannot take as it is: the module knows its own
                logits = None
        if logits is None:
            logits = head(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return logits if not cap else torch.tanh(logits / cap) * cap

    def _check_head(self, hidden: torch.Tensor, logits: torch.Tensor) -> None:
        """Compare :meth:`head_logits` with the model's own logits (same hidden states), once per model; a head
        that cannot run on its own fails the check (lazy forwards then compute every position in the model)."""
        try:
            ours = self.head_logits(hidden).float()
        except RuntimeError:
            self._head_exact = False
            return
        logits = logits.float()
        tol = 1e-3 if self.dtype == torch.float32 else 2e-2  # 16-bit weights round the head's sums
        scale = logits.abs().amax().clamp_min(1.0)
        self._head_exact = ours.shape == logits.shape and bool(((ours - logits).abs().amax() <= tol * scale).item())

    def log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """float32 log-probabilities of logits [..., V]; rows of the LM head past the tokenizer (padding rows: no
        token) get -inf. The input is not changed."""
        x = logits.float()
        if self._n_text < self.vocab_size:
            x = x.clone() if x is logits else x
            x[..., self._n_text :] = float("-inf")
        return torch.log_softmax(x, dim=-1)

    def __repr__(self) -> str:
        name = getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__
        return f"LanguageModel({name!r}, vocab={self.vocab_size}, device={self.device}, dtype={self.dtype})"


def _edit_layers(cache, edit: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Replace the keys and the values [B, H, L, D] of every filled layer of a transformers cache by ``edit`` of
    them (rows picked, positions cropped or gathered), in place."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys, layer.values = edit(layer.keys), edit(layer.values)


class KVBatch:
    """The live state of a batch: KV cache, attention mask, next positions and the current next-token log-probs.

    Attributes:
        logprobs: [B, V] float32 next-token log-probabilities after the last fed token.
        attention_mask: [B, L] 1 for real tokens, 0 for left padding.
        usage: the :class:`Usage` every forward of this batch is added to.
    """

    def __init__(self, lm: LanguageModel, attention_mask: torch.Tensor, usage: Usage | None = None):
        self.lm = lm
        self.cache = lm.new_cache()
        self.attention_mask = attention_mask
        self.usage = usage if usage is not None else Usage()
        self.logprobs: torch.Tensor | None = None
        self.committed = attention_mask.shape[1]  # slots before the pending tree (all of them without one)
        self._tree_anc: torch.Tensor | None = None  # [B, T, T] bool: tree slot j sees tree slot i
        self._tree_depth: torch.Tensor | None = None  # [B, T] depth of each tree slot (0: child of the context)
        self._holes = False  # commit() left gaps inside rows: every forward then needs explicit masks

    @property
    def batch_size(self) -> int:
        return self.attention_mask.shape[0]

    @property
    def length(self) -> int:
        """Padded length of the cache (the same for every row)."""
        return self.attention_mask.shape[1]

    @property
    def lengths(self) -> torch.Tensor:
        """[B] number of real tokens of each row."""
        return self.attention_mask.sum(-1)

    @property
    def tree_pending(self) -> bool:
        """Whether a draft tree fed by :meth:`tree_step` waits for :meth:`commit`."""
        return self._tree_anc is not None

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        """Feed ``tokens`` ([B] or [B, k]) after each row; returns the new next-token log-probs [B, V]
        (or [B, k, V] for every fed position with ``all_positions=True``) and keeps them in ``logprobs``."""
        tokens = tokens.to(self.lm.device).long()
        if tokens.dim() == 1:
            tokens = tokens[:, None]
        if tokens.shape[0] != self.batch_size:
            raise ValueError(f"tokens: {tokens.shape[0]} rows for a batch of {self.batch_size}")
        if self._holes or self.tree_pending:  # gaps or a pending tree: positions need explicit masks
            k = tokens.shape[1]
            chain = torch.arange(-1, k - 1, device=tokens.device).expand(self.batch_size, k)
            out = self.tree_step(tokens, chain)
            self.commit(torch.arange(self.length - self.committed, device=tokens.device).expand(self.batch_size, -1))
            self.logprobs = out[:, -1]
            return out if all_positions else self.logprobs
        ones = torch.ones_like(tokens, dtype=self.attention_mask.dtype)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        self.committed = self.attention_mask.shape[1]
        out = self._forward(tokens, all_positions=all_positions)
        self.logprobs = out[:, -1] if all_positions else out
        return out

    def _forward(self, ids: torch.Tensor, all_positions: bool = False, positions: torch.Tensor | None = None,
                 mask=None, lazy_head: bool = False):
        """:meth:`LanguageModel.forward` over ``ids``, the last columns of ``attention_mask`` (what counts as fed),
        after this batch's cache; positions follow the mask unless given."""
        fed = self.attention_mask[:, -ids.shape[1] :]
        if positions is None:
            positions = (self.attention_mask.cumsum(-1) - 1).clamp_min(0)[:, -ids.shape[1] :]
        return self.lm.forward(ids, self.cache, self.attention_mask if mask is None else mask, positions, fed=fed,
                               all_positions=all_positions, lazy_head=lazy_head, usage=self.usage)

    @torch.no_grad()
    def tree_step(self, tokens: torch.Tensor, parents: torch.Tensor, valid: torch.Tensor | None = None,
                  lazy_head: bool = False) -> "torch.Tensor | NodeLogprobs":
        """Feed a draft tree after each row in ONE forward; returns log-probs after every node, [B, n, V]
        (with ``lazy_head``, a :class:`NodeLogprobs` that runs the LM head only for the nodes read).

        The nodes are appended as tree slots: node j sees the row's committed context, its ancestors and itself,
        at position ``context length + depth``. The mask is built here, additive and in the model's dtype,
        (B, 1, n, past + n); models with sliding-window layers (``config.layer_types``) get the dict
        ``{"full_attention": M, "sliding_attention": M_sw}`` with the window counted in real positions, so gaps
        left by :meth:`commit` never widen it. Several calls may add to one tree before :meth:`commit`.

        Args:
            tokens: [B, n] token ids.
            parents: [B, n] the parent of each node: -1 for the context, else the index of an earlier tree slot
                of this tree (slots of earlier calls come first, then this call's nodes in order).
            valid: [B, n] bool, False for padding nodes (they see only themselves and are never kept).
            lazy_head: keep the final hidden states and run the LM head for a node only when its log-probs are
                read (speculative verification reads few when the draft is wrong).

        Example:
            >>> out = batch.tree_step(torch.tensor([[5, 6, 7]]), torch.tensor([[-1, 0, 0]]))  # doctest: +SKIP
            >>> out.shape   # after 5; after 5,6; after 5,7                                   # doctest: +SKIP
            torch.Size([1, 3, 262144])
        """
        device = self.attention_mask.device
        tokens, parents = tokens.to(device).long(), parents.to(device).long()
        valid = torch.ones_like(tokens, dtype=torch.bool) if valid is None else valid.to(device)
        b, n = tokens.shape
        if parents.shape != (b, n) or b != self.batch_size:
            raise ValueError(f"tokens {tuple(tokens.shape)} and parents {tuple(parents.shape)} must both be "
                             f"[{self.batch_size}, n]")
        old = 0 if self._tree_anc is None else self._tree_anc.shape[1]
        if bool(((parents >= old + torch.arange(n, device=device)) | (parents < -1)).any()):
            raise ValueError("parents: each node's parent must be -1 or an earlier tree slot")
        anc, depth = self._grow_tree(parents, valid, old)
        context = self.attention_mask[:, : self.committed].bool()
        lengths = context.sum(-1)
        positions = lengths[:, None] + depth[:, old:]
        sees = torch.cat([context[:, None, :].expand(b, n, -1), anc[:, old:, :]], dim=2)  # [B, n, past + n]
        self.attention_mask = torch.cat([self.attention_mask, valid.to(self.attention_mask.dtype)], dim=1)
        key_pos = torch.cat([context.cumsum(-1) - 1, lengths[:, None] + depth], dim=1)
        mask = self._masks(sees, positions, key_pos)
        self._tree_anc, self._tree_depth = anc, depth
        return self._forward(tokens, all_positions=True, positions=positions, mask=mask, lazy_head=lazy_head)

    def _grow_tree(self, parents: torch.Tensor, valid: torch.Tensor, old: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ancestor-or-self matrix and depths of the tree slots after appending nodes with these parents."""
        b, n = parents.shape
        total = old + n
        anc = torch.zeros((b, total, total), dtype=torch.bool, device=parents.device)
        depth = torch.zeros((b, total), dtype=torch.long, device=parents.device)
        if old:
            anc[:, :old, :old] = self._tree_anc
            depth[:, :old] = self._tree_depth
        rows = torch.arange(b, device=parents.device)
        for j in range(n):  # a loop over tree nodes (parents come first); every row at once
            slot, parent = old + j, parents[:, j]
            has = (parent >= 0) & valid[:, j]
            anc[:, slot] = torch.where(has[:, None], anc[rows, parent.clamp_min(0)], False)
            depth[:, slot] = torch.where(has, depth[rows, parent.clamp_min(0)] + 1, 0)
            anc[:, slot, slot] = True
        return anc, depth

    def _masks(self, sees: torch.Tensor, positions: torch.Tensor, key_pos: torch.Tensor):
        """Additive masks (B, 1, n, keys) in the model's dtype; the sliding-window form where the model has one."""
        dtype = self.lm.dtype
        config = self.lm.model.config

        def additive(allowed: torch.Tensor) -> torch.Tensor:
            zero = torch.zeros((), dtype=dtype, device=allowed.device)
            return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]

        full = additive(sees)
        window = getattr(config, "sliding_window", None)
        if "sliding_attention" not in (getattr(config, "layer_types", None) or ()) or not window:
            return full
        near = positions[:, :, None] - key_pos[:, None, :] < window
        return {"full_attention": full, "sliding_attention": additive(sees & near)}

    def commit(self, keep: torch.Tensor) -> None:
        """End the pending tree: keep the tree slots ``keep`` ([B, m], tree-slot indices in path order, -1 for
        none) after each row's context and drop every other tree slot. ``logprobs`` are left as they were.

        Rows keeping fewer than m slots get gaps (masked slots) after their kept ones; later forwards use
        explicit masks and real positions, so the gaps change nothing.
        """
        if not self.tree_pending:
            raise ValueError("commit: no pending tree; feed one with tree_step first")
        keep = keep.to(self.attention_mask.device).long()
        src = self.committed + keep.clamp_min(0)  # [B, m] cache slots
        kept = (keep >= 0).to(self.attention_mask.dtype)

        def keep_path(kv: torch.Tensor) -> torch.Tensor:  # kv: [B, H, L, D]
            index = src.to(kv.device)[:, None, :, None].expand(-1, kv.shape[1], -1, kv.shape[3])
            return torch.cat([kv[:, :, : self.committed], kv.gather(2, index)], dim=2)

        _edit_layers(self.cache, keep_path)
        self.attention_mask = torch.cat([self.attention_mask[:, : self.committed], kept], dim=1)
        self._holes = self._holes or bool((keep < 0).any())
        self.committed = self.attention_mask.shape[1]
        self._tree_anc = self._tree_depth = None

    def reorder(self, indices: torch.Tensor | Sequence[int]) -> None:
        """Keep the rows ``indices`` in that order (duplicates allowed: SMC resampling)."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.attention_mask.device)
        if self.tree_pending:
            self._tree_anc, self._tree_depth = self._tree_anc[idx], self._tree_depth[idx]
        _edit_layers(self.cache, lambda kv: kv.index_select(0, idx.to(kv.device)))
        self.attention_mask = self.attention_mask.index_select(0, idx)
        if self.logprobs is not None:
            self.logprobs = self.logprobs.index_select(0, idx.to(self.logprobs.device))

    def extend(self, other: "KVBatch") -> None:
        """Append the rows of ``other``, a batch of the same model (new prompts prefilled by ``lm.start``), after
        this batch's rows: continuous batching. ``other`` is consumed; neither batch may have a pending tree.

        Both caches first drop their leading positions that are padding in every row, then the shorter one is
        left-padded to the other's length, so every row stays left-padded and its positions, read off the
        attention mask, do not change: a row decodes exactly as it would alone. Trimming at each admission keeps
        the cache no longer than its longest live row, however many prompts pass through the batch.

        Example:
            >>> batch = lm.start([lm.encode("Hello")])                    # doctest: +SKIP
            >>> batch.extend(lm.start([lm.encode("The capital of France is")], usage=batch.usage))  # doctest: +SKIP
            >>> batch.batch_size                                           # doctest: +SKIP
            2
        """
        if self.tree_pending or other.tree_pending:
            raise ValueError("extend: a draft tree is pending; end it with commit() first")
        if other.lm is not self.lm:
            raise ValueError("extend: other is a batch of another model; rows of one batch share one model")
        if self.batch_size == 0:  # every row left: the new rows are the batch
            self.cache, self.attention_mask, self.logprobs = other.cache, other.attention_mask, other.logprobs
            self.committed, self._holes = other.committed, other._holes
            return
        self.trim()
        other.trim()
        width = max(self.length, other.length)

        def left_padded(kv: torch.Tensor) -> torch.Tensor:  # kv: [B, H, L, D] -> [B, H, width, D]
            pad = kv.new_zeros((kv.shape[0], kv.shape[1], width - kv.shape[2], kv.shape[3]))
            return torch.cat([pad, kv], dim=2)

        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            if getattr(mine, "keys", None) is not None and mine.keys.numel():
                mine.keys = torch.cat([left_padded(mine.keys), left_padded(theirs.keys).to(mine.keys.device)])
                mine.values = torch.cat([left_padded(mine.values), left_padded(theirs.values).to(mine.values.device)])
        masks = [m.new_zeros((m.shape[0], width - m.shape[1])) for m in (self.attention_mask, other.attention_mask)]
        self.attention_mask = torch.cat([torch.cat([masks[0], self.attention_mask], 1),
                                         torch.cat([masks[1], other.attention_mask.to(masks[0].device)], 1)])
        self.committed = width
        self._holes = self._holes or other._holes
        self.logprobs = torch.cat([self.logprobs, other.logprobs.to(self.logprobs.device)])

    def trim(self) -> None:
        """Drop the leading cache positions that are padding in every row, as rows leave and join: the cache stays
        as long as its longest row. Positions follow the mask, so no row sees a change; ``length`` shrinks."""
        if self.tree_pending:
            raise ValueError("trim: a draft tree is pending; end it with commit() first")
        first = int(self.attention_mask.any(0).long().argmax()) if self.batch_size else 0
        if first:
            _edit_layers(self.cache, lambda kv: kv[:, :, first:])
            self.attention_mask = self.attention_mask[:, first:]
            self.committed -= first

    def crop(self, length: int) -> None:
        """Forget every cached position at or after ``length`` (padded positions). ``logprobs`` become stale
        until the next ``step``: re-feed the last kept token's successor, as speculative decoding does."""
        if not 0 < length <= self.length:
            raise ValueError(f"length must be in [1, {self.length}], got {length}")
        if self.tree_pending:
            raise ValueError("crop: a draft tree is pending; end it with commit() first")
        _edit_layers(self.cache, lambda kv: kv[:, :, :length])
        self.attention_mask = self.attention_mask[:, :length]
        self.committed = min(self.committed, length)
        self.logprobs = None


class NodeLogprobs:
    """Next-token log-probs after each node of a tree forward, [B, n, V], with the LM head run only where read.

    On a big vocabulary the LM head is much of a small model's forward (Gemma 3 270M: 168M of its 268M
    parameters; on 2 CPU cores the head over 15 nodes costs more than the 15-node body). A verifier reads the
    root first and stops there whenever the draft's first token is wrong, so the forward keeps the final hidden
    states and :meth:`at` runs the head for the entries it reads that are not computed yet; :meth:`compute` runs
    it ahead, in one call, for any set of entries. Each entry is computed once.

    Example:
        >>> lp = batch.tree_step(tokens, parents, lazy_head=True)            # doctest: +SKIP
        >>> lp.at(torch.arange(B), torch.zeros(B, 1, dtype=torch.long))      # the roots: one head row each  # doctest: +SKIP
        >>> lp.compute(depth < 4)                                             # one head call for these  # doctest: +SKIP
    """

    def __init__(self, lm: LanguageModel | None, hidden: torch.Tensor | None, values: torch.Tensor | None = None):
        """From the final hidden states [B, n, d] (nothing computed), or from ``values`` [B, n, V] (all computed)."""
        self.lm, self.hidden = lm, hidden
        if values is None:
            values = torch.empty((*hidden.shape[:2], lm.vocab_size), dtype=torch.float32, device=hidden.device)
        self._values, self.shape = values, tuple(values.shape)
        self._done = torch.full(self.shape[:2], hidden is None, dtype=torch.bool, device=values.device)

    @classmethod
    def of(cls, logprobs: torch.Tensor) -> "NodeLogprobs":
        """Every entry already computed ([B, n, V])."""
        return cls(None, None, logprobs)

    @property
    def computed(self) -> torch.Tensor:
        """[B, n] bool: the entries the head has run for."""
        return self._done

    def at(self, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Log-probs after node ``nodes[i, j]`` of row ``rows[i]``: [R, K, V] (rows [R], nodes [R, K])."""
        rows, nodes = rows.to(self._done.device)[:, None].expand_as(nodes), nodes.to(self._done.device)
        self._compute(rows, nodes)
        return self._values[rows, nodes]

    def compute(self, where: torch.Tensor) -> None:
        """Run the head, in one call, for the entries where ``where`` ([B, n] bool) is True."""
        rows, nodes = where.to(self._done.device).nonzero(as_tuple=True)
        self._compute(rows, nodes)

    def full(self) -> torch.Tensor:
        """All of it, [B, n, V]."""
        self.compute(torch.ones_like(self._done))
        return self._values

    def _compute(self, rows: torch.Tensor, nodes: torch.Tensor) -> None:
        """Run the head for the entries (rows, nodes) (broadcast together) not computed yet."""
        rows, nodes = torch.broadcast_tensors(rows, nodes)
        missing = ~self._done[rows, nodes]
        if not bool(missing.any()):
            return
        rows, nodes = rows[missing], nodes[missing]
        with torch.no_grad():
            logits = self.lm.head_logits(self.hidden[rows, nodes])
        self._values[rows, nodes] = self.lm.log_softmax(logits)
        self._done[rows, nodes] = True
        self.lm.head_rows += len(rows)


def _eos_ids(model, tokenizer, given: Iterable[int] | None) -> tuple[int, ...]:
    if given is not None:
        ids = {int(i) for i in given}
    else:
        ids = set()
        gen = getattr(model, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif source is not None:
                ids.update(int(i) for i in source)
    if not ids:
        raise ValueError(
            "eos_token_ids: neither the model's generation config nor the tokenizer names an EOS token; "
            "pass eos_token_ids=[...] to LanguageModel"
        )
    return tuple(sorted(ids))


def _pad_id(tokenizer, eos_ids: tuple[int, ...]) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else eos_ids[0]


def is_model_name(name: str) -> bool:
    """Whether ``name`` can name a model for :func:`load`: an existing directory or a hub id ``org/model``."""
    path = Path(name).expanduser()
    hub_id = name.count("/") == 1 and not path.suffix and not name.startswith((".", "/", "~"))
    return bool(name) and (path.is_dir() or hub_id)


def load(
    name: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> LanguageModel:
    """Load a causal LM and its tokenizer as a :class:`LanguageModel`.

    Args:
        name: a local HF checkpoint directory or a hub id; None prepares the embedded default model
            (Gemma 3 270M, see ``decoding.default_model``).
        device: default CUDA when available, else CPU.
        dtype: default float32 on CPU and bfloat16 on CUDA.

    Example:
        >>> lm = load()                                   # doctest: +SKIP
        >>> lm = load("path/to/checkpoint", device="cuda") # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # seconds to load; `import decoding` skips it

    if name is None:
        name = str(prepare(progress=progress))
    elif not is_model_name(name):
        raise ValueError(
            f"name: {name!r} is neither a local checkpoint directory nor a hub id of the form 'org/model'; "
            "pass a directory holding config.json, or None for the default model"
        )
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype if dtype is not None else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except OSError as err:
        raise ValueError(f"name: could not load {name!r} as a causal LM ({err})") from err
    return LanguageModel(model.to(device), tokenizer)
