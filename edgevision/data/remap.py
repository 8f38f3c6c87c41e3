"""Rename, merge, drop and reorder classes, keeping the output label map consistent.

A mapping file (YAML, a closed `RemapConfig`)::

    map:                  # old name -> new name; several old names -> one new name merge them;
      Scratch: scratch    #   null drops the class's objects (counted)
      scratch_a: scratch
      junk: null
    order: [scratch, pit] # optional: the output class order (every output class, nothing else)
    unmapped: keep        # classes the map does not name: keep (unchanged) | drop | error

The output label map has contiguous ids ``0..K-1`` in ``order`` when given, else in the order the
output classes first appear along the old ids. Source ids (COCO category ids, ...) and per-class
extras are carried only when every output class comes from exactly one old class; a merge drops them
(the writer then numbers classes itself). Images whose objects are all dropped stay in the dataset as
background images and are counted in `RemapResult.turned_background`.

The lookup-table core (`class_lut`, `relabel`, `carried_label_fields`) is shared with
`edgevision.recipes.Recipe.apply`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, UnknownNameError

log = logging.getLogger(__name__)

__all__ = [
    "DROPPED",
    "MappingNameError",
    "UNMAPPED",
    "ClassRow",
    "RemapConfig",
    "RemapResult",
    "carried_label_fields",
    "class_lut",
    "load_remap_config",
    "relabel",
    "remap_dataset",
]

UNMAPPED = -1
"""Lookup-table value of an old class whose target is not among the output classes."""
DROPPED = -2
"""Lookup-table value of an old class whose objects are dropped."""


# -- the shared core ---------------------------------------------------------------------------------
def class_lut(targets: list[str | None], order: list[str] | None = None) -> tuple[list[str], NDArray[np.int64]]:
    """Output class names and a lookup table old id -> new id.

    Args:
        targets: the output name of each old class (index = old id), None to drop its objects.
        order: the output classes in order; None: the targets in order of first appearance.

    Returns:
        ``(names, lut)``: ``lut`` is ``(K_old,)`` int64 holding the new id, `DROPPED` for a None
        target, or `UNMAPPED` for a target that ``order`` does not list.
    """
    names = list(order) if order is not None else list(dict.fromkeys(t for t in targets if t is not None))
    index = {n: i for i, n in enumerate(names)}
    lut = np.array([DROPPED if t is None else index.get(t, UNMAPPED) for t in targets], dtype=np.int64)
    return names, lut.reshape(-1)


def relabel(rec: ImageRecord, new_ids: NDArray[np.int64]) -> ImageRecord:
    """A copy of ``rec`` with class ids ``new_ids`` (``(N,)``), objects marked `DROPPED` removed."""
    keep = new_ids != DROPPED
    out = rec.subset(keep)
    out.class_ids = np.asarray(new_ids, dtype=np.int64)[keep]
    return out


def carried_label_fields(
    src: LabelMap, targets: list[str | None], names: list[str]
) -> tuple[list[int] | None, list[dict[str, Any]] | None]:
    """Source ids and extras for ``names``, kept only when each comes from exactly one old class.

    Args:
        src: the old label map; targets: the output name of each old class (None: dropped);
        names: the output classes.

    Returns:
        ``(source_ids, extra)`` for a new `LabelMap`; each is None when a merge (or a new name with
        no old class) makes it ambiguous, or when the kept source ids would collide.
    """
    origin: dict[str, list[int]] = {n: [] for n in names}
    for i, t in enumerate(targets):
        if t in origin:
            origin[t].append(i)
    if any(len(v) != 1 for v in origin.values()):
        return None, None
    idx = [origin[n][0] for n in names]
    ids = [src.source_ids[i] for i in idx] if src.source_ids is not None else None
    if ids is not None and len(set(ids)) != len(ids):
        ids = None
    extra = [dict(src.extra[i]) for i in idx] if src.extra is not None else None
    return ids, extra


# -- the remap tool -----------------------------------------------------------------------------------
class MappingNameError(UnknownNameError, ConfigError):
    """A class name in the mapping is not known: both an `UnknownNameError` and a `ConfigError`.

    The message names the mapping key (``map`` or ``order``), lists the options and suggests the
    closest one.
    """

    def __init__(self, key: str, name: str, options: list[str]) -> None:
        super().__init__("class", name, options)
        self.key = key
        self.args = (f"mapping '{key}': {self.args[0]}",)


class RemapConfig(BaseModel):
    """A class mapping (the ``--map`` YAML).

    Attributes:
        map: old class name -> new name (rename; several old names to one new name merge), or None
            to drop that class's objects.
        order: the output class order; must list every output class and nothing else.
        unmapped: what happens to classes ``map`` does not name: ``keep`` them under their name,
            ``drop`` their objects, or raise an ``error``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    map: dict[str, str | None] = {}
    order: list[str] | None = None
    unmapped: Literal["keep", "drop", "error"] = "keep"


@dataclass(frozen=True)
class ClassRow:
    """One old class: where it went and how many objects it had.

    Attributes:
        old_id, old_name: the class in the input label map.
        new_id, new_name: the class it became (None when dropped).
        objects: its objects in the input (all moved to ``new_name``, or all dropped).
    """

    old_id: int
    old_name: str
    new_id: int | None
    new_name: str | None
    objects: int


@dataclass
class RemapResult:
    """What `remap_dataset` did.

    Attributes:
        dataset: the remapped dataset (a new object; the input is not modified).
        rows: one `ClassRow` per old class, old id order.
        new_counts: objects per output class (output id order).
        dropped: objects dropped per old class name (classes that lost nothing are absent).
        turned_background: names of the images that had objects and have none after the remap
            (they stay in the dataset as background images).
    """

    dataset: Dataset
    rows: list[ClassRow]
    new_counts: dict[str, int]
    dropped: dict[str, int] = field(default_factory=dict)
    turned_background: list[str] = field(default_factory=list)

    @property
    def objects_dropped(self) -> int:
        return sum(self.dropped.values())


def load_remap_config(path: Path | str) -> RemapConfig:
    """Read and check a mapping YAML file.

    Raises:
        ConfigError: one line naming the file and the bad key or value (did-you-mean for unknown keys).
    """
    from edgevision.config import load_yaml_config

    return load_yaml_config(path, RemapConfig, "mapping")


def remap_dataset(dataset: Dataset, mapping: RemapConfig) -> RemapResult:
    """Rename, merge, drop and reorder ``dataset``'s classes as ``mapping`` says.

    Raises:
        MappingNameError: a ``map`` key that is not a class of the dataset, or an ``order`` name
            that is not an output class (the message suggests the closest name).
        ConfigError: ``order`` misses output classes or repeats one; ``unmapped: error`` with
            classes the map does not name.
    """
    src = dataset.labels.names
    targets = _targets(src, mapping)
    order = _check_order(mapping.order, targets)
    names, lut = class_lut(targets, order)
    old_counts = np.bincount(
        np.concatenate([r.class_ids for r in dataset.images] + [np.zeros(0, np.int64)]), minlength=len(src)
    )
    images: list[ImageRecord] = []
    turned: list[str] = []
    for rec in dataset.images:
        new = relabel(rec, lut[rec.class_ids])
        if len(rec) and not len(new):
            turned.append(rec.name)
        images.append(new)
    out = Dataset(LabelMap(names, *carried_label_fields(dataset.labels, targets, names)),
                  images, dataset.root, dict(dataset.meta))
    rows = [ClassRow(i, n, None if lut[i] < 0 else int(lut[i]), targets[i], int(old_counts[i]))
            for i, n in enumerate(src)]
    dropped = {r.old_name: r.objects for r in rows if r.new_id is None and r.objects}
    if dropped:
        log.info("dropped %d object(s): %s; %d image(s) became background", sum(dropped.values()), dropped, len(turned))
    return RemapResult(out, rows, out.class_counts(), dropped, turned)


def _targets(src: list[str], mapping: RemapConfig) -> list[str | None]:
    """The output name of each old class (None: dropped), after checking the map's keys."""
    for key in mapping.map:
        if key not in src:
            raise MappingNameError("map", key, src)
    unnamed = [n for n in src if n not in mapping.map]
    if mapping.unmapped == "error" and unnamed:
        raise ConfigError(f"mapping: classes {unnamed} are not in 'map' and 'unmapped' is error; "
                          f"map each (null drops it) or set unmapped: keep | drop")
    keep_unnamed = mapping.unmapped == "keep"
    return [mapping.map.get(n, n if keep_unnamed else None) for n in src]


def _check_order(order: list[str] | None, targets: list[str | None]) -> list[str] | None:
    """``order`` when it lists every output class exactly once, else a ConfigError / UnknownNameError."""
    if order is None:
        return None
    outputs = list(dict.fromkeys(t for t in targets if t is not None))
    dup = sorted({n for n in order if order.count(n) > 1})
    if dup:
        raise ConfigError(f"mapping: 'order' lists {dup} more than once")
    for name in order:
        if name not in outputs:
            raise MappingNameError("order", name, outputs)
    missing = [n for n in outputs if n not in order]
    if missing:
        raise ConfigError(f"mapping: 'order' must list every output class; missing {missing}")
    return list(order)
