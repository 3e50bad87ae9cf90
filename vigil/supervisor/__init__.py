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
