"""`decode_image` sizes every encoded image from its header before decoding: the header reader agrees with
OpenCV on every format it writes, refuses what it cannot size, and no decompression bomb reaches a decoder."""

from __future__ import annotations

import io
import random

import cv2
import numpy as np
import pytest
from PIL import Image

from edgevision.runtime import images
from edgevision.runtime.images import (
    ImageReadError,
    ImageTooLargeError,
    decode_image,
    read_image_header,
)
from tests.runtime import bombs

LIMIT = 100_000_000  # edgevision serve's default --max-pixels-mp 100


def _cv2(ext: str, img: np.ndarray) -> bytes | None:
    try:
        ok, buf = cv2.imencode(ext, img)
    except cv2.error:
        return None
    return buf.tobytes() if ok else None


def _pillow(img: np.ndarray, **kw: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(img).save(out, **kw)
    return out.getvalue()


def _samples() -> list[tuple[str, bytes]]:
    """Real files of every format OpenCV and Pillow write here, in several sizes, depths and variants."""
    rng = np.random.default_rng(0)
    out = []
    for shape in [(7, 9, 3), (40, 70), (50, 300, 4), (301, 17, 3)]:
        img = rng.integers(0, 255, shape, dtype=np.uint8)
        rgb = img[:, :, :3] if img.ndim == 3 else img
        grey = img if img.ndim == 2 else img[:, :, 0]
        for ext, arr in [(".png", img), (".jpg", rgb), (".bmp", img), (".tiff", img), (".webp", rgb),
                         (".gif", img), (".jp2", rgb), (".ppm", rgb if rgb.ndim == 3 else cv2.merge([rgb] * 3)),
                         (".pgm", grey), (".pbm", grey), (".pam", img), (".sr", rgb)]:
            data = _cv2(ext, arr)
            if data is not None:
                out.append((f"{ext} {shape}", data))
        colour = np.ascontiguousarray(rgb if rgb.ndim == 3 else cv2.merge([rgb] * 3))
        for label, kw in [("progressive JPEG", {"format": "JPEG", "progressive": True}),
                          ("tiled TIFF", {"format": "TIFF", "tiffinfo": {322: 16, 323: 16}}),
                          ("BigTIFF", {"format": "TIFF", "big_tiff": True}),
                          ("lossless WebP", {"format": "WEBP", "lossless": True}),
                          ("J2K codestream", {"format": "JPEG2000", "no_jp2": True})]:
            out.append((f"{label} {shape}", _pillow(colour, **kw)))
    deep = rng.integers(0, 65535, (20, 30, 3), dtype=np.uint16)
    for ext in (".png", ".tiff", ".ppm"):
        out.append((f"16-bit {ext}", _cv2(ext, deep) or b""))
    frames = [Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)) for _ in range(3)]
    for fmt in ("GIF", "PNG", "WEBP"):
        buf = io.BytesIO()
        frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
        out.append((f"animated {fmt}", buf.getvalue()))
    # only what OpenCV itself reads back (it cannot read its own 4-channel PAM without a TUPLTYPE)
    return [(k, v) for k, v in out if cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_UNCHANGED) is not None]


SAMPLES = _samples()


@pytest.mark.parametrize(("label", "data"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_header_size_is_the_decoded_size(label: str, data: bytes) -> None:
    header = read_image_header(data)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert header.size_hw == decoded.shape[:2], (label, header)
    assert header.buffer_pixels >= decoded.shape[0] * decoded.shape[1]
    np.testing.assert_array_equal(decode_image(data, max_pixels=LIMIT), decoded)


@pytest.mark.parametrize("name", list(bombs.BOMBS))
def test_bombs_are_refused_before_any_decoder_runs(name: str, monkeypatch, tmp_path) -> None:
    data, _ = bombs.BOMBS[name]
    header = read_image_header(data)
    assert header.buffer_pixels > LIMIT, header

    def no_decoding(*_: object) -> None:
        raise AssertionError("the decoder was called")

    monkeypatch.setattr(images.cv2, "imdecode", no_decoding)
    path = tmp_path / "bomb.img"
    path.write_bytes(data)
    for image in (data, bytearray(data), memoryview(data), path, str(path)):
        with pytest.raises(ImageTooLargeError) as e:
            decode_image(image, max_pixels=LIMIT)
        message = str(e.value)
        assert "\n" not in message and "above the limit of 100 MP" in message, message
        assert e.value.header == header and e.value.limit == LIMIT


def test_the_probe_bomb_is_refused_by_predict_and_the_detector(build, tmp_path, monkeypatch) -> None:
    """The same check runs wherever images are decoded: `edgevision predict`'s reader and `Detector`."""
    from edgevision.infer import read_image_file
    from edgevision.runtime import Detector
    from tests.runtime.conftest import make_meta

    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(bombs.jpeg_truncated_app14(40000, 40000))  # above even the default limit (2^30 pixels)
    det = Detector(build("bbox", make_meta(["o"])))
    monkeypatch.setattr(images.cv2, "imdecode", lambda *_: pytest.fail("the decoder was called"))
    img, error = read_image_file(bomb)
    assert img is None and error is not None and "40000x40000" in error and "above the limit" in error
    with pytest.raises(ImageTooLargeError):
        det(bomb)
    with pytest.raises(ImageTooLargeError):
        det(bomb.read_bytes())


@pytest.mark.parametrize(("label", "data", "message"), [
    ("AVIF (its decoder may allocate more than the header says)", _cv2(".avif", np.zeros((8, 8, 3), np.uint8)),
     "AVIF / HEIF images are not accepted"),
    ("HEIF brand", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 32, "AVIF / HEIF"),
    ("PFM (float)", b"PF\n8 8\n-1\n" + b"\0" * 768, "float pixels"),
    ("Radiance HDR (float)", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 12000 +X 12000\n" + b"\0" * 64,
     "float pixels"),
    ("OpenEXR (float)", b"\x76\x2f\x31\x01\x02\0\0\0" + b"\0" * 64, "float pixels"),
    ("unknown bytes", b"this is not an image at all", "not a PNG, JPEG"),
    ("raw VP8L bitstream (OpenCV would decode it)", b"\x2f" + b"\xff" * 40, "not a PNG, JPEG"),
    ("JPEG that reaches SOS before any SOF", b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 40, "before the frame header"),
    ("JPEG with a zero-length segment", b"\xff\xd8\xff\xe0\x00\x00" + b"\0" * 40, "length 0"),
    ("TIFF whose directory lies past the end", b"II*\0\xff\xff\x00\x00" + b"\0" * 40, "truncated"),
    ("TIFF whose width is an array", b"II*\0\x08\0\0\0\x01\0" + b"\x00\x01\x04\x00\x02\0\0\0\x10\0\0\0" + b"\0" * 16,
     "type 4 x 2"),
    ("PAM with 5 channels", b"P7\nWIDTH 8\nHEIGHT 8\nDEPTH 5\nMAXVAL 255\nENDHDR\n" + b"\0" * 320, "DEPTH 5"),
    ("PNM without a size", b"P5\n# nothing else\n", "PNM"),
    ("JPEG 2000 with 5 components", bombs.j2k(8, 8).replace(b"\x00\x03\x07", b"\x00\x05\x07", 1), "5 components"),
    ("empty", b"", "empty"),
])
def test_what_cannot_be_sized_is_refused_before_decoding(label: str, data: bytes | None, message: str,
                                                         monkeypatch) -> None:
    if data is None:
        pytest.skip("this OpenCV build writes no AVIF")
    monkeypatch.setattr(images.cv2, "imdecode", lambda *_: pytest.fail("the decoder was called"))
    with pytest.raises(ImageReadError) as e:
        decode_image(data)
    assert message in str(e.value), (label, str(e.value))
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_broken_headers_give_one_clear_error_never_a_crash() -> None:
    """Every prefix of a real file's header, and random corruptions of it: an `ImageHeader` or an
    `ImageReadError`, nothing else (bounded: 64 prefixes and 40 corruptions per format)."""
    rng = random.Random(0)
    for label, data in SAMPLES[:25] + [(k, v[0]) for k, v in bombs.BOMBS.items()]:
        cases = [data[:n] for n in range(min(64, len(data)))]
        for _ in range(40):
            b = bytearray(data[:4096])
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(min(len(b), 200))] = rng.randrange(256)
            cases.append(bytes(b))
        for case in cases:
            try:
                read_image_header(case)
            except ImageReadError as e:
                assert "\n" not in str(e), (label, str(e))


def test_decoder_output_is_checked_against_the_limit_too(monkeypatch) -> None:
    """Defence in depth: if a decoder ever returned more pixels than its header declared, the result is refused."""
    small = _cv2(".png", np.zeros((10, 10, 3), np.uint8))
    assert small is not None
    monkeypatch.setattr(images.cv2, "imdecode", lambda *_: np.zeros((200, 300, 3), np.uint8))
    with pytest.raises(ImageTooLargeError, match="decoded to 300x200"):
        decode_image(small, max_pixels=50_000)
