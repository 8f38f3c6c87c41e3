"""``edgevision remap DATASET OUT --map mapping.yaml``: rename, merge, drop and reorder classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from edgevision.commands._present import (
    check_choice,
    class_table,
    err,
    out,
    output_format,
    print_findings,
    print_losses,
)
from edgevision.core.io import check_output_clear, check_output_path


def command(
    src: Path = typer.Argument(..., help="Annotation file or dataset folder."),
    dst: Path = typer.Argument(..., help="Output folder (created atomically; must not exist unless --overwrite)."),
    map_file: Path = typer.Option(..., "--map", help="Mapping YAML: map (old: new | null), order, unmapped."),
    src_format: str = typer.Option("auto", "--from", help="Input format, or 'auto' to detect it."),
    to: str | None = typer.Option(None, "--to", help="Output format (default: the input's format)."),
    images: str = typer.Option("copy", "--images", help="copy | symlink | none: what to do with image files."),
    on_error: str = typer.Option("fail", "--on-error", help="fail | skip: stop at the first bad item or skip it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Rename, merge and drop classes; the output's label map is contiguous and printed."""
    from edgevision.convert import read_dataset, write_dataset
    from edgevision.data.remap import load_remap_config, remap_dataset

    check_choice("--images", images, ("copy", "symlink", "none"))
    check_choice("--on-error", on_error, ("fail", "skip"))
    mapping = load_remap_config(map_file)  # a bad mapping fails before the dataset is read
    check_output_path(src, dst, overwrite)
    rr = read_dataset(src, src_format, on_error=on_error)
    check_output_clear(dst, rr.sources)  # image folders elsewhere, list files: before printing anything
    print_findings(rr.report)
    fmt = output_format(to, rr.format)
    res = remap_dataset(rr.dataset, mapping)
    losses = write_dataset(res.dataset, dst, fmt, images=images, overwrite=overwrite,  # type: ignore[arg-type]
                           protect=rr.sources)
    print_losses(losses, fmt)
    out.print(remap_table(f"{src} ({rr.format}) -> {dst} ({fmt})", res))
    out.print(class_table(res.dataset))
    if res.objects_dropped:
        err.print(f"[yellow]dropped {res.objects_dropped} object(s); {len(res.turned_background)} image(s) lost "
                  f"all their objects and are now background images[/yellow]", highlight=False)
    out.print(f"[green]wrote {fmt} dataset to {dst}[/green]", highlight=False)


def remap_table(title: str, res: Any) -> Table:
    """One row per old class: old id and name, objects, new id and name (``dropped`` when dropped)."""
    t = Table(title=title, title_justify="left")
    for col in ("old id", "old class", "objects", "->", "new id", "new class"):
        t.add_column(col, justify="right" if col in ("old id", "objects", "new id") else "left")
    for r in res.rows:
        new = ("", "[yellow]dropped[/yellow]") if r.new_id is None else (str(r.new_id), escape(r.new_name))
        t.add_row(str(r.old_id), escape(r.old_name), str(r.objects), "->", *new)
    return t
