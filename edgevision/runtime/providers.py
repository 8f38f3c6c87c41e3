"""Choose onnxruntime execution providers and session options."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edgevision.core.errors import ConfigError

__all__ = ["PREFERRED", "provider_entries", "resolve_providers", "session_options", "trt_cache_dir"]

PREFERRED = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)
"""Best first: what ``providers=None`` picks from among those the installed onnxruntime offers."""

_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider", "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider", "coreml": "CoreMLExecutionProvider", "dml": "DmlExecutionProvider",
}


def resolve_providers(providers: Sequence[str] | str | None) -> list[str]:
    """The provider list for `onnxruntime.InferenceSession`.

    Args:
        providers: None (the best available of `PREFERRED`, CPU last), or names in order of preference:
            full onnxruntime names (``CUDAExecutionProvider``) or short ones (``cuda``, ``cpu``, ...).

    Raises:
        ConfigError: a name the installed onnxruntime does not offer (the message lists those it does).
    """
    available = list(ort.get_available_providers())
    if providers is None:
        return [p for p in PREFERRED if p in available] or ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p.strip()]
    chosen: list[str] = []
    for name in providers:
        full = _ALIASES.get(name.strip().lower(), name.strip())
        if full not in available:
            raise ConfigError(f"execution provider '{name}' is not available in this onnxruntime "
                              f"({ort.__version__}); available: {', '.join(available)}")
        if full not in chosen:
            chosen.append(full)
    if not chosen:
        raise ConfigError(f"no execution provider given; available: {', '.join(available)}")
    return chosen


def session_options(threads: int | None) -> ort.SessionOptions:
    """Graph optimisation ALL; ``threads`` intra-op threads, one inter-op thread.

    ``threads=None``: onnxruntime's default (one per core), except where the process may run on fewer
    cores than the machine has (taskset, a cpuset, ``docker --cpuset-cpus``): then one per usable core,
    since onnxruntime sizes its pool by the machine and its spinning threads would share cores.
    """
    import os

    from edgevision.core.cpu import usable_cores

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.inter_op_num_threads = 1
    if threads is not None:
        if int(threads) < 1:
            raise ConfigError(f"threads must be >= 1 (or None for all cores), got {threads}")
        so.intra_op_num_threads = int(threads)
    elif usable_cores() < (os.cpu_count() or 1):
        so.intra_op_num_threads = usable_cores()
    so.log_severity_level = 3
    return so


def trt_cache_dir(model_sha256: str) -> Path:
    """Where TensorRT keeps the engines and timing cache it built for one model file: ``$EDGEVISION_TRT_CACHE``,
    else ``EDGEVISION_HOME/tensorrt``, one folder per model content (a re-exported model gets its own)."""
    import os

    from edgevision.core.io import edgevision_home

    root = Path(os.environ["EDGEVISION_TRT_CACHE"]) if os.environ.get("EDGEVISION_TRT_CACHE") else \
        edgevision_home() / "tensorrt"
    return root / model_sha256[:16]


def provider_entries(chosen: Sequence[str], model: Path, precision: str | None) -> list[Any]:
    """onnxruntime's ``providers`` argument for ``chosen``: TensorRT gets its engine and timing caches on disk
    (`trt_cache_dir`: the first session builds the engine, later ones load it in a fraction of the time) and FP16
    kernels only for an FP16 model (an FP32 model keeps FP32 numerics; an INT8 QDQ model is built from its
    quantization nodes); the other providers their defaults."""
    out: list[Any] = []
    for p in chosen:
        if p != "TensorrtExecutionProvider":
            out.append(p)
            continue
        from edgevision.core.io import sha256_file

        cache = trt_cache_dir(sha256_file(model))
        cache.mkdir(parents=True, exist_ok=True)
        out.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
                        "trt_fp16_enable": precision == "fp16"}))
    return out
