"""Hugging Face integration: decoding's samplers inside ``model.generate``.

Two seams, for two kinds of sampler:

- :class:`LogitsProcessor` for samplers that are a transform of the next-token distribution (temperature,
  truncations, top-H, mirostat): HF keeps its own loop and draws from the distribution we return.
- :func:`custom_generate` for everything else (AWRS, SMC, SIR, speculative): ``model.generate`` prepares the
  inputs and hands the loop to decoding (transformers >= 4.56 accepts a callable ``custom_generate``).

Example:
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer   # doctest: +SKIP
    >>> out = model.generate(**inputs, do_sample=True, max_new_tokens=20,
    ...                      logits_processor=[dc.hf.LogitsProcessor(dc.TopP(0.9))])      # doctest: +SKIP
    >>> out = model.generate(**inputs, max_new_tokens=20,
    ...                      custom_generate=dc.hf.custom_generate(dc.TopP(0.9), seed=0))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from decoding.decode import Ancestral, DecodeTask, SequenceSampler
from decoding.kernels.sampling import check_logprobs
from decoding.model import LanguageModel
from decoding.samplers.base import SamplerChain, TokenSampler


class LogitsProcessor:
    """A token sampler as a ``transformers`` logits processor.

    Returns the log-probabilities of the law the sampler draws from (-inf outside its support), so HF's
    ``do_sample=True`` draw samples exactly that law and greedy decoding takes its mode. A stateful sampler
    (mirostat) commits the token HF actually emitted: it is read from ``input_ids[:, -1]`` on the next call, which
    HF guarantees is the token drawn from the distribution returned on the previous call (one token per call).
    State is per row of the batch and starts afresh when a new generation begins (the sequence length did not
    grow by one).

    Args:
        sampler: a token sampler or chain whose terminal stage has a closed-form law (Greedy or the
            categorical draw); samplers that only exist as a procedure (AWRS) need ``custom_generate``.

    Example:
        >>> processor = LogitsProcessor(dc.Temperature(0.7) | dc.TopK(50))
        >>> model.generate(**inputs, do_sample=True, logits_processor=[processor])   # doctest: +SKIP
    """

    def __init__(self, sampler: TokenSampler):
        if not isinstance(sampler, TokenSampler):
            raise TypeError(f"sampler: expected a decoding token sampler, got {type(sampler).__name__}")
        self.chain = sampler if isinstance(sampler, SamplerChain) else SamplerChain(sampler.stages)
        self._states = None
        self._inputs: list[torch.Tensor] | None = None
        self._length = -1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logprobs = torch.log_softmax(scores.float(), dim=-1)
        check_logprobs(logprobs, "scores")
        batch, length = input_ids.shape
        if self._inputs is not None and length == self._length + 1 and self._inputs[0].shape[0] == batch:
            emitted = input_ids[:, -1].to(logprobs.device)
            self._states = self.chain.accept_all(self._states, emitted, self._inputs)
        else:
            self._states = self.chain.init_state(batch, logprobs.device)
        final, inputs = self.chain.transform_all(logprobs, self._states)
        law = self.chain.terminal_law(final, self._states)
        if self.chain.stateful:
            self._inputs, self._length = inputs, length
        return law.to(scores.dtype)

    def __repr__(self) -> str:
        return f"LogitsProcessor({self.chain!r})"


def custom_generate(
    sampler: TokenSampler | SequenceSampler, seed: int | Sequence[int] = 0, tokenizer=None
) -> Callable[..., torch.LongTensor]:
    """A callable for ``model.generate(..., custom_generate=...)`` that decodes with ``sampler``.

    ``model.generate`` prepares the inputs (left-padded ``input_ids`` and ``attention_mask``), the token limit
    (``max_new_tokens`` / ``max_length``) and EOS ids; decoding runs the loop with its own KV cache and returns
    ``input_ids`` followed by the generated tokens, right-padded with the pad id, like ``generate`` does.
    Sampling settings belong to the decoding sampler: HF logits processors (``temperature=``, ``top_p=``...) are
    refused rather than silently combined.

    ``tokenizer``: needed by constraint samplers (``dc.AWRS``, ``dc.Masked``: their constraint binds to its
    vocabulary) and stop strings; the one given to ``generate(tokenizer=...)`` is used when this is None.

    Example:
        >>> out = model.generate(**inputs, max_new_tokens=16,
        ...                      custom_generate=dc.hf.custom_generate(dc.TopK(20), seed=1))   # doctest: +SKIP
        >>> smc = dc.SMC(dc.AWRS(dc.Regex("[0-9]+")), particles=4)
        >>> out = model.generate(**inputs, max_new_tokens=8,
        ...                      custom_generate=dc.hf.custom_generate(smc, tokenizer=tok))     # doctest: +SKIP
    """
    runner = sampler if isinstance(sampler, SequenceSampler) else Ancestral(sampler)

    def run(model, input_ids, logits_processor=None, stopping_criteria=None, generation_config=None, **kwargs):
        if logits_processor:
            names = ", ".join(type(p).__name__ for p in logits_processor)
            raise ValueError(
                f"custom_generate: generate() also built HF logits processors ({names}); put sampling settings in "
                "the decoding sampler (e.g. dc.Temperature(0.7) | dc.TopP(0.9)) and drop them from generate()"
            )
        mask = kwargs.get("attention_mask")
        mask = torch.ones_like(input_ids) if mask is None else mask
        prompts = [row[m.bool()].tolist() for row, m in zip(input_ids.cpu(), mask.cpu())]
        eos = generation_config.eos_token_id
        tok = tokenizer if tokenizer is not None else kwargs.get("tokenizer")
        lm = LanguageModel(model, tok, eos_token_ids=[eos] if isinstance(eos, int) else eos)
        limit = generation_config.max_new_tokens
        if limit is None:
            limit = max(generation_config.max_length - input_ids.shape[1], 0)
        raw = generation_config.stop_strings if tok is not None else None
        stop = (raw,) if isinstance(raw, str) else tuple(raw or ())
        results = runner.run(lm, DecodeTask(prompts, limit, seed, stop))
        pad = generation_config.pad_token_id
        pad = lm.pad_token_id if pad is None else int(pad)
        width = max((len(r.token_ids) for r in results), default=0)
        new = torch.full((len(results), width), pad, dtype=torch.long)
        for i, r in enumerate(results):  # once per sequence, at the end
            new[i, : len(r.token_ids)] = torch.as_tensor(r.token_ids, dtype=torch.long)
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)

    return run
