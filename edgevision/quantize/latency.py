"""Latency of one ONNX model through the runtime, measured in a fresh process.

Two onnxruntime sessions timed in one process (their thread pools spin), or one timed in a process
where torch has run, can come out up to 2x slower than the model alone: `measure_in_child` therefore
runs ``python -m edgevision.quantize.latency`` once per model and reads its JSON from stdout. The
child imports only the runtime (numpy, onnxruntime, OpenCV).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["measure", "measure_in_child", "summarize_ms"]


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    """``p50``, ``p90``, ``mean``, ``min``, ``max`` in milliseconds of a list of durations in seconds."""
    a = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
            "min": float(a.min()), "max": float(a.max())}


def measure(model: Path | str, images: Sequence[Path | str], *, runs: int = 30, warmup: int = 5,
            threads: int | None = None) -> dict[str, Any]:
    """Time ``Detector(model)`` on ``images`` (cycled), in this process.

    Returns:
        ``{"pipeline_ms": {...}, "session_ms": {...}, "runs", "warmup", "threads", "load_s", "providers"}``:
        the whole call (decode, preprocess, ``session.run``, decode of the outputs, NMS) and ``session.run``
        alone on the same preprocessed tensors (see `summarize_ms`).
    """
    from edgevision.runtime import Detector

    if not images:
        raise ValueError("no images to time")
    t0 = time.perf_counter()
    det = Detector(model, providers=["CPUExecutionProvider"], threads=threads)
    load_s = time.perf_counter() - t0
    data = [Path(p).read_bytes() for p in images]
    tensors = [det.preprocess(d)[0] for d in data[: min(len(data), 8)]]
    for i in range(warmup):
        det(data[i % len(data)])
    pipeline, session = [], []
    for i in range(runs):
        t = time.perf_counter()
        det(data[i % len(data)])
        pipeline.append(time.perf_counter() - t)
    for i in range(runs):
        x = tensors[i % len(tensors)]
        t = time.perf_counter()
        det.run(x)
        session.append(time.perf_counter() - t)
    return {"pipeline_ms": summarize_ms(pipeline), "session_ms": summarize_ms(session), "runs": runs,
            "warmup": warmup, "threads": threads, "load_s": load_s, "providers": list(det.providers)}


def measure_in_child(model: Path | str, images: Sequence[Path | str], *, runs: int = 30, warmup: int = 5,
                     threads: int | None = None, timeout: float = 900.0) -> dict[str, Any]:
    """`measure` in a fresh Python process (see the module docstring).

    Raises:
        RuntimeError: the child failed (its last stderr line is in the message).
    """
    args = [sys.executable, "-m", "edgevision.quantize.latency", str(model), "--runs", str(runs), "--warmup",
            str(warmup)]
    if threads is not None:
        args += ["--threads", str(threads)]
    args += [str(p) for p in images]
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"latency measurement of {model} failed: {tail}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m edgevision.quantize.latency", description=__doc__)
    ap.add_argument("model")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    print(json.dumps(measure(a.model, a.images, runs=a.runs, warmup=a.warmup, threads=a.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
