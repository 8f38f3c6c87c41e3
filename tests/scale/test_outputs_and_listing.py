"""What the cluster run shares with the local command, checked without a cluster: the streamed
``predictions.json`` writer, the streamed listing of a folder or a list file, batched prediction, and the
refusals of ``--ray`` options (a bad option fails before Ray is imported)."""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.cli import bare_ray
from edgevision.core.errors import ConfigError
from edgevision.infer import iter_source_files, iter_sources, open_model, predict_source, source_files
from edgevision.outputs import write_predictions_json
from tests.helpers import run_cli
from tests.runtime.conftest import bbox_model, make_meta


@pytest.mark.parametrize("images, unreadable", [(0, 0), (1, 0), (3, 2), (0, 1)])
def test_the_streamed_json_is_json_dumps_byte_for_byte(images: int, unreadable: int) -> None:
    rng = np.random.default_rng(images * 10 + unreadable)
    names = ["crack", "squat", "éclat"]
    entries = []
    for i in range(images):
        k = int(rng.integers(0, 3))
        ids = rng.integers(0, 3, k).tolist()
        entries.append({"name": f"d/ïmg {i}.png", "size_hw": [64, 80],
                        "boxes": [[round(float(v), 3) for v in rng.uniform(0, 60, 4)] for _ in range(k)],
                        "class_ids": ids, "class_names": [names[j] for j in ids],
                        "scores": [round(float(s), 6) for s in rng.uniform(0, 1, k)],
                        "decision": "reject" if k else "accept"})
    bad = [{"name": f"bad{i}.jpg", "error": "not an image"} for i in range(unreadable)]
    head = {"schema": "edgevision.predictions/1", "classes": names, "model": "m.onnx", "model_kind": "onnx",
            "thresholds": {n: 0.25 for n in names}, "threshold_source": "defaults.conf 0.25", "threshold_rules": {}}
    f = io.StringIO()
    summary = write_predictions_json(f, head, iter(entries), iter(bad))
    counts = {n: {"detections": sum(e["class_names"].count(n) for e in entries),
                  "images": sum(n in e["class_names"] for e in entries)} for n in names}
    want = {**head, "images": entries, "unreadable": bad,
            "summary": {"images": images, "unreadable": unreadable,
                        "rejected": sum(e["decision"] == "reject" for e in entries),
                        "accepted": sum(e["decision"] == "accept" for e in entries), "classes": counts}}
    assert f.getvalue() == json.dumps(want, indent=1, ensure_ascii=False) + "\n"
    assert summary == want["summary"]


def _tree(root: Path) -> None:
    for rel in ("b.png", "a/z.jpg", "a.png", "a/b/c.png", "B.PNG", "a b/ü.jpg", "notes.txt", "a/b.jpg", ".hidden.png"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_a_folder_streams_in_the_order_of_sorted_rglob(tmp_path: Path) -> None:
    _tree(tmp_path / "src")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "o.png").write_bytes(b"x")
    os.symlink(tmp_path / "outside", tmp_path / "src" / "link")  # a symlinked folder is not followed
    src = tmp_path / "src"
    want = [p.relative_to(src).as_posix() for p in sorted(src.rglob("*"))
            if p.is_file() and p.suffix.lower() in (".png", ".jpg") and "link" not in p.parts]
    got = [n for n, _ in iter_source_files(str(src))]
    assert got == want and len(got) == 8
    assert [n for n, _ in source_files(str(src))[0]] == want


def test_a_list_file_is_read_in_its_order_relative_to_its_folder(tmp_path: Path) -> None:
    img = np.full((32, 32, 3), 20, np.uint8)
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), img)
    cv2.imwrite(str(tmp_path / "abs.png"), img)
    lst = tmp_path / "lists" / "archive.txt"
    lst.parent.mkdir()
    lst.write_text(f"# line images, shift 2\n../imgs/a.png\n\n{tmp_path / 'abs.png'}\n./missing.png\n")
    got = list(iter_source_files(str(lst)))
    assert [n for n, _ in got] == ["../imgs/a.png", str(tmp_path / "abs.png"), "missing.png"]
    frames = list(iter_sources(str(lst)))
    assert [f.error is None for f in frames] == [True, True, False]
    assert "not found" in (frames[2].error or "")
    (tmp_path / "bad.txt").write_text("a.png\nreadme.md\n")
    with pytest.raises(ConfigError, match=r"bad.txt:2: 'readme.md' is not an image file"):
        list(iter_source_files(str(tmp_path / "bad.txt")))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="names no image"):
        list(iter_source_files(str(tmp_path / "empty.txt")))


def test_batched_prediction_equals_single_calls_and_isolates_a_bad_image(tmp_path: Path) -> None:
    """A dynamic batch axis runs 16 images per session.run; a bad image in a batch is listed, not fatal."""
    model = bbox_model(tmp_path / "m.onnx", make_meta(["defect"], size_hw=(64, 64)), score=0.9)
    m = open_model(model, providers=["CPUExecutionProvider"], threads=1)
    assert m.batch == 16 and m.detect_many is not None
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        img = np.full((48 + i, 64, 3), 10, np.uint8)
        x, y = (int(v) for v in rng.integers(0, 30, 2))
        img[y:y + 12, x:x + 9] = 250
        cv2.imwrite(str(d / f"{i:02d}.png"), img)
    (d / "05b.png").write_bytes(b"broken")
    frames = list(iter_sources(str(d)))
    frames[7].image = frames[7].image.astype(np.float32)  # a dtype the runtime refuses: named in the batch
    batched = predict_source(m, iter(frames), conf=None, iou=0.7, max_det=10)
    single = predict_source(replace(m, batch=1, detect_many=None), iter(frames), conf=None, iou=0.7, max_det=10)
    assert [r.name for r in batched.records] == [r.name for r in single.records] and len(batched.records) == 19
    for a, b in zip(batched.records, single.records):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    assert [n for n, _ in batched.unreadable] == ["05b.png", frames[7].name]


def test_a_bare_ray_means_a_local_cluster() -> None:
    assert bare_ray(["predict", "m", "s", "--ray"]) == ["predict", "m", "s", "--ray", "local"]
    assert bare_ray(["predict", "m", "s", "--ray", "--out", "d"]) == ["predict", "m", "s", "--ray", "local", "--out", "d"]
    assert bare_ray(["predict", "--ray", "auto", "m"]) == ["predict", "--ray", "auto", "m"]


def test_ray_options_are_refused_without_ray_and_bad_runs_before_the_cluster(tmp_path: Path) -> None:
    model = bbox_model(tmp_path / "m.onnx", make_meta(["defect"]), score=0.9)
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    res = run_cli("predict", model, tmp_path / "imgs", "--out", tmp_path / "o", "--resume")
    assert res.returncode == 2 and "--resume are options of a Ray run: add --ray" in res.stderr
    res = run_cli("predict", model, tmp_path / "imgs", "--out", tmp_path / "o", "--resume", "--ray")
    assert res.returncode == 2 and "--resume: no interrupted run to continue" in res.stderr
    (tmp_path / "clip.mp4").write_bytes(b"x")
    res = run_cli("predict", model, tmp_path / "clip.mp4", "--out", tmp_path / "o", "--ray")
    assert res.returncode == 2 and "predict a video locally" in res.stderr
    (tmp_path / ".o.ray-partial" / "shards").mkdir(parents=True)
    (tmp_path / ".o.ray-partial" / "shards" / "manifest.json").write_text(json.dumps(
        {"source": str(tmp_path / "imgs"), "model": str(model), "model_sha256": "0" * 64, "predict": {},
         "shard_size": 256, "images": 1, "shards": 1}))
    res = run_cli("predict", model, tmp_path / "imgs", "--out", tmp_path / "o", "--ray")
    assert res.returncode == 2 and "continue it with --resume" in " ".join(res.stderr.split())
    res = run_cli("predict", model, tmp_path / "imgs", "--out", tmp_path / "o", "--ray", "--resume")
    assert res.returncode == 2 and "was started with another model_sha256, predict" in " ".join(res.stderr.split())
    assert not (tmp_path / "o").exists()
    res = run_cli("predict", model, tmp_path / "imgs", "--out", tmp_path / "imgs" / "o", "--ray")
    assert res.returncode == 2 and "--out" in res.stderr and not (tmp_path / "imgs" / "o").exists()
    res = run_cli("eval", "--predictions", tmp_path / "p.json", "--data", tmp_path, "--actors", "2")
    assert res.returncode == 2 and "--actors is an option of a Ray run" in res.stderr


def test_object_storage_uris_read_through_pyarrow_give_the_folders_results(tmp_path: Path) -> None:
    """A ``file://`` URI goes through pyarrow's filesystem (listing, then one read per object): the same
    predictions.json as the folder; an unknown scheme is one line."""
    pytest.importorskip("pyarrow")
    model = bbox_model(tmp_path / "m.onnx", make_meta(["defect"], size_hw=(64, 64)), score=0.9)
    d = tmp_path / "store" / "line 2"
    (d / "cam").mkdir(parents=True)
    for i in range(5):
        img = np.full((40, 50 + i, 3), 10, np.uint8)
        img[5:20, 3 + i:30] = 240
        cv2.imwrite(str(d / ("cam" if i % 2 else ".") / f"p{i}.png"), img)
    (d / "cam" / "bad.png").write_bytes(b"no image")
    (d / "notes.md").write_text("not an image")
    res = run_cli("predict", model, d, "--out", tmp_path / "folder", "--format", "csv")
    assert res.returncode == 0, res.stderr
    res = run_cli("predict", model, d.as_uri(), "--out", tmp_path / "uri", "--format", "csv")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "uri" / "predictions.csv").read_bytes() == (tmp_path / "folder" / "predictions.csv").read_bytes()
    doc, ref = (json.loads((tmp_path / o / "predictions.json").read_text()) for o in ("uri", "folder"))
    (bad,), (ref_bad,) = doc.pop("unreadable"), ref.pop("unreadable")  # the reason names where the bytes were
    assert doc == ref and doc["summary"]["images"] == 5 and bad["name"] == ref_bad["name"] == "cam/bad.png"
    assert bad["error"].startswith(d.as_uri() + "/cam/bad.png: not a PNG")
    assert bad["error"].split(": ", 1)[1] == ref_bad["error"].split(": ", 1)[1]
    res = run_cli("predict", model, "nosuch://bucket/x", "--out", tmp_path / "o")
    assert res.returncode == 2 and res.stderr.startswith("error: nosuch://bucket/x: cannot open this storage")
    assert len(res.stderr.strip().splitlines()) == 1
