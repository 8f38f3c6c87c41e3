"""Is the built-in sample learnable? Train a nano YOLO from scratch on it, offline, on the CPU.

Generates the sample with ``edgevision synth``, trains Ultralytics ``yolov8n.yaml`` (architecture
only, no pretrained weights, nothing downloaded) and prints mAP50 / mAP50-95 on the val split and
the wall time. Needs the train extra. Run by hand (minutes to tens of minutes on 2 cores)::

    .venv/bin/python benchmarks/synth_learnability.py --n 300 --epochs 30

Ultralytics is told it is offline and that it must not pip-install anything; its settings live in
the work folder. Run it under ``unshare -n`` to prove no network is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="sample images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--model", default="yolov8n.yaml", help="an Ultralytics architecture yaml (no weights)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="ev-learn-"))
    os.environ.update(YOLO_CONFIG_DIR=str(work / "ultralytics-settings"), YOLO_OFFLINE="1",
                      YOLO_AUTOINSTALL="False", YOLO_VERBOSE="False")
    from edgevision.data.synth import write_synth

    data = work / "sample"
    write_synth(data, n=args.n, seed=args.seed, imgsz=args.imgsz, to="yolo", overwrite=True)
    try:
        import torch
        from ultralytics import YOLO
    except ImportError:
        print("the train extra is not installed: scripts/install.sh .venv dev,train", file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)  # Ultralytics would use cpu_count - 1
    start = time.perf_counter()
    model = YOLO(args.model)
    model.train(data=str((data / "data.yaml").resolve()), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                device="cpu", workers=0, plots=False, project=str(work / "runs"), name="learn", exist_ok=True,
                amp=False, pretrained=False, seed=args.seed, deterministic=True, verbose=False)
    metrics = model.val(data=str((data / "data.yaml").resolve()), imgsz=args.imgsz, batch=args.batch,
                        device="cpu", split="val", plots=False, verbose=False)
    result = {
        "n": args.n, "imgsz": args.imgsz, "epochs": args.epochs, "model": args.model,
        "mAP50": round(float(metrics.box.map50), 4), "mAP50-95": round(float(metrics.box.map), 4),
        "minutes": round((time.perf_counter() - start) / 60, 1), "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
