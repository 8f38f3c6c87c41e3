"""The torch-free runtime: run an ONNX model written by ``edgevision export`` with numpy, onnxruntime and OpenCV.

    >>> from edgevision.runtime import Detector          # doctest: +SKIP
    >>> det = Detector("model.onnx")                     # doctest: +SKIP
    >>> d = det("part.png")                              # doctest: +SKIP
    >>> d.xyxy, d.scores, d.class_ids, d.class_names     # doctest: +SKIP

Nothing here imports torch, Ultralytics, albumentations or onnx (a test checks it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Detections", "Detector", "ImageReadError", "ModelFormatError", "ModelMetadata", "read_metadata"]


def __getattr__(name: str) -> Any:  # lazy: `import edgevision.runtime` must not import onnxruntime
    if name in ("Detector", "Detections", "read_metadata"):
        from edgevision.runtime import detector

        return getattr(detector, name)
    if name == "ImageReadError":
        from edgevision.runtime import images

        return images.ImageReadError
    if name in ("ModelMetadata", "ModelFormatError"):
        from edgevision.runtime import metadata

        return getattr(metadata, name)
    raise AttributeError(f"module 'edgevision.runtime' has no attribute {name!r}")
