"""`ModbusSink` against a real pymodbus TCP server on 127.0.0.1 acting as the PLC."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgevision.line.config import ModbusSinkConfig
from edgevision.line.sinks import modbus as modbus_mod
from edgevision.line.sinks.base import PartDecision
from edgevision.line.sinks.modbus import ModbusSink

UNIT = 7
COIL = 3
REGS = 20
FC_WRITE_COIL, FC_WRITE_REGISTER, FC_WRITE_REGISTERS = 5, 6, 16


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class FakePlc:
    """A pymodbus TCP server (device id `UNIT`, coils and holding registers 0..63) in a thread with its own loop.

    Each `start` gives a fresh datastore (a PLC that was power-cycled); `writes` records every write request
    as ``(function code, address, values)`` in arrival order.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.writes: list[tuple[int, int, list[int] | list[bool]]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    async def _record(self, fc: int, _start: int, address: int, _count: int, _regs: list[int],
                      values: list[int] | list[bool] | None) -> None:
        if values is not None:
            self.writes.append((fc, address, list(values)))

    async def _main(self, ready: threading.Event) -> None:
        try:
            device = SimDevice(UNIT, action=self._record, simdata=(
                [SimData(0, count=64, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=64, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
            ))
            self._server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
            await self._server.serve_forever(background=True)
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
        except BaseException as e:
            self._error = e
            ready.set()
            return
        ready.set()
        await self._stop.wait()
        await self._server.shutdown()

    def start(self) -> None:
        ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(ready)), name="fake-plc", daemon=True)
        self._thread.start()
        assert ready.wait(5.0), "the fake PLC did not start within 5 s"
        if self._error is not None:
            raise RuntimeError(f"the fake PLC did not start: {self._error!r}")

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5.0)
        assert not self._thread.is_alive(), "the fake PLC did not stop within 5 s"
        self._thread = self._loop = self._server = self._stop = None

    def _get(self, fc: int, address: int, count: int) -> list[int] | list[bool]:
        assert self._loop is not None and self._server is not None
        fut = asyncio.run_coroutine_threadsafe(self._server.context.async_getValues(UNIT, fc, address, count), self._loop)
        values = fut.result(2.0)
        assert isinstance(values, list), values
        return values

    def coil(self, address: int) -> bool:
        return bool(self._get(1, address, 1)[0])

    def registers(self, address: int, count: int) -> list[int]:
        return [int(v) for v in self._get(3, address, count)]


def _decision(seq: int, decision: str, defects: int = 0, inference_ms: float = 5.0) -> PartDecision:
    return PartDecision(seq=seq, time="2024-01-01T00:00:00Z", station="st-1", source="cam", part_id=f"p{seq}",
                        serial=None, image=f"p{seq}.png", image_sha256="0" * 64, decision=decision,
                        defects=defects, classes={"scratch": defects} if defects else {}, detections=[],
                        inference_ms=inference_ms, model="m.onnx", model_sha256="1" * 64)


def _cfg(port: int, **kw: object) -> ModbusSinkConfig:
    return ModbusSinkConfig(host="127.0.0.1", port=port, unit=UNIT, coil=COIL, registers=REGS, timeout_s=0.5, **kw)


def _sink_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgevision-modbus")]


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
def plc(port: int) -> Iterator[FakePlc]:
    server = FakePlc(port)
    yield server
    server.stop()


@pytest.fixture
def sinks() -> Iterator[list[ModbusSink]]:
    made: list[ModbusSink] = []
    yield made
    for s in made:
        s.close(timeout=3.0)
    assert _wait_until(lambda: not _sink_threads(), timeout=3.0), "a ModbusSink thread outlived close()"


def _delivered(plc: FakePlc, d: PartDecision) -> Callable[[], bool]:
    """True once the PLC holds ``d`` (coil and the first three registers)."""
    def check() -> bool:
        expected = [min(d.defects, 65535), d.seq & 0xFFFF, max(0, min(65535, round(d.inference_ms * 10)))]
        return plc.registers(REGS, 3) == expected and plc.coil(COIL) == (d.decision == "NG")
    return check


def test_ng_then_ok_registers_before_coil(plc: FakePlc, port: int, sinks: list[ModbusSink]) -> None:
    plc.start()
    sink = ModbusSink(_cfg(port), "st-1")
    sinks.append(sink)
    assert sink.name == "modbus" and sink.durable is False
    sink.start()
    assert _wait_until(lambda: sink.status().state == "up"), sink.status()

    ng = _decision(70001, "NG", defects=3, inference_ms=12.34)
    sink.publish(ng)
    assert _wait_until(_delivered(plc, ng)), (plc.registers(REGS, 4), plc.coil(COIL))
    assert plc.registers(REGS, 4) == [3, 70001 & 0xFFFF, 123, 0]
    assert plc.coil(COIL) is True

    ok = _decision(70002, "OK", defects=0, inference_ms=7.0)
    sink.publish(ok)
    assert _wait_until(_delivered(plc, ok))
    assert plc.registers(REGS, 4) == [0, 70002 & 0xFFFF, 70, 0]
    assert plc.coil(COIL) is False

    huge = _decision(3, "NG", defects=100_000, inference_ms=1e9)
    sink.publish(huge)
    assert _wait_until(lambda: plc.registers(REGS, 3) == [65535, 3, 65535])

    st = sink.status()
    assert (st.state, st.sent, st.failed, st.pending) == ("up", 3, 0, 0)
    # The connection is confirmed by writing the heartbeat register; then each decision is one FC16 of the
    # four registers followed by one FC5 on the coil (registers first, coil last).
    assert plc.writes[0] == (FC_WRITE_REGISTER, REGS + 3, [0])
    assert [(fc, addr) for fc, addr, _ in plc.writes[1:]] == [(FC_WRITE_REGISTERS, REGS), (FC_WRITE_COIL, COIL)] * 3
    assert plc.writes[2][2][0] is True and plc.writes[4][2][0] is False


def test_plc_down_at_start_then_comes_up(plc: FakePlc, port: int, sinks: list[ModbusSink]) -> None:
    sink = ModbusSink(_cfg(port), "st-1")
    sinks.append(sink)
    sink.start()
    assert _wait_until(lambda: sink.status().state == "down", timeout=3.0), sink.status()
    st = sink.status()
    assert f"cannot connect to the PLC at 127.0.0.1:{port}" in st.detail and "refused" in st.detail.lower(), st
    assert "\n" not in st.detail and st.last_error == st.detail

    first, latest = _decision(1, "OK"), _decision(2, "NG", defects=1, inference_ms=4.0)
    for d in (first, latest):
        t0 = time.perf_counter()
        sink.publish(d)
        assert time.perf_counter() - t0 < 0.05
    st = sink.status()
    assert (st.state, st.sent, st.failed, st.pending) == ("down", 0, 1, 1)  # `first` was replaced, never delivered

    plc.start()
    assert _wait_until(_delivered(plc, latest), timeout=8.0), sink.status()
    assert _wait_until(lambda: sink.status().state == "up")
    st = sink.status()
    assert (st.sent, st.failed, st.pending) == (1, 1, 0)
    assert not any(w[0] == FC_WRITE_REGISTERS and w[2][1] == first.seq for w in plc.writes)


def test_reconnects_after_plc_restart(plc: FakePlc, port: int, sinks: list[ModbusSink]) -> None:
    plc.start()
    sink = ModbusSink(_cfg(port), "st-1")
    sinks.append(sink)
    sink.start()
    d1 = _decision(10, "NG", defects=2)
    sink.publish(d1)
    assert _wait_until(_delivered(plc, d1))

    plc.stop()
    d2 = _decision(11, "OK")
    sink.publish(d2)
    assert _wait_until(lambda: sink.status().state == "down", timeout=3.0), sink.status()
    assert sink.status().last_error

    plc.start()  # same port, fresh datastore: what arrives was written after the restart
    assert _wait_until(_delivered(plc, d2), timeout=8.0), sink.status()
    assert _wait_until(lambda: sink.status().state == "up")
    d3 = _decision(12, "NG", defects=5, inference_ms=1.5)
    sink.publish(d3)
    assert _wait_until(_delivered(plc, d3))
    st = sink.status()
    assert (st.state, st.sent, st.failed, st.pending) == ("up", 3, 0, 0)


def test_heartbeat_writes_only_its_register(plc: FakePlc, port: int, sinks: list[ModbusSink]) -> None:
    plc.start()
    sink = ModbusSink(_cfg(port), "st-1")
    sinks.append(sink)
    sink.start()
    assert _wait_until(lambda: sink.status().state == "up")
    n_before = len(plc.writes)
    for _ in range(3):
        sink.heartbeat(True)
    sink.heartbeat(False, "a source is down")
    assert _wait_until(lambda: plc.registers(REGS + 3, 1) == [4]), plc.registers(REGS, 4)
    assert all((fc, addr) == (FC_WRITE_REGISTER, REGS + 3) for fc, addr, _ in plc.writes[n_before:])
    assert plc.registers(REGS, 3) == [0, 0, 0] and plc.coil(COIL) is False

    d = _decision(1, "OK")
    sink.publish(d)
    assert _wait_until(_delivered(plc, d))
    assert plc.registers(REGS + 3, 1) == [4]  # the decision's write carries the current heartbeat
    sink.heartbeat(True)
    assert _wait_until(lambda: plc.registers(REGS + 3, 1) == [5])


def test_error_response_means_down(plc: FakePlc, port: int, sinks: list[ModbusSink]) -> None:
    plc.start()
    cfg = ModbusSinkConfig(host="127.0.0.1", port=port, unit=UNIT, coil=COIL, registers=1000, timeout_s=0.5)
    sink = ModbusSink(cfg, "st-1")
    sinks.append(sink)
    sink.start()
    assert _wait_until(lambda: sink.status().state == "down"), sink.status()
    assert "refused by the PLC (Modbus exception code 2)" in sink.status().detail
    t0 = time.perf_counter()
    sink.publish(_decision(1, "NG"))
    assert time.perf_counter() - t0 < 0.05
    assert sink.status().pending == 1


def test_close_is_idempotent_and_leaves_no_thread(plc: FakePlc, port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    never_started = ModbusSink(_cfg(port), "st-1")
    never_started.close()
    never_started.close()

    plc.start()
    sink = ModbusSink(_cfg(port), "st-1")
    sink.start()
    sink.start()  # idempotent too
    assert _wait_until(lambda: sink.status().state == "up")
    assert len(_sink_threads()) == 1
    t0 = time.monotonic()
    sink.close(timeout=3.0)
    sink.close(timeout=3.0)
    assert time.monotonic() - t0 < 3.0
    assert not _sink_threads()
    st = sink.status()
    assert (st.state, st.detail) == ("down", "closed")
    sink.publish(_decision(1, "OK"))  # after close: not delivered, counted, no exception
    sink.heartbeat(True)
    assert sink.status().failed == 1
    with pytest.raises(RuntimeError, match="after close"):
        sink.start()

    # A sink waiting in its backoff (PLC down) stops at once too.
    plc.stop()
    monkeypatch.setattr(modbus_mod, "BACKOFF_MIN_S", 5.0)
    down = ModbusSink(_cfg(port), "st-1")
    down.start()
    assert _wait_until(lambda: down.status().state == "down", timeout=3.0)
    down.publish(_decision(2, "NG"))
    t0 = time.monotonic()
    down.close(timeout=3.0)
    assert time.monotonic() - t0 < 1.0
    assert not _sink_threads()
    assert down.status().failed == 1  # the decision waiting at close was never delivered
