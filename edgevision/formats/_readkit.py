"""Helpers shared by the annotation readers.

They cover what every reader does the same way: find the image an annotation names (forgiving
the quirks of real files and saying which), settle the image size (declared vs. file header), check
and add boxes under the error policy, collect class names, parse attribute values, decide what
to do with images that have no annotation file, count the files outside the dataset's layout
(illustrations, READMEs, licences), list files without skipping unreadable folders, and
check the types of values whose type the format's specification fixes (strict: a ``true`` is no
width, ``"3"`` is no coordinate, ``[[1, 2], [3, 4]]`` is no bbox).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgevision.core.boxes import box_problems
from edgevision.core.dataset import SPLIT_ALIASES, ImageRecord, LabelMap, ObjectList
from edgevision.core.errors import DatasetError, FileAccessError, short_repr
from edgevision.core.io import ImageIndex, is_image, safe_relpath
from edgevision.core.report import Report
from edgevision.core.safeload import MAX_IMAGE_PIXELS, image_size

T = TypeVar("T")

Unannotated = Literal["ignore", "background"]
"""What a reader does with an image that no annotation file names."""



def normalize_split(name: str | None) -> str | None:
    """Canonical split name: ``Train``/``training`` -> ``train``, ``Validation`` -> ``val``, ...

    CVAT's ``default`` subset and an empty name mean "no split" (None); other names are kept as given.
    """
    if name is None or not name.strip() or name.strip().lower() == "default":
        return None
    return SPLIT_ALIASES.get(name.strip().lower(), name.strip())


def split_from_folder(folder: str) -> str | None:
    """The split a folder name stands for (``train``, ``val``/``valid``/``validation``, ``test``), else None."""
    return SPLIT_ALIASES.get(folder.strip().lower())


def scalar_value(text: str | None) -> bool | int | float | str:
    """An attribute value from XML text: ``true``/``false`` -> bool, numbers -> int/float, else str."""
    raw = (text or "").strip()
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(raw)  # type: ignore[operator,no-any-return]
        except ValueError:
            pass
    return raw


def flag_value(text: str | None) -> bool | str:
    """A VOC/CVAT 0/1 flag (``difficult``, ``truncated``, ``occluded``) as bool; other text kept as str."""
    v = scalar_value(text)
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    return str(v)


def describe_mismatch(requested: str, found_rel: str) -> str | None:
    """How an annotation's file name differs from the file found, or None when it matches exactly.

    Args:
        requested: the normalized name from the annotation (POSIX, relative).
        found_rel: the found file's path relative to its image folder.
    """
    if requested == found_rel:
        return None
    base, found = PurePosixPath(requested).name, PurePosixPath(found_rel).name
    if base == found:
        return "a path instead of the file name" if "/" in requested else "the file is in another folder"
    if base.lower() == found.lower():
        return "a different letter case"
    if not is_image(Path(base)):
        return "a missing file extension"
    return "a different file extension"


@dataclass
class ImageFinder:
    """Finds the images annotations name inside some image folders, and hands out unique record names.

    One finder per dataset: a record name is the image's path relative to the folder it was found
    in; two folders holding the same relative name get the folder name as prefix.
    """

    report: Report
    _claimed: dict[Path, str] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set)

    def find(self, index: ImageIndex, requested: str | None, fallback: str | None, where: str) -> Path | None:
        """The image for an annotation: by its file name, else by ``fallback`` (the annotation's stem).

        Records an ``image_name_quirk`` info finding when the name did not match the file exactly,
        and ``image_fallback`` when the fallback name found it.
        """
        first = index.find(requested) if requested else None
        if first is not None and first not in self._claimed:
            quirk = describe_mismatch(requested or "", self._relative(index, first))
            if quirk:
                self.report.info("image_name_quirk", where,
                                 f"file name '{requested}' has {quirk}; matched image '{first.name}'")
            return first
        p = index.find(fallback) if fallback else None
        if p is not None and p not in self._claimed:
            what = f"image '{requested}'" if requested else "the image file name"
            why = f"is already annotated by {self._claimed[first]}" if first is not None else "was not found"
            self.report.info("image_fallback", where,
                             f"{what} {why}; used '{p.name}', named after the annotation file")
            return p
        return first

    def claim(self, path: Path | None, name: str, index: ImageIndex | None, where: str) -> str:
        """Reserve ``path`` and return a unique record name (``name`` or a folder-prefixed variant).

        Raises:
            DatasetError: (through the report) when another annotation already claimed the image.
        """
        if path is not None:
            if path in self._claimed:
                self.report.error("image_duplicate", where,
                                  f"image '{path.name}' is already annotated by {self._claimed[path]}; "
                                  "expected one annotation file per image")
            self._claimed[path] = where
            name = self._relative(index, path) if index is not None else name
        unique = name
        if unique in self._names and path is not None:
            unique = f"{path.parent.name}/{name}"
        k = 2
        while unique in self._names:
            unique, k = f"{PurePosixPath(name).with_suffix('')}_{k}{PurePosixPath(name).suffix}", k + 1
        self._names.add(unique)
        return unique

    def is_claimed(self, path: Path) -> bool:
        return path in self._claimed

    @staticmethod
    def _relative(index: ImageIndex | None, path: Path) -> str:
        s = str(path)
        for root in index.roots if index is not None else []:
            prefix = str(root) + os.sep
            if s.startswith(prefix):
                return s[len(prefix):].replace(os.sep, "/")
        return path.name


def safe_name(raw: str, where: str, report: Report, base: str = "") -> str | None:
    """`safe_relpath` under the report's policy: a name escaping the root is a ``path_escape`` error.

    Args:
        raw: the file name as the annotation writes it.
        base: folder (relative to the dataset root) that a relative ``raw`` is relative to.

    Returns:
        The normalized name, or None when it was rejected (and the policy keeps going).
    """
    norm = raw.strip().replace("\\", "/")
    if base and not (norm.startswith("/") or norm[1:2] == ":"):
        norm = f"{base}/{norm}"
    try:
        return safe_relpath(norm, where)
    except DatasetError as e:
        report.error(e.code or "path_escape", where, f"{e.detail}; use a name relative to the dataset")
        return None


def header_size(image: Path, where: str, report: Report) -> tuple[int, int] | None:
    """An image's ``(height, width)`` from its header; None after reporting a missing, corrupt,
    unreadable or too large image (`edgevision.core.safeload.image_size`).

    For formats that never declare sizes (so reading the header is no quirk worth a finding).
    """
    try:
        return image_size(image, where)
    except DatasetError as e:
        report.error(e.code or "image_corrupt", where, e.detail)
        return None


# -- strict values -----------------------------------------------------------------------------
_NUMBER_TYPES = frozenset({int, float})
_SIZE_TEXT = re.compile(r"\s*\+?(\d{1,12})(?:\.0*)?\s*")


def is_number(value: Any) -> bool:
    """A JSON number: ``int`` or ``float``, never ``bool`` (``true`` is no coordinate) nor a string."""
    return type(value) in _NUMBER_TYPES


def number_array(raw: Any, what: str, count: int | None = None) -> NDArray[np.float64]:
    """A flat JSON list of numbers as float64, checked strictly.

    Args:
        what: what the list is, for the message (``"bbox [x, y, width, height]"``).
        count: the exact length expected, or None.

    Raises:
        ValueError: not a list, wrong length, or an item that is not a number (a bool, a string, a
            nested list, null) or too large for a float; the message says expected and got.
    """
    if (not isinstance(raw, list) or (count is not None and len(raw) != count)
            or not set(map(type, raw)) <= _NUMBER_TYPES):
        raise ValueError(f"expected {what} as a list of {count or 'some'} numbers, got {short_repr(raw)}")
    try:
        return np.array(raw, dtype=np.float64)
    except OverflowError:
        raise ValueError(f"expected {what} within the range of a float, got {short_repr(raw)}") from None


def point_array(raw: Any, least: int, what: str = "points") -> NDArray[np.float64]:
    """``(K, 2)`` float64 points from a JSON ``[[x, y], ...]``, checked strictly.

    Raises:
        ValueError: not a list of ``[x, y]`` number pairs (bools, strings, deeper nesting), too few
            points, or a number too large for a float.
    """
    ok = (isinstance(raw, list) and set(map(type, raw)) <= {list} and set(map(len, raw)) <= {2}
          and set(map(type, chain.from_iterable(raw))) <= _NUMBER_TYPES)
    if not ok:
        raise ValueError(f"{what} must be a list of [x, y] pairs; expected number pairs, got {short_repr(raw)}")
    if len(raw) < least:
        raise ValueError(f"expected at least {least} {what}, got {len(raw)}")
    try:
        return np.array(raw, dtype=np.float64).reshape(-1, 2)
    except OverflowError:
        raise ValueError(f"expected {what} within the range of a float, got {short_repr(raw)}") from None


def _side(value: Any, text: bool) -> int | None:
    """One declared image side: an int, 0 for "not given"; ValueError for anything else."""
    if value is None:
        return 0
    if text and isinstance(value, str):
        if not value.strip():
            return 0
        m = _SIZE_TEXT.fullmatch(value)
        if m is None:
            raise ValueError
        return int(m.group(1))
    if type(value) is int and 0 <= value <= MAX_IMAGE_PIXELS:
        return value
    if type(value) is float and math.isfinite(value) and 0 <= value <= MAX_IMAGE_PIXELS and value == int(value):
        return int(value)
    raise ValueError


def declared_size(height: Any, width: Any, where: str, report: Report, *, text: bool = False,
                  names: tuple[str, str] = ("height", "width")) -> tuple[int, int] | None:
    """The image size an annotation declares, checked strictly; None when it declares none.

    A missing (null, absent, empty) or zero side means "not declared": the caller reads the image
    header (`settle_size`). Anything else that is not a whole number of pixels (a bool, a string in
    JSON, NaN, ``1e308``, ``480.5``, a list) or that makes an image larger than
    `edgevision.core.safeload.MAX_IMAGE_PIXELS` is a ``size_invalid`` error under the report's
    policy, and then (``keep``) not declared either.

    Args:
        height, width: the raw values (JSON values, or XML text with ``text=True``).
        names: the format's field names, for the message (``("imageHeight", "imageWidth")``).
    """
    sides = []
    for value, name in zip((height, width), names):
        try:
            sides.append(_side(value, text))
        except ValueError:
            report.error("size_invalid", where, f"{name}: expected a positive whole number of pixels (at most "
                                                f"{MAX_IMAGE_PIXELS:,}), got {short_repr(value)}; fix it or remove it "
                                                "to read the image's size")
            return None
    h, w = sides
    if not (h and w):
        return None
    if h * w > MAX_IMAGE_PIXELS:
        report.error("size_invalid", where, f"declared size {w}x{h} (WxH) is {h * w:,} pixels; expected at most "
                                            f"{MAX_IMAGE_PIXELS:,}; fix it or remove it to read the image's size")
        return None
    return h, w


# -- files -------------------------------------------------------------------------------------
def files_under(folder: Path, report: Report) -> list[Path]:
    """Every file below ``folder``, sorted: ``rglob("*")`` without its silent skipping.

    ``rglob`` leaves out a sub-folder it may not list, so its annotation files would vanish without
    a word; here each one is a ``file_unreadable`` error under the report's policy (``fail`` stops,
    ``skip``/``keep`` record it and go on). Symbolic links to folders are followed (once each).

    Raises:
        FileAccessError: when ``folder`` itself cannot be listed.
    """
    out: list[Path] = []
    seen: set[str] = set()

    def unreadable(e: OSError) -> None:
        if os.path.abspath(e.filename or folder) == os.path.abspath(folder):
            raise FileAccessError.from_os_error(e, folder)
        err = FileAccessError.from_os_error(e)
        with report.guard(err.where or str(folder)):
            report.error(err.code or "file_unreadable", err.where or str(folder), err.detail)

    for top, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a link loop
            dirs[:] = []
            continue
        seen.add(real)
        out += [Path(top, n) for n in names]
    return sorted(out)


def loose_files(folder: Path) -> list[Path]:
    """The files directly in ``folder`` (hidden ones left out), sorted; [] when it is no folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


_SHOWN_NAMES = 8
"""How many names a finding or a hint shows before "and N more"."""


def report_outside_layout(report: Report, root: Path, files: Iterable[Path]) -> list[Path]:
    """Count the files found in a dataset folder that are not part of the dataset's layout.

    Published trees carry files that are no data: an illustration beside the class folders
    (Magnetic-tile's ``dataset.jpg``), a README, a licence, a config JSON (RailSem19's
    ``rs19-config.json``), a sample submission. A reader leaves them out and calls this once: one
    ``file_outside_layout`` info finding names them (never an error, under every policy).

    Args:
        root: the dataset folder; names are shown relative to it.
        files: the files left out (duplicates are counted once).

    Returns:
        The files, sorted.
    """
    out = sorted(set(files))
    if out:
        names = [p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name for p in out]
        shown = ", ".join(names[:_SHOWN_NAMES])
        more = f" and {len(names) - _SHOWN_NAMES} more" if len(names) > _SHOWN_NAMES else ""
        report.info("file_outside_layout", str(root),
                    f"ignored {len(out)} file{'s' if len(out) != 1 else ''} outside the dataset layout: {shown}{more}")
    return out


def parse_xml_file(path: Path) -> Any:
    """`edgevision.core.io.parse_xml`, with an unreadable file a `FileAccessError` (not a traceback)."""
    from edgevision.core.io import parse_xml

    try:
        return parse_xml(path)
    except OSError as e:
        raise FileAccessError.from_os_error(e, path) from e
    except RecursionError:
        raise DatasetError("XML elements nested too deeply", where=str(path), code="xml_malformed") from None


def sub_folder(root: Path, rel: str, option: str, report: Report) -> Path:
    """The folder a reader option names, relative to ``root`` (``""`` or ``"."`` is ``root``).

    Raises:
        DatasetError: (fatal) when the folder does not exist, or the name escapes ``root``.
    """
    p = root / safe_relpath(rel, option) if rel.strip(" ./") else root
    if not p.is_dir():
        report.fatal("folder_missing", str(p), f"reader option '{option}': folder '{rel}' not found under "
                                               f"{root}{found_below(root, rel)}")
    return p


def found_below(root: Path, rel: str, kind: Literal["folder", "file"] = "folder") -> str:
    """A hint for a ``rel`` missing from ``root`` that the folders directly below ``root`` hold.

    A user often passes the folder above the dataset: the clone of a repository (DeepPCB's
    ``PCBData/`` inside it) or the archive's top folder (MVTec AD's category folders). The hint
    names them, e.g. ``"; found in the sub-folder PCBData: pass that folder"``; ``""`` when none does.

    Args:
        rel: a relative path already checked with `safe_relpath`.
        kind: whether ``rel`` is a folder or a file.
    """
    if not rel.strip(" ./"):
        return ""
    try:
        subs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return ""
    hits = [d.name for d in subs if ((d / rel).is_dir() if kind == "folder" else (d / rel).is_file())]
    if not hits:
        return ""
    if len(hits) == 1:
        return f"; found in the sub-folder {hits[0]}: pass that folder"
    shown = ", ".join(hits[:_SHOWN_NAMES]) + (f" and {len(hits) - _SHOWN_NAMES} more" if len(hits) > _SHOWN_NAMES else "")
    return f"; found in the sub-folders {shown}: pass one of them"


def settle_size(declared_hw: tuple[int, int] | None, image: Path | None, where: str, report: Report,
                *, check: bool = True) -> tuple[int, int] | None:
    """The image size to use: the file header's when the image exists, else the declared one.

    A missing or zero declared size is read from the header (``size_from_image`` info); a declared
    size that disagrees with the header is a ``size_mismatch`` warning (the header wins, since the
    boxes are in the pixels of the real image). ``check=False`` trusts a declared size.

    Returns:
        ``(height, width)``, or None when neither is known (an ``image_missing`` error was reported).
    """
    valid = declared_hw is not None and declared_hw[0] > 0 and declared_hw[1] > 0
    if image is None:
        if valid:
            return declared_hw
        report.error("image_missing", where, "image file not found and no image size is given; "
                                              "add the image or its width/height")
        return None
    if valid and not check:
        return declared_hw
    real = header_size(image, where, report)
    if real is None:
        return declared_hw if valid else None
    if not valid:
        report.info("size_from_image", where, f"image size missing or zero; read {real[1]}x{real[0]} from {image.name}")
    elif declared_hw != real:
        report.warning("size_mismatch", where,
                       f"declared size {declared_hw[1]}x{declared_hw[0]} (WxH) but {image.name} is "
                       f"{real[1]}x{real[0]}; using the image's size")
    return real


class CheckedObjects(ObjectList):
    """An `ObjectList` that remembers where each object came from and checks all boxes at once."""

    def __init__(self, size_hw: tuple[int, int] | None, report: Report) -> None:
        super().__init__()
        self.size_hw, self.report = size_hw, report
        self.wheres: list[str] = []

    def add_at(self, where: str, box_xyxy: ArrayLike, class_id: int, **kwargs: Any) -> None:
        """Add one object found at ``where`` (file and object, for messages)."""
        self.wheres.append(where)
        self.add(box_xyxy, class_id, **kwargs)

    def checked_record(self, name: str, **kwargs: Any) -> ImageRecord:
        """Check every box with `box_problems` (errors under the policy), then make the record."""
        for i, code, msg in box_problems(self.boxes, self.size_hw):
            self.report.error(code, self.wheres[i], f"{msg}; fix or remove the object")
        assert self.size_hw is not None
        return self.record(name, self.size_hw, **kwargs)


class ClassCollector:
    """Class ids for names as a reader meets them.

    With ``given`` the order is that list and other names are ``class_unknown`` errors; without it
    classes are discovered and `finish` orders them alphabetically (remapping the records' ids).
    """

    def __init__(self, given: list[str] | None) -> None:
        self.given = given is not None
        self.names: list[str] = list(given or [])
        self._ids = {n: i for i, n in enumerate(self.names)}

    def id_of(self, name: str, where: str, report: Report) -> int | None:
        """The id of ``name``; None (after reporting) for an unknown name when the list is given."""
        if name in self._ids:
            return self._ids[name]
        if self.given:
            from edgevision.core.errors import UnknownNameError

            report.error("class_unknown", where, f"{UnknownNameError('class', name, self.names)} "
                                                 "Add it to the 'classes' option or fix the label")
            return None
        self._ids[name] = len(self.names)
        self.names.append(name)
        return self._ids[name]

    def finish(self, records: list[ImageRecord]) -> LabelMap:
        """The label map; discovered classes are sorted and every record's ids remapped in place."""
        if self.given:
            return LabelMap(list(self.names))
        order = sorted(range(len(self.names)), key=lambda i: self.names[i])
        remap = np.empty(len(order), dtype=np.int64)
        remap[order] = np.arange(len(order))
        for r in records:
            if len(r):
                r.class_ids = remap[r.class_ids]
        return LabelMap([self.names[i] for i in order])


def unannotated_images(index: ImageIndex, finder: ImageFinder, mode: Unannotated, where: str,
                       report: Report, split: str | None = None, *,
                       exclude: Collection[Path] = ()) -> list[ImageRecord]:
    """Records for the images of ``index`` that no annotation claimed.

    ``mode="background"`` keeps them as background records (size from the header); ``"ignore"``
    leaves them out. Either way one ``image_unannotated`` info finding counts them. Images in
    ``exclude`` (files outside the dataset's layout, see `report_outside_layout`) are neither.
    """
    orphans = [p for p in index.all() if not finder.is_claimed(p) and p not in exclude]
    if not orphans:
        return []
    fate = ("kept as background images" if mode == "background"
            else "ignored (set the option unannotated_images: background to keep them as background images)")
    report.info("image_unannotated", where, f"{len(orphans)} image(s) have no annotation file, e.g. "
                                            f"'{orphans[0].name}'; {fate}")
    if mode != "background":
        return []

    def background(p: Path) -> ImageRecord | None:
        size = header_size(p, str(p), report)
        return None if size is None else ImageRecord(finder.claim(p, p.name, index, str(p)), size, path=p, split=split)

    return read_each(orphans, str, background, report)


def read_each(items: Iterable[T], where: Callable[[T], str], read_one: Callable[[T], ImageRecord | None],
              report: Report) -> list[ImageRecord]:
    """``read_one`` on each item inside `Report.guard`: records of the items that survived the policy."""
    records = []
    for item in items:
        g = report.guard(where(item))
        with g:
            rec = read_one(item)
        if g.ok and rec is not None:
            records.append(rec)
    return records


def load_or_report(loader: Any, path: Path, report: Report) -> Any:
    """``loader(path)`` (`edgevision.core.safeload.load_json`, `parse_xml_file`); a malformed or
    unreadable file is reported, giving None."""
    try:
        return loader(path)
    except DatasetError as e:
        report.error(e.code or "file_malformed", e.where or str(path), e.detail)
        return None


def read_head(path: Path, size: int = 4096) -> bytes | None:
    """The first ``size`` bytes of ``path`` for format sniffing; None when it is no file.

    Raises:
        FileAccessError: when the file exists but cannot be read: a detector must not take a file it
            may not read for "not mine" (its annotations would silently vanish from the dataset).
    """
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as e:
        raise FileAccessError.from_os_error(e, path) from e


def head_matches(path: Path, pattern: bytes, size: int = 4096) -> bool:
    """True when the first ``size`` bytes of ``path`` match the regex ``pattern`` (cheap format sniffing).

    Raises:
        FileAccessError: the file cannot be read (see `read_head`).
    """
    head = read_head(path, size)
    return head is not None and re.search(pattern, head) is not None
