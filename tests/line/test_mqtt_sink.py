"""`edgevision.line.sinks.mqtt.MqttSink` against a real broker (amqtt on loopback) and a real paho subscriber.

Every part goes through `RecordStore.record(..., outbox=["mqtt"])` as in the line; the outbox is then checked
through a connection of its own. Waits are bounded (timeouts), nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgevision.core.errors import ConfigError
from edgevision.line.config import MqttSinkConfig
from edgevision.line.record import Outbox, RecordStore
from edgevision.line.sinks.base import PartDecision
from edgevision.line.sinks.mqtt import MqttSink, topic_level
from tests.line.conftest import LocalBroker, MqttCollector, Received

STATION = "st1"
PARTS = f"edgevision/{STATION}/parts"
STATUS = f"edgevision/{STATION}/status"


def _decision(part_id: str | None, i: int = 0) -> PartDecision:
    return PartDecision(seq=0, time=f"2025-01-01T00:00:{i % 60:02d}.000Z", station=STATION, source="cam",
                        part_id=part_id, serial=None, image=f"img{i}.png", image_sha256="0" * 64,
                        decision="NG" if i % 3 == 0 else "OK", defects=1 if i % 3 == 0 else 0,
                        classes={"scratch": 1} if i % 3 == 0 else {}, detections=[], inference_ms=1.5,
                        model="m.onnx", model_sha256="1" * 64, thresholds={"scratch": 0.5})


def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def _outbox_count(db: Path) -> int:
    box = Outbox(db, "mqtt")
    try:
        return box.count()
    finally:
        box.close()


def _parts(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.topic.startswith(PARTS + "/")]


def _seqs(messages: list[Received]) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in _parts(messages)]


def _first_occurrences(seqs: list[int]) -> list[int]:
    return list(dict.fromkeys(seqs))  # duplicates (QoS 1 after a reconnect) dropped, first arrivals in order


class Line:
    """A record store plus the MQTT sinks made on it (closed at teardown)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.store = RecordStore(db)
        self.sinks: list[MqttSink] = []

    def sink(self, port: int, *, start: bool = True, max_inflight: int = 1, **cfg: Any) -> MqttSink:
        sink = MqttSink(MqttSinkConfig(host="127.0.0.1", port=port, keepalive_s=5, **cfg), STATION,
                        Outbox(self.db, "mqtt"), max_inflight=max_inflight)
        self.sinks.append(sink)
        if start:
            sink.start()
        return sink

    def part(self, sink: MqttSink | None, part_id: str | None, i: int = 0) -> PartDecision:
        recorded = self.store.record(_decision(part_id, i), image_key=None, outbox=["mqtt"])
        if sink is not None:
            sink.publish(recorded)
        return recorded

    def close(self) -> None:
        for sink in self.sinks:
            sink.close(1.0)
        self.store.close()


@pytest.fixture
def line(tmp_path: Path) -> Iterator[Line]:
    made = Line(tmp_path / "line.db")
    try:
        yield made
    finally:
        made.close()


@pytest.mark.parametrize("qos", [1, 0])
def test_each_part_is_one_message_in_order_and_the_outbox_empties(
        qos: int, line: Line, mqtt_broker: LocalBroker, mqtt_subscriber: Callable[..., MqttCollector]) -> None:
    sub = mqtt_subscriber(mqtt_broker.port, f"{PARTS}/#")
    sink = line.sink(mqtt_broker.port, qos=qos)
    recorded = [line.part(sink, f"P{i}", i) for i in range(5)]

    got = sub.wait_for(lambda m: len(_parts(m)) >= 5)
    assert [m.topic for m in got] == [f"{PARTS}/P{i}" for i in range(5)]
    assert [PartDecision.from_json(m.payload) for m in got] == recorded  # the stored message, seq in order
    assert _seqs(got) == sorted(_seqs(got))
    _until(lambda: _outbox_count(line.db) == 0, 5, "the outbox empties once the broker acknowledged")
    _until(lambda: sink.status().sent == 5 and sink.status().pending == 0, 5, "status counts the deliveries")
    status = sink.status()
    assert (status.name, status.state, status.pending, status.failed) == ("mqtt", "up", 0, 0)


def test_a_broker_outage_loses_nothing_and_never_blocks_publish(
        line: Line, mqtt_broker: LocalBroker, mqtt_subscriber: Callable[..., MqttCollector]) -> None:
    sink = line.sink(mqtt_broker.port)
    _until(lambda: sink.status().state == "up", 5, "the sink connects")
    mqtt_broker.stop()
    _until(lambda: sink.status().state == "down", 5, "the sink sees the broker go")

    slowest = 0.0
    recorded = []
    for i in range(20):
        d = line.store.record(_decision(f"P{i}", i), image_key=None, outbox=["mqtt"])
        t0 = time.perf_counter()
        sink.publish(d)
        slowest = max(slowest, time.perf_counter() - t0)
        recorded.append(d.seq)
    assert slowest < 0.05
    _until(lambda: sink.status().pending == 20, 5, "pending shows the 20 waiting messages")
    status = sink.status()
    assert status.state == "down" and status.failed >= 1 and "127.0.0.1" in status.detail
    assert _outbox_count(line.db) == 20

    mqtt_broker.start(hold=True)  # the sink's CONNECT waits until the new subscriber is in
    sub = mqtt_subscriber(mqtt_broker.port, f"{PARTS}/#")
    mqtt_broker.release()
    got = sub.wait_for(lambda m: set(recorded) <= set(_seqs(m)), 20)
    assert _first_occurrences(_seqs(got)) == recorded  # every part, in order (QoS 1 may repeat one)
    _until(lambda: _outbox_count(line.db) == 0, 5, "the outbox empties")
    _until(lambda: sink.status().pending == 0, 5, "pending back to 0")
    assert sink.status().state == "up" and sink.status().sent >= 20


def test_messages_survive_a_restart_of_the_process(
        line: Line, mqtt_broker: LocalBroker, mqtt_subscriber: Callable[..., MqttCollector]) -> None:
    mqtt_broker.stop()
    first = line.sink(mqtt_broker.port)
    recorded = [line.part(first, f"P{i}", i).seq for i in range(10)]
    _until(lambda: first.status().pending == 10, 5, "10 waiting")
    t0 = time.monotonic()
    first.close(2.0)  # the broker is down: nothing to flush, it returns at once
    assert time.monotonic() - t0 < 1.5
    first.close(2.0)  # idempotent
    assert _outbox_count(line.db) == 10

    second = line.sink(mqtt_broker.port)  # a new process: a new sink on the same database
    assert second.status().pending == 10
    mqtt_broker.start(hold=True)
    sub = mqtt_subscriber(mqtt_broker.port, f"{PARTS}/#")
    mqtt_broker.release()
    got = sub.wait_for(lambda m: set(recorded) <= set(_seqs(m)), 20)
    assert _first_occurrences(_seqs(got)) == recorded
    _until(lambda: _outbox_count(line.db) == 0, 5, "the outbox empties")


def test_a_part_id_is_exactly_one_safe_topic_level(
        line: Line, mqtt_broker: LocalBroker, mqtt_subscriber: Callable[..., MqttCollector]) -> None:
    sub = mqtt_subscriber(mqtt_broker.port, "#")
    sink = line.sink(mqtt_broker.port)
    ids = ["a/b+c#d", "//", "+", "#", None, "", "  ", "x\x00y\nz"]
    recorded = [line.part(sink, part_id, i) for i, part_id in enumerate(ids)]
    got = sub.wait_for(lambda m: len(_parts(m)) >= len(ids))
    topics = [m.topic for m in _parts(got)]
    assert topics == [f"{PARTS}/a_b_c_d", f"{PARTS}/__", f"{PARTS}/_", f"{PARTS}/_",
                      f"{PARTS}/seq-{recorded[4].seq}", f"{PARTS}/seq-{recorded[5].seq}",
                      f"{PARTS}/seq-{recorded[6].seq}", f"{PARTS}/x_y_z"]
    assert all(t.count("/") == PARTS.count("/") + 1 for t in topics)
    assert [json.loads(m.payload)["part_id"] for m in _parts(got)] == ids  # the payload keeps the real id


def test_topic_level_unit() -> None:
    assert topic_level("A-12.3") == "A-12.3"
    assert topic_level("a/b") == "a_b"
    assert topic_level(None) == ""
    assert topic_level("x" * 500) == "x" * 200
    assert topic_level("ünï") == "ünï"


def test_the_status_topic_shows_online_then_offline_retained(
        line: Line, mqtt_broker: LocalBroker, mqtt_subscriber: Callable[..., MqttCollector]) -> None:
    sink = line.sink(mqtt_broker.port)
    _until(lambda: sink.status().state == "up", 5, "the sink connects")
    sub = mqtt_subscriber(mqtt_broker.port, STATUS)  # subscribes after the fact: gets the retained message
    got = sub.wait_for(lambda m: len(m) >= 1)
    first = json.loads(got[0].payload)
    assert got[0].retain and first["state"] == "online" and first["station"] == STATION and first["healthy"]

    sink.heartbeat(False, "source cam1 down")
    got = sub.wait_for(lambda m: len(m) >= 2)
    assert json.loads(got[1].payload) | {"time": None} == first | {"healthy": False, "detail": "source cam1 down",
                                                                   "time": None}
    sink.heartbeat(False, "source cam1 down")  # unchanged: nothing new on the bus

    sink.close(2.0)
    got = sub.wait_for(lambda m: len(m) >= 3)
    assert [json.loads(m.payload)["state"] for m in got] == ["online", "online", "offline"]
    late = mqtt_subscriber(mqtt_broker.port, STATUS)
    retained = late.wait_for(lambda m: len(m) >= 1)[0]
    assert retained.retain and json.loads(retained.payload)["state"] == "offline"
    assert sink.status().state == "down"


_CHILD = textwrap.dedent(
    """
    import sys, time
    from edgevision.line.config import MqttSinkConfig
    from edgevision.line.record import Outbox
    from edgevision.line.sinks.mqtt import MqttSink
    sink = MqttSink(MqttSinkConfig(host="127.0.0.1", port=int(sys.argv[1]), keepalive_s=5), "st1",
                    Outbox(sys.argv[2], "mqtt"))
    sink.start()
    for _ in range(500):
        if sink.status().state == "up":
            print("up", flush=True)
            break
        time.sleep(0.01)
    time.sleep(30)
    """
)


def test_a_killed_process_shows_offline_through_its_last_will(
        tmp_path: Path, mqtt_broker: LocalBroker, mqtt_subscriber: Callable[..., MqttCollector]) -> None:
    sub = mqtt_subscriber(mqtt_broker.port, STATUS)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(mqtt_broker.port), str(tmp_path / "line.db")],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "up"
        sub.wait_for(lambda m: len(m) >= 1 and json.loads(m[0].payload)["state"] == "online")
        child.kill()  # SIGKILL: no DISCONNECT, the broker publishes the will
        got = sub.wait_for(lambda m: len(m) >= 2, 10)
        assert json.loads(got[1].payload) == {"state": "offline", "station": STATION, "client_id": "edgevision-st1"}
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def test_a_wider_window_delivers_everything(
        line: Line, mqtt_broker: LocalBroker, mqtt_subscriber: Callable[..., MqttCollector]) -> None:
    sub = mqtt_subscriber(mqtt_broker.port, f"{PARTS}/#")
    sink = line.sink(mqtt_broker.port, max_inflight=8)
    recorded = [line.part(sink, f"P{i}", i).seq for i in range(30)]
    got = sub.wait_for(lambda m: set(recorded) <= set(_seqs(m)), 10)
    assert sorted(set(_seqs(got))) == recorded
    _until(lambda: _outbox_count(line.db) == 0, 5, "the outbox empties")


def test_close_flushes_what_it_can(line: Line, mqtt_broker: LocalBroker,
                                   mqtt_subscriber: Callable[..., MqttCollector]) -> None:
    sub = mqtt_subscriber(mqtt_broker.port, f"{PARTS}/#")
    sink = line.sink(mqtt_broker.port)
    recorded = [line.part(sink, f"P{i}", i).seq for i in range(10)]
    sink.close(5.0)  # right away: the thread delivers the 10 before it says goodbye
    assert _outbox_count(line.db) == 0
    assert _seqs(sub.wait_for(lambda m: len(_parts(m)) >= 10)) == recorded
    sink.publish(_decision("late"))  # after close: ignored, never raises


def test_close_right_after_start_still_delivers_what_waits(
        line: Line, mqtt_broker: LocalBroker, mqtt_subscriber: Callable[..., MqttCollector]) -> None:
    sub = mqtt_subscriber(mqtt_broker.port, f"{PARTS}/#")
    recorded = [line.part(None, f"P{i}", i).seq for i in range(3)]  # left by an earlier run
    sink = line.sink(mqtt_broker.port, start=False)
    assert sink.status().pending == 3 and sink.status().state == "starting"
    sink.start()
    sink.close(5.0)
    assert _outbox_count(line.db) == 0
    assert _seqs(sub.wait_for(lambda m: len(_parts(m)) >= 3)) == recorded


def test_close_without_start_releases_the_outbox(line: Line) -> None:
    sink = line.sink(1, start=False)
    sink.close(1.0)
    sink.start()  # after close: nothing happens
    assert sink.status().state == "starting"


@pytest.mark.parametrize(("cfg", "message"), [
    ({"topic": "edgevision/{line}/{part_id}"}, "cannot format"),
    ({"topic": "edgevision/#/{part_id}"}, "wildcard"),
    ({"status_topic": "{part_id}/status"}, "cannot format"),
    ({"username": "u", "password_file": Path("/nonexistent/secret")}, "cannot read the secret file"),
    ({"password_env": "EDGEVISION_TEST_UNSET_VAR"}, "is not set"),
    ({"tls_ca": Path("/nonexistent/ca.pem")}, "TLS"),
    ({"tls_cert": Path("/nonexistent/c.pem")}, "need tls_ca"),
])
def test_configuration_errors_are_one_line(tmp_path: Path, cfg: dict[str, Any], message: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEVISION_TEST_UNSET_VAR", raising=False)
    box = Outbox(tmp_path / "line.db", "mqtt")
    try:
        with pytest.raises(ConfigError, match=message) as e:
            MqttSink(MqttSinkConfig(**cfg), STATION, box)
        assert "\n" not in str(e.value)
    finally:
        box.close()


def test_a_password_needs_a_username(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEVISION_TEST_MQTT_PW", "s3cret")
    box = Outbox(tmp_path / "line.db", "mqtt")
    try:
        with pytest.raises(ConfigError, match="needs a username"):
            MqttSink(MqttSinkConfig(password_env="EDGEVISION_TEST_MQTT_PW"), STATION, box)
    finally:
        box.close()


def _certificates(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    pytest.importorskip("cryptography")
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / f"{name}-ca.pem", folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_tls_to_the_broker_verifies_its_certificate(
        tmp_path: Path, line: Line, mqtt_subscriber: Callable[..., MqttCollector]) -> None:
    ca, cert, key = _certificates(tmp_path, "good")
    other_ca, _, _ = _certificates(tmp_path, "other")
    broker = LocalBroker(tls=(cert, key))
    try:
        broker.start()
        assert broker.tls_port is not None
        sub = mqtt_subscriber(broker.port, f"{PARTS}/#")  # the plain listener
        sink = line.sink(broker.tls_port, tls_ca=ca)
        recorded = [line.part(sink, f"P{i}", i).seq for i in range(3)]
        assert _seqs(sub.wait_for(lambda m: len(_parts(m)) >= 3)) == recorded
        _until(lambda: _outbox_count(line.db) == 0, 5, "the outbox empties")

        stranger = MqttSink(MqttSinkConfig(host="127.0.0.1", port=broker.tls_port, tls_ca=other_ca,
                                           client_id="stranger"), STATION, Outbox(line.db, "other"))
        try:
            stranger.start()
            _until(lambda: stranger.status().state == "down", 5, "a broker the CA did not sign is refused")
            assert "certificate verify failed" in stranger.status().detail.lower()
        finally:
            stranger.close(1.0)
        sub.close()
    finally:
        line.close()
        broker.close()


def test_username_and_password_over_tls(tmp_path: Path, line: Line, mqtt_subscriber: Callable[..., MqttCollector],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker that lets in only its users, over TLS: the login from a file delivers; a wrong password is a down
    status naming the refusal, and its parts wait in the outbox (nothing lost, nothing in clear text)."""
    ca, cert, key = _certificates(tmp_path, "auth")
    broker = LocalBroker(tls=(cert, key), users={"line-st1": "c0rrect horse", "qa": "qa-pw"})
    secret = tmp_path / "mqtt.secret"
    secret.write_text("c0rrect horse\n")
    try:
        broker.start()
        assert broker.tls_port is not None
        with pytest.raises(TimeoutError):  # anonymous clients are refused by this broker
            mqtt_subscriber(broker.port, f"{PARTS}/#", timeout=1.0)
        sub = mqtt_subscriber(broker.port, f"{PARTS}/#", login=("qa", "qa-pw"))
        sink = line.sink(broker.tls_port, tls_ca=ca, username="line-st1", password_file=secret)
        recorded = [line.part(sink, f"P{i}", i).seq for i in range(3)]
        assert _seqs(sub.wait_for(lambda m: len(_parts(m)) >= 3)) == recorded
        _until(lambda: _outbox_count(line.db) == 0, 5, "the outbox empties")

        sink.close(1.0)

        monkeypatch.setenv("EV_TEST_MQTT_WRONG", "guess")
        wrong = line.sink(broker.tls_port, tls_ca=ca, username="line-st1", password_env="EV_TEST_MQTT_WRONG")
        waiting = line.part(wrong, "W1", 9).seq
        _until(lambda: wrong.status().state == "down" and "refused" in wrong.status().detail, 10,
               "a wrong password is refused")
        assert "Not authorized" in wrong.status().detail and "guess" not in wrong.status().detail
        assert wrong.status().pending == 1 and _outbox_count(line.db) == 1  # kept until the login is fixed
        wrong.close(1.0)
        fixed = line.sink(broker.tls_port, tls_ca=ca, username="line-st1", password_file=secret)
        assert _seqs(sub.wait_for(lambda m: len(_parts(m)) >= 4))[3] == waiting
        _until(lambda: _outbox_count(line.db) == 0 and fixed.status().state == "up", 5, "delivered once fixed")
        sub.close()
    finally:
        line.close()
        broker.close()
