"""benchmarks/serve_latency.py end to end on the bbox model: real server processes, real HTTP, small counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.runtime.conftest import bbox_model, make_meta

pytest.importorskip("fastapi")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_latency.py"


@pytest.mark.slow
def test_serve_latency_smoke(tmp_path: Path) -> None:
    model = bbox_model(tmp_path / "model.onnx", make_meta(["scratch"], size_hw=(64, 64)), score=0.9)
    images = tmp_path / "images" / "val"
    images.mkdir(parents=True)
    for i in range(4):
        img = np.full((80, 100, 3), 20, np.uint8)
        img[5 + i:30 + i, 10:50] = 255
        cv2.imwrite(str(images / f"p{i}.png"), img)
    out = tmp_path / "r.json"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    r = subprocess.run([sys.executable, str(SCRIPT), "--model", str(model), "--images", str(tmp_path / "images"),
                        "--n-images", "4", "--rounds", "2", "--threads", "1", "--splits", "1x1,2x1", "--clients", "2",
                        "--seconds", "1", "--repeats", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, TMPDIR=str(tmpdir)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not list(tmpdir.glob("serve-bench-*"))  # the request bodies' folder is removed at the end
    doc = json.loads(out.read_text())["models"]["model.onnx"]
    assert doc["direct"]["n"] == 8 and doc["http"]["n"] == 8  # 4 images x 2 rounds each
    for split in ("1x1", "2x1"):
        assert doc[split]["images_per_s"] > 0 and doc[split]["non_200"] == 0
    assert "service cost" in r.stdout
