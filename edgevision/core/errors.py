"""One exception tree for EdgeVision. Messages say what was expected, what was found and where."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeVisionError(Exception):
    """Base class of every error EdgeVision raises on purpose (bad input, bad config, unknown name)."""


class DatasetError(EdgeVisionError):
    """A dataset file or item is malformed, missing or inconsistent.

    Attributes:
        where: the file and item, e.g. ``"ann/img 1.xml:object[2]"``.
        code: a stable finding code such as ``"box_inverted"`` (see `edgevision.core.report.CODES`).
    """

    def __init__(self, message: str, *, where: str | None = None, code: str | None = None) -> None:
        self.where = where
        self.code = code
        self.detail = message
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(EdgeVisionError):
    """A configuration file, recipe or command-line option is invalid."""


class UnknownNameError(EdgeVisionError, KeyError):
    """A name (format, recipe, class, ...) is not known; the message lists the options."""

    def __init__(self, kind: str, name: str, options: Iterable[str]) -> None:
        opts = sorted(options)
        close = difflib.get_close_matches(name, opts, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        self.kind, self.name, self.options = kind, name, opts
        super().__init__(f"unknown {kind} '{name}'; expected one of: {', '.join(opts)}.{hint}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class OutputExistsError(EdgeVisionError):
    """The output path exists and overwriting was not asked for."""
