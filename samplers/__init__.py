"""Token samplers: pure transforms of next-token log-probabilities and terminal draws, below the decode loop.

Notation: p is the target, q the proposal. Sequence samplers (SMC, SIR, speculative decoding) drive the decode loop
and live in ``decoding.samplers.sequence``; ``decoding`` re-exports both layers' public names.
"""

from decoding.samplers.awrs import AWRS
from decoding.samplers.base import Categorical, Chain, Draw, Sample, TokenSampler
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
    "AWRS", "Categorical", "Chain", "Draw", "Greedy", "Masked", "MinP", "Mirostat", "Sample",
    "Temperature", "TokenSampler", "TopH", "TopK", "TopP", "Typical",
]
