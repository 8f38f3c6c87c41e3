"""Issue 24: the edge-GPU deployment path, measured on a real NVIDIA GPU in one short call.

Two halves, so that GPU time goes to measuring, not setting up:

``prepare DIR`` (on any CPU box with the train extra, a few minutes): a 120-image sample (320 px, split), a nano
YOLO trained on it for a few epochs, and its exports: FP32 at 320 and 640 px, FP16 (``--half``) at 640, INT8 for
``--target tensorrt`` and for this CPU at 640; ``manifest.json`` lists them with their sha256. About 40 MB:
small enough to travel with the working tree to the GPU machine.

``run DIR OUT`` (on the GPU machine, onnxruntime-gpu importable, EdgeVision on PYTHONPATH): every step has a
deadline inside ``--budget-s`` and writes what it measured at once (``OUT/results.json``, ``OUT/results.md``),
so a run cut short still returns its numbers:

1. environment: the card, driver, onnxruntime and its providers;
2. parity: each model on each requested provider against the CPU FP32 run of the same export on the val
   images (boxes paired at IoU >= 0.99, scores within 1e-3 for FP32; FP16 and INT8 within their stated
   tolerance), and the provider the session really used (a provider that fell back is reported, never silent);
3. TensorRT: the engine's first build and a second start from the on-disk engine cache, timed;
4. ``edgevision bench`` of FP32 / FP16 / INT8 on ``--providers`` at batch 1 and 8 (latency p50 / p99,
   throughput, the accuracy each keeps);
5. ``edgevision reliability --providers ...`` under a gate without accuracy limits (soak, determinism, bad
   input, concurrency);
6. ``edgevision serve --providers ...`` under a closed-loop load of ``--clients`` for ``--serve-seconds``:
   answers, errors (there must be none) and latency percentiles.

    .venv/bin/python benchmarks/gpu_deploy_check.py prepare gpu-check          # here, once
    bash benchmarks/gpu_deploy_check.sh gpu-check "$OUT"                       # there (see that script)

``run --providers cpu`` runs every step on the CPU: how the script itself is tested here.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _cli(*args: Any, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """An EdgeVision command; one that runs past ``timeout`` is stopped and reported as exit 124 (the step's
    deadline), not raised: the next steps still run."""
    cmd = [PY, "-m", "edgevision", *map(str, args)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, timeout), env=env, check=False)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(cmd, 124, out, f"stopped at the step's deadline ({timeout:.0f} s)")


def _sha(path: Path) -> str:
    from edgevision.core.io import sha256_file

    return sha256_file(path)


# ----------------------------------------------------------------------------------------------------- prepare


def prepare(root: Path, epochs: int) -> int:
    """Build the sample, the trained model and its exports into ``root`` (see the module doc)."""
    root.mkdir(parents=True, exist_ok=True)
    sample, run = root / "sample", root.with_name(root.name + "-run")  # the run stays here: only DIR travels
    steps: list[tuple[str, list[Any]]] = [
        ("synth", ["synth", sample, "--n", "120", "--imgsz", "320"]),
        ("train", ["train", "--data", sample, "--model", "yolov8n", "--out", run, "--epochs", epochs,
                   "--imgsz", "320", "--batch", "8", "--overwrite"]),
        ("export fp32 320", ["export", run, "--out", root / "fp32-320.onnx", "--imgsz", "320", "--overwrite"]),
        ("export fp32 640", ["export", run, "--out", root / "fp32-640.onnx", "--imgsz", "640", "--overwrite"]),
        ("export fp16 640", ["export", run, "--out", root / "fp16-640.onnx", "--imgsz", "640", "--half",
                             "--overwrite"]),
        ("int8 tensorrt", ["quantize", root / "fp32-640.onnx", "--calib", sample, "--out",
                           root / "int8-trt-640.onnx", "--target", "tensorrt", "--no-eval", "--overwrite"]),
        ("int8 cpu", ["quantize", root / "fp32-640.onnx", "--calib", sample, "--out", root / "int8-cpu-640.onnx",
                      "--no-eval", "--overwrite"]),
    ]
    done = {"synth": sample / "data.yaml", "train": run / "weights" / "best.pt"}
    for what, args in steps:
        made = done.get(what) or (args[args.index("--out") + 1] if "--out" in args and what != "train" else None)
        if made is not None and Path(made).exists():  # built by an earlier, interrupted prepare
            continue
        t = time.time()
        r = _cli(*args, timeout=3600)
        print(f"{what}: exit {r.returncode} in {time.time() - t:.0f} s", file=sys.stderr)
        if r.returncode != 0:
            print(r.stdout[-2000:] + r.stderr[-2000:], file=sys.stderr)
            return 1
    models = {p.stem: {"file": p.name, "sha256": _sha(p), "bytes": p.stat().st_size} for p in sorted(root.glob("*.onnx"))}
    (root / "manifest.json").write_text(json.dumps({"models": models, "sample": "sample"}, indent=1) + "\n")
    print(json.dumps(models, indent=1))
    return 0


# --------------------------------------------------------------------------------------------------------- run


class Results:
    """What the run measured so far, written after every step (a cut-short run keeps its numbers)."""

    def __init__(self, out: Path) -> None:
        self.out, self.doc = out, {"steps": {}}
        out.mkdir(parents=True, exist_ok=True)

    def put(self, step: str, value: Any) -> None:
        self.doc["steps"][step] = value
        (self.out / "results.json").write_text(json.dumps(self.doc, indent=1, default=str) + "\n")
        (self.out / "results.md").write_text(_markdown(self.doc))


def _markdown(doc: dict[str, Any]) -> str:
    lines = ["# GPU deployment check", ""]
    env = doc["steps"].get("environment") or {}
    lines += [f"- {k}: {v}" for k, v in env.items()] + [""]
    par = doc["steps"].get("parity") or []
    if par:
        lines += ["| model | provider | used | paired | max score diff | fallback |", "|---|---|---|---:|---:|---|"]
        lines += [f"| {p['model']} | {p['provider']} | {', '.join(p.get('used') or [])} | {p.get('paired', '-')} | "
                  f"{p.get('max_score_diff', '-')} | {p.get('fallback') or ''} |" for p in par]
        lines.append("")
    for step in ("tensorrt_engine", "bench", "reliability", "serve"):
        if step in doc["steps"]:
            lines += [f"## {step}", "", "```", json.dumps(doc["steps"][step], indent=1, default=str)[:4000], "```", ""]
    return "\n".join(lines) + "\n"


def _environment(providers: list[str]) -> dict[str, Any]:
    import onnxruntime as ort

    env: dict[str, Any] = {"onnxruntime": ort.__version__, "available_providers": ort.get_available_providers(),
                           "requested": providers, "host": socket.gethostname()}
    try:
        env["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                     "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        env["gpu"] = "no nvidia-smi"
    return env


def _pair(ref: Any, got: Any) -> tuple[str, float | None]:
    """Boxes of ``got`` paired with ``ref``'s at IoU >= 0.99 (same class), and the largest score difference."""
    import numpy as np

    used: set[int] = set()
    paired, diff = 0, 0.0
    for b, s, c in zip(ref.xyxy, ref.scores, ref.class_ids):
        best, best_j = 0.0, -1
        for j, (b2, c2) in enumerate(zip(got.xyxy, got.class_ids)):
            if j in used or c2 != c:
                continue
            ix = max(0.0, min(b[2], b2[2]) - max(b[0], b2[0]))
            iy = max(0.0, min(b[3], b2[3]) - max(b[1], b2[1]))
            inter = ix * iy
            union = (b[2] - b[0]) * (b[3] - b[1]) + (b2[2] - b2[0]) * (b2[3] - b2[1]) - inter
            iou = inter / union if union > 0 else 0.0
            if iou > best:
                best, best_j = iou, j
        if best >= 0.99:
            used.add(best_j)
            paired += 1
            diff = max(diff, float(abs(float(s) - float(got.scores[best_j]))))
    return f"{paired}/{len(ref.scores)}", round(diff, 6) if paired and np.isfinite(diff) else None


def _parity(root: Path, manifest: dict[str, Any], providers: list[str], images: list[Path],
            deadline: float) -> list[dict[str, Any]]:
    from edgevision.runtime import Detector

    out = []
    refs: dict[str, list[Any]] = {}
    for key in manifest["models"]:
        if time.time() > deadline:
            break
        path = root / manifest["models"][key]["file"]
        cpu = refs.setdefault(key, [Detector(path, providers="cpu")(p, conf=0.01) for p in images])
        for prov in providers:
            if time.time() > deadline:
                break
            t = time.time()
            try:
                det = Detector(path, providers=[prov, "cpu"] if prov != "cpu" else "cpu")
            except Exception as e:  # noqa: BLE001  a provider this onnxruntime lacks: one line, next one
                out.append({"model": key, "provider": prov, "error": " ".join(str(e).split())[:200]})
                continue
            load_s = time.time() - t
            got = [det(p, conf=0.01) for p in images]
            pairs = [_pair(r, g) for r, g in zip(cpu, got)]
            n_ref = sum(len(r.scores) for r in cpu)
            n_paired = sum(int(p[0].split("/")[0]) for p in pairs)
            diffs = [d for _, d in pairs if d is not None]
            out.append({"model": key, "provider": prov, "used": det.providers, "fallback": det.fallback,
                        "load_s": round(load_s, 2), "paired": f"{n_paired}/{n_ref}",
                        "max_score_diff": max(diffs) if diffs else None})
    return out


def _tensorrt_engine(root: Path, manifest: dict[str, Any], images: list[Path]) -> dict[str, Any]:
    """First build of each model's TensorRT engine, then a second start from the on-disk cache."""
    import onnxruntime as ort

    from edgevision.runtime import Detector

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return {"skipped": "this onnxruntime has no TensorrtExecutionProvider"}
    out = {}
    for key, m in manifest["models"].items():
        times = []
        for _ in range(2):
            t = time.time()
            det = Detector(root / m["file"], providers=["tensorrt", "cuda", "cpu"])
            det(images[0])
            times.append(round(time.time() - t, 2))
        out[key] = {"first_build_s": times[0], "cached_start_s": times[1], "used": det.providers,
                    "fallback": det.fallback}
    return out


def _serve_load(model: Path, providers: str, images: list[Path], clients: int, seconds: float) -> dict[str, Any]:
    """``edgevision serve`` on a free port, ``clients`` closed-loop clients for ``seconds``: answers, errors,
    latency percentiles."""
    import http.client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([PY, "-m", "edgevision", "serve", str(model), "--port", str(port), "--providers",
                             providers, "--no-access-log"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            return {"error": "the service did not become ready within 120 s"}
        bodies = [p.read_bytes() for p in images]
        lat: list[float] = []
        errors: list[str] = []
        stop = time.time() + seconds

        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            k = i
            while time.time() < stop:
                body = bodies[k % len(bodies)]
                k += 1
                t = time.perf_counter()
                try:
                    conn.request("POST", "/v1/detect", body=body, headers={"Content-Type": "image/png"})
                    r = conn.getresponse()
                    r.read()
                    if r.status != 200:
                        errors.append(str(r.status))
                    else:
                        lat.append((time.perf_counter() - t) * 1e3)
                except OSError as e:
                    errors.append(e.__class__.__name__)
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lat.sort()

        def q(f: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(f * len(lat)))], 2) if lat else None

        return {"answers": len(lat), "errors": len(errors), "first_errors": errors[:5], "images_per_s":
                round(len(lat) / seconds, 1), "p50_ms": q(0.5), "p99_ms": q(0.99), "clients": clients}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(root: Path, out: Path, providers: list[str], budget_s: float, clients: int, serve_seconds: float) -> int:
    start = time.time()

    def left(share: float) -> float:
        """A deadline: ``share`` of what is left of the budget."""
        return time.time() + max(5.0, (budget_s - (time.time() - start)) * share)

    manifest = json.loads((root / "manifest.json").read_text())
    res = Results(out)
    res.put("environment", _environment(providers))
    sample = root / manifest["sample"]
    images = sorted((sample / "images" / "val").glob("*.*"))[:12]
    res.put("parity", _parity(root, manifest, providers, images, left(0.25)))
    res.put("tensorrt_engine", _tensorrt_engine(root, manifest, images))
    prov = ",".join(providers)
    models = [root / m["file"] for m in manifest["models"].values()]
    t = time.time()
    r = _cli("bench", *models, "--data", sample, "--out", out / "bench", "--providers", prov, "--batch", "1,8",
             "--samples", "200", "--warmup", "10", "--overwrite", timeout=left(0.4) - time.time())
    res.put("bench", {"exit": r.returncode, "seconds": round(time.time() - t, 1), "stderr": r.stderr[-600:],
                      "report": json.loads((out / "bench" / "bench.json").read_text()) if r.returncode == 0 else None})
    gate = out / "gate.yaml"
    gate.write_text("name: gpu-check\ncrashes_max: 0\ndeterminism: true\n")
    fp32 = root / manifest["models"]["fp32-640"]["file"]
    t = time.time()
    r = _cli("reliability", fp32, "--data", sample, "--out", out / "reliability", "--gate", gate, "--providers", prov,
             "--suite", "soak,determinism,bad-input,concurrency", "--soak-seconds", "20", "--latency-samples", "662",
             "--overwrite", timeout=left(0.5) - time.time())
    res.put("reliability", {"exit": r.returncode, "seconds": round(time.time() - t, 1), "stdout": r.stdout[-1500:],
                            "stderr": r.stderr[-600:]})
    res.put("serve", _serve_load(fp32, prov, images, clients, serve_seconds))
    res.put("wall_s", round(time.time() - start, 1))
    print((out / "results.md").read_text())
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("dir", type=Path)
    p.add_argument("--epochs", type=int, default=8)
    r = sub.add_parser("run")
    r.add_argument("dir", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--providers", default="tensorrt,cuda")
    r.add_argument("--budget-s", type=float, default=420.0)
    r.add_argument("--clients", type=int, default=8)
    r.add_argument("--serve-seconds", type=float, default=20.0)
    args = ap.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.cmd == "prepare":
        return prepare(args.dir, args.epochs)
    return run(args.dir, args.out, [p.strip() for p in args.providers.split(",") if p.strip()], args.budget_s,
               args.clients, args.serve_seconds)


if __name__ == "__main__":
    raise SystemExit(main())
