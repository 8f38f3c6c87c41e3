"""Annotation formats: a small explicit registry of `Format` instances.

>>> from edgevision.formats import get_format, list_formats
>>> get_format("coco").can_write
True
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgevision.core.errors import DatasetError, EdgeVisionError, UnknownNameError
from edgevision.formats.base import Detection, Format, Losses, Options, WriteOptions, check_readable

__all__ = [
    "Detection",
    "Format",
    "Losses",
    "Options",
    "WriteOptions",
    "detect_format",
    "get_format",
    "list_formats",
    "register_format",
]

_REGISTRY: dict[str, Format] = {}
_BUILTIN = ("coco", "voc", "yolo", "labelme", "cvat", "masks", "rle_csv", "textbox", "railsem19")
_loaded = False


def register_format(fmt: Format) -> Format:
    """Register a format instance under its ``name``.

    Raises:
        EdgeVisionError: when the name is taken.
    """
    if fmt.name in _REGISTRY:
        raise EdgeVisionError(f"format '{fmt.name}' is already registered by {type(_REGISTRY[fmt.name]).__name__}")
    _REGISTRY[fmt.name] = fmt
    return fmt


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for mod in _BUILTIN:  # modules already imported are not run again
            importlib.import_module(f"edgevision.formats.{mod}")
        _loaded = True  # only once every built-in registered: a failed import is raised again next time


def list_formats(readable: bool | None = None, writable: bool | None = None) -> list[str]:
    """Names of the registered formats, optionally only those that can be read / written."""
    _load_builtins()
    return sorted(
        n for n, f in _REGISTRY.items()
        if (readable is None or f.can_read == readable) and (writable is None or f.can_write == writable)
    )


def get_format(name: str) -> Format:
    """The format registered as ``name`` (``-`` and ``_`` are interchangeable).

    Raises:
        UnknownNameError: listing the formats and the closest name.
    """
    _load_builtins()
    key = name.strip().lower().replace("-", "_")
    for n, f in _REGISTRY.items():
        if n.replace("-", "_") == key:
            return f
    raise UnknownNameError("format", name, _REGISTRY)


def detect_format(path: Path) -> tuple[Format, Detection]:
    """Pick the format that best matches ``path``.

    Returns:
        The format and its `Detection` (score and the reason, for the user).

    Raises:
        DatasetError: when nothing matches, or two formats match equally well.
    """
    _load_builtins()
    path = Path(path)
    if not path.exists():
        raise DatasetError("path does not exist", where=str(path), code="file_missing")
    check_readable(path)  # an unreadable source is that, not "format unknown"
    hits: list[tuple[Format, Detection]] = []
    for f in _REGISTRY.values():
        if f.can_read:
            d = f.detect(path)
            if d is not None and d.score > 0:
                hits.append((f, d))
    if not hits:
        _raise_if_unreadable(path)  # a format may not have recognized a file it could not read
        raise DatasetError(
            f"could not detect the annotation format; pass --from with one of: {', '.join(list_formats(readable=True))}",
            where=str(path), code="format_unknown",
        )
    hits.sort(key=lambda h: -h[1].score)
    if len(hits) > 1 and hits[0][1].score == hits[1][1].score:
        raise DatasetError(
            f"ambiguous format: '{hits[0][0].name}' ({hits[0][1].reason}) and '{hits[1][0].name}' "
            f"({hits[1][1].reason}) match equally; pass --from",
            where=str(path), code="format_ambiguous",
        )
    return hits[0]


def _raise_if_unreadable(folder: Path, limit: int = 500) -> None:
    """Raise `FileAccessError` for the first file or folder (two levels down, ``limit`` entries at
    most) that cannot be read: detectors treat an unreadable file as "not mine"."""
    if not folder.is_dir():
        return
    seen = 0
    for top in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        try:
            entries = sorted(top.iterdir())
        except OSError:
            check_readable(top)
            continue
        for p in entries:
            seen += 1
            if seen > limit:
                return
            if p.is_file() or p.is_dir():
                check_readable(p)
