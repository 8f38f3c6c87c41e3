"""`MqttTriggers`: part ids (and serial numbers) from trigger messages on MQTT, for a source's images.

A PLC or the line's controller publishes one message per part as the part reaches the camera; the source's
next image takes that part's id. ``sources[].trigger`` (`TriggerConfig`) names the broker and the topic;
OPC UA triggers are not supported (only MQTT).

* A paho-mqtt client on a thread of its own subscribes to ``topic`` with QoS 1 (clean session: triggers sent
  while the line is disconnected are not kept for it; they would be stale anyway) and reconnects with
  exponential backoff (0.2 s doubling to 5 s) when the broker is down or the connection drops. Its state is
  ``up`` once the broker acknowledged the subscription, ``down`` otherwise, with the reason.
* A message is a JSON object carrying the part id under ``part_field`` and the serial under ``serial_field``
  (numbers are taken as text); any other payload (a JSON string, or text that is not JSON) is the part id
  itself, stripped. A message without a part id is ignored and counted ``invalid``.
* Triggers wait in a FIFO with their monotonic arrival time; `MqttTriggers.take` hands out the oldest one.
  A trigger older than ``max_age_s`` when an image arrives (or when the status is read) is discarded and
  counted ``stale``: its image was lost, or came before the trigger, and must not shift every later part id
  by one. At most 10,000 triggers wait; beyond that the oldest is discarded (counted stale too).

The trigger must arrive before its image is taken: for a hot folder, before the file has been stable for
``stable_ms``; for a video stream in ``mode: trigger``, the first frame read after the trigger is the part's.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from edgevision.core.errors import ConfigError
from edgevision.line.config import TriggerConfig, read_secret

__all__ = ["MqttTriggers", "parse_trigger"]

log = logging.getLogger(__name__)

_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0
_CONNECT_TIMEOUT_S = 5.0
_KEEPALIVE_S = 30
_MAX_PENDING = 10_000
_MAX_ID_CHARS = 256


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


class MqttTriggers:
    """Trigger messages of one source (see the module doc).

    Args:
        cfg: the source's ``trigger`` section; source_name: the source's name (logs, client id);
        station: the station's name (client id ``edgevision-STATION-trigger-SOURCE``).

    Raises:
        ConfigError: an unreadable password, a password without a username, a topic that cannot be subscribed.
    """

    def __init__(self, cfg: TriggerConfig, source_name: str, *, station: str = "line") -> None:
        self.cfg, self.source = cfg, source_name
        what = f"sources.{source_name}.trigger"
        if "#" in cfg.topic[:-1] or "\x00" in cfg.topic or any(
                ("+" in level or "#" in level) and len(level) > 1 for level in cfg.topic.split("/")):
            raise ConfigError(f"{what}.topic {cfg.topic!r}: not a valid topic filter (+ and # must be whole "
                              "levels, # only the last)")
        self._password = read_secret(cfg.password_file, cfg.password_env, f"{what}.password")
        if self._password is not None and not cfg.username:
            raise ConfigError(f"{what}: a password (password_file / password_env) needs a username")
        self._lock = threading.Lock()
        self._fifo: collections.deque[tuple[str, str | None, float]] = collections.deque()
        self._state, self._detail = "down", f"not connected yet to {cfg.mqtt_host}:{cfg.mqtt_port}"
        self._received = self._stale = self._invalid = self._taken = 0
        self._started = self._closed = False
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"edgevision-{station}-trigger-{source_name}", clean_session=True,
                                   protocol=mqtt.MQTTv311)
        self._client.connect_timeout = _CONNECT_TIMEOUT_S
        self._client.reconnect_delay_set(_BACKOFF_MIN_S, _BACKOFF_MAX_S)  # type: ignore[arg-type]  # floats work
        if cfg.username:
            self._client.username_pw_set(cfg.username, self._password)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # -- any thread -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the client's thread; a broker that is down is not an error (the client keeps trying)."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
        self._client.connect_async(self.cfg.mqtt_host, self.cfg.mqtt_port, keepalive=_KEEPALIVE_S)
        self._client.loop_start()

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
        """``state`` (up / down), ``detail``, ``topic``, and the counters ``received``, ``taken``, ``stale``,
        ``invalid``, ``pending`` (fresh triggers waiting)."""
        with self._lock:
            self._prune(time.monotonic())
            return {"state": self._state, "detail": self._detail, "topic": self.cfg.topic,
                    "received": self._received, "taken": self._taken, "stale": self._stale,
                    "invalid": self._invalid, "pending": len(self._fifo)}

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

    # -- paho callbacks (the client's thread) -----------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._set_state("down", f"the broker {self.cfg.mqtt_host}:{self.cfg.mqtt_port} refused the connection "
                                    f"({reason_code})")
            return
        client.subscribe(self.cfg.topic, qos=1)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._set_state("down", f"cannot connect to {self.cfg.mqtt_host}:{self.cfg.mqtt_port}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._set_state("down", f"connection to {self.cfg.mqtt_host}:{self.cfg.mqtt_port} lost ({reason_code})")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self._set_state("down", f"the broker refused the subscription to {self.cfg.topic!r}")
        else:
            self._set_state("up", f"subscribed to {self.cfg.topic!r} on {self.cfg.mqtt_host}:{self.cfg.mqtt_port}")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        got = parse_trigger(bytes(message.payload), self.cfg.part_field, self.cfg.serial_field)
        with self._lock:
            self._received += 1
            if got is None:
                self._invalid += 1
            else:
                self._prune(now)
                if len(self._fifo) >= _MAX_PENDING:
                    self._fifo.popleft()
                    self._stale += 1
                self._fifo.append((got[0], got[1], now))
        if got is None:
            log.warning("%s: trigger message on %s without a part id (%r) ignored", self.source, message.topic,
                        bytes(message.payload[:80]))
