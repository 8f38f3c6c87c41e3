"""Paired bootstrap over images of the COCO mAP: how sure is a drop from model A to model B?

Two prediction sets on the same images (an FP32 model and its INT8 copy) give two mAPs; on a few
hundred images a 1 % difference is within the noise of which images happened to be in the set. The
paired bootstrap resamples the *images* with replacement, scores both models on the same resample,
and reads a confidence interval of the drop from the replicates.

How it stays exact and fast:
    * `match_table` runs pycocotools' ``COCOeval.evaluate`` once (the same COCO objects as
      `edgevision.evaluate.coco_evaluate`) and keeps, per class and image, what ``accumulate``
      needs at area ``all`` and ``maxDet = max_dets``: the detection scores, matched / ignored
      flags per IoU threshold and the count of counted gt objects.
    * `MatchTable.score` replays ``COCOeval.accumulate`` + ``summarize`` for any multiset of images
      (an image drawn k times counts as k renamed copies of it): detections of the drawn images
      concatenated in pycocotools' image order (images sorted by COCO id), a stable sort by score,
      cumulative TP / FP, the precision envelope and the 101-point interpolation, classes without a
      counted object left out. For all images it equals `coco_evaluate` exactly (the tests check
      ``==``). The stable sort is done once: a resample only repeats the detections of each image
      (ties of one image, one class, one score repeat as a block, as the copies would).

Typical use::

    a = match_table(gt, preds_fp32, labels)
    b = match_table(gt, preds_int8, labels)
    res = paired_bootstrap(a, b, n_boot=1000, seed=0)
    if res.rel_drop is not None and res.rel_drop > 0.01 and res.excludes_zero():
        ...  # the INT8 model is worse by more than the budget, and not by chance
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError
from edgevision.evaluate.coco import _run_cocoeval, image_ids, max_dets_param

log = logging.getLogger(__name__)

__all__ = ["BootstrapResult", "MatchTable", "match_table", "paired_bootstrap"]

METRICS = ("map50_95", "map50")
"""Metrics `MatchTable.score` gives and `paired_bootstrap` can compare."""

REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
"""pycocotools' 101 recall thresholds (``Params.recThrs``, computed the same way)."""


def _i64() -> NDArray[np.int64]:
    return np.zeros(0, dtype=np.int64)


@functools.lru_cache(maxsize=4096)
def _needed_tp(npig: int) -> NDArray[np.int64]:
    """Per recall threshold, the fewest TPs whose recall reaches it, as pycocotools computes recall.

    pycocotools takes the first detection where ``rc = tp / npig >= recThr``; ``tp / npig`` (float
    division) grows with ``tp``, so that is where ``tp`` first reaches this count (``npig`` at most).
    """
    rc = np.arange(npig + 1, dtype=float) / npig
    need = np.searchsorted(rc, REC_THRS, side="left").astype(np.int64)
    need.flags.writeable = False
    return need


@dataclass
class _Plan:
    """The accumulate() replay of one `MatchTable`, arranged so a resample costs O(detections).

    Each class's detections are put in pycocotools' order over all images (a stable sort by score)
    and cut into runs of one image and one score. In a resample an image drawn ``w`` times puts
    ``w`` copies of each of its runs in a row (ties across images keep image order; the copies of a
    run of ties repeat as a block). Precision is then needed only at the true positives: the
    precision envelope at the first detection reaching a recall threshold is the largest precision at
    that TP or a later one, and the TP count there is known (`_needed_tp`); what a resample changes
    is the number of false positives ranked before each TP, a weighted prefix sum. "Units" are the
    runs holding a TP at an IoU threshold; detections that are false positives at every threshold
    (most low-score ones) are summed once for all thresholds.
    """

    t_n: int
    k_n: int
    af_img: NDArray[np.int64]  # images of the always-FP detections, in pycocotools order
    mf_img: NDArray[np.int64]  # images of the other FP detections, threshold by threshold
    u_row: NDArray[np.int64]  # row t * K + k of each unit (non-decreasing)
    u_img: NDArray[np.int64]
    u_tp: NDArray[np.int64]  # TPs in the run at t
    u_fp: NDArray[np.int64]  # FPs in the run at t
    u_af: NDArray[np.int64]  # (2, U): always-FP prefix index at the class start and at the run start
    u_mf: NDArray[np.int64]  # (2, U): the same into mf_img
    u_pe: NDArray[np.int64]  # first TP of each unit in pe_fpw
    pe_fpw: NDArray[np.int64]  # per TP of a unit: FPs of the run ranked before it
    simple: bool  # every unit is one TP alone in its run

    @classmethod
    def build(cls, table: MatchTable) -> _Plan:
        t_n, d_n = table.matched.shape
        k_n, n = table.n_gt.shape
        offs = table.offsets
        block = np.repeat(np.arange(k_n * n, dtype=np.int64), np.diff(offs))
        det_img, det_cls = block % max(n, 1), block // max(n, 1)
        # accumulate(): a class's detections concatenated in image order, then a stable sort by score
        order = np.concatenate([offs[k * n] + np.argsort(-table.scores[offs[k * n]:offs[(k + 1) * n]],
                                                         kind="mergesort") for k in range(k_n)]).astype(np.int64)
        sc, img, dcls = table.scores[order], det_img[order], det_cls[order]
        m, ig = table.matched[:, order], table.ignored[:, order]
        tp, fp = m & ~ig, ~m & ~ig
        new = np.ones(d_n, dtype=bool)
        new[1:] = (sc[1:] != sc[:-1]) | (img[1:] != img[:-1]) | (dcls[1:] != dcls[:-1])
        gid = np.cumsum(new) - 1
        g_start = np.flatnonzero(new)
        g_end = np.append(g_start[1:], d_n)
        cls_start = offs[np.arange(k_n) * n]
        always = fp.all(axis=0) if t_n else np.zeros(d_n, dtype=bool)
        afc = np.concatenate([[0], np.cumsum(always)])
        parts: dict[str, list[NDArray[Any]]] = {k: [] for k in ("row", "img", "tp", "fp", "af", "mf", "fpw")}
        mf_img: list[NDArray[np.int64]] = []
        seg = 0
        for t in range(t_n):
            mixed = fp[t] & ~always
            mfc = seg + np.concatenate([[0], np.cumsum(mixed)])
            mf_img.append(img[mixed])
            seg += int(mixed.sum())
            tpp = np.flatnonzero(tp[t])
            if not len(tpp):
                continue
            ug, n_tp = np.unique(gid[tpp], return_counts=True)
            fpc = np.concatenate([[0], np.cumsum(fp[t])])
            gs, k_u = g_start[ug], dcls[g_start[ug]]
            parts["row"].append(t * k_n + k_u)
            parts["img"].append(img[gs])
            parts["tp"].append(n_tp)
            parts["fp"].append(fpc[g_end[ug]] - fpc[gs])
            parts["af"].append(np.stack([afc[cls_start[k_u]], afc[gs]]))
            parts["mf"].append(np.stack([mfc[cls_start[k_u]], mfc[gs]]))
            parts["fpw"].append(fpc[tpp] - fpc[g_start[gid[tpp]]])

        def cat(key: str, rows: int = 0) -> NDArray[np.int64]:
            if parts[key]:
                return np.concatenate(parts[key], axis=-1).astype(np.int64)
            return np.zeros((rows, 0) if rows else 0, dtype=np.int64)

        u_tp, u_fp = cat("tp"), cat("fp")
        return cls(
            t_n=t_n, k_n=k_n, af_img=img[always].astype(np.int64),
            mf_img=np.concatenate(mf_img).astype(np.int64) if mf_img else _i64(),
            u_row=cat("row"), u_img=cat("img"), u_tp=u_tp, u_fp=u_fp, u_af=cat("af", 2), u_mf=cat("mf", 2),
            u_pe=(np.cumsum(u_tp) - u_tp).astype(np.int64), pe_fpw=cat("fpw"),
            simple=bool((u_tp == 1).all() and (u_fp == 0).all()),
        )

    def precision(self, w: NDArray[np.int64], npig: NDArray[np.int64]) -> NDArray[np.float64]:
        """``(T, R, K)`` precision of the multiset of images drawn ``w`` times each; -1 where ``npig == 0``."""
        t_n, k_n, r_n = self.t_n, self.k_n, len(REC_THRS)
        rows = t_n * k_n
        has = npig > 0
        csa = np.concatenate([[0], np.cumsum(w[self.af_img])])
        csm = np.concatenate([[0], np.cumsum(w[self.mf_img])])
        # false positives ranked before each unit's run, within its class
        fpb = (csa[self.u_af[1]] - csa[self.u_af[0]]) + (csm[self.u_mf[1]] - csm[self.u_mf[0]])
        wu = w[self.u_img]
        if self.simple:
            cnt = wu
            fp_ev = np.repeat(fpb, wu)
        else:  # the run is repeated as a block: copy c of TP j has c * (run FPs) + (FPs before j) more
            cnt = wu * self.u_tp
            unit = np.repeat(np.arange(len(cnt)), cnt)
            off = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            tpg = self.u_tp[unit]
            fp_ev = fpb[unit] + (off // tpg) * self.u_fp[unit] + self.pe_fpw[self.u_pe[unit] + off % tpg]
        n_ev = np.bincount(self.u_row, weights=cnt, minlength=rows).astype(np.int64)
        row_ev = np.repeat(self.u_row, cnt)
        pos = np.arange(len(row_ev)) - (np.cumsum(n_ev) - n_ev)[row_ev]  # TP count before, in the row
        tpf = (pos + 1).astype(float)
        pr = tpf / (fp_ev.astype(float) + tpf + np.spacing(1))  # pycocotools: tp / (fp + tp + eps)
        maxlen = max(int(n_ev.max()) if rows else 0, 1)
        env = np.zeros((rows, maxlen))
        env[row_ev, pos] = pr
        env = np.maximum.accumulate(env[:, ::-1], axis=1)[:, ::-1]  # the precision envelope at each TP
        need = np.stack([_needed_tp(int(c)) if c > 0 else np.zeros(r_n, dtype=np.int64) for c in npig])
        need = np.tile(need, (t_n, 1))  # (T * K, R)
        got = np.take_along_axis(env, np.clip(need - 1, 0, maxlen - 1), axis=1)
        q = np.where(n_ev[:, None] >= np.maximum(need, 1), got, 0.0)  # past the last recall: 0
        prec = q.reshape(t_n, k_n, r_n).transpose(0, 2, 1).copy()
        prec[:, :, ~has] = -1.0
        return prec


@dataclass(eq=False)
class MatchTable:
    """What ``COCOeval.accumulate`` needs of one evaluation, per class and image, in flat arrays.

    Images are indexed two ways: by their position in ``gt`` (what `score` takes) and by their
    pycocotools position (images sorted by COCO id, see `edgevision.evaluate.coco.image_ids`), which
    orders the arrays. Detections are stored class by class, image by image (pycocotools
    position), within an image as ``evaluateImg`` sorts them (by score, stable), at most
    ``max_dets`` per image and class.

    Attributes:
        names: gt image names, in ``gt`` order.
        classes: class names (canonical order).
        max_dets: detections kept per image and class; difficult: the gt policy used.
        position: ``(N,)`` pycocotools position of each gt image (``gt`` order).
        n_gt: ``(K, N)`` counted (not ignored) gt objects per class and pycocotools position.
        offsets: ``(K * N + 1,)`` detections of class ``k`` on image position ``i`` are
            ``offsets[k * N + i]:offsets[k * N + i + 1]``.
        scores: ``(D,)`` float64 detection scores.
        matched: ``(T, D)`` bool, matched to a gt object (pycocotools ``dtMatches > 0``) per IoU threshold.
        ignored: ``(T, D)`` bool, neither TP nor FP (``dtIgnore``: matched to a crowd / ignored object).
    """

    names: tuple[str, ...]
    classes: tuple[str, ...]
    max_dets: int
    difficult: str
    position: NDArray[np.int64]
    n_gt: NDArray[np.int64]
    offsets: NDArray[np.int64]
    scores: NDArray[np.float64]
    matched: NDArray[np.bool_]
    ignored: NDArray[np.bool_]
    _plan: _Plan | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._plan = _Plan.build(self)

    @property
    def n_images(self) -> int:
        return len(self.names)

    def counts(self, idx: ArrayLike) -> NDArray[np.int64]:
        """How many times each image is drawn in ``idx`` (gt positions), indexed by pycocotools position."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        n = self.n_images
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"image indices must be in 0..{n - 1}, got {idx.min()}..{idx.max()}")
        return np.bincount(self.position[idx], minlength=n).astype(np.int64)

    def score(self, idx: ArrayLike) -> dict[str, float | None]:
        """mAP50-95 and mAP50 of the images ``idx`` (positions in ``gt``, repeats count again).

        Replays pycocotools ``accumulate`` + ``summarize`` exactly, as if the images were given
        to `coco_evaluate` with each repeat a renamed copy placed next to its original. A metric is
        None when no drawn image has a counted gt object.

        Returns:
            ``{"map50_95": ..., "map50": ...}``.
        """
        return self._score_counts(self.counts(idx))

    def precision(self, idx: ArrayLike) -> NDArray[np.float64]:
        """pycocotools' ``eval["precision"][:, :, :, 0, -1]`` ``(T, 101, K)`` for the images ``idx`` (-1: no gt)."""
        return self._precision(self.counts(idx))

    def _precision(self, w: NDArray[np.int64]) -> NDArray[np.float64]:
        assert self._plan is not None
        return self._plan.precision(w, self.n_gt @ w)

    def _score_counts(self, w: NDArray[np.int64]) -> dict[str, float | None]:
        prec = self._precision(w)
        # summarize() stats[1] takes every maxDets entry equal to maxDets[2]: their (equal) precisions
        # repeat in the mean, which can move its last bit: repeat them the same way
        mult = _max_dets_multiplicity(self.max_dets)
        p50 = np.repeat(prec[0][:, :, None], mult, axis=2)
        return {
            "map50_95": float(np.mean(prec[prec > -1])) if (prec > -1).any() else None,
            "map50": float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else None,
        }


def _max_dets_multiplicity(max_dets: int) -> int:
    md = sorted(max_dets_param(max_dets))
    return md.count(md[2])


def match_table(
    gt: Sequence[ImageRecord],
    preds: Sequence[ImageRecord],
    labels: LabelMap,
    *,
    max_dets: int = 100,
    difficult: str = "ignore",
) -> MatchTable:
    """Run pycocotools ``COCOeval.evaluate`` once and keep what mAP needs per class and image.

    Args and Raises: as `edgevision.evaluate.coco_evaluate` (same COCO objects, same ``maxDets``).

    Returns:
        The `MatchTable`; ``table.score(np.arange(len(gt)))`` equals `coco_evaluate`'s
        ``map50_95`` / ``map50``.
    """
    ev, _, _ = _run_cocoeval(gt, preds, labels, max_dets, difficult)
    p = ev.params
    img_ids = [int(i) for i in p.imgIds]
    cat_ids = [int(c) for c in p.catIds]
    if cat_ids != list(range(1, len(labels) + 1)):  # pragma: no cover - to_coco_gt gives ids 1..K
        raise DatasetError(f"unexpected COCO category ids {cat_ids}")
    n, k_n, t_n = len(img_ids), len(cat_ids), len(p.iouThrs)
    a0 = p.areaRngLbl.index("all")
    pos_of_id = {i: j for j, i in enumerate(img_ids)}
    position = np.array([pos_of_id[i] for i in image_ids(gt)], dtype=np.int64)
    n_gt = np.zeros((k_n, n), dtype=np.int64)
    counts = np.zeros(k_n * n, dtype=np.int64)
    scores, matched, ignored = [], [], []
    n_areas = len(p.areaRng)
    for k in range(k_n):
        for i in range(n):
            e = ev.evalImgs[k * n_areas * n + a0 * n + i]
            if e is None:
                continue
            assert e["image_id"] == img_ids[i] and e["category_id"] == cat_ids[k] and e["maxDet"] == max_dets
            n_gt[k, i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            d = len(e["dtScores"][:max_dets])
            counts[k * n + i] = d
            if d:
                scores.append(np.asarray(e["dtScores"][:max_dets], dtype=np.float64))
                matched.append(np.asarray(e["dtMatches"])[:, :max_dets] > 0)
                ignored.append(np.asarray(e["dtIgnore"])[:, :max_dets].astype(bool))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return MatchTable(
        names=tuple(r.name for r in gt),
        classes=tuple(labels.names),
        max_dets=max_dets,
        difficult=difficult,
        position=position,
        n_gt=n_gt,
        offsets=offsets,
        scores=np.concatenate(scores) if scores else np.zeros(0),
        matched=np.concatenate(matched, axis=1) if matched else np.zeros((t_n, 0), dtype=bool),
        ignored=np.concatenate(ignored, axis=1) if ignored else np.zeros((t_n, 0), dtype=bool),
    )


@dataclass
class BootstrapResult:
    """A paired bootstrap of one metric over images: reference ``a`` (FP32) against ``b`` (INT8).

    Attributes:
        metric: ``"map50_95"`` or ``"map50"``.
        a, b: the metric on all images; drop: ``a - b`` (positive: ``b`` is worse).
        rel_drop: ``(a - b) / a``; None when ``a`` is 0.
        drop_ci: percentile confidence interval ``(low, high)`` of the drop at ``level``; None when
            no replicate was usable.
        rel_drop_ci: the same for the relative drop, over the used replicates where ``a > 0``.
        frac_no_drop: fraction of the used replicates with drop ``<= 0`` (a one-sided bootstrap
            p-value of "``b`` is worse"); None when none was usable.
        n_images: images resampled (N per replicate); n_boot: replicates drawn; n_used: replicates
            where both metrics are defined; n_skipped: ``n_boot - n_used`` (a replicate with no
            counted gt object has no mAP).
        seed, level: the generator seed (``numpy.random.default_rng``) and the confidence level.
    """

    metric: str
    a: float
    b: float
    drop: float
    rel_drop: float | None
    drop_ci: tuple[float, float] | None
    rel_drop_ci: tuple[float, float] | None
    frac_no_drop: float | None
    n_images: int
    n_boot: int
    n_used: int
    n_skipped: int
    seed: int
    level: float

    def excludes_zero(self) -> bool:
        """True when the drop's interval lies strictly on one side of 0 (``low > 0`` or ``high < 0``)."""
        return self.drop_ci is not None and (self.drop_ci[0] > 0 or self.drop_ci[1] < 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("drop_ci", "rel_drop_ci"):
            if d[key] is not None:
                d[key] = list(d[key])
        d["excludes_zero"] = self.excludes_zero()
        return d


def _check_pair(a: MatchTable, b: MatchTable) -> None:
    if a.names != b.names:
        diff = next((f"'{x}' vs '{y}'" for x, y in zip(a.names, b.names) if x != y),
                    f"{len(a.names)} vs {len(b.names)} images")
        raise DatasetError(f"paired bootstrap: the two match tables are not on the same images ({diff}); "
                           "evaluate both models on the same gt list")
    if a.classes != b.classes:
        raise DatasetError(f"paired bootstrap: the two match tables have different classes ({list(a.classes)} vs "
                           f"{list(b.classes)}); use the same label map")
    if (a.max_dets, a.difficult) != (b.max_dets, b.difficult):
        raise ConfigError(f"paired bootstrap: the two match tables use different settings (max_dets {a.max_dets} vs "
                          f"{b.max_dets}, difficult {a.difficult} vs {b.difficult}); evaluate both the same way")
    if not np.array_equal(a.n_gt[:, a.position], b.n_gt[:, b.position]):
        raise DatasetError("paired bootstrap: the two match tables have different ground truth on the same images; "
                           "evaluate both models against the same gt records")


def paired_bootstrap(
    a: MatchTable,
    b: MatchTable,
    *,
    metric: str = "map50_95",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapResult:
    """Paired percentile bootstrap over images of ``a - b`` for one metric.

    Each replicate draws N images with replacement (``numpy.random.default_rng(seed)``) and
    scores both tables on that same draw (`MatchTable.score`); the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles (numpy's linear interpolation) of the
    replicates' drops. Replicates where either metric is undefined are skipped and counted.

    Args:
        a: the reference (FP32) table; b: the candidate (INT8) table, on the same gt images.
        metric: ``"map50_95"`` or ``"map50"``.
        n_boot: replicates (>= 1).
        seed: generator seed; the same seed gives the same interval.
        level: confidence level in ``(0, 1)``.

    Raises:
        DatasetError: the tables are not on the same images / classes / gt, or the metric is
            undefined on all images (no counted gt object).
        ConfigError: unknown metric, ``n_boot < 1``, ``level`` outside ``(0, 1)``, or the tables
            use different ``max_dets`` / ``difficult``.
    """
    if metric not in METRICS:
        raise ConfigError(f"paired bootstrap: metric must be one of {', '.join(METRICS)}, got '{metric}'")
    if int(n_boot) < 1:
        raise ConfigError(f"paired bootstrap: n_boot must be >= 1, got {n_boot}")
    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"paired bootstrap: level must be in (0, 1), got {level}")
    _check_pair(a, b)
    n = a.n_images
    all_idx = np.arange(n)
    pa, pb = a.score(all_idx)[metric], b.score(all_idx)[metric]
    if pa is None or pb is None:
        raise DatasetError(f"paired bootstrap: {metric} is undefined: no counted gt object in the {n} images")
    rng = np.random.default_rng(seed)
    drops, rels = [], []
    skipped = 0
    inv_a, inv_b = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for _ in range(int(n_boot)):
        draw = np.bincount(rng.integers(0, n, size=n), minlength=n)  # times each gt image is drawn
        inv_a[a.position] = draw
        inv_b[b.position] = draw
        va, vb = a._score_counts(inv_a)[metric], b._score_counts(inv_b)[metric]
        if va is None or vb is None:
            skipped += 1
            continue
        drops.append(va - vb)
        if va > 0:
            rels.append((va - vb) / va)
    lo_q, hi_q = 50.0 * (1.0 - level), 50.0 * (1.0 + level)

    def ci(v: list[float]) -> tuple[float, float] | None:
        if not v:
            return None
        lo, hi = np.percentile(np.asarray(v), [lo_q, hi_q])
        return float(lo), float(hi)

    res = BootstrapResult(
        metric=metric, a=pa, b=pb, drop=pa - pb, rel_drop=(pa - pb) / pa if pa > 0 else None,
        drop_ci=ci(drops), rel_drop_ci=ci(rels),
        frac_no_drop=float(np.mean(np.asarray(drops) <= 0)) if drops else None,
        n_images=n, n_boot=int(n_boot), n_used=len(drops), n_skipped=skipped, seed=int(seed), level=float(level),
    )
    if skipped:
        log.info("paired bootstrap: %d of %d replicates skipped (%s undefined: no counted gt object drawn)",
                 skipped, n_boot, metric)
    return res
