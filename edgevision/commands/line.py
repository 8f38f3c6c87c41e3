"""``edgevision line CONFIG.yaml``: run the line; ``edgevision line report DB``: what it decided.

``line report`` reads an SQLite file (``DB``) or a PostgreSQL URL; a URL with a password never sits on the
command line (process lists and shell histories show it): ``--db-env VAR`` or ``--db-file FILE`` give it.

``line`` (``line run``) inspects every image its sources deliver with the model's operating points, records
each part before publishing its decision to the configured sinks, serves ``/metrics`` and ``/healthz``,
and stops cleanly on SIGTERM / SIGINT (images already taken are inspected first). Exit code 0 after a
clean stop, 2 for a bad configuration (one line naming the key).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgevision.commands._present import default_subcommand_group, out

app = typer.Typer(cls=default_subcommand_group("run"), no_args_is_help=True, add_completion=False,
                  help="On the line: images in from a hot folder or camera, decisions out to OPC UA / Modbus / MQTT, "
                       "every part recorded; 'line report DB' summarises the record.")


@app.command("run")
def run(
    config: Path = typer.Argument(..., help="The line's YAML (see configs/line/)."),
    until_idle: bool = typer.Option(False, "--until-idle", help="Stop once every source is drained (batch runs, "
                                    "tests) instead of running until SIGTERM."),
) -> None:
    """Run the line until SIGTERM / SIGINT (or --until-idle)."""
    import signal
    import threading

    from edgevision.core.signals import Interrupted
    from edgevision.line.config import load_line_config
    from edgevision.line.pipeline import Line

    cfg = load_line_config(config)
    line = Line(cfg)
    http = None
    if cfg.http is not None:
        from edgevision.line.http import LineHttp

        http = LineHttp(cfg.http, line.status)
        http.start()
    out.print(f"line {cfg.station}: model {cfg.model.name} ({len(line.detector.names)} classes), sources "
              + ", ".join(f"{s.name} ({s.kind})" for s in line.sources)
              + f"; sinks {', '.join(s.name for s in line.sinks) or 'none'}; record {line.store.location}"
              + (f"; {http.scheme}://{cfg.http.host}:{http.port}/metrics" if http is not None and cfg.http else ""),
              highlight=False)
    rules = line.detector.operating_rules or {}
    out.print("decisions at " + "; ".join(f"{n} {t:.3g} ({rules.get(n, 'defaults.conf')})"
                                          for n, t in line.thresholds.items()), highlight=False)
    stop = threading.Event()
    # SIGTERM / SIGINT / SIGHUP stop the line the clean way: the sources stop, images already taken are
    # inspected and recorded, the sinks flush; a second signal is not needed
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        line.run(stop, until_idle=until_idle)
    except (KeyboardInterrupt, Interrupted):
        stop.set()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if http is not None:
            http.close()
    s = line.stats
    out.print(f"stopped: {s.parts} part(s) recorded ({s.ok} OK, {s.ng} NG, {s.unreadable} unreadable, "
              f"{s.dropped} dropped)", highlight=False)


@app.command("report")
def report(
    db: str | None = typer.Argument(None, help="The line's inspection record: its SQLite file (record.db), or a "
                                    "PostgreSQL URL without a password (else use --db-env / --db-file)."),
    db_env: str | None = typer.Option(None, "--db-env", metavar="VAR", help="Read the database (a PostgreSQL URL "
                                      "with its credentials, or a file path) from this environment variable."),
    db_file: Path | None = typer.Option(None, "--db-file", metavar="FILE", help="Read the database URL from the "
                                        "first line of this file."),
    since: str | None = typer.Option(None, "--since", help="From this UTC time (ISO-8601 prefix: 2026-12-07, "
                                     "2026-12-07T08)."),
    until: str | None = typer.Option(None, "--until", help="Before this UTC time."),
    csv_out: Path | None = typer.Option(None, "--csv", help="Write every part in the window as CSV here."),
    cost_escape: float | None = typer.Option(None, "--cost-escape", help="Cost of one escaped defective part "
                                             "(with --cost-false-reject; default: the model's priced operating "
                                             "points, if any)."),
    cost_false_reject: float | None = typer.Option(None, "--cost-false-reject", help="Cost of one rejected good part."),
) -> None:
    """Parts, reject rate per class, per source and per hour, inference time, expected cost."""
    from edgevision.core.errors import ConfigError, EdgeVisionError
    from edgevision.line.config import read_secret
    from edgevision.line.record import RecordError, is_postgres_url, redact_url, url_has_password

    if sum(x is not None for x in (db, db_env, db_file)) != 1:
        raise ConfigError("give the record once: DB (an SQLite file), --db-env VAR or --db-file FILE")
    if db is not None and is_postgres_url(db) and url_has_password(db):
        raise ConfigError("DB: a database URL with a password must not be given on the command line; put it in an "
                          "environment variable (--db-env VAR) or a file (--db-file FILE)")
    target = db if db is not None else read_secret(db_file, db_env, "--db-file" if db_file else "--db-env")
    assert target is not None
    shown = redact_url(target) if is_postgres_url(target) else target
    if (cost_escape is None) != (cost_false_reject is None):
        raise ConfigError("give --cost-escape and --cost-false-reject together")
    costs = ({"escape": cost_escape, "false_reject": cost_false_reject}
             if cost_escape is not None and cost_false_reject is not None else None)
    try:
        _report(target, shown, since, until, costs, csv_out)
    except RecordError as e:  # the database went away during the report
        raise EdgeVisionError(str(e)) from None


def _report(target: str, shown: str, since: str | None, until: str | None, costs: dict[str, float] | None,
            csv_out: Path | None) -> None:
    from edgevision.line.report import line_report, write_parts_csv

    rep = line_report(target, since=since, until=until, costs=costs)
    if not rep.parts:
        out.print(f"{shown}: no part recorded" + (f" between {since or 'the start'} and {until or 'now'}"
                                                if since or until else ""), highlight=False)
    else:
        out.print(f"{rep.parts} part(s) from {rep.first} to {rep.last}: {rep.ok} OK, {rep.ng} NG; reject rate "
                  f"{rep.reject.text()}; {rep.unreadable} unreadable; inference p50 {rep.inference_ms_p50:.1f} ms, "
                  f"p99 {rep.inference_ms_p99:.1f} ms", highlight=False)
        t = Table(title="parts with a detection of each class", title_justify="left")
        t.add_column("class")
        t.add_column("parts", justify="right")
        t.add_column("share of parts", justify="right")
        for name, n in sorted(rep.per_class.items(), key=lambda kv: -kv[1]):
            t.add_row(name, str(n), f"{100 * n / rep.parts:.1f}%")
        out.print(t)
        t = Table(title="per hour (UTC)", title_justify="left")
        for col in ("hour", "parts", "NG", "reject rate"):
            t.add_column(col, justify="left" if col == "hour" else "right")
        for hour, h in sorted(rep.per_hour.items()):
            t.add_row(hour.replace("T", " ") + ":00", str(h["parts"]), str(h["ng"]), f"{100 * h['ng'] / h['parts']:.1f}%")
        out.print(t)
        if len(rep.per_source) > 1:
            out.print("per source: " + ", ".join(f"{k} {v['parts']} parts ({v['ng']} NG)"
                                                 for k, v in rep.per_source.items()), highlight=False)
        c = rep.expected_cost
        if c is not None:
            out.print(f"expected cost of these parts: {c['total']:.4g} (95% CI {c['lower']:.4g}-{c['upper']:.4g}) at the "
                      "escape and false-reject rates the model's operating points were measured with on its val split",
                      highlight=False)
        elif costs is not None:
            out.print("expected cost: unknown (the model's operating points carry no measured escape / false-reject "
                      "rates with both defective and defect-free images)", highlight=False)
    if csv_out is not None:
        n = write_parts_csv(target, csv_out, since=since, until=until)
        out.print(f"wrote {n} part(s) to {csv_out}", highlight=False)
