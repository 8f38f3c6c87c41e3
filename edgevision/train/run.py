"""The run folder: one place per training run, laid out the same for every backend.

::

    RUN/
      config.yaml          resolved TrainConfig (rerun with --config RUN/config.yaml)
      dataset.json         dataset content hash, class names, images/objects per split, source
      environment.json     versions, CPU/GPU, threads, command line
      weights/best.pt      best weights by validation mAP50-95; weights/last.pt resumable state
      history.csv          one row per epoch (see HISTORY_COLUMNS)
      curves.png           training curves drawn from history.csv
      metrics.json         COCO metrics of best.pt on the validation split (+ backend's own numbers)
      thresholds.json      per-class operating points (and the rule of each), escape and false-reject rates
      operating_curve.csv  the image-level trade-off on val: escapes against false rejects, with thresholds
      data_stats.json      the val images' brightness / contrast / sharpness and detections at the operating
                           points: the drift reference the export carries to `edgevision line`
      operating_curve.png  the same as a plot, the chosen point marked (with plots: true)
      model_card.md        what was trained on what, how well, under which licences
      backend/             the backend's own files (Ultralytics' save_dir, ...)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HISTORY_COLUMNS", "RunPaths", "append_history", "history_summary", "read_history", "rewrite_history"]

HISTORY_COLUMNS = ("epoch", "time_s", "train_loss", "val_map50", "val_map50_95", "lr")
"""history.csv columns: epoch (1-based), wall seconds since the run started, mean training loss,
validation mAP50 and mAP50-95 (empty when not measured that epoch), learning rate."""


@dataclass(frozen=True)
class RunPaths:
    """Paths inside one run folder (see the module doc)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset.json"

    @property
    def environment(self) -> Path:
        return self.root / "environment.json"

    @property
    def weights(self) -> Path:
        return self.root / "weights"

    @property
    def best(self) -> Path:
        return self.weights / "best.pt"

    @property
    def last(self) -> Path:
        return self.weights / "last.pt"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def thresholds(self) -> Path:
        return self.root / "thresholds.json"

    @property
    def data_stats(self) -> Path:
        return self.root / "data_stats.json"

    @property
    def operating_curve(self) -> Path:
        return self.root / "operating_curve.csv"

    @property
    def operating_plot(self) -> Path:
        return self.root / "operating_curve.png"

    @property
    def model_card(self) -> Path:
        return self.root / "model_card.md"

    @property
    def backend(self) -> Path:
        return self.root / "backend"


def append_history(path: Path, row: dict[str, Any]) -> None:
    """Append one epoch row (keys from HISTORY_COLUMNS; missing ones left empty), header on first write."""
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})


def history_summary(rows: list[dict[str, float | None]]) -> dict[str, Any]:
    """What every backend reports from history.csv: ``epochs_run``, the best epoch by val mAP50-95 and its
    ``best_map50`` / ``best_map50_95`` (None when no epoch was validated), ``train_time_s`` (the last row's)."""
    scored = [r for r in rows if r.get("val_map50_95") is not None]
    best = max(scored, key=lambda r: r["val_map50_95"] or 0.0) if scored else None
    return {
        "epochs_run": len(rows),
        "best_epoch": int(best["epoch"] or 0) if best else None,
        "best_map50": best["val_map50"] if best else None,
        "best_map50_95": best["val_map50_95"] if best else None,
        "train_time_s": round(float(rows[-1]["time_s"] or 0.0), 1) if rows else None,
    }


def read_history(path: Path) -> list[dict[str, float | None]]:
    """Rows of history.csv as floats (None for empty cells); ``[]`` when the file is missing."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]


def rewrite_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace history.csv by ``rows`` atomically (on resume: drop epochs that will be redone).

    An empty ``rows`` removes the file.
    """
    if not rows:
        path.unlink(missing_ok=True)
        return
    import io

    from edgevision.core.io import write_atomic

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else _cell(k, row[k])) for k in HISTORY_COLUMNS})
    write_atomic(path, buf.getvalue())


def _cell(key: str, v: Any) -> Any:
    return int(v) if key == "epoch" else v  # read_history gives floats; the epoch column stays an integer
