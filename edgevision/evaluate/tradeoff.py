"""The image-level trade-off curve (`edgevision.evaluate.operating.tradeoff_curve`) as a CSV, a short table
and a plot: what a split lets the line achieve, escape rate against false-reject rate, with the chosen point.

The plot uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch, the bundled
DejaVu font: nothing is downloaded) and is written atomically.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["curve_rows", "plot_tradeoff", "write_tradeoff_csv"]

_COLUMNS = ("escapes", "defective_images", "escape_rate", "escape_upper", "false_rejects", "defect_free_images",
            "false_reject_rate", "false_reject_upper")


def curve_rows(curve: Sequence[Mapping[str, Any]], max_rows: int = 8,
               chosen: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]:
    """At most ``max_rows`` points of ``curve`` spread evenly from the fewest escapes to the fewest false rejects
    (both ends kept), plus the point matching ``chosen`` decisions (same escapes and false rejects) if any."""
    if len(curve) <= max_rows:
        rows = list(curve)
    else:
        step = (len(curve) - 1) / (max_rows - 1)
        rows = [curve[round(i * step)] for i in range(max_rows)]
    if chosen is not None:
        hit = [p for p in curve if p["escapes"] == chosen.get("escapes") and
               p["false_rejects"] == chosen.get("false_rejects")]
        if hit and hit[0] not in rows:
            rows = sorted([*rows, hit[0]], key=lambda p: p["escapes"])
    return rows


def write_tradeoff_csv(curve: Sequence[Mapping[str, Any]], path: Path | str) -> Path:
    """One row per curve point: counts, rates, 95% upper bounds, then one threshold column per class."""
    from edgevision.core.io import write_atomic

    names = list(curve[0]["thresholds"]) if curve else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*_COLUMNS, *(f"threshold_{n}" for n in names)])
    for p in curve:
        w.writerow([*("" if p.get(c) is None else p[c] for c in _COLUMNS),
                    *(f"{p['thresholds'][n]:.6g}" for n in names)])
    return write_atomic(path, buf.getvalue())


def plot_tradeoff(curve: Sequence[Mapping[str, Any]], path: Path | str, *, chosen: Mapping[str, Any] | None = None,
                  title: str | None = None) -> Path | None:
    """Escape rate (x) against false-reject rate (y) along the curve, the 95% upper bounds as whiskers, the
    chosen decisions (an `image_decisions` dict) marked. None (logged) without matplotlib or points."""
    if not curve:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: trade-off curve not drawn (pip install 'edgevision[plots]')")
        return None
    from edgevision.core.io import write_atomic

    x = [p["escape_rate"] for p in curve]
    y = [p["false_reject_rate"] for p in curve]
    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.step(x, y, where="post", color="tab:blue", alpha=0.4)
    ax.errorbar(x, y, xerr=[[0] * len(x), [p["escape_upper"] - p["escape_rate"] for p in curve]],
                yerr=[[0] * len(y), [p["false_reject_upper"] - p["false_reject_rate"] for p in curve]],
                fmt="o", ms=4, color="tab:blue", ecolor="tab:blue", elinewidth=0.6, alpha=0.8,
                label="achievable (whiskers: 95% upper bounds)")
    if chosen is not None and chosen.get("escape_rate") is not None and chosen.get("false_reject_rate") is not None:
        ax.plot([chosen["escape_rate"]], [chosen["false_reject_rate"]], marker="*", ms=14, color="tab:red",
                linestyle="none", label="operating points")
    ax.set_xlabel(f"escape rate (defective images accepted, of {curve[0]['defective_images']})")
    ax.set_ylabel(f"false-reject rate (good images rejected, of {curve[0]['defect_free_images']})")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "image-level trade-off", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_atomic(path, buf.getvalue())
