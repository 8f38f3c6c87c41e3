"""Public-dataset recipes: every recipe file, the class mapping, licences, and each dataset end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevision.convert import convert, read_dataset
from edgevision.core import ConfigError, Dataset, DatasetError, ImageRecord, LabelMap, Report, UnknownNameError
from edgevision.formats import detect_format, get_format
from edgevision.recipes import Recipe, get_recipe, list_recipes, load_recipe, recipe_dirs
from tests.fixtures_recipes import BUILDERS, PUBLISHED, voc_xml
from tests.formats.conformance import write_image
from tests.formats.format_io import ignored_files
from tests.helpers import shared_data

NEU = shared_data("neu-det")
SHIPPED = {"neu-det", "gc10-det", "pku-market-pcb", "deeppcb", "mvtec-ad", "magnetic-tile", "severstal", "railsem19"}


def make_recipe(**overrides: object) -> Recipe:
    """An in-memory recipe with every required field; ``overrides`` replace fields."""
    fields: dict[str, object] = dict(
        name="demo", title="Demo set", reader="voc", licence="CC-BY-4.0", commercial_use=True,
        research_only=False, citation="A. Author, Demo (2024).", homepage="https://example.org/demo",
        layout="Annotations/ + JPEGImages/", quirks=["none known"],
    )
    return Recipe(**{**fields, **overrides})


def dataset(*records: ImageRecord, names: list[str], source_ids: list[int] | None = None) -> Dataset:
    return Dataset(LabelMap(list(names), source_ids), list(records), root=Path("/data"), meta={"format": "voc"})


def names_of(ds: Dataset, rec: ImageRecord) -> list[str]:
    return [ds.labels.names[c] for c in rec.class_ids]


# -- the shipped recipe files -------------------------------------------------------------------
def test_list_recipes_lists_every_recipe_file() -> None:
    files = {p.stem for d in recipe_dirs() for p in d.glob("*.yaml")}
    assert set(list_recipes()) == files
    assert set(list_recipes()) >= SHIPPED
    assert list_recipes() == sorted(list_recipes())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_recipe_loads_and_fits_its_reader(name: str) -> None:
    rec = get_recipe(name)
    assert rec.name == name
    fmt = get_format(rec.reader)
    assert fmt.can_read
    opts = fmt.parse_options(rec.options)
    assert isinstance(opts, fmt.ReadOptions)
    assert set(rec.options) <= set(fmt.ReadOptions.model_fields)  # every option is a real reader option
    assert rec.quirks and all(len(q) > 30 for q in rec.quirks), "each quirk says what happens and how it is handled"
    assert rec.citation and rec.layout and rec.url.startswith("http")
    assert not (rec.research_only and rec.commercial_use)
    if rec.classes is not None:
        assert {t for t in rec.class_map.values() if t is not None} <= set(rec.classes)


def test_recipe_names_are_normalized() -> None:
    assert get_recipe("NEU_DET").name == "neu-det"


def test_unknown_recipe_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownNameError) as exc:
        get_recipe("neu-dett")
    msg = str(exc.value)
    assert "Did you mean 'neu-det'?" in msg and "severstal" in msg and "\n" not in msg
    assert isinstance(exc.value, KeyError)


@pytest.mark.parametrize("name", ["neu-det", "mvtec-ad", "railsem19", "severstal"])
def test_licence_warning_for_restricted_datasets(name: str) -> None:
    rec = get_recipe(name)
    warning = rec.licence_warning()
    assert warning is not None and "\n" not in warning
    assert rec.title in warning and rec.url in warning
    assert ("research use only" if rec.research_only else "not licensed for commercial use") in warning


def test_licence_terms_of_neu_and_mvtec() -> None:
    neu, mvtec = get_recipe("neu-det"), get_recipe("mvtec-ad")
    assert neu.research_only and not neu.commercial_use
    assert mvtec.licence == "CC-BY-NC-SA-4.0" and not mvtec.commercial_use
    assert "CC-BY-NC-SA-4.0" in (mvtec.licence_warning() or "")


def test_no_licence_warning_when_commercial_use_is_granted() -> None:
    assert make_recipe().licence_warning() is None


# -- recipe files with mistakes -----------------------------------------------------------------
GOOD_YAML = """\
name: {name}
title: Demo
reader: voc
options: {{unannotated_images: ignore}}
classes: [scratch, dent]
class_map: {{Scratch: scratch, junk: null}}
licence: CC-BY-4.0
commercial_use: true
research_only: false
citation: Demo (2024)
homepage: https://example.org
layout: Annotations/ + JPEGImages/
quirks: [none]
"""


def write_recipe(tmp_path: Path, text: str, name: str = "demo") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_a_recipe_file_can_be_given_by_path(tmp_path: Path) -> None:
    p = write_recipe(tmp_path, GOOD_YAML.format(name="demo"))
    rec = get_recipe(str(p))
    assert rec.class_map == {"Scratch": "scratch", "junk": None}
    assert load_recipe(p) == rec


@pytest.mark.parametrize(("change", "expected"), [
    (("classes: [scratch, dent]", "clases: [scratch, dent]"), "unknown recipe field 'clases'; did you mean 'classes'?"),
    (("unannotated_images: ignore", "unanotated_images: ignore"), "voc reader option 'unanotated_images'"),
    (("unannotated_images: ignore", "unannotated_images: sometimes"), "voc reader option 'unannotated_images'"),
    (("reader: voc", "reader: vocc"), "unknown format 'vocc'"),
    (("Scratch: scratch", "Scratch: scratches"), "class_map maps to ['scratches']"),
    (("research_only: false", "research_only: true"), "research_only and commercial_use cannot both be true"),
    (("citation: Demo (2024)\n", ""), "recipe field 'citation' is required"),
    (("classes: [scratch, dent]", "classes: [scratch, scratch]"), "duplicates ['scratch']"),
])
def test_bad_recipe_file_is_a_one_line_config_error(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    old, new = change
    text = GOOD_YAML.format(name="demo")
    assert old in text
    p = write_recipe(tmp_path, text.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert "\n" not in msg and str(p) in msg and expected in msg, msg


def test_missing_recipe_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read recipe"):
        get_recipe(str(tmp_path / "my-line.yaml"))


def test_recipe_name_must_match_its_file(tmp_path: Path) -> None:
    p = write_recipe(tmp_path, GOOD_YAML.format(name="other"), name="demo")
    with pytest.raises(ConfigError, match="must match the file name 'demo'"):
        load_recipe(p)


@pytest.mark.parametrize("text", ["name: [unclosed\n", "- just\n- a list\n"])
def test_malformed_recipe_yaml(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_recipe(write_recipe(tmp_path, text))
    assert "\n" not in str(exc.value) and "demo.yaml" in str(exc.value)


# -- applying a recipe --------------------------------------------------------------------------
def gc10_like() -> tuple[Recipe, Dataset]:
    rec = make_recipe(
        classes=["punching_hole", "crease", "waist_folding"],
        class_map={"1_chongkong": "punching_hole", "9_zhehen": "crease", "10_yaozhe": "waist_folding",
                   "10_yaozhed": "waist_folding", "d": None},
    )
    src_names = ["10_yaozhe", "10_yaozhed", "1_chongkong", "9_zhehen", "d"]  # sorted, as readers discover them
    ds = dataset(
        ImageRecord("a.jpg", (100, 200), boxes=[[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]], class_ids=[2, 4, 1],
                    attributes=[{"difficult": True}, {}, {"truncated": True}], path=Path("/data/1/a.jpg")),
        ImageRecord("b.jpg", (100, 200), boxes=[[3, 3, 9, 9]], class_ids=[3]),
        ImageRecord("empty.jpg", (50, 50)),
        names=src_names,
    )
    return rec, ds


def test_apply_renames_merges_drops_and_reorders() -> None:
    rec, ds = gc10_like()
    report = Report("fail")
    out = rec.apply(ds, report)
    assert out.labels.names == ["punching_hole", "crease", "waist_folding"]
    a, b, empty = out.images
    assert names_of(out, a) == ["punching_hole", "waist_folding"]
    np.testing.assert_array_equal(a.boxes, [[0, 0, 10, 10], [1, 1, 2, 2]])
    assert a.attributes == [{"difficult": True}, {"truncated": True}]
    assert names_of(out, b) == ["crease"] and empty.is_background
    dropped = [f for f in report.findings if f.code == "class_dropped"]
    assert len(dropped) == 1 and "1 object(s) of class 'd'" in dropped[0].message
    assert out.class_counts() == {"punching_hole": 1, "crease": 1, "waist_folding": 1}
    out.check()


def test_apply_does_not_modify_its_input() -> None:
    rec, ds = gc10_like()
    before = [(r.class_ids.copy(), r.boxes.copy()) for r in ds.images]
    rec.apply(ds, Report("fail"))
    assert ds.labels.names[0] == "10_yaozhe"
    for r, (ids, boxes) in zip(ds.images, before, strict=True):
        np.testing.assert_array_equal(r.class_ids, ids)
        np.testing.assert_array_equal(r.boxes, boxes)


def test_apply_records_recipe_and_licence_in_meta() -> None:
    rec, ds = gc10_like()
    out = rec.apply(ds, Report("fail"))
    assert out.meta["recipe"] == "demo" and out.meta["licence"] == "CC-BY-4.0"
    assert out.meta["commercial_use"] is True and out.meta["research_only"] is False
    assert out.meta["format"] == "voc"
    assert out.meta["licenses"] == [{"id": 1, "name": "CC-BY-4.0", "url": "https://example.org/demo"}]


def test_class_not_covered_fails_with_one_line_naming_image_and_class() -> None:
    rec, ds = gc10_like()
    ds.labels.names[2] = "1_chongkon"  # a class the recipe does not know
    with pytest.raises(DatasetError) as exc:
        rec.apply(ds, Report("fail"))
    err = exc.value
    assert err.code == "class_unknown" and err.where == "a.jpg:object[0]"
    msg = str(err)
    assert "\n" not in msg and "'1_chongkon'" in msg and "closest known: '1_chongkong'" in msg
    assert "class_map" in msg


def test_class_not_covered_under_skip_drops_the_image() -> None:
    rec, ds = gc10_like()
    ds.labels.names[3] = "9_zhehenn"
    report = Report("skip")
    out = rec.apply(ds, report)
    assert [r.name for r in out.images] == ["a.jpg", "empty.jpg"]
    assert [f.where for f in report.skipped] == ["b.jpg:object[0]"]


def test_class_not_covered_under_keep_is_shown_after_the_canonical_classes() -> None:
    rec, ds = gc10_like()
    ds.labels.names[3] = "9_zhehenn"
    report = Report("keep")
    out = rec.apply(ds, report)
    assert out.labels.names == ["punching_hole", "crease", "waist_folding", "9_zhehenn"]
    assert names_of(out, out.images[1]) == ["9_zhehenn"]
    assert [f.code for f in report.errors] == ["class_unknown"]
    out.check()


def test_without_classes_the_mapped_names_keep_reader_order() -> None:
    rec = make_recipe(class_map={"Scratch": "scratch", "scratch": "scratch", "junk": None})
    ds = dataset(ImageRecord("a.jpg", (10, 10), boxes=[[0, 0, 1, 1]] * 3, class_ids=[0, 1, 2]),
                 names=["Scratch", "dent", "junk", "scratch"])
    out = rec.apply(ds, Report("fail"))
    assert out.labels.names == ["scratch", "dent"]
    assert names_of(out, out.images[0]) == ["scratch", "dent"]


def test_source_ids_are_kept_only_for_one_to_one_classes() -> None:
    rec = make_recipe(classes=["b", "a"])
    ds = dataset(ImageRecord("x.jpg", (10, 10), boxes=[[0, 0, 1, 1]], class_ids=[1]), names=["a", "b"], source_ids=[1, 2])
    out = rec.apply(ds, Report("fail"))
    assert out.labels.names == ["b", "a"] and out.labels.source_ids == [2, 1]
    merged = make_recipe(classes=["ab"], class_map={"a": "ab", "b": "ab"}).apply(ds, Report("fail"))
    assert merged.labels.source_ids is None


def test_split_rules_match_the_image_path_below_the_dataset_root() -> None:
    rec = make_recipe(splits=[{"match": "Validation_Images/*", "split": "val"}, {"match": "IMAGES/*", "split": "train"}])
    ds = dataset(
        ImageRecord("a.jpg", (10, 10), path=Path("/data/IMAGES/a.jpg")),
        ImageRecord("b.jpg", (10, 10), path=Path("/data/Validation_Images/b.jpg")),
        ImageRecord("c.jpg", (10, 10), path=Path("/data/other/c.jpg"), split="test"),
        ImageRecord("IMAGES/d.jpg", (10, 10)),
        names=[],
    )
    out = rec.apply(ds, Report("fail"))
    assert [r.split for r in out.images] == ["train", "val", "test", "train"]


# -- each public dataset end to end, in its real layout ----------------------------------------
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_recipe_converts_its_dataset_layout_to_coco(name: str, tmp_path: Path) -> None:
    src, expected = BUILDERS[name](tmp_path / "src")
    result = convert(src, tmp_path / "out", recipe=name, to="coco")
    read = result.read
    assert read.recipe is not None and read.recipe.name == name
    found = read.report.counts()
    assert set(expected.findings) <= set(found), f"expected findings {expected.findings}, got {dict(found)}"
    for r in read.dataset.images:
        assert r.path is not None and r.path.is_file(), f"{name}: {r.name}: image file not found by the reader"

    back = read_dataset(tmp_path / "out", "coco").dataset
    assert len(back) == expected.images
    assert back.num_objects == expected.boxes
    assert {k: v for k, v in back.class_counts().items() if v} == expected.classes
    rec = get_recipe(name)
    if rec.classes is not None:
        assert back.labels.names == rec.classes
    if expected.splits:
        assert {s: len(back.split(s)) for s in back.splits} == expected.splits
    for r in back.images:
        h, w = r.size_hw
        assert np.all(r.boxes >= 0) and np.all(r.boxes[:, [0, 2]] <= w) and np.all(r.boxes[:, [1, 3]] <= h)
    doc = json.loads(next((tmp_path / "out" / "annotations").glob("*.json")).read_text(encoding="utf-8"))
    assert doc["licenses"][0]["name"] == rec.licence


def test_neu_fixture_keeps_the_published_class_order_and_boxes(tmp_path: Path) -> None:
    src, _ = BUILDERS["neu-det"](tmp_path)
    ds = read_dataset(src, recipe="neu-det").dataset
    assert ds.labels.names == ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    whole = next(r for r in ds.images if r.name == "rolled-in_scale_7.jpg")
    np.testing.assert_array_equal(whole.boxes, [[0, 0, 200, 200]])  # VOC 1..200 inclusive = the whole image


@pytest.mark.parametrize(("name", "ids"), [("deeppcb", [1, 2, 3, 4, 5, 6]), ("severstal", [1, 2, 3, 4])])
def test_published_class_ids_survive_into_coco(name: str, ids: list[int], tmp_path: Path) -> None:
    src, _ = BUILDERS[name](tmp_path / "src")
    convert(src, tmp_path / "out", recipe=name, to="coco")
    doc = json.loads(next((tmp_path / "out" / "annotations").glob("*.json")).read_text(encoding="utf-8"))
    assert [c["id"] for c in doc["categories"]] == ids
    assert [c["name"] for c in doc["categories"]] == get_recipe(name).classes


def test_gc10_unmapped_pinyin_label_fails_the_read(tmp_path: Path) -> None:
    src = tmp_path / "GC10-DET"
    write_image(src / "2" / "img_02_1.jpg", (32, 64))
    (src / "lable").mkdir(parents=True)
    (src / "lable" / "img_02_1.xml").write_text(voc_xml("img_02_1.jpg", (64, 32), [("2_hanfen", (1, 1, 9, 9))]))
    with pytest.raises(DatasetError) as exc:
        read_dataset(src, recipe="gc10-det")
    assert exc.value.code == "class_unknown" and "'2_hanfen'" in str(exc.value) and "'2_hanfeng'" in str(exc.value)


def test_reader_options_given_by_the_user_override_the_recipe(tmp_path: Path) -> None:
    src, _ = BUILDERS["railsem19"](tmp_path)
    ds = read_dataset(src, recipe="railsem19", options={"polylines": "keep"}).dataset
    assert ds.class_counts()["rail"] == 2 and ds.class_counts()["guard-rail"] == 1


# -- the published trees as they are: READMEs, illustrations, nested archive folders -----------
def test_every_recipe_has_a_published_layout_fixture() -> None:
    assert {recipe for recipe, _ in PUBLISHED.values()} == set(list_recipes()) == set(BUILDERS)


@pytest.mark.parametrize("layout", sorted(PUBLISHED))
@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_recipe_reads_the_published_tree_as_it_is(layout: str, on_error: str, tmp_path: Path) -> None:
    recipe, build = PUBLISHED[layout]
    src, expected = build(tmp_path)
    read = read_dataset(src, recipe=recipe, on_error=on_error)
    report, ds = read.report, read.dataset
    assert not report.errors and not report.skipped, [str(f) for f in report.findings]
    assert [f.code for f in report.findings if f.severity == "warning"] == (["class_dropped"] if recipe == "gc10-det" else [])
    assert len(ds) == expected.images and ds.num_objects == expected.boxes
    assert {k: v for k, v in ds.class_counts().items() if v} == expected.classes
    if expected.splits:
        assert {s: len(ds.split(s)) for s in ds.splits} == expected.splits
    assert ignored_files(report) == list(expected.outside)
    used = {r.path.resolve() for r in ds.images if r.path is not None}
    assert not used & {(src / name).resolve() for name in expected.outside}, "a file outside the layout was read"


@pytest.mark.parametrize("layout", sorted(PUBLISHED))
def test_published_tree_is_detected_or_needs_its_recipe(layout: str, tmp_path: Path) -> None:
    src, expected = PUBLISHED[layout][1](tmp_path)
    if expected.detected is None:
        with pytest.raises(DatasetError) as exc:
            detect_format(src)
        assert exc.value.code == "format_unknown" and "--from" in str(exc.value)
        return
    fmt, detection = detect_format(src)
    assert fmt.name == expected.detected and detection.reason
    for how in ("auto", expected.detected):  # no recipe: the format's defaults take the tree as published
        read = read_dataset(src, how)
        assert read.format == expected.detected and len(read.dataset) == expected.images
        assert not read.report.errors and ignored_files(read.report) == list(expected.outside)


def test_gc10_illustration_is_neither_an_image_nor_an_unannotated_one(tmp_path: Path) -> None:
    src, _ = BUILDERS["gc10-det"](tmp_path)
    read = read_dataset(src, recipe="gc10-det", options={"unannotated_images": "background"})
    [unannotated] = [f for f in read.report.findings if f.code == "image_unannotated"]
    assert unannotated.message.startswith("1 image(s)") and "img_05_424799500_00001.jpg" in unannotated.message
    assert sorted(r.name for r in read.dataset.images if r.is_background) == ["5/img_05_424799500_00001.jpg"]
    assert ignored_files(read.report) == ["README.md", "defects examples.png"]


def test_magnetic_tile_illustration_under_skip_adds_no_image(tmp_path: Path) -> None:
    src, _ = BUILDERS["magnetic-tile"](tmp_path)
    ds = read_dataset(src, recipe="magnetic-tile", on_error="skip").dataset
    assert sorted(r.name for r in ds.images) == ["MT_Blowhole/Imgs/exp1_num_4727.jpg", "MT_Crack/Imgs/exp3_num_171.jpg",
                                                 "MT_Free/Imgs/exp1_num_1002.jpg", "MT_Uneven/Imgs/exp6_num_53280.jpg"]
    assert ds.labels.names == ["blowhole", "break", "crack", "fray", "uneven"]


@pytest.mark.parametrize("which", ["rs19_val", "parent", "jsons", "jsons/rs19_val", "one JSON"])
@pytest.mark.parametrize("how", ["auto", "railsem19", "recipe"])
def test_railsem19_archive_nesting_is_read_from_every_entry_point(which: str, how: str, tmp_path: Path) -> None:
    src, expected = BUILDERS["railsem19"](tmp_path)
    path = {"rs19_val": src, "parent": src.parent, "jsons": src / "jsons", "jsons/rs19_val": src / "jsons" / "rs19_val",
            "one JSON": src / "jsons" / "rs19_val" / "rs00001.json"}[which]
    read = read_dataset(path, recipe="railsem19") if how == "recipe" else read_dataset(path, how)
    ds = read.dataset
    assert read.format == "railsem19" and ds.root == src
    frames = ["rs00001.jpg"] if which == "one JSON" else ["rs00000.jpg", "rs00001.jpg"]
    assert [r.name for r in ds.images] == frames
    assert all(r.path == src / "jpgs" / "rs19_val" / r.name for r in ds.images)
    assert ds.num_objects == (1 if which == "one JSON" else expected.boxes)
    assert ignored_files(read.report) == ([] if which == "one JSON" else ["rs19-config.json"])


@pytest.mark.parametrize(("recipe", "above", "code", "fragments"), [
    ("deeppcb", "DeepPCB", "file_missing", ["trainval.txt", "list file for split 'train' not found",
                                            "found in the sub-folder PCBData: pass that folder"]),
    ("mvtec-ad", "mvtec_anomaly_detection", "folder_missing", ["'ground_truth' not found",
                                                               "found in the sub-folders bottle, cable: pass one of them"]),
    ("severstal", "", "file_missing", ["train.csv", "RLE CSV not found",
                                       "found in the sub-folder severstal-steel-defect-detection: pass that folder"]),
])
def test_the_folder_above_the_dataset_is_a_one_line_error_naming_the_right_one(
        recipe: str, above: str, code: str, fragments: list[str], tmp_path: Path) -> None:
    src, _ = BUILDERS[recipe](tmp_path)
    if recipe == "mvtec-ad":
        write_image(src.parent / "cable" / "ground_truth" / "bent_wire" / "000_mask.png", (8, 8))
    path = tmp_path / above if above else src.parent
    with pytest.raises(DatasetError) as exc:
        read_dataset(path, recipe=recipe)
    msg = str(exc.value)
    assert exc.value.code == code and "\n" not in msg and all(f in msg for f in fragments), msg


# -- the real NEU-DET download ------------------------------------------------------------------
@pytest.mark.slow
def test_real_neu_det_converts_to_yolo(tmp_path: Path) -> None:
    if not (NEU / "ANNOTATIONS").is_dir():
        pytest.skip(f"real NEU-DET data not present at {NEU}")
    out = tmp_path / "yolo"
    result = convert(NEU, out, recipe="neu-det", to="yolo", images="none")
    ds = result.read.dataset
    assert len(ds) == 1800 and ds.num_objects == 4189
    assert ds.labels.names == get_recipe("neu-det").classes
    assert {s: len(ds.split(s)) for s in ds.splits} == {"train": 1770, "val": 30}
    assert result.read.report.counts()["image_name_quirk"] == 174
    for r in ds.images:
        h, w = r.size_hw
        assert (h, w) == (200, 200)
        assert np.all(r.boxes[:, :2] >= 0) and np.all(r.boxes[:, 2] <= w) and np.all(r.boxes[:, 3] <= h), r.name
        assert np.all(r.boxes[:, 2:] > r.boxes[:, :2]), r.name
    label_files = sorted((out / "labels").rglob("*.txt"))
    assert len(label_files) == 1800
    rows = np.array([ln.split() for f in label_files for ln in f.read_text().splitlines()], dtype=np.float64)
    assert rows.shape == (4189, 5)
    assert set(np.unique(rows[:, 0]).astype(int)) == set(range(6))
    cx, cy, bw, bh = rows[:, 1:].T
    assert np.all(cx - bw / 2 >= -1e-9) and np.all(cx + bw / 2 <= 1 + 1e-9)
    assert np.all(cy - bh / 2 >= -1e-9) and np.all(cy + bh / 2 <= 1 + 1e-9)
    assert not any((NEU / p).exists() for p in ("labels", "data.yaml")), "the source must not be modified"
