"""COCO reader and writer: conformance suite plus COCO specifics (RLE, crowd, ids, splits, pycocotools)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevision.core import RLE, ConfigError, Dataset, DatasetError, ImageRecord, LabelMap, Polygon, Polyline
from edgevision.formats import detect_format, get_format
from edgevision.formats.coco import split_from_name
from tests.formats.conformance import FormatConformance, golden_spec, write_image
from tests.formats.format_io import read_as, write_as


def write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def coco_doc(images: list[dict], anns: list[dict], cats: list[dict] | None = None) -> dict:
    cats = cats if cats is not None else [{"id": 1, "name": "scratch"}, {"id": 2, "name": "pit"}]
    return {"images": images, "annotations": anns, "categories": cats}


def ann(i: int, image_id: int, cat: int, bbox: list[float], **kw: Any) -> dict:
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": 0, "area": 1, **kw}


read = partial(read_as, "coco")
write = partial(write_as, "coco")


class TestCocoConformance(FormatConformance):
    """COCO 2017 layout, written by hand: annotations/instances_<split>2017.json + <split>2017/."""

    format_name = "coco"

    def build(self, root: Path, spec: Dataset) -> Path:
        split_of = {"line 01.jpg": "train2017", "empty.jpg": "train2017", "défaut ü 02.png": "val2017"}
        cat_ids = [3, 7]  # non-contiguous on purpose
        docs: dict[str, dict] = {}
        for n, r in enumerate(spec.images, start=1):
            split = split_of[r.name]
            write_image(root / split / r.name, r.size_hw, seed=n)
            doc = docs.setdefault(split, coco_doc([], [], [{"id": c, "name": nm, "supercategory": "defect"}
                                                         for c, nm in zip(cat_ids, spec.labels.names, strict=True)]))
            doc["images"].append({"id": n * 10, "file_name": r.name, "height": r.size_hw[0], "width": r.size_hw[1]})
            for (x1, y1, x2, y2), c in zip(r.boxes.tolist(), r.class_ids.tolist(), strict=True):
                doc["annotations"].append(ann(len(doc["annotations"]) + 1, n * 10, cat_ids[c], [x1, y1, x2 - x1, y2 - y1]))
        for split, doc in docs.items():
            write_json(root / "annotations" / f"instances_{split}.json", doc)
        return root


# -- reading -----------------------------------------------------------------------------------
def test_split_from_name() -> None:
    assert split_from_name("instances_val2017") == ("val", "val2017")
    assert split_from_name("instances_train") == ("train", "train")
    assert split_from_name("valid") == ("val", "valid")
    assert split_from_name("image_info_test-dev2017")[0] == "test"
    assert split_from_name("_annotations.coco") == (None, None)


def test_conformance_fixture_keeps_ids_splits_and_supercategory(tmp_path: Path) -> None:
    root = TestCocoConformance().build(tmp_path, golden_spec())
    ds, _ = read(root)
    assert ds.labels.names == ["scratch", "pit hole"] and ds.labels.source_ids == [3, 7]
    assert ds.labels.extra == [{"supercategory": "defect"}, {"supercategory": "defect"}]
    assert {r.name: r.split for r in ds.images} == {"line 01.jpg": "train", "empty.jpg": "train",
                                                     "défaut ü 02.png": "val"}
    assert {r.meta["coco_id"] for r in ds.images} == {10, 20, 30}


def rle_dataset(root: Path) -> Path:
    """One 20x30 image: a compressed RLE, an uncompressed crowd RLE and a polygon; ids 5 and 12."""
    from pycocotools import mask as mask_utils

    m = np.zeros((20, 30), np.uint8)
    m[2:8, 3:10] = 1
    compressed = mask_utils.encode(np.asfortranarray(m))
    compressed["counts"] = compressed["counts"].decode("ascii")
    crowd = np.zeros((20, 30), np.uint8)
    crowd[10:18, 12:28] = 1
    flat = crowd.reshape(-1, order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    write_image(root / "images" / "a.png", (20, 30))
    anns = [
        ann(1, 1, 5, [3, 2, 7, 6], segmentation=compressed),
        ann(2, 1, 12, [12, 10, 16, 8], segmentation={"size": [20, 30], "counts": runs}, iscrowd=1),
        ann(3, 1, 12, [20, 1, 6, 5], segmentation=[[20, 1, 26, 1, 26, 6, 20, 6]]),
    ]
    cats = [{"id": 5, "name": "crack", "supercategory": "surface"}, {"id": 12, "name": "dent"}]
    return write_json(root / "annotations" / "instances_default.json",
                      coco_doc([{"id": 1, "file_name": "a.png", "height": 20, "width": 30}], anns, cats))


def test_rle_compressed_uncompressed_crowd_and_polygon(tmp_path: Path) -> None:
    ds, _ = read(rle_dataset(tmp_path))
    (r,) = ds.images
    assert r.path is not None and r.path.name == "a.png" and r.split is None
    s0, s1, s2 = r.shapes
    assert isinstance(s0, RLE) and isinstance(s0.counts, str) and s0.area() == 42
    assert isinstance(s1, RLE) and isinstance(s1.counts, tuple) and s1.area() == 8 * 16
    assert isinstance(s2, Polygon) and s2.area() == 30
    assert r.attributes == [{}, {"iscrowd": True}, {}]
    np.testing.assert_array_equal(r.class_ids, [0, 1, 1])
    np.testing.assert_allclose(r.boxes[1], [12, 10, 28, 18])


def test_rle_crowd_and_ids_round_trip(tmp_path: Path) -> None:
    ds, _ = read(rle_dataset(tmp_path / "src"))
    write(ds, tmp_path / "out")
    doc = json.loads((tmp_path / "out/annotations/instances_train.json").read_text(encoding="utf-8"))
    assert [(c["id"], c["name"]) for c in doc["categories"]] == [(5, "crack"), (12, "dent")]
    assert doc["categories"][0]["supercategory"] == "surface"
    a0, a1, a2 = doc["annotations"]
    assert [a["category_id"] for a in doc["annotations"]] == [5, 12, 12]
    assert [a["iscrowd"] for a in doc["annotations"]] == [0, 1, 0]
    assert isinstance(a0["segmentation"]["counts"], str) and isinstance(a1["segmentation"]["counts"], str)
    assert a2["segmentation"] == [[20.0, 1.0, 26.0, 1.0, 26.0, 6.0, 20.0, 6.0]]
    assert [a["area"] for a in doc["annotations"]] == [42, 128, 30]
    back, _ = read(tmp_path / "out")
    (r,) = back.images
    assert back.labels.source_ids == [5, 12] and r.attributes == [{}, {"iscrowd": True}, {}]
    np.testing.assert_array_equal(r.shapes[1].decode(), ds.images[0].shapes[1].decode())
    assert r.shapes[2] == ds.images[0].shapes[2]


def test_several_split_files_and_background_images(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        imgs = [{"id": i, "file_name": f"{split}_{i}.jpg", "height": 40, "width": 50} for i in range(1, n + 1)]
        write_json(tmp_path / "annotations" / f"instances_{split}.json", coco_doc(imgs, [ann(1, 1, 2, [1, 2, 10, 10])]))
    write_json(tmp_path / "annotations" / "person_keypoints_train.json", coco_doc([], []))
    ds, report = read(tmp_path)
    assert ds.splits == ["train", "val"]
    assert sorted(r.name for r in ds.split("train")) == ["train_1.jpg", "train_2.jpg", "train_3.jpg"]
    assert sum(r.is_background for r in ds.images) == 3
    assert {f.code for f in report.findings} >= {"coco_file_ignored", "image_missing"}
    assert all(r.path is None for r in ds.images) and not report.errors


def test_roboflow_layout_split_from_folder(tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        write_image(tmp_path / split / "a.jpg", (16, 16))
        write_json(tmp_path / split / "_annotations.coco.json",
                   coco_doc([{"id": 0, "file_name": "a.jpg", "height": 16, "width": 16}], [ann(0, 0, 1, [1, 1, 4, 4])]))
    ds, report = read(tmp_path)
    assert ds.splits == ["train", "val", "test"]
    assert sorted(r.name for r in ds.images) == ["a.jpg", "test/a.jpg", "val/a.jpg"]  # same name in 3 splits
    assert all(r.path is not None and r.path.parent.name in ("train", "valid", "test") for r in ds.images)
    assert [f.code for f in report.findings].count("name_clash") == 2


def test_images_found_in_images_split_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "val" / "x.jpg", (10, 12))
    write_image(tmp_path / "images" / "train" / "x.jpg", (30, 30))  # same name in another split: not taken
    write_json(tmp_path / "annotations" / "instances_val.json",
               coco_doc([{"id": 1, "file_name": "x.jpg", "height": 10, "width": 12}], []))
    ds, _ = read(tmp_path / "annotations" / "instances_val.json")
    assert ds.images[0].path == tmp_path / "images" / "val" / "x.jpg" and ds.images[0].split == "val"


def test_size_missing_is_read_from_image_and_missing_both_is_an_error(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", (21, 33))
    doc = coco_doc([{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "gone.jpg"}], [])
    f = write_json(tmp_path / "x.json", doc)
    with pytest.raises(DatasetError) as e:
        read(f)
    assert e.value.code == "image_missing" and "gone.jpg" in str(e.value) and "x.json" in str(e.value)
    ds, report = read(f, on_error="skip")
    assert [(r.name, r.size_hw) for r in ds.images] == [("a.jpg", (21, 33))]
    assert report.skipped[0].code == "image_missing"


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ({"bbox": [float("nan"), 1, 2, 2]}, "box_nan"),
        ({"bbox": [1, 1, -2, 2]}, "box_inverted"),
        ({"bbox": [1, 1, 0, 2]}, "box_empty"),
        ({"bbox": [60, 1, 5, 5]}, "box_outside"),
        ({"category_id": 99}, "class_unknown"),
        ({"bbox": [1, 2]}, "box_malformed"),
        ({"segmentation": {"size": [3, 3], "counts": [1, 2]}}, "shape_malformed"),
    ],
)
def test_bad_annotation_fails_skip_drops_only_its_image(tmp_path: Path, bad: dict, code: str) -> None:
    imgs = [{"id": i, "file_name": f"{i}.jpg", "height": 40, "width": 50} for i in (1, 2, 3)]
    anns = [ann(1, 1, 1, [1, 1, 5, 5]), {**ann(2, 2, 1, [1, 1, 5, 5]), **bad}, ann(3, 3, 2, [2, 2, 5, 5])]
    f = write_json(tmp_path / "instances_train.json", coco_doc(imgs, anns))
    with pytest.raises(DatasetError) as e:
        read(f)
    msg = str(e.value)
    assert e.value.code == code and "\n" not in msg and "instances_train.json" in msg and "id 2" in msg, msg
    ds, report = read(f, on_error="skip")
    assert [r.name for r in ds.images] == ["1.jpg", "3.jpg"]
    assert [s.code for s in report.skipped] == [code]


def test_keep_policy_records_and_keeps_what_is_representable(tmp_path: Path) -> None:
    imgs = [{"id": 1, "file_name": "1.jpg", "height": 40, "width": 50}]
    anns = [ann(1, 1, 1, [1, 1, -2, 2]), ann(2, 1, 99, [1, 1, 5, 5]), ann(3, 1, 2, [2, 2, 5, 5])]
    ds, report = read(write_json(tmp_path / "a.json", coco_doc(imgs, anns)), on_error="keep")
    assert {f.code for f in report.errors} == {"box_inverted", "class_unknown"}
    assert len(ds.images[0]) == 2  # the unknown category cannot be kept


def test_unknown_image_id(tmp_path: Path) -> None:
    imgs = [{"id": 1, "file_name": "1.jpg", "height": 40, "width": 50}]
    f = write_json(tmp_path / "a.json", coco_doc(imgs, [ann(1, 1, 1, [1, 1, 5, 5]), ann(7, 42, 1, [1, 1, 5, 5])]))
    with pytest.raises(DatasetError, match=r"a\.json:annotations\[1\] \(id 7\): image_id 42 is not in 'images'"):
        read(f)
    ds, report = read(f, on_error="skip")
    assert len(ds.images) == 1 and len(ds.images[0]) == 1 and report.skipped[0].code == "image_unknown"


def test_partly_outside_box_is_a_warning_and_bbox_may_come_from_segmentation(tmp_path: Path) -> None:
    imgs = [{"id": 1, "file_name": "1.jpg", "height": 40, "width": 50}]
    anns = [ann(1, 1, 1, [45, 1, 10, 5]),
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[1, 1, 9, 1, 9, 4]]}]
    ds, report = read(write_json(tmp_path / "a.json", coco_doc(imgs, anns)))
    np.testing.assert_allclose(ds.images[0].boxes, [[45, 1, 55, 6], [1, 1, 9, 4]])
    assert [f.code for f in report.findings] == ["image_missing", "box_partly_outside"]


def test_duplicate_and_conflicting_categories_are_fatal(tmp_path: Path) -> None:
    dup = coco_doc([], [], [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}])
    with pytest.raises(DatasetError, match="category name 'a' is used by ids 1 and 2"):
        read(write_json(tmp_path / "d.json", dup))
    write_json(tmp_path / "c" / "instances_train.json", coco_doc([], [], [{"id": 1, "name": "a"}]))
    write_json(tmp_path / "c" / "instances_val.json", coco_doc([], [], [{"id": 1, "name": "b"}]))
    with pytest.raises(DatasetError, match="category id 1 is 'b' here but 'a'"):
        read(tmp_path / "c")


def test_not_coco_and_path_escape(tmp_path: Path) -> None:
    f = write_json(tmp_path / "x.json", {"images": "nope", "annotations": []})
    with pytest.raises(DatasetError, match="expected a COCO object"):
        read(f)
    esc = write_json(tmp_path / "e.json", coco_doc([{"id": 1, "file_name": "../../etc/a.jpg", "height": 4, "width": 4}], []))
    with pytest.raises(DatasetError) as e:
        read(esc)
    assert e.value.code == "path_escape"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no COCO json found"):
        read(tmp_path / "empty")


def test_detect_file_and_folder(tmp_path: Path) -> None:
    f = write_json(tmp_path / "ds" / "annotations" / "instances_val.json", coco_doc([], []))
    assert get_format("coco").detect(f).score > 0.9
    assert "annotations/instances_val.json" in get_format("coco").detect(tmp_path / "ds").reason
    assert detect_format(tmp_path / "ds")[0].name == "coco"
    labelme = write_json(tmp_path / "lm" / "a.json", {"shapes": [], "imagePath": "a.jpg"})
    assert get_format("coco").detect(labelme) is None and get_format("coco").detect(labelme.parent) is None


def test_info_licenses_and_image_fields_round_trip(tmp_path: Path) -> None:
    doc = coco_doc([{"id": 77, "file_name": "a.jpg", "height": 8, "width": 8, "license": 2, "coco_url": "u"}],
                   [ann(1, 77, 1, [1, 1, 2, 2])])
    doc["info"], doc["licenses"] = {"year": 2024, "description": "line 3"}, [{"id": 2, "name": "CC"}]
    ds, _ = read(write_json(tmp_path / "src" / "a.json", doc))
    assert ds.meta["info"]["year"] == 2024 and ds.images[0].meta == {"coco_id": 77, "coco_image": {"license": 2, "coco_url": "u"}}
    write(ds, tmp_path / "out", images="none")
    out = json.loads((tmp_path / "out/annotations/instances_train.json").read_text())
    assert out["info"] == doc["info"] and out["licenses"] == doc["licenses"]
    assert out["images"] == [{"id": 77, "file_name": "a.jpg", "width": 8, "height": 8, "license": 2, "coco_url": "u"}]


# -- writing -----------------------------------------------------------------------------------
def made_dataset(root: Path) -> Dataset:
    paths = [write_image(root / n, (40, 60), seed=i) for i, n in enumerate(["a.jpg", "sub/b.png", "c.jpg"])]
    return Dataset(
        labels=LabelMap(["scratch", "dent"]),
        images=[
            ImageRecord("a.jpg", (40, 60), boxes=[[1, 2, 11, 22], [30, 5, 50, 25]], class_ids=[0, 1], path=paths[0],
                        split="train", attributes=[{"occluded": True}, {}]),
            ImageRecord("sub/b.png", (40, 60), boxes=[[5, 5, 15, 15]], class_ids=[1], path=paths[1], split="val",
                        shapes=[Polyline(np.array([[5.0, 5], [15, 15]]))]),
            ImageRecord("c.jpg", (40, 60), path=paths[2], split="val"),
        ],
    )


def test_write_layout_losses_and_pycocotools_eval(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds = made_dataset(tmp_path / "src")
    losses = write(ds, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "annotations").iterdir()) == ["instances_train.json", "instances_val.json"]
    assert (out / "images/val/sub/b.png").is_file() and (out / "images/train/a.jpg").is_file()
    assert losses.counts == {"polyline (COCO has no open lines; box kept)": 1}
    gt = COCO(str(out / "annotations/instances_train.json"))
    a = gt.loadAnns(gt.getAnnIds())
    assert [x["bbox"] for x in a] == [[1, 2, 10, 20], [30, 5, 20, 20]] and [x["area"] for x in a] == [200, 400]
    assert a[0]["attributes"] == {"occluded": True} and gt.getCatIds() == [1, 2]
    dets = gt.loadRes([{"image_id": x["image_id"], "category_id": x["category_id"], "bbox": x["bbox"], "score": 1.0}
                       for x in a])
    ev = COCOeval(gt, dets, "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_segm_eval_on_written_masks(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds, _ = read(rle_dataset(tmp_path / "src"))
    write(ds, tmp_path / "out")
    gt = COCO(str(tmp_path / "out/annotations/instances_train.json"))
    anns = [a for a in gt.loadAnns(gt.getAnnIds()) if not a["iscrowd"]]
    dets = gt.loadRes([{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": gt.annToRLE(a),
                        "score": 1.0} for a in anns])
    ev = COCOeval(gt, dets, "segm")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_write_unsplit_to_train_and_renumber_ids(tmp_path: Path) -> None:
    ds = Dataset(LabelMap(["a"]),
                 [ImageRecord("x.jpg", (10, 10), boxes=[[0, 0, 5, 5]], class_ids=[0], meta={"coco_id": "s1"}),
                  ImageRecord("y.jpg", (10, 10))])
    write(ds, tmp_path / "out", images="none")
    doc = json.loads((tmp_path / "out/annotations/instances_train.json").read_text())
    assert [i["id"] for i in doc["images"]] == [1, 2] and doc["categories"] == [{"id": 1, "name": "a", "supercategory": ""}]
    back, _ = read(tmp_path / "out")
    assert [r.split for r in back.images] == ["train", "train"] and back.images[1].is_background


def test_predictions_scores_round_trip(tmp_path: Path) -> None:
    ds = Dataset(LabelMap(["a"]), [ImageRecord("x.jpg", (10, 10), boxes=[[0, 0, 5, 5], [1, 1, 3, 3]],
                                               class_ids=[0, 0], scores=[0.9, 0.25])])
    write(ds, tmp_path / "out", images="none")
    back, _ = read(tmp_path / "out")
    np.testing.assert_allclose(back.images[0].scores, [0.9, 0.25])


def test_crowd_polygon_is_written_as_rle(tmp_path: Path) -> None:
    poly = Polygon((np.array([[0.0, 0], [10, 0], [10, 10], [0, 10]]),))
    ds = Dataset(LabelMap(["a"]), [ImageRecord("x.jpg", (20, 20), boxes=[[0, 0, 10, 10]], class_ids=[0],
                                               shapes=[poly], attributes=[{"iscrowd": True}])])
    write(ds, tmp_path / "out", images="none")
    (a,) = json.loads((tmp_path / "out/annotations/instances_train.json").read_text())["annotations"]
    assert a["iscrowd"] == 1 and isinstance(a["segmentation"]["counts"], str) and a["area"] == 100


def test_images_dir_option_and_forgiving_lookup(tmp_path: Path) -> None:
    write_image(tmp_path / "elsewhere" / "A.JPG", (6, 6))
    write_image(tmp_path / "ds" / "deep" / "nested" / "b.png", (6, 6))
    doc = coco_doc([{"id": 1, "file_name": "a.jpg", "height": 6, "width": 6},
                    {"id": 2, "file_name": "b.png", "height": 6, "width": 6}], [])
    f = write_json(tmp_path / "ds" / "annotations" / "instances_val.json", doc)
    ds, _ = read(f, images_dir=str(tmp_path / "elsewhere"))
    assert [r.path.name for r in ds.images] == ["A.JPG", "b.png"]  # by case-insensitive name; anywhere in the dataset
    with pytest.raises(ConfigError, match="image_dir"):
        read(f, image_dir="x")  # options are closed: a typo is an error
