"""The inspection record on a real PostgreSQL server (started here): several stations in one database, exactly
once per station, outbox scoped per station, ``parts(since, until)``, ``line report --db-env``, credentials never
printed, a server stop and restart, and a whole `Line` run recording into PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from glob import glob
from pathlib import Path

import pytest

from edgevision.core.errors import ConfigError
from edgevision.line.config import load_line_config
from edgevision.line.record import (
    PostgresOutbox,
    PostgresStore,
    RecordError,
    open_outbox,
    open_store,
    redact_url,
    url_has_password,
)
from edgevision.line.sinks.base import PartDecision
from tests.helpers import run_cli
from tests.line.conftest import free_port
from tests.line.test_line import model, write_config, write_part  # noqa: F401 (model: a fixture)

psycopg = pytest.importorskip("psycopg", reason="the line extra (psycopg) is not installed")

USER = "edgevision"
PASSWORD = "Ev-s3cret-7431"  # must never show up in an error, a log line or the CLI's output


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


class PgServer:
    """initdb into a fresh folder and pg_ctl start on 127.0.0.1 (a free port, its unix socket in that folder),
    password (SCRAM) authentication for every connection. As root, the server runs as ``nobody`` (postgres
    refuses to run as root)."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl and _pg_bin("postgres")):
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found")
        self.as_user: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="evpg-"))  # short: the socket path has a length limit
        if os.geteuid() == 0:
            try:
                nobody = pwd.getpwnam("nobody")
            except KeyError:
                pytest.skip("running as root and no 'nobody' user to run postgres as")
            runner = shutil.which("runuser") or shutil.which("setpriv")
            if runner is None:
                pytest.skip("running as root and neither runuser nor setpriv to run postgres unprivileged")
            self.as_user = ([runner, "-u", "nobody", "--"] if runner.endswith("runuser") else
                            [runner, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", "--"])
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
        self.port = free_port()
        self.data = self.root / "data"
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_user:
            os.chown(pwfile, pwd.getpwnam("nobody").pw_uid, -1)
        self._run([self.initdb, "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                   "--no-sync", "--no-locale", "-E", "UTF8"], "initdb")
        pwfile.unlink()
        self.start()

    def _run(self, cmd: list[str], what: str, timeout: float = 60) -> None:
        r = subprocess.run([*self.as_user, *cmd], cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{what} failed ({r.returncode}): {r.stdout} {r.stderr} {log[-2000:]}")

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c full_page_writes=off -c max_connections=40")
        self._run([str(self.pg_ctl), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "30",
                   "-o", opts, "start"], "pg_ctl start")

    def stop(self) -> None:
        self._run([str(self.pg_ctl), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"], "pg_ctl stop")

    def url(self, db: str = "postgres", *, password: bool = True) -> str:
        auth = f"{USER}:{PASSWORD}" if password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def socket_url(self, db: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@/{db}?host={self.root}&port={self.port}"

    def create_db(self) -> str:
        name = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return name

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = PgServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def db_url(pg: PgServer) -> str:
    """A fresh database on the module's server, as a URL with the password."""
    return pg.url(pg.create_db())


def part(station: str, name: str, time_: str = "2026-12-07T08:00:00.000+00:00", *, bright: bool = False) -> PartDecision:
    dets = [{"class": "scratch", "score": 0.91, "xyxy": [1.0, 2.0, 30.5, 40.0]}] if bright else []
    return PartDecision(seq=0, time=time_, station=station, source="folder0", part_id=name[5:9], serial=None,
                        image=name, image_sha256="ab" * 32, decision="NG" if bright else "OK", defects=len(dets),
                        classes={"scratch": 1} if bright else {}, detections=dets, inference_ms=3.25,
                        model="model.onnx", model_sha256="cd" * 32, thresholds={"scratch": 0.4, "dent": 0.25},
                        error=None)


def test_two_stations_share_one_database_exactly_once_and_outbox_per_station(db_url: str) -> None:
    a, b = open_store(db_url, station="A"), open_store(db_url, station="B")
    assert isinstance(a, PostgresStore) and PASSWORD not in a.location and a.location == redact_url(db_url)
    box_a, box_b = open_outbox(db_url, "mqtt", station="A"), open_outbox(db_url, "mqtt", station="B")
    assert isinstance(box_a, PostgresOutbox)
    try:
        key = "folder0:part_0001.png:1234:1700000000000000000"  # the same file name, size and time on both boxes
        pa = a.record(part("A", "part_0001.png", bright=True), image_key=key, outbox=["mqtt"])
        pb = b.record(part("B", "part_0001.png"), image_key=key, outbox=["mqtt"])
        pa2 = a.record(part("A", "part_0002.png"), image_key=key.replace("0001", "0002"), outbox=["mqtt"])
        assert pa.seq < pb.seq < pa2.seq  # one sequence for the plant
        # exactly once per station: seen() is scoped, a retried record() returns the part already recorded
        seen_a, seen_b = a.seen(key), b.seen(key)
        assert seen_a is not None and seen_b is not None
        assert (seen_a.seq, seen_a.station, seen_b.seq, seen_b.station) == (pa.seq, "A", pb.seq, "B")
        assert seen_a.detections == pa.detections and seen_a.thresholds == {"scratch": 0.4, "dent": 0.25}
        assert seen_a.classes == {"scratch": 1} and seen_a.inference_ms == 3.25
        again = a.record(part("A", "part_0001.png"), image_key=key, outbox=["mqtt"])
        assert again.seq == pa.seq and again.decision == "NG"  # the first record stands
        assert a.count() == 3 and a.seen("folder0:other:1:1") is None
        # the outbox: each station drains only its own messages, in order
        pend_a, pend_b = box_a.pending(), box_b.pending()
        assert [json.loads(p)["seq"] for _, p in pend_a] == [pa.seq, pa2.seq]
        assert [json.loads(p)["seq"] for _, p in pend_b] == [pb.seq]
        assert json.loads(pend_a[0][1])["station"] == "A" and box_a.count() == 2 and box_b.count() == 1
        box_a.done([i for i, _ in pend_b])  # box A cannot delete box B's rows
        assert box_b.count() == 1
        box_a.done([pend_a[0][0]])
        assert [json.loads(p)["seq"] for _, p in box_a.pending()] == [pa2.seq] and box_b.count() == 1
        assert box_a.put(b"status", 0) > 0 and box_a.count() == 2 and box_b.count() == 1
        a.set_meta("model:x", "1")
        b.set_meta("model:x", "2")
        assert a.get_meta("model:x") == "2" and a.get_meta("nope") is None
        a.set_kept_image(pa.seq, "/images/x.png")
    finally:
        for closable in (a, b, box_a, box_b):
            closable.close()


def test_parts_filters_by_iso_prefixes_like_sqlite(db_url: str, tmp_path: Path) -> None:
    times = ["2026-12-07T07:59:59.999+00:00", "2026-12-07T08:00:00.000+00:00", "2026-12-07T09:30:00.000+00:00",
             "2026-12-08T00:00:00.000+00:00"]
    pg_store = open_store(db_url, station="A")
    sq_store = open_store(f"sqlite:///{tmp_path / 'line.db'}")
    try:
        for store in (pg_store, sq_store):
            for i, t in enumerate(times):
                store.record(part("A", f"part_{i:04d}.png", t), image_key=f"k{i}")
        for since, until in [(None, None), ("2026-12-07T08", "2026-12-07T09"), ("2026-12-07", "2026-12-08"),
                             ("2026-12-07T08:00", None), (None, "2026-12-07T08"), ("2026-12-09", None)]:
            got = [p.time for p in pg_store.parts(since, until)]
            assert got == [p.time for p in sq_store.parts(since, until)], (since, until)
        assert [p.time for p in pg_store.parts("2026-12-07T08", "2026-12-07T09")] == [times[1]]
    finally:
        pg_store.close()
        sq_store.close()


def test_line_report_reads_postgres_from_env_or_file_and_never_shows_the_password(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(db_url, station="A")
    try:
        for i in range(4):
            store.record(part("A" if i < 3 else "B", f"part_{i:04d}.png", bright=i == 0), image_key=f"k{i}")
    finally:
        store.close()
    monkeypatch.setenv("EV_TEST_LINE_DB", db_url)
    r = run_cli("line", "report", "--db-env", "EV_TEST_LINE_DB", "--csv", tmp_path / "parts.csv", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert "4 part(s)" in text and "3 OK, 1 NG" in text and "A/folder0 3 parts (1 NG), B/folder0 1 parts" in text
    assert (tmp_path / "parts.csv").read_text().count("\n") == 5
    assert PASSWORD not in r.stdout + r.stderr
    # from a file; a URL with a password on the command line is refused in one line, without echoing it
    (tmp_path / "db.url").write_text(db_url + "\n")
    r = run_cli("line", "report", "--db-file", tmp_path / "db.url", "--since", "2027", timeout=120)
    assert r.returncode == 0 and "no part recorded between 2027" in r.stdout, r.stdout + r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    r = run_cli("line", "report", db_url, timeout=120)
    assert r.returncode == 2 and "--db-env" in r.stderr and PASSWORD not in r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_errors_are_one_line_and_never_carry_the_password(pg: PgServer, db_url: str) -> None:
    wrong = pg.url().replace(PASSWORD, PASSWORD + "x")
    with pytest.raises(ConfigError) as e:
        open_store(wrong, station="A")
    assert "password authentication failed" in str(e.value) and PASSWORD not in str(e.value)
    assert "\n" not in str(e.value) and ":***@" in str(e.value)
    with pytest.raises(ConfigError) as e:
        open_store(pg.url("no_such_db"), station="A")
    assert "no_such_db" in str(e.value) and PASSWORD not in str(e.value)
    with pytest.raises(ConfigError) as e:
        open_store(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{pg.port}/x?bogus_option=1")
    assert PASSWORD not in str(e.value)
    with pytest.raises(ValueError):
        open_outbox(db_url, "mqtt")  # a PostgreSQL outbox without a station would drain every box's messages
    # redaction helpers
    assert redact_url("postgresql://u:p@ss/w@h:5/db?sslmode=require&password=x") == \
        "postgresql://u:***@h:5/db?sslmode=require&password=***"
    assert not url_has_password("postgresql://u@h/db") and url_has_password("postgres://u:x@h/db")
    # the unix socket in the server's folder works as well
    store = open_store(pg.socket_url(db_url.rsplit("/", 1)[1]), station="A")
    assert PASSWORD not in store.location and store.count() == 0
    store.close()


def test_a_url_with_credentials_in_the_yaml_is_refused(tmp_path: Path, model: Path) -> None:  # noqa: F811
    cfg = write_config(tmp_path, model, record={"db": f"postgresql://{USER}:{PASSWORD}@127.0.0.1/line"})
    with pytest.raises(ConfigError) as e:
        load_line_config(cfg)
    assert "record.db" in str(e.value) and "db_env" in str(e.value) and PASSWORD not in str(e.value)


def test_a_line_records_into_postgres_scoped_by_station(model: Path, tmp_path: Path, db_url: str,  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch, mqtt_broker,
                                                         mqtt_subscriber) -> None:
    from edgevision.line.pipeline import Line

    monkeypatch.setenv("EV_TEST_LINE_DB", db_url)
    collector = mqtt_subscriber(mqtt_broker.port, "edgevision/+/parts/#")
    other = open_outbox(db_url, "mqtt", station="st2")  # another box's undelivered message: never sent from here
    other.put(b'{"station":"st2"}', 99)
    mtime = time.time() - 30

    def run(station: str, *, mqtt: bool) -> Line:
        root = tmp_path / station
        cfg = write_config(root, model, station=station, source={"after": "keep"},
                           record={"db_env": "EV_TEST_LINE_DB", "images_dir": "images", "keep_accepted": 0.0},
                           sinks={"mqtt": {"host": "127.0.0.1", "port": mqtt_broker.port}} if mqtt else {})
        for i in range(3):  # the same names, bytes and times on both boxes
            path = root / "in" / f"part_{i:04d}.png"
            if not path.exists():
                write_part(root / "in", path.name, bright=i == 1, mtime=mtime + i)
        line = Line(load_line_config(cfg))
        assert PASSWORD not in line.store.location
        line.run(threading.Event(), until_idle=True)
        return line

    run("st1", mqtt=True)
    run("st1", mqtt=True)  # after: keep, run again: nothing is inspected twice
    run("st2", mqtt=False)  # the same files on another box are that box's parts
    got = collector.wait_for(lambda m: len(m) >= 3, 15)
    assert sorted(json.loads(m.payload)["part_id"] for m in got) == ["0000", "0001", "0002"]
    assert {m.topic.split("/")[1] for m in got} == {"st1"}
    store = open_store(db_url)
    try:
        parts = list(store.parts())
        assert [(p.station, p.image, p.decision) for p in parts] == [
            ("st1", "part_0000.png", "OK"), ("st1", "part_0001.png", "NG"), ("st1", "part_0002.png", "OK"),
            ("st2", "part_0000.png", "OK"), ("st2", "part_0001.png", "NG"), ("st2", "part_0002.png", "OK")]
        assert [p.seq for p in parts] == sorted(p.seq for p in parts)
        assert store.get_meta(f"model:{parts[0].model_sha256}") is not None
    finally:
        store.close()
    kept = list((tmp_path / "st1" / "images").rglob("*.png"))
    assert len(kept) == 1 and "part_0001" in kept[0].name  # the reject's image, its path in the record
    st1_box = open_outbox(db_url, "mqtt", station="st1")
    try:
        assert st1_box.count() == 0 and other.count() == 1  # st1 drained its own messages only
    finally:
        st1_box.close()
        other.close()


def test_a_stopped_server_raises_a_catchable_error_and_the_store_recovers(pg: PgServer, db_url: str) -> None:
    store = open_store(db_url, station="A")
    box = open_outbox(db_url, "mqtt", station="A")
    try:
        first = store.record(part("A", "part_0001.png"), image_key="k1", outbox=["mqtt"])
        pg.stop()
        try:
            for call in (lambda: store.record(part("A", "part_0002.png"), image_key="k2", outbox=["mqtt"]),
                         lambda: store.seen("k1"), box.count, lambda: store.record(part("A", "part_0002.png"),
                                                                                    image_key="k2")):
                with pytest.raises(RecordError) as e:
                    call()
                assert isinstance(e.value, sqlite3.Error) and isinstance(e.value, OSError)  # what Line.run catches
                assert PASSWORD not in str(e.value) and "\n" not in str(e.value)
        finally:
            pg.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                second = store.record(part("A", "part_0002.png"), image_key="k2", outbox=["mqtt"])
                break
            except RecordError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert second.seq > first.seq and store.seen("k1") is not None
        assert box.count() == 2 and [json.loads(p)["seq"] for _, p in box.pending()] == [first.seq, second.seq]
    finally:
        store.close()
        box.close()


def test_a_running_line_waits_out_a_database_outage(pg: PgServer, model: Path, tmp_path: Path,  # noqa: F811
                                                    db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgevision.line.pipeline import Line

    monkeypatch.setenv("EV_TEST_LINE_DB", db_url)
    cfg = write_config(tmp_path, model, record={"db_env": "EV_TEST_LINE_DB", "images_dir": "images"})
    line = Line(load_line_config(cfg))
    stop = threading.Event()
    runner = threading.Thread(target=line.run, args=(stop,), daemon=True)
    reader = open_store(db_url)

    def wait(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RecordError):
                if predicate():
                    return True
            time.sleep(0.05)
        return False

    runner.start()
    try:
        for i in range(2):
            write_part(tmp_path / "in", f"part_{i:04d}.png", bright=False)
        assert wait(lambda: reader.count() == 2)
        pg.stop()
        try:
            for i in range(2, 4):
                write_part(tmp_path / "in", f"part_{i:04d}.png", bright=False)
            assert wait(lambda: not line.healthy()[0])  # the record is down: /healthz says so
            assert PASSWORD not in line.healthy()[1]
            assert sorted(p.name for p in (tmp_path / "in").glob("*.png")) == ["part_0002.png", "part_0003.png"]
        finally:
            pg.start()
        assert wait(lambda: reader.count() == 4 and line.healthy()[0])
        assert sorted(p.image for p in reader.parts()) == [f"part_{i:04d}.png" for i in range(4)]  # each once
        # the file is moved away just after its part is recorded (record first, then the `after` policy)
        assert wait(lambda: not list((tmp_path / "in").glob("*.png"))), list((tmp_path / "in").glob("*.png"))
    finally:
        stop.set()
        runner.join(timeout=30)
        reader.close()
    assert not runner.is_alive()
