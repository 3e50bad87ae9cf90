"""The supervisor runtime: every call routed, bounded in time, checked and audited.

:class:`Supervisor` wraps a primary model and a chain of fallbacks; one :class:`Watchdog`
thread enforces every call's deadline; the state machine (:mod:`vigil.fsm`) decides who
answers; every call and state change is recorded in the flight log (:mod:`vigil.auditlog`).
"""

from vigil.runtime._fallbacks import Constant, Fallback, FallbackModel, LastGood
from vigil.runtime._faults import Fault, FaultPlan, FaultyModel, inject
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
    "ReplayFinding",
    "ReplayReport",
    "Result",
    "Supervisor",
    "SupervisorStatistics",
    "Watchdog",
    "classify",
    "digest",
    "inject",
    "replay",
]
