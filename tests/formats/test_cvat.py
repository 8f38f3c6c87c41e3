"""CVAT for images 1.1 reader: conformance, rotated boxes, polygons, polylines, masks, subsets, bad input."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest

from edgevision.core import RLE, Dataset, DatasetError, Polygon, Polyline, Report
from edgevision.formats import get_format
from edgevision.formats.cvat import rotated_box_xyxy
from tests.formats.conformance import FormatConformance, write_image
from tests.formats.format_io import read_as

META = """<meta><task><id>7</id><name>line 3</name><subset>{subset}</subset><labels>{labels}</labels></task></meta>"""


def labels_xml(names: list[str]) -> str:
    return "".join(f"<label><name>{n}</name><color>#ff0000</color><attributes/></label>" for n in names)


def cvat_xml(images: str, names: tuple[str, ...] = ("scratch", "pit hole"), subset: str = "default",
             meta: str | None = None) -> str:
    meta = META.format(subset=subset, labels=labels_xml(list(names))) if meta is None else meta
    return f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>{meta}{images}</annotations>'


def image_xml(name: str, size_hw: tuple[int, int], shapes: str = "", i: int = 0, extra: str = "") -> str:
    return f'<image id="{i}" name={quoteattr(name)} width="{size_hw[1]}" height="{size_hw[0]}"{extra}>{shapes}</image>'


def box_xml(label: str, b: list[float], extra: str = "", children: str = "") -> str:
    return (f'<box label={quoteattr(label)} source="manual" occluded="0" xtl="{b[0]}" ytl="{b[1]}" xbr="{b[2]}" '
            f'ybr="{b[3]}" z_order="0"{extra}>{children}</box>')


def make(root: Path, images: str, files: dict[str, tuple[int, int]] | None = None, **kw) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.xml").write_text(cvat_xml(images, **kw), encoding="utf-8")
    for i, (name, hw) in enumerate((files or {}).items()):
        write_image(root / "images" / name, hw, seed=i)
    return root


read = partial(read_as, "cvat")


def one(tmp_path: Path, shapes: str, on_error: str = "fail", **kw) -> tuple[Dataset, Report]:
    return read(make(tmp_path / "ds", image_xml("a.jpg", (48, 64), shapes), {"a.jpg": (48, 64)}, **kw), on_error)


class TestCvatConformance(FormatConformance):
    format_name = "cvat"

    def build(self, root: Path, spec: Dataset) -> Path:
        images = []
        for i, r in enumerate(spec.images):
            write_image(root / "images" / r.name, r.size_hw, seed=i)
            shapes = "".join(box_xml(spec.labels.names[c], b) for b, c in zip(r.boxes.tolist(), r.class_ids, strict=True))
            images.append(image_xml(r.name, r.size_hw, shapes, i))
        (root / "annotations.xml").write_text(cvat_xml("".join(images), tuple(spec.labels.names)), encoding="utf-8")
        return root

    def test_labels_in_meta_order(self, built: Path) -> None:
        ds, _ = self.read(built)
        assert ds.labels.names == ["scratch", "pit hole"]


def test_rotated_box_encloses_the_rotated_rectangle(tmp_path: Path) -> None:
    ds, _ = one(tmp_path, box_xml("scratch", [10, 20, 30, 24], ' rotation="90.0"'))
    np.testing.assert_allclose(ds.images[0].boxes, [[18, 12, 22, 32]], atol=1e-9)
    assert ds.images[0].attributes == [{"occluded": False, "rotation": 90.0}]
    np.testing.assert_allclose(rotated_box_xyxy([0, 0, 2, 2], 45), [1 - 2**0.5, 1 - 2**0.5, 1 + 2**0.5, 1 + 2**0.5])


def test_attributes_occluded_and_group(tmp_path: Path) -> None:
    children = ('<attribute name="severity">3</attribute><attribute name="rework">true</attribute>'
                '<attribute name="note">deep pit</attribute>')
    ds, _ = one(tmp_path, box_xml("pit hole", [1, 2, 10, 12], ' group_id="4"', children).replace(
        'occluded="0"', 'occluded="1"'))
    assert ds.images[0].attributes == [{"occluded": True, "group_id": 4, "severity": 3, "rework": True,
                                        "note": "deep pit"}]


def test_polygon_and_polyline(tmp_path: Path) -> None:
    shapes = ('<polygon label="scratch" occluded="0" points="10.5,5.0;30.0,5.0;20.0,25.0" z_order="0"/>'
              '<polyline label="scratch" occluded="0" points="2.0,40.0;50.0,40.0" z_order="0"/>')
    ds, report = one(tmp_path, shapes)
    r = ds.images[0]
    np.testing.assert_allclose(r.boxes, [[10.5, 5, 30, 25], [2, 39.5, 50, 40.5]])
    assert r.shapes[0] == Polygon.from_flat([10.5, 5, 30, 5, 20, 25])
    assert r.shapes[1] == Polyline(np.array([[2.0, 40.0], [50.0, 40.0]]))
    assert not report.findings


def test_mask_rle_becomes_full_image_coco_rle(tmp_path: Path) -> None:
    # 4x3 patch at left=5, top=2: rows "0110", "0111", "0000" -> runs 1,2,2,3,4
    ds, _ = one(tmp_path, '<mask label="pit hole" occluded="0" rle="1, 2, 2, 3, 4" left="5" top="2" width="4" '
                          'height="3" z_order="0"/>')
    r = ds.images[0]
    assert isinstance(r.shapes[0], RLE) and r.shapes[0].size_hw == (48, 64)
    dense = r.shapes[0].decode()
    expected = np.zeros((48, 64), np.uint8)
    expected[2, 6:8] = 1
    expected[3, 6:9] = 1
    np.testing.assert_array_equal(dense, expected)
    np.testing.assert_allclose(r.boxes, [[6, 2, 9, 4]])


@pytest.mark.parametrize(("mask", "text"), [
    ('rle="1, 2" left="0" top="0" width="4" height="3"', "runs sum to 3, expected width x height = 4x3 = 12"),
    ('rle="12" left="62" top="0" width="4" height="3"', "exceeds the 64x48 image"),
    ('rle="a,b" left="0" top="0" width="4" height="3"', "comma-separated run lengths"),
    ('rle="12" left="0" top="0" width="4"', "lacks height"),
])
def test_bad_masks(tmp_path: Path, mask: str, text: str) -> None:
    with pytest.raises(DatasetError) as exc:
        one(tmp_path, f'<mask label="scratch" {mask}/>')
    assert exc.value.code in ("shape_invalid", "box_missing") and text in str(exc.value)
    assert "annotations.xml:image[0] 'a.jpg':mask[0]" in str(exc.value)


def test_points_and_other_shapes_are_counted_and_skipped(tmp_path: Path) -> None:
    shapes = ('<points label="scratch" points="1,1;2,2"/><ellipse label="scratch" cx="5" cy="5" rx="2" ry="2"/>'
              + box_xml("scratch", [1, 1, 5, 5]) + '<tag label="reviewed" source="manual"/>')
    ds, report = one(tmp_path, shapes)
    assert len(ds.images[0]) == 1 and ds.images[0].meta["tags"] == ["reviewed"]
    assert [f.where.rsplit(":", 1)[1] for f in report.findings if f.code == "shape_unsupported"] == [
        "points[0]", "ellipse[1]"]


def test_subsets_from_image_and_task(tmp_path: Path) -> None:
    images = (image_xml("a.jpg", (48, 64), i=0) + image_xml("b.jpg", (48, 64), i=1, extra=' subset="Validation"')
              + image_xml("c.jpg", (48, 64), i=2, extra=' subset="default"'))
    files = {"a.jpg": (48, 64), "b.jpg": (48, 64), "c.jpg": (48, 64)}
    ds, _ = read(make(tmp_path / "ds", images, files, subset="Train"))
    assert {r.name: r.split for r in ds.images} == {"a.jpg": "train", "b.jpg": "val", "c.jpg": None}


def test_project_export_labels_and_task_subsets(tmp_path: Path) -> None:
    skeleton_point = "<label><name>kp1</name><parent>skel</parent></label>"
    meta = ("<meta><project><id>1</id><labels>" + labels_xml(["crack", "dent"]) + skeleton_point + "</labels><tasks>"
            "<task><id>11</id><subset>Train</subset></task><task><id>12</id><subset>Test</subset></task>"
            "</tasks></project></meta>")
    images = (image_xml("a.jpg", (48, 64), box_xml("dent", [1, 1, 5, 5]), 0, ' task_id="11"')
              + image_xml("b.jpg", (48, 64), "", 1, ' task_id="12"'))
    ds, _ = read(make(tmp_path / "ds", images, {"a.jpg": (48, 64), "b.jpg": (48, 64)}, meta=meta))
    assert ds.labels.names == ["crack", "dent"] and ds.images[0].class_ids.tolist() == [1]
    assert [r.split for r in ds.images] == ["train", "test"]


def test_no_labels_in_meta_discovers_sorted_classes(tmp_path: Path) -> None:
    ds, _ = one(tmp_path, box_xml("zeta", [1, 1, 5, 5]) + box_xml("alpha", [1, 1, 5, 5]), meta="<meta/>")
    assert ds.labels.names == ["alpha", "zeta"] and ds.images[0].class_ids.tolist() == [1, 0]


def test_images_beside_the_xml_and_missing_images(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    write_image(root / "sub" / "a.jpg", (48, 64))
    xml = root / "task.xml"
    xml.write_text(cvat_xml(image_xml("sub/a.jpg", (48, 64)) + image_xml("gone.jpg", (10, 20), i=1)))
    assert get_format("cvat").detect(xml).score > 0 and get_format("cvat").detect(root).score > 0
    ds, report = read(xml)
    assert [r.name for r in ds.images] == ["sub/a.jpg", "gone.jpg"]
    assert ds.images[1].path is None and ds.images[1].size_hw == (10, 20)
    assert report.counts()["image_missing"] == 1 and ds.images[1].meta["source_id"] == 1


def test_declared_size_is_checked_against_the_image(tmp_path: Path) -> None:
    ds, report = read(make(tmp_path / "ds", image_xml("a.jpg", (10, 10)), {"a.jpg": (48, 64)}))
    assert ds.images[0].size_hw == (48, 64) and report.counts()["size_mismatch"] == 1


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape_xml", "code", "text"), [
    ('<box label="scratch" xtl="1" ytl="1" xbr="x" ybr="5"/>', "box_invalid", "must be numbers"),
    ('<box label="scratch" xtl="1" ytl="1" xbr="5"/>', "box_missing", "lacks ybr"),
    ('<box label="scratch" xtl="1" ytl="1" xbr="5" ybr="5" rotation="abc"/>', "box_invalid", "rotation"),
    ('<box label="scratch" xtl="9" ytl="1" xbr="5" ybr="5"/>', "box_inverted", "inverted"),
    ('<box label="scratch" xtl="nan" ytl="1" xbr="5" ybr="5"/>', "box_nan", "non-finite"),
    ('<box xtl="1" ytl="1" xbr="5" ybr="5"/>', "class_missing", "no label"),
    ('<box label="rust" xtl="1" ytl="1" xbr="5" ybr="5"/>', "class_unknown", "unknown class 'rust'"),
    ('<polygon label="scratch" points="1,1;5,5"/>', "shape_invalid", "at least 3"),
    ('<polygon label="scratch" points="1,1;5;5,9"/>', "shape_invalid", "must be 'x,y;x,y;...'"),
    ('<polygon label="scratch" points="1,1,7;5,5,7;5,9,7"/>', "shape_invalid", "at least 3 'x,y' points"),
    ('<polyline label="scratch" points="a,b;1,1"/>', "shape_invalid", "must be 'x,y;x,y;...'"),
])
def test_bad_shapes_are_one_line_errors(tmp_path: Path, shape_xml: str, code: str, text: str) -> None:
    with pytest.raises(DatasetError) as exc:
        one(tmp_path, box_xml("scratch", [1, 1, 5, 5]) + shape_xml)
    msg = str(exc.value)
    assert exc.value.code == code and text in msg and "\n" not in msg
    assert "annotations.xml:image[0] 'a.jpg':" in msg and "[1]" in msg


def test_bad_shape_policies(tmp_path: Path) -> None:
    images = (image_xml("a.jpg", (48, 64), '<box label="rust" xtl="1" ytl="1" xbr="5" ybr="5"/>'
                        + box_xml("scratch", [1, 1, 5, 5]))
              + image_xml("b.jpg", (48, 64), i=1))
    root = make(tmp_path / "ds", images, {"a.jpg": (48, 64), "b.jpg": (48, 64)})
    ds, report = read(root, "skip")
    assert [r.name for r in ds.images] == ["b.jpg"] and report.skipped[0].code == "class_unknown"
    ds, report = read(root, "keep")
    assert len(ds.images[0]) == 1 and report.errors[0].code == "class_unknown"


@pytest.mark.parametrize("name", ["../outside.jpg", "/abs/a.jpg", ""])
def test_bad_image_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetError) as exc:
        read(make(tmp_path / "ds", image_xml(name, (48, 64))))
    assert exc.value.code in ("path_escape", "path_empty") and "annotations.xml:image[0]" in str(exc.value)


def test_video_tracks_are_refused(tmp_path: Path) -> None:
    (tmp_path / "annotations.xml").write_text(cvat_xml('<track id="0" label="scratch"><box frame="0"/></track>'))
    with pytest.raises(DatasetError, match="CVAT for video .* export the task as 'CVAT for images 1.1'"):
        read(tmp_path)


def test_not_cvat(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_text("<annotation><filename>a.jpg</filename></annotation>")
    assert get_format("cvat").detect(tmp_path) is None
    with pytest.raises(DatasetError, match="no CVAT annotations.xml"):
        read(tmp_path)
