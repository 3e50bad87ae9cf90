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
the connection idle the longest; failing that, the *slowest* body still arriving, provided it
has had ``grace_s`` and is arriving slower than ``min_rate`` bytes a second (a legitimate client
on a Unix socket sends at memory speed; a client that trickles a body is holding a slot, not
sending a request); failing that, nobody, and the newcomer is refused busy. So neither idle
connections nor trickled headers or bodies can lock active clients out: each newcomer pushes
one of them out. Time comes in as ``now``: this module owns no clock, socket or thread.
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

    __slots__ = ("body_since", "busy", "evicted", "idle_since", "received", "thread")

    def __init__(self, thread: Any, now: float) -> None:
        self.thread = thread
        self.busy = False  # a whole header accepted, until its answer is sent
        self.body_since: float | None = None  # when its body began to arrive (body phase)
        self.received = 0  # body bytes in so far (body phase)
        self.evicted = False  # closed to make room: its thread leaves without a violation
        self.idle_since = now

    def start_body(self, now: float) -> None:
        self.busy, self.body_since, self.received = True, now, 0

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
    slow: list[tuple[float, int, Hashable]] = []
    for n, (key, slot) in enumerate(live):
        if slot.body_since is None:
            continue
        elapsed = now - slot.body_since
        if elapsed >= grace_s and slot.received < min_rate * elapsed:
            slow.append((slot.received / elapsed, n, key))
    if slow:
        return True, min(slow)[2], Evict.SLOW_BODY
    return False, None, None
