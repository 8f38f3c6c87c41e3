"""``edgevision predict`` and ``edgevision eval`` on ONNX models, through the real CLI in a fresh process.

The model is a synthetic ONNX graph with EdgeVision metadata (`tests.runtime.conftest.bbox_model`):
it returns the bounding box of the bright pixels, so every expected box is known exactly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import network_attempts, run_cli
from tests.runtime.conftest import bbox_model, make_meta


def square(h: int, w: int, box: tuple[int, int, int, int] | None, dtype: type = np.uint8) -> np.ndarray:
    """A dark BGR image with a white filled rectangle ``box`` (x1, y1, x2, y2 exclusive), or none."""
    img = np.full((h, w, 3), 20, np.uint8)
    if box is not None:
        x1, y1, x2, y2 = box
        img[y1:y2, x1:x2] = 255
    if dtype == np.uint16:
        return img.astype(np.uint16) * 257
    return img


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("model")
    meta = make_meta(["defect"], size_hw=(64, 64))
    return bbox_model(d / "bbox.onnx", meta, score=0.9)


@pytest.fixture(scope="module")
def picky_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with an operating point above its score: nothing passes unless --conf says so."""
    d = tmp_path_factory.mktemp("picky")
    meta = make_meta(["defect"], size_hw=(64, 64))
    meta.thresholds = {"schema": "edgevision.thresholds/1", "target": "recall", "value": 0.9, "iou": 0.5,
                       "classes": {"defect": 0.95}}
    return bbox_model(d / "picky.onnx", meta, score=0.9)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(d / "a.png"), square(128, 128, (32, 32, 64, 64)))
    cv2.imwrite(str(d / "clean.png"), square(128, 128, None))
    sub = d / "sub"
    sub.mkdir()
    cv2.imwrite(str(sub / "mono.png"), square(64, 128, (0, 0, 64, 32))[:, :, 0])  # 1 channel
    cv2.imwrite(str(sub / "deep.png"), square(128, 128, (64, 64, 128, 128), np.uint16))  # 16-bit
    (d / "empty.png").write_bytes(b"")
    data = cv2.imencode(".jpg", square(128, 128, (0, 0, 8, 8)))[1].tobytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "notes.txt").write_text("not an image")
    return d


def load(out: Path) -> dict:
    return json.loads((out / "predictions.json").read_text())


@pytest.mark.network_blocked
def test_folder_boxes_decisions_unreadable_csv_and_images(model: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    res = run_cli("predict", model, images, "--out", out, "--format", "csv", "--save-images",
                  block_network=tmp_path / "net")
    assert res.returncode == 0, res.stderr
    assert network_attempts(tmp_path / "net") == []
    doc = load(out)
    assert doc["schema"] == "edgevision.predictions/1" and doc["classes"] == ["defect"]
    by = {im["name"]: im for im in doc["images"]}
    assert sorted(by) == ["a.png", "clean.png", "sub/deep.png", "sub/mono.png"]
    np.testing.assert_allclose(by["a.png"]["boxes"], [[32, 32, 64, 64]], atol=0.01)
    np.testing.assert_allclose(by["sub/mono.png"]["boxes"], [[0, 0, 64, 32]], atol=0.01)
    np.testing.assert_allclose(by["sub/deep.png"]["boxes"], [[64, 64, 128, 128]], atol=0.01)
    assert by["a.png"]["scores"] == [pytest.approx(0.9)] and by["a.png"]["class_names"] == ["defect"]
    assert by["sub/mono.png"]["size_hw"] == [64, 128]
    assert by["clean.png"]["boxes"] == [] and by["clean.png"]["decision"] == "accept"
    assert by["a.png"]["decision"] == "reject"
    assert doc["summary"]["rejected"] == 3 and doc["summary"]["accepted"] == 1
    assert doc["summary"]["classes"]["defect"] == {"detections": 3, "images": 3}
    bad = {u["name"]: u["error"] for u in doc["unreadable"]}
    assert set(bad) == {"empty.png", "truncated.jpg"} and "0 bytes" in bad["empty.png"]
    assert "empty.png" in res.stderr and "truncated.jpg" in res.stderr
    assert doc["threshold_source"].startswith("defaults.conf 0.25")
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 4 and {r["image"] for r in rows if r["class"]} == {"a.png", "sub/mono.png", "sub/deep.png"}
    drawn = sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*") if p.is_file())
    assert drawn == ["a.png", "clean.png", "sub/deep.png", "sub/mono.png"]
    a = cv2.imread(str(out / "images" / "a.png"))
    assert a.shape == (128, 128, 3) and not np.array_equal(a, square(128, 128, (32, 32, 64, 64)))
    assert not list(tmp_path.glob(".pred.*"))  # no staging folder left


def test_single_image_glob_and_predictions_feed_eval(model: Path, images: Path, tmp_path: Path) -> None:
    res = run_cli("predict", model, images / "a.png", "--out", tmp_path / "one")
    assert res.returncode == 0, res.stderr
    assert [im["name"] for im in load(tmp_path / "one")["images"]] == ["a.png"]
    res = run_cli("predict", model, str(images / "**" / "*.png"), "--out", tmp_path / "glob")
    assert res.returncode == 0, res.stderr
    names = [im["name"] for im in load(tmp_path / "glob")["images"]]
    assert names == ["a.png", "clean.png", "deep.png", "mono.png"]  # empty.png is listed as unreadable


def test_operating_points_from_the_model_and_conf_override(picky_model: Path, images: Path, tmp_path: Path) -> None:
    res = run_cli("predict", picky_model, images / "a.png", "--out", tmp_path / "op")
    assert res.returncode == 0, res.stderr
    doc = load(tmp_path / "op")
    assert doc["threshold_source"] == "the model's operating points" and doc["thresholds"] == {"defect": 0.95}
    assert doc["images"][0]["boxes"] == [] and doc["images"][0]["decision"] == "accept"
    # which rule each class uses: a thresholds/1 document says its target
    assert doc["threshold_rules"] == {"defect": "recall >= 0.9"} and "recall >= 0.9" in res.stdout
    res = run_cli("predict", picky_model, images / "a.png", "--out", tmp_path / "conf", "--conf", "0.5")
    assert res.returncode == 0, res.stderr
    assert load(tmp_path / "conf")["images"][0]["decision"] == "reject"
    assert load(tmp_path / "conf")["threshold_rules"] == {}  # --conf: not the model's operating points


def test_video_frames_with_stride(model: Path, tmp_path: Path) -> None:
    video = tmp_path / "line.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    assert vw.isOpened()
    for i in range(6):
        vw.write(square(96, 128, (10 * i, 20, 10 * i + 30, 60)))
    vw.release()
    res = run_cli("predict", model, video, "--out", tmp_path / "v", "--vid-stride", "2", "--save-images")
    assert res.returncode == 0, res.stderr
    doc = load(tmp_path / "v")
    assert [im["name"] for im in doc["images"]] == ["line.avi#000000", "line.avi#000002", "line.avi#000004"]
    for k, im in zip((0, 2, 4), doc["images"]):  # MJPG is lossy: edges move by a pixel at most
        np.testing.assert_allclose(im["boxes"], [[10 * k, 20, 10 * k + 30, 60]], atol=1.5)
    assert len(list((tmp_path / "v" / "images").glob("line.avi_*.jpg"))) == 3


def test_tiled_prediction_through_the_cli(model: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), square(256, 512, (300, 100, 340, 140)))
    res = run_cli("predict", model, big, "--out", tmp_path / "t", "--tile", "0", "--conf", "0.5")
    assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(load(tmp_path / "t")["images"][0]["boxes"], [[300, 100, 340, 140]], atol=0.01)


def test_nothing_readable_exits_1_with_the_list(model: Path, tmp_path: Path) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    (src / "x.png").write_bytes(b"\x89PNG garbage")
    res = run_cli("predict", model, src, "--out", tmp_path / "o")
    assert res.returncode == 1
    assert load(tmp_path / "o")["unreadable"][0]["name"] == "x.png"


@pytest.mark.parametrize("case", ["missing_model", "not_onnx", "exists", "no_source", "bad_format", "tile_pt"])
def test_bad_arguments_give_one_line_and_write_nothing(case: str, model: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args: list[object] = ["predict", model, images, "--out", out]
    want = ""
    if case == "missing_model":
        args[1], want = tmp_path / "nope.onnx", "model not found"
    elif case == "not_onnx":
        fake = tmp_path / "fake.onnx"
        fake.write_bytes(b"this is not a protobuf")
        args[1], want = fake, "fake.onnx"
    elif case == "exists":
        out.mkdir()
        want = "--overwrite"
    elif case == "no_source":
        args[2], want = tmp_path / "nowhere", "no such file or folder"
    elif case == "bad_format":
        args += ["--format", "xml"]
        want = "--format"
    elif case == "tile_pt":
        pt = tmp_path / "m.pt"
        pt.write_bytes(b"x")
        args[1] = pt
        args += ["--tile", "0"]
        want = "export it first"
    res = run_cli(*args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and want in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert out.exists() == (case == "exists") and not list(tmp_path.glob(".out.*"))
    if case == "exists":
        assert list(out.iterdir()) == []


def test_eval_of_an_onnx_model_uses_the_runtime_and_its_operating_points(picky_model: Path, tmp_path: Path) -> None:
    """A COCO dataset whose boxes are the squares: mAP 1; the model's operating points (0.95) reject nothing."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    boxes = {"p0.png": (8, 8, 40, 40), "p1.png": (50, 60, 90, 100), "p2.png": None}
    coco: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "defect"}]}
    for i, (name, box) in enumerate(boxes.items()):
        cv2.imwrite(str(root / "images" / name), square(128, 128, box))
        coco["images"].append({"id": i + 1, "file_name": name, "height": 128, "width": 128})
        if box:
            x1, y1, x2, y2 = box
            coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    (root / "annotations.json").write_text(json.dumps(coco))
    res = run_cli("eval", picky_model, "--data", root / "annotations.json", "--split", "all", "--json",
                  tmp_path / "e.json")
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "e.json").read_text())
    assert rep["coco"]["map50_95"] == pytest.approx(1.0)
    dec = rep["decisions"]
    assert dec["escape_rate"] == 1.0 and dec["false_reject_rate"] == 0.0  # 0.9 < operating point 0.95


def test_rules_and_degenerate_operating_points_are_said(tmp_path: Path, images: Path) -> None:
    meta = make_meta(["defect"], size_hw=(64, 64))
    meta.thresholds = {"schema": "edgevision.thresholds/1", "target": "recall", "value": 0.9, "iou": 0.5,
                       "classes": {"defect": 0.001}, "unreachable": ["defect"]}
    old = bbox_model(tmp_path / "old.onnx", meta, score=0.9)
    res = run_cli("predict", old, images / "a.png", "--out", tmp_path / "p")
    assert res.returncode == 0, res.stderr
    err = " ".join(res.stderr.split())
    assert "operating points defect 0.001 are below 0.05" in err and "--save-thresholds" in err
    rules = load(tmp_path / "p")["threshold_rules"]
    assert rules["defect"].startswith("lowest score seen: recall >= 0.9 not reachable")
    meta.thresholds = {"schema": "edgevision.thresholds/2", "target": "recall", "value": 0.9, "iou": 0.5,
                       "classes": {"defect": 0.31},
                       "rules": {"defect": {"rule": "f1", "text": "F1-optimal (F1 0.62): recall >= 0.9 not reachable"}}}
    new = bbox_model(tmp_path / "new.onnx", meta, score=0.9)
    res = run_cli("predict", new, images / "a.png", "--out", tmp_path / "q")
    assert res.returncode == 0 and "below 0.05" not in res.stderr
    assert load(tmp_path / "q")["threshold_rules"] == {"defect": "F1-optimal (F1 0.62): recall >= 0.9 not reachable"}
    assert "F1-optimal (F1 0.62)" in " ".join(res.stdout.split())
