"""``edgevision validate`` through the real CLI: tables, --strict exit codes, --json, --fix with --out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevision.convert import read_dataset
from tests.data.test_validate import make_bad_coco, save, smooth_image
from tests.helpers import run_cli, tree_digest

H, W = 64, 96


def make_yolo(root: Path, *, leak: bool = True, outside: bool = True) -> Path:
    """A YOLO dataset with train/val; optionally a box partly and one entirely outside ``train/a.png``,
    and ``val/a_leak.png``, a byte copy of ``train/a.png`` (leakage)."""
    def put(split: str, name: str, seed: int, lines: str) -> None:
        save(root / "images" / split / f"{name}.png", smooth_image(seed, (H, W)))
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split / f"{name}.txt").write_text(lines)

    put("train", "a", 1, "0 0.5 0.5 0.25 0.25\n" + ("0 0.95 0.5 0.2 0.2\n1 1.2 0.5 0.1 0.1\n" if outside else ""))
    put("train", "b", 2, "1 0.5 0.5 0.3 0.3\n")
    put("val", "c", 3, "0 0.4 0.4 0.2 0.2\n")
    if leak:
        put("val", "a_leak", 1, "0 0.5 0.5 0.25 0.25\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [crack, pit]\n")
    return root


@pytest.fixture
def yolo(tmp_path: Path) -> Path:
    return make_yolo(tmp_path / "src")


def test_report_table_json_and_strict(yolo: Path, tmp_path: Path) -> None:
    before = tree_digest(yolo)
    res = run_cli("validate", yolo, "--strict", "--json", tmp_path / "v.json")
    assert res.returncode == 1, (res.stdout, res.stderr)
    for text in ("duplicate_image", "box_outside", "error", "warning", "2 error(s)"):
        assert text in res.stdout
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["schema"] == "edgevision.validate/1" and doc["format"] == "yolo"
    assert doc["dataset"] == str(yolo) and set(doc) == {"schema", "dataset", "format", "summary", "findings"}
    got = sorted((f["code"], f["severity"], Path(f["where"].split(":")[0]).name) for f in doc["findings"])
    assert got == [("box_outside", "error", "a.png"), ("box_outside", "warning", "a.png"),
                   ("duplicate_image", "error", "a_leak.png")]
    assert doc["summary"]["errors"] == 2 and doc["summary"]["ok"] is False
    assert tree_digest(yolo) == before, "validate modified the source"


def test_strict_passes_on_a_clean_dataset(tmp_path: Path) -> None:
    src = make_yolo(tmp_path / "clean", leak=False, outside=False)
    res = run_cli("validate", src, "--strict", "--from", "yolo")
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "no errors" in res.stdout and "(none)" in res.stdout


def check_fixed(out: Path, objects: int) -> None:
    ds = read_dataset(out).dataset
    assert ds.num_objects == objects and len(ds) == 4
    a = next(r for r in ds.images if Path(r.name).name == "a.png")
    assert (a.boxes[:, 2] <= W + 1e-6).all() and (a.boxes >= 0).all()


def test_fix_clip_writes_a_repaired_copy_in_the_input_format(yolo: Path, tmp_path: Path) -> None:
    before = tree_digest(yolo)
    out = tmp_path / "fixed"
    res = run_cli("validate", yolo, "--fix", "clip", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "1 box(es) clipped, 1 dropped, in 1 image(s)" in res.stdout and (out / "data.yaml").is_file()
    check_fixed(out, 5)
    a = next(r for r in read_dataset(out).dataset.images if Path(r.name).name == "a.png")
    np.testing.assert_allclose(sorted(a.boxes.tolist()), [[36, 24, 60, 40], [81.6, 25.6, 96, 38.4]], atol=1e-5)
    assert tree_digest(yolo) == before, "--fix modified the source"
    again = run_cli("validate", out, "--strict", "--no-duplicates")
    assert again.returncode == 0, again.stdout  # nothing outside any more
    res = run_cli("validate", yolo, "--out", out)
    assert res.returncode == 2 and "already exists" in res.stderr and "Traceback" not in res.stderr


def test_fix_drop_to_another_format(yolo: Path, tmp_path: Path) -> None:
    res = run_cli("validate", yolo, "--fix", "drop", "--out", tmp_path / "coco", "--to", "coco")
    assert res.returncode == 0, res.stderr
    assert "0 box(es) clipped, 2 dropped, in 1 image(s)" in res.stdout
    check_fixed(tmp_path / "coco", 4)


@pytest.mark.parametrize(("args", "message"), [
    (["{tmp}/nope"], "does not exist"),
    (["{src}", "--fix", "cut"], "--fix: expected keep, clip or drop"),
    (["{src}", "--out", "{src}/inside"], "must not be the source or inside it"),
])
def test_bad_input_is_one_line_and_exit_2(yolo: Path, tmp_path: Path, args: list[str], message: str) -> None:
    res = run_cli("validate", *[a.format(tmp=tmp_path, src=yolo) for a in args])
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr


def test_every_code_reaches_the_cli(tmp_path: Path) -> None:
    path = make_bad_coco(tmp_path / "bad")
    res = run_cli("validate", path, "--json", tmp_path / "v.json", "--show", "3")
    assert res.returncode == 0  # errors, but no --strict
    codes = {f["code"] for f in json.loads((tmp_path / "v.json").read_text())["findings"]}
    assert codes == {"box_outside", "box_empty", "box_inverted", "box_nan", "class_unknown", "box_small",
                     "image_missing", "image_corrupt", "size_mismatch", "exif_rotation"}
    assert "first 3 of 12 findings" in res.stdout and "8 error(s)" in res.stdout


def test_help_states_the_near_duplicate_threshold() -> None:
    from edgevision.commands.validate import command

    assert "Hamming distance <= 6 of 64" in (command.__doc__ or "").replace("\n", " ").replace("    ", "")
