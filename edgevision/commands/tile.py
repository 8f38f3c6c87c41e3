"""``edgevision tile``: slice large images into overlapping tiles, with a map back to the sources."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def command(
    dataset: Annotated[Path, typer.Argument(help="Annotation file or dataset folder (any readable format).")],
    out: Annotated[Path, typer.Argument(help="Output dataset folder (created atomically; holds tiles.json).")],
    size: Annotated[int, typer.Option("--size", help="Tile side in pixels (square; smaller images are not upscaled).")] = 640,
    overlap: Annotated[float, typer.Option("--overlap", help="Overlap of neighbouring tiles, fraction of the tile in [0, 1).")] = 0.2,
    min_visibility: Annotated[float, typer.Option(
        "--min-visibility", help="Keep an object in a tile when at least this fraction of its box is inside.")] = 0.5,
    keep_empty: Annotated[float, typer.Option("--keep-empty", help="Fraction of background tiles to keep (seeded draw).")] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the background-tile draw.")] = 0,
    src_format: Annotated[str, typer.Option("--from", help="Input format, or 'auto' to detect it.")] = "auto",
    to: Annotated[str | None, typer.Option("--to", help="Output format (default: the input's format).")] = None,
    on_error: Annotated[str, typer.Option("--on-error", help="fail | skip: stop at a bad item or image, or skip it.")] = "fail",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the counts as JSON to this file.")] = None,
) -> None:
    """Slice large images into overlapping tiles; clip boxes, drop barely visible objects, map tiles back."""
    import json

    from edgevision.commands._present import check_choice, output_format, print_findings, print_losses
    from edgevision.commands._present import out as console
    from edgevision.convert import read_dataset, write_dataset
    from edgevision.core.io import check_output_clear, check_output_path, staging_dir
    from edgevision.data.tile import TILE_MAP_FILE, TileOptions, tile_dataset

    options = TileOptions(size=size, overlap=overlap, min_visibility=min_visibility, keep_empty=keep_empty, seed=seed)
    check_choice("--on-error", on_error, ("fail", "skip"))
    check_output_path(dataset, out, overwrite)
    dst = out.resolve()
    rr = read_dataset(dataset, src_format, on_error=on_error)
    check_output_clear(out, rr.sources)  # before tiling: image folders elsewhere, list files
    if json_out is not None:
        check_output_clear(json_out, rr.sources, what="--json")
    fmt = output_format(to, rr.format)
    with staging_dir(dst.parent, f".{dst.name}.tiles.") as staging:
        res = _run(tile_dataset, rr, options, staging)
        tile_map = json.dumps(res.tile_map(options), ensure_ascii=False).encode("utf-8")
        losses = write_dataset(res.dataset, out, fmt, images="copy", overwrite=overwrite,
                               extra_files={TILE_MAP_FILE: tile_map}, protect=rr.sources)
    if rr.detection is not None:
        console.print(f"detected format [bold]{rr.format}[/bold]: {rr.detection.reason}", highlight=False)
    print_findings(rr.report)
    print_findings(res.report)
    print_losses(losses, fmt)
    console.print(f"{options.size}px tiles, overlap {options.overlap:g}, min visibility {options.min_visibility:g}, "
                  f"keep empty {options.keep_empty:g}, seed {options.seed}", highlight=False)
    console.print(_summary(res, f"{dataset} ({rr.format}) -> {out} ({fmt})"))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"out": str(out), "format": fmt, **res.counts()}, indent=1) + "\n")
    console.print(f"[green]wrote {res.tiles} tiles as {fmt} to {out}[/green] (tile origins in {TILE_MAP_FILE})",
                  highlight=False)


def _run(tile_dataset: Any, rr: Any, options: Any, staging: Path) -> Any:
    """Tile with a progress bar on stderr; read errors follow the read's policy."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from edgevision.commands._present import progress_bars
    from edgevision.core.report import Report

    with progress_bars(TextColumn("tiling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("tiling", total=len(rr.dataset))
        return tile_dataset(rr.dataset, options, staging, report=Report(rr.report.on_error),
                            progress=lambda done, total: bar.update(task, completed=done))


def _summary(res: Any, title: str) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column("what")
    t.add_column("count", justify="right")
    rows = (
        ("source images", res.sources),
        ("tiles cut", res.windows),
        ("tiles written", res.tiles),
        ("background tiles kept", res.background_kept),
        ("background tiles dropped", res.background_dropped),
        ("objects in", res.objects_in),
        ("objects kept (in at least one tile)", res.objects_kept),
        ("objects dropped by visibility", res.objects_dropped),
        ("objects split across tiles (no tile holds them whole)", res.objects_split),
        ("boxes in tiles (overlaps count twice)", res.instances),
        ("object parts below min visibility left out", res.fragments_dropped),
        ("shapes not carried into a tile (box kept)", res.shapes_dropped),
    )
    for name, n in rows:
        t.add_row(name, str(n))
    return t
