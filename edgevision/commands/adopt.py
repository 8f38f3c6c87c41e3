"""``edgevision adopt MODEL.onnx --out model.onnx [--classes FILE] [--imgsz N] [--layout L] [--preprocess K=V ...]
[--thresholds FILE]``.

Writes a self-describing EdgeVision copy of an ONNX detector EdgeVision did not export (see
`edgevision.adopt.adopt_model`): an Ultralytics export (whose own metadata is read) or another
exporter's file (names and size given here), with operating points pinned if asked. Only the metadata
changes; MODEL is never modified; the output is checked by the runtime and written atomically. Exit code
0, or 2 for bad input (one line on stderr, nothing written). Needs only the runtime install.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgevision.commands._present import out


def command(
    model: Path = typer.Argument(..., help="The ONNX detector to adopt (an Ultralytics export, or another exporter's)."),
    out_path: Path = typer.Option(..., "--out", help="The EdgeVision ONNX file to write (ends in .onnx)."),
    classes: Path | None = typer.Option(None, "--classes", help="Class names: a .txt (one per line), or a .yaml / "
                                        ".json list, {id: name} or data.yaml with names (default: the file's own)."),
    imgsz: int | None = typer.Option(None, "--imgsz", min=1, help="Square input side, for a graph whose height and "
                                     "width are free (default: the graph's, else the file's imgsz)."),
    layout: str | None = typer.Option(None, "--layout", help="Output layout: yolo-raw, yolo-end2end, "
                                      "torchvision-postnms or nms-in-graph (default: detected from the outputs)."),
    preprocess: list[str] = typer.Option([], "--preprocess", help="Pre-processing field KEY=VALUE (repeatable): "
                                         "resize, pad_value, channel_order, scale, mean, std, mono, uint16 (default: "
                                         "Ultralytics' letterbox pad 114, RGB, scale 1/255)."),
    thresholds: Path | None = typer.Option(None, "--thresholds", help="Operating points to pin (a thresholds.json "
                                           "from `edgevision eval --save-thresholds`)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Make a foreign ONNX detector self-describing (EdgeVision metadata; the graph is unchanged)."""
    from edgevision.adopt import adopt_model, parse_preprocess
    from edgevision.runtime.foreign import preprocess_text

    res = adopt_model(model, out_path, classes=classes, imgsz=imgsz, layout=layout,
                      preprocess=parse_preprocess(preprocess), thresholds=thresholds, overwrite=overwrite)
    m = res.metadata
    h, w = m.input.size_hw
    t = Table(title=f"{model} -> {res.path}", title_justify="left", show_header=False)
    t.add_column("")
    t.add_column("")
    rows = [
        ("file", f"{res.path} ({res.size_bytes / 1e6:.2f} MB)"),
        ("source", f"{model.name} sha256 {res.source_sha256} ({m.source.get('exporter') or m.source.get('backend')})"),
        ("layout", f"{m.output.layout}: outputs {', '.join(m.output.names)} (max {m.output.max_det})"),
        ("input", f"{m.input.name} ({'dynamic' if m.input.dynamic_batch else '1'}, 3, {h}, {w}) {m.input.dtype}"),
        ("preprocess", preprocess_text(m.input)),
        ("classes", f"{len(m.names)}: {', '.join(m.names[:8])}{' ...' if len(m.names) > 8 else ''}"),
        ("operating points", "pinned" if m.thresholds else f"none (the runtime uses conf {m.defaults.get('conf')})"),
        ("given", ", ".join(m.source.get("given") or []) or "nothing"),
    ]
    rows += [("note", n) for n in res.notes]
    rows += [(f"check {k}", v) for k, v in res.checks.items()]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    out.print(f"[green]wrote {res.path}[/green]", highlight=False)
