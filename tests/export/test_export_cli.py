"""``edgevision export`` through the real CLI on tiny trained models, offline; values checked with onnxruntime.

Ultralytics is never imported in this process: the PyTorch side of the parity checks runs in a
subprocess (`_torch_outputs`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgevision.core.io import sha256_file
from edgevision.runtime.metadata import METADATA_KEY, ModelMetadata
from tests.export.quantcheck import load_images
from tests.tiny_models import IMGSZ
from tests.tiny_models import export_tiny as _export

pytestmark = pytest.mark.slow


def _session(path: Path):  # noqa: ANN202
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _meta(path: Path) -> tuple[ModelMetadata, dict[str, str]]:
    props = dict(_session(path).get_modelmeta().custom_metadata_map)
    return ModelMetadata.from_json(props[METADATA_KEY], str(path)), props


@pytest.fixture(scope="session")
def images(export_env) -> list[np.ndarray]:
    return load_images(export_env["sample"], IMGSZ, 8)


def _torch_outputs(pts: list[Path], x: np.ndarray, tmp: Path) -> list[np.ndarray]:
    """Raw outputs of Ultralytics checkpoints on ``x``, computed in a subprocess."""
    np.save(tmp / "x.npy", x)
    code = textwrap.dedent(f"""
        import sys, numpy as np, torch
        from edgevision.train.offline import prepare_ultralytics
        prepare_ultralytics(threads=None, verbose=False)
        from ultralytics import YOLO
        x = torch.from_numpy(np.load({str(tmp / 'x.npy')!r}))
        for i, pt in enumerate(sys.argv[1:]):
            net = YOLO(pt).model.float().eval()
            if hasattr(net, "end2end"):  # what Ultralytics' exporter sets for nms=False (YOLO26: one-to-one head)
                net.end2end = True
            with torch.no_grad():
                y = net(x)
            y = y[0] if isinstance(y, (list, tuple)) else y
            np.save({str(tmp)!r} + f"/y{{i}}.npy", y.numpy())
    """)
    r = subprocess.run([sys.executable, "-c", code, *map(str, pts)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [np.load(tmp / f"y{i}.npy") for i in range(len(pts))]


def test_run_folder_export_has_complete_metadata(v8_onnx: Path, yolov8_run: Path) -> None:
    meta, props = _meta(v8_onnx)
    assert {"stride", "names", "imgsz", "end2end", "task"} <= set(props)  # Ultralytics' own keys are kept
    data = json.loads((yolov8_run / "dataset.json").read_text())
    assert meta.names == data["classes"]
    assert (meta.input.name, meta.input.size_hw, meta.input.dynamic_batch, meta.input.dtype) == \
        ("images", (IMGSZ, IMGSZ), False, "float32")
    assert (meta.input.resize, meta.input.pad_value, meta.input.channel_order, meta.input.uint16) == \
        ("letterbox", 114, "RGB", "high_byte")
    assert meta.input.scale == pytest.approx(1 / 255) and meta.input.mean == (0, 0, 0) and meta.input.std == (1, 1, 1)
    n = sum((IMGSZ // s) ** 2 for s in (8, 16, 32))
    assert (meta.output.layout, meta.output.names, meta.output.max_det) == ("yolo-raw", ["output0"], 300)
    assert _session(v8_onnx).get_outputs()[0].shape == [1, 4 + len(meta.names), n]
    assert (meta.stride, meta.precision, meta.opset, meta.task) == (32, "fp32", 18, "detect")
    assert meta.thresholds == json.loads((yolov8_run / "thresholds.json").read_text())
    assert meta.defaults == {"conf": 0.25, "iou": 0.7, "max_det": 300}
    src = meta.source
    spec = json.loads((yolov8_run / "model.json").read_text())
    assert src["backend"] == "ultralytics" and src["arch"] == "yolov8n"
    assert src["weights_sha256"] == sha256_file(yolov8_run / "weights" / "best.pt")
    assert src["licence"] == spec["licence"] and "AGPL" in src["licence"]
    assert src["dataset_hash"] == data["hash"]
    assert src["config_sha256"] == sha256_file(yolov8_run / "config.yaml")
    assert src["imgsz_trained"] == IMGSZ
    assert meta.edgevision_version and meta.created.endswith("+00:00") and meta.quantization is None


def test_fp32_onnx_matches_pytorch(v8_onnx: Path, y26_onnx: Path, yolov8_run: Path, yolo26_run: Path,
                                   images: list[np.ndarray], tmp_path: Path) -> None:
    x = np.concatenate(images[:1])
    ref_v8, ref_26 = _torch_outputs([yolov8_run / "weights" / "best.pt", yolo26_run / "weights" / "best.pt"], x,
                                    tmp_path)
    got = _session(v8_onnx).run(None, {"images": x})[0]
    assert got.shape == ref_v8.shape
    np.testing.assert_allclose(got, ref_v8, rtol=1e-3, atol=1e-3 * float(np.abs(ref_v8).max()))
    # end-to-end: rows sorted by score; near-equal scores of an untrained model may swap places, so
    # compare the score curve, then find each reference row's twin
    got = _session(y26_onnx).run(None, {"images": x})[0][0]
    ref = ref_26[0]
    assert got.shape == ref.shape
    tol = 1e-3 * float(np.abs(ref).max())
    np.testing.assert_allclose(got[:, 4], ref[:, 4], rtol=1e-3, atol=1e-5)
    for row in ref:
        d = np.abs(got - row) / (1e-3 * np.abs(row) + tol)
        assert d.max(1).min() <= 1.0, row


def test_yolo26_weights_inside_a_run_are_end2end_with_the_runs_thresholds(y26_onnx: Path, yolo26_run: Path) -> None:
    meta, _ = _meta(y26_onnx)
    k = min(300, sum((IMGSZ // s) ** 2 for s in (8, 16, 32)))
    assert (meta.output.layout, meta.output.max_det) == ("yolo-end2end", k)
    assert _session(y26_onnx).get_outputs()[0].shape == [1, k, 6]
    assert meta.thresholds == json.loads((yolo26_run / "thresholds.json").read_text())
    assert meta.source["arch"] == "yolo26n" and meta.source["weights"] == "best.pt"


def _nms_reference(raw: np.ndarray, conf: float, iou: float, max_det: int) -> tuple[np.ndarray, ...]:
    """Decode (4+nc, N), best class per anchor, class-aware greedy NMS (IoU > iou suppresses), top max_det."""
    cx, cy, w, h = raw[:4]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    best = raw[4:].argmax(0)
    keep_b, keep_s, keep_c = [], [], []
    for c, scores in enumerate(raw[4:]):
        idx = np.flatnonzero((scores > conf) & (best == c))
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        chosen: list[int] = []
        for i in idx:
            if len(chosen) >= max_det:
                break
            b = boxes[i]
            ok = True
            for j in chosen:
                o = boxes[j]
                iw = max(0.0, min(b[2], o[2]) - max(b[0], o[0]))
                ih = max(0.0, min(b[3], o[3]) - max(b[1], o[1]))
                inter = iw * ih
                union = (b[2] - b[0]) * (b[3] - b[1]) + (o[2] - o[0]) * (o[3] - o[1]) - inter
                if union > 0 and inter / union > iou:
                    ok = False
                    break
            if ok:
                chosen.append(int(i))
        keep_b += [boxes[i] for i in chosen]
        keep_s += [scores[i] for i in chosen]
        keep_c += [c] * len(chosen)
    order = np.argsort(-np.asarray(keep_s, np.float32), kind="stable")[:max_det]
    return (np.asarray(keep_b, np.float32).reshape(-1, 4)[order], np.asarray(keep_s, np.float32)[order],
            np.asarray(keep_c, np.int64)[order])


def test_nms_in_graph_equals_numpy_nms_of_the_raw_model(export_env, yolov8_run: Path, v8_onnx: Path,
                                                        images: list[np.ndarray]) -> None:
    path = _export(export_env, yolov8_run, "v8-nms", "--nms-in-graph", "--dynamic-batch")
    meta, _ = _meta(path)
    assert (meta.output.layout, meta.output.names, meta.input.dynamic_batch) == \
        ("nms-in-graph", ["boxes", "scores", "class_ids", "batch_index"], True)
    sess = _session(path)
    assert sorted(i.name for i in sess.get_overridable_initializers()) == \
        ["iou_threshold", "max_detections", "score_threshold"]
    x = np.concatenate(images[:3])
    raw = _session(v8_onnx).run(None, {"images": x[:1]})[0]
    for i in range(1, 3):
        raw = np.concatenate([raw, _session(v8_onnx).run(None, {"images": x[i:i + 1]})[0]])
    conf = float(np.quantile(raw[:, 4:].max(1), 0.9))  # an untrained model: pick a threshold that keeps some
    for iou, max_det in ((0.7, 300), (0.3, 5)):
        feeds = {"images": x, "score_threshold": np.array([conf], np.float32),
                 "iou_threshold": np.array([iou], np.float32), "max_detections": np.array([max_det], np.int64)}
        boxes, scores, cls, bidx = sess.run(None, feeds)
        assert (boxes.dtype, scores.dtype, cls.dtype, bidx.dtype) == (np.float32, np.float32, np.int64, np.int64)
        assert np.all(np.diff(bidx) >= 0)  # grouped by image
        for b in range(3):
            rb, rs, rc = _nms_reference(raw[b], conf, iou, max_det)
            sel = bidx == b
            assert len(rs) > 0 and sel.sum() == len(rs), (b, iou, max_det)
            assert np.all(np.diff(scores[sel]) <= 0)  # score-descending within an image
            np.testing.assert_allclose(scores[sel], rs, rtol=1e-6)
            np.testing.assert_allclose(boxes[sel], rb, atol=1e-3)
            assert (cls[sel] == rc).all()
    # the initializers are the metadata defaults: nothing above 0.25 in an untrained model is fine
    boxes, scores, _, _ = sess.run(None, {"images": x})
    assert (scores > meta.defaults["conf"]).all() and len(scores) <= 3 * 300
    try:
        from edgevision.runtime.detector import Detector
    except ImportError:  # the runtime lands separately
        return
    det = Detector(path)
    img = (images[0][0].transpose(1, 2, 0)[:, :, ::-1] * 255).round().astype(np.uint8)  # BGR, as OpenCV reads
    d = det(img, conf=conf, iou=0.7, max_det=300)
    rb, rs, _ = _nms_reference(raw[0], conf, 0.7, 300)
    assert len(d) == len(rs)


def test_half_runs_on_cpu_and_is_close_to_fp32(export_env, yolov8_run: Path, v8_onnx: Path,
                                               images: list[np.ndarray]) -> None:
    path = _export(export_env, yolov8_run, "v8-half", "--half")
    meta, _ = _meta(path)
    assert (meta.precision, meta.input.dtype) == ("fp16", "float32")
    assert path.stat().st_size < 0.6 * v8_onnx.stat().st_size
    sess = _session(path)
    assert sess.get_inputs()[0].type == "tensor(float)" and sess.get_outputs()[0].type == "tensor(float)"
    x = np.concatenate(images[:1])
    ref, got = _session(v8_onnx).run(None, {"images": x})[0], sess.run(None, {"images": x})[0]
    np.testing.assert_allclose(got[:, 4:], ref[:, 4:], atol=5e-3)  # class probabilities
    np.testing.assert_allclose(got[:, :4], ref[:, :4], atol=0.02 * IMGSZ)  # box pixels


def test_torchvision_export_matches_pytorch(export_env, tv_run: Path, images: list[np.ndarray]) -> None:
    import torch

    from edgevision.train.torchvision_backend import TorchvisionPredictor

    path = _export(export_env, tv_run, "ssdlite")
    meta, _ = _meta(path)
    assert (meta.output.layout, meta.output.names) == ("torchvision-postnms", ["boxes", "labels", "scores"])
    assert (meta.input.resize, meta.input.uint16, meta.input.size_hw, meta.input.dynamic_batch) == \
        ("stretch", "minmax", (IMGSZ, IMGSZ), False)
    assert meta.source["backend"] == "torchvision" and meta.source["weights_sha256"] == \
        sha256_file(tv_run / "weights" / "best.pt")
    model = TorchvisionPredictor.load(tv_run / "weights" / "best.pt").model
    model.score_thresh, model.detections_per_img = 0.001, 300
    sess = _session(path)
    for x in images[:2]:
        boxes, labels, scores = sess.run(None, {"images": x})
        with torch.no_grad():
            ref = model([torch.from_numpy(x[0])])[0]
        rb, rl, rs = (ref[k].numpy() for k in ("boxes", "labels", "scores"))
        assert len(scores) == len(rs) and labels.dtype == np.int64 and labels.min() >= 1
        np.testing.assert_allclose(np.sort(scores), np.sort(rs), atol=1e-4)
        top = np.argsort(-rs)[:20]  # each of the best reference detections has a twin in the ONNX output
        for i in top:
            d = np.abs(boxes - rb[i]).max(1) + 10 * (labels != rl[i]) + 10 * np.abs(scores - rs[i])
            assert d.min() < 1e-2, (i, d.min())


def test_default_opset_quantizes_correctly(v8_onnx: Path, images: list[np.ndarray], tmp_path: Path) -> None:
    from edgevision.export import DEFAULT_OPSET
    from tests.export.quantcheck import compare, quantize

    meta, _ = _meta(v8_onnx)
    assert meta.opset == DEFAULT_OPSET
    q = tmp_path / "int8.onnx"
    quantize(v8_onnx, q, images[:4])
    m = compare(v8_onnx, q, images, "yolo-raw", len(meta.names))
    assert m["score_corr"] > 0.98 and m["box_rel_err"] < 0.05, m


# --------------------------------------------------------------------------- the runtime on exported files


def _between_scores(scores: np.ndarray) -> float:
    """A threshold halfway between two distinct scores near the median: no score equals it.

    (EdgeVision passes ``score >= conf``, Ultralytics ``score > conf``; barely trained models tie a lot.)
    """
    u = np.unique(scores)
    k = max(1, len(u) // 2)
    return float((u[k - 1] + u[k]) / 2) if len(u) > 1 else float(u[0]) / 2


def _sample_images(env: dict[str, Path]) -> list[Path]:
    return sorted((env["sample"] / "images").rglob("*.*"))


@pytest.mark.parametrize("which", ["v8", "y26"])
def test_runtime_matches_ultralytics_onnx_predict(which: str, export_env, v8_onnx: Path, y26_onnx: Path) -> None:
    """Same file, same images, same thresholds: >= 99% of boxes paired at IoU >= 0.99 with the same class.

    The tiny models are barely trained (scores around 1e-3), so a low threshold keeps hundreds of
    overlapping candidates per image: a hard case for NMS agreement.
    """
    from tests.parity import edgevision_predict, pair_rate, ultralytics_onnx_predict

    model = v8_onnx if which == "v8" else y26_onnx
    images = _sample_images(export_env)
    raw = _session(model).run(None, {"images": load_images(export_env["sample"], IMGSZ, 1)[0]})[0]
    scores = raw[0, 4:].max(0) if which == "v8" else raw[0, :, 4]
    conf = _between_scores(scores)
    theirs = ultralytics_onnx_predict(model, images, conf=conf, iou=0.7, max_det=300, imgsz=IMGSZ)
    ours = edgevision_predict(model, images, conf=conf, iou=0.7, max_det=300)
    rate, n_ours, n_theirs = pair_rate(ours, theirs)
    assert n_theirs >= len(images), (n_ours, n_theirs)  # something to compare
    assert rate >= 0.99, (rate, n_ours, n_theirs)


def test_nms_in_graph_model_through_the_runtime_equals_the_raw_model(export_env, yolov8_run: Path,
                                                                      v8_onnx: Path) -> None:
    from edgevision.runtime import Detector

    nms = _export(export_env, yolov8_run, "v8-nms-rt", "--nms-in-graph")
    raw_det, nms_det = Detector(v8_onnx), Detector(nms)
    images = _sample_images(export_env)
    raw = _session(v8_onnx).run(None, {"images": load_images(export_env["sample"], IMGSZ, 1)[0]})[0]
    conf = _between_scores(raw[0, 4:].max(0))
    total = 0
    for p in images:
        a, b = raw_det(p, conf=conf, iou=0.7, max_det=300), nms_det(p, conf=conf, iou=0.7, max_det=300)
        total += len(a)
        assert len(a) == len(b), p
        np.testing.assert_allclose(b.scores, a.scores, rtol=1e-5)
        np.testing.assert_allclose(b.xyxy, a.xyxy, atol=1e-3)
        assert (a.class_ids == b.class_ids).all()
    assert total >= len(images)
