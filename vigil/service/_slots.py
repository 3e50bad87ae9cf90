"""Who may be closed to make room when the service socket's connection table is full (sans-IO).

Theory of operation
-------------------
A connection's :class:`Slot` goes through three phases, one request after another:

* *idle*: waiting for, or part way through, the 32-byte header of its next request (a silent
  new connection, a kept-alive one between requests, a client trickling a header). Nothing of
  a request has been accepted: it may be closed at any time, as the read timeout would.
* *body*: a whole header was accepted and its body is arriving.
* *serving*: the whole frame is in; the request is answered. Never closed to make room (a call
  that reached the supervisor is recorded: its answer must not be lost for a newcomer).

When ``capacity`` connections are open and one more arrives, :func:`choose` picks whom to close:
the connection idle the longest; failing that, the *slowest* body still arriving
(:func:`slowest_body`), provided it has had ``grace_s`` and is arriving slower than
``min_rate`` bytes a second on average, or has received nothing for ``grace_s`` (a legitimate
client on a Unix socket sends at memory speed; a client that trickles a body, or sends most of
it and stalls, is holding a slot, not sending a request); failing that, nobody, and the
newcomer is refused busy. The server applies :func:`slowest_body` the same way to the bodies
that hold its request-memory budget when a request cannot get the bytes it needs. So neither
idle connections nor trickled or stalled headers or bodies can lock active clients out: each
newcomer pushes one of them out. Time comes in as ``now``: this module owns no clock, socket
or thread.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from typing import Any


class Evict(enum.Enum):
    """Why :func:`choose` closes a connection."""

    IDLE = "idle"  # no request accepted on it: close quietly
    SLOW_BODY = "slow body"  # its body arrives slower than the minimum rate: answer busy


class Slot:
    """One open connection's place in the table (mutated under the server's lock)."""

    __slots__ = (
        "body_since",
        "busy",
        "evicted",
        "for_budget",
        "held",
        "idle_since",
        "progress_at",
        "received",
        "thread",
    )

    def __init__(self, thread: Any, now: float) -> None:
        self.thread = thread
        self.busy = False  # a whole header accepted, until its answer is sent
        self.body_since: float | None = None  # when its body began to arrive (body phase)
        self.received = 0  # body bytes in so far (body phase)
        self.progress_at = now  # when its body's last bytes arrived (body phase)
        self.held = 0  # bytes charged to the server's request-memory budget
        self.evicted = False  # closed to make room: its thread leaves without a violation
        self.for_budget = False  # ... and the room was request memory, not a connection
        self.idle_since = now

    def start_body(self, now: float) -> None:
        self.busy, self.body_since, self.received, self.progress_at = True, now, 0, now

    def arrived(self, received: int, now: float) -> None:
        """``received`` body bytes are in, the last of them at ``now``."""
        self.received, self.progress_at = received, now

    def end_body(self) -> None:
        self.body_since = None

    def to_idle(self, now: float) -> None:
        self.busy, self.body_since, self.idle_since = False, None, now


def choose(
    slots: Iterable[tuple[Hashable, Slot]],
    capacity: int,
    now: float,
    *,
    grace_s: float,
    min_rate: float,
) -> tuple[bool, Hashable | None, Evict | None]:
    """Whether one more connection fits, and whom to close for it.

    Returns:
        ``(True, None, None)``: it fits; ``(True, key, why)``: it fits once ``key`` is closed
        (the caller marks that slot evicted and shuts its socket); ``(False, None, None)``:
        every slot is serving or receiving a body fast enough -- refuse the newcomer busy.
    """
    live = [(key, slot) for key, slot in slots if not slot.evicted]
    if len(live) < capacity:
        return True, None, None
    idle = [(slot.idle_since, n, key) for n, (key, slot) in enumerate(live) if not slot.busy]
    if idle:
        return True, min(idle)[2], Evict.IDLE
    slow = slowest_body(live, now, grace_s=grace_s, min_rate=min_rate)
    if slow is not None:
        return True, slow, Evict.SLOW_BODY
    return False, None, None


def slowest_body(
    slots: Iterable[tuple[Hashable, Slot]], now: float, *, grace_s: float, min_rate: float
) -> Hashable | None:
    """The body to close to make room: of those that have had ``grace_s`` and either arrive
    slower than ``min_rate`` bytes a second on average or have received nothing for
    ``grace_s``, the one with the lowest average rate; None when every body still arriving
    is progressing (and slots that are idle, serving or already evicted never qualify)."""
    slow: list[tuple[float, int, Hashable]] = []
    for n, (key, slot) in enumerate(slots):
        if slot.body_since is None or slot.evicted:
            continue
        elapsed = now - slot.body_since
        if elapsed < grace_s:
            continue
        if slot.received < min_rate * elapsed or now - slot.progress_at >= grace_s:
            slow.append((slot.received / elapsed, n, key))
    return min(slow)[2] if slow else None
