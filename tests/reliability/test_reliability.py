"""``edgevision reliability``: each suite on a real (tiny) model, planted faults caught, the gate, the reports."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import cv2
import numpy as np
import pytest

from edgevision.core.errors import ConfigError
from edgevision.reliability import suites as S
from edgevision.reliability.gate import Gate, judge_gate, load_gate, resolve_gate
from edgevision.runtime import Detector
from tests.bench.test_bench import _dataset, _Html
from tests.helpers import REPO, network_attempts, run_cli
from tests.runtime.conftest import bbox_model, make_meta

pytestmark = pytest.mark.slow
SCHEMA = REPO / "edgevision" / "reliability" / "reliability-1.schema.json"
FAST = ("--soak-seconds", "3", "--robustness-images", "8", "--latency-samples", "662")  # 8 = the whole val split


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    t = tmp_path_factory.mktemp("rel")
    data = _dataset(t / "data", n=16)
    model = bbox_model(t / "model.onnx", make_meta(["scratch"], size_hw=(64, 64)), score=0.9)
    return {"data": data, "model": model, "dir": t,
            "images": sorted((data / "images" / "val").glob("*.png"))}


# ---------------------------------------------------------------------------------------------- the command
def test_full_run_passes_the_default_gate_and_writes_every_report(setup, tmp_path) -> None:
    pytest.importorskip("albumentations")
    import jsonschema

    out = tmp_path / "rel"
    r = run_cli("reliability", setup["model"], "--data", setup["data"], "--out", out, "--reference", setup["model"],
                *FAST, "--providers", "cpu", block_network=tmp_path / "net")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout and "reliability.html" in r.stdout
    doc = json.loads((out / "reliability.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert doc["verdict"] == "PASS" and doc["gate"]["name"] == "default"
    st = doc["settings"]
    assert (st["providers_requested"], st["providers"], st["provider_fallback"]) == (
        ["CPUExecutionProvider"], ["CPUExecutionProvider"], None)
    assert [c["key"] for c in doc["gate"]["checks"]] == ["p99_latency_ratio_max", "int8_max_drop", "rpc_min",
                                                         "rss_growth_mb_per_h_max", "crashes_max", "determinism"]
    assert set(doc["suites"]) == {"soak", "robustness", "determinism", "bad_input", "concurrency"}
    assert all(s["status"] == "pass" for s in doc["suites"].values()), doc["suites"]
    lat = doc["latency"]["model"]["pipeline"]
    assert lat["n"] >= 662 and lat["p99"] is not None and lat["p50"] <= lat["p99"] <= lat["max"]
    rob = doc["suites"]["robustness"]["metrics"]
    assert set(rob["table"]) == set(doc["settings"]["corruptions"]) and len(rob["table"]) == 9
    assert all(set(row) == {"1", "2", "3", "4", "5"} for row in rob["table"].values())
    vals = [v for row in rob["table"].values() for v in row.values()]
    assert rob["mpc"] == pytest.approx(np.mean(vals)) and rob["rpc"] == pytest.approx(rob["mpc"] / rob["clean_map50_95"])
    assert rob["clean_map50_95"] == pytest.approx(doc["accuracy"]["model"]["map50_95"], abs=1e-9)
    bad = doc["suites"]["bad_input"]["metrics"]["cases"]
    assert len(bad) >= 12 and all(c["ok"] and c["serving_after"] for c in bad)
    assert {c["outcome"] for c in bad if c["expected"] == "clear error"} == {"clear error"}
    soak = doc["suites"]["soak"]["metrics"]
    assert soak["calls"] > 50 and soak["errors"] == 0 and soak["leak"] is False and len(soak["windows"]) >= 5
    # HTML: verdict, tables, plots, nothing fetched
    page = _Html()
    page.feed((out / "reliability.html").read_text())
    assert page.scripts == 0
    assert {"gate", "suites", "latency", "accuracy", "robustness", "bad-input"} <= set(page.tables)
    assert [row[3] for row in page.tables["gate"][1:]] == ["PASS"] * 6
    assert [s.get("data-kind") for s in page.svgs] == ["robustness", "soak-latency", "soak-rss"]
    assert len(page.series) == 9 + 2 + 1
    assert 'id=\'verdict\'' in (out / "reliability.html").read_text() or "id=\"verdict\"" in (
        out / "reliability.html").read_text()
    # JUnit XML: one case per check and per suite, no failure
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == str(6 + 5) and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == 11
    assert "**PASS**" in (out / "reliability.md").read_text()
    assert network_attempts(tmp_path / "net") == []  # albumentations' update check included


def test_a_broken_threshold_fails_the_gate_with_exit_1_and_junit_failure(setup, tmp_path) -> None:
    strict = tmp_path / "strict.yaml"
    strict.write_text("map50_95_min: 0.99\ncrashes_max: 0\n")  # the bbox model scores ~0.92
    loose = tmp_path / "loose.yaml"
    loose.write_text("map50_95_min: 0.5\ncrashes_max: 0\n")
    args = ("--suite", "bad-input,concurrency", "--soak-seconds", "2", "--latency-samples", "662")
    r = run_cli("reliability", setup["model"], "--data", setup["data"], "--out", tmp_path / "a", "--gate", strict, *args)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout
    suite = ET.parse(tmp_path / "a" / "junit.xml").getroot().find("testsuite")
    failed = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert failed == ["map50_95_min"]
    assert json.loads((tmp_path / "a" / "reliability.json").read_text())["verdict"] == "FAIL"
    r = run_cli("reliability", setup["model"], "--data", setup["data"], "--out", tmp_path / "b", "--gate", loose, *args)
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_arguments_fail_in_one_line(setup, tmp_path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("crash_max: 0\n")
    needs_soak = tmp_path / "soak.yaml"
    needs_soak.write_text("rss_growth_mb_per_h_max: 10\n")
    base = (setup["model"], "--data", setup["data"])
    cases = [
        ((*base, "--out", tmp_path / "o1", "--gate", typo), "unknown gate key 'crash_max' (did you mean 'crashes_max'?)"),
        ((*base, "--out", tmp_path / "o2"), "pass --reference"),
        ((*base, "--out", tmp_path / "o3", "--gate", needs_soak, "--suite", "determinism"), "needs the suite(s) soak"),
        ((*base, "--out", tmp_path / "o4", "--gate", "nosuch"), "neither a YAML file nor a shipped gate"),
        ((*base, "--out", tmp_path / "o5", "--suite", "soke", "--gate", typo.with_name("none.yaml")),
         "gate file not found"),
        ((*base, "--out", tmp_path / "o6", "--suite", "soke", "--gate", "line-example", "--reference", setup["model"]),
         "unknown suite (did you mean 'soak'?)"),
        ((*base, "--out", tmp_path / "o7", "--corruptions", "fog", "--reference", setup["model"]),
         "unknown corruption"),
    ]
    for args, message in cases:
        r = run_cli("reliability", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], (args, r.stderr)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 8))


# ---------------------------------------------------------------------------------------------- suites, planted faults
def test_soak_catches_a_planted_leak_and_passes_the_real_model(setup) -> None:
    det = Detector(setup["model"], threads=1)
    kept: list[bytearray] = []

    def leaky(image: object) -> object:
        kept.append(bytearray(256 * 1024))  # 256 KiB that is never freed, per call
        return det(image)

    bad = S.soak(leaky, setup["images"], seconds=None, count=400, windows=10, limit_mb_per_h=50)
    assert bad.status == "fail" and bad.metrics["leak"] is True
    # 256 KiB x the 320 calls between the first window after warm-up (call 80) and the last (call 400): 80 MB,
    # fitted per call, so a busy machine slowing some windows does not bend it (it read 35 MB fitted over time)
    assert 64 < bad.metrics["rss_growth_mb"] < 96 and "a leak" in bad.findings[0], bad.metrics["rss_growth_mb"]
    kept.clear()
    good = S.soak(det, setup["images"], seconds=None, count=400, windows=10, limit_mb_per_h=50)
    assert good.status == "pass" and good.metrics["leak"] is False and good.metrics["errors"] == 0
    assert good.metrics["calls"] == 400 and sum(w["calls"] for w in good.metrics["windows"]) == 400


def test_leak_verdict_needs_slope_and_real_growth() -> None:
    t = np.arange(10.0)
    assert S.leak_verdict(t, 100 + 2.0 * t, 50)[0] is True  # 7200 MB/h, 18 MB: a leak
    assert S.leak_verdict(t, 100 + 0.1 * t, 50)[0] is False  # 360 MB/h but 0.9 MB: noise of a short run
    noisy = 100 + np.array([0, 5, -3, 0, 0, 0.1, 0, -0.1, 0, 0])  # outliers do not drag the robust slope
    assert S.leak_verdict(t, noisy, 50)[0] is False
    # 1 MB per 100 calls; the machine got busy in the middle (windows 4-6 took 5x longer): fitted per call, the
    # growth is the 9 MB that grew; fitted over time, the slow windows would flatten it
    calls = np.arange(10.0) * 100
    t_busy = np.cumsum([1, 1, 1, 1, 5, 5, 5, 1, 1, 1.0])
    leak, slope, growth = S.leak_verdict(t_busy, 100 + calls / 100, 50, calls=calls)
    assert leak is True and growth == pytest.approx(9.0) and slope == pytest.approx(9.0 / (t_busy[-1] - t_busy[0]) * 3600)
    assert S.leak_verdict(t_busy, 100 + calls / 100, 50)[2] < 8  # over time: 7.7 MB, the bias this option removes


def test_determinism_and_concurrency_catch_planted_faults(setup) -> None:
    det = Detector(setup["model"], threads=1)
    images = setup["images"][:4]
    assert S.determinism(lambda t: Detector(setup["model"], threads=t), images, repeats=3).status == "pass"
    rng = np.random.default_rng(0)

    class Jittery:
        def __call__(self, image: object) -> object:
            d = det(image)
            d.scores = (d.scores + rng.normal(0, 1e-3, d.scores.shape)).astype(np.float32)
            return d

    res = S.determinism(lambda t: Jittery(), images, repeats=3)
    assert res.status == "fail" and res.metrics["unstable_images"] > 0
    assert S.concurrency(det, images, workers=4, rounds=3).status == "pass"
    shared: dict[str, object] = {}

    def racy(image: object) -> object:  # keeps its input in shared state: threads read each other's images
        shared["img"] = image
        time.sleep(0.005)
        return det(shared["img"])

    res = S.concurrency(racy, images, workers=4, rounds=3)
    assert res.status == "fail" and res.metrics["wrong"] > 0 and threading.active_count() >= 1


def test_bad_input_counts_a_crash_when_the_error_is_not_clear(setup, tmp_path) -> None:
    det = Detector(setup["model"], threads=1)
    assert S.bad_input(det, setup["images"][1], tmp_path / "a").status == "pass"

    def careless(image: object) -> object:
        if isinstance(image, np.ndarray) and image.dtype != np.uint8 and image.dtype != np.uint16:
            raise ValueError("unexpected dtype")  # not an EdgeVisionError: a crash for the line
        return det(image)

    res = S.bad_input(careless, setup["images"][1], tmp_path / "b")
    assert res.status == "fail" and res.metrics["crashes"] == 2  # float32 and int32 arrays
    assert any("float32 array" in f and "crash" in f for f in res.findings)


def test_corruptions_are_deterministic_and_grow_with_severity(setup) -> None:
    pytest.importorskip("albumentations")
    from edgevision.reliability.corruptions import CORRUPTIONS, corrupt

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((120, 160, 3)) * 150 + 50).astype(np.uint8), (7, 7), 2)
    for name in CORRUPTIONS:
        a, b = corrupt(img, name, 3, 7), corrupt(img, name, 3, 7)
        assert np.array_equal(a, b) and a.shape == img.shape and a.dtype == np.uint8, name
        dev = [float(np.abs(corrupt(img, name, s, 7).astype(int) - img).mean()) for s in (1, 3, 5)]
        assert dev[0] < dev[2] and dev[0] > 0, (name, dev)
    with pytest.raises(ConfigError):
        corrupt(img, "gaussian_noise", 6, 0)


def test_gate_files_and_judging() -> None:
    default = resolve_gate(None)
    assert default == load_gate(REPO / "configs" / "gate" / "default.yaml")
    assert default.needs_reference() == ["p99_latency_ratio_max", "int8_max_drop"]
    assert default.p99_latency_ms is None and default.map50_95_min is None  # no absolute limits shipped
    example = resolve_gate("line-example")
    assert example.p99_latency_ms == 80
    g = Gate.model_validate({"name": "t", "map50_95_min": 0.5, "escape_rate_max": 0.01, "crashes_max": 0})
    checks = judge_gate(g, {"map50_95": 0.6, "escape_rate": 0.02, "crashes": 0})
    assert [(c.key, c.passed) for c in checks] == [("map50_95_min", True), ("escape_rate_max", False),
                                                   ("crashes_max", True)]
    missing = judge_gate(g, {})
    assert not any(c.passed for c in missing) and all("not measured" in c.detail for c in missing)
    ratio = Gate.model_validate({"name": "r", "p99_latency_ratio_max": 1.0})
    noisy = judge_gate(ratio, {"p99_ratio": 1.04, "p99_ratio_ci": [0.97, 1.12]})[0]
    slower = judge_gate(ratio, {"p99_ratio": 1.3, "p99_ratio_ci": [1.2, 1.4]})[0]
    assert noisy.passed and "noise" in noisy.detail and not slower.passed


# ------------------------------------------------------------------------------------- the latency comparison
def _latency_facts(model_ms: list[float], reference_ms: list[float]) -> dict:
    from edgevision.bench.report import latency_stats
    from edgevision.reliability.run import _facts

    lat = {k: {"pipeline": latency_stats(v).model_dump()} for k, v in (("model", model_ms), ("reference", reference_ms))}
    acc = {"model": {"map50_95": 0.5, "escape_rate": 0.0, "false_reject_rate": 0.0}}
    return _facts({**lat, "_samples": {"model": model_ms, "reference": reference_ms}}, acc, {})


def test_latency_ratio_check_on_injected_timings() -> None:
    """The p99 ratio, its bootstrap interval and the verdict, computed from known samples (no clock involved)."""
    rng = np.random.default_rng(0)
    ref = list(10 + rng.gamma(2.0, 0.5, 700))
    gate = Gate.model_validate({"name": "r", "p99_latency_ratio_max": 1.1})
    same = _latency_facts(list(ref), ref)
    assert same["p99_ratio"] == pytest.approx(1.0)
    assert same["p99_ratio_ci"][0] <= 1.0 <= same["p99_ratio_ci"][1]
    assert judge_gate(gate, same)[0].passed
    slower = _latency_facts([1.5 * v for v in ref], ref)  # every call 50% slower
    assert slower["p99_ratio"] == pytest.approx(1.5)
    assert slower["p99_ratio_ci"][0] > 1.1
    check = judge_gate(gate, slower)[0]
    assert not check.passed and "> 1.1" in check.detail
    # a burst of load that hit only the reference's calls (as when the two were timed at different moments)
    # would flatter the model; interleaved timing makes a burst hit both, and the ratio stays near 1
    burst = [v * (3 if 300 <= i < 320 else 1) for i, v in enumerate(ref)]
    both = _latency_facts(burst, burst)
    assert both["p99_ratio"] == pytest.approx(1.0) and judge_gate(gate, both)[0].passed


def test_interleaved_timing_asks_each_model_in_turn(setup, tmp_path) -> None:
    """Two models, each in its own process, timed call by call in turn; every sample is a real timed call."""
    from edgevision.bench.timing import time_interleaved

    other = bbox_model(tmp_path / "other.onnx", make_meta(["scratch"], size_hw=(64, 64)), score=0.5)
    out = time_interleaved({"model": setup["model"], "reference": other}, setup["images"][:4], threads=1, samples=30,
                           warmup=2, throughput_images=6)
    assert set(out) == {"model", "reference"}
    for res in out.values():
        assert len(res["pipeline_ms"]) == 30 and len(res["session_ms"]) == 30
        assert all(v > 0 for v in res["pipeline_ms"] + res["session_ms"])
        assert res["throughput_images"] == 6 and res["throughput_ips"] > 0 and res["peak_rss_mb"] > 0
        assert res["load_s"] > 0 and res["torch_in_process"] is False
    with pytest.raises(RuntimeError, match="broken.onnx"):
        (tmp_path / "broken.onnx").write_bytes(b"not a model")
        time_interleaved({"model": setup["model"], "reference": tmp_path / "broken.onnx"}, setup["images"][:2],
                         samples=3, warmup=1)
