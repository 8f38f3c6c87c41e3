"""The quantize report's escape and false-reject rates carry their counts and exact 95% intervals (JSON,
markdown, the CLI table), and the expected cost per 1,000 parts when the model's operating points are priced.

Fast: the decisions come from hand-built records and metadata, the report is built by hand.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.stats import clopper_pearson
from edgevision.quantize.workflow import ModelScore, QuantizeReport, _decisions, _json_default
from tests.runtime.conftest import make_meta

LABELS = LabelMap(["scratch"])
PRICED = {"schema": "edgevision.thresholds/2", "target": "cost", "value": None, "iou": 0.5,
          "classes": {"scratch": 0.5}, "rules": {"scratch": {"rule": "cost", "text": "priced"}},
          "rule": {"cost_escape": 50.0, "cost_false_reject": 2.0, "defect_rate": None, "mode": "cost"}}
BOX = np.array([[10.0, 10.0, 40.0, 40.0]])


def _records(found: int, missed: int, clean: int, alarms: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Ground truth and predictions: ``found`` defective images detected at 0.9, ``missed`` detected only at 0.2
    (below the 0.5 operating point: escapes), ``clean`` defect-free images with nothing and ``alarms`` with a
    false alarm at 0.8 (false rejects)."""
    gt, preds = [], []
    for i, kind in enumerate(["found"] * found + ["missed"] * missed + ["clean"] * clean + ["alarm"] * alarms):
        name = f"p{i:02d}.png"
        defective = kind in ("found", "missed")
        gt.append(ImageRecord(name=name, size_hw=(64, 64), boxes=BOX if defective else np.zeros((0, 4)),
                              class_ids=[0] if defective else []))
        score = {"found": 0.9, "missed": 0.2, "alarm": 0.8}.get(kind)
        preds.append(ImageRecord(name=name, size_hw=(64, 64), boxes=BOX if score else np.zeros((0, 4)),
                                 class_ids=[0] if score else [], scores=np.array([score] if score else [], np.float32)))
    return gt, preds


def test_decisions_keep_the_intervals_and_the_expected_cost_when_priced() -> None:
    gt, preds = _records(found=16, missed=2, clean=8, alarms=2)
    d = _decisions(gt, preds, LABELS, replace(make_meta(["scratch"]), thresholds=PRICED))
    assert (d["escapes"], d["defective_images"], d["false_rejects"], d["defect_free_images"]) == (2, 18, 2, 10)
    lo, hi = clopper_pearson(2, 18)
    assert d["escape"] == {"k": 2, "n": 18, "rate": 2 / 18, "lower": lo, "upper": hi, "level": 0.95}
    lo, hi = clopper_pearson(2, 10)
    assert d["false_reject"] == {"k": 2, "n": 10, "rate": 0.2, "lower": lo, "upper": hi, "level": 0.95}
    c = d["expected_cost"]
    p = 18 / 28  # the split's share of defective images (no defect rate given)
    assert c["defect_rate"] == pytest.approx(p) and c["defect_rate_from"] == "split"
    assert c["per_1000_parts"] == pytest.approx(1000 * (50 * p * 2 / 18 + 2 * (1 - p) * 0.2))
    el, eu = clopper_pearson(2, 18)
    fl, fu = clopper_pearson(2, 10)
    assert c["lower"] == pytest.approx(1000 * (50 * p * el + 2 * (1 - p) * fl))
    assert c["upper"] == pytest.approx(1000 * (50 * p * eu + 2 * (1 - p) * fu))
    # unpriced operating points, or none (the default conf 0.25): the intervals, no cost
    plain = {**PRICED, "target": "recall", "value": 0.9, "rule": {"target": "recall", "value": 0.9}}
    d2 = _decisions(gt, preds, LABELS, replace(make_meta(["scratch"]), thresholds=plain))
    assert "expected_cost" not in d2 and d2["escape"] == d["escape"]
    d3 = _decisions(gt, preds, LABELS, make_meta(["scratch"]))
    assert "expected_cost" not in d3 and d3["escape"]["k"] == 2  # 0.2 < 0.25 still escapes


def _report(fp32: dict[str, Any], int8: dict[str, Any]) -> QuantizeReport:
    q = {"activations": "QUInt8", "weights": "QInt8", "reduce_range": False, "symmetric": False, "onnxruntime": "1.x",
         "n": 32, "method": "minmax", "seed": 0, "excluded_nodes": ["/head/Concat"]}
    return QuantizeReport(model="m.onnx", out="m.int8.onnx", verdict="pass", reason="within the budget", written=True,
                          target="x86", host="x86", quantization=q, checks={}, warnings=[], split="val", images=28,
                          max_drop=0.01, operating_points="the model's operating points",
                          fp32=ModelScore("m.onnx", "fp32", 4_000_000, 0.5, 0.7, decisions=fp32),
                          int8=ModelScore("m.int8.onnx", "int8", 1_000_000, 0.49, 0.69, decisions=int8),
                          bootstrap={"rel_drop": 0.02, "rel_drop_ci": [-0.01, 0.05], "level": 0.95, "n_images": 28,
                                     "n_used": 100})


def test_markdown_prints_each_rate_with_its_interval_and_the_cost() -> None:
    gt, preds = _records(found=18, missed=0, clean=8, alarms=2)
    priced = replace(make_meta(["scratch"]), thresholds=PRICED)
    fp32 = _decisions(gt, preds, LABELS, priced)
    gt8, preds8 = _records(found=17, missed=1, clean=10, alarms=0)
    int8 = _decisions(gt8, preds8, LABELS, priced)
    rep = _report(fp32, int8)
    md = rep.markdown()
    assert "| escape rate (95% CI) | 0.0% (0/18; 95% CI 0.0-18.5%) | 5.6% (1/18; 95% CI 0.1-27.3%) |" in md
    assert "| false-reject rate (95% CI) | 20.0% (2/10; 95% CI 2.5-55.6%) | 0.0% (0/10; 95% CI 0.0-30.8%) |" in md
    c8, c32 = int8["expected_cost"], fp32["expected_cost"]
    row = next(ln for ln in md.splitlines() if ln.startswith("| expected cost per 1,000 parts"))
    assert "(escape 50, false reject 2 per part, defect rate 0.643 of the split)" in row
    assert row.endswith(f"| {c32['per_1000_parts']:.4g} (95% CI {c32['lower']:.4g}-{c32['upper']:.4g}) | "
                        f"{c8['per_1000_parts']:.4g} (95% CI {c8['lower']:.4g}-{c8['upper']:.4g}) |")
    # the JSON report carries them next to the rates
    doc = json.loads(json.dumps(rep.to_dict(), default=_json_default))
    assert doc["fp32"]["decisions"]["escape"]["upper"] == clopper_pearson(0, 18)[1]
    assert doc["int8"]["decisions"]["expected_cost"]["per_1000_parts"] == pytest.approx(c8["per_1000_parts"])
    # a report's decisions without intervals (written before they were stored): rebuilt from the counts
    old = {"escapes": 0, "defective_images": 18, "escape_rate": 0.0, "false_rejects": 0, "defect_free_images": 0,
           "false_reject_rate": None}
    md_old = _report(old, old).markdown()
    assert "| escape rate (95% CI) | 0.0% (0/18; 95% CI 0.0-18.5%) | 0.0% (0/18; 95% CI 0.0-18.5%) |" in md_old
    assert "| false-reject rate (95% CI) | - (0 images) | - (0 images) |" in md_old
    assert "expected cost" not in md_old


def test_cli_table_prints_the_intervals_and_the_cost(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from edgevision.commands import _present
    from edgevision.commands.quantize import _print

    monkeypatch.setattr(_present.out, "width", 250)
    gt, preds = _records(found=18, missed=0, clean=8, alarms=2)
    d = _decisions(gt, preds, LABELS, replace(make_meta(["scratch"]), thresholds=PRICED))
    capsys.readouterr()
    _print(_report(d, d))
    text = capsys.readouterr().out
    esc = next(ln for ln in text.splitlines() if "escape rate" in ln)
    assert esc.count("0.0% (0/18; 95% CI 0.0-18.5%)") == 2
    fr = next(ln for ln in text.splitlines() if "false-reject rate" in ln)
    assert fr.count("20.0% (2/10; 95% CI 2.5-55.6%)") == 2
    c = d["expected_cost"]
    cost = next(ln for ln in text.splitlines() if "expected cost / 1,000 parts" in ln)
    assert "escape 50, false reject 2 per part, defect rate 0.643" in cost
    assert cost.count(f"{c['per_1000_parts']:.4g} (95% CI {c['lower']:.4g}-{c['upper']:.4g})") == 2
