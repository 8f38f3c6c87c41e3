"""Fixtures for the line tests: a real MQTT broker (amqtt) on loopback, and paho subscribers that collect.

``mqtt_broker`` runs an `amqtt.broker.Broker` (MQTT 3.1.1, anonymous clients allowed, no ``$SYS`` topics) in a
thread of its own with its own event loop, on a free port of 127.0.0.1. ``stop()`` takes it down (every client
connection is dropped without a word, as when a broker dies; later connects are refused) and ``start()`` brings a
fresh one up on the SAME port (retained messages and sessions are gone, as after a broker restart without
persistence), so a test can stage an outage. ``start(hold=True)`` keeps every client but the collectors waiting
in its CONNECT until ``release()``: a test re-subscribes its collector first, so nothing published after the
restart slips past it (the broker keeps nothing for a subscriber that is not there). ``LocalBroker(tls=(cert,
key))`` adds a TLS listener on ``tls_port``; ``LocalBroker(users={name: password})`` refuses every client
that does not log in as one of them (amqtt's own ``FileAuthPlugin`` with an Argon2 password file).

amqtt 0.12 workarounds (both in `_TrackingBroker`): ``Broker.shutdown()`` can hang for good on Python 3.11 while
clients are connected (a reader task that never finishes its cancellation), so ``stop()`` aborts the client
transports first; and a fresh `Broker` is made for every ``start()``.

``mqtt_subscriber(port, topic)`` connects a paho client (client id ``collector-...``, QoS 1) that records every
message it receives (topic, payload, retain flag); it re-subscribes after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

COLLECTOR_PREFIX = "collector-"
_START_TIMEOUT_S = 10.0


class ConnectGate(BaseAuthPlugin):
    """An amqtt auth plugin: holds a CONNECT (collectors excepted) while ``gate`` (a `threading.Event`) is clear."""

    @dataclass
    class Config:
        gate: Any = None
        hold_s: float = 10.0

    async def authenticate(self, *, session: Session) -> bool | None:
        gate = self.config.gate
        if gate is None or (session.client_id or "").startswith(COLLECTOR_PREFIX):
            return True
        deadline = time.monotonic() + self.config.hold_s
        while not gate.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _TrackingBroker(Broker):
    """`Broker` that remembers its client connections, so `LocalBroker.stop` can drop them like a crash would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writers: set[asyncio.StreamWriter] = set()

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        self.writers.add(writer)
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            self.writers.discard(writer)

    async def drop_and_shutdown(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()
        await asyncio.wait_for(self.shutdown(), _START_TIMEOUT_S)


class LocalBroker:
    """A real amqtt broker on 127.0.0.1:`port`, in a background thread (see the module doc)."""

    def __init__(self, port: int | None = None, *, tls: tuple[Path, Path] | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.users = users
        self._password_file: Path | None = None
        self.tls = tls  # (certfile, keyfile): a second listener, TLS on `tls_port`
        self.tls_port = free_port() if tls else None
        self._gate = threading.Event()
        self._gate.set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"amqtt-{self.port}", daemon=True)
        self._thread.start()
        self._broker: _TrackingBroker | None = None

    @property
    def running(self) -> bool:
        return self._broker is not None

    def _config(self) -> dict[str, Any]:
        listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}}
        if self.tls is not None:
            listeners["tls"] = {"type": "tcp", "bind": f"127.0.0.1:{self.tls_port}", "ssl": True,
                                "certfile": str(self.tls[0]), "keyfile": str(self.tls[1])}
        plugins: dict[str, Any] = {  # no BrokerSysPlugin: no $SYS topics
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": self.users is None},
            f"{__name__}.ConnectGate": {"gate": self._gate},
        }
        if self.users is not None:
            if self._password_file is None:
                import tempfile

                from pwdlib import PasswordHash
                from pwdlib.hashers.argon2 import Argon2Hasher

                hasher = PasswordHash((Argon2Hasher(),))
                fd, name = tempfile.mkstemp(prefix="amqtt-users-", suffix=".txt")
                with open(fd, "w", encoding="utf-8") as f:
                    f.writelines(f"{u}:{hasher.hash(pw)}\n" for u, pw in self.users.items())
                self._password_file = Path(name)
            plugins["amqtt.plugins.authentication.FileAuthPlugin"] = {"password_file": str(self._password_file)}
        return {"listeners": listeners, "plugins": plugins}

    async def _start(self) -> _TrackingBroker:
        broker = _TrackingBroker(self._config(), loop=asyncio.get_running_loop())
        await broker.start()
        return broker

    def start(self, *, hold: bool = False) -> None:
        """Start a fresh broker on the same port; ``hold``: clients other than collectors wait until `release`."""
        if self._broker is not None:
            return
        if hold:
            self._gate.clear()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:  # the port may be a moment in TIME_WAIT/closing after stop(); the listener reuses the address
            try:
                self._broker = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(_START_TIMEOUT_S)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def release(self) -> None:
        """Let held clients in."""
        self._gate.set()

    def stop(self) -> None:
        """Shut the broker down: every connection is closed, the port stops listening, retained messages go."""
        broker, self._broker = self._broker, None
        if broker is not None:
            asyncio.run_coroutine_threadsafe(broker.drop_and_shutdown(), self._loop).result(_START_TIMEOUT_S)

    def close(self) -> None:
        self._gate.set()
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
        if self._password_file is not None:
            self._password_file.unlink(missing_ok=True)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class MqttCollector:
    """A paho subscriber (QoS 1) recording what it receives; thread-safe."""

    def __init__(self, port: int, topic: str = "#", *, timeout: float = 5.0,
                 login: tuple[str, str] | None = None) -> None:
        self.topic = topic
        self._cond = threading.Condition()
        self._messages: list[Received] = []
        self._subscriptions = 0
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{COLLECTOR_PREFIX}{uuid.uuid4().hex[:8]}",
                                   protocol=mqtt.MQTTv311, clean_session=True)
        self._client.reconnect_delay_set(1, 1)
        if login is not None:
            self._client.username_pw_set(*login)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port, keepalive=10)
        self._client.loop_start()
        if not self.wait_subscribed(1, timeout):
            self.close()
            raise TimeoutError(f"collector: no SUBACK for {topic!r} within {timeout} s")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with self._cond:
            self._subscriptions += 1
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(Received(message.topic, bytes(message.payload), bool(message.retain)))
            self._cond.notify_all()

    @property
    def messages(self) -> list[Received]:
        with self._cond:
            return list(self._messages)

    def wait_subscribed(self, count: int, timeout: float = 5.0) -> bool:
        """True once the collector has been subscribed ``count`` times (1 + its reconnects)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._subscriptions >= count, timeout)

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        """The messages once ``predicate(messages)`` holds; raises TimeoutError (with what arrived) after ``timeout``."""
        with self._cond:
            if self._cond.wait_for(lambda: predicate(self._messages), timeout):
                return list(self._messages)
            got = [(m.topic, m.payload[:60]) for m in self._messages]
        raise TimeoutError(f"collector: condition not met within {timeout} s; received {len(got)}: {got}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def mqtt_broker() -> Iterator[LocalBroker]:
    """A running amqtt broker on loopback (``.port``, ``.stop()``, ``.start(hold=...)``, ``.release()``)."""
    broker = LocalBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def mqtt_subscriber() -> Iterator[Callable[..., MqttCollector]]:
    """A factory ``mqtt_subscriber(port, topic="#")`` of connected, subscribed collectors, closed at teardown."""
    made: list[MqttCollector] = []

    def make(port: int, topic: str = "#", *, timeout: float = 5.0,
             login: tuple[str, str] | None = None) -> MqttCollector:
        collector = MqttCollector(port, topic, timeout=timeout, login=login)
        made.append(collector)
        return collector

    try:
        yield make
    finally:
        for collector in made:
            collector.close()


def make_opcua_cert(folder: Path, stem: str, uri: str) -> tuple[Path, Path]:
    """A self-signed OPC UA application certificate (SubjectAltName URI ``uri``) and its key, as PEM files."""
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, f"EdgeVision test {stem}", {}, [x509.UniformResourceIdentifier(uri), x509.DNSName(socket.gethostname())],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    key_path.chmod(0o600)
    return cert_path, key_path
