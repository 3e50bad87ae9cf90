"""``vigil fleet report --png``: the fallback rate per device and day, as a picture."""

from __future__ import annotations

import os
from typing import Any

from vigil.errors import FleetError
from vigil.fleet._report import REPORTS, run_sql


def fallback_png(dest: str | os.PathLike[str], out: str) -> None:
    """Draw the ``fallback`` report (one line per device and model) into ``out``.

    Raises:
        FleetError: DIA-8009, ``out`` cannot be written.
    """
    import matplotlib  # noqa: PLC0415 - only for the picture

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    data = run_sql(dest, REPORTS["fallback"][1])
    cols = data["columns"]
    series: dict[tuple[Any, Any], list[tuple[Any, float]]] = {}
    for row in data["rows"]:
        r = dict(zip(cols, row, strict=True))
        series.setdefault((r["device"], r["model"]), []).append((r["day"], r["fallback_rate"]))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for (device, model), points in sorted(series.items()):
        days, rates = zip(*sorted(points), strict=True)
        ax.plot(days, rates, marker="o", label=f"{device} / {model}")
    ax.set_ylabel("fallback rate (not served by the primary)")
    ax.set_ylim(0, 1)
    ax.set_title("fallback rate per device and model, verified records")
    if series:
        ax.legend(fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except OSError as exc:
        raise FleetError(f"{out}: cannot write the picture: {exc.strerror}") from None
    finally:
        plt.close(fig)
