"""Object shapes beyond boxes, kept lazily: polygons, polylines and RLE masks.

Dense masks are never stored per dataset; `RLE.decode` makes one on demand for a single object.
Run-length encoding follows COCO (column-major, starting with a run of zeros) via pycocotools.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True, eq=False)
class Polygon:
    """One object's polygon, possibly in several parts.

    Attributes:
        rings: tuple of ``(K, 2)`` float64 arrays of absolute ``(x, y)`` vertices, ``K >= 3``.
    """

    rings: tuple[NDArray[np.float64], ...]

    @classmethod
    def from_flat(cls, flat: list[list[float]] | list[float]) -> Polygon:
        """From COCO style ``[[x1, y1, x2, y2, ...], ...]`` (or a single flat list)."""
        parts = flat if flat and isinstance(flat[0], (list, tuple, np.ndarray)) else [flat]
        rings = tuple(np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts)
        if not rings or any(len(r) < 3 for r in rings):
            raise ValueError(f"polygon: expected rings of at least 3 points, got {[len(r) for r in rings]}")
        return cls(rings)

    def to_flat(self) -> list[list[float]]:
        return [r.reshape(-1).tolist() for r in self.rings]

    def bbox_xyxy(self) -> NDArray[np.float64]:
        pts = np.concatenate(self.rings)
        return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])

    def area(self) -> float:
        """Shoelace area summed over the rings."""
        total = 0.0
        for r in self.rings:
            x, y = r[:, 0], r[:, 1]
            total += 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        return total

    def to_rle(self, size_hw: tuple[int, int]) -> RLE:
        from pycocotools import mask as mask_utils

        h, w = size_hw
        rles = mask_utils.frPyObjects(self.to_flat(), h, w)
        merged = mask_utils.merge(rles)
        return RLE(counts=merged["counts"].decode("ascii"), size_hw=(h, w))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Polygon) and len(self.rings) == len(other.rings) and all(
            a.shape == b.shape and np.allclose(a, b) for a, b in zip(self.rings, other.rings)
        )


@dataclass(frozen=True, eq=False)
class Polyline:
    """An open line (rails in RailSem19). ``points`` is ``(K, 2)``, ``K >= 2``."""

    points: NDArray[np.float64]

    def bbox_xyxy(self) -> NDArray[np.float64]:
        p = self.points
        return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Polyline) and self.points.shape == other.points.shape and bool(
            np.allclose(self.points, other.points)
        )


_COCO_RLE_CHARS = re.compile(r"[0-o]*")
"""Characters of a compressed COCO RLE string (pycocotools writes 6-bit groups from '0' = 48)."""


@dataclass(frozen=True)
class RLE:
    """A COCO run-length mask.

    Attributes:
        counts: compressed COCO string (as pycocotools writes it) or the uncompressed list of runs.
        size_hw: mask height and width.
    """

    counts: str | tuple[int, ...]
    size_hw: tuple[int, int]

    @classmethod
    def from_coco(cls, seg: dict[str, Any]) -> RLE:
        """From a COCO ``{"size": [h, w], "counts": ...}`` (compressed string or list of runs), checked.

        Raises:
            ValueError: ``size`` is not two positive integers (``true``, ``"5"`` and ``5.5`` are not),
                the mask is larger than `edgevision.core.safeload.MAX_IMAGE_PIXELS`, or ``counts`` is
                neither a COCO string nor a list of non-negative integer runs summing to ``h * w``.
        """
        from edgevision.core.errors import short_repr
        from edgevision.core.safeload import MAX_IMAGE_PIXELS

        if not isinstance(seg, dict):
            raise ValueError(f"RLE: expected an object with 'size' and 'counts', got {short_repr(seg)}")
        size = seg.get("size")
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(type(v) is int and v > 0 for v in size)):
            raise ValueError(f"RLE: expected size [height, width] as two positive integers, got {short_repr(size)}")
        h, w = size
        if h * w > MAX_IMAGE_PIXELS:
            raise ValueError(f"RLE: size {h}x{w} is {h * w:,} pixels; expected at most {MAX_IMAGE_PIXELS:,}")
        counts = seg.get("counts")
        if isinstance(counts, bytes):
            counts = counts.decode("ascii", "replace")
        if isinstance(counts, list):
            if not set(map(type, counts)) <= {int} or (counts and min(counts) < 0):
                raise ValueError(f"RLE: expected counts as non-negative integer runs, got {short_repr(counts)}")
            if sum(counts) != h * w:
                raise ValueError(f"RLE: runs sum to {sum(counts)}, expected {h}x{w}={h * w}")
            counts = tuple(counts)
        elif not isinstance(counts, str) or not _COCO_RLE_CHARS.fullmatch(counts):
            raise ValueError(f"RLE: expected counts as a COCO RLE string (characters '0' to 'o') or a list of "
                             f"runs, got {short_repr(counts)}")
        return cls(counts=counts, size_hw=(h, w))

    @classmethod
    def encode(cls, mask: NDArray[Any]) -> RLE:
        """From a dense ``(H, W)`` mask (non-zero is foreground)."""
        from pycocotools import mask as mask_utils

        enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8) > 0, dtype=np.uint8))
        return cls(counts=enc["counts"].decode("ascii"), size_hw=(mask.shape[0], mask.shape[1]))

    def _compressed(self) -> dict[str, Any]:
        from pycocotools import mask as mask_utils

        h, w = self.size_hw
        if isinstance(self.counts, str):
            return {"size": [h, w], "counts": self.counts.encode("ascii")}
        return mask_utils.frPyObjects({"size": [h, w], "counts": list(self.counts)}, h, w)

    def decode(self) -> NDArray[np.uint8]:
        """Dense ``(H, W)`` uint8 mask of 0 and 1."""
        from pycocotools import mask as mask_utils

        return mask_utils.decode(self._compressed())

    def area(self) -> float:
        from pycocotools import mask as mask_utils

        return float(mask_utils.area(self._compressed()))

    def bbox_xyxy(self) -> NDArray[np.float64]:
        from pycocotools import mask as mask_utils

        x, y, w, h = mask_utils.toBbox(self._compressed()).tolist()
        return np.array([x, y, x + w, y + h], dtype=np.float64)

    def to_coco(self, compressed: bool = True) -> dict[str, Any]:
        """COCO ``segmentation`` dict (compressed string counts by default)."""
        h, w = self.size_hw
        if compressed:
            c = self._compressed()["counts"]
            return {"size": [h, w], "counts": c.decode("ascii") if isinstance(c, bytes) else c}
        if isinstance(self.counts, tuple):
            return {"size": [h, w], "counts": list(self.counts)}
        m = self.decode().reshape(-1, order="F")
        bounds = np.concatenate([[0], np.flatnonzero(m[1:] != m[:-1]) + 1, [m.size]])
        runs = np.diff(bounds).astype(int).tolist()
        if m.size and m[0] == 1:
            runs = [0, *runs]
        return {"size": [h, w], "counts": runs}


def clip_polygon_to_window(rings: tuple[NDArray[np.float64], ...], window: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    """Clip polygon rings to a rectangular window (Sutherland–Hodgman) in the window's frame.

    Args:
        rings: ``(K, 2)`` vertex arrays in source-image pixels.
        window: ``(4,)`` xyxy window.

    Returns:
        The clipped rings, shifted to the window's frame; rings left with fewer than 3 vertices or
        no area are dropped (an empty tuple when nothing of the polygon is inside).
    """
    x1, y1, x2, y2 = (float(v) for v in np.asarray(window, dtype=np.float64).reshape(4))
    # each edge: (axis, bound, keep side sign): inside when sign * (p[axis] - bound) >= 0
    edges = ((0, x1, 1.0), (0, x2, -1.0), (1, y1, 1.0), (1, y2, -1.0))
    out: list[NDArray[np.float64]] = []
    for ring in rings:
        pts = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
        for axis, bound, sign in edges:
            pts = _clip_ring_edge(pts, axis, bound, sign)
            if len(pts) == 0:
                break
        if len(pts) >= 3 and Polygon((pts,)).area() > 0:
            out.append(pts - np.array([x1, y1]))
    return tuple(out)


def _clip_ring_edge(pts: NDArray[np.float64], axis: int, bound: float, sign: float) -> NDArray[np.float64]:
    """One Sutherland–Hodgman pass: keep the part of a closed ring on the inside of one edge."""
    if len(pts) == 0:
        return pts
    inside = sign * (pts[:, axis] - bound) >= 0
    if inside.all():
        return pts
    res: list[NDArray[np.float64]] = []
    prev, prev_in = pts[-1], bool(inside[-1])
    for cur, cur_in in zip(pts, inside.tolist()):
        if cur_in != prev_in:
            t = (bound - prev[axis]) / (cur[axis] - prev[axis])
            cross = prev + t * (cur - prev)
            cross[axis] = bound
            res.append(cross)
        if cur_in:
            res.append(cur)
        prev, prev_in = cur, cur_in
    return np.array(res, dtype=np.float64).reshape(-1, 2)


Shape = Polygon | Polyline | RLE
"""Optional per-object shape beside the box."""
