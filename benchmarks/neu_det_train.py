"""NEU-DET, a nano YOLO from scratch on this CPU within a fixed time budget: how far does it get?

Reads NEU-DET from ``../shared/data/neu-det`` through the ``neu-det`` recipe, makes a seeded
stratified 80/20 train/val split of all 1,800 images (``edgevision.data.split``), writes it once as a
YOLO dataset into the cache, then runs ``edgevision train`` in a fresh process with a time budget
(Ultralytics' ``time`` argument, which fits the learning-rate schedule to the budget). Records mAP50
and mAP50-95 on the held-out 20% per epoch against wall time (``history.csv``), the final COCO
numbers from EdgeVision's evaluator next to Ultralytics' own, and training images/s.

``--backend libreyolo --model yolo9-t`` trains LibreYOLO's MIT YOLOv9 the same way (issue 22); its learning-rate
schedule is laid out for ``--epochs`` (LibreYOLO has no ``time`` argument), so give the epochs that fit the budget
(``permissive_candidates.py`` measured one epoch) and the budget still stops the run after the epoch that reaches it.
Training runs with the network blocked (the test suite's ``sitecustomize`` blocker); the attempts are recorded.

The trained model stays in the cache (``$EDGEVISION_HOME/benchmarks/neu-det-<model>-<imgsz>-<minutes>m``,
default ``~/.cache/edgevision/``) and is reused when present, so later benchmarks (export,
quantization) start from it; ``--retrain`` trains again. Nothing is downloaded. Run by hand::

    .venv/bin/python benchmarks/neu_det_train.py --minutes 60 --imgsz 224 --json benchmarks/results/neu_det_train.json

NEU-DET is for academic research (Song & Yan 2013; He et al. 2020); it is never copied into the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _neu_source() -> Path:
    shared = Path(os.environ.get("EDGEVISION_SHARED", REPO.parent / "shared"))
    return shared / "data" / "neu-det"


def split_cache(src: Path, home: Path, seed: int) -> Path:
    """The seeded stratified 80/20 split of NEU-DET as a YOLO dataset, written once."""
    from edgevision.convert import read_dataset, write_dataset
    from edgevision.core.dataset import Dataset
    from edgevision.data.split import split_dataset

    out = home / "benchmarks" / f"neu-det-split80-s{seed}"
    if (out / "data.yaml").is_file():
        return out
    ds = read_dataset(src, recipe="neu-det").dataset
    unsplit = Dataset(labels=ds.labels, images=ds.images, root=ds.root, meta=dict(ds.meta))
    res = split_dataset(unsplit, (0.8, 0.2), seed=seed, names=("train", "val"))
    write_dataset(res.dataset, out, "yolo", images="copy", overwrite=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="training time budget")
    ap.add_argument("--imgsz", type=int, default=224, help="NEU images are 200x200")
    ap.add_argument("--model", default="yolov8n")
    ap.add_argument("--backend", default="ultralytics", choices=("ultralytics", "libreyolo"))
    ap.add_argument("--epochs", type=int, default=1000, help="the schedule's length (LibreYOLO: what fits the budget)")
    ap.add_argument("--eval-interval", type=int, default=1, help="libreyolo: validate every N epochs (and the last)")
    ap.add_argument("--augment", default="industrial")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--nbs", type=int, default=16, help="Ultralytics' nominal batch (64: accumulate 4 batches of 16 "
                    "per step; 16: a step per batch, 4x more steps for the same compute)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--retrain", action="store_true", help="train again even when the cached model exists")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    src = _neu_source()
    if not (src / "ANNOTATIONS").is_dir():
        print(f"NEU-DET not found at {src} (set EDGEVISION_SHARED); nothing to do", file=sys.stderr)
        return 2
    from edgevision.core.io import edgevision_home

    home = edgevision_home()
    data = split_cache(src, home, args.seed)
    tag = f"neu-det-{args.model}-{args.imgsz}-{args.augment}-nbs{args.nbs}-{args.minutes:g}m-s{args.seed}"
    if args.backend == "libreyolo":
        tag = f"neu-det-{args.model}-{args.imgsz}-{args.augment}-e{args.epochs}-{args.minutes:g}m-s{args.seed}"
    run = home / "benchmarks" / tag
    wall = None
    if args.retrain or not (run / "metrics.json").is_file():
        cmd = [sys.executable, "-m", "edgevision", "train", "--data", str(data), "--from", "yolo",
               "--model", args.model, "--out", str(run), "--imgsz", str(args.imgsz), "--epochs", str(args.epochs),
               "--backend", args.backend,
               "--batch", str(args.batch), "--seed", str(args.seed), "--patience", "0",
               "--augment", args.augment, "--time-hours", str(args.minutes / 60), "--overwrite"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        cfg = home / "benchmarks" / f"{tag}.yaml"
        cfg.write_text(f"ultralytics: {{nbs: {args.nbs}}}\n" if args.backend == "ultralytics"
                       else f"libreyolo: {{eval_interval: {args.eval_interval}}}\n")
        cmd += ["--config", str(cfg)]
        print("running:", " ".join(cmd), flush=True)
        sys.path.insert(0, str(REPO))
        from tests.helpers import blocked_env, network_attempts

        block = home / "benchmarks" / f"{tag}-block"
        (block / "netlog.txt").unlink(missing_ok=True)
        env = blocked_env(block)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=REPO, env=env)
        attempts = network_attempts(block)
        print(f"network attempts while training: {len(attempts)}", flush=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            return r.returncode
    metrics = json.loads((run / "metrics.json").read_text())
    from edgevision.train.run import read_history

    hist = read_history(run / "history.csv")
    coco = metrics["coco"]["coco"]
    own = metrics["backend"]["metrics"]
    own_map50 = metrics["backend"].get("map50", own.get("metrics/mAP50(B)"))
    own_map50_95 = metrics["backend"].get("map50_95", own.get("metrics/mAP50-95(B)"))
    n_train = json.loads((run / "dataset.json").read_text())["splits"]["train"]["images"]
    result = {
        "run": str(run), "backend": args.backend, "model": args.model, "imgsz": args.imgsz, "augment": args.augment,
        "budget_min": args.minutes, "nbs": args.nbs, "batch": args.batch, "epochs": len(hist), "train_images": n_train,
        "coco_map50": coco["map50"], "coco_map50_95": coco["map50_95"],
        "backend_map50": own_map50, "backend_map50_95": own_map50_95,
        "train_images_per_s": metrics["train"].get("train_images_per_s"),
        "wall_min": None if wall is None else round(wall / 60, 1),
        "network_attempts": None if wall is None else len(attempts),
        "per_class_ap50": {k: v["ap50"] for k, v in coco["per_class"].items()},
        "history": [{"epoch": int(h["epoch"] or 0), "minutes": round((h["time_s"] or 0) / 60, 1),
                     "map50": h["val_map50"], "map50_95": h["val_map50_95"]} for h in hist],
    }
    print("| epochs | minutes | mAP50 | mAP50-95 |\n|---:|---:|---:|---:|")
    for h in result["history"]:
        if h["map50"] is not None:
            print(f"| {h['epoch']} | {h['minutes']} | {h['map50']:.3f} | {h['map50_95']:.3f} |")
    name = metrics["backend"].get("name", args.backend)
    print(f"\nfinal (EdgeVision COCO, best.pt on the 20% held out): mAP50 {coco['map50']:.3f}, "
          f"mAP50-95 {coco['map50_95']:.3f}; {name}'s own val: mAP50 {own_map50 or float('nan'):.3f}, "
          f"mAP50-95 {own_map50_95 or float('nan'):.3f}; {result['train_images_per_s']} train images/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
