"""Pascal VOC reader and writer: conformance, 1-based coordinates, layouts, quirks, bad input, real NEU-DET."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest

from edgevision.core import Dataset, DatasetError, ImageRecord, LabelMap, Polygon, Report
from edgevision.core.errors import ConfigError
from edgevision.formats import WriteOptions, detect_format, get_format
from edgevision.formats.base import Losses
from tests.formats.conformance import FormatConformance, write_image
from tests.formats.format_io import ignored_files, read_as
from tests.helpers import shared_data

NEU_DET = shared_data("neu-det")


def voc_xml(filename: str | None, size_wh: tuple[int, int] | None, objects: list[dict] | None = None,
            raw_objects: str = "") -> str:
    """A VOC annotation written by hand. ``objects``: dicts with name and (xmin, ymin, xmax, ymax) ``box``."""
    parts = ["<annotation>", "<folder>JPEGImages</folder>"]
    if filename is not None:
        parts.append(f"<filename>{escape(filename)}</filename>")
    if size_wh is not None:
        parts.append(f"<size><width>{size_wh[0]}</width><height>{size_wh[1]}</height><depth>3</depth></size>")
    for o in objects or []:
        extra = "".join(f"<{k}>{v}</{k}>" for k, v in o.get("fields", {}).items())
        b = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), o["box"], strict=True))
        parts.append(f"<object><name>{escape(o['name'])}</name>{extra}<bndbox>{b}</bndbox></object>")
    parts += [raw_objects, "</annotation>"]
    return "\n".join(parts)


def make_voc(root: Path, items: dict[str, str], images: dict[str, tuple[int, int]],
             ann: str = "Annotations", img: str = "JPEGImages") -> Path:
    """``items``: xml stem -> XML text; ``images``: file name -> (h, w), written as real images."""
    (root / ann).mkdir(parents=True, exist_ok=True)
    for stem, text in items.items():
        (root / ann / f"{stem}.xml").write_text(text, encoding="utf-8")
    for i, (name, hw) in enumerate(images.items()):
        write_image(root / img / name, hw, seed=i)
    return root


read = partial(read_as, "voc")


def one(items_xml: str, images: dict[str, tuple[int, int]], tmp_path: Path, on_error: str = "fail",
        **options) -> tuple[Dataset, Report]:
    return read(make_voc(tmp_path / "ds", {"a": items_xml}, images), on_error, **options)


class TestVocConformance(FormatConformance):
    format_name = "voc"

    def build(self, root: Path, spec: Dataset) -> Path:
        split = {"line 01.jpg": "train", "défaut ü 02.png": "train", "empty.jpg": "val"}
        for i, r in enumerate(spec.images):
            stem = Path(r.name).stem
            write_image(root / "JPEGImages" / r.name, r.size_hw, seed=i)
            objs = [{"name": spec.labels.names[c], "box": (int(b[0]) + 1, int(b[1]) + 1, int(b[2]), int(b[3])),
                     "fields": {"pose": "Unspecified", "truncated": 0, "difficult": 0}}
                    for b, c in zip(r.boxes, r.class_ids, strict=True)]
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / f"{stem}.xml").write_text(
                voc_xml(r.name, (r.size_hw[1], r.size_hw[0]), objs), encoding="utf-8")
        (root / "ImageSets" / "Main").mkdir(parents=True)
        for s in ("train", "val"):
            ids = [Path(n).stem for n, v in split.items() if v == s]
            (root / "ImageSets" / "Main" / f"{s}.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
        return root

    def test_splits_from_image_sets(self, built: Path) -> None:
        ds, _ = self.read(built)
        assert {r.name: r.split for r in ds.images} == {
            "line 01.jpg": "train", "défaut ü 02.png": "train", "empty.jpg": "val"}


# -- coordinates -------------------------------------------------------------------------------
def test_whole_image_box_is_one_based(tmp_path: Path) -> None:
    ds, _ = one(voc_xml("a.jpg", (64, 48), [{"name": "pit", "box": (1, 1, 64, 48)}]), {"a.jpg": (48, 64)}, tmp_path)
    np.testing.assert_array_equal(ds.images[0].boxes, [[0, 0, 64, 48]])


def test_float_coordinates_are_kept(tmp_path: Path) -> None:
    ds, _ = one(voc_xml("a.jpg", (64, 48), [{"name": "pit", "box": (10.5, 2.25, 20.75, 30)}]),
                {"a.jpg": (48, 64)}, tmp_path)
    np.testing.assert_allclose(ds.images[0].boxes, [[9.5, 1.25, 20.75, 30]])


def test_writer_inverts_the_shift_and_keeps_integers(tmp_path: Path) -> None:
    rec = ImageRecord("a.jpg", (48, 64), boxes=[[0, 0, 64, 48], [9.5, 1.25, 20.75, 30]], class_ids=[0, 0])
    out = tmp_path / "out"
    get_format("voc").write(Dataset(LabelMap(["pit"]), [rec]), out, WriteOptions(images="none"), Losses())
    boxes = [[b.findtext(t) for t in ("xmin", "ymin", "xmax", "ymax")]
             for b in ET.parse(out / "Annotations" / "a.xml").getroot().iter("bndbox")]
    assert boxes == [["1", "1", "64", "48"], ["10.5", "2.25", "20.75", "30"]]


# -- object fields -----------------------------------------------------------------------------
def test_flags_pose_and_attribute_block_are_attributes(tmp_path: Path) -> None:
    block = ("<object><name>pit</name><difficult>1</difficult><truncated>0</truncated><occluded>1</occluded>"
             "<pose>Left</pose><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
             "<attributes><attribute><name>severity</name><value>3</value></attribute>"
             "<attribute><name>rough</name><value>true</value></attribute></attributes></object>")
    ds, _ = one(voc_xml("a.jpg", (64, 48), raw_objects=block), {"a.jpg": (48, 64)}, tmp_path)
    # truncated=0 is VOC's default and is not kept
    assert ds.images[0].attributes == [{"difficult": True, "occluded": True, "pose": "Left",
                                        "severity": 3, "rough": True}]


def test_voc_defaults_are_not_attributes(tmp_path: Path) -> None:
    block = ("<object><name>pit</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
             "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>")
    ds, _ = one(voc_xml("a.jpg", (64, 48), raw_objects=block), {"a.jpg": (48, 64)}, tmp_path)
    assert ds.images[0].attributes is None


def test_classes_sorted_unless_given(tmp_path: Path) -> None:
    objs = [{"name": "zeta", "box": (1, 1, 5, 5)}, {"name": "alpha", "box": (2, 2, 6, 6)}]
    root = make_voc(tmp_path / "ds", {"a": voc_xml("a.jpg", (64, 48), objs)}, {"a.jpg": (48, 64)})
    ds, _ = read(root)
    assert ds.labels.names == ["alpha", "zeta"] and ds.images[0].class_ids.tolist() == [1, 0]
    ds, _ = read(root, classes=["zeta", "alpha", "beta"])
    assert ds.labels.names == ["zeta", "alpha", "beta"] and ds.images[0].class_ids.tolist() == [0, 1]
    with pytest.raises(DatasetError, match=r"a\.xml:object\[0\].*unknown class 'zeta'"):
        read(root, classes=["alpha"])


# -- sizes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [None, (0, 0)])
def test_missing_or_zero_size_is_read_from_the_image(tmp_path: Path, size) -> None:
    ds, report = one(voc_xml("a.jpg", size, [{"name": "pit", "box": (1, 1, 5, 5)}]), {"a.jpg": (48, 64)}, tmp_path)
    assert ds.images[0].size_hw == (48, 64)
    assert report.counts()["size_from_image"] == 1


def test_size_that_disagrees_with_the_image_is_a_warning(tmp_path: Path) -> None:
    ds, report = one(voc_xml("a.jpg", (100, 100), []), {"a.jpg": (48, 64)}, tmp_path)
    assert ds.images[0].size_hw == (48, 64)
    (f,) = [f for f in report.findings if f.code == "size_mismatch"]
    assert f.severity == "warning" and "100x100" in f.message and "64x48" in f.message


def test_missing_image_with_size_is_kept_without_path(tmp_path: Path) -> None:
    ds, report = one(voc_xml("gone.jpg", (64, 48), [{"name": "pit", "box": (1, 1, 5, 5)}]), {}, tmp_path)
    assert ds.images[0].path is None and ds.images[0].size_hw == (48, 64) and ds.images[0].name == "gone.jpg"
    assert report.counts()["image_missing"] == 1 and not report.errors


def test_missing_image_without_size_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"a\.xml: image file not found and no image size"):
        one(voc_xml("gone.jpg", None, []), {}, tmp_path)


# -- file name quirks ----------------------------------------------------------------------------
@pytest.mark.parametrize(("filename", "on_disk", "quirk"), [
    ("patches_104", "patches_104.jpg", "missing file extension"),
    ("IMG_1.JPG", "img_1.jpg", "different letter case"),
    ("a.png", "a.jpg", "different file extension"),
    ("VOC2007/JPEGImages/a.jpg", "a.jpg", "a path instead of the file name"),
])
def test_filename_quirks_still_find_the_image(tmp_path: Path, filename: str, on_disk: str, quirk: str) -> None:
    ds, report = one(voc_xml(filename, (64, 48), []), {on_disk: (48, 64)}, tmp_path)
    assert ds.images[0].path is not None and ds.images[0].path.name == on_disk
    assert ds.images[0].name == on_disk
    (f,) = [f for f in report.findings if f.code == "image_name_quirk"]
    assert f.severity == "info" and quirk in f.message and filename in f.message


@pytest.mark.parametrize("filename", [None, "", "   ", "not-there.jpg"])
def test_unusable_filename_falls_back_to_the_xml_stem(tmp_path: Path, filename) -> None:
    root = make_voc(tmp_path / "ds", {"img7": voc_xml(filename, (64, 48), [])}, {"img7.jpg": (48, 64)})
    ds, report = read(root)
    assert ds.images[0].name == "img7.jpg"
    assert {"filename_missing", "image_fallback"} & set(report.counts())


def test_two_xmls_naming_one_image(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "ds", {"a": voc_xml("a.jpg", (64, 48), []), "b": voc_xml("a.jpg", (64, 48), [])},
                    {"a.jpg": (48, 64), "b.jpg": (48, 64)})
    ds, report = read(root)
    assert sorted(r.name for r in ds.images) == ["a.jpg", "b.jpg"]
    assert "already annotated by" in next(f.message for f in report.findings if f.code == "image_fallback")
    (root / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"b\.xml: image 'a\.jpg' is already annotated by .*a\.xml"):
        read(root)


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("box", "code", "text"), [
    (("1", "2", "", "5"), "box_missing", "lacks xmax"),
    (("1", "2", "x", "5"), "box_invalid", "must be numbers"),
    (("nan", "2", "5", "5"), "box_nan", "non-finite"),
    (("9", "2", "5", "5"), "box_inverted", "inverted"),
])
def test_bad_boxes_are_one_line_errors_naming_file_and_object(tmp_path: Path, box, code, text) -> None:
    objs = [{"name": "pit", "box": (1, 1, 5, 5)}, {"name": "pit", "box": box}]
    xml = voc_xml("a.jpg", (64, 48), objs)
    with pytest.raises(DatasetError) as exc:
        one(xml, {"a.jpg": (48, 64)}, tmp_path)
    assert exc.value.code == code and text in str(exc.value)
    assert "a.xml:object[1]" in str(exc.value) and "\n" not in str(exc.value)


def test_bad_box_policies_skip_and_keep(tmp_path: Path) -> None:
    objs = [{"name": "pit", "box": (1, 1, 5, 5)}, {"name": "pit", "box": ("1", "2", "", "5")},
            {"name": "pit", "box": (9, 2, 5, 5)}]
    root = make_voc(tmp_path / "ds", {"a": voc_xml("a.jpg", (64, 48), objs), "b": voc_xml("b.jpg", (64, 48), [])},
                    {"a.jpg": (48, 64), "b.jpg": (48, 64)})
    ds, report = read(root, on_error="skip")
    assert [r.name for r in ds.images] == ["b.jpg"] and report.skipped[0].code == "box_missing"
    ds, report = read(root, on_error="keep")
    kept = ds.images[0]
    assert len(kept) == 2 and kept.boxes[1].tolist() == [8, 1, 5, 5]  # the inverted box is kept for validate
    assert sorted(f.code for f in report.errors) == ["box_inverted", "box_missing"]


def test_object_without_name(tmp_path: Path) -> None:
    xml = voc_xml("a.jpg", (64, 48), raw_objects="<object><bndbox><xmin>1</xmin></bndbox></object>")
    with pytest.raises(DatasetError, match=r"a\.xml:object\[0\]: <object> has no <name>"):
        one(xml, {"a.jpg": (48, 64)}, tmp_path)


@pytest.mark.parametrize("filename", ["../../etc/passwd", "/etc/hosts", "C:\\data\\a.jpg"])
def test_filename_escaping_the_root_is_path_escape(tmp_path: Path, filename: str) -> None:
    xml = voc_xml(filename, (64, 48), [])
    with pytest.raises(DatasetError) as exc:
        one(xml, {"a.jpg": (48, 64)}, tmp_path)
    assert exc.value.code == "path_escape" and "a.xml" in str(exc.value)
    ds, report = one(xml, {"a.jpg": (48, 64)}, tmp_path / "keep", on_error="keep")
    assert ds.images[0].name == "a.jpg" and report.errors[0].code == "path_escape"


def test_malformed_xml_is_skipped_under_skip(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "ds", {"a": "<annotation><filename>a.jpg</filename", "b": voc_xml("b.jpg", (64, 48), [])},
                    {"a.jpg": (48, 64), "b.jpg": (48, 64)})
    with pytest.raises(DatasetError) as exc:
        read(root)
    assert exc.value.code == "xml_malformed" and "a.xml" in str(exc.value) and "\n" not in str(exc.value)
    ds, report = read(root, on_error="skip")
    assert [r.name for r in ds.images] == ["b.jpg"] and report.skipped[0].code == "xml_malformed"


def test_xml_of_another_kind_is_skipped_with_a_warning(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "ds", {"a": voc_xml("a.jpg", (64, 48), []), "z": "<other/>"}, {"a.jpg": (48, 64)})
    ds, report = read(root)
    assert len(ds) == 1 and report.counts()["xml_not_voc"] == 1


def test_entity_expansion_is_refused(tmp_path: Path) -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
            "<annotation><filename>&y;</filename></annotation>")
    with pytest.raises(DatasetError) as exc:
        one(bomb, {"a.jpg": (48, 64)}, tmp_path)
    assert exc.value.code == "xml_unsafe"


# -- layouts -------------------------------------------------------------------------------------
def neu_like(root: Path) -> Path:
    make_voc(root, {"crazing_1": voc_xml("crazing_1.jpg", (20, 20), [{"name": "crazing", "box": (1, 1, 20, 20)}]),
                    "patches_2": voc_xml("patches_2", (20, 20), [{"name": "patches", "box": (2, 3, 9, 9)}])},
             {"crazing_1.jpg": (20, 20), "patches_2.jpg": (20, 20)}, ann="ANNOTATIONS", img="IMAGES")
    make_voc(root, {"crazing_9": voc_xml("crazing_9.jpg", (20, 20), [{"name": "crazing", "box": (1, 1, 5, 5)}])},
             {"crazing_9.jpg": (20, 20)}, ann="Validation_Annotations", img="Validation_Images")
    return root


def test_paired_folders_and_split_dirs(tmp_path: Path) -> None:
    root = neu_like(tmp_path / "neu")
    fmt, det = detect_format(root)
    assert fmt.name == "voc" and "ANNOTATIONS" in det.reason
    ds, report = read(root)
    assert sorted(r.name for r in ds.images) == ["crazing_1.jpg", "crazing_9.jpg", "patches_2.jpg"]
    assert all(r.split is None for r in ds.images) and report.counts()["image_name_quirk"] == 1
    ds, _ = read(root, split_dirs={"ANNOTATIONS": "train", "Validation_Annotations": "validation"})
    assert {r.name: r.split for r in ds.images} == {"crazing_1.jpg": "train", "patches_2.jpg": "train",
                                                    "crazing_9.jpg": "val"}
    assert next(r for r in ds.images if r.name == "crazing_9.jpg").path.parent.name == "Validation_Images"


def test_split_dirs_naming_no_folder_lists_the_folders(tmp_path: Path) -> None:
    root = neu_like(tmp_path / "neu")
    with pytest.raises(ConfigError, match=r"no annotation folder \['VALIDATION'\].*'ANNOTATIONS'"):
        read(root, split_dirs={"VALIDATION": "val"})


def test_same_image_name_in_two_folders_gets_a_prefix(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_voc(root, {"a": voc_xml("a.jpg", (20, 20), [])}, {"a.jpg": (20, 20)}, ann="A_Annotations", img="A_Images")
    make_voc(root, {"a": voc_xml("a.jpg", (20, 20), [])}, {"a.jpg": (20, 20)}, ann="B_Annotations", img="B_Images")
    ds, _ = read(root)
    assert sorted(r.name for r in ds.images) == ["B_Images/a.jpg", "a.jpg"]


def test_xml_beside_images_and_single_file(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "flat", {"a": voc_xml("a.jpg", (64, 48), [{"name": "pit", "box": (1, 1, 5, 5)}]),
                                        "b": voc_xml("b.jpg", (64, 48), [])},
                    {"a.jpg": (48, 64), "b.jpg": (48, 64)}, ann=".", img=".")
    ds, _ = read(root)
    assert [r.name for r in ds.images] == ["a.jpg", "b.jpg"]
    assert get_format("voc").detect(root / "a.xml").score > 0
    ds, _ = read(root / "a.xml")
    assert [r.name for r in ds.images] == ["a.jpg"] and len(ds.images[0]) == 1


def test_xml_at_the_root_with_images_in_a_subfolder(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "ds", {"a": voc_xml("a.jpg", (64, 48), [])}, {"a.jpg": (48, 64)}, ann=".", img="pics")
    ds, _ = read(root)
    assert ds.images[0].path == root / "pics" / "a.jpg" and ds.images[0].meta == {"depth": 3, "annotation": "a.xml"}


def test_trainval_only_means_train(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "ds", {"a": voc_xml("a.jpg", (64, 48), []), "b": voc_xml("b.jpg", (64, 48), [])},
                    {"a.jpg": (48, 64), "b.jpg": (48, 64)})
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("a\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("b\na\n")
    ds, report = read(root)
    assert {r.name: r.split for r in ds.images} == {"a.jpg": "train", "b.jpg": "test"}
    assert report.counts()["split_trainval"] == 1 and report.counts()["split_conflict"] == 1


@pytest.mark.parametrize(("mode", "names"), [("ignore", ["a.jpg"]), ("background", ["a.jpg", "extra.jpg"])])
def test_unannotated_images(tmp_path: Path, mode: str, names: list[str]) -> None:
    root = make_voc(tmp_path / "ds", {"a": voc_xml("a.jpg", (64, 48), [])}, {"a.jpg": (48, 64), "extra.jpg": (10, 12)})
    ds, report = read(root, unannotated_images=mode)
    assert sorted(r.name for r in ds.images) == names and report.counts()["image_unannotated"] == 1
    assert all(r.is_background for r in ds.images)


@pytest.mark.parametrize("mode", ["ignore", "background"])
def test_illustration_beside_the_folders_is_outside_the_layout_not_unannotated(tmp_path: Path, mode: str) -> None:
    """GC10-DET: XMLs in 'lable/', images in class folders; the folder read also holds a README and
    an illustration. The image index is the whole folder, yet the illustration is no sample."""
    root = tmp_path / "GC10-DET"
    make_voc(root, {"img_01_1": voc_xml("img_01_1.jpg", (64, 32), [{"name": "1_chongkong", "box": (1, 1, 9, 9)}])},
             {"img_01_1.jpg": (32, 64)}, ann="lable", img="1")
    write_image(root / "2" / "img_02_7.jpg", (32, 64))  # never labelled
    write_image(root / "defects examples.png", (40, 90))
    (root / "README.md").write_text("# GC10-DET\n", encoding="utf-8")
    ds, report = read(root, unannotated_images=mode)
    assert sorted(r.name for r in ds.images) == (["1/img_01_1.jpg"] if mode == "ignore"
                                                 else ["1/img_01_1.jpg", "2/img_02_7.jpg"])
    assert ignored_files(report) == ["README.md", "defects examples.png"]
    [unannotated] = [f for f in report.findings if f.code == "image_unannotated"]
    assert unannotated.message.startswith("1 image(s)") and "img_02_7.jpg" in unannotated.message


def test_labelimg_folder_keeps_its_unannotated_images_and_names_the_rest(tmp_path: Path) -> None:
    """XMLs beside their images: an image there without XML is an unannotated sample, a README is not."""
    root = make_voc(tmp_path / "flat", {"a": voc_xml("a.jpg", (64, 48), [])}, {"a.jpg": (48, 64), "b.jpg": (48, 64)},
                    ann=".", img=".")
    (root / "classes.txt").write_text("pit\n", encoding="utf-8")
    (root / ".DS_Store").write_bytes(b"\0")
    ds, report = read(root, unannotated_images="background")
    assert [r.name for r in ds.images] == ["a.jpg", "b.jpg"] and report.counts()["image_unannotated"] == 1
    assert ignored_files(report) == ["classes.txt"]


def test_many_files_outside_the_layout_are_counted_and_eight_shown(tmp_path: Path) -> None:
    root = neu_like(tmp_path / "neu")
    for k in range(11):
        (root / f"note_{k:02d}.txt").write_text("x", encoding="utf-8")
    _, report = read(root)
    [f] = [f for f in report.findings if f.code == "file_outside_layout"]
    assert f.where == str(root) and f.message == ("ignored 11 files outside the dataset layout: note_00.txt, note_01.txt, "
                                                  "note_02.txt, note_03.txt, note_04.txt, note_05.txt, note_06.txt, "
                                                  "note_07.txt and 3 more")


def test_one_annotation_file_reports_nothing_beside_it(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "flat", {"a": voc_xml("a.jpg", (64, 48), [])}, {"a.jpg": (48, 64)}, ann=".", img=".")
    (root / "README.md").write_text("x", encoding="utf-8")
    assert ignored_files(read(root / "a.xml")[1]) == [] and ignored_files(read(root)[1]) == ["README.md"]


def test_cvat_xml_is_not_voc(tmp_path: Path) -> None:
    (tmp_path / "annotations.xml").write_text("<annotations><version>1.1</version></annotations>")
    assert get_format("voc").detect(tmp_path) is None


# -- writer --------------------------------------------------------------------------------------
def write(ds: Dataset, out: Path, images: str = "copy") -> Losses:
    losses = Losses()
    get_format("voc").write(ds, out, WriteOptions(images=images), losses)
    return losses


def test_writer_layout_losses_and_round_trip(tmp_path: Path) -> None:
    img = write_image(tmp_path / "src" / "x.png", (30, 40))
    recs = [
        ImageRecord("sub/a.jpg", (30, 40), boxes=[[1, 2, 10, 12], [3, 3, 9, 9]], class_ids=[0, 1], path=img,
                    shapes=[Polygon.from_flat([1, 2, 10, 2, 10, 12]), None], scores=[0.9, 0.5],
                    attributes=[{"difficult": True, "pose": "Front", "severity": 2, "flags": {"a": 1}}, {}],
                    split="train", meta={"depth": 1}),
        ImageRecord("sub/A.jpg", (30, 40), path=img, split="val"),
        ImageRecord("défaut ü 02.png", (30, 40), path=img, split="val"),
        ImageRecord("noimage.jpg", (30, 40)),
    ]
    out = tmp_path / "out"
    losses = write(Dataset(LabelMap(["scratch", "pit hole"]), recs), out)
    assert losses.counts == {"image renamed (VOC ids are flat and unique)": 2,
                             "shape dropped (VOC holds boxes only)": 1,
                             "score dropped (VOC holds no confidences)": 2,
                             "attribute dropped (not a scalar)": 1,
                             "image file not written (the source has no image file)": 1}
    assert sorted(p.name for p in (out / "Annotations").iterdir()) == [
        "défaut ü 02.xml", "noimage.xml", "sub__A_2.xml", "sub__a.xml"]
    assert (out / "JPEGImages" / "sub__A_2.jpg").is_file() and not (out / "JPEGImages" / "noimage.jpg").exists()
    main = out / "ImageSets" / "Main"
    assert (main / "train.txt").read_text() == "sub__a\n"
    assert (main / "val.txt").read_text(encoding="utf-8") == "sub__A_2\ndéfaut ü 02\n"
    assert (main / "trainval.txt").read_text(encoding="utf-8") == "sub__a\nsub__A_2\ndéfaut ü 02\n"
    text = (out / "Annotations" / "défaut ü 02.xml").read_text(encoding="utf-8")
    assert text.startswith("<?xml version='1.0' encoding='utf-8'?>") and "<filename>défaut ü 02.png</filename>" in text
    back, report = read(out)
    assert [f.code for f in report.findings] == ["image_missing"]
    a = next(r for r in back.images if r.name == "sub__a.jpg")
    assert a.boxes.tolist() == [[1, 2, 10, 12], [3, 3, 9, 9]] and a.split == "train"
    assert a.attributes[0] == {"difficult": True, "pose": "Front", "severity": 2}
    assert back.labels.names == ["pit hole", "scratch"]
    root = ET.parse(out / "Annotations" / "sub__a.xml").getroot()
    assert root.findtext("size/depth") == "1"
    assert {r.name: r.split for r in back.images}["noimage.jpg"] is None


def test_background_image_gets_an_xml_without_objects(tmp_path: Path) -> None:
    write(Dataset(LabelMap(["pit"]), [ImageRecord("bg.jpg", (8, 8))]), tmp_path / "out", images="none")
    root = ET.parse(tmp_path / "out" / "Annotations" / "bg.xml").getroot()
    assert root.find("object") is None and root.findtext("size/width") == "8"
    assert not (tmp_path / "out" / "ImageSets").exists()


# -- real data -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def neu_det() -> tuple[Dataset, Report]:
    if not NEU_DET.is_dir():
        pytest.skip(f"{NEU_DET} not present")
    return read(NEU_DET, split_dirs={"ANNOTATIONS": "train", "Validation_Annotations": "val"})


def test_neu_det_reads_as_published(neu_det) -> None:
    ds, report = neu_det
    assert len(ds) == 1800 and ds.num_objects == 4189
    assert ds.labels.names == ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    assert all(r.size_hw == (200, 200) and r.path is not None for r in ds.images)
    boxes = np.concatenate([r.boxes for r in ds.images])
    assert boxes.min() >= 0 and boxes.max() <= 200 and np.all(boxes[:, 2:] > boxes[:, :2])
    assert not report.errors  # speed: never asserted in a test (about 1.2 s on an idle 2-core machine)


def test_neu_det_filename_quirks_and_splits(neu_det) -> None:
    ds, report = neu_det
    quirks = [f for f in report.findings if f.code == "image_name_quirk"]
    main = [f for f in quirks if "/ANNOTATIONS/" in f.where]
    assert len(main) == 170 and len(quirks) == 174
    assert all("missing file extension" in f.message for f in quirks)
    assert {Path(f.where).name.rsplit("_", 1)[0] for f in main} == {"patches", "pitted_surface"}
    assert {s: len(ds.split(s)) for s in ds.splits} == {"train": 1770, "val": 30}
    loose = [p for p in NEU_DET.iterdir() if p.is_file()]  # the copy's SOURCE.md: outside the dataset layout
    assert {f.code for f in report.findings} == {"image_name_quirk"} | ({"file_outside_layout"} if loose else set())
