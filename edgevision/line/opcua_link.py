"""`OpcUaLink`: one session of EdgeVision as an OPC UA client to an existing server (a PLC or SCADA), held by a
daemon thread with an asyncio loop of its own and reconnected with backoff.

What runs on the session belongs to the owner, an async generator ``session(client, stop, wake)``:
`edgevision.line.sinks.opcua_client.OpcUaClientSink` writes each part's fields to the server's nodes,
`edgevision.line.triggers.OpcUaTriggers` subscribes to the node the PLC writes each part's id to. The link
connects (within ``timeout_s`` per step), runs the session until it raises or the link is stopped, and on an
error reports a one-line detail through ``on_down`` and reconnects after 0.2 s, doubling up to 5 s; each
``yield`` of the session (work done) resets the wait to the shortest one. Nothing the link does blocks or
raises in the owner's thread, except `OpcUaLink.start`, which checks the configuration first.

Security (`edgevision.line.config.OpcUaEndpointConfig`): ``security: none`` (passwords travel in clear: only
on a closed cell network) or ``sign-encrypt`` (Basic256Sha256, SignAndEncrypt) with the client's
``certificate`` (DER or PEM; its SubjectAlternativeName URI is the client's application URI, which servers
check) and ``private_key``. The server's certificate is taken from its endpoint description, or, with
``server_certificate``, must be that certificate (pinned: another one is refused, a detail naming both
fingerprints). A user session with ``username`` and a password from ``password_file`` / ``password_env``;
else an anonymous session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import security_policies, uacrypto

from edgevision.core.errors import ConfigError
from edgevision.line.config import OpcUaEndpointConfig, read_secret
from edgevision.line.sinks.base import one_line
from edgevision.line.sinks.opcua import _cancel_all, _read_cert_and_key

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "LinkDown", "OpcUaLink", "parse_nodeid", "resolve_namespace"]

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0

Identity = tuple[tuple[bytes, str], tuple[bytes, str], str]
Session = Callable[[Any, asyncio.Event, asyncio.Event], AsyncIterator[None]]


class LinkDown(Exception):
    """The connection or a node failed; the message (one line) becomes the owner's status detail."""


class OpcUaLink:
    """A reconnecting client session (see the module doc).

    Args:
        cfg: the endpoint, security and login (paths already resolved by `load_line_config`).
        what: the configuration key, for messages (``sinks.opcua_client``, ``sources.cam.trigger``).
        app_uri: the application URI without a certificate (with one, its SubjectAlternativeName URI).
        session: the owner's work on a connected client (see the module doc).
        on_down: called (on the link's thread) with a one-line detail when the connection or the session fails.
        thread_name: the daemon thread's name.
    """

    def __init__(self, cfg: OpcUaEndpointConfig, what: str, app_uri: str, session: Session,
                 on_down: Callable[[str], None], thread_name: str) -> None:
        self.cfg, self.what, self.app_uri = cfg, what, app_uri
        self._session, self._on_down, self._thread_name = session, on_down, thread_name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> None:
        """Read the password and the certificate, and start the thread (idempotent); the first connection
        attempt happens at once, in the thread.

        Raises:
            ConfigError: one line: an unreadable password file, an unset password variable, a bad certificate,
                key or pinned server certificate.
        """
        cfg = self.cfg
        password = read_secret(cfg.password_file, cfg.password_env, f"{self.what}.password")
        identity = _read_identity(cfg.certificate, cfg.private_key, self.what) if cfg.security == "sign-encrypt" \
            else None
        pinned = _read_pinned(cfg.server_certificate, self.what) if cfg.server_certificate is not None else None
        app_uri = identity[2] if identity is not None else self.app_uri
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._run, args=(password, identity, pinned, app_uri),
                                            name=self._thread_name, daemon=True)
            self._thread.start()

    def notify(self) -> None:
        """Wake the session (its ``wake`` event is set); a no-op before the loop runs or after it ended."""
        self._call_soon(stop=False)

    def stop(self, timeout: float) -> bool:
        """Stop the session and the thread; True when the thread ended within ``timeout`` (or never started)."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._call_soon(stop=True)
        if thread is not None and thread.is_alive():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: the client thread did not stop within %.1f s", self.what, timeout)
                return False
        return True

    @staticmethod
    async def until_stop(coro: Any, stop: asyncio.Event) -> Any:
        """``await coro``, unless ``stop`` is set first (then it is cancelled and None returned)."""
        task = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        return None if task.cancelled() else task.result()

    def describe(self, e: BaseException) -> str:
        """A one-line detail of an error of the connection (a timeout says which one)."""
        if isinstance(e, asyncio.TimeoutError):
            return f"no answer from {self.cfg.endpoint} within {self.cfg.timeout_s:g} s"
        return f"{self.cfg.endpoint}: {one_line(e)}"

    # ------------------------------------------------------------------ the thread

    def _call_soon(self, stop: bool) -> None:
        with self._lock:
            loop, wake, stop_ev = self._loop, self._wake, self._stop
        if loop is None or wake is None or stop_ev is None:
            return  # the thread looks at _stopping before it first waits

        def wake_up() -> None:
            if stop:
                stop_ev.set()
            wake.set()

        with contextlib.suppress(RuntimeError):  # the loop has already ended
            loop.call_soon_threadsafe(wake_up)

    def _run(self, password: str | None, identity: Identity | None, pinned: bytes | None, app_uri: str) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(loop, password, identity, pinned, app_uri))
        except Exception as e:  # the thread must report, not vanish silently
            log.exception("%s: client thread failed", self.what)
            self._on_down(f"client thread failed: {one_line(e)}")
        finally:
            try:
                _cancel_all(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                with self._lock:
                    self._loop = None
                asyncio.set_event_loop(None)
                loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop, password: str | None, identity: Identity | None,
                    pinned: bytes | None, app_uri: str) -> None:
        stop, wake = asyncio.Event(), asyncio.Event()
        with self._lock:
            self._loop, self._stop, self._wake = loop, stop, wake
            if self._stopping:
                stop.set()
        backoff = BACKOFF_MIN_S
        while not stop.is_set():
            client = None
            try:
                client = await self.until_stop(self._connect(password, identity, pinned, app_uri), stop)
                if client is None:
                    return
                async for _ in self._session(client, stop, wake):
                    backoff = BACKOFF_MIN_S  # work went through: the next outage starts from the shortest wait
                if stop.is_set():
                    return
                raise LinkDown(f"the session with {self.cfg.endpoint} ended")
            except LinkDown as e:
                self._on_down(str(e))
            except (OSError, asyncio.TimeoutError, RuntimeError, ValueError) as e:  # asyncua's errors: RuntimeError
                self._on_down(self.describe(e))
            except Exception as e:  # unexpected: reported with its traceback, then retried like an outage
                log.exception("%s: unexpected error", self.what)
                self._on_down(self.describe(e))
            finally:
                if client is not None:
                    await self._drop(client)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _connect(self, password: str | None, identity: Identity | None, pinned: bytes | None,
                       app_uri: str) -> Any:
        """A connected asyncua `Client` (session activated), within ``timeout_s`` per step.

        Raises:
            LinkDown: cannot connect, no matching secure endpoint, a server certificate other than the pinned
                one, or the session was refused.
        """
        cfg = self.cfg
        t = cfg.timeout_s
        client = Client(cfg.endpoint, timeout=t, watchdog_intervall=max(1.0, t))  # its probe: read ServerState
        client.name = client.description = f"EdgeVision {self.what}"
        client.application_uri = app_uri
        client.product_uri = "urn:edgevision"
        if cfg.username:
            client.set_user(cfg.username)
            client.set_password(password or "")
        try:
            if identity is not None:
                (cert, cert_fmt), (key, key_fmt), _ = identity
                server_cert = None
                if pinned is not None:
                    server_cert = uacrypto.CertProperties(pinned, "der")
                    await asyncio.wait_for(self._check_pinned(client, pinned), 2 * t)
                try:
                    await asyncio.wait_for(client.set_security(
                        security_policies.SecurityPolicyBasic256Sha256, uacrypto.CertProperties(cert, cert_fmt),
                        uacrypto.CertProperties(key, key_fmt), server_certificate=server_cert,
                        mode=ua.MessageSecurityMode.SignAndEncrypt), 2 * t)
                except ua.UaError as e:
                    if "endpoint" not in str(e).lower():
                        raise
                    raise LinkDown(f"{cfg.endpoint} offers no Basic256Sha256 SignAndEncrypt endpoint") from None
            await asyncio.wait_for(client.connect(), 2 * t)
        except BaseException:
            client.disconnect_socket()
            raise
        return client

    async def _check_pinned(self, client: Any, pinned: bytes) -> None:
        """Refuse a server whose Basic256Sha256 endpoint offers another certificate than the pinned one."""
        endpoints = await client.connect_and_get_server_endpoints()
        offered = [e.ServerCertificate for e in endpoints
                   if e.SecurityPolicyUri == security_policies.SecurityPolicyBasic256Sha256.URI and e.ServerCertificate]
        if not offered:
            raise LinkDown(f"{self.cfg.endpoint} offers no Basic256Sha256 SignAndEncrypt endpoint")
        got = uacrypto.der_from_x509(uacrypto.x509_from_der(offered[0]))
        if got != pinned:
            raise LinkDown(f"{self.cfg.endpoint}: the server's certificate (sha256 {_fingerprint(got)}) is not the "
                           f"pinned server_certificate (sha256 {_fingerprint(pinned)}); if the server's certificate "
                           "was renewed on purpose, pin the new one")

    async def _drop(self, client: Any) -> None:
        """Close the session and the connection, bounded in time, quietly (the server may already be gone)."""
        t = min(self.cfg.timeout_s, 1.0)
        alive = client.state is UaClientState.CONNECTED
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(client.close_session(), t)  # also stops the client's own watchdog tasks
        if alive:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(client.close_secure_channel(), t)
        client.disconnect_socket()


# ---------------------------------------------------------------------- helpers


def parse_nodeid(text: str, what: str) -> Any:
    """A NodeId or ExpandedNodeId (``nsu=URI;...``) from its string form.

    Raises:
        ConfigError: a NodeId that does not parse (``what`` names the key).
    """
    try:
        nid = ua.NodeId.from_string(text.strip())
    except (ua.UaError, ValueError):
        nid = None
    if nid is None or nid.Identifier in ("", None):
        raise ConfigError(f"{what}: {text[:100]!r} is not a NodeId; e.g. \"ns=2;s=Line1.PartId\", \"ns=3;i=1017\" "
                          "or \"nsu=urn:plc;s=PartId\"")
    return nid


async def resolve_namespace(client: Any, nid: Any, text: str, what: str, namespaces: list[str] | None) -> Any:
    """``nid`` with a namespace URI (``nsu=``) turned into the server's namespace index; ``namespaces`` caches the
    server's namespace array between calls (pass a list, filled on first use).

    Raises:
        LinkDown: the server has no such namespace.
    """
    uri = getattr(nid, "NamespaceUri", None)
    if not uri:
        return nid
    if namespaces is not None and not namespaces:
        namespaces.extend(await client.get_namespace_array())
    known = namespaces if namespaces is not None else list(await client.get_namespace_array())
    if uri not in known:
        raise LinkDown(f"{what} {text}: the server has no namespace {uri}")
    return ua.NodeId(nid.Identifier, ua.Int16(known.index(uri)), nid.NodeIdType)


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:16]


def _read_pinned(path: Path, what: str) -> bytes:
    """The pinned server certificate as DER.

    Raises:
        ConfigError: unreadable, or not an X.509 certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        blob = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{what}.server_certificate: cannot read {path} ({(e.strerror or e.__class__.__name__).lower()})"
                          "; check the path and its permissions") from None
    try:
        load = x509.load_pem_x509_certificate if blob.lstrip().startswith(b"-----BEGIN") else \
            x509.load_der_x509_certificate
        return load(blob).public_bytes(serialization.Encoding.DER)
    except ValueError:
        raise ConfigError(f"{what}.server_certificate: {path} is not an X.509 certificate (DER or PEM)") from None


def _read_identity(cert_path: Path | None, key_path: Path | None, what: str) -> Identity:
    """The client's certificate and key (checked as for the server sink) and its application URI.

    Raises:
        ConfigError: a file missing or unreadable, not a certificate / key, a key that does not belong to the
            certificate, an expired certificate, or a certificate without a URI in its SubjectAlternativeName.
    """
    from cryptography import x509

    if cert_path is not None:
        try:  # checked first: the server sink's reader only warns about a missing URI, in a server's words
            blob = Path(cert_path).read_bytes()
            load = x509.load_pem_x509_certificate if blob.lstrip().startswith(b"-----BEGIN") else \
                x509.load_der_x509_certificate
            cert = load(blob)
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            has_uri = bool(san.value.get_values_for_type(x509.UniformResourceIdentifier))
        except x509.ExtensionNotFound:
            has_uri = False
        except (OSError, ValueError):
            has_uri = True  # unreadable or not a certificate: the reader below says so
        if not has_uri:
            raise ConfigError(f"{what}.certificate: {cert_path} has no URI in its SubjectAlternativeName; OPC UA "
                              "servers check the client's application URI against it: make the certificate with one "
                              "(e.g. urn:edgevision:line:STATION:client)")
    try:
        cert_fmt, key_fmt, uri = _read_cert_and_key(cert_path, key_path)
    except ConfigError as e:
        raise ConfigError(str(e).replace("sinks.opcua.", f"{what}.", 1)) from None
    assert uri is not None
    return cert_fmt, key_fmt, uri
