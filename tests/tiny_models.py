"""Tiny trained models (yolov8n, yolo26n, SSDlite) shared by the export and quantization tests: trained
once per session through the real CLI, offline, only when a test asks for one.

The built-in sample (24 images of 64 px) and one epoch at imgsz 64: the weights are nearly untrained,
which is enough to check graphs, values and metadata (the learnability tests check learning).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import network_attempts, private_home, run_cli

IMGSZ = 64


@pytest.fixture(scope="session")
def export_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A private EdgeVision home and HOME, and the built-in sample on disk."""
    with private_home(tmp_path_factory.mktemp("export"), n=16, imgsz=IMGSZ) as paths:
        yield paths


def _train(env: dict[str, Path], name: str, *args: str) -> Path:
    run = env["root"] / f"run-{name}"
    block = env["root"] / f"block-train-{name}"
    r = run_cli("train", "--data", env["sample"], "--out", run, "--epochs", "1", "--imgsz", str(IMGSZ),
                "--workers", "0", "--augment", "none", *args, block_network=block)
    assert r.returncode == 0, r.stdout + r.stderr
    assert network_attempts(block) == []
    return run


@pytest.fixture(scope="session")
def yolov8_run(export_env: dict[str, Path]) -> Path:
    """An Ultralytics yolov8n run folder (raw head)."""
    return _train(export_env, "yolov8n", "--model", "yolov8n", "--batch", "8")


@pytest.fixture(scope="session")
def yolo26_run(export_env: dict[str, Path]) -> Path:
    """An Ultralytics yolo26n run folder (end-to-end head)."""
    return _train(export_env, "yolo26n", "--model", "yolo26n", "--batch", "8")


@pytest.fixture(scope="session")
def tv_run(export_env: dict[str, Path]) -> Path:
    """A torchvision SSDlite run folder."""
    return _train(export_env, "ssdlite", "--backend", "torchvision", "--model", "ssdlite320_mobilenet_v3_large",
                  "--batch", "4")


def export_tiny(env: dict[str, Path], model: Path, name: str, *args: str) -> Path:
    """`edgevision export MODEL` offline into ``env["root"]/onnx/NAME.onnx`` (checked: no network, checks passed)."""
    out = env["root"] / "onnx" / f"{name}.onnx"
    block = env["root"] / f"block-export-{name}"
    r = run_cli("export", model, "--out", out, *args, block_network=block)
    assert r.returncode == 0, r.stdout + r.stderr
    assert network_attempts(block) == []
    assert "wrote" in r.stdout and "full check passed" in r.stdout
    return out


@pytest.fixture(scope="session")
def v8_onnx(export_env, yolov8_run) -> Path:
    return export_tiny(export_env, yolov8_run, "v8")


@pytest.fixture(scope="session")
def y26_onnx(export_env, yolo26_run) -> Path:
    return export_tiny(export_env, yolo26_run / "weights" / "best.pt", "y26")


@pytest.fixture(scope="session")
def learned(export_env: dict[str, Path]) -> dict[str, Path]:
    """A nano YOLO that really learned the sample: 200 images at 256 px, 22 epochs (about 5 minutes on 2 cores;
    mAP50 about 0.5), and its ONNX export. ``{"sample", "run", "onnx"}``. The config is `edgevision.demo`'s
    `TRAIN_RECIPE`, so tests/train/test_learnability.py holds the full demo's model to mAP50 >= 0.3.

    ``nbs: 16`` (Ultralytics' nominal batch) makes every batch of 16 an optimizer step instead of accumulating
    4 batches: on a small dataset that is 4x more steps for the same compute, which is what gets a
    from-scratch model off the ground within the budget (measured: 15 epochs without it gave mAP50 0.004 at
    192 px; with it 0.108 at 256 px and rising).
    """
    root = export_env["root"] / "learned"
    root.mkdir()
    sample, run = root / "sample", root / "run"
    import yaml

    from edgevision.demo import SAMPLE_IMGSZ, TRAIN_RECIPE  # the demo's recipe: this fixture holds it to mAP50 >= 0.3

    assert run_cli("synth", sample, "--n", "200", "--imgsz", str(SAMPLE_IMGSZ)).returncode == 0
    cfg = root / "learn.yaml"
    cfg.write_text(yaml.safe_dump(TRAIN_RECIPE, sort_keys=False))
    block = root / "block"
    r = run_cli("train", "--config", cfg, "--data", sample, "--model", "yolov8n", "--out", run, block_network=block,
                timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    assert network_attempts(block) == []
    onnx = root / "model.onnx"
    r = run_cli("export", run, "--out", onnx)
    assert r.returncode == 0, r.stdout + r.stderr
    return {"sample": sample, "run": run, "onnx": onnx}
