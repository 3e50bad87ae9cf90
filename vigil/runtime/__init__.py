"""The supervisor runtime: every call routed, bounded in time, checked and audited.

:class:`Supervisor` wraps a primary model and a chain of fallbacks; one :class:`Watchdog`
thread enforces every call's deadline; the state machine (:mod:`vigil.fsm`) decides who
answers; every call and state change is recorded in the flight log (:mod:`vigil.auditlog`).
:func:`load_signed_model` loads a signed model directory (audited) and :class:`ModelReloader`
hot-swaps a new verified and probed version in.

Process isolation and the service: :class:`WorkerPool` runs the model in spawned worker
processes with a hot standby (``Supervisor(pool, isolation="process")``); :class:`Service`
is ``vigil serve`` (config :class:`ServeConfig`, the socket :class:`SocketServer` and its
:class:`Client`, :class:`ServiceMetrics` and :class:`HealthServer`, systemd's
:class:`SystemdNotifier` and :class:`WatchdogPinger`); docs/SERVICE.md.
"""

from vigil.runtime._client import Client, ClientResult
from vigil.runtime._config import ServeConfig
from vigil.runtime._fallbacks import Constant, Fallback, FallbackModel, LastGood
from vigil.runtime._faults import Fault, FaultPlan, FaultyModel, inject
from vigil.runtime._metrics import Health, HealthServer, ServiceMetrics
from vigil.runtime._models import TRIGGERS, build_reference, triggered_model
from vigil.runtime._reload import (
    ModelReloader,
    ReloadResult,
    ReloadStatistics,
    ReloadStatus,
    load_signed_model,
)
from vigil.runtime._replay import ReplayFinding, ReplayReport, replay
from vigil.runtime._server import SocketServer
from vigil.runtime._service import Service
from vigil.runtime._supervisor import (
    KnownAnswer,
    Result,
    Supervisor,
    SupervisorStatistics,
)
from vigil.runtime._systemd import SystemdNotifier, WatchdogPinger, watchdog_interval_s
from vigil.runtime._tensors import classify, digest
from vigil.runtime._watchdog import Watchdog
from vigil.runtime._worker import (
    PoolStatistics,
    WorkerEvent,
    WorkerPool,
    WorkerSpec,
)

__all__ = [
    "TRIGGERS",
    "Client",
    "ClientResult",
    "Constant",
    "Fallback",
    "FallbackModel",
    "Fault",
    "FaultPlan",
    "FaultyModel",
    "Health",
    "HealthServer",
    "KnownAnswer",
    "LastGood",
    "ModelReloader",
    "PoolStatistics",
    "ReloadResult",
    "ReloadStatistics",
    "ReloadStatus",
    "ReplayFinding",
    "ReplayReport",
    "Result",
    "ServeConfig",
    "Service",
    "ServiceMetrics",
    "SocketServer",
    "Supervisor",
    "SupervisorStatistics",
    "SystemdNotifier",
    "Watchdog",
    "WatchdogPinger",
    "WorkerEvent",
    "WorkerPool",
    "WorkerSpec",
    "build_reference",
    "classify",
    "digest",
    "inject",
    "load_signed_model",
    "replay",
    "triggered_model",
    "watchdog_interval_s",
]
