"""The built-in synthetic sample dataset: determinism, labels, exact boxes, splits, PNG output."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.core import ConfigError, Dataset, EdgeVisionError, UnknownNameError
from edgevision.core.boxes import box_problems
from edgevision.data.synth import CLASS_NAMES, KINDS, SynthConfig, generate, iter_samples, render_sample, synth

# enough images that every class occurs, small enough to render in well under a second
SMALL = 96


@pytest.fixture(scope="module")
def run300() -> tuple[Dataset, list[np.ndarray]]:
    """n=300, seed=0 (the documented sample) at a small size: labels and splits for the whole run."""
    return generate(300, seed=0, imgsz=SMALL)


@pytest.fixture(scope="module")
def run40() -> tuple[Dataset, list[np.ndarray]]:
    """40 images at the default 320 px."""
    return generate(40, seed=0)


def objects(ds: Dataset) -> list[tuple[str, list[float], int, str | None]]:
    return [(r.name, b.tolist(), int(c), r.split) for r in ds.images for b, c in zip(r.boxes, r.class_ids, strict=True)]


def changed(i: int, config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` mask of the pixels a defect changed in image ``i``, and its boxes."""
    with_defects, rec = render_sample(i, config)
    without, rec0 = render_sample(i, config, defects=False)
    assert rec0.is_background and rec0.name == rec.name and rec0.split == rec.split
    return np.any(with_defects != without, axis=2), rec.boxes


class TestDeterminism:
    def test_same_seed_gives_same_decoded_pixels_and_labels(self, tmp_path: Path) -> None:
        a = synth(tmp_path / "a", n=12, seed=5, imgsz=160)
        b = synth(tmp_path / "b", n=12, seed=5, imgsz=160)
        assert [r.name for r in a] == [r.name for r in b]
        for ra, rb in zip(a, b, strict=True):
            assert ra.path is not None and rb.path is not None
            pa, pb = cv2.imread(str(ra.path)), cv2.imread(str(rb.path))
            assert pa.shape == (160, 160, 3)
            np.testing.assert_array_equal(pa, pb)
        assert objects(a) == objects(b)

    def test_image_i_does_not_depend_on_n(self) -> None:
        short, short_imgs = generate(4, seed=2, imgsz=128)
        long, long_imgs = generate(11, seed=2, imgsz=128)
        assert objects(short) == [o for o in objects(long) if o[0] in {r.name for r in short}]
        for x, y in zip(short_imgs, long_imgs, strict=False):
            np.testing.assert_array_equal(x, y)

    def test_other_seed_gives_other_images(self) -> None:
        _, a = generate(6, seed=0, imgsz=128)
        _, b = generate(6, seed=1, imgsz=128)
        for x, y in zip(a, b, strict=True):
            assert np.mean(x != y) > 0.5

    def test_images_differ_from_each_other(self, run40: tuple[Dataset, list[np.ndarray]]) -> None:
        _, imgs = run40
        digests = {img.tobytes() for img in imgs}
        assert len(digests) == len(imgs)


class TestLabels:
    def test_fixed_class_order(self, run300: tuple[Dataset, list[np.ndarray]]) -> None:
        ds, _ = run300
        assert CLASS_NAMES == ("crack", "squat", "missing_fastener", "scratch", "pit")
        assert ds.labels.names == list(CLASS_NAMES)
        ds.check()

    def test_every_class_appears_in_the_run_and_in_train(self, run300: tuple[Dataset, list[np.ndarray]]) -> None:
        ds, _ = run300
        assert all(c >= 20 for c in ds.class_counts().values()), ds.class_counts()
        train = {CLASS_NAMES[c] for r in ds.split("train") for c in r.class_ids}
        assert train == set(CLASS_NAMES)

    def test_classes_match_scene_kind(self, run300: tuple[Dataset, list[np.ndarray]]) -> None:
        ds, _ = run300
        allowed = {"rail": {"crack", "squat", "missing_fastener"}, "steel": {"crack", "scratch", "pit"}}
        for r in ds:
            kind = r.meta["kind"]
            assert r.name.startswith(kind + "_")
            assert {CLASS_NAMES[c] for c in r.class_ids} <= allowed[kind], r.name
        assert {r.meta["kind"] for r in ds} == set(KINDS)

    def test_background_images_and_object_counts(self, run300: tuple[Dataset, list[np.ndarray]]) -> None:
        ds, _ = run300
        backgrounds = sum(r.is_background for r in ds)
        assert 0.05 * len(ds) <= backgrounds <= 0.16 * len(ds)
        assert all(1 <= len(r) <= 4 for r in ds if not r.is_background)
        assert {len(r) for r in ds} == {0, 1, 2, 3, 4}

    @pytest.mark.parametrize("run", ["run300", "run40"])
    def test_boxes_inside_image_non_degenerate_and_big_enough(self, run: str, request: pytest.FixtureRequest) -> None:
        ds, _ = request.getfixturevalue(run)
        for r in ds:
            h, w = r.size_hw
            assert box_problems(r.boxes, r.size_hw) == [], r.name
            assert np.all(r.boxes >= 0) and np.all(r.boxes[:, [0, 2]] <= w) and np.all(r.boxes[:, [1, 3]] <= h)
            sides = np.stack([r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]], 1)
            assert np.all(sides.max(1) >= 12 * w / 320 - 1e-9), (r.name, sides)
            assert np.all(sides.min(1) >= 3 * w / 320 - 1e-9), (r.name, sides)

    def test_boxes_do_not_overlap(self, run40: tuple[Dataset, list[np.ndarray]]) -> None:
        ds, _ = run40
        for r in ds:
            for i in range(len(r)):
                for j in range(i + 1, len(r)):
                    a, b = r.boxes[i], r.boxes[j]
                    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], r.name


class TestExactBoxes:
    """Rendering the same scene without defects changes only pixels inside the boxes, up to their edges."""

    @pytest.mark.parametrize("imgsz", [320, 200])
    def test_changed_pixels_lie_inside_the_boxes_and_reach_their_edges(self, imgsz: int) -> None:
        config = SynthConfig(seed=0, imgsz=imgsz)
        seen: set[int] = set()
        for i in range(14):
            diff, boxes = changed(i, config)
            inside = np.zeros_like(diff)
            for x1, y1, x2, y2 in boxes.astype(int):
                inside[y1:y2, x1:x2] = True
                ys, xs = np.nonzero(diff[y1:y2, x1:x2])
                assert len(xs), f"image {i}: box {(x1, y1, x2, y2)} changed no pixel"
                # tight: the changed pixels reach every edge of the box (faint anti-aliased edges may round away)
                assert xs.min() <= 2 and ys.min() <= 2, (i, (x1, y1, x2, y2))
                assert xs.max() >= x2 - x1 - 3 and ys.max() >= y2 - y1 - 3, (i, (x1, y1, x2, y2))
            assert not np.any(diff & ~inside), f"image {i}: pixels changed outside the boxes"
            seen.update(render_sample(i, config)[1].class_ids.tolist())
        assert seen == set(range(len(CLASS_NAMES)))

    def test_background_image_equals_its_defect_free_render(self, run300: tuple[Dataset, list[np.ndarray]]) -> None:
        ds, _ = run300
        i = next(k for k, r in enumerate(ds.images) if r.is_background)
        diff, boxes = changed(i, SynthConfig(seed=0, imgsz=SMALL))
        assert len(boxes) == 0 and not diff.any()

    def test_missing_fastener_box_is_where_a_fastener_would_be(self, run40: tuple[Dataset, list[np.ndarray]]) -> None:
        ds, _ = run40
        k = CLASS_NAMES.index("missing_fastener")
        i = next(n for n, r in enumerate(ds.images) if k in r.class_ids)
        clean, _ = render_sample(i, SynthConfig(seed=0), defects=False)
        with_defect, rec = render_sample(i, SynthConfig(seed=0))
        x1, y1, x2, y2 = rec.boxes[list(rec.class_ids).index(k)].astype(int)
        # a whole fastener is there in the clean render and gone in the defective one: most of the box changed
        changed_part = np.any(clean[y1:y2, x1:x2] != with_defect[y1:y2, x1:x2], axis=2).mean()
        assert changed_part > 0.6, changed_part
        contrast = np.abs(clean[y1:y2, x1:x2].astype(float) - with_defect[y1:y2, x1:x2]).mean()
        assert contrast > 15, contrast


class TestSplitsAndFiles:
    def test_splits_are_80_10_10_per_block_of_ten(self) -> None:
        ds, _ = generate(30, seed=4, imgsz=64)
        assert [len(ds.split(s)) for s in ("train", "val", "test")] == [24, 3, 3]
        assert ds.splits == ["train", "val", "test"]
        other, _ = generate(30, seed=9, imgsz=64)
        assert [r.split for r in ds] != [r.split for r in other]

    def test_synth_writes_lossless_pngs_named_by_kind_and_index(self, tmp_path: Path) -> None:
        out = tmp_path / "imgs ü"
        calls: list[tuple[int, int]] = []
        ds = synth(out, n=5, seed=1, imgsz=96, progress=lambda done, total: calls.append((done, total)))
        assert calls == [(i, 5) for i in range(1, 6)]
        _, imgs = generate(5, seed=1, imgsz=96)
        assert ds.root == out and sorted(p.name for p in out.iterdir()) == sorted(r.name for r in ds)
        for i, (r, img) in enumerate(zip(ds, imgs, strict=True)):
            assert r.name == f"{r.meta['kind']}_{i:04d}.png" and r.path == out / r.name
            decoded = cv2.imdecode(np.frombuffer(r.path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
            np.testing.assert_array_equal(decoded, img)
        assert ds.meta["info"]["seed"] == 1 and ds.meta["info"]["n"] == 5

    def test_iter_samples_streams_the_same_images(self) -> None:
        ds, imgs = generate(3, seed=0, imgsz=64)
        for (img, rec), ref, ref_rec in zip(iter_samples(SynthConfig(3, seed=0, imgsz=64)), imgs, ds, strict=True):
            np.testing.assert_array_equal(img, ref)
            assert rec.name == ref_rec.name

    def test_written_as_yolo_reads_back(self, tmp_path: Path) -> None:
        from edgevision.convert import read_dataset, write_dataset

        ds = synth(tmp_path / "images", n=20, seed=0, imgsz=128)
        write_dataset(ds, tmp_path / "yolo", "yolo")
        back = read_dataset(tmp_path / "yolo", "yolo").dataset
        assert back.labels.names == list(CLASS_NAMES)
        got = {Path(r.name).name: r for r in back}
        for r in ds:
            g = got[r.name]
            assert g.split == r.split and g.size_hw == r.size_hw
            np.testing.assert_allclose(g.boxes, r.boxes, atol=1e-3)
            np.testing.assert_array_equal(g.class_ids, r.class_ids)


class TestOptions:
    def test_only_the_kinds_asked_for(self) -> None:
        ds, _ = generate(12, seed=0, imgsz=96, kinds=["steel"])
        assert {r.meta["kind"] for r in ds} == {"steel"}
        assert {CLASS_NAMES[c] for r in ds for c in r.class_ids} <= {"crack", "scratch", "pit"}
        assert ds.labels.names == list(CLASS_NAMES)  # ids stay the same whatever kinds is

    def test_kind_order_does_not_matter(self) -> None:
        a, _ = generate(5, seed=0, imgsz=64, kinds=("steel", "rail"))
        b, _ = generate(5, seed=0, imgsz=64)
        assert objects(a) == objects(b)

    @pytest.mark.parametrize("fraction, expect_background", [(0.0, False), (1.0, True)])
    def test_background_fraction_bounds(self, fraction: float, expect_background: bool) -> None:
        ds, _ = generate(10, seed=0, imgsz=64, background_fraction=fraction)
        assert all(r.is_background == expect_background for r in ds)

    def test_output_folder_that_is_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "taken").write_text("x")
        with pytest.raises(EdgeVisionError, match="taken: expected a folder for the synthetic images, got a file"):
            synth(tmp_path / "taken", n=1, imgsz=64)

    def test_negative_index(self) -> None:
        with pytest.raises(ConfigError, match="index must be >= 0, got -1"):
            render_sample(-1)

    def test_zero_images(self, tmp_path: Path) -> None:
        ds = synth(tmp_path / "none", n=0)
        assert len(ds) == 0 and ds.labels.names == list(CLASS_NAMES)

    def test_unknown_kind_suggests_the_closest(self) -> None:
        with pytest.raises(UnknownNameError, match="Did you mean 'steel'"):
            generate(1, kinds=("stel",))

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"n": -1}, "n must be >= 0, got -1"),
            ({"seed": -3}, "seed must be >= 0"),
            ({"imgsz": 32}, "imgsz must be >= 64, got 32"),
            ({"background_fraction": 1.5}, r"background_fraction must be in \[0, 1\], got 1.5"),
            ({"kinds": ()}, "at least one kind"),
        ],
    )
    def test_bad_settings_are_one_line_config_errors(self, kwargs: dict, message: str, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=message):
            synth(tmp_path / "out", **kwargs)
        assert not (tmp_path / "out").exists()
