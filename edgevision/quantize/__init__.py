"""Static INT8 quantization of EdgeVision ONNX models (onnxruntime.quantization, QDQ, per-channel weights).

``quantize_model(model, calib, out, target=..., n=200, method="minmax", seed=0)`` calibrates on images of
the dataset's **train** split (seeded, stratified by class), preprocessed exactly as the runtime does,
keeps the head's post-processing float (found from the graph structure) and records what it did in the
model's ``quantization`` metadata. `targets` (stdlib only) holds the presets and the host check the
runtime uses. Heavy imports (onnx, onnxruntime.quantization) happen inside the call.
"""

from __future__ import annotations

from typing import Any

from edgevision.runtime.targets import TARGETS, host_target, target_mismatch

__all__ = ["METHODS", "TARGETS", "QuantizeError", "QuantizeResult", "host_target", "quantize_model",
           "target_mismatch"]


def __getattr__(name: str) -> Any:  # lazy: importing the package must not import onnx
    if name in ("METHODS", "QuantizeError", "QuantizeResult", "quantize_model"):
        from edgevision.quantize import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgevision.quantize' has no attribute {name!r}")
