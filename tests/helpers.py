"""Shared test helpers: run the real CLI in a subprocess, snapshot folders, block the network."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

_BLOCKER = textwrap.dedent(
    '''
    import os, socket
    _log = os.environ["EDGEVISION_TEST_NETLOG"]
    _loopback = os.environ.get("EDGEVISION_TEST_ALLOW_LOOPBACK") == "1"
    _LOCAL = ("127.0.0.1", "::1", "localhost")
    def _refuse(*args, **kwargs):
        with open(_log, "a") as f:
            f.write(repr(args[:2]) + "\\n")
        raise OSError("network blocked by the EdgeVision test suite")
    def _local(address):
        return _loopback and isinstance(address, tuple) and str(address[0]) in _LOCAL
    _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
    _create, _getaddrinfo = socket.create_connection, socket.getaddrinfo
    def _connect_local(self, *args):  # Unix sockets (torch's data-loader workers) stay allowed
        if self.family == socket.AF_UNIX or _local(args[0]):
            return _connect(self, *args)
        return _refuse(self, *args)
    def _connect_ex_local(self, *args):
        if self.family == socket.AF_UNIX or _local(args[0]):
            return _connect_ex(self, *args)
        return _refuse(self, *args)
    def _create_local(address, *args, **kwargs):
        return _create(address, *args, **kwargs) if _local(address) else _refuse(address, *args)
    def _getaddrinfo_local(host, *args, **kwargs):
        return _getaddrinfo(host, *args, **kwargs) if _local((host,)) else _refuse(host, *args)
    socket.socket.connect = _connect_local
    socket.socket.connect_ex = _connect_ex_local
    socket.create_connection = _create_local
    socket.getaddrinfo = _getaddrinfo_local
    '''
)


def blocked_env(block: Path, env: Mapping[str, str] | None = None, *paths: str | Path,
                loopback: bool = False) -> dict[str, str]:
    """``env`` (default: this process's) for a Python child that refuses every socket connect and DNS lookup.

    Writes the blocker into ``block`` as ``sitecustomize.py``, puts ``block`` (then ``paths``) first on PYTHONPATH,
    and logs each attempt to ``block/netlog.txt`` (see `network_attempts`). Unix sockets stay allowed, and with
    ``loopback`` connections to 127.0.0.1 / ::1 / localhost too (a Ray cluster on this machine); the child's own
    children (Ray's workers) inherit the blocker.
    """
    block.mkdir(parents=True, exist_ok=True)
    (block / "sitecustomize.py").write_text(_BLOCKER)
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(block), *map(str, paths), out.get("PYTHONPATH", "")) if p)
    out["EDGEVISION_TEST_NETLOG"] = str(block / "netlog.txt")
    if loopback:
        out["EDGEVISION_TEST_ALLOW_LOOPBACK"] = "1"
    return out


def run_cli(*args: str | Path, cwd: Path | None = None, block_network: Path | None = None,
            timeout: float = 300, loopback: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``python -m edgevision ARGS`` in a fresh interpreter and capture its output.

    Args:
        block_network: a folder; when given, every socket connect / DNS lookup in the child is
            refused and logged to ``block_network/netlog.txt`` (see `network_attempts`);
        loopback: with ``block_network``, still allow connections to this machine's loopback.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1", TERM="dumb")
    if block_network is not None:
        env = blocked_env(block_network, env, loopback=loopback)
    return subprocess.run(
        [sys.executable, "-m", "edgevision", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def network_attempts(block_dir: Path) -> list[str]:
    log = block_dir / "netlog.txt"
    return log.read_text().splitlines() if log.exists() else []


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (to prove a source was not modified)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


REPO = Path(__file__).resolve().parents[1]


def shared_data(name: str) -> Path:
    """``../shared/data/NAME`` beside the checkout (real datasets; tests skip when it is absent).

    ``EDGEVISION_SHARED`` overrides the ``shared`` folder's location.
    """
    return Path(os.environ.get("EDGEVISION_SHARED", REPO.parent / "shared")) / "data" / name


@contextlib.contextmanager
def private_home(root: Path, *, n: int, imgsz: int) -> Iterator[dict[str, Path]]:
    """A private EdgeVision home and HOME under ``root`` and the built-in sample (``n`` images) on disk.

    Yields ``{"root", "home", "userhome", "sample"}``; restores the environment afterwards.
    """
    paths = {"root": root, "home": root / "evhome", "userhome": root / "user", "sample": root / "sample"}
    paths["userhome"].mkdir()
    old = {k: os.environ.get(k) for k in ("EDGEVISION_HOME", "HOME", "XDG_CONFIG_HOME")}
    os.environ.update(EDGEVISION_HOME=str(paths["home"]), HOME=str(paths["userhome"]))
    os.environ.pop("XDG_CONFIG_HOME", None)
    try:
        r = run_cli("synth", paths["sample"], "--n", str(n), "--imgsz", str(imgsz))
        assert r.returncode == 0, r.stderr
        yield paths
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_script(path: Path, name: str) -> Any:
    """Import a script that is not in a package (e.g. ``benchmarks/*.py``) as module ``name``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
