"""``edgevision demo --quick``: every stage of the pipeline, each through its real command, network blocked.

That the sample is learnable (mAP50 >= 0.3 for a nano YOLO from scratch) is held by
tests/train/test_learnability.py; this test checks the wiring.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import network_attempts, run_cli


@pytest.mark.slow
@pytest.mark.trains
def test_quick_demo_runs_every_stage_offline(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    pytest.importorskip("albumentations")
    work = tmp_path / "demo"
    r = run_cli("demo", "--work", work, "--quick", block_network=tmp_path / "net", timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    for i, stage in enumerate(("synth", "validate", "stats", "split", "convert", "train", "eval", "export",
                               "quantize", "bench", "reliability"), start=1):
        assert f"{i}/11 {stage}" in r.stdout, stage
    text = " ".join(r.stdout.split())
    rel = json.loads((work / "reliability" / "reliability.json").read_text())
    if rel["verdict"] == "PASS":
        assert "demo OK: every stage ran and the model passed the release gate" in text
    else:  # a FAIL is stated plainly, never followed by "demo OK"
        assert "demo OK" not in text and "did not pass the release gate" in text and "expected with --quick" in text
    assert "release gate:" in text
    # the operating points the line would decide with: each class's threshold (never below 0.05) and its rule
    names = json.loads((work / "run" / "thresholds.json").read_text())["classes"]
    assert all(t >= 0.05 for t in names.values()), names
    assert "operating points (per class: recall >= 0.9" in text
    for name in names:
        assert f"{name} " in text
    assert "on the test split at these operating points: escape rate" in text and "95% CI" in text
    assert "a random-noise image:" in text
    assert f"reliability report: {work / 'reliability' / 'reliability.html'}" in " ".join(r.stdout.split())
    log = (work / "commands.log").read_text()
    for cmd in ("edgevision train", "edgevision eval", "edgevision export", "edgevision quantize", "edgevision bench",
                "edgevision reliability"):
        assert f"$ {cmd} " in log, cmd
    assert (work / "model.onnx").is_file() and (work / "model.int8.onnx").is_file()
    bench = json.loads((work / "bench" / "bench.json").read_text())
    assert [m["name"] for m in bench["models"]] == ["model.onnx", "model.int8.onnx"]
    assert [m["precision"] for m in bench["models"]] == ["fp32", "int8"]
    assert rel["model"]["name"] == "model.int8.onnx" and rel["reference"]["name"] == "model.onnx"
    assert rel["gate"]["name"] == "default" and set(rel["suites"]) == {"soak", "robustness", "determinism",
                                                                       "bad_input", "concurrency"}
    assert (work / "reliability" / "junit.xml").is_file() and (work / "bench" / "bench.html").is_file()
    assert network_attempts(tmp_path / "net") == []


def test_demo_without_the_model_extras_says_what_to_install(tmp_path: Path) -> None:
    """The model stages need torch / onnxruntime: a base install is told in one line (simulated by hiding torch)."""
    import os
    import subprocess
    import sys

    code = ("import importlib.util, sys\n"
            "real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda name, *a: None if name == 'torch' else real(name, *a)\n"
            "sys.argv = ['edgevision', 'demo', '--work', sys.argv[1]]\n"
            "from edgevision.cli import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "demo")], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, COLUMNS="200", NO_COLOR="1"))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "torch (train extra)" in lines[0] and "make demo" in lines[0]
    assert "--data-only" in lines[0] and not (tmp_path / "demo").exists()
