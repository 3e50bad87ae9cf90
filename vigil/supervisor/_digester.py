"""The recorder thread that digests large outputs off the caller's path (format 1.2).

Theory of operation
-------------------
The INFERENCE record of a call is appended before its answer is released (write-ahead). For
an output above the supervisor's threshold, the record carries ``DIGEST_FOLLOWS`` and a zero
``output_digest``; the caller gets its answer at once, and this thread hashes a *snapshot* of
the output (taken before the answer was released: the caller may then do what it likes with
the tensors it got) and appends an OUTPUT_DIGEST record naming the call's seq.

* **Bounded.** At most ``max_pending`` outputs are outstanding (reserved, queued or being
  hashed). :meth:`Digester.try_reserve` is asked *before* the INFERENCE record is written; when
  it says no, the caller hashes inline and the record carries the digest as before. Nothing is
  ever dropped, and the memory held is at most ``max_pending`` snapshots.
* **In order.** One thread, one FIFO queue filled under the supervisor's lock: the digests of
  one supervisor appear in the log in the order of their INFERENCE records.
* **What a crash loses.** The digests still outstanding: at most ``max_pending`` of the last
  DIGEST_FOLLOWS records of the writer session, never an INFERENCE record. The supervisor
  declares ``max_pending`` in a ``vigil.digester`` ANNOTATION, so that ``vigil verify`` can
  tell that loss (expected) from a digest missing anywhere else (an integrity failure).
* **Drained at close.** :meth:`close` hashes and records everything queued before it returns.
* **Cheap to feed.** :meth:`put` costs the caller a clock read and a ``queue.SimpleQueue.put``
  (C code that wakes the thread blocked in ``get``), no Python-level condition variable. The
  thread keeps every statistic itself -- the lag (a histogram for Prometheus, percentiles),
  the time an output waited to be taken and the time it took to hash -- so reading them
  costs the caller nothing per call.

``hashlib`` releases the GIL while it hashes more than 2 KiB, so the hashing itself runs on
another core while callers go on.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vigil.auditlog import FlightRecorder
from vigil.supervisor import _tensors as T

LAG_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds of the lag histogram (:attr:`DigesterStatistics.lag_buckets`), seconds."""
_BOUNDS_NS = tuple(round(b * 1e9) for b in LAG_BUCKETS_S)


@dataclass(frozen=True)
class DigesterStatistics:
    """A snapshot of the digester (see :meth:`Digester.statistics`).

    Attributes:
        deferred: outputs handed to the thread since it started.
        digested: OUTPUT_DIGEST records appended.
        inline_when_full: outputs the caller hashed itself because the queue was full.
        failed: outputs whose digest could not be recorded (the log was closed under it).
        pending: outputs outstanding now.
        max_pending: the bound.
        lag_p50_ns, lag_p99_ns, lag_max_ns: INFERENCE append to OUTPUT_DIGEST append, over
            the last 4096 digests.
        lag_p99_calls, lag_max_calls: how many later outputs had been deferred when a digest
            was appended (its lag counted in calls).
        lag_buckets: digests recorded since start by lag, one count per bound of
            :data:`LAG_BUCKETS_S` (lag <= bound, not cumulative) and a last one for the rest.
        lag_sum_ns: the sum of those digests' lags.
        lag_bounds_s: the bounds of ``lag_buckets`` (:data:`LAG_BUCKETS_S`), seconds.
        wait_p50_ns, wait_p99_ns: from :meth:`Digester.put` until the thread took the output
            (its wake-up, the GIL, and outputs ahead of it), over the last 4096.
        hash_p50_ns, hash_p99_ns: the thread's time to hash one output, over the last 4096.
        wake_p50_ns, wake_p99_ns: ``wait`` of the outputs handed over while the thread was
            idle (nothing ahead of them): its wake-up and the GIL alone.
    """

    deferred: int
    digested: int
    inline_when_full: int
    failed: int
    pending: int
    max_pending: int
    lag_p50_ns: int
    lag_p99_ns: int
    lag_max_ns: int
    lag_p99_calls: int
    lag_max_calls: int
    lag_buckets: tuple[int, ...] = ()
    lag_sum_ns: int = 0
    lag_bounds_s: tuple[float, ...] = LAG_BUCKETS_S
    wait_p50_ns: int = 0
    wait_p99_ns: int = 0
    hash_p50_ns: int = 0
    hash_p99_ns: int = 0
    wake_p50_ns: int = 0
    wake_p99_ns: int = 0


class _Item:
    __slots__ = ("index", "nbytes", "seq", "snapshot", "t0")

    def __init__(self, seq: int, snapshot: Any, nbytes: int, t0: int, index: int) -> None:
        self.seq, self.snapshot, self.nbytes, self.t0, self.index = seq, snapshot, nbytes, t0, index


class Digester:
    """One thread that hashes snapshots of served outputs and records their digests.

    Args:
        log: the flight recorder the OUTPUT_DIGEST records go to.
        digest: the hash of a snapshot (the supervisor's tensor digest).
        clock_ns: the monotonic clock the lag is measured with.
        max_pending: outputs outstanding at most (>= 1).
    """

    def __init__(
        self,
        log: FlightRecorder,
        digest: Callable[[Any], bytes],
        clock_ns: Callable[[], int],
        *,
        max_pending: int,
        name: str = "vigil-digester",
    ) -> None:
        self._log = log
        self._digest = digest
        self._clock = clock_ns
        self.max_pending = max_pending
        self._cv = threading.Condition(threading.Lock())
        self._items: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._outstanding = 0
        self._closing = False
        self._counter = itertools.count(1)  # next() is atomic: no lock on the caller's path
        self._deferred = self._digested = self._full = self._failed = 0
        self._free: dict[tuple[torch.dtype, torch.Size], list[torch.Tensor]] = {}
        # (lag, lag in calls, wait, hash, wake or -1) of the last 4096 digests, kept by the thread
        self._lags: collections.deque[tuple[int, int, int, int, int]] = collections.deque(
            maxlen=4096
        )
        self._done_at = 0  # when the thread finished its last output (it was idle since)
        self._lag_max = (0, 0)
        self._buckets = [0] * (len(_BOUNDS_NS) + 1)
        self._lag_sum = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def snapshot(self, value: Any) -> Any | None:
        """A snapshot of ``value`` for :meth:`put` (:func:`~vigil.supervisor._tensors.snapshot`).
        A plain tensor is copied into a host buffer of its dtype and shape that the digester
        recycles once it has hashed it: no fresh allocation (page faults) per call."""
        if type(value) is not torch.Tensor:
            return T.snapshot(value)
        free = self._free.get((value.dtype, value.shape))
        try:
            buf = free.pop() if free else None  # list.pop is atomic: callers race safely
        except IndexError:
            buf = None
        if buf is None:
            buf = torch.empty(value.shape, dtype=value.dtype)
        buf.copy_(value.detach())
        return buf

    def _recycle(self, snapshot: Any) -> None:
        """Keep a hashed snapshot's buffer for the next output of its dtype and shape (at most
        ``max_pending`` buffers kept in all)."""
        if type(snapshot) is not torch.Tensor:
            return
        if sum(len(v) for v in self._free.values()) < self.max_pending:
            self._free.setdefault((snapshot.dtype, snapshot.shape), []).append(snapshot)

    def try_reserve(self) -> bool:
        """Reserve room for one output; False when ``max_pending`` are outstanding (the
        caller then hashes inline). A reservation must end in :meth:`put` or
        :meth:`unreserve`."""
        with self._cv:
            if self._outstanding >= self.max_pending or self._closing:
                self._full += 1
                return False
            self._outstanding += 1
            return True

    def unreserve(self) -> None:
        """Give back a reservation that no output will use."""
        with self._cv:
            self._outstanding -= 1
            self._cv.notify_all()

    def put(self, seq: int, snapshot: Any, nbytes: int) -> None:
        """Queue the snapshot of the output of INFERENCE record ``seq`` (reserved before the
        record was written; call right after it was)."""
        index = next(self._counter)
        self._deferred = index  # one writer at a time (the supervisor's lock); read elsewhere
        self._items.put(_Item(seq, snapshot, nbytes, self._clock(), index))

    def _run(self) -> None:
        while True:
            item = self._items.get()
            if item is None:  # close(): everything queued before it is recorded
                return
            ok = self._record(item)
            with self._cv:
                self._outstanding -= 1
                if ok:
                    self._digested += 1
                else:
                    self._failed += 1
                self._cv.notify_all()

    def _record(self, item: _Item) -> bool:
        taken = self._clock()
        try:
            value = self._digest(item.snapshot)
            self._recycle(item.snapshot)
            item.snapshot = None
            hashed = self._clock()
            lag = max(hashed - item.t0, 0)
            behind = self._deferred - item.index
            self._log.record_output_digest(item.seq, value, output_bytes=item.nbytes, lag_ns=lag)
        except Exception:  # the log closed under it: counted, verify names the record
            return False
        with self._cv:
            wake = taken - item.t0 if item.t0 >= self._done_at else -1
            self._lags.append((lag, behind, taken - item.t0, hashed - taken, wake))
            self._lag_max = max(self._lag_max, (lag, behind))
            self._buckets[bisect.bisect_left(_BOUNDS_NS, lag)] += 1
            self._lag_sum += lag
        self._done_at = self._clock()
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no output is outstanding; False when ``timeout`` passed first."""
        with self._cv:
            return self._cv.wait_for(lambda: self._outstanding == 0, timeout)

    def statistics(self) -> DigesterStatistics:
        with self._cv:
            lags = sorted(x[0] for x in self._lags)
            calls = sorted(x[1] for x in self._lags)
            waits = sorted(x[2] for x in self._lags)
            hashes = sorted(x[3] for x in self._lags)
            wakes = sorted(x[4] for x in self._lags if x[4] >= 0)
            return DigesterStatistics(
                deferred=self._deferred,
                digested=self._digested,
                inline_when_full=self._full,
                failed=self._failed,
                pending=self._outstanding,
                max_pending=self.max_pending,
                lag_p50_ns=_pick(lags, 0.5),
                lag_p99_ns=_pick(lags, 0.99),
                lag_max_ns=self._lag_max[0],
                lag_p99_calls=_pick(calls, 0.99),
                lag_max_calls=max(calls, default=0),
                lag_buckets=tuple(self._buckets),
                lag_sum_ns=self._lag_sum,
                wait_p50_ns=_pick(waits, 0.5),
                wait_p99_ns=_pick(waits, 0.99),
                hash_p50_ns=_pick(hashes, 0.5),
                hash_p99_ns=_pick(hashes, 0.99),
                wake_p50_ns=_pick(wakes, 0.5),
                wake_p99_ns=_pick(wakes, 0.99),
            )

    def close(self, timeout: float | None = None) -> None:
        """Record everything queued, then stop the thread (new reservations are refused)."""
        with self._cv:
            self._cv.wait_for(lambda: self._outstanding == 0, timeout)
            self._closing = True
        self._items.put(None)
        self._thread.join(timeout)


def _pick(values: list[int], q: float) -> int:
    if not values:
        return 0
    return values[min(len(values) - 1, int(len(values) * q))]
