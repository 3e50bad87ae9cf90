"""The ``vigil serve`` configuration file: one TOML file, read once, validated completely.

Theory of operation
-------------------
:meth:`ServeConfig.load` parses the file and :meth:`ServeConfig.from_dict` turns the parsed
tables into frozen dataclasses, one per section. Validation fails closed and early: an
unknown key (a typo must never leave a safety threshold at its default), a wrong type, a value
out of range, a missing required key and an inconsistent combination are each a
:class:`~vigil.errors.ServiceConfigError` with its own DIA-72xx code, whose message names the
file and the key path (``[supervisor].deadline_ms: must be a positive number, got -3``).
Relative paths are resolved against the configuration file's directory, so a unit file may
start the service from any working directory.

Durations carry their unit in the key (``_ms``, ``_s``); sizes too (``_kb``, ``_mb``). The
``[supervisor.policy]`` table maps 1:1 onto :class:`vigil.fsm.Policy` (``cooldown_ms`` ->
``cooldown_ns``) and the policy's own validation runs on it. Every key and its default:
``docs/SERVICE.md`` and ``examples/vigil.toml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vigil import _diagnostics as D
from vigil._files import kind_of, read_regular
from vigil.errors import (
    ConfigError,
    InvalidArgument,
    InvalidInput,
    NotARegularFile,
    ServiceConfigError,
)
from vigil.fsm import Policy
from vigil.schemas import Contract, TensorSpec
from vigil.service import _config_wire
from vigil.service._config_bounds import check_integers, check_tensor_sizes, fits_dtype
from vigil.service._limits import LimitsSection
from vigil.service._sections import (
    _MS,
    GrpcSection,
    HttpSection,
    InputSection,
    KnownAnswerSection,
    LogSection,
    MetricsSection,
    ModelSection,
    SealSection,
    ServiceSection,
    SupervisorSection,
    SystemdSection,
    WorkersSection,
)
from vigil.service._tracing import TracingSection
from vigil.supervisor._fallbacks import Constant, LastGood
from vigil.supervisor._supervisor import KnownAnswer

_MAX_KNOWN_ANSWER = 256 << 20  # a known answer is one small input and its output

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DURABILITY = ("none", "batch", "always")
CLOCK_SOURCES = ("realtime", "tai", "ptp")
FALLBACKS = ("none", "last_good", "constant")
OUTPUTS = ("logits", "tokens")
DTYPES = (
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
)
_DEVICE = re.compile(r"cpu|cuda|cuda:\d+")
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_REQUIRED: Any = object()


@dataclass(frozen=True)
class ServeConfig:
    """The whole ``vigil serve`` configuration (immutable). Build it with :meth:`load`."""

    source: str
    service: ServiceSection
    log: LogSection
    model: ModelSection
    supervisor: SupervisorSection
    workers: WorkersSection = dataclasses.field(default_factory=WorkersSection)
    metrics: MetricsSection = dataclasses.field(default_factory=MetricsSection)
    systemd: SystemdSection = dataclasses.field(default_factory=SystemdSection)
    http: HttpSection = dataclasses.field(default_factory=HttpSection)
    grpc: GrpcSection = dataclasses.field(default_factory=GrpcSection)
    limits: LimitsSection = dataclasses.field(default_factory=LimitsSection)
    tracing: TracingSection = dataclasses.field(default_factory=TracingSection)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ServeConfig:
        """Read and validate a configuration file.

        Raises:
            ServiceConfigError: DIA-7202 the file cannot be read, DIA-7203 it is not TOML,
                DIA-7204..7208 a key is unknown, mistyped, out of range, missing or
                inconsistent. The message names the file and the key path.
        """
        p = Path(path)
        text = _config_text(p)
        try:
            data = tomllib.loads(text)
        except RecursionError:
            raise ServiceConfigError(
                f"{p}: not valid TOML: arrays or inline tables nested too deeply",
                diagnostic=D.SERVICE_CONFIG_SYNTAX,
                file=str(p),
            ) from None
        except ValueError as exc:  # TOMLDecodeError, or an integer of over 4300 digits
            where = re.search(r"line (\d+), column (\d+)", str(exc))
            line, col = (int(where[1]), int(where[2])) if where else (None, None)
            raise ServiceConfigError(
                f"{p}: not valid TOML: {exc}",
                diagnostic=D.SERVICE_CONFIG_SYNTAX,
                file=str(p),
                line=line,
                column=col,
            ) from exc
        return cls.from_dict(data, source=str(p), base_dir=p.resolve().parent)

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        source: str = "<dict>",
        base_dir: str | os.PathLike[str] | None = None,
    ) -> ServeConfig:
        """Validate parsed tables (as :func:`tomllib.loads` returns them).

        Args:
            data: the top-level table.
            source: names the configuration in messages (the file's path).
            base_dir: relative paths resolve against it; by default the current directory.

        Raises:
            ServiceConfigError: as for :meth:`load`.
        """
        ctx = _Context(source, Path(base_dir) if base_dir is not None else Path.cwd())
        top = _Table(ctx, data, "", _TOP_KEYS + _WIRE_KEYS)
        check_integers(data, source)
        config = cls(
            source=source,
            service=_service(top.table("service", required=True)),
            log=_log(top.table("log", required=True)),
            model=_model(top.table("model", required=True)),
            supervisor=_supervisor(top.table("supervisor", required=True)),
            workers=_workers(top.table("workers")),
            metrics=_metrics(top.table("metrics")),
            systemd=_systemd(top.table("systemd")),
            http=_http(top.table("http")),
            grpc=_grpc(top.table("grpc")),
            limits=_config_wire.limits(top.table("limits")),
            tracing=_config_wire.tracing(top.table("tracing")),
        )
        check_tensor_sizes(config)
        _check_output(config)
        return config

    def to_policy(self) -> Policy:
        """The state machine's policy (validated when the config was read)."""
        return self.supervisor.policy

    def fallback_chain(self) -> list[Any]:
        """Fresh fallback objects for :class:`~vigil.supervisor.Supervisor` (``fallback=``), in
        the configured order; an empty list when ``fallback = "none"``."""
        s = self.supervisor
        chain: list[Any] = []
        for kind in s.fallback:
            if kind == "last_good":
                chain.append(LastGood(round(s.last_good_max_age_ms * _MS)))
            else:
                assert s.constant_shape is not None  # checked on load
                dtype = getattr(torch, s.constant_dtype)
                chain.append(Constant(torch.full(s.constant_shape, s.constant_value, dtype=dtype)))
        return chain

    def output_contract(self) -> Any:
        """The output contract: :func:`vigil.model.token_contract` with ``output =
        "tokens"``; None with ``"logits"`` (every value finite, the supervisor's default)."""
        if self.model.output != "tokens":
            return None
        from vigil.model import token_contract  # noqa: PLC0415

        return token_contract()

    def input_contract(self) -> Any:
        """A :class:`vigil.schemas.Contract` for ``[model.input]``, or None."""
        spec = self.model.input
        if spec is None:
            return None
        shape = None if spec.shape is None else tuple(None if d == -1 else d for d in spec.shape)
        dtype = getattr(torch, spec.dtype) if spec.dtype else None
        tensor = TensorSpec(shape=shape, dtype=dtype, min=spec.min, max=spec.max)
        return Contract(tensor, name="model.input")

    def check_paths(self, *, strict: bool = True) -> list[str]:
        """What the paths name on this machine, looked at without opening anything: the log a
        regular file or absent in an existing directory, the socket not a directory and in
        one, a model directory a directory, key files regular files, a PTP clock a character
        device. Start-up runs it strictly; ``serve --check`` refuses what is there and wrong
        (it used to say valid, then the service failed at start, or after a 120 s worker
        wait), and only notes what is missing (a configuration checked before deployment).

        Returns:
            One note per path that does not exist here (not strict).

        Raises:
            ServiceConfigError: DIA-7206, naming the key and what is (or is not) there.
        """
        notes: list[str] = []
        seal = self.log.seal
        for where, path, want in (
            ("[log].path", self.log.path, "file or absent"),
            ("[service].socket", self.service.socket, "socket or absent"),
            ("[model].dir", self.model.dir, "directory"),
            ("[model].public_key", self.model.public_key, "file"),
            ("[log].clock_device", self.log.clock_device, "device"),
            ("[log.seal].key", seal.key if seal else None, "file"),
            ("[log.seal].fss", seal.fss if seal else None, "file"),
        ):
            problem, missing = (None, False) if path is None else _path_problem(path, want)
            if problem is not None and missing and not strict:
                notes.append(f"{where}: {path}: {problem} on this machine")
            elif problem is not None:
                raise ServiceConfigError(
                    f"{self.source}: {where}: {path}: {problem}",
                    diagnostic=D.SERVICE_CONFIG_RANGE,
                    file=self.source,
                    key=where,
                )
        return notes

    def known_answer(self) -> tuple[KnownAnswer, bytes | None] | None:
        """The probes' known answer, read and checked, or None without
        ``[supervisor.known_answer]``. With ``[model].dir`` the file comes from the directory's
        verified bytes, and the directory's model digest comes with it (the workers must
        load that same digest); otherwise it is read from its path (digest None).

        Raises:
            ServiceConfigError: DIA-7213 (see ``docs/DIAGNOSTICS.md``).
            ArtifactError: the model directory does not verify (DIA-51xx).
        """
        import safetensors.torch  # noqa: PLC0415

        from vigil import keys as _keys  # noqa: PLC0415
        from vigil.model import verify_model_dir  # noqa: PLC0415

        ka = self.supervisor.known_answer
        if ka is None:
            return None
        where = "[supervisor.known_answer].file"

        def invalid(why: str) -> ServiceConfigError:
            return ServiceConfigError(
                f"{self.source}: {where}: {why}",
                diagnostic=D.KNOWN_ANSWER_INVALID,
                file=self.source,
                key=where,
            )

        digest = None
        if self.model.dir is not None:
            assert self.model.public_key is not None  # checked on load
            public = _keys.load_public(self.model.public_key)
            artifact = verify_model_dir(self.model.dir, public)
            if ka.file not in artifact.files:
                raise invalid(
                    f"{ka.file!r} is not in the signed manifest of {self.model.dir} (it lists "
                    f"{', '.join(sorted(artifact.files))}): a known answer must be signed with "
                    "its model"
                )
            data, digest = artifact.files[ka.file], artifact.digest
        else:
            data = _known_answer_bytes(ka.path, invalid)
        try:
            tensors = safetensors.torch.load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise invalid(f"{ka.file} is not a safetensors file ({exc})") from None
        if set(tensors) != {"input", "expected"}:
            names = ", ".join(sorted(tensors)) or "nothing"
            raise invalid(f"{ka.file} must hold exactly 'input' and 'expected'; it holds {names}")
        contract = self.input_contract()
        if contract is not None:
            try:
                contract.check(tensors["input"], field="known_answer.input")
            except InvalidInput as exc:
                raise invalid(f"its input breaks [model.input]: {exc}") from None
        expected: Any = tensors["expected"]
        if self.model.output == "tokens":  # the file holds logits; the service serves tokens
            from vigil.model import next_tokens  # noqa: PLC0415

            try:
                expected = next_tokens(expected)
            except InvalidArgument as exc:
                raise invalid(f'[model].output = "tokens": {exc.message}') from None
        known = KnownAnswer(tensors["input"], expected, atol=ka.atol, rtol=ka.rtol)
        return known, digest


# --- reading tables -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    source: str
    base_dir: Path


class _Table:
    """One table being read: unknown keys are refused on sight, every value is checked."""

    def __init__(
        self, ctx: _Context, data: dict[str, Any], name: str, known: tuple[str, ...]
    ) -> None:
        self.ctx, self.data, self.name = ctx, data, name
        for key in data:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise self.error(
                    key,
                    f"unknown key{hint}; known keys here: {', '.join(sorted(known))}",
                    D.SERVICE_CONFIG_UNKNOWN_KEY,
                )

    def where(self, key: str) -> str:
        return f"[{self.name}].{key}" if self.name else f"[{key}]"

    def error(self, key: str, rule: str, diagnostic: D.Diagnostic) -> ServiceConfigError:
        where = self.where(key)
        return ServiceConfigError(
            f"{self.ctx.source}: {where}: {rule}",
            diagnostic=diagnostic,
            file=self.ctx.source,
            key=where,
        )

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise self.error(key, "required key is missing", D.SERVICE_CONFIG_REQUIRED)
        return default

    def _type(self, key: str, value: Any, ok: bool, what: str) -> None:
        if not ok:
            raise self.error(
                key, f"must be {what}, got {value!r} ({_toml_type(value)})", D.SERVICE_CONFIG_TYPE
            )

    def has(self, key: str) -> bool:
        return key in self.data

    def table(self, key: str, *, required: bool = False) -> _Table | None:
        if key not in self.data:
            if required:
                raise self.error(key, "required section is missing", D.SERVICE_CONFIG_REQUIRED)
            return None
        value = self.data[key]
        self._type(key, value, isinstance(value, dict), "a table")
        name = f"{self.name}.{key}" if self.name else key
        return _Table(self.ctx, value, name, _KEYS.get(name, ()))

    def raw_table(self, key: str) -> dict[str, Any]:
        value = self._get(key, {})
        self._type(key, value, isinstance(value, dict), "a table")
        return dict(value)

    def integer(
        self, key: str, default: Any = _REQUIRED, *, minimum: int = 1, maximum: int | None = None
    ) -> Any:
        value = self._get(key, default)
        if value is None or key not in self.data:
            return value
        self._type(key, value, type(value) is int, "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise self.error(
                key, f"must be >= {minimum}{upper}, got {value}", D.SERVICE_CONFIG_RANGE
            )
        return value

    def number(self, key: str, default: Any = _REQUIRED, *, zero: bool = False) -> Any:
        """A positive number (int or float; ``zero`` allows 0). A duration (``*_s``,
        ``*_ms``) is at most :data:`MAX_DURATION_S` and, when positive, at least 1 µs: a
        longer one overflowed the clocks and polls that wait for it (tracebacks at run time,
        where ``--check`` had said valid)."""
        value = self._get(key, default)
        if key not in self.data:
            return value
        ok = type(value) in (int, float)
        self._type(key, value, ok, "a number")
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            what = "a number >= 0" if zero else "a positive number"
            raise self.error(key, f"must be {what}, got {value}", D.SERVICE_CONFIG_RANGE)
        scale = 1.0 if key.endswith("_s") else 1e-3 if key.endswith("_ms") else None
        if scale is not None and (value * scale > MAX_DURATION_S or 0 < value * scale < 1e-6):
            unit = "s" if scale == 1.0 else "ms"
            top = MAX_DURATION_S / scale
            raise self.error(
                key,
                f"must be at most {top:.0f} {unit} (7 days) and, when not 0, at least "
                f"{1e-6 / scale:g} {unit}; got {value}",
                D.SERVICE_CONFIG_RANGE,
            )
        return float(value)

    def flag(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self._get(key, default)
        self._type(key, value, isinstance(value, bool), "true or false")
        return value

    def text(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self._get(key, default)
        if value is None and key not in self.data:
            return None
        self._type(key, value, isinstance(value, str) and value != "", "a non-empty string")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _REQUIRED) -> Any:
        value = self.text(key, default)
        if value not in choices:
            raise self.error(
                key, f"must be one of {', '.join(choices)}; got {value!r}", D.SERVICE_CONFIG_RANGE
            )
        return value

    def path(self, key: str, default: Any = _REQUIRED) -> Path | None:
        value = self.text(key, default)
        if value is None:
            return None
        if "\0" in value:
            raise self.error(key, f"{value!r}: a path cannot hold a NUL", D.SERVICE_CONFIG_RANGE)
        try:
            p = Path(value).expanduser()
        except RuntimeError:  # "~user/..." for a user without a home directory here
            raise self.error(
                key,
                f"{value!r}: no home directory for its ~ prefix on this machine; write the path "
                "in full",
                D.SERVICE_CONFIG_RANGE,
            ) from None
        return p if p.is_absolute() else self.ctx.base_dir / p

    def bound(self, key: str) -> int | float | None:
        """An optional value bound: a finite integer or float (never a boolean)."""
        value = self._get(key, None)
        if key not in self.data:
            return None
        self._type(key, value, type(value) in (int, float), "a number")
        if not math.isfinite(value):
            raise self.error(
                key, f"must be finite (omit it for no bound), got {value}", D.SERVICE_CONFIG_RANGE
            )
        return value  # type: ignore[no-any-return]

    def shape(self, key: str, *, any_dim: bool) -> tuple[int, ...] | None:
        value = self._get(key, None)
        if value is None:
            return None
        lowest = -1 if any_dim else 0
        ok = isinstance(value, list) and all(type(d) is int for d in value)
        self._type(key, value, ok, "a list of integers")
        if any(d < lowest for d in value):
            allowed = "-1 (any size) or a size >= 0" if any_dim else "sizes >= 0"
            raise self.error(key, f"dims must be {allowed}, got {value}", D.SERVICE_CONFIG_RANGE)
        return tuple(value)


def _config_text(p: Path) -> str:
    """The configuration file's text. A pipe or a device is refused unread (it could block or
    never end), and so is a file over :data:`MAX_CONFIG_BYTES`: DIA-7202."""
    problem = None
    try:
        data, _ = read_regular(str(p), "configuration file", MAX_CONFIG_BYTES + 1)
    except NotARegularFile as exc:
        raise ServiceConfigError(
            exc.message, diagnostic=D.SERVICE_CONFIG_UNREADABLE, file=str(p)
        ) from None
    except OSError as exc:
        problem = str(exc)
    else:
        if len(data) > MAX_CONFIG_BYTES:
            problem = f"larger than {MAX_CONFIG_BYTES >> 20} MiB"
        else:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError as exc:
                problem = str(exc)
    raise ServiceConfigError(
        f"{p}: cannot read the configuration file: {problem}",
        diagnostic=D.SERVICE_CONFIG_UNREADABLE,
        file=str(p),
    )


def _known_answer_bytes(path: Path, invalid: Any) -> bytes:
    """A known-answer file outside a model directory: a regular file of at most
    ``_MAX_KNOWN_ANSWER`` bytes, never a pipe or a device (``invalid(message)`` raises)."""
    try:
        data, _ = read_regular(str(path), "known answer", _MAX_KNOWN_ANSWER + 1)
    except NotARegularFile as exc:
        raise invalid(exc.message) from None
    except OSError as exc:
        raise invalid(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_KNOWN_ANSWER:
        raise invalid(f"{path} is larger than {_MAX_KNOWN_ANSWER >> 20} MiB")
    return data


_WANT = {
    "file or absent": stat.S_ISREG,
    "socket or absent": stat.S_ISSOCK,
    "directory": stat.S_ISDIR,
    "file": stat.S_ISREG,
    "device": stat.S_ISCHR,
}


def _path_problem(path: Path, want: str) -> tuple[str | None, bool]:
    """What is wrong with what ``path`` names, for ``want`` (see ``check_paths``), or None;
    and whether it is only missing on this machine."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not want.endswith("or absent"):
            return "does not exist", True
        parent = path.parent
        return (
            (None, False) if parent.is_dir() else (f"its directory {parent} does not exist", True)
        )
    except OSError as exc:
        return f"cannot be examined ({exc.strerror})", False
    if _WANT[want](mode):
        return None, False
    return (f"is {kind_of(mode)}; it must be a {want.replace(' or absent', '')}", False)


MAX_SOCKET_PATH = 107
"""The longest Unix socket path a client can connect to (``sun_path`` is 108 bytes with NUL)."""
MAX_CONFIG_BYTES = 1 << 20
"""The largest configuration file read (a real one is a few hundred bytes)."""
MAX_DURATION_S = 7 * 86400
"""The longest duration a configuration may give (any ``*_s`` or ``*_ms`` key)."""


def _toml_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string"}
    names.update({list: "array", dict: "table"})
    return names.get(type(value), type(value).__name__)


# --- the sections -----------------------------------------------------------------------------

_POLICY_KEYS = {
    (f.name[:-3] + "_ms" if f.name.endswith("_ns") else f.name): f.name
    for f in dataclasses.fields(Policy)
}
_KEYS: dict[str, tuple[str, ...]] = {
    "service": (
        "socket",
        "max_request_mb",
        "max_clients",
        "read_timeout_s",
        "drain_timeout_s",
        "max_buffered_mb",
    ),
    "log": (
        "path",
        "segment_kb",
        "segments",
        "frozen_quota",
        "durability",
        "seal",
        "clock",
        "clock_device",
    ),
    "log.seal": ("key", "fss", "every_records", "every_ms"),
    "model": ("dir", "public_key", "factory", "kwargs", "device", "input", "output"),
    "model.input": ("dtype", "shape", "min", "max"),
    "workers": (
        "standby",
        "active",
        "max_queue",
        "heartbeat_ms",
        "heartbeat_timeout_ms",
        "start_timeout_s",
        "warmup_calls",
        "shm_mb",
        "spin_us",
    ),
    "supervisor": (
        "deadline_ms",
        "policy",
        "fallback",
        "last_good_max_age_ms",
        "constant_value",
        "constant_shape",
        "constant_dtype",
        "known_answer",
        "digest_inline_max_kb",
        "digest_queue",
    ),
    "supervisor.policy": tuple(_POLICY_KEYS),
    "supervisor.known_answer": ("file", "atol", "rtol"),
    "metrics": ("listen", "timeout_s", "max_connections"),
    "systemd": ("notify",),
    "http": (
        "listen",
        "model_name",
        "max_request_mb",
        "max_json_mb",
        "max_connections",
        "timeout_s",
    ),
    "grpc": ("listen", "model_name", "max_request_mb", "max_concurrency", "idle_timeout_s"),
}
_TOP_KEYS = (
    *("service", "log", "model", "workers", "supervisor", "metrics", "systemd", "http"),
    "grpc",
)
_WIRE_KEYS = ("limits", "tracing")  # read by _config_wire
_KEYS["limits"] = _config_wire.LIMITS_KEYS
_KEYS["tracing"] = _config_wire.TRACING_KEYS


def _service(t: _Table | None) -> ServiceSection:
    assert t is not None
    d = ServiceSection(Path())
    section = ServiceSection(
        socket=t.path("socket"),  # type: ignore[arg-type]  # required: never None
        max_request_mb=t.integer("max_request_mb", d.max_request_mb, maximum=4096),
        max_clients=t.integer("max_clients", d.max_clients, maximum=65536),
        read_timeout_s=t.number("read_timeout_s", d.read_timeout_s),
        drain_timeout_s=t.number("drain_timeout_s", d.drain_timeout_s, zero=True),
        max_buffered_mb=t.integer("max_buffered_mb", None, maximum=1 << 20),
    )
    if len(os.fsencode(section.socket)) > MAX_SOCKET_PATH:
        raise t.error(
            "socket",
            f"{section.socket} is {len(os.fsencode(section.socket))} bytes; a Unix socket path "
            f"is at most {MAX_SOCKET_PATH} (clients could not connect to a longer one): use a "
            "shorter directory, e.g. /run/vigil/",
            D.SERVICE_CONFIG_RANGE,
        )
    if section.max_buffered_mb is not None and section.max_buffered_mb < section.max_request_mb:
        raise t.error(
            "max_buffered_mb",
            f"{section.max_buffered_mb} is under max_request_mb ({section.max_request_mb}): "
            "one largest request would never fit",
            D.SERVICE_CONFIG_INCONSISTENT,
        )
    return section


def _log(t: _Table | None) -> LogSection:
    assert t is not None
    d = LogSection(Path())
    section = LogSection(
        path=t.path("path"),  # type: ignore[arg-type]  # required: never None
        segment_kb=t.integer("segment_kb", d.segment_kb, minimum=8, maximum=1 << 20),
        segments=t.integer("segments", d.segments, minimum=2, maximum=1 << 24),
        frozen_quota=t.integer("frozen_quota", None, minimum=0),
        durability=t.choice("durability", DURABILITY, d.durability),
        seal=_seal(t.table("seal")),
        clock=t.choice("clock", CLOCK_SOURCES, d.clock),
        clock_device=t.path("clock_device", None),
    )
    if (section.clock == "ptp") != (section.clock_device is not None):
        raise t.error(
            "clock_device",
            'give clock_device (a /dev/ptpN path) exactly when clock = "ptp"',
            D.SERVICE_CONFIG_INCONSISTENT,
        )
    if section.segment_kb % 4:
        raise t.error(
            "segment_kb",
            f"must be a multiple of 4 (4 KiB pages), got {section.segment_kb}",
            D.SERVICE_CONFIG_RANGE,
        )
    try:
        section.ring()
    except ConfigError as exc:
        raise t.error(
            "segments",
            f"inconsistent ring geometry: {exc.message}",
            D.SERVICE_CONFIG_INCONSISTENT,
        ) from exc
    return section


def _seal(t: _Table | None) -> SealSection | None:
    if t is None:
        return None
    d = SealSection()
    section = SealSection(
        key=t.path("key", None),
        fss=t.path("fss", None),
        every_records=t.integer("every_records", d.every_records, maximum=2**31),
        every_ms=t.integer("every_ms", d.every_ms, minimum=0, maximum=2**31),
    )
    if section.key is None and section.fss is None:
        raise t.error(
            "key",
            "a seal needs a signing key, an FSS state (fss), or both",
            D.SERVICE_CONFIG_REQUIRED,
        )
    return section


def _model(t: _Table | None) -> ModelSection:
    assert t is not None
    has_dir, has_factory = t.has("dir"), t.has("factory")
    if has_dir == has_factory:
        rule = (
            "give either dir (with public_key) or factory, not both"
            if has_dir
            else "required: dir (a signed model directory, with public_key) or factory"
        )
        code = D.SERVICE_CONFIG_INCONSISTENT if has_dir else D.SERVICE_CONFIG_REQUIRED
        raise t.error("dir" if has_dir else "factory", rule, code)
    factory = t.text("factory", None)
    if factory is not None and not _FACTORY.fullmatch(factory):
        raise t.error(
            "factory",
            f"must look like 'package.module:function', got {factory!r}",
            D.SERVICE_CONFIG_RANGE,
        )
    if has_dir and not t.has("public_key"):
        raise t.error(
            "public_key",
            "required with dir: the trusted public key that signed the model",
            D.SERVICE_CONFIG_REQUIRED,
        )
    if has_factory and (t.has("public_key")):
        raise t.error(
            "public_key",
            "only with dir: a factory's model is not a signed artifact",
            D.SERVICE_CONFIG_INCONSISTENT,
        )
    if has_dir and t.has("kwargs"):
        raise t.error(
            "kwargs",
            "only with factory: a signed model is built from its manifest",
            D.SERVICE_CONFIG_INCONSISTENT,
        )
    device = t.text("device", "cpu")
    if not _DEVICE.fullmatch(device):
        raise t.error(
            "device", f'must be "cpu", "cuda" or "cuda:N", got {device!r}', D.SERVICE_CONFIG_RANGE
        )
    return ModelSection(
        dir=t.path("dir", None),
        public_key=t.path("public_key", None),
        factory=factory,
        kwargs=t.raw_table("kwargs"),
        device=device,
        input=_input(t.table("input")),
        output=t.choice("output", OUTPUTS, "logits"),
    )


def _check_output(config: ServeConfig) -> None:
    """Token output serves a mapping of two small tensors: a constant fallback (one tensor of
    ``constant_shape``) cannot stand in for it."""
    if config.model.output == "tokens" and "constant" in config.supervisor.fallback:
        raise ServiceConfigError(
            f'{config.source}: [model].output: "tokens" serves tokens and logprobs; the '
            'constant fallback answers one tensor: use fallback "last_good" or "none"',
            diagnostic=D.SERVICE_CONFIG_INCONSISTENT,
            file=config.source,
            key="[model].output",
        )


def _input(t: _Table | None) -> InputSection | None:
    if t is None:
        return None
    dtype = t.text("dtype", None)
    if dtype is not None and dtype not in DTYPES:
        raise t.error(
            "dtype", f"must be one of {', '.join(DTYPES)}; got {dtype!r}", D.SERVICE_CONFIG_RANGE
        )
    shape = t.shape("shape", any_dim=True)
    low, high = t.bound("min"), t.bound("max")
    if dtype is not None:
        _check_bounds_fit(t, getattr(torch, dtype), low, high)
    if low is not None and high is not None and low > high:
        raise t.error(
            "min", f"{low} exceeds max = {high}: no value can pass", D.SERVICE_CONFIG_INCONSISTENT
        )
    return InputSection(dtype=dtype, shape=shape, min=low, max=high)


def _check_bounds_fit(
    t: _Table, dtype: torch.dtype, low: int | float | None, high: int | float | None
) -> None:
    """Refuse bounds that ``dtype`` makes meaningless: a fractional bound on whole numbers
    (it would be silently rounded), a range that holds no value of the dtype."""
    name = str(dtype).removeprefix("torch.")
    if not dtype.is_floating_point:
        for key, value in (("min", low), ("max", high)):
            if isinstance(value, float) and not value.is_integer():
                rounded = math.ceil(value) if key == "min" else math.floor(value)
                raise t.error(
                    key,
                    f"{value} is fractional, but dtype {name} holds whole numbers only, so the "
                    f"bound would act as {rounded}; write the whole number you mean",
                    D.SERVICE_CONFIG_INCONSISTENT,
                )
    lowest: int | float
    highest: int | float
    if dtype == torch.bool:
        lowest, highest = 0, 1
    elif dtype.is_floating_point:
        lowest, highest = torch.finfo(dtype).min, torch.finfo(dtype).max
    else:
        lowest, highest = torch.iinfo(dtype).min, torch.iinfo(dtype).max
    if low is not None and low > highest:
        raise t.error(
            "min",
            f"{low} is above the largest {name} value ({highest}): no input can pass",
            D.SERVICE_CONFIG_INCONSISTENT,
        )
    if high is not None and high < lowest:
        raise t.error(
            "max",
            f"{high} is below the smallest {name} value ({lowest}): no input can pass",
            D.SERVICE_CONFIG_INCONSISTENT,
        )


def _workers(t: _Table | None) -> WorkersSection:
    d = WorkersSection()
    if t is None:
        return d
    section = WorkersSection(
        standby=t.flag("standby", d.standby),
        active=t.integer("active", d.active, minimum=1, maximum=64),
        max_queue=t.integer("max_queue", d.max_queue, minimum=0, maximum=1_000_000),
        heartbeat_ms=t.integer("heartbeat_ms", d.heartbeat_ms),
        heartbeat_timeout_ms=t.integer("heartbeat_timeout_ms", d.heartbeat_timeout_ms),
        start_timeout_s=t.number("start_timeout_s", d.start_timeout_s),
        warmup_calls=t.integer("warmup_calls", d.warmup_calls, minimum=0),
        shm_mb=t.integer("shm_mb", d.shm_mb, maximum=65536),
        spin_us=t.integer("spin_us", d.spin_us, minimum=0, maximum=1_000_000),
    )
    if section.heartbeat_timeout_ms <= section.heartbeat_ms:
        raise t.error(
            "heartbeat_timeout_ms",
            f"must exceed heartbeat_ms ({section.heartbeat_ms}), got "
            f"{section.heartbeat_timeout_ms}: a healthy worker would be declared lost",
            D.SERVICE_CONFIG_INCONSISTENT,
        )
    return section


def _supervisor(t: _Table | None) -> SupervisorSection:
    assert t is not None
    d = SupervisorSection(1.0, Policy())
    raw = t._get("fallback", "none")
    kinds = [raw] if isinstance(raw, str) else raw
    t._type(
        "fallback",
        raw,
        isinstance(kinds, list) and all(isinstance(k, str) for k in kinds),
        "a string or a list of strings",
    )
    for kind in kinds:
        if kind not in FALLBACKS:
            raise t.error(
                "fallback",
                f"each entry must be one of {', '.join(FALLBACKS)}; got {kind!r}",
                D.SERVICE_CONFIG_RANGE,
            )
    if "none" in kinds and len(kinds) > 1:
        raise t.error(
            "fallback",
            '"none" cannot be combined with other fallbacks',
            D.SERVICE_CONFIG_INCONSISTENT,
        )
    if isinstance(raw, list) and kinds in ([], ["none"]):  # one way to say it: "none"
        raise t.error(
            "fallback",
            f'{raw!r}: a chain lists "last_good" and "constant"; no fallback is "none"',
            D.SERVICE_CONFIG_RANGE,
        )
    if len(set(kinds)) != len(kinds):
        raise t.error("fallback", f"lists a fallback twice: {kinds}", D.SERVICE_CONFIG_INCONSISTENT)
    chain = tuple(k for k in kinds if k != "none")
    for key, needs in (
        ("last_good_max_age_ms", "last_good"),
        ("constant_value", "constant"),
        ("constant_shape", "constant"),
        ("constant_dtype", "constant"),
    ):
        if t.has(key) and needs not in chain:
            raise t.error(
                key,
                f'set, but fallback does not include "{needs}"',
                D.SERVICE_CONFIG_INCONSISTENT,
            )
    if "constant" in chain and not t.has("constant_shape"):
        raise t.error(
            "constant_shape",
            'required with fallback "constant": the shape of the safe output',
            D.SERVICE_CONFIG_REQUIRED,
        )
    value = t._get("constant_value", d.constant_value)
    t._type("constant_value", value, type(value) in (int, float), "a number")
    dtype = t.choice("constant_dtype", DTYPES, d.constant_dtype)
    if t.has("constant_value") and not fits_dtype(value, getattr(torch, dtype)):
        raise t.error(
            "constant_value",
            f"{value} is not a value of constant_dtype {dtype} (finite, and for integer dtypes "
            "a whole number in range)",
            D.SERVICE_CONFIG_INCONSISTENT,
        )
    policy = _policy(t.table("policy"), known_answer=t.has("known_answer"))
    if t.has("known_answer") and not policy.known_answer_probes:
        raise t.error(
            "known_answer",
            'set, but no probe uses it: add probe_mode = "known_answer" or probe_interval_ms '
            "to [supervisor.policy]",
            D.SERVICE_CONFIG_INCONSISTENT,
        )
    return SupervisorSection(
        deadline_ms=t.number("deadline_ms"),
        policy=policy,
        fallback=chain,
        last_good_max_age_ms=t.number("last_good_max_age_ms", d.last_good_max_age_ms),
        constant_value=float(value),
        constant_shape=t.shape("constant_shape", any_dim=False),
        constant_dtype=dtype,
        known_answer=_known_answer(t.table("known_answer")),
        digest_inline_max_kb=t.integer(
            "digest_inline_max_kb", d.digest_inline_max_kb, minimum=0, maximum=1 << 20
        ),
        digest_queue=t.integer("digest_queue", d.digest_queue, minimum=1, maximum=4096),
    )


def _known_answer(t: _Table | None) -> KnownAnswerSection | None:
    if t is None:
        return None
    d = KnownAnswerSection("", Path())
    path = t.path("file")
    assert path is not None  # required
    return KnownAnswerSection(
        file=t.text("file"),
        path=path,
        atol=t.number("atol", d.atol, zero=True),
        rtol=t.number("rtol", d.rtol, zero=True),
    )


def _policy(t: _Table | None, *, known_answer: bool) -> Policy:
    if t is None:
        return Policy()
    defaults = Policy()
    kwargs: dict[str, Any] = {}
    for key, field in _POLICY_KEYS.items():
        if not t.has(key):
            continue
        default = getattr(defaults, field)
        if field.endswith("_ns"):
            kwargs[field] = round(t.number(key) * _MS)
        elif isinstance(default, bool):
            kwargs[field] = t.flag(key)
        elif isinstance(default, int):
            kwargs[field] = t.integer(key, minimum=0 if field == "max_failed_recoveries" else 1)
        elif isinstance(default, float):
            kwargs[field] = float(t.number(key))
        else:
            kwargs[field] = t.text(key)
    try:
        policy = Policy(**kwargs)
    except ConfigError as exc:
        message, named = exc.message, 0
        for key, field in _POLICY_KEYS.items():
            named += field in message
            message = message.replace(field, key)
        raise ServiceConfigError(
            f"{t.ctx.source}: [supervisor.policy]: {message}",
            diagnostic=D.SERVICE_CONFIG_INCONSISTENT if named > 1 else D.SERVICE_CONFIG_RANGE,
            file=t.ctx.source,
            key="[supervisor.policy]",
        ) from exc
    if policy.known_answer_probes and not known_answer:
        which = "probe_mode" if policy.probe_mode == "known_answer" else "probe_interval_ms"
        raise t.error(
            which,
            "known-answer probes need a known input and output: add [supervisor.known_answer] "
            '(file = "known_answer.safetensors"), or use probe_mode "shadow" or "live"',
            D.SERVICE_CONFIG_INCONSISTENT,
        )
    return policy


def _listen(t: _Table) -> tuple[str, str, int] | None:
    """``listen = "host:port"`` as (listen, host, port), or None when absent."""
    listen = t.text("listen", None)
    if listen is None:
        return None
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", listen)
    if not m:
        raise t.error(
            "listen",
            f'must be "host:port" (e.g. "127.0.0.1:9109"), got {listen!r}',
            D.SERVICE_CONFIG_RANGE,
        )
    host, port = (m[1], int(m[2])) if m[1] else (m[3], int(m[4]))
    if port > 65535:
        raise t.error("listen", f"port must be in 0..65535, got {port}", D.SERVICE_CONFIG_RANGE)
    return listen, host or "127.0.0.1", port


def _metrics(t: _Table | None) -> MetricsSection:
    if t is None:
        return MetricsSection()
    d = MetricsSection()
    at = _listen(t)
    timeout_s = t.number("timeout_s", d.timeout_s)  # checked with or without listen
    max_connections = t.integer("max_connections", d.max_connections, maximum=1024)
    if at is None:
        return MetricsSection()
    return MetricsSection(
        listen=at[0],
        host=at[1],
        port=at[2],
        timeout_s=timeout_s,
        max_connections=max_connections,
    )


def _http(t: _Table | None) -> HttpSection:
    if t is None:
        return HttpSection()
    d = HttpSection()
    at = _listen(t)
    section = HttpSection(
        model_name=_model_name(t, d.model_name),
        max_request_mb=t.integer("max_request_mb", d.max_request_mb, maximum=4096),
        max_json_mb=t.integer("max_json_mb", d.max_json_mb, maximum=1024),
        max_connections=t.integer("max_connections", d.max_connections, maximum=1024),
        timeout_s=t.number("timeout_s", d.timeout_s),
    )
    if at is None:
        return section
    return dataclasses.replace(section, listen=at[0], host=at[1], port=at[2])


def _model_name(t: _Table, default: str) -> str:
    name: str = t.text("model_name", default)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise t.error(
            "model_name",
            f"must be 1..64 of A-Z a-z 0-9 _ . - (it is a URL path segment), got {name!r}",
            D.SERVICE_CONFIG_RANGE,
        )
    return name


def _grpc(t: _Table | None) -> GrpcSection:
    if t is None:
        return GrpcSection()
    d = GrpcSection()
    at = _listen(t)
    section = GrpcSection(
        model_name=_model_name(t, d.model_name),
        max_request_mb=t.integer("max_request_mb", d.max_request_mb, maximum=2047),
        max_concurrency=t.integer("max_concurrency", d.max_concurrency, maximum=1024),
        idle_timeout_s=t.number("idle_timeout_s", d.idle_timeout_s),
    )
    if at is None:
        return section
    return dataclasses.replace(section, listen=at[0], host=at[1], port=at[2])


def _systemd(t: _Table | None) -> SystemdSection:
    if t is None:
        return SystemdSection()
    value = t._get("notify", "auto")
    t._type("notify", value, isinstance(value, bool) or value == "auto", 'true, false or "auto"')
    return SystemdSection(notify=value)
