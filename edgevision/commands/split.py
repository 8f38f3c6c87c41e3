"""``edgevision split DATASET OUT --ratios 0.8,0.1,0.1 --seed 0 [--group REGEX]``: stratified, grouped splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import err, out, print_findings, print_losses


def command(
    src: Path = typer.Argument(..., help="Annotation file or dataset folder."),
    dst: Path = typer.Argument(..., help="Output folder (created atomically; must not exist unless --overwrite)."),
    ratios: str = typer.Option("0.8,0.1,0.1", "--ratios", help="train,val[,test] fractions of images, summing to 1."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same dataset and seed give the same splits."),
    group: str | None = typer.Option(
        None, "--group", help="Regex searched in image names; images with the same key (first capture group, "
        "else the match) stay in one split, e.g. '^(coil\\d+)_'."),
    src_format: str = typer.Option("auto", "--from", help="Input format, or 'auto' to detect it."),
    to: str | None = typer.Option(None, "--to", help="Output format (default: the input's format)."),
    images: str = typer.Option("copy", "--images", help="copy | symlink | none: what to do with image files."),
    on_error: str = typer.Option("fail", "--on-error", help="fail | skip: stop at the first bad item or skip it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the split report as JSON to this file."),
) -> None:
    """Split a dataset into train/val/test: deterministic, stratified on classes, groups kept together."""
    import json

    from edgevision.commands._present import check_choice, output_format
    from edgevision.convert import read_dataset, write_dataset
    from edgevision.core.io import check_output_clear, check_output_path
    from edgevision.data.split import parse_ratios, split_dataset

    check_choice("--images", images, ("copy", "symlink", "none"))
    check_choice("--on-error", on_error, ("fail", "skip"))
    ratio_values = parse_ratios(ratios)
    check_output_path(src, dst, overwrite)
    rr = read_dataset(src, src_format, on_error=on_error)
    check_output_clear(dst, rr.sources)  # image folders elsewhere, list files: before printing anything
    if json_out is not None:
        check_output_clear(json_out, rr.sources, what="--json")
    fmt = output_format(to, rr.format)
    if rr.detection is not None:
        out.print(f"detected format [bold]{rr.format}[/bold]: {rr.detection.reason}", highlight=False)
    print_findings(rr.report)
    result = split_dataset(rr.dataset, ratio_values, seed=seed, group=group)
    losses = write_dataset(result.dataset, dst, fmt, images=images, overwrite=overwrite,  # type: ignore[arg-type]
                           protect=rr.sources)
    report = result.report
    print_losses(losses, fmt)
    if report.replaced:
        before = ", ".join(f"{k} {v}" for k, v in report.replaced.items())
        out.print(f"existing splits replaced (were: {before})", highlight=False)
    out.print(f"{src} ({rr.format}) -> {dst} ({fmt}), seed {seed}", highlight=False, markup=False)
    out.print(split_table("per-split class counts", report))
    out.print(group_line(report.groups), highlight=False, markup=False)
    print_unreachable(report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"source": str(src), "output": str(dst), "format": fmt, **report.to_dict()}
        json_out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        out.print(f"wrote split report to {json_out}", highlight=False)
    out.print(f"[green]wrote {fmt} dataset to {dst}[/green]", highlight=False)


def split_table(title: str, report: Any) -> Table:
    """Rows: images (got / target), background, objects, then each class as ``images (objects)``."""
    t = Table(title=title, title_justify="left", caption="per class: images (objects)", caption_justify="left")
    t.add_column("")
    for name, r in zip(report.names, report.ratios):
        t.add_column(f"{name} ({r:.0%})", justify="right")
    t.add_row("images (target)", *(f"{report.images[n]} ({report.target_images[n]:.1f})" for n in report.names),
              style="bold")
    t.add_row("background", *(str(report.background[n]) for n in report.names))
    t.add_row("objects", *(str(report.objects[n]) for n in report.names), end_section=True)
    missing = {(u.class_name, u.split) for u in report.unreachable}
    for cls in report.class_images[report.names[0]]:
        cells = [f"{report.class_images[n][cls]} ({report.class_objects[n][cls]})" for n in report.names]
        cells = [f"[yellow]{c}[/yellow]" if (cls, n) in missing else c for c, n in zip(cells, report.names)]
        t.add_row(cls, *cells)
    return t


def group_line(g: Any) -> str:
    """One line of grouping statistics."""
    if g.pattern is None:
        return f"groups: none (--group not given); {g.groups} images split one by one"
    line = (f"groups: {g.groups} from --group '{g.pattern}' (sizes {g.size_min}-{g.size_max}, median "
            f"{g.size_median:g}; {g.grouped_images} images in groups of 2 or more)")
    if g.unmatched:
        line += f"; {g.unmatched} image(s) matched no group key and were split alone"
    if g.largest:
        line += "; largest: " + ", ".join(f"{k} {n} -> {s}" for k, n, s in g.largest[:3])
    return line


def print_unreachable(report: Any) -> None:
    """The classes that could not reach a split, one line each, and classes with no object at all."""
    if report.unreachable:
        out.print(f"[yellow]{len(report.unreachable)} class/split pair(s) could not be filled:[/yellow]")
        for u in report.unreachable:
            out.print(f"  {u.class_name} -> {u.split} [{u.reason}]: {u.message}", markup=False, highlight=False)
    else:
        out.print("every class with objects reached every split")
    if report.absent_classes:
        err.print(f"[yellow]classes with no object in the dataset: {', '.join(report.absent_classes)}[/yellow]",
                  highlight=False)
