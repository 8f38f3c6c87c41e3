"""The ``edgevision`` command line: a thin typer layer over the library.

The library logs; this module presents (rich tables, one-line errors). Every `EdgeVisionError`
becomes a single red line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgevision import __version__
from edgevision.commands._present import (
    check_choice,
    class_table,
    err,
    out,
    print_findings,
    print_losses,
    summary_table,
)

app = typer.Typer(
    name="edgevision",
    help="EdgeVision: line images in any annotation format -> trained, quantized ONNX detector on a factory box.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
recipes_app = typer.Typer(help="Public-dataset recipes (converters/*.yaml).", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")

EXIT_BAD_INPUT = 2


def _version(value: bool) -> None:
    if value:
        out.print(f"edgevision {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details (findings, detections)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs from ``--option``; values are parsed as YAML (numbers, lists, maps), bounded
    (`edgevision.core.safeload.loads_yaml`)."""
    from edgevision.core.errors import ConfigError, short_text
    from edgevision.core.safeload import loads_yaml

    opts: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--option '{short_text(pair, 100)}': expected key=value, e.g. --option min_area=10")
        key, value = pair.split("=", 1)
        opts[key.strip()] = loads_yaml(value, f"--option {short_text(key.strip(), 60)}")
    return opts


@app.command()
def convert(
    src: Path = typer.Argument(..., help="Annotation file or dataset folder."),
    dst: Path = typer.Argument(..., help="Output folder (created atomically; must not exist unless --overwrite)."),
    to: str = typer.Option(..., "--to", help="Output format: yolo, coco or voc."),
    src_format: str = typer.Option("auto", "--from", help="Input format, or 'auto' to detect it."),
    recipe: str | None = typer.Option(None, "--recipe", help="Public-dataset recipe (see 'edgevision recipes list')."),
    option: list[str] = typer.Option([], "--option", "-o", help="Reader option key=value (repeatable)."),
    images: str = typer.Option("copy", "--images", help="copy | symlink | none: what to do with image files."),
    on_error: str = typer.Option("fail", "--on-error", help="fail | skip: stop at the first bad item or skip it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it exists."),
) -> None:
    """Convert a dataset between annotation formats through the canonical model."""
    from edgevision.convert import convert as do_convert

    check_choice("--images", images, ("copy", "symlink", "none"))
    check_choice("--on-error", on_error, ("fail", "skip"))
    if recipe is not None:
        from edgevision.recipes import get_recipe

        warning = get_recipe(recipe).licence_warning()
        if warning:
            err.print(f"[yellow]licence: {warning}[/yellow]", highlight=False)
    res = do_convert(
        src, dst, to=to, src_format=src_format, recipe=recipe, options=_parse_options(option),
        images=images, on_error=on_error, overwrite=overwrite,  # type: ignore[arg-type]
    )
    rr = res.read
    if rr.detection is not None:
        out.print(f"detected format [bold]{rr.format}[/bold]: {rr.detection.reason}", highlight=False)
    print_findings(rr.report)
    print_losses(res.losses, res.to)
    out.print(summary_table(f"{src} ({rr.format}) -> {dst} ({res.to})", rr.dataset))
    out.print(class_table(rr.dataset))
    out.print(f"[green]wrote {res.to} dataset to {dst}[/green]", highlight=False)


@app.command()
def synth(
    dst: Path = typer.Argument(..., help="Output dataset folder."),
    n: int = typer.Option(300, "--n", min=1, help="Number of images."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same pixels and labels."),
    imgsz: int = typer.Option(320, "--imgsz", min=64, help="Image side in pixels."),
    to: str = typer.Option("yolo", "--to", help="Output format: yolo, coco or voc."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it exists."),
) -> None:
    """Generate the built-in sample: rail-track scenes and steel patches with labelled defects."""
    from edgevision.data.synth import write_synth

    ds = write_synth(dst, n=n, seed=seed, imgsz=imgsz, to=to, overwrite=overwrite)
    out.print(summary_table(f"synthetic sample -> {dst} ({to})", ds))
    out.print(class_table(ds))


@app.command()
def demo(
    work: Path = typer.Option(Path("edgevision-demo"), "--work", help="Folder for the demo's outputs (its stage folders are replaced)."),
    n: int | None = typer.Option(None, "--n", min=10, help="Sample images to generate (default 200; 40 with --quick)."),
    seed: int = typer.Option(0, "--seed", help="Sample, split and training seed."),
    quick: bool = typer.Option(False, "--quick", help="Every stage in about two minutes: 1 epoch at 128 px, short "
                               "benchmark and soak (the model learns nothing; for checking an install)."),
    data_only: bool = typer.Option(False, "--data-only", help="Only the data stages (synth, validate, stats, split, "
                                   "convert round trip): what a base install can run."),
) -> None:
    """The whole pipeline on the built-in sample: synth -> validate -> split -> train -> eval -> export ->
    quantize -> bench -> reliability gate (train, export and quantize need the train and onnxruntime extras)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgevision.core.errors import ConfigError
    from edgevision.demo import model_stages_missing, run_demo, run_model_stages

    if not data_only:
        missing = model_stages_missing()
        if missing:
            raise ConfigError(f"the demo's model stages need {', '.join(missing)} (not installed): run `make demo`, "
                              "which installs them, or `edgevision demo --data-only` for the data stages")
    n = n if n is not None else (40 if quick else 200)
    with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=True) as bars:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done)

        result = run_demo(work, n=n, seed=seed, log=lambda msg: bars.console.print(msg, highlight=False),
                          progress=progress)
    st = result.stats.overall
    sizes = st.box_sizes
    out.print(
        f"sample: {result.stats.images} images ({st.background_images} defect-free), {result.stats.objects} objects, "
        f"{result.stats.classes} classes; boxes small/medium/large {sizes['small']}/{sizes['medium']}/{sizes['large']}",
        highlight=False,
    )
    v = result.validation
    out.print(f"validate: {v['error']} errors, {v['warning']} warnings, {v['info']} notes", highlight=False)
    out.print("split: " + ", ".join(f"{k} {c}" for k, c in result.split.items())
              + (f"; not reachable: {result.unreachable}" if result.unreachable else "; every class in every split"),
              highlight=False)
    t = Table(title="convert: round trip through formats", title_justify="left")
    for col in ("stage", "format", "images", "objects", "classes", "max box error (px)"):
        t.add_column(col, justify="left" if col in ("stage", "format") else "right")
    for s in result.stages:
        t.add_row(s.name, s.format, str(s.images), str(s.objects), str(s.classes), f"{s.max_box_error:.2e}")
    out.print(t)
    if result.ok and not data_only:
        with out.status("model stages (each an `edgevision` command; see commands.log)"):
            run_model_stages(result, quick=quick, seed=seed, log=lambda msg: out.print(msg, highlight=False))
        _print_model_stages(result, quick)
    if not result.ok:
        err.print(f"[red]demo: {result.problem}[/red]", highlight=False)
        raise typer.Exit(1)
    verdict = result.numbers.get("verdict")
    if verdict and verdict != "PASS":
        out.print(f"[yellow]demo finished[/yellow]: every stage ran (outputs in {result.work}), but the model did "
                  f"[bold]not[/bold] pass the release gate ({', '.join(result.numbers['failed'])})"
                  + (": expected with --quick, whose model learns nothing" if quick else
                     ": it is not ready for a line; the reasons and fixes are listed above"), highlight=False)
    else:
        out.print(f"[green]demo OK[/green]: every stage ran and the model passed the release gate; outputs in "
                  f"{result.work}" if verdict else f"[green]demo OK[/green]: outputs in {result.work}", highlight=False)
    if "report" in result.numbers:
        out.print(f"reliability report: [bold]{result.numbers['report']}[/bold] (benchmark: "
                  f"{result.numbers['bench_report']})", highlight=False)


def _print_model_stages(result: Any, quick: bool) -> None:
    nb = result.numbers
    t = Table(title="model stages", title_justify="left")
    for col in ("stage", "exit", "seconds", "command"):
        t.add_column(col)
    for s in result.model_stages:
        t.add_row(s["stage"], str(s["exit"]), f"{s['seconds']:.0f}", s["command"])
    out.print(t)
    if nb.get("map50") is not None:
        good = nb["map50"] >= 0.3
        out.print(f"trained model on the test split: mAP50 {nb['map50']:.3f}, mAP50-95 {nb['map50_95']:.3f}"
                  + ("" if good or quick else " [yellow](below 0.3: the gate below means little)[/yellow]"),
                  highlight=False)
    if nb.get("quantize_verdict"):
        out.print(f"INT8: {nb['quantize_verdict']} ({nb.get('quantize_reason')})", highlight=False)
    for name, p in (nb.get("latency") or {}).items():
        out.print(f"{name}: p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms" if p.get("p99") is not None
                  else f"{name}: p50 {p['p50']:.2f} ms", highlight=False)
    if nb.get("operating"):
        out.print("operating points" + (f" ({nb['rule']})" if nb.get("rule") else "") + ":", highlight=False)
        for name, o in nb["operating"].items():
            thr = "-" if o["threshold"] is None else f"{o['threshold']:.3g}"
            out.print(f"  {name} {thr}: {o['rule'] or 'defaults.conf'}", highlight=False)
    if nb.get("decisions"):
        out.print(f"on the test split at these operating points: {nb['decisions']}", highlight=False)
    if nb.get("noise_detections") is not None:
        out.print(f"a random-noise image: {nb['noise_detections']} detection(s) at the operating points"
                  + (" (accepted)" if nb["noise_detections"] == 0 else " (rejected)"), highlight=False)
    if nb.get("verdict"):
        colour = "green" if nb["verdict"] == "PASS" else "red"
        out.print(f"release gate: [{colour}]{nb['verdict']}[/{colour}]"
                  + (f" (failed: {', '.join(nb['failed'])})" if nb["failed"] else "")
                  + (" - expected with --quick: the model learned nothing" if quick and nb["verdict"] != "PASS" else ""),
                  highlight=False)
        for line in nb.get("failed_explained", nb.get("failed_details", [])) if not quick else []:
            out.print(f"  {line}", highlight=False)


@app.command("formats")
def formats_cmd() -> None:
    """List the annotation formats EdgeVision reads and writes."""
    from edgevision.formats import get_format, list_formats

    t = Table(title="formats", title_justify="left")
    for col in ("name", "read", "write", "description"):
        t.add_column(col)
    for name in list_formats():
        f = get_format(name)
        t.add_row(name, "yes" if f.can_read else "", "yes" if f.can_write else "", f.description)
    out.print(t)


@recipes_app.command("list")
def recipes_list() -> None:
    """List the public-dataset recipes, their reader and licence."""
    from edgevision.recipes import get_recipe, list_recipes

    t = Table(title="recipes", title_justify="left")
    for col in ("name", "reader", "licence", "commercial use", "title"):
        t.add_column(col)
    for name in list_recipes():
        r = get_recipe(name)
        t.add_row(name, r.reader, str(r.licence), "yes" if r.commercial_use else "[yellow]no[/yellow]", r.title)
    out.print(t)


@recipes_app.command("show")
def recipes_show(name: str = typer.Argument(..., help="Recipe name.")) -> None:
    """Print one recipe: reader options, classes, layout, quirks, licence and citation."""
    import yaml

    from edgevision.recipes import get_recipe

    out.print(yaml.safe_dump(get_recipe(name).model_dump(exclude_none=True), sort_keys=False, allow_unicode=True),
              highlight=False, markup=False)


@app.command()
def doctor() -> None:
    """Check the installation: one headless OpenCV, one onnxruntime flavour, torch pair, versions."""
    from edgevision.doctor import diagnose

    checks = diagnose()
    t = Table(title="edgevision doctor", title_justify="left")
    for col in ("check", "ok", "detail", "fix"):
        t.add_column(col)
    for c in checks:
        t.add_row(c.name, "[green]yes[/green]" if c.ok else "[red]NO[/red]", c.detail, c.fix or "")
    out.print(t)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


DATA_COMMANDS = ("validate", "stats", "split", "tile", "remap", "train", "eval", "export", "adopt", "predict",
                 "quantize", "serve", "reliability", "licences")
"""Dataset tools and training, one module each in `edgevision.commands` exposing a typer function ``command``."""


def _register_data_commands() -> None:
    import importlib
    import importlib.util

    for name in DATA_COMMANDS:
        module = f"edgevision.commands.{name}"
        if importlib.util.find_spec(module) is not None:  # tests/test_cli.py checks that all are there
            app.command(name)(importlib.import_module(module).command)
    from edgevision.commands.bench import app as bench_app
    from edgevision.commands.inspect import app as inspect_app
    from edgevision.commands.line import app as line_app
    from edgevision.commands.weights import app as weights_app

    app.add_typer(weights_app, name="weights")
    app.add_typer(bench_app, name="bench")
    app.add_typer(inspect_app, name="inspect")
    app.add_typer(line_app, name="line")


_register_data_commands()


def main() -> None:
    """Console-script entry point: run the app, turning EdgeVision errors into one line.

    SIGINT, SIGTERM and SIGHUP unwind the command (temporary outputs are removed, see
    `edgevision.core.signals`) and end it with one line and exit code 128 + signal (130, 143, 129).
    """
    from edgevision.core.errors import EdgeVisionError
    from edgevision.core.signals import interrupt_on_signals, interruption

    sys.argv[1:] = bare_ray(sys.argv[1:])
    try:
        with interrupt_on_signals():
            app()  # standalone: typer handles usage errors and exit codes itself
    except EdgeVisionError as e:
        _error_line(e)
    except OSError as e:  # a path the system refused outside a reader (an output folder it may not write)
        if e.filename is None:
            raise
        from edgevision.core.errors import FileAccessError

        _error_line(FileAccessError.from_os_error(e, writing=None))
    except SystemExit as e:  # typer turns KeyboardInterrupt (and so Interrupted) into Exit(130)
        sig = interruption(e)
        if sig is None or e.code not in (130, sig.exit_code):
            raise
        _interrupted(sig.signal_name, sig.exit_code)
    except KeyboardInterrupt as e:
        sig = interruption(e)
        _interrupted(sig.signal_name if sig else "SIGINT", sig.exit_code if sig else 130)


def bare_ray(args: list[str]) -> list[str]:
    """``--ray`` given without an address (last, or followed by another option) means ``--ray local``."""
    out: list[str] = []
    for i, a in enumerate(args):
        out.append(a)
        if a == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("local")
    return out


def _error_line(e: Exception) -> None:
    """Print an error as one red line (at most `MAX_ERROR_LINE` characters) and exit with 2."""
    from rich.markup import escape

    from edgevision.core.errors import short_text

    err.print(f"[red]error:[/red] {escape(short_text(str(e), MAX_ERROR_LINE))}", highlight=False)  # "[plots]" is text
    sys.exit(EXIT_BAD_INPUT)


MAX_ERROR_LINE = 500
"""Longest error message printed: values echoed from a hostile file are cut (head ... tail)."""


def _interrupted(name: str, code: int) -> None:
    err.print(f"[red]interrupted[/red] by {name}", highlight=False)
    sys.exit(code)

if __name__ == "__main__":
    main()
