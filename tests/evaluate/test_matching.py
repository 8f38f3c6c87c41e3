"""P/R/F1 and the confusion matrix on a hand-computed case; the matching agrees with pycocotools."""

from __future__ import annotations

import numpy as np
import pytest

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.evaluate import evaluate
from edgevision.evaluate.matching import greedy_match, iou_matrix

LABELS = LabelMap(["a", "b"])
GT = [
    ImageRecord("1.png", (100, 100), [[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1]),
    ImageRecord("2.png", (100, 100), [[10, 10, 30, 30]], [0]),
    ImageRecord("3.png", (100, 100)),
]
PREDS = [
    ImageRecord("1.png", (100, 100),
                [[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60], [20, 20, 40, 40], [0, 0, 10, 10]],
                [0, 0, 1, 0, 1], scores=[0.9, 0.8, 0.7, 0.6, 0.3]),
    # 1.png: a TP, a duplicate (FP), b far away (FP), an "a" on the b object (FP), b below conf
    ImageRecord("3.png", (100, 100), [[5, 5, 15, 15]], [1], scores=[0.95]),  # FP on the background image
]


def test_prf_and_confusion_matrix_hand_computed() -> None:
    rep = evaluate(GT, PREDS, LABELS, conf=0.5, iou=0.5)
    a, b, o = rep.per_class["a"], rep.per_class["b"], rep.overall
    assert (a.tp, a.fp, a.fn, a.gt) == (1, 2, 1, 2)
    assert (a.precision, a.recall, a.f1) == pytest.approx((1 / 3, 1 / 2, 0.4))
    assert (b.tp, b.fp, b.fn, b.gt, b.precision, b.recall, b.f1) == (0, 2, 1, 1, 0.0, 0.0, 0.0)
    assert (o.tp, o.fp, o.fn, o.gt) == (1, 4, 2, 3)
    assert (o.precision, o.recall, o.f1) == pytest.approx((0.2, 1 / 3, 0.25))
    # rows ground truth (a, b, background), columns predicted
    assert rep.confusion.matrix.tolist() == [[1, 0, 1], [1, 0, 0], [1, 2, 0]]
    assert rep.confusion.names == ["a", "b", "background"]
    # at conf 0.2 the "b" at 0.3 on the "a" object joins: an FP of b; and the confusion matrix is unchanged
    # except one more background->b (the a object is already taken by the IoU-1 "a" detection)
    low = evaluate(GT, PREDS, LABELS, conf=0.2, iou=0.5)
    assert low.per_class["b"].fp == 3
    assert low.confusion.matrix.tolist() == [[1, 0, 1], [1, 0, 0], [1, 3, 0]]
    d = rep.to_dict()
    assert d["prf"]["overall"]["tp"] == 1 and d["confusion"]["matrix"][2] == [1, 2, 0]
    assert "| a | 2 |" in rep.markdown()


def test_undefined_ratios_are_none() -> None:
    labels = LabelMap(["a", "b"])
    gt = [ImageRecord("1.png", (50, 50), [[0, 0, 10, 10]], [0])]
    rep = evaluate(gt, [], labels)
    assert (rep.per_class["a"].precision, rep.per_class["a"].recall, rep.per_class["a"].f1) == (None, 0.0, None)
    assert (rep.per_class["b"].precision, rep.per_class["b"].recall) == (None, None)


def test_crowd_and_difficult_in_prf() -> None:
    labels = LabelMap(["a"])
    gt = [ImageRecord("1.png", (100, 100), [[0, 0, 50, 50], [60, 60, 90, 90]], [0, 0],
                      attributes=[{"difficult": True}, {}])]
    preds = [ImageRecord("1.png", (100, 100), [[0, 0, 20, 20], [60, 60, 90, 90]], [0, 0], scores=[0.9, 0.8])]
    ign = evaluate(gt, preds, labels, difficult="ignore").per_class["a"]
    assert (ign.tp, ign.fp, ign.fn, ign.gt) == (1, 0, 0, 1)  # inside the difficult box: inter / det area = 1
    cnt = evaluate(gt, preds, labels, difficult="count").per_class["a"]
    assert (cnt.tp, cnt.fp, cnt.fn, cnt.gt) == (1, 1, 1, 2)  # IoU 400 / 2500 < 0.5
    drop = evaluate(gt, preds, labels, difficult="drop").per_class["a"]
    assert (drop.tp, drop.fp, drop.fn, drop.gt) == (1, 1, 0, 1)


def test_greedy_match_rules() -> None:
    gt = np.array([[0, 0, 10, 10], [0, 0, 12, 10], [40, 40, 80, 80]], dtype=float)
    ignore = np.array([False, False, True])
    dt = np.array([[0, 0, 11, 10], [0, 0, 11, 10], [0, 0, 11, 10], [50, 50, 60, 60], [50, 50, 60, 60]], dtype=float)
    match, dt_ign = greedy_match(dt, np.array([0.5, 0.9, 0.8, 0.7, 0.6]), gt, ignore, 0.5)
    # the best (0.9) takes the highest IoU object (12 wide: 110/120 > 100/110), the next the other one,
    # the third none; both inside the crowd object are absorbed by it
    assert match.tolist() == [-1, 1, 0, 2, 2] and dt_ign.tolist() == [False, False, False, True, True]
    assert iou_matrix(dt[:1], gt, ignore)[0].tolist() == pytest.approx([10 / 11, 110 / 120, 0.0])
