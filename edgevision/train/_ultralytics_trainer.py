"""EdgeVision's Ultralytics trainer class, in a module of its own because it imports Ultralytics.

Ultralytics' multi-GPU launcher pickles the trainer class by reference and imports it again in each
DDP worker; importing this module there re-applies EdgeVision's offline setup (the environment
variables are inherited; the AMP-check patch is not, so `_setup_train` applies it in every process).
"""

from __future__ import annotations

from edgevision.train.offline import patch_amp_check, prepare_ultralytics

prepare_ultralytics()

from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402

__all__ = ["EdgeVisionDetectionTrainer"]


class EdgeVisionDetectionTrainer(DetectionTrainer):  # type: ignore[misc]
    """Ultralytics' detection trainer with the offline AMP check applied in whichever process trains."""

    def _setup_train(self) -> None:
        patch_amp_check()
        super()._setup_train()
