"""``edgevision train``: any dataset EdgeVision reads -> a trained detector in a reproducible run folder.

The steps, the same for both backends:

1. resolve the config (CLI > file > defaults) and the ``--model`` (`edgevision.train.weights`), read
   the dataset (any format or a recipe), apply the ``difficult`` policy and make sure it has ``train``
   and ``val`` splits (a seeded stratified split of ``val_fraction`` when it has none) — all before
   anything is written, so bad input leaves nothing behind;
2. hash the dataset's content (labels, boxes, splits, image bytes) and, for Ultralytics, write it once
   as an Ultralytics dataset into ``$EDGEVISION_HOME/datasets/<hash>`` (reused by later runs);
3. write ``config.yaml``, ``dataset.json``, ``environment.json`` into the run folder, then train;
4. evaluate ``best.pt`` on the validation split with EdgeVision's COCO evaluator, choose per-class
   operating points, and write ``metrics.json``, ``thresholds.json``, ``curves.png``, ``model_card.md``.

An interrupted run (Ctrl-C, power cut) keeps its ``weights/last.pt`` from the last finished epoch;
``edgevision train --resume RUN`` continues it with the same config and augmentations.

How ``difficult`` objects count (``TrainConfig.difficult``): ``ignore`` (default) trains on them and
evaluates them as neither found nor missed, as Pascal VOC does; ``count`` treats them as ordinary
objects; ``drop`` removes them before training and evaluation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgevision.core.dataset import Dataset, ImageRecord
from edgevision.core.errors import ConfigError, DatasetError, EdgeVisionError, OutputExistsError
from edgevision.core.io import edgevision_home, sha256_file, write_atomic
from edgevision.core.safeload import load_yaml
from edgevision.train.config import TrainConfig, resolve_train_config
from edgevision.train.run import RunPaths
from edgevision.train.weights import ModelSpec, resolve_model

log = logging.getLogger(__name__)

__all__ = ["PreparedRun", "TrainResult", "dataset_hash", "prepare_run", "train"]

RESUME_OVERRIDES = ("device", "workers", "threads")
"""Keys the command line may change when resuming; everything else comes from RUN/config.yaml."""

ULTRALYTICS_NOTICE = (
    "the ultralytics backend runs Ultralytics YOLO, licensed AGPL-3.0: models you train and ship with it "
    "fall under its terms unless you hold an Ultralytics Enterprise licence; '--backend torchvision' "
    "(BSD-3-Clause) avoids it"
)

Progress = Callable[[str, int, int], None]


@dataclass
class PreparedRun:
    """Everything checked and read before the run folder is touched."""

    cfg: TrainConfig
    spec: ModelSpec
    dataset: Dataset
    run: RunPaths
    data_hash: str
    split_made: bool
    source_format: str
    resume: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a finished ``train`` call produced.

    Attributes:
        run: the run folder; metrics: contents of metrics.json; thresholds: thresholds.json;
        train: the backend's summary (epochs, best epoch, images/s).
    """

    run: RunPaths
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    train: dict[str, Any]


# --------------------------------------------------------------------------- preparation


def _read(cfg: TrainConfig) -> tuple[Dataset, str]:
    from edgevision.convert import read_dataset

    if cfg.data is None:
        raise ConfigError("no dataset: pass --data DATASET or set 'data' in the config file")
    if not Path(cfg.data).exists():
        raise ConfigError(f"{cfg.data}: dataset not found")
    rr = read_dataset(cfg.data, cfg.from_, recipe=cfg.recipe)
    return rr.dataset, rr.format


def _apply_difficult(ds: Dataset, policy: str) -> Dataset:
    if policy != "drop":
        return ds
    images = []
    for r in ds.images:
        keep = np.array([not r.object_attributes(i).get("difficult") for i in range(len(r))], dtype=bool)
        images.append(r if keep.all() else r.subset(keep))
    return Dataset(labels=ds.labels, images=images, root=ds.root, meta=dict(ds.meta))


def _ensure_splits(ds: Dataset, cfg: TrainConfig) -> tuple[Dataset, bool]:
    """Keep train/val when both exist; else split the train (or unsplit) images by seeded stratification."""
    from edgevision.data.split import split_dataset

    splits = set(ds.splits)
    if {"train", "val"} <= splits:
        return ds, False
    if "val" in splits:
        raise DatasetError(f"dataset has a 'val' split but no 'train' split (splits: {sorted(splits)}); "
                           "rename one split or run 'edgevision split'")
    pool = [r for r in ds.images if r.split in (None, "train")]
    aside = [r for r in ds.images if r.split not in (None, "train")]
    if len(pool) < 2:
        raise DatasetError(f"{len(pool)} training image(s): need at least 2 to hold out a validation split")
    sub = Dataset(labels=ds.labels, images=pool, root=ds.root, meta=dict(ds.meta))
    res = split_dataset(sub, (1 - cfg.val_fraction, cfg.val_fraction), seed=cfg.seed, names=("train", "val"))
    log.info("no validation split: held out %.0f%% of %d images (seed %d)", 100 * cfg.val_fraction, len(pool), cfg.seed)
    return Dataset(labels=ds.labels, images=res.dataset.images + aside, root=ds.root, meta=dict(ds.meta)), True


def dataset_hash(ds: Dataset) -> str:
    """sha256 over class names, and per image: name, split, size, boxes (1e-3 px), classes, flags, bytes.

    Two datasets with the same hash train the same way; it names the cached Ultralytics copy and is
    recorded in the run folder and the model card.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"classes": ds.labels.names, "v": 1}).encode())
    for r in sorted(ds.images, key=lambda x: x.name):
        flags = [bool(r.object_attributes(i).get("difficult")) for i in range(len(r))]
        h.update(json.dumps([r.name, r.split, list(r.size_hw), np.round(r.boxes, 3).tolist(),
                             r.class_ids.tolist(), flags]).encode())
        if r.path is not None and Path(r.path).is_file():
            h.update(sha256_file(r.path).encode())
    return h.hexdigest()


def _split_summary(ds: Dataset) -> dict[str, Any]:
    out = {}
    for s in ds.splits:
        recs = ds.split(s)
        out[s] = {"images": len(recs), "objects": int(sum(len(r) for r in recs)),
                  "background": int(sum(r.is_background for r in recs))}
    return out


def prepare_run(cfg: TrainConfig | None, out: Path | str, *, resume: bool = False, overwrite: bool = False,
                overrides: dict[str, Any] | None = None) -> PreparedRun:
    """Check and read everything a run needs; touches nothing on disk.

    Args:
        cfg: the resolved config for a new run (ignored when resuming).
        out: the run folder.
        resume: continue ``out`` with its own ``config.yaml`` (``overrides`` may change only
            `RESUME_OVERRIDES`).

    Raises:
        ConfigError / DatasetError: one line naming the key, file or item.
        OutputExistsError: ``out`` exists for a new run without ``overwrite``.
    """
    run = RunPaths(Path(out))
    if resume:
        if not run.config.is_file():
            raise ConfigError(f"{run.root}: not a run folder (no config.yaml); nothing to resume")
        bad = sorted(k for k, v in (overrides or {}).items() if v is not None and k not in RESUME_OVERRIDES)
        if bad:
            raise ConfigError(f"--resume continues {run.root} with its own config; {', '.join(bad)} cannot change "
                              f"(only {', '.join(RESUME_OVERRIDES)}); start a new run to change them")
        cfg = resolve_train_config(run.config, {k: v for k, v in (overrides or {}).items() if k in RESUME_OVERRIDES})
    else:
        if cfg is None:
            raise ConfigError("no training config")
        if run.root.exists() and any(run.root.iterdir()):
            if not overwrite:
                raise OutputExistsError(f"{run.root}: run folder already exists; choose another --out, pass "
                                        f"--overwrite, or --resume {run.root} to continue it")
            if not run.config.is_file():
                raise OutputExistsError(f"{run.root}: not an EdgeVision run folder (no config.yaml); --overwrite "
                                        "only replaces run folders, choose another --out")
        if cfg.data is not None:
            from edgevision.core.io import check_output_path

            check_output_path(cfg.data, run.root, overwrite=True)  # the run folder must not hold the dataset
    assert cfg is not None
    if cfg.backend != "ultralytics" and "," in cfg.device:
        raise ConfigError(f"device '{cfg.device}': several GPUs (DDP) are supported by the ultralytics backend only")
    for key in ("ultralytics", "libreyolo"):
        if getattr(cfg, key) and cfg.backend != key:
            log.warning("train config field '%s' (%s) is for the %s backend: ignored by the %s backend", key,
                        ", ".join(sorted(getattr(cfg, key))), key, cfg.backend)
    _check_installed(cfg.backend)
    spec = resolve_model(cfg.model, cfg.backend)
    if cfg.backend == "ultralytics":
        from edgevision.train.ultralytics_backend import check_extra_args

        check_extra_args(cfg.ultralytics)
    elif cfg.backend == "libreyolo":
        from edgevision.train import libreyolo_backend

        libreyolo_backend.check_extra_args(cfg.libreyolo)
    if cfg.augment != "none":
        from edgevision.train.augment import list_presets

        if cfg.augment not in list_presets():
            from edgevision.core.errors import UnknownNameError

            raise UnknownNameError("augmentation preset", cfg.augment, list_presets())
    ds, fmt = _read(cfg)
    if not ds.images:
        raise DatasetError(f"{cfg.data}: the dataset has no images")
    if len(ds.labels) == 0:
        raise DatasetError(f"{cfg.data}: the dataset has no classes")
    ds = _apply_difficult(ds, cfg.difficult)
    ds, made = _ensure_splits(ds, cfg)
    missing = [r.name for r in ds.images if r.path is None or not Path(r.path).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} image file(s) missing, first: {missing[0]}; training needs every image")
    _check_operating_split(cfg, ds)
    return PreparedRun(cfg=cfg, spec=spec, dataset=ds, run=run, data_hash=dataset_hash(ds), split_made=made,
                       source_format=fmt, resume=resume)


def _check_operating_split(cfg: TrainConfig, ds: Dataset) -> None:
    """Image-level or priced operating points need defective and defect-free val images: refuse before training
    (in one line) rather than at its end."""
    rule = cfg.operating_point.to_rule()
    if rule.mode not in ("image", "cost"):
        return
    val = ds.split("val")
    defective = sum(1 for r in val if len(r))
    good = sum(1 for r in val if not len(r))
    if not defective or not good:
        lacking = "defective" if not defective else "defect-free"
        raise ConfigError(f"operating_point: {'priced' if rule.mode == 'cost' else 'image-level'} operating points "
                          f"are chosen on the val split, and its {len(val)} images hold no {lacking} image: add "
                          f"{lacking} images, or choose per class (drop max_escape_rate / max_false_reject_rate / "
                          "cost_*; the default is recall >= 0.9 per class)")


def _check_installed(backend: str) -> None:
    """One line instead of an ImportError when the train extra is missing."""
    import importlib.util

    own = {"ultralytics": ("ultralytics",), "libreyolo": ("libreyolo",)}.get(backend, ())
    needed = ("torch", "torchvision", "albumentations") + own
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        extra = "libreyolo" if backend == "libreyolo" else "train"
        raise ConfigError(f"the {backend} backend needs the {extra} extra ({', '.join(missing)} not installed): "
                          f"scripts/install.sh .venv {extra}")


def _ultralytics_dataset(prep: PreparedRun) -> Path:
    """The cached Ultralytics copy of the dataset (train and val only), written once per content hash."""
    from edgevision.convert import write_dataset

    cache = edgevision_home() / "datasets" / prep.data_hash[:16]
    yaml_file = cache / "data.yaml"
    if yaml_file.is_file():
        log.info("reusing cached Ultralytics dataset %s", cache)
        return yaml_file
    ds = prep.dataset
    sub = Dataset(labels=ds.labels, images=[r for r in ds.images if r.split in ("train", "val")],
                  root=ds.root, meta=dict(ds.meta))
    write_dataset(sub, cache, "yolo", images="copy", overwrite=True)
    if not yaml_file.is_file():
        raise EdgeVisionError(f"{cache}: the YOLO writer made no data.yaml")
    return yaml_file


def _write_run_data_yaml(cached: Path, dst: Path) -> None:
    """``RUN/data.yaml``: the cached Ultralytics dataset's description with an absolute ``path``, so
    the run folder says exactly which copy trained it and Ultralytics' own tools can reuse it."""
    data = load_yaml(cached, "cached dataset yaml", dataset=True)
    data = {"path": str(cached.parent.resolve()), **{k: v for k, v in data.items() if k != "path"}}
    text = ("# The Ultralytics dataset this run trained on: EdgeVision's cached copy, keyed by the dataset's\n"
            "# content hash (dataset.json). Delete the cache freely: the next run writes it again.\n")
    dst.write_text(text + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str))


def _augmentation(prep: PreparedRun) -> tuple[list[dict[str, Any]] | None, dict[str, Any], bool]:
    from edgevision.train.augment import build_transforms, is_mono_dataset, ultralytics_hyp

    mono = is_mono_dataset([r for r in prep.dataset.images if r.split == "train"], seed=prep.cfg.seed)
    if prep.cfg.augment == "none":
        return [], {}, mono
    from edgevision.train.offline import prepare_albumentations

    prepare_albumentations()
    import albumentations as A

    # rotation comes from Ultralytics' own `degrees` (ultralytics_hyp), so the albumentations list is pixel-only
    dicts = [A.to_dict(t) for t in build_transforms(prep.cfg.augment, mono=mono, spatial=False)]
    return dicts, ultralytics_hyp(prep.cfg.augment, mono=mono), mono


# --------------------------------------------------------------------------- training


def train(prep: PreparedRun, *, progress: Progress | None = None, verbose: bool = False) -> TrainResult:
    """Run a prepared training (see the module doc) and evaluate it.

    Returns:
        The run folder's metrics and thresholds.
    """
    cfg, run = prep.cfg, prep.run
    if not prep.resume and run.root.exists():
        import shutil

        shutil.rmtree(run.root)  # --overwrite was given (prepare_run refused otherwise)
    run.root.mkdir(parents=True, exist_ok=True)
    run.weights.mkdir(exist_ok=True)
    augmentations, hyp, mono = _augmentation(prep)
    if not prep.resume:
        write_atomic(run.config, yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False, allow_unicode=True))
    from edgevision.train.report import environment

    ds = prep.dataset
    info = {
        "hash": prep.data_hash, "source": str(cfg.data), "format": prep.source_format, "recipe": cfg.recipe,
        "licence": ds.meta.get("licence"), "citation": ds.meta.get("citation"),
        "classes": ds.labels.names, "class_counts": ds.class_counts(), "splits": _split_summary(ds), "split_made_by_edgevision": prep.split_made,
        "val_fraction": cfg.val_fraction if prep.split_made else None, "difficult": cfg.difficult, "mono": mono,
        "val_images": sorted(r.name for r in ds.split("val")),
    }
    _write_json(run.dataset, info)
    env = environment()
    _write_json(run.environment, env)
    _write_json(run.root / "model.json", prep.spec.to_dict())
    if cfg.backend in ("ultralytics", "libreyolo"):
        data_yaml = _ultralytics_dataset(prep)
        info["cache"] = str(data_yaml.parent)
        _write_json(run.dataset, info)
        _write_run_data_yaml(data_yaml, run.root / "data.yaml")
        if cfg.backend == "ultralytics":
            from edgevision.train.ultralytics_backend import train_ultralytics

            summary = train_ultralytics(cfg, prep.spec, data_yaml, run, resume=prep.resume,
                                        augmentations=augmentations, hyp=hyp, progress=progress, verbose=verbose)
        else:
            from edgevision.train.libreyolo_backend import libreyolo_hyp, train_libreyolo

            lhyp = libreyolo_hyp("none" if cfg.augment == "none" else cfg.augment, mono=mono)
            summary = train_libreyolo(cfg, prep.spec, data_yaml, run, resume=prep.resume,
                                      augmentations=augmentations, hyp=lhyp, progress=progress, verbose=verbose)
    else:
        from edgevision.train.augment import BoxAugmenter
        from edgevision.train.torchvision_backend import train_torchvision

        aug = None if cfg.augment == "none" else BoxAugmenter(cfg.augment, mono=mono, seed=cfg.seed)
        summary = train_torchvision(cfg, ds, run, resume=prep.resume, progress=progress, augment=aug)
    return finish(prep, summary, env=env, dataset_info=info, progress=progress)


def finish(prep: PreparedRun, summary: dict[str, Any], *, env: dict[str, Any], dataset_info: dict[str, Any],
           progress: Progress | None = None) -> TrainResult:
    """Evaluate best.pt on the validation split and write metrics, thresholds, curves and the model card."""
    from edgevision.evaluate import evaluate
    from edgevision.evaluate.operating import select_operating_points
    from edgevision.evaluate.tradeoff import plot_tradeoff, write_tradeoff_csv
    from edgevision.models import LOW_CONF, open_predictor, predict_records
    from edgevision.train.report import model_card, plot_curves

    cfg, run, ds = prep.cfg, prep.run, prep.dataset
    weights = run.best if run.best.is_file() else run.last
    if not weights.is_file():
        raise EdgeVisionError(f"{run.root}: training produced no weights")
    device = cfg.device.split(",")[0]
    predictor = open_predictor(weights, device=device, imgsz=cfg.imgsz)
    if list(predictor.labels.names) != list(ds.labels.names):
        raise EdgeVisionError(f"{weights}: model classes {predictor.labels.names} differ from the dataset's {ds.labels.names}")
    val = ds.split("val")
    preds: list[ImageRecord] = predict_records(
        predictor, val, conf=LOW_CONF, max_det=100,
        progress=None if progress is None else lambda done, total: progress("evaluate", done, total))
    op = cfg.operating_point
    # strict=False: image-level limits the val split cannot meet keep the closest point (noted), not lose the run
    try:
        points = select_operating_points(val, preds, ds.labels, op.to_rule(), difficult=cfg.difficult, strict=False)
    except ConfigError as e:  # a val split that cannot measure an image-level rate (checked before training too)
        log.warning("operating points: %s; chosen per class (%s >= %g) instead", e, op.target, op.value)
        rule = dataclasses.replace(op.to_rule(), max_escape_rate=None, max_false_reject_rate=None, cost_escape=None,
                                   cost_false_reject=None)
        points = select_operating_points(val, preds, ds.labels, rule, difficult=cfg.difficult)
        points.note = f"{e}; chosen per class instead"
    report = evaluate(val, preds, ds.labels, operating=points, iou=op.iou, difficult=cfg.difficult)
    metrics = {
        "weights": str(weights.relative_to(run.root)),
        "split": "val",
        "coco": report.to_dict(),
        "backend": _backend_metrics(cfg.backend, summary),
        "train": summary,
    }
    _write_json(run.metrics, metrics)
    points.decisions = report.decisions
    points.save(run.thresholds)
    _write_json(run.data_stats, data_stats(val, preds, points))
    thresholds = points.to_dict()
    if points.curve:
        write_tradeoff_csv(points.curve, run.operating_curve)
    if cfg.plots:
        plot_curves(run.history, run.curves)
        if points.curve:
            plot_tradeoff(points.curve, run.operating_plot, chosen=report.decisions,
                          title=f"{run.root.name}: image-level trade-off on val")
    card_metrics, card_thresholds = _card_inputs(report, points, metrics, summary)
    weights_info = {**prep.spec.to_dict(), "trained_sha256": sha256_file(weights),
                    "trained_path": str(weights.relative_to(run.root))}
    card = model_card(config=cfg.to_yaml_dict(), dataset=dataset_info, metrics=card_metrics,
                      thresholds=card_thresholds, environment=env, weights=weights_info)
    run.model_card.write_text(card, encoding="utf-8")
    return TrainResult(run=run, metrics=metrics, thresholds=thresholds, train=summary)


_BACKEND_VAL = {  # backend -> (name, summary key, its mAP50 key, its mAP50-95 key, how its numbers differ)
    "ultralytics": ("Ultralytics", "ultralytics_metrics", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
                    "Ultralytics' own val: up to 300 detections per image, no crowd/difficult handling, its own "
                    "101-point interpolation"),
    "libreyolo": ("LibreYOLO", "backend_metrics", "best_mAP50", "best_mAP50_95",
                  "LibreYOLO's own val of its best epoch: up to 300 detections per image, every class above its "
                  "confidence floor per anchor"),
    "torchvision": ("torchvision", "", "", "", "the torchvision backend validates with EdgeVision's evaluator"),
}


def _backend_metrics(backend: str, summary: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's ``backend`` section: the backend's own validation numbers and how they differ from EdgeVision's."""
    name, key, k50, k5095, note = _BACKEND_VAL[backend]
    own = dict(summary.get(key) or {}) if key else {}
    if key:
        note += ("; EdgeVision's 'coco' numbers (pycocotools, 100 detections, difficult as configured) are the ones "
                 "to compare across tools")
    return {"name": name, "metrics": own, "map50": own.get(k50), "map50_95": own.get(k5095), "note": note}


def data_stats(val: list[ImageRecord], preds: list[ImageRecord], points: Any) -> dict[str, Any]:
    """What ``edgevision line`` compares its images with (its drift reference): per val image, brightness,
    contrast and sharpness (`edgevision.runtime.imagestats`), and the detections passing the operating points
    (how many per image, their scores)."""
    import cv2

    from edgevision.runtime.imagestats import image_stats, summarize

    per: dict[str, list[float]] = {"brightness": [], "contrast": [], "sharpness": []}
    for r in val:
        img = cv2.imread(str(r.path), cv2.IMREAD_UNCHANGED) if r.path is not None else None
        if img is None:
            continue
        for k, v in image_stats(img).items():
            per[k].append(v)
    thr = points.classes
    names = list(thr)
    counts, scores = [], []
    for p in preds:
        sc = p.scores if p.scores is not None else np.zeros(len(p))
        passing = [float(s) for s, c in zip(sc, p.class_ids) if s >= thr[names[int(c)]]]
        counts.append(len(passing))
        scores += passing
    return {"schema": "edgevision.data-stats/1", "split": "val", "images": len(val),
            **{k: summarize(v) for k, v in per.items()},
            "detections_per_image": summarize(counts),
            "images_with_detections": float(np.mean([c > 0 for c in counts])) if counts else 0.0,
            "scores": summarize(scores)}


def _card_inputs(report: Any, points: Any, metrics: dict[str, Any], summary: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flatten the evaluation into the plain dicts `edgevision.train.report.model_card` reads."""
    c = report.coco
    per_class = {
        name: {"ap50_95": c.per_class[name]["ap50_95"], "ap50": c.per_class[name]["ap50"],
               "precision": p.precision, "recall": p.recall, "gt": p.gt}
        for name, p in report.per_class.items()
    }
    card_metrics = {
        "map50_95": c.map50_95, "map50": c.map50, "map75": c.map75, "ap_small": c.ap_small,
        "ap_medium": c.ap_medium, "ap_large": c.ap_large, "ar100": c.ar100,
        "precision": report.overall.precision, "recall": report.overall.recall, "f1": report.overall.f1,
        "split": "val", "images": c.images, "conf": report.conf, "difficult": report.difficult,
        "per_class": per_class,
        "backend": {"name": metrics["backend"]["name"], "map50": metrics["backend"]["map50"],
                    "map50_95": metrics["backend"]["map50_95"], "note": metrics["backend"]["note"]},
        "epochs_completed": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch"),
        "train_time_s": summary.get("train_time_s"),
    }
    from edgevision.evaluate.operating import SelectionRule, rate_of

    d = report.decisions
    e, f = rate_of(d, "escape"), rate_of(d, "false_reject")
    rule = {k: v for k, v in points.rule.items() if k != "mode"}
    card_thresholds = {
        "target": points.target, "value": points.value, "iou": points.iou,
        "rule_text": SelectionRule(**rule).describe() if rule else None, "note": points.note,
        "per_class": {name: {"threshold": t, "precision": points.achieved.get(name, {}).get("precision"),
                             "recall": points.achieved.get(name, {}).get("recall"),
                             "achieved": name not in points.unreachable,
                             "rule": points.rules.get(name, {}).get("text")}
                      for name, t in points.classes.items()},
        "escape_rate": d.get("escape_rate"), "false_reject_rate": d.get("false_reject_rate"),
        "escape_text": e.text() if e else None, "false_reject_text": f.text() if f else None,
        "expected_cost": d.get("expected_cost"),
        "defective_images": d.get("defective_images"), "good_images": d.get("defect_free_images"),
    }
    return card_metrics, card_thresholds
