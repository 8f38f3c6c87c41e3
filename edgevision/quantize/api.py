"""`quantize_model`: an FP32 EdgeVision ONNX model + its train split -> a static INT8 (QDQ) model."""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.dataset import ImageRecord
from edgevision.core.errors import ConfigError, DatasetError, EdgeVisionError, OutputExistsError
from edgevision.runtime.metadata import ModelMetadata
from edgevision.runtime.targets import TARGETS, host_target, target_mismatch

log = logging.getLogger(__name__)

__all__ = ["METHODS", "QuantizeError", "QuantizeResult", "Quantizer", "prepare", "quantize_model", "target_warnings"]

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
"""``--method`` -> onnxruntime ``CalibrationMethod`` member."""


class QuantizeError(EdgeVisionError):
    """onnxruntime could not quantize the graph, or the result failed its checks."""


@dataclass
class QuantizeResult:
    """What `quantize_model` wrote.

    Attributes:
        path: the INT8 file; size_bytes: its size; metadata: the document written into it;
        excluded: nodes kept float (the head's post-processing); calibration: image names used;
        target, host: the target built for and the CPU this ran on; warnings: things the user should know;
        checks: name -> short result of each check that passed.
    """

    path: Path
    size_bytes: int
    metadata: ModelMetadata
    excluded: list[str]
    calibration: list[str]
    target: str
    host: str
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{e.__class__.__name__}: {text if len(text) <= 240 else text[:237] + '...'}"


def _check_args(model: Path, out: Path, target: str, method: str, n: int, overwrite: bool) -> None:
    if target not in TARGETS:
        raise ConfigError(f"--target '{target}' is unknown; expected one of: {', '.join(TARGETS)}")
    if method not in METHODS:
        raise ConfigError(f"--method '{method}' is unknown; expected one of: {', '.join(METHODS)}")
    if n < 1:
        raise ConfigError(f"--n {n}: expected at least 1 calibration image")
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out}: expected a file name ending in .onnx")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name ending in .onnx")
    if out.resolve() == model.resolve():
        raise ConfigError(f"--out {out}: is the input model; write the INT8 model to another file")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output already exists; choose another path or pass --overwrite")


def _check_model(meta: ModelMetadata, model: Path) -> None:
    if meta.precision == "int8" or meta.quantization:
        raise ConfigError(f"{model}: model is already INT8; quantize the FP32 export instead")
    if meta.precision != "fp32" or meta.input.dtype != "float32":
        raise ConfigError(f"{model}: model is {meta.precision} ({meta.input.dtype} input); quantize an FP32 export "
                          "(`edgevision export` without --half)")


def _preprocess(src: Path, dst: Path) -> str:
    """``quant_pre_process`` (shape inference + graph optimisation); symbolic shape inference is skipped when it
    fails (YOLO26 heads at opset >= 18). Returns how it ran."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
        return "quant_pre_process"
    except Exception as e:  # onnxruntime's symbolic shape inference raises assorted errors
        log.info("symbolic shape inference failed (%s); retrying without it", _one_line(e))
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as e:
        raise QuantizeError(f"{src}: onnxruntime's quant_pre_process failed ({_one_line(e)})") from None
    return "quant_pre_process (skip_symbolic_shape)"


def _check(model: Any, meta: ModelMetadata) -> dict[str, str]:
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise QuantizeError(f"the INT8 graph fails onnx.checker ({_one_line(e)})") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    h, w = meta.input.size_hw
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {meta.input.name: np.full((1, 3, h, w), 0.5, np.float32)})
    except Exception as e:
        raise QuantizeError(f"the INT8 graph does not run in onnxruntime ({_one_line(e)})") from None
    q = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    dq = sum(n.op_type == "DequantizeLinear" for n in model.graph.node)
    return {"onnx.checker": "full check passed",
            "onnxruntime": f"CPU run ok: {[tuple(o.shape) for o in outs]}",
            "qdq": f"{q} QuantizeLinear, {dq} DequantizeLinear"}


class Quantizer:
    """One FP32 model prepared for quantization: pre-processed once, calibrated once (the tensor ranges
    are cached), then built as many times as needed with different nodes kept float (what
    ``--accuracy-aware`` does). Use as a context manager: it owns a temporary folder.

    Attributes:
        model: the FP32 file; meta: its metadata; target, method, seed, n_requested: the settings;
        calibration: the calibration records (train split); pre: the pre-processed FP32 graph;
        how: how it was pre-processed; head: the nodes always kept float (the head's post-processing).
    """

    def __init__(self, model: Path, meta: ModelMetadata, calibration: Sequence[ImageRecord], *, target: str,
                 method: str, seed: int, n_requested: int) -> None:
        self.model, self.meta, self.calibration = model, meta, list(calibration)
        self.target, self.method, self.seed, self.n_requested = target, method, seed, n_requested
        self._tmp = tempfile.TemporaryDirectory(prefix="ev-quantize-")
        self.dir = Path(self._tmp.name)
        self.pre = self.dir / "pre.onnx"
        self.cache = self.dir / "calibration.json"
        self.how = ""
        self.head: list[str] = []
        self.checks: dict[str, str] = {}
        self.last_meta = meta

    def __enter__(self) -> Quantizer:
        import onnx

        from edgevision.quantize.graph import float_nodes, name_nodes

        try:
            self.how = _preprocess(self.model, self.pre)
            pm = onnx.load(str(self.pre))
            name_nodes(pm.graph)
            onnx.save(pm, str(self.pre))
            self.head = float_nodes(pm, self.meta.output.layout)
        except BaseException:
            self._tmp.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def build(self, keep_float: Sequence[str] = (), why: Mapping[str, str] | None = None, *,
              check: bool = True) -> Any:
        """The INT8 ``ModelProto`` with the head and ``keep_float`` nodes float, its metadata set and checked.

        The first call calibrates (onnxruntime runs the calibration images); later calls reuse the ranges.
        ``why``: node -> reason, recorded for the ``keep_float`` nodes; ``check=False`` skips the checks
        (for the throw-away models of a sensitivity scan).

        Raises:
            QuantizeError: onnxruntime failed, or the result failed its checks.
        """
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        from edgevision.export.graph import default_opset, set_metadata
        from edgevision.quantize.calib import CalibrationReader

        p = TARGETS[self.target]
        excluded = self.head + [n for n in keep_float if n not in self.head]
        extra: dict[str, Any] = {"ActivationSymmetric": p.symmetric, "WeightSymmetric": True}
        # Calibrate in chunks of up to 8 images (ranges / histograms merged between chunks): activations of all
        # images at once would need tens of GB at 640 px. (onnxruntime 1.32's CalibMaxIntermediateOutputs drops
        # every full chunk without using it: not usable.)
        n = len(self.calibration)
        extra["CalibStridedMinMax"] = max(d for d in range(1, 9) if n % d == 0)
        raw = self.dir / "int8.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime prints calibration progress
                quantize_static(str(self.pre), str(raw), CalibrationReader(self.calibration, self.meta),
                                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=p.reduce_range,
                                activation_type=getattr(QuantType, p.activations),
                                weight_type=getattr(QuantType, p.weights), nodes_to_exclude=excluded,
                                calibrate_method=getattr(CalibrationMethod, METHODS[self.method]),
                                extra_options=extra, calibration_cache_path=str(self.cache))
        except EdgeVisionError:
            raise
        except Exception as e:
            raise QuantizeError(f"{self.model}: onnxruntime could not quantize the graph ({_one_line(e)})") from None
        qm = onnx.load(str(raw))
        meta = ModelMetadata.from_json(self.meta.to_json())
        meta.precision = "int8"
        meta.opset = default_opset(qm)
        meta.quantization = {
            "target": self.target, "format": "QDQ", "activations": p.activations, "weights": p.weights,
            "per_channel": True, "reduce_range": p.reduce_range, "symmetric": p.symmetric, "method": self.method,
            "n": n, "n_requested": int(self.n_requested), "seed": int(self.seed), "split": "train",
            "calibration_images": sorted(r.name for r in self.calibration), "excluded_nodes": excluded,
            "kept_float_for_accuracy": {k: (why or {}).get(k, "") for k in keep_float if k not in self.head},
            "preprocess": self.how, "onnxruntime": ort.__version__, "built_on": host_target(),
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        }
        set_metadata(qm, meta.to_json())
        if check:
            self.checks = _check(qm, meta)
        self.last_meta = meta
        return qm


def prepare(model: Path | str, calib: Path | str, *, target: str | None = None, n: int = 200, method: str = "minmax",
            seed: int = 0, fmt: str = "auto", recipe: str | None = None,
            out: Path | str | None = None, overwrite: bool = False) -> tuple[Quantizer, Any]:
    """Check the arguments, the model and the calibration dataset; return a `Quantizer` (enter it) and the
    dataset read from ``calib``. See `quantize_model` for the arguments and errors."""
    from edgevision.convert import read_dataset
    from edgevision.quantize.calib import check_classes, select_calibration, train_records
    from edgevision.runtime.detector import read_metadata

    model, calib = Path(model), Path(calib)
    target = target or host_target()
    _check_args(model, Path(out) if out is not None else model.with_suffix(".int8.onnx"), target, method, n, overwrite)
    meta = read_metadata(model)
    _check_model(meta, model)
    ds = read_dataset(calib, fmt, recipe=recipe).dataset
    check_classes(ds, meta, str(calib))
    chosen = select_calibration(train_records(ds, str(calib)), n, seed)
    if not chosen:
        raise DatasetError(f"{calib}: the train split has no images to calibrate with")
    return Quantizer(model, meta, chosen, target=target, method=method, seed=seed, n_requested=n), ds


def target_warnings(target: str) -> list[str]:
    """What the user should know about building for ``target`` on this box."""
    import onnxruntime as ort

    mismatch = target_mismatch(target, list(ort.get_available_providers()))
    return [f"building for another box: {mismatch}"] if mismatch else []


def quantize_model(model: Path | str, calib: Path | str, out: Path | str, *, target: str | None = None,
                   n: int = 200, method: str = "minmax", seed: int = 0, fmt: str = "auto",
                   recipe: str | None = None, overwrite: bool = False) -> QuantizeResult:
    """Static INT8 quantization (QDQ, per-channel weights) of an FP32 model written by ``edgevision export``.

    Builds only; `edgevision.quantize.workflow.quantize_checked` also judges the accuracy on the val split.

    Args:
        model: the FP32 ``.onnx``; calib: the dataset (its train split calibrates); out: the ``.onnx`` to write.
        target: ``x86-vnni``, ``x86-avx2``, ``arm64``, ``tensorrt`` (see `TARGETS`); None: this CPU's.
        n: calibration images (capped at the train split's size); method: ``minmax``, ``entropy``, ``percentile``.
        seed: the draw of calibration images; fmt, recipe: how to read ``calib`` (see ``read_dataset``).
        overwrite: replace ``out``.

    Returns:
        What was written. Nothing is written on error.

    Raises:
        ModelFormatError: not an EdgeVision ONNX model. ConfigError: bad option, INT8 / FP16 model.
        DatasetError: unsplit dataset, no train split, other classes. OutputExistsError: ``out`` exists.
        QuantizeError: onnxruntime failed, or the result failed its checks.
    """
    from edgevision.core.io import write_atomic

    out = Path(out)
    q, _ = prepare(model, calib, target=target, n=n, method=method, seed=seed, fmt=fmt, recipe=recipe, out=out,
                   overwrite=overwrite)
    with q:
        qm = q.build()
    data = qm.SerializeToString()
    write_atomic(out, data)
    return QuantizeResult(out, len(data), q.last_meta, list(q.head), [r.name for r in q.calibration], q.target,
                          host_target(), target_warnings(q.target), q.checks)
