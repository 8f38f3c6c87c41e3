"""What does EdgeVision's runtime add to a bare ``session.run``, and how does it compare with Ultralytics?

Same model (the nano YOLO trained on NEU-DET by ``benchmarks/neu_det_train.py``, exported with
``edgevision export`` at each size), same decoded images (NEU-DET validation images, 200x200 grey
JPEGs, decoded once before timing: file decoding is excluded from every method), same thread count.
Each method runs in its own fresh process (two onnxruntime sessions in one process, or onnxruntime
after torch has run, time up to 2x slower: their thread pools spin), ``--repeats`` times; each process
warms up, then times every image ``--rounds`` times; the figure is the median over processes of the
per-process median ms per image.

Methods:
  * ``bare``: ``session.run`` alone on tensors preprocessed before timing (intra-op threads = --threads);
  * ``edgevision``: ``edgevision.runtime.Detector(path, threads=--threads)(image, conf=0.25)`` end to end
    (preprocess, run, decode, NMS, thresholds, boxes mapped back);
  * ``ultralytics-onnx``: ``YOLO("x.onnx").predict(image, imgsz, conf=0.25)`` (its ONNX backend);
  * ``ultralytics-pt``: ``YOLO("best.pt").predict(image, imgsz, conf=0.25)`` with torch threads = --threads;
  * ``paired``: one process, one Detector: ``det.run(tensor)`` and ``det(image)`` alternate image by image
    (order swapped every other image), so drifts in machine load hit both alike; the overhead is the
    median of the per-image ratios. On a shared machine this is the figure to trust for the overhead;
    the separate-process figures carry the noise of whatever else runs between them.

Goals (issue 5): EdgeVision adds at most 10% to bare at 640 px and 20% at 320 px, and is at least 2x
faster than Ultralytics' ``.pt`` predict. Run by hand (about 10 minutes on 2 cores)::

    .venv/bin/python benchmarks/runtime_overhead.py --json benchmarks/results/runtime_overhead.json

NEU-DET is for academic research (Song & Yan 2013); it is never copied into the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_NAME = "neu-det-yolov8n-224-industrial-nbs16-60m-s0"
METHODS = ("bare", "edgevision", "paired", "ultralytics-onnx", "ultralytics-pt")


def _home() -> Path:
    return Path(os.environ.get("EDGEVISION_HOME", Path.home() / ".cache" / "edgevision"))


def _images(n: int) -> list[Path]:
    shared = Path(os.environ.get("EDGEVISION_SHARED", REPO.parent / "shared"))
    root = shared / "data" / "neu-det"
    files = sorted(p for p in root.rglob("*.jpg"))
    if not files:
        sys.exit(f"NEU-DET not found under {root}")
    step = max(1, len(files) // n)
    return files[::step][:n]


def _export(run: Path, imgsz: int) -> Path:
    out = _home() / "benchmarks" / "onnx" / f"{RUN_NAME}-{imgsz}.onnx"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "edgevision", "export", str(run), "--out", str(out), "--imgsz", str(imgsz)],
                       check=True)
    return out


# --------------------------------------------------------------------------- child: one method, one process


def child(method: str, onnx_path: str, pt_path: str, imgsz: int, threads: int, images: list[str], rounds: int,
          warmup: int) -> dict[str, float]:
    import cv2
    import numpy as np

    arrays = [cv2.imread(p, cv2.IMREAD_COLOR) for p in images]
    if method == "paired":  # one session: bare run and end to end alternate image by image
        from edgevision.runtime import Detector

        det = Detector(onnx_path, threads=threads, providers=["CPUExecutionProvider"])
        tensors = [det.preprocess(a)[0] for a in arrays]
        for i in range(warmup):
            det(arrays[i % len(arrays)], conf=0.25)
        bare, e2e = [], []
        for r in range(rounds):
            for i in range(len(arrays)):
                for first in ((0, 1) if (i + r) % 2 == 0 else (1, 0)):
                    t0 = time.perf_counter()
                    if first == 0:
                        det.run(tensors[i])
                    else:
                        det(arrays[i], conf=0.25)
                    (bare if first == 0 else e2e).append((time.perf_counter() - t0) * 1000.0)
        ratio = np.asarray(e2e) / np.asarray(bare)
        return {"median_ms": float(np.median(e2e)), "bare_median_ms": float(np.median(bare)),
                "overhead": float(np.median(ratio) - 1.0), "n": len(e2e)}
    if method == "bare":
        import onnxruntime as ort

        from edgevision.runtime import Detector

        det = Detector(onnx_path, threads=threads, providers=["CPUExecutionProvider"])
        tensors = [det.preprocess(a)[0] for a in arrays]  # preprocessing is not timed here
        del det
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def one(i: int) -> None:
            sess.run(None, {name: tensors[i]})
    elif method == "edgevision":
        from edgevision.runtime import Detector

        det = Detector(onnx_path, threads=threads, providers=["CPUExecutionProvider"])

        def one(i: int) -> None:
            det(arrays[i], conf=0.25)
    else:
        from edgevision.train.offline import prepare_ultralytics

        prepare_ultralytics(threads=threads, verbose=False)
        import torch
        from ultralytics import YOLO

        torch.set_num_threads(threads)
        model = YOLO(onnx_path if method == "ultralytics-onnx" else pt_path, task="detect")

        def one(i: int) -> None:
            model.predict(arrays[i], imgsz=imgsz, conf=0.25, device="cpu", verbose=False)

    for i in range(warmup):
        one(i % len(arrays))
    times = []
    for _ in range(rounds):
        for i in range(len(arrays)):
            t0 = time.perf_counter()
            one(i)
            times.append((time.perf_counter() - t0) * 1000.0)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "n": len(times)}


# --------------------------------------------------------------------------- parent


def cpu_description() -> str:
    """CPU model and the vector extensions that decide onnxruntime's kernels (AVX2, AVX-512, VNNI)."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags]
    return f"{model} ({', '.join(isa) or 'no AVX2'})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="320,640")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per method and size")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child(**spec)))
        return 0

    run = _home() / "benchmarks" / RUN_NAME
    pt = run / "weights" / "best.pt"
    if not pt.is_file():
        sys.exit(f"{pt} missing: run benchmarks/neu_det_train.py first")
    images = [str(p) for p in _images(args.images)]
    methods = [m for m in args.methods.split(",") if m]
    results: dict[str, dict[str, object]] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        onnx_path = _export(run, size)
        per: dict[str, object] = {}
        for rep in range(args.repeats):
            for method in methods:  # interleaved, so drifts in machine load hit every method alike
                spec = {"method": method, "onnx_path": str(onnx_path), "pt_path": str(pt), "imgsz": size,
                        "threads": args.threads, "images": images, "rounds": args.rounds, "warmup": args.warmup}
                res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                     text=True, check=False)
                if res.returncode != 0:
                    sys.exit(f"{method} at {size}: {res.stderr[-2000:]}")
                r = json.loads(res.stdout.strip().splitlines()[-1])
                per.setdefault(method, []).append(r["median_ms"])  # type: ignore[union-attr]
                extra = ""
                if method == "paired":
                    per.setdefault("paired-overhead", []).append(r["overhead"])  # type: ignore[union-attr]
                    extra = f" (bare in the same session {r['bare_median_ms']:.2f} ms, overhead {r['overhead']:+.1%})"
                print(f"  {size}px rep {rep} {method:17s} {r['median_ms']:7.2f} ms{extra}", flush=True)
        med = {m: statistics.median(v) for m, v in per.items()}  # type: ignore[arg-type]
        row: dict[str, object] = {"median_ms": med, "runs_ms": per}
        if "bare" in med and "edgevision" in med:
            row["edgevision_overhead_vs_bare"] = med["edgevision"] / med["bare"] - 1.0
        if "paired-overhead" in med:
            row["edgevision_overhead_paired"] = med.pop("paired-overhead")
        if "ultralytics-pt" in med and "edgevision" in med:
            row["speedup_vs_ultralytics_pt"] = med["ultralytics-pt"] / med["edgevision"]
        if "ultralytics-onnx" in med and "edgevision" in med:
            row["speedup_vs_ultralytics_onnx"] = med["ultralytics-onnx"] / med["edgevision"]
        results[str(size)] = row
    print()
    print(f"{'size':>5} " + " ".join(f"{m:>17}" for m in methods) + "  overhead (processes / paired)  vs .pt  vs onnx")
    for size, row in results.items():
        med = row["median_ms"]
        print(f"{size:>5} " + " ".join(f"{med[m]:>14.2f} ms" for m in methods)  # type: ignore[index]
              + f"  {row.get('edgevision_overhead_vs_bare', float('nan')):+7.1%}"
              + f" / {row.get('edgevision_overhead_paired', float('nan')):+7.1%}"
              + f"  {row.get('speedup_vs_ultralytics_pt', float('nan')):5.2f}x"
              + f"  {row.get('speedup_vs_ultralytics_onnx', float('nan')):5.2f}x")
    if args.json:
        doc = {"benchmark": "runtime_overhead", "threads": args.threads, "images": len(images),
               "rounds": args.rounds, "repeats": args.repeats, "cpu": cpu_description(),
               "cores": os.cpu_count(), "results": results,
               "method": "each method in its own fresh process; median over processes of per-process median ms/image; "
                         "decoded arrays in, decoding excluded"}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
