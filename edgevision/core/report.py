"""Per-item error policy and findings, shared by every reader.

Readers report each problem through a `Report`. What happens next depends on the policy:

* ``fail`` (default for ``convert``): raise `DatasetError` at once (one-line message, file and item);
* ``skip``: drop the whole image the problem belongs to and record it (``--on-error skip``);
* ``keep`` (lenient mode, used by ``validate``): record the finding and keep the item as read
  whenever it is representable, so a validator can report it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from edgevision.core.errors import DatasetError

log = logging.getLogger(__name__)

Severity = Literal["error", "warning", "info"]


class OnError(str, Enum):
    """What a reader does with a bad item."""

    FAIL = "fail"
    SKIP = "skip"
    KEEP = "keep"


@dataclass(frozen=True)
class Finding:
    """One problem found while reading or validating.

    Attributes:
        code: stable machine-readable code, e.g. ``"box_nan"``.
        severity: ``"error"``, ``"warning"`` or ``"info"``.
        where: file and item, e.g. ``"labels/a.txt:line 3"``.
        message: what was expected and what was found.
        skipped: True when the item was dropped because of it.
    """

    code: str
    severity: Severity
    where: str
    message: str
    skipped: bool = False

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class SkipItem(Exception):
    """Raised inside `Report.guard` to drop the current image (skip policy). Internal."""


class Report:
    """Collects findings under an error policy. One per read."""

    def __init__(self, on_error: OnError | str = OnError.FAIL) -> None:
        self.on_error = OnError(on_error)
        self.findings: list[Finding] = []
        self._in_item = 0

    # -- reporting ---------------------------------------------------------------------------
    def error(self, code: str, where: str, message: str) -> None:
        """Report an error on the current item.

        Raises:
            DatasetError: under the ``fail`` policy, or outside an item under ``skip``.
            SkipItem: under ``skip`` inside `guard` (the image is dropped).
        """
        if self.on_error is OnError.FAIL:
            raise DatasetError(message, where=where, code=code)
        if self.on_error is OnError.SKIP:
            if not self._in_item:
                raise DatasetError(message, where=where, code=code)
            self.findings.append(Finding(code, "error", where, message, skipped=True))
            raise SkipItem
        self.findings.append(Finding(code, "error", where, message))

    def fatal(self, code: str, where: str, message: str) -> None:
        """Report an error that makes the whole source unreadable (every policy raises)."""
        raise DatasetError(message, where=where, code=code)

    def warning(self, code: str, where: str, message: str) -> None:
        """Record a warning; never stops the read."""
        self.findings.append(Finding(code, "warning", where, message))
        log.debug("%s: %s", where, message)

    def info(self, code: str, where: str, message: str) -> None:
        """Record a note (a quirk handled, a convention applied)."""
        self.findings.append(Finding(code, "info", where, message))

    def guard(self, where: str) -> ItemGuard:
        """Scope one image: under ``skip`` an error inside drops it; ``guard.ok`` tells if it survived.

        Example:
            >>> g = report.guard(str(path))
            >>> with g:
            ...     rec = read_one(path)
            >>> if g.ok:
            ...     records.append(rec)
        """
        return ItemGuard(self, where)

    # -- summaries ---------------------------------------------------------------------------
    @property
    def skipped(self) -> list[Finding]:
        return [f for f in self.findings if f.skipped]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def counts(self) -> Counter[str]:
        return Counter(f.code for f in self.findings)


class ItemGuard:
    """Context manager returned by `Report.guard`."""

    def __init__(self, report: Report, where: str) -> None:
        self.report, self.where, self.ok = report, where, True

    def __enter__(self) -> ItemGuard:
        self.report._in_item += 1
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        self.report._in_item -= 1
        if exc_type is SkipItem:
            self.ok = False
            return True
        return False
