"""One call's supervision: every call routed, bounded in time, checked and audited.

:class:`Supervisor` wraps a primary model and a chain of fallbacks (:class:`FallbackModel`,
:class:`LastGood`, :class:`Constant`); one :class:`Watchdog` thread enforces every call's
deadline; the state machine (:mod:`vigil.fsm`) decides who answers; every call and state
change is recorded in the flight log (:mod:`vigil.auditlog`). :func:`classify` and
:func:`digest` are the checks and SHA-256 digests applied to every tensor that crosses the
boundary. :func:`load_signed_model` loads a signed model directory (audited),
:class:`ModelReloader` hot-swaps a new verified and probed version in, and :func:`replay`
re-runs the state machine over a log. docs/SUPERVISOR.md.

This package owns threads and torch, not processes or sockets: running the model in worker
processes is :mod:`vigil.workers`; ``vigil serve`` is :mod:`vigil.service`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vigil.schemas import Result
    from vigil.supervisor._digester import DigesterStatistics
    from vigil.supervisor._fallbacks import Constant, Fallback, FallbackModel, LastGood
    from vigil.supervisor._reload import (
        ModelReloader,
        ReloadResult,
        ReloadStatistics,
        ReloadStatus,
        load_signed_model,
    )
    from vigil.supervisor._replay import ReplayFinding, ReplayReport, replay
    from vigil.supervisor._supervisor import KnownAnswer, Supervisor, SupervisorStatistics
    from vigil.supervisor._tensors import classify, digest
    from vigil.supervisor._watchdog import Watchdog

# Loaded on first use (PEP 562): ``vigil replay`` and the log tools need the replay module
# alone, not torch, which the rest imports (replay started in ~3.8 s instead of ~0.7 s).
_WHERE = {
    "Result": "vigil.schemas",
    "DigesterStatistics": "vigil.supervisor._digester",
    **dict.fromkeys(
        ("Constant", "Fallback", "FallbackModel", "LastGood"), "vigil.supervisor._fallbacks"
    ),
    **dict.fromkeys(
        ("ModelReloader", "ReloadResult", "ReloadStatistics", "ReloadStatus", "load_signed_model"),
        "vigil.supervisor._reload",
    ),
    **dict.fromkeys(("ReplayFinding", "ReplayReport", "replay"), "vigil.supervisor._replay"),
    **dict.fromkeys(
        ("KnownAnswer", "Supervisor", "SupervisorStatistics"), "vigil.supervisor._supervisor"
    ),
    **dict.fromkeys(("classify", "digest"), "vigil.supervisor._tensors"),
    "Watchdog": "vigil.supervisor._watchdog",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'vigil.supervisor' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "Constant",
    "DigesterStatistics",
    "Fallback",
    "FallbackModel",
    "KnownAnswer",
    "LastGood",
    "ModelReloader",
    "ReloadResult",
    "ReloadStatistics",
    "ReloadStatus",
    "ReplayFinding",
    "ReplayReport",
    "Result",
    "Supervisor",
    "SupervisorStatistics",
    "Watchdog",
    "classify",
    "digest",
    "load_signed_model",
    "replay",
]
