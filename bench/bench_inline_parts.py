"""Where the inline wrapper's fixed cost goes: the whole call and each part, alternating.

Around ``Linear(16, 4)`` (batch 1, CPU, one torch thread, ``no_grad``): the bare call;
``Supervisor.infer`` inline with compiled contracts (as shipped) and with the contracts' compiled
fast path switched off (the full check every call, as before issue 16), and around the
``nn.Module`` itself with no ``no_grad`` (the supervisor turns autograd off); then each part alone:
both contract checks both ways, the two digests, the default finiteness check, the sealed
record append, the state machine's route + record, the watchdog's arm + disarm, and a no-op
(the timer's floor). And the floor of the work the issue requires, written flat with none of
vigil's bookkeeping (``_required_work``): both tensors checked and hashed by the cheapest
Python route, one record of INFERENCE's size packed, CRC32C'd and chained into a mapping.
Every case alternates call by call with every other (order rotating), so that drift on a
shared machine reaches each alike; what the parts do not explain is the Python around them.
Nothing here asserts on timing.

``--in-situ`` measures the parts where they run instead: the bare call, the supervised call,
and supervised calls with one part at a time replaced by a stub that returns what the part
would (no watchdog, no record, a state machine that always routes to the primary, input or
output check + digest skipped), then all of them at once. What a stub saves is the part's
cost inside the call (caches as the call leaves them); what is left with every part stubbed
is the call's own Python: the calls between the steps, the tuples they pass, two locks and
the counters. Stubbed supervisors are a measuring device only (their logs are not valid).

    python bench/bench_inline_parts.py [--quick] [--calls 20000] [--dir DIR] [--pause-us US]
                                       [--in-situ]
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import interleaved, pct

from vigil.auditlog._crc import crc32c
from vigil.fsm import Policy, SafetyMachine
from vigil.schemas import Contract, Outcome, TensorSpec
from vigil.supervisor import Constant, Supervisor, Watchdog, digest
from vigil.supervisor._supervisor import _Attempt
from vigil.supervisor._tensors import check_finite

torch.set_num_threads(1)


def _full(contract: Contract) -> Contract:
    """The contract with its compiled fast path off: the full check on every call."""
    slow = Contract(contract.specs, rules=contract.rules, name=contract.name)
    slow._fast_one = None
    slow._fast_map = None
    return slow


def _required_work(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """A call doing only what issue 16's supervised call must: check the input (type, device,
    dtype, shape, layout, finite) and hash it, run the model, check and hash the output, and
    write one INFERENCE-sized record (pack, SHA-256 chain, CRC32C) into a mapping -- by the
    cheapest Python route, with no watchdog, state machine, lock, counters or error paths.
    What it costs over the bare call is the floor of the fixed cost in Python here."""
    header = struct.Struct("<LHBBQQQQQq16s32s32s32sBBBBH2xQQQH")  # vigil's INFERENCE, fixed
    trailer = struct.Struct("<32sL")
    size = (header.size + trailer.size + 7) & ~7
    ring = mmap.mmap(-1, 1 << 20)
    sha, isfinite, f32 = hashlib.sha256, np.isfinite, torch.float32
    shape_in, shape_out = tuple(x.shape), tuple(layer(x).shape)
    prefix_in = b"vigil/tensor/v1\x00" + f"T{f32}{shape_in}".encode()
    prefix_out = b"vigil/tensor/v1\x00" + f"T{f32}{shape_out}".encode()
    pos, seq, chain = 0, 0, bytes(32)

    def judged(t: Any, shape: tuple[int, ...], prefix: bytes) -> bytes:
        if (
            type(t) is not torch.Tensor
            or not t.is_cpu
            or t.dtype is not f32
            or t.shape != shape
            or t.layout is not torch.strided
        ):
            raise ValueError("contract")
        view = t.numpy()
        if b"\0" in isfinite(view).tobytes():
            raise ValueError("not finite")
        h = sha(prefix)
        h.update(view)  # type: ignore[arg-type]  # an ndarray is a buffer; its stubs lack __buffer__
        return h.digest()

    def call() -> object:
        nonlocal pos, seq, chain
        d_in = judged(x, shape_in, prefix_in)
        t0 = time.monotonic_ns()
        with torch.no_grad():
            y = layer(x)
        t1 = time.monotonic_ns()
        d_out = judged(y, shape_out, prefix_out)
        seq += 1
        header.pack_into(
            ring, pos, size, 2, 1, 0, seq, 0, seq, 0, t1, time.time_ns(),
            b"r" * 16, d_in, d_in, d_out, 1, 1, 0, 0, 0, t1 - t0, 50_000_000, 0, 0,
        )  # fmt: skip
        head = ring[pos : pos + header.size]
        chain = sha(chain + head).digest()
        trailer.pack_into(ring, pos + header.size, chain, crc32c(chain, crc32c(head)))
        pos = (pos + size) % ((1 << 20) - size)
        return y

    return call


class _NoWatchdog:
    """A watchdog stub: nothing armed, every call in time (``close`` stops the real one)."""

    def __init__(self, real: Watchdog) -> None:
        self.close = real.close

    def arm(self, deadline_ns: int, callback: Callable[[], None]) -> None:
        return None

    @staticmethod
    def disarm(ticket: object) -> bool:
        return True


class _PrimaryAlways:
    """A state machine stub: routes every call to the primary (the decision the real machine
    gave in NORMAL), counts nothing."""

    def __init__(self, real: SafetyMachine) -> None:
        self.state = real.state
        self._decision = real.route(time.monotonic_ns())

    def route(self, now_ns: int) -> Any:
        return self._decision

    def record(self, *args: Any, **kwargs: Any) -> tuple[()]:
        return ()


_ZERO = bytes(32)


def _stub(sup: Supervisor, part: str) -> None:
    """Replace one part of ``sup`` by a stub returning what the part would."""
    if part == "watchdog":
        sup._watchdog = _NoWatchdog(sup._watchdog)  # type: ignore[assignment]
    elif part == "record":
        sup.log.record_inference = lambda **fields: 1  # type: ignore[method-assign]
    elif part == "state machine":
        sup._fsm = _PrimaryAlways(sup._fsm)  # type: ignore[assignment]
    elif part == "input check + digest":
        sup._admit = lambda x, rid, trace: _ZERO  # type: ignore[method-assign]
    elif part == "output check + digest":
        sup._judge = lambda output, error, latency: _Attempt(  # type: ignore[method-assign]
            Outcome.OK, None, "", output, latency, _ZERO, None
        )


_PARTS = ("watchdog", "record", "state machine", "input check + digest", "output check + digest")


def _in_situ(
    args: argparse.Namespace, bare: Callable[[], object], make: Callable[[str], Supervisor], x: Any
) -> None:
    """``--in-situ``: each part's cost inside the supervised call (see the module docstring)."""
    sups = {"supervised": make("whole")}
    for part in _PARTS:
        sups[f"without {part}"] = sup = make(part.replace(" ", "-"))
        _stub(sup, part)
    sups["without all five"] = sup = make("structure")
    for part in _PARTS:
        _stub(sup, part)
    names = ["bare", *sups]
    fns = [bare, *(lambda s=s: s.infer(x) for s in sups.values())]
    interleaved(fns, min(args.calls, 1000))  # warm up
    samples = interleaved(fns, args.calls, args.pause_us / 1e6)
    for sup in sups.values():
        sup.close()
    p50 = {n: pct(s, 0.5) for n, s in zip(names, samples, strict=True)}
    whole = p50["supervised"] - p50["bare"]
    print(
        f"inline fixed cost in situ, Linear(16, 4), CPU, {args.calls} calls per case, alternating\n"
    )
    print(f"{'case':34s} {'p50 us':>9s} {'overhead':>9s} {'saves':>9s}")
    for n in names:
        over = p50[n] - p50["bare"]
        print(f"{n:34s} {p50[n]:9.2f} {over:9.2f} {whole - over:9.2f}")
    parts = sum(whole - (p50[f"without {part}"] - p50["bare"]) for part in _PARTS)
    rest = p50["without all five"] - p50["bare"]
    print(f"\nsupervised overhead, p50: {whole:.1f} us")
    print(f"  the five parts in situ (the sum of what each stub saves): {parts:.1f} us")
    print(f"  the call's own Python (every part stubbed): {rest:.1f} us")
    print(f"  {'PASS' if whole <= 10 else 'MISS'}  inline overhead <= 10 us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"))
    ap.add_argument(
        "--pause-us",
        type=float,
        default=0.0,
        help="sleep this long before each timed call (2500: as after a GPU call's wait)",
    )
    ap.add_argument(
        "--in-situ", action="store_true", help="each part's cost inside the call (docstring)"
    )
    args = ap.parse_args()
    if args.quick:
        args.calls = 500
    work = tempfile.mkdtemp(prefix="vigil-bench-parts-", dir=args.dir)
    layer = torch.nn.Linear(16, 4).eval()
    x = torch.randn(1, 16)

    def model(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = layer(t)
        return out

    out = model(x)
    spec_in = Contract(TensorSpec(shape=(1, 16), dtype=torch.float32))
    spec_out = Contract(TensorSpec(shape=(1, 4), dtype=torch.float32))
    full_in, full_out = _full(spec_in), _full(spec_out)

    def supervisor(
        name: str, cin: Contract, cout: Contract, primary: Callable[[torch.Tensor], Any] = model
    ) -> Supervisor:
        return Supervisor(
            primary,
            log=os.path.join(work, f"{name}.vigil"),
            isolation="inline",
            input_contract=cin,
            output_contract=cout,
            fallback=Constant(torch.zeros(1, 4)),
            policy=Policy(),
        )

    if args.in_situ:
        try:
            _in_situ(args, lambda: model(x), lambda n: supervisor(n, spec_in, spec_out), x)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    compiled = supervisor("compiled", spec_in, spec_out)
    uncompiled = supervisor("full", full_in, full_out)
    plain = supervisor("plain", spec_in, spec_out, layer)  # no no_grad around it
    machine = SafetyMachine(Policy(), time.monotonic_ns())
    dog = Watchdog()
    far = 10**18

    def noop() -> None:
        return None

    log = compiled.log
    cases: dict[str, Callable[[], object]] = {
        "bare": lambda: model(x),
        "inline": lambda: compiled.infer(x),
        "inline, contracts uncompiled": lambda: uncompiled.infer(x),
        "inline, the bare nn.Module": lambda: plain.infer(x),
        "input contract": lambda: spec_in.check(x),
        "input contract, uncompiled": lambda: full_in.check(x),
        "output contract": lambda: spec_out.check(out),
        "output contract, uncompiled": lambda: full_out.check(out),
        "digest(input)": lambda: digest(x),
        "digest(output)": lambda: digest(out),
        "default finite check": lambda: check_finite(out),
        "sealed record": lambda: log.record_inference(
            request_id=b"r" * 16,
            model_digest=b"m" * 32,
            input_digest=b"i" * 32,
            output_digest=b"o" * 32,
            state=1,
            served_by=1,
            outcome=0,
            latency_ns=1,
            deadline_ns=2,
            flags=4,
        ),
        "route + record": lambda: (machine.route(5), machine.record(Outcome.OK, 5)),
        "arm + disarm": lambda: dog.disarm(dog.arm(far, noop)),
        "noop (timer floor)": noop,
        "required work, flat": _required_work(layer, x),
    }
    names, fns = list(cases), list(cases.values())
    pause = args.pause_us / 1e6
    interleaved(fns, min(args.calls, 1000))  # warm up
    samples = interleaved(fns, args.calls, pause)
    compiled.close()
    uncompiled.close()
    plain.close()
    dog.close()
    shutil.rmtree(work, ignore_errors=True)

    p50 = {n: pct(s, 0.5) for n, s in zip(names, samples, strict=True)}
    print(
        f"inline fixed cost, Linear(16, 4), CPU, {args.calls} calls per case, alternating"
        + (f", each after a {args.pause_us:g} us sleep" if pause else "")
        + "\n"
    )
    print(f"{'case':30s} {'p50 us':>9s} {'p99 us':>9s}")
    for n, s in zip(names, samples, strict=True):
        print(f"{n:30s} {p50[n]:9.2f} {pct(s, 0.99):9.2f}")
    floor = p50["noop (timer floor)"]
    overhead = p50["inline"] - p50["bare"]
    before = p50["inline, contracts uncompiled"] - p50["bare"]
    parts = [
        "input contract",
        "output contract",
        "digest(input)",
        "digest(output)",
        "sealed record",
        "route + record",
        "arm + disarm",
    ]
    explained = sum(max(p50[n] - floor, 0.0) for n in parts)
    print(f"\ninline overhead (inline - bare), p50: {overhead:.1f} us")
    print(f"  with the contracts uncompiled: {before:.1f} us")
    print(f"  the parts, less the timer floor each: {explained:.1f} us")
    print(f"  the rest (Python around them): {overhead - explained:.1f} us")
    required = p50["required work, flat"] - p50["bare"]
    print(
        f"  floor: the required work alone, flat (checks, digests, one chained record): "
        f"{required:.1f} us; vigil's bookkeeping over it (watchdog, state machine, lock, "
        f"fields, counters, error paths): {overhead - required:.1f} us"
    )
    print(f"  {'PASS' if overhead <= 10 else 'MISS'}  inline overhead <= 10 us")


if __name__ == "__main__":
    main()
