"""Per-image mask images as a source format: connected components become instances (read only).

Each mask is split into connected components (``cv2.connectedComponentsWithStats``, 8- or
4-connectivity); each component is one object with

* a box from the component's statistics, exact: the tight pixel box
  ``[min_col, min_row, max_col + 1, max_row + 1]`` in the continuous frame (a 1-pixel blob at
  ``(c, r)`` gives ``(c, r, c + 1, r + 1)``);
* a `Polygon` tracing the outline of the component's pixel squares: vertices lie on pixel corners,
  so the polygon's box equals the object's box. Holes are not kept (the outline is filled) and a
  diagonal step between pixels is cut straight (half a pixel of area per step).

Layouts (option ``layout``; ``auto`` = ``label_map`` when ``values`` is given, else ``per_class``):

* ``per_class``: binary masks in one folder per class, ``<mask_dir>/<class>/<image stem>.png``,
  non-zero = defect. The class is the folder ``class_level`` levels below ``mask_dir`` (0 = the
  first, -1 = the mask's parent), renamed by ``class_names``.
* ``label_map``: one mask per image, ``<mask_dir>/<image stem>.png``, pixel value -> class from
  ``values`` (0 = background). A non-zero value not in ``values`` is a ``class_unknown`` error.

Pairing masks with images: a mask's key is its path below ``mask_dir`` without extension and
without ``mask_suffix``. It is paired with the image whose path below its ``image_dir`` has the same
key, else (per-class layout) the same key without the class folder, else the one image anywhere
with the same stem. Images with no mask, or only all-zero masks, are background images. Files under
``mask_dir`` ending in ``mask_suffix + mask_ext`` are masks and never images, so images and masks
may share a folder.

Files outside the layout: when images share the mask folder in the per-class layout (Magnetic-tile),
every sample lies in a class folder, so a file outside the class folders (the illustration
``dataset.jpg`` / ``dataset.png`` beside the ``MT_*`` folders) is no image and no mask. Such files,
the files in the image and mask folders that are neither (``Thumbs.db``, a note) and the files
directly in the dataset folder that are not read (``README.md``, a licence) are left out and named
in one ``file_outside_layout`` info finding. Hidden files and folders (``.git/``) are not looked at.

Option combos for real datasets:

* default (``images/`` + ``masks/<class>/<stem>.png``)::

    {}

* MVTec AD, one category folder (``test/<defect>/000.png``, ``ground_truth/<defect>/000_mask.png``;
  ``test/good`` and ``train/good`` have no masks and become background images, split train/test)::

    image_dir: [train, test]
    mask_dir: ground_truth
    mask_suffix: _mask

* Magnetic-tile (``MT_Blowhole/Imgs/exp1_num_1.jpg`` beside ``exp1_num_1.png``; ``MT_Free`` masks
  are empty; ``README.md`` and the illustration ``dataset.jpg`` / ``.png`` at the top are ignored)::

    image_dir: ""
    mask_dir: ""
    class_names: {MT_Blowhole: blowhole, MT_Break: break, MT_Crack: crack, MT_Fray: fray, MT_Uneven: uneven}
    classes: [blowhole, break, crack, fray, uneven]

* label maps (``masks/<stem>.png`` with values 1 and 2)::

    values: {1: crack, 2: spall}

Soft masks (anti-aliased or JPEG-compressed, more than one non-zero value) in the per-class layout
are thresholded: with ``threshold`` set, a pixel is a defect when its value is above it; unset, a
two-valued mask uses non-zero and a soft mask uses 127, with one ``mask_soft`` warning. Thresholds
are on the 8-bit scale: 16-bit masks are divided by 257, float masks with values in [0, 1] are
multiplied by 255. Components smaller than ``min_area`` pixels are dropped (one
``component_small`` info finding counts them).

Dense masks live only while one image is read.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator, model_validator

from edgevision.core.dataset import SPLITS, Dataset, ImageRecord, LabelMap
from edgevision.core.errors import DatasetError, FileAccessError, short_repr
from edgevision.core.geometry import Polygon
from edgevision.core.io import is_image
from edgevision.core.report import Report
from edgevision.core.safeload import image_size
from edgevision.formats import register_format
from edgevision.formats._readkit import (
    CheckedObjects,
    ClassCollector,
    files_under,
    header_size,
    loose_files,
    report_outside_layout,
    sub_folder,
)
from edgevision.formats.base import Detection, Format, Options

log = logging.getLogger(__name__)


# -- components: shared with the RLE CSV reader ------------------------------------------------
@dataclass(frozen=True)
class Component:
    """One connected component of a binary mask.

    Attributes:
        box_xyxy: tight pixel box ``(x1, y1, x2, y2)``; ``x2``/``y2`` are one past the last pixel.
        crop: ``(y2 - y1, x2 - x1)`` bool mask of the component inside its box.
    """

    box_xyxy: tuple[int, int, int, int]
    crop: NDArray[np.bool_]

    def polygon(self) -> Polygon:
        """The outline of the component's pixel squares (vertices on pixel corners)."""
        import cv2

        h, w = self.crop.shape
        corners = np.zeros((h + 3, w + 3), dtype=np.uint8)  # corner grid with a 1-corner border
        for dy in (0, 1):
            for dx in (0, 1):
                corners[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w] |= self.crop
        contours, _ = cv2.findContours(corners, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        offset = np.array([self.box_xyxy[0] - 1, self.box_xyxy[1] - 1], dtype=np.float64)
        rings = tuple(c.reshape(-1, 2).astype(np.float64) + offset for c in contours if len(c) >= 3)
        return Polygon(rings)

    def full_mask(self, size_hw: tuple[int, int]) -> NDArray[np.uint8]:
        """The component as a ``size_hw`` uint8 mask of 0 and 1."""
        x1, y1, x2, y2 = self.box_xyxy
        out = np.zeros(size_hw, dtype=np.uint8)
        out[y1:y2, x1:x2] = self.crop
        return out


def mask_components(binary: NDArray[np.bool_], connectivity: int = 8, min_area: int = 1) -> tuple[list[Component], int]:
    """Connected components of a ``(H, W)`` binary mask.

    Returns:
        The components with at least ``min_area`` pixels (in label order: top to bottom, left to
        right by first pixel) and how many smaller ones were dropped.
    """
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=connectivity)
    out, dropped = [], 0
    for k in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area < min_area:
            dropped += 1
            continue
        out.append(Component((x, y, x + w, y + h), labels[y:y + h, x:x + w] == k))
    return out, dropped


# -- options ----------------------------------------------------------------------------------
class MasksReadOptions(Options):
    """Reader options for ``masks`` (see the module docstring for MVTec AD and Magnetic-tile).

    Attributes:
        layout: ``per_class`` folders of binary masks, one ``label_map`` per image, or ``auto``.
        image_dir: image folder(s) relative to the root (``""`` = the root). A folder whose first
            part is ``train``, ``val`` or ``test`` sets the split of its images.
        mask_dir: mask folder relative to the root (``""`` = the root).
        mask_suffix: end of a mask's stem after the image's stem (MVTec AD: ``_mask``).
        mask_ext: mask file extension.
        values: label-map pixel value -> class name (``label_map`` layout).
        class_level: per-class layout: which folder below ``mask_dir`` names the class
            (0 = the first, -1 = the mask's parent folder).
        class_names: per-class layout: folder name -> class name.
        classes: class names in id order; a non-empty mask of another class is ``class_unknown``.
            Default: the classes that have objects, sorted.
        min_area: smallest component kept, in pixels.
        threshold: foreground when above this (8-bit scale); None = non-zero, 127 for soft masks.
        connectivity: 8 (diagonal neighbours join) or 4.
    """

    layout: Literal["auto", "per_class", "label_map"] = "auto"
    image_dir: str | list[str] = "images"
    mask_dir: str = "masks"
    mask_suffix: str = ""
    mask_ext: str = ".png"
    values: dict[int, str] | None = None
    class_level: int = 0
    class_names: dict[str, str] | None = None
    classes: list[str] | None = None
    min_area: int = Field(4, ge=1)
    threshold: float | None = Field(None, ge=0, le=255)
    connectivity: Literal[4, 8] = 8

    @field_validator("values")
    @classmethod
    def _no_zero(cls, v: dict[int, str] | None) -> dict[int, str] | None:
        if v is not None and any(k <= 0 for k in v):
            raise ValueError(f"pixel values must be positive (0 is background); got {sorted(v)}")
        return v

    @model_validator(mode="after")
    def _layout_needs_values(self) -> MasksReadOptions:
        if self.layout == "label_map" and not self.values:
            raise ValueError("layout 'label_map' needs 'values' (pixel value -> class name), e.g. {1: crack}")
        return self

    @property
    def label_map_layout(self) -> bool:
        return self.layout == "label_map" or (self.layout == "auto" and self.values is not None)

    @property
    def image_dirs(self) -> list[str]:
        return [self.image_dir] if isinstance(self.image_dir, str) else list(self.image_dir)


# -- pairing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Mask:
    path: Path
    key: str
    class_folder: str | None


class _ImageKeys:
    """Images by key (path below their image folder, without extension) and by bare stem."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}

    def add(self, key: str, path: Path) -> None:
        self.by_key.setdefault(key, []).append(path)
        self.by_stem.setdefault(PurePosixPath(key).name, []).append(path)

    def find(self, keys: list[str]) -> list[Path]:
        for k in keys:
            if k in self.by_key:
                return self.by_key[k]
        return self.by_stem.get(PurePosixPath(keys[0]).name, [])


def _files(folder: Path, report: Report) -> Iterator[Path]:
    """The files below ``folder``; hidden files and folders (``.git/``, ``.DS_Store``) left out."""
    return (p for p in files_under(folder, report)
            if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _split_of(image_dir: str) -> str | None:
    first = PurePosixPath(image_dir).parts[:1]
    return first[0] if first and first[0] in SPLITS else None


# -- pixels -----------------------------------------------------------------------------------
def _scale_255(arr: NDArray[np.generic]) -> NDArray[np.float64]:
    """Mask values on the 8-bit scale (16-bit / 257; floats in [0, 1] * 255)."""
    if arr.dtype == np.uint16:
        return arr / 257.0
    if arr.dtype.kind == "f" and arr.size and float(np.nanmax(arr)) <= 1.0:
        return arr * 255.0
    return arr.astype(np.float64)


def foreground(arr: NDArray[np.generic], threshold: float | None) -> tuple[NDArray[np.bool_], bool]:
    """Binary defect mask of a single-channel mask, and whether it was soft (thresholded at 127).

    Args:
        arr: ``(H, W)`` mask of any numeric dtype.
        threshold: 8-bit-scale threshold, or None for non-zero (127 when the mask is soft).
    """
    if arr.dtype == np.bool_:
        return arr, False
    if threshold is not None:
        return _scale_255(arr) > threshold, False
    nz = arr[arr > 0]
    if nz.size == 0 or nz.min() == nz.max():
        return arr > 0, False
    return _scale_255(arr) > 127, True


@dataclass
class _Reader:
    """State of one read."""

    root: Path
    opts: MasksReadOptions
    report: Report
    classes: ClassCollector = field(init=False)
    value_class: dict[int, str] = field(default_factory=dict)
    tally: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)
    shared: Path | None = None
    listed: set[Path] = field(default_factory=set)
    rejected: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        o = self.opts
        if o.label_map_layout:
            assert o.values is not None
            self.value_class = dict(sorted(o.values.items()))
            given = o.classes if o.classes is not None else list(dict.fromkeys(self.value_class.values()))
        else:
            given = o.classes
        self.classes = ClassCollector(given)

    def note(self, code: str, where: str, n: int = 1) -> None:
        """Count a handled quirk; `finish_notes` reports each kind once."""
        self.tally[code] += n
        self.first.setdefault(code, where)

    # -- files ----------------------------------------------------------------------------------
    def in_class_folder(self, folders: tuple[str, ...]) -> bool:
        """Whether ``folders`` (a file's folders below the mask folder) hold the class folder ``class_level``."""
        return -len(folders) <= self.opts.class_level < len(folders)

    def masks(self, mask_root: Path) -> list[_Mask]:
        end = (self.opts.mask_suffix + self.opts.mask_ext).lower()
        if not self.opts.label_map_layout:
            dirs = [sub_folder(self.root, d, "image_dir", self.report) for d in self.opts.image_dirs]
            self.shared = mask_root if mask_root in dirs else None
        out = []
        for p in _files(mask_root, self.report):
            self.listed.add(p)
            if not p.name.lower().endswith(end) or len(p.name) == len(end):
                continue
            rel = p.relative_to(mask_root).as_posix()
            key = rel[: len(rel) - len(end)]
            folders = PurePosixPath(rel).parts[:-1]
            if self.opts.label_map_layout or self.in_class_folder(folders):
                out.append(_Mask(p, key, None if self.opts.label_map_layout else folders[self.opts.class_level]))
                continue
            if self.shared is not None:  # images beside masks: outside the class folders is no sample
                continue
            self.rejected.add(p)
            with self.report.guard(str(p)):
                self.report.error("mask_class_missing", str(p),
                                  f"per-class layout expects <mask_dir>/<class>/<name>{end}, got {short_repr(rel, 100)}; "
                                  "move the mask into its class folder or set 'values' for label maps")
        return out

    def images(self, masks: list[_Mask]) -> tuple[_ImageKeys, dict[Path, tuple[str, str | None]]]:
        """Every image below the image folders (masks excluded), keyed, with its record name and split.

        A record name is the path below the image folder, or below the root when there are several
        image folders (MVTec AD's ``train/good/000.png`` and ``test/good/000.png`` stay distinct).
        """
        is_mask = {m.path for m in masks} | self.rejected
        keys, found = _ImageKeys(), {}
        dirs = self.opts.image_dirs
        for rel in dirs:
            folder = sub_folder(self.root, rel, "image_dir", self.report)
            for p in _files(folder, self.report):
                self.listed.add(p)
                if not is_image(p) or p in is_mask or p in found:
                    continue
                if folder != self.shared or self.in_class_folder(p.relative_to(folder).parts[:-1]):
                    keys.add(p.relative_to(folder).with_suffix("").as_posix(), p)
                    found[p] = (p.relative_to(self.root if len(dirs) > 1 else folder).as_posix(), _split_of(rel))
        return keys, found

    def outside_layout(self, masks: list[_Mask], images: dict[Path, tuple[str, str | None]]) -> list[Path]:
        """Files listed in the image and mask folders, or directly in the dataset folder, that were
        read neither as image nor as mask (nor reported as a misplaced mask)."""
        used = set(images) | {m.path for m in masks} | self.rejected
        return [p for p in (*self.listed, *loose_files(self.root)) if p not in used]

    def pair(self, masks: list[_Mask], keys: _ImageKeys) -> dict[Path, list[_Mask]]:
        out: dict[Path, list[_Mask]] = {}
        for m in masks:
            cands = [m.key]
            if m.class_folder is not None:
                parts = list(PurePosixPath(m.key).parts)
                parts.remove(m.class_folder)
                cands.append("/".join(parts))
            hits = keys.find(cands)
            if len(hits) == 1:
                out.setdefault(hits[0], []).append(m)
                continue
            what = "no image" if not hits else f"{len(hits)} images ({hits[0].name}, {hits[1].name})"
            g = self.report.guard(str(m.path))
            with g:
                self.report.error("image_missing" if not hits else "image_ambiguous", str(m.path),
                                  f"mask key '{m.key}' matches {what}; expected one image with that path "
                                  f"or stem below {self.opts.image_dirs}")
        return out

    # -- one image ------------------------------------------------------------------------------
    def record(self, image: Path, name: str, masks: list[_Mask], split: str | None) -> ImageRecord | None:
        where = str(image)
        size = header_size(image, where, self.report)
        if size is None:
            return None
        objs = CheckedObjects(size, self.report)
        for m in masks:
            arr = self.load(m, size)
            if arr is None:
                continue
            for class_id, binary in self.class_masks(m, arr):
                comps, dropped = mask_components(binary, self.opts.connectivity, self.opts.min_area)
                if dropped:
                    self.note("component_small", str(m.path), dropped)
                for c in comps:
                    objs.add_at(str(m.path), c.box_xyxy, class_id, shape=c.polygon())
        meta = {"masks": [m.path.relative_to(self.root).as_posix() for m in masks]} if masks else {}
        return objs.checked_record(name, path=image, split=split, meta=meta)

    def load(self, m: _Mask, size_hw: tuple[int, int]) -> NDArray[np.generic] | None:
        """The mask as one ``(H, W)`` channel; None after reporting an unreadable or wrong-sized mask."""
        import cv2

        where = str(m.path)
        try:  # the header first: a mask is decoded only when its size is its image's (bounded memory)
            h, w = image_size(m.path, where, "mask")
            data = np.fromfile(m.path, dtype=np.uint8)
        except DatasetError as e:
            self.report.error("mask_corrupt" if e.code == "image_corrupt" else e.code or "mask_corrupt", where, e.detail)
            return None
        except OSError as e:
            err = FileAccessError.from_os_error(e, m.path)
            self.report.error(err.code or "file_unreadable", where, err.detail)
            return None
        if (h, w) != size_hw:
            self.report.error("mask_size_mismatch", where, f"mask is {w}x{h} (WxH) but its image is "
                                                           f"{size_hw[1]}x{size_hw[0]}; expected equal sizes")
            return None
        from edgevision.runtime.images import DEFAULT_MAX_PIXELS, ImageReadError, ImageTooLargeError, check_image_header

        try:  # the pixel count from the header, before any decoder allocates it
            check_image_header(data, DEFAULT_MAX_PIXELS, "the header")
            arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except ImageTooLargeError as e:
            self.report.error("image_too_large", where, f"mask {e}")
            return None
        except (cv2.error, ImageReadError):
            arr = None
        if arr is None:
            self.report.error("mask_corrupt", where, "mask is not a readable image; expected a PNG/BMP/TIFF mask")
            return None
        if arr.ndim == 3:
            chans = arr[..., :3]
            same = bool(np.all(chans == chans[..., :1]))
            if not same and self.opts.label_map_layout:
                self.report.error("mask_color", where, "label map has differing colour channels; expected a "
                                                       "single-channel (grey) label map of class values")
                return None
            arr = chans[..., 0] if same else chans.max(axis=2)
        if arr.shape[:2] != size_hw:
            self.report.error("mask_size_mismatch", where, f"mask is {arr.shape[1]}x{arr.shape[0]} (WxH) but its "
                                                           f"image is {size_hw[1]}x{size_hw[0]}; expected equal sizes")
            return None
        return arr

    def class_masks(self, m: _Mask, arr: NDArray[np.generic]) -> list[tuple[int, NDArray[np.bool_]]]:
        """``(class id, binary mask)`` per class present in one mask."""
        where = str(m.path)
        if self.opts.label_map_layout:
            return [(cid, arr == v) for v in np.unique(arr).tolist() if v != 0
                    if (cid := self._value_class(v, where)) is not None]
        binary, soft = foreground(arr, self.opts.threshold)
        if soft:
            self.note("mask_soft", where)
        if not binary.any():
            if arr.any() and self.opts.threshold is not None:
                self.note("mask_below_threshold", where)
            return []
        assert m.class_folder is not None
        names = self.opts.class_names or {}
        cid = self.classes.id_of(names.get(m.class_folder, m.class_folder), where, self.report)
        return [] if cid is None else [(cid, binary)]

    def _value_class(self, value: float, where: str) -> int | None:
        name = self.value_class.get(int(value)) if float(value).is_integer() else None
        if name is None:
            self.report.error("class_unknown", where, f"pixel value {value:g} is not in 'values' "
                                                      f"{short_repr(self.value_class, 120)}; add it or fix the label map")
            return None
        return self.classes.id_of(name, where, self.report)

    def finish_notes(self) -> None:
        o = self.opts
        texts = {
            "component_small": (self.report.info, f"components smaller than min_area={o.min_area} pixels dropped"),
            "mask_soft": (self.report.warning, "masks have more than one non-zero value (soft masks) and were "
                                               "thresholded at 127; set 'threshold' to choose"),
            "mask_below_threshold": (self.report.warning, f"masks have non-zero pixels but none above "
                                                          f"threshold={o.threshold} (8-bit scale); check 'threshold'"),
        }
        for code, n in self.tally.items():
            emit, text = texts[code]
            emit(code, self.first[code], f"{n} {text} (first here)")

    def label_map(self, records: list[ImageRecord]) -> LabelMap:
        labels = self.classes.finish(records)
        if self.value_class and self.opts.classes is None:
            firsts = {name: v for v, name in reversed(self.value_class.items())}
            return LabelMap(labels.names, [firsts[n] for n in labels.names])
        return labels


class MasksFormat(Format):
    """Per-image mask images (per-class binary masks or label maps) -> component instances."""

    name = "masks"
    description = "mask PNGs per image (masks/<class>/<stem>.png or label maps); components become objects"
    ReadOptions = MasksReadOptions
    can_read = True
    can_write = False

    def detect(self, path: Path) -> Detection | None:
        masks, images = path / "masks", path / "images"
        if not (path.is_dir() and masks.is_dir() and images.is_dir()):
            return None
        sample = next((p for p in masks.rglob("*.png") if p.parent != masks), None)
        if sample is None:
            return None
        return Detection(0.7, f"images/ beside masks/<class>/ PNG masks (e.g. {sample.relative_to(path).as_posix()})")

    def read(self, path: Path, options: Options, report: Report) -> Dataset:
        assert isinstance(options, MasksReadOptions)
        if not path.is_dir():
            report.fatal("folder_missing", str(path), "masks reads a dataset folder holding image and mask folders")
        r = _Reader(path, options, report)
        masks = r.masks(sub_folder(path, options.mask_dir, "mask_dir", report))
        keys, images = r.images(masks)
        paired = r.pair(masks, keys)
        records: list[ImageRecord] = []
        for image, (name, split) in sorted(images.items()):
            g = report.guard(str(image))
            with g:
                rec = r.record(image, name, paired.get(image, []), split)
            if g.ok and rec is not None:
                records.append(rec)
        report_outside_layout(report, path, r.outside_layout(masks, images))
        r.finish_notes()
        log.info("read %d images (%d with masks) from %s", len(records), len(paired), path)
        return Dataset(labels=r.label_map(records), images=records, root=path, meta={"format": self.name})


register_format(MasksFormat())
