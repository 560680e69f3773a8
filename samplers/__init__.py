"""Token samplers, and the sequence samplers built on them. Notation: p is the target, q the proposal.

Sequence samplers (``decoding.samplers.smc``) drive the decode loop, which imports this package, so they are
imported from their modules (``dc.SMC`` re-exports them).
"""

from decoding.samplers.awrs import AWRS
from decoding.samplers.base import Categorical, Chain, Draw, Sample, TokenSampler
from decoding.samplers.dsir import Selection, select
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
    "AWRS", "Categorical", "Chain", "Draw", "Greedy", "Masked", "MinP", "Mirostat", "Sample", "Selection",
    "Temperature", "TokenSampler", "TopH", "TopK", "TopP", "Typical", "select",
]
