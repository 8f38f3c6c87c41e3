"""``edgevision line report DB``: what the line decided, from the inspection record.

Parts, OK / NG and the reject rate (with its exact 95% interval) overall, per class (parts with at least one
detection of the class), per source and per hour; unreadable images; the inference time p50 / p99. When
costs per escape and per false reject are known (the line config's ``costs``, or the model's priced
operating points), the expected cost of the parts inspected uses the escape and false-reject rates the
model's operating points were measured with on its validation split (`edgevision.evaluate.operating.expected_cost`:
the same figures as ``edgevision eval`` and the reliability report): the line itself cannot see escapes.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.errors import ConfigError
from edgevision.core.stats import Rate
from edgevision.line.record import Store, is_postgres_url, open_store

__all__ = ["LineReport", "line_report", "write_parts_csv"]


@dataclass
class LineReport:
    """The numbers ``edgevision line report`` prints (see the module doc)."""

    parts: int = 0
    ok: int = 0
    ng: int = 0
    unreadable: int = 0
    first: str | None = None
    last: str | None = None
    per_class: dict[str, int] = field(default_factory=dict)
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    per_hour: dict[str, dict[str, int]] = field(default_factory=dict)
    per_model: dict[str, int] = field(default_factory=dict)
    inference_ms_p50: float | None = None
    inference_ms_p99: float | None = None
    expected_cost: dict[str, Any] | None = None

    @property
    def reject(self) -> Rate:
        return Rate(self.ng, self.parts)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["reject"] = self.reject.to_dict()
        return d


def _open(db: Path | str) -> Store:
    if is_postgres_url(db):
        return open_store(db)
    path = Path(str(db).removeprefix("sqlite:///"))
    if not path.is_file():
        raise ConfigError(f"{path}: no inspection record here (the line's record.db)")
    return open_store(path)


def line_report(db: Path | str, *, since: str | None = None, until: str | None = None,
                costs: dict[str, float] | None = None) -> LineReport:
    """Summarise the record ``db`` (an SQLite file or a PostgreSQL URL: every station's parts; with several
    stations, ``per_source`` is keyed ``STATION/SOURCE``) between ``since`` and ``until`` (ISO-8601 UTC prefixes,
    e.g. ``2026-12-07`` or ``2026-12-07T08``).

    Raises:
        ConfigError: no such database, or it cannot be opened.
    """
    store = _open(db)
    try:
        rep = LineReport()
        ms: list[float] = []
        models: Counter[str] = Counter()
        per_source: dict[tuple[str, str], dict[str, int]] = {}
        for p in store.parts(since, until):
            rep.parts += 1
            rep.ok += p.decision == "OK"
            rep.ng += p.decision == "NG"
            rep.unreadable += p.error is not None
            rep.first = rep.first or p.time
            rep.last = p.time
            for c in p.classes:
                rep.per_class[c] = rep.per_class.get(c, 0) + 1
            src = per_source.setdefault((p.station, p.source), {"parts": 0, "ng": 0})
            src["parts"] += 1
            src["ng"] += p.decision == "NG"
            hour = rep.per_hour.setdefault(p.time[:13], {"parts": 0, "ng": 0})
            hour["parts"] += 1
            hour["ng"] += p.decision == "NG"
            ms.append(p.inference_ms)
            models[p.model_sha256] += 1
        several = len({station for station, _ in per_source}) > 1
        rep.per_source = {f"{st}/{src}" if several else src: v for (st, src), v in per_source.items()}
        rep.per_model = dict(models)
        if ms:
            rep.inference_ms_p50 = float(np.percentile(ms, 50))
            rep.inference_ms_p99 = float(np.percentile(ms, 99))
        rep.expected_cost = _cost(store, models, costs)
        return rep
    finally:
        store.close()


def _cost(store: Store, models: Counter[str], costs: dict[str, float] | None) -> dict[str, Any] | None:
    """Expected cost of the parts each model inspected, at the rates its operating points were measured with."""
    from edgevision.evaluate.operating import costs_of, expected_cost

    total, lo, hi, used = 0.0, 0.0, 0.0, []
    for sha, n in models.items():
        meta = json.loads(store.get_meta(f"model:{sha}") or "{}")
        doc = meta.get("thresholds") or {}
        c = costs or costs_of(doc)
        decisions = doc.get("decisions")
        if not c or not decisions:
            return None
        priced: dict[str, Any] = {"escape": c["escape"], "false_reject": c["false_reject"],
                                  "defect_rate": c.get("defect_rate")}
        e = expected_cost(decisions, priced)
        if e is None:
            return None
        total += e["per_1000_parts"] * n / 1000
        lo += e["lower"] * n / 1000
        hi += e["upper"] * n / 1000
        used.append({"model": meta.get("file"), "sha256": sha, "parts": n, **e})
    return {"total": total, "lower": lo, "upper": hi, "models": used} if used else None


def write_parts_csv(db: Path | str, out: Path | str, *, since: str | None = None, until: str | None = None) -> int:
    """Every recorded part in the window as CSV (one row per part); returns the number of rows."""
    from edgevision.core.io import write_atomic

    store = _open(db)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["seq", "time", "station", "source", "part_id", "serial", "image", "image_sha256", "decision", "defects",
            "classes", "inference_ms", "model", "model_sha256", "error"]
    w.writerow(cols)
    n = 0
    try:
        for p in store.parts(since, until):
            d = p.to_dict()
            d["classes"] = ";".join(f"{k}:{v}" for k, v in p.classes.items())
            w.writerow(["" if d[c] is None else d[c] for c in cols])
            n += 1
    finally:
        store.close()
    write_atomic(out, buf.getvalue())
    return n

