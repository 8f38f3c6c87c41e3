"""Run-folder reports: environment, training curves PNG, model card."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from edgevision.core.io import sha256_file
from edgevision.train import report
from edgevision.train.config import TrainConfig
from edgevision.train.report import ULTRALYTICS_NOTICE, environment, model_card, plot_curves
from edgevision.train.run import append_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_environment_has_the_facts_and_no_hostname():
    env = environment()
    for key in ("python", "packages", "os", "machine", "cpu", "ram_gb", "torch", "gpus", "command"):
        assert key in env
    for pkg in ("edgevision", "torch", "torchvision", "ultralytics", "albumentations", "onnx", "numpy", "opencv"):
        assert pkg in env["packages"]
    assert env["packages"]["edgevision"] and env["packages"]["numpy"] and env["packages"]["opencv"]
    assert env["cpu"]["cores_logical"] >= 1 and 1 <= env["cpu"]["cores_usable"] <= env["cpu"]["cores_logical"]
    assert env["cpu"]["model"] and env["ram_gb"] > 0
    if env["packages"]["torch"]:
        assert env["torch"]["threads"] >= 1
    assert isinstance(env["gpus"], list)
    text = json.dumps(env)  # JSON-serialisable as is
    import platform
    import socket

    host = socket.gethostname()
    if len(host) > 3:
        assert host not in text and platform.node() not in text


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_curves_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    hist = tmp_path / "history.csv"
    for e in range(1, 6):
        append_history(hist, {"epoch": e, "time_s": 10.0 * e, "train_loss": 3.0 / e,
                              "val_map50": None if e == 1 else 0.1 * e, "val_map50_95": None if e == 1 else 0.05 * e,
                              "lr": 0.01})
    out = plot_curves(hist, tmp_path / "sub" / "curves.png", title="run 1")
    assert out == tmp_path / "sub" / "curves.png"
    assert out.stat().st_size > 1000
    assert _png_size(out) == (1000, 400)
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no temporary left behind


def test_plot_curves_without_validation_and_empty(tmp_path, caplog):
    pytest.importorskip("matplotlib")
    hist = tmp_path / "history.csv"
    append_history(hist, {"epoch": 1, "time_s": 1.0, "train_loss": 2.0})
    assert plot_curves(hist, tmp_path / "c.png") == tmp_path / "c.png"
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    with caplog.at_level("INFO"):
        assert plot_curves(tmp_path / "missing.csv", tmp_path / "d.png") is None
    assert not (tmp_path / "d.png").exists() and "no training history" in caplog.text
    (tmp_path / "empty.csv").write_text("epoch,time_s,train_loss,val_map50,val_map50_95,lr\n")
    assert plot_curves(tmp_path / "empty.csv", tmp_path / "e.png") is None


def test_sha256_file_is_the_shared_one(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"abc")
    assert report.sha256_file is sha256_file
    assert sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


CLASSES = ["crazing", "inclusion", "pitted|surface"]
DATASET = {
    "source": "/data/NEU-DET", "format": "voc", "recipe": "neu-det", "title": "NEU-DET",
    "hash": "d" * 64, "classes": CLASSES, "mono": True,
    "splits": {"train": {"images": 1440, "objects": 3400, "background": 0},
               "val": {"images": 360, "objects": 850, "background": 0}},
    "class_counts": {"crazing": 1000, "inclusion": 1500, "pitted|surface": 1750},
    "licence": "academic research use", "commercial_use": False, "research_only": True,
    "citation": "K. Song and Y. Yan, Applied Surface Science 285 (2013) 858-864.",
}
METRICS = {
    "split": "val", "images": 360, "difficult": "ignore", "conf": 0.25,
    "map50_95": 0.4123, "map50": 0.7456, "map75": 0.401, "ap_small": 0.2, "ap_medium": 0.35, "ap_large": 0.5,
    "per_class": {"crazing": {"ap50_95": 0.1234, "ap50": 0.3456, "gt": 200},
                  "inclusion": {"ap50_95": 0.5, "ap50": 0.81, "gt": 300},
                  "pitted|surface": {"ap50_95": 0.61, "ap50": 0.9, "gt": 350}},
    "backend": {"name": "ultralytics", "map50": 0.7601, "map50_95": 0.4222},
    "epochs_completed": 42, "best_epoch": 37, "train_time_s": 3600.0,
}
THRESHOLDS = {
    "target": "recall", "value": 0.9, "iou": 0.5,
    "per_class": {"crazing": {"threshold": 0.1111, "precision": 0.5, "recall": 0.85, "achieved": False},
                  "inclusion": {"threshold": 0.3, "precision": 0.8, "recall": 0.91, "achieved": True}},
    "escape_rate": 0.0125, "false_reject_rate": 0.083, "defective_images": 320, "good_images": 40,
}
WEIGHTS = {"source": "yolov8n-coco", "kind": "weights", "path": "/home/x/yolov8n.pt", "arch": "yolov8n.yaml",
           "sha256": "a" * 64, "licence": "AGPL-3.0", "origin": "https://example.org/yolov8n.pt",
           "registered": "yolov8n-coco", "trained_sha256": "b" * 64}


def test_model_card_has_the_key_facts():
    cfg = TrainConfig(recipe="neu-det", imgsz=320, augment="industrial").to_yaml_dict()
    card = model_card(config=cfg, dataset=DATASET, metrics=METRICS, thresholds=THRESHOLDS,
                      environment=environment(), weights=WEIGHTS)
    assert card.startswith("# Model card: yolov8n\n") and card.endswith("\n")
    for fact in ("crazing", "inclusion", "pitted\\|surface", "d" * 64, "a" * 64, "b" * 64, "AGPL-3.0",
                 "yolov8n-coco", "https://example.org/yolov8n.pt", "academic research use", "Applied Surface Science",
                 "0.412", "0.746", "0.760", "0.422", "0.123", "0.346", "0.111", "1.2%", "8.3%", "1440", "3400",
                 "320 × 320", "industrial", "60.0 min", "| 42 |", "**no**", "not licensed for commercial use",
                 "Trained on 1440 training images (3400 objects) of `NEU-DET`", "re-validate".capitalize()):
        assert fact in card, fact
    assert ULTRALYTICS_NOTICE in card
    assert "300 detections" in card  # why the backend's own number differs
    for heading in ("## Model", "### Weights", "## Dataset", "## Training", "## Results", "## Operating points",
                    "## Environment", "## Intended use and limits", "## Licences"):
        assert f"\n{heading}\n" in card
    # tables are well formed: every table row has as many cells as its header
    lines = card.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---") or line.startswith("|---|"):
            n = lines[i - 1].replace("\\|", "").count("|")
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].replace("\\|", "").count("|") == n, lines[j]
                j += 1


def test_model_card_with_missing_sections():
    cfg = TrainConfig(backend="torchvision", model="ssdlite320_mobilenet_v3_large").to_yaml_dict()
    card = model_card(config=cfg)
    assert "ssdlite320_mobilenet_v3_large" in card and "BSD-3-Clause" in card
    assert ULTRALYTICS_NOTICE not in card
    assert "The dataset was not recorded." in card and "Not evaluated." in card
    assert "No operating points" in card and "Where the starting weights came from was not recorded." in card
    # from scratch, list-style per-class metrics, no backend numbers
    card = model_card(config=cfg, weights={"kind": "arch", "source": "ssdlite320_mobilenet_v3_large",
                                           "arch": "ssdlite320_mobilenet_v3_large"},
                      metrics={"map50": 0.5, "per_class": [{"name": "scratch", "ap50": 0.25}]},
                      dataset={"classes": ["scratch"]}, title="My model")
    assert card.startswith("# My model\n")
    assert "Trained from scratch" in card and "| scratch | 0.250 |" in card
    assert "own" not in card.split("## Results")[1].split("##")[0]  # no backend column
    # an unknown weights licence is flagged
    card = model_card(config=cfg, weights={"kind": "weights", "source": "x.pt", "sha256": "c" * 64})
    assert "licence of the starting weights is unknown" in card
