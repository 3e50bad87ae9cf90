"""The safety state machine: pure and clock-free (time arrives with each event).

States NORMAL, DEGRADED, RECOVERING and SAFE_STOP (:class:`vigil.schemas.State`); the
transition table is :data:`TRANSITIONS`; thresholds come from a validated :class:`Policy`.
"""

from vigil.fsm._machine import (
    TRANSITIONS,
    Decision,
    MachineStatistics,
    Route,
    SafetyMachine,
    Snapshot,
    Transition,
)
from vigil.fsm._policy import PROBE_MODES, Policy

__all__ = [
    "PROBE_MODES",
    "TRANSITIONS",
    "Decision",
    "MachineStatistics",
    "Policy",
    "Route",
    "SafetyMachine",
    "Snapshot",
    "Transition",
]
