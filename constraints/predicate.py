"""Predicate: an arbitrary Python check on the decoded prefix, as a constraint.

``Predicate(prefix_fn, complete=None)``: ``prefix_fn(text) -> bool`` says whether a prefix can still be extended
into an acceptable text, ``complete(text) -> bool`` whether a text is acceptable as it stands (default:
``prefix_fn``). The state is the prefix's bytes. Bytes-safe: the functions see the prefix decoded up to its last
complete UTF-8 character (a token may end inside a character); a prefix that is not UTF-8 is dead.

Meant for AWRS, which calls ``advance`` only on drawn tokens. ``mask`` would call ``prefix_fn`` once per
vocabulary entry (262,144 calls per step on Gemma), so it is refused unless ``full_scan=True``.

Example:
    >>> no_e = Predicate(lambda text: "e" not in text)
    >>> tc = no_e.bind(vocabulary)                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from decoding.constraints.base import DEAD, Constraint, TokenConstraint


class PredicateError(RuntimeError):
    """A user predicate raised; the message carries the prefix it was called on."""


class Predicate(Constraint):
    """A constraint given by Python functions of the text (see the module docstring)."""

    has_mask = False  # a mask would call the predicate once per vocabulary entry

    def __init__(self, prefix_fn: Callable[[str], bool], complete: Callable[[str], bool] | None = None,
                 full_scan: bool = False):
        if not callable(prefix_fn):
            raise TypeError(f"prefix_fn: expected a function of the prefix text, got {type(prefix_fn).__name__}")
        if complete is not None and not callable(complete):
            raise TypeError(f"complete: expected a function of the text or None, got {type(complete).__name__}")
        self.prefix_fn, self.complete, self.full_scan = prefix_fn, complete or prefix_fn, full_scan

    def bind(self, vocabulary, device="cpu") -> "TokenPredicate":
        return TokenPredicate(self, vocabulary, device)

    def __repr__(self) -> str:
        return f"Predicate({getattr(self.prefix_fn, '__qualname__', type(self.prefix_fn).__name__)})"


class TokenPredicate(TokenConstraint):
    """A :class:`Predicate` over a vocabulary; states are the prefix bytes (``DEAD`` once rejected)."""

    has_mask = False

    def __init__(self, predicate: Predicate, vocabulary, device="cpu"):
        self.predicate, self.vocabulary, self.device = predicate, vocabulary, device

    def start(self) -> bytes:
        return b""

    def advance(self, state, token_id: int):
        if self.is_dead(state) or self.vocabulary.is_special[token_id]:
            return DEAD
        prefix = state + self.vocabulary.token_bytes[token_id]
        text = _complete_characters(prefix)
        return prefix if text is not None and self._call(self.predicate.prefix_fn, text) else DEAD

    def is_accepting(self, state) -> bool:
        if self.is_dead(state):
            return False
        try:
            text = state.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return bool(self._call(self.predicate.complete, text))

    def can_finish(self, state) -> bool:
        return not self.is_dead(state)

    def mask(self, state) -> torch.Tensor:
        if not self.predicate.full_scan:
            raise ValueError(
                "Predicate.mask would call the predicate once per vocabulary entry; use dc.AWRS(predicate), "
                "or pass full_scan=True to Predicate to accept the cost"
            )
        allowed = torch.tensor([self.advance(state, t) != DEAD for t in range(self.vocabulary.size)])
        for eos in self.vocabulary.eos_token_ids:
            allowed[eos] = self.is_accepting(state)
        return allowed.to(self.device)

    def _call(self, fn: Callable[[str], bool], text: str) -> bool:
        try:
            return bool(fn(text))
        except Exception as err:  # the user's function: report which prefix broke it
            raise PredicateError(f"the predicate raised {type(err).__name__} on the prefix {text!r}: {err}") from err


def _complete_characters(data: bytes) -> str | None:
    """``data`` decoded up to its last complete UTF-8 character; None if no continuation can make it UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data":  # a character cut by the token boundary: wait for the rest
            return data[: err.start].decode("utf-8")
        return None
