"""Tiled inference geometry and merging: overlapping slices, truncation flags, IoS + IoU suppression."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edgevision.runtime.postprocess import box_iou_one, intersection_one

__all__ = ["EDGE_PX", "IOS_THRESHOLD", "merge_detections", "slice_starts", "slice_windows", "truncated"]

EDGE_PX = 2.0
"""A box within this many pixels of an inner slice edge is truncated by the slice."""
IOS_THRESHOLD = 0.5
"""Intersection over the smaller box's area at or above which the lower-priority box is dropped."""


def slice_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Starts of the slices along one axis: step ``round(tile * (1 - overlap))``, the last one flush with the end."""
    if size <= tile:
        return [0]
    step = max(1, round(tile * (1.0 - overlap)))
    starts = list(range(0, size - tile, step))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def slice_windows(h: int, w: int, tile_hw: tuple[int, int], overlap: float) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` windows covering an ``h`` x ``w`` image, row by row.

    Args:
        tile_hw: slice (height, width), cut down to the image where it is smaller.
        overlap: fraction of a slice shared with its neighbour, in [0, 1).
    """
    th, tw = min(tile_hw[0], h), min(tile_hw[1], w)
    return [(x, y, x + tw, y + th) for y in slice_starts(h, th, overlap) for x in slice_starts(w, tw, overlap)]


def truncated(xyxy: NDArray[np.float32], window: tuple[int, int, int, int], h: int, w: int,
              edge_px: float = EDGE_PX) -> NDArray[np.bool_]:
    """Which boxes (full-image pixels) touch an edge of ``window`` that is not an edge of the image."""
    x0, y0, x1, y1 = window
    t = np.zeros(len(xyxy), bool)
    if x0 > 0:
        t |= xyxy[:, 0] <= x0 + edge_px
    if y0 > 0:
        t |= xyxy[:, 1] <= y0 + edge_px
    if x1 < w:
        t |= xyxy[:, 2] >= x1 - edge_px
    if y1 < h:
        t |= xyxy[:, 3] >= y1 - edge_px
    return t


def _ios(box: NDArray[np.float32], area: np.float32, boxes: NDArray[np.float32],
         areas: NDArray[np.float32]) -> NDArray[np.float32]:
    """Intersection over the smaller area of one box with ``(N, 4)`` boxes."""
    inter = intersection_one(box, boxes)
    return inter / np.maximum(np.minimum(area, areas), np.float32(1e-9))


def merge_detections(xyxy: NDArray[np.float32], scores: NDArray[np.float32], class_ids: NDArray[np.int64],
                     is_truncated: NDArray[np.bool_], iou: float, max_det: int,
                     ios: float = IOS_THRESHOLD) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Greedy class-aware merge of detections from overlapping slices.

    Boxes are visited whole-first (not truncated by an inner slice edge), then by descending score; a box
    is dropped when a kept box of its class covers it with IoS (intersection / smaller area) ``>= ios`` or
    overlaps it with IoU ``> iou``. When the kept box is itself truncated, the truncated boxes it drops by
    IoS are pieces of the same object cut by other slices: the kept box grows to their union.

    Returns:
        Indices of the kept boxes in visiting order (at most ``max_det``) and their ``(K, 4)`` boxes
        (grown by the unions).
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    order = np.lexsort((-scores.astype(np.float64), is_truncated.astype(np.int8)))
    b = xyxy[order].astype(np.float32)
    c = class_ids[order]
    cut = is_truncated[order]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = np.ones(n, bool)
    keep: list[int] = []
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) >= max_det:
            break
        grew = True
        while grew:  # a truncated keeper that grew may now cover further pieces
            rest = i + 1 + np.flatnonzero(alive[i + 1:] & (c[i + 1:] == c[i]))
            grew = False
            if rest.size == 0:
                break
            ov = box_iou_one(b[i], areas[i], b[rest], areas[rest])
            small = _ios(b[i], areas[i], b[rest], areas[rest])
            alive[rest[(ov > iou) | (small >= ios)]] = False
            pieces = rest[(small >= ios) & cut[rest]] if cut[i] else rest[:0]
            if pieces.size:
                b[i, :2] = np.minimum(b[i, :2], b[pieces, :2].min(0))
                b[i, 2:] = np.maximum(b[i, 2:], b[pieces, 2:].max(0))
                areas[i] = (b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1])
                grew = True
    k = np.asarray(keep, np.int64)
    return order[k], b[k]
