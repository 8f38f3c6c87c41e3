"""INT8 target presets and the check of a model's target against the box it runs on.

Part of the runtime (the `Detector` checks an INT8 model's target when it opens it); ``edgevision quantize`` builds
with the same presets. Imports only the standard library (onnxruntime lazily, for the provider list): free of
torch and onnx.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["TARGETS", "Preset", "cpu_flags", "host_target", "target_mismatch"]


@dataclass(frozen=True)
class Preset:
    """How one target quantizes (static QDQ, per-channel weights).

    Attributes:
        activations, weights: ``QUInt8`` or ``QInt8`` (onnxruntime ``QuantType`` names).
        reduce_range: 7-bit weights (x86 without VNNI: avoids the u8 x s8 pair-sum saturation of vpmaddubsw).
        symmetric: symmetric activations and weights (zero point 0; what TensorRT requires).
        summary: one line for the user.
    """

    activations: str
    weights: str
    reduce_range: bool
    symmetric: bool
    summary: str


TARGETS: dict[str, Preset] = {
    "x86-vnni": Preset("QUInt8", "QInt8", False, False,
                       "x86 with AVX-512 VNNI / AVX-VNNI: uint8 activations, int8 per-channel weights"),
    "x86-avx2": Preset("QUInt8", "QInt8", True, False,
                       "x86 without VNNI: uint8 activations, 7-bit (reduce-range) int8 per-channel weights"),
    "arm64": Preset("QUInt8", "QInt8", False, False,
                    "ARM64 (NEON / dot-product): uint8 activations, int8 per-channel weights"),
    "tensorrt": Preset("QInt8", "QInt8", False, True,
                       "TensorRT: symmetric int8 activations and per-channel weights"),
}
"""The ``--target`` choices."""


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _machine() -> str:
    m = platform.machine().lower()
    if m in ("aarch64", "arm64"):
        return "arm64"
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86"
    return m


def host_target() -> str:
    """The target of the CPU this runs on: ``x86-vnni``, ``x86-avx2`` or ``arm64`` (x86-avx2 when unknown)."""
    machine = _machine()
    if machine == "arm64":
        return "arm64"
    if machine == "x86" and cpu_flags() & {"avx512_vnni", "avx_vnni"}:
        return "x86-vnni"
    return "x86-avx2"


def target_mismatch(target: str, providers: list[str] | None = None) -> str | None:
    """Why an INT8 model built for ``target`` may run slowly or inexactly here, or None when it fits.

    Args:
        target: the ``quantization.target`` of the model's metadata.
        providers: the execution providers of the session (None: onnxruntime's available ones).
    """
    if target == "tensorrt":
        if providers is None:
            import onnxruntime as ort

            providers = list(ort.get_available_providers())
        if "TensorrtExecutionProvider" not in providers:
            return "quantized for TensorRT but runs without TensorrtExecutionProvider (symmetric int8 on CPU is slow)"
        return None
    if target not in TARGETS:
        return f"quantized for an unknown target '{target}'"
    host = host_target()
    if target == host:
        return None
    if target == "x86-avx2" and host == "x86-vnni":  # reduce-range runs correctly on VNNI, only slightly less exact
        return None
    return f"quantized for {target} but this CPU is {host}; re-quantize with `edgevision quantize --target {host}`"
