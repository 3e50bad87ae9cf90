"""The supervisor runtime: every call routed, bounded in time, checked and audited.

:class:`Supervisor` wraps a primary model and a chain of fallbacks; one :class:`Watchdog`
thread enforces every call's deadline; the state machine (:mod:`vigil.fsm`) decides who
answers; every call and state change is recorded in the flight log (:mod:`vigil.auditlog`).
:func:`load_signed_model` loads a signed model directory (audited) and :class:`ModelReloader`
hot-swaps a new verified and probed version in.
"""

from vigil.runtime._fallbacks import Constant, Fallback, FallbackModel, LastGood
from vigil.runtime._faults import Fault, FaultPlan, FaultyModel, inject
from vigil.runtime._reload import (
    ModelReloader,
    ReloadResult,
    ReloadStatistics,
    ReloadStatus,
    load_signed_model,
)
from vigil.runtime._replay import ReplayFinding, ReplayReport, replay
from vigil.runtime._supervisor import (
    KnownAnswer,
    Result,
    Supervisor,
    SupervisorStatistics,
)
from vigil.runtime._tensors import classify, digest
from vigil.runtime._watchdog import Watchdog

__all__ = [
    "Constant",
    "Fallback",
    "FallbackModel",
    "Fault",
    "FaultPlan",
    "FaultyModel",
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
    "inject",
    "load_signed_model",
    "replay",
]
