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

`time_interleaved` compares models under the same load: one child per model, all alive at once, and
the parent asks each in turn for one timed call (model A, model B, B, A, ...), so a burst of load on a
shared machine hits every model alike instead of whichever happened to be timed then. Each model
still runs alone in its own clean process; the pipe round trip is outside the timed call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["time_config", "time_in_child", "time_interleaved"]


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB elsewhere


class _OnnxTimer:
    """One ONNX model ready to be timed: the session open, the inputs decoded and preprocessed once."""

    def __init__(self, model: Path, images: list[Path], providers: list[str] | None, threads: int | None,
                 batch: int) -> None:
        import numpy as np

        from edgevision.runtime import Detector

        t0 = time.perf_counter()
        self.det = Detector(model, providers=providers, threads=threads)
        self.load_s = time.perf_counter() - t0
        self.batch, self.images = batch, images
        dim = self.det.session.get_inputs()[0].shape[0]
        fixed = None if self.det.dynamic_batch else int(dim)
        self.skipped = (f"the model has a fixed batch of {fixed}; export it with --dynamic-batch to measure batch > 1"
                        if batch > 1 and fixed is not None and fixed != batch else None)
        if self.skipped:
            return
        self.groups = [[images[(i * batch + k) % len(images)] for k in range(batch)] for i in range(max(len(images), 1))]
        self.tensors = []
        for g in self.groups[: min(len(self.groups), 8)]:
            xs = [self.det.preprocess(p)[0] for p in g]
            self.tensors.append(np.concatenate(xs, axis=0))

    def _pipeline(self, g: list[Path]) -> None:
        if self.batch == 1:
            self.det(g[0])
        else:
            self.det.batch(g)

    def warm(self, n: int) -> None:
        for i in range(n):
            self._pipeline(self.groups[i % len(self.groups)])
            self.det.run(self.tensors[i % len(self.tensors)])

    def one(self, i: int) -> tuple[float, float]:
        """Sample ``i``: one whole-pipeline call, then one bare ``session.run`` (ms each)."""
        g, x = self.groups[i % len(self.groups)], self.tensors[i % len(self.tensors)]
        t = time.perf_counter()
        self._pipeline(g)
        pipe = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        self.det.run(x)
        return pipe, (time.perf_counter() - t) * 1e3

    def throughput(self, n: int) -> dict[str, Any]:
        flat = [self.images[i % len(self.images)] for i in range(n)]
        t = time.perf_counter()
        for i in range(0, len(flat), self.batch):
            self.det.batch(flat[i:i + self.batch]) if self.batch > 1 else self.det(flat[i])
        wall = time.perf_counter() - t
        return {"throughput_ips": len(flat) / wall if wall > 0 else None, "throughput_images": len(flat)}

    def head(self) -> dict[str, Any]:
        return {"load_s": self.load_s, "providers": self.det.providers}


def _onnx(model: Path, images: list[Path], providers: list[str] | None, threads: int | None, batch: int,
          samples: int, warmup: int, throughput_images: int) -> dict[str, Any]:
    timer = _OnnxTimer(model, images, providers, threads, batch)
    if timer.skipped:
        return {**timer.head(), "skipped": timer.skipped}
    timer.warm(warmup)
    pipe_ms, sess_ms = [], []
    for i in range(samples):  # alternate, so a drift in machine load hits both alike
        p, r = timer.one(i)
        pipe_ms.append(p)
        sess_ms.append(r)
    return {**timer.head(), "pipeline_ms": pipe_ms, "session_ms": sess_ms, **timer.throughput(throughput_images)}


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
        m.detect(Frame(p.name, p, img, None), m.decision.classes, 0.7, 300)  # the model's own thresholds

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


def time_interleaved(models: dict[str, Path | str], images: Sequence[Path | str], *, threads: int | None = None,
                     samples: int = 700, warmup: int = 20, throughput_images: int = 50,
                     timeout: float = 3600.0, providers: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Time ONNX models call by call in turn, each in its own fresh process (see the module docstring).

    Sample ``i`` asks every model for one timed call, in the models' order for even ``i`` and the reverse
    for odd ``i``. Returns, per key of ``models``, what `time_config` returns (``pipeline_ms``,
    ``session_ms``, ``throughput_ips``, ``peak_rss_mb``, ...); throughput is measured model after model
    once the latency samples are done.

    Raises:
        RuntimeError: a child failed (its last stderr line is in the message) or ran past ``timeout``.
    """
    import tempfile

    if not images:
        raise ValueError("no images to time")
    for path in models.values():
        if Path(path).suffix.lower() != ".onnx":
            raise ValueError(f"{path}: interleaved timing measures ONNX models")
    deadline = time.monotonic() + timeout
    children: dict[str, subprocess.Popen[str]] = {}
    spec_files = []
    try:
        for key, path in models.items():
            spec = {"model": str(path), "images": [str(p) for p in images], "threads": threads, "warmup": warmup,
                    "providers": providers}
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as sf:
                json.dump(spec, sf)
            spec_files.append(Path(sf.name))
            children[key] = subprocess.Popen([sys.executable, "-m", "edgevision.bench.timing", "--stepped", sf.name],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True, bufsize=1)

        def ask(key: str, command: str) -> str:
            child = children[key]
            assert child.stdin is not None and child.stdout is not None
            if time.monotonic() > deadline:
                raise RuntimeError(f"timing {Path(models[key]).name}: ran past {timeout:.0f} s")
            try:
                child.stdin.write(command + "\n")
                child.stdin.flush()
            except BrokenPipeError:
                pass
            line = child.stdout.readline()
            if not line:
                child.wait(timeout=30)
                tail = ((child.stderr.read() if child.stderr else "").strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"timing {Path(models[key]).name} (threads {threads}) failed: {tail}")
            return line

        out = {key: json.loads(ask(key, "ready")) for key in children}
        keys = list(children)
        for key in keys:
            out[key].update(pipeline_ms=[], session_ms=[])
        for i in range(samples):
            for key in (keys if i % 2 == 0 else keys[::-1]):
                pipe, sess = map(float, ask(key, "time").split())
                out[key]["pipeline_ms"].append(pipe)
                out[key]["session_ms"].append(sess)
        for key in keys:
            out[key].update(json.loads(ask(key, f"end {throughput_images}")))
        return out
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        for spec_file in spec_files:
            spec_file.unlink(missing_ok=True)


def _stepped(spec: dict[str, Any]) -> int:
    """The child of `time_interleaved`: one line in, one line out (``ready`` / ``time`` / ``end N``)."""
    timer: _OnnxTimer | None = None
    i = 0
    for line in sys.stdin:
        cmd = line.split()
        if cmd == ["ready"]:
            timer = _OnnxTimer(Path(spec["model"]), [Path(p) for p in spec["images"]], spec.get("providers"),
                               spec["threads"], 1)
            timer.warm(int(spec["warmup"]))
            print(json.dumps(timer.head()), flush=True)
        elif cmd == ["time"] and timer is not None:
            pipe, sess = timer.one(i)
            i += 1
            print(f"{pipe!r} {sess!r}", flush=True)
        elif len(cmd) == 2 and cmd[0] == "end" and timer is not None:
            res = timer.throughput(int(cmd[1]))
            print(json.dumps({**res, "peak_rss_mb": _peak_rss_mb(), "torch_in_process": "torch" in sys.modules}),
                  flush=True)
            return 0
        else:
            print(f"unexpected command {line.strip()!r}", file=sys.stderr)
            return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--stepped"]:
        return _stepped(json.loads(Path(args[1]).read_text()))
    spec = json.loads(Path(args[0]).read_text())
    model, images = spec.pop("model"), spec.pop("images")
    print(json.dumps(time_config(model, images, **spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
