"""``edgevision eval`` through the real CLI entry point (``cli.main``): tables, JSON, one-line errors.

Until the lead registers the command in ``edgevision/cli.py`` the subprocess registers it on the
real app first; the MODEL path runs in-process with a stand-in predictor (the backends fill in
``edgevision.models.open_predictor``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edgevision.commands.eval import command
from edgevision.convert import read_dataset
from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError
from edgevision.data.synth import write_synth
from edgevision.evaluate import OperatingPoints, write_predictions
from tests.test_cli import assert_one_line_error, make_coco

_RUN = (
    "import sys\n"
    "from edgevision import cli\n"
    "from edgevision.commands.eval import command\n"
    "if 'eval' not in {c.name for c in cli.app.registered_commands}:\n"
    "    cli.app.command('eval')(command)\n"
    "sys.argv = ['edgevision', *sys.argv[1:]]\n"
    "cli.main()\n"
)


def run_eval(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return subprocess.run([sys.executable, "-c", _RUN, "eval", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])


def gt_as_predictions(records: list[ImageRecord]) -> list[ImageRecord]:
    return [ImageRecord(r.name, r.size_hw, r.boxes, r.class_ids, scores=np.ones(len(r))) for r in records]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The built-in sample written as YOLO (train / val / test) and its val gt as predictions."""
    tmp = tmp_path_factory.mktemp("eval")
    write_synth(tmp / "ds", n=20, seed=5, imgsz=64)
    ds = read_dataset(tmp / "ds", "yolo").dataset
    val = ds.split("val")
    assert val and sum(len(r) for r in val)
    write_predictions(tmp / "preds.json", gt_as_predictions(val), ds.labels)
    return tmp / "ds", tmp / "preds.json"


def test_gt_as_predictions_give_map_1(sample: tuple[Path, Path], tmp_path: Path) -> None:
    ds, preds = sample
    res = run_eval("--data", ds, "--predictions", preds, "--json", tmp_path / "out" / "eval.json")
    assert res.returncode == 0, res.stderr
    d = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert d["schema"] == "edgevision.eval/1"
    assert (d["coco"]["map50_95"], d["coco"]["map50"]) == (1.0, 1.0)
    assert d["prf"]["overall"]["precision"] == 1.0 and d["prf"]["overall"]["recall"] == 1.0
    assert d["decisions"]["escapes"] == 0 and d["decisions"]["thresholds_from"] == "conf"
    assert d["settings"] == {"conf": 0.25, "iou": 0.5, "max_dets": 100, "difficult": "ignore"}
    for text in ("mAP50-95", "per class", "confusion matrix", "escape rate 0.0% (0/", "wrote report to"):
        assert text in res.stdout, text


def test_target_chooses_and_saves_operating_points(sample: tuple[Path, Path], tmp_path: Path) -> None:
    ds, preds = sample
    res = run_eval("--data", ds, "--predictions", preds, "--target", "recall=0.9",
                   "--save-thresholds", tmp_path / "thresholds.json", "--json", tmp_path / "e.json")
    assert res.returncode == 0, res.stderr
    op = OperatingPoints.load(tmp_path / "thresholds.json")
    assert op.target == "recall" and op.value == 0.9
    present = [n for n, a in op.achieved.items() if a["gt"]]
    assert present and all(op.classes[n] == 1.0 for n in present)
    assert json.loads((tmp_path / "e.json").read_text())["decisions"]["thresholds_from"] == "operating"
    assert "threshold" in res.stdout
    # the saved file is read back with --thresholds
    res = run_eval("--data", ds, "--predictions", preds, "--thresholds", tmp_path / "thresholds.json")
    assert res.returncode == 0, res.stderr
    assert "recall >= 0.9" in res.stdout and "95% CI" in res.stdout


def test_unsplit_dataset_and_coco_results(tmp_path: Path) -> None:
    gt = make_coco(tmp_path / "src")  # 3 images (ids 1..3), crack (id 3) 20x10 on image 1, squat (7) on image 2
    res_json = tmp_path / "results.json"
    res_json.write_text(json.dumps([{"image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 10], "score": 0.9},
                                    {"image_id": 3, "category_id": 7, "bbox": [0, 0, 5, 5], "score": 0.8}]))
    res = run_eval("--data", gt, "--predictions", res_json)
    assert_one_line_error(res, "--split val", "unsplit", "--split all")
    res = run_eval("--data", gt, "--predictions", res_json, "--split", "all", "--json", tmp_path / "e.json")
    assert res.returncode == 0, res.stderr
    d = json.loads((tmp_path / "e.json").read_text())
    assert d["coco"]["per_class"]["crack"]["ap50_95"] == pytest.approx(1.0)
    assert d["coco"]["per_class"]["squat"]["ap50_95"] == 0.0
    assert d["decisions"]["false_rejects"] == 1 and d["decisions"]["escapes"] == 1  # image 3 / image 2


def test_bad_input_is_one_line(sample: tuple[Path, Path], tmp_path: Path) -> None:
    ds, preds = sample
    assert_one_line_error(run_eval("--data", tmp_path / "missing", "--predictions", preds), "does not exist")
    assert_one_line_error(run_eval("--data", ds, "--predictions", preds, "--split", "holdout"),
                          "no split 'holdout'", "train, val, test")
    assert_one_line_error(run_eval(tmp_path / "model.pt", "--data", ds, "--predictions", preds),
                          "exactly one of MODEL or --predictions", "not both")
    assert_one_line_error(run_eval("--data", ds), "exactly one of MODEL or --predictions")
    assert_one_line_error(run_eval("--data", ds, "--predictions", tmp_path / "nope.json"), "does not exist")
    assert_one_line_error(run_eval("--data", ds, "--predictions", preds, "--difficult", "skip"),
                          "--difficult: expected ignore, count or drop")
    assert_one_line_error(run_eval("--data", ds, "--predictions", preds, "--target", "f1=0.9"), "--target")
    # predictions of another split name images that are not in the evaluated one
    assert_one_line_error(run_eval("--data", ds, "--predictions", preds, "--split", "train"),
                          "is not in the ground truth")


class _Predictor:
    """Perfect predictions: eval hands each chunk of the split's ground truth (in the model's class order)."""

    def __init__(self, labels: LabelMap) -> None:
        self.labels, self.calls = labels, 0

    def predict(self, records: Any, *, conf: float = 0.001, max_det: int = 100) -> list[ImageRecord]:
        self.calls += 1
        assert conf == 0.001 and max_det == 100 and all(r.path is not None for r in records)
        return gt_as_predictions(list(records))


def test_model_path_with_a_run_folder(sample: tuple[Path, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """MODEL goes through edgevision.models.open_predictor; a run folder's thresholds.json is used; class names must match."""
    ds_path, _ = sample
    ds = read_dataset(ds_path, "yolo").dataset
    seen: dict[str, Any] = {}

    def fake_load(model: Path | str, *, device: str = "cpu", imgsz: int | None = None) -> _Predictor:
        seen.update(model=Path(model), device=device, imgsz=imgsz)
        return _Predictor(seen.get("labels", ds.labels))

    import edgevision.models

    monkeypatch.setattr(edgevision.models, "open_predictor", fake_load)
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "best.pt").write_bytes(b"")  # never loaded: open_predictor is the fake
    OperatingPoints("recall", 0.9, 0.5, {n: 0.5 for n in ds.labels.names}).save(run / "thresholds.json")
    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(app, [str(run), "--data", str(ds_path), "--imgsz", "64", "--json",
                                      str(tmp_path / "e.json"), "--save-predictions", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert seen == {"model": run, "device": "cpu", "imgsz": 64}
    d = json.loads((tmp_path / "e.json").read_text())
    assert d["coco"]["map50_95"] == 1.0 and d["operating"]["classes"] == {n: 0.5 for n in ds.labels.names}
    assert json.loads((tmp_path / "p.json").read_text())["classes"] == ds.labels.names
    # the same classes in another order: the ground truth is put in the model's order, the report too
    seen["labels"] = LabelMap(list(reversed(ds.labels.names)))
    (run / "thresholds.json").unlink()
    result = CliRunner().invoke(app, [str(run), "--data", str(ds_path), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["coco"]["map50_95"] == 1.0 and list(d["coco"]["per_class"]) == list(reversed(ds.labels.names))
    seen["labels"] = LabelMap(["crack", "dent"])
    result = CliRunner().invoke(app, [str(run), "--data", str(ds_path)])
    assert isinstance(result.exception, ConfigError)
    assert "the model's classes ['crack', 'dent'] differ from" in str(result.exception)


def write_table_dataset(root: Path) -> tuple[Path, Path]:
    """The hand-computed score table of tests/evaluate/test_operating_image.py as a COCO dataset and an
    EdgeVision predictions file: 5 defective images, 4 defect-free."""
    from tests.evaluate.test_operating_image import HAND, HAND_DEFECTIVE, table_records
    from tests.test_cli import write_image

    gt, preds, labels = table_records(HAND, HAND_DEFECTIVE)
    for r in gt:
        write_image(root / r.name, (64, 64), seed=0)
    coco = {"images": [{"id": i + 1, "file_name": r.name, "height": 64, "width": 64} for i, r in enumerate(gt)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                             "iscrowd": 0} for i, r in enumerate(gt) if len(r)],
            "categories": [{"id": c + 1, "name": n} for c, n in enumerate(labels.names)]}
    root.mkdir(parents=True, exist_ok=True)
    (root / "instances.json").write_text(json.dumps(coco))
    write_predictions(root / "preds.json", preds, labels)
    return root / "instances.json", root / "preds.json"


def test_image_level_and_priced_choice(tmp_path: Path) -> None:
    gt, preds = write_table_dataset(tmp_path / "d")
    base = ("--data", gt, "--predictions", preds, "--split", "all")
    res = run_eval(*base, "--max-escape-rate", "0.2", "--save-thresholds", tmp_path / "t.json",
                   "--curve-csv", tmp_path / "curve.csv", "--json", tmp_path / "e.json")
    assert res.returncode == 0, res.stderr
    op = OperatingPoints.load(tmp_path / "t.json")
    assert op.target == "image" and op.classes == {"a": pytest.approx(0.6), "b": pytest.approx(0.2)}
    for text in ("per image: escape rate <= 0.2, false rejects minimised", "image-level trade-off",
                 "escape rate 20.0% (1/5; 95% CI 0.5-71.6%), false-reject rate 0.0% (0/4; 95% CI 0.0-60.2%)",
                 "note: 5 defective images cannot show an escape rate <= 0.2 at 95% confidence"):
        assert text in " ".join(res.stdout.split()), text
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["decisions"]["escape"]["upper"] == pytest.approx(0.7164, abs=1e-4) and doc["tradeoff"]
    assert (tmp_path / "curve.csv").read_text().startswith("escapes,defective_images,escape_rate")
    res = run_eval(*base, "--cost-escape", "10", "--cost-false-reject", "1", "--json", tmp_path / "c.json")
    assert res.returncode == 0, res.stderr
    assert "expected cost 1111 per 1,000 parts" in " ".join(res.stdout.split())
    assert json.loads((tmp_path / "c.json").read_text())["decisions"]["expected_cost"]["per_1000_parts"] == \
        pytest.approx(1000 * 10 * 5 / 9 / 5)


def test_image_level_refusals_are_one_line(tmp_path: Path) -> None:
    gt, preds = write_table_dataset(tmp_path / "d")
    base = ("--data", gt, "--predictions", preds, "--split", "all")
    assert_one_line_error(run_eval(*base, "--max-escape-rate", "0", "--save-thresholds", tmp_path / "t.json"),
                          "escape rate <= 0 cannot hold", "the lowest escape rate reachable is 20.0% (1/5")
    assert not (tmp_path / "t.json").exists()
    assert_one_line_error(run_eval(*base, "--cost-escape", "10"), "cost_escape and cost_false_reject")
    assert_one_line_error(run_eval(*base, "--target", "recall=0.9", "--max-escape-rate", "0.1"),
                          "--target (per class) or --max-escape-rate")
    assert_one_line_error(run_eval(*base, "--save-thresholds", tmp_path / "t.json"), "--save-thresholds needs a rule")
    assert_one_line_error(run_eval(*base, "--defect-rate", "0.1"), "--defect-rate prices decisions")
    assert_one_line_error(run_eval(*base, "--fallback", "lowest"), "--fallback")
