"""`evaluate`: COCO metrics, P/R/F1 and confusion matrix at one confidence, operating points and
image-level decisions, in one `EvalReport` (JSON-ready ``to_dict()``, ``markdown()`` summary)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError
from edgevision.evaluate.coco import CocoMetrics, coco_evaluate
from edgevision.evaluate.matching import (
    PRF,
    ConfusionMatrix,
    check_difficult,
    confusion_matrix,
    match_all,
    pair_predictions,
    prepare_gt,
    prf_at,
)
from edgevision.evaluate.operating import (
    MIN_THRESHOLD,
    OperatingPoints,
    decisions_summary,
    image_decisions,
    image_scores,
    tradeoff_curve,
)

log = logging.getLogger(__name__)

SCHEMA = "edgevision.eval/1"


@dataclass
class EvalReport:
    """Everything `evaluate` measured.

    Attributes:
        coco: COCO metrics (pycocotools).
        per_class: P/R/F1 of each class at ``conf`` and ``iou``; overall: the same, micro-averaged.
        confusion: the confusion matrix at ``conf`` and ``iou``.
        operating: the operating points used for ``decisions`` (None: one threshold ``conf`` for all).
        decisions: image-level escapes / false rejects (see `image_decisions`), with their 95% intervals.
        conf, iou, max_dets, difficult: the settings.
        tradeoff: the image-level trade-off curve (`edgevision.evaluate.operating.tradeoff_curve` points as
            dicts), None when the split lacks defective or defect-free images.
    """

    coco: CocoMetrics
    per_class: dict[str, PRF]
    overall: PRF
    confusion: ConfusionMatrix
    operating: OperatingPoints | None
    decisions: dict[str, Any]
    conf: float
    iou: float
    max_dets: int
    difficult: str
    tradeoff: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "settings": {"conf": self.conf, "iou": self.iou, "max_dets": self.max_dets, "difficult": self.difficult},
            "coco": self.coco.to_dict(),
            "prf": {"overall": self.overall.to_dict(), "per_class": {n: p.to_dict() for n, p in self.per_class.items()}},
            "confusion": self.confusion.to_dict(),
            "operating": None if self.operating is None else self.operating.to_dict(),
            "decisions": {**self.decisions, "thresholds_from": "operating" if self.operating else "conf"},
            "tradeoff": self.tradeoff,
        }

    def markdown(self) -> str:
        """A short markdown summary: overall metrics, a per-class table, the image-level decisions."""
        c = self.coco

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        lines = [
            f"**{c.images} images, {c.detections} detections** (max {self.max_dets} per image and class; "
            f"difficult objects: {self.difficult})",
            "",
            "| mAP50-95 | mAP50 | mAP75 | AP small | AP medium | AP large | AR@max |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            "| " + " | ".join(f(v) for v in (c.map50_95, c.map50, c.map75, c.ap_small, c.ap_medium, c.ap_large,
                                             c.ar100)) + " |",
            "",
            f"| class | gt | AP50-95 | AP50 | P@{self.conf:g} | R@{self.conf:g} | F1 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, p in self.per_class.items():
            ap = c.per_class[name]
            lines.append(f"| {name} | {p.gt} | {f(ap['ap50_95'])} | {f(ap['ap50'])} | {f(p.precision)} | "
                         f"{f(p.recall)} | {f(p.f1)} |")
        o = self.overall
        lines.append(f"| **all** | {o.gt} | {f(c.map50_95)} | {f(c.map50)} | {f(o.precision)} | {f(o.recall)} | "
                     f"{f(o.f1)} |")
        d = self.decisions
        op = self.operating
        src = "the operating points" if op else f"confidence >= {self.conf:g}"
        lines += ["", f"Image-level decisions at {src}: {decisions_summary(d)}; object miss rate "
                      f"{f(d['object_miss_rate'])} ({d['missed_objects']}/{d['objects']})."]
        if op is not None:
            lines += ["", "| class | threshold | rule |", "|---|---:|---|"]
            lines += [f"| {n} | {t:.3g} | {op.rules.get(n, {}).get('text', op.target)} |" for n, t in op.classes.items()]
        return "\n".join(lines) + "\n"


def evaluate(
    gt: Sequence[ImageRecord],
    preds: Sequence[ImageRecord],
    labels: LabelMap,
    *,
    conf: float = 0.25,
    iou: float = 0.5,
    operating: OperatingPoints | None = None,
    max_dets: int = 100,
    difficult: str = "ignore",
    tradeoff: bool = False,
) -> EvalReport:
    """Evaluate predictions against ground truth (records paired by name).

    Args:
        gt, preds: ground-truth and prediction records (predictions carry ``scores``; run the
            model at a low confidence such as 0.001 so that mAP sees the whole curve).
        labels: the label map both use.
        conf: confidence for P/R/F1, the confusion matrix and (without ``operating``) the decisions.
        iou: IoU for P/R/F1, the confusion matrix and the decisions (COCO metrics use their own).
        operating: per-class thresholds for the image-level decisions.
        max_dets: detections per image and class kept (COCO ``maxDets``; P/R/F1 keep the same).
        difficult: ``"ignore"``, ``"count"`` or ``"drop"`` (see `edgevision.evaluate.coco`).
        tradeoff: compute the image-level trade-off curve (`EvalReport.tradeoff`) when ``operating`` does not
            carry one (a search over thresholds: seconds on large splits, so off unless asked).

    Raises:
        ConfigError: bad settings, or ``operating`` for other classes; DatasetError: unpaired predictions.
    """
    check_difficult(difficult)
    if not 0.0 <= conf <= 1.0:
        raise ConfigError(f"conf: expected a number in [0, 1], got {conf}")
    if not 0.0 < iou <= 1.0:
        raise ConfigError(f"iou: expected a number in (0, 1], got {iou}")
    if max_dets < 1:
        raise ConfigError(f"max_dets: expected a positive integer, got {max_dets}")
    coco = coco_evaluate(gt, preds, labels, max_dets=max_dets, difficult=difficult)
    paired = pair_predictions(gt, preds, len(labels))
    gts = [prepare_gt(r, difficult) for r in gt]
    per, overall = prf_at(match_all(gts, paired, len(labels), iou, max_dets), labels, conf)
    cm = confusion_matrix(gts, paired, labels, conf, iou)
    thresholds: Any = operating if operating is not None else conf
    decisions = image_decisions(gt, preds, thresholds, labels=labels, iou=iou, difficult=difficult)
    curve = operating.curve if operating is not None and operating.curve else None
    if curve is None and tradeoff:
        ims = image_scores(gt, preds, labels, difficult)
        if ims.n_defective and ims.n_good:
            floor = float((operating.rule if operating is not None else {}).get("min_threshold", MIN_THRESHOLD))
            curve = [pt.to_dict() for pt in tradeoff_curve(ims, min_threshold=min(floor, MIN_THRESHOLD))]
    log.info("eval: mAP50-95 %s mAP50 %s P %s R %s escape rate %s false-reject rate %s", coco.map50_95, coco.map50,
             overall.precision, overall.recall, decisions["escape_rate"], decisions["false_reject_rate"])
    return EvalReport(coco, per, overall, cm, operating, decisions, conf, iou, max_dets, difficult, curve)
