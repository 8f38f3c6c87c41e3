"""The environment fingerprint a benchmark result is only valid for: CPU, memory, OS, versions, model hash."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = ["cpu_info", "fingerprint", "sha256_of"]

# CPU features that change inference speed (x86 SIMD / int8 dot products, Arm dot products / SVE).
FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
         "amx_int8", "amx_bf16", "asimd", "asimddp", "sve", "i8mm", "bf16")


def cpu_info() -> dict[str, Any]:
    """CPU model name, the speed-relevant feature flags present, logical cores (and usable ones)."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and value.strip():
                model = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "arch": platform.machine(), "flags": [f for f in FLAGS if f in flags],
            "logical_cores": os.cpu_count(), "usable_cores": usable}


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def sha256_of(path: Path | str) -> str:
    """The sha256 of a file, or of a folder's files (sorted relative paths and contents: a run folder)."""
    from edgevision.core.io import sha256_file

    p = Path(path)
    if not p.is_dir():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(f for f in p.rglob("*") if f.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(bytes.fromhex(sha256_file(f)))
    return h.hexdigest()


def fingerprint() -> dict[str, Any]:
    """Where the numbers were measured (JSON-able)."""
    from edgevision import __version__

    env: dict[str, Any] = {
        "cpu": cpu_info(), "ram_gb": _ram_gb(), "os": platform.platform(), "python": sys.version.split()[0],
        "edgevision": __version__,
    }
    try:
        import onnxruntime as ort

        env["onnxruntime"] = {"version": ort.__version__, "providers": list(ort.get_available_providers())}
    except ImportError:
        env["onnxruntime"] = None
    import cv2
    import numpy as np

    env["numpy"], env["opencv"] = np.__version__, cv2.__version__
    env["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return env
