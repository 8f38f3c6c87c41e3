"""``edgevision weights add|list|remove``: the local registry of pretrained checkpoints (no network)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgevision.commands._present import out

app = typer.Typer(help="Pretrained weights kept locally: add once, train with --model NAME offline.",
                  no_args_is_help=True)


@app.command("add")
def add(
    file: Path = typer.Argument(..., help="A checkpoint (.pt) downloaded once on a connected PC."),
    name: str = typer.Option(..., "--name", help="The name to train with, e.g. yolov8n-coco."),
    licence: str = typer.Option(..., "--licence", "--license", help="Licence of the weights, e.g. AGPL-3.0."),
    origin: str | None = typer.Option(None, "--origin", help="Where it came from (URL, release tag)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a registered name."),
) -> None:
    """Copy FILE into the registry and record its sha256, licence and origin."""
    from edgevision.train.weights import add_weights, registry_dir

    e = add_weights(file, name, licence, origin=origin, overwrite=overwrite)
    out.print(f"registered [bold]{e.name}[/bold]: sha256 {e.sha256[:16]}..., {e.size / 1e6:.1f} MB, licence {e.licence} "
              f"-> {registry_dir() / e.file}", highlight=False)
    out.print(f"train with: edgevision train --model {e.name} ...", highlight=False)


@app.command("list")
def list_cmd() -> None:
    """List registered weights."""
    from edgevision.train.weights import list_weights, registry_dir

    entries = list_weights()
    if not entries:
        out.print(f"no weights registered in {registry_dir()}; add one with "
                  "'edgevision weights add FILE --name NAME --licence LICENCE'", highlight=False)
        return
    t = Table(title=f"registered weights ({registry_dir()})", title_justify="left")
    for col in ("name", "licence", "sha256", "MB", "origin", "added"):
        t.add_column(col)
    for e in entries:
        t.add_row(e.name, e.licence, e.sha256[:16], f"{e.size / 1e6:.1f}", e.origin, e.added)
    out.print(t)


@app.command("remove")
def remove(name: str = typer.Argument(..., help="Registered name.")) -> None:
    """Forget a registered name (its file is deleted unless another name uses it)."""
    from edgevision.train.weights import remove_weights

    e = remove_weights(name)
    out.print(f"removed {e.name} ({e.sha256[:16]})", highlight=False)
