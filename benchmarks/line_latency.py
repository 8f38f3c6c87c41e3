"""What `edgevision line` adds to the detector: from a file landing in the hot folder to the decision seen by
an OPC UA subscriber and an MQTT subscriber, against the bare `Detector` on the same image, in one run.

    .venv/bin/python benchmarks/line_latency.py [--model model.onnx] [--parts 200] [--sources 1|2]

Everything runs on loopback in this process's machine: the line (`edgevision.line.pipeline.Line`) with its
OPC UA server and MQTT sink, a real amqtt broker, an asyncua client subscribed to ``Sequence`` (sampling 0:
every change) and a paho subscriber. Each part is written to a temporary name and renamed in (the hand-over
camera software uses), with ``stable_ms: 0`` (files renamed in whole are taken at first sight) and a 5 ms
poll; parts are spaced so that the line is idle when each arrives (latency, not throughput). The bare
detector is timed on the same encoded image (decode + detect), interleaved with the line's parts. Prints
p50 / p99 of each and the line's overhead (medians: line minus bare detector). Without ``--model``, a tiny
synthetic model (one bright-box class) is used: the overhead is what the line adds, whatever the model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="an EdgeVision ONNX file (default: a tiny synthetic model)")
    ap.add_argument("--parts", type=int, default=200)
    ap.add_argument("--sources", type=int, choices=(1, 2), default=1)
    ap.add_argument("--gap-ms", type=float, default=40.0, help="time between parts")
    args = ap.parse_args()

    import yaml
    from asyncua import Client

    from edgevision.line.config import load_line_config
    from edgevision.line.pipeline import Line
    from edgevision.runtime import Detector
    from tests.line.conftest import LocalBroker, MqttCollector, free_port

    tmp = Path(tempfile.mkdtemp(prefix="line-latency-"))
    model = args.model
    if model is None:
        from tests.runtime.conftest import bbox_model, make_meta

        model = bbox_model(tmp / "model.onnx", make_meta(["defect"], size_hw=(64, 64)), score=0.9)
    h, w = Detector(model).metadata.input.size_hw
    img = np.full((max(h, 96), max(w, 128), 3), 40, np.uint8)
    img[10:40, 50:90] = 255
    data = cv2.imencode(".png", img)[1].tobytes()

    broker = LocalBroker()
    broker.start()
    opc_port = free_port()
    folders = [tmp / f"in{i}" for i in range(args.sources)]
    for f in folders:
        f.mkdir()
    cfg = {"model": str(model), "station": "bench", "threads": 1,
           "sources": [{"type": "folder", "name": f"cam{i}", "path": str(f), "stable_ms": 0, "poll_ms": 5,
                        "after": "delete"} for i, f in enumerate(folders)],
           "sinks": {"opcua": {"endpoint": f"opc.tcp://127.0.0.1:{opc_port}/edgevision/", "anonymous": True},
                     "mqtt": {"host": "127.0.0.1", "port": broker.port, "topic": "bench/{station}/{part_id}"}},
           "record": {"keep_rejects": False, "keep_accepted": 0.0}, "drift": {"enabled": False}}
    (tmp / "line.yaml").write_text(yaml.safe_dump(cfg))
    line = Line(load_line_config(tmp / "line.yaml"))
    stop = threading.Event()
    runner = threading.Thread(target=line.run, args=(stop,), daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(s["state"] == "up" for s in line.status()["sinks"]):
        time.sleep(0.05)

    sent: dict[str, float] = {}
    opc_at: dict[int, float] = {}
    mqtt_at: dict[str, float] = {}
    collector = MqttCollector(broker.port, "bench/#")
    collector._client.on_message = lambda c, u, m: mqtt_at.setdefault(m.topic.rsplit("/", 1)[-1], time.perf_counter())
    opc_ready, opc_stop = threading.Event(), threading.Event()

    async def subscribe() -> None:
        class Handler:
            def datachange_notification(self, node, val, data) -> None:  # type: ignore[no-untyped-def]
                if val:
                    opc_at.setdefault(int(val), time.perf_counter())

        async with Client(f"opc.tcp://127.0.0.1:{opc_port}/edgevision/", timeout=10) as c:
            idx = await c.get_namespace_index("urn:edgevision:line")
            sub = await c.create_subscription(0, Handler())
            await sub.subscribe_data_change(c.get_node(f"ns={idx};s=bench.Sequence"), queuesize=1000)
            opc_ready.set()
            while not opc_stop.is_set():
                await asyncio.sleep(0.02)

    opc_thread = threading.Thread(target=lambda: asyncio.run(subscribe()), daemon=True)
    opc_thread.start()
    opc_ready.wait(30)
    time.sleep(0.5)

    det = Detector(model, threads=1)
    bare: list[float] = []
    for i in range(args.parts):
        folder = folders[i % len(folders)]
        name = f"p{i:05d}"
        t = folder / f".{name}.tmp"
        t.write_bytes(data)
        sent[name] = time.perf_counter()
        os.replace(t, folder / f"{name}.png")
        time.sleep(args.gap_ms / 2000)
        t0 = time.perf_counter()
        det(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))
        bare.append((time.perf_counter() - t0) * 1e3)
        time.sleep(args.gap_ms / 2000)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(mqtt_at) < args.parts or len(opc_at) < args.parts):
        time.sleep(0.05)
    opc_stop.set()
    opc_thread.join(10)
    stop.set()
    runner.join(30)
    collector.close()
    broker.close()

    import sqlite3

    con = sqlite3.connect(tmp / "line.db")
    seq_of = {row[1].removesuffix(".png"): row[0] for row in con.execute("SELECT seq, image FROM parts")}
    con.close()
    to_opc = [(opc_at[seq_of[n]] - t0) * 1e3 for n, t0 in sent.items() if n in seq_of and seq_of[n] in opc_at]
    to_mqtt = [(mqtt_at[n] - t0) * 1e3 for n, t0 in sent.items() if n in mqtt_at]

    def pct(v: list[float]) -> str:
        return f"p50 {np.percentile(v, 50):.2f} ms, p99 {np.percentile(v, 99):.2f} ms (n={len(v)})" if v else "none"

    result = {
        "parts": args.parts, "sources": args.sources, "model": str(args.model or "synthetic bbox model"),
        "bare_detector": pct(bare), "file_to_opcua": pct(to_opc), "file_to_mqtt": pct(to_mqtt),
        "overhead_p50_ms_opcua": float(np.median(to_opc) - np.median(bare)) if to_opc else None,
        "overhead_p50_ms_mqtt": float(np.median(to_mqtt) - np.median(bare)) if to_mqtt else None,
        "lost": {"opcua": args.parts - len(to_opc), "mqtt": args.parts - len(to_mqtt)},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
