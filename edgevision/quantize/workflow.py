"""`quantize_checked`: quantize, then judge the INT8 model against FP32 on the val split before writing it.

Accuracy is judged honestly: FP32 and INT8 are both run through the runtime on the evaluation split
(never the calibration images), scored by the COCO evaluator (pycocotools), and the relative
mAP50-95 drop gets a paired bootstrap confidence interval over images (`edgevision.evaluate.bootstrap`).
The gate **fails** when the relative drop exceeds ``max_drop`` **and** its interval excludes zero;
a drop above the budget whose interval includes zero cannot be told from noise on that many images
and passes, with a note saying so. The image-level escape and false-reject rates at the model's
operating points are compared too (reported, not gated), each with its count and exact (Clopper-Pearson)
95% interval, and the expected cost per 1,000 parts when the operating points were priced.

``accuracy_aware``: when the full INT8 model fails the gate, the sensitivity of every Conv layer is
measured (`edgevision.quantize.sensitivity`) and the most sensitive layers are kept float, 1, 2, 4,
... of them, until the gate passes; the report lists which layers and why. The stopping point is
chosen on the evaluation split itself, which the report states.

The INT8 model is written only when the gate passes (or accuracy is not evaluated); the JSON and
markdown reports are always written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError
from edgevision.models import LOW_CONF

log = logging.getLogger(__name__)

__all__ = ["SCHEMA", "QuantizeReport", "cost_text", "judge", "quantize_checked", "rate_text"]

SCHEMA = "edgevision.quantize-report/1"
MAX_DETS = 100
"""Detections per image and class, as `edgevision eval` and COCO use."""

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: a stage starts with ``done == 0``."""


@dataclass
class ModelScore:
    """One model's numbers on the evaluation split.

    Attributes:
        path: the file (a temporary one for a candidate INT8 model); precision; size_bytes;
        map50_95, map50: COCO metrics (None when undefined); decisions: image-level escape / false-reject
        counts and rates at the operating points, ``escape`` / ``false_reject`` (each rate with its 95% interval,
        `edgevision.core.stats.Rate.to_dict`) and, when priced, ``expected_cost``; latency: see
        `edgevision.quantize.latency.measure`, or None.
    """

    path: str
    precision: str
    size_bytes: int
    map50_95: float | None = None
    map50: float | None = None
    decisions: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] | None = None


@dataclass
class Step:
    """One build of the accuracy-aware search: ``layers`` kept float and how the gate judged it."""

    layers: list[str]
    map50_95: float | None
    rel_drop: float | None
    rel_drop_ci: list[float] | None
    passed: bool
    reason: str


@dataclass
class QuantizeReport:
    """Everything `quantize_checked` did and measured (schema ``edgevision.quantize-report/1``).

    ``verdict``: ``pass``, ``fail`` or ``not-evaluated``; ``written``: the INT8 model is at ``out``.
    """

    model: str
    out: str
    verdict: str
    reason: str
    written: bool
    target: str
    host: str
    quantization: dict[str, Any]
    checks: dict[str, str]
    warnings: list[str]
    split: str | None = None
    images: int = 0
    max_drop: float | None = None
    operating_points: str = ""
    fp32: ModelScore | None = None
    int8: ModelScore | None = None
    bootstrap: dict[str, Any] | None = None
    decision_changes: dict[str, list[str]] = field(default_factory=dict)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """A short human summary of the report."""
        return _markdown(self)


def judge(rel_drop: float | None, ci: Sequence[float] | None, max_drop: float, n_images: int) -> tuple[bool, str]:
    """The gate: ``(passed, reason)`` for a relative mAP drop, its interval and the budget ``max_drop``."""
    if rel_drop is None:
        return False, "the FP32 mAP50-95 is 0 or undefined on this split: no relative drop can be measured"
    if rel_drop <= max_drop:
        return True, f"relative mAP50-95 drop {rel_drop:.2%} is within the budget {max_drop:.2%}"
    if ci is None or ci[0] <= 0:
        lo = "n/a" if ci is None else f"{ci[0]:.2%}..{ci[1]:.2%}"
        return True, (f"relative mAP50-95 drop {rel_drop:.2%} exceeds the budget {max_drop:.2%}, but its interval "
                      f"({lo}) includes zero: not distinguishable from noise on {n_images} images "
                      "(evaluate on more images to decide)")
    return False, (f"relative mAP50-95 drop {rel_drop:.2%} (interval {ci[0]:.2%}..{ci[1]:.2%}) exceeds the budget "
                   f"{max_drop:.2%}")


def _eval_records(ds: Any, split: str, data: Path, meta: Any) -> tuple[list[ImageRecord], LabelMap]:
    """The evaluation split's records with class ids in the model's order (`edgevision.models.split_for_model`),
    and the model's label map. Never the calibration split (``train``, or ``all``, which holds it)."""
    from edgevision.core.dataset import SPLIT_ALIASES
    from edgevision.models import split_for_model

    if split == "all" or SPLIT_ALIASES.get(split.lower(), split) == "train":
        raise ConfigError(f"--split {split}: accuracy is never judged on the calibration split; use val or test")
    recs = split_for_model(ds, split, data, list(meta.names), purpose="judge the INT8 model on",
                           hint=" (or --no-eval to skip the accuracy check)", allow_all=False)
    return recs, LabelMap(list(meta.names))


def _predict(path: Path, gt: Sequence[ImageRecord], threads: int | None, device: str,
             progress: Progress | None, stage: str) -> list[ImageRecord]:
    from edgevision.models import OnnxPredictor, predict_records

    return predict_records(OnnxPredictor(path, device=device, threads=threads), gt, conf=LOW_CONF, max_det=MAX_DETS,
                           chunk=8, progress=None if progress is None else lambda done, total: progress(stage, done,
                                                                                                        total))


def _decisions(gt: Sequence[ImageRecord], preds: Sequence[ImageRecord], labels: LabelMap, meta: Any) -> dict[str, Any]:
    """`image_decisions` at the model's operating points (its default conf without them), the keys the report
    keeps: counts, rates, the rates' exact 95% intervals (``escape`` / ``false_reject``) and, when the operating
    points were priced, ``expected_cost`` per 1,000 parts."""
    from edgevision.evaluate import image_decisions
    from edgevision.evaluate.operating import costs_of

    decision = meta.decision_thresholds()
    costs = costs_of(meta.thresholds) if decision.operating else None
    d = image_decisions(gt, preds, decision.classes, labels=labels, costs=costs)
    keep = ("defective_images", "defect_free_images", "escapes", "escape_rate", "false_rejects", "false_reject_rate",
            "objects", "missed_objects", "object_miss_rate", "escaped_images", "false_reject_images", "escape",
            "false_reject")
    out = {k: d[k] for k in keep}
    if d.get("expected_cost") is not None:
        out["expected_cost"] = d["expected_cost"]
    return out


class _Judge:
    """FP32 predictions and match table computed once; INT8 candidates scored against them."""

    def __init__(self, fp32: Path, gt: list[ImageRecord], labels: LabelMap, meta: Any, threads: int | None,
                 max_drop: float, n_boot: int, seed: int, progress: Progress | None, device: str = "cpu") -> None:
        from edgevision.evaluate.bootstrap import match_table

        self.gt, self.labels, self.meta, self.threads, self.device = gt, labels, meta, threads, device
        self.max_drop, self.n_boot, self.seed, self.progress = max_drop, n_boot, seed, progress
        self.fp32_preds = _predict(fp32, gt, threads, "cpu", progress, "FP32 on the evaluation split")
        self.fp32_table = match_table(gt, self.fp32_preds, labels, max_dets=MAX_DETS)
        self.fp32_decisions = _decisions(gt, self.fp32_preds, labels, meta)

    def score(self, int8: Path, stage: str) -> tuple[Any, Any, list[ImageRecord], bool, str]:
        """``(bootstrap, INT8 match table, INT8 predictions, passed, reason)`` of one candidate."""
        from edgevision.evaluate.bootstrap import match_table, paired_bootstrap

        preds = _predict(int8, self.gt, self.threads, self.device, self.progress, stage)
        table = match_table(self.gt, preds, self.labels, max_dets=MAX_DETS)
        boot = paired_bootstrap(self.fp32_table, table, metric="map50_95", n_boot=self.n_boot, seed=self.seed)
        passed, reason = judge(boot.rel_drop, boot.rel_drop_ci, self.max_drop, len(self.gt))
        return boot, table, preds, passed, reason


def _score(path: Path, precision: str, table_value: Any, decisions: dict[str, Any]) -> ModelScore:
    return ModelScore(str(path), precision, path.stat().st_size, decisions=decisions, **table_value)


def _accuracy_aware(q: Any, judge_: _Judge, full_int8: Any, scratch: Path,
                    progress: Progress | None) -> tuple[Any, Any, Any, list[ImageRecord], list[Step],
                                                        list[dict[str, Any]], bool, str]:
    """Keep the most sensitive layers float until the gate passes. Returns the chosen model, its bootstrap,
    its match table, its predictions, the steps, the sensitivities, whether it passed, and why."""
    import onnx

    from edgevision.quantize.calib import CalibrationReader
    from edgevision.quantize.sensitivity import Probe, conv_layers, layer_sensitivity

    pre = onnx.load(str(q.pre))
    k_probe = min(8, len(q.calibration))
    reader = CalibrationReader(q.calibration[:k_probe], q.meta)
    feeds = [f for f in (reader.get_next() for _ in range(k_probe)) if f is not None]
    probe = Probe(pre, q.head, feeds)
    full_error = probe.error(full_int8)
    layers = conv_layers(pre, q.head)

    def tick(done: int, total: int) -> None:
        if progress is not None:
            progress("measuring layer sensitivity", done, total)

    if progress is not None:
        progress("measuring layer sensitivity", 0, len(layers))
    sens = layer_sensitivity(lambda keep: q.build(keep, check=False), probe, layers, full_error, tick)
    ranked = [s.to_dict() | {"rank": i + 1} for i, s in enumerate(sens)]
    steps: list[Step] = []
    cap = max(1, len(sens) // 2)
    k = 1
    while True:
        chosen = sens[:k]
        keep = [n for s in chosen for n in s.nodes]
        why = {n: f"layer {s.layer}: sensitivity rank {i + 1}/{len(sens)}, adds {s.gain:.3g} of the "
                  f"{full_error:.3g} boundary error" for i, s in enumerate(chosen) for n in s.nodes}
        model = q.build(keep, why)
        path = scratch / f"int8-keep{k}.onnx"
        path.write_bytes(model.SerializeToString())
        boot, table, preds, passed, reason = judge_.score(path, f"INT8 with {k} layer(s) float")
        steps.append(Step([s.layer for s in chosen], boot.b, boot.rel_drop,
                          list(boot.rel_drop_ci) if boot.rel_drop_ci else None, passed, reason))
        if passed or k >= cap:
            if not passed:
                reason += f"; still failing with the {k} most sensitive of {len(sens)} layers float"
            return model, boot, table, preds, steps, ranked, passed, reason
        k = min(2 * k, cap)


def quantize_checked(model: Path | str, calib: Path | str, out: Path | str, *, target: str | None = None,
                     n: int = 200, method: str = "minmax", seed: int = 0, fmt: str = "auto",
                     recipe: str | None = None, overwrite: bool = False, evaluate: bool = True, split: str = "val",
                     max_drop: float = 0.01, accuracy_aware: bool = False, n_boot: int = 1000,
                     threads: int | None = None, latency_runs: int = 30, report: Path | str | None = None,
                     progress: Progress | None = None) -> QuantizeReport:
    """Quantize ``model`` (see `edgevision.quantize.quantize_model`), judge it, write it if it passes.

    Args:
        evaluate: judge accuracy on ``split`` (False: build and write, as `quantize_model` does).
        split: the evaluation split (never ``train``, which calibrates).
        max_drop: the budget for the relative mAP50-95 drop (0.01: 1%).
        accuracy_aware: keep the most sensitive layers float until the gate passes.
        n_boot: bootstrap replicates; threads: onnxruntime threads for evaluation and timing.
        latency_runs: timed calls per model, each model in a fresh process (0: skip timing).
        report: the JSON report path (default ``out`` with ``.report.json``; the markdown beside it, ``.md``).
        progress: ``progress(stage, done, total)`` callback.
        Other arguments as `edgevision.quantize.quantize_model`.

    Returns:
        The report (also written to disk).

    Raises:
        ConfigError, DatasetError, ModelFormatError, OutputExistsError, QuantizeError: as `quantize_model`;
        also a missing or image-less evaluation split (one line, before any work).
    """
    from edgevision.core.io import write_atomic
    from edgevision.quantize.api import host_target, prepare, target_warnings
    from edgevision.quantize.latency import measure_in_child

    model, out, calib = Path(model), Path(out), Path(calib)
    if not 0.0 <= max_drop < 1.0:
        raise ConfigError(f"--max-drop {max_drop}: expected a relative drop in [0, 1), e.g. 0.01 for 1%")
    if n_boot < 100:
        raise ConfigError(f"--bootstrap {n_boot}: expected at least 100 replicates")
    if latency_runs < 0:
        raise ConfigError(f"--latency-runs {latency_runs}: expected 0 (skip) or more")
    if evaluate and (target or host_target()) == "tensorrt":
        import onnxruntime as ort

        if "TensorrtExecutionProvider" not in ort.get_available_providers():
            raise ConfigError("--target tensorrt: TensorRT (onnxruntime's TensorrtExecutionProvider) is not available "
                              "here to judge the model on; run on the TensorRT box, or pass --no-eval to build it "
                              "without the accuracy check")
    if evaluate and (target or host_target()) == "x86-vnni" and host_target() == "x86-avx2":
        raise ConfigError("--target x86-vnni: this CPU has no VNNI, and a model built for VNNI computes wrong values "
                          "here (uint8 x int8 pair sums saturate), so its accuracy cannot be judged on this box; "
                          "judge it on the VNNI box, or pass --no-eval to build it without the accuracy check")
    report_json = Path(report) if report is not None else out.with_suffix(".report.json")
    report_md = report_json.with_suffix(".md")
    q, ds = prepare(model, calib, target=target, n=n, method=method, seed=seed, fmt=fmt, recipe=recipe, out=out,
                    overwrite=overwrite)
    gt, labels = _eval_records(ds, split, calib, q.meta) if evaluate else ([], LabelMap(list(q.meta.names)))
    warnings = target_warnings(q.target)
    with q:
        if progress is not None:
            progress("calibrating and quantizing", 0, 1)
        final = q.build()
        scratch = q.dir
        cand = scratch / "int8-full.onnx"
        cand.write_bytes(final.SerializeToString())
        rep = QuantizeReport(str(model), str(out), "not-evaluated", "accuracy not evaluated (--no-eval)", False,
                             q.target, host_target(), {}, dict(q.checks), warnings, max_drop=max_drop if evaluate
                             else None)
        if evaluate:
            j = _Judge(model, gt, labels, q.meta, threads, max_drop, n_boot, seed, progress,
                       device="0" if q.target == "tensorrt" else "cpu")  # TensorRT runs INT8 on its own engine
            boot, table, preds, passed, reason = j.score(cand, "INT8 on the evaluation split")
            if not passed and accuracy_aware:
                rep.steps.append(Step([], boot.b, boot.rel_drop, list(boot.rel_drop_ci) if boot.rel_drop_ci else None,
                                      passed, reason))
                final, boot, table, preds, steps, rep.sensitivity, passed, reason = _accuracy_aware(
                    q, j, final, scratch, progress)
                rep.steps += steps
                cand = scratch / "int8-chosen.onnx"
                cand.write_bytes(final.SerializeToString())
            rep.verdict, rep.reason = ("pass" if passed else "fail"), reason
            rep.split, rep.images = split, len(gt)
            rep.operating_points = q.meta.decision_thresholds().source
            rep.bootstrap = boot.to_dict()
            rep.fp32 = _score(model, "fp32", {"map50_95": boot.a, "map50": j.fp32_table.score(
                range(len(gt)))["map50"]}, j.fp32_decisions)
            int8_dec = _decisions(gt, preds, labels, q.meta)
            rep.int8 = _score(cand, "int8", {"map50_95": boot.b, "map50": table.score(range(len(gt)))["map50"]},
                              int8_dec)
            fe, ie = set(j.fp32_decisions["escaped_images"]), set(int8_dec["escaped_images"])
            fr, ir = set(j.fp32_decisions["false_reject_images"]), set(int8_dec["false_reject_images"])
            rep.decision_changes = {"new_escapes": sorted(ie - fe), "fixed_escapes": sorted(fe - ie),
                                    "new_false_rejects": sorted(ir - fr), "fixed_false_rejects": sorted(fr - ir)}
        else:
            rep.fp32 = ModelScore(str(model), "fp32", model.stat().st_size)
            rep.int8 = ModelScore(str(cand), "int8", cand.stat().st_size)
        if latency_runs > 0:
            images = [Path(r.path) for r in (gt or q.calibration)[:16] if r.path is not None]
            for score, path in ((rep.fp32, model), (rep.int8, cand)):
                if progress is not None:
                    progress(f"timing {score.precision} in a fresh process", 0, 1)
                score.latency = measure_in_child(path, images, runs=latency_runs, threads=threads)
        meta = q.last_meta
        meta.quantization = dict(meta.quantization or {})
        if evaluate and rep.fp32 is not None and rep.int8 is not None and rep.bootstrap is not None:
            meta.quantization["accuracy"] = {
                "split": split, "images": len(gt), "fp32_map50_95": rep.fp32.map50_95,
                "int8_map50_95": rep.int8.map50_95, "rel_drop": rep.bootstrap.get("rel_drop"),
                "rel_drop_ci": rep.bootstrap.get("rel_drop_ci"), "level": rep.bootstrap.get("level"),
                "max_drop": max_drop, "verdict": rep.verdict}
        from edgevision.export.graph import set_metadata

        set_metadata(final, meta.to_json())
        rep.quantization, rep.checks = meta.quantization, dict(q.checks)
        data = final.SerializeToString()
        rep.int8.size_bytes = len(data)
        rep.int8.path = str(out)
        if rep.verdict != "fail":
            write_atomic(out, data)
            rep.written = True
        else:
            rep.int8.path = "(not written)"
    import json

    write_atomic(report_json, json.dumps(rep.to_dict(), indent=2, default=_json_default) + "\n")
    write_atomic(report_md, rep.markdown())
    return rep


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def rate_text(decisions: dict[str, Any] | None, which: str) -> str:
    """The escape (``which="escape"``) or false-reject (``"false_reject"``) rate of a report's decisions with its
    count and exact 95% interval, e.g. ``0.0% (0/18; 95% CI 0.0-18.5%)``; ``-`` when not measured."""
    from edgevision.evaluate.operating import rate_of

    r = rate_of(decisions, which)
    return "-" if r is None else r.text()


def cost_text(decisions: dict[str, Any] | None) -> str:
    """The expected cost per 1,000 parts of a report's decisions with its interval, e.g. ``12.5 (95% CI
    3.1-48.2)``; ``-`` when the operating points were not priced (or a rate is undefined)."""
    c = (decisions or {}).get("expected_cost")
    if not c:
        return "-"
    return f"{c['per_1000_parts']:.4g} (95% CI {c['lower']:.4g}-{c['upper']:.4g})"


def _f(v: float | None, d: int = 3) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def _ms(score: ModelScore | None, key: str) -> str:
    if score is None or not score.latency:
        return "-"
    return f"{score.latency[key]['p50']:.1f}"


def _markdown(r: QuantizeReport) -> str:
    q = r.quantization
    lines = [f"# INT8 quantization report: {Path(r.model).name}", "",
             f"**Verdict: {r.verdict.upper()}**: {r.reason}.", "",
             f"- INT8 model: {r.out}{'' if r.written else ' (not written)'}",
             f"- target: {r.target} (built on {r.host}); {q.get('activations')} activations, {q.get('weights')} "
             f"per-channel weights{', reduce-range' if q.get('reduce_range') else ''}"
             f"{', symmetric' if q.get('symmetric') else ''}; QDQ; onnxruntime {q.get('onnxruntime')}",
             f"- calibration: {q.get('n')} images of the train split ({q.get('method')}, seed {q.get('seed')})",
             f"- kept float: {len(q.get('excluded_nodes', []))} nodes (the head's post-processing"
             f"{', plus ' + str(len(q.get('kept_float_for_accuracy') or {})) + ' for accuracy' if q.get('kept_float_for_accuracy') else ''})"]
    lines += [f"- warning: {w}" for w in r.warnings]
    lines += ["", "| | FP32 | INT8 |", "|---|---|---|"]
    f, i = r.fp32, r.int8
    lines.append(f"| size (MB) | {_f(f.size_bytes / 1e6 if f else None, 2)} | {_f(i.size_bytes / 1e6 if i else None, 2)} |")
    if r.split is not None and f is not None and i is not None:
        lines.append(f"| mAP50-95 ({r.split}, {r.images} images) | {_f(f.map50_95)} | {_f(i.map50_95)} |")
        lines.append(f"| mAP50 | {_f(f.map50)} | {_f(i.map50)} |")
        for key, label in (("escape", "escape rate (95% CI)"), ("false_reject", "false-reject rate (95% CI)")):
            lines.append(f"| {label} | {rate_text(f.decisions, key)} | {rate_text(i.decisions, key)} |")
        if f.decisions.get("expected_cost") or i.decisions.get("expected_cost"):
            c = f.decisions.get("expected_cost") or i.decisions["expected_cost"]
            lines.append(f"| expected cost per 1,000 parts (escape {c['cost_escape']:g}, false reject "
                         f"{c['cost_false_reject']:g} per part, defect rate {c['defect_rate']:.3g}"
                         f"{' of the split' if c.get('defect_rate_from') == 'split' else ''}) | "
                         f"{cost_text(f.decisions)} | {cost_text(i.decisions)} |")
    if (f and f.latency) or (i and i.latency):
        th = (f.latency or {}).get("threads") if f else None
        lines.append(f"| latency p50, whole call (ms, this box, threads {th or 'default'}) | "
                     f"{_ms(f, 'pipeline_ms')} | {_ms(i, 'pipeline_ms')} |")
        lines.append(f"| latency p50, session.run (ms) | {_ms(f, 'session_ms')} | {_ms(i, 'session_ms')} |")
    if r.bootstrap:
        b = r.bootstrap
        ci = b.get("rel_drop_ci")
        lines += ["", f"Relative mAP50-95 drop: {_pct(b.get('rel_drop'))}, {b.get('level', 0.95):.0%} paired "
                  f"bootstrap interval {(_pct(ci[0]) + ' .. ' + _pct(ci[1])) if ci else '-'} over {b.get('n_images')} "
                  f"images ({b.get('n_used')} replicates); budget {_pct(r.max_drop)}. Decisions at "
                  f"{r.operating_points}."]
        ch = r.decision_changes
        if any(ch.values()):
            lines.append("Images whose decision changed: " + "; ".join(
                f"{k.replace('_', ' ')}: {', '.join(v[:10])}{' ...' if len(v) > 10 else ''}" for k, v in ch.items() if v))
    if r.steps:
        lines += ["", "## Accuracy-aware search", "",
                  "Layers ranked by measured sensitivity (the error each adds where the quantized body hands over "
                  "to the float head, on calibration images); the most sensitive kept float until the gate passed. "
                  "The stopping point was chosen on the evaluation split itself.", "",
                  "| layers float | INT8 mAP50-95 | relative drop | interval | gate |", "|---|---|---|---|---|"]
        for s in r.steps:
            ci = s.rel_drop_ci
            lines.append(f"| {len(s.layers)} | {_f(s.map50_95)} | {_pct(s.rel_drop)} | "
                         f"{(_pct(ci[0]) + ' .. ' + _pct(ci[1])) if ci else '-'} | {'pass' if s.passed else 'fail'} |")
        kept = r.steps[-1].layers
        if kept:
            lines += ["", "Kept float: " + ", ".join(kept)]
    lines += ["", "Latencies are from this machine, each model timed in its own process; the target box decides "
              "the real figure.", ""]
    return "\n".join(lines)
