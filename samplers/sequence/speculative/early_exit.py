"""Early-exit self-draft: the target's first layers, its final norm and its LM head, as a draft model.

LayerSkip (Elhoushi et al., ACL 2024) drafts with the first L layers of the target itself and the shared LM head,
so a draft needs no second checkpoint, no second vocabulary and no extra weights. :func:`early_exit` builds that
model as a :class:`LanguageModel` whose modules ARE the target's (nothing is copied): pass it to
``dc.ModelDraft`` (optionally with a trimmed head, ``keep_tokens=dc.vocab_trim(...)``) or directly as
``Speculative``'s draft. It keeps its own KV cache for its L layers; LayerSkip's cache sharing between the draft
and the verifier's first L layers is not done here (the verifier re-computes them for the draft's tokens).

A model trained without an early-exit loss predicts poorly from its middle layers (Gemma 3 270M, greedy tokens
of the speculative bench's prompts: agreement with the full model under 6% up to layer 10 of 18, 17-78% at layer
12). The self-draft is still a real draft distribution, with a real top-k tail, which is what tree shapes need
to be compared honestly.

Example:
    >>> target = dc.load()                                                      # doctest: +SKIP
    >>> spec = dc.Speculative(dc.early_exit(target, 12), dc.DynamicTree(budget=14))   # doctest: +SKIP
"""

from __future__ import annotations

import copy

import torch

from decoding.model import LanguageModel
from decoding.samplers.sequence.speculative.drafter import shared_copy

LAYER_LISTS = ("layers", "h")  # the decoder's module list: Llama, Gemma, Mistral, Qwen...; GPT-2


def early_exit(lm: LanguageModel, layers: int) -> LanguageModel:
    """The first ``layers`` decoder layers of ``lm`` with its final norm and LM head, sharing every weight.

    Args:
        lm: the target.
        layers: how many decoder layers the draft runs, 1 .. the model's layer count.

    Example:
        >>> draft = dc.early_exit(dc.load(), layers=12)      # doctest: +SKIP
        >>> draft.model.config.num_hidden_layers             # doctest: +SKIP
        12
    """
    if not isinstance(lm, LanguageModel):
        raise TypeError(f"lm: expected a decoding.LanguageModel, got {type(lm).__name__}")
    decoder = lm.model.get_decoder() if hasattr(lm.model, "get_decoder") else None
    name = next((n for n in LAYER_LISTS if isinstance(getattr(decoder, n, None), torch.nn.ModuleList)), None)
    if name is None:
        raise TypeError(f"lm: {type(lm.model).__name__} has no decoder layer list ({' or '.join(LAYER_LISTS)}) "
                        "to cut; early exit needs a decoder-only transformers model")
    stack = getattr(decoder, name)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= len(stack):
        raise ValueError(f"layers must be an int in 1..{len(stack)} (the model's layer count), got {layers!r}")
    config = copy.deepcopy(lm.model.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:layers]
    short = shared_copy(decoder, {name: torch.nn.ModuleList(list(stack)[:layers])})
    key = next(k for k, module in lm.model._modules.items() if module is decoder)
    model = shared_copy(lm.model, {key: short})
    short.config = model.config = config
    return LanguageModel(model, lm.tokenizer, eos_token_ids=lm.eos_token_ids)
