import numpy as np
import pytest

from edgevision.core import Dataset, DatasetError, ImageRecord, LabelMap, ObjectList, Polygon, UnknownNameError


def test_record_validates_shapes_with_expected_and_got():
    with pytest.raises(DatasetError, match="a.jpg: expected 2 class ids for 2 boxes, got 1"):
        ImageRecord("a.jpg", (10, 10), boxes=[[0, 0, 1, 1], [1, 1, 2, 2]], class_ids=[0])
    with pytest.raises(DatasetError, match=r"expected shape \(N, 4\)"):
        ImageRecord("a.jpg", (10, 10), boxes=[[0, 0, 1]], class_ids=[0])
    with pytest.raises(DatasetError, match="image size must be positive"):
        ImageRecord("a.jpg", (0, 10))


def test_background_record_and_subset():
    r = ImageRecord("bg.png", (5, 6))
    assert r.is_background and len(r) == 0 and r.boxes.shape == (0, 4)
    objs = ObjectList()
    objs.add([0, 0, 2, 2], 0, attributes={"difficult": True})
    objs.add([1, 1, 3, 3], 1, shape=Polygon.from_flat([1, 1, 3, 1, 3, 3]))
    rec = objs.record("x.jpg", (4, 4), split="val")
    assert rec.attributes == [{"difficult": True}, {}] and rec.shapes[0] is None
    sub = rec.subset([False, True])
    assert len(sub) == 1 and sub.class_ids.tolist() == [1] and sub.split == "val"
    assert isinstance(sub.shapes[0], Polygon)


def test_labelmap_unknown_class_suggests():
    lm = LabelMap(["crack", "squat"])
    with pytest.raises(UnknownNameError, match="Did you mean 'crack'"):
        lm.id_of("crak")
    with pytest.raises(DatasetError, match="duplicates"):
        LabelMap(["a", "a"])
    lm2 = LabelMap(["a"], source_ids=[7])
    assert lm2.add("b") == 1 and lm2.source_ids == [7, 1]


def test_dataset_counts_splits_and_check():
    ds = Dataset(
        LabelMap(["a", "b", "c"]),
        [
            ImageRecord("1.jpg", (10, 10), boxes=[[0, 0, 1, 1]], class_ids=[1], split="val"),
            ImageRecord("2.jpg", (10, 10), split="train"),
            ImageRecord("3.jpg", (10, 10), split="custom"),
        ],
    )
    assert ds.splits == ["train", "val", "custom"]
    assert ds.class_counts() == {"a": 0, "b": 1, "c": 0}
    ds.check()
    ds.images.append(ImageRecord("1.jpg", (10, 10)))
    with pytest.raises(DatasetError, match="1.jpg: image name appears twice"):
        ds.check()
    bad = Dataset(LabelMap(["a"]), [ImageRecord("z.jpg", (3, 3), boxes=[[0, 0, 1, 1]], class_ids=[4])])
    with pytest.raises(DatasetError, match="class id 4 is outside the label map of 1 classes"):
        bad.check()


def test_polygon_and_rle_shapes():
    from edgevision.core import RLE

    poly = Polygon.from_flat([[0, 0, 10, 0, 10, 10, 0, 10]])
    assert poly.area() == 100.0
    np.testing.assert_allclose(poly.bbox_xyxy(), [0, 0, 10, 10])
    rle = poly.to_rle((20, 30))
    assert rle.area() == 100.0 and rle.decode().shape == (20, 30)
    unc = rle.to_coco(compressed=False)
    assert sum(unc["counts"]) == 600
    back = RLE.from_coco(unc)
    assert np.array_equal(back.decode(), rle.decode())
    with pytest.raises(ValueError, match="runs sum to 5"):
        RLE.from_coco({"size": [2, 3], "counts": [1, 4]})
    with pytest.raises(ValueError, match="at least 3 points"):
        Polygon.from_flat([0, 0, 1, 1])
