"""The ``masks`` reader: per-class binary masks, label maps, MVTec AD and Magnetic-tile layouts."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.core import ConfigError, Dataset, DatasetError, Polygon
from edgevision.formats import get_format
from edgevision.formats.masks import Component, foreground, mask_components
from tests.formats.conformance import FormatConformance, by_basename, write_image
from tests.formats.format_io import ignored_files, read_as


def write_mask(path: Path, mask: np.ndarray) -> Path:
    """Write a mask PNG exactly as given (any dtype cv2 can encode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", mask)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def box_mask(size_hw: tuple[int, int], boxes: list[list[int]], value: int = 255) -> np.ndarray:
    m = np.zeros(size_hw, np.uint8)
    for x1, y1, x2, y2 in boxes:
        m[y1:y2, x1:x2] = value
    return m


read = partial(read_as, "masks")


class TestMasksConformance(FormatConformance):
    format_name = "masks"

    def build(self, root: Path, spec: Dataset) -> Path:
        for i, rec in enumerate(spec.images):
            write_image(root / "images" / rec.name, rec.size_hw, seed=i)
            stem = Path(rec.name).stem
            for cid in sorted(set(rec.class_ids.tolist())):
                boxes = [b for b, c in zip(rec.boxes.astype(int).tolist(), rec.class_ids, strict=True) if c == cid]
                write_mask(root / "masks" / spec.labels.names[cid] / f"{stem}.png", box_mask(rec.size_hw, boxes))
        return root

    def annotation_file(self, built: Path) -> Path:
        return sorted((built / "masks").rglob("*.png"))[0]


# -- geometry --------------------------------------------------------------------------------
def test_one_pixel_blob_gives_its_pixel_box_and_square_polygon(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.png", (10, 12))
    m = np.zeros((10, 12), np.uint8)
    m[3, 7] = 255
    write_mask(tmp_path / "masks" / "dot" / "a.png", m)
    ds, _ = read(tmp_path, min_area=1)
    rec = ds.images[0]
    assert rec.boxes.tolist() == [[7, 3, 8, 4]]
    poly = rec.shapes[0]
    assert isinstance(poly, Polygon)
    assert poly.bbox_xyxy().tolist() == [7, 3, 8, 4]
    assert poly.area() == pytest.approx(1.0)


@pytest.mark.parametrize("pixels", [
    [(2, 2), (3, 2), (2, 3)],                      # L shape
    [(1, 1), (2, 2), (3, 3)],                      # diagonal chain (8-connected)
    [(0, 0), (0, 1), (0, 2), (0, 3)],              # vertical line touching the border
])
def test_polygon_box_equals_tight_pixel_box(pixels: list[tuple[int, int]]) -> None:
    m = np.zeros((6, 6), bool)
    for c, r in pixels:
        m[r, c] = True
    comps, dropped = mask_components(m, 8, 1)
    assert dropped == 0 and len(comps) == 1
    cols, rows = zip(*pixels, strict=True)
    tight = [min(cols), min(rows), max(cols) + 1, max(rows) + 1]
    assert list(comps[0].box_xyxy) == tight
    assert comps[0].polygon().bbox_xyxy().tolist() == tight
    assert comps[0].polygon().area() >= len(pixels)  # the outline covers every pixel


def test_polygon_of_rectangle_is_exact() -> None:
    m = np.zeros((20, 20), bool)
    m[5:9, 3:15] = True
    (c,), _ = mask_components(m)
    poly = c.polygon()
    assert poly.area() == pytest.approx(48.0)
    assert sorted(map(tuple, poly.rings[0].tolist())) == [(3, 5), (3, 9), (15, 5), (15, 9)]
    assert c.full_mask((20, 20)).sum() == 48


def test_connectivity_4_splits_diagonal_neighbours() -> None:
    m = np.zeros((5, 5), bool)
    m[1, 1] = m[2, 2] = True
    assert len(mask_components(m, 8)[0]) == 1
    assert len(mask_components(m, 4)[0]) == 2


def test_component_holds_only_its_own_pixels() -> None:
    m = np.zeros((8, 8), bool)
    m[1:4, 1:4] = True
    m[2, 5] = True  # a second component inside the first one's row range
    comps, _ = mask_components(m, 8, 1)
    assert [c.box_xyxy for c in comps] == [(1, 1, 4, 4), (5, 2, 6, 3)]
    assert isinstance(comps[0], Component) and comps[0].crop.sum() == 9


# -- per-class layout --------------------------------------------------------------------------
def test_small_components_dropped_and_counted(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (30, 30))
    m = box_mask((30, 30), [[2, 2, 10, 10]])
    m[20, 20] = m[25, 5] = 255
    write_mask(tmp_path / "masks" / "crack" / "a.png", m)
    ds, report = read(tmp_path)  # default min_area=4
    assert ds.images[0].boxes.tolist() == [[2, 2, 10, 10]]
    [f] = [f for f in report.findings if f.code == "component_small"]
    assert f.severity == "info" and f.message.startswith("2 ")


def test_all_zero_mask_and_missing_mask_are_background(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    write_image(tmp_path / "images" / "b.jpg", (20, 20))
    write_image(tmp_path / "images" / "c.jpg", (20, 20))
    write_mask(tmp_path / "masks" / "crack" / "a.png", box_mask((20, 20), [[1, 1, 5, 5]]))
    write_mask(tmp_path / "masks" / "crack" / "b.png", np.zeros((20, 20), np.uint8))
    ds, _ = read(tmp_path)
    recs = by_basename(ds)
    assert len(recs["a.jpg"]) == 1 and recs["b.jpg"].is_background and recs["c.jpg"].is_background
    assert recs["b.jpg"].meta["masks"] == ["masks/crack/b.png"]


def test_two_classes_on_one_image_and_class_order(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    write_mask(tmp_path / "masks" / "spall" / "a.png", box_mask((20, 20), [[0, 0, 4, 4]]))
    write_mask(tmp_path / "masks" / "crack" / "a.png", box_mask((20, 20), [[10, 10, 14, 14], [0, 15, 3, 19]]))
    ds, _ = read(tmp_path)
    assert ds.labels.names == ["crack", "spall"]
    assert sorted(ds.class_counts().items()) == [("crack", 2), ("spall", 1)]
    ds2, _ = read(tmp_path, classes=["spall", "crack", "rust"])
    assert ds2.labels.names == ["spall", "crack", "rust"]


def test_class_not_in_classes_is_an_error_only_when_non_empty(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    write_mask(tmp_path / "masks" / "good" / "a.png", np.zeros((20, 20), np.uint8))
    ds, _ = read(tmp_path, classes=["crack"])
    assert ds.images[0].is_background
    write_mask(tmp_path / "masks" / "rust" / "a.png", box_mask((20, 20), [[1, 1, 5, 5]]))
    with pytest.raises(DatasetError, match="rust") as e:
        read(tmp_path, classes=["crack"])
    assert e.value.code == "class_unknown"


def test_soft_mask_is_thresholded_with_a_warning(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    m = box_mask((20, 20), [[2, 2, 10, 10]], 200)
    m[2:10, 10:12] = 60  # faint anti-aliased edge
    write_mask(tmp_path / "masks" / "crack" / "a.png", m)
    ds, report = read(tmp_path)
    assert ds.images[0].boxes.tolist() == [[2, 2, 10, 10]]
    assert [f.severity for f in report.findings if f.code == "mask_soft"] == ["warning"]
    ds, report = read(tmp_path, threshold=50)
    assert ds.images[0].boxes.tolist() == [[2, 2, 12, 10]]
    assert not report.findings


def test_threshold_above_every_value_warns(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (10, 10))
    write_mask(tmp_path / "masks" / "crack" / "a.png", box_mask((10, 10), [[2, 2, 6, 6]], 1))
    ds, report = read(tmp_path, threshold=127)
    assert ds.images[0].is_background
    assert "mask_below_threshold" in report.counts()
    ds, _ = read(tmp_path)  # a {0, 1} mask is binary: non-zero is the defect
    assert len(ds.images[0]) == 1


def test_foreground_scales_16_bit_and_float() -> None:
    m16 = np.array([[0, 65535, 20000]], np.uint16)
    assert foreground(m16, 100)[0].tolist() == [[False, True, False]]
    mf = np.array([[0.0, 0.9, 0.3]], np.float32)
    assert foreground(mf, 127)[0].tolist() == [[False, True, False]]
    fg, soft = foreground(mf, None)
    assert soft and fg.tolist() == [[False, True, False]]


def test_16_bit_and_colour_masks_are_read(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (12, 12))
    write_image(tmp_path / "images" / "b.jpg", (12, 12))
    write_mask(tmp_path / "masks" / "crack" / "a.png", box_mask((12, 12), [[1, 1, 5, 5]]).astype(np.uint16) * 257)
    colour = np.zeros((12, 12, 3), np.uint8)
    colour[6:9, 6:10, 2] = 255  # red only
    write_mask(tmp_path / "masks" / "crack" / "b.png", colour)
    recs = by_basename(read(tmp_path)[0])
    assert recs["a.jpg"].boxes.tolist() == [[1, 1, 5, 5]]
    assert recs["b.jpg"].boxes.tolist() == [[6, 6, 10, 9]]


# -- label maps --------------------------------------------------------------------------------
def test_label_map_layout(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    m = box_mask((20, 20), [[0, 0, 5, 5]], 1)
    m[10:15, 10:20] = 2
    m[0:3, 15:18] = 2
    write_mask(tmp_path / "masks" / "a.png", m)
    ds, _ = read(tmp_path, values={1: "crack", 2: "spall"})
    assert ds.labels.names == ["crack", "spall"] and ds.labels.source_ids == [1, 2]
    rec = ds.images[0]
    got = sorted((ds.labels.names[c], b) for c, b in zip(rec.class_ids, rec.boxes.tolist(), strict=True))
    assert got == [("crack", [0, 0, 5, 5]), ("spall", [10, 10, 20, 15]), ("spall", [15, 0, 18, 3])]


def test_label_map_unknown_value_names_file_and_value(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    write_mask(tmp_path / "masks" / "a.png", box_mask((20, 20), [[0, 0, 5, 5]], 3))
    with pytest.raises(DatasetError) as e:
        read(tmp_path, values={1: "crack"})
    assert e.value.code == "class_unknown"
    assert "a.png" in str(e.value) and "pixel value 3" in str(e.value) and "\n" not in str(e.value)


def test_label_map_values_may_share_a_class(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    m = box_mask((20, 20), [[0, 0, 5, 5]], 1)
    m[10:15, 10:15] = 7
    write_mask(tmp_path / "masks" / "a.png", m)
    ds, _ = read(tmp_path, values={1: "crack", 7: "crack"})
    assert ds.labels.names == ["crack"] and ds.labels.source_ids == [1] and len(ds.images[0]) == 2


@pytest.mark.parametrize("options, text", [
    ({"layout": "label_map"}, "needs 'values'"),
    ({"values": {0: "bg"}}, "positive"),
    ({"connectivity": 6}, "connectivity"),
    ({"mask_sufix": "_mask"}, "mask_sufix"),
])
def test_bad_options_are_config_errors(options: dict, text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        get_format("masks").parse_options(options)


# -- real dataset layouts ----------------------------------------------------------------------
def test_mvtec_ad_layout(tmp_path: Path) -> None:
    cat = tmp_path / "bottle"
    for rel in ("train/good/000.png", "train/good/001.png", "test/good/000.png",
                "test/broken_large/000.png", "test/contamination/000.png"):
        write_image(cat / rel, (32, 32))
    write_mask(cat / "ground_truth/broken_large/000_mask.png", box_mask((32, 32), [[4, 4, 12, 20]]))
    write_mask(cat / "ground_truth/contamination/000_mask.png", box_mask((32, 32), [[20, 2, 30, 8], [1, 25, 6, 30]]))
    ds, report = read(cat, image_dir=["train", "test"], mask_dir="ground_truth", mask_suffix="_mask")
    assert not report.errors
    recs = {r.name: r for r in ds.images}
    assert sorted(recs) == ["test/broken_large/000.png", "test/contamination/000.png", "test/good/000.png",
                            "train/good/000.png", "train/good/001.png"]
    assert ds.labels.names == ["broken_large", "contamination"]
    assert recs["test/broken_large/000.png"].boxes.tolist() == [[4, 4, 12, 20]]
    assert len(recs["test/contamination/000.png"]) == 2
    assert recs["test/good/000.png"].is_background and recs["train/good/000.png"].is_background
    assert {r.split for r in ds.images if r.name.startswith("train/")} == {"train"}
    assert {r.split for r in ds.images if r.name.startswith("test/")} == {"test"}


def test_magnetic_tile_layout(tmp_path: Path) -> None:
    for folder, boxes in (("MT_Blowhole", [[3, 3, 9, 9]]), ("MT_Free", [])):
        write_image(tmp_path / folder / "Imgs" / "exp1_num_1.jpg", (24, 30))
        write_mask(tmp_path / folder / "Imgs" / "exp1_num_1.png", box_mask((24, 30), boxes))
    ds, report = read(tmp_path, image_dir="", mask_dir="", class_names={"MT_Blowhole": "blowhole"},
                      classes=["blowhole"])
    assert not report.errors
    recs = {r.name: r for r in ds.images}
    assert sorted(recs) == ["MT_Blowhole/Imgs/exp1_num_1.jpg", "MT_Free/Imgs/exp1_num_1.jpg"]
    assert recs["MT_Blowhole/Imgs/exp1_num_1.jpg"].boxes.tolist() == [[3, 3, 9, 9]]
    assert recs["MT_Free/Imgs/exp1_num_1.jpg"].is_background
    assert ds.labels.names == ["blowhole"]


def magnetic_tile_repo(root: Path) -> Path:
    """The Magnetic-tile repository as cloned: MT_* class folders, README.md and the illustration
    dataset.jpg / dataset.png at the top, a Thumbs.db in a class folder and the clone's .git/."""
    for folder, boxes in (("MT_Blowhole", [[3, 3, 9, 9]]), ("MT_Free", [])):
        write_image(root / folder / "Imgs" / "exp1_num_1.jpg", (24, 30))
        write_mask(root / folder / "Imgs" / "exp1_num_1.png", box_mask((24, 30), boxes))
    (root / "README.md").write_text("# Magnetic-tile-defect-datasets.\n", encoding="utf-8")
    write_image(root / "dataset.jpg", (40, 60))
    write_mask(root / "dataset.png", box_mask((40, 60), [[1, 1, 30, 30]]))
    (root / "MT_Free" / "Imgs" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    write_mask(root / ".git" / "objects" / "logo.png", box_mask((8, 8), [[1, 1, 4, 4]]))
    return root


MT_OPTIONS = {"image_dir": "", "mask_dir": "", "class_names": {"MT_Blowhole": "blowhole"}, "classes": ["blowhole"]}


@pytest.mark.parametrize("on_error", ["fail", "skip", "keep"])
def test_magnetic_tile_files_outside_the_class_folders_are_ignored_and_named(tmp_path: Path, on_error: str) -> None:
    ds, report = read(magnetic_tile_repo(tmp_path / "repo"), on_error, **MT_OPTIONS)
    assert [f.code for f in report.findings] == ["file_outside_layout"]
    assert ignored_files(report) == ["MT_Free/Imgs/Thumbs.db", "README.md", "dataset.jpg", "dataset.png"]
    assert sorted(r.name for r in ds.images) == ["MT_Blowhole/Imgs/exp1_num_1.jpg", "MT_Free/Imgs/exp1_num_1.jpg"]
    assert ds.num_objects == 1 and ds.class_counts() == {"blowhole": 1}


def test_files_beside_the_image_and_mask_folders_are_named_not_read(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    write_mask(tmp_path / "masks" / "crack" / "a.png", box_mask((20, 20), [[1, 1, 5, 5]]))
    (tmp_path / "masks" / "crack" / "notes.txt").write_text("relabelled 2021", encoding="utf-8")
    (tmp_path / "LICENSE").write_text("CC-BY-4.0", encoding="utf-8")
    write_image(tmp_path / "overview.png", (10, 10))
    ds, report = read(tmp_path)
    assert [r.name for r in ds.images] == ["a.jpg"] and ds.num_objects == 1
    assert ignored_files(report) == ["LICENSE", "masks/crack/notes.txt", "overview.png"]


def test_misplaced_mask_in_the_image_folder_is_reported_once_never_an_image(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", (20, 20))
    write_mask(tmp_path / "masks" / "a.png", box_mask((20, 20), [[1, 1, 5, 5]]))
    ds, report = read(tmp_path, on_error="skip", image_dir="")
    assert [r.name for r in ds.images] == ["a.jpg"] and ds.images[0].is_background
    assert [f.code for f in report.findings] == ["mask_class_missing"]


def test_class_from_parent_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "lot1" / "a.jpg", (16, 16))
    write_mask(tmp_path / "masks" / "lot1" / "scratch" / "a.png", box_mask((16, 16), [[2, 2, 6, 6]]))
    ds, _ = read(tmp_path, class_level=-1)
    assert ds.labels.names == ["scratch"] and ds.images[0].name == "lot1/a.jpg"


# -- bad input ---------------------------------------------------------------------------------
def test_mask_size_mismatch(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    write_mask(tmp_path / "masks" / "crack" / "a.png", box_mask((20, 21), [[1, 1, 4, 4]]))
    with pytest.raises(DatasetError, match="21x20") as e:
        read(tmp_path)
    assert e.value.code == "mask_size_mismatch" and "a.png" in str(e.value)


def test_mask_without_image_and_skip_policy(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    write_image(tmp_path / "images" / "b.jpg", (20, 20))
    write_mask(tmp_path / "masks" / "crack" / "a.png", box_mask((20, 20), [[1, 1, 5, 5]]))
    write_mask(tmp_path / "masks" / "crack" / "b.png", np.zeros((9, 9), np.uint8))
    write_mask(tmp_path / "masks" / "crack" / "zzz.png", box_mask((20, 20), [[1, 1, 5, 5]]))
    with pytest.raises(DatasetError) as e:
        read(tmp_path)
    assert e.value.code == "image_missing" and "zzz.png" in str(e.value)
    ds, report = read(tmp_path, on_error="skip")
    assert [r.name for r in ds.images] == ["a.jpg"]  # b dropped (size mismatch)
    assert sorted(f.code for f in report.skipped) == ["image_missing", "mask_size_mismatch"]


def test_corrupt_mask_is_one_line_error(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    (tmp_path / "masks" / "crack").mkdir(parents=True)
    (tmp_path / "masks" / "crack" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DatasetError) as e:
        read(tmp_path)
    assert e.value.code == "mask_corrupt" and "\n" not in str(e.value)


def test_mask_directly_under_mask_dir_in_per_class_layout(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    write_mask(tmp_path / "masks" / "a.png", box_mask((20, 20), [[1, 1, 5, 5]]))
    with pytest.raises(DatasetError, match="values") as e:
        read(tmp_path)
    assert e.value.code == "mask_class_missing"
    ds, report = read(tmp_path, on_error="skip")
    assert ds.images[0].is_background and [f.code for f in report.skipped] == ["mask_class_missing"]


def test_missing_folder_is_fatal(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (20, 20))
    with pytest.raises(DatasetError, match="mask_dir") as e:
        read(tmp_path, on_error="keep")
    assert e.value.code == "folder_missing"


def test_detect_needs_class_folders_of_png_masks(tmp_path: Path) -> None:
    fmt = get_format("masks")
    write_image(tmp_path / "images" / "a.jpg", (8, 8))
    (tmp_path / "labels").mkdir()
    assert fmt.detect(tmp_path) is None
    write_mask(tmp_path / "masks" / "crack" / "a.png", np.zeros((8, 8), np.uint8))
    assert fmt.detect(tmp_path).score > 0
