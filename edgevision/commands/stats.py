"""``edgevision stats DATASET [--from F] [--json OUT] [--plots DIR]``: what is in a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import check_choice, out, print_findings, write_json_option


def command(
    src: Path = typer.Argument(..., help="Annotation file or dataset folder."),
    src_format: str = typer.Option("auto", "--from", help="Input format, or 'auto' to detect it."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the statistics as JSON to this file."),
    plots: Path | None = typer.Option(None, "--plots", help="Write PNG plots (class histogram, box sizes) into this folder."),
    on_error: str = typer.Option("fail", "--on-error", help="fail | skip: stop at the first bad item or skip it."),
) -> None:
    """Images, objects and classes; boxes per image; COCO box sizes; image sizes; background images."""

    from edgevision.convert import read_dataset
    from edgevision.core.errors import ConfigError
    from edgevision.core.io import check_output_clear
    from edgevision.data.stats import check_plots_available, dataset_stats, write_plots

    check_choice("--on-error", on_error, ("fail", "skip"))
    if plots is not None:
        check_plots_available()  # fail before reading a large dataset
        if plots.exists() and not plots.is_dir():
            raise ConfigError(f"--plots {plots}: expected a folder, got a file")
        check_output_clear(plots, [src], what="--plots")
    rr = read_dataset(src, src_format, on_error=on_error)
    for path, what in ((plots, "--plots"), (json_out, "--json")):
        if path is not None:  # PNG plots in an image folder would be read as images next time
            check_output_clear(path, rr.sources, what=what)
    print_findings(rr.report)
    stats = dataset_stats(rr.dataset)
    out.print(overview_table(f"{src} ({rr.format})", stats))
    out.print(distribution_table(stats))
    out.print(class_stats_table(stats))
    out.print(image_size_table(stats))
    if json_out is not None:
        write_json_option(json_out, stats.to_dict(), "statistics")
    if plots is not None:
        for p in write_plots(rr.dataset, stats, plots):
            out.print(f"wrote plot {p}", highlight=False)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def overview_table(title: str, stats: Any) -> Table:
    """One row per split (and ``all``): images, objects, background, boxes per image, COCO sizes."""
    sections = {**stats.splits, "all": stats.overall} if stats.splits else {"all": stats.overall}
    t = Table(title=title, title_justify="left")
    t.add_column("split")
    for col in ("images", "objects", "background", "mean/img", "max/img", "small", "medium", "large"):
        t.add_column(col, justify="right")
    for name, s in sections.items():
        t.add_row(name, str(s.images), str(s.objects), f"{s.background_images} ({s.background_fraction:.0%})",
                  _fmt(s.boxes_per_image.mean), _fmt(s.boxes_per_image.max), *(str(n) for n in s.box_sizes.values()),
                  style="bold" if name == "all" and len(sections) > 1 else None)
    return t


def distribution_table(stats: Any) -> Table:
    """Distributions over the whole dataset: boxes per image, box sides, aspect, size relative to the image."""
    s = stats.overall
    hist = "  ".join(f"{b}: {n}" for b, n in s.boxes_per_image_hist.items())
    t = Table(title="distributions", title_justify="left", caption=f"images per box count: {hist}",
              caption_justify="left")
    t.add_column("")
    for col in ("min", "p05", "median", "mean", "p95", "max"):
        t.add_column(col, justify="right")
    for label, d in (("boxes per image", s.boxes_per_image), ("box width (px)", s.box_width),
                     ("box height (px)", s.box_height), ("box w/h", s.box_aspect),
                     ("box area / image area", s.relative_area), ("box w / image w", s.relative_width),
                     ("box h / image h", s.relative_height)):
        t.add_row(label, *(_fmt(getattr(d, k)) for k in ("min", "p05", "median", "mean", "p95", "max")))
    return t


def class_stats_table(stats: Any) -> Table:
    """Per class over the whole dataset: objects, images, COCO small / medium / large."""
    t = Table(title="per class (COCO sizes: small < 32², medium < 96², large)", title_justify="left")
    for col in ("id", "class", "objects", "images", "small", "medium", "large"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for c in stats.overall.per_class:
        t.add_row(str(c.id), c.name, str(c.objects), str(c.images), str(c.small), str(c.medium), str(c.large))
    return t


def image_size_table(stats: Any, limit: int = 10) -> Table:
    """The most frequent image sizes, with the smallest and largest sides in the title."""
    s = stats.overall
    t = Table(title=f"image sizes ({len(s.image_sizes)} distinct)", title_justify="left")
    for col in ("height", "width", "images"):
        t.add_column(col, justify="right")
    for size in s.image_sizes[:limit]:
        t.add_row(str(size.height), str(size.width), str(size.count))
    if len(s.image_sizes) > limit:
        rest = sum(x.count for x in s.image_sizes[limit:])
        t.add_row("...", f"{len(s.image_sizes) - limit} more", str(rest))
    if s.images:
        t.caption = f"h {s.image_min_hw[0]}-{s.image_max_hw[0]}, w {s.image_min_hw[1]}-{s.image_max_hw[1]}"
    return t

