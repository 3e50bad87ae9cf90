"""The supervisor's edges, as an outside audit of the documented API found them: an operator
reset that could change state unrecorded, a last good output changed in place and served, a
primary answer past its deadline served, a clock read that failed and stopped the watchdog,
hostile text and BaseExceptions escaping unrecorded, values the log cannot hold accepted, and
calls in flight when ``close()`` ran left unrecorded. Each test failed before its fix."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vigil import _diagnostics as D
from vigil.auditlog import LogReader, SystemClock
from vigil.errors import ConfigError, InvalidArgument, InvalidInput, Unavailable
from vigil.fsm import Policy
from vigil.schemas import Outcome, RecordType, ServedBy, State
from vigil.supervisor import Constant, FallbackModel, LastGood, Supervisor, replay
from vigil.supervisor import _supervisor as S

from conftest import SMALL, FakeClock

X = torch.ones(1, 4)
MS = 1_000_000


def _records(path: Path) -> list[Any]:
    with LogReader(path) as r:
        assert r.verify().intact
        return list(r.records())


def _sup(model: Callable[[Any], Any], path: Path, **kw: Any) -> Supervisor:
    """A supervisor on the small ring, inline, with a constant fallback unless ``kw`` says
    otherwise."""
    kw.setdefault("isolation", "inline")
    kw.setdefault("fallback", Constant(torch.zeros(1, 4)))
    return Supervisor(model, log=path, ring=SMALL, **kw)


def _timed(model: Callable[[Any], Any], path: Path, clock: Any, **kw: Any) -> Supervisor:
    """A supervisor on ``clock`` (the deadline and isolation given)."""
    return _sup(model, path, clock=clock, **kw)


def _failing() -> Callable[[Any], Any]:
    def model(x: Any) -> Any:
        raise RuntimeError("primary down")

    return model


# --- reset ---------------------------------------------------------------------------------


def test_a_reset_with_a_reason_that_is_not_text_changes_nothing(tmp_path: Path) -> None:
    """reset(5) once moved the machine DEGRADED -> NORMAL, then failed to record it: an
    unaudited reset, and replay disagreed at the next trip."""
    path = tmp_path / "log.vigil"
    with _sup(_failing(), path, policy=Policy(consecutive_failures=1)) as sup:
        sup.infer(X)
        assert sup.state is State.DEGRADED
        with pytest.raises(InvalidArgument, match="reset reason"):
            sup.reset(5)  # type: ignore[arg-type]
        assert sup.state is State.DEGRADED
        sup.reset("operator \udcff")  # a lone surrogate, as os.fsdecode makes: recorded
        assert sup.state is State.NORMAL
        sup.infer(X)
    transitions = [r.body for r in _records(path) if r.type is RecordType.TRANSITION]
    assert [(t["from_state"], t["to_state"]) for t in transitions] == [
        (State.NORMAL, State.DEGRADED),
        (State.DEGRADED, State.NORMAL),
        (State.NORMAL, State.DEGRADED),
    ]
    assert transitions[1]["reason"] == "operator \\udcff"
    assert replay(path).verdict == "AGREES"


# --- inputs whose examination raises -------------------------------------------------------


class _Raises:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __repr__(self) -> str:
        raise self.exc


class _Custom(BaseException):
    pass


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("bad \udcff text"), SystemExit(3), _Custom("not an Exception")],
    ids=["surrogate-message", "system-exit", "base-exception"],
)
def test_an_input_whose_repr_raises_anything_is_rejected_and_recorded(
    tmp_path: Path, exc: BaseException
) -> None:
    """The REJECTED reason quoting a lone surrogate once raised UnicodeEncodeError, and a
    BaseException escaped as it was: a raw exception and no record, either way."""
    path = tmp_path / "log.vigil"
    with Supervisor(lambda x: x, log=path, ring=SMALL, isolation="inline") as sup:
        with pytest.raises(InvalidInput) as refused:
            sup.infer(_Raises(exc))
        assert refused.value.code == D.INPUT_UNREADABLE.code
    (rejected,) = [r for r in _records(path) if r.type is RecordType.REJECTED]
    assert rejected.body["code"] == D.INPUT_UNREADABLE.number
    assert type(exc).__name__ in rejected.body["reason"]


# --- last good output ----------------------------------------------------------------------


def test_a_last_good_output_changed_in_place_is_never_served(tmp_path: Path) -> None:
    """A model that writes into one static output buffer (CUDA-graph style) wrote NaN into
    the last good output, which was then served as LAST_GOOD."""
    buffer = torch.empty(1, 4)
    calls = [0]

    def static(x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        buffer.copy_(x * 2 if calls[0] == 1 else torch.full((1, 4), float("nan")))
        return buffer

    path = tmp_path / "log.vigil"
    with Supervisor(
        static,
        log=path,
        ring=SMALL,
        isolation="inline",
        fallback=[LastGood(10**12), Constant(torch.zeros(1, 4))],
    ) as sup:
        assert sup.infer(X).served_by is ServedBy.PRIMARY
        second = sup.infer(X)
        assert second.outcome is Outcome.INVALID_OUTPUT
        assert second.served_by is ServedBy.CONSTANT  # was LAST_GOOD, all NaN
        assert torch.equal(second.output, torch.zeros(1, 4))


def test_a_last_good_output_the_caller_edited_is_never_served(tmp_path: Path) -> None:
    """Finite, but not what was checked and recorded: its digest no longer matches."""
    fail = [False]

    def model(x: torch.Tensor) -> torch.Tensor:
        if fail[0]:
            raise RuntimeError("primary down")
        return x * 2

    with Supervisor(
        model,
        log=tmp_path / "log.vigil",
        ring=SMALL,
        isolation="inline",
        fallback=LastGood(10**12),
    ) as sup:
        first = sup.infer(X)
        fail[0] = True
        assert sup.infer(X).served_by is ServedBy.LAST_GOOD  # unchanged: served
        first.output.add_(1.0)  # the caller edits the answer it got
        with pytest.raises(Unavailable):
            sup.infer(X)


# --- deadlines -----------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["inline", "thread"])
def test_a_primary_answer_after_its_deadline_is_never_served(
    tmp_path: Path, isolation: Any
) -> None:
    """The model takes 100 ms of the supervisor's clock against a 20 ms deadline and returns
    before the watchdog thread looked: thread isolation served it as PRIMARY / OK."""
    clock = FakeClock()

    def model(x: torch.Tensor) -> torch.Tensor:
        clock.advance(100 * MS)
        return x * 2

    path = tmp_path / "log.vigil"
    with _timed(model, path, clock, isolation=isolation, deadline_ns=20 * MS) as sup:
        r = sup.infer(X)
        assert (r.outcome, r.served_by) == (Outcome.TIMEOUT, ServedBy.CONSTANT)
        assert r.code is D.DEADLINE_MISSED
        assert sup.wait_hung(0, 10.0)


# --- clocks --------------------------------------------------------------------------------


class _Flaky:
    """The system clock, except for the next ``fail`` reads of one of its two sides."""

    def __init__(self, side: str) -> None:
        base = SystemClock()
        self.source, self.boot_uuid, self._base = base.source, base.boot_uuid, base
        self.side, self.fail = side, 0

    def monotonic_ns(self) -> int:
        if self.side == "monotonic" and self.fail:
            self.fail -= 1
            raise OSError("clock read failed")
        return self._base.monotonic_ns()

    def realtime_ns(self) -> int:
        if self.side == "realtime" and self.fail:
            self.fail -= 1
            raise OSError("PHC read failed")
        return self._base.realtime_ns()


@pytest.mark.parametrize("side", ["monotonic", "realtime"])
def test_a_clock_read_that_fails_is_bridged(tmp_path: Path, side: str) -> None:
    """One failed read of the monotonic side killed the watchdog thread (a later hang then
    held its caller for seconds); of the realtime side, it escaped infer with no record."""
    clock = _Flaky(side)
    gate = threading.Event()
    hang = [False]

    def model(x: torch.Tensor) -> torch.Tensor:
        if hang[0]:
            gate.wait(30.0)
        return x * 2

    path = tmp_path / "log.vigil"
    with _timed(model, path, clock, isolation="thread", deadline_ns=50 * MS) as sup:
        clock.fail = 3
        watchdog = sup._watchdog
        watchdog.poke()  # the watchdog thread reads the clock too: it must survive it
        assert sup.infer(X).served_by is ServedBy.PRIMARY
        hang[0] = True
        late = sup.infer(X)
        assert (late.outcome, late.served_by) == (Outcome.TIMEOUT, ServedBy.CONSTANT)
        gate.set()
        assert sup.wait_hung(0, 10.0)
        assert watchdog._thread.is_alive()
        assert sup.statistics().clock_failures + watchdog.clock_errors >= 1
    inferences = [r for r in _records(path) if r.type is RecordType.INFERENCE]
    assert [r.body["outcome"] for r in inferences] == [Outcome.OK, Outcome.TIMEOUT]


# --- fallbacks -----------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [SystemExit(1), _Custom("fallback")], ids=["exit", "base"])
def test_a_fallback_raising_a_base_exception_is_skipped(tmp_path: Path, exc: BaseException) -> None:
    """It escaped infer as it was, and the primary's failure went unrecorded."""

    def fallback(x: Any) -> Any:
        raise exc

    path = tmp_path / "log.vigil"
    with _sup(
        _failing(), path, fallback=[FallbackModel(fallback), Constant(torch.zeros(1))]
    ) as sup:
        assert sup.infer(X).served_by is ServedBy.CONSTANT
    (call,) = [r for r in _records(path) if r.type is RecordType.INFERENCE]
    assert (call.body["outcome"], call.body["served_by"]) == (Outcome.ERROR, ServedBy.CONSTANT)


# --- construction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"deadline_ns": 2**64},
        {"deadline_ns": True},
        {"deadline_ns": 1.5e7},
        {"model_digest": "a" * 32},
        {"model_digest": bytearray(32)},
    ],
    ids=["deadline-2^64", "deadline-bool", "deadline-float", "digest-str", "digest-bytearray"],
)
def test_values_the_log_cannot_hold_are_refused_at_construction(
    tmp_path: Path, kwargs: dict[str, Any]
) -> None:
    """They were accepted, and every call then ran the model and failed to record itself."""
    with pytest.raises(ConfigError):
        Supervisor(lambda x: x, log=tmp_path / "log.vigil", ring=SMALL, **kwargs)
    assert not (tmp_path / "log.vigil").exists()  # refused before anything was opened


# --- close ---------------------------------------------------------------------------------


class _Held:
    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        self.gate.wait(30.0)
        return x * 2


def _closing(sup: Supervisor) -> tuple[threading.Thread, threading.Event]:
    """close() in a thread; the event is set once it waits for the calls in flight."""
    waiting = threading.Event()
    wait = sup._drained.wait

    def spy(timeout: float | None = None) -> bool:
        waiting.set()
        return wait(timeout)

    sup._drained.wait = spy  # type: ignore[method-assign]
    t = threading.Thread(target=sup.close)
    t.start()
    return t, waiting


def test_close_waits_for_a_call_in_flight_and_records_it(tmp_path: Path) -> None:
    """close() once returned at once: the call inside the model then got DIA-4012 (the log
    was closed under it) and left no record, though the model ran."""
    gate = threading.Event()
    model = _Held(gate)
    path = tmp_path / "log.vigil"
    sup = Supervisor(model, log=path, ring=SMALL, isolation="inline", deadline_ns=30_000 * MS)
    out: list[Any] = []
    caller = threading.Thread(target=lambda: out.append(sup.infer(X)))
    caller.start()
    assert model.entered.wait(10.0)
    closer, waiting = _closing(sup)
    assert waiting.wait(10.0)  # closed to new calls, waiting for this one
    with pytest.raises(Unavailable):
        sup.infer(X)  # a new call is refused
    gate.set()
    caller.join(10.0)
    closer.join(10.0)
    assert not closer.is_alive() and out and out[0].served_by is ServedBy.PRIMARY
    inferences = [r for r in _records(path) if r.type is RecordType.INFERENCE]
    assert len(inferences) == 1 and inferences[0].seq == out[0].seq


def test_close_gives_up_on_a_call_hung_past_its_deadline_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inline call stuck in the model cannot be stopped: close() waits for its deadline
    and a grace, records how many it left, and the call is refused as closed."""
    monkeypatch.setattr(S, "_CLOSE_GRACE_S", 0.05)
    gate = threading.Event()
    model = _Held(gate)
    path = tmp_path / "log.vigil"
    sup = Supervisor(model, log=path, ring=SMALL, isolation="inline", deadline_ns=10 * MS)
    out: list[Any] = []

    def call() -> None:
        try:
            out.append(sup.infer(X))
        except Unavailable as exc:
            out.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert model.entered.wait(10.0)
    sup.close()
    gate.set()
    caller.join(10.0)
    assert isinstance(out[0], Unavailable) and out[0].context["reason"] == "closed"
    notes = [
        json.loads(r.body["text"])
        for r in _records(path)
        if r.type is RecordType.ANNOTATION and r.body["key"] == "vigil.close"
    ]
    assert notes == [{"abandoned_calls": 1, "reason": "still in the model"}]


# --- the default output check --------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "served"),
    [
        ((torch.ones(1), float("nan")), False),
        ({"a": torch.ones(1), "b": float("inf")}, False),
        ((torch.ones(1), np.array([np.nan])), False),
        ([torch.ones(1), complex(1, float("nan"))], False),
        ((torch.ones(1), 1.5, np.array([2.0]), "text", 3), True),
    ],
    ids=["float-nan", "dict-inf", "numpy-nan", "complex-nan", "finite-leaves"],
)
def test_every_floating_value_beside_the_tensors_is_checked(
    tmp_path: Path, output: Any, served: bool
) -> None:
    """'Every floating value finite': a NaN float next to a tensor was served as OK."""
    with Supervisor(
        lambda x: output,
        log=tmp_path / "log.vigil",
        ring=SMALL,
        isolation="inline",
        fallback=Constant(torch.zeros(1)),
    ) as sup:
        r = sup.infer(X)
    assert (r.served_by is ServedBy.PRIMARY) is served
    if not served:
        assert (r.outcome, r.code) == (Outcome.INVALID_OUTPUT, D.INVALID_OUTPUT)


def test_a_rejected_expanded_view_is_not_hashed_at_its_viewed_size(tmp_path: Path) -> None:
    """4 bytes expanded to 256 MiB and refused on shape were copied whole to be hashed for
    the REJECTED record (2^29 elements: 12.8 s and 2.3 GB against a 20 ms deadline)."""
    from vigil.schemas import Contract, TensorSpec

    x = torch.zeros(1, 1).expand(1, 1 << 26)
    path = tmp_path / "log.vigil"
    with Supervisor(
        lambda v: v,
        log=path,
        ring=SMALL,
        isolation="inline",
        input_contract=Contract(TensorSpec(shape=(1, 4), dtype=torch.float32)),
    ) as sup:
        with pytest.raises(InvalidInput) as refused:
            sup.infer(x)
        assert refused.value.code == D.SHAPE_MISMATCH.code
        sup.infer(torch.zeros(1, 4).expand(1, 4))  # a small view is served and hashed as ever
    (rejected,) = [r for r in _records(path) if r.type is RecordType.REJECTED]
    assert rejected.body["input_digest"] == bytes(32)
    assert f"input not hashed: {4 << 26} bytes viewed" in rejected.body["reason"]


# --- known answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"expected": torch.tensor([float("nan")])},
        {"expected": "not a tensor"},
        {"atol": float("nan")},
        {"rtol": -1e-4},
        {"atol": True},
    ],
    ids=["nan-expected", "str-expected", "nan-atol", "negative-rtol", "bool-atol"],
)
def test_a_known_answer_that_could_never_match_is_refused(kwargs: dict[str, Any]) -> None:
    """Accepted, each left the supervisor DEGRADED for good at its first probe."""
    from vigil.supervisor import KnownAnswer

    with pytest.raises(ConfigError):
        KnownAnswer(**{"input": X, "expected": X * 2, **kwargs})


def test_a_model_that_edits_its_input_does_not_change_the_next_probe(tmp_path: Path) -> None:
    """The probe's input was passed by reference: a model writing into it corrupted every
    later probe (the next one failed, and the supervisor tripped)."""
    from vigil.supervisor import KnownAnswer

    def scribbler(x: torch.Tensor) -> torch.Tensor:
        out = x * 2
        x.add_(1.0)  # in place, as some models normalise their input
        return out

    clock = FakeClock()
    known = KnownAnswer(X, X * 2)
    with Supervisor(
        scribbler,
        log=tmp_path / "log.vigil",
        ring=SMALL,
        clock=clock,
        isolation="inline",
        known_answer=known,
        policy=Policy(probe_interval_ns=10 * MS, known_answer_trips=True),
    ) as sup:
        for _ in range(4):  # each call is due a known-answer probe first
            clock.advance(20 * MS)
            sup.infer(torch.ones(1, 4))
        assert sup.state is State.NORMAL
    assert torch.equal(known.input, X)


def test_refuse_records_whatever_the_service_passes(tmp_path: Path) -> None:
    """A str request id, a reason that is not a str, or one with a lone surrogate raised a
    raw exception and left the refusal unrecorded."""
    path = tmp_path / "log.vigil"
    with Supervisor(lambda x: x, log=path, ring=SMALL, isolation="inline") as sup:
        for rid, reason in (
            (b"A" * 16, "rate"),
            ("A" * 16, "rate"),
            (b"A" * 16, 5),
            (None, "\udcff"),
        ):
            sup.refuse(rid, reason, D.RATE_LIMITED)  # type: ignore[arg-type]
        assert sup.statistics().rejected == 4
    rejected = [r for r in _records(path) if r.type is RecordType.REJECTED]
    assert [r.body["code"] for r in rejected] == [D.RATE_LIMITED.number] * 4
    assert rejected[0].body["request_id"] == b"A" * 16
    assert rejected[1].body["request_id"] != b"A" * 16  # not bytes: a generated id
    assert "5" in rejected[2].body["reason"] and rejected[3].body["reason"] == "\\udcff"


@pytest.mark.parametrize(
    "kwargs",
    [{"log": None}, {"log": b"/tmp/x.vigil"}, {"clock": object()}],
    ids=["log-none", "log-bytes", "clock-object"],
)
def test_a_log_or_clock_of_the_wrong_kind_is_a_config_error(
    tmp_path: Path, kwargs: dict[str, Any]
) -> None:
    """They raised TypeError, a misleading "No such file", and AttributeError."""
    args = {"log": tmp_path / "log.vigil", **kwargs}
    with pytest.raises(ConfigError):
        Supervisor(lambda x: x, ring=SMALL, **args)


class _Odd(_Flaky):
    """Monotonic reads that return what no record can hold, ``fail`` times."""

    def __init__(self, value: Any) -> None:
        super().__init__("monotonic")
        self.value = value

    def monotonic_ns(self) -> int:
        if self.fail:
            self.fail -= 1
            return self.value  # type: ignore[no-any-return]
        return self._base.monotonic_ns()


@pytest.mark.parametrize("value", [None, 1.5e9, -5, 2**64], ids=["none", "float", "neg", "huge"])
def test_a_clock_read_no_record_could_hold_is_bridged(tmp_path: Path, value: Any) -> None:
    """None killed the watchdog (a later hang held its caller 5 s against 50 ms); a float or
    negative value made every call fail unrecorded and close() raise struct.error."""
    clock = _Odd(value)
    path = tmp_path / "log.vigil"
    with _timed(lambda x: x * 2, path, clock, isolation="thread", deadline_ns=50 * MS) as sup:
        clock.fail = 5
        sup._watchdog.poke()
        for _ in range(3):
            assert sup.infer(X).served_by is ServedBy.PRIMARY
        assert sup._watchdog._thread.is_alive()
    assert len([r for r in _records(path) if r.type is RecordType.INFERENCE]) == 3


def test_a_large_last_good_output_is_not_served_unchecked(tmp_path: Path) -> None:
    """Above digest_threshold the digest is taken off the caller's path, so LastGood had
    nothing to compare with and served a static buffer the failed call had overwritten."""
    buffer = torch.empty(100_000)
    calls = [0]

    def static(x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        buffer.fill_(float(calls[0]))
        if calls[0] > 1:
            raise RuntimeError("wrote its buffer, then failed")
        return buffer

    with _sup(static, tmp_path / "log.vigil", fallback=[LastGood(10**12), Constant(0.0)]) as sup:
        assert sup.infer(X).served_by is ServedBy.PRIMARY
        assert sup.infer(X).served_by is ServedBy.CONSTANT  # was LAST_GOOD, holding 2.0


def test_a_second_close_returns_once_the_first_has_finished(tmp_path: Path) -> None:
    gate = threading.Event()
    model = _Held(gate)
    path = tmp_path / "log.vigil"
    sup = Supervisor(model, log=path, ring=SMALL, isolation="inline", deadline_ns=30_000 * MS)
    caller = threading.Thread(target=lambda: sup.infer(X))
    caller.start()
    assert model.entered.wait(10.0)
    first, waiting = _closing(sup)
    assert waiting.wait(10.0)
    second = threading.Thread(target=sup.close)
    second.start()
    second.join(0.2)
    assert second.is_alive()  # it waits for the first, which waits for the call
    gate.set()
    for t in (caller, first, second):
        t.join(10.0)
    assert _records(path)[-1].type is RecordType.LIFECYCLE  # CLOSED, after the call's record
