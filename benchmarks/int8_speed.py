"""How much faster is EdgeVision's INT8 model than the FP32 export and than Ultralytics' own INT8 ONNX export?

Same model (the nano YOLO trained on NEU-DET by ``benchmarks/neu_det_train.py``), same held-out images (the
360-image val split that model was trained without), same runtime, same thread count. Models, per size
(``--sizes``, default 320 and 640):

  * ``fp32``: ``edgevision export RUN --imgsz N`` (cached, made again when absent; see ``runtime_overhead.py``);
  * ``int8-x86-avx2`` / ``int8-x86-vnni``: ``edgevision.quantize.quantize_model(fp32, calib, out, target=...,
    n=200)`` (minmax; calibrated on 200 images of the model's own train split);
  * ``ultralytics-int8``: ``YOLO(best.pt).export(format="onnx", int8=True, imgsz=N, data=data.yaml)`` on a
    temporary copy of ``best.pt``, offline: ``prepare_ultralytics``, sockets refused in the child, and the
    child in an empty network namespace when ``unshare -n`` works. Ultralytics 8.4 runs onnxruntime's
    ``quantize_static`` with its defaults (QDQ, signed int8 activations,
    per-tensor int8 weights, minmax) on every image of the val split, keeping all but Conv / Gemm / MatMul
    in float. The graph's outputs are the same as our FP32 export's, so a copy of it gets our FP32 metadata
    (precision ``int8``) and runs through the same `Detector`; where the `Detector` refuses it, bare
    ``session.run`` is timed alone and the table says so.

Timing: each model in its own fresh process (``Detector(path, threads=--threads)``), ``--warmup`` calls, then
``--images`` val images ``--rounds`` times; per image, the whole pipeline (``det(path)``: decode, preprocess,
run, decode + NMS at conf 0.25) and ``det.run(tensor)`` alone alternate (order swapped every other image).
``--repeats`` processes per model, interleaved (fp32, int8..., ultralytics, fp32, ...), so drifts in machine
load hit all alike; the figure is the median over processes of per-process medians (p90 alongside), and the
speed ratios are given both from those medians and as the median of per-repeat ratios (neighbours in time).

Correctness: on ``--check-images`` val images, the Pearson correlation of every class score (all anchors)
with FP32's, the largest score difference, and how many FP32 detections (conf 0.25) each INT8 model finds
again (same class, IoU >= 0.5).

Calibration cost: ``quantize_model`` at ``--calib-size`` for each ``--calib-methods`` entry with
``--calib-n`` images, in a child process: wall time and peak RSS (``ru_maxrss`` from ``os.wait4``; the parent
stays small, so its own peak does not carry over). A child over ``--mem-cap-gb`` or ``--calib-timeout``
minutes is stopped and the method tried again with half the images, down to 25; what it managed is recorded.

Built files are cached under ``$EDGEVISION_HOME/benchmarks/onnx/`` with their build cost in a
``.build.json`` beside them; ``--rebuild`` builds them again. Run by hand (on 2 shared, loaded cores: 30 minutes
when nothing is built, of which 20 are the builds and calibration costs; 9 minutes when everything is)::

    .venv/bin/python benchmarks/int8_speed.py --json benchmarks/results/int8_speed.json
    .venv/bin/python benchmarks/int8_speed.py --quick          # 320 px, few images, no Ultralytics export

Issue 6's targets: INT8 at least 2x faster than the FP32 ONNX and 2.5x faster than Ultralytics' INT8 ONNX.
NEU-DET is for academic research (Song & Yan 2013); it is never copied into the repo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_overhead import RUN_NAME, _export, _home, cpu_description  # noqa: E402

SPLIT = "neu-det-split80-s0"
"""The model's own train / val split, written by ``neu_det_train.py`` (YOLO layout)."""
TARGETS = ("x86-avx2", "x86-vnni")
CALIB_METHODS = ("minmax", "entropy", "percentile")
CONF = 0.25


# --------------------------------------------------------------------------- children (one job, one process)


def child_time(path: str, fp32: str, images: list[str], threads: int, warmup: int, rounds: int,
               use_detector: bool = True) -> dict[str, Any]:
    """Time one model: the whole pipeline and ``session.run`` alone, alternating image by image.

    Args:
        path: the model; fp32: the FP32 export whose preprocessing feeds ``session.run`` when the model has no
            usable metadata; images: image files; threads: intra-op threads; warmup: untimed calls;
        rounds: passes over the images; use_detector: False: time bare ``session.run`` only.

    Returns:
        ``e2e_median_ms``, ``e2e_p90_ms`` (absent without the detector), ``run_median_ms``, ``run_p90_ms``, ``n``.
    """
    import numpy as np

    from edgevision.runtime import Detector

    if use_detector:
        det = Detector(path, threads=threads, providers=["CPUExecutionProvider"])
        tensors = [det.preprocess(p)[0] for p in images]

        def bare(i: int) -> None:
            det.run(tensors[i])

        def e2e(i: int) -> None:
            det(images[i], conf=CONF)
    else:
        import onnxruntime as ort

        from edgevision.runtime.providers import session_options

        pre = Detector(fp32, threads=1, providers=["CPUExecutionProvider"])
        tensors = [pre.preprocess(p)[0] for p in images]
        del pre
        sess = ort.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def bare(i: int) -> None:
            sess.run(None, {name: tensors[i]})

        e2e = None
    for i in range(warmup):
        (e2e or bare)(i % len(images))
    t_run: list[float] = []
    t_e2e: list[float] = []
    for r in range(rounds):
        for i in range(len(images)):
            order = ("run", "e2e") if (i + r) % 2 == 0 else ("e2e", "run")
            for what in order:
                if what == "e2e" and e2e is None:
                    continue
                t0 = time.perf_counter()
                (bare if what == "run" else e2e)(i)  # type: ignore[operator]
                (t_run if what == "run" else t_e2e).append((time.perf_counter() - t0) * 1000.0)
    out: dict[str, Any] = {"run_median_ms": float(np.median(t_run)), "run_p90_ms": float(np.percentile(t_run, 90)),
                           "n": len(t_run)}
    if t_e2e:
        out.update(e2e_median_ms=float(np.median(t_e2e)), e2e_p90_ms=float(np.percentile(t_e2e, 90)))
    return out


def _iou(a: Any, b: Any) -> Any:
    import numpy as np

    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def child_check(fp32: str, models: dict[str, str], images: list[str]) -> dict[str, Any]:
    """Agreement of each model with the FP32 export on ``images``.

    Returns:
        name -> ``score_corr`` (Pearson r of all class scores), ``score_max_abs_diff``, ``fp32_detections``,
        ``recovered`` (FP32 detections at conf 0.25 found again: same class, IoU >= 0.5), ``extra_detections``,
        ``detector`` ("ok" or why the `Detector` refused the file).
    """
    import numpy as np
    import onnxruntime as ort

    from edgevision.runtime import Detector
    from edgevision.runtime.providers import session_options

    ref = Detector(fp32, threads=2, providers=["CPUExecutionProvider"])
    nc = len(ref.names)
    tensors = [ref.preprocess(p)[0] for p in images]
    ref_scores = np.concatenate([ref.run(t)[0][0, 4:4 + nc].ravel() for t in tensors])
    ref_dets = [ref(p, conf=CONF) for p in images]
    res: dict[str, Any] = {}
    for name, path in models.items():
        row: dict[str, Any] = {}
        try:
            det: Detector | None = Detector(path, threads=2, providers=["CPUExecutionProvider"])
            row["detector"] = "ok"
        except Exception as e:  # the Detector's own one-line error
            det, row["detector"] = None, f"{e.__class__.__name__}: {e}"
        if det is not None:
            outs = [det.run(t)[0] for t in tensors]
        else:
            sess = ort.InferenceSession(path, session_options(2), providers=["CPUExecutionProvider"])
            iname = sess.get_inputs()[0].name
            outs = [sess.run(None, {iname: t})[0] for t in tensors]
        scores = np.concatenate([o[0, 4:4 + nc].ravel() for o in outs])
        row["score_corr"] = float(np.corrcoef(ref_scores, scores)[0, 1])
        row["score_max_abs_diff"] = float(np.max(np.abs(ref_scores - scores)))
        if det is not None:
            found = total = extra = 0
            for p, rd in zip(images, ref_dets):
                d = det(p, conf=CONF)
                total += len(rd)
                if len(rd) and len(d):
                    match = (_iou(rd.xyxy, d.xyxy) >= 0.5) & (rd.class_ids[:, None] == d.class_ids[None, :])
                    found += int(match.any(axis=1).sum())
                    extra += int((~match.any(axis=0)).sum())
                else:
                    extra += len(d)
            row.update(fp32_detections=total, recovered=found, extra_detections=extra)
        res[name] = row
    return res


def child_quantize(fp32: str, calib: str, out: str, target: str, method: str, n: int, recipe: str | None
                   ) -> dict[str, Any]:
    """``quantize_model`` once (the parent measures wall time and peak memory)."""
    from edgevision.quantize import quantize_model

    t0 = time.perf_counter()
    r = quantize_model(fp32, calib, out, target=target, method=method, n=n, recipe=recipe, overwrite=True)
    return {"quantize_s": time.perf_counter() - t0, "size_bytes": r.size_bytes, "n": len(r.calibration),
            "excluded_nodes": len(r.excluded), "warnings": r.warnings, "checks": r.checks}


def _block_sockets() -> list[str]:
    """Refuse every non-Unix socket connection and DNS lookup in this process; returns the log of attempts."""
    import socket

    attempts: list[str] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family != socket.AF_UNIX:
            attempts.append(f"connect {address}")
            raise OSError("network blocked by benchmarks/int8_speed.py")
        real_connect(self, address)

    def lookup(*args: Any, **kw: Any) -> Any:
        attempts.append(f"getaddrinfo {args[:2]}")
        raise socket.gaierror("network blocked by benchmarks/int8_speed.py")

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.getaddrinfo = lookup  # type: ignore[assignment]
    return attempts


def child_ultralytics(pt: str, imgsz: int, data: str, out: str, fp32: str, threads: int) -> dict[str, Any]:
    """Ultralytics' INT8 ONNX export of a temporary copy of ``pt``, offline; writes ``out`` (their file) and
    ``out`` with ``-ev`` before the suffix (the same graph with our FP32 export's metadata, precision int8)."""
    import onnx

    from edgevision.export.graph import set_metadata
    from edgevision.runtime.detector import read_metadata
    from edgevision.train.offline import prepare_ultralytics

    attempts = _block_sockets()
    prepare_ultralytics(threads=threads, verbose=False)
    import ultralytics
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix="ev-int8-ul-") as tmp:
        copy = Path(tmp) / "best.pt"
        shutil.copy2(pt, copy)
        t0 = time.perf_counter()
        f = YOLO(str(copy), task="detect").export(format="onnx", int8=True, imgsz=imgsz, data=data, device="cpu")
        wall = time.perf_counter() - t0
        written = sorted(p.name for p in Path(tmp).iterdir())
        shutil.copy2(f, out)
    model = onnx.load(out)
    meta = read_metadata(fp32)
    meta.precision = "int8"
    meta.quantization = {"by": f"ultralytics {ultralytics.__version__}", "format": "QDQ", "activations": "QInt8",
                         "weights": "QInt8", "per_channel": False, "reduce_range": False, "method": "minmax",
                         "split": "val"}
    set_metadata(model, meta.to_json())
    ev = Path(out).with_name(Path(out).stem + "-ev.onnx")
    onnx.save(model, str(ev))
    q = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    return {"export_s": wall, "file": Path(f).name, "written": written, "network_attempts": attempts,
            "ultralytics": ultralytics.__version__, "quantize_linear_nodes": q,
            "outputs": [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]}


def child_profile(path: str, fp32: str, image: str, threads: int, runs: int) -> dict[str, Any]:
    """Where ``session.run`` spends its time: onnxruntime's profiler, kernel time per op type (ms per run).

    Args:
        path: the model; fp32: the FP32 export (its preprocessing makes the input); image: one image file;
        threads: intra-op threads; runs: profiled runs (after 5 untimed ones).

    Returns:
        ``ms_per_run`` (sum of kernel times) and ``ops``: op type -> [ms per run, nodes], largest first.
    """
    import onnxruntime as ort

    from edgevision.runtime import Detector
    from edgevision.runtime.providers import session_options

    x = Detector(fp32, threads=1, providers=["CPUExecutionProvider"]).preprocess(image)[0]
    with tempfile.TemporaryDirectory(prefix="ev-int8-prof-") as tmp:
        so = session_options(threads)
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(5):
            sess.run(None, {name: x})
        so.enable_profiling, so.profile_file_prefix = True, str(Path(tmp) / "p")
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):  # the first run after loading is not counted
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_run: dict[str, list[float]] = {}
    node_runs: dict[str, int] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_run.setdefault(op, []).append(float(e["dur"]) / 1000.0)
            node_runs[op] = node_runs.get(op, 0) + 1
    total_runs = runs + 1
    ops = {op: [sum(v) / total_runs, node_runs[op] // total_runs] for op, v in per_run.items()}
    ops = dict(sorted(ops.items(), key=lambda kv: -kv[1][0]))
    return {"ms_per_run": sum(v[0] for v in ops.values()), "ops": ops}


CHILDREN = {"time": child_time, "check": child_check, "quantize": child_quantize, "ultralytics": child_ultralytics,
            "profile": child_profile}


# --------------------------------------------------------------------------- parent (stays small: stdlib only)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return 0.0


def spawn(kind: str, spec: dict[str, Any], *, timeout_s: float = 3600.0, mem_cap_mb: float | None = None,
          prefix: list[str] | None = None) -> dict[str, Any]:
    """Run one child job of this script in a fresh process.

    Args:
        kind: a key of `CHILDREN`; spec: its keyword arguments; timeout_s: kill it after this long;
        mem_cap_mb: kill it when its resident memory exceeds this; prefix: command before the interpreter
            (e.g. ``unshare -n``).

    Returns:
        ``ok``, ``result`` (the child's return value), ``wall_s``, ``peak_rss_mb`` (``ru_maxrss`` from
        ``os.wait4``), and ``error`` (the tail of its stderr, or why it was stopped) when not ok.
    """
    cmd = [*(prefix or []), sys.executable, str(Path(__file__).resolve()), "--child", json.dumps({kind: spec})]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        stopped = None
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout_s and stopped is None:
                stopped = f"stopped after {timeout_s / 60:.1f} min (limit)"
                p.kill()
            elif mem_cap_mb and stopped is None and _rss_mb(p.pid) > mem_cap_mb:
                stopped = f"stopped at {_rss_mb(p.pid) / 1024:.1f} GB resident (limit {mem_cap_mb / 1024:.0f} GB)"
                p.kill()
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    res: dict[str, Any] = {"ok": p.returncode == 0 and stopped is None, "wall_s": wall,
                           "peak_rss_mb": ru.ru_maxrss / 1024.0}
    if res["ok"]:
        res["result"] = json.loads(stdout.strip().splitlines()[-1])
    else:
        res["error"] = stopped or f"exit {p.returncode}: {stderr.strip()[-1500:]}"
    return res


def val_images(split: Path, n: int) -> list[str]:
    """``n`` images of the model's val split, evenly spaced in name order (all six classes)."""
    files = sorted((split / "images" / "val").glob("*.jpg"))
    if not files:
        sys.exit(f"{split / 'images' / 'val'}: no images; run benchmarks/neu_det_train.py first")
    step = max(1, len(files) // n)
    return [str(p) for p in files[::step][:n]]


def _cached(path: Path, rebuild: bool, build: Any) -> dict[str, Any]:
    """Reuse ``path`` and its ``.build.json`` unless ``rebuild``; else ``build()`` (a `spawn` result) and record it."""
    side = path.with_name(path.name + ".build.json")
    if path.is_file() and side.is_file() and not rebuild:
        info = json.loads(side.read_text())
        info["cached"] = True
        return info
    info = build()
    if info["ok"]:
        info["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        side.write_text(json.dumps(info, indent=2) + "\n")
    info["cached"] = False
    return info


def _unshare() -> list[str]:
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0
    except OSError:
        ok = False
    return ["unshare", "-n"] if ok else []


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="320,640")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=50, help="val images timed per process (x --rounds calls)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per model and size, interleaved")
    ap.add_argument("--check-images", type=int, default=30, help="val images for the agreement with FP32")
    ap.add_argument("--n", type=int, default=200, help="calibration images of the timed INT8 models")
    ap.add_argument("--calib", type=Path, default=None,
                    help="calibration dataset (default: the model's own split, $EDGEVISION_HOME/benchmarks/" + SPLIT + ")")
    ap.add_argument("--recipe", default=None, help="read --calib with this recipe (e.g. neu-det)")
    ap.add_argument("--calib-methods", default=",".join(CALIB_METHODS), help="'' skips the calibration cost")
    ap.add_argument("--calib-size", type=int, default=640)
    ap.add_argument("--calib-n", type=int, default=200)
    ap.add_argument("--calib-timeout", type=float, default=15.0, help="minutes per calibration child")
    ap.add_argument("--mem-cap-gb", type=float, default=10.0)
    ap.add_argument("--no-ultralytics", action="store_true")
    ap.add_argument("--rebuild", action="store_true", help="build cached INT8 files (and their costs) again")
    ap.add_argument("--quick", action="store_true",
                    help="320 px, 10 images, 1 process each, n=16, minmax only; Ultralytics only when cached")
    ap.add_argument("--profile-runs", type=int, default=20, help="runs under onnxruntime's profiler; 0: none")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        (kind, spec), = json.loads(args.child).items()
        print(json.dumps(CHILDREN[kind](**spec)))
        return 0
    if args.quick:
        args.sizes, args.images, args.rounds, args.warmup, args.repeats = "320", 10, 1, 3, 1
        args.check_images, args.n, args.calib_methods, args.calib_size, args.calib_n = 10, 16, "minmax", 320, 16
        args.profile_runs = min(args.profile_runs, 5)

    t_start = time.perf_counter()
    home = _home()
    run = home / "benchmarks" / RUN_NAME
    pt = run / "weights" / "best.pt"
    split = home / "benchmarks" / SPLIT
    if not pt.is_file() or not (split / "data.yaml").is_file():
        sys.exit(f"{pt} or {split / 'data.yaml'} missing: run benchmarks/neu_det_train.py first")
    calib = args.calib or split
    data = run / "data.yaml"  # points at the dataset cache Ultralytics trained on (its label caches already there)
    if not data.is_file() or "path:" in data.read_text() and not any(
            Path(line.split(":", 1)[1].strip()).is_dir() for line in data.read_text().splitlines()
            if line.startswith("path:")):
        data = split / "data.yaml"  # the same split, written by neu_det_train.py
    images = val_images(split, args.images)
    check_images = val_images(split, args.check_images)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    calib_methods = [m for m in args.calib_methods.split(",") if m]
    qdir = home / "benchmarks" / "onnx" / "int8"
    qdir.mkdir(parents=True, exist_ok=True)
    calib_tag = "split80" if args.calib is None else Path(args.calib).name
    prefix = _unshare()

    def qpath(size: int, target: str, method: str, n: int) -> Path:
        return qdir / f"{RUN_NAME}-{size}-{target}-{method}-n{n}-{calib_tag}.onnx"

    def quantize(fp32: Path, size: int, target: str, method: str, n: int) -> dict[str, Any]:
        out = qpath(size, target, method, n)
        spec = {"fp32": str(fp32), "calib": str(calib), "out": str(out), "target": target, "method": method,
                "n": n, "recipe": args.recipe}
        info = _cached(out, args.rebuild, lambda: spawn("quantize", spec, timeout_s=args.calib_timeout * 60,
                                                        mem_cap_mb=args.mem_cap_gb * 1024))
        info.update(path=str(out), target=target, method=method, n_requested=n)
        return info

    fp32s = {size: _export(run, size) for size in sorted(set(sizes) | ({args.calib_size} if calib_methods else set()))}
    builds: dict[str, Any] = {}
    models: dict[int, dict[str, str]] = {}
    for size in sizes:
        models[size] = {"fp32": str(fp32s[size])}
        for target in TARGETS:
            info = quantize(fp32s[size], size, target, "minmax", args.n)
            builds[f"{size}/int8-{target}"] = info
            print(f"  build {size}px int8-{target}: " + (f"{info['wall_s']:.0f} s, {info['peak_rss_mb']:.0f} MB"
                  + (" (cached)" if info["cached"] else "") if info["ok"] else info["error"]), flush=True)
            if info["ok"]:
                models[size][f"int8-{target}"] = info["path"]
        ul = home / "benchmarks" / "onnx" / f"{RUN_NAME}-{size}-ultralytics-int8.onnx"
        ul_ev = ul.with_name(ul.stem + "-ev.onnx")
        if not args.no_ultralytics and not (args.quick and not ul_ev.is_file()):
            spec = {"pt": str(pt), "imgsz": size, "data": str(data), "out": str(ul), "fp32": str(fp32s[size]),
                    "threads": args.threads}
            info = _cached(ul, args.rebuild, lambda spec=spec: spawn("ultralytics", spec, prefix=prefix,
                                                                          timeout_s=1800))
            info.update(path=str(ul_ev), network_namespace=bool(prefix), data=str(data))
            builds[f"{size}/ultralytics-int8"] = info
            print(f"  build {size}px ultralytics-int8: " + (f"{info['wall_s']:.0f} s, {info['peak_rss_mb']:.0f} MB"
                  + (" (cached)" if info["cached"] else "") if info["ok"] else info["error"]), flush=True)
            if info["ok"] and ul_ev.is_file():
                models[size]["ultralytics-int8"] = str(ul_ev)

    # calibration cost: each method once more at --calib-size, in a child (cached like the models)
    calib_cost: dict[str, Any] = {}
    for method in calib_methods:
        target = TARGETS[0]
        n = args.calib_n
        tries = []
        while True:
            info = quantize(fp32s[args.calib_size], args.calib_size, target, method, n)
            tries.append({k: info.get(k) for k in ("ok", "wall_s", "peak_rss_mb", "error", "cached", "n_requested")})
            print(f"  calibrate {args.calib_size}px {method} n={n}: " + (
                f"{info['wall_s']:.0f} s, peak {info['peak_rss_mb']:.0f} MB" + (" (cached)" if info["cached"] else "")
                if info["ok"] else info["error"]), flush=True)
            if info["ok"] or n <= 25:
                break
            n //= 2
        calib_cost[method] = {**info, "tries": tries}
        if info["ok"] and args.calib_size in models and method != "minmax":
            models[args.calib_size][f"int8-{target}-{method}"] = info["path"]

    # agreement with FP32
    checks: dict[str, Any] = {}
    for size in sizes:
        others = {k: v for k, v in models[size].items() if k != "fp32"}
        r = spawn("check", {"fp32": models[size]["fp32"], "models": others, "images": check_images})
        checks[str(size)] = r["result"] if r["ok"] else {"error": r["error"]}
        for name, row in checks[str(size)].items():
            if isinstance(row, dict):
                print(f"  check {size}px {name:28s} r={row['score_corr']:.4f} max|d|={row['score_max_abs_diff']:.3f}"
                      f" recovered {row.get('recovered', '-')}/{row.get('fp32_detections', '-')}"
                      f" detector {row['detector'][:60]}", flush=True)

    # timing: the calibration-method variants are checked, not timed
    results: dict[str, Any] = {}
    for size in sizes:
        names = ("fp32", *(f"int8-{t}" for t in TARGETS), "ultralytics-int8")
        timed = {k: v for k, v in models[size].items() if k in names}
        per: dict[str, list[dict[str, Any]]] = {}
        for rep in range(args.repeats):
            for name, path in timed.items():
                ok_det = checks[str(size)].get(name, {}).get("detector", "ok") == "ok"
                spec = {"path": path, "fp32": models[size]["fp32"], "images": images, "threads": args.threads,
                        "warmup": args.warmup, "rounds": args.rounds, "use_detector": ok_det}
                r = spawn("time", spec)
                if not r["ok"]:
                    sys.exit(f"timing {name} at {size}: {r['error']}")
                per.setdefault(name, []).append(r["result"])
                t = r["result"]
                print(f"  {size}px rep {rep} {name:18s} e2e {t.get('e2e_median_ms', float('nan')):7.2f} ms"
                      f"  run {t['run_median_ms']:7.2f} ms", flush=True)
        row: dict[str, Any] = {"models": {}, "ratios": {}}
        for name, runs in per.items():
            e2e = [r["e2e_median_ms"] for r in runs if "e2e_median_ms" in r]
            row["models"][name] = {
                "e2e_median_ms": _med(e2e) if e2e else None,
                "e2e_p90_ms": _med([r["e2e_p90_ms"] for r in runs]) if e2e else None,
                "run_median_ms": _med([r["run_median_ms"] for r in runs]),
                "run_p90_ms": _med([r["run_p90_ms"] for r in runs]),
                "runs": runs, "timed_through": "Detector" if e2e else "session.run only",
                "file_bytes": Path(timed[name]).stat().st_size,
            }
        for name in per:
            if not name.startswith("int8-"):
                continue
            for ref in ("fp32", "ultralytics-int8"):
                if ref not in per:
                    continue
                rr: dict[str, Any] = {}
                for key in ("e2e_median_ms", "run_median_ms"):
                    a = [r.get(key) for r in per[ref]]
                    b = [r.get(key) for r in per[name]]
                    if None in a or None in b:
                        continue
                    rr[key.split("_")[0]] = {"of_medians": _med(a) / _med(b),  # type: ignore[arg-type]
                                             "median_per_repeat": _med([x / y for x, y in zip(a, b)])}  # type: ignore
                row["ratios"][f"{name}_vs_{ref}"] = rr
        results[str(size)] = row

    # where the time goes (onnxruntime profiler; one process per model, after the timing)
    profiles: dict[str, Any] = {}
    if args.profile_runs:
        for size in sizes:
            for name in results[str(size)]["models"]:
                r = spawn("profile", {"path": models[size][name], "fp32": models[size]["fp32"], "image": images[0],
                                      "threads": args.threads, "runs": args.profile_runs})
                profiles.setdefault(str(size), {})[name] = r["result"] if r["ok"] else {"error": r["error"]}
                if r["ok"]:
                    top = list(r["result"]["ops"].items())[:5]
                    print(f"  profile {size}px {name:18s} {r['result']['ms_per_run']:6.1f} ms: "
                          + ", ".join(f"{op} {ms:.1f}" for op, (ms, _) in top), flush=True)

    print()
    for size, row in results.items():
        for name, m in row["models"].items():
            e2e = "-" if m["e2e_median_ms"] is None else f"{m['e2e_median_ms']:.2f}"
            print(f"{size:>5} {name:18s} e2e {e2e:>8} ms  run {m['run_median_ms']:8.2f} ms  "
                  f"{m['file_bytes'] / 1e6:6.2f} MB")
        for key, rr in row["ratios"].items():
            print(f"{size:>5} {key:40s} " + "  ".join(f"{k} {v['of_medians']:.2f}x (per repeat {v['median_per_repeat']:.2f}x)"
                                                      for k, v in rr.items()))
    total = time.perf_counter() - t_start
    print(f"total {total / 60:.1f} min")
    if args.json:
        import platform

        doc = {"benchmark": "int8_speed", "date": time.strftime("%Y-%m-%d", time.gmtime()), "cpu": cpu_description(),
               "cores": os.cpu_count(), "python": platform.python_version(), "versions": _versions(),
               "threads": args.threads, "images": len(images), "rounds": args.rounds, "warmup": args.warmup,
               "repeats": args.repeats, "check_images": len(check_images), "calib": str(calib),
               "recipe": args.recipe, "n": args.n, "quick": args.quick, "total_s": total,
               "method": "each model in its own fresh process, interleaved; per process the median (and p90) of "
                         "per-image ms, end to end (det(path): decode, preprocess, run, NMS) and session.run alone "
                         "alternating; median over processes; ratios from those medians and as the median of "
                         "per-repeat ratios",
               "results": results, "agreement_with_fp32": checks, "profile_ms_per_run": profiles, "builds": builds, "calibration_cost": calib_cost}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _versions() -> dict[str, str]:
    """Package versions, read from their metadata (nothing imported)."""
    from importlib import metadata

    out = {}
    for name in ("edgevision", "onnxruntime", "onnx", "numpy", "opencv-python-headless", "ultralytics", "torch"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
