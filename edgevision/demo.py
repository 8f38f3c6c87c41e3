"""``edgevision demo``: the pipeline on the built-in sample, end to end, as far as it exists.

At this stage: generate the synthetic sample, convert it YOLO -> COCO -> VOC -> YOLO through the
canonical model, and check that every stage keeps every image, object and class with boxes within
a tolerance. Later stages (train, export, bench) extend `run_demo`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgevision.core.dataset import Dataset

BOX_TOL_PX = 1e-3
"""Largest box disagreement allowed between the sample and any converted copy (pixels)."""


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
    stages: list[Stage] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


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


def run_demo(work: Path, n: int = 120, seed: int = 0, log: Callable[[str], None] = lambda m: None) -> DemoResult:
    """Generate the sample into ``work`` and round-trip it through YOLO, COCO and VOC.

    Args:
        work: output folder (replaced if it exists).
        n: number of sample images.
        seed: sample seed.
        log: receives one line per stage (the CLI prints them).
    """
    from edgevision.convert import read_dataset, write_dataset
    from edgevision.data.synth import write_synth

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    result = DemoResult()
    log(f"1/4 generating {n} sample images (seed {seed}) -> {work / 'sample-yolo'}")
    ref = write_synth(work / "sample-yolo", n=n, seed=seed, to="yolo", overwrite=True)
    src = work / "sample-yolo"
    for step, to in enumerate(("coco", "voc", "yolo"), start=2):
        dst = work / f"{step - 1}-{to}"
        log(f"{step}/4 converting {src.name} -> {dst.name} ({to})")
        rr = read_dataset(src)
        write_dataset(rr.dataset, dst, to, images="symlink" if to != "yolo" else "copy", overwrite=True)
        src = dst
    for path in [work / "sample-yolo", *(work / f"{i}-{f}" for i, f in enumerate(("coco", "voc", "yolo"), start=1))]:
        rr = read_dataset(path)
        ds = rr.dataset
        err = max_box_error(ref, ds)
        result.stages.append(Stage(path.name, rr.format, len(ds), ds.num_objects, len(ds.labels), err))
        if err > BOX_TOL_PX and result.problem is None:
            result.problem = f"{path}: boxes differ from the sample by {err:.3g} px (tolerance {BOX_TOL_PX} px)"
        if sorted(ds.labels.names) != sorted(ref.labels.names) and result.problem is None:
            result.problem = f"{path}: classes {ds.labels.names} differ from the sample's {ref.labels.names}"
    return result
