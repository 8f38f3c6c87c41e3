"""`Detector`: an ONNX model written by ``edgevision export``, run with onnxruntime, numpy and OpenCV only.

The model's ``edgevision`` metadata (`ModelMetadata`) says how to build the input tensor and how to
read the outputs (for a foreign file, an Ultralytics export without it, `edgevision.runtime.foreign`
derives the same document from Ultralytics' metadata and the graph); ``deploy/PROCESSING.md`` is the same contract in language-neutral terms. A
`Detector` holds no mutable state after construction: one instance may serve several threads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edgevision.core.dataset import ImageRecord
from edgevision.core.errors import UnknownNameError
from edgevision.runtime.images import ImageInput, ImageReadError, decode_image, to_uint8
from edgevision.runtime.metadata import METADATA_KEY, ModelFormatError, ModelMetadata
from edgevision.runtime.postprocess import Decoded, Query, decode
from edgevision.runtime.preprocess import Preprocessor, Transform
from edgevision.runtime.providers import provider_entries, resolve_providers, session_options
from edgevision.runtime.tiling import merge_detections, slice_windows, truncated

__all__ = ["Detections", "Detector", "ImageReadError", "Transform", "read_metadata"]

log = logging.getLogger("edgevision.runtime")

MAX_BATCH = 16
"""Most images per ``session.run`` in `Detector.batch` / `Detector.tiled` with a dynamic batch axis."""

NMS_INPUTS = ("score_threshold", "iou_threshold", "max_detections")
"""The overridable inputs of the ``nms-in-graph`` layout."""

_N_OUTPUTS = {"yolo-raw": 1, "yolo-end2end": 1, "torchvision-postnms": 3, "nms-in-graph": 4}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32}


@dataclass
class Detections:
    """The detections of one image.

    Attributes:
        xyxy: ``(N, 4)`` float32 boxes in original image pixels, clipped to the image.
        scores: ``(N,)`` float32, descending.
        class_ids: ``(N,)`` int64.
        names: all class names of the model (index = class id).
        image_size: ``(h, w)`` of the original image.
    """

    xyxy: NDArray[np.float32]
    scores: NDArray[np.float32]
    class_ids: NDArray[np.int64]
    names: list[str]
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def class_names(self) -> list[str]:
        """The class name of each detection."""
        return [self.names[int(c)] for c in self.class_ids]

    def to_record(self, name: str, path: Path | str | None = None, split: str | None = None) -> ImageRecord:
        """The detections as an `ImageRecord` (predictions: ``scores`` set)."""
        return ImageRecord(name=name, size_hw=self.image_size, boxes=self.xyxy.astype(np.float64),
                           class_ids=self.class_ids, path=None if path is None else Path(path),
                           scores=self.scores, split=split)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"image_size": [h, w], "detections": [{"class_id", "class", "score", "xyxy"}, ...]}``."""
        return {
            "image_size": [int(self.image_size[0]), int(self.image_size[1])],
            "detections": [
                {"class_id": int(c), "class": self.names[int(c)], "score": float(s),
                 "xyxy": [float(v) for v in b]}
                for b, s, c in zip(self.xyxy, self.scores, self.class_ids)
            ],
        }


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _precision_of(path: Path) -> str | None:
    """The ``precision`` the file's EdgeVision metadata records, read from its bytes before a session exists
    (TensorRT's FP16 switch depends on it); None when unknown."""
    import json

    from edgevision.runtime.props import ProtoError, metadata_props

    try:
        doc = json.loads(metadata_props(path.read_bytes()).get(METADATA_KEY, "{}"))
    except (OSError, ValueError, ProtoError):
        return None
    return str(doc.get("precision")) if isinstance(doc, dict) and doc.get("precision") else None


def _open_session(path: Path, providers: list[str], threads: int | None) -> ort.InferenceSession:
    if not path.exists():
        raise ModelFormatError(f"{path}: model file not found; check the path (export one with `edgevision export`)")
    if not path.is_file():
        raise ModelFormatError(f"{path}: is not a file; give the .onnx file written by `edgevision export`")
    if path.stat().st_size == 0:
        raise ModelFormatError(f"{path}: model file is empty (0 bytes); re-export it with `edgevision export`")
    entries = provider_entries(providers, path, _precision_of(path)) if "TensorrtExecutionProvider" in providers \
        else providers
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=entries)
    except Exception as e:  # onnxruntime raises several types (InvalidProtobuf, Fail, RuntimeError...)
        raise ModelFormatError(f"{path}: not an ONNX model onnxruntime can load ({_one_line(e)}); "
                               "re-export it with `edgevision export`") from None


def _metadata_of(session: ort.InferenceSession, path: Path) -> ModelMetadata:
    """The EdgeVision metadata, or for a file without it (an Ultralytics export, `edgevision.runtime.foreign`)
    the same document read from the exporter's metadata and the graph, with its assumptions in ``source``."""
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY in props:
        return ModelMetadata.from_json(props[METADATA_KEY], where=str(path))
    from edgevision.runtime.foreign import GraphInfo, foreign_metadata, origin_note

    meta = foreign_metadata(props, GraphInfo.of(session), str(path))
    log.info("%s: %s", path, origin_note(meta))
    return meta


def read_metadata(path: Path | str) -> ModelMetadata:
    """Read only the EdgeVision metadata of an ONNX model (through onnxruntime); a foreign file's (an Ultralytics
    export without EdgeVision's metadata) is derived as `edgevision.runtime.foreign.foreign_metadata` says.

    Raises:
        ModelFormatError: missing / empty / non-ONNX file, no usable metadata, unknown schema version, task or
            layout.
    """
    p = Path(path)
    return _metadata_of(_open_session(p, ["CPUExecutionProvider"], 1), p)


_WARNED: set[str] = set()


def _warn_target(meta: ModelMetadata, providers: list[str], path: Path) -> None:
    """Warn once per process and reason when an INT8 model was quantized for another kind of box."""
    target = (meta.quantization or {}).get("target") if meta.precision == "int8" else None
    if not target:
        return
    from edgevision.runtime.targets import target_mismatch

    why = target_mismatch(str(target), providers)
    if why and why not in _WARNED:
        _WARNED.add(why)
        log.warning("%s: %s", path, why)


def _rank_dims(arg: Any) -> list[Any]:
    shape = arg.shape
    return list(shape) if shape is not None else []


class Detector:
    """Run an EdgeVision ONNX model on images.

    Args:
        path: the ``.onnx`` file (written by ``edgevision export`` or ``edgevision adopt``, or exported by
            Ultralytics: see `edgevision.runtime.foreign`).
        providers: onnxruntime execution providers in order of preference, or None for the best available
            of TensorRT, CUDA, OpenVINO, then CPU.
        threads: intra-op threads (None: onnxruntime's default, all cores).

    Attributes:
        metadata: the model's `ModelMetadata`; names: class names; providers: those the session uses;
        path: the model file; dynamic_batch: the graph's batch axis is symbolic.

    Raises:
        ModelFormatError: unusable model file, or a graph whose inputs / outputs contradict the metadata.
        ConfigError: an unknown execution provider or bad thread count.
    """

    def __init__(self, path: Path | str, providers: Sequence[str] | str | None = None,
                 threads: int | None = None) -> None:
        self.path = Path(path)
        chosen = resolve_providers(providers)
        self.session = _open_session(self.path, chosen, threads)
        self.metadata = _metadata_of(self.session, self.path)
        self._decision = self.metadata.decision_thresholds().classes  # the operating points, else defaults.conf
        self.names = list(self.metadata.names)
        self.providers = list(self.session.get_providers())
        dropped = [p for p in chosen if p not in self.providers]
        self.fallback: str | None = None
        """One line when a requested provider could not be used (its libraries missing, the device absent), else
        None: onnxruntime drops such a provider with only its own log line; EdgeVision says it once, here."""
        if dropped:
            self.fallback = (f"execution provider(s) {', '.join(p.removesuffix('ExecutionProvider') for p in dropped)}"
                             f" could not be used on this machine; running on "
                             f"{', '.join(p.removesuffix('ExecutionProvider') for p in self.providers)}")
            log.warning("%s: %s", self.path, self.fallback)
        self._batch_dim, self._nms_feeds = self._check_graph()
        self.dynamic_batch = self._batch_dim is None
        self._pre = Preprocessor(self.metadata.input)
        self._outputs = list(self.metadata.output.names)
        _warn_target(self.metadata, self.providers, self.path)
        _warn_degenerate(self.metadata, self.path)
        log.info("%s: %s model, %d classes, input %dx%d, providers %s", self.path, self.metadata.output.layout,
                 len(self.names), *self.metadata.input.size_hw, ", ".join(self.providers))

    def describe(self) -> dict[str, Any]:
        """What the runtime does with this model: ``origin`` (``edgevision``, ``foreign``: an Ultralytics file read
        without EdgeVision metadata, or ``adopted``), ``note`` (what was read and assumed, for files EdgeVision did
        not export; else None), ``layout``, ``classes``, ``input`` (shape and dtype), ``preprocess``, ``precision``,
        ``providers``."""
        from edgevision.runtime.foreign import origin_note, preprocess_text

        m = self.metadata
        h, w = m.input.size_hw
        return {"path": str(self.path), "origin": str(m.source.get("origin", "edgevision")), "note": origin_note(m),
                "layout": m.output.layout, "classes": len(self.names),
                "input": f"{m.input.name} ({'B' if self.dynamic_batch else self._batch_dim}, 3, {h}, {w}) {m.input.dtype}",
                "preprocess": preprocess_text(m.input), "precision": m.precision, "providers": list(self.providers),
                "fallback": self.fallback}

    @property
    def operating_rules(self) -> dict[str, str] | None:
        """How each class's operating point was chosen (`ModelMetadata.class_rules`), or None without any."""
        return self.metadata.class_rules()

    # ------------------------------------------------------------------ checks

    def _bad(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path}: {what}; the file does not match its EdgeVision metadata "
                                "(re-export it with `edgevision export`)")

    def _check_graph(self) -> tuple[int | None, dict[str, tuple[type, list[Any]]]]:
        """Check inputs and outputs against the metadata; return the fixed batch size (None: dynamic) and
        the nms-in-graph threshold inputs present (name -> (dtype, shape))."""
        meta = self.metadata
        inputs = {i.name: i for i in self.session.get_inputs()}
        spec = meta.input
        if spec.name not in inputs:
            raise self._bad(f"input '{spec.name}' not in the graph (inputs: {', '.join(inputs)})")
        arg = inputs[spec.name]
        dims = _rank_dims(arg)
        want_type = "tensor(float16)" if spec.dtype == "float16" else "tensor(float)"
        if arg.type != want_type:
            raise self._bad(f"input '{spec.name}' is {arg.type}, metadata says {spec.dtype}")
        if len(dims) != 4 or dims[1] not in (3, None) and not isinstance(dims[1], str):
            raise self._bad(f"input '{spec.name}' has shape {dims}; expected (B, 3, H, W)")
        for got, want, axis in ((dims[2], spec.size_hw[0], "height"), (dims[3], spec.size_hw[1], "width")):
            if isinstance(got, int) and got != want:
                raise self._bad(f"input {axis} is {got}, metadata says {want}")
        batch_dim = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        feeds: dict[str, tuple[type, list[Any]]] = {}
        overridable = {i.name: i for i in self.session.get_overridable_initializers()}
        for name in NMS_INPUTS:
            a = inputs.get(name) or overridable.get(name)
            if a is not None and meta.output.layout == "nms-in-graph":
                feeds[name] = (_ORT_TYPES.get(a.type, np.float32), _rank_dims(a))
        extra = [n for n in inputs if n != spec.name and n not in feeds]
        if extra:
            raise self._bad(f"graph has inputs {extra} besides '{spec.name}'")
        self._check_outputs()
        return batch_dim, feeds

    def _check_outputs(self) -> None:
        meta = self.metadata
        layout, nc = meta.output.layout, len(meta.names)
        outs = {o.name: o for o in self.session.get_outputs()}
        names = list(meta.output.names)
        if len(names) != _N_OUTPUTS[layout]:
            raise self._bad(f"layout {layout} has {_N_OUTPUTS[layout]} output(s), metadata names {len(names)}")
        missing = [n for n in names if n not in outs]
        if missing:
            raise self._bad(f"output(s) {missing} not in the graph (outputs: {', '.join(outs)})")
        dims = [_rank_dims(outs[n]) for n in names]

        def fixed(d: Any, want: int) -> bool:
            return not isinstance(d, int) or d == want

        if layout == "yolo-raw":
            ok = len(dims[0]) == 3 and fixed(dims[0][1], 4 + nc)
            expect = f"(B, {4 + nc}, N) for {nc} classes"
        elif layout == "yolo-end2end":
            ok = len(dims[0]) == 3 and fixed(dims[0][2], 6)
            expect = "(B, K, 6)"
        elif layout == "torchvision-postnms":
            ok = len(dims[0]) == 2 and fixed(dims[0][1], 4) and len(dims[1]) == 1 and len(dims[2]) == 1
            expect = "boxes (K, 4), labels (K,), scores (K,)"
        else:
            ok = len(dims[0]) == 2 and fixed(dims[0][1], 4) and all(len(d) == 1 for d in dims[1:])
            expect = "boxes (K, 4), scores (K,), class_ids (K,), batch_index (K,)"
        if not ok:
            raise self._bad(f"{layout} outputs have shapes {dims}; expected {expect}")

    # ------------------------------------------------------------------ knobs

    def _query(self, conf: float | dict[str, float] | None, iou: float | None, max_det: int | None,
               classes: Sequence[int | str] | None) -> Query:
        nc = len(self.names)
        if isinstance(conf, dict) or conf is None:
            thr = np.array([self._decision[n] for n in self.names], np.float32)
            for name, value in (conf or {}).items():
                if name not in self.names:
                    raise UnknownNameError("class", str(name), self.names)
                thr[self.names.index(name)] = float(value)
        else:
            thr = np.full(nc, float(conf), np.float32)
        cls_ids = None
        if classes is not None:
            ids = []
            for c in classes:
                if isinstance(c, str):
                    if c not in self.names:
                        raise UnknownNameError("class", c, self.names)
                    ids.append(self.names.index(c))
                else:
                    ids.append(int(c))
            cls_ids = np.asarray(ids, np.int64)
        d = self.metadata.defaults
        return Query(thr, float(d.get("iou", 0.7) if iou is None else iou),
                     int(d.get("max_det", 300) if max_det is None else max_det), cls_ids)

    # ------------------------------------------------------------------ pipeline

    def _load(self, image: ImageInput) -> NDArray[np.uint8]:
        return to_uint8(decode_image(image), self.metadata.input.uint16)

    def preprocess(self, image: ImageInput) -> tuple[NDArray[np.floating], Transform]:
        """The ``(1, 3, H, W)`` input tensor of one image and the `Transform` mapping boxes back."""
        return self._pre(self._load(image))

    def run(self, tensor: NDArray[np.floating]) -> list[np.ndarray]:
        """The bare ``session.run`` on an input tensor: the graph outputs in the metadata's order."""
        return self._run(tensor, None)

    def _run(self, tensor: NDArray[np.floating], q: Query | None) -> list[np.ndarray]:
        feeds: dict[str, Any] = {self.metadata.input.name: tensor}
        if q is not None:
            values = {"score_threshold": q.min_conf, "iou_threshold": q.iou, "max_detections": q.max_det}
            for name, (dtype, shape) in self._nms_feeds.items():
                feeds[name] = np.full([int(d) if isinstance(d, int) else 1 for d in shape], values[name], dtype)
        return self.session.run(self._outputs, feeds)

    def _chunk(self) -> int:
        return MAX_BATCH if self._batch_dim is None else self._batch_dim

    @property
    def max_batch(self) -> int:
        """Images per ``session.run`` in `batch`: the graph's fixed batch size, `MAX_BATCH` when it is dynamic,
        1 for layouts decoded one image at a time."""
        return 1 if self.metadata.output.layout == "torchvision-postnms" else self._chunk()

    def _infer(self, images: Sequence[NDArray[np.uint8]], q: Query) -> list[tuple[Decoded, Transform]]:
        """Pre-process, run (batched as the graph allows) and decode 8-bit images; boxes in tensor pixels."""
        hh, ww = self._pre.size_hw
        chunk = self._chunk()
        if self.metadata.output.layout == "torchvision-postnms":
            chunk = 1
        res: list[tuple[Decoded, Transform]] = []
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            n = len(part) if self._batch_dim is None or chunk == 1 else chunk
            tensor = np.empty((n, 3, hh, ww), self._pre.dtype)
            tfs = [self._pre(img, out=tensor[i])[1] for i, img in enumerate(part)]
            for i in range(len(part), n):  # a fixed batch larger than what is left: repeat the last image
                tensor[i] = tensor[len(part) - 1]
            outs = self._run(tensor, q)
            dec = decode(self.metadata.output.layout, outs, len(self.names), n, q)
            res.extend(zip(dec[:len(part)], tfs))
        return res

    def _detections(self, dec: Decoded, tf: Transform) -> Detections:
        xyxy, scores, cls = dec
        return Detections(tf.to_original(xyxy), scores.astype(np.float32), cls.astype(np.int64), self.names,
                          tf.orig_hw)

    def __call__(self, image: ImageInput, *, conf: float | dict[str, float] | None = None, iou: float | None = None,
                 max_det: int | None = None, classes: Sequence[int | str] | None = None) -> Detections:
        """Detect objects in one image.

        Args:
            image: a path, encoded bytes, or an array in OpenCV convention ((H, W) grey, (H, W, 1),
                (H, W, 3) BGR, (H, W, 4) BGRA; uint8 or uint16).
            conf: one threshold for all classes, ``{class name: threshold}`` (other classes: the operating
                point, else ``defaults.conf``), or None (the model's operating points, else ``defaults.conf``).
                A detection passes at ``score >= threshold``.
            iou: NMS IoU threshold (None: ``defaults.iou``); max_det: cap (None: ``defaults.max_det``);
            classes: class ids or names to keep (None: all).

        Raises:
            ImageReadError: unreadable image, wrong dtype or shape.
        """
        q = self._query(conf, iou, max_det, classes)
        (dec, tf), = self._infer([self._load(image)], q)
        return self._detections(dec, tf)

    def batch(self, images: Sequence[ImageInput], **same: Any) -> list[Detections]:
        """Detect in several images (one ``session.run`` per up to 16 when the batch axis is dynamic).

        Keyword arguments are those of `__call__`, applied to every image; results equal single calls.
        """
        q = self._query(same.get("conf"), same.get("iou"), same.get("max_det"), same.get("classes"))
        loaded = [self._load(im) for im in images]
        return [self._detections(d, tf) for d, tf in self._infer(loaded, q)]

    def tiled(self, image: ImageInput, *, tile: int | tuple[int, int] | None = None, overlap: float = 0.2,
              full_pass: bool = False, **same: Any) -> Detections:
        """Detect small objects in a large image through overlapping slices.

        Args:
            tile: slice side (int) or (h, w); None: the model's input size.
            overlap: fraction of a slice shared with its neighbour, in [0, 0.9].
            full_pass: also run the whole image (letterboxed) to find objects larger than a slice.
            same: the keyword arguments of `__call__`.

        Slices cover the whole image (the last ones flush with the far edges) and are batched when the
        batch axis is dynamic. Detections are merged class by class: boxes not cut by an inner slice edge
        first, then by score; a box covered by a kept one at intersection-over-smaller-area >= 0.5, or
        overlapping it at IoU > iou, is dropped, so an object on a slice border is reported once.
        """
        from edgevision.core.errors import ConfigError

        q = self._query(same.get("conf"), same.get("iou"), same.get("max_det"), same.get("classes"))
        if not 0.0 <= float(overlap) <= 0.9:
            raise ConfigError(f"tile overlap must be in [0, 0.9], got {overlap}")
        img = self._load(image)
        h, w = img.shape[:2]
        tile_hw = self._pre.size_hw if tile is None else (tile, tile) if isinstance(tile, int) else tuple(tile)
        if min(tile_hw) < 1:
            raise ConfigError(f"tile size must be positive, got {tile}")
        windows = slice_windows(h, w, (int(tile_hw[0]), int(tile_hw[1])), float(overlap))
        crops = [img[y0:y1, x0:x1] for x0, y0, x1, y1 in windows]
        boxes, scores, cls, trunc = [], [], [], []
        for (dec, tf), win in zip(self._infer(crops, q), windows):
            b = Transform(tf.orig_hw, tf.input_hw, tf.gain_xy, tf.pad_xy, (win[0], win[1])).to_original(dec[0])
            boxes.append(b)
            scores.append(dec[1])
            cls.append(dec[2])
            trunc.append(truncated(b, win, h, w))
        if full_pass and len(windows) > 1:
            (dec, tf), = self._infer([img], q)
            boxes.append(tf.to_original(dec[0]))
            scores.append(dec[1])
            cls.append(dec[2])
            trunc.append(np.zeros(len(dec[1]), bool))
        xyxy, sc, ci = np.concatenate(boxes), np.concatenate(scores), np.concatenate(cls)
        keep, merged = merge_detections(xyxy, sc, ci, np.concatenate(trunc), q.iou, q.max_det)
        o = np.argsort(-sc[keep], kind="stable")
        keep, merged = keep[o], merged[o]
        return Detections(merged, sc[keep].astype(np.float32), ci[keep].astype(np.int64), self.names, (h, w))


DEGENERATE_BELOW = 0.05
"""Operating points under this are flagged when a model is opened (EdgeVision never chooses them since
thresholds/2; older files could carry 0.001 for a class whose recall target was out of reach)."""


def _warn_degenerate(meta: ModelMetadata, path: Path) -> None:
    """One warning when the model's operating points would pass a nano detector's noise."""
    thr = meta.class_thresholds() or {}
    chosen_floor = ((meta.thresholds or {}).get("rule") or {}).get("min_threshold")
    # a user who lowered min_threshold on purpose chose those thresholds: only unrecorded low ones are flagged
    floor = DEGENERATE_BELOW if chosen_floor is None else min(DEGENERATE_BELOW, float(chosen_floor))
    low = {n: t for n, t in thr.items() if t < floor}
    if low:
        log.warning("%s: operating points %s are below %g (chosen as the lowest score seen by an older EdgeVision): "
                    "nearly every image will be rejected; re-choose them (edgevision eval MODEL --data D --target "
                    "recall=0.9 --save-thresholds t.json; edgevision export RUN --thresholds t.json) or pass --conf",
                    path, ", ".join(f"{n} {t:.3g}" for n, t in low.items()), DEGENERATE_BELOW)
