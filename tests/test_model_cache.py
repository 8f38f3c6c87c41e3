"""tests/model_cache.py: one build per key, shared across processes, never trusting a damaged entry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.model_cache import MANIFEST, cached_build, verify


def _builder(calls: list[Path], payload: bytes = b"weights"):
    def build(entry: Path) -> None:
        calls.append(entry)
        (entry / "run").mkdir()
        (entry / "run" / "best.pt").write_bytes(payload)
        (entry / "model.onnx").write_bytes(payload * 2)
    return build


def test_built_once_then_reused_and_keyed_by_the_recipe(tmp_path: Path) -> None:
    calls: list[Path] = []
    a = cached_build(tmp_path, "m", {"epochs": 1}, _builder(calls))
    assert cached_build(tmp_path, "m", {"epochs": 1}, _builder(calls)) == a and len(calls) == 1
    doc = json.loads((a / MANIFEST).read_text())
    assert set(doc["files"]) == {"run/best.pt", "model.onnx"} and doc["key"] == {"epochs": 1}
    b = cached_build(tmp_path, "m", {"epochs": 2}, _builder(calls))
    assert b != a and len(calls) == 2  # another recipe, another entry


@pytest.mark.parametrize("damage", ["modified", "deleted", "no manifest", "bad manifest"])
def test_a_damaged_entry_is_rebuilt(tmp_path: Path, damage: str) -> None:
    calls: list[Path] = []
    entry = cached_build(tmp_path, "m", {}, _builder(calls))
    if damage == "modified":
        (entry / "run" / "best.pt").write_bytes(b"tampered")
    elif damage == "deleted":
        (entry / "model.onnx").unlink()
    elif damage == "no manifest":  # a build that died before it finished
        (entry / MANIFEST).unlink()
    else:
        (entry / MANIFEST).write_text("{not json")
    assert verify(entry) is not None
    again = cached_build(tmp_path, "m", {}, _builder(calls))
    assert again == entry and len(calls) == 2 and verify(again) is None
    assert (again / "run" / "best.pt").read_bytes() == b"weights"


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def broken(entry: Path) -> None:
        (entry / "half").write_text("x")
        raise RuntimeError("training failed")

    with pytest.raises(RuntimeError):
        cached_build(tmp_path, "m", {}, broken)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]


def test_two_processes_share_one_build(tmp_path: Path) -> None:
    """Both ask at once; the lock makes the second wait and reuse the first's entry."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.model_cache import cached_build\n"
        "def build(entry):\n"
        "    with open(sys.argv[2], 'a') as f: f.write('built\\n')\n"
        "    time.sleep(1.0)\n"
        "    (entry / 'w').write_text('x')\n"
        "print(cached_build(Path(sys.argv[1]), 'm', {}, build))\n"
    )
    log = tmp_path / "builds.txt"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cache"), str(log)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and log.read_text() == "built\n"
