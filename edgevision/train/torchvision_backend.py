"""The BSD-licensed training backend: torchvision's ``ssdlite320_mobilenet_v3_large`` on the canonical model.

For users who cannot accept Ultralytics' AGPL-3.0 licence. No Ultralytics, no network: the model is
built with ``weights=None`` **and** ``weights_backbone=None`` (the backbone default would download
ImageNet weights), from scratch or fine-tuned from a checkpoint this backend wrote.

Conventions:
    * **Classes**: torchvision's SSD reserves label 0 for the background, so the model has ``K + 1``
      classes; canonical id ``c`` is model label ``c + 1`` (and back in `TorchvisionPredictor`).
    * **Image size**: despite "320" in its name the SSDlite network is fully convolutional and its
      default boxes are relative to the image, so ``cfg.imgsz`` is the real working size: images
      are read with OpenCV, converted to 8-bit RGB and resized (``INTER_AREA`` / ``INTER_LINEAR``) to
      ``imgsz x imgsz`` by us, and the model's own ``GeneralizedRCNNTransform`` is pinned to the same
      fixed size so its resize is the identity. Boxes are scaled by ``(imgsz / w, imgsz / h)`` and
      back. Square resizing changes the aspect ratio, as torchvision's SSD does. ``imgsz`` is saved in
      the checkpoint (``edgevision.imgsz``) for prediction and export.
    * **Pixels**: 8-bit images as they are; 16-bit or float images are stretched per image from
      their min to their max (industrial 10/12-bit sensors store in 16 bits); grey images are
      repeated to 3 channels, an alpha channel is dropped. EXIF orientation is not applied (boxes
      refer to the stored pixels, as everywhere in EdgeVision).
    * **Optimiser**: SGD, momentum 0.9, weight decay 4e-5 (no decay on BatchNorm and biases);
      ``lr0`` defaults to ``0.0125 * batch / 16``, the linear scaling of torchvision's SSDlite recipe
      (lr 0.15 for 192 images per step). Learning rate per step: linear warmup from 0.1 x over
      ``min(3 epochs, 10 % of all steps)`` steps, then cosine to 1 % of ``lr0`` at ``cfg.epochs``.
    * **Batches**: BatchNorm on SSDlite's 1 x 1 feature maps needs at least 2 images per step, so
      ``batch >= 2`` and at least 2 training images are required, and a last batch of 1 image is
      merged into the one before it (nothing is dropped).
    * **Threads**: ``torch.set_num_threads(cfg.threads or usable_cores())`` for the call, restored
      after. On a 2-core box whose cores are also busy with other work, 2 threads measured 5 to 70
      times slower than 1 (OpenMP threads wait for each other): set ``threads: 1`` there.
    * **Determinism**: the weight init follows ``torch.manual_seed(cfg.seed)``; the image order of
      epoch ``e`` and the random augmentation of each sample depend only on ``(seed, e, index)``,
      never on the number of workers or on a resume. On the CPU a resumed run is bit-identical to an
      uninterrupted one, and ``workers`` 0 and 2 give identical weights (measured).
    * **Targets**: objects flagged ``difficult`` are dropped from the training targets only when
      ``cfg.difficult`` is ``drop`` (``ignore`` trains on them, as the Ultralytics backend does, and
      only the evaluation ignores them); background images train as images with no box.
    * **Validation** after every epoch on the ``val`` split: COCO mAP50 and mAP50-95 by
      `edgevision.evaluate.coco.coco_evaluate` (pycocotools, 100 detections per image,
      ``conf=0.001``, ``difficult`` objects as ``cfg.difficult`` says); a metric pycocotools leaves
      undefined (no counted object) is recorded as 0.
    * **Checkpoints** (`torch.save` of a plain dict, readable with ``weights_only=True``):
      ``last.pt`` every epoch with the optimiser, scheduler, RNG states and history (resumable);
      ``best.pt`` (model and metadata only) when validation mAP50-95 improves. Both are written to a
      temporary file beside the target and renamed, so Ctrl-C never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgevision.core.cpu import usable_cores
from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError
from edgevision.train.config import TrainConfig
from edgevision.train.run import RunPaths, append_history, rewrite_history

log = logging.getLogger(__name__)

__all__ = [
    "ARCH",
    "CHECKPOINT_FORMAT",
    "TorchvisionPredictor",
    "is_torchvision_checkpoint",
    "read_image_rgb",
    "train_torchvision",
]

ARCH = "ssdlite320_mobilenet_v3_large"
"""The one architecture this backend builds."""

CHECKPOINT_FORMAT = 1
"""Bumped when the checkpoint layout changes."""

BACKEND = "torchvision"
_WEIGHT_DECAY = 4e-5
_MOMENTUM = 0.9
_WARMUP_EPOCHS = 3
_WARMUP_FRACTION = 0.1
_WARMUP_START = 0.1
_FINAL_LR_FRACTION = 0.01
_VAL_BATCH = 8
_VAL_MAX_DET = 100
_VAL_CONF = 0.001

Augment = Callable[[NDArray[np.uint8], NDArray[np.float32], NDArray[np.int64]],
                   tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.int64]]]
Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- images


def read_image_rgb(path: Path | str, where: str | None = None) -> NDArray[np.uint8]:
    """Read an image file as 8-bit RGB.

    Args:
        path: the image file (any path, non-ASCII included).
        where: the item named in errors (defaults to the path).

    Returns:
        ``(H, W, 3)`` uint8 RGB; grey images repeated to 3 channels, alpha dropped, 16-bit and float
        images stretched from their min to their max.

    Raises:
        DatasetError: the file is missing or not decodable.
    """
    import cv2

    where = where or str(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise DatasetError(f"image file not readable ({e.__class__.__name__}): {path}", where=where,
                           code="image_missing") from e
    from edgevision.runtime.images import DEFAULT_MAX_PIXELS, ImageReadError, ImageTooLargeError, check_image_header

    try:  # the pixel count from the header, before any decoder allocates it
        check_image_header(data, DEFAULT_MAX_PIXELS, str(path))
    except ImageTooLargeError as e:
        raise DatasetError(str(e), where=where, code="image_too_large") from e
    except ImageReadError as e:
        raise DatasetError(f"image is not decodable: {e}", where=where, code="image_corrupt") from e
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DatasetError(f"image is not decodable by OpenCV: {path}", where=where, code="image_corrupt")
    if img.dtype != np.uint8:
        f = img.astype(np.float32)
        lo, hi = float(f.min()), float(f.max())
        img = np.zeros(f.shape, np.uint8) if hi <= lo else np.clip((f - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _resize_square(img: NDArray[np.uint8], imgsz: int) -> NDArray[np.uint8]:
    import cv2

    h, w = img.shape[:2]
    if (h, w) == (imgsz, imgsz):
        return img
    interp = cv2.INTER_AREA if h * w > imgsz * imgsz else cv2.INTER_LINEAR
    return cv2.resize(img, (imgsz, imgsz), interpolation=interp)


def _to_tensor(img: NDArray[np.uint8]) -> Any:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


def _clean_boxes(
    boxes: NDArray[np.float32], class_ids: NDArray[np.int64], h: int, w: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Clip ``(N, 4)`` xyxy boxes to the image, drop those with no area, widen thinner than 1 px."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    c = np.asarray(class_ids, np.int64).reshape(-1)
    b[:, 0::2] = b[:, 0::2].clip(0, w)
    b[:, 1::2] = b[:, 1::2].clip(0, h)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    b, c = b[keep], c[keep]
    for lo, hi, size in ((0, 2, w), (1, 3, h)):  # SSD refuses degenerate boxes; keep thin ones >= 1 px
        thin = b[:, hi] - b[:, lo] < 1.0
        if thin.any():
            mid = (b[thin, lo] + b[thin, hi]) / 2
            b[thin, lo] = np.clip(mid - 0.5, 0, max(size - 1, 0))
            b[thin, hi] = b[thin, lo] + 1.0
    return b, c


# --------------------------------------------------------------------------- data


class _TrainSet:
    """Training samples: image resized to ``imgsz``, boxes scaled, augmentation seeded per sample."""

    def __init__(self, records: Sequence[ImageRecord], cfg: TrainConfig, augment: Augment | None) -> None:
        self.records = list(records)
        self.imgsz = cfg.imgsz
        self.seed = cfg.seed
        self.augment = augment
        self.flip = augment is None and cfg.augment != "none"
        self.drop_difficult = cfg.difficult == "drop"  # ignore: trained on, only the evaluation ignores them
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, dict[str, Any]]:
        import torch

        epoch, i = key
        rec = self.records[i]
        img = read_image_rgb(rec.path, rec.name)  # type: ignore[arg-type]
        h, w = img.shape[:2]
        keep = np.ones(len(rec), bool)
        if self.drop_difficult and rec.attributes is not None:
            keep = np.array([not a.get("difficult", False) for a in rec.attributes], bool)
        boxes = rec.boxes[keep].astype(np.float32) * np.array([self.imgsz / w, self.imgsz / h] * 2, np.float32)
        ids = rec.class_ids[keep]
        img = _resize_square(img, self.imgsz)
        rng = np.random.default_rng([self.seed, epoch, i])
        if self.augment is not None:
            # The augmentation's own RNGs (python's, numpy's legacy one) are seeded per sample, so
            # the result does not depend on workers or resume for callables that draw from them.
            random.seed(int(rng.integers(2**31)))
            np.random.seed(int(rng.integers(2**31)))
            img, boxes, ids = self.augment(img, boxes, ids)
            img = np.ascontiguousarray(img)
        elif self.flip and rng.random() < 0.5:
            img = np.ascontiguousarray(img[:, ::-1])
            boxes = boxes[:, [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32) + np.array(
                [img.shape[1], 0, img.shape[1], 0], np.float32)
        boxes, ids = _clean_boxes(boxes, ids, img.shape[0], img.shape[1])
        target = {"boxes": torch.from_numpy(boxes).reshape(-1, 4), "labels": torch.from_numpy(ids + 1)}
        return _to_tensor(img), target


class _EpochBatches:
    """Batch sampler: a seeded permutation per epoch, a last batch of 1 merged into the previous one."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch, self.seed = n, batch, seed
        self.epoch = 0

    def batches(self) -> list[list[tuple[int, int]]]:
        order = np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n)
        out = [order[i:i + self.batch].tolist() for i in range(0, self.n, self.batch)]
        if len(out) > 1 and len(out[-1]) == 1:
            out[-2].extend(out.pop())
        return [[(self.epoch, int(i)) for i in b] for b in out]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def _collate(batch: list[tuple[Any, dict[str, Any]]]) -> tuple[list[Any], list[dict[str, Any]]]:
    return [b[0] for b in batch], [b[1] for b in batch]


# --------------------------------------------------------------------------- model


def _build_model(num_classes: int, imgsz: int) -> Any:
    """SSDlite with ``num_classes + 1`` labels (0 = background), no weights downloaded, fixed ``imgsz``."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    model.transform.min_size = (imgsz,)
    model.transform.max_size = imgsz
    model.transform.fixed_size = (imgsz, imgsz)
    return model


def _meta(cfg: TrainConfig, names: list[str], epoch: int, best_fitness: float) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "backend": BACKEND,
        "arch": ARCH,
        "names": list(names),
        "imgsz": cfg.imgsz,
        "epoch": epoch,
        "best_fitness": best_fitness,
        "config": cfg.to_yaml_dict(),
    }


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{path}: checkpoint not found") from None
    except Exception as e:  # pickle / zip errors of many kinds
        raise ConfigError(f"{path}: not a readable torch checkpoint ({e.__class__.__name__}: {e})") from e


def is_torchvision_checkpoint(path: Path | str) -> bool:
    """True when ``path`` is a checkpoint written by this backend (a dict with ``edgevision.backend``).

    Loads the file with ``weights_only=True`` on the CPU; any error (missing, not a checkpoint, an
    Ultralytics pickle that needs its classes) gives False.
    """
    import torch

    try:
        ck = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:
        return False
    meta = ck.get("edgevision") if isinstance(ck, dict) else None
    return isinstance(meta, dict) and meta.get("backend") == BACKEND


def _load_checkpoint(path: Path) -> dict[str, Any]:
    ck = _torch_load(path)
    meta = ck.get("edgevision") if isinstance(ck, dict) else None
    if not isinstance(meta, dict) or meta.get("backend") != BACKEND or "model" not in ck:
        raise ConfigError(f"{path}: not a torchvision checkpoint written by EdgeVision "
                          f"(expected an 'edgevision' entry with backend '{BACKEND}' and a 'model' state)")
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("arch") != ARCH:
        raise ConfigError(f"{path}: expected checkpoint format {CHECKPOINT_FORMAT} of {ARCH}, "
                          f"got format {meta.get('format')} of {meta.get('arch')}")
    return ck


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save into a temporary file beside ``path``, then rename; no partial file survives."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:  # KeyboardInterrupt or a full disk: remove the partial file, keep the old checkpoint
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --------------------------------------------------------------------------- training


def train_torchvision(
    cfg: TrainConfig,
    dataset: Dataset,
    run: RunPaths,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    augment: Augment | None = None,
) -> dict[str, Any]:
    """Train SSDlite on the ``train`` split, validate on ``val`` each epoch, write the run's weights.

    Args:
        cfg: the resolved config (``cfg.model``: ``ssdlite320_mobilenet_v3_large`` from scratch, or a
            local ``.pt`` this backend wrote, to fine-tune from; same number of classes).
        dataset: the split dataset; class names are ``dataset.labels.names``.
        run: the run folder; writes ``weights/last.pt``, ``weights/best.pt`` and ``history.csv``.
        resume: continue from ``run.last`` up to ``cfg.epochs`` (model, optimiser, scheduler, epoch
            and RNG states restored; ``history.csv`` rewritten from the checkpoint).
        progress: called as ``progress("epoch 3/10", batches_done, batches_total)`` after each batch.
        augment: ``(image (H, W, 3) uint8 RGB, boxes (N, 4) float32 xyxy, class_ids (N,))`` -> the
            same triple, applied to training samples; None: a horizontal flip with p=0.5 unless
            ``cfg.augment == "none"``.

    Returns:
        ``epochs_run`` (this call), ``best_epoch``, ``best_map50_95``, ``best_map50``,
        ``train_images_per_s`` (training steps only), ``stopped_early`` (patience or time budget).

    Raises:
        ConfigError: nothing to resume, a checkpoint for another class count, batch < 2, an empty
            split, an unknown ``cfg.model``. DatasetError: an unreadable image.
    """
    import torch

    names = list(dataset.labels.names)
    train_recs = dataset.split("train")
    val_recs = dataset.split("val")
    _check_inputs(cfg, names, train_recs, val_recs)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or usable_cores())
    try:
        return _train(cfg, names, train_recs, val_recs, run, resume, progress, augment)
    finally:
        torch.set_num_threads(threads_before)


def _check_inputs(cfg: TrainConfig, names: list[str], train: list[ImageRecord], val: list[ImageRecord]) -> None:
    if not names:
        raise ConfigError("torchvision backend: the dataset has no classes; expected at least one class name")
    if cfg.batch < 2:
        raise ConfigError(f"batch: the torchvision backend needs at least 2 images per step (SSDlite's "
                          f"BatchNorm on 1x1 feature maps), got {cfg.batch}; use --batch 2 or more")
    if len(train) < 2:
        raise ConfigError(f"torchvision backend: expected at least 2 images in split 'train', got {len(train)}")
    if not val:
        raise ConfigError("torchvision backend: expected images in split 'val' for validation, got none")
    missing = next((r for r in (*train, *val) if r.path is None), None)
    if missing is not None:
        raise ConfigError(f"{missing.name}: the record has no image file; training needs image paths")
    if cfg.device != "cpu" and "," in cfg.device:
        raise ConfigError(f"device: the torchvision backend trains on one device, got '{cfg.device}'; "
                          "use --device 0 or cpu")


def _device(name: str) -> Any:
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' asked for, but CUDA is not available here; use --device cpu")
    return torch.device(f"cuda:{int(name)}" if name.isdigit() else name)


def _initial_weights(cfg: TrainConfig, names: list[str], model: Any) -> None:
    """Load fine-tuning weights when ``cfg.model`` is a local checkpoint; else keep the seeded init."""
    if cfg.model == ARCH:
        return
    path = Path(cfg.model)
    if path.suffix not in (".pt", ".pth") or not path.is_file():
        raise ConfigError(f"model: the torchvision backend builds '{ARCH}' or fine-tunes from a local .pt "
                          f"it wrote, got '{cfg.model}'")
    ck = _load_checkpoint(path)
    theirs = list(ck["edgevision"]["names"])
    if len(theirs) != len(names):
        raise ConfigError(f"{path}: checkpoint has {len(theirs)} classes {theirs}, the dataset has "
                          f"{len(names)} {names}; fine-tune from a checkpoint with the same classes")
    if theirs != names:
        log.warning("%s: class names differ from the dataset's (%s vs %s); ids are kept by position",
                    path, theirs, names)
    model.load_state_dict(ck["model"])
    log.info("fine-tuning from %s (epoch %s)", path, ck["edgevision"].get("epoch"))


def _param_groups(model: Any) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": _WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup_steps:
            return _WARMUP_START + (1 - _WARMUP_START) * step / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return _FINAL_LR_FRACTION + (1 - _FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _train(
    cfg: TrainConfig,
    names: list[str],
    train_recs: list[ImageRecord],
    val_recs: list[ImageRecord],
    run: RunPaths,
    resume: bool,
    progress: Progress | None,
    augment: Augment | None,
) -> dict[str, Any]:
    import torch

    device = _device(cfg.device)
    ck: dict[str, Any] | None = None
    if resume:
        if not run.last.is_file():
            raise ConfigError(f"{run.last}: not found; nothing to resume")
        ck = _load_checkpoint(run.last)
        if list(ck["edgevision"]["names"]) != names:
            raise ConfigError(f"{run.last}: checkpoint classes {ck['edgevision']['names']} differ from the "
                              f"dataset's {names}; resume with the dataset the run started with")

    torch.manual_seed(cfg.seed)
    model = _build_model(len(names), cfg.imgsz)
    if ck is None:
        _initial_weights(cfg, names, model)
    else:
        model.load_state_dict(ck["model"])
    model.to(device)

    train_set = _TrainSet(train_recs, cfg, augment)
    sampler = _EpochBatches(len(train_set), cfg.batch, cfg.seed)
    workers = cfg.workers if cfg.workers is not None else 0
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=sampler, collate_fn=_collate, num_workers=workers,
        generator=torch.Generator().manual_seed(cfg.seed), persistent_workers=False,
    )
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = max(1, min(_WARMUP_EPOCHS * steps_per_epoch, int(_WARMUP_FRACTION * total_steps)))
    lr0 = cfg.lr0 if cfg.lr0 is not None else 0.0125 * cfg.batch / 16
    optimizer = torch.optim.SGD(_param_groups(model), lr=lr0, momentum=_MOMENTUM)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup))

    start_epoch, best_fitness, best_epoch, best_map50 = 0, -1.0, 0, 0.0
    history: list[dict[str, Any]] = []
    elapsed0 = 0.0
    if ck is not None:
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        _set_rng(ck["rng"])
        meta = ck["edgevision"]
        start_epoch, best_fitness = int(meta["epoch"]), float(meta["best_fitness"])
        best_epoch, best_map50 = int(ck.get("best_epoch", 0)), float(ck.get("best_map50", 0.0))
        history = list(ck.get("history", []))
        elapsed0 = float(ck.get("elapsed_s", 0.0))
        rewrite_history(run.history, history)
        log.info("resuming %s from epoch %d of %d", run.root, start_epoch, cfg.epochs)
    else:
        with contextlib.suppress(FileNotFoundError):
            run.history.unlink()
        log.info("training %s on %d images (%d val), %d classes, imgsz %d, batch %d, lr0 %.4g, %d threads",
                 ARCH, len(train_recs), len(val_recs), len(names), cfg.imgsz, cfg.batch, lr0,
                 torch.get_num_threads())

    t_start = time.perf_counter()
    budget_s = cfg.time_hours * 3600 if cfg.time_hours is not None else None
    train_images, train_time = 0, 0.0
    epochs_run, stopped_early, epoch_times = 0, False, []
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        sampler.epoch = epoch
        stage = f"epoch {epoch + 1}/{cfg.epochs}"
        model.train()
        loss_sum, n_batches = 0.0, 0
        for images, targets in loader:
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach())
            n_batches += 1
            train_images += len(images)
            if not math.isfinite(loss_sum):
                raise ConfigError(f"training diverged at {stage} (loss {loss_sum}); lower lr0 (now {lr0:.4g})")
            if progress is not None:
                progress(stage, n_batches, steps_per_epoch)
        train_time += time.perf_counter() - t_epoch
        lr = optimizer.param_groups[0]["lr"]
        map50, map50_95 = _val_map(model, val_recs, cfg, device, names)
        elapsed = elapsed0 + time.perf_counter() - t_start
        row = {"epoch": epoch + 1, "time_s": round(elapsed, 3), "train_loss": round(loss_sum / max(n_batches, 1), 6),
               "val_map50": round(map50, 6), "val_map50_95": round(map50_95, 6), "lr": lr}
        history.append(row)
        improved = map50_95 > best_fitness
        if improved:
            best_fitness, best_epoch, best_map50 = map50_95, epoch + 1, map50
        meta = _meta(cfg, names, epoch + 1, best_fitness)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        # last.pt first (it is what resume trusts), then best.pt, then the history row; resume
        # rewrites history.csv from last.pt, so an interrupt between them loses nothing.
        _save_atomic({"edgevision": meta, "model": state, "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "rng": _get_rng(), "history": history,
                      "best_epoch": best_epoch, "best_map50": best_map50, "elapsed_s": elapsed}, run.last)
        if improved:
            _save_atomic({"edgevision": meta, "model": state}, run.best)
        append_history(run.history, row)
        epochs_run += 1
        epoch_times.append(time.perf_counter() - t_epoch)
        log.info("%s: loss %.4f, val mAP50 %.4f, mAP50-95 %.4f%s", stage, row["train_loss"], map50, map50_95,
                 " (best)" if improved else "")
        if cfg.patience and epoch + 1 - best_epoch >= cfg.patience and epoch + 1 < cfg.epochs:
            log.info("early stop: no improvement in mAP50-95 for %d epochs (best epoch %d)", cfg.patience, best_epoch)
            stopped_early = True
            break
        if budget_s is not None and epoch + 1 < cfg.epochs and elapsed + float(np.mean(epoch_times)) > budget_s:
            log.info("time budget of %.3g h reached after epoch %d", cfg.time_hours, epoch + 1)
            stopped_early = True
            break
    return {
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "best_map50_95": max(best_fitness, 0.0),
        "best_map50": best_map50,
        "train_images_per_s": train_images / train_time if train_time > 0 else 0.0,
        "stopped_early": stopped_early,
    }


def _get_rng() -> dict[str, Any]:
    import torch

    state = np.random.get_state()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(state[1].astype(np.int64)), "pos": int(state[2]),
                  "has_gauss": int(state[3]), "cached": float(state[4])},
        "python": repr(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng(rng: dict[str, Any]) -> None:
    import ast

    import torch

    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(ast.literal_eval(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])




# --------------------------------------------------------------------------- validation


def _predict_model(
    model: Any, records: Sequence[ImageRecord], imgsz: int, device: Any, conf: float, max_det: int, batch: int
) -> list[ImageRecord]:
    """Run ``model`` (eval mode is set here) on the records' image files; boxes in original pixels."""
    import torch

    model.eval()
    model.score_thresh = conf
    model.detections_per_img = max_det
    model.topk_candidates = max(getattr(model, "topk_candidates", 300), max_det)
    out: list[ImageRecord] = []
    with torch.inference_mode():
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            imgs, sizes = [], []
            for rec in chunk:
                if rec.path is None:
                    raise ConfigError(f"{rec.name}: the record has no image file; prediction needs image paths")
                img = read_image_rgb(rec.path, rec.name)
                sizes.append(img.shape[:2])
                imgs.append(_to_tensor(_resize_square(img, imgsz)).to(device))
            dets = model(imgs)
            for rec, (h, w), det in zip(chunk, sizes, dets, strict=True):
                boxes = det["boxes"].float().cpu().numpy().astype(np.float64).reshape(-1, 4)
                boxes *= np.array([w / imgsz, h / imgsz] * 2)
                boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
                boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
                out.append(ImageRecord(
                    name=rec.name, size_hw=(h, w), boxes=boxes,
                    class_ids=det["labels"].cpu().numpy().astype(np.int64) - 1,
                    scores=det["scores"].float().cpu().numpy(), path=rec.path, split=rec.split, meta=dict(rec.meta),
                ))
    return out


def _val_map(
    model: Any, records: Sequence[ImageRecord], cfg: TrainConfig, device: Any, names: list[str]
) -> tuple[float, float]:
    """COCO mAP50 and mAP50-95 of ``model`` on ``records`` (`coco_evaluate`: 100 detections, conf 0.001)."""
    from edgevision.evaluate.coco import coco_evaluate

    preds = _predict_model(model, records, cfg.imgsz, device, _VAL_CONF, _VAL_MAX_DET, _VAL_BATCH)
    m = coco_evaluate(records, preds, LabelMap(list(names)), max_dets=_VAL_MAX_DET, difficult=cfg.difficult)
    return m.map50 or 0.0, m.map50_95 or 0.0


# --------------------------------------------------------------------------- prediction


class TorchvisionPredictor:
    """A checkpoint of this backend as a `edgevision.models.Predictor`.

    Attributes:
        labels: the model's class names (canonical ids ``0..K-1``).
        imgsz: the square side images are resized to.
        meta: the checkpoint's ``edgevision`` metadata.
    """

    def __init__(self, model: Any, labels: LabelMap, imgsz: int, device: Any, meta: dict[str, Any],
                 batch: int = _VAL_BATCH) -> None:
        self.model, self.labels, self.imgsz, self.device, self.meta, self.batch = model, labels, imgsz, device, meta, batch

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu", imgsz: int | None = None) -> TorchvisionPredictor:
        """Open ``best.pt`` / ``last.pt`` (or a fine-tuned copy) written by `train_torchvision`.

        Args:
            path: the checkpoint.
            device: ``cpu`` or a CUDA index such as ``0``.
            imgsz: the working size; None: the size it was trained at.

        Raises:
            ConfigError: missing file or not a checkpoint of this backend.
        """
        from edgevision.train.imgsz import working_imgsz

        ck = _load_checkpoint(Path(path))
        meta = dict(ck["edgevision"])
        size = working_imgsz(imgsz, ck, "torchvision")
        dev = _device(device)
        model = _build_model(len(meta["names"]), size)
        model.load_state_dict(ck["model"])
        model.to(dev).eval()
        return cls(model, LabelMap(list(meta["names"])), size, dev, meta)

    def predict(self, records: Sequence[ImageRecord], *, conf: float = 0.001, max_det: int = 100) -> list[ImageRecord]:
        """Detect objects in each record's image file (see `Predictor.predict`).

        Returns:
            One record per input: boxes ``(N, 4)`` xyxy in the original image's pixels,
            ``class_ids`` canonical (``0..K-1``), ``scores`` in [0, 1], N <= ``max_det``, scores >= ``conf``.
        """
        return _predict_model(self.model, records, self.imgsz, self.device, conf, max_det, self.batch)
