"""The benchmark report: a versioned JSON document (`BenchReport`, schema ``edgevision.bench/1``), its
markdown summary and a self-contained HTML page with inline SVG plots (no scripts, no network, no
matplotlib: it opens on any box).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgevision.core.stats import Rate

__all__ = ["MIN_P99_SAMPLES", "SCHEMA", "AccuracyResult", "BenchReport", "ConfigResult", "ExpectedCost", "LatencyStats",
           "RateResult", "cost_text", "html_table", "svg_lines", "ModelResult", "html_report", "latency_stats", "markdown_report"]

SCHEMA = "edgevision.bench/1"
MIN_P99_SAMPLES = 662
"""MLPerf LoadGen's minimum for a 99th percentile with 99% confidence and 0.5% margin (single stream)."""


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyStats(_Closed):
    """Milliseconds per call. ``p99`` is None below `MIN_P99_SAMPLES` samples (``p99_note`` says why)."""

    n: int
    mean: float
    min: float
    p50: float
    p90: float
    p99: float | None
    max: float
    p99_note: str | None = None


def latency_stats(ms: Sequence[float]) -> LatencyStats:
    a = np.asarray(ms, np.float64)
    n = int(a.size)
    p99 = float(np.percentile(a, 99)) if n >= MIN_P99_SAMPLES else None
    note = None if p99 is not None else f"{n} samples; a p99 needs at least {MIN_P99_SAMPLES} (MLPerf LoadGen)"
    return LatencyStats(n=n, mean=float(a.mean()), min=float(a.min()), p50=float(np.percentile(a, 50)),
                        p90=float(np.percentile(a, 90)), p99=p99, max=float(a.max()), p99_note=note)


class ConfigResult(_Closed):
    """One timing configuration of one model, measured in its own process.

    ``pipeline`` / ``session``: single-stream latency per call (one image, or one batch of ``batch``);
    ``pipeline_ms`` / ``session_ms``: the raw samples (for CDFs and `edgevision bench compare`).
    """

    provider: str
    providers_used: list[str] = []
    threads: int | None
    batch: int
    skipped: str | None = None
    load_s: float | None = None
    pipeline: LatencyStats | None = None
    session: LatencyStats | None = None
    throughput_ips: float | None = None
    throughput_images: int | None = None
    peak_rss_mb: float | None = None
    torch_in_process: bool | None = None
    pipeline_ms: list[float] = []
    session_ms: list[float] = []

    @property
    def key(self) -> str:
        return f"{self.provider}/threads={self.threads or 'all'}/batch={self.batch}"


class RateResult(_Closed):
    """A rate with its exact (Clopper-Pearson) interval: ``k`` of ``n`` images (`edgevision.core.stats.Rate.to_dict`);
    ``rate``, ``lower`` and ``upper`` are None when ``n`` is 0."""

    k: int = Field(ge=0)
    n: int = Field(ge=0)
    rate: float | None = Field(ge=0, le=1)
    lower: float | None = Field(ge=0, le=1)
    upper: float | None = Field(ge=0, le=1)
    level: float = Field(gt=0, lt=1)


class ExpectedCost(_Closed):
    """The expected cost per 1,000 parts at priced operating points (`edgevision.evaluate.operating.expected_cost`):
    ``lower`` / ``upper`` from both rates' interval bounds; the costs are per part; ``defect_rate_from`` is
    ``split`` (the benchmark split's share of defective images) or ``given``."""

    per_1000_parts: float = Field(ge=0)
    lower: float = Field(ge=0)
    upper: float = Field(ge=0)
    cost_escape: float = Field(gt=0)
    cost_false_reject: float = Field(gt=0)
    defect_rate: float = Field(ge=0, le=1)
    defect_rate_from: Literal["split", "given"]


class AccuracyResult(_Closed):
    """COCO metrics on the benchmark split and the image-level decisions at the model's operating points.

    ``escape`` / ``false_reject``: the two rates with their counts and 95% intervals (absent in reports written
    before they were stored: `rate` rebuilds them from the counts); ``expected_cost``: per 1,000 parts, when the
    model's operating points were priced.
    """

    provider: str
    images: int
    map50_95: float | None
    map50: float | None
    map75: float | None
    per_class_ap50_95: dict[str, float | None]
    thresholds: str
    escape_rate: float | None
    false_reject_rate: float | None
    escapes: int
    defective_images: int
    false_rejects: int
    defect_free_images: int
    escape: RateResult | None = None
    false_reject: RateResult | None = None
    expected_cost: ExpectedCost | None = None

    def rate(self, which: str) -> Rate:
        """The escape (``which="escape"``) or false-reject (``"false_reject"``) `Rate`, from the stored interval's
        counts or, in older reports, from ``escapes`` / ``defective_images`` (``false_rejects`` / ``defect_free_images``)."""
        if which not in ("escape", "false_reject"):
            raise ValueError(f"rate: expected escape or false_reject, got {which!r}")
        stored = self.escape if which == "escape" else self.false_reject
        if stored is not None:
            return Rate(stored.k, stored.n, stored.level)
        return (Rate(self.escapes, self.defective_images) if which == "escape"
                else Rate(self.false_rejects, self.defect_free_images))


class ModelResult(_Closed):
    name: str
    path: str
    kind: str
    precision: str | None
    sha256: str
    size_bytes: int
    configs: list[ConfigResult]
    accuracy: list[AccuracyResult] = []


class BenchReport(_Closed):
    """``edgevision bench`` output (``bench.json``)."""

    schema_: str = SCHEMA
    created: str
    env: dict[str, Any]
    data: dict[str, Any]
    settings: dict[str, Any]
    models: list[ModelResult]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["schema"] = d.pop("schema_")
        return {"schema": d.pop("schema"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchReport:
        d = dict(d)
        d["schema_"] = d.pop("schema", None)
        return cls.model_validate(d)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        s = cls.model_json_schema(by_alias=False)
        props = s["properties"]
        props["schema"] = {"const": SCHEMA, "title": "Schema"}
        del props["schema_"]
        s["required"] = ["schema", *[r for r in s.get("required", []) if r != "schema_"]]
        s["$id"] = "https://edgevision.dev/schemas/bench-1.json"
        s["title"] = "EdgeVision benchmark report (edgevision.bench/1)"
        return s


# ------------------------------------------------------------------------------------------------ markdown
def _f(v: float | None, d: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def _rows(r: BenchReport) -> list[dict[str, str]]:
    rows = []
    for m in r.models:
        for c in m.configs:
            p, s = c.pipeline, c.session
            rows.append({
                "model": m.name, "provider": c.provider, "threads": str(c.threads or "all"), "batch": str(c.batch),
                "p50": _f(p.p50) if p else "-", "p90": _f(p.p90) if p else "-",
                "p99": _f(p.p99) if p and p.p99 is not None else "-", "max": _f(p.max) if p else "-",
                "mean": _f(p.mean) if p else "-", "run p50": _f(s.p50) if s else "-",
                "images/s": _f(c.throughput_ips, 1), "load s": _f(c.load_s, 2), "RSS MB": _f(c.peak_rss_mb, 0),
                "note": c.skipped or (p.p99_note or "" if p else ""),
            })
    return rows


def cost_text(c: ExpectedCost | None, costs: bool = True) -> str:
    """``12.5 (95% CI 3.1-48.2; escape 50, false reject 2 per part, defect rate 0.1 of the split)``, or ``-``;
    without ``costs``, ``12.5 (95% CI 3.1-48.2; defect rate 0.1 of the split)``."""
    if c is None:
        return "-"
    priced = f"escape {c.cost_escape:g}, false reject {c.cost_false_reject:g} per part, " if costs else ""
    return (f"{c.per_1000_parts:.4g} (95% CI {c.lower:.4g}-{c.upper:.4g}; {priced}defect rate {c.defect_rate:.3g}"
            f"{' of the split' if c.defect_rate_from == 'split' else ''})")


_ACC_NOTE = ("Escape rate: defective images accepted; false-reject rate: defect-free images rejected; both at the "
             "model's operating points, with their counts and exact (Clopper-Pearson) 95% intervals.")


def _acc_rows(r: BenchReport) -> list[dict[str, str]]:
    priced = any(a.expected_cost is not None for m in r.models for a in m.accuracy)
    rows = []
    for m in r.models:
        for a in m.accuracy:
            row = {"model": m.name, "provider": a.provider, "size MB": _f(m.size_bytes / 1e6, 2),
                   "precision": m.precision or "-", "mAP50-95": _f(a.map50_95, 3), "mAP50": _f(a.map50, 3),
                   "escape rate": a.rate("escape").text(), "false-reject rate": a.rate("false_reject").text()}
            if priced:
                row["expected cost per 1,000 parts"] = cost_text(a.expected_cost)
            row["thresholds"] = a.thresholds
            rows.append(row)
    return rows


def markdown_report(r: BenchReport) -> str:
    e = r.env
    cpu = e.get("cpu", {})
    lines = [f"# EdgeVision benchmark ({r.created})", "",
             f"**Box:** {cpu.get('model')} ({cpu.get('usable_cores')} usable cores; flags "
             f"{', '.join(cpu.get('flags', [])) or 'none listed'}), {e.get('ram_gb')} GiB RAM, {e.get('os')}, "
             f"Python {e.get('python')}, onnxruntime {(e.get('onnxruntime') or {}).get('version', '-')}, "
             f"EdgeVision {e.get('edgevision')}.",
             f"**Data:** {r.data.get('path')} split `{r.data.get('split')}`, {r.data.get('images')} images.",
             f"**Method:** each configuration in its own process; {r.settings.get('warmup')} warm-up calls, then "
             f"{r.settings.get('samples')} single-stream calls (whole pipeline: image file to detections) "
             f"alternating with {r.settings.get('samples')} bare `session.run` calls; throughput over "
             f"{r.settings.get('throughput_images')} images. Latency in ms per call (one batch).", "",
             "## Latency and throughput", ""]
    rows = _rows(r)
    if rows:
        keys = list(rows[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(row[k] for k in keys) + " |" for row in rows]
    acc = _acc_rows(r)
    if acc:
        keys = list(acc[0])
        lines += ["", "## Accuracy", "", _ACC_NOTE, "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(row[k] for k in keys) + " |" for row in acc]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ HTML + SVG
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2) if start + i * step <= hi * 1.0001]


def _svg_frame(title: str, xlabel: str, ylabel: str, xr: tuple[float, float], yr: tuple[float, float],
               body: list[str], legend: list[tuple[str, str]], kind: str) -> str:
    w, h, left, right, top, bottom = 720, 380, 64, 200, 34, 48
    pw, ph = w - left - right, h - top - bottom

    def sx(x: float) -> float:
        return left + (x - xr[0]) / ((xr[1] - xr[0]) or 1) * pw

    def sy(y: float) -> float:
        return top + ph - (y - yr[0]) / ((yr[1] - yr[0]) or 1) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" data-kind="{kind}" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(title)}">',
           f'<text x="{w / 2 - right / 2}" y="20" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in _nice_ticks(*xr):
        out.append(f'<line x1="{sx(t):.1f}" y1="{top + ph}" x2="{sx(t):.1f}" y2="{top + ph + 4}" stroke="#666"/>'
                   f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="11">{t:g}</text>')
    for t in _nice_ticks(*yr):
        out.append(f'<line x1="{left - 4}" y1="{sy(t):.1f}" x2="{left}" y2="{sy(t):.1f}" stroke="#666"/>'
                   f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" font-size="11">{t:g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 8}" text-anchor="middle" font-size="12">{html.escape(xlabel)}</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 14 {top + ph / 2})">{html.escape(ylabel)}</text>')
    out += body
    for i, (label, colour) in enumerate(legend):
        y = top + 10 + i * 18
        out.append(f'<rect x="{w - right + 12}" y="{y - 8}" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{w - right + 30}" y="{y + 2}" font-size="11">{html.escape(label[:30])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def latency_cdf_svg(series: Sequence[tuple[str, Sequence[float]]]) -> str:
    """Empirical CDF of per-call latency, one polyline per configuration."""
    vals = [np.sort(np.asarray(v, np.float64)) for _, v in series if len(v)]
    hi = max((float(np.percentile(v, 99.9)) for v in vals), default=1.0)
    lo = min((float(v[0]) for v in vals), default=0.0)
    xr = (max(0.0, lo * 0.95), hi * 1.05)
    w, h, left, right, top, bottom = 720, 380, 64, 200, 34, 48
    pw, ph = w - left - right, h - top - bottom
    lines, legend = [], []
    for i, (label, v) in enumerate(series):
        if not len(v):
            continue
        a = np.sort(np.asarray(v, np.float64))
        ys = np.arange(1, a.size + 1) / a.size
        step = max(1, a.size // 400)
        pts = " ".join(f"{left + (min(x, xr[1]) - xr[0]) / (xr[1] - xr[0]) * pw:.1f},{top + ph - y * ph:.1f}"
                       for x, y in zip(a[::step], ys[::step]))
        colour = _COLOURS[i % len(_COLOURS)]
        lines.append(f'<polyline class="series" data-label="{html.escape(label)}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.6" points="{pts}"/>')
        legend.append((label, colour))
    return _svg_frame("Latency CDF (whole pipeline, per call)", "ms", "fraction of calls <= x", xr, (0.0, 1.0),
                      lines, legend, "latency-cdf")


def accuracy_latency_svg(points: list[tuple[str, float, float]]) -> str:
    """mAP50-95 against median latency, one point per model (and provider)."""
    xs = [p[1] for p in points] or [0.0, 1.0]
    ys = [p[2] for p in points] or [0.0, 1.0]
    xr = (0.0, max(xs) * 1.15 or 1.0)
    yr = (max(0.0, min(ys) - 0.05), min(1.0, max(ys) + 0.05))
    w, h, left, right, top, bottom = 720, 380, 64, 200, 34, 48
    pw, ph = w - left - right, h - top - bottom
    body, legend = [], []
    for i, (label, x, y) in enumerate(points):
        colour = _COLOURS[i % len(_COLOURS)]
        cx = left + (x - xr[0]) / ((xr[1] - xr[0]) or 1) * pw
        cy = top + ph - (y - yr[0]) / ((yr[1] - yr[0]) or 1) * ph
        body.append(f'<circle class="point" data-label="{html.escape(label)}" cx="{cx:.1f}" cy="{cy:.1f}" r="6" '
                    f'fill="{colour}"><title>{html.escape(label)}: {x:.2f} ms, mAP50-95 {y:.3f}</title></circle>')
        legend.append((label, colour))
    return _svg_frame("Accuracy vs latency", "median latency, ms (whole pipeline, batch 1)", "mAP50-95", xr, yr,
                      body, legend, "accuracy-latency")


def _table(rows: list[dict[str, str]], cls: str) -> str:
    if not rows:
        return "<p>none</p>"
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r[k])}</td>" for k in keys) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def html_report(r: BenchReport) -> str:
    """One self-contained HTML page: environment, latency / throughput table, accuracy table, two plots."""
    series = [(f"{m.name} {c.key}", c.pipeline_ms) for m in r.models for c in m.configs
              if not c.skipped and c.pipeline_ms]
    points = []
    for m in r.models:
        for a in m.accuracy:
            c = next((c for c in m.configs if c.provider == a.provider and c.batch == 1 and c.pipeline), None)
            if c is not None and c.pipeline is not None and a.map50_95 is not None:
                points.append((f"{m.name} ({a.provider})", c.pipeline.p50, a.map50_95))
    e = r.env
    env_rows = [{"item": k, "value": str(v)} for k, v in (
        ("CPU", (e.get("cpu") or {}).get("model")), ("CPU flags", ", ".join((e.get("cpu") or {}).get("flags", []))),
        ("cores (usable)", (e.get("cpu") or {}).get("usable_cores")), ("RAM GiB", e.get("ram_gb")),
        ("OS", e.get("os")), ("Python", e.get("python")),
        ("onnxruntime", (e.get("onnxruntime") or {}).get("version")),
        ("providers available", ", ".join((e.get("onnxruntime") or {}).get("providers", []))),
        ("EdgeVision", e.get("edgevision")), ("load average at start", e.get("load_average")),
        ("data", f"{r.data.get('path')} (split {r.data.get('split')}, {r.data.get('images')} images)"))]
    model_rows = [{"model": m.name, "kind": m.kind, "precision": m.precision or "-", "size MB": _f(m.size_bytes / 1e6),
                   "sha256": m.sha256[:16]} for m in r.models]
    css = ("body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 20px}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}th{background:#f3f3f3}"
           "td:first-child,th:first-child{text-align:left}h1{font-size:22px}h2{font-size:17px;margin-top:28px}")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>EdgeVision benchmark {r.created}"
             f"</title><style>{css}</style></head><body>",
             f"<h1>EdgeVision benchmark</h1><p>{html.escape(r.created)} &middot; schema {SCHEMA}</p>",
             "<h2>Environment</h2>", _table(env_rows, "env"),
             "<h2>Models</h2>", _table(model_rows, "models"),
             "<h2>Latency and throughput</h2>",
             f"<p>Milliseconds per call; each configuration timed in its own process; p99 only with at least "
             f"{MIN_P99_SAMPLES} samples.</p>", _table(_rows(r), "latency"),
             "<h2>Accuracy</h2>", f"<p>{html.escape(_ACC_NOTE)}</p>", _table(_acc_rows(r), "accuracy"),
             "<h2>Plots</h2>", latency_cdf_svg(series), accuracy_latency_svg(points),
             "</body></html>"]
    return "\n".join(parts)



def svg_lines(title: str, xlabel: str, ylabel: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
              kind: str, y_from_zero: bool = True) -> str:
    """A line plot (one polyline with dots per series) as inline SVG; ``kind`` names it for readers and tests."""
    xs_all = [float(x) for _, xs, _ in series for x in xs]
    ys_all = [float(y) for _, _, ys in series for y in ys if y is not None]
    xr = (min(xs_all, default=0.0), max(xs_all, default=1.0))
    if xr[1] <= xr[0]:
        xr = (xr[0] - 1.0, xr[0] + 1.0)
    lo, hi = min(ys_all, default=0.0), max(ys_all, default=1.0)
    yr = (0.0 if y_from_zero else lo - 0.05 * (hi - lo or 1.0), hi + 0.08 * (hi - lo or 1.0) if hi > 0 else 1.0)
    w, h, left, right, top, bottom = 720, 380, 64, 200, 34, 48
    pw, ph = w - left - right, h - top - bottom
    body, legend = [], []
    for i, (label, xs, ys) in enumerate(series):
        colour = _COLOURS[i % len(_COLOURS)]
        pts = [(left + (float(x) - xr[0]) / (xr[1] - xr[0]) * pw, top + ph - (float(y) - yr[0]) / (yr[1] - yr[0]) * ph)
               for x, y in zip(xs, ys) if y is not None]
        if not pts:
            continue
        body.append(f'<polyline class="series" data-label="{html.escape(label)}" fill="none" stroke="{colour}" '
                    f'stroke-width="1.6" points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in pts)}"/>')
        body += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>' for px, py in pts]
        legend.append((label, colour))
    return _svg_frame(title, xlabel, ylabel, xr, yr, body, legend, kind)


def html_table(rows: list[dict[str, str]], cls: str) -> str:
    """An HTML table of string cells (escaped), class ``cls``."""
    return _table(rows, cls)
