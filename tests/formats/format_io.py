"""Read / write through a registered format in tests, with a fresh `Report` and `Losses`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevision.core import Dataset, Report
from edgevision.formats import WriteOptions, get_format
from edgevision.formats.base import Losses


def read_as(fmt_name: str, path: Path, on_error: str = "fail", **options: Any) -> tuple[Dataset, Report]:
    """Read ``path`` with format ``fmt_name``; returns the dataset and the report."""
    fmt = get_format(fmt_name)
    report = Report(on_error)
    return fmt.read(path, fmt.parse_options(options), report), report


def write_as(fmt_name: str, ds: Dataset, out: Path, images: str = "copy") -> Losses:
    """Write ``ds`` into ``out`` (created) with format ``fmt_name``; returns the losses."""
    losses = Losses()
    out.mkdir(parents=True, exist_ok=True)
    get_format(fmt_name).write(ds, out, WriteOptions(images=images), losses)  # type: ignore[arg-type]
    return losses
