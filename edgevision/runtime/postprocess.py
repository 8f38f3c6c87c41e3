"""Graph outputs -> detections in tensor pixels: one decoder per layout in `LAYOUTS`, NMS, thresholds.

Every decoder returns, per image, ``(xyxy (N, 4) float32 tensor pixels, scores (N,) float32,
class_ids (N,) int64)`` sorted by descending score, after the per-class thresholds and the class
filter and capped at ``max_det``. A detection passes when ``score >= threshold[class]`` (the rule of
EdgeVision's operating points; Ultralytics uses ``>``, which differs only for scores exactly equal to
the threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edgevision.runtime.metadata import ModelFormatError

__all__ = ["MAX_NMS", "MAX_WH", "Decoded", "Query", "decode", "nms", "box_iou_one"]

MAX_NMS = 30000
"""At most this many candidates (best scores) enter NMS, as in Ultralytics."""
MAX_WH = 7680
"""Per-class coordinate offset of the class-aware NMS, as in Ultralytics."""

Decoded = tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]


@dataclass(frozen=True)
class Query:
    """The per-call post-processing knobs, resolved.

    Attributes:
        thresholds: ``(nc,)`` float32 per-class score thresholds (``score >= thr`` passes).
        iou: NMS IoU threshold (a box whose IoU with a kept box of its class is ``> iou`` is dropped).
        max_det: most detections per image.
        classes: ``(k,)`` int64 class ids to keep, or None for all.
    """

    thresholds: NDArray[np.float32]
    iou: float
    max_det: int
    classes: NDArray[np.int64] | None = None

    @property
    def min_conf(self) -> float:
        return float(self.thresholds.min())


def intersection_one(box: NDArray[np.float32], boxes: NDArray[np.float32]) -> NDArray[np.float32]:
    """Intersection area of one xyxy box with ``(N, 4)`` boxes (float32)."""
    xx1 = np.maximum(box[0], boxes[:, 0])
    yy1 = np.maximum(box[1], boxes[:, 1])
    xx2 = np.minimum(box[2], boxes[:, 2])
    yy2 = np.minimum(box[3], boxes[:, 3])
    return np.maximum(xx2 - xx1, np.float32(0)) * np.maximum(yy2 - yy1, np.float32(0))


def box_iou_one(box: NDArray[np.float32], area: np.float32, boxes: NDArray[np.float32],
                areas: NDArray[np.float32]) -> NDArray[np.float32]:
    """IoU of one xyxy box with ``(N, 4)`` boxes, in float32 with torchvision's NMS arithmetic."""
    inter = intersection_one(box, boxes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area + areas - inter)


def nms(xyxy: NDArray[np.float32], scores: NDArray[np.float32], class_ids: NDArray[np.int64] | None,
        iou: float, max_det: int, max_wh: float = MAX_WH) -> NDArray[np.int64]:
    """Greedy class-aware NMS with the semantics of Ultralytics' ``non_max_suppression`` (torchvision ``nms``).

    Boxes are visited by descending score (stable: ties keep input order); a box is kept unless an already
    kept box of the same class overlaps it with IoU ``> iou``. Classes are separated by offsetting boxes
    by ``class_id * max_wh`` (``class_ids=None``: class-agnostic). Stops after ``max_det`` kept boxes.

    Args:
        xyxy: ``(N, 4)`` boxes; scores: ``(N,)``; class_ids: ``(N,)`` or None.

    Returns:
        Indices into the inputs of the kept boxes, by descending score.
    """
    n = len(scores)
    if n == 0 or max_det <= 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    b = np.asarray(xyxy, np.float32)[order]
    if class_ids is not None:
        b = b + (np.asarray(class_ids, np.float32)[order] * np.float32(max_wh))[:, None]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = np.ones(n, bool)
    keep: list[int] = []
    thr = np.float32(iou)
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) >= max_det or i == n - 1:
            break
        rest = i + 1 + np.flatnonzero(alive[i + 1:])
        if rest.size:
            alive[rest[box_iou_one(b[i], areas[i], b[rest], areas[rest]) > thr]] = False
    return order[np.asarray(keep, np.int64)]


def _empty() -> Decoded:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)


def _finish(xyxy: np.ndarray, scores: np.ndarray, cls: np.ndarray, q: Query, sort: bool = True) -> Decoded:
    """Per-class thresholds, class filter, sort by score (stable), cap at max_det."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    cls = np.asarray(cls).reshape(-1).astype(np.int64)
    nc = len(q.thresholds)
    valid = (cls >= 0) & (cls < nc)
    ok = valid & (scores >= q.thresholds[np.where(valid, cls, 0)])
    if q.classes is not None:
        ok &= np.isin(cls, q.classes)
    xyxy, scores, cls = xyxy[ok], scores[ok], cls[ok]
    if sort:
        o = np.argsort(-scores, kind="stable")
        xyxy, scores, cls = xyxy[o], scores[o], cls[o]
    m = q.max_det
    return xyxy[:m], scores[:m], cls[:m]


def decode_yolo_raw(out: NDArray[np.floating], nc: int, q: Query) -> list[Decoded]:
    """``(B, 4+nc, N)``: cx, cy, w, h then class probabilities per anchor; best class, threshold, NMS."""
    if out.ndim != 3 or out.shape[1] != 4 + nc:
        raise ModelFormatError(f"yolo-raw output has shape {out.shape}; expected (B, {4 + nc}, N) for {nc} classes")
    res = []
    for p in out:
        probs = p[4:]
        best = probs.max(0)
        cand = np.flatnonzero(best >= q.min_conf)
        if cand.size == 0:
            res.append(_empty())
            continue
        cls = probs[:, cand].argmax(0).astype(np.int64)
        score = best[cand].astype(np.float32)
        ok = score >= q.thresholds[cls]
        if q.classes is not None:
            ok &= np.isin(cls, q.classes)
        cand, cls, score = cand[ok], cls[ok], score[ok]
        if cand.size > MAX_NMS:
            top = np.argsort(-score, kind="stable")[:MAX_NMS]
            cand, cls, score = cand[top], cls[top], score[top]
        cxcywh = p[:4, cand].T.astype(np.float32)
        xy, half = cxcywh[:, :2], cxcywh[:, 2:] / 2
        xyxy = np.concatenate([xy - half, xy + half], axis=1)
        k = nms(xyxy, score, cls, q.iou, q.max_det)
        res.append((xyxy[k], score[k], cls[k]))
    return res


def decode_yolo_end2end(out: NDArray[np.floating], q: Query) -> list[Decoded]:
    """``(B, K, 6)``: x1, y1, x2, y2, score, class; threshold only (the graph did the NMS)."""
    if out.ndim != 3 or out.shape[2] != 6:
        raise ModelFormatError(f"yolo-end2end output has shape {out.shape}; expected (B, K, 6)")
    return [_finish(p[:, :4], p[:, 4], np.rint(p[:, 5]), q) for p in out]


def decode_torchvision(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, q: Query) -> list[Decoded]:
    """boxes ``(K, 4)``, labels ``(K,)`` (0 = background, class = label - 1), scores ``(K,)``; batch 1."""
    if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != scores.shape or len(labels) != len(boxes):
        raise ModelFormatError(f"torchvision-postnms outputs have shapes {boxes.shape}, {labels.shape}, "
                               f"{scores.shape}; expected (K, 4), (K,), (K,)")
    return [_finish(boxes, scores, labels.astype(np.int64) - 1, q)]


def decode_nms_in_graph(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, batch_index: np.ndarray,
                        batch: int, q: Query) -> list[Decoded]:
    """boxes ``(K, 4)``, scores, class_ids, batch_index ``(K,)``: split by image, threshold, sort, cap."""
    n = len(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not (len(scores) == len(class_ids) == len(batch_index) == n):
        raise ModelFormatError(f"nms-in-graph outputs have shapes {boxes.shape}, {scores.shape}, {class_ids.shape}, "
                               f"{batch_index.shape}; expected (K, 4), (K,), (K,), (K,)")
    bi = batch_index.reshape(-1).astype(np.int64)
    return [_finish(boxes[bi == b], scores.reshape(-1)[bi == b], class_ids.reshape(-1)[bi == b], q)
            for b in range(batch)]


def decode(layout: str, outputs: Sequence[np.ndarray], nc: int, batch: int, q: Query) -> list[Decoded]:
    """Decode the graph outputs (in the order of ``OutputSpec.names``) of a batch of ``batch`` images."""
    if layout == "yolo-raw":
        return decode_yolo_raw(outputs[0], nc, q)
    if layout == "yolo-end2end":
        return decode_yolo_end2end(outputs[0], q)
    if layout == "torchvision-postnms":
        return decode_torchvision(outputs[0], outputs[1], outputs[2], q)
    if layout == "nms-in-graph":
        return decode_nms_in_graph(outputs[0], outputs[1], outputs[2], outputs[3], batch, q)
    raise ModelFormatError(f"unknown output layout '{layout}'")
