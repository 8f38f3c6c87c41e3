"""`OpcUaClientSink`: EdgeVision as an OPC UA client, writing each part's fields to nodes of an existing PLC or
SCADA server (``sinks.opcua_client``; the other way round from `edgevision.line.sinks.opcua`, where EdgeVision
is the server).

``nodes`` maps EdgeVision's fields to the server's NodeIds (``decision`` is required, the rest optional)::

    decision        "OK" / "NG"          Boolean and number nodes: True / 1 for NG (reject), like the Modbus coil
    part_id         "" when none         number nodes: the id parsed as a number (0, and a warning, when it is not)
    serial          "" when none         as part_id
    defect_count    detections that passed their class threshold
    defect_classes  compact JSON {class: count}, keys sorted (string nodes only)
    inference_ms    decode + detect, milliseconds
    model_name      the model file that decided (string nodes only)
    model_sha256    its SHA-256 (string nodes only)
    sequence        the inspection record's id of the part: written LAST, in a request of its own
    heartbeat       +1 per heartbeat (about 1 s)
    healthy         False while a source is down
    status          a one-line detail of the health (string nodes only)

At each connection the sink reads every mapped node's DataType (a subtype is followed to its built-in type)
and writes each value converted to it: Boolean, SByte / Byte / Int16 / UInt16 / Int32 / UInt32 / Int64 /
UInt64 (rounded; clamped to the type's range, except ``sequence`` and ``heartbeat``, which wrap), Float,
Double, String, LocalizedText; Number / Integer / UInteger get Double / Int64 / UInt64, an enumeration Int32,
BaseDataType the value's own type. A node that does not exist, or whose type cannot hold its field, leaves
the sink ``down`` with a detail naming the node (and it retries: the PLC program may be fixed meanwhile).
Values are written without timestamps (some PLCs refuse client timestamps; the server stamps them).

A part's fields other than ``sequence`` go in one Write request, then ``sequence`` in a second one: a PLC
that triggers on ``sequence`` changing reads that part's values. ``heartbeat``, ``healthy`` and ``status``
go together on each heartbeat.

The sink is a state sink (``durable = False``) like Modbus: a 1-slot mailbox holds the latest part and a newer
one replaces an older one not yet written; such parts (and one still waiting at `OpcUaClientSink.close`) are
counted in ``status().failed``. One daemon thread runs its own asyncio loop with an asyncua `Client`;
`OpcUaClientSink.publish` and `OpcUaClientSink.heartbeat` only touch the mailbox and wake that loop, so they
never block and never raise. When the server cannot be reached, refuses the session, or a write fails, the
state becomes ``down`` with a one-line detail and the thread reconnects after 0.2 s, doubling up to 5 s
(`edgevision.line.opcua_link.OpcUaLink` holds the connection; the OPC UA trigger shares it).

Security: ``security: none`` (passwords travel in clear: only on a closed cell network) or ``sign-encrypt``
(Basic256Sha256, SignAndEncrypt) with the client's ``certificate`` (DER or PEM; its SubjectAlternativeName
URI is the client's application URI, which servers check) and ``private_key``; the server's certificate is
taken from its endpoint description, or must be ``server_certificate`` when that is set (pinned). A user session with ``username`` and
a password from ``password_file`` / ``password_env``; else an anonymous session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.ua_utils import get_base_data_type

from edgevision.core.errors import ConfigError
from edgevision.line.opcua_link import LinkDown, OpcUaLink, parse_nodeid, resolve_namespace
from edgevision.line.sinks.base import LatestSlot, PartDecision, SinkStatus
from edgevision.line.sinks.opcua import _part_values

if TYPE_CHECKING:
    from edgevision.line.config import OpcUaClientSinkConfig

__all__ = ["OpcUaClientSink"]

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 1.0
"""How often an idle connection's state is looked at (asyncua's own watchdog probes the server every second)."""

_SERVER_NAMES = {"Decision": "decision", "PartId": "part_id", "Serial": "serial", "DefectCount": "defect_count",
                 "DefectClasses": "defect_classes", "InferenceMs": "inference_ms", "ModelName": "model_name",
                 "ModelSha256": "model_sha256", "Sequence": "sequence"}
"""The server sink's variable names (`_part_values`) -> the fields of ``nodes``."""

_TEXT_ONLY = frozenset({"defect_classes", "model_name", "model_sha256", "status"})
_NOT_BOOLEAN = frozenset({"part_id", "serial"})
_COUNTERS = frozenset({"sequence", "heartbeat"})

_V = ua.VariantType
_INT_RANGES: dict[ua.VariantType, tuple[int, int]] = {
    _V.SByte: (-(2**7), 2**7 - 1), _V.Byte: (0, 2**8 - 1), _V.Int16: (-(2**15), 2**15 - 1), _V.UInt16: (0, 2**16 - 1),
    _V.Int32: (-(2**31), 2**31 - 1), _V.UInt32: (0, 2**32 - 1), _V.Int64: (-(2**63), 2**63 - 1),
    _V.UInt64: (0, 2**64 - 1)}
_ABSTRACT = {24: _V.Variant, 26: _V.Double, 27: _V.Int64, 28: _V.UInt64, 29: _V.Int32}
"""BaseDataType (the value's own type), Number, Integer, UInteger, Enumeration -> the variant type written."""


@dataclass(frozen=True)
class _Target:
    """A mapped node: its NodeId, as configured (for messages), and the variant type written to it."""

    nodeid: Any
    text: str
    vtype: Any


class OpcUaClientSink:
    """Writes each decision to nodes of an existing OPC UA server (see the module doc).

    Args:
        cfg: the ``sinks.opcua_client`` section (paths already resolved by `load_line_config`).
        station: the station's name (for the thread's name, logs and the default application URI).
        model_name / model_sha256: the model (kept for symmetry with the server sink; parts carry their own).
    """

    name = "opcua-client"
    durable = False

    def __init__(self, cfg: OpcUaClientSinkConfig, station: str, model_name: str, model_sha256: str) -> None:
        self.cfg = cfg
        self.station = station
        self.model_name = model_name
        self.model_sha256 = model_sha256
        self._lock = threading.Lock()
        self._status = SinkStatus(name=self.name)
        self._closed = False
        self._flush_s = cfg.timeout_s
        # Mailbox, guarded by _lock.
        self._slot = LatestSlot(self._status)
        self._beat = 0
        self._healthy = False
        self._detail = "starting"
        self._beat_dirty = False
        self._ids: dict[str, tuple[Any, str]] = {}
        self._link = OpcUaLink(cfg, "sinks.opcua_client", f"urn:edgevision:line:{station}:client", self._session,
                               self._down, f"edgevision-opcua-client-{station}")
        # Owned by the link's thread only.
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ the Sink protocol (any thread)

    def start(self) -> None:
        """Check the NodeIds, the password and the certificate, and start the thread (idempotent); the first
        connection attempt happens at once, in the thread.

        Raises:
            ConfigError: one line: a NodeId that does not parse, an unreadable password file, an unset password
                variable, a bad certificate or key; or the sink was closed.
        """
        with self._lock:
            if self._closed:
                raise ConfigError("sinks.opcua_client: this sink was closed; make a new OpcUaClientSink to start again")
        self._ids = {f: (parse_nodeid(text, f"sinks.opcua_client.nodes.{f}"), text.strip())
                     for f, text in self.cfg.nodes.items()}
        self._link.start()

    def publish(self, decision: PartDecision) -> None:
        """Put ``decision`` in the 1-slot mailbox (replacing one not yet written) and wake the thread."""
        with self._lock:
            if self._closed:
                self._status.failed += 1
                return
            self._slot.put(decision)
        self._link.notify()

    def heartbeat(self, healthy: bool, detail: str = "") -> None:
        """``heartbeat`` +1 (wraps at 2**32), ``healthy`` and ``status`` set; the thread writes the mapped ones."""
        with self._lock:
            self._beat = (self._beat + 1) % 2**32
            self._healthy = bool(healthy)
            self._detail = " ".join(str(detail).split())
            self._beat_dirty = True
        self._link.notify()

    def status(self) -> SinkStatus:
        """A copy of the current state (thread-safe)."""
        with self._lock:
            return replace(self._status)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread: a waiting part is written first when connected (within about half of ``timeout``),
        then the session is closed. Idempotent; a part still not written counts in ``status().failed``."""
        with self._lock:
            self._closed = True
            self._flush_s = max(0.1, min(self.cfg.timeout_s, timeout / 2))
        if not self._link.stop(timeout):
            return
        with self._lock:
            self._slot.drop()
            self._set_state("down", "closed")

    # ------------------------------------------------------------------ the link's thread

    def _set_state(self, state: str, detail: str) -> None:
        """Caller holds ``_lock``."""
        self._status.state = state
        self._status.detail = detail

    def _down(self, error: str) -> None:
        with self._lock:
            if self._status.state != "down" or self._status.detail != error:
                log.warning("sinks.opcua_client: down: %s", error)
            self._status.last_error = error
            self._set_state("down", error)

    async def _session(self, client: Any, stop: asyncio.Event, wake: asyncio.Event) -> AsyncIterator[None]:
        """Resolve the mapped nodes' types, then write parts and heartbeats (`OpcUaLink`'s session)."""
        targets = await OpcUaLink.until_stop(self._resolve(client, self._ids), stop)
        if targets is None:
            return
        with self._lock:
            self._set_state("up", f"connected to {self.cfg.endpoint}")
        log.info("sinks.opcua_client: connected to %s (%d node(s), security %s)", self.cfg.endpoint,
                 len(targets), self.cfg.security)
        async for _ in self._serve(client, targets, stop, wake):
            yield

    async def _resolve(self, client: Any, ids: dict[str, tuple[Any, str]]) -> dict[str, _Target]:
        """Each mapped node's variant type, from its DataType attribute.

        Raises:
            LinkDown: a node that does not exist or cannot be read, a namespace URI the server does not know, or a
                type that cannot hold its field (the node is named).
        """
        t = self.cfg.timeout_s
        namespaces: list[str] = []
        nodeids = {field: await asyncio.wait_for(resolve_namespace(client, nid, text, f"nodes.{field}", namespaces), t)
                   for field, (nid, text) in ids.items()}
        dvs = await asyncio.wait_for(client.uaclient.read_attributes(list(nodeids.values()), ua.AttributeIds.DataType),
                                     t)
        targets: dict[str, _Target] = {}
        for (field, nid), dv in zip(nodeids.items(), dvs, strict=True):
            text = ids[field][1]
            if not dv.StatusCode.is_good():
                raise LinkDown(f"nodes.{field} {text}: {dv.StatusCode.name} (no such variable on the server, or not "
                            "readable by this user)")
            dtype = dv.Value.Value
            vtype: Any
            if (dtype.NamespaceIndex == 0 and isinstance(dtype.Identifier, int) and 1 <= dtype.Identifier <= 21):
                vtype = ua.VariantType(dtype.Identifier)
            else:
                try:
                    base_node = await asyncio.wait_for(get_base_data_type(client.get_node(dtype)), t)
                    base = int(base_node.nodeid.Identifier)  # ns=0, below 30 (get_base_data_type's contract)
                except ua.UaError:
                    raise LinkDown(f"nodes.{field} {text}: its DataType {dtype.to_string()} is not a built-in type or a "
                                "subtype of one") from None
                vtype = _ABSTRACT.get(base)
                if vtype is None and 1 <= base <= 21:
                    vtype = ua.VariantType(base)
                if vtype is None:
                    raise LinkDown(f"nodes.{field} {text}: its DataType {dtype.to_string()} is not a number, String or Boolean type")
            problem = _unfit(field, vtype)
            if problem:
                raise LinkDown(f"nodes.{field} {text}: {problem}")
            targets[field] = _Target(nid, text, vtype)
        return targets

    async def _serve(self, client: Any, targets: dict[str, _Target], stop: asyncio.Event, wake: asyncio.Event) -> Any:
        """Write the latest part and heartbeats until stopped; yields after each successful write.

        Raises:
            LinkDown: the connection was lost or a write failed (a part is then put back in the mailbox).
        """
        while True:
            if client.state is not UaClientState.CONNECTED:
                raise LinkDown(f"the connection to {self.cfg.endpoint} was lost")
            wake.clear()
            stopping = stop.is_set()
            with self._lock:
                decision = self._slot.take()
                beat = None
                if decision is None and self._beat_dirty:  # a part first; the beat on the next turn
                    beat = (self._beat, self._healthy, self._detail)
                    self._beat_dirty = False
            if decision is not None:
                try:
                    if stopping:
                        await asyncio.wait_for(self._write_part(client, targets, decision), self._flush_s)
                    else:
                        await self._write_part(client, targets, decision)
                except BaseException:
                    self._put_back(decision)
                    raise
                with self._lock:
                    self._slot.delivered()
                yield
                continue
            if beat is not None and not stopping:
                items = [(f, v) for f, v in zip(("heartbeat", "healthy", "status"), beat, strict=True) if f in targets]
                if items:
                    await self._write(client, targets, items)
                    yield
                continue
            if stopping:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), _IDLE_WAIT_S)

    def _put_back(self, decision: PartDecision) -> None:
        """A part whose write failed goes back to the mailbox, unless a newer one arrived meanwhile (then it is
        counted as not delivered)."""
        with self._lock:
            self._slot.put_back(decision)

    async def _write_part(self, client: Any, targets: dict[str, _Target], d: PartDecision) -> None:
        values = [(_SERVER_NAMES[name], value) for name, value in _part_values(d)]
        await self._write(client, targets, [(f, v) for f, v in values if f in targets and f != "sequence"])
        if "sequence" in targets:
            await self._write(client, targets, [("sequence", int(d.seq))])

    async def _write(self, client: Any, targets: dict[str, _Target], items: list[tuple[str, Any]]) -> None:
        """One Write request for ``items`` (field, value); values converted to each node's type.

        Raises:
            LinkDown: no answer, a lost connection, or a node that refused its value (named).
        """
        if not items:
            return
        dvs = [ua.DataValue(Value=self._variant(f, v, targets[f].vtype)) for f, v in items]
        try:
            results = await asyncio.wait_for(client.uaclient.write_attributes(
                [targets[f].nodeid for f, _ in items], dvs, ua.AttributeIds.Value), self.cfg.timeout_s)
        except (OSError, asyncio.TimeoutError, RuntimeError) as e:
            raise LinkDown(f"write failed: {self._link.describe(e)}") from None
        for (f, _), result in zip(items, results, strict=True):
            if not result.is_good():
                raise LinkDown(f"nodes.{f} {targets[f].text}: the server refused the write ({result.name})")

    def _variant(self, field: str, value: Any, vtype: Any) -> Any:
        try:
            return _to_variant(field, value, vtype)
        except ValueError:
            if field not in self._warned:
                self._warned.add(field)
                log.warning("sinks.opcua_client: nodes.%s is a %s node and %r is not a number: 0 written (logged "
                            "once)", field, vtype.name, str(value)[:64])
            return ua.Variant(0.0 if vtype in (ua.VariantType.Float, ua.VariantType.Double) else 0, vtype)

# ---------------------------------------------------------------------- helpers


def _kind(vtype: Any) -> str:
    v = ua.VariantType
    if vtype is v.Boolean:
        return "bool"
    if vtype in _INT_RANGES:
        return "int"
    if vtype in (v.Float, v.Double):
        return "float"
    if vtype in (v.String, v.LocalizedText):
        return "text"
    if vtype is v.Variant:
        return "any"
    return "other"


def _unfit(field: str, vtype: Any) -> str | None:
    """Why a node of ``vtype`` cannot hold ``field`` (None: it can)."""
    kind = _kind(vtype)
    if kind == "other":
        return f"the node's type is {vtype.name}; {field} needs a number, String or Boolean variable"
    if field in _TEXT_ONLY and kind not in ("text", "any"):
        return f"the node's type is {vtype.name}; {field} (text) needs a String variable"
    if field in _NOT_BOOLEAN and kind == "bool":
        return f"the node's type is Boolean; {field} needs a String or number variable"
    return None


def _to_variant(field: str, value: Any, vtype: Any) -> Any:
    """``value`` of ``field`` as a `ua.Variant` of ``vtype`` (see the module doc).

    Raises:
        ValueError: a text (part id, serial) that is not a number, for a number node.
    """
    kind = _kind(vtype)
    if kind == "any":  # an abstract type: the value's own
        if field == "decision" or isinstance(value, str):
            return ua.Variant(str(value), ua.VariantType.String)
        if isinstance(value, bool):
            return ua.Variant(value, ua.VariantType.Boolean)
        if isinstance(value, int):
            return ua.Variant(value, ua.VariantType.Int64)
        return ua.Variant(float(value), ua.VariantType.Double)
    if kind == "text":
        text = str(value).lower() if isinstance(value, bool) else str(value)
        return ua.Variant(ua.LocalizedText(text) if vtype is ua.VariantType.LocalizedText else text, vtype)
    if field == "decision":
        number: float | int = 1 if value == "NG" else 0
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = float(value.strip())  # raises ValueError when not a number
    else:
        number = value
    if kind == "bool":
        return ua.Variant(bool(number), vtype)
    if kind == "float":
        return ua.Variant(float(number), vtype)
    lo, hi = _INT_RANGES[vtype]
    if isinstance(number, float):
        if math.isnan(number):
            number = 0
        elif math.isinf(number):
            number = hi if number > 0 else lo
        else:
            number = round(number)
    n = int(number)
    n = n % (hi + 1) if field in _COUNTERS else max(lo, min(hi, n))  # counters wrap (0..max): a PLC sees them change
    return ua.Variant(n, vtype)
