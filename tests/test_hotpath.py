"""The inline hot path (issue 16): a contract compiled once answers a plain CPU tensor without
the probe machinery, and the compiled answer never differs from the full check's."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from vigil.errors import InvalidInput
from vigil.schemas import Contract, TensorSpec
from vigil.schemas._contracts import all_finite, finite_view
from vigil.supervisor import digest
from vigil.supervisor._tensors import check_finite, digest_view


def _outcome(check: Any, value: object) -> tuple[str, str, str | None, str] | None:
    try:
        check(value, field="output")
    except InvalidInput as exc:
        return (exc.code, exc.message, exc.field, str(exc.rule))
    return None


def _full(contract: Contract) -> Contract:
    """The same contract with its compiled fast path switched off."""
    slow = Contract(contract.specs, rules=contract.rules, name=contract.name)
    slow._fast_one = None
    slow._fast_map = None
    return slow


def test_compiled_contract_needs_no_probe_for_a_plain_cpu_tensor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finite-only spec of an exact shape checks a CPU float tensor without ``aminmax``
    (and without the two ``item()`` reads that follow it)."""
    contract = Contract(TensorSpec(shape=(1, 4), dtype=torch.float32))
    mapping = Contract({"a": TensorSpec(shape=(2,)), "b": TensorSpec(dtype=torch.int64)})
    ok, bad = torch.ones(1, 4), torch.tensor([[1.0, math.nan, 0.0, 0.0]])

    def no_probe(*args: object, **kwargs: object) -> object:
        raise AssertionError("the compiled check ran aminmax")

    monkeypatch.setattr(torch, "aminmax", no_probe)
    contract.check(ok, field="output")
    TensorSpec(shape=(1, 4), dtype=torch.float32).check(ok)
    mapping.check({"a": torch.zeros(2), "b": torch.arange(3)})
    monkeypatch.undo()
    with pytest.raises(InvalidInput) as info:  # a bad value still gets the full diagnosis
        contract.check(bad, field="output")
    assert info.value.code == "DIA-2105" and info.value.index == (0, 1)


SPECS = [
    TensorSpec(shape=(2, 3), dtype=torch.float32),
    TensorSpec(shape=(2, 3)),
    TensorSpec(dtype=torch.float16),
    TensorSpec(),
    TensorSpec(shape=(2, 3), finite=False),
    TensorSpec(shape=(2, 3), device="cpu", dtype=torch.int64),
    TensorSpec(shape=(2, 3), min=0.0),  # bounded: never compiled, checked for agreement
]
VALUES: list[object] = [
    torch.zeros(2, 3),
    torch.zeros(2, 3, dtype=torch.float64),
    torch.zeros(2, 3, dtype=torch.float16),
    torch.zeros(2, 3, dtype=torch.bfloat16),
    torch.zeros(3, 2),
    torch.zeros(3, 2).t(),  # not contiguous
    torch.zeros(0, 3),
    torch.tensor([[1.0, math.inf, 0.0], [0.0, 0.0, 0.0]]),
    torch.tensor([[1.0, -math.inf, 0.0], [0.0, 0.0, math.nan]], dtype=torch.float16),
    torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, math.nan]], dtype=torch.bfloat16),
    torch.zeros(2, 3, requires_grad=True),
    torch.full((2, 3), math.nan, requires_grad=True),
    torch.zeros(2, 3, dtype=torch.int64),
    torch.zeros(2, 3, dtype=torch.bool),
    torch.zeros(2, 3, dtype=torch.complex64),
    torch.tensor([[complex(math.inf, 0)] * 3] * 2),
    torch.zeros(2, 3).to_sparse(),
    torch.zeros(2, 3, device="meta"),
    torch.nn.Parameter(torch.zeros(2, 3)),
    torch.full((2, 3), -1.0),
    torch.full((2, 3), 3e38),  # finite, but its float32 sum would overflow
    torch.full((2, 3), 1e308, dtype=torch.float64),  # its sum overflows: the full check
    torch.full((2, 3), 6e4, dtype=torch.float16),
    torch.zeros(2, 3, dtype=torch.complex64).conj().imag,  # a negative bit: no numpy view
    [torch.zeros(2, 3)],
    None,
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_compiled_contract_agrees_with_the_full_check(spec: TensorSpec) -> None:
    """Same pass, or the same error (code, message, field, rule), for every value."""
    compiled = Contract(spec)
    full = _full(compiled)
    for value in VALUES:
        assert _outcome(compiled.check, value) == _outcome(full.check, value), value
        assert _outcome(spec.check, value) == _outcome(full.check, value), value
    named = Contract({"a": spec, "b": TensorSpec(dtype=torch.int64)})
    for value in VALUES:
        for mapping in ({"a": value, "b": torch.ones(2, dtype=torch.int64)}, {"a": value}):
            assert _outcome(named.check, mapping) == _outcome(_full(named).check, mapping)


def test_watchdog_plans_its_next_look_past_disarmed_deadlines() -> None:
    """The thread's look at the heap: passed entries dropped (a live one fired), disarmed ones
    at the top dropped, and the thread wakes next at a live deadline, or at the last dropped
    one's (not never: so the next, later, arm need not wake it)."""
    from vigil.supervisor import _watchdog as W

    def entry(deadline: int, live: bool) -> tuple[int, int, W.Ticket]:
        t = W.Ticket(deadline, lambda: None)
        if not live:
            assert t.claim()
        return (deadline, deadline, t)

    heap = [entry(100, live=False), entry(200, live=False)]
    assert W._due(heap, 50) == (None, 200) and heap == []
    assert W._due(heap, 50) == (None, None)
    live = entry(300, live=True)
    heap = [entry(100, live=False), live, entry(400, live=False)]
    assert W._due(heap, 50) == (None, 300) and len(heap) == 2
    assert W._due(heap, 350) == (live[2], None) and len(heap) == 1


def test_arming_after_a_call_in_time_does_not_wake_the_watchdog() -> None:
    """Once the thread has looked at a disarmed deadline, later arms (later deadlines) do not
    notify it. The fake clock is read only by the thread, under the lock: it tells the test
    that a look began, and taking the lock afterwards that the look ended."""
    import threading

    from vigil.supervisor import Watchdog

    looked = threading.Event()

    def clock() -> int:
        looked.set()
        return 0

    dog = Watchdog(clock)
    notified = []
    real = dog._cv.notify
    dog._cv.notify = lambda n=1: (notified.append(n), real(n))  # type: ignore[method-assign]
    try:
        assert looked.wait(10)
        looked.clear()
        assert dog.disarm(dog.arm(1_000_000, lambda: None))  # wakes the thread: a first look
        assert looked.wait(10)
        with dog._cv:
            pass  # the look is over: the thread waits, and knows when it will look next
        notified.clear()
        for i in range(200):
            assert dog.disarm(dog.arm(1_000_001 + i, lambda: None))
        assert notified == []
        assert dog.fired == 0
    finally:
        dog.close()


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_screen_passes_only_what_the_full_check_passes_and_hands_over_a_true_view(
    spec: TensorSpec,
) -> None:
    """``Contract.screen`` never passes what ``check`` refuses; when it hands over a numpy
    view, that view holds the tensor's own bytes, and the digest taken from it is the one
    :func:`digest` computes (the supervisor hashes the view instead of taking another)."""
    contract = Contract(spec)
    views = 0
    for value in VALUES:
        screened = contract.screen(value)
        if screened is None:
            continue
        assert _outcome(_full(contract).check, value) is None, value
        assert isinstance(value, torch.Tensor)
        if isinstance(screened, np.ndarray):
            views += 1
            own = value.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            assert screened.tobytes() == own.tobytes()
        assert digest_view(value, screened) == digest(value), value
    if spec.min is None and spec.dtype in (None, torch.float32) and spec.finite:
        assert views, "a finite-only float spec took no view of a plain float tensor"


@pytest.mark.parametrize("size", [0, 1, 4, 255, 256, 257, 4096])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64])
def test_all_finite_agrees_with_numpy_at_every_position_and_size(size: int, dtype: Any) -> None:
    """The small-array route (the flags' bytes) and the reduction agree with numpy's own
    answer for a NaN or an Inf at the first, a middle and the last place, and none."""
    base = np.arange(size).astype(dtype)
    assert all_finite(base)
    assert all_finite(base.reshape(1, -1)[:, ::2])  # a strided view
    for bad in (np.nan, np.inf, -np.inf):
        for where in {0, size // 2, size - 1} if size else set():
            a = base.copy()
            a[where] = bad
            assert not all_finite(a), (size, where, bad)
            assert bool(np.isfinite(a).all()) is False


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 4096])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_finite_view_agrees_with_torch_for_half_width_floats(size: int, dtype: Any) -> None:
    """The exponent-bit route for bfloat16 and float16 (numpy has no bfloat16) says what
    ``torch.isfinite`` says for NaN, ±Inf, the largest finite value and subnormals, at the
    first, a middle and the last place; its view holds the tensor's bytes."""
    info = torch.finfo(dtype)
    base = torch.linspace(-2, 2, size).to(dtype) if size else torch.zeros(0, dtype=dtype)
    view = finite_view(base)
    assert view is not None
    assert view.tobytes() == base.view(torch.uint8).numpy().tobytes()
    for special in (math.nan, math.inf, -math.inf, info.max, -info.max, info.tiny / 4):
        for where in {0, size // 2, size - 1} if size else set():
            t = base.clone()
            t[where] = special
            finite = bool(torch.isfinite(t).all())
            assert (finite_view(t) is not None) is finite, (dtype, size, where, special)
            if not finite:
                with pytest.raises(InvalidInput):
                    check_finite(t)
                with pytest.raises(InvalidInput):
                    check_finite({"logits": t, "other": torch.ones(2)})


def test_default_output_check_hands_over_its_view() -> None:
    """Without an output contract, the finiteness check returns the view it judged by, and
    the digest from it equals the plain digest; a non-contiguous tensor's digest too."""
    t = torch.randn(2, 3)
    view = check_finite(t)
    assert isinstance(view, np.ndarray)
    assert digest_view(t, view) == digest(t)
    tt = t.t()
    assert digest_view(tt, check_finite(tt)) == digest(tt) == digest(tt.contiguous())
    assert check_finite([t]) is None
    with pytest.raises(InvalidInput):
        check_finite(torch.tensor([1.0, math.nan]))


def test_a_contract_subclass_that_overrides_check_is_never_skipped(tmp_path: Any) -> None:
    """The supervisor takes the compiled screen only from a contract whose ``check`` is ours:
    a subclass adding its own rule in ``check`` gets that rule run on every call."""
    from vigil.supervisor import Supervisor

    class Stricter(Contract):
        def check(self, value: object, *, field: str = "input") -> None:
            super().check(value, field=field)
            if isinstance(value, torch.Tensor) and float(value.sum()) > 100:
                raise InvalidInput(f"{field}: sum over 100", field=field, rule="sum")

    spec = TensorSpec(shape=(1, 4), dtype=torch.float32)
    with Supervisor(
        lambda t: t * 1.0,
        log=str(tmp_path / "s.vigil"),
        isolation="inline",
        input_contract=Stricter(spec),
        output_contract=Stricter(spec),
    ) as sup:
        assert sup.infer(torch.ones(1, 4)).output.sum() == 4
        with pytest.raises(InvalidInput, match="sum over 100"):
            sup.infer(torch.full((1, 4), 50.0))


def test_structure_digests_follow_the_documented_scheme() -> None:
    """A mapping's digest, fast paths and caches included, is SHA-256 over the scheme the
    module documents, computed here by hand: domain, ``M<n>``, each key as ``K<key>`` in
    ``str`` order, each tensor's ``T<dtype><shape>`` and bytes (a non-contiguous tensor's
    logical bytes, a tensor that needs grad its values, a bfloat16 its raw bytes)."""
    import hashlib

    grad = torch.ones(2, requires_grad=True)
    value = {
        "tokens": torch.tensor([7], dtype=torch.int64),
        "logprobs": torch.tensor([-0.5]),
        3: torch.arange(6.0).reshape(2, 3).t(),
        "g": grad,
        "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
    }
    want = hashlib.sha256(b"vigil/tensor/v1\x00" + b"M5")
    for key in sorted(value, key=str):
        t = value[key].detach().contiguous()
        want.update(f"K{key}".encode() + f"T{t.dtype}{tuple(t.shape)}".encode())
        want.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for _ in range(2):  # the second time from the caches
        assert digest(value) == want.digest()


@pytest.mark.parametrize("isolation", ["inline", "thread"])
def test_the_primary_runs_without_autograd(
    isolation: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose parameters require grad (a plain ``nn.Linear``, no ``no_grad`` around
    it) answers a tensor without a graph, as a worker process does; its output takes the
    compiled contract check; the caller's autograd mode is left as it was, also when the
    model raises; a model that wants autograd inside turns it on itself."""
    from vigil.supervisor import FallbackModel, Supervisor

    layer = torch.nn.Linear(4, 2)
    modes: list[bool] = []
    fail = [False]

    def model(x: torch.Tensor) -> torch.Tensor:
        modes.append(torch.is_grad_enabled())
        if fail[0]:
            raise RuntimeError("boom")
        with torch.enable_grad():  # e.g. an input-gradient check inside the model
            probe = x.detach().requires_grad_()
            (grad,) = torch.autograd.grad(layer(probe).sum(), probe)
        assert grad.shape == x.shape
        out: torch.Tensor = layer(x)
        return out

    backup = torch.nn.Linear(4, 2)
    with Supervisor(
        model,
        log=tmp_path / "g.vigil",
        isolation=isolation,  # type: ignore[arg-type]
        output_contract=Contract(TensorSpec(shape=(1, 2), dtype=torch.float32)),
        fallback=FallbackModel(backup),
    ) as sup:
        assert torch.is_grad_enabled()
        sup.infer(torch.ones(1, 4))  # warm: the thread worker's first call
        monkeypatch.setattr(torch, "aminmax", lambda *a, **k: pytest.fail("full check ran"))
        r = sup.infer(torch.ones(1, 4))
        monkeypatch.undo()
        assert r.served_by.name == "PRIMARY"
        assert not r.output.requires_grad and r.output.grad_fn is None
        assert modes == [False, False] and torch.is_grad_enabled()
        fail[0] = True
        r = sup.infer(torch.ones(1, 4))  # the model raises: the fallback model answers
        assert r.served_by.name == "FALLBACK" and not r.output.requires_grad
        assert torch.is_grad_enabled()
    with torch.no_grad(), Supervisor(model, log=tmp_path / "n.vigil", isolation="inline") as sup:
        fail[0] = False
        assert not sup.infer(torch.ones(1, 4)).output.requires_grad
        assert not torch.is_grad_enabled()  # a caller's no_grad is left alone too
