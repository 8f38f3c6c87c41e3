"""edgevision inspect: real FiftyOne, its real database (mongod), real files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevision.convert import read_dataset
from edgevision.core.errors import ConfigError, DatasetError
from edgevision.evaluate import evaluate, read_predictions
from edgevision.inspect.export import export_from_fiftyone
from edgevision.inspect.load import LoadRequest, load_into_fiftyone
from tests.helpers import run_cli, tree_digest


def _request(voc: Path, preds: Path | None, name: str, **kw: Any) -> LoadRequest:
    ds = read_dataset(voc).dataset
    p = read_predictions(preds, ds.images, ds.labels) if preds is not None else None
    return LoadRequest(name=name, gt=ds.images, labels=ds.labels, preds=p, **kw)


@pytest.fixture(scope="module")
def loaded(fo: Any, voc: Path, voc_preds: Path) -> tuple[Any, LoadRequest]:
    req = _request(voc, voc_preds, "voc-preds")
    return load_into_fiftyone(req), req


def test_fiftyone_map_agrees_with_edgevisions_evaluator(loaded: tuple[Any, LoadRequest]) -> None:
    from edgevision.evaluate.coco import coco_evaluate

    res, req = loaded
    assert req.preds is not None
    ev = coco_evaluate(req.gt, req.preds, req.labels, max_dets=100)
    assert res.fo_map50_95 is not None and 0.05 < res.fo_map50_95 < 0.95 and 0.3 < res.fo_map50 < 0.95  # a real curve
    assert abs(res.fo_map50_95 - ev.map50_95) <= 1e-3
    assert abs(res.fo_map50 - ev.map50) <= 1e-3
    assert (res.ev_map50_95, res.ev_map50) == (ev.map50_95, ev.map50)
    for row in res.rows:
        ap = ev.per_class[row.name]
        assert row.gt == ap["gt"]
        assert abs(row.ap50_95 - ap["ap50_95"]) <= 1e-3 and abs(row.ap50 - ap["ap50"]) <= 1e-3


def test_tp_fp_fn_at_the_operating_point_equal_edgevisions_counts(fo: Any, loaded: tuple[Any, LoadRequest]) -> None:
    res, req = loaded
    report = evaluate(req.gt, req.preds, req.labels, conf=0.25, iou=0.5)
    assert res.thresholds == {c: 0.25 for c in req.labels.names}
    for row in res.rows:
        p = report.per_class[row.name]
        assert (row.tp, row.fp, row.fn) == (p.tp, p.fp, p.fn), row.name
        assert row.tp + row.fn == row.gt
    ds = fo.load_dataset("voc-preds")
    tags = ds.count_label_tags()
    assert tags["tp"] == 2 * sum(r.tp for r in res.rows)  # the detection and the object it found
    assert tags["fp"] == sum(r.fp for r in res.rows)
    assert tags["fn"] == sum(r.fn for r in res.rows)
    assert tags.get("ignored", 0) > 0  # detections on difficult objects: neither TP nor FP
    # every object carries FiftyOne's own evaluation attributes too
    gt = [d for s in ds.iter_samples() for d in s["ground_truth"].detections]
    assert all(d["eval"] in ("tp", "fn") for d in gt)
    assert sum(bool(d["ev_ignore"]) for d in gt) == sum(bool(a.get("difficult")) for r in req.gt
                                                        for a in (r.attributes or []))


def _assert_decisions(ds: Any, thresholds: dict[str, float]) -> None:
    """An image is rejected when any detection reaches its class's operating point (image_decisions' rule)."""
    for s in ds.iter_samples():
        passing = any(d.confidence >= thresholds[d.label] for d in s["predictions"].detections)
        assert s["decision"] == ("reject" if passing else "accept"), s["ev_name"]
        assert "escape" not in s.tags or s["decision"] == "accept"
        assert "false_reject" not in s.tags or s["decision"] == "reject"


def test_samples_carry_splits_decisions_and_saved_views(fo: Any, loaded: tuple[Any, LoadRequest]) -> None:
    res, req = loaded
    ds = fo.load_dataset("voc-preds")
    assert ds.persistent and len(ds) == len(req.gt) == res.samples
    counts = ds.count_sample_tags()
    for split, n in res.splits.items():
        assert counts[split] == n
    assert counts.get("escape", 0) == res.decisions["escapes"]
    assert counts.get("false_reject", 0) == res.decisions["false_rejects"]
    assert ds.count_values("decision")["reject"] > 0
    _assert_decisions(ds, res.thresholds)
    assert set(ds.list_saved_views()) == {"missed", "false_positives"}
    missed = ds.load_saved_view("missed")
    assert len(missed) > 0 and all(s["eval_op_fn"] > 0 for s in missed)
    first = ds.first()
    assert first.metadata.width == 96 and first["ev_name"]
    assert ds.default_classes == req.labels.names
    assert ds.info["edgevision"]["thresholds"] == res.thresholds


def test_shapes_ride_along_and_an_edited_box_drops_its_stale_shape(fo: Any, tmp_path: Path) -> None:
    """A polygon and RLE masks (compressed and as runs) come back from a FiftyOne sample unchanged; a box
    edited in FiftyOne drops the shape that no longer fits it (and only that one)."""
    import cv2

    from edgevision.core.dataset import ImageRecord, LabelMap
    from edgevision.core.geometry import RLE, Polygon
    from edgevision.inspect.samples import GT_FIELD, record_to_sample, sample_to_record

    img = tmp_path / "part.png"
    cv2.imwrite(str(img), np.zeros((40, 60, 3), np.uint8))
    mask = np.zeros((40, 60), np.uint8)
    mask[5:15, 30:50] = 1
    poly = Polygon.from_flat([[2, 3, 20, 3, 20, 25, 2, 25]])
    shapes = [poly, RLE.encode(mask), RLE.from_coco(RLE.encode(mask).to_coco(compressed=False))]
    rec = ImageRecord(name="part.png", size_hw=(40, 60), path=img, boxes=np.array([s.bbox_xyxy() for s in shapes]),
                      class_ids=np.array([0, 1, 1]), shapes=list(shapes))
    np.testing.assert_array_equal(rec.boxes, [[2, 3, 20, 25], [30, 5, 50, 15], [30, 5, 50, 15]])
    labels = LabelMap(["scratch", "pit"])
    sample = record_to_sample(fo, rec, labels, [False, False, False])
    back, dropped = sample_to_record(sample, GT_FIELD, labels, rec.name, rec.size_hw)
    assert dropped == 0 and back.shapes == rec.shapes
    np.testing.assert_array_equal(back.boxes, rec.boxes)
    sample[GT_FIELD].detections[2].bounding_box = [0.1, 0.1, 0.2, 0.2]  # the box moved: the mask is stale
    back, dropped = sample_to_record(sample, GT_FIELD, labels, rec.name, rec.size_hw)
    assert dropped == 1 and back.shapes == [shapes[0], shapes[1], None]
    np.testing.assert_array_equal(back.boxes[2], [6, 4, 18, 12])


def test_export_a_tag_after_fixes_through_edgevisions_writers(fo: Any, loaded: tuple[Any, LoadRequest],
                                                               tmp_path: Path) -> None:
    """Tag two images for relabelling, fix a box and add a class in FiftyOne, export the tag as COCO."""
    _, req = loaded
    ds = fo.load_dataset("voc-preds").clone("voc-curated", persistent=True)
    picked = [s for s in ds.iter_samples() if len(s["ground_truth"].detections) >= 2][:2]
    s0 = picked[0]
    w, h = s0.metadata.width, s0.metadata.height
    s0["ground_truth"].detections[0].bounding_box = [10 / w, 12 / h, 30 / w, 20 / h]
    s0["ground_truth"].detections.append(fo.Detection(label="rust", bounding_box=[0.5, 0.5, 0.25, 0.25]))
    s0.save()
    ds.select([s.id for s in picked]).tag_samples("relabel")

    out = tmp_path / "fixed"
    r = run_cli("inspect", "export", "voc-curated", out, "--view", "relabel", "--to", "coco")
    assert r.returncode == 0, r.stderr
    assert "wrote 2 images" in r.stdout and "sample tag 'relabel'" in r.stdout and "rust" in r.stdout
    back = read_dataset(out).dataset
    assert back.labels.names == req.labels.names + ["rust"]
    by_name = {x.name.rsplit("/", 1)[-1]: x for x in back.images}
    fixed = by_name[Path(s0["ev_name"]).name]
    assert fixed.boxes[0].tolist() == [10.0, 12.0, 40.0, 32.0]
    assert fixed.boxes[-1].tolist() == [w * 0.5, h * 0.5, w * 0.75, h * 0.75]
    assert back.labels.names[int(fixed.class_ids[-1])] == "rust"
    orig = {x.name: x for x in req.gt}[s0["ev_name"]]
    assert np.array_equal(fixed.boxes[1:len(orig)], orig.boxes[1:])  # untouched boxes come back exactly
    assert fixed.split == orig.split
    assert len(list(out.rglob("*.png"))) == 2


def test_whole_dataset_round_trips_exactly(fo: Any, loaded: tuple[Any, LoadRequest], tmp_path: Path) -> None:
    _, req = loaded
    r = export_from_fiftyone("voc-preds", tmp_path / "again", "voc")
    assert r.samples == len(req.gt) and r.selected_by == "the whole dataset" and r.new_classes == []
    back = {x.name: x for x in read_dataset(tmp_path / "again").dataset.images}
    for g in req.gt:
        b = back[g.name]
        assert np.array_equal(b.boxes, g.boxes) and np.array_equal(b.class_ids, g.class_ids), g.name
        assert b.split == g.split and b.size_hw == g.size_hw
        assert [bool(a.get("difficult")) for a in (b.attributes or [{}] * len(b))] == \
               [bool(a.get("difficult")) for a in (g.attributes or [{}] * len(g))]


def test_a_saved_view_exports_its_images_with_all_their_objects(fo: Any, loaded: tuple[Any, LoadRequest],
                                                                 tmp_path: Path) -> None:
    _, req = loaded
    missed = fo.load_dataset("voc-preds").load_saved_view("missed")  # shows only the missed objects
    names = set(missed.values("ev_name"))
    r = export_from_fiftyone("voc-preds", tmp_path / "m", "yolo", view="missed")
    assert r.samples == len(names) > 0 and r.selected_by == "saved view 'missed'"
    assert r.objects == sum(len(g) for g in req.gt if g.name in names) > missed.count("ground_truth.detections")


def test_a_failed_load_leaves_no_dataset_and_keeps_the_old_one(fo: Any, voc: Path, voc_preds: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import edgevision.inspect.load as load_mod

    load_into_fiftyone(_request(voc, None, "keep-me"))
    calls = {"n": 0}
    real = load_mod.record_to_sample

    def breaks(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 20:
            raise DatasetError("planted failure")
        return real(*a, **k)

    monkeypatch.setattr(load_mod, "record_to_sample", breaks)
    with pytest.raises(DatasetError, match="planted failure"):
        load_into_fiftyone(_request(voc, voc_preds, "keep-me", overwrite=True))
    names = fo.list_datasets()
    assert "keep-me" in names and not [n for n in names if ".loading-" in n]
    assert not fo.load_dataset("keep-me").has_field("predictions")  # the old one, untouched
    with pytest.raises(ConfigError, match="already exists.*--overwrite"):
        load_into_fiftyone(_request(voc, None, "keep-me"))


def test_cli_load_with_a_model_prints_both_maps_and_the_operating_points(fo: Any, learned: dict[str, Path],
                                                                         cli: Any) -> None:
    code, stdout, stderr = cli("inspect", "--data", learned["sample"], "--split", "val", "--model", learned["onnx"],
                               "--name", "learned")
    assert code == 0, stderr
    text = " ".join(stdout.split())
    assert "FiftyOne dataset learned:" in text and f"operating points of {learned['onnx']}" in text
    fo_map = float(text.split("mAP50-95 ")[1].split(",")[0])
    ev_map = float(text.split("EdgeVision's evaluator: ")[1].split(",")[0])
    assert fo_map > 0.1 and abs(fo_map - ev_map) <= 1e-3
    assert "edgevision inspect launch learned" in text
    ds = fo.load_dataset("learned")
    assert set(ds.distinct("tags")) == {"val"} | ({"escape"} if ds.match_tags("escape") else set()) | (
        {"false_reject"} if ds.match_tags("false_reject") else set())
    assert ds.count_label_tags().get("tp", 0) > 0
    thresholds = ds.info["edgevision"]["thresholds"]
    _assert_decisions(ds, thresholds)


def test_bad_input_is_one_line_and_leaves_nothing(fo: Any, voc: Path, voc_preds: Path, tmp_path: Path,
                                                  cli: Any) -> None:
    before = tree_digest(voc)
    other = tmp_path / "other.json"
    doc = json.loads(voc_preds.read_text())
    doc["images"][0]["name"] = "not-in-the-dataset.png"
    other.write_text(json.dumps(doc))
    cases = [
        (["inspect", "--data", voc, "--predictions", other, "--name", "bad"], "not-in-the-dataset.png"),
        (["inspect", "export", "no-such-dataset", tmp_path / "o", "--to", "coco"], "no FiftyOne dataset 'no-such-dataset'"),
        (["inspect", "export", "voc-preds", tmp_path / "o", "--view", "nope", "--to", "coco"],
         "no saved view or tag 'nope' (saved views: "),
        (["inspect", "export", "voc-preds", tmp_path / "o", "--to", "nosuchformat"], "nosuchformat"),
        (["inspect", "--data", voc, "--name", "voc-preds"], "already exists"),
        (["inspect", "--data", voc, "--model", tmp_path / "none.onnx"], "does not exist"),
        (["inspect", "launch", "no-such-dataset"], "no FiftyOne dataset 'no-such-dataset'"),
    ]
    for args, needle in cases:
        code, stdout, stderr = cli(*args)
        assert code == 2, (args, stdout, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (args, stderr)
    r = run_cli(*cases[1][0])  # and through a fresh interpreter, as a user runs it
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and cases[1][1] in r.stderr
    assert "bad" not in fo.list_datasets() and not (tmp_path / "o").exists()
    assert tree_digest(voc) == before


def test_list_and_delete(fo: Any, voc: Path, cli: Any) -> None:
    load_into_fiftyone(_request(voc, None, "to-delete"))
    code, stdout, _ = cli("inspect", "list")
    assert code == 0 and "to-delete" in stdout and "voc-preds" in stdout
    code, stdout, _ = cli("inspect", "delete", "to-delete", "--yes")
    assert code == 0 and "deleted FiftyOne dataset 'to-delete'" in stdout
    assert "to-delete" not in fo.list_datasets()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_launch_serves_the_app_on_localhost_and_stops_on_sigterm(fo: Any, loaded: tuple[Any, LoadRequest]) -> None:
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "edgevision", "inspect", "launch", "voc-preds", "--view", "missed",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline, page = time.monotonic() + 120, ""
        while time.monotonic() < deadline and proc.poll() is None:
            if not page:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                        page = resp.read().decode()
                except OSError:
                    pass
            if page and any("FiftyOne App on" in ln for ln in lines):
                break
            time.sleep(0.5)
        assert "<html" in page.lower() and any("FiftyOne App on" in ln for ln in lines), "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert f"http://localhost:{port}/" in output and "saved view 'missed'" in output and "App stopped" in output
    with socket.socket() as s:  # the App server went with it
        assert s.connect_ex(("127.0.0.1", port)) != 0
