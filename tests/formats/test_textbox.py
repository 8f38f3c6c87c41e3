"""The ``textbox`` reader: configurable plain-text boxes (DeepPCB, KITTI, ...)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from edgevision.core import ConfigError, Dataset, DatasetError
from edgevision.formats import get_format
from tests.formats.conformance import FormatConformance, by_basename, write_image
from tests.formats.format_io import ignored_files, read_as

read = partial(read_as, "textbox")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class TestTextboxConformance(FormatConformance):
    """DeepPCB-like files: ``x1 y1 x2 y2 type`` with 1-based type ids; no file for the empty image."""

    format_name = "textbox"
    detectable = False

    def build(self, root: Path, spec: Dataset) -> Path:
        for i, rec in enumerate(spec.images):
            write_image(root / "images" / rec.name, rec.size_hw, seed=i)
            if len(rec):
                lines = [f"{x1:g} {y1:g} {x2:g} {y2:g} {c + 1}\n"
                         for (x1, y1, x2, y2), c in zip(rec.boxes.tolist(), rec.class_ids.tolist(), strict=True)]
                write(root / "labels" / f"{Path(rec.name).stem}.txt", "".join(lines))
        return root

    def read_options(self) -> dict:
        return {"class_names": {1: "scratch", 2: "pit hole"}}


def test_class_ids_keep_their_source_ids(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (50, 50))
    write(tmp_path / "labels" / "a.txt", "1 2 10 20 2\n")
    ds, _ = read(tmp_path, class_names={"1": "open", "2": "short"})
    assert ds.labels.names == ["open", "short"] and ds.labels.source_ids == [1, 2]
    assert ds.images[0].class_ids.tolist() == [1]
    assert ds.images[0].meta["annotation"] == "labels/a.txt"


# -- real layouts ------------------------------------------------------------------------------
KITTI_COLUMNS = ["class", "truncated", "occluded", "_", "x1", "y1", "x2", "y2", "_", "_", "_", "_", "_", "_", "_", "score?"]


def test_kitti_layout(tmp_path: Path) -> None:
    write_image(tmp_path / "training" / "image_2" / "000000.png", (100, 200))
    write_image(tmp_path / "training" / "image_2" / "000001.png", (100, 200))
    write(tmp_path / "training" / "label_2" / "000000.txt",
          "Pedestrian 0.00 0 -0.20 12.50 20.00 40.25 90.00 1.89 0.48 1.20 1.84 1.47 8.41 0.01\n"
          "DontCare -1 -1 -10 150.00 10.00 190.00 30.00 -1 -1 -1 -1000 -1000 -1000 -10\n"
          "Car 0.50 2 1.85 100.00 40.00 199.00 99.00 1.67 1.87 3.69 -16.53 2.39 58.49 1.57\n")
    write(tmp_path / "training" / "label_2" / "000001.txt",
          "Cyclist 0.00 1 -0.20 10 20 30 40 1.89 0.48 1.20 1.84 1.47 8.41 0.01 0.87\n")
    opts = {"columns": KITTI_COLUMNS, "label_dir": "training/label_2", "image_dir": "training/image_2",
            "ignore_classes": ["DontCare"]}
    ds, report = read(tmp_path, **opts)
    assert ds.labels.names == ["Car", "Cyclist", "Pedestrian"]
    recs = by_basename(ds)
    r0 = recs["000000.png"]
    assert r0.boxes.tolist() == [[12.5, 20, 40.25, 90], [100, 40, 199, 99]]
    assert r0.attributes == [{"truncated": 0.0, "occluded": 0}, {"truncated": 0.5, "occluded": 2}]
    assert r0.scores is None and recs["000001.png"].scores.tolist() == pytest.approx([0.87])
    assert report.counts()["class_ignored"] == 1


def test_deeppcb_with_list_files(tmp_path: Path) -> None:
    pcb = tmp_path / "PCBData"
    for g, n in (("group00041", "00041000"), ("group00041", "00041001"), ("group12000", "12000000")):
        folder = pcb / g / g[5:]
        write_image(folder / f"{n}_test.jpg", (64, 64))
        write_image(folder / f"{n}_temp.jpg", (64, 64))
        write(pcb / g / f"{g[5:]}_not" / f"{n}.txt", "10 10 20 30 3\n40 40 60 50 1\n")
    write(pcb / "trainval.txt", "group00041/00041/00041000.jpg group00041/00041_not/00041000.txt\n"
                                "group00041/00041/00041001.jpg group00041/00041_not/00041001.txt\n")
    write(pcb / "test.txt", "group12000/12000/12000000.jpg group12000/12000_not/12000000.txt\n")
    ds, report = read(pcb, columns=["x1", "y1", "x2", "y2", "class"], image_suffix="{stem}_test.jpg",
                      class_names={1: "open", 2: "short", 3: "mousebite"}, list_files={"train": "trainval.txt", "test": "test.txt"})
    assert not report.errors
    assert sorted(r.name for r in ds.images) == ["group00041/00041/00041000_test.jpg", "group00041/00041/00041001_test.jpg",
                                                 "group12000/12000/12000000_test.jpg"]
    assert [r.split for r in ds.images] == ["train", "train", "test"]
    assert ds.class_counts() == {"open": 3, "short": 0, "mousebite": 3}


DEEPPCB = {"columns": ["x1", "y1", "x2", "y2", "class"], "image_suffix": "{stem}_test.jpg",
           "class_names": {1: "open", 2: "short"}, "list_files": {"train": "trainval.txt", "test": "test.txt"}}


def deeppcb_clone(root: Path) -> Path:
    """A clone of the DeepPCB repository: README.md, fig/ and PCBData/ with one tested image."""
    (root / "fig").mkdir(parents=True)
    write(root / "README.md", "# DeepPCB\n")
    pcb = root / "PCBData"
    write_image(pcb / "group00041" / "00041" / "00041000_test.jpg", (64, 64))
    write_image(pcb / "group00041" / "00041" / "00041000_temp.jpg", (64, 64))
    write(pcb / "group00041" / "00041_not" / "00041000.txt", "10 10 20 30 1\n")
    write(pcb / "trainval.txt", "group00041/00041/00041000.jpg group00041/00041_not/00041000.txt\n")
    write(pcb / "test.txt", "")
    return root


def test_deeppcb_clone_root_names_the_folder_to_pass(tmp_path: Path) -> None:
    root = deeppcb_clone(tmp_path / "DeepPCB")
    with pytest.raises(DatasetError) as e:
        read(root, **DEEPPCB)
    msg = str(e.value)
    assert e.value.code == "file_missing" and str(root / "trainval.txt") in msg and "\n" not in msg
    assert "list file for split 'train' not found; found in the sub-folder PCBData: pass that folder" in msg
    ds, report = read(root / "PCBData", **DEEPPCB)
    assert [r.name for r in ds.images] == ["group00041/00041/00041000_test.jpg"] and ds.num_objects == 1
    assert ignored_files(report) == []


def test_missing_list_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"list file for split 'train' not found; pass the folder that holds it "
                                           r"or set the option list_files$"):
        read(tmp_path, list_files={"train": "train.txt"})


def test_files_beside_the_lists_are_named_never_read(tmp_path: Path) -> None:
    pcb = deeppcb_clone(tmp_path / "DeepPCB") / "PCBData"
    write(pcb / "README.txt", "PCB images\n")
    write_image(pcb / "overview.jpg", (20, 20))
    ds, report = read(pcb, **DEEPPCB)
    assert len(ds) == 1 and ignored_files(report) == ["README.txt", "overview.jpg"]


def test_images_beside_the_labels_without_list_files_stay_samples(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", (20, 20))
    write_image(tmp_path / "b.jpg", (20, 20))
    write(tmp_path / "a.txt", "1 2 10 12 1\n")
    write(tmp_path / "README.md", "x")
    ds, report = read(tmp_path)
    assert [r.name for r in ds.images] == ["a.jpg", "b.jpg"] and ds.images[1].is_background
    assert ignored_files(report) == ["README.md"]


def test_bad_list_lines(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", (32, 32))
    write(tmp_path / "a.txt", "1 2 3 4 1\n")
    write(tmp_path / "train.txt", "a.jpg a.txt\nb.jpg b.txt\nx y z\n")
    with pytest.raises(DatasetError, match=r"train\.txt:2") as e:
        read(tmp_path, list_files={"train": "train.txt"})
    assert e.value.code == "file_missing"
    ds, report = read(tmp_path, on_error="skip", list_files={"train": "train.txt"})
    assert [r.name for r in ds.images] == ["a.jpg"] and ds.images[0].split == "train"
    assert sorted(f.code for f in report.skipped) == ["file_missing", "line_malformed"]


def test_deeppcb_without_list_pairs_by_image_suffix_and_ignores_templates(tmp_path: Path) -> None:
    write_image(tmp_path / "group1" / "1" / "1000_test.jpg", (32, 32))
    write_image(tmp_path / "group1" / "1" / "1000_temp.jpg", (32, 32))
    write(tmp_path / "group1" / "1_not" / "1000.txt", "1 2 3 4 1\n")
    ds, report = read(tmp_path, image_suffix="{stem}_test.jpg")
    assert [r.name for r in ds.images] == ["group1/1/1000_test.jpg"]
    assert report.counts()["image_unannotated"] == 1  # the template, counted and ignored


def test_normalized_centre_layout_with_comma_header_and_comments(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", (100, 200))
    write(tmp_path / "a.txt", "cls,cx,cy,w,h\n# a comment\n\n0, 0.5, 0.5, 0.2, 0.4\n")
    ds, _ = read(tmp_path, columns=["class", "cx", "cy", "w", "h"], delimiter=",", normalized=True,
                 skip_header_lines=1)
    np.testing.assert_allclose(ds.images[0].boxes, [[80, 30, 120, 70]])
    assert ds.labels.names == ["0"]


def test_xywh_layout_and_default_class(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (100, 100))
    write(tmp_path / "labels" / "a.txt", "10 20 30 40 0.9 1\n")
    ds, _ = read(tmp_path, columns=["x", "y", "w", "h", "score", "difficult"], default_class="defect")
    rec = ds.images[0]
    assert rec.boxes.tolist() == [[10, 20, 40, 60]] and ds.labels.names == ["defect"]
    assert rec.scores.tolist() == pytest.approx([0.9]) and rec.attributes == [{"difficult": True}]


def test_discovered_classes_are_sorted(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (50, 50))
    write(tmp_path / "labels" / "a.txt", "1 1 5 5 spur\n1 1 5 5 open\n")
    ds, _ = read(tmp_path)
    assert ds.labels.names == ["open", "spur"] and ds.images[0].class_ids.tolist() == [1, 0]


def test_empty_label_file_is_background(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (50, 50))
    write(tmp_path / "labels" / "a.txt", "")
    ds, _ = read(tmp_path, unannotated_images="ignore")
    assert len(ds) == 1 and ds.images[0].is_background


# -- bad input ---------------------------------------------------------------------------------
def test_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (50, 50))
    write_image(tmp_path / "images" / "b.jpg", (50, 50))
    write(tmp_path / "labels" / "a.txt", "1 1 5 5 1\n1 1 5 1\n")
    write(tmp_path / "labels" / "b.txt", "2 2 8 8 1\n")
    with pytest.raises(DatasetError) as e:
        read(tmp_path)
    msg = str(e.value)
    assert e.value.code == "line_malformed" and "a.txt:2" in msg and "expected 5 columns" in msg and "\n" not in msg
    ds, report = read(tmp_path, on_error="skip")  # the image of the skipped file is not a background image
    assert [r.name for r in ds.images] == ["b.jpg"] and len(report.skipped) == 1
    ds, report = read(tmp_path, on_error="keep")
    assert len(by_basename(ds)["a.jpg"]) == 1 and report.counts()["line_malformed"] == 1


@pytest.mark.parametrize("text, options, code, match", [
    ("1 1 five 5 1\n", {}, "value_malformed", r"a\.txt:1"),
    ("1 1 5 5 1\n9 1 5 5 1\n", {}, "box_inverted", r"a\.txt:2"),
    ("1 1 5 5 7\n", {"class_names": {1: "open"}}, "class_unknown", "class '7'"),
])
def test_bad_line_names_file_and_line(tmp_path: Path, text: str, options: dict, code: str, match: str) -> None:
    write_image(tmp_path / "images" / "a.jpg", (50, 50))
    write(tmp_path / "labels" / "a.txt", text)
    with pytest.raises(DatasetError, match=match) as e:
        read(tmp_path, **options)
    assert e.value.code == code and "\n" not in str(e.value)


def test_label_without_image(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    write(tmp_path / "labels" / "a.txt", "1 1 5 5 1\n")
    with pytest.raises(DatasetError, match=r"a\.txt") as e:
        read(tmp_path)
    assert e.value.code == "image_missing"


def test_mixed_scores_are_an_error(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (50, 50))
    write(tmp_path / "labels" / "a.txt", "1 1 5 5 c 0.5\n1 1 5 5 c\n")
    with pytest.raises(DatasetError) as e:
        read(tmp_path, columns=["x1", "y1", "x2", "y2", "class", "score?"])
    assert e.value.code == "score_missing"
    ds, _ = read(tmp_path, on_error="keep", columns=["x1", "y1", "x2", "y2", "class", "score?"])
    assert len(ds.images[0]) == 2 and ds.images[0].scores is None


def test_not_utf8(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (50, 50))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_bytes(b"1 1 5 5 \xff\xfe\n")
    with pytest.raises(DatasetError) as e:
        read(tmp_path)
    assert e.value.code == "text_malformed"


@pytest.mark.parametrize("options, text", [
    ({"columns": ["x1", "y1", "x2", "y2", "clas"]}, "Did you mean 'class'"),
    ({"columns": ["x1", "y1", "x2", "y2", "class", "class"]}, "more than once"),
    ({"columns": ["x1", "y1", "w", "h"]}, "one box layout"),
    ({"columns": ["x1", "y1", "x2", "y2", "score?", "class"]}, "must come after"),
    ({"columns": ["class", "x1", "y1", "x2", "y2?"]}, "cannot be optional"),
    ({"image_suffix": "_test.jpg"}, "stem"),
    ({"delimiter": ""}, "non-empty"),
])
def test_bad_options_are_config_errors(options: dict, text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        get_format("textbox").parse_options(options)


def test_missing_label_dir_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as e:
        read(tmp_path, label_dir="nope")
    assert e.value.code == "folder_missing"


def test_not_detected(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", (50, 50))
    write(tmp_path / "labels" / "a.txt", "1 1 5 5 1\n")
    assert get_format("textbox").detect(tmp_path) is None
    assert np.asarray(read(tmp_path)[0].images[0].boxes).shape == (1, 4)
