"""`run_server`: load the model, bind the port, serve with uvicorn until SIGTERM / SIGINT, drain, stop.

Everything that can fail on a bad configuration (token file, model file, a model that fails on a blank
image, a port in use or not allowed) fails *before* the port is bound, as an `EdgeVisionError` with one
line that names the item and the fix. On SIGTERM or SIGINT the service stops advertising readiness,
closes the listening socket (new connections are refused), lets the requests in flight finish (up to
``drain_timeout_s``), then returns: the process exits 0, which systemd and container runtimes read
as a clean stop.

Connections are guarded (`edgevision.serve.protocol`): closed when idle for ``idle_timeout_s`` (from the
moment they connect), cut with 408 when a request takes longer than ``request_timeout_s`` to arrive,
and refused with 503 beyond ``max_connections``, which by default follows the file descriptor limit.

With ``tls_cert`` / ``tls_key`` the service speaks HTTPS (TLS 1.2 or later). The TLS layer is this module's
(`tls_protocol`), not uvicorn's: uvicorn hands its ``ssl`` to asyncio, which handshakes before the HTTP protocol
exists, so a connection that never completes the handshake would be held 60 s and escape ``max_connections``
(a flood of them exhausts the descriptors). Here the handshake is one more phase of the guarded connection: it
counts against ``max_connections`` (beyond it a new connection is closed at once, before any handshake work),
must finish within ``idle_timeout_s``, and a closing connection waits at most ``idle_timeout_s`` for the client's
close_notify. Once the handshake is done, the guarded HTTP protocol runs unchanged over the encrypted transport.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from edgevision.core.errors import ConfigError
from edgevision.serve.config import ServeConfig, read_tls, read_token

if TYPE_CHECKING:
    from edgevision.runtime.detector import Detector
    from edgevision.serve.protocol import ConnectionLimits

__all__ = ["StopReport", "bind_socket", "connection_limit", "exposure_warning", "load_detector", "run_server",
           "tls_protocol"]

AUTO_MAX_CONNECTIONS = 1024
"""``max_connections`` when not set: this many, or fewer when the descriptor limit is lower."""
ACCEPT_BACKLOG = 64
"""The most connections asyncio accepts in one event-loop turn (uvicorn's ``backlog``). A refused connection holds
its descriptor for a few turns (accept, transport, connection_made, close), so a flood holds a few times this many
descriptors beyond the open connections; uvicorn's default, 2048, would let it take thousands."""
LISTEN_QUEUE = 1024
"""The kernel's queue of connections not yet accepted (they hold no descriptor of this process)."""

log = logging.getLogger("edgevision.serve")


@dataclass
class StopReport:
    """How the service ended: the signal, requests served, requests cut by the drain timeout."""

    signal: str | None
    served: int
    cut: int
    uptime_s: float


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        ConfigError: unknown host, port in use, or a port / address this user may not bind.
    """
    import ipaddress

    try:  # a numeric address needs no resolver (nor the network)
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        addr: tuple[Any, ...] = (host, port)
    except ValueError:
        try:
            family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        except socket.gaierror as e:
            raise ConfigError(f"--host {host}: not an address of this machine ({e.strerror}); use 127.0.0.1 (this "
                              "machine only) or 0.0.0.0 (every interface)") from None
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it every
    # keep-alive answer waits ~40 ms (Nagle's algorithm against the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if hasattr(socket, "SO_REUSEADDR") and socket.SO_REUSEADDR and not hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # POSIX: rebind right after a restart
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        import errno

        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"--port {port}: already in use on {host}; stop the other service or choose another "
                              "port with --port (or EDGEVISION_PORT)") from None
        if e.errno == errno.EACCES:
            raise ConfigError(f"--port {port}: this user may not bind it on {host} (ports below 1024 need "
                              "privileges); use a port >= 1024 such as 8080") from None
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); use an address of "
                          "this machine, e.g. 127.0.0.1 or 0.0.0.0") from None
    sock.set_inheritable(True)
    return sock


def _fd_reserve(soft: int) -> int:
    """Descriptors kept beside the open connections: the process's own (model, logs, spooled uploads, the
    listening socket) and the connections being accepted and refused during a flood."""
    return min(max(64 + 4 * ACCEPT_BACKLOG, soft // 8), soft // 2)


def connection_limit(requested: int | None) -> tuple[int, str]:
    """How many connections may be open at once, and a note for the log.

    ``requested`` None: `AUTO_MAX_CONNECTIONS`, or fewer so that the open connections and the reserve stay below
    the soft RLIMIT_NOFILE. A requested number that needs more descriptors than the soft limit raises it up to
    the hard limit (allowed without privileges).

    Raises:
        ConfigError: ``requested`` needs more descriptors than the hard limit allows.
    """
    try:
        import resource
    except ImportError:  # Windows: no descriptor limit of this kind
        return requested or AUTO_MAX_CONNECTIONS, "no RLIMIT_NOFILE on this platform"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited:
        return requested or AUTO_MAX_CONNECTIONS, "RLIMIT_NOFILE unlimited"
    if requested is None:
        limit = max(1, min(AUTO_MAX_CONNECTIONS, soft - _fd_reserve(soft)))
        return limit, f"from RLIMIT_NOFILE {soft}"
    need = requested + max(64 + 4 * ACCEPT_BACKLOG, requested // 7)
    if need > soft:
        if hard != unlimited and need > hard:
            raise ConfigError(f"--max-connections {requested}: needs about {need} file descriptors, but this process "
                              f"may open at most {hard} (RLIMIT_NOFILE); lower it, or raise the limit (LimitNOFILE= "
                              f"in the systemd unit, `ulimit -n`, docker --ulimit nofile=...)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return requested, f"RLIMIT_NOFILE raised from {soft} to {need}"
    return requested, f"RLIMIT_NOFILE {soft}"


def load_detector(config: ServeConfig) -> Detector:
    """Open the model and run it once on a blank image (warm-up; a model that cannot run fails here)."""
    import numpy as np

    from edgevision.runtime.detector import Detector

    det = Detector(config.model, providers=config.providers, threads=config.threads)
    h, w = det.metadata.input.size_hw
    try:
        det(np.zeros((h, w, 3), np.uint8))
    except Exception as e:
        raise ConfigError(f"{config.model}: the model fails on a blank {w}x{h} image ({' '.join(str(e).split())[:200]}); "
                          "re-export it with `edgevision export`") from None
    return det


def exposure_warning(host: str, token: bool, tls: bool) -> str | None:
    """The start-up warning for a service that listens beyond loopback without a token, or with a token in clear
    text (no TLS); None on loopback or with both."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    if not token:
        return (f"serving on {host} without --token-file: anyone who reaches this port can use the model; "
                "set a token (see deploy/README.md)")
    if not tls:
        return (f"serving on {host} with a token but without TLS: the bearer token crosses the network in clear "
                "text; give --tls-cert/--tls-key (see 'TLS' in deploy/README.md)")
    return None


def tls_protocol(inner: Callable[..., asyncio.Protocol], context: ssl.SSLContext, limits: ConnectionLimits,
                 stopping: Callable[[], bool] = lambda: False) -> type[asyncio.Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)`` for HTTPS: a TLS handshake, then ``inner`` (the
    guarded HTTP protocol, `edgevision.serve.protocol.guarded_protocol`) over the encrypted transport.

    A connection in its handshake counts against ``limits.max_connections`` like an open HTTP connection (beyond
    it, a new connection is closed at once: no handshake work is spent on a flood), must complete the handshake
    within ``limits.idle_timeout_s``, and is shown in ``edgevision_open_connections``. Connections the server
    closes during the handshake count in ``edgevision_connections_closed_total{reason}``: ``idle_timeout`` (too
    slow), ``tls_handshake`` (not TLS, e.g. plain HTTP, or no protocol version / cipher in common),
    ``too_many_connections``. ``stopping()`` true after a handshake: the service is draining, the connection is
    closed.
    """
    pending: set[asyncio.Protocol] = set()
    # Python 3.11+: a closing connection waits at most this long for the client's close_notify (asyncio: 30 s)
    shutdown: dict[str, Any] = {"ssl_shutdown_timeout": limits.idle_timeout_s} if sys.version_info >= (3, 11) else {}

    class TlsHandshake(asyncio.Protocol):
        _refused_since_log = 0
        _refused_logged_at = 0.0

        def __init__(self, **kwargs: Any) -> None:  # uvicorn's: config, server_state, app_state, _loop
            self._kwargs = kwargs
            self._open: set[Any] = kwargs["server_state"].connections  # the HTTP connections (inner's)
            self._inner: asyncio.Protocol | None = None
            self._early: list[bytes] = []  # decrypted bytes that arrive before `inner` takes over
            self._eof = self._lost = self._too_slow = False
            self._task: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            if len(pending) + len(self._open) >= limits.max_connections:
                self._refuse()
                transport.abort()
                return
            transport.pause_reading()  # the TLS layer reads from here on
            pending.add(self)
            if limits.metrics is not None:
                limits.metrics.connections.inc()
            self._task = asyncio.get_running_loop().create_task(self._handshake(transport))

        async def _handshake(self, raw: asyncio.Transport) -> None:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(limits.idle_timeout_s, self._handshake_too_slow, raw)
            try:
                tls = await loop.start_tls(raw, self, context, server_side=True,
                                           ssl_handshake_timeout=limits.idle_timeout_s + 5,  # ours fires first
                                           **shutdown)
            except (OSError, ValueError) as e:  # ssl.SSLError, or the client left
                if isinstance(e, ssl.SSLError) and not self._too_slow:
                    self._closed("tls_handshake")
                    log.debug("TLS handshake failed: %s", getattr(e, "reason", None) or e)
                tls = None
            finally:
                timer.cancel()
                self._unpend()
            if self._too_slow:  # aborted by the timer (start_tls then returns None or raises)
                self._closed("idle_timeout")
                return
            if tls is None or self._lost or tls.is_closing():
                return
            if stopping():
                tls.close()
                return
            http = inner(**self._kwargs)
            self._inner = http
            tls.set_protocol(http)
            http.connection_made(tls)
            for data in self._early:
                http.data_received(data)
            self._early.clear()
            if self._eof:
                http.eof_received()

        def _handshake_too_slow(self, raw: asyncio.Transport) -> None:
            self._too_slow = True
            raw.abort()

        def _unpend(self) -> None:
            if self in pending:
                pending.discard(self)
                if limits.metrics is not None:
                    limits.metrics.connections.dec()

        def _closed(self, reason: str) -> None:
            if limits.metrics is not None:
                limits.metrics.connections_closed.labels(reason).inc()

        def _refuse(self) -> None:
            self._closed("too_many_connections")
            cls = type(self)
            cls._refused_since_log += 1
            now = time.monotonic()
            if now - cls._refused_logged_at >= 10:  # one line per 10 s under a flood, not one per connection
                log.warning("%d open connections, the limit (--max-connections %d): closed %d new connection(s) "
                            "before the TLS handshake", len(pending) + len(self._open), limits.max_connections,
                            cls._refused_since_log)
                cls._refused_since_log, cls._refused_logged_at = 0, now

        # the TLS layer calls these until `inner` takes over (set_protocol), and after if they were already queued
        def data_received(self, data: bytes) -> None:
            if self._inner is not None:
                self._inner.data_received(data)
            else:
                self._early.append(data)

        def eof_received(self) -> bool | None:
            if self._inner is not None:
                return self._inner.eof_received()
            self._eof = True
            return None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._inner is not None:
                self._inner.connection_lost(exc)
            else:
                self._lost = True
                self._unpend()

    return TlsHandshake


class _AnsweredOnce:
    """The ASGI app uvicorn runs: an exception the app has already answered (its handler logged it once, with the
    request id, and sent the JSON 500) is not re-raised to uvicorn, which would log the same traceback again."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if scope["type"] != "http" or not started:
                raise


def run_server(config: ServeConfig, announce: Callable[[str], None] = print) -> StopReport:
    """Serve ``config.model`` until SIGTERM / SIGINT; return after the drain.

    Args:
        config: the service configuration.
        announce: called with ``serving MODEL on http://HOST:PORT`` (``https://`` with TLS) when the port is bound,
            then with the operating points the decisions use (each class's threshold and how it was chosen).

    Raises:
        ConfigError / ModelFormatError: bad token file, TLS certificate or key, model, host or port (nothing is
            bound).
    """
    import uvicorn

    from edgevision.serve.app import create_app
    from edgevision.serve.protocol import ConnectionLimits, guarded_protocol

    token = None
    if config.token_file is not None:
        token, warning = read_token(config.token_file)
        if warning:
            log.warning("%s", warning)
    tls, tls_warning = read_tls(config.tls_cert, config.tls_key)
    if tls_warning:
        log.warning("%s", tls_warning)
    exposed = exposure_warning(config.host, token is not None, tls is not None)
    if exposed:
        log.warning("%s", exposed)
    from edgevision.core.cpu import usable_cores

    cores = usable_cores()
    if config.concurrency > 1 and (config.threads or cores) * config.concurrency > cores:
        log.warning("%d inference slots x %s thread(s) each on %d cores: they compete; for throughput set "
                    "--threads %d", config.concurrency, config.threads or f"all {cores}", cores,
                    max(1, cores // config.concurrency))
    max_connections, fd_note = connection_limit(config.max_connections)
    detector = load_detector(config)
    app = create_app(detector, config, token)
    state = app.state.service
    sock = bind_socket(config.host, config.port)
    host, port = sock.getsockname()[:2]

    limits = ConnectionLimits(config.idle_timeout_s, config.request_timeout_s, max_connections, state.metrics)
    log.info("connections: at most %d open (%s); idle ones closed after %g s; a request must arrive within %g s",
             max_connections, fd_note, config.idle_timeout_s, config.request_timeout_s)
    http: type[asyncio.Protocol] = guarded_protocol(limits)
    if tls is not None:
        http = tls_protocol(http, tls, limits, stopping=lambda: state.draining)
        log.info("TLS: certificate %s, TLS 1.2 or later; a handshake must finish within %g s", config.tls_cert,
                 config.idle_timeout_s)
    uv = uvicorn.Config(_AnsweredOnce(app), log_config=None, access_log=False, lifespan="on",
                        http=http, loop="asyncio", ws="none", server_header=False,
                        backlog=ACCEPT_BACKLOG,
                        timeout_keep_alive=config.idle_timeout_s,  # type: ignore[arg-type]  # a float works
                        timeout_graceful_shutdown=config.drain_timeout_s)  # type: ignore[arg-type]

    received: list[str] = []

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            for s in sockets or []:  # asyncio set the listen queue to its accept batch (ACCEPT_BACKLOG): widen it
                s.listen(LISTEN_QUEUE)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            name = signal.Signals(sig).name
            received.append(name)
            state.begin_drain(f"received {name}")
            super().handle_exit(sig, frame)

    # uvicorn re-raises the captured signal after its shutdown; these handlers make that a no-op, so the
    # process ends normally (exit 0) after the drain instead of dying by the default SIGTERM action.
    from uvicorn.server import HANDLED_SIGNALS  # SIGINT, SIGTERM (+ SIGBREAK on Windows)

    ours = {s: signal.signal(s, lambda *_: None) for s in HANDLED_SIGNALS}
    shown = f"[{host}]" if ":" in host else host
    t0 = time.monotonic()
    try:
        announce(f"serving {config.model} on {'https' if tls is not None else 'http'}://{shown}:{port}")
        announce(f"decisions at {state.operating_source}: " + "; ".join(
            f"{n} {state.operating[n]:.3g} ({state.operating_rules[n]})" for n in detector.names))
        _Server(uv).run(sockets=[sock])
    finally:
        for s, handler in ours.items():
            signal.signal(s, handler)
        sock.close()
    report = StopReport(received[0] if received else None, state.served, state.inflight, time.monotonic() - t0)
    if report.cut:
        log.warning("stopped: %d request(s) were still running after the %g s drain timeout and were cut",
                    report.cut, config.drain_timeout_s)
    log.info("stopped%s after %.0f s: %d image(s) served", f" on {report.signal}" if report.signal else "",
             report.uptime_s, report.served)
    return report
