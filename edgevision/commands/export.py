"""``edgevision export MODEL --out model.onnx [--imgsz] [--opset] [--dynamic-batch] [--half] [--nms-in-graph]
[--thresholds FILE]``.

Exports a run folder or a ``.pt`` (Ultralytics YOLO or EdgeVision's torchvision SSDlite) to one ONNX
file carrying EdgeVision's metadata (see `edgevision.export.export_model`), offline. Exit code 0, or 2
for bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgevision.commands._present import out


def command(
    model: Path = typer.Argument(..., help="Run folder (weights/best.pt, else last.pt) or a .pt checkpoint."),
    out_path: Path = typer.Option(..., "--out", help="The ONNX file to write (ends in .onnx)."),
    imgsz: int | None = typer.Option(None, "--imgsz", help="Square input side (default: the training size); "
                                     "a multiple of the model's stride."),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset, 13-20 (default 18)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Symbolic batch axis (YOLO models)."),
    half: bool = typer.Option(False, "--half", help="FP16 weights for GPUs (input and outputs stay float32)."),
    nms_in_graph: bool = typer.Option(False, "--nms-in-graph", help="Append decode + ONNX NonMaxSuppression "
                                      "(raw YOLOv8/11 heads)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    thresholds: Path | None = typer.Option(None, "--thresholds", help="Operating points to carry (a thresholds.json "
                                           "from `edgevision eval --save-thresholds`) instead of the run's own."),
) -> None:
    """Export a trained detector to ONNX with EdgeVision metadata (offline, checked)."""
    from edgevision.export import export_model

    res = export_model(model, out_path, imgsz=imgsz, opset=opset, dynamic_batch=dynamic_batch, half=half,
                       nms_in_graph=nms_in_graph, overwrite=overwrite, thresholds=thresholds)
    m = res.metadata
    t = Table(title=f"{model} -> {res.path}", title_justify="left", show_header=False)
    t.add_column("")
    t.add_column("")
    h, w = m.input.size_hw
    batch = "dynamic" if m.input.dynamic_batch else "1"
    rows = [
        ("file", f"{res.path} ({res.size_bytes / 1e6:.2f} MB)"),
        ("backend", f"{m.source.get('backend')} {m.source.get('arch')}"),
        ("layout", f"{m.output.layout}: outputs {', '.join(m.output.names)} (max {m.output.max_det})"),
        ("input", f"{m.input.name} ({batch}, 3, {h}, {w}) {m.input.dtype}, {m.input.resize}, {m.input.channel_order}"),
        ("opset", str(m.opset)),
        ("precision", m.precision),
        ("classes", f"{len(m.names)}: {', '.join(m.names[:8])}{' ...' if len(m.names) > 8 else ''}"),
        ("licence", str(m.source.get("licence"))),
    ]
    rows += [(f"check {k}", v) for k, v in res.checks.items()]
    rows += [("note", n) for n in res.notes]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    out.print(f"[green]wrote {res.path}[/green]", highlight=False)
