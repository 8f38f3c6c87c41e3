"""One timing configuration (model x providers x threads x batch), measured in a fresh process.

Two onnxruntime sessions timed in one process (their thread pools spin), or onnxruntime timed in a
process where torch has run (OpenMP threads spin), came out up to 2x slower than the same model
alone. So `time_in_child` runs ``python -m edgevision.bench.timing`` once per configuration; the child
imports only what the model needs and prints one JSON line.

Measured in the child:

* ``load_s``: opening the model (session creation, graph optimisation, metadata checks);
* single stream, after ``warmup`` calls: ``samples`` whole-pipeline calls (image file -> detections:
  read, decode, preprocess, ``session.run``, decode of the outputs, NMS) alternating with ``samples``
  bare ``session.run`` calls on preprocessed tensors (ONNX only), one image (or one batch of ``batch``
  images) per call, images cycled;
* offline throughput: ``throughput_images`` images through the pipeline in batches of ``batch``;
* peak RSS of the child (``ru_maxrss``) at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["time_config", "time_in_child"]


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB elsewhere


def _onnx(model: Path, images: list[Path], providers: list[str] | None, threads: int | None, batch: int,
          samples: int, warmup: int, throughput_images: int) -> dict[str, Any]:
    import numpy as np

    from edgevision.runtime import Detector

    t0 = time.perf_counter()
    det = Detector(model, providers=providers, threads=threads)
    load_s = time.perf_counter() - t0
    dim = det.session.get_inputs()[0].shape[0]
    fixed = None if det.dynamic_batch else int(dim)
    if batch > 1 and fixed is not None and fixed != batch:
        return {"load_s": load_s, "providers": det.providers, "skipped": f"the model has a fixed batch of {fixed}; "
                "export it with --dynamic-batch to measure batch > 1"}
    groups = [[images[(i * batch + k) % len(images)] for k in range(batch)] for i in range(max(len(images), 1))]
    tensors = []
    for g in groups[: min(len(groups), 8)]:
        xs = [det.preprocess(p)[0] for p in g]
        tensors.append(np.concatenate(xs, axis=0))

    def pipeline(g: list[Path]) -> None:
        if batch == 1:
            det(g[0])
        else:
            det.batch(g)

    for i in range(warmup):
        pipeline(groups[i % len(groups)])
        det.run(tensors[i % len(tensors)])
    pipe_ms, sess_ms = [], []
    for i in range(samples):  # alternate, so a drift in machine load hits both alike
        g, x = groups[i % len(groups)], tensors[i % len(tensors)]
        t = time.perf_counter()
        pipeline(g)
        pipe_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        det.run(x)
        sess_ms.append((time.perf_counter() - t) * 1e3)
    flat = [images[i % len(images)] for i in range(throughput_images)]
    t = time.perf_counter()
    for i in range(0, len(flat), batch):
        det.batch(flat[i:i + batch]) if batch > 1 else det(flat[i])
    wall = time.perf_counter() - t
    return {"load_s": load_s, "providers": det.providers, "pipeline_ms": pipe_ms, "session_ms": sess_ms,
            "throughput_ips": len(flat) / wall if wall > 0 else None, "throughput_images": len(flat)}


def _torch(model: Path, images: list[Path], device: str, threads: int | None, batch: int, samples: int,
           warmup: int, throughput_images: int) -> dict[str, Any]:
    import cv2

    from edgevision.infer import Frame, open_model

    if batch > 1:
        return {"skipped": "batch > 1 is measured for ONNX models only; export the model (edgevision export)"}
    t0 = time.perf_counter()
    m = open_model(model, device=device, threads=threads)
    load_s = time.perf_counter() - t0

    def call(p: Path) -> None:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        m.detect(Frame(p.name, p, img, None), 0.25, 0.7, 300)

    for i in range(warmup):
        call(images[i % len(images)])
    pipe_ms = []
    for i in range(samples):
        t = time.perf_counter()
        call(images[i % len(images)])
        pipe_ms.append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    for i in range(throughput_images):
        call(images[i % len(images)])
    wall = time.perf_counter() - t
    return {"load_s": load_s, "providers": [f"torch:{device}"], "pipeline_ms": pipe_ms, "session_ms": None,
            "throughput_ips": throughput_images / wall if wall > 0 else None, "throughput_images": throughput_images}


def time_config(model: Path | str, images: Sequence[Path | str], *, providers: list[str] | None = None,
                threads: int | None = None, batch: int = 1, samples: int = 700, warmup: int = 20,
                throughput_images: int = 200, device: str = "cpu") -> dict[str, Any]:
    """Measure one configuration in this process (see the module docstring). Returns JSON-able values."""
    model, paths = Path(model), [Path(p) for p in images]
    if not paths:
        raise ValueError("no images to time")
    if model.suffix.lower() == ".onnx":
        res = _onnx(model, paths, providers, threads, batch, samples, warmup, throughput_images)
    else:
        res = _torch(model, paths, device, threads, batch, samples, warmup, throughput_images)
    res["peak_rss_mb"] = _peak_rss_mb()
    res["torch_in_process"] = "torch" in sys.modules  # an ONNX timing must not share its process with torch
    return res


def time_in_child(model: Path | str, images: Sequence[Path | str], *, providers: list[str] | None = None,
                  threads: int | None = None, batch: int = 1, samples: int = 700, warmup: int = 20,
                  throughput_images: int = 200, device: str = "cpu", timeout: float = 3600.0) -> dict[str, Any]:
    """`time_config` in a fresh Python process; the image list travels in a JSON file argument.

    Raises:
        RuntimeError: the child failed (its last stderr line is in the message).
    """
    import tempfile

    spec = {"model": str(model), "images": [str(p) for p in images], "providers": providers, "threads": threads,
            "batch": batch, "samples": samples, "warmup": warmup, "throughput_images": throughput_images,
            "device": device}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        r = subprocess.run([sys.executable, "-m", "edgevision.bench.timing", f.name], capture_output=True, text=True,
                           timeout=timeout)
    finally:
        Path(f.name).unlink(missing_ok=True)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"timing {Path(model).name} (threads {threads}, batch {batch}) failed: {tail}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    spec = json.loads(Path(args[0]).read_text())
    model, images = spec.pop("model"), spec.pop("images")
    print(json.dumps(time_config(model, images, **spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
