"""A timeline picture of a flight log: state over time, latency of every call by who served
it, and every non-OK outcome, with the transitions marked. Drawn from the log alone."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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


def render(log_path: str | os.PathLike[str], png_path: str | os.PathLike[str], title: str) -> None:
    """Write ``png_path`` from the flight log at ``log_path`` (nothing when it holds no call)."""
    import matplotlib  # noqa: PLC0415 - heavy, and only the demo draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    tl = _read(log_path)
    if not tl.calls:
        return
    end = tl.calls[-1].t
    fig, (ax_state, ax_lat, ax_out) = plt.subplots(
        3, 1, figsize=(12, 7.5), sharex=True, gridspec_kw={"height_ratios": [1, 2.2, 1.3]}
    )
    _draw_states(ax_state, tl, end)
    _draw_latency(ax_lat, tl.calls)
    _draw_outcomes(ax_out, tl.calls, tl.rejected)
    _mark_transitions((ax_state, ax_lat, ax_out), tl.changes, end)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


class _Call(NamedTuple):
    t: float  # seconds since the first record drawn
    latency_ms: float
    served_by: ServedBy
    outcome: Outcome


class _Change(NamedTuple):
    t: float
    to_state: State
    code: str  # "DIA-nnnn"


@dataclass
class _Timeline:
    """What the picture shows, read from the log: the calls (known-answer probes left out),
    the rejected inputs' times, the transitions, and the state before the first of them."""

    calls: list[_Call] = field(default_factory=list)
    rejected: list[float] = field(default_factory=list)
    changes: list[_Change] = field(default_factory=list)
    first_state: State = State.NORMAL


def _read(log_path: str | os.PathLike[str]) -> _Timeline:
    tl = _Timeline()
    t0: int | None = None
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
                if not tl.calls and not tl.changes:
                    tl.first_state = b["state"]
                latency_ms = max(b["latency_ns"], 1) / 1e6
                tl.calls.append(_Call(t, latency_ms, b["served_by"], b["outcome"]))
            elif rec.type is RecordType.REJECTED:
                tl.rejected.append(t)
            else:
                tl.changes.append(_Change(t, b["to_state"], f"DIA-{b['code']:04d}"))
    return tl


def _draw_states(ax: Any, tl: _Timeline, end: float) -> None:
    """The top band: the state over time, one colour each, with its legend."""
    from matplotlib.patches import Rectangle  # noqa: PLC0415

    points = [(0.0, tl.first_state), *[(c.t, c.to_state) for c in tl.changes]]
    for (t, s), nxt in zip(points, [*points[1:], (end, None)], strict=True):
        ax.axvspan(t, nxt[0], color=_STATE_COLOR.get(s, "#999999"), alpha=0.85, lw=0)
    ax.set_yticks([])
    ax.set_ylabel("state")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in _STATE_COLOR.values()]
    ax.legend(
        handles,
        [s.name for s in _STATE_COLOR],
        ncol=4,
        loc="upper right",
        fontsize=8,
        framealpha=0.9,
    )


def _draw_latency(ax: Any, calls: list[_Call]) -> None:
    """The middle band: every call's latency (log scale), coloured by who served it."""
    for served, color in _SERVED_COLOR.items():
        xs = [c.t for c in calls if c.served_by is served]
        if xs:
            ax.scatter(
                xs,
                [c.latency_ms for c in calls if c.served_by is served],
                s=4,
                color=color,
                label=f"{served.name.lower()} ({len(xs)})",
            )
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper right", fontsize=8, markerscale=3)


def _draw_outcomes(ax: Any, calls: list[_Call], rejected: list[float]) -> None:
    """The bottom band: one row per non-OK outcome that occurred, and one for bad inputs."""
    bad = sorted({c.outcome for c in calls if c.outcome is not Outcome.OK}, key=int)
    for row, outcome in enumerate(bad):
        xs = [c.t for c in calls if c.outcome is outcome]
        ax.scatter(xs, [row] * len(xs), s=10, marker="|")
    if rejected:
        ax.scatter(rejected, [len(bad)] * len(rejected), s=10, marker="x", color="#c62828")
    ax.set_yticks(
        range(len(bad) + bool(rejected)),
        [o.name.lower() for o in bad] + (["bad input"] if rejected else []),
        fontsize=8,
    )
    ax.set_xlabel("seconds since the first call")


def _mark_transitions(axes: tuple[Any, ...], changes: list[_Change], end: float) -> None:
    """A line through every band at each transition, its code written in the state band
    (skipping a label that would overlap the one before)."""
    labelled = -1.0
    for t, _, code in changes:
        for ax in axes:
            ax.axvline(t, color="#333333", lw=0.6, alpha=0.5)
        if t - labelled > end / 60:
            axes[0].annotate(
                code,
                (t, 0.5),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=6,
                va="center",
                ha="right",
            )
            labelled = t
