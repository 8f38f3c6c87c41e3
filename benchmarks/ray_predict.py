"""What does a Ray cluster cost and give, against ``edgevision predict`` on one box?

Same model, same images, same cores (this machine's). Each configuration runs in a fresh process, ``--repeats``
rounds interleaved, figures are medians over rounds:

  * ``local``: `edgevision.infer.predict_source` over the folder with one session on every core (what
    ``edgevision predict`` runs), outputs written (`edgevision.commands.predict._write_outputs`);
  * ``ray-1node``: `edgevision.scale.predict_on_ray` on a local cluster started for the call (this machine's CPUs,
    one actor per core, 1 thread each: the default);
  * ``ray-1actor``: the same cluster with the local command's layout (one actor, one session on every core): Ray's
    own cost, with nothing else changed;
  * ``ray-2nodes``: the same on a `ray.cluster_utils.Cluster` of two nodes sharing this machine's cores (one CPU
    each), started before the clock.

Reported per configuration: the prediction phase (listing to merged outputs; for Ray: actors started, shards run,
merge) and the whole call (for ``ray-1node`` with the cluster's start and stop), images/s, and Ray's overhead per
image against ``local``. Every Ray output is checked equal to the local one (``predictions.json`` bytes).

Driver memory: peak RSS of a process that lists a folder of ``--files`` empty image files into shards and merges
as many synthetic results into ``predictions.json`` (the driver's whole share of a run), against the same for a
tenth of the files: flat means streamed.

    .venv/bin/python benchmarks/ray_predict.py --json benchmarks/results/ray_predict.json
    .venv/bin/python benchmarks/ray_predict.py --model model.int8.onnx --images line-images/

Default model: the INT8 320 px yolo9-t of ``permissive_latency.py``; default images: NEU-DET (all 1,800).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r'''
import json, os, resource, sys, time
from pathlib import Path
spec = json.loads(sys.argv[1])
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
mode, out = spec["mode"], Path(spec["out"])
t0 = time.perf_counter()
if mode == "local":
    from edgevision.commands.predict import _write_outputs
    from edgevision.infer import iter_sources, open_model, predict_source
    m = open_model(Path(spec["model"]), threads=spec["cpus"])
    t1 = time.perf_counter()
    res = predict_source(m, iter_sources(spec["images"]), conf=None, iou=0.7, max_det=300)
    out.mkdir(parents=True)
    _write_outputs(out, res, list(m.labels.names), Path(spec["model"]), "json", m)
    images, phase = len(res.records) + len(res.unreadable), time.perf_counter() - t1
elif mode in ("ray-1node", "ray-1actor", "ray-2nodes"):
    from edgevision.scale import RayOptions, predict_on_ray
    cluster = None
    if mode == "ray-2nodes":
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        from ray.cluster_utils import Cluster
        cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": spec["cpus"] // 2,
                          "include_dashboard": False})
        cluster.add_node(num_cpus=spec["cpus"] - spec["cpus"] // 2)
        cluster.wait_for_nodes()
        t0 = time.perf_counter()
    one = mode == "ray-1actor"
    opts = RayOptions(address=cluster.address if cluster else None, threads=spec["cpus"] if one else 1,
                      actors=1 if one else None, shard_size=spec["shard_size"], local_cpus=spec["cpus"])
    t1 = time.perf_counter()
    s = predict_on_ray(spec["model"], spec["images"], out, options=opts)
    images, phase = s.images + s.unreadable, s.seconds
    if cluster is not None:
        cluster.shutdown()
else:  # memory: list N files into shards and merge N synthetic results, as the driver does
    from edgevision.scale.run import _list_shards, _merge, _shard_file
    stage = out
    total, shards = _list_shards(spec["images"], stage / "shards" / "lists", 256, stage / "x")
    parts = stage / "shards" / "parts"
    parts.mkdir(parents=True)
    entry = {"size_hw": [200, 200], "boxes": [[1.5, 2.25, 80.125, 99.0]], "class_ids": [0],
             "class_names": ["crazing"], "scores": [0.912345], "decision": "reject"}
    for i in range(shards):
        with (stage / "shards" / "lists" / _shard_file(i)).open() as f, (parts / _shard_file(i)).open("w") as g:
            for line in f:
                g.write(json.dumps({"name": json.loads(line)[0], **entry}) + "\n")
    head = {"schema": "edgevision.predictions/1", "classes": ["crazing"], "model": "m", "model_kind": "onnx",
            "thresholds": {"crazing": 0.25}, "threshold_source": "x", "threshold_rules": {}}
    _merge(stage, shards, head, "csv")
    images, phase = total, time.perf_counter() - t0
print("RESULT " + json.dumps({"images": images, "phase_s": phase, "call_s": time.perf_counter() - t0,
                              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def _child(spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=3600)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{spec['mode']} failed:\n{res.stderr[-3000:]}")


def _default_model() -> Path | None:
    home = Path(os.environ.get("EDGEVISION_HOME", Path.home() / ".cache" / "edgevision"))
    p = home / "benchmarks" / "permissive-latency" / "yolo9-t-320.int8.onnx"
    return p if p.is_file() else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--images", type=Path, default=None, help="folder of images (default: NEU-DET's 1,800)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--files", type=int, default=100_000, help="files listed for the driver-memory figure")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    model = args.model or _default_model()
    if model is None:
        print("no model: pass --model, or run benchmarks/permissive_latency.py first", file=sys.stderr)
        return 2
    images = args.images or Path(os.environ.get("EDGEVISION_SHARED", ROOT.parent / "shared")) / "data" / "neu-det"
    if not images.is_dir():
        print(f"{images}: no such folder; pass --images", file=sys.stderr)
        return 2
    cpus = len(os.sched_getaffinity(0))
    modes = ("local", "ray-1node", "ray-1actor", "ray-2nodes")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        for r in range(args.repeats):
            for mode in modes:
                out = Path(tmp) / f"{mode}-{r}"
                got = _child({"mode": mode, "model": str(model), "images": str(images), "out": str(out), "cpus": cpus,
                              "shard_size": args.shard_size})
                runs[mode].append(got)
                if mode != "local":
                    same = (out / "predictions.json").read_bytes() == (Path(tmp) / f"local-{r}" /
                                                                        "predictions.json").read_bytes()
                    got["same_as_local"] = same
                    if not same:
                        raise SystemExit(f"{mode}: predictions.json differs from the local command's")
                print(f"round {r + 1} {mode}: {got['images']} images, phase {got['phase_s']:.1f} s, "
                      f"call {got['call_s']:.1f} s", file=sys.stderr, flush=True)
        mem = {}
        for n in (args.files // 10, args.files):
            folder = Path(tmp) / f"files-{n}"
            for i in range(n):
                d = folder / f"{i // 1000:04d}"
                if i % 1000 == 0:
                    d.mkdir(parents=True)
                (d / f"img-{i:07d}.png").touch()
            mem[n] = _child({"mode": "memory", "model": "", "images": str(folder), "out": str(Path(tmp) / f"mem-{n}"),
                             "cpus": cpus, "shard_size": 256})
            print(f"driver memory, {n} files: peak RSS {mem[n]['peak_rss_mb']:.0f} MB ({mem[n]['phase_s']:.1f} s)",
                  file=sys.stderr, flush=True)

    med = {m: {k: statistics.median(r[k] for r in runs[m]) for k in ("phase_s", "call_s")} for m in modes}
    n = runs["local"][0]["images"]
    rows = {}
    for m in modes:
        rows[m] = {"images": n, "phase_s": round(med[m]["phase_s"], 2), "call_s": round(med[m]["call_s"], 2),
                   "images_per_s_phase": round(n / med[m]["phase_s"], 1),
                   "images_per_s_call": round(n / med[m]["call_s"], 1),
                   "vs_local_phase": round(med["local"]["phase_s"] / med[m]["phase_s"], 3),
                   "overhead_ms_per_image_phase": round((med[m]["phase_s"] - med["local"]["phase_s"]) / n * 1000, 2)}
    doc = {"model": str(model), "images_folder": str(images), "cpus": cpus, "repeats": args.repeats,
           "shard_size": args.shard_size, "machine": platform.processor() or platform.machine(), "results": rows,
           "runs": runs, "driver_memory": {str(k): round(v["peak_rss_mb"], 1) for k, v in mem.items()},
           "when": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(doc["results"], indent=1))
    print("driver peak RSS by files listed:", doc["driver_memory"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
