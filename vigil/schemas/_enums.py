"""Enumerations stored in flight-log records.

Values are part of the on-disk format: never renumber a member. A reader meeting a value it
does not know keeps the integer (see :func:`coerce`), so that a newer writer's records stay
readable by an older ``vigil dump``.
"""

from __future__ import annotations

import enum
from typing import TypeVar


@enum.unique
class RecordType(enum.IntEnum):
    """What a record body holds (record header byte 6)."""

    LIFECYCLE = 1
    INFERENCE = 2
    TRANSITION = 3
    REJECTED = 4
    ANNOTATION = 5
    CHECKPOINT = 6  # format 1.1: a signed checkpoint over the chain (docs/SECURITY.md)
    OUTPUT_DIGEST = 7  # format 1.2: the output digest of a DIGEST_FOLLOWS INFERENCE record


@enum.unique
class State(enum.IntEnum):
    """The safety state machine's states, as recorded."""

    UNKNOWN = 0
    NORMAL = 1
    DEGRADED = 2
    RECOVERING = 3
    SAFE_STOP = 4


@enum.unique
class ServedBy(enum.IntEnum):
    """Who produced the answer the caller received."""

    NONE = 0  # no trustworthy answer: the caller was told so
    PRIMARY = 1
    FALLBACK = 2  # a fallback model or callable
    LAST_GOOD = 3  # the last good output, within its maximum age
    CONSTANT = 4  # a constant safe output


@enum.unique
class Outcome(enum.IntEnum):
    """How the guarded call ended."""

    OK = 0
    SLOW = 1
    TIMEOUT = 2
    ERROR = 3
    INVALID_OUTPUT = 4  # NaN/Inf or an output-contract violation
    WORKER_LOST = 5
    OUT_OF_MEMORY = 6
    DEVICE_FATAL = 7  # a process-fatal device error (sticky CUDA error)
    REJECTED = 8  # bad input, refused before the model ran
    UNAVAILABLE = 9  # no primary and no fallback could answer


class CallFlags(enum.IntFlag):
    """INFERENCE record ``flags``: what kind of call it was."""

    PROBE = 1  # a recovery probe (RECOVERING)
    SHADOW = 2  # the primary ran only to be checked; the fallback answered
    COUNTED = 4  # the state machine counted this record's outcome (replay counts it too)
    KNOWN_ANSWER = 8  # a known-answer probe run by the supervisor, not a caller's request
    DIGEST_FOLLOWS = 16  # format 1.2: output_digest is zero; an OUTPUT_DIGEST record follows


@enum.unique
class LifecycleEvent(enum.IntEnum):
    """Lifecycle events: the writer's (OPENED, CLOSED) and the guarded model's."""

    OPENED = 1
    CLOSED = 2
    MODEL_LOADED = 3  # a signed model directory verified and loaded
    MODEL_REFUSED = 4  # a model directory refused at load (detail: code, reason)
    MODEL_SWAPPED = 5  # the supervisor's primary replaced (detail: old and new digest)
    RELOAD_FAILED = 6  # a hot reload refused its candidate; the old model serves on
    WORKER_READY = 7  # a model worker process loaded and warmed up (detail: pid, role, digest)
    WORKER_LOST = 8  # a worker process was lost: died, killed at a deadline, fatal, heartbeat
    WORKER_PROMOTED = 9  # the hot standby became the active worker (detail: failover_ns)
    WORKER_START_FAILED = 10  # a worker could not build, load or warm up its model


@enum.unique
class CheckpointReason(enum.IntEnum):
    """Why the writer sealed a checkpoint."""

    RECORDS = 1  # the record interval elapsed
    TIME = 2  # the time interval elapsed
    OPENED = 3  # the writer opened the log (covers what a crash left unsealed)
    CLOSED = 4  # the writer closed the log (covers everything)
    REQUESTED = 5  # an explicit checkpoint() call


@enum.unique
class ClockSource(enum.IntEnum):
    """Where the writer's timestamps come from."""

    SYSTEM = 1  # CLOCK_REALTIME and CLOCK_MONOTONIC
    INJECTED = 2  # a clock supplied by the caller (tests, simulation, replay)
    TAI = 3  # CLOCK_TAI (International Atomic Time, as the kernel's TAI offset sets it)
    PTP = 4  # a PTP hardware clock (/dev/ptpN, a dynamic POSIX clock)


@enum.unique
class Durability(enum.IntEnum):
    """The writer's sync policy, as recorded in LIFECYCLE records."""

    NONE = 0
    BATCH = 1
    ALWAYS = 2


E = TypeVar("E", bound=enum.IntEnum)


def coerce(kind: type[E], value: int) -> E | int:
    """Return ``kind(value)``, or the plain integer when ``value`` is not a member."""
    try:
        return kind(value)
    except ValueError:
        return value
