"""LabelMe JSON: one ``.json`` file per image with ``shapes`` and ``imagePath`` (read only).

Shapes read:
    * ``rectangle``: two corners in any order (four corners are tolerated) -> box;
    * ``polygon`` (also a shape without ``shape_type``, as older LabelMe writes) -> `Polygon` + box;
    * ``circle``: centre and a point on the circle -> the box around the circle (info finding);
    * ``line``, ``point``, ``linestrip``, ``points``, ``mask`` and unknown types are skipped with a
      ``shape_unsupported`` warning each.
    Each shape's ``label`` is its class; ``group_id``, ``flags`` (non-empty), ``description``
    (non-empty) and ``difficult`` become object attributes. Coordinates are LabelMe's continuous
    pixel coordinates (no shift). Classes are sorted by name unless the ``classes`` option lists them.

Images:
    ``imagePath`` is relative to the JSON file; backslashes and ``..`` that stay inside the dataset
    root are fine, a path leaving the root (or absolute) is a ``path_escape`` error. Stale names are
    forgiven through `ImageIndex` (info finding), then the JSON's own stem is tried. When no image
    file exists but the JSON embeds it (``imageData``, base64), the size is decoded from it, the
    record's ``path`` stays None and ``meta["embedded_image"]`` names the JSON that holds the
    pixels (``image_embedded`` warning): writers copy no image for it, so extract the images first
    (e.g. with ``labelme_export_json``) when a converted dataset needs them. ``imageHeight`` /
    ``imageWidth`` are checked against the real image (``size_mismatch`` warning). Image-level
    ``flags`` go to ``meta["flags"]``.

Splits: a JSON under a top-level folder named ``train``, ``val``/``valid``/``validation`` or
``test`` gets that split.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgevision.core.dataset import Dataset, ImageRecord
from edgevision.core.errors import DatasetError, short_repr
from edgevision.core.geometry import Polygon
from edgevision.core.io import ImageIndex
from edgevision.core.report import Report
from edgevision.core.safeload import image_size, load_json
from edgevision.formats import register_format
from edgevision.formats._readkit import (
    CheckedObjects,
    ClassCollector,
    ImageFinder,
    Unannotated,
    declared_size,
    files_under,
    head_matches,
    load_or_report,
    point_array,
    read_each,
    safe_name,
    settle_size,
    split_from_folder,
    unannotated_images,
)
from edgevision.formats.base import Detection, Format, Options

log = logging.getLogger(__name__)

_SKIPPED = ("line", "point", "points", "linestrip", "mask")


class LabelmeReadOptions(Options):
    """Reader options for ``labelme``.

    Attributes:
        classes: class names in id order; other labels are ``class_unknown`` errors. Default: the
            labels found, sorted.
        unannotated_images: images no JSON names: ``ignore`` (counted in an info finding) or keep
            as ``background`` images.
        check_image_sizes: read every image header to check ``imageHeight``/``imageWidth``.
    """

    classes: list[str] | None = None
    unannotated_images: Unannotated = "ignore"
    check_image_sizes: bool = True


def _is_labelme(data: Any) -> bool:
    return isinstance(data, dict) and "shapes" in data and "imagePath" in data


def _json_files(path: Path, report: Report) -> list[Path]:
    if path.is_file():
        return [path]
    return [p for p in files_under(path, report) if p.suffix.lower() == ".json"
            and not any(part.startswith(".") for part in p.relative_to(path).parts)]


def _geometry(kind: str, pts: NDArray[np.float64]) -> tuple[list[float], Polygon | None] | str:
    """Box and shape of one LabelMe shape, or the reason it cannot be read."""
    if kind == "rectangle":
        if len(pts) not in (2, 4):
            return f"a rectangle needs 2 corner points, got {len(pts)}"
    elif kind == "circle":
        if len(pts) != 2:
            return f"a circle needs a centre and a point on it, got {len(pts)} points"
        r = float(np.hypot(*(pts[1] - pts[0])))
        (cx, cy) = pts[0]
        return [cx - r, cy - r, cx + r, cy + r], None
    elif len(pts) < 3:
        return f"a polygon needs at least 3 points, got {len(pts)}"
    box = [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
    return [float(v) for v in box], (Polygon((pts,)) if kind == "polygon" else None)


def _shape_attributes(shape: dict[str, Any], where: str, report: Report) -> dict[str, Any]:
    """``group_id`` (an integer), ``flags`` (an object), ``description`` (a string) and ``difficult``
    (a bool or 0/1), as LabelMe writes them; another type is an ``attribute_malformed`` error."""
    attrs: dict[str, Any] = {}
    checks = (("group_id", lambda v: type(v) is int), ("flags", lambda v: isinstance(v, dict)),
              ("description", lambda v: isinstance(v, str)), ("difficult", lambda v: v in (0, 1) and type(v) in (int, bool)))
    for key, ok in checks:
        value = shape.get(key)
        if value is None or (key in ("flags", "description") and not value):  # absent or empty
            continue
        if not ok(value):
            report.error("attribute_malformed", where, f"expected '{key}' as LabelMe writes it "
                                                       f"({_ATTR_TYPES[key]}), got {short_repr(value)}")
            continue
        attrs[key] = bool(value) if key == "difficult" else dict(value) if key == "flags" else value
    return attrs


_ATTR_TYPES = {"group_id": "an integer or null", "flags": "an object", "description": "a string",
               "difficult": "true/false"}


def _embedded_size(data: dict[str, Any], where: str, report: Report) -> tuple[int, int] | None:
    """``(h, w)`` of the base64 ``imageData`` image, from its header only (bounded, see
    `edgevision.core.safeload.image_size`); None after an error when it does not decode or is too large."""
    raw = data["imageData"]
    if not isinstance(raw, str):
        report.error("image_corrupt", where, f"expected imageData as a base64 string, got {short_repr(raw)}")
        return None
    try:
        return image_size(base64.b64decode(raw, validate=False), where, "imageData")
    except (binascii.Error, ValueError) as e:
        report.error("image_corrupt", where, f"imageData does not decode to an image (not base64: "
                                             f"{e.__class__.__name__}); add the image file or re-save the JSON")
    except DatasetError as e:
        detail = e.detail if e.code == "image_too_large" else f"imageData does not decode to an image ({e.detail})"
        report.error(e.code or "image_corrupt", where, f"{detail}; add the image file or re-save the JSON")
    return None


@dataclass
class _Reader:
    root: Path
    options: LabelmeReadOptions
    report: Report
    index: ImageIndex
    classes: ClassCollector
    finder: ImageFinder

    def read_file(self, jpath: Path) -> ImageRecord | None:
        where, report = str(jpath), self.report
        data = load_or_report(load_json, jpath, report)
        if data is None:
            return None
        if not _is_labelme(data):
            report.warning("json_not_labelme", where, "no 'shapes' and 'imagePath' keys; not a LabelMe file, skipped")
            return None
        rel = jpath.relative_to(self.root)
        raw = data.get("imagePath") or ""
        if not isinstance(raw, str):
            report.error("path_malformed", where, f"expected imagePath as a string, got {short_repr(raw)}")
            raw = ""
        requested = safe_name(raw, where, report, base=rel.parent.as_posix()) if raw.strip() else None
        image = self.finder.find(self.index, requested, rel.with_suffix("").as_posix(), where)
        declared = declared_size(data.get("imageHeight"), data.get("imageWidth"), where, report,
                                 names=("imageHeight", "imageWidth"))
        meta: dict[str, Any] = {"annotation": rel.as_posix()}
        if image is None and data.get("imageData"):
            declared = _embedded_size(data, where, report)
            meta["embedded_image"] = rel.as_posix()
            report.warning("image_embedded", where, f"image file {short_repr(raw, 100)} not found; size read from "
                                                    "the embedded imageData, which writers do not copy")
        size = settle_size(declared, image, where, report, check=self.options.check_image_sizes)
        if size is None:
            return None
        if image is None and "embedded_image" not in meta:
            report.warning("image_missing", where, f"image {short_repr(raw, 100)} not found; kept with "
                                                   "imageHeight/imageWidth and no image file")
        flags = data.get("flags")
        if flags and not isinstance(flags, dict):
            report.error("attribute_malformed", where, f"expected flags as an object, got {short_repr(flags)}")
        elif flags:
            meta["flags"] = dict(flags)
        objs = CheckedObjects(size, report)
        shapes = data["shapes"]
        if not isinstance(shapes, list):
            report.error("shape_invalid", where, f"expected shapes as a list, got {short_repr(shapes)}")
            shapes = []
        for i, shape in enumerate(shapes):
            self._shape(shape, f"{where}:shape[{i}]", objs)
        name = self.finder.claim(image, requested or rel.with_suffix("").as_posix(), self.index, where)
        return objs.checked_record(name, path=image, split=split_from_folder(rel.parts[0] if len(rel.parts) > 1 else ""),
                                   meta=meta)

    def _shape(self, shape: Any, where: str, objs: CheckedObjects) -> None:
        report = self.report
        if not isinstance(shape, dict):
            report.error("shape_invalid", where, f"expected a shape object, got {type(shape).__name__}")
            return
        kind, label = shape.get("shape_type") or "polygon", shape.get("label")
        if not isinstance(kind, str):
            report.error("shape_invalid", where, f"expected shape_type as a string, got {short_repr(kind)}")
            return
        if label is not None and not isinstance(label, str):
            report.error("class_malformed", where, f"expected label as a string (a class name), got {short_repr(label)}")
            return
        label = (label or "").strip()
        if kind in _SKIPPED or kind not in ("rectangle", "polygon", "circle"):
            report.warning("shape_unsupported", where, f"shape_type {short_repr(kind)} ({short_repr(label)}) has no "
                                                       "box; skipped")
            return
        if not label:
            report.error("class_missing", where, "shape has no label; expected a class name")
            return
        try:
            geo = _geometry(kind, point_array(shape.get("points"), 1))
        except ValueError as e:
            geo = str(e)
        if isinstance(geo, str):
            report.error("shape_invalid", where, f"{kind} {short_repr(label)}: {geo}")
            return
        if kind == "circle":
            report.info("circle_as_box", where, f"circle {short_repr(label)} read as the box around it")
        attributes = _shape_attributes(shape, where, report)
        cid = self.classes.id_of(label, where, report)
        if cid is not None:
            objs.add_at(where, geo[0], cid, shape=geo[1], attributes=attributes)


class LabelmeFormat(Format):
    """LabelMe JSON (one file per image, rectangles and polygons)."""

    name = "labelme"
    description = "LabelMe JSON: one .json per image with 'shapes' and 'imagePath' (rectangles, polygons)"
    ReadOptions = LabelmeReadOptions
    can_read = True
    can_write = False

    def detect(self, path: Path) -> Detection | None:
        if path.is_file():
            files = [path] if path.suffix.lower() == ".json" else []
        else:
            files = list(islice(sorted(path.glob("*.json")), 3)) or list(islice(sorted(path.glob("*/*.json")), 3))
        for f in files:
            if not head_matches(f, rb'"shapes"\s*:', 1 << 16):  # LabelMe writes shapes first: no full parse of big JSON
                continue
            try:
                if _is_labelme(load_json(f)):
                    return Detection(0.8, f"LabelMe JSON with 'shapes' and 'imagePath' ({f.name})")
            except DatasetError:
                continue
        return None

    def read(self, path: Path, options: Options, report: Report) -> Dataset:
        assert isinstance(options, LabelmeReadOptions)
        root = path.parent if path.is_file() else path
        r = _Reader(root, options, report, ImageIndex(root), ClassCollector(options.classes), ImageFinder(report))
        files = _json_files(path, report)
        if not files:
            report.fatal("format_mismatch", str(path), "no LabelMe .json files found; expected one JSON per image")
        records = read_each(files, str, r.read_file, report)
        if not path.is_file():
            records += unannotated_images(r.index, r.finder, options.unannotated_images, str(root), report)
        log.info("read %d LabelMe images from %s", len(records), path)
        return Dataset(labels=r.classes.finish(records), images=records, root=root, meta={"format": self.name})


register_format(LabelmeFormat())
