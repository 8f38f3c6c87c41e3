"""Image-level and priced operating points: hand-computed cases, brute force over every threshold
combination, the trade-off curve, refusals, and the expected cost."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError
from edgevision.evaluate.operating import (
    InfeasibleError,
    OperatingPoints,
    SelectionRule,
    choose_image_thresholds,
    decisions_summary,
    expected_cost,
    image_decisions,
    image_scores,
    limit_support,
    select_operating_points,
    tradeoff_curve,
)
from edgevision.evaluate.tradeoff import curve_rows, plot_tradeoff, write_tradeoff_csv

BOX = [0.0, 0.0, 10.0, 10.0]


def table_records(scores: np.ndarray, defective: np.ndarray) -> tuple[list[ImageRecord], list[ImageRecord], LabelMap]:
    """Ground truth and predictions from a score table: row i has one detection per class with a score
    (-1: none); a defective image holds one object of class 0."""
    k = scores.shape[1]
    labels = LabelMap([chr(ord("a") + c) for c in range(k)])
    gt, preds = [], []
    for i, (row, bad) in enumerate(zip(scores, defective)):
        name = f"{i:03d}.png"
        gt.append(ImageRecord(name, (64, 64), [BOX] if bad else [], [0] if bad else []))
        cls = [c for c in range(k) if row[c] >= 0]
        preds.append(ImageRecord(name, (64, 64), [BOX] * len(cls), cls, scores=[float(row[c]) for c in cls]))
    return gt, preds, labels


# defective D1..D5, defect-free G1..G4; columns: classes a, b (-1: no detection of the class)
HAND = np.array([[0.9, -1], [0.6, -1], [-1, 0.7], [0.3, 0.2], [-1, -1],
                 [0.5, -1], [-1, 0.15], [0.2, -1], [-1, -1]])
HAND_DEFECTIVE = np.array([True] * 5 + [False] * 4)


def as_f32(table: np.ndarray) -> np.ndarray:
    """The table as the records hold it (scores are float32), so that thresholds compare equal."""
    return table.astype(np.float32).astype(np.float64)


def f32(v: float) -> float:
    return float(np.float32(v))


def test_image_level_choice_hand_computed() -> None:
    gt, preds, labels = table_records(HAND, HAND_DEFECTIVE)
    # escape <= 20% (1 of 5; D5 has no detection and always escapes): D4 needs a <= 0.3 or b <= 0.2; only
    # a = 0.6, b = 0.2 flags D1-D4 with no good image (G1 a 0.5, G2 b 0.15, G3 a 0.2 all below)
    op = choose_image_thresholds(gt, preds, labels, SelectionRule(max_escape_rate=0.2))
    assert op.classes == {"a": f32(0.6), "b": f32(0.2)}
    d = op.decisions
    assert (d["escapes"], d["defective_images"], d["false_rejects"], d["defect_free_images"]) == (1, 5, 0, 4)
    assert d["escaped_images"] == ["004.png"] and op.target == "image" and op.value is None
    assert op.rules["a"] == {"rule": "image", "text": "per image: escape rate <= 0.2, false rejects minimised"}
    # the same point from the other side: false rejects <= 0, escapes minimised; and both limits together
    assert choose_image_thresholds(gt, preds, labels, SelectionRule(max_false_reject_rate=0.0)).classes == op.classes
    both = choose_image_thresholds(gt, preds, labels, SelectionRule(max_escape_rate=0.2, max_false_reject_rate=0.0))
    assert both.classes == op.classes and both.unreachable == [] and both.note is None
    # saved and read back whole
    assert OperatingPoints.from_dict(op.to_dict()) == op


def test_limits_that_cannot_hold_are_refused_with_the_best_reachable() -> None:
    gt, preds, labels = table_records(HAND, HAND_DEFECTIVE)
    with pytest.raises(InfeasibleError) as e:
        choose_image_thresholds(gt, preds, labels, SelectionRule(max_escape_rate=0.0))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("escape rate <= 0 cannot hold on this split (5 defective, 4 defect-free")
    assert "the lowest escape rate reachable is 20.0% (1/5; 95% CI 0.5-71.6%)" in msg
    # not strict (training): the closest point is kept and the note says why
    kept = choose_image_thresholds(gt, preds, labels, SelectionRule(max_escape_rate=0.0), strict=False)
    assert kept.unreachable == ["*"] and kept.note == msg and kept.decisions["escapes"] == 1


def test_constraint_pair_that_cannot_both_hold() -> None:
    # one class; defective scores 0.9 0.5 0.3, good 0.6 0.4: escape 0 needs t <= 0.3 (both good rejected)
    gt, preds, labels = table_records(np.array([[0.9], [0.5], [0.3], [0.6], [0.4]]),
                                      np.array([True, True, True, False, False]))
    with pytest.raises(InfeasibleError) as e:
        choose_image_thresholds(gt, preds, labels, SelectionRule(max_escape_rate=0.0, max_false_reject_rate=0.5))
    msg = str(e.value)
    assert msg.startswith("escape rate <= 0 and false-reject rate <= 0.5 cannot hold")
    assert "at escape rate <= 0 the lowest false-reject rate is 100.0% (2/2;" in msg
    assert "at false-reject rate <= 0.5 the lowest escape rate is 33.3% (1/3;" in msg  # t = 0.5: 0.3 escapes
    ok = choose_image_thresholds(gt, preds, labels, SelectionRule(max_escape_rate=0.34, max_false_reject_rate=0.5))
    assert ok.classes == {"a": f32(0.5)} and (ok.decisions["escapes"], ok.decisions["false_rejects"]) == (1, 1)


def test_splits_that_cannot_measure_a_rate_are_refused() -> None:
    gt, preds, labels = table_records(np.array([[0.9], [0.5]]), np.array([True, True]))
    with pytest.raises(ConfigError, match="need defect-free images, and the split has none .*--target recall=V"):
        choose_image_thresholds(gt, preds, labels, SelectionRule(max_escape_rate=0.1))
    gt, preds, labels = table_records(np.array([[0.9], [0.5]]), np.array([False, False]))
    with pytest.raises(ConfigError, match="need defective images"):
        choose_image_thresholds(gt, preds, labels, SelectionRule(cost_escape=5, cost_false_reject=1))
    with pytest.raises(ConfigError, match="both cost_escape and cost_false_reject"):
        SelectionRule(cost_escape=5).check()


def _brute(scores: np.ndarray, defective: np.ndarray, key, floor: float = 0.05) -> tuple:
    """The best key over every combination of candidate thresholds (each class: its per-image scores >= floor)."""
    cands = [np.unique(col[col >= floor]) for col in scores.T]
    best = None
    for combo in itertools.product(*[c if len(c) else [0.25] for c in cands]):
        flagged = (scores >= np.array(combo)).any(axis=1)
        k = key(int((defective & ~flagged).sum()), int((~defective & flagged).sum()))
        best = k if best is None or k < best else best
    return best


@pytest.mark.parametrize("seed", range(12))
def test_cost_optimal_point_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(8, 16)), int(rng.integers(1, 4))
    scores = as_f32(np.round(rng.random((n, k)), 2))
    scores[rng.random((n, k)) < 0.25] = -1
    defective = rng.random(n) < 0.5
    defective[:2] = [True, False]
    gt, preds, labels = table_records(scores, defective)
    D, G = int(defective.sum()), int((~defective).sum())
    ce, cf = float(rng.integers(1, 30)), float(rng.integers(1, 5))
    op = choose_image_thresholds(gt, preds, labels, SelectionRule(cost_escape=ce, cost_false_reject=cf))
    p = D / n

    def cost(e: int, f: int) -> float:
        return 1000 * (ce * p * e / D + cf * (1 - p) * f / G)

    d = op.decisions
    assert d["expected_cost"]["per_1000_parts"] == pytest.approx(cost(d["escapes"], d["false_rejects"]))
    assert cost(d["escapes"], d["false_rejects"]) == pytest.approx(_brute(scores, defective, lambda e, f: cost(e, f)))
    # the constrained choice is exact too: fewest false rejects with at most 1 escape more than the minimum
    lo = _brute(scores, defective, lambda e, f: e)
    limit = (lo + 1) / D
    op2 = choose_image_thresholds(gt, preds, labels, SelectionRule(max_escape_rate=min(1.0, limit)))
    e2, f2 = op2.decisions["escapes"], op2.decisions["false_rejects"]
    assert e2 <= lo + 1 and f2 == _brute(scores, defective, lambda e, f: f if e <= lo + 1 else 10**9)


@pytest.mark.parametrize("seed", range(4))
def test_tradeoff_curve_is_the_exact_frontier(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    scores = as_f32(np.round(rng.random((14, 2)), 2))
    defective = rng.random(14) < 0.5
    defective[:2] = [True, False]
    gt, preds, labels = table_records(scores, defective)
    curve = tradeoff_curve(image_scores(gt, preds, labels))
    esc = [p.escapes for p in curve]
    fr = [p.false_rejects for p in curve]
    assert esc == sorted(esc) and fr == sorted(fr, reverse=True) and len(set(fr)) == len(fr)
    for p in curve:  # each point: the fewest false rejects at that many escapes or fewer, and its thresholds give it
        assert p.false_rejects == _brute(scores, defective, lambda e, f, m=p.escapes: f if e <= m else 10**9)
        flagged = (scores >= np.array([p.thresholds[n] for n in labels.names])).any(axis=1)
        assert (int((defective & ~flagged).sum()), int((~defective & flagged).sum())) == (p.escapes, p.false_rejects)


def test_large_problems_use_coordinate_descent_never_worse_than_one_shared_threshold(monkeypatch) -> None:
    import edgevision.evaluate.operating as operating

    monkeypatch.setattr(operating, "EXACT_LIMIT", 0)
    rng = np.random.default_rng(7)
    n, k = 300, 5
    defective = rng.random(n) < 0.6
    scores = rng.random((n, k)) ** 3
    scores[defective, rng.integers(0, k, defective.sum())] += 0.4
    scores = as_f32(np.clip(scores, 0, 1))
    gt, preds, labels = table_records(scores, defective)
    op = choose_image_thresholds(gt, preds, labels, SelectionRule(max_escape_rate=0.1))
    e, f = op.decisions["escapes"], op.decisions["false_rejects"]
    assert e <= int(0.1 * defective.sum())
    # never worse than the best single threshold shared by all classes
    shared = [f2 for t in np.unique(scores[scores >= 0.05])
              for e2, f2 in [(int((defective & ~(scores >= t).any(axis=1)).sum()),
                              int((~defective & (scores >= t).any(axis=1)).sum()))] if e2 <= int(0.1 * defective.sum())]
    assert f <= min(shared)
    # a local optimum: no single class's threshold alone improves it
    thr = np.array([op.classes[c] for c in labels.names])
    for c in range(k):
        for v in np.unique(scores[:, c][scores[:, c] >= 0.05]):
            t = thr.copy()
            t[c] = v
            flagged = (scores >= t).any(axis=1)
            e2, f2 = int((defective & ~flagged).sum()), int((~defective & flagged).sum())
            assert not (e2 <= int(0.1 * defective.sum()) and f2 < f)


def test_expected_cost_and_summary_hand_computed() -> None:
    gt, preds, labels = table_records(HAND, HAND_DEFECTIVE)
    op = choose_image_thresholds(gt, preds, labels, SelectionRule(cost_escape=10, cost_false_reject=1))
    c = op.decisions["expected_cost"]
    # 1 escape of 5, 0 false rejects of 4, defect rate 5/9: 1000 * 10 * 5/9 * 1/5 = 1111.1 per 1,000 parts
    assert c["per_1000_parts"] == pytest.approx(1000 * 10 * (5 / 9) * (1 / 5))
    assert c["lower"] <= c["per_1000_parts"] <= c["upper"] and c["defect_rate_from"] == "split"
    # a line with 1% defective parts: the same rates, priced at the line's mix
    line = expected_cost(op.decisions, {"escape": 10, "false_reject": 1, "defect_rate": 0.01})
    assert line["per_1000_parts"] == pytest.approx(1000 * 10 * 0.01 * 0.2) and line["defect_rate_from"] == "given"
    text = decisions_summary(op.decisions)
    assert text.startswith("escape rate 20.0% (1/5; 95% CI 0.5-71.6%), false-reject rate 0.0% (0/4; 95% CI 0.0-60.2%)")
    assert "expected cost 1111 per 1,000 parts" in text
    # a priced model's decisions carry the cost wherever they are recomputed
    assert image_decisions(gt, preds, op, labels=labels)["expected_cost"] == c


def test_limit_support_says_when_images_are_too_few() -> None:
    assert limit_support("escape", 18, 0.05) == ("18 defective images cannot show an escape rate <= 0.05 at 95% "
                                                 "confidence: even 0 escapes give an upper bound of 18.5%; 72 are needed")
    assert limit_support("false-reject", 400, 0.01) is None
    assert "defect-free" in limit_support("false-reject", 100, 0.01)


def test_per_class_rule_carries_the_curve_and_the_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((20, 2)), 2)
    defective = np.arange(20) < 12
    scores[defective, 0] = np.clip(scores[defective, 0] + 0.3, 0, 1)
    gt, preds, labels = table_records(scores, defective)
    op = select_operating_points(gt, preds, labels, SelectionRule(target="recall", value=0.9))
    assert op.curve and op.decisions["escape"]["n"] == 12
    rows = curve_rows(op.curve, 4, op.decisions)
    assert rows[0] == op.curve[0] and rows[-1] == op.curve[-1] and len(rows) <= 5
    path = write_tradeoff_csv(op.curve, tmp_path / "curve.csv")
    got = list(csv.DictReader(path.open()))
    assert len(got) == len(op.curve) and int(got[0]["escapes"]) == op.curve[0]["escapes"]
    assert float(got[0]["threshold_a"]) == pytest.approx(op.curve[0]["thresholds"]["a"], rel=1e-5)
    pytest.importorskip("matplotlib")
    png = plot_tradeoff(op.curve, tmp_path / "curve.png", chosen=op.decisions)
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_legacy_thresholds_are_read_and_flagged() -> None:
    doc = {"schema": "edgevision.thresholds/1", "target": "recall", "value": 0.9, "iou": 0.5,
           "classes": {"crack": 0.001, "pit": 0.27}, "unreachable": ["crack"]}
    op = OperatingPoints.from_dict(doc)
    assert op.rules["crack"]["rule"] == "lowest" and op.rules["pit"] == {"rule": "recall", "text": "recall >= 0.9"}
    assert op.below_minimum() == {"crack": 0.001}
    with pytest.raises(ConfigError, match="schema 'edgevision.thresholds/9'"):
        OperatingPoints.from_dict({**doc, "schema": "edgevision.thresholds/9"})
    with pytest.raises(ConfigError, match=r"thresholds must lie in \[0, 1\]"):
        OperatingPoints.from_dict({**doc, "classes": {"crack": 1.5, "pit": 0.2}})
