"""Models guarded by vigil. Until the validated reference decoder and signed artifacts land,
:class:`TinyReference` is the small deterministic model the demo and the tests use."""

from vigil.model._tiny import IN_FEATURES, OUT_FEATURES, TinyFallback, TinyReference

__all__ = ["IN_FEATURES", "OUT_FEATURES", "TinyFallback", "TinyReference"]
