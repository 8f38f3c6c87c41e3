"""The canonical data model: every reader produces it, every writer consumes it.

One `Dataset` holds a `LabelMap` and a list of `ImageRecord`. Each record keeps a whole image's
objects as arrays (``boxes (N, 4)`` xyxy absolute pixels, ``class_ids (N,)``), optional per-object
shapes and attributes, and its split. Images without objects are ordinary records with ``N = 0``.
Ground truth and predictions are the same type (predictions carry ``scores``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgevision.core.boxes import as_boxes
from edgevision.core.errors import DatasetError, UnknownNameError, short_repr
from edgevision.core.geometry import Shape

SPLITS = ("train", "val", "test")
"""Split names writers know; other names are kept as given."""

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "minival": "val",
    "test": "test", "testing": "test", "testdev": "test",
}
"""Words that tools and datasets use for the three canonical splits (lower case)."""


@dataclass
class LabelMap:
    """Class names in canonical order (ids ``0..K-1``) and the source's own ids for round trips.

    Attributes:
        names: class names; the canonical id of ``names[i]`` is ``i``.
        source_ids: the id each class had in the source (COCO category id, label-map pixel
            value, ...), same length as ``names``; None when the source had no ids of its own.
        extra: per-class extra fields kept for round trips (e.g. COCO ``supercategory``).
    """

    names: list[str]
    source_ids: list[int] | None = None
    extra: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        dup = [n for n, c in Counter(self.names).items() if c > 1]
        if dup:
            raise DatasetError(f"label map: class names must be unique, got duplicates {short_repr(dup, 120)}")
        if self.source_ids is not None and len(self.source_ids) != len(self.names):
            raise DatasetError(
                f"label map: expected {len(self.names)} source ids, got {len(self.source_ids)}"
            )

    def __len__(self) -> int:
        return len(self.names)

    def id_of(self, name: str) -> int:
        """Canonical id of a class name.

        Raises:
            UnknownNameError: listing the known classes and the closest match.
        """
        try:
            return self.names.index(name)
        except ValueError:
            raise UnknownNameError("class", name, self.names) from None

    def add(self, name: str, source_id: int | None = None) -> int:
        """Append a class (when readers discover classes as they go) and return its id."""
        if name in self.names:
            return self.names.index(name)
        self.names.append(name)
        if self.source_ids is not None:
            self.source_ids.append(source_id if source_id is not None else len(self.names) - 1)
        if self.extra is not None:
            self.extra.append({})
        return len(self.names) - 1


@dataclass(eq=False)
class ImageRecord:
    """One image and all its objects.

    Attributes:
        name: the image's relative POSIX path inside the dataset (unique key; writers reuse it).
        path: where the image file is on disk, or None when the source has no image.
        size_hw: image height and width in pixels.
        boxes: ``(N, 4)`` float64 xyxy in absolute pixels.
        class_ids: ``(N,)`` int64 canonical class ids.
        scores: ``(N,)`` float32 confidences for predictions, None for ground truth.
        shapes: per-object polygon / polyline / RLE or None, length N, or None when no object has one.
        attributes: per-object dicts (``difficult``, ``truncated``, ``iscrowd``, ``occluded``, free
            form), length N, or None when no object has any.
        split: ``"train"``, ``"val"``, ``"test"``, another split name, or None.
        meta: per-image extras kept for round trips (source image id, ...).
    """

    name: str
    size_hw: tuple[int, int]
    boxes: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4)))
    class_ids: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    path: Path | None = None
    scores: NDArray[np.float32] | None = None
    shapes: list[Shape | None] | None = None
    attributes: list[dict[str, Any]] | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.boxes = as_boxes(self.boxes)
        except ValueError as e:
            raise DatasetError(str(e), where=self.name) from e
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        self.size_hw = (int(self.size_hw[0]), int(self.size_hw[1]))
        if self.size_hw[0] <= 0 or self.size_hw[1] <= 0:
            raise DatasetError(f"image size must be positive, got h={self.size_hw[0]} w={self.size_hw[1]}", where=self.name)
        if len(self.class_ids) != n:
            raise DatasetError(f"expected {n} class ids for {n} boxes, got {len(self.class_ids)}", where=self.name)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
            if len(self.scores) != n:
                raise DatasetError(f"expected {n} scores, got {len(self.scores)}", where=self.name)
        for attr in ("shapes", "attributes"):
            v = getattr(self, attr)
            if v is not None and len(v) != n:
                raise DatasetError(f"expected {n} {attr}, got {len(v)}", where=self.name)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def is_background(self) -> bool:
        """True for an image with no objects (a defect-free image)."""
        return len(self.boxes) == 0

    def object_attributes(self, i: int) -> dict[str, Any]:
        """Attributes of object ``i`` (an empty dict when there are none)."""
        return self.attributes[i] if self.attributes is not None else {}

    def subset(self, keep: ArrayLike) -> ImageRecord:
        """A copy holding only the objects selected by the boolean mask or index array ``keep``."""
        idx = np.arange(len(self))[np.asarray(keep)] if len(self) else np.zeros(0, dtype=int)
        return ImageRecord(
            name=self.name,
            size_hw=self.size_hw,
            boxes=self.boxes[idx],
            class_ids=self.class_ids[idx],
            path=self.path,
            scores=None if self.scores is None else self.scores[idx],
            shapes=None if self.shapes is None else [self.shapes[i] for i in idx],
            attributes=None if self.attributes is None else [self.attributes[i] for i in idx],
            split=self.split,
            meta=dict(self.meta),
        )


class ObjectList:
    """Builds one image's arrays object by object (readers append, then call `record`)."""

    def __init__(self) -> None:
        self.boxes: list[list[float]] = []
        self.class_ids: list[int] = []
        self.scores: list[float] = []
        self.shapes: list[Shape | None] = []
        self.attributes: list[dict[str, Any]] = []

    def add(
        self,
        box_xyxy: ArrayLike,
        class_id: int,
        *,
        shape: Shape | None = None,
        attributes: dict[str, Any] | None = None,
        score: float | None = None,
    ) -> None:
        self.boxes.append([float(v) for v in np.asarray(box_xyxy, dtype=np.float64).reshape(4)])
        self.class_ids.append(int(class_id))
        self.shapes.append(shape)
        self.attributes.append(dict(attributes) if attributes else {})
        if score is not None:
            self.scores.append(float(score))

    def __len__(self) -> int:
        return len(self.boxes)

    def record(self, name: str, size_hw: tuple[int, int], **kwargs: Any) -> ImageRecord:
        """Make the `ImageRecord`; shapes / attributes / scores are None when no object has any."""
        if self.scores and len(self.scores) != len(self.boxes):
            raise DatasetError(f"expected a score for each of {len(self.boxes)} objects, got {len(self.scores)}", where=name)
        return ImageRecord(
            name=name,
            size_hw=size_hw,
            boxes=np.array(self.boxes, dtype=np.float64).reshape(-1, 4),
            class_ids=np.array(self.class_ids, dtype=np.int64),
            scores=np.array(self.scores, dtype=np.float32) if self.scores else None,
            shapes=self.shapes if any(s is not None for s in self.shapes) else None,
            attributes=self.attributes if any(self.attributes) else None,
            **kwargs,
        )


@dataclass
class Dataset:
    """A whole dataset in canonical form.

    Attributes:
        labels: the class names and their source ids.
        images: one record per image, background images included.
        root: the folder the dataset was read from (None for a generated one).
        meta: dataset-level facts: ``format``, ``recipe``, ``licence``, ``info`` kept for round trips.
    """

    labels: LabelMap
    images: list[ImageRecord] = field(default_factory=list)
    root: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.images)

    @property
    def num_objects(self) -> int:
        return sum(len(r) for r in self.images)

    @property
    def splits(self) -> list[str]:
        """Split names present, in the order train, val, test, then others; ``[]`` when unsplit."""
        present = {r.split for r in self.images if r.split is not None}
        return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))

    def split(self, name: str | None) -> list[ImageRecord]:
        return [r for r in self.images if r.split == name]

    def class_counts(self) -> dict[str, int]:
        """Objects per class name (classes with no object included, as 0)."""
        counts = np.bincount(
            np.concatenate([r.class_ids for r in self.images] or [np.zeros(0, np.int64)]),
            minlength=len(self.labels),
        )
        return {n: int(c) for n, c in zip(self.labels.names, counts)}

    def check(self) -> None:
        """Check cross-record invariants: unique names, class ids inside the label map.

        Raises:
            DatasetError: naming the first offending image.
        """
        seen: set[str] = set()
        k = len(self.labels)
        for r in self.images:
            if r.name in seen:
                raise DatasetError("image name appears twice in the dataset", where=r.name)
            seen.add(r.name)
            if len(r) and (r.class_ids.min() < 0 or r.class_ids.max() >= k):
                raise DatasetError(
                    f"class id {int(r.class_ids.max())} is outside the label map of {k} classes", where=r.name
                )
