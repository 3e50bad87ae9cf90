"""``vigil serve``: the supervisor as a long-lived service.

:class:`Service` starts, in order, the flight log, the :class:`~vigil.workers.WorkerPool`,
the :class:`~vigil.supervisor.Supervisor`, the metrics and health endpoints
(:class:`ServiceMetrics`, :class:`HealthServer`), the Unix socket (:class:`SocketServer`), and
tells systemd (:class:`SystemdNotifier`, :class:`WatchdogPinger`); SIGTERM drains. Its
configuration is :class:`ServeConfig` (a TOML file). :class:`Client` talks to it over the
framed, versioned socket protocol (docs/PROTOCOL.md). docs/SERVICE.md.

Names are loaded on first use, so that ``from vigil.service import Client`` imports only the
client and the protocol, not the service's dependencies (prometheus_client, sdnotify,
transitions, cryptography, safetensors).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vigil.schemas import Result
    from vigil.service._client import Client, TokenResult
    from vigil.service._config import ServeConfig
    from vigil.service._metrics import Health, HealthServer, ServiceMetrics
    from vigil.service._server import SocketServer
    from vigil.service._service import Service
    from vigil.service._systemd import SystemdNotifier, WatchdogPinger, watchdog_interval_s

_WHERE = {
    "Client": "_client",
    "Health": "_metrics",
    "HealthServer": "_metrics",
    "Result": "_client",  # vigil.schemas.Result: one type for both sides
    "ServeConfig": "_config",
    "Service": "_service",
    "ServiceMetrics": "_metrics",
    "SocketServer": "_server",
    "SystemdNotifier": "_systemd",
    "TokenResult": "_client",
    "WatchdogPinger": "_systemd",
    "watchdog_interval_s": "_systemd",
}

__all__ = [
    "Client",
    "Health",
    "HealthServer",
    "Result",
    "ServeConfig",
    "Service",
    "ServiceMetrics",
    "SocketServer",
    "SystemdNotifier",
    "TokenResult",
    "WatchdogPinger",
    "watchdog_interval_s",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'vigil.service' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"vigil.service.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
