"""benchmarks/int8_speed.py on a tiny synthetic case: its child jobs in real subprocesses, no Ultralytics.

A two-Conv ``yolo-raw`` model (built with onnx.helper, EdgeVision metadata) and a 12-image YOLO dataset
with train / val splits stand in for the NEU-DET model: quantized (x86-avx2), checked against
FP32, timed and profiled through the same `spawn` the benchmark uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevision.runtime.metadata import METADATA_KEY, InputSpec, ModelMetadata, OutputSpec
from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "int8_speed.py"
NAMES = ["dark", "light"]
SIZE = 32


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(SCRIPT, "int8_speed")


def tiny_model(path: Path) -> Path:
    """(1, 3, 32, 32) -> Conv 3x3/2 -> Relu -> Conv 1x1 to 4 + 2 channels -> (1, 6, 256) ``output0``."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (6, 8, 1, 1)).astype(np.float32), "w2")
    shape = numpy_helper.from_array(np.array([1, 6, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["images", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Sigmoid", ["c2"], ["s2"], name="sig"),
             helper.make_node("Reshape", ["s2", "shape"], ["output0"], name="reshape")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                            [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, 256])],
                              initializer=[w1, w2, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(names=NAMES, input=InputSpec(size_hw=(SIZE, SIZE)),
                         output=OutputSpec(layout="yolo-raw", names=["output0"]))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()
    onnx.save(model, str(path))
    return path


def tiny_dataset(root: Path) -> Path:
    """A YOLO dataset: 8 train and 4 val 48x48 images, one box each."""
    rng = np.random.default_rng(1)
    for split, n in (("train", 8), ("val", 4)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
            cv2.imwrite(str(root / "images" / split / f"{split}_{i}.jpg"), img)
            (root / "labels" / split / f"{split}_{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.4 0.3\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnc: 2\nnames:\n  0: dark\n  1: light\n")
    return root


def test_children_quantize_check_time_profile(bench: ModuleType, tmp_path: Path) -> None:
    fp32 = tiny_model(tmp_path / "fp32.onnx")
    data = tiny_dataset(tmp_path / "data")
    images = bench.val_images(data, 3)
    assert [Path(p).name for p in images] == ["val_0.jpg", "val_1.jpg", "val_2.jpg"]

    int8 = {}
    for target in bench.TARGETS[:1]:  # x86-vnni differs only in the preset passed through
        out = tmp_path / f"int8-{target}.onnx"
        info = bench._cached(out, False, lambda out=out, target=target: bench.spawn(
            "quantize", {"fp32": str(fp32), "calib": str(data), "out": str(out), "target": target,
                         "method": "minmax", "n": 4, "recipe": None}, mem_cap_mb=4096))
        assert info["ok"], info.get("error")
        assert info["cached"] is False and info["result"]["n"] == 4 and out.is_file()
        assert info["peak_rss_mb"] > 20 and info["wall_s"] > 0  # ru_maxrss of the child, from os.wait4
        assert json.loads(out.with_name(out.name + ".build.json").read_text())["result"]["size_bytes"] > 0
        again = bench._cached(out, False, lambda: pytest.fail("a cached file was built again"))
        assert again["cached"] is True and again["peak_rss_mb"] == info["peak_rss_mb"]
        int8[f"int8-{target}"] = str(out)

    check = bench.spawn("check", {"fp32": str(fp32), "models": {**int8, "same": str(fp32)}, "images": images})
    assert check["ok"], check.get("error")
    rows = check["result"]
    assert rows["same"]["score_corr"] == pytest.approx(1.0) and rows["same"]["score_max_abs_diff"] == 0.0
    assert rows["same"]["recovered"] == rows["same"]["fp32_detections"] and rows["same"]["extra_detections"] == 0
    assert rows["int8-x86-avx2"]["detector"] == "ok" and rows["int8-x86-avx2"]["score_corr"] > 0.9

    for path, use_detector in ((int8["int8-x86-avx2"], True), (str(fp32), False)):
        t = bench.spawn("time", {"path": path, "fp32": str(fp32), "images": images, "threads": 1, "warmup": 2,
                                 "rounds": 2, "use_detector": use_detector})
        assert t["ok"], t.get("error")
        r = t["result"]
        assert r["n"] == 6 and 0 < r["run_median_ms"] <= r["run_p90_ms"]
        assert ("e2e_median_ms" in r) is use_detector

    prof = bench.spawn("profile", {"path": int8["int8-x86-avx2"], "fp32": str(fp32), "image": images[0],
                                   "threads": 1, "runs": 3})
    assert prof["ok"], prof.get("error")
    assert "QLinearConv" in prof["result"]["ops"] and prof["result"]["ms_per_run"] > 0


def test_spawn_stops_a_child_over_its_time_limit(bench: ModuleType, tmp_path: Path) -> None:
    fp32 = tiny_model(tmp_path / "fp32.onnx")
    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    r = bench.spawn("time", {"path": str(fp32), "fp32": str(fp32), "images": [str(img)], "threads": 1,
                             "warmup": 1, "rounds": 10**6}, timeout_s=0.5)
    assert not r["ok"] and r["error"] == "stopped after 0.0 min (limit)"
