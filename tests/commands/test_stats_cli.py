"""``edgevision stats`` through the real CLI: tables, JSON, plots, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevision.convert import read_dataset, write_dataset
from edgevision.data.stats import dataset_stats
from edgevision.data.synth import synth
from tests.helpers import run_cli, tree_digest
from tests.test_cli import assert_one_line_error, make_coco


@pytest.fixture(scope="module")
def yolo_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real YOLO dataset written from 20 synthetic images (train / val / test)."""
    tmp = tmp_path_factory.mktemp("stats")
    write_dataset(synth(tmp / "png", n=20, seed=3, imgsz=128), tmp / "yolo", "yolo")
    return tmp / "yolo"


def test_stats_exact_numbers_on_a_small_coco(tmp_path: Path) -> None:
    src = make_coco(tmp_path / "src")  # 3 images (one background): crack 20x10 (small), squat 30x40 (medium)
    res = run_cli("stats", src, "--json", tmp_path / "stats.json")
    assert res.returncode == 0, res.stderr
    d = json.loads((tmp_path / "stats.json").read_text())
    assert (d["schema"], d["images"], d["objects"], d["classes"]) == ("edgevision.stats/1", 3, 2, 2)
    o = d["overall"]
    assert (o["background_images"], o["box_sizes"]) == (1, {"small": 1, "medium": 1, "large": 0})
    assert [(c["name"], c["objects"], c["images"], c["small"], c["medium"]) for c in o["per_class"]] == [
        ("crack", 1, 1, 1, 0), ("squat", 1, 1, 0, 1)]
    assert o["relative_area"]["min"] == pytest.approx(200 / (40 * 60))
    assert [(s["height"], s["width"], s["count"]) for s in o["image_sizes"]] == [(50, 50, 1), (40, 60, 1), (30, 20, 1)]
    assert d["splits"] == {}
    rows = [[x.strip() for x in ln.split("│")[1:-1]] for ln in res.stdout.splitlines() if "│" in ln]
    assert ["all", "3", "2", "1 (33%)", "0.667", "1", "1", "1", "0"] in rows  # overview: one row per split
    assert "crack" in res.stdout and "squat" in res.stdout and "image sizes (3 distinct)" in res.stdout


def test_stats_tables_and_json_match_the_library(yolo_src: Path, tmp_path: Path) -> None:
    before = tree_digest(yolo_src)
    res = run_cli("stats", yolo_src, "--from", "yolo", "--json", tmp_path / "out" / "s.json")
    assert res.returncode == 0, res.stderr
    expected = dataset_stats(read_dataset(yolo_src, "yolo").dataset)
    assert json.loads((tmp_path / "out" / "s.json").read_text()) == json.loads(json.dumps(expected.to_dict()))
    for section in ("train", "val", "test", "all"):
        assert section in res.stdout
    for c in expected.overall.per_class:
        row = next(ln for ln in res.stdout.splitlines() if f" {c.name} " in ln and ln.count("│") == 8)
        cells = [x.strip() for x in row.split("│")[1:-1]]
        assert cells == [str(c.id), c.name, str(c.objects), str(c.images), str(c.small), str(c.medium), str(c.large)]
    assert "distributions" in res.stdout and "images per box count" in res.stdout
    assert tree_digest(yolo_src) == before


def test_stats_plots(yolo_src: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    res = run_cli("stats", yolo_src, "--plots", tmp_path / "plots")
    assert res.returncode == 0, res.stderr
    for name in ("class_histogram.png", "box_sizes.png"):
        p = tmp_path / "plots" / name
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
        assert f"wrote plot {p}" in res.stdout.replace("\n", "")


def test_stats_plots_without_matplotlib_is_one_line(yolo_src: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    monkeypatch.setenv("PYTHONPATH", str(hide))
    res = run_cli("stats", yolo_src, "--plots", tmp_path / "plots")
    assert_one_line_error(res, "pip install 'edgevision[plots]'")
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize(("args", "fragments"), [
    (["nope"], ["nope: path does not exist"]),
    (["SRC", "--from", "yolov"], ["unknown format 'yolov'", "Did you mean 'yolo'?"]),
    (["SRC", "--on-error", "ignore"], ["--on-error: expected fail or skip"]),
    (["SRC", "--json", "."], ["--json .: cannot write"]),
])
def test_stats_bad_input_is_one_line(yolo_src: Path, tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    res = run_cli("stats", *[str(yolo_src) if a == "SRC" else a for a in args], cwd=tmp_path)
    assert_one_line_error(res, *fragments)
