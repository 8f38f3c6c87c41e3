"""``edgevision serve --tls-cert F --tls-key F``: HTTPS with a self-signed certificate for 127.0.0.1, the token over
TLS, one-line errors for a bad pair, the clear-text warning, and the connection limits during the TLS handshake."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli
from tests.serve.conftest import Reply, Server

pytest.importorskip("cryptography")

TOKEN = "3f9a0c1e5b7d2f4a6c8e0b1d3f5a7c9e"


def make_cert(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (SAN IP, so hostname checking passes) and its unencrypted key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgevision-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    t = tmp_path_factory.mktemp("tls")
    cert, key = make_cert(t)
    other_cert, other_key = make_cert(t, "other")
    return {"cert": cert, "key": key, "other_cert": other_cert, "other_key": other_key, "dir": t}


def client_context(cert: Path) -> ssl.SSLContext:
    """A client context that trusts ``cert`` only (hostname 127.0.0.1 checked against its SAN)."""
    return ssl.create_default_context(cafile=str(cert))


class TlsServer(Server):
    """`Server` on HTTPS: waits for ``on https://`` and talks TLS, trusting ``cert``."""

    cert: Path

    def __init__(self, model: Path, *args: str, cert: Path, **kw: Any) -> None:
        self.cert = cert
        self.announced = ""
        super().__init__(model, *args, **kw)

    def connection(self, timeout: float = 60) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=client_context(self.cert))

    def _wait_for_port(self, timeout: float = 90) -> int:
        import queue

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"server exited ({self.proc.wait()}):\n{self.text}")
            if "serving " in line and " on http" in line:
                self.announced = line.split(" on ", 1)[1].strip()
                assert self.announced.startswith("https://127.0.0.1:"), line
                port = int(self.announced.rsplit(":", 1)[1].rstrip("/"))
                self.port = port
                self._wait_ready(port)
                return port
        self.proc.kill()
        raise AssertionError(f"server did not start in {timeout} s:\n{self.text}")

    def _wait_ready(self, port: int) -> None:
        for _ in range(200):
            try:
                c = self.connection(timeout=5)
                c.request("GET", "/readyz")
                if c.getresponse().status in (200, 401):
                    c.close()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server never became ready over TLS:\n{self.text}")

    def request(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
                headers: dict[str, str] | None = None, chunked: bool = False) -> Reply:
        c = self.connection()
        try:
            c.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            r = c.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            c.close()


@pytest.fixture
def start_tls_server(tmp_path: Path, tls_files: dict[str, Path]) -> Iterator[Any]:
    """``start_tls_server(model, *args, env=None)``: `TlsServer` with the test certificate (given as options unless
    ``via_env``); all are stopped at teardown."""
    servers: list[TlsServer] = []

    def _start(model: Path, *args: str, via_env: bool = False, env: dict[str, str] | None = None,
               **kw: Any) -> TlsServer:
        env = dict(env or {})
        if via_env:
            env.update(EDGEVISION_TLS_CERT=str(tls_files["cert"]), EDGEVISION_TLS_KEY=str(tls_files["key"]))
        else:
            args = ("--tls-cert", str(tls_files["cert"]), "--tls-key", str(tls_files["key"]), *args)
        s = TlsServer(model, *args, cert=tls_files["cert"], tmp=tmp_path, env=env, **kw)
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.stop()


def _metric(s: Server, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = s.request("GET", "/metrics").body.decode()
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


# ---------------------------------------------------------------------------------------------- HTTPS
def test_https_serves_health_and_detections(start_tls_server, bbox_files) -> None:
    s = start_tls_server(bbox_files["model"])
    assert s.announced.startswith("https://127.0.0.1:")
    assert "TLS: certificate" in s.text and "TLS 1.2 or later" in s.text
    r = s.request("GET", "/healthz")
    assert r.status == 200, r.body
    r = s.detect(bbox_files["part"].read_bytes())
    assert r.status == 200, r.body
    assert [d["class"] for d in r.json["detections"]] == ["scratch"] and r.json["decision"] == "reject"
    assert r.json["detections"][0]["xyxy"] == [50.0, 10.0, 90.0, 40.0]
    assert s.detect(bbox_files["blank"].read_bytes()).json["detections"] == []
    # keep-alive: several requests on one TLS connection
    c = s.connection()
    for _ in range(3):
        c.request("GET", "/healthz")
        assert c.getresponse().read() and c.sock is not None
    c.close()
    # plain HTTP to the TLS port gets no HTTP answer
    plain = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    with pytest.raises((OSError, http.client.HTTPException)):
        plain.request("GET", "/healthz")
        plain.getresponse()
    plain.close()
    # a client that does not trust the certificate refuses it
    with pytest.raises(ssl.SSLCertVerificationError):
        c = http.client.HTTPSConnection("127.0.0.1", s.port, timeout=10, context=ssl.create_default_context())
        c.request("GET", "/healthz")
    # TLS 1.3 by default, TLS 1.2 for a client that has no 1.3 (older ones are refused: see test_read_tls...)
    for version in ("TLSv1.3", "TLSv1.2"):
        ctx = client_context(s.cert)
        ctx.maximum_version = ssl.TLSVersion[version.replace(".", "_")]
        c = http.client.HTTPSConnection("127.0.0.1", s.port, timeout=10, context=ctx)
        c.request("GET", "/healthz")
        assert c.getresponse().status == 200 and isinstance(c.sock, ssl.SSLSocket) and c.sock.version() == version
        c.close()
    assert s.request("GET", "/healthz").status == 200  # still serving
    assert _metric(s, "edgevision_connections_closed_total", reason="tls_handshake") >= 1  # the plain HTTP client
    rc, out = s.stop()
    assert rc == 0 and "Traceback" not in out and "Fatal error" not in out
    assert '127.0.0.1 "POST /v1/detect" 200' in out  # the access log sees the client through TLS


def test_token_over_tls_configured_from_the_environment(start_tls_server, bbox_files, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    s = start_tls_server(bbox_files["model"], via_env=True, env={"EDGEVISION_TOKEN_FILE": str(token_file)})
    assert s.announced.startswith("https://")
    part = bbox_files["part"].read_bytes()
    assert s.detect(part).status == 401
    ok = s.detect(part, Authorization=f"Bearer {TOKEN}")
    assert ok.status == 200 and len(ok.json["detections"]) == 1
    assert s.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    rc, out = s.stop()
    assert rc == 0 and TOKEN not in out and "clear text" not in out  # loopback: no warning


# ---------------------------------------------------------------------------------------------- configuration
def test_bad_tls_configuration_fails_in_one_line_before_binding(bbox_files, tls_files, tmp_path) -> None:
    """Through the CLI (exit 2, one line on stderr, nothing served); the other cases: test_read_tls_..."""
    model, cert, key = bbox_files["model"], tls_files["cert"], tls_files["key"]
    cases = [
        (("--tls-cert", cert), "--tls-cert needs --tls-key too (EDGEVISION_TLS_CERT and EDGEVISION_TLS_KEY)"),
        (("--tls-cert", tmp_path / "missing.crt", "--tls-key", key), "certificate file not found"),
    ]
    for args, message in cases:
        r = run_cli("serve", model, "--port", "0", *args, timeout=60)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], (args, r.stderr)
        assert "serving" not in r.stdout


def test_read_tls_checks_the_pair_and_the_key_permissions(tls_files, tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization

    from edgevision.core.errors import ConfigError
    from edgevision.serve.config import read_tls

    assert read_tls(None, None) == (None, None)
    cert, key = tls_files["cert"], tls_files["key"]
    not_pem = tmp_path / "cert.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a" + bytes(100))
    for args, message in [
        ((None, key), "--tls-key needs --tls-cert too"),
        ((cert, tmp_path / "missing.key"), "--tls-key " + str(tmp_path / "missing.key") + ": private key file not found"),
        ((not_pem, key), "no PEM certificate in it"),
        ((cert, tls_files["other_key"]), "--tls-key " + str(tls_files["other_key"]) + ": does not match the certificate"),
        ((key, cert), "--tls-cert " + str(key) + ": no PEM certificate in it"),  # swapped
        ((cert, cert), "--tls-key " + str(cert) + ": no PEM private key in it"),
    ]:
        with pytest.raises(ConfigError) as e:
            read_tls(*args)
        assert message in str(e.value) and "\n" not in str(e.value), (args, str(e.value))
    ctx, warning = read_tls(tls_files["cert"], tls_files["key"])
    assert ctx is not None and warning is None
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    open_key = tmp_path / "open.key"
    open_key.write_bytes(tls_files["key"].read_bytes())
    open_key.chmod(0o644)
    _, warning = read_tls(tls_files["cert"], open_key)
    assert warning is not None and "readable by other users (mode 644)" in warning and "chmod 600" in warning
    open_key.chmod(0o640)  # the service's group may read it
    assert read_tls(tls_files["cert"], open_key)[1] is None
    # an encrypted key: refused (a service cannot type the passphrase), never prompted for
    pkey = serialization.load_pem_private_key(tls_files["key"].read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(pkey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(ConfigError, match="encrypted"):
        read_tls(tls_files["cert"], locked)
    with pytest.raises(ConfigError, match="not readable"):
        read_tls(tmp_path, tls_files["key"])  # a folder


def test_warnings_for_exposed_hosts() -> None:
    from edgevision.serve.server import exposure_warning

    assert exposure_warning("127.0.0.1", token=False, tls=False) is None
    assert exposure_warning("::1", token=True, tls=False) is None
    assert exposure_warning("localhost", token=True, tls=False) is None
    assert "without --token-file" in (exposure_warning("0.0.0.0", token=False, tls=True) or "")
    w = exposure_warning("0.0.0.0", token=True, tls=False) or ""
    assert "the bearer token crosses the network in clear text; give --tls-cert/--tls-key" in w
    assert exposure_warning("10.1.2.3", token=True, tls=True) is None


# ---------------------------------------------------------------------------------------------- limits
def _wait_closed(socks: list[socket.socket], since: float, timeout: float) -> list[float]:
    """Seconds from ``since`` until the server closed each socket (sending nothing); all waited for together."""
    import selectors

    sel = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    closed: list[float] = []
    deadline = time.monotonic() + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b"", data  # nothing is sent before a ClientHello
            closed.append(time.monotonic() - since)
            sel.unregister(sock)
            sock.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return closed


@pytest.mark.slow
def test_connections_in_the_handshake_are_capped_and_timed_out(start_tls_server, bbox_files) -> None:
    """Connections that never start (or never finish) the TLS handshake count against the cap and are closed after
    the idle timeout; beyond the cap a new connection is closed at once; the descriptors never run out; after the
    flood, HTTPS requests are served; a trickled request still gets the JSON 408 over TLS."""
    import threading

    s = start_tls_server(bbox_files["model"], "--request-timeout-s", "1.5",
                         env={"EDGEVISION_IDLE_TIMEOUT_S": "2"}, nofile=512)
    assert "at most 256 open (from RLIMIT_NOFILE 512)" in s.text
    peak, done = [0], threading.Event()

    def watch_fds() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], s.open_fds())

    watcher = threading.Thread(target=watch_fds, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(400)]
    connected = time.monotonic()
    closed_after = _wait_closed(socks, connected, 8)
    assert len(closed_after) == 400, len(closed_after)
    closed_at_once = sum(1 for t in closed_after if t < 1.0)
    timed_out = sum(1 for t in closed_after if 1.0 <= t < 6)
    done.set()
    watcher.join()
    assert closed_at_once + timed_out == 400 and closed_at_once >= 100, (closed_at_once, timed_out)
    if connected - t0 < 1.5:
        assert timed_out == 256, (timed_out, closed_at_once)
    assert peak[0] < 480, peak
    assert len(s.detect(bbox_files["part"].read_bytes()).json["detections"]) == 1
    # a request trickled over TLS is cut at the request timeout with the JSON 408
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    tls = client_context(s.cert).wrap_socket(raw, server_hostname="127.0.0.1")
    t1 = time.monotonic()
    tls.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + bytes(10))
    answer = b""
    while True:
        try:
            chunk = tls.recv(65536)
        except (OSError, ssl.SSLError):
            break
        if not chunk:
            break
        answer += chunk
    tls.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer[:200]
    assert 1.3 < time.monotonic() - t1 < 5
    assert _metric(s, "edgevision_connections_closed_total", reason="too_many_connections") == closed_at_once
    assert _metric(s, "edgevision_connections_closed_total", reason="idle_timeout") >= timed_out
    assert _metric(s, "edgevision_open_connections") == 1  # the /metrics request itself
    rc, out = s.stop()
    assert rc == 0 and "Too many open files" not in out and "out of system resource" not in out
    assert out.count("before the TLS handshake") < 5  # rate-limited
