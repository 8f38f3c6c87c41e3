"""`export_model`: a run folder or ``.pt`` in, one checked ONNX file with EdgeVision metadata out."""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.errors import ConfigError, OutputExistsError
from edgevision.export.backends import (
    ExportError,
    RawExport,
    export_libreyolo,
    export_torchvision,
    export_ultralytics,
)
from edgevision.export.graph import (
    NMS_OUTPUTS,
    add_nms,
    default_opset,
    detect_layout,
    pin_spatial,
    set_metadata,
    to_fp16,
)
from edgevision.export.source import LIBREYOLO, TORCHVISION, resolve_source
from edgevision.runtime.metadata import InputSpec, ModelMetadata, OutputSpec

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_OPSET", "MAX_OPSET", "MIN_OPSET", "ExportResult", "export_model"]

DEFAULT_OPSET = 18
"""The default ONNX opset. Measured with onnxruntime 1.32 (QDQ, QUInt8 activations, QInt8 per-channel
weights, head post-processing left in float): yolov8n and yolo26n exported at 17, 18, 19 and 20 give
identical INT8 outputs (class-score correlation with FP32 0.999999 / 0.999997). YOLO26 at opset >= 18
needs ``quant_pre_process(skip_symbolic_shape=True)`` (its symbolic shape inference fails on the head).
18 is chosen, as Ultralytics does, because onnxruntime's CUDA provider has no Resize-19 / ReduceMax-20
kernels. tests/export/test_export_cli.py::test_default_opset_quantizes_correctly keeps this honest."""

MIN_OPSET = 13
"""Per-channel INT8 QDQ quantization (QuantizeLinear's ``axis``) and ``--nms-in-graph`` need opset 13."""

MAX_OPSET = 20
"""The highest opset torch's TorchScript exporter writes (``dynamo=False``)."""

DEFAULTS = {"conf": 0.25, "iou": 0.7, "max_det": 300}
"""Runtime defaults written into every model (and the ``--nms-in-graph`` initializers)."""


@dataclass
class ExportResult:
    """What `export_model` wrote.

    Attributes:
        path: the ONNX file; size_bytes: its size; metadata: the ``edgevision`` document written into it;
        checks: name -> short result of each check that passed (``onnx.checker``, onnxruntime run);
        notes: things the user should know (e.g. where the thresholds came from).
    """

    path: Path
    size_bytes: int
    metadata: ModelMetadata
    checks: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out}: expected a file name ending in .onnx")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name ending in .onnx")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output already exists; choose another path or pass --overwrite")


def export_model(model: Path | str, out: Path | str, *, imgsz: int | None = None, opset: int | None = None,
                 dynamic_batch: bool = False, half: bool = False, nms_in_graph: bool = False,
                 overwrite: bool = False, thresholds: Path | str | None = None) -> ExportResult:
    """Export a trained detector to ONNX with EdgeVision's metadata (schema ``edgevision.model/1``).

    Args:
        model: a run folder (its ``weights/best.pt``, else ``last.pt``) or a ``.pt`` of either backend.
        out: the ``.onnx`` file, written atomically (nothing is left behind on error).
        imgsz: the square input side (default: the training size); a multiple of the stride.
        opset: ONNX opset (default `DEFAULT_OPSET`), `MIN_OPSET` to `MAX_OPSET`.
        dynamic_batch: symbolic batch axis (YOLO layouts only).
        half: FP16 weights and activations, float32 input and outputs (YOLO layouts only).
        nms_in_graph: append decode + NMS (``yolo-raw`` models only); layout ``nms-in-graph``.
        overwrite: replace an existing ``out``.
        thresholds: a ``thresholds.json`` (``edgevision eval ... --save-thresholds``) to carry instead of the
            run's own operating points; its classes must be the model's.

    Raises:
        ConfigError: bad options or model (one line naming the item and the fix).
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
        ExportError: the exporter or the checks failed.
    """
    out = Path(out)
    _check_out(out, overwrite)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"--opset {opset}: expected {MIN_OPSET} to {MAX_OPSET} (torch's TorchScript exporter "
                          f"writes up to {MAX_OPSET}; per-channel INT8 needs {MIN_OPSET})")
    if imgsz is not None and imgsz < 32:
        raise ConfigError(f"--imgsz {imgsz}: expected at least 32 pixels")
    src = resolve_source(model)
    notes: list[str] = []
    pinned = None
    if thresholds is not None:
        from edgevision.evaluate.operating import OperatingPoints

        pinned = OperatingPoints.load(thresholds)
    if src.backend == TORCHVISION:
        if nms_in_graph:
            raise ConfigError(f"--nms-in-graph: {src.weights} is a torchvision SSDlite model whose graph already ends "
                              "in torchvision's own NMS (layout torchvision-postnms); export without --nms-in-graph")
        if half:
            raise ConfigError(f"--half: {src.weights} is a torchvision SSDlite model; its post-processing (an If "
                              "subgraph) defeats onnxruntime's FP16 converter; export it in FP32 (drop --half)")
        raw = export_torchvision(src, imgsz, opset, dynamic_batch)
        layout, onnx_model = "torchvision-postnms", raw.model
    else:
        if src.backend == LIBREYOLO:
            raw = export_libreyolo(src, imgsz, opset, dynamic_batch)
            onnx_model = raw.model
        else:
            raw = export_ultralytics(src, imgsz, opset, dynamic_batch)
            onnx_model = pin_spatial(raw.model, raw.imgsz, raw.imgsz) if dynamic_batch else raw.model
        notes += raw.notes
        layout = detect_layout(onnx_model, len(raw.names), raw.end2end)
        if nms_in_graph and layout != "yolo-raw":
            raise ConfigError(f"--nms-in-graph: {src.weights} has a YOLO26 end-to-end head: its graph already ends in "
                              "NMS-free top-k detections (layout yolo-end2end); export without --nms-in-graph")
    max_det = DEFAULTS["max_det"]
    if layout == "yolo-end2end":
        max_det = int(onnx_model.graph.output[0].type.tensor_type.shape.dim[1].dim_value or max_det)
    if half:  # before NMS: decode and NMS stay float32 (ONNX NMS takes float32 only)
        onnx_model = to_fp16(onnx_model)
    if nms_in_graph:
        onnx_model = add_nms(onnx_model, len(raw.names), DEFAULTS["conf"], DEFAULTS["iou"], int(DEFAULTS["max_det"]))
        layout = "nms-in-graph"
    meta = _metadata(raw, src, onnx_model, layout, int(max_det), dynamic_batch, half)
    if pinned is not None:
        if sorted(pinned.classes) != sorted(meta.names):
            raise ConfigError(f"--thresholds {thresholds}: operating points for classes {list(pinned.classes)} but "
                              f"the model has {meta.names}")
        meta.thresholds = pinned.to_dict()
    notes += _operating_notes(meta.thresholds, thresholds if pinned is not None else
                              src.run.thresholds if meta.thresholds and src.run else None)
    set_metadata(onnx_model, meta.to_json())
    if onnx_model.ir_version > 10:  # onnxruntime reads IR <= 10 at most in older builds (as Ultralytics does)
        onnx_model.ir_version = 10
    checks = _check(onnx_model, meta)
    data = onnx_model.SerializeToString()
    from edgevision.core.io import write_atomic

    write_atomic(out, data)
    log.info("wrote %s (%d bytes, layout %s)", out, len(data), layout)
    return ExportResult(path=out, size_bytes=len(data), metadata=meta, checks=checks, notes=notes)


def _operating_notes(doc: dict[str, Any] | None, origin: Path | str | None) -> list[str]:
    """What the runtime will decide with: the source of the operating points and each class's rule."""
    if not doc:
        return ["no operating points (not exported from a run with thresholds.json, no --thresholds): the runtime "
                "uses defaults.conf"]
    from edgevision.evaluate.operating import OperatingPoints

    op = OperatingPoints.from_dict(doc, where=str(origin))
    notes = [f"operating points from {origin}: " + "; ".join(op.describe())]
    low = op.below_minimum()
    if low:
        notes.append("degenerate operating points " + ", ".join(f"{n} {v:.3g}" for n, v in low.items())
                     + " (below 0.05: an older EdgeVision chose the lowest score seen); re-choose with `edgevision eval "
                     "RUN --data D --target recall=0.9 --save-thresholds t.json` and export with --thresholds t.json")
        log.warning("%s", notes[-1])
    return notes


def _metadata(raw: RawExport, src: Any, onnx_model: Any, layout: str, max_det: int, dynamic_batch: bool,
              half: bool) -> ModelMetadata:
    from edgevision import __version__

    outputs = [o.name for o in onnx_model.graph.output]
    if layout == "nms-in-graph":
        assert tuple(outputs) == NMS_OUTPUTS
    return ModelMetadata(
        names=list(raw.names),
        input=InputSpec(name=onnx_model.graph.input[0].name, size_hw=(raw.imgsz, raw.imgsz), dynamic_batch=dynamic_batch,
                        dtype="float32", mono="replicate", **raw.input),
        output=OutputSpec(layout=layout, names=outputs, max_det=max_det),
        stride=raw.stride,
        precision="fp16" if half else "fp32",
        opset=default_opset(onnx_model),
        thresholds=src.thresholds(),
        data_stats=src.data_stats(),
        defaults=dict(DEFAULTS),
        source={**src.provenance(raw.arch, raw.imgsz_trained), "licences": src.licences()},
        quantization=None,
        edgevision_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _check(onnx_model: Any, meta: ModelMetadata) -> dict[str, str]:
    """``onnx.checker`` (full) and one onnxruntime run on a grey image; raise `ExportError` on failure."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except Exception as e:
        raise ExportError(f"the exported graph fails onnx.checker ({e.__class__.__name__}: {str(e).splitlines()[0]})") from e
    h, w = meta.input.size_hw
    x = np.full((1, 3, h, w), 114 / 255, np.float32)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {meta.input.name: x})
    except Exception as e:
        raise ExportError(f"onnxruntime cannot run the exported graph ({e.__class__.__name__}: "
                          f"{str(e).splitlines()[0]})") from e
    shapes = ", ".join(f"{n}{tuple(o.shape)}" for n, o in zip(meta.output.names, outs, strict=True))
    return {"onnx.checker": "full check passed", "onnxruntime": f"CPU run ok: {shapes}"}
