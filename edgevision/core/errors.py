"""One exception tree for EdgeVision. Messages say what was expected, what was found and where."""

from __future__ import annotations

import difflib
import reprlib
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


_MAX_OPTIONS_SHOWN = 30
"""Options an `UnknownNameError` lists (a dataset may have thousands of classes)."""


class UnknownNameError(EdgeVisionError, KeyError):
    """A name (format, recipe, class, ...) is not known; the message lists the options."""

    def __init__(self, kind: str, name: str, options: Iterable[str]) -> None:
        opts = sorted(options)
        close = difflib.get_close_matches(name, opts, n=1) if len(name) <= 200 else []
        hint = f" Did you mean '{short_text(close[0], 80)}'?" if close else ""
        self.kind, self.name, self.options = kind, name, opts
        shown = ", ".join(short_text(o, 80) for o in opts[:_MAX_OPTIONS_SHOWN])
        more = f" (and {len(opts) - _MAX_OPTIONS_SHOWN} more)" if len(opts) > _MAX_OPTIONS_SHOWN else ""
        super().__init__(f"unknown {kind} '{short_text(name, 80)}'; expected one of: {shown}{more}.{hint}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class OutputExistsError(EdgeVisionError):
    """The output path exists and overwriting was not asked for."""


class OutputOverlapError(EdgeVisionError):
    """The output is, lies inside, or contains a folder the input is read from (writing it could
    destroy the input: ``--overwrite`` replaces the output folder whole)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived while EdgeVision had `edgevision.core.signals` handlers in place.

    Deliberately outside the `EdgeVisionError` tree: like `KeyboardInterrupt` (which it subclasses, so
    code that stops cleanly on Ctrl-C does the same on a service manager's stop), it is not an error of
    the input and ``except Exception`` does not swallow it; it unwinds so that every ``finally``
    removes its temporary output. The CLI exits with `exit_code`.

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = int(signum)
        try:
            self.signal_name = signal.Signals(self.signum).name
        except ValueError:
            self.signal_name = f"signal {self.signum}"
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        """``128 + signum``, what a shell reports for a process ended by the signal (SIGTERM: 143)."""
        return 128 + self.signum


class FileAccessError(DatasetError):
    """A file or folder cannot be read or written (permission denied, read-only disk, not a folder).

    Attributes:
        where: the path; code: ``file_unreadable`` (an input) or ``output_unwritable`` (an output).
    """

    @classmethod
    def from_os_error(cls, e: OSError, path: object = None, *, writing: bool | None = False) -> FileAccessError:
        """The one-line error for an `OSError` raised while reading ``path`` (``writing``: writing it;
        None: unknown which).

        The path the system names (``e.filename``) wins over ``path``: it is the file that failed.
        """
        name = str(e.filename if e.filename is not None else path if path is not None else "?")
        reason = (e.strerror or e.__class__.__name__).lower()
        if writing is None:
            verb, code, fix = "access", "file_unreadable", "check the path and its permissions"
        elif writing:
            verb, code, fix = "write", "output_unwritable", "check the folder's permissions or choose another output"
        else:
            verb, code, fix = "read", "file_unreadable", "check its permissions (the user running EdgeVision must be able to read it)"
        return cls(f"cannot {verb} ({reason}); {fix}", where=short_text(name, 200), code=code)


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` for a message, at most about ``limit`` characters, in bounded time.

    Long strings, long or nested lists and dicts and huge integers are elided (``...``) without
    building their full repr first, so a hostile value (a 25 MB class name, a list nested 100,000
    levels deep, an integer of 5,000 digits) never makes a long error line or a slow one.
    """
    return short_text(_ShortRepr(limit).repr(value), limit)


def short_text(text: str, limit: int = 300) -> str:
    """``text`` cut to at most ``limit`` characters, keeping its head and tail around ``...``; one line."""
    text = text.replace("\r", " ").replace("\n", " ")
    if len(text) <= limit:
        return text
    head = max(limit * 2 // 3 - 2, 1)
    tail = max(limit - head - 3, 0)
    return f"{text[:head]}...{text[len(text) - tail:] if tail else ''}"


class _ShortRepr(reprlib.Repr):
    """`reprlib.Repr` with limits scaled to a character budget, safe for huge integers."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = max(limit, 12)
        self.maxlong = min(max(limit, 12), 40)
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 6
        self.maxdict = 4

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a 5,000-digit integer raises ValueError (Python's digit limit)
            return f"<integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)
