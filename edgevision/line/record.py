"""The inspection record: every part a row, written (and synced) before its decision goes anywhere.

SQLite in WAL mode with ``synchronous=FULL``: a row that `RecordStore.record` returned survives ``kill -9`` and
power loss. The same transaction writes the part's messages for the durable sinks (MQTT) into ``outbox``,
so a message exists exactly when its part does; each durable sink drains its rows in order through an
`Outbox` (its own connection, its own thread) and deletes a row once its peer acknowledged it.

``image_key`` (source, file name, size, modification time) is unique: a file whose part is recorded is
never inspected twice, even when the process died between the record and moving the file away.

Tables: ``parts`` (one row per part; JSON columns for classes, detections, thresholds), ``outbox``
(``id``, ``sink``, ``seq``, ``payload``), ``meta`` (schema version).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edgevision.core.errors import ConfigError
from edgevision.line.sinks.base import PartDecision

__all__ = ["SCHEMA_VERSION", "Outbox", "RecordStore"]

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
        d[k] = json.loads(d[k])
    return PartDecision(**d)


class RecordStore:
    """The inspection record in one SQLite file (thread-safe: one connection behind a lock).

    Raises:
        ConfigError: the file cannot be opened or was written by a newer schema.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
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
