"""A timeline picture of a flight log: state over time, latency of every call by who served
it, and every non-OK outcome, with the transitions marked. Drawn from the log alone."""

from __future__ import annotations

import os
from typing import Any

from vigil.auditlog import LogReader
from vigil.schemas import CallFlags, Outcome, RecordType, ServedBy, State

_LEVEL = {State.SAFE_STOP: 0, State.DEGRADED: 1, State.RECOVERING: 2, State.NORMAL: 3}
_STATE_COLOR = {
    State.NORMAL: "#2e7d32",
    State.RECOVERING: "#42a5f5",
    State.DEGRADED: "#ef6c00",
    State.SAFE_STOP: "#c62828",
}
_SERVED_COLOR = {
    ServedBy.PRIMARY: "#1565c0",
    ServedBy.FALLBACK: "#ef6c00",
    ServedBy.LAST_GOOD: "#8e24aa",
    ServedBy.CONSTANT: "#6d4c41",
    ServedBy.NONE: "#c62828",
}


# Past ruff's size limits: to split (issue 14).
def render(log_path: str | os.PathLike[str], png_path: str | os.PathLike[str], title: str) -> None:  # noqa: PLR0912, PLR0915
    """Write ``png_path`` from the flight log at ``log_path``."""
    import matplotlib  # noqa: PLC0415 - heavy, and only the demo draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Rectangle  # noqa: PLC0415

    calls: list[tuple[float, float, ServedBy, Outcome]] = []
    rejected: list[float] = []
    changes: list[tuple[float, State, str]] = []
    t0: int | None = None
    first_state = State.NORMAL
    with LogReader(log_path) as reader:
        for rec in reader.records(
            types=(RecordType.INFERENCE, RecordType.TRANSITION, RecordType.REJECTED)
        ):
            if t0 is None:
                t0 = rec.mono_ns
            t = (rec.mono_ns - t0) / 1e9
            b: dict[str, Any] = rec.body
            if rec.type is RecordType.INFERENCE:
                if b["flags"] & CallFlags.KNOWN_ANSWER:
                    continue
                if not calls and not changes:
                    first_state = b["state"]
                calls.append((t, max(b["latency_ns"], 1) / 1e6, b["served_by"], b["outcome"]))
            elif rec.type is RecordType.REJECTED:
                rejected.append(t)
            else:
                changes.append((t, b["to_state"], f"DIA-{b['code']:04d}"))
    if not calls:
        return
    end = calls[-1][0]
    fig, (ax_state, ax_lat, ax_out) = plt.subplots(
        3, 1, figsize=(12, 7.5), sharex=True, gridspec_kw={"height_ratios": [1, 2.2, 1.3]}
    )
    # state over time
    points = [(0.0, first_state), *[(t, s) for t, s, _ in changes]]
    for (t, s), nxt in zip(points, [*points[1:], (end, None)], strict=True):
        ax_state.axvspan(t, nxt[0], color=_STATE_COLOR.get(s, "#999999"), alpha=0.85, lw=0)
    ax_state.set_yticks([])
    ax_state.set_ylabel("state")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in _STATE_COLOR.values()]
    ax_state.legend(
        handles,
        [s.name for s in _STATE_COLOR],
        ncol=4,
        loc="upper right",
        fontsize=8,
        framealpha=0.9,
    )
    # latency by who served
    for served, color in _SERVED_COLOR.items():
        xs = [c[0] for c in calls if c[2] is served]
        if xs:
            ax_lat.scatter(
                xs,
                [c[1] for c in calls if c[2] is served],
                s=4,
                color=color,
                label=f"{served.name.lower()} ({len(xs)})",
            )
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.legend(loc="upper right", fontsize=8, markerscale=3)
    # what went wrong
    bad = sorted({c[3] for c in calls if c[3] not in (Outcome.OK,)}, key=int)
    for row, outcome in enumerate(bad):
        xs = [c[0] for c in calls if c[3] is outcome]
        ax_out.scatter(xs, [row] * len(xs), s=10, marker="|")
    if rejected:
        ax_out.scatter(rejected, [len(bad)] * len(rejected), s=10, marker="x", color="#c62828")
    ax_out.set_yticks(
        range(len(bad) + bool(rejected)),
        [o.name.lower() for o in bad] + (["bad input"] if rejected else []),
        fontsize=8,
    )
    ax_out.set_xlabel("seconds since the first call")
    labelled = -1.0
    for t, _, code in changes:
        for ax in (ax_state, ax_lat, ax_out):
            ax.axvline(t, color="#333333", lw=0.6, alpha=0.5)
        if t - labelled > end / 60:  # skip labels that would overlap the previous one
            ax_state.annotate(
                code,
                (t, 0.5),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=6,
                va="center",
                ha="right",
            )
            labelled = t
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
