"""Deprecated: ``vigil.runtime`` was split by concern (kept for one release).

==========================  =========================================================
old name                    new home
==========================  =========================================================
Supervisor, fallbacks,      :mod:`vigil.supervisor`
watchdog, reload, replay
WorkerPool, WorkerSpec      :mod:`vigil.workers`
Service, Client, config,    :mod:`vigil.service`
metrics, systemd
FaultPlan, triggered_model  :mod:`vigil.testing`
==========================  =========================================================

Every name still resolves here, with a :class:`DeprecationWarning` that names its new home.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = {
    "TRIGGERS": "vigil.testing",
    "Client": "vigil.service",
    "ClientResult": "vigil.schemas:Result",  # one Result type for both sides now
    "Constant": "vigil.supervisor",
    "Fallback": "vigil.supervisor",
    "FallbackModel": "vigil.supervisor",
    "Fault": "vigil.testing",
    "FaultPlan": "vigil.testing",
    "FaultyModel": "vigil.testing",
    "Health": "vigil.service",
    "HealthServer": "vigil.service",
    "KnownAnswer": "vigil.supervisor",
    "LastGood": "vigil.supervisor",
    "ModelReloader": "vigil.supervisor",
    "PoolStatistics": "vigil.workers",
    "ReloadResult": "vigil.supervisor",
    "ReloadStatistics": "vigil.supervisor",
    "ReloadStatus": "vigil.supervisor",
    "ReplayFinding": "vigil.supervisor",
    "ReplayReport": "vigil.supervisor",
    "Result": "vigil.supervisor",
    "ServeConfig": "vigil.service",
    "Service": "vigil.service",
    "ServiceMetrics": "vigil.service",
    "SocketServer": "vigil.service",
    "Supervisor": "vigil.supervisor",
    "SupervisorStatistics": "vigil.supervisor",
    "SystemdNotifier": "vigil.service",
    "Watchdog": "vigil.supervisor",
    "WatchdogPinger": "vigil.service",
    "WorkerEvent": "vigil.workers",
    "WorkerPool": "vigil.workers",
    "WorkerSpec": "vigil.workers",
    "build_reference": "vigil.testing",
    "classify": "vigil.supervisor",
    "digest": "vigil.supervisor",
    "inject": "vigil.testing",
    "load_signed_model": "vigil.supervisor",
    "replay": "vigil.supervisor",
    "triggered_model": "vigil.testing",
    "watchdog_interval_s": "vigil.service",
}

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


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'vigil.runtime' has no attribute {name!r}")
    warnings.warn(
        f"vigil.runtime.{name} moved to {home.replace(':', '.')}"
        f"{'' if ':' in home else '.' + name}; import it from there "
        "(vigil.runtime is removed in the next release)",
        DeprecationWarning,
        stacklevel=2,
    )
    module, _, new_name = home.partition(":")
    return getattr(importlib.import_module(module), new_name or name)
