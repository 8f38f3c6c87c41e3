"""inspect's image decisions carry the escape and false-reject rates' counts and exact 95% intervals (the
result, the dataset's info, the printed summary), and the expected cost per 1,000 parts when the operating
points are priced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgevision.convert import read_dataset
from edgevision.core.stats import clopper_pearson
from edgevision.evaluate import read_predictions
from edgevision.evaluate.operating import decisions_summary, image_decisions
from edgevision.inspect.load import LoadRequest, LoadResult, load_into_fiftyone

COSTS = {"escape": 50.0, "false_reject": 2.0, "defect_rate": 0.05}


def _priced(names: list[str], threshold: float = 0.5) -> dict[str, Any]:
    return {"schema": "edgevision.thresholds/2", "target": "cost", "value": None, "iou": 0.5,
            "classes": {n: threshold for n in names}, "rules": {n: {"rule": "cost", "text": "priced"} for n in names},
            "rule": {"cost_escape": 50.0, "cost_false_reject": 2.0, "defect_rate": 0.05, "mode": "cost"}}


def test_print_result_shows_both_rates_with_intervals_and_the_cost(capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from edgevision.commands import _present
    from edgevision.commands.inspect import _print_result

    monkeypatch.setattr(_present.out, "width", 250)
    dec = {"escapes": 0, "defective_images": 18, "escape_rate": 0.0, "false_rejects": 1, "defect_free_images": 40,
           "false_reject_rate": 0.025,
           "expected_cost": {"per_1000_parts": 0.95, "lower": 0.0, "upper": 12.3, "cost_escape": 50.0,
                             "cost_false_reject": 2.0, "defect_rate": 0.05, "defect_rate_from": "given"}}
    r = LoadResult(name="x", db_dir=None, samples=58, objects=20, splits={"val": 58}, classes=["a"], has_predictions=True,
                   thresholds={"a": 0.5}, thresholds_source="--thresholds t.json", decisions=dec,
                   saved_views=["missed"])
    capsys.readouterr()
    _print_result(r)
    text = " ".join(capsys.readouterr().out.split())
    assert ("image decisions: escape rate 0.0% (0/18; 95% CI 0.0-18.5%), false-reject rate 2.5% (1/40; 95% CI "
            "0.1-13.2%); expected cost 0.95 per 1,000 parts (95% CI 0-12.3; escape 50, false reject 2 per part, "
            "defect rate 0.05)") in text


def test_load_stores_the_intervals_and_the_expected_cost(fo: Any, voc: Path, voc_preds: Path) -> None:
    ds = read_dataset(voc).dataset
    preds = read_predictions(voc_preds, ds.images, ds.labels)
    thr = {n: 0.5 for n in ds.labels.names}
    req = LoadRequest(name="voc-priced", gt=ds.images, labels=ds.labels, preds=preds, thresholds=thr, costs=COSTS,
                      overwrite=True)
    res = load_into_fiftyone(req)
    d = res.decisions
    assert d is not None
    e, f = d["escape"], d["false_reject"]
    assert (e["k"], e["n"]) == (d["escapes"], d["defective_images"]) and e["n"] > 0
    assert (f["k"], f["n"]) == (d["false_rejects"], d["defect_free_images"]) and f["n"] > 0
    assert (e["lower"], e["upper"]) == clopper_pearson(e["k"], e["n"])
    assert (f["lower"], f["upper"]) == clopper_pearson(f["k"], f["n"])
    c = d["expected_cost"]
    assert c["defect_rate"] == 0.05 and c["defect_rate_from"] == "given"
    assert c["per_1000_parts"] == pytest.approx(1000 * (50 * 0.05 * e["rate"] + 2 * 0.95 * f["rate"]))
    assert c["upper"] == pytest.approx(1000 * (50 * 0.05 * e["upper"] + 2 * 0.95 * f["upper"]))
    want = image_decisions(ds.images, preds, thr, labels=ds.labels, costs=COSTS)
    assert (e, f, c) == (want["escape"], want["false_reject"], want["expected_cost"])
    info = fo.load_dataset("voc-priced").info["edgevision"]["decisions"]
    assert info["escape"] == e and info["false_reject"] == f and info["expected_cost"] == c
    assert info["escapes"] == d["escapes"] and info["false_reject_rate"] == d["false_reject_rate"]


def test_cli_with_priced_thresholds_prints_intervals_and_cost(fo: Any, voc: Path, voc_preds: Path, cli: Any,
                                                              tmp_path: Path) -> None:
    ds = read_dataset(voc).dataset
    thr_file = tmp_path / "thresholds.json"
    thr_file.write_text(json.dumps(_priced(list(ds.labels.names))))
    code, stdout, stderr = cli("inspect", "--data", voc, "--predictions", voc_preds, "--thresholds", thr_file,
                               "--name", "voc-priced-cli", "--overwrite")
    assert code == 0, stderr
    preds = read_predictions(voc_preds, ds.images, ds.labels)
    want = image_decisions(ds.images, preds, {n: 0.5 for n in ds.labels.names}, labels=ds.labels, costs=COSTS)
    text = " ".join(stdout.split())
    assert f"image decisions: {decisions_summary(want)}" in text
    assert "expected cost" in text and "95% CI" in text
    e = want["escape"]
    assert f"({e['k']}/{e['n']}; 95% CI {100 * e['lower']:.1f}-{100 * e['upper']:.1f}%)" in text
