"""The whole line on loopback: a hot folder feeds the real `Line`, whose decisions reach an asyncua client
subscribed to the OPC UA server, a pymodbus server acting as the PLC and a paho subscriber of a real amqtt
broker that is stopped and restarted mid-run."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import yaml

from edgevision.line.config import load_line_config
from edgevision.line.pipeline import Line
from tests.line.conftest import free_port
from tests.line.test_line import model, rows, write_config, write_part  # noqa: F401 (model: a fixture)
from tests.line.test_modbus_sink import UNIT, FakePlc


def wait(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_parts_reach_opcua_modbus_and_mqtt_through_a_broker_outage(model: Path, tmp_path: Path,  # noqa: F811
                                                                     mqtt_broker, mqtt_subscriber) -> None:
    from asyncua import Client

    opc_port, plc_port = free_port(), free_port()
    plc = FakePlc(plc_port)
    plc.start()
    cfg_path = write_config(tmp_path, model, sinks={
        "opcua": {"endpoint": f"opc.tcp://127.0.0.1:{opc_port}/edgevision/", "anonymous": True},
        "modbus": {"host": "127.0.0.1", "port": plc_port, "unit": UNIT, "coil": 3, "registers": 10},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_broker.port, "topic": "plant/{station}/parts/{part_id}"}})
    line = Line(load_line_config(cfg_path))
    collector = mqtt_subscriber(mqtt_broker.port, "plant/#")
    stop = threading.Event()
    runner = threading.Thread(target=line.run, args=(stop,), daemon=True)
    runner.start()
    seen: list[int] = []
    opc_stop = threading.Event()

    async def subscribe() -> None:
        class Handler:
            def datachange_notification(self, node, val, data) -> None:  # type: ignore[no-untyped-def]
                if val:
                    seen.append(int(val))

        async with Client(f"opc.tcp://127.0.0.1:{opc_port}/edgevision/", timeout=10) as c:
            idx = await c.get_namespace_index("urn:edgevision:line")
            sub = await c.create_subscription(20, Handler())
            await sub.subscribe_data_change(c.get_node(f"ns={idx};s=st1.Sequence"), queuesize=100)
            while not opc_stop.is_set():
                await asyncio.sleep(0.05)
            decision = await c.get_node(f"ns={idx};s=st1.Decision").read_value()
            part = await c.get_node(f"ns={idx};s=st1.PartId").read_value()
            seen.append(-1 if (decision, part) != ("NG", "0009") else 0)

    opc = threading.Thread(target=lambda: asyncio.run(subscribe()), daemon=True)
    try:
        assert wait(lambda: line.status()["sinks"] and all(s["state"] == "up" for s in line.status()["sinks"]))
        opc.start()
        time.sleep(1.0)  # the OPC UA subscription is in place
        for i in range(5):
            write_part(tmp_path / "in", f"part_{i:04d}.png", bright=i % 2 == 1)
        assert wait(lambda: len(collector.messages) >= 5)
        mqtt_broker.stop()  # the broker goes away mid-run: inspection goes on, messages wait in the outbox
        for i in range(5, 10):
            write_part(tmp_path / "in", f"part_{i:04d}.png", bright=i % 2 == 1)
        # nothing waits for the broker: all 10 recorded (the counters follow the record by a moment)
        assert wait(lambda: len(rows(tmp_path / "line.db")) == 10 and line.status()["stats"]["parts"] == 10)
        mqtt = next(s for s in line.status()["sinks"] if s["name"] == "mqtt")
        assert mqtt["state"] == "down" and mqtt["pending"] >= 1
        mqtt_broker.start(hold=True)  # the test's subscriber first (a restarted broker keeps no subscription)
        assert collector.wait_subscribed(2, timeout=15)
        mqtt_broker.release()
        got = collector.wait_for(lambda m: {json.loads(x.payload)["seq"] for x in m} >= set(range(1, 11)), 30)
        first = list(dict.fromkeys(json.loads(x.payload)["seq"] for x in got))
        assert first == list(range(1, 11)) and got[0].topic == "plant/st1/parts/0000"
        assert json.loads(got[-1].payload)["decision"] == "NG"  # part 9 is bright
        # the PLC holds the last part: NG on the coil, 1 defect, part counter 10
        assert wait(lambda: plc.coil(3) and plc.registers(10, 2) == [1, 10])
        opc_stop.set()
        opc.join(timeout=30)
        assert seen[:-1] == list(range(1, 11)) and seen[-1] == 0  # every part in order, the last one consistent
    finally:
        stop.set()
        opc_stop.set()
        runner.join(timeout=30)
        plc.stop()
    assert not runner.is_alive()
    assert yaml.safe_load(cfg_path.read_text())["station"] == "st1"
