"""Drift watch: the images a line sees, against the images the model was validated on.

A dirty lens, a lamp that ages or a camera knocked out of focus is the most common silent failure on a
line: the model keeps answering, just worse. `DriftWatch` keeps a sliding window of the last ``window``
parts and compares, per statistic, the window's mean with the reference:

* image statistics (`edgevision.runtime.imagestats`: brightness, contrast, sharpness): the shift of the
  window's mean in units of the reference's standard deviation (an effect size; ``threshold`` 1.0 means the
  average image moved by one reference standard deviation, e.g. a brightness change that is plain to see);
* ``images_with_detections`` (the share of parts with a detection passing the operating points): the
  absolute difference, alarmed above ``rate_threshold`` (and above three binomial standard errors of the
  window, so a short window does not cry wolf);
* ``scores`` (the mean score of passing detections): the effect size, as for the images.

The reference is the model's ``data_stats`` (written at the end of training on the val split and carried by
the export); a model without them gets the first ``warmup`` parts as reference (said in the status). An
alarm is logged once when it starts and once when it clears, makes the line unhealthy (``/healthz``, the
OPC UA ``Healthy`` flag and the MQTT status topic carry it) and shows in ``/metrics``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgevision.runtime.imagestats import image_stats, summarize

log = logging.getLogger(__name__)

__all__ = ["IMAGE_STATS", "DriftWatch"]

IMAGE_STATS = ("brightness", "contrast", "sharpness")


@dataclass
class _Alarm:
    stat: str
    value: float
    reference: float
    effect: float

    def text(self) -> str:
        return f"{self.stat} {self.value:.3g} against {self.reference:.3g} in the reference ({self.effect:+.2f})"


class DriftWatch:
    """See the module doc. ``observe`` per part (thread-safe); ``status()`` for health and metrics.

    Args:
        reference: the model's ``data_stats`` (None: the first ``warmup`` parts).
        window / warmup / threshold / rate_threshold / min_parts: see `edgevision.line.config.DriftConfig`.
    """

    def __init__(self, reference: dict[str, Any] | None, *, window: int = 200, warmup: int = 200,
                 threshold: float = 1.0, rate_threshold: float = 0.15, min_parts: int = 50) -> None:
        self.window, self.warmup, self.threshold = window, warmup, threshold
        self.rate_threshold, self.min_parts = rate_threshold, min_parts
        self.reference = reference if reference and all(k in reference for k in IMAGE_STATS) else None
        self.source = "the model's validation images" if self.reference else f"the first {warmup} parts"
        self._rows: deque[tuple[float, ...]] = deque(maxlen=window)
        self._warm: list[tuple[float, ...]] = []
        self._lock = threading.Lock()
        self._alarms: list[_Alarm] = []
        self._effects: dict[str, float] = {}

    def observe(self, image: NDArray[Any] | None, scores: list[float]) -> None:
        """One inspected part: its image (None when it could not be decoded: not counted) and the scores of
        its detections that passed the operating points."""
        if image is None:
            return
        st = image_stats(image)
        row = (st["brightness"], st["contrast"], st["sharpness"], 1.0 if scores else 0.0,
               float(np.mean(scores)) if scores else math.nan)
        with self._lock:
            if self.reference is None:
                self._warm.append(row)
                if len(self._warm) >= self.warmup:
                    self.reference = self._summarize(self._warm)
                    self._warm = []
                return
            self._rows.append(row)
            if len(self._rows) >= self.min_parts:
                self._judge()

    @staticmethod
    def _summarize(rows: list[tuple[float, ...]]) -> dict[str, Any]:
        a = np.array(rows, dtype=np.float64)
        scores = a[:, 4][~np.isnan(a[:, 4])]
        return {**{k: summarize(a[:, i]) for i, k in enumerate(IMAGE_STATS)},
                "images_with_detections": float(a[:, 3].mean()), "scores": summarize(scores)}

    def _judge(self) -> None:
        ref = self.reference
        assert ref is not None
        a = np.array(self._rows, dtype=np.float64)
        alarms: list[_Alarm] = []
        effects: dict[str, float] = {}
        for i, k in enumerate(IMAGE_STATS):
            mean, sd = float(a[:, i].mean()), float(ref[k]["std"])
            effect = (mean - ref[k]["mean"]) / max(sd, 1e-6 * max(abs(ref[k]["mean"]), 1.0), 1e-9)
            effects[k] = effect
            if abs(effect) > self.threshold:
                alarms.append(_Alarm(k, mean, float(ref[k]["mean"]), effect))
        p_ref = float(ref.get("images_with_detections", 0.0))
        p = float(a[:, 3].mean())
        se = math.sqrt(max(p_ref * (1 - p_ref), 1e-4) / len(a))
        effects["images_with_detections"] = p - p_ref
        if abs(p - p_ref) > max(self.rate_threshold, 3 * se):
            alarms.append(_Alarm("images_with_detections", p, p_ref, p - p_ref))
        sc = a[:, 4][~np.isnan(a[:, 4])]
        rs = ref.get("scores") or {}
        if len(sc) >= 10 and rs.get("n", 0) >= 10 and rs.get("std", 0) > 0:
            effect = (float(sc.mean()) - rs["mean"]) / rs["std"]
            effects["scores"] = effect
            if abs(effect) > self.threshold:
                alarms.append(_Alarm("scores", float(sc.mean()), float(rs["mean"]), effect))
        was = {x.stat for x in self._alarms}
        now = {x.stat for x in alarms}
        for x in alarms:
            if x.stat not in was:
                log.warning("drift: %s (window of the last %d parts, reference: %s)", x.text(), len(a), self.source)
        for stat in was - now:
            log.warning("drift: %s is back within the reference", stat)
        self._alarms, self._effects = alarms, effects

    def status(self) -> dict[str, Any]:
        """``{"alarm": bool, "detail": str, "effects": {stat: shift}, "reference": where from, "parts": n}``."""
        with self._lock:
            alarms = list(self._alarms)
            effects = dict(self._effects)
            n = len(self._rows)
            warming = self.reference is None
        if warming:
            detail = f"collecting the reference ({len(self._warm)}/{self.warmup} parts)"
        elif alarms:
            detail = "drift: " + "; ".join(x.text() for x in alarms)
        else:
            detail = f"no drift (last {n} parts against {self.source})"
        return {"alarm": bool(alarms), "detail": detail, "effects": effects, "reference": self.source, "parts": n}
