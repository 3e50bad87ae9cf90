"""What ``isolation="process"`` needs of a pool of model processes.

The supervisor knows nothing of processes: it drives any object with this shape, and
:class:`vigil.workers.WorkerPool` is the one vigil ships. Keeping the contract here is what
lets the dependency point down (``vigil.workers`` imports ``vigil.supervisor``, never the
reverse; tests/test_architecture.py).
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeGuard


class WorkerEvent(enum.Enum):
    """What a pool reports through ``on_event`` (recorded as LIFECYCLE records)."""

    READY = "ready"  # a worker loaded its model and warmed up
    LOST = "lost"  # a worker was lost: died, killed at a deadline, fatal error, heartbeat
    PROMOTED = "promoted"  # the standby became an active worker
    START_FAILED = "start_failed"  # a worker could not be started or loaded


EventSink = Callable[[WorkerEvent, dict[str, Any]], None]


class ProcessPool(Protocol):
    """A pool of processes that run the primary model (``Supervisor(pool,
    isolation="process")``).

    ``call`` enforces the deadline itself (by killing a worker past it) and raises the
    :class:`~vigil.errors.WorkerError` family; ``on_event`` is set by the supervisor, which
    records every event and feeds losses and promotions to the state machine.
    """

    on_event: EventSink | None

    @property
    def started(self) -> bool: ...

    @property
    def digest(self) -> bytes: ...

    def start(self) -> None: ...

    def check_input(self, x: Any) -> None: ...

    def call(self, x: Any, deadline_ns: int) -> tuple[Any, int]: ...

    def close(self) -> None: ...

    def __call__(self, x: Any) -> Any: ...


_MEMBERS = ("on_event", "started", "digest", "start", "check_input", "call", "close", "__call__")
_MISSING = object()


def is_process_pool(obj: object) -> TypeGuard[ProcessPool]:
    """Whether ``obj`` has the shape of a :class:`ProcessPool`, looked up without running any
    of its properties (a pool's ``digest`` raises until it has started)."""
    return all(inspect.getattr_static(obj, name, _MISSING) is not _MISSING for name in _MEMBERS)
