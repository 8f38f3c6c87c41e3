"""The real CLI in a subprocess: outputs, one-line errors, exit codes, atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevision import __version__
from tests.formats.conformance import write_image
from tests.helpers import run_cli, tree_digest


def make_coco(root: Path, *, bad_box: bool = False) -> Path:
    """A small real COCO dataset: 3 images (one background), 2 categories with ids 3 and 7."""
    images = root / "images"
    for i, size in enumerate([(40, 60), (50, 50), (30, 20)]):
        write_image(images / f"img {i}.jpg", size, seed=i)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [1, 2, 30, 40], "area": 1200, "iscrowd": 0},
    ]
    if bad_box:
        anns.append({"id": 3, "image_id": 2, "category_id": 7, "bbox": [10, 10, -5, 4], "area": 0, "iscrowd": 0})
    coco = {
        "images": [
            {"id": 1, "file_name": "img 0.jpg", "height": 40, "width": 60},
            {"id": 2, "file_name": "img 1.jpg", "height": 50, "width": 50},
            {"id": 3, "file_name": "img 2.jpg", "height": 30, "width": 20},
        ],
        "annotations": anns,
        "categories": [{"id": 3, "name": "crack"}, {"id": 7, "name": "squat"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def assert_one_line_error(res, *fragments: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def test_version_and_formats():
    res = run_cli("--version")
    assert res.returncode == 0 and __version__ in res.stdout
    res = run_cli("formats")
    assert res.returncode == 0
    for name in ("coco", "voc", "yolo", "labelme", "cvat", "masks", "rle-csv", "textbox", "railsem19"):
        assert name in res.stdout


def test_convert_auto_detects_and_writes_yolo(tmp_path):
    src = make_coco(tmp_path / "src")
    before = tree_digest(tmp_path / "src")
    res = run_cli("convert", src, tmp_path / "out", "--to", "yolo")
    assert res.returncode == 0, res.stderr
    assert "detected format coco" in res.stdout
    data_yaml = (tmp_path / "out" / "data.yaml").read_text()
    assert "crack" in data_yaml and "squat" in data_yaml
    labels = sorted((tmp_path / "out").rglob("*.txt"))
    assert len(labels) == 3 and sum(1 for p in labels if p.read_text().strip() == "") == 1
    assert tree_digest(tmp_path / "src") == before, "the source was modified"


def test_bad_box_is_one_line_error_and_no_output(tmp_path):
    src = make_coco(tmp_path / "src", bad_box=True)
    res = run_cli("convert", src, tmp_path / "out", "--to", "voc")
    assert_one_line_error(res, "instances.json")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"], "temporary output left behind"


def test_on_error_skip_reports_and_continues(tmp_path):
    src = make_coco(tmp_path / "src", bad_box=True)
    res = run_cli("convert", src, tmp_path / "out", "--to", "coco", "--on-error", "skip")
    assert res.returncode == 0, res.stderr
    assert "skipped 1 item" in res.stderr
    written = json.loads(next((tmp_path / "out").rglob("*.json")).read_text())
    assert len(written["images"]) == 2


def test_truncated_json_one_line(tmp_path):
    src = make_coco(tmp_path / "src")
    src.write_text(src.read_text()[:50])
    res = run_cli("convert", src, tmp_path / "out", "--to", "yolo", "--from", "coco")
    assert_one_line_error(res, "instances.json", "malformed JSON")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--to", "yolov"], ["unknown format 'yolov'", "Did you mean 'yolo'"]),
        (["--to", "yolo", "--from", "cocoo"], ["unknown format 'cocoo'", "coco"]),
        (["--to", "labelme"], ["cannot be written"]),
        (["--to", "yolo", "--images", "move"], ["--images", "copy, symlink or none"]),
        (["--to", "yolo", "--recipe", "neu-dett"], ["unknown recipe", "neu-det"]),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, fragments):
    src = make_coco(tmp_path / "src")
    res = run_cli("convert", src, tmp_path / "out", *args)
    assert_one_line_error(res, *fragments)
    assert not (tmp_path / "out").exists()


def test_existing_output_and_output_inside_source(tmp_path):
    src = make_coco(tmp_path / "src")
    (tmp_path / "out").mkdir()
    assert_one_line_error(run_cli("convert", src, tmp_path / "out", "--to", "yolo"), "--overwrite")
    res = run_cli("convert", tmp_path / "src", tmp_path / "src" / "inner", "--to", "yolo")
    assert_one_line_error(res, "source")
    res = run_cli("convert", src, tmp_path / "out", "--to", "yolo", "--overwrite")
    assert res.returncode == 0 and (tmp_path / "out" / "data.yaml").exists()


def test_missing_source_is_one_line(tmp_path):
    assert_one_line_error(run_cli("convert", tmp_path / "nope", tmp_path / "out", "--to", "yolo"), "nope")


def test_recipes_list_and_show():
    res = run_cli("recipes", "list")
    assert res.returncode == 0
    for name in ("neu-det", "gc10-det", "pku-market-pcb", "deeppcb", "mvtec-ad", "magnetic-tile", "severstal", "railsem19"):
        assert name in res.stdout
    res = run_cli("recipes", "show", "neu-det")
    assert res.returncode == 0 and "Song" in res.stdout and "voc" in res.stdout


def test_synth_cli_is_deterministic(tmp_path):
    for name in ("a", "b"):
        res = run_cli("synth", tmp_path / name, "--n", "12", "--seed", "3", "--to", "coco")
        assert res.returncode == 0, res.stderr
    a = tree_digest(tmp_path / "a")
    b = tree_digest(tmp_path / "b")
    assert a == b and len(a) >= 13


def test_demo_runs(tmp_path):
    res = run_cli("demo", "--work", tmp_path / "demo", "--n", "24", "--data-only")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "demo OK" in res.stdout
    assert "validate: 0 errors" in res.stdout and "every class in every split" in res.stdout
    for stage in ("split-yolo", "1-coco", "2-voc", "3-yolo"):
        assert stage in res.stdout
    for folder in ("sample-yolo", "split-yolo", "1-coco", "2-voc", "3-yolo"):
        assert (tmp_path / "demo" / folder).is_dir()


def test_doctor_passes_in_test_env():
    res = run_cli("doctor")
    assert res.returncode == 0, res.stdout
    assert "opencv-python-headless" in res.stdout


def test_recipe_convert_warns_about_research_only_licence(tmp_path):
    from tests.fixtures_recipes import build_neu_det

    src, expected = build_neu_det(tmp_path / "neu")
    res = run_cli("convert", "--recipe", "neu-det", src, tmp_path / "out", "--to", "coco")
    assert res.returncode == 0, res.stderr
    assert "licence:" in res.stderr and "research" in res.stderr.lower()
    res = run_cli("convert", tmp_path / "out", tmp_path / "out2", "--to", "yolo")
    assert res.returncode == 0 and "licence:" not in res.stderr


def test_every_dataset_tool_is_a_command():
    from edgevision.cli import DATA_COMMANDS

    res = run_cli("--help")
    assert res.returncode == 0
    for name in DATA_COMMANDS:
        assert name in res.stdout, f"'{name}' is not registered"
