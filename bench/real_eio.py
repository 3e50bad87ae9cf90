"""The log_eio cells of the fault matrix with a *real* EIO from the kernel (needs root).

    sudo python bench/real_eio.py --runs 20 [--write]

Each run mounts a fresh ext4 file system on a loop device, puts the supervisor's log on it,
drives the supervisor (bench/_safety.py's rig: inline or thread isolation) into NORMAL,
DEGRADED or RECOVERING, serves one call, then shuts the file system down
(``EXT4_IOC_SHUTDOWN``, bench/_storage_faults.py): every later ``fdatasync``/``msync`` of the
log fails with EIO in the kernel's own paths, as when the disk under it fails. Under ``batch``
durability one more record is appended and the group commit must meet the EIO; under
``always`` the next call's own sync meets it. Measured, per cell, from the shutdown:
*detection* (the writer holds the failure: DIA-3041; under ``always`` that is the next call's
own sync, so detection and reaction coincide) and *safe reaction* (the next call is
refused, DIA-4012, without an answer released unrecorded), p50/p99/max in ms.

What it must show (and what ``--write`` puts into docs/SAFETY.md, section ``real-eio``):
every run detected (runs/runs), the code pair ``LOG_SYNC_FAILED -> LOG_UNWRITABLE``, no
answer served after the shutdown, and the process alive (it prints its table at the end).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

import _safety as S  # noqa: E402
import _storage_faults as SF  # noqa: E402

from vigil.auditlog import FlightRecorder  # noqa: E402
from vigil.schemas import State  # noqa: E402

DOC = ROOT / "docs" / "SAFETY.md"


def one_run(
    workdir: str, durability: str, isolation: str, state: State
) -> tuple[str, int | None, int]:
    """(codes, detection ns or None, safe reaction ns) of one run."""
    with SF.real_eio_filesystem(workdir) as (mnt, shutdown):
        log = FlightRecorder.create(
            f"{mnt}/log.vigil", S.RING, durability=durability, clock=S.ShiftClock()
        )
        rig = S.Rig(Path(mnt), "", isolation, None, log=log)
        try:
            rig.to_state(state)
            rig.infer(S.GOOD)
            assert rig.sup.log.wait_durable(rig.head(), 10)
            shutdown()
            t0 = time.monotonic_ns()  # the disk has failed: every sync from now on is EIO
            if durability == "batch":
                rig.sup.log.annotate("bench", "one more record to sync")
                found = rig.sup.log.wait_failed(10)
                detect = time.monotonic_ns() - t0 if found else None
            code, _, served = rig.infer(S.GOOD)
            react = time.monotonic_ns() - t0
            if durability == "always":  # the call's own sync met it
                detect = react if rig.sup.log.failed is not None else None
            first = rig.sup.log.failed
        finally:
            rig.close()
            log.close()
    assert served == "NONE", served  # refused: nothing answered after the failure
    return f"{first.diagnostic.name if first else '-'} -> {code}", detect, react


def _ms(values: list[int]) -> str:
    q = S.quantiles(values)
    return "—" if q is None else " / ".join(f"{v:.2f}" for v in q)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--write", action="store_true", help="rewrite SAFETY.md's real-eio section")
    args = ap.parse_args(argv)
    why = SF.real_eio_available()
    if why is not None:
        print(f"real_eio: cannot run here: {why}", file=sys.stderr)
        return 2
    rows = [
        "| durability | state | isolation | detection -> reaction | detected "
        "| detection ms p50/p99/max | safe reaction ms p50/p99/max |",
        "|---|---|---|---|---|---|---|",
    ]
    t = time.monotonic()
    ok = True
    for durability in ("batch", "always"):
        for isolation in ("inline", "thread"):
            for state in S.STATES:
                codes: set[str] = set()
                detect: list[int] = []
                react: list[int] = []
                for _ in range(args.runs):
                    with tempfile.TemporaryDirectory(prefix="vigil-eio-") as d:
                        code, found, took = one_run(d, durability, isolation, state)
                    codes.add(code)
                    react.append(took)
                    if found is not None:
                        detect.append(found)
                ok &= codes == {"LOG_SYNC_FAILED -> LOG_UNWRITABLE"} and len(detect) == args.runs
                rows.append(
                    f"| {durability} | {state.name} | {isolation} | {', '.join(sorted(codes))} "
                    f"| {len(detect)}/{args.runs} | {_ms(detect)} | {_ms(react)} |"
                )
    table = "\n".join(rows)
    head = (
        f"`python bench/real_eio.py --runs {args.runs}` as root on {platform.machine()}, "
        f"Linux {platform.release()}, {time.strftime('%Y-%m-%d')} ({time.monotonic() - t:.0f} s)"
        ": ext4 on a loop device, shut down under the writer (EXT4_IOC_SHUTDOWN). Times from "
        "the shutdown.\n\n"
    )
    print(head + table)
    if args.write:
        import safety_matrix  # only with --write

        text = DOC.read_text("utf-8")
        DOC.write_text(safety_matrix.replace_section(text, "real-eio", head + table), "utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
