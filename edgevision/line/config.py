"""`LineConfig`: one closed YAML file for ``edgevision line CONFIG.yaml`` (examples in ``configs/line/``).

Secrets never sit in the YAML in clear: passwords and database URLs with credentials are read from a
file (``*_file``) or an environment variable (``*_env``). Relative paths are relative to the YAML file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgevision.core.errors import ConfigError

__all__ = [
    "DriftConfig",
    "FolderSource",
    "HttpConfig",
    "LineConfig",
    "ModbusSinkConfig",
    "MqttTriggerConfig",
    "MqttSinkConfig",
    "OPCUA_CLIENT_FIELDS",
    "OpcUaClientSinkConfig",
    "OpcUaEndpointConfig",
    "OpcUaSinkConfig",
    "OpcUaTriggerConfig",
    "QueueConfig",
    "RecordConfig",
    "SinksConfig",
    "TriggerConfig",
    "VideoSource",
    "load_line_config",
    "read_secret",
]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttTriggerConfig(_Closed):
    """Part ids from trigger messages on MQTT (`edgevision.line.triggers.MqttTriggers`).

    Attributes:
        protocol: ``mqtt`` (the default).
        mqtt_host / mqtt_port: the broker; topic: subscribed with QoS 1 (may contain ``+`` / ``#``);
        username / password_file / password_env: the broker login (the password never in the YAML);
        tls_ca / tls_cert / tls_key: TLS to the broker when ``tls_ca`` is set (as for ``sinks.mqtt``).
        max_age_s: a trigger older than this when an image arrives is discarded (counted ``stale``).
        part_field / serial_field: the JSON keys of the part id and serial number in a message; a payload that
            is not a JSON object is the part id as text.
    """

    protocol: Literal["mqtt"] = "mqtt"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(1883, ge=1, le=65535)
    topic: str = Field(min_length=1)
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_age_s: float = Field(10.0, gt=0)
    part_field: str = Field("part_id", min_length=1)
    serial_field: str = Field("serial", min_length=1)


class OpcUaEndpointConfig(_Closed):
    """A session of EdgeVision as an OPC UA client to an existing server (`edgevision.line.opcua_link`).

    Attributes:
        endpoint: ``opc.tcp://HOST:PORT[/PATH]`` of that server (no credentials in it).
        security: ``none`` or ``sign-encrypt`` (Basic256Sha256, SignAndEncrypt; needs the client's certificate
            and private_key).
        server_certificate: the server's certificate (DER or PEM), pinned: with ``sign-encrypt`` a server whose
            certificate differs is refused (else the certificate the server offers is taken as it is).
        username / password_file / password_env: a user session (else anonymous); timeout_s: per request.
    """

    endpoint: str
    security: Literal["none", "sign-encrypt"] = "none"
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None
    username: str | None = Field(None, min_length=1)
    password_file: Path | None = None
    password_env: str | None = None
    timeout_s: float = Field(5.0, gt=0, le=600)

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, v: str) -> str:
        from urllib.parse import urlparse

        try:
            u = urlparse(v)
            port = u.port
        except ValueError:
            port, u = None, None
        if u is None or u.scheme != "opc.tcp" or not u.hostname or not port:
            raise ValueError(f"{v[:100]!r} is not opc.tcp://HOST:PORT[/PATH] (e.g. opc.tcp://192.168.0.10:4840)")
        if "@" in u.netloc:
            raise ValueError("credentials must not sit in the endpoint; use username and password_file / password_env")
        return v

    @model_validator(mode="after")
    def _security_needs_keys(self) -> OpcUaEndpointConfig:
        if self.security != "none" and (self.certificate is None or self.private_key is None):
            raise ValueError("security sign-encrypt needs the client's certificate and private_key")
        if self.server_certificate is not None and self.security == "none":
            raise ValueError("server_certificate pins the server's certificate for security sign-encrypt; "
                             "set security: sign-encrypt")
        if (self.password_file is not None or self.password_env is not None) and not self.username:
            raise ValueError("a password (password_file / password_env) needs a username")
        return self


class OpcUaTriggerConfig(OpcUaEndpointConfig):
    """Part ids from a node of the PLC's OPC UA server (`edgevision.line.triggers.OpcUaTriggers`).

    Attributes:
        protocol: ``opcua``.
        part_node: the NodeId the PLC writes each part's id to (a String or integer variable); every write of it
            is one trigger (the same id again counts when the server gives it a new source timestamp).
        serial_node: a NodeId read for the part's serial number at each trigger (the PLC writes it first).
        publishing_ms: how often the server sends the subscription's changes (the trigger's latency).
        max_age_s: a trigger older than this when an image arrives is discarded (counted ``stale``).
    """

    protocol: Literal["opcua"]
    part_node: str = Field(min_length=1, max_length=4096)
    serial_node: str | None = Field(None, min_length=1, max_length=4096)
    publishing_ms: float = Field(20.0, ge=5, le=10_000)
    max_age_s: float = Field(10.0, gt=0)


def _trigger_protocol(v: object) -> str:
    """The tag of a ``trigger`` section: its ``protocol`` (``mqtt`` when absent)."""
    if isinstance(v, dict):
        return str(v.get("protocol", "mqtt"))
    return str(getattr(v, "protocol", "mqtt"))


TriggerConfig = Annotated[
    Annotated[MqttTriggerConfig, Tag("mqtt")] | Annotated[OpcUaTriggerConfig, Tag("opcua")],
    Discriminator(_trigger_protocol, custom_error_type="trigger_protocol",
                  custom_error_message="protocol must be mqtt (the default) or opcua"),
]
"""A source's ``trigger`` section: `MqttTriggerConfig` (``protocol: mqtt``, the default) or `OpcUaTriggerConfig`."""


class FolderSource(_Closed):
    """A hot folder the camera software writes image files into.

    Attributes:
        path: the folder watched (not recursive).
        patterns: file name patterns taken (others, hidden files and ``*.tmp`` / ``*.part`` are ignored).
        after: what happens to a file once its part is recorded: ``move`` (into ``done_dir``), ``delete``, ``keep``.
        done_dir: where ``move`` puts files (default ``PATH/done``).
        stable_ms: a file counts as complete when its size and modification time have not changed for this long
            and it can be opened (files still being written or copied are not read half-written); 0: taken at
            first sight, only for camera software that writes to a temporary name and renames complete files in.
        poll_ms: how often the folder is listed.
        part_id_regex: a regular expression searched in the file name; its group ``part`` (else the first group)
            is the part id, its group ``serial`` the serial number. None: the file name (without extension).
        trigger: trigger messages (MQTT or OPC UA, `TriggerConfig`); a file whose part id does not come from ``part_id_regex`` (none given,
            or no match) takes the part id and serial of the oldest trigger waiting (else its file name's).
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
    trigger: TriggerConfig | None = None


class VideoSource(_Closed):
    """A camera stream or video file through OpenCV's FFmpeg backend.

    Attributes:
        url: ``rtsp://...``, ``http://...`` or a video file path.
        stride: inspect every n-th frame; reconnect_min_s / reconnect_max_s: the backoff between reconnects.
        mode: ``stride`` (every ``stride``-th frame; a trigger waiting gives it its part id) or ``trigger`` (one
            frame per trigger message, the first one read after it arrived; the others are read and discarded).
        trigger: trigger messages, MQTT or OPC UA (required with ``mode: trigger``).
    """

    type: Literal["video"] = "video"
    name: str | None = None
    url: str
    stride: int = Field(1, ge=1)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    loop: bool = False
    mode: Literal["stride", "trigger"] = "stride"
    trigger: TriggerConfig | None = None

    @model_validator(mode="after")
    def _trigger_mode_needs_trigger(self) -> VideoSource:
        if self.mode == "trigger" and self.trigger is None:
            raise ValueError("mode trigger needs a trigger section (an MQTT topic or an OPC UA part_node)")
        return self


class OpcUaSinkConfig(_Closed):
    """EdgeVision's own OPC UA server (asyncua) exposing the station's last decision.

    Attributes:
        endpoint: ``opc.tcp://HOST:PORT/PATH`` the server listens on.
        namespace: the namespace URI of EdgeVision's nodes.
        security: ``none`` or ``sign-encrypt`` (Basic256Sha256, SignAndEncrypt; needs certificate and private_key).
        certificate / private_key: the server's certificate (DER or PEM) and key (PEM).
        users_file: a file of ``user:password`` lines; None with ``anonymous: false`` refuses everyone.
        anonymous: allow anonymous sessions (only when set).
        trusted_clients: a folder of the client certificates (DER or PEM) allowed to open a session (with
            ``sign-encrypt``); None: any client certificate (who gets in is decided by the users alone).
    """

    endpoint: str = "opc.tcp://127.0.0.1:4840/edgevision/"
    namespace: str = "urn:edgevision:line"
    security: Literal["none", "sign-encrypt"] = "none"
    certificate: Path | None = None
    private_key: Path | None = None
    users_file: Path | None = None
    anonymous: bool = False
    trusted_clients: Path | None = None
    heartbeat_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _security_needs_keys(self) -> OpcUaSinkConfig:
        if self.security != "none" and (self.certificate is None or self.private_key is None):
            raise ValueError("security sign-encrypt needs certificate and private_key")
        if self.trusted_clients is not None and self.security == "none":
            raise ValueError("trusted_clients checks client certificates, which only security sign-encrypt "
                             "exchanges; set security: sign-encrypt")
        return self


OPCUA_CLIENT_FIELDS = ("decision", "part_id", "serial", "defect_count", "defect_classes", "inference_ms", "model_name",
                       "model_sha256", "sequence", "heartbeat", "healthy", "status")
"""The EdgeVision fields ``sinks.opcua_client.nodes`` can map to nodes of a PLC / SCADA server."""


class OpcUaClientSinkConfig(OpcUaEndpointConfig):
    """EdgeVision as an OPC UA client writing each part's fields to nodes of an existing PLC / SCADA server.

    Attributes:
        nodes: EdgeVision field (one of `OPCUA_CLIENT_FIELDS`; ``decision`` required) -> NodeId string, e.g.
            ``{decision: "ns=2;s=Line1.Decision"}`` (``ns=N;s=|i=|g=|b=...`` or ``nsu=URI;...``).
        endpoint, security, certificate, private_key, server_certificate, username, password_file,
        password_env, timeout_s: the session (`OpcUaEndpointConfig`).
    """

    nodes: dict[str, Annotated[str, Field(min_length=1, max_length=4096)]]

    @field_validator("nodes")
    @classmethod
    def _known_fields(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in v if k not in OPCUA_CLIENT_FIELDS]
        if unknown:  # a custom error: no "Value error, " prefix, so the list of fields fits the one-line message
            key = unknown[0] if len(unknown[0]) <= 16 else unknown[0][:15] + "~"
            raise PydanticCustomError("unknown_node_field", "unknown '{key}'; known: {known}",
                                      {"key": key, "known": ",".join(OPCUA_CLIENT_FIELDS)})
        if "decision" not in v:
            raise ValueError('map at least decision to a NodeId, e.g. decision: "ns=2;s=Line1.Decision"')
        return v


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
    opcua_client: OpcUaClientSinkConfig | None = None
    modbus: ModbusSinkConfig | None = None
    mqtt: MqttSinkConfig | None = None


class RecordConfig(_Closed):
    """The inspection record: one row per part, written before its decision goes anywhere.

    Attributes:
        db: an SQLite file (default ``line.db`` beside the YAML; WAL). PostgreSQL (several boxes, one database;
            parts and queued messages scoped per station): its ``postgresql://`` URL in ``db_env`` (a variable)
            or ``db_file`` (a file), so credentials stay out of the YAML.
        images_dir: where kept images go (default ``images/`` beside the SQLite database; required with
            PostgreSQL).
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


class DriftConfig(_Closed):
    """The drift watch (`edgevision.line.drift`).

    Attributes:
        enabled: watch or not; window: the last parts compared with the reference; warmup: parts taken as the
        reference when the model carries no training-data statistics; threshold: the shift of an image
        statistic's window mean, in reference standard deviations, that raises an alarm; rate_threshold: the
        change in the share of parts with a detection that raises one; min_parts: parts before judging.
    """

    enabled: bool = True
    window: Annotated[int, Field(ge=10, le=100_000)] = 200
    warmup: Annotated[int, Field(ge=10, le=100_000)] = 200
    threshold: Annotated[float, Field(gt=0)] = 1.0
    rate_threshold: Annotated[float, Field(gt=0, le=1)] = 0.15
    min_parts: Annotated[int, Field(ge=1)] = 50


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
        sinks: where decisions go; record: the inspection record; queue: back-pressure; http: metrics / health;
        drift: the drift watch.
        costs: ``{escape, false_reject}`` per part, for ``edgevision line report``.
    """

    model: Path
    station: str = Field("station-1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    threads: int | None = Field(None, ge=1)
    providers: str | None = None
    sources: list[Annotated[FolderSource | VideoSource, Field(discriminator="type")]] = Field(min_length=1)
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    record: RecordConfig = Field(default_factory=lambda: RecordConfig())
    queue: QueueConfig = Field(default_factory=lambda: QueueConfig())
    http: HttpConfig | None = None
    drift: DriftConfig = Field(default_factory=lambda: DriftConfig())
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
        if s.trigger is not None:
            for key in ("password_file", "tls_ca", "tls_cert", "tls_key", "certificate", "private_key",
                        "server_certificate"):
                if hasattr(s.trigger, key):
                    setattr(s.trigger, key, _resolve(base, getattr(s.trigger, key)))
    r = cfg.record
    if r.db is None and r.db_env is None and r.db_file is None:
        r.db = str(base / "line.db")
    elif r.db is not None and "://" not in r.db:
        r.db = str(_resolve(base, Path(r.db)))
    if r.db is not None and r.db.startswith(("postgres://", "postgresql://")) and "@" in r.db:
        raise ConfigError(f"{path}: record.db: a database URL with credentials must not sit in the YAML; put it in "
                          "a file (record.db_file) or an environment variable (record.db_env)")
    r.images_dir = _resolve(base, r.images_dir)
    for sink in (cfg.sinks.opcua, cfg.sinks.opcua_client, cfg.sinks.mqtt):
        if sink is None:
            continue
        for key in ("certificate", "private_key", "server_certificate", "users_file", "trusted_clients",
                    "password_file", "tls_ca", "tls_cert", "tls_key"):
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

