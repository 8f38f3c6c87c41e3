"""`MqttSink`: one JSON message per part to an MQTT broker (QoS 1), through the record's durable outbox.

Each part's message is written to the ``outbox`` table in the same transaction as the part's record
(`edgevision.line.record.RecordStore.record` with ``outbox=["mqtt"]``), so it exists exactly when the part does.
`MqttSink.publish` only wakes the sink's thread; the thread owns an `Outbox` and a paho-mqtt client and
drains the outbox in id order, deleting a row only once the broker acknowledged it (PUBACK; QoS 0: once
written to the socket). While the broker is unreachable the rows wait (``status().pending``), the thread
retries with backoff (0.2 s doubling to 5 s), and inspection never waits for it.

Delivery is at least once, in order:

* Ordering: at most ``max_inflight`` messages (default 1) are unacknowledged at a time, each sent after the
  previous one. With 1 the order holds end to end even across topics (MQTT 3.1.1 orders per topic only, and
  some brokers, amqtt among them, handle each incoming PUBLISH in a task of its own); a larger window is faster
  on brokers that keep a client's order (mosquitto, EMQX), and rows are then deleted as their acks arrive.
* Reconnects: every connection is a new client with a clean session; after a reconnect the sink republishes
  everything still in the outbox from its first row. A message whose PUBACK was lost with the connection (or
  whose row deletion did not happen before a crash) is sent again: duplicates are possible, losses are not
  (QoS 1 semantics). The broker session is not where messages wait, the outbox is, so a persistent session
  would only add broker state (and its retries would duplicate ours).

Topics: ``cfg.topic.format(station=, part_id=, decision=, seq=)``; the part id (else ``seq-SEQ``), the decision
and the station each become exactly one topic level: ``/``, ``+``, ``#`` and control characters are replaced by
``_`` (a part id cannot inject wildcards or levels). The payload is the stored message (`PartDecision.to_json`).

State on the bus: ``cfg.status_topic`` holds a retained ``{"state": "online", ...}`` while connected (updated
when the line's health changes, see `MqttSink.heartbeat`), the Last Will sets it to ``{"state": "offline"}``
(retained) when the process dies or the link breaks, and `MqttSink.close` publishes ``offline`` itself before
a clean DISCONNECT.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import select
import socket
import sqlite3
import ssl
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import paho.mqtt.client as mqtt

from edgevision.core.errors import ConfigError
from edgevision.line.config import MqttSinkConfig, read_secret
from edgevision.line.record import Outbox
from edgevision.line.sinks.base import PartDecision, SinkStatus, one_line

__all__ = ["MqttSink", "tls_context", "topic_level"]

_log = logging.getLogger(__name__)
_paho_log = _log.getChild("paho")

_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0
_CONNACK_TIMEOUT_S = 10.0
_CONNECT_TIMEOUT_S = 5.0
_TICK_S = 1.0  # longest select() while connected: paho's keepalive bookkeeping runs at least this often
_RESYNC_S = 2.0  # status().pending is re-read from the outbox this often
_WAKE_RESYNC_S = 0.1  # ... and this long after a wake-up (publish() counts ahead; a re-read after it is exact)
_GOODBYE_S = 0.5  # of close()'s timeout, kept for the offline status and the DISCONNECT
_MAX_LEVEL_CHARS = 200
_UNSAFE = re.compile(r"[/+#\x00-\x1f\x7f]")


def topic_level(value: object) -> str:
    """``value`` as one safe MQTT topic level: ``/``, ``+``, ``#`` and control characters become ``_``, surrounding
    whitespace goes, at most 200 characters; ``""`` when nothing is left (None too)."""
    if value is None:
        return ""
    return _UNSAFE.sub("_", str(value)).strip()[:_MAX_LEVEL_CHARS]


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tls_context(cfg: Any, what: str) -> ssl.SSLContext | None:
    """The TLS context for a broker from ``cfg``'s ``tls_ca`` / ``tls_cert`` / ``tls_key`` (None: no TLS).

    The broker's certificate must chain to ``tls_ca`` and name the host (``mqtt_host``); ``tls_cert`` /
    ``tls_key`` are the client's certificate for brokers that ask for one. ``what`` names the section in errors.

    Raises:
        ConfigError: a client certificate without ``tls_ca``, a key without a certificate, an unreadable file.
    """
    if cfg.tls_ca is None:
        if cfg.tls_cert is not None or cfg.tls_key is not None:
            raise ConfigError(f"{what}: tls_cert / tls_key need tls_ca (TLS is on when tls_ca is set)")
        return None
    if cfg.tls_key is not None and cfg.tls_cert is None:
        raise ConfigError(f"{what}: tls_key needs tls_cert")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cfg.tls_ca))
        if cfg.tls_cert is not None:
            ctx.load_cert_chain(str(cfg.tls_cert), None if cfg.tls_key is None else str(cfg.tls_key))
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        raise ConfigError(f"{what}: cannot load the TLS files ({one_line(e)})") from None
    return ctx


class MqttSink:
    """Publishes each part's outbox message to MQTT from a thread of its own (see the module doc).

    Args:
        cfg: the ``sinks.mqtt`` section.
        station: the station name (topics, default client id ``edgevision-STATION``).
        outbox: this sink's queue (``Outbox(db, "mqtt")``); the sink owns it from here and closes it (when the
            constructor raises, it stays the caller's).
        max_inflight: unacknowledged messages at a time (1 keeps the order on any broker).

    Raises:
        ConfigError: a topic template that does not format to a valid topic, an unreadable password or TLS file,
            a password without a username.
    """

    name = "mqtt"
    durable = True

    def __init__(self, cfg: MqttSinkConfig, station: str, outbox: Outbox, *, max_inflight: int = 1) -> None:
        if max_inflight < 1:
            raise ConfigError(f"sinks.mqtt: max_inflight must be at least 1, not {max_inflight}")
        self.cfg, self.station = cfg, station
        self._outbox = outbox
        self._window = max_inflight
        self._client_id = cfg.client_id or f"edgevision-{station}"
        self._station_level = topic_level(station) or "station"
        self._password = read_secret(cfg.password_file, cfg.password_env, "sinks.mqtt.password")
        if self._password is not None and not cfg.username:
            raise ConfigError("sinks.mqtt: a password (password_file / password_env) needs a username")
        self._tls = tls_context(cfg, "sinks.mqtt")
        self._status_topic = self._checked_topic("status_topic", cfg.status_topic, station=self._station_level)
        self._checked_topic("topic", cfg.topic, station=self._station_level, part_id="part", decision="OK", seq=1)
        self._will = json.dumps({"state": "offline", "station": self.station, "client_id": self._client_id},
                                separators=(",", ":")).encode()

        self._lock = threading.Lock()  # guards _status, _health, _closed
        self._status = SinkStatus(name=self.name, pending=outbox.count())
        self._health: tuple[bool, str] = (True, "")
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()
        self._flush_until = 0.0
        self._final_until = 0.0
        self._thread: threading.Thread | None = None

        # owned by the sink's thread
        self._client: mqtt.Client | None = None
        self._connected = False
        self._connack_by = 0.0
        self._refused: str | None = None
        self._lost: str | None = None
        self._inflight: dict[int, int] = {}  # mid -> outbox id
        self._acked: list[int] = []  # mids from on_publish, handled after each network step
        self._last_sent = 0  # outbox id of the last message sent on this connection
        self._dirty = True  # the outbox may hold rows not sent yet
        self._just_connected = False
        self._status_mids: set[int] = set()
        self._published_health: tuple[bool, str] | None = None
        self._backoff = _BACKOFF_MIN_S
        self._next_try = 0.0
        self._next_resync = 0.0

    def _checked_topic(self, what: str, template: str, **fields: object) -> str:
        try:
            topic = template.format(**fields)
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            raise ConfigError(f"sinks.mqtt.{what} {template!r}: cannot format it ({one_line(e)}; placeholders: "
                              f"{', '.join('{' + k + '}' for k in fields)})") from None
        if not topic or "+" in topic or "#" in topic or "\x00" in topic or len(topic.encode()) > 65535:
            raise ConfigError(f"sinks.mqtt.{what} {template!r}: not a valid topic to publish to "
                              "(empty, too long, or with a wildcard + or #)")
        return topic

    # -- the Sink protocol (any thread) ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the sink's thread (connecting is its business: a broker that is down is not an error)."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="edgevision-sink-mqtt", daemon=True)
        self._thread.start()

    def publish(self, decision: PartDecision) -> None:
        """Wake the thread: the decision's message is already in the outbox. Never blocks, never raises."""
        with self._lock:
            if self._closed:
                _log.debug("mqtt sink closed: part %s stays in the outbox for the next start", decision.seq)
                return
            self._status.pending += 1
        self._wake()

    def heartbeat(self, healthy: bool, detail: str = "") -> None:
        """Record the line's health; the retained status message is republished when it changes."""
        health = (bool(healthy), " ".join(detail.split()))
        with self._lock:
            changed, self._health = health != self._health, health
        if changed:
            self._wake()

    def status(self) -> SinkStatus:
        with self._lock:
            return replace(self._status)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, publish the offline status, disconnect cleanly,
        stop the thread and close the outbox. Undelivered messages stay in the outbox. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        timeout = max(0.0, timeout)
        now = time.monotonic()
        self._final_until = now + timeout
        self._flush_until = now + max(0.0, timeout - min(_GOODBYE_S, timeout / 2))
        self._stopping.set()
        self._wake()
        if thread is None:
            self._release()
            return
        thread.join(timeout + 1.0)
        if thread.is_alive():
            _log.warning("mqtt sink: the thread did not stop within %.1f s (a connect attempt still blocks); "
                         "it ends on its own", timeout + 1.0)

    # -- helpers for any thread ---------------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: a wake-up is already pending; closed: thread gone
            self._wake_w.send(b"\0")

    def _set_state(self, state: str, detail: str, *, failed: bool = False) -> None:
        with self._lock:
            before = (self._status.state, self._status.detail)
            self._status.state, self._status.detail = state, detail
            if failed:
                self._status.failed += 1
                self._status.last_error = detail
        if before != (state, detail):
            if state == "up":
                _log.info("mqtt sink up: %s", detail)
            elif before[0] != "down":
                _log.warning("mqtt sink down: %s (retrying with backoff; messages wait in the outbox)", detail)
            else:
                _log.debug("mqtt sink still down: %s", detail)

    # -- the thread -------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._step():
                pass
        except Exception as e:  # a bug: say so where the status is read, keep the rows for the next start
            _log.exception("mqtt sink: the thread failed")
            self._set_state("down", f"sink thread failed ({one_line(e)}); restart the line", failed=True)
        finally:
            self._teardown(graceful=False)
            self._release()

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._outbox.close()
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()

    def _step(self) -> bool:
        """One turn of the thread's loop; True when it is time to stop."""
        now = time.monotonic()
        stopping = self._stopping.is_set()
        try:
            if now >= self._next_resync:
                self._resync_pending()
                self._next_resync = now + _RESYNC_S
            if self._client is None:
                if stopping and (now < self._next_try or now >= self._flush_until or not self._outbox.pending(1)):
                    return True  # closing: one connect attempt for rows still waiting, unless in a backoff
                if now < self._next_try:
                    self._sleep(min(self._next_try, self._next_resync) - now)
                    return False
                self._connect()
                return False
            if stopping and (now >= self._flush_until or (self._connected and self._caught_up())):
                self._goodbye()
                return True
            if not self._connected and now >= self._connack_by:
                self._fail(f"no CONNACK from the broker within {_CONNACK_TIMEOUT_S:.0f} s")
                return False
            if self._connected and self._dirty and len(self._inflight) < self._window:
                limit = 0.0  # more rows to send: do not wait on the socket
            elif not self._connected:
                limit = min(_TICK_S, self._connack_by - now)
            else:
                limit = _TICK_S
            if stopping:
                limit = min(limit, self._flush_until - now)
            self._network(max(0.0, min(limit, self._next_resync - now)))
            self._after_network()
        except sqlite3.Error as e:
            self._fail(f"record database: {one_line(e)}")
        return False

    def _caught_up(self) -> bool:
        """Every row of the outbox was sent on this connection and acknowledged."""
        return not self._dirty and not self._inflight

    def _resync_pending(self) -> None:
        count = self._outbox.count()
        with self._lock:
            self._status.pending = count

    def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(OSError, ValueError):
            readable, _, _ = select.select([self._wake_r], [], [], max(0.0, seconds))
            if readable:
                self._drain_wake()

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        self._dirty = True
        self._next_resync = min(self._next_resync, time.monotonic() + _WAKE_RESYNC_S)

    def _connect(self) -> None:
        cfg = self.cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self._client_id, clean_session=True,
                             protocol=mqtt.MQTTv311)
        client.on_log = self._on_log
        client.max_inflight_messages_set(self._window + 2)  # + the status messages: paho never holds ours back
        client.connect_timeout = _CONNECT_TIMEOUT_S
        if self._stopping.is_set():
            client.connect_timeout = max(0.1, min(_CONNECT_TIMEOUT_S, self._flush_until - time.monotonic()))
        if cfg.username:
            client.username_pw_set(cfg.username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.will_set(self._status_topic, self._will, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._refused = self._lost = None
        self._client, self._connected = client, False
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except (OSError, ValueError) as e:
            self._fail(f"cannot connect to {cfg.host}:{cfg.port} ({one_line(e)})")
            return
        self._connack_by = time.monotonic() + _CONNACK_TIMEOUT_S

    def _fail(self, detail: str) -> None:
        """The connection attempt or the connection failed: drop the client, retry after the backoff."""
        self._teardown(graceful=False)
        self._set_state("down", detail, failed=True)
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)

    def _teardown(self, *, graceful: bool) -> None:
        client, self._client = self._client, None
        self._connected = self._just_connected = False
        self._inflight.clear()
        self._acked.clear()
        self._status_mids.clear()
        self._last_sent = 0
        self._dirty = True
        self._published_health = None
        if client is None:
            return
        client.on_connect = client.on_disconnect = client.on_publish = None
        with contextlib.suppress(Exception):
            if graceful:
                client.disconnect()  # without an event loop thread, paho writes the DISCONNECT and closes now
            sock = client.socket()
            if sock is not None:
                sock.close()

    # paho callbacks: they run inside loop_read / loop_write / loop_misc / publish, in this thread.

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if client is not self._client:
            return
        if reason_code.is_failure:
            self._refused = str(reason_code)
        else:
            self._connected = self._just_connected = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if client is self._client and self._lost is None:
            from_broker = getattr(flags, "is_disconnect_packet_from_server", False)
            self._lost = f"the broker sent DISCONNECT ({reason_code})" if from_broker else "connection closed"

    @staticmethod
    def _on_log(client: mqtt.Client, userdata: Any, level: int, message: str) -> None:
        _paho_log.debug("%s", message)  # paho's own errors repeat what the sink reports as its state

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if client is self._client:
            self._acked.append(mid)

    def _network(self, timeout: float) -> None:
        client = self._client
        assert client is not None
        sock = client.socket()
        if sock is None:
            self._lost = self._lost or "connection closed"
            return
        pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted wait in the SSL object
        buffered = callable(pending) and pending() > 0
        try:
            readable, writable, _ = select.select([sock, self._wake_r], [sock] if client.want_write() else [], [],
                                                  0.0 if buffered else timeout)
        except (OSError, ValueError) as e:
            self._lost = self._lost or f"socket: {one_line(e)}"
            return
        if self._wake_r in readable:
            self._drain_wake()
        rc = mqtt.MQTT_ERR_SUCCESS
        if sock in readable or buffered:
            rc = client.loop_read()
        if rc == mqtt.MQTT_ERR_SUCCESS and sock in writable and client.socket() is not None:
            rc = client.loop_write()
        if rc == mqtt.MQTT_ERR_SUCCESS and client.socket() is not None:
            rc = client.loop_misc()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._lost = mqtt.error_string(rc).rstrip(".")  # says more than a 3.1.1 on_disconnect reason code
        elif client.socket() is None:
            self._lost = self._lost or "connection closed"

    def _after_network(self) -> None:
        cfg = self.cfg
        if self._refused is not None:
            self._fail(f"{cfg.host}:{cfg.port} refused the connection ({self._refused})")
            return
        if self._lost is not None:
            self._fail(f"connection to {cfg.host}:{cfg.port} lost ({self._lost})")
            return
        if not self._connected:
            return
        if self._just_connected:
            self._just_connected = False
            self._on_up()
        self._handle_acks()
        self._publish_health()
        self._fill()

    def _on_up(self) -> None:
        self._backoff = _BACKOFF_MIN_S
        self._inflight.clear()
        self._last_sent = 0  # a new session: everything still in the outbox goes again, from its first row
        self._dirty = True
        self._set_state("up", f"connected to {self.cfg.host}:{self.cfg.port} as {self._client_id}")
        self._resync_pending()

    def _publish_health(self) -> None:
        with self._lock:
            health = self._health
        if health == self._published_health:
            return
        payload = {"state": "online", "station": self.station, "client_id": self._client_id, "time": _now_iso(),
                   "healthy": health[0], "detail": health[1]}
        if self._status_publish(payload) is not None:
            self._published_health = health

    def _status_publish(self, payload: dict[str, Any]) -> int | None:
        """Publish the retained status message; its mid (None when it could not be queued)."""
        client = self._client
        if client is None:
            return None
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        info = client.publish(self._status_topic, data, qos=1, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._lost = self._lost or mqtt.error_string(info.rc)
            return None
        self._status_mids.add(info.mid)
        return info.mid

    def _handle_acks(self) -> None:
        if not self._acked:
            return
        mids, self._acked = self._acked, []
        ids = [self._inflight.pop(mid) for mid in mids if mid in self._inflight]
        self._status_mids.difference_update(mids)
        if ids:
            self._outbox.done(ids)
            with self._lock:
                self._status.sent += len(ids)
                self._status.pending = max(0, self._status.pending - len(ids))
            self._dirty = True

    def _fill(self) -> None:
        """Send the next rows of the outbox, up to the in-flight window."""
        room = self._window - len(self._inflight)
        if room <= 0 or not self._dirty:
            return
        rows = [(i, p) for i, p in self._outbox.pending(len(self._inflight) + room) if i > self._last_sent]
        self._dirty = len(rows) >= room  # fewer than asked: caught up until the next wake-up or ack
        for row_id, payload in rows[:room]:
            if not self._send(row_id, payload):
                return

    def _topic(self, row_id: int, payload: bytes) -> str:
        try:
            d = json.loads(payload)
        except ValueError:
            d = None
        if not isinstance(d, dict):
            d = {}
        seq = d.get("seq") if isinstance(d.get("seq"), int) else row_id
        return self.cfg.topic.format(station=self._station_level, part_id=topic_level(d.get("part_id")) or f"seq-{seq}",
                                     decision=topic_level(d.get("decision")) or "unknown", seq=seq)

    def _send(self, row_id: int, payload: bytes) -> bool:
        client = self._client
        assert client is not None
        topic = self._topic(row_id, payload)
        try:
            info = client.publish(topic, payload, qos=self.cfg.qos)
        except ValueError as e:  # paho refuses it (payload over 256 MB...): it would block the queue forever
            _log.error("mqtt sink: outbox message %d cannot be published (%s); dropped from the outbox (the part "
                       "stays in the record)", row_id, one_line(e))
            self._outbox.done([row_id])
            with self._lock:
                self._status.failed += 1
                self._status.last_error = f"message {row_id} dropped: {one_line(e)}"
                self._status.pending = max(0, self._status.pending - 1)
            self._last_sent = row_id
            return True
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._lost = self._lost or mqtt.error_string(info.rc)
            return False
        self._inflight[info.mid] = row_id
        self._last_sent = row_id
        if self._acked:  # QoS 0: paho may report the write before publish() returns
            self._handle_acks()
        return True

    def _goodbye(self) -> None:
        """Publish the offline status, wait for its ack until close()'s deadline, DISCONNECT cleanly."""
        if self._connected and self._client is not None:
            self._handle_acks()
            mid = self._status_publish({"state": "offline", "station": self.station, "client_id": self._client_id,
                                        "time": _now_iso()})
            while mid is not None and mid in self._status_mids and self._lost is None:
                left = self._final_until - time.monotonic()
                if left <= 0:
                    break
                self._network(min(left, _TICK_S))
                self._handle_acks()
        self._teardown(graceful=True)
        with self._lock:
            if self._status.state == "up":
                self._status.state, self._status.detail = "down", "closed"
        self._resync_pending()
