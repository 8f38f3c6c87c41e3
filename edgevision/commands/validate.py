"""``edgevision validate DATASET [--from F] [--strict] [--json OUT] [--fix clip|drop|keep] [--out DIR --to F]``.

Reads the dataset leniently, checks boxes, images, sizes, EXIF orientation and duplicates (see
`edgevision.data.validate` for the codes), prints a summary table and the first findings, and can
write a fixed copy. Exit code: 0, or 1 with ``--strict`` when a finding has severity error; 2 for bad
input (a missing path, an unknown format, a bad option).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import check_choice, out, print_losses, progress_bars
from edgevision.core.io import check_output_clear, check_output_path

_PROGRESS_MIN = 200
"""Show a progress bar from this many images on."""


def command(
    src: Path = typer.Argument(..., help="Annotation file or dataset folder."),
    src_format: str = typer.Option("auto", "--from", help="Input format, or 'auto' to detect it."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 when any finding has severity error."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the findings as JSON (schema edgevision.validate/1)."),
    fix: str = typer.Option("keep", "--fix", help="Boxes outside the image: keep (report only), clip (to the frame; "
                                                  "boxes that become empty are dropped) or drop (any part outside)."),
    fixed_out: Path | None = typer.Option(None, "--out", help="Write the dataset, fixed by --fix, to this folder."),
    to: str | None = typer.Option(None, "--to", help="Format of --out (default: the input's format if writable)."),
    images: str = typer.Option("copy", "--images", help="copy | symlink | none: image files of --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    min_box_side: float = typer.Option(2.0, "--min-box-side", min=0, help="box_small below this side (px)."),
    min_box_area: float = typer.Option(16.0, "--min-box-area", min=0, help="box_small below this area (px²)."),
    near_dup: int = typer.Option(6, "--near-dup-threshold", min=0, max=64,
                                 help="near_duplicate: largest pHash Hamming distance, of 64 bits."),
    duplicates: bool = typer.Option(True, "--duplicates/--no-duplicates", help="Look for exact and near-duplicate images."),
    show: int = typer.Option(20, "--show", min=0, help="Detailed findings to print (errors first)."),
) -> None:
    """Find boxes outside/empty/NaN/tiny, unknown classes, missing/corrupt images, size mismatches, EXIF
    rotation, and duplicate / near-duplicate images (pHash, Hamming distance <= 6 of 64 by default)
    within and across splits (leakage)."""
    import json

    from edgevision.convert import source_paths
    from edgevision.core.errors import EdgeVisionError
    from edgevision.data.validate import ValidateConfig, validate

    check_choice("--fix", fix, ("keep", "clip", "drop"))
    check_choice("--images", images, ("copy", "symlink", "none"))
    if not src.exists():
        raise EdgeVisionError(f"{src}: path does not exist")
    if fixed_out is not None:
        check_output_path(src, fixed_out, overwrite)
    config = ValidateConfig(min_box_side=min_box_side, min_box_area=min_box_area, near_dup_threshold=near_dup,
                            fix=fix, check_duplicates=duplicates)  # type: ignore[arg-type]
    with _Progress() as progress:
        result = validate(src, fmt=src_format, config=config, progress=progress)
    sources = source_paths(result.dataset, src)  # image folders elsewhere, list files: checked before writing
    for path, what in ((fixed_out, "--out"), (json_out, "--json")):
        if path is not None:
            check_output_clear(path, sources, what=what)
    out.print(findings_table(f"{src} ({result.format}): {len(result.dataset)} images, "
                             f"{result.dataset.num_objects} objects", result))
    _print_details(result, show)
    if fixed_out is not None:
        _write_fixed(result, fixed_out, to, images, overwrite, sources)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.print(f"wrote findings to {json_out}", highlight=False)
    n_err = len(result.errors)
    verdict = "[green]no errors[/green]" if not n_err else f"[red]{n_err} error(s)[/red]"
    out.print(f"{verdict}, {len(result.findings) - n_err} warning(s)/note(s)", highlight=False)
    if strict and n_err:
        raise typer.Exit(1)


def findings_table(title: str, result: Any) -> Table:
    """One row per (code, severity): count and the first example."""
    t = Table(title=title, title_justify="left")
    for col in ("code", "severity", "count", "example"):
        t.add_column(col, justify="right" if col == "count" else "left", overflow="fold")
    colour = {"error": "red", "warning": "yellow", "info": "dim"}
    for code, sev, fs in result.by_code():
        t.add_row(code, f"[{colour[sev]}]{sev}[/{colour[sev]}]", str(len(fs)), str(fs[0]))
    if not result.findings:
        t.add_row("(none)", "", "0", "")
    return t


def _print_details(result: Any, show: int) -> None:
    rank = {"error": 0, "warning": 1, "info": 2}
    ordered = sorted(result.findings, key=lambda f: rank[f.severity])
    if not ordered or not show:
        return
    out.print(f"first {min(show, len(ordered))} of {len(ordered)} findings:", highlight=False)
    for f in ordered[:show]:
        out.print(f"  {f.severity:7} {f.code:17} {f.where}: {f.message}", markup=False, highlight=False, soft_wrap=True)


def _write_fixed(result: Any, dst: Path, to: str | None, images: str, overwrite: bool,
                 sources: frozenset[Path]) -> None:
    from edgevision.commands._present import output_format
    from edgevision.convert import write_dataset

    fmt = output_format(to, result.format)
    losses = write_dataset(result.fixed, dst, fmt, images=images, overwrite=overwrite,  # type: ignore[arg-type]
                           protect=sources)
    print_losses(losses, fmt)
    f = result.fixes
    out.print(f"[green]wrote {fmt} dataset to {dst}[/green] (--fix {f.policy}: {f.clipped} box(es) clipped, "
              f"{f.dropped} dropped, in {f.images} image(s))", highlight=False)


class _Progress:
    """A rich progress bar on stderr for large datasets, fed by the library's ``progress(done, total)``."""

    def __enter__(self) -> _Progress:
        self._bar: Any = None
        return self

    def __call__(self, done: int, total: int) -> None:
        if total < _PROGRESS_MIN:
            return
        if self._bar is None:
            from rich.progress import Progress

            self._bar = progress_bars(*Progress.get_default_columns())
            self._bar.start()
            self._task = self._bar.add_task("checking images", total=total)
        self._bar.update(self._task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
