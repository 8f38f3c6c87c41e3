"""``edgevision eval [MODEL] --data DATASET [--split val] [--predictions FILE] [--json OUT] ...``.

Evaluates a trained model (a run folder, a ``.pt``, or an ONNX file through the torch-free runtime;
see `edgevision.models.open_predictor`) or a predictions file (COCO results JSON or EdgeVision
predictions JSON, see `edgevision.evaluate.predictions`) on one split of a dataset: COCO metrics
(pycocotools), P/R/F1 at ``--conf``, a confusion matrix, and image-level escape / false-reject
rates (with exact 95% intervals) at the operating points of ``--thresholds`` (or of ``MODEL/thresholds.json``
for a run folder, or of the ONNX model's metadata), else at ``--conf``, and the image-level trade-off the split
allows. Operating points can be chosen on the split instead: per class (``--target recall=0.9``), per image
(``--max-escape-rate`` / ``--max-false-reject-rate``) or priced (``--cost-escape`` and ``--cost-false-reject``);
see `edgevision.evaluate.operating`. Exit code 0, or 2 for bad input or limits that cannot hold (one line on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import check_choice, out, predict_with_progress, print_findings, write_json_option

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
    max_escape_rate: float | None = typer.Option(None, "--max-escape-rate", min=0.0, max=1.0, help="Choose per image on "
                                                 "this split: escape rate at most this, false rejects minimised."),
    max_false_reject_rate: float | None = typer.Option(None, "--max-false-reject-rate", min=0.0, max=1.0,
                                                       help="Choose per image: false-reject rate at most this (alone: "
                                                       "escapes minimised; with --max-escape-rate: both must hold)."),
    cost_escape: float | None = typer.Option(None, "--cost-escape", help="Choose priced: the cost of one defective "
                                             "part accepted (with --cost-false-reject)."),
    cost_false_reject: float | None = typer.Option(None, "--cost-false-reject", help="The cost of one good part "
                                                   "rejected (with --cost-escape)."),
    defect_rate: float | None = typer.Option(None, "--defect-rate", min=0.0, max=1.0, help="Share of defective parts "
                                             "on the line, for the expected cost (default: the split's)."),
    fallback: str = typer.Option("f1", "--fallback", help="f1 | default: the threshold of a class whose --target "
                                 "is unreachable."),
    min_threshold: float = typer.Option(0.05, "--min-threshold", min=0.0, max=1.0, help="No threshold below this "
                                        "is chosen."),
    save_thresholds: Path | None = typer.Option(None, "--save-thresholds", help="Write the operating points chosen "
                                                "(--target, --max-*-rate or --cost-*) here."),
    curve_csv: Path | None = typer.Option(None, "--curve-csv", help="Write the image-level trade-off curve (CSV)."),
    curve_plot: Path | None = typer.Option(None, "--curve-plot", help="Plot the trade-off curve into this PNG "
                                           "(plots extra)."),
    save_predictions: Path | None = typer.Option(None, "--save-predictions", help="Write the model's predictions "
                                                 "(EdgeVision predictions JSON) here."),
    difficult: str = typer.Option("ignore", "--difficult", help="ignore | count | drop: how 'difficult' objects count."),
    max_dets: int = typer.Option(100, "--max-dets", min=1, help="Detections kept per image and class (COCO maxDets)."),
    device: str = typer.Option("cpu", "--device", help="Device to run MODEL on: cpu, 0, ..."),
    imgsz: int | None = typer.Option(None, "--imgsz", min=32, help="Inference image size (default: the model's)."),
    ray: str | None = typer.Option(None, "--ray", help="Predict the split on a Ray cluster (ONNX models): auto, "
                                   "ray://HOST:PORT or a head's HOST:PORT; 'local' (or --ray last) starts one for the "
                                   "call. The dataset's images must be at the same paths on every node (scale extra)."),
    actors: int | None = typer.Option(None, "--actors", min=1, help="With --ray: model sessions in the pool "
                                      "(default: the cluster's CPUs)."),
) -> None:
    """COCO mAP (pycocotools), per-class AP / P / R / F1, confusion matrix, escape and false-reject rates."""
    from edgevision.convert import read_dataset
    from edgevision.core.errors import ConfigError
    from edgevision.evaluate import OperatingPoints, evaluate, read_predictions, write_predictions
    from edgevision.evaluate.operating import SelectionRule, select_operating_points

    check_choice("--difficult", difficult, ("ignore", "count", "drop"))
    check_choice("--fallback", fallback, ("f1", "default"))
    if (model is None) == (predictions is None):
        raise ConfigError("give exactly one of MODEL or --predictions FILE" + (", not both" if model else ""))
    image_opts = [n for n, v in (("--max-escape-rate", max_escape_rate), ("--max-false-reject-rate",
                                                                          max_false_reject_rate),
                                 ("--cost-escape", cost_escape), ("--cost-false-reject", cost_false_reject)) if v is not None]
    if target is not None and image_opts:
        raise ConfigError(f"give --target (per class) or {' / '.join(image_opts)} (per image), not both")
    choosing = target is not None or bool(image_opts)
    if thresholds is not None and choosing:
        raise ConfigError(f"give --thresholds or {'--target' if target else image_opts[0]} (choose on this split), "
                          "not both")
    if save_thresholds is not None and not choosing:
        raise ConfigError("--save-thresholds needs a rule to choose with: --target recall=V, --max-escape-rate R, "
                          "or --cost-escape C --cost-false-reject C")
    if defect_rate is not None and cost_escape is None:
        raise ConfigError("--defect-rate prices decisions: give it with --cost-escape and --cost-false-reject")
    if save_predictions is not None and model is None:
        raise ConfigError("--save-predictions needs a MODEL")
    if ray is None and actors is not None:
        raise ConfigError("--actors is an option of a Ray run: add --ray")
    if ray is not None and model is None:
        raise ConfigError("--ray predicts with a MODEL; --predictions files are scored locally")
    goal = _parse_target(target) if target is not None else ("recall", 0.9)
    rule = SelectionRule(target=goal[0], value=goal[1], max_escape_rate=max_escape_rate,
                         max_false_reject_rate=max_false_reject_rate, cost_escape=cost_escape,
                         cost_false_reject=cost_false_reject, defect_rate=defect_rate, fallback=fallback,
                         min_threshold=min_threshold, iou=iou)
    if choosing:
        rule.check()
    if predictions is not None and not predictions.is_file():
        raise ConfigError(f"--predictions {predictions}: file does not exist")
    from edgevision.models import open_predictor, operating_points, split_for_model

    operating = OperatingPoints.load(thresholds) if thresholds is not None else None
    if operating is None and not choosing and model is not None:
        operating = operating_points(model)  # ONNX metadata, or the run's thresholds.json

    rr = read_dataset(data, src_format, recipe=recipe)
    print_findings(rr.report)
    ds = rr.dataset
    predictor = open_predictor(model, device=device, imgsz=imgsz) if model is not None else None
    labels = predictor.labels if predictor is not None else ds.labels  # reported in the model's class order
    gt = split_for_model(ds, split, data, list(labels.names) if predictor is not None else None, model=model,
                         need_images=predictor is not None)
    if operating is not None:
        operating.for_labels(labels)  # names must match before any work
    if predictor is None:
        assert predictions is not None
        preds = read_predictions(predictions, gt, labels)
        source = str(predictions)
    else:
        preds = _predict_on_ray(model, gt, max_dets, ray, actors) if ray is not None else \
            predict_with_progress(predictor, gt, max_dets)
        source = str(model)
        if save_predictions is not None:
            write_predictions(save_predictions, preds, labels)
            out.print(f"wrote predictions to {save_predictions}", highlight=False)
    if choosing:
        operating = select_operating_points(gt, preds, labels, rule, difficult=difficult)
        out.print(f"operating points chosen on split {split} ({len(gt)} images; optimistic: chosen and measured on "
                  f"the same images): {rule.describe()}", highlight=False)
    report = evaluate(gt, preds, labels, conf=conf, iou=iou, operating=operating, max_dets=max_dets,
                      difficult=difficult, tradeoff=True)
    _print_report(report, f"{source} on {data} (split {split}, {len(gt)} images)")
    _print_limits(report.decisions, max_escape_rate, max_false_reject_rate)
    if save_thresholds is not None and operating is not None:
        operating.save(save_thresholds)
        out.print(f"wrote operating points to {save_thresholds}", highlight=False)
    if curve_csv is not None or curve_plot is not None:
        _write_curve(report, curve_csv, curve_plot, f"{source} on {data} (split {split})")
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


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _predict_on_ray(model: Path | None, gt: list[Any], max_dets: int, address: str, actors: int | None) -> list[Any]:
    """The split's predictions made on a Ray cluster (`edgevision.scale.predict_records_on_ray`), with progress."""
    from rich.progress import Progress

    from edgevision.commands._present import progress_bars
    from edgevision.scale import RayOptions, predict_records_on_ray

    assert model is not None
    with progress_bars(*Progress.get_default_columns()) as bar:
        task = bar.add_task("predicting on Ray", total=len(gt))
        return predict_records_on_ray(model, gt, max_det=max_dets, options=RayOptions(address=address, actors=actors),
                                      progress=lambda done, total: bar.update(task, completed=done))


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
        cols += ["threshold", "R at thr", "P at thr", "rule"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("class", "rule") else "right")
    for name, p in report.per_class.items():
        ap = c.per_class[name]
        row = [name, str(p.gt), _f(ap["ap50_95"]), _f(ap["ap50"]), _f(p.precision), _f(p.recall), _f(p.f1),
               str(p.tp), str(p.fp), str(p.fn)]
        if op is not None:
            ach = op.achieved.get(name, {})
            row += [f"{op.classes[name]:.4g}", _f(ach.get("recall")), _f(ach.get("precision")), rule_label(op, name)]
        t.add_row(*row)
    out.print(t)
    if op is not None:
        for name in op.classes:
            r = op.rules.get(name, {})
            if r.get("rule") in ("f1", "default", "lowest"):
                out.print(f"  {name}: {r.get('text')}", highlight=False)
        low = op.below_minimum()
        if low:
            out.print(f"[red]degenerate operating points[/red]: {', '.join(f'{n} {v:.3g}' for n, v in low.items())} "
                      "below the minimum 0.05 (an older EdgeVision chose the lowest score seen); re-choose with "
                      "edgevision eval MODEL --data D --target recall=0.9 --save-thresholds thresholds.json",
                      highlight=False)
        if op.note:
            out.print(f"[yellow]{op.note}[/yellow]", highlight=False)

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
    if report.tradeoff:
        print_tradeoff(report.tradeoff, d)
    src = "the operating points" if op is not None else f"conf >= {report.conf:g}"
    from edgevision.evaluate.operating import decisions_summary

    out.print(f"image decisions at {src}: {decisions_summary(d)}; object miss rate {_f(d['object_miss_rate'])} "
              f"({d['missed_objects']}/{d['objects']})", highlight=False)


RULE_LABELS = {"f1": "[yellow]F1 fallback[/yellow]", "default": "[yellow]default[/yellow]",
               "lowest": "[red]lowest seen[/red]", "image": "image-level", "cost": "priced", "manual": "manual"}


def rule_label(op: Any, name: str) -> str:
    """A short label for the rule of ``name``'s threshold (the full text is in ``op.rules``)."""
    kind = op.rules.get(name, {}).get("rule", op.target)
    if kind in ("recall", "precision"):
        return f"{kind} >= {op.value:g}" if op.value is not None else kind
    return RULE_LABELS.get(kind, kind)


def print_tradeoff(curve: list[dict[str, Any]], chosen: dict[str, Any] | None = None, max_rows: int = 8) -> None:
    """The image-level trade-off as a short table (the chosen point marked)."""
    from edgevision.core.stats import Rate
    from edgevision.evaluate.tradeoff import curve_rows

    rows = curve_rows(curve, max_rows, chosen)
    t = Table(title=f"image-level trade-off on this split ({len(curve)} achievable points, {len(rows)} shown; "
                    "full curve: --curve-csv / --json)", title_justify="left")
    for col in ("", "escape rate (95% CI)", "false-reject rate (95% CI)", "thresholds"):
        t.add_column(col, justify="left")
    for p in rows:
        mark = "*" if chosen is not None and (p["escapes"], p["false_rejects"]) == (chosen.get("escapes"),
                                                                                   chosen.get("false_rejects")) else ""
        thr = " ".join(f"{n} {v:.2g}" for n, v in p["thresholds"].items())
        t.add_row(mark, Rate(p["escapes"], p["defective_images"]).text(), Rate(p["false_rejects"],
                                                                              p["defect_free_images"]).text(),
                  thr if len(thr) <= 60 else thr[:57] + "...")
    out.print(t)


def _print_limits(d: dict[str, Any], max_escape: float | None, max_fr: float | None) -> None:
    """One line per rate limit the split has too few images to show at 95%."""
    from edgevision.evaluate.operating import limit_support

    for kind, limit, n in (("escape", max_escape, d.get("defective_images")),
                           ("false-reject", max_fr, d.get("defect_free_images"))):
        line = limit_support(kind, int(n or 0), limit) if limit is not None else None
        if line:
            out.print(f"[yellow]note[/yellow]: {line}", highlight=False)


def _write_curve(report: Any, csv_path: Path | None, png_path: Path | None, title: str) -> None:
    from edgevision.core.errors import ConfigError
    from edgevision.evaluate.tradeoff import plot_tradeoff, write_tradeoff_csv

    if not report.tradeoff:
        d = report.decisions
        raise ConfigError(f"no trade-off curve: the split needs both defective and defect-free images (it has "
                          f"{d['defective_images']} and {d['defect_free_images']})")
    if csv_path is not None:
        write_tradeoff_csv(report.tradeoff, csv_path)
        out.print(f"wrote the trade-off curve to {csv_path}", highlight=False)
    if png_path is not None:
        if plot_tradeoff(report.tradeoff, png_path, chosen=report.decisions, title=title) is None:
            raise ConfigError("--curve-plot needs matplotlib: pip install 'edgevision[plots]'")
        out.print(f"wrote the trade-off plot to {png_path}", highlight=False)
