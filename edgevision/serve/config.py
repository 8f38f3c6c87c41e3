"""`ServeConfig`: every knob of ``edgevision serve``, typed and closed.

The CLI fills it from options, each of which also reads an ``EDGEVISION_*`` environment variable
(`ENV`), so a systemd unit or a container configures the service without a command line.
Precedence: command-line option > environment variable > default.
"""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgevision.core.errors import ConfigError

__all__ = ["ENV", "ServeConfig", "read_tls", "read_token"]

ENV: dict[str, str] = {
    "model": "EDGEVISION_MODEL",
    "host": "EDGEVISION_HOST",
    "port": "EDGEVISION_PORT",
    "token_file": "EDGEVISION_TOKEN_FILE",
    "tls_cert": "EDGEVISION_TLS_CERT",
    "tls_key": "EDGEVISION_TLS_KEY",
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
        tls_cert / tls_key: PEM certificate (chain) and its unencrypted private key: the service speaks HTTPS
            (TLS 1.2 or later) instead of plain HTTP. Both or neither; None: plain HTTP.
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
    tls_cert: Path | None = None
    tls_key: Path | None = None
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
    return token, _not_private(path, "token file") or warning


def _not_private(path: Path, what: str) -> str | None:
    """A warning when ``path`` may be read by users other than its owner and its group (POSIX), else None."""
    if os.name != "posix":
        return None
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
        return (f"{path}: {what} is readable by other users (mode {stat.S_IMODE(mode):o}); "
                f"restrict it: chmod 600 {path} (or 640 with the service's group)")
    return None


def read_tls(cert: Path | None, key: Path | None) -> tuple[ssl.SSLContext | None, str | None]:
    """The server-side TLS context (TLS 1.2 or later) for ``cert`` / ``key`` and a warning, or (None, None) for
    plain HTTP when neither is given.

    The key file is checked like the token file (`read_token`): a key other users may read is a warning, not a
    refusal. An encrypted key is refused: a service cannot type its passphrase.

    Raises:
        ConfigError: only one of the two given; a missing / unreadable file; not PEM; a key that does not match
            the certificate; an encrypted key. One line naming the option and the fix.
    """
    if cert is None and key is None:
        return None, None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise ConfigError(f"{given} needs {missing} too (EDGEVISION_TLS_CERT and EDGEVISION_TLS_KEY): give both, "
                          "or neither for plain HTTP")
    for flag, path, what, marker, tool in (("--tls-cert", cert, "certificate", b"-----BEGIN CERTIFICATE-----", "x509"),
                                           ("--tls-key", key, "private key", b"PRIVATE KEY-----", "pkey")):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{flag} {path}: {what} file not found; give the PEM file (see 'TLS' in "
                              "deploy/README.md) or leave --tls-cert and --tls-key out") from None
        except OSError as e:
            raise ConfigError(f"{flag} {path}: {what} file not readable ({e.strerror or e.__class__.__name__}); "
                              "check its permissions (the service's user must read it)") from None
        if marker not in data:
            raise ConfigError(f"{flag} {path}: no PEM {what} in it (no '{marker.decode().strip('-')}' line); give "
                              f"the {what} in PEM (from DER: openssl {tool} -inform DER -in FILE -out FILE.pem)")
    asked: list[bool] = []

    def no_passphrase() -> bytes:
        asked.append(True)
        return b""

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key), password=no_passphrase)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        if asked:
            raise ConfigError(f"--tls-key {key}: the key is encrypted and the service cannot type its passphrase; "
                              f"write it unencrypted (openssl pkey -in {key} -out {key}.plain, chmod 600) and give "
                              "that file") from None
        reason = getattr(e, "reason", None) or " ".join(str(e).split())[:120]
        if "MISMATCH" in str(reason).upper():
            raise ConfigError(f"--tls-key {key}: does not match the certificate {cert}; give the key the "
                              "certificate was made for") from None
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: cannot load them ({reason}); give a PEM "
                          "certificate and its unencrypted PEM private key") from None
    return ctx, _not_private(key, "TLS private key file")
