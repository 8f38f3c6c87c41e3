"""RailSem19 frame JSON (read only).

Layout: ``rs19_val/jsons/rs00000.json`` beside ``rs19_val/jpgs/rs00000.jpg``; the published archive
nests the folder name once more (``rs19_val/jsons/rs19_val/rs00000.json``, ``rs19_val/jpgs/rs19_val/``,
``rs19_val/uint8/rs19_val/``), and both nestings are read, with the default options as with the
recipe's. Pass ``rs19_val`` (its parent, the JSON folder, ``jsons/`` or one JSON file also work).
The files beside the folders (``rs19-config.json``, a readme or licence) are no frames: they are
left out and named in one ``file_outside_layout`` info finding. One file per frame::

    {"frame": "rs00000", "imgHeight": 1080, "imgWidth": 1920,
     "objects": [{"label": "track-signal-front", "boundingbox": [x1, y1, x2, y2]},
                 {"label": "pole", "polygon": [[x, y], ...]},
                 {"label": "guardrail", "polyline": [[x, y], ...]},
                 {"label": "rail", "polyline-pair": [[[x, y], ...], [[x, y], ...]]}]}

Objects:
    * ``boundingbox`` -> a box, taken as continuous ``xyxy`` pixel edges as written;
    * ``polygon`` -> a `Polygon` and its box;
    * ``polyline`` and ``polyline-pair`` (rails, guard rails) are lines, not regions: skipped by
      default (one ``polyline_skipped`` info finding counts them); with ``polylines: keep`` each
      line becomes a `Polyline` with the box of its extent (a pair gives two objects with the
      attribute ``rail`` = ``left`` / ``right``). A line's extent with
      zero width or height is widened to 1 pixel (counted in one info finding) so the box is valid.

The image size comes from ``imgHeight`` / ``imgWidth`` (the image header when they are missing).
The option ``classes`` keeps only the listed labels, in that order (others are counted in one
``class_skipped`` info finding); by default every label met is a class, sorted by name.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from edgevision.core.boxes import points_to_xyxy
from edgevision.core.dataset import Dataset, ImageRecord
from edgevision.core.errors import DatasetError, short_repr, short_text
from edgevision.core.geometry import Polygon, Polyline
from edgevision.core.io import ImageIndex, safe_relpath
from edgevision.core.report import Report
from edgevision.core.safeload import load_json
from edgevision.formats import register_format
from edgevision.formats._readkit import (
    CheckedObjects,
    ClassCollector,
    declared_size,
    load_or_report,
    loose_files,
    number_array,
    point_array,
    report_outside_layout,
    safe_name,
    settle_size,
)
from edgevision.formats.base import Detection, Format, Options

log = logging.getLogger(__name__)

_GEOMETRY = ("boundingbox", "polygon", "polyline", "polyline-pair")


class RailSem19ReadOptions(Options):
    """Reader options for ``railsem19``.

    Attributes:
        polylines: ``skip`` rails and other lines (counted), or ``keep`` them as `Polyline` objects.
        classes: labels to keep, in id order; default every label, sorted.
        json_dir: folder of the frame JSONs, relative to the dataset folder.
        image_dir: folder of the images, relative to the dataset folder.
    """

    polylines: Literal["skip", "keep"] = "skip"
    classes: list[str] | None = None
    json_dir: str = "jsons"
    image_dir: str = "jpgs"


_NESTED = "rs19_val"
"""The folder the published archive repeats inside ``jsons/``, ``jpgs/`` and ``uint8/``."""


def _is_frame(data: Any) -> bool:
    return isinstance(data, dict) and "frame" in data and isinstance(data.get("objects"), list)


def _points(raw: Any, least: int) -> NDArray[np.float64]:
    """``(K, 2)`` points from ``[[x, y], ...]``, checked strictly (see `point_array`).

    Raises:
        ValueError: not a list of numeric pairs, non-finite values, or fewer than ``least`` points.
    """
    pts = point_array(raw, least)
    if not np.all(np.isfinite(pts)):
        raise ValueError("points hold a non-finite value")
    return pts


def _box(raw: Any) -> NDArray[np.float64]:
    """``[x1, y1, x2, y2]`` as a ``(4,)`` array.

    Raises:
        ValueError: not a list of four numbers (bools, strings and nested lists are not).
    """
    return number_array(raw, "[x1, y1, x2, y2]", 4)


@dataclass
class _Reader:
    """State of one read."""

    opts: RailSem19ReadOptions
    report: Report
    index: ImageIndex
    classes: ClassCollector = field(init=False)
    skipped: Counter[str] = field(default_factory=Counter)
    widened: int = 0
    used: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.classes = ClassCollector(self.opts.classes)

    def read_file(self, path: Path) -> ImageRecord | None:
        where, report = str(path), self.report
        data = load_or_report(load_json, path, report)
        if data is None:
            return None
        if not _is_frame(data):
            report.error("json_not_railsem19", where, "expected a RailSem19 frame object with 'frame' and an "
                                                      "'objects' list")
            return None
        if not isinstance(data["frame"], (str, int)) or isinstance(data["frame"], bool):
            report.error("path_malformed", where, f"expected frame as a name like 'rs00000', got {short_repr(data['frame'])}")
            return None
        frame = safe_name(str(data["frame"]), where, report)
        image = self.index.find(f"{frame}.jpg") if frame else None  # any extension matches by stem
        if image is None:
            folder = self.index.roots[0] if self.index.roots else self.opts.image_dir
            report.error("image_missing", where, f"image for frame {short_repr(data['frame'])} not found; expected "
                                                 f"{folder}/{short_text(str(data['frame']), 80)}.jpg")
            return None
        self.used.add(image)
        declared = declared_size(data.get("imgHeight"), data.get("imgWidth"), where, report,
                                 names=("imgHeight", "imgWidth"))
        size = settle_size(declared, image, where, report, check=False)
        if size is None:
            return None
        objs = CheckedObjects(size, report)
        for i, obj in enumerate(data["objects"]):
            self._object(obj, f"{where}:objects[{i}]", objs)
        return objs.checked_record(image.relative_to(self.index.roots[0]).as_posix(), path=image,
                                   meta={"frame": str(data["frame"])})

    def _object(self, obj: Any, where: str, objs: CheckedObjects) -> None:
        report = self.report
        label = obj.get("label") if isinstance(obj, dict) else None
        kind = next((k for k in _GEOMETRY if isinstance(obj, dict) and k in obj), None)
        if not isinstance(label, str) or not label or kind is None:
            got = f"keys {short_repr(sorted(obj), 100)}" if isinstance(obj, dict) else type(obj).__name__
            report.error("object_malformed", where, f"expected an object with a string 'label' and one of "
                                                    f"{list(_GEOMETRY)}, got {got}")
            return
        if self.opts.classes is not None and label not in self.opts.classes:
            self.skipped[f"class {short_repr(label)}"] += 1
            return
        if kind.startswith("polyline") and self.opts.polylines == "skip":
            self.skipped[kind] += 1
            return
        try:
            shapes = self._shapes(kind, obj[kind])
        except ValueError as e:
            report.error("shape_malformed", where, f"'{kind}': {e}")
            return
        cid = self.classes.id_of(label, where, report)
        if cid is None:
            return
        for box, shape, attrs in shapes:
            objs.add_at(where, box, cid, shape=shape, attributes=attrs)

    def _shapes(self, kind: str, raw: Any) -> list[tuple[NDArray[np.float64], Polygon | Polyline | None, dict[str, Any]]]:
        """``(box, shape, attributes)`` per object an entry gives (two for a polyline pair)."""
        if kind == "boundingbox":
            return [(_box(raw), None, {})]
        if kind == "polygon":
            poly = Polygon((_points(raw, 3),))
            return [(poly.bbox_xyxy(), poly, {})]
        if kind == "polyline":
            return [self._line(_points(raw, 2), {})]
        if not isinstance(raw, list) or len(raw) != 2:
            raise ValueError("expected a pair [left rail points, right rail points]")
        return [self._line(_points(side, 2), {"rail": name}) for side, name in zip(raw, ("left", "right"), strict=True)]

    def _line(self, pts: NDArray[np.float64], attrs: dict[str, Any]) -> tuple[NDArray[np.float64], Polyline, dict[str, Any]]:
        box = points_to_xyxy(pts)[0]
        flat = box[2:] - box[:2] <= 0
        if flat.any():
            self.widened += 1
            box[2:] += flat
        return box, Polyline(pts), attrs

    def finish_notes(self, where: str) -> None:
        if self.skipped:
            hint = "set polylines: keep to read lines" if any(k.startswith("polyline") for k in self.skipped) else ""
            self.report.info("object_skipped", where, f"skipped {sum(self.skipped.values())} objects: "
                                                      f"{dict(self.skipped)}{'; ' + hint if hint else ''}")
        if self.widened:
            self.report.info("polyline_box_widened", where, f"{self.widened} straight horizontal/vertical lines got "
                                                            "a box 1 pixel wide/high")


@dataclass(frozen=True)
class _Layout:
    """Where one read finds its files.

    Attributes:
        root: the dataset folder (``rs19_val``).
        files: the frame JSONs to read, from ``json_dir`` or the archive's ``json_dir/rs19_val``.
        nest: the archive's extra level below ``json_dir`` (``rs19_val``), or ``""``.
    """

    root: Path
    files: list[Path]
    nest: str = ""

    def image_folder(self, image_dir: str) -> Path:
        """``image_dir`` with the same extra level as the JSONs when it exists, else ``image_dir``, else the root."""
        base = self.root / safe_relpath(image_dir, "image_dir") if image_dir.strip(" ./") else self.root
        for folder in (base / self.nest if self.nest else None, base):
            if folder is not None and folder.is_dir():
                return folder
        return self.root


def _layout(path: Path, opts: RailSem19ReadOptions) -> _Layout | None:
    """Where the dataset folder and its frame JSONs are for ``path``, or None when there are none.

    ``path`` may be the dataset folder (``rs19_val``), its parent, its JSON folder (or a folder on
    the way to it, ``jsons/``) or one file; the JSON folder is ``json_dir`` or, as in the published
    archive, ``json_dir/rs19_val``.
    """
    json_dir = safe_relpath(opts.json_dir, "json_dir") if opts.json_dir.strip(" ./") else ""
    parts = PurePosixPath(json_dir).parts
    tails = (parts, (*parts, _NESTED)) if parts else ()

    if path.is_file():
        folder = path.parent
        for tail, nest in zip(tails, ("", _NESTED)):
            if len(folder.parts) > len(tail) and folder.parts[-len(tail):] == tail:
                return _Layout(folder.parents[len(tail) - 1], [path], nest)
        return _Layout(folder, [path])
    roots = [path, path / _NESTED]
    for tail in tails:  # ``path`` is the JSON folder or a folder on the way to it: the root is above
        roots += [path.parents[k - 1] for k in range(len(tail), 0, -1)
                  if len(path.parts) > k and path.parts[-k:] == tail[:k]]
    for root in dict.fromkeys(roots):
        for nest in ("", _NESTED):
            folder = root / json_dir / nest if nest else root / json_dir
            files = sorted(p for p in folder.glob("*.json") if p.is_file())
            if files:
                return _Layout(root, files, nest)
    return None


class RailSem19Format(Format):
    """RailSem19 frame JSONs: boxes, polygons and (optionally) rail polylines."""

    name = "railsem19"
    description = "RailSem19 frame JSONs (jsons/*.json + jpgs/): boxes, polygons, optional rail polylines"
    ReadOptions = RailSem19ReadOptions
    can_read = True
    can_write = False

    def detect(self, path: Path) -> Detection | None:
        found = _layout(path, RailSem19ReadOptions())
        if found is None:
            return None
        first = found.files[0]
        try:
            ok = _is_frame(load_json(first))
        except DatasetError:  # an unreadable or malformed file simply does not match
            return None
        where = first.relative_to(path).as_posix() if first.is_relative_to(path) else first.name
        return Detection(0.9, f"RailSem19 frame JSON ({where}: 'frame', 'objects')") if ok else None

    def read(self, path: Path, options: Options, report: Report) -> Dataset:
        assert isinstance(options, RailSem19ReadOptions)
        found = _layout(path, options)
        if found is None:
            json_dir = options.json_dir.strip("/")
            nested = "" if PurePosixPath(json_dir).name == _NESTED else f" or {json_dir}/{_NESTED}/*.json"
            report.fatal("format_mismatch", str(path), f"no RailSem19 frame JSONs found; expected {json_dir}/*.json"
                                                       f"{nested} in this folder or in its {_NESTED}/; pass the "
                                                       f"{_NESTED} folder or set the option json_dir")
        assert found is not None
        root = found.root
        r = _Reader(options, report, ImageIndex(found.image_folder(options.image_dir)))
        records: list[ImageRecord] = []
        for f in found.files:
            g = report.guard(str(f))
            with g:
                rec = r.read_file(f)
            if g.ok and rec is not None:
                records.append(rec)
        r.finish_notes(str(root))
        if not path.is_file():
            used = r.used | set(found.files)
            report_outside_layout(report, root, [p for p in loose_files(root) if p not in used])
        log.info("read %d RailSem19 frames from %s", len(records), root)
        return Dataset(labels=r.classes.finish(records), images=records, root=root, meta={"format": self.name})


register_format(RailSem19Format())
