"""What the CLI shows: the two consoles and the tables every command shares. CLI layer only."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one-line errors stay one line


def summary_table(title: str, ds: Any) -> Table:
    """Per-split images / background images / objects, then objects per class."""
    t = Table(title=title, title_justify="left")
    t.add_column("split")
    t.add_column("images", justify="right")
    t.add_column("background", justify="right")
    t.add_column("objects", justify="right")
    for s in ds.splits or [None]:
        recs = ds.split(s)
        t.add_row(s or "(none)", str(len(recs)), str(sum(r.is_background for r in recs)), str(sum(len(r) for r in recs)))
    if len(ds.splits) > 1:
        t.add_row("all", str(len(ds)), str(sum(r.is_background for r in ds.images)), str(ds.num_objects), style="bold")
    return t


def class_table(ds: Any) -> Table:
    t = Table(title="objects per class", title_justify="left")
    t.add_column("id", justify="right")
    t.add_column("class")
    t.add_column("objects", justify="right")
    for i, (name, n) in enumerate(ds.class_counts().items()):
        t.add_row(str(i), name, str(n))
    return t


def print_findings(report: Any) -> None:
    skipped = report.skipped
    if skipped:
        err.print(f"[yellow]skipped {len(skipped)} item(s) (--on-error skip):[/yellow]")
        for f in skipped[:20]:
            err.print(f"  {f.where}: {f.message}", markup=False, highlight=False)
        if len(skipped) > 20:
            err.print(f"  ... and {len(skipped) - 20} more")
    notes = [f for f in report.findings if not f.skipped]
    if notes:
        t = Table(title="findings (handled)", title_justify="left")
        t.add_column("severity")
        t.add_column("code")
        t.add_column("count", justify="right")
        t.add_column("example")
        by_code: dict[tuple[str, str], list[Any]] = {}
        for f in notes:
            by_code.setdefault((f.severity, f.code), []).append(f)
        for (sev, code), fs in sorted(by_code.items()):
            t.add_row(sev, code, str(len(fs)), str(fs[0]))
        err.print(t)


def print_losses(losses: Any, to: str) -> None:
    if not losses:
        return
    t = Table(title=f"not representable in {to} (counted, not silently dropped)", title_justify="left")
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_column("example")
    for kind, n in losses.counts.most_common():
        t.add_row(kind, str(n), losses.examples.get(kind, ""))
    err.print(t)


def output_format(to: str | None, read_format: str) -> str:
    """The format a dataset tool writes: ``--to`` when given, else the input's format if writable.

    Raises:
        ConfigError: the input format cannot be written and no ``--to`` was given.
    """
    from edgevision.core.errors import ConfigError
    from edgevision.formats import get_format, list_formats

    if to is not None:
        return get_format(to).name
    if get_format(read_format).can_write:
        return read_format
    raise ConfigError(f"'{read_format}' cannot be written; pass --to with one of: {', '.join(list_formats(writable=True))}")


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a one-line ConfigError when an option's value is not one of ``choices``."""
    from edgevision.core.errors import ConfigError

    if value not in choices:
        expected = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise ConfigError(f"{flag}: expected {expected}, got '{value}'")


def write_json_option(path: Any, data: Any, what: str, flag: str = "--json") -> None:
    """Write ``data`` as indented JSON for a ``--json OUT`` option and say so.

    Raises:
        ConfigError: the file cannot be written (one line naming the option and the path).
    """
    import json
    from pathlib import Path

    from edgevision.core.errors import ConfigError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot write ({e.strerror})") from e
    out.print(f"wrote {what} to {path}", highlight=False)


def progress_bars(*columns: Any, hide: bool = False) -> Any:
    """Transient rich progress bars on stderr, drawn only when stderr is a terminal (a redirected stderr gets
    nothing, so a one-line error stays one line) and not when ``hide``. Columns default to description, bar,
    done/total and elapsed time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = columns or (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*cols, console=err, transient=True, disable=hide or not err.is_terminal)


def predict_with_progress(predictor: Any, records: list[Any], max_det: int) -> list[Any]:
    """``predictor`` (`edgevision.models.Predictor`) over ``records`` at `edgevision.models.LOW_CONF`, with a
    progress bar (eval, inspect)."""
    from rich.progress import Progress

    from edgevision.models import LOW_CONF, predict_records

    with progress_bars(*Progress.get_default_columns()) as bar:
        task = bar.add_task("predicting", total=len(records))
        return predict_records(predictor, records, conf=LOW_CONF, max_det=max_det,
                               progress=lambda done, total: bar.update(task, completed=done))


def default_subcommand_group(default: str) -> type:
    """A typer group class where ``GROUP ARGS`` means ``GROUP default ARGS`` unless ARGS starts with a
    subcommand or --help (``edgevision bench MODEL`` is ``bench run MODEL``)."""
    from typer.core import TyperGroup

    class _DefaultGroup(TyperGroup):
        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
                args = [default, *args]
            return super().parse_args(ctx, args)

    return _DefaultGroup
