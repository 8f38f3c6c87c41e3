"""The gate's rate limits judged on the exact (Clopper-Pearson) 95% upper bound (``bound: upper``), the
"too few images" line, and the reliability report's rates with their intervals and expected cost.
No model is trained or run: the facts and the report documents are built from known counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevision.core.errors import ConfigError
from edgevision.reliability.gate import Gate, judge_gate, load_gate, resolve_gate
from tests.helpers import REPO

SCHEMA = REPO / "edgevision" / "reliability" / "reliability-1.schema.json"


def _gate(bound: str | None = None, **limits: float) -> Gate:
    return Gate.model_validate({"name": "t", **limits, **({"bound": bound} if bound else {})})


def _escapes(k: int, n: int) -> dict:
    """Facts as `reliability.run._facts` writes them: the point rate and the counts with their bounds."""
    from edgevision.core.stats import Rate

    r = Rate(k, n)
    return {"escape_rate": r.value, "escape": r.to_dict()}


# ------------------------------------------------------------------------------------------------ the gate
def test_upper_bound_on_too_few_images_fails_and_says_how_many_are_needed() -> None:
    (check,) = judge_gate(_gate("upper", escape_rate_max=0.05), _escapes(0, 18))
    assert not check.passed
    assert check.value == pytest.approx(0.1853, abs=1e-4)  # 1 - 0.025 ** (1 / 18)
    assert "\n" not in check.detail
    assert "0/18; 95% CI 0.0-18.5%" in check.detail
    assert "18 defective images cannot show" in check.detail and "72 are needed" in check.detail


def test_upper_bound_passes_when_zero_escapes_on_enough_images_show_the_limit() -> None:
    (check,) = judge_gate(_gate("upper", escape_rate_max=0.01), _escapes(0, 400))
    assert check.passed
    assert check.value == pytest.approx(1 - 0.025 ** (1 / 400)) and check.value == pytest.approx(0.00918, abs=1e-5)
    assert check.detail == "escape rate 0.0% (0/400; 95% CI 0.0-0.9%): upper bound 0.918% <= 1%"


def test_three_escapes_in_400_pass_on_the_point_rate_but_not_on_the_upper_bound() -> None:
    point = judge_gate(_gate("point", escape_rate_max=0.01), _escapes(3, 400))[0]
    assert point.passed and point.value == pytest.approx(0.0075)
    assert point.detail == "escape rate 0.8% (3/400; 95% CI 0.2-2.2%): point rate 0.75% <= 1%"
    upper = judge_gate(_gate("upper", escape_rate_max=0.01), _escapes(3, 400))[0]
    assert not upper.passed and upper.value == pytest.approx(0.021761, abs=1e-6)  # beta.ppf(0.975, 4, 397)
    assert upper.detail.endswith(": upper bound 2.18% > 1%")
    scipy_stats = pytest.importorskip("scipy.stats")
    assert upper.value == pytest.approx(scipy_stats.beta.ppf(0.975, 4, 397), abs=1e-9)


def test_false_reject_limit_reads_the_counts_in_either_form() -> None:
    gate = _gate("upper", false_reject_rate_max=0.05)
    plain = {"false_rejects": 0, "defect_free_images": 18, "false_reject_rate": 0.0}  # AccuracyResult's keys
    (check,) = judge_gate(gate, plain)
    assert not check.passed and "18 defect-free images cannot show" in check.detail and "72 are needed" in check.detail
    (ok,) = judge_gate(gate, {"false_rejects": 1, "defect_free_images": 200})
    assert ok.passed and ok.value == pytest.approx(0.02755, abs=1e-4)  # beta.ppf(0.975, 2, 199)


def test_point_bound_judges_as_before_and_warns_on_too_few_images() -> None:
    assert _gate().bound == "point"
    (check,) = judge_gate(_gate(escape_rate_max=0.05), _escapes(0, 18))
    assert check.passed and check.value == 0.0  # judged on the point rate, as before
    assert "warning: 18 defective images cannot show" in check.detail and "72 are needed" in check.detail
    # facts holding the point rate alone (no counts): the old check, word for word
    g = Gate.model_validate({"name": "t", "map50_95_min": 0.5, "escape_rate_max": 0.01, "crashes_max": 0})
    checks = judge_gate(g, {"map50_95": 0.6, "escape_rate": 0.02, "crashes": 0})
    assert [(c.key, c.passed, c.detail) for c in checks] == [
        ("map50_95_min", True, "mAP50-95 0.6 >= 0.5"), ("escape_rate_max", False, "escape rate 0.02 > 0.01"),
        ("crashes_max", True, "crashes 0 <= 0")]
    # ... which `bound: upper` cannot judge: no counts, no interval
    (no_counts,) = judge_gate(_gate("upper", escape_rate_max=0.01), {"escape_rate": 0.0})
    assert not no_counts.passed and "upper bound is not measured" in no_counts.detail
    missing = judge_gate(_gate("upper", escape_rate_max=0.01, false_reject_rate_max=0.05), {})
    assert [c.passed for c in missing] == [False, False] and all("not measured" in c.detail for c in missing)
    (none,) = judge_gate(_gate("upper", escape_rate_max=0.01), {"escapes": 0, "defective_images": 0})
    assert not none.passed and "no defective images" in none.detail


def test_a_gate_without_rate_keys_is_judged_the_same_whatever_its_bound() -> None:
    facts = {"map50_95": 0.6, "crashes": 1, "determinism": "pass", **_escapes(0, 18)}
    limits = {"map50_95_min": 0.5, "crashes_max": 0, "determinism": True}
    point, upper = judge_gate(_gate(**limits), facts), judge_gate(_gate("upper", **limits), facts)
    assert [c.to_dict() for c in point] == [c.to_dict() for c in upper]
    assert [(c.key, c.passed) for c in point] == [("map50_95_min", True), ("crashes_max", False), ("determinism", True)]


def test_gate_files_read_the_bound_and_refuse_an_unknown_one(tmp_path: Path) -> None:
    assert resolve_gate("line-example").bound == "upper"
    assert resolve_gate(None).bound == "point"
    good = tmp_path / "good.yaml"
    good.write_text("escape_rate_max: 0.01\nbound: upper\n")
    assert load_gate(good).bound == "upper"
    bad = tmp_path / "bad.yaml"
    bad.write_text("escape_rate_max: 0.01\nbound: upper95\n")
    with pytest.raises(ConfigError) as e:
        load_gate(bad)
    msg = str(e.value)
    assert "\n" not in msg and "bound" in msg and "'point' or 'upper'" in msg and "upper95" in msg


# ------------------------------------------------------------------------------- the facts and the report
def _accuracy(escapes: int, defective: int, false_rejects: int, good: int) -> dict:
    return {"provider": "cpu", "images": defective + good, "map50_95": 0.6, "map50": 0.8, "map75": 0.6,
            "per_class_ap50_95": {"scratch": 0.6}, "thresholds": "operating points (cost)",
            "escape_rate": escapes / defective, "false_reject_rate": false_rejects / good, "escapes": escapes,
            "defective_images": defective, "false_rejects": false_rejects, "defect_free_images": good}


def _doc(gate: Gate, costs: dict | None) -> dict:
    from edgevision.bench.report import latency_stats
    from edgevision.reliability.run import ReliabilityReport, _facts, _with_intervals

    stats = latency_stats([10.0 + 0.01 * i for i in range(700)]).model_dump()
    latency = {"model": {"pipeline": stats, "session": None, "load_s": 0.1, "peak_rss_mb": 100.0,
                         "throughput_ips": 90.0}}
    accuracy = {"model": _with_intervals(_accuracy(3, 400, 2, 100), costs)}
    facts = _facts(latency, accuracy, {})
    rep = ReliabilityReport(created="2025-01-01T00:00:00Z",
                            model={"path": "m.onnx", "name": "m.onnx", "sha256": "0" * 64, "precision": "int8"},
                            reference=None, data={"path": "data", "split": "val", "images": 500},
                            env={"cpu": "x", "os": "y", "python": "3", "edgevision": "0"}, settings={"suites": [], "seed": 0},
                            latency=latency, accuracy=accuracy, suites={},
                            gate={**gate.model_dump(), "facts": facts}, checks=judge_gate(gate, facts))
    return rep.to_dict()


def test_facts_and_accuracy_carry_the_counts_bounds_and_expected_cost() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = _doc(_gate("upper", escape_rate_max=0.01, false_reject_rate_max=0.1),
               {"escape": 100.0, "false_reject": 1.0, "defect_rate": None})
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(doc, schema)
    jsonschema.validate(_doc(_gate(), None), schema)  # not priced
    older = _doc(_gate(), None)  # written before the intervals were stored, or by a bench that stores None
    older["accuracy"]["model"].update(escape=None, false_reject=None, expected_cost=None)
    jsonschema.validate(older, schema)
    facts, acc = doc["gate"]["facts"], doc["accuracy"]["model"]
    assert facts["escape"]["k"] == 3 and facts["escape"]["n"] == 400
    assert facts["false_reject"]["k"] == 2 and facts["false_reject"]["n"] == 100
    assert acc["escape"]["upper"] == pytest.approx(0.021761, abs=1e-6) and acc["escapes"] == 3  # old fields kept
    # 1000 * (100 * 0.8 * 3/400 + 1 * 0.2 * 2/100), the defect rate 400/500 of the split
    cost = acc["expected_cost"]
    assert cost["per_1000_parts"] == pytest.approx(604.0) and cost["defect_rate_from"] == "split"
    assert cost["lower"] < 604.0 < cost["upper"]
    assert [(c["key"], c["passed"]) for c in doc["gate"]["checks"]] == [("escape_rate_max", False),
                                                                         ("false_reject_rate_max", True)]
    assert doc["gate"]["bound"] == "upper" and doc["verdict"] == "FAIL"


def test_reports_print_the_rates_with_their_intervals_and_the_expected_cost() -> None:
    from edgevision.reliability.report import html_report, junit_xml, markdown_report

    doc = _doc(_gate("upper", escape_rate_max=0.01), {"escape": 100.0, "false_reject": 1.0, "defect_rate": None})
    md = markdown_report(doc)
    assert "escape rate 0.8% (3/400; 95% CI 0.2-2.2%)" in md
    assert "false-reject rate 2.0% (2/100; 95% CI 0.2-7.0%)" in md
    assert "expected cost 604 per 1,000 parts" in md
    assert "upper bound 2.18% > 1%" in md  # the gate row says what was judged
    page = html_report(doc)
    assert "0.8% (3/400; 95% CI 0.2-2.2%)" in page and "2.0% (2/100; 95% CI 0.2-7.0%)" in page
    assert "expected cost / 1,000 parts" in page and "604 (95% CI" in page
    assert "Clopper-Pearson" in page
    assert "upper bound 2.18%" in junit_xml(doc)
    # not priced: the intervals, no cost column
    plain = _doc(_gate(), None)
    assert not plain["accuracy"]["model"].get("expected_cost")
    assert "escape rate 0.8% (3/400; 95% CI 0.2-2.2%)" in markdown_report(plain)
    assert "expected cost" not in markdown_report(plain) and "expected cost" not in html_report(plain)


def test_report_of_an_older_document_without_intervals_still_renders() -> None:
    from edgevision.reliability.report import html_report, markdown_report

    doc = _doc(_gate(), None)
    for key in ("escape", "false_reject"):
        del doc["accuracy"]["model"][key]
    for key in ("escapes", "defective_images", "false_rejects", "defect_free_images"):
        del doc["accuracy"]["model"][key]
    assert "escape rate 0.007, false-reject rate 0.020" in markdown_report(doc)  # the bare rates, as before
    assert "<h2>Accuracy</h2>" in html_report(doc)


def test_costs_come_from_the_model_operating_points(tmp_path: Path) -> None:
    from edgevision.reliability.run import _costs

    priced, plain = tmp_path / "priced", tmp_path / "plain"
    for d, rule in ((priced, {"cost_escape": 50, "cost_false_reject": 2, "defect_rate": 0.01}), (plain, {})):
        d.mkdir()
        (d / "thresholds.json").write_text(json.dumps({"schema": "edgevision.thresholds/2", "target": "cost",
                                                       "value": None, "iou": 0.5, "classes": {"scratch": 0.4},
                                                       "rule": rule}))
    assert _costs(priced, None) == {"escape": 50.0, "false_reject": 2.0, "defect_rate": 0.01}
    assert _costs(plain, priced) == {"escape": 50.0, "false_reject": 2.0, "defect_rate": 0.01}  # the reference's
    assert _costs(plain, None) is None
