"""``edgevision predict MODEL SOURCE --out DIR [--conf] [--format csv] [--save-images] [--tile N] ...``.

MODEL is an ONNX file written by ``edgevision export`` (run through the torch-free runtime), or a run
folder / ``.pt`` (through the training backend; images only). SOURCE is an image, a folder (searched
recursively), a glob pattern (quote it) or a video file. DIR receives:

* ``predictions.json``: schema ``edgevision.predictions/1`` (what ``edgevision eval --predictions`` reads)
  plus per image ``size_hw``, ``class_names`` and ``decision``, the thresholds used, the unreadable
  inputs and a per-class summary;
* ``predictions.csv`` with ``--format csv``: one row per detection (image, class, score, x1, y1, x2, y2);
* ``images/`` with ``--save-images``: annotated copies (JPEG for frames and JPEG inputs, else PNG).

Image-level decision: ``reject`` when any detection passes its class threshold (the model's operating
points, unless ``--conf`` sets one threshold for all classes), else ``accept``. Unreadable inputs are
listed and skipped. DIR is written whole or not at all (staged, then renamed). Exit 0; 1 when no input
could be read; 2 for bad arguments or an unusable model (one line on stderr).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import check_choice, err, out, progress_bars


def command(
    model: Path = typer.Argument(..., help="ONNX model (edgevision export / adopt, or an Ultralytics export), run folder or .pt."),
    source: str = typer.Argument(..., help="Image, folder, glob pattern (quoted) or video file."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (created; refused when it exists, see --overwrite)."),
    conf: float | None = typer.Option(None, "--conf", min=0.0, max=1.0,
                                      help="One confidence threshold for every class (default: the model's operating "
                                           "points, else 0.25)."),
    iou: float = typer.Option(0.7, "--iou", min=0.0, max=1.0, help="NMS IoU threshold."),
    max_det: int = typer.Option(300, "--max-det", min=1, help="Most detections kept per image."),
    fmt: str = typer.Option("json", "--format", help="json, or csv to also write predictions.csv."),
    save_images: bool = typer.Option(False, "--save-images", help="Write annotated images to DIR/images/."),
    tile: int | None = typer.Option(None, "--tile", min=0, help="Tiled inference with square slices of this many "
                                    "pixels (0: the model's input size), for large images. ONNX only."),
    tile_overlap: float = typer.Option(0.2, "--tile-overlap", min=0.0, max=0.9, help="Overlap between slices."),
    full_pass: bool = typer.Option(False, "--full-pass", help="With --tile: also run the whole image once, for "
                                   "objects larger than a slice."),
    vid_stride: int = typer.Option(1, "--vid-stride", min=1, help="Video: predict every N-th frame."),
    providers: str | None = typer.Option(None, "--providers", help="ONNX Runtime providers, comma-separated, e.g. "
                                         "CUDAExecutionProvider,CPUExecutionProvider (default: the best installed)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads (default: all cores)."),
    device: str = typer.Option("cpu", "--device", help="Device for a run folder / .pt: cpu, 0, ..."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DIR when it exists."),
) -> None:
    """Detect objects in images or a video; write JSON (and CSV), annotated images and accept/reject decisions."""
    from edgevision.core.errors import ConfigError, OutputExistsError
    from edgevision.core.io import check_output_clear
    from edgevision.core.signals import raise_if_interrupted
    from edgevision.infer import iter_sources, open_model, source_files, video_frame_count

    check_choice("--format", fmt, ("json", "csv"))
    files, is_video = source_files(source)  # fails fast, before the model loads
    # --overwrite replaces DIR: it must not hold the images; a folder SOURCE must not receive the output
    folder = Path(source).is_dir()
    check_output_clear(out_dir, {p.parent for _, p in files} | ({Path(source)} if folder else set()), what="--out",
                       inside=folder)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"{out_dir}: output folder already exists; choose another --out or pass --overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder")
    if not model.exists():
        raise ConfigError(f"{model}: model not found (expected an .onnx file, a run folder or a .pt)")
    prov = [p.strip() for p in providers.split(",") if p.strip()] if providers else None
    m = open_model(model, providers=prov, threads=threads, device=device, tile=tile, tile_overlap=tile_overlap,
                   full_pass=full_pass)
    if is_video and m.kind != "onnx":
        raise ConfigError(f"{source}: videos are predicted by ONNX models; export the model first (edgevision export)")
    names = list(m.labels.names)
    total = None
    if is_video:
        n = video_frame_count(files[0][1])
        total = None if n is None else (n + vid_stride - 1) // vid_stride
    else:
        total = len(files)
    out.print(f"model: {m.describe}", highlight=False)

    stage = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        res = _run(m, iter_sources(source, vid_stride=vid_stride), stage, names, conf, iou, max_det, save_images,
                   total, is_video)
        _write_outputs(stage, res, names, model, fmt, m)
        raise_if_interrupted()  # a signal whose exception was lost on its way: no output after it
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _print_summary(res, names, out_dir)
    if not res.records:
        err.print(f"no input could be read ({len(res.unreadable)} unreadable); see {out_dir / 'predictions.json'}",
                  highlight=False)
        raise typer.Exit(1)


def _run(m: Any, frames: Any, stage: Path, names: list[str], conf: float | None, iou: float, max_det: int,
         save_images: bool, total: int | None, is_video: bool) -> Any:
    import cv2
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from edgevision.infer import draw, predict_source

    img_dir = stage / "images"

    def on_frame(frame: Any, rec: Any) -> None:
        bar.advance(task)
        if save_images and rec is not None:
            target = img_dir / frame.name.replace("#", "_")
            if is_video:
                target = target.with_name(target.name + ".jpg")
            elif target.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                target = target.with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(target.suffix, draw(frame.image, rec, names))
            if ok:
                target.write_bytes(buf.tobytes())

    with progress_bars(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("predict", total=total)
        return predict_source(m, frames, conf=conf, iou=iou, max_det=max_det, on_frame=on_frame)


def _write_outputs(stage: Path, res: Any, names: list[str], model: Path, fmt: str, m: Any) -> None:
    from edgevision.evaluate.predictions import SCHEMA

    images = []
    for r in res.records:
        images.append({
            "name": r.name, "size_hw": list(r.size_hw),
            "boxes": [[round(v, 3) for v in b] for b in r.boxes.tolist()],
            "class_ids": r.class_ids.tolist(),
            "class_names": [names[i] for i in r.class_ids.tolist()],
            "scores": [round(float(s), 6) for s in (r.scores if r.scores is not None else [])],
            "decision": res.decisions[r.name],
        })
    summary = res.class_summary(names)
    doc = {
        "schema": SCHEMA, "classes": names, "model": str(model), "model_kind": m.kind,
        "thresholds": res.thresholds, "threshold_source": res.threshold_source, "threshold_rules": res.rules,
        "images": images,
        "unreadable": [{"name": n, "error": e} for n, e in res.unreadable],
        "summary": {"images": len(res.records), "unreadable": len(res.unreadable),
                    "rejected": sum(d == "reject" for d in res.decisions.values()),
                    "accepted": sum(d == "accept" for d in res.decisions.values()), "classes": summary},
    }
    (stage / "predictions.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "class_id", "class", "score", "x1", "y1", "x2", "y2", "decision"])
        for im in images:
            for b, c, s in zip(im["boxes"], im["class_ids"], im["scores"]):
                w.writerow([im["name"], c, names[c], s, *b, im["decision"]])
            if not im["boxes"]:
                w.writerow([im["name"], "", "", "", "", "", "", "", im["decision"]])
        (stage / "predictions.csv").write_text(buf.getvalue(), encoding="utf-8")


def _print_summary(res: Any, names: list[str], out_dir: Path) -> None:
    t = Table(title=f"{len(res.records)} image(s): {sum(d == 'reject' for d in res.decisions.values())} rejected, "
                    f"{sum(d == 'accept' for d in res.decisions.values())} accepted "
                    f"(thresholds: {res.threshold_source})", title_justify="left")
    t.add_column("class")
    t.add_column("threshold", justify="right")
    t.add_column("detections", justify="right")
    t.add_column("images", justify="right")
    if res.rules:
        t.add_column("rule (how the operating point was chosen)")
    for n, s in res.class_summary(names).items():
        t.add_row(n, f"{res.thresholds[n]:.4g}", str(s["detections"]), str(s["images"]),
                  *([res.rules.get(n, "-")] if res.rules else []))
    out.print(t)
    if res.unreadable:
        err.print(f"[yellow]{len(res.unreadable)} input(s) could not be read (listed in predictions.json):[/yellow]")
        for n, e in res.unreadable[:10]:
            err.print(f"  {n}: {e}", markup=False, highlight=False)
        if len(res.unreadable) > 10:
            err.print(f"  ... and {len(res.unreadable) - 10} more")
    out.print(f"wrote {out_dir}", highlight=False)
