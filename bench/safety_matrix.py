"""Regenerate the safety case's evidence: run the fault matrix, rewrite docs/SAFETY.md.

    python bench/safety_matrix.py --runs 50 --process-runs 2 --out /tmp/vigil-safety

runs every cell of the fault matrix (bench/_safety.py) ``--runs`` times in inline and thread
isolation and ``--process-runs`` times with worker processes (each lost worker costs a standby
restart of seconds), then writes into ``--out``: ``matrix.json`` (every cell, every measured
time) and ``timeline-<class>.png`` (the flight log of the class's thread rig, or of the process
column for the worker classes, drawn by ``vigil.cli._timeline``). It rewrites the generated
sections of docs/SAFETY.md (between ``<!-- name:begin -->`` and ``<!-- name:end -->``) and the
committed expectations tests/safety/matrix.json that tests/test_safety.py compares against.
``--doc-only`` re-renders the requirements table alone (after an edit of requirements.toml).

``--device cuda`` (on a GPU machine: bench/gpu_checks.sh) runs only the device classes
(device_fatal, oom) with the model on the GPU and the faults real (bench/_safety_cuda.py),
and writes ``matrix-cuda.md`` and ``matrix-cuda.json`` into ``--out``: the section
``matrix-cuda`` of docs/SAFETY.md, which ``--cuda-section DIR/matrix-cuda.md`` pastes in
(the GPU machine's copy of the repository does not come back). ``--device cpu`` runs the same
harness on the CPU (simulated faults), for a check where no GPU is.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

import _requirements  # noqa: E402  (tests/_requirements.py: the requirements' loader)
import _safety as S  # noqa: E402
import _safety_more as M  # noqa: E402

DOC = ROOT / "docs" / "SAFETY.md"
EXPECTED = ROOT / "tests" / "safety" / "matrix.json"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section ``name`` (between its markers) replaced by ``body``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC}: no section {begin} ... {end}")
    return pattern.sub(lambda _: f"{begin}\n{body.rstrip()}\n{end}", text)


def section(text: str, name: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def requirements_table() -> str:
    rows = [
        "| id | requirement | mechanism | codes | default run |",
        "|---|---|---|---|---|",
    ]
    for r in _requirements.load().values():
        mech = "<br>".join(f"`{m}`" for m in r.mechanism)
        codes = ", ".join(r.codes) or "—"
        runs = "yes" if r.runs == "default" else "slow only"
        rows.append(
            f"| {r.id} | **{r.title}.** {r.text} ({r.design}) | {mech} | {codes} | {runs} |"
        )
    return "\n".join(rows)


def _ms(q: tuple[float, float, float] | None) -> str:
    return "—" if q is None else " / ".join(f"{v:.2f}" for v in q)


def matrix_tables(cells: list[S.Cell], titles: dict[str, str] | None = None) -> str:
    out = []
    for cls in S.CLASSES:
        mine = [c for c in cells if c.cls == cls]
        if not mine:
            continue
        desc = (
            (titles or {}).get(cls) or S.MODEL_FAULTS[cls][2]
            if cls in S.MODEL_FAULTS
            else S.WORKER_FAULTS.get(cls) or M.EXTRA[cls]
        )
        out += [
            f"#### {cls}: {desc}",
            "",
            "| state | isolation | detection | outcome | served by | reaction (transition) "
            "| evidence | detected | detection ms p50/p99/max | safe reaction ms p50/p99/max "
            "| deadline ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in mine:
            if c.na:
                out.append(f"| {c.state} | {c.isolation} | n/a: {c.na} |||||||||")
                continue
            o = c.observation
            if o is None:
                out.append(f"| {c.state} | {c.isolation} | UNSTABLE: {c.observations} |||||||||")
                continue
            idle = c.state == "DEGRADED" and cls in S._IDLE_IN_DEGRADED
            code = "not activated: the primary is not called in DEGRADED" if idle else o["code"]
            out.append(
                f"| {c.state} | {c.isolation} | {code} | {o['outcome']} | {o['served_by']} "
                f"| {', '.join(o['transitions']) or 'none'} | {', '.join(o['evidence'])} "
                f"| {'—' if idle else f'{c.detected}/{c.runs}'} | {_ms(S.quantiles(c.detect_ns))} "
                f"| {_ms(S.quantiles(c.react_ns))} | {c.deadline_ns / 1e6:.0f} |"
            )
        out += _spans_table(mine)
        out.append("")
    return "\n".join(out)


def _spans_table(cells: list[S.Cell]) -> list[str]:
    """The further spans some cells measure (ms from the fault: see each class's notes)."""
    rows = [
        f"| {c.state} | {c.isolation} | {name} | {_ms(S.quantiles(ns))} |"
        for c in cells
        for name, ns in c.spans.items()
    ]
    if not rows:
        return []
    head = ["", "| state | isolation | further span | ms p50/p99/max |", "|---|---|---|---|"]
    return head + rows


def keep_unstable(new: dict[str, Any], old: dict[str, Any], cells: list[S.Cell]) -> dict[str, Any]:
    """``new``, where every cell the committed table ``old`` holds as unstable stays unstable
    with every observation seen (this run's counts; 0 for those only seen before): one quiet
    run does not make a cell that varies with the host's load stable again."""
    runs = {f"{c.cls}/{c.state}/{c.isolation}": c.runs for c in cells}
    out = dict(new)
    for key, was in old.items():
        now = new.get(key)
        if not (isinstance(was, dict) and "unstable" in was and isinstance(now, dict)):
            continue
        if "na" in now:
            continue
        if "unstable" in now:
            seen = dict(now["unstable"])
        else:  # one observation in every run of this one
            seen = {json.dumps(now, sort_keys=True): runs.get(key, 0)}
        merged = {k: seen.get(k, 0) for k in {*was["unstable"], *seen}}
        if len(merged) > 1:
            out[key] = {"unstable": merged}
    return out


def unstable_list(expected: dict[str, Any], cells: list[S.Cell]) -> str:
    """Every cell the committed table accepts in more than one way, with this run's counts."""
    runs = {f"{c.cls}/{c.state}/{c.isolation}": c.runs for c in cells}
    rows = []
    for key, want in sorted(expected.items()):
        if not (isinstance(want, dict) and "unstable" in want):
            continue
        seen = "; ".join(
            f"{_short(json.loads(obs))}: {n}/{runs.get(key, 0)}"
            for obs, n in sorted(want["unstable"].items(), key=lambda kv: -kv[1])
        )
        rows.append(f"* `{key}`: {seen}")
    return "\n".join(rows) or "* none"


def _short(obs: dict[str, Any]) -> str:
    transitions = ", ".join(obs["transitions"]) or "no transition"
    return f"{obs['code']}, {obs['outcome']} by {obs['served_by']} ({transitions})"


def coverage_table(cells: list[S.Cell]) -> str:
    rows = [
        "| fault class | injected (activated) | detected | diagnostic coverage |",
        "|---|---|---|---|",
    ]
    for cls in S.CLASSES:
        active = [
            c
            for c in cells
            if c.cls == cls
            and not c.na
            and not (c.state == "DEGRADED" and cls in S._IDLE_IN_DEGRADED)
        ]
        if not active:
            continue
        n = sum(c.runs for c in active)
        k = sum(c.detected for c in active)
        rows.append(f"| {cls} | {n} | {k} | {100 * k / n:.1f} % |")
    return "\n".join(rows)


def device_cells(args: argparse.Namespace) -> int:
    """``--device``: the device classes only, into ``--out`` (not into SAFETY.md)."""
    import _safety_cuda as C  # only with --device

    t0 = time.monotonic()
    isolations = tuple(args.isolations.split(","))
    cells = C.run_device(
        args.device, args.runs, args.process_runs, args.out, isolations=isolations,
        progress=lambda m: print(m, flush=True),
    )  # fmt: skip
    took = time.monotonic() - t0
    try:
        import torch

        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    except (RuntimeError, AssertionError):
        name = "?"
    header = (
        f"Measured on {machine()}, {name}: `python bench/safety_matrix.py --device "
        f"{args.device} --runs {args.runs} --process-runs {args.process_runs}` ({took:.0f} s; "
        "in process every device_fatal run is a fresh Python process). Times as in the matrix "
        "above.\n\n"
    )
    body = header + matrix_tables(cells, C.REAL if args.device.startswith("cuda") else None)
    tag = args.device.replace(":", "")
    (args.out / f"matrix-{tag}.md").write_text(body + "\n", "utf-8")
    results = [
        {**c.__dict__, "observation": c.observation, "observations": c.observations} for c in cells
    ]
    (args.out / f"matrix-{tag}.json").write_text(json.dumps(results, indent=1), "utf-8")
    print(body)
    unstable = [f"{c.cls}/{c.state}/{c.isolation}" for c in cells if not c.na and not c.observation]
    print(f"{len(cells)} cells in {took:.0f} s into {args.out}; unstable: {unstable or 'none'}")
    return 1 if unstable else 0


def machine() -> str:
    return (
        f"{platform.machine()}, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; {time.strftime('%Y-%m-%d')}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="runs per inline/thread cell")
    ap.add_argument("--process-runs", type=int, default=3, help="runs per process cell")
    ap.add_argument("--out", type=Path, default=Path("/tmp/vigil-safety"))
    ap.add_argument("--isolations", default="inline,thread,process")
    ap.add_argument("--doc-only", action="store_true", help="re-render the requirements only")
    ap.add_argument("--device", help="only the device classes, the model on DEVICE (cuda)")
    ap.add_argument("--cuda-section", type=Path, help="paste a matrix-cuda.md into SAFETY.md")
    args = ap.parse_args(argv)
    text = DOC.read_text("utf-8")
    text = replace_section(text, "requirements", requirements_table())
    if args.cuda_section is not None:
        text = replace_section(text, "matrix-cuda", args.cuda_section.read_text("utf-8"))
    if args.doc_only or args.cuda_section is not None:
        DOC.write_text(text, "utf-8")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device is not None:
        return device_cells(args)
    cells: list[S.Cell] = []
    showcase: dict[str, Path] = {}
    t0 = time.monotonic()
    for iso in args.isolations.split(","):
        n = args.process_runs if iso == "process" else args.runs
        got, logs = S.run_matrix(
            n,
            isolations=(iso,),
            root=args.out,
            progress=lambda m: print(m, flush=True),
            heavy_runs=args.process_runs,
        )
        cells += got
        showcase.update({k: v for k, v in logs.items() if k not in showcase or iso == "thread"})
    took = time.monotonic() - t0
    from vigil.cli._timeline import render

    for cls, log in showcase.items():
        render(log, args.out / f"timeline-{cls}.png", f"fault class {cls}")
    results = [
        {**c.__dict__, "observation": c.observation, "observations": c.observations} for c in cells
    ]
    (args.out / "matrix.json").write_text(json.dumps(results, indent=1), "utf-8")
    old = json.loads(EXPECTED.read_text("utf-8")) if EXPECTED.exists() else {}
    expected = keep_unstable(S.expected_table(cells), old, cells)
    EXPECTED.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    header = (
        f"Measured on {machine()} (CPU only: 2 shared cores, noisy; CUDA cells are filled by "
        f"bench/gpu_checks.sh when a GPU is available). `python bench/safety_matrix.py "
        f"--runs {args.runs} --process-runs {args.process_runs}` ({took:.0f} s; the classes "
        "that start a process per run -- tampered_load, worker_start, supervisor_kill -- run "
        "--process-runs times in every column; standby_start too). Times are "
        "milliseconds of CLOCK_MONOTONIC from the start of the faulty call: *detection* to the "
        "append of the record that names the fault, *safe reaction* to the moment the caller "
        "holds a checked answer or a refusal (its record and transition already appended).\n\n"
    )
    text = replace_section(text, "matrix", header + matrix_tables(cells))
    text = replace_section(text, "coverage", coverage_table(cells))
    text = replace_section(text, "unstable", unstable_list(expected, cells))
    DOC.write_text(text, "utf-8")
    print(f"{len(cells)} cells in {took:.0f} s; {DOC}, {EXPECTED}, {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
