"""``edgevision eval [MODEL] --data DATASET [--split val] [--predictions FILE] [--json OUT] ...``.

Evaluates a trained model (a run folder, a ``.pt``, or an ONNX file through the torch-free runtime;
see `edgevision.train.predict.load_predictor`) or a predictions file (COCO results JSON or EdgeVision
predictions JSON, see `edgevision.evaluate.predictions`) on one split of a dataset: COCO metrics
(pycocotools), P/R/F1 at ``--conf``, a confusion matrix, and image-level escape / false-reject
rates at the operating points of ``--thresholds`` (or of ``MODEL/thresholds.json`` for a run
folder, or of the ONNX model's metadata), else at ``--conf``. Exit code 0, or 2 for bad input (one line on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import check_choice, out, print_findings, write_json_option

LOW_CONF = 0.001
"""Confidence the model is run at, so that mAP sees the whole precision / recall curve."""

_MAX_MATRIX_CLASSES = 20
"""Print the confusion matrix up to this many classes (it is always in --json)."""


def command(
    model: Path | None = typer.Argument(None, help="Run folder, .pt (or .onnx) model; or give --predictions."),
    data: Path = typer.Option(..., "--data", help="Dataset (annotation file or folder) holding the ground truth."),
    src_format: str = typer.Option("auto", "--from", help="Dataset format, or 'auto' to detect it."),
    recipe: str | None = typer.Option(None, "--recipe", help="Public-dataset recipe to read --data with."),
    split: str = typer.Option("val", "--split", help="Split to evaluate; 'all' for every image (e.g. an unsplit dataset)."),
    predictions: Path | None = typer.Option(None, "--predictions", help="Evaluate this predictions file (COCO results "
                                            "or EdgeVision predictions JSON) instead of a model."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full report (schema edgevision.eval/1) here."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Confidence for P/R/F1 and the confusion matrix."),
    iou: float = typer.Option(0.5, "--iou", min=0.0, max=1.0, help="IoU for P/R/F1, confusion matrix and decisions."),
    thresholds: Path | None = typer.Option(None, "--thresholds", help="Per-class operating points (thresholds.json)."),
    target: str | None = typer.Option(None, "--target", help="Choose operating points on this split: recall=0.9 or "
                                      "precision=0.95 (optimistic: chosen and measured on the same images)."),
    save_thresholds: Path | None = typer.Option(None, "--save-thresholds", help="Write the operating points of --target here."),
    save_predictions: Path | None = typer.Option(None, "--save-predictions", help="Write the model's predictions "
                                                 "(EdgeVision predictions JSON) here."),
    difficult: str = typer.Option("ignore", "--difficult", help="ignore | count | drop: how 'difficult' objects count."),
    max_dets: int = typer.Option(100, "--max-dets", min=1, help="Detections kept per image and class (COCO maxDets)."),
    device: str = typer.Option("cpu", "--device", help="Device to run MODEL on: cpu, 0, ..."),
    imgsz: int | None = typer.Option(None, "--imgsz", min=32, help="Inference image size (default: the model's)."),
) -> None:
    """COCO mAP (pycocotools), per-class AP / P / R / F1, confusion matrix, escape and false-reject rates."""
    from edgevision.convert import read_dataset
    from edgevision.core.errors import ConfigError
    from edgevision.evaluate import OperatingPoints, choose_thresholds, evaluate, read_predictions, write_predictions

    check_choice("--difficult", difficult, ("ignore", "count", "drop"))
    if (model is None) == (predictions is None):
        raise ConfigError("give exactly one of MODEL or --predictions FILE" + (", not both" if model else ""))
    if thresholds is not None and target is not None:
        raise ConfigError("give --thresholds or --target, not both")
    if save_thresholds is not None and target is None:
        raise ConfigError("--save-thresholds needs --target recall=V or precision=V")
    if save_predictions is not None and model is None:
        raise ConfigError("--save-predictions needs a MODEL")
    goal = _parse_target(target) if target is not None else None
    if predictions is not None and not predictions.is_file():
        raise ConfigError(f"--predictions {predictions}: file does not exist")
    operating = OperatingPoints.load(thresholds) if thresholds is not None else None
    if operating is None and goal is None and model is not None and (model.is_dir() or model.is_file()):
        from edgevision.evaluate.operating import model_operating_points

        operating = model_operating_points(model)  # ONNX metadata, or the run's thresholds.json

    rr = read_dataset(data, src_format, recipe=recipe)
    print_findings(rr.report)
    ds = rr.dataset
    gt = _select_split(ds, split, data)
    if operating is not None:
        operating.for_labels(ds.labels)  # names must match before any work
    if predictions is not None:
        preds = read_predictions(predictions, gt, ds.labels)
        source = str(predictions)
    else:
        assert model is not None
        preds = _predict(model, gt, ds.labels, device, imgsz, max_dets)
        source = str(model)
        if save_predictions is not None:
            write_predictions(save_predictions, preds, ds.labels)
            out.print(f"wrote predictions to {save_predictions}", highlight=False)
    if goal is not None:
        operating = choose_thresholds(gt, preds, ds.labels, goal[0], goal[1], iou, difficult=difficult)
        if save_thresholds is not None:
            operating.save(save_thresholds)
            out.print(f"wrote operating points to {save_thresholds}", highlight=False)
    report = evaluate(gt, preds, ds.labels, conf=conf, iou=iou, operating=operating, max_dets=max_dets,
                      difficult=difficult)
    _print_report(report, f"{source} on {data} (split {split}, {len(gt)} images)")
    if json_out is not None:
        write_json_option(json_out, report.to_dict(), "report")


def _parse_target(target: str) -> tuple[str, float]:
    from edgevision.core.errors import ConfigError

    kind, _, value = target.partition("=")
    try:
        v = float(value)
    except ValueError:
        v = -1.0
    if kind not in ("recall", "precision") or not 0.0 <= v <= 1.0:
        raise ConfigError(f"--target: expected recall=V or precision=V with V in [0, 1], got '{target}'")
    return kind, v


def _select_split(ds: Any, split: str, data: Path) -> list[Any]:
    """The records of ``split`` ('all': every record); a one-line error lists the splits present."""
    from edgevision.core.dataset import SPLIT_ALIASES
    from edgevision.core.errors import ConfigError

    if split == "all":
        recs = list(ds.images)
    else:
        name = SPLIT_ALIASES.get(split.lower(), split)
        if name not in ds.splits:
            present = ", ".join(ds.splits) if ds.splits else "none (the dataset is unsplit; use --split all)"
            raise ConfigError(f"--split {split}: {data} has no split '{split}'; splits present: {present}"
                              + ("; or --split all" if ds.splits else ""))
        recs = ds.split(name)
    if not recs:
        raise ConfigError(f"--split {split}: {data} has no images to evaluate")
    return recs


def _predict(model: Path, gt: list[Any], labels: Any, device: str, imgsz: int | None, max_dets: int) -> list[Any]:
    from edgevision.core.errors import ConfigError, DatasetError
    from edgevision.train.predict import load_predictor

    missing = [r.name for r in gt if r.path is None or not Path(r.path).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} image file(s) of the split are missing (first: {missing[0]}); "
                           "a model needs the images")
    predictor = load_predictor(model, device=device, imgsz=imgsz)
    if list(predictor.labels.names) != list(labels.names):
        raise ConfigError(f"model {model} has classes {list(predictor.labels.names)} but the dataset has "
                          f"{list(labels.names)}; remap the dataset (edgevision remap) or use a matching model")
    from rich.progress import Progress

    from edgevision.commands._present import progress_bars

    preds: list[Any] = []
    chunk = 16
    with progress_bars(*Progress.get_default_columns()) as bar:
        task = bar.add_task("predicting", total=len(gt))
        for i in range(0, len(gt), chunk):
            preds.extend(predictor.predict(gt[i:i + chunk], conf=LOW_CONF, max_det=max_dets))
            bar.update(task, completed=min(i + chunk, len(gt)))
    return preds


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _print_report(report: Any, title: str) -> None:
    c = report.coco
    t = Table(title=title, title_justify="left")
    for col in ("mAP50-95", "mAP50", "mAP75", "AP small", "AP medium", "AP large", f"AR@{report.max_dets}",
                f"P@{report.conf:g}", f"R@{report.conf:g}", "F1"):
        t.add_column(col, justify="right")
    o = report.overall
    t.add_row(*(_f(v) for v in (c.map50_95, c.map50, c.map75, c.ap_small, c.ap_medium, c.ap_large, c.ar100,
                                o.precision, o.recall, o.f1)))
    out.print(t)

    op = report.operating
    t = Table(title=f"per class (P/R/F1 at conf {report.conf:g}, IoU {report.iou:g}; difficult: {report.difficult})",
              title_justify="left")
    cols = ["class", "gt", "AP50-95", "AP50", "P", "R", "F1", "TP", "FP", "FN"]
    if op is not None:
        cols += ["threshold", f"{op.target} at thr"]
    for col in cols:
        t.add_column(col, justify="left" if col == "class" else "right")
    for name, p in report.per_class.items():
        ap = c.per_class[name]
        row = [name, str(p.gt), _f(ap["ap50_95"]), _f(ap["ap50"]), _f(p.precision), _f(p.recall), _f(p.f1),
               str(p.tp), str(p.fp), str(p.fn)]
        if op is not None:
            ach = op.achieved.get(name, {}).get(op.target)
            flag = ("" if name not in op.unreachable else " (no gt)" if not op.achieved.get(name, {}).get("gt")
                    else " [yellow](unreachable)[/yellow]")
            row += [f"{op.classes[name]:.4g}", _f(ach) + flag]
        t.add_row(*row)
    out.print(t)

    if len(report.per_class) <= _MAX_MATRIX_CLASSES:
        cm = report.confusion
        t = Table(title=f"confusion matrix (rows: ground truth, columns: predicted; conf {cm.conf:g}, IoU {cm.iou:g})",
                  title_justify="left")
        t.add_column("")
        for n in cm.names:
            t.add_column(n, justify="right")
        for n, row in zip(cm.names, cm.matrix.tolist()):
            t.add_row(n, *(str(v) for v in row))
        out.print(t)

    d = report.decisions
    src = (f"operating points ({op.target} >= {op.value:g})" if op is not None else f"conf >= {report.conf:g}")
    out.print(
        f"image decisions at {src}: escape rate {_f(d['escape_rate'])} ({d['escapes']}/{d['defective_images']} "
        f"defective images not flagged), false-reject rate {_f(d['false_reject_rate'])} "
        f"({d['false_rejects']}/{d['defect_free_images']} defect-free images flagged), object miss rate "
        f"{_f(d['object_miss_rate'])} ({d['missed_objects']}/{d['objects']})",
        highlight=False,
    )
