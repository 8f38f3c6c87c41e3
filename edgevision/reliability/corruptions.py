"""Image corruptions at severities 1-5, through albumentations, deterministic from a seed.

The set and the severity scales follow ImageNet-C / "Benchmarking Robustness in Object Detection"
(Michaelis et al., 2019), restricted to what a line camera meets: sensor noise, motion and focus blur,
light, contrast, compression, haze on the lens, low resolution. Severity parameters are fixed (each
transform's range is a single value), so only the noise patterns and blur directions depend on the seed.
The ``imagecorruptions`` package is not used: it breaks with current scikit-image.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt"]

SEVERITIES = (1, 2, 3, 4, 5)

# name -> five parameter values, severity 1..5 (ImageNet-C's tables, rescaled to albumentations' units).
CORRUPTIONS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # std, fraction of 255
    "shot_noise": (0.02, 0.035, 0.05, 0.08, 0.12),  # ShotNoise scale (Poisson), matched to gaussian_noise
    "motion_blur": (5, 9, 13, 17, 21),  # kernel size, pixels at 640-ish images
    "defocus_blur": (2, 3, 4, 6, 8),  # disk radius, pixels
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added brightness, fraction of the range
    "contrast": (-0.4, -0.55, -0.7, -0.8, -0.9),  # contrast change (negative: flatter)
    "jpeg": (25, 18, 15, 10, 7),  # JPEG quality
    "haze": (0.3, 0.45, 0.6, 0.75, 0.9),  # fog coefficient
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),  # downscale factor before upscaling back
}


def _transform(name: str, v: Any) -> Any:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check over the network on import
    import albumentations as A
    import cv2

    if name == "gaussian_noise":
        return A.GaussNoise(std_range=(v, v), mean_range=(0.0, 0.0), per_channel=False, p=1.0)
    if name == "shot_noise":
        return A.ShotNoise(scale_range=(v, v), p=1.0)
    if name == "motion_blur":
        return A.MotionBlur(blur_limit=(v, v), allow_shifted=False, p=1.0)
    if name == "defocus_blur":
        return A.Defocus(radius=(v, v), alias_blur=(0.1, 0.1), p=1.0)
    if name == "brightness":
        return A.RandomBrightnessContrast(brightness_limit=(v, v), contrast_limit=(0.0, 0.0), p=1.0)
    if name == "contrast":
        return A.RandomBrightnessContrast(brightness_limit=(0.0, 0.0), contrast_limit=(v, v), p=1.0)
    if name == "jpeg":
        return A.ImageCompression(compression_type="jpeg", quality_range=(v, v), p=1.0)
    if name == "haze":
        return A.RandomFog(fog_coef_range=(v, v), alpha_coef=0.08, p=1.0)
    if name == "pixelate":
        return A.Downscale(scale_range=(v, v), interpolation_pair={"downscale": cv2.INTER_AREA,
                                                                  "upscale": cv2.INTER_NEAREST}, p=1.0)
    raise KeyError(name)


def corrupt(image: NDArray[np.uint8], name: str, severity: int, seed: int) -> NDArray[np.uint8]:
    """``image`` (H, W, 3) BGR uint8 with corruption ``name`` at ``severity`` (1-5); same seed, same pixels.

    Raises:
        UnknownNameError: an unknown corruption; ConfigError: a severity outside 1-5.
    """
    from edgevision.core.errors import ConfigError, UnknownNameError

    if name not in CORRUPTIONS:
        raise UnknownNameError("corruption", name, CORRUPTIONS)
    if severity not in SEVERITIES:
        raise ConfigError(f"severity {severity}: expected 1 to 5")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # before the import: no update check over the network
    import albumentations as A

    pipeline = A.Compose([_transform(name, CORRUPTIONS[name][severity - 1])], seed=seed)
    return np.ascontiguousarray(pipeline(image=image)["image"], dtype=np.uint8)
