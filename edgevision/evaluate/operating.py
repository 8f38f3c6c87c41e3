"""Operating points: the per-class confidence thresholds a line decides with, and the image-level
decisions (escapes, false rejects) they give. This is what QA signs.

Three ways to choose them (`SelectionRule`), all on one labelled split (usually val):

* **per class** (``target: recall`` or ``precision``): each class gets the highest threshold whose recall
  reaches the target (or the lowest whose precision does). A class whose target no threshold at or above
  ``min_threshold`` reaches is listed in ``unreachable`` and falls back to a stated rule: its F1-optimal
  threshold (``fallback: f1``, the default) or the model's default confidence (``fallback: default``),
  never the lowest score seen. A class with no gt object in the split gets the default.
* **per image** (``max_escape_rate`` and / or ``max_false_reject_rate``): a part is rejected when any of its
  detections passes its class threshold, so the thresholds are chosen together against the image-level
  escape rate (defective images accepted) and false-reject rate (defect-free images rejected): one bounded,
  the other minimised (escape bounded, false rejects minimised when both or only the escape limit is given).
* **priced** (``cost_escape`` and ``cost_false_reject`` per part): the thresholds minimising the expected cost
  per part, ``cost_escape * p * escape_rate + cost_false_reject * (1 - p) * false_reject_rate`` with ``p``
  the defect rate (``defect_rate``, else the split's share of defective images), subject to any rate limit.

Image-level search: with one threshold per class the accepted parts form a box (every class score below
its threshold); finding the best box is NP-hard in the number of classes, so the search is exact (every
combination of candidate thresholds) while there are at most `EXACT_LIMIT` combinations, and otherwise a
coordinate descent (each step an exact one-class scan) from several starts, never worse than the best single
threshold shared by all classes. Candidate thresholds of a class are its per-image highest scores at or above
``min_threshold`` (so no class is switched off: its highest candidate still rejects its best-scored image).
The achievable trade-off (`TradeoffPoint` list: for each escape count, the fewest false rejects) is kept
with the result, for the table and the plot.

Detections are matched to ground truth per class greedily by score at ``iou`` (the COCO rule, see
`edgevision.evaluate.matching`); a detection passes when ``score >= threshold``. Every rate carries its
exact (Clopper-Pearson) 95% interval (`edgevision.core.stats`). Saved as ``thresholds.json`` in the run
folder (`OperatingPoints.to_dict`, schema ``edgevision.thresholds/2``; ``/1`` files still read) and carried
into the exported model's metadata, where ``rules`` tells the runtime which rule each class uses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError
from edgevision.core.stats import Rate, images_needed
from edgevision.evaluate.matching import (
    check_difficult,
    greedy_match,
    match_all,
    pair_predictions,
    pred_arrays,
    prepare_gt,
)
from edgevision.runtime.metadata import legacy_rule

log = logging.getLogger(__name__)

SCHEMA = "edgevision.thresholds/2"
SCHEMAS_READ = ("edgevision.thresholds/1", SCHEMA)
MIN_THRESHOLD = 0.05
"""The lowest threshold a rule may choose unless the user lowers it: below it a nano detector's noise passes
(a random-noise image gets hundreds of detections at 0.001)."""
DEFAULT_CONF = 0.25
"""The default confidence (the runtime's ``defaults.conf``): the ``default`` fallback."""
FALLBACKS = ("f1", "default")
EXACT_LIMIT = 50_000
"""Image-level search is exact up to this many threshold combinations."""
MODES = ("recall", "precision", "image", "cost")


@dataclass(frozen=True)
class SelectionRule:
    """How operating points are chosen (see the module doc); `mode` says which way.

    Attributes:
        target, value: the per-class rule (``recall`` or ``precision`` at least ``value``).
        max_escape_rate, max_false_reject_rate: image-level limits (either switches to image-level choice).
        cost_escape, cost_false_reject: the cost of one escaped defective part and of one rejected good part
            (both switch to priced choice; rate limits, if given, still hold).
        defect_rate: the share of defective parts on the line, for the expected cost (None: the split's).
        fallback: ``f1`` or ``default``: the rule of a class whose per-class target is unreachable.
        min_threshold: no rule chooses a threshold below this; iou: matching IoU; default_conf: the default.
    """

    target: str = "recall"
    value: float = 0.9
    max_escape_rate: float | None = None
    max_false_reject_rate: float | None = None
    cost_escape: float | None = None
    cost_false_reject: float | None = None
    defect_rate: float | None = None
    fallback: str = "f1"
    min_threshold: float = MIN_THRESHOLD
    iou: float = 0.5
    default_conf: float = DEFAULT_CONF

    @property
    def mode(self) -> str:
        if self.cost_escape is not None or self.cost_false_reject is not None:
            return "cost"
        if self.max_escape_rate is not None or self.max_false_reject_rate is not None:
            return "image"
        return self.target

    def check(self) -> None:
        """Raises ConfigError naming the setting that is out of range or missing its partner."""
        _check_target(self.target, self.value, self.iou)
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"fallback: expected one of {', '.join(FALLBACKS)}, got '{self.fallback}'")
        if not 0.0 < self.min_threshold < 1.0:
            raise ConfigError(f"min_threshold: expected a number in (0, 1), got {self.min_threshold}")
        if not 0.0 < self.default_conf <= 1.0:
            raise ConfigError(f"default conf: expected a number in (0, 1], got {self.default_conf}")
        for name in ("max_escape_rate", "max_false_reject_rate", "defect_rate"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name}: expected a rate in [0, 1], got {v}")
        if (self.cost_escape is None) != (self.cost_false_reject is None):
            raise ConfigError("priced operating points need both cost_escape and cost_false_reject (per part), "
                              "e.g. --cost-escape 50 --cost-false-reject 2")
        for name in ("cost_escape", "cost_false_reject"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"{name}: expected a cost above 0 (per part), got {v}")

    def describe(self) -> str:
        """One line: what the rule asks for."""
        m = self.mode
        if m in ("recall", "precision"):
            return (f"per class: {m} >= {self.value:g} at IoU {self.iou:g} (unreachable: {_FALLBACK_TEXT[self.fallback]}"
                    f"; thresholds >= {self.min_threshold:g})")
        limits = _limits_text(self.max_escape_rate, self.max_false_reject_rate)
        if m == "image":
            return f"per image: {limits} (thresholds >= {self.min_threshold:g})"
        return (f"per image, priced: escape {self.cost_escape:g}, false reject {self.cost_false_reject:g} per part, "
                f"defect rate {'of the split' if self.defect_rate is None else f'{self.defect_rate:g}'}"
                + (f"; {limits}" if self.max_escape_rate is not None or self.max_false_reject_rate is not None else "")
                + f" (thresholds >= {self.min_threshold:g})")


_FALLBACK_TEXT = {"f1": "F1-optimal threshold", "default": "the default confidence"}


def _limits_text(max_escape: float | None, max_fr: float | None) -> str:
    parts = []
    if max_escape is not None:
        parts.append(f"escape rate <= {max_escape:.3g}")
    if max_fr is not None:
        parts.append(f"false-reject rate <= {max_fr:.3g}")
    minimised = "false rejects minimised" if max_escape is not None or max_fr is None else "escapes minimised"
    return ", ".join(parts) + (f", {minimised}" if parts else minimised)


@dataclass
class OperatingPoints:
    """Per-class confidence thresholds and how each was chosen.

    Attributes:
        target: the mode: ``recall`` / ``precision`` (per class), ``image`` or ``cost`` (per image), or
            ``manual`` (thresholds given by hand); value: the per-class target (None for image / cost);
            iou: matching IoU.
        classes: ``{name: threshold}`` in label-map order (a detection passes at ``score >= threshold``).
        rules: ``{name: {"rule": kind, "text": why}}``: the rule each class's threshold comes from, kind one
            of ``recall``, ``precision``, ``f1``, ``default``, ``image``, ``cost``, ``manual``.
        achieved: ``{name: {"recall", "precision", "tp", "fp", "gt"}}`` on the set they were chosen on.
        unreachable: classes whose per-class target no threshold >= ``min_threshold`` reaches, and for image /
            priced choice the whole rule (``["*"]``) when its limits could not hold (the closest point was kept).
        decisions: `image_decisions` at these thresholds (escape / false-reject rates with their intervals,
            the expected cost when priced).
        rule: the `SelectionRule` settings (a plain dict); curve: the image-level trade-off (`TradeoffPoint`
            dicts), when computed; note: why the rule could not hold, if it could not.
    """

    target: str
    value: float | None
    iou: float
    classes: dict[str, float]
    achieved: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)
    decisions: dict[str, Any] | None = None
    rules: dict[str, dict[str, str]] = field(default_factory=dict)
    rule: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, Any]] | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": SCHEMA, "target": self.target, "value": self.value, "iou": self.iou,
                             "classes": dict(self.classes), "rules": self.rules, "achieved": self.achieved,
                             "unreachable": list(self.unreachable), "rule": self.rule}
        if self.note:
            d["note"] = self.note
        if self.decisions is not None:
            d["decisions"] = self.decisions
        if self.curve is not None:
            d["curve"] = self.curve
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "thresholds") -> OperatingPoints:
        """Inverse of `to_dict`; reads ``edgevision.thresholds/1`` too (rules derived from its target).

        Raises:
            ConfigError: a missing key, an unknown schema, or a threshold that is not a number in [0, 1].
        """
        schema = d.get("schema", SCHEMAS_READ[0]) if isinstance(d, Mapping) else None
        if schema not in SCHEMAS_READ:
            raise ConfigError(f"{where}: schema {schema!r} is not one this EdgeVision reads ({', '.join(SCHEMAS_READ)})")
        try:
            classes = {str(k): float(v) for k, v in d["classes"].items()}
            value = d.get("value")
            op = cls(target=str(d["target"]), value=None if value is None else float(value),
                     iou=float(d.get("iou", 0.5)), classes=classes, achieved=dict(d.get("achieved", {})),
                     unreachable=list(d.get("unreachable", [])), decisions=d.get("decisions"),
                     rules={str(k): dict(v) for k, v in (d.get("rules") or {}).items()}, rule=dict(d.get("rule") or {}),
                     curve=d.get("curve"), note=d.get("note"))
        except KeyError as e:
            raise ConfigError(f"{where}: missing key {e.args[0]!r}; expected target, value, iou, classes") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{where}: expected classes {{name: number}}, got {d.get('classes')!r} ({e})") from e
        bad = {n: t for n, t in classes.items() if not 0.0 <= t <= 1.0}
        if bad:
            raise ConfigError(f"{where}: thresholds must lie in [0, 1]; got {bad}")
        for name in classes:
            op.rules.setdefault(name, legacy_rule(d, name))
        return op

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

    def describe(self) -> list[str]:
        """One line per class: ``name threshold: rule text``."""
        return [f"{n} {t:.3g}: {self.rules.get(n, {}).get('text', self.target)}" for n, t in self.classes.items()]

    def below_minimum(self, minimum: float = MIN_THRESHOLD) -> dict[str, float]:
        """Classes whose threshold is under ``minimum`` (a degenerate operating point, e.g. from thresholds/1)."""
        low = float(self.rule.get("min_threshold", minimum)) if self.rule else minimum
        return {n: t for n, t in self.classes.items() if t < min(low, minimum)}


def _check_target(target: str, value: float, iou: float) -> None:
    if target not in ("recall", "precision"):
        raise ConfigError(f"target: expected recall or precision, got '{target}'")
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"target value: expected a number in [0, 1], got {value}")
    if not 0.0 < iou <= 1.0:
        raise ConfigError(f"iou: expected a number in (0, 1], got {iou}")


@dataclass(frozen=True)
class _ClassCurve:
    """One class's object-level curve: at each distinct score (descending), the detections passing and the
    true positives among them (COCO greedy matching), and the gt objects counted."""

    scores: NDArray[np.float64]
    tp: NDArray[np.int64]
    passed: NDArray[np.int64]
    gt: int

    def at(self, threshold: float) -> dict[str, Any]:
        j = int(np.searchsorted(-self.scores, -threshold, side="right")) - 1  # last score >= threshold
        t, p = (int(self.tp[j]), int(self.passed[j])) if j >= 0 else (0, 0)
        return {"recall": t / self.gt if self.gt else None, "precision": t / p if p else None,
                "tp": t, "fp": p - t, "gt": self.gt}


def _class_curves(gt: Sequence[ImageRecord], preds: Sequence[ImageRecord], labels: LabelMap, iou: float,
                  difficult: str) -> list[_ClassCurve]:
    paired = pair_predictions(gt, preds, len(labels))
    gts = [prepare_gt(r, difficult) for r in gt]
    curves = []
    for cm in match_all(gts, paired, len(labels), iou):
        n = len(cm.scores)
        # the last index of each run of equal scores: thresholds are distinct scores, ties pass together
        last = np.flatnonzero(np.r_[cm.scores[1:] != cm.scores[:-1], True]) if n else np.zeros(0, dtype=np.int64)
        curves.append(_ClassCurve(np.asarray(cm.scores, np.float64)[last], np.cumsum(cm.tp)[last].astype(np.int64),
                                  (last + 1).astype(np.int64), int(cm.gt)))
    return curves


def _fallback(curve: _ClassCurve, rule: SelectionRule, why: str) -> tuple[float, dict[str, str]]:
    """The threshold and rule of a class whose target is unreachable (``why`` says why)."""
    default = max(rule.default_conf, rule.min_threshold)
    if rule.fallback == "f1" and curve.gt:
        ok = curve.scores >= rule.min_threshold
        f1 = 2 * curve.tp / (curve.passed + curve.gt)
        if ok.any() and f1[ok].max() > 0:
            best = f1[ok].max()
            j = int(np.flatnonzero(ok & (f1 == best))[0])  # the highest threshold of the best F1
            return float(curve.scores[j]), {"rule": "f1", "text": f"F1-optimal (F1 {best:.2f}): {why}"}
        why += "; no threshold finds any object"
    return default, {"rule": "default", "text": f"default {default:g}: {why}"}


def choose_thresholds(
    gt: Sequence[ImageRecord],
    preds: Sequence[ImageRecord],
    labels: LabelMap,
    target: str = "recall",
    value: float = 0.9,
    iou: float = 0.5,
    *,
    difficult: str = "ignore",
    fallback: str = "f1",
    min_threshold: float = MIN_THRESHOLD,
    default_conf: float = DEFAULT_CONF,
) -> OperatingPoints:
    """Choose one confidence threshold per class for a per-class target (see the module doc).

    ``target="recall"``: the HIGHEST threshold (>= ``min_threshold``) whose recall reaches ``value`` (fewest
    false alarms for that recall). ``target="precision"``: the LOWEST threshold (>= ``min_threshold``) whose
    precision reaches ``value`` (precision is not monotone in the threshold, so every candidate is checked).
    A class no such threshold serves is listed in ``unreachable`` and gets the ``fallback`` rule; a class
    with no gt object in the set gets the default confidence. ``rules`` says which rule each class got.

    Args:
        gt, preds: ground truth and predictions, paired by record name.
        labels: the label map both use.
        target, value: what to reach; iou: the IoU a detection needs to count as finding an object.
        difficult: how ``difficult`` objects count (see `edgevision.evaluate.coco`).
        fallback: ``f1`` or ``default``; min_threshold: the lowest threshold chosen; default_conf: the default.

    Raises:
        ConfigError: bad target, value, IoU or policy; DatasetError: predictions that do not pair.
    """
    rule = SelectionRule(target=target, value=value, iou=iou, fallback=fallback, min_threshold=min_threshold,
                         default_conf=default_conf)
    rule.check()
    check_difficult(difficult)
    curves = _class_curves(gt, preds, labels, iou, difficult)
    classes: dict[str, float] = {}
    rules: dict[str, dict[str, str]] = {}
    unreachable: list[str] = []
    for name, cv in zip(labels.names, curves):
        if not cv.gt:
            default = max(default_conf, min_threshold)
            classes[name], rules[name] = default, {"rule": "default",
                                                   "text": f"default {default:g}: no gt object of this class in the set"}
            unreachable.append(name)
            continue
        measure = cv.tp / cv.gt if target == "recall" else cv.tp / np.maximum(cv.passed, 1)
        ok = (measure >= value) & (cv.scores >= min_threshold)
        if ok.any():
            j = int(np.flatnonzero(ok)[0] if target == "recall" else np.flatnonzero(ok)[-1])
            classes[name] = float(cv.scores[j])
            rules[name] = {"rule": target, "text": f"{target} >= {value:g} (reached {measure[j]:.3f})"}
            continue
        unreachable.append(name)
        below = (measure >= value).any()
        best = float(measure[cv.scores >= min_threshold].max()) if (cv.scores >= min_threshold).any() else 0.0
        why = (f"{target} >= {value:g} reached only below the minimum threshold {min_threshold:g}" if below
               else f"{target} >= {value:g} not reachable (best {best:.3f})")
        classes[name], rules[name] = _fallback(cv, rule, why)
    achieved = {n: cv.at(classes[n]) for n, cv in zip(labels.names, curves)}
    missed = [n for n in unreachable if achieved[n]["gt"]]
    if missed:
        log.warning("target %s >= %g not reachable for %s: %s", target, value, ", ".join(missed),
                    "; ".join(f"{n} {classes[n]:.3g} ({rules[n]['rule']})" for n in missed))
    return OperatingPoints(target, float(value), float(iou), classes, achieved, unreachable, rules=rules,
                           rule=_rule_dict(rule))


def _rule_dict(rule: SelectionRule) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(rule)
    d["mode"] = rule.mode
    return d


@dataclass(frozen=True)
class ImageScores:
    """Per image, the highest detection score of each class: all the image-level decision needs.

    Attributes:
        names: class names; scores: ``(n, K)`` float64, ``-1`` where the image has no detection of the class;
        defective: ``(n,)`` True for an image holding a counted gt object, False for a defect-free one (images
        holding only ignored objects are left out); images: the image names.
    """

    names: list[str]
    scores: NDArray[np.float64]
    defective: NDArray[np.bool_]
    images: list[str]

    @property
    def n_defective(self) -> int:
        return int(self.defective.sum())

    @property
    def n_good(self) -> int:
        return int((~self.defective).sum())


def image_scores(gt: Sequence[ImageRecord], preds: Sequence[ImageRecord], labels: LabelMap,
                 difficult: str = "ignore") -> ImageScores:
    """`ImageScores` of predictions against ground truth (paired by name; see `image_decisions` for the groups)."""
    check_difficult(difficult)
    k = len(labels)
    paired = pair_predictions(gt, preds, k)
    rows, defective, names = [], [], []
    for r, p in zip(gt, paired):
        g = prepare_gt(r, difficult)
        if not g.counted and len(g.boxes):
            continue  # ambiguous: only ignored objects
        _, cls, sc = pred_arrays(p)
        row = np.full(k, -1.0)
        if len(sc):
            np.maximum.at(row, cls, sc.astype(np.float64))
        rows.append(row)
        defective.append(bool(g.counted))
        names.append(r.name)
    return ImageScores(list(labels.names), np.array(rows, np.float64).reshape(-1, k), np.array(defective, bool), names)


@dataclass(frozen=True)
class TradeoffPoint:
    """One achievable image-level operating point: counts on the split and the thresholds giving them."""

    escapes: int
    false_rejects: int
    defective: int
    good: int
    thresholds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        e, f = Rate(self.escapes, self.defective), Rate(self.false_rejects, self.good)
        return {"escapes": self.escapes, "false_rejects": self.false_rejects, "defective_images": self.defective,
                "defect_free_images": self.good, "escape_rate": e.value, "false_reject_rate": f.value,
                "escape_upper": e.upper, "false_reject_upper": f.upper, "thresholds": self.thresholds}


class _Search:
    """Image-level threshold search over `ImageScores` (see the module doc for the method)."""

    def __init__(self, ims: ImageScores, min_threshold: float, default_conf: float) -> None:
        self.ims = ims
        self.S = ims.scores
        self.d = ims.defective
        self.D, self.G = ims.n_defective, ims.n_good
        # candidates per class: the distinct per-image highest scores >= min_threshold, ascending
        self.cands = [np.unique(col[col >= min_threshold]) for col in self.S.T]
        self.fixed = max(default_conf, min_threshold)  # classes without candidates: nothing on this split passes
        self.active = [c for c, v in enumerate(self.cands) if len(v)]

    def thresholds(self, idx: Sequence[int]) -> NDArray[np.float64]:
        t = np.full(self.S.shape[1], self.fixed)
        for c in self.active:
            t[c] = self.cands[c][idx[c]]
        return t

    def counts(self, idx: Sequence[int]) -> tuple[int, int]:
        flagged = (self.thresholds(idx) <= self.S).any(axis=1)
        return int((self.d & ~flagged).sum()), int((~self.d & flagged).sum())

    def n_combinations(self) -> int:
        n = 1
        for c in self.active:
            n *= len(self.cands[c])
        return n

    def enumerate(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """Every combination: ``(idx (m, K), escapes (m,), false_rejects (m,))``."""
        K = self.S.shape[1]
        sizes = [len(self.cands[c]) for c in self.active]
        total = self.n_combinations()
        hits = [self.S[:, c][None, :] >= self.cands[c][:, None] for c in self.active]  # (m_c, n) each
        idx_all = np.zeros((total, K), np.int64)
        esc = np.zeros(total, np.int64)
        fr = np.zeros(total, np.int64)
        chunk = max(1, 2_000_000 // max(1, self.S.shape[0]))
        for lo in range(0, total, chunk):
            ids = np.unravel_index(np.arange(lo, min(total, lo + chunk)), sizes) if sizes else ()
            flagged = np.zeros((min(total, lo + chunk) - lo, self.S.shape[0]), bool)
            for h, i in zip(hits, ids):
                flagged |= h[i]
            for c, i in zip(self.active, ids):
                idx_all[lo:lo + len(flagged), c] = i
            esc[lo:lo + len(flagged)] = (self.d & ~flagged).sum(axis=1)
            fr[lo:lo + len(flagged)] = (~self.d & flagged).sum(axis=1)
        return idx_all, esc, fr

    def descend(self, idx0: Sequence[int], key: Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.float64]]
                ) -> list[int]:
        """Coordinate descent on ``key(escapes, false_rejects)`` (rows: lexicographic criteria, smaller is
        better), each step the exact best threshold of one class given the others."""
        idx = list(idx0)
        for _ in range(100):
            moved = False
            for c in self.active:
                others = np.zeros(len(self.d), bool)
                t = self.thresholds(idx)
                for o in self.active:
                    if o != c:
                        others |= self.S[:, o] >= t[o]
                v = self.cands[c]
                sd = np.sort(self.S[self.d & ~others, c])
                sg = np.sort(self.S[~self.d & ~others, c])
                esc = np.searchsorted(sd, v, side="left")
                fr = int((~self.d & others).sum()) + len(sg) - np.searchsorted(sg, v, side="left")
                k = key(esc, fr)  # (criteria, m)
                order = np.lexsort((-v,) + tuple(k[::-1]))  # best key, then the highest threshold
                j = int(order[0])
                if tuple(k[:, j]) < tuple(k[:, idx[c]]):
                    idx[c], moved = j, True
            if not moved:
                break
        return idx

    def _raise_ties(self, idx: list[int]) -> list[int]:
        """Each class's threshold raised to the highest candidate flagging the same images (same counts)."""
        idx = list(idx)
        base = self.counts(idx)
        for c in self.active:
            for j in range(len(self.cands[c]) - 1, idx[c], -1):
                trial = idx[:c] + [j] + idx[c + 1:]
                if self.counts(trial) == base:
                    idx[c] = j
                    break
        return idx

    def starts(self, key: Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.float64]]) -> list[list[int]]:
        """Start points: every class at its lowest candidate, at its highest, and the best threshold shared by
        all classes (each class at its smallest candidate >= it) by ``key``."""
        K = self.S.shape[1]
        low = [0] * K
        high = [len(self.cands[c]) - 1 if c in self.active else 0 for c in range(K)]
        if not self.active:
            return [low]
        values = np.unique(np.concatenate([self.cands[c] for c in self.active]))
        idx = np.zeros((len(values), K), np.int64)
        for c in self.active:
            idx[:, c] = np.minimum(np.searchsorted(self.cands[c], values), len(self.cands[c]) - 1)
        esc, fr = np.zeros(len(values), np.int64), np.zeros(len(values), np.int64)
        for j in range(len(values)):
            esc[j], fr[j] = self.counts(idx[j])
        shared = list(map(int, idx[_lexbest(key(esc, fr), values)]))
        return [low, high, shared]


def _lexbest(keys: NDArray[np.float64], tie: NDArray[np.float64]) -> int:
    return int(np.lexsort((-tie,) + tuple(keys[::-1]))[0])


def tradeoff_curve(ims: ImageScores, *, min_threshold: float = MIN_THRESHOLD, default_conf: float = DEFAULT_CONF,
                   max_points: int = 25) -> list[TradeoffPoint]:
    """What the split can achieve: for escape counts from the fewest to the most, the fewest false rejects
    (exact up to `EXACT_LIMIT` combinations, else coordinate descent at up to ``max_points`` escape levels);
    dominated points removed, sorted by escapes."""
    s = _Search(ims, min_threshold, default_conf)
    K = ims.scores.shape[1]
    points: dict[int, tuple[int, list[int]]] = {}
    if s.n_combinations() <= EXACT_LIMIT:
        idx, esc, fr = s.enumerate()
        tie = idx.sum(axis=1).astype(float)
        for e in np.unique(esc):
            sel = np.flatnonzero(esc == e)
            best = sel[_lexbest(np.stack([fr[sel]]).astype(float), tie[sel])]
            points[int(e)] = (int(fr[best]), list(map(int, idx[best])))
    else:
        lo = s.counts([0] * K)[0]
        hi = s.counts([len(s.cands[c]) - 1 if c in s.active else 0 for c in range(K)])[0]
        for e in np.unique(np.round(np.linspace(lo, hi, max_points)).astype(int)):
            idx_e = _best_of(s, _constraint_key(int(e), None, "false_rejects"))
            ce, cf = s.counts(idx_e)
            if ce <= e and (ce not in points or cf < points[ce][0]):
                points[ce] = (cf, idx_e)
    out: list[TradeoffPoint] = []
    for e in sorted(points):
        f, i = points[e]
        if out and f >= out[-1].false_rejects:
            continue  # dominated: more escapes, no fewer false rejects
        out.append(TradeoffPoint(e, f, s.D, s.G, dict(zip(ims.names, map(float, s.thresholds(i))))))
    return out


def _constraint_key(max_esc: int | None, max_fr: int | None, minimise: str
                    ) -> Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.float64]]:
    def key(esc: NDArray[np.int64], fr: NDArray[np.int64]) -> NDArray[np.float64]:
        esc, fr = np.asarray(esc, float), np.asarray(fr, float) + np.zeros_like(np.asarray(esc, float))
        viol = np.maximum(0, esc - (max_esc if max_esc is not None else np.inf)) + \
            np.maximum(0, fr - (max_fr if max_fr is not None else np.inf))
        main, other = (fr, esc) if minimise == "false_rejects" else (esc, fr)
        return np.stack([viol, main, other])
    return key


def _best_of(s: _Search, key: Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.float64]],
             extra_starts: Sequence[Sequence[int]] = ()) -> list[int]:
    """The best combination by ``key``: exact when small, else the best coordinate descent of all starts."""
    if s.n_combinations() <= EXACT_LIMIT:
        idx, esc, fr = s.enumerate()
        tie = idx.sum(axis=1).astype(float)
        return s._raise_ties(list(map(int, idx[_lexbest(key(esc, fr), tie)])))
    best: list[int] | None = None
    best_key: tuple[float, ...] | None = None
    for start in [*s.starts(key), *extra_starts]:
        idx = s.descend(start, key)
        e, f = s.counts(idx)
        k = tuple(key(np.array([e]), np.array([f]))[:, 0])
        if best_key is None or k < best_key:
            best, best_key = idx, k
    assert best is not None
    return s._raise_ties(best)
class InfeasibleError(ConfigError):
    """Image-level limits that cannot both hold on the split (the message says the best reachable)."""


def choose_image_thresholds(
    gt: Sequence[ImageRecord],
    preds: Sequence[ImageRecord],
    labels: LabelMap,
    rule: SelectionRule,
    *,
    difficult: str = "ignore",
    strict: bool = True,
    curve_points: int = 25,
) -> OperatingPoints:
    """Per-class thresholds chosen together against image-level rates, or priced (see the module doc).

    Args:
        gt, preds: ground truth and predictions, paired by name; labels: their label map.
        rule: a `SelectionRule` whose `mode` is ``image`` or ``cost``.
        difficult: how ``difficult`` objects count.
        strict: True: limits that cannot hold raise `InfeasibleError` (one line naming the best reachable);
            False: the closest point is kept (escape limit first), listed in ``unreachable`` as ``"*"`` with a
            ``note`` (training keeps its run rather than failing at the end).
        curve_points: escape levels of the trade-off curve when the search is not exact.

    Raises:
        ConfigError: a bad rule, or a split that cannot measure what the rule needs (no defective or no
            defect-free image); InfeasibleError: see ``strict``.
    """
    rule.check()
    if rule.mode not in ("image", "cost"):
        raise ConfigError(f"choose_image_thresholds: the rule's mode is {rule.mode}; give max_escape_rate / "
                          "max_false_reject_rate or cost_escape / cost_false_reject")
    ims = image_scores(gt, preds, labels, difficult)
    D, G = ims.n_defective, ims.n_good
    what = "priced" if rule.mode == "cost" else "image-level"
    if not D:
        raise ConfigError(f"{what} operating points need defective images, and the split has none (of {len(gt)}): "
                          "the escape rate cannot be measured; add defective images to the split")
    if not G:
        raise ConfigError(f"{what} operating points need defect-free images, and the split has none (all {D} "
                          "images hold a defect): the false-reject rate cannot be measured; add defect-free images "
                          "(e.g. --background when splitting, or good parts from the line), or choose per class "
                          "with --target recall=V")
    s = _Search(ims, rule.min_threshold, rule.default_conf)
    max_esc = None if rule.max_escape_rate is None else int(np.floor(rule.max_escape_rate * D + 1e-9))
    max_fr = None if rule.max_false_reject_rate is None else int(np.floor(rule.max_false_reject_rate * G + 1e-9))
    curve = tradeoff_curve(ims, min_threshold=rule.min_threshold, default_conf=rule.default_conf,
                           max_points=curve_points)
    p = rule.defect_rate if rule.defect_rate is not None else D / (D + G)
    if rule.mode == "cost":
        assert rule.cost_escape is not None and rule.cost_false_reject is not None
        w_e, w_f = rule.cost_escape * p / D, rule.cost_false_reject * (1 - p) / G

        def key(esc: NDArray[np.int64], fr: NDArray[np.int64]) -> NDArray[np.float64]:
            base = _constraint_key(max_esc, max_fr, "false_rejects")(esc, fr)
            return np.stack([base[0], w_e * base[2] + w_f * base[1], base[2]])

        starts = [[int(np.searchsorted(s.cands[c], pt.thresholds[n])) if c in s.active else 0
                   for c, n in enumerate(ims.names)] for pt in curve]
        idx = _best_of(s, key, starts)
    else:
        minimise = "false_rejects" if max_esc is not None or max_fr is None else "escapes"
        idx = _best_of(s, _constraint_key(max_esc, max_fr, minimise))
    esc, fr = s.counts(idx)
    note = None
    if (max_esc is not None and esc > max_esc) or (max_fr is not None and fr > max_fr):
        note = _infeasible_text(s, rule, max_esc, max_fr)
        if strict:
            raise InfeasibleError(note)
        log.warning("%s", note)
        # keep the escape limit first: the fewest false rejects among the fewest escapes reachable
        idx = _best_of(s, _constraint_key(max_esc, None, "false_rejects")) if max_esc is not None and \
            _feasible(s, max_esc, None) else _best_of(s, _constraint_key(None, max_fr, "escapes"))
    t = s.thresholds(idx)
    classes = {n: float(v) for n, v in zip(ims.names, t)}
    text = rule.describe().split(" (thresholds")[0]
    rules = {n: ({"rule": rule.mode, "text": text} if c in s.active else
                 {"rule": "default", "text": f"default {s.fixed:g}: no detection of this class at or above "
                                             f"{rule.min_threshold:g} in the split, so it decides nothing there"})
             for c, n in enumerate(ims.names)}
    curves = _class_curves(gt, preds, labels, rule.iou, difficult)
    achieved = {n: cv.at(classes[n]) for n, cv in zip(labels.names, curves)}
    op = OperatingPoints(rule.mode, None, rule.iou, classes, achieved, ["*"] if note else [], rules=rules,
                         rule=_rule_dict(rule), curve=[pt.to_dict() for pt in curve], note=note)
    op.decisions = image_decisions(gt, preds, op, labels=labels, iou=rule.iou, difficult=difficult,
                                   costs=costs_of(op))
    return op


def _feasible(s: _Search, max_esc: int | None, max_fr: int | None) -> bool:
    idx = _best_of(s, _constraint_key(max_esc, max_fr, "false_rejects"))
    e, f = s.counts(idx)
    return (max_esc is None or e <= max_esc) and (max_fr is None or f <= max_fr)


def _infeasible_text(s: _Search, rule: SelectionRule, max_esc: int | None, max_fr: int | None) -> str:
    """One line: the limits cannot hold together; what each alone reaches at best."""
    D, G = s.D, s.G
    parts = []
    if max_esc is not None:
        e, f = s.counts(_best_of(s, _constraint_key(max_esc, None, "false_rejects")))
        parts.append(f"at escape rate <= {rule.max_escape_rate:g} the lowest false-reject rate is "
                     f"{Rate(f, G).text()}" if e <= max_esc else
                     f"the lowest escape rate reachable is {Rate(e, D).text()} (every threshold at its minimum)")
    if max_fr is not None:
        e, f = s.counts(_best_of(s, _constraint_key(None, max_fr, "escapes")))
        parts.append(f"at false-reject rate <= {rule.max_false_reject_rate:g} the lowest escape rate is "
                     f"{Rate(e, D).text()}" if f <= max_fr else
                     f"the lowest false-reject rate reachable is {Rate(f, G).text()}")
    limits = " and ".join(x for x in (None if rule.max_escape_rate is None else f"escape rate <= {rule.max_escape_rate:g}",
                                      None if rule.max_false_reject_rate is None else
                                      f"false-reject rate <= {rule.max_false_reject_rate:g}") if x)
    return (f"{limits} cannot hold on this "
            f"split ({D} defective, {G} defect-free images): " + "; ".join(parts))


def select_operating_points(
    gt: Sequence[ImageRecord],
    preds: Sequence[ImageRecord],
    labels: LabelMap,
    rule: SelectionRule,
    *,
    difficult: str = "ignore",
    strict: bool = True,
) -> OperatingPoints:
    """Operating points by ``rule`` (per class, per image or priced), with their image-level decisions and
    the image-level trade-off curve (when the split has both defective and defect-free images)."""
    rule.check()
    if rule.mode in ("image", "cost"):
        return choose_image_thresholds(gt, preds, labels, rule, difficult=difficult, strict=strict)
    op = choose_thresholds(gt, preds, labels, rule.target, rule.value, rule.iou, difficult=difficult,
                           fallback=rule.fallback, min_threshold=rule.min_threshold, default_conf=rule.default_conf)
    ims = image_scores(gt, preds, labels, difficult)
    if ims.n_defective and ims.n_good:
        op.curve = [pt.to_dict() for pt in tradeoff_curve(ims, min_threshold=rule.min_threshold,
                                                           default_conf=rule.default_conf)]
    op.decisions = image_decisions(gt, preds, op, labels=labels, iou=rule.iou, difficult=difficult)
    return op


def costs_of(op: OperatingPoints | Mapping[str, Any] | None) -> dict[str, float] | None:
    """The ``{"escape", "false_reject", "defect_rate"}`` costs an operating-point document was priced with, or None."""
    if op is None:
        return None
    rule = op.rule if isinstance(op, OperatingPoints) else (op.get("rule") or {})
    if rule.get("cost_escape") is None or rule.get("cost_false_reject") is None:
        return None
    return {"escape": float(rule["cost_escape"]), "false_reject": float(rule["cost_false_reject"]),
            "defect_rate": None if rule.get("defect_rate") is None else float(rule["defect_rate"])}


def expected_cost(decisions: Mapping[str, Any], costs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The expected cost per 1,000 parts of image-level ``decisions`` (from `image_decisions`) at ``costs``.

    ``1000 * (cost_escape * p * escape_rate + cost_false_reject * (1 - p) * false_reject_rate)``, ``p`` the defect
    rate (``costs["defect_rate"]``, else the split's). The interval uses each rate's Clopper-Pearson bounds
    (conservative: both at their extremes). None when either rate is undefined.
    """
    D, G = decisions.get("defective_images") or 0, decisions.get("defect_free_images") or 0
    if not D or not G:
        return None
    p = costs.get("defect_rate")
    p = D / (D + G) if p is None else float(p)
    ce, cf = float(costs["escape"]), float(costs["false_reject"])
    e, f = Rate(decisions["escapes"], D), Rate(decisions["false_rejects"], G)

    def cost(er: float, fr: float) -> float:
        return 1000 * (ce * p * er + cf * (1 - p) * fr)

    return {"per_1000_parts": cost(e.value, f.value), "lower": cost(e.lower, f.lower),  # type: ignore[arg-type]
            "upper": cost(e.upper, f.upper), "cost_escape": ce, "cost_false_reject": cf,  # type: ignore[arg-type]
            "defect_rate": p, "defect_rate_from": "split" if costs.get("defect_rate") is None else "given"}


def rate_of(decisions: Mapping[str, Any] | None, which: str) -> Rate | None:
    """The escape (``which="escape"``) or false-reject (``"false_reject"``) `Rate` of an `image_decisions` dict,
    also from documents written before the intervals were stored (counts only); None when not measured."""
    if not decisions:
        return None
    doc = decisions.get(which)
    if isinstance(doc, Mapping) and doc.get("n") is not None:
        return Rate(int(doc["k"]), int(doc["n"]))
    k, n = (("escapes", "defective_images") if which == "escape" else ("false_rejects", "defect_free_images"))
    if decisions.get(k) is None or decisions.get(n) is None:
        return None
    return Rate(int(decisions[k]), int(decisions[n]))


def decisions_summary(decisions: Mapping[str, Any] | None) -> str:
    """One line for reports: both rates with their 95% intervals and, when priced, the expected cost."""
    if not decisions:
        return "image-level decisions not measured"
    e, f = rate_of(decisions, "escape"), rate_of(decisions, "false_reject")
    text = (f"escape rate {e.text() if e else '-'}, false-reject rate {f.text() if f else '-'}")
    c = decisions.get("expected_cost")
    if c:
        text += (f"; expected cost {c['per_1000_parts']:.4g} per 1,000 parts (95% CI {c['lower']:.4g}-{c['upper']:.4g}; "
                 f"escape {c['cost_escape']:g}, false reject {c['cost_false_reject']:g} per part, defect rate "
                 f"{c['defect_rate']:.3g}{' of the split' if c.get('defect_rate_from') == 'split' else ''})")
    return text


def limit_support(rate_kind: str, n: int, limit: float) -> str | None:
    """One line when ``n`` images are too few for a rate limit to be shown at 95% (even with zero failures),
    else None. ``rate_kind``: ``escape`` (defective images) or ``false-reject`` (defect-free images)."""
    need = images_needed(limit)
    if need is None or n >= need:
        return None
    group, article, events = (("defective", "an", "escapes") if rate_kind == "escape"
                              else ("defect-free", "a", "false rejects"))
    zero = Rate(0, n).upper if n else 1.0
    return (f"{n} {group} images cannot show {article} {rate_kind} rate <= {limit:g} at 95% confidence: even 0 "
            f"{events} give an upper bound of {100 * (zero or 1.0):.1f}%; {need} are needed")


def _as_thresholds(thresholds: OperatingPoints | Mapping[str, float] | ArrayLike, labels: LabelMap | None,
                   num_classes: int | None) -> NDArray[np.float64]:
    if isinstance(thresholds, OperatingPoints):
        thresholds = thresholds.classes if labels is None else thresholds.for_labels(labels)
    if isinstance(thresholds, Mapping):
        if labels is not None:
            return OperatingPoints("manual", None, 0.5, dict(thresholds)).for_labels(labels)
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
    costs: Mapping[str, Any] | None = None,
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

    Rates are None when their denominator is 0. ``escape`` and ``false_reject`` hold each rate with its exact
    95% interval (`edgevision.core.stats.Rate.to_dict`); with ``costs`` (``{"escape", "false_reject"[,
    "defect_rate"]}``, per part; default: the costs ``thresholds`` was priced with) ``expected_cost`` holds the
    expected cost per 1,000 parts (`expected_cost`).

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

    d: dict[str, Any] = {
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
        "escape": Rate(len(escaped), defective).to_dict(), "false_reject": Rate(len(rejected), defect_free).to_dict(),
    }
    if costs is None and isinstance(thresholds, OperatingPoints):
        costs = costs_of(thresholds)
    if costs is not None:
        d["expected_cost"] = expected_cost(d, costs)
    return d


__all__ = [
    "ImageScores",
    "InfeasibleError",
    "OperatingPoints",
    "SelectionRule",
    "TradeoffPoint",
    "choose_image_thresholds",
    "choose_thresholds",
    "costs_of",
    "decisions_summary",
    "expected_cost",
    "image_decisions",
    "image_scores",
    "limit_support",
    "rate_of",
    "select_operating_points",
    "tradeoff_curve",
]
