"""``edgevision bench``: latency percentiles, throughput, memory and accuracy of models on a dataset,
each configuration timed in its own process, reported as JSON (schema ``edgevision.bench/1``),
markdown and a self-contained HTML page; `compare_reports` flags regressions between two runs.

Importing this package imports neither onnxruntime nor torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BenchReport", "compare_reports", "run_bench"]


def __getattr__(name: str) -> Any:
    if name == "run_bench":
        from edgevision.bench.run import run_bench

        return run_bench
    if name == "compare_reports":
        from edgevision.bench.compare import compare_reports

        return compare_reports
    if name == "BenchReport":
        from edgevision.bench.report import BenchReport

        return BenchReport
    raise AttributeError(f"module 'edgevision.bench' has no attribute {name!r}")
