"""deploy/: the Dockerfile's install replayed in a clean venv from an offline wheelhouse, the systemd unit,
the environment file.

The wheelhouse is built by ``deploy/build-wheelhouse.sh`` on a connected machine. ``.ci/run`` builds it
before the (network-blocked) test run and passes it in ``EDGEVISION_TEST_WHEELHOUSE``; without that
variable the test builds one itself when PyPI is reachable, else it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.installs]

DEPLOY = REPO / "deploy"
INSTALLED_MB_MAX = 600  # measured 406 MB (numpy, OpenCV headless, onnxruntime, FastAPI stack): catch a heavy pull


def _sh(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("EDGEVISION_TEST_WHEELHOUSE")
    if given:
        path = Path(given)
        assert (path / "constraints.txt").is_file(), f"EDGEVISION_TEST_WHEELHOUSE={given} is not a built wheelhouse"
        return path
    out = tmp_path_factory.mktemp("wheelhouse")
    r = _sh(DEPLOY / "build-wheelhouse.sh", out, env={"PYTHON": sys.executable})
    if r.returncode != 0:
        pytest.skip("no wheelhouse: EDGEVISION_TEST_WHEELHOUSE is unset and building one needs PyPI "
                    f"({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'failed'})")
    return out


@pytest.fixture(scope="session")
def runtime_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """deploy/install-runtime.sh PREFIX WHEELHOUSE, exactly as the Dockerfile's second stage runs it."""
    prefix = tmp_path_factory.mktemp("runtime") / "opt-edgevision"
    base_python = shutil.which("python3") or sys.executable
    r = _sh(DEPLOY / "install-runtime.sh", prefix, wheelhouse, env={"PYTHON": base_python})
    assert r.returncode == 0, r.stdout + r.stderr
    return prefix, r.stdout


def _dockerfile_stages() -> list[list[str]]:
    """The instructions of each stage (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_runtime_only_and_installs_through_the_two_scripts() -> None:
    build, final = _dockerfile_stages()
    runs = [i for i in build if i.startswith("RUN ")]
    assert runs == ["RUN deploy/build-wheelhouse.sh /wheelhouse"]
    runs = [i for i in final if i.startswith("RUN ")]
    assert len(runs) == 1 and runs[0].startswith("RUN /tmp/install-runtime.sh /opt/edgevision /tmp/wheelhouse")
    text = (DEPLOY / "Dockerfile").read_text().lower()
    for heavy in ("torch", "ultralytics", "albumentations", "pip install"):
        assert heavy not in "\n".join(x for x in text.splitlines() if not x.startswith("#")), heavy
    assert any(i.startswith("USER ") and "root" not in i for i in final)  # not root
    assert any(i.startswith("HEALTHCHECK ") and "/healthz" in i for i in final)
    assert 'ENTRYPOINT ["edgevision", "serve"]' in final
    # every COPY source exists
    for i in build + final:
        if i.startswith("COPY ") and "--from" not in i:
            for src in i.split()[1:-1]:
                assert (REPO / src).exists(), src
    # the variables the image sets are the service's
    from edgevision.serve.config import ENV

    env_line = next(i for i in final if i.startswith("ENV "))
    for key in re.findall(r"(EDGEVISION_[A-Z_]+)=", env_line):
        assert key in ENV.values(), key


def test_env_file_and_cli_agree_on_every_variable() -> None:
    from edgevision.commands.serve import command
    from edgevision.serve.config import ENV, ServeConfig

    listed = set(re.findall(r"^#?(EDGEVISION_[A-Z_]+)=", (DEPLOY / "edgevision.env").read_text(), re.M))
    assert listed == set(ENV.values())
    assert set(ENV) == set(ServeConfig.model_fields)
    import inspect

    envvars = {p.default.envvar for p in inspect.signature(command).parameters.values()}
    assert envvars == set(ENV.values())


def _verify_unit(name: str, prefix: Path, tmp_path: Path, replace: dict[str, str] | None = None) -> str:
    """``systemd-analyze verify`` on deploy/NAME with the installed runtime's paths; returns the unit's text."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (DEPLOY / name).read_text()
    local = text.replace("/opt/edgevision/bin/edgevision", str(prefix / "bin" / "edgevision"))
    for old, new in (replace or {}).items():
        local = local.replace(old, new)
    unit = tmp_path / name
    unit.write_text(local)
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr  # systemd warns about unknown keys on stderr
    return text


def test_systemd_unit_verifies(runtime_venv: tuple[Path, str], tmp_path: Path) -> None:
    text = _verify_unit("edgevision.service", runtime_venv[0], tmp_path,
                        {"/etc/edgevision/edgevision.env": str(DEPLOY / "edgevision.env")})
    assert "ExecStart=/opt/edgevision/bin/edgevision serve\n" in text
    assert "EnvironmentFile=/etc/edgevision/edgevision.env" in text
    drain = float(re.search(r"^EDGEVISION_DRAIN_TIMEOUT_S=(\S+)", (DEPLOY / "edgevision.env").read_text(), re.M)[1])
    stop = float(re.search(r"^TimeoutStopSec=(\d+)", text, re.M)[1])
    assert drain < stop  # systemd must not SIGKILL a service that is still draining


def test_line_systemd_unit_verifies(runtime_venv: tuple[Path, str], tmp_path: Path) -> None:
    text = _verify_unit("edgevision-line.service", runtime_venv[0], tmp_path)
    assert "ExecStart=/opt/edgevision/bin/edgevision line /etc/edgevision/line.yaml\n" in text
    assert "RestartPreventExitStatus=2" in text and "KillSignal=SIGTERM" in text


def _parse_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def test_runtime_install_from_the_wheelhouse_serves_without_torch(runtime_venv, tmp_path: Path) -> None:
    """The replayed image: no torch / Ultralytics / albumentations / onnx; the service starts from the
    environment file alone (as under systemd), answers like the dev runtime, and stops cleanly."""
    import cv2

    from edgevision.runtime import Detector
    from tests.runtime.conftest import bbox_model, make_meta
    from tests.serve.conftest import Server

    prefix, log = runtime_venv
    mb = int(re.search(r"\((\d+) MB\)", log)[1])
    assert 100 < mb < INSTALLED_MB_MAX, log
    py = prefix / "bin" / "python"
    r = subprocess.run([py, "-c", "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None "
                        "for m in ('torch', 'torchvision', 'ultralytics', 'albumentations', 'onnx', 'edgevision', "
                        "'onnxruntime', 'fastapi')}))"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    found = json.loads(r.stdout)
    assert found == {"torch": False, "torchvision": False, "ultralytics": False, "albumentations": False,
                     "onnx": False, "edgevision": True, "onnxruntime": True, "fastapi": True}
    # the installed package is the wheel, not this checkout
    where = subprocess.run([py, "-c", "import edgevision; print(edgevision.__file__)"], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path).stdout
    assert str(prefix) in where and str(REPO) not in where

    model = bbox_model(tmp_path / "model.onnx", make_meta(["scratch"], size_hw=(64, 64)), score=0.9)
    img = np.full((96, 128, 3), 20, np.uint8)
    img[10:40, 50:90] = 255
    cv2.imwrite(str(tmp_path / "part.png"), img)
    token = tmp_path / "token"
    token.write_text("a" * 64)
    token.chmod(0o600)
    env = _parse_env_file(DEPLOY / "edgevision.env")
    env.update(EDGEVISION_MODEL=str(model), EDGEVISION_PORT="0", EDGEVISION_TOKEN_FILE=str(token),
               PATH=f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}")
    # run from a folder outside the checkout, so `python -m edgevision` is the installed wheel
    s = Server(model, tmp=tmp_path, env=env, use_model_arg=False, python=str(prefix / "bin" / "python"), cwd=tmp_path)
    try:
        auth = {"Authorization": "Bearer " + "a" * 64}
        r = s.detect((tmp_path / "part.png").read_bytes(), **auth)
        assert r.status == 200, r.body
        assert r.json["detections"] == Detector(model)(tmp_path / "part.png").to_dict()["detections"]
        assert s.detect(b"not an image", ctype="application/octet-stream", **auth).status == 400
        assert s.request("GET", "/metrics", headers=auth).status == 200
    finally:
        rc, out = s.stop()
    assert rc == 0, out
    assert "stopped on SIGTERM: 1 image(s) served" in out
    assert s.network_attempts() == []


def test_install_runtime_refuses_a_bad_wheelhouse_without_reaching_the_network(wheelhouse, tmp_path) -> None:
    r = _sh(DEPLOY / "install-runtime.sh", tmp_path / "v1", tmp_path / "missing")
    assert r.returncode == 2 and "wheelhouse folder not found" in r.stderr and not (tmp_path / "v1").exists()
    partial = tmp_path / "partial"
    shutil.copytree(wheelhouse, partial)
    for whl in partial.glob("numpy-*.whl"):
        whl.unlink()
    (partial / "SHA256SUMS").unlink()
    r = _sh(DEPLOY / "install-runtime.sh", tmp_path / "v2", partial, timeout=300)
    assert r.returncode == 1 and "pip install from" in r.stderr  # --no-index: it cannot fetch numpy elsewhere
    assert not (tmp_path / "v2").exists()  # no half-installed environment left behind
    damaged = tmp_path / "damaged"
    shutil.copytree(wheelhouse, damaged)
    victim = next(damaged.glob("h11-*.whl"))
    victim.write_bytes(victim.read_bytes()[:-10])
    r = _sh(DEPLOY / "install-runtime.sh", tmp_path / "v3", damaged)
    assert r.returncode == 1 and "does not match SHA256SUMS" in r.stderr
