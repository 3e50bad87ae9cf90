"""Run every benchmark (five of the flight recorder, seven of the supervisor and its service,
one of fleet export) one after another.

Each benchmark runs as its own subprocess (a fresh interpreter, so one cannot warm or pollute
the next), with ``--quick`` and ``--dir`` passed through. The exit status is non-zero only when
a benchmark crashed; missed performance targets are printed (PASS/MISS), never fatal.

    python bench/run_all.py [--quick] [--dir DIR] [--only append,crc]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = (
    "crc",
    "append",
    "verify",
    "recover",
    "seal",
    "supervisor",
    "model",
    "protocol",
    "worker",
    "pool",
    "export",
    "gpu_shaped",
    "inline_parts",
    "limits",
    "digest",
    "wakeups",
    "wait",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fast smoke run of every benchmark")
    ap.add_argument("--dir", help="scratch directory for the logs (default: system temp dir)")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHES))
    a = ap.parse_args()
    chosen = a.only.split(",") if a.only else list(BENCHES)
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.platform()}"
    )
    failed = []
    for name in chosen:
        cmd = [sys.executable, os.path.join(HERE, f"bench_{name}.py")]
        cmd += ["--quick"] if a.quick else []
        cmd += ["--dir", a.dir] if a.dir and name not in ("crc", "worker") else []
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"=== {name}: exit {rc}, {time.perf_counter() - t0:.1f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nFAILED to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
