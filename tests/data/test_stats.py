"""Dataset statistics: exact values on a hand-built dataset, COCO size boundaries, splits, JSON, plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import ConfigError
from edgevision.data.stats import (
    BOXES_PER_IMAGE_BINS,
    SCHEMA,
    ClassStats,
    ImageSize,
    dataset_stats,
    size_category,
    write_plots,
)


def rec(name: str, hw: tuple[int, int], boxes: list[list[float]], cls: list[int], split: str | None) -> ImageRecord:
    return ImageRecord(name, hw, np.array(boxes, dtype=np.float64).reshape(-1, 4), cls, split=split)


def hand_built() -> Dataset:
    """5 images (one background), 16 objects of a/b, class c empty; train / val / test.

    =====  ========  =====  ===============================================================
    image  size hw   split  objects
    =====  ========  =====  ===============================================================
    t0     100x200   train  a 10x10 (small), a 32x32 (medium: area == 32**2), b 96x96 (large)
    t1     100x200   train  b 31.9x32 (small: 1020.8), a 40x10 (small)
    v0     50x50     val    background
    v1     100x200   val    a 96x95.9 (medium: 9206.4 < 96**2)
    s0     50x50     test   10 x b 5x5 (small)
    =====  ========  =====  ===============================================================
    """
    return Dataset(LabelMap(["a", "b", "c"]), [
        rec("t0.png", (100, 200), [[0, 0, 10, 10], [0, 0, 32, 32], [0, 0, 96, 96]], [0, 0, 1], "train"),
        rec("t1.png", (100, 200), [[0, 0, 31.9, 32], [10, 10, 50, 20]], [1, 0], "train"),
        rec("v0.png", (50, 50), [], [], "val"),
        rec("v1.png", (100, 200), [[0, 0, 96, 95.9]], [0], "val"),
        rec("s0.png", (50, 50), [[i, i, i + 5, i + 5] for i in range(10)], [1] * 10, "test"),
    ])


def test_size_category_boundaries_follow_coco_area_limits() -> None:
    area = np.array([0, 1023.99, 32.0**2, 9215.99, 96.0**2, 1e9])
    assert size_category(area).tolist() == [0, 0, 1, 1, 2, 2]


def test_totals_and_per_class_overall() -> None:
    s = dataset_stats(hand_built())
    assert (s.images, s.objects, s.classes, s.class_names) == (5, 16, 3, ["a", "b", "c"])
    o = s.overall
    assert (o.images, o.objects, o.background_images, o.background_fraction) == (5, 16, 1, 0.2)
    assert o.per_class == [
        ClassStats(0, "a", objects=4, images=3, small=2, medium=2, large=0),
        ClassStats(1, "b", objects=12, images=3, small=11, medium=0, large=1),
        ClassStats(2, "c", objects=0, images=0, small=0, medium=0, large=0),
    ]
    assert o.box_sizes == {"small": 13, "medium": 2, "large": 1}


def test_boxes_per_image() -> None:
    o = dataset_stats(hand_built()).overall
    b = o.boxes_per_image
    assert (b.count, b.min, b.median, b.mean, b.max) == (5, 0.0, 2.0, 3.2, 10.0)
    assert list(o.boxes_per_image_hist) == list(BOXES_PER_IMAGE_BINS)
    assert o.boxes_per_image_hist == {"0": 1, "1": 1, "2": 1, "3": 1, "4": 0, "5-9": 0, "10+": 1}


def test_relative_sizes_aspect_and_image_sizes() -> None:
    o = dataset_stats(hand_built()).overall
    assert o.relative_area.min == pytest.approx(100 / 20000)
    assert o.relative_area.max == pytest.approx(9216 / 20000)
    assert o.relative_width.max == pytest.approx(0.48)       # 96 / 200
    assert o.relative_height.max == pytest.approx(0.96)      # 96 / 100
    assert o.relative_height.min == pytest.approx(0.1)       # 5 / 50 and 10 / 100
    assert o.box_aspect.max == pytest.approx(4.0)             # 40 x 10
    assert o.box_aspect.min == pytest.approx(31.9 / 32)
    assert (o.box_width.count, o.box_width.max, o.box_height.min) == (16, 96.0, 5.0)
    assert o.image_sizes == [ImageSize(100, 200, 3), ImageSize(50, 50, 2)]
    assert (o.image_min_hw, o.image_max_hw) == ((50, 50), (100, 200))
    assert o.image_aspect.median == 2.0


def test_per_split_sections() -> None:
    s = dataset_stats(hand_built())
    assert list(s.splits) == ["train", "val", "test"]
    tr, va, te = s.splits["train"], s.splits["val"], s.splits["test"]
    assert (tr.images, tr.objects, tr.background_images) == (2, 5, 0)
    assert [(c.objects, c.images, c.small, c.medium, c.large) for c in tr.per_class] == [
        (3, 2, 2, 1, 0), (2, 2, 1, 0, 1), (0, 0, 0, 0, 0)]
    assert (va.images, va.objects, va.background_images, va.background_fraction) == (2, 1, 1, 0.5)
    assert va.per_class[0].medium == 1 and va.image_sizes == [ImageSize(100, 200, 1), ImageSize(50, 50, 1)]
    assert (te.objects, te.per_class[1].images, te.boxes_per_image_hist["10+"]) == (10, 1, 1)
    # sections add up to the whole
    for field in ("images", "objects", "background_images"):
        assert sum(getattr(x, field) for x in s.splits.values()) == getattr(s.overall, field)


def test_unsplit_and_partly_split_datasets() -> None:
    ds = hand_built()
    for r in ds.images:
        r.split = None
    assert dataset_stats(ds).splits == {}
    ds.images[0].split = "train"
    s = dataset_stats(ds)
    assert list(s.splits) == ["train", "(none)"]
    assert (s.splits["train"].images, s.splits["(none)"].images) == (1, 4)


def test_empty_dataset_and_background_only() -> None:
    s = dataset_stats(Dataset(LabelMap(["a"]), []))
    assert (s.images, s.objects, s.overall.background_fraction) == (0, 0, 0.0)
    assert s.overall.boxes_per_image.median is None and s.overall.image_min_hw is None
    json.dumps(s.to_dict())
    s = dataset_stats(Dataset(LabelMap([]), [rec("x.png", (10, 20), [], [], None)]))
    assert (s.overall.background_images, s.overall.background_fraction, s.overall.relative_area.count) == (1, 1.0, 0)


def test_json_dict_is_versioned_and_plain() -> None:
    d = dataset_stats(hand_built()).to_dict()
    assert next(iter(d)) == "schema" and d["schema"] == SCHEMA == "edgevision.stats/1"
    assert set(d) == {"schema", "images", "objects", "classes", "class_names", "overall", "splits"}
    again = json.loads(json.dumps(d))  # plain JSON types only
    assert again["overall"]["per_class"][1] == {"id": 1, "name": "b", "objects": 12, "images": 3,
                                                 "small": 11, "medium": 0, "large": 1}
    assert again["splits"]["val"]["background_fraction"] == 0.5
    assert again["overall"]["image_sizes"][0] == {"height": 100, "width": 200, "count": 3}
    assert set(again["overall"]["boxes_per_image"]) == {"count", "min", "p05", "p25", "median", "p75", "p95",
                                                        "max", "mean"}


def test_input_is_not_modified() -> None:
    ds = hand_built()
    before = [(r.boxes.copy(), r.class_ids.copy()) for r in ds.images]
    dataset_stats(ds)
    for (b, c), r in zip(before, ds.images):
        assert np.array_equal(b, r.boxes) and np.array_equal(c, r.class_ids)


def test_large_dataset_counts() -> None:
    """20k images / 200k boxes: totals add up (speed is measured in benchmarks, never asserted)."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (20_000, 10, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 100, (20_000, 10, 2))], axis=2)
    cls = rng.integers(0, 8, (20_000, 10))
    ds = Dataset(LabelMap([f"c{i}" for i in range(8)]), [
        ImageRecord(f"{i}.png", (640, 640), boxes[i], cls[i], split=("train", "val", "test")[i % 3])
        for i in range(20_000)])
    s = dataset_stats(ds)
    assert s.objects == 200_000 and sum(c.objects for c in s.overall.per_class) == 200_000
    assert sum(st.objects for st in s.splits.values()) == 200_000 and s.splits["val"].images == 6_667


# -- plots ----------------------------------------------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_are_valid_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import cv2

    ds = hand_built()
    paths = write_plots(ds, dataset_stats(ds), tmp_path / "plots")
    assert [p.name for p in paths] == ["class_histogram.png", "box_sizes.png"]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC
        img = cv2.imread(str(p))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 400
        assert img.std() > 10  # something is drawn


def test_plots_without_boxes_still_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ds = Dataset(LabelMap(["a"]), [rec("x.png", (10, 20), [], [], None)])
    for p in write_plots(ds, dataset_stats(ds), tmp_path):
        assert p.read_bytes()[:8] == PNG_MAGIC


def test_plots_without_matplotlib_say_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    ds = hand_built()
    with pytest.raises(ConfigError, match=r"pip install 'edgevision\[plots\]'"):
        write_plots(ds, dataset_stats(ds), tmp_path / "plots")
    assert not (tmp_path / "plots").exists()
