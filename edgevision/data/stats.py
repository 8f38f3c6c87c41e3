"""Dataset statistics: counts, boxes per image, box sizes, image sizes, background images.

Everything is computed with numpy over the dataset's objects concatenated once (`FlatObjects`), so
20k images with 200k boxes take well under a second. Per split and overall:

* objects and images per class;
* boxes per image (`Summary` plus a histogram with bins ``0, 1, 2, 3, 4, 5-9, 10+``);
* box sizes in COCO terms per class: ``small`` when ``area < 32**2``, ``medium`` when
  ``area < 96**2``, else ``large``, with ``area = w * h`` of the box (what pycocotools uses for
  bbox-only annotations; note that COCOeval's ranges are inclusive, so a box of exactly ``32**2``
  counts there as both small and medium, while here it is medium);
* box sizes relative to the image (``area / image area``, ``w / W``, ``h / H``), box width / height in
  pixels and box aspect ratios ``w / h``;
* image sizes (distinct sizes with counts, smallest and largest side);
* background images (no objects): count and fraction.

>>> from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
>>> ds = Dataset(LabelMap(["a"]), [ImageRecord("x.png", (100, 100), [[0, 0, 10, 10]], [0]),
...                                ImageRecord("y.png", (100, 100))])
>>> s = dataset_stats(ds)
>>> s.overall.objects, s.overall.background_images, s.overall.per_class[0].small
(1, 1, 1)

`DatasetStats.to_dict` gives plain JSON types under a versioned ``"schema"`` key; `write_plots` draws
the class histogram and the box-size scatter as PNG (needs the ``plots`` extra: matplotlib).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgevision.core.dataset import Dataset
from edgevision.core.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "BOXES_PER_IMAGE_BINS",
    "LARGE_AREA",
    "MEDIUM_AREA",
    "SCHEMA",
    "ClassStats",
    "DatasetStats",
    "FlatObjects",
    "SplitStats",
    "Summary",
    "dataset_stats",
    "flatten",
    "size_category",
    "write_plots",
]

SCHEMA = "edgevision.stats/1"
"""Version of the JSON layout of `DatasetStats.to_dict`; bumped when a key changes meaning or goes."""

MEDIUM_AREA = 32.0**2
"""A box is COCO ``small`` when its area is below this (pixels squared)."""
LARGE_AREA = 96.0**2
"""A box is COCO ``medium`` when its area is below this, else ``large``."""
SIZE_NAMES = ("small", "medium", "large")
BOXES_PER_IMAGE_BINS = ("0", "1", "2", "3", "4", "5-9", "10+")
"""Histogram bins of the number of boxes on an image."""
ALL = "all"
"""The key of the whole-dataset section next to the split names."""

PLOTS_HINT = "pip install 'edgevision[plots]'"


@dataclass(frozen=True)
class Summary:
    """A distribution in a few numbers (all None when it is empty).

    Attributes:
        count: number of values.
        min, p05, p25, median, p75, p95, max: quantiles (linear interpolation, numpy's default).
        mean: arithmetic mean.
    """

    count: int
    min: float | None
    p05: float | None
    p25: float | None
    median: float | None
    p75: float | None
    p95: float | None
    max: float | None
    mean: float | None

    @classmethod
    def of(cls, values: NDArray[Any]) -> Summary:
        """Summarise a 1-D array of values."""
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size == 0:
            return cls(0, *([None] * 8))
        q = np.quantile(v, (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0))
        return cls(int(v.size), *(float(x) for x in q), float(v.mean()))


@dataclass(frozen=True)
class ClassStats:
    """One class in one section (a split or the whole dataset).

    Attributes:
        id, name: the canonical class id and name.
        objects: boxes of the class; images: images holding at least one.
        small, medium, large: boxes per COCO area range (see `size_category`).
    """

    id: int
    name: str
    objects: int
    images: int
    small: int
    medium: int
    large: int


@dataclass(frozen=True)
class ImageSize:
    """One distinct image size and how many images have it."""

    height: int
    width: int
    count: int


@dataclass(frozen=True)
class SplitStats:
    """The statistics of a set of images (one split, or all of them).

    Attributes:
        images, objects: counts.
        background_images: images with no object; background_fraction: their share (0 when empty).
        per_class: one `ClassStats` per class of the label map, in id order (zeros included).
        boxes_per_image: `Summary` of the object count per image (background images count as 0).
        boxes_per_image_hist: images per bin of `BOXES_PER_IMAGE_BINS`.
        box_sizes: boxes per COCO area range over all classes: ``{"small": n, ...}``.
        box_width, box_height: box sides in pixels; box_aspect: ``w / h`` (boxes with ``h > 0``).
        relative_area: ``box area / image area``; relative_width / relative_height: ``w / W``, ``h / H``.
        image_sizes: distinct sizes, most frequent first (ties: larger first).
        image_min_hw, image_max_hw: smallest and largest height and width seen (None when empty).
        image_aspect: `Summary` of image ``W / H``.
    """

    images: int
    objects: int
    background_images: int
    background_fraction: float
    per_class: list[ClassStats]
    boxes_per_image: Summary
    boxes_per_image_hist: dict[str, int]
    box_sizes: dict[str, int]
    box_width: Summary
    box_height: Summary
    box_aspect: Summary
    relative_area: Summary
    relative_width: Summary
    relative_height: Summary
    image_sizes: list[ImageSize]
    image_min_hw: tuple[int, int] | None
    image_max_hw: tuple[int, int] | None
    image_aspect: Summary


@dataclass(frozen=True)
class DatasetStats:
    """Statistics of a whole dataset.

    Attributes:
        images, objects, classes: totals (``classes`` = size of the label map).
        class_names: the label map, id order.
        overall: the whole dataset; splits: one section per split name (``{}`` when unsplit;
            images without a split go under ``"(none)"`` when others have one).
    """

    images: int
    objects: int
    classes: int
    class_names: list[str]
    overall: SplitStats
    splits: dict[str, SplitStats]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, with ``"schema": SCHEMA`` first."""
        return {"schema": SCHEMA, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class FlatObjects:
    """A dataset's objects as flat arrays (what every statistic is computed from).

    Attributes:
        image_hw: ``(I, 2)`` int64 image height and width.
        counts: ``(I,)`` int64 objects per image.
        split: ``(I,)`` object array of split names (None when unsplit).
        boxes: ``(N, 4)`` float64 xyxy, all images concatenated in dataset order.
        class_ids: ``(N,)`` int64.
        image_of: ``(N,)`` int64 index of each object's image.
    """

    image_hw: NDArray[np.int64]
    counts: NDArray[np.int64]
    split: NDArray[np.object_]
    boxes: NDArray[np.float64]
    class_ids: NDArray[np.int64]
    image_of: NDArray[np.int64]

    @property
    def wh(self) -> NDArray[np.float64]:
        """``(N, 2)`` box width and height in pixels (negative sides count as 0)."""
        return np.clip(self.boxes[:, 2:4] - self.boxes[:, 0:2], 0.0, None)


def flatten(dataset: Dataset) -> FlatObjects:
    """Concatenate the dataset's per-image arrays once."""
    recs = dataset.images
    counts = np.fromiter((len(r) for r in recs), dtype=np.int64, count=len(recs))
    hw = np.array([r.size_hw for r in recs], dtype=np.int64).reshape(-1, 2)
    split = np.array([r.split for r in recs], dtype=object)
    boxes = np.concatenate([r.boxes for r in recs] + [np.zeros((0, 4))]).astype(np.float64, copy=False)
    cls = np.concatenate([r.class_ids for r in recs] + [np.zeros(0, np.int64)]).astype(np.int64, copy=False)
    image_of = np.repeat(np.arange(len(recs), dtype=np.int64), counts)
    return FlatObjects(hw, counts, split, boxes, cls, image_of)


def size_category(area: NDArray[np.float64]) -> NDArray[np.int64]:
    """COCO area range of each box: 0 small (``< 32**2``), 1 medium (``< 96**2``), 2 large."""
    return np.searchsorted(np.array([MEDIUM_AREA, LARGE_AREA]), np.asarray(area, dtype=np.float64), side="right")


def dataset_stats(dataset: Dataset) -> DatasetStats:
    """Compute `DatasetStats` for ``dataset`` (per split and overall)."""
    flat = flatten(dataset)
    names = list(dataset.labels.names)
    overall = _section(flat, np.ones(len(flat.counts), dtype=bool), names)
    splits: dict[str, SplitStats] = {}
    if dataset.splits:
        for s in [*dataset.splits, None]:
            mask = flat.split == s if s is not None else np.array([x is None for x in flat.split], dtype=bool)
            if s is not None or mask.any():
                splits[s if s is not None else "(none)"] = _section(flat, mask, names)
    return DatasetStats(len(flat.counts), int(flat.counts.sum()), len(names), names, overall, splits)


def _section(flat: FlatObjects, image_mask: NDArray[np.bool_], names: list[str]) -> SplitStats:
    """Statistics of the images selected by ``image_mask`` (``(I,)`` bool)."""
    k = len(names)
    counts = flat.counts[image_mask]
    obj = image_mask[flat.image_of]
    cls = flat.class_ids[obj]
    image_of = flat.image_of[obj]
    wh = flat.wh[obj]
    img_hw = flat.image_hw[flat.image_of[obj]].astype(np.float64)
    area = wh[:, 0] * wh[:, 1]
    cat = size_category(area)
    by_size = np.bincount(cls * 3 + cat, minlength=k * 3).reshape(k, 3)
    objects = np.bincount(cls, minlength=k)
    pairs = np.unique(image_of * max(k, 1) + cls)
    images = np.bincount(pairs % max(k, 1), minlength=k) if k else np.zeros(0, np.int64)
    per_class = [
        ClassStats(i, names[i], int(objects[i]), int(images[i]), *(int(x) for x in by_size[i])) for i in range(k)
    ]
    hist = np.bincount(np.where(counts >= 10, 6, np.minimum(counts, 5)), minlength=7)
    n_img = int(image_mask.sum())
    background = int((counts == 0).sum())
    hw = flat.image_hw[image_mask]
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = wh[wh[:, 1] > 0, 0] / wh[wh[:, 1] > 0, 1]
    return SplitStats(
        images=n_img,
        objects=int(counts.sum()),
        background_images=background,
        background_fraction=background / n_img if n_img else 0.0,
        per_class=per_class,
        boxes_per_image=Summary.of(counts),
        boxes_per_image_hist={b: int(n) for b, n in zip(BOXES_PER_IMAGE_BINS, hist)},
        box_sizes={n: int(c) for n, c in zip(SIZE_NAMES, np.bincount(cat, minlength=3))},
        box_width=Summary.of(wh[:, 0]),
        box_height=Summary.of(wh[:, 1]),
        box_aspect=Summary.of(aspect),
        relative_area=Summary.of(area / (img_hw[:, 0] * img_hw[:, 1])),
        relative_width=Summary.of(wh[:, 0] / img_hw[:, 1]),
        relative_height=Summary.of(wh[:, 1] / img_hw[:, 0]),
        image_sizes=_image_sizes(hw),
        image_min_hw=(int(hw[:, 0].min()), int(hw[:, 1].min())) if n_img else None,
        image_max_hw=(int(hw[:, 0].max()), int(hw[:, 1].max())) if n_img else None,
        image_aspect=Summary.of(hw[:, 1] / hw[:, 0]) if n_img else Summary.of(np.zeros(0)),
    )


def _image_sizes(hw: NDArray[np.int64]) -> list[ImageSize]:
    if not len(hw):
        return []
    sizes, n = np.unique(hw, axis=0, return_counts=True)
    order = np.lexsort((-sizes[:, 0] * sizes[:, 1], -n))
    return [ImageSize(int(sizes[i, 0]), int(sizes[i, 1]), int(n[i])) for i in order]


# -- plots -------------------------------------------------------------------------------------------
def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display), or a ConfigError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(f"plots need matplotlib, which is not installed: {PLOTS_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_plots_available() -> None:
    """Raise the one-line ConfigError of `write_plots` now, before any long work, when matplotlib is missing."""
    _pyplot()


def write_plots(dataset: Dataset, stats: DatasetStats, folder: Path | str, *, max_points: int = 50_000) -> list[Path]:
    """Write ``class_histogram.png`` and ``box_sizes.png`` into ``folder`` (created).

    Args:
        dataset: the dataset `stats` was computed from (the scatter needs every box).
        stats: its statistics.
        folder: output folder.
        max_points: the scatter draws at most this many boxes (a seeded random sample beyond).

    Returns:
        The paths written.

    Raises:
        ConfigError: matplotlib is not installed (``pip install 'edgevision[plots]'``).
    """
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "class_histogram.png", folder / "box_sizes.png"]
    _class_histogram(plt, stats, paths[0])
    _box_scatter(plt, flatten(dataset), stats.class_names, paths[1], max_points)
    log.info("wrote plots %s", ", ".join(map(str, paths)))
    return paths


def _class_histogram(plt: Any, stats: DatasetStats, path: Path) -> None:
    rows = stats.overall.per_class
    k = max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.45 * k))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r.objects for r in rows], height=0.4, label="objects")
    ax.barh(y + 0.2, [r.images for r in rows], height=0.4, label="images")
    ax.set_yticks(y, [r.name for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("count")
    ax.set_title(f"objects and images per class ({stats.images} images, {stats.objects} objects)")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _box_scatter(plt: Any, flat: FlatObjects, names: list[str], path: Path, max_points: int) -> None:
    from matplotlib.lines import Line2D

    wh, cls = flat.wh, flat.class_ids
    keep = (wh > 0).all(axis=1)
    wh, cls = wh[keep], cls[keep]
    totals = np.bincount(cls, minlength=len(names))
    n_all = len(wh)
    order = np.random.default_rng(0).permutation(n_all)[:max_points]  # mixed draw order: no class hides another
    wh, cls = wh[order], cls[order]
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colours = [cmap(i % cmap.N) for i in range(len(names))]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.set_xscale("log")
    ax.set_yscale("log")
    if len(wh):
        many = len(wh) > 2000
        ax.scatter(wh[:, 0], wh[:, 1], s=3 if many else 10, alpha=0.3 if many else 0.7, linewidths=0,
                   c=[colours[c] for c in cls])
        lo, hi = float(wh.min()) / 1.5, float(wh.max()) * 1.5
        xs = np.geomspace(lo, hi, 100)
        for area in (MEDIUM_AREA, LARGE_AREA):
            ax.plot(xs, area / xs, "--", color="black", linewidth=1)
            side = np.sqrt(area)
            if lo < side < hi:
                ax.annotate(f"area {int(side)}²", (side, side), color="black", fontsize=8,
                            xytext=(4, 4), textcoords="offset points")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        handles = [Line2D([], [], marker="o", linestyle="", color=colours[i], label=f"{n} ({totals[i]})")
                   for i, n in enumerate(names) if totals[i]]
        ax.legend(handles=handles, fontsize=8, loc="upper left", title="class (boxes)", title_fontsize=8)
    shown = f"{len(wh)} of {n_all}" if len(wh) < n_all else f"{n_all}"
    ax.set_xlabel("box width (px)")
    ax.set_ylabel("box height (px)")
    ax.set_title(f"box sizes ({shown} boxes; dashed: COCO area limits)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
