"""Bad inputs to `edgevision quantize`: one line each, exit 2, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgevision.core.errors import EdgeVisionError
from tests.helpers import run_cli


def _one_line_error(fn, match: str) -> None:
    with pytest.raises(EdgeVisionError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_not_onnx_exit_2(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_text("not a model")
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", bad, "--calib", tmp_path, "--out", out)
    assert r.returncode == 2 and "not an ONNX model" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_options(tmp_path):
    from edgevision.quantize import quantize_model

    m = tmp_path / "m.onnx"
    m.write_bytes(b"")
    _one_line_error(lambda: quantize_model(m, tmp_path, tmp_path / "q.onnx", target="riscv"), "--target 'riscv'")
    _one_line_error(lambda: quantize_model(m, tmp_path, tmp_path / "q.onnx", method="kl"), "--method 'kl'")
    _one_line_error(lambda: quantize_model(m, tmp_path, tmp_path / "q.txt"), "ending in .onnx")
    (tmp_path / "exists.onnx").write_bytes(b"x")
    _one_line_error(lambda: quantize_model(m, tmp_path, tmp_path / "exists.onnx"), "--overwrite")
    _one_line_error(lambda: quantize_model(m, tmp_path, tmp_path / "q.onnx"), "empty")


@pytest.mark.slow
def test_dataset_and_model_errors(export_env, v8_onnx, tmp_path):
    from edgevision.convert import read_dataset, write_dataset
    from edgevision.quantize import quantize_model

    out = tmp_path / "q.onnx"
    ds = read_dataset(export_env["sample"]).dataset
    # unsplit dataset
    for r in ds.images:
        r.split = None
    write_dataset(ds, tmp_path / "unsplit", "voc")
    _one_line_error(lambda: quantize_model(v8_onnx, tmp_path / "unsplit", out), "edgevision split")
    # no train split
    for r in ds.images:
        r.split = "val"
    write_dataset(ds, tmp_path / "valonly", "coco")
    _one_line_error(lambda: quantize_model(v8_onnx, tmp_path / "valonly", out), "no train split")
    # other classes
    ds = read_dataset(export_env["sample"]).dataset
    ds.labels.names[0] = "not-a-class"
    write_dataset(ds, tmp_path / "other", "coco")
    _one_line_error(lambda: quantize_model(v8_onnx, tmp_path / "other", out), "differ from the model's")
    # no EdgeVision metadata
    import onnx

    m = onnx.load(str(v8_onnx))
    del m.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(m.SerializeToString())
    _one_line_error(lambda: quantize_model(plain, export_env["sample"], out), "no EdgeVision metadata")
    assert not out.exists()
    # already INT8 (through the CLI: exit 2, one line)
    int8 = tmp_path / "a.int8.onnx"
    quantize_model(v8_onnx, export_env["sample"], int8, n=2)
    r = run_cli("quantize", int8, "--calib", export_env["sample"], "--out", out)
    assert r.returncode == 2 and "already INT8" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
    shutil.rmtree(tmp_path / "unsplit")


def test_select_calibration_stratified_seeded():
    import numpy as np

    from edgevision.core.dataset import ImageRecord
    from edgevision.quantize.calib import select_calibration

    recs = [ImageRecord(f"a{i}.png", (8, 8), np.array([[0, 0, 1, 1.0]]), np.array([0])) for i in range(50)]
    recs += [ImageRecord(f"b{i}.png", (8, 8), np.array([[0, 0, 1, 1.0]] * 2), np.array([0, 1])) for i in range(3)]
    recs += [ImageRecord(f"bg{i}.png", (8, 8)) for i in range(5)]
    got = select_calibration(recs, 9, seed=0)
    names = [r.name for r in got]
    assert len(names) == 9 == len(set(names))
    assert sum(n.startswith("b") and not n.startswith("bg") for n in names) == 3  # the rare class: all it has
    assert sum(n.startswith("bg") for n in names) == 3 and sum(n.startswith("a") for n in names) == 3
    assert [r.name for r in select_calibration(list(reversed(recs)), 9, seed=0)] == names  # order-independent
    assert len(select_calibration(recs, 1000, seed=1)) == len(recs)  # capped


def test_targets_helper(monkeypatch):
    from edgevision.runtime import targets

    monkeypatch.setattr(targets, "_machine", lambda: "x86")
    monkeypatch.setattr(targets, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert targets.host_target() == "x86-vnni"
    assert targets.target_mismatch("x86-vnni", []) is None
    assert targets.target_mismatch("x86-avx2", []) is None
    assert "arm64" in targets.target_mismatch("arm64", [])
    monkeypatch.setattr(targets, "cpu_flags", lambda: frozenset({"avx2"}))
    assert targets.host_target() == "x86-avx2"
    assert "x86-avx2" in targets.target_mismatch("x86-vnni", [])
    assert targets.target_mismatch("tensorrt", ["TensorrtExecutionProvider"]) is None
    assert "TensorRT" in targets.target_mismatch("tensorrt", ["CPUExecutionProvider"])
    monkeypatch.setattr(targets, "_machine", lambda: "arm64")
    assert targets.host_target() == "arm64"
    assert Path  # noqa: B018
