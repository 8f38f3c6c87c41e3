"""Read any supported format into the canonical model and write it out again, atomically."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from edgevision.core.dataset import Dataset
from edgevision.core.errors import EdgeVisionError
from edgevision.core.io import ImageMode, atomic_dir, check_output_path, safe_join
from edgevision.core.report import OnError, Report
from edgevision.formats import Detection, Losses, WriteOptions, detect_format, get_format

log = logging.getLogger(__name__)


@dataclass
class ReadResult:
    """A dataset read from disk with what was found on the way.

    Attributes:
        dataset: the canonical dataset.
        report: findings (skipped items, handled quirks).
        format: the name of the format read.
        detection: why ``--from auto`` chose the format (None when it was given).
        recipe: the recipe applied, if any.
        source: the path it was read from.
    """

    dataset: Dataset
    report: Report
    format: str
    detection: Detection | None = None
    recipe: Any = None
    source: Path | None = None

    @cached_property
    def sources(self) -> frozenset[Path]:
        """Everything the dataset was read from (see `source_paths`): what no output may overlap."""
        return source_paths(self.dataset, self.source)


@dataclass
class ConvertResult:
    read: ReadResult
    out: Path
    to: str
    losses: Losses = field(default_factory=Losses)


def read_dataset(
    src: Path | str,
    fmt: str = "auto",
    *,
    options: dict[str, Any] | None = None,
    recipe: str | None = None,
    on_error: OnError | str = OnError.FAIL,
) -> ReadResult:
    """Read ``src`` in format ``fmt`` (``"auto"`` detects it) or through a named recipe.

    Args:
        src: an annotation file or a dataset folder.
        fmt: a format name or ``"auto"``; ignored when ``recipe`` names the reader.
        options: reader options (merged over the recipe's).
        recipe: a public-dataset recipe name from ``converters/`` (see `edgevision.recipes`).
        on_error: ``fail``, ``skip`` or ``keep`` (lenient, for validation).

    Raises:
        DatasetError: malformed input under ``fail``; UnknownNameError: unknown format or recipe.
    """
    src = Path(src)
    if not src.is_absolute() and src.parent.name in ("", ".."):
        # ``x.json`` / ``../x.json``: readers look at the folder's name (COCO finds ``images/`` beside
        # ``annotations/``), which ``.`` and ``..`` do not have
        src = src.absolute()
    report = Report(on_error)
    rec = None
    opts = dict(options or {})
    detection = None
    if recipe is not None:
        from edgevision.recipes import get_recipe

        rec = get_recipe(recipe)
        fmt_obj = get_format(rec.reader)
        opts = {**rec.options, **opts}
    elif fmt == "auto":
        fmt_obj, detection = detect_format(src)
        log.info("detected format %s: %s", fmt_obj.name, detection.reason)
    else:
        fmt_obj = get_format(fmt)
    if not fmt_obj.can_read:
        raise EdgeVisionError(f"format '{fmt_obj.name}' cannot be read")
    if not src.exists():
        raise EdgeVisionError(f"{src}: path does not exist")
    ds = fmt_obj.read(src, fmt_obj.parse_options(opts), report)
    if rec is not None:
        ds = rec.apply(ds, report)
    ds.check()
    ds.meta.setdefault("format", fmt_obj.name)
    return ReadResult(ds, report, fmt_obj.name, detection, rec, src)


_LABELS_TWIN = (f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}")
_DESCRIPTIONS = (".yaml", ".yml", ".data")
_NOT_PATHS = {"path", "names", "nc", "download", "yaml_file", "kpt_shape", "flip_idx", "channels"}


def source_paths(dataset: Dataset, src: Path | str | None = None) -> frozenset[Path]:
    """The files and folders ``dataset`` was read from; a file stands for the folder that holds it.

    ``src`` (the annotation file or folder given) and the dataset root; the folder of every image
    (and of a symlinked image's target); the YOLO ``labels/`` folder beside an ``images/`` one; the
    list files, names files and folders that a ``data.yaml`` or darknet ``.data`` at ``src`` names.
    `edgevision.core.io.check_output_clear` refuses an output that is, lies inside or contains any of
    them. Without ``src`` (a dataset made in memory, or derived from a read one), the image folders.
    """
    paths: set[Path] = set()
    if src is not None:
        src = Path(src)
        paths.add(src)
        paths |= _described_paths(src)
        if dataset.root is not None:
            paths.add(Path(dataset.root))
    folders: set[str] = set()
    for r in dataset.images:
        if r.path is None:
            continue
        folders.add(os.path.dirname(os.path.abspath(r.path)))
        if os.path.islink(r.path):
            folders.add(os.path.dirname(os.path.realpath(r.path)))
    sa, sb = _LABELS_TWIN
    for f in folders:
        paths.add(Path(f))
        if sa in f + os.sep:
            twin = sb.join((f + os.sep).rsplit(sa, 1)).rstrip(os.sep)
            if os.path.isdir(twin):
                paths.add(Path(twin))
    return frozenset(paths)


def _described_paths(src: Path) -> set[Path]:
    """What a YOLO ``data.yaml`` / darknet ``.data`` at ``src`` (the file, or one in the folder) names."""
    from edgevision.formats.yolo import resolve_ref

    if src.is_file():
        files = [src] if src.suffix.lower() in _DESCRIPTIONS else []
    elif src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in _DESCRIPTIONS and p.is_file())
    else:
        files = []
    found: set[Path] = set()
    for f in files:
        for ref, bases in _references(f):
            p = resolve_ref(ref, bases)
            if p is not None and p.resolve() != p.resolve().parent:  # never the file system's root
                found.add(p)
    return found


def _references(path: Path) -> list[tuple[str, list[Path]]]:
    """``(reference, folders it is relative to)`` for each path-like value of a yaml or darknet file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []
    if path.suffix.lower() == ".data":
        refs = []
        for line in text.splitlines():
            key, eq, value = line.split("#", 1)[0].partition("=")
            if eq and key.strip().lower() in ("train", "valid", "test", "names") and value.strip():
                refs.append((value.strip(), [path.parent, path.parent.parent]))
        return refs
    from edgevision.core.errors import EdgeVisionError
    from edgevision.core.safeload import loads_yaml

    try:
        data = loads_yaml(text, str(path))
    except EdgeVisionError:  # not a dataset description this scan can read: the reader itself reports it
        return []
    if not isinstance(data, dict):
        return []
    root = path.parent
    if isinstance(data.get("path"), str) and (path.parent / data["path"]).is_dir():
        root = path.parent / data["path"]  # an absolute path replaces the yaml's folder
    values = [v for k, v in data.items() if str(k) not in _NOT_PATHS]
    refs = [(e, [root, path.parent]) for v in values for e in (v if isinstance(v, list) else [v])
            if isinstance(e, str) and e.strip()]
    return [(str(root.absolute()), []), *refs]


def write_dataset(
    dataset: Dataset, out: Path | str, fmt: str, *, images: ImageMode = "copy", overwrite: bool = False,
    extra_files: Mapping[str, bytes] | None = None, protect: Iterable[Path | str] = (),
) -> Losses:
    """Write ``dataset`` to ``out`` in ``fmt``. The folder appears only when complete.

    ``out`` must not be, lie inside or contain the folder of any of the dataset's images, nor a
    path of ``protect`` (checked before anything is written, see `check_output_clear`).

    Args:
        extra_files: relative POSIX name -> content of files to add beside the dataset (a tile
            map, a report) inside the same atomic output; a name the writer already used is refused.
        protect: more paths the dataset was read from: a `ReadResult`'s ``sources`` (its
            annotation files, list files and root).

    Returns:
        What the target format could not hold, counted.

    Raises:
        OutputOverlapError: ``out`` overlaps the source; OutputExistsError: it exists, no ``overwrite``.
    """
    fmt_obj = get_format(fmt)
    if not fmt_obj.can_write:
        raise EdgeVisionError(
            f"format '{fmt_obj.name}' cannot be written; writable formats: "
            + ", ".join(n for n in _writable())
        )
    losses = Losses()
    with atomic_dir(Path(out), overwrite=overwrite, protect=source_paths(dataset) | set(protect)) as tmp:
        fmt_obj.write(dataset, tmp, WriteOptions(images=images), losses)
        for name, data in (extra_files or {}).items():
            dst = safe_join(tmp, name, "extra_files")
            if dst.exists():
                raise EdgeVisionError(f"{out}: extra file '{name}' clashes with a file the {fmt_obj.name} writer made")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
    return losses


def _writable() -> list[str]:
    from edgevision.formats import list_formats

    return list_formats(writable=True)


def convert(
    src: Path | str,
    dst: Path | str,
    *,
    to: str,
    src_format: str = "auto",
    recipe: str | None = None,
    options: dict[str, Any] | None = None,
    images: ImageMode = "copy",
    on_error: OnError | str = OnError.FAIL,
    overwrite: bool = False,
) -> ConvertResult:
    """Convert a dataset between formats through the canonical model (see `read_dataset`)."""
    get_format(to)  # fail on an unknown target before reading anything
    check_output_path(src, dst, overwrite)
    rr = read_dataset(src, src_format, options=options, recipe=recipe, on_error=on_error)
    losses = write_dataset(rr.dataset, dst, to, images=images, overwrite=overwrite, protect=rr.sources)
    return ConvertResult(rr, Path(dst), get_format(to).name, losses)
