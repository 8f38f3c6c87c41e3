"""``edgevision bench MODEL... --data DATASET --out DIR`` and ``edgevision bench compare OLD.json NEW.json``.

``bench MODEL...`` is short for ``bench run MODEL...``. MODEL: an ONNX file (FP32, FP16 or INT8) run by
the torch-free runtime, or a ``.pt`` / run folder run by the training backend. Every model x provider x
threads x batch is timed in its own fresh process; DIR receives ``bench.json`` (schema
``edgevision.bench/1``), ``bench.md`` and ``bench.html`` (self-contained, with plots), whole or not at
all. ``compare`` exits 1 when NEW regresses beyond the tolerance and beyond noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision.commands._present import default_subcommand_group, err, out, progress_bars

app = typer.Typer(cls=default_subcommand_group("run"), no_args_is_help=True, add_completion=False,
                  help="Latency (p50/p90/p99), throughput, memory and accuracy of models on a dataset; compare runs.")


def _ints(text: str | None, what: str) -> list[int | None]:
    from edgevision.core.errors import ConfigError

    if text is None or text.strip().lower() in ("", "all"):
        return [None]
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text}: expected comma-separated integers, e.g. 1,2") from None
    if not vals or any(v < 1 for v in vals):
        raise ConfigError(f"{what} {text}: expected positive integers, e.g. 1,2")
    return list(dict.fromkeys(vals))


@app.command("run")
def run(
    models: list[Path] = typer.Argument(..., help="ONNX files, .pt checkpoints or run folders."),
    data: Path = typer.Option(..., "--data", help="Dataset whose split the models are timed and scored on."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (bench.json, bench.md, bench.html)."),
    split: str = typer.Option("val", "--split", help="Split to use ('all' for every image)."),
    src_format: str = typer.Option("auto", "--from", help="Dataset format, or 'auto'."),
    providers: str | None = typer.Option(None, "--providers", help="onnxruntime providers to compare, comma-separated "
                                         "(each with CPU as fallback), e.g. cpu,cuda (default: the best installed)."),
    threads: str | None = typer.Option(None, "--threads", help="Thread counts to compare, e.g. 1,2 (default: all cores)."),
    batch: str = typer.Option("1", "--batch", help="Batch sizes to compare, e.g. 1,4 (>1 needs a dynamic-batch ONNX)."),
    samples: int = typer.Option(700, "--samples", min=10, help="Timed calls per configuration (a p99 needs >= 662)."),
    warmup: int = typer.Option(20, "--warmup", min=0, help="Untimed calls first."),
    throughput_images: int = typer.Option(200, "--throughput-images", min=1, help="Images for offline throughput."),
    accuracy: bool = typer.Option(True, "--accuracy/--no-accuracy", help="Score COCO mAP and escape / false-reject."),
    device: str = typer.Option("cpu", "--device", help="Device for .pt / run folders: cpu, 0, ..."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out when it exists."),
) -> None:
    """Benchmark models: latency percentiles, throughput, load time, memory, size, accuracy; JSON + markdown + HTML."""
    from edgevision.bench.run import run_bench

    thr = _ints(threads, "--threads")
    batches = [b or 1 for b in _ints(batch, "--batch")]
    provs = [p.strip() for p in providers.split(",") if p.strip()] if providers else None
    with progress_bars() as bars:
        task = bars.add_task("bench", total=1)

        def progress(stage: str, done: int, total: int) -> None:
            bars.update(task, description=stage, completed=done, total=total)

        rep = run_bench(models, data, out_dir, split=split, fmt=src_format, providers=provs, threads=thr,
                        batches=batches, samples=samples, warmup=warmup, throughput_images=throughput_images,
                        accuracy=accuracy, device=device, overwrite=overwrite, progress=progress)
    t = Table(title=f"latency per call, ms ({samples} samples; whole pipeline)", title_justify="left")
    for col in ("model", "provider", "threads", "batch", "p50", "p90", "p99", "max", "run p50", "images/s", "RSS MB"):
        t.add_column(col, justify="left" if col in ("model", "provider") else "right")

    def f(v: Any, d: int = 2) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    for m in rep.models:
        for c in m.configs:
            p, s = c.pipeline, c.session
            if c.skipped or p is None:
                t.add_row(m.name, c.provider, str(c.threads or "all"), str(c.batch), *(["-"] * 6), c.skipped or "")
                continue
            t.add_row(m.name, c.provider, str(c.threads or "all"), str(c.batch), f(p.p50), f(p.p90), f(p.p99), f(p.max),
                      f(s.p50) if s else "-", f(c.throughput_ips, 1), f(c.peak_rss_mb, 0))
    out.print(t)
    if accuracy:
        out.print(accuracy_table(rep))
    out.print(f"[green]wrote[/green] {out_dir / 'bench.json'}, bench.md and bench.html", highlight=False)


def accuracy_table(rep: Any) -> Table:
    """The accuracy table of a `BenchReport`: mAP, and the escape and false-reject rates with their counts and
    exact 95% intervals (plus the expected cost per 1,000 parts when the operating points were priced)."""
    from edgevision.bench.report import cost_text

    priced = any(acc.expected_cost is not None for m in rep.models for acc in m.accuracy)
    cols = ["model", "provider", "mAP50-95", "mAP50", "escape rate", "false-reject rate"]
    cols += ["expected cost per 1,000 parts"] if priced else []
    a = Table(title="accuracy (rates: count and exact 95% interval)", title_justify="left")
    for col in [*cols, "thresholds"]:
        a.add_column(col)

    def f(v: Any, d: int = 3) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    for m in rep.models:
        for acc in m.accuracy:
            cells = [m.name, acc.provider, f(acc.map50_95), f(acc.map50), acc.rate("escape").text(),
                     acc.rate("false_reject").text()]
            cells += [cost_text(acc.expected_cost, costs=False)] if priced else []  # the costs: in thresholds
            a.add_row(*cells, acc.thresholds)
    return a


@app.command("compare")
def compare(
    old: Path = typer.Argument(..., help="The reference bench.json (or its folder)."),
    new: Path = typer.Argument(..., help="The candidate bench.json (or its folder)."),
    tolerance: float = typer.Option(0.05, "--tolerance", min=0.0, help="Relative latency change tolerated (0.05 = 5%)."),
    map_tolerance: float = typer.Option(0.01, "--map-tolerance", min=0.0, help="Absolute mAP50-95 drop tolerated."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the comparison here."),
) -> None:
    """Flag regressions of NEW against OLD: a bootstrap interval of the change that excludes zero and passes the tolerance."""
    import json

    from edgevision.bench.compare import compare_reports
    from edgevision.bench.report import BenchReport
    from edgevision.core.errors import ConfigError

    def load(p: Path) -> BenchReport:
        f = p / "bench.json" if p.is_dir() else p
        if not f.is_file():
            raise ConfigError(f"{p}: no bench.json there; give a file or folder written by `edgevision bench`")
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{f}: not a JSON benchmark report ({e.__class__.__name__})") from None
        if not isinstance(doc, dict) or doc.get("schema") != "edgevision.bench/1":
            raise ConfigError(f"{f}: schema {doc.get('schema') if isinstance(doc, dict) else None!r} is not "
                              "edgevision.bench/1; give a report written by `edgevision bench`")
        try:
            return BenchReport.from_dict(doc)
        except Exception as e:  # pydantic.ValidationError
            raise ConfigError(f"{f}: not a valid edgevision.bench/1 report ({' '.join(str(e).split())[:200]})") from None

    comp = compare_reports(load(old), load(new), tolerance=tolerance, map_tolerance=map_tolerance)
    for w in comp.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    t = Table(title=f"{new} against {old}", title_justify="left")
    for col in ("model", "config", "metric", "old", "new", "change", "verdict"):
        t.add_column(col)
    colour = {"regression": "red", "improvement": "green"}
    for c in comp.changes:
        v = f"[{colour[c.verdict]}]{c.verdict}[/{colour[c.verdict]}]" if c.verdict in colour else c.verdict
        change = "-" if c.rel_change is None else (f"{c.rel_change:+.4f}" if c.metric == "mAP50-95"
                                                   else f"{c.rel_change:+.1%}")
        t.add_row(c.model, c.config, c.metric, "-" if c.old is None else f"{c.old:.3f}",
                  "-" if c.new is None else f"{c.new:.3f}", change, v)
    out.print(t)
    if json_out is not None:
        json_out.write_text(json.dumps(comp.to_dict(), indent=1) + "\n", encoding="utf-8")
    if comp.regressions:
        for c in comp.regressions:
            err.print(f"[red]regression:[/red] {c.model} {c.config} {c.metric}: {c.why}", highlight=False)
        raise typer.Exit(1)
    out.print("[green]no regression[/green]", highlight=False)
