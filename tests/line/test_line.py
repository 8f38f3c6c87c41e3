"""``edgevision line``: hot folder semantics, the record, the CLI, crashes (kill -9), back-pressure, video, report."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgevision.core.errors import ConfigError
from edgevision.line.config import FolderSource, load_line_config
from edgevision.line.record import RecordStore
from edgevision.line.sources import HotFolder, part_id_from_name
from tests.helpers import run_cli
from tests.runtime.conftest import bbox_model, make_meta

REPO = Path(__file__).resolve().parents[2]


def part_image(bright: bool) -> np.ndarray:
    img = np.full((96, 128, 3), 20, np.uint8)
    if bright:
        img[10:40, 50:90] = 255
    return img


def write_part(folder: Path, name: str, bright: bool, mtime: float | None = None) -> Path:
    """Write through a temporary name and rename in whole, as camera software does."""
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(cv2.imencode(Path(name).suffix, part_image(bright))[1].tobytes())
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    path = folder / name
    os.replace(tmp, path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bbox_model(tmp_path_factory.mktemp("model") / "model.onnx", make_meta(["defect"], size_hw=(64, 64)), score=0.9)


def write_config(root: Path, model: Path, **over: object) -> Path:
    (root / "in").mkdir(parents=True, exist_ok=True)
    source = {"type": "folder", "path": "in", "stable_ms": 30, "poll_ms": 10, "part_id_regex": r"part_(?P<part>\d+)"}
    source.update(over.pop("source", {}))  # type: ignore[arg-type]
    cfg = {"model": str(model), "station": "st1", "sources": [source], **over}
    path = root / "line.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rows(db: Path) -> list[tuple]:
    """The recorded parts (none while the line is still creating the database)."""
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT seq, image, part_id, decision, defects, error FROM parts ORDER BY seq").fetchall()
    except sqlite3.OperationalError as e:  # "no such table": the schema is being written
        if "no such table" not in str(e):
            raise
        return []
    finally:
        con.close()


def test_hot_folder_takes_complete_files_once_in_arrival_order(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    old = time.time() - 60
    write_part(folder, "part_0002.png", True, mtime=old + 2)
    write_part(folder, "part_0001.png", False, mtime=old + 1)
    (folder / ".hidden.png").write_bytes(b"x")
    (folder / "part_0003.png.part").write_bytes(b"x")
    (folder / "notes.txt").write_text("not an image")
    growing = folder / "part_0009.png"
    growing.write_bytes(cv2.imencode(".png", part_image(True))[1].tobytes()[:100])  # still being written
    src = HotFolder(FolderSource(path=folder, stable_ms=50, poll_ms=10), "cam")
    assert src.poll() == []  # first sight: nothing is known to be complete yet
    time.sleep(0.06)
    with growing.open("ab") as f:  # the writer goes on
        f.write(b"\0" * 10)
    items = src.poll()
    assert [i.name for i in items] == ["part_0001.png", "part_0002.png"]  # arrival order, not name order
    assert (items[0].part_id, items[0].key.startswith("cam:part_0001.png:")) == ("part_0001", True)  # no regex: stem
    assert src.poll() == []  # handed out once
    time.sleep(0.06)
    assert [i.name for i in src.poll()] == ["part_0009.png"]  # settled now
    for it in items:
        it.finish(True)
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["part_0001.png", "part_0002.png"]


def test_a_recorded_file_is_finished_without_a_second_inspection(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    path = write_part(folder, "part_0007.png", True, mtime=time.time() - 10)
    st = path.stat()
    key = f"cam:part_0007.png:{st.st_size}:{st.st_mtime_ns}"
    src = HotFolder(FolderSource(path=folder, stable_ms=0, after="delete"), "cam")  # 0: taken at first sight
    assert src.poll(seen_before=lambda k: k == key) == []  # the process died between recording and deleting
    assert not path.exists()


def test_part_id_from_the_file_name() -> None:
    import re

    pat = re.compile(r"(?P<part>\d{4})_(?P<serial>SN\w+)")
    assert part_id_from_name("cam1_4711_SN99.png", pat) == ("4711", "SN99")
    assert part_id_from_name("other.png", pat) == (None, None)
    assert part_id_from_name("x_12.png", re.compile(r"x_(\d+)")) == ("12", None)
    assert part_id_from_name("lot-3.bmp", None) == ("lot-3", None)


def test_line_records_decides_and_moves_every_file(model: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model, record={"keep_accepted": 0.0})
    for i in range(6):
        write_part(tmp_path / "in", f"part_{i:04d}.png", bright=bool(i % 2), mtime=time.time() - 30 + i)
    (tmp_path / "in" / "part_0099.png").write_bytes(b"\x89PNG but truncated")
    os.utime(tmp_path / "in" / "part_0099.png", (time.time() - 1, time.time() - 1))
    r = run_cli("line", cfg, "--until-idle", block_network=tmp_path / "net", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = rows(tmp_path / "line.db")
    assert [(g[1], g[2], g[3], g[4]) for g in got[:6]] == [
        (f"part_{i:04d}.png", f"{i:04d}", "NG" if i % 2 else "OK", i % 2) for i in range(6)]
    assert got[6][1] == "part_0099.png" and got[6][3] == "NG" and "PNG" in got[6][5]  # unreadable: never accepted
    assert sorted(p.name for p in (tmp_path / "in" / "done").iterdir()) == sorted(g[1] for g in got)
    kept = sorted(p.name for p in (tmp_path / "images").rglob("*.png"))
    assert len(kept) == 4 and all("_part_" in k for k in kept)  # the 3 rejects and the unreadable one
    assert "stopped: 7 part(s) recorded (3 OK, 4 NG, 1 unreadable, 0 dropped)" in " ".join(r.stdout.split())
    assert "decisions at defect 0.25" in r.stdout
    from tests.helpers import network_attempts

    assert network_attempts(tmp_path / "net") == []
    # the report: counts, the reject rate with its interval, CSV
    r = run_cli("line", "report", tmp_path / "line.db", "--csv", tmp_path / "parts.csv")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "7 part(s)" in text and "3 OK, 4 NG" in text and "reject rate 57.1% (4/7; 95% CI" in text
    assert (tmp_path / "parts.csv").read_text().count("\n") == 8


def test_keep_policy_never_inspects_a_file_twice(model: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model, source={"after": "keep"})
    for i in range(3):
        write_part(tmp_path / "in", f"part_{i:04d}.png", bright=True, mtime=time.time() - 30 + i)
    for _ in range(2):
        r = run_cli("line", cfg, "--until-idle", timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    assert len(rows(tmp_path / "line.db")) == 3 and len(list((tmp_path / "in").glob("*.png"))) == 3


@pytest.mark.slow
def test_kill_9_loses_no_recorded_part_and_inspects_no_file_twice(model: Path, tmp_path: Path) -> None:
    """Files keep arriving while the line is killed with SIGKILL three times and restarted: in the end every file
    is recorded exactly once and moved, and the record is intact."""
    cfg = write_config(tmp_path, model)
    n = 60
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    stop_writer = threading.Event()

    def writer() -> None:
        for i in range(n):
            write_part(tmp_path / "in", f"part_{i:04d}.png", bright=bool(i % 3 == 0))
            if stop_writer.wait(0.01):
                return

    t = threading.Thread(target=writer)
    t.start()
    try:
        for kill in range(3):
            p = subprocess.Popen([sys.executable, "-m", "edgevision", "line", str(cfg)], env=env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                before = len(rows(tmp_path / "line.db"))
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:  # wait until this process has recorded something
                    time.sleep(0.05)
                    if len(rows(tmp_path / "line.db")) > before + 2 + kill:
                        break
            finally:  # SIGKILL, also when the wait above fails: no line process outlives the test
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=30)
    finally:
        t.join(timeout=30)
    r = run_cli("line", cfg, "--until-idle", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = rows(tmp_path / "line.db")
    names = [g[1] for g in got]
    assert len(names) == n and len(set(names)) == n, (len(names), len(set(names)))
    assert [g[0] for g in got] == list(range(1, n + 1))
    assert sorted(p.name for p in (tmp_path / "in" / "done").iterdir()) == sorted(names)
    assert not list((tmp_path / "in").glob("*.png"))
    for g in got:  # decisions are right, whichever process made them
        assert g[3] == ("NG" if int(g[2]) % 3 == 0 else "OK")
    con = sqlite3.connect(tmp_path / "line.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_sigterm_stops_cleanly_and_metrics_and_health_are_served(model: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model, http={"host": "127.0.0.1", "port": 0})
    p = subprocess.Popen([sys.executable, "-m", "edgevision", "line", str(cfg)], cwd=REPO,
                         env=dict(os.environ, COLUMNS="200", NO_COLOR="1"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = p.stdout.readline()  # type: ignore[union-attr]
            if "/metrics" in line:
                url = line.strip().split("; ")[-1]
        assert url and url.startswith("http://127.0.0.1:"), url
        write_part(tmp_path / "in", "part_0001.png", True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (tmp_path / "in" / "done" / "part_0001.png").exists():
            time.sleep(0.05)
        metrics = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'edgevision_line_parts_total{decision="NG"} 1.0' in metrics
        assert 'edgevision_line_source_up{source="folder0"} 1.0' in metrics
        health = json.loads(urllib.request.urlopen(url.replace("/metrics", "/healthz"), timeout=10).read())
        assert health["healthy"] is True and health["stats"]["parts"] == 1
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert "stopped: 1 part(s) recorded" in " ".join(out.split())
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_back_pressure_drop_oldest_counts_and_finishes_nothing_twice(model: Path, tmp_path: Path) -> None:
    from edgevision.line.pipeline import Line
    from edgevision.line.sources import Item

    cfg = load_line_config(write_config(tmp_path, model, queue={"size": 2, "when_full": "drop_oldest"}))
    line = Line(cfg, sinks=[])
    line._stop = threading.Event()
    finished: list[tuple[str, bool]] = []
    for i in range(5):
        assert line._put(Item("cam", f"{i}.png", finish=lambda rec, n=f"{i}.png": finished.append((n, rec))))
    assert line.stats.dropped == 3 and finished == [("0.png", False), ("1.png", False), ("2.png", False)]
    assert [line.queue.get_nowait().name for _ in range(2)] == ["3.png", "4.png"]
    line.store.close()


def test_video_file_source_with_stride(model: Path, tmp_path: Path) -> None:
    video = tmp_path / "cam.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for i in range(8):
        vw.write(part_image(bright=i < 4))
    vw.release()
    cfg = write_config(tmp_path, model)
    doc = yaml.safe_load(cfg.read_text())
    doc["sources"] = [{"type": "video", "name": "cam", "url": str(video), "stride": 2}]
    cfg.write_text(yaml.safe_dump(doc))
    r = run_cli("line", cfg, "--until-idle", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = rows(tmp_path / "line.db")
    assert [g[1] for g in got] == ["cam#000001", "cam#000002", "cam#000003", "cam#000004"]
    assert [g[3] for g in got] == ["NG", "NG", "OK", "OK"]


@pytest.mark.parametrize("case", ["unknown_key", "nested_typo", "db_credentials", "missing_folder", "bad_regex",
                                  "no_sources"])
def test_bad_configuration_is_one_line(case: str, model: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model)
    doc = yaml.safe_load(cfg.read_text())
    want = {"unknown_key": "did you mean 'station'", "nested_typo": "'sources.0.pol_ms'; did you mean 'poll_ms'",
            "db_credentials": "must not sit in the YAML",
            "missing_folder": "is not a folder", "bad_regex": "part_id_regex: not a valid regular expression",
            "no_sources": "sources"}[case]
    if case == "unknown_key":
        doc["statoin"] = "x"
    elif case == "nested_typo":
        doc["sources"][0]["pol_ms"] = 3
    elif case == "db_credentials":
        doc["record"] = {"db": "postgresql://qa:secret@127.0.0.1/line"}
    elif case == "missing_folder":
        doc["sources"][0]["path"] = "nowhere"
    elif case == "bad_regex":
        doc["sources"][0]["part_id_regex"] = "(unclosed"
    else:
        doc["sources"] = []
    cfg.write_text(yaml.safe_dump(doc))
    r = run_cli("line", cfg, "--until-idle", timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and want in lines[0], r.stderr
    if case == "db_credentials":
        assert "secret" not in r.stderr


def test_record_store_refuses_another_schema(tmp_path: Path) -> None:
    RecordStore(tmp_path / "r.db").close()
    con = sqlite3.connect(tmp_path / "r.db")
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match="schema 99"):
        RecordStore(tmp_path / "r.db")


def test_the_line_imports_nothing_from_training_export_or_quantization() -> None:
    code = ("import sys\n"
            "import edgevision.commands.line, edgevision.line.pipeline, edgevision.line.report, edgevision.line.http\n"
            "import edgevision.line.sources, edgevision.line.record\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics', 'albumentations', 'onnx')\n"
            "       or m.startswith(('edgevision.train', 'edgevision.export', 'edgevision.quantize'))]\n"
            "print(bad)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_retention_removes_old_days_then_the_oldest_files_over_budget(model: Path, tmp_path: Path) -> None:
    import datetime as dt

    from edgevision.line.pipeline import Line

    cfg = load_line_config(write_config(tmp_path, model, record={"retention_days": 7, "retention_gb": 2e-6}))
    line = Line(cfg, sinks=[])
    today = dt.date.today()
    old_day = line.images_dir / (today - dt.timedelta(days=30)).isoformat()
    new_day = line.images_dir / today.isoformat()
    for d in (old_day, new_day):
        d.mkdir(parents=True)
    (old_day / "000000001_a.png").write_bytes(b"x" * 1000)
    for i in range(2, 6):
        (new_day / f"{i:09d}_b.png").write_bytes(b"x" * 1000)
    assert line.prune_images() == 3  # the old day, then the two oldest files of today (budget 2,000 bytes)
    assert not old_day.exists() and sorted(p.name for p in new_day.iterdir()) == ["000000004_b.png", "000000005_b.png"]
    line.store.close()


def test_a_record_that_cannot_be_written_pauses_inspection_and_says_so(model: Path, tmp_path: Path) -> None:
    from edgevision.line.pipeline import Line

    cfg = load_line_config(write_config(tmp_path, model))
    line = Line(cfg, sinks=[])
    write_part(tmp_path / "in", "part_0001.png", True, mtime=time.time() - 10)
    real, calls = line.store.record, []

    def failing(*a: object, **k: object) -> object:
        calls.append(1)
        if len(calls) < 2:
            raise sqlite3.OperationalError("database or disk is full")
        return real(*a, **k)

    line.store.record = failing  # type: ignore[method-assign]
    health: list[tuple[bool, str]] = []
    stop = threading.Event()
    timer = threading.Timer(0.5, lambda: health.append(line.healthy()))
    timer.start()
    line.run(stop, until_idle=True)
    assert len(calls) == 2 and health and health[0][0] is False and "disk is full" in health[0][1]
    assert rows(tmp_path / "line.db")[0][1] == "part_0001.png" and line.record_error is None


@pytest.mark.parametrize("name", ["folder-opcua-mqtt.yaml", "video-mqtt.yaml"])
def test_shipped_line_configs_are_valid(name: str, tmp_path: Path) -> None:
    from edgevision.line.config import LineConfig

    doc = yaml.safe_load((REPO / "configs" / "line" / name).read_text())
    cfg = LineConfig(**doc)
    assert cfg.sources and (cfg.sinks.mqtt is not None)


@pytest.mark.slow
def test_a_thousand_files_waiting_at_start_up_are_each_inspected_once_in_arrival_order(model: Path,
                                                                                       tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model, record={"keep_rejects": False})
    data = cv2.imencode(".png", part_image(True))[1].tobytes()
    base = time.time() - 3600
    n = 1000
    for i in range(n):  # written in reverse name order: arrival (mtime) order is what counts
        path = tmp_path / "in" / f"part_{n - 1 - i:05d}.png"
        path.write_bytes(data)
        os.utime(path, (base + i, base + i))
    r = run_cli("line", cfg, "--until-idle", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    got = [g[1] for g in rows(tmp_path / "line.db")]
    assert got == [f"part_{n - 1 - i:05d}.png" for i in range(n)]
    assert not list((tmp_path / "in").glob("*.png")) and len(list((tmp_path / "in" / "done").iterdir())) == n


def test_a_camera_that_is_gone_is_a_status_and_is_reopened_with_backoff(model: Path, tmp_path: Path) -> None:
    from edgevision.line.pipeline import Line

    video = tmp_path / "cam.avi"
    video.write_bytes(b"")  # the camera gives nothing OpenCV can open yet
    cfg = write_config(tmp_path, model)
    doc = yaml.safe_load(cfg.read_text())
    doc["sources"] = [{"type": "video", "name": "cam", "url": str(video), "reconnect_min_s": 0.1,
                       "reconnect_max_s": 0.4}]
    cfg.write_text(yaml.safe_dump(doc))
    line = Line(load_line_config(cfg), sinks=[])
    stop = threading.Event()
    runner = threading.Thread(target=line.run, args=(stop,), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and line.status()["sources"][0]["state"] != "down":
            time.sleep(0.05)
        src = line.status()["sources"][0]
        assert src["state"] == "down" and "cannot open" in src["detail"] and "retrying in" in src["detail"]
        healthy, detail = line.healthy()
        assert not healthy and "cam: cannot open" in detail
        vw = cv2.VideoWriter(str(tmp_path / "tmp.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
        for _ in range(3):
            vw.write(part_image(True))
        vw.release()
        os.replace(tmp_path / "tmp.avi", video)  # the camera is back
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and line.status()["stats"]["parts"] < 3:
            time.sleep(0.05)
        assert line.status()["stats"]["parts"] == 3
    finally:
        stop.set()
        runner.join(timeout=30)
