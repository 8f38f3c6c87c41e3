"""MQTT triggers (`edgevision.line.triggers`): part ids and serials from trigger messages, against a real broker."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as mqtt
import pytest
import yaml

from edgevision.core.errors import ConfigError
from edgevision.line.config import load_line_config
from edgevision.line.pipeline import Line
from edgevision.line.triggers import parse_trigger
from tests.line.conftest import LocalBroker, free_port
from tests.line.test_line import part_image, write_config, write_part
from tests.runtime.conftest import bbox_model, make_meta

TOPIC = "plant/st1/trigger"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The line tests' model: a box with score 0.9 on bright images."""
    return bbox_model(tmp_path_factory.mktemp("model") / "model.onnx", make_meta(["defect"], size_hw=(64, 64)), score=0.9)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def parts(db: Path) -> list[tuple[str, str | None, str | None]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT image, part_id, serial FROM parts ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # the line has not created its tables yet
        return []
    finally:
        con.close()


class Publisher:
    """The PLC's side: a paho client publishing trigger messages (QoS 1, waits for the PUBACK)."""

    def __init__(self, port: int, login: tuple[str, str] | None = None) -> None:
        self._connected = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"plc-{uuid.uuid4().hex[:8]}",
                                   protocol=mqtt.MQTTv311)
        if login is not None:
            self._client.username_pw_set(*login)
        self._client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else self._connected.set()
        self._client.connect("127.0.0.1", port, keepalive=10)
        self._client.loop_start()
        if not self._connected.wait(10):
            self.close()
            raise TimeoutError("publisher: no CONNACK within 10 s")

    def send(self, payload: str) -> None:
        info = self._client.publish(TOPIC, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), f"no PUBACK for {payload!r}"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()


class Running:
    """A `Line` running in a thread until `close`."""

    def __init__(self, cfg: Path) -> None:
        self.db = cfg.parent / "line.db"
        self.line = Line(load_line_config(cfg))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.line.run, args=(self.stop,), name="line", daemon=True)
        self.thread.start()

    def trigger(self) -> dict[str, Any]:
        status: dict[str, Any] = self.line.status()["sources"][0]["trigger"]
        return status

    def wait_trigger(self, what: str, predicate: Callable[[dict[str, Any]], bool]) -> None:
        wait_until(lambda: predicate(self.trigger()), f"trigger status {what} (last: {self.trigger()})")

    def wait_parts(self, n: int) -> list[tuple[str, str | None, str | None]]:
        wait_until(lambda: len(parts(self.db)) >= n, f"{n} recorded part(s)")
        return parts(self.db)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the line did not stop"


@contextlib.contextmanager
def running(cfg: Path) -> Iterator[Running]:
    r = Running(cfg)
    try:
        yield r
    finally:
        r.close()


def folder_config(root: Path, model: Path, port: int, **trigger: Any) -> Path:
    trig = {"mqtt_port": port, "topic": "plant/+/trigger", **trigger}
    return write_config(root, model, source={"name": "cam", "part_id_regex": None, "trigger": trig},
                        record={"keep_accepted": 0.0}, drift={"enabled": False})


def test_parse_trigger() -> None:
    assert parse_trigger(b'{"part_id": "4711", "serial": "SN1"}') == ("4711", "SN1")
    assert parse_trigger(b'{"part_id": 42}') == ("42", None)
    assert parse_trigger(b'{"id": "7", "sn": 9}', "id", "sn") == ("7", "9")
    assert parse_trigger(b" P-0815\n") == ("P-0815", None)  # not JSON: the text is the part id
    assert parse_trigger(b'"P-1"') == ("P-1", None)
    assert parse_trigger(b"4711") == ("4711", None)
    for bad in (b"", b"  ", b'{"serial": "SN1"}', b'{"part_id": null}', b'{"part_id": ["x"]}', b"\xff\xfe",
                b"x" * 300):
        assert parse_trigger(bad) is None, bad


def test_folder_part_ids_come_from_triggers_in_order_and_stale_ones_are_discarded(
        model: Path, tmp_path: Path, mqtt_broker: LocalBroker) -> None:
    cfg = folder_config(tmp_path, model, mqtt_broker.port, max_age_s=2.0)
    plc = Publisher(mqtt_broker.port)
    try:
        with running(cfg) as line:
            line.wait_trigger("up", lambda s: s["state"] == "up")
            plc.send('{"part_id": "4711", "serial": "SN1"}')
            line.wait_trigger("1 received", lambda s: s["received"] == 1)
            write_part(tmp_path / "in", "img_a.png", True)
            assert line.wait_parts(1) == [("img_a.png", "4711", "SN1")]

            # two triggers, then two images: matched in order (one at a time: amqtt may reorder back-to-back)
            plc.send('{"part_id": "A1", "serial": "S1"}')
            line.wait_trigger("2 received", lambda s: s["received"] == 2)
            plc.send('{"part_id": "A2", "serial": "S2"}')
            line.wait_trigger("2 pending", lambda s: s["received"] == 3 and s["pending"] == 2)
            old = time.time() - 5
            write_part(tmp_path / "in", "img_b.png", False, mtime=old)
            write_part(tmp_path / "in", "img_c.png", True, mtime=old + 1)
            assert line.wait_parts(3)[1:] == [("img_b.png", "A1", "S1"), ("img_c.png", "A2", "S2")]

            # a trigger whose image never came: discarded once older than max_age_s, the next image keeps its name
            plc.send('{"part_id": "LOST", "serial": "S9"}')
            line.wait_trigger("stale", lambda s: s["received"] == 4 and s["stale"] == 1 and s["pending"] == 0)
            write_part(tmp_path / "in", "img_d.png", False)
            assert line.wait_parts(4)[3] == ("img_d.png", "img_d", None)
            status = line.trigger()
            assert (status["taken"], status["stale"], status["invalid"], status["pending"]) == (3, 1, 0, 0)
    finally:
        plc.close()


def test_plain_text_payload_is_the_part_id(model: Path, tmp_path: Path, mqtt_broker: LocalBroker) -> None:
    cfg = folder_config(tmp_path, model, mqtt_broker.port)
    plc = Publisher(mqtt_broker.port)
    try:
        with running(cfg) as line:
            line.wait_trigger("up", lambda s: s["state"] == "up")
            plc.send('{"serial": "no part id"}')  # ignored, counted invalid
            plc.send("P-0815")
            line.wait_trigger("2 received", lambda s: s["received"] == 2 and s["pending"] == 1)
            assert line.trigger()["invalid"] == 1
            write_part(tmp_path / "in", "img_x.png", True)
            assert line.wait_parts(1) == [("img_x.png", "P-0815", None)]
    finally:
        plc.close()


def test_video_in_trigger_mode_inspects_one_frame_per_trigger(
        model: Path, tmp_path: Path, mqtt_broker: LocalBroker) -> None:
    video = tmp_path / "cam.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for i in range(10):
        vw.write(part_image(bright=i % 2 == 0))
    vw.release()
    cfg = write_config(tmp_path, model, record={"keep_accepted": 0.0}, drift={"enabled": False})
    doc = yaml.safe_load(cfg.read_text())
    doc["sources"] = [{"type": "video", "name": "cam", "url": str(video), "loop": True, "reconnect_min_s": 0.1,
                       "reconnect_max_s": 0.2, "mode": "trigger",
                       "trigger": {"mqtt_port": mqtt_broker.port, "topic": TOPIC}}]
    cfg.write_text(yaml.safe_dump(doc))
    plc = Publisher(mqtt_broker.port)
    try:
        with running(cfg) as line:
            line.wait_trigger("up", lambda s: s["state"] == "up")
            wait_until(lambda: line.line.sources[0].status().state != "starting", "the video to be opened")
            time.sleep(0.3)  # frames read without a trigger are discarded
            assert parts(line.db) == []
            for i in range(3):
                plc.send(f'{{"part_id": "V{i}", "serial": "SN-V{i}"}}')
                line.wait_parts(i + 1)
            time.sleep(0.5)  # the file keeps looping: no trigger, no more parts
            got = parts(line.db)
            assert [(p[1], p[2]) for p in got] == [("V0", "SN-V0"), ("V1", "SN-V1"), ("V2", "SN-V2")]
            assert all(p[0].startswith("cam#") for p in got)
            assert line.trigger()["taken"] == 3 and line.line.sources[0].status().taken == 3
    finally:
        plc.close()


def test_broker_down_at_start_the_line_still_inspects_and_reconnects(model: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    cfg = folder_config(tmp_path, model, port)
    with running(cfg) as line:
        time.sleep(0.5)
        status = line.trigger()
        assert status["state"] == "down" and str(port) in status["detail"]
        write_part(tmp_path / "in", "img_1.png", True)
        assert line.wait_parts(1) == [("img_1.png", "img_1", None)]  # no trigger: the file name's part id
        assert line.line.status()["sources"][0]["state"] == "up"
        broker = LocalBroker(port)  # the broker comes up: the client's backoff reconnects it
        try:
            broker.start()
            line.wait_trigger("up after the broker started", lambda s: s["state"] == "up")
            plc = Publisher(port)
            try:
                plc.send("LATE-1")
                line.wait_trigger("1 received", lambda s: s["received"] == 1)
                write_part(tmp_path / "in", "img_2.png", False)
                assert line.wait_parts(2)[1] == ("img_2.png", "LATE-1", None)
            finally:
                plc.close()
        finally:
            line.close()  # before the broker goes: no reconnect attempts against a stopping broker
            broker.close()


def test_trigger_configuration_errors(model: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model)
    doc = yaml.safe_load(cfg.read_text())
    doc["sources"] = [{"type": "video", "url": str(tmp_path / "x.avi"), "mode": "trigger"}]
    cfg.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="mode trigger needs a trigger"):
        load_line_config(cfg)
    cfg = folder_config(tmp_path, model, 1883, password_env="EDGEVISION_TEST_NO_SUCH_VARIABLE", username="u")
    with pytest.raises(ConfigError, match="EDGEVISION_TEST_NO_SUCH_VARIABLE"):
        Line(load_line_config(cfg))
    cfg = folder_config(tmp_path, model, 1883, topic="plant/a#")
    with pytest.raises(ConfigError, match="not a valid topic filter"):
        Line(load_line_config(cfg))


def test_triggers_over_tls_with_a_login(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker that lets in only its users, triggers over TLS: the line logs in with the password from a file;
    a wrong password is a down trigger status (the line still inspects, with file names as part ids)."""
    from tests.line.test_mqtt_sink import _certificates

    ca, cert, key = _certificates(tmp_path, "broker")
    broker = LocalBroker(tls=(cert, key), users={"line": "tr1gger-pw", "plc": "plc-pw"})
    secret = tmp_path / "trigger.secret"
    secret.write_text("tr1gger-pw\n")
    broker.start()
    try:
        assert broker.tls_port is not None
        cfg = folder_config(tmp_path, model, broker.tls_port, tls_ca=str(ca), username="line",
                            password_file=str(secret))
        plc = Publisher(broker.port, login=("plc", "plc-pw"))
        try:
            with running(cfg) as line:
                line.wait_trigger("up", lambda s: s["state"] == "up")
                plc.send('{"part_id": "TLS-1", "serial": "SN-T"}')
                line.wait_trigger("1 received", lambda s: s["received"] == 1)
                write_part(tmp_path / "in", "img_t.png", True)
                assert line.wait_parts(1) == [("img_t.png", "TLS-1", "SN-T")]
        finally:
            plc.close()

        monkeypatch.setenv("EV_TEST_TRIGGER_PW", "wrong")
        other = tmp_path / "other"
        other.mkdir()
        cfg = folder_config(other, model, broker.tls_port, tls_ca=str(ca), username="line",
                            password_env="EV_TEST_TRIGGER_PW")
        with running(cfg) as line:
            line.wait_trigger("refused", lambda s: s["state"] == "down" and "refused" in s["detail"])
            assert "Not authorized" in line.trigger()["detail"] and "wrong" not in line.trigger()["detail"]
            assert not line.line.healthy()[0] and "cam trigger:" in line.line.healthy()[1]
            write_part(other / "in", "img_u.png", False)
            assert line.wait_parts(1) == [("img_u.png", "img_u", None)]
    finally:
        broker.close()
