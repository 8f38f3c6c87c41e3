"""YOLO labels (Ultralytics detect / segment, darknet), read and written.

Read:
    * an Ultralytics ``data.yaml`` (``names`` as a list or a ``{0: a, 1: b}`` dict, or only ``nc``;
      optional ``path`` root, relative to the yaml's folder; ``train`` / ``val`` / ``test`` as
      folders, ``.txt`` list files of image paths or lists of these; Roboflow's ``../train/images``
      is found like Ultralytics finds it), or a folder holding one;
    * a darknet ``obj.data`` (``classes``, ``train``, ``valid``, ``test``, ``names`` = ``obj.names``),
      or a folder holding one; list-file lines are found relative to the list file, the dataset
      root or its parent, dropping leading folders (``data/obj/img.jpg``) when needed;
    * a bare folder with ``images/`` and ``labels/`` (``images/<split>/``); class names from
      ``classes.txt`` / ``obj.names`` when present, else ``class0, class1, ...`` with a warning.

    An image's label file is found as Ultralytics does (the last ``/images/`` of its path replaced
    by ``/labels/``, extension ``.txt``), else beside the image (darknet). A line is
    ``cls cx cy w h`` (normalized), ``cls cx cy w h conf`` (predictions) or
    ``cls x1 y1 x2 y2 x3 y3 ...`` (a polygon, kept as a `Polygon`, its box the tight box around it).
    Missing and empty label files are background images. Image sizes come from the image headers.
    An image listed by two splits (``val:`` pointing at the train folder) is read once, in the
    first split.

Write:
    ``images/<split>/<name>``, ``labels/<split>/<stem>.txt`` and ``data.yaml`` with ``train`` /
    ``val`` / ``test`` relative to the yaml and ``names`` as a dict. The yaml has no ``path`` key on
    purpose: Ultralytics' ``check_det_dataset`` then uses the yaml's own folder, while a relative
    ``path: .`` would be taken relative to the working directory (or ``DATASETS_DIR``). Unsplit data
    goes to ``train`` and ``val`` points at the same folder (Ultralytics needs a ``val`` key).
    Background images get empty label files. When every object has a polygon or a mask, labels are
    segmentation lines (a mask becomes its largest outer contour), otherwise boxes. Boxes and
    polygons are clipped to the image; coordinates are written with 8 decimals, trailing zeros
    stripped (1e-4 px on an 8000 px image). What YOLO cannot hold is counted in `Losses`.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgevision.core.boxes import box_problems, cxcywh_norm_to_xyxy
from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import DatasetError, FileAccessError, short_repr, short_text
from edgevision.core.geometry import RLE, Polygon, Shape
from edgevision.core.io import is_image
from edgevision.core.report import Report
from edgevision.core.safeload import image_size, load_yaml
from edgevision.formats import register_format
from edgevision.formats._readkit import files_under, read_head
from edgevision.formats.base import Detection, Format, Losses, Options, WriteOptions
from edgevision.formats.coco import (
    NameRegistry,
    box_flags,
    place_record_image,
    report_exception,
    soft_error,
    split_from_name,
    write_groups,
)

log = logging.getLogger(__name__)

_SPLIT_KEYS = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
_NOT_SPLITS = {"path", "names", "nc", "download", "yaml_file", "kpt_shape", "flip_idx", "channels"}
_NAMES_FILES = ("classes.txt", "obj.names", "labels/classes.txt")
_YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
_FLOAT_NOISE = 1e-6
"""Normalized coordinates this little outside [0, 1] are rounding noise: no warning."""
MAX_CLASSES = 100_000
"""Most classes a YOLO dataset may declare (``nc``, ``names`` ids, class ids in labels without names)."""
_POLY_LOSS = "polygon/mask parts beyond the largest (YOLO holds one polygon per object)"


# -- layout ------------------------------------------------------------------------------------
@dataclass
class _Source:
    """Images of one split entry: a folder, a list file or a single image."""

    split: str | None
    images: list[Path]
    base: Path      # record names are image paths relative to this folder
    where: str


@dataclass
class _Layout:
    root: Path
    names: list[str] | None  # None: unknown, named class0.. from the labels
    sources: list[_Source] = field(default_factory=list)
    where: str = ""


def resolve_ref(ref: str, bases: list[Path]) -> Path | None:
    """Find the file or folder a dataset file names, as forgivingly as Ultralytics / darknet.

    Tries ``ref`` as given (absolute), then under each base; then drops leading components one at
    a time (``../train/images`` -> ``train/images``, ``data/obj/a.jpg`` -> ``obj/a.jpg`` -> ``a.jpg``).
    """
    raw = ref.strip().replace("\\", "/")
    p = Path(raw)
    if p.is_absolute() and p.exists():
        return p
    parts = p.parts[1:] if p.is_absolute() else p.parts
    for k in range(len(parts)):
        tail = Path(*parts[k:])
        for b in bases:
            q = b / tail
            if q.exists():
                return q
    return None


def _images_under(folder: Path, report: Report) -> list[Path]:
    return [p for p in files_under(folder, report) if is_image(p)]


def _read_text(path: Path, what: str, report: Report) -> str:
    """A UTF-8 text file of the dataset description (list file, names file, ``obj.data``); fatal when not text."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        report.fatal("text_malformed", str(path), f"{what} is not UTF-8 text: {e.reason}")
    raise AssertionError("unreachable")  # report.fatal raises


def _load_yaml(path: Path, report: Report) -> Any:
    """The dataset yaml, through the bounded loader (`edgevision.core.safeload.load_yaml`)."""
    return load_yaml(path, "dataset yaml", dataset=True)


def _class_name(value: Any) -> str | None:
    """A class name from a yaml scalar (``crack``, ``7``; YAML 1.1 reads ``yes``/``no`` as bools); None otherwise."""
    if isinstance(value, (str, int, float, bool)):
        return short_text(str(value), 1000) if not isinstance(value, str) else value
    return None


def _count(value: Any) -> int | None:
    """``nc`` as an int in 0..`MAX_CLASSES`, None when absent; ValueError otherwise (``true``, ``1e9``, ``"3"``)."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_CLASSES:
        raise ValueError
    return value


def _names_from_yaml(data: dict[str, Any], where: str, report: Report) -> list[str] | None:
    names = data.get("names")
    try:
        nc = _count(data.get("nc"))
    except ValueError:
        report.fatal("names_malformed", where, f"expected 'nc' as a class count in 0..{MAX_CLASSES:,}, got "
                                               f"{short_repr(data.get('nc'))}")
    if isinstance(names, dict):
        keys = list(names)
        if not all(type(k) is int or (isinstance(k, str) and k.strip().isascii() and k.strip().isdigit()) for k in keys):
            report.fatal("names_malformed", where, f"expected integer keys in 'names', got {short_repr(keys[:5])}")
        by_id = {int(k): _class_name(v) for k, v in names.items()}
        bad = [i for i, n in by_id.items() if n is None]
        if bad or (by_id and not 0 <= min(by_id) <= max(by_id) < MAX_CLASSES):
            report.fatal("names_malformed", where, f"expected 'names' as {{id: name}} with ids in 0..{MAX_CLASSES - 1:,} "
                                                   f"and plain names, got {short_repr(names)}")
        k = max(by_id) + 1 if by_id else 0
        if sorted(by_id) != list(range(k)):
            report.warning("names_gap", where, f"'names' ids {short_repr(sorted(by_id))} are not 0..{k - 1}; "
                           "missing ids are named class<id>")
        return [str(by_id[i]) if i in by_id else f"class{i}" for i in range(k)]
    if isinstance(names, list):
        found = [_class_name(n) for n in names]
        if None in found or len(found) > MAX_CLASSES:
            report.fatal("names_malformed", where, f"expected 'names' as a list of at most {MAX_CLASSES:,} plain names, "
                                                   f"got {short_repr(names)}")
        out = [n for n in found if n is not None]
    elif names is None and nc is not None:
        report.warning("names_unknown", where, f"no 'names', only nc={nc}; classes named class0..class{nc - 1}")
        out = [f"class{i}" for i in range(nc)]
    else:
        report.fatal("names_malformed", where, f"expected 'names' as a list or a {{id: name}} dict (or 'nc'), got "
                                               f"{short_repr(names)}")
        return None
    if nc is not None and nc != len(out):
        report.warning("names_count", where, f"nc={nc} but 'names' has {len(out)} entries; using the names")
    return out


def _names_file(path: Path, report: Report) -> list[str]:
    names = [ln.strip() for ln in _read_text(path, "names file", report).splitlines() if ln.strip()]
    if len(names) > MAX_CLASSES:
        report.fatal("names_malformed", str(path), f"{len(names):,} class names; expected at most {MAX_CLASSES:,}")
    return names


def _list_file(path: Path, root: Path, report: Report) -> list[Path]:
    """Image paths of a list file; lines are found relative to the file, the root or its parent."""
    images = []
    for n, line in enumerate(_read_text(path, "image list", report).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = resolve_ref(line, [path.parent, root, root.parent])
        if p is None or not p.is_file():
            soft_error(report, "image_missing", f"{path}:line {n}", f"image {short_repr(line, 100)} not found (looked "
                       f"relative to {path.parent} and {root}); fix the path or remove the line")
            continue
        images.append(p)
    return images


def _source(entry: str, split: str | None, root: Path, where: str, report: Report,
            strict: bool = True) -> _Source | None:
    """The images a split entry (folder, list file or image) stands for."""
    p = resolve_ref(entry, [root]) if strict else (root / entry if (root / entry).exists() else None)
    if p is None:
        if strict:
            soft_error(report, "split_missing", where, f"{short_repr(entry, 100)} not found under {root}; "
                       "fix the path in the yaml or remove the key")
        return None
    if p.is_dir():
        return _Source(split, _images_under(p, report), p, where)
    if is_image(p):
        return _Source(split, [p], p.parent, where)
    if p.suffix.lower() == ".txt":
        images = _list_file(p, root, report)
        base = Path(os.path.commonpath([str(i.parent) for i in images])) if images else p.parent
        return _Source(split, images, base, where)
    if strict:
        soft_error(report, "split_malformed", where, f"{short_repr(entry, 100)} is neither a folder, an image list "
                                                     "(.txt) nor an image")
    return None


def _yaml_root(data: dict[str, Any], ydir: Path, where: str, report: Report) -> Path:
    value = data.get("path")
    if not value:
        return ydir
    if not isinstance(value, str):
        report.fatal("yaml_malformed", where, f"expected 'path' as a folder name, got {short_repr(value)}")
    p = Path(value)
    cand = p if p.is_absolute() else ydir / p
    if cand.is_dir():
        return cand
    report.warning("path_moved", where, f"path: {short_repr(value, 100)} does not exist here; using the yaml's "
                                        f"folder {ydir}")
    return ydir


def _yaml_layout(path: Path, report: Report) -> _Layout:
    data = _load_yaml(path, report)
    if not isinstance(data, dict):
        report.fatal("yaml_malformed", str(path), "expected a mapping with 'names' and 'train'/'val' keys")
    root = _yaml_root(data, path.parent, str(path), report)
    layout = _Layout(root, _names_from_yaml(data, str(path), report), where=str(path))
    for key, value in data.items():
        if key in _NOT_SPLITS or not value:
            continue
        split = _SPLIT_KEYS.get(key)
        entries = value if isinstance(value, list) else [value]
        if not all(isinstance(e, str) for e in entries):
            if split is not None:
                soft_error(report, "split_malformed", f"{path}:{key}", f"expected a folder, an image list (.txt) or "
                                                                       f"a list of these, got {short_repr(value)}")
            continue
        for e in entries:
            src = _source(str(e), split or str(key), root, f"{path}:{key}", report, strict=split is not None)
            if src is not None:
                layout.sources.append(src)
    if not any(k in data for k in _SPLIT_KEYS):
        report.info("splits_missing", str(path), "no train/val/test keys; reading images/ and labels/ beside the yaml")
        layout.sources = _bare_sources(root, report)
    return layout


def _darknet_layout(path: Path, report: Report) -> _Layout:
    kv: dict[str, str] = {}
    for line in _read_text(path, "darknet .data file", report).splitlines():
        line = line.split("#", 1)[0]
        if "=" in line:
            k, v = line.split("=", 1)
            kv[k.strip().lower()] = v.strip()
    bases = [path.parent, path.parent.parent]
    names = None
    if kv.get("names"):
        nf = resolve_ref(kv["names"], bases)
        if nf is None or not nf.is_file():
            report.warning("names_missing", str(path), f"names file {short_repr(kv['names'], 100)} not found; classes "
                                                       "named class0..")
        else:
            names = _names_file(nf, report)
    classes = kv.get("classes", "")
    if classes and not (classes.isascii() and classes.isdigit() and int(classes) <= MAX_CLASSES):
        report.fatal("names_malformed", str(path), f"expected classes = a class count in 0..{MAX_CLASSES:,}, got "
                                                   f"{short_repr(classes)}")
    if names is None and classes:
        names = [f"class{i}" for i in range(int(classes))]
    elif names is not None and classes and int(classes) != len(names):
        report.warning("names_count", str(path), f"classes={kv['classes']} but the names file has {len(names)} names")
    layout = _Layout(path.parent, names, where=str(path))
    for key, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        if kv.get(key):
            src = _source(kv[key], split, path.parent, f"{path}:{key}", report)
            if src is not None:
                layout.sources.append(src)
    return layout


def _bare_sources(folder: Path, report: Report) -> list[_Source]:
    images = folder / "images"
    if not images.is_dir():
        return [_Source(None, sorted(p for p in folder.iterdir() if is_image(p) and p.is_file()), folder, str(folder))]
    sources = []
    top = sorted(p for p in images.iterdir() if is_image(p) and p.is_file())
    if top:
        sources.append(_Source(None, top, images, str(images)))
    for d in sorted(p for p in images.iterdir() if p.is_dir()):
        sources.append(_Source(split_from_name(d.name)[0] or d.name, _images_under(d, report), d, str(d)))
    return sources


def _bare_layout(folder: Path, report: Report) -> _Layout:
    names = None
    for f in _NAMES_FILES:
        if (folder / f).is_file():
            names = _names_file(folder / f, report)
            break
    else:
        report.warning("names_unknown", str(folder), "no data.yaml, obj.names or classes.txt: class names are unknown; "
                       "named class0, class1, ... (pass -o names=[...] or add a data.yaml)")
    return _Layout(folder, names, _bare_sources(folder, report), str(folder))


def _yaml_in(folder: Path) -> Path | None:
    for n in _YAML_NAMES:
        if (folder / n).is_file():
            return folder / n
    return next((p for p in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if _yaml_has_names(p)), None)


def _yaml_has_names(path: Path) -> bool:
    """A cheap look at a yaml: does it have a top-level ``names:`` or ``nc:`` key?"""
    raw = read_head(path, 1_000_000)
    return raw is not None and bool(re.search(r"(?m)^(names|nc)\s*:", raw.decode("utf-8", "replace")))


def _data_in(folder: Path) -> Path | None:
    if (folder / "obj.data").is_file():
        return folder / "obj.data"
    hits = sorted(folder.glob("*.data"))
    return hits[0] if len(hits) == 1 and _is_darknet_data(hits[0]) else None


def _is_darknet_data(path: Path) -> bool:
    raw = read_head(path, 4096)
    head = raw.decode("utf-8", "replace") if raw is not None else ""
    return bool(re.search(r"(?m)^\s*classes\s*=", head)) and bool(re.search(r"(?m)^\s*(train|names)\s*=", head))


# -- labels ------------------------------------------------------------------------------------
def label_candidates(image: Path) -> list[Path]:
    """Where an image's label file may be: Ultralytics' ``/images/`` -> ``/labels/`` swap, then beside it."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    swapped = Path(sb.join(s.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")
    beside = image.with_suffix(".txt")
    return [swapped] if swapped == beside else [swapped, beside]


@dataclass
class _Objects:
    boxes: NDArray[np.float64]
    class_ids: NDArray[np.int64]
    shapes: list[Shape | None] | None = None
    scores: NDArray[np.float32] | None = None


class _LabelParser:
    """Parses one label file against an image size and the class count."""

    def __init__(self, path: Path, size_hw: tuple[int, int], nc: int | None, report: Report) -> None:
        self.path, self.size_hw, self.nc, self.report = path, size_hw, nc, report

    def parse(self) -> _Objects:
        try:
            text = self.path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            self.report.error("label_malformed", str(self.path), f"not UTF-8 text: {e.reason}")
            return _Objects(np.zeros((0, 4)), np.zeros(0, np.int64))
        except OSError as e:  # a label file it may not read: an error of this image, under the policy
            err = FileAccessError.from_os_error(e, self.path)
            self.report.error(err.code or "file_unreadable", err.where or str(self.path), err.detail)
            return _Objects(np.zeros((0, 4)), np.zeros(0, np.int64))
        rows = [(n, ln.split()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        if rows and all(len(r) == 5 for _, r in rows):
            try:
                arr = np.array([r for _, r in rows], dtype=np.float64)
                return self._check([n for n, _ in rows], arr[:, 0], cxcywh_norm_to_xyxy(arr[:, 1:], self.size_hw))
            except ValueError:
                pass
        return self._mixed(rows)

    def _where(self, line: int) -> str:
        return f"{self.path}:line {line}"

    def _mixed(self, rows: list[tuple[int, list[str]]]) -> _Objects:
        lines, cls, boxes, shapes, scores = [], [], [], [], []
        h, w = self.size_hw
        for n, parts in rows:
            k = len(parts)
            if k not in (5, 6) and (k < 7 or k % 2 == 0):
                self.report.error("label_malformed", self._where(n), f"expected 5 columns (class cx cy w h) or "
                                  f"1 + 2k with k >= 3 (class x1 y1 ... polygon), got {k}: {short_repr(' '.join(parts))}")
                continue
            try:
                v = np.array(parts, dtype=np.float64)
            except ValueError:
                self.report.error("label_malformed", self._where(n), f"expected numbers, got {short_repr(' '.join(parts))}")
                continue
            lines.append(n)
            cls.append(v[0])
            if k <= 6:
                boxes.append(cxcywh_norm_to_xyxy(v[None, 1:5], self.size_hw)[0])
                shapes.append(None)
                scores.append(float(v[5]) if k == 6 else None)
            else:
                with np.errstate(over="ignore", invalid="ignore"):  # 1e308: inf, reported as box_nan
                    pts = v[1:].reshape(-1, 2) * (w, h)
                boxes.append(np.concatenate([pts.min(axis=0), pts.max(axis=0)]))
                shapes.append(Polygon((pts,)))
                scores.append(None)
        objs = self._check(lines, np.array(cls, dtype=np.float64), np.array(boxes, dtype=np.float64).reshape(-1, 4),
                           shapes, scores)
        return objs

    def _check(self, lines: list[int], cls: NDArray[np.float64], xyxy: NDArray[np.float64],
               shapes: list[Shape | None] | None = None, scores: list[float | None] | None = None) -> _Objects:
        """Report bad objects; keep (under ``keep``) what is representable."""
        h, w = self.size_hw
        with np.errstate(invalid="ignore"):
            bad_cls = ~np.isfinite(cls) | (cls != np.round(cls)) | (cls < 0) | (cls >= (self.nc or MAX_CLASSES))
        bad_box, partly = box_flags(xyxy, h, w, _FLOAT_NOISE * max(h, w))
        keep = ~bad_cls
        for i in np.flatnonzero(bad_cls | bad_box):
            self._report_object(lines[i], float(cls[i]), xyxy[i], bool(bad_cls[i]))
        if partly.any():
            self.report.warning("box_partly_outside", str(self.path), f"{int(partly.sum())} objects extend past the "
                                f"image border (first at line {lines[int(np.flatnonzero(partly)[0])]}); kept as read")
        idx = np.flatnonzero(keep)
        kept_scores = None
        if scores is not None and any(s is not None for s in scores):
            if all(scores[i] is not None for i in idx):
                kept_scores = np.array([scores[i] for i in idx], dtype=np.float32)
            else:
                self.report.warning("score_mixed", str(self.path), "some lines have a confidence column and some not; "
                                    "confidences ignored")
        kept_shapes = [shapes[i] for i in idx] if shapes is not None and any(s is not None for s in shapes) else None
        return _Objects(xyxy[idx], cls[idx].astype(np.int64), kept_shapes, kept_scores)

    def _report_object(self, line: int, c: float, box: NDArray[np.float64], bad_cls: bool) -> None:
        where = self._where(line)
        if bad_cls:
            if self.nc is not None and np.isfinite(c) and c == round(c) and c >= self.nc:
                self.report.error("class_unknown", where, f"class id {c:.15g} is out of range: the dataset has "
                                  f"nc={self.nc} classes (ids 0..{self.nc - 1}); fix the label or add the class to the names")
            elif self.nc is None:
                self.report.error("class_unknown", where, f"expected a class id (a whole number in 0..{MAX_CLASSES - 1:,}),"
                                  f" got {c!r}")
            else:
                self.report.error("class_unknown", where, f"expected a class id in 0..{self.nc - 1}, got {c!r}")
        for _, code, msg in box_problems(box[None], self.size_hw):
            self.report.error(code, where, f"{msg} (from normalized YOLO coordinates)")


# -- reading -----------------------------------------------------------------------------------
class YoloReadOptions(Options):
    """Options of the YOLO reader.

    Attributes:
        names: class names, in id order, for a dataset that has none (a bare images/ + labels/
            folder); they replace the dataset's own names when both exist.
    """

    names: list[str] | None = None


class _YoloReader:
    def __init__(self, layout: _Layout, options: YoloReadOptions, report: Report) -> None:
        self.layout, self.report = layout, report
        if options.names is not None:
            if layout.names is not None and layout.names != options.names:
                report.info("names_option", layout.where, "class names taken from the 'names' option")
            layout.names = list(options.names)
        self.nc = None if layout.names is None else len(layout.names)
        self.registry = NameRegistry()
        self.seen: dict[str, str | None] = {}
        self.records: list[ImageRecord] = []

    def read(self) -> Dataset:
        for src in self.layout.sources:
            self._read_source(src)
        names = self.layout.names
        if names is None:
            k = max((int(r.class_ids.max()) + 1 for r in self.records if len(r)), default=0)
            names = [f"class{i}" for i in range(k)]
        return Dataset(LabelMap(names), self.records, root=self.layout.root, meta={})

    def _read_source(self, src: _Source) -> None:
        no_label, repeated = [], Counter[str | None]()
        for img in src.images:
            key = os.path.normpath(os.path.abspath(img))
            if key in self.seen:
                repeated[self.seen[key]] += 1
                continue
            self.seen[key] = src.split
            label = next((p for p in label_candidates(img) if p.is_file()), None)
            if label is None:
                no_label.append(img.name)
            rec = self._read_image(img, label, src)
            if rec is not None:
                self.records.append(rec)
        for other, k in repeated.items():
            if k == len(src.images):
                self.report.info("split_repeated", src.where, f"split '{src.split}' lists the same images as "
                                 f"'{other}'; read once, as '{other}'")
            else:
                self.report.warning("split_overlap", src.where, f"{k} images of split '{src.split}' are also in "
                                    f"'{other}' (leakage between splits); kept in '{other}' only")
        if no_label:
            self.report.info("label_missing", src.where, f"{len(no_label)} images have no label file "
                             f"(e.g. '{no_label[0]}'); read as background images")

    def _read_image(self, img: Path, label: Path | None, src: _Source) -> ImageRecord | None:
        where = str(label or img)
        g = self.report.guard(where)
        with g:
            try:
                size = image_size(img, str(img))
            except DatasetError as e:
                report_exception(self.report, e)
                return None
            objs = _LabelParser(label, size, self.nc, self.report).parse() if label else None
            name = self.registry.claim(Path(os.path.relpath(img, src.base)).as_posix(), src.split, self.report, where)
            if name is None:
                self.report.error("image_duplicate", where, f"image '{img.name}' is listed twice in split '{src.split}'")
                return None
        if not g.ok:
            return None
        if objs is None:
            return ImageRecord(name, size, path=img, split=src.split)
        return ImageRecord(name, size, boxes=objs.boxes, class_ids=objs.class_ids, path=img, scores=objs.scores,
                           shapes=objs.shapes, split=src.split)


# -- writing -----------------------------------------------------------------------------------
_DECIMALS = 8
"""Decimals of normalized coordinates: 5e-9 * 8000 px = 4e-5 px."""
_SCALE = 10**_DECIMALS
_DIGITS4 = np.array([list(f"{i:04d}".encode()) for i in range(10000)], dtype=np.uint8)  # (10000, 4)
_TRAILING4 = np.array([4 - len(f"{i:04d}".rstrip("0")) for i in range(10000)], dtype=np.int64)


def _value_chars(vals: NDArray[np.float64]) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """``(V, 10)`` ASCII of values in [0, 1] as ``0.dddddddd`` and the length once trailing zeros go."""
    q = np.rint(np.clip(vals, 0, 1) * _SCALE).astype(np.int64)
    hi, lo = (q // 10000) % 10000, q % 10000
    chars = np.empty((len(q), 2 + _DECIMALS), dtype=np.uint8)
    chars[:, :2] = (ord("0"), ord("."))
    chars[:, 2:6], chars[:, 6:] = _DIGITS4[hi], _DIGITS4[lo]
    n = 2 + _DECIMALS - np.where(lo == 0, 4 + _TRAILING4[hi], _TRAILING4[lo])
    n[q == 0] = 1  # "0"
    chars[q == _SCALE, 0] = ord("1")
    n[q == _SCALE] = 1  # "1"
    return chars, n


def _int_chars(v: NDArray[np.int64]) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """``(N, W)`` left-aligned ASCII digits of non-negative ints and their lengths."""
    width = len(str(int(v.max()))) if len(v) else 1
    n = np.ones(len(v), dtype=np.int64)
    for k in range(1, width):
        n += v >= 10**k
    power = np.clip(n[:, None] - 1 - np.arange(width), 0, None)
    return ((v[:, None] // 10**power) % 10 + ord("0")).astype(np.uint8), n


def label_text(cls: NDArray[np.int64], vals: NDArray[np.float64],
               per_line: NDArray[np.int64]) -> tuple[bytes, NDArray[np.int64]]:
    """YOLO label lines ``cls[i] v v v ...`` (``per_line[i]`` values each), formatted with numpy only.

    Values must lie in [0, 1] (writers clip first); they get 8 decimals with trailing zeros dropped
    (``0.5``, ``0.12345678``, ``1``, ``0``), the same text as ``'%.8f'`` stripped, 3x faster than
    Python formatting on large datasets.

    Returns:
        The text of all lines (each ending in ``\n``) and each line's length in bytes.
    """
    if not len(cls):
        return b"", np.zeros(0, dtype=np.int64)
    vchars, vlen = _value_chars(vals)
    cchars, clen = _int_chars(cls)
    n_tok = len(cls) + len(vals)
    start = np.arange(len(cls)) + np.concatenate([[0], np.cumsum(per_line)[:-1]])  # token index of each class
    is_cls = np.zeros(n_tok, dtype=bool)
    is_cls[start] = True
    tok = np.empty((n_tok, max(vchars.shape[1], cchars.shape[1]) + 1), dtype=np.uint8)
    tlen = np.empty(n_tok, dtype=np.int64)
    tok[is_cls, : cchars.shape[1]], tlen[is_cls] = cchars, clen
    tok[~is_cls, : vchars.shape[1]], tlen[~is_cls] = vchars, vlen
    sep = np.full(n_tok, ord(" "), dtype=np.uint8)
    sep[np.concatenate([start[1:], [n_tok]]) - 1] = ord("\n")
    tok[np.arange(n_tok), tlen] = sep
    text = tok[np.arange(tok.shape[1]) <= tlen[:, None]].tobytes()
    return text, np.add.reduceat(tlen + 1, start)


def _largest_ring(shape: Polygon | RLE, losses: Losses, name: str) -> NDArray[np.float64] | None:
    """The one polygon YOLO can hold for a shape: the largest ring, or a mask's largest outer contour."""
    if isinstance(shape, Polygon):
        rings = list(shape.rings)
    else:
        import cv2

        contours, _ = cv2.findContours(shape.decode(), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        rings = [c.reshape(-1, 2).astype(np.float64) + 0.5 for c in contours if len(c) >= 3]  # pixel centres
    if not rings:
        return None
    losses.add(_POLY_LOSS, len(rings) - 1, name)
    return max(rings, key=lambda r: Polygon((r,)).area())


def _all_polygonal(dataset: Dataset) -> bool:
    n = dataset.num_objects
    return n > 0 and all(
        r.shapes is not None and all(isinstance(s, (Polygon, RLE)) for s in r.shapes) for r in dataset.images if len(r)
    )


@dataclass
class _Rows:
    """Label lines as arrays: ``cls (L,)``, flat values ``(V,)``, values per line ``(L,)``, lines per record."""

    cls: NDArray[np.int64]
    vals: NDArray[np.float64]
    per_line: NDArray[np.int64]
    per_record: NDArray[np.int64]


class _LabelWriter:
    """Turns records into the bytes of their label files, counting what YOLO cannot hold."""

    def __init__(self, dataset: Dataset, losses: Losses) -> None:
        self.losses = losses
        self.segment = _all_polygonal(dataset)

    def texts(self, records: list[ImageRecord]) -> list[bytes]:
        """One label file's content per record (``b""`` for a background image)."""
        for r in records:
            self._count_losses(r)
        rows = self._segment_rows(records) if self.segment else self._box_rows(records)
        data, line_len = label_text(rows.cls, rows.vals, rows.per_line)
        at = np.concatenate([[0], np.cumsum(line_len)])[np.concatenate([[0], np.cumsum(rows.per_record)])].tolist()
        return [data[a:b] for a, b in zip(at[:-1], at[1:], strict=True)]

    def _count_losses(self, r: ImageRecord) -> None:
        if r.attributes is not None:
            for k, n in Counter(k for a in r.attributes for k in a).items():
                self.losses.add(f"attribute '{k}' (YOLO labels hold no attributes)", n, r.name)
        if r.scores is not None:
            self.losses.add("score (YOLO labels hold no confidence)", len(r), r.name)
        if r.shapes is not None and not self.segment:
            for s in r.shapes:
                if s is not None:
                    self.losses.add(f"{type(s).__name__.lower()} (written as its box: not every object has a "
                                    "polygon or mask)", 1, r.name)

    def _count(self, kind: str, mask: NDArray[np.bool_], owner: NDArray[np.int64], records: list[ImageRecord]) -> None:
        hits = np.flatnonzero(mask)
        if len(hits):
            self.losses.add(kind, len(hits), records[int(owner[hits[0]])].name)

    def _box_rows(self, records: list[ImageRecord]) -> _Rows:
        """All records' boxes at once: clip, count, normalize."""
        counts = np.array([len(r) for r in records], dtype=np.int64)
        if not counts.sum():
            return _Rows(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), counts)
        owner = np.repeat(np.arange(len(records)), counts)
        boxes = np.concatenate([r.boxes for r in records if len(r)])
        whwh = np.repeat(np.array([r.size_hw for r in records], dtype=np.float64), counts, axis=0)[:, [1, 0, 1, 0]]
        b = np.clip(boxes, 0, whwh)
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        self._count("box clipped to image", ok & (np.abs(b - boxes) > 1e-9).any(axis=1), owner, records)
        self._count("box outside image (dropped)", ~ok, owner, records)
        cxcywh = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1) / whwh
        cls = np.concatenate([r.class_ids for r in records if len(r)])
        return _Rows(cls[ok], cxcywh[ok].ravel(), np.full(int(ok.sum()), 4), np.bincount(owner[ok], minlength=len(records)))

    def _segment_rows(self, records: list[ImageRecord]) -> _Rows:
        cls, vals, per_line = [], [], []
        for r in records:
            h, w = r.size_hw
            for k, c in enumerate(r.class_ids.tolist()):
                shape = r.shapes[k]  # type: ignore[index]
                ring = _largest_ring(shape, self.losses, r.name) if shape is not None else None
                if ring is None:
                    self.losses.add("mask too small for a polygon (box written as a polygon)", 1, r.name)
                    x1, y1, x2, y2 = r.boxes[k]
                    ring = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
                clipped = np.clip(ring, 0, [w, h])
                self.losses.add("polygon clipped to image", int(not np.allclose(clipped, ring)), r.name)
                cls.append(c)
                vals.append((clipped / [w, h]).ravel())
                per_line.append(clipped.size)
        return _Rows(np.array(cls, dtype=np.int64), np.concatenate(vals) if vals else np.zeros(0),
                     np.array(per_line, dtype=np.int64), np.array([len(r) for r in records], dtype=np.int64))


def _label_rel(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return (stem if dot and "/" not in ext else name) + ".txt"


def _write_yaml(out: Path, names: list[str], split_dirs: dict[str, str]) -> None:
    import yaml

    doc: dict[str, Any] = dict(split_dirs)
    doc["nc"] = len(names)
    doc["names"] = dict(enumerate(names))
    header = ("# Written by EdgeVision. No 'path' key on purpose: Ultralytics then resolves train/val/test\n"
              "# relative to this file's folder (a relative 'path' would follow the working directory).\n")
    (out / "data.yaml").write_text(header + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


class YoloFormat(Format):
    name = "yolo"
    description = "YOLO txt labels: Ultralytics data.yaml (detect / segment) or darknet obj.data"
    ReadOptions = YoloReadOptions
    can_write = True

    def detect(self, path: Path) -> Detection | None:
        path = Path(path)
        if path.is_file():
            if path.suffix.lower() in (".yaml", ".yml") and _yaml_has_names(path):
                return Detection(0.9, f"Ultralytics dataset yaml {path.name} with names/nc")
            if path.suffix.lower() == ".data" and _is_darknet_data(path):
                return Detection(0.9, f"darknet {path.name} with classes/train")
            return None
        if not path.is_dir():
            return None
        y = _yaml_in(path)
        if y is not None:
            return Detection(0.85, f"folder with Ultralytics {y.name}")
        d = _data_in(path)
        if d is not None:
            return Detection(0.85, f"folder with darknet {d.name}")
        labels = path / "labels"
        if (path / "images").is_dir() and labels.is_dir() and next(labels.rglob("*.txt"), None) is not None:
            return Detection(0.6, "images/ and labels/*.txt folders (no data.yaml)")
        return None

    def read(self, path: Path, options: Options, report: Report) -> Dataset:
        assert isinstance(options, YoloReadOptions)
        path = Path(path)
        if path.is_file():
            if path.suffix.lower() in (".yaml", ".yml"):
                layout = _yaml_layout(path, report)
            elif path.suffix.lower() == ".data":
                layout = _darknet_layout(path, report)
            else:
                report.fatal("format_unknown", str(path), "expected a data.yaml, a darknet .data file or a dataset folder")
        elif (y := _yaml_in(path)) is not None:
            layout = _yaml_layout(y, report)
        elif (d := _data_in(path)) is not None:
            layout = _darknet_layout(d, report)
        else:
            layout = _bare_layout(path, report)
        return _YoloReader(layout, options, report).read()

    def write(self, dataset: Dataset, out: Path, options: WriteOptions, losses: Losses) -> None:
        writer = _LabelWriter(dataset, losses)
        ids = dataset.labels.source_ids
        if ids is not None and ids != list(range(len(ids))) and ids != list(range(1, len(ids) + 1)):
            losses.add("class source ids (YOLO ids are 0..K-1)", len(ids), f"{dataset.labels.names[0]}={ids[0]}")
        extra = sum(bool(e) for e in dataset.labels.extra or [])
        losses.add("class fields such as supercategory (YOLO holds names only)", extra, dataset.labels.names[0] if extra else None)
        groups = write_groups(dataset)
        for split, records in groups.items():
            self._write_split(split, records, writer, out, options, losses)
        split_dirs = {s: f"images/{s}" for s in groups}
        if "val" not in split_dirs:  # real splits first: the reader gives a repeated folder to the first key
            first = next(iter(groups), "train")
            split_dirs = {**split_dirs, **{k: f"images/{first}" for k in ("train", "val") if k not in split_dirs}}
            log.warning("no 'val' split: data.yaml 'val' points at images/%s (Ultralytics needs a val key); "
                        "split the dataset for a real validation", first)
        _write_yaml(out, dataset.labels.names, split_dirs)

    @staticmethod
    def _write_split(split: str, records: list[ImageRecord], writer: _LabelWriter, out: Path,
                     options: WriteOptions, losses: Losses) -> None:
        used: dict[str, str] = {}
        made: set[str] = set()
        label_dir = os.path.join(out, "labels", split)
        for r, data in zip(records, writer.texts(records), strict=True):
            rel = _label_rel(r.name)
            if rel in used:
                raise DatasetError(f"images '{used[rel]}' and '{r.name}' would share the label file labels/{split}/{rel}; "
                                   "rename one", where=r.name, code="label_clash")
            used[rel] = r.name
            dst = os.path.join(label_dir, rel)  # plain strings: pathlib costs more than the write here
            parent = os.path.dirname(dst)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            with open(dst, "wb") as f:
                f.write(data)
            if options.images != "none":
                place_record_image(r, out / "images" / split / r.name, options, losses)


register_format(YoloFormat())
