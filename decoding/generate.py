"""``dc.generate``: decode prompts with any sampler and return texts, token ids, log-probabilities and weights."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from decoding import scheduling
from decoding.decode import Ancestral, DecodeTask, Generation, SequenceSampler, Stats, sum_counters
from decoding.model import LanguageModel
from decoding.samplers.base import Categorical, TokenSampler


class GenerationOutput(Sequence):
    """The generations, in prompt order (``out[i]``), and ``stats`` for the whole call."""

    def __init__(self, sequences: list[Generation], stats: Stats):
        self.sequences = sequences
        self.stats = stats

    def __getitem__(self, i):
        return self.sequences[i]

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self) -> Iterator[Generation]:
        return iter(self.sequences)

    def __repr__(self) -> str:
        return f"GenerationOutput({self.sequences!r}, stats={self.stats!r})"


def generate(
    lm: LanguageModel,
    prompts: str | Sequence[str],
    sampler: TokenSampler | SequenceSampler | None = None,
    *,
    max_new_tokens: int = 64,
    seed: int | Sequence[int] = 0,
    stop: str | Sequence[str] | None = None,
    on_token: Callable[[int, int], None] | None = None,
    max_batch_rows: int | None = None,
) -> GenerationOutput:
    """Decode ``prompts`` with ``sampler`` and return one :class:`Generation` per prompt.

    Args:
        lm: the model (``dc.load()``, ``dc.LanguageModel(model, tokenizer)``).
        prompts: a string or a list of strings, tokenised with the model's tokenizer (special tokens included).
        sampler: a token sampler (``dc.TopP(0.9)``, ``dc.Temperature(0.7) | dc.TopK(50)``, ...) or a sequence
            sampler; None draws from the unmodified model.
        max_new_tokens: >= 0 generated tokens at most per prompt.
        seed: an int (row i draws from the stream (seed, i)) or one seed per prompt.
        stop: strings that end a sequence; the text is cut before the first one.
        on_token: called as ``on_token(row, token_id)`` for each token as it is produced (streaming); ``row`` is
            the prompt's index in ``prompts``.
        max_batch_rows: the most rows decoded at once (a row: a prompt, or one of SMC's particles or SIR's
            proposals; a prompt's rows always share a batch, so at least that many). New prompts join as rows end;
            memory stays bounded at any number of prompts and the outputs are those of one big batch (each row
            draws from its own random stream). None: derived from the device's free memory and the memory per row
            (``decoding.scheduling``).

    Example:
        >>> import decoding as dc
        >>> lm = dc.load()                                               # doctest: +SKIP
        >>> out = dc.generate(lm, ["The capital of France is"], dc.Greedy(), max_new_tokens=8)  # doctest: +SKIP
        >>> out[0].text, out[0].logprob, out.stats.tokens_per_second    # doctest: +SKIP
        >>> many = dc.generate(lm, prompts, dc.SIR(dc.TopP(0.9), n=64), max_batch_rows=256)   # doctest: +SKIP
    """
    if not isinstance(lm, LanguageModel):
        raise TypeError(f"lm: expected a decoding.LanguageModel, got {type(lm).__name__}; wrap HF models with "
                        "dc.LanguageModel(model, tokenizer)")
    texts = _check_prompts(prompts)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    stops = _check_stop(stop)
    runner = _sequence_sampler(sampler)
    if not isinstance(seed, int):
        seed = list(seed)
        if len(seed) != len(texts):
            raise ValueError(f"seed: got {len(seed)} seeds for {len(texts)} prompts; pass one int or one per prompt")
    prompts = [lm.encode(t) for t in texts]
    budget = scheduling.max_rows(lm, runner, prompts, max_new_tokens, max_batch_rows)
    task = DecodeTask(prompts, max_new_tokens, seed, stops, on_token, max_batch_rows=budget)
    start = time.perf_counter()
    sequences = scheduling.run(runner, lm, task)
    stats = Stats(
        forwards=task.usage.forwards,  # this call's work alone, whatever else runs on the model meanwhile
        tokens=task.usage.tokens,
        new_tokens=sum(len(s.token_ids) for s in sequences),
        wall_time=time.perf_counter() - start,
        counters=sum_counters(sequences),
    )
    return GenerationOutput(sequences, stats)


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, Sequence):
        raise TypeError(f"prompts: expected a string or a list of strings, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("prompts: empty list; pass at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{i}]: expected a string, got {type(p).__name__}")
    return list(prompts)


def _check_stop(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop: stop strings must be non-empty strings, got {s!r}")
    return stops


def _sequence_sampler(sampler) -> SequenceSampler:
    if sampler is None:
        return Ancestral(Categorical())
    if isinstance(sampler, TokenSampler):
        return Ancestral(sampler)
    if isinstance(sampler, SequenceSampler):
        return sampler
    raise TypeError(f"sampler: expected a token or sequence sampler, got {type(sampler).__name__}")
