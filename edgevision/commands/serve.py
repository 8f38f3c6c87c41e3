"""``edgevision serve MODEL [--host 127.0.0.1] [--port 8080] [--token-file F] [--tls-cert F --tls-key F] ...``: the
HTTP(S) detection service.

Every option also reads an ``EDGEVISION_*`` environment variable (``edgevision.serve.config.ENV``;
``deploy/edgevision.env`` lists them), so a systemd unit or a container needs no command line. The
endpoints are described in ``edgevision/serve/app.py`` and ``deploy/README.md``. Logs go to stdout
(journald and container runtimes collect them), one access line per request. Exit 0 after SIGTERM /
SIGINT and the drain; 2 for a bad configuration (one line on stderr, nothing bound).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from edgevision.commands._present import check_choice, out
from edgevision.serve.config import ENV

LOG_LEVELS = ("debug", "info", "warning", "error")


def command(
    model: Path = typer.Argument(..., envvar=ENV["model"], show_envvar=True,
                                 help="ONNX model written by `edgevision export`, `quantize` or `adopt`, or an Ultralytics ONNX export."),
    host: str = typer.Option("127.0.0.1", "--host", envvar=ENV["host"],
                             help="Address to listen on: 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, envvar=ENV["port"],
                             help="TCP port (0: any free port, printed at start)."),
    token_file: Path | None = typer.Option(None, "--token-file", envvar=ENV["token_file"],
                                           help="File holding the bearer token clients must send (401 without it)."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", envvar=ENV["tls_cert"],
                                         help="PEM certificate (chain): serve HTTPS (TLS 1.2+) instead of HTTP; "
                                              "needs --tls-key."),
    tls_key: Path | None = typer.Option(None, "--tls-key", envvar=ENV["tls_key"],
                                        help="PEM private key of --tls-cert (unencrypted; chmod 600)."),
    max_body_mb: float = typer.Option(20.0, "--max-body-mb", min=0.001, envvar=ENV["max_body_mb"],
                                      help="Largest request body in MiB; larger ones get 413."),
    max_pixels_mp: float = typer.Option(100.0, "--max-pixels-mp", min=0.001, envvar=ENV["max_pixels_mp"],
                                        help="Largest image in megapixels; larger ones get 400 before decoding."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, max=64, envvar=ENV["concurrency"],
                                    help="Images inferred at the same time (threads sharing one session)."),
    max_queue: int = typer.Option(16, "--max-queue", min=0, envvar=ENV["max_queue"],
                                  help="Requests that may wait for a free slot; more get 503 with Retry-After."),
    threads: int | None = typer.Option(None, "--threads", min=1, envvar=ENV["threads"],
                                       help="onnxruntime threads per inference (default: all cores)."),
    providers: str | None = typer.Option(None, "--providers", envvar=ENV["providers"],
                                         help="onnxruntime providers, comma-separated (default: the best installed)."),
    drain_timeout_s: float = typer.Option(30.0, "--drain-timeout-s", min=0.0, envvar=ENV["drain_timeout_s"],
                                          help="On SIGTERM, seconds to let in-flight requests finish."),
    idle_timeout_s: float = typer.Option(10.0, "--idle-timeout-s", min=0.001, max=3600, envvar=ENV["idle_timeout_s"],
                                         help="Close a connection that sends no request for this many seconds "
                                              "(after connecting, and between keep-alive requests)."),
    request_timeout_s: float = typer.Option(30.0, "--request-timeout-s", min=0.001, max=3600,
                                            envvar=ENV["request_timeout_s"],
                                            help="Most seconds from a request's first byte to the end of its body; "
                                                 "slower requests get 408."),
    max_connections: int | None = typer.Option(None, "--max-connections", min=1, envvar=ENV["max_connections"],
                                               help="Connections open at once; more get 503 (default: from the file "
                                                    "descriptor limit, at most 1024)."),
    public_info: bool = typer.Option(False, "--public-info/--no-public-info", envvar=ENV["public_info"],
                                     help="Serve /readyz (model name, sha256) and /openapi.json without the token."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", envvar=ENV["access_log"],
                                    help="Log one line per request."),
    log_level: str = typer.Option("info", "--log-level", envvar=ENV["log_level"],
                                  help="debug, info, warning or error."),
) -> None:
    """Serve a model over HTTP or HTTPS: POST /v1/detect, /healthz, /readyz, /metrics (needs the serve extra)."""
    from edgevision.core.errors import ConfigError

    check_choice("--log-level", log_level.lower(), LOG_LEVELS)
    missing = [m for m in ("fastapi", "uvicorn", "multipart", "prometheus_client") if not _has(m)]
    if missing:
        raise ConfigError(f"edgevision serve needs the serve extra ({', '.join(missing)} not installed): "
                          "pip install 'edgevision[serve]' (offline: see deploy/README.md)")
    if not _has("onnxruntime"):
        raise ConfigError("edgevision serve needs onnxruntime: pip install 'edgevision[serve,onnxruntime]'")
    from edgevision.serve.config import ServeConfig
    from edgevision.serve.server import run_server

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout, force=True)
    config = ServeConfig(model=model, host=host, port=port, token_file=token_file, tls_cert=tls_cert,
                         tls_key=tls_key, max_body_mb=max_body_mb,
                         max_pixels_mp=max_pixels_mp, concurrency=concurrency, max_queue=max_queue, threads=threads,
                         providers=providers, drain_timeout_s=drain_timeout_s, idle_timeout_s=idle_timeout_s,
                         request_timeout_s=request_timeout_s, max_connections=max_connections,
                         public_info=public_info, access_log=access_log, log_level=log_level.lower())
    report = run_server(config, announce=lambda line: out.print(line, highlight=False, soft_wrap=True))
    out.print(f"stopped{' on ' + report.signal if report.signal else ''}: {report.served} image(s) served"
              + (f", {report.cut} cut by the drain timeout" if report.cut else ""), highlight=False)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
