"""The drift watch: image statistics and detections of a window of parts against the reference."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.line.drift import DriftWatch
from edgevision.runtime.imagestats import image_stats, summarize
from tests.line.test_line import model, write_config  # noqa: F401 (model: a fixture)

RNG = np.random.default_rng(0)


def scene(brightness: float = 100.0, blur: int = 0) -> np.ndarray:
    """A textured grey scene around ``brightness``; ``blur``: a Gaussian kernel size (a defocused lens)."""
    img = np.clip(RNG.normal(brightness, 25, (120, 160)), 0, 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    if blur:
        img = cv2.GaussianBlur(img, (blur, blur), 0)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def reference(n: int = 80, with_detections: float = 0.5) -> dict:
    stats = [image_stats(scene(RNG.normal(100, 8))) for _ in range(n)]
    return {**{k: summarize([s[k] for s in stats]) for k in ("brightness", "contrast", "sharpness")},
            "images_with_detections": with_detections, "scores": summarize(list(RNG.uniform(0.5, 0.9, 50)))}


def feed(watch: DriftWatch, n: int, brightness: float = 100.0, blur: int = 0, detect: float = 0.5) -> None:
    for i in range(n):
        spread = int((i + 1) * detect) > int(i * detect)  # detections spread evenly over the parts
        watch.observe(scene(RNG.normal(brightness, 8), blur), [0.7] if spread else [])


def test_image_statistics_are_stable_and_sized_independently() -> None:
    a = image_stats(scene(100))
    big = cv2.resize(scene(100), (640, 480), interpolation=cv2.INTER_NEAREST)
    b = image_stats(big)
    assert 90 < a["brightness"] < 110 and abs(a["brightness"] - b["brightness"]) < 5
    assert image_stats(scene(100, blur=15))["sharpness"] < a["sharpness"] / 3
    assert image_stats(scene(100)[:, :, 0].astype(np.uint16) << 8)["brightness"] == pytest.approx(a["brightness"], abs=1)


def test_same_images_no_alarm_then_lighting_change_then_recovery() -> None:
    watch = DriftWatch(reference(), window=60, min_parts=30)
    feed(watch, 60)
    st = watch.status()
    assert st["alarm"] is False and st["reference"] == "the model's validation images"
    assert abs(st["effects"]["brightness"]) < 1.0
    feed(watch, 60, brightness=160)  # a lamp changed
    st = watch.status()
    assert st["alarm"] is True and "brightness" in st["detail"] and st["effects"]["brightness"] > 3
    feed(watch, 60)
    assert watch.status()["alarm"] is False


def test_a_defocused_lens_and_a_detection_rate_change_are_seen() -> None:
    watch = DriftWatch(reference(), window=60, min_parts=30)
    feed(watch, 60, blur=15)
    st = watch.status()
    assert st["alarm"] and "sharpness" in st["detail"] and st["effects"]["sharpness"] < -1
    watch = DriftWatch(reference(with_detections=0.1), window=100, min_parts=50)
    feed(watch, 100, detect=0.6)  # six times the reference's share of parts with a detection
    st = watch.status()
    assert st["alarm"] and "images_with_detections" in st["detail"]


def test_without_model_statistics_the_first_parts_are_the_reference() -> None:
    watch = DriftWatch(None, window=40, warmup=50, min_parts=20)
    feed(watch, 30)
    assert watch.status()["detail"] == "collecting the reference (30/50 parts)"
    feed(watch, 20)
    assert watch.status()["reference"] == "the first 50 parts"
    feed(watch, 40)
    assert not watch.status()["alarm"]
    feed(watch, 40, brightness=40)
    assert watch.status()["alarm"]


def test_the_line_reports_drift_in_health_and_metrics(model: Path, tmp_path: Path) -> None:  # noqa: F811
    from edgevision.line.config import load_line_config
    from edgevision.line.http import _metrics_text
    from edgevision.line.pipeline import Line

    cfg = load_line_config(write_config(tmp_path, model, drift={"warmup": 10, "window": 10, "min_parts": 10}))
    line = Line(cfg, sinks=[])
    assert line.drift is not None and line.drift.source == "the first 10 parts"  # the test model has no statistics
    for i in range(10):
        cv2.imwrite(str(tmp_path / "in" / f"a_{i:03d}.png"), scene(100))
    for i in range(10):
        cv2.imwrite(str(tmp_path / "in" / f"b_{i:03d}.png"), scene(200))
    now = time.time()
    for i, p in enumerate(sorted((tmp_path / "in").glob("*.png"))):
        import os

        os.utime(p, (now - 100 + i, now - 100 + i))
    line.run(threading.Event(), until_idle=True)
    healthy, detail = line.healthy()
    assert not healthy and "drift: brightness" in detail
    text = _metrics_text(line.status()).decode()
    assert "edgevision_line_drift_alarm 1.0" in text and 'edgevision_line_drift_shift{stat="brightness"}' in text
