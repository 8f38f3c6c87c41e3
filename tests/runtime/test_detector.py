"""Model loading errors, metadata, providers, thread safety, batch, tiling, import hygiene."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edgevision.core.errors import ConfigError
from edgevision.runtime import Detector, ModelFormatError, read_metadata
from edgevision.runtime.metadata import SCHEMA
from edgevision.runtime.tiling import slice_windows
from tests.runtime.conftest import make_meta

RAW = {"output0": np.zeros((1, 7, 4), np.float32)}


def one_line_error(path: Path, *needles: str) -> str:
    with pytest.raises(ModelFormatError) as e:
        Detector(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_metadata_round_trip(build) -> None:
    meta = make_meta(["scratch", "dent"], size_hw=(64, 32), resize="stretch", uint16="minmax")
    meta.thresholds = {"classes": {"scratch": 0.3, "dent": 0.6}}
    meta.source = {"backend": "ultralytics", "arch": "yolov8n"}
    path = build("const", meta, outputs={"output0": np.zeros((1, 6, 4), np.float32)})
    got = read_metadata(path)
    assert got.to_dict() == meta.to_dict()
    det = Detector(path)
    assert det.metadata.to_dict() == meta.to_dict() and det.names == ["scratch", "dent"]
    assert det.providers == ["CPUExecutionProvider"] and det.path == path


def test_bad_model_files(tmp_path, build) -> None:
    one_line_error(tmp_path / "missing.onnx", "not found")
    (tmp_path / "empty.onnx").write_bytes(b"")
    one_line_error(tmp_path / "empty.onnx", "empty")
    (tmp_path / "rand.onnx").write_bytes(np.random.default_rng(0).bytes(5000))
    one_line_error(tmp_path / "rand.onnx", "not an ONNX model", "edgevision export")
    one_line_error(const_model_text(tmp_path / "bare.onnx", None), "no EdgeVision metadata", "edgevision export")
    newer = make_meta().to_json().replace(SCHEMA, "edgevision.model/2")
    one_line_error(const_model_text(tmp_path / "newer.onnx", newer), "edgevision.model/2", "re-export")
    layout = make_meta().to_json().replace('"yolo-raw"', '"yolo-mystery"')
    one_line_error(const_model_text(tmp_path / "layout.onnx", layout), "yolo-mystery", "supported")


def const_model_text(path: Path, text: str | None) -> Path:
    """A valid graph carrying arbitrary metadata text."""
    from onnx import TensorProto, helper

    from tests.runtime.conftest import save_model, zero_of_input
    return save_model(path, zero_of_input("images", "output0"),
                      [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [])], text)


@pytest.mark.parametrize("layout,outputs,needle", [
    ("yolo-raw", {"output0": np.zeros((1, 9, 4), np.float32)}, "(B, 7, N)"),       # 3 classes -> 7 rows
    ("yolo-raw", {"output0": np.zeros((7, 4), np.float32)}, "(B, 7, N)"),
    ("yolo-end2end", {"output0": np.zeros((1, 300, 7), np.float32)}, "(B, K, 6)"),
    ("yolo-end2end", {"other": np.zeros((1, 300, 6), np.float32)}, "not in the graph"),
])
def test_graph_contradicting_metadata(build, layout, outputs, needle) -> None:
    path = build("const", make_meta(layout=layout), outputs=outputs)
    one_line_error(path, needle)


def test_providers_explicit_and_unknown(build) -> None:
    path = build("const", make_meta(), outputs=RAW)
    assert Detector(path, providers=["cpu"], threads=1).providers == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="CPUExecutionProvider") as e:
        Detector(path, providers=["NoSuchExecutionProvider"])
    assert "\n" not in str(e.value)


def scene(seed: int) -> np.ndarray:
    img = np.zeros((120, 160), np.uint8)
    r = np.random.default_rng(seed)
    y, x = int(r.integers(0, 80)), int(r.integers(0, 120))
    img[y:y + 30, x:x + 25] = 255
    return img


def test_threads_and_batch_equal_serial(build) -> None:
    det = Detector(build("bbox", make_meta(["o"], size_hw=(64, 96))), threads=1)
    images = [scene(i) for i in range(24)]
    serial = [det(im) for im in images]
    with ThreadPoolExecutor(6) as pool:
        threaded = list(pool.map(det, images))
    batched = det.batch(images)
    assert det.dynamic_batch
    for s, t, b in zip(serial, threaded, batched):
        np.testing.assert_array_equal(s.xyxy, t.xyxy)
        np.testing.assert_array_equal(s.xyxy, b.xyxy)
        np.testing.assert_array_equal(s.scores, b.scores)


def test_batch_with_fixed_batch_axis(build) -> None:
    det = Detector(build("bbox", make_meta(["o"], size_hw=(64, 96)), batch=1))
    assert not det.dynamic_batch
    images = [scene(i) for i in range(3)]
    for s, b in zip([det(im) for im in images], det.batch(images)):
        np.testing.assert_array_equal(s.xyxy, b.xyxy)


def test_slice_windows_cover_the_image() -> None:
    wins = slice_windows(1000, 700, (320, 320), 0.2)
    xs = sorted({w[0] for w in wins})
    assert xs == [0, 256, 380] and sorted({w[1] for w in wins}) == [0, 256, 512, 680]
    assert all(x1 - x0 == 320 and y1 - y0 == 320 for x0, y0, x1, y1 in wins)
    assert slice_windows(100, 50, (320, 320), 0.2) == [(0, 0, 50, 100)]


@pytest.mark.parametrize("square", [(300, 100, 340, 140), (600, 250, 650, 330), (0, 0, 30, 30)])
def test_tiled_object_on_a_border_found_once(build, square) -> None:
    det = Detector(build("bbox", make_meta(["o"], size_hw=(320, 320))))
    img = np.zeros((1000, 1000, 3), np.uint8)
    x0, y0, x1, y1 = square
    img[y0:y1, x0:x1] = 255
    d = det.tiled(img, overlap=0.2)
    assert len(d) == 1 and d.image_size == (1000, 1000)
    np.testing.assert_array_equal(d.xyxy[0], square)


def test_tiled_full_pass_finds_large_objects(build) -> None:
    det = Detector(build("bbox", make_meta(["o"], size_hw=(320, 320))))
    img = np.zeros((1000, 1000), np.uint8)
    img[200:800, 150:850] = 255
    d = det.tiled(img, full_pass=True)
    assert len(d) == 1
    np.testing.assert_allclose(d.xyxy[0], [150, 200, 850, 800], atol=1000 / 320 + 0.01)
    assert len(det.tiled(img, tile=(320, 320), overlap=0.25)) >= 1


def test_import_hygiene_in_a_fresh_interpreter(build) -> None:
    path = build("bbox", make_meta(["o"]))
    code = textwrap.dedent(f"""
        import sys, numpy as np
        import edgevision.runtime as rt
        assert "onnxruntime" not in sys.modules, "import edgevision.runtime must be lazy"
        det = rt.Detector({str(path)!r})
        det(np.zeros((50, 60, 3), np.uint8))
        det.tiled(np.zeros((200, 300), np.uint8))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ultralytics", "albumentations", "onnx",
                                                                     "torchvision", "PIL"))
        print(heavy)
        assert not heavy, heavy
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout
