"""`LineConfig`: one closed YAML file for ``edgevision line CONFIG.yaml`` (examples in ``configs/line/``).

Secrets never sit in the YAML in clear: passwords and database URLs with credentials are read from a
file (``*_file``) or an environment variable (``*_env``). Relative paths are relative to the YAML file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgevision.core.errors import ConfigError

__all__ = [
    "FolderSource",
    "HttpConfig",
    "LineConfig",
    "ModbusSinkConfig",
    "MqttSinkConfig",
    "OpcUaSinkConfig",
    "QueueConfig",
    "RecordConfig",
    "SinksConfig",
    "VideoSource",
    "load_line_config",
    "read_secret",
]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FolderSource(_Closed):
    """A hot folder the camera software writes image files into.

    Attributes:
        path: the folder watched (not recursive).
        patterns: file name patterns taken (others, hidden files and ``*.tmp`` / ``*.part`` are ignored).
        after: what happens to a file once its part is recorded: ``move`` (into ``done_dir``), ``delete``, ``keep``.
        done_dir: where ``move`` puts files (default ``PATH/done``).
        stable_ms: a file counts as complete when its size and modification time have not changed for this long
            and it can be opened (files still being written or copied are not read half-written).
        poll_ms: how often the folder is listed.
        part_id_regex: a regular expression searched in the file name; its group ``part`` (else the first group)
            is the part id, its group ``serial`` the serial number. None: the file name (without extension).
    """

    type: Literal["folder"] = "folder"
    name: str | None = None
    path: Path
    patterns: list[str] = Field(default_factory=lambda: ["*.png", "*.jpg", "*.jpeg", "*.bmp", "*.tif", "*.tiff"])
    after: Literal["move", "delete", "keep"] = "move"
    done_dir: Path | None = None
    stable_ms: int = Field(300, ge=0, le=600_000)
    poll_ms: int = Field(100, ge=5, le=60_000)
    part_id_regex: str | None = None


class VideoSource(_Closed):
    """A camera stream or video file through OpenCV's FFmpeg backend.

    Attributes:
        url: ``rtsp://...``, ``http://...`` or a video file path.
        stride: inspect every n-th frame; reconnect_min_s / reconnect_max_s: the backoff between reconnects.
    """

    type: Literal["video"] = "video"
    name: str | None = None
    url: str
    stride: int = Field(1, ge=1)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    loop: bool = False


class OpcUaSinkConfig(_Closed):
    """EdgeVision's own OPC UA server (asyncua) exposing the station's last decision.

    Attributes:
        endpoint: ``opc.tcp://HOST:PORT/PATH`` the server listens on.
        namespace: the namespace URI of EdgeVision's nodes.
        security: ``none`` or ``sign-encrypt`` (Basic256Sha256, SignAndEncrypt; needs certificate and private_key).
        certificate / private_key: the server's certificate (DER or PEM) and key (PEM).
        users_file: a file of ``user:password`` lines; None with ``anonymous: false`` refuses everyone.
        anonymous: allow anonymous sessions (only when set).
    """

    endpoint: str = "opc.tcp://127.0.0.1:4840/edgevision/"
    namespace: str = "urn:edgevision:line"
    security: Literal["none", "sign-encrypt"] = "none"
    certificate: Path | None = None
    private_key: Path | None = None
    users_file: Path | None = None
    anonymous: bool = False
    heartbeat_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _security_needs_keys(self) -> OpcUaSinkConfig:
        if self.security != "none" and (self.certificate is None or self.private_key is None):
            raise ValueError("security sign-encrypt needs certificate and private_key")
        return self


class ModbusSinkConfig(_Closed):
    """A PLC written over Modbus TCP (EdgeVision is the client).

    Attributes:
        host / port / unit: the PLC; coil: the coil set to 1 for NG (reject), 0 for OK;
        registers: the first holding register: [defect count, part counter low 16 bits, inference ms x10,
        heartbeat]; timeout_s: per request.
    """

    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255)
    coil: int = Field(0, ge=0, le=65535)
    registers: int = Field(0, ge=0, le=65535)
    timeout_s: float = Field(1.0, gt=0)


class MqttSinkConfig(_Closed):
    """One JSON message per part to an MQTT broker (QoS 1), through a durable local queue.

    Attributes:
        host / port: the broker; topic: a template with ``{station}``, ``{part_id}``, ``{decision}``;
        qos: 0 or 1; client_id: default ``edgevision-STATION``; username / password_file / password_env;
        tls_ca / tls_cert / tls_key: TLS to the broker when ``tls_ca`` is set; keepalive_s.
    """

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    topic: str = "edgevision/{station}/parts/{part_id}"
    status_topic: str = "edgevision/{station}/status"
    qos: Literal[0, 1] = 1
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    keepalive_s: int = Field(30, ge=5)


class SinksConfig(_Closed):
    opcua: OpcUaSinkConfig | None = None
    modbus: ModbusSinkConfig | None = None
    mqtt: MqttSinkConfig | None = None


class RecordConfig(_Closed):
    """The inspection record: one row per part, written before its decision goes anywhere.

    Attributes:
        db: an SQLite file (default ``line.db`` beside the YAML; WAL); ``postgresql://`` URLs need ``db_env`` or
            ``db_file`` so credentials stay out of the YAML.
        images_dir: where kept images go (default ``images/`` beside the database).
        keep_rejects: keep the image of every rejected part; keep_accepted: the fraction of accepted parts kept.
        retention_days / retention_gb: kept images older than this, or beyond this much disk, are removed.
    """

    db: str | None = None
    db_env: str | None = None
    db_file: Path | None = None
    images_dir: Path | None = None
    keep_rejects: bool = True
    keep_accepted: Annotated[float, Field(ge=0, le=1)] = 0.01
    retention_days: Annotated[float, Field(gt=0)] = 30
    retention_gb: Annotated[float, Field(gt=0)] = 10


class QueueConfig(_Closed):
    """Back-pressure between the sources and inference: ``block`` (a folder simply waits; a stream's reader
    pauses) or ``drop_oldest`` (the oldest waiting image is dropped, counted and alarmed)."""

    size: Annotated[int, Field(ge=1, le=100_000)] = 32
    when_full: Literal["block", "drop_oldest"] = "block"


class HttpConfig(_Closed):
    """``/metrics`` (Prometheus) and ``/healthz``; TLS when certificate and key are given."""

    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    certificate: Path | None = None
    private_key: Path | None = None


class LineConfig(_Closed):
    """Everything ``edgevision line`` runs with.

    Attributes:
        model: an EdgeVision ONNX file (FP32 or INT8) and its operating points.
        station: the station's name (in every record, topic and node).
        threads / providers: onnxruntime settings.
        sources: one or more `FolderSource` / `VideoSource`.
        sinks: where decisions go; record: the inspection record; queue: back-pressure; http: metrics / health.
        costs: ``{escape, false_reject}`` per part, for ``edgevision line report``.
    """

    model: Path
    station: str = Field("station-1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    threads: int | None = Field(None, ge=1)
    providers: str | None = None
    sources: list[FolderSource | VideoSource] = Field(min_length=1)
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    record: RecordConfig = Field(default_factory=lambda: RecordConfig())
    queue: QueueConfig = Field(default_factory=lambda: QueueConfig())
    http: HttpConfig | None = None
    costs: dict[Literal["escape", "false_reject"], float] | None = None


def _resolve(base: Path, p: Path | None) -> Path | None:
    return None if p is None else (p if p.is_absolute() else base / p)


def load_line_config(path: Path | str) -> LineConfig:
    """Read and check a line YAML; relative paths become relative to its folder.

    Raises:
        ConfigError: one line naming the file and the key.
    """
    from edgevision.config import load_yaml_config

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: line config not found; see configs/line/folder-opcua-mqtt.yaml")
    cfg = load_yaml_config(path, LineConfig, "line config")
    base = path.resolve().parent
    cfg.model = _resolve(base, cfg.model)  # type: ignore[assignment]
    for s in cfg.sources:
        if isinstance(s, FolderSource):
            s.path = _resolve(base, s.path)  # type: ignore[assignment]
            s.done_dir = _resolve(base, s.done_dir) or s.path / "done"
    r = cfg.record
    if r.db is None and r.db_env is None and r.db_file is None:
        r.db = str(base / "line.db")
    elif r.db is not None and "://" not in r.db:
        r.db = str(_resolve(base, Path(r.db)))
    if r.db is not None and r.db.startswith(("postgres://", "postgresql://")) and "@" in r.db:
        raise ConfigError(f"{path}: record.db: a database URL with credentials must not sit in the YAML; put it in "
                          "a file (record.db_file) or an environment variable (record.db_env)")
    r.images_dir = _resolve(base, r.images_dir)
    for sink in (cfg.sinks.opcua, cfg.sinks.mqtt):
        if sink is None:
            continue
        for key in ("certificate", "private_key", "users_file", "password_file", "tls_ca", "tls_cert", "tls_key"):
            if hasattr(sink, key):
                setattr(sink, key, _resolve(base, getattr(sink, key)))
    names = [s.name for s in cfg.sources if s.name]
    if len(names) != len(set(names)):
        raise ConfigError(f"{path}: sources: two sources share a name ({names})")
    return cfg


def read_secret(file: Path | None, env: str | None, what: str) -> str | None:
    """A secret from a file (first line, stripped) or an environment variable; None when neither is set.

    Raises:
        ConfigError: the file is missing or unreadable, or the variable is unset.
    """
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as e:
            raise ConfigError(f"{what}: cannot read the secret file {file} ({e.__class__.__name__})") from None
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{what}: environment variable {env} is not set")
        return value
    return None

