"""Foreign ONNX files (`edgevision.runtime.foreign`): Ultralytics exports read without EdgeVision metadata, the
refusals, and ``edgevision adopt``.

The Ultralytics files are exported from yaml (random weights, BatchNorm statistics taken on the tiny sample so
that scores vary) in a subprocess with the network blocked; Ultralytics never runs in this process. The fast
tests use graphs built with ``onnx.helper`` (`tests.runtime.conftest`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgevision.adopt import adopt_model, parse_preprocess, read_class_names
from edgevision.core.errors import ConfigError, OutputExistsError, UnknownNameError
from edgevision.runtime import Detector, ModelFormatError, read_metadata
from edgevision.runtime.metadata import METADATA_KEY, SCHEMA
from edgevision.runtime.props import ProtoError, metadata_props, opset, with_metadata
from tests.helpers import blocked_env, network_attempts, run_cli
from tests.runtime.conftest import make_meta
from tests.tiny_models import IMGSZ

ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None

EXPORTS = {  # name: (model yaml, export arguments)
    "v8": ("yolov8n.yaml", {}),
    "v8nms": ("yolov8n.yaml", {"nms": True, "conf": 0.0001}),
    "y26": ("yolo26n.yaml", {"nms": False}),  # nms=False: the end-to-end head (Ultralytics' default is the raw one)
    "v8dyn": ("yolov8n.yaml", {"dynamic": True}),
    "cls": ("yolov8n-cls.yaml", {}),
    "seg": ("yolov8n-seg.yaml", {}),
}

_EXPORT = textwrap.dedent("""
    import json, shutil, sys
    from pathlib import Path
    from edgevision.train.offline import prepare_ultralytics
    prepare_ultralytics(threads=2, verbose=False)
    import cv2, numpy as np, torch, yaml
    from ultralytics import YOLO
    from ultralytics.nn.tasks import yaml_model_load
    spec = json.loads(sys.argv[1])
    out, names = Path(spec["out"]), spec["names"]
    images = sorted(Path(spec["images"]).rglob("*.png"))
    batch = torch.from_numpy(np.stack([cv2.imread(str(p))[:, :, ::-1].transpose(2, 0, 1) for p in images])
                             .astype(np.float32) / 255)
    for name, (cfg, kw) in spec["exports"].items():
        torch.manual_seed(0)
        d = yaml_model_load(cfg)
        d["nc"] = len(names)
        work = out / f"{name}-build"
        work.mkdir()
        (work / cfg).write_text(yaml.safe_dump(d))  # the file name keeps the scale letter (n)
        y = YOLO(str(work / cfg))
        y.model.names = dict(enumerate(names))
        for m in y.model.modules():  # BatchNorm statistics of the sample: features, and so scores, vary
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        y.model.train()
        with torch.no_grad():
            y.model(batch)
        y.model.eval()
        f = y.export(format="onnx", imgsz=spec["imgsz"], device="cpu", simplify=True, **kw)
        shutil.move(f, out / f"{name}.onnx")
""")


@pytest.fixture(scope="session")
def foreign(export_env: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Ultralytics ONNX exports of the sample's 5 classes at 64 px (see `EXPORTS`), made offline."""
    if not ULTRALYTICS:
        pytest.skip("needs Ultralytics (the train extra)")
    out = tmp_path_factory.mktemp("foreign")
    names = list(_sample_names(export_env["sample"]))
    spec = {"out": str(out), "names": names, "images": str(export_env["sample"] / "images"), "imgsz": IMGSZ,
            "exports": EXPORTS}
    block = out / "block"
    env = blocked_env(block)
    r = subprocess.run([sys.executable, "-c", _EXPORT, json.dumps(spec)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert network_attempts(block) == []
    return {k: out / f"{k}.onnx" for k in EXPORTS}


def _sample_names(sample: Path) -> list[str]:
    import yaml

    names = yaml.safe_load((sample / "data.yaml").read_text())["names"]
    return [names[i] for i in sorted(names)]


def _images(env: dict[str, Path]) -> list[Path]:
    return sorted((env["sample"] / "images").rglob("*.png"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _strip(src: Path, dst: Path) -> Path:
    """A copy of ``src`` without any metadata_props (what another exporter writes)."""
    m = onnx.load(str(src))
    del m.metadata_props[:]
    onnx.save(m, str(dst))
    return dst


def _with_props(path: Path, props: dict[str, str]) -> Path:
    """Replace the metadata_props of ``path`` with ``props`` (in place)."""
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in props.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(path))
    return path


def _ultra_props(classes: list[str], **extra: str) -> dict[str, str]:
    """What Ultralytics 8.4 writes (values as Python literals), ``extra`` replacing keys."""
    return {"author": "Ultralytics", "version": "8.4.190", "task": "detect", "stride": "32", "batch": "1",
            "imgsz": f"[{IMGSZ}, {IMGSZ}]", "names": str(dict(enumerate(classes))), "end2end": "False",
            "args": "{'batch': 1, 'nms': None, 'dynamic': False}", **extra}


# --------------------------------------------------------------------------- Ultralytics exports


@pytest.mark.slow
@pytest.mark.parametrize("which,layout", [("v8", "yolo-raw"), ("v8nms", "yolo-end2end"), ("y26", "yolo-end2end"),
                                          ("v8dyn", "yolo-raw")])
def test_reads_what_ultralytics_writes(which: str, layout: str, foreign, export_env) -> None:
    meta = read_metadata(foreign[which])
    assert meta.names == _sample_names(export_env["sample"])
    assert (meta.input.size_hw, meta.input.name, meta.output.layout, meta.task) == ((IMGSZ, IMGSZ), "images", layout,
                                                                                     "detect")
    assert (meta.input.resize, meta.input.pad_value, meta.input.channel_order, meta.input.scale) == \
        ("letterbox", 114, "RGB", pytest.approx(1 / 255))
    src = meta.source
    assert src["origin"] == "foreign" and src["exporter"].startswith("Ultralytics 8.")
    assert {"names", "imgsz", "task", "end2end", "args"} <= set(src["read"])
    assert "letterbox pad 114, RGB, scale 1/255" in src["assumed"]
    assert meta.input.dynamic_batch == (which == "v8dyn")
    assert ("graph_nms" in src) == (which == "v8nms")
    assert meta.output.max_det == {"v8nms": 300, "y26": sum((IMGSZ // s) ** 2 for s in (8, 16, 32))}.get(which, 300)
    described = Detector(foreign[which]).describe()
    assert described["origin"] == "foreign" and "assumed letterbox pad 114, RGB, scale 1/255" in described["note"]


def _between_scores(model: Path, image: Path) -> float:
    """A threshold halfway between two distinct scores near the median of one image's candidates (no score equals
    it: EdgeVision passes ``score >= conf``, Ultralytics ``score > conf``)."""
    det = Detector(model)
    x, _ = det.preprocess(image)
    out = det.run(x)[0][0]
    scores = out[4:].max(0) if det.metadata.output.layout == "yolo-raw" else out[:, 4][out[:, 4] > 0]
    u = np.unique(scores)
    k = max(1, len(u) // 2)
    return float((u[k - 1] + u[k]) / 2)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["v8", "v8nms", "y26"])
def test_runtime_matches_ultralytics_predict_on_its_own_file(which: str, foreign, export_env) -> None:
    """Same file, same images, same thresholds: >= 99% of boxes paired at IoU >= 0.99 with the same class
    (as tests/export/test_export_cli.py checks EdgeVision's own exports)."""
    from tests.parity import edgevision_predict, pair_rate, ultralytics_onnx_predict

    images = _images(export_env)
    conf = _between_scores(foreign[which], images[0])
    theirs = ultralytics_onnx_predict(foreign[which], images, conf=conf, iou=0.7, max_det=300, imgsz=IMGSZ)
    ours = edgevision_predict(foreign[which], images, conf=conf, iou=0.7, max_det=300)
    rate, n_ours, n_theirs = pair_rate(ours, theirs)
    assert n_theirs >= len(images), (n_ours, n_theirs)  # something to compare
    assert rate >= 0.99, (rate, n_ours, n_theirs)


@pytest.mark.slow
@pytest.mark.parametrize("which,task", [("cls", "classify"), ("seg", "segment")])
def test_other_tasks_refused_in_one_line(which: str, task: str, foreign, export_env, tmp_path) -> None:
    with pytest.raises(ModelFormatError, match=f"an Ultralytics '{task}' model .*detection models") as e:
        Detector(foreign[which])
    assert "\n" not in str(e.value)
    r = run_cli("predict", foreign[which], export_env["sample"] / "images", "--out", tmp_path / "p")
    assert r.returncode == 2 and f"'{task}' model" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_cli_predict_on_an_ultralytics_file(foreign, export_env, tmp_path) -> None:
    r = run_cli("predict", foreign["v8"], export_env["sample"] / "images", "--out", tmp_path / "p", "--conf", "0.001")
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stdout.split())  # rich wraps the model line
    assert "foreign file (Ultralytics" in said and "assumed letterbox pad 114, RGB, scale 1/255" in said
    images = json.loads((tmp_path / "p" / "predictions.json").read_text())["images"]
    assert len(images) == len(_images(export_env)) and sum(len(i["boxes"]) for i in images) > 0
    assert {n for i in images for n in i["class_names"]} <= set(_sample_names(export_env["sample"]))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["foreign", "adopted"])
def test_cli_quantize_keeps_the_metadata(how: str, foreign, export_env, tmp_path) -> None:
    src = foreign["v8"]
    if how == "adopted":
        src = adopt_model(src, tmp_path / "adopted.onnx").path
    out = tmp_path / "q.int8.onnx"
    r = run_cli("quantize", src, "--calib", export_env["sample"], "--out", out, "--n", "8", "--no-eval",
                "--latency-runs", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    meta = read_metadata(out)
    assert meta.precision == "int8" and meta.quantization and meta.names == _sample_names(export_env["sample"])
    assert meta.source["origin"] == how and meta.source["assumed"]
    assert (how == "adopted") == bool(meta.source.get("source_sha256"))
    d = Detector(out)(_images(export_env)[0], conf=0.001)
    assert len(d) > 0


@pytest.mark.slow
def test_adopt_a_bare_dynamic_file_with_classes_and_imgsz(foreign, export_env, tmp_path) -> None:
    """A dynamic export without any metadata (another exporter) + --classes + --imgsz: detects as the Ultralytics
    file it came from (same weights), and says it was adopted, from what."""
    bare = _strip(foreign["v8dyn"], tmp_path / "bare.onnx")
    with pytest.raises(ModelFormatError, match="no class names.*edgevision adopt"):
        Detector(bare)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(_sample_names(export_env["sample"])) + "\n")
    before = _sha(bare)
    r = run_cli("adopt", bare, "--out", tmp_path / "bad.onnx", "--classes", names)
    assert r.returncode == 2 and "--imgsz" in r.stderr and not (tmp_path / "bad.onnx").exists()
    out = tmp_path / "adopted.onnx"
    r = run_cli("adopt", bare, "--out", out, "--classes", names, "--imgsz", str(IMGSZ))
    assert r.returncode == 0, r.stdout + r.stderr
    assert _sha(bare) == before
    meta = read_metadata(out)
    assert meta.schema == SCHEMA and meta.source["adopted"] is True and meta.source["source_sha256"] == before
    assert meta.source["given"] == ["names", "imgsz"] and meta.input.size_hw == (IMGSZ, IMGSZ)
    assert meta.names == _sample_names(export_env["sample"]) and meta.input.dynamic_batch
    assert onnx.load(str(out)).graph == onnx.load(str(bare)).graph
    img = _images(export_env)[0]
    a, b = Detector(out)(img, conf=0.001), Detector(foreign["v8"])(img, conf=0.001)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)


@pytest.mark.slow
def test_every_command_takes_an_ultralytics_file_unchanged(foreign, tmp_path) -> None:
    """The raw v8 export as Ultralytics wrote it through eval, bench, reliability and serve (predict and quantize:
    above), on a 6-image sample: each answers for the file's 5 classes with the runtime's detections."""
    from tests.serve.conftest import Server  # skips without the serve extra

    model, low = foreign["v8"], 0.001  # low: eval's scoring threshold (many boxes from random weights)
    before, det = _sha(model), Detector(model)
    data = tmp_path / "data"
    assert run_cli("synth", data, "--n", "6", "--imgsz", str(IMGSZ)).returncode == 0
    names = _sample_names(data)
    assert det.names == names
    images = sorted((data / "images").rglob("*.png"))

    r = run_cli("eval", model, "--data", data, "--split", "all", "--json", tmp_path / "eval.json",
                "--save-predictions", tmp_path / "preds.json")
    assert r.returncode == 0, r.stdout + r.stderr
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert list(ev["coco"]["per_class"]) == names and ev["confusion"]["names"] == [*names, "background"]
    saved = {i["name"]: i for i in json.loads((tmp_path / "preds.json").read_text())["images"]}
    assert saved.keys() == {p.name for p in images}
    for p in images:  # eval scored the runtime's boxes
        want = det(p, conf=low, max_det=100)
        np.testing.assert_allclose(np.asarray(saved[p.name]["boxes"]).reshape(-1, 4), want.xyxy, atol=1e-4)
        assert saved[p.name]["class_ids"] == want.class_ids.tolist()
    assert sum(len(i["boxes"]) for i in saved.values()) > len(images)

    r = run_cli("bench", "run", model, "--data", data, "--out", tmp_path / "bench", "--threads", "1", "--samples", "10",
                "--warmup", "0", "--throughput-images", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    m, = json.loads((tmp_path / "bench" / "bench.json").read_text())["models"]
    assert (m["sha256"], m["kind"], m["precision"]) == (before, "onnx", "fp32")
    c, = m["configs"]
    assert c["skipped"] is None and c["pipeline"]["n"] == 10 and 0 < c["session"]["p50"] <= c["pipeline"]["p50"]
    assert c["throughput_ips"] > 0 and list(m["accuracy"][0]["per_class_ap50_95"]) == names

    gate = tmp_path / "gate.yaml"  # no accuracy key: random weights score mAP 0
    gate.write_text("crashes_max: 0\ndeterminism: true\n")
    r = run_cli("reliability", model, "--data", data, "--out", tmp_path / "rel", "--gate", gate, "--threads", "1",
                "--soak-seconds", "2", "--robustness-images", "1", "--latency-samples", "662")
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr
    rel = json.loads((tmp_path / "rel" / "reliability.json").read_text())
    assert rel["verdict"] == "PASS" and rel["model"]["sha256"] == before
    assert {k: s["status"] for k, s in rel["suites"].items()} == dict.fromkeys(
        ["soak", "robustness", "determinism", "bad_input", "concurrency"], "pass")
    assert rel["latency"]["model"]["pipeline"]["p99"] > 0 and list(rel["accuracy"]["model"]["per_class_ap50_95"]) == names

    image = max(images, key=lambda p: len(det(p, conf=low)))
    s = Server(model, "--threads", "1", tmp=tmp_path)
    try:
        for query, kw in (("", {}), (f"conf={low}", {"conf": low})):
            reply = s.detect(image.read_bytes(), query)
            assert reply.status == 200, reply.body
            assert reply.json["detections"] == det(image, **kw).to_dict()["detections"], query
        assert len(reply.json["detections"]) > 1
        assert s.request("GET", "/v1/model").json["metadata"]["names"] == names
    finally:
        rc, out = s.stop()
    assert rc == 0, out
    assert _sha(model) == before


# --------------------------------------------------------------------------- refusals (onnx.helper graphs)


def test_unknown_layout_refused_naming_the_shapes(build, tmp_path) -> None:
    meta = make_meta(["a", "b"], size_hw=(IMGSZ, IMGSZ))
    v5 = _with_props(build("const", meta, outputs={"output0": np.zeros((1, 100, 7), np.float32)}),
                     _ultra_props(["a", "b"]))  # YOLOv5's (B, N, 5+nc) with objectness
    with pytest.raises(ModelFormatError) as e:
        Detector(v5)
    msg = str(e.value)
    assert "unknown output layout" in msg and "output0 [1, 100, 7]" in msg and "(B, 6, N)" in msg and "(B, K, 6)" in msg
    two = _with_props(build("const", meta, outputs={"boxes": np.zeros((1, 10, 4), np.float32),
                                                    "scores": np.zeros((1, 10), np.float32)}), _ultra_props(["a", "b"]))
    with pytest.raises(ModelFormatError, match=r"2 output\(s\) boxes \[1, 10, 4\], scores \[1, 10\]"):
        read_metadata(two)
    said = _with_props(build("const", meta, outputs={"output0": np.zeros((1, 6, 80), np.float32)}),
                       _ultra_props(["a", "b"], end2end="True"))
    with pytest.raises(ModelFormatError, match="metadata says end-to-end"):
        read_metadata(said)


def test_shape_both_layouts_fit_is_refused_unless_the_file_says(build) -> None:
    meta = make_meta(["a", "b"], size_hw=(IMGSZ, IMGSZ))
    path = build("const", meta, outputs={"output0": np.zeros((1, 6, 6), np.float32)})
    props = _ultra_props(["a", "b"])
    del props["end2end"], props["args"]
    _with_props(path, props)
    with pytest.raises(ModelFormatError, match="fits both .* --layout"):
        read_metadata(path)
    _with_props(path, {**props, "args": "{'nms': True}"})
    assert read_metadata(path).output.layout == "yolo-end2end"


def test_file_without_metadata_points_to_adopt(build) -> None:
    path = _with_props(build("bbox", make_meta(["o"])), {})
    with pytest.raises(ModelFormatError) as e:
        Detector(path)
    assert "no class names" in str(e.value) and "output0 [batch, 5, 1]" in str(e.value)
    assert f"edgevision adopt {path} --classes" in str(e.value)


def test_other_task_or_bad_metadata_refused(build) -> None:
    path = build("bbox", make_meta(["o"]))
    _with_props(path, _ultra_props(["o"], task="pose"))
    with pytest.raises(ModelFormatError, match="an Ultralytics 'pose' model \\(pose / keypoints\\)"):
        read_metadata(path)
    _with_props(path, _ultra_props(["o"], names="{0: 'a', 2: 'b'}"))
    with pytest.raises(ModelFormatError, match="class ids .* are not 0..1"):
        read_metadata(path)
    _with_props(path, _ultra_props(["o"], names="__import__('os').system('false')"))
    with pytest.raises(ModelFormatError, match="'names' is not a literal"):
        read_metadata(path)


def test_foreign_file_detects_through_the_runtime(build) -> None:
    """The bbox model with Ultralytics' metadata only: the assumed pre-processing maps the box back."""
    path = _with_props(build("bbox", make_meta(["o"], size_hw=(64, 64))), _ultra_props(["defect"]))
    det = Detector(path)
    img = np.zeros((100, 200, 3), np.uint8)
    img[20:60, 50:150] = 255
    d = det(img)
    assert det.names == ["defect"] and len(d) == 1 and d.class_names == ["defect"]
    np.testing.assert_allclose(d.xyxy[0], [50, 20, 150, 60], atol=200 / 64 + 0.01)


def test_foreign_runtime_imports_neither_onnx_nor_torch(build) -> None:
    path = _with_props(build("bbox", make_meta(["o"])), _ultra_props(["o"]))
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from edgevision.runtime import Detector
        det = Detector({str(path)!r})
        assert det.describe()["origin"] == "foreign"
        det(np.zeros((50, 60, 3), np.uint8))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ultralytics", "onnx", "torchvision"))
        assert not heavy, heavy
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout


# --------------------------------------------------------------------------- adopt (onnx.helper graphs)


def _thresholds(path: Path, classes: dict[str, float]) -> Path:
    path.write_text(json.dumps({"schema": "edgevision.thresholds/2", "target": "manual", "value": None, "iou": 0.5,
                                "classes": classes}))
    return path


def test_adopt_round_trip_through_the_cli(build, tmp_path) -> None:
    src = _with_props(build("bbox", make_meta(["o"], size_hw=(64, 64))), {"producer_note": "kept"})
    names = tmp_path / "names.yaml"
    names.write_text("names:\n  0: scratch\n")
    before = _sha(src)
    out = tmp_path / "out dir" / "adopted model.onnx"
    r = run_cli("adopt", src, "--out", out, "--classes", names, "--imgsz", "64", "--preprocess", "pad_value=0",
                "--thresholds", _thresholds(tmp_path / "t.json", {"scratch": 0.4}))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrote" in r.stdout and "opened and ran" in r.stdout and before in r.stdout
    assert _sha(src) == before  # the source is never modified
    meta = read_metadata(out)
    assert meta.names == ["scratch"] and meta.output.layout == "yolo-raw" and meta.input.pad_value == 0
    assert meta.class_thresholds() == {"scratch": 0.4} and meta.opset == 17 and meta.edgevision_version
    s = meta.source
    assert s["adopted"] is True and s["origin"] == "adopted" and s["adopted_from"] == src.name
    assert s["source_sha256"] == before and s["given"] == ["names", "imgsz", "thresholds", "pad_value"]
    assert "pad" not in s["assumed"] and "letterbox, RGB, scale 1/255" in s["assumed"]
    props = metadata_props(out.read_bytes())
    assert props["producer_note"] == "kept" and set(props) == {"producer_note", METADATA_KEY}
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    assert m.graph == onnx.load(str(src)).graph
    d = Detector(out)
    assert d.describe()["origin"] == "adopted" and d.describe()["note"].startswith(f"adopted from {src.name}")
    img = np.zeros((64, 64, 3), np.uint8)
    img[10:20, 30:40] = 255
    assert Detector(out)(img).class_names == ["scratch"]
    # re-adopting an EdgeVision file keeps its document and pins what is given; renamed classes need new thresholds
    with pytest.raises(ConfigError, match="operating points .* --thresholds"):
        adopt_model(out, tmp_path / "again.onnx", classes=["crack"])
    again = adopt_model(out, tmp_path / "again.onnx", classes=["crack"],
                        thresholds=_thresholds(tmp_path / "t2.json", {"crack": 0.3}))
    assert again.metadata.names == ["crack"] and again.metadata.class_thresholds() == {"crack": 0.3}
    assert again.metadata.source["adopted_from"] == out.name and again.metadata.input.pad_value == 0


def test_adopt_refusals_leave_nothing(build, tmp_path) -> None:
    src = _with_props(build("bbox", make_meta(["o"], size_hw=(64, 64))), {})
    out = tmp_path / "o.onnx"
    cases = [
        ({"classes": ["a"], "imgsz": 96}, ConfigError, "fixed at 64x64"),
        ({"classes": ["a", "b"]}, ModelFormatError, "unknown output layout"),  # (B, 5, N) is not 4 + 2 classes
        ({"classes": ["a", "a"]}, ConfigError, "duplicate class name"),
        ({"classes": ["a"], "layout": "yolo-end2end"}, ModelFormatError, "needs one output \\(B, K, 6\\)"),
        ({"classes": ["a"], "layout": "yolo-rae"}, UnknownNameError, "Did you mean 'yolo-raw'"),
        ({"classes": ["a"], "thresholds": _thresholds(tmp_path / "t.json", {"b": 0.3})}, ConfigError,
         "operating points for classes"),
    ]
    for kw, err, match in cases:
        with pytest.raises(err, match=match):
            adopt_model(src, out, **kw)
        assert not out.exists() and list(tmp_path.glob(".o.onnx*")) == []
    with pytest.raises(ConfigError, match="never modifies"):
        adopt_model(src, src, classes=["a"])
    adopt_model(src, out, classes=["a"])
    with pytest.raises(OutputExistsError):
        adopt_model(src, out, classes=["a"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x0f\xff\xff")
    with pytest.raises(ModelFormatError, match="not an ONNX model"):
        adopt_model(garbage, tmp_path / "g2.onnx", classes=["a"])


def test_preprocess_and_class_file_parsing(tmp_path) -> None:
    assert parse_preprocess(["channel_order=bgr", "scale=1/255", "mean=0.485,0.456,0.406", "std=0.5", "pad_value=0"]) \
        == {"channel_order": "BGR", "scale": pytest.approx(1 / 255), "mean": (0.485, 0.456, 0.406),
            "std": (0.5, 0.5, 0.5), "pad_value": 0}
    with pytest.raises(UnknownNameError, match="Did you mean 'pad_value'"):
        parse_preprocess(["pad_valu=3"])
    with pytest.raises(UnknownNameError, match="letterbox"):
        parse_preprocess(["resize=crop"])
    for bad in ("scale", "mean=1,2", "std=0", "pad_value=300", "scale=1/0"):
        with pytest.raises(ConfigError):
            parse_preprocess([bad])
    (tmp_path / "n.txt").write_text("crack\n\n squat \n")
    (tmp_path / "n.json").write_text('["crack", "squat"]')
    (tmp_path / "bad.json").write_text('{"0": "a", "5": "b"}')
    assert read_class_names(tmp_path / "n.txt") == read_class_names(tmp_path / "n.json") == ["crack", "squat"]
    with pytest.raises(ConfigError, match="bad.json: class ids"):
        read_class_names(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="file not found"):
        read_class_names(tmp_path / "missing.txt")


def test_metadata_props_edited_without_onnx(build) -> None:
    path = _with_props(build("bbox", make_meta(["o"])), {"a": "1", "b": "2"})
    data = path.read_bytes()
    assert metadata_props(data) == {"a": "1", "b": "2"} and opset(data) == 17
    new = with_metadata(data, {"b": "two", "c": "3"})
    assert metadata_props(new) == {"a": "1", "b": "two", "c": "3"}
    m, ref = onnx.load_from_string(new), onnx.load(str(path))
    assert m.graph == ref.graph and m.opset_import == ref.opset_import and m.ir_version == ref.ir_version
    with pytest.raises(ProtoError):
        metadata_props(data[:-3])
    with pytest.raises(ProtoError):
        metadata_props(b"\x0b\x00")  # wire type 3 (a group)
