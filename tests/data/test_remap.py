"""Class remapping: rename, merge, drop, order, unmapped policies, errors; exact counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, UnknownNameError
from edgevision.data.remap import (
    DROPPED,
    UNMAPPED,
    ClassRow,
    MappingNameError,
    RemapConfig,
    class_lut,
    load_remap_config,
    remap_dataset,
)


def make() -> Dataset:
    """Classes scratch (id 3), Scratch (5), pit (8), junk (9); 4 images, 7 objects.

    i0: scratch, pit, junk      i1: Scratch, Scratch      i2: junk, junk      i3: background
    """
    def r(name: str, cls: list[int]) -> ImageRecord:
        boxes = [[i, i, i + 4, i + 3] for i in range(len(cls))]
        attrs = [{"tag": f"{name}:{i}"} for i in range(len(cls))] if cls else None
        return ImageRecord(name, (20, 30), np.array(boxes, dtype=float).reshape(-1, 4), cls, attributes=attrs,
                           split="train")

    return Dataset(
        LabelMap(["scratch", "Scratch", "pit", "junk"], source_ids=[3, 5, 8, 9],
                 extra=[{"sc": "s"}, {"sc": "S"}, {"sc": "p"}, {"sc": "j"}]),
        [r("i0.png", [0, 2, 3]), r("i1.png", [1, 1]), r("i2.png", [3, 3]), r("i3.png", [])],
        meta={"format": "coco"},
    )


def names_of(ds: Dataset) -> list[list[str]]:
    return [[ds.labels.names[c] for c in r.class_ids] for r in ds.images]


def test_class_lut() -> None:
    names, lut = class_lut(["x", None, "y", "x"])
    assert names == ["x", "y"] and lut.tolist() == [0, DROPPED, 1, 0]
    names, lut = class_lut(["x", None, "y"], ["y", "z"])
    assert names == ["y", "z"] and lut.tolist() == [UNMAPPED, DROPPED, 0]


def test_rename_keeps_source_ids_and_extras() -> None:
    res = remap_dataset(make(), RemapConfig(map={"pit": "pitting"}))
    ds = res.dataset
    assert ds.labels.names == ["scratch", "Scratch", "pitting", "junk"]
    assert ds.labels.source_ids == [3, 5, 8, 9] and ds.labels.extra[2] == {"sc": "p"}
    assert names_of(ds)[0] == ["scratch", "pitting", "junk"]
    assert res.new_counts == {"scratch": 1, "Scratch": 2, "pitting": 1, "junk": 3}
    assert res.dropped == {} and res.turned_background == [] and res.objects_dropped == 0
    assert ds.meta == {"format": "coco"}


def test_merge_drops_source_ids_and_counts() -> None:
    res = remap_dataset(make(), RemapConfig(map={"Scratch": "scratch"}))
    ds = res.dataset
    assert ds.labels.names == ["scratch", "pit", "junk"]
    assert ds.labels.source_ids is None and ds.labels.extra is None
    assert res.new_counts == {"scratch": 3, "pit": 1, "junk": 3}
    assert names_of(ds)[1] == ["scratch", "scratch"]
    assert res.rows[:2] == [ClassRow(0, "scratch", 0, "scratch", 1), ClassRow(1, "Scratch", 0, "scratch", 2)]


def test_merge_several_into_a_new_name_at_first_appearance() -> None:
    res = remap_dataset(make(), RemapConfig(map={"pit": "defect", "scratch": "defect", "Scratch": "defect"}))
    assert res.dataset.labels.names == ["defect", "junk"]
    assert res.new_counts == {"defect": 4, "junk": 3}
    assert [r.class_ids.tolist() for r in res.dataset.images] == [[0, 0, 1], [0, 0], [1, 1], []]


def test_drop_removes_objects_and_turns_images_into_background() -> None:
    src = make()
    res = remap_dataset(src, RemapConfig(map={"junk": None}))
    ds = res.dataset
    assert ds.labels.names == ["scratch", "Scratch", "pit"] and ds.labels.source_ids == [3, 5, 8]
    assert len(ds) == 4 and ds.num_objects == 4
    assert res.dropped == {"junk": 3} and res.objects_dropped == 3
    assert res.turned_background == ["i2.png"]  # i3 was background already
    assert ds.images[2].is_background and ds.images[2].split == "train"
    # per-object arrays stay aligned with the kept objects
    i0 = ds.images[0]
    assert i0.boxes.tolist() == [[0, 0, 4, 3], [1, 1, 5, 4]]
    assert [a["tag"] for a in i0.attributes] == ["i0.png:0", "i0.png:1"]
    assert res.rows[3] == ClassRow(3, "junk", None, None, 3)


def test_order_sets_output_ids() -> None:
    res = remap_dataset(make(), RemapConfig(map={"Scratch": "scratch", "junk": None}, order=["pit", "scratch"]))
    ds = res.dataset
    assert ds.labels.names == ["pit", "scratch"]
    assert [r.class_ids.tolist() for r in ds.images] == [[1, 0], [1, 1], [], []]
    assert [(r.old_name, r.new_id) for r in res.rows] == [("scratch", 1), ("Scratch", 1), ("pit", 0), ("junk", None)]


def test_unmapped_policies() -> None:
    mapping = {"scratch": "s", "Scratch": "s"}
    keep = remap_dataset(make(), RemapConfig(map=mapping))
    assert keep.dataset.labels.names == ["s", "pit", "junk"]
    drop = remap_dataset(make(), RemapConfig(map=mapping, unmapped="drop"))
    assert drop.dataset.labels.names == ["s"]
    assert drop.dropped == {"pit": 1, "junk": 3} and drop.turned_background == ["i2.png"]
    assert drop.dataset.num_objects == 3
    with pytest.raises(ConfigError, match=r"classes \['pit', 'junk'\] are not in 'map'"):
        remap_dataset(make(), RemapConfig(map=mapping, unmapped="error"))
    full = remap_dataset(make(), RemapConfig(map={**mapping, "pit": "pit", "junk": None}, unmapped="error"))
    assert full.dataset.labels.names == ["s", "pit"]


def test_input_is_not_modified() -> None:
    src = make()
    before = [(r.class_ids.copy(), len(r)) for r in src.images]
    remap_dataset(src, RemapConfig(map={"junk": None, "pit": "x"}))
    assert src.labels.names == ["scratch", "Scratch", "pit", "junk"]
    assert [(r.class_ids.tolist(), len(r)) for r in src.images] == [(c.tolist(), n) for c, n in before]


def test_unknown_class_in_map_suggests_the_closest() -> None:
    with pytest.raises(MappingNameError) as e:
        remap_dataset(make(), RemapConfig(map={"jnuk": None}))
    assert isinstance(e.value, ConfigError) and isinstance(e.value, UnknownNameError)
    msg = str(e.value)
    assert msg.startswith("mapping 'map': unknown class 'jnuk'") and "Did you mean 'junk'?" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(("order", "match"), [
    (["scratch", "pitt", "junk", "Scratch"], r"mapping 'order': unknown class 'pitt'.*Did you mean 'pit'\?"),
    (["scratch", "pit"], r"'order' must list every output class; missing \['Scratch', 'junk'\]"),
    (["scratch", "pit", "pit", "junk", "Scratch"], r"'order' lists \['pit'\] more than once"),
])
def test_bad_order(order: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        remap_dataset(make(), RemapConfig(order=order))


# -- the mapping file -----------------------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mapping.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_load_mapping_file(tmp_path: Path) -> None:
    cfg = load_remap_config(write(tmp_path, "map:\n  Scratch: scratch\n  junk: null\norder: [scratch, pit]\n"
                                            "unmapped: drop\n"))
    assert cfg == RemapConfig(map={"Scratch": "scratch", "junk": None}, order=["scratch", "pit"], unmapped="drop")
    assert load_remap_config(write(tmp_path, "map: {}\n")) == RemapConfig()


@pytest.mark.parametrize(("text", "match"), [
    ("mapp: {a: b}\n", r"mapping\.yaml: unknown mapping field 'mapp'; did you mean 'map'\?"),
    ("map: {a: b}\nzzz: 1\n", r"unknown mapping field 'zzz'; expected one of: map, order, unmapped"),
    ("unmapped: ignore\n", r"mapping field 'unmapped': Input should be 'keep', 'drop' or 'error'"),
    ("map: [a, b]\n", r"mapping field 'map': Input should be a valid dictionary"),
    ("map: {a: b\n", r"malformed YAML at line"),
    ("- a\n- b\n", r"expected a mapping of mapping fields, got list"),
])
def test_bad_mapping_file_is_one_line_config_error(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        load_remap_config(write(tmp_path, text))
    assert "\n" not in str(e.value)


def test_missing_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read mapping"):
        load_remap_config(tmp_path / "nope.yaml")
