"""Issue 22: which permissively licensed detector learns NEU-DET from scratch on this CPU within a time budget?

The same data and split as `neu_det_train.py` (the ``neu-det`` recipe, a seeded stratified 80/20 split, 1,440
train / 360 val images, written once as a YOLO dataset), no pretrained weights, the network cut. Each candidate
trains in a fresh process with a ``sitecustomize`` that refuses and logs every socket connect and DNS lookup
(the same blocker the test suite uses); a run with any attempt is reported as such. The number of epochs is
fitted to the budget from a one-epoch calibration run (``--epochs auto``, the default), so the learning-rate
schedule ends with the budget, as Ultralytics' ``time`` argument does for the reference run.

Recorded per candidate: the library's own validation curve (mAP50 / mAP50-95 per epoch against wall time), then
the best checkpoint scored by EdgeVision's evaluator (pycocotools, conf 0.001, 100 detections per image) on the
360 held-out images, which is the number the reference run's 0.713 mAP50 is (``benchmarks/README.md``); training
images/s, parameters, the licences of the code and of the architecture's upstream. Run by hand::

    .venv/bin/pip install --no-deps --target ~/.cache/edgevision/libreyolo libreyolo==1.6.0 mss safetensors
    .venv/bin/python benchmarks/permissive_candidates.py yolox-t --minutes 60 --json benchmarks/results/permissive.json

Candidates (LibreYOLO 1.6.0, MIT; its NOTICE files name each family's upstream): ``yolox-n`` / ``yolox-t``
(Megvii YOLOX, Apache-2.0), ``yolo9-t`` (MultimediaTechLab/YOLO, the authors' MIT re-release, not the GPL
WongKinYiu repositories). LibreYOLO pulls ``opencv-python`` (not headless) and ``requests``: installed here with
``--no-deps`` into a folder of its own, beside EdgeVision's own headless OpenCV (or use the ``libreyolo`` extra).

``tv-fcos`` / ``tv-retinanet`` / ``tv-frcnn``: torchvision's FCOS, RetinaNet and Faster R-CNN on a MobileNetV3-Large
FPN (BSD-3-Clause), every weight random (BatchNorm trained, not frozen). torchvision ships models, not a recipe:
they train here in a plain loop (SGD with Nesterov momentum, ``--lr`` after a one-epoch warm-up then cosine to 1%,
batch 16, horizontal flips, gradient norm clipped at 10, images resized to ``--imgsz``), and the last epoch's
weights are scored.

NEU-DET is for academic research (Song & Yan 2013; He et al. 2020); it is never copied into the repo.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

CANDIDATES: dict[str, dict[str, str]] = {
    "yolox-n": {"cls": "LibreYOLOX", "size": "n", "upstream": "Megvii-BaseDetection/YOLOX", "licence": "Apache-2.0"},
    "yolox-t": {"cls": "LibreYOLOX", "size": "t", "upstream": "Megvii-BaseDetection/YOLOX", "licence": "Apache-2.0"},
    "yolo9-t": {"cls": "LibreYOLO9", "size": "t", "upstream": "MultimediaTechLab/YOLO (authors' MIT re-release)",
                "licence": "MIT"},
    # torchvision's detectors on a MobileNetV3-Large FPN, no pretrained weights anywhere (BSD-3-Clause)
    "tv-fcos": {"cls": "torchvision", "size": "fcos", "upstream": "pytorch/vision", "licence": "BSD-3-Clause"},
    "tv-retinanet": {"cls": "torchvision", "size": "retinanet", "upstream": "pytorch/vision", "licence": "BSD-3-Clause"},
    "tv-frcnn": {"cls": "torchvision", "size": "frcnn", "upstream": "pytorch/vision", "licence": "BSD-3-Clause"},
}

_TV_CHILD = r'''
import json, math, random, sys, time
from pathlib import Path
import numpy as np
import torch
from torch import nn
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
torch.manual_seed(spec["seed"]); random.seed(spec["seed"]); np.random.seed(spec["seed"])
import cv2, torchvision
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection import FCOS, RetinaNet, fasterrcnn_mobilenet_v3_large_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from edgevision.convert import read_dataset
from edgevision.core.dataset import ImageRecord
from edgevision.evaluate import evaluate

ds = read_dataset(Path(spec["dataset"]), "yolo").dataset
train, val = ds.split("train"), ds.split("val")
nc, size, kind = len(ds.labels.names), spec["imgsz"], spec["size"]
common = dict(min_size=size, max_size=size, detections_per_img=100)
if kind == "frcnn":  # torchvision's own builder: BatchNorm (not frozen) when nothing is pretrained
    model = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=nc + 1,
                                              box_score_thresh=0.001, **common)
else:
    trunk = mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d)
    backbone = _mobilenet_extractor(trunk, True, 6, extra_blocks=LastLevelP6P7(256, 256), norm_layer=nn.BatchNorm2d)
    levels = 4  # the extractor's two stages + P6, P7
    if kind == "fcos":
        anchors = AnchorGenerator(tuple((8 * 2 ** i,) for i in range(levels)), ((1.0,),) * levels)
        model = FCOS(backbone, nc + 1, anchor_generator=anchors, score_thresh=0.001, **common)
    else:
        anchors = AnchorGenerator(tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in (16, 32, 64, 128)),
                                  ((0.5, 1.0, 2.0),) * levels)
        model = RetinaNet(backbone, nc + 1, anchor_generator=anchors, score_thresh=0.001, **common)
params = sum(p.numel() for p in model.parameters())

def load(r, flip):
    img = cv2.cvtColor(cv2.imread(str(r.path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    boxes = np.asarray(r.boxes, np.float32).reshape(-1, 4).copy()
    if flip:
        img = img[:, ::-1]
        boxes[:, [0, 2]] = img.shape[1] - boxes[:, [2, 0]]
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255
    return t, {"boxes": torch.from_numpy(boxes), "labels": torch.as_tensor(np.asarray(r.class_ids) + 1, dtype=torch.int64)}

steps_per_epoch = math.ceil(len(train) / spec["batch"])
total = steps_per_epoch * spec["epochs"]
warm = min(steps_per_epoch, total)
opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=spec["lr"], momentum=0.9,
                      weight_decay=1e-4, nesterov=True)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: (k + 1) / warm if k < warm
                                           else 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (k - warm) / max(1, total - warm))))
curve, t0 = [], time.time()
for epoch in range(spec["epochs"]):
    model.train()
    order = list(range(len(train)))
    random.shuffle(order)
    losses = []
    for i in range(0, len(order), spec["batch"]):
        batch = [load(train[j], random.random() < 0.5) for j in order[i:i + spec["batch"]]]
        loss = sum(model([b[0] for b in batch], [b[1] for b in batch]).values())
        opt.zero_grad()
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
        sched.step()
        losses.append(float(loss))
    curve.append({"epoch": epoch + 1, "time_s": round(time.time() - t0, 1), "loss": round(float(np.mean(losses)), 4)})
    print(f"epoch {epoch + 1}/{spec['epochs']}: loss {curve[-1]['loss']} ({curve[-1]['time_s']} s)", file=sys.stderr,
          flush=True)
wall = time.time() - t0
model.eval()
preds = []
with torch.no_grad():
    for r in val:
        out = model([load(r, False)[0]])[0]
        preds.append(ImageRecord(name=r.name, size_hw=r.size_hw, path=r.path, split=r.split,
                                 boxes=out["boxes"].numpy().astype(np.float64).reshape(-1, 4),
                                 class_ids=(out["labels"].numpy() - 1).astype(np.int64),
                                 scores=out["scores"].numpy().astype(np.float32)))
c = evaluate(val, preds, ds.labels, conf=0.25, max_dets=100).coco
print("EDGEVISION-RESULT " + json.dumps({
    "params": params, "wall_s": wall, "curve": curve,
    "result": {"map50": c.map50, "map50_95": c.map50_95, "images": len(val),
               "per_class_ap50": {k: v["ap50"] for k, v in c.per_class.items()}}}))
'''

_CHILD = r'''
import json, os, sys, time
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
import libreyolo
cls = getattr(libreyolo, spec["cls"])
model = cls(None, size=spec["size"], nb_classes=spec["nc"], device="cpu")
params = sum(p.numel() for p in model.model.parameters())
t0 = time.time()
res = model.train(spec["data"], epochs=spec["epochs"], batch=spec["batch"], imgsz=spec["imgsz"], device="cpu",
                  workers=spec["workers"], seed=spec["seed"], project=spec["project"], name=spec["name"],
                  exist_ok=True, pretrained=False, amp=False)
out = {"params": params, "wall_s": time.time() - t0,
       "result": {k: v for k, v in res.items() if isinstance(v, (int, float, str)) or v is None}}
print("EDGEVISION-RESULT " + json.dumps(out))
'''

_SCORE = r'''
import json, sys
from pathlib import Path
import numpy as np
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from libreyolo import LibreYOLO
from edgevision.convert import read_dataset
from edgevision.core.dataset import ImageRecord
from edgevision.evaluate import evaluate
ds = read_dataset(Path(spec["dataset"]), "yolo").dataset
gt = ds.split("val")
model = LibreYOLO(spec["weights"], device="cpu")
names = [model.names[i] for i in range(len(model.names))]
assert names == list(ds.labels.names), (names, ds.labels.names)
preds = []
for r in gt:
    res = model.predict(str(r.path), conf=0.001, imgsz=spec["imgsz"], max_det=100)
    res = res[0] if isinstance(res, list) else res
    b = res.boxes
    preds.append(ImageRecord(name=r.name, size_hw=r.size_hw, path=r.path, split=r.split,
                             boxes=b.xyxy.cpu().numpy().astype(np.float64).reshape(-1, 4),
                             class_ids=b.cls.cpu().numpy().astype(np.int64).reshape(-1),
                             scores=b.conf.cpu().numpy().astype(np.float32).reshape(-1)))
rep = evaluate(gt, preds, ds.labels, conf=0.25, max_dets=100)
c = rep.coco
print("EDGEVISION-RESULT " + json.dumps({"map50": c.map50, "map50_95": c.map50_95, "images": len(gt),
      "per_class_ap50": {k: v["ap50"] for k, v in c.per_class.items()}}))
'''


def _run_child(code: str, spec: dict[str, Any], block: Path, pkgs: Path | None, log: Path) -> dict[str, Any]:
    """``code`` in a fresh process with the network blocked (attempts logged to ``block/netlog.txt``)."""
    from tests.helpers import blocked_env

    env = blocked_env(block, None, *([pkgs] if pkgs else []), REPO)
    env["OMP_NUM_THREADS"] = str(spec["threads"])
    with log.open("a", encoding="utf-8") as f:
        p = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, stdout=subprocess.PIPE,
                           stderr=f, text=True, check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("EDGEVISION-RESULT ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"child failed (exit {p.returncode}); see {log}")
    return dict(json.loads(lines[-1].split(" ", 1)[1]))


def _curve(run: Path) -> list[dict[str, Any]]:
    rows = []
    f = run / "metrics.jsonl"
    for line in f.read_text().splitlines() if f.is_file() else []:
        d = json.loads(line)
        rows.append({"epoch": d.get("epoch"), "time_s": round(float(d.get("time", 0.0)), 1),
                     "map50": d.get("metrics/mAP50"), "map50_95": d.get("metrics/mAP50-95"),
                     "loss": d.get("train/loss")})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidate", choices=sorted(CANDIDATES))
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--epochs", default="auto", help="'auto': fitted to --minutes from a one-epoch calibration")
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.02, help="torchvision candidates: SGD peak learning rate "
                    "(1 warm-up epoch, cosine to 1%%)")
    ap.add_argument("--pkgs", type=Path, default=Path.home() / ".cache" / "edgevision" / "libreyolo",
                    help="folder LibreYOLO was installed into with pip --target (see the module doc)")
    ap.add_argument("--json", type=Path, default=None, help="append the result to this JSON list")
    args = ap.parse_args()

    from neu_det_train import _neu_source, split_cache

    from edgevision.core.io import edgevision_home

    src = _neu_source()
    if not (src / "ANNOTATIONS").is_dir():
        print(f"NEU-DET not found at {src} (set EDGEVISION_SHARED); nothing to do", file=sys.stderr)
        return 2
    pkgs = args.pkgs if args.pkgs.is_dir() else None
    data = split_cache(src, edgevision_home(), args.seed)
    cand = CANDIDATES[args.candidate]
    work = edgevision_home() / "benchmarks" / "permissive" / f"{args.candidate}-{args.imgsz}-{args.minutes:g}m"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "train.log"
    base = {"cls": cand["cls"], "size": cand["size"], "nc": 6, "data": str(data / "data.yaml"),
            "batch": args.batch, "imgsz": args.imgsz, "threads": args.threads, "workers": args.workers,
            "seed": args.seed, "project": str(work), "dataset": str(data), "lr": args.lr}
    tv = cand["cls"] == "torchvision"
    child = _TV_CHILD if tv else _CHILD
    t_start = time.time()
    calib_s = 0.0
    if args.epochs == "auto":
        t = time.time()
        _run_child(child, {**base, "epochs": 1, "name": "calibration"}, work / "block-calib", pkgs, log)
        calib_s = time.time() - t
        epochs = max(1, math.floor((args.minutes * 60 - calib_s) / calib_s))
    else:
        epochs = int(args.epochs)
    print(f"{args.candidate}: {epochs} epoch(s) (one took {calib_s:.0f} s)", file=sys.stderr)
    trained = _run_child(child, {**base, "epochs": epochs, "name": "run"}, work / "block-run", pkgs, log)
    run = work / "run"
    if tv:  # trained and scored in one process (the last epoch's weights; no checkpoint to hand over)
        scored, curve = trained["result"], trained["curve"]
    else:
        scored = _run_child(_SCORE, {"weights": str(run / "weights" / "best.pt"), "dataset": str(data),
                                     "imgsz": args.imgsz, "threads": args.threads}, work / "block-score", pkgs, log)
        curve = _curve(run)
    attempts = [ln for b in ("block-calib", "block-run", "block-score")
                for ln in ((work / b / "netlog.txt").read_text().splitlines() if (work / b / "netlog.txt").is_file()
                           else [])]
    result = {
        "candidate": args.candidate, "library": "torchvision 0.29.1 (BSD-3-Clause)" if tv else "LibreYOLO 1.6.0 (MIT)",
        "upstream": cand["upstream"],
        "architecture_licence": cand["licence"], "params": trained["params"], "imgsz": args.imgsz,
        "batch": args.batch, "threads": args.threads, "budget_min": args.minutes, "epochs": epochs,
        "calibration_epoch_s": round(calib_s, 1), "train_wall_s": round(trained["wall_s"], 1),
        "total_wall_s": round(time.time() - t_start, 1),
        "train_images_per_s": round(1440 * epochs / trained["wall_s"], 2),
        "edgevision_coco": scored, "library_result": None if tv else trained["result"], "curve": curve,
        "network_attempts": attempts, "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))
    if args.json is not None:
        prev = json.loads(args.json.read_text()) if args.json.is_file() else []
        args.json.write_text(json.dumps([*prev, result], indent=1) + "\n")
    return 0 if not attempts else 1


if __name__ == "__main__":
    raise SystemExit(main())
