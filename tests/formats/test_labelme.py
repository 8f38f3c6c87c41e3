"""LabelMe JSON reader: conformance, shape types, image paths, embedded images, bad input."""

from __future__ import annotations

import base64
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from edgevision.core import Dataset, DatasetError, Polygon, Report
from edgevision.formats import get_format
from tests.formats.conformance import FormatConformance, write_image
from tests.formats.format_io import read_as


def labelme_json(image_path: str, shapes: list[dict], size_hw: tuple[int, int] | None = (48, 64), **extra) -> dict:
    doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None}
    if size_hw is not None:
        doc |= {"imageHeight": size_hw[0], "imageWidth": size_hw[1]}
    return doc | extra


def shape(label: str, points: list, kind: str | None = "rectangle", **extra) -> dict:
    s = {"label": label, "points": points, "group_id": None, "description": "", "flags": {}, "mask": None}
    if kind is not None:
        s["shape_type"] = kind
    return s | extra


def put(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


read = partial(read_as, "labelme")


def one(tmp_path: Path, shapes: list[dict], on_error: str = "fail", **extra) -> tuple[Dataset, Report]:
    write_image(tmp_path / "ds" / "a.jpg", (48, 64))
    put(tmp_path / "ds" / "a.json", labelme_json("a.jpg", shapes, **extra))
    return read(tmp_path / "ds", on_error)


class TestLabelmeConformance(FormatConformance):
    format_name = "labelme"

    def build(self, root: Path, spec: Dataset) -> Path:
        for i, r in enumerate(spec.images):
            write_image(root / r.name, r.size_hw, seed=i)
            shapes = []
            for k, (b, c) in enumerate(zip(r.boxes.tolist(), r.class_ids, strict=True)):
                corners = [[b[0], b[1]], [b[2], b[3]]]
                shapes.append(shape(spec.labels.names[c], corners[::-1] if k % 2 else corners))
            put(root / f"{Path(r.name).stem}.json", labelme_json(r.name, shapes, r.size_hw))
        return root


def test_rectangle_corners_in_any_order(tmp_path: Path) -> None:
    ds, _ = one(tmp_path, [shape("pit", [[20, 30], [4, 6]]), shape("pit", [[20, 6], [4, 30]])])
    np.testing.assert_array_equal(ds.images[0].boxes, [[4, 6, 20, 30], [4, 6, 20, 30]])
    assert ds.images[0].shapes is None


def test_polygon_and_untyped_shape_are_polygons(tmp_path: Path) -> None:
    tri = [[10, 5], [30, 5], [20, 25.5]]
    ds, _ = one(tmp_path, [shape("pit", tri, kind="polygon"), shape("pit", tri, kind=None)])
    r = ds.images[0]
    np.testing.assert_array_equal(r.boxes, [[10, 5, 30, 25.5]] * 2)
    assert r.shapes[0] == Polygon.from_flat([10, 5, 30, 5, 20, 25.5]) == r.shapes[1]


def test_circle_becomes_its_box(tmp_path: Path) -> None:
    ds, report = one(tmp_path, [shape("pit", [[20, 20], [23, 24]], kind="circle")])
    np.testing.assert_allclose(ds.images[0].boxes, [[15, 15, 25, 25]])
    assert report.counts()["circle_as_box"] == 1


def test_lines_and_points_are_counted_and_skipped(tmp_path: Path) -> None:
    shapes = [shape("crack", [[1, 1], [9, 9]], kind="line"), shape("dot", [[3, 3]], kind="point"),
              shape("crack", [[1, 1], [5, 2], [9, 9]], kind="linestrip"), shape("pit", [[1, 1], [9, 9]])]
    ds, report = one(tmp_path, shapes)
    assert len(ds.images[0]) == 1 and ds.labels.names == ["pit"]
    warns = [f for f in report.findings if f.code == "shape_unsupported"]
    assert len(warns) == 3 and all(f.severity == "warning" for f in warns)
    assert warns[1].where.endswith("a.json:shape[1]") and "'point'" in warns[1].message


def test_attributes_flags_and_classes(tmp_path: Path) -> None:
    shapes = [shape("zeta", [[1, 1], [9, 9]], group_id=3, description="deep", flags={"rework": True}),
              shape("alpha", [[1, 1], [9, 9]], difficult=True)]
    ds, _ = one(tmp_path, shapes, flags={"checked": True})
    r = ds.images[0]
    assert ds.labels.names == ["alpha", "zeta"] and r.class_ids.tolist() == [1, 0]
    assert r.attributes == [{"group_id": 3, "flags": {"rework": True}, "description": "deep"}, {"difficult": True}]
    assert r.meta["flags"] == {"checked": True} and r.meta["annotation"] == "a.json"
    ds, _ = read(tmp_path / "ds", classes=["zeta", "alpha"])
    assert ds.images[0].class_ids.tolist() == [0, 1]
    with pytest.raises(DatasetError, match=r"a\.json:shape\[0\].*unknown class 'zeta'"):
        read(tmp_path / "ds", classes=["alpha"])


# -- image paths -------------------------------------------------------------------------------
def test_image_path_with_backslashes_and_dotdot_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_image(root / "images" / "a b.jpg", (48, 64))
    put(root / "ann" / "a b.json", labelme_json("..\\images\\a b.jpg", [shape("pit", [[1, 1], [9, 9]])]))
    ds, report = read(root)
    assert ds.images[0].name == "images/a b.jpg" and ds.images[0].path == root / "images" / "a b.jpg"
    assert not report.findings


@pytest.mark.parametrize("image_path", ["../../outside.jpg", "/data/a.jpg", "C:\\Users\\me\\a.jpg"])
def test_image_path_leaving_the_root_is_path_escape(tmp_path: Path, image_path: str) -> None:
    root = tmp_path / "ds"
    write_image(root / "a.jpg", (48, 64))
    put(root / "ann" / "a.json", labelme_json(image_path, []))
    with pytest.raises(DatasetError) as exc:
        read(root)
    assert exc.value.code == "path_escape" and "a.json" in str(exc.value) and "\n" not in str(exc.value)
    ds, report = read(root, on_error="keep")  # lenient: found by the JSON's own name
    assert ds.images[0].name == "a.jpg" and report.errors[0].code == "path_escape"


def test_stale_image_path_is_forgiven(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_image(root / "imgs" / "a.jpg", (48, 64))
    put(root / "a.json", labelme_json("old/place/A.JPG", []))
    ds, report = read(root)
    assert ds.images[0].path == root / "imgs" / "a.jpg"
    assert report.findings[0].code == "image_name_quirk" and "letter case" in report.findings[0].message


def test_embedded_image_data_gives_the_size(tmp_path: Path) -> None:
    png = write_image(tmp_path / "tmp.png", (30, 40)).read_bytes()
    root = tmp_path / "ds"
    put(root / "a.json", labelme_json("a.png", [shape("pit", [[1, 1], [9, 9]])], size_hw=None,
                                      imageData=base64.b64encode(png).decode()))
    ds, report = read(root)
    r = ds.images[0]
    assert r.size_hw == (30, 40) and r.path is None and r.meta["embedded_image"] == "a.json" and r.name == "a.png"
    assert [f.code for f in report.findings] == ["image_embedded"]


def test_corrupt_embedded_image_is_an_error(tmp_path: Path) -> None:
    put(tmp_path / "ds" / "a.json", labelme_json("a.png", [], imageData="bm90IGFuIGltYWdl"))
    with pytest.raises(DatasetError, match=r"a\.json: imageData does not decode"):
        read(tmp_path / "ds")


def test_missing_image_without_data_keeps_the_declared_size(tmp_path: Path) -> None:
    put(tmp_path / "ds" / "a.json", labelme_json("gone.jpg", []))
    ds, report = read(tmp_path / "ds")
    assert ds.images[0].path is None and ds.images[0].size_hw == (48, 64)
    assert report.counts()["image_missing"] == 1


def test_declared_size_is_checked_against_the_image(tmp_path: Path) -> None:
    ds, report = one(tmp_path, [], imageHeight=10)
    assert ds.images[0].size_hw == (48, 64) and report.counts()["size_mismatch"] == 1


def test_split_folders_and_unannotated_images(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for split in ("train", "valid"):
        write_image(root / split / "a.jpg", (48, 64))
        put(root / split / "a.json", labelme_json("a.jpg", []))
    write_image(root / "train" / "extra.jpg", (8, 8))
    ds, report = read(root)
    assert {r.name: r.split for r in ds.images} == {"train/a.jpg": "train", "valid/a.jpg": "val"}
    assert report.counts()["image_unannotated"] == 1
    ds, _ = read(root, unannotated_images="background")
    assert "train/extra.jpg" in {r.name for r in ds.images}


# -- detection and bad input -----------------------------------------------------------------------
def test_detect_only_labelme_json(tmp_path: Path) -> None:
    fmt = get_format("labelme")
    put(tmp_path / "coco" / "instances.json", {"images": [], "annotations": [], "categories": []})
    assert fmt.detect(tmp_path / "coco") is None
    put(tmp_path / "lm" / "sub" / "a.json", labelme_json("a.jpg", []))
    assert fmt.detect(tmp_path / "lm").score > 0 and fmt.detect(tmp_path / "lm" / "sub" / "a.json").score > 0


def test_other_json_in_the_folder_is_skipped_with_a_warning(tmp_path: Path) -> None:
    put(tmp_path / "ds" / "classes.json", {"names": ["pit"]})
    ds, report = one(tmp_path, [])
    assert len(ds) == 1 and report.counts()["json_not_labelme"] == 1


@pytest.mark.parametrize(("bad", "code", "text"), [
    (shape("pit", [[1, 1], [2, 2], [3, 3]]), "shape_invalid", "rectangle needs 2 corner points, got 3"),
    (shape("pit", [[1, 1], [2, 2]], kind="polygon"), "shape_invalid", "polygon needs at least 3 points"),
    (shape("pit", [[1, "x"], [2, 2]]), "shape_invalid", "points must be a list of [x, y] pairs"),
    (shape("pit", "nope"), "shape_invalid", "points must be"),
    (shape("", [[1, 1], [2, 2]]), "class_missing", "no label"),
    (shape("pit", [[9, 9], [9, 20]]), "box_empty", "zero area"),
    (shape("pit", [[500, 500], [600, 600]]), "box_outside", "outside the 64x48 image"),
    ("not a shape", "shape_invalid", "expected a shape object"),
])
def test_bad_shapes_are_one_line_errors(tmp_path: Path, bad, code: str, text: str) -> None:
    with pytest.raises(DatasetError) as exc:
        one(tmp_path, [shape("pit", [[1, 1], [9, 9]]), bad])
    msg = str(exc.value)
    assert exc.value.code == code and text in msg and "a.json:shape[1]" in msg and "\n" not in msg


def test_nan_point_under_keep_is_kept_and_reported(tmp_path: Path) -> None:
    doc = labelme_json("a.jpg", [shape("pit", [[1, 1], [9, 9]])])
    write_image(tmp_path / "ds" / "a.jpg", (48, 64))
    text = json.dumps(doc).replace("[9, 9]", "[NaN, 9]")
    (tmp_path / "ds" / "a.json").write_text(text)
    ds, report = read(tmp_path / "ds", on_error="keep")
    assert report.errors[0].code == "box_nan" and len(ds.images[0]) == 1
    ds, report = read(tmp_path / "ds", on_error="skip")
    assert len(ds) == 0 and report.skipped[0].code == "box_nan"
