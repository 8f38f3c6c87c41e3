"""The paired bootstrap: `MatchTable.score` replays pycocotools exactly, on all images and on multisets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevision.convert import read_dataset
from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError
from edgevision.evaluate import coco_evaluate, read_predictions
from edgevision.evaluate.bootstrap import BootstrapResult, MatchTable, match_table, paired_bootstrap
from tests.evaluate.test_coco import write_fixture

pytest.importorskip("pycocotools")


def noisy_predictions(gt: list[ImageRecord], n_classes: int, seed: int, *, miss: float = 0.15, fp: float = 2.0,
                      quant: int | None = None, skip: float = 0.0) -> list[ImageRecord]:
    """Jittered copies of the gt boxes (some missed, some with the wrong class), plus random false positives.

    ``quant`` rounds the scores to ``1/quant`` steps (ties within and across images); ``skip`` drops
    whole prediction records (images without predictions).
    """
    rng = np.random.default_rng(seed)
    out = []
    for r in gt:
        if rng.random() < skip:
            continue
        boxes, cls, scores = [], [], []
        for box, c in zip(r.boxes, r.class_ids):
            if rng.random() < miss:
                continue
            w, h = box[2] - box[0], box[3] - box[1]
            boxes.append(box + rng.normal(0, 0.1, 4) * [w, h, w, h])
            cls.append(int(c) if rng.random() > 0.05 else int(rng.integers(n_classes)))
            scores.append(rng.uniform(0.2, 1.0))
        hh, ww = r.size_hw
        for _ in range(rng.poisson(fp)):
            x, y = rng.uniform(0, ww - 8), rng.uniform(0, hh - 8)
            boxes.append([x, y, x + rng.uniform(4, ww / 3), y + rng.uniform(4, hh / 3)])
            cls.append(int(rng.integers(n_classes)))
            scores.append(rng.uniform(0.0, 0.9))
        sc = np.array(scores)
        if quant:
            sc = np.round(sc * quant) / quant
        out.append(ImageRecord(r.name, r.size_hw, np.array(boxes).reshape(-1, 4), cls, scores=sc))
    return out


@pytest.fixture(scope="module")
def sample() -> tuple[list[ImageRecord], LabelMap]:
    """The built-in sample's labels (40 images 64 px, some defect-free), a difficult and a crowd object added."""
    from edgevision.data.synth import generate

    ds, _ = generate(n=40, seed=3, imgsz=64)
    gt = list(ds.images)
    assert any(r.is_background for r in gt)
    with_objects = [i for i, r in enumerate(gt) if len(r) >= 2]
    for i, flag in zip(with_objects[:4], ("difficult", "iscrowd", "difficult", "iscrowd")):
        r = gt[i]
        attrs = [{} for _ in range(len(r))]
        attrs[0] = {flag: True}
        gt[i] = ImageRecord(r.name, r.size_hw, r.boxes, r.class_ids, attributes=attrs)
    return gt, ds.labels


def duplicated(gt: list[ImageRecord], preds: list[ImageRecord], idx: np.ndarray,
               order: np.ndarray | None = None) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """The images ``idx`` really duplicated: renamed copies, in pycocotools' image order (``order``: gt
    positions in that order; default gt order), without COCO ids so the copies get ids 1..M in list order."""
    rank = np.empty(len(gt), dtype=np.int64)
    rank[order if order is not None else np.arange(len(gt))] = np.arange(len(gt))
    by_name = {p.name: p for p in preds}
    g2, p2 = [], []
    for c, i in enumerate(sorted(idx.tolist(), key=lambda i: rank[i])):
        r = gt[i]
        name = f"copy{c:04d}_{r.name}"
        g2.append(ImageRecord(name, r.size_hw, r.boxes, r.class_ids, attributes=r.attributes))
        if r.name in by_name:
            p = by_name[r.name]
            p2.append(ImageRecord(name, p.size_hw, p.boxes, p.class_ids, scores=p.scores))
    return g2, p2


def assert_same(table: MatchTable, idx: np.ndarray, gt: list[ImageRecord], preds: list[ImageRecord],
                labels: LabelMap, **kw: object) -> None:
    got = table.score(idx)
    ref = coco_evaluate(gt, preds, labels, **kw)  # type: ignore[arg-type]
    assert got == {"map50_95": ref.map50_95, "map50": ref.map50}


@pytest.mark.parametrize("max_dets", [100, 3, 1])
@pytest.mark.parametrize("quant", [None, 4])
@pytest.mark.parametrize("difficult", ["ignore", "count", "drop"])
def test_all_images_equal_coco_evaluate(sample: tuple[list[ImageRecord], LabelMap], max_dets: int,
                                        quant: int | None, difficult: str) -> None:
    gt, labels = sample
    preds = noisy_predictions(gt, len(labels), seed=1, quant=quant, skip=0.1)
    assert len(preds) < len(gt)  # some images have no prediction record
    table = match_table(gt, preds, labels, max_dets=max_dets, difficult=difficult)
    assert table.n_images == len(gt) and table.classes == tuple(labels.names)
    ref = coco_evaluate(gt, preds, labels, max_dets=max_dets, difficult=difficult)
    assert ref.map50_95 is not None and 0.1 < ref.map50_95 < 0.9  # a real, non-trivial case
    assert table.score(np.arange(len(gt))) == {"map50_95": ref.map50_95, "map50": ref.map50}
    # the per-class precision is pycocotools' too: per-class APs from it equal coco_evaluate's
    prec = table.precision(np.arange(len(gt)))
    for k, name in enumerate(labels.names):
        p = prec[:, :, k]
        assert ref.per_class[name]["ap50_95"] == (float(np.mean(p[p > -1])) if (p > -1).any() else None)


def test_coco_fixture_crowd_background_and_absent_class(tmp_path: Path) -> None:
    """test_coco's fixture (COCO ids, a crowd object, a background image, a class with no gt)."""
    gt_json, res_json = write_fixture(tmp_path)
    ds = read_dataset(gt_json, "coco").dataset
    preds = read_predictions(res_json, ds.images, ds.labels)
    for max_dets in (100, 2):
        table = match_table(ds.images, preds, ds.labels, max_dets=max_dets)
        assert_same(table, np.arange(len(ds.images)), ds.images, preds, ds.labels, max_dets=max_dets)
        assert (table.precision(np.arange(4))[:, :, 2] == -1).all()  # "scratch": no gt, left out


def test_coco_ids_out_of_gt_order_and_ties_across_images() -> None:
    """pycocotools orders images by COCO id (not gt order); that order breaks score ties across images."""
    labels = LabelMap(["a", "b"])
    rng = np.random.default_rng(5)
    gt, preds = [], []
    for i in range(12):
        boxes = [[10, 10, 40, 40], [50, 50, 90, 80]]
        gt.append(ImageRecord(f"im{i}.png", (100, 100), boxes, [i % 2, 1], meta={"coco_id": 1000 - 7 * i}))
        good = [[11, 10, 40, 41], [52, 50, 90, 79]]
        bad = [[60, 0, 99, 20]]
        pick = rng.permutation(3)
        preds.append(ImageRecord(f"im{i}.png", (100, 100), np.array(good + bad)[pick], np.array([i % 2, 1, 0])[pick],
                                 scores=np.array([0.5, 0.5, 0.5])[pick]))  # every score tied
    table = match_table(gt, preds, labels)
    assert_same(table, np.arange(12), gt, preds, labels)
    assert list(table.position) == list(range(11, -1, -1))
    # a multiset in gt positions, materialized in COCO id order
    order = np.argsort([r.meta["coco_id"] for r in gt])
    for seed in range(5):
        idx = np.random.default_rng(seed).integers(0, 12, 12)
        g2, p2 = duplicated(gt, preds, idx, order)
        assert_same(table, idx, g2, p2, labels)


@pytest.mark.parametrize("quant", [None, 3])
@pytest.mark.parametrize("max_dets", [100, 2])
def test_resample_with_duplicates_equals_real_copies(sample: tuple[list[ImageRecord], LabelMap],
                                                     quant: int | None, max_dets: int) -> None:
    """An image drawn k times scores as k renamed copies of it (ties within an image repeat as a block)."""
    gt, labels = sample
    preds = noisy_predictions(gt, len(labels), seed=2, quant=quant, fp=4, skip=0.1)
    table = match_table(gt, preds, labels, max_dets=max_dets)
    assert table._plan is not None and table._plan.simple == (quant is None)  # ties within an image or not
    rng = np.random.default_rng(11)
    for _ in range(6):
        idx = rng.integers(0, len(gt), len(gt))
        assert len(np.unique(idx)) < len(idx)
        g2, p2 = duplicated(gt, preds, idx)
        assert_same(table, idx, g2, p2, labels, max_dets=max_dets)
    idx = np.array([5, 5, 5, 0, 17, 17])  # order of idx does not matter
    g2, p2 = duplicated(gt, preds, idx)
    assert_same(table, idx, g2, p2, labels, max_dets=max_dets)
    assert table.score(idx[::-1]) == table.score(idx)


def test_undefined_and_bad_indices(sample: tuple[list[ImageRecord], LabelMap]) -> None:
    gt, labels = sample
    table = match_table(gt, noisy_predictions(gt, len(labels), seed=3), labels)
    background = np.array([i for i, r in enumerate(gt) if r.is_background])
    assert table.score(background) == {"map50_95": None, "map50": None}
    assert table.score(np.zeros(0, dtype=int)) == {"map50_95": None, "map50": None}
    with pytest.raises(ValueError, match="image indices"):
        table.score([len(gt)])
    empty = match_table(gt, [], labels)
    assert empty.score(np.arange(len(gt))) == {"map50_95": 0.0, "map50": 0.0}


def make_set(n: int, seed: int) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord], LabelMap]:
    """``n`` synthetic images (1-3 objects of 3 classes, some background), predictions ``a`` and ``b``:
    ``b`` is ``a`` with the scores of 30 % of its true positives crushed below every false positive."""
    labels = LabelMap(["crack", "pit", "scratch"])
    rng = np.random.default_rng(seed)
    gt, pa, pb = [], [], []
    for i in range(n):
        k = 0 if rng.random() < 0.1 else int(rng.integers(1, 4))
        xy = rng.uniform(0, 200, (k, 2))
        wh = rng.uniform(15, 50, (k, 2))
        boxes = np.hstack([xy, xy + wh])
        cls = rng.integers(0, 3, k)
        gt.append(ImageRecord(f"img{i:04d}.png", (256, 256), boxes, cls))
        keep = rng.random(k) > 0.1
        det = boxes[keep] + rng.normal(0, 1.5, (int(keep.sum()), 4))
        dcls, sc = cls[keep], rng.uniform(0.4, 1.0, int(keep.sum()))
        crushed = sc.copy()
        crushed[rng.random(len(sc)) < 0.3] = 0.01
        n_fp = int(rng.poisson(1.0))
        fxy = rng.uniform(0, 200, (n_fp, 2))
        fboxes = np.hstack([fxy, fxy + rng.uniform(10, 40, (n_fp, 2))])
        fcls, fsc = rng.integers(0, 3, n_fp), rng.uniform(0.05, 0.7, n_fp)
        for out, s in ((pa, sc), (pb, crushed)):
            out.append(ImageRecord(gt[-1].name, (256, 256), np.vstack([det, fboxes]), np.concatenate([dcls, fcls]),
                                   scores=np.concatenate([s, fsc])))
    return gt, pa, pb, labels


def test_identical_predictions_give_zero_drop() -> None:
    gt, pa, _, labels = make_set(60, seed=0)
    a, b = match_table(gt, pa, labels), match_table(gt, list(pa), labels)
    res = paired_bootstrap(a, b, n_boot=200, seed=1)
    assert isinstance(res, BootstrapResult)
    assert (res.drop, res.rel_drop, res.drop_ci, res.rel_drop_ci) == (0.0, 0.0, (0.0, 0.0), (0.0, 0.0))
    assert not res.excludes_zero() and res.frac_no_drop == 1.0
    assert (res.n_boot, res.n_used, res.n_skipped, res.n_images) == (200, 200, 0, 60)


@pytest.mark.parametrize("metric", ["map50_95", "map50"])
def test_crushed_true_positives_give_a_drop_that_excludes_zero(metric: str) -> None:
    gt, pa, pb, labels = make_set(80, seed=1)
    a, b = match_table(gt, pa, labels), match_table(gt, pb, labels)
    res = paired_bootstrap(a, b, metric=metric, n_boot=500, seed=0)
    ref_a, ref_b = coco_evaluate(gt, pa, labels), coco_evaluate(gt, pb, labels)
    assert (res.a, res.b) == (getattr(ref_a, metric), getattr(ref_b, metric))
    assert res.drop == res.a - res.b and res.rel_drop == pytest.approx(res.drop / res.a)
    assert res.drop_ci is not None and res.rel_drop_ci is not None
    assert 0 < res.drop_ci[0] < res.drop < res.drop_ci[1]
    assert 0 < res.rel_drop_ci[0] < res.rel_drop < res.rel_drop_ci[1]
    assert res.excludes_zero() and res.frac_no_drop == 0.0
    # b as the reference: the drop is negative, and its interval excludes zero too
    rev = paired_bootstrap(b, a, metric=metric, n_boot=500, seed=0)
    assert rev.drop_ci is not None and rev.drop_ci[1] < 0 and rev.excludes_zero()
    assert rev.drop_ci == pytest.approx((-res.drop_ci[1], -res.drop_ci[0]), abs=1e-12)  # the same draws
    d = res.to_dict()
    assert json.loads(json.dumps(d)) == d and d["excludes_zero"] is True and d["drop_ci"] == list(res.drop_ci)


@pytest.mark.slow
def test_same_seed_same_interval_and_narrower_with_more_images() -> None:
    gt, pa, pb, labels = make_set(320, seed=2)
    widths = {}
    for n in (40, 320):
        a, b = match_table(gt[:n], pa[:n], labels), match_table(gt[:n], pb[:n], labels)
        r1 = paired_bootstrap(a, b, n_boot=300, seed=7)
        r2 = paired_bootstrap(a, b, n_boot=300, seed=7)
        assert r1 == r2
        assert r1.drop_ci is not None
        widths[n] = r1.drop_ci[1] - r1.drop_ci[0]
        if n == 40:
            assert paired_bootstrap(a, b, n_boot=300, seed=8).drop_ci != r1.drop_ci
    assert widths[320] < 0.6 * widths[40]


def test_skipped_replicates_are_counted() -> None:
    """2 images, one with objects: a replicate that draws the background image twice has no mAP."""
    labels = LabelMap(["a"])
    gt = [ImageRecord("x.png", (50, 50), [[5, 5, 20, 20]], [0]), ImageRecord("bg.png", (50, 50))]
    preds = [ImageRecord("x.png", (50, 50), [[5, 5, 20, 20]], [0], scores=[0.9])]
    a = match_table(gt, preds, labels)
    res = paired_bootstrap(a, a, n_boot=100, seed=0)
    assert res.n_skipped > 0 and res.n_used + res.n_skipped == 100
    assert res.drop_ci == (0.0, 0.0)


def test_pairing_and_settings_are_checked() -> None:
    gt, pa, pb, labels = make_set(30, seed=3)
    a = match_table(gt, pa, labels)
    with pytest.raises(DatasetError, match="not on the same images"):
        paired_bootstrap(a, match_table(gt[:-1], pb[:-1], labels))
    i = next(i for i, r in enumerate(gt) if len(r))
    other_gt = [ImageRecord(r.name, r.size_hw) if j == i else r for j, r in enumerate(gt)]
    with pytest.raises(DatasetError, match="different ground truth"):
        paired_bootstrap(a, match_table(other_gt, pb, labels))
    with pytest.raises(ConfigError, match="max_dets"):
        paired_bootstrap(a, match_table(gt, pb, labels, max_dets=10))
    with pytest.raises(ConfigError, match="metric"):
        paired_bootstrap(a, a, metric="map75")
    with pytest.raises(ConfigError, match="level"):
        paired_bootstrap(a, a, level=95)
    with pytest.raises(ConfigError, match="n_boot"):
        paired_bootstrap(a, a, n_boot=0)
    bg = [ImageRecord(r.name, r.size_hw) for r in gt]
    t = match_table(bg, pa, labels)
    with pytest.raises(DatasetError, match="undefined"):
        paired_bootstrap(t, t)


def test_import_is_light() -> None:
    code = "import sys, edgevision.evaluate.bootstrap\nprint('pycocotools' in sys.modules)\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
