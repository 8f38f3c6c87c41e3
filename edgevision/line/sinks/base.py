"""What every decision sink receives (`PartDecision`) and offers (`Sink`), and how it reports (`SinkStatus`).

A sink never blocks inspection and never raises because its peer is down: `Sink.publish` hands the
decision over and returns at once; the sink's own thread talks to the peer, reconnects with backoff and
reports its state through `Sink.status` (shown in ``/metrics`` and on the bus). Durable sinks (MQTT) read
their messages from the record store's outbox, written in the same transaction as the part's record, so
a message survives a crash or a broker outage; state sinks (OPC UA, Modbus) show the latest part.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = ["LatestSlot", "PartDecision", "Sink", "SinkStatus", "one_line"]


def one_line(e: BaseException) -> str:
    """``Class: message`` on one line (whitespace folded), for a status detail; the class alone without a message."""
    text = " ".join(str(e).split())
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


@dataclass(frozen=True)
class PartDecision:
    """One inspected part, as every sink sees it (and as the record stores it).

    Attributes:
        seq: the record's id (increasing); time: ISO-8601 UTC of the decision; station; source: the source's name.
        part_id / serial: from the file name or a trigger, else None; image: the file (or frame) name;
        image_sha256: of the image bytes (frames: of the decoded pixels).
        decision: ``"NG"`` (reject: a detection passed its class threshold) or ``"OK"``.
        defects: detections that passed; classes: ``{class: count}`` of those; detections: ``[{"class", "score",
        "xyxy"}]``; inference_ms: decode + detect; model: the model file name; model_sha256; thresholds used;
        error: why the image could not be inspected (the part is then rejected, ``"NG"``, for a person to check).
    """

    seq: int
    time: str
    station: str
    source: str
    part_id: str | None
    serial: str | None
    image: str
    image_sha256: str
    decision: str
    defects: int
    classes: dict[str, int]
    detections: list[dict[str, Any]]
    inference_ms: float
    model: str
    model_sha256: str
    thresholds: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        """The MQTT payload: compact UTF-8 JSON of `to_dict`."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> PartDecision:
        return cls(**json.loads(data))


@dataclass
class SinkStatus:
    """A sink's state: ``up`` (its peer answers), ``down`` (retrying; ``detail`` says why), ``starting``.

    Attributes:
        sent: decisions delivered; failed: delivery attempts that failed; pending: waiting (durable sinks);
        last_error: the last failure in one line; since: monotonic time of the last state change.
    """

    name: str
    state: str = "starting"
    detail: str = ""
    sent: int = 0
    failed: int = 0
    pending: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatestSlot:
    """The one-part mailbox of a state sink (Modbus, OPC UA client): a PLC wants the current part, not a
    backlog, so a newer part replaces one not yet written, and the replaced one counts as failed in ``status``.
    Not locked itself: the sink calls it under its own lock."""

    def __init__(self, status: SinkStatus) -> None:
        self.status = status
        self.part: PartDecision | None = None

    def put(self, decision: PartDecision) -> None:
        if self.part is not None:
            self.status.failed += 1
        self.part = decision
        self.status.pending = 1

    def take(self) -> PartDecision | None:
        part, self.part = self.part, None
        return part

    def put_back(self, decision: PartDecision) -> None:
        """A part whose write failed returns, unless a newer one arrived meanwhile (then it counts as failed)."""
        if self.part is None:
            self.part = decision
        else:
            self.status.failed += 1
        self.status.pending = 1

    def delivered(self) -> None:
        self.status.sent += 1
        self.status.pending = 0 if self.part is None else 1

    def drop(self) -> None:
        """Closing: a part still waiting is not delivered."""
        if self.part is not None:
            self.status.failed += 1
            self.part = None
        self.status.pending = 0


class Sink(Protocol):
    """A decision sink (see the module doc). Implementations: `edgevision.line.sinks.opcua.OpcUaServerSink`,
    `edgevision.line.sinks.modbus.ModbusSink`, `edgevision.line.sinks.mqtt.MqttSink`."""

    name: str
    durable: bool

    def start(self) -> None:
        """Start the sink's thread (and, for a server sink, bind its port: a bind failure raises ConfigError)."""

    def publish(self, decision: PartDecision) -> None:
        """Hand one decision over; returns at once (durable sinks: it is already in the outbox)."""

    def heartbeat(self, healthy: bool, detail: str = "") -> None:
        """Called about once a second by the line: the process is alive; ``healthy`` False when a source is down."""

    def status(self) -> SinkStatus:
        """The current state (thread-safe)."""

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread, flushing what can be flushed within ``timeout`` seconds."""
