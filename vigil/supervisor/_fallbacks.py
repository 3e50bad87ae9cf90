"""Fallbacks: who answers when the primary may not or cannot.

A supervisor holds a chain of fallbacks and asks them in order; the first that can answer
does. Each answer says who served it (:class:`~vigil.schemas.ServedBy`) and how old it is:
a fallback model answers now (age 0); the last good output answers with the age of that
output, up to a maximum; a constant answers with a value fixed in advance. When none can
answer, the caller is told plainly (``Unavailable``) instead of receiving a guess.

A fallback runs on the caller's thread after the primary's deadline, so it must be simple
and bounded: a small model, a cached value, a constant.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, Union

import torch

from vigil.errors import ConfigError, FallbackFailed
from vigil.schemas import ServedBy


class Fallback(Protocol):
    """One link of the chain."""

    served_by: ServedBy
    name: str

    def answer(self, x: Any, now_ns: int) -> tuple[Any, int]:
        """Return ``(output, age_ns)`` or raise :class:`FallbackFailed`."""
        ...


class FallbackModel:
    """A second, simpler model (or any callable) that answers the same input."""

    served_by = ServedBy.FALLBACK

    def __init__(self, model: Callable[[Any], Any], name: str = "fallback model") -> None:
        if not callable(model):
            raise ConfigError(f"{name}: a fallback model must be callable")
        self.model = model
        self.name = name

    def answer(self, x: Any, now_ns: int) -> tuple[Any, int]:
        with torch.no_grad():  # inference, as the primary runs (no autograd graph)
            return self.model(x), 0


class LastGood:
    """The primary's last good output, while it is younger than ``max_age_ns``.

    The supervisor stores every good primary output here by reference, with its digest, and
    checks it again before serving it: an output changed in place since it was checked (a
    model that reuses a static output buffer, a caller that edits its answer) no longer has
    the digest it was recorded with, and is skipped, never served. Useful when the input
    changes slowly, e.g. a perception result repeated for a few frames while the primary
    recovers.
    """

    served_by = ServedBy.LAST_GOOD

    def __init__(self, max_age_ns: int, name: str = "last good output") -> None:
        if not isinstance(max_age_ns, int) or max_age_ns <= 0:
            raise ConfigError(f"{name}: max_age_ns must be a positive integer (ns)")
        self.max_age_ns = max_age_ns
        self.name = name
        self._value: Any = None
        self._at: int | None = None
        self._digest: bytes | None = None
        self._lock = threading.Lock()

    def remember(self, output: Any, now_ns: int, digest: bytes | None = None) -> None:
        """Keep ``output`` (checked, served at ``now_ns``) and its SHA-256 digest when known
        (None: it is being digested off the caller's path)."""
        with self._lock:
            self._value, self._at, self._digest = output, now_ns, digest

    def answer(self, x: Any, now_ns: int) -> tuple[Any, int]:
        value, age, _ = self.recall(now_ns)
        return value, age

    def recall(self, now_ns: int) -> tuple[Any, int, bytes | None]:
        """The output, its age and the digest it was served with (None: not known here).

        Raises:
            FallbackFailed: none yet, or older than ``max_age_ns``.
        """
        with self._lock:
            value, at, digest = self._value, self._at, self._digest
        if at is None:
            raise FallbackFailed("no good output yet")
        age = now_ns - at
        if age > self.max_age_ns:
            raise FallbackFailed(
                f"last good output is {age / 1e6:.1f} ms old, limit {self.max_age_ns / 1e6:.1f} ms"
            )
        return value, age, digest


class Constant:
    """A fixed, known-safe output (e.g. "no obstacle detected, brake to a stop")."""

    served_by = ServedBy.CONSTANT

    def __init__(self, value: Any, name: str = "constant safe output") -> None:
        self.value = value
        self.name = name

    def answer(self, x: Any, now_ns: int) -> tuple[Any, int]:
        return self.value, 0


FallbackLink = Union["FallbackModel", "LastGood", "Constant", Callable[[Any], Any]]
"""One link as a caller may give it: a fallback object, or a plain callable (a model)."""
FallbackChain = Union[FallbackLink, "list[FallbackLink]", "tuple[FallbackLink, ...]", None]
"""What ``Supervisor(fallback=...)`` takes: nothing, one link, or the chain in order."""


def as_chain(fallback: FallbackChain) -> list[Fallback]:
    """Normalise the ``fallback=`` argument: None, one fallback, a callable, or a list."""
    if fallback is None:
        return []
    items = list(fallback) if isinstance(fallback, list | tuple) else [fallback]
    chain: list[Fallback] = []
    for item in items:
        if isinstance(item, FallbackModel | LastGood | Constant):
            chain.append(item)
        elif callable(item):
            chain.append(FallbackModel(item))
        else:
            raise ConfigError(
                f"fallback {item!r}: use a callable, FallbackModel, LastGood or Constant"
            )
    return chain
