"""Decompression bombs: tiny files whose header declares a huge image, one per format the decoder accepts.

Each is built from a small real image with its size fields patched, so it takes kilobytes to build and
would take hundreds of megabytes to decode. ``pillow_blind`` ones are the bypass class of the hostile
probe: Pillow cannot open them, or reports a small size where the decoder allocates a large buffer.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def _encode(ext: str, img: np.ndarray | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, np.full((16, 16, 3), 128, np.uint8) if img is None else img)
    assert ok, ext
    return buf.tobytes()


def jpeg(w: int, h: int) -> bytes:
    """A real 16x16 JPEG whose SOF0 declares ``w x h`` (libjpeg decodes it, filling the missing data with grey)."""
    b = _encode(".jpg")
    i = b.index(b"\xff\xc0")
    return b[:i + 5] + struct.pack(">HH", h, w) + b[i + 9:]


def jpeg_truncated_app14(w: int = 12000, h: int = 12000) -> bytes:
    """The probe's file: an Adobe APP14 segment cut short right after SOI. Pillow cannot open it; OpenCV
    decodes it (12000x12000: +800 MB)."""
    b = jpeg(w, h)
    return b[:2] + b"\xff\xee" + struct.pack(">H", 8) + b"Adobe\x00" + b[2:]


def jpeg_truncated_jfif(w: int = 11000, h: int = 11000) -> bytes:
    """Same class, another segment: the JFIF APP0 cut short. Pillow cannot open it; OpenCV decodes it."""
    b = jpeg(w, h)
    assert b[2:4] == b"\xff\xe0"
    length = struct.unpack(">H", b[4:6])[0]
    return b[:2] + b"\xff\xe0" + struct.pack(">H", 7) + b"JFIF\x00" + b[4 + length:]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w: int, h: int) -> bytes:
    """A PNG whose IHDR declares ``w x h`` followed by a tiny, truncated body."""
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def apng_frame(w: int, h: int) -> bytes:
    """A 16x16 APNG whose first frame (fcTL) declares ``w x h``."""
    fctl = struct.pack(">IIIIIHHBB", 0, w, h, 0, 0, 1, 10, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
            + _png_chunk(b"acTL", struct.pack(">II", 1, 0)) + _png_chunk(b"fcTL", fctl)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * (16 * 49))) + _png_chunk(b"IEND", b""))


def tiff_tile(w: int = 64, h: int = 64, tile: int = 12288) -> bytes:
    """A ``w x h`` TIFF whose one deflate tile is ``tile x tile``: Pillow reports 64x64, OpenCV allocates the tile
    (12288: +440 MB) before libtiff gives up."""
    data = zlib.compress(b"\0" * (tile * tile), 9)
    entries = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1), (284, 3, 1),
               (322, 4, tile), (323, 4, tile), (324, 4, 0), (325, 4, len(data))]
    data_at = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\0" + struct.pack("<IH", 8, len(entries))
    for tag, typ, value in entries:
        value = data_at if tag == 324 else value
        out += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    return out + struct.pack("<I", 0) + data


def tiff(w: int, h: int) -> bytes:
    """A real small TIFF whose ImageWidth / ImageLength say ``w x h``."""
    b = bytearray(_encode(".tiff"))
    off = struct.unpack_from("<I", b, 4)[0]
    for k in range(struct.unpack_from("<H", b, off)[0]):
        p = off + 2 + 12 * k
        tag, typ = struct.unpack_from("<HH", b, p)
        if tag in (256, 257):
            value = w if tag == 256 else h
            b[p + 2:p + 12] = struct.pack("<HI", 4, 1) + struct.pack("<I", value)
    return bytes(b)


def gif_frame(w: int = 12000, h: int = 12000) -> bytes:
    """A 16x16 GIF whose first frame declares ``w x h``."""
    b = bytearray(_encode(".gif"))
    i = b.index(b"\x2c", 13)  # the first image descriptor (after the colour table and extensions)
    while b[i - 1] != 0:  # an extension or table byte can be 0x2C too: the descriptor follows a block end
        i = b.index(b"\x2c", i + 1)
    b[i + 5:i + 9] = struct.pack("<HH", w, h)
    return bytes(b)


def gif(w: int, h: int) -> bytes:
    b = bytearray(_encode(".gif"))
    b[6:10] = struct.pack("<HH", w, h)
    return bytes(b)


def webp_canvas(w: int = 16384, h: int = 16384) -> bytes:
    """A lossless 16x16 WebP behind a VP8X chunk whose canvas is ``w x h``."""
    b = _encode(".webp", np.full((16, 16, 3), 128, np.uint8))
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + b[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp(w: int, h: int) -> bytes:
    b = bytearray(_encode(".bmp"))
    b[18:26] = struct.pack("<ii", w, -h)
    return bytes(b)


def pnm(w: int, h: int) -> bytes:
    return f"P5\n# a comment\n{w} {h}\n255\n".encode() + b"\0" * 64


def pam(w: int, h: int) -> bytes:
    return f"P7\nWIDTH {w}\nHEIGHT {h}\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n".encode() + b"\0" * 64


def sun_raster(w: int, h: int) -> bytes:
    return struct.pack(">8I", 0x59A66A95, w, h, 24, 0, 1, 0, 0) + b"\0" * 64


def j2k(w: int, h: int) -> bytes:
    """A JPEG 2000 codestream whose SIZ declares ``w x h``."""
    siz = struct.pack(">HIIIIIIIIH", 0, w, h, 0, 0, 1024, 1024, 0, 0, 3) + b"\x07\x01\x01" * 3
    return b"\xff\x4f\xff\x51" + struct.pack(">H", len(siz) + 2) + siz + b"\xff\x90" + b"\0" * 64


BOMBS = {  # name -> (bytes, pillow_blind)
    "JPEG, truncated Adobe APP14 (the probe's file)": (jpeg_truncated_app14(), True),
    "JPEG, truncated JFIF APP0": (jpeg_truncated_jfif(), True),
    "JPEG, plain SOF0": (jpeg(11000, 11000), False),
    "PNG IHDR": (png(40000, 40000), False),
    "APNG frame larger than the image": (apng_frame(12000, 12000), True),
    "TIFF tiles larger than the image": (tiff_tile(), True),
    "TIFF ImageWidth / ImageLength": (tiff(20000, 20000), False),
    "GIF frame larger than the screen": (gif_frame(), False),
    "GIF screen": (gif(12000, 12000), False),
    "WebP VP8X canvas": (webp_canvas(), False),
    "BMP": (bmp(20000, 20000), False),
    "PNM": (pnm(20000, 20000), False),
    "PAM": (pam(20000, 20000), True),
    "Sun raster": (sun_raster(20000, 20000), False),
    "JPEG 2000 codestream": (j2k(20000, 20000), False),
}
"""Every bomb declares (somewhere the decoder allocates from) more than 100 MP."""
