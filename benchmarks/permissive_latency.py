"""Issue 22: does the MIT nano model (LibreYOLO yolo9-t) run within 1.5x of Ultralytics' yolov8n on the box?

Both at the same side (``--imgsz``, default 320) through the same runtime (`edgevision.runtime.Detector`), FP32 and
INT8 (``edgevision quantize --target x86-avx2``, calibrated on the same images), on NEU-DET val images. Models:

  * ``yolo9-t``: ``edgevision export`` of a LibreYOLO yolo9-t checkpoint (``--ly``: the one
    ``permissive_candidates.py`` or ``neu_det_train.py --backend libreyolo`` trained), at ``--imgsz``;
  * ``yolov8n``: Ultralytics' yolov8n architecture with NEU-DET's 6 classes and random weights, saved as a
    checkpoint and exported by ``edgevision export`` (Ultralytics' exporter underneath), at ``--imgsz`` (latency
    does not depend on the weights' values; the INT8 files are calibrated on the same images).

Timing is `int8_speed.py`'s: each model in its own fresh process, interleaved (``--repeats`` rounds of all
models), per image the whole pipeline (``det(path)``, conf 0.25) and ``det.run(tensor)`` alternating; the figure
is the median over processes of per-process medians, the ratio yolo9-t / yolov8n from those medians. Run by hand::

    .venv/bin/python benchmarks/permissive_latency.py --ly ~/.cache/edgevision/benchmarks/permissive/yolo9-t-224-60m/run/weights/best.pt \\
        --json benchmarks/results/permissive_latency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import int8_speed  # noqa: E402

_V8 = r'''
import json, sys
import torch
from edgevision.train.offline import prepare_ultralytics
prepare_ultralytics(threads=None, verbose=False)
from ultralytics.nn.tasks import DetectionModel
spec = json.loads(sys.argv[1])
m = DetectionModel("yolov8n.yaml", nc=6, verbose=False)
m.names = {i: n for i, n in enumerate(spec["names"])}
torch.save({"model": m, "train_args": {"imgsz": spec["imgsz"], "task": "detect"}, "epoch": -1}, spec["out"])
'''


def _cli(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "edgevision", *args], capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        sys.exit(f"edgevision {' '.join(args[:2])} failed: {r.stderr.strip()[-800:]}")


def build(ly: Path, imgsz: int, calib: Path, work: Path) -> dict[str, Path]:
    names = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    work.mkdir(parents=True, exist_ok=True)
    models: dict[str, Path] = {}
    out = work / f"yolo9-t-{imgsz}.onnx"
    if not out.is_file():
        _cli("export", str(ly), "--out", str(out), "--imgsz", str(imgsz), "--overwrite")
    models["yolo9-t fp32"] = out
    raw = work / "yolov8n-random.pt"
    if not raw.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([sys.executable, "-c", _V8, json.dumps({"imgsz": imgsz, "out": str(raw), "names": names})],
                               capture_output=True, text=True, cwd=tmp)
            if r.returncode != 0:
                sys.exit(f"yolov8n build failed: {r.stderr.strip()[-800:]}")
    v8 = work / f"yolov8n-{imgsz}.onnx"
    if not v8.is_file():
        _cli("export", str(raw), "--out", str(v8), "--imgsz", str(imgsz), "--overwrite")
    models["yolov8n fp32"] = v8
    for name, src in (("yolo9-t", out), ("yolov8n", v8)):
        q = work / f"{src.stem}.int8.onnx"
        if not q.is_file():
            _cli("quantize", str(src), "--calib", str(calib), "--out", str(q), "--n", "100", "--no-eval",
                 "--latency-runs", "0", "--target", "x86-avx2", "--overwrite")
        models[f"{name} int8"] = q
    return models


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ly", type=Path, required=True, help="a LibreYOLO yolo9-t checkpoint (best.pt) or run folder")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from edgevision.core.io import edgevision_home

    split = edgevision_home() / "benchmarks" / "neu-det-split80-s0"
    images = int8_speed.val_images(split, args.images)
    models = build(args.ly, args.imgsz, split, edgevision_home() / "benchmarks" / "permissive-latency")
    per: dict[str, list[dict[str, Any]]] = {k: [] for k in models}
    for rep in range(args.repeats):
        order = list(models) if rep % 2 == 0 else list(reversed(models))
        for name in order:
            res = int8_speed.spawn("time", {"path": str(models[name]), "fp32": str(models[name]), "images": images,
                                            "threads": args.threads, "warmup": args.warmup, "rounds": args.rounds})
            if not res["ok"]:
                sys.exit(f"{name}: {res['error']}")
            per[name].append(res["result"])
            print(f"round {rep + 1} {name}: e2e {res['result']['e2e_median_ms']:.2f} ms, "
                  f"run {res['result']['run_median_ms']:.2f} ms", flush=True)
    table = {k: {"e2e_ms": statistics.median(r["e2e_median_ms"] for r in v),
                 "run_ms": statistics.median(r["run_median_ms"] for r in v),
                 "size_mb": round(models[k].stat().st_size / 2**20, 2)} for k, v in per.items()}
    print(f"\n| model ({args.imgsz} px, {args.threads} threads) | end to end ms | session.run ms | file MB |")
    print("|---|---:|---:|---:|")
    for k, v in table.items():
        print(f"| {k} | {v['e2e_ms']:.2f} | {v['run_ms']:.2f} | {v['size_mb']} |")
    ratios = {p: {"e2e": table[f"yolo9-t {p}"]["e2e_ms"] / table[f"yolov8n {p}"]["e2e_ms"],
                  "run": table[f"yolo9-t {p}"]["run_ms"] / table[f"yolov8n {p}"]["run_ms"]} for p in ("fp32", "int8")}
    for p, r in ratios.items():
        print(f"yolo9-t / yolov8n {p}: end to end {r['e2e']:.2f}x, session.run {r['run']:.2f}x (goal <= 1.5x)")
    if args.json:
        args.json.write_text(json.dumps({"imgsz": args.imgsz, "threads": args.threads, "images": len(images),
                                         "rounds": args.rounds, "repeats": args.repeats, "table": table,
                                         "ratios": ratios, "per_process": per,
                                         "versions": int8_speed._versions()},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
