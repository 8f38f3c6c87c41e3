"""Per-image statistics a line watches for drift, computed the same way on the training data (at the end of
training, recorded in the model) and on every image the line inspects.

* ``brightness``: mean grey level (0-255);
* ``contrast``: standard deviation of the grey levels;
* ``sharpness``: variance of the Laplacian of the grey image (a dirty or defocused lens lowers it).

Images are reduced to at most `STATS_SIDE` pixels on the long side first (INTER_AREA), so the numbers do not
depend on the camera resolution more than they must and cost well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["STATS_SIDE", "image_stats", "summarize"]

STATS_SIDE = 256


def image_stats(image: NDArray[Any]) -> dict[str, float]:
    """``{"brightness", "contrast", "sharpness"}`` of one image (BGR, BGRA, grey; uint8 or uint16)."""
    import cv2

    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    grey: NDArray[Any] = (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 and img.shape[2] == 3
                          else img.reshape(img.shape[:2]))
    h, w = int(grey.shape[0]), int(grey.shape[1])
    scale = STATS_SIDE / max(h, w)
    if scale < 1:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    g = grey.astype(np.float32)
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=3)
    return {"brightness": float(g.mean()), "contrast": float(g.std()), "sharpness": float(lap.var())}


def summarize(values: Sequence[float] | NDArray[np.float64]) -> dict[str, float]:
    """``{"n", "mean", "std", "p5", "p50", "p95"}`` of a sample (empty: ``n`` 0 and zeros)."""
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return {"n": 0, "mean": 0.0, "std": 0.0, "p5": 0.0, "p50": 0.0, "p95": 0.0}
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "p5": float(p5), "p50": float(p50),
            "p95": float(p95)}
