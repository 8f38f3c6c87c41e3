"""Image -> input tensor exactly as the model's `InputSpec` declares, and the mapping back.

Letterbox reproduces Ultralytics' ``LetterBox`` as its predictor uses it for a fixed-size ONNX model
(``auto=False``, ``scaleup=True``, centred, ``cv2.INTER_LINEAR``) and `Transform.to_original`
reproduces ``ultralytics.utils.ops.scale_boxes``. The per-pixel arithmetic ``(pixel * scale - mean) /
std`` is a 256-entry lookup table per channel (computed in float64, stored in the tensor dtype), applied
with ``cv2.LUT`` straight into the NCHW tensor: resize, channel order, normalisation and transposition
cost one pass over the resized image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from edgevision.runtime.metadata import InputSpec

__all__ = ["Preprocessor", "Transform", "letterbox_geometry"]


@dataclass(frozen=True)
class Transform:
    """How tensor pixels map to original image pixels: ``original = (tensor - pad) / gain``.

    Attributes:
        orig_hw: (h, w) of the original image; input_hw: (H, W) of the tensor;
        gain_xy: (x, y) scale factors original -> tensor; pad_xy: (left, top) padding in tensor pixels;
        offset_xy: added after the mapping (the slice origin in tiled inference, else (0, 0)).
    """

    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    gain_xy: tuple[float, float]
    pad_xy: tuple[int, int]
    offset_xy: tuple[int, int] = (0, 0)

    def to_original(self, xyxy: NDArray[np.floating], clip: bool = True) -> NDArray[np.float32]:
        """Map ``(N, 4)`` xyxy boxes from tensor pixels to original pixels, clipped to the image.

        Follows ``ultralytics.utils.ops.scale_boxes``: subtract the padding, divide by the gain per axis,
        clip x to [0, w] and y to [0, h]; then add ``offset_xy``.
        """
        b = np.array(xyxy, dtype=np.float32).reshape(-1, 4)
        px, py = self.pad_xy
        gx, gy = self.gain_xy
        b[:, 0::2] -= px
        b[:, 1::2] -= py
        b[:, 0::2] /= np.float32(gx)
        b[:, 1::2] /= np.float32(gy)
        if clip:
            h, w = self.orig_hw
            np.clip(b[:, 0::2], 0, w, out=b[:, 0::2])
            np.clip(b[:, 1::2], 0, h, out=b[:, 1::2])
        if self.offset_xy != (0, 0):
            b[:, 0::2] += self.offset_xy[0]
            b[:, 1::2] += self.offset_xy[1]
        return b


def letterbox_geometry(orig_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[tuple[int, int], int, int]:
    """Ultralytics' letterbox numbers: ``((new_w, new_h), left, top)``.

    ``r = min(H / h, W / w)``; ``new = max(round(side * r), 1)`` (Python's round, halves to even);
    ``left = round((W - new_w) / 2 - 0.1)``, ``top = round((H - new_h) / 2 - 0.1)``.
    """
    h, w = orig_hw
    hh, ww = input_hw
    r = min(hh / h, ww / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    left, top = round((ww - new_w) / 2 - 0.1), round((hh - new_h) / 2 - 0.1)
    return (new_w, new_h), left, top


class Preprocessor:
    """Turns 8-bit images into the model's input tensor (immutable after construction: thread-safe)."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.size_hw = (int(spec.size_hw[0]), int(spec.size_hw[1]))
        self.dtype = np.dtype(np.float16 if spec.dtype == "float16" else np.float32)
        v = np.arange(256, dtype=np.float64)
        # tensor channel c takes BGR plane src[c]
        self._src = (2, 1, 0) if spec.channel_order == "RGB" else (0, 1, 2)
        self._luts = [((v * spec.scale - spec.mean[c]) / spec.std[c]).astype(self.dtype) for c in range(3)]
        self._pad = [lut[int(spec.pad_value)] for lut in self._luts]

    def geometry(self, orig_hw: tuple[int, int]) -> tuple[tuple[int, int], int, int, Transform]:
        """``((new_w, new_h), left, top, Transform)`` for an image of ``orig_hw``."""
        h, w = orig_hw
        hh, ww = self.size_hw
        if self.spec.resize == "letterbox":
            (nw, nh), left, top = letterbox_geometry(orig_hw, self.size_hw)
        else:
            (nw, nh), left, top = (ww, hh), 0, 0
        return (nw, nh), left, top, Transform((h, w), (hh, ww), (nw / w, nh / h), (left, top))

    def resize(self, img: NDArray[np.uint8], new_wh: tuple[int, int]) -> NDArray[np.uint8]:
        """Resize as declared (letterbox: INTER_LINEAR; stretch: INTER_AREA when shrinking, else INTER_LINEAR)."""
        h, w = img.shape[:2]
        if (w, h) == new_wh:
            return img
        interp = cv2.INTER_LINEAR
        if self.spec.resize == "stretch" and h * w > new_wh[0] * new_wh[1]:
            interp = cv2.INTER_AREA
        return np.asarray(cv2.resize(img, new_wh, interpolation=interp), np.uint8)

    def __call__(self, img: NDArray[np.uint8], out: NDArray[np.floating] | None = None
                 ) -> tuple[NDArray[np.floating], Transform]:
        """Build the tensor of one 8-bit image ``(H, W)`` grey or ``(H, W, 3)`` BGR.

        Args:
            img: the image (see `edgevision.runtime.images.to_uint8`).
            out: a ``(3, H, W)`` array of the tensor dtype to write into (a slot of a batch), else a new
                ``(1, 3, H, W)`` tensor is returned.

        Returns:
            The tensor (``out`` when given) and the `Transform` mapping tensor pixels back.
        """
        new_wh, left, top, tf = self.geometry(img.shape[:2])
        hh, ww = self.size_hw
        if out is None:
            tensor = np.empty((1, 3, hh, ww), self.dtype)
            planes_out = tensor[0]
        else:
            tensor = planes_out = out
        r = self.resize(img, new_wh)
        planes = [r, r, r] if r.ndim == 2 else cv2.split(r)
        nw, nh = new_wh
        for c in range(3):
            dst = planes_out[c]
            if nh < hh or nw < ww:  # padding strips only, then the image straight into its window
                dst[:top] = self._pad[c]
                dst[top + nh:] = self._pad[c]
                dst[top:top + nh, :left] = self._pad[c]
                dst[top:top + nh, left + nw:] = self._pad[c]
            cv2.LUT(planes[self._src[c]], self._luts[c], dst=dst[top:top + nh, left:left + nw])
        return tensor, tf
