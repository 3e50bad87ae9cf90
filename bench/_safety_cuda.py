"""The fault matrix's device cells: the model on a GPU, the device faults real.

    python bench/safety_matrix.py --device cuda --runs 2 --process-runs 2 --out DIR

(bench/gpu_checks.sh runs it on the GPU machine). The classes whose fault is the device's:

* ``device_fatal``: a real device-side assert (an index out of bounds inside a CUDA kernel,
  :mod:`vigil.testing`), which poisons every later CUDA call of its process;
* ``oom``: a real CUDA out-of-memory (the caching allocator refuses 1 PiB), which does not.

In process (inline, thread) the model runs in the measuring process's CUDA context, so a
device-side assert would poison every later run: each run of ``device_fatal`` is a fresh
Python process (this file run as a script; ``oom`` runs its runs in one process per cell).
With workers (``process``) the supervisor's process never touches CUDA: the worker's context
is poisoned, the pool replaces the worker with its hot standby, as on CPU. The cells, the
observations and the times are those of bench/_safety.py's ``run_cell``; the rig's input
lives on the device.

With ``--device cpu`` the same harness runs on the CPU with the simulated faults: the check
that this code works where no GPU is (tests/test_safety.py, slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _safety as S

from vigil.schemas import State

BENCH = Path(__file__).resolve().parent
CLASSES = ("device_fatal", "oom")
REAL = {  # the classes' titles when the device is a GPU
    "device_fatal": "a real device-side assert (an index out of bounds in a CUDA kernel)",
    "oom": "a real CUDA out-of-memory (1 PiB asked of the caching allocator)",
}


def child(cls: str, state: str, isolation: str, *, device: str, runs: int, root: str) -> list[Any]:
    """``runs`` runs of one cell in this process, the rig's calls on ``device``."""
    S.GOOD = S.GOOD.to(device)  # every call the rig makes (trip, probes, the fault's call)
    if device.startswith("cuda") and cls == "oom":
        _, trigger, what = S.MODEL_FAULTS["oom"]
        S.MODEL_FAULTS["oom"] = ("oom_real", trigger, what)
    out = []
    name = f"{cls}-{device.replace(':', '')}-{isolation}-{state}-{os.getpid()}"
    with S._rig(Path(root), name, isolation) as rig:
        for _ in range(runs):
            obs, detect, react = S.run_cell(rig, cls, State[state])
            out.append([obs.key(), detect, react])
    return out


def _in_a_fresh_process(
    cls: str, state: State, isolation: str, *, device: str, runs: int, root: Path
) -> list[Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent), str(BENCH)])}
    args = [cls, state.name, isolation, device, str(runs), str(root)]
    done = subprocess.run(
        [sys.executable, str(Path(__file__)), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{args}: exit {done.returncode}\n{done.stderr[-4000:]}")
    return list(json.loads(lines[-1]))


def run_device(
    device: str,
    runs: int,
    process_runs: int,
    root: Path,
    *,
    isolations: tuple[str, ...] = S.ISOLATIONS,
    progress: Callable[[str], None] | None = None,
) -> list[S.Cell]:
    """Every device cell: ``runs`` runs in process (a fresh process per ``device_fatal``
    run), ``process_runs`` with a pool of workers on ``device``."""
    cells: list[S.Cell] = []
    for isolation in isolations:
        if isolation == "process":
            if progress:
                progress(f"{device} process {', '.join(CLASSES)}")
            with S._rig(root, f"device-{device.replace(':', '')}-process", "process", device) as r:
                for cls in CLASSES:
                    cells += [
                        S._run_runs(r, root, cls, s, process_runs, fresh=False) for s in S.STATES
                    ]
            continue
        for cls in CLASSES:
            if progress:
                progress(f"{device} {isolation} {cls}")
            for state in S.STATES:
                cell = S.Cell(cls, state.name, isolation, S.DEADLINE_NS[isolation])
                if cls == "device_fatal":  # the process is poisoned: one run per process
                    got = [
                        r
                        for _ in range(runs)
                        for r in _in_a_fresh_process(
                            cls, state, isolation, device=device, runs=1, root=root
                        )
                    ]
                else:
                    got = _in_a_fresh_process(
                        cls, state, isolation, device=device, runs=runs, root=root
                    )
                for key, detect, react in got:
                    cell.runs += 1
                    cell.observations[key] = cell.observations.get(key, 0) + 1
                    cell.react_ns.append(react)
                    if detect is not None:
                        cell.detected += 1
                        cell.detect_ns.append(detect)
                cells.append(cell)
    return cells


if __name__ == "__main__":
    cls_, state_, isolation_, device_, runs_, root_ = sys.argv[1:7]
    got = child(cls_, state_, isolation_, device=device_, runs=int(runs_), root=root_)
    print(json.dumps(got), flush=True)
    os._exit(0)  # the log is closed; a poisoned CUDA context's teardown may abort the exit
