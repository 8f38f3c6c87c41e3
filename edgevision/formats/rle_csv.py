"""Run-length masks in a CSV, Kaggle/Severstal style (read only).

Layouts of the header (case-insensitive):

* ``ImageId,ClassId,EncodedPixels`` (Severstal steel defects, 2019 final version);
* ``ImageId_ClassId,EncodedPixels`` (the older Severstal layout, ``0002cc93b.jpg_1``, one row per
  image and class, mostly with empty ``EncodedPixels``);
* ``ImageId,EncodedPixels`` (one class, e.g. Airbus ship detection); every row is class 1.

``EncodedPixels`` holds space-separated ``start length`` pairs; ``start`` is 1-based and pixels are
numbered in column-major order (top to bottom, then left to right), so pixel ``i - 1`` is at row
``(i - 1) % H``, column ``(i - 1) // H``. Rows of the same image and class are merged. Each class's
mask is split into connected components, one object each (``instances: components``), or kept as
one object per image and class (``one_per_row``); each object gets an `RLE` shape (COCO) and its
tight pixel box. Images in the image folder that the CSV does not mention, or only with empty
``EncodedPixels``, are background (defect-free) images. When a folder is read, the files beside
the CSV that are not read (Kaggle's ``sample_submission.csv``, a README) are named in one
``file_outside_layout`` info finding; other folders (``test_images/``) are not looked at.

Bad input, each a one-line error naming the CSV line and ImageId: an odd number of values, a
non-numeric value, a start below 1 or a length below 1, a run past the end of the image, a line
with missing columns, an unknown ClassId (when ``class_names`` is given).

Example (Severstal)::

    csv: train.csv
    image_dir: train_images
    class_names: {1: pitting, 2: inclusion, 3: scratch, 4: patches}
    size_hw: [256, 1600]

Dense masks live only while one image is read.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator

from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import short_repr, short_text
from edgevision.core.geometry import RLE
from edgevision.core.io import ImageIndex, safe_relpath
from edgevision.core.report import Report
from edgevision.core.safeload import MAX_IMAGE_PIXELS
from edgevision.formats import register_format
from edgevision.formats._readkit import (
    CheckedObjects,
    found_below,
    header_size,
    loose_files,
    read_head,
    report_outside_layout,
    safe_name,
    sub_folder,
)
from edgevision.formats.base import Detection, Format, Options
from edgevision.formats.masks import mask_components

log = logging.getLogger(__name__)

_HEADERS = {
    ("imageid", "classid", "encodedpixels"): "separate",
    ("imageid_classid", "encodedpixels"): "joined",
    ("imageid", "encodedpixels"): "single",
}
_IMAGE_DIRS = ("train_images", "images")
_RUN_VALUE = re.compile(r"-?[0-9]{1,9}")
_CLASS_ID = re.compile(r"-?[0-9]{1,18}")
"""A run start or length: an integer that fits an image (`MAX_IMAGE_PIXELS` has 9 digits)."""


class RleCsvReadOptions(Options):
    """Reader options for ``rle-csv``.

    Attributes:
        csv: the CSV file relative to the dataset folder; default ``train.csv`` or the only CSV.
        image_dir: image folder relative to the CSV's folder; default ``train_images/``, else
            ``images/``, else the CSV's folder.
        class_names: ClassId -> class name; other ids are ``class_unknown`` errors. Default: the
            ids found, as names (``"1"``, ``"2"`` ...).
        size_hw: every image's ``[height, width]`` (Severstal: ``[256, 1600]``); default: read
            each image's header.
        instances: ``components`` (one object per connected component) or ``one_per_row``.
        connectivity: 8 or 4, for ``components``.
        min_area: smallest component kept, in pixels (smaller ones are counted in one info finding).
    """

    csv: str | None = None
    image_dir: str | None = None
    class_names: dict[int, str] | None = None
    size_hw: tuple[int, int] | None = None
    instances: Literal["components", "one_per_row"] = "components"
    connectivity: Literal[4, 8] = 8
    min_area: int = Field(1, ge=1)

    @field_validator("size_hw")
    @classmethod
    def _bounded_size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not (v[0] >= 1 and v[1] >= 1 and v[0] * v[1] <= MAX_IMAGE_PIXELS):
            raise ValueError(f"expected [height, width], both at least 1, at most {MAX_IMAGE_PIXELS:,} pixels; got {list(v)}")
        return v


@dataclass
class _Row:
    """One CSV row: where it is, its class and its runs (or the problem that makes it unreadable)."""

    line: int
    image_id: str
    class_id: int = 0
    starts: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    lengths: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    problem: tuple[str, str] | None = None


def parse_runs(text: str) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``start length`` pairs from an ``EncodedPixels`` string (1-based starts).

    Raises:
        ValueError: non-numeric values, an odd count, a start below 1 or a length below 1.
    """
    tokens = text.split()
    bad = next((t for t in tokens if not _RUN_VALUE.fullmatch(t)), None)
    if bad is not None:
        what = "is out of range" if re.fullmatch(r"[-+]?[0-9]+", bad) else "is not an integer"
        raise ValueError(f"EncodedPixels value {short_repr(bad, 24)} {what}; expected pixel numbers and run lengths "
                         f"up to {MAX_IMAGE_PIXELS:,}")
    nums = np.array([int(t) for t in tokens], dtype=np.int64)
    if len(nums) % 2:
        raise ValueError(f"EncodedPixels has an odd number of values ({len(nums)}); expected start/length pairs")
    starts, lengths = nums[0::2], nums[1::2]
    if len(starts) and starts.min() < 1:
        raise ValueError(f"run start {int(starts.min())} is below 1; starts are 1-based pixel numbers")
    if len(lengths) and lengths.min() < 1:
        raise ValueError(f"run length {int(lengths.min())} is below 1")
    return starts, lengths


def decode_runs(starts: NDArray[np.int64], lengths: NDArray[np.int64], size_hw: tuple[int, int]) -> NDArray[np.bool_]:
    """A ``(H, W)`` mask from 1-based column-major runs (overlapping runs are merged).

    Raises:
        ValueError: when a run ends past the last pixel.
    """
    h, w = size_hw
    ends = starts - 1 + lengths
    if len(ends) and ends.max() > h * w:
        raise ValueError(f"run ending at pixel {int(ends.max())} is past the end of the {w}x{h} image "
                         f"({h * w} pixels); check the image size and the column-major order")
    edges = np.zeros(h * w + 1, dtype=np.int32)
    np.add.at(edges, starts - 1, 1)
    np.add.at(edges, ends, -1)
    return (np.cumsum(edges[:-1]) > 0).reshape((h, w), order="F")


def _find_csv(path: Path, opts: RleCsvReadOptions, report: Report) -> Path:
    if path.is_file():
        return path
    if opts.csv is not None:
        f = path / safe_relpath(opts.csv, "csv")
    else:
        found = sorted(p for p in path.glob("*.csv") if p.is_file())
        f = path / "train.csv" if (path / "train.csv").is_file() or len(found) != 1 else found[0]
    if not f.is_file():
        hint = found_below(path, f.relative_to(path).as_posix(), "file")
        report.fatal("file_missing", str(f), f"RLE CSV not found; pass the CSV file or set the option 'csv'{hint}")
    return f


def _sniff_header(path: Path) -> str | None:
    """The header layout of a CSV file, or None when it is not an RLE CSV."""
    head = read_head(path, 4096)
    if head is None:
        return None
    first = head.split(b"\n", 1)[0].decode("utf-8-sig", "replace")
    return _HEADERS.get(tuple(c.strip().lower() for c in first.split(",")))


@dataclass
class _Reader:
    """State of one read."""

    csv_path: Path
    opts: RleCsvReadOptions
    report: Report
    rows: dict[str, list[_Row]] = field(default_factory=dict)
    class_ids: set[int] = field(default_factory=set)
    dropped: int = 0

    # -- the CSV --------------------------------------------------------------------------------
    def read_csv(self) -> None:
        where = str(self.csv_path)
        layout = _sniff_header(self.csv_path)
        if layout is None:
            self.report.fatal("csv_malformed", f"{where}:1", "header is not an RLE CSV header; expected "
                                                             "ImageId,ClassId,EncodedPixels or ImageId_ClassId,EncodedPixels")
        width = 3 if layout == "separate" else 2
        try:
            with open(self.csv_path, encoding="utf-8-sig", newline="") as f:
                reader = csv.reader(f)
                next(reader)
                for cells in reader:
                    if any(c.strip() for c in cells):
                        self._row(cells, layout, width, reader.line_num)
        except (csv.Error, UnicodeDecodeError) as e:
            self.report.fatal("csv_malformed", where, f"unreadable CSV ({e}); expected UTF-8 comma-separated text")

    def _row(self, cells: list[str], layout: str, width: int, line: int) -> None:
        image_id = cells[0].strip()
        class_text = "1"
        if layout == "joined":
            image_id, _, class_text = image_id.rpartition("_")
        elif layout == "separate" and len(cells) > 1:
            class_text = cells[1]
        row = _Row(line, image_id or cells[0].strip())
        self.rows.setdefault(row.image_id, []).append(row)
        if len(cells) != width:
            row.problem = ("csv_malformed", f"expected {width} columns, got {len(cells)}; the line is truncated or "
                                            "has extra commas")
            return
        if not _CLASS_ID.fullmatch(class_text.strip()):
            row.problem = ("class_malformed", f"ClassId {short_repr(class_text.strip(), 24)} is not an integer")
            return
        row.class_id = int(class_text.strip())
        if self.opts.class_names is not None and row.class_id not in self.opts.class_names:
            row.problem = ("class_unknown", f"ClassId {row.class_id} is not in class_names "
                                            f"{sorted(self.opts.class_names)}; add it to class_names")
            return
        self.class_ids.add(row.class_id)
        try:
            row.starts, row.lengths = parse_runs(cells[-1])
        except ValueError as e:
            row.problem = ("rle_malformed", str(e))

    # -- one image ------------------------------------------------------------------------------
    def record(self, image_id: str, image: Path | None, folder: Path, name_ids: dict[int, int]) -> ImageRecord | None:
        rows = self.rows.get(image_id, [])
        good = [r for r in rows if self._ok(r)]
        where = f"{self.csv_path}:{rows[0].line} ImageId {short_text(image_id, 100)}" if rows else str(image)
        if image is None and self.opts.size_hw is None:
            return None  # image_missing was reported (keep policy)
        size = self.opts.size_hw or header_size(image, where, self.report)  # type: ignore[arg-type]
        if size is None:
            return None
        objs = CheckedObjects(size, self.report)
        for class_id in sorted({r.class_id for r in good}):
            mask = self._class_mask([r for r in good if r.class_id == class_id], image_id, size)
            if mask is not None and mask.any():
                self._add(objs, mask, name_ids[class_id], f"{where} ClassId {class_id}")
        name = image.relative_to(folder).as_posix() if image is not None and image.is_relative_to(folder) else image_id
        return objs.checked_record(name, path=image, meta={"image_id": image_id})

    def _ok(self, row: _Row) -> bool:
        if row.problem is not None:
            self.report.error(row.problem[0], f"{self.csv_path}:{row.line}", f"ImageId {short_text(row.image_id, 100)}: {row.problem[1]}")
        return row.problem is None

    def _class_mask(self, rows: list[_Row], image_id: str, size_hw: tuple[int, int]) -> NDArray[np.bool_] | None:
        mask = np.zeros(size_hw, dtype=bool)
        for r in rows:
            try:
                mask |= decode_runs(r.starts, r.lengths, size_hw)
            except ValueError as e:
                self.report.error("rle_out_of_range", f"{self.csv_path}:{r.line}", f"ImageId {short_text(image_id, 100)}: {e}")
        return mask

    def _add(self, objs: CheckedObjects, mask: NDArray[np.bool_], class_id: int, where: str) -> None:
        if self.opts.instances == "one_per_row":
            rows, cols = np.nonzero(mask)
            box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
            objs.add_at(where, box, class_id, shape=RLE.encode(mask))
            return
        comps, dropped = mask_components(mask, self.opts.connectivity, self.opts.min_area)
        self.dropped += dropped
        for c in comps:
            objs.add_at(where, c.box_xyxy, class_id, shape=RLE.encode(c.full_mask(mask.shape)))

    def label_map(self) -> tuple[LabelMap, dict[int, int]]:
        """The label map and ClassId -> canonical id."""
        names = self.opts.class_names or {i: str(i) for i in self.class_ids}
        ids = sorted(names)
        return LabelMap([names[i] for i in ids], list(ids)), {i: k for k, i in enumerate(ids)}


class RleCsvFormat(Format):
    """Kaggle/Severstal CSV of column-major run-length masks."""

    name = "rle-csv"
    description = "CSV of run-length masks, Severstal style (ImageId,ClassId,EncodedPixels; column-major, 1-based)"
    ReadOptions = RleCsvReadOptions
    can_read = True
    can_write = False

    def detect(self, path: Path) -> Detection | None:
        if path.is_file():
            return Detection(0.9, "CSV with an RLE header (ImageId, EncodedPixels)") if _sniff_header(path) else None
        if not path.is_dir():
            return None
        for f in sorted(path.glob("*.csv")):
            if _sniff_header(f):
                return Detection(0.9, f"{f.name} has an RLE header (ImageId, EncodedPixels)")
        return None

    def read(self, path: Path, options: Options, report: Report) -> Dataset:
        assert isinstance(options, RleCsvReadOptions)
        csv_path = _find_csv(path, options, report)
        root = csv_path.parent
        r = _Reader(csv_path, options, report)
        r.read_csv()
        labels, name_ids = r.label_map()
        folder = _image_dir(root, options, report)
        index = ImageIndex(folder)
        records, seen = [], set()
        for image_id, rows in r.rows.items():
            g = report.guard(f"{csv_path}:{rows[0].line}")
            with g:
                image = self._image(index, image_id, f"{csv_path}:{rows[0].line}", report)
                seen.add(image)
                rec = r.record(image_id, image, folder, name_ids)
            if g.ok and rec is not None:
                records.append(rec)
        for image in index.all():
            if image not in seen:
                g = report.guard(str(image))
                with g:
                    rec = r.record(image.name, image, folder, name_ids)
                if g.ok and rec is not None:
                    records.append(rec)
        if r.dropped:
            report.info("component_small", str(csv_path),
                        f"{r.dropped} components smaller than min_area={options.min_area} pixels dropped")
        if path.is_dir():  # beside the CSV: Kaggle's sample_submission.csv, a README
            data = {csv_path, *index.all()}
            report_outside_layout(report, root, [p for p in loose_files(root) if p not in data])
        log.info("read %d images from %s", len(records), csv_path)
        return Dataset(labels=labels, images=records, root=root, meta={"format": self.name})

    @staticmethod
    def _image(index: ImageIndex, image_id: str, where: str, report: Report) -> Path | None:
        name = safe_name(image_id, where, report) if image_id else ""
        if name is None:
            return None  # path_escape was reported (keep policy)
        image = index.find(name) if name else None
        if image is None:
            folder = index.roots[0] if index.roots else "the image folder"
            report.error("image_missing", where, f"ImageId {short_text(image_id, 100) or '(empty)'}: image not found in {folder}")
        return image


def _image_dir(root: Path, opts: RleCsvReadOptions, report: Report) -> Path:
    if opts.image_dir is not None:
        return sub_folder(root, opts.image_dir, "image_dir", report)
    return next((root / n for n in _IMAGE_DIRS if (root / n).is_dir()), root)


register_format(RleCsvFormat())
