"""INT8 judged against FP32 on the val split: the gate, the report, the accuracy-aware search.

The slow tests use the session fixture ``learned`` (a nano YOLO that really learned the sample,
mAP50 about 0.4), so that a drop in accuracy means something. The accuracy-aware test plants a fault in
one layer's INT8 weights (its weight scale multiplied by 5): the gate must fail without the search,
and the search must find that layer as the most sensitive and pass by keeping it float.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevision.core.errors import EdgeVisionError
from edgevision.quantize.workflow import SCHEMA, judge
from tests.helpers import run_cli

MAX_DROP = 0.1
"""The budget the slow tests use: the tiny learned model (20 val images, a few calibration images) loses
2-7% of its mAP50-95 in INT8 (minmax), against 1-2% for the NEU-DET model on 360 val images."""


def test_judge_rules():
    ok, why = judge(0.004, (-0.01, 0.02), 0.01, 100)
    assert ok and "within the budget" in why
    ok, why = judge(0.03, (-0.005, 0.06), 0.01, 40)  # above the budget, but the interval includes zero
    assert ok and "not distinguishable from noise on 40 images" in why
    ok, why = judge(0.03, (0.012, 0.05), 0.01, 400)
    assert not ok and "exceeds the budget" in why and "1.20%..5.00%" in why
    ok, why = judge(-0.02, (-0.05, 0.01), 0.01, 100)  # INT8 better than FP32
    assert ok
    ok, why = judge(None, None, 0.01, 100)
    assert not ok and "undefined" in why


def _names(sample: Path, split: str) -> set[str]:
    from edgevision.convert import read_dataset

    return {r.name for r in read_dataset(sample).dataset.images if r.split == split}


def _eval_map(model: Path, sample: Path, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{model.stem}-eval.json"
    r = run_cli("eval", model, "--data", sample, "--split", "val", "--json", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text())


@pytest.mark.slow
def test_quantize_judged_on_val(learned, tmp_path):
    out = tmp_path / "m.int8.onnx"
    r = run_cli("quantize", learned["onnx"], "--calib", learned["sample"], "--out", out, "--n", "32",
                "--latency-runs", "5", "--bootstrap", "300", "--threads", "2", "--max-drop", str(MAX_DROP))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict PASS" in r.stdout and f"wrote {out}" in r.stdout.replace("\n", "")
    rep = json.loads(out.with_suffix(".report.json").read_text())
    md = out.with_suffix(".report.md").read_text()
    assert rep["schema"] == SCHEMA and rep["verdict"] == "pass" and rep["written"] is True
    assert rep["split"] == "val" and rep["images"] == len(_names(learned["sample"], "val"))
    # the numbers are the COCO evaluator's: equal to `edgevision eval` of each file
    ev32, ev8 = _eval_map(learned["onnx"], learned["sample"], tmp_path), _eval_map(out, learned["sample"], tmp_path)
    assert rep["fp32"]["map50_95"] == pytest.approx(ev32["coco"]["map50_95"], abs=1e-12)
    assert rep["int8"]["map50_95"] == pytest.approx(ev8["coco"]["map50_95"], abs=1e-12)
    assert rep["int8"]["map50"] == pytest.approx(ev8["coco"]["map50"], abs=1e-12)
    assert rep["fp32"]["map50_95"] > 0.15  # a model that learned: the drop means something
    b = rep["bootstrap"]
    assert b["rel_drop"] == pytest.approx((b["a"] - b["b"]) / b["a"])
    lo, hi = b["rel_drop_ci"]
    assert lo <= b["rel_drop"] <= hi and b["n_used"] == 300 and b["level"] == 0.95
    assert abs(b["rel_drop"]) < MAX_DROP  # head kept float: INT8 stays close to FP32 on a learned model
    # image-level decisions at the model's operating points, and what changed
    for m in ("fp32", "int8"):
        d = rep[m]["decisions"]
        assert d["defective_images"] + d["defect_free_images"] <= rep["images"]
        assert d["escape_rate"] is None or 0 <= d["escape_rate"] <= 1
    assert rep["int8"]["decisions"]["escapes"] == ev8["decisions"]["escapes"]
    assert set(rep["decision_changes"]) == {"new_escapes", "fixed_escapes", "new_false_rejects", "fixed_false_rejects"}
    assert "operating points" in rep["operating_points"]
    # latencies from fresh processes, sizes
    for m in ("fp32", "int8"):
        lat = rep[m]["latency"]
        assert lat["runs"] == 5 and lat["threads"] == 2 and 0 < lat["pipeline_ms"]["p50"] <= lat["pipeline_ms"]["max"]
        assert lat["session_ms"]["p50"] > 0
    assert rep["int8"]["size_bytes"] == out.stat().st_size < rep["fp32"]["size_bytes"] / 2
    # calibration from the train split only, never the images accuracy is judged on
    cal = set(rep["quantization"]["calibration_images"])
    assert len(cal) == 32 and cal <= _names(learned["sample"], "train")
    assert not cal & _names(learned["sample"], "val")
    # the model carries its own verdict
    from edgevision.runtime import read_metadata

    acc = read_metadata(out).quantization["accuracy"]
    assert acc["verdict"] == "pass" and acc["split"] == "val" and acc["rel_drop"] == pytest.approx(b["rel_drop"])
    assert "**Verdict: PASS**" in md and "| mAP50-95 (val," in md and "paired bootstrap interval" in md


def _plant_fault(monkeypatch: pytest.MonkeyPatch, layer_index: int = 2) -> dict[str, str]:
    """Make one Conv layer's INT8 weights wrong (scale x 5) whenever that layer is quantized."""
    import onnx
    from onnx import numpy_helper

    from edgevision.quantize.api import Quantizer

    orig = Quantizer.build
    planted: dict[str, str] = {}

    def faulty(self, keep_float=(), why=None, *, check=True):
        m = orig(self, keep_float, why, check=check)
        convs = [n for n in m.graph.node if n.op_type == "Conv"]
        target = planted.setdefault("layer", convs[layer_index].name)
        if target in keep_float:
            return m
        conv = next(n for n in convs if n.name == target)
        dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == conv.input[1])
        init = next(i for i in m.graph.initializer if i.name == dq.input[1])
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 5.0, init.name))
        onnx.checker.check_model(m)
        return m

    monkeypatch.setattr(Quantizer, "build", faulty)
    return planted


@pytest.mark.slow
def test_gate_fails_then_accuracy_aware_keeps_the_sensitive_layer_float(learned, tmp_path, monkeypatch):
    from edgevision.quantize.workflow import quantize_checked

    planted = _plant_fault(monkeypatch)  # the failing run alone: test_cli_gate_failure_exit_1 (same fault)
    out2 = tmp_path / "fixed.int8.onnx"
    rep = quantize_checked(learned["onnx"], learned["sample"], out2, n=8, latency_runs=0, n_boot=200,
                           max_drop=MAX_DROP, accuracy_aware=True)
    assert rep.verdict == "pass" and rep.written and out2.is_file()
    assert rep.sensitivity[0]["layer"] == planted["layer"]  # measured, not guessed: the planted layer ranks first
    assert rep.sensitivity[0]["gain"] > 10 * rep.sensitivity[1]["gain"]  # far ahead of the next one
    assert rep.steps[0].layers == [] and not rep.steps[0].passed  # the full INT8 model, failing
    assert rep.steps[-1].layers == [planted["layer"]] and rep.steps[-1].passed
    from edgevision.runtime import read_metadata

    q = read_metadata(out2).quantization
    kept = q["kept_float_for_accuracy"]
    assert planted["layer"] in kept and "sensitivity rank 1/" in kept[planted["layer"]]
    assert set(kept) <= set(q["excluded_nodes"])
    md = out2.with_suffix(".report.md").read_text()
    assert "## Accuracy-aware search" in md and planted["layer"] in md


@pytest.mark.slow
def test_cli_gate_failure_exit_1(learned, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgevision.cli import app

    _plant_fault(monkeypatch)
    out = tmp_path / "bad.int8.onnx"
    r = CliRunner().invoke(app, ["quantize", str(learned["onnx"]), "--calib", str(learned["sample"]), "--out",
                                 str(out), "--n", "8", "--latency-runs", "0", "--bootstrap", "200", "--max-drop",
                                 str(MAX_DROP)])
    assert r.exit_code == 1, r.output
    assert "not written" in r.output and "verdict FAIL" in r.output and not out.exists()
    assert out.with_suffix(".report.md").is_file()
    saved = json.loads(out.with_suffix(".report.json").read_text())  # the report is written anyway
    assert saved["verdict"] == "fail" and saved["int8"]["path"] == "(not written)"
    assert "exceeds the budget" in saved["reason"]
    assert saved["bootstrap"]["rel_drop_ci"][0] > MAX_DROP


@pytest.mark.slow
def test_eval_errors_one_line(export_env, v8_onnx, tmp_path):
    from edgevision.convert import read_dataset, write_dataset
    from edgevision.quantize import host_target
    from edgevision.quantize.workflow import quantize_checked

    out = tmp_path / "q.onnx"
    ds = read_dataset(export_env["sample"]).dataset
    for r in ds.images:  # train only: nothing to judge on
        r.split = "train"
    write_dataset(ds, tmp_path / "trainonly", "coco")
    for fn, match in [
        (lambda: quantize_checked(v8_onnx, tmp_path / "trainonly", out), "no split 'val' to judge"),
        (lambda: quantize_checked(v8_onnx, export_env["sample"], out, split="train"), "never judged on the calib"),
        (lambda: quantize_checked(v8_onnx, export_env["sample"], out, max_drop=1.5), "--max-drop 1.5"),
        (lambda: quantize_checked(v8_onnx, export_env["sample"], out, n_boot=10), "--bootstrap 10"),
        (lambda: quantize_checked(v8_onnx, export_env["sample"], out, target="tensorrt"), "TensorRT"),
    ] + ([(lambda: quantize_checked(v8_onnx, export_env["sample"], out, target="x86-vnni"), "has no VNNI")]
         if host_target() == "x86-avx2" else []):
        with pytest.raises(EdgeVisionError, match=match) as e:
            fn()
        assert "\n" not in str(e.value)
    assert not out.exists() and not out.with_suffix(".report.json").exists()
    # --no-eval builds without a val split, and says so in the report
    rep = quantize_checked(v8_onnx, tmp_path / "trainonly", out, n=4, evaluate=False, latency_runs=2)
    assert rep.verdict == "not-evaluated" and rep.written and out.is_file()
    assert rep.int8 is not None and rep.int8.latency is not None and rep.fp32 is not None
    assert np.isfinite(rep.int8.latency["pipeline_ms"]["p50"])
    assert "accuracy" not in rep.quantization
