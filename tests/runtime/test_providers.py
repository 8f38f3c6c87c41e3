"""Execution providers: TensorRT's options (engine and timing caches on disk, FP16 only for FP16 models) and a
provider onnxruntime could not use reported in one line. This machine has no GPU: the TensorRT session itself runs
in benchmarks/gpu_deploy_check.py on one; here the options handed to onnxruntime and the reporting are checked."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edgevision.core.io import sha256_file
from edgevision.runtime import Detector
from edgevision.runtime import detector as detector_mod
from edgevision.runtime.providers import provider_entries, trt_cache_dir
from tests.runtime.conftest import bbox_model, make_meta


def test_tensorrt_gets_its_caches_and_fp16_only_for_fp16_models(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEVISION_TRT_CACHE", str(tmp_path / "trt"))
    model = bbox_model(tmp_path / "m.onnx", make_meta(["defect"]))
    entries = provider_entries(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                               model, "fp32")
    name, opts = entries[0]
    cache = tmp_path / "trt" / sha256_file(model)[:16]
    assert name == "TensorrtExecutionProvider" and entries[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert opts == {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache), "trt_fp16_enable": False}
    assert cache.is_dir() and trt_cache_dir(sha256_file(model)) == cache
    assert provider_entries(["TensorrtExecutionProvider"], model, "fp16")[0][1]["trt_fp16_enable"] is True
    assert provider_entries(["CPUExecutionProvider"], model, "fp16") == ["CPUExecutionProvider"]
    other = bbox_model(tmp_path / "other.onnx", replace(make_meta(["defect"]), precision="fp16"), score=0.5)
    assert provider_entries(["TensorrtExecutionProvider"], other, None)[0][1]["trt_engine_cache_path"] != str(cache)
    assert detector_mod._precision_of(other) == "fp16" and detector_mod._precision_of(model) == "fp32"
    assert detector_mod._precision_of(tmp_path / "absent.onnx") is None


def test_a_provider_onnxruntime_drops_is_reported_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """onnxruntime drops a provider whose libraries are missing with only its own log: the Detector says so
    once (warning and `Detector.fallback`, in `describe()`), and detects on what is left."""
    model = bbox_model(tmp_path / "m.onnx", make_meta(["defect"]))
    real = ort.InferenceSession
    asked: list[Any] = []

    class _Dropping:  # what onnxruntime-gpu does without CUDA's libraries: the session runs on CPU only
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None) -> None:
            asked.append(providers)
            self._s = real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

        def __getattr__(self, name: str) -> Any:
            return getattr(self._s, name)

    monkeypatch.setattr(detector_mod.ort, "InferenceSession", _Dropping)
    monkeypatch.setattr(detector_mod, "resolve_providers",
                        lambda providers: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    caplog.set_level(logging.WARNING, logger="edgevision.runtime.detector")
    det = Detector(model, providers="cuda,cpu")
    assert asked == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
    assert det.providers == ["CPUExecutionProvider"]
    assert det.fallback == "execution provider(s) CUDA could not be used on this machine; running on CPU"
    assert det.describe()["fallback"] == det.fallback
    assert [r.getMessage() for r in caplog.records] == [f"{model}: {det.fallback}"]
    img = np.zeros((64, 64, 3), np.uint8)
    img[10:30, 20:40] = 255
    assert len(det(img)) == 1  # it still detects, on CPU

    monkeypatch.setattr(detector_mod.ort, "InferenceSession", real)
    monkeypatch.undo()
    assert Detector(model, providers="cpu").fallback is None
