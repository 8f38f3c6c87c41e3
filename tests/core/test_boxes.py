import numpy as np
import pytest

from edgevision.core.boxes import (
    as_boxes,
    box_area,
    box_problems,
    clip_xyxy,
    cxcywh_norm_to_xyxy,
    points_to_xyxy,
    xywh_to_xyxy,
    xyxy_to_cxcywh_norm,
    xyxy_to_xywh,
)


def test_xywh_round_trip():
    xyxy = np.array([[10.5, 20.0, 30.25, 60.0], [0, 0, 1, 1]])
    np.testing.assert_allclose(xywh_to_xyxy(xyxy_to_xywh(xyxy)), xyxy)
    np.testing.assert_allclose(xyxy_to_xywh(xyxy)[0], [10.5, 20.0, 19.75, 40.0])


def test_cxcywh_norm_round_trip_and_values():
    size_hw = (200, 400)
    xyxy = np.array([[0, 0, 400, 200], [100, 50, 140, 90]], dtype=float)
    norm = xyxy_to_cxcywh_norm(xyxy, size_hw)
    np.testing.assert_allclose(norm[0], [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(norm[1], [0.3, 0.35, 0.1, 0.2])
    np.testing.assert_allclose(cxcywh_norm_to_xyxy(norm, size_hw), xyxy, atol=1e-9)


def test_empty_and_bad_shapes():
    assert as_boxes([]).shape == (0, 4)
    assert xyxy_to_cxcywh_norm([], (10, 10)).shape == (0, 4)
    with pytest.raises(ValueError, match=r"expected shape \(N, 4\), got \(2, 3\)"):
        as_boxes(np.zeros((2, 3)))


def test_area_clip_points():
    b = np.array([[-5, -5, 5, 5], [8, 8, 4, 12]], dtype=float)
    np.testing.assert_allclose(box_area(b), [100, 0])
    np.testing.assert_allclose(clip_xyxy(b, (10, 10))[0], [0, 0, 5, 5])
    np.testing.assert_allclose(points_to_xyxy([[3, 4], [1, 9], [7, 2]]), [[1, 2, 7, 9]])
    with pytest.raises(ValueError):
        points_to_xyxy(np.zeros((0, 2)))


def test_box_problems_codes():
    boxes = [[0, 0, 10, 10], [np.nan, 0, 1, 1], [5, 5, 2, 8], [3, 3, 3, 9], [50, 50, 60, 60]]
    found = {(i, code) for i, code, _ in box_problems(boxes, (20, 20))}
    assert found == {(1, "box_nan"), (2, "box_inverted"), (3, "box_empty"), (4, "box_outside")}
    # without an image size, outside-image is not judged
    assert {c for _, c, _ in box_problems(boxes, None)} == {"box_nan", "box_inverted", "box_empty"}


def test_box_masks_agree_with_box_problems():
    from edgevision.core.boxes import box_masks

    boxes = [[0, 0, 10, 10], [np.nan, 0, 1, 1], [5, 5, 2, 8], [3, 3, 3, 9], [50, 50, 60, 60], [-3, 2, 5, 5], [-0.5, 1, 4, 4]]
    invalid, outside, partly = box_masks(boxes, 20, 20, tol=1.0)
    assert invalid.tolist() == [False, True, True, True, False, False, False]
    assert outside.tolist() == [False, False, False, False, True, False, False]
    assert partly.tolist() == [False, False, False, False, False, True, False]  # -0.5 is within tol
    reported = {i for i, _, _ in box_problems(boxes, (20, 20))}
    assert reported == set(np.flatnonzero(invalid | outside).tolist())
