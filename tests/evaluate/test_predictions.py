"""Prediction files: EdgeVision predictions JSON round trip, COCO results by file_name / image_id, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevision.convert import read_dataset
from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import DatasetError
from edgevision.evaluate import read_predictions, write_predictions

LABELS = LabelMap(["crack", "pit"])
GT = [ImageRecord("val/a b.png", (40, 60), [[1, 2, 11, 12]], [1], split="val"),
      ImageRecord("val/ü.png", (40, 60), split="val"),
      ImageRecord("val/c.png", (40, 60), [[5, 5, 9, 9]], [0], split="val")]


def test_edgevision_json_round_trip(tmp_path: Path) -> None:
    preds = [ImageRecord("val/a b.png", (40, 60), [[1.5, 2, 11, 12.25], [0, 0, 3, 3]], [1, 0], scores=[0.875, 0.25]),
             ImageRecord("val/ü.png", (40, 60), scores=[])]
    path = write_predictions(tmp_path / "p" / "preds.json", preds, LABELS)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["schema"] == "edgevision.predictions/1" and data["classes"] == ["crack", "pit"]
    assert data["images"][0] == {"name": "val/a b.png", "boxes": [[1.5, 2, 11, 12.25], [0, 0, 3, 3]],
                                 "class_ids": [1, 0], "scores": [0.875, 0.25]}
    back = read_predictions(path, GT, LABELS)
    assert [r.name for r in back] == [r.name for r in GT]  # one record per gt image
    assert back[0].boxes.tolist() == [[1.5, 2, 11, 12.25], [0, 0, 3, 3]]
    assert back[0].class_ids.tolist() == [1, 0] and back[0].scores.tolist() == [0.875, 0.25]
    assert (back[0].size_hw, back[0].split) == ((40, 60), "val")
    assert len(back[1]) == 0 and len(back[2]) == 0 and back[2].scores is not None


def test_edgevision_json_classes_remapped_by_name(tmp_path: Path) -> None:
    doc = {"classes": ["pit", "crack"], "images": [{"name": "val/c.png", "boxes": [[5, 5, 9, 9]], "class_ids": [1],
                                                    "scores": [0.5]}]}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    assert read_predictions(tmp_path / "p.json", GT, LABELS)[2].class_ids.tolist() == [0]  # "crack"
    doc["classes"] = ["pit", "dent"]
    (tmp_path / "p.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"classes \['dent'\] are not in the dataset's classes"):
        read_predictions(tmp_path / "p.json", GT, LABELS)


def test_coco_results_by_file_name(tmp_path: Path) -> None:
    res = [{"file_name": "val/a b.png", "category_id": 2, "bbox": [1, 2, 10, 10], "score": 0.9},
           {"file_name": "c.png", "category_id": 1, "bbox": [5, 5, 4, 4], "score": 0.3}]  # base name, unique
    (tmp_path / "r.json").write_text(json.dumps(res))
    back = read_predictions(tmp_path / "r.json", GT, LABELS)
    assert back[0].boxes.tolist() == [[1, 2, 11, 12]] and back[0].class_ids.tolist() == [1]
    assert back[2].class_ids.tolist() == [0] and back[2].scores.tolist() == [np.float32(0.3)]


def test_coco_results_by_image_id_through_the_coco_reader(tmp_path: Path) -> None:
    coco = {"images": [{"id": 7, "file_name": "x.png", "height": 50, "width": 50}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 12, "bbox": [1, 1, 10, 10], "area": 100,
                             "iscrowd": 0}],
            "categories": [{"id": 12, "name": "dent"}, {"id": 4, "name": "rust"}]}
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    ds = read_dataset(tmp_path / "gt.json", "coco").dataset
    (tmp_path / "r.json").write_text(json.dumps([{"image_id": 7, "category_id": 12, "bbox": [1, 1, 10, 10],
                                                  "score": 0.5}]))
    back = read_predictions(tmp_path / "r.json", ds.images, ds.labels)
    assert ds.labels.names[int(back[0].class_ids[0])] == "dent"


@pytest.mark.parametrize(("content", "message"), [
    ([{"file_name": "nope.png", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}], "'nope.png' is not an image"),
    ([{"image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}], "no COCO image ids"),
    ([{"file_name": "c.png", "category_id": 5, "bbox": [0, 0, 1, 1], "score": 0.5}], "category_id 5 is not a class"),
    ([{"file_name": "c.png", "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}], "bbox"),
    ([{"file_name": "c.png", "category_id": 1, "bbox": [0, 0, 1, 1], "score": None}], "score"),
    ({"classes": ["crack"], "images": [{"name": "val/zz.png", "boxes": []}]}, "image 'val/zz.png' is not in"),
    ({"classes": ["crack"], "images": [{"name": "val/c.png", "boxes": [[0, 0, 1, 1]], "class_ids": [0]}]},
     "scores: expected 1 numbers"),
    ({"classes": ["crack"], "images": [{"name": "val/c.png", "boxes": [[0, 0, 1, 1]], "class_ids": [2],
                                        "scores": [1]}]}, "class_ids: expected integers in 0..0"),
    ({"nothing": 1}, "expected a COCO results list"),
])
def test_bad_files_are_one_line_errors(tmp_path: Path, content: object, message: str) -> None:
    (tmp_path / "p.json").write_text(json.dumps(content))
    with pytest.raises(DatasetError, match=message) as e:
        read_predictions(tmp_path / "p.json", GT, LABELS)
    assert "\n" not in str(e.value) and "p.json" in str(e.value)
