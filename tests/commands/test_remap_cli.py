"""``edgevision remap`` through the real CLI: written dataset, label map, table, errors, source untouched."""

from __future__ import annotations

import json
from pathlib import Path

from edgevision.convert import read_dataset
from tests.helpers import run_cli, tree_digest
from tests.test_cli import assert_one_line_error, make_coco


def mapping(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "map.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def table_rows(stdout: str) -> list[list[str]]:
    return [[x.strip() for x in ln.split("│")[1:-1]] for ln in stdout.splitlines() if "│" in ln]


def test_remap_rename_writes_same_format_and_keeps_source(tmp_path: Path) -> None:
    src = make_coco(tmp_path / "src")  # crack (id 3): 1 object, squat (id 7): 1 object
    before = tree_digest(tmp_path / "src")
    res = run_cli("remap", src, tmp_path / "out", "--map", mapping(tmp_path, "map: {crack: fissure}\n"))
    assert res.returncode == 0, res.stderr
    rows = table_rows(res.stdout)
    assert ["0", "crack", "1", "->", "0", "fissure"] in rows and ["1", "squat", "1", "->", "1", "squat"] in rows
    out = read_dataset(tmp_path / "out")
    assert out.format == "coco" and out.dataset.labels.names == ["fissure", "squat"]
    cats = json.loads(next((tmp_path / "out").rglob("*.json")).read_text())["categories"]
    assert [(c["id"], c["name"]) for c in cats] == [(3, "fissure"), (7, "squat")]  # source ids kept on a rename
    copied = list((tmp_path / "out").rglob("img 0.jpg"))
    assert len(out.dataset) == 3 and len(copied) == 1 and not copied[0].is_symlink()  # --images copy
    assert tree_digest(tmp_path / "src") == before


def test_remap_merge_drop_order_to_yolo(tmp_path: Path) -> None:
    src = make_coco(tmp_path / "src")
    m = mapping(tmp_path, "map: {crack: defect, squat: null}\norder: [defect]\n")
    res = run_cli("remap", src, tmp_path / "out", "--map", m, "--from", "coco", "--to", "yolo", "--images", "symlink")
    assert res.returncode == 0, res.stderr
    assert ["1", "squat", "1", "->", "", "dropped"] in table_rows(res.stdout)
    assert "dropped 1 object(s); 1 image(s) lost all their objects and are now background images" in res.stderr
    out = read_dataset(tmp_path / "out", "yolo").dataset
    assert out.labels.names == ["defect"] and out.num_objects == 1 and len(out) == 3
    assert sum(r.is_background for r in out.images) == 2
    assert any(p.is_symlink() for p in (tmp_path / "out").rglob("*.jpg"))


def test_remap_existing_output_needs_overwrite(tmp_path: Path) -> None:
    src = make_coco(tmp_path / "src")
    m = mapping(tmp_path, "map: {}\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert_one_line_error(run_cli("remap", src, tmp_path / "out", "--map", m), "already exists", "--overwrite")
    assert (tmp_path / "out" / "keep.txt").exists()
    res = run_cli("remap", src, tmp_path / "out", "--map", m, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "out" / "keep.txt").exists()


def test_remap_unknown_class_is_one_line_with_suggestion_and_no_output(tmp_path: Path) -> None:
    src = make_coco(tmp_path / "src")
    res = run_cli("remap", src, tmp_path / "out", "--map", mapping(tmp_path, "map: {crak: defect}\n"))
    assert_one_line_error(res, "mapping 'map': unknown class 'crak'", "Did you mean 'crack'?")
    assert not (tmp_path / "out").exists()


def test_remap_bad_mapping_key_is_one_line(tmp_path: Path) -> None:
    src = make_coco(tmp_path / "src")
    res = run_cli("remap", src, tmp_path / "out", "--map", mapping(tmp_path, "mapping: {crack: defect}\n"))
    assert_one_line_error(res, "map.yaml: unknown mapping field 'mapping'; did you mean 'map'?")
    assert not (tmp_path / "out").exists()
