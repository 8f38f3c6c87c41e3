"""``edgevision tile`` end to end: the real CLI on real large images, tiles.json, atomic output, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.convert import read_dataset, write_dataset
from edgevision.core import Dataset, ImageRecord, LabelMap
from edgevision.data.tile import tile_to_source
from tests.formats.conformance import write_image
from tests.helpers import run_cli, tree_digest
from tests.test_cli import assert_one_line_error

BOXES = {  # name -> (boxes xyxy, class ids) on 1000x700 images
    "coil 01.png": ([[20, 30, 120, 90], [300, 200, 700, 260], [980, 680, 1000, 700], [600, 5, 610, 15]], [0, 1, 0, 1]),
    "coil 02.png": ([[10, 400, 400, 690], [500, 500, 520, 520]], [1, 0]),
    "empty.png": ([], []),
}


def make_source(root: Path, fmt: str) -> Path:
    """A hand-built dataset of 1000x700 images with known boxes, written as ``fmt``."""
    recs = []
    for i, (name, (boxes, ids)) in enumerate(BOXES.items()):
        path = write_image(root / "pixels" / name, (700, 1000), seed=i)
        recs.append(ImageRecord(name, (700, 1000), boxes=np.array(boxes, float).reshape(-1, 4), class_ids=ids,
                                path=path, split="val" if i == 1 else "train"))
    src = root / "src"
    write_dataset(Dataset(LabelMap(["crack", "squat"]), recs), src, fmt)
    return src


@pytest.fixture(scope="module")
def yolo_src(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("yolo"), "yolo")


def test_tile_yolo_end_to_end(yolo_src, tmp_path):
    before = tree_digest(yolo_src)
    out = tmp_path / "tiles"
    res = run_cli("tile", yolo_src, out, "--size", "320", "--overlap", "0.2", "--min-visibility", "0.5",
                  "--keep-empty", "0.25", "--seed", "1", "--json", tmp_path / "counts.json")
    assert res.returncode == 0, res.stderr
    assert tree_digest(yolo_src) == before, "the source was modified"
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert counts["sources"] == 3 and counts["windows"] == 3 * 12  # x starts 0,256,512,680; y 0,256,380
    assert counts["objects_in"] == 6 and counts["objects_kept"] + counts["objects_dropped"] == 6
    for label, key in (("source images", "sources"), ("tiles written", "tiles"),
                       ("background tiles kept", "background_kept"), ("background tiles dropped", "background_dropped"),
                       ("objects dropped by visibility", "objects_dropped"), ("objects split across tiles", "objects_split")):
        line = next(ln for ln in res.stdout.splitlines() if label in ln)
        assert line.rstrip(" │|").split()[-1] == str(counts[key]), (label, line)

    tile_map = json.loads((out / "tiles.json").read_text())
    assert tile_map["options"] == {"size": 320, "overlap": 0.2, "min_visibility": 0.5, "keep_empty": 0.25, "seed": 1}
    got = read_dataset(out).dataset
    assert got.labels.names == ["crack", "squat"]
    assert sorted(r.name for r in got) == sorted(tile_map["tiles"]) and len(got) == counts["tiles"]
    src = {r.name: r for r in read_dataset(yolo_src).dataset}
    for t in got:
        origin = tile_map["tiles"][t.name]
        x1, y1, x2, y2 = origin["window"]
        assert origin["source_size_hw"] == [700, 1000] and t.size_hw == (y2 - y1, x2 - x1) == (320, 320)
        assert t.name == f"{Path(origin['source']).stem}__x{x1}_y{y1}.png"
        assert t.split == src[origin["source"]].split
        pixels = cv2.imdecode(np.fromfile(str(t.path), np.uint8), cv2.IMREAD_UNCHANGED)
        whole = cv2.imdecode(np.fromfile(str(src[origin["source"]].path), np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(pixels, whole[y1:y2, x1:x2])
        for b, c in zip(tile_to_source(t.boxes, origin["window"]), t.class_ids):
            s = src[origin["source"]]
            clipped = np.column_stack([np.maximum(s.boxes[:, :2], [x1, y1]), np.minimum(s.boxes[:, 2:], [x2, y2])])
            assert any(np.allclose(b, cb, atol=1e-3) and c == sc for cb, sc in zip(clipped, s.class_ids))
    # the box wholly inside one tile maps back exactly; the 400x60 box is split and kept
    hits = [tile_to_source(t.boxes, tile_map["tiles"][t.name]["window"]) for t in got
            if tile_map["tiles"][t.name]["source"] == "coil 01.png"]
    assert any(np.allclose(b, [20, 30, 120, 90], atol=1e-3) for bs in hits for b in bs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.json", "tiles"], "staging folder left behind"


def test_tile_coco_to_voc_no_background_overwrite(tmp_path):
    src = make_source(tmp_path, "coco")
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "old.txt").write_text("replaced")
    res = run_cli("tile", src, tmp_path / "voc", "--to", "voc", "--size", "500", "--overlap", "0",
                  "--keep-empty", "0", "--json", tmp_path / "c.json", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "voc" / "old.txt").exists()
    counts = json.loads((tmp_path / "c.json").read_text())
    assert counts["background_kept"] == 0 and counts["tiles"] == counts["windows"] - counts["background_dropped"]
    got = read_dataset(tmp_path / "voc", "voc").dataset
    assert len(got) == counts["tiles"] and not any(r.is_background for r in got)
    assert (tmp_path / "voc" / "tiles.json").is_file()
    names = {r.name for r in got}
    assert "coil 01__x0_y0.png" in names and not any(n.startswith("empty") for n in names)


def test_existing_output_and_bad_options(yolo_src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(run_cli("tile", yolo_src, out, "--size", "320"), "already exists")
    assert (out / "keep.txt").read_text() == "mine"
    assert_one_line_error(run_cli("tile", yolo_src, tmp_path / "o2", "--overlap", "1"), "--overlap")
    assert_one_line_error(run_cli("tile", yolo_src, yolo_src / "inside"), "must not be the source")
    assert_one_line_error(run_cli("tile", yolo_src, yolo_src.parent, "--overwrite"), "nor contain it")
    assert (yolo_src / "data.yaml").is_file()
    assert not (tmp_path / "o2").exists() and not (yolo_src / "inside").exists()


def test_missing_image_fails_atomically_or_is_skipped(tmp_path):
    src = make_source(tmp_path, "coco")
    (src / "images" / "train" / "coil 01.png").unlink()
    res = run_cli("tile", src, tmp_path / "out", "--size", "500", "--from", "coco")
    assert_one_line_error(res, "coil 01.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixels", "src"], "partial output left behind"
    res = run_cli("tile", src, tmp_path / "out", "--size", "500", "--on-error", "skip", "--keep-empty", "1")
    assert res.returncode == 0, res.stderr
    assert "skipped 1 item" in res.stderr and "coil 01.png" in res.stderr
    sources = {o["source"] for o in json.loads((tmp_path / "out" / "tiles.json").read_text())["tiles"].values()}
    assert sources == {"coil 02.png", "empty.png"}
