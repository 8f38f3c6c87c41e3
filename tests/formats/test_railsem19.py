"""The ``railsem19`` reader: frame JSONs with boxes, polygons and rail polylines."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevision.core import Dataset, DatasetError, Polygon, Polyline
from edgevision.formats import detect_format, get_format
from tests.formats.conformance import FormatConformance, by_basename, write_image
from tests.formats.format_io import ignored_files, read_as

RAIL = {"label": "rail", "polyline-pair": [[[10, 47], [20, 20]], [[30, 47], [25, 20]]]}
GUARD = {"label": "guardrail", "polyline": [[0, 40], [30, 40], [60, 30]]}


def frame(name: str, size_hw: tuple[int, int], objects: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"frame": name, "imgHeight": size_hw[0], "imgWidth": size_hw[1], "objects": objects, **extra}


def write_frame(root: Path, data: dict[str, Any], image: str | None = None) -> Path:
    (root / "jsons").mkdir(parents=True, exist_ok=True)
    if image is not False:
        write_image(root / "jpgs" / (image or f"{data['frame']}.jpg"), (data.get("imgHeight") or 48, data.get("imgWidth") or 64))
    path = root / "jsons" / f"{data['frame']}.json"
    path.write_text(json.dumps(data, indent=4), encoding="utf-8")
    return path


read = partial(read_as, "railsem19")


class TestRailSem19Conformance(FormatConformance):
    """Boxes as ``boundingbox`` and (for one object) ``polygon``; a rail pair that is skipped by default."""

    format_name = "railsem19"

    def build(self, root: Path, spec: Dataset) -> Path:
        ds_root = root / "rs19_val"
        for i, rec in enumerate(spec.images):
            write_image(ds_root / "jpgs" / rec.name, rec.size_hw, seed=i)
            objects: list[dict[str, Any]] = []
            for k, ((x1, y1, x2, y2), c) in enumerate(zip(rec.boxes.tolist(), rec.class_ids.tolist(), strict=True)):
                label = spec.labels.names[c]
                if k == 1:
                    objects.append({"label": label, "polygon": [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]})
                else:
                    objects.append({"boundingbox": [x1, y1, x2, y2], "label": label})
            if i == 0:
                objects.append(RAIL)
            write_frame(ds_root, frame(Path(rec.name).stem, rec.size_hw, objects), image=False)
        return ds_root


def test_polygon_shape_and_skipped_rails_are_counted(tmp_path: Path) -> None:
    poly = [[5, 5], [20, 8], [12, 30]]
    write_frame(tmp_path, frame("rs00000", (48, 64), [{"label": "pole", "polygon": poly}, RAIL, GUARD]))
    ds, report = read(tmp_path)
    rec = ds.images[0]
    assert rec.boxes.tolist() == [[5, 5, 20, 30]] and rec.shapes == [Polygon((np.array(poly, float),))]
    [f] = [f for f in report.findings if f.code == "object_skipped"]
    assert "{'polyline-pair': 1, 'polyline': 1}" in f.message and "polylines: keep" in f.message
    assert ds.labels.names == ["pole"] and rec.meta["frame"] == "rs00000"


def test_polylines_keep(tmp_path: Path) -> None:
    vertical = {"label": "guardrail", "polyline": [[40, 0], [40, 30]]}
    write_frame(tmp_path, frame("rs00001", (48, 64), [RAIL, GUARD, vertical]))
    ds, report = read(tmp_path, polylines="keep")
    rec = ds.images[0]
    assert ds.labels.names == ["guardrail", "rail"]
    assert rec.boxes.tolist() == [[10, 20, 20, 47], [25, 20, 30, 47], [0, 30, 60, 40], [40, 0, 41, 30]]
    assert all(isinstance(s, Polyline) for s in rec.shapes)
    assert rec.shapes[0] == Polyline(np.array([[10, 47], [20, 20]], float))
    assert rec.attributes[:2] == [{"rail": "left"}, {"rail": "right"}] and rec.attributes[2] == {}
    assert report.counts()["polyline_box_widened"] == 1


def test_classes_option_restricts_and_orders(tmp_path: Path) -> None:
    objs = [{"label": "car", "boundingbox": [1, 1, 5, 5]}, {"label": "pole", "boundingbox": [2, 2, 6, 6]},
            {"label": "person", "boundingbox": [3, 3, 7, 7]}]
    write_frame(tmp_path, frame("rs00002", (48, 64), objs))
    ds, report = read(tmp_path, classes=["person", "car"])
    assert ds.labels.names == ["person", "car"] and ds.images[0].class_ids.tolist() == [1, 0]
    assert "class 'pole'" in next(f.message for f in report.findings if f.code == "object_skipped")


@pytest.mark.parametrize("which", ["root", "parent", "jsons", "file"])
def test_path_variants(tmp_path: Path, which: str) -> None:
    root = tmp_path / "rs19_val"
    f = write_frame(root, frame("rs00003", (48, 64), [{"label": "car", "boundingbox": [1, 1, 5, 5]}]))
    path = {"root": root, "parent": tmp_path, "jsons": root / "jsons", "file": f}[which]
    ds, _ = read(path)
    assert [r.name for r in ds.images] == ["rs00003.jpg"] and ds.root == root
    assert detect_format(path)[0].name == "railsem19"


@pytest.mark.parametrize("which", ["root", "jsons", "file"])
def test_nested_archive_layout(tmp_path: Path, which: str) -> None:
    """The real archive nests rs19_val/ again inside jsons/ and jpgs/ (the recipe's layout)."""
    root = tmp_path / "rs19_val"
    write_image(root / "jpgs" / "rs19_val" / "rs00011.jpg", (48, 64))
    (root / "jsons" / "rs19_val").mkdir(parents=True)
    f = root / "jsons" / "rs19_val" / "rs00011.json"
    f.write_text(json.dumps(frame("rs00011", (48, 64), [{"label": "car", "boundingbox": [1, 1, 5, 5]}])))
    path = {"root": root, "jsons": f.parent, "file": f}[which]
    ds, _ = read(path, json_dir="jsons/rs19_val", image_dir="jpgs/rs19_val")
    assert ds.root == root and [r.name for r in ds.images] == ["rs00011.jpg"] and len(ds.images[0]) == 1


def rs19_archive(tmp_path: Path) -> Path:
    """``rs19_val.zip`` as unpacked: jsons/, jpgs/ and uint8/ each nest rs19_val/ again, and
    rs19-config.json lies beside them."""
    root = tmp_path / "rs19_val"
    for k, name in enumerate(("rs00011", "rs00012")):
        write_image(root / "jpgs" / "rs19_val" / f"{name}.jpg", (48, 64), seed=k)
        write_image(root / "uint8" / "rs19_val" / f"{name}.png", (48, 64), seed=10 + k)  # dense label map: not read
        (root / "jsons" / "rs19_val").mkdir(parents=True, exist_ok=True)
        objects = [{"label": "car", "boundingbox": [1, 1, 5 + k, 5]}, RAIL]
        (root / "jsons" / "rs19_val" / f"{name}.json").write_text(json.dumps(frame(name, (48, 64), objects)))
    (root / "rs19-config.json").write_text(json.dumps({"labels": [{"name": "road"}]}), encoding="utf-8")
    return root


@pytest.mark.parametrize("which", ["root", "parent", "jsons", "jsons/rs19_val"])
def test_archive_nesting_is_read_with_the_default_options(tmp_path: Path, which: str) -> None:
    root = rs19_archive(tmp_path)
    path = {"root": root, "parent": tmp_path, "jsons": root / "jsons", "jsons/rs19_val": root / "jsons" / "rs19_val"}[which]
    fmt, detection = detect_format(path)
    assert fmt.name == "railsem19" and "rs00011.json" in detection.reason
    ds, report = read(path)
    assert ds.root == root and [r.name for r in ds.images] == ["rs00011.jpg", "rs00012.jpg"]
    assert [r.path for r in ds.images] == [root / "jpgs" / "rs19_val" / f"rs0001{k}.jpg" for k in (1, 2)]
    assert [r.boxes.tolist() for r in ds.images] == [[[1, 1, 5, 5]], [[1, 1, 6, 5]]] and ds.labels.names == ["car"]
    assert ignored_files(report) == ["rs19-config.json"]
    assert report.counts() == {"object_skipped": 1, "file_outside_layout": 1}


def test_no_frames_names_both_nestings_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "jsons" / "other").mkdir(parents=True)
    (tmp_path / "jsons" / "other" / "rs00000.json").write_text(json.dumps(frame("rs00000", (8, 8), [])))
    with pytest.raises(DatasetError) as e:
        read(tmp_path)
    msg = str(e.value)
    assert e.value.code == "format_mismatch" and str(tmp_path) in msg and "\n" not in msg
    assert "expected jsons/*.json or jsons/rs19_val/*.json" in msg and "pass the rs19_val folder" in msg
    with pytest.raises(DatasetError, match=r"expected jsons/rs19_val/\*\.json in this folder or in its rs19_val/;"):
        read(tmp_path, json_dir="jsons/rs19_val")


def test_missing_size_is_read_from_the_image(tmp_path: Path) -> None:
    write_image(tmp_path / "jpgs" / "rs00004.jpg", (30, 40))
    write_frame(tmp_path, {"frame": "rs00004", "objects": []}, image=False)
    ds, report = read(tmp_path)
    assert ds.images[0].size_hw == (30, 40) and ds.images[0].is_background
    assert "size_from_image" in report.counts()


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("obj, code, text", [
    ({"boundingbox": [1, 1, 5, 5]}, "object_malformed", "'label'"),
    ({"label": "car", "box": [1, 1, 5, 5]}, "object_malformed", "boundingbox"),
    ({"label": "car", "boundingbox": [1, 1, 5]}, "shape_malformed", "[x1, y1, x2, y2]"),
    ({"label": "car", "boundingbox": [9, 1, 5, 5]}, "box_inverted", "x1=9"),
    ({"label": "pole", "polygon": [[1, 1], [5, 5]]}, "shape_malformed", "at least 3 points"),
    ({"label": "pole", "polygon": [[1, "a"], [5, 5], [3, 3]]}, "shape_malformed", "number pairs"),
    ({"label": "rail", "polyline-pair": [[[1, 1], [5, 5]]]}, "shape_malformed", "pair"),
])
def test_bad_objects_name_the_object(tmp_path: Path, obj: dict, code: str, text: str) -> None:
    write_frame(tmp_path, frame("rs00005", (48, 64), [{"label": "car", "boundingbox": [1, 1, 5, 5]}, obj]))
    with pytest.raises(DatasetError) as e:
        read(tmp_path, polylines="keep")
    msg = str(e.value)
    assert e.value.code == code and text in msg and "rs00005.json:objects[1]" in msg and "\n" not in msg


def test_keep_policy_keeps_the_good_objects(tmp_path: Path) -> None:
    objs = [{"label": "car", "boundingbox": [1, 1, 5, 5]}, {"label": "pole", "polygon": [[1, 1]]}]
    write_frame(tmp_path, frame("rs00006", (48, 64), objs))
    ds, report = read(tmp_path, on_error="keep")
    assert len(ds.images[0]) == 1 and report.counts()["shape_malformed"] == 1


def test_skip_policy_drops_the_frame(tmp_path: Path) -> None:
    write_frame(tmp_path, frame("rs00007", (48, 64), [{"label": "car", "boundingbox": [1, 1, 5]}]))
    write_frame(tmp_path, frame("rs00008", (48, 64), [{"label": "car", "boundingbox": [1, 1, 5, 5]}]))
    ds, report = read(tmp_path, on_error="skip")
    assert [r.meta["frame"] for r in ds.images] == ["rs00008"] and len(report.skipped) == 1


def test_missing_image_and_non_frame_json(tmp_path: Path) -> None:
    write_frame(tmp_path, frame("rs00009", (48, 64), []), image=False)
    (tmp_path / "jpgs").mkdir()
    with pytest.raises(DatasetError, match="rs00009") as e:
        read(tmp_path)
    assert e.value.code == "image_missing"
    (tmp_path / "jsons" / "rs00009.json").write_text('{"shapes": []}', encoding="utf-8")
    with pytest.raises(DatasetError) as e:
        read(tmp_path)
    assert e.value.code == "json_not_railsem19"


def test_frame_name_escaping_the_root(tmp_path: Path) -> None:
    write_frame(tmp_path, frame("rs00010", (48, 64), []))
    f = tmp_path / "jsons" / "rs00010.json"
    f.write_text(json.dumps(frame("../../etc/passwd", (48, 64), [])), encoding="utf-8")
    with pytest.raises(DatasetError) as e:
        read(tmp_path)
    assert e.value.code == "path_escape"


def test_no_jsons_is_fatal_and_not_detected(tmp_path: Path) -> None:
    (tmp_path / "jsons").mkdir()
    (tmp_path / "jsons" / "a.json").write_text('{"shapes": [], "imageHeight": 4}', encoding="utf-8")
    assert get_format("railsem19").detect(tmp_path) is None
    with pytest.raises(DatasetError) as e:
        read(tmp_path / "elsewhere")
    assert e.value.code == "format_mismatch"


def test_by_basename_helper_sees_all_frames(tmp_path: Path) -> None:
    for k in range(3):
        write_frame(tmp_path, frame(f"rs0000{k}", (48, 64), []))
    assert sorted(by_basename(read(tmp_path)[0])) == ["rs00000.jpg", "rs00001.jpg", "rs00002.jpg"]
