"""The Ultralytics training backend (AGPL-3.0): YOLO detectors trained offline into an EdgeVision run.

The canonical dataset arrives already written as an Ultralytics dataset (``data.yaml``, cached by
content hash, see `edgevision.train.trainer`). This module runs Ultralytics' own trainer inside
``RUN/backend/`` with EdgeVision's offline setup (`edgevision.train.offline`), feeds the
albumentations preset through Ultralytics' ``augmentations`` argument (stored in its checkpoints, and
passed again on resume so a resumed run keeps them), mirrors each epoch into ``RUN/history.csv`` and the
weights into ``RUN/weights/``, and reports progress per batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.core.cpu import usable_cores
from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, EdgeVisionError
from edgevision.core.io import copy_atomic
from edgevision.train.config import TrainConfig
from edgevision.train.run import RunPaths, append_history, history_summary, read_history, rewrite_history
from edgevision.train.weights import ModelSpec

log = logging.getLogger(__name__)

__all__ = ["UltralyticsPredictor", "train_ultralytics"]

Progress = Callable[[str, int, int], None]


def _device_arg(device: str) -> str:
    d = device.strip().lower()
    if d in ("cpu", "mps") or all(p.strip().isdigit() for p in d.split(",")):
        return d
    raise ConfigError(f"device '{device}': expected cpu, a GPU index such as 0, or several such as 0,1")


OWN_ARGS = frozenset({
    "data", "device", "workers", "verbose", "trainer", "augmentations", "resume", "epochs", "imgsz", "batch",
    "seed", "deterministic", "patience", "project", "name", "exist_ok", "plots", "pretrained", "time", "lr0",
    "model", "mode", "task",
})
"""Ultralytics arguments EdgeVision sets from TrainConfig; ``ultralytics:`` extras may not override them."""


def check_extra_args(extra: dict[str, Any]) -> None:
    """Refuse ``ultralytics:`` config keys that Ultralytics does not know or EdgeVision sets itself.

    Reads Ultralytics' ``cfg/default.yaml`` without importing Ultralytics.

    Raises:
        ConfigError: one line naming the key, with the closest valid one.
    """
    if not extra:
        return
    import difflib
    import importlib.util

    from edgevision.core.safeload import load_yaml

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("train config field 'ultralytics' needs the train extra (Ultralytics is not installed)")
    default = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "default.yaml"
    known = set(load_yaml(default, "Ultralytics' default.yaml"))
    for key in extra:
        if key in OWN_ARGS:
            raise ConfigError(f"train config field 'ultralytics.{key}': set by EdgeVision; use the top-level "
                              f"'{key}' key (or the matching command-line flag) instead")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known - OWN_ARGS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown train config field 'ultralytics.{key}' (not an Ultralytics train argument){hint}")


def cpu_optimizer(device: str, cfg: TrainConfig, data_yaml: Path) -> dict[str, Any]:
    """On CPU, replace Ultralytics' ``optimizer=auto`` choice of MuSGD by AdamW.

    ``auto`` picks MuSGD (Muon) when the nominal run exceeds 10,000 iterations (any ``time_hours`` run
    with a large ``epochs``). Measured here on NEU-DET at 224 px on 2 cores: Muon's Newton-Schulz
    orthogonalisation took 95% of the training time. EdgeVision picks what ``auto`` picks for shorter
    runs instead: AdamW, momentum 0.9, lr0 = 0.002 * 5 / (4 + classes) unless ``lr0`` is set. A user's
    own ``ultralytics: {optimizer: ...}`` is kept; GPU runs keep ``auto``.
    """
    if device != "cpu" or "optimizer" in cfg.ultralytics:
        return {}
    from edgevision.core.safeload import load_yaml

    names = load_yaml(data_yaml, "dataset yaml", dataset=True).get("names") or []
    lr = cfg.lr0 if cfg.lr0 is not None else round(0.002 * 5 / (4 + len(names)), 6)
    log.info("CPU training: optimizer AdamW (lr0 %g) instead of Ultralytics' auto choice", lr)
    return {"optimizer": "AdamW", "lr0": lr, "momentum": cfg.ultralytics.get("momentum", 0.9)}


def train_ultralytics(
    cfg: TrainConfig,
    spec: ModelSpec,
    data_yaml: Path,
    run: RunPaths,
    *,
    resume: bool = False,
    augmentations: Sequence[dict[str, Any]] | None = None,
    hyp: dict[str, Any] | None = None,
    progress: Progress | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Train (or resume) a YOLO detector with Ultralytics into ``run``.

    Args:
        cfg: the resolved training config.
        spec: the resolved ``--model`` (architecture YAML or weights file).
        data_yaml: the Ultralytics dataset description (train and val splits).
        run: the run folder; Ultralytics' own files go to ``run.backend``.
        resume: continue from ``run.backend/weights/last.pt``.
        augmentations: albumentations transforms as ``A.to_dict`` dicts (see `edgevision.train.augment`).
        hyp: Ultralytics hyperparameters set by the augmentation preset (``hsv_h``, ``degrees``, ...).
        progress: called as ``progress(stage, done, total)`` after each batch.
        verbose: keep Ultralytics' own console output.

    Returns:
        ``epochs_run``, ``best_epoch``, ``best_map50``, ``best_map50_95`` (from history),
        ``ultralytics_metrics`` (its own validation of best.pt), ``train_images_per_s``, ``stopped_early``.
    """
    from edgevision.train.offline import prepare_ultralytics

    prepare_ultralytics(threads=cfg.threads, verbose=verbose)
    from ultralytics import YOLO

    from edgevision.train._ultralytics_trainer import EdgeVisionDetectionTrainer

    device = _device_arg(cfg.device)
    backend_last = run.backend / "weights" / "last.pt"
    history_before = read_history(run.history)
    time_offset = float(history_before[-1]["time_s"] or 0.0) if history_before else 0.0
    if resume:
        if not backend_last.is_file():
            raise ConfigError(f"{backend_last}: not found; nothing to resume (start a new run instead)")
        model = YOLO(str(backend_last))
        ckpt_epoch = int((getattr(model, "ckpt", None) or {}).get("epoch", -1))
        if ckpt_epoch < 0:
            raise ConfigError(f"{run.root}: training already finished ({len(history_before)} epochs); nothing to resume")
        # history rows after the checkpoint's epoch belong to an epoch that will be redone
        rewrite_history(run.history, history_before[:ckpt_epoch + 1])
    else:
        model = YOLO(str(spec.path) if spec.kind == "weights" and spec.path else (spec.arch or cfg.model))

    state: dict[str, Any] = {"t0": time.time(), "epoch_ended": None, "batch": 0, "final": None, "images": 0,
                             "train_s": 0.0, "epoch_t0": time.time()}

    def on_train_epoch_start(tr: Any) -> None:
        state["batch"] = 0
        state["epoch_t0"] = time.time()

    def on_train_batch_end(tr: Any) -> None:
        state["batch"] += 1
        state["images"] += int(tr.batch_size)
        if progress is not None:
            progress(f"epoch {tr.epoch + 1}/{tr.epochs}", state["batch"], len(tr.train_loader))

    def on_train_epoch_end(tr: Any) -> None:
        state["epoch_ended"] = tr.epoch
        state["train_s"] += time.time() - state["epoch_t0"]  # forward/backward passes only, no validation

    def on_fit_epoch_end(tr: Any) -> None:
        if tr.epoch != state["epoch_ended"]:  # the final validation of best.pt, not an epoch
            state["final"] = {k: float(v) for k, v in (tr.metrics or {}).items()}
            return
        m = tr.metrics or {}
        loss = tr.tloss
        total = float(sum(float(v) for v in loss.values())) if isinstance(loss, dict) else (
            float(loss.sum()) if loss is not None else None)
        append_history(run.history, {
            "epoch": tr.epoch + 1,
            "time_s": round(time_offset + time.time() - state["t0"], 3),
            "train_loss": None if total is None else round(total, 6),
            "val_map50": _metric(m, "metrics/mAP50(B)"),
            "val_map50_95": _metric(m, "metrics/mAP50-95(B)"),
            "lr": round(float(next(iter(tr.lr.values()))), 8) if getattr(tr, "lr", None) else None,
        })

    def on_model_save(tr: Any) -> None:
        for src, dst in ((tr.last, run.last), (tr.best, run.best)):
            if Path(src).exists():
                copy_atomic(Path(src), dst)

    for event, fn in (("on_train_epoch_start", on_train_epoch_start), ("on_train_batch_end", on_train_batch_end),
                      ("on_train_epoch_end", on_train_epoch_end), ("on_fit_epoch_end", on_fit_epoch_end),
                      ("on_model_save", on_model_save)):
        model.add_callback(event, fn)

    args: dict[str, Any] = dict(
        data=str(data_yaml), device=device, workers=cfg.workers if cfg.workers is not None else min(usable_cores(), 4),
        verbose=verbose, trainer=EdgeVisionDetectionTrainer,
    )
    if augmentations is not None:
        args["augmentations"] = list(augmentations)
    if resume:
        args["resume"] = str(backend_last)
    else:
        args.update(
            epochs=cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch, seed=cfg.seed, deterministic=True,
            patience=cfg.patience or 10**6, project=str(run.root), name=run.backend.name, exist_ok=True,
            plots=cfg.plots, pretrained=spec.kind == "weights", **{**(hyp or {}), **cfg.ultralytics},
        )
        if cfg.time_hours is not None:
            args["time"] = cfg.time_hours
        if cfg.lr0 is not None:
            args["lr0"] = cfg.lr0
        args.update(cpu_optimizer(device, cfg, data_yaml))
    t_start = time.time()
    try:
        model.train(**args)
    except AssertionError as e:  # Ultralytics asserts on some user input (e.g. a finished run on resume)
        raise EdgeVisionError(f"{run.root}: Ultralytics refused: {str(e).splitlines()[0]}") from e
    seconds = time.time() - t_start
    import torch

    threads = torch.get_num_threads()  # what Ultralytics' device selection left: EdgeVision's choice, not cpu_count-1
    for src, dst in ((run.backend / "weights" / "last.pt", run.last), (run.backend / "weights" / "best.pt", run.best)):
        if src.exists():
            copy_atomic(src, dst)
    rows = read_history(run.history)
    epochs_this_call = len(rows) - (len(history_before) if not resume else 0)
    return {
        **history_summary(rows),
        "ultralytics_metrics": state["final"] or {},
        "train_images_per_s": round(state["images"] / state["train_s"], 2) if state["train_s"] > 0 else None,
        "wall_s_this_call": round(seconds, 1),
        "stopped_early": len(rows) < cfg.epochs and cfg.time_hours is None,
        "epochs_this_call": epochs_this_call,
        "threads": threads,
    }


def _metric(m: dict[str, Any], key: str) -> float | None:
    v = m.get(key)
    return None if v is None else round(float(v), 6)


def _truncate_history(path: Path, keep_epochs: int) -> None:
    rows = read_history(path)
    if len(rows) <= keep_epochs:
        return
    path.unlink()
    for r in rows[:keep_epochs]:
        append_history(path, {k: (int(v) if k == "epoch" and v is not None else v) for k, v in r.items()})


class UltralyticsPredictor:
    """A trained Ultralytics YOLO ``.pt`` behind the `Predictor` protocol.

    Attributes:
        labels: the model's class names; imgsz: inference size (the training size unless given).
    """

    def __init__(self, path: Path, *, device: str = "cpu", imgsz: int | None = None, threads: int | None = None) -> None:
        from edgevision.train.offline import prepare_ultralytics

        prepare_ultralytics(threads=threads)
        from ultralytics import YOLO

        self.path = Path(path)
        try:
            self.model = YOLO(str(self.path), task="detect")
        except Exception as e:  # a broken or foreign checkpoint
            raise ConfigError(f"{self.path}: not a loadable Ultralytics checkpoint ({type(e).__name__}: {e})") from e
        if getattr(self.model, "task", "detect") != "detect":
            raise ConfigError(f"{self.path}: a {self.model.task} model; EdgeVision evaluates detection models")
        names = self.model.names
        self.labels = LabelMap([str(names[i]) for i in range(len(names))])
        from edgevision.train.imgsz import working_imgsz

        self.imgsz = working_imgsz(imgsz, getattr(self.model, "ckpt", None), "ultralytics")
        self.device = _device_arg(device)

    def predict(self, records: Sequence[ImageRecord], *, conf: float = 0.001, max_det: int = 100,
                batch: int = 8) -> list[ImageRecord]:
        """Predict every record's image (see `edgevision.models.Predictor`)."""
        out: list[ImageRecord] = []
        for i in range(0, len(records), batch):
            chunk = records[i:i + batch]
            paths = []
            for r in chunk:
                if r.path is None or not Path(r.path).is_file():
                    raise EdgeVisionError(f"{r.name}: image file not found ({r.path})")
                paths.append(str(r.path))
            results = self.model.predict(paths, conf=conf, iou=0.7, max_det=max_det, imgsz=self.imgsz,
                                         device=self.device, verbose=False)
            for r, res in zip(chunk, results):
                b = res.boxes
                out.append(ImageRecord(
                    name=r.name, size_hw=r.size_hw, path=r.path, split=r.split,
                    boxes=b.xyxy.cpu().numpy().astype(np.float64).reshape(-1, 4),
                    class_ids=b.cls.cpu().numpy().astype(np.int64),
                    scores=b.conf.cpu().numpy().astype(np.float32),
                ))
        return out
