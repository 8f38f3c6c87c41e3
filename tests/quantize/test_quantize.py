"""`edgevision quantize`: real INT8 models of the tiny trained YOLOs, checked against FP32 in onnxruntime.

Tolerances (barely trained 64 px models, raw outputs on the sample's val images): class-score
correlation with FP32 > 0.98, mean box error < 5% of the input side, top scores within 0.05.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli
from tests.tiny_models import IMGSZ, export_tiny

pytestmark = pytest.mark.slow


def _meta(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path))
    return json.loads(next(p.value for p in m.metadata_props if p.key == "edgevision"))


def _split_names(sample: Path, split: str) -> set[str]:
    from edgevision.convert import read_dataset

    return {r.name for r in read_dataset(sample).dataset.images if r.split == split}


def _val_tensors(sample: Path, meta_path: Path) -> list[np.ndarray]:
    from edgevision.convert import read_dataset
    from edgevision.runtime import Detector

    det = Detector(meta_path, threads=1)
    recs = [r for r in read_dataset(sample).dataset.images if r.split != "train"]
    return [det.preprocess(r.path)[0] for r in recs]


def _quantize_cli(env: dict[str, Path], src: Path, name: str, *args: str) -> Path:
    out = env["root"] / "int8" / f"{name}.int8.onnx"
    r = run_cli("quantize", src, "--calib", env["sample"], "--out", out, "--n", "8", "--no-eval",
                "--latency-runs", "0", *args)  # barely trained models: mAP 0, nothing for the gate to judge
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrote" in r.stdout and "full check passed" in r.stdout
    return out


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {"images": x})


def _common_checks(env: dict[str, Path], fp32: Path, int8: Path, target: str) -> dict:
    import onnx

    q = _meta(int8)
    f = _meta(fp32)
    assert q["precision"] == "int8" and f["precision"] == "fp32"
    assert {k: v for k, v in q.items() if k not in ("precision", "quantization", "opset")} == \
        {k: v for k, v in f.items() if k not in ("precision", "quantization", "opset")}
    rec = q["quantization"]
    assert rec["target"] == target and rec["split"] == "train" and rec["format"] == "QDQ"
    assert rec["onnxruntime"] and rec["method"] == "minmax" and rec["seed"] == 0
    names = rec["calibration_images"]
    assert 0 < len(names) <= 8 and set(names) <= _split_names(env["sample"], "train")  # never val / test
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert rec["excluded_nodes"], "the head's decode must stay float"
    g = {n.name: n for n in onnx.load(str(int8)).graph.node}
    for name in rec["excluded_nodes"]:  # excluded nodes exist, and none is a Conv (those are quantized)
        assert name in g and g[name].op_type != "Conv"
    return rec


def test_yolo_raw_int8_close_to_fp32(export_env, v8_onnx):
    int8 = _quantize_cli(export_env, v8_onnx, "v8")
    rec = _common_checks(export_env, v8_onnx, int8, "x86-avx2" if _host() == "x86-avx2" else _host())
    import onnx

    g = {n.name: n.op_type for n in onnx.load(str(int8)).graph.node}
    excluded_ops = {g[n] for n in rec["excluded_nodes"]}
    assert {"Sigmoid", "Concat"} <= excluded_ops  # class probabilities and the box/score concat stay float
    xs = _val_tensors(export_env["sample"], v8_onnx)
    a = np.concatenate([_run(v8_onnx, x)[0][0] for x in xs], axis=1)  # (4+nc, N*images)
    b = np.concatenate([_run(int8, x)[0][0] for x in xs], axis=1)
    sa, sb = a[4:].ravel(), b[4:].ravel()
    assert sb.std() > 0 and sb.max() > 0  # not degenerate (whole-graph quantization gives all zeros)
    assert np.corrcoef(sa, sb)[0, 1] > 0.98
    assert np.abs(a[:4] - b[:4]).mean() < 0.05 * IMGSZ
    from edgevision.runtime import Detector

    d = Detector(int8, threads=1)(export_env["sample"] / "images" / "val" / sorted(
        p.name for p in (export_env["sample"] / "images" / "val").iterdir())[0], conf=0.0001)
    assert len(d) > 0 and d.scores.max() <= 1.0


def test_yolo_end2end_int8_close_to_fp32(export_env, y26_onnx):
    int8 = _quantize_cli(export_env, y26_onnx, "y26", "--target", "x86-vnni")
    rec = _common_checks(export_env, y26_onnx, int8, "x86-vnni")
    assert rec["reduce_range"] is False and rec["activations"] == "QUInt8"
    import onnx

    g = {n.name: n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "TopK" in {g[n] for n in rec["excluded_nodes"]}
    xs = _val_tensors(export_env["sample"], y26_onnx)
    a = [_run(y26_onnx, x)[0][0] for x in xs]  # (K, 6) sorted by score
    b = [_run(int8, x)[0][0] for x in xs]
    sa = np.concatenate([np.sort(y[:, 4]) for y in a])
    sb = np.concatenate([np.sort(y[:, 4]) for y in b])
    assert sb.std() > 0 and np.corrcoef(sa, sb)[0, 1] > 0.98
    assert np.abs(sa - sb).max() < 0.05
    from edgevision.runtime import Detector

    det = Detector(int8, threads=1)
    assert det.metadata.precision == "int8"
    det(xs[0][0].transpose(1, 2, 0).__mul__(255).astype(np.uint8), conf=0.0001)


def test_nms_in_graph_int8(export_env, yolov8_run):
    fp32 = export_tiny(export_env, yolov8_run, "v8nms-q", "--nms-in-graph")
    int8 = _quantize_cli(export_env, fp32, "v8nms")
    rec = _common_checks(export_env, fp32, int8, _host())
    import onnx

    g = {n.name: n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"NonMaxSuppression", "Sigmoid"} <= {g[n] for n in rec["excluded_nodes"]}
    from edgevision.runtime import Detector

    fa, fb = Detector(fp32, threads=1), Detector(int8, threads=1)
    val = export_env["sample"] / "images" / "val"
    for img in sorted(val.iterdir())[:3]:
        da, db = fa(img, conf=0.0001), fb(img, conf=0.0001)
        assert len(db) > 0
        assert abs(float(da.scores[0]) - float(db.scores[0])) < 0.05


def _host() -> str:
    from edgevision.runtime.targets import host_target

    return host_target()


def test_tensorrt_target_symmetric_and_runtime_warns(export_env, v8_onnx, tmp_path, caplog):
    import onnx

    from edgevision.quantize import quantize_model
    from edgevision.runtime import Detector, detector

    res = quantize_model(v8_onnx, export_env["sample"], tmp_path / "trt.onnx", target="tensorrt", n=4)
    assert res.metadata.quantization["symmetric"] is True
    m = onnx.load(str(res.path))
    inits = {i.name: i for i in m.graph.initializer}
    zps = [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in m.graph.node
           if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)  # symmetric int8: zero points 0
    detector._WARNED.clear()
    with caplog.at_level("WARNING", logger="edgevision.runtime"):
        Detector(res.path, providers=["CPUExecutionProvider"], threads=1)
        Detector(res.path, providers=["CPUExecutionProvider"], threads=1)
    warned = [r.getMessage() for r in caplog.records if "TensorRT" in r.getMessage()]
    assert len(warned) == 1  # once per process
    # a model built for another CPU: arm64 on x86 (or x86 on arm64)
    other = "arm64" if _host() != "arm64" else "x86-vnni"
    meta = json.loads(next(p.value for p in m.metadata_props if p.key == "edgevision"))
    meta["quantization"]["target"] = other
    from edgevision.export.graph import set_metadata

    set_metadata(m, json.dumps(meta))
    moved = tmp_path / "other.onnx"
    moved.write_bytes(m.SerializeToString())
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgevision.runtime"):
        Detector(moved, threads=1)
    assert any(f"quantized for {other}" in r.getMessage() for r in caplog.records)
    # the FP32 model never warns
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgevision.runtime"):
        Detector(v8_onnx, threads=1)
    assert not caplog.records
