"""The image size a checkpoint was trained at, read back the same way by prediction and export.

Ultralytics keeps it in ``ckpt["train_args"]["imgsz"]`` (an int, or ``[h, w]`` when trained rectangular:
the larger side is the square EdgeVision runs at); EdgeVision's torchvision backend in
``ckpt["edgevision"]["imgsz"]``; LibreYOLO in ``ckpt["imgsz"]``. A checkpoint without it (another program's ``.pt``) falls back to the
backend's default: 640 for Ultralytics (its own default), 320 for SSDlite (its design size).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_IMGSZ", "trained_imgsz", "working_imgsz"]

DEFAULT_IMGSZ = {"ultralytics": 640, "torchvision": 320, "libreyolo": 640}
"""The size used when neither the caller nor the checkpoint gives one."""


def trained_imgsz(ckpt: Mapping[str, Any] | None) -> int | None:
    """The training size recorded in a loaded checkpoint (see the module doc), or None."""
    if not ckpt:
        return None
    for section in ("train_args", "edgevision", None):
        if section is None:  # LibreYOLO keeps it at the top level
            v = ckpt.get("imgsz") if "libreyolo_version" in ckpt else None
        else:
            v = (ckpt.get(section) or {}).get("imgsz") if isinstance(ckpt.get(section), Mapping) else None
        if isinstance(v, (list, tuple)):
            v = max((x for x in v if isinstance(x, (int, float))), default=None)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return int(v)
    return None


def working_imgsz(requested: int | None, ckpt: Mapping[str, Any] | None, backend: str) -> int:
    """``requested``, else the checkpoint's training size, else the backend's default."""
    return int(requested or trained_imgsz(ckpt) or DEFAULT_IMGSZ[backend])
