"""COCO object detection / instance segmentation JSON, read and written.

Read:
    * one ``.json`` file, or a folder holding COCO files in ``./``, ``annotations/`` or one sub-folder
      level (Roboflow's ``train/_annotations.coco.json``); when ``instances_*.json`` files are
      present only those are read (keypoint or caption files beside them are ignored, with a note);
    * the split comes from the file name (``instances_val2017.json`` -> ``val``), else from the
      sub-folder name; several files without a split word keep their stem as the split name;
    * ``bbox`` (authoritative; computed from the shape when missing), polygon and RLE
      ``segmentation`` (compressed string or uncompressed run list) into lazy `Polygon` / `RLE`;
      ``iscrowd`` and a CVAT-style ``attributes`` dict become object attributes (``iscrowd`` only when
      true, so plain detection files create no per-object Python objects); ``score`` becomes scores;
    * category ids are kept as ``LabelMap.source_ids`` (canonical order = sorted ids), other
      category fields (``supercategory``) as ``LabelMap.extra``; COCO ``info`` / ``licenses`` go to
      ``Dataset.meta``, the image id to ``ImageRecord.meta["coco_id"]``;
    * images are looked up in the split folders first (``images/<split>``, ``<split>2017``, ...)
      and then anywhere under the dataset (`ImageIndex`); a missing image is an error only when the
      json has no width/height for it (a warning otherwise, with the path left empty).

    The annotation table is parsed column-wise with numpy (one pass per field, boxes as one
    ``(N, 4)`` array, grouped by image with one stable argsort); only annotations with a problem go
    through the per-item error policy.

Write:
    ``annotations/instances_<split>.json`` and ``images/<split>/<name>``. Unsplit images are written
    as split ``train`` (most training tools expect a train file; reading it back gives ``train``).
    Category ids come from ``source_ids`` when present and unique, else ``1..K``. ``area`` is the
    shape's area when there is one (mask / polygon), else the box area. Polygons are written as lists,
    RLE compressed; an ``iscrowd`` object with a polygon is written as RLE. Polylines cannot be held
    (counted as a loss, the box is kept).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgevision.core.boxes import box_area, box_masks, box_problems, xywh_to_xyxy, xyxy_to_xywh
from edgevision.core.dataset import SPLIT_ALIASES, Dataset, ImageRecord, LabelMap
from edgevision.core.errors import DatasetError, FileAccessError, short_repr, short_text
from edgevision.core.geometry import RLE, Polygon, Polyline, Shape
from edgevision.core.io import ImageIndex, place_image, safe_relpath
from edgevision.core.report import Report
from edgevision.core.safeload import MAX_IMAGE_PIXELS, image_size, load_json
from edgevision.formats import register_format
from edgevision.formats._readkit import declared_size, is_number, number_array
from edgevision.formats.base import Detection, Format, Losses, Options, WriteOptions

log = logging.getLogger(__name__)

_ANN_DIRS = ("annotations", "annotation", "ann", "anns", "json", "labels")
_PEEK_BYTES = 65536
_IMAGE_KEYS = ("id", "file_name", "width", "height")
UNSPLIT_AS = "train"
"""Split name writers use for images that have none."""


# -- helpers shared with other formats ---------------------------------------------------------
def split_from_name(name: str) -> tuple[str | None, str | None]:
    """The split a file or folder name stands for.

    ``instances_val2017`` -> ``("val", "val2017")``; ``valid`` -> ``("val", "valid")``;
    ``test-dev`` -> ``("test", "test")``; ``labels`` -> ``(None, None)``.

    Returns:
        The canonical split (``train`` / ``val`` / ``test``) and the word it was read from.
    """
    for word in re.split(r"[^0-9a-z]+", name.lower()):
        key = word.rstrip("0123456789")
        if key in SPLIT_ALIASES:
            return SPLIT_ALIASES[key], word
    return None, None


def report_exception(report: Report, e: DatasetError) -> None:
    """Route a `DatasetError` raised by a core helper through the report's error policy."""
    report.error(e.code or "dataset_error", e.where or "", e.detail)


def soft_error(report: Report, code: str, where: str, message: str) -> None:
    """Report an error that concerns no image (a stray annotation, a missing split folder).

    Under ``fail`` it raises; under ``skip`` and ``keep`` it is recorded and reading goes on
    (the item itself is dropped by the caller).
    """
    with report.guard(where):
        report.error(code, where, message)


class NameRegistry:
    """Keeps image names unique in a dataset read from several splits.

    A name already used by another split gets that split as a prefix (``val/img1.jpg``), with a
    warning; the same name twice in one split is a duplicate (the caller reports it).
    """

    def __init__(self) -> None:
        self._split_of: dict[str, str | None] = {}

    def claim(self, name: str, split: str | None, report: Report, where: str) -> str | None:
        """Return the unique name to use, or None when ``name`` is already used in ``split``."""
        if name not in self._split_of:
            self._split_of[name] = split
            return name
        if self._split_of[name] == split:
            return None
        alt, i = f"{split or 'unsplit'}/{name}", 1
        while alt in self._split_of:
            alt, i = f"{split or 'unsplit'}_{i}/{name}", i + 1
        self._split_of[alt] = split
        report.warning("name_clash", where, f"image name '{name}' is also used in split "
                       f"'{self._split_of[name]}'; kept as '{alt}'")
        return alt


def outermost(dirs: list[Path]) -> list[Path]:
    """Existing folders of ``dirs`` that are not inside another one (so an index sees each file once)."""
    real = sorted({d.resolve() for d in dirs if d.is_dir()}, key=lambda p: len(p.parts))
    keep: list[Path] = []
    for d in real:
        if not any(k == d or k in d.parents for k in keep):
            keep.append(d)
    return keep


class ImageFinder:
    """Finds an annotation's image: in the given folders first (one directory listing each), then
    anywhere under ``roots`` through a lazily built `ImageIndex` (forgiving case and extension)."""

    def __init__(self, dirs: list[Path], index: _LazyIndex) -> None:
        self.dirs = [d for d in dict.fromkeys(dirs) if d.is_dir()]
        self._listing: dict[Path, set[str]] = {}
        self._index = index

    def find(self, name: str) -> Path | None:
        for d in self.dirs:
            if "/" in name:
                p = d / name
                if p.is_file():
                    return p
                continue
            if d not in self._listing:
                self._listing[d] = set(os.listdir(d))
            if name in self._listing[d]:
                return d / name
        return self._index.find(name)


class _LazyIndex:
    """An `ImageIndex` over ``roots`` built on first use (most datasets never need it)."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = outermost(roots)
        self._index: ImageIndex | None = None
        self._empty = False

    def find(self, name: str) -> Path | None:
        if self._index is None:
            self._index = ImageIndex(*self.roots)
            self._empty = len(self._index) == 0
        return None if self._empty else self._index.find(name)


def box_flags(xyxy: NDArray[np.float64], h: Any, w: Any, tol: Any = 0.0) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Which boxes `box_problems` would report (``bad``), and which only extend past the image (``partly``)."""
    invalid, outside, partly = box_masks(xyxy, h, w, tol)
    return invalid | outside, partly


# -- detection ---------------------------------------------------------------------------------
def looks_like_coco(path: Path) -> bool:
    """Whether a ``.json`` file is a COCO dataset file, from its first and last bytes only."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(_PEEK_BYTES)
            if b'"images"' not in head and len(head) < _PEEK_BYTES:
                return False
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - _PEEK_BYTES, len(head)))
            tail = f.read()
    except OSError as e:  # a json it may not read may be a split: never skip it silently
        raise FileAccessError.from_os_error(e, path) from e
    text = head + tail
    return (head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" and b'"images"' in text
            and (b'"annotations"' in text or b'"categories"' in text))


def coco_files(folder: Path) -> list[Path]:
    """COCO json files in ``folder``, ``folder/annotations`` and one sub-folder level, sorted."""
    found = [*sorted(folder.glob("*.json")), *sorted(folder.glob("*/*.json"))]
    return [p for p in dict.fromkeys(found) if looks_like_coco(p)]


# -- reading -----------------------------------------------------------------------------------
class CocoReadOptions(Options):
    """Options of the COCO reader.

    Attributes:
        images_dir: folder holding the images when they are not beside the json (absolute, or
            relative to the json's folder); searched first.
    """

    images_dir: str | None = None


@dataclass
class _SplitFile:
    path: Path
    split: str | None
    word: str | None


@dataclass
class _Image:
    """One kept entry of a file's ``images`` list."""

    name: str
    size_hw: tuple[int, int]
    path: Path | None
    where: str
    meta: dict[str, Any]


@dataclass
class _Columns:
    """The annotation table of one file as arrays (``N`` annotations)."""

    pos: NDArray[np.int64]            # (N,) index into the file's images; -1 unknown id, -2 image dropped
    cat: NDArray[np.int64]            # (N,) source category id
    xywh: NDArray[np.float64]         # (N, 4)
    problems: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    unusable: set[int] = field(default_factory=set)   # cannot be kept even under ``keep``
    no_bbox: set[int] = field(default_factory=set)    # bbox missing or not 4 numbers
    shapes: list[Shape | None] | None = None
    attrs: dict[int, dict[str, Any]] = field(default_factory=dict)
    scores: NDArray[np.float32] | None = None
    xyxy: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4)))  # set once the boxes are final


class _Categories:
    """Categories merged over the split files (same id must keep the same name)."""

    def __init__(self) -> None:
        self.by_id: dict[int, tuple[str, dict[str, Any]]] = {}

    def merge(self, cats: Any, where: str, report: Report) -> None:
        if not isinstance(cats, list):
            report.fatal("json_malformed", where, f"expected 'categories' to be a list, got {type(cats).__name__}")
        for i, c in enumerate(cats):
            if not (isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)):
                report.fatal("category_malformed", f"{where}:categories[{i}]",
                             f"expected an object with an integer 'id' and a string 'name', got {short_repr(c, 100)}")
            cid, name = int(c["id"]), c["name"]
            if cid in self.by_id and self.by_id[cid][0] != name:
                report.fatal("category_conflict", f"{where}:categories[{i}]",
                             f"category id {cid} is {short_repr(name)} here but {short_repr(self.by_id[cid][0])} in "
                             "an earlier file; the split files must share one category list")
            extra = {k: v for k, v in c.items() if k not in ("id", "name") and v not in ("", None)}
            self.by_id.setdefault(cid, (name, extra))

    def label_map(self, where: str, report: Report) -> LabelMap:
        ids = sorted(self.by_id)
        names = [self.by_id[i][0] for i in ids]
        first: dict[str, int] = {}
        for cid, n in zip(ids, names, strict=True):
            if n in first:
                report.fatal("category_duplicate", where, f"category name {short_repr(n)} is used by ids {first[n]} and "
                             f"{cid}; class names must be unique (merge them with a recipe or rename one)")
            first[n] = cid
        return LabelMap(names, source_ids=ids, extra=[self.by_id[i][1] for i in ids])


def _plan(files: list[Path], root: Path, report: Report) -> list[_SplitFile]:
    """Assign a split to each COCO file; refuse two files for one split."""
    inst = [f for f in files if f.stem.lower().startswith("instances")]
    if len(files) > 1 and inst and len(inst) < len(files):
        report.info("coco_file_ignored", str(root), "reading instances_*.json only; ignored: "
                    + ", ".join(f.name for f in files if f not in inst))
        files = inst
    plan: list[_SplitFile] = []
    for f in files:
        split, word = split_from_name(f.stem)
        if split is None and f.parent != root and f.parent.name.lower() not in _ANN_DIRS:
            split, word = split_from_name(f.parent.name)
        if split is None and len(files) > 1:
            split = word = re.sub(r"^instances_?", "", f.stem) or f.stem
        plan.append(_SplitFile(f, split, word))
    seen: dict[str | None, Path] = {}
    for p in plan:
        if p.split in seen:
            report.fatal("split_duplicate", str(root), f"two COCO files for split '{p.split}': "
                         f"{seen[p.split]} and {p.path}; pass one file, or rename them")
        seen[p.split] = p.path
    rank = {"train": 0, "val": 1, "test": 2}
    return sorted(plan, key=lambda p: rank.get(p.split or "", 3))  # train keeps the plain names on a clash


def _dataset_root(json_path: Path) -> Path:
    d = json_path.parent
    return d.parent if d.name.lower() in _ANN_DIRS else d


def _option_dir(images_dir: str | None, json_path: Path) -> list[Path]:
    """The ``images_dir`` option as a folder (relative to the json's folder), or nothing."""
    if not images_dir:
        return []
    return [Path(images_dir) if Path(images_dir).is_absolute() else json_path.parent / images_dir]


def _search_dirs(sf: _SplitFile, images_dir: str | None) -> list[Path]:
    """Folders where a split file's images usually are, most specific first."""
    d = sf.path.parent
    bases = _option_dir(images_dir, sf.path) + ([d, d.parent] if d.name.lower() in _ANN_DIRS else [d])
    subs = [s for s in dict.fromkeys([sf.word, sf.split]) if s]
    dirs: list[Path] = []
    for b in bases:
        dirs += [b / "images" / s for s in subs] + [b / s for s in subs] + [b / "images", b]
    return dirs


def _is_int(v: Any) -> bool:
    """An integral JSON number (``3``, ``3.0``) that fits an int64; never a bool or a string."""
    return is_number(v) and math.isfinite(v) and v == int(v) and -(2**63) <= v < 2**63


def _is_id(v: Any) -> bool:
    """A usable COCO id: an integral number or a string (``true``, ``1.5``, lists and null are not)."""
    return _is_int(v) or isinstance(v, str)


class _CocoReader:
    """Reads one or more COCO split files into a single dataset."""

    def __init__(self, options: CocoReadOptions, report: Report, root: Path) -> None:
        self.options, self.report, self.root = options, report, root
        self.categories = _Categories()
        self.names = NameRegistry()
        self._pending: list[_Pending] = []
        self.meta: dict[str, Any] = {}
        self._indexes: dict[tuple[Path, ...], _LazyIndex] = {}

    # -- one file ------------------------------------------------------------------------------
    def read_file(self, sf: _SplitFile) -> None:
        where = str(sf.path)
        data = load_json(sf.path)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            self.report.fatal("json_malformed", where, "expected a COCO object with an 'images' list, "
                              "'annotations' and 'categories'")
        anns = data.get("annotations", [])
        if not isinstance(anns, list):
            self.report.fatal("json_malformed", where, f"expected 'annotations' to be a list, got {type(anns).__name__}")
        for key in ("info", "licenses"):
            if data.get(key) and key not in self.meta:
                self.meta[key] = data[key]
        self.categories.merge(data.get("categories", []), where, self.report)
        images, pos_of = self._images(data["images"], sf)
        cols = _columns(anns, pos_of, images)
        alive = self._check(cols, images, anns, where)
        self._records(cols, images, alive, sf.split)

    def _finder(self, sf: _SplitFile) -> ImageFinder:
        key = tuple(_option_dir(self.options.images_dir, sf.path) + [_dataset_root(sf.path)])
        if key not in self._indexes:
            self._indexes[key] = _LazyIndex(list(key))
        return ImageFinder(_search_dirs(sf, self.options.images_dir), self._indexes[key])

    def _images(self, entries: list[Any], sf: _SplitFile) -> tuple[list[_Image], dict[Any, int]]:
        """Parse the ``images`` list; returns the kept images and ``id -> index`` (-2 for dropped)."""
        finder = self._finder(sf)
        fast = self._images_fast(entries, sf, finder)
        if fast is not None:
            return fast
        images: list[_Image] = []
        pos_of: dict[Any, int] = {}
        missing: list[str] = []
        for i, im in enumerate(entries):
            where = f"{sf.path}:images[{i}]"
            g = self.report.guard(where)
            with g:
                img = self._image(im, where, sf, finder, pos_of, missing)
            if g.ok and img is not None:
                pos_of[im["id"]] = len(images)
                images.append(img)
            elif isinstance(im, dict) and _is_id(im.get("id")) and im.get("id") not in pos_of:
                pos_of[im.get("id")] = -2
        self._warn_missing(missing, len(entries), sf)
        return images, pos_of

    def _images_fast(self, entries: list[Any], sf: _SplitFile,
                     finder: ImageFinder) -> tuple[list[_Image], dict[Any, int]] | None:
        """The common case in one go: unique ids, plain unique file names, sizes present. None otherwise
        (the item-by-item path then finds and reports what is wrong)."""
        try:
            ids = list(map(itemgetter("id"), entries))
            names = list(map(itemgetter("file_name"), entries))
            hs, ws = list(map(itemgetter("height"), entries)), list(map(itemgetter("width"), entries))
        except (KeyError, TypeError):
            return None
        if (not (set(map(type, hs)) | set(map(type, ws))) <= {int}  # bools, floats, strings: checked one by one
                or not set(map(type, ids)) <= {int} or not set(map(type, names)) <= {str}):
            return None
        try:
            hw = np.array([hs, ws], dtype=np.int64).reshape(2, len(entries))
        except (OverflowError, ValueError):
            return None
        if ((hw <= 0).any() or (hw[0].astype(np.float64) * hw[1] > MAX_IMAGE_PIXELS).any()
                or len(set(ids)) < len(ids) or len(set(names)) < len(names) or not all(map(_is_plain_name, names))):
            return None
        taken = [self.names.claim(n, sf.split, self.report, f"{sf.path}:images[{i}]") for i, n in enumerate(names)]
        missing = []
        images = []
        for i, (im, name, h, w) in enumerate(zip(entries, taken, *hw.tolist(), strict=True)):
            path = finder.find(names[i])
            if path is None:
                missing.append(names[i])
            extra = {k: v for k, v in im.items() if k not in _IMAGE_KEYS}
            images.append(_Image(name, (h, w), path, f"{sf.path}:images[{i}] {short_repr(names[i], 100)}",  # type: ignore[arg-type]
                                 {"coco_id": ids[i], "coco_image": extra} if extra else {"coco_id": ids[i]}))
        self._warn_missing(missing, len(entries), sf)
        return images, {i: k for k, i in enumerate(ids)}

    def _warn_missing(self, missing: list[str], n: int, sf: _SplitFile) -> None:
        if missing:
            self.report.warning("image_missing", str(sf.path), f"{len(missing)} of {n} images not found "
                                f"(e.g. '{missing[0]}'); sizes taken from the json, image paths left empty")

    def _image(self, im: Any, where: str, sf: _SplitFile, finder: ImageFinder,
               pos_of: dict[Any, int], missing: list[str]) -> _Image | None:
        rep = self.report
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            rep.error("image_malformed", where, f"expected an object with 'id' and a string 'file_name', "
                                                f"got {short_repr(im, 100)}")
            return None
        if not _is_id(im["id"]):
            rep.error("image_malformed", where, f"expected image id as an integer (or a string), got {short_repr(im['id'])}")
            return None
        if im["id"] in pos_of:
            rep.error("image_duplicate", where, f"image id {short_repr(im['id'])} appears twice")
            return None
        where = f"{where} {short_repr(im['file_name'], 100)}"
        try:
            name = _safe_name(im["file_name"], where)
        except DatasetError as e:
            report_exception(rep, e)
            return None
        path = finder.find(name)
        size = declared_size(im.get("height"), im.get("width"), where, rep)
        if size is None:
            if path is None:
                rep.error("image_missing", where, "no valid width/height in the json and the image file was not "
                          f"found (looked beside {sf.path.parent}); add the sizes or the image")
                return None
            try:
                size = image_size(path, where)
            except DatasetError as e:
                report_exception(rep, e)
                return None
        elif path is None:
            missing.append(name)
        unique = self.names.claim(name, sf.split, rep, where)
        if unique is None:
            rep.error("image_duplicate", where, f"file_name {short_repr(name, 100)} appears twice in the same split")
            return None
        extra = {k: v for k, v in im.items() if k not in _IMAGE_KEYS}
        meta: dict[str, Any] = {"coco_id": im["id"]}
        if extra:
            meta["coco_image"] = extra
        return _Image(unique, size, path, where, meta)

    # -- validation ----------------------------------------------------------------------------
    def _check(self, cols: _Columns, images: list[_Image], anns: list[Any], where: str) -> NDArray[np.bool_]:
        """Report every bad annotation under the policy; return which images survive."""
        alive = np.ones(len(images), dtype=bool)
        if not len(cols.pos):
            return alive
        hw = np.array([im.size_hw for im in images], dtype=np.float64).reshape(-1, 2)[np.clip(cols.pos, 0, None)] \
            if images else np.zeros((len(cols.pos), 2))
        bad, partly = box_flags(cols.xyxy, hw[:, 0], hw[:, 1])
        bad |= ~np.isin(cols.cat, np.array(sorted(self.categories.by_id), dtype=np.int64))
        bad[sorted(cols.problems)] = True
        for i in np.flatnonzero(cols.pos == -1):
            soft_error(self.report, "image_unknown", f"{where}:annotations[{i}] (id {_ann_id(anns[i])})",
                       f"image_id {short_repr(_get(anns[i], 'image_id'))} is not in 'images'; fix the id or remove "
                       "the annotation")
        partly &= cols.pos >= 0
        if partly.any():
            k = int(np.flatnonzero(partly)[0])
            self.report.warning("box_partly_outside", where, f"{int(partly.sum())} boxes extend past their image "
                                f"border (e.g. annotation id {_ann_id(anns[k])} in {short_repr(images[cols.pos[k]].name, 100)}); "
                                "kept as read")
        bad_idx = np.flatnonzero(bad & (cols.pos >= 0))
        for group in _group_by(bad_idx, cols.pos[bad_idx]):
            j = int(cols.pos[group[0]])
            g = self.report.guard(images[j].where)
            with g:
                for i in group.tolist():
                    self._report_annotation(cols, i, images[j], anns, where)
            alive[j] = g.ok
        return alive

    def _report_annotation(self, cols: _Columns, i: int, im: _Image, anns: list[Any], where: str) -> None:
        item = f"{where}:annotations[{i}] (id {_ann_id(anns[i])}, image {short_repr(im.name, 100)})"
        for code, msg in cols.problems.get(i, []):
            self.report.error(code, item, msg)
        if i in cols.unusable:
            return
        known = sorted(self.categories.by_id)
        if int(cols.cat[i]) not in self.categories.by_id:
            self.report.error("class_unknown", item, f"category_id {int(cols.cat[i])} is not in 'categories' "
                              f"(known ids: {known[:20]}); fix the id or add the category")
        for _, code, msg in box_problems(cols.xyxy[i : i + 1], im.size_hw):
            self.report.error(code, item, f"{msg} (COCO bbox x,y,w,h = {cols.xywh[i].tolist()})")

    # -- records -------------------------------------------------------------------------------
    def _records(self, cols: _Columns, images: list[_Image], alive: NDArray[np.bool_], split: str | None) -> None:
        """Sort the kept annotations by image once; records are made when all categories are known."""
        keep = cols.pos >= 0
        keep[keep] &= alive[cols.pos[keep]]
        keep &= np.isin(cols.cat, np.array(sorted(self.categories.by_id), dtype=np.int64))
        keep[list(cols.unusable)] = False
        sel = np.flatnonzero(keep)
        sel = sel[np.argsort(cols.pos[sel], kind="stable")]
        bounds = np.searchsorted(cols.pos[sel], np.arange(len(images) + 1)).tolist()
        self._pending.append(_Pending(
            [im if ok else None for im, ok in zip(images, alive.tolist(), strict=True)], bounds, sel,
            cols.xyxy[sel], cols.cat[sel], None if cols.scores is None else cols.scores[sel], cols.shapes,
            cols.attrs, split,
        ))

    def dataset(self, where: str) -> Dataset:
        labels = self.categories.label_map(where, self.report)
        ids = np.array(labels.source_ids or [], dtype=np.int64)
        records = []
        for p in self._pending:
            cats = np.searchsorted(ids, p.cats)  # source category ids -> canonical 0..K-1
            per_object = p.shapes is not None or bool(p.attrs)
            for im, a, b in zip(p.images, p.bounds[:-1], p.bounds[1:]):  # rows a:b are image im's
                if im is None:
                    continue
                extra = {"shapes": _pick(p.shapes, p.sel[a:b]), "attributes": _pick_attrs(p.attrs, p.sel[a:b])} \
                    if per_object else {}
                records.append(ImageRecord(  # boxes and class ids: views into one array per file
                    im.name, im.size_hw, p.boxes[a:b], cats[a:b], im.path,
                    None if p.scores is None else p.scores[a:b], split=p.split, meta=im.meta, **extra,
                ))
        return Dataset(labels=labels, images=records, root=self.root, meta=self.meta)


@dataclass
class _Pending:
    """One file's kept annotations, sorted by image; ``bounds[j]:bounds[j + 1]`` belong to image j."""

    images: list[_Image | None]  # None: dropped by the error policy
    bounds: list[int]
    sel: NDArray[np.int64]  # annotation index of each sorted row (for shapes / attributes)
    boxes: NDArray[np.float64]
    cats: NDArray[np.int64]  # source category ids
    scores: NDArray[np.float32] | None
    shapes: list[Shape | None] | None
    attrs: dict[int, dict[str, Any]]
    split: str | None


# -- column parsing ----------------------------------------------------------------------------
def _is_plain_name(name: Any) -> bool:
    """A file name `safe_relpath` would return unchanged: no folder, drive, dots-only or edge spaces."""
    return (isinstance(name, str) and "/" not in name and "\\" not in name and name[1:2] != ":"
            and name not in ("", ".", "..") and name.strip() == name)


def _safe_name(name: str, where: str) -> str:
    """`safe_relpath`, skipped for a plain file name it would return unchanged (the common case)."""
    return name if _is_plain_name(name) else safe_relpath(name, where)


def _get(a: Any, key: str) -> Any:
    return a.get(key) if isinstance(a, dict) else None


def _ann_id(a: Any) -> str:
    """An annotation's id for a message (short, whatever the file holds)."""
    return short_repr(_get(a, "id"), 40)


def _int_column(values: list[Any]) -> NDArray[np.int64]:
    """A list of integral JSON numbers as an int64 array (ValueError for anything else: bools too)."""
    if not set(map(type, values)) <= {int, float}:
        raise ValueError("category ids are not all numbers")
    arr = np.array(values)
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and np.array_equal(arr, np.round(arr)) \
            and (np.abs(arr) < 2**63).all():
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise ValueError("category ids are not all integers")
    return arr.astype(np.int64)


def _bbox_column(boxes: list[Any]) -> NDArray[np.float64]:
    """All ``bbox`` values as an ``(N, 4)`` array when each is a list of four JSON numbers, else ValueError.

    Checked strictly, in C-level passes: ``[[1, 2], [3, 4]]``, ``["1", 2, 3, 4]`` or ``[true, 1, 2, 3]``
    would otherwise pass through numpy as four numbers.
    """
    if not (set(map(type, boxes)) <= {list} and set(map(len, boxes)) <= {4}
            and set(map(type, chain.from_iterable(boxes))) <= {int, float}):
        raise ValueError("not every bbox is a list of four numbers")
    return np.array(boxes, dtype=np.float64).reshape(len(boxes), 4)  # OverflowError for a 400-digit int


def _columns(anns: list[Any], pos_of: dict[Any, int], images: list[_Image]) -> _Columns:
    """Parse the annotation list column-wise; fall back to one-by-one parsing for odd entries."""
    n = len(anns)
    try:
        img_ids = list(map(itemgetter("image_id"), anns))
        if bool in set(map(type, img_ids)):  # True == 1: would find image 1
            raise ValueError("an image_id is a bool")
        pos = np.fromiter(map(pos_of.get, img_ids, repeat(-1)), dtype=np.int64, count=n)
        cat = _int_column(list(map(itemgetter("category_id"), anns)))
        xywh = _bbox_column(list(map(itemgetter("bbox"), anns)))
        cols = _Columns(pos, cat, xywh)
    except (KeyError, TypeError, ValueError, OverflowError):
        cols = _columns_one_by_one(anns, pos_of)
    special = _special(anns)
    _shapes(anns, special, cols, images)
    for i in cols.no_bbox:
        cols.problems.setdefault(i, []).append(
            ("box_malformed", f"expected bbox [x, y, width, height] as four numbers, got "
                              f"{short_repr(_get(anns[i], 'bbox'))}"))
        cols.unusable.add(i)
    _attributes(anns, special, cols)
    cols.xyxy = xywh_to_xyxy(cols.xywh)
    has_score = [i for i, a in enumerate(anns) if isinstance(a, dict) and "score" in a]
    if has_score:
        scores = _scores([anns[i]["score"] for i in has_score], has_score, cols)
        cols.scores = scores if len(has_score) == n else None  # some with, some without: no scores
    return cols


def _scores(values: list[Any], idx: list[int], cols: _Columns) -> NDArray[np.float32]:
    """The ``score`` values of annotations ``idx``; one that is not a finite number is a ``score_malformed``
    problem of its annotation (NaN kept under the keep policy)."""
    if set(map(type, values)) <= {int, float}:
        try:
            arr = np.array(values, dtype=np.float64)
        except OverflowError:
            arr = None
        if arr is not None and np.isfinite(arr).all() and (np.abs(arr) < 3e38).all():
            return arr.astype(np.float32)
    out = np.full(len(values), np.nan, dtype=np.float32)
    for k, (i, v) in enumerate(zip(idx, values, strict=True)):
        if is_number(v) and math.isfinite(v) and abs(v) < 3e38:
            out[k] = v
        else:
            cols.problems.setdefault(i, []).append(("score_malformed", f"expected score as a finite number, got "
                                                                       f"{short_repr(v)}"))
    return out


def _columns_one_by_one(anns: list[Any], pos_of: dict[Any, int]) -> _Columns:
    n = len(anns)
    cols = _Columns(np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.full((n, 4), np.nan))
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            cols.problems.setdefault(i, []).append(("annotation_malformed", f"expected an object, got {short_repr(a)}"))
            cols.unusable.add(i)
            continue
        img_id = a.get("image_id")
        cols.pos[i] = pos_of.get(img_id, -1) if _is_id(img_id) else -1
        cat = a.get("category_id")
        if _is_int(cat):
            cols.cat[i] = int(cat)
        else:
            cols.problems.setdefault(i, []).append(
                ("class_unknown", f"expected an integer category_id, got {short_repr(cat)}"))
            cols.unusable.add(i)
        try:
            cols.xywh[i] = number_array(a.get("bbox"), "bbox [x, y, width, height]", 4)
        except ValueError:
            cols.no_bbox.add(i)
    return cols


def _special(anns: list[Any]) -> list[int]:
    """Indices of the annotations that need per-object work: a shape, a crowd flag, attributes, or
    not an object at all. C-level passes (``map`` / ``compress``): most files have none."""
    keys = ("segmentation", "iscrowd", "attributes")
    try:
        hits: set[int] = set()
        for k in keys:
            hits.update(compress(range(len(anns)), map(dict.get, anns, repeat(k))))
        return sorted(hits)
    except TypeError:  # an entry that is not an object
        return [i for i, a in enumerate(anns) if type(a) is not dict or any(a.get(k) for k in keys)]


def _shapes(anns: list[Any], special: list[int], cols: _Columns, images: list[_Image]) -> None:
    """Parse the non-empty ``segmentation`` fields into lazy shapes."""
    idx = [i for i in special if isinstance(anns[i], dict) and anns[i].get("segmentation")]
    if not idx:
        return
    cols.shapes = [None] * len(anns)
    for i in idx:
        try:
            shape = _shape(anns[i]["segmentation"])
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            cols.problems.setdefault(i, []).append(("shape_malformed", f"segmentation not readable: "
                                                                       f"{short_text(str(e), 160)}"))
            continue
        cols.shapes[i] = shape
        j = int(cols.pos[i])
        if isinstance(shape, RLE) and j >= 0 and shape.size_hw != images[j].size_hw:
            cols.problems.setdefault(i, []).append(("mask_size_mismatch", f"RLE size {list(shape.size_hw)} differs "
                                                    f"from the image size {list(images[j].size_hw)} (h, w)"))
        if shape is not None and i in cols.no_bbox:  # COCO allows a missing bbox when a shape gives it
            x1, y1, x2, y2 = shape.bbox_xyxy().tolist()
            cols.xywh[i] = [x1, y1, x2 - x1, y2 - y1]
            cols.no_bbox.discard(i)


def _shape(seg: Any) -> Shape | None:
    """A COCO ``segmentation`` as a `Polygon` or `RLE`; degenerate polygon rings are dropped.

    Raises:
        ValueError: a ring that is not a flat list of numbers, or a malformed RLE (see `RLE.from_coco`).
    """
    if isinstance(seg, dict):
        return RLE.from_coco(seg)
    if isinstance(seg, list):
        rings = seg if seg and isinstance(seg[0], list) else [seg]
        arrays = [number_array(r, "polygon ring [x1, y1, x2, y2, ...]") for r in rings]
        good = [a for a in arrays if len(a) >= 6 and len(a) % 2 == 0]
        return Polygon(tuple(a.reshape(-1, 2) for a in good)) if good else None
    raise TypeError(f"expected a polygon list or an RLE object, got {type(seg).__name__}")


def _attributes(anns: list[Any], special: list[int], cols: _Columns) -> None:
    """``iscrowd`` (0/1 or a bool) and a CVAT-style ``attributes`` object; other values are problems."""
    for i in special:
        a = anns[i]
        if not isinstance(a, dict) or not (a.get("iscrowd") or a.get("attributes")):
            continue
        crowd, extra = a.get("iscrowd"), a.get("attributes")
        if crowd not in (None, 0, 1) or type(crowd) not in (type(None), int, bool):
            cols.problems.setdefault(i, []).append(("attribute_malformed", f"expected iscrowd 0 or 1, got "
                                                                           f"{short_repr(crowd)}"))
            crowd = False
        if extra and not isinstance(extra, dict):
            cols.problems.setdefault(i, []).append(("attribute_malformed", f"expected attributes as an object, got "
                                                                           f"{short_repr(extra)}"))
            extra = None
        d = dict(extra) if extra else {}
        if crowd:
            d["iscrowd"] = True
        if d:
            cols.attrs[i] = d


def _group_by(idx: NDArray[np.int64], keys: NDArray[np.int64]) -> list[NDArray[np.int64]]:
    """Split ``idx`` into groups of equal ``keys`` (in key order, stable inside a group)."""
    order = np.argsort(keys, kind="stable")
    cuts = np.flatnonzero(np.diff(keys[order])) + 1
    return np.split(idx[order], cuts) if len(idx) else []


def _pick(shapes: list[Shape | None] | None, idx: NDArray[np.int64]) -> list[Shape | None] | None:
    if shapes is None:
        return None
    out = [shapes[i] for i in idx]
    return out if any(s is not None for s in out) else None


def _pick_attrs(attrs: dict[int, dict[str, Any]], idx: NDArray[np.int64]) -> list[dict[str, Any]] | None:
    if not attrs:
        return None
    out = [dict(attrs.get(int(i), {})) for i in idx]
    return out if any(out) else None


# -- writing -----------------------------------------------------------------------------------
def _category_ids(labels: LabelMap) -> list[int]:
    ids = labels.source_ids
    if ids is not None and len(set(ids)) == len(ids):
        return [int(i) for i in ids]
    if ids is not None:
        log.warning("label map source ids %s are not unique; writing COCO category ids 1..%d", ids, len(labels))
    return list(range(1, len(labels) + 1))


def _categories(labels: LabelMap, ids: list[int]) -> list[dict[str, Any]]:
    out = []
    for k, (cid, name) in enumerate(zip(ids, labels.names, strict=True)):
        extra = dict(labels.extra[k]) if labels.extra is not None else {}
        extra.setdefault("supercategory", "")
        out.append({"id": cid, "name": name, **extra})
    return out


def _image_ids(records: list[ImageRecord]) -> list[int]:
    """Keep the source COCO ids when they are unique integers, else number 1..N."""
    ids = [r.meta.get("coco_id") for r in records]
    if all(isinstance(i, int) and not isinstance(i, bool) for i in ids) and len(set(ids)) == len(ids):
        return ids  # type: ignore[return-value]
    return list(range(1, len(records) + 1))


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _segmentation(shape: Shape | None, crowd: bool, size_hw: tuple[int, int]) -> tuple[Any, float | None]:
    """COCO ``segmentation`` and the shape's area (None when there is no area-bearing shape)."""
    if isinstance(shape, Polygon):
        if crowd:
            rle = shape.to_rle(size_hw)
            return rle.to_coco(compressed=True), rle.area()
        return shape.to_flat(), shape.area()
    if isinstance(shape, RLE):
        return shape.to_coco(compressed=True), shape.area()
    return [], None


def _annotations(r: ImageRecord, image_id: int, first_id: int, cat_ids: list[int],
                 losses: Losses) -> list[dict[str, Any]]:
    """One image's COCO annotations (ids ``first_id, first_id + 1, ...``)."""
    if not len(r):
        return []
    xywh = xyxy_to_xywh(r.boxes).tolist()
    areas = box_area(r.boxes).tolist()
    cats = [cat_ids[c] for c in r.class_ids.tolist()]
    scores = None if r.scores is None else r.scores.tolist()
    out = []
    for k in range(len(r)):
        attrs = r.object_attributes(k)
        crowd = bool(attrs.get("iscrowd"))
        shape = r.shapes[k] if r.shapes is not None else None
        if isinstance(shape, Polyline):
            losses.add("polyline (COCO has no open lines; box kept)", 1, r.name)
        seg, area = _segmentation(shape, crowd, r.size_hw)
        ann: dict[str, Any] = {"id": first_id + k, "image_id": image_id, "category_id": cats[k], "bbox": xywh[k],
                               "area": areas[k] if area is None else area, "iscrowd": int(crowd), "segmentation": seg}
        other = {a: v for a, v in attrs.items() if a != "iscrowd"}
        if other:
            ann["attributes"] = other
        if scores is not None:
            ann["score"] = scores[k]
        out.append(ann)
    return out


def write_groups(dataset: Dataset) -> dict[str, list[ImageRecord]]:
    """Records per output split; unsplit records go to `UNSPLIT_AS` (``train``)."""
    groups: dict[str, list[ImageRecord]] = {}
    for r in dataset.images:
        groups.setdefault(r.split or UNSPLIT_AS, []).append(r)
    order = [s for s in ("train", "val", "test") if s in groups] + sorted(set(groups) - {"train", "val", "test"})
    return {s: groups[s] for s in order}


def place_record_image(r: ImageRecord, dst: Path, options: WriteOptions, losses: Losses) -> None:
    """Copy / link one record's image; count it when the source image is not available."""
    if options.images != "none" and not place_image(r.path, dst, options.images):
        losses.add("image file not available (annotations written without it)", 1, r.name)


class CocoFormat(Format):
    name = "coco"
    description = "COCO detection / instance segmentation JSON (bbox, polygon, RLE), one file per split"
    ReadOptions = CocoReadOptions
    can_write = True

    def detect(self, path: Path) -> Detection | None:
        path = Path(path)
        if path.is_file():
            return Detection(0.95, "COCO json: has 'images' and 'annotations'/'categories'") if looks_like_coco(path) else None
        if path.is_dir():
            files = coco_files(path)
            if files:
                return Detection(0.9, "folder with COCO json: " + ", ".join(str(f.relative_to(path)) for f in files[:4]))
        return None

    def read(self, path: Path, options: Options, report: Report) -> Dataset:
        assert isinstance(options, CocoReadOptions)
        path = Path(path)
        if path.is_file():
            files, root = [path], _dataset_root(path)
        else:
            files, root = coco_files(path), path
            if not files:
                report.fatal("format_unknown", str(path), "no COCO json found in the folder, annotations/ or a sub-folder; "
                             "expected a .json with 'images', 'annotations' and 'categories'")
        reader = _CocoReader(options, report, root)
        for sf in _plan(files, root if path.is_dir() else path.parent, report):
            reader.read_file(sf)
        return reader.dataset(str(path))

    def write(self, dataset: Dataset, out: Path, options: WriteOptions, losses: Losses) -> None:
        cat_ids = _category_ids(dataset.labels)
        categories = _categories(dataset.labels, cat_ids)
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        info = dataset.meta.get("info") if isinstance(dataset.meta.get("info"), dict) else {
            "description": "written by EdgeVision"}
        licenses = dataset.meta.get("licenses") if isinstance(dataset.meta.get("licenses"), list) else []
        for split, records in write_groups(dataset).items():
            images, anns = [], []
            for r, image_id in zip(records, _image_ids(records), strict=True):
                h, w = r.size_hw
                images.append({"id": image_id, "file_name": r.name, "width": w, "height": h,
                               **r.meta.get("coco_image", {})})
                anns += _annotations(r, image_id, len(anns) + 1, cat_ids, losses)
                place_record_image(r, out / "images" / split / r.name, options, losses)
            doc = {"info": info, "licenses": licenses, "images": images, "annotations": anns, "categories": categories}
            with open(out / "annotations" / f"instances_{split}.json", "w", encoding="utf-8") as f:
                json.dump(doc, f, ensure_ascii=False, separators=(",", ":"), default=_jsonable)


register_format(CocoFormat())
