"""OPC UA triggers (`edgevision.line.triggers.OpcUaTriggers`): part ids and serials from the node a PLC writes,
against a real asyncua server on 127.0.0.1 standing for the PLC: every write a trigger (the same id twice too,
writes faster than the publishing interval each kept), the value at subscription not one, numbers as text, the
server down at start and lost, a pinned server certificate, a user login over sign-encrypt, the line end to end
with a hot folder, and the configuration's errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("asyncua")

import yaml  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from edgevision.core.errors import ConfigError  # noqa: E402
from edgevision.line.config import OpcUaTriggerConfig, load_line_config  # noqa: E402
from edgevision.line.triggers import OpcUaTriggers, id_text, make_triggers  # noqa: E402
from tests.line.conftest import make_opcua_cert  # noqa: E402
from tests.line.opcua_plc import Plc  # noqa: E402
from tests.line.test_line import write_config, write_part  # noqa: E402
from tests.line.test_triggers import parts, running  # noqa: E402
from tests.runtime.conftest import bbox_model, make_meta  # noqa: E402

T = 20.0


@pytest.fixture(scope="module")
def plc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plc]:
    p = Plc(tmp_path_factory.mktemp("plc"))
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bbox_model(tmp_path_factory.mktemp("model") / "model.onnx", make_meta(["defect"], size_hw=(64, 64)), score=0.9)


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgevision-opcua-trigger") and t.is_alive()]


@pytest.fixture
def triggers() -> Iterator[Callable[..., OpcUaTriggers]]:
    """Makes started triggers; all closed at the end, and no link thread left."""
    made: list[OpcUaTriggers] = []

    def make(url: str, part_node: str, **cfg: Any) -> OpcUaTriggers:
        trig = OpcUaTriggers(OpcUaTriggerConfig(protocol="opcua", endpoint=url, part_node=part_node, **cfg), "cam",
                             station="st1")
        made.append(trig)
        trig.start()
        return trig

    yield make
    for t in made:
        t.close()
    assert _threads() == []


def _wait(cond: Callable[[], Any], what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _up(trig: OpcUaTriggers) -> Callable[[], bool]:
    return lambda: trig.status()["state"] == "up"


def _taken(trig: OpcUaTriggers, n: int) -> list[tuple[str, str | None]]:
    """The next ``n`` triggers, in order (waiting for each)."""
    out: list[tuple[str, str | None]] = []
    deadline = time.monotonic() + T
    while len(out) < n and time.monotonic() < deadline:
        got = trig.take()
        if got is None:
            time.sleep(0.01)
        else:
            out.append(got)
    return out


# ---------------------------------------------------------------------- against the PLC


def test_every_write_is_one_trigger_in_order_with_its_serial(plc: Plc, triggers: Callable[..., OpcUaTriggers]) -> None:
    plc.write("TrigPart", "BEFORE")  # the node's value when the line subscribes: the previous part's, no trigger
    trig = triggers(plc.url, plc.node("TrigPart"), serial_node=plc.node("TrigSerial"), publishing_ms=50)
    _wait(_up(trig), "the subscription")
    assert trig.status()["node"] == plc.node("TrigPart") and trig.status()["protocol"] == "opcua"
    time.sleep(0.3)  # the initial notification has arrived meanwhile: not counted
    assert trig.take() is None and trig.status()["received"] == 0

    plc.write("TrigSerial", "SN-1")
    plc.write("TrigPart", "4711")
    assert _taken(trig, 1) == [("4711", "SN-1")]
    plc.write("TrigSerial", "SN-2")
    plc.write("TrigPart", "4711")  # the same id again, a new source timestamp: a new part
    assert _taken(trig, 1) == [("4711", "SN-2")]

    for i in range(5):  # faster than the publishing interval: the server queues each write
        plc.write("TrigPart", f"B{i}")
    _wait(lambda: trig.status()["received"] == 7, "7 triggers")
    assert [p for p, _ in _taken(trig, 5)] == [f"B{i}" for i in range(5)]

    plc.write("TrigPart", "   ")  # no part id: counted invalid, not queued
    _wait(lambda: trig.status()["invalid"] == 1, "the invalid trigger")
    status = trig.status()
    assert (status["received"], status["taken"], status["invalid"], status["pending"], status["stale"]) == \
        (8, 7, 1, 0, 0)


def test_number_node_and_stale_triggers(plc: Plc, triggers: Callable[..., OpcUaTriggers]) -> None:
    trig = triggers(plc.url, "nsu=urn:test:plc;s=Line1.TrigNumber", max_age_s=0.5)  # by namespace URI
    _wait(_up(trig), "the subscription")
    plc.write("TrigNumber", 815)
    assert _taken(trig, 1) == [("815", None)]
    plc.write("TrigNumber", 816)
    _wait(lambda: trig.status()["received"] == 2, "the second trigger")
    time.sleep(0.7)  # no image took it within max_age_s: discarded
    assert trig.take() is None
    assert trig.status()["stale"] == 1


def test_server_down_at_start_then_up_and_lost_again(plc: Plc, triggers: Callable[..., OpcUaTriggers]) -> None:
    plc.stop_listening()
    try:
        trig = triggers(plc.url, plc.node("TrigPart"), timeout_s=1.0)
        _wait(lambda: plc.url.split("/plc")[0].split("//")[1] in trig.status()["detail"]
              and trig.status()["detail"] != f"not connected yet to {plc.url}", "a down detail naming the server")
        assert trig.status()["state"] == "down"
    finally:
        plc.listen()
    _wait(_up(trig), "the trigger up once the server listens")
    plc.stop_listening()  # lost while subscribed
    try:
        _wait(lambda: trig.status()["state"] == "down", "down after the server went")
    finally:
        plc.listen()
    _wait(_up(trig), "up again")
    plc.write("TrigPart", "AFTER")
    assert _taken(trig, 1) == [("AFTER", None)]


def test_missing_node_is_down_with_the_node_named(plc: Plc, triggers: Callable[..., OpcUaTriggers]) -> None:
    trig = triggers(plc.url, f"ns={plc.idx};s=Line1.NoSuchNode")
    _wait(lambda: "NoSuchNode" in trig.status()["detail"], "a detail naming the node")
    assert trig.status()["state"] == "down"
    assert "sources.cam.trigger.part_node" in trig.status()["detail"]


def test_pinned_server_certificate_and_user_over_sign_encrypt(
        plc: Plc, triggers: Callable[..., OpcUaTriggers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EV_TEST_TRIG_PW", "s3cret")
    cert, key = make_opcua_cert(tmp_path, "client", "urn:test:edgevision:trigger")
    other, _ = make_opcua_cert(tmp_path, "impostor", "urn:test:impostor")
    secure = {"security": "sign-encrypt", "certificate": cert, "private_key": key, "username": "plc",
              "password_env": "EV_TEST_TRIG_PW"}
    wrong = triggers(plc.url, plc.node("TrigPart"), server_certificate=other, **secure)
    _wait(lambda: "pinned server_certificate" in wrong.status()["detail"], "the pin refused")
    assert wrong.status()["state"] == "down"
    right = triggers(plc.url, plc.node("TrigPart"), server_certificate=plc.cert, **secure)
    _wait(_up(right), "the pinned server accepted")
    assert ("plc", True) in plc.users.accepted
    plc.write("TrigPart", "SECURE-1")
    assert _taken(right, 1) == [("SECURE-1", None)]
    assert wrong.status()["state"] == "down"


def test_line_end_to_end_hot_folder_takes_the_plc_part_ids(plc: Plc, model: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model, source={"name": "cam", "part_id_regex": None, "trigger": {
        "protocol": "opcua", "endpoint": plc.url, "part_node": plc.node("TrigPart"),
        "serial_node": plc.node("TrigSerial"), "publishing_ms": 20}}, record={"keep_accepted": 0.0},
        drift={"enabled": False})
    with running(cfg) as line:
        line.wait_trigger("up", lambda s: s["state"] == "up")
        assert line.line.healthy()[0]
        for i in range(3):
            plc.write("TrigSerial", f"SN-{i}")
            plc.write("TrigPart", f"L{i}")
            line.wait_trigger(f"{i + 1} received", lambda s, n=i + 1: s["received"] == n)
            write_part(tmp_path / "in", f"img_{i}.png", i % 2 == 0)
            line.wait_parts(i + 1)
        assert parts(line.db) == [(f"img_{i}.png", f"L{i}", f"SN-{i}") for i in range(3)]
        from edgevision.line.http import _metrics_text

        metrics = _metrics_text(line.line.status()).decode()
        assert 'edgevision_line_trigger_up{protocol="opcua",source="cam"} 1.0' in metrics
        assert 'edgevision_line_triggers_total{fate="taken",source="cam"} 3.0' in metrics
        plc.stop_listening()  # the PLC's server gone: the line says so
        try:
            _wait(lambda: not line.line.healthy()[0], "unhealthy")
            assert "cam trigger:" in line.line.healthy()[1]
            assert 'edgevision_line_trigger_up{protocol="opcua",source="cam"} 0.0' in \
                _metrics_text(line.line.status()).decode()
        finally:
            plc.listen()


# ---------------------------------------------------------------------- without a server


def test_id_text() -> None:
    from asyncua import ua

    assert id_text(" P-1 ") == "P-1" and id_text(4711) == "4711" and id_text(12.0) == "12"
    assert id_text(ua.LocalizedText("L-9")) == "L-9" and id_text(b"B-7") == "B-7"
    for bad in (True, None, "", "  ", 1.5, b"\xff", "x" * 300, [1]):
        assert id_text(bad) is None, bad


def test_configuration_errors(model: Path, tmp_path: Path) -> None:
    def load(trigger: dict[str, Any]) -> Any:
        cfg = write_config(tmp_path, model, source={"name": "cam", "trigger": trigger})
        return load_line_config(cfg)

    url = "opc.tcp://127.0.0.1:4840"
    with pytest.raises(ConfigError, match=r"'sources\.0\.trigger': protocol must be mqtt \(the default\) or opcua"):
        load({"protocol": "modbus", "topic": "x"})
    with pytest.raises(ConfigError, match=r"sources\.0\.trigger\.part_node' is required"):
        load({"protocol": "opcua", "endpoint": url})
    with pytest.raises(ConfigError, match="server_certificate pins"):
        load({"protocol": "opcua", "endpoint": url, "part_node": "ns=2;s=P", "server_certificate": "x.pem"})
    with pytest.raises(ConfigError, match=r"unknown line config field 'sources\.0\.trigger\.endpoint'"):  # MQTT (the default) has none
        load({"topic": "t", "endpoint": url})
    cfg = load({"protocol": "opcua", "endpoint": url, "part_node": "ns=2;s=P", "security": "sign-encrypt",
                "certificate": "c.pem", "private_key": "k.pem", "server_certificate": "plc.der"})
    trig = cfg.sources[0].trigger
    assert isinstance(trig, OpcUaTriggerConfig) and trig.server_certificate == tmp_path / "plc.der"  # beside the YAML
    with pytest.raises(ValidationError):
        OpcUaTriggerConfig(protocol="opcua", endpoint="http://x:1", part_node="ns=2;s=P")
    with pytest.raises(ConfigError, match=r"sources\.cam\.trigger\.part_node: 'not a node'"):
        make_triggers(OpcUaTriggerConfig(protocol="opcua", endpoint=url, part_node="not a node"), "cam")
    with pytest.raises(ConfigError, match="EV_TEST_NO_SUCH_VAR"):
        OpcUaTriggers(OpcUaTriggerConfig(protocol="opcua", endpoint=url, part_node="ns=2;s=P", username="u",
                                         password_env="EV_TEST_NO_SUCH_VAR"), "cam").start()
    doc = yaml.safe_load((tmp_path / "line.yaml").read_text())
    assert doc["sources"][0]["trigger"]["protocol"] == "opcua"
    with pytest.raises(ConfigError, match=r"sources\.cam\.trigger\.server_certificate: cannot read"):
        t = OpcUaTriggers(OpcUaTriggerConfig(protocol="opcua", endpoint=url, part_node="ns=2;s=P",
                                             security="sign-encrypt", certificate=tmp_path / "c.pem",
                                             private_key=tmp_path / "k.pem",
                                             server_certificate=tmp_path / "absent.der"), "cam")
        try:
            make_opcua_cert(tmp_path, "c", "urn:test:c")
            (tmp_path / "c-key.pem").rename(tmp_path / "k.pem")
            t.start()
        finally:
            t.close()
