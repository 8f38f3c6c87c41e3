"""COCO metrics equal pycocotools run the standard way on JSON files, exactly."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from edgevision.convert import read_dataset
from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError
from edgevision.evaluate import coco_evaluate, read_predictions

pytest.importorskip("pycocotools")

# 4 images 200x200: small (< 32²), medium and large boxes, a crowd object, a background image (id 30).
# Category 9 ("scratch") has no gt object but one detection (AP -1 in pycocotools).
GT_ANNS = [
    (10, 3, [10, 10, 20, 15], 0), (10, 7, [50, 50, 40, 40], 0), (10, 3, [100, 100, 98.5, 90], 0),
    (20, 3, [20, 30, 50, 40], 0), (20, 3, [120, 120, 60, 60], 1), (20, 7, [5, 5, 10, 10], 0),
    (40, 7, [0, 0, 150, 120], 0), (40, 3, [160, 160, 20, 20], 0), (40, 7, [30.5, 130, 60, 60], 0),
]
RESULTS = [
    (10, 3, [10.5, 10, 20, 15], 0.95), (10, 3, [11, 10.5, 20, 14], 0.9),  # the second is a duplicate
    (10, 7, [52, 48, 40, 42], 0.85), (10, 3, [105, 100, 90, 95], 0.6), (10, 7, [0, 0, 30, 30], 0.3),
    (20, 3, [22, 30, 48, 40], 0.8), (20, 3, [130, 130, 20, 20], 0.7),  # inside the crowd object
    (20, 9, [10, 10, 30, 30], 0.5),
    (30, 3, [50, 50, 30, 30], 0.65), (30, 7, [10, 10, 10, 10], 0.2),  # on the background image
    (40, 7, [2, 2, 145, 118], 0.75), (40, 3, [100, 100, 20, 20], 0.4), (40, 3, [160, 162, 20, 18], 0.55),
    (40, 7, [100, 20, 30, 30], 0.35), (40, 7, [31, 131, 58, 58], 0.25),  # 3rd pit: the TP
]


def write_fixture(root: Path) -> tuple[Path, Path]:
    images = [{"id": i, "file_name": f"img {i}.png", "height": 200, "width": 200} for i in (10, 20, 30, 40)]
    anns = [{"id": n + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": crowd}
            for n, (im, c, b, crowd) in enumerate(GT_ANNS)]
    cats = [{"id": 3, "name": "crack"}, {"id": 7, "name": "pit"}, {"id": 9, "name": "scratch"}]
    root.mkdir(parents=True, exist_ok=True)
    (root / "gt.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    res = [{"image_id": im, "category_id": c, "bbox": b, "score": s} for im, c, b, s in RESULTS]
    (root / "results.json").write_text(json.dumps(res))
    return root / "gt.json", root / "results.json"


def reference(gt_json: Path, res_json: Path, max_dets: int = 100) -> tuple[list[float], np.ndarray]:
    """pycocotools, the standard way."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(str(res_json)), "bbox")
        ev.params.maxDets = [1, 10, 100] if max_dets == 100 else [1, max_dets, max_dets]  # evaluate() sorts them
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats.tolist(), ev.eval["precision"]


@pytest.mark.parametrize("max_dets", [100, 2])
def test_equals_pycocotools_exactly(tmp_path: Path, max_dets: int) -> None:
    gt_json, res_json = write_fixture(tmp_path)
    ds = read_dataset(gt_json, "coco").dataset
    preds = read_predictions(res_json, ds.images, ds.labels)
    m = coco_evaluate(ds.images, preds, ds.labels, max_dets=max_dets)
    stats, precision = reference(gt_json, res_json, max_dets)
    assert m.stats == stats
    assert 0 < stats[1] < 1 and stats[5] > -1  # a real, non-trivial case
    assert [m.map50, m.map75, m.ap_small, m.ap_medium, m.ap_large, m.ar100] == [
        stats[1], stats[2], stats[3], stats[4], stats[5], stats[8]]
    p_all = precision[:, :, :, 0, -1]
    assert m.map50_95 == float(np.mean(p_all[p_all > -1]))
    if max_dets == 100:
        assert m.map50_95 == stats[0]
    else:  # pycocotools' summarize() takes stats[0] at maxDets=100 only
        assert stats[0] == -1 and m.map50 < reference(gt_json, res_json)[0][1]
        assert m.per_class["pit"]["ap50"] == pytest.approx(51 / 101)  # the 3rd pit (at 0.25) is cut
    for k, name in enumerate(ds.labels.names):
        p = precision[:, :, k, 0, -1]
        if (p > -1).any():
            assert m.per_class[name]["ap50_95"] == float(np.mean(p[p > -1]))
            assert m.per_class[name]["ap50"] == float(np.mean(precision[0, :, k, 0, -1]))
    assert ds.labels.names == ["crack", "pit", "scratch"]
    assert [m.per_class[n]["gt"] for n in ds.labels.names] == [4, 4, 0]  # the crowd crack is not counted
    assert m.per_class["scratch"] == {"ap50_95": None, "ap50": None, "gt": 0}
    assert (m.images, m.detections) == (4, len(RESULTS))
    # mAP is the mean over the classes with gt
    assert m.map50_95 == pytest.approx(np.mean([m.per_class[n]["ap50_95"] for n in ("crack", "pit")]))


def test_equals_pycocotools_on_unsplit_records_with_a_tie(tmp_path: Path) -> None:
    """Records built in memory (no COCO ids) written out as JSON by the test, scores with a tie."""
    labels = LabelMap(["a", "b"])
    gt = [ImageRecord("x.png", (100, 120), [[10, 10, 40, 30], [50, 50, 90, 95]], [0, 1]),
          ImageRecord("y.png", (100, 120), [[0, 0, 20, 20]], [0]),
          ImageRecord("z.png", (100, 120))]
    preds = [ImageRecord("x.png", (100, 120), [[11, 10, 40, 31], [50, 52, 88, 95], [0, 0, 5, 5]], [0, 1, 0],
                         scores=[0.5, 0.75, 0.5]),
             ImageRecord("z.png", (100, 120), [[1, 1, 21, 21]], [0], scores=[0.5])]
    images = [{"id": i + 1, "file_name": r.name, "height": 100, "width": 120} for i, r in enumerate(gt)]
    anns, res = [], []
    for i, r in enumerate(gt):
        for b, c in zip(r.boxes.tolist(), r.class_ids.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "bbox": [b[0], b[1], w, h],
                         "area": w * h, "iscrowd": 0})
    for p in preds:
        i = [r.name for r in gt].index(p.name)
        for b, c, s in zip(p.boxes.tolist(), p.class_ids.tolist(), p.scores.tolist()):
            res.append({"image_id": i + 1, "category_id": c + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                        "score": s})
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                  "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    (tmp_path / "res.json").write_text(json.dumps(res))
    m = coco_evaluate(gt, preds, labels)
    assert m.stats == reference(tmp_path / "gt.json", tmp_path / "res.json")[0]
    assert m.per_class["b"]["gt"] == 1


def test_perfect_and_empty_predictions() -> None:
    labels = LabelMap(["a", "b"])
    gt = [ImageRecord("x.png", (100, 100), [[10, 10, 20, 20], [30, 30, 90, 90]], [0, 1]),
          ImageRecord("y.png", (100, 100), [[0, 0, 50, 40]], [1]), ImageRecord("bg.png", (100, 100))]
    perfect = [ImageRecord(r.name, r.size_hw, r.boxes, r.class_ids, scores=np.ones(len(r))) for r in gt]
    m = coco_evaluate(gt, perfect, labels)
    assert (m.map50_95, m.map50, m.map75, m.ar100) == (1.0, 1.0, 1.0, 1.0)
    # pycocotools' precision is tp / (tp + fp + eps): 1 - 2e-16 per point
    assert m.per_class["a"]["ap50_95"] == pytest.approx(1.0, abs=1e-12)
    assert m.per_class["b"]["ap50_95"] == pytest.approx(1.0, abs=1e-12)
    assert m.ap_small == pytest.approx(1.0) and m.ap_medium == 1.0 and m.ap_large is None  # no object >= 96²
    for preds in ([], [ImageRecord("x.png", (100, 100))]):
        m = coco_evaluate(gt, preds, labels)
        assert (m.map50_95, m.map50, m.ar100, m.detections) == (0.0, 0.0, 0.0, 0)
        assert m.per_class["a"] == {"ap50_95": 0.0, "ap50": 0.0, "gt": 1}


def _difficult_case() -> tuple[list[ImageRecord], list[ImageRecord], LabelMap]:
    labels = LabelMap(["defect"])
    gt = [ImageRecord("a.png", (100, 100), [[10, 10, 30, 30], [50, 50, 90, 90]], [0, 0],
                      attributes=[{}, {"difficult": True}]),
          ImageRecord("b.png", (100, 100), [[20, 20, 40, 40]], [0])]
    # a.png: the ordinary object found (0.9), a detection on the difficult one (0.8);
    # b.png: the object found at 0.7
    preds = [ImageRecord("a.png", (100, 100), [[10, 10, 30, 30], [50, 50, 90, 90]], [0, 0], scores=[0.9, 0.8]),
             ImageRecord("b.png", (100, 100), [[20, 20, 40, 40]], [0], scores=[0.7])]
    return gt, preds, labels


def test_difficult_policies() -> None:
    gt, preds, labels = _difficult_case()
    ignore = coco_evaluate(gt, preds, labels, difficult="ignore")
    count = coco_evaluate(gt, preds, labels, difficult="count")
    drop = coco_evaluate(gt, preds, labels, difficult="drop")
    # ignore: 2 counted objects, the detection on the difficult one is neither TP nor FP -> perfect
    assert ignore.map50 == 1.0 and ignore.per_class["defect"]["gt"] == 2
    # count: 3 objects all found -> perfect too, and 3 gt
    assert count.map50 == 1.0 and count.per_class["defect"]["gt"] == 3
    # drop: the detection at 0.8 becomes a false positive ranked before the TP at 0.7
    assert drop.per_class["defect"]["gt"] == 2 and drop.map50 < 1.0
    # 101-point interpolated AP: precision 1 up to recall 0.5, then 2/3 -> (51 * 1 + 50 * 2/3) / 101
    assert drop.map50 == pytest.approx((51 + 50 * 2 / 3) / 101)
    # without the detection on the difficult object, "count" misses one of 3 objects
    no_hit = [preds[0].subset([True, False]), preds[1]]
    assert coco_evaluate(gt, no_hit, labels, difficult="count").map50 == pytest.approx(67 / 101)
    assert coco_evaluate(gt, no_hit, labels, difficult="ignore").map50 == 1.0
    with pytest.raises(ConfigError, match="difficult"):
        coco_evaluate(gt, preds, labels, difficult="skip")


def test_prediction_for_unknown_image_is_an_error() -> None:
    gt, preds, labels = _difficult_case()
    bad = [*preds, ImageRecord("nope.png", (100, 100), [[0, 0, 5, 5]], [0], scores=[0.5])]
    with pytest.raises(DatasetError, match="nope.png"):
        coco_evaluate(gt, bad, labels)
    with pytest.raises(DatasetError, match="outside the label map"):
        coco_evaluate(gt, [ImageRecord("a.png", (100, 100), [[0, 0, 5, 5]], [3], scores=[0.5])], labels)


@pytest.mark.parametrize("iou_index", [0, 5])  # IoU 0.50 and 0.75
def test_matching_agrees_with_pycocotools_recall(tmp_path: Path, iou_index: int) -> None:
    """P/R use the same greedy rule: at conf 0, per-class recall = pycocotools' recall at that IoU."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from edgevision.evaluate import evaluate

    gt_json, res_json = write_fixture(tmp_path)
    ds = read_dataset(gt_json, "coco").dataset
    preds = read_predictions(res_json, ds.images, ds.labels)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(str(res_json)), "bbox")
        ev.evaluate()
        ev.accumulate()
    iou = float(ev.params.iouThrs[iou_index])
    rep = evaluate(ds.images, preds, ds.labels, conf=0.0, iou=iou)
    for k, name in enumerate(ds.labels.names):
        ref = ev.eval["recall"][iou_index, k, 0, -1]
        assert rep.per_class[name].recall == (None if ref == -1 else pytest.approx(ref, abs=1e-12)), name
    if iou_index == 0:  # every crack found; the duplicate, the wrong place and the background one are FPs
        assert (rep.per_class["crack"].tp, rep.per_class["crack"].fp) == (4, 3)


def test_no_images_is_an_error() -> None:
    with pytest.raises(DatasetError, match="no ground-truth images"):
        coco_evaluate([], [], LabelMap(["a"]))
