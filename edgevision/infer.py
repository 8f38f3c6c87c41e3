"""Prediction on files, folders, globs and videos: what ``edgevision predict`` runs.

`iter_sources` turns a SOURCE argument into frames (name + decoded image, or the reason it could not
be read); `open_model` opens an ONNX file through the torch-free `edgevision.runtime.Detector` or a
run folder / ``.pt`` through the training backend; `predict_source` runs one over the other and
collects detections, image-level decisions at the model's operating points and unreadable inputs.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, EdgeVisionError
from edgevision.core.io import IMAGE_EXTS
from edgevision.runtime.metadata import DecisionThresholds

__all__ = ["LIST_EXTS", "VIDEO_EXTS", "Frame", "ObjectStore", "PredictResult", "is_uri", "iter_source_files",
           "iter_sources", "open_model", "predict_source", "source_files"]

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")
"""File suffixes read as videos (through OpenCV's FFmpeg backend), frame by frame."""


@dataclass
class Frame:
    """One input: an image file or a video frame.

    Attributes:
        name: the name in the outputs: the path relative to a SOURCE folder (POSIX), the file name, or
            ``video.mp4#000123`` for frame 123 of a video.
        path: the file (the video for frames).
        image: the decoded image (OpenCV convention: BGR / grey, uint8 or uint16), None when unreadable.
        error: why it could not be read (one line), else None.
    """

    name: str
    path: Path
    image: np.ndarray | None = None
    error: str | None = None


def _glob_chars(s: str) -> bool:
    return any(c in s for c in "*?[")


LIST_EXTS = (".txt", ".list")
"""A SOURCE file with one of these suffixes is a list of image paths (one per line; relative paths are read from
the list file's folder; blank lines and lines starting with ``#`` are skipped)."""


def source_files(source: str) -> tuple[list[tuple[str, Path]], bool]:
    """Expand SOURCE into ``(name, path)`` pairs and whether it is one video (see `iter_source_files`).

    Raises:
        ConfigError: nothing exists at SOURCE, or it matches no image.
    """
    if is_uri(source):
        return list(iter_source_files(source)), False
    p = Path(source)
    if p.is_file() and p.suffix.lower() not in LIST_EXTS:
        return [(p.name, p)], p.suffix.lower() in VIDEO_EXTS
    if p.is_dir() or p.is_file():
        return list(iter_source_files(source)), False
    if _glob_chars(source):
        files = sorted(Path(f) for f in glob.glob(source, recursive=True) if Path(f).is_file())
        files = [f for f in files if f.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS]
        if not files:
            raise ConfigError(f"{source}: the pattern matches no image or video file")
        videos = [f for f in files if f.suffix.lower() in VIDEO_EXTS]
        if videos and len(files) > 1:
            raise ConfigError(f"{source}: the pattern matches videos and other files; give one video or images only")
        names = _unique_names(files)
        return list(zip(names, files)), bool(videos)
    raise ConfigError(f"{source}: no such file or folder (expected an image, a folder, a list file, a glob pattern "
                      "or a video)")


def iter_source_files(source: str) -> Iterator[tuple[str, Path]]:
    """The ``(name, path)`` pairs of a folder or list-file SOURCE, streamed: the driver of a cluster run lists an
    archive of millions of files without holding it (`edgevision.scale`), and the local command reads the same order.

    * a folder: every image file below it (symlinked folders are not followed), named by its POSIX path relative
      to the folder, in sorted path order (each folder's entries sorted by name: the order of ``sorted(rglob)``);
    * a list file (`LIST_EXTS`): its image paths in the list's order, named as written (``./`` dropped);
      a listed file that does not exist is kept (the prediction lists it as unreadable);
    * a URI (``s3://bucket/prefix``, ``gs://...``, ``file:///...``: `ObjectStore`): every image object below it,
      named by its key relative to the URI, in sorted order; the path is that name (read through `ObjectStore`).

    Raises:
        ConfigError: the folder holds no image file, or the list names none (raised after the walk / read,
            so a caller that streams sees it at the end).
    """
    found = False
    if is_uri(source):
        for name in ObjectStore(source).names():
            found = True
            yield name, Path(name)
        if not found:
            raise ConfigError(f"{source}: no image files there ({', '.join(IMAGE_EXTS)})")
        return
    p = Path(source)
    if p.is_dir():
        for path in _walk_sorted(p):
            found = True
            yield path.relative_to(p).as_posix(), path
        if not found:
            raise ConfigError(f"{source}: folder holds no image files ({', '.join(IMAGE_EXTS)})")
        return
    try:
        f = p.open(encoding="utf-8")
    except (OSError, UnicodeError) as e:
        raise ConfigError(f"{source}: cannot read the list file ({e})") from e
    with f:
        for i, line in enumerate(f, 1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if Path(entry).suffix.lower() not in IMAGE_EXTS:
                raise ConfigError(f"{source}:{i}: {entry!r} is not an image file ({', '.join(IMAGE_EXTS)}); a list "
                                  "file names one image per line")
            rel = Path(entry)
            found = True
            yield rel.as_posix(), (rel if rel.is_absolute() else p.parent / rel)
    if not found:
        raise ConfigError(f"{source}: the list file names no image")


def is_uri(source: str) -> bool:
    """SOURCE names object storage (``scheme://...``), read through pyarrow's filesystems."""
    import re

    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) is not None


class ObjectStore:
    """Images under a URI, through `pyarrow.fs` (S3, GCS, Azure, HDFS, local ``file://``, as pyarrow was built):
    credentials and endpoints come from the URI's query (``?endpoint_override=...&region=...``) and the usual
    environment of each store. The whole listing is read at once (pyarrow lists a prefix in one call); images are
    read one by one where they are predicted (on the cluster: on the workers).

    Raises:
        ConfigError: pyarrow missing, an unknown scheme or a store that cannot be reached or listed (one line).
    """

    def __init__(self, uri: str) -> None:
        try:
            import pyarrow.fs as pafs
        except ImportError as e:
            raise ConfigError(f"{uri}: reading object storage needs pyarrow: pip install 'edgevision[scale]'") from e
        try:
            self.fs, root = pafs.FileSystem.from_uri(uri)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid / ArrowIOError derive from these
            raise ConfigError(f"{uri}: cannot open this storage ({str(e).splitlines()[0]})") from e
        self.uri, self.root = uri, root.rstrip("/")
        self._pafs = pafs

    def names(self) -> list[str]:
        """The image objects' keys relative to the URI, sorted."""
        try:
            infos = self.fs.get_file_info(self._pafs.FileSelector(self.root, recursive=True))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.uri}: cannot list it ({str(e).splitlines()[0]})") from e
        cut = len(self.root) + 1
        return sorted(i.path[cut:] for i in infos
                      if i.type == self._pafs.FileType.File and Path(i.path).suffix.lower() in IMAGE_EXTS)

    def read_image(self, name: str) -> tuple[np.ndarray | None, str | None]:
        """Decode object ``name`` as `read_image_file` decodes a file; ``(None, reason)`` when it cannot."""
        from edgevision.runtime.images import ImageReadError, decode_image_bytes

        where = f"{self.uri.rstrip('/')}/{name}"
        try:
            with self.fs.open_input_stream(f"{self.root}/{name}") as f:
                data = f.read()
        except (OSError, ValueError) as e:
            return None, f"{where}: not readable ({str(e).splitlines()[0]})"
        try:
            return decode_image_bytes(data, where), None
        except ImageReadError as e:
            return None, str(e)


def _walk_sorted(folder: Path) -> Iterator[Path]:
    import os

    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                yield from _walk_sorted(Path(e.path))
            elif e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS:
                yield Path(e.path)
        except OSError:
            continue


def _unique_names(files: list[Path]) -> list[str]:
    """File names, or paths relative to their common folder when two files share a name."""
    names = [f.name for f in files]
    if len(set(names)) == len(names):
        return names
    import os

    root = Path(os.path.commonpath([str(f.parent.resolve()) for f in files]))
    return [f.resolve().relative_to(root).as_posix() for f in files]


def read_image_file(path: Path) -> tuple[np.ndarray | None, str | None]:
    """Decode an image file as the runtime does (`edgevision.runtime.images.decode_image`: depth and
    channels kept, dtype and shape checked); ``(None, reason)`` when it cannot."""
    from edgevision.runtime.images import ImageReadError, decode_image

    try:
        return decode_image(path), None
    except ImageReadError as e:
        return None, str(e)


def iter_sources(source: str, *, vid_stride: int = 1) -> Iterator[Frame]:
    """Yield every image (or every ``vid_stride``-th video frame) of SOURCE in a stable order.

    Raises:
        ConfigError: SOURCE matches nothing, or a video cannot be opened.
    """
    if is_uri(source):
        store = ObjectStore(source)
        for name, path in iter_source_files(source):
            img, error = store.read_image(name)
            yield Frame(name, path, img, error)
        return
    p = Path(source)
    if p.is_dir() or p.is_file() and p.suffix.lower() in LIST_EXTS:
        for name, path in iter_source_files(source):
            img, error = read_image_file(path)
            yield Frame(name, path, img, error)
        return
    files, is_video = source_files(source)
    if not is_video:
        for name, path in files:
            img, error = read_image_file(path)
            yield Frame(name, path, img, error)
        return
    import cv2

    name, path = files[0]
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ConfigError(f"{path}: OpenCV cannot open this video (codec or container not supported by its FFmpeg "
                          "build); convert it to MP4 (H.264) or extract the frames as images")
    try:
        i = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            if i % vid_stride == 0:
                yield Frame(f"{name}#{i:06d}", path, img, None)
            i += 1
    finally:
        cap.release()


def video_frame_count(path: Path) -> int | None:
    """Frames OpenCV reports for a video (may be approximate), None when unknown."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    return n if n > 0 else None


# --------------------------------------------------------------------------- models


@dataclass
class OpenModel:
    """A model ready to predict one decoded image at a time.

    Attributes:
        labels: class names; kind: ``onnx`` or ``pytorch``;
        decision: the model's own thresholds (`edgevision.runtime.metadata.DecisionThresholds`: each class's
            operating point, else the default conf) and where they come from;
        detect: ``detect(frame, conf, iou, max_det)`` -> an `ImageRecord` with scores, boxes in the
            image's pixels, only detections passing ``conf`` (a float, or per-class thresholds).
        describe: one line for the console (file, providers / device).
        batch: images the model runs at once (the ONNX graph's batch axis; 1 for tiles and checkpoints);
        detect_many: ``detect_many(frames, conf, iou, max_det)``: `detect` over readable frames in one batch
            (results equal single calls), None when ``batch`` is 1.
    """

    labels: LabelMap
    kind: str
    decision: DecisionThresholds
    detect: Callable[[Frame, Any, float, int], ImageRecord]
    describe: str
    tiled: bool = False
    batch: int = 1
    detect_many: Callable[[list[Frame], Any, float, int], list[ImageRecord]] | None = None


def open_model(model: Path, *, providers: list[str] | None = None, threads: int | None = None, device: str = "cpu",
               tile: int | None = None, tile_overlap: float = 0.2, full_pass: bool = False) -> OpenModel:
    """Open MODEL for `predict_source` (through `edgevision.models.open_predictor`: an ONNX file on the runtime,
    a run folder / checkpoint on its training backend).

    Args:
        tile: run tiled inference with square slices of this side (0 = the model's input size); None: off.

    Raises:
        ConfigError / ModelFormatError: a missing or unusable model, tiling asked of a PyTorch model.
    """
    from edgevision.models import resolve_model

    ref = resolve_model(model)
    if ref.kind == "onnx":
        return _open_onnx(ref.path, providers, threads, device, tile, tile_overlap, full_pass)
    if tile is not None:
        raise ConfigError(f"{model}: tiled inference runs on ONNX models; export it first (edgevision export)")
    return _open_torch(model, device, threads)


def _open_onnx(model: Path, providers: list[str] | None, threads: int | None, device: str, tile: int | None,
               overlap: float, full_pass: bool) -> OpenModel:
    from edgevision.models import OnnxPredictor

    det = OnnxPredictor(model, device=device, threads=threads, providers=providers).detector

    def detect(frame: Frame, conf: Any, iou: float, max_det: int) -> ImageRecord:
        assert frame.image is not None
        if tile is not None:
            d = det.tiled(frame.image, tile=tile or None, overlap=overlap, full_pass=full_pass, conf=conf, iou=iou,
                          max_det=max_det)
        else:
            d = det(frame.image, conf=conf, iou=iou, max_det=max_det)
        return d.to_record(frame.name, path=frame.path)

    def detect_many(frames: list[Frame], conf: Any, iou: float, max_det: int) -> list[ImageRecord]:
        ds = det.batch([f.image for f in frames], conf=conf, iou=iou, max_det=max_det)
        return [d.to_record(f.name, path=f.path) for d, f in zip(ds, frames)]

    batch = 1 if tile is not None else det.max_batch
    note = det.describe()["note"]  # what was read and assumed for a file EdgeVision did not export
    return OpenModel(LabelMap(list(det.names)), "onnx", det.metadata.decision_thresholds(), detect,
                     f"{model} (ONNX {det.metadata.output.layout}, {det.metadata.precision}; "
                     f"providers {', '.join(det.providers)})" + (f"; {note}" if note else ""),
                     tiled=tile is not None, batch=batch, detect_many=detect_many if batch > 1 else None)


def _open_torch(model: Path, device: str, threads: int | None) -> OpenModel:
    from edgevision.models import open_predictor, operating_points, resolve_model
    from edgevision.runtime.metadata import DEFAULT_CONF

    pred = open_predictor(model, device=device, threads=threads)
    found = operating_points(resolve_model(model))
    names = list(pred.labels.names)
    decision = DecisionThresholds.resolve(
        names, found.classes if found is not None else None, DEFAULT_CONF,
        {n: str(found.rules.get(n, {}).get("text", found.target)) for n in found.classes} if found is not None else None)

    def detect(frame: Frame, conf: Any, iou: float, max_det: int) -> ImageRecord:
        if frame.image is None or "#" in frame.name and frame.path.suffix.lower() in VIDEO_EXTS:
            raise ConfigError(f"{frame.path}: videos are predicted by ONNX models; export the model first "
                              "(edgevision export)")
        h, w = frame.image.shape[:2]
        rec = ImageRecord(name=frame.name, size_hw=(h, w), path=frame.path)
        low = min(conf.values()) if isinstance(conf, dict) else float(conf)
        p = pred.predict([rec], conf=low, max_det=max_det)[0]
        return _apply_thresholds(p, conf, names)

    return OpenModel(LabelMap(names), "pytorch", decision, detect, f"{model} (PyTorch, device {device})")


def _apply_thresholds(rec: ImageRecord, conf: Any, names: list[str]) -> ImageRecord:
    """Keep the detections passing ``conf`` (one number or ``{class: threshold}``)."""
    if not len(rec):
        return rec
    thr = (np.array([float(conf[n]) for n in names]) if isinstance(conf, dict)
           else np.full(len(names), float(conf)))
    assert rec.scores is not None
    return rec.subset(rec.scores >= thr[rec.class_ids])


# --------------------------------------------------------------------------- the loop


@dataclass
class PredictResult:
    """Everything ``edgevision predict`` reports.

    Attributes:
        records: one prediction record per readable input, in input order.
        decisions: ``{name: "reject" | "accept"}``: reject when any detection passes its threshold.
        unreadable: ``[(name, reason)]`` for inputs that could not be decoded or predicted.
        thresholds: ``{class: threshold}`` used; threshold_source: where they came from;
        rules: ``{class: how the model's operating point was chosen}`` (empty when they are not the model's).
    """

    records: list[ImageRecord] = field(default_factory=list)
    decisions: dict[str, str] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_source: str = ""
    rules: dict[str, str] = field(default_factory=dict)

    def class_summary(self, names: list[str]) -> dict[str, dict[str, int]]:
        """Per class: detections and images with at least one."""
        out = {n: {"detections": 0, "images": 0} for n in names}
        for r in self.records:
            if not len(r):
                continue
            ids, counts = np.unique(r.class_ids, return_counts=True)
            for i, c in zip(ids.tolist(), counts.tolist()):
                out[names[i]]["detections"] += int(c)
                out[names[i]]["images"] += 1
        return out


def resolve_thresholds(m: OpenModel, conf: float | None) -> tuple[dict[str, float], str]:
    """Per-class thresholds: ``--conf`` for every class, else the model's own (`OpenModel.decision`)."""
    if conf is not None:
        return {n: float(conf) for n in m.labels.names}, f"--conf {conf:g}"
    return dict(m.decision.classes), m.decision.source


def predict_source(m: OpenModel, frames: Iterator[Frame], *, conf: float | None, iou: float, max_det: int,
                   on_frame: Callable[[Frame, ImageRecord | None], None] | None = None) -> PredictResult:
    """Run ``m`` over ``frames``; unreadable inputs and per-image failures are listed, not fatal.

    Args:
        on_frame: called after each input with the frame and its record (None when unreadable).
    """
    thr, source = resolve_thresholds(m, conf)
    res = PredictResult(thresholds=thr, threshold_source=source,
                        rules=dict(m.decision.rules) if conf is None and m.decision.operating else {})
    pending: list[Frame] = []  # in input order; its readable frames run as one batch (m.batch of them)

    def flush() -> None:
        readable = [f for f in pending if f.error is None]
        recs: dict[int, ImageRecord | str] = {}
        if m.detect_many is not None and len(readable) > 1:
            try:
                recs = {id(f): r for f, r in zip(readable, m.detect_many(readable, thr, iou, max_det))}
            except ConfigError:
                raise
            except EdgeVisionError:  # one bad image (dtype, shape) in the batch: run them one by one to name it
                recs = {}
        for f in readable:
            if id(f) not in recs:
                try:
                    recs[id(f)] = m.detect(f, thr, iou, max_det)
                except ConfigError:
                    raise
                except EdgeVisionError as e:  # a bad image (dtype, shape): list it, keep going
                    recs[id(f)] = str(e)
        for f in pending:
            got = recs.get(id(f), f.error)
            rec = got if isinstance(got, ImageRecord) else None
            if rec is None:
                res.unreadable.append((f.name, str(got)))
            else:
                res.records.append(rec)
                res.decisions[f.name] = "reject" if len(rec) else "accept"
            if on_frame is not None:
                on_frame(f, rec)
        pending.clear()

    for frame in frames:
        pending.append(frame)
        if sum(f.error is None for f in pending) >= m.batch:
            flush()
    flush()
    return res


def draw(image: np.ndarray, rec: ImageRecord, names: list[str]) -> np.ndarray:
    """An 8-bit BGR copy of ``image`` with the record's boxes, class names and scores drawn."""
    import cv2

    img = image
    if img.dtype != np.uint8:
        img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    else:
        img = img.copy()
    h, w = img.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    scale = max(0.4, max(h, w) / 1200)
    assert rec.scores is not None or not len(rec)
    for box, c, s in zip(rec.boxes.tolist(), rec.class_ids.tolist(), (rec.scores if rec.scores is not None else [])):
        color = _color(int(c))
        x1, y1, x2, y2 = (round(v) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        label = f"{names[int(c)]} {float(s):.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(h - 1, y2 + th + 2)
        cv2.rectangle(img, (x1, ty - th - base), (x1 + tw, ty + base // 2), color, -1)
        cv2.putText(img, label, (x1, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    return img


_PALETTE = ((56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
            (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203))


def _color(c: int) -> tuple[int, int, int]:
    return _PALETTE[c % len(_PALETTE)]
