"""The safety policy: every threshold the state machine applies, validated on construction.

A policy is data: it is recorded in the flight log (its canonical JSON as an annotation, its
SHA-256 in every LIFECYCLE record), so that ``vigil replay`` can re-derive every transition
from the recorded calls with exactly the policy that was in force.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from vigil.errors import ConfigError

PROBE_MODES = ("live", "shadow", "known_answer")
_SECOND = 1_000_000_000


@dataclass(frozen=True)
class Policy:
    """When the primary model may answer, and when it may not.

    Attributes:
        consecutive_failures: trip NORMAL -> DEGRADED after this many failures in a row.
        window: size of the count-based sliding window of primary calls.
        min_calls: the window's rates are only judged once it holds this many calls.
        failure_rate: trip when failures / calls in the window reach this (0 < r <= 1).
        slow_call_ns: a primary call slower than this (but within its deadline) is *slow*;
            None disables slow-call tracking.
        slow_rate: trip when slow calls / calls in the window reach this.
        cooldown_ns: time in DEGRADED before recovery probes begin ...
        cooldown_backoff: ... multiplied by this after each failed recovery in a row ...
        cooldown_max_ns: ... up to this cap.
        probes_required: consecutive good probes that end RECOVERING.
        probe_mode: ``live`` (a probe's answer is served when good), ``shadow`` (the fallback
            answers while the primary runs the same input and is only checked), or
            ``known_answer`` (the fallback answers while the primary is probed with a fixed
            input whose correct output is known).
        max_recovering_ns: RECOVERING longer than this counts as a failed recovery (a hanging
            probe cannot freeze recovery).
        max_failed_recoveries: more failed recoveries than this within
        failed_recovery_period_ns: ... this period end in SAFE_STOP (supervisor restarts
            recorded in the log count too).
        probe_interval_ns: in NORMAL, run the known-answer probe this often (None: never).
        count_bad_input: hold inputs that break their contract against the model.
        known_answer_trips: a failed known-answer probe in NORMAL trips at once (DIA-4111);
            False counts it like a user call. A recorded policy without the field (written
            before it existed) reads as False, so that old logs replay as they ran.
    """

    consecutive_failures: int = 3
    window: int = 20
    min_calls: int = 10
    failure_rate: float = 0.5
    slow_call_ns: int | None = None
    slow_rate: float = 0.5
    cooldown_ns: int = 1 * _SECOND
    cooldown_backoff: float = 2.0
    cooldown_max_ns: int = 60 * _SECOND
    probes_required: int = 5
    probe_mode: str = "shadow"
    max_recovering_ns: int = 30 * _SECOND
    max_failed_recoveries: int = 3
    failed_recovery_period_ns: int = 300 * _SECOND
    probe_interval_ns: int | None = None
    count_bad_input: bool = False
    known_answer_trips: bool = True

    def __post_init__(self) -> None:
        _positive_int(self, "consecutive_failures", "window", "min_calls", "probes_required")
        _positive_int(self, "cooldown_ns", "cooldown_max_ns", "max_recovering_ns")
        _positive_int(self, "failed_recovery_period_ns")
        if not isinstance(self.max_failed_recoveries, int) or self.max_failed_recoveries < 0:
            raise ConfigError("max_failed_recoveries must be an integer >= 0")
        if self.min_calls > self.window:
            raise ConfigError(
                f"min_calls={self.min_calls} exceeds window={self.window}: the window could "
                "never hold enough calls to judge its rates"
            )
        for name in ("failure_rate", "slow_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value <= 1:
                raise ConfigError(f"{name}={value!r}: must be in (0, 1]")
        if not isinstance(self.cooldown_backoff, int | float) or self.cooldown_backoff < 1:
            raise ConfigError(f"cooldown_backoff={self.cooldown_backoff!r}: must be >= 1")
        if self.cooldown_max_ns < self.cooldown_ns:
            raise ConfigError("cooldown_max_ns must be >= cooldown_ns")
        for name in ("slow_call_ns", "probe_interval_ns"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{name}={value!r}: must be a positive integer or None")
        for name in ("count_bad_input", "known_answer_trips"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be True or False")
        if self.probe_mode not in PROBE_MODES:
            raise ConfigError(f"probe_mode={self.probe_mode!r}: choose one of {PROBE_MODES}")

    def cooldown_after(self, failed_in_a_row: int) -> int:
        """Cooldown in ns after ``failed_in_a_row`` failed recoveries (0 for the first)."""
        grown = self.cooldown_ns * self.cooldown_backoff ** min(failed_in_a_row, 64)
        return int(min(grown, self.cooldown_max_ns))

    @property
    def known_answer_probes(self) -> bool:
        """Whether this policy runs known-answer probes (and so needs a known answer)."""
        return self.probe_mode == "known_answer" or self.probe_interval_ns is not None

    def to_json(self) -> dict[str, Any]:
        """The canonical description recorded in the flight log."""
        return {"policy": 1, **dataclasses.asdict(self)}

    def canonical(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> bytes:
        """SHA-256 of :meth:`canonical` (recorded in every LIFECYCLE record)."""
        return hashlib.sha256(self.canonical().encode()).digest()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        """Rebuild a recorded policy. Raises ConfigError for unknown versions or fields."""
        if data.get("policy") != 1:
            raise ConfigError(f"unknown policy version {data.get('policy')!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields - {"policy"}
        if unknown:
            raise ConfigError(f"unknown policy fields: {sorted(unknown)}")
        values = {"known_answer_trips": False} | data  # absent: recorded before it existed
        return cls(**{k: v for k, v in values.items() if k != "policy"})


def _positive_int(policy: Policy, *names: str) -> None:
    for name in names:
        value = getattr(policy, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name}={value!r}: must be a positive integer")
