"""Deterministic, stratified, group-aware train / val / test splits.

The unit of assignment is a **group** of images: with a ``group`` regex, every image whose name
yields the same key (the first capture group if the regex has one, else the whole match) is one
group, so frames of one coil or tiles of one board never straddle two splits; an image whose name
does not match (or yields an empty key) is a group of its own. Without a regex every image is its
own group.

Each group has a label vector ``(K + 1,)``: for each class, how many of its images contain at least
one object of that class (class presence), and in the last column how many of its images are
background (no objects), so defect-free images are spread by the ratios too. Groups are assigned by
iterative stratification (Sechidis, Tsoumakas & Vlahavas, "On the stratification of multi-label
data", ECML PKDD 2011), the algorithm of scikit-multilearn's ``IterativeStratification``, applied to
groups:

1. Targets: split ``j`` should hold ``r_j * n_images`` images and ``r_j * total_l`` presences of
   each label ``l``.
2. Repeatedly take the label with the fewest unassigned groups; hand each of its groups (in a
   seeded order) to a split that has no image with that label yet and still wants at least the
   group's number of images, if there is one; among those (else among all) to the split that most
   wants the label, then the one that most wants images, then by a seeded coin. Subtract the
   group's vector and size from that split's wants.
3. Repair: while moving one group to another split increases the number of (class, split) pairs
   that are covered, move it (only for classes in at least as many groups as there are splits).

The "still lacks that label" rule (step 2) and the repair (step 3) are our additions to the paper:
they make a class that is in at least as many groups as there are splits reach every split unless
co-occurrence with other classes makes that impossible; whatever cannot be reached is reported with
its reason. The result depends only on the image names, their objects and the seed, never on the
input order: groups are sorted by key before the seeded order is drawn.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgevision.core.dataset import Dataset, ImageRecord
from edgevision.core.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

__all__ = ["GroupStats", "SplitReport", "SplitResult", "Unreachable", "parse_ratios", "split_dataset"]

DEFAULT_NAMES = ("train", "val", "test")
RATIO_TOLERANCE = 1e-6
BACKGROUND = "(background)"
"""Name of the background column in the report's per-split counts."""


@dataclass(frozen=True)
class Unreachable:
    """A class that has no image in a split.

    Attributes:
        class_name: the class.
        split: the split it is missing from.
        reason: ``too_few_images`` (fewer images than splits), ``too_few_groups`` (fewer groups than
            splits; a group stays in one split) or ``co_occurrence`` (its groups were needed by other
            classes: no single move adds it to the split without removing a class elsewhere).
        message: one readable line saying the counts.
    """

    class_name: str
    split: str
    reason: str
    message: str


@dataclass(frozen=True)
class GroupStats:
    """How the images were grouped.

    Attributes:
        pattern: the ``group`` regex, or None (every image its own group).
        groups: number of groups (unmatched images included, one group each).
        unmatched: images whose name did not match the regex (each its own group).
        grouped_images: images in groups of two or more.
        size_min / size_median / size_max: group sizes in images.
        largest: up to five ``(key, size, split)`` of the largest groups.
    """

    pattern: str | None
    groups: int
    unmatched: int
    grouped_images: int
    size_min: int
    size_median: float
    size_max: int
    largest: list[tuple[str, int, str]]


@dataclass
class SplitReport:
    """What `split_dataset` did.

    Attributes:
        names: the split names, in order.
        ratios: the requested fraction of images per split.
        seed: the seed.
        target_images: ``ratio * n_images`` per split.
        images / objects / background: per split, images, objects and background images.
        class_images / class_objects: per split, images containing the class / objects, per class
            name (every class of the label map, zeros included).
        unreachable: classes missing from a split, with the reason.
        absent_classes: classes of the label map with no object at all (they cannot reach any split).
        groups: grouping statistics.
        replaced: images per previous split in the input (``"(none)"`` for unsplit images); empty when
            the input had no splits. Previous splits are always replaced.
    """

    names: list[str]
    ratios: list[float]
    seed: int
    target_images: dict[str, float]
    images: dict[str, int]
    objects: dict[str, int]
    background: dict[str, int]
    class_images: dict[str, dict[str, int]]
    class_objects: dict[str, dict[str, int]]
    unreachable: list[Unreachable]
    absent_classes: list[str]
    groups: GroupStats
    replaced: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``--json`` writes)."""
        return asdict(self)


@dataclass
class SplitResult:
    """A new dataset (records copied, only ``split`` changed) and the report."""

    dataset: Dataset
    report: SplitReport


def parse_ratios(text: str, option: str = "--ratios") -> tuple[float, ...]:
    """Parse ``"0.8,0.1,0.1"`` and check it (see `check_ratios`).

    Raises:
        ConfigError: one line naming ``option``, expected and got.
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated numbers such as 0.8,0.1,0.1, got '{text}'") from None
    return check_ratios(values, option)


def check_ratios(ratios: Sequence[float], option: str = "ratios") -> tuple[float, ...]:
    """Check 2 (train/val) or 3 (train/val/test) positive fractions summing to 1 within 1e-6.

    Raises:
        ConfigError: one line saying what was expected and what was given.
    """
    values = tuple(float(r) for r in ratios)
    shown = ",".join(f"{v:g}" for v in values)
    if len(values) not in (2, 3):
        raise ConfigError(f"{option}: expected 2 (train,val) or 3 (train,val,test) values, got {len(values)}: {shown}")
    bad = [(name, v) for name, v in zip(DEFAULT_NAMES, values) if not v > 0]
    if bad:
        name, v = bad[0]
        hint = "; give two values for a train/val split without test" if name == "test" else ""
        raise ConfigError(f"{option}: expected every ratio > 0, got {v:g} for {name}{hint}")
    total = math.fsum(values)
    if not abs(total - 1.0) <= RATIO_TOLERANCE:
        raise ConfigError(f"{option}: expected ratios summing to 1 (within {RATIO_TOLERANCE:g}), got {shown} = {total:.6g}")
    return values


def split_dataset(
    dataset: Dataset,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    group: str | None = None,
    names: Sequence[str] = DEFAULT_NAMES,
) -> SplitResult:
    """Assign every image to a split by group-aware iterative stratification (see the module doc).

    Args:
        dataset: the dataset; any existing splits are replaced (counted in ``report.replaced``).
        ratios: 2 or 3 positive fractions of images summing to 1.
        seed: the same dataset and seed give the same assignment, whatever the image order.
        group: a regex searched in each image name; images with the same key stay together.
        names: split names, one per ratio at least (the first ``len(ratios)`` are used).

    Returns:
        The new dataset (same order, records shallow-copied with only ``split`` changed) and the report.

    Raises:
        ConfigError: bad ratios, names or regex. DatasetError: an empty dataset.
    """
    ratio = np.array(check_ratios(ratios), dtype=np.float64)
    split_names = _split_names(names, len(ratio))
    if not dataset.images:
        raise DatasetError("dataset has no images; nothing to split")
    units = _group_units(dataset.images, group)
    presence = _presence(units, len(dataset.labels))
    sizes = np.array([len(recs) for _, recs in units], dtype=np.int64)
    rng = np.random.default_rng(seed)
    assigned = _stratify(presence, sizes, ratio, rng)
    assigned = _repair(presence, sizes, assigned, len(ratio), eligible=(presence > 0).sum(0) >= len(ratio))
    split_of = {rec.name: split_names[assigned[u]] for u, (_, recs) in enumerate(units) for rec in recs}
    images = [_with_split(rec, split_of[rec.name]) for rec in dataset.images]
    out = Dataset(labels=dataset.labels, images=images, root=dataset.root, meta=dict(dataset.meta))
    report = _report(out, units, assigned, presence, split_names, ratio, seed, group)
    log.info("split %d images in %d groups into %s", len(images), len(units), report.images)
    return SplitResult(out, report)


# --------------------------------------------------------------------------- grouping


def _split_names(names: Sequence[str], k: int) -> list[str]:
    chosen = [str(n) for n in names][:k]
    if len(chosen) < k or len(set(chosen)) < k:
        raise ConfigError(f"split names: expected {k} distinct names, got {list(names)}")
    return chosen


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"--group: '{pattern}' is not a valid regular expression ({e})") from None


def group_key(name: str, regex: re.Pattern[str] | None) -> str | None:
    """The group key of an image name: first capture group if any, else the whole match.

    Returns None when there is no regex, no match, or the key is empty (the image is its own group).
    """
    if regex is None:
        return None
    m = regex.search(name)
    if m is None:
        return None
    key = m.group(1) if regex.groups else m.group(0)
    return key or None


def _group_units(records: list[ImageRecord], pattern: str | None) -> list[tuple[tuple[str, str], list[ImageRecord]]]:
    """``[((kind, key), records)]`` sorted by key; kind ``"g"`` for a regex group, ``"i"`` for a lone image."""
    regex = _compile(pattern) if pattern is not None else None
    by_key: dict[tuple[str, str], list[ImageRecord]] = {}
    for rec in records:
        key = group_key(rec.name, regex)
        by_key.setdefault(("g", key) if key is not None else ("i", rec.name), []).append(rec)
    return [(k, sorted(by_key[k], key=lambda r: r.name)) for k in sorted(by_key)]


def _presence(units: list[tuple[tuple[str, str], list[ImageRecord]]], num_classes: int) -> NDArray[np.int64]:
    """``(U, K + 1)``: images of each group containing each class; last column background images."""
    out = np.zeros((len(units), num_classes + 1), dtype=np.int64)
    for u, (_, recs) in enumerate(units):
        for rec in recs:
            if rec.is_background:
                out[u, num_classes] += 1
            else:
                out[u, np.unique(rec.class_ids)] += 1
    return out


# --------------------------------------------------------------------------- assignment


def _stratify(
    presence: NDArray[np.int64], sizes: NDArray[np.int64], ratio: NDArray[np.float64], rng: np.random.Generator
) -> NDArray[np.int64]:
    """Iterative stratification over groups; returns the split index of each group ``(U,)``."""
    n_units, n_labels = presence.shape
    want_label = ratio[:, None] * presence.sum(0)[None, :]  # (S, L)
    want_size = ratio * sizes.sum()  # (S,)
    have = np.zeros((len(ratio), n_labels), dtype=np.int64)  # images with the label per split
    assigned = np.full(n_units, -1, dtype=np.int64)
    order = rng.permutation(n_units)  # the seeded visiting order of the (sorted) groups
    has = presence > 0
    while (assigned < 0).any():
        left = has & (assigned < 0)[:, None]
        counts = left.sum(0)
        label = int(np.argmin(np.where(counts > 0, counts, n_units + 1)))
        for u in order[left[order, label]]:
            fits = (want_size >= sizes[u] - 1e-9).tolist()
            lacking = (have[:, label] == 0).tolist()
            preferred = [[a and b for a, b in zip(lacking, fits, strict=True)], fits]
            j = _choose(preferred, want_label[:, label].tolist(), want_size.tolist(), rng)
            assigned[u] = j
            want_label[j] -= presence[u]
            want_size[j] -= sizes[u]
            have[j] += presence[u]
    return assigned


def _choose(preferred: list[list[bool]], want_label: list[float], want_size: list[float], rng: np.random.Generator) -> int:
    """The split wanting the label most, then images most, then a seeded coin (plain lists: ``S`` is tiny).

    Candidates are the splits of the first ``preferred`` mask that has any, else every split.
    """
    cand = next(([j for j, ok in enumerate(m) if ok] for m in preferred if any(m)), list(range(len(want_label))))
    for want in (want_label, want_size):
        best = max(want[j] for j in cand)
        cand = [j for j in cand if want[j] >= best - 1e-9]
    return cand[int(rng.integers(len(cand)))] if len(cand) > 1 else cand[0]


def _repair(
    presence: NDArray[np.int64], sizes: NDArray[np.int64], assigned: NDArray[np.int64], n_splits: int,
    eligible: NDArray[np.bool_],
) -> NDArray[np.int64]:
    """Move single groups while a move increases the (eligible class, split) pairs covered.

    Args:
        presence: ``(U, L)`` label presence per group.
        sizes: ``(U,)`` images per group (smaller groups are moved first).
        assigned: ``(U,)`` split per group (a copy is returned).
        eligible: ``(L,)`` labels in at least ``n_splits`` groups (the only ones that can reach all).
    """
    assigned = assigned.copy()
    has = (presence > 0) & eligible[None, :]
    for _ in range(n_splits * int(eligible.sum()) + 1):  # each move covers one more pair: bounded
        units = np.stack([has[assigned == j].sum(0) for j in range(n_splits)])  # (S, L) groups per split
        best: tuple[int, int, int, int] | None = None  # (gain, -size, -unit, target)
        for target, label in zip(*np.nonzero((units == 0) & eligible[None, :]), strict=True):
            for u in np.flatnonzero(has[:, label]):
                gain = int((units[target, has[u]] == 0).sum() - (units[assigned[u], has[u]] == 1).sum())
                move = (gain, -int(sizes[u]), -int(u), int(target))
                if gain > 0 and (best is None or move > best):
                    best = move
        if best is None:
            break
        assigned[-best[2]] = best[3]
    return assigned


def _with_split(rec: ImageRecord, split: str) -> ImageRecord:
    new = copy.copy(rec)
    new.split = split
    new.meta = dict(rec.meta)
    return new


# --------------------------------------------------------------------------- report


def _report(
    ds: Dataset,
    units: list[tuple[tuple[str, str], list[ImageRecord]]],
    assigned: NDArray[np.int64],
    presence: NDArray[np.int64],
    names: list[str],
    ratio: NDArray[np.float64],
    seed: int,
    pattern: str | None,
) -> SplitReport:
    k = len(ds.labels)
    class_images: dict[str, dict[str, int]] = {}
    class_objects: dict[str, dict[str, int]] = {}
    for name in names:
        recs = ds.split(name)
        ids = np.concatenate([r.class_ids for r in recs] or [np.zeros(0, np.int64)])
        uniq = np.concatenate([np.unique(r.class_ids) for r in recs] or [np.zeros(0, np.int64)])
        class_objects[name] = dict(zip(ds.labels.names, np.bincount(ids, minlength=k).tolist()))
        class_images[name] = dict(zip(ds.labels.names, np.bincount(uniq, minlength=k).tolist()))
    return SplitReport(
        names=names,
        ratios=ratio.tolist(),
        seed=seed,
        target_images={n: float(r * len(ds)) for n, r in zip(names, ratio)},
        images={n: len(ds.split(n)) for n in names},
        objects={n: sum(class_objects[n].values()) for n in names},
        background={n: sum(r.is_background for r in ds.split(n)) for n in names},
        class_images=class_images,
        class_objects=class_objects,
        unreachable=_unreachable(ds.labels.names, presence[:, :k], class_images, names, pattern is not None),
        absent_classes=[c for c, n in zip(ds.labels.names, presence[:, :k].sum(0)) if n == 0],
        groups=_group_stats(units, assigned, names, pattern),
        replaced=_replaced(units),
    )


def _unreachable(
    classes: list[str], presence: NDArray[np.int64], class_images: dict[str, dict[str, int]],
    names: list[str], grouped: bool,
) -> list[Unreachable]:
    found = []
    n_images, n_groups = presence.sum(0), (presence > 0).sum(0)
    for c, cls in enumerate(classes):
        if n_images[c] == 0:
            continue  # absent from the dataset: listed in absent_classes
        for split in names:
            if class_images[split][cls]:
                continue
            counts = f"class '{cls}' is in {n_images[c]} image(s)"
            if n_images[c] < len(names):
                reason, why = "too_few_images", f"{counts}; {len(names)} splits need at least {len(names)}"
            elif grouped and n_groups[c] < len(names):
                reason, why = "too_few_groups", (f"{counts} but only {n_groups[c]} group(s); a group stays in one "
                                                 f"split, so {len(names)} splits need at least {len(names)} groups")
            else:
                reason, why = "co_occurrence", (f"{counts} in {n_groups[c]} group(s), all needed by other classes: "
                                                f"moving one to '{split}' would remove a class from another split")
            found.append(Unreachable(cls, split, reason, f"not in '{split}': {why}"))
    return found


def _group_stats(
    units: list[tuple[tuple[str, str], list[ImageRecord]]], assigned: NDArray[np.int64],
    names: list[str], pattern: str | None,
) -> GroupStats:
    sizes = np.array([len(recs) for _, recs in units])
    order = sorted(range(len(units)), key=lambda u: (-sizes[u], units[u][0]))
    return GroupStats(
        pattern=pattern,
        groups=len(units),
        unmatched=sum(len(recs) for (kind, _), recs in units if kind == "i") if pattern is not None else 0,
        grouped_images=int(sizes[sizes > 1].sum()),
        size_min=int(sizes.min()),
        size_median=float(np.median(sizes)),
        size_max=int(sizes.max()),
        largest=[(units[u][0][1], int(sizes[u]), names[assigned[u]]) for u in order[:5] if sizes[u] > 1],
    )


def _replaced(units: list[tuple[tuple[str, str], list[ImageRecord]]]) -> dict[str, int]:
    before = Counter(rec.split or "(none)" for _, recs in units for rec in recs)
    return dict(sorted(before.items())) if set(before) != {"(none)"} else {}
