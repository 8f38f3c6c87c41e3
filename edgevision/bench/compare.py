"""`compare_reports`: is NEW slower (or less accurate) than OLD, beyond noise and beyond a tolerance?

Latency: for each model and configuration present in both reports, the relative change of the median
(and of the p99 when both have enough samples) gets a bootstrap interval: both sample sets are
resampled independently (they come from different processes) ``n_boot`` times. A change is a
**regression** when the interval lies wholly above zero *and* the point estimate exceeds the tolerance;
an **improvement** when it lies wholly below zero and beyond the tolerance; otherwise ``same`` (within
tolerance or not distinguishable from noise). Throughput and accuracy carry no samples in the report:
their changes are listed, and an accuracy drop beyond ``map_tolerance`` is flagged as a regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgevision.bench.report import MIN_P99_SAMPLES, BenchReport

__all__ = ["Change", "Comparison", "bootstrap_rel_change", "compare_reports"]


@dataclass
class Change:
    model: str
    config: str
    metric: str
    old: float | None
    new: float | None
    rel_change: float | None
    ci: list[float] | None
    verdict: str  # regression | improvement | same | not-comparable
    why: str


@dataclass
class Comparison:
    changes: list[Change]
    warnings: list[str] = field(default_factory=list)
    tolerance: float = 0.05
    map_tolerance: float = 0.01

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regression"]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgevision.bench-compare/1", "tolerance": self.tolerance,
                "map_tolerance": self.map_tolerance, "regressions": len(self.regressions),
                "warnings": self.warnings, "changes": [asdict(c) for c in self.changes]}


def bootstrap_rel_change(old: Sequence[float], new: Sequence[float], q: float, n_boot: int,
                         seed: int) -> tuple[float, list[float]]:
    """Relative change of the ``q``-th percentile from ``old`` to ``new`` and its 95% bootstrap interval
    (independent resampling of both sets: they come from different processes)."""
    a, b = np.asarray(old, np.float64), np.asarray(new, np.float64)
    point = float(np.percentile(b, q) / np.percentile(a, q) - 1.0)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, (n_boot, a.size))
    ib = rng.integers(0, b.size, (n_boot, b.size))
    reps = np.percentile(b[ib], q, axis=1) / np.percentile(a[ia], q, axis=1) - 1.0
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return point, [float(lo), float(hi)]


def _verdict(point: float, ci: list[float], tol: float) -> tuple[str, str]:
    if ci[0] > 0 and point > tol:
        return "regression", f"slower by {point:+.1%} (95% CI {ci[0]:+.1%} .. {ci[1]:+.1%}), beyond the {tol:.0%} tolerance"
    if ci[1] < 0 and point < -tol:
        return "improvement", f"faster by {-point:.1%} (95% CI {ci[0]:+.1%} .. {ci[1]:+.1%})"
    if ci[0] <= 0 <= ci[1]:
        return "same", f"{point:+.1%}: the interval {ci[0]:+.1%} .. {ci[1]:+.1%} includes zero (noise)"
    return "same", f"{point:+.1%}: within the {tol:.0%} tolerance"


def _env_warnings(old: BenchReport, new: BenchReport) -> list[str]:
    out = []
    for key, get in (("CPU", lambda e: (e.get("cpu") or {}).get("model")),
                     ("usable cores", lambda e: (e.get("cpu") or {}).get("usable_cores")),
                     ("onnxruntime", lambda e: (e.get("onnxruntime") or {}).get("version")),
                     ("OS", lambda e: e.get("os"))):
        a, b = get(old.env), get(new.env)
        if a != b:
            out.append(f"{key} differs ({a} -> {b}): timings from different boxes or software are not comparable")
    if old.data.get("items_sha256") != new.data.get("items_sha256"):
        out.append("the benchmark images differ: accuracy changes may come from the data, not the model")
    return out


def compare_reports(old: BenchReport, new: BenchReport, *, tolerance: float = 0.05, map_tolerance: float = 0.01,
                    n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Compare two `BenchReport` s model by model (by file name) and configuration by configuration."""
    comp = Comparison([], _env_warnings(old, new), tolerance, map_tolerance)
    old_models = {m.name: m for m in old.models}
    for m in new.models:
        om = old_models.get(m.name)
        if om is None:
            comp.warnings.append(f"{m.name}: not in the old report")
            continue
        if om.sha256 != m.sha256:
            comp.warnings.append(f"{m.name}: the model file changed (sha256 {om.sha256[:12]} -> {m.sha256[:12]})")
        old_cfg = {c.key: c for c in om.configs}
        for c in m.configs:
            oc = old_cfg.get(c.key)
            if oc is None or oc.skipped or c.skipped:
                continue
            for part, a, b in (("pipeline", oc.pipeline_ms, c.pipeline_ms), ("session.run", oc.session_ms, c.session_ms)):
                if not a or not b:
                    continue
                for q, name in ((50, "p50"), (99, "p99")):
                    if q == 99 and min(len(a), len(b)) < MIN_P99_SAMPLES:
                        continue
                    point, ci = bootstrap_rel_change(a, b, q, n_boot, seed)
                    verdict, why = _verdict(point, ci, tolerance)
                    comp.changes.append(Change(m.name, c.key, f"{part} {name} ms", float(np.percentile(a, q)),
                                               float(np.percentile(b, q)), point, ci, verdict, why))
            if oc.throughput_ips and c.throughput_ips:
                rel = c.throughput_ips / oc.throughput_ips - 1.0
                comp.changes.append(Change(m.name, c.key, "throughput images/s", oc.throughput_ips, c.throughput_ips,
                                           rel, None, "same", "one measurement each: listed, not judged"))
        old_acc = {a.provider: a for a in om.accuracy}
        for acc in m.accuracy:
            oa = old_acc.get(acc.provider)
            if oa is None or oa.map50_95 is None or acc.map50_95 is None:
                continue
            diff = acc.map50_95 - oa.map50_95
            bad = diff < -map_tolerance
            comp.changes.append(Change(
                m.name, acc.provider, "mAP50-95", oa.map50_95, acc.map50_95, diff, None,
                "regression" if bad else "same",
                f"{diff:+.4f} absolute" + (f", beyond the {map_tolerance:g} tolerance" if bad else "")))
    if not comp.changes:
        comp.warnings.append("no model and configuration in common: nothing compared")
    return comp
