"""split_dataset: determinism, stratification, group integrity, unreachable classes, ratio errors."""

from __future__ import annotations

import itertools
import random
import re

import numpy as np
import pytest

from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError
from edgevision.data.split import group_key, parse_ratios, split_dataset

CLASSES = ["crack", "pit", "scratch", "squat", "inclusion", "dent", "rare_a", "rare_b"]
WEIGHTS = np.array([40, 20, 10, 8, 6, 4, 0, 0], dtype=float)


def rec(name: str, classes: list[int], split: str | None = None) -> ImageRecord:
    n = len(classes)
    boxes = np.tile([1.0, 2.0, 6.0, 8.0], (n, 1)) + np.arange(n)[:, None]
    return ImageRecord(name, (16, 16), boxes=boxes, class_ids=classes, split=split)


def multilabel(n: int = 300, seed: int = 1, per_coil: int = 10) -> Dataset:
    """Frames ``coilNN_IIII.png`` with 0-3 objects from skewed classes; rare_a / rare_b in 3 coils each."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        k = int(rng.integers(0, 4))
        classes = [int(c) for c in rng.choice(len(CLASSES), size=k, p=WEIGHTS / WEIGHTS.sum())]
        recs.append(rec(f"coil{i // per_coil:02d}_{i:04d}.png", classes, split="train"))
    for c, frames in ((6, (5, 61, 127)), (7, (33, 99, 251, 252))):  # frames of 3 different coils each
        for i in (f for f in frames if f < n):
            recs[i] = rec(recs[i].name, [*recs[i].class_ids.tolist(), c], split="train")
    return Dataset(LabelMap(list(CLASSES)), recs)


def assignment(ds: Dataset) -> dict[str, str | None]:
    return {r.name: r.split for r in ds.images}


def class_images(ds: Dataset, split: str) -> np.ndarray:
    out = np.zeros(len(ds.labels), dtype=int)
    for r in ds.split(split):
        out[np.unique(r.class_ids)] += 1
    return out


def proportion_error(ds: Dataset, names: list[str], ratios: list[float], min_images: int = 20) -> float:
    """Mean |share of a class's images in a split - ratio| over splits and classes with >= min_images."""
    per_split = np.stack([class_images(ds, s) for s in names])  # (S, K)
    total = per_split.sum(0)
    keep = total >= min_images
    return float(np.abs(per_split[:, keep] / total[keep] - np.array(ratios)[:, None]).mean())


def random_split(ds: Dataset, ratios: list[float], seed: int, pattern: str | None = None) -> Dataset:
    """Baseline: shuffle the groups, cut the shuffled list by the ratios (a plain random split)."""
    regex = re.compile(pattern) if pattern else None
    key_of = {r.name: group_key(r.name, regex) or r.name for r in ds.images}
    keys = sorted(set(key_of.values()))
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    cuts = np.cumsum(np.array(ratios) * len(keys)).round().astype(int)
    split_of = {k: ("train", "val", "test")[int(np.searchsorted(cuts, pos, side="right"))] for pos, k in enumerate(order)}
    images = [ImageRecord(r.name, r.size_hw, boxes=r.boxes, class_ids=r.class_ids, split=split_of[key_of[r.name]])
              for r in ds.images]
    return Dataset(ds.labels, images)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_assignment_whatever_the_input_order():
    ds = multilabel()
    first = assignment(split_dataset(ds, seed=7).dataset)
    assert first == assignment(split_dataset(ds, seed=7).dataset)
    shuffled = list(ds.images)
    random.Random(0).shuffle(shuffled)
    again = split_dataset(Dataset(ds.labels, shuffled), seed=7)
    assert assignment(again.dataset) == first
    assert [r.name for r in again.dataset.images] == [r.name for r in shuffled]  # input order kept


def test_other_seed_other_assignment():
    ds = multilabel()
    a = assignment(split_dataset(ds, seed=0).dataset)
    b = assignment(split_dataset(ds, seed=1).dataset)
    assert a != b
    assert sum(a[k] != b[k] for k in a) >= 20  # not a single tie-break: a different draw


def test_grouped_determinism_under_shuffle():
    ds = multilabel()
    shuffled = list(reversed(ds.images))
    pattern = r"^(coil\d+)_"
    assert assignment(split_dataset(ds, seed=3, group=pattern).dataset) == assignment(
        split_dataset(Dataset(ds.labels, shuffled), seed=3, group=pattern).dataset)


# --------------------------------------------------------------------------- stratification


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_class_with_three_images_reaches_every_split(seed):
    ds = multilabel()
    res = split_dataset(ds, seed=seed)
    totals = sum(class_images(res.dataset, s) for s in ("train", "val", "test"))
    assert totals[6] == 3 and totals[7] == 4  # the rare classes really are rare
    for s in ("train", "val", "test"):
        got = class_images(res.dataset, s)
        assert (got[totals >= 3] > 0).all(), (s, got)
    assert res.report.unreachable == []
    assert res.report.class_images["val"]["rare_a"] == 1 and res.report.class_images["test"]["rare_a"] == 1
    assert res.report.images == {"train": 240, "val": 30, "test": 30}  # single images: exact sizes


def test_proportions_at_least_as_close_as_a_random_split():
    ds = multilabel()
    names, ratios = ["train", "val", "test"], [0.8, 0.1, 0.1]
    strat = np.mean([proportion_error(split_dataset(ds, ratios, seed=s).dataset, names, ratios) for s in range(5)])
    rand = np.mean([proportion_error(random_split(ds, ratios, s), names, ratios) for s in range(5)])
    assert strat <= rand, (strat, rand)
    assert strat < 0.5 * rand  # iterative stratification is much closer on frequent classes


def test_grouped_proportions_at_least_as_close_as_a_random_group_split():
    ds = multilabel()
    names, ratios, pattern = ["train", "val", "test"], [0.8, 0.1, 0.1], r"^(coil\d+)_"
    strat = np.mean([proportion_error(split_dataset(ds, ratios, seed=s, group=pattern).dataset, names, ratios)
                     for s in range(5)])
    rand = np.mean([proportion_error(random_split(ds, ratios, s, pattern), names, ratios) for s in range(5)])
    assert strat <= rand, (strat, rand)


def test_background_images_are_spread_by_ratio():
    recs = [rec(f"bg_{i:03d}.png", []) for i in range(100)]
    recs += [rec(f"obj_{i:03d}.png", [i % 2]) for i in range(100)]
    res = split_dataset(Dataset(LabelMap(["a", "b"]), recs), (0.6, 0.2, 0.2), seed=0)
    assert res.report.background == {"train": 60, "val": 20, "test": 20}
    assert res.report.images == {"train": 120, "val": 40, "test": 40}
    assert res.report.class_images["val"] == {"a": 10, "b": 10}


def test_two_ratios_make_train_and_val_only():
    res = split_dataset(multilabel(), (0.75, 0.25), seed=0)
    assert res.dataset.splits == ["train", "val"]
    assert res.report.names == ["train", "val"] and res.report.images == {"train": 225, "val": 75}
    assert res.report.target_images == {"train": 225.0, "val": 75.0}


# --------------------------------------------------------------------------- groups


def test_group_integrity_and_rare_classes_across_coils():
    ds = multilabel()
    res = split_dataset(ds, seed=0, group=r"^(coil\d+)_")
    splits_of_coil: dict[str, set[str]] = {}
    for r in res.dataset.images:
        splits_of_coil.setdefault(r.name[:6], set()).add(r.split)  # type: ignore[arg-type]
    assert len(splits_of_coil) == 30 and all(len(s) == 1 for s in splits_of_coil.values())
    g = res.report.groups
    assert (g.groups, g.unmatched, g.grouped_images, g.size_min, g.size_max) == (30, 0, 300, 10, 10)
    assert sorted(res.report.images.values()) == [30, 30, 240]  # whole coils of 10 hit the targets here
    for s in ("train", "val", "test"):  # rare_a and rare_b are each in 3+ coils: they reach every split
        assert res.report.class_images[s]["rare_a"] > 0 and res.report.class_images[s]["rare_b"] > 0


def test_whole_match_key_and_unmatched_images_are_their_own_groups():
    recs = [rec(f"board{b}-shot{i}.png", [i % 2]) for b in range(6) for i in range(3)]
    recs += [rec(f"loose_{i}.png", [0]) for i in range(4)]
    res = split_dataset(Dataset(LabelMap(["a", "b"]), recs), seed=0, group=r"board\d+")
    g = res.report.groups
    assert (g.groups, g.unmatched, g.grouped_images, g.size_max) == (10, 4, 18, 3)
    by_board: dict[str, set[str]] = {}
    for r in res.dataset.images:
        if r.name.startswith("board"):
            by_board.setdefault(r.name.split("-")[0], set()).add(r.split)  # type: ignore[arg-type]
    assert all(len(s) == 1 for s in by_board.values())
    assert all(size == 3 for _, size, _ in g.largest)


def test_group_key_rules():
    assert group_key("coil12_0003.png", re.compile(r"^(coil\d+)_")) == "coil12"
    assert group_key("a/coil12_0003.png", re.compile(r"coil\d+")) == "coil12"
    assert group_key("frame.png", re.compile(r"^(coil\d+)_")) is None
    assert group_key("frame.png", re.compile(r"x*")) is None  # an empty key is no key
    assert group_key("anything", None) is None


def test_bad_group_regex_is_a_config_error():
    with pytest.raises(ConfigError, match=r"--group: '\(coil' is not a valid regular expression"):
        split_dataset(multilabel(20), group="(coil")


# --------------------------------------------------------------------------- unreachable


def test_class_in_two_images_is_reported_for_the_split_it_misses():
    recs = [rec(f"img_{i:02d}.png", [0]) for i in range(30)] + [rec("r1.png", [1]), rec("r2.png", [1])]
    res = split_dataset(Dataset(LabelMap(["common", "rare"]), recs), seed=0)
    missing = [u for u in res.report.unreachable if u.class_name == "rare"]
    assert len(missing) == 1 and missing[0].reason == "too_few_images"
    assert res.report.class_images[missing[0].split]["rare"] == 0
    assert "'rare' is in 2 image(s); 3 splits need at least 3" in missing[0].message
    assert sum(res.report.class_images[s]["rare"] > 0 for s in ("train", "val", "test")) == 2  # 2 splits reached


def test_class_in_too_few_groups_is_reported():
    recs = [rec(f"coil{c}_{i}.png", [0]) for c in range(10) for i in range(3)]
    recs += [rec("coilA_0.png", [1]), rec("coilA_1.png", [1]), rec("coilB_0.png", [1])]
    res = split_dataset(Dataset(LabelMap(["common", "rare"]), recs), seed=0, group=r"^(coil\w)_")
    missing = [u for u in res.report.unreachable if u.class_name == "rare"]
    assert [u.reason for u in missing] == ["too_few_groups"]
    assert "only 2 group(s)" in missing[0].message


def test_impossible_co_occurrence_is_reported():
    """Each 3 of 4 images form a class: no 3-way split covers them all (pigeonhole)."""
    combos = list(itertools.combinations(range(4), 3))
    recs = [rec(f"i{i}.png", [c for c, s in enumerate(combos) if i in s]) for i in range(4)]
    recs += [rec(f"bg{i:02d}.png", []) for i in range(20)]
    res = split_dataset(Dataset(LabelMap(list("WXYZ")), recs), seed=0)
    assert res.report.unreachable and {u.reason for u in res.report.unreachable} == {"co_occurrence"}
    assert len(res.report.unreachable) == 2  # the fewest possible: two classes each miss one split


def test_absent_class_is_listed_not_reported_per_split():
    res = split_dataset(Dataset(LabelMap(["a", "never"]), [rec(f"{i}.png", [0]) for i in range(10)]), seed=0)
    assert res.report.absent_classes == ["never"] and res.report.unreachable == []


# --------------------------------------------------------------------------- the result


def test_records_copied_with_only_the_split_changed_and_old_splits_reported():
    ds = multilabel(50)
    ds.images[0].meta["source_id"] = 7
    before = [(r.name, r.split, r.boxes.copy(), r.class_ids.copy()) for r in ds.images]
    res = split_dataset(ds, seed=0)
    for (name, split, boxes, cls), old, new in zip(before, ds.images, res.dataset.images, strict=True):
        assert old.split == split == "train"  # the input is untouched
        assert new is not old and new.name == name and new.split in ("train", "val", "test")
        np.testing.assert_array_equal(new.boxes, boxes)
        np.testing.assert_array_equal(new.class_ids, cls)
    assert res.dataset.images[0].meta == {"source_id": 7} and res.dataset.images[0].meta is not ds.images[0].meta
    assert res.dataset.labels.names == CLASSES
    assert res.report.replaced == {"train": 50}
    assert split_dataset(Dataset(ds.labels, [rec("x.png", [0]), rec("y.png", [0])]), (0.5, 0.5)).report.replaced == {}


def test_report_counts_and_json_ready():
    import json

    res = split_dataset(multilabel(100), seed=0)
    rep = res.report
    assert sum(rep.images.values()) == 100
    assert sum(rep.objects.values()) == res.dataset.num_objects
    for s in rep.names:
        assert rep.objects[s] == sum(len(r) for r in res.dataset.split(s))
        assert rep.class_objects[s]["crack"] == sum(int((r.class_ids == 0).sum()) for r in res.dataset.split(s))
    doc = json.loads(json.dumps(rep.to_dict()))
    assert doc["seed"] == 0 and doc["groups"]["groups"] == 100 and doc["ratios"] == [0.8, 0.1, 0.1]


def test_empty_dataset_is_an_error():
    with pytest.raises(DatasetError, match="no images"):
        split_dataset(Dataset(LabelMap(["a"]), []))


# --------------------------------------------------------------------------- ratios


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.8,0.1,0.05,0.05", "--ratios: expected 2 (train,val) or 3 (train,val,test) values, got 4: 0.8,0.1,0.05,0.05"),
        ("1", "expected 2 (train,val) or 3 (train,val,test) values, got 1: 1"),
        ("0.8,0.1,0.2", "--ratios: expected ratios summing to 1 (within 1e-06), got 0.8,0.1,0.2 = 1.1"),
        ("0.9,0.1,0", "--ratios: expected every ratio > 0, got 0 for test; give two values"),
        ("1.2,-0.2", "expected every ratio > 0, got -0.2 for val"),
        ("0.8,abc,0.1", "--ratios: expected comma-separated numbers such as 0.8,0.1,0.1, got '0.8,abc,0.1'"),
        ("nan,0.5,0.5", "expected every ratio > 0, got nan for train"),
    ],
)
def test_bad_ratios(text, message):
    with pytest.raises(ConfigError) as e:
        parse_ratios(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_good_ratios_and_library_checks():
    assert parse_ratios("0.8, 0.1, 0.1") == (0.8, 0.1, 0.1)
    assert parse_ratios("0.7,0.3") == (0.7, 0.3)
    assert parse_ratios("0.3333333,0.3333333,0.3333334") == (0.3333333, 0.3333333, 0.3333334)
    with pytest.raises(ConfigError, match="^ratios: expected ratios summing to 1"):
        split_dataset(multilabel(20), (0.5, 0.4))
    with pytest.raises(ConfigError, match="split names: expected 3 distinct names"):
        split_dataset(multilabel(20), names=("a", "a", "b"))
    res = split_dataset(multilabel(20), (0.5, 0.5), names=("fold1", "fold2"))
    assert res.dataset.splits == ["fold1", "fold2"]
