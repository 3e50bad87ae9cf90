"""Fault injection: each fault's exact effect, the schedules, replay, hangs without sleeping,
threads, argument checks, and the pytest plugin (in this module and in isolation)."""

from __future__ import annotations

import functools
import json
import math
import os
import random
import re
import subprocess
import sys
import threading
import zlib
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from typing import Any

import pytest
import torch

import vigil.testing._faults as faults_module
from vigil.errors import ConfigError, DeviceFatal
from vigil.testing._faults import Fault, FaultPlan, FaultyModel, inject

pytest_plugins = ["pytester", "vigil.testing.pytest_plugin"]

JOIN_S = 5.0  # only ever reached when a hang was not released: the test then fails


class FakeTime:
    """A clock that moves only when told, and a sleep that moves it instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000_000
        self.slept: list[float] = []

    def clock(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += round(seconds * 1e9)


class Counting:
    """A model that doubles its input and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * 2


def outcome(model: Callable[[], Any]) -> str:
    """What one call did: ``ok`` or the name of the RuntimeError it raised."""
    try:
        model()
    except RuntimeError as e:
        return type(e).__name__
    return "ok"


def run(model: Callable[[], Any], n: int) -> list[str]:
    return [outcome(model) for _ in range(n)]


def start(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # handed to the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


# --- each fault's exact effect ----------------------------------------------------------


def test_exception_raises_runtime_error_without_calling_the_model() -> None:
    model = Counting()
    faulty = inject(model, FaultPlan().at_calls([2], Fault.EXCEPTION))
    assert faulty(torch.ones(1)).tolist() == [2.0]
    assert faulty(torch.ones(1)).tolist() == [2.0]
    with pytest.raises(RuntimeError) as info:
        faulty(torch.ones(1))
    assert type(info.value) is RuntimeError
    assert str(info.value) == "vigil fault injection: exception at call 2"
    assert model.calls == 2
    assert faulty.plan.history == [(2, Fault.EXCEPTION)]


def test_oom_raises_torch_out_of_memory() -> None:
    faulty = inject(Counting(), FaultPlan().at_calls([0], Fault.OOM))
    with pytest.raises(torch.OutOfMemoryError) as info:
        faulty(torch.ones(1))
    assert str(info.value) == "vigil fault injection: out of memory at call 0"
    assert faulty.plan.history == [(0, Fault.OOM)]


@pytest.mark.parametrize("model", [Counting(), torch.nn.Linear(1, 1)], ids=["function", "module"])
def test_device_fatal_off_cuda_raises_device_fatal(model: Callable[..., Any]) -> None:
    faulty = inject(model, FaultPlan().at_calls([1], Fault.DEVICE_FATAL))
    faulty(torch.ones(1))
    with pytest.raises(DeviceFatal) as info:
        faulty(torch.ones(1))
    assert isinstance(info.value, RuntimeError)
    assert info.value.code == "DIA-4006"
    assert info.value.call == 1  # type: ignore[attr-defined]
    assert info.value.message.startswith("vigil fault injection: device-fatal error at call 1")
    assert faulty.plan.history == [(1, Fault.DEVICE_FATAL)]


def test_device_fatal_on_cuda_lets_the_real_error_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch's dispatch, on any machine: torch's own error reaches the caller; if
    no assert fired, the call still fails as DeviceFatal."""
    fired: list[torch.device] = []

    def device_side_assert(device: torch.device) -> None:
        fired.append(device)
        if len(fired) == 1:
            raise torch.AcceleratorError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(faults_module, "_cuda_device", lambda *_: torch.device("cuda", 1))
    monkeypatch.setattr(faults_module, "_device_side_assert", device_side_assert)
    faulty = inject(Counting(), FaultPlan().at_calls([0, 1], Fault.DEVICE_FATAL))
    with pytest.raises(torch.AcceleratorError, match="device-side assert triggered"):
        faulty(torch.ones(1))
    with pytest.raises(DeviceFatal, match="at call 1 \\(no device-side assert fired"):
        faulty(torch.ones(1))
    assert fired == [torch.device("cuda", 1)] * 2


def test_nan_writes_one_nan_into_a_copy_of_the_output() -> None:
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    x_before = x.clone()
    held = torch.full((2, 3), 7.0)
    faulty = inject(lambda t: held, FaultPlan().at_calls([0], Fault.NAN))
    out = faulty(x)
    assert out is not held
    assert torch.isnan(out[0, 0]) and torch.isnan(out).sum() == 1
    assert torch.equal(out.flatten()[1:], held.flatten()[1:])
    assert torch.equal(held, torch.full((2, 3), 7.0))  # the model's tensor is untouched
    assert torch.equal(x, x_before)
    assert faulty.plan.history == [(0, Fault.NAN)]


Pair = namedtuple("Pair", ["label", "score"])


@pytest.mark.parametrize(
    ("output", "path"),
    [
        ((torch.tensor([1, 2]), torch.zeros(2)), (1,)),
        ([torch.zeros(0), torch.ones(2), torch.ones(3)], (1,)),
        ({"ids": torch.tensor([3]), "logits": torch.ones(2)}, ("logits",)),
        (OrderedDict(a=[torch.tensor([1])], b=(torch.ones(1), torch.ones(1))), ("b", 0)),
        (Pair(torch.tensor([1]), torch.ones(2, 2)), (1,)),
        (torch.tensor(2.5), ()),
    ],
    ids=["tuple", "list-skips-empty", "dict", "nested", "namedtuple", "0-d"],
)
def test_nan_goes_into_the_first_non_empty_floating_tensor(
    output: Any, path: tuple[Any, ...]
) -> None:
    faulty = inject(lambda: output, FaultPlan().at_calls([0], Fault.NAN))
    got = faulty()
    assert type(got) is type(output)

    def at(obj: Any, p: tuple[Any, ...]) -> Any:
        for key in p:
            obj = obj[key]
        return obj

    assert torch.isnan(at(got, path)).flatten()[0]
    assert not torch.isnan(at(output, path)).any()
    others = [(p, t) for p, t in faults_module._tensors(got) if p != path]
    assert all(t is at(output, p) for p, t in others)  # the rest is passed through as is


def test_nan_needs_a_floating_output() -> None:
    faulty = inject(lambda: (torch.tensor([1, 2]), "text"), FaultPlan().at_calls([0], Fault.NAN))
    with pytest.raises(ConfigError, match=r"NAN fault at call 0: NAN needs a floating output"):
        faulty()
    assert faulty.plan.history == []


def test_wrong_shape_adds_one_element_along_the_last_dim() -> None:
    held = torch.ones(2, 3)
    faulty = inject(lambda: held, FaultPlan().at_calls([0], Fault.WRONG_SHAPE))
    out = faulty()
    assert out.shape == (2, 4)
    assert torch.equal(out[:, :3], held) and torch.equal(out[:, 3], torch.zeros(2))
    assert held.shape == (2, 3)
    assert faulty.plan.history == [(0, Fault.WRONG_SHAPE)]


@pytest.mark.parametrize(
    ("output", "shapes"),
    [
        (torch.tensor(1.5), [(2,)]),
        ((torch.tensor([1, 2]), torch.ones(2, 0)), [(2,), (2, 1)]),
        ((torch.tensor([1, 2]), torch.tensor([3])), [(3,), (1,)]),
    ],
    ids=["0-d", "first-floating-even-empty", "no-floating-first-tensor"],
)
def test_wrong_shape_target(output: Any, shapes: list[tuple[int, ...]]) -> None:
    got = inject(lambda: output, FaultPlan().at_calls([0], Fault.WRONG_SHAPE))()
    assert [tuple(t.shape) for _, t in faults_module._tensors(got)] == shapes


def test_wrong_shape_needs_a_tensor() -> None:
    faulty = inject(lambda: 3.0, FaultPlan().at_calls([0], Fault.WRONG_SHAPE))
    with pytest.raises(ConfigError, match="WRONG_SHAPE fault at call 0: needs a tensor"):
        faulty()


def test_slow_sleeps_with_the_plans_sleep_then_answers() -> None:
    t = FakeTime()
    plan = FaultPlan(clock=t.clock, sleep=t.sleep)
    plan.at_calls([0], Fault.SLOW).at_calls([1], Fault.SLOW, delay_s=0.25)
    model = Counting()
    faulty = inject(model, plan)
    assert faulty(torch.ones(1)).tolist() == [2.0]
    assert faulty(torch.ones(1)).tolist() == [2.0]
    faulty(torch.ones(1))
    assert t.slept == [0.05, 0.25]
    assert model.calls == 3
    assert plan.history == [(0, Fault.SLOW), (1, Fault.SLOW)]


# --- hangs, released by events, never by sleeping ---------------------------------------


def test_hang_blocks_until_release_then_answers() -> None:
    plan = FaultPlan().at_calls([0], Fault.HANG)
    model = Counting()
    faulty = inject(model, plan)
    thread, box = start(lambda: faulty(torch.ones(1)))
    assert plan.wait_hanging(1, timeout=JOIN_S)
    assert plan.hanging == 1 and box == {} and model.calls == 0
    assert plan.history == [(0, Fault.HANG)]
    plan.release()
    thread.join(JOIN_S)
    assert not thread.is_alive()
    assert box["result"].tolist() == [2.0] and model.calls == 1
    assert plan.hanging == 0


def test_release_frees_every_hang_now_and_later_until_reset() -> None:
    plan = FaultPlan().with_probability(1.0, Fault.HANG)
    faulty = inject(lambda: "answer", plan)
    barrier = threading.Barrier(3)
    started = [start(lambda: (barrier.wait(JOIN_S), faulty())[1]) for _ in range(2)]
    barrier.wait(JOIN_S)
    assert plan.wait_hanging(2, timeout=JOIN_S)
    plan.release()
    later = start(faulty)
    for thread, box in [*started, later]:
        thread.join(JOIN_S)
        assert not thread.is_alive() and box == {"result": "answer"}
    plan.reset()  # hangs are armed again
    thread, box = start(faulty)
    assert plan.wait_hanging(1, timeout=JOIN_S)
    assert box == {}
    plan.release()
    thread.join(JOIN_S)
    assert box == {"result": "answer"} and plan.hanging == 0


def test_hang_s_ends_a_hang_without_release() -> None:
    plan = FaultPlan().at_calls([0], Fault.HANG, hang_s=0.01)
    assert inject(lambda: "late", plan)() == "late"
    assert plan.hanging == 0 and plan.history == [(0, Fault.HANG)]


def test_wait_hanging_times_out_when_nothing_hangs() -> None:
    assert FaultPlan().wait_hanging(1, timeout=0) is False
    assert FaultPlan().wait_hanging(0, timeout=0) is True


def test_a_model_error_after_a_hang_still_unblocks_the_count() -> None:
    def broken() -> None:
        raise ValueError("model bug")

    plan = FaultPlan().at_calls([0], Fault.HANG, hang_s=0)
    with pytest.raises(ValueError, match="model bug"):
        inject(broken, plan)()
    assert plan.hanging == 0


# --- schedules ----------------------------------------------------------------------------


def test_schedule_by_call_index_first_rule_wins() -> None:
    plan = FaultPlan()
    plan.at_calls([1, 4], Fault.EXCEPTION).at_calls(range(3, 100, 2), Fault.OOM)
    assert run(inject(lambda: None, plan), 8) == [
        "ok",
        "RuntimeError",
        "ok",
        "OutOfMemoryError",
        "RuntimeError",
        "OutOfMemoryError",
        "ok",
        "OutOfMemoryError",
    ]
    assert plan.history == [
        (1, Fault.EXCEPTION),
        (3, Fault.OOM),
        (4, Fault.EXCEPTION),
        (5, Fault.OOM),
        (7, Fault.OOM),
    ]


def test_schedule_by_time_uses_the_injected_clock() -> None:
    t = FakeTime()
    plan = FaultPlan(clock=t.clock, sleep=t.sleep)
    plan.between(1.0, 2.0, Fault.EXCEPTION).between(3.0, math.inf, Fault.OOM)
    faulty = inject(lambda: None, plan)
    seen = []
    for elapsed_s in [0.0, 0.999, 1.0, 1.5, 1.999999999, 2.0, 2.5, 3.0, 1000.0]:
        t.now = 1_000_000_000 + round(elapsed_s * 1e9)
        seen.extend(run(faulty, 1))
    assert seen == ["ok", "ok", *["RuntimeError"] * 3, "ok", "ok", *["OutOfMemoryError"] * 2]
    assert [i for i, _ in plan.history] == [2, 3, 4, 7, 8]


def test_time_is_measured_from_the_first_call() -> None:
    t = FakeTime()
    plan = FaultPlan(clock=t.clock).between(0.0, 1.0, Fault.EXCEPTION)
    t.now = 50 * 10**9  # the plan was built long before its first call
    assert run(inject(lambda: None, plan), 2) == ["RuntimeError", "RuntimeError"]
    t.now += 10**9
    assert run(inject(lambda: None, plan), 1) == ["ok"]


def test_schedule_by_probability_is_the_seeded_rng() -> None:
    plan = FaultPlan(seed=1234).with_probability(0.3, Fault.EXCEPTION)
    run(inject(lambda: None, plan), 200)
    rng = random.Random(1234)
    expected = [(i, Fault.EXCEPTION) for i in range(200) if rng.random() < 0.3]
    assert plan.history == expected
    assert 40 < len(expected) < 80


def test_rng_is_consumed_the_same_whichever_rule_matches() -> None:
    plan = FaultPlan(seed=9)
    plan.at_calls(range(0, 50, 5), Fault.OOM)
    plan.with_probability(0.5, Fault.EXCEPTION).with_probability(0.5, Fault.DEVICE_FATAL)
    decided = [plan.decide()[:2] for _ in range(50)]
    rng = random.Random(9)
    expected = []
    for i in range(50):
        d1, d2 = rng.random(), rng.random()
        fault = (
            Fault.OOM
            if i % 5 == 0
            else Fault.EXCEPTION
            if d1 < 0.5
            else Fault.DEVICE_FATAL
            if d2 < 0.5
            else None
        )
        expected.append((i, fault))
    assert decided == expected


def test_decide_returns_parameters_with_defaults() -> None:
    plan = FaultPlan().at_calls([0], Fault.SLOW).at_calls([1], Fault.HANG, hang_s=2)
    assert plan.decide() == (0, Fault.SLOW, {"delay_s": 0.05})
    assert plan.decide() == (1, Fault.HANG, {"hang_s": 2.0})
    assert plan.decide() == (2, None, {})
    assert plan.history == []  # deciding is not applying


def mixed_plan(seed: int, t: FakeTime) -> FaultPlan:
    plan = FaultPlan(seed, clock=t.clock, sleep=t.sleep)
    plan.at_calls([3, 17], Fault.NAN).between(0.5, 0.8, Fault.SLOW, delay_s=0.01)
    return plan.with_probability(0.2, Fault.EXCEPTION).with_probability(0.1, Fault.WRONG_SHAPE)


def drive(plan: FaultPlan, t: FakeTime, n: int = 100) -> list[tuple[int, Fault]]:
    faulty = inject(lambda: torch.ones(3), plan)
    for _ in range(n):
        t.now += 10_000_000  # 10 ms between calls
        run(faulty, 1)
    return plan.history


def test_same_seed_and_rules_replay_the_same_history() -> None:
    t1, t2, t3 = FakeTime(), FakeTime(), FakeTime()
    first = drive(mixed_plan(42, t1), t1)
    assert first == drive(mixed_plan(42, t2), t2)
    assert first != drive(mixed_plan(43, t3), t3)
    assert {f for _, f in first} == {Fault.NAN, Fault.SLOW, Fault.EXCEPTION, Fault.WRONG_SHAPE}


def test_reset_goes_back_to_call_zero_and_replays() -> None:
    t = FakeTime()
    plan = mixed_plan(5, t)
    first = drive(plan, t)
    plan.reset()
    assert plan.history == [] and plan.hanging == 0
    assert plan.decide()[0] == 0
    plan.reset()
    assert drive(plan, t) == first


# --- threads ------------------------------------------------------------------------------


def test_four_threads_share_one_schedule() -> None:
    def build() -> FaultPlan:
        plan = FaultPlan(seed=11).at_calls(range(0, 400, 9), Fault.EXCEPTION)
        return plan.with_probability(0.2, Fault.NAN).at_calls(range(1, 400, 13), Fault.OOM)

    reference = build()
    schedule = [(i, f) for i, f, _ in (reference.decide() for _ in range(400)) if f]
    plan = build()
    faulty = inject(lambda x: x + 1, plan)
    barrier = threading.Barrier(4)
    seen: list[list[str]] = [[] for _ in range(4)]

    def one_call() -> str:
        try:
            out = faulty(torch.zeros(2))
        except torch.OutOfMemoryError:
            return "oom"
        except RuntimeError as e:
            return f"exc {str(e).rsplit(' ', 1)[1]}"
        return "nan" if torch.isnan(out).any() else "ok"

    def worker(mine: list[str]) -> None:
        barrier.wait(JOIN_S)
        mine.extend(one_call() for _ in range(100))

    threads = [start(functools.partial(worker, mine)) for mine in seen]
    for thread, box in threads:
        thread.join(JOIN_S)
        assert not thread.is_alive() and "error" not in box
    assert sorted(plan.history, key=lambda h: h[0]) == schedule
    union = [s for thread_seen in seen for s in thread_seen]
    assert union.count("nan") == sum(f is Fault.NAN for _, f in schedule)
    assert union.count("oom") == sum(f is Fault.OOM for _, f in schedule)
    excs = sorted(int(s.split()[1]) for s in union if s.startswith("exc"))
    assert excs == [i for i, f in schedule if f is Fault.EXCEPTION]


def test_one_decision_at_a_time() -> None:
    """While a thread is inside decide() (reading the clock), another thread's decide()
    waits: it cannot read the clock before the first returns. The 50 ms wait only ever
    completes early when the lock is missing."""
    second_inside = threading.Event()
    overlapped: list[bool] = []

    def clock() -> int:
        if not overlapped:
            overlapped.append(False)
            thread, box = start(plan.decide)
            overlapped[0] = second_inside.wait(0.05)
            helpers.append((thread, box))
        else:
            second_inside.set()
        return 0

    helpers: list[tuple[threading.Thread, dict[str, Any]]] = []
    plan = FaultPlan(clock=clock).at_calls([1], Fault.EXCEPTION)
    assert plan.decide() == (0, None, {})
    (thread, box) = helpers[0]
    thread.join(JOIN_S)
    assert overlapped == [False] and box == {"result": (1, Fault.EXCEPTION, {})}


# --- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda p: p.with_probability(1.5, Fault.NAN), r"p=1\.5: a probability must be in"),
        (lambda p: p.with_probability(-0.1, Fault.NAN), r"p=-0\.1"),
        (lambda p: p.with_probability(math.nan, Fault.NAN), r"p=nan"),
        (lambda p: p.with_probability(True, Fault.NAN), r"p=True"),
        (lambda p: p.at_calls([0, -1], Fault.NAN), r"call index -1: must be an int >= 0"),
        (lambda p: p.at_calls([1.5], Fault.NAN), r"call index 1\.5"),
        (lambda p: p.at_calls([True], Fault.NAN), r"call index True"),
        (lambda p: p.at_calls(range(-2, 3), Fault.NAN), r"counted from 0"),
        (lambda p: p.at_calls(7, Fault.NAN), r"calls=7: must be an iterable"),
        (lambda p: p.between(2.0, 1.0, Fault.NAN), r"end_s=1\.0: must be greater"),
        (lambda p: p.between(1.0, 1.0, Fault.NAN), r"end_s=1\.0"),
        (lambda p: p.between(-1.0, 1.0, Fault.NAN), r"start_s=-1\.0"),
        (lambda p: p.between(math.nan, 1.0, Fault.NAN), r"start_s=nan"),
        (lambda p: p.between(0, "1", Fault.NAN), r"end_s='1': must be a number"),
        (lambda p: p.at_calls([0], "nan"), r"fault='nan': must be a Fault"),
        (lambda p: p.at_calls([0], Fault.NAN, delay_s=1), r"unknown parameter 'delay_s'"),
        (lambda p: p.at_calls([0], Fault.SLOW, delay=1), r"allowed: delay_s"),
        (lambda p: p.at_calls([0], Fault.SLOW, delay_s=-1), r"delay_s=-1 for Fault\.SLOW"),
        (lambda p: p.at_calls([0], Fault.SLOW, delay_s=math.inf), r"delay_s=inf"),
        (lambda p: p.at_calls([0], Fault.HANG, hang_s="1"), r"hang_s='1'.*None or a finite"),
        (lambda p: FaultPlan(seed=1.5), r"seed=1\.5: must be an int"),  # type: ignore[arg-type]
        (lambda p: FaultyModel(42, p), r"model=42: must be callable"),  # type: ignore[arg-type]
        (lambda p: FaultyModel(len, object()), r"plan=<object.*FaultPlan"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_config_error(
    build: Callable[[FaultPlan], object], message: str
) -> None:
    plan = FaultPlan()
    with pytest.raises(ConfigError, match=message) as info:
        build(plan)
    assert info.value.code == "DIA-1001"
    assert plan.decide() == (0, None, {})  # a rejected rule was not added


def test_fault_values_and_public_names() -> None:
    assert {f.name: f.value for f in Fault} == {
        "EXCEPTION": "exception",
        "HANG": "hang",
        "SLOW": "slow",
        "NAN": "nan",
        "WRONG_SHAPE": "wrong_shape",
        "OOM": "oom",
        "DEVICE_FATAL": "device_fatal",
    }
    assert faults_module.__all__ == ["Fault", "FaultPlan", "FaultyModel", "inject"]


# --- the pytest plugin, used here ---------------------------------------------------------


def test_fixtures_give_a_plan_seeded_from_the_node_id(
    fault_plan: FaultPlan, faulty: Callable[..., FaultyModel], request: pytest.FixtureRequest
) -> None:
    override = request.config.getoption("vigil_fault_seed")
    expected = zlib.crc32(request.node.nodeid.encode()) if override is None else override
    assert fault_plan.seed == expected
    assert ("vigil_fault_seed", expected) in request.node.user_properties
    assert faulty(len).plan is fault_plan
    other = FaultPlan()
    assert faulty(len, other).plan is other


# --- the pytest plugin, in isolation ------------------------------------------------------

SCHEDULE_TEST = """
from vigil.testing._faults import Fault

def test_schedule(fault_plan, faulty):
    fault_plan.with_probability(0.5, Fault.EXCEPTION)
    model = faulty(lambda: None)
    for _ in range(40):
        try:
            model()
        except RuntimeError:
            pass
    print("SCHEDULE", fault_plan.seed, [i for i, _ in fault_plan.history])
"""


@pytest.fixture
def isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs load the plugin with -p, whatever entry points are installed."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester


def schedule_of(pytester: pytest.Pytester, *args: str) -> tuple[int, list[int]]:
    result = pytester.runpytest("-p", "vigil.testing.pytest_plugin", "-s", *args)
    result.assert_outcomes(passed=1)
    found = re.search(r"SCHEDULE (\d+) (\[.*\])", result.stdout.str())
    assert found is not None, result.stdout.str()
    return int(found[1]), json.loads(found[2])


def test_plugin_seed_is_stable_and_the_option_changes_the_schedule(
    isolated: pytest.Pytester,
) -> None:
    isolated.makepyfile(test_sched=SCHEDULE_TEST)
    seed, history = schedule_of(isolated)
    assert seed == zlib.crc32(b"test_sched.py::test_schedule")
    assert schedule_of(isolated) == (seed, history)
    one, two = (
        schedule_of(isolated, "--vigil-fault-seed", "1"),
        schedule_of(isolated, "--vigil-fault-seed", "2"),
    )
    assert one[0] == 1 and two[0] == 2
    assert len({tuple(history), tuple(one[1]), tuple(two[1])}) == 3
    assert schedule_of(isolated, "--vigil-fault-seed", str(seed)) == (seed, history)


def test_plugin_names_the_seed_of_a_failed_test_and_in_the_header(
    isolated: pytest.Pytester,
) -> None:
    isolated.makepyfile(
        test_fail="""
        def test_with_plan(fault_plan):
            assert fault_plan.seed == -1

        def test_without_plan():
            assert False
        """
    )
    seed = zlib.crc32(b"test_fail.py::test_with_plan")
    result = isolated.runpytest("-p", "vigil.testing.pytest_plugin")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_with_plan _*",
            "*- vigil fault plan -*",
            f"seed {seed}; replay with --vigil-fault-seed {seed}",
            "*_ test_without_plan _*",
        ]
    )
    assert result.stdout.str().count("vigil fault plan") == 1
    assert "vigil fault seed:" not in result.stdout.str()
    result = isolated.runpytest("-p", "vigil.testing.pytest_plugin", "--vigil-fault-seed", "77")
    result.stdout.fnmatch_lines(
        ["vigil fault seed: 77 *", "seed 77; replay with --vigil-fault-seed 77"]
    )


def test_plugin_releases_hangs_at_teardown(isolated: pytest.Pytester) -> None:
    isolated.makepyfile(
        test_hang="""
        import threading
        from vigil.testing._faults import Fault

        threads = []

        def test_leaves_a_call_hanging(fault_plan, faulty):
            fault_plan.at_calls([0], Fault.HANG)
            thread = threading.Thread(target=faulty(lambda: None), daemon=True)
            thread.start()
            threads.append(thread)
            assert fault_plan.wait_hanging(1, timeout=5)

        def test_it_was_released():
            threads[0].join(5)
            assert not threads[0].is_alive()
        """
    )
    isolated.runpytest("-p", "vigil.testing.pytest_plugin").assert_outcomes(passed=2)


# --- a real device-side assert, in a child process ---------------------------------------

CUDA_CHILD = """
import functools
import json
import torch
from vigil.testing._faults import Fault, FaultPlan, inject

model = inject(lambda x: x * 2, FaultPlan().at_calls([1], Fault.DEVICE_FATAL))
x = torch.ones(4, device="cuda")
report = {"before": model(x).tolist()}
for step, action in [
    ("fault", lambda: model(x)),
    ("later", lambda: ((torch.ones(2, device="cuda") + 1).cpu(), torch.cuda.synchronize())),
]:
    try:
        action()
        report[step] = None
    except Exception as e:
        report[step] = [type(e).__name__, isinstance(e, RuntimeError), str(e)]
print(json.dumps(report))
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_fatal_on_cuda_poisons_the_process() -> None:
    child = subprocess.run(
        [sys.executable, "-c", CUDA_CHILD],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["before"] == [2.0] * 4
    fault, later = report["fault"], report["later"]
    assert fault is not None and fault[1] and "device-side assert" in fault[2], report
    assert fault[0] != "DeviceFatal", report  # torch's own error, not the simulated one
    assert later is not None and "device-side assert" in later[2], report
