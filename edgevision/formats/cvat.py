"""CVAT for images 1.1 XML (``annotations.xml``), read only.

Structure: ``<annotations><version>1.1</version><meta>`` with the labels in order under
``<task>``, ``<project>`` or ``<job>`` (``<labels><label><name>``), then one
``<image id name width height [subset]>`` per image holding its shapes. CVAT coordinates are already
continuous pixel coordinates (no 1-based shift).

Shapes read:
    * ``<box xtl ytl xbr ybr rotation>``: the box; a non-zero ``rotation`` (degrees about the box
      centre) gives the axis-aligned box enclosing the rotated rectangle and is kept as the
      ``rotation`` attribute;
    * ``<polygon points="x1,y1;x2,y2;...">``: `Polygon` + its box;
    * ``<polyline>``: `Polyline` + its box (a horizontal or vertical line's box is widened to 1 px, the
      thickness of the drawn line, so that it has an area);
    * ``<mask rle left top width height>``: CVAT's run-length code (runs alternate starting with 0s,
      row-major over the ``width x height`` patch at ``left, top``) becomes a COCO `RLE` over the whole
      image + the mask's tight box;
    * ``<points>``, ``<ellipse>``, ``<cuboid>``, ``<skeleton>`` are skipped with a
      ``shape_unsupported`` warning each; ``<tag>`` labels go to ``meta["tags"]``.
    ``occluded`` (bool), ``group_id`` and ``<attribute name="...">value</attribute>`` children become
    object attributes (``true``/``false`` -> bool, numbers -> int/float).

Splits: the image's ``subset`` attribute, else its task's ``<subset>`` (``Train`` -> train,
``Validation`` -> val, ``default`` -> no split). Images are looked up under ``images/`` beside the
XML (CVAT's export layout) or beside the XML; a missing image is kept with its declared size (path
None, ``image_missing`` warning). CVAT for video (``<track>``) is refused with a one-line error.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.boxes import points_to_xyxy
from edgevision.core.dataset import Dataset, ImageRecord
from edgevision.core.errors import short_repr, short_text
from edgevision.core.geometry import RLE, Polygon, Polyline, Shape
from edgevision.core.io import ImageIndex
from edgevision.core.report import Report
from edgevision.core.safeload import MAX_IMAGE_PIXELS
from edgevision.formats import register_format
from edgevision.formats._readkit import (
    CheckedObjects,
    ClassCollector,
    ImageFinder,
    declared_size,
    flag_value,
    head_matches,
    normalize_split,
    parse_xml_file,
    read_each,
    safe_name,
    scalar_value,
    settle_size,
)
from edgevision.formats.base import Detection, Format, Options

log = logging.getLogger(__name__)

_CVAT_ROOT = rb"<annotations[\s>]"
_BOX = ("xtl", "ytl", "xbr", "ybr")
_READ = ("box", "polygon", "polyline", "mask")
_SKIPPED = ("points", "ellipse", "cuboid", "skeleton")
_RUN = re.compile(r"[0-9]{1,10}")


class CvatReadOptions(Options):
    """Reader options for ``cvat``.

    Attributes:
        check_image_sizes: read every image header to check ``width``/``height`` (False trusts the XML).
    """

    check_image_sizes: bool = True


class _ShapeError(ValueError):
    """A shape that cannot be read; the message says what was expected and found."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def rotated_box_xyxy(box: list[float], degrees: float) -> list[float]:
    """Axis-aligned box enclosing ``box`` (xyxy) rotated by ``degrees`` about its centre."""
    x1, y1, x2, y2 = box
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    t = math.radians(degrees)
    ex = abs(hw * math.cos(t)) + abs(hh * math.sin(t))
    ey = abs(hw * math.sin(t)) + abs(hh * math.cos(t))
    return [cx - ex, cy - ey, cx + ex, cy + ey]


def _floats(el: Any, names: tuple[str, ...], finite: bool = True) -> list[float]:
    """Numbers from attributes ``names``; with ``finite``, ``nan``, ``inf`` and ``1e999`` are refused
    (box corners may be non-finite: the box checks report them as ``box_nan``)."""
    missing = [n for n in names if el.get(n) is None]
    if missing:
        raise _ShapeError("box_missing", f"<{el.tag}> lacks {', '.join(missing)}; expected {', '.join(names)}")
    try:
        values = [float(el.get(n)) for n in names]
    except ValueError:
        values = [math.nan]
        finite = True
    if finite and not all(map(math.isfinite, values)):
        raise _ShapeError("box_invalid", f"<{el.tag}> {', '.join(names)} must be numbers (finite), got "
                                         f"{short_repr([el.get(n) for n in names], 120)}")
    return values


def _ints(el: Any, names: tuple[str, ...]) -> list[int]:
    """Non-negative whole numbers (at most `MAX_IMAGE_PIXELS`) from attributes ``names``."""
    values = _floats(el, names)
    if not all(0 <= v <= MAX_IMAGE_PIXELS and v == int(v) for v in values):
        raise _ShapeError("shape_invalid", f"<{el.tag}> {', '.join(names)} must be whole numbers of pixels, got "
                                           f"{short_repr([el.get(n) for n in names], 120)}")
    return [int(v) for v in values]


def _points(el: Any, minimum: int) -> np.ndarray:
    """``(K, 2)`` points from ``points="x1,y1;x2,y2;..."``."""
    raw = el.get("points") or ""
    try:
        pts = np.array([[float(v) for v in p.split(",")] for p in raw.split(";") if p.strip()], dtype=np.float64)
    except ValueError:
        raise _ShapeError("shape_invalid", f"<{el.tag}> points must be 'x,y;x,y;...', got {short_repr(raw)}") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < minimum:
        raise _ShapeError("shape_invalid", f"<{el.tag}> needs at least {minimum} 'x,y' points, got {short_repr(raw)}")
    return pts


def _cvat_mask(el: Any, size_hw: tuple[int, int]) -> RLE:
    """A CVAT ``<mask>`` as a COCO RLE over the whole ``size_hw`` image."""
    left, top, w, h = _ints(el, ("left", "top", "width", "height"))
    tokens = [v.strip() for v in (el.get("rle") or "").split(",") if v.strip()]
    if not all(_RUN.fullmatch(t) for t in tokens):
        raise _ShapeError("shape_invalid", f"<mask> rle must be comma-separated run lengths (whole numbers), got "
                                           f"{short_repr(el.get('rle'))}")
    runs = [int(t) for t in tokens]
    if sum(runs) != w * h:
        raise _ShapeError("shape_invalid", f"<mask> runs sum to {sum(runs)}, expected width x height = {w}x{h} = {w * h}")
    H, W = size_hw
    if left < 0 or top < 0 or left + w > W or top + h > H:
        raise _ShapeError("shape_invalid", f"<mask> patch at left={left} top={top} of {w}x{h} exceeds the {W}x{H} image")
    patch = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8).reshape(h, w)
    full = np.zeros((H, W), dtype=np.uint8)
    full[top:top + h, left:left + w] = patch
    return RLE.encode(full)


def _geometry(el: Any, size_hw: tuple[int, int]) -> tuple[list[float], Shape | None]:
    """Box and shape of one CVAT shape element."""
    if el.tag == "box":
        box = _floats(el, _BOX, finite=False)
        rot = _floats(el, ("rotation",))[0] if el.get("rotation") is not None else 0.0
        return (rotated_box_xyxy(box, rot) if rot % 360 else box), None
    if el.tag == "polygon":
        pts = _points(el, 3)
        return points_to_xyxy(pts)[0].tolist(), Polygon((pts,))
    if el.tag == "polyline":
        pts = _points(el, 2)
        b = points_to_xyxy(pts)[0]
        for lo, hi in ((0, 2), (1, 3)):
            if b[hi] == b[lo]:
                b[lo], b[hi] = b[lo] - 0.5, b[hi] + 0.5
        return b.tolist(), Polyline(pts)
    rle = _cvat_mask(el, size_hw)
    return rle.bbox_xyxy().tolist(), rle


def _attributes(el: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if el.get("occluded") is not None:
        attrs["occluded"] = flag_value(el.get("occluded"))
    rot = _floats(el, ("rotation",))[0] if el.get("rotation") is not None else 0.0
    if rot % 360:
        attrs["rotation"] = rot
    if el.get("group_id") is not None:
        attrs["group_id"] = scalar_value(el.get("group_id"))
    for a in el.findall("attribute"):
        if a.get("name"):
            attrs[a.get("name")] = scalar_value(a.text)
    return attrs


def _labels(meta: Any) -> list[str] | None:
    """Class names in order from ``<meta>`` (task, project or job), or None when none are listed."""
    names: list[str] = []
    for label in meta.iterfind(".//labels/label") if meta is not None else []:
        n = (label.findtext("name") or "").strip()
        if n and n not in names and not (label.findtext("parent") or "").strip():  # skip skeleton points
            names.append(n)
    return names or None


def _task_subsets(meta: Any) -> dict[str | None, str | None]:
    """Task id -> subset; key None holds the subset of a single-task export."""
    out: dict[str | None, str | None] = {}
    for task in meta.iterfind(".//task") if meta is not None else []:
        subset = normalize_split(task.findtext("subset"))
        out[(task.findtext("id") or "").strip() or None] = subset
    if meta is not None and meta.find("task") is not None:
        out[None] = normalize_split(meta.find("task").findtext("subset"))
    return out


def _annotation_file(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() == ".xml" and head_matches(path, _CVAT_ROOT) else None
    if (path / "annotations.xml").is_file():
        return path / "annotations.xml"
    hits = [p for p in sorted(path.glob("*.xml")) if head_matches(p, _CVAT_ROOT)]
    return hits[0] if len(hits) == 1 else None


@dataclass
class _Reader:
    xml: Path
    options: CvatReadOptions
    report: Report
    index: ImageIndex
    classes: ClassCollector
    subsets: dict[str | None, str | None]
    finder: ImageFinder = field(init=False)

    def __post_init__(self) -> None:
        self.finder = ImageFinder(self.report)

    def read_image(self, el: Any, where: str) -> ImageRecord | None:
        report = self.report
        raw = (el.get("name") or "").strip()
        if not raw:
            report.error("path_empty", where, "<image> has no name; expected name=\"file.jpg\"")
        requested = safe_name(raw, where, report) if raw else None
        image = self.finder.find(self.index, requested, None, where)
        declared = declared_size(el.get("height"), el.get("width"), where, report, text=True)
        size = settle_size(declared, image, where, report, check=self.options.check_image_sizes)
        if size is None:
            return None
        if image is None:
            report.warning("image_missing", where, "image file not found; kept with the width/height of the XML")
        objs = CheckedObjects(size, report)
        tags = []
        for k, child in enumerate(el):
            owhere = f"{where}:{child.tag}[{k}]"
            if child.tag == "tag":
                tags.append(child.get("label"))
            elif child.tag in _READ:
                self._shape(child, owhere, size, objs)
            else:
                report.warning("shape_unsupported", owhere, f"<{short_text(str(child.tag), 40)}> "
                                                            f"({short_repr(child.get('label'))}) has no box; skipped")
        meta: dict[str, Any] = {"source_id": scalar_value(el.get("id"))} | ({"tags": tags} if tags else {})
        subset = el.get("subset")
        split = normalize_split(subset) if subset is not None else self.subsets.get(el.get("task_id"),
                                                                                     self.subsets.get(None))
        name = self.finder.claim(image, requested or f"image_{el.get('id')}", self.index, where)
        return objs.checked_record(name, path=image, split=split, meta=meta)

    def _shape(self, el: Any, where: str, size: tuple[int, int], objs: CheckedObjects) -> None:
        label = (el.get("label") or "").strip()
        if not label:
            self.report.error("class_missing", where, f"<{el.tag}> has no label; expected label=\"class name\"")
            return
        try:
            box, shape = _geometry(el, size)
            attributes = _attributes(el)
        except _ShapeError as e:
            self.report.error(e.code, where, f"{short_text(label, 100)}: {e}")
            return
        cid = self.classes.id_of(label, where, self.report)
        if cid is not None:
            objs.add_at(where, box, cid, shape=shape, attributes=attributes)


class CvatFormat(Format):
    """CVAT for images 1.1 XML."""

    name = "cvat"
    description = "CVAT for images 1.1: annotations.xml (+ images/) with boxes, polygons, polylines, masks"
    ReadOptions = CvatReadOptions
    can_read = True
    can_write = False

    def detect(self, path: Path) -> Detection | None:
        xml = _annotation_file(path)
        if xml is None or not head_matches(xml, rb"<version>1\.1</version>|<meta>"):
            return None
        return Detection(0.9, f"CVAT for images XML ({xml.name}: <annotations> with <version>/<meta>)")

    def read(self, path: Path, options: Options, report: Report) -> Dataset:
        assert isinstance(options, CvatReadOptions)
        xml = _annotation_file(path)
        if xml is None:
            report.fatal("format_mismatch", str(path), "no CVAT annotations.xml (root <annotations>) found here")
        root = parse_xml_file(xml)
        if root.tag != "annotations":
            report.fatal("format_mismatch", str(xml), f"root element is <{short_text(str(root.tag), 40)}>, "
                                                      "expected <annotations>")
        if root.find("image") is None and root.find("track") is not None:
            report.fatal("format_unsupported", str(xml), "CVAT for video (<track>) is not supported; "
                                                        "export the task as 'CVAT for images 1.1'")
        meta = root.find("meta")
        images = xml.parent / "images"
        r = _Reader(xml, options, report, ImageIndex(images if images.is_dir() else xml.parent),
                    ClassCollector(_labels(meta)), _task_subsets(meta))
        items = [(el, f"{xml}:image[{i}] {short_repr(el.get('name'), 100)}") for i, el in enumerate(root.iterfind("image"))]
        records = read_each(items, lambda it: it[1], lambda it: r.read_image(*it), report)
        log.info("read %d CVAT images from %s", len(records), xml)
        return Dataset(labels=r.classes.finish(records), images=records, root=xml.parent, meta={"format": self.name})


register_format(CvatFormat())
