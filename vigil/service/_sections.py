"""The sections of a ``vigil serve`` configuration, as frozen dataclasses (plain data).

One class per TOML table (``[service]``, ``[log]``, ``[model]``, ``[model.input]``,
``[workers]``, ``[supervisor]``, ``[supervisor.known_answer]``, ``[metrics]``, ``[http]``,
``[grpc]``, ``[systemd]``). Each holds values already validated by the loader (:mod:`._config`,
which reads the file and builds them), with defaults equal to the documented ones (docs/SERVICE.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vigil.auditlog import RingConfig
from vigil.fsm import Policy
from vigil.schemas._records import SUPERBLOCK_AREA

_MS = 1_000_000


@dataclass(frozen=True)
class ServiceSection:
    """``[service]``: the Unix socket that serves inference."""

    socket: Path
    max_request_mb: int = 64
    max_clients: int = 64
    read_timeout_s: float = 30.0
    drain_timeout_s: float = 10.0
    max_buffered_mb: int | None = None  # request bytes held at once (None: 4 x max_request_mb)


@dataclass(frozen=True)
class SealSection:
    """``[log.seal]``: sealed checkpoints (see :class:`vigil.auditlog.Sealer`)."""

    key: Path | None = None
    fss: Path | None = None
    every_records: int = 4096
    every_ms: int = 1000


@dataclass(frozen=True)
class LogSection:
    """``[log]``: the flight log, and the ring geometry used when it is created."""

    path: Path
    segment_kb: int = 1024
    segments: int = 64
    frozen_quota: int | None = None
    durability: str = "batch"
    seal: SealSection | None = None
    clock: str = "realtime"  # the records' wall clock: realtime, tai or ptp
    clock_device: Path | None = None  # the PTP hardware clock, for clock = "ptp"

    def ring(self) -> RingConfig:
        """The geometry for a new log (an existing log keeps its own)."""
        return RingConfig(
            size=SUPERBLOCK_AREA + self.segments * self.segment_kb * 1024,
            segment_size=self.segment_kb * 1024,
            frozen_quota=self.frozen_quota,
        )


@dataclass(frozen=True)
class InputSection:
    """``[model.input]``: the input contract; ``-1`` in ``shape`` means any size, ``min`` and
    ``max`` bound every value (inclusive)."""

    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None

    def warmup_input(self) -> torch.Tensor | None:
        """An input of the declared form for the workers' warm-up calls: size 1 in each
        ``-1`` dim, every value the one in ``[min, max]`` nearest 0 (zeros without bounds; a
        16-bit float dtype may round it). None when no ``shape`` is declared."""
        if self.shape is None:
            return None
        fill: int | float = 0
        if self.min is not None and fill < self.min:
            fill = self.min
        if self.max is not None and fill > self.max:
            fill = self.max
        dtype = getattr(torch, self.dtype or "float32")
        return torch.full([1 if d < 0 else d for d in self.shape], fill, dtype=dtype)


@dataclass(frozen=True)
class ModelSection:
    """``[model]``: a signed model directory, or a factory called inside the worker."""

    dir: Path | None = None
    public_key: Path | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str = "cpu"
    input: InputSection | None = None
    output: str = "logits"  # or "tokens": the greedy next token and its log-probability


@dataclass(frozen=True)
class WorkersSection:
    """``[workers]``: the model worker processes."""

    standby: bool = True
    active: int = 1
    max_queue: int = 64
    heartbeat_ms: int = 100
    heartbeat_timeout_ms: int = 1000
    start_timeout_s: float = 120.0
    warmup_calls: int = 3
    shm_mb: int = 16
    spin_us: int = 300


@dataclass(frozen=True)
class KnownAnswerSection:
    """``[supervisor.known_answer]``: the file of the known-answer probes and its tolerance.

    ``file`` as written: with ``[model].dir``, a file of the signed directory (read from the
    verified bytes); otherwise ``path``, resolved against the configuration's directory.
    """

    file: str
    path: Path
    atol: float = 1e-5
    rtol: float = 1e-4


@dataclass(frozen=True)
class SupervisorSection:
    """``[supervisor]``: the deadline, the policy and the fallback chain."""

    deadline_ms: float
    policy: Policy
    fallback: tuple[str, ...] = ()
    last_good_max_age_ms: float = 500.0
    constant_value: float = 0.0
    constant_shape: tuple[int, ...] | None = None
    constant_dtype: str = "float32"
    known_answer: KnownAnswerSection | None = None
    digest_inline_max_kb: int = 64  # larger outputs are digested off the caller's path; 0: never
    digest_queue: int = 64  # outputs awaiting their digest at most (then callers hash inline)

    @property
    def deadline_ns(self) -> int:
        return round(self.deadline_ms * _MS)


@dataclass(frozen=True)
class MetricsSection:
    """``[metrics]``: the Prometheus and health HTTP endpoint (off when ``listen`` is None)."""

    listen: str | None = None
    host: str = ""
    port: int = 0
    timeout_s: float = 10.0  # a connection silent this long is closed
    max_connections: int = 8  # handled at once; more are answered 503

    @property
    def enabled(self) -> bool:
        return self.listen is not None


@dataclass(frozen=True)
class HttpSection:
    """``[http]``: the KServe v2 (Open Inference) HTTP endpoint (off when ``listen`` is None);
    see :mod:`vigil.service._kserve`."""

    listen: str | None = None
    host: str = ""
    port: int = 0
    model_name: str = "vigil"
    max_request_mb: int = 64
    max_json_mb: int = 8
    max_connections: int = 16
    timeout_s: float = 30.0

    @property
    def enabled(self) -> bool:
        return self.listen is not None


@dataclass(frozen=True)
class GrpcSection:
    """``[grpc]``: the KServe v2 (Open Inference) gRPC endpoint (off when ``listen`` is None);
    see :mod:`vigil.service._grpc`."""

    listen: str | None = None
    host: str = ""
    port: int = 0
    model_name: str = "vigil"
    max_request_mb: int = 64
    max_concurrency: int = 16
    idle_timeout_s: float = 300.0

    @property
    def enabled(self) -> bool:
        return self.listen is not None


@dataclass(frozen=True)
class SystemdSection:
    """``[systemd]``: ``notify`` is ``"auto"`` (when NOTIFY_SOCKET is set), True or False."""

    notify: bool | str = "auto"
