"""README.md stays true: every command and every option it shows exists in the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgevision.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _mentions() -> dict[tuple[str, ...], set[str]]:
    """``{(command, subcommand?): {--options}}`` for every ``edgevision ...`` in README's code and table."""
    text = README.read_text(encoding="utf-8")
    found: dict[tuple[str, ...], set[str]] = {}
    for m in re.finditer(r"edgevision ((?:[a-z]+)(?: (?:add|list|remove|show|compare|export|launch|delete|report))?)((?:\\\||[^`\n|])*)", text):
        words = tuple(m.group(1).split())
        if words[0] in ("runtime",):  # `edgevision.runtime` is a module, not a command
            continue
        found.setdefault(words, set()).update(re.findall(r"(--[a-z][a-z0-9-]*)", m.group(2)))
    return found


@pytest.mark.parametrize("words", sorted(_mentions()), ids=" ".join)
def test_readme_commands_and_options_exist(words: tuple[str, ...]) -> None:
    defaults = {("bench",): "run", ("inspect",): "load", ("line",): "run"}  # `bench MODEL...` is `bench run MODEL...`, ...
    args = [*words, defaults[words]] if words in defaults else list(words)
    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"})
    assert res.exit_code == 0, f"README mentions `edgevision {' '.join(words)}`, which is not a command: {res.output}"
    for opt in sorted(_mentions()[words]):
        assert opt in res.output, f"README shows `edgevision {' '.join(words)} {opt}`, which has no such option"
