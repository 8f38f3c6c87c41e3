"""`edgevision.train.imgsz`: the training size read back from a checkpoint, one rule for prediction and export."""

from __future__ import annotations

from edgevision.train.imgsz import trained_imgsz, working_imgsz


def test_trained_size_from_either_backend() -> None:
    assert trained_imgsz({"train_args": {"imgsz": 256}}) == 256
    assert trained_imgsz({"train_args": {"imgsz": [480, 640]}}) == 640  # rectangular training: the larger side
    assert trained_imgsz({"edgevision": {"imgsz": 320, "names": ["a"]}}) == 320
    for unknown in (None, {}, {"train_args": {}}, {"train_args": {"imgsz": True}}, {"train_args": {"imgsz": "640"}},
                    {"train_args": {"imgsz": -1}}, {"train_args": None}, {"edgevision": {"imgsz": []}}):
        assert trained_imgsz(unknown) is None, unknown


def test_working_size_is_the_request_then_the_training_size_then_the_default() -> None:
    assert working_imgsz(128, {"train_args": {"imgsz": 256}}, "ultralytics") == 128
    assert working_imgsz(None, {"train_args": {"imgsz": 256}}, "ultralytics") == 256
    assert working_imgsz(None, None, "ultralytics") == 640
    assert working_imgsz(None, {"edgevision": {}}, "torchvision") == 320
