"""`run_server`: load the model, bind the port, serve with uvicorn until SIGTERM / SIGINT, drain, stop.

Everything that can fail on a bad configuration (token file, model file, a model that fails on a blank
image, a port in use or not allowed) fails *before* the port is bound, as an `EdgeVisionError` with one
line that names the item and the fix. On SIGTERM or SIGINT the service stops advertising readiness,
closes the listening socket (new connections are refused), lets the requests in flight finish (up to
``drain_timeout_s``), then returns: the process exits 0, which systemd and container runtimes read
as a clean stop.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from edgevision.core.errors import ConfigError
from edgevision.serve.config import ServeConfig, read_token

if TYPE_CHECKING:
    from edgevision.runtime.detector import Detector

__all__ = ["StopReport", "bind_socket", "load_detector", "run_server"]

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


def run_server(config: ServeConfig, announce: Callable[[str], None] = print) -> StopReport:
    """Serve ``config.model`` until SIGTERM / SIGINT; return after the drain.

    Args:
        config: the service configuration.
        announce: called once with ``serving MODEL on http://HOST:PORT`` when the port is bound.

    Raises:
        ConfigError / ModelFormatError: bad token file, model, host or port (nothing is bound).
    """
    import uvicorn

    from edgevision.serve.app import create_app

    token = None
    if config.token_file is not None:
        token, warning = read_token(config.token_file)
        if warning:
            log.warning("%s", warning)
    elif config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without --token-file: anyone who reaches this port can use the model; "
                    "set a token (see deploy/README.md)", config.host)
    import os

    cores = os.cpu_count() or 1
    if config.concurrency > 1 and (config.threads or cores) * config.concurrency > cores:
        log.warning("%d inference slots x %s thread(s) each on %d cores: they compete; for throughput set "
                    "--threads %d", config.concurrency, config.threads or f"all {cores}", cores,
                    max(1, cores // config.concurrency))
    detector = load_detector(config)
    app = create_app(detector, config, token)
    state = app.state.service
    sock = bind_socket(config.host, config.port)
    host, port = sock.getsockname()[:2]

    uv = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", http="h11", loop="asyncio",
                        ws="none", server_header=False, timeout_keep_alive=5,
                        timeout_graceful_shutdown=config.drain_timeout_s)  # type: ignore[arg-type]  # a float works

    received: list[str] = []

    class _Server(uvicorn.Server):
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
        announce(f"serving {config.model} on http://{shown}:{port}")
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
