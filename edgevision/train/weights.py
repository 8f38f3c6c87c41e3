"""Pretrained weights, offline: a local registry, and one resolver for every ``--model`` value.

Factories fine-tune from checkpoints downloaded once on a connected PC. ``edgevision weights add FILE
--name yolov8n-coco --licence AGPL-3.0`` copies the file into ``$EDGEVISION_HOME/weights/`` and records
its sha256, licence and origin, so ``--model yolov8n-coco`` resolves with no network and every run
records which weights it started from under which licence.

`resolve_model` turns a ``--model`` value into a `ModelSpec`, in this order: an existing local file
(``.pt`` weights or an Ultralytics ``.yaml`` architecture), a registered name, a buildable
architecture name (``yolov8n``, ``yolo11n``, ... from Ultralytics' bundled YAMLs, or the torchvision
``ssdlite320_mobilenet_v3_large``), else a one-line error saying how to add a local file. Nothing here
downloads: a bare ``yolov8n.pt`` that is not on disk is refused instead of fetched.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgevision.core.errors import ConfigError
from edgevision.core.io import copy_atomic, edgevision_home, sha256_file, write_atomic

__all__ = [
    "LIBREYOLO_ARCHS",
    "TORCHVISION_ARCHS",
    "ModelSpec",
    "WeightsEntry",
    "add_weights",
    "buildable_ultralytics",
    "list_weights",
    "remove_weights",
    "resolve_model",
]

TORCHVISION_ARCHS = ("ssdlite320_mobilenet_v3_large",)
"""Architectures the torchvision backend builds (BSD-3-Clause, no pretrained download)."""

LIBREYOLO_ARCHS = ("yolo9-t", "yolo9-s", "yolo9-m", "yolo9-c")
"""Architectures the libreyolo backend builds (LibreYOLO, MIT; YOLOv9 after the authors' MIT re-release)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_WEIGHT_SUFFIXES = (".pt", ".pth")
_DETECT_HEAD = re.compile(r",\s*(Detect|v10Detect)\s*,")  # the head layer of a detection YAML


@dataclass(frozen=True)
class WeightsEntry:
    """One registered checkpoint.

    Attributes:
        name: the ``--model`` name; file: path relative to the registry folder; sha256: of the file;
        licence: SPDX-style licence of the weights (e.g. ``AGPL-3.0``); origin: where it came from
        (URL or note); added: ISO date-time; size: bytes.
    """

    name: str
    file: str
    sha256: str
    licence: str
    origin: str
    added: str
    size: int


@dataclass(frozen=True)
class ModelSpec:
    """What a ``--model`` value resolved to.

    Attributes:
        source: the value as given.
        kind: ``weights`` (a checkpoint to start from) or ``arch`` (build from scratch).
        path: the local file (weights or architecture YAML); None for a bundled architecture name.
        arch: the architecture name/YAML for the backend (``yolov8n.yaml``, ``ssdlite320_mobilenet_v3_large``).
        sha256, licence, origin: of the weights file (licence ``unknown`` for an unregistered file).
        registered: the registry name when it came from the registry.
    """

    source: str
    kind: str
    path: Path | None = None
    arch: str | None = None
    sha256: str | None = None
    licence: str | None = None
    origin: str | None = None
    registered: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = None if self.path is None else str(self.path)
        return d


def registry_dir() -> Path:
    return edgevision_home() / "weights"


def _registry_file() -> Path:
    return registry_dir() / "registry.json"


def _load() -> dict[str, WeightsEntry]:
    f = _registry_file()
    if not f.exists():
        return {}
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
        return {k: WeightsEntry(**v) for k, v in raw.get("weights", {}).items()}
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{f}: unreadable weights registry ({e}); fix or delete the file") from e


def _save(entries: dict[str, WeightsEntry]) -> None:
    data = {"version": 1, "weights": {k: asdict(v) for k, v in sorted(entries.items())}}
    write_atomic(_registry_file(), json.dumps(data, indent=2))


def list_weights() -> list[WeightsEntry]:
    """Registered weights, sorted by name."""
    return [v for _, v in sorted(_load().items())]


def add_weights(file: Path | str, name: str, licence: str, origin: str | None = None,
                overwrite: bool = False) -> WeightsEntry:
    """Copy ``file`` into the registry under ``name`` and record its hash, licence and origin.

    Raises:
        ConfigError: missing or non-checkpoint file, bad or taken name (unless ``overwrite``), a name
            that would hide a buildable architecture, an empty licence.
    """
    src = Path(file)
    if not src.is_file():
        raise ConfigError(f"{src}: weights file not found")
    if src.suffix.lower() not in _WEIGHT_SUFFIXES:
        raise ConfigError(f"{src}: expected a PyTorch checkpoint ({', '.join(_WEIGHT_SUFFIXES)}), got '{src.suffix}'")
    if not _looks_like_checkpoint(src):
        raise ConfigError(f"{src}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    if not _NAME.match(name):
        raise ConfigError(f"weights name '{name}': use letters, digits, '.', '_' and '-' (e.g. yolov8n-coco)")
    if name in TORCHVISION_ARCHS or name in LIBREYOLO_ARCHS or buildable_ultralytics(name) is not None:
        raise ConfigError(f"weights name '{name}' is an architecture name and would hide it; "
                          f"choose another, e.g. '{name}-coco'")
    if not licence.strip():
        raise ConfigError("--licence is required (e.g. AGPL-3.0 for Ultralytics' weights); it is recorded with every run")
    entries = _load()
    if name in entries and not overwrite:
        raise ConfigError(f"weights name '{name}' is already registered; pass --overwrite to replace it")
    digest = sha256_file(src)
    rel = f"files/{digest[:16]}-{src.name}"
    dst = registry_dir() / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        copy_atomic(src, dst)
    old = entries.get(name)
    entry = WeightsEntry(
        name=name, file=rel, sha256=digest, licence=licence.strip(),
        origin=origin or f"local file {src.resolve()}",
        added=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), size=src.stat().st_size,
    )
    entries[name] = entry
    _save(entries)
    if old is not None and old.file != rel and not any(e.file == old.file for e in entries.values()):
        (registry_dir() / old.file).unlink(missing_ok=True)
    return entry


def remove_weights(name: str) -> WeightsEntry:
    """Forget ``name`` and delete its file unless another name shares it.

    Raises:
        UnknownNameError-like ConfigError listing the registered names.
    """
    entries = _load()
    if name not in entries:
        from edgevision.core.errors import UnknownNameError

        raise UnknownNameError("registered weights", name, entries)
    entry = entries.pop(name)
    _save(entries)
    if not any(e.file == entry.file for e in entries.values()):
        (registry_dir() / entry.file).unlink(missing_ok=True)
    return entry


def _looks_like_checkpoint(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"  # torch zip format / legacy pickle


def _ultralytics_cfg_dir() -> Path | None:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "cfg" / "models"


def buildable_ultralytics(name: str) -> str | None:
    """The Ultralytics architecture YAML name for ``name`` (``yolov8n`` -> ``yolov8n.yaml``), or None.

    Mirrors Ultralytics' own lookup (the scale letter n/s/m/l/x is dropped to find ``yolov8.yaml``)
    without importing Ultralytics.
    """
    stem = name[:-5] if name.endswith(".yaml") else name
    if not re.match(r"^[A-Za-z0-9._-]+$", stem) or "." in stem:
        return None
    cfg = _ultralytics_cfg_dir()
    if cfg is None:
        return None
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", stem)
    if re.search(r"\d+[nslmx]", stem) is None and unified == stem:
        return None  # no scale letter: Ultralytics would build the default scale and warn; ask for one
    for found in cfg.rglob(f"{unified}.yaml"):
        if found.is_file() and _DETECT_HEAD.search(found.read_text(encoding="utf-8", errors="replace")):
            return f"{stem}.yaml"
    return None  # absent, or a segmentation / pose / classification architecture


def resolve_model(model: str, backend: str = "ultralytics") -> ModelSpec:
    """Resolve a ``--model`` value with no network (see the module doc).

    Raises:
        ConfigError: a name that is neither a local file, registered nor buildable; a registered file
            that is missing or was modified since it was added.
    """
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            if backend != "ultralytics":
                raise ConfigError(f"{path}: architecture YAML files are for the ultralytics backend, not {backend}")
            return ModelSpec(source=model, kind="arch", path=path.resolve(), arch=str(path.resolve()))
        if path.suffix.lower() not in _WEIGHT_SUFFIXES:
            raise ConfigError(f"{path}: expected a .pt checkpoint or an architecture .yaml, got '{path.suffix}'")
        digest = sha256_file(path)
        known = next((e for e in _load().values() if e.sha256 == digest), None)
        return ModelSpec(
            source=model, kind="weights", path=path.resolve(), sha256=digest,
            licence=known.licence if known else "unknown (unregistered local file)",
            origin=known.origin if known else f"local file {path.resolve()}",
            registered=known.name if known else None,
        )
    entries = _load()
    if model in entries:
        e = entries[model]
        f = registry_dir() / e.file
        if not f.is_file():
            raise ConfigError(f"registered weights '{model}': file {f} is missing; add it again with "
                              f"'edgevision weights add FILE --name {model} --licence {e.licence} --overwrite'")
        digest = sha256_file(f)
        if digest != e.sha256:
            raise ConfigError(f"registered weights '{model}': {f} changed since it was added "
                              f"(sha256 {digest[:12]} != {e.sha256[:12]}); add it again with --overwrite")
        return ModelSpec(source=model, kind="weights", path=f, sha256=digest, licence=e.licence,
                         origin=e.origin, registered=model)
    if backend == "torchvision":
        if model in TORCHVISION_ARCHS:
            return ModelSpec(source=model, kind="arch", arch=model, licence="BSD-3-Clause (architecture, no weights)")
    elif backend == "libreyolo":
        if model in LIBREYOLO_ARCHS:
            return ModelSpec(source=model, kind="arch", arch=model, licence="MIT (LibreYOLO architecture, no weights)")
    else:
        arch = buildable_ultralytics(model)
        if arch is not None:
            return ModelSpec(source=model, kind="arch", arch=arch, licence="AGPL-3.0 (Ultralytics architecture, no weights)")
    builds = {"torchvision": ", ".join(TORCHVISION_ARCHS), "libreyolo": ", ".join(LIBREYOLO_ARCHS)}.get(
        backend, "yolov8n, yolo11n, yolo26n, ...")
    hint = "a local checkpoint that is not there" if path.suffix.lower() in _WEIGHT_SUFFIXES else "not a model name"
    raise ConfigError(
        f"model '{model}': {hint}: neither a local file, a registered weights name ({len(entries)} registered, "
        f"see 'edgevision weights list') nor a {backend} architecture ({builds}); nothing is downloaded. "
        f"Download the checkpoint once on a connected PC, then: edgevision weights add FILE --name NAME --licence LICENCE"
    )


