"""Model worker processes: the model runs in spawned children, never in the supervisor.

:class:`WorkerPool` keeps active workers and a hot standby (same signed model digest, warmed
up), judges each on its own run time, kills a hung or lost one and promotes the standby in
milliseconds while the fallback answers; tensors cross through shared memory and the pipe
carries only a short message per call. :class:`WorkerSpec` says what a worker loads;
:class:`WorkerEvent` is what the pool reports to the supervisor (lost, promoted, started),
which records it. ``Supervisor(pool, isolation="process")`` uses it. docs/SERVICE.md.
"""

from vigil.workers._pool import PoolStatistics, WorkerEvent, WorkerPool, WorkerSpec

__all__ = ["PoolStatistics", "WorkerEvent", "WorkerPool", "WorkerSpec"]
