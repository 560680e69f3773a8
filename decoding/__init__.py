"""decoding: exact constrained, entropy-controlled and speculative decoding for Hugging Face causal LMs.

Notation, everywhere: ``p`` is the target distribution, ``q`` the draft or proposal. ``dc.Chain`` is the draft
tree shape of speculative decoding; token samplers chain with ``|`` (class ``decoding.samplers.SamplerChain``).

Example:
    >>> import decoding as dc
    >>> lm = dc.load()                                                   # doctest: +SKIP
    >>> out = dc.generate(lm, "Once upon a time", dc.Temperature(0.8) | dc.TopP(0.9), max_new_tokens=32)  # doctest: +SKIP
    >>> print(out[0].text)                                               # doctest: +SKIP
"""

from decoding import hf
from decoding.constraints import Constraint, Grammar, JsonSchema, Predicate, Regex, TokenConstraint
from decoding.decode import Ancestral, DecodeTask, Decoder, End, Generation, Rows, SequenceSampler, Stats
from decoding.dsir import Selection, select
from decoding.generate import GenerationOutput, generate
from decoding.kernels.random import RowStreams
from decoding.model import KVBatch, LanguageModel, Usage, load
from decoding.samplers import (
    AWRS, Categorical, Greedy, Masked, MinP, Mirostat, Sample, SamplerChain, Temperature, TokenSampler, TopH, TopK,
    TopP, Typical,
)
from decoding.samplers.sequence.sir import SIR, SIRGeneration
from decoding.samplers.sequence.smc import SMC, SMCGeneration
from decoding.samplers.sequence.speculative.constraint_draft import ConstraintDraft
from decoding.samplers.sequence.speculative.drafter import ModelDraft, vocab_trim
from decoding.samplers.sequence.speculative.early_exit import early_exit
from decoding.samplers.sequence.speculative.ngram import NGramDraft
from decoding.samplers.sequence.speculative.optimal import alpha_star
from decoding.samplers.sequence.speculative.speculative import Speculative
from decoding.samplers.sequence.speculative.trees import Chain, DynamicTree, MultiDraft
from decoding.vocabulary import Vocabulary

__version__ = "0.2.0"

__all__ = [
    "AWRS", "Ancestral", "Categorical", "Chain", "Constraint", "ConstraintDraft", "DecodeTask", "Decoder",
    "DynamicTree", "End", "Generation", "GenerationOutput", "Grammar", "Greedy", "JsonSchema", "KVBatch",
    "LanguageModel", "Masked", "MinP", "Mirostat", "ModelDraft", "MultiDraft", "NGramDraft", "Predicate", "Regex",
    "RowStreams", "Rows", "SIR", "SIRGeneration", "SMC", "SMCGeneration", "Sample", "SamplerChain", "Selection",
    "SequenceSampler", "Speculative", "Stats", "Temperature", "TokenConstraint", "TokenSampler", "TopH", "TopK",
    "TopP", "Typical", "Usage", "Vocabulary", "alpha_star", "generate", "early_exit", "hf", "load", "select",
    "vocab_trim",
]
