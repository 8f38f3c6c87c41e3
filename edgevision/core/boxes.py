"""Box geometry as pure functions over ``(N, 4)`` arrays. Names carry the layout.

Conventions:
    * ``xyxy``: absolute pixel coordinates of the box edges in a continuous frame where pixel
      ``(col, row)`` covers ``[col, col+1) x [row, row+1)``; a box over the whole ``W x H`` image is
      ``(0, 0, W, H)``. Valid boxes have ``x1 < x2`` and ``y1 < y2``.
    * ``xywh``: COCO style, top-left corner plus width and height, absolute pixels.
    * ``cxcywh_norm``: YOLO style, centre and size divided by the image width / height.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]


def as_boxes(boxes: ArrayLike) -> F64:
    """Return ``boxes`` as a float64 ``(N, 4)`` array (an empty input gives ``(0, 4)``).

    Raises:
        ValueError: when the input cannot be shaped ``(N, 4)``.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (N, 4), got {arr.shape}")
    return arr


def xywh_to_xyxy(xywh: ArrayLike) -> F64:
    """COCO ``(x, y, w, h)`` to ``(x1, y1, x2, y2)``."""
    b = as_boxes(xywh).copy()
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 + 1e308 from a file: inf, reported as box_nan
        b[:, 2:] += b[:, :2]
    return b


def xyxy_to_xywh(xyxy: ArrayLike) -> F64:
    """``(x1, y1, x2, y2)`` to COCO ``(x, y, w, h)``."""
    b = as_boxes(xyxy).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        b[:, 2:] -= b[:, :2]
    return b


def cxcywh_norm_to_xyxy(cxcywh: ArrayLike, size_hw: tuple[int, int]) -> F64:
    """YOLO normalized ``(cx, cy, w, h)`` to absolute ``xyxy`` for an image of ``size_hw``."""
    b = as_boxes(cxcywh)
    h, w = size_hw
    scale = np.array([w, h, w, h], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 from a label file: inf, reported as box_nan
        half = b[:, 2:] / 2.0
        return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1) * scale


def xyxy_to_cxcywh_norm(xyxy: ArrayLike, size_hw: tuple[int, int]) -> F64:
    """Absolute ``xyxy`` to YOLO normalized ``(cx, cy, w, h)`` for an image of ``size_hw``."""
    b = as_boxes(xyxy)
    h, w = size_hw
    scale = np.array([w, h, w, h], dtype=np.float64)
    out = np.concatenate([(b[:, :2] + b[:, 2:]) / 2.0, b[:, 2:] - b[:, :2]], axis=1)
    return out / scale


def box_area(xyxy: ArrayLike) -> F64:
    """Area of each box; inverted boxes give 0."""
    b = as_boxes(xyxy)
    with np.errstate(over="ignore"):  # a corner at 1e307 (kept as read, with a warning): inf, no stray warning
        return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def clip_xyxy(xyxy: ArrayLike, size_hw: tuple[int, int]) -> F64:
    """Clip boxes to the image frame ``[0, W] x [0, H]``."""
    b = as_boxes(xyxy).copy()
    h, w = size_hw
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    return b


def points_to_xyxy(points: ArrayLike) -> F64:
    """Tight box ``(1, 4)`` around ``(K, 2)`` points (polygon vertices, polyline points)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0:
        raise ValueError("points_to_xyxy: expected at least one point, got 0")
    return np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()]])


def box_problems(xyxy: ArrayLike, size_hw: tuple[int, int] | None) -> list[tuple[int, str, str]]:
    """Find the boxes a dataset should not contain.

    Args:
        xyxy: ``(N, 4)`` boxes.
        size_hw: image size, or None when unknown (the outside-image check is skipped).

    Returns:
        ``(index, code, message)`` per problem, with codes ``box_nan``, ``box_inverted``,
        ``box_empty`` (zero area) and ``box_outside`` (entirely outside the image).
    """
    b = as_boxes(xyxy)
    out: list[tuple[int, str, str]] = []
    for i, (x1, y1, x2, y2) in enumerate(b.tolist()):
        if not np.all(np.isfinite([x1, y1, x2, y2])):
            out.append((i, "box_nan", f"box has a non-finite coordinate: {[x1, y1, x2, y2]}"))
        elif x2 < x1 or y2 < y1:
            out.append((i, "box_inverted", f"box is inverted: x1={x1:g} x2={x2:g} y1={y1:g} y2={y2:g}"))
        elif x2 == x1 or y2 == y1:
            out.append((i, "box_empty", f"box has zero area: {[x1, y1, x2, y2]}"))
        elif size_hw is not None and (x2 <= 0 or y2 <= 0 or x1 >= size_hw[1] or y1 >= size_hw[0]):
            out.append((i, "box_outside", f"box {[x1, y1, x2, y2]} lies outside the {size_hw[1]}x{size_hw[0]} image"))
    return out


def box_masks(xyxy: ArrayLike, h: Any, w: Any, tol: Any = 0.0) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """Vectorized box checks, the array form of `box_problems`' rules.

    Args:
        xyxy: ``(N, 4)`` boxes; h, w: image height and width, scalars or ``(N,)``;
        tol: how far past the border (pixels) still counts as inside.

    Returns:
        ``(invalid, outside, partly)``, three ``(N,)`` masks: non-finite, inverted or empty boxes;
        valid boxes entirely outside the image; valid boxes partly outside (beyond ``tol``).
    """
    b = as_boxes(xyxy)
    x1, y1, x2, y2 = b.T
    with np.errstate(invalid="ignore"):
        invalid = ~np.isfinite(b).all(axis=1) | (x2 <= x1) | (y2 <= y1)
        outside = ~invalid & ((x2 <= 0) | (y2 <= 0) | (x1 >= w) | (y1 >= h))
        partly = ~invalid & ~outside & ((x1 < -tol) | (y1 < -tol) | (x2 > w + tol) | (y2 > h + tol))
    return invalid, outside, partly
