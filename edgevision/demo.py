"""``edgevision demo``: the pipeline on the built-in sample, end to end, as far as it exists.

Stages: generate the synthetic sample -> validate it -> statistics -> a seeded stratified split
-> convert YOLO -> COCO -> VOC -> YOLO through the canonical model, checking that every stage
keeps every image, object and class with boxes within `BOX_TOL_PX`. Later stages (train, export,
bench) extend `run_demo`. Everything lands in one folder, ``work``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.dataset import Dataset

BOX_TOL_PX = 1e-3
"""Largest box disagreement allowed between the sample and any converted copy (pixels)."""

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: the CLI turns it into progress bars."""


@dataclass
class Stage:
    name: str
    format: str
    images: int
    objects: int
    classes: int
    max_box_error: float


@dataclass
class DemoResult:
    """What the demo did and found.

    Attributes:
        work: the output folder.
        stages: the round-trip stages (one row each).
        validation: findings per severity on the sample (``{"error": 0, ...}``).
        stats: the sample's statistics (`edgevision.data.stats.DatasetStats`).
        split: images per split after the stratified split.
        unreachable: ``(class, split)`` pairs the split could not fill.
        problem: the first check that failed, or None.
    """

    work: Path
    stages: list[Stage] = field(default_factory=list)
    validation: dict[str, int] = field(default_factory=dict)
    stats: Any = None
    split: dict[str, int] = field(default_factory=dict)
    unreachable: list[tuple[str, str]] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def fail(self, message: str) -> None:
        if self.problem is None:
            self.problem = message


def max_box_error(a: Dataset, b: Dataset) -> float:
    """Largest coordinate difference between matching objects of two datasets (by image base name).

    Objects are matched after sorting by (class name, box); a differing image set, object count or
    class gives ``inf``.
    """
    def index(ds: Dataset) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
        return {
            Path(r.name).name: sorted((ds.labels.names[c], tuple(box)) for c, box in zip(r.class_ids, r.boxes.tolist()))
            for r in ds.images
        }

    ia, ib = index(a), index(b)
    if ia.keys() != ib.keys():
        return float("inf")
    worst = 0.0
    for key, objs in ia.items():
        other = ib[key]
        if len(objs) != len(other) or any(x[0] != y[0] for x, y in zip(objs, other)):
            return float("inf")
        if objs:
            diff = np.abs(np.array([o[1] for o in objs]) - np.array([o[1] for o in other]))
            worst = max(worst, float(diff.max()))
    return worst


def run_demo(
    work: Path,
    n: int = 120,
    seed: int = 0,
    log: Callable[[str], None] = lambda m: None,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the demo pipeline into ``work`` (its stage folders are replaced).

    Args:
        work: output folder.
        n: number of sample images.
        seed: sample and split seed.
        log: receives one line per stage (the CLI prints them).
        progress: receives ``(stage, done, total)`` during the long stages.
    """
    from edgevision.convert import read_dataset, write_dataset
    from edgevision.data.split import split_dataset
    from edgevision.data.stats import dataset_stats
    from edgevision.data.synth import write_synth
    from edgevision.data.validate import validate

    def bar(stage: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(stage, done, total))

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    result = DemoResult(work)

    log(f"1/5 synth: {n} sample images (seed {seed}) -> {work / 'sample-yolo'}")
    write_synth(work / "sample-yolo", n=n, seed=seed, to="yolo", overwrite=True, progress=bar("synth"))
    sample = read_dataset(work / "sample-yolo").dataset

    log("2/5 validate: boxes, images, duplicates and train/val leakage")
    checked = validate(sample, progress=bar("validate"))
    result.validation = {sev: sum(f.severity == sev for f in checked.findings) for sev in ("error", "warning", "info")}
    if not checked.ok:
        result.fail(f"validate: {len(checked.errors)} error(s) in the sample, e.g. {checked.errors[0]}")

    log("3/5 stats: classes, box sizes, background images")
    result.stats = dataset_stats(sample)

    log(f"4/5 split: stratified 80/10/10 (seed {seed}) -> {work / 'split-yolo'}")
    split = split_dataset(sample, ratios=(0.8, 0.1, 0.1), seed=seed)
    write_dataset(split.dataset, work / "split-yolo", "yolo", overwrite=True)
    result.split = dict(split.report.images)
    result.unreachable = [(u.class_name, u.split) for u in split.report.unreachable]

    src = work / "split-yolo"
    for step, to in enumerate(("coco", "voc", "yolo"), start=1):
        dst = work / f"{step}-{to}"
        log(f"5/5 convert: {src.name} -> {dst.name} ({to})")
        write_dataset(read_dataset(src).dataset, dst, to, images="symlink" if to != "yolo" else "copy", overwrite=True)
        src = dst
    reference = split.dataset
    for path in [work / "split-yolo", *(work / f"{i}-{f}" for i, f in enumerate(("coco", "voc", "yolo"), start=1))]:
        rr = read_dataset(path)
        ds = rr.dataset
        err = max_box_error(reference, ds)
        result.stages.append(Stage(path.name, rr.format, len(ds), ds.num_objects, len(ds.labels), err))
        if err > BOX_TOL_PX:
            result.fail(f"{path}: boxes differ from the sample by {err:.3g} px (tolerance {BOX_TOL_PX} px)")
        if sorted(ds.labels.names) != sorted(reference.labels.names):
            result.fail(f"{path}: classes {ds.labels.names} differ from the sample's {reference.labels.names}")
        got = {s: len(ds.split(s)) for s in ds.splits}
        if got != {s: c for s, c in result.split.items() if c}:
            result.fail(f"{path}: splits {got} differ from the split made ({result.split})")
    return result
