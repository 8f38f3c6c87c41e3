"""Decode and check input images: paths, encoded bytes or arrays in OpenCV convention -> 8-bit planes.

Only numpy and OpenCV: this module is part of the torch-free runtime.

Encoded images are sized from their header *before* anything is decoded (`read_image_header`, pure Python,
independent of Pillow and of OpenCV's decoders): a small file that declares a huge image (a decompression
bomb) is refused with `ImageTooLargeError` without allocating its pixels. The header reader knows the
formats OpenCV decodes into uint8 / uint16 images (PNG, JPEG, BMP, TIFF, WebP, GIF, JPEG 2000, PNM / PAM,
Sun raster) and recognises them by the same signatures OpenCV uses to choose a decoder; everything else
(unknown bytes, AVIF / HEIF, whose decoder may allocate more than its header declares, and the float-only
PFM / Radiance HDR / OpenEXR) is refused before decoding.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgevision.core.errors import EdgeVisionError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageHeader", "ImageInput", "ImageReadError", "ImageTooLargeError",
           "check_image_header", "decode_image", "decode_image_bytes", "read_image_header", "to_uint8"]

ImageInput = str | Path | bytes | bytearray | memoryview | np.ndarray
"""What the runtime accepts as one image."""

DEFAULT_MAX_PIXELS = 1 << 30
"""`decode_image`'s default limit: OpenCV's own (``CV_IO_MAX_IMAGE_PIXELS``), now checked for every format
before decoding. ``edgevision serve`` passes its ``--max-pixels-mp`` (100 MP by default)."""

_MAX_STEPS = 65536
"""Markers / chunks / boxes / blocks walked to find a header; real files need fewer than 100."""
_HEAD_BYTES = 65536
"""Text headers (PNM, PAM) must end within this many bytes."""


class ImageReadError(EdgeVisionError):
    """An image the runtime cannot use: missing, not decodable, wrong dtype or wrong shape."""


class ImageTooLargeError(ImageReadError):
    """An encoded image whose header declares more pixels than allowed; refused before decoding."""

    def __init__(self, message: str, header: ImageHeader, limit: int) -> None:
        super().__init__(message)
        self.header, self.limit = header, limit


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image declares, read without decoding it.

    Attributes:
        format: ``PNG``, ``JPEG``, ``BMP``, ``TIFF``, ``WebP``, ``GIF``, ``JPEG 2000``, ``PNM``, ``PAM`` or
            ``Sun raster``.
        size_hw: the declared image size (height, width).
        buffer_pixels: the largest pixel buffer the decoder allocates: ``H * W``, or more when a TIFF tile, a
            GIF frame, an APNG / animated WebP frame or canvas declares a larger area.
    """

    format: str
    size_hw: tuple[int, int]
    buffer_pixels: int


def _describe(image: object) -> str:
    if isinstance(image, np.ndarray):
        return f"image array {image.dtype} {tuple(image.shape)}"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"encoded image ({len(image)} bytes)"
    return str(image)


def decode_image(image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.generic]:
    """Return the image as an array in OpenCV convention, decoding paths and bytes.

    Args:
        image: a path (str or Path, non-ASCII allowed), encoded bytes (PNG, JPEG, BMP, TIFF, WebP, GIF, JPEG 2000,
            PNM, Sun raster), or an array ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` BGR or ``(H, W, 4)`` BGRA,
            uint8 or uint16.
        max_pixels: encoded images whose header declares more pixels are refused before decoding (arrays are
            already decoded and not checked).

    Returns:
        The array, unchanged for array input (not copied); checked for dtype and shape.

    Raises:
        ImageTooLargeError: the header declares more than ``max_pixels`` pixels (one line).
        ImageReadError: missing / unreadable file, a format whose size cannot be read from its header, undecodable
            bytes, wrong dtype or shape (one line).
    """
    if isinstance(image, (str, Path)):
        try:
            raw = Path(image).read_bytes()
        except (OSError, ValueError) as e:
            what = "not found" if isinstance(e, FileNotFoundError) else f"not readable ({e.__class__.__name__})"
            raise ImageReadError(f"{image}: image file {what}; check the path") from None
        img = _decode_checked(raw, str(image), max_pixels)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        img = _decode_checked(image, _describe(image), max_pixels)
    elif isinstance(image, np.ndarray):
        img = image
    else:
        raise ImageReadError(f"unsupported image type {type(image).__name__}; give a path, encoded bytes or a "
                             "numpy array (H, W[, C]) uint8/uint16")
    check_array(img, _describe(image) if not isinstance(image, np.ndarray) else "image array")
    return img


def decode_image_bytes(data: bytes | bytearray | memoryview, where: str, *,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.generic]:
    """Encoded bytes to an array, as `decode_image`, with errors naming ``where`` (e.g. the file the bytes came from).

    Raises:
        ImageTooLargeError / ImageReadError: as `decode_image` (one line).
    """
    img = _decode_checked(data, where, max_pixels)
    check_array(img, where)
    return img


def _decode_checked(data: bytes | bytearray | memoryview, where: str, max_pixels: int) -> np.ndarray:
    """Header check, then ``cv2.imdecode``; the decoded size is checked again (defence in depth)."""
    if not len(data):
        raise ImageReadError(f"{where}: empty file (0 bytes); give a PNG, JPEG, BMP or TIFF image")
    header = check_image_header(data, max_pixels, where)
    img = _imdecode(np.frombuffer(data, dtype=np.uint8), where)
    if img is None:
        raise ImageReadError(f"{where}: {header.format} data OpenCV cannot decode (truncated or corrupt); "
                             "give a complete PNG, JPEG, BMP or TIFF image")
    if img.shape[0] * img.shape[1] > max_pixels:  # the decoder disagreed with the header it was given
        raise ImageTooLargeError(f"{where}: decoded to {img.shape[1]}x{img.shape[0]} pixels, above the limit of "
                                 f"{max_pixels / 1e6:g} MP (its {header.format} header declared "
                                 f"{header.size_hw[1]}x{header.size_hw[0]})", header, max_pixels)
    return img


def check_image_header(data: bytes | bytearray | memoryview | NDArray[np.uint8], max_pixels: int,
                       where: str = "image") -> ImageHeader:
    """`read_image_header`, refused with `ImageTooLargeError` above ``max_pixels``: call it before any decoder.

    Raises:
        ImageTooLargeError: the header declares more than ``max_pixels`` pixels.
        ImageReadError: unknown format, or a header that cannot be read safely.
    """
    header = read_image_header(data, where)
    h, w = header.size_hw
    if header.buffer_pixels > max_pixels:
        extra = ("" if header.buffer_pixels <= h * w else
                 f" (its tiles / frames need {header.buffer_pixels / 1e6:.1f} MP)")
        raise ImageTooLargeError(f"{where}: {header.format} header declares {w}x{h} = {h * w / 1e6:.1f} MP{extra}, "
                                 f"above the limit of {max_pixels / 1e6:g} MP; give a smaller image", header,
                                 max_pixels)
    return header


def read_image_header(data: bytes | bytearray | memoryview | NDArray[np.uint8], where: str = "image") -> ImageHeader:
    """The format and declared size of an encoded image, from its header alone (nothing is decoded).

    The format is recognised by the signature OpenCV uses to pick its decoder, so a file is either sized here
    exactly as OpenCV will read it, or refused.

    Raises:
        ImageReadError: unknown bytes, a format whose decoder may allocate more than its header says (AVIF /
            HEIF), a float-only format (PFM, Radiance HDR, OpenEXR), or a truncated / inconsistent header.
    """
    b = data if isinstance(data, bytes) else data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    try:
        if len(b) >= 12 and b[4:8] == b"ftyp":  # ISO-BMFF: OpenCV tries its AVIF decoder first
            raise ImageReadError(f"{where}: AVIF / HEIF images are not accepted (their decoder may allocate more than "
                                 "the header declares, so the size cannot be checked first); convert to PNG or JPEG")
        for signature, parse in _PARSERS:
            if signature(b):
                fmt, w, h, buffer = parse(b)
                if w <= 0 or h <= 0:
                    raise ImageReadError(f"{where}: {fmt} header declares an empty image ({w}x{h})")
                return ImageHeader(fmt, (h, w), max(buffer, w * h))
    except (struct.error, IndexError, ValueError) as e:  # a header cut short inside a field
        raise ImageReadError(f"{where}: truncated or malformed image header ({e.__class__.__name__}); "
                             "give a complete PNG, JPEG, BMP or TIFF image") from None
    except _Refused as e:
        raise ImageReadError(f"{where}: {e}") from None
    raise ImageReadError(f"{where}: not a PNG, JPEG, BMP, TIFF, WebP, GIF, JPEG 2000, PNM or Sun raster image "
                         f"(starts with {b[:8].hex(' ') or 'nothing'}); give a PNG, JPEG, BMP or TIFF image")


class _Refused(Exception):
    """A header the reader will not vouch for (message completes ``'{where}: '``)."""


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


# ---------------------------------------------------------------------------------------------- header parsers
# Each returns (format, width, height, largest buffer in pixels) or raises _Refused / struct.error / IndexError.

def _jpeg(b: bytes) -> tuple[str, int, int, int]:
    """Walk the markers the way libjpeg does (garbage before a marker and 0xFF fill bytes skipped) to the first SOFn."""
    sof = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
    n, i = len(b), 2
    for _ in range(_MAX_STEPS):
        j = b.find(b"\xff", i)
        if j < 0:
            raise _Refused("JPEG without a frame header (SOF); the file is truncated or not a JPEG")
        while j < n and b[j] == 0xFF:
            j += 1
        if j >= n:
            raise _Refused("JPEG without a frame header (SOF); the file is truncated")
        marker, i = b[j], j + 1
        if marker == 0x00 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # stuffed byte, RSTn, TEM: no length
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or SOS before any SOF: libjpeg refuses it too
            raise _Refused(f"JPEG marker 0xFF{marker:02X} before the frame header (SOF); not a valid JPEG")
        length = struct.unpack_from(">H", b, i)[0]
        if length < 2:
            raise _Refused(f"JPEG segment 0xFF{marker:02X} with length {length}; not a valid JPEG")
        if marker in sof:
            h, w = struct.unpack_from(">HH", b, i + 3)
            return "JPEG", w, h, w * h
        i += length
    raise _Refused(f"JPEG with more than {_MAX_STEPS} segments before its frame header; not a camera image")


def _png(b: bytes) -> tuple[str, int, int, int]:
    length, kind, w, h = struct.unpack_from(">I4sII", b, 8)
    if kind != b"IHDR" or length != 13:
        raise _Refused("PNG whose first chunk is not IHDR; not a valid PNG")
    largest, i, animated = w * h, 8, False
    for _ in range(_MAX_STEPS):  # APNG: every frame (fcTL) must fit the limit too; acTL comes before IDAT
        if i + 8 > len(b):
            return "PNG", w, h, largest
        length, kind = struct.unpack_from(">I4s", b, i)
        if kind == b"acTL":
            animated = True
        elif kind == b"fcTL":
            fw, fh, fx, fy = struct.unpack_from(">IIII", b, i + 12)
            largest = max(largest, fw * fh, (fx + fw) * (fy + fh))
        elif kind == b"IEND" or (kind == b"IDAT" and not animated):
            return "PNG", w, h, largest
        i += 12 + length
    raise _Refused(f"PNG with more than {_MAX_STEPS} chunks; not a camera image")


def _bmp(b: bytes) -> tuple[str, int, int, int]:
    size = struct.unpack_from("<I", b, 14)[0]
    if size == 12:  # OS/2 BITMAPCOREHEADER
        w, h = struct.unpack_from("<HH", b, 18)
    elif size >= 36:  # BITMAPINFOHEADER and later (OpenCV reads >= 36)
        w, h = (abs(v) for v in struct.unpack_from("<ii", b, 18))  # negative height: top-down rows
    else:
        raise _Refused(f"BMP with a {size}-byte info header; not a BMP OpenCV reads")
    return "BMP", w, h, w * h


def _tiff(b: bytes) -> tuple[str, int, int, int]:
    """The first directory (the page OpenCV decodes): width, length and the tile size (a tile is one buffer)."""
    e = "<" if b[:2] == b"II" else ">"
    big = struct.unpack_from(e + "H", b, 2)[0] == 43
    off = struct.unpack_from(e + "Q", b, 8)[0] if big else struct.unpack_from(e + "I", b, 4)[0]
    count = struct.unpack_from(e + ("Q" if big else "H"), b, off)[0]
    size, first = (20, off + 8) if big else (12, off + 2)
    if count > _MAX_STEPS or first + count * size > len(b):
        raise _Refused(f"TIFF directory of {count} entries at offset {off} does not fit the file; truncated TIFF")
    fmt = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q"}
    tags: dict[int, int] = {}
    for k in range(count):
        p = first + k * size
        tag, typ = struct.unpack_from(e + "HH", b, p)
        if tag not in (256, 257, 322, 323):  # ImageWidth, ImageLength, TileWidth, TileLength
            continue
        n = struct.unpack_from(e + ("Q" if big else "I"), b, p + 4)[0]
        if n != 1 or typ not in fmt:
            raise _Refused(f"TIFF tag {tag} with type {typ} x {n}; not a TIFF OpenCV reads")
        value = struct.unpack_from(e + fmt[typ], b, p + (12 if big else 8))[0]
        if value < 0:
            raise _Refused(f"TIFF tag {tag} is negative ({value})")
        tags[tag] = max(tags.get(tag, 0), value)  # a repeated tag: the larger one (libtiff warns and keeps one)
    if 256 not in tags or 257 not in tags:
        raise _Refused("TIFF without ImageWidth / ImageLength in its first directory; not a valid TIFF")
    w, h = tags[256], tags[257]
    tile = tags.get(322, w) * tags.get(323, h) if (322 in tags or 323 in tags) else 0
    return "TIFF", w, h, max(w * h, tile)


def _u24(b: bytes, i: int) -> int:
    return b[i] | b[i + 1] << 8 | b[i + 2] << 16


def _webp(b: bytes) -> tuple[str, int, int, int]:
    """RIFF chunks: the VP8X canvas, animation frames (ANMF) and the first VP8 / VP8L bitstream's own size."""
    size: tuple[int, int] | None = None
    largest, i = 0, 12
    for _ in range(_MAX_STEPS):
        if i + 8 > len(b):
            break
        kind, n = struct.unpack_from("<4sI", b, i)
        p = i + 8
        if kind == b"VP8X":
            size = (1 + _u24(b, p + 4), 1 + _u24(b, p + 7))
        elif kind == b"ANMF":
            largest = max(largest, (1 + _u24(b, p + 6)) * (1 + _u24(b, p + 9)))
        elif kind == b"VP8 ":
            if b[p + 3:p + 6] != b"\x9d\x01\x2a":
                raise _Refused("WebP VP8 chunk without a key frame start code; not a valid WebP")
            w, h = (v & 0x3FFF for v in struct.unpack_from("<HH", b, p + 6))
            size = size or (w, h)
            largest = max(largest, w * h)
        elif kind == b"VP8L":
            if b[p] != 0x2F:
                raise _Refused("WebP VP8L chunk without its signature; not a valid WebP")
            bits = struct.unpack_from("<I", b, p + 1)[0]
            w, h = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            size = size or (w, h)
            largest = max(largest, w * h)
        i = p + n + (n & 1)
    else:
        raise _Refused(f"WebP with more than {_MAX_STEPS} chunks; not a camera image")
    if size is None:
        raise _Refused("WebP without a VP8X, VP8 or VP8L chunk; truncated or not a valid WebP")
    return "WebP", size[0], size[1], largest


def _gif(b: bytes) -> tuple[str, int, int, int]:
    """The logical screen and the first frame (OpenCV decodes the first frame; it may be larger than the screen)."""
    w, h = struct.unpack_from("<HH", b, 6)
    flags, i = b[10], 13
    if flags & 0x80:
        i += 3 << ((flags & 7) + 1)  # global colour table
    for _ in range(_MAX_STEPS):
        block = b[i]
        if block == 0x2C:  # image descriptor
            x, y, fw, fh = struct.unpack_from("<HHHH", b, i + 1)
            return "GIF", w, h, max(w * h, fw * fh, (x + fw) * (y + fh))
        if block != 0x21:
            raise _Refused(f"GIF block 0x{block:02X} before the first frame; no image in this GIF")
        i += 2  # extension introducer and label, then data sub-blocks up to an empty one
        for _ in range(_MAX_STEPS):
            n = b[i]
            i += 1 + n
            if n == 0:
                break
        else:
            raise _Refused(f"GIF extension with more than {_MAX_STEPS} sub-blocks; not a camera image")
    raise _Refused(f"GIF with more than {_MAX_STEPS} blocks before its first frame; not a camera image")


def _j2k_siz(b: bytes, i: int) -> tuple[int, int]:
    """Image size from a JPEG 2000 codestream's SIZ segment (right after SOC at ``i``)."""
    if b[i:i + 4] != b"\xff\x4f\xff\x51":
        raise _Refused("JPEG 2000 codestream without SIZ after SOC; not a valid JPEG 2000")
    x1, y1, x0, y0 = struct.unpack_from(">IIII", b, i + 8)
    components = struct.unpack_from(">H", b, i + 40)[0]
    if components > 4:
        raise _Refused(f"JPEG 2000 with {components} components; expected 1, 3 or 4")
    return x1 - x0, y1 - y0


def _jp2(b: bytes) -> tuple[str, int, int, int]:
    """JP2 boxes: the ``ihdr`` size and the codestream's own SIZ size (the larger counts)."""
    if b[:4] == b"\xff\x4f\xff\x51":
        w, h = _j2k_siz(b, 0)
        return "JPEG 2000", w, h, w * h
    sizes: list[tuple[int, int]] = []
    stack: list[tuple[int, int]] = []
    i, end = 0, len(b)
    for _ in range(_MAX_STEPS):
        if i + 8 > end:
            if not stack:
                break
            i, end = stack.pop()
            continue
        n, kind = struct.unpack_from(">I4s", b, i)
        head = 8
        if n == 1:
            n, head = struct.unpack_from(">Q", b, i + 8)[0], 16
        elif n == 0:
            n = end - i
        if n < head:
            raise _Refused(f"JPEG 2000 box '{kind.decode('latin-1')}' of {n} bytes; not a valid JP2")
        if kind == b"jp2h":
            stack.append((i + n, end))
            i, end = i + head, min(i + n, end)
            continue
        if kind == b"ihdr":
            h, w, components = struct.unpack_from(">IIH", b, i + head)
            if components > 4:
                raise _Refused(f"JPEG 2000 with {components} components; expected 1, 3 or 4")
            sizes.append((w, h))
        elif kind == b"jp2c":
            sizes.append(_j2k_siz(b, i + head))
            break
        i += n
    else:
        raise _Refused(f"JP2 with more than {_MAX_STEPS} boxes; not a camera image")
    if not sizes:
        raise _Refused("JP2 without an image header or codestream; truncated JPEG 2000")
    w, h = sizes[-1]
    return "JPEG 2000", w, h, max(sw * sh for sw, sh in sizes)


def _pnm(b: bytes) -> tuple[str, int, int, int]:
    """P1..P6: width and height, separated by whitespace and ``#`` comments."""
    values: list[int] = []
    i, limit = 2, min(len(b), _HEAD_BYTES)
    while len(values) < 2:
        while i < limit and (b[i] in b" \t\r\n\v\f" or b[i] == 0x23):
            if b[i] == 0x23:
                j = b.find(b"\n", i, limit)
                if j < 0:
                    raise _Refused(f"PNM header comment does not end within {_HEAD_BYTES} bytes")
                i = j
            i += 1
        j = i
        while j < limit and 0x30 <= b[j] <= 0x39:
            j += 1
        if j == i or j - i > 10:
            raise _Refused("PNM header without a valid width and height")
        values.append(int(b[i:j]))
        i = j
    return "PNM", values[0], values[1], values[0] * values[1]


def _pam(b: bytes) -> tuple[str, int, int, int]:
    end = b.find(b"ENDHDR", 0, _HEAD_BYTES)
    if end < 0:
        raise _Refused(f"PAM header without ENDHDR in its first {_HEAD_BYTES} bytes")
    fields: dict[str, int] = {}
    for line in b[3:end].split(b"\n"):
        key, _, value = line.split(b"#")[0].strip().partition(b" ")
        if key in (b"WIDTH", b"HEIGHT", b"DEPTH"):
            text = value.strip()
            if not text.isdigit() or len(text) > 10:
                raise _Refused(f"PAM {key.decode()} is not a number")
            fields[key.decode()] = int(text)
    if "WIDTH" not in fields or "HEIGHT" not in fields:
        raise _Refused("PAM header without WIDTH and HEIGHT")
    if fields.get("DEPTH", 1) > 4:
        raise _Refused(f"PAM with DEPTH {fields['DEPTH']}; expected 1 to 4 channels")
    return "PAM", fields["WIDTH"], fields["HEIGHT"], fields["WIDTH"] * fields["HEIGHT"]


def _sun(b: bytes) -> tuple[str, int, int, int]:
    w, h = struct.unpack_from(">II", b, 4)
    return "Sun raster", w, h, w * h


def _float_only(name: str) -> Callable[[bytes], tuple[str, int, int, int]]:
    def refuse(b: bytes) -> tuple[str, int, int, int]:
        raise _Refused(f"{name} images hold float pixels, which the runtime does not take; give an 8- or "
                       "16-bit PNG, JPEG or TIFF")
    return refuse


_PARSERS = [  # OpenCV's decoder order (AVIF, checked above, comes first)
    (lambda b: b[:2] == b"BM", _bmp),
    (lambda b: b.startswith((b"#?RGBE", b"#?RADIANCE")), _float_only("Radiance HDR")),
    (lambda b: b[:3] == b"\xff\xd8\xff", _jpeg),
    (lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP", _webp),
    (lambda b: b[:4] == b"\x76\x2f\x31\x01", _float_only("OpenEXR")),
    (lambda b: b[:8] == b"\x89PNG\r\n\x1a\n", _png),
    (lambda b: b[:6] in (b"GIF87a", b"GIF89a"), _gif),
    (lambda b: len(b) > 2 and b[0] == 0x50 and 0x31 <= b[1] <= 0x36 and b[2] in b" \t\r\n\v\f", _pnm),
    (lambda b: len(b) > 2 and b[:2] in (b"PF", b"Pf") and b[2] in b" \t\r\n\v\f", _float_only("PFM")),
    (lambda b: b[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), _tiff),
    (lambda b: b[:12] == b"\0\0\0\x0cjP  \r\n\x87\n" or b[:4] == b"\xff\x4f\xff\x51", _jp2),
    (lambda b: len(b) > 2 and b[:2] == b"P7" and b[2] in b" \t\r\n\v\f", _pam),
    (lambda b: b[:4] == b"\x59\xa6\x6a\x95", _sun),
]
