"""`ServeConfig`: every knob of ``edgevision serve``, typed and closed.

The CLI fills it from options, each of which also reads an ``EDGEVISION_*`` environment variable
(`ENV`), so a systemd unit or a container configures the service without a command line.
Precedence: command-line option > environment variable > default.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgevision.core.errors import ConfigError

__all__ = ["ENV", "ServeConfig", "read_token"]

ENV: dict[str, str] = {
    "model": "EDGEVISION_MODEL",
    "host": "EDGEVISION_HOST",
    "port": "EDGEVISION_PORT",
    "token_file": "EDGEVISION_TOKEN_FILE",
    "max_body_mb": "EDGEVISION_MAX_BODY_MB",
    "max_pixels_mp": "EDGEVISION_MAX_PIXELS_MP",
    "concurrency": "EDGEVISION_CONCURRENCY",
    "max_queue": "EDGEVISION_MAX_QUEUE",
    "threads": "EDGEVISION_THREADS",
    "providers": "EDGEVISION_PROVIDERS",
    "drain_timeout_s": "EDGEVISION_DRAIN_TIMEOUT_S",
    "idle_timeout_s": "EDGEVISION_IDLE_TIMEOUT_S",
    "request_timeout_s": "EDGEVISION_REQUEST_TIMEOUT_S",
    "max_connections": "EDGEVISION_MAX_CONNECTIONS",
    "public_info": "EDGEVISION_PUBLIC_INFO",
    "access_log": "EDGEVISION_ACCESS_LOG",
    "log_level": "EDGEVISION_LOG_LEVEL",
}
"""Config field -> the environment variable the CLI reads it from (deploy/edgevision.env lists them all)."""


class ServeConfig(BaseModel):
    """How ``edgevision serve`` runs.

    Attributes:
        model: the ONNX file written by ``edgevision export`` (FP32, FP16 or INT8).
        host / port: where to listen (port 0: any free port, printed at start).
        token_file: a file holding the bearer token clients must send; None: no authentication.
        max_body_mb: request bodies above this many MiB are refused with 413 before decoding.
        max_pixels_mp: images above this many megapixels are refused with 400. The size is read from the header
            before anything is decoded, for every format the decoder accepts (formats whose size cannot be read
            safely are refused), so a small file that would decode to gigabytes is never decoded.
        concurrency: images inferred at the same time (one onnxruntime session shared by that many threads).
        max_queue: requests waiting for a free slot beyond the running ones; more get 503 + Retry-After.
        threads: onnxruntime intra-op threads per inference (None: all cores). With concurrency C on an
            N-core box, C * threads <= N avoids oversubscription.
        providers: onnxruntime execution providers, comma-separated (None: the best installed).
        drain_timeout_s: on SIGTERM / SIGINT, seconds to let in-flight requests finish before they are cut.
        idle_timeout_s: a connection that sends no byte of a request for this long is closed: right after it
            connects, and between the requests of a keep-alive connection.
        request_timeout_s: the most seconds from a request's first byte to the last byte of its body (headers and
            body together); a slower request gets 408 and its connection is closed.
        max_connections: connections open at once; more are answered 503 and closed at once. None: from the
            process's file descriptor limit (RLIMIT_NOFILE, less a reserve), at most 1024.
        public_info: serve ``/readyz`` (model file name, sha256) and ``/openapi.json`` without the token. With a
            token and False (the default) they need it too; ``/healthz`` is always open.
        access_log: one log line per request (method, path, status, latency, decision).
        log_level: debug, info, warning or error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token_file: Path | None = None
    max_body_mb: float = Field(20.0, gt=0)
    max_pixels_mp: float = Field(100.0, gt=0)
    concurrency: int = Field(1, ge=1, le=64)
    max_queue: int = Field(16, ge=0)
    threads: int | None = Field(None, ge=1)
    providers: str | None = None
    drain_timeout_s: float = Field(30.0, ge=0)
    idle_timeout_s: float = Field(10.0, gt=0, le=3600)
    request_timeout_s: float = Field(30.0, gt=0, le=3600)
    max_connections: int | None = Field(None, ge=1)
    public_info: bool = False
    access_log: bool = True
    log_level: str = "info"

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_pixels(self) -> int:
        return int(self.max_pixels_mp * 1_000_000)


def read_token(path: Path) -> tuple[str, str | None]:
    """The bearer token in ``path`` (surrounding whitespace stripped) and a warning, or None.

    Raises:
        ConfigError: missing / unreadable / empty file, or a token with whitespace or non-ASCII characters.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: token file not found; write the token into it (e.g. `openssl rand -hex 32 > "
                          f"{path}`) or leave --token-file out") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: token file not readable ({e.__class__.__name__}); check its permissions") from None
    token = text.strip()
    if not token:
        raise ConfigError(f"{path}: token file is empty; write the token into it (e.g. `openssl rand -hex 32 > {path}`)")
    if any(c.isspace() for c in token) or not token.isascii() or not token.isprintable():
        raise ConfigError(f"{path}: the token must be one line of printable ASCII without spaces "
                          "(e.g. `openssl rand -hex 32`)")
    warning = None
    if len(token) < 16:
        warning = f"{path}: the token has only {len(token)} characters; use at least 32 (`openssl rand -hex 32`)"
    if os.name == "posix":
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
            warning = (f"{path}: token file is readable by other users (mode {stat.S_IMODE(mode):o}); "
                       f"restrict it: chmod 600 {path} (or 640 with the service's group)")
    return token, warning
