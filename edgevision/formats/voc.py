"""Pascal VOC XML: one ``<annotation>`` file per image (read and write).

Coordinates:
    VOC ``<bndbox>`` values are 1-based, inclusive pixel indices: pixels ``xmin..xmax`` are the
    object, so the box covers the continuous span ``[xmin - 1, xmax]``. The reader therefore maps
    ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` and the writer does the inverse
    (``xmin = x1 + 1``, ``xmax = x2``). A box over a whole ``W x H`` image is ``1, 1, W, H`` in VOC
    and ``(0, 0, W, H)`` canonically. Tools disagree here by one pixel: Ultralytics' VOC converter
    subtracts 1 from all four values, Datumaro subtracts nothing. Real data (NEU-DET: ``xmin >= 1``
    and ``xmax <= 200`` on 200 x 200 images) fits this convention. Float coordinates are kept; the
    writer writes integral values as integers and other values as decimals.

Layouts read:
    * the standard tree ``Annotations/`` + ``JPEGImages/`` + ``ImageSets/Main/{train,val,test}.txt``
      (ids listed only in ``trainval.txt`` become ``train``, with an info finding);
    * annotation folders paired with image folders by name: ``X_Annotations`` <-> ``X_Images``,
      ``ANNOTATIONS`` <-> ``IMAGES``, ``Annotations`` <-> ``JPEGImages`` (NEU-DET ships
      ``ANNOTATIONS/`` + ``IMAGES/`` and ``Validation_Annotations/`` + ``Validation_Images/``);
    * a folder of XML files with the images beside them (LabelImg), or one XML file.
    Annotation folders are looked for in the given folder and two levels below it. The reader
    option ``split_dirs`` sets the split of each annotation folder, e.g.
    ``{ANNOTATIONS: train, Validation_Annotations: val}``.
    Files directly in the given folder that are not read (a README, a licence, an illustration such
    as GC10-DET's ``defects examples.png`` when that folder holds no annotation XML and none of the
    dataset's images) are outside the layout: never background images, named in one
    ``file_outside_layout`` info finding.

Quirks handled (each an info finding): a ``<filename>`` without extension, with another case or
extension, or holding a path (found through `ImageIndex`); an unusable ``<filename>`` (the XML's
own stem is used); a missing or zero ``<size>`` (read from the image header). A ``<size>`` that
disagrees with the image is a ``size_mismatch`` warning (the image's size is used).

Object fields: ``difficult``, ``truncated`` and ``occluded`` become bool attributes when true, ``pose``
a str attribute unless ``Unspecified`` (VOC's defaults are not kept, so they are not counted as lost
by writers that hold no attributes), and a CVAT/Datumaro-style ``<attributes><attribute><name/><value/>`` block free-form
attributes. The writer writes them back the same way.

Writing:
    ``Annotations/<id>.xml``, ``JPEGImages/<id><ext>`` and ``ImageSets/Main/<split>.txt`` (plus
    ``trainval.txt`` when train or val exist). The id is the image name's stem; names in subfolders
    are flattened (``a/b.jpg`` -> ``a__b.jpg``) because VOC tools expect flat ids, and ids are made
    unique ignoring case (``_2``, ``_3`` ...); every rename is counted as a loss. Background images
    get an XML with no objects. Polygons, polylines and masks, scores, and non-scalar attributes
    cannot be held and are counted as losses.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edgevision.core.dataset import Dataset, ImageRecord
from edgevision.core.errors import ConfigError, short_repr
from edgevision.core.io import ImageIndex, is_image, place_image
from edgevision.core.report import Report
from edgevision.formats import register_format
from edgevision.formats._readkit import (
    CheckedObjects,
    ClassCollector,
    ImageFinder,
    Unannotated,
    declared_size,
    flag_value,
    head_matches,
    load_or_report,
    loose_files,
    normalize_split,
    parse_xml_file,
    read_each,
    report_outside_layout,
    safe_name,
    scalar_value,
    settle_size,
    unannotated_images,
)
from edgevision.formats.base import Detection, Format, Losses, Options, WriteOptions

log = logging.getLogger(__name__)

_VOC_ROOT = rb"<annotation[\s>]"
_FLAGS = ("difficult", "truncated", "occluded")
_COORDS = ("xmin", "ymin", "xmax", "ymax")
_ANN_TOKENS = ("annotations", "annotation", "xmls", "xml")
_IMG_TOKENS = ("jpegimages", "images", "imgs", "img")


class VocReadOptions(Options):
    """Reader options for ``voc``.

    Attributes:
        split_dirs: split per annotation folder (folder name or path relative to the dataset),
            e.g. ``{"ANNOTATIONS": "train", "Validation_Annotations": "val"}``; overrides ImageSets.
        classes: class names in id order; other names are ``class_unknown`` errors. Default:
            the names found, sorted.
        unannotated_images: images no XML names: ``ignore`` (counted in an info finding) or keep as
            ``background`` images.
        check_image_sizes: read every image header to check ``<size>`` (False trusts the XML).
    """

    split_dirs: dict[str, str] | None = None
    classes: list[str] | None = None
    unannotated_images: Unannotated = "ignore"
    check_image_sizes: bool = True


@dataclass
class _AnnFolder:
    """One folder of VOC XML files and where its images are."""

    path: Path
    files: list[Path]
    index: ImageIndex
    rel: str = "."
    split: str | None = None
    set_splits: dict[str, str] = field(default_factory=dict)


def _xml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml" and p.is_file())


def _voc_folders(root: Path) -> list[Path]:
    """Folders (``root`` and up to two levels below) that directly hold VOC ``<annotation>`` XMLs."""
    found, level = [], [root]
    for _ in range(3):
        nxt = []
        for d in level:
            xmls = _xml_files(d)
            if any(head_matches(p, _VOC_ROOT) for p in xmls[:3]):
                found.append(d)
            nxt += sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
        level = nxt
    return found


def _paired_image_dir(ann_dir: Path) -> Path | None:
    """The sibling image folder of ``ann_dir`` by name (``X_Annotations`` -> ``X_Images``, ...)."""
    name = ann_dir.name.lower()
    siblings = {d.name.lower(): d for d in ann_dir.parent.iterdir() if d.is_dir() and d != ann_dir}
    for tok in _ANN_TOKENS:
        if tok in name:
            for rep in _IMG_TOKENS:
                if name.replace(tok, rep) in siblings:
                    return siblings[name.replace(tok, rep)]
    return None


def _image_dir(ann_dir: Path, root: Path) -> Path:
    """The image folder paired with ``ann_dir``, or the folder that holds both (never above ``root``).

    Pairs by name at ``ann_dir`` or at an ancestor below ``root``, keeping the sub-path: PKU-Market-PCB's
    ``Annotations/Missing_hole`` pairs with ``images/Missing_hole``.
    """
    if ann_dir == root or any(is_image(p) for p in ann_dir.iterdir()):
        return ann_dir
    level = ann_dir
    while True:
        paired = _paired_image_dir(level)
        if paired is not None:
            candidate = paired / ann_dir.relative_to(level)
            if candidate.is_dir():
                return candidate
        if level == root or level.parent == level or root not in level.parents:
            break
        level = level.parent
    siblings = {d.name.lower(): d for d in ann_dir.parent.iterdir() if d.is_dir() and d != ann_dir}
    return next((siblings[t] for t in _IMG_TOKENS if t in siblings), ann_dir.parent)


def _outside_layout(root: Path, folders: list[_AnnFolder], finder: ImageFinder) -> set[Path]:
    """The files directly in ``root`` that are not part of the dataset (call after reading the XMLs).

    A file is part of it when it was read as an annotation or claimed as an image; an unclaimed
    image is too (an unannotated image) when ``root`` itself holds annotation XMLs or claimed images.
    """
    loose = loose_files(root)
    read = {f for folder in folders if folder.path == root for f in folder.files}
    holds_data = bool(read) or any(finder.is_claimed(p) for p in loose)
    return {p for p in loose if p not in read and not finder.is_claimed(p) and not (holds_data and is_image(p))}


def _set_splits(tree: Path, report: Report) -> dict[str, str]:
    """XML stem -> split from ``ImageSets/Main/{train,val,test,trainval}.txt`` under ``tree``."""
    main = tree / "ImageSets" / "Main"
    out: dict[str, str] = {}
    lists = {s: main / f"{s}.txt" for s in ("train", "val", "trainval", "test")}
    lists = {s: p for s, p in lists.items() if p.is_file()}
    if "trainval" in lists and not {"train", "val"} & set(lists):
        report.info("split_trainval", str(lists["trainval"]), "only trainval.txt lists the training ids; "
                                                              "they are read as split 'train'")
    for split, path in lists.items():
        if split == "trainval" and {"train", "val"} & set(lists):
            continue
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            report.fatal("text_malformed", str(path), f"split list is not UTF-8 text ({e.reason}); expected one id per line")
        for line in text.splitlines():
            ident = line.strip()
            if not ident:
                continue
            split_name = "train" if split == "trainval" else split
            if out.setdefault(ident, split_name) != split_name:
                report.warning("split_conflict", f"{path}:{ident}",
                               f"id listed in both {out[ident]}.txt and {split}.txt; kept {out[ident]}")
    return out


def _size_hw(el: Any, where: str, report: Report) -> tuple[tuple[int, int] | None, dict[str, Any]]:
    """Declared ``(h, w)`` (None when absent or zero; a ``size_invalid`` error when not a whole number of
    pixels, see `declared_size`) and ``{"depth": d}`` when given."""
    size = el.find("size")
    if size is None:
        return None, {}
    depth = size.findtext("depth", "").strip()
    meta = {"depth": int(depth)} if depth.isdigit() and len(depth) < 6 else {}
    return declared_size(size.findtext("height"), size.findtext("width"), where, report, text=True,
                         names=("<height>", "<width>")), meta


def _attributes(obj: Any) -> dict[str, Any]:
    """Object attributes; VOC's defaults (flags 0, pose ``Unspecified``) are not kept, so a plain
    VOC object carries none and a writer that cannot hold attributes loses nothing."""
    attrs: dict[str, Any] = {}
    for tag in _FLAGS:
        if obj.find(tag) is not None and (value := flag_value(obj.findtext(tag))) is not False:
            attrs[tag] = value
    pose = (obj.findtext("pose") or "").strip()
    if pose and pose.lower() != "unspecified":
        attrs["pose"] = pose
    for a in obj.findall("attributes/attribute"):
        key = (a.findtext("name") or "").strip()
        if key:
            attrs[key] = scalar_value(a.findtext("value"))
    return attrs


def _box(obj: Any, where: str, report: Report) -> list[float] | None:
    """``x1 y1 x2 y2`` from a ``<bndbox>`` (1-based inclusive -> continuous); None after an error."""
    bb = obj.find("bndbox")
    missing = [t for t in _COORDS if bb is None or not (bb.findtext(t) or "").strip()]
    if missing:
        report.error("box_missing", where, f"<bndbox> lacks {', '.join(missing)}; expected xmin, ymin, xmax, ymax")
        return None
    try:
        xmin, ymin, xmax, ymax = (float(bb.findtext(t)) for t in _COORDS)
    except ValueError:
        got = {t: bb.findtext(t) for t in _COORDS}
        report.error("box_invalid", where, f"<bndbox> values must be numbers, got {short_repr(got, 160)}")
        return None
    return [xmin - 1, ymin - 1, xmax, ymax]


@dataclass
class _Reader:
    """State of one read: the report, the class list, the image finder and the options."""

    root: Path
    options: VocReadOptions
    report: Report
    classes: ClassCollector
    finder: ImageFinder

    def folders(self, path: Path) -> list[_AnnFolder]:
        dirs = [path.parent] if path.is_file() else _voc_folders(path)
        if not dirs:
            self.report.fatal("format_mismatch", str(path), "no Pascal VOC <annotation> XML files found here "
                                                             "or two levels below; expected Annotations/*.xml")
        indexes: dict[Path, ImageIndex] = {}
        splits = self._split_dirs(dirs)
        out = []
        for d in dirs:
            img_dir = _image_dir(d, self.root)
            index = indexes.setdefault(img_dir, ImageIndex(img_dir))
            files = [path] if path.is_file() else _xml_files(d)
            rel = d.relative_to(self.root).as_posix()
            out.append(_AnnFolder(d, files, index, rel, splits.get(d), _set_splits(d.parent, self.report)))
        return out

    def _split_dirs(self, dirs: list[Path]) -> dict[Path, str | None]:
        wanted = self.options.split_dirs or {}
        known = {k: d for d in dirs for k in (d.name, d.relative_to(self.root).as_posix())}
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            raise ConfigError(f"voc reader option 'split_dirs': no annotation folder {unknown}; "
                              f"annotation folders: {sorted(d.relative_to(self.root).as_posix() for d in dirs)}")
        return {known[k]: normalize_split(v) for k, v in wanted.items()}

    def read_file(self, xml: Path, folder: _AnnFolder) -> ImageRecord | None:
        where, report = str(xml), self.report
        el = load_or_report(parse_xml_file, xml, report)
        if el is None:
            return None
        if el.tag != "annotation":
            report.warning("xml_not_voc", where, f"root element is <{short_repr(el.tag)}>, expected <annotation>; "
                                                 "file skipped")
            return None
        raw = (el.findtext("filename") or "").strip()
        if not raw:
            report.info("filename_missing", where, "<filename> is missing or empty; the XML file's stem is used")
        requested = safe_name(raw, where, report) if raw else None
        image = self.finder.find(folder.index, requested, xml.stem, where)
        declared, meta = _size_hw(el, where, report)
        size = settle_size(declared, image, where, report, check=self.options.check_image_sizes)
        if size is None:
            return None
        if image is None:
            report.warning("image_missing", where, f"image {short_repr(raw or xml.stem, 100)} not found; kept with "
                                                   "the <size> of the XML and no image file")
        name = self.finder.claim(image, requested or xml.stem, folder.index, where)
        objs = CheckedObjects(size, report)
        for i, obj in enumerate(el.findall("object")):
            self._object(obj, f"{where}:object[{i}]", objs)
        split = folder.split if folder.split is not None else folder.set_splits.get(xml.stem)
        meta["annotation"] = PurePosixPath(folder.rel, xml.name).as_posix()
        return objs.checked_record(name, path=image, split=split, meta=meta)

    def _object(self, obj: Any, where: str, objs: CheckedObjects) -> None:
        label = (obj.findtext("name") or "").strip()
        if not label:
            self.report.error("class_missing", where, "<object> has no <name>; expected a class name")
            return
        box = _box(obj, where, self.report)
        cid = self.classes.id_of(label, where, self.report)
        if box is not None and cid is not None:
            objs.add_at(where, box, cid, attributes=_attributes(obj))


class VocFormat(Format):
    """Pascal VOC XML (one file per image; 1-based inclusive pixel boxes)."""

    name = "voc"
    description = "Pascal VOC XML: Annotations/*.xml + JPEGImages/ (+ ImageSets/Main splits), or paired folders"
    ReadOptions = VocReadOptions
    can_read = True
    can_write = True

    def detect(self, path: Path) -> Detection | None:
        if path.is_file():
            ok = path.suffix.lower() == ".xml" and head_matches(path, _VOC_ROOT)
            return Detection(0.6, "a Pascal VOC <annotation> XML file") if ok else None
        dirs = _voc_folders(path)
        if not dirs:
            return None
        std = any(d.name == "Annotations" and (d.parent / "JPEGImages").is_dir() for d in dirs)
        where = ", ".join(d.relative_to(path).as_posix() or "." for d in dirs[:3])
        return Detection(0.9 if std else 0.8, f"Pascal VOC <annotation> XML files in {where}")

    def read(self, path: Path, options: Options, report: Report) -> Dataset:
        assert isinstance(options, VocReadOptions)
        root = path.parent if path.is_file() else path
        r = _Reader(root, options, report, ClassCollector(options.classes), ImageFinder(report))
        folders = r.folders(path)
        items = [(xml, folder) for folder in folders for xml in folder.files]
        records = read_each(items, lambda it: str(it[0]), lambda it: r.read_file(*it), report)
        if not path.is_file():
            outside = _outside_layout(root, folders, r.finder)
            for index in {id(f.index): f.index for f in folders}.values():
                split = {f.split for f in folders if f.index is index}
                records += unannotated_images(index, r.finder, options.unannotated_images, str(index.roots[0]),
                                              report, split.pop() if len(split) == 1 else None, exclude=outside)
            report_outside_layout(report, root, outside)
        log.info("read %d VOC images from %s", len(records), path)
        return Dataset(labels=r.classes.finish(records), images=records, root=root, meta={"format": self.name})

    def write(self, dataset: Dataset, out: Path, options: WriteOptions, losses: Losses) -> None:
        ids = _voc_ids(dataset.images, losses)
        (out / "Annotations").mkdir(parents=True, exist_ok=True)
        (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
        lists: dict[str, list[str]] = {}
        for rec in dataset.images:
            ident, filename = ids[rec.name]
            xml = _to_xml(rec, filename, dataset.labels.names, losses)
            ET.indent(xml)
            ET.ElementTree(xml).write(out / "Annotations" / f"{ident}.xml", encoding="utf-8", xml_declaration=True)
            placed = place_image(rec.path, out / "JPEGImages" / filename, options.images)
            if not placed and options.images != "none":
                losses.add("image file not written (the source has no image file)", 1, rec.name)
            if rec.split is not None:
                lists.setdefault(_safe_split(rec.split), []).append(ident)
        _write_sets(out / "ImageSets" / "Main", lists)


def _safe_split(split: str) -> str:
    return re.sub(r"[^\w.-]", "_", split).strip(".") or "split"


def _write_sets(main: Path, lists: dict[str, list[str]]) -> None:
    if not lists:
        return
    main.mkdir(parents=True, exist_ok=True)
    if "trainval" not in lists and {"train", "val"} & set(lists):
        lists = {**lists, "trainval": lists.get("train", []) + lists.get("val", [])}
    for split, idents in lists.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in idents), encoding="utf-8")


def _voc_ids(records: list[ImageRecord], losses: Losses) -> dict[str, tuple[str, str]]:
    """Record name -> (flat unique id, image file name in ``JPEGImages``)."""
    out: dict[str, tuple[str, str]] = {}
    taken: set[str] = set()
    for rec in records:
        p = PurePosixPath(rec.name)
        ext = p.suffix if is_image(Path(p.name)) else (rec.path.suffix if rec.path is not None else "")
        stem = p.name[: len(p.name) - len(p.suffix)] if is_image(Path(p.name)) else p.name
        base = "__".join([*p.parent.parts, stem]) if p.parent.parts else stem
        ident, k = base, 2
        while ident.casefold() in taken:
            ident, k = f"{base}_{k}", k + 1
        taken.add(ident.casefold())
        if ident + ext != rec.name:
            losses.add("image renamed (VOC ids are flat and unique)", 1, f"{rec.name} -> {ident}{ext}")
        out[rec.name] = (ident, ident + ext)
    return out


def _num(v: float) -> str:
    """Integral values as integers, others as short decimals."""
    return f"{float(v):.6f}".rstrip("0").rstrip(".")


def _sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def _to_xml(rec: ImageRecord, filename: str, names: list[str], losses: Losses) -> ET.Element:
    root = ET.Element("annotation")
    _sub(root, "folder", "JPEGImages")
    _sub(root, "filename", filename)
    _sub(_sub(root, "source"), "database", "EdgeVision")
    size = _sub(root, "size")
    depth = rec.meta.get("depth")
    for tag, v in (("width", rec.size_hw[1]), ("height", rec.size_hw[0]), ("depth", depth if isinstance(depth, int) else 3)):
        _sub(size, tag, v)
    _sub(root, "segmented", 0)
    if rec.shapes is not None:
        n = sum(s is not None for s in rec.shapes)
        losses.add("shape dropped (VOC holds boxes only)", n, rec.name)
    if rec.scores is not None:
        losses.add("score dropped (VOC holds no confidences)", len(rec), rec.name)
    for i, (box, cid) in enumerate(zip(rec.boxes.tolist(), rec.class_ids.tolist(), strict=True)):
        _object_xml(_sub(root, "object"), names[cid], box, rec.object_attributes(i), f"{rec.name}:object[{i}]", losses)
    return root


def _object_xml(obj: ET.Element, label: str, box: list[float], attrs: dict[str, Any], where: str,
                losses: Losses) -> None:
    _sub(obj, "name", label)
    _sub(obj, "pose", attrs.get("pose", "Unspecified"))
    for tag in _FLAGS:
        if tag in attrs or tag != "occluded":
            v = attrs.get(tag, 0)
            _sub(obj, tag, int(v) if isinstance(v, (bool, int)) else v)
    bb = _sub(obj, "bndbox")
    x1, y1, x2, y2 = box
    for tag, v in zip(_COORDS, (x1 + 1, y1 + 1, x2, y2), strict=True):
        _sub(bb, tag, _num(v))
    extra = {k: v for k, v in attrs.items() if k not in (*_FLAGS, "pose")}
    scalars = {k: v for k, v in extra.items() if isinstance(v, (bool, int, float, str))}
    losses.add("attribute dropped (not a scalar)", len(extra) - len(scalars), f"{where}: {sorted(set(extra) - set(scalars))}")
    if scalars:
        block = _sub(obj, "attributes")
        for k, v in scalars.items():
            a = _sub(block, "attribute")
            _sub(a, "name", k)
            _sub(a, "value", str(v).lower() if isinstance(v, bool) else v)


register_format(VocFormat())
