"""Decode and check input images: paths, encoded bytes or arrays in OpenCV convention -> 8-bit planes.

Only numpy and OpenCV: this module is part of the torch-free runtime.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgevision.core.errors import EdgeVisionError

__all__ = ["ImageInput", "ImageReadError", "decode_image", "to_uint8"]

ImageInput = str | Path | bytes | bytearray | memoryview | np.ndarray
"""What the runtime accepts as one image."""


class ImageReadError(EdgeVisionError):
    """An image the runtime cannot use: missing, not decodable, wrong dtype or wrong shape."""


def _describe(image: object) -> str:
    if isinstance(image, np.ndarray):
        return f"image array {image.dtype} {tuple(image.shape)}"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"encoded image ({len(image)} bytes)"
    return str(image)


def decode_image(image: ImageInput) -> NDArray[np.generic]:
    """Return the image as an array in OpenCV convention, decoding paths and bytes.

    Args:
        image: a path (str or Path, non-ASCII allowed), encoded bytes (PNG, JPEG, TIFF...), or an array
            ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` BGR or ``(H, W, 4)`` BGRA, uint8 or uint16.

    Returns:
        The array, unchanged for array input (not copied); checked for dtype and shape.

    Raises:
        ImageReadError: missing / unreadable file, undecodable bytes, wrong dtype or shape (one line).
    """
    if isinstance(image, (str, Path)):
        try:
            data = np.fromfile(str(image), dtype=np.uint8)
        except (OSError, ValueError) as e:
            what = "not found" if isinstance(e, FileNotFoundError) else f"not readable ({e.__class__.__name__})"
            raise ImageReadError(f"{image}: image file {what}; check the path") from None
        img = _imdecode(data, str(image))
        if img is None:
            raise ImageReadError(f"{image}: not an image OpenCV can decode ({data.size} bytes); "
                                 "give a PNG, JPEG, BMP or TIFF file")
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = np.frombuffer(image, dtype=np.uint8)
        img = _imdecode(data, _describe(image))
        if img is None:
            raise ImageReadError(f"{_describe(image)}: not an image OpenCV can decode; "
                                 "give PNG, JPEG, BMP or TIFF bytes")
    elif isinstance(image, np.ndarray):
        img = image
    else:
        raise ImageReadError(f"unsupported image type {type(image).__name__}; give a path, encoded bytes or a "
                             "numpy array (H, W[, C]) uint8/uint16")
    check_array(img, _describe(image) if not isinstance(image, np.ndarray) else "image array")
    return img


def _imdecode(data: NDArray[np.uint8], where: str) -> np.ndarray | None:
    """``cv2.imdecode`` (None for undecodable data); an image above OpenCV's pixel limit (2^30 by default,
    ``CV_IO_MAX_IMAGE_PIXELS``), a decompression bomb, is an `ImageReadError` rather than a ``cv2.error``."""
    if not data.size:
        return None
    try:
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        why = ("its header declares more pixels than OpenCV decodes (CV_IO_MAX_IMAGE_PIXELS)"
               if "CV_IO_MAX_IMAGE_PIXELS" in str(e) or "validateInputImageSize" in str(e)
               else f"OpenCV failed to decode it ({' '.join(str(e).split())[-120:]})")
        raise ImageReadError(f"{where}: {why}; give an image of a sane size") from None


def check_array(img: np.ndarray, where: str) -> None:
    """Raise `ImageReadError` unless ``img`` is uint8/uint16 ``(H, W)`` or ``(H, W, 1|3|4)`` with H, W > 0."""
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{where}: dtype {img.dtype} {tuple(img.shape)} is not supported; expected uint8 or "
                             "uint16 (convert float images with np.clip(x * 255, 0, 255).astype(np.uint8))")
    shape_ok = img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3, 4))
    if not shape_ok:
        raise ImageReadError(f"{where}: shape {tuple(img.shape)} is not an image; expected (H, W), (H, W, 1), "
                             "(H, W, 3) BGR or (H, W, 4) BGRA")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageReadError(f"{where}: empty image of shape {tuple(img.shape)}; expected H, W > 0")


def to_uint8(img: np.ndarray, uint16: str) -> NDArray[np.uint8]:
    """8-bit image with 1 (grey) or 3 (BGR) channels, as declared by the model's ``input.uint16``.

    Args:
        img: a checked array (see `decode_image`).
        uint16: ``high_byte`` (value >> 8) or ``minmax`` (the image's min..max stretched to 0..255 with
            +0.5 rounding, computed over all channels before the alpha channel is dropped, like
            ``edgevision.train.torchvision_backend.read_image_rgb``).

    Returns:
        ``(H, W)`` uint8 for grey input, ``(H, W, 3)`` uint8 BGR otherwise (a view where possible).
    """
    if img.dtype == np.uint16:
        if uint16 == "high_byte":
            img = (img >> 8).astype(np.uint8)
        else:
            f = img.astype(np.float32)
            lo, hi = float(f.min()), float(f.max())
            img = (np.zeros(f.shape, np.uint8) if hi <= lo
                   else np.clip((f - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8))
    if img.ndim == 3:
        if img.shape[2] == 1:
            return img[:, :, 0]
        if img.shape[2] == 4:
            return np.asarray(cv2.cvtColor(img, cv2.COLOR_BGRA2BGR), np.uint8)
    return np.asarray(img, np.uint8)
