"""`run_bench`: time and score one or more models on a dataset split; write JSON, markdown and HTML."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgevision.bench.report import (
    AccuracyResult,
    BenchReport,
    ConfigResult,
    ExpectedCost,
    ModelResult,
    RateResult,
    html_report,
    latency_stats,
    markdown_report,
)
from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError
from edgevision.models import LOW_CONF

__all__ = ["LOW_CONF", "Progress", "accuracy_result", "run_bench"]

log = logging.getLogger(__name__)

MAX_DETS = 100
TIMING_IMAGES = 100
"""Most distinct images cycled through by the timing loops (they stay in the page cache)."""

Progress = Callable[[str, int, int], None]


def _predict(model: Path, gt: list[ImageRecord], providers: list[str] | None, threads: int | None,
             device: str) -> list[ImageRecord]:
    from edgevision.models import open_predictor, predict_records, resolve_model

    onnx = resolve_model(model).kind == "onnx"  # providers are onnxruntime's: a checkpoint runs on --device
    pred = open_predictor(model, device=device, threads=threads, providers=providers if onnx else None)
    return predict_records(pred, gt, conf=LOW_CONF, max_det=MAX_DETS)


def _accuracy(model: Path, gt: list[ImageRecord], names: list[str], provider: str, providers: list[str] | None,
              threads: int | None, device: str) -> AccuracyResult:
    return accuracy_and_predictions(model, gt, names, provider, providers, threads, device)[0]


def accuracy_and_predictions(model: Path, gt: list[ImageRecord], names: list[str], provider: str,
                             providers: list[str] | None, threads: int | None,
                             device: str) -> tuple[AccuracyResult, list[ImageRecord]]:
    """COCO metrics and decisions of ``model`` on ``gt`` (class ids in the model's order), and its predictions
    at `LOW_CONF` (for a paired comparison with another model on the same images)."""
    from edgevision.evaluate import evaluate
    from edgevision.models import operating_points
    from edgevision.runtime.metadata import DEFAULT_CONF

    labels = LabelMap(names)
    operating = operating_points(model)
    preds = _predict(model, gt, providers, threads, device)
    rep = evaluate(gt, preds, labels, conf=DEFAULT_CONF, operating=operating, max_dets=MAX_DETS)
    c = rep.coco
    return accuracy_result(provider, len(gt), c, rep.decisions, operating), preds


def _operating_text(operating: Any) -> str:
    """Where the decisions' thresholds come from, in words."""
    from edgevision.evaluate.operating import costs_of

    if operating is None:
        from edgevision.runtime.metadata import DEFAULT_CONF

        return f"conf {DEFAULT_CONF:g} (the model has no operating points)"
    costs = costs_of(operating)
    if costs is not None:
        return (f"operating points (priced: escape {costs['escape']:g}, false reject {costs['false_reject']:g} "
                "per part)")
    if operating.value is not None:
        return f"operating points ({operating.target} >= {operating.value:g})"
    return f"operating points ({operating.target})"


def accuracy_result(provider: str, images: int, coco: Any, decisions: dict[str, Any],
                    operating: Any = None) -> AccuracyResult:
    """An `AccuracyResult` from COCO metrics and `image_decisions` at ``operating`` (an `OperatingPoints` or
    None): the rates with their counts and exact 95% intervals, and the expected cost per 1,000 parts when
    the operating points were priced (taken from ``decisions``, else computed from the costs they carry)."""
    from edgevision.evaluate.operating import costs_of, expected_cost, rate_of

    d = decisions
    esc, fr = rate_of(d, "escape"), rate_of(d, "false_reject")
    cost = d.get("expected_cost")
    costs = costs_of(operating)
    if cost is None and costs is not None:
        cost = expected_cost(d, costs)
    return AccuracyResult(provider=provider, images=images, map50_95=coco.map50_95, map50=coco.map50,
                          map75=coco.map75, per_class_ap50_95={k: v["ap50_95"] for k, v in coco.per_class.items()},
                          thresholds=_operating_text(operating),
                          escape_rate=d["escape_rate"], false_reject_rate=d["false_reject_rate"],
                          escapes=int(d["escapes"]), defective_images=int(d["defective_images"]),
                          false_rejects=int(d["false_rejects"]), defect_free_images=int(d["defect_free_images"]),
                          escape=RateResult.model_validate(esc.to_dict()) if esc is not None else None,
                          false_reject=RateResult.model_validate(fr.to_dict()) if fr is not None else None,
                          expected_cost=ExpectedCost(**cost) if cost else None)


def _provider_sets(providers: Sequence[str] | None) -> list[tuple[str, list[str] | None]]:
    """``[(label, onnxruntime provider list)]``: each named provider with CPU as its fallback."""
    from edgevision.runtime.providers import resolve_providers

    if not providers:
        best = resolve_providers(None)
        return [(best[0].removesuffix("ExecutionProvider").lower(), None)]
    out: list[tuple[str, list[str] | None]] = []
    for p in providers:
        full = resolve_providers([p])[0]  # ConfigError for one this onnxruntime lacks
        chain = [full] if full == "CPUExecutionProvider" else [full, "CPUExecutionProvider"]
        out.append((full.removesuffix("ExecutionProvider").lower(), chain))
    return out


def run_bench(models: Sequence[Path | str], data: Path | str, out: Path | str, *, split: str = "val",
              fmt: str = "auto", providers: Sequence[str] | None = None, threads: Sequence[int | None] = (None,),
              batches: Sequence[int] = (1,), samples: int = 700, warmup: int = 20, throughput_images: int = 200,
              accuracy: bool = True, device: str = "cpu", overwrite: bool = False,
              progress: Progress | None = None) -> BenchReport:
    """Benchmark ``models`` on ``data``'s ``split``; write ``bench.json``, ``bench.md`` and ``bench.html`` to ``out``.

    Every model x provider x threads x batch configuration is timed in its own fresh process
    (`edgevision.bench.timing`); accuracy (COCO metrics, escape / false-reject rates at the model's
    operating points) is computed once per model and provider. ``out`` is written whole or not at all.

    Raises:
        ConfigError / DatasetError / ModelFormatError: bad arguments, models or data (one line, before any work).
    """
    import hashlib

    from edgevision.bench.env import fingerprint, sha256_of
    from edgevision.bench.timing import time_in_child
    from edgevision.convert import read_dataset
    from edgevision.core.errors import OutputExistsError
    from edgevision.core.io import check_output_clear
    from edgevision.models import in_model_order, model_info, split_for_model

    paths, data, out = [Path(m) for m in models], Path(data), Path(out)
    if not paths:
        raise ConfigError("give at least one MODEL to benchmark")
    for p in paths:
        if not p.exists():
            raise ConfigError(f"{p}: model not found; give an .onnx file, a .pt checkpoint or a run folder")
    if len({p.name for p in paths}) != len(paths):
        raise ConfigError("two models share a file name; the report names models by file name: rename one")
    if samples < 10:
        raise ConfigError(f"--samples {samples}: expected at least 10 (a p99 needs 662)")
    if any(t is not None and t < 1 for t in threads) or any(b < 1 for b in batches):
        raise ConfigError("--threads and --batch take positive integers, e.g. --threads 1,2 --batch 1,4")
    check_output_clear(out, [data], what="--out")  # --overwrite replaces OUT: it must not hold the data
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: already exists; choose another --out or pass --overwrite")
    sets = _provider_sets(providers)
    meta = {p: model_info(p, device=device) for p in paths}
    rr = read_dataset(data, fmt)
    check_output_clear(out, rr.sources, what="--out")
    ds = rr.dataset
    gt_all = split_for_model(ds, split, data, purpose="benchmark on")
    gts = {p: in_model_order(gt_all, list(ds.labels.names), meta[p].names, model=p, data=data) for p in paths}
    images = [Path(r.path) for r in gt_all[:TIMING_IMAGES] if r.path is not None]
    env = fingerprint()

    total = len(paths) * len(sets) * len(threads) * len(batches) + (len(paths) * len(sets) if accuracy else 0)
    done = 0
    results = []
    for p in paths:
        names, kind, precision = meta[p].names, meta[p].kind, meta[p].precision
        configs = []
        for label, chain in sets:
            for t in threads:
                for b in batches:
                    if progress is not None:
                        progress(f"timing {p.name} ({label}, threads {t or 'all'}, batch {b})", done, total)
                    raw = time_in_child(
                        p, images, providers=chain, threads=t, batch=b, samples=samples, warmup=warmup,
                        throughput_images=throughput_images, device=device)
                    done += 1
                    pipe, sess = raw.get("pipeline_ms") or [], raw.get("session_ms") or []
                    configs.append(ConfigResult(
                        provider=label, providers_used=list(raw.get("providers") or []), threads=t, batch=b,
                        skipped=raw.get("skipped"), load_s=raw.get("load_s"),
                        pipeline=latency_stats(pipe) if pipe else None, session=latency_stats(sess) if sess else None,
                        throughput_ips=raw.get("throughput_ips"), throughput_images=raw.get("throughput_images"),
                        peak_rss_mb=raw.get("peak_rss_mb"), torch_in_process=raw.get("torch_in_process"),
                        pipeline_ms=[round(v, 4) for v in pipe],
                        session_ms=[round(v, 4) for v in sess]))
        acc = []
        if accuracy:
            for label, chain in sets:
                if progress is not None:
                    progress(f"scoring {p.name} ({label}) on {len(gt_all)} images", done, total)
                acc.append(_accuracy(p, gts[p], names, label, chain, max(t or 0 for t in threads) or None, device))
                done += 1
        results.append(ModelResult(name=p.name, path=str(p), kind=kind, precision=precision, sha256=sha256_of(p),
                                   size_bytes=sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*"))
                                                  if f.is_file()), configs=configs, accuracy=acc))
    if progress is not None:
        progress("done", total, total)
    report = BenchReport(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), env=env,
        data={"path": str(data), "split": split, "images": len(gt_all), "timing_images": len(images),
              "items_sha256": hashlib.sha256("\n".join(r.name for r in gt_all).encode()).hexdigest()},
        settings={"samples": samples, "warmup": warmup, "throughput_images": throughput_images,
                  "threads": [t for t in threads], "batches": list(batches), "providers": [s[0] for s in sets],
                  "device": device, "accuracy_conf": LOW_CONF, "max_dets": MAX_DETS},
        models=results)
    _write(report, out, overwrite)
    return report


def _write(report: BenchReport, out: Path, overwrite: bool) -> None:
    import json

    from edgevision.core.io import atomic_dir

    with atomic_dir(out, overwrite=overwrite) as stage:
        (stage / "bench.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
        (stage / "bench.md").write_text(markdown_report(report), encoding="utf-8")
        (stage / "bench.html").write_text(html_report(report), encoding="utf-8")
