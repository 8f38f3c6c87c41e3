"""Bad input to ``edgevision export``: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli


def _one_line_error(args: list[str | Path], expected: str, out: Path) -> None:
    r = run_cli("export", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() or out.read_bytes() == b"keep"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]  # no temporary file left


@pytest.mark.parametrize(("make", "extra", "expected"), [
    (None, [], "model not found"),
    ("garbage.pt", [], "not a PyTorch checkpoint"),
    ("notes.txt", [], "expected a run folder or a .pt checkpoint"),
    ("emptyrun", [], "run folder without weights"),
])
def test_bad_models(tmp_path: Path, make: str | None, extra: list[str], expected: str) -> None:
    model = tmp_path / (make or "missing.pt")
    if make == "emptyrun":
        model.mkdir()
    elif make is not None:
        model.write_text("not a checkpoint")
    out = tmp_path / "m.onnx"
    _one_line_error([model, "--out", out, *extra], expected, out)


@pytest.mark.parametrize(("extra", "expected"), [
    (["--out", "m.txt"], "expected a file name ending in .onnx"),
    (["--out", "m.onnx", "--opset", "21"], "--opset 21: expected 13 to 20"),
    (["--out", "m.onnx", "--imgsz", "16"], "--imgsz 16: expected at least 32"),
])
def test_bad_options(tmp_path: Path, extra: list[str], expected: str) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"PK\x03\x04")
    extra = [str(tmp_path / e) if e.startswith("m.") else e for e in extra]
    _one_line_error([model, *extra], expected, Path(extra[1]))


def test_existing_out_needs_overwrite(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"PK\x03\x04")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    _one_line_error([model, "--out", out], "pass --overwrite", out)


@pytest.mark.slow
@pytest.mark.parametrize(("which", "extra", "expected"), [
    ("yolov8_run", ["--imgsz", "80"], "needs a multiple of its stride 32; use 64 or 96"),
    ("yolo26_run", ["--nms-in-graph"], "already ends in NMS-free"),
    ("tv_run", ["--dynamic-batch"], "--dynamic-batch: "),
])
def test_refusals_on_real_models(request: pytest.FixtureRequest, tmp_path: Path, which: str, extra: list[str],
                                 expected: str) -> None:
    run = request.getfixturevalue(which)
    out = tmp_path / "m.onnx"
    _one_line_error([run, "--out", out, *extra], expected, out)
