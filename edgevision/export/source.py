"""What is being exported: the checkpoint, its backend, and the run folder it came from (provenance)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevision.core.errors import ConfigError, short_text
from edgevision.core.io import sha256_file
from edgevision.train.run import RunPaths

log = logging.getLogger(__name__)

__all__ = ["ModelSource", "read_run_json", "resolve_source"]

ULTRALYTICS = "ultralytics"
TORCHVISION = "torchvision"
LIBREYOLO = "libreyolo"


@dataclass(frozen=True)
class ModelSource:
    """A checkpoint to export.

    Attributes:
        weights: the ``.pt`` file; backend: ``ultralytics``, ``libreyolo`` or ``torchvision``;
        run: the run folder it belongs to (``MODEL`` itself, or ``RUN`` for ``RUN/weights/*.pt``), else None.
    """

    weights: Path
    backend: str
    run: RunPaths | None

    def thresholds(self) -> dict[str, Any] | None:
        """The run's ``thresholds.json`` document, or None without a run or file."""
        if self.run is None or not self.run.thresholds.is_file():
            return None
        return read_run_json(self.run.thresholds)

    def data_stats(self) -> dict[str, Any] | None:
        """The run's ``data_stats.json`` (the val images' statistics, the line's drift reference), or None."""
        if self.run is None or not self.run.data_stats.is_file():
            return None
        return read_run_json(self.run.data_stats)

    def provenance(self, arch: str, imgsz_trained: int | None) -> dict[str, Any]:
        """The metadata ``source`` record: backend, arch, weights hash, licence, origin, dataset, config."""
        spec = read_run_json(self.run.root / "model.json") if self.run is not None else None
        dataset = read_run_json(self.run.dataset) if self.run is not None else None
        config = self.run.config if self.run is not None and self.run.config.is_file() else None
        return {
            "backend": self.backend,
            "arch": arch,
            "weights": self.weights.name,
            "weights_sha256": sha256_file(self.weights),
            "licence": (spec or {}).get("licence") or _default_licence(self.backend),
            "weights_origin": (spec or {}).get("origin") or (spec or {}).get("source"),
            "registered": (spec or {}).get("registered"),
            "run": None if self.run is None else self.run.root.name,
            "dataset_hash": (dataset or {}).get("hash"),
            "config_sha256": None if config is None else sha256_file(config),
            "imgsz_trained": imgsz_trained,
        }

    def licences(self) -> list[dict[str, Any]]:
        """The metadata ``source.licences`` record: the training code, the starting weights (the run's
        ``model.json``) and the dataset (its ``dataset.json`` and recipe), each with its licence and category
        (`edgevision.licences.chain_items`); without a run folder the weights and data are ``unknown (not
        recorded)``."""
        from edgevision.licences import chain_items, licence_record

        spec = read_run_json(self.run.root / "model.json") if self.run is not None else None
        dataset = read_run_json(self.run.dataset) if self.run is not None else None
        return licence_record(chain_items(self.backend, spec, dataset))


def _default_licence(backend: str) -> str:
    # Ultralytics models are AGPL-3.0 whatever the weights; a torchvision checkpoint without its run
    # cannot say which weights it was fine-tuned from.
    if backend == ULTRALYTICS:
        return "AGPL-3.0 (Ultralytics model)"
    if backend == LIBREYOLO:
        return "unknown (a LibreYOLO checkpoint without its run: the code is MIT, the weights' licence is not recorded)"
    return "unknown (no run model.json)"


def read_run_json(path: Path) -> dict[str, Any] | None:
    """A run folder's JSON object (model.json, dataset.json, thresholds.json, ...), or None when absent or not an
    object.

    Raises:
        ConfigError: the file exists but is not readable JSON (one line: fix or delete it).
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not readable JSON ({short_text(str(e), 120)}); fix or delete the file") from e
    return data if isinstance(data, dict) else None


def resolve_source(model: Path | str) -> ModelSource:
    """Find the checkpoint of ``model`` (a run folder or a ``.pt``) and its backend (`edgevision.models.resolve_model`
    says which file a run folder means).

    Raises:
        ConfigError: missing path, a run folder without weights, not a ``.pt``, not a checkpoint.
    """
    from edgevision.models import CHECKPOINT_SUFFIXES, resolve_model

    given = Path(model)
    if given.is_file() and given.suffix.lower() not in CHECKPOINT_SUFFIXES:
        onnx = " (an ONNX file is exported already: quantize or predict with it)" if given.suffix.lower() == ".onnx" \
            else ""
        raise ConfigError(f"{model}: expected a run folder or a .pt checkpoint, got '{given.suffix or given.name}'{onnx}")
    ref = resolve_model(model)
    path = ref.path
    with path.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise ConfigError(f"{model}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    from edgevision.train.libreyolo_backend import is_libreyolo_checkpoint
    from edgevision.train.torchvision_backend import is_torchvision_checkpoint

    backend = TORCHVISION if is_torchvision_checkpoint(path) else LIBREYOLO if is_libreyolo_checkpoint(path) else ULTRALYTICS
    return ModelSource(weights=path, backend=backend, run=ref.run)
