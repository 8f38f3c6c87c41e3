"""`OpcUaServerSink` against a real asyncua client on 127.0.0.1: nodes, subscription order, users,
sign-encrypt, a port in use, close."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("asyncua")

from asyncua import Client, ua  # noqa: E402

from edgevision.core.errors import ConfigError  # noqa: E402
from edgevision.line.config import OpcUaSinkConfig  # noqa: E402
from edgevision.line.sinks.base import PartDecision  # noqa: E402
from edgevision.line.sinks.opcua import OpcUaServerSink, _part_values, _read_users  # noqa: E402
from tests.line.conftest import make_opcua_cert

STATION = "st-1"
NS = "urn:edgevision:line:test"
SHA = "ab" * 32
T = 10.0  # seconds: bound of every client operation (generous: the CI machine may be busy)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _url(port: int) -> str:
    return f"opc.tcp://127.0.0.1:{port}/edgevision/"


def _decision(seq: int, decision: str = "NG", **kw: Any) -> PartDecision:
    fields: dict[str, Any] = dict(
        seq=seq, time="2025-01-01T00:00:00Z", station=STATION, source="cam", part_id=f"P{seq}", serial=f"S{seq}",
        image=f"P{seq}.png", image_sha256="0" * 64, decision=decision, defects=3 if decision == "NG" else 0,
        classes={"scratch": 2, "dent": 1} if decision == "NG" else {}, detections=[], inference_ms=12.5 + seq,
        model="m.onnx", model_sha256=SHA)
    fields.update(kw)
    return PartDecision(**fields)


def _opcua_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgevision-opcua") and t.is_alive()]


@pytest.fixture
def sinks() -> Iterator[list[OpcUaServerSink]]:
    """Sinks a test made; closed at the end whatever happens."""
    made: list[OpcUaServerSink] = []
    yield made
    for s in made:
        s.close()


def _start(sinks: list[OpcUaServerSink], **cfg: Any) -> tuple[OpcUaServerSink, str]:
    port = _free_port()
    sink = OpcUaServerSink(OpcUaSinkConfig(endpoint=_url(port), namespace=NS, **cfg), STATION, "m.onnx", SHA)
    sinks.append(sink)
    sink.start()
    return sink, _url(port)


async def _poll(read: Any, want: Any) -> Any:
    """Read until the value is ``want`` (bounded: 250 x 20 ms)."""
    value = None
    for _ in range(250):
        value = await read()
        if value == want:
            break
        await asyncio.sleep(0.02)
    return value


async def _raw_session(url: str, token: Any) -> str:
    """Open a session with a hand-made identity token over an unsecured channel, bypassing the asyncua
    client's own checks (so that the server's refusal is what is tested); the Decision read or the error."""
    c = Client(url, timeout=T)
    await asyncio.wait_for(c.connect_socket(), T)
    try:
        await c.send_hello()
        await c.open_secure_channel()
        params = ua.CreateSessionParameters(ClientNonce=b"n" * 32, EndpointUrl=url, SessionName="raw",
                                            RequestedSessionTimeout=60_000)
        await c.uaclient.create_session(params)
        activate = ua.ActivateSessionParameters(UserIdentityToken=token)
        try:
            await c.uaclient.activate_session(activate)
        except ua.UaStatusCodeError as e:
            return f"refused: {e.__class__.__name__}"
        idx = await c.get_namespace_index(NS)
        return str(await c.get_node(f"ns={idx};s={STATION}.Decision").read_value())
    finally:
        c.disconnect_socket()


class _Handler:
    def __init__(self) -> None:
        self.values: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.values.put_nowait(val)


def test_anonymous_subscription_fields_heartbeat_read_only(sinks: list[OpcUaServerSink],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    sink, url = _start(sinks, anonymous=True)
    assert sink.status().state == "up"

    async def client() -> None:
        async with Client(url, timeout=T) as c:
            idx = await c.get_namespace_index(NS)
            assert idx == sink.namespace_index

            def node(name: str) -> Any:
                return c.get_node(f"ns={idx};s={STATION}.{name}")

            # the browse path and the string NodeIds name the same nodes
            seq = await c.nodes.objects.get_child([f"{idx}:EdgeVision", f"{idx}:{STATION}", f"{idx}:Sequence"])
            assert seq.nodeid == node("Sequence").nodeid
            assert (await c.get_node(f"ns={idx};i=1").read_browse_name()).Name == "EdgeVision"
            assert await node("Decision").read_value() == ""
            assert await node("ModelName").read_value() == "m.onnx"
            types = {n: await node(n).read_data_type_as_variant_type() for n in
                     ("Decision", "DefectCount", "InferenceMs", "Sequence", "Heartbeat", "Healthy")}
            assert types == {"Decision": ua.VariantType.String, "DefectCount": ua.VariantType.Int32,
                             "InferenceMs": ua.VariantType.Double, "Sequence": ua.VariantType.Int64,
                             "Heartbeat": ua.VariantType.UInt32, "Healthy": ua.VariantType.Boolean}

            handler = _Handler()
            sub = await c.create_subscription(20, handler)
            await sub.subscribe_data_change(seq, queuesize=10)
            assert await asyncio.wait_for(handler.values.get(), T) == 0  # the initial value
            for i, d in enumerate(("OK", "NG", "NG"), 1):
                sink.publish(_decision(100 + i, d))
            got = [await asyncio.wait_for(handler.values.get(), T) for _ in range(3)]
            assert got == [101, 102, 103]
            await sub.delete()

            values = {n: await node(n).read_value() for n in ("Decision", "PartId", "Serial", "DefectCount",
                                                              "DefectClasses", "InferenceMs", "ModelName",
                                                              "ModelSha256", "Sequence")}
            assert values == {"Decision": "NG", "PartId": "P103", "Serial": "S103", "DefectCount": 3,
                              "DefectClasses": '{"dent":1,"scratch":2}', "InferenceMs": 115.5,
                              "ModelName": "m.onnx", "ModelSha256": SHA, "Sequence": 103}
            dv = await node("Sequence").read_data_value()
            assert dv.SourceTimestamp is not None

            hb = await node("Heartbeat").read_value()
            sink.heartbeat(True, "all sources up")
            assert await _poll(node("Heartbeat").read_value, hb + 1) == hb + 1
            assert await node("Healthy").read_value() is True
            assert await node("Status").read_value() == "all sources up"
            sink.heartbeat(False, "source cam: down")
            assert await _poll(node("Heartbeat").read_value, hb + 2) == hb + 2
            assert await node("Healthy").read_value() is False
            assert await node("Status").read_value() == "source cam: down"

            # read-only for clients
            with pytest.raises(ua.UaStatusCodeError):
                await node("Decision").write_value(ua.Variant("OK", ua.VariantType.String))
            assert await node("Decision").read_value() == "NG"

    asyncio.run(asyncio.wait_for(client(), 30))
    st = sink.status()
    assert (st.state, st.sent, st.failed, st.pending) == ("up", 3, 0, 0)

    # close: clean, idempotent, no thread left, publish afterwards counted and never raised
    caplog.set_level(logging.WARNING)
    sink.close()
    sink.close(timeout=0.1)
    assert _opcua_threads() == []
    assert sink.status().state == "down"
    sink.publish(_decision(104))
    sink.heartbeat(True)
    assert sink.status().failed == 1
    assert not [r for r in caplog.records if r.name == "asyncio" or "pending" in r.getMessage()]
    with pytest.raises(ConfigError, match="closed"):
        sink.start()


def test_users_file_right_password_only(sinks: list[OpcUaServerSink], tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    users = tmp_path / "users.txt"
    users.write_text("# operators\nalice:s3cr:et\n\n  bob:pw  \n", encoding="utf-8")
    users.chmod(0o600)
    _, url = _start(sinks, users_file=users, anonymous=False)

    async def connect(user: str | None, password: str | None) -> str:
        c = Client(url, timeout=T)
        if user is not None:
            c.set_user(user)
        if password is not None:
            c.set_password(password)
        try:
            await asyncio.wait_for(c.connect(), T)
        except Exception as e:  # noqa: BLE001 - the refusal is what is tested
            with contextlib.suppress(Exception):  # the half-open connection's cleanup may complain
                await c.disconnect()
            return f"refused: {e.__class__.__name__}"
        try:
            idx = await c.get_namespace_index(NS)
            return str(await c.get_node(f"ns={idx};s={STATION}.Decision").read_value())
        finally:
            await c.disconnect()

    async def main() -> list[str]:
        return [await connect("alice", "s3cr:et"), await connect("bob", "pw"), await connect("alice", "wrong"),
                await connect("mallory", "s3cr:et"), await connect(None, None),
                await _raw_session(url, ua.AnonymousIdentityToken(PolicyId="anonymous")),
                await _raw_session(url, ua.UserNameIdentityToken(PolicyId="username", UserName="bob", Password=b"x")),
                await _raw_session(url, ua.UserNameIdentityToken(PolicyId="username", UserName="bob", Password=b"pw"))]

    caplog.set_level(logging.WARNING, logger="edgevision.line.sinks.opcua")
    right, bob, wrong, unknown, anonymous, raw_anon, raw_wrong, raw_right = asyncio.run(asyncio.wait_for(main(), 30))
    assert (right, bob, raw_right) == ("", "", "")
    assert wrong.startswith("refused") and unknown.startswith("refused") and anonymous.startswith("refused")
    assert raw_anon == "refused: BadIdentityTokenRejected" and raw_wrong == "refused: BadUserAccessDenied"
    refused = [r.getMessage() for r in caplog.records if "refused user" in r.getMessage()]
    assert len(refused) == 3 and "s3cr" not in " ".join(refused)


def test_sign_encrypt(sinks: list[OpcUaServerSink], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server_uri, client_uri = "urn:edgevision:test:server", "urn:edgevision:test:client"
    cert, key = make_opcua_cert(tmp_path, "server", server_uri)
    client_cert, client_key = make_opcua_cert(tmp_path, "client", client_uri)
    users = tmp_path / "users.txt"
    users.write_text("alice:pw\n", encoding="utf-8")
    users.chmod(0o600)
    sink, url = _start(sinks, security="sign-encrypt", certificate=cert, private_key=key, users_file=users)
    sink.publish(_decision(7, "NG"))

    async def main() -> None:
        c = Client(url, timeout=T)
        c.application_uri = client_uri
        await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key}")
        c.set_user("alice")
        c.set_password("pw")
        async with c:
            endpoints = await c.get_endpoints()
            assert [(e.SecurityMode, e.SecurityPolicyUri.rsplit("#", 1)[-1]) for e in endpoints] == [
                (ua.MessageSecurityMode.SignAndEncrypt, "Basic256Sha256")]
            assert endpoints[0].Server.ApplicationUri == server_uri
            idx = await c.get_namespace_index(NS)
            decision = c.get_node(f"ns={idx};s={STATION}.Decision")
            assert await _poll(decision.read_value, "NG") == "NG"

        # the right user on an unsecured channel (OPC UA keeps one for discovery) is refused by the server
        token = ua.UserNameIdentityToken(PolicyId="username", UserName="alice", Password=b"pw")
        assert await _raw_session(url, token) == "refused: BadUserAccessDenied"
        # and the asyncua client does not even try
        plain = Client(url, timeout=T)
        plain.set_user("alice")
        plain.set_password("pw")
        with pytest.raises(ua.UaError):
            await asyncio.wait_for(plain.connect(), T)
        with contextlib.suppress(Exception):
            await plain.disconnect()

    caplog.set_level(logging.WARNING, logger="edgevision.line.sinks.opcua")
    asyncio.run(asyncio.wait_for(main(), 30))
    assert sink.status().sent == 1
    assert any("unsecured channel" in r.getMessage() for r in caplog.records)


def test_trusted_clients_only(sinks: list[OpcUaServerSink], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With trusted_clients, a client whose certificate is in the folder gets in; another is refused with
    BadCertificateUntrusted and a warning naming its URI and fingerprint; copying its certificate in lets it in
    without a restart."""
    cert, key = make_opcua_cert(tmp_path, "server", "urn:edgevision:test:server")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    known_cert, known_key = make_opcua_cert(trusted, "known", "urn:test:known")
    (trusted / "known-key.pem").rename(tmp_path / "known-key.pem")
    (trusted / "README.txt").write_text("client certificates allowed on this station\n")  # not a certificate: ignored
    stranger_cert, stranger_key = make_opcua_cert(tmp_path, "stranger", "urn:test:stranger")
    sink, url = _start(sinks, security="sign-encrypt", certificate=cert, private_key=key, anonymous=True,
                       trusted_clients=trusted)
    sink.publish(_decision(3, "OK"))

    async def read_decision(client_cert: Path, client_key: Path, uri: str) -> str:
        c = Client(url, timeout=T)
        c.application_uri = uri
        await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key}")
        try:
            await asyncio.wait_for(c.connect(), T)
        except ua.UaStatusCodeError as e:
            with contextlib.suppress(Exception):
                await c.disconnect()
            return f"refused: {e.__class__.__name__}"
        try:
            idx = await c.get_namespace_index(NS)
            return str(await _poll(c.get_node(f"ns={idx};s={STATION}.Decision").read_value, "OK"))
        finally:
            await c.disconnect()

    caplog.set_level(logging.WARNING, logger="edgevision.line.sinks.opcua")
    assert asyncio.run(read_decision(known_cert, tmp_path / "known-key.pem", "urn:test:known")) == "OK"
    assert asyncio.run(read_decision(stranger_cert, stranger_key, "urn:test:stranger")) == \
        "refused: BadCertificateUntrusted"
    warning = next(r.getMessage() for r in caplog.records if "session refused" in r.getMessage())
    assert "urn:test:stranger" in warning and "trusted_clients" in warning
    (trusted / "stranger.pem").write_bytes(stranger_cert.read_bytes())  # the integrator trusts it: no restart
    assert asyncio.run(read_decision(stranger_cert, stranger_key, "urn:test:stranger")) == "OK"


def test_trusted_clients_configuration(tmp_path: Path) -> None:
    cert, key = make_opcua_cert(tmp_path, "server", "urn:s")
    with pytest.raises(ValueError, match="set security: sign-encrypt"):
        OpcUaSinkConfig(endpoint=_url(_free_port()), trusted_clients=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "client.pem").write_text("not a certificate")
    for folder, message in ((tmp_path / "absent", "cannot read the folder"), (empty, "holds no certificate"),
                            (bad, "client.pem is not a readable X.509 certificate")):
        sink = OpcUaServerSink(OpcUaSinkConfig(endpoint=_url(_free_port()), security="sign-encrypt", certificate=cert,
                                               private_key=key, trusted_clients=folder), STATION, "m.onnx", SHA)
        with pytest.raises(ConfigError, match=f"sinks.opcua.trusted_clients: .*{message}"):
            sink.start()
        sink.close()


def test_port_in_use_is_one_line_config_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        url = _url(busy.getsockname()[1])
        sink = OpcUaServerSink(OpcUaSinkConfig(endpoint=url, anonymous=True), STATION, "m.onnx", SHA)
        with pytest.raises(ConfigError) as e:
            sink.start()
    msg = str(e.value)
    assert "\n" not in msg and url in msg and "sinks.opcua.endpoint" in msg
    assert _opcua_threads() == []
    sink.close()
    sink.close()


def test_port_taken_after_the_check_fails_the_same_way(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The server's own bind is the authority (the early check can race with another process).
    Also: no users and no anonymous is allowed, with a warning that nobody can connect."""
    import edgevision.line.sinks.opcua as mod

    monkeypatch.setattr(mod, "_check_bindable", lambda *a: None)
    caplog.set_level(logging.WARNING, logger="edgevision.line.sinks.opcua")
    logging.getLogger("asyncua.server.server").disabled = True  # asyncua logs the bind error's traceback
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            url = _url(busy.getsockname()[1])
            sink = OpcUaServerSink(OpcUaSinkConfig(endpoint=url, anonymous=False), STATION, "m.onnx", SHA)
            with pytest.raises(ConfigError, match="cannot listen on") as e:
                sink.start()
    finally:
        logging.getLogger("asyncua.server.server").disabled = False
    assert any("every OPC UA session will be refused" in r.getMessage() for r in caplog.records)
    assert "\n" not in str(e.value) and url in str(e.value)
    assert _opcua_threads() == []
    assert sink.status().state == "down"


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4840/", "opc.tcp://127.0.0.1/x", "opc.tcp://:4840/",
                                      "opc.tcp://127.0.0.1:99999/", "opc.tcp://127.0.0.1:0/"])
def test_bad_endpoint(endpoint: str) -> None:
    sink = OpcUaServerSink(OpcUaSinkConfig(endpoint=endpoint), STATION, "m.onnx", SHA)
    with pytest.raises(ConfigError, match="sinks.opcua.endpoint"):
        sink.start()
    assert _opcua_threads() == []


def test_users_file_parsing(tmp_path: Path) -> None:
    p = tmp_path / "users.txt"
    p.write_text("# c\n\n alice:a:b \nbob:\n", encoding="utf-8")
    assert _read_users(p) == {"alice": "a:b", "bob": ""}
    p.write_text("alice:x\nno-colon-secret\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2") as e:
        _read_users(p)
    assert "secret" not in str(e.value)
    with pytest.raises(ConfigError, match="users_file"):
        _read_users(tmp_path / "missing.txt")


def test_bad_certificate_or_key_is_config_error(tmp_path: Path) -> None:
    cert, key = make_opcua_cert(tmp_path, "a", "urn:a")
    _, other_key = make_opcua_cert(tmp_path, "b", "urn:b")
    for c, k, want in [(cert, other_key, "does not belong"), (key, key, "not an X.509"),
                       (cert, cert, "not a private key"), (tmp_path / "none.pem", key, "cannot read")]:
        cfg = OpcUaSinkConfig(endpoint=_url(_free_port()), security="sign-encrypt", certificate=c, private_key=k)
        with pytest.raises(ConfigError, match=want):
            OpcUaServerSink(cfg, STATION, "m.onnx", SHA).start()
    assert _opcua_threads() == []


def test_part_values_order_and_defect_classes() -> None:
    values = _part_values(_decision(5, "OK", part_id=None, serial=None))
    assert [n for n, _ in values][-1] == "Sequence"
    d = dict(values)
    assert (d["PartId"], d["Serial"], d["DefectCount"], json.loads(d["DefectClasses"])) == ("", "", 0, {})
    assert dict(_part_values(_decision(6, defects=2**40)))["DefectCount"] == 2**31 - 1
