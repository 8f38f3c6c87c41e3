"""edgevision.inspect._speed: FiftyOne's evaluation gives the same results with linear saves."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from edgevision.inspect._speed import linear_saves


def _dataset(fo: Any, name: str) -> Any:
    rng = np.random.default_rng(3)
    ds = fo.Dataset(name, overwrite=True)
    samples = []
    for i in range(2):
        s = fo.Sample(filepath=f"/nonexistent/{i}.png")
        gt = [fo.Detection(label=c, bounding_box=list(rng.uniform(0.05, 0.4, 4))) for c in ("a", "b", "a")]
        s["gt"] = fo.Detections(detections=gt)
        found = fo.Detection(label="a", bounding_box=list(gt[0].bounding_box), confidence=0.5)  # one sure match
        s["pr"] = fo.Detections(detections=[found] + [
            fo.Detection(label=str(rng.choice(["a", "b"])), bounding_box=list(rng.uniform(0.05, 0.4, 4)),
                         confidence=float(rng.uniform())) for _ in range(25)])
        samples.append(s)
    ds.add_samples(samples, progress=False)
    return ds


def test_linear_saves_give_fiftyones_results_and_restore_mongoengine(fo: Any) -> None:
    from mongoengine.base.document import BaseDocument

    original = BaseDocument.__dict__["_clear_changed_fields"]
    out = {}
    for mode in ("linear", "original"):
        ds = _dataset(fo, f"speed-{mode}")
        with linear_saves() if mode == "linear" else contextlib.nullcontext():
            r = ds.evaluate_detections("pr", "gt", eval_key="e", compute_mAP=True, progress=False)
        sample = ds.first()
        assert sample._doc._changed_fields == [] and all(d._changed_fields == [] for d in sample["pr"].detections)
        ds.reload()
        out[mode] = (r.mAP(), ds.values("pr.detections.e"), ds.values("pr.detections.e_iou"),
                     ds.values("gt.detections.e"), ds.values("e_tp"), ds.values("e_fp"), ds.values("e_fn"))
        ds.delete()
    assert out["linear"] == out["original"]
    assert any(v == "tp" for vs in out["linear"][1] for v in vs)  # a real evaluation: some matches
    assert BaseDocument.__dict__["_clear_changed_fields"] is original
