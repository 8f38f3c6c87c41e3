"""``edgevision licences [MODEL] [--deploy WHEELHOUSE] [--extra E] [--accept NAME] [--permissive-only] [--json F]
[--sbom F]``: the licence chain of what a user would ship.

MODEL (an exported ``.onnx`` or a run folder) gives the training code, starting weights and dataset; the runtime
dependencies are the wheels in WHEELHOUSE, else the runtime install's closure in this environment (``--extra
serve``, ``--extra line`` add those extras). Exit status: 0; with ``--permissive-only`` 3 when an item is copyleft
or not for commercial use, 4 when only unknown licences stand in the way; 2 bad arguments, or ``--sbom`` without
cyclonedx-python-lib (the chain is still printed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from edgevision.commands._present import err, out, write_json_option

_STYLE = {"permissive": "green", "unknown": "yellow", "weak-copyleft": "yellow", "copyleft": "red",
          "network-copyleft": "red", "non-commercial": "red"}


def command(
    model: Path | None = typer.Argument(None, help="An exported .onnx or a run folder (omit with --deploy alone)."),
    deploy: Path | None = typer.Option(None, "--deploy", help="A wheelhouse: read every wheel in it (no install) "
                                       "instead of this environment."),
    extra: list[str] = typer.Option([], "--extra", help="EdgeVision extras of the runtime install besides the "
                                    "onnxruntime flavour, e.g. serve, line (repeatable or comma-separated)."),
    accept: list[str] = typer.Option([], "--accept", help="An item (name, or role: code, weights, dataset) cleared "
                                     "by a review; it no longer fails --permissive-only (repeatable or "
                                     "comma-separated)."),
    permissive_only: bool = typer.Option(False, "--permissive-only", help="Exit 3 when an item is copyleft or not "
                                         "for commercial use, 4 when only unknown licences remain."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the chain as JSON (schema "
                                         "edgevision.licences/1) to this file."),
    sbom: Path | None = typer.Option(None, "--sbom", help="Also write a CycloneDX 1.6 JSON SBOM to this file "
                                     "(needs the licences extra)."),
) -> None:
    """The licence chain of what you would ship: training code, starting weights, dataset and every runtime
    dependency, with what each copyleft or non-commercial licence means for a closed product."""
    from edgevision.core.errors import ConfigError
    from edgevision.licences import SBOM_MISSING, licence_chain, sbom_available, write_sbom

    if json_out is not None and sbom is not None and json_out.resolve() == sbom.resolve():
        raise ConfigError(f"--json and --sbom are the same file {json_out}; give two file names")
    extras = [e.strip() for value in extra for e in value.split(",") if e.strip()]
    accepted = [a.strip() for value in accept for a in value.split(",") if a.strip()]
    chain = licence_chain(model, deploy=deploy, extras=extras, accept=accepted)
    _print(chain)
    if json_out is not None:
        write_json_option(json_out, chain.to_dict(), "the licence chain")
    if sbom is not None:
        if not sbom_available():
            err.print(f"[red]error:[/red] --sbom {escape(str(sbom))}: not written: {escape(SBOM_MISSING)}",
                      highlight=False)
            raise typer.Exit(2)
        write_sbom(chain, sbom, model if model is not None and model.is_file() else None)
        out.print(f"wrote the CycloneDX SBOM to {escape(str(sbom))}", highlight=False)
    code = chain.exit_code(permissive_only)
    if code:
        raise typer.Exit(code)


def _print(chain: Any) -> None:
    from edgevision.licences import ROLES

    s = chain.subject
    parts = [f"{s['model']} ({s['kind']})"] if s.get("model") else []
    parts.append(f"wheelhouse {s['deploy']}" if s.get("deploy") else
                 "this environment's runtime install (" + ", ".join(["base", *s.get("extras", [])]) + ")")
    what = " + ".join(parts)
    t = Table(title=f"licence chain: {escape(what)}", title_justify="left")
    for col in ("role", "name", "version", "licence", "category", "read from"):
        t.add_column(col)
    for i in chain.items:
        style = "green" if i.accepted else _STYLE.get(i.category, "white")
        cat = f"[{style}]{i.category}[/{style}]" + (" (accepted)" if i.accepted else "")
        t.add_row(ROLES.get(i.role, i.role), escape(i.name), escape(i.version or ""), escape(i.licence), cat,
                  escape(i.source))
    out.print(t)
    flags = chain.flags()
    if flags:
        out.print("[bold]not permissive[/bold] (what each means for a closed product):", highlight=False)
        for i in flags:
            style = _STYLE.get(i.category, "white")
            out.print(f"  [{style}]{escape(i.name)}[/{style}] ({ROLES.get(i.role, i.role)}, {escape(i.licence)}): "
                      f"{escape(i.meaning())}" + (f" [dim]({escape(i.note)})[/dim]" if i.note else ""), highlight=False)
    notes = [f"{i.name}: {i.note}" for i in chain.items if i.note and not i.blocking and i.role == "dependency"]
    for n in [*notes, *chain.notes]:
        out.print(f"[dim]note: {escape(n)}[/dim]", highlight=False)
    colour = {"permissive": "green", "unknown": "yellow"}.get(chain.verdict, "red")
    out.print(f"verdict: [{colour}]{escape(chain.summary())}[/{colour}]", highlight=False)
