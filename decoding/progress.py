"""Progress bars on stderr, shared by the library (DSIR's passes), the CLI and the benchmark suites."""

from __future__ import annotations

import sys
from collections.abc import Iterable


def progress_bar(iterable: Iterable | None = None, **kwargs):
    """A tqdm bar on stderr (``disable=True`` for none); ``kwargs`` go to ``tqdm``.

    Example:
        >>> list(progress_bar(["a", "b"], desc="docs", disable=True))
        ['a', 'b']
    """
    from tqdm.auto import tqdm  # ~0.1 s (it imports asyncio and probes for Jupyter): paid only when a bar is shown

    return tqdm(iterable, file=sys.stderr, **kwargs)
