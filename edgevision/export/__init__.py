"""ONNX export: a run folder or checkpoint of either backend -> one ONNX file the runtime can read.

``export_model(model, out, imgsz=..., opset=..., dynamic_batch=..., half=..., nms_in_graph=...)``
writes the graph (Ultralytics' exporter, or torch.onnx for torchvision SSDlite), simplified with
onnxslim, checked with ``onnx.checker`` and onnxruntime, with the ``edgevision`` metadata document
(`edgevision.runtime.metadata.ModelMetadata`). Heavy imports (torch, onnx, Ultralytics) happen inside
the call.
"""

from __future__ import annotations

from edgevision.export.api import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ExportResult, export_model
from edgevision.export.backends import ExportError

__all__ = ["DEFAULT_OPSET", "MAX_OPSET", "MIN_OPSET", "ExportError", "ExportResult", "export_model"]
