"""``edgevision predict / eval --ray`` on a real two-node Ray cluster on this machine (loopback only).

The cluster is `ray.cluster_utils.Cluster` (what Ray's own tests use for several nodes on one machine): a head and
a second node, each with its own raylet and one CPU. Every result is compared, byte for byte, with what the local
command writes for the same model and images: predictions.json, predictions.csv and the annotated images; eval's
saved predictions. One test kills a node while it is running a shard; one interrupts a run and resumes it.
The model is a small convolutional detector with random weights (many boxes, scores spread over (0, 1), NMS at
work) with a dynamic batch axis, so the actors run batches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import network_attempts, run_cli
from tests.runtime.conftest import make_meta, save_model

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray reads it at import: nodes on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

NAMES = ["crack", "squat", "spall"]


def conv_model(path: Path) -> Path:
    """yolo-raw (B, 4 + 3, 64): one 8x8 stride-8 convolution with random weights, sigmoid, scaled to pixels."""
    rng = np.random.default_rng(7)
    c = 4 + len(NAMES)
    w = rng.normal(0, 0.05, (c, 3, 8, 8)).astype(np.float32)
    scale = np.array([64, 64, 24, 24, 1, 1, 1], np.float32).reshape(1, c, 1, 1)
    meta = make_meta(NAMES, size_hw=(64, 64))
    nodes = [
        helper.make_node("Conv", [meta.input.name, "w"], ["f"], strides=[8, 8], kernel_shape=[8, 8]),
        helper.make_node("Sigmoid", ["f"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["output0"]),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "scale"),
             numpy_helper.from_array(np.array([0, c, 64], np.int64), "shape")]
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", c, 64])
    return save_model(path, nodes, [out], meta, initializers=inits)


@pytest.fixture(scope="module")
def cluster() -> Any:
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c, worker
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """26 images in two folders (varied sizes, grey and 16-bit among them), one unreadable; the model; the local
    command's outputs."""
    root = tmp_path_factory.mktemp("archive")
    imgs = root / "line 1"
    rng = np.random.default_rng(3)
    for i in range(26):
        h, w = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        if i % 7 == 3:
            img = img[:, :, 0]
        if i % 9 == 4:
            img = img.astype(np.uint16) * 257
        sub = imgs / ("cam b" if i % 3 else "cam a")
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"part-{i:03d}.png"), img)
    (imgs / "cam a" / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n-cut-")
    model = conv_model(root / "m.onnx")
    local = root / "local"
    res = run_cli("predict", model, imgs, "--out", local, "--format", "csv", "--save-images")
    assert res.returncode == 0, res.stderr
    return {"images": imgs, "model": model, "local": local, "root": root}


def same_outputs(a: Path, b: Path, *, uri: bool = False) -> None:
    """Equal outputs, byte for byte (from a URI: but the unreadable file's reason, which names where it was read)."""
    names = ("predictions.json", "predictions.csv")
    if uri:
        da, db = (json.loads((x / "predictions.json").read_text()) for x in (a, b))
        for d in (da, db):
            for u in d["unreadable"]:
                u["error"] = u["error"].split(": ", 1)[1]
        assert da == db
        names = ("predictions.csv",)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ia = {p.relative_to(a / "images"): p.read_bytes() for p in (a / "images").rglob("*") if p.is_file()}
    ib = {p.relative_to(b / "images"): p.read_bytes() for p in (b / "images").rglob("*") if p.is_file()}
    assert ia == ib and len(ia) == 26


def test_a_local_cluster_for_the_call_matches_the_local_command_offline(archive: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    """``--ray`` with no address starts a cluster for the call on loopback; no socket goes anywhere else."""
    out = tmp_path / "ray"
    res = run_cli("predict", archive["model"], archive["images"], "--out", out, "--format", "csv", "--save-images",
                  "--shard-size", "5", "--ray", block_network=tmp_path / "block", loopback=True)
    assert res.returncode == 0, res.stderr
    assert network_attempts(tmp_path / "block") == []
    same_outputs(archive["local"], out)
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert manifest["images"] == 27 and manifest["shards"] == 6 and manifest["shard_size"] == 5
    assert sorted(p.name for p in (out / "shards" / "parts").iterdir()) == [f"{i:06d}.jsonl" for i in range(6)]
    assert "Ray cluster local: 1 node(s)" in res.stdout and "26 image(s): " in res.stdout
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["summary"]["images"] == 26 and [u["name"] for u in doc["unreadable"]] == ["cam a/torn.png"]
    assert not list(tmp_path.glob(".*ray-partial"))


def test_two_nodes_and_eval_match_the_local_command(cluster: Any, archive: dict[str, Path], tmp_path: Path) -> None:
    from edgevision.scale import RayOptions, predict_on_ray

    c, worker = cluster
    out = tmp_path / "ray"
    seen: list[str] = []
    s = predict_on_ray(archive["model"], str(archive["images"]), out, fmt="csv", spec=_spec(),
                       options=RayOptions(address=c.address, shard_size=3), on_cluster=seen.append)
    same_outputs(archive["local"], out)
    assert seen == [f"Ray cluster {c.address}: 2 node(s), 2 CPU(s)"] and s.actors == 2 and s.shards == 9
    # object storage: the driver lists a URI through pyarrow, each worker reads its shard's objects
    predict_on_ray(archive["model"], archive["images"].as_uri(), tmp_path / "uri", fmt="csv", spec=_spec(),
                   options=RayOptions(address=c.address, shard_size=5))
    same_outputs(archive["local"], tmp_path / "uri", uri=True)
    # eval: the dataset is the local predictions above 0.5 as ground truth (a COCO file over the same images)
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n}
                                                                            for i, n in enumerate(NAMES)]}
    doc = json.loads((archive["local"] / "predictions.json").read_text())
    for i, im in enumerate(doc["images"]):
        coco["images"].append({"id": i + 1, "file_name": "line 1/" + im["name"], "height": im["size_hw"][0],
                               "width": im["size_hw"][1]})
        for b, cid, s in zip(im["boxes"], im["class_ids"], im["scores"]):
            if s > 0.5:
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                            "category_id": cid + 1, "iscrowd": 0, "area": (b[2] - b[0]) * (b[3] - b[1]),
                                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    data = archive["root"] / "gt.json"
    data.write_text(json.dumps(coco))
    res = run_cli("eval", archive["model"], "--data", data, "--split", "all", "--json", tmp_path / "ray.json",
                  "--save-predictions", tmp_path / "ray-preds.json", "--ray", c.address, "--actors", "2")
    assert res.returncode == 0, res.stderr
    # the same predictions as eval's local path (OnnxPredictor over the split's records), byte for byte when saved
    from edgevision.convert import read_dataset
    from edgevision.evaluate import evaluate, write_predictions
    from edgevision.models import LOW_CONF, OnnxPredictor, predict_records, split_for_model

    pred = OnnxPredictor(archive["model"])
    gt = split_for_model(read_dataset(data, "auto").dataset, "all", data, list(pred.labels.names))
    local = predict_records(pred, gt, conf=LOW_CONF, max_det=100)
    write_predictions(tmp_path / "local-preds.json", local, pred.labels)
    assert (tmp_path / "local-preds.json").read_bytes() == (tmp_path / "ray-preds.json").read_bytes()
    rep = json.loads((tmp_path / "ray.json").read_text())
    coco = evaluate(gt, local, pred.labels, conf=0.25, iou=0.5, max_dets=100).coco
    assert rep["coco"]["map50"] == pytest.approx(coco.map50) and coco.map50 > 0.5


def test_a_node_killed_mid_run_loses_and_duplicates_nothing(cluster: Any, archive: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """Actors of 2 threads fit only on a third, 2-CPU node. When its actor finishes its first shard (its second is
    queued on it), the node is removed (raylet and workers killed) and another 2-CPU node joins, as an autoscaler
    would bring one: the replacement actor starts there and runs the lost shard again. The outputs equal the local
    command's."""
    from edgevision.scale import RayOptions, predict_on_ray

    c, _ = cluster
    doomed = c.add_node(num_cpus=2)
    c.wait_for_nodes()
    events: list[Any] = []

    def progress(summary: Any, total: int) -> None:
        if not events:
            assert summary.nodes == {doomed.node_id}
            c.remove_node(doomed, allow_graceful=False)
            events.append(c.add_node(num_cpus=2))

    try:
        s = predict_on_ray(archive["model"], str(archive["images"]), tmp_path / "ray", fmt="csv", spec=_spec(),
                           options=RayOptions(address=c.address, shard_size=4, threads=2), progress=progress)
    finally:
        for node in events:
            c.remove_node(node)
    assert events and s.retried >= 1 and s.actors == 1
    assert s.nodes == {doomed.node_id, events[0].node_id}
    same_outputs(archive["local"], tmp_path / "ray")
    assert s.images == 26 and s.unreadable == 1 and s.shards == 7


def test_a_session_that_cannot_start_on_the_nodes_ends_the_run_with_its_error(cluster: Any, archive: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    """The driver opens the model on the CPU; the actors are asked for a provider their onnxruntime lacks: the run
    ends with the nodes' one-line error (not a retry loop), and the partial folder stays for --resume."""
    from edgevision.core.errors import EdgeVisionError
    from edgevision.scale import RayOptions, predict_on_ray
    from edgevision.scale.run import partial_dir

    c, _ = cluster
    with pytest.raises(EdgeVisionError, match=r"starting a model session on the cluster failed: ConfigError: "
                                              r"execution provider 'NoSuchExecutionProvider' is not available"):
        predict_on_ray(archive["model"], str(archive["images"]), tmp_path / "ray",
                       options=RayOptions(address=c.address, providers=["NoSuchExecutionProvider"]))
    assert (partial_dir(tmp_path / "ray") / "shards" / "manifest.json").is_file() and not (tmp_path / "ray").exists()


def _spec() -> Any:
    from edgevision.scale.run import PredictSpec

    return PredictSpec(save_images=True)


def test_an_interrupted_run_resumes_its_unfinished_shards(cluster: Any, archive: dict[str, Path],
                                                          tmp_path: Path) -> None:
    from edgevision.core.errors import ConfigError
    from edgevision.scale import RayOptions, predict_on_ray
    from edgevision.scale.run import partial_dir

    c, _ = cluster
    out = tmp_path / "ray"

    def stop(summary: Any, total: int) -> None:
        if summary.images + summary.unreadable >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_on_ray(archive["model"], str(archive["images"]), out, fmt="csv", spec=_spec(), progress=stop,
                       options=RayOptions(address=c.address, shard_size=4))
    parts = partial_dir(out) / "shards" / "parts"
    done = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    assert 2 <= len(done) < 7 and not out.exists()
    with pytest.raises(ConfigError, match="another shard_size"):  # the manifest decides; refused before Ray
        predict_on_ray(archive["model"], str(archive["images"]), out, spec=_spec(), resume=True,
                       options=RayOptions(address=c.address, shard_size=5))
    s = predict_on_ray(archive["model"], str(archive["images"]), out, fmt="csv", spec=_spec(), resume=True,
                       options=RayOptions(address=c.address, shard_size=4))
    assert s.resumed >= len(done) and s.shards == 7 and s.images == 26 and s.unreadable == 1
    same_outputs(archive["local"], out)
    assert {n: t for n, t in ((p.name, p.stat().st_mtime_ns) for p in (out / "shards" / "parts").iterdir())
            if n in done} == done  # finished shards were not run again
    assert not partial_dir(out).exists()
