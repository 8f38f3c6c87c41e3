"""``edgevision predict MODEL SOURCE --out DIR [--conf] [--format csv] [--save-images] [--tile N] ...``.

MODEL is an ONNX file written by ``edgevision export`` (run through the torch-free runtime), or a run
folder / ``.pt`` (through the training backend; images only). SOURCE is an image, a list file, an object storage
URI (``s3://bucket/prefix``, read through pyarrow), a folder (searched
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

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import check_choice, err, out, progress_bars


def command(
    model: Path = typer.Argument(..., help="ONNX model (edgevision export / adopt, or an Ultralytics export), run folder or .pt."),
    source: str = typer.Argument(..., help="Image, folder, list file (.txt: one image path per line), glob pattern "
                                 "(quoted), video file, or object storage URI (s3://bucket/prefix, gs://..., pyarrow)."),
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
    ray: str | None = typer.Option(None, "--ray", help="Predict on a Ray cluster: auto, ray://HOST:PORT or a head's "
                                   "HOST:PORT; 'local' (or --ray last, with no address) starts one on this machine "
                                   "for the call. SOURCE and MODEL must be at the same paths on every node (scale "
                                   "extra)."),
    actors: int | None = typer.Option(None, "--actors", min=1, help="With --ray: model sessions in the pool "
                                      "(default: the cluster's CPUs / --threads)."),
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="With --ray: images per shard (the unit of "
                                   "work, retry and --resume)."),
    resume: bool = typer.Option(False, "--resume", help="With --ray: continue the interrupted run of this --out, "
                                "skipping its finished shards."),
) -> None:
    """Detect objects in images or a video; write JSON (and CSV), annotated images and accept/reject decisions."""
    if ray is not None:
        return _on_ray(model, source, out_dir, ray, actors, shard_size, resume, conf, iou, max_det, fmt, save_images,
                       tile, tile_overlap, full_pass, providers, threads, device, overwrite)
    if actors is not None or resume or shard_size != 256:
        from edgevision.core.errors import ConfigError

        raise ConfigError("--actors, --shard-size and --resume are options of a Ray run: add --ray")
    from edgevision.core.errors import ConfigError, OutputExistsError
    from edgevision.core.io import atomic_dir, check_output_clear
    from edgevision.infer import is_uri, iter_sources, open_model, source_files, video_frame_count

    check_choice("--format", fmt, ("json", "csv"))
    files, is_video = source_files(source)  # fails fast, before the model loads
    # --overwrite replaces DIR: it must not hold the images; a folder SOURCE must not receive the output
    folder = Path(source).is_dir()
    if not is_uri(source):  # objects in storage are not files beside the output
        check_output_clear(out_dir, {p.parent for _, p in files} | ({Path(source)} if folder else set()),
                           what="--out", inside=folder)
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

    with atomic_dir(out_dir, overwrite=overwrite) as stage:  # DIR whole or not at all, signals included
        res = _run(m, iter_sources(source, vid_stride=vid_stride), stage, names, conf, iou, max_det, save_images,
                   total, is_video)
        _write_outputs(stage, res, names, model, fmt, m)
    _print_summary(res, names, out_dir)
    if not res.records:
        err.print(f"no input could be read ({len(res.unreadable)} unreadable); see {out_dir / 'predictions.json'}",
                  highlight=False)
        raise typer.Exit(1)


def _on_ray(model: Path, source: str, out_dir: Path, address: str, actors: int | None, shard_size: int,
            resume: bool, conf: float | None, iou: float, max_det: int, fmt: str, save_images: bool, tile: int | None,
            tile_overlap: float, full_pass: bool, providers: str | None, threads: int | None, device: str,
            overwrite: bool) -> None:
    """``--ray``: `edgevision.scale.predict_on_ray` with a progress bar (images, images/s, ETA, unreadable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from edgevision.core.errors import ConfigError
    from edgevision.scale import RayOptions, predict_on_ray
    from edgevision.scale.run import PredictSpec

    check_choice("--format", fmt, ("json", "csv"))
    if not model.exists():
        raise ConfigError(f"{model}: model not found (expected an .onnx file)")
    opts = RayOptions(address=address, actors=actors, threads=threads or 1, shard_size=shard_size, device=device,
                      providers=[p.strip() for p in providers.split(",") if p.strip()] if providers else None)
    spec = PredictSpec(conf=conf, iou=iou, max_det=max_det, tile=tile, tile_overlap=tile_overlap, full_pass=full_pass,
                       save_images=save_images)
    with progress_bars(TextColumn("predicting on Ray"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]} img/s, {task.fields[bad]} unreadable"),
                       TimeRemainingColumn()) as bar:
        task = bar.add_task("predict", total=None, rate="-", bad=0)

        def progress(s: Any, total: int) -> None:
            bar.update(task, total=total, completed=s.images + s.unreadable, rate=f"{s.images_per_s:.1f}",
                       bad=s.unreadable)

        try:
            res = predict_on_ray(model, source, out_dir, spec=spec, options=opts, fmt=fmt, resume=resume,
                                 overwrite=overwrite, progress=progress,
                                 on_cluster=lambda d: out.print(f"model: {model}; {d}", highlight=False))
        except BaseException:
            from edgevision.scale.run import partial_dir

            if partial_dir(out_dir).is_dir():
                err.print(f"the run stopped; its finished shards are kept in {partial_dir(out_dir)}: continue with the "
                          "same command and --resume", highlight=False)
            raise
    d = res.doc_summary
    out.print(f"{d['images']} image(s): {d['rejected']} rejected, {d['accepted']} accepted; {d['unreadable']} "
              f"unreadable", highlight=False)
    ran = res.shards - res.resumed
    if ran:
        out.print(f"{ran} shard(s) on {res.actors} actor(s) across {len(res.nodes)} node(s) in {res.seconds:.1f} s "
                  f"({res.images_per_s:.1f} images/s)" + (f"; {res.resumed} finished before --resume" if res.resumed else "")
                  + (f"; {res.retried} retried after a worker died" if res.retried else ""), highlight=False)
    else:
        out.print(f"all {res.shards} shard(s) had finished; merged", highlight=False)
    out.print(f"wrote {out_dir}", highlight=False)
    if d["images"] == 0:
        err.print(f"no input could be read ({d['unreadable']} unreadable); see {out_dir / 'predictions.json'}",
                  highlight=False)
        raise typer.Exit(1)


def _run(m: Any, frames: Any, stage: Path, names: list[str], conf: float | None, iou: float, max_det: int,
         save_images: bool, total: int | None, is_video: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from edgevision.infer import predict_source
    from edgevision.outputs import save_annotated

    def on_frame(frame: Any, rec: Any) -> None:
        bar.advance(task)
        if save_images and rec is not None:
            save_annotated(stage / "images", frame.name, frame.image, rec, names, is_video)

    with progress_bars(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("predict", total=total)
        return predict_source(m, frames, conf=conf, iou=iou, max_det=max_det, on_frame=on_frame)


def header(model: Path, kind: str, names: list[str], thresholds: dict[str, float], threshold_source: str,
           rules: dict[str, str]) -> dict[str, Any]:
    """The keys of ``predictions.json`` before its images (the local command's and the cluster run's)."""
    from edgevision.evaluate.predictions import SCHEMA

    return {"schema": SCHEMA, "classes": names, "model": str(model), "model_kind": kind, "thresholds": thresholds,
            "threshold_source": threshold_source, "threshold_rules": rules}


def _write_outputs(stage: Path, res: Any, names: list[str], model: Path, fmt: str, m: Any) -> None:
    from edgevision.outputs import image_entry, write_predictions_csv, write_predictions_json

    images = [image_entry(r, names, res.decisions[r.name]) for r in res.records]
    with (stage / "predictions.json").open("w", encoding="utf-8") as f:
        write_predictions_json(f, header(model, m.kind, names, res.thresholds, res.threshold_source, res.rules),
                               images, [{"name": n, "error": e} for n, e in res.unreadable])
    if fmt == "csv":
        with (stage / "predictions.csv").open("w", encoding="utf-8", newline="") as f:
            write_predictions_csv(f, images)


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
