"""Operating points and image-level decisions on a hand-computed case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError
from edgevision.evaluate import OperatingPoints, choose_thresholds, evaluate, image_decisions

LABELS = LabelMap(["d", "e", "f"])
BOX, BOX2, FAR = [0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]
GT = [
    ImageRecord("1.png", (64, 64), [BOX], [0]),
    ImageRecord("2.png", (64, 64), [BOX, BOX2], [0, 0]),
    ImageRecord("3.png", (64, 64), [BOX, [30, 30, 40, 40]], [0, 1]),  # d never found; e never detected
    ImageRecord("4.png", (64, 64)),  # defect-free
    ImageRecord("5.png", (64, 64), [BOX], [0], attributes=[{"difficult": True}]),  # only a difficult object
]
PREDS = [
    ImageRecord("1.png", (64, 64), [BOX], [0], scores=[0.9]),
    ImageRecord("2.png", (64, 64), [BOX, BOX2], [0, 0], scores=[0.8, 0.4]),
    ImageRecord("3.png", (64, 64), [FAR], [0], scores=[0.6]),
    ImageRecord("4.png", (64, 64), [FAR, FAR], [0, 2], scores=[0.7, 0.5]),
]
# class d, by score: 0.9 TP, 0.8 TP, 0.7 FP, 0.6 FP, 0.4 TP; 4 objects
# recall 0.25 0.5 0.5 0.5 0.75; precision 1 1 2/3 1/2 3/5


def f32(v: float) -> float:
    return float(np.float32(v))


def test_recall_targets() -> None:
    op = choose_thresholds(GT, PREDS, LABELS, "recall", 0.5)
    assert op.classes["d"] == f32(0.8)  # the highest threshold reaching recall 0.5
    assert op.achieved["d"] == {"recall": 0.5, "precision": 1.0, "tp": 2, "fp": 0, "gt": 4}
    assert op.rules["d"] == {"rule": "recall", "text": "recall >= 0.5 (reached 0.500)"}
    # no detection of e finds its object: never the lowest score seen, the default confidence, and said so
    assert op.classes["e"] == 0.25 and op.rules["e"]["rule"] == "default"
    assert "no threshold finds any object" in op.rules["e"]["text"]
    assert op.classes["f"] == 0.25 and "no gt object" in op.rules["f"]["text"]  # no gt of f
    assert op.unreachable == ["e", "f"]
    assert choose_thresholds(GT, PREDS, LABELS, "recall", 0.75).classes["d"] == f32(0.4)
    assert choose_thresholds(GT, PREDS, LABELS, "recall", 0.25).classes["d"] == f32(0.9)
    full = choose_thresholds(GT, PREDS, LABELS, "recall", 1.0)
    # recall 1.0 is out of reach: d falls back to its F1-optimal threshold (F1 2/3 at 0.8 and at 0.4: the higher)
    assert full.unreachable == ["d", "e", "f"] and full.classes["d"] == f32(0.8)
    assert full.rules["d"] == {"rule": "f1", "text": "F1-optimal (F1 0.67): recall >= 1 not reachable (best 0.750)"}
    assert full.achieved["d"] == {"recall": 0.5, "precision": 1.0, "tp": 2, "fp": 0, "gt": 4}
    assert full.achieved["e"] == {"recall": 0.0, "precision": None, "tp": 0, "fp": 0, "gt": 1}
    # the default fallback instead of F1
    dflt = choose_thresholds(GT, PREDS, LABELS, "recall", 1.0, fallback="default")
    assert dflt.classes["d"] == 0.25 and dflt.rules["d"]["rule"] == "default"


def test_minimum_threshold_is_never_undercut() -> None:
    # recall 0.75 needs 0.4; with a minimum of 0.5 it is reachable only below the minimum: F1 fallback above it
    op = choose_thresholds(GT, PREDS, LABELS, "recall", 0.75, min_threshold=0.5)
    assert op.classes["d"] == f32(0.8) and op.rules["d"]["rule"] == "f1"
    assert "reached only below the minimum threshold 0.5" in op.rules["d"]["text"]
    assert min(op.classes.values()) >= 0.5  # the default (0.25) is raised to the minimum too
    with pytest.raises(ConfigError, match="min_threshold"):
        choose_thresholds(GT, PREDS, LABELS, "recall", 0.5, min_threshold=0.0)
    with pytest.raises(ConfigError, match="fallback"):
        choose_thresholds(GT, PREDS, LABELS, "recall", 0.5, fallback="lowest")


def test_precision_targets() -> None:
    assert choose_thresholds(GT, PREDS, LABELS, "precision", 0.6).classes["d"] == f32(0.4)  # lowest with P >= 0.6
    assert choose_thresholds(GT, PREDS, LABELS, "precision", 0.65).classes["d"] == f32(0.7)
    op = choose_thresholds(GT, PREDS, LABELS, "precision", 1.0)
    assert op.classes["d"] == f32(0.8) and "d" not in op.unreachable


def test_difficult_counts_in_operating_points() -> None:
    # with "count", the difficult object in 5.png is a 5th d object nobody finds
    op = choose_thresholds(GT, PREDS, LABELS, "recall", 0.5, difficult="count")
    assert op.achieved["d"]["gt"] == 5 and op.classes["d"] == f32(0.4)  # 3/5 >= 0.5 only at 0.4


def test_image_decisions_hand_computed() -> None:
    op = choose_thresholds(GT, PREDS, LABELS, "recall", 0.5)  # d 0.8, e 0.25, f 0.25
    d = image_decisions(GT, PREDS, op, labels=LABELS)
    # flagged: 1 (0.9 d), 2 (0.8 d), 4 (f at 0.5); not flagged: 3 (d at 0.6 < 0.8), 5
    assert (d["defective_images"], d["defect_free_images"], d["ambiguous_images"]) == (3, 1, 1)
    assert (d["escapes"], d["escape_rate"], d["escaped_images"]) == (1, 1 / 3, ["3.png"])
    assert (d["false_rejects"], d["false_reject_rate"], d["false_reject_images"]) == (1, 1.0, ["4.png"])
    # each rate with its exact 95% interval: 1/3 -> (0.0084, 0.9057), 1/1 -> (0.025, 1)
    assert d["escape"]["k"] == 1 and d["escape"]["n"] == 3
    assert d["escape"]["lower"] == pytest.approx(0.008404, abs=1e-5) and d["escape"]["upper"] == pytest.approx(0.905700, abs=1e-5)
    assert d["false_reject"]["lower"] == pytest.approx(0.025) and d["false_reject"]["upper"] == 1.0
    # objects: d 4 (found: 1.png, first of 2.png), e 1 (missed)
    assert (d["objects"], d["missed_objects"], d["object_miss_rate"]) == (5, 3, 0.6)
    assert d["per_class_miss"]["d"] == {"objects": 4, "missed": 2, "miss_rate": 0.5}
    assert d["per_class_miss"]["f"] == {"objects": 0, "missed": 0, "miss_rate": None}
    # one threshold for all classes, and difficult objects counted: 5.png becomes an escape
    d2 = image_decisions(GT, PREDS, 0.65, labels=LABELS, difficult="count")
    assert (d2["defective_images"], d2["escapes"], d2["escaped_images"]) == (4, 2, ["3.png", "5.png"])
    assert (d2["false_rejects"], d2["defect_free_images"]) == (1, 1)  # 4.png: d at 0.7
    # a mapping and an array give the same as the OperatingPoints
    assert image_decisions(GT, PREDS, dict(op.classes), labels=LABELS) == d
    assert image_decisions(GT, PREDS, [op.classes[n] for n in LABELS.names])["escapes"] == 1


def test_evaluate_uses_operating_points() -> None:
    op = choose_thresholds(GT, PREDS, LABELS, "recall", 0.5)
    rep = evaluate(GT, PREDS, LABELS, operating=op)
    assert rep.decisions["escapes"] == 1 and rep.to_dict()["decisions"]["thresholds_from"] == "operating"
    assert rep.to_dict()["operating"]["classes"]["d"] == f32(0.8)
    md = rep.markdown()
    assert "escape rate 33.3% (1/3; 95% CI 0.8-90.6%)" in md and "| d | 0.8 | recall >= 0.5 (reached 0.500) |" in md


def test_round_trip_and_errors(tmp_path: Path) -> None:
    op = choose_thresholds(GT, PREDS, LABELS, "recall", 0.5)
    d = op.to_dict()
    assert set(d) == {"schema", "target", "value", "iou", "classes", "rules", "achieved", "unreachable", "rule"}
    assert d["schema"] == "edgevision.thresholds/2" and d["rule"]["mode"] == "recall"
    assert OperatingPoints.from_dict(d) == op
    path = op.save(tmp_path / "run" / "thresholds.json")
    assert OperatingPoints.load(path) == op
    op.decisions = image_decisions(GT, PREDS, op, labels=LABELS)
    assert OperatingPoints.load(op.save(path)) == op and json.loads(path.read_text())["decisions"]["escapes"] == 1
    with pytest.raises(ConfigError, match=r"classes \['d', 'e', 'f'\] but the dataset has \['x'\]"):
        op.for_labels(LabelMap(["x"]))
    with pytest.raises(ConfigError, match="missing key 'classes'"):
        OperatingPoints.from_dict({"target": "recall", "value": 0.9})
    with pytest.raises(ConfigError, match="target"):
        choose_thresholds(GT, PREDS, LABELS, "f1", 0.5)
    with pytest.raises(ConfigError, match="value"):
        choose_thresholds(GT, PREDS, LABELS, "recall", 1.5)
    with pytest.raises(DatasetError, match="x.png"):
        choose_thresholds(GT, [ImageRecord("x.png", (64, 64))], LABELS)
