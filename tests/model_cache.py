"""A content-addressed cache of the models the tests train, shared by every pytest process of a run.

``scripts/test.sh`` runs two pytest processes side by side; both may ask for the same trained model.
`cached_build` builds an entry once, under a file lock, in a folder named by the hash of what the
entry depends on: the recipe (``key``), EdgeVision's source, this file and `tests.tiny_models`, and the
versions of the packages that train and export. A second process waiting on the lock then finds the
entry built. Every entry carries a manifest of its files' sha256; an entry that is incomplete (a build
that died), modified or corrupt is removed and rebuilt, never trusted.

The cache lives in ``$EDGEVISION_TEST_CACHE`` (``scripts/test.sh`` sets ``.test-cache/`` in the
checkout, so a fresh clone starts empty and a developer's second run reuses what the first built).
Without the variable each pytest session builds into its own temporary folder, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.helpers import REPO

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
ENV = "EDGEVISION_TEST_CACHE"
_PACKAGES = ("torch", "torchvision", "ultralytics", "onnx", "onnxruntime", "onnxslim", "numpy", "opencv-python-headless",
             "albumentations", "libreyolo")


def code_digest() -> str:
    """sha256 over EdgeVision's source, the test files that train, and the packages that train and export."""
    h = hashlib.sha256()
    files = sorted((REPO / "edgevision").rglob("*.py")) + sorted((REPO / "edgevision").rglob("*.yaml"))
    files += [REPO / "tests" / "tiny_models.py", Path(__file__), REPO / "tests" / "helpers.py",
              REPO / "pyproject.toml", REPO / "constraints.txt"]
    for f in files:
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    for pkg in _PACKAGES:
        try:
            h.update(f"{pkg}=={metadata.version(pkg)}\0".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{pkg} absent\0".encode())
    return h.hexdigest()


def _digest_files(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != MANIFEST:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def verify(entry: Path) -> str | None:
    """Why ``entry`` cannot be trusted, or None when its manifest matches every file it lists."""
    man = entry / MANIFEST
    if not man.is_file():
        return "no manifest (an unfinished build)"
    try:
        doc = json.loads(man.read_text())
        files = doc["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e})"
    if not files:
        return "empty manifest"
    for rel, digest in files.items():
        p = entry / rel
        if not p.is_file():
            return f"{rel} is missing"
        if hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            return f"{rel} changed since it was built"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        t0 = time.monotonic()
        fcntl.flock(f, fcntl.LOCK_EX)
        waited = time.monotonic() - t0
        if waited > 1:
            log.info("waited %.0f s for %s", waited, path.name)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cache_root(fallback: Path) -> Path:
    """``$EDGEVISION_TEST_CACHE`` when set, else ``fallback`` (a folder private to this session)."""
    value = os.environ.get(ENV)
    return Path(value).resolve() if value else fallback


def cached_build(root: Path, name: str, key: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """The folder of entry ``name`` for ``key``, built by ``build(folder)`` unless a valid one exists.

    ``build`` writes into the final folder (trained runs record absolute paths); the manifest, written
    last, is what marks the entry complete. The lock serialises builders across processes.
    """
    digest = hashlib.sha256(json.dumps({"name": name, "key": key, "code": code_digest()}, sort_keys=True).encode())
    entry = root / f"{name}-{digest.hexdigest()[:16]}"
    with _locked(root / f".{entry.name}.lock"):
        why = verify(entry) if entry.exists() else "not built yet"
        if why is None:
            log.info("test model cache: reusing %s", entry)
            return entry
        if entry.exists():
            log.warning("test model cache: rebuilding %s: %s", entry, why)
            shutil.rmtree(entry)
        entry.mkdir(parents=True)
        try:
            build(entry)
        except BaseException:
            shutil.rmtree(entry, ignore_errors=True)
            raise
        (entry / MANIFEST).write_text(json.dumps({"name": name, "key": key, "files": _digest_files(entry)},
                                                 indent=1, sort_keys=True))
        return entry
