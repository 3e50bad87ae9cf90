"""Context-aware rate limiting (deployment SOP §2.4): token buckets per class of caller.

Theory of operation
-------------------
The operator declares classes in ``[limits]`` (a tenant, a priority): each a token bucket with
a ``rate`` (tokens a second) and a ``burst`` (the bucket's size, full at start). A call takes
one token from its class's bucket, or is refused (DIA-2021) with the seconds until the next
token. Which class a call counts against is decided, in this order, by:

1. the class it names -- the configured HTTP header (``class_header``) or the socket frame's
   class field -- when that names a configured class;
2. a configured trace-id prefix (lower-case hex) that the caller's W3C trace id starts with
   (from its ``traceparent``; a trace the service began itself is random and picks nothing);
3. otherwise the ``default`` class.

The limiter's state is fixed when it is built: one bucket per configured class, one table per
prefix length. Nothing is ever keyed by what a client sends -- an unknown class name, a new
trace id, a million distinct ids all land in an existing bucket -- so memory stays bounded
whatever clients do. (The SOP's sketch counts per ``trace_id[:8]`` in Redis: 16^8 possible
keys, and no refill; here a prefix selects a class the operator declared, or none.)

Each bucket has its own lock, held for a few arithmetic operations; the clock is injected
(monotonic seconds) so that tests decide when tokens come back, without sleeping.

The class a caller names is taken on trust: put the header behind a gateway that sets it (and
strips a client's own), or limit by trace-id prefix only.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vigil.errors import ConfigError

__all__ = ["Bucket", "LimitClass", "LimitsSection", "RateLimiter"]

MAX_CLASSES = 64
MAX_PREFIX = 32  # hex digits in a trace id


@dataclass(frozen=True)
class LimitClass:
    """``[limits.classes.NAME]``: ``rate`` tokens a second, ``burst`` at most at once."""

    name: str
    rate: float
    burst: int
    trace_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LimitsSection:
    """``[limits]``: the classes (none: no limiting), the default class, and the HTTP header
    that names a call's class."""

    classes: tuple[LimitClass, ...] = ()
    default: str = "default"
    class_header: str = "x-vigil-class"

    @property
    def enabled(self) -> bool:
        return bool(self.classes)


class Bucket:
    """One class's token bucket (its counters are read by :meth:`RateLimiter.statistics`)."""

    __slots__ = ("_lock", "admitted", "burst", "last", "name", "rate", "refused", "tokens")

    def __init__(self, spec: LimitClass, now: float) -> None:
        self.name = spec.name
        self.rate = spec.rate
        self.burst = float(spec.burst)
        self.tokens = float(spec.burst)
        self.last = now
        self.admitted = 0
        self.refused = 0
        self._lock = threading.Lock()

    def take(self, now: float) -> float:
        """Take one token: 0.0, or (none left) the seconds until there is one."""
        with self._lock:
            elapsed = now - self.last
            if elapsed > 0:  # a clock that goes back adds nothing
                self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
                self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                self.admitted += 1
                return 0.0
            self.refused += 1
            return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Token buckets for the classes of ``section`` (which must be enabled and valid: the
    configuration loader checks it).

    Args:
        section: the classes, the default class, the header.
        clock: monotonic seconds (tests pass one they advance by hand).
    """

    def __init__(
        self, section: LimitsSection, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not section.enabled or len(section.classes) > MAX_CLASSES:
            raise ConfigError(f"RateLimiter: 1..{MAX_CLASSES} classes are needed")
        self.section = section
        self._clock = clock
        now = clock()
        self._buckets = {c.name: Bucket(c, now) for c in section.classes}
        self._default = self._buckets[section.default]
        by_length: dict[int, dict[str, Bucket]] = {}
        for c in section.classes:
            for prefix in c.trace_prefixes:
                by_length.setdefault(len(prefix), {})[prefix] = self._buckets[c.name]
        # longest prefix first: the most specific declaration wins
        self._prefixes = sorted(by_length.items(), reverse=True)

    @property
    def buckets(self) -> Iterable[Bucket]:
        return self._buckets.values()

    def classify(self, name: str | None, trace_id: bytes | None) -> Bucket:
        """The bucket a call counts against (see the module's rule); never creates one."""
        if name is not None:
            bucket = self._buckets.get(name)
            if bucket is not None:
                return bucket
        if trace_id is not None and self._prefixes:
            hexed = trace_id.hex()
            for n, table in self._prefixes:
                bucket = table.get(hexed[:n])
                if bucket is not None:
                    return bucket
        return self._default

    def admit(self, name: str | None, trace_id: bytes | None) -> tuple[Bucket, float]:
        """``(bucket, 0.0)`` when the call may go on, else ``(bucket, seconds to wait)``."""
        bucket = self.classify(name, trace_id)
        return bucket, bucket.take(self._clock())

    def statistics(self) -> dict[str, dict[str, float]]:
        """Per class: ``admitted``, ``refused`` (since start) and ``tokens`` (at the last call)."""
        return {
            b.name: {"admitted": b.admitted, "refused": b.refused, "tokens": b.tokens}
            for b in self._buckets.values()
        }


def retry_after(seconds: float) -> int:
    """Whole seconds for an HTTP ``Retry-After`` header (at least 1)."""
    return max(1, math.ceil(seconds))
