"""Augmentation presets for industrial imagery, for both training backends.

A preset is a name chosen in the training config (``augment:``). It describes what changes on a
real line between the day the images were taken and the day the model runs:

- exposure and lighting: brightness / contrast / gamma, and an uneven illumination gradient;
- blur: motion blur (the part moves during the exposure) or defocus (the part sits off the focal plane);
- sensor noise: Gaussian read noise, plus ISO (colour) noise on colour cameras;
- JPEG artefacts: smart cameras and PLC gateways often store compressed frames;
- small rotations: the part or the camera mount is a few degrees off.

Nothing changes hue or saturation, and nothing turns colour into grey, when the dataset is
grayscale (``mono=True``): on a grey image these only add colour that the camera can never
produce. On a grey image stored as 3 channels every transform of a mono preset keeps
``R == G == B`` (tested).

Presets:

======================  =========================================================================
``none``                no augmentation at all (also switches off Ultralytics' own mosaic, flips,
                        HSV and affine jitter): for debugging and for overfitting checks.
``industrial-light``    milder ranges and lower probabilities; ±2° rotations. Small datasets of a
                        very stable line, or fine-tuning from a model already trained on the line.
``industrial``          the default; ±5° rotations.
``industrial-strong``   wider ranges, higher probabilities, ±10° rotations: when the deployment
                        cameras or lighting differ from the ones the images were taken with.
======================  =========================================================================

Three views of a preset, one per consumer:

- `build_transforms` returns albumentations transform objects. The Ultralytics backend passes
  ``[A.to_dict(t) for t in build_transforms(p, mono=m, spatial=False)]`` as the ``augmentations``
  train argument (Ultralytics stores it in its checkpoints, so resume restores it) and the
  geometry through `ultralytics_hyp`, whose ``degrees`` rotates the mosaic canvas before the crop;
  with ``spatial=True`` the rotation is a transform of the list instead, so do not use both.
- `ultralytics_hyp` returns the Ultralytics hyperparameters the preset sets.
- `BoxAugmenter` applies a preset to one image and its boxes (the torchvision backend).

Flips: horizontal flips are on (``fliplr=0.5``), vertical flips off (``flipud=0.0``) in every
preset. Most lines have an up and a down (gravity, conveyor direction, lighting from above), and a
defect class may depend on it (a drip runs down). For orientation-free textures such as NEU-DET
steel patches vertical flips would be valid too; they are left off so that one rule holds for all
presets.

Scale jitter is kept below Ultralytics' default (0.5): on a fixed inspection camera the distance
to the part, and so the size of a defect in pixels, barely changes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgevision.core.dataset import ImageRecord
from edgevision.core.errors import DatasetError, UnknownNameError

log = logging.getLogger(__name__)

__all__ = [
    "BoxAugmenter",
    "build_transforms",
    "describe_preset",
    "is_mono_dataset",
    "list_presets",
    "ultralytics_hyp",
]

FILL_GREY = 114
"""Pixel value that fills the corners a rotation uncovers (Ultralytics' letterbox grey)."""

MIN_VISIBILITY = 0.3
"""`BoxAugmenter` drops a box when less than this fraction of its area stays inside the image."""


@dataclass(frozen=True)
class _Preset:
    """The numbers of one preset (probabilities ``p_*`` are per image)."""

    description: str
    p_exposure: float = 0.0  # RandomBrightnessContrast
    brightness: float = 0.0  # +- fraction of the maximum value
    contrast: float = 0.0  # +- fraction
    p_gamma: float = 0.0
    gamma: tuple[int, int] = (100, 100)  # percent
    p_illumination: float = 0.0  # linear / corner gradient
    illumination: float = 0.0  # max intensity of the gradient
    p_blur: float = 0.0  # one of motion blur / defocus
    motion_kernel: int = 3  # max kernel size (odd)
    defocus_radius: int = 1  # max radius in pixels
    p_noise: float = 0.0  # Gaussian (mono) or one of Gaussian / ISO (colour)
    noise_std: tuple[float, float] = (0.0, 0.0)  # fraction of the maximum value
    p_jpeg: float = 0.0
    jpeg_quality: tuple[int, int] = (100, 100)
    p_rotate: float = 0.0
    degrees: float = 0.0  # +- degrees
    # Ultralytics' own hyperparameters
    hsv_h: float = 0.0  # colour only
    hsv_s: float = 0.0  # colour only
    translate: float = 0.0
    scale: float = 0.0
    fliplr: float = 0.0
    mosaic: float = 0.0


_PRESETS: dict[str, _Preset] = {
    "none": _Preset(description="no augmentation (Ultralytics' mosaic, flips and jitter off too)"),
    "industrial-light": _Preset(
        description="mild: exposure ±10%, gamma 90-110%, light blur/noise/JPEG 85-100, ±2° rotation, p≈0.2",
        p_exposure=0.3, brightness=0.1, contrast=0.1,
        p_gamma=0.2, gamma=(90, 110),
        p_illumination=0.1, illumination=0.08,
        p_blur=0.1, motion_kernel=5, defocus_radius=2,
        p_noise=0.15, noise_std=(0.01, 0.03),
        p_jpeg=0.15, jpeg_quality=(85, 100),
        p_rotate=0.3, degrees=2.0,
        hsv_h=0.005, hsv_s=0.2, translate=0.05, scale=0.1, fliplr=0.5, mosaic=1.0,
    ),
    "industrial": _Preset(
        description="exposure ±20%, gamma 80-120%, uneven light, motion/defocus blur, sensor noise, "
                    "JPEG 60-100, ±5° rotation, p≈0.3",
        p_exposure=0.5, brightness=0.2, contrast=0.2,
        p_gamma=0.3, gamma=(80, 120),
        p_illumination=0.2, illumination=0.15,
        p_blur=0.2, motion_kernel=7, defocus_radius=3,
        p_noise=0.3, noise_std=(0.01, 0.05),
        p_jpeg=0.3, jpeg_quality=(60, 100),
        p_rotate=0.5, degrees=5.0,
        hsv_h=0.01, hsv_s=0.3, translate=0.1, scale=0.25, fliplr=0.5, mosaic=1.0,
    ),
    "industrial-strong": _Preset(
        description="exposure ±30%, gamma 70-140%, strong uneven light, blur, noise, JPEG 40-100, "
                    "±10° rotation, p≈0.5 (new cameras or lighting)",
        p_exposure=0.7, brightness=0.3, contrast=0.3,
        p_gamma=0.5, gamma=(70, 140),
        p_illumination=0.4, illumination=0.2,
        p_blur=0.35, motion_kernel=11, defocus_radius=5,
        p_noise=0.5, noise_std=(0.02, 0.08),
        p_jpeg=0.5, jpeg_quality=(40, 100),
        p_rotate=0.6, degrees=10.0,
        hsv_h=0.015, hsv_s=0.5, translate=0.15, scale=0.4, fliplr=0.5, mosaic=1.0,
    ),
}


def list_presets() -> list[str]:
    """Preset names, mildest first (``none``, ``industrial-light``, ``industrial``, ``industrial-strong``)."""
    return list(_PRESETS)


def _preset(name: str) -> _Preset:
    try:
        return _PRESETS[name]
    except KeyError:
        raise UnknownNameError("augmentation preset", name, _PRESETS) from None


def describe_preset(name: str) -> str:
    """One line saying what the preset does (for ``edgevision train --help`` and listings).

    Raises:
        UnknownNameError: listing the presets and the closest match.
    """
    return _preset(name).description


def _albumentations() -> Any:
    from edgevision.train.offline import prepare_albumentations

    prepare_albumentations()  # it queries PyPI at import otherwise
    import albumentations as A

    return A


def build_transforms(preset: str, *, mono: bool, spatial: bool = True) -> list[Any]:
    """The preset as a list of albumentations transforms (pixel-level first, rotation last).

    Every transform round-trips through ``A.to_dict`` / ``A.from_dict`` (no ``A.Lambda``), so the
    list can be stored in an Ultralytics checkpoint. ``none`` gives ``[]``; Ultralytics applies no
    albumentations at all for an empty list (``None`` would mean its own defaults, which include
    ``ToGray``).

    Args:
        preset: a name from `list_presets`.
        mono: the dataset is grayscale: no colour transforms (ISO noise); Gaussian noise is the
            same on every channel, so a grey image stays grey.
        spatial: include the small rotation (``A.Affine``, a DualTransform that moves boxes). The
            Ultralytics backend passes False and rotates through `ultralytics_hyp`'s ``degrees``.

    Returns:
        albumentations transform objects (``A.BasicTransform`` / ``A.OneOf``), for uint8 images
        ``(H, W, 3)`` or ``(H, W)`` (the latter with ``mono=True`` only).

    Raises:
        UnknownNameError: the preset is not known.
    """
    p = _preset(preset)
    A = _albumentations()
    out: list[Any] = []
    if p.p_exposure:
        out.append(A.RandomBrightnessContrast(brightness_limit=(-p.brightness, p.brightness),
                                              contrast_limit=(-p.contrast, p.contrast), p=p.p_exposure))
    if p.p_gamma:
        out.append(A.RandomGamma(gamma_limit=p.gamma, p=p.p_gamma))
    if p.p_illumination:
        out.append(A.Illumination(mode="linear", intensity_range=(0.01, p.illumination), effect_type="both",
                                  p=p.p_illumination))
    if p.p_blur:
        out.append(A.OneOf([
            A.MotionBlur(blur_limit=(3, p.motion_kernel), allow_shifted=False, p=1.0),
            A.Defocus(radius=(1, p.defocus_radius), alias_blur=(0.1, 0.3), p=1.0),
        ], p=p.p_blur))
    if p.p_noise:
        if mono:
            out.append(A.GaussNoise(std_range=p.noise_std, per_channel=False, p=p.p_noise))
        else:
            out.append(A.OneOf([
                A.GaussNoise(std_range=p.noise_std, per_channel=False, p=1.0),
                A.ISONoise(color_shift=(0.01, 0.03), intensity=(0.1, 0.4), p=1.0),
            ], p=p.p_noise))
    if p.p_jpeg:
        out.append(A.ImageCompression(compression_type="jpeg", quality_range=p.jpeg_quality, p=p.p_jpeg))
    if spatial and p.p_rotate:
        import cv2

        out.append(A.Affine(rotate=(-p.degrees, p.degrees), scale=1.0, rotate_method="ellipse",
                            border_mode=cv2.BORDER_CONSTANT, fill=FILL_GREY, p=p.p_rotate))
    return out


def ultralytics_hyp(preset: str, *, mono: bool) -> dict[str, float]:
    """Ultralytics' own augmentation hyperparameters for the preset (keys of its ``cfg/default.yaml``).

    ``hsv_h`` and ``hsv_s`` are 0 when ``mono`` (no hue or saturation on grey images); ``hsv_v``
    is always 0 because exposure is the albumentations part's job (one source of brightness
    jitter). ``degrees`` is the preset's rotation: pass `build_transforms` ``spatial=False`` with
    it. ``none`` switches every Ultralytics augmentation off.

    Returns:
        ``{"hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
        "flipud", "fliplr", "mosaic", "mixup", "cutmix", "copy_paste"}`` as floats.

    Raises:
        UnknownNameError: the preset is not known.
    """
    p = _preset(preset)
    return {
        "hsv_h": 0.0 if mono else p.hsv_h,
        "hsv_s": 0.0 if mono else p.hsv_s,
        "hsv_v": 0.0,
        "degrees": p.degrees,
        "translate": p.translate,
        "scale": p.scale,
        "shear": 0.0,
        "perspective": 0.0,
        "flipud": 0.0,
        "fliplr": p.fliplr,
        "mosaic": p.mosaic,
        "mixup": 0.0,
        "cutmix": 0.0,
        "copy_paste": 0.0,
    }


def _read_unchanged(path: Any) -> NDArray[Any] | None:
    import cv2

    from edgevision.runtime.images import DEFAULT_MAX_PIXELS, ImageReadError, ImageTooLargeError, check_image_header

    data = np.fromfile(str(path), dtype=np.uint8)  # cv2.imread fails on non-ASCII paths on Windows
    if not data.size:
        return None
    try:  # the pixel count from the header, before any decoder allocates it
        check_image_header(data, DEFAULT_MAX_PIXELS, str(path))
    except ImageTooLargeError as e:
        raise DatasetError(str(e), where=str(path), code="image_too_large") from e
    except ImageReadError:
        return None
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def is_mono_dataset(records: Sequence[ImageRecord], sample: int = 32, seed: int = 0) -> bool:
    """Whether the dataset's images are grayscale, judged on a seeded sample of image files.

    An image is grey when it has one channel, or when its colour channels are equal (``R == G == B``;
    an alpha channel is ignored). Records without a file (``path is None``) are skipped.

    Args:
        records: the images (usually the training split).
        sample: at most this many files are read, drawn without replacement with ``seed``.
        seed: seeds the draw, so the answer is reproducible.

    Returns:
        True when every sampled image is grey; False when one is colour or when no file was read.

    Raises:
        DatasetError: a sampled image file is missing or cannot be decoded.
    """
    paths = sorted((r.path for r in records if r.path is not None), key=str)
    if not paths:
        log.info("no image files to judge grey or colour; assuming colour")
        return False
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(paths), size=min(sample, len(paths)), replace=False)
    for i in sorted(int(j) for j in picked):
        path = paths[i]
        try:
            img = _read_unchanged(path)
        except OSError as e:
            raise DatasetError(f"image file not readable ({e.__class__.__name__}): {path}",
                               where=str(path), code="image_missing") from e
        if img is None:
            raise DatasetError(f"image is not decodable: {path}", where=str(path), code="image_corrupt")
        if img.ndim == 3 and img.shape[2] >= 3:
            b, g, r = img[..., 0], img[..., 1], img[..., 2]
            if not (np.array_equal(b, g) and np.array_equal(g, r)):
                log.info("colour image found (%s): dataset treated as colour", path)
                return False
    return True


class BoxAugmenter:
    """Applies a preset to one image and its boxes (the torchvision backend's training transform).

    Boxes are xyxy absolute pixels (``pascal_voc``). After the rotation albumentations clips a box
    to the image and drops it when less than `MIN_VISIBILITY` of its area is left; its class id goes
    with it. The random stream is albumentations' own, seeded here: two augmenters with the same
    preset and seed give the same outputs for the same inputs in the same order. In a
    multi-worker data loader call `reseed` in each worker (e.g. with ``seed + worker_id``).

    Example:
        >>> aug = BoxAugmenter("industrial", mono=True, seed=0)
        >>> image, boxes, class_ids = aug(image, boxes, class_ids)
    """

    def __init__(self, preset: str, *, mono: bool, seed: int) -> None:
        A = _albumentations()
        self.preset = preset
        self.mono = mono
        self.seed = seed
        transforms = build_transforms(preset, mono=mono, spatial=True)
        self.passthrough = not transforms
        """True for ``none``: calls return their inputs untouched (no clipping, no float32 round trip)."""
        self.compose = A.Compose(
            transforms,
            bbox_params=None if self.passthrough else A.BboxParams(
                format="pascal_voc", label_fields=["class_ids"], min_visibility=MIN_VISIBILITY, clip=True),
            seed=seed,
            save_applied_params=True,
        )
        self.last_applied: list[str] = []
        """Class names of the transforms the last call applied (for tests and debugging)."""

    def reseed(self, seed: int) -> None:
        """Restart the random stream from ``seed``."""
        self.seed = seed
        self.compose.set_random_seed(seed)

    def __call__(
        self, image: NDArray[np.uint8], boxes: NDArray[np.floating[Any]], class_ids: NDArray[np.integer[Any]]
    ) -> tuple[NDArray[np.uint8], NDArray[np.float64], NDArray[np.int64]]:
        """Augment one image.

        Args:
            image: uint8 ``(H, W, 3)`` RGB, or ``(H, W)`` grey (needs ``mono=True``).
            boxes: ``(N, 4)`` xyxy absolute pixels, ``N`` may be 0.
            class_ids: ``(N,)`` class ids.

        Returns:
            ``(image, boxes, class_ids)``: the image with the input's shape and dtype, ``(M, 4)``
            float64 boxes and ``(M,)`` int64 ids with ``M <= N`` (boxes that left the image dropped).
            Boxes pass through albumentations in float32, so an unrotated box may differ from the
            input by float32 rounding (about 1e-6 relative).

        Raises:
            ValueError: the shapes disagree, or an ``(H, W)`` image with a colour preset.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        if len(boxes) != len(class_ids):
            raise ValueError(f"expected {len(boxes)} class ids for {len(boxes)} boxes, got {len(class_ids)}")
        if image.ndim == 2 and not self.mono:
            raise ValueError(f"an (H, W) grey image needs mono=True; got shape {image.shape} with a colour preset")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"expected an (H, W, 3) or (H, W) image, got shape {image.shape}")
        if self.passthrough:
            self.last_applied = []
            return image, boxes, class_ids
        out = self.compose(image=image, bboxes=boxes, class_ids=class_ids)
        self.last_applied = [str(name) for name, _ in out.get("applied_transforms", [])]
        new_boxes = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)
        new_ids = np.asarray(out["class_ids"], dtype=np.int64).reshape(-1)
        return out["image"], new_boxes, new_ids
