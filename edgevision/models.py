"""One place opens a model, for every command that takes one, and matches a dataset split to it.

What a user may pass as MODEL: a run folder (its ``weights/best.pt``, else ``last.pt``), an Ultralytics ``.pt``,
a torchvision checkpoint written by EdgeVision, an ONNX file written by ``edgevision export`` / ``edgevision
adopt``, or an ONNX file exported by Ultralytics (`edgevision.runtime.foreign`).

* `resolve_model` says what MODEL is (`ModelRef`: the file, ``onnx`` / ``pytorch``, the run folder) without
  loading anything;
* `open_predictor` opens it behind the `Predictor` protocol: ONNX files through the torch-free
  `edgevision.runtime.Detector` (`OnnxPredictor`), checkpoints through their training backend (torch,
  imported only then);
* `model_info` reads the class names, kind, precision and operating points without running the model;
* `predict_records` runs a predictor over records in chunks, with progress;
* `split_for_model` selects a dataset split, checks its images exist, and returns its ground truth with class
  ids in the model's order (the same classes in another order are remapped; other classes are refused).

The decision rule (each class's operating point, else ``defaults.conf``) lives in the metadata:
`edgevision.runtime.metadata.ModelMetadata.decision_thresholds`. Imports go one way: this module uses the
runtime, never the reverse, and nothing here imports torch at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from edgevision.core.dataset import Dataset
    from edgevision.evaluate.operating import OperatingPoints
    from edgevision.train.run import RunPaths

__all__ = ["CHECKPOINT_SUFFIXES", "LOW_CONF", "ModelInfo", "ModelRef", "OnnxPredictor", "Predictor", "model_info", "open_predictor", "operating_points",
           "in_model_order", "predict_records", "resolve_model", "split_for_model"]

LOW_CONF = 0.001
"""The confidence models are scored at (the whole precision / recall curve), in eval, bench, quantize and
reliability alike."""

CHECKPOINT_SUFFIXES = (".pt", ".pth")


class Predictor(Protocol):
    """A trained detector.

    Attributes:
        labels: the model's class names in its own id order.
    """

    labels: LabelMap

    def predict(self, records: Sequence[ImageRecord], *, conf: float = 0.001, max_det: int = 100) -> list[ImageRecord]:
        """Detect objects in each record's image file (``record.path``).

        Returns:
            One record per input, same ``name``/``size_hw``/``split``, boxes xyxy in the original
            image's pixels, ``class_ids`` in the model's label map, ``scores`` set; at most
            ``max_det`` boxes per image, scores >= ``conf``.
        """
        ...


@dataclass(frozen=True)
class ModelRef:
    """What a MODEL argument names.

    Attributes:
        path: the file to load (``RUN/weights/best.pt`` for a run folder); kind: ``onnx`` or ``pytorch``;
        run: the run folder it belongs to (MODEL itself, or ``RUN`` for ``RUN/weights/X.pt``), else None.
    """

    path: Path
    kind: Literal["onnx", "pytorch"]
    run: RunPaths | None = None


def resolve_model(model: Path | str) -> ModelRef:
    """What ``model`` is, without loading it.

    Raises:
        ConfigError: nothing at ``model``, a run folder without weights, a file that is neither ``.onnx`` nor a
            ``.pt`` / ``.pth`` checkpoint.
    """
    from edgevision.train.run import RunPaths

    path = Path(model)
    run: RunPaths | None = None
    if path.is_dir():
        run = RunPaths(path)
        path = run.best if run.best.is_file() else run.last
        if not path.is_file():
            raise ConfigError(f"{model}: run folder without weights (no weights/best.pt or weights/last.pt); "
                              "train it first (edgevision train) or give a .pt or .onnx file")
    elif not path.is_file():
        raise ConfigError(f"{model}: model not found; give a run folder, a .pt checkpoint or an .onnx file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return ModelRef(path, "onnx")
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ConfigError(f"{model}: expected a run folder, a .pt checkpoint or an .onnx file, got "
                          f"'{path.suffix or path.name}'")
    if run is None:
        parent = path.resolve().parent
        if parent.name == "weights" and (parent.parent / "config.yaml").is_file():
            run = RunPaths(parent.parent)
    return ModelRef(path, "pytorch", run)


def open_predictor(model: Path | str, *, device: str = "cpu", imgsz: int | None = None, threads: int | None = None,
                   providers: list[str] | None = None) -> Predictor:
    """Open ``model`` (see the module doc) for prediction.

    Args:
        device: ``cpu`` or a GPU index (checkpoints; an ONNX file on ``cpu`` runs on onnxruntime's CPU provider);
        imgsz: inference size (None: the model's); threads: CPU threads (None: all cores);
        providers: onnxruntime execution providers for an ONNX file (None: from ``device``).

    Raises:
        ConfigError: a missing file, an unsupported kind, ``providers`` for a checkpoint, a checkpoint neither
            backend can load; ModelFormatError: an ONNX file the runtime cannot use.
    """
    ref = resolve_model(model)
    if ref.kind == "onnx":
        return OnnxPredictor(ref.path, device=device, imgsz=imgsz, threads=threads, providers=providers)
    if providers:
        raise ConfigError("--providers applies to ONNX models; use --device for a run folder or .pt")
    from edgevision.train.torchvision_backend import TorchvisionPredictor, is_torchvision_checkpoint

    if is_torchvision_checkpoint(ref.path):
        return TorchvisionPredictor.load(ref.path, device=device, imgsz=imgsz)
    from edgevision.train.libreyolo_backend import LibreYOLOPredictor, is_libreyolo_checkpoint

    if is_libreyolo_checkpoint(ref.path):
        return LibreYOLOPredictor(ref.path, device=device, imgsz=imgsz, threads=threads)
    from edgevision.train.ultralytics_backend import UltralyticsPredictor

    return UltralyticsPredictor(ref.path, device=device, imgsz=imgsz, threads=threads)


class OnnxPredictor:
    """An ONNX model run by `edgevision.runtime.Detector`, behind the `Predictor` protocol.

    Attributes:
        labels: the model's class names; detector: the runtime detector; iou: NMS IoU (the model's
            ``defaults.iou``, 0.7 unless it says otherwise).
    """

    def __init__(self, path: Path, *, device: str = "cpu", imgsz: int | None = None, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        from edgevision.runtime import Detector

        if providers is None and device == "cpu":
            providers = ["CPUExecutionProvider"]
        self.detector = Detector(path, providers=providers, threads=threads)
        size = self.detector.metadata.input.size_hw
        if imgsz is not None and (imgsz, imgsz) != tuple(size):
            raise ConfigError(f"{path}: the ONNX model takes {size[1]}x{size[0]} inputs, not --imgsz {imgsz}; "
                              f"export it again with --imgsz {imgsz} or drop --imgsz")
        self.labels = LabelMap(list(self.detector.names))
        self.iou = float(self.detector.metadata.defaults.get("iou", 0.7))

    def predict(self, records: Sequence[ImageRecord], *, conf: float = 0.001, max_det: int = 100) -> list[ImageRecord]:
        """Detect objects in each record's image file (see `Predictor.predict`)."""
        from edgevision.core.errors import EdgeVisionError

        out = []
        for r in records:
            if r.path is None or not Path(r.path).is_file():
                raise EdgeVisionError(f"{r.name}: image file not found ({r.path})")
            d = self.detector(r.path, conf=conf, iou=self.iou, max_det=max_det)
            out.append(d.to_record(r.name, path=r.path, split=r.split))
        return out


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, read without running it.

    Attributes:
        names: class names in the model's order; kind: ``onnx`` / ``pytorch``; precision: ``fp32`` / ``int8`` /
            ... for ONNX files, None for checkpoints; operating: its operating points (`OperatingPoints`) or None.
    """

    names: list[str]
    kind: str
    precision: str | None
    operating: OperatingPoints | None


def operating_points(model: Path | str | ModelRef) -> OperatingPoints | None:
    """The operating points ``model`` carries, or None: an ONNX file's metadata ``thresholds``, else the run's
    ``thresholds.json`` (a run folder, or ``RUN/weights/X.pt``).

    Raises:
        ConfigError: a missing model, or a thresholds document that is not valid operating points.
    """
    from edgevision.evaluate.operating import OperatingPoints

    if not isinstance(model, ModelRef) and Path(model).is_dir():  # a run folder's, with or without its weights
        from edgevision.train.run import RunPaths

        thr = RunPaths(Path(model)).thresholds
        return OperatingPoints.load(thr) if thr.is_file() else None
    ref = model if isinstance(model, ModelRef) else resolve_model(model)
    if ref.kind == "onnx":
        from edgevision.runtime import read_metadata

        meta = read_metadata(ref.path)
        return OperatingPoints.from_dict(meta.thresholds, where=f"{ref.path}: metadata thresholds") \
            if meta.thresholds else None
    thr = ref.run.thresholds if ref.run is not None else None
    return OperatingPoints.load(thr) if thr is not None and thr.is_file() else None


def model_info(model: Path | str, *, device: str = "cpu") -> ModelInfo:
    """`ModelInfo` of ``model``: from the ONNX metadata (no inference session runs an image), or by loading the
    checkpoint (its names) and its run's ``thresholds.json``.

    Raises:
        ConfigError / ModelFormatError: as `open_predictor`, or an invalid operating-points document.
    """
    ref = resolve_model(model)
    if ref.kind == "onnx":
        from edgevision.runtime import read_metadata

        meta = read_metadata(ref.path)
        return ModelInfo(list(meta.names), "onnx", meta.precision, operating_points(ref))
    names = list(open_predictor(ref.path, device=device).labels.names)
    return ModelInfo(names, "pytorch", None, operating_points(ref))


def predict_records(predictor: Predictor, records: Sequence[ImageRecord], *, conf: float = LOW_CONF,
                    max_det: int = 100, chunk: int = 16,
                    progress: Callable[[int, int], None] | None = None) -> list[ImageRecord]:
    """``predictor`` over ``records`` in chunks of ``chunk``; ``progress(done, total)`` after each chunk."""
    out: list[ImageRecord] = []
    for i in range(0, len(records), chunk):
        out.extend(predictor.predict(records[i:i + chunk], conf=conf, max_det=max_det))
        if progress is not None:
            progress(len(out), len(records))
    return out


def split_for_model(ds: Dataset, split: str, data: Path | str, model_names: Sequence[str] | None = None, *,
                    model: Path | str | None = None, purpose: str = "evaluate", hint: str = "",
                    need_images: bool = True, allow_all: bool = True) -> list[ImageRecord]:
    """The records of ``split`` of ``ds``, checked, with class ids in the model's order.

    Args:
        split: a split name or alias (``val`` / ``valid`` / ...), or ``all`` for every record.
        data: the dataset's path (messages); model / model_names: the model (messages) and its classes in its
            own order (None: the dataset's order is kept);
        purpose: the verb in messages (``evaluate``, ``benchmark``, ``judge the INT8 model on``);
        hint: extra advice appended to the missing-split and missing-images errors (e.g. ``--no-eval``);
        need_images: check that every record's image file exists (False: scoring a predictions file);
        allow_all: whether ``--split all`` is worth suggesting (not for a command that refuses it).

    Raises:
        DatasetError: no such split (the splits present are named), an empty split, or image files missing;
        ConfigError: the model's classes are not the dataset's (the same set in another order is remapped).
    """
    from edgevision.core.dataset import SPLIT_ALIASES

    if split == "all":
        recs = list(ds.images)
    else:
        name = SPLIT_ALIASES.get(split.lower(), split)
        recs = ds.split(name)
        if not recs:
            present = ", ".join(ds.splits) or "none: the dataset is unsplit"
            raise DatasetError(f"--split {split}: {data} has no split '{split}' to {purpose} (splits present: "
                               f"{present}); run `edgevision split`{', or pass --split all' if allow_all else ''}{hint}")
    if not recs:
        raise DatasetError(f"{data}: no images to {purpose}")
    missing = [r.name for r in recs if r.path is None or not Path(r.path).is_file()] if need_images else []
    if missing:
        raise DatasetError(f"{data}: {len(missing)} image file(s) of the '{split}' split are missing (first: "
                           f"{missing[0]}); a model needs the images{hint}")
    if model_names is None:
        return recs
    return in_model_order(recs, list(ds.labels.names), list(model_names), model=model, data=data)


def in_model_order(recs: list[ImageRecord], ds_names: list[str], model_names: list[str], *,
                   model: Path | str | None, data: Path | str) -> list[ImageRecord]:
    """``recs`` (class ids in ``ds_names``' order) with class ids in ``model_names``' order.

    Raises:
        ConfigError: the two class sets differ.
    """
    import numpy as np

    if sorted(model_names) != sorted(ds_names):
        raise ConfigError(f"{model}: the model's classes {model_names} differ from {data}'s {ds_names}; remap the "
                          "dataset (edgevision remap) or use a model trained on these classes")
    perm = np.array([model_names.index(n) for n in ds_names], dtype=np.int64)
    if np.array_equal(perm, np.arange(len(perm))):
        return recs
    return [replace(r, class_ids=perm[r.class_ids]) for r in recs]
