"""``edgevision reliability MODEL --data DATASET --out DIR [--suite ...] [--gate FILE|NAME] [--reference REF]``.

Runs the suites (soak, robustness, determinism, bad input, concurrency) on an ONNX model, measures its
latency (clean process, p99 from >= 662 calls) and accuracy on the split, judges the gate (default:
``configs/gate/default.yaml``, relative to ``--reference``), and writes ``reliability.json`` /
``.md`` / ``.html`` and ``junit.xml`` to DIR. Exit 0 PASS, 1 FAIL, 2 bad arguments (one line).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgevision.commands._present import out, progress_bars


def command(
    model: Path = typer.Argument(..., help="The ONNX model to judge (e.g. model.int8.onnx)."),
    data: Path = typer.Option(..., "--data", help="Dataset whose split the model is judged on."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (reliability.json/.md/.html, junit.xml)."),
    suite: str | None = typer.Option(None, "--suite", help="Suites, comma-separated: soak, robustness, determinism, "
                                     "bad-input, concurrency (default: all)."),
    gate: str | None = typer.Option(None, "--gate", help="Gate YAML file, or a shipped gate by name (default: "
                                    "'default', which judges against --reference)."),
    reference: Path | None = typer.Option(None, "--reference", help="Reference model for relative gate keys "
                                          "(usually the FP32 export of the same weights)."),
    split: str = typer.Option("val", "--split", help="Split to judge on ('all' for every image)."),
    src_format: str = typer.Option("auto", "--from", help="Dataset format, or 'auto'."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="onnxruntime threads (default: all cores)."),
    providers: str | None = typer.Option(None, "--providers", help="onnxruntime execution providers in order of "
                                         "preference, e.g. tensorrt,cuda (default: CPU; a provider that cannot be "
                                         "used here is reported in one line)."),
    soak_seconds: float = typer.Option(60.0, "--soak-seconds", min=1.0, help="Soak duration."),
    soak_count: int | None = typer.Option(None, "--soak-count", min=10, help="Soak this many calls instead."),
    robustness_images: int = typer.Option(50, "--robustness-images", min=1, help="Images per corruption and severity."),
    corruptions: str | None = typer.Option(None, "--corruptions", help="Corruptions, comma-separated (default: all "
                                           "nine)."),
    severities: str = typer.Option("1,2,3,4,5", "--severities", help="Severities, comma-separated, 1-5."),
    latency_samples: int = typer.Option(700, "--latency-samples", min=662, help="Timed calls for the p99."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corruptions."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out when it exists."),
) -> None:
    """Soak, robustness, determinism, bad-input and concurrency suites, judged by a release gate: PASS / FAIL."""
    from edgevision.core.errors import ConfigError
    from edgevision.reliability.gate import resolve_gate
    from edgevision.reliability.run import run_reliability

    g = resolve_gate(gate)
    try:
        sev = [int(s) for s in severities.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--severities {severities}: expected integers 1-5, e.g. 1,3,5") from None
    suites = [s for s in suite.split(",") if s.strip()] if suite else None
    corrs = [c.strip() for c in corruptions.split(",") if c.strip()] if corruptions else None
    if suites and "robustness" in [s.strip() for s in suites] or suites is None:
        import importlib.util

        if importlib.util.find_spec("albumentations") is None:
            raise ConfigError("the robustness suite needs albumentations (pip install 'albumentations>=2.0.5,<2.1', "
                              "or the train extra); or leave it out with --suite soak,determinism,bad-input,concurrency")
    with progress_bars() as bars:
        task = bars.add_task("reliability", total=1)

        def progress(stage: str, done: int, total: int) -> None:
            bars.update(task, description=stage, completed=done, total=total)

        rep = run_reliability(model, data, out_dir, gate=g, reference=reference, suites=suites, split=split,
                              fmt=src_format, threads=threads, soak_seconds=soak_seconds, soak_count=soak_count,
                              latency_samples=latency_samples, robustness_images=robustness_images,
                              corruptions=corrs, severities=sev, seed=seed, overwrite=overwrite,
                              providers=providers, progress=progress)
    t = Table(title=f"gate '{g.name}'", title_justify="left")
    for col in ("check", "result", "detail"):
        t.add_column(col)
    for c in rep.checks:
        t.add_row(c.key, "[green]PASS[/green]" if c.passed else "[red]FAIL[/red]", c.detail)
    out.print(t)
    s = Table(title="suites", title_justify="left")
    for col in ("suite", "status", "seconds", "first finding"):
        s.add_column(col)
    for name, r in rep.suites.items():
        s.add_row(name, r.status, f"{r.seconds:.1f}", r.findings[0] if r.findings else "")
    out.print(s)
    from rich.markup import escape

    from edgevision.evaluate.operating import decisions_summary

    acc = rep.accuracy["model"]
    out.print(f"image-level decisions at {escape(str(acc.get('thresholds')))}: {escape(decisions_summary(acc))}",
              highlight=False)
    colour = "green" if rep.verdict == "PASS" else "red"
    out.print(f"[{colour}]{rep.verdict}[/{colour}]: report {out_dir / 'reliability.html'} (JSON, markdown and "
              "junit.xml beside it)", highlight=False)
    if rep.verdict != "PASS":
        raise typer.Exit(1)
