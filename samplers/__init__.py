"""Token samplers: pure transforms of next-token log-probabilities and terminal draws, below the decode loop.

Notation: p is the target, q the proposal. Sequence samplers (SMC, SIR, speculative decoding) drive the decode loop
and live in ``decoding.samplers.sequence``; ``decoding`` re-exports both layers' public names.
"""

import importlib
import warnings

from decoding.samplers.awrs import AWRS
from decoding.samplers.base import Categorical, Draw, Sample, SamplerChain, TokenSampler
from decoding.samplers.greedy import Greedy
from decoding.samplers.masked import Masked
from decoding.samplers.min_p import MinP
from decoding.samplers.mirostat import Mirostat
from decoding.samplers.temperature import Temperature
from decoding.samplers.top_h import TopH
from decoding.samplers.top_k import TopK
from decoding.samplers.top_p import TopP
from decoding.samplers.typical import Typical

__all__ = [
    "AWRS", "Categorical", "Draw", "Greedy", "Masked", "MinP", "Mirostat", "Sample", "SamplerChain",
    "Temperature", "TokenSampler", "TopH", "TopK", "TopP", "Typical",
]

# Renamed or moved in 0.2; the old names work, with a DeprecationWarning, until 0.3.
_DEPRECATED = {
    "Chain": ("decoding.samplers.base", "SamplerChain", "decoding.samplers.SamplerChain (dc.Chain is the draft tree)"),
    "select": ("decoding.dsir", "select", "dc.select (DSIR selection is not a sampler)"),
    "Selection": ("decoding.dsir", "Selection", "dc.Selection"),
}


def __getattr__(name: str):
    if name not in _DEPRECATED:
        raise AttributeError(f"module 'decoding.samplers' has no attribute {name!r}")
    module, attr, instead = _DEPRECATED[name]
    warnings.warn(f"decoding.samplers.{name} is deprecated; use {instead}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), attr)
