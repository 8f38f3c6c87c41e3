"""`run_reliability`: the suites on one model (and a reference), the gate, and the reports QA signs.

Outputs in DIR, written whole or not at all: ``reliability.json`` (schema ``edgevision.reliability/1``),
``reliability.md``, ``reliability.html`` (self-contained, inline SVG plots) and ``junit.xml`` (one test
case per gate check and per suite, for CI systems).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevision.core.errors import ConfigError
from edgevision.reliability.gate import Check, Gate, judge_gate, suites_needed
from edgevision.reliability.suites import SuiteResult

__all__ = ["SCHEMA", "SUITES", "ReliabilityReport", "run_reliability"]

log = logging.getLogger(__name__)

SCHEMA = "edgevision.reliability/1"
SUITES = ("soak", "robustness", "determinism", "bad_input", "concurrency")
Progress = Callable[[str, int, int], None]


@dataclass
class ReliabilityReport:
    created: str
    model: dict[str, Any]
    reference: dict[str, Any] | None
    data: dict[str, Any]
    env: dict[str, Any]
    settings: dict[str, Any]
    latency: dict[str, Any]
    accuracy: dict[str, Any]
    suites: dict[str, SuiteResult]
    gate: dict[str, Any]
    checks: list[Check] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "PASS" if all(c.passed for c in self.checks) else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "created": self.created, "verdict": self.verdict, "model": self.model,
                "reference": self.reference, "data": self.data, "env": self.env, "settings": self.settings,
                "latency": self.latency, "accuracy": self.accuracy,
                "suites": {k: v.to_dict() for k, v in self.suites.items()},
                "gate": {**self.gate, "checks": [c.to_dict() for c in self.checks]}}


def _parse_suites(suites: Sequence[str] | None, gate: Gate) -> list[str]:
    import difflib

    if not suites:
        return list(SUITES)
    chosen = []
    for s in suites:
        key = s.strip().replace("-", "_")
        if key not in SUITES:
            close = difflib.get_close_matches(key, SUITES, 1)
            raise ConfigError(f"--suite {s}: unknown suite" + (f" (did you mean '{close[0]}'?)" if close else "")
                              + f"; suites: {', '.join(SUITES)}")
        chosen.append(key)
    missing = sorted(suites_needed(gate) - set(chosen))
    if missing:
        raise ConfigError(f"the gate '{gate.name}' needs the suite(s) {', '.join(missing)}; add them to --suite or "
                          "drop those keys from the gate")
    return chosen


def run_reliability(model: Path | str, data: Path | str, out: Path | str, *, gate: Gate | None = None,
                    reference: Path | str | None = None, suites: Sequence[str] | None = None, split: str = "val",
                    fmt: str = "auto", threads: int | None = None, soak_seconds: float | None = 60.0,
                    soak_count: int | None = None, latency_samples: int = 700,
                    robustness_images: int = 50, corruptions: Sequence[str] | None = None,
                    severities: Sequence[int] = (1, 2, 3, 4, 5), seed: int = 0, overwrite: bool = False,
                    providers: Sequence[str] | str | None = None,
                    progress: Progress | None = None) -> ReliabilityReport:
    """Run the suites on ``model`` (an ONNX file), judge the gate, write the reports to ``out``.

    Raises:
        ConfigError / DatasetError / ModelFormatError / OutputExistsError: bad arguments (one line, before work).
    """
    from edgevision.bench.env import fingerprint, sha256_of
    from edgevision.bench.run import accuracy_and_predictions
    from edgevision.convert import read_dataset
    from edgevision.core.errors import OutputExistsError
    from edgevision.core.io import check_output_clear
    from edgevision.models import in_model_order, split_for_model
    from edgevision.reliability.corruptions import CORRUPTIONS, SEVERITIES
    from edgevision.runtime import Detector, read_metadata

    model, data, out = Path(model), Path(data), Path(out)
    gate = gate or Gate.model_validate({"name": "none"})
    ref = Path(reference) if reference is not None else None
    if model.suffix.lower() != ".onnx":
        raise ConfigError(f"{model}: the reliability suites run ONNX models (what goes on the line); export it "
                          "first with `edgevision export`")
    meta = read_metadata(model)
    from edgevision.runtime.providers import resolve_providers

    chain = resolve_providers(providers) if providers else None  # ConfigError for one this onnxruntime lacks
    label = (chain[0] if chain else "CPUExecutionProvider").removesuffix("ExecutionProvider").lower()
    ref_meta = read_metadata(ref) if ref is not None else None
    if gate.needs_reference() and ref is None:
        raise ConfigError(f"the gate '{gate.name}' judges {', '.join(gate.needs_reference())} against a reference "
                          "model: pass --reference (e.g. the FP32 export of the same weights)")
    if ref_meta is not None and list(ref_meta.names) != list(meta.names):
        raise ConfigError(f"--reference {ref}: its classes {list(ref_meta.names)} differ from the model's "
                          f"{list(meta.names)}")
    chosen = _parse_suites(suites, gate)
    corrs = list(corruptions) if corruptions else list(CORRUPTIONS)
    for c in corrs:
        if c not in CORRUPTIONS:
            from edgevision.core.errors import UnknownNameError

            raise UnknownNameError("corruption", c, CORRUPTIONS)
    if any(s not in SEVERITIES for s in severities):
        raise ConfigError(f"--severities {','.join(map(str, severities))}: expected values from 1 to 5")
    if soak_seconds is None and soak_count is None:
        raise ConfigError("give --soak-seconds or --soak-count")
    if latency_samples < 662:
        raise ConfigError(f"--latency-samples {latency_samples}: a p99 needs at least 662 samples (MLPerf LoadGen)")
    check_output_clear(out, [data], what="--out")  # --overwrite replaces OUT: it must not hold the data
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: already exists; choose another --out or pass --overwrite")
    rr = read_dataset(data, fmt)
    check_output_clear(out, rr.sources, what="--out")
    ds = rr.dataset
    gt_all = split_for_model(ds, split, data, purpose="judge the model on")
    gt = in_model_order(gt_all, list(ds.labels.names), list(meta.names), model=model, data=data)
    images = [Path(r.path) for r in gt_all if r.path is not None]
    limit = gate.rss_growth_mb_per_h_max if gate.rss_growth_mb_per_h_max is not None else 50.0
    steps = ["latency", "accuracy", *chosen]
    done = 0

    def tick(stage: str) -> None:
        nonlocal done
        if progress is not None:
            progress(stage, done, len(steps))
        done += 1

    env = fingerprint()
    t_all = time.perf_counter()
    # latency in clean processes (the model and the reference timed in turn), then accuracy
    tick("latency (a clean process per model, calls interleaved)")
    lat = _interleaved_latency({"model": model, **({"reference": ref} if ref is not None else {})}, images[:100],
                               threads, latency_samples, chain)
    latency = {}
    for k, raw in lat.items():
        from edgevision.bench.report import latency_stats

        latency[k] = {"pipeline": latency_stats(raw["pipeline_ms"]).model_dump(),
                      "session": latency_stats(raw["session_ms"]).model_dump() if raw.get("session_ms") else None,
                      "load_s": raw.get("load_s"), "peak_rss_mb": raw.get("peak_rss_mb"),
                      "throughput_ips": raw.get("throughput_ips")}
    tick("accuracy")
    acc_m, preds_m = accuracy_and_predictions(model, gt, list(meta.names), label, chain, threads, "cpu")
    accuracy: dict[str, Any] = {"model": acc_m.model_dump()}
    costs = _costs(model, ref)
    drop: dict[str, Any] = {}
    if ref is not None:
        from edgevision.core.dataset import LabelMap
        from edgevision.evaluate.bootstrap import match_table, paired_bootstrap

        acc_r, preds_r = accuracy_and_predictions(ref, gt, list(meta.names), label, chain, threads, "cpu")
        accuracy["reference"] = acc_r.model_dump()
        labels = LabelMap(list(meta.names))
        boot = paired_bootstrap(match_table(gt, preds_r, labels, max_dets=100), match_table(gt, preds_m, labels,
                                max_dets=100), metric="map50_95", n_boot=1000, seed=seed)
        drop = {"rel_drop": boot.rel_drop, "rel_drop_ci": list(boot.rel_drop_ci) if boot.rel_drop_ci else None,
                "images": len(gt)}

    for acc in accuracy.values():  # both rates with their exact intervals; the expected cost when priced
        _with_intervals(acc, costs)

    det = Detector(model, providers=chain, threads=threads)
    results: dict[str, SuiteResult] = {}
    scratch = Path(tempfile.mkdtemp(prefix="edgevision-reliability-"))
    try:
        for name in chosen:
            tick(name)
            try:
                results[name] = _run_suite(name, det, model, threads, images, gt, meta, robustness_images, corrs,
                                           severities, seed, soak_seconds, soak_count, limit, scratch, chain)
            except Exception as e:  # noqa: BLE001  a suite that cannot run is reported, the others still run
                log.exception("suite %s failed to run", name)
                results[name] = SuiteResult(name, "error", {}, [f"{e.__class__.__name__}: {' '.join(str(e).split())[:200]}"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    facts = _facts({**latency, "_samples": {k: v["pipeline_ms"] for k, v in lat.items()}}, accuracy, results)
    facts.update({k: v for k, v in drop.items() if k != "rel_drop" or v is not None})
    from edgevision.licences import gate_facts

    facts["licence"] = gate_facts(meta.source)  # the model's licence chain, as its metadata records it
    checks = judge_gate(gate, facts)
    for name, res in results.items():  # a suite that could not run fails the gate whatever its keys
        if res.status == "error":
            checks.append(Check(f"suite:{name}", True, False, False, f"suite {name} could not run: {res.findings[0]}"))
    report = ReliabilityReport(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        model={"path": str(model), "name": model.name, "sha256": sha256_of(model), "precision": meta.precision,
               "size_bytes": model.stat().st_size},
        reference=None if ref is None else {"path": str(ref), "name": ref.name, "sha256": sha256_of(ref),
                                            "precision": ref_meta.precision if ref_meta else None},
        data={"path": str(data), "split": split, "images": len(gt_all)}, env=env,
        settings={"suites": chosen, "threads": threads, "soak_seconds": soak_seconds, "soak_count": soak_count,
                  "latency_samples": latency_samples, "robustness_images": robustness_images, "corruptions": corrs,
                  "severities": list(severities), "seed": seed, "seconds": round(time.perf_counter() - t_all, 1),
                  "providers_requested": chain, "providers": list(det.providers), "provider_fallback": det.fallback},
        latency=latency, accuracy=accuracy, suites=results, gate={**gate.model_dump(), "facts": facts}, checks=checks)
    _write(report, out, overwrite)
    if progress is not None:
        progress("done", len(steps), len(steps))
    return report


def _interleaved_latency(models: dict[str, Path], images: list[Path], threads: int | None,
                         samples: int, providers: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The model alone in a fresh process; with a reference, both in their own processes at once, timed call
    by call in turn (`edgevision.bench.timing.time_interleaved`): a burst of load on a shared box hits both
    alike instead of biasing their ratio."""
    from edgevision.bench.timing import time_in_child, time_interleaved

    if len(models) == 1:
        (key, path), = models.items()
        return {key: time_in_child(path, images, providers=providers, threads=threads, samples=samples, warmup=20,
                                   throughput_images=50)}
    return time_interleaved(dict(models), images, threads=threads, samples=samples, warmup=20, throughput_images=50,
                            providers=providers)


def _run_suite(name: str, det: Any, model: Path, threads: int | None, images: list[Path], gt: list[Any], meta: Any,
               robustness_images: int, corrs: list[str], severities: Sequence[int], seed: int,
               soak_seconds: float | None, soak_count: int | None, limit: float, scratch: Path,
               providers: list[str] | None = None) -> SuiteResult:
    from edgevision.reliability import suites as S
    from edgevision.runtime import Detector

    if name == "soak":
        return S.soak(det, images[:100], seconds=None if soak_count else soak_seconds, count=soak_count,
                      limit_mb_per_h=limit)
    if name == "robustness":
        return S.robustness(_scorer(det, gt[:robustness_images], meta), corrs, severities, seed)
    if name == "determinism":
        return S.determinism(lambda t: Detector(model, providers=providers, threads=t), images[:5], repeats=5,
                             threads=(1, None) if threads in (None, 1) else (1, threads))
    if name == "bad_input":
        return S.bad_input(det, images[0], scratch / "bad-input")
    return S.concurrency(det, images[:12], workers=4, rounds=3)


def _scorer(det: Any, gt: list[Any], meta: Any) -> Callable[[Any], float | None]:
    """``score(transform)``: mAP50-95 of ``det`` on ``gt``'s images, each passed through ``transform``."""
    import cv2

    from edgevision.core.dataset import LabelMap
    from edgevision.evaluate import coco_evaluate

    labels = LabelMap(list(meta.names))
    originals = {r.name: cv2.imread(str(r.path), cv2.IMREAD_COLOR) for r in gt}

    def score(transform: Any) -> float | None:
        preds = []
        for r in gt:
            img = originals[r.name]
            if transform is not None:
                img = transform(img)
            preds.append(det(img, conf=0.001, max_det=100).to_record(r.name, path=r.path, split=r.split))
        return coco_evaluate(gt, preds, labels, max_dets=100).map50_95

    return score


def _costs(model: Path, reference: Path | None) -> dict[str, float] | None:
    """The costs per escaped / falsely rejected part the model's operating points were priced with (else the
    reference's), so that both models are priced alike; None when neither is priced."""
    from edgevision.evaluate.operating import costs_of
    from edgevision.models import operating_points

    for m in (model, reference):
        if m is not None:
            c = costs_of(operating_points(m))
            if c is not None:
                return c
    return None


def _with_intervals(acc: dict[str, Any], costs: dict[str, Any] | None) -> dict[str, Any]:
    """Add to an accuracy dict (`AccuracyResult.model_dump`) ``escape`` and ``false_reject`` (counts, rate and
    Clopper-Pearson 95% bounds, `Rate.to_dict`) and, with ``costs``, ``expected_cost`` (per 1,000 parts, with
    its interval; `edgevision.evaluate.operating.expected_cost`); entries already there are kept."""
    from edgevision.evaluate.operating import expected_cost, rate_of

    for which in ("escape", "false_reject"):
        r = rate_of(acc, which)
        if r is not None and not isinstance(acc.get(which), dict):
            acc[which] = r.to_dict()
    if costs is not None and acc.get("expected_cost") is None:
        cost = expected_cost(acc, costs)  # None when either rate is undefined
        if cost is not None:
            acc["expected_cost"] = cost
    return acc


def _facts(latency: dict[str, Any], accuracy: dict[str, Any], results: dict[str, SuiteResult]) -> dict[str, Any]:
    from edgevision.evaluate.operating import rate_of

    m = accuracy["model"]
    f: dict[str, Any] = {"p99_ms": latency["model"]["pipeline"]["p99"], "map50_95": m["map50_95"],
                         "escape_rate": m["escape_rate"], "false_reject_rate": m["false_reject_rate"]}
    for which in ("escape", "false_reject"):  # the counts (k of n) and 95% bounds, for `bound: upper`
        r = rate_of(m, which)
        if r is not None:
            f[which] = r.to_dict()
    if "reference" in latency:
        rp = latency["reference"]["pipeline"]["p99"]
        f["p99_ratio"] = f["p99_ms"] / rp if rp and f["p99_ms"] is not None else None
        samples = latency.get("_samples", {})
        if f["p99_ratio"] is not None and "model" in samples and "reference" in samples:
            from edgevision.bench.compare import bootstrap_rel_change

            _, ci = bootstrap_rel_change(samples["reference"], samples["model"], 99, 2000, 0)
            f["p99_ratio_ci"] = [1.0 + ci[0], 1.0 + ci[1]]
    if "reference" in accuracy:
        r = accuracy["reference"]["map50_95"]
        f["rel_drop"] = (r - m["map50_95"]) / r if r and m["map50_95"] is not None else None
    if "robustness" in results:
        f["rpc"] = results["robustness"].metrics.get("rpc")
    if "soak" in results:
        sm = results["soak"].metrics
        f["rss_slope"], f["rss_growth"], f["rss_leak"] = (sm.get("rss_slope_mb_per_h"), sm.get("rss_growth_mb"),
                                                          sm.get("leak"))
    if "determinism" in results:
        f["determinism"] = results["determinism"].status
    crashes = 0
    counted = False
    for name, key in (("bad_input", "crashes"), ("concurrency", "wrong"), ("concurrency", "errors"), ("soak", "errors")):
        if name in results and key in results[name].metrics:
            crashes += int(results[name].metrics[key])
            counted = True
    f["crashes"] = crashes if counted else None
    return f


# ------------------------------------------------------------------------------------------------ reports
def _write(report: ReliabilityReport, out: Path, overwrite: bool) -> None:
    from edgevision.core.io import atomic_dir
    from edgevision.reliability.report import html_report, junit_xml, markdown_report

    doc = report.to_dict()
    with atomic_dir(out, overwrite=overwrite) as stage:
        (stage / "reliability.json").write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
        (stage / "reliability.md").write_text(markdown_report(doc), encoding="utf-8")
        (stage / "reliability.html").write_text(html_report(doc), encoding="utf-8")
        (stage / "junit.xml").write_text(junit_xml(doc), encoding="utf-8")
