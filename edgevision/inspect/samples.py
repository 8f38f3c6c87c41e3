"""Canonical records to FiftyOne samples and back.

One `ImageRecord` is one ``fo.Sample``:

* ``filepath``: the image's absolute path (FiftyOne shows images from disk; nothing is copied);
  ``metadata``: ``fo.ImageMetadata(width, height)`` from the record, so FiftyOne never re-reads sizes;
* ``tags``: the split (``train`` / ``val`` / ``test``: FiftyOne's convention), also the ``split`` field;
* ``ev_name``: the record's name (its path inside the dataset, what writers name files after);
  ``ev_meta``: the record's ``meta`` as JSON text (COCO ids, VOC header fields) for round trips;
* ``ground_truth`` / ``predictions``: ``fo.Detections``. A box ``xyxy`` in pixels becomes FiftyOne's
  relative ``[x, y, w, h]``; object attributes (``difficult``, ``occluded``, ...) become attributes of
  the detection (names FiftyOne reserves, or that are not identifiers, go to ``ev_attrs`` as JSON);
  ``ev_ignore`` marks objects EdgeVision's evaluator ignores (crowd, and difficult under
  ``difficult="ignore"``): it is the crowd attribute FiftyOne's evaluation is told to use; a polygon,
  polyline or RLE mask rides along as ``ev_shape`` (JSON) and comes back only while the box still
  fits it (an edited box drops its stale shape).

Back from FiftyOne (`sample_to_record`), boxes are rounded to 1e-6 pixel so that integer pixel boxes
come back exactly.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import DatasetError
from edgevision.core.geometry import RLE, Polygon, Polyline, Shape

log = logging.getLogger(__name__)

GT_FIELD = "ground_truth"
PRED_FIELD = "predictions"

_RESERVED = frozenset({"id", "_id", "label", "bounding_box", "confidence", "mask", "mask_path", "index", "tags",
                       "attributes", "instance", "_cls"})
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_OURS = ("ev_", "eval")  # our own attributes and FiftyOne's evaluation ones (eval, eval_id, eval_iou, ...)


def _plain(v: Any) -> Any:
    """A value MongoDB can store: numpy scalars and arrays become Python ones."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def shape_to_json(shape: Shape) -> str:
    if isinstance(shape, Polygon):
        return json.dumps({"type": "polygon", "rings": shape.to_flat()})
    if isinstance(shape, Polyline):
        return json.dumps({"type": "polyline", "points": shape.points.reshape(-1).tolist()})
    counts = shape.counts if isinstance(shape.counts, str) else list(shape.counts)
    return json.dumps({"type": "rle", "counts": counts, "size": list(shape.size_hw)})


def shape_from_json(text: str) -> Shape:
    d = json.loads(text)
    if d["type"] == "polygon":
        return Polygon.from_flat(d["rings"])
    if d["type"] == "polyline":
        return Polyline(np.asarray(d["points"], dtype=np.float64).reshape(-1, 2))
    return RLE.from_coco({"counts": d["counts"], "size": d["size"]})


def to_detections(fo: Any, rec: ImageRecord, labels: LabelMap, ignore: Sequence[bool] | None = None) -> Any:
    """``fo.Detections`` of a record (ground truth, or predictions when it has ``scores``)."""
    h, w = rec.size_hw
    dets = []
    for i, (b, c) in enumerate(zip(rec.boxes.tolist(), rec.class_ids.tolist())):
        x1, y1, x2, y2 = b
        kw: dict[str, Any] = {"label": labels.names[c], "bounding_box": [x1 / w, y1 / h, (x2 - x1) / w, (y2 - y1) / h]}
        if rec.scores is not None:
            kw["confidence"] = float(rec.scores[i])
        det = fo.Detection(**kw)
        odd: dict[str, Any] = {}
        for k, v in (rec.attributes[i] if rec.attributes is not None else {}).items():
            if _IDENT.match(k) and k not in _RESERVED and not k.startswith(_OURS):
                det[k] = _plain(v)
            else:
                odd[k] = _plain(v)
        if odd:
            det["ev_attrs"] = json.dumps(odd)
        if ignore is not None:
            det["ev_ignore"] = bool(ignore[i])
        shape = rec.shapes[i] if rec.shapes is not None else None
        if shape is not None:
            det["ev_shape"] = shape_to_json(shape)
        dets.append(det)
    return fo.Detections(detections=dets)


def record_to_sample(fo: Any, rec: ImageRecord, labels: LabelMap, ignore: Sequence[bool] | None,
                     pred: ImageRecord | None = None) -> Any:
    """One ``fo.Sample`` holding a record's image, split, ground truth and (optionally) predictions.

    Raises:
        DatasetError: the record has no image file on disk (FiftyOne shows images from disk).
    """
    if rec.path is None or not Path(rec.path).is_file():
        raise DatasetError("image file not found; FiftyOne shows the images from disk, so every image of the "
                           "dataset must be there", where=rec.name)
    h, w = rec.size_hw
    sample = fo.Sample(filepath=str(Path(rec.path).resolve()), tags=[rec.split] if rec.split else [],
                       metadata=fo.ImageMetadata(width=w, height=h))
    sample["ev_name"] = rec.name
    sample["split"] = rec.split
    if rec.meta:
        sample["ev_meta"] = json.dumps(_plain(rec.meta))
    sample[GT_FIELD] = to_detections(fo, rec, labels, ignore)
    if pred is not None:
        sample[PRED_FIELD] = to_detections(fo, pred, labels)
    return sample


def _attributes(det: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in det.field_names:
        if k in _RESERVED or k.startswith(_OURS) or k.startswith("_"):
            continue
        v = det[k]
        if v is not None:
            out[k] = v
    if det.has_field("ev_attrs") and det["ev_attrs"]:
        out.update(json.loads(det["ev_attrs"]))
    return out


def sample_to_record(sample: Any, field: str, labels: LabelMap, name: str, size_hw: tuple[int, int]) -> tuple[
        ImageRecord, int]:
    """The record of one sample's label field (`to_detections` inverted).

    Args:
        field: the ``Detections`` field to read (ground truth, or predictions: they keep their scores).
        labels: the label map; a label not in it is appended (a class added while curating).
        name: the record name; size_hw: the image size.

    Returns:
        The record and how many stored shapes were dropped because their box was edited.

    Raises:
        DatasetError: the field holds something other than ``Detections``, or a box is not 4 numbers.
    """
    h, w = size_hw
    value = sample[field] if sample.has_field(field) else None
    dets = [] if value is None else getattr(value, "detections", None)
    if dets is None:
        raise DatasetError(f"field '{field}' holds {type(value).__name__}, expected Detections", where=name)
    boxes, cls, scores, attrs, shapes = [], [], [], [], []
    dropped = 0
    for det in dets:
        bb = det.bounding_box
        if bb is None or len(bb) != 4:
            raise DatasetError(f"{field}: object '{det.label}' has bounding box {bb!r}, expected [x, y, w, h]", where=name)
        x, y, bw, bh = (float(v) for v in bb)
        box = np.round(np.array([x * w, y * h, (x + bw) * w, (y + bh) * h]), 6)
        label = str(det.label)
        cls.append(labels.add(label) if label not in labels.names else labels.names.index(label))
        boxes.append(box)
        scores.append(float(det.confidence) if det.confidence is not None else np.nan)
        attrs.append(_attributes(det))
        shape = None
        if det.has_field("ev_shape") and det["ev_shape"]:
            shape = shape_from_json(det["ev_shape"])
            if not np.allclose(shape.bbox_xyxy(), box, atol=1.0):
                shape, dropped = None, dropped + 1
        shapes.append(shape)
    has_scores = bool(scores) and not np.isnan(scores).any()
    rec = ImageRecord(
        name=name, size_hw=(h, w), path=Path(sample.filepath),
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4), class_ids=np.array(cls, dtype=np.int64),
        scores=np.array(scores, dtype=np.float32) if has_scores else None,
        shapes=shapes if any(s is not None for s in shapes) else None,
        attributes=attrs if any(attrs) else None,
        split=sample["split"] if sample.has_field("split") and sample["split"] else None,
        meta=json.loads(sample["ev_meta"]) if sample.has_field("ev_meta") and sample["ev_meta"] else {},
    )
    return rec, dropped
