"""One prediction interface for every model kind: the evaluator and the CLI never see a backend.

`load_predictor` opens a run folder, an Ultralytics ``.pt``, a torchvision checkpoint written by
EdgeVision, or an ONNX file written by ``edgevision export`` (through the torch-free
`edgevision.runtime.Detector`) and returns a `Predictor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from edgevision.core.dataset import ImageRecord, LabelMap

__all__ = ["OnnxPredictor", "Predictor", "load_predictor"]


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


def load_predictor(model: Path | str, *, device: str = "cpu", imgsz: int | None = None,
                   threads: int | None = None) -> Predictor:
    """Open a trained model for prediction.

    Args:
        model: a run folder (its ``weights/best.pt``, else ``last.pt``), a torchvision checkpoint written
            by EdgeVision, an Ultralytics ``.pt``, or an ``.onnx`` file written by ``edgevision export``.
        device: ``cpu`` or a GPU index; imgsz: inference size (None: the training size);
        threads: torch CPU threads (None: all cores).

    Raises:
        ConfigError: a missing file, an unsupported kind or a checkpoint neither backend can load;
        ModelFormatError: an ONNX file the runtime cannot use.
    """
    from edgevision.core.errors import ConfigError

    path = Path(model)
    if path.is_dir():
        from edgevision.train.run import RunPaths

        run = RunPaths(path)
        path = run.best if run.best.is_file() else run.last
        if not path.is_file():
            raise ConfigError(f"{model}: run folder without weights (no weights/best.pt or weights/last.pt)")
    if not path.is_file():
        raise ConfigError(f"{model}: model file not found")
    if path.suffix.lower() == ".onnx":
        return OnnxPredictor(path, device=device, imgsz=imgsz, threads=threads)
    if path.suffix.lower() not in (".pt", ".pth"):
        raise ConfigError(f"{model}: expected a run folder or a .pt checkpoint, got '{path.suffix}'")
    from edgevision.train.torchvision_backend import TorchvisionPredictor, is_torchvision_checkpoint

    if is_torchvision_checkpoint(path):
        return TorchvisionPredictor.load(path, device=device, imgsz=imgsz)
    from edgevision.train.ultralytics_backend import UltralyticsPredictor

    return UltralyticsPredictor(path, device=device, imgsz=imgsz, threads=threads)


class OnnxPredictor:
    """An ONNX model run by `edgevision.runtime.Detector`, behind the `Predictor` protocol.

    Attributes:
        labels: the model's class names; detector: the runtime detector; iou: NMS IoU (0.7, Ultralytics' value).
    """

    def __init__(self, path: Path, *, device: str = "cpu", imgsz: int | None = None, threads: int | None = None,
                 iou: float = 0.7) -> None:
        from edgevision.core.errors import ConfigError
        from edgevision.runtime import Detector

        providers = ["CPUExecutionProvider"] if device == "cpu" else None
        self.detector = Detector(path, providers=providers, threads=threads)
        size = self.detector.metadata.input.size_hw
        if imgsz is not None and (imgsz, imgsz) != tuple(size):
            raise ConfigError(f"{path}: the ONNX model takes {size[1]}x{size[0]} inputs, not --imgsz {imgsz}; "
                              f"export it again with --imgsz {imgsz} or drop --imgsz")
        self.labels = LabelMap(list(self.detector.names))
        self.iou = iou

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
