"""Each output layout decoded to the expected boxes; thresholds, classes, max_det; NMS vs a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevision.runtime import Detector
from edgevision.runtime.postprocess import nms
from tests.runtime.conftest import make_meta, save_model, zero_of_input

IMG = np.zeros((64, 64, 3), np.uint8)  # same size as the input: boxes come back unchanged


def raw_output(rows: list[tuple[float, float, float, float, int, float]], nc: int = 3, n: int = 8) -> np.ndarray:
    """(1, 4+nc, n) with the given anchors (cx, cy, w, h, class, prob), the rest zero."""
    out = np.zeros((1, 4 + nc, n), np.float32)
    for j, (cx, cy, w, h, c, p) in enumerate(rows):
        out[0, :4, j] = cx, cy, w, h
        out[0, 4 + c, j] = p
    return out


def test_yolo_raw_decode_nms_and_thresholds(build) -> None:
    rows = [(20, 20, 10, 10, 0, 0.9), (21, 20, 10, 10, 0, 0.8),  # same class, IoU > 0.7: suppressed
            (21, 20, 10, 10, 1, 0.7),                           # other class: kept (class-aware)
            (50, 50, 8, 8, 2, 0.3), (10, 50, 4, 4, 2, 0.1)]      # 0.1 below the default 0.25
    det = Detector(build("const", make_meta(), outputs={"output0": raw_output(rows)}))
    d = det(IMG)
    np.testing.assert_allclose(d.xyxy, [[15, 15, 25, 25], [16, 15, 26, 25], [46, 46, 54, 54]])
    np.testing.assert_allclose(d.scores, [0.9, 0.7, 0.3], rtol=1e-6)
    assert d.class_ids.tolist() == [0, 1, 2] and d.class_names == ["a", "b", "c"]
    assert len(det(IMG, conf=0.05)) == 4
    assert det(IMG, conf={"c": 0.35}).class_ids.tolist() == [0, 1]
    assert det(IMG, classes=["b", 2]).class_ids.tolist() == [1, 2]
    assert len(det(IMG, max_det=2)) == 2
    assert len(det(IMG, iou=0.99)) == 4  # nothing suppressed any more


def test_operating_points_used_when_conf_is_none(build) -> None:
    rows = [(20, 20, 10, 10, 0, 0.5), (50, 50, 8, 8, 1, 0.5)]
    meta = make_meta()
    meta.thresholds = {"target": "recall", "value": 0.9, "classes": {"a": 0.6, "b": 0.5}}
    det = Detector(build("const", meta, outputs={"output0": raw_output(rows)}))
    assert det(IMG).class_ids.tolist() == [1]  # a: 0.5 < 0.6; b: 0.5 >= 0.5
    assert det(IMG, conf=0.3).class_ids.tolist() == [0, 1]
    assert det(IMG, conf={"a": 0.4}).class_ids.tolist() == [0, 1]  # b keeps its operating point


def test_yolo_end2end(build) -> None:
    out = np.zeros((1, 300, 6), np.float32)
    out[0, 0] = [1, 2, 30, 40, 0.8, 2]
    out[0, 1] = [5, 5, 9, 9, 0.26, 1]
    out[0, 2] = [5, 5, 9, 9, 0.2, 0]
    det = Detector(build("const", make_meta(layout="yolo-end2end"), outputs={"output0": out}))
    d = det(IMG)
    np.testing.assert_allclose(d.xyxy, [[1, 2, 30, 40], [5, 5, 9, 9]])
    assert d.class_ids.tolist() == [2, 1]


def test_torchvision_postnms(build) -> None:
    outs = {"boxes": np.array([[1, 2, 30, 40], [5, 5, 9, 9], [3, 3, 8, 8]], np.float32),
            "labels": np.array([3, 1, 2], np.int64), "scores": np.array([0.5, 0.9, 0.1], np.float32)}
    det = Detector(build("const", make_meta(layout="torchvision-postnms"), outputs=outs, batch=1))
    d = det(IMG)
    assert d.class_ids.tolist() == [0, 2] and d.scores.tolist() == pytest.approx([0.9, 0.5])
    np.testing.assert_allclose(d.xyxy, [[5, 5, 9, 9], [1, 2, 30, 40]])


def test_nms_in_graph_feeds_thresholds(tmp_path) -> None:
    """scores = const * (const >= score_threshold): the fed threshold reaches the graph."""
    meta = make_meta(layout="nms-in-graph")
    boxes = np.array([[1, 2, 30, 40], [5, 5, 9, 9], [3, 3, 8, 8]], np.float32)
    sc = np.array([0.9, 0.5, 0.3], np.float32)
    nodes = zero_of_input(meta.input.name) + [
        helper.make_node("Constant", [], ["bc"], value=numpy_helper.from_array(boxes)),
        helper.make_node("Add", ["bc", "zero"], ["boxes"]),
        helper.make_node("Constant", [], ["sc"], value=numpy_helper.from_array(sc)),
        helper.make_node("GreaterOrEqual", ["sc", "score_threshold"], ["ge"]),
        helper.make_node("Cast", ["ge"], ["gef"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sc", "gef"], ["scores"]),
        helper.make_node("Constant", [], ["class_ids"], value=numpy_helper.from_array(np.array([0, 1, 2]))),
        helper.make_node("Constant", [], ["batch_index"], value=numpy_helper.from_array(np.array([0, 0, 0]))),
    ]
    inits = [numpy_helper.from_array(np.array([0.25], np.float32), "score_threshold"),
             numpy_helper.from_array(np.array([0.7], np.float32), "iou_threshold"),
             numpy_helper.from_array(np.array([300], np.int64), "max_detections")]
    extra = [helper.make_tensor_value_info("score_threshold", TensorProto.FLOAT, [1]),
             helper.make_tensor_value_info("iou_threshold", TensorProto.FLOAT, [1]),
             helper.make_tensor_value_info("max_detections", TensorProto.INT64, [1])]
    outs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [3, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("class_ids", TensorProto.INT64, [3]),
            helper.make_tensor_value_info("batch_index", TensorProto.INT64, [3])]
    det = Detector(save_model(tmp_path / "n.onnx", nodes, outs, meta, batch=1, extra_inputs=extra,
                              initializers=inits))
    d = det(IMG)
    assert d.class_ids.tolist() == [0, 1, 2]
    np.testing.assert_allclose(d.xyxy[0], [1, 2, 30, 40])
    raw = det.run(det.preprocess(IMG)[0])  # bare run: the graph's default threshold 0.25
    np.testing.assert_allclose(raw[1], sc)
    assert det(IMG, conf=0.4).class_ids.tolist() == [0, 1]


def brute_force_nms(boxes: np.ndarray, scores: np.ndarray, cls: np.ndarray, thr: float, max_det: int) -> list[int]:
    """Textbook NMS in float64, class by class, per-pair loops."""
    def iou(a: np.ndarray, b: np.ndarray) -> float:
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if all(cls[k] != cls[i] or iou(boxes[k], boxes[i]) <= thr for k in keep):
            keep.append(i)
    return keep[:max_det]


@pytest.mark.parametrize("seed", range(12))
def test_nms_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(1, 60, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n + 0.001  # distinct scores
    cls = rng.integers(0, 3, n)
    thr = float(rng.uniform(0.2, 0.8))
    max_det = int(rng.integers(1, 400))
    got = nms(boxes, scores, cls, thr, max_det).tolist()
    assert got == brute_force_nms(boxes.astype(np.float64), scores, cls, thr, max_det)
