"""Validate a dataset: find what would hurt training, with a stable code for each finding.

The dataset is read through the readers' lenient mode (``on_error="keep"``): a broken item becomes a
finding instead of stopping the read, and every finding the reader made is part of the result with its
own code (``class_unknown``, ``label_malformed``, ``json_malformed``, ``image_duplicate``, ...). Then
validate runs its own checks on the canonical dataset:

======================  ===========================  ================================================
code                    severity                     what
======================  ===========================  ================================================
``box_outside``         warning / error              box partly outside the image (warning) or
                                                     entirely outside (error); see ``fix``
``box_empty``           error                        zero width or height
``box_inverted``        error                        ``x2 < x1`` or ``y2 < y1``
``box_nan``             error                        a non-finite coordinate
``box_small``           warning                      side < ``min_box_side`` (2 px) or area <
                                                     ``min_box_area`` (16 px²)
``class_unknown``       error                        a class the label map lacks (from the reader)
``image_missing``       error                        no image file for the record
``image_unreadable``    error                        the file exists but cannot be read (a folder,
                                                     no permission, I/O error)
``image_corrupt``       error                        empty, not decodable by ``cv2.imdecode``, a JPEG
                                                     cut short (no end-of-image marker after its last
                                                     scan: cv2 would fill the rest grey), or decoded
                                                     size differs from the header
``image_too_large``     error                        its header declares more than 2^30 pixels
                                                     (read before any decoder, in every format)
``size_mismatch``       error / warning              the size the annotation declares differs from the
                                                     decoded image: error when the image has objects
                                                     (their pixel boxes are misplaced), warning for a
                                                     background image
``exif_rotation``       warning                      EXIF Orientation 2-8: viewers show the pixels
                                                     rotated/mirrored, boxes refer to stored pixels
``duplicate_image``     warning / error              same file bytes (sha256) as an earlier image: in
                                                     the same split a warning, in another split an
                                                     error (train/val leakage)
``near_duplicate``      warning / error              pHash within ``near_dup_threshold`` bits (6 of 64)
                                                     of an earlier image: same split warning, another
                                                     split error
======================  ===========================  ================================================

"Earlier" is the order train, val, test, other splits, no split, then image name: a leak is reported
on the val/test image. Exact duplicates are not reported again as near-duplicates.

Reader findings that validate derives again from the records the reader kept are replaced by
validate's own, so nothing is counted twice: the box codes (and the reader's per-file
``box_partly_outside`` warning) unless the same item carries another reader error (the reader then
dropped the object, and only its finding tells), and the image codes when validate's finding names
the same image file.

Each image is read once: the bytes give the sha256, PIL gives the header size and EXIF, and one
``cv2.imdecode`` (grey, EXIF ignored) gives the corrupt check and the pHash, on a few threads.
Near-duplicate search is vectorized (`edgevision.data.imagehash.near_duplicate_pairs`).
Validation never modifies the source; `apply_fix` returns a new dataset.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from edgevision.core.boxes import box_masks, box_problems, clip_xyxy
from edgevision.core.cpu import usable_cores
from edgevision.core.dataset import SPLITS, Dataset, ImageRecord
from edgevision.core.errors import ConfigError, EdgeVisionError, short_text
from edgevision.core.geometry import Polygon, Polyline, Shape, clip_polygon_to_window
from edgevision.core.report import Finding, Severity
from edgevision.core.signals import map_interruptibly
from edgevision.data.imagehash import DEFAULT_THRESHOLD, near_duplicate_pairs, phash

log = logging.getLogger(__name__)

SCHEMA = "edgevision.validate/1"
"""Version of the JSON document `ValidationResult.to_dict` returns."""

FixPolicy = Literal["keep", "clip", "drop"]

BOX_CODES = frozenset({"box_nan", "box_inverted", "box_empty", "box_outside", "box_partly_outside"})
IMAGE_CODES = frozenset({"image_missing", "image_corrupt", "image_unreadable", "image_too_large", "size_mismatch"})
_EDGE_TOL = 1e-6
"""A box may pass the border by this fraction of the image side (float noise of normalized formats)."""
_ORIENTATION = {2: "mirrored left-right", 3: "rotated 180°", 4: "mirrored top-bottom",
                5: "transposed", 6: "rotated 90° clockwise", 7: "transverse", 8: "rotated 90° counter-clockwise"}


@dataclass(frozen=True)
class ValidateConfig:
    """What validate checks and how.

    Attributes:
        min_box_side: a box narrower or lower than this (pixels) is ``box_small``.
        min_box_area: a box with a smaller area (pixels²) is ``box_small``.
        near_dup_threshold: largest pHash Hamming distance (of 64 bits) of near-duplicates.
        fix: what `apply_fix` does with boxes outside the image: ``keep``, ``clip`` or ``drop``.
        check_duplicates: look for exact and near-duplicate images.
        workers: threads decoding images (0: up to 8, by CPU count).
    """

    min_box_side: float = 2.0  # thin scratches and cracks of 2-3 px are real defects
    min_box_area: float = 16.0
    near_dup_threshold: int = DEFAULT_THRESHOLD
    fix: FixPolicy = "keep"
    check_duplicates: bool = True
    workers: int = 0

    def __post_init__(self) -> None:
        if self.fix not in ("keep", "clip", "drop"):
            raise ConfigError(f"fix: expected keep, clip or drop, got '{self.fix}'")
        if not 0 <= self.near_dup_threshold <= 64:
            raise ConfigError(f"near_dup_threshold: expected 0..64 bits, got {self.near_dup_threshold}")
        if self.min_box_side < 0 or self.min_box_area < 0 or self.workers < 0:
            raise ConfigError("min_box_side, min_box_area and workers must not be negative, got "
                              f"{self.min_box_side}, {self.min_box_area}, {self.workers}")


@dataclass
class FixCounts:
    """What `apply_fix` changed: objects clipped to the frame, objects dropped, images touched."""

    policy: FixPolicy = "keep"
    clipped: int = 0
    dropped: int = 0
    images: int = 0


@dataclass
class ValidationResult:
    """Findings of one validation.

    Attributes:
        dataset: the dataset as read (never modified).
        fixed: the dataset after the fix policy (the same object for ``keep``).
        source: the path validated, or None for an in-memory dataset.
        format: the format read (None when unknown).
        reader_findings: findings of the reader kept (see the module docstring).
        check_findings: findings of validate's own checks.
        fixes: what the fix policy changed.
        config: the configuration used.
    """

    dataset: Dataset
    fixed: Dataset
    source: str | None
    format: str | None
    reader_findings: list[Finding]
    check_findings: list[Finding]
    fixes: FixCounts
    config: ValidateConfig

    @property
    def findings(self) -> list[Finding]:
        return self.reader_findings + self.check_findings

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        """True when no finding has severity error."""
        return not self.errors

    def by_code(self) -> list[tuple[str, Severity, list[Finding]]]:
        """Findings grouped by ``(code, severity)``: errors first, then warnings, infos; by code."""
        groups: dict[tuple[str, Severity], list[Finding]] = defaultdict(list)
        for f in self.findings:
            groups[(f.code, f.severity)].append(f)
        rank = {"error": 0, "warning": 1, "info": 2}
        return [(c, s, fs) for (c, s), fs in sorted(groups.items(), key=lambda kv: (rank[kv[0][1]], kv[0][0]))]

    def to_dict(self) -> dict[str, Any]:
        """A JSON document (schema ``edgevision.validate/1``)."""
        sev = [f.severity for f in self.findings]
        return {
            "schema": SCHEMA,
            "dataset": self.source,
            "format": self.format,
            "summary": {
                "images": len(self.dataset),
                "objects": self.dataset.num_objects,
                "errors": sev.count("error"),
                "warnings": sev.count("warning"),
                "infos": sev.count("info"),
                "ok": self.ok,
                "codes": [{"code": c, "severity": s, "count": len(fs), "example": str(fs[0])}
                          for c, s, fs in self.by_code()],
                "fix": {"policy": self.fixes.policy, "clipped": self.fixes.clipped,
                        "dropped": self.fixes.dropped, "images": self.fixes.images},
                "config": {k: getattr(self.config, k) for k in self.config.__dataclass_fields__},
            },
            "findings": [{"code": f.code, "severity": f.severity, "where": f.where, "message": f.message,
                          "source": src} for src, fs in (("reader", self.reader_findings),
                                                          ("validate", self.check_findings)) for f in fs],
        }


# -- images ------------------------------------------------------------------------------------
@dataclass
class ImageFacts:
    """What one read of an image file tells.

    Attributes:
        size_hw: decoded size (stored pixels, EXIF ignored), or None when not decodable.
        sha256: hex digest of the file bytes, or None when the file could not be read.
        phash: 64-bit perceptual hash, or None when not decodable.
        orientation: EXIF Orientation tag, or None when absent.
        problem: ``(code, message)`` when the image is missing, unreadable or corrupt.
    """

    size_hw: tuple[int, int] | None = None
    sha256: str | None = None
    phash: int | None = None
    orientation: int | None = None
    problem: tuple[str, str] | None = None


def inspect_image(path: Path | None) -> ImageFacts:
    """Read an image file once: hash its bytes, read its header and EXIF, decode it, pHash it."""
    import cv2

    if path is None:
        return ImageFacts(problem=("image_missing", "no image file found for this record; add the image or fix its file name"))
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return ImageFacts(problem=("image_missing", f"image file not found: {path}"))
    except OSError as e:
        return ImageFacts(problem=("image_unreadable", f"image file cannot be read ({e.__class__.__name__}: "
                                                       f"{e.strerror or e}): {path}"))
    facts = ImageFacts(sha256=hashlib.sha256(data).hexdigest())
    if not data:
        facts.problem = ("image_corrupt", f"image file is empty (0 bytes): {path}")
        return facts
    header_hw, facts.orientation = _header(data)
    from edgevision.runtime.images import DEFAULT_MAX_PIXELS, ImageTooLargeError, check_image_header

    try:  # the pixel count from the header, before the decoder allocates it (Pillow misses some headers)
        check_image_header(data, DEFAULT_MAX_PIXELS, str(path))
    except ImageTooLargeError as e:
        facts.problem = ("image_too_large", str(e))
        return facts
    except EdgeVisionError:
        pass  # a header this parser cannot size: the decoder below says whether the file is an image
    try:
        grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as e:  # e.g. a header declaring more pixels than OpenCV decodes (CV_IO_MAX_IMAGE_PIXELS)
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else "cv2.error"
        facts.problem = ("image_corrupt", f"cv2 refuses to decode the image ({short_text(reason, 120)}): {path}")
        return facts
    if grey is None:
        facts.problem = ("image_corrupt", f"cv2 cannot decode the image ({len(data)} bytes): {path}")
    elif _jpeg_truncated(data):
        facts.problem = ("image_corrupt", f"JPEG data ends before its end-of-image marker (file cut short; "
                                          f"decoders fill the rest grey): {path}; re-export or remove it")
    elif header_hw is not None and grey.shape[:2] != header_hw:
        facts.problem = ("image_corrupt", f"header says {header_hw[1]}x{header_hw[0]} (WxH) but decoding gives "
                                          f"{grey.shape[1]}x{grey.shape[0]}: {path}")
    else:
        facts.size_hw = (int(grey.shape[0]), int(grey.shape[1]))
        facts.phash = phash(grey)
    return facts


def _header(data: bytes) -> tuple[tuple[int, int] | None, int | None]:
    """``(height, width)`` and EXIF Orientation from the bytes with PIL; None for what it cannot tell."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - PIL raises many types for odd files; cv2 decides what is corrupt
        return None, None
    return (int(h), int(w)), int(orientation) if isinstance(orientation, int) else None


def _jpeg_truncated(data: bytes) -> bool:
    """True for a JPEG without an end-of-image marker after its last start-of-scan.

    Entropy-coded data cannot contain ``FF D9`` (0xFF is byte-stuffed), and an EXIF thumbnail's own
    scan and EOI come before the main image's scan, so a complete JPEG has ``FF D9`` after its last
    ``FF DA``; bytes after that EOI (camera padding) are allowed.
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return False
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def inspect_images(records: list[ImageRecord], workers: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> list[ImageFacts]:
    """`inspect_image` for every record, on threads; ``progress(done, total)`` from the calling thread."""
    n = len(records)
    threads = workers or min(8, usable_cores())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        out = []
        for k, facts in enumerate(map_interruptibly(pool, inspect_image, [r.path for r in records],
                                                    window=4 * threads), 1):
            out.append(facts)
            if progress is not None:
                progress(k, n)
    return out


def image_findings(records: list[ImageRecord], facts: list[ImageFacts]) -> list[Finding]:
    """``image_*``, ``size_mismatch`` and ``exif_rotation`` findings from `inspect_images`' facts."""
    out: list[Finding] = []
    for rec, f in zip(records, facts, strict=True):
        if f.problem is not None:
            out.append(Finding(f.problem[0], "error", rec.name, f.problem[1]))
        if f.orientation is not None and f.orientation in _ORIENTATION:
            out.append(Finding("exif_rotation", "warning", rec.name,
                               f"EXIF Orientation={f.orientation} ({_ORIENTATION[f.orientation]}): viewers show the "
                               "image turned relative to the stored pixels the boxes refer to; save the pixels "
                               "upright (PIL ImageOps.exif_transpose) and check the boxes, or strip the tag"))
        if f.size_hw is not None and f.size_hw != rec.size_hw:
            out.append(_size_mismatch(rec, f))
    return out


def _size_mismatch(rec: ImageRecord, f: ImageFacts) -> Finding:
    assert f.size_hw is not None
    (ah, aw), (h, w) = rec.size_hw, f.size_hw
    hint = ""
    if (ah, aw) == (w, h) and f.orientation in (5, 6, 7, 8):
        hint = " (width and height swapped: the annotation was made on the EXIF-rotated view)"
    if len(rec):
        return Finding("size_mismatch", "error", rec.name,
                       f"annotation says {aw}x{ah} (WxH) but the image is {w}x{h}{hint}; the {len(rec)} pixel "
                       "box(es) do not match the image: re-annotate or rescale them")
    return Finding("size_mismatch", "warning", rec.name,
                   f"annotation says {aw}x{ah} (WxH) but the image is {w}x{h}{hint}; fix the declared size")


# -- boxes -------------------------------------------------------------------------------------
def outside_flags(boxes: NDArray[np.float64], size_hw: tuple[int, int]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Which boxes lie entirely outside the image and which only partly.

    Args:
        boxes: ``(N, 4)`` xyxy; size_hw: the image size.

    Returns:
        ``(entirely, partly)``, two ``(N,)`` masks; non-finite, inverted and empty boxes are in neither.
    """
    h, w = size_hw
    _, entirely, partly = box_masks(boxes, h, w, _EDGE_TOL * max(h, w))
    return entirely, partly


def box_findings(ds: Dataset, config: ValidateConfig) -> list[Finding]:
    """``box_*`` findings for every object, ``where`` = ``"<image>:object[i]"``."""
    out: list[Finding] = []
    names = ds.labels.names
    for rec in ds.images:
        if not len(rec):
            continue

        def at(i: int, rec: ImageRecord = rec) -> str:
            c = int(rec.class_ids[i])
            return f"{rec.name}:object[{i}] ({names[c] if 0 <= c < len(names) else c})"

        for i, code, msg in box_problems(rec.boxes, rec.size_hw):
            out.append(Finding(code, "error", at(i), f"{msg}; fix or remove the object"))
        _, partly = outside_flags(rec.boxes, rec.size_hw)
        for i in np.flatnonzero(partly).tolist():
            out.append(Finding("box_outside", "warning", at(i),
                               f"box {_fmt(rec.boxes[i])} extends past the {rec.size_hw[1]}x{rec.size_hw[0]} image; "
                               "--fix clip or --fix drop repairs it"))
        b = rec.boxes
        with np.errstate(invalid="ignore"):
            wh = b[:, 2:] - b[:, :2]
            small = (wh > 0).all(axis=1) & ((wh.min(axis=1) < config.min_box_side)
                                            | (wh[:, 0] * wh[:, 1] < config.min_box_area))
        for i in np.flatnonzero(small).tolist():
            out.append(Finding("box_small", "warning", at(i),
                               f"box is {wh[i, 0]:g}x{wh[i, 1]:g} px (WxH); expected a side >= "
                               f"{config.min_box_side:g} and an area >= {config.min_box_area:g} px²"))
    return out


def _fmt(box: NDArray[np.float64]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box.tolist()) + "]"


# -- duplicates --------------------------------------------------------------------------------
def _order(records: list[ImageRecord]) -> list[int]:
    """Record indices in the order train, val, test, other splits, no split; then by name."""
    rank = {s: k for k, s in enumerate(SPLITS)}

    def key(k: int) -> tuple[int, str, str]:
        s = records[k].split
        return (rank.get(s, len(SPLITS)) if s is not None else len(SPLITS) + 1, s or "", records[k].name)

    return sorted(range(len(records)), key=key)


def _split_name(s: str | None) -> str:
    return f"split '{s}'" if s is not None else "no split"


def duplicate_findings(records: list[ImageRecord], facts: list[ImageFacts], threshold: int) -> list[Finding]:
    """``duplicate_image`` (same sha256 of the bytes) and ``near_duplicate`` (pHash) findings."""
    order = [k for k in _order(records) if facts[k].sha256 is not None]
    out: list[Finding] = []
    first: dict[str, int] = {}
    for k in order:
        sha = facts[k].sha256
        assert sha is not None
        ref = first.setdefault(sha, k)
        if ref != k:
            a, b = records[ref], records[k]
            leak = a.split != b.split
            out.append(Finding("duplicate_image", "error" if leak else "warning", b.name,
                               f"same file bytes (sha256 {sha[:12]}) as '{a.name}' ({_split_name(a.split)})"
                               + (f"; leakage into {_split_name(b.split)}: keep one copy in one split" if leak
                                  else "; remove one copy")))
    out.extend(_near_duplicates(records, facts, [k for k in order if facts[k].phash is not None], threshold))
    return out


def _near_duplicates(records: list[ImageRecord], facts: list[ImageFacts], order: list[int],
                     threshold: int) -> list[Finding]:
    """One finding per image that is a near-duplicate of an earlier one (cross-split neighbours win)."""
    hashes = np.array([facts[k].phash for k in order], dtype=np.uint64)
    ii, jj, dd = near_duplicate_pairs(hashes, threshold)
    best: dict[int, tuple[bool, int, int]] = {}  # j -> (same split, distance, i): smallest is reported
    for i, j, d in zip(ii.tolist(), jj.tolist(), dd.tolist()):
        a, b = order[i], order[j]
        if facts[a].sha256 == facts[b].sha256:
            continue  # exact duplicate, reported as such
        cand = (records[a].split == records[b].split, d, a)
        if j not in best or cand < best[j]:
            best[j] = cand
    out = []
    for j in sorted(best):
        same, d, a = best[j]
        ra, rb = records[a], records[order[j]]
        out.append(Finding("near_duplicate", "warning" if same else "error", rb.name,
                           f"looks like '{ra.name}' ({_split_name(ra.split)}): pHash distance {d} <= {threshold} "
                           "of 64 bits" + ("" if same else f"; leakage into {_split_name(rb.split)}: keep "
                                           "near-identical shots in one split (split --group)")))
    return out


# -- reader findings ---------------------------------------------------------------------------
def merge_reader_findings(reader: Iterable[Finding], checks: list[Finding]) -> list[Finding]:
    """The reader findings validate did not derive again (see the module docstring)."""
    reader = list(reader)
    other_errors = {f.where for f in reader if f.severity == "error" and f.code not in BOX_CODES}
    seen: dict[str, set[str]] = defaultdict(set)
    for c in checks:
        if c.code in IMAGE_CODES:
            seen[c.code].add(PurePosixPath(c.where).name)
    kept = []
    for f in reader:
        if f.code in BOX_CODES and (f.code == "box_partly_outside" or f.where not in other_errors):
            continue
        if f.code in IMAGE_CODES and any(_mentions(f"{f.where} {f.message}", n) for n in seen[f.code]):
            continue
        kept.append(f)
    return kept


def _mentions(text: str, file_name: str) -> bool:
    """Whether ``text`` names ``file_name`` as a whole file name (not as the tail of a longer one)."""
    start = text.find(file_name)
    while start >= 0:
        end = start + len(file_name)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if not (before.isalnum() or before in "_-.") and not (after.isalnum() or after in "_-"):
            return True
        start = text.find(file_name, start + 1)
    return False


# -- fixing ------------------------------------------------------------------------------------
def apply_fix(ds: Dataset, policy: FixPolicy) -> tuple[Dataset, FixCounts]:
    """Apply the policy for boxes outside the image; the input is left unchanged.

    ``keep`` returns ``ds`` itself. ``clip`` clips the boxes and polygons (clamps polyline
    vertices) to the frame and drops the boxes that become empty; ``drop`` drops every object with
    any part outside. Other objects are untouched.

    Returns:
        The fixed dataset and what changed.
    """
    counts = FixCounts(policy=policy)
    if policy == "keep":
        return ds, counts
    images = []
    for rec in ds.images:
        entirely, partly = outside_flags(rec.boxes, rec.size_hw) if len(rec) else (np.zeros(0, bool),) * 2
        out = entirely | partly
        if not out.any():
            images.append(rec)
            continue
        counts.images += 1
        if policy == "drop":
            counts.dropped += int(out.sum())
            images.append(rec.subset(~out))
            continue
        fixed = rec.subset(np.ones(len(rec), bool))
        fixed.boxes[out] = clip_xyxy(rec.boxes[out], rec.size_hw)
        if fixed.shapes is not None:
            fixed.shapes = [_clamp(s, rec.size_hw) if o else s for s, o in zip(fixed.shapes, out.tolist())]
        b = fixed.boxes
        empty = out & ~((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))
        counts.clipped += int((out & ~empty).sum())
        counts.dropped += int(empty.sum())
        images.append(fixed.subset(~empty))
    return Dataset(ds.labels, images, root=ds.root, meta=dict(ds.meta)), counts


def _clamp(shape: Shape | None, size_hw: tuple[int, int]) -> Shape | None:
    """Clip a polygon to the frame (Sutherland-Hodgman), clamp a polyline's vertices (RLE masks are
    inside already). A polygon with nothing left inside becomes None (the box still carries the object)."""
    h, w = size_hw
    lim = np.array([w, h], dtype=np.float64)
    if isinstance(shape, Polygon):
        rings = clip_polygon_to_window(shape.rings, (0, 0, w, h))
        return Polygon(rings) if rings else None
    if isinstance(shape, Polyline):
        return Polyline(np.clip(shape.points, 0, lim))
    return shape


# -- entry point -------------------------------------------------------------------------------
def validate(dataset_or_path: Dataset | Path | str, *, fmt: str = "auto", config: ValidateConfig | None = None,
             progress: Callable[[int, int], None] | None = None) -> ValidationResult:
    """Validate a dataset folder / annotation file (read leniently) or an in-memory `Dataset`.

    Args:
        dataset_or_path: what to validate.
        fmt: the input format, or ``"auto"`` to detect it (paths only).
        config: the checks' settings (defaults: `ValidateConfig()`).
        progress: ``progress(done, total)`` after each image decoded, from the calling thread.

    Returns:
        The findings, and the dataset fixed by ``config.fix``.

    Raises:
        EdgeVisionError: the path does not exist, the format is unknown, or the whole source is
            unreadable (a fatal reader error).
    """
    from edgevision.convert import read_dataset

    cfg = config or ValidateConfig()
    if isinstance(dataset_or_path, Dataset):
        ds, source, fmt_name, reader = dataset_or_path, None, dataset_or_path.meta.get("format"), []
    else:
        rr = read_dataset(dataset_or_path, fmt, on_error="keep")
        ds, source, fmt_name, reader = rr.dataset, str(dataset_or_path), rr.format, rr.report.findings
    facts = inspect_images(ds.images, cfg.workers, progress)
    checks = image_findings(ds.images, facts) + box_findings(ds, cfg)
    if cfg.check_duplicates:
        checks += duplicate_findings(ds.images, facts, cfg.near_dup_threshold)
    fixed, counts = apply_fix(ds, cfg.fix)
    log.info("validated %d images: %d findings", len(ds), len(checks))
    return ValidationResult(ds, fixed, source, fmt_name, merge_reader_findings(reader, checks), checks, counts, cfg)


__all__ = [
    "SCHEMA", "FixCounts", "FixPolicy", "ImageFacts", "ValidateConfig", "ValidationResult", "apply_fix",
    "box_findings", "duplicate_findings", "image_findings", "inspect_image", "inspect_images",
    "merge_reader_findings", "outside_flags", "validate",
]
