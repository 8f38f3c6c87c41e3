"""Triggers: part ids (and serial numbers) for a source's images, from the PLC or the line's controller.

A PLC or the line's controller announces each part as it reaches the camera; the source's next image takes
that part's id. ``sources[].trigger`` (`edgevision.line.config.TriggerConfig`) chooses how:

* `MqttTriggers` (``protocol: mqtt``, the default): one message per part on ``topic``. A paho-mqtt client on a
  thread of its own subscribes with QoS 1 (clean session: triggers sent while the line is disconnected are not
  kept for it; they would be stale anyway), over TLS when ``tls_ca`` is set, with ``username`` and a password
  from a file or the environment, and reconnects with exponential backoff (0.2 s doubling to 5 s). A message is
  a JSON object carrying the part id under ``part_field`` and the serial under ``serial_field`` (numbers are
  taken as text); any other payload (a JSON string, or text that is not JSON) is the part id itself, stripped.
* `OpcUaTriggers` (``protocol: opcua``): EdgeVision subscribes to ``part_node`` on the PLC's OPC UA server
  (`edgevision.line.opcua_link.OpcUaLink`: security, a pinned server certificate, a user login, reconnect
  with backoff). Every write of the node is one trigger: the monitored item reports value *and* source
  timestamp changes (``DataChangeFilter`` StatusValueTimestamp), so the same id written twice is two parts,
  and it queues up to 1,000 writes between two publishes, so parts written faster than ``publishing_ms`` are
  each kept. The value the node holds when the subscription starts is the previous part's, not a trigger.
  String, LocalizedText, ByteString (UTF-8) and integer values are the part id as text. With
  ``serial_node``, that node is read when the trigger arrives (the PLC writes the serial before the part id).
  Writes made while the line is disconnected are not seen (as for MQTT's clean session).

Either way a trigger without a usable part id (an empty or overlong one, a Boolean, a bad status) is ignored
and counted ``invalid``. Its state is ``up`` once the broker acknowledged the subscription or the server
created the monitored item, ``down`` otherwise, with the reason; `status` feeds the line's health and
``/metrics``.

Triggers wait in a FIFO with their monotonic arrival time; `take` hands out the oldest one. A trigger older
than ``max_age_s`` when an image arrives (or when the status is read) is discarded and counted ``stale``: its
image was lost, or came before the trigger, and must not shift every later part id by one. At most 10,000
triggers wait; beyond that the oldest is discarded (counted stale too).

The trigger must arrive before its image is taken: for a hot folder, before the file has been stable for
``stable_ms``; for a video stream in ``mode: trigger``, the first frame read after the trigger is the part's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from edgevision.core.errors import ConfigError
from edgevision.line.config import MqttTriggerConfig, OpcUaTriggerConfig, TriggerConfig, read_secret

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

__all__ = ["MqttTriggers", "OpcUaTriggers", "Triggers", "make_triggers", "parse_trigger"]

log = logging.getLogger(__name__)

_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0
_CONNECT_TIMEOUT_S = 5.0
_KEEPALIVE_S = 30
_MAX_PENDING = 10_000
_MAX_ID_CHARS = 256
_OPCUA_QUEUE = 1000
"""Writes of ``part_node`` the server keeps between two publishes (asyncua and most PLCs honour it)."""
_IDLE_WAIT_S = 1.0


def parse_trigger(payload: bytes, part_field: str = "part_id",
                  serial_field: str = "serial") -> tuple[str, str | None] | None:
    """``(part_id, serial)`` from a trigger message (see the module doc); None when it carries no part id."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    try:
        doc: Any = json.loads(text)
    except (ValueError, RecursionError):  # not JSON (or nested absurdly deep): text
        doc = None
    serial: str | None = None
    if isinstance(doc, dict):
        part, ser = doc.get(part_field), doc.get(serial_field)
        if not isinstance(part, (str, int, float)) or isinstance(part, bool):
            return None
        part = str(part).strip()
        if isinstance(ser, (str, int, float)) and not isinstance(ser, bool):
            serial = str(ser).strip()[:_MAX_ID_CHARS] or None
    elif isinstance(doc, str):
        part = doc.strip()
    else:
        part = text
    if not part or len(part) > _MAX_ID_CHARS:
        return None
    return part, serial


def id_text(value: Any) -> str | None:
    """An OPC UA value as a part id or serial (see the module doc); None when it is none."""
    if hasattr(value, "Text"):  # LocalizedText
        value = value.Text
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text if text and len(text) <= _MAX_ID_CHARS else None


class _TriggerQueue:
    """The FIFO, the counters and the state both kinds of trigger share (thread-safe).

    Args:
        cfg: the source's ``trigger`` section; source_name: the source's name (logs);
        watched: what is listened to, for the status (the topic or the node).
    """

    protocol = ""

    def __init__(self, cfg: TriggerConfig, source_name: str, watched: str, detail: str) -> None:
        self.cfg, self.source, self.watched = cfg, source_name, watched
        self._lock = threading.Lock()
        self._fifo: collections.deque[tuple[str, str | None, float]] = collections.deque()
        self._state, self._detail = "down", detail
        self._received = self._stale = self._invalid = self._taken = 0
        self._started = self._closed = False

    def take(self) -> tuple[str, str | None] | None:
        """The oldest waiting trigger's ``(part_id, serial)``, removed; None when none is waiting. Triggers older
        than ``max_age_s`` are discarded first (counted stale)."""
        with self._lock:
            self._prune(time.monotonic())
            if not self._fifo:
                return None
            part, serial, _ = self._fifo.popleft()
            self._taken += 1
            return part, serial

    def status(self) -> dict[str, Any]:
        """``protocol``, ``state`` (up / down), ``detail``, ``topic`` or ``node``, and the counters ``received``,
        ``taken``, ``stale``, ``invalid``, ``pending`` (fresh triggers waiting)."""
        with self._lock:
            self._prune(time.monotonic())
            return {"protocol": self.protocol, "state": self._state, "detail": self._detail,
                    ("topic" if self.protocol == "mqtt" else "node"): self.watched,
                    "received": self._received, "taken": self._taken, "stale": self._stale,
                    "invalid": self._invalid, "pending": len(self._fifo)}

    def _push(self, got: tuple[str, str | None] | None, arrived: float, what: str) -> None:
        """Count a trigger and queue it (``got`` None: invalid, ``what`` describes it in the warning)."""
        with self._lock:
            self._received += 1
            if got is None:
                self._invalid += 1
            else:
                self._prune(arrived)
                if len(self._fifo) >= _MAX_PENDING:
                    self._fifo.popleft()
                    self._stale += 1
                self._fifo.append((got[0], got[1], arrived))
        if got is None:
            log.warning("%s: trigger without a part id ignored (%s)", self.source, what)

    def _prune(self, now: float) -> None:
        """Discard triggers older than ``max_age_s`` (the lock is held)."""
        max_age = self.cfg.max_age_s
        while self._fifo and now - self._fifo[0][2] > max_age:
            part, _, arrived = self._fifo.popleft()
            self._stale += 1
            log.warning("%s: trigger for part %s discarded: no image within %g s (%.1f s old)", self.source, part,
                        max_age, now - arrived)

    def _set_state(self, state: str, detail: str) -> None:
        with self._lock:
            if self._closed:
                return
            before = self._state
            self._state, self._detail = state, detail
        if state == "up" and before != "up":
            log.info("%s: triggers up: %s", self.source, detail)
        elif state == "down" and before == "up":
            log.warning("%s: triggers down: %s (reconnecting with backoff)", self.source, detail)


class MqttTriggers(_TriggerQueue):
    """Trigger messages of one source on MQTT (see the module doc).

    Args:
        cfg: the source's ``trigger`` section; source_name: the source's name (logs, client id);
        station: the station's name (client id ``edgevision-STATION-trigger-SOURCE``).

    Raises:
        ConfigError: an unreadable password, a password without a username, a topic that cannot be subscribed,
            unreadable TLS files.
    """

    protocol = "mqtt"

    def __init__(self, cfg: MqttTriggerConfig, source_name: str, *, station: str = "line") -> None:
        import paho.mqtt.client as mqtt

        from edgevision.line.sinks.mqtt import tls_context

        super().__init__(cfg, source_name, cfg.topic, f"not connected yet to {cfg.mqtt_host}:{cfg.mqtt_port}")
        self.cfg: MqttTriggerConfig = cfg
        what = f"sources.{source_name}.trigger"
        if "#" in cfg.topic[:-1] or "\x00" in cfg.topic or any(
                ("+" in level or "#" in level) and len(level) > 1 for level in cfg.topic.split("/")):
            raise ConfigError(f"{what}.topic {cfg.topic!r}: not a valid topic filter (+ and # must be whole "
                              "levels, # only the last)")
        self._password = read_secret(cfg.password_file, cfg.password_env, f"{what}.password")
        if self._password is not None and not cfg.username:
            raise ConfigError(f"{what}: a password (password_file / password_env) needs a username")
        tls = tls_context(cfg, what)
        self._refused = False  # the last CONNACK refused the connection (paho's thread only)
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"edgevision-{station}-trigger-{source_name}", clean_session=True,
                                   protocol=mqtt.MQTTv311)
        self._client.enable_logger(logging.getLogger(f"{__name__}.paho"))  # its protocol log, at DEBUG
        self._client.connect_timeout = _CONNECT_TIMEOUT_S
        self._client.reconnect_delay_set(_BACKOFF_MIN_S, _BACKOFF_MAX_S)  # type: ignore[arg-type]  # floats work
        if cfg.username:
            self._client.username_pw_set(cfg.username, self._password)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Start the client's thread; a broker that is down is not an error (the client keeps trying)."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
        self._client.connect_async(self.cfg.mqtt_host, self.cfg.mqtt_port, keepalive=_KEEPALIVE_S)
        self._client.loop_start()

    def close(self) -> None:
        """Disconnect and stop the client's thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
            self._state, self._detail = "down", "closed"
        if started:
            with contextlib.suppress(Exception):
                self._client.disconnect()
            self._client.loop_stop()

    # -- paho callbacks (the client's thread) -----------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = True  # the disconnect that follows keeps this detail: it says why
            self._set_state("down", f"the broker {self.cfg.mqtt_host}:{self.cfg.mqtt_port} refused the connection "
                                    f"({reason_code})")
            return
        self._refused = False
        client.subscribe(self.cfg.topic, qos=1)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._refused = False
        self._set_state("down", f"cannot connect to {self.cfg.mqtt_host}:{self.cfg.mqtt_port}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if not self._refused:
            self._set_state("down", f"connection to {self.cfg.mqtt_host}:{self.cfg.mqtt_port} lost ({reason_code})")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self._set_state("down", f"the broker refused the subscription to {self.cfg.topic!r}")
        else:
            self._set_state("up", f"subscribed to {self.cfg.topic!r} on {self.cfg.mqtt_host}:{self.cfg.mqtt_port}")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        got = parse_trigger(bytes(message.payload), self.cfg.part_field, self.cfg.serial_field)
        self._push(got, now, f"message on {message.topic}: {bytes(message.payload[:80])!r}")


class OpcUaTriggers(_TriggerQueue):
    """Writes of a PLC's part-id node over OPC UA, for one source (see the module doc).

    Args:
        cfg: the source's ``trigger`` section (``protocol: opcua``; paths resolved by `load_line_config`);
        source_name: the source's name (logs, thread); station: the station's name (application URI).

    Raises:
        ConfigError: a NodeId that does not parse.
    """

    protocol = "opcua"

    def __init__(self, cfg: OpcUaTriggerConfig, source_name: str, *, station: str = "line") -> None:
        from edgevision.line.opcua_link import OpcUaLink, parse_nodeid

        super().__init__(cfg, source_name, cfg.part_node.strip(), f"not connected yet to {cfg.endpoint}")
        self.cfg: OpcUaTriggerConfig = cfg
        self.what = f"sources.{source_name}.trigger"
        self._ids = (parse_nodeid(cfg.part_node, f"{self.what}.part_node"),
                     parse_nodeid(cfg.serial_node, f"{self.what}.serial_node") if cfg.serial_node else None)
        self._link = OpcUaLink(cfg, self.what, f"urn:edgevision:line:{station}:trigger:{source_name}",
                               self._session, self._down, f"edgevision-opcua-trigger-{source_name}")

    def start(self) -> None:
        """Read the password and the certificates, and start the link's thread (idempotent); a server that is
        down is not an error (the link keeps trying).

        Raises:
            ConfigError: one line: an unreadable password, a bad certificate or key.
        """
        with self._lock:
            if self._started or self._closed:
                return
        self._link.start()
        with self._lock:
            self._started = True

    def close(self, timeout: float = 5.0) -> None:
        """Close the session and stop the link's thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._state, self._detail = "down", "closed"
        self._link.stop(timeout)

    def _down(self, detail: str) -> None:
        self._set_state("down", detail)

    # -- the link's thread --------------------------------------------------------------------------------------------

    async def _session(self, client: Any, stop: asyncio.Event, wake: asyncio.Event) -> AsyncIterator[None]:
        """Subscribe to ``part_node`` and queue each write as a trigger (`OpcUaLink`'s session)."""
        from asyncua import ua
        from asyncua.client.ua_client import UaClientState

        from edgevision.line.opcua_link import LinkDown, resolve_namespace

        cfg, t = self.cfg, self.cfg.timeout_s
        namespaces: list[str] = []
        part = await asyncio.wait_for(resolve_namespace(client, self._ids[0], cfg.part_node, f"{self.what}.part_node",
                                                        namespaces), t)
        serial = None
        if self._ids[1] is not None:
            assert cfg.serial_node is not None
            serial = await asyncio.wait_for(resolve_namespace(client, self._ids[1], cfg.serial_node,
                                                              f"{self.what}.serial_node", namespaces), t)
        nodes = [part] if serial is None else [part, serial]
        first = await asyncio.wait_for(client.uaclient.read_attributes(nodes, ua.AttributeIds.Value), t)
        for key, dv in zip(("part_node", "serial_node"), first, strict=False):
            if not dv.StatusCode.is_good():
                text = cfg.part_node if key == "part_node" else cfg.serial_node
                raise LinkDown(f"{self.what}.{key} {text}: {dv.StatusCode.name} (no such variable on the server, or "
                               "not readable by this user)")
        handler = _Notifications(wake, first[0])
        sub = await asyncio.wait_for(client.create_subscription(cfg.publishing_ms, handler), t)
        item = ua.MonitoredItemCreateRequest()
        item.ItemToMonitor = ua.ReadValueId(NodeId=part, AttributeId=ua.AttributeIds.Value)
        item.MonitoringMode = ua.MonitoringMode.Reporting
        item.RequestedParameters = ua.MonitoringParameters(
            ClientHandle=1, SamplingInterval=0, QueueSize=_OPCUA_QUEUE, DiscardOldest=True,
            Filter=ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp))
        result = (await asyncio.wait_for(sub.create_monitored_items([item]), t))[0]
        if isinstance(result, ua.StatusCode):
            raise LinkDown(f"{self.what}.part_node {cfg.part_node}: the server refused to monitor it ({result.name})")
        self._set_state("up", f"subscribed to {cfg.part_node} on {cfg.endpoint}")
        yield
        while True:
            if client.state is not UaClientState.CONNECTED:
                raise LinkDown(f"the connection to {cfg.endpoint} was lost")
            if handler.lost is not None:
                raise LinkDown(f"{cfg.endpoint}: the subscription ended ({handler.lost})")
            wake.clear()
            if stop.is_set():
                return
            while handler.pending:
                arrived, dv = handler.pending.popleft()
                got: tuple[str, str | None] | None = None
                text = id_text(dv.Value.Value) if dv.StatusCode.is_good() and dv.Value is not None else None
                if text is not None:
                    got = (text, await self._read_serial(client, serial) if serial is not None else None)
                self._push(got, arrived, f"{cfg.part_node} = {str(dv.Value.Value if dv.Value else None)[:80]!r}, "
                                         f"{dv.StatusCode.name}")
                yield
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), _IDLE_WAIT_S)

    async def _read_serial(self, client: Any, serial: Any) -> str | None:
        """``serial_node``'s value as text; None (and a warning) when it cannot be read or is no id."""
        from asyncua import ua

        from edgevision.line.opcua_link import LinkDown

        try:
            dv = (await asyncio.wait_for(client.uaclient.read_attributes([serial], ua.AttributeIds.Value),
                                         self.cfg.timeout_s))[0]
        except (OSError, asyncio.TimeoutError, RuntimeError) as e:
            raise LinkDown(f"{self.what}.serial_node: read failed: {self._link.describe(e)}") from None
        text = id_text(dv.Value.Value) if dv.StatusCode.is_good() and dv.Value is not None else None
        if text is None:
            log.warning("%s: serial_node %s holds no serial (%s): the part has none", self.source,
                        self.cfg.serial_node, dv.StatusCode.name)
        return text


class _Notifications:
    """asyncua's subscription handler (called on the link's loop): each data change of ``part_node`` is queued
    with its arrival time; the first one, when it is the value read before subscribing, is not a trigger."""

    def __init__(self, wake: asyncio.Event, baseline: Any) -> None:
        self.wake = wake
        self.baseline: Any = baseline
        self.pending: collections.deque[tuple[float, Any]] = collections.deque()
        self.lost: str | None = None

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        now = time.monotonic()
        dv = data.monitored_item.Value
        base, self.baseline = self.baseline, None
        if base is not None and dv.SourceTimestamp == base.SourceTimestamp and dv.Value == base.Value:
            return  # the node's value when the subscription started: the previous part's
        self.pending.append((now, dv))
        self.wake.set()

    def status_change_notification(self, status: Any) -> None:
        code = getattr(status, "Status", status)
        self.lost = getattr(code, "name", str(code))
        self.wake.set()


Triggers = MqttTriggers | OpcUaTriggers


def make_triggers(cfg: TriggerConfig, source_name: str, *, station: str = "line") -> Triggers:
    """The triggers for a source's ``trigger`` section, by its ``protocol``."""
    if isinstance(cfg, OpcUaTriggerConfig):
        return OpcUaTriggers(cfg, source_name, station=station)
    return MqttTriggers(cfg, source_name, station=station)
