"""Sealing overhead: append throughput with signed / forward-secure checkpoints vs unsealed.

Every case appends the same INFERENCE records through ``record_inference`` into a fresh log
(durability ``batch``: forward-secure sealing needs it) with the default checkpoint interval
(4096 records or 1000 ms). Cases run interleaved in each repeat; the ratio to the unsealed
case is taken per repeat and its median printed. Also: the cost of ``verify`` with keys
(signatures and tags checked) vs the plain integrity check of the same sealed log.

    python bench/bench_seal.py [--quick] [--records 200000] [--repeats 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from vigil import keys as _keys
from vigil.auditlog import (
    FlightRecorder,
    ForwardSecureKey,
    FssSeed,
    LogReader,
    RingConfig,
    Sealer,
    fss_generate,
)

RID, MD, IND, OUTD = b"r" * 16, b"m" * 32, b"i" * 32, b"o" * 32


def make_sealer(kind: str, workdir: str) -> Sealer | None:
    if kind == "unsealed":
        return None
    key = None
    if "ed25519" in kind:
        key = _keys.generate(_keys.KeyAlgorithm.ED25519)
    if "p384" in kind:
        key = _keys.generate(_keys.KeyAlgorithm.ECDSA_P384)
    fss = None
    if "fss" in kind:
        state, seed = os.path.join(workdir, "st"), os.path.join(workdir, "seed")
        for p in (state, seed):
            if os.path.exists(p):
                os.unlink(p)
        fss_generate(state, seed)
        fss = ForwardSecureKey(state)
    return Sealer(key, fss=fss)


def run(kind: str, workdir: str, n: int, ring: int) -> float:
    path = os.path.join(workdir, f"{kind}.vigil")
    sealer = make_sealer(kind, workdir)
    w = FlightRecorder.create(path, RingConfig(size=ring), durability="batch", sealer=sealer)
    try:
        call = w.record_inference
        t0 = time.perf_counter()
        for _ in range(n):
            call(request_id=RID, model_digest=MD, input_digest=IND, output_digest=OUTD,
                 state=1, served_by=1, outcome=0, latency_ns=1, deadline_ns=2)  # fmt: skip
        return n / (time.perf_counter() - t0)
    finally:
        w.close()
        os.unlink(path)


CASES = ("unsealed", "ed25519", "p384", "fss", "ed25519+fss")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ring", type=int, default=64 << 20)
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"))
    a = ap.parse_args()
    if a.quick:
        a.records, a.repeats, a.ring = 10_000, 1, 8 << 20
    workdir = tempfile.mkdtemp(prefix="vigil-bench-seal-", dir=a.dir)
    print(f"seal: {a.records} INFERENCE records per pass, {a.repeats} repeats, durability batch,")
    print("checkpoint every 4096 records or 1000 ms (the defaults), in", workdir)
    rates: dict[str, list[float]] = {k: [] for k in CASES}
    verify: dict[str, list[float]] = {"plain": [], "keyed": []}
    try:
        for rep in range(a.repeats):
            for kind in CASES:
                rates[kind].append(run(kind, workdir, a.records, a.ring))
            # verification of one sealed log, with and without keys
            key = _keys.generate()
            st, sd = os.path.join(workdir, "vst"), os.path.join(workdir, "vsd")
            fss_generate(st, sd)
            path = os.path.join(workdir, "v.vigil")
            with FlightRecorder.create(
                path, RingConfig(size=a.ring), sealer=Sealer(key, fss=ForwardSecureKey(st))
            ) as w:
                for _ in range(a.records):
                    w.record_inference(request_id=RID, model_digest=MD, input_digest=IND,
                                       output_digest=OUTD, state=1, served_by=1, outcome=0,
                                       latency_ns=1, deadline_ns=2)  # fmt: skip
            with LogReader(path) as r:
                plain = r.verify()
                keyed = r.verify(public_key=key.public, fss_seed=FssSeed.load(sd))
            if not (plain.intact and keyed.intact and keyed.seals.authenticated > 0):
                raise SystemExit("the sealed benchmark log does not verify")
            verify["plain"].append(plain.records / plain.seconds)
            verify["keyed"].append(keyed.records / keyed.seconds)
            for p in (path, st, sd):
                os.unlink(p)
            print(f"  repeat {rep + 1}/{a.repeats} done", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def ratio(kind: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[kind], rates["unsealed"], strict=True))

    print(f"\n{'case':<14} {'records/s':>10} {'x unsealed':>11}")
    for kind in CASES:
        print(f"{kind:<14} {statistics.median(rates[kind]):>10,.0f} {ratio(kind):>11.3f}")
    vr = statistics.median(k / p for k, p in zip(verify["keyed"], verify["plain"], strict=True))
    print(f"\nverify plain {statistics.median(verify['plain']):,.0f} rec/s, with pubkey + FSS seed "
          f"{statistics.median(verify['keyed']):,.0f} rec/s (x {vr:.2f})")  # fmt: skip
    for kind in ("ed25519", "fss", "ed25519+fss"):
        verdict = "PASS" if ratio(kind) >= 0.95 else "MISS"
        print(f"target: {kind} / unsealed >= 0.95 (<= 5 % overhead): {ratio(kind):.3f} {verdict}")


if __name__ == "__main__":
    main()
