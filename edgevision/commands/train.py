"""``edgevision train --data DATASET --model MODEL --out RUN [--config FILE]``: train a detector offline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import err, out, progress_bars


def command(
    data: Path | None = typer.Option(None, "--data", help="Dataset file or folder, in any format EdgeVision reads."),
    model: str | None = typer.Option(None, "--model", help="yolov8n / yolo11n / ssdlite320_mobilenet_v3_large, a registered weights name, or a local .pt / .yaml."),
    run_dir: Path | None = typer.Option(None, "--out", help="Run folder to create (weights, metrics, model card)."),
    config: Path | None = typer.Option(None, "--config", help="YAML config (keys as in configs/train/default.yaml); the command line wins."),
    src_format: str | None = typer.Option(None, "--from", help="Input format, or 'auto' to detect it."),
    recipe: str | None = typer.Option(None, "--recipe", help="Public-dataset recipe (see 'edgevision recipes list')."),
    backend: str | None = typer.Option(None, "--backend", help="ultralytics (AGPL-3.0, default), libreyolo (MIT, YOLOv9) or "
                                          "torchvision (BSD, SSDlite)."),
    imgsz: int | None = typer.Option(None, "--imgsz", help="Image side in pixels."),
    epochs: int | None = typer.Option(None, "--epochs", help="Maximum epochs."),
    batch: int | None = typer.Option(None, "--batch", help="Images per step."),
    device: str | None = typer.Option(None, "--device", help="cpu, 0, or 0,1 (several GPUs: DDP, ultralytics only)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for the split, init and data order."),
    patience: int | None = typer.Option(None, "--patience", help="Stop after this many epochs without improvement (0: never)."),
    workers: int | None = typer.Option(None, "--workers", help="Data-loader worker processes."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (default: all cores)."),
    augment: str | None = typer.Option(None, "--augment", help="Augmentation preset (none, industrial-light, industrial, industrial-strong)."),
    time_hours: float | None = typer.Option(None, "--time-hours", help="Stop after this many hours of training."),
    max_escape_rate: float | None = typer.Option(None, "--max-escape-rate", min=0.0, max=1.0, help="Choose the operating "
                                                 "points per image on val: escape rate at most this, false rejects "
                                                 "minimised (operating_point.max_escape_rate)."),
    max_false_reject_rate: float | None = typer.Option(None, "--max-false-reject-rate", min=0.0, max=1.0,
                                                       help="... and / or the false-reject rate at most this."),
    cost_escape: float | None = typer.Option(None, "--cost-escape", help="Choose priced: the cost of one defective "
                                             "part accepted (with --cost-false-reject)."),
    cost_false_reject: float | None = typer.Option(None, "--cost-false-reject", help="The cost of one good part "
                                                   "rejected (with --cost-escape)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue an interrupted run folder with its own config."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run folder if it exists."),
) -> None:
    """Train a detector on any dataset EdgeVision reads, offline, into a reproducible run folder."""
    from edgevision.core.errors import ConfigError
    from edgevision.train.config import resolve_train_config
    from edgevision.train.trainer import ULTRALYTICS_NOTICE, prepare_run, train

    cli: dict[str, Any] = {
        "data": data, "model": model, "from": src_format, "recipe": recipe, "backend": backend, "imgsz": imgsz,
        "epochs": epochs, "batch": batch, "device": device, "seed": seed, "patience": patience,
        "workers": workers, "threads": threads, "augment": augment, "time_hours": time_hours,
    }
    op = {k: v for k, v in (("max_escape_rate", max_escape_rate), ("max_false_reject_rate", max_false_reject_rate),
                            ("cost_escape", cost_escape), ("cost_false_reject", cost_false_reject)) if v is not None}
    if op:
        cli["operating_point"] = op
    if resume is not None:
        if run_dir is not None and Path(run_dir).resolve() != Path(resume).resolve():
            raise ConfigError(f"--resume {resume} continues that run folder; drop --out {run_dir}")
        if config is not None:
            raise ConfigError(f"--resume {resume} uses {resume}/config.yaml; drop --config {config}")
        prep = prepare_run(None, resume, resume=True, overrides={k: v for k, v in cli.items() if v is not None})
    else:
        if run_dir is None:
            raise ConfigError("--out RUN is required: the run folder to create")
        cfg = resolve_train_config(config, cli)
        prep = prepare_run(cfg, run_dir, overwrite=overwrite)
    cfg = prep.cfg
    if cfg.recipe:
        from edgevision.recipes import get_recipe

        warning = get_recipe(cfg.recipe).licence_warning()
        if warning:
            err.print(f"[yellow]licence: {warning}[/yellow]", highlight=False)
    if cfg.backend == "ultralytics":
        err.print(f"[yellow]licence: {ULTRALYTICS_NOTICE}[/yellow]", highlight=False)
    if prep.spec.kind == "weights":
        err.print(f"weights: {prep.spec.source} (sha256 {prep.spec.sha256[:12] if prep.spec.sha256 else '?'}, "
                  f"licence {prep.spec.licence})", highlight=False)
    ds = prep.dataset
    out.print(f"{'resuming' if prep.resume else 'training'} {cfg.model} ({cfg.backend}) on {cfg.data}: "
              + ", ".join(f"{s} {len(ds.split(s))}" for s in ds.splits)
              + (f" images (val held out by a seeded split, {cfg.val_fraction:.0%})" if prep.split_made else " images")
              + f"; {len(ds.labels)} classes; run folder {prep.run.root}", highlight=False)
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    try:
        with progress_bars(TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), hide=verbose) as bars:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    for t in tasks.values():
                        bars.update(t, visible=False)
                    tasks[stage] = bars.add_task(stage, total=total)
                bars.update(tasks[stage], completed=done, total=total)

            result = train(prep, progress=progress, verbose=verbose)
    except KeyboardInterrupt:
        if prep.run.last.is_file():
            err.print(f"[yellow]interrupted: {prep.run.last} holds the last finished epoch; continue with "
                      f"'edgevision train --resume {prep.run.root}'[/yellow]", highlight=False)
        else:
            err.print("[yellow]interrupted before the first epoch finished; nothing to resume[/yellow]")
        raise typer.Exit(130) from None
    print_result(result)


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{float(v):.{digits}f}"


def print_result(result: Any) -> None:
    """The run's headline numbers: epochs, COCO mAP next to the backend's own, operating points."""
    m = result.metrics
    coco = m["coco"].get("coco", m["coco"])
    tr = result.train
    t = Table(title=f"trained: {result.run.root}", title_justify="left")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("epochs run", str(tr.get("epochs_run")))
    t.add_row("best epoch", str(tr.get("best_epoch")))
    t.add_row("train images/s", _f(tr.get("train_images_per_s"), 1))
    t.add_row("val mAP50-95 (COCO, pycocotools)", _f(coco.get("map50_95")))
    t.add_row("val mAP50 (COCO, pycocotools)", _f(coco.get("map50")))
    own = m.get("backend", {})
    if own.get("map50_95") is not None:
        t.add_row(f"val mAP50-95 ({own.get('name')}'s own val)", _f(own.get("map50_95")))
        t.add_row(f"val mAP50 ({own.get('name')}'s own val)", _f(own.get("map50")))
    dec = m["coco"].get("decisions") or {}
    from edgevision.evaluate.operating import rate_of

    for which, label in (("escape", "escape rate at operating points"),
                         ("false_reject", "false-reject rate at operating points")):
        r = rate_of(dec, which)
        if r is not None:
            t.add_row(label, r.text())
    cost = dec.get("expected_cost")
    if cost:
        t.add_row("expected cost per 1,000 parts", f"{cost['per_1000_parts']:.4g} (95% CI {cost['lower']:.4g}-"
                  f"{cost['upper']:.4g})")
    out.print(t)
    th = result.thresholds or {}
    if th.get("classes"):
        from edgevision.commands.eval import rule_label
        from edgevision.evaluate.operating import OperatingPoints, SelectionRule

        op = OperatingPoints.from_dict(th)
        rule = op.rule
        title = SelectionRule(**{k: v for k, v in rule.items() if k != "mode"}).describe() if rule else op.target
        tt = Table(title=f"operating points ({title})", title_justify="left")
        for col in ("class", "threshold", "recall", "precision", "rule"):
            tt.add_column(col, justify="left" if col in ("class", "rule") else "right")
        for name, v in op.classes.items():
            ach = op.achieved.get(name, {})
            tt.add_row(name, _f(v), _f(ach.get("recall")), _f(ach.get("precision")), rule_label(op, name))
        out.print(tt)
        for name in op.classes:
            rule_of = op.rules.get(name, {})
            if rule_of.get("rule") in ("f1", "default"):
                out.print(f"  {name}: {rule_of.get('text')}", highlight=False)
        if op.note:
            err.print(f"[yellow]operating points: {op.note}; the closest point was kept[/yellow]", highlight=False)
        if result.run.operating_curve.is_file():
            out.print(f"image-level trade-off on val: {result.run.operating_curve}"
                      + (f" and {result.run.operating_plot}" if result.run.operating_plot.is_file() else ""),
                      highlight=False)
    out.print(f"[green]run folder {result.run.root}[/green]: weights/best.pt, metrics.json, thresholds.json, "
              "model_card.md", highlight=False)
