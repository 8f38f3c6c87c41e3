"""The MIT-licensed YOLO backend: LibreYOLO's YOLOv9 trained offline into an EdgeVision run.

For users who cannot ship Ultralytics' AGPL-3.0 code or weights. LibreYOLO (MIT) re-implements YOLOv9 after the
authors' own MIT re-release (MultimediaTechLab/YOLO, not the GPL-3.0 WongKinYiu repositories); its NOTICE files
name each family's upstream. Measured on NEU-DET from scratch on a 2-core CPU in ``benchmarks/README.md``
("permissive_candidates.py"), against Ultralytics' yolov8n in the same hour.

How it maps onto EdgeVision's training (the same run folder, CLI and config as the other backends):

* **Data**: the canonical dataset written once as a YOLO dataset (the cache the Ultralytics backend uses,
  keyed by content hash); LibreYOLO reads its ``data.yaml``.
* **Models**: ``yolo9-t`` (1.9 M parameters, the one measured), ``yolo9-s``, ``yolo9-m``, ``yolo9-c`` built from
  scratch (``weights=None``, nothing downloaded), or a LibreYOLO ``.pt`` to fine-tune (``--model FILE`` or a
  registered name, with the licence the user records).
* **Letterbox**: trained with the padding centred (``letterbox_pad="center"``), the convention of EdgeVision's
  runtime, so an exported model needs no other pre-processing than an Ultralytics one (RGB, 1/255, pad 114).
  LibreYOLO floors the resized side and the pad where EdgeVision rounds them: on non-square images the two differ
  by at most a pixel.
* **Augmentation**: the preset's pixel-level albumentations (exposure, gamma, light, blur, noise, JPEG) applied
  to each training image before LibreYOLO's own transform, and the preset's geometry mapped onto LibreYOLO's
  parameters (`libreyolo_hyp`): mosaic, horizontal flip, rotation, translation, scale jitter. HSV jitter only on
  colour datasets. LibreYOLO turns mosaic off for the last ``no_aug_epochs`` (15 for YOLOv9, as in YOLOX), and
  the preset's pixel augmentation stops with it: the run ends on images as the camera takes them.
* **Validation** after every epoch (``eval_interval: 1``, LibreYOLO's COCO evaluator), so ``history.csv`` has a
  value per epoch and ``patience`` counts epochs; ``libreyolo: {eval_interval: N}`` trades that for speed.
* **Checkpoints**: LibreYOLO's own (``RUN/backend/weights/last.pt`` every epoch, ``best.pt`` by mAP50-95),
  mirrored into ``RUN/weights/`` after each epoch; ``--resume RUN`` continues ``last.pt`` with its saved state.
* **Time budget**: ``time_hours`` stops after the epoch that reaches it (LibreYOLO's loop has a stop flag). The
  learning-rate schedule is laid out for ``epochs`` and does not shrink to the budget as Ultralytics' ``time``
  does: set ``epochs`` to what fits (one epoch's time is in ``history.csv``).
* **Threads**: ``torch.set_num_threads(cfg.threads or usable_cores())``; ``workers`` data-loader processes
  (default ``min(cores, 4)``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgevision.core.cpu import usable_cores
from edgevision.core.dataset import ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, EdgeVisionError
from edgevision.core.io import copy_atomic
from edgevision.train.config import TrainConfig
from edgevision.train.run import RunPaths, append_history, history_summary, read_history, rewrite_history
from edgevision.train.weights import ModelSpec

log = logging.getLogger(__name__)

__all__ = [
    "ARCHS",
    "LibreYOLOPredictor",
    "check_extra_args",
    "is_libreyolo_checkpoint",
    "libreyolo_hyp",
    "train_libreyolo",
]

ARCHS: dict[str, str] = {"yolo9-t": "t", "yolo9-s": "s", "yolo9-m": "m", "yolo9-c": "c"}
"""Architecture name -> LibreYOLO9 size code. Built from scratch; nothing is downloaded."""

BACKEND = "libreyolo"
LETTERBOX = "center"

OWN_ARGS = frozenset({
    "data", "epochs", "batch", "imgsz", "lr0", "device", "workers", "seed", "project", "name", "exist_ok", "resume",
    "amp", "patience", "pretrained", "callbacks", "loggers", "letterbox_pad", "allow_download_scripts",
    "mosaic_prob", "flip_prob", "hsv_prob", "degrees", "translate", "mosaic_scale", "mixup_prob", "shear",
    "flipud", "size", "num_classes",
})
"""LibreYOLO train arguments EdgeVision sets (from TrainConfig or the augmentation preset)."""

Progress = Callable[[str, int, int], None]


def _import_libreyolo() -> Any:
    try:
        import libreyolo
    except ImportError as e:
        raise ConfigError("the libreyolo backend needs the libreyolo extra (LibreYOLO is not installed): "
                          "scripts/install.sh .venv libreyolo") from e
    return libreyolo


def check_extra_args(extra: dict[str, Any]) -> None:
    """Refuse ``libreyolo:`` config keys that LibreYOLO's YOLOv9 config does not have or EdgeVision sets itself.

    Raises:
        ConfigError: one line naming the key, with the closest valid one.
    """
    if not extra:
        return
    import dataclasses
    import difflib

    _import_libreyolo()
    from libreyolo.training.config import YOLO9Config

    known = {f.name for f in dataclasses.fields(YOLO9Config)}
    for key in extra:
        if key in OWN_ARGS:
            raise ConfigError(f"train config field 'libreyolo.{key}': set by EdgeVision (from the top-level keys or the "
                              "augmentation preset); use those instead")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known - OWN_ARGS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown train config field 'libreyolo.{key}' (not a LibreYOLO YOLOv9 train argument){hint}")


def libreyolo_hyp(preset: str, *, mono: bool) -> dict[str, Any]:
    """LibreYOLO's own augmentation arguments for an EdgeVision preset (`edgevision.train.augment`).

    ``none`` switches them all off (no mosaic, flip, HSV or affine jitter).
    """
    from edgevision.train.augment import ultralytics_hyp

    u = ultralytics_hyp(preset, mono=mono)
    colour = (u["hsv_h"] or u["hsv_s"]) and not mono
    return {
        "mosaic_prob": u["mosaic"],
        "mixup_prob": 0.0,
        "flip_prob": u["fliplr"],
        "flipud": 0.0,
        "hsv_prob": 1.0 if colour else 0.0,
        "degrees": u["degrees"],
        "translate": u["translate"],
        "shear": 0.0,
        "mosaic_scale": (round(1.0 - u["scale"], 4), round(1.0 + u["scale"], 4)),
    }


# --------------------------------------------------------------------------- checkpoints


def _torch_load(path: Path) -> Any:
    import torch

    return torch.load(Path(path), map_location="cpu", weights_only=True)


def is_libreyolo_checkpoint(path: Path | str) -> bool:
    """True when ``path`` is a LibreYOLO checkpoint (a dict with ``libreyolo_version`` and ``model_family``).

    Loads with ``weights_only=True``; any error gives False.
    """
    try:
        ck = _torch_load(Path(path))
    except Exception:
        return False
    return isinstance(ck, dict) and "libreyolo_version" in ck and "model_family" in ck


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's dict, checked to be a LibreYOLO YOLOv9 detection model.

    Raises:
        ConfigError: not loadable, another family or task (one line).
    """
    try:
        ck = _torch_load(path)
    except Exception as e:
        raise ConfigError(f"{path}: not a loadable LibreYOLO checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    if not isinstance(ck, dict) or "libreyolo_version" not in ck:
        raise ConfigError(f"{path}: not a LibreYOLO checkpoint (no libreyolo_version)")
    if ck.get("model_family") != "yolo9" or ck.get("task", "detect") != "detect":
        raise ConfigError(f"{path}: a LibreYOLO {ck.get('model_family')} {ck.get('task', 'detect')} model; EdgeVision's "
                          "libreyolo backend takes YOLOv9 detection models (yolo9-t/s/m/c)")
    return ck


def _names(ck: dict[str, Any]) -> list[str]:
    names = ck.get("names") or {}
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    return [str(n) for n in names]


def load_model(path: Path, *, device: str = "cpu") -> Any:
    """A LibreYOLO9 wrapper holding the checkpoint's weights (EMA weights when it has them)."""
    _import_libreyolo()
    from libreyolo import LibreYOLO9

    ck = read_checkpoint(path)
    with _quiet():
        return LibreYOLO9(str(path), size=str(ck.get("size") or "t"), nb_classes=int(ck.get("nc") or len(_names(ck))),
                          device=device)


@contextlib.contextmanager
def _quiet(verbose: bool = False) -> Iterator[None]:
    """LibreYOLO logs at INFO through its own loggers; keep them at WARNING unless ``verbose``."""
    loggers = [logging.getLogger(n) for n in ("libreyolo", "LibreYOLO")]
    before = [lg.level for lg in loggers]
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, before):
            lg.setLevel(lvl)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[int]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n or usable_cores())
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- training


class _PixelAugment:
    """LibreYOLO's training transform with the preset's pixel-level albumentations applied first.

    Pixel-level transforms leave boxes where they are, so the wrapped transform sees the same targets.
    Picklable (data-loader workers): the albumentations list travels as ``A.to_dict`` dicts. Like LibreYOLO's own
    augmentation, the random stream follows the process's generators (not seeded per sample).

    ``enabled`` goes False with LibreYOLO's mosaic in the run's last ``no_aug_epochs`` (the trainer's
    ``on_mosaic_disable``): the model ends its schedule on the images as the camera takes them, as LibreYOLO's
    recipe does with its own strong augmentation. On NEU-DET in 20 epochs from scratch: COCO mAP50 0.679 this way,
    0.627 with the preset's pixel augmentation left on to the end (benchmarks/README.md).
    """

    def __init__(self, inner: Any, transforms: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.transforms = transforms
        self.enabled = True
        self._compose: Any = None

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "transforms", "enabled", "_compose"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "transforms": self.transforms, "enabled": self.enabled, "_compose": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _pipeline(self) -> Any:
        if self._compose is None:
            from edgevision.train.offline import prepare_albumentations

            prepare_albumentations()
            import albumentations as A

            self._compose = A.Compose([A.from_dict(t) for t in self.transforms])
        return self._compose

    def __call__(self, image: Any, targets: Any, input_dim: Any, *args: Any, **kwargs: Any) -> Any:
        if self.enabled and self.transforms and image is not None:
            image = np.ascontiguousarray(self._pipeline()(image=image)["image"])
        return self.inner(image, targets, input_dim, *args, **kwargs)


class _CountingLoader:
    """The training data loader, reporting ``(batch, batches, images in it)`` after each batch (LibreYOLO has no
    batch callback)."""

    def __init__(self, loader: Any, report: Callable[[int, int, int], None]) -> None:
        self._loader = loader
        self._report = report

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[Any]:
        total = len(self._loader)
        for i, batch in enumerate(self._loader, 1):
            yield batch
            self._report(i, total, _batch_size(batch))


def _batch_size(batch: Any) -> int:
    """Images in one batch of LibreYOLO's loader (a tuple whose first item is the image tensor)."""
    first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    return int(first.shape[0]) if hasattr(first, "shape") and len(first.shape) else 1


def _to_numpy(x: Any) -> NDArray[Any]:
    """A torch tensor (on any device) or an array-like as a numpy array."""
    return np.asarray(x.cpu().numpy() if hasattr(x, "cpu") else x)


def _trainer_class(base: type, transforms: list[dict[str, Any]], on_batch: Callable[[int, int, int], None] | None,
                   state: dict[str, Any]) -> type:
    """A subclass of LibreYOLO's YOLOv9 trainer with the pixel augmentation and the batch counter."""

    class EdgeVisionYOLO9Trainer(base):  # type: ignore[misc, valid-type]
        def create_transforms(self) -> Any:
            preproc, dataset_cls = super().create_transforms()
            if transforms:
                preproc = _PixelAugment(preproc, transforms)
            return preproc, dataset_cls

        def setup(self) -> Any:
            out = super().setup()
            loader = getattr(self, "train_loader", None)
            if on_batch is not None and loader is not None and not isinstance(loader, _CountingLoader):
                self.train_loader = _CountingLoader(loader, on_batch)
            state["trainer"] = self
            return out

        def on_mosaic_disable(self) -> None:  # the last no_aug_epochs: the preset's pixel augmentation stops too
            super().on_mosaic_disable()
            pre = getattr(getattr(self.train_loader, "dataset", None), "preproc", None)
            if isinstance(pre, _PixelAugment):
                pre.enabled = False  # reaches the workers: LibreYOLO's loader respawns them every epoch
                log.info("epoch %d: the preset's pixel augmentation off with mosaic", state["epoch"] + 1)

    return EdgeVisionYOLO9Trainer


def _device_arg(device: str) -> str:
    d = device.strip().lower()
    if d == "cpu" or d.isdigit():
        return d
    if "," in d:
        raise ConfigError(f"device '{device}': several GPUs are supported by the ultralytics backend only")
    raise ConfigError(f"device '{device}': expected cpu or a GPU index such as 0")


def train_libreyolo(
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
    """Train (or resume) a LibreYOLO YOLOv9 detector into ``run`` (see the module doc).

    Args:
        cfg: the resolved training config.
        spec: the resolved ``--model`` (an architecture of `ARCHS` or a LibreYOLO checkpoint).
        data_yaml: the YOLO dataset description (train and val splits).
        run: the run folder; LibreYOLO's own files go to ``run.backend``.
        resume: continue from ``run.backend/weights/last.pt``.
        augmentations: pixel-level albumentations as ``A.to_dict`` dicts.
        hyp: LibreYOLO augmentation arguments (`libreyolo_hyp`).
        progress: called as ``progress(stage, done, total)`` after each batch.
        verbose: keep LibreYOLO's own log output.

    Returns:
        ``epochs_run``, ``best_epoch``, ``best_map50``, ``best_map50_95`` (from history),
        ``backend_metrics`` (LibreYOLO's own best validation), ``train_images_per_s``, ``stopped_early``, ...
    """
    lib = _import_libreyolo()
    from libreyolo.models.yolo9.trainer import YOLO9Trainer

    device = _device_arg(cfg.device)
    backend_last = run.backend / "weights" / "last.pt"
    history_before = read_history(run.history)
    time_offset = float(history_before[-1]["time_s"] or 0.0) if history_before else 0.0
    state: dict[str, Any] = {"t0": time.time(), "epoch": len(history_before), "images": 0, "train_s": 0.0,
                             "epochs": cfg.epochs, "kept": 0}

    def on_batch(done: int, total: int, images: int) -> None:
        state["images"] += images
        if progress is not None:
            progress(f"epoch {state['epoch'] + 1}/{state['epochs']}", done, total)

    if resume:
        if not backend_last.is_file():
            raise ConfigError(f"{backend_last}: not found; nothing to resume (start a new run instead)")
        ck = read_checkpoint(backend_last)
        done_epochs = int(ck.get("epoch", -1)) + 1
        if done_epochs >= int((ck.get("config") or {}).get("epochs", cfg.epochs)):
            raise ConfigError(f"{run.root}: training already finished ({done_epochs} epochs); nothing to resume")
        rewrite_history(run.history, history_before[:done_epochs])
        state["epoch"] = state["kept"] = done_epochs
        with _quiet(verbose):
            model = lib.LibreYOLO9(str(backend_last), size=str(ck.get("size") or "t"), nb_classes=int(ck["nc"]),
                                   device=device)
    else:
        with _quiet(verbose):
            if spec.kind == "weights" and spec.path is not None:
                ck = read_checkpoint(spec.path)
                model = lib.LibreYOLO9(str(spec.path), size=str(ck.get("size") or "t"), nb_classes=int(ck["nc"]),
                                       device=device)
            else:
                size = ARCHS[str(spec.arch or cfg.model)]
                model = lib.LibreYOLO9(None, size=size, nb_classes=1, device=device)

    trainer_cls = _trainer_class(YOLO9Trainer, list(augmentations or []), on_batch, state)
    budget_s = cfg.time_hours * 3600 if cfg.time_hours is not None else None
    model._trainer_class = lambda: trainer_cls  # the wrapper's hook (LibreYOLO9._trainer_class)

    def on_epoch(event: Any) -> None:
        state["train_s"] += float(event.epoch_seconds or 0.0)
        m = dict(event.val_metrics or {})
        append_history(run.history, {
            "epoch": int(event.epoch),  # 1-based in LibreYOLO's events
            "time_s": round(time_offset + time.time() - state["t0"], 3),
            "train_loss": round(float(event.train_loss), 6) if event.train_loss is not None else None,
            "val_map50": _metric(m, "metrics/mAP50") if event.validated else None,
            "val_map50_95": _metric(m, "metrics/mAP50-95") if event.validated else None,
            "lr": round(float(next(iter(event.lr.values()))), 8) if event.lr else None,
        })
        state["epoch"] += 1
        if budget_s is not None and time_offset + time.time() - state["t0"] >= budget_s and state.get("trainer"):
            log.info("time budget of %.3g h reached after epoch %d", cfg.time_hours, state["epoch"])
            state["trainer"]._stop_training = True  # LibreYOLO's loop stops after this epoch
            state["budget_hit"] = True
        for src, dst in ((run.backend / "weights" / "last.pt", run.last), (run.backend / "weights" / "best.pt", run.best)):
            if src.is_file():
                copy_atomic(src, dst)

    args: dict[str, Any] = dict(
        device=device, workers=cfg.workers if cfg.workers is not None else min(usable_cores(), 4),
        callbacks=[on_epoch], amp=False,
    )
    if resume:
        args["resume"] = str(backend_last)
    else:
        args.update({
            "epochs": cfg.epochs, "batch": cfg.batch, "imgsz": cfg.imgsz, "seed": cfg.seed,
            "patience": cfg.patience or 0, "project": str(run.root), "name": run.backend.name, "exist_ok": True,
            "letterbox_pad": LETTERBOX, "eval_interval": 1, "save_period": 0, **(hyp or {}),
            **cfg.libreyolo,  # the user's LibreYOLO arguments win over EdgeVision's defaults (eval_interval, ...)
        })
        if cfg.lr0 is not None:
            args["lr0"] = cfg.lr0
        if spec.kind != "weights":
            args["pretrained"] = False
    t_start = time.time()
    with _threads(cfg.threads) as threads, _quiet(verbose):
        try:
            result = model.train(str(data_yaml), **args)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            raise EdgeVisionError(f"{run.root}: LibreYOLO refused: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    seconds = time.time() - t_start
    for src, dst in ((run.backend / "weights" / "last.pt", run.last), (run.backend / "weights" / "best.pt", run.best)):
        if src.is_file():
            copy_atomic(src, dst)
    rows = read_history(run.history)
    own = {k: float(v) for k, v in (result or {}).items()
           if k in ("best_mAP50", "best_mAP50_95", "final_loss") and isinstance(v, (int, float))}
    return {
        **history_summary(rows),
        "backend_metrics": own,
        "train_images_per_s": round(state["images"] / state["train_s"], 2) if state["train_s"] > 0 else None,
        "wall_s_this_call": round(seconds, 1),
        "stopped_early": len(rows) < cfg.epochs and not state.get("budget_hit"),
        "time_budget_reached": bool(state.get("budget_hit")),
        "epochs_this_call": len(rows) - state["kept"],
        "threads": threads,
        "libreyolo_version": getattr(lib, "__version__", None),
    }


def _metric(m: dict[str, Any], key: str) -> float | None:
    v = m.get(key)
    return None if v is None else round(float(v), 6)


# --------------------------------------------------------------------------- prediction


class LibreYOLOPredictor:
    """A LibreYOLO YOLOv9 ``.pt`` behind the `Predictor` protocol (LibreYOLO's own inference).

    Attributes:
        labels: the model's class names; imgsz: inference size (the training size unless given).
    """

    def __init__(self, path: Path, *, device: str = "cpu", imgsz: int | None = None, threads: int | None = None) -> None:
        from edgevision.train.imgsz import working_imgsz

        self.path = Path(path)
        ck = read_checkpoint(self.path)
        self.labels = LabelMap(_names(ck))
        self.imgsz = working_imgsz(imgsz, ck, BACKEND)
        self.device = _device_arg(device)
        self.threads = threads
        self.model = load_model(self.path, device=self.device)

    def predict(self, records: Sequence[ImageRecord], *, conf: float = 0.001, max_det: int = 100,
                batch: int = 8) -> list[ImageRecord]:
        """Predict every record's image (see `edgevision.models.Predictor`); boxes in the image's pixels."""
        from edgevision.train.torchvision_backend import read_image_rgb

        out: list[ImageRecord] = []
        with _threads(self.threads), _quiet():
            for r in records:
                if r.path is None or not Path(r.path).is_file():
                    raise EdgeVisionError(f"{r.name}: image file not found ({r.path})")
                img = read_image_rgb(r.path, r.name)
                res = self.model.predict(img, conf=conf, iou=0.7, imgsz=self.imgsz, max_det=max_det,
                                         color_format="rgb")
                res = res[0] if isinstance(res, list) else res
                b = res.boxes
                out.append(ImageRecord(
                    name=r.name, size_hw=r.size_hw, path=r.path, split=r.split,
                    boxes=_to_numpy(b.xyxy).astype(np.float64).reshape(-1, 4),
                    class_ids=_to_numpy(b.cls).astype(np.int64),
                    scores=_to_numpy(b.conf).astype(np.float32),
                ))
        return out
