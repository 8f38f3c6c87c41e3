"""How many cores this process may use.

``os.cpu_count()`` counts the machine's logical cores, not the ones a process is allowed to run on:
under ``taskset``, a systemd ``CPUAffinity=``, a cgroup cpuset or ``docker run --cpuset-cpus`` it
over-counts, and thread pools sized by it (torch's OpenMP, onnxruntime's intra-op pool, data-loader
workers) oversubscribe the allowed cores. Busy-waiting threads on a shared core then run several times
slower than one thread alone, so "all cores" in EdgeVision means the cores of the process's affinity.
"""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """The number of cores in this process's CPU affinity (``os.cpu_count()`` where affinity is unknown), >= 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)
