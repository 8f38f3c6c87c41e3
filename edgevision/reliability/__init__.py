"""``edgevision reliability``: soak, robustness under corruptions, determinism, bad input and concurrency
suites on one ONNX model, judged by a YAML release gate into PASS / FAIL, with JSON, markdown, HTML and
JUnit XML reports. The robustness suite needs albumentations (the ``train`` extra, or
``pip install albumentations``); the others need only the runtime.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Gate", "load_gate", "run_reliability"]


def __getattr__(name: str) -> Any:
    if name in ("Gate", "load_gate"):
        from edgevision.reliability import gate

        return getattr(gate, name)
    if name == "run_reliability":
        from edgevision.reliability.run import run_reliability

        return run_reliability
    raise AttributeError(f"module 'edgevision.reliability' has no attribute {name!r}")
