"""Calibration images: the train split only, drawn at random (seeded, stratified by class), preprocessed
by the runtime's `Preprocessor` exactly as inference does."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from onnxruntime.quantization import CalibrationDataReader

from edgevision.core.dataset import Dataset, ImageRecord
from edgevision.core.errors import DatasetError
from edgevision.runtime.images import decode_image, to_uint8
from edgevision.runtime.metadata import ModelMetadata
from edgevision.runtime.preprocess import Preprocessor

__all__ = ["CalibrationReader", "check_classes", "select_calibration", "train_records"]


def train_records(dataset: Dataset, where: str) -> list[ImageRecord]:
    """The records of the train split (never val / test).

    Raises:
        DatasetError: the dataset has no splits, or no train split.
    """
    splits = {r.split for r in dataset.images}
    if splits <= {None}:
        raise DatasetError(f"{where}: dataset has no splits; calibration uses the train split only (never the images "
                           "accuracy is judged on): run `edgevision split` first")
    train = [r for r in dataset.images if r.split == "train"]
    if not train:
        found = ", ".join(sorted(str(s) for s in splits))
        raise DatasetError(f"{where}: dataset has no train split (splits: {found}); calibration uses the train split "
                           "only: run `edgevision split` first")
    return train


def check_classes(dataset: Dataset, meta: ModelMetadata, where: str) -> None:
    """Raise `DatasetError` unless the dataset's classes are the model's (the same names; the order of a
    format's label map, e.g. VOC's sorted names, does not matter for calibration)."""
    ds, model = list(dataset.labels.names), list(meta.names)
    if set(ds) != set(model):
        extra, missing = sorted(set(ds) - set(model)), sorted(set(model) - set(ds))
        detail = f"dataset-only {extra}, model-only {missing}"
        raise DatasetError(f"{where}: dataset classes {ds} differ from the model's {model} ({detail}); calibrate "
                           "with the dataset the model was trained on (or remap it with `edgevision remap`)")


def select_calibration(records: Sequence[ImageRecord], n: int, seed: int) -> list[ImageRecord]:
    """Draw ``min(n, len(records))`` images at random, stratified by class.

    Each image counts for its rarest class (by images of the pool; background images form a stratum
    of their own); strata are shuffled with ``seed`` and taken in turn, one image each, so every class
    is as evenly represented as the data allow. The same records and seed give the same choice,
    whatever their order.
    """
    pool = sorted(records, key=lambda r: r.name)
    rng = np.random.default_rng(seed)
    counts: dict[int, int] = {}
    for r in pool:
        for c in set(int(c) for c in r.class_ids):
            counts[c] = counts.get(c, 0) + 1
    strata: dict[int, list[ImageRecord]] = {}
    for r in pool:
        ids = set(int(c) for c in r.class_ids)
        key = min(ids, key=lambda c: (counts[c], c)) if ids else -1
        strata.setdefault(key, []).append(r)
    queues = []
    for key in sorted(strata):
        items = strata[key]
        queues.append([items[i] for i in rng.permutation(len(items))])
    rng.shuffle(queues)  # type: ignore[arg-type]
    chosen: list[ImageRecord] = []
    want = min(int(n), len(pool))
    depth = 0
    while len(chosen) < want:
        for q in queues:
            if depth < len(q) and len(chosen) < want:
                chosen.append(q[depth])
        depth += 1
    return chosen


def load_tensor(rec: ImageRecord, pre: Preprocessor, uint16: str) -> NDArray[np.floating]:
    """The ``(1, 3, H, W)`` input tensor of one record, as `edgevision.runtime.Detector.preprocess` builds it."""
    if rec.path is None:
        raise DatasetError("calibration image has no image file; give a dataset with its images", where=rec.name)
    return pre(to_uint8(decode_image(Path(rec.path)), uint16))[0]


class CalibrationReader(CalibrationDataReader):
    """An onnxruntime ``CalibrationDataReader``: one preprocessed image per ``get_next`` (lazy, low memory)."""

    def __init__(self, records: Sequence[ImageRecord], meta: ModelMetadata) -> None:
        self.records = list(records)
        self.meta = meta
        self.pre = Preprocessor(meta.input)
        self._it: Iterator[dict[str, Any]] = self._feeds()

    def _feeds(self) -> Iterator[dict[str, Any]]:
        for rec in self.records:
            yield {self.meta.input.name: load_tensor(rec, self.pre, self.meta.input.uint16)}

    def __len__(self) -> int:
        return len(self.records)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._feeds()

    def set_range(self, start_index: int, end_index: int) -> None:  # onnxruntime's strided calibration API
        self._it = iter([{self.meta.input.name: load_tensor(r, self.pre, self.meta.input.uint16)}
                         for r in self.records[start_index:end_index]])
