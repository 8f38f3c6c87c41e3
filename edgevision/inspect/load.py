"""Load ground truth and predictions into a named FiftyOne dataset, evaluate and tag them.

Two evaluations run when there are predictions, both FiftyOne's COCO-style ``evaluate_detections``:

* ``eval`` on every prediction, with ``compute_mAP=True``, ``max_preds=100`` (pycocotools' 100
  detections per image and class, what EdgeVision's evaluator keeps), IoU 0.50:0.05:0.95 and the
  objects EdgeVision ignores marked as crowds: its mAP is EdgeVision's, and `LoadResult` carries both
  numbers (they agree within 1e-3; the tests check it);
* ``eval_op`` on the predictions that pass the model's operating points (per-class thresholds; a
  single ``conf`` when the model has none) at IoU ``iou``: each predicted object is tagged ``tp`` or
  ``fp``, each ground-truth object ``tp`` or ``fn`` (label tags, and the ``eval_op`` attribute);
  samples get ``eval_op_tp`` / ``eval_op_fp`` / ``eval_op_fn`` counts, the image decision
  (``decision``: reject / accept at the operating points) and the sample tags ``escape`` (a defective
  image accepted) and ``false_reject`` (a defect-free image rejected); the escape and false-reject rates,
  with their counts and exact (Clopper-Pearson) 95% intervals (and the expected cost per 1,000 parts when
  the operating points were priced), go into the dataset's ``info["edgevision"]["decisions"]``. Saved
  views ``missed`` (samples with an object missed) and ``false_positives`` (samples with a false alarm)
  open the worst first.

The dataset is built under a temporary name and renamed when complete: a failure leaves no
half-loaded dataset, and a replaced one (``overwrite``) stays until the new one is ready.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError
from edgevision.evaluate.matching import prepare_gt
from edgevision.inspect._speed import linear_saves
from edgevision.inspect.fo_env import LOADING_MARK, check_dataset_name, database_dir, import_fiftyone
from edgevision.inspect.samples import GT_FIELD, PRED_FIELD, record_to_sample

log = logging.getLogger(__name__)

MAX_DETS = 100
"""Detections per image and class that count for mAP (EdgeVision's evaluator and pycocotools)."""

_BATCH = 200


@dataclass
class LoadRequest:
    """What to load.

    Attributes:
        name: the FiftyOne dataset name; overwrite: replace a dataset of that name.
        gt: ground-truth records (images on disk); labels: their label map.
        preds: prediction records paired with ``gt`` by name (None: ground truth only).
        thresholds: per-class operating points ``{name: threshold}`` for tagging; None: ``conf`` for all.
        thresholds_source: where they came from (shown and stored).
        conf: threshold for every class when ``thresholds`` is None; iou: IoU for the tags.
        difficult: ``ignore`` (difficult objects are crowd-like, EdgeVision's default) or ``count``.
        db_dir: FiftyOne's database folder (see `edgevision.inspect.fo_env.database_dir`).
        source: what the data and predictions were (stored in the dataset's ``info``).
        costs: ``{"escape", "false_reject", "defect_rate"}`` per part when the operating points were priced
            (`edgevision.evaluate.operating.costs_of`): the decisions then carry the expected cost per 1,000 parts.
    """

    name: str
    gt: Sequence[ImageRecord]
    labels: LabelMap
    preds: Sequence[ImageRecord] | None = None
    thresholds: dict[str, float] | None = None
    thresholds_source: str = ""
    conf: float = 0.25
    iou: float = 0.5
    difficult: str = "ignore"
    overwrite: bool = False
    db_dir: Path | None = None
    source: dict[str, Any] = field(default_factory=dict)
    costs: dict[str, Any] | None = None


@dataclass
class ClassRow:
    """One class at the operating points (counts) and over all detections (AP)."""

    name: str
    gt: int
    predicted: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    ap50_95: float | None = None
    ap50: float | None = None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


@dataclass
class LoadResult:
    """What `load_into_fiftyone` made.

    Attributes:
        fo_map50_95 / fo_map50: FiftyOne's mAP; ev_map50_95 / ev_map50: EdgeVision's evaluator on the
            same data (None without predictions or without a counted object).
        decisions: escape / false-reject counts and rates at the operating points (`image_decisions`), with
            ``escape`` / ``false_reject`` (each rate's count and exact 95% interval) and, when the request
            carries costs, ``expected_cost`` per 1,000 parts; also stored in the dataset's ``info["edgevision"]``.
        saved_views: the saved views created; tags: sample tag -> count.
    """

    name: str
    db_dir: Path | None
    samples: int
    objects: int
    splits: dict[str, int]
    classes: list[str]
    rows: list[ClassRow] = field(default_factory=list)
    has_predictions: bool = False
    thresholds: dict[str, float] | None = None
    thresholds_source: str = ""
    fo_map50_95: float | None = None
    fo_map50: float | None = None
    ev_map50_95: float | None = None
    ev_map50: float | None = None
    decisions: dict[str, Any] | None = None
    saved_views: list[str] = field(default_factory=list)
    tags: dict[str, int] = field(default_factory=dict)


def _check_request(req: LoadRequest) -> None:
    check_dataset_name(req.name)
    if req.difficult not in ("ignore", "count"):
        raise ConfigError(f"--difficult {req.difficult}: expected ignore or count (FiftyOne keeps every object)")
    if not req.gt:
        raise DatasetError("no images to load; check --data and --split")
    missing = [r.name for r in req.gt if r.path is None or not Path(r.path).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} image file(s) are missing (first: {missing[0]}); FiftyOne shows images "
                           "from disk, so the dataset's images must be there")
    if req.preds is not None:
        names = {r.name for r in req.gt}
        extra = [p.name for p in req.preds if p.name not in names]
        if extra:
            raise DatasetError(f"{len(extra)} prediction(s) are for images that are not in the dataset (first: "
                               f"'{extra[0]}'); check --split and the image names")
    if req.thresholds is not None and sorted(req.thresholds) != sorted(req.labels.names):
        raise ConfigError(f"operating points are for classes {sorted(req.thresholds)} but the dataset has "
                          f"{req.labels.names} ({req.thresholds_source})")


def load_into_fiftyone(req: LoadRequest, progress: Callable[[str, int, int], None] | None = None) -> LoadResult:
    """Create the FiftyOne dataset ``req.name`` from ``req`` (see the module docstring).

    Args:
        progress: called with (stage, done, total) as samples are added.

    Raises:
        ConfigError: a dataset of that name exists and ``overwrite`` is False, bad thresholds or name,
            FiftyOne not installed or its database not starting.
        DatasetError: missing images, predictions for images not in ``gt``.
    """
    _check_request(req)
    fo = import_fiftyone(req.db_dir)
    if req.name in fo.list_datasets() and not req.overwrite:
        raise ConfigError(f"FiftyOne dataset '{req.name}' already exists in {database_dir(req.db_dir)}; pass "
                          "--overwrite to replace it (its tags and edits are lost) or choose another --name")
    tmp_name = f"{req.name}{LOADING_MARK}{os.getpid()}"
    if tmp_name in fo.list_datasets():
        fo.delete_dataset(tmp_name)
    ds = fo.Dataset(tmp_name)
    try:
        result = _fill(fo, ds, req, progress)
        if req.name in fo.list_datasets():
            fo.delete_dataset(req.name)
        ds.name = req.name
        ds.persistent = True
    except BaseException:
        ds.delete()
        raise
    result.name = req.name
    return result


def _fill(fo: Any, ds: Any, req: LoadRequest, progress: Callable[[str, int, int], None] | None) -> LoadResult:
    ds.default_classes = list(req.labels.names)
    ds.info = {"edgevision": {**req.source, "classes": list(req.labels.names), "difficult": req.difficult,
                              "loaded": datetime.now(timezone.utc).isoformat(timespec="seconds")}}
    preds_by_name = {p.name: p for p in req.preds} if req.preds is not None else None
    gt_counts: Counter[str] = Counter()
    n = len(req.gt)
    for start in range(0, n, _BATCH):
        batch = []
        for r in req.gt[start:start + _BATCH]:
            g = prepare_gt(r, req.difficult)
            gt_counts.update(req.labels.names[c] for c in g.class_ids[~g.ignore].tolist())
            pred = None
            if preds_by_name is not None:
                pred = preds_by_name.get(r.name) or ImageRecord(name=r.name, size_hw=r.size_hw,
                                                                scores=np.zeros(0, np.float32))
            batch.append(record_to_sample(fo, r, req.labels, g.ignore.tolist(), pred))
        ds.add_samples(batch, progress=False)
        if progress:
            progress("adding samples", min(start + _BATCH, n), n)
    ds.save()
    splits = Counter(r.split or "(none)" for r in req.gt)
    result = LoadResult(name=req.name, db_dir=database_dir(req.db_dir), samples=n,
                        objects=sum(len(r) for r in req.gt), splits=dict(splits), classes=list(req.labels.names))
    result.rows = [ClassRow(name=c, gt=gt_counts.get(c, 0)) for c in req.labels.names]
    if req.preds is not None:
        with linear_saves():  # FiftyOne's per-sample saves are quadratic in objects otherwise
            _evaluate(fo, ds, req, result, progress)
    result.tags = dict(ds.count_sample_tags())
    return result


def _evaluate(fo: Any, ds: Any, req: LoadRequest, result: LoadResult,
              progress: Callable[[str, int, int], None] | None) -> None:
    from fiftyone import ViewField as F

    from edgevision.evaluate.coco import coco_evaluate
    from edgevision.evaluate.operating import image_decisions

    assert req.preds is not None
    names = list(req.labels.names)
    if progress:
        progress("FiftyOne evaluate_detections (mAP)", 0, 2)
    res = ds.evaluate_detections(PRED_FIELD, gt_field=GT_FIELD, eval_key="eval", method="coco", classes=names,
                                 compute_mAP=True, max_preds=MAX_DETS, iscrowd="ev_ignore", progress=False)
    result.has_predictions = True
    precision = np.asarray(res.precision)  # (T, K, 101), -1 for classes without counted gt
    res_classes = list(res.classes)
    for row in result.rows:
        k = res_classes.index(row.name)
        p, p50 = precision[:, k, :], precision[0, k, :]
        row.ap50_95 = float(p[p > -1].mean()) if (p > -1).any() else None
        row.ap50 = float(p50[p50 > -1].mean()) if (p50 > -1).any() else None
    if (precision > -1).any():
        result.fo_map50_95 = float(res.mAP())
        p50 = precision[0]
        result.fo_map50 = float(p50[p50 > -1].mean())
    ev = coco_evaluate(req.gt, req.preds, req.labels, max_dets=MAX_DETS, difficult=req.difficult)
    result.ev_map50_95, result.ev_map50 = ev.map50_95, ev.map50

    thr = req.thresholds if req.thresholds is not None else {c: req.conf for c in names}
    result.thresholds, result.thresholds_source = thr, req.thresholds_source or f"--conf {req.conf:g} for every class"
    ds.info["edgevision"].update(thresholds=thr, thresholds_source=result.thresholds_source, iou=req.iou)
    ds.save()
    passing = None
    for c, t in thr.items():
        e = (F("label") == c) & (F("confidence") >= t)
        passing = e if passing is None else passing | e
    if progress:
        progress("FiftyOne evaluate_detections (operating points)", 1, 2)
    op_view = ds.filter_labels(PRED_FIELD, passing, only_matches=False)
    op_view.evaluate_detections(PRED_FIELD, gt_field=GT_FIELD, eval_key="eval_op", method="coco", classes=names,
                                iou=req.iou, iscrowd="ev_ignore", progress=False)
    # Tags and counts from the eval_op attributes. FiftyOne marks a detection matching a crowd (here: an
    # object EdgeVision ignores) "tp"; EdgeVision counts it neither way: it is tagged "ignored". An image
    # with any detection at its operating point (one eval_op evaluated) is rejected, as `image_decisions` says.
    sample_names = ds.values("ev_name")
    rejected: set[str] = set()
    tagged: dict[tuple[str, str], list[str]] = defaultdict(list)  # (field, tag) -> label ids
    counted: Counter[tuple[str, str]] = Counter()
    ignored_gt: set[str] = set()
    gt_cols = [ds.values(f"{GT_FIELD}.detections.{k}") for k in ("id", "label", "eval_op", "ev_ignore")]
    for ids, labs, evals, ign in zip(*gt_cols):
        for i, lab, e, g in zip(ids or [], labs or [], evals or [], ign or []):
            if g:
                ignored_gt.add(i)
            elif e in ("tp", "fn"):
                tagged[(GT_FIELD, e)].append(i)
                if e == "fn":  # true positives are counted on the detection side
                    counted[(lab, e)] += 1
    pred_cols = [ds.values(f"{PRED_FIELD}.detections.{k}") for k in ("id", "label", "eval_op", "eval_op_id")]
    for sample_name, ids, labs, evals, matched in zip(sample_names, *pred_cols):
        for i, lab, e, m in zip(ids or [], labs or [], evals or [], matched or []):
            if e is None:  # below its class's operating point: not evaluated at it
                continue
            rejected.add(sample_name)
            tag = "ignored" if m in ignored_gt else e
            tagged[(PRED_FIELD, tag)].append(i)
            counted[(lab, tag)] += 1
    for (fld, tag), label_ids in sorted(tagged.items()):
        ds.select_labels(ids=label_ids, fields=fld).tag_labels(tag, label_fields=fld)
    for row in result.rows:
        row.tp, row.fp, row.fn = counted[(row.name, "tp")], counted[(row.name, "fp")], counted[(row.name, "fn")]
        row.predicted = row.tp + row.fp + counted[(row.name, "ignored")]

    dec = image_decisions(req.gt, req.preds, thr, labels=req.labels, iou=req.iou, difficult=req.difficult,
                          costs=req.costs)
    result.decisions = {k: v for k, v in dec.items() if k not in ("escaped_images", "false_reject_images")}
    ds.info["edgevision"]["decisions"] = {k: dec.get(k) for k in (
        "defective_images", "defect_free_images", "escapes", "escape_rate", "false_rejects", "false_reject_rate",
        "escape", "false_reject", "expected_cost")}
    ds.save()
    name_ids = dict(zip(sample_names, ds.values("id")))
    ds.set_values("decision", ["reject" if nm in rejected else "accept" for nm in sample_names])
    for tag, members in (("escape", dec["escaped_images"]), ("false_reject", dec["false_reject_images"])):
        if members:
            ds.select([name_ids[m] for m in members]).tag_samples(tag)
    missed = ds.filter_labels(GT_FIELD, (F("eval_op") == "fn") & (F("ev_ignore") != True)).sort_by(  # noqa: E712
        "eval_op_fn", reverse=True)
    fps = ds.filter_labels(PRED_FIELD, F("eval_op") == "fp").sort_by("eval_op_fp", reverse=True)
    for view_name, view, what in (("missed", missed, "samples with ground-truth objects missed at the operating points"),
                                  ("false_positives", fps, "samples with false alarms at the operating points")):
        ds.save_view(view_name, view, description=what, overwrite=True)
        result.saved_views.append(view_name)
    if progress:
        progress("evaluated", 2, 2)
