"""Validation: each finding code provoked by a real file, duplicates within and across splits, pHash,
EXIF orientation, truncated JPEGs, the fix policies and the reader findings merged without double counts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edgevision.core import ConfigError, Dataset, EdgeVisionError, ImageRecord, LabelMap
from edgevision.core.geometry import Polygon
from edgevision.core.report import Finding
from edgevision.data.imagehash import hamming, near_duplicate_pairs, phash
from edgevision.data.validate import (
    SCHEMA,
    ValidateConfig,
    _jpeg_truncated,
    apply_fix,
    inspect_image,
    merge_reader_findings,
    validate,
)
from tests.formats.conformance import write_image
from tests.helpers import tree_digest


# -- fixtures ----------------------------------------------------------------------------------
def smooth_image(seed: int, size_hw: tuple[int, int] = (192, 256)) -> np.ndarray:
    """A photo-like BGR image: smooth blobs (low-res noise upscaled) plus a gradient and a few edges."""
    rng = np.random.default_rng(seed)
    h, w = size_hw
    low = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img += np.linspace(0, 40, w, dtype=np.float32)[None, :, None]
    for _ in range(3):
        x, y = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
        cv2.rectangle(img, (x, y), (x + w // 8, y + h // 8), tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def save(path: Path, img: np.ndarray, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, img, params)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def near_copy(img: np.ndarray) -> np.ndarray:
    """The same scene re-shot: shifted by 2 px right / 1 px down, brighter by 25."""
    m = np.float32([[1, 0, 2], [0, 1, 1]])
    moved = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    return np.clip(moved.astype(np.int16) + 25, 0, 255).astype(np.uint8)


def write_truncated_jpeg(path: Path, seed: int = 0) -> Path:
    """A JPEG whose header is intact but whose scan data is cut short."""
    data = save(path, smooth_image(seed)).read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def write_exif_jpeg(path: Path, orientation: int = 6, size_hw: tuple[int, int] = (40, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(smooth_image(3, size_hw)).save(path, exif=exif)
    return path


def make_bad_coco(root: Path) -> Path:
    """A COCO dataset provoking every per-image and per-object code. Sizes are declared (H, W)."""
    img = root / "images"
    write_image(img / "a.png", (40, 60), seed=1)
    write_image(img / "small.png", (30, 20), seed=2)  # declared 40x60 below
    write_truncated_jpeg(img / "cut.jpg")
    write_exif_jpeg(img / "rotated.jpg")
    write_image(img / "bg.png", (30, 30), seed=4)  # declared 32x32, no objects
    images = [("a.png", 40, 60), ("gone.png", 40, 60), ("small.png", 40, 60), ("cut.jpg", 128, 128),
              ("rotated.jpg", 40, 60), ("bg.png", 32, 32)]
    boxes = [  # (image id, category id, xywh)
        (1, 1, [50, 5, 20, 10]),         # 0: partly outside -> box_outside warning
        (1, 1, [70, 5, 5, 5]),           # 1: entirely outside -> box_outside error
        (1, 1, [5, 5, 0, 10]),           # 2: zero width -> box_empty
        (1, 1, [10, 10, -5, 4]),         # 3: negative width -> box_inverted
        (1, 1, [float("nan"), 1, 3, 3]),  # 4: box_nan
        (1, 9, [1, 1, 10, 10]),          # 5: category 9 -> class_unknown
        (1, 1, [20, 20, 3, 3]),          # 6: 3x3 -> box_small
        (1, 1, [20, 20, 12, 12]),        # 7: fine
        (3, 1, [2, 2, 10, 10]),          # small.png has an object -> size_mismatch error
        (5, 1, [2, 2, 10, 10]),          # rotated.jpg
    ]
    coco = {
        "images": [{"id": i, "file_name": n, "height": h, "width": w} for i, (n, h, w) in enumerate(images, 1)],
        "annotations": [{"id": k, "image_id": i, "category_id": c, "bbox": b, "iscrowd": 0}
                        for k, (i, c, b) in enumerate(boxes, 1)],
        "categories": [{"id": 1, "name": "crack"}],
    }
    (root / "instances.json").write_text(json.dumps(coco))
    return root / "instances.json"


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bad")
    path = make_bad_coco(root)
    before = tree_digest(root)
    result = validate(path)
    return root, before, result


def one(result, code: str, where_part: str) -> Finding:
    hits = [f for f in result.findings if f.code == code and where_part in f.where]
    assert len(hits) == 1, (code, where_part, [str(f) for f in result.findings])
    return hits[0]


# -- every code, from real files ---------------------------------------------------------------
@pytest.mark.parametrize(("code", "where", "severity", "says"), [
    ("box_outside", "a.png:object[0]", "warning", "extends past the 60x40 image"),
    ("box_outside", "a.png:object[1]", "error", "lies outside the 60x40 image"),
    ("box_empty", "a.png:object[2]", "error", "zero area"),
    ("box_inverted", "a.png:object[3]", "error", "x1=10 x2=5"),
    ("box_nan", "a.png:object[4]", "error", "non-finite"),
    ("class_unknown", "annotations[5]", "error", "category_id 9"),
    ("box_small", "a.png:object[5]", "warning", "3x3 px"),
    ("image_missing", "gone.png", "error", "no image file"),
    ("image_corrupt", "cut.jpg", "error", "cut.jpg"),
    ("size_mismatch", "small.png", "error", "annotation says 60x40 (WxH) but the image is 20x30"),
    ("size_mismatch", "bg.png", "warning", "32x32"),
    ("exif_rotation", "rotated.jpg", "warning", "Orientation=6"),
])
def test_each_code_is_found(bad, code: str, where: str, severity: str, says: str) -> None:
    _, _, result = bad
    hits = [f for f in result.findings if f.code == code and where in f.where and f.severity == severity]
    assert len(hits) == 1, (code, [str(f) for f in result.findings])
    assert says in hits[0].message


def test_no_double_counts_and_no_false_findings(bad) -> None:
    root, before, result = bad
    counts: dict[str, int] = {}
    for f in result.findings:
        counts[f"{f.code}/{f.severity}"] = counts.get(f"{f.code}/{f.severity}", 0) + 1
    assert counts == {
        "box_outside/warning": 1, "box_outside/error": 1, "box_empty/error": 1, "box_inverted/error": 1,
        "box_nan/error": 1, "class_unknown/error": 1, "box_small/warning": 1, "image_missing/error": 1,
        "image_corrupt/error": 1, "size_mismatch/error": 1, "size_mismatch/warning": 1,
        "exif_rotation/warning": 1,
    }, [str(f) for f in result.findings]
    assert not any("object[6]" in f.where for f in result.check_findings)  # the fine box; the unknown-class one was dropped
    assert {f.code for f in result.reader_findings} == {"class_unknown"}  # the reader's code kept
    assert result.format == "coco" and not result.ok and len(result.dataset) == 6
    assert tree_digest(root) == before, "validate modified the source"


def test_json_document(bad) -> None:
    _, _, result = bad
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["schema"] == SCHEMA == "edgevision.validate/1"
    assert doc["format"] == "coco" and doc["dataset"].endswith("instances.json")
    s = doc["summary"]
    assert (s["images"], s["errors"], s["warnings"], s["ok"]) == (6, 8, 4, False)
    assert s["codes"][0]["severity"] == "error" and sum(c["count"] for c in s["codes"]) == 12
    assert len(doc["findings"]) == 12
    assert {f["source"] for f in doc["findings"]} == {"reader", "validate"}
    assert set(doc["findings"][0]) == {"code", "severity", "where", "message", "source"}


# -- images ------------------------------------------------------------------------------------
def test_truncated_jpeg_with_valid_header_is_corrupt(tmp_path: Path) -> None:
    path = write_truncated_jpeg(tmp_path / "t.jpg")
    with Image.open(path) as im:
        assert im.size == (256, 192)  # the header alone looks fine
    facts = inspect_image(path)
    assert facts.problem is not None and facts.problem[0] == "image_corrupt" and facts.phash is None
    assert facts.sha256 is not None  # hashed from the bytes read once


def test_jpeg_end_marker_rule(tmp_path: Path) -> None:
    data = save(tmp_path / "ok.jpg", smooth_image(0)).read_bytes()
    assert not _jpeg_truncated(data)
    assert not _jpeg_truncated(data + b"\x00" * 64)  # camera padding after the end marker is fine
    assert _jpeg_truncated(data[:-2])  # only the end marker cut
    assert not _jpeg_truncated(b"\x89PNG\r\n\x1a\n")  # the rule applies to JPEG only


@pytest.mark.parametrize(("content", "code"), [(b"", "image_corrupt"), (b"not an image at all", "image_corrupt"),
                                               (None, "image_unreadable")])
def test_empty_garbage_and_folder_images(tmp_path: Path, content: bytes | None, code: str) -> None:
    path = tmp_path / "x.png"
    if content is None:
        path.mkdir()  # a folder where the image should be
    else:
        path.write_bytes(content)
    ds = Dataset(LabelMap(["a"]), [ImageRecord("x.png", (10, 10), path=path)])
    f = one(validate(ds), code, "x.png")
    assert f.severity == "error" and str(path) in f.message


def test_exif_orientation_values(tmp_path: Path) -> None:
    for k in (1, 3, 6, 8):
        write_exif_jpeg(tmp_path / f"o{k}.jpg", k)
    recs = [ImageRecord(f"o{k}.jpg", (40, 60), path=tmp_path / f"o{k}.jpg") for k in (1, 3, 6, 8)]
    res = validate(Dataset(LabelMap([]), recs))
    got = {f.where: f.message for f in res.findings if f.code == "exif_rotation"}
    assert sorted(got) == ["o3.jpg", "o6.jpg", "o8.jpg"]  # 1 is upright
    assert "Orientation=8" in got["o8.jpg"] and "counter-clockwise" in got["o8.jpg"]
    assert not [f for f in res.findings if f.code == "size_mismatch"]  # stored pixels, EXIF ignored


def test_size_mismatch_says_when_the_annotation_used_the_rotated_view(tmp_path: Path) -> None:
    path = write_exif_jpeg(tmp_path / "r.jpg", 6, (40, 60))
    ds = Dataset(LabelMap(["a"]), [ImageRecord("r.jpg", (60, 40), [[1, 1, 9, 9]], [0], path=path)])
    f = one(validate(ds), "size_mismatch", "r.jpg")
    assert f.severity == "error" and "swapped" in f.message


# -- duplicates --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dup_result(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("dups")
    a, b, c = smooth_image(10), smooth_image(11), smooth_image(12)
    files = {
        "train/a.png": save(d / "train/a.png", a),
        "train/a_copy.png": save(d / "train/a_copy.png", a),      # exact, same split
        "val/a_leak.png": save(d / "val/a_leak.png", a),          # exact, across splits
        "train/b.png": save(d / "train/b.png", b),
        "train/b_next.png": save(d / "train/b_next.png", near_copy(b)),  # near, same split
        "val/b_reshot.jpg": save(d / "val/b_reshot.jpg", near_copy(b), quality=60),  # near, across
        "val/c.png": save(d / "val/c.png", c),                   # different image
    }
    recs = [ImageRecord(n, (192, 256), path=p, split=n.split("/")[0]) for n, p in files.items()]
    return validate(Dataset(LabelMap([]), recs))


def test_exact_duplicates_within_vs_across_splits(dup_result) -> None:
    dups = {f.where: f for f in dup_result.findings if f.code == "duplicate_image"}
    assert sorted(dups) == ["train/a_copy.png", "val/a_leak.png"]
    assert dups["train/a_copy.png"].severity == "warning" and "'train/a.png'" in dups["train/a_copy.png"].message
    assert dups["val/a_leak.png"].severity == "error" and "leakage" in dups["val/a_leak.png"].message


def test_near_duplicates_found_and_different_image_not(dup_result) -> None:
    near = {f.where: f for f in dup_result.findings if f.code == "near_duplicate"}
    assert sorted(near) == ["train/b_next.png", "val/b_reshot.jpg"], [str(f) for f in dup_result.findings]
    assert near["train/b_next.png"].severity == "warning"
    assert near["val/b_reshot.jpg"].severity == "error" and "'train/b" in near["val/b_reshot.jpg"].message
    assert "<= 6 of 64" in near["val/b_reshot.jpg"].message
    assert not any("c.png" in f.where for f in dup_result.findings)


def test_duplicates_can_be_switched_off(tmp_path: Path) -> None:
    img = smooth_image(1)
    recs = [ImageRecord(n, (192, 256), path=save(tmp_path / n, img)) for n in ("x.png", "y.png")]
    ds = Dataset(LabelMap([]), recs)
    assert [f.code for f in validate(ds).findings] == ["duplicate_image"]
    assert validate(ds, config=ValidateConfig(check_duplicates=False)).findings == []


def test_phash_robust_to_edits_and_distinct_between_images() -> None:
    g = cv2.cvtColor(smooth_image(5), cv2.COLOR_BGR2GRAY)
    h = phash(g)
    ok, buf = cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert hamming(h, phash(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE))) <= 2
    assert hamming(h, phash(cv2.cvtColor(near_copy(smooth_image(5)), cv2.COLOR_BGR2GRAY))) <= 6
    assert hamming(h, phash(cv2.resize(g, (128, 96)))) <= 2
    others = [phash(cv2.cvtColor(smooth_image(s), cv2.COLOR_BGR2GRAY)) for s in range(20, 30)]
    assert min(hamming(h, o) for o in others) > 6
    with pytest.raises(ValueError, match="expected a non-empty"):
        phash(np.zeros((0, 4), np.uint8))


def test_pair_search_matches_brute_force_and_scales() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (300, 3)).astype(np.uint64)
    hashes = np.concatenate([base, base[:50] ^ flips[:50, 0] ^ flips[:50, 1]])  # 50 pairs at distance <= 2
    i, j, d = near_duplicate_pairs(hashes, 6)
    brute = {(a, b) for a in range(len(hashes)) for b in range(a + 1, len(hashes))
             if hamming(int(hashes[a]), int(hashes[b])) <= 6}
    assert set(zip(i.tolist(), j.tolist())) == brute and len(brute) >= 50
    assert all(hamming(int(hashes[a]), int(hashes[b])) == k for a, b, k in zip(i, j, d))
    big = rng.integers(0, 2**63, 10_000, dtype=np.uint64)
    bi, _, _ = near_duplicate_pairs(big, 6)  # 5e7 pairs, vectorized
    assert len(bi) == 0
    with pytest.raises(ValueError, match="0..64"):
        near_duplicate_pairs(big[:2], 65)


# -- fixing ------------------------------------------------------------------------------------
def outside_dataset(path: Path | None = None) -> Dataset:
    boxes = [[-5, 2, 10, 12],    # partly outside left -> clipped to [0, 2, 10, 12]
             [55, 30, 70, 50],   # partly outside right/bottom -> [55, 30, 60, 40]
             [61, 5, 70, 9],     # entirely outside -> dropped by clip and drop
             [10, 10, 20, 20]]   # inside
    poly = Polygon((np.array([[-5, 2], [10, 2], [10, 12]], dtype=np.float64),))
    return Dataset(LabelMap(["a"]), [
        ImageRecord("o.png", (40, 60), boxes, [0, 0, 0, 0], path=path, shapes=[poly, None, None, None]),
        ImageRecord("fine.png", (40, 60), [[1, 1, 9, 9]], [0], path=path),
    ])


def test_fix_clip(tmp_path: Path) -> None:
    ds = outside_dataset()
    fixed, counts = apply_fix(ds, "clip")
    assert (counts.clipped, counts.dropped, counts.images) == (2, 1, 1)
    np.testing.assert_array_equal(fixed.images[0].boxes, [[0, 2, 10, 12], [55, 30, 60, 40], [10, 10, 20, 20]])
    clipped = fixed.images[0].shapes[0]
    assert clipped.rings[0][:, 0].min() == 0
    # true clipping keeps the inside part (200/3 px²); clamping the vertex to x=0 would give 50
    assert clipped.area() == pytest.approx(200 / 3)
    assert fixed.images[1] is ds.images[1]
    assert len(ds.images[0]) == 4 and ds.images[0].boxes[0, 0] == -5, "the input was modified"


def test_fix_drop_and_keep() -> None:
    ds = outside_dataset()
    fixed, counts = apply_fix(ds, "drop")
    assert (counts.clipped, counts.dropped, counts.images) == (0, 3, 1)
    np.testing.assert_array_equal(fixed.images[0].boxes, [[10, 10, 20, 20]])
    same, counts = apply_fix(ds, "keep")
    assert same is ds and counts.dropped == counts.clipped == 0


def test_fix_through_validate(tmp_path: Path) -> None:
    img = write_image(tmp_path / "o.png", (40, 60))
    res = validate(outside_dataset(img), config=ValidateConfig(fix="clip"))
    assert (res.fixes.policy, res.fixes.clipped, res.fixes.dropped) == ("clip", 2, 1)
    assert res.fixed.num_objects == 4 and res.dataset.num_objects == 5
    outside = sorted(f.severity for f in res.findings if f.code == "box_outside")
    assert outside == ["error", "warning", "warning"]


# -- configuration, reader findings, bad input -------------------------------------------------
def test_box_small_thresholds_are_configurable() -> None:
    ds = Dataset(LabelMap(["a"]), [ImageRecord("s.png", (100, 100), [[0, 0, 3, 50], [0, 0, 6, 6], [0, 0, 8, 8]],
                                               [0, 0, 0])])
    cfg = ValidateConfig(check_duplicates=False)
    small = [f.where for f in validate(ds, config=cfg).findings if f.code == "box_small"]
    assert small == []  # defaults: a 3x50 scratch-like box is fine (side >= 2, area >= 16)
    cfg = ValidateConfig(min_box_side=4, check_duplicates=False)
    small = [f.where for f in validate(ds, config=cfg).findings if f.code == "box_small"]
    assert small == ["s.png:object[0] (a)"]  # 3 px side; 6x6 = 36 px² passes
    cfg = ValidateConfig(min_box_side=2, min_box_area=50, check_duplicates=False)
    small = [f.where for f in validate(ds, config=cfg).findings if f.code == "box_small"]
    assert small == ["s.png:object[1] (a)"]  # 36 px² < 50; the 3x50 box passes a 2 px side


@pytest.mark.parametrize("kwargs", [{"fix": "cut"}, {"near_dup_threshold": 65}, {"min_box_side": -1}])
def test_bad_config_is_a_config_error(kwargs) -> None:
    with pytest.raises(ConfigError):
        ValidateConfig(**kwargs)


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeVisionError, match="does not exist"):
        validate(tmp_path / "nope", fmt="coco")


def test_reader_findings_are_merged_without_double_counts() -> None:
    reader = [
        Finding("box_nan", "error", "l/a.txt:line 1", "nan"),             # object kept: validate says it
        Finding("box_nan", "error", "l/a.txt:line 2", "nan"),             # object dropped (bad class too)
        Finding("class_unknown", "error", "l/a.txt:line 2", "class 7"),
        Finding("box_partly_outside", "warning", "l/a.txt", "2 objects"),
        Finding("image_corrupt", "error", "ann/a.xml", "image is not readable: /d/img/a.jpg"),
        Finding("image_corrupt", "error", "ann/b.xml", "image is not readable: /d/img/ba.jpg"),
        Finding("label_malformed", "error", "l/b.txt:line 3", "5 columns"),
    ]
    checks = [Finding("box_nan", "error", "a.jpg:object[0]", "nan"),
              Finding("image_corrupt", "error", "img/a.jpg", "cv2 cannot decode")]
    kept = merge_reader_findings(reader, checks)
    assert [(f.code, f.where) for f in kept] == [
        ("box_nan", "l/a.txt:line 2"), ("class_unknown", "l/a.txt:line 2"),
        ("image_corrupt", "ann/b.xml"), ("label_malformed", "l/b.txt:line 3")]


def test_yolo_reader_findings_keep_their_codes(tmp_path: Path) -> None:
    write_image(tmp_path / "images/train/a.png", (40, 40))
    (tmp_path / "labels/train").mkdir(parents=True)
    (tmp_path / "labels/train/a.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n0 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [a]\n")
    res = validate(tmp_path / "data.yaml")
    codes = sorted(f.code for f in res.reader_findings if f.severity == "error")
    assert codes == ["class_unknown", "label_malformed"]
    assert res.dataset.num_objects == 1 and res.format == "yolo"
