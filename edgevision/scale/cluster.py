"""Connect to a Ray cluster, or start a loopback-only one for the call.

``address``: None / ``local`` starts a cluster on this machine for the call (bound to 127.0.0.1, no dashboard, no
usage statistics) and stops it after; ``auto`` joins the cluster this machine is part of; ``ray://host:10001``
(Ray Client) or ``host:6379`` (a head's GCS address) joins that one. A driver that has already called
``ray.init`` (the Python API inside a Ray job) is used as it is and left connected.

EdgeVision never lets Ray reach the network on its own: usage statistics are switched off for every driver it
starts (``RAY_USAGE_STATS_ENABLED=0``), and a local cluster binds to loopback only. Ray's head also asks the cloud
metadata addresses (169.254.169.254, metadata.google.internal) which cloud it runs on, whatever the usage-statistics
setting (its dashboard process, even with the dashboard off): the processes of a local cluster are started with
HTTP(S) proxies pointing at a closed loopback port (loopback itself exempt), so those requests fail on this machine
(tested with every other address blocked). For nodes started by hand on an offline line, do the same:
``http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 no_proxy=127.0.0.1,localhost ray start ...``. The cluster's nodes must have
the same EdgeVision and model dependencies installed, and see the model and SOURCE at the same paths (a shared
filesystem).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from edgevision.core.cpu import usable_cores
from edgevision.core.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["ClusterInfo", "connected", "import_ray"]

INSTALL_HINT = "pip install 'edgevision[scale]'"


def import_ray() -> Any:
    """The ``ray`` module (usage statistics off).

    Raises:
        ConfigError: Ray is not installed (one line with the install command).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as e:
        raise ConfigError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from e
    return ray


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster a run uses.

    Attributes:
        address: what was asked (``local`` for a cluster started for the call); nodes: alive nodes;
        cpus / gpus: the cluster's total resources; node_cpus / node_gpus: each alive node's.
    """

    address: str
    nodes: int
    cpus: float
    gpus: float
    node_cpus: tuple[float, ...] = ()
    node_gpus: tuple[float, ...] = ()

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPU(s)" if self.gpus else ""
        return f"Ray cluster {self.address}: {self.nodes} node(s), {self.cpus:g} CPU(s){gpus}"


CLOSED_PROXY = "http://127.0.0.1:9"
"""A loopback port nothing listens on (discard): HTTP through it fails at once, on this machine."""


@contextmanager
def _no_egress() -> Iterator[None]:
    """Environment for the processes of a local cluster (inherited at their start): HTTP(S) goes to `CLOSED_PROXY`
    except to loopback."""
    keys = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({"http_proxy": CLOSED_PROXY, "https_proxy": CLOSED_PROXY, "HTTP_PROXY": CLOSED_PROXY,
                       "HTTPS_PROXY": CLOSED_PROXY, "no_proxy": "127.0.0.1,localhost,::1",
                       "NO_PROXY": "127.0.0.1,localhost,::1"})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def connected(address: str | None, *, num_cpus: int | None = None) -> Iterator[ClusterInfo]:
    """Connect (see the module doc) for the ``with`` block; disconnect after, stopping a cluster it started.

    Args:
        num_cpus: CPUs of a local cluster (default: those this process may run on).

    Raises:
        ConfigError: Ray missing, or the cluster cannot be reached (one line naming the address and the fix).
    """
    local = address in (None, "", "local")
    if local and "ray" not in sys.modules:
        # Ray reads this once, at import: a cluster started here takes 127.0.0.1 as its address instead of asking
        # the routing table for the machine's outward address (and nothing listens outside the box).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    ours = not ray.is_initialized()
    if ours:
        common = {"log_to_driver": False, "configure_logging": False, "include_dashboard": False}
        try:
            if local:
                with _no_egress():
                    ray.init(num_cpus=num_cpus or usable_cores(), **common)
            else:
                ray.init(address=address, **{k: v for k, v in common.items() if k != "include_dashboard"})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"--ray {address}: cannot connect to the Ray cluster ({str(e).splitlines()[0]}); "
                              "check the head's address (ray status on the head prints it), or give no address "
                              "to start a local cluster") from e
    try:
        alive = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        cpus = tuple(float(r.get("CPU", 0)) for r in alive)
        gpus = tuple(float(r.get("GPU", 0)) for r in alive)
        yield ClusterInfo("local" if local else str(address), len(alive), sum(cpus), sum(gpus), cpus, gpus)
    finally:
        if ours:
            ray.shutdown()
