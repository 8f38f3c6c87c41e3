"""Operating points: per-class confidence thresholds for a target recall or precision, and the
image-level decisions (escapes, false rejects) they give. This is what QA signs.

Detections are matched to ground truth once, per class, greedily by score at ``iou`` (the COCO
rule, see `edgevision.evaluate.matching`); since the rule is greedy by score, the true positives
above any threshold are a prefix of that one ordering, so recall and precision at every candidate
threshold come from one cumulative sum. Candidate thresholds are the distinct detection scores of
the class; a detection passes when ``score >= threshold``.

Saved as ``thresholds.json`` in the run folder (`OperatingPoints.to_dict`) and carried into the
exported model's metadata.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError
from edgevision.evaluate.matching import (
    check_difficult,
    greedy_match,
    match_all,
    pair_predictions,
    pred_arrays,
    prepare_gt,
)

log = logging.getLogger(__name__)

SCHEMA = "edgevision.thresholds/1"


@dataclass
class OperatingPoints:
    """Per-class confidence thresholds chosen for a target.

    Attributes:
        target: ``"recall"`` or ``"precision"``; value: the target (0..1); iou: matching IoU.
        classes: ``{name: threshold}`` in label-map order (a detection passes at ``score >= threshold``).
        achieved: ``{name: {"recall", "precision", "tp", "fp", "gt"}}`` on the set they were chosen on
            (recall None for a class with no gt, precision None with no detection passing).
        unreachable: classes whose target no threshold reaches (their threshold is the lowest
            score seen for the class, or over all classes when the class had no detection).
        decisions: optional `image_decisions` at these thresholds (escape and false-reject rates),
            kept with them in ``thresholds.json``; `choose_thresholds` leaves it None.
    """

    target: str
    value: float
    iou: float
    classes: dict[str, float]
    achieved: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)
    decisions: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"schema": SCHEMA, "target": self.target, "value": self.value, "iou": self.iou,
             "classes": dict(self.classes), "achieved": self.achieved, "unreachable": list(self.unreachable)}
        if self.decisions is not None:
            d["decisions"] = self.decisions
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "thresholds") -> OperatingPoints:
        """Inverse of `to_dict`.

        Raises:
            ConfigError: a missing key or a threshold that is not a number.
        """
        try:
            classes = {str(k): float(v) for k, v in d["classes"].items()}
            return cls(target=str(d["target"]), value=float(d["value"]), iou=float(d.get("iou", 0.5)),
                       classes=classes, achieved=dict(d.get("achieved", {})),
                       unreachable=list(d.get("unreachable", [])), decisions=d.get("decisions"))
        except KeyError as e:
            raise ConfigError(f"{where}: missing key {e.args[0]!r}; expected target, value, iou, classes") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{where}: expected classes {{name: number}}, got {d.get('classes')!r} ({e})") from e

    @classmethod
    def load(cls, path: Path | str) -> OperatingPoints:
        """Read a ``thresholds.json``.

        Raises:
            DatasetError: missing or malformed JSON; ConfigError: wrong content.
        """
        from edgevision.core.io import load_json

        data = load_json(Path(path))
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object with target, value, iou, classes")
        return cls.from_dict(data, where=str(path))

    def save(self, path: Path | str) -> Path:
        """Write ``to_dict()`` as JSON atomically (a temporary file renamed into place)."""
        from edgevision.core.io import write_atomic

        return write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def for_labels(self, labels: LabelMap) -> NDArray[np.float64]:
        """Thresholds ``(K,)`` in the order of ``labels``.

        Raises:
            ConfigError: the class names differ from the label map's (both lists named).
        """
        if sorted(self.classes) != sorted(labels.names):
            raise ConfigError(f"thresholds are for classes {list(self.classes)} but the dataset has {labels.names}")
        return np.array([self.classes[n] for n in labels.names], dtype=np.float64)


def _check_target(target: str, value: float, iou: float) -> None:
    if target not in ("recall", "precision"):
        raise ConfigError(f"target: expected recall or precision, got '{target}'")
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"target value: expected a number in [0, 1], got {value}")
    if not 0.0 < iou <= 1.0:
        raise ConfigError(f"iou: expected a number in (0, 1], got {iou}")


def choose_thresholds(
    gt: Sequence[ImageRecord],
    preds: Sequence[ImageRecord],
    labels: LabelMap,
    target: str = "recall",
    value: float = 0.9,
    iou: float = 0.5,
    *,
    difficult: str = "ignore",
) -> OperatingPoints:
    """Choose one confidence threshold per class.

    ``target="recall"``: the HIGHEST threshold whose recall reaches ``value`` (fewest false
    alarms for that recall). ``target="precision"``: the LOWEST threshold whose precision reaches
    ``value`` (the most recall at that precision; precision is not monotone in the threshold, so
    every candidate is checked). When no threshold reaches the target, or the class has no gt
    object, the class is listed in ``unreachable`` and gets the lowest score seen for it (all its
    detections pass: the most sensitive setting), or the lowest score over all classes (0.0 when
    there are no detections at all) when it has no detection.

    Args:
        gt, preds: ground truth and predictions, paired by record name.
        labels: the label map both use.
        target, value: what to reach; iou: the IoU a detection needs to count as finding an object.
        difficult: how ``difficult`` objects count (see `edgevision.evaluate.coco`).

    Raises:
        ConfigError: bad target, value, IoU or policy; DatasetError: predictions that do not pair.
    """
    _check_target(target, value, iou)
    check_difficult(difficult)
    paired = pair_predictions(gt, preds, len(labels))
    gts = [prepare_gt(r, difficult) for r in gt]
    matches = match_all(gts, paired, len(labels), iou)
    all_scores = np.concatenate([cm.scores for cm in matches]) if matches else np.zeros(0)
    floor = float(all_scores.min()) if all_scores.size else 0.0
    classes: dict[str, float] = {}
    achieved: dict[str, dict[str, Any]] = {}
    unreachable: list[str] = []
    for name, cm in zip(labels.names, matches):
        n = len(cm.scores)
        ctp = np.cumsum(cm.tp)
        # the last index of each run of equal scores: thresholds are distinct scores, ties pass together
        last = np.flatnonzero(np.r_[cm.scores[1:] != cm.scores[:-1], True]) if n else np.zeros(0, dtype=np.int64)
        tp, passed = ctp[last], last + 1
        recall = tp / cm.gt if cm.gt else np.full(len(last), np.nan)
        precision = tp / passed
        ok = recall >= value if target == "recall" else precision >= value
        if cm.gt and ok.any():
            j = int(np.flatnonzero(ok)[0] if target == "recall" else np.flatnonzero(ok)[-1])
        else:
            unreachable.append(name)
            j = len(last) - 1
        if j >= 0:
            classes[name] = float(cm.scores[last[j]])
            t, p = int(tp[j]), int(passed[j])
        else:
            classes[name] = floor
            t, p = 0, 0
        achieved[name] = {"recall": t / cm.gt if cm.gt else None, "precision": t / p if p else None,
                          "tp": t, "fp": p - t, "gt": cm.gt}
    no_gt = [n for n in unreachable if not achieved[n]["gt"]]
    missed = [n for n in unreachable if achieved[n]["gt"]]
    if missed:
        log.warning("target %s >= %g not reachable for %s (threshold = lowest score seen)", target, value,
                    ", ".join(missed))
    if no_gt:
        log.info("no gt object of %s in this set: threshold = lowest score seen", ", ".join(no_gt))
    return OperatingPoints(target, float(value), float(iou), classes, achieved, unreachable)


def _as_thresholds(thresholds: OperatingPoints | Mapping[str, float] | ArrayLike, labels: LabelMap | None,
                   num_classes: int | None) -> NDArray[np.float64]:
    if isinstance(thresholds, OperatingPoints):
        thresholds = thresholds.classes if labels is None else thresholds.for_labels(labels)
    if isinstance(thresholds, Mapping):
        if labels is not None:
            return OperatingPoints("recall", 0, 0.5, dict(thresholds)).for_labels(labels)
        return np.array(list(thresholds.values()), dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.size == 1 and num_classes:
        t = np.full(num_classes, float(t[0]))
    return t


def image_decisions(
    gt: Sequence[ImageRecord],
    preds: Sequence[ImageRecord],
    thresholds: OperatingPoints | Mapping[str, float] | ArrayLike,
    *,
    labels: LabelMap | None = None,
    iou: float = 0.5,
    difficult: str = "ignore",
) -> dict[str, Any]:
    """Image-level accept / reject decisions at per-class thresholds, as a line would take them.

    An image is **flagged** (rejected) when any detection, of any class and anywhere, passes its
    class threshold (``score >= threshold``); the image-level decision does not ask whether the
    detection overlaps the defect. An image is **defective** when it holds at least one counted
    gt object (not crowd, not difficult under ``"ignore"``), **defect-free** when it holds no
    object at all; images holding only ignored objects are in neither group (``ambiguous_images``).

    * escape: a defective image that is not flagged; ``escape_rate = escapes / defective_images``;
    * false reject: a defect-free image that is flagged; ``false_reject_rate = false_rejects /
      defect_free_images``;
    * object-level: ``object_miss_rate = missed_objects / objects``, where an object is missed when
      no passing detection of its class matches it at ``iou`` (COCO rule); also per class.

    Rates are None when their denominator is 0.

    Args:
        thresholds: an `OperatingPoints`, ``{name: threshold}``, ``(K,)`` thresholds in class-id
            order, or one number for every class.
        labels: the label map (needed to check names; when None, ``thresholds`` is in class-id order).

    Raises:
        ConfigError: class names of ``thresholds`` differ from ``labels``; DatasetError: unpaired predictions.
    """
    check_difficult(difficult)
    k = len(labels) if labels is not None else None
    thr = _as_thresholds(thresholds, labels, k)
    k = len(thr)
    names = labels.names if labels is not None else (
        list(thresholds.classes) if isinstance(thresholds, OperatingPoints) else
        list(thresholds) if isinstance(thresholds, Mapping) else [str(i) for i in range(k)])
    paired = pair_predictions(gt, preds, k)
    defective = defect_free = ambiguous = 0
    escaped: list[str] = []
    rejected: list[str] = []
    objects = np.zeros(k, dtype=np.int64)
    missed = np.zeros(k, dtype=np.int64)
    for r, p in zip(gt, paired):
        g = prepare_gt(r, difficult)
        boxes, cls, sc = pred_arrays(p)
        passing = sc >= thr[cls]
        flagged = bool(passing.any())
        if g.counted:
            defective += 1
            if not flagged:
                escaped.append(r.name)
        elif not len(g.boxes):
            defect_free += 1
            if flagged:
                rejected.append(r.name)
        else:
            ambiguous += 1
        for c in np.unique(g.class_ids[~g.ignore]):
            gsel = g.class_ids == c
            dsel = passing & (cls == c)
            match, _ = greedy_match(boxes[dsel], sc[dsel], g.boxes[gsel], g.ignore[gsel], iou)
            found = np.zeros(int(gsel.sum()), dtype=bool)
            found[match[match >= 0]] = True
            counted = ~g.ignore[gsel]
            objects[c] += int(counted.sum())
            missed[c] += int((counted & ~found).sum())

    def rate(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "images": len(gt), "defective_images": defective, "defect_free_images": defect_free,
        "ambiguous_images": ambiguous,
        "escapes": len(escaped), "escape_rate": rate(len(escaped), defective),
        "false_rejects": len(rejected), "false_reject_rate": rate(len(rejected), defect_free),
        "objects": int(objects.sum()), "missed_objects": int(missed.sum()),
        "object_miss_rate": rate(int(missed.sum()), int(objects.sum())),
        "per_class_miss": {n: {"objects": int(o), "missed": int(m), "miss_rate": rate(int(m), int(o))}
                           for n, o, m in zip(names, objects, missed)},
        "thresholds": {n: float(t) for n, t in zip(names, thr)},
        "iou": iou,
        "escaped_images": escaped, "false_reject_images": rejected,
    }


__all__ = ["OperatingPoints", "choose_thresholds", "image_decisions"]


def model_operating_points(model: Path | str) -> OperatingPoints | None:
    """The operating points a trained or exported model carries, or None.

    Looked up, in this order: an ``.onnx`` file's EdgeVision metadata (``thresholds``); a run folder's
    ``thresholds.json``; for a checkpoint ``RUN/weights/best.pt``, the run's ``thresholds.json``.

    Raises:
        ConfigError: a thresholds file or metadata entry that is not a valid operating-points document.
    """
    path = Path(model)
    if path.suffix.lower() == ".onnx" and path.is_file():
        from edgevision.runtime import read_metadata

        meta = read_metadata(path)
        return OperatingPoints.from_dict(meta.thresholds, where=f"{path}: metadata thresholds") if meta.thresholds \
            else None
    thr = path / "thresholds.json" if path.is_dir() else path.parent.parent / "thresholds.json"
    return OperatingPoints.load(thr) if thr.is_file() else None
