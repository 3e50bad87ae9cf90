"""Tensor contracts: each code from the smallest wrong input, the order of checks, named dims,
the perception example (both evaluation paths), the stateful rule under threads, a property
against a reference implementation, the one-transfer rule, and stable digests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vigil.schemas
from vigil.errors import ConfigError, InvalidInput
from vigil.schemas import Contract, Rule, TensorSpec, perception_contract
from vigil.schemas import _contracts as C

from conftest import examples

NAN, INF = math.nan, math.inf
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def fails(
    check: Callable[[], object], code: str, field: str, rule: str, *words: str
) -> InvalidInput:
    """Assert that ``check`` raises InvalidInput with this code, field and rule, and that its
    message names every one of ``words`` (the expected and the actual values)."""
    with pytest.raises(InvalidInput) as info:
        check()
    err = info.value
    assert (err.code, err.field, err.rule) == (code, field, rule), str(err)
    for word in words:
        assert word in str(err), (word, str(err))
    return err


def output(n: int = 8, ts: list[int] | None = None, **changes: Any) -> dict[str, Any]:
    """A good perception output for a 640x480 image: n boxes, timestamps 1..n by default."""
    out: dict[str, Any] = {
        "confidence": torch.linspace(0.0, 1.0, n),
        "boxes": torch.tensor([[0.0, 0.0, 640.0, 480.0]] * n).reshape(n, 4),
        "timestamps_us": torch.tensor(ts or list(range(1, n + 1)), dtype=torch.int64),
    }
    out.update(changes)
    return out


@pytest.fixture(params=["host", "tensor"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a rule test on both paths: short CPU tensors read as lists, and tensor operations."""
    if request.param == "tensor":
        monkeypatch.setattr(C, "_HOST_ROWS", 0)
    return str(request.param)


# --- each code, from the smallest wrong input ------------------------------------------------


def test_not_a_tensor_is_invalid_argument() -> None:
    err = fails(lambda: TensorSpec().check([0.0], field="x"), "DIA-2047", "x", "type", "list")
    assert (err.expected, err.actual) == ("Tensor", "list")


def test_sparse_tensor_is_invalid_argument() -> None:
    sparse = torch.zeros(2).to_sparse()
    fails(lambda: TensorSpec().check(sparse), "DIA-2047", "input", "layout", "sparse")


def test_wrong_device_is_device_mismatch() -> None:
    meta = torch.empty(2, device="meta")
    err = fails(
        lambda: TensorSpec(device="cpu").check(meta), "DIA-2103", "input", "device", "meta", "cpu"
    )
    assert (err.expected, err.actual) == ("cpu", "meta")
    TensorSpec(device="meta", finite=False).check(meta)
    fails(lambda: TensorSpec(device="meta").check(meta), "DIA-2047", "input", "device", "meta")
    TensorSpec(device="cpu").check(torch.zeros(2))


def test_wrong_dtype_is_dtype_mismatch() -> None:
    err = fails(
        lambda: TensorSpec(dtype=torch.float32).check(torch.zeros(1, dtype=torch.float64)),
        "DIA-2102",
        "input",
        "dtype",
        "float64",
        "float32",
    )
    assert (err.expected, err.actual) == ("float32", "float64")


def test_wrong_dim_is_shape_mismatch() -> None:
    spec = TensorSpec(shape=(1, 16))
    err = fails(
        lambda: spec.check(torch.zeros(1, 15)), "DIA-2101", "input", "dim", "(1, 15)", "(1, 16)"
    )
    assert err.index == 1


def test_wrong_rank_is_shape_mismatch() -> None:
    spec = TensorSpec(shape=(1, 16))
    fails(lambda: spec.check(torch.zeros(16)), "DIA-2101", "input", "rank", "(16,)", "(1, 16)")
    fails(lambda: spec.check(torch.zeros(1, 16, 1)), "DIA-2101", "input", "rank", "3 dims")


def test_value_below_min_is_out_of_range() -> None:
    err = fails(
        lambda: TensorSpec(min=0).check(torch.tensor([0.0, -1.0])),
        "DIA-2104",
        "input",
        "min",
        "[0, inf]",
        "-1.0",
    )
    assert (err.expected, err.actual, err.index) == ([0, None], [-1.0, 0.0], (1,))


def test_value_above_max_is_out_of_range() -> None:
    err = fails(
        lambda: TensorSpec(max=1).check(torch.tensor([[0.5, 2.5, 3.5]])),
        "DIA-2104",
        "input",
        "max",
        "[-inf, 1]",
        "3.5",
    )
    assert (err.actual, err.index) == ([0.5, 3.5], (0, 1))


def test_nan_is_not_finite() -> None:
    err = fails(
        lambda: TensorSpec().check(torch.tensor([NAN])), "DIA-2105", "input", "finite", "1 NaN"
    )
    assert err.index == (0,)


def test_rule_violation_is_contract_violated() -> None:
    class Positive:
        name = "positive_sum"

        def __call__(self, value: torch.Tensor) -> str | None:
            total = float(value.sum())
            return None if total > 0 else f"sum is {total}, expected > 0"

    contract = Contract(TensorSpec(), rules=[Positive()], name="c")
    contract.check(torch.ones(2), field="x")
    err = fails(
        lambda: contract.check(torch.zeros(2), field="x"),
        "DIA-2106",
        "x",
        "positive_sum",
        "sum is 0.0, expected > 0",
    )
    assert err.index is None


def test_mapping_with_missing_or_extra_keys_is_invalid_argument() -> None:
    contract = Contract({"a": TensorSpec(), "b": TensorSpec()})
    x = torch.zeros(1)
    fails(lambda: contract.check({"a": x}), "DIA-2047", "input", "keys", "missing key 'b'")
    fails(lambda: contract.check({"a": x, "b": x, "c": x}), "DIA-2047", "input", "keys", "'c'")
    err = fails(
        lambda: contract.check({"a": x, 3: x}),
        "DIA-2047",
        "input",
        "keys",
        "missing key 'b' and unexpected key 3",
    )
    assert err.expected == ["a", "b"]
    fails(lambda: contract.check(x), "DIA-2047", "input", "type", "Tensor", "mapping")
    fails(lambda: contract.check({"a": x, "b": [1]}), "DIA-2047", "input.b", "type", "list")


# --- the order of the checks -------------------------------------------------------------------


def test_checks_run_in_order_and_stop_at_the_first() -> None:
    spec = TensorSpec(shape=(2,), dtype=torch.float32, device="cpu", min=0, max=1)
    x = torch.tensor([NAN, 5.0, -1.0], dtype=torch.float64, device="meta")
    fails(lambda: spec.check(x), "DIA-2103", "input", "device")
    x = torch.tensor([NAN, 5.0, -1.0], dtype=torch.float64)
    fails(lambda: spec.check(x), "DIA-2102", "input", "dtype")
    x = x.float()
    fails(lambda: spec.check(x), "DIA-2101", "input", "dim", "(3,)", "(2,)")
    x = x[:2]
    fails(lambda: spec.check(x), "DIA-2105", "input", "finite")
    x = torch.tensor([-1.0, 5.0])
    fails(lambda: spec.check(x), "DIA-2104", "input", "min")
    x = torch.tensor([0.0, 5.0])
    fails(lambda: spec.check(x), "DIA-2104", "input", "max")
    spec.check(torch.tensor([0.0, 1.0]))


def test_metadata_of_every_tensor_comes_before_any_value() -> None:
    contract = Contract({"a": TensorSpec(), "b": TensorSpec(dtype=torch.int64)})
    bad = {"a": torch.tensor([NAN]), "b": torch.tensor([1.0])}
    fails(lambda: contract.check(bad, field="o"), "DIA-2102", "o.b", "dtype")


def test_rules_run_only_after_every_spec_passed() -> None:
    calls = []

    class Spy:
        name = "spy"

        def __call__(self, value: object) -> str | None:
            calls.append(value)
            return None

    contract = Contract(TensorSpec(max=1), rules=[Spy()])
    fails(lambda: contract.check(torch.tensor([2.0])), "DIA-2104", "input", "max")
    assert calls == []
    contract.check(torch.tensor([1.0]))
    assert len(calls) == 1


def test_a_rules_own_exception_propagates_unchanged() -> None:
    class Broken:
        name = "broken"

        def __call__(self, value: object) -> str | None:
            raise ZeroDivisionError("bug in the rule")

    with pytest.raises(ZeroDivisionError):
        Contract(TensorSpec(), rules=[Broken()]).check(torch.zeros(1))


# --- shapes ------------------------------------------------------------------------------------


def test_named_dims_agree_across_a_mapping() -> None:
    contract = Contract({"scores": TensorSpec(("N",)), "boxes": TensorSpec(("N", 4))})
    contract.check({"scores": torch.zeros(3), "boxes": torch.zeros(3, 4)})
    contract.check({"scores": torch.zeros(5), "boxes": torch.zeros(5, 4)})  # N is per check
    err = fails(
        lambda: contract.check({"scores": torch.zeros(3), "boxes": torch.zeros(2, 4)}, field="o"),
        "DIA-2101",
        "o.boxes",
        "named_dim",
        "dim 0 (N) is 2",
        "N = 3 from o.scores",
    )
    assert (err.expected, err.actual, err.index) == (3, 2, 0)


def test_named_dims_within_one_spec_and_from_the_caller() -> None:
    square = TensorSpec(("N", "N"))
    square.check(torch.zeros(3, 3))
    fails(lambda: square.check(torch.zeros(3, 4)), "DIA-2101", "input", "named_dim", "N = 3")
    dims = {"N": 5}
    fails(
        lambda: TensorSpec(("N",)).check(torch.zeros(4), dims=dims),
        "DIA-2101",
        "input",
        "named_dim",
        "N = 5 from an earlier check",
    )
    dims = {}
    TensorSpec(("N", "M")).check(torch.zeros(2, 7), dims=dims)
    assert dims == {"N": 2, "M": 7}


def test_none_dims_accept_any_size() -> None:
    spec = TensorSpec((None, 3))
    for n in (0, 1, 9):
        spec.check(torch.zeros(n, 3))
    fails(lambda: spec.check(torch.zeros(2, 4)), "DIA-2101", "input", "dim", "(any, 3)")
    TensorSpec(None).check(torch.zeros(2, 3, 4))
    TensorSpec(()).check(torch.tensor(1.0))
    fails(lambda: TensorSpec(()).check(torch.zeros(1)), "DIA-2101", "input", "rank", "()")


def test_ellipsis_allows_any_leading_dims() -> None:
    spec = TensorSpec(("...", "C", 3))
    for shape in ((2, 3), (1, 2, 3), (4, 5, 2, 3)):
        spec.check(torch.zeros(shape))
    fails(lambda: spec.check(torch.zeros(3)), "DIA-2101", "input", "rank", "at least 2")
    err = fails(lambda: spec.check(torch.zeros(4, 3, 2)), "DIA-2101", "input", "dim", "dim 2")
    assert err.index == 2
    TensorSpec(("...",)).check(torch.zeros(2, 2))


# --- devices -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("want", "got", "matches"),
    [
        ("cuda", "cuda:0", True),
        ("cuda", "cuda:1", True),
        ("cuda:1", "cuda:1", True),
        ("cuda:1", "cuda:0", False),
        ("cuda", "cpu", False),
        ("cpu", "cuda:0", False),
        ("cpu", "cpu", True),
        ("cuda:0", "cpu", False),
    ],
)
def test_device_matching(want: str, got: str, matches: bool) -> None:
    spec = TensorSpec(device=want)
    assert spec._plan.device is not None
    assert C._device_matches(spec._plan.device, torch.device(got)) is matches


def test_devices_are_canonical() -> None:
    assert TensorSpec(device="cpu:0").device == "cpu"
    assert TensorSpec(device=torch.device("cuda", 1)).device == "cuda:1"  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TensorSpec(device="gpu7")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_cuda_devices() -> None:
    x = torch.zeros(2, device="cuda")
    TensorSpec(device="cuda").check(x)
    TensorSpec(device=f"cuda:{x.device.index}").check(x)
    other = f"cuda:{(x.device.index or 0) + 1}"
    fails(lambda: TensorSpec(device=other).check(x), "DIA-2103", "input", "device", other)
    fails(lambda: TensorSpec(device="cpu").check(x), "DIA-2103", "input", "device", "cuda")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("n", [8, 1000])
def test_cuda_check_costs_one_sync(n: int) -> None:
    contract = perception_contract(640, 480, device="cuda")
    good = {k: v.cuda() for k, v in output(n).items()}
    contract.check(good)  # warm up: the box rule makes its constants once per device
    contract.reset()
    torch.cuda.synchronize()
    import warnings

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            contract.check(good)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len([w for w in caught if "synchroniz" in str(w.message)]) == 1
    bad = {**good, "confidence": good["confidence"] + 2}
    fails(lambda: contract.check(bad), "DIA-2104", "input.confidence", "max")


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [*FLOATS, torch.float8_e5m2])
@pytest.mark.parametrize(("bad", "words"), [(NAN, "1 NaN"), (INF, "1 +Inf"), (-INF, "1 -Inf")])
def test_nan_and_infinities_are_found_in_every_float_dtype(
    dtype: torch.dtype, bad: float, words: str
) -> None:
    x = torch.zeros(2, 3).to(dtype)
    x[1, 2] = bad
    err = fails(lambda: TensorSpec().check(x), "DIA-2105", "input", "finite", words, "(1, 2)")
    assert err.index == (1, 2)
    TensorSpec(finite=False).check(x)


def test_finite_false_lets_nan_through_but_the_bounds_still_hold() -> None:
    spec = TensorSpec(finite=False, min=0, max=1)
    spec.check(torch.tensor([NAN, 0.5, NAN]))
    spec.check(torch.tensor([NAN, NAN]))
    err = fails(lambda: spec.check(torch.tensor([NAN, INF])), "DIA-2104", "input", "max", "inf")
    assert err.index == (1,)
    fails(lambda: spec.check(torch.tensor([-INF, NAN])), "DIA-2104", "input", "min", "-inf")


def test_integers_skip_the_finite_check_and_need_no_device_work() -> None:
    probes: list[torch.Tensor] = []
    for dtype in (torch.int8, torch.int64, torch.uint8, torch.bool):
        x = torch.ones(4, dtype=dtype)
        TensorSpec().check(x)
        assert TensorSpec()._probe(x, probes) is None
    assert TensorSpec(finite=False)._probe(torch.zeros(3), probes) is None
    assert TensorSpec()._probe(torch.zeros(0), probes) is None
    assert probes == []
    assert TensorSpec(min=0)._probe(torch.ones(4, dtype=torch.int64), probes) is not None


def test_bounds_are_exact_for_every_dtype() -> None:
    # a float16 just below 0.1, and int64 neighbours that float64 cannot tell apart
    below = torch.tensor([0.2, 0.0999755859375], dtype=torch.float16)
    err = fails(lambda: TensorSpec(min=0.1).check(below), "DIA-2104", "input", "min")
    assert err.index == (1,)
    big = torch.tensor([2**62, 2**62 + 1])
    TensorSpec(max=2**62 + 1).check(big)
    err = fails(lambda: TensorSpec(max=2**62).check(big), "DIA-2104", "input", "max")
    assert (err.actual, err.index) == ([2**62, 2**62 + 1], (1,))
    huge = torch.tensor([1, 2**64 - 1], dtype=torch.uint64)
    err = fails(lambda: TensorSpec(max=2**63).check(huge), "DIA-2104", "input", "max")
    assert (err.actual, err.index) == ([1, 2**64 - 1], (1,))
    TensorSpec(min=1, max=2**64 - 1).check(huge)
    near = torch.tensor([2**40, 2**40 + 1])  # float32 (torch's promotion) cannot tell them apart
    err = fails(lambda: TensorSpec(max=2**40 + 0.5).check(near), "DIA-2104", "input", "max")
    assert err.index == (1,)
    for dtype in (torch.uint16, torch.uint32):
        wide = torch.tensor([7, 70000 if dtype == torch.uint32 else 65535], dtype=dtype)
        err = fails(lambda w=wide: TensorSpec(max=100).check(w), "DIA-2104", "input", "max")
        assert err.index == (1,)
    flags = torch.tensor([False, True])
    err = fails(lambda: TensorSpec(max=0.5).check(flags), "DIA-2104", "input", "max")
    assert err.index == (1,)
    TensorSpec(min=-2.5).check(torch.tensor([-2], dtype=torch.int8))
    small = torch.tensor([-3], dtype=torch.int8)
    fails(lambda: TensorSpec(min=-2.5).check(small), "DIA-2104", "input", "min", "-3")


def test_complex_tensors_are_checked_for_finiteness_only() -> None:
    TensorSpec().check(torch.tensor([1 + 2j]))
    bad = torch.tensor([1 + 2j, complex(NAN, 0)])
    err = fails(lambda: TensorSpec().check(bad), "DIA-2105", "input", "finite", "1 non-finite")
    assert err.index == (1,)
    fails(lambda: TensorSpec(max=1).check(torch.tensor([1j])), "DIA-2102", "input", "dtype", "real")


def test_value_checks_ignore_autograd_and_empty_tensors() -> None:
    w = torch.nn.Parameter(torch.tensor([0.5, 2.0]))
    fails(lambda: TensorSpec(max=1).check(w), "DIA-2104", "input", "max")
    TensorSpec(max=1).check(torch.zeros(0, 3))


# --- the perception example --------------------------------------------------------------------


def test_good_perception_output_passes(path: str) -> None:
    contract = perception_contract(640, 480)
    contract.check(output(8), field="output")
    contract.check(output(0), field="output")  # no detections: nothing to compare
    contract.check(output(100, ts=list(range(10, 110))), field="output")
    contract.check(output(1, ts=[200], boxes=torch.tensor([[3.0, 4.0, 3.0, 4.0]])))


def test_confidence_outside_unit_interval_is_out_of_range(path: str) -> None:
    contract = perception_contract(640, 480)
    high = output(confidence=torch.tensor([0.0, 0.2, 1.0, 1.5, 0, 0, 0, 0]))
    err = fails(lambda: contract.check(high, field="out"), "DIA-2104", "out.confidence", "max")
    assert err.index == (3,)
    low = output(confidence=torch.full((8,), -0.1))
    fails(lambda: contract.check(low, field="out"), "DIA-2104", "out.confidence", "min", "-0.1")


@pytest.mark.parametrize(
    ("box", "broken"),
    [
        ([-1.0, 0.0, 10.0, 10.0], "0 <= x_min"),
        ([20.0, 0.0, 10.0, 10.0], "x_min <= x_max"),
        ([0.0, 0.0, 640.5, 10.0], "x_max <= width (640)"),
        ([0.0, -0.5, 10.0, 10.0], "0 <= y_min"),
        ([0.0, 20.0, 10.0, 10.0], "y_min <= y_max"),
        ([0.0, 0.0, 10.0, 481.0], "y_max <= height (480)"),
    ],
)
@pytest.mark.parametrize("n", [8, 100])
def test_each_box_rule(path: str, box: list[float], broken: str, n: int) -> None:
    contract = perception_contract(640, 480)
    boxes = output(n)["boxes"].clone()
    boxes[n - 3] = torch.tensor(box)
    err = fails(
        lambda: contract.check(output(n, boxes=boxes), field="out"),
        "DIA-2106",
        "out.boxes",
        "boxes_in_image",
        f"boxes[{n - 3}]",
        broken,
    )
    assert err.index == n - 3
    assert contract.rules[1].last is None  # type: ignore[attr-defined]  # nothing accepted


def test_non_finite_boxes_are_not_finite_not_a_rule(path: str) -> None:
    contract = perception_contract(640, 480)
    boxes = output()["boxes"].clone()
    boxes[2, 1] = NAN
    fails(lambda: contract.check(output(boxes=boxes)), "DIA-2105", "input.boxes", "finite")


def test_timestamps_must_be_positive_and_increase_within_a_call(path: str) -> None:
    contract = perception_contract(640, 480)
    fails(lambda: contract.check(output(3, ts=[0, 1, 2])), "DIA-2104", "input.timestamps_us", "min")
    ts = [5, 6, 7, 7, 8, *range(9, 9 + 80)]
    err = fails(
        lambda: contract.check(output(len(ts), ts=ts)),
        "DIA-2106",
        "input.timestamps_us",
        "timestamps_increasing",
        "timestamps_us[3] = 7 is not above timestamps_us[2] = 7",
    )
    assert err.index == 3
    err = fails(
        lambda: contract.check(output(3, ts=[9, 8, 10])),
        "DIA-2106",
        "input.timestamps_us",
        "timestamps_increasing",
        "[1] = 8",
    )
    assert err.index == 1


def test_timestamps_must_increase_across_calls_until_reset(path: str) -> None:
    contract = perception_contract(640, 480)
    rule = contract.rules[1]
    contract.check(output(3, ts=[1, 2, 3]))
    assert rule.last == 3  # type: ignore[attr-defined]
    err = fails(
        lambda: contract.check(output(2, ts=[3, 4])),
        "DIA-2106",
        "input.timestamps_us",
        "timestamps_increasing",
        "timestamps_us[0] = 3 is not above 3",
    )
    assert err.index == 0
    assert rule.last == 3  # type: ignore[attr-defined]  # a rejected call leaves the state
    contract.check(output(2, ts=[4, 5]))
    contract.check(output(0))  # no timestamps: the state stays
    assert rule.last == 5  # type: ignore[attr-defined]
    contract.reset()
    assert rule.last is None  # type: ignore[attr-defined]
    contract.check(output(2, ts=[1, 2]))
    assert rule.last == 2  # type: ignore[attr-defined]


def test_a_call_rejected_for_another_reason_does_not_advance_the_timestamps(path: str) -> None:
    contract = perception_contract(640, 480)
    bad = output(2, ts=[100, 200], confidence=torch.tensor([0.5, 7.0]))
    fails(lambda: contract.check(bad), "DIA-2104", "input.confidence", "max")
    bad = output(2, ts=[100, 200], boxes=torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 999]]))
    fails(lambda: contract.check(bad), "DIA-2106", "input.boxes", "boxes_in_image")
    contract.check(output(2, ts=[10, 20]))


def test_perception_contract_validates_its_arguments() -> None:
    for width, height in ((0, 480), (640, -1), (640.0, 480), (True, 480), (2**24 + 1, 1)):
        with pytest.raises(ConfigError):
            perception_contract(width, height)  # type: ignore[arg-type]
    contract = perception_contract(2**24, 1, device="cpu")
    fails(
        lambda: contract.check({k: v.to("meta") for k, v in output().items()}),
        "DIA-2103",
        "input.confidence",
        "device",
    )


def test_the_stateful_rule_is_safe_for_two_threads_taking_turns() -> None:
    contract = perception_contract(640, 480)
    rule = contract.rules[1]
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []
    rounds = 40

    def worker(me: int) -> None:
        try:
            for r in range(rounds):
                if r % 2 == me:
                    contract.check(output(2, ts=[2 * r + 1, 2 * r + 2]))
                    with pytest.raises(InvalidInput):  # replaying the same call is stale
                        contract.check(output(2, ts=[2 * r + 1, 2 * r + 2]))
                barrier.wait()
                assert rule.last == 2 * r + 2  # type: ignore[attr-defined]
                barrier.wait()
        except BaseException as exc:  # report it in the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(me,)) for me in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert rule.last == 2 * rounds  # type: ignore[attr-defined]


def test_two_threads_offering_the_same_timestamps_pass_exactly_once(path: str) -> None:
    contract = perception_contract(640, 480)
    barrier = threading.Barrier(2, timeout=10)
    rounds = 100
    passed: list[list[int]] = [[] for _ in range(rounds)]

    def worker(me: int) -> None:
        for r in range(rounds):
            out = output(3, ts=[3 * r + 1, 3 * r + 2, 3 * r + 3])
            barrier.wait()
            try:
                contract.check(out)
                passed[r].append(me)
            except InvalidInput:
                pass

    threads = [threading.Thread(target=worker, args=(me,)) for me in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [len(p) for p in passed] == [1] * rounds


def test_the_state_is_read_and_written_only_under_the_lock() -> None:
    """What makes concurrent checks atomic: compare and update in one critical section."""
    seen: list[tuple[str, bool]] = []

    class Watched(C._StrictlyIncreasing):
        @property
        def _last(self) -> int | None:
            seen.append(("read", self._lock.locked()))
            return self._value

        @_last.setter
        def _last(self, value: int | None) -> None:
            seen.append(("write", self._lock.locked()))
            self._value = value

    rule = Watched("t")
    contract = Contract({"t": TensorSpec(("N",), torch.int64)}, rules=[rule])
    seen.clear()
    contract.check({"t": torch.tensor([1, 2])})
    fails(lambda: contract.check({"t": torch.tensor([2])}), "DIA-2106", "input.t", rule.name)
    contract.reset()
    assert {op for op, _ in seen} == {"read", "write"}
    assert all(locked for _, locked in seen), seen


# --- one transfer -------------------------------------------------------------------------------


def test_one_contract_check_makes_one_transfer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route every probe through the remote path (as for CUDA tensors) and count transfers."""
    monkeypatch.setattr(C, "_HOST_ROWS", 0)
    fetches: list[int] = []
    copies: list[int] = []
    real_cpu = torch.Tensor.cpu

    def fetch_all_remote(probes: list[torch.Tensor]) -> list[Any]:
        fetches.append(len(probes))
        return C._gather(probes)

    def counting_cpu(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        copies.append(1)
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(C, "_fetch", fetch_all_remote)
    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    contract = perception_contract(640, 480)
    contract.check(output(8))
    # 2 probes a tensor (3 tensors), 1 for the boxes, 3 for the timestamps: in one copy
    assert (fetches, len(copies)) == ([10], 1)
    stale = output(8)
    fails(lambda: contract.check(stale), "DIA-2106", "input.timestamps_us", "timestamps_increasing")
    bad = output(8, ts=list(range(20, 28)), confidence=torch.full((8,), 2.0))
    fails(lambda: contract.check(bad), "DIA-2104", "input.confidence", "max", "2.0")
    boxes = output()["boxes"].clone()
    boxes[5, 0] = 700
    bad = output(8, ts=list(range(20, 28)), boxes=boxes)
    err = fails(lambda: contract.check(bad), "DIA-2106", "input.boxes", "boxes_in_image")
    assert err.index == 5
    contract.check(output(8, ts=list(range(20, 28))))
    assert contract.rules[1].last == 27  # type: ignore[attr-defined]


PROBE_VALUES = st.one_of(
    st.floats().map(lambda v: torch.tensor(v, dtype=torch.float64)),
    st.floats(width=32).map(lambda v: torch.tensor(v, dtype=torch.float32)),
    st.floats(width=16).map(lambda v: torch.tensor(v, dtype=torch.float16)),
    st.floats(width=32).map(lambda v: torch.tensor(v, dtype=torch.bfloat16)),
    st.integers(0, 255).map(lambda v: torch.tensor(v, dtype=torch.uint8)),
    st.integers(-(2**63), 2**63 - 1).map(torch.tensor),
    st.integers(-128, 127).map(lambda v: torch.tensor(v, dtype=torch.int8)),
    st.booleans().map(torch.tensor),
)


@given(st.lists(PROBE_VALUES, min_size=1, max_size=8))
def test_the_one_transfer_is_exact(probes: list[torch.Tensor]) -> None:
    got = C._gather(probes)
    want = [p.item() for p in probes]
    assert [repr(v) if isinstance(v, float) else v for v in got] == [
        repr(v) if isinstance(v, float) else v for v in want
    ]


# --- a property against a reference implementation ---------------------------------------------

DTYPES = [*FLOATS, torch.int8, torch.int32, torch.int64, torch.uint8, torch.bool]
SPECIAL = [NAN, INF, -INF, 0.0, -0.0, 0.5, 1.0, -1.0, 65504.0, 1e-3, 3e38]


def _reference(specs: dict[str, TensorSpec], value: dict[str, object]) -> str | None:
    """The contract's checks, written the obvious way on Python lists."""
    dims: dict[str, int] = {}
    for key, spec in specs.items():
        t = value[key]
        if not isinstance(t, torch.Tensor):
            return "DIA-2047"
        if spec.dtype is not None and t.dtype != spec.dtype:
            return "DIA-2102"
        if spec.shape is not None:
            core = list(spec.shape)
            if core[:1] == ["..."]:
                core = core[1:]
                if t.dim() < len(core):
                    return "DIA-2101"
            elif t.dim() != len(core):
                return "DIA-2101"
            actual = list(t.shape)[t.dim() - len(core) :]
            for want, size in zip(core, actual, strict=True):
                if isinstance(want, int) and want != size:
                    return "DIA-2101"
                if isinstance(want, str) and dims.setdefault(want, size) != size:
                    return "DIA-2101"
    for key, spec in specs.items():
        t = value[key]
        assert isinstance(t, torch.Tensor)
        flat = t.flatten().tolist()
        if t.is_floating_point() and spec.finite and not all(math.isfinite(v) for v in flat):
            return "DIA-2105"
        if spec.min is not None and any(v < spec.min for v in flat):
            return "DIA-2104"
        if spec.max is not None and any(v > spec.max for v in flat):
            return "DIA-2104"
    return None


@st.composite
def _tensors(draw: st.DrawFn) -> torch.Tensor:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    n = math.prod(shape)
    if dtype.is_floating_point:
        special = st.sampled_from(SPECIAL)
        plain = st.floats(-12, 12, allow_nan=False)
        element: st.SearchStrategy[Any] = st.one_of(special, plain, plain, plain, plain)
    elif dtype == torch.bool:
        element = st.booleans()
    else:
        info = torch.iinfo(dtype)
        element = st.one_of(st.integers(info.min, info.max), st.integers(-3, 12).map(abs))
    values = draw(st.lists(element, min_size=n, max_size=n))
    return (
        torch.tensor(values, dtype=torch.float64 if dtype.is_floating_point else dtype)
        .to(dtype)
        .reshape(shape)
    )


@st.composite
def _specs(draw: st.DrawFn, t: torch.Tensor) -> TensorSpec:
    shape: tuple[int | str | None, ...] | None = None
    if draw(st.booleans()):
        choices = st.sampled_from(["same"] * 6 + [None, "N", "M", "other"])
        dims: list[int | str | None] = []
        for size in t.shape:
            dim = draw(choices)
            dims.append(size if dim == "same" else size + 1 if dim == "other" else dim)
        if draw(st.booleans()) and dims:
            dims = ["...", *dims[draw(st.integers(0, len(dims))) :]]
        elif draw(st.integers(0, 4)) == 0:
            dims.append(draw(st.sampled_from([1, None, "N"])))
        shape = tuple(dims)
    dtype = draw(st.sampled_from([None] * 4 + [t.dtype] * 8 + DTYPES))
    bound = st.one_of(st.none(), st.integers(-5, 300), st.floats(-12, 12))
    low, high = draw(bound), draw(bound)
    if low is not None and high is not None and low > high:
        low, high = high, low
    return TensorSpec(shape, dtype, None, low, high, draw(st.booleans()))


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_check_agrees_with_the_reference(data: st.DataObject) -> None:
    value: dict[str, object] = {}
    specs: dict[str, TensorSpec] = {}
    for key in data.draw(st.sampled_from([["a"], ["a", "b"]])):
        t = data.draw(_tensors())
        specs[key] = data.draw(_specs(t))
        value[key] = t if data.draw(st.sampled_from([True] * 19 + [False])) else t.tolist()
    want = _reference(specs, value)
    err = _outcome(lambda: Contract(specs).check(value, field="v"))
    assert (err and err.code) == want
    assert err is None or err.field.startswith("v.")
    if len(specs) == 1:
        err = _outcome(lambda: specs["a"].check(value["a"]))
        assert (err and err.code) == want


def _outcome(check: Callable[[], None]) -> InvalidInput | None:
    """None when ``check`` passes, its InvalidInput when it fails; anything else escapes."""
    try:
        check()
    except InvalidInput as err:
        return err
    return None


# --- construction, JSON and digests ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": [2, -1]},
        {"shape": (2, "...")},
        {"shape": (True,)},
        {"shape": (2.0,)},
        {"shape": ("",)},
        {"shape": "N"},
        {"dtype": "float32"},
        {"min": NAN},
        {"max": INF},
        {"min": True},
        {"min": "0"},
        {"min": 2, "max": 1},
        {"finite": 1},
        {"dtype": torch.complex64, "max": 1},
        {"device": 3},
    ],
)
def test_malformed_specs_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TensorSpec(**kwargs)


def test_malformed_contracts_are_config_errors() -> None:
    for bad in (
        lambda: Contract([TensorSpec()]),  # type: ignore[arg-type]
        lambda: Contract({1: TensorSpec()}),  # type: ignore[dict-item]
        lambda: Contract({"a": (2, 3)}),  # type: ignore[dict-item]
        lambda: Contract(TensorSpec(), rules=[lambda v: None]),  # type: ignore[list-item]
        lambda: Contract(TensorSpec(), name=""),
    ):
        with pytest.raises(ConfigError):
            bad()


def test_to_json_is_canonical_and_serialisable() -> None:
    spec = TensorSpec(["...", "N", 4, None], torch.bfloat16, "cuda:1", 0.0, 2.5)  # type: ignore[arg-type]
    assert spec.shape == ("...", "N", 4, None)
    assert spec.to_json() == {
        "shape": ["...", "N", 4, None],
        "dtype": "bfloat16",
        "device": "cuda:1",
        "min": 0,
        "max": 2.5,
        "finite": True,
    }
    assert TensorSpec(min=1.0) == TensorSpec(min=1)
    assert Contract(TensorSpec(min=1.0)).digest() == Contract(TensorSpec(min=1)).digest()
    text = json.dumps(perception_contract(640, 480).to_json(), allow_nan=False)
    assert '"float32"' in text and '"width": 640' in text


def test_the_perception_digest_is_pinned() -> None:
    """A change here changes every recorded contract digest: do it deliberately."""
    contract = perception_contract(640, 480)
    assert contract.digest() == perception_contract(640, 480).digest()
    assert len(contract.digest()) == 32
    text = json.dumps(contract.to_json(), sort_keys=True, separators=(",", ":"))
    assert text == PERCEPTION_640_480_JSON
    assert contract.digest() == hashlib.sha256(text.encode()).digest()
    assert contract.digest().hex() == (
        "d14e1add5dbe1609316f99b31c822a035bc82475a5bff3643a0fad9fddc2634f"
    )


PERCEPTION_640_480_JSON = (
    '{"kind":"mapping","name":"perception","rules":[{"height":480,"key":"boxes",'
    '"name":"boxes_in_image","width":640},{"key":"timestamps_us","name":"timestamps_increasing"}]'
    ',"specs":{"boxes":{"device":null,"dtype":"float32","finite":true,"max":null,"min":null,'
    '"shape":["N",4]},"confidence":{"device":null,"dtype":"float32","finite":true,"max":1,'
    '"min":0,"shape":["N"]},"timestamps_us":{"device":null,"dtype":"int64","finite":true,'
    '"max":null,"min":1,"shape":["N"]}},"version":1}'
)


def _variants() -> Iterator[Contract]:
    base = {"a": TensorSpec(("N",), torch.float32, "cpu", 0, 1), "b": TensorSpec(("N", 4))}
    yield Contract(base, name="c")
    yield Contract(base, name="d")
    yield Contract({**base, "c": TensorSpec()}, name="c")
    yield Contract({"x": base["a"], "b": base["b"]}, name="c")
    yield Contract(base["a"], name="c")
    for change in (
        {"shape": ("M",)},
        {"shape": (None,)},
        {"shape": None},
        {"dtype": torch.float64},
        {"dtype": None},
        {"device": "cuda"},
        {"device": None},
        {"min": -1},
        {"min": None},
        {"max": 0.5},
        {"max": None},
        {"finite": False},
    ):
        yield Contract({**base, "a": dataclasses.replace(base["a"], **change)}, name="c")
    yield Contract(base, name="c", rules=[C._StrictlyIncreasing("a")])
    yield Contract(base, name="c", rules=[C._StrictlyIncreasing("b")])
    yield Contract(base, name="c", rules=[C._BoxesInImage("b", 640, 480)])
    yield Contract(base, name="c", rules=[C._BoxesInImage("b", 640, 481)])
    yield perception_contract(640, 480)
    yield perception_contract(480, 640)


def test_any_change_changes_the_digest() -> None:
    digests = [c.digest() for c in _variants()]
    assert len(set(digests)) == len(digests)
    assert digests == [c.digest() for c in _variants()]  # and each is stable


def test_the_recorder_does_not_import_torch_for_the_contracts() -> None:
    """vigil.schemas exports the contracts lazily: reading a log must not cost torch's import."""
    code = "import sys, vigil.auditlog, vigil.schemas; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_public_surface() -> None:
    assert {"Contract", "Rule", "TensorSpec", "perception_contract"} <= set(vigil.schemas.__all__)
    assert isinstance(perception_contract(1, 1).rules[0], Rule)


# --- bounds of any size (found by tests/fuzz/fuzz_contracts.py) -------------------------------


@pytest.mark.parametrize(
    ("spec", "values", "dtype", "rule", "index"),
    [
        # bounds past 64 bits: OverflowError from torch's scalar conversion before
        (TensorSpec(min=10**30), [5, 2**63 - 1], torch.int64, "min", (0,)),
        (TensorSpec(max=-(10**30)), [-(2**63), 5], torch.int64, "max", (0,)),
        (TensorSpec(min=10**30), [1.0, 2e30], torch.float64, "min", (0,)),
        (TensorSpec(max=10**400 * -1), [1.0], torch.float32, "max", (0,)),
        # past 2**53 torch rounded the bound to the nearest even double, 2**53 + 4: no element
        # compared outside it, and the error blamed element 0 (0.0, inside) before
        (TensorSpec(max=2**53 + 3), [0.0, 2.0**53 + 4], torch.float64, "max", (1,)),
        (TensorSpec(min=-(2**53) - 3), [0.0, -(2.0**53) - 4], torch.float64, "min", (1,)),
    ],
)
def test_bounds_of_any_size_blame_the_right_element(
    spec: TensorSpec, values: list[Any], dtype: torch.dtype, rule: str, index: tuple[int, ...]
) -> None:
    with pytest.raises(InvalidInput) as info:
        spec.check(torch.tensor(values, dtype=dtype))
    assert (info.value.rule, info.value.index) == (rule, index)
