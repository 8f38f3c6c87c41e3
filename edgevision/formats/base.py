"""What a format is: a name, a detector, a reader and (for output formats) a writer.

Every format module defines one `Format` subclass with an explicit ``name`` and registers an
instance with `edgevision.formats.register_format`. Format-specific reader options are a closed
pydantic model (``ReadOptions``) so that recipes and the CLI are checked, not guessed.

File-system errors are mapped at this boundary, once for every format: an `OSError` escaping a
subclass's ``detect`` / ``read`` (a label file or folder it may not read) or ``write`` (a folder it
may not write) becomes a one-line `FileAccessError` naming the file, never a traceback.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from edgevision.core.dataset import Dataset
from edgevision.core.errors import FileAccessError
from edgevision.core.io import ImageMode
from edgevision.core.report import Report

F = TypeVar("F", bound=Callable[..., Any])


class Options(BaseModel):
    """Base of every format's options: closed (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(Options):
    """For formats that take no reader options."""


@dataclass(frozen=True)
class Detection:
    """How sure a format is that a path holds it, and why (shown by ``--from auto``)."""

    score: float
    reason: str


@dataclass
class WriteOptions:
    """Options every writer honours.

    Attributes:
        images: ``copy`` the image files into the output, ``symlink`` them, or write ``none``.
    """

    images: ImageMode = "copy"


@dataclass
class Losses:
    """What a writer could not represent, counted per kind, with one example each.

    A target format that cannot hold something (a polygon in VOC, attributes in YOLO) records it
    here instead of dropping it silently; ``convert`` prints the table.
    """

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, n: int = 1, example: str | None = None) -> None:
        if n <= 0:
            return
        self.counts[kind] += n
        if example is not None:
            self.examples.setdefault(kind, example)

    def __bool__(self) -> bool:
        return bool(self.counts)


def check_readable(path: Path) -> None:
    """Refuse a source the process may not read: a file it cannot open, a folder it cannot list.

    Raises:
        FileAccessError: naming ``path`` (a missing path is left to the caller's own message).
    """
    try:
        if os.path.isdir(path):
            with os.scandir(path):
                pass
        elif os.path.exists(path):
            with open(path, "rb"):
                pass
    except OSError as e:
        raise FileAccessError.from_os_error(e, path) from e


def _map_os_errors(method: F, writing: bool, check: bool) -> F:
    """Wrap a format method so that an `OSError` leaves it as a `FileAccessError` (see the module
    docstring); with ``check``, the source is first checked with `check_readable`."""

    @functools.wraps(method)
    def wrapper(self: Format, path: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            if check:
                check_readable(path)
            return method(self, path, *args, **kwargs)
        except OSError as e:
            if not writing:
                raise FileAccessError.from_os_error(e, path) from e
            out = os.path.abspath(args[0]) if args else None  # write(dataset, out, ...): a source image may fail too
            target = os.path.abspath(e.filename) if e.filename is not None else out
            inside = out is not None and target is not None and (target + os.sep).startswith(out + os.sep)
            raise FileAccessError.from_os_error(e, out, writing=inside) from e

    wrapper.__edgevision_mapped__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


class Format:
    """One annotation format. Subclasses set the class variables and implement the methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    ReadOptions: ClassVar[type[Options]] = NoOptions
    can_read: ClassVar[bool] = True
    can_write: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, writing, check in (("detect", False, False), ("read", False, True), ("write", True, False)):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "__edgevision_mapped__", False):
                setattr(cls, name, _map_os_errors(method, writing, check))

    def detect(self, path: Path) -> Detection | None:
        """Return a `Detection` when ``path`` (a file or folder) looks like this format, else None."""
        return None

    def read(self, path: Path, options: Options, report: Report) -> Dataset:
        """Read ``path`` into a canonical `Dataset`, reporting problems through ``report``."""
        raise NotImplementedError(f"format '{self.name}' cannot be read")

    def write(self, dataset: Dataset, out: Path, options: WriteOptions, losses: Losses) -> None:
        """Write ``dataset`` into the (empty, temporary) folder ``out``; record what is lost."""
        raise NotImplementedError(f"format '{self.name}' cannot be written")

    def parse_options(self, raw: dict[str, Any] | None) -> Options:
        """Validate raw reader options (from a recipe or the CLI) against ``ReadOptions``."""
        from pydantic import ValidationError

        from edgevision.core.errors import ConfigError

        try:
            return self.ReadOptions(**(raw or {}))
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise ConfigError(f"{self.name} reader option '{loc}': {first['msg']}") from e
