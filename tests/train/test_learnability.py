"""The built-in sample must be learnable: a nano YOLO from scratch reaches mAP50 >= 0.3 in minutes.

The model is the session fixture ``learned`` of `tests.tiny_models` (`LEARN_RECIPE`: 200 images, 8 epochs at
192 px on the CPU through the real CLI, about 2 minutes on one core; the INT8 tests judge its quantization too).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.tiny_models import LEARN_RECIPE


@pytest.mark.slow
def test_nano_yolo_learns_the_sample(learned: dict[str, Path], tmp_path: Path) -> None:
    m = json.loads((learned["run"] / "metrics.json").read_text())
    coco = m["coco"]["coco"]
    print(f"sample learnability: COCO mAP50 {coco['map50']:.3f} mAP50-95 {coco['map50_95']:.3f}, "
          f"{m['train']['train_images_per_s']} images/s, {os.cpu_count()} cores")
    assert coco["map50"] >= 0.3, coco
    _check_onnx_export_of_a_trained_model(learned, tmp_path, coco)


def _check_onnx_export_of_a_trained_model(learned: dict[str, Path], tmp_path: Path, pt_coco: dict) -> None:
    """The trained model through export and the torch-free runtime: same accuracy, same boxes as Ultralytics.

    Parity (issue 5): on the same ONNX file and images at the same thresholds, at least 99% of boxes pair
    at IoU >= 0.99 with the same class with Ultralytics' ``YOLO("x.onnx").predict``.
    """
    from tests.parity import edgevision_predict, pair_rate, ultralytics_onnx_predict

    onnx = learned["onnx"]
    r = run_cli("eval", onnx, "--data", learned["sample"], "--split", "val", "--json", tmp_path / "onnx-eval.json")
    assert r.returncode == 0, r.stdout + r.stderr
    onnx_coco = json.loads((tmp_path / "onnx-eval.json").read_text())["coco"]
    print(f"ONNX through the runtime: mAP50 {onnx_coco['map50']:.3f} mAP50-95 {onnx_coco['map50_95']:.3f} "
          f"(.pt: {pt_coco['map50']:.3f} / {pt_coco['map50_95']:.3f})")
    assert abs(onnx_coco["map50"] - pt_coco["map50"]) <= 0.02
    assert abs(onnx_coco["map50_95"] - pt_coco["map50_95"]) <= 0.02
    images = sorted((learned["sample"] / "images" / "val").glob("*.*"))
    for conf in (0.25, 0.05):
        theirs = ultralytics_onnx_predict(onnx, images, conf=conf, iou=0.7, max_det=300,
                                         imgsz=LEARN_RECIPE["imgsz"])
        ours = edgevision_predict(onnx, images, conf=conf, iou=0.7, max_det=300)
        rate, n_ours, n_theirs = pair_rate(ours, theirs)
        print(f"parity with Ultralytics ONNX predict at conf {conf}: {rate:.4f} of {n_theirs} boxes paired")
        assert n_theirs >= len(images) // 2 and rate >= 0.99, (conf, rate, n_ours, n_theirs)
