"""The watchdog: one long-lived thread that fires call deadlines.

Theory of operation
-------------------
Each guarded call arms a deadline (``arm``) and disarms it when the call ends (``disarm``).
Arming pushes an entry on a heap and wakes the thread only when the new deadline comes before
the thread's next planned look; disarming claims the entry in O(1) and leaves it on the heap,
to be dropped when the thread next looks (:func:`_due`: calls that end in time cost about one
wake-up per deadline's length, not one per call). A deadline is claimed exactly once -- by
the caller in time, or by the watchdog when it fires -- so a call is never both in time and
late. The thread sleeps on a condition
until the earliest deadline and runs the entry's callback, outside the lock, if it claims it.
A ``threading.Timer`` per call costs ~150 µs (a thread per call); this costs about two
microseconds per arm/disarm pair.

A callback runs on the watchdog thread and must be quick: the supervisor's callback only
marks the call timed out and wakes its caller, who then answers with the fallback. Time comes
from an injected clock; with a fake clock, a test advances it and calls :meth:`poke` instead
of sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Ticket:
    """An armed deadline. Exactly one of the caller (:meth:`Watchdog.disarm`) and the
    watchdog (firing it) *claims* it; the claim decides whether the call was in time."""

    __slots__ = ("_claim", "callback", "deadline_ns", "fired")

    def __init__(self, deadline_ns: int, callback: Callable[[], None]) -> None:
        self.deadline_ns = deadline_ns
        self.callback = callback
        self.fired = False
        self._claim = threading.Lock()

    @property
    def live(self) -> bool:
        return not self._claim.locked()

    def claim(self) -> bool:
        """True for the first claimant only."""
        return self._claim.acquire(False)


class Watchdog:
    """One thread firing deadlines for every guarded call.

    Args:
        clock: monotonic time in ns (``time.monotonic_ns`` by default).
        name: the thread's name.
    """

    def __init__(
        self, clock: Callable[[], int] = time.monotonic_ns, name: str = "vigil-watchdog"
    ) -> None:
        self._clock = clock
        self._heap: list[tuple[int, int, Ticket]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()  # arm holds it directly: Condition's with is Python
        self._cv = threading.Condition(self._lock)
        self._closed = False
        self._wake_ns = _NEVER  # when the thread will look at the heap next, unless notified
        self.fired = 0
        self.clock_errors = 0  # clock reads that raised (the thread retried 1 ms later)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def arm(self, deadline_ns: int, callback: Callable[[], None]) -> Ticket:
        """Run ``callback`` on the watchdog thread at ``deadline_ns`` unless disarmed first."""
        ticket = Ticket(deadline_ns, callback)
        with self._lock:  # the condition's own lock: notify below is legal under it
            heap = self._heap
            heapq.heappush(heap, (deadline_ns, next(self._order), ticket))
            if deadline_ns < self._wake_ns or len(heap) > _COMPACT:
                self._cv.notify()
        return ticket

    @staticmethod
    def disarm(ticket: Ticket) -> bool:
        """Cancel a deadline: True when the call ended in time (its callback will not run),
        False when the watchdog claimed it first (its callback runs or has run)."""
        return ticket.claim()

    def poke(self) -> None:
        """Re-examine the deadlines now (after a test advanced a fake clock)."""
        with self._cv:
            self._cv.notify()

    def close(self) -> None:
        """Stop the thread; armed deadlines never fire."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._cv:
                while True:
                    if self._closed:
                        return
                    try:
                        now = self._clock()
                        if type(now) is not int:
                            raise TypeError(f"the clock read {now!r}")  # noqa: TRY301
                    except BaseException:  # a clock that failed once must not end the watchdog
                        self.clock_errors += 1
                        self._cv.wait(0.001)
                        continue
                    ticket, wake = _due(heap, now)
                    if ticket is not None:
                        break
                    self._wake_ns = _NEVER if wake is None else wake
                    self._cv.wait(None if wake is None else min((wake - now) / 1e9, 3600.0))
                self._wake_ns = _NEVER  # firing: a deadline armed meanwhile must notify
            if ticket.claim():
                ticket.fired = True
                self.fired += 1
                ticket.callback()


_COMPACT = 4096
"""Entries on the heap beyond which ``arm`` wakes the thread anyway, to drop disarmed ones."""
_NEVER = 1 << 126


def _due(heap: list[tuple[int, int, Ticket]], now_ns: int) -> tuple[Ticket | None, int | None]:
    """One look at the heap (under the lock): a live expired entry to fire, or the time to
    wake at (``None``: only when notified).

    Entries whose deadline passed are popped (fired if live); disarmed entries at the top are
    dropped too. When that empties the heap, the thread still wakes at the last dropped
    entry's deadline rather than never: ``arm`` wakes the thread only for a deadline earlier
    than that, and the next call's deadline is later. So a run of calls that end in time costs
    about one wake-up per deadline's length, not one per call (a futex wake and a thread
    contending for the GIL, each time).
    """
    horizon = None
    while heap:
        deadline, _, ticket = heap[0]
        if deadline <= now_ns:
            heapq.heappop(heap)
            if ticket.live:
                return ticket, None
            continue  # disarmed in time: dropped
        if ticket.live:
            return None, deadline
        heapq.heappop(heap)
        horizon = deadline
    return None, horizon
