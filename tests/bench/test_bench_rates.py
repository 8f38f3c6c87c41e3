"""bench's escape and false-reject rates carry their counts and exact 95% intervals (bench.json, its schema,
markdown, HTML, the CLI table), and the expected cost per 1,000 parts when the operating points are priced.

Fast: the accuracy is scored by a real ONNX model (the bounding box of bright pixels) on a few real images,
without the timing processes of `run_bench`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rich.console import Console

from edgevision.bench.report import AccuracyResult, BenchReport, ModelResult, html_report, markdown_report
from edgevision.core.stats import clopper_pearson
from tests.bench.test_bench import SCHEMA_FILE, _Html
from tests.runtime.conftest import bbox_model, make_meta

PRICED = {"schema": "edgevision.thresholds/2", "target": "cost", "value": None, "iou": 0.5,
          "classes": {"scratch": 0.5}, "rules": {"scratch": {"rule": "cost", "text": "priced"}},
          "rule": {"cost_escape": 50.0, "cost_false_reject": 2.0, "defect_rate": 0.05, "mode": "cost"}}


def _images(root: Path) -> Path:
    """A YOLO val split: 8 defective images the model finds (bright box), 2 it misses (a dim box: escapes),
    6 defect-free images, 2 defect-free ones with a bright spot (false rejects)."""
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    kinds = ["found"] * 8 + ["dim"] * 2 + ["clean"] * 6 + ["spot"] * 2
    for i, kind in enumerate(kinds):
        img = np.full((96, 128, 3), 20, np.uint8)
        label = ""
        x, y = 10 + 4 * i, 10 + 2 * i
        if kind in ("found", "dim"):
            img[y:y + 25, x:x + 30] = 255 if kind == "found" else 90
            label = f"0 {(x + 15) / 128:.6f} {(y + 12.5) / 96:.6f} {30 / 128:.6f} {25 / 96:.6f}\n"
        elif kind == "spot":
            img[40:46, 60:66] = 255
        cv2.imwrite(str(root / "images" / "val" / f"p{i:02d}.png"), img)
        (root / "labels" / "val" / f"p{i:02d}.txt").write_text(label)
    (root / "data.yaml").write_text("path: .\ntrain: images/val\nval: images/val\nnames:\n  0: scratch\n")
    return root


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from edgevision.bench.run import accuracy_and_predictions
    from edgevision.convert import read_dataset

    t = tmp_path_factory.mktemp("bench-rates")
    data = _images(t / "data")
    gt = list(read_dataset(data).dataset.images)
    priced = bbox_model(t / "priced.onnx", replace(make_meta(["scratch"], size_hw=(64, 64)), thresholds=PRICED))
    plain = bbox_model(t / "plain.onnx", make_meta(["scratch"], size_hw=(64, 64)))
    acc_p, _ = accuracy_and_predictions(priced, gt, ["scratch"], "cpu", None, 1, "cpu")
    acc_u, _ = accuracy_and_predictions(plain, gt, ["scratch"], "cpu", None, 1, "cpu")
    return {"priced": acc_p, "plain": acc_u, "gt": gt}


def _report(*accs: AccuracyResult) -> BenchReport:
    models = [ModelResult(name=f"m{i}.onnx", path=f"m{i}.onnx", kind="onnx", precision="fp32", sha256="0" * 64,
                          size_bytes=1000, configs=[], accuracy=[a]) for i, a in enumerate(accs)]
    return BenchReport(created="2024-01-01T00:00:00Z", env={}, data={"path": "d", "split": "val", "images": 18},
                       settings={}, models=models)


def test_rates_carry_counts_and_clopper_pearson_bounds(scored: dict[str, Any]) -> None:
    a: AccuracyResult = scored["priced"]
    assert (a.escapes, a.defective_images, a.false_rejects, a.defect_free_images) == (2, 10, 2, 8)
    assert a.escape is not None and a.false_reject is not None
    assert (a.escape.k, a.escape.n, a.escape.rate) == (2, 10, 0.2) and a.escape_rate == 0.2
    assert (a.false_reject.k, a.false_reject.n, a.false_reject.rate) == (2, 8, 0.25) and a.false_reject_rate == 0.25
    assert (a.escape.lower, a.escape.upper) == clopper_pearson(2, 10)
    assert (a.false_reject.lower, a.false_reject.upper) == clopper_pearson(2, 8)
    assert a.escape.level == 0.95
    assert a.escape.lower == pytest.approx(0.0252, abs=1e-4) and a.escape.upper == pytest.approx(0.5561, abs=1e-4)


def test_priced_operating_points_give_the_expected_cost(scored: dict[str, Any]) -> None:
    a, u = scored["priced"], scored["plain"]
    c = a.expected_cost
    assert c is not None and c.defect_rate == 0.05 and c.defect_rate_from == "given"
    assert (c.cost_escape, c.cost_false_reject) == (50.0, 2.0)
    # 1000 * (50 * 0.05 * 2/10 + 2 * 0.95 * 2/8)
    assert c.per_1000_parts == pytest.approx(975.0)
    (el, eu), (fl, fu) = clopper_pearson(2, 10), clopper_pearson(2, 8)
    assert c.lower == pytest.approx(1000 * (50 * 0.05 * el + 2 * 0.95 * fl))
    assert c.upper == pytest.approx(1000 * (50 * 0.05 * eu + 2 * 0.95 * fu))
    assert a.thresholds == "operating points (priced: escape 50, false reject 2 per part)"
    # no operating points: no cost, the same decisions at conf 0.25
    assert u.expected_cost is None and u.escape == a.escape and u.false_reject == a.false_reject
    assert u.thresholds.startswith("conf 0.25")


def test_bench_json_validates_against_the_shipped_schema_and_round_trips(scored: dict[str, Any]) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    assert json.loads(SCHEMA_FILE.read_text()) == BenchReport.json_schema()
    doc = json.loads(json.dumps(_report(scored["priced"], scored["plain"]).to_dict()))
    jsonschema.validate(doc, schema)
    acc = doc["models"][0]["accuracy"][0]
    lo, hi = clopper_pearson(2, 10)
    assert acc["escape"] == {"k": 2, "n": 10, "rate": 0.2, "lower": lo, "upper": hi, "level": 0.95}
    lo, hi = clopper_pearson(2, 8)
    assert acc["false_reject"] == {"k": 2, "n": 8, "rate": 0.25, "lower": lo, "upper": hi, "level": 0.95}
    assert acc["expected_cost"]["per_1000_parts"] == pytest.approx(975.0)
    assert doc["models"][1]["accuracy"][0]["expected_cost"] is None
    assert BenchReport.from_dict(doc).to_dict() == doc
    # a report written before the intervals were stored still validates and reads
    old = json.loads(json.dumps(doc))
    for key in ("escape", "false_reject", "expected_cost"):
        del old["models"][0]["accuracy"][0][key]
    jsonschema.validate(old, schema)
    a = BenchReport.from_dict(old).models[0].accuracy[0]
    assert a.escape is None and a.rate("escape").interval == clopper_pearson(2, 10)
    # the schema rejects bounds outside [0, 1] and an unknown defect-rate source
    bad = json.loads(json.dumps(doc))
    bad["models"][0]["accuracy"][0]["escape"]["upper"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = json.loads(json.dumps(doc))
    bad["models"][0]["accuracy"][0]["expected_cost"]["defect_rate_from"] = "guess"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_markdown_and_html_print_the_intervals_and_the_cost(scored: dict[str, Any]) -> None:
    rep = _report(scored["priced"], scored["plain"])
    md = markdown_report(rep)
    rows = [ln for ln in md.splitlines() if ln.startswith(("| m0.onnx", "| m1.onnx"))]
    assert len(rows) == 2
    head = next(ln for ln in md.splitlines() if ln.startswith("| model | provider | size MB"))
    assert "| escape rate | false-reject rate | expected cost per 1,000 parts | thresholds |" in head
    assert "| 20.0% (2/10; 95% CI 2.5-55.6%) | 25.0% (2/8; 95% CI 3.2-65.1%) | 975 (95% CI " in rows[0]
    assert "escape 50, false reject 2 per part, defect rate 0.05)" in rows[0]
    assert rows[1].endswith("| 20.0% (2/10; 95% CI 2.5-55.6%) | 25.0% (2/8; 95% CI 3.2-65.1%) | - | "
                            "conf 0.25 (the model has no operating points) |")
    assert "Clopper-Pearson" in md
    page = _Html()
    page.feed(html_report(rep))
    table = page.tables["accuracy"]
    cols = table[0]
    assert table[1][cols.index("escape rate")] == "20.0% (2/10; 95% CI 2.5-55.6%)"
    assert table[1][cols.index("false-reject rate")] == "25.0% (2/8; 95% CI 3.2-65.1%)"
    assert table[1][cols.index("expected cost per 1,000 parts")].startswith("975 (95% CI ")
    assert table[2][cols.index("expected cost per 1,000 parts")] == "-"
    # without priced operating points there is no cost column
    md_plain = markdown_report(_report(scored["plain"]))
    assert "expected cost" not in md_plain and "| 20.0% (2/10; 95% CI 2.5-55.6%) |" in md_plain


def test_old_reports_print_intervals_from_their_counts() -> None:
    a = AccuracyResult(provider="cpu", images=18, map50_95=0.5, map50=0.7, map75=0.5, per_class_ap50_95={},
                       thresholds="conf 0.25", escape_rate=0.0, false_reject_rate=None, escapes=0,
                       defective_images=18, false_rejects=0, defect_free_images=0)
    md = markdown_report(_report(a))
    assert "| 0.0% (0/18; 95% CI 0.0-18.5%) | - (0 images) |" in md


def test_cli_accuracy_table_prints_intervals_and_cost(scored: dict[str, Any]) -> None:
    from edgevision.commands.bench import accuracy_table

    console = Console(record=True, width=400)
    console.print(accuracy_table(_report(scored["priced"], scored["plain"])))
    text = console.export_text()
    lines = [ln for ln in text.splitlines() if "m0.onnx" in ln or "m1.onnx" in ln]
    assert "20.0% (2/10; 95% CI 2.5-55.6%)" in lines[0] and "25.0% (2/8; 95% CI 3.2-65.1%)" in lines[0]
    c = scored["priced"].expected_cost
    assert f"975 (95% CI {c.lower:.4g}-{c.upper:.4g}; defect rate 0.05)" in lines[0]
    assert "expected cost per 1,000 parts" in text and "priced: escape 50, false reject 2 per part" in lines[0]
    assert "20.0% (2/10; 95% CI 2.5-55.6%)" in lines[1]
