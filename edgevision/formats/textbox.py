"""Plain-text boxes: one object per line, columns and delimiter given by options (read only).

One label file per image (``<stem>.txt``), each non-empty line one object. The ``columns`` option
names every column; the box layout follows from the names present:

* ``x1 y1 x2 y2``: corners (DeepPCB, KITTI);
* ``x y w h``: top-left corner plus size;
* ``cx cy w h``: centre plus size.

Other names: ``class`` (a class id or name; without it every object is ``default_class``),
``score`` (predictions), ``truncated``, ``occluded``, ``difficult`` (kept as attributes) and ``_``
(ignored). A name ending in ``?`` is optional and may be left off the end of a line. Coordinates are
absolute pixels in the continuous frame (``(0, 0, W, H)`` is the whole image) unless
``normalized: true`` (then they are divided by the image width / height).

Examples:
    * DeepPCB (``x1,y1,x2,y2,type``, space separated; ``PCBData/group*/<n>_not/<id>.txt`` for
      ``PCBData/group*/<n>/<id>_test.jpg``; ``trainval.txt`` / ``test.txt`` list ``image label``)::

        columns: [x1, y1, x2, y2, class]
        class_names: {1: open, 2: short, 3: mousebite, 4: spur, 5: copper, 6: pin-hole}
        image_suffix: "{stem}_test.jpg"
        list_files: {train: trainval.txt, test: test.txt}

    * KITTI 2D (``type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry [score]``)::

        columns: [class, truncated, occluded, _, x1, y1, x2, y2, _, _, _, _, _, _, _, score?]
        label_dir: training/label_2
        image_dir: training/image_2
        ignore_classes: [DontCare]

Pairing label files with images: a label ``<label_dir>/<sub>/<stem>.txt`` is paired with
``<image_dir>/<sub>/<stem>.<any image extension>`` (or ``image_suffix`` with ``{stem}`` filled in),
else with the one image of that name anywhere under ``image_dir``. With ``list_files`` only the
listed label files are read, each list line holding ``label`` or ``image label`` (paths relative to
the list file; a listed image name is passed through ``image_suffix``) and the list's key is the
split. Images that no label file names are background images by default, but are ignored when
``image_suffix`` or ``list_files`` is set (DeepPCB's ``_temp.jpg`` templates are not samples); the
option ``unannotated_images`` overrides this. Files directly in the dataset folder that are not
read (a README, an illustration; any image there when ``list_files`` is set) are named in one
``file_outside_layout`` info finding. A list file missing from the folder given but found in a
folder below it (``PCBData/`` in a clone of the DeepPCB repository) is named in the error.

The format is not detected (plain text says too little); choose it with ``--from textbox`` or a
recipe.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from edgevision.core.boxes import as_boxes, cxcywh_norm_to_xyxy, xywh_to_xyxy
from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import FileAccessError, UnknownNameError, short_repr
from edgevision.core.io import IMAGE_EXTS, ImageIndex, is_image, safe_relpath
from edgevision.core.report import Report
from edgevision.formats import register_format
from edgevision.formats._readkit import (
    CheckedObjects,
    ClassCollector,
    ImageFinder,
    Unannotated,
    files_under,
    flag_value,
    found_below,
    header_size,
    loose_files,
    normalize_split,
    report_outside_layout,
    scalar_value,
    sub_folder,
    unannotated_images,
)
from edgevision.formats.base import Format, Options

log = logging.getLogger(__name__)

_LAYOUTS = {"xyxy": ("x1", "y1", "x2", "y2"), "xywh": ("x", "y", "w", "h"), "cxcywh": ("cx", "cy", "w", "h")}
_COORD_NAMES = frozenset(n for names in _LAYOUTS.values() for n in names)
_ATTRS = ("truncated", "occluded", "difficult")
_KNOWN = sorted({*_COORD_NAMES, "class", "score", *_ATTRS, "_"})
_TO_XYXY = {"xyxy": as_boxes, "xywh": xywh_to_xyxy, "cxcywh": lambda b: cxcywh_norm_to_xyxy(b, (1, 1))}


@dataclass(frozen=True)
class Columns:
    """What the ``columns`` option means.

    Attributes:
        names: column names without the optional marker ``?``.
        index: position of each named column (``_`` left out).
        layout: ``xyxy``, ``xywh`` or ``cxcywh``.
        required: how many columns a line must have (the optional ones trail).
    """

    names: tuple[str, ...]
    index: dict[str, int]
    layout: str
    required: int

    @classmethod
    def parse(cls, columns: list[str]) -> Columns:
        """Check a ``columns`` list.

        Raises:
            ValueError: unknown or repeated names, optional columns not at the end, or no box layout.
        """
        names = tuple(c.strip().removesuffix("?") for c in columns)
        for n in names:
            if n not in _KNOWN:
                raise ValueError(str(UnknownNameError("column", n, _KNOWN)))
        repeated = sorted(n for n, k in Counter(names).items() if k > 1 and n != "_")
        if repeated:
            raise ValueError(f"columns named more than once: {repeated}")
        optional = [c.strip().endswith("?") for c in columns]
        required = optional.index(True) if True in optional else len(names)
        if not all(optional[required:]):
            raise ValueError("optional columns ('name?') must come after all the others")
        coords = {n for n in names if n in _COORD_NAMES}
        layout = next((k for k, v in _LAYOUTS.items() if set(v) == coords), None)
        if layout is None:
            raise ValueError(f"columns must hold exactly one box layout (x1 y1 x2 y2 | x y w h | cx cy w h); "
                             f"got {sorted(coords)}")
        if any(names.index(n) >= required for n in coords):
            raise ValueError("box coordinate columns cannot be optional")
        return cls(names, {n: i for i, n in enumerate(names) if n != "_"}, layout, required)


class TextboxReadOptions(Options):
    """Reader options for ``textbox`` (see the module docstring for DeepPCB and KITTI settings).

    Attributes:
        columns: the name of each column, in order (names: x1 y1 x2 y2 x y w h cx cy class score
            truncated occluded difficult, ``_`` to ignore; ``name?`` marks a trailing optional column).
        delimiter: column separator; None splits on any whitespace.
        normalized: coordinates are fractions of the image width / height.
        class_names: class id or token -> class name; tokens not listed are ``class_unknown``
            errors. Default: the tokens themselves are the names (sorted).
        default_class: the class of every object when no ``class`` column is named.
        ignore_classes: tokens or names whose lines are skipped (counted in one info finding).
        label_dir: folder of the label files; default ``labels/`` when present, else the root.
        image_dir: folder of the images; default ``images/`` when present, else ``label_dir``.
        label_ext: label file extension.
        image_suffix: image file name made from a label's stem, e.g. ``"{stem}_test.jpg"``.
        list_files: split -> list file (relative to the root) naming the label files to read.
        skip_header_lines: lines to skip at the top of every label file.
        comment: lines starting with this are skipped; None for no comments.
        unannotated_images: images no label file names: ``background`` or ``ignore``; default
            ``background``, or ``ignore`` when ``image_suffix`` or ``list_files`` is set.
    """

    columns: list[str] = Field(default_factory=lambda: ["x1", "y1", "x2", "y2", "class"])
    delimiter: str | None = None
    normalized: bool = False
    class_names: dict[int | str, str] | None = None
    default_class: str = "object"
    ignore_classes: list[str] = Field(default_factory=list)
    label_dir: str | None = None
    image_dir: str | None = None
    label_ext: str = ".txt"
    image_suffix: str | None = None
    list_files: dict[str, str] | None = None
    skip_header_lines: int = Field(0, ge=0)
    comment: str | None = "#"
    unannotated_images: Unannotated | None = None

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, v: list[str]) -> list[str]:
        Columns.parse(v)
        return v

    @field_validator("delimiter", "comment")
    @classmethod
    def _not_empty(cls, v: str | None) -> str | None:
        if v is not None and v == "":
            raise ValueError("expected a non-empty string or null")
        return v

    @field_validator("image_suffix")
    @classmethod
    def _has_stem(cls, v: str | None) -> str | None:
        if v is not None and v.count("{stem}") != 1:
            raise ValueError(f"expected a file name pattern with one '{{stem}}', e.g. '{{stem}}_test.jpg'; got '{v}'")
        return v


@dataclass
class _Item:
    """One label file to read and where its image should be."""

    label: Path
    folder: Path
    stem: str
    split: str | None = None


def _class_table(class_names: dict[Any, str] | None) -> tuple[dict[str, str] | None, list[int] | None]:
    """Token -> name (str keys), and the source ids of the names when every key is an integer."""
    if class_names is None:
        return None, None
    table = {str(k).strip(): v for k, v in class_names.items()}
    firsts: dict[str, str] = {}
    for k, v in table.items():
        firsts.setdefault(v, k)
    ids = list(firsts.values())
    return table, [int(k) for k in ids] if all(k.lstrip("-").isdigit() for k in ids) else None


@dataclass
class _Reader:
    """State of one read."""

    root: Path
    opts: TextboxReadOptions
    report: Report
    cols: Columns = field(init=False)
    label_root: Path = field(init=False)
    image_root: Path = field(init=False)
    index: ImageIndex = field(init=False)
    finder: ImageFinder = field(init=False)
    classes: ClassCollector = field(init=False)
    table: dict[str, str] | None = field(init=False)
    source_ids: list[int] | None = field(init=False)
    ignored: Counter[str] = field(default_factory=Counter)
    read_files: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        o = self.opts
        self.cols = Columns.parse(o.columns)
        default_labels = "labels" if (self.root / "labels").is_dir() else ""
        self.label_root = sub_folder(self.root, o.label_dir if o.label_dir is not None else default_labels, "label_dir", self.report)
        if o.image_dir is not None:
            self.image_root = sub_folder(self.root, o.image_dir, "image_dir", self.report)
        else:
            self.image_root = self.root / "images" if (self.root / "images").is_dir() else self.label_root
        self.index = ImageIndex(self.image_root)
        self.finder = ImageFinder(self.report)
        self.table, self.source_ids = _class_table(o.class_names)
        self.classes = ClassCollector(list(dict.fromkeys(self.table.values())) if self.table is not None else None)

    # -- what to read ---------------------------------------------------------------------------
    def items(self) -> list[_Item]:
        if self.opts.list_files:
            out = [it for split, rel in self.opts.list_files.items() for it in self._listed(split, rel)]
        else:
            ext = self.opts.label_ext.lower()
            out = [self._item(p) for p in files_under(self.label_root, self.report) if p.name.lower().endswith(ext)]
        self.read_files.update(it.label for it in out)
        return out

    def _item(self, label: Path, split: str | None = None) -> _Item:
        """A label file paired by mirroring its place under ``label_dir`` into ``image_dir``."""
        rel = label.parent.relative_to(self.label_root) if label.is_relative_to(self.label_root) else Path()
        stem = label.name[: len(label.name) - len(self.opts.label_ext)]
        return _Item(label, self.image_root / rel, stem, split)

    def _listed(self, split: str, rel: str) -> list[_Item]:
        lst = self.root / safe_relpath(rel, f"list_files.{split}")
        if not lst.is_file():
            hint = (found_below(self.root, lst.relative_to(self.root).as_posix(), "file")
                    or "; pass the folder that holds it or set the option list_files")
            self.report.fatal("file_missing", str(lst), f"list file for split '{split}' not found{hint}")
        self.read_files.add(lst)
        try:
            lines = lst.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as e:
            self.report.fatal("text_malformed", str(lst), f"list file is not UTF-8 text ({e.reason})")
        out = []
        for n, line in enumerate(lines, 1):
            tokens = line.split()
            if not tokens:
                continue
            where = f"{lst}:{n}"
            label = lst.parent / safe_relpath(tokens[-1], where)
            problem = (("line_malformed", f"expected 'label' or 'image label', got {len(tokens)} fields")
                       if len(tokens) > 2 else None if label.is_file() else
                       ("file_missing", f"label file '{tokens[-1]}' not found"))
            if problem is not None:
                code, message = problem
                with self.report.guard(where):
                    self.report.error(code, where, message)
                continue
            item = self._item(label, normalize_split(split))
            if len(tokens) == 2:
                image = Path(safe_relpath(tokens[0], where))
                item.folder, item.stem = lst.parent / image.parent, image.stem
            out.append(item)
        return out

    def find_image(self, item: _Item) -> Path | None:
        """The item's image in its mirrored folder, else the one of that name under ``image_dir``."""
        pattern = self.opts.image_suffix
        names = [pattern.format(stem=item.stem)] if pattern else [item.stem + e for e in IMAGE_EXTS]
        for name in names:
            if (item.folder / name).is_file():
                return item.folder / name
        return self.index.find(names[0] if pattern else item.stem)

    # -- reading one file -----------------------------------------------------------------------
    def read_item(self, item: _Item) -> ImageRecord | None:
        where, report = str(item.label), self.report
        image = self.find_image(item)
        if image is None or self.finder.is_claimed(image):
            expected = self.opts.image_suffix.format(stem=item.stem) if self.opts.image_suffix else f"{item.stem}.<ext>"
            why = "is already paired with another label file" if image is not None else "not found"
            report.error("image_missing", where, f"image '{expected}' for this label file {why}; "
                                                 f"expected it in {item.folder} or under {self.image_root}")
            return None
        name = self.finder.claim(image, image.name, self.index, where)  # before any error: never background
        size = header_size(image, where, report)
        if size is None:
            return None
        try:
            text = item.label.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            report.error("text_malformed", where, f"not UTF-8 text ({e.reason}); save the label file as UTF-8")
            return None
        except OSError as e:  # a label file it may not read: an error of this image, under the policy
            err = FileAccessError.from_os_error(e, item.label)
            report.error(err.code or "file_unreadable", where, err.detail)
            return None
        objs = CheckedObjects(size, report)
        lines = text.splitlines()
        for n, line in enumerate(lines[self.opts.skip_header_lines:], self.opts.skip_header_lines + 1):
            self._line(line, f"{where}:{n}", objs)
        if 0 < len(objs.scores) < len(objs):
            report.error("score_missing", where, f"{len(objs.scores)} of {len(objs)} objects have a score; "
                                                 "expected a score on every line or on none")
            objs.scores.clear()
        ann = item.label.relative_to(self.root).as_posix() if item.label.is_relative_to(self.root) else item.label.name
        return objs.checked_record(name, path=image, split=item.split, meta={"annotation": ann})

    def _fields(self, line: str) -> list[str]:
        d = self.opts.delimiter
        return line.split() if d is None else [f.strip() for f in line.strip().split(d)]

    def _line(self, line: str, where: str, objs: CheckedObjects) -> None:
        stripped = line.strip()
        if not stripped or (self.opts.comment and stripped.startswith(self.opts.comment)):
            return
        fields, cols = self._fields(stripped), self.cols
        if not cols.required <= len(fields) <= len(cols.names):
            want = str(cols.required) if cols.required == len(cols.names) else f"{cols.required} to {len(cols.names)}"
            self.report.error("line_malformed", where, f"expected {want} columns ({' '.join(self.opts.columns)}), "
                                                       f"got {len(fields)}: '{stripped[:80]}'")
            return
        values = {n: fields[i] for n, i in cols.index.items() if i < len(fields)}
        cid = self._class_id(values.get("class"), where)
        if cid is None:
            return
        try:
            coords = [float(values[n]) for n in _LAYOUTS[cols.layout]]
            score = float(values["score"]) if "score" in values else None
        except ValueError:
            self.report.error("value_malformed", where, f"box and score columns must be numbers; got '{stripped[:80]}'")
            return
        if score is not None and not math.isfinite(score):
            self.report.error("value_malformed", where, f"score must be a finite number, got {short_repr(values['score'])}")
            return
        box = _TO_XYXY[cols.layout](np.array([coords]))[0]
        if self.opts.normalized:
            h, w = objs.size_hw or (1, 1)
            with np.errstate(over="ignore", invalid="ignore"):  # 1e308: inf, reported as box_nan
                box = box * np.array([w, h, w, h])
        attrs = {a: flag_value(values[a]) if a == "difficult" else scalar_value(values[a]) for a in _ATTRS if a in values}
        objs.add_at(where, box, cid, attributes=attrs, score=score)

    def _class_id(self, token: str | None, where: str) -> int | None:
        """The class id of a line's class token; None when the line is ignored or the class unknown."""
        if token is None:
            token = self.opts.default_class
        name = token if self.table is None else self.table.get(token)
        if token in self.opts.ignore_classes or name in self.opts.ignore_classes:
            self.ignored[token] += 1
            return None
        if name is None:
            self.report.error("class_unknown", where, f"class {short_repr(token)} is not in class_names "
                                                      f"{short_repr(sorted(self.table or {}), 120)}; add it or list it in "
                                                      "ignore_classes")
            return None
        return self.classes.id_of(name, where, self.report)

    # -- the whole dataset ----------------------------------------------------------------------
    def unannotated(self) -> list[ImageRecord]:
        mode = self.opts.unannotated_images
        if mode is None:
            mode = "ignore" if self.opts.image_suffix or self.opts.list_files else "background"
        if self.opts.list_files and mode == "ignore":
            return []
        return unannotated_images(self.index, self.finder, mode, str(self.image_root), self.report)

    def outside_layout(self) -> list[Path]:
        """The files directly in the dataset folder that were not read: not a list file, a label file
        or a paired image, nor (images found in that folder itself, no list files) a possible
        unannotated image."""
        candidates = self.image_root == self.root and not self.opts.list_files
        return [p for p in loose_files(self.root)
                if p not in self.read_files and not self.finder.is_claimed(p) and not (candidates and is_image(p))]

    def label_map(self, records: list[ImageRecord]) -> LabelMap:
        labels = self.classes.finish(records)
        if self.ignored:
            self.report.info("class_ignored", str(self.label_root),
                             f"skipped {sum(self.ignored.values())} objects of ignored classes {dict(self.ignored)}")
        return LabelMap(labels.names, self.source_ids) if self.source_ids is not None else labels


class TextboxFormat(Format):
    """Plain-text boxes with configurable columns (DeepPCB, KITTI, ...)."""

    name = "textbox"
    description = "plain-text boxes, one object per line, columns set by options (DeepPCB, KITTI); not auto-detected"
    ReadOptions = TextboxReadOptions
    can_read = True
    can_write = False

    def read(self, path: Path, options: Options, report: Report) -> Dataset:
        assert isinstance(options, TextboxReadOptions)
        if not path.is_dir():
            report.fatal("folder_missing", str(path), "textbox reads a dataset folder (label files and images); "
                                                      "pass the folder, not a file")
        r = _Reader(path, options, report)
        records: list[ImageRecord] = []
        for item in r.items():
            g = report.guard(str(item.label))
            with g:
                rec = r.read_item(item)
            if g.ok and rec is not None:
                records.append(rec)
        records += r.unannotated()
        report_outside_layout(report, path, r.outside_layout())
        log.info("read %d images with text boxes from %s", len(records), path)
        return Dataset(labels=r.label_map(records), images=records, root=path, meta={"format": self.name})


register_format(TextboxFormat())
