"""Prediction files: read COCO results JSON or EdgeVision's own predictions JSON into canonical
records paired with a ground-truth dataset, and write the EdgeVision format.

EdgeVision predictions JSON (schema ``edgevision.predictions/1``)::

    {
      "schema": "edgevision.predictions/1",
      "classes": ["crack", "squat"],            # class names; class_ids index this list
      "images": [
        {"name": "val/img 1.png",                # the gt record's name (its path inside the dataset)
         "boxes": [[x1, y1, x2, y2], ...],      # absolute pixels, xyxy
         "class_ids": [0, 1, ...],
         "scores": [0.91, 0.40, ...]},
        ...
      ]
    }

Images listed with no boxes are images with no detections; gt images not listed have none either.
``classes`` may be in another order than the dataset's label map (ids are remapped by name) but
every name must be one of the dataset's classes.

COCO results JSON: a list of ``{"image_id" | "file_name", "category_id", "bbox": [x, y, w, h],
"score"}``. ``image_id`` is resolved through the gt records' ``meta["coco_id"]`` (set by the COCO
reader), ``file_name`` through the record name (or, when unique, its base name). ``category_id`` is
resolved through ``LabelMap.source_ids`` when the dataset has them (COCO category ids, ...), else
it is the canonical id + 1 (the convention `edgevision.evaluate.coco` uses).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import DatasetError
from edgevision.core.io import load_json

log = logging.getLogger(__name__)

SCHEMA = "edgevision.predictions/1"


def write_predictions(path: Path | str, preds: Sequence[ImageRecord], labels: LabelMap) -> Path:
    """Write prediction records as EdgeVision predictions JSON (atomically: temp file, then rename).

    Raises:
        DatasetError: a record with boxes but no scores.
    """
    images = []
    for p in preds:
        if len(p) and p.scores is None:
            raise DatasetError("prediction record has boxes but no scores", where=p.name)
        images.append({"name": p.name, "boxes": p.boxes.tolist(), "class_ids": p.class_ids.tolist(),
                       "scores": [] if p.scores is None else p.scores.tolist()})
    from edgevision.core.io import write_atomic

    return write_atomic(path, json.dumps({"schema": SCHEMA, "classes": list(labels.names), "images": images},
                                         ensure_ascii=False) + "\n")


def read_predictions(path: Path | str, gt: Sequence[ImageRecord], labels: LabelMap) -> list[ImageRecord]:
    """Read a predictions file (either format, told apart by its top level) against the ground truth.

    Returns:
        One record per gt image (same name, size, split and path; boxes, class ids in ``labels``
        and scores of the detections; empty when the file has none for the image).

    Raises:
        DatasetError: malformed file, an image or class not in the ground truth, a bad box or score.
    """
    path = Path(path)
    data = load_json(path)
    if isinstance(data, list):
        return _read_coco_results(data, str(path), gt, labels)
    if isinstance(data, dict) and "images" in data:
        return _read_edgevision(data, str(path), gt, labels)
    raise DatasetError("expected a COCO results list or an EdgeVision predictions object "
                       f"{{'classes', 'images'}}, got {type(data).__name__}", where=str(path))


def _records(gt: Sequence[ImageRecord], found: dict[int, list[tuple[list[float], int, float]]]) -> list[ImageRecord]:
    out = []
    for i, r in enumerate(gt):
        dets = found.get(i, [])
        out.append(ImageRecord(
            name=r.name, size_hw=r.size_hw, path=r.path, split=r.split, meta=dict(r.meta),
            boxes=np.array([d[0] for d in dets], dtype=np.float64).reshape(-1, 4),
            class_ids=np.array([d[1] for d in dets], dtype=np.int64),
            scores=np.array([d[2] for d in dets], dtype=np.float32),
        ))
    return out


def _number_list(v: Any, n: int | None, where: str, what: str) -> list[float]:
    if not isinstance(v, list) or (n is not None and len(v) != n) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x) for x in v):
        exp = f"{n} numbers" if n is not None else "a list of numbers"
        raise DatasetError(f"{what}: expected {exp}, got {v!r}", where=where)
    return [float(x) for x in v]


def _read_coco_results(data: list[Any], where: str, gt: Sequence[ImageRecord], labels: LabelMap) -> list[ImageRecord]:
    by_id = {r.meta["coco_id"]: i for i, r in enumerate(gt) if "coco_id" in r.meta}
    by_name = {r.name: i for i, r in enumerate(gt)}
    base: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(gt):
        base[r.name.rsplit("/", 1)[-1]].append(i)
    cat_ids = labels.source_ids if labels.source_ids is not None else [c + 1 for c in range(len(labels))]
    by_cat = {int(c): k for k, c in enumerate(cat_ids)}
    found: dict[int, list[tuple[list[float], int, float]]] = defaultdict(list)
    for n, d in enumerate(data):
        at = f"{where}:[{n}]"
        if not isinstance(d, dict):
            raise DatasetError(f"expected an object, got {type(d).__name__}", where=at)
        if "file_name" in d:
            fn = str(d["file_name"])
            i = by_name.get(fn)
            if i is None and len(base.get(fn.rsplit("/", 1)[-1], [])) == 1:
                i = base[fn.rsplit("/", 1)[-1]][0]
            if i is None:
                raise DatasetError(f"file_name '{fn}' is not an image of the ground truth ({len(gt)} images)", where=at)
        elif "image_id" in d:
            if not by_id:
                raise DatasetError(f"image_id {d['image_id']!r} cannot be resolved: the ground truth has no COCO "
                                   "image ids (it was not read from COCO); give file_name instead", where=at)
            i = by_id.get(d["image_id"])
            if i is None:
                raise DatasetError(f"image_id {d['image_id']!r} is not an image of the ground truth", where=at)
        else:
            raise DatasetError("expected image_id or file_name", where=at)
        k = by_cat.get(d.get("category_id"))  # type: ignore[arg-type]
        if k is None:
            raise DatasetError(f"category_id {d.get('category_id')!r} is not a class of the dataset; expected one "
                               f"of {sorted(by_cat)} ({', '.join(labels.names)})", where=at)
        x, y, w, h = _number_list(d.get("bbox"), 4, at, "bbox [x, y, w, h]")
        if w < 0 or h < 0:
            raise DatasetError(f"bbox width/height must be >= 0, got w={w} h={h}", where=at)
        score = _number_list([d.get("score")], 1, at, "score")[0]
        found[i].append(([x, y, x + w, y + h], k, score))
    return _records(gt, found)


def _read_edgevision(data: dict[str, Any], where: str, gt: Sequence[ImageRecord], labels: LabelMap) -> list[ImageRecord]:
    classes = data.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DatasetError(f"'classes': expected a list of class names, got {classes!r}", where=where)
    unknown = [c for c in classes if c not in labels.names]
    if unknown:
        raise DatasetError(f"classes {unknown} are not in the dataset's classes {labels.names}", where=where)
    remap = np.array([labels.names.index(c) for c in classes], dtype=np.int64)
    by_name = {r.name: i for i, r in enumerate(gt)}
    found: dict[int, list[tuple[list[float], int, float]]] = {}
    images = data["images"]
    if not isinstance(images, list):
        raise DatasetError(f"'images': expected a list, got {type(images).__name__}", where=where)
    for n, im in enumerate(images):
        at = f"{where}:images[{n}]"
        if not isinstance(im, dict) or not isinstance(im.get("name"), str):
            raise DatasetError("expected an object with a 'name'", where=at)
        i = by_name.get(im["name"])
        if i is None:
            raise DatasetError(f"image '{im['name']}' is not in the ground truth ({len(gt)} images); check the split "
                               "and the image names", where=at)
        if i in found:
            raise DatasetError(f"image '{im['name']}' is listed twice", where=at)
        boxes = im.get("boxes", [])
        if not isinstance(boxes, list):
            raise DatasetError(f"boxes: expected a list of [x1, y1, x2, y2], got {boxes!r}", where=at)
        m = len(boxes)
        bs = [_number_list(b, 4, at, f"boxes[{j}]") for j, b in enumerate(boxes)]
        cls = _number_list(im.get("class_ids", []), m, at, "class_ids")
        sc = _number_list(im.get("scores", []), m, at, "scores")
        bad = [c for c in cls if not c.is_integer() or not 0 <= c < len(classes)]
        if bad:
            raise DatasetError(f"class_ids: expected integers in 0..{len(classes) - 1}, got {bad[0]}", where=at)
        found[i] = [(b, int(remap[int(c)]), s) for b, c, s in zip(bs, cls, sc)]
    return _records(gt, found)
