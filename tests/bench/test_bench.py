"""``edgevision bench`` and ``bench compare``: real timing processes, real sessions, real scoring."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.bench.report import MIN_P99_SAMPLES, BenchReport
from tests.helpers import run_cli
from tests.runtime.conftest import bbox_model, make_meta

pytestmark = pytest.mark.slow
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "edgevision" / "bench" / "bench-1.schema.json"


def _dataset(root: Path, names: tuple[str, ...] = ("scratch",), n: int = 12, splits: bool = True) -> Path:
    """YOLO dataset: a bright box per defective image (every third image is defect-free)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val") if splits else ("",):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        split = ("val" if i % 2 else "train") if splits else ""
        img = np.full((96, 128, 3), 20, np.uint8)
        label = ""
        if i % 3:
            x, y = int(rng.integers(5, 60)), int(rng.integers(5, 40))
            img[y:y + 25, x:x + 30] = 255
            label = f"0 {(x + 15) / 128:.6f} {(y + 12.5) / 96:.6f} {30 / 128:.6f} {25 / 96:.6f}\n"
        cv2.imwrite(str(root / "images" / split / f"p{i:02d}.png"), img)
        (root / "labels" / split / f"p{i:02d}.txt").write_text(label)
    lines = [f"  {i}: {n}" for i, n in enumerate(names)]
    (root / "data.yaml").write_text("path: .\n" + ("train: images/train\nval: images/val\n" if splits else
                                                    "train: images\n") + "names:\n" + "\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    t = tmp_path_factory.mktemp("bench")
    return {"data": _dataset(t / "data"), "model": bbox_model(t / "model.onnx", make_meta(["scratch"], size_hw=(64, 64)),
                                                             score=0.9), "dir": t}


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.svgs: list[dict[str, str]] = []
        self.series: list[str] = []
        self.points: list[str] = []
        self.scripts = 0
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("class", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "svg":
            self.svgs.append(a)
        elif tag == "polyline":
            self.series.append(a.get("data-label", ""))
        elif tag == "circle":
            self.points.append(a.get("data-label", ""))
        elif tag in ("script", "link", "img"):
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_bench_measures_and_reports_every_configuration(setup, tmp_path) -> None:
    import jsonschema

    out = tmp_path / "b"
    r = run_cli("bench", setup["model"], "--data", setup["data"], "--out", out, "--samples", "40", "--warmup", "3",
                "--threads", "1,2", "--batch", "1,2", "--throughput-images", "30", block_network=tmp_path / "net")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((out / "bench.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))  # the shipped schema
    rep = BenchReport.from_dict(doc)
    assert rep.to_dict()["schema"] == "edgevision.bench/1"
    m, = rep.models
    assert m.sha256 == hashlib.sha256(setup["model"].read_bytes()).hexdigest()
    assert m.size_bytes == setup["model"].stat().st_size and m.kind == "onnx" and m.precision == "fp32"
    assert [(c.threads, c.batch) for c in m.configs] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for c in m.configs:
        assert c.skipped is None and c.provider == "cpu" and c.providers_used == ["CPUExecutionProvider"]
        assert c.pipeline is not None and c.pipeline.n == 40 and len(c.pipeline_ms) == 40
        assert c.pipeline.p50 == pytest.approx(float(np.percentile(c.pipeline_ms, 50)), rel=1e-3)
        assert c.pipeline.min <= c.pipeline.p50 <= c.pipeline.p90 <= c.pipeline.max
        assert c.pipeline.p99 is None and "662" in (c.pipeline.p99_note or "")  # too few samples for a p99
        assert c.session is not None and c.session.n == 40 and c.session.p50 < c.pipeline.p50
        assert c.throughput_ips and c.throughput_ips > 0 and c.throughput_images == 30
        assert c.load_s is not None and c.load_s > 0 and c.peak_rss_mb and c.peak_rss_mb > 20
        assert c.torch_in_process is False  # each configuration timed in a clean process
    acc, = m.accuracy
    # the same numbers `edgevision eval` gives for this model on this split
    ev = run_cli("eval", setup["model"], "--data", setup["data"], "--split", "val", "--json", tmp_path / "ev.json")
    assert ev.returncode == 0, ev.stderr
    want = json.loads((tmp_path / "ev.json").read_text())
    assert acc.map50_95 == pytest.approx(want["coco"]["map50_95"], abs=1e-9)
    assert acc.map50 == pytest.approx(want["coco"]["map50"], abs=1e-9)
    assert acc.escape_rate == want["decisions"]["escape_rate"]
    assert acc.false_reject_rate == want["decisions"]["false_reject_rate"]
    assert acc.images == 6 and acc.defective_images == 4 and acc.defect_free_images == 2
    env = rep.env
    assert env["cpu"]["usable_cores"] >= 1 and isinstance(env["cpu"]["flags"], list)
    assert env["onnxruntime"]["version"] and "CPUExecutionProvider" in env["onnxruntime"]["providers"]
    # markdown and the self-contained HTML
    md = (out / "bench.md").read_text()
    assert md.count("| model.onnx | cpu |") == 5  # 4 latency rows + 1 accuracy row
    page = _Html()
    page.feed((out / "bench.html").read_text())
    assert page.scripts == 0  # no scripts, stylesheets or images fetched: opens offline
    assert {"env", "models", "latency", "accuracy"} <= set(page.tables)
    lat = page.tables["latency"]
    assert lat[0][:4] == ["model", "provider", "threads", "batch"] and len(lat) == 5
    p50_col = lat[0].index("p50")
    assert [float(row[p50_col]) for row in lat[1:]] == [round(c.pipeline.p50, 2) for c in m.configs]
    assert [s.get("data-kind") for s in page.svgs] == ["latency-cdf", "accuracy-latency"]
    assert len(page.series) == 4 and page.points == ["model.onnx (cpu)"]
    assert "p99" in r.stdout and "wrote" in r.stdout
    assert not list(tmp_path.glob(".b.partial"))


def test_p99_is_reported_from_662_samples(setup, tmp_path) -> None:
    from edgevision.bench.run import run_bench

    rep = run_bench([setup["model"]], setup["data"], tmp_path / "b", samples=MIN_P99_SAMPLES, warmup=2,
                    throughput_images=10, threads=[1], accuracy=False)
    c = rep.models[0].configs[0]
    assert c.pipeline is not None and c.pipeline.n == MIN_P99_SAMPLES
    assert c.pipeline.p99 == pytest.approx(float(np.percentile(c.pipeline_ms, 99)), rel=1e-3)
    assert c.pipeline.p99_note is None and rep.models[0].accuracy == []


def test_a_fixed_batch_model_skips_larger_batches_with_the_reason(setup, tmp_path) -> None:
    from edgevision.bench.run import run_bench

    fixed = bbox_model(tmp_path / "fixed.onnx", make_meta(["scratch"], size_hw=(64, 64)), score=0.9, batch=1)
    rep = run_bench([fixed], setup["data"], tmp_path / "b", samples=10, warmup=1, throughput_images=4,
                    threads=[1], batches=[1, 4], accuracy=False)
    one, four = rep.models[0].configs
    assert one.skipped is None and one.pipeline is not None
    assert four.skipped and "fixed batch of 1" in four.skipped and "--dynamic-batch" in four.skipped


def test_compare_flags_regressions_beyond_noise_and_tolerance(setup, tmp_path) -> None:
    from edgevision.bench.run import run_bench

    base = run_bench([setup["model"]], setup["data"], tmp_path / "old", samples=200, warmup=3, throughput_images=10,
                     threads=[1])
    old = json.loads((tmp_path / "old" / "bench.json").read_text())

    def variant(name: str, scale: float, map_delta: float = 0.0) -> Path:
        doc = json.loads(json.dumps(old))
        rng = np.random.default_rng(1)
        for c in doc["models"][0]["configs"]:
            for key in ("pipeline_ms", "session_ms"):
                a = np.asarray(c[key])
                c[key] = [float(v) for v in rng.choice(a, a.size) * scale]  # a fresh draw of the same distribution
        doc["models"][0]["accuracy"][0]["map50_95"] += map_delta
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        return path

    same = run_cli("bench", "compare", tmp_path / "old", variant("same", 1.0))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no regression" in same.stdout and "regression:" not in same.stderr
    slow = run_cli("bench", "compare", tmp_path / "old" / "bench.json", variant("slow", 1.5), "--json",
                   tmp_path / "cmp.json")
    assert slow.returncode == 1, slow.stdout + slow.stderr
    assert "regression:" in slow.stderr and "pipeline p50 ms" in slow.stderr
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    reg = [c for c in cmp["changes"] if c["verdict"] == "regression"]
    assert reg and all(c["ci"][0] > 0 and c["rel_change"] > 0.05 for c in reg)
    assert all(0.45 < c["rel_change"] < 0.55 for c in reg)
    within = run_cli("bench", "compare", tmp_path / "old", variant("within", 1.5), "--tolerance", "0.6")
    assert within.returncode == 0, within.stdout + within.stderr  # slower, but inside a 60% tolerance
    faster = run_cli("bench", "compare", tmp_path / "old", variant("fast", 0.5))
    assert faster.returncode == 0 and "improvement" in faster.stdout
    worse = run_cli("bench", "compare", tmp_path / "old", variant("worse", 1.0, map_delta=-0.05))
    assert worse.returncode == 1 and "mAP50-95" in worse.stderr
    assert base.models[0].accuracy[0].map50_95 is not None


def test_bad_input_fails_in_one_line(setup, tmp_path) -> None:
    unsplit = _dataset(tmp_path / "unsplit", splits=False)
    other = _dataset(tmp_path / "other", names=("dent",))
    (tmp_path / "exists").mkdir()
    (tmp_path / "notbench.json").write_text('{"schema": "something/1"}')
    cases = [
        (("bench", tmp_path / "nope.onnx", "--data", setup["data"], "--out", tmp_path / "o1"), "model not found"),
        (("bench", setup["model"], "--data", unsplit, "--out", tmp_path / "o2"), "no split 'val'"),
        (("bench", setup["model"], "--data", other, "--out", tmp_path / "o3"), "differ from"),
        (("bench", setup["model"], "--data", setup["data"], "--out", tmp_path / "o4", "--providers", "cuda"),
         "execution provider 'cuda' is not available"),
        (("bench", setup["model"], "--data", setup["data"], "--out", tmp_path / "exists"), "already exists"),
        (("bench", setup["model"], "--data", setup["data"], "--out", tmp_path / "o5", "--threads", "0"),
         "positive integers"),
        (("bench", "compare", tmp_path / "notbench.json", tmp_path / "notbench.json"), "is not edgevision.bench/1"),
        (("bench", "compare", tmp_path / "missing", tmp_path / "notbench.json"), "no bench.json"),
    ]
    for args, message in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], (args, r.stderr)
    for name in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / name).exists()


def test_shipped_schema_is_the_models_schema() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == BenchReport.json_schema(), (
        "edgevision/bench/bench-1.schema.json is stale: regenerate it from BenchReport.json_schema()")
    assert re.search(r'"const": "edgevision.bench/1"', SCHEMA_FILE.read_text())


def test_pt_run_folder_and_its_onnx_export_side_by_side(export_env, yolov8_run, v8_onnx, tmp_path) -> None:
    """MODEL may be a run folder (training backend, torch in its own timing process) next to its ONNX export."""
    out = tmp_path / "b"
    r = run_cli("bench", yolov8_run, v8_onnx, "--data", export_env["sample"], "--out", out, "--samples", "12",
                "--warmup", "2", "--throughput-images", "6", "--threads", "2", block_network=tmp_path / "net")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = BenchReport.from_dict(json.loads((out / "bench.json").read_text()))
    pt, onnx = rep.models
    assert pt.kind == "pytorch" and onnx.kind == "onnx"
    assert pt.configs[0].torch_in_process is True and onnx.configs[0].torch_in_process is False
    assert pt.configs[0].session is None and pt.configs[0].pipeline is not None  # no bare session.run for .pt
    assert onnx.configs[0].session is not None
    # the export scores what the checkpoint scores (same weights; the runtime reproduces the backend)
    assert onnx.accuracy[0].map50 == pytest.approx(pt.accuracy[0].map50, abs=0.02)
