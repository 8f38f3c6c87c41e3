"""`OpcUaServerSink`: EdgeVision's own OPC UA server (asyncua) showing the station's last decision.

The server runs in a thread of its own with its own asyncio event loop; `OpcUaServerSink.publish` and
`OpcUaServerSink.heartbeat` only append to a queue and wake that loop, so inspection never waits for
OPC UA clients. It is a state sink (``durable = False``): clients see the latest part, not a history.

Address space (``IDX`` is the index of the namespace ``sinks.opcua.namespace``, usually 2; read it from the
server's NamespaceArray rather than hard-coding it). Integrators configure PLCs and SCADA against these
NodeIds, which do not change between versions or restarts::

    Objects/EdgeVision                  ns=IDX;i=1                 folder
    Objects/EdgeVision/STATION          ns=IDX;s=STATION           folder (STATION: ``station`` of the line YAML)
      Decision       String   ns=IDX;s=STATION.Decision        "OK" or "NG" ("" until the first part)
      PartId         String   ns=IDX;s=STATION.PartId          "" when the part has none
      Serial         String   ns=IDX;s=STATION.Serial          "" when the part has none
      DefectCount    Int32    ns=IDX;s=STATION.DefectCount     detections that passed their class threshold
      DefectClasses  String   ns=IDX;s=STATION.DefectClasses   compact JSON object {class: count}, keys sorted,
                                                               e.g. {"dent":1,"scratch":2}; "{}" for an OK part
      InferenceMs    Double   ns=IDX;s=STATION.InferenceMs     decode + detect, milliseconds
      ModelName      String   ns=IDX;s=STATION.ModelName       the model file that decided
      ModelSha256    String   ns=IDX;s=STATION.ModelSha256     its SHA-256
      Sequence       Int64    ns=IDX;s=STATION.Sequence        the inspection record's id of the part (0: none yet)
      Heartbeat      UInt32   ns=IDX;s=STATION.Heartbeat       +1 per heartbeat (about 1 s), wraps at 2**32
      Healthy        Boolean  ns=IDX;s=STATION.Healthy         False while a source is down (or before the first beat)
      Status         String   ns=IDX;s=STATION.Status          a one-line detail of the health

All variables are read-only for clients. The fields of one part are written together, in the order above,
``Sequence`` last: a client that subscribes to ``Sequence`` and reads the other fields on its change sees
that part's values (unless the next part has already arrived). When parts come faster than the
subscription's publishing interval, subscribe with a monitored-item queue size above 1 to see every
``Sequence`` value. Every value carries the source timestamp of its write.

Security (``sinks.opcua``):

* ``security: none``: one endpoint, no signing or encryption (passwords travel in clear: use it only on a
  closed cell network).
* ``security: sign-encrypt``: one endpoint, ``Basic256Sha256`` / ``SignAndEncrypt``, with ``certificate``
  (DER or PEM) and ``private_key`` (PEM or DER, not password-protected). The server's application URI is
  the first URI of the certificate's SubjectAlternativeName (clients check that they match), else
  ``urn:edgevision:line:STATION``. Sessions opened over an unsecured channel (which OPC UA keeps for
  discovery) are refused. With ``trusted_clients`` (a folder of client certificates, DER or PEM), only a
  client whose certificate is one of them opens a session (compared by SHA-256 of the DER bytes); another is
  refused with ``BadCertificateUntrusted`` and a warning naming its application URI and fingerprint, so
  that the integrator can copy its certificate into the folder (read again at each session: no restart).
  Without it the channel is still encrypted, and who may open a session is decided by the users below.

Users: ``users_file`` holds ``user:password`` lines (blank lines and lines starting with ``#`` are ignored;
the first ``:`` separates the name; whitespace around the line is dropped); passwords are compared in
constant time. Anonymous sessions are accepted only with ``anonymous: true``. With neither, every session
is refused (a warning says so at start): the server still runs, but nobody can read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import threading
from collections import deque
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from edgevision.core.errors import ConfigError
from edgevision.line.sinks.base import PartDecision, SinkStatus

if TYPE_CHECKING:
    from edgevision.line.config import OpcUaSinkConfig

__all__ = ["OpcUaServerSink"]

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 60.0
"""How long `OpcUaServerSink.start` waits for the server (loading the standard address space takes seconds)."""

_MAX_PENDING = 10_000
"""Writes waiting for the server loop beyond this are dropped, oldest first (and counted as failed)."""

_ROOT_FOLDER_ID = 1
"""The numeric NodeId of ``Objects/EdgeVision`` in EdgeVision's namespace."""

# (browse name, OPC UA type name, initial value); part fields first, in write order, Sequence last.
_PART_VARS: tuple[tuple[str, str, Any], ...] = (
    ("Decision", "String", ""),
    ("PartId", "String", ""),
    ("Serial", "String", ""),
    ("DefectCount", "Int32", 0),
    ("DefectClasses", "String", "{}"),
    ("InferenceMs", "Double", 0.0),
    ("ModelName", "String", ""),
    ("ModelSha256", "String", ""),
    ("Sequence", "Int64", 0),
)
_HEALTH_VARS: tuple[tuple[str, str, Any], ...] = (
    ("Heartbeat", "UInt32", 0),
    ("Healthy", "Boolean", False),
    ("Status", "String", "starting"),
)

_INT32_MAX = 2**31 - 1


class OpcUaServerSink:
    """Publishes each decision to EdgeVision's own OPC UA server (see the module doc for the nodes).

    Args:
        cfg: the ``sinks.opcua`` section (paths already resolved by `load_line_config`).
        station: the station's name (the folder and the NodeId prefix).
        model_name: the model file's name, shown until the first part says otherwise.
        model_sha256: its SHA-256.
    """

    name = "opcua"
    durable = False

    def __init__(self, cfg: OpcUaSinkConfig, station: str, model_name: str, model_sha256: str) -> None:
        self.cfg = cfg
        self.station = station
        self.model_name = model_name
        self.model_sha256 = model_sha256
        self._lock = threading.Lock()
        self._status = SinkStatus(name=self.name)
        self._pending: deque[PartDecision | tuple[bool, str]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._started = False
        self._closed = False
        self.namespace_index: int | None = None
        """The index of ``cfg.namespace`` once started."""

    # ------------------------------------------------------------------ public API (any thread)

    def start(self) -> None:
        """Start the server thread and return once the server is listening.

        Raises:
            ConfigError: one line: a bad endpoint, an unreadable users file, certificate or key, or a port
                that cannot be bound (in use, not permitted, address not on this machine).
        """
        with self._lock:
            if self._closed:
                raise ConfigError("sinks.opcua: this sink was closed (or failed to start); make a new OpcUaServerSink "
                              "to start again")
            if self._started:
                return
            self._started = True
        cfg = self.cfg
        try:  # everything that can be checked before seconds of address-space loading
            host, port = _parse_endpoint(cfg.endpoint)
            users = _read_users(cfg.users_file) if cfg.users_file is not None else None
            if cfg.trusted_clients is not None:
                _read_trusted(cfg.trusted_clients, strict=True)
            cert = key = None
            app_uri = f"urn:edgevision:line:{self.station}"
            if cfg.security == "sign-encrypt":
                cert, key, san_uri = _read_cert_and_key(cfg.certificate, cfg.private_key)
                app_uri = san_uri or app_uri
            _check_bindable(cfg.endpoint, host, port)
        except ConfigError:
            with self._lock:
                self._started = False  # fixed config, start() may be called again
            raise
        if not cfg.anonymous and not users:
            log.warning("sinks.opcua: no users_file (or an empty one) and anonymous: false: every OPC UA session "
                        "will be refused; set users_file or anonymous: true so that clients can connect")
        self._thread = threading.Thread(target=self._run, args=(users, cert, key, app_uri),
                                        name=f"edgevision-opcua-{self.station}", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            self.close(timeout=5.0)
            raise ConfigError(f"sinks.opcua.endpoint: the OPC UA server on {cfg.endpoint} did not start within "
                              f"{_START_TIMEOUT_S:.0f} s; check the machine's load and the log")
        err = self._start_error
        if err is not None:
            self._thread.join(timeout=5.0)
            with self._lock:
                self._closed = True
                self._set_state("down", "failed to start")
            if isinstance(err, ConfigError):
                raise err
            if isinstance(err, OSError):
                raise ConfigError(_bind_message(cfg.endpoint, err)) from None
            raise ConfigError(f"sinks.opcua: the OPC UA server on {cfg.endpoint} failed to start "
                              f"({err.__class__.__name__}: {err})") from None
        log.info("OPC UA server listening on %s (namespace %s = ns=%s, security %s, anonymous %s, %d user(s))",
                 cfg.endpoint, cfg.namespace, self.namespace_index, cfg.security, cfg.anonymous, len(users or {}))

    def publish(self, decision: PartDecision) -> None:
        """Queue one part's fields for the server loop; returns at once (never raises)."""
        self._enqueue(decision)

    def heartbeat(self, healthy: bool, detail: str = "") -> None:
        """Queue a heartbeat: ``Heartbeat`` +1, ``Healthy`` and ``Status`` set; returns at once."""
        self._enqueue((bool(healthy), str(detail)))

    def status(self) -> SinkStatus:
        """A copy of the current state; ``sent``: parts written, ``failed``: failed or dropped writes."""
        with self._lock:
            return replace(self._status, pending=len(self._pending))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the server and its thread (clients are disconnected); idempotent.

        Args:
            timeout: seconds to wait for the thread (the server's clock task alone takes up to 1 s to stop).
        """
        with self._lock:
            already = self._closed
            self._closed = True
            loop, stop = self._loop, self._stop
        if not already and loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("sinks.opcua: the OPC UA server thread did not stop within %.1f s", timeout)
        with self._lock:
            if self._status.state != "down":
                self._set_state("down", "closed")
            self._pending.clear()

    # ------------------------------------------------------------------ internals

    def _set_state(self, state: str, detail: str) -> None:
        """Call with ``self._lock`` held."""
        self._status.state = state
        self._status.detail = detail

    def _fail(self, message: str) -> None:
        """Call with ``self._lock`` held."""
        self._status.failed += 1
        self._status.last_error = message

    def _enqueue(self, item: PartDecision | tuple[bool, str]) -> None:
        with self._lock:
            if self._closed or self._loop is None or self._wake is None:
                if isinstance(item, PartDecision):
                    self._fail("not serving (not started or closed)")
                return
            if len(self._pending) >= _MAX_PENDING:
                dropped = self._pending.popleft()
                if isinstance(dropped, PartDecision):
                    self._fail(f"write queue full ({_MAX_PENDING}); part seq {dropped.seq} dropped")
            self._pending.append(item)
            loop, wake = self._loop, self._wake
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop has just ended (close raced with publish)
            with self._lock:
                if isinstance(item, PartDecision):
                    self._fail("not serving (closed)")

    def _run(self, users: dict[str, str] | None, cert: tuple[bytes, str] | None, key: tuple[bytes, str] | None,
             app_uri: str) -> None:
        """The server thread: its own event loop, closed cleanly (no pending tasks left) at the end."""
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve(loop, users, cert, key, app_uri))
        except BaseException as e:  # noqa: BLE001 - reported through start() or the status
            if not self._ready.is_set():
                self._start_error = e
            else:
                log.error("sinks.opcua: the OPC UA server stopped (%s: %s)", e.__class__.__name__, e)
                with self._lock:
                    self._set_state("down", f"server stopped ({e.__class__.__name__})")
                    self._status.last_error = f"{e.__class__.__name__}: {e}"
        finally:
            with self._lock:
                self._loop = None
                self._wake = None
            try:
                _cancel_all(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self._ready.set()

    async def _serve(self, loop: asyncio.AbstractEventLoop, users: dict[str, str] | None,
                     cert: tuple[bytes, str] | None, key: tuple[bytes, str] | None, app_uri: str) -> None:
        from asyncua import Server, ua

        cfg = self.cfg
        stop, wake = asyncio.Event(), asyncio.Event()
        manager = _UserManager(users, anonymous=cfg.anonymous, secure_only=cfg.security != "none")
        server = Server(user_manager=manager)  # type: ignore[arg-type]  # duck-typed like asyncua's own managers
        await server.init()
        server.set_endpoint(cfg.endpoint)
        server.set_server_name(f"EdgeVision {self.station}")
        server.manufacturer_name = "EdgeVision"
        server.product_uri = "urn:edgevision"
        await server.set_application_uri(app_uri)
        if cfg.security == "sign-encrypt":
            assert cert is not None and key is not None
            await server.load_certificate(cert[0], format=cert[1])
            await server.load_private_key(key[0], format=key[1])
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            if cfg.trusted_clients is not None:
                server.set_certificate_validator(_TrustList(cfg.trusted_clients).validate)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        tokens: list[type] = []
        if cfg.anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if users:
            tokens.append(ua.UserNameIdentityToken)
        server.set_identity_tokens(tokens)

        idx = await server.register_namespace(cfg.namespace)
        root = await server.nodes.objects.add_folder(ua.NodeId(ua.Int32(_ROOT_FOLDER_ID), ua.Int16(idx)),
                                                  ua.QualifiedName("EdgeVision", idx))
        folder = await root.add_folder(ua.NodeId(ua.String(self.station), ua.Int16(idx)),
                                       ua.QualifiedName(self.station, idx))
        ids: dict[str, tuple[Any, Any]] = {}
        for name, type_name, initial in _PART_VARS + _HEALTH_VARS:
            vtype = getattr(ua.VariantType, type_name)
            if name == "ModelName":
                initial = self.model_name
            elif name == "ModelSha256":
                initial = self.model_sha256
            nodeid = ua.NodeId(ua.String(f"{self.station}.{name}"), ua.Int16(idx))
            node = await folder.add_variable(nodeid, ua.QualifiedName(name, idx), ua.Variant(initial, vtype))
            ids[name] = (node.nodeid, vtype)

        await server.start()
        try:
            with self._lock:
                self._loop, self._stop, self._wake = loop, stop, wake
                self.namespace_index = idx
                self._set_state("up", f"serving {cfg.endpoint}")
                closed = self._closed
            self._ready.set()
            if not closed:
                writer = asyncio.create_task(self._writer(server, ids, wake), name="edgevision-opcua-writer")
                await stop.wait()
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        finally:
            await server.stop()

    async def _writer(self, server: Any, ids: dict[str, tuple[Any, Any]], wake: asyncio.Event) -> None:
        """Drain the queue in order: one part's fields together, ``Sequence`` last; heartbeats in between."""
        from asyncua import ua

        aspace = server.iserver.aspace
        beats = 0

        async def write(name: str, value: Any) -> None:
            nodeid, vtype = ids[name]
            now: Any = datetime.now(timezone.utc)  # asyncua annotates ua.DateTime, a datetime subclass
            dv = ua.DataValue(Value=ua.Variant(value, vtype), SourceTimestamp=now, ServerTimestamp=now)
            result = await aspace.write_attribute_value(nodeid, ua.AttributeIds.Value, dv)
            if result is not None and not result.is_good():
                raise RuntimeError(f"{name}: {result.name}")

        while True:
            await wake.wait()
            wake.clear()
            while True:
                with self._lock:
                    if not self._pending:
                        break
                    item = self._pending.popleft()
                try:
                    if isinstance(item, PartDecision):
                        for name, value in _part_values(item):
                            await write(name, value)
                    else:
                        beats = (beats + 1) % 2**32
                        await write("Heartbeat", beats)
                        await write("Healthy", item[0])
                        await write("Status", item[1])
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - counted, never fatal
                    what = f"part seq {item.seq}" if isinstance(item, PartDecision) else "heartbeat"
                    msg = f"{what}: write failed ({e.__class__.__name__}: {e})"
                    log.warning("sinks.opcua: %s", msg)
                    with self._lock:
                        self._fail(msg)
                else:
                    if isinstance(item, PartDecision):
                        with self._lock:
                            self._status.sent += 1


def _part_values(d: PartDecision) -> list[tuple[str, Any]]:
    """The part's variables in write order (``Sequence`` last)."""
    classes = json.dumps({str(k): int(v) for k, v in sorted(d.classes.items())}, separators=(",", ":"),
                         ensure_ascii=False)
    return [
        ("Decision", str(d.decision)),
        ("PartId", d.part_id or ""),
        ("Serial", d.serial or ""),
        ("DefectCount", max(0, min(int(d.defects), _INT32_MAX))),
        ("DefectClasses", classes),
        ("InferenceMs", float(d.inference_ms)),
        ("ModelName", str(d.model)),
        ("ModelSha256", str(d.model_sha256)),
        ("Sequence", int(d.seq)),
    ]


class _UserManager:
    """asyncua user manager: ``users`` (name -> password) and, when allowed, anonymous sessions.

    Returns asyncua's ``User`` role (read, browse, subscribe; never Admin, which could change the address
    space), or None to refuse the session. ``secure_only``: refuse sessions on an unsecured channel.
    """

    def __init__(self, users: dict[str, str] | None, *, anonymous: bool, secure_only: bool) -> None:
        self.users = dict(users or {})
        self.anonymous = anonymous
        self.secure_only = secure_only

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if self.secure_only and not certificate:  # asyncua passes b"" for an unsecured channel
            log.warning("sinks.opcua: refused a session on an unsecured channel (security is sign-encrypt)")
            return None
        if username is None:
            if self.anonymous:
                return User(role=UserRole.User, name="anonymous")
            log.warning("sinks.opcua: refused an anonymous session (anonymous: false)")
            return None
        expected = self.users.get(username)
        given = (password or "").encode("utf-8")
        ok = hmac.compare_digest(given, (expected if expected is not None else "\0" * 16).encode("utf-8"))
        if ok and expected is not None:
            return User(role=UserRole.User, name=username)
        log.warning("sinks.opcua: refused user %r (unknown user or wrong password)", username[:64])
        return None


def _parse_endpoint(endpoint: str) -> tuple[str, int]:
    hint = "e.g. opc.tcp://0.0.0.0:4840/edgevision/"
    try:
        u = urlparse(endpoint)
        port = u.port
    except ValueError:
        port, u = None, None
    if u is None or u.scheme != "opc.tcp" or not u.hostname or port is None:
        raise ConfigError(f"sinks.opcua.endpoint: {endpoint!r} is not opc.tcp://HOST:PORT/PATH; {hint}")
    if port == 0:
        raise ConfigError(f"sinks.opcua.endpoint: {endpoint!r}: port 0 is not allowed (clients must know the port); "
                          f"{hint}")
    return u.hostname, port


def _bind_message(endpoint: str, e: OSError) -> str:
    reason = (e.strerror or str(e) or e.__class__.__name__).lower()
    return (f"sinks.opcua.endpoint: cannot listen on {endpoint} ({reason}); stop what uses the port or choose "
            "another port or address in the endpoint")


def _check_bindable(endpoint: str, host: str, port: int) -> None:
    """Fail fast (before seconds of address-space loading) when the endpoint's port cannot be bound.

    Binds exactly what asyncio's ``create_server`` will bind (every address the host resolves to,
    ``SO_REUSEADDR``, IPv6 only on IPv6 sockets) and releases it at once. The server's own bind stays the
    authority: a port taken in between still fails `OpcUaServerSink.start` with the same message.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        raise ConfigError(_bind_message(endpoint, e)) from None
    for family, type_, proto, _, addr in dict.fromkeys(infos):
        try:
            with socket.socket(family, type_, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(addr)
        except OSError as e:
            raise ConfigError(_bind_message(endpoint, e)) from None


def _read_users(path: Path) -> dict[str, str]:
    """``user:password`` lines of ``path`` (see the module doc).

    Raises:
        ConfigError: the file cannot be read, or a line has no ``:`` or an empty name (the line's number is
            named, never its content).
    """
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"sinks.opcua.users_file: cannot read {path} ({e.__class__.__name__}); give a readable "
                          "UTF-8 file of user:password lines") from None
    if mode & 0o077:
        log.warning("sinks.opcua.users_file: %s can be read by other users of this machine; chmod 600 it", path)
    users: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip():
            raise ConfigError(f"sinks.opcua.users_file: {path} line {n} is not user:password; fix or remove it")
        users[user.strip()] = password
    return users


def _read_trusted(folder: Path, *, strict: bool) -> dict[str, str]:
    """The SHA-256 (hex) of each certificate in ``folder`` -> its file name.

    Files ending in ``.der``, ``.pem``, ``.crt`` or ``.cer`` are read (others, like a README, are left alone).

    Raises:
        ConfigError: (only with ``strict``) the folder cannot be read, holds no certificate, or a certificate
            file is not one; without ``strict`` such files are skipped with a warning.
    """
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    what = "sinks.opcua.trusted_clients"
    try:
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".der", ".pem", ".crt", ".cer")
                       and p.is_file())
    except OSError as e:
        if strict:
            raise ConfigError(f"{what}: cannot read the folder {folder} ({(e.strerror or e.__class__.__name__).lower()})"
                              "; give a folder of client certificates (.der / .pem)") from None
        log.warning("%s: cannot read %s (%s): every client certificate is refused", what, folder, e)
        return {}
    out: dict[str, str] = {}
    for p in files:
        try:
            blob = p.read_bytes()
            load = x509.load_pem_x509_certificate if blob.lstrip().startswith(b"-----BEGIN") else \
                x509.load_der_x509_certificate
            der = load(blob).public_bytes(serialization.Encoding.DER)
        except (OSError, ValueError) as e:
            if strict:
                raise ConfigError(f"{what}: {p} is not a readable X.509 certificate (DER or PEM); remove it or "
                                  "replace it with the client's certificate") from None
            log.warning("%s: %s skipped (%s)", what, p, e.__class__.__name__)
            continue
        out[hashlib.sha256(der).hexdigest()] = p.name
    if strict and not out:
        raise ConfigError(f"{what}: {folder} holds no certificate (.der / .pem): every client would be refused; "
                          "copy the clients' certificates into it")
    return out


class _TrustList:
    """asyncua's certificate validator for ``trusted_clients`` (called at each CreateSession with a certificate)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def validate(self, cert: Any, app: Any) -> None:
        import hashlib

        from asyncua import ua
        from asyncua.common.utils import ServiceError
        from cryptography.hazmat.primitives import serialization

        trusted = await asyncio.get_running_loop().run_in_executor(None, lambda: _read_trusted(self.folder,
                                                                                               strict=False))
        fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        if fingerprint in trusted:
            return
        uri = getattr(app, "ApplicationUri", None) or "?"
        log.warning("sinks.opcua: session refused: the client %s presented a certificate (sha256 %s) that is not in "
                    "trusted_clients %s; copy its certificate there to allow it", uri, fingerprint[:16], self.folder)
        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)


def _read_cert_and_key(cert_path: Path | None, key_path: Path | None) -> tuple[tuple[bytes, str], tuple[bytes, str],
                                                                              str | None]:
    """Read and check the server's certificate and key; returns ``((bytes, format), (bytes, format), SAN URI)``.

    Raises:
        ConfigError: a file missing or unreadable, not a certificate / key, a password-protected key, a key that
            does not belong to the certificate, or an expired certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if cert_path is None or key_path is None:  # the config's validator already says so
        raise ConfigError("sinks.opcua: security sign-encrypt needs certificate and private_key")
    blobs: dict[str, bytes] = {}
    for what, p in (("certificate", cert_path), ("private_key", key_path)):
        try:
            blobs[what] = Path(p).read_bytes()
        except OSError as e:
            raise ConfigError(f"sinks.opcua.{what}: cannot read {p} ({(e.strerror or e.__class__.__name__).lower()})"
                              "; check the path and its permissions") from None
    cert_fmt = "pem" if blobs["certificate"].lstrip().startswith(b"-----BEGIN") else "der"
    key_fmt = "pem" if blobs["private_key"].lstrip().startswith(b"-----BEGIN") else "der"
    try:
        cert = (x509.load_pem_x509_certificate if cert_fmt == "pem" else x509.load_der_x509_certificate)(
            blobs["certificate"])
    except ValueError:
        raise ConfigError(f"sinks.opcua.certificate: {cert_path} is not an X.509 certificate (DER or PEM)") from None
    try:
        loader = serialization.load_pem_private_key if key_fmt == "pem" else serialization.load_der_private_key
        key = loader(blobs["private_key"], password=None)
    except TypeError:
        raise ConfigError(f"sinks.opcua.private_key: {key_path} is password-protected; give an unencrypted key "
                          "readable only by the service user") from None
    except ValueError:
        raise ConfigError(f"sinks.opcua.private_key: {key_path} is not a private key (PEM or DER)") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, pub)
            != cert.public_key().public_bytes(serialization.Encoding.DER, pub)):
        raise ConfigError(f"sinks.opcua.private_key: {key_path} does not belong to the certificate {cert_path}; "
                          "give the key the certificate was made for")
    if cert.not_valid_after_utc < datetime.now(timezone.utc):
        raise ConfigError(f"sinks.opcua.certificate: {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                          "renew it")
    san_uri: str | None = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        san_uri = uris[0] if uris else None
    except x509.ExtensionNotFound:
        pass
    if san_uri is None:
        log.warning("sinks.opcua.certificate: %s has no URI in its SubjectAlternativeName; most OPC UA clients "
                    "reject such a server certificate", cert_path)
    return (blobs["certificate"], cert_fmt), (blobs["private_key"], key_fmt), san_uri


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and await what asyncua left running (sessions' watchdogs, connections), bounded in time."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for t in tasks:
        t.cancel()
    gathered = asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
        loop.run_until_complete(asyncio.wait_for(gathered, 5.0))
