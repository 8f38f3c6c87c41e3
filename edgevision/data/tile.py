"""Slice large images into overlapping tiles and carry the annotations along.

Tiny defects on 4000-px line-scan images vanish when a detector resizes the whole frame to 640 px;
training on tiles keeps them at full resolution. This module holds:

* `tile_windows`: the pure slicing geometry (like SAHI's ``get_slice_bboxes``, with the semantics
  stated below);
* `clip_boxes_to_window` and `tile_to_source`: pure box functions into and out of a tile's frame;
* `tile_dataset`: reads each image once, writes the tiles as PNG and returns a canonical `Dataset`
  whose records are the tiles, with counts of what happened to every object.

Conventions (the continuous pixel frame of `edgevision.core.boxes`):

* Windows are ``[x1, y1, x2, y2]`` integer xyxy in the source image. They cover every pixel. In each
  row and column the last window is shifted back to end exactly at the image edge instead of being
  cut short, so every tile has the same size whenever the image is at least one tile large. A
  dimension smaller than the tile gives one window of the image's size in that dimension: tiles are
  never padded or upscaled (the detector's letterboxing handles small tiles).
* ``stride = round_half_up(tile * (1 - overlap))``, at least 1; ``overlap`` is a fraction of the tile
  size in ``[0, 1)``. Overlap 0 with an image a multiple of the tile size is an exact partition. The
  shifted last window may overlap its neighbour by more than ``overlap``.
* Visibility of an object in a tile = (area of its box inside the tile) / (area of its box inside the
  image). Boxes are first clipped to the image, so a box that spills outside the frame (which
  ``validate`` reports) is judged by its visible part. Zero-area boxes have visibility 0 and are
  dropped (counted).
* An object is kept in a tile when ``visibility >= min_visibility`` and ``visibility > 0``; its box
  becomes the clipped box in tile coordinates. Its pixels stay in tiles where it is dropped (the
  usual trade-off of tiling; a lower ``min_visibility`` keeps more fragments).
* Shapes: polygons are clipped to the tile (Sutherland–Hodgman, numpy; exact for the rectangle
  window, a concave polygon may keep zero-width bridges along the tile edge, which adds no area);
  RLE masks are cropped exactly; polylines are kept when wholly inside the tile, otherwise the shape
  is dropped and counted (the box stays). Attributes, scores and the split are kept.
* Tiles are written as PNG: lossless, so tiny defects are not blurred by a second JPEG generation,
  and 16-bit, grey and alpha images survive unchanged (pixels are read with ``IMREAD_UNCHANGED``,
  which also ignores EXIF orientation, matching the stored frame the boxes refer to).
* Background tiles (no object left: from background images, or from parts of images without
  objects) are kept with probability ``keep_empty``, decided by a hash of ``(seed, source name,
  window)``: deterministic for a seed, independent of the order and of the other images.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgevision.core.boxes import as_boxes, box_area, clip_xyxy
from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError
from edgevision.core.geometry import RLE, Polygon, Polyline, Shape, clip_polygon_to_window
from edgevision.core.report import OnError, Report

log = logging.getLogger(__name__)

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]

TILE_MAP_FILE = "tiles.json"
"""Name of the tile map the ``tile`` command writes inside its output dataset."""


# -- geometry (pure) --------------------------------------------------------------------------
def _starts(n: int, t: int, stride: int) -> list[int]:
    """Window starts along one dimension of length ``n`` for tiles of length ``t``."""
    if n <= t:
        return [0]
    return [*range(0, n - t, stride), n - t]


def tile_stride(tile: int, overlap: float) -> int:
    """Step between window starts: ``round_half_up(tile * (1 - overlap))``, at least 1."""
    return max(1, math.floor(tile * (1.0 - overlap) + 0.5))


def tile_windows(size_hw: tuple[int, int], tile_hw: tuple[int, int], overlap: float) -> I64:
    """Windows that slice an image into overlapping tiles of equal size.

    Args:
        size_hw: image height and width in pixels.
        tile_hw: tile height and width in pixels.
        overlap: overlap between neighbouring tiles as a fraction of the tile size, in ``[0, 1)``.

    Returns:
        ``(K, 4)`` int64 xyxy windows, row by row (top to bottom, left to right). Every pixel is in
        at least one window; each window is ``tile_hw`` large, except along a dimension where the
        image is smaller than the tile (one window of the image's size there, no upscaling).

    Raises:
        ValueError: for non-positive sizes or an overlap outside ``[0, 1)``.
    """
    h, w = (int(v) for v in size_hw)
    th, tw = (int(v) for v in tile_hw)
    if min(h, w) <= 0 or min(th, tw) <= 0:
        raise ValueError(f"tile_windows: expected positive sizes, got image {h}x{w} (h x w) and tile {th}x{tw}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile_windows: expected overlap in [0, 1), got {overlap}")
    ys = _starts(h, th, tile_stride(th, overlap))
    xs = _starts(w, tw, tile_stride(tw, overlap))
    out = [[x, y, x + min(tw, w), y + min(th, h)] for y in ys for x in xs]
    return np.array(out, dtype=np.int64).reshape(-1, 4)


def clip_boxes_to_window(boxes_xyxy: ArrayLike, window: ArrayLike) -> tuple[F64, F64]:
    """Clip boxes to a window and express them in the window's (tile's) frame.

    Args:
        boxes_xyxy: ``(N, 4)`` boxes in source-image pixels.
        window: ``(4,)`` xyxy window in source-image pixels.

    Returns:
        ``(clipped, visibility)``: ``(N, 4)`` boxes clipped to the window and shifted so the window's
        top-left corner is ``(0, 0)`` (a box outside the window collapses to zero area on its edge),
        and ``(N,)`` visibility = clipped area / original area in ``[0, 1]`` (0 for a zero-area box).
    """
    b = as_boxes(boxes_xyxy)
    x1, y1, x2, y2 = (float(v) for v in np.asarray(window, dtype=np.float64).reshape(4))
    clipped = b.copy()
    clipped[:, [0, 2]] = np.clip(b[:, [0, 2]], x1, x2) - x1
    clipped[:, [1, 3]] = np.clip(b[:, [1, 3]], y1, y2) - y1
    area = box_area(b)
    inter = box_area(clipped)
    vis = np.divide(inter, area, out=np.zeros_like(area), where=area > 0)
    return clipped, vis


def tile_to_source(boxes_in_tile: ArrayLike, window: ArrayLike) -> F64:
    """Map ``(N, 4)`` xyxy boxes (predictions) from a tile's frame back to the source image."""
    b = as_boxes(boxes_in_tile).copy()
    x1, y1 = (float(v) for v in np.asarray(window, dtype=np.float64).reshape(4)[:2])
    b[:, [0, 2]] += x1
    b[:, [1, 3]] += y1
    return b


def _shape_in_window(shape: Shape, window: I64, source_hw: tuple[int, int],
                     decoded: Callable[[RLE], NDArray[np.uint8]] = RLE.decode) -> Shape | None:
    """A shape clipped to the window in tile coordinates, or None when it cannot be carried.

    ``decoded`` turns an RLE into its dense mask (the caller caches it across the tiles of an image).
    """
    x1, y1, x2, y2 = (int(v) for v in window)
    if isinstance(shape, Polygon):
        rings = clip_polygon_to_window(shape.rings, window)
        return Polygon(rings) if rings else None
    if isinstance(shape, RLE):
        if tuple(shape.size_hw) != tuple(source_hw):
            return None
        crop = decoded(shape)[y1:y2, x1:x2]
        return RLE.encode(crop) if crop.any() else None
    if isinstance(shape, Polyline):
        p = shape.points
        inside = (p[:, 0] >= x1) & (p[:, 0] <= x2) & (p[:, 1] >= y1) & (p[:, 1] <= y2)
        return Polyline(p - np.array([x1, y1], dtype=np.float64)) if inside.all() else None
    return None


# -- options and results ----------------------------------------------------------------------
@dataclass(frozen=True)
class TileOptions:
    """How to tile (validated on construction).

    Attributes:
        size: tile side in pixels (square tiles).
        overlap: fraction of the tile shared with the neighbour, ``[0, 1)``.
        min_visibility: keep an object in a tile when at least this fraction of it is inside,
            ``[0, 1]`` (0 keeps every fragment).
        keep_empty: probability of keeping a background tile, ``[0, 1]``.
        seed: seed of the background-tile draw.
    """

    size: int = 640
    overlap: float = 0.2
    min_visibility: float = 0.5
    keep_empty: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"--size: expected a tile side of at least 1 pixel, got {self.size}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"--overlap: expected a fraction in [0, 1), got {self.overlap}")
        if not 0.0 <= self.min_visibility <= 1.0:
            raise ConfigError(f"--min-visibility: expected a fraction in [0, 1], got {self.min_visibility}")
        if not 0.0 <= self.keep_empty <= 1.0:
            raise ConfigError(f"--keep-empty: expected a probability in [0, 1], got {self.keep_empty}")

    @property
    def tile_hw(self) -> tuple[int, int]:
        return (self.size, self.size)


@dataclass(frozen=True)
class TileOrigin:
    """Where a tile comes from: the source image's name and size, and the window in it."""

    source: str
    window: tuple[int, int, int, int]
    source_size_hw: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "window": list(self.window), "source_size_hw": list(self.source_size_hw)}


@dataclass
class TileResult:
    """The tiled dataset and what happened to every tile and object.

    Attributes:
        dataset: one record per tile written; ``meta`` holds ``source``, ``window``, ``source_size_hw``.
        origins: tile name -> origin, for every tile written.
        report: problems met (unreadable images skipped under ``skip``).
        sources: source images tiled.
        windows: tiles cut (written or not).
        background_kept / background_dropped: tiles without objects kept / dropped by ``keep_empty``.
        objects_in: objects in the source images tiled.
        objects_kept: source objects present in at least one tile.
        objects_dropped: source objects below ``min_visibility`` in every tile (never present).
        objects_split: kept objects that no tile holds whole (present only as parts).
        instances: boxes in the tiles (an object in two overlapping tiles counts twice).
        fragments_dropped: (object, tile) pairs with a visible part below ``min_visibility``.
        shapes_dropped: shapes that could not be carried into a tile (the box was kept).
    """

    dataset: Dataset
    origins: dict[str, TileOrigin] = field(default_factory=dict)
    report: Report = field(default_factory=Report)
    sources: int = 0
    windows: int = 0
    background_kept: int = 0
    background_dropped: int = 0
    objects_in: int = 0
    objects_kept: int = 0
    objects_dropped: int = 0
    objects_split: int = 0
    instances: int = 0
    fragments_dropped: int = 0
    shapes_dropped: int = 0

    @property
    def tiles(self) -> int:
        """Tiles written."""
        return len(self.dataset)

    def tile_map(self, options: TileOptions | None = None) -> dict[str, Any]:
        """The JSON-ready tile map: tile name -> ``{source, window, source_size_hw}``."""
        doc: dict[str, Any] = {"version": 1}
        if options is not None:
            doc["options"] = {"size": options.size, "overlap": options.overlap,
                              "min_visibility": options.min_visibility, "keep_empty": options.keep_empty,
                              "seed": options.seed}
        doc["tiles"] = {name: o.to_dict() for name, o in self.origins.items()}
        return doc

    def counts(self) -> dict[str, int]:
        """Every count, by name (for summaries and ``--json``)."""
        keys = ("sources", "windows", "tiles", "background_kept", "background_dropped", "objects_in",
                "objects_kept", "objects_dropped", "objects_split", "instances", "fragments_dropped",
                "shapes_dropped")
        return {k: int(getattr(self, k)) for k in keys}


# -- the dataset operation --------------------------------------------------------------------
def keep_background(seed: int, source: str, window: ArrayLike, keep_empty: float) -> bool:
    """The deterministic background draw for one tile: hash of ``(seed, source, window)`` < p."""
    if keep_empty >= 1.0:
        return True
    if keep_empty <= 0.0:
        return False
    key = f"{seed}\0{source}\0{','.join(str(int(v)) for v in np.asarray(window).reshape(4))}".encode()
    u = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64
    return u < keep_empty


def tile_names(records: list[ImageRecord]) -> dict[str, str]:
    """Source name -> tile name prefix (``dir/stem``), unique across the dataset.

    Two sources with the same stem in the same folder (``a.jpg`` and ``a.png``) get their
    extension folded into the prefix (``a_jpg``, ``a_png``).
    """
    def stem_of(name: str) -> str:
        p = PurePosixPath(name)
        return str(p.with_suffix("")) if p.suffix else name

    seen: dict[str, int] = {}
    for r in records:
        seen[stem_of(r.name)] = seen.get(stem_of(r.name), 0) + 1
    out: dict[str, str] = {}
    for r in records:
        stem = stem_of(r.name)
        if seen[stem] > 1:
            p = PurePosixPath(r.name)
            stem = str(p.with_name(p.name.replace(".", "_")))
        out[r.name] = stem
    clash = [n for n, c in Counter(out.values()).items() if c > 1]
    if clash:
        names = [r.name for r in records if out[r.name] == clash[0]]
        raise DatasetError(f"images {names} would give tiles of the same name '{clash[0]}__x.._y...png'; "
                           "rename one", where=names[0], code="tile_name_clash")
    return out


def tile_name(prefix: str, window: ArrayLike) -> str:
    """``<dir/stem>__x<x1>_y<y1>.png``."""
    x1, y1 = (int(v) for v in np.asarray(window).reshape(4)[:2])
    return f"{prefix}__x{x1}_y{y1}.png"


def read_pixels(record: ImageRecord, report: Report) -> NDArray[Any] | None:
    """Decode a record's image as stored (any depth and channels, EXIF ignored), or None if unusable.

    Problems go through ``report`` (``image_missing``, ``image_corrupt``, ``image_size_mismatch``);
    under ``fail`` they raise `DatasetError`.
    """
    import cv2

    where = record.name
    if record.path is None or not Path(record.path).is_file():
        report.error("image_missing", where, f"image file not found: {record.path}; tiling needs the pixels")
        return None
    from edgevision.runtime.images import DEFAULT_MAX_PIXELS, ImageReadError, ImageTooLargeError, check_image_header

    try:
        data = np.fromfile(str(record.path), dtype=np.uint8)  # cv2.imread fails on non-ASCII paths on Windows
        if data.size:  # the pixel count from the header, before any decoder allocates it
            check_image_header(data, DEFAULT_MAX_PIXELS, "the header")
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except ImageTooLargeError as e:
        report.error("image_too_large", where, f"{record.path}: {e}")
        return None
    except (OSError, cv2.error, ImageReadError) as e:
        report.error("image_corrupt", where, f"image is not readable ({e.__class__.__name__}): {record.path}")
        return None
    if img is None:
        report.error("image_corrupt", where, f"image cannot be decoded: {record.path}")
        return None
    if img.shape[:2] != record.size_hw:
        report.error("image_size_mismatch", where,
                     f"annotation says {record.size_hw[0]}x{record.size_hw[1]} (h x w), image is "
                     f"{img.shape[0]}x{img.shape[1]}: boxes would not match the pixels; fix the size")
        return None
    return img


def write_png(img: NDArray[Any], path: Path) -> None:
    """Write a PNG through ``cv2.imencode`` (works for non-ASCII paths)."""
    import cv2

    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - PNG encodes every array cv2 decodes
        raise DatasetError(f"could not encode tile {path} as PNG", code="image_write")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def tile_dataset(
    dataset: Dataset,
    options: TileOptions,
    out_images_dir: Path,
    *,
    report: Report | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TileResult:
    """Tile every image of ``dataset``, writing the tiles as PNG under ``out_images_dir``.

    Args:
        dataset: the source dataset (not modified; its images must be on disk).
        options: tile size, overlap, visibility threshold, background fraction and seed.
        out_images_dir: folder for the tile images (records' ``path`` point there); tile names
            keep the source's sub-folders.
        report: error policy for unreadable images (``fail`` raises, ``skip`` drops the image and
            records it); a new ``fail`` report when None.
        progress: called with ``(images done, images total)`` after each source image.

    Returns:
        The tiled dataset (same label map) with its origins and counts.

    Raises:
        DatasetError: an image is missing, unreadable or not the annotated size under ``fail``.
    """
    report = report if report is not None else Report(OnError.FAIL)
    labels = LabelMap(list(dataset.labels.names),
                      None if dataset.labels.source_ids is None else list(dataset.labels.source_ids),
                      None if dataset.labels.extra is None else [dict(e) for e in dataset.labels.extra])
    result = TileResult(Dataset(labels=labels, root=Path(out_images_dir),
                                meta={k: v for k, v in dataset.meta.items() if k != "format"}), report=report)
    prefixes = tile_names(dataset.images)
    total = len(dataset.images)
    for done, rec in enumerate(dataset.images, start=1):
        with report.guard(rec.name) as g:
            img = read_pixels(rec, report)
        if g.ok and img is not None:
            _tile_one(rec, img, prefixes[rec.name], options, Path(out_images_dir), result)
        if progress is not None:
            progress(done, total)
    log.info("tiled %d images into %d tiles (%d windows)", result.sources, result.tiles, result.windows)
    return result


def _tile_one(rec: ImageRecord, img: NDArray[Any], prefix: str, options: TileOptions, out_dir: Path,
              result: TileResult) -> None:
    windows = tile_windows(rec.size_hw, options.tile_hw, options.overlap)
    boxes = clip_xyxy(rec.boxes, rec.size_hw)  # visibility relative to the part inside the image
    best = np.zeros(len(rec))
    masks: dict[int, NDArray[np.uint8]] = {}  # RLE decoded once per image, not once per tile

    def decoded(rle: RLE) -> NDArray[np.uint8]:
        return masks[id(rle)] if id(rle) in masks else masks.setdefault(id(rle), rle.decode())

    result.sources += 1
    result.windows += len(windows)
    result.objects_in += len(rec)
    for win in windows:
        clipped, vis = clip_boxes_to_window(boxes, win)
        keep = (vis >= options.min_visibility) & (vis > 0)
        best = np.maximum(best, np.where(keep, vis, 0.0))
        result.fragments_dropped += int(((vis > 0) & ~keep).sum())
        if not keep.any():
            if not keep_background(options.seed, rec.name, win, options.keep_empty):
                result.background_dropped += 1
                continue
            result.background_kept += 1
        tile = _tile_record(rec, win, clipped, keep, tile_name(prefix, win), out_dir, result, decoded)
        x1, y1, x2, y2 = (int(v) for v in win)
        write_png(img[y1:y2, x1:x2], out_dir / tile.name)
        result.dataset.images.append(tile)
        result.instances += len(tile)
    kept = best > 0
    result.objects_kept += int(kept.sum())
    result.objects_dropped += int((~kept).sum())
    result.objects_split += int((kept & (best < 1.0)).sum())


def _tile_record(rec: ImageRecord, win: I64, clipped: F64, keep: NDArray[np.bool_], name: str, out_dir: Path,
                 result: TileResult, decoded: Callable[[RLE], NDArray[np.uint8]]) -> ImageRecord:
    idx = np.flatnonzero(keep)
    shapes: list[Shape | None] | None = None
    if rec.shapes is not None:
        shapes = []
        for i in idx:
            src = rec.shapes[i]
            got = None if src is None else _shape_in_window(src, win, rec.size_hw, decoded)
            result.shapes_dropped += int(src is not None and got is None)
            shapes.append(got)
        shapes = shapes if any(s is not None for s in shapes) else None
    if name in result.origins:  # pragma: no cover - `tile_names` makes names unique
        raise DatasetError(f"tile name '{name}' is not unique", where=rec.name, code="tile_name_clash")
    origin = TileOrigin(rec.name, tuple(int(v) for v in win), rec.size_hw)  # type: ignore[arg-type]
    result.origins[name] = origin
    return ImageRecord(
        name=name,
        size_hw=(int(win[3] - win[1]), int(win[2] - win[0])),
        boxes=clipped[idx],
        class_ids=rec.class_ids[idx],
        path=out_dir / name,
        scores=None if rec.scores is None else rec.scores[idx],
        shapes=shapes,
        attributes=None if rec.attributes is None else [dict(rec.attributes[i]) for i in idx],
        split=rec.split,
        meta=origin.to_dict(),
    )
