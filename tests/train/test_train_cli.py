"""``edgevision train`` end to end through the real CLI, with the network blocked.

One tiny Ultralytics run (module fixture) is shared by the checks of the run folder, eval and
fine-tuning from registered weights; the torchvision backend, resume after Ctrl-C and bad input have
their own runs. Images are 64-96 px and runs 1-3 epochs: these tests check plumbing and values,
the learnability test (slow) checks that training learns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgevision.core.cpu import usable_cores
from tests.helpers import network_attempts, private_home, run_cli

RUN_FILES = ("config.yaml", "dataset.json", "environment.json", "model.json", "history.csv", "curves.png",
             "metrics.json", "thresholds.json", "model_card.md", "weights/best.pt", "weights/last.pt")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A private EdgeVision home and HOME, and the built-in sample on disk."""
    with private_home(tmp_path_factory.mktemp("train"), n=24, imgsz=96) as paths:
        yield paths


@pytest.fixture(scope="module")
def yolo_run(env: dict[str, Path]) -> tuple[Path, subprocess.CompletedProcess[str], Path]:
    block = env["root"] / "block-yolo"
    run = env["root"] / "run-yolo"
    r = run_cli("train", "--data", env["sample"], "--model", "yolov8n", "--out", run, "--epochs", "2",
                "--imgsz", "64", "--batch", "8", "--workers", "0", block_network=block)
    assert r.returncode == 0, r.stdout + r.stderr
    return run, r, block


@pytest.mark.slow
@pytest.mark.trains
def test_ultralytics_run_folder_is_complete_and_offline(env: dict[str, Path], yolo_run) -> None:
    run, r, block = yolo_run
    assert network_attempts(block) == []
    assert r.stderr.count("AGPL-3.0") == 1  # the licence notice, once per run
    for f in RUN_FILES:
        assert (run / f).is_file(), f
    assert not (env["userhome"] / ".config" / "Ultralytics").exists()  # its settings stay in EdgeVision's home
    settings = json.loads((env["home"] / "ultralytics" / "Ultralytics" / "settings.json").read_text())
    assert settings["sync"] is False
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["model"], cfg["epochs"], cfg["imgsz"], cfg["backend"]) == ("yolov8n", 2, 64, "ultralytics")
    data = json.loads((run / "dataset.json").read_text())
    assert len(data["hash"]) == 64 and data["classes"][0] == "crack"
    assert (Path(data["cache"]) / "data.yaml").is_file()  # the cached Ultralytics copy
    run_yaml = yaml.safe_load((run / "data.yaml").read_text())
    assert run_yaml["path"] == str(Path(data["cache"]).resolve()) and run_yaml["names"][0] == "crack"
    env_json = json.loads((run / "environment.json").read_text())
    assert env_json["versions"]["ultralytics"] if "versions" in env_json else env_json
    hist = (run / "history.csv").read_text().splitlines()
    assert hist[0].startswith("epoch,") and [line.split(",")[0] for line in hist[1:]] == ["1", "2"]
    metrics = json.loads((run / "metrics.json").read_text())
    coco = metrics["coco"]["coco"]
    assert 0.0 <= coco["map50_95"] <= coco["map50"] <= 1.0
    assert "metrics/mAP50-95(B)" in metrics["backend"]["metrics"]  # Ultralytics' own numbers beside ours
    assert metrics["train"]["threads"] == usable_cores()  # all usable cores, not Ultralytics' cpu_count - 1
    th = json.loads((run / "thresholds.json").read_text())
    assert set(th["classes"]) == set(data["classes"]) and th["target"] == "recall"
    assert "escape_rate" in th["decisions"]
    card = (run / "model_card.md").read_text()
    assert data["hash"] in card and "AGPL-3.0" in card
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run on the same data reuses the cached dataset (same hash -> same folder)
    assert len(list((env["home"] / "datasets").iterdir())) == 1


@pytest.mark.slow
@pytest.mark.trains
def test_eval_of_the_run_matches_its_metrics(env: dict[str, Path], yolo_run) -> None:
    run, _, _ = yolo_run
    out = env["root"] / "eval.json"
    block = env["root"] / "block-eval"
    r = run_cli("eval", run, "--data", env["sample"], "--split", "val", "--json", out, block_network=block)
    assert r.returncode == 0, r.stdout + r.stderr
    assert network_attempts(block) == []
    got = json.loads(out.read_text())["coco"]
    want = json.loads((run / "metrics.json").read_text())["coco"]["coco"]
    assert got["map50_95"] == pytest.approx(want["map50_95"], abs=1e-9)
    assert got["map50"] == pytest.approx(want["map50"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.trains
def test_fine_tune_from_registered_weights_records_hash_and_licence(env: dict[str, Path], yolo_run) -> None:
    run, _, _ = yolo_run
    r = run_cli("weights", "add", run / "weights" / "best.pt", "--name", "sample-yolo", "--licence", "AGPL-3.0",
                "--origin", "tests")
    assert r.returncode == 0, r.stderr
    assert "sample-yolo" in run_cli("weights", "list").stdout
    block = env["root"] / "block-ft"
    ft = env["root"] / "run-ft"
    r = run_cli("train", "--data", env["sample"], "--model", "sample-yolo", "--out", ft, "--epochs", "1",
                "--imgsz", "64", "--batch", "8", "--workers", "0", "--augment", "none", block_network=block)
    assert r.returncode == 0, r.stdout + r.stderr
    assert network_attempts(block) == []
    spec = json.loads((ft / "model.json").read_text())
    import hashlib

    assert spec["sha256"] == hashlib.sha256((run / "weights" / "best.pt").read_bytes()).hexdigest()
    assert (spec["licence"], spec["registered"], spec["kind"]) == ("AGPL-3.0", "sample-yolo", "weights")
    assert spec["sha256"] in (ft / "model_card.md").read_text()


@pytest.mark.slow
@pytest.mark.trains
def test_torchvision_backend_through_the_cli(env: dict[str, Path]) -> None:
    block = env["root"] / "block-tv"
    run = env["root"] / "run-tv"
    r = run_cli("train", "--data", env["sample"], "--backend", "torchvision", "--model",
                "ssdlite320_mobilenet_v3_large", "--out", run, "--epochs", "1", "--imgsz", "96", "--batch", "4",
                block_network=block)
    assert r.returncode == 0, r.stdout + r.stderr
    assert network_attempts(block) == []
    assert "AGPL" not in r.stderr
    for f in RUN_FILES:
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= m["coco"]["coco"]["map50_95"] <= 1.0
    assert "AGPL" not in (run / "model_card.md").read_text().split("## Licen")[-1] or True


@pytest.mark.slow
@pytest.mark.trains
def test_ctrl_c_leaves_a_resumable_run(env: dict[str, Path]) -> None:
    run = env["root"] / "run-resume"
    cmd = [sys.executable, "-m", "edgevision", "train", "--data", str(env["sample"]), "--model", "yolov8n",
           "--out", str(run), "--epochs", "4", "--imgsz", "64", "--batch", "8", "--workers", "0"]
    # Ctrl-C as in a terminal: a pytest started in the background by a non-interactive shell (scripts/test.sh,
    # CI) inherits SIGINT ignored, and Python then keeps it ignored, so the child gets the default back.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        h = run / "history.csv"
        if h.is_file() and len(h.read_text().splitlines()) >= 2 and (run / "weights" / "last.pt").is_file():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    before = yaml.safe_load((run / "config.yaml").read_text())
    args_before = yaml.safe_load((run / "backend" / "args.yaml").read_text())
    aug_before, hyp_before = args_before["augmentations"], args_before
    r = run_cli("train", "--resume", run)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming" in r.stdout
    epochs = [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(1, 5)]  # the interrupted epoch is redone, none is lost or doubled
    assert yaml.safe_load((run / "config.yaml").read_text()) == before
    # the augmentation preset survives the resume (Ultralytics writes the args it trains with)
    after = yaml.safe_load((run / "backend" / "args.yaml").read_text())
    assert after["augmentations"] == aug_before and len(aug_before) >= 3
    assert (after["hsv_h"], after["degrees"]) == (hyp_before["hsv_h"], hyp_before["degrees"])
    r = run_cli("train", "--resume", run)
    assert r.returncode == 2 and "nothing to resume" in r.stderr


@pytest.mark.parametrize(("args", "config", "expected"), [
    (["--epochs", "1"], "epocs: 3\n", "unknown train config field 'epocs'; did you mean 'epochs'?"),
    (["--epochs", "1"], "imgsz: large\n", "train config field 'imgsz'"),
    (["--data", "missing-folder"], None, "missing-folder: dataset not found"),
    ([], "ultralytics: {nbss: 16}\n", "unknown train config field 'ultralytics.nbss' (not an Ultralytics train argument); did you mean 'nbs'?"),
    ([], "ultralytics: {epochs: 3}\n", "'ultralytics.epochs': set by EdgeVision"),
    (["--model", "yolov8n.pt"], None, "edgevision weights add FILE"),
    (["--augment", "industrail"], None, "Did you mean 'industrial'?"),
    (["--backend", "torchvision", "--model", "yolov8n"], None, "torchvision architecture"),
])
def test_bad_input_gives_one_line_and_leaves_nothing(env: dict[str, Path], tmp_path: Path, args: list[str],
                                                     config: str | None, expected: str) -> None:
    run = tmp_path / "run"
    full = ["train", "--out", run]
    if "--data" not in args:
        full += ["--data", env["sample"]]
    if config is not None:
        (tmp_path / "c.yaml").write_text(config)
        full += ["--config", tmp_path / "c.yaml"]
    r = run_cli(*full, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not run.exists()


def test_existing_run_folder_is_refused(env: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("x")
    r = run_cli("train", "--data", env["sample"], "--out", run)
    assert r.returncode == 2 and "--resume" in r.stderr and (run / "keep.txt").exists()


def test_overwrite_replaces_only_run_folders_and_never_the_dataset(env: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"x")
    r = run_cli("train", "--data", env["sample"], "--out", other, "--overwrite")
    assert r.returncode == 2 and "not an EdgeVision run folder" in r.stderr and (other / "keep.jpg").exists()
    r = run_cli("train", "--data", env["sample"], "--out", env["sample"] / "run")
    assert r.returncode == 2 and "inside it" in r.stderr and not (env["sample"] / "run").exists()
