"""COCO box metrics through pycocotools, from canonical records, in memory.

The ground truth and predictions are turned into pycocotools ``COCO`` objects without temporary
files: images get their COCO ids when every gt record has a distinct integer ``meta["coco_id"]``
(a dataset read from COCO; pycocotools orders images by id, which decides the order of detections
of equal score across images), else ids ``1..N`` in the order of ``gt``; categories ids ``canonical id + 1``,
annotations ids ``1..``; boxes go as COCO ``xywh`` computed from the canonical ``xyxy``
(``w = x2 - x1``). The predictions go through ``COCO.loadRes`` exactly as a results file would, so
the numbers equal running pycocotools on the same JSON files (the tests check it with ``==``).

Conventions worth knowing:
    * **Areas are box areas** (``w * h``), for ground truth too. pycocotools assigns
      small / medium / large (``< 32²``, ``< 96²``, larger) from the gt ``area`` field, which in
      the COCO files is the *mask* area; EdgeVision evaluates boxes, so AP small/medium/large here
      follow the box area (a thin diagonal crack is "larger" than in the official COCO numbers).
    * **Crowd and difficult objects**: an object with attribute ``iscrowd`` is always a crowd
      object. ``difficult`` objects follow the ``difficult`` policy: ``"ignore"`` (default) makes
      them crowd objects: a miss of one is not counted, and a detection that matches one is
      neither a true nor a false positive. Caveat: pycocotools measures overlap with a crowd
      object as ``intersection / detection area`` (not IoU) and lets any number of detections
      match it, so a small detection inside a large difficult box is absorbed even when it would
      not reach IoU 0.5. ``"count"`` evaluates them as ordinary objects, ``"drop"`` removes them
      (and detections on them become false positives: what Ultralytics' VOC conversion does).
    * **Scores** are the records' float32 scores; two detections whose float64 scores differ
      below float32 precision become a tie (pycocotools keeps ties in input order).
    * A class with no counted gt object in the set has AP -1 in pycocotools; it is reported as
      None and left out of the means (so mAP is the mean over the classes present).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError
from edgevision.evaluate.matching import check_difficult, pair_predictions, pred_arrays, prepare_gt

log = logging.getLogger(__name__)

STAT_NAMES = (
    "map50_95", "map50", "map75", "ap_small", "ap_medium", "ap_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)
"""The twelve numbers of ``COCOeval.summarize`` (``ar100`` is AR at ``max_dets``)."""


@dataclass
class CocoMetrics:
    """COCO box metrics of one set of predictions.

    Attributes:
        map50_95: AP averaged over IoU 0.50:0.05:0.95 (the COCO mAP); map50 / map75 at one IoU.
        ap_small, ap_medium, ap_large: mAP50-95 over objects of box area ``< 32²``, ``< 96²``, larger.
        ar100: average recall with at most ``max_dets`` detections per image and class.
        per_class: ``{name: {"ap50_95", "ap50", "gt"}}``; the APs are None for a class with no
            counted gt object (pycocotools' -1); ``gt`` counts the counted objects.
        stats: the twelve ``COCOeval.stats`` as pycocotools gives them (-1 where undefined; note
            that pycocotools computes ``stats[0]`` at ``maxDets=100`` whatever ``max_dets`` is, so
            it is -1 for another ``max_dets``; ``map50_95`` is computed at ``max_dets``).
        images: images evaluated; detections: detections given (before ``max_dets``).
        max_dets: detections kept per image and class; difficult: the policy used.
    Every overall metric is None when pycocotools gives -1 (no object in that size range).
    """

    map50_95: float | None
    map50: float | None
    map75: float | None
    ap_small: float | None
    ap_medium: float | None
    ap_large: float | None
    ar100: float | None
    per_class: dict[str, dict[str, Any]]
    images: int
    detections: int
    stats: list[float] = field(default_factory=list)
    max_dets: int = 100
    difficult: str = "ignore"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _none(v: float) -> float | None:
    return None if v < 0 else float(v)


def max_dets_param(max_dets: int) -> list[int]:
    """pycocotools' ``params.maxDets`` for ``max_dets`` detections per image and class.

    ``COCOeval.evaluate`` sorts ``maxDets`` and keeps ``maxDets[-1]`` detections, and ``summarize``
    reports ``maxDets[2]``: so the list must stay sorted with ``max_dets`` last:
    ``[1, 10, max_dets]`` above 10, else ``[1, max_dets, max_dets]``.
    """
    if max_dets < 1:
        raise ConfigError(f"max_dets: expected a positive integer, got {max_dets}")
    return [1, 10, max_dets] if max_dets > 10 else [min(1, max_dets), max_dets, max_dets]


def image_ids(gt: Sequence[ImageRecord]) -> list[int]:
    """The COCO image id of each gt record: its source COCO id when all have distinct ones, else ``1..N``."""
    ids = [r.meta.get("coco_id") for r in gt]
    if ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids) and len(set(ids)) == len(ids):
        return ids  # type: ignore[return-value]
    return list(range(1, len(gt) + 1))


def to_coco_gt(gt: Sequence[ImageRecord], labels: LabelMap, difficult: str = "ignore") -> dict[str, Any]:
    """The ground truth as a COCO dict (image ids from `image_ids`, category ids ``canonical + 1``).

    Crowd objects and, under ``difficult="ignore"``, difficult ones get ``iscrowd: 1``; under
    ``"drop"`` difficult objects are left out. ``area`` is the box area.
    """
    check_difficult(difficult)
    images, anns = [], []
    for i, r in zip(image_ids(gt), gt):
        images.append({"id": i, "file_name": r.name, "height": r.size_hw[0], "width": r.size_hw[1]})
        g = prepare_gt(r, difficult)
        for b, c, ign in zip(g.boxes.tolist(), g.class_ids.tolist(), g.ignore.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c + 1, "bbox": [b[0], b[1], w, h],
                         "area": w * h, "iscrowd": int(ign)})
    cats = [{"id": c + 1, "name": n} for c, n in enumerate(labels.names)]
    return {"images": images, "annotations": anns, "categories": cats}


def to_coco_results(gt: Sequence[ImageRecord], preds: Sequence[ImageRecord], labels: LabelMap) -> list[dict[str, Any]]:
    """Predictions as a COCO results list (``image_id`` as in `to_coco_gt`), grouped by gt image order.

    Raises:
        DatasetError: a prediction for an image not in ``gt`` (see `pair_predictions`).
    """
    res = []
    for i, p in zip(image_ids(gt), pair_predictions(gt, preds, len(labels))):
        boxes, cls, sc = pred_arrays(p)
        if p is not None and p.scores is not None:
            sc = p.scores.tolist()  # float32 -> the same Python float the JSON writer would give
        for b, c, s in zip(boxes.tolist(), cls.tolist(), list(sc)):
            res.append({"image_id": i, "category_id": c + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                        "score": float(s)})
    return res


def _run_cocoeval(
    gt: Sequence[ImageRecord], preds: Sequence[ImageRecord], labels: LabelMap, max_dets: int, difficult: str
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Build the pycocotools ``COCO`` objects of ``gt`` / ``preds`` and run ``COCOeval.evaluate`` (bbox).

    ``params.maxDets`` is `max_dets_param` of ``max_dets``; pycocotools' printing is swallowed.

    Returns:
        The evaluated ``COCOeval`` (``evalImgs`` filled, not accumulated), the gt COCO dict
        (`to_coco_gt`) and the results list (`to_coco_results`).

    Raises:
        DatasetError: ``gt`` is empty, or see `to_coco_results`.
        ConfigError: unknown ``difficult`` policy or ``max_dets < 1``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not gt:
        raise DatasetError("no ground-truth images to evaluate; check the split")
    gt_dict = to_coco_gt(gt, labels, difficult)
    results = to_coco_results(gt, preds, labels)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt_dict["images"]), "categories": gt_dict["categories"],
                               "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.maxDets = max_dets_param(max_dets)
        ev.evaluate()
    return ev, gt_dict, results


def coco_evaluate(
    gt: Sequence[ImageRecord],
    preds: Sequence[ImageRecord],
    labels: LabelMap,
    *,
    max_dets: int = 100,
    difficult: str = "ignore",
) -> CocoMetrics:
    """COCO box metrics (pycocotools ``COCOeval``, ``iouType="bbox"``) of ``preds`` against ``gt``.

    Args:
        gt: ground-truth records (background images included: their detections are false positives).
        preds: prediction records with ``scores``, matched to ``gt`` by ``name``; a gt image without
            a prediction record has no detections.
        labels: the label map both use.
        max_dets: detections kept per image and class (pycocotools' ``maxDets[-1]``, see `max_dets_param`).
        difficult: ``"ignore"``, ``"count"`` or ``"drop"`` (see the module docstring).

    Raises:
        DatasetError: ``gt`` is empty, a prediction names an image that is not in ``gt``, or a class
            outside ``labels``.
        ConfigError: unknown ``difficult`` policy.
    """
    ev, gt_dict, results = _run_cocoeval(gt, preds, labels, max_dets, difficult)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.accumulate()
        ev.summarize()
    log.info("pycocotools summary (%d images, %d detections):\n%s", len(gt), len(results),
             "\n".join(ln for ln in buf.getvalue().splitlines() if ln.startswith(" Average")))
    stats = [float(s) for s in ev.stats]
    precision = ev.eval["precision"]  # (T, R, K, A, M)
    n_gt = np.bincount(
        np.array([a["category_id"] - 1 for a in gt_dict["annotations"] if not a["iscrowd"]], dtype=np.int64),
        minlength=len(labels))
    per_class: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(labels.names):
        p = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        per_class[name] = {
            "ap50_95": float(np.mean(p[p > -1])) if (p > -1).any() else None,
            "ap50": float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else None,
            "gt": int(n_gt[k]),
        }
    absent = [n for n, d in per_class.items() if d["gt"] == 0]
    if absent:
        log.info("classes with no counted gt object (AP None, left out of mAP): %s", ", ".join(absent))
    # summarize() computes stats[0] at a hard-coded maxDets=100 (-1 for any other max_dets): take
    # mAP50-95 from the accumulated precision at max_dets, which equals stats[0] when max_dets=100
    p_all = precision[:, :, :, 0, -1]
    map50_95 = float(np.mean(p_all[p_all > -1])) if (p_all > -1).any() else None
    return CocoMetrics(
        map50_95=map50_95, map50=_none(stats[1]), map75=_none(stats[2]), ap_small=_none(stats[3]),
        ap_medium=_none(stats[4]), ap_large=_none(stats[5]), ar100=_none(stats[8]), per_class=per_class,
        images=len(gt), detections=len(results), stats=stats, max_dets=max_dets, difficult=difficult,
    )
