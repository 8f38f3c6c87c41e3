"""Pre-processing equals the declared conversion bit for bit; boxes map back to original pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgevision.runtime import Detector
from edgevision.runtime.images import ImageReadError
from edgevision.runtime.preprocess import Preprocessor
from tests.runtime.conftest import make_meta


def ultralytics_letterbox(img: np.ndarray, hw: tuple[int, int], pad: int = 114) -> np.ndarray:
    """Ultralytics 8.4 LetterBox(auto=False, scaleup=True, center=True) for a BGR uint8 image (copied logic)."""
    shape = img.shape[:2]
    r = min(hw[0] / shape[0], hw[1] / shape[1])
    new_unpad = max(round(shape[1] * r), 1), max(round(shape[0] * r), 1)
    dw, dh = (hw[1] - new_unpad[0]) / 2, (hw[0] - new_unpad[1]) / 2
    if shape[::-1] != new_unpad:
        img = cv2.resize(img, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad,) * 3)


def expected_tensor(bgr: np.ndarray, spec) -> np.ndarray:  # noqa: ANN001
    chans = bgr[:, :, ::-1] if spec.channel_order == "RGB" else bgr
    f = chans.astype(np.float64) * spec.scale
    f = (f - np.array(spec.mean)) / np.array(spec.std)
    return f.transpose(2, 0, 1)[None].astype(np.float16 if spec.dtype == "float16" else np.float32)


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(48, 64), (100, 37), (64, 64), (13, 200), (301, 299), (5, 5)])
def test_letterbox_bit_exact(build, rng, shape) -> None:
    det = Detector(build("bbox", make_meta(["o"], size_hw=(64, 96))))
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    tensor, tf = det.preprocess(img)
    want = expected_tensor(ultralytics_letterbox(img, (64, 96)), det.metadata.input)
    assert tensor.shape == (1, 3, 64, 96) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor, want)
    # mapping back = ultralytics.utils.ops.scale_boxes (ratio_pad=None)
    h0, w0 = shape
    gain = min(64 / h0, 96 / w0)
    nh, nw = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    px, py = round((96 - nw) / 2 - 0.1), round((64 - nh) / 2 - 0.1)
    box = np.array([[px + 1.0, py + 2.0, px + 10.0, py + 20.0]], np.float32)
    ref = np.array([(1.0) / (nw / w0), 2.0 / (nh / h0), 10.0 / (nw / w0), 20.0 / (nh / h0)])
    ref[0::2] = ref[0::2].clip(0, w0)
    ref[1::2] = ref[1::2].clip(0, h0)
    np.testing.assert_allclose(tf.to_original(box)[0], ref, rtol=1e-5)


def test_stretch_bgr_mean_std_fp16() -> None:
    rng = np.random.default_rng(1)
    meta = make_meta(["o"], size_hw=(32, 48), resize="stretch", channel_order="BGR", mean=(0.4, 0.5, 0.6),
                     std=(0.2, 0.25, 0.3), dtype="float16")
    pre = Preprocessor(meta.input)
    for shape, interp in (((100, 120, 3), cv2.INTER_AREA), ((20, 30, 3), cv2.INTER_LINEAR)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        tensor, tf = pre(img)
        want = expected_tensor(cv2.resize(img, (48, 32), interpolation=interp), meta.input)
        assert tensor.dtype == np.float16
        np.testing.assert_array_equal(tensor, want)
        assert tf.gain_xy == (48 / shape[1], 32 / shape[0]) and tf.pad_xy == (0, 0)


def test_mono_bgra_and_16_bit(build, rng) -> None:
    det = Detector(build("bbox", make_meta(["o"], size_hw=(64, 64))))
    mono = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    rep = np.repeat(mono[:, :, None], 3, 2)
    ref = det.preprocess(rep)[0]
    np.testing.assert_array_equal(det.preprocess(mono)[0], ref)
    np.testing.assert_array_equal(det.preprocess(mono[:, :, None])[0], ref)
    bgra = np.concatenate([rep, rng.integers(0, 256, (40, 50, 1), dtype=np.uint8)], 2)
    np.testing.assert_array_equal(det.preprocess(bgra)[0], ref)
    img16 = rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16)
    np.testing.assert_array_equal(det.preprocess(img16)[0], det.preprocess((img16 >> 8).astype(np.uint8))[0])


def test_16_bit_minmax_matches_torchvision_backend_reader(build, rng, tmp_path) -> None:
    det = Detector(build("bbox", make_meta(["o"], size_hw=(64, 64), uint16="minmax")))
    img16 = rng.integers(1000, 3000, (40, 50), dtype=np.uint16)
    path = tmp_path / "ünïcode 16.png"
    assert cv2.imencode(".png", img16)[1].tofile(str(path)) is None
    from edgevision.train.torchvision_backend import read_image_rgb  # torch-free function (imports cv2 only)
    rgb = read_image_rgb(path)
    want = det.preprocess(np.ascontiguousarray(rgb[:, :, ::-1]))[0]
    np.testing.assert_array_equal(det.preprocess(path)[0], want)
    np.testing.assert_array_equal(det.preprocess(path.read_bytes())[0], want)
    np.testing.assert_array_equal(det.preprocess(img16)[0], want)


def test_boxes_map_back_to_original_pixels(build) -> None:
    det = Detector(build("bbox", make_meta(["o"], size_hw=(64, 96))))
    img = np.zeros((300, 200), np.uint8)
    img[60:120, 40:100] = 255
    d = det(img)
    assert d.image_size == (300, 200) and len(d) == 1
    np.testing.assert_allclose(d.xyxy[0], [40, 60, 100, 120], atol=300 / 64 + 0.01)
    rec = d.to_record("x.png")
    assert rec.size_hw == (300, 200) and rec.scores is not None and len(rec) == 1
    assert d.to_dict()["detections"][0]["class"] == "o"


@pytest.mark.parametrize("bad", [
    np.zeros((10, 10, 3), np.float64), np.zeros((10, 10), np.int32), np.zeros((10, 10), bool),
    np.zeros((10, 10, 2), np.uint8), np.zeros((1, 10, 10, 3), np.uint8), np.zeros((0, 10, 3), np.uint8),
    np.zeros((10,), np.uint8), b"not an image", b"", "/no/such/image.png", 42,
])
def test_bad_images_one_line_errors(build, bad) -> None:
    det = Detector(build("bbox", make_meta(["o"])))
    with pytest.raises(ImageReadError) as e:
        det(bad)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_decompression_bomb_is_an_image_read_error(build, tmp_path) -> None:
    """A PNG whose header declares 40000x40000 pixels: OpenCV refuses it with cv2.error (found by the
    reliability suite); the runtime must turn that into its one-line ImageReadError, for bytes and paths."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))
    (tmp_path / "bomb.png").write_bytes(data)
    det = Detector(build("bbox", make_meta(["o"])))
    for image in (data, tmp_path / "bomb.png"):
        with pytest.raises(ImageReadError, match="40000x40000 = 1600.0 MP, above the limit") as e:
            det(image)
        assert "\n" not in str(e.value)
