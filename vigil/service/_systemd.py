"""systemd integration of ``vigil serve``: readiness, status, and a watchdog that tells the truth.

Theory of operation
-------------------
Under a ``Type=notify`` unit systemd passes ``NOTIFY_SOCKET``; :class:`SystemdNotifier` sends
``READY=1`` once the service serves, ``STATUS=`` lines an operator sees in ``systemctl
status``, ``STOPPING=1`` when it drains, and ``WATCHDOG=1`` pings. Outside systemd (``"auto"``
without ``NOTIFY_SOCKET``) every call is a no-op.

The watchdog is the service's promise to systemd that it can still give trustworthy answers,
not merely that a thread is running. :class:`WatchdogPinger` pings only while its
``healthy_fn`` says so; when the state machine is in SAFE_STOP or no model worker is left, it
withholds the ping and sends one ``STATUS=`` line with the reason (DIA-7212), so that systemd
restarts the unit after ``WatchdogSec`` and the operator sees why. A ping interval of half
``WATCHDOG_USEC`` follows the ``sd_watchdog_enabled(3)`` convention.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping

import sdnotify  # type: ignore[import-untyped]

from vigil import _diagnostics as D
from vigil.errors import InvalidArgument, ServiceConfigError

HealthyFn = Callable[[], tuple[bool, str]]


class SystemdNotifier:
    """Sends ``sd_notify`` messages, one datagram each.

    Args:
        enabled: ``"auto"`` (notify when ``NOTIFY_SOCKET`` is set and reachable), True
            (required) or False.

    Raises:
        ServiceConfigError: DIA-7211, ``enabled=True`` but ``NOTIFY_SOCKET`` is unset or its
            socket cannot be reached.
    """

    def __init__(self, enabled: bool | str = "auto") -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = address or None
        self._notifier: sdnotify.SystemdNotifier | None = None
        if enabled is False or (enabled == "auto" and not address):
            return
        if not address:
            raise ServiceConfigError(
                "[systemd].notify = true, but NOTIFY_SOCKET is unset: not started by a "
                "Type=notify unit",
                diagnostic=D.SYSTEMD_NOTIFY_UNAVAILABLE,
            )
        try:  # probe first: sdnotify would leak its socket when the connect fails
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                probe.connect("\0" + address[1:] if address[0] == "@" else address)
        except OSError as exc:
            if enabled == "auto":
                return
            raise ServiceConfigError(
                f"NOTIFY_SOCKET={address!r}: cannot reach systemd's socket: {exc}",
                diagnostic=D.SYSTEMD_NOTIFY_UNAVAILABLE,
            ) from exc
        notifier = sdnotify.SystemdNotifier(debug=False)  # a failed send never breaks us
        if notifier.socket is None:  # gone between the probe and now
            return
        # a reader that stopped reading must not stop us: a full queue drops the datagram
        # (sdnotify swallows the BlockingIOError) instead of blocking the watchdog thread
        notifier.socket.setblocking(False)
        self._notifier = notifier

    @property
    def enabled(self) -> bool:
        """True when messages are actually sent."""
        return self._notifier is not None

    def notify(self, *assignments: str) -> None:
        """Send ``assignments`` (``"KEY=value"``) as one datagram; a no-op when disabled."""
        if self._notifier is not None:
            self._notifier.notify("\n".join(assignments))

    def ready(self, status: str | None = None) -> None:
        """The service serves: ``READY=1`` (and ``STATUS=``)."""
        self.notify("READY=1", *_status(status))

    def status(self, text: str) -> None:
        """A one-line status for ``systemctl status``."""
        self.notify(*_status(text))

    def stopping(self, status: str | None = None) -> None:
        """The service drains and stops: ``STOPPING=1`` (and ``STATUS=``)."""
        self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> None:
        """One watchdog ping: ``WATCHDOG=1``."""
        self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more start-up or stop time: ``EXTEND_TIMEOUT_USEC=``."""
        self.notify(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1e6))}")

    def close(self) -> None:
        """Close the socket; later calls send nothing."""
        if self._notifier is not None:
            self._notifier.socket.close()
            self._notifier = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.split()),)  # one line: newlines would end the value


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """How often to ping: half of ``WATCHDOG_USEC``, or None when the watchdog is off.

    None too when ``WATCHDOG_PID`` names another process (the watchdog is not ours) or the
    values are malformed, as ``sd_watchdog_enabled(3)`` does.
    """
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec:
        return None
    try:
        value = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class WatchdogPinger:
    """Pings systemd's watchdog while the service is healthy, and only then.

    Args:
        notifier: where pings go.
        interval_s: seconds between checks (see :func:`watchdog_interval_s`).
        healthy_fn: returns ``(healthy, reason)``, e.g. ``lambda: health_fn().alive()``. An
            exception counts as unhealthy (fail closed).
        wait: ``wait(seconds) -> bool`` sleeps between ticks and returns True to stop; by
            default an internal event's ``wait``, set by :meth:`close`.

    The thread (started by :meth:`start`) calls :meth:`tick` at once and then every
    ``interval_s``; tests call :meth:`tick` directly.
    """

    def __init__(
        self,
        notifier: SystemdNotifier,
        interval_s: float,
        healthy_fn: HealthyFn,
        *,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        if not interval_s > 0:
            raise InvalidArgument(
                f"WatchdogPinger: interval_s={interval_s!r} must be positive (half of "
                "systemd's WATCHDOG_USEC, as watchdog_interval_s() returns it)"
            )
        self.notifier = notifier
        self.interval_s = interval_s
        self.healthy_fn = healthy_fn
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._thread: threading.Thread | None = None
        self.pings = 0
        self.withheld: str | None = None  # the reason, while pings are withheld

    def tick(self) -> bool:
        """Check health once; ping when healthy. Returns whether a ping was sent.

        On the first unhealthy check, sends ``STATUS=DIA-7212 ...: <reason>`` once and stops
        pinging; when health returns (an operator reset), pinging resumes with a new status.
        """
        try:
            healthy, reason = self.healthy_fn()
        except Exception as exc:
            healthy, reason = False, f"health check failed: {exc!r}"
        if healthy:
            if self.withheld is not None:
                self.withheld = None
                self.notifier.status(f"watchdog resumed: {reason}")
            self.notifier.watchdog()
            self.pings += 1
            return True
        if self.withheld is None:
            self.withheld = reason
            self.notifier.status(
                f"{D.WATCHDOG_WITHHELD.code} {D.WATCHDOG_WITHHELD.name}: {reason}; "
                "systemd restarts the unit after WatchdogSec"
            )
        return False

    def start(self) -> None:
        """Start the daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vigil-sd-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self.tick()
            if self._wait(self.interval_s) or self._stop.is_set():
                return

    def close(self) -> None:
        """Stop the thread (it sends nothing more)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
