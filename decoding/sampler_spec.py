"""The sampler spec language of ``decoding generate --sampler`` and the benchmark suites: text -> a token sampler.

A spec is stages separated by ``|`` and applied left to right, each ``name`` or ``name=value``, e.g.
``"temperature=0.8|top_k=50|top_p=0.9"``, ``"greedy"``, ``"min_p=0.05"``. A value is a comma-separated list of the
sampler's parameters, by position or by name (``top_k=50`` is ``top_k=k=50``). The names are the keys of
:data:`SAMPLERS`; a new sampler joins the language with one line, e.g.
``SAMPLERS["top_h"] = SamplerFactory(TopH, {"alpha": float, "top_n": int, "rule": str})`` (then ``top_h``,
``top_h=0.4`` and ``top_h=0.4,rule=paper`` all parse).

Example:
    >>> parse_sampler("temperature=0.8|top_k=50")
    Temperature(temperature=0.8) | TopK(k=50)
"""

from __future__ import annotations

import argparse
import difflib
import inspect
from collections.abc import Callable

from decoding.samplers import Greedy, MinP, Mirostat, Temperature, TopH, TopK, TopP, Typical
from decoding.samplers.base import Categorical, SamplerChain, TokenSampler


class SamplerSpecError(ValueError, argparse.ArgumentTypeError):
    """A sampler spec that does not parse: an unknown name or a bad value (argparse shows the message)."""


class SamplerFactory:
    """Builds a sampler from the value of ``name=value``: its parameters by position or as ``key=value``.

    Args:
        cls: the sampler class.
        params: the parameters the spec may set, in positional order, each with its converter (``int``,
            ``float``, ``str``). Parameters without a default in ``cls`` make the value required.
        metavar: how help texts write the value (default: the first parameter's name in capitals).

    Example:
        >>> SamplerFactory(TopK, {"k": int})("50")
        TopK(k=50)
    """

    def __init__(self, cls: type[TokenSampler], params: dict[str, Callable[[str], object]] | None = None,
                 metavar: str | None = None):
        self.cls, self.params = cls, dict(params or {})
        self.metavar = metavar or (next(iter(self.params)).upper() if self.params else "")
        signature = inspect.signature(cls)
        self.required = [
            name for name, p in signature.parameters.items()
            if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    def usage(self, name: str) -> str:
        """How the stage is written, e.g. ``top_k=K``."""
        if not self.params:
            return name
        return f"{name}={self.metavar}" if self.required else f"{name}[={self.metavar}]"

    def __call__(self, value: str | None, name: str = "") -> TokenSampler:
        name = name or self.cls.__name__
        kwargs: dict[str, object] = {}
        if value is not None:
            if not self.params:
                raise SamplerSpecError(f"{name} takes no value, got {name}={value}")
            names, keywords = list(self.params), False
            for position, item in enumerate(value.split(",")):
                key, sep, raw = item.partition("=")
                if sep:
                    keywords = True
                elif keywords:
                    raise SamplerSpecError(f"{name}={value}: a value by position after one by name")
                elif position >= len(names):
                    raise SamplerSpecError(f"{name}={value}: too many values; {name} takes {', '.join(names)}")
                else:
                    key, raw = names[position], item
                key = key.strip()
                if key not in self.params:
                    raise SamplerSpecError(f"{name}: unknown parameter {key!r}; it takes {', '.join(names)}")
                if key in kwargs:
                    raise SamplerSpecError(f"{name}: parameter {key!r} given twice")
                kwargs[key] = _convert(name, key, raw.strip(), self.params[key])
        missing = [p for p in self.required if p not in kwargs]
        if missing:
            raise SamplerSpecError(f"{name} needs a value: {self.usage(name)}")
        try:
            return self.cls(**kwargs)
        except (ValueError, TypeError) as err:  # the sampler's own message, naming the bad value
            message = str(err)
            raise SamplerSpecError(message if message.startswith(name) else f"{name}: {message}") from err


def _convert(name: str, key: str, raw: str, convert: Callable[[str], object]) -> object:
    try:
        return convert(raw)
    except (ValueError, TypeError):
        what = {int: "an integer", float: "a number"}.get(convert, getattr(convert, "__name__", "a value"))
        raise SamplerSpecError(f"{name}: {key} must be {what}, got {raw!r}") from None


#: The sampler names of the spec language -> their factories. Extend it to add a sampler to the CLI.
SAMPLERS: dict[str, SamplerFactory] = {
    "greedy": SamplerFactory(Greedy),
    "categorical": SamplerFactory(Categorical),
    "temperature": SamplerFactory(Temperature, {"temperature": float}, metavar="T"),
    "top_k": SamplerFactory(TopK, {"k": int}),
    "top_p": SamplerFactory(TopP, {"p": float}),
    "min_p": SamplerFactory(MinP, {"p": float}),
    "typical": SamplerFactory(Typical, {"p": float}),
    "top_h": SamplerFactory(TopH, {"alpha": float, "top_n": int, "rule": str}),
    "mirostat": SamplerFactory(Mirostat, {"tau": float, "eta": float, "version": int, "m": int, "surprise": str}),
}


def parse_sampler(spec: str) -> TokenSampler:
    """Build a token sampler from a spec such as ``"temperature=0.8|top_k=50|top_p=0.9"``.

    Stages are separated by ``|`` and applied left to right; each is ``name`` or ``name=value`` with a name from
    :data:`SAMPLERS` (``-`` may stand for ``_``). One stage gives that sampler, several a :class:`SamplerChain`, which
    ends in a categorical draw unless its last stage draws (``greedy``).

    Raises:
        SamplerSpecError (a ValueError): unknown name, bad value, or a drawing stage that is not the last; the
            message names the known samplers or repeats the sampler's own complaint.

    Example:
        >>> parse_sampler("temperature=0.8|top_k=50")
        Temperature(temperature=0.8) | TopK(k=50)
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a string, got {type(spec).__name__}")
    stages = []
    for text in spec.split("|"):
        text = text.strip()
        if not text:
            raise SamplerSpecError(f"empty stage in sampler spec {spec!r}; write stages as name or name=value, "
                                   f"separated by '|'")
        raw_name, sep, value = text.partition("=")
        name = raw_name.strip().lower().replace("-", "_")
        factory = SAMPLERS.get(name)
        if factory is None:
            close = difflib.get_close_matches(name, SAMPLERS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SamplerSpecError(f"unknown sampler {raw_name.strip()!r}{hint}; known samplers: {known_samplers()}")
        stages.append(factory(value.strip() if sep else None, name))
    if len(stages) == 1:
        return stages[0]
    try:
        return SamplerChain(stages)
    except ValueError as err:
        raise SamplerSpecError(f"sampler spec {spec!r}: {err}") from err


def known_samplers() -> str:
    """The spec language's stages, e.g. ``"categorical, greedy, min_p=P, ..."``."""
    return ", ".join(SAMPLERS[name].usage(name) for name in sorted(SAMPLERS))
