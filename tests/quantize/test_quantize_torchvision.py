"""`edgevision quantize` on torchvision SSDlite exports (layout ``torchvision-postnms``): real INT8 models
checked against FP32 in onnxruntime, and the float-node finder on small hand-built graphs.

The session's SSDlite (`tv_run`: one epoch, 13 images, no pretrained backbone) has BatchNorm running
statistics that barely moved from their initial values: its backbone features are ~1e-3 and its outputs
do not depend on the image (every score ~1 / (classes + 1)), so FP32 and INT8 agree trivially. The
fidelity test therefore uses a copy whose BatchNorm statistics are re-estimated on the train split
(`tv_bn_onnx`): same weights, input-dependent features of O(1), scores from ~0.25 to ~0.9.

Tolerances (that copy, the images not used for calibration, through `edgevision.runtime.Detector`):
per-image top score within 0.05 of FP32 (measured: 0.022 at most, 0.015 on average, host target
x86-avx2 with reduce-range weights); at least 90% of FP32's 10 best detections found in INT8 with the
same class at IoU >= 0.5 (measured: 80 / 80).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli
from tests.tiny_models import IMGSZ, export_tiny

TOP_SCORE_TOL = 0.05
MATCH_IOU = 0.5
MATCHED_FRACTION = 0.9
TOP_K = 10


# --------------------------------------------------------------------------- helpers


def _meta(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path))
    return json.loads(next(p.value for p in m.metadata_props if p.key == "edgevision"))


def _records(sample: Path) -> list:
    from edgevision.convert import read_dataset

    return list(read_dataset(sample).dataset.images)


def _host() -> str:
    from edgevision.runtime.targets import host_target

    return host_target()


def _quantize_cli(env: dict[str, Path], src: Path, name: str, *args: str) -> Path:
    """`edgevision quantize` building only (`--no-eval`: the tiny models' val mAP is 0, nothing to judge)."""
    out = env["root"] / "int8" / f"{name}.int8.onnx"
    r = run_cli("quantize", src, "--calib", env["sample"], "--out", out, "--n", "8", "--no-eval",
                "--latency-runs", "0", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrote" in r.stdout and "full check passed" in r.stdout
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def _structure_checks(env: dict[str, Path], fp32: Path, int8: Path, target: str) -> dict:
    """The checks of every INT8 SSDlite: metadata, calibration split, what is quantized and what stays float."""
    import onnx

    from edgevision.quantize.graph import WEIGHT_OPS, preprocess_nodes

    q, f = _meta(int8), _meta(fp32)
    assert q["precision"] == "int8" and f["precision"] == "fp32"
    assert q["output"]["layout"] == "torchvision-postnms"
    assert {k: v for k, v in q.items() if k not in ("precision", "quantization", "opset")} == \
        {k: v for k, v in f.items() if k not in ("precision", "quantization", "opset")}
    rec = q["quantization"]
    assert rec["target"] == target and rec["split"] == "train" and rec["format"] == "QDQ"
    assert rec["onnxruntime"] and rec["method"] == "minmax" and rec["seed"] == 0
    train = {r.name for r in _records(env["sample"]) if r.split == "train"}
    assert 0 < len(rec["calibration_images"]) <= 8 and set(rec["calibration_images"]) <= train  # never val / test

    qm, fm = onnx.load(str(int8)), onnx.load(str(fp32))
    g = {n.name: n for n in qm.graph.node}
    ops = [n.op_type for n in qm.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    excluded = rec["excluded_nodes"]
    assert excluded, "the decode and post-processing must stay float"
    for name in excluded:  # excluded nodes exist, and none is a weight layer (those are quantized)
        assert name in g and g[name].op_type not in WEIGHT_OPS, name
    kept = {g[n].op_type for n in excluded}
    # anchor decoding (Exp of the size codes), class Softmax, per-class TopK, the If around the NMS,
    # the transform's Normalize (Sub, Div) and Resize
    assert {"Exp", "Softmax", "TopK", "If", "Sub", "Div", "Resize"} <= kept

    # every Conv of the backbone and head is INT8: its weight comes through a DequantizeLinear
    producer = {o: n for n in qm.graph.node for o in n.output}
    convs = [n for n in qm.graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(n.op_type == "Conv" for n in fm.graph.node) > 50
    for c in convs:
        assert c.input[1] in producer and producer[c.input[1]].op_type == "DequantizeLinear", c.name

    # the preprocessing (found from the graph structure: what is computed from the input before the first
    # Conv) is float: in the excluded list, reading no dequantized tensor; the first Conv's input is quantized
    # after it
    qdq = {"QuantizeLinear", "DequantizeLinear"}
    pre = [n for n in preprocess_nodes(qm) if g[n].op_type not in qdq]
    assert len(pre) == len(preprocess_nodes(fm)) >= 3
    assert set(pre) <= set(excluded) and {g[n].op_type for n in pre} >= {"Sub", "Div"}
    for name in pre:
        assert all(i not in producer or producer[i].op_type != "DequantizeLinear" for i in g[name].input), name

    # the If's branches (the NMS) are never quantized
    branches = [a.g for n in qm.graph.node if n.op_type == "If" for a in n.attribute
                if a.type == onnx.AttributeProto.GRAPH]
    assert "NonMaxSuppression" in {x.op_type for b in branches for x in b.node}
    assert not {x.op_type for b in branches for x in b.node} & qdq
    return rec


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tv_onnx(export_env, tv_run) -> Path:
    """The session's SSDlite exported to ONNX (FP32)."""
    return export_tiny(export_env, tv_run, "ssdlite-q")


@pytest.fixture(scope="module")
def tv_bn_onnx(export_env, tv_run, tv_onnx) -> Path:
    """`tv_run`'s weights with their BatchNorm running statistics re-estimated on the train split (one
    train-mode pass of the 13 images, no gradient, cumulative averages), exported to ONNX (FP32)."""
    import torch

    from edgevision.runtime import Detector
    from edgevision.train.torchvision_backend import TorchvisionPredictor

    pt = tv_run / "weights" / "best.pt"
    ck = torch.load(pt, map_location="cpu", weights_only=True)
    model = TorchvisionPredictor.load(pt).model
    det = Detector(tv_onnx, threads=1)  # the tensors exactly as inference builds them (stretch to IMGSZ, /255)
    train = [r.path for r in _records(export_env["sample"]) if r.split == "train"]
    x = torch.from_numpy(np.concatenate([det.preprocess(p)[0] for p in train]))
    assert x.shape == (len(train), 3, IMGSZ, IMGSZ)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    model.train()
    with torch.no_grad():
        t, _ = model.transform(list(x))
        model.head(list(model.backbone(t.tensors).values()))
    model.eval()
    ck["model"] = model.state_dict()
    out = export_env["root"] / "ssdlite-bn.pt"
    torch.save(ck, out)
    return export_tiny(export_env, out, "ssdlite-bn")


# --------------------------------------------------------------------------- real models


@pytest.mark.slow
def test_ssdlite_int8_close_to_fp32(export_env, tv_bn_onnx):
    from edgevision.runtime import Detector

    target = _host()
    int8 = _quantize_cli(export_env, tv_bn_onnx, "ssdlite-bn")
    rec = _structure_checks(export_env, tv_bn_onnx, int8, target)
    assert int8.stat().st_size < 0.5 * tv_bn_onnx.stat().st_size  # INT8 weights: about a quarter

    held_out = [r for r in _records(export_env["sample"]) if r.name not in set(rec["calibration_images"])]
    assert len(held_out) >= 3
    fa, fb = Detector(tv_bn_onnx, threads=1), Detector(int8, threads=1)
    assert fb.metadata.precision == "int8"
    tops_a, tops_b, matched, total = [], [], 0, 0
    for r in held_out:
        a, b = fa(r.path, conf=0.0001, max_det=300), fb(r.path, conf=0.0001, max_det=300)
        assert len(a) >= TOP_K and len(b) >= TOP_K
        assert b.scores.std() > 0.005 and b.scores.max() <= 1.0  # not degenerate
        assert abs(float(a.scores[0]) - float(b.scores[0])) < TOP_SCORE_TOL, r.name
        tops_a.append(float(a.scores[0]))
        tops_b.append(float(b.scores[0]))
        m = _iou(a.xyxy[:TOP_K], b.xyxy) * (a.class_ids[:TOP_K, None] == b.class_ids[None])
        matched += int((m.max(1) >= MATCH_IOU).sum())
        total += TOP_K
    # the reference is meaningful (scores depend on the image) and INT8 follows it
    assert np.std(tops_a) > 0.005 and np.std(tops_b) > 0.005
    assert max(tops_b) > 0.25
    assert matched >= MATCHED_FRACTION * total, f"{matched} / {total} of FP32's best detections found in INT8"


@pytest.mark.slow
def test_ssdlite_one_epoch_quantizes_through_the_api(export_env, tv_onnx, tmp_path):
    """The session's model as users would quantize it, through `quantize_model`: built, checked, runnable."""
    from edgevision.quantize import quantize_model
    from edgevision.runtime import Detector

    res = quantize_model(tv_onnx, export_env["sample"], tmp_path / "ssdlite.int8.onnx", n=4)
    assert res.path.is_file() and res.size_bytes == res.path.stat().st_size
    assert set(res.checks) >= {"onnx.checker", "onnxruntime", "qdq"}
    assert res.excluded == res.metadata.quantization["excluded_nodes"]
    _structure_checks(export_env, tv_onnx, res.path, res.target)
    fa, fb = Detector(tv_onnx, threads=1), Detector(res.path, threads=1)
    for r in [r for r in _records(export_env["sample"]) if r.split != "train"]:
        a, b = fa(r.path, conf=0.0001), fb(r.path, conf=0.0001)
        assert len(b) > 0 and 0.0 < float(b.scores[0]) <= 1.0
        assert abs(float(a.scores[0]) - float(b.scores[0])) < TOP_SCORE_TOL


# --------------------------------------------------------------------------- the float-node finder


def _model(nodes: list, inits: list, outputs: list[str]):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, None, 8, 8]) for o in outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(m)
    return m


def _inits() -> list:
    from onnx import numpy_helper

    return [numpy_helper.from_array(np.zeros((3, 1, 1), np.float32) + 0.5, "mean"),
            numpy_helper.from_array(np.ones((3, 1, 1), np.float32) * 0.25, "std"),
            numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w"),
            numpy_helper.from_array(np.zeros((4, 4, 1, 1), np.float32), "w2"),
            numpy_helper.from_array(np.array(0, np.int64), "zero")]


def test_preprocess_nodes_torchvision_like_transform():
    """Gather of the one image, Normalize, Resize whose sizes are computed by a Constant node, Unsqueeze:
    all float; nothing after the first Conv."""
    from onnx import helper, numpy_helper

    from edgevision.quantize.graph import float_nodes, name_nodes, preprocess_nodes

    nodes = [
        helper.make_node("Gather", ["images", "zero"], ["img"], axis=0),
        helper.make_node("Sub", ["img", "mean"], ["sub"]),
        helper.make_node("Div", ["sub", "std"], ["div"]),
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["div", "axes"], ["b"]),
        helper.make_node("Constant", [], ["sizes"], value=numpy_helper.from_array(np.array([1, 3, 8, 8], np.int64))),
        helper.make_node("Resize", ["b", "", "", "sizes"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["a"]),
        helper.make_node("Conv", ["a", "w2"], ["c2"]),
        helper.make_node("Softmax", ["c2"], ["scores"], axis=1),
    ]
    m = _model(nodes, _inits(), ["scores"])
    name_nodes(m.graph)
    by_out = {n.output[0]: n.name for n in m.graph.node}
    pre = preprocess_nodes(m)
    assert pre == [by_out[o] for o in ("img", "sub", "div", "axes", "b", "sizes", "r")]
    names = float_nodes(m, "torchvision-postnms")
    assert set(pre) | {by_out["scores"]} == set(names)  # + the head: the Softmax after the last Conv
    assert by_out["a"] not in names and by_out["c"] not in names  # the Relu between the Convs is quantized
    assert names == [n.name for n in m.graph.node if n.name in set(names)]  # graph order


def test_preprocess_nodes_empty_for_a_conv_first_graph_and_stops_at_a_mixed_node():
    """Input straight into a Conv (Ultralytics): nothing. A node mixing the normalized input with a Conv
    output (an input skip connection) is not preprocessing, nor is anything after it."""
    from onnx import helper, numpy_helper

    from edgevision.quantize.graph import float_nodes, name_nodes, preprocess_nodes

    m = _model([helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1]),
                helper.make_node("Sigmoid", ["c"], ["out"])], _inits(), ["out"])
    name_nodes(m.graph)
    assert preprocess_nodes(m) == []
    assert float_nodes(m, "yolo-raw") == [m.graph.node[1].name]

    nodes = [
        helper.make_node("Sub", ["images", "mean"], ["sub"]),
        helper.make_node("Conv", ["sub", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["a"]),
        helper.make_node("Concat", ["a", "sub"], ["cat"], axis=1),
        helper.make_node("Relu", ["cat"], ["a2"]),
        helper.make_node("Conv", ["a2", "w3"], ["out"]),
    ]
    inits = _inits() + [numpy_helper.from_array(np.zeros((2, 7, 1, 1), np.float32), "w3")]
    m = _model(nodes, inits, ["out"])
    name_nodes(m.graph)
    assert preprocess_nodes(m) == [m.graph.node[0].name]
