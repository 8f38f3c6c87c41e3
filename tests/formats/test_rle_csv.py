"""The ``rle-csv`` reader: Severstal-style column-major run-length masks in a CSV."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from edgevision.core import RLE, Dataset, DatasetError
from edgevision.formats import get_format
from edgevision.formats.rle_csv import decode_runs, parse_runs
from tests.formats.conformance import FormatConformance, by_basename, write_image
from tests.formats.format_io import ignored_files, read_as


def runs_for_boxes(size_hw: tuple[int, int], boxes: list[list[int]]) -> str:
    """Encode filled boxes by hand: per column (left to right), one run per box (top to bottom)."""
    h, w = size_hw
    pairs = []
    for col in range(w):
        for x1, y1, x2, y2 in sorted(boxes, key=lambda b: b[1]):
            if x1 <= col < x2:
                pairs.append((col * h + y1 + 1, y2 - y1))
    return " ".join(f"{s} {n}" for s, n in pairs)


read = partial(read_as, "rle-csv")


def dataset(tmp_path: Path, rows: str, images: dict[str, tuple[int, int]] | None = None,
            header: str = "ImageId,ClassId,EncodedPixels") -> Path:
    for name, size in (images or {"a.jpg": (8, 10)}).items():
        write_image(tmp_path / "train_images" / name, size)
    (tmp_path / "train.csv").write_text(f"{header}\n{rows}", encoding="utf-8")
    return tmp_path


class TestRleCsvConformance(FormatConformance):
    format_name = "rle-csv"

    def build(self, root: Path, spec: Dataset) -> Path:
        lines = ["ImageId,ClassId,EncodedPixels"]
        for i, rec in enumerate(spec.images):
            write_image(root / "train_images" / rec.name, rec.size_hw, seed=i)
            for cid in sorted(set(rec.class_ids.tolist())):
                boxes = [b for b, c in zip(rec.boxes.astype(int).tolist(), rec.class_ids, strict=True) if c == cid]
                lines.append(f"{rec.name},{cid + 1},{runs_for_boxes(rec.size_hw, boxes)}")
        (root / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return root

    def read_options(self) -> dict:
        return {"class_names": {1: "scratch", 2: "pit hole"}}


# -- the encoding ------------------------------------------------------------------------------
def test_runs_are_one_based_and_column_major() -> None:
    starts, lengths = parse_runs("1 3 10 2")
    m = decode_runs(starts, lengths, (4, 5))
    expected = np.zeros((4, 5), bool)
    expected[0:3, 0] = True           # pixels 1..3: rows 0-2 of column 0
    expected[1:3, 2] = True           # pixels 10..11: column 2 (pixels 9..12), rows 1-2
    assert (m == expected).all()


def test_run_may_wrap_into_the_next_column() -> None:
    m = decode_runs(*parse_runs("3 4"), (4, 3))
    assert m[:, 0].tolist() == [False, False, True, True] and m[:, 1].tolist() == [True, True, False, False]


@pytest.mark.parametrize("text, match", [
    ("1 2 3", "odd number"),
    ("1 x", "not an integer"),
    ("0 4", "below 1"),
    ("1 0", "length 0"),
])
def test_parse_runs_rejects(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_runs(text)


def test_decode_rejects_run_past_the_end() -> None:
    with pytest.raises(ValueError, match="past the end"):
        decode_runs(*parse_runs("19 3"), (4, 5))
    assert decode_runs(*parse_runs("19 2"), (4, 5))[3, 4]


# -- instances ---------------------------------------------------------------------------------
def test_components_and_rle_shapes(tmp_path: Path) -> None:
    runs = runs_for_boxes((8, 10), [[1, 1, 3, 4], [6, 5, 9, 8]])
    dataset(tmp_path, f"a.jpg,3,{runs}\n")
    ds, _ = read(tmp_path)
    rec = ds.images[0]
    assert rec.boxes.tolist() == [[1, 1, 3, 4], [6, 5, 9, 8]]
    assert ds.labels.names == ["3"] and ds.labels.source_ids == [3]
    for shape, box in zip(rec.shapes, rec.boxes.tolist(), strict=True):
        assert isinstance(shape, RLE) and shape.size_hw == (8, 10)
        assert shape.bbox_xyxy().tolist() == box
        assert shape.area() == (box[2] - box[0]) * (box[3] - box[1])


def test_one_per_row_keeps_the_whole_mask(tmp_path: Path) -> None:
    runs = runs_for_boxes((8, 10), [[1, 1, 3, 4], [6, 5, 9, 8]])
    dataset(tmp_path, f"a.jpg,1,{runs}\n")
    ds, _ = read(tmp_path, instances="one_per_row")
    rec = ds.images[0]
    assert rec.boxes.tolist() == [[1, 1, 9, 8]] and rec.shapes[0].area() == 6 + 9


def test_rows_of_one_image_and_class_are_merged(tmp_path: Path) -> None:
    dataset(tmp_path, "a.jpg,1,1 4\na.jpg,1,9 4\na.jpg,2,33 2\n")
    ds, _ = read(tmp_path, class_names={1: "pitting", 2: "scratch"})
    rec = ds.images[0]
    assert sorted(zip(rec.class_ids.tolist(), rec.boxes.tolist(), strict=True)) == [(0, [0, 0, 2, 4]), (1, [4, 0, 5, 2])]


def test_min_area_drops_and_counts(tmp_path: Path) -> None:
    dataset(tmp_path, "a.jpg,1,1 1 30 3\n")
    ds, report = read(tmp_path, min_area=2)
    assert ds.images[0].boxes.tolist() == [[3, 5, 4, 8]]
    assert report.counts()["component_small"] == 1


def test_images_not_in_csv_or_with_empty_pixels_are_background(tmp_path: Path) -> None:
    dataset(tmp_path, "a.jpg,1,\nb.jpg,1,1 2\n", {"a.jpg": (8, 10), "b.jpg": (8, 10), "c.jpg": (8, 10)})
    recs = by_basename(read(tmp_path)[0])
    assert recs["a.jpg"].is_background and recs["c.jpg"].is_background and len(recs["b.jpg"]) == 1
    assert recs["b.jpg"].name == "b.jpg"


def test_old_joined_layout(tmp_path: Path) -> None:
    rows = "0002cc93b.jpg_1,1 3\n0002cc93b.jpg_2,\n0002cc93b.jpg_3,\n0002cc93b.jpg_4,\n00031f466.jpg_1,\n"
    dataset(tmp_path, rows, {"0002cc93b.jpg": (8, 10), "00031f466.jpg": (8, 10)}, header="ImageId_ClassId,EncodedPixels")
    ds, _ = read(tmp_path)
    assert ds.labels.names == ["1", "2", "3", "4"]
    recs = by_basename(ds)
    assert recs["0002cc93b.jpg"].boxes.tolist() == [[0, 0, 1, 3]] and recs["00031f466.jpg"].is_background


def test_single_class_layout_and_csv_file_path(tmp_path: Path) -> None:
    dataset(tmp_path, "a.jpg,1 2\n", header="ImageId,EncodedPixels")
    ds, _ = read(tmp_path / "train.csv", class_names={1: "ship"})
    assert ds.labels.names == ["ship"] and len(ds.images[0]) == 1


def test_size_option_skips_headers(tmp_path: Path) -> None:
    dataset(tmp_path, "a.jpg,1,1 2\n")
    ds, _ = read(tmp_path, size_hw=[8, 10])
    assert ds.images[0].size_hw == (8, 10)


def test_severstal_size(tmp_path: Path) -> None:
    dataset(tmp_path, "0002cc93b.jpg,1,29102 12 29346 24 29602 24\n", {"0002cc93b.jpg": (256, 1600)})
    rec = read(tmp_path)[0].images[0]
    # pixel 29102 -> index 29101 = column 113, row 173 (12 rows); 29346 -> column 114, row 161 (24 rows); ...
    assert rec.boxes.tolist() == [[113, 161, 116, 185]]


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("row, code, text", [
    ("a.jpg,1,1 2 3", "rle_malformed", "odd number"),
    ("a.jpg,1,1 two", "rle_malformed", "not an integer"),
    ("a.jpg,1,0 2", "rle_malformed", "below 1"),
    ("a.jpg,1,79 5", "rle_out_of_range", "past the end"),
    ("a.jpg,1", "csv_malformed", "expected 3 columns"),
    ("a.jpg,x,1 2", "class_malformed", "not an integer"),
    ("a.jpg,9,1 2", "class_unknown", "ClassId 9"),
])
def test_bad_rows_name_line_and_image(tmp_path: Path, row: str, code: str, text: str) -> None:
    dataset(tmp_path, f"a.jpg,1,1 2\n{row}\n")
    with pytest.raises(DatasetError) as e:
        read(tmp_path, class_names={1: "a", 2: "b"})
    msg = str(e.value)
    assert e.value.code == code and text in msg
    assert "train.csv:3" in msg and "ImageId a.jpg" in msg and "\n" not in msg


def test_skip_drops_only_the_bad_image(tmp_path: Path) -> None:
    dataset(tmp_path, "a.jpg,1,1 2 3\nb.jpg,1,1 2\n", {"a.jpg": (8, 10), "b.jpg": (8, 10)})
    ds, report = read(tmp_path, on_error="skip")
    assert [r.name for r in ds.images] == ["b.jpg"]
    assert [f.code for f in report.skipped] == ["rle_malformed"]


def test_missing_image(tmp_path: Path) -> None:
    dataset(tmp_path, "zz.jpg,1,1 2\n")
    with pytest.raises(DatasetError, match="ImageId zz.jpg") as e:
        read(tmp_path)
    assert e.value.code == "image_missing"
    ds, _ = read(tmp_path, on_error="keep", size_hw=[8, 10])
    kept = by_basename(ds)["zz.jpg"]
    assert kept.path is None and len(kept) == 1


def test_image_id_escaping_the_root(tmp_path: Path) -> None:
    dataset(tmp_path, "../secret.jpg,1,1 2\n")
    with pytest.raises(DatasetError) as e:
        read(tmp_path)
    assert e.value.code == "path_escape"


def test_bad_header_is_fatal(tmp_path: Path) -> None:
    dataset(tmp_path, "a.jpg,1,1 2\n", header="name,label,rle")
    with pytest.raises(DatasetError, match="ImageId,ClassId,EncodedPixels") as e:
        read(tmp_path, on_error="keep")
    assert e.value.code == "csv_malformed"


def test_kaggle_download_sample_submission_is_named_and_test_images_not_read(tmp_path: Path) -> None:
    root = dataset(tmp_path / "severstal-steel-defect-detection", f"a.jpg,1,{runs_for_boxes((8, 10), [[1, 1, 4, 4]])}\n",
                   {"a.jpg": (8, 10), "b.jpg": (8, 10)})
    (root / "sample_submission.csv").write_text("ImageId,EncodedPixels,ClassId\nt.jpg,1 1,0\n", encoding="utf-8")
    write_image(root / "test_images" / "t.jpg", (8, 10))
    ds, report = read(root)
    assert sorted(r.name for r in ds.images) == ["a.jpg", "b.jpg"] and ds.num_objects == 1
    assert ignored_files(report) == ["sample_submission.csv"]
    assert ignored_files(read(root / "train.csv")[1]) == []  # one file given: nothing beside it is looked at


def test_csv_in_the_folder_below_names_that_folder(tmp_path: Path) -> None:
    dataset(tmp_path / "severstal", "a.jpg,1,1 2\n")
    with pytest.raises(DatasetError) as e:
        read(tmp_path)
    msg = str(e.value)
    assert e.value.code == "file_missing" and str(tmp_path / "train.csv") in msg and "\n" not in msg
    assert msg.endswith("RLE CSV not found; pass the CSV file or set the option 'csv'; found in the sub-folder "
                        "severstal: pass that folder")


def test_detect(tmp_path: Path) -> None:
    fmt = get_format("rle-csv")
    dataset(tmp_path, "a.jpg,1,1 2\n")
    assert fmt.detect(tmp_path).score > 0 and fmt.detect(tmp_path / "train.csv").score > 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.csv").write_text("a,b\n1,2\n")
    assert fmt.detect(other) is None and fmt.detect(other / "x.csv") is None
