"""``edgevision quantize MODEL.onnx --calib DATASET --out MODEL.int8.onnx [--target T] [--max-drop 0.01] ...``.

Static INT8 (QDQ) quantization of an FP32 model written by ``edgevision export``, calibrated on the
dataset's train split, then judged against FP32 on its val split (COCO mAP50-95 with a paired
bootstrap interval, escape / false-reject rates at the operating points, latencies); see
`edgevision.quantize.workflow`. Writes the INT8 model only when the accuracy gate passes, and a
report (JSON + markdown) always. Exit code 0, 1 when the gate fails, 2 for bad input (one line on
stderr, nothing written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import err, out, progress_bars


def command(
    model: Path = typer.Argument(..., help="The FP32 .onnx written by `edgevision export` (or adopt), or an Ultralytics ONNX export."),
    calib: Path = typer.Option(..., "--calib", help="Dataset with a train split (calibration) and a val split "
                               "(accuracy check)."),
    out_path: Path = typer.Option(..., "--out", help="The INT8 ONNX file to write (ends in .onnx)."),
    target: str | None = typer.Option(None, "--target", help="x86-vnni | x86-avx2 | arm64 | tensorrt: the box that "
                                      "will run the model (default: this CPU)."),
    n: int = typer.Option(200, "--n", help="Calibration images (capped at the train split's size)."),
    method: str = typer.Option("minmax", "--method", help="Calibration: minmax | entropy | percentile."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the calibration draw and of the bootstrap."),
    src_format: str = typer.Option("auto", "--from", help="Dataset format, or 'auto' to detect it."),
    recipe: str | None = typer.Option(None, "--recipe", help="Read the dataset through a public-dataset recipe."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Judge INT8 against FP32 on --split before writing."),
    split: str = typer.Option("val", "--split", help="The split accuracy is judged on (never train)."),
    max_drop: float = typer.Option(0.01, "--max-drop", help="Budget for the relative mAP50-95 drop (0.01 = 1%); the "
                                   "gate fails when the drop exceeds it and its bootstrap interval excludes zero."),
    accuracy_aware: bool = typer.Option(False, "--accuracy-aware", help="When the gate fails, keep the most "
                                        "sensitive layers float until it passes."),
    n_boot: int = typer.Option(1000, "--bootstrap", help="Bootstrap replicates for the interval of the drop."),
    threads: int | None = typer.Option(None, "--threads", help="onnxruntime threads for evaluation and timing "
                                       "(default: onnxruntime's)."),
    latency_runs: int = typer.Option(30, "--latency-runs", help="Timed calls per model, each model in a fresh "
                                     "process (0: skip timing)."),
    report: Path | None = typer.Option(None, "--report", help="The JSON report (default: OUT with .report.json; "
                                       "the markdown beside it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Quantize an exported model to INT8 for a target box, judged against FP32 before it is written."""
    from edgevision.quantize import TARGETS, host_target
    from edgevision.quantize.workflow import quantize_checked

    host = host_target()
    chosen = target or host
    how = "default: this CPU" if target is None else f"this CPU is {host}"
    out.print(f"target {chosen} ({how})" + (f": {TARGETS[chosen].summary}" if chosen in TARGETS else ""),
              highlight=False, markup=False)
    with progress_bars() as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        rep = quantize_checked(model, calib, out_path, target=target, n=n, method=method, seed=seed, fmt=src_format,
                               recipe=recipe, overwrite=overwrite, evaluate=evaluate, split=split, max_drop=max_drop,
                               accuracy_aware=accuracy_aware, n_boot=n_boot, threads=threads,
                               latency_runs=latency_runs, report=report, progress=progress)
    for w in rep.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    _print(rep)
    json_path = Path(report) if report is not None else out_path.with_suffix(".report.json")
    out.print(f"report: {json_path} and {json_path.with_suffix('.md')}", highlight=False, markup=False)
    if rep.verdict == "fail":
        err.print(f"[red]error:[/red] {out_path}: not written: {rep.reason}; see {json_path} (try --accuracy-aware, "
                  "--method entropy or percentile, or a larger --n)", highlight=False)
        raise typer.Exit(1)
    out.print(f"[green]wrote {out_path}[/green] ({rep.verdict})", highlight=False)


def _f(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _print(rep: Any) -> None:
    from edgevision.quantize.workflow import cost_text, rate_text

    q = rep.quantization
    t = Table(title=f"{rep.model} -> {rep.out}", title_justify="left", show_header=False)
    t.add_column("")
    t.add_column("")
    ex = q.get("excluded_nodes", [])
    extra = q.get("kept_float_for_accuracy") or {}
    rows = [
        ("target", f"{rep.target} (built on {rep.host})"),
        ("types", f"activations {q['activations']}, weights {q['weights']} per-channel"
                  f"{', reduce-range' if q['reduce_range'] else ''}{', symmetric' if q['symmetric'] else ''}"),
        ("calibration", f"{q['n']} train images ({q['method']}, seed {q['seed']})"),
        ("kept float", f"{len(ex) - len(extra)} head nodes: {', '.join(ex[:6])}{' ...' if len(ex) > 6 else ''}"
                       + (f"; {len(extra)} more for accuracy" if extra else "")),
    ]
    rows += [(f"check {k}", v) for k, v in rep.checks.items()]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    f, i = rep.fp32, rep.int8
    t = Table(title=(f"FP32 vs INT8 on split '{rep.split}' ({rep.images} images)" if rep.split else "FP32 vs INT8"),
              title_justify="left")
    for col in ("", "FP32", "INT8"):
        t.add_column(col, justify="left" if not col else "right")
    t.add_row("size MB", _f(f.size_bytes / 1e6, ".2f"), _f(i.size_bytes / 1e6, ".2f"))
    if rep.split:
        t.add_row("mAP50-95", _f(f.map50_95), _f(i.map50_95))
        t.add_row("mAP50", _f(f.map50), _f(i.map50))
        t.add_row("escape rate", rate_text(f.decisions, "escape"), rate_text(i.decisions, "escape"))
        t.add_row("false-reject rate", rate_text(f.decisions, "false_reject"), rate_text(i.decisions, "false_reject"))
        c = f.decisions.get("expected_cost") or i.decisions.get("expected_cost")
        if c:
            t.add_row(f"expected cost / 1,000 parts (escape {c['cost_escape']:g}, false reject "
                      f"{c['cost_false_reject']:g} per part, defect rate {c['defect_rate']:.3g})",
                      cost_text(f.decisions), cost_text(i.decisions))
    if f.latency and i.latency:
        t.add_row("latency p50 ms (whole call)", _f(f.latency["pipeline_ms"]["p50"], ".1f"),
                  _f(i.latency["pipeline_ms"]["p50"], ".1f"))
        t.add_row("latency p50 ms (session.run)", _f(f.latency["session_ms"]["p50"], ".1f"),
                  _f(i.latency["session_ms"]["p50"], ".1f"))
    out.print(t)
    if rep.bootstrap:
        b = rep.bootstrap
        ci = b.get("rel_drop_ci")
        out.print(f"relative mAP50-95 drop {_f(b.get('rel_drop'), '.2%')} ({b['level']:.0%} interval "
                  f"{_f(ci[0], '.2%') if ci else '-'} .. {_f(ci[1], '.2%') if ci else '-'}, paired bootstrap over "
                  f"{b['n_images']} images); budget {rep.max_drop:.2%}", highlight=False, markup=False)
    if rep.steps:
        last = rep.steps[-1]
        out.print(f"accuracy-aware: {len(last.layers)} layer(s) kept float: {', '.join(last.layers) or 'none'}",
                  highlight=False, markup=False)
    verdict = {"pass": "[green]PASS[/green]", "fail": "[red]FAIL[/red]"}.get(rep.verdict, rep.verdict)
    out.print(f"verdict {verdict}: {rep.reason}", highlight=False)
