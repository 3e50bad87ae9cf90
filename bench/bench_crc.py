"""Cost of the per-record checksums: CRC32C backends and SHA-256 on 256-byte buffers.

Rows:

* ``vigil crc32c``: ``vigil.auditlog.crc32c``, the backend vigil selected at import (normally
  the ``crc32c`` package with SSE4.2 / ARMv8 instructions), on ``bytes`` and on a
  ``memoryview`` slice (what the writer passes: a view of the mmap, no copy);
* ``crcmod (portable)``: ``vigil.auditlog._crc.crc32c_portable``, the fallback vigil uses when
  the hardware package is missing (crcmod's C extension when built, plus a ``bytes()`` copy);
  ``crcmod raw`` is the bare crcmod function without that copy;
* ``sha256``: ``hashlib.sha256(buf).digest()`` (one per record for the chain), for scale;
* ``zlib.crc32``: a different polynomial (not usable for the format), for scale;
* ``len()``: a trivial builtin call: the Python call overhead every row includes.

Each row is ``timeit`` with ``--number`` calls per sample and ``--repeats`` samples; the table
shows the median and the best ns per call, and the ratio of medians to ``vigil crc32c``
(bytes). Timings are per call from Python, so ~40-60 ns of interpreter overhead is in all.

    python bench/bench_crc.py [--quick] [--number 200000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import timeit
import zlib

import crcmod.predefined

from vigil.auditlog import CRC_BACKEND, crc32c
from vigil.auditlog._crc import crc32c_portable

SIZE = 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few calls, 3 samples")
    ap.add_argument("--number", type=int, default=200_000, help="calls per sample")
    ap.add_argument("--repeats", type=int, default=7, help="samples per row")
    a = ap.parse_args()
    if a.quick:
        a.number, a.repeats = 20_000, 3

    data = random.Random(1).randbytes(SIZE)
    arena = bytearray(4096)
    arena[1000 : 1000 + SIZE] = data
    view = memoryview(arena)
    crcmod_raw = crcmod.predefined.mkCrcFun("crc-32c")
    extension = getattr(sys.modules.get("crcmod.crcmod"), "_usingExtension", "unknown")

    # Not timing assertions: all CRC32C rows must compute the same function.
    ref = crc32c(data)
    for name, value in (
        ("crc32c(memoryview)", crc32c(view[1000 : 1000 + SIZE])),
        ("crc32c_portable", crc32c_portable(data)),
        ("crcmod", crcmod_raw(data)),
    ):
        if value != ref:
            raise SystemExit(f"{name} disagrees: {value:#010x} != {ref:#010x}")
    if crc32c(b"123456789") != 0xE3069283:
        raise SystemExit("vigil crc32c fails the CRC32C check value")

    rows = {
        "vigil crc32c (bytes)": lambda: crc32c(data),
        "vigil crc32c (memoryview)": lambda: crc32c(view[1000:1256]),
        "crcmod (portable, vigil)": lambda: crc32c_portable(data),
        "crcmod raw (no copy)": lambda: crcmod_raw(data),
        "sha256 digest": lambda: hashlib.sha256(data).digest(),
        "zlib.crc32 (other poly)": lambda: zlib.crc32(data),
        "len() (call overhead)": lambda: len(data),
    }
    print(
        f"checksums of {SIZE}-byte buffers: {a.repeats} samples x {a.number} calls; "
        f"vigil backend: {CRC_BACKEND}; crcmod C extension: {extension}"
    )
    results: dict[str, list[float]] = {}
    for _ in range(a.repeats):  # interleave rows so that drift hits them alike
        for name, fn in rows.items():
            t = timeit.Timer(fn).timeit(a.number)
            results.setdefault(name, []).append(t / a.number * 1e9)
    base = statistics.median(results["vigil crc32c (bytes)"])
    print(f"\n{'function':<27} {'median ns':>10} {'best ns':>9} {'MB/s':>8} {'x vigil':>8}")
    for name, samples in results.items():
        med = statistics.median(samples)
        mbs = "-" if name.startswith("len") else f"{SIZE / med * 1e3:.0f}"
        print(f"{name:<27} {med:>10.0f} {min(samples):>9.0f} {mbs:>8} {med / base:>8.2f}")
    lam = statistics.median(results["len() (call overhead)"])
    hw = base - lam
    port = statistics.median(results["crcmod (portable, vigil)"]) - lam
    sha = statistics.median(results["sha256 digest"]) - lam
    print(
        f"\nnet of call overhead: vigil crc32c {hw:.0f} ns, crcmod portable {port:.0f} ns "
        f"({port / max(hw, 1):.1f}x), sha256 {sha:.0f} ns ({sha / max(hw, 1):.1f}x)"
    )


if __name__ == "__main__":
    main()
