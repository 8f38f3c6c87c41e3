"""benchmarks/convert_speed.py: the synthetic dataset, the output comparison and a tiny run."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "convert_speed.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(SCRIPT, "convert_speed")


def test_synthetic_coco_is_deterministic_and_valid(bench: ModuleType, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    info = bench.make_coco(a, 200, 500, 4, seed=3)
    bench.make_coco(b, 200, 500, 4, seed=3)
    assert a.read_bytes() == b.read_bytes()
    doc = json.loads(a.read_text())
    assert len(doc["images"]) == 200 and len(doc["annotations"]) == 500
    assert [c["id"] for c in doc["categories"]] == [1, 2, 3, 4]  # contiguous: both tools' class ids agree
    size = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    for ann in doc["annotations"]:
        x, y, w, h = ann["bbox"]
        iw, ih = size[ann["image_id"]]
        assert w >= 2 and h >= 2 and x >= 0 and y >= 0 and x + w <= iw + 1e-9 and y + h <= ih + 1e-9
    used = {ann["image_id"] for ann in doc["annotations"]}
    assert info["backgrounds"] == 200 - len(used) > 0


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "labels" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


class TestCompare:
    EV = {"train/a.txt": "0 0.5 0.25 0.1 0.2\n1 0.123456789 0.2 0.3 0.4\n", "train/bg.txt": ""}
    UL = {"train/a.txt": "1 0.123457 0.2 0.3 0.4\n0 0.5 0.25 0.1 0.2\n"}  # %g, other order, no background file

    def test_same_boxes_in_another_order_and_precision_agree(self, bench: ModuleType, tmp_path: Path) -> None:
        assert bench.compare(write_tree(tmp_path / "ev", self.EV), write_tree(tmp_path / "ul", self.UL)) == []

    def test_a_box_off_by_more_than_the_tolerance(self, bench: ModuleType, tmp_path: Path) -> None:
        ul = {"train/a.txt": "1 0.1237 0.2 0.3 0.4\n0 0.5 0.25 0.1 0.2\n"}
        problems = bench.compare(write_tree(tmp_path / "ev", self.EV), write_tree(tmp_path / "ul", ul))
        assert len(problems) == 1 and problems[0].startswith("1 boxes differ by more than 0.0001, e.g. in train/a.txt")

    def test_box_counts_and_files_on_one_side(self, bench: ModuleType, tmp_path: Path) -> None:
        ev = {**self.EV, "train/only_ev.txt": "0 0.5 0.5 0.1 0.1\n"}
        ul = {"train/a.txt": "0 0.5 0.25 0.1 0.2\n", "train/only_ul.txt": "0 0.5 0.5 0.1 0.1\n"}
        problems = bench.compare(write_tree(tmp_path / "ev", ev), write_tree(tmp_path / "ul", ul))
        assert problems == [
            "1 label files written by Ultralytics only, e.g. train/only_ul.txt",
            "1 non-empty label files written by EdgeVision only, e.g. train/only_ev.txt",
            "1 files differ in box count, e.g. train/a.txt: EdgeVision 2, Ultralytics 1",
        ]


def test_a_tiny_run_without_ultralytics_skips_the_peer(bench: ModuleType, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    rc = bench.main(["--images", "40", "--boxes", "200", "--repeat", "1", "--python", "/bin/false",
                     "--work", str(tmp_path / "work"), "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Ultralytics is not importable by /bin/false: running EdgeVision alone" in text
    result = json.loads(out.read_text())
    assert list(result["median"]) == ["edgevision"] and result["dataset"]["boxes"] == 200
    labels = list((tmp_path / "work" / "runs" / "edgevision-0" / "labels" / "train").glob("*.txt"))
    assert len(labels) == 40  # one file per image, empty for backgrounds
