"""``edgevision inspect --data DATASET [--model MODEL | --predictions FILE] [--name NAME] [--launch]`` and friends.

``inspect ARGS`` is short for ``inspect load ARGS``: ground truth (any readable format) and
predictions into a persistent FiftyOne dataset, evaluated and tagged (see `edgevision.inspect.load`).
``inspect export NAME [--view TAG] OUT --to FORMAT`` writes it (or a saved view or tag of it) back out
through EdgeVision's writers; ``inspect launch NAME`` opens the FiftyOne App on it;
``inspect list`` / ``inspect delete NAME`` manage the datasets. Everything needs the ``inspect`` extra.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import check_choice, default_subcommand_group, err, out, progress_bars

app = typer.Typer(cls=default_subcommand_group("load"), no_args_is_help=True, add_completion=False,
                  help="Look at datasets and predictions in FiftyOne (tags TP / FP / FN); export curated labels back.")

DB_HELP = "FiftyOne's database folder (default: $EDGEVISION_FIFTYONE_DIR, else EDGEVISION_HOME/fiftyone)."


def _default_name(data: Path) -> str:
    p = data.resolve()
    return (p.parent.name + "-" + p.stem) if p.is_file() else p.name


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


@app.command("load")
def load(
    data: Path = typer.Option(..., "--data", help="Dataset (annotation file or folder), any format EdgeVision reads."),
    model: Path | None = typer.Option(None, "--model", help="Run folder, .pt or .onnx model: predict every image."),
    predictions: Path | None = typer.Option(None, "--predictions", help="Predictions file (EdgeVision predictions or "
                                            "COCO results JSON) instead of --model."),
    name: str | None = typer.Option(None, "--name", help="FiftyOne dataset name (default: the data folder's name)."),
    src_format: str = typer.Option("auto", "--from", help="Dataset format, or 'auto'."),
    recipe: str | None = typer.Option(None, "--recipe", help="Public-dataset recipe to read --data with."),
    split: str = typer.Option("all", "--split", help="Load only this split ('all': every image)."),
    thresholds: Path | None = typer.Option(None, "--thresholds", help="Operating points (thresholds.json) for the "
                                           "TP/FP/FN tags (default: the model's own, else --conf)."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Tag threshold for every class when there are "
                               "no operating points."),
    iou: float = typer.Option(0.5, "--iou", min=0.0, max=1.0, help="IoU for the TP/FP/FN tags."),
    difficult: str = typer.Option("ignore", "--difficult", help="ignore | count: how 'difficult' objects count."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a FiftyOne dataset of that name."),
    launch: bool = typer.Option(False, "--launch", help="Open the FiftyOne App on it afterwards (Ctrl-C stops)."),
    address: str = typer.Option("127.0.0.1", "--address", help="App address with --launch (localhost only by default)."),
    port: int = typer.Option(5151, "--port", min=1, max=65535, help="App port with --launch."),
    device: str = typer.Option("cpu", "--device", help="Device to run --model on: cpu, 0, ..."),
    imgsz: int | None = typer.Option(None, "--imgsz", min=32, help="Inference size for --model (default: the model's)."),
    db_dir: Path | None = typer.Option(None, "--db-dir", help=DB_HELP),
) -> None:
    """Load a dataset (and predictions) into FiftyOne; evaluate; tag TP / FP / FN; print per-class results."""
    from edgevision.commands._present import predict_with_progress, print_findings
    from edgevision.convert import read_dataset
    from edgevision.core.errors import ConfigError
    from edgevision.evaluate import OperatingPoints, read_predictions
    from edgevision.evaluate.operating import costs_of
    from edgevision.inspect.load import MAX_DETS, LoadRequest, load_into_fiftyone
    from edgevision.models import open_predictor, operating_points, split_for_model

    check_choice("--difficult", difficult, ("ignore", "count"))
    if model is not None and predictions is not None:
        raise ConfigError("give --model or --predictions, not both")
    for flag, p in (("--model", model), ("--predictions", predictions), ("--thresholds", thresholds)):
        if p is not None and not p.exists():
            raise ConfigError(f"{flag} {p}: file does not exist")
    rr = read_dataset(data, src_format, recipe=recipe)
    print_findings(rr.report)
    ds = rr.dataset
    predictor = open_predictor(model, device=device, imgsz=imgsz) if model is not None else None
    labels = predictor.labels if predictor is not None else ds.labels  # shown in the model's class order
    gt = split_for_model(ds, split, data, list(labels.names) if predictor is not None else None, model=model,
                         purpose="inspect", need_images=predictor is not None)
    preds = None
    operating = OperatingPoints.load(thresholds) if thresholds is not None else None
    source = f"--thresholds {thresholds}" if thresholds is not None else ""
    if predictions is not None:
        preds = read_predictions(predictions, gt, labels)
    elif predictor is not None:
        preds = predict_with_progress(predictor, gt, MAX_DETS)
        if operating is None:
            operating = operating_points(model)  # type: ignore[arg-type]  # model is set with a predictor
            source = f"operating points of {model}" if operating is not None else ""
    pred_src = model or predictions
    req = LoadRequest(
        name=name or _default_name(data), gt=gt, labels=labels, preds=preds,
        thresholds=dict(operating.classes) if operating is not None else None, thresholds_source=source, conf=conf,
        iou=iou, difficult=difficult, overwrite=overwrite, db_dir=db_dir, costs=costs_of(operating),
        source={"data": str(data.resolve()), "format": rr.format, "split": split,
                "predictions": str(pred_src.resolve()) if pred_src else None},
    )
    with progress_bars() as bars:
        task = bars.add_task("starting FiftyOne", total=None)
        result = load_into_fiftyone(req, lambda stage, done, total: bars.update(task, description=stage,
                                                                                completed=done, total=total))
    _print_result(result)
    if launch:
        _launch(result.name, None, address, port, db_dir)


def _print_result(r: Any) -> None:
    splits = ", ".join(f"{k} {v}" for k, v in sorted(r.splits.items()))
    out.print(f"FiftyOne dataset [bold]{r.name}[/bold]: {r.samples} images ({splits}), {r.objects} objects, "
              f"{len(r.classes)} classes; database {r.db_dir or '$FIFTYONE_DATABASE_URI'}", highlight=False)
    t = Table(title="per class" + (" (counts at the operating points; AP over all detections)" if r.has_predictions
                                   else ""), title_justify="left")
    cols = ["class", "gt"] + (["predicted", "TP", "FP", "FN", "P", "R", "AP50-95", "AP50", "threshold"]
                              if r.has_predictions else [])
    for col in cols:
        t.add_column(col, justify="left" if col == "class" else "right")
    for row in r.rows:
        cells = [row.name, str(row.gt)]
        if r.has_predictions:
            cells += [str(row.predicted), str(row.tp), str(row.fp), str(row.fn), _f(row.precision), _f(row.recall),
                      _f(row.ap50_95), _f(row.ap50), f"{r.thresholds[row.name]:.4g}"]
        t.add_row(*cells)
    out.print(t)
    if r.has_predictions:
        out.print(f"FiftyOne COCO evaluation (eval key 'eval'): mAP50-95 {_f(r.fo_map50_95)}, mAP50 {_f(r.fo_map50)}; "
                  f"EdgeVision's evaluator: {_f(r.ev_map50_95)}, {_f(r.ev_map50)}", highlight=False)
        if r.fo_map50_95 is not None and r.ev_map50_95 is not None and abs(r.fo_map50_95 - r.ev_map50_95) > 1e-3:
            err.print("[yellow]warning:[/yellow] FiftyOne's mAP differs from EdgeVision's by more than 0.001 "
                      "(ties in scores are ordered differently)", highlight=False)
        from edgevision.evaluate.operating import decisions_summary

        d = r.decisions or {}
        out.print(f"tags at {r.thresholds_source}: objects tp / fp / fn (eval key 'eval_op'); images "
                  f"escape {d.get('escapes', 0)}/{d.get('defective_images', 0)} defective, false_reject "
                  f"{d.get('false_rejects', 0)}/{d.get('defect_free_images', 0)} defect-free; saved views: "
                  f"{', '.join(r.saved_views)}", highlight=False)
        out.print(f"image decisions: {decisions_summary(d)}", highlight=False, markup=False)
    out.print(f"open it: edgevision inspect launch {r.name}   (export: edgevision inspect export {r.name} "
              "[--view TAG] OUT --to FORMAT)", highlight=False, soft_wrap=True)


def _launch(name: str, view: str | None, address: str, port: int, db_dir: Path | None) -> None:
    from edgevision.inspect.export import open_dataset, select_view
    from edgevision.inspect.fo_env import import_fiftyone

    fo = import_fiftyone(db_dir)
    ds = open_dataset(fo, name, db_dir)
    selected, how = select_view(ds, view)
    logging.getLogger("fiftyone").setLevel(logging.WARNING)

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # a service manager's stop (SIGTERM), even while the App is still starting, closes the session so
    # that FiftyOne's App server goes too
    previous = signal.signal(signal.SIGTERM, _stop)
    session = None
    try:
        session = fo.launch_app(selected, address=address, port=port, auto=False)
        shown = "localhost" if address in ("127.0.0.1", "localhost", "::1") else address
        out.print(f"FiftyOne App on {name} ({how}): http://{shown}:{port}/   (Ctrl-C stops it)", highlight=False)
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if session is not None:
            session.close()
    out.print("App stopped", highlight=False)


@app.command("launch")
def launch_cmd(
    name: str = typer.Argument(..., help="FiftyOne dataset name (see `edgevision inspect list`)."),
    view: str | None = typer.Option(None, "--view", help="Open this saved view or tag instead of the whole dataset."),
    address: str = typer.Option("127.0.0.1", "--address", help="App address (localhost only by default)."),
    port: int = typer.Option(5151, "--port", min=1, max=65535, help="App port."),
    db_dir: Path | None = typer.Option(None, "--db-dir", help=DB_HELP),
) -> None:
    """Open the FiftyOne App on a dataset, a saved view or a tag; Ctrl-C stops it."""
    _launch(name, view, address, port, db_dir)


@app.command("export")
def export_cmd(
    name: str = typer.Argument(..., help="FiftyOne dataset name."),
    out_dir: Path = typer.Argument(..., help="Output folder (created atomically)."),
    to: str = typer.Option(..., "--to", help="Format to write: coco, voc, yolo, labelme, cvat, ..."),
    view: str | None = typer.Option(None, "--view", help="A saved view, sample tag or label tag (e.g. relabel)."),
    label_field: str = typer.Option("ground_truth", "--field", help="Label field to write (predictions: the "
                                    "model's boxes, e.g. as pre-labels)."),
    images: str = typer.Option("copy", "--images", help="copy | symlink | none: what to do with image files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT when it exists."),
    db_dir: Path | None = typer.Option(None, "--db-dir", help=DB_HELP),
) -> None:
    """Write a FiftyOne dataset (or a saved view / tag of it) through EdgeVision's writers."""
    from edgevision.commands._present import print_losses
    from edgevision.inspect.export import export_from_fiftyone

    check_choice("--images", images, ("copy", "symlink", "none"))
    with progress_bars() as bars:
        task = bars.add_task("starting FiftyOne", total=None)
        r = export_from_fiftyone(name, out_dir, to, view=view, label_field=label_field, images=images,  # type: ignore[arg-type]
                                 overwrite=overwrite, db_dir=db_dir,
                                 progress=lambda s, d, t: bars.update(task, description=s, completed=d, total=t))
    out.print(f"wrote {r.samples} images, {r.objects} objects ({r.selected_by} of '{name}', field {label_field}) "
              f"to {r.out} as {r.to}", highlight=False)
    if r.new_classes:
        out.print(f"classes added while curating: {', '.join(r.new_classes)}", highlight=False)
    if r.dropped_shapes:
        err.print(f"[yellow]warning:[/yellow] {r.dropped_shapes} polygon/mask shape(s) dropped: their box was edited "
                  "in FiftyOne", highlight=False)
    if r.losses is not None:
        print_losses(r.losses, r.to)


@app.command("list")
def list_cmd(db_dir: Path | None = typer.Option(None, "--db-dir", help=DB_HELP)) -> None:
    """The FiftyOne datasets in the database, with their size and source."""
    from edgevision.inspect.fo_env import database_dir, import_fiftyone, user_datasets

    fo = import_fiftyone(db_dir)
    t = Table(title=f"FiftyOne datasets in {database_dir(db_dir) or '$FIFTYONE_DATABASE_URI'}", title_justify="left")
    for col in ("name", "images", "loaded", "data", "predictions", "saved views"):
        t.add_column(col)
    for n in user_datasets(fo):
        ds = fo.load_dataset(n)
        ev = (ds.info or {}).get("edgevision", {})
        t.add_row(n, str(len(ds)), str(ev.get("loaded", "-")), str(ev.get("data", "-")), str(ev.get("predictions") or "-"),
                  ", ".join(ds.list_saved_views()) or "-")
    out.print(t)


@app.command("delete")
def delete_cmd(
    name: str = typer.Argument(..., help="FiftyOne dataset name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    db_dir: Path | None = typer.Option(None, "--db-dir", help=DB_HELP),
) -> None:
    """Delete a FiftyOne dataset (its tags and edits are lost; images and annotation files are not touched)."""
    from edgevision.inspect.export import open_dataset
    from edgevision.inspect.fo_env import import_fiftyone

    fo = import_fiftyone(db_dir)
    ds = open_dataset(fo, name, db_dir)
    if not yes and not typer.confirm(f"delete FiftyOne dataset '{name}' ({len(ds)} images) with its tags and edits?"):
        raise typer.Exit(1)
    ds.delete()
    out.print(f"deleted FiftyOne dataset '{name}'", highlight=False)
