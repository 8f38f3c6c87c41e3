"""``edgevision split`` through the real CLI: outputs, recorded splits, report, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevision.convert import read_dataset, write_dataset
from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.data.synth import synth
from tests.formats.conformance import write_image
from tests.helpers import run_cli, tree_digest


def one_line_error(res, *fragments: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


@pytest.fixture(scope="module")
def synth_yolo(tmp_path_factory) -> Path:
    """A real YOLO dataset of 40 synthetic 64-px images (already split 80/10/10 by the generator)."""
    root = tmp_path_factory.mktemp("synth")
    ds = synth(root / "render", n=40, seed=0, imgsz=64)
    write_dataset(ds, root / "yolo", "yolo")
    return root / "yolo"


def test_split_writes_yolo_with_the_recorded_splits(synth_yolo, tmp_path):
    before = tree_digest(synth_yolo)
    out, report = tmp_path / "out", tmp_path / "reports" / "split.json"
    res = run_cli("split", synth_yolo, out, "--ratios", "0.6,0.2,0.2", "--seed", "5",
                  "--group", r"^[a-z]+_(\d+)[0-4]\.png$", "--json", report)
    assert res.returncode == 0, res.stderr
    assert tree_digest(synth_yolo) == before  # the source is never modified
    doc = json.loads(report.read_text())
    back = read_dataset(out, "yolo").dataset
    assert sorted(back.splits) == ["test", "train", "val"]
    got = {r.name: r.split for r in back.images}
    assert len(got) == 40 and {s: sum(v == s for v in got.values()) for s in doc["names"]} == doc["images"]
    # the same split as the library gives on the same input (the CLI adds nothing of its own)
    from edgevision.data.split import split_dataset

    lib = split_dataset(read_dataset(synth_yolo, "yolo").dataset, (0.6, 0.2, 0.2), seed=5,
                        group=r"^[a-z]+_(\d+)[0-4]\.png$")
    assert got == {r.name: r.split for r in lib.dataset.images}
    # groups: names ..._0000-0004 share key "0", ..._0005-0009 are unmatched singles
    keys: dict[str, set[str]] = {}
    for name, split in got.items():
        if int(name[-5]) < 5:
            keys.setdefault(name[-8:-5], set()).add(split)  # type: ignore[arg-type]
    assert len(keys) == 4 and all(len(v) == 1 for v in keys.values())
    assert doc["groups"]["unmatched"] == 20 and doc["groups"]["groups"] == 24
    assert doc["replaced"] == {"test": 4, "train": 32, "val": 4}
    assert doc["format"] == "yolo" and doc["seed"] == 5
    # class counts in the report match the written files
    for s in doc["names"]:
        recs = back.split(s)
        assert doc["objects"][s] == sum(len(r) for r in recs)
        assert doc["class_images"][s]["crack"] == sum(bool((r.class_ids == 0).any()) for r in recs)
    # images were copied, byte for byte
    src_bytes = {p.name: p.read_bytes() for p in (synth_yolo / "images").rglob("*.png")}
    assert {p.name: p.read_bytes() for p in (out / "images").rglob("*.png")} == src_bytes
    # what people read
    assert "existing splits replaced (were: test 4, train 32, val 4)" in res.stdout
    assert "per-split class counts" in res.stdout and "train (60%)" in res.stdout
    for name in ("crack", "squat", "missing_fastener", "scratch", "pit"):
        assert name in res.stdout
    assert "groups: 24 from --group" in res.stdout and "20 image(s) matched no group key" in res.stdout


def test_split_two_ratios_to_coco_and_overwrite(synth_yolo, tmp_path):
    out = tmp_path / "coco"
    res = run_cli("split", synth_yolo, out, "--ratios", "0.75,0.25", "--to", "coco", "--images", "none")
    assert res.returncode == 0, res.stderr
    back = read_dataset(out, "coco").dataset
    assert sorted(back.splits) == ["train", "val"] and len(back.split("val")) == 10
    assert "every class with objects reached every split" in res.stdout
    again = run_cli("split", synth_yolo, out, "--ratios", "0.75,0.25", "--to", "coco")
    one_line_error(again, "already exists", "--overwrite")
    res = run_cli("split", synth_yolo, out, "--ratios", "0.5,0.5", "--to", "coco", "--overwrite", "--seed", "1")
    assert res.returncode == 0, res.stderr
    assert len(read_dataset(out, "coco").dataset.split("val")) == 20


def test_unreachable_class_is_printed(tmp_path):
    """A class in 2 images cannot reach 3 splits: the CLI says which split it misses and why."""
    recs = []
    for i in range(12):
        path = write_image(tmp_path / "render" / f"img_{i:02d}.png", (24, 32), seed=i)
        cls = [1] if i < 2 else [0]
        recs.append(ImageRecord(path.name, (24, 32), boxes=np.array([[2.0, 3.0, 12.0, 15.0]]), class_ids=cls,
                                path=path))
    write_dataset(Dataset(LabelMap(["dent", "rare_pit"]), recs), tmp_path / "src", "yolo")
    report = tmp_path / "r.json"
    res = run_cli("split", tmp_path / "src", tmp_path / "out", "--json", report)
    assert res.returncode == 0, res.stderr
    assert "1 class/split pair(s) could not be filled" in res.stdout
    line = next(ln for ln in res.stdout.splitlines() if "rare_pit ->" in ln)
    assert "[too_few_images]" in line and "'rare_pit' is in 2 image(s); 3 splits need at least 3" in line
    (u,) = json.loads(report.read_text())["unreachable"]
    assert u["class_name"] == "rare_pit" and u["reason"] == "too_few_images" and u["split"] in line


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--ratios", "0.8,0.1,0.2"], ["--ratios: expected ratios summing to 1", "got 0.8,0.1,0.2 = 1.1"]),
        (["--group", "(coil"], ["--group: '(coil' is not a valid regular expression"]),
        (["--images", "move"], ["--images: expected copy, symlink or none, got 'move'"]),
    ],
)
def test_bad_options_are_one_line_errors(synth_yolo, tmp_path, args, fragments):
    res = run_cli("split", synth_yolo, tmp_path / "out", *args)
    one_line_error(res, *fragments)
    assert not (tmp_path / "out").exists()


def test_output_inside_the_source_is_refused(synth_yolo):
    res = run_cli("split", synth_yolo, synth_yolo / "split")
    one_line_error(res, "must not be the source or inside it")
    assert not (synth_yolo / "split").exists()
