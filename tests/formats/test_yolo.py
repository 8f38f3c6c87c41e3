"""YOLO reader and writer: conformance suite plus Ultralytics / darknet layouts, errors and losses."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgevision.core import RLE, Dataset, DatasetError, ImageRecord, LabelMap, Polygon, Polyline
from edgevision.formats import detect_format, get_format
from edgevision.formats.yolo import label_candidates, label_text, resolve_ref
from tests.formats.conformance import FormatConformance, write_image
from tests.formats.format_io import read_as, write_as


def yolo_line(c: int, box: list[float], size_hw: tuple[int, int]) -> str:
    """A label line computed by hand (not with the writer under test)."""
    (x1, y1, x2, y2), (h, w) = box, size_hw
    return f"{c} {(x1 + x2) / 2 / w!r} {(y1 + y2) / 2 / h!r} {(x2 - x1) / w!r} {(y2 - y1) / h!r}"


def put(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


read = partial(read_as, "yolo")
write = partial(write_as, "yolo")


class TestYoloConformance(FormatConformance):
    """Ultralytics layout by hand: data.yaml (names as a list), images/<split>, labels/<split>."""

    format_name = "yolo"

    def build(self, root: Path, spec: Dataset) -> Path:
        split_of = {"line 01.jpg": "train", "empty.jpg": "train", "défaut ü 02.png": "val"}
        for i, r in enumerate(spec.images):
            split = split_of[r.name]
            write_image(root / "images" / split / r.name, r.size_hw, seed=i)
            lines = [yolo_line(c, b, r.size_hw) for b, c in zip(r.boxes.tolist(), r.class_ids.tolist(), strict=True)]
            put(root / "labels" / split / (Path(r.name).stem + ".txt"), "".join(ln + "\n" for ln in lines))
        put(root / "data.yaml", "path: .\ntrain: images/train\nval: images/val\nnames:\n  - scratch\n  - pit hole\n")
        return root


def small_dataset(root: Path, names: str = "names: [a, b]\n") -> Path:
    """images/train: x.jpg (one box of class 1), y.jpg (no label file)."""
    write_image(root / "images/train/x.jpg", (20, 40))
    write_image(root / "images/train/y.jpg", (20, 40), seed=1)
    put(root / "labels/train/x.txt", "1 0.5 0.5 0.5 0.5\n")
    put(root / "data.yaml", f"train: images/train\nval: images/train\n{names}")
    return root


# -- reading -----------------------------------------------------------------------------------
def test_label_candidates_follow_ultralytics_and_darknet() -> None:
    p = Path("/d/images/x/images/train/a.b.jpg")
    assert label_candidates(p) == [Path("/d/images/x/labels/train/a.b.txt"), Path("/d/images/x/images/train/a.b.txt")]
    assert label_candidates(Path("/d/obj/a.jpg")) == [Path("/d/obj/a.txt")]


def test_names_dict_list_and_missing_label_is_background(tmp_path: Path) -> None:
    a, _ = read(small_dataset(tmp_path / "list"))
    b, report = read(small_dataset(tmp_path / "dict", "names:\n  0: a\n  1: b\n") / "data.yaml")
    for ds in (a, b):
        assert ds.labels.names == ["a", "b"]
        x, y = sorted(ds.images, key=lambda r: r.name)
        np.testing.assert_allclose(x.boxes, [[10, 5, 30, 15]])
        assert x.class_ids.tolist() == [1] and y.is_background and x.split == "train"
    codes = [f.code for f in report.findings]
    assert "label_missing" in codes and "split_repeated" in codes  # val: images/train is read once
    gap, rep = read(small_dataset(tmp_path / "gap", "names: {0: a, 2: c}\n"))
    assert gap.labels.names == ["a", "class1", "c"] and rep.findings[0].code == "names_gap"


def test_list_file_splits_relative_and_absolute(tmp_path: Path) -> None:
    for n in ("a", "b", "c"):
        write_image(tmp_path / "images" / f"{n}.jpg", (10, 10))
        put(tmp_path / "labels" / f"{n}.txt", "0 0.5 0.5 0.2 0.2\n")
    put(tmp_path / "train.txt", f"./images/a.jpg\n{tmp_path / 'images/b.jpg'}\n\n")
    put(tmp_path / "val.txt", "images/c.jpg\n")
    put(tmp_path / "data.yaml", f"path: {tmp_path}\ntrain: train.txt\nval: [val.txt]\nnames: [d]\n")
    ds, _ = read(tmp_path)
    assert {r.name: r.split for r in ds.images} == {"a.jpg": "train", "b.jpg": "train", "c.jpg": "val"}
    assert all(len(r) == 1 for r in ds.images)


def test_list_file_missing_image_is_an_error(tmp_path: Path) -> None:
    write_image(tmp_path / "images/a.jpg", (10, 10))
    put(tmp_path / "train.txt", "images/a.jpg\nimages/gone.jpg\n")
    put(tmp_path / "data.yaml", "train: train.txt\nval: train.txt\nnames: [d]\n")
    with pytest.raises(DatasetError, match=r"train\.txt:line 2: image 'images/gone\.jpg' not found"):
        read(tmp_path)
    ds, report = read(tmp_path, on_error="skip")
    assert [r.name for r in ds.images] == ["a.jpg"] and report.skipped[0].code == "image_missing"


def test_darknet_obj_data_layout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for n in ("a", "b"):
        write_image(data / "obj" / f"{n}.jpg", (30, 30))
        put(data / "obj" / f"{n}.txt", "1 0.5 0.5 1 1\n" if n == "a" else "")
    put(data / "obj.names", "bolt\nnut\n\n")
    put(data / "train.txt", "data/obj/a.jpg\n")
    put(data / "valid.txt", "data/obj/b.jpg\n")
    put(data / "obj.data", "classes = 2\ntrain = data/train.txt\nvalid = data/valid.txt\nnames = data/obj.names\n"
                           "backup = backup/\n")
    assert detect_format(data)[0].name == "yolo" and get_format("yolo").detect(data / "obj.data")
    ds, _ = read(data / "obj.data")
    assert ds.labels.names == ["bolt", "nut"]
    assert {r.name: (r.split, len(r)) for r in ds.images} == {"a.jpg": ("train", 1), "b.jpg": ("val", 0)}
    np.testing.assert_allclose(ds.images[0].boxes, [[0, 0, 30, 30]])


def test_segmentation_labels_become_polygons(tmp_path: Path) -> None:
    write_image(tmp_path / "images/train/s.png", (100, 200))
    put(tmp_path / "labels/train/s.txt", "0 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.6\n1 0.5 0.5 0.1 0.2\n")
    put(tmp_path / "data.yaml", "train: images/train\nval: images/train\nnames: [a, b]\n")
    ds, _ = read(tmp_path)
    (r,) = ds.images
    assert isinstance(r.shapes[0], Polygon) and r.shapes[1] is None
    np.testing.assert_allclose(r.shapes[0].rings[0], [[20, 10], [100, 10], [100, 60], [20, 60]])
    np.testing.assert_allclose(r.boxes, [[20, 10, 100, 60], [90, 40, 110, 60]])


def test_bare_folder_without_yaml(tmp_path: Path) -> None:
    write_image(tmp_path / "images/train/a.jpg", (10, 10))
    write_image(tmp_path / "images/valid/b.jpg", (10, 10))
    put(tmp_path / "labels/train/a.txt", "2 0.5 0.5 0.2 0.2\n")
    fmt, det = detect_format(tmp_path)
    assert fmt.name == "yolo" and "no data.yaml" in det.reason
    ds, report = read(tmp_path)
    assert ds.labels.names == ["class0", "class1", "class2"] and report.findings[0].code == "names_unknown"
    assert {r.name: r.split for r in ds.images} == {"a.jpg": "train", "b.jpg": "val"}
    named, _ = read(tmp_path, names=["x", "y", "z"])
    assert named.labels.names == ["x", "y", "z"]


def test_roboflow_relative_parent_paths_and_moved_path_key(tmp_path: Path) -> None:
    write_image(tmp_path / "train/images/a.jpg", (10, 10))
    put(tmp_path / "train/labels/a.txt", "0 0.5 0.5 0.5 0.5\n")
    put(tmp_path / "data.yaml", "path: /nowhere/dataset\ntrain: ../train/images\nval: ../train/images\nnc: 1\nnames: ['x']\n")
    ds, report = read(tmp_path / "data.yaml")
    assert len(ds.images) == 1 and len(ds.images[0]) == 1
    assert report.findings[0].code == "path_moved"


@pytest.mark.parametrize(
    ("line", "code", "text"),
    [
        ("5 0.5 0.5 0.2 0.2", "class_unknown", "class id 5 is out of range: the dataset has nc=2 classes (ids 0..1)"),
        ("0.5 0.5 0.5 0.2 0.2", "class_unknown", "expected a class id in 0..1"),
        ("0 0.5 0.5 0.2", "label_malformed", "expected 5 columns"),
        ("0 0.5 nan 0.2 0.2", "box_nan", "non-finite"),
        ("0 0.5 zero 0.2 0.2", "label_malformed", "expected numbers"),
        ("0 1.5 0.5 0.2 0.2", "box_outside", "outside the 40x20 image"),
        ("0 0.5 0.5 0 0.2", "box_empty", "zero area"),
    ],
)
def test_bad_label_lines(tmp_path: Path, line: str, code: str, text: str) -> None:
    root = small_dataset(tmp_path)
    write_image(root / "images/train/z.jpg", (20, 40), seed=2)
    put(root / "labels/train/x.txt", f"1 0.5 0.5 0.5 0.5\n{line}\n")
    with pytest.raises(DatasetError) as e:
        read(root)
    msg = str(e.value)
    assert e.value.code == code and text in msg and "x.txt:line 2" in msg and "\n" not in msg, msg
    ds, report = read(root, on_error="skip")  # only the bad image goes
    assert sorted(r.name for r in ds.images) == ["y.jpg", "z.jpg"] and [f.code for f in report.skipped] == [code]


def test_slightly_outside_is_a_warning_and_keep_policy(tmp_path: Path) -> None:
    root = small_dataset(tmp_path)
    put(root / "labels/train/x.txt", "1 0.95 0.5 0.2 0.2\n1 0.5 0.5 1.0001 1\n7 0.5 0.5 0.1 0.1\n")
    ds, report = read(root, on_error="keep")
    x = next(r for r in ds.images if r.name == "x.jpg")
    assert len(x) == 2  # the out-of-range class cannot be kept
    assert [f.code for f in report.findings if f.severity == "warning"] == ["box_partly_outside"]
    assert "2 objects extend past" in next(f.message for f in report.findings if f.code == "box_partly_outside")


def test_corrupt_image_is_reported_with_its_path(tmp_path: Path) -> None:
    root = small_dataset(tmp_path)
    (root / "images/train/y.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError) as e:
        read(root)
    assert e.value.code == "image_corrupt" and "y.jpg" in str(e.value)


def test_malformed_yaml_and_missing_split(tmp_path: Path) -> None:
    put(tmp_path / "a/data.yaml", "train: [images\nnames: [a]\n")
    with pytest.raises(DatasetError, match=r"data\.yaml: malformed YAML at line"):
        read(tmp_path / "a")
    put(tmp_path / "b/data.yaml", "train: images/train\nnames: [a]\n")
    with pytest.raises(DatasetError, match="'images/train' not found under"):
        read(tmp_path / "b")


def test_resolve_ref_drops_leading_folders(tmp_path: Path) -> None:
    put(tmp_path / "obj/a.jpg", "")
    assert resolve_ref("data/obj/a.jpg", [tmp_path]) == tmp_path / "obj/a.jpg"
    assert resolve_ref("C:\\darknet\\data\\obj\\a.jpg", [tmp_path]) == tmp_path / "obj/a.jpg"
    assert resolve_ref("nothing.jpg", [tmp_path]) is None


# -- writing -----------------------------------------------------------------------------------
def test_written_yaml_works_like_ultralytics_check_det_dataset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds, _ = read(small_dataset(tmp_path / "src"))
    for r in ds.images:
        r.split = None
    with caplog.at_level(logging.WARNING, logger="edgevision.formats.yolo"):
        write(ds, tmp_path / "out")
    assert "no 'val' split" in caplog.text
    out = tmp_path / "out"
    doc = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))
    assert doc == {"train": "images/train", "val": "images/train", "nc": 2, "names": {0: "a", 1: "b"}}
    # Ultralytics without a 'path' key: root = the yaml's folder; keys are joined to it
    root = Path((out / "data.yaml").parent)
    assert all((root / doc[k]).is_dir() for k in ("train", "val"))
    assert (out / "labels/train/y.txt").read_text() == ""  # background: empty label file
    assert (out / "labels/train/x.txt").read_text() == "1 0.5 0.5 0.5 0.5\n"


def test_write_clips_and_counts_losses(tmp_path: Path) -> None:
    ds = Dataset(LabelMap(["a", "b"], source_ids=[3, 9], extra=[{"supercategory": "s"}, {}]), [
        ImageRecord("p.jpg", (10, 20), boxes=[[-2, 1, 5, 5], [30, 1, 40, 5], [1, 1, 4, 4], [2, 2, 3, 3]],
                    class_ids=[0, 1, 1, 0], attributes=[{"occluded": True}, {}, {"occluded": False, "note": 1}, {}],
                    shapes=[None, None, Polyline(np.array([[1.0, 1], [4, 4]])), None], scores=[1, 1, 1, 1]),
    ])
    losses = write(ds, tmp_path / "out", images="none")
    assert dict(losses.counts) == {
        "class source ids (YOLO ids are 0..K-1)": 2,
        "class fields such as supercategory (YOLO holds names only)": 1,
        "attribute 'occluded' (YOLO labels hold no attributes)": 2,
        "attribute 'note' (YOLO labels hold no attributes)": 1,
        "score (YOLO labels hold no confidence)": 4,
        "polyline (written as its box: not every object has a polygon or mask)": 1,
        "box clipped to image": 1,
        "box outside image (dropped)": 1,
    }
    assert (tmp_path / "out/labels/train/p.txt").read_text().splitlines() == [
        "0 0.125 0.3 0.25 0.4", "1 0.125 0.25 0.15 0.3", "0 0.125 0.25 0.05 0.1"]


def test_write_segmentation_when_every_object_has_a_polygon_or_mask(tmp_path: Path) -> None:
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 30:50] = 1
    mask[30:32, 2:4] = 1  # a second part: lost
    poly = Polygon((np.array([[1.0, 1], [11, 1], [11, 9]]), np.array([[20.0, 20], [21, 20], [21, 21]])))
    write_image(tmp_path / "src/m.jpg", (40, 60))
    ds = Dataset(LabelMap(["a"]), [ImageRecord("m.jpg", (40, 60), boxes=[[1, 1, 11, 9], [2, 10, 50, 32]],
                                               class_ids=[0, 0], shapes=[poly, RLE.encode(mask)],
                                               path=tmp_path / "src/m.jpg", split="val")])
    losses = write(ds, tmp_path / "out")
    assert losses.counts["polygon/mask parts beyond the largest (YOLO holds one polygon per object)"] == 2
    lines = (tmp_path / "out/labels/val/m.txt").read_text().splitlines()
    assert lines[0] == "0 0.01666667 0.025 0.18333333 0.025 0.18333333 0.225"
    back, _ = read(tmp_path / "out")
    r = back.images[0]
    assert all(isinstance(s, Polygon) for s in r.shapes) and r.split == "val"
    np.testing.assert_allclose(r.boxes[1], [30.5, 10.5, 49.5, 19.5], atol=1e-6)  # contour through pixel centres


def test_write_precision_on_8000_px_images(tmp_path: Path) -> None:
    box = [[1234.56789, 77.001, 7999.123456, 5000.5]]
    ds = Dataset(LabelMap(["a"]), [ImageRecord("big.png", (6000, 8000), boxes=box, class_ids=[0])])
    write(ds, tmp_path / "out", images="none")
    vals = np.array((tmp_path / "out/labels/train/big.txt").read_text().split()[1:], dtype=float)
    back = np.array([[vals[0] - vals[2] / 2, vals[1] - vals[3] / 2, vals[0] + vals[2] / 2, vals[1] + vals[3] / 2]])
    np.testing.assert_allclose(back * [8000, 6000, 8000, 6000], box, atol=1e-3)


def test_label_file_clash_is_refused(tmp_path: Path) -> None:
    ds = Dataset(LabelMap(["a"]), [ImageRecord("a.jpg", (4, 4)), ImageRecord("a.png", (4, 4))])
    with pytest.raises(DatasetError, match="would share the label file labels/train/a.txt"):
        write(ds, tmp_path / "out", images="none")


def test_detect_yaml_file_and_not_other_folders(tmp_path: Path) -> None:
    root = small_dataset(tmp_path / "ds")
    assert get_format("yolo").detect(root / "data.yaml").score == 0.9
    (tmp_path / "plain").mkdir()
    put(tmp_path / "plain/config.yaml", "lr: 0.1\n")
    assert get_format("yolo").detect(tmp_path / "plain") is None
    assert get_format("yolo").detect(tmp_path / "plain/config.yaml") is None


def test_other_split_names_round_trip(tmp_path: Path) -> None:
    ds = Dataset(LabelMap(["a"]), [ImageRecord("a.png", (8, 8), boxes=[[1, 1, 4, 4]], class_ids=[0], split="fold1"),
                                   ImageRecord("b.png", (8, 8), split="val")])
    for r in ds.images:
        r.path = write_image(tmp_path / "src" / r.name, r.size_hw)
    write(ds, tmp_path / "out")
    assert "fold1: images/fold1" in (tmp_path / "out/data.yaml").read_text()
    back, _ = read(tmp_path / "out")
    assert {r.name: r.split for r in back.images} == {"a.png": "fold1", "b.png": "val"}


def test_label_text_matches_python_formatting() -> None:
    rng = np.random.default_rng(0)
    vals = np.concatenate([[0, 1, 1e-9, 0.5, 0.999999996, 0.123456785, 5e-9], rng.uniform(0, 1, 993)])
    per_line = np.array([4] * 200 + [7, 193])
    cls = rng.integers(0, 12345, len(per_line))
    text, line_len = label_text(cls, vals, per_line)
    ref, at = [], 0
    for c, k in zip(cls.tolist(), per_line.tolist(), strict=True):
        nums = [(f"{v:.8f}".rstrip("0").rstrip(".")) for v in np.round(vals[at : at + k] * 1e8) / 1e8]
        ref.append(" ".join([str(c), *nums]) + "\n")
        at += k
    assert text.decode() == "".join(ref)
    assert line_len.tolist() == [len(r) for r in ref]
