"""Tiny trained models (yolov8n, yolo26n, LibreYOLO yolo9-t, SSDlite) shared by the export and quantization tests, and the
``learned`` model: trained through the real CLI, offline, only when a test asks for one, and once per
test run for all pytest processes (`tests.model_cache`: content-addressed, locked, verified).

The tiny ones: the built-in sample (16 images of 64 px) and one epoch at imgsz 64: the weights are nearly
untrained, which is enough to check graphs, values and metadata (``learned`` and the learnability test
check learning).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import network_attempts, private_home, run_cli
from tests.model_cache import cache_root, cached_build

IMGSZ = 64
TINY_SAMPLE = {"n": 16, "imgsz": IMGSZ}


@pytest.fixture(scope="session")
def export_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A private EdgeVision home and HOME, and the built-in sample on disk."""
    with private_home(tmp_path_factory.mktemp("export"), **TINY_SAMPLE) as paths:
        paths["cache"] = cache_root(paths["root"] / "cache")
        yield paths


def _no_training_in_the_fast_tier() -> None:
    """``make test-fast`` promises no training: a test that reaches a trained model there lacks its marker."""
    if os.environ.get("EDGEVISION_TEST_TIER") == "fast":
        pytest.fail("this test needs a trained model but is not marked `trains` (make test-fast trains nothing); "
                    "add @pytest.mark.trains or use a fixture listed in tests/conftest.py TRAINED_FIXTURES")


def _train(env: dict[str, Path], name: str, *args: str) -> Path:
    """A one-epoch run on the tiny sample (the sample is built into the cache entry beside the run: the same
    images as ``env["sample"]``, which ``edgevision synth`` makes deterministically)."""
    # two torch threads, whatever the cores: the weights (and so the INT8 tests' tolerances) depend on the thread count
    _no_training_in_the_fast_tier()
    train_args = ["--epochs", "1", "--imgsz", str(IMGSZ), "--workers", "0", "--augment", "none", "--threads", "2", *args]

    def build(entry: Path) -> None:
        assert run_cli("synth", entry / "sample", "--n", str(TINY_SAMPLE["n"]), "--imgsz",
                       str(TINY_SAMPLE["imgsz"])).returncode == 0
        block = entry / "block"
        r = run_cli("train", "--data", entry / "sample", "--out", entry / "run", *train_args, block_network=block)
        assert r.returncode == 0, r.stdout + r.stderr
        assert network_attempts(block) == []

    entry = cached_build(env["cache"], f"tiny-{name}", {"sample": TINY_SAMPLE, "train": train_args}, build)
    return entry / "run"


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


@pytest.fixture(scope="session")
def ly_run(export_env: dict[str, Path]) -> Path:
    """A LibreYOLO (MIT) yolo9-t run folder."""
    return _train(export_env, "yolo9t", "--backend", "libreyolo", "--model", "yolo9-t", "--batch", "8")


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
def ly_onnx(export_env, ly_run) -> Path:
    return export_tiny(export_env, ly_run, "yolo9t")


@pytest.fixture(scope="session")
def y26_onnx(export_env, yolo26_run) -> Path:
    return export_tiny(export_env, yolo26_run / "weights" / "best.pt", "y26")


LEARN_RECIPE = {"imgsz": 192, "epochs": 8, "batch": 4, "patience": 0, "augment": "industrial-light", "seed": 0,
                "threads": 1, "workers": 1, "ultralytics": {"nbs": 4}}
"""The ``learned`` model's training config: yolov8n from scratch on the 160 training images of a 200-image sample.

What gets a from-scratch model off the ground on a small dataset is the number of optimizer steps, not epochs:
``batch: 4`` with ``nbs: 4`` (Ultralytics' nominal batch; by default it accumulates to 64) makes 40 steps per
epoch. Measured on one core of this 2-core machine (val mAP50 / mAP50-95): the demo's recipe (`edgevision.demo.
TRAIN_RECIPE`: 10 steps per epoch at 256 px) took off at epoch 13 and ended at 0.55 / 0.31 after 22 epochs in
about 450 s; this one takes off at epoch 4 and ends at 0.43 / 0.21 after 8 epochs in about 125 s (on an AVX2
EPYC; 0.39 / 0.18 in 81 s on an AVX-512 one: the CPU's instruction set changes the arithmetic). One torch
thread and one data-loader worker fix the weights on a given CPU type (both change the arithmetic or the
augmentation stream); the tests' margins hold on both CPUs measured."""


@pytest.fixture(scope="session")
def learned(export_env: dict[str, Path]) -> dict[str, Path]:
    """A nano YOLO that really learned the sample (`LEARN_RECIPE`: 200 images made at 256 px, trained at 192 px,
    mAP50 about 0.43 on val), and its ONNX export. ``{"sample", "run", "onnx"}``.
    tests/train/test_learnability.py holds it to mAP50 >= 0.3; the INT8, serve, bench and inspect tests use it
    where a drop in accuracy has to mean something.
    """
    import yaml

    from edgevision.demo import SAMPLE_IMGSZ

    _no_training_in_the_fast_tier()
    def build(root: Path) -> None:
        sample, run = root / "sample", root / "run"
        assert run_cli("synth", sample, "--n", "200", "--imgsz", str(SAMPLE_IMGSZ)).returncode == 0
        cfg = root / "learn.yaml"
        cfg.write_text(yaml.safe_dump(LEARN_RECIPE, sort_keys=False))
        block = root / "block"
        r = run_cli("train", "--config", cfg, "--data", sample, "--model", "yolov8n", "--out", run,
                    block_network=block, timeout=1800)
        assert r.returncode == 0, r.stdout + r.stderr
        assert network_attempts(block) == []
        r = run_cli("export", run, "--out", root / "model.onnx")
        assert r.returncode == 0, r.stdout + r.stderr

    root = cached_build(export_env["cache"], "learned", {"n": 200, "imgsz": SAMPLE_IMGSZ, "recipe": LEARN_RECIPE},
                        build)
    return {"sample": root / "sample", "run": root / "run", "onnx": root / "model.onnx"}
