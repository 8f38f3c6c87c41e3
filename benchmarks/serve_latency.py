"""What does the HTTP service cost over calling the runtime directly, and what throughput does each
``--concurrency`` / ``--threads`` split give?

Same model, same encoded images (the bytes a camera gateway would send), same box. Measured:

  * ``direct``: a fresh process calls ``Detector(model, threads=T)(image_bytes)`` (decode, preprocess,
    run, postprocess) for every image, ``--rounds`` times; the per-call median and p90 / p99;
  * ``http serial``: ``edgevision serve MODEL --concurrency 1 --threads T --no-access-log`` in its own
    process; one client on a keep-alive connection posts the same images one after another (round trip:
    send, parse, infer, JSON, receive); the same percentiles. The difference of the medians is the
    service's cost per image;
  * ``http throughput``: for each ``--splits`` entry ``CxT`` (C inference slots x T threads each), ``--clients``
    client threads post images as fast as answers come back for ``--seconds``; images/s and latency
    percentiles, non-200 answers counted (there must be none: the queue is large enough).

The clients run in this process, on the same cores as the server (as a line PC sending to a service on
itself would); ``--repeats`` rounds interleave every configuration, and the figures are medians over rounds.

    .venv/bin/python benchmarks/serve_latency.py --json benchmarks/results/serve_latency.json
    .venv/bin/python benchmarks/serve_latency.py --model model.int8.onnx --images line-images/

Default model and images: the INT8 (x86-avx2) and FP32 320 px NEU-DET nano YOLO of ``int8_speed.py`` and the
val split it was trained without (``$EDGEVISION_HOME/benchmarks/``); run that benchmark first.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEM = "neu-det-yolov8n-224-industrial-nbs16-60m-s0-320"


def _home() -> Path:
    return Path(os.environ.get("EDGEVISION_HOME", Path.home() / ".cache" / "edgevision"))


def _default_models() -> list[Path]:
    onnx = _home() / "benchmarks" / "onnx"
    return [p for p in (onnx / f"{STEM}.onnx", onnx / "int8" / f"{STEM}-x86-avx2-minmax-n200-split80.onnx")
            if p.exists()]


def _default_images() -> Path:
    return _home() / "benchmarks" / "neu-det-split80-s0"


def _images(folder: Path, n: int) -> list[bytes]:
    """The first ``n`` images of ``folder`` (of its ``val`` split when it has one)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    val = [p for p in files if "val" in p.relative_to(folder).parts]
    files = val or files
    if not files:
        sys.exit(f"{folder}: no images; pass --images DIR")
    return [p.read_bytes() for p in files[:n]]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50": statistics.median(ms), "p90": _pct(ms, 0.9), "p99": _pct(ms, 0.99),
            "mean": statistics.fmean(ms)}


DIRECT = r"""
import json, sys, time
from pathlib import Path
from edgevision.runtime import Detector
model, threads, rounds, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
images = [p.read_bytes() for p in sorted(folder.glob("*.bin"))]
det = Detector(model, threads=threads)
for b in images[:5]:
    det(b)
ms = []
for _ in range(rounds):
    for b in images:
        t0 = time.perf_counter(); det(b); ms.append((time.perf_counter() - t0) * 1e3)
print(json.dumps(ms))
"""


def direct(model: Path, threads: int, rounds: int, folder: Path) -> list[float]:
    r = subprocess.run([sys.executable, "-c", DIRECT, str(model), str(threads), str(rounds), str(folder)],
                       capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(r.stdout.strip().splitlines()[-1])


class Service:
    def __init__(self, model: Path, concurrency: int, threads: int) -> None:
        cmd = [sys.executable, "-m", "edgevision", "serve", str(model), "--port", "0", "--concurrency",
               str(concurrency), "--threads", str(threads), "--max-queue", "64", "--no-access-log",
               "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                     env=dict(os.environ, COLUMNS="300", NO_COLOR="1"))
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if " on http://" in line:
                self.port = int(line.rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError(f"server did not start (exit {self.proc.wait()})")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()  # type: ignore[union-attr]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def post(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request("POST", "/v1/detect", body, {"Content-Type": "application/octet-stream"})
    r = conn.getresponse()
    r.read()
    return r.status


def http_serial(model: Path, threads: int, rounds: int, images: list[bytes]) -> list[float]:
    svc = Service(model, 1, threads)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
        for b in images[:5]:
            post(conn, b)
        ms = []
        for _ in range(rounds):
            for b in images:
                t0 = time.perf_counter()
                assert post(conn, b) == 200
                ms.append((time.perf_counter() - t0) * 1e3)
        conn.close()
        return ms
    finally:
        svc.stop()


def http_throughput(model: Path, concurrency: int, threads: int, clients: int, seconds: float,
                    images: list[bytes]) -> dict[str, float]:
    svc = Service(model, concurrency, threads)
    try:
        warm = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
        for b in images[:5]:
            post(warm, b)
        warm.close()
        lat: list[float] = []
        bad = [0]
        stop_at = time.perf_counter() + seconds
        lock = threading.Lock()

        def client(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=120)
            i = k
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                status = post(conn, images[i % len(images)])
                dt = (time.perf_counter() - t0) * 1e3
                with lock:
                    lat.append(dt) if status == 200 else bad.__setitem__(0, bad[0] + 1)
                i += clients
            conn.close()

        t0 = time.perf_counter()
        ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        return {"images_per_s": len(lat) / wall, **_summary(lat), "non_200": bad[0]}
    finally:
        svc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, action="append", help="ONNX model (repeatable; default: NEU FP32 + INT8)")
    ap.add_argument("--images", type=Path, default=None, help="folder of images (default: the NEU val split)")
    ap.add_argument("--n-images", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=4, help="passes over the images per serial measurement")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the serial runs")
    ap.add_argument("--splits", default="1x2,2x1", help="throughput configurations CONCURRENCYxTHREADS")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    models = a.model or _default_models()
    if not models:
        sys.exit("no model: pass --model, or run benchmarks/int8_speed.py first to build the NEU models")
    images = _images(a.images or _default_images(), a.n_images)
    tmp_dir = tempfile.TemporaryDirectory(prefix="serve-bench-")  # the request bodies; removed however the run ends
    try:
        _measure(a, models, images, Path(tmp_dir.name))
    finally:
        tmp_dir.cleanup()


def _measure(a: argparse.Namespace, models: list[Path], images: list[bytes], tmp: Path) -> None:
    for i, b in enumerate(images):
        (tmp / f"{i:04d}.bin").write_bytes(b)
    splits = [tuple(int(x) for x in s.split("x")) for s in a.splits.split(",")]
    result: dict[str, object] = {
        "benchmark": "serve_latency", "date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "images": len(images), "mean_image_bytes": statistics.fmean(map(len, images)),
        "threads_serial": a.threads, "clients": a.clients, "seconds": a.seconds, "repeats": a.repeats, "models": {},
    }
    for model in models:
        per: dict[str, list] = {"direct": [], "http": [], **{f"{c}x{t}": [] for c, t in splits}}
        for rep in range(a.repeats):
            print(f"{model.name}: repeat {rep + 1}/{a.repeats}", flush=True)
            per["direct"].append(_summary(direct(model, a.threads, a.rounds, tmp)))
            per["http"].append(_summary(http_serial(model, a.threads, a.rounds, images)))
            for c, t in splits:
                per[f"{c}x{t}"].append(http_throughput(model, c, t, a.clients, a.seconds, images))
        med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in per.items()}
        med["overhead_ms_p50"] = {"value": med["http"]["p50"] - med["direct"]["p50"]}
        result["models"][model.name] = med  # type: ignore[index]
        d, h = med["direct"], med["http"]
        print(f"\n{model.name}")
        print(f"  direct Detector(bytes)     p50 {d['p50']:7.2f} ms  p90 {d['p90']:7.2f}  p99 {d['p99']:7.2f}")
        print(f"  HTTP, one client, serial   p50 {h['p50']:7.2f} ms  p90 {h['p90']:7.2f}  p99 {h['p99']:7.2f}"
              f"   service cost {h['p50'] - d['p50']:+.2f} ms/image ({h['p50'] / d['p50']:.2f}x)")
        for c, t in splits:
            r = med[f"{c}x{t}"]
            print(f"  {a.clients} clients, {c} slot(s) x {t} thread(s): {r['images_per_s']:6.1f} images/s, "
                  f"p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f}  non-200 {int(r['non_200'])}")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
