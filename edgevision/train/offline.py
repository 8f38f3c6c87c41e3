"""Make Ultralytics and albumentations work fully offline, quietly, and on every core.

Measured with Ultralytics 8.4 on a machine without internet: at import it resolves two DNS names to
decide whether it is online; every training run asks for ``Arial.ttf`` (a HEAD request, even with
``plots=False``); it would ``pip install`` missing packages when it believes it is online; it writes
settings to ``~/.config/Ultralytics``; it sends analytics while ``sync`` is on; on CUDA its AMP check
downloads a ``yolo26n.pt`` checkpoint; its DDP launcher would pip-install ``cloudpickle``; and it sets
torch to ``cpu_count - 1`` threads (one thread on a 2-core box). albumentations asks PyPI for a newer
version at import.

`prepare_ultralytics` fixes all of that before Ultralytics is imported:

- ``YOLO_OFFLINE=1`` (no DNS probe), ``YOLO_AUTOINSTALL=False``, ``NO_ALBUMENTATIONS_UPDATE=1``;
- ``YOLO_CONFIG_DIR`` inside EdgeVision's home (`edgevision_home`), with a settings file that turns
  ``sync`` and every third-party logger off, and points datasets / weights / runs inside it too;
- a local font: matplotlib's bundled DejaVu Sans copied in as ``Arial.ttf`` and ``Arial.Unicode.ttf``
  (Ultralytics looks for those names in its config dir first);
- Ultralytics' AMP check is replaced by `offline_check_amp` (same GPU blacklist, then the model being
  trained is compared with itself in FP32 and autocast; no download);
- torch threads: all cores unless the caller asks for fewer.

The environment variables are inherited by Ultralytics' DDP worker processes; the AMP patch is applied
again in each worker by EdgeVision's trainer class (see ``ultralytics_backend``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from edgevision.core.io import copy_atomic, edgevision_home, write_atomic

log = logging.getLogger(__name__)

__all__ = ["offline_check_amp", "prepare_albumentations", "prepare_ultralytics", "ultralytics_config_dir"]

_SETTINGS_VERSION = "0.0.8"  # Ultralytics 8.4 SettingsManager schema; a mismatch resets to defaults (checked after import)
_BAD_AMP_GPU = re.compile(
    r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)", re.IGNORECASE
)  # Ultralytics' own list of GPUs whose AMP gives NaN losses


_threads: int | None = None


def ultralytics_config_dir() -> Path:
    """Where Ultralytics keeps its settings and fonts when EdgeVision runs it."""
    return edgevision_home() / "ultralytics"


def prepare_albumentations() -> None:
    """Stop albumentations from asking PyPI for a newer version at import."""
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"


def _settings(cfg: Path) -> dict[str, Any]:
    import hashlib
    import uuid

    return {
        "settings_version": _SETTINGS_VERSION,
        "datasets_dir": str(cfg / "datasets"),
        "weights_dir": str(cfg / "weights"),
        "runs_dir": str(cfg / "runs"),
        "uuid": hashlib.sha256(str(uuid.getnode()).encode()).hexdigest(),
        "sync": False,
        "api_key": "",
        "openai_api_key": "",
        "clearml": False,
        "comet": False,
        "dvc": False,
        "mlflow": False,
        "raytune": False,
        "tensorboard": False,
        "wandb": False,
        "vscode_msg": False,
        "openvino_msg": False,
    }


def _install_fonts(cfg: Path) -> None:
    """Copy matplotlib's DejaVu Sans in under the names Ultralytics looks for (no download)."""
    wanted = [cfg / "Arial.ttf", cfg / "Arial.Unicode.ttf"]
    if all(f.exists() for f in wanted):
        return
    try:
        import matplotlib
    except ImportError:  # Ultralytics depends on matplotlib, so this only happens in a broken install
        log.warning("matplotlib is missing: Ultralytics may try to download a font")
        return
    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for f in wanted:
        if not f.exists():
            copy_atomic(src, f)


def prepare_ultralytics(*, threads: int | None = None, verbose: bool = False) -> Any:
    """Set Ultralytics up for offline, quiet use and import it; safe to call repeatedly.

    Args:
        threads: torch CPU threads (None: all cores). Ultralytics resets torch to this on every
            device selection.
        verbose: keep Ultralytics' own console logging and progress bars (off by default: the
            EdgeVision CLI shows its own).

    Returns:
        The imported ``ultralytics`` module.
    """
    base = ultralytics_config_dir()
    os.environ["YOLO_CONFIG_DIR"] = str(base)
    cfg = base / "Ultralytics"  # Ultralytics appends this folder to YOLO_CONFIG_DIR
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ["YOLO_VERBOSE"] = "True" if verbose else "False"
    prepare_albumentations()
    cfg.mkdir(parents=True, exist_ok=True)
    settings_file = cfg / "settings.json"
    want = _settings(cfg)
    current: dict[str, Any] = {}
    if settings_file.exists():
        try:
            current = json.loads(settings_file.read_text(encoding="utf-8"))
        except ValueError:
            current = {}
    if {k: current.get(k) for k in want if k != "uuid"} != {k: v for k, v in want.items() if k != "uuid"}:
        write_atomic(settings_file, json.dumps(want, indent=2))
    _install_fonts(cfg)

    import ultralytics
    from ultralytics.utils import SETTINGS, torch_utils

    if SETTINGS.get("sync"):  # a schema change reset our file: turn it off again and stop the event queue
        SETTINGS.update(sync=False)
        from ultralytics.utils import events

        events.events.enabled = False
    global _threads
    if threads is not None or _threads is None:  # a later call without threads keeps the caller's choice
        from edgevision.core.cpu import usable_cores

        _threads = threads or usable_cores()
    n = _threads
    torch_utils.NUM_THREADS = n  # select_device() calls torch.set_num_threads(NUM_THREADS) for CPU runs
    import torch

    torch.set_num_threads(n)
    patch_amp_check()
    return ultralytics


def patch_amp_check() -> None:
    """Replace the AMP check in Ultralytics' trainer with `offline_check_amp` (idempotent)."""
    from ultralytics.engine import trainer

    trainer.check_amp = offline_check_amp  # type: ignore[attr-defined]


def offline_check_amp(model: Any) -> bool:
    """Decide whether AMP (FP16 autocast) is safe on this GPU, without downloading a checkpoint.

    Ultralytics' check downloads ``yolo26n.pt`` and compares it in FP32 and AMP. This one keeps its
    GPU blacklist and compares the model being trained with itself instead: a fixed random batch
    through a copy in FP32 and under autocast, decoded outputs within 0.5 px / 0.5 score like theirs.

    Returns:
        False on CPU / MPS, on blacklisted GPUs, when the outputs differ or the check fails.
    """
    from copy import deepcopy

    import torch

    device = next(model.parameters()).device
    if device.type in {"cpu", "mps"}:
        return False
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if _BAD_AMP_GPU.search(name):
            log.warning("AMP off: %s is known to give NaN losses with AMP", name)
            return False
    try:
        m = deepcopy(model).eval().float()
        stride = int(getattr(model, "stride", torch.tensor([32])).max())
        size = max(256, stride * 4)
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.rand(2, 3, size, size, generator=g).to(device)
        with torch.inference_mode():
            a = m(x)
            with torch.autocast(device_type=device.type, enabled=True):
                b = m(x)
        a0 = a[0] if isinstance(a, (list, tuple)) else a
        b0 = b[0] if isinstance(b, (list, tuple)) else b
        ok = a0.shape == b0.shape and bool(torch.isfinite(b0.float()).all()) and torch.allclose(
            a0.float(), b0.float(), atol=0.5)
        del m
    except Exception as e:  # an unusual architecture: train in FP32 rather than guess
        log.warning("AMP check could not run (%s): training in FP32", e)
        return False
    if not ok:
        log.warning("AMP off: FP16 outputs differ from FP32 on this GPU")
    else:
        log.info("AMP check passed on %s (offline, model compared with itself)", device)
    return bool(ok)
