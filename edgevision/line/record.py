"""The inspection record: every part a row, written (and synced) before its decision goes anywhere.

SQLite in WAL mode with ``synchronous=FULL``: a row that `RecordStore.record` returned survives ``kill -9`` and
power loss. The same transaction writes the part's messages for the durable sinks (MQTT) into ``outbox``,
so a message exists exactly when its part does; each durable sink drains its rows in order through an
`Outbox` (its own connection, its own thread) and deletes a row once its peer acknowledged it.

``image_key`` (source, file name, size, modification time) is unique: a file whose part is recorded is
never inspected twice, even when the process died between the record and moving the file away.

Tables: ``parts`` (one row per part; JSON columns for classes, detections, thresholds), ``outbox``
(``id``, ``sink``, ``seq``, ``payload``), ``meta`` (schema version).

PostgreSQL (`PostgresStore`, `PostgresOutbox`, psycopg 3) serves plants where several boxes write to one
database: the same tables (``BIGSERIAL`` ids, ``JSONB`` for the JSON columns, ``BYTEA`` payloads; ``time`` stays
the ISO-8601 UTC text, compared byte-wise (``COLLATE "C"``), so ``parts(since, until)`` filters by string
prefixes exactly as on SQLite), each commit synchronous (``synchronous_commit = on``). Station scoping: the
exactly-once key is ``(station, image_key)``, so the same file name on two boxes is two parts; the outbox has a
``station`` column and a `PostgresOutbox` drains only its own station's rows (box A never sends box B's
messages). Station names must therefore be unique among the boxes sharing a database. `open_store` and
`open_outbox` pick the backend from the target: a path or ``sqlite:///PATH`` is SQLite, ``postgres://`` /
``postgresql://`` is PostgreSQL.

Errors: a bad URL, refused credentials or an unreachable server when a store opens is a `ConfigError`; once
running, a failing database raises `RecordError` (an ``sqlite3.Error`` and an ``OSError``, the types the line and
the MQTT sink already treat as "pause and retry"), and the next call reconnects. Messages are one line and
never carry a password.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgevision.core.errors import ConfigError
from edgevision.line.sinks.base import PartDecision

if TYPE_CHECKING:
    import psycopg

__all__ = ["SCHEMA_VERSION", "Outbox", "PostgresOutbox", "PostgresStore", "RecordError", "RecordStore", "Store",
           "is_postgres_url", "open_outbox", "open_store", "redact_url", "url_has_password"]

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    station TEXT NOT NULL,
    source TEXT NOT NULL,
    part_id TEXT,
    serial TEXT,
    image TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    image_key TEXT UNIQUE,
    decision TEXT NOT NULL CHECK (decision IN ('OK', 'NG')),
    defects INTEGER NOT NULL,
    classes TEXT NOT NULL,
    detections TEXT NOT NULL,
    inference_ms REAL NOT NULL,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    thresholds TEXT NOT NULL,
    error TEXT,
    kept_image TEXT
);
CREATE INDEX IF NOT EXISTS parts_time ON parts (time);
CREATE INDEX IF NOT EXISTS parts_part_id ON parts (part_id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_sink ON outbox (sink, id);
"""

_COLUMNS = ("seq", "time", "station", "source", "part_id", "serial", "image", "image_sha256", "decision", "defects",
            "classes", "detections", "inference_ms", "model", "model_sha256", "thresholds", "error")


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA busy_timeout=30000")
        return con
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(f"record.db {path}: cannot open the inspection record ({e})") from None


def _row_to_decision(row: Sequence[Any]) -> PartDecision:
    d = dict(zip(_COLUMNS, row))
    for k in ("classes", "detections", "thresholds"):
        if isinstance(d[k], (str, bytes)):  # SQLite: JSON text; PostgreSQL JSONB arrives parsed
            d[k] = json.loads(d[k])
    return PartDecision(**d)


class RecordStore:
    """The inspection record in one SQLite file (thread-safe: one connection behind a lock).

    Raises:
        ConfigError: the file cannot be opened or was written by a newer schema.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._con = _connect(self.path)
        self._lock = threading.Lock()
        with self._lock:
            self._con.executescript(_SCHEMA)
            found = self._con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if found is None:
                self._con.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif found[0] != SCHEMA_VERSION:
                raise ConfigError(f"record.db {self.path}: schema {found[0]} is not {SCHEMA_VERSION} (written by "
                                  "another EdgeVision version); use a new database file")

    def seen(self, image_key: str) -> PartDecision | None:
        """The recorded part of ``image_key``, or None when it was never recorded."""
        with self._lock:
            row = self._con.execute(f"SELECT {', '.join(_COLUMNS)} FROM parts WHERE image_key = ?",
                                    (image_key,)).fetchone()
        return None if row is None else _row_to_decision(row)

    def record(self, decision: PartDecision, *, image_key: str | None, outbox: Iterable[str] = ()) -> PartDecision:
        """Insert one part (``decision.seq`` is ignored: the store numbers parts) and, in the same transaction, one
        outbox message per durable sink named in ``outbox``; returns the decision with its ``seq``. Committed and
        synced before it returns."""
        d = decision.to_dict()
        values = [d[k] for k in _COLUMNS[1:]]
        for i, k in enumerate(_COLUMNS[1:]):
            if k in ("classes", "detections", "thresholds"):
                values[i] = json.dumps(d[k], separators=(",", ":"))
        with self._lock:
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                cur = con.execute(f"INSERT INTO parts ({', '.join(_COLUMNS[1:])}, image_key) VALUES "
                                  f"({', '.join('?' * (len(_COLUMNS) - 1))}, ?)", (*values, image_key))
                seq = int(cur.lastrowid)  # type: ignore[arg-type]
                out = PartDecision(**{**d, "seq": seq})
                payload = out.to_json()
                for sink in outbox:
                    con.execute("INSERT INTO outbox (sink, seq, payload) VALUES (?, ?, ?)", (sink, seq, payload))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return out

    def set_kept_image(self, seq: int, path: str) -> None:
        with self._lock:
            self._con.execute("UPDATE parts SET kept_image = ? WHERE seq = ?", (path, seq))

    def parts(self, since: str | None = None, until: str | None = None) -> Iterator[PartDecision]:
        """Recorded parts in order, optionally from ``since`` / before ``until`` (ISO-8601 UTC strings)."""
        q = f"SELECT {', '.join(_COLUMNS)} FROM parts WHERE time >= ? AND time < ? ORDER BY seq"
        with self._lock:
            rows = self._con.execute(q, (since or "", until or "\uffff")).fetchall()
        for row in rows:
            yield _row_to_decision(row)

    def count(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT COUNT(*) FROM parts").fetchone()[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._con.close()


class Outbox:
    """One durable sink's queue in the record's database: messages in order, deleted once delivered.

    Each `Outbox` has its own connection: use it from the sink's thread.
    """

    def __init__(self, path: Path | str, sink: str) -> None:
        self.path, self.sink = Path(path), sink
        self._con = _connect(self.path)
        self._con.executescript(_SCHEMA)

    def pending(self, limit: int = 100) -> list[tuple[int, bytes]]:
        """Up to ``limit`` undelivered messages, oldest first: ``[(id, payload)]``."""
        rows = self._con.execute("SELECT id, payload FROM outbox WHERE sink = ? ORDER BY id LIMIT ?",
                                 (self.sink, limit)).fetchall()
        return [(int(i), bytes(p)) for i, p in rows]

    def done(self, ids: Iterable[int]) -> None:
        """Delete delivered messages."""
        ids = list(ids)
        if ids:
            self._con.executemany("DELETE FROM outbox WHERE id = ? AND sink = ?", [(i, self.sink) for i in ids])

    def count(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM outbox WHERE sink = ?", (self.sink,)).fetchone()[0])

    def put(self, payload: bytes, seq: int = 0) -> int:
        """Append a message outside a part's transaction (tests, status messages)."""
        cur = self._con.execute("INSERT INTO outbox (sink, seq, payload) VALUES (?, ?, ?)", (self.sink, seq, payload))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def close(self) -> None:
        self._con.close()


# ---------------------------------------------------------------------------------------------------- PostgreSQL

_PG_SCHEMES = ("postgres://", "postgresql://")

_PG_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS parts (
    seq BIGSERIAL PRIMARY KEY,
    time TEXT COLLATE "C" NOT NULL,
    station TEXT NOT NULL,
    source TEXT NOT NULL,
    part_id TEXT,
    serial TEXT,
    image TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    image_key TEXT,
    decision TEXT NOT NULL CHECK (decision IN ('OK', 'NG')),
    defects INTEGER NOT NULL,
    classes JSONB NOT NULL,
    detections JSONB NOT NULL,
    inference_ms DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    thresholds JSONB NOT NULL,
    error TEXT,
    kept_image TEXT,
    CONSTRAINT parts_station_image_key UNIQUE (station, image_key)
)""",
    "CREATE INDEX IF NOT EXISTS parts_time ON parts (time)",
    "CREATE INDEX IF NOT EXISTS parts_part_id ON parts (part_id)",
    """CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    station TEXT NOT NULL,
    sink TEXT NOT NULL,
    seq BIGINT NOT NULL,
    payload BYTEA NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS outbox_station_sink ON outbox (station, sink, id)",
)
_PG_SCHEMA_LOCK = 0x45_56_4C_49_4E_45  # pg_advisory_xact_lock key: boxes starting together create the tables once
_PG_DEFAULTS = {  # unless the URL says otherwise: fail fast, notice a dead peer within about half a minute
    "connect_timeout": "5", "application_name": "edgevision-line", "keepalives": "1", "keepalives_idle": "10",
    "keepalives_interval": "5", "keepalives_count": "3", "tcp_user_timeout": "30000"}
_JSON_COLUMNS = ("classes", "detections", "thresholds")


class RecordError(sqlite3.Error, OSError):
    """The inspection record's database failed while the line runs (server down, connection lost, disk full).

    An ``sqlite3.Error`` and an ``OSError``: the line (`edgevision.line.pipeline.Line.run`) pauses inspection and
    retries, the MQTT sink backs off, a kept image's path is logged as not recorded. The message is one line
    and never carries a password; the store reconnects on its next call.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.strerror = message


def is_postgres_url(target: str | Path) -> bool:
    """True for ``postgres://`` and ``postgresql://`` URLs."""
    return isinstance(target, str) and target.startswith(_PG_SCHEMES)


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    head, q, query = rest.partition("?")
    if "@" in head:  # the last "@" before the query ends the user part (a raw "@" or "/" may sit in a password)
        userinfo, _, hosts = head.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        head = f"{user}{':***' if colon else ''}@{hosts}"
    query = re.sub(r"(?i)(^|&)(password=)[^&#]*", r"\1\2***", query)
    return f"{scheme}{sep}{head}{q}{query}"


def url_has_password(url: str) -> bool:
    """True when a database URL carries a password (in its user part or a ``password=`` parameter)."""
    return redact_url(url) != url


def _one_line(e: BaseException, secrets: Iterable[str] = ()) -> str:
    text = " ".join(str(e).split()) or e.__class__.__name__
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return re.sub(r"://[^\s/@?]*:[^\s@]*@", "://***@", text)  # any URL with a password the driver echoed


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError("record.db: a PostgreSQL record needs psycopg; pip install 'edgevision[line]'") from None
    return psycopg


def _open_postgres(url: str) -> _Postgres:
    """A connection whose schema is in place (closed again when that fails)."""
    pg = _Postgres(url)
    try:
        pg.ensure_schema()
    except BaseException:
        pg.close()
        raise
    return pg


class _Postgres:
    """One PostgreSQL connection behind a lock; lost, it is dropped and opened again on the next call."""

    def __init__(self, url: str) -> None:
        pg = _psycopg()
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        self.where = redact_url(url)
        self._secrets = [url]
        try:
            params = conninfo_to_dict(url)
        except pg.Error as e:
            raise ConfigError(f"record.db {self.where}: not a valid PostgreSQL URL "
                              f"({_one_line(e, self._secrets)})") from None
        if params.get("password"):
            self._secrets.insert(0, str(params["password"]))
        for k, v in _PG_DEFAULTS.items():
            params.setdefault(k, v)
        self._conninfo = make_conninfo("", **params)
        self._lock = threading.Lock()
        self._con: psycopg.Connection[Any] | None = None
        self._closed = False
        try:
            self._con = self._connect()
        except pg.Error as e:
            raise ConfigError(f"record.db {self.where}: cannot open the inspection record "
                              f"({_one_line(e, self._secrets)})") from None

    def _connect(self) -> psycopg.Connection[Any]:
        con = _psycopg().connect(self._conninfo, autocommit=True)
        try:
            con.execute("SET synchronous_commit TO on")  # a returned record() is on the server's disk
        except BaseException:
            con.close()
            raise
        return con  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def use(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection, under the lock; any database error leaves as a `RecordError`."""
        pg = _psycopg()
        with self._lock:
            if self._closed:
                raise RecordError(f"record.db {self.where}: the store is closed")
            if self._con is None or self._con.closed:
                try:
                    self._con = self._connect()
                except pg.Error as e:
                    self._con = None
                    raise RecordError(f"record.db {self.where}: cannot reach the database "
                                      f"({_one_line(e, self._secrets)})") from None
            con = self._con
            try:
                yield con
            except pg.Error as e:
                if isinstance(e, (pg.OperationalError, pg.InterfaceError)) or con.broken or con.closed:
                    self._drop()
                raise RecordError(f"record.db {self.where}: {_one_line(e, self._secrets)}") from None

    def _drop(self) -> None:
        if self._con is not None:
            with contextlib.suppress(Exception):
                self._con.close()
        self._con = None

    def ensure_schema(self) -> None:
        """Create the tables once (an advisory lock serialises boxes starting together); check the version.

        Raises:
            ConfigError: the database was written by another schema version, or the tables cannot be made.
        """
        try:
            with self.use() as con, con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
                for stmt in _PG_SCHEMA:
                    con.execute(stmt)
                found = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if found is None:
                    con.execute("INSERT INTO meta VALUES ('schema', %s)", (SCHEMA_VERSION,))
        except RecordError as e:
            raise ConfigError(f"cannot prepare the inspection record: {e}") from None
        if found is not None and found[0] != SCHEMA_VERSION:
            raise ConfigError(f"record.db {self.where}: schema {found[0]} is not {SCHEMA_VERSION} (written by another "
                              "EdgeVision version); use a new database")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()


class PostgresStore:
    """The inspection record in a PostgreSQL database several boxes may share (the API of `RecordStore`).

    Args:
        url: ``postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DB[?...]`` (libpq URL; a password may also come from
            ``PGPASSWORD`` / ``~/.pgpass``).
        station: this box's station: `seen` looks up ``image_key`` among its parts only. None (reports): any
            station's.

    Raises:
        ConfigError: a bad URL, refused credentials, an unreachable server, another schema version.
    """

    def __init__(self, url: str, *, station: str | None = None) -> None:
        self.station = station
        self._pg = _open_postgres(url)
        self.location = self._pg.where

    def seen(self, image_key: str) -> PartDecision | None:
        """The recorded part of ``image_key`` (at this store's station), or None when it was never recorded."""
        q = f"SELECT {', '.join(_COLUMNS)} FROM parts WHERE image_key = %s"
        args: tuple[str, ...] = (image_key,)
        if self.station is not None:
            q, args = q + " AND station = %s", (image_key, self.station)
        with self._pg.use() as con:
            row = con.execute(q + " ORDER BY seq LIMIT 1", args).fetchone()
        return None if row is None else _row_to_decision(row)

    def record(self, decision: PartDecision, *, image_key: str | None, outbox: Iterable[str] = ()) -> PartDecision:
        """As `RecordStore.record`: the part and its outbox rows (for ``decision.station``) in one transaction,
        committed synchronously. A part whose ``(station, image_key)`` is already recorded (a commit whose
        acknowledgement was lost with the connection, retried) is returned as recorded, with no new message."""
        d = decision.to_dict()
        values = [json.dumps(d[k], separators=(",", ":")) if k in _JSON_COLUMNS else d[k] for k in _COLUMNS[1:]]
        marks = ", ".join("%s::jsonb" if k in _JSON_COLUMNS else "%s" for k in _COLUMNS[1:])
        with self._pg.use() as con, con.transaction():
            row = con.execute(f"INSERT INTO parts ({', '.join(_COLUMNS[1:])}, image_key) VALUES ({marks}, %s) "
                              "ON CONFLICT (station, image_key) DO NOTHING RETURNING seq",
                              (*values, image_key)).fetchone()
            if row is None:
                old = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM parts WHERE station = %s AND image_key = %s",
                                  (decision.station, image_key)).fetchone()
                if old is None:  # cannot happen: the conflicting row is never deleted
                    raise RecordError(f"record.db {self._pg.where}: part {image_key} conflicts and is not found")
                return _row_to_decision(old)
            out = PartDecision(**{**d, "seq": int(row[0])})
            payload = out.to_json()
            for sink in outbox:
                con.execute("INSERT INTO outbox (station, sink, seq, payload) VALUES (%s, %s, %s, %s)",
                            (decision.station, sink, out.seq, payload))
        return out

    def set_kept_image(self, seq: int, path: str) -> None:
        with self._pg.use() as con:
            con.execute("UPDATE parts SET kept_image = %s WHERE seq = %s", (path, seq))

    def parts(self, since: str | None = None, until: str | None = None) -> Iterator[PartDecision]:
        """Recorded parts (every station's) in order, optionally from ``since`` / before ``until`` (ISO-8601 UTC
        strings or prefixes, compared as text as on SQLite)."""
        where, args = [], []
        if since:
            where.append("time >= %s")
            args.append(since)
        if until:
            where.append("time < %s")
            args.append(until)
        q = f"SELECT {', '.join(_COLUMNS)} FROM parts{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY seq"
        with self._pg.use() as con:
            rows = con.execute(q, args).fetchall()
        for row in rows:
            yield _row_to_decision(row)

    def count(self) -> int:
        """Parts in the database (every station's)."""
        with self._pg.use() as con:
            return int(con.execute("SELECT COUNT(*) FROM parts").fetchone()[0])  # type: ignore[index]

    def set_meta(self, key: str, value: str) -> None:
        with self._pg.use() as con:
            con.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        (key, value))

    def get_meta(self, key: str) -> str | None:
        with self._pg.use() as con:
            row = con.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        self._pg.close()


class PostgresOutbox(Outbox):
    """One durable sink's queue for one station, in the shared PostgreSQL record (the API of `Outbox`).

    A subclass only so that the sinks typed against `Outbox` take it: it shares no state with the SQLite one
    (no ``path``; ``location`` is the URL without its password). Its own connection: use it from the sink's thread.

    Raises:
        ConfigError: as `PostgresStore`.
    """

    def __init__(self, url: str, sink: str, *, station: str) -> None:  # noqa: D107 - no super().__init__: no file
        self.sink, self.station = sink, station
        self._pg = _open_postgres(url)
        self.location = self._pg.where

    def pending(self, limit: int = 100) -> list[tuple[int, bytes]]:
        with self._pg.use() as con:
            rows = con.execute("SELECT id, payload FROM outbox WHERE station = %s AND sink = %s ORDER BY id LIMIT %s",
                               (self.station, self.sink, limit)).fetchall()
        return [(int(i), bytes(p)) for i, p in rows]

    def done(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids:
            with self._pg.use() as con:
                con.execute("DELETE FROM outbox WHERE id = ANY(%s) AND station = %s AND sink = %s",
                            (ids, self.station, self.sink))

    def count(self) -> int:
        with self._pg.use() as con:
            row = con.execute("SELECT COUNT(*) FROM outbox WHERE station = %s AND sink = %s",
                              (self.station, self.sink)).fetchone()
        return int(row[0])  # type: ignore[index]

    def put(self, payload: bytes, seq: int = 0) -> int:
        with self._pg.use() as con:
            row = con.execute("INSERT INTO outbox (station, sink, seq, payload) VALUES (%s, %s, %s, %s) RETURNING id",
                              (self.station, self.sink, seq, payload)).fetchone()
        return int(row[0])  # type: ignore[index]

    def close(self) -> None:
        self._pg.close()


# ---------------------------------------------------------------------------------------------------- factories

Store = RecordStore | PostgresStore
"""Either backend of the inspection record."""


def _sqlite_path(target: str | Path) -> Path:
    return Path(target.removeprefix("sqlite:///") if isinstance(target, str) else target)


def open_store(target: str | Path, *, station: str | None = None) -> Store:
    """The inspection record at ``target``: a path or ``sqlite:///PATH`` opens SQLite (`RecordStore`; ``station``
    is not needed: one box per file), a ``postgres://`` / ``postgresql://`` URL PostgreSQL (`PostgresStore`
    scoped to ``station``).

    Raises:
        ConfigError: the database cannot be opened (one line, no password).
    """
    if is_postgres_url(target):
        return PostgresStore(str(target), station=station)
    return RecordStore(_sqlite_path(target))


def open_outbox(target: str | Path, sink: str, *, station: str | None = None) -> Outbox:
    """The durable queue of ``sink`` in the record at ``target`` (see `open_store`); PostgreSQL needs the
    ``station``, whose rows alone this outbox drains.

    Raises:
        ConfigError: the database cannot be opened; ValueError: PostgreSQL without a station.
    """
    if is_postgres_url(target):
        if not station:
            raise ValueError("open_outbox: a PostgreSQL outbox is scoped to a station; give station=")
        return PostgresOutbox(str(target), sink, station=station)
    return Outbox(_sqlite_path(target), sink)
