"""Read any supported format into the canonical model and write it out again, atomically."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    """

    dataset: Dataset
    report: Report
    format: str
    detection: Detection | None = None
    recipe: Any = None


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
    return ReadResult(ds, report, fmt_obj.name, detection, rec)


def write_dataset(
    dataset: Dataset, out: Path | str, fmt: str, *, images: ImageMode = "copy", overwrite: bool = False,
    extra_files: Mapping[str, bytes] | None = None,
) -> Losses:
    """Write ``dataset`` to ``out`` in ``fmt``. The folder appears only when complete.

    Args:
        extra_files: relative POSIX name -> content of files to add beside the dataset (a tile
            map, a report) inside the same atomic output; a name the writer already used is refused.

    Returns:
        What the target format could not hold, counted.
    """
    fmt_obj = get_format(fmt)
    if not fmt_obj.can_write:
        raise EdgeVisionError(
            f"format '{fmt_obj.name}' cannot be written; writable formats: "
            + ", ".join(n for n in _writable())
        )
    losses = Losses()
    with atomic_dir(Path(out), overwrite=overwrite) as tmp:
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
    losses = write_dataset(rr.dataset, dst, to, images=images, overwrite=overwrite)
    return ConvertResult(rr, Path(dst), get_format(to).name, losses)
