"""Python's own regular-expression parser and its opcode constants, on every supported Python.

``parser`` is ``re._parser`` (Python >= 3.11) or ``sre_parse`` (3.10); ``constants`` is ``re._constants`` or
``sre_constants``. Both are private to the standard library but stable in practice; this is the one place that
imports them.
"""

from __future__ import annotations

try:  # Python >= 3.11
    from re import _constants as constants
    from re import _parser as parser
except ImportError:  # Python 3.10
    import sre_constants as constants  # type: ignore[no-redef]
    import sre_parse as parser  # type: ignore[no-redef]

__all__ = ["constants", "parser"]
