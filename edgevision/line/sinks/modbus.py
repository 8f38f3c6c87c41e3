"""`ModbusSink`: the station's latest decision written to a PLC over Modbus TCP (EdgeVision is the client).

Register map (``cfg.registers`` = R, ``cfg.coil`` = C, device id ``cfg.unit``):

==========  ===============================================================================
address     value
==========  ===============================================================================
coil C      1 (True) for ``NG`` (reject), 0 (False) for ``OK``
HR R        defect count, clamped to 0..65535
HR R+1      the record's sequence number (`PartDecision.seq`), low 16 bits (wraps at 65536)
HR R+2      inference time in tenths of a millisecond, rounded and clamped to 0..65535
HR R+3      heartbeat counter: +1 per `ModbusSink.heartbeat` call, wraps at 65536
==========  ===============================================================================

A decision is written as one *Write Multiple Registers* (FC 16, R..R+3) followed by one *Write Single
Coil* (FC 5): registers first, coil last, so a PLC that triggers on the coil (or on R+1 changing, then
waits for the coil) never reads the registers of the previous part. A PLC that must not miss a part
compares R+1 with the last sequence number it saw.

The sink is a state sink (``durable = False``): the PLC wants the current part, so a 1-slot mailbox
holds the latest decision and a newer one replaces an older one not yet written; such replaced parts (and
one still waiting at `ModbusSink.close`) are counted in ``status().failed``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
from collections.abc import Callable
from typing import Any

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from edgevision.line.config import ModbusSinkConfig
from edgevision.line.sinks.base import LatestSlot, PartDecision, SinkStatus, one_line

__all__ = ["ModbusSink"]

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
_IDLE_WAIT_S = 1.0


def _u16(value: float) -> int:
    """``value`` rounded and clamped to an unsigned 16-bit register (NaN gives 0)."""
    if math.isnan(value):
        return 0
    if value >= 65535:
        return 65535
    return max(0, round(value))


class _WriteError(Exception):
    """A request failed (no connection, no answer, or an exception response); the message is one line."""


class _TcpClient(ModbusTcpClient):
    """`ModbusTcpClient` whose `connect` keeps the reason of the last failure (pymodbus only logs it)."""

    last_error: str = ""

    def connect(self) -> bool:
        if self.socket is not None:
            return True
        try:
            self.socket = socket.create_connection(
                (self.comm_params.host, self.comm_params.port),
                timeout=self.comm_params.timeout_connect,
                source_address=self.comm_params.source_address,
            )
        except OSError as e:
            self.last_error = one_line(e)
            self.socket = None
            return False
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True


class ModbusSink:
    """Writes each part's decision to a PLC (see the module doc for the register map).

    One daemon thread owns a synchronous `pymodbus.client.ModbusTcpClient`. The synchronous client was
    chosen over the asyncio one because the sink needs exactly one request at a time, each bounded by
    ``cfg.timeout_s``, and its own visible connection state and backoff: the async client would need an
    event loop of its own in this thread plus cross-thread hand-off, and its built-in automatic reconnect
    would hide the up / down transitions that `status` reports. `publish` and `heartbeat` only touch a
    lock-protected mailbox and wake the thread, so they never block on the network and never raise.

    When the PLC cannot be reached or a request fails (exception, timeout, or a Modbus exception
    response), the connection is dropped, the state becomes ``down`` with a one-line detail, and the
    thread reconnects after 0.2 s, doubling up to 5 s; each (re)connection is confirmed by writing the
    heartbeat register before the state becomes ``up``, and the latest decision is then written.

    Args:
        cfg: the PLC's address, device id (``unit``), coil and first holding register.
        station: the station's name (for logs).
    """

    name = "modbus"
    durable = False

    def __init__(self, cfg: ModbusSinkConfig, station: str) -> None:
        self._cfg = cfg
        self._station = station
        self._peer = f"{cfg.host}:{cfg.port} unit {cfg.unit}"
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Mailbox and counters, guarded by _lock.
        self._heartbeat = 0
        self._heartbeat_dirty = False
        self._status = SinkStatus(name=self.name)
        self._slot = LatestSlot(self._status)
        # Owned by the thread only.
        self._client: _TcpClient | None = None

    # ------------------------------------------------------------------ the Sink protocol

    def start(self) -> None:
        """Start the writer thread (idempotent); the first connection attempt happens at once.

        Raises:
            RuntimeError: the sink was closed.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("modbus sink: start() after close()")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=f"edgevision-modbus-{self._station}", daemon=True)
        self._thread.start()

    def publish(self, decision: PartDecision) -> None:
        """Put ``decision`` in the 1-slot mailbox (replacing one not yet written) and wake the thread."""
        with self._lock:
            if self._closed:
                self._status.failed += 1
                return
            self._slot.put(decision)
        self._wake.set()

    def heartbeat(self, healthy: bool, detail: str = "") -> None:
        """Increment the heartbeat counter (register R+3); the thread writes it when connected.

        ``healthy`` is not encoded: the register map has no health word, and a PLC watching R+3 change
        learns that the process is alive (source health is shown by the other sinks and ``/healthz``).
        """
        with self._lock:
            self._heartbeat = (self._heartbeat + 1) & 0xFFFF
            self._heartbeat_dirty = True
        self._wake.set()

    def status(self) -> SinkStatus:
        """A copy of the current state (thread-safe)."""
        with self._lock:
            s = self._status
            return SinkStatus(name=s.name, state=s.state, detail=s.detail, sent=s.sent, failed=s.failed,
                              pending=s.pending, last_error=s.last_error)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (a pending decision is written first when connected) and close the client.

        Idempotent. A decision still not written when the thread ends counts in ``status().failed``.
        """
        with self._lock:
            already = self._closed
            self._closed = True
            thread = self._thread
        if not already:
            self._stop.set()
            self._wake.set()
        if thread is not None and thread.is_alive():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("modbus sink: the writer thread did not stop within %.1f s (a request to %s is "
                            "still waiting)", timeout, self._peer)
                return
        with self._lock:
            self._slot.drop()
            self._set_state("down", "closed")

    # ------------------------------------------------------------------ the writer thread

    def _set_state(self, state: str, detail: str) -> None:
        """Caller holds ``_lock``."""
        self._status.state = state
        self._status.detail = detail

    def _put_back(self, decision: PartDecision) -> None:
        """A decision whose write failed goes back to the mailbox, unless a newer one arrived meanwhile (then
        it is counted as not delivered). One left there when the thread ends is counted by `close`."""
        with self._lock:
            self._slot.put_back(decision)

    def _down(self, error: str) -> None:
        self._disconnect()
        with self._lock:
            if self._status.state != "down" or self._status.detail != error:
                log.warning("modbus sink: PLC %s is down: %s", self._peer, error)
            self._status.last_error = error
            self._set_state("down", error)

    def _disconnect(self) -> None:
        if self._client is not None:
            with contextlib.suppress(OSError):
                self._client.close()
            self._client = None

    def _request(self, what: str, call: Callable[[], Any]) -> None:
        """Run one client request; raise `_WriteError` (one line) on an exception or an error response."""
        try:
            response = call()
        except (ModbusException, OSError, ValueError) as e:
            raise _WriteError(f"{what} to {self._peer} failed: {one_line(e)}") from None
        if response is None or response.isError():
            code = getattr(response, "exception_code", None)
            raise _WriteError(f"{what} to {self._peer} refused by the PLC (Modbus exception code {code})")

    def _connect(self) -> None:
        """Open a fresh connection and confirm it by writing the heartbeat register.

        Raises:
            _WriteError: cannot connect, or the probe write failed.
        """
        cfg = self._cfg
        client = _TcpClient(cfg.host, port=cfg.port, timeout=cfg.timeout_s, retries=0,
                            name=f"edgevision-modbus-{self._station}")
        if not client.connect():
            raise _WriteError(f"cannot connect to the PLC at {cfg.host}:{cfg.port}: {client.last_error}")
        self._client = client
        with self._lock:
            beat = self._heartbeat
            self._heartbeat_dirty = False
        self._write_heartbeat(beat)

    def _write_heartbeat(self, beat: int) -> None:
        cfg = self._cfg
        client = self._client
        assert client is not None
        self._request(f"heartbeat register {cfg.registers + 3}",
                      lambda: client.write_register(cfg.registers + 3, beat, device_id=cfg.unit))

    def _write_decision(self, d: PartDecision, beat: int) -> None:
        cfg = self._cfg
        client = self._client
        assert client is not None
        words = [_u16(d.defects), d.seq & 0xFFFF, _u16(d.inference_ms * 10.0), beat]
        self._request(f"holding registers {cfg.registers}..{cfg.registers + 3}",
                      lambda: client.write_registers(cfg.registers, words, device_id=cfg.unit))
        self._request(f"coil {cfg.coil}",
                      lambda: client.write_coil(cfg.coil, d.decision == "NG", device_id=cfg.unit))

    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        try:
            while True:
                stopping = self._stop.is_set()
                decision: PartDecision | None = None
                try:
                    if self._client is None:
                        if stopping:
                            return
                        self._connect()
                        backoff = BACKOFF_MIN_S
                        with self._lock:
                            self._set_state("up", f"connected to {self._peer}")
                        log.info("modbus sink: PLC %s is up", self._peer)
                    self._wake.clear()
                    with self._lock:
                        decision = self._slot.take()
                        beat = self._heartbeat
                        beat_due = self._heartbeat_dirty
                        self._heartbeat_dirty = False
                    if decision is not None:
                        self._write_decision(decision, beat)
                        with self._lock:
                            self._slot.delivered()
                        continue
                    if beat_due:
                        self._write_heartbeat(beat)
                        continue
                    if stopping:
                        return
                    self._wake.wait(_IDLE_WAIT_S)
                except _WriteError as e:
                    if decision is not None:
                        self._put_back(decision)
                    self._down(str(e))
                    if stopping:
                        return
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
        except Exception as e:  # the thread must report, not vanish silently
            log.exception("modbus sink: writer thread failed")
            with self._lock:
                self._status.last_error = one_line(e)
                self._set_state("down", f"writer thread failed: {one_line(e)}")
        finally:
            self._disconnect()
