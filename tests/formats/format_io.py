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


def ignored_files(report: Report) -> list[str]:
    """The names in the read's one ``file_outside_layout`` finding, as shown ([] when there is none).

    Checks the finding on the way: exactly one, an info, one line, and its count matches the names.
    """
    found = [f for f in report.findings if f.code == "file_outside_layout"]
    if not found:
        return []
    assert len(found) == 1, [str(f) for f in found]
    f = found[0]
    assert f.severity == "info" and "\n" not in f.message
    count, sep, names = f.message.removeprefix("ignored ").partition(" outside the dataset layout: ")
    assert sep, f.message
    listed = names.split(", ")
    assert count == f"{len(listed)} file{'s' if len(listed) != 1 else ''}", f.message
    return listed


def write_as(fmt_name: str, ds: Dataset, out: Path, images: str = "copy") -> Losses:
    """Write ``ds`` into ``out`` (created) with format ``fmt_name``; returns the losses."""
    losses = Losses()
    out.mkdir(parents=True, exist_ok=True)
    get_format(fmt_name).write(ds, out, WriteOptions(images=images), losses)  # type: ignore[arg-type]
    return losses
