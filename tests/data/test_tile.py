"""Tiling: the pure geometry, box and shape clipping, and `tile_dataset` on real image files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevision.core import Dataset, DatasetError, ImageRecord, LabelMap, Report
from edgevision.core.errors import ConfigError
from edgevision.core.geometry import RLE, Polygon, Polyline
from edgevision.data.tile import (
    TileOptions,
    clip_boxes_to_window,
    clip_polygon_to_window,
    keep_background,
    tile_dataset,
    tile_names,
    tile_stride,
    tile_to_source,
    tile_windows,
)
from tests.formats.conformance import write_image


# -- geometry -----------------------------------------------------------------------------------
def coverage(size_hw: tuple[int, int], windows: np.ndarray) -> np.ndarray:
    cover = np.zeros(size_hw, dtype=np.int32)
    for x1, y1, x2, y2 in windows:
        cover[y1:y2, x1:x2] += 1
    return cover


def check_windows(size_hw: tuple[int, int], tile_hw: tuple[int, int], overlap: float) -> np.ndarray:
    """The stated contract of `tile_windows`, checked for one case."""
    h, w = size_hw
    win = tile_windows(size_hw, tile_hw, overlap)
    assert win.dtype == np.int64 and win.ndim == 2 and win.shape[1] == 4 and len(win)
    assert (win[:, :2] >= 0).all() and (win[:, 2] <= w).all() and (win[:, 3] <= h).all()
    assert (coverage(size_hw, win) >= 1).all(), "a pixel is in no tile"
    sizes = {(int(y2 - y1), int(x2 - x1)) for x1, y1, x2, y2 in win}
    assert sizes == {(min(tile_hw[0], h), min(tile_hw[1], w))}, "tiles differ in size"
    assert win[:, 2].max() == w and win[:, 3].max() == h, "last tile does not end at the edge"
    for axis, (n, t) in ((0, (w, tile_hw[1])), (1, (h, tile_hw[0]))):
        starts = np.unique(win[:, axis])
        assert starts[0] == 0 and starts[-1] == max(n - t, 0)
        steps = np.diff(starts)
        stride = tile_stride(t, overlap)
        assert (steps[:-1] == stride).all() and (steps <= stride).all()
    assert len(np.unique(win, axis=0)) == len(win), "duplicate windows"
    return win


@pytest.mark.parametrize("size_hw", [(700, 1000), (640, 640), (641, 1281), (4000, 650), (100, 50), (100, 1500)])
@pytest.mark.parametrize("overlap", [0.0, 0.2, 0.5, 0.9])
def test_windows_cover_every_pixel_with_equal_tiles(size_hw, overlap):
    check_windows(size_hw, (640, 640), overlap)


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 90), w=st.integers(1, 90), th=st.integers(1, 40), tw=st.integers(1, 40),
       overlap=st.floats(0.0, 0.95))
def test_windows_property(h, w, th, tw, overlap):
    check_windows((h, w), (th, tw), overlap)


def test_windows_values_and_row_major_order():
    win = tile_windows((700, 1000), (640, 640), 0.2)  # stride 512: x starts 0, 360; y starts 0, 60
    np.testing.assert_array_equal(win, [[0, 0, 640, 640], [360, 0, 1000, 640],
                                        [0, 60, 640, 700], [360, 60, 1000, 700]])


def test_overlap_zero_is_a_partition():
    win = tile_windows((600, 900), (300, 300), 0.0)
    assert len(win) == 6 and (coverage((600, 900), win) == 1).all()


def test_small_image_gives_one_tile_of_its_own_size():
    np.testing.assert_array_equal(tile_windows((100, 50), (640, 640), 0.2), [[0, 0, 50, 100]])
    win = tile_windows((100, 1500), (640, 640), 0.0)  # short in height only
    np.testing.assert_array_equal(win, [[0, 0, 640, 100], [640, 0, 1280, 100], [860, 0, 1500, 100]])


def test_stride_rounding():
    assert tile_stride(640, 0.2) == 512
    assert tile_stride(5, 0.5) == 3  # 2.5 rounds half up
    assert tile_stride(10, 0.99) == 1  # never 0
    assert tile_stride(640, 0.0) == 640


@pytest.mark.parametrize("args", [((0, 10), (5, 5), 0.1), ((10, 10), (5, 0), 0.1),
                                  ((10, 10), (5, 5), 1.0), ((10, 10), (5, 5), -0.1)])
def test_windows_reject_bad_arguments(args):
    with pytest.raises(ValueError, match="tile_windows: expected"):
        tile_windows(*args)


# -- boxes ------------------------------------------------------------------------------------
def test_clip_boxes_values():
    boxes = [[110, 120, 130, 140],   # inside
             [90, 100, 110, 120],    # half out (left)
             [190, 190, 210, 210],   # quarter in (corner)
             [300, 300, 310, 310],   # outside
             [150, 150, 150, 160]]   # zero area
    clipped, vis = clip_boxes_to_window(boxes, [100, 100, 200, 200])
    np.testing.assert_allclose(vis, [1.0, 0.5, 0.25, 0.0, 0.0])
    np.testing.assert_allclose(clipped[:3], [[10, 20, 30, 40], [0, 0, 10, 20], [90, 90, 100, 100]])
    assert clipped[3, 2] - clipped[3, 0] == 0 or clipped[3, 3] - clipped[3, 1] == 0
    assert clipped.shape == (5, 4) and vis.shape == (5,)
    clipped, vis = clip_boxes_to_window(np.zeros((0, 4)), [0, 0, 5, 5])
    assert clipped.shape == (0, 4) and vis.shape == (0,)


def test_tile_to_source_inverts_the_shift():
    boxes = np.array([[110.5, 120, 130, 140.25], [150, 101, 199, 199]])
    window = [100, 100, 200, 200]
    clipped, vis = clip_boxes_to_window(boxes, window)
    assert (vis == 1).all()
    np.testing.assert_allclose(tile_to_source(clipped, window), boxes)
    assert tile_to_source(np.zeros((0, 4)), window).shape == (0, 4)


# -- shapes -----------------------------------------------------------------------------------
def test_polygon_clip_area_and_frame():
    square = (np.array([[-10, -10], [50, -10], [50, 50], [-10, 50]], dtype=float),)
    rings = clip_polygon_to_window(square, [0, 0, 100, 100])
    poly = Polygon(rings)
    assert poly.area() == pytest.approx(2500) and poly.bbox_xyxy().tolist() == [0, 0, 50, 50]
    rings = clip_polygon_to_window(square, [20, 30, 100, 100])  # shifted frame
    assert Polygon(rings).bbox_xyxy().tolist() == [0, 0, 30, 20]
    assert clip_polygon_to_window(square, [60, 60, 100, 100]) == ()


def test_concave_polygon_clip_matches_cropped_mask():
    # a U shape: the clip line cuts both arms
    u = np.array([[10, 10], [90, 10], [90, 90], [70, 90], [70, 30], [30, 30], [30, 90], [10, 90]], dtype=float)
    window = [0, 50, 100, 100]
    rings = clip_polygon_to_window((u,), window)
    assert Polygon(rings).area() == pytest.approx(2 * 20 * 40)
    mask = Polygon((u,)).to_rle((100, 100)).decode()[50:100, 0:100]
    assert abs(int(mask.sum()) - Polygon(rings).area()) / Polygon(rings).area() < 0.1


def make_record(name: str, size_hw, boxes, class_ids, path: Path | None = None, **kw) -> ImageRecord:
    return ImageRecord(name, size_hw, boxes=np.array(boxes, dtype=float).reshape(-1, 4), class_ids=class_ids,
                       path=path, **kw)


def test_shapes_carried_into_tiles(tmp_path):
    img = write_image(tmp_path / "src" / "a.png", (100, 200), seed=1)
    mask = np.zeros((100, 200), np.uint8)
    mask[20:60, 80:130] = 1  # crosses x=100
    poly = Polygon.from_flat([80, 20, 130, 20, 130, 60, 80, 60])
    line_in = Polyline(np.array([[10.0, 10], [40, 40]]))
    line_cut = Polyline(np.array([[90.0, 10], [110, 40]]))
    rec = make_record("a.png", (100, 200), [[80, 20, 130, 60]] * 2 + [[10, 10, 40, 40], [90, 10, 110, 40]],
                      [0, 0, 1, 1], path=img, shapes=[poly, RLE.encode(mask), line_in, line_cut],
                      attributes=[{"occluded": True}, {}, {}, {"difficult": 1}])
    ds = Dataset(LabelMap(["pit", "rail"]), [rec])
    res = tile_dataset(ds, TileOptions(size=100, overlap=0.0, min_visibility=0.2, keep_empty=1.0), tmp_path / "t")
    tiles = {r.name: r for r in res.dataset}
    left, right = tiles["a__x0_y0.png"], tiles["a__x100_y0.png"]
    assert len(left) == 4 and len(right) == 3  # the inside polyline is in the left tile only
    assert left.shapes[0].area() == pytest.approx(20 * 40) and right.shapes[0].area() == pytest.approx(30 * 40)
    assert int(left.shapes[1].decode().sum()) == 20 * 40 and int(right.shapes[1].decode().sum()) == 30 * 40
    assert right.shapes[1].size_hw == (100, 100)
    np.testing.assert_allclose(left.shapes[2].points, [[10, 10], [40, 40]])
    assert left.shapes[3] is None and right.shapes[2] is None  # the cut polyline lost its shape
    assert res.shapes_dropped == 2
    assert left.attributes[0] == {"occluded": True} and right.attributes[2] == {"difficult": 1}
    np.testing.assert_allclose(right.boxes[0], [0, 20, 30, 60])


# -- the dataset ------------------------------------------------------------------------------
def random_boxes(rng: np.random.Generator, size_hw, n: int) -> np.ndarray:
    h, w = size_hw
    wh = rng.uniform(4, 300, (n, 2))
    xy = rng.uniform(-40, [w, h], (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """Three 1000x700 images with random boxes (some spilling out, one zero-area), one background."""
    root = tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(7)
    recs = []
    for i, split in enumerate(["train", "train", "val"]):
        boxes = random_boxes(rng, (700, 1000), 25)
        if i == 0:
            boxes[0] = [500, 300, 500, 340]  # zero area
            boxes[1] = [10, 10, 60, 50]  # inside the first tile
        path = write_image(root / "src" / f"line {i}.png", (700, 1000), seed=i)
        recs.append(make_record(f"line {i}.png", (700, 1000), boxes, rng.integers(0, 3, len(boxes)),
                                path=path, split=split))
    bg = write_image(root / "src" / "sub" / "défaut ü.png", (700, 1000), seed=9)
    recs.append(make_record("sub/défaut ü.png", (700, 1000), [], [], path=bg, split="test"))
    ds = Dataset(LabelMap(["scratch", "pit", "rust"]), recs)
    opts = TileOptions(size=256, overlap=0.2, min_visibility=0.5, keep_empty=1.0, seed=3)
    return ds, opts, tile_dataset(ds, opts, root / "tiles")


def test_every_source_box_is_accounted_for(large):
    ds, opts, res = large
    by_source: dict[str, list[ImageRecord]] = {}
    for t in res.dataset:
        by_source.setdefault(t.meta["source"], []).append(t)
    for src in ds:
        tiles = by_source[src.name]
        visible = np.clip(src.boxes, 0, [1000, 700, 1000, 700])
        mapped = [(t, tile_to_source(t.boxes, t.meta["window"])) for t in tiles]
        for i, box in enumerate(visible):
            area = (box[2] - box[0]) * (box[3] - box[1])
            best, found = 0.0, False
            for t, back in mapped:  # brute force: intersection with each window, no library helper
                x1, y1, x2, y2 = t.meta["window"]
                ix = max(0.0, min(box[2], x2) - max(box[0], x1))
                iy = max(0.0, min(box[3], y2) - max(box[1], y1))
                vis = ix * iy / area if area > 0 else 0.0
                best = max(best, vis)
                expect = [max(box[0], x1), max(box[1], y1), min(box[2], x2), min(box[3], y2)]
                hit = any(np.allclose(b, expect) and c == src.class_ids[i] for b, c in zip(back, t.class_ids))
                assert hit == (vis >= opts.min_visibility and vis > 0), (src.name, i, t.name, vis)
                found |= hit
            assert found == (best >= opts.min_visibility and best > 0), (src.name, i, best)
        # nothing invented: every tile box comes from a source box of the same class
        for t, back in mapped:
            for b, c in zip(back, t.class_ids):
                assert any(np.allclose(b, [max(s[0], t.meta["window"][0]), max(s[1], t.meta["window"][1]),
                                           min(s[2], t.meta["window"][2]), min(s[3], t.meta["window"][3])])
                           and c == sc for s, sc in zip(visible, src.class_ids))


def test_whole_boxes_map_back_exactly(large):
    ds, _, res = large
    first = res.dataset.images[[t.name for t in res.dataset].index("line 0__x0_y0.png")]
    back = tile_to_source(first.boxes, first.meta["window"])
    assert any(np.array_equal(b, ds.images[0].boxes[1]) for b in back)


def test_counts_add_up(large):
    ds, _, res = large
    assert res.sources == 4 and res.windows == 4 * len(tile_windows((700, 1000), (256, 256), 0.2))
    assert res.tiles == res.windows  # keep_empty=1 keeps every tile
    assert res.objects_in == ds.num_objects == 75
    assert res.objects_kept + res.objects_dropped == res.objects_in and res.objects_dropped >= 1  # the zero-area box
    assert 0 < res.objects_split <= res.objects_kept and res.fragments_dropped > 0
    assert res.instances == res.dataset.num_objects
    assert res.background_kept == sum(t.is_background for t in res.dataset)
    assert res.background_dropped == 0


def test_tile_records_origin_split_and_pixels(large, tmp_path):
    ds, _, res = large
    for t in res.dataset:
        src = next(r for r in ds if r.name == t.meta["source"])
        assert t.split == src.split and t.meta["source_size_hw"] == [700, 1000]
        x1, y1, x2, y2 = t.meta["window"]
        assert t.size_hw == (y2 - y1, x2 - x1) == (256, 256)
        assert res.origins[t.name].to_dict() == t.meta
        assert ((t.boxes >= 0) & (t.boxes <= 256)).all()
    bg_tiles = [t for t in res.dataset if t.meta["source"] == "sub/défaut ü.png"]
    assert bg_tiles and all(t.name.startswith("sub/défaut ü__x") for t in bg_tiles)
    for t in (res.dataset.images[0], bg_tiles[-1]):  # lossless PNG, exact crop
        src = next(r for r in ds if r.name == t.meta["source"])
        x1, y1, x2, y2 = t.meta["window"]
        whole = cv2.imdecode(np.fromfile(str(src.path), np.uint8), cv2.IMREAD_UNCHANGED)
        tile = cv2.imdecode(np.fromfile(str(t.path), np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(tile, whole[y1:y2, x1:x2])
    assert res.tile_map()["tiles"][bg_tiles[0].name]["source"] == "sub/défaut ü.png"


def background_dataset(root: Path, n: int = 4) -> Dataset:
    recs = [make_record(f"bg{i}.png", (160, 160), [], [], path=write_image(root / f"bg{i}.png", (160, 160), seed=i))
            for i in range(n)]
    return Dataset(LabelMap(["x"]), recs)


def test_keep_empty_is_deterministic_and_order_independent(tmp_path):
    ds = background_dataset(tmp_path / "src")
    opts = TileOptions(size=20, overlap=0.0, min_visibility=0.5, keep_empty=0.3, seed=5)
    a = tile_dataset(ds, opts, tmp_path / "a")
    b = tile_dataset(Dataset(ds.labels, ds.images[::-1]), opts, tmp_path / "b")
    c = tile_dataset(ds, TileOptions(size=20, overlap=0.0, keep_empty=0.3, seed=6), tmp_path / "c")
    assert set(a.origins) == set(b.origins) and set(a.origins) != set(c.origins)
    assert a.windows == 4 * 64 and a.background_kept + a.background_dropped == a.windows
    assert 0.2 < a.background_kept / a.windows < 0.4
    assert tile_dataset(ds, TileOptions(size=20, keep_empty=0.0), tmp_path / "d").tiles == 0
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_keep_background_fraction():
    draws = [keep_background(1, f"img{i // 50}.png", [i % 50, 0, 10, 10], 0.1) for i in range(20000)]
    assert abs(np.mean(draws) - 0.1) < 0.01
    assert keep_background(1, "a", [0, 0, 1, 1], 1.0) and not keep_background(1, "a", [0, 0, 1, 1], 0.0)


def test_tile_names_unique_for_same_stem():
    recs = [make_record(n, (10, 10), [], []) for n in ("a.jpg", "a.png", "d/a.png", "b.png")]
    assert tile_names(recs) == {"a.jpg": "a_jpg", "a.png": "a_png", "d/a.png": "d/a", "b.png": "b"}
    with pytest.raises(DatasetError, match="same name"):
        tile_names([make_record(n, (10, 10), [], []) for n in ("a.jpg", "a.png", "a_png.bmp")])


def test_16bit_grey_pixels_survive(tmp_path):
    img = (np.arange(60 * 90, dtype=np.uint16).reshape(60, 90) * 7)
    path = tmp_path / "g16.png"
    path.write_bytes(cv2.imencode(".png", img)[1].tobytes())
    ds = Dataset(LabelMap(["x"]), [make_record("g16.png", (60, 90), [[5, 5, 20, 20]], [0], path=path)])
    res = tile_dataset(ds, TileOptions(size=50, overlap=0.0, keep_empty=1.0), tmp_path / "t")
    t = res.dataset.images[-1]
    got = cv2.imdecode(np.fromfile(str(t.path), np.uint8), cv2.IMREAD_UNCHANGED)
    x1, y1, x2, y2 = t.meta["window"]
    assert got.dtype == np.uint16 and got.ndim == 2
    np.testing.assert_array_equal(got, img[y1:y2, x1:x2])


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("problem,code", [("missing", "image_missing"), ("corrupt", "image_corrupt"),
                                          ("size", "image_size_mismatch")])
def test_bad_images_fail_or_skip(tmp_path, problem, code):
    good = write_image(tmp_path / "good.png", (40, 40))
    bad = tmp_path / "bad.png"
    if problem == "corrupt":
        bad.write_bytes(b"\x89PNG not really")
    elif problem == "size":
        write_image(bad, (30, 40))
    ds = Dataset(LabelMap(["x"]), [make_record("good.png", (40, 40), [[1, 1, 9, 9]], [0], path=good),
                                   make_record("bad.png", (40, 40), [[1, 1, 9, 9]], [0], path=bad)])
    opts = TileOptions(size=32, keep_empty=1.0)
    with pytest.raises(DatasetError, match="bad.png") as e:
        tile_dataset(ds, opts, tmp_path / "t1")
    assert e.value.code == code
    report = Report("skip")
    res = tile_dataset(ds, opts, tmp_path / "t2", report=report)
    assert [f.code for f in report.skipped] == [code]
    assert {o.source for o in res.origins.values()} == {"good.png"} and res.sources == 1


@pytest.mark.parametrize("kw,opt", [({"size": 0}, "--size"), ({"overlap": 1.0}, "--overlap"),
                                    ({"min_visibility": 1.5}, "--min-visibility"), ({"keep_empty": -0.1}, "--keep-empty")])
def test_options_are_checked(kw, opt):
    with pytest.raises(ConfigError, match=opt):
        TileOptions(**kw)


def test_progress_callback(tmp_path):
    ds = background_dataset(tmp_path / "src", n=3)
    calls: list[tuple[int, int]] = []
    tile_dataset(ds, TileOptions(size=160, keep_empty=0.0), tmp_path / "t", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


# -- the tile map rides inside the atomic output (write_dataset's extra_files) ------------------
def test_write_dataset_extra_files_are_atomic(tmp_path):
    from edgevision.convert import write_dataset
    from edgevision.core.errors import EdgeVisionError

    ds = background_dataset(tmp_path / "src", n=1)
    write_dataset(ds, tmp_path / "ok", "yolo", extra_files={"tiles.json": b"{}", "maps/a b.txt": b"x"})
    assert (tmp_path / "ok" / "tiles.json").read_bytes() == b"{}" and (tmp_path / "ok" / "maps" / "a b.txt").is_file()
    with pytest.raises(EdgeVisionError, match="clashes"):
        write_dataset(ds, tmp_path / "clash", "yolo", extra_files={"data.yaml": b"x"})
    with pytest.raises(DatasetError, match="escapes"):
        write_dataset(ds, tmp_path / "escape", "yolo", extra_files={"../evil.txt": b"x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok", "src"], "partial output left behind"
