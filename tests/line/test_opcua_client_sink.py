"""`OpcUaClientSink` against a plain asyncua server standing for the PLC / SCADA server, on 127.0.0.1: values and
their types, the latest part winning, the server down at start, a missing node, user / password, sign-encrypt,
the config's ``nodes`` check, the value conversions and the write order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("asyncua")

from asyncua import ua  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from edgevision.core.errors import ConfigError  # noqa: E402
from edgevision.line.config import OpcUaClientSinkConfig, load_line_config  # noqa: E402
from edgevision.line.sinks.base import PartDecision  # noqa: E402
from edgevision.line.sinks.opcua_client import OpcUaClientSink, _Target, _to_variant  # noqa: E402
from tests.line.conftest import make_opcua_cert
from tests.line.opcua_plc import Plc

STATION = "st-1"
SHA = "ab" * 32
T = 20.0  # seconds: bound of every wait (generous: the machine may be busy)
V = ua.VariantType
FIELDS = {"Decision": "decision", "PartId": "part_id", "DefectCount": "defect_count", "InferenceMs": "inference_ms",
          "Sequence": "sequence", "Heartbeat": "heartbeat", "Healthy": "healthy", "Status": "status"}


@pytest.fixture(scope="module")
def plc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plc]:
    p = Plc(tmp_path_factory.mktemp("plc"), FIELDS)
    try:
        yield p
    finally:
        p.close()


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgevision-opcua-client") and t.is_alive()]


@pytest.fixture
def sinks() -> Iterator[list[OpcUaClientSink]]:
    """Sinks a test made; closed at the end whatever happens, and no writer thread left."""
    made: list[OpcUaClientSink] = []
    yield made
    for s in made:
        s.close()
    assert _client_threads() == []


def _sink(sinks: list[OpcUaClientSink], url: str, nodes: dict[str, str], **cfg: Any) -> OpcUaClientSink:
    sink = OpcUaClientSink(OpcUaClientSinkConfig(endpoint=url, nodes=nodes, **cfg), STATION, "m.onnx", SHA)
    sinks.append(sink)
    sink.start()
    return sink


def _decision(seq: int, decision: str = "NG", **kw: Any) -> PartDecision:
    fields: dict[str, Any] = dict(
        seq=seq, time="2025-01-01T00:00:00Z", station=STATION, source="cam", part_id=f"P{seq}", serial=f"S{seq}",
        image=f"P{seq}.png", image_sha256="0" * 64, decision=decision, defects=3 if decision == "NG" else 0,
        classes={"scratch": 2, "dent": 1} if decision == "NG" else {}, detections=[], inference_ms=12.5 + seq,
        model="m.onnx", model_sha256=SHA)
    fields.update(kw)
    return PartDecision(**fields)


def _wait(cond: Callable[[], Any], timeout: float = T) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def _is(plc: Plc, name: str, value: Any) -> Callable[[], bool]:
    return lambda: plc.value(name).Value == value


# ---------------------------------------------------------------------- against the PLC


def test_latest_of_three_parts_with_types_and_heartbeat(plc: Plc, sinks: list[OpcUaClientSink]) -> None:
    sink = _sink(sinks, plc.url, plc.nodes())
    for seq, decision in ((11, "NG"), (12, "OK"), (13, "NG")):
        sink.publish(_decision(seq, decision, inference_ms=0.25 + seq))
    assert _wait(_is(plc, "Sequence", 13)), sink.status()
    got = {name: plc.value(name) for name in ("Decision", "PartId", "DefectCount", "InferenceMs", "Sequence")}
    assert {n: (v.Value, v.VariantType) for n, v in got.items()} == {
        "Decision": ("NG", V.String), "PartId": ("P13", V.String), "DefectCount": (3, V.Int32),
        "InferenceMs": (13.25, V.Double), "Sequence": (13, V.Int64)}
    st = sink.status()
    assert st.state == "up" and st.pending == 0 and st.sent >= 1 and st.sent + st.failed == 3

    sink.heartbeat(True, "all sources up")
    assert _wait(_is(plc, "Heartbeat", 1))
    assert _wait(_is(plc, "Status", "all sources up"))
    assert (plc.value("Heartbeat").VariantType, plc.value("Healthy")) == (V.UInt32, ua.Variant(True, V.Boolean))
    sink.heartbeat(False, "cam1:\n down")
    assert _wait(_is(plc, "Heartbeat", 2)) and _wait(_is(plc, "Status", "cam1: down"))
    assert plc.value("Healthy").Value is False

    sink.close()
    sink.close()  # idempotent
    assert _client_threads() == [] and sink.status().state == "down"
    sink.publish(_decision(14))  # after close: counted, never raises
    assert sink.status().failed == st.failed + 1
    with pytest.raises(ConfigError, match="closed"):
        sink.start()


def test_server_down_at_start_then_up_and_lost_again(plc: Plc, sinks: list[OpcUaClientSink]) -> None:
    plc.stop_listening()
    try:
        sink = _sink(sinks, plc.url, plc.nodes("Decision", "Sequence"), timeout_s=2.0)
        assert _wait(lambda: sink.status().state == "down")
        detail = sink.status().detail
        assert plc.url in detail and "\n" not in detail
        slowest = 0.0
        for seq in range(21, 26):
            t0 = time.perf_counter()
            sink.publish(_decision(seq, "OK" if seq % 2 else "NG"))
            sink.heartbeat(True)
            slowest = max(slowest, time.perf_counter() - t0)
        assert slowest < 0.05
        assert sink.status().pending == 1 and sink.status().failed == 4  # superseded while down
    finally:
        plc.listen()
    assert _wait(_is(plc, "Sequence", 25)), sink.status()
    assert plc.value("Decision").Value == "OK"
    assert _wait(lambda: sink.status().state == "up")
    assert sink.status().sent == 1

    plc.stop_listening()  # lost while connected (the session goes with the server): down, then back
    try:
        assert _wait(lambda: sink.status().state == "down"), sink.status()
        sink.publish(_decision(26, "NG"))
    finally:
        plc.listen()
    assert _wait(_is(plc, "Sequence", 26)), sink.status()
    assert _wait(lambda: sink.status().state == "up") and sink.status().sent == 2


def test_missing_node_or_unfit_type_is_down_with_the_node_named(plc: Plc, sinks: list[OpcUaClientSink]) -> None:
    missing = _sink(sinks, plc.url, {"decision": plc.node("Decision"), "serial": plc.node("NoSuchNode")})
    unfit = _sink(sinks, plc.url, {"decision": plc.node("Decision"), "defect_classes": plc.node("DefectCount")})
    missing.publish(_decision(31))
    assert _wait(lambda: "NoSuchNode" in missing.status().detail), missing.status()
    assert _wait(lambda: "DefectCount" in unfit.status().detail), unfit.status()
    for sink in (missing, unfit):
        st = sink.status()
        assert st.state == "down" and "\n" not in st.detail
    assert "BadNodeIdUnknown" in missing.status().detail and "String" in unfit.status().detail
    missing.close()
    assert missing.status().failed == 1  # the part never written


def test_user_and_password(plc: Plc, sinks: list[OpcUaClientSink], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    pw = tmp_path / "plc-password"
    pw.write_text("s3cret\n", encoding="utf-8")
    monkeypatch.setenv("EV_TEST_PLC_PASSWORD", "wrong")
    good = _sink(sinks, plc.url, plc.nodes("Decision", "Sequence"), username="plc", password_file=pw)
    bad = _sink(sinks, plc.url, plc.nodes("Decision", "Sequence"), username="plc", password_env="EV_TEST_PLC_PASSWORD")
    good.publish(_decision(41))
    assert _wait(_is(plc, "Sequence", 41)), good.status()
    assert ("plc", False) in plc.users.accepted
    assert _wait(lambda: bad.status().state == "down"), bad.status()
    assert "BadUserAccessDenied" in bad.status().detail and "wrong" not in bad.status().detail
    monkeypatch.delenv("EV_TEST_PLC_PASSWORD")
    with pytest.raises(ConfigError, match="EV_TEST_PLC_PASSWORD"):
        OpcUaClientSink(OpcUaClientSinkConfig(endpoint=plc.url, nodes=plc.nodes("Decision"), username="plc",
                                              password_env="EV_TEST_PLC_PASSWORD"), STATION, "m", SHA).start()


def test_sign_encrypt(plc: Plc, sinks: list[OpcUaClientSink], tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EV_TEST_PLC_PW2", "s3cret")
    cert, key = make_opcua_cert(tmp_path, "client", "urn:test:edgevision:client")
    nodes = {"decision": "nsu=urn:test:plc;s=Line1.Decision", "sequence": plc.node("Sequence")}  # by namespace URI
    sink = _sink(sinks, plc.url, nodes, security="sign-encrypt", certificate=cert, private_key=key, username="plc",
                 password_env="EV_TEST_PLC_PW2")
    sink.publish(_decision(51, "OK"))
    assert _wait(_is(plc, "Sequence", 51)), sink.status()
    assert plc.value("Decision").Value == "OK"
    assert ("plc", True) in plc.users.accepted


# ---------------------------------------------------------------------- without a server


def test_config_nodes_are_checked(tmp_path: Path) -> None:
    url = "opc.tcp://127.0.0.1:4840"
    with pytest.raises(ValidationError, match="unknown 'defect_cnt'; known: decision,part_id,serial,"):
        OpcUaClientSinkConfig(endpoint=url, nodes={"decision": "ns=2;s=A", "defect_cnt": "ns=2;s=B"})
    with pytest.raises(ValidationError, match="at least decision"):
        OpcUaClientSinkConfig(endpoint=url, nodes={"sequence": "ns=2;s=A"})
    bad: dict[str, Any]
    for bad in ({"endpoint": "http://127.0.0.1:4840"}, {"endpoint": "opc.tcp://u:p@127.0.0.1:4840"},
                {"security": "sign-encrypt"}, {"password_env": "X"}):
        with pytest.raises(ValidationError):
            OpcUaClientSinkConfig.model_validate({"endpoint": url, "nodes": {"decision": "ns=2;s=A"}, **bad})

    yaml = tmp_path / "line.yaml"
    yaml.write_text("model: m.onnx\nsources: [{type: folder, path: in}]\nsinks:\n  opcua_client:\n"
                    f"    endpoint: {url}\n    nodes: {{decision: 'ns=2;s=D', decisoin: 'ns=2;s=E'}}\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_line_config(yaml)
    msg = str(e.value)
    assert "\n" not in msg and "sinks.opcua_client.nodes" in msg and "status" in msg and "..." not in msg
    yaml.write_text("model: m.onnx\nsources: [{type: folder, path: in}]\nsinks:\n  opcua_client:\n"
                    f"    endpoint: {url}\n    nodes: {{decision: 'ns=2;s=D'}}\n    username: ev\n"
                    "    password_file: secret/plc\n", encoding="utf-8")
    client = load_line_config(yaml).sinks.opcua_client
    assert client is not None and client.password_file == tmp_path / "secret" / "plc"


def test_bad_node_id_or_certificate_fails_start(tmp_path: Path) -> None:
    url = "opc.tcp://127.0.0.1:4840"
    sink = OpcUaClientSink(OpcUaClientSinkConfig(endpoint=url, nodes={"decision": "Line1.Decision"}), STATION, "m",
                           SHA)
    with pytest.raises(ConfigError, match="nodes.decision"):
        sink.start()
    cert = tmp_path / "c.pem"
    cert.write_text("not a certificate", encoding="utf-8")
    cfg = OpcUaClientSinkConfig(endpoint=url, nodes={"decision": "ns=2;s=D"}, security="sign-encrypt",
                                certificate=cert, private_key=cert)
    with pytest.raises(ConfigError, match=r"^sinks\.opcua_client\.certificate: .*not an X\.509"):
        OpcUaClientSink(cfg, STATION, "m", SHA).start()
    assert _client_threads() == []


def test_value_conversions() -> None:
    def conv(field: str, value: Any, vtype: ua.VariantType) -> tuple[Any, ua.VariantType]:
        v = _to_variant(field, value, vtype)
        return v.Value, v.VariantType

    assert conv("decision", "NG", V.Boolean) == (True, V.Boolean)
    assert conv("decision", "OK", V.Int16) == (0, V.Int16)
    assert conv("defect_count", 70000, V.Int16) == (32767, V.Int16)  # clamped
    assert conv("defect_count", 3, V.Float) == (3.0, V.Float)
    assert conv("inference_ms", 12.6, V.UInt16) == (13, V.UInt16)
    assert conv("inference_ms", float("nan"), V.Int32) == (0, V.Int32)
    assert conv("sequence", 2**32 + 5, V.UInt32) == (5, V.UInt32)  # counters wrap
    assert conv("heartbeat", 2**16 + 1, V.Int16) == (1, V.Int16)
    assert conv("part_id", " 4711 ", V.Int32) == (4711, V.Int32)
    assert conv("healthy", False, V.String) == ("false", V.String)
    assert conv("inference_ms", 1.5, V.Variant) == (1.5, V.Double)
    text = _to_variant("status", "ok", V.LocalizedText).Value
    assert isinstance(text, ua.LocalizedText) and text.Text == "ok"
    with pytest.raises(ValueError):
        _to_variant("serial", "SN42", V.Int32)


def test_sequence_is_written_last_in_a_request_of_its_own() -> None:
    requests: list[list[str]] = []

    class _UaClient:
        async def write_attributes(self, nodeids: list[Any], dvs: list[Any], attr: Any) -> list[ua.StatusCode]:
            requests.append([n.Identifier for n in nodeids])
            return [ua.StatusCode() for _ in nodeids]

    class _Client:
        uaclient = _UaClient()

    names = {"decision": V.String, "sequence": V.Int64, "part_id": V.String, "defect_count": V.Int32}
    targets = {f: _Target(ua.NodeId(ua.String(f), ua.Int16(2)), f"ns=2;s={f}", vt) for f, vt in names.items()}
    sink = OpcUaClientSink(OpcUaClientSinkConfig(endpoint="opc.tcp://127.0.0.1:4840", nodes={"decision": "i=1"}),
                           STATION, "m", SHA)
    asyncio.run(sink._write_part(_Client(), targets, _decision(7)))
    assert requests == [["decision", "part_id", "defect_count"], ["sequence"]]
