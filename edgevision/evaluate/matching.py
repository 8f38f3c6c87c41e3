"""Shared building blocks of the evaluator: pairing predictions with ground truth, the ``difficult``
policy, COCO-style greedy matching, precision / recall / F1 and the confusion matrix.

Matching rule (the same as pycocotools' ``evaluateImg`` for one image, one class, one IoU
threshold): detections are taken by descending score (stable for ties); each takes the unmatched
ground-truth object of highest IoU ``>= iou``, preferring counted objects over ignored ones; an
ignored object (crowd, or ``difficult`` under the ``"ignore"`` policy) may absorb any number of
detections, and a detection matched to it is neither a true nor a false positive. IoU with a
crowd object is ``intersection / detection area`` (pycocotools' crowd IoU). Because the rule is
greedy by score, the matches of the detections above a threshold do not depend on the detections
below it: one matching over all detections serves every confidence threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

Difficult = Literal["ignore", "count", "drop"]
DIFFICULT_POLICIES: tuple[str, ...] = ("ignore", "count", "drop")


def check_difficult(difficult: str) -> None:
    """Raise a one-line ConfigError for an unknown ``difficult`` policy."""
    if difficult not in DIFFICULT_POLICIES:
        raise ConfigError(f"difficult: expected ignore, count or drop, got '{difficult}'")


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "y")
    return bool(v)


@dataclass
class GtImage:
    """One ground-truth image after the ``difficult`` policy.

    Attributes:
        record: the original record.
        boxes: ``(N, 4)`` float64 xyxy of the objects kept.
        class_ids: ``(N,)`` int64.
        ignore: ``(N,)`` bool, True for crowd objects and (policy ``"ignore"``) difficult ones.
    """

    record: ImageRecord
    boxes: NDArray[np.float64]
    class_ids: NDArray[np.int64]
    ignore: NDArray[np.bool_]

    @property
    def counted(self) -> int:
        """Objects that count (not ignored)."""
        return int((~self.ignore).sum())


def prepare_gt(record: ImageRecord, difficult: str = "ignore") -> GtImage:
    """Apply the ``difficult`` policy to one record; ``iscrowd`` objects are always ignored."""
    n = len(record)
    crowd = np.zeros(n, dtype=bool)
    diff = np.zeros(n, dtype=bool)
    if record.attributes is not None:
        crowd = np.array([_truthy(a.get("iscrowd", False)) for a in record.attributes], dtype=bool)
        diff = np.array([_truthy(a.get("difficult", False)) for a in record.attributes], dtype=bool)
    keep = np.ones(n, dtype=bool)
    if difficult == "drop":
        keep = ~diff | crowd
        diff = np.zeros(n, dtype=bool)
    elif difficult == "count":
        diff = np.zeros(n, dtype=bool)
    ignore = (crowd | diff)[keep]
    return GtImage(record, record.boxes[keep], record.class_ids[keep], ignore)


def pair_predictions(
    gt: Sequence[ImageRecord], preds: Sequence[ImageRecord], num_classes: int
) -> list[ImageRecord | None]:
    """The prediction record of each gt image (None when there is none), matched by ``name``.

    Raises:
        DatasetError: a prediction names an image that is not in the ground truth, appears twice,
            has no scores, or holds a class id outside the label map.
    """
    index = {r.name: i for i, r in enumerate(gt)}
    out: list[ImageRecord | None] = [None] * len(gt)
    for p in preds:
        i = index.get(p.name)
        if i is None:
            raise DatasetError(f"prediction for an image that is not in the ground truth ({len(gt)} images); "
                               "check the split and the image names", where=p.name)
        if out[i] is not None:
            raise DatasetError("image has two prediction records", where=p.name)
        if len(p) and p.scores is None:
            raise DatasetError("prediction record has boxes but no scores", where=p.name)
        if len(p) and (p.class_ids.min() < 0 or p.class_ids.max() >= num_classes):
            bad = int(p.class_ids.min() if p.class_ids.min() < 0 else p.class_ids.max())
            raise DatasetError(f"predicted class id {bad} is outside the label map of {num_classes} classes",
                               where=p.name)
        out[i] = p
    return out


def pred_arrays(p: ImageRecord | None) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
    """Boxes ``(M, 4)``, class ids ``(M,)`` and scores ``(M,)`` (float64) of a prediction record."""
    if p is None or not len(p):
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0)
    assert p.scores is not None
    return p.boxes, p.class_ids, p.scores.astype(np.float64)


def iou_matrix(dt_xyxy: NDArray[np.float64], gt_xyxy: NDArray[np.float64],
               gt_crowd: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
    """IoU of every detection with every gt box, ``(M, N)``; crowd columns use ``inter / det area``."""
    if not len(dt_xyxy) or not len(gt_xyxy):
        return np.zeros((len(dt_xyxy), len(gt_xyxy)))
    lt = np.maximum(dt_xyxy[:, None, :2], gt_xyxy[None, :, :2])
    rb = np.minimum(dt_xyxy[:, None, 2:], gt_xyxy[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    a_dt = (dt_xyxy[:, 2] - dt_xyxy[:, 0]) * (dt_xyxy[:, 3] - dt_xyxy[:, 1])
    a_gt = (gt_xyxy[:, 2] - gt_xyxy[:, 0]) * (gt_xyxy[:, 3] - gt_xyxy[:, 1])
    union = a_dt[:, None] + a_gt[None, :] - inter
    if gt_crowd is not None and gt_crowd.any():
        union = np.where(gt_crowd[None, :], a_dt[:, None], union)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def greedy_match(
    dt_xyxy: NDArray[np.float64], dt_scores: NDArray[np.float64], gt_xyxy: NDArray[np.float64],
    gt_ignore: NDArray[np.bool_], iou: float,
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """COCO matching of one image and one class (see the module docstring).

    Args:
        dt_xyxy: ``(M, 4)`` detections; dt_scores: ``(M,)``.
        gt_xyxy: ``(N, 4)`` ground truth; gt_ignore: ``(N,)`` ignored (crowd) objects.
        iou: the IoU threshold.

    Returns:
        ``match (M,)``: the gt index each detection matched, -1 for none; ``dt_ignored (M,)``:
        True when the detection matched an ignored object.
    """
    m = len(dt_xyxy)
    match = np.full(m, -1, dtype=np.int64)
    dt_ignored = np.zeros(m, dtype=bool)
    if not m or not len(gt_xyxy):
        return match, dt_ignored
    ious = iou_matrix(dt_xyxy, gt_xyxy, gt_ignore)
    gt_order = np.argsort(gt_ignore, kind="mergesort")  # counted objects first, as pycocotools
    ious = ious[:, gt_order]
    ign = gt_ignore[gt_order]
    taken = np.zeros(len(gt_order), dtype=bool)
    for d in np.argsort(-dt_scores, kind="mergesort"):
        best, best_j = min(iou, 1 - 1e-10), -1
        for j in range(len(gt_order)):
            if taken[j] and not ign[j]:
                continue
            if best_j > -1 and not ign[best_j] and ign[j]:
                break
            if ious[d, j] < best:
                continue
            best, best_j = ious[d, j], j
        if best_j > -1:
            taken[best_j] = True
            match[d] = gt_order[best_j]
            dt_ignored[d] = ign[best_j]
    return match, dt_ignored


@dataclass
class ClassMatches:
    """Every detection of one class over the whole set, matched once (greedy by score, COCO rule).

    Attributes:
        scores: ``(D,)`` float64 detection scores of the non-ignored detections, descending.
        tp: ``(D,)`` bool, True for a detection that matched a counted gt object.
        image: ``(D,)`` int64 index of the image of each detection.
        gt: counted gt objects of the class.
    """

    scores: NDArray[np.float64]
    tp: NDArray[np.bool_]
    image: NDArray[np.int64]
    gt: int


def match_all(
    gts: Sequence[GtImage], preds: Sequence[ImageRecord | None], num_classes: int, iou: float,
    max_dets: int | None = None,
) -> list[ClassMatches]:
    """Match every image and class at ``iou`` (detections matched to ignored objects are dropped).

    ``max_dets`` keeps the highest-scoring detections per image and class, as pycocotools does.
    """
    scores: list[list[NDArray[np.float64]]] = [[] for _ in range(num_classes)]
    tps: list[list[NDArray[np.bool_]]] = [[] for _ in range(num_classes)]
    imgs: list[list[NDArray[np.int64]]] = [[] for _ in range(num_classes)]
    n_gt = np.zeros(num_classes, dtype=np.int64)
    for i, (g, p) in enumerate(zip(gts, preds)):
        n_gt += np.bincount(g.class_ids[~g.ignore], minlength=num_classes)
        boxes, cls, sc = pred_arrays(p)
        for c in np.unique(cls):
            sel = np.flatnonzero(cls == c)
            sel = sel[np.argsort(-sc[sel], kind="mergesort")]
            if max_dets is not None:
                sel = sel[:max_dets]
            gsel = g.class_ids == c
            match, dt_ign = greedy_match(boxes[sel], sc[sel], g.boxes[gsel], g.ignore[gsel], iou)
            keep = ~dt_ign
            scores[c].append(sc[sel][keep])
            tps[c].append((match >= 0)[keep])
            imgs[c].append(np.full(int(keep.sum()), i, dtype=np.int64))
    out = []
    for c in range(num_classes):
        s = np.concatenate(scores[c]) if scores[c] else np.zeros(0)
        order = np.argsort(-s, kind="mergesort")
        t = np.concatenate(tps[c])[order] if tps[c] else np.zeros(0, dtype=bool)
        im = np.concatenate(imgs[c])[order] if imgs[c] else np.zeros(0, dtype=np.int64)
        out.append(ClassMatches(s[order], t, im, int(n_gt[c])))
    return out


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class PRF:
    """Precision, recall and F1 of one class (or all classes, micro-averaged).

    Attributes:
        tp: detections matched to a counted gt object; fp: other counted detections;
        fn: counted gt objects no detection matched; gt: counted gt objects.
        precision: ``tp / (tp + fp)``, None with no detection; recall: ``tp / gt``, None with no gt;
        f1: harmonic mean, 0 when both are 0, None when either is undefined.
    """

    tp: int
    fp: int
    fn: int
    gt: int
    precision: float | None = field(init=False)
    recall: float | None = field(init=False)
    f1: float | None = field(init=False)

    def __post_init__(self) -> None:
        self.precision = _ratio(self.tp, self.tp + self.fp)
        self.recall = _ratio(self.tp, self.gt)
        if self.precision is None or self.recall is None:
            self.f1 = None
        else:
            s = self.precision + self.recall
            self.f1 = 2 * self.precision * self.recall / s if s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("precision", "recall", "f1", "tp", "fp", "fn", "gt")}


def prf_at(matches: Sequence[ClassMatches], labels: LabelMap, conf: float) -> tuple[dict[str, PRF], PRF]:
    """Per-class and overall (micro: summed counts) P/R/F1 of the detections with ``score >= conf``."""
    per: dict[str, PRF] = {}
    for name, cm in zip(labels.names, matches):
        above = cm.scores >= conf
        tp = int(cm.tp[above].sum())
        fp = int(above.sum()) - tp
        per[name] = PRF(tp, fp, cm.gt - tp, cm.gt)
    tot = PRF(*(sum(getattr(p, k) for p in per.values()) for k in ("tp", "fp", "fn", "gt")))
    return per, tot


@dataclass
class ConfusionMatrix:
    """Ultralytics-style detection confusion matrix at one confidence and IoU.

    ``matrix[i, j]`` counts gt class ``i`` predicted as class ``j``; index ``K`` (the last row and
    column) is background: ``matrix[K, j]`` are detections of class ``j`` that matched no object
    (false positives), ``matrix[i, K]`` objects of class ``i`` no detection matched (misses). Rows
    are ground truth, columns predictions (Ultralytics stores the transpose).

    Matching is class-agnostic: all gt / detection pairs with ``IoU > iou`` are taken greedily by
    descending IoU, each detection and each object at most once (Ultralytics' ``process_batch``).
    So a box of the right place but the wrong class lands off the diagonal, and the diagonal may
    differ slightly from the per-class true positives (which match within the class, by score).
    Pairs involving an ignored object (crowd / difficult under ``"ignore"``) are left out, and so
    are ignored objects nothing matched.

    Attributes:
        names: the ``K`` class names then ``"background"``.
        matrix: ``(K+1, K+1)`` int64.
        conf: detections below it are left out; iou: the IoU threshold.
    """

    names: list[str]
    matrix: NDArray[np.int64]
    conf: float
    iou: float

    def to_dict(self) -> dict[str, Any]:
        return {"names": self.names, "rows": "ground truth", "columns": "prediction", "conf": self.conf,
                "iou": self.iou, "matrix": self.matrix.tolist()}


def confusion_matrix(gts: Sequence[GtImage], preds: Sequence[ImageRecord | None], labels: LabelMap,
                     conf: float = 0.25, iou: float = 0.5) -> ConfusionMatrix:
    """Build the `ConfusionMatrix` over paired images (see its docstring for the rules)."""
    k = len(labels)
    mat = np.zeros((k + 1, k + 1), dtype=np.int64)
    for g, p in zip(gts, preds):
        boxes, cls, sc = pred_arrays(p)
        keep = sc >= conf
        boxes, cls = boxes[keep], cls[keep]
        ious = iou_matrix(boxes, g.boxes)  # (M, N), plain IoU as Ultralytics
        gi, di = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if ious.size:
            d_idx, g_idx = np.nonzero(ious > iou)
            if len(d_idx):
                order = np.argsort(-ious[d_idx, g_idx], kind="mergesort")
                d_idx, g_idx = d_idx[order], g_idx[order]
                _, first = np.unique(d_idx, return_index=True)
                first = np.sort(first)
                d_idx, g_idx = d_idx[first], g_idx[first]
                _, first = np.unique(g_idx, return_index=True)
                first = np.sort(first)
                di, gi = d_idx[first], g_idx[first]
        counted = ~g.ignore[gi]
        np.add.at(mat, (g.class_ids[gi[counted]], cls[di[counted]]), 1)
        matched_g = np.zeros(len(g.boxes), dtype=bool)
        matched_g[gi] = True
        missed = ~matched_g & ~g.ignore
        np.add.at(mat, (g.class_ids[missed], k), 1)
        matched_d = np.zeros(len(boxes), dtype=bool)
        matched_d[di] = True
        np.add.at(mat, (k, cls[~matched_d]), 1)
    return ConfusionMatrix([*labels.names, "background"], mat, conf, iou)
