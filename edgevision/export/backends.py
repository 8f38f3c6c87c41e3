"""Backend exporters: a checkpoint in, a raw ONNX graph and what the metadata needs to know out.

* **Ultralytics**: Ultralytics' own exporter (``YOLO(pt).export(format="onnx", nms=False, ...)``) run on a
  copy of the checkpoint in a temporary folder (it writes its ``.onnx`` beside the ``.pt``, which must not
  be the run folder). Its ``metadata_props`` are kept so ``ultralytics.YOLO("x.onnx")`` still loads the
  file. With ``dynamic_batch`` it is asked for ``dynamic=True`` (batch, height and width symbolic) and
  height / width are pinned afterwards (`edgevision.export.graph.pin_spatial`): only the batch stays free.
* **LibreYOLO YOLOv9**: ``torch.onnx.export(dynamo=False)`` of the fused model in eval mode with its head's
  ``export`` flag (anchors computed in the graph), wrapped so that the output is the ``yolo-raw`` layout the
  Ultralytics exports have: ``(B, 4+nc, N)`` with boxes as centre, width, height in input pixels (LibreYOLO's
  head gives corners) and sigmoid class scores. Pre-processing as trained by EdgeVision's libreyolo backend:
  letterbox centred, pad 114, RGB, 1/255. A checkpoint trained elsewhere with LibreYOLO's top-left padding is
  exported with a note (boxes of non-square images shift by the pad the model never saw on that side).
* **torchvision SSDlite**: ``torch.onnx.export(dynamo=False)`` of the model in eval mode, wrapped so that
  the graph takes a ``(1, 3, H, W)`` float tensor in [0, 1] already resized to ``imgsz x imgsz`` (the
  model's transform then normalises inside the graph and its resize is the identity) and returns
  ``boxes, labels, scores`` after torchvision's own NMS; ``score_thresh`` 0.001 and 300 detections so
  that the runtime applies its own thresholds.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevision.core.errors import ConfigError, EdgeVisionError
from edgevision.export.source import ModelSource
from edgevision.train.imgsz import trained_imgsz, working_imgsz

log = logging.getLogger(__name__)

__all__ = ["ExportError", "RawExport", "export_libreyolo", "export_torchvision", "export_ultralytics"]

TV_SCORE_THRESH = 0.001
TV_MAX_DET = 300


class ExportError(EdgeVisionError):
    """The exporter could not produce a valid ONNX graph from a loadable checkpoint."""


@dataclass
class RawExport:
    """What a backend exporter returns.

    Attributes:
        model: the ``onnx.ModelProto`` (simplified, output names as the layout lists them);
        names: class names; stride: largest stride (1 when any size works); imgsz: the exported side;
        imgsz_trained: the training side when the checkpoint records it; arch: architecture name;
        end2end: the graph ends in Ultralytics' NMS-free top-k head; input: `InputSpec` fields
        specific to the backend (resize, uint16, ...).
    """

    model: Any
    names: list[str]
    stride: int
    imgsz: int
    imgsz_trained: int | None
    arch: str
    end2end: bool = False
    input: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def check_imgsz(imgsz: int, stride: int, where: str) -> None:
    """Refuse a side that is not a positive multiple of ``stride``, naming the two nearest valid sides.

    Refused rather than rounded (what Ultralytics does): the metadata and the runtime's letterbox use
    the size the graph really has, and a silently changed size surprises whoever set it.
    """
    if imgsz < stride or imgsz % stride:
        lo, hi = max(stride, imgsz // stride * stride), (imgsz // stride + 1) * stride
        choices = f"{lo} or {hi}" if lo != hi and lo != imgsz else f"{hi}"
        raise ConfigError(f"--imgsz {imgsz}: {where} needs a multiple of its stride {stride}; use {choices}")


def export_ultralytics(src: ModelSource, imgsz: int | None, opset: int, dynamic_batch: bool) -> RawExport:
    """Export an Ultralytics detection checkpoint with Ultralytics' exporter (see the module doc).

    Raises:
        ConfigError: not a detection checkpoint Ultralytics can load; a bad ``imgsz``.
        ExportError: Ultralytics' exporter failed.
    """
    import onnx

    from edgevision.train.offline import prepare_ultralytics

    prepare_ultralytics(threads=None, verbose=False)
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix="edgevision-export-") as tmp:
        pt = Path(tmp) / "model.pt"
        shutil.copyfile(src.weights, pt)
        try:
            yolo = YOLO(str(pt), task=None)
        except Exception as e:  # pickles of other programs, truncated files, ...
            raise ConfigError(f"{src.weights}: not a checkpoint of Ultralytics or of EdgeVision's torchvision backend "
                              f"({e.__class__.__name__}: {e})") from e
        if yolo.task != "detect":
            raise ConfigError(f"{src.weights}: an Ultralytics '{yolo.task}' model; EdgeVision exports detection models")
        net = yolo.model
        stride = int(max(net.stride))
        names = [str(net.names[i]) for i in sorted(net.names)]
        trained = trained_imgsz(getattr(yolo, "ckpt", None))
        size = working_imgsz(imgsz, getattr(yolo, "ckpt", None), "ultralytics")
        check_imgsz(size, stride, f"{src.weights} (Ultralytics)")
        try:
            f = yolo.export(format="onnx", imgsz=size, opset=opset, dynamic=dynamic_batch, simplify=True, half=False,
                            nms=False, device="cpu", batch=1)
        except Exception as e:
            raise ExportError(f"{src.weights}: Ultralytics' ONNX export failed ({e.__class__.__name__}: {e})") from e
        model = onnx.load(str(f))
    props = {p.key: p.value for p in model.metadata_props}
    yaml_file = str(getattr(net, "yaml", {}).get("yaml_file", "")) if isinstance(getattr(net, "yaml", None), dict) else ""
    arch = Path(yaml_file).stem or type(net).__name__
    return RawExport(
        model=model, names=names, stride=stride, imgsz=size, imgsz_trained=trained, arch=arch,
        end2end=props.get("end2end", "False") == "True",
        input={"resize": "letterbox", "pad_value": 114, "channel_order": "RGB", "scale": 1.0 / 255.0,
               "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "uint16": "high_byte"},
    )


def export_torchvision(src: ModelSource, imgsz: int | None, opset: int, dynamic_batch: bool) -> RawExport:
    """Export a torchvision SSDlite checkpoint written by EdgeVision (see the module doc).

    Raises:
        ConfigError: ``dynamic_batch`` (the post-NMS graph is batch 1), an unusable checkpoint.
        ExportError: the tracer failed.
    """
    if dynamic_batch:
        raise ConfigError(f"--dynamic-batch: {src.weights} is a torchvision SSDlite model, whose graph ends in "
                          "torchvision's own per-image NMS and takes one image (batch 1); drop --dynamic-batch")
    import torch

    from edgevision.train.torchvision_backend import ARCH, _build_model, _load_checkpoint

    ck = _load_checkpoint(src.weights)
    meta = ck["edgevision"]
    names = [str(n) for n in meta["names"]]
    trained = trained_imgsz(ck)
    size = working_imgsz(imgsz, ck, "torchvision")
    if size < 32:
        raise ConfigError(f"--imgsz {size}: SSDlite needs at least 32 pixels")
    model = _build_model(len(names), size)
    model.load_state_dict(ck["model"])
    model.eval()
    model.score_thresh = TV_SCORE_THRESH
    model.detections_per_img = TV_MAX_DET
    wrapped = _PostNMS(model).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="edgevision-export-") as tmp:
        f = Path(tmp) / "model.onnx"
        try:
            import warnings

            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the tracer's notes on torchvision's shape arithmetic
                torch.onnx.export(wrapped, (x,), str(f), opset_version=opset, input_names=["images"],
                                  output_names=["boxes", "labels", "scores"], dynamo=False)
        except Exception as e:
            raise ExportError(f"{src.weights}: torch.onnx.export failed ({e.__class__.__name__}: {e})") from e
        import onnx

        model_onnx = onnx.load(str(f))
    from edgevision.export.graph import slim

    return RawExport(
        model=slim(model_onnx), names=names, stride=1, imgsz=size, imgsz_trained=trained, arch=ARCH,
        input={"resize": "stretch", "pad_value": 0, "channel_order": "RGB", "scale": 1.0 / 255.0,
               "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "uint16": "minmax"},
    )


def export_libreyolo(src: ModelSource, imgsz: int | None, opset: int, dynamic_batch: bool) -> RawExport:
    """Export a LibreYOLO YOLOv9 checkpoint to the ``yolo-raw`` layout (see the module doc).

    Raises:
        ConfigError: not a LibreYOLO YOLOv9 detection checkpoint; a bad ``imgsz``.
        ExportError: the tracer failed.
    """
    import torch

    from edgevision.train.libreyolo_backend import _names, load_model, read_checkpoint

    ck = read_checkpoint(src.weights)
    names = _names(ck)
    trained = trained_imgsz(ck)
    size = working_imgsz(imgsz, ck, "libreyolo")
    stride = 32
    check_imgsz(size, stride, f"{src.weights} (LibreYOLO YOLOv9)")
    notes = []
    pad = str(ck.get("letterbox_pad") or "topleft").lower()
    if pad != "center":
        notes.append(f"{src.weights.name} was trained with LibreYOLO's '{pad}' letterbox; EdgeVision pads centred, so "
                     "boxes of non-square images may shift (square images are unaffected); models trained with "
                     "`edgevision train --backend libreyolo` pad centred")
    net = load_model(src.weights).model
    net.eval()
    if hasattr(net, "fuse"):
        net.fuse()
    net.head.export = True
    wrapped = _raw_yolo_module()(net).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="edgevision-export-") as tmp:
        f = Path(tmp) / "model.onnx"
        try:
            import warnings

            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapped, (x,), str(f), opset_version=opset, input_names=["images"],
                                  output_names=["output0"], dynamo=False,
                                  dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic_batch
                                  else None)
        except Exception as e:
            raise ExportError(f"{src.weights}: torch.onnx.export failed ({e.__class__.__name__}: {e})") from e
        import onnx

        model_onnx = onnx.load(str(f))
    from edgevision.export.graph import slim

    return RawExport(
        model=slim(model_onnx), names=names, stride=stride, imgsz=size, imgsz_trained=trained,
        arch=f"yolo9-{ck.get('size') or 't'}", notes=notes,
        input={"resize": "letterbox", "pad_value": 114, "channel_order": "RGB", "scale": 1.0 / 255.0,
               "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "uint16": "high_byte"},
    )


def _raw_yolo_module() -> Any:
    import torch

    class RawYOLO(torch.nn.Module):
        """``(B, 3, H, W)`` -> ``(B, 4+nc, N)``: corners from the head turned into centre, width, height."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: Any) -> Any:
            y = self.model(images)
            xy1, xy2, scores = y[:, 0:2], y[:, 2:4], y[:, 4:]
            return torch.cat(((xy1 + xy2) / 2, xy2 - xy1, scores), 1)

    return RawYOLO


def _post_nms_module() -> Any:
    import torch

    class PostNMS(torch.nn.Module):
        """``(1, 3, H, W)`` -> boxes ``(K, 4)``, labels ``(K,)``, scores ``(K,)`` of the one image."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: Any) -> tuple[Any, Any, Any]:
            det = self.model([images[0]])[0]
            return det["boxes"], det["labels"], det["scores"]

    return PostNMS


def _PostNMS(model: Any) -> Any:  # noqa: N802 - a class built lazily (torch is imported only here)
    return _post_nms_module()(model)
