"""No command writes into, over or around what it reads, and none leaves partial output on a signal.

Through the real CLI in fresh processes: an output that is, lies inside or contains a folder the
dataset is read from (the annotation file's folder, an image folder, a YOLO list file's folder, the
``labels/`` beside an ``images/`` folder) is refused in one line with exit code 2 before anything is
written, whatever form the path takes (relative with ``..``, through a symlink, a symlink itself).
SIGINT, SIGTERM and SIGHUP while a command writes remove its temporary output; exit 130 / 143 / 129.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgevision.data.synth import write_synth
from tests.helpers import run_cli, tree_digest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals and symlinks")


def refused(res: subprocess.CompletedProcess[str], out: Path | str, folder: Path) -> str:
    """Exit 2 and one line that names the output, the source folder it collides with and the fix."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith(f"error: {out}: ") and "must not be the source or inside it" in line, line
    assert f" {folder.resolve()}, which the dataset is read from" in line and "; choose an output" in line, line
    return line


@pytest.fixture(scope="module")
def coco_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco") / "S"
    write_synth(root, n=16, seed=3, imgsz=64, to="coco")
    return root


@pytest.fixture
def coco(coco_template: Path, tmp_path: Path) -> Path:
    """``S/annotations/instances_<split>.json`` + ``S/images/<split>/*.png`` (a fresh copy per test)."""
    root = tmp_path / "S"
    shutil.copytree(coco_template, root)
    assert len(list((root / "images" / "train").glob("*.png"))) >= 5
    return root


# -- the issue: an annotation file as SRC protected only the file's folder ----------------------------------------
@pytest.mark.parametrize("images", ["none", "symlink", "copy"])
def test_coco_file_into_its_image_folder_with_overwrite_is_refused(coco: Path, images: str) -> None:
    before = tree_digest(coco)
    dst = coco / "images" / "train"
    res = run_cli("convert", coco / "annotations" / "instances_train.json", dst, "--from", "coco", "--to", "yolo",
                  "--overwrite", "--images", images)
    assert " is " + str(dst.resolve()) in refused(res, dst, dst)
    assert tree_digest(coco) == before, "source images changed"
    assert sorted(p.name for p in coco.parent.iterdir()) == ["S"], "something was written beside the source"


def test_inside_the_image_folder_without_overwrite_is_refused(coco: Path) -> None:
    before = tree_digest(coco)
    dst = coco / "images" / "train" / "yolo"
    res = run_cli("convert", coco / "annotations" / "instances_train.json", dst, "--to", "yolo")
    assert "is inside" in refused(res, dst, coco / "images" / "train")
    assert tree_digest(coco) == before and not dst.exists()


def test_an_output_that_contains_the_source_is_refused(coco: Path, tmp_path: Path) -> None:
    before = tree_digest(coco)
    res = run_cli("convert", coco / "annotations" / "instances_train.json", tmp_path, "--to", "yolo", "--overwrite")
    assert "it contains" in refused(res, tmp_path, coco / "annotations")  # the outermost it contains
    assert tree_digest(coco) == before


def test_relative_paths_and_symlinks_do_not_get_past(coco: Path, tmp_path: Path) -> None:
    before = tree_digest(coco)
    train = coco / "images" / "train"
    # relative, with '..', from the annotation folder
    res = run_cli("convert", "instances_train.json", "../images/val/../train", "--to", "yolo", "--overwrite",
                  cwd=coco / "annotations")
    refused(res, "../images/val/../train", train)
    # a symlinked folder on the way to the image folder
    (tmp_path / "via").symlink_to(coco / "images")
    res = run_cli("convert", coco / "annotations" / "instances_train.json", tmp_path / "via" / "train",
                  "--to", "yolo", "--overwrite", "--images", "none")
    refused(res, tmp_path / "via" / "train", train)
    # the output itself a symlink to the image folder
    (tmp_path / "dst").symlink_to(train)
    res = run_cli("convert", coco / "annotations" / "instances_train.json", tmp_path / "dst", "--to", "yolo",
                  "--overwrite")
    refused(res, tmp_path / "dst", train)
    # the source given through a symlink
    (tmp_path / "S-link").symlink_to(coco)
    res = run_cli("convert", tmp_path / "S-link" / "annotations" / "instances_train.json", train, "--to", "yolo",
                  "--overwrite")
    refused(res, train, train)
    assert tree_digest(coco) == before
    assert (tmp_path / "dst").is_symlink() and (tmp_path / "via").is_symlink()


def test_validate_out_and_json_inside_the_image_folder_are_refused(coco: Path) -> None:
    before = tree_digest(coco)
    ann = coco / "annotations" / "instances_train.json"
    fixed = coco / "images" / "train" / "fixed"
    refused(run_cli("validate", ann, "--fix", "clip", "--out", fixed), fixed, coco / "images" / "train")
    report = coco / "images" / "train" / "report.json"
    refused(run_cli("validate", ann, "--json", report), report, coco / "images" / "train")
    assert tree_digest(coco) == before and not fixed.exists() and not report.exists()


def test_predict_out_over_its_images_is_refused(coco_template: Path, tmp_path: Path) -> None:
    from tests.runtime.conftest import bbox_model, make_meta

    model = bbox_model(tmp_path / "bbox.onnx", make_meta(["defect"], size_hw=(64, 64)), score=0.9)
    images = tmp_path / "images"
    shutil.copytree(coco_template / "images", images)
    before = tree_digest(images)
    refused(run_cli("predict", model, images, "--out", images, "--overwrite"), images, images)
    pred = images / "train" / "pred"
    refused(run_cli("predict", model, images, "--out", pred), pred, images / "train")
    assert tree_digest(images) == before


@pytest.mark.parametrize("command", ["bench", "reliability"])
def test_report_out_over_the_data_is_refused_before_any_work(coco: Path, tmp_path: Path, command: str) -> None:
    from tests.runtime.conftest import bbox_model, make_meta

    model = bbox_model(tmp_path / "bbox.onnx", make_meta(["crack"], size_hw=(64, 64)), score=0.9)
    before = tree_digest(coco)
    data = coco / "annotations" / "instances_val.json"
    for out in (coco, coco / "annotations" / "report"):
        extra = ["--reference", model] if command == "reliability" else []
        res = run_cli(command, model, "--data", data, "--out", out, "--overwrite", *extra)
        refused(res, out, coco / "annotations")
    assert tree_digest(coco) == before


# -- YOLO list files: images, labels and lists in three places ---------------------------------------------------
@pytest.fixture
def yolo_lists(tmp_path: Path) -> dict[str, Path]:
    """``Y/data.yaml`` -> ``lists/train.txt`` -> ``pool/images/*.png`` with labels in ``pool/labels/``."""
    syn = tmp_path / "syn"
    write_synth(syn, n=8, seed=1, imgsz=64, to="yolo")
    pool, lists, y = tmp_path / "pool", tmp_path / "lists", tmp_path / "Y"
    for d in (pool / "images", pool / "labels", lists, y):
        d.mkdir(parents=True)
    names = []
    for img in sorted(syn.glob("images/*/*.png")):
        shutil.copyfile(img, pool / "images" / img.name)
        shutil.copyfile(syn / "labels" / img.parent.name / f"{img.stem}.txt", pool / "labels" / f"{img.stem}.txt")
        names.append(str(pool / "images" / img.name))
    (lists / "train.txt").write_text("\n".join(names) + "\n")
    (y / "data.yaml").write_text(f"train: {lists / 'train.txt'}\nval: {lists / 'train.txt'}\n"
                                 "names: [crack, squat, missing_fastener, scratch, pit]\n")
    (tmp_path / "map.yaml").write_text("map: {crack: defect, squat: defect}\nunmapped: keep\n")
    return {"yaml": y / "data.yaml", "pool": pool, "lists": lists, "map": tmp_path / "map.yaml"}


@pytest.mark.parametrize(("command", "target", "relation"), [
    ("convert", "labels", "is"),
    ("convert", "lists", "is inside"),
    ("split", "lists", "is inside"),
    ("remap", "labels", "is"),
    ("tile", "labels", "is"),
    ("validate", "lists", "is inside"),
    ("stats", "labels", "is"),
])
def test_yolo_list_file_sources_are_protected(yolo_lists: dict[str, Path], command: str, target: str,
                                              relation: str) -> None:
    if command == "stats":
        pytest.importorskip("matplotlib")
    pool, lists = yolo_lists["pool"], yolo_lists["lists"]
    before = {**tree_digest(pool), **{f"lists/{k}": v for k, v in tree_digest(lists).items()}}
    folder = pool / "labels" if target == "labels" else lists
    dst = folder if relation == "is" else folder / "out"
    src = yolo_lists["yaml"]
    args: list[str | Path] = {
        "convert": ["convert", src, dst, "--to", "coco", "--overwrite"],
        "split": ["split", src, dst, "--overwrite"],
        "remap": ["remap", src, dst, "--map", yolo_lists["map"], "--overwrite"],
        "tile": ["tile", src, dst, "--size", "32", "--overwrite"],
        "validate": ["validate", src, "--out", dst, "--overwrite"],
        "stats": ["stats", src, "--plots", dst],
    }[command]
    line = refused(run_cli(*args), dst, folder)
    assert f" {relation} {folder.resolve()}," in line, line
    assert {**tree_digest(pool), **{f"lists/{k}": v for k, v in tree_digest(lists).items()}} == before
    assert relation == "is" or not dst.exists()


def test_list_file_dataset_still_converts_elsewhere(yolo_lists: dict[str, Path], tmp_path: Path) -> None:
    res = run_cli("convert", yolo_lists["yaml"], tmp_path / "out", "--to", "coco")
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "out" / "annotations" / "instances_train.json").read_text())
    assert len(doc["images"]) == 8 and len(list((tmp_path / "out").rglob("*.png"))) == 8


# -- signals: the temporary output goes, the exit code says which signal -----------------------------------------
@pytest.fixture(scope="module")
def big_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 images (hard links of 60 small ones): converting takes a couple of seconds."""
    base = tmp_path_factory.mktemp("big")
    write_synth(base / "syn", n=60, seed=2, imgsz=64, to="yolo")
    root = base / "bigy"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for img in sorted((base / "syn").glob("images/*/*.png")):
        label = (base / "syn" / "labels" / img.parent.name / f"{img.stem}.txt").read_bytes()
        for k in range(50):
            name = f"{img.stem}_{k:02d}"
            try:
                os.link(img, root / "images" / "train" / f"{name}.png")
            except OSError:
                shutil.copyfile(img, root / "images" / "train" / f"{name}.png")
            (root / "labels" / "train" / f"{name}.txt").write_bytes(label)
    (root / "data.yaml").write_text("train: images/train\nval: images/train\n"
                                    "names: [crack, squat, missing_fastener, scratch, pit]\n")
    return root


def _interrupt(args: list[str], staging_glob: str, parent: Path, sig: int) -> subprocess.CompletedProcess[str]:
    """Run the CLI, send ``sig`` as soon as a temporary output matching ``staging_glob`` appears in ``parent``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1", TERM="dumb")
    # a pytest started in the background by a non-interactive shell inherits SIGINT (and under nohup
    # SIGHUP) ignored, and Python keeps it ignored: the child gets the defaults back
    proc = subprocess.Popen([sys.executable, "-m", "edgevision", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not list(parent.glob(staging_glob)):
            time.sleep(0.005)
        assert proc.poll() is None, ("finished before it could be interrupted", proc.communicate())
        assert list(parent.glob(staging_glob)), "no temporary output appeared in 120 s"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_during_convert_removes_the_temporary_output(big_yolo: Path, tmp_path: Path, sig: int,
                                                              code: int) -> None:
    dst = tmp_path / "dst"
    res = _interrupt(["convert", str(big_yolo), str(dst), "--to", "coco"], ".dst.*.tmp", tmp_path, sig)
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[-1] == f"interrupted by {signal.Signals(sig).name}", res.stderr
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == [], "partial output left behind"


def test_a_signal_while_synth_renders_removes_its_staging(tmp_path: Path) -> None:
    """Not only `atomic_dir`: synth renders into a staging folder before writing the dataset."""
    res = _interrupt(["synth", str(tmp_path / "dst"), "--n", "300"], ".dst.*", tmp_path, signal.SIGTERM)
    assert res.returncode == 143, (res.returncode, res.stderr)
    assert list(tmp_path.iterdir()) == [], "partial output left behind"
