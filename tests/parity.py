"""Compare EdgeVision's runtime with Ultralytics' own ONNX predict on the same file and images.

Ultralytics runs in a subprocess (it must never be imported in the pytest process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from edgevision.runtime import Detector


def ultralytics_onnx_predict(model: Path, images: list[Path], *, conf: float, iou: float, max_det: int,
                             imgsz: int) -> list[dict[str, np.ndarray]]:
    """``YOLO(model).predict`` on each image file: ``[{"xyxy", "cls", "conf"}]`` in input order."""
    code = textwrap.dedent("""
        import json, sys
        from edgevision.train.offline import prepare_ultralytics
        prepare_ultralytics(threads=None, verbose=False)
        from ultralytics import YOLO
        spec = json.loads(sys.argv[1])
        model = YOLO(spec["model"], task="detect")
        out = []
        for p in spec["images"]:
            r = model.predict(p, conf=spec["conf"], iou=spec["iou"], max_det=spec["max_det"], imgsz=spec["imgsz"],
                              device="cpu", verbose=False)[0]
            out.append({"xyxy": r.boxes.xyxy.numpy().tolist(), "cls": r.boxes.cls.numpy().tolist(),
                        "conf": r.boxes.conf.numpy().tolist()})
        print("RESULT" + json.dumps(out))
    """)
    spec = {"model": str(model), "images": [str(p) for p in images], "conf": conf, "iou": iou, "max_det": max_det,
            "imgsz": imgsz}
    r = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT"))
    return [{k: np.asarray(v, np.float64).reshape(-1, 4) if k == "xyxy" else np.asarray(v, np.float64)
             for k, v in d.items()} for d in json.loads(line[len("RESULT"):])]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def pair_rate(ours: list[dict[str, np.ndarray]], theirs: list[dict[str, np.ndarray]], min_iou: float = 0.99
              ) -> tuple[float, int, int]:
    """Greedy one-to-one pairing (same class, IoU >= ``min_iou``), by their score order.

    Returns:
        (paired / max(len(ours), len(theirs)) over all images, boxes of ours, boxes of theirs).
    """
    paired = n_ours = n_theirs = 0
    for o, t in zip(ours, theirs, strict=True):
        n_ours += len(o["conf"])
        n_theirs += len(t["conf"])
        if not len(o["conf"]) or not len(t["conf"]):
            continue
        m = iou_matrix(t["xyxy"], o["xyxy"])
        m[t["cls"][:, None] != o["cls"][None, :]] = 0
        used = np.zeros(len(o["conf"]), bool)
        for i in np.argsort(-t["conf"], kind="stable"):
            cand = np.where(~used & (m[i] >= min_iou))[0]
            if len(cand):
                used[cand[np.argmax(m[i, cand])]] = True
                paired += 1
    denom = max(n_ours, n_theirs)
    return (paired / denom if denom else 1.0), n_ours, n_theirs


def edgevision_predict(model: Path, images: list[Path], *, conf: float, iou: float, max_det: int
                       ) -> list[dict[str, np.ndarray]]:
    det = Detector(model, providers=["CPUExecutionProvider"])
    out = []
    for p in images:
        d = det(p, conf=conf, iou=iou, max_det=max_det)
        out.append({"xyxy": d.xyxy.astype(np.float64), "cls": d.class_ids.astype(np.float64),
                    "conf": d.scores.astype(np.float64)})
    return out
