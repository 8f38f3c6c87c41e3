"""``edgevision quantize MODEL.onnx --calib DATASET --out MODEL.int8.onnx [--target T] [--n 200] [--method M]``.

Static INT8 (QDQ) quantization of an FP32 model written by ``edgevision export``, calibrated on the
dataset's train split (see `edgevision.quantize.quantize_model`). Exit code 0, or 2 for bad input
(one line on stderr, nothing written).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgevision.commands._present import err, out


def command(
    model: Path = typer.Argument(..., help="The FP32 .onnx written by `edgevision export`."),
    calib: Path = typer.Option(..., "--calib", help="Dataset with a train split (calibration images come from it)."),
    out_path: Path = typer.Option(..., "--out", help="The INT8 ONNX file to write (ends in .onnx)."),
    target: str | None = typer.Option(None, "--target", help="x86-vnni | x86-avx2 | arm64 | tensorrt: the box that "
                                      "will run the model (default: this CPU)."),
    n: int = typer.Option(200, "--n", help="Calibration images (capped at the train split's size)."),
    method: str = typer.Option("minmax", "--method", help="Calibration: minmax | entropy | percentile."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the calibration draw."),
    src_format: str = typer.Option("auto", "--from", help="Dataset format, or 'auto' to detect it."),
    recipe: str | None = typer.Option(None, "--recipe", help="Read the dataset through a public-dataset recipe."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Quantize an exported model to INT8 for a target box (static, calibrated on the train split)."""
    from edgevision.quantize import TARGETS, host_target, quantize_model

    host = host_target()
    chosen = target or host
    how = "default: this CPU" if target is None else f"this CPU is {host}"
    out.print(f"target {chosen} ({how})" + (f": {TARGETS[chosen].summary}" if chosen in TARGETS else ""),
              highlight=False, markup=False)
    res = quantize_model(model, calib, out_path, target=target, n=n, method=method, seed=seed, fmt=src_format,
                         recipe=recipe, overwrite=overwrite)
    for w in res.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    q = res.metadata.quantization or {}
    t = Table(title=f"{model} -> {res.path}", title_justify="left", show_header=False)
    t.add_column("")
    t.add_column("")
    ex = res.excluded
    rows = [
        ("file", f"{res.path} ({res.size_bytes / 1e6:.2f} MB)"),
        ("target", f"{res.target} (built on {res.host})"),
        ("types", f"activations {q['activations']}, weights {q['weights']} per-channel"
                  f"{', reduce-range' if q['reduce_range'] else ''}{', symmetric' if q['symmetric'] else ''}"),
        ("calibration", f"{q['n']} train images ({method}, seed {seed})"),
        ("kept float", f"{len(ex)} head nodes: {', '.join(ex[:6])}{' ...' if len(ex) > 6 else ''}"),
    ]
    rows += [(f"check {k}", v) for k, v in res.checks.items()]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    out.print(f"[green]wrote {res.path}[/green]", highlight=False)
