"""The torchvision (SSDlite) backend: real training on synthetic images, resume, Ctrl-C, prediction."""

from __future__ import annotations

import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from edgevision.core.dataset import Dataset, ImageRecord, LabelMap  # noqa: E402
from edgevision.core.errors import ConfigError  # noqa: E402
from edgevision.data.split import split_dataset  # noqa: E402
from edgevision.data.synth import synth  # noqa: E402
from edgevision.train.config import TrainConfig  # noqa: E402
from edgevision.train.run import HISTORY_COLUMNS, RunPaths, read_history  # noqa: E402
from edgevision.train.torchvision_backend import (  # noqa: E402
    ARCH,
    TorchvisionPredictor,
    is_torchvision_checkpoint,
    read_image_rgb,
    train_torchvision,
)

IMGSZ = 128


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """12 synthetic 128 px PNGs on disk, split 9 train / 3 val."""
    ds = synth(tmp_path_factory.mktemp("synth") / "images", n=12, seed=0, imgsz=IMGSZ)
    out = split_dataset(ds, (0.75, 0.25), names=("train", "val")).dataset
    assert len(out.split("train")) >= 8 and len(out.split("val")) >= 2
    return out


def _cfg(**kw: object) -> TrainConfig:
    """A tiny config. threads=1: on this shared 2-core box two torch threads ran 5-70x slower than
    one whenever other processes kept the cores busy (OpenMP threads wait for each other)."""
    base: dict[str, object] = dict(backend="torchvision", model=ARCH, imgsz=IMGSZ, epochs=2, batch=4, threads=1,
                                   workers=0, seed=3, patience=0)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture()
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Block every socket and point TORCH_HOME at an empty folder (a download would land there)."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return home


@pytest.fixture(scope="module")
def trained(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunPaths, dict, list]:
    """One 2-epoch run (shared by the tests that only read its outputs), with progress calls logged."""
    run = RunPaths(tmp_path_factory.mktemp("run_straight"))
    calls: list[tuple[str, int, int]] = []
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("torch_home")
        mp.setenv("TORCH_HOME", str(home))
        mp.setattr(socket, "socket", lambda *a, **k: (_ for _ in ()).throw(OSError("network blocked")))
        result = train_torchvision(_cfg(), data, run, progress=lambda s, d, t: calls.append((s, d, t)))
        assert list(home.iterdir()) == [], "nothing may be downloaded"
    return run, result, calls


@pytest.mark.slow
def test_train_writes_weights_history_and_result(trained: tuple[RunPaths, dict, list], data: Dataset) -> None:
    run, result, calls = trained
    assert result["epochs_run"] == 2 and result["stopped_early"] is False
    assert result["best_epoch"] in (1, 2)
    assert 0.0 <= result["best_map50_95"] <= result["best_map50"] <= 1.0
    assert result["train_images_per_s"] > 0
    rows = read_history(run.history)
    assert [r["epoch"] for r in rows] == [1.0, 2.0]
    assert list(rows[0]) == list(HISTORY_COLUMNS)
    assert all(r["train_loss"] > 0 and r["lr"] > 0 and r["val_map50"] is not None for r in rows)
    assert rows[0]["time_s"] <= rows[1]["time_s"]
    # 9 train images, batch 4: batches of 4 and 5 (a last batch of 1 is merged), 2 per epoch
    n_train = len(data.split("train"))
    per_epoch = -(-n_train // 4) - (1 if n_train % 4 == 1 else 0)
    assert calls[-1] == ("epoch 2/2", per_epoch, per_epoch) and len(calls) == 2 * per_epoch
    last = torch.load(run.last, map_location="cpu", weights_only=True)
    meta = last["edgevision"]
    assert meta["backend"] == "torchvision" and meta["arch"] == ARCH and meta["format"] == 1
    assert meta["names"] == data.labels.names and meta["imgsz"] == IMGSZ and meta["epoch"] == 2
    assert meta["config"]["backend"] == "torchvision" and meta["config"]["epochs"] == 2
    assert {"model", "optimizer", "scheduler", "rng", "history"} <= set(last)
    assert len(last["history"]) == 2
    best = torch.load(run.best, map_location="cpu", weights_only=True)
    assert set(best) == {"edgevision", "model"} and best["edgevision"]["epoch"] == result["best_epoch"]
    # the classification head has K + 1 outputs per anchor (0 = background)
    head = [v for k, v in best["model"].items() if k.startswith("head.classification_head") and k.endswith("bias")]
    assert head[-1].numel() % (len(data.labels) + 1) == 0
    assert is_torchvision_checkpoint(run.best) and is_torchvision_checkpoint(run.last)
    assert not list(run.weights.glob(".*tmp"))


@pytest.mark.slow
def test_predictor_maps_boxes_and_ids_back(trained: tuple[RunPaths, dict, list], data: Dataset,
                                           tmp_path: Path, offline: Path) -> None:
    run, _, _ = trained
    pred = TorchvisionPredictor.load(run.best)
    assert pred.labels.names == data.labels.names and pred.imgsz == IMGSZ
    # a non-square, grey copy of a val image: boxes must come back in its own pixels
    src = data.split("val")[0]
    grey = cv2.resize(cv2.imread(str(src.path), cv2.IMREAD_GRAYSCALE), (200, 90))
    odd = tmp_path / "odd size é.png"
    cv2.imencode(".png", grey)[1].tofile(str(odd))
    recs = [*data.split("val"), ImageRecord(name="odd.png", size_hw=(90, 200), path=odd, split="val")]
    out = pred.predict(recs, conf=0.0, max_det=7)
    assert [r.name for r in out] == [r.name for r in recs]
    k = len(data.labels)
    for r, src_rec in zip(out, recs, strict=True):
        h, w = src_rec.size_hw
        assert r.size_hw == (h, w) and r.split == "val"
        assert 0 < len(r) <= 7 and r.scores is not None
        assert np.all((r.scores >= 0) & (r.scores <= 1))
        assert np.all(np.diff(r.scores) <= 1e-6), "sorted by score"
        assert np.all((r.class_ids >= 0) & (r.class_ids < k))
        assert np.all(r.boxes[:, [0, 2]] >= 0) and np.all(r.boxes[:, [0, 2]] <= w)
        assert np.all(r.boxes[:, [1, 3]] >= 0) and np.all(r.boxes[:, [1, 3]] <= h)
        assert np.all(r.boxes[:, 2] >= r.boxes[:, 0]) and np.all(r.boxes[:, 3] >= r.boxes[:, 1])
    hi = pred.predict(recs[:1], conf=0.999, max_det=100)[0]
    assert hi.scores is not None and np.all(hi.scores >= 0.999)
    assert list(offline.iterdir()) == []


@pytest.mark.slow
def test_ctrl_c_then_resume_equals_uninterrupted_run(trained: tuple[RunPaths, dict, list], data: Dataset,
                                                     tmp_path: Path, offline: Path) -> None:
    straight, straight_result, _ = trained
    run = RunPaths(tmp_path / "run")

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "epoch 2/2":  # Ctrl-C in the middle of the second epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_torchvision(_cfg(), data, run, progress=interrupt)
    ck = torch.load(run.last, map_location="cpu", weights_only=True)
    assert ck["edgevision"]["epoch"] == 1, "last.pt stays the one of the last completed epoch"
    assert not [p for p in run.weights.iterdir() if p.name.startswith(".")], "no half-written file"
    assert [r["epoch"] for r in read_history(run.history)] == [1.0]

    result = train_torchvision(_cfg(), data, run, resume=True)
    assert result["epochs_run"] == 1
    assert [r["epoch"] for r in read_history(run.history)] == [1.0, 2.0]
    a = torch.load(straight.last, map_location="cpu", weights_only=True)
    b = torch.load(run.last, map_location="cpu", weights_only=True)
    assert b["edgevision"]["epoch"] == 2
    # Same seed, same per-(epoch, index) data order and flips, optimiser / scheduler restored: the
    # resumed weights equal the uninterrupted ones (bit-identical here on CPU; allclose leaves room
    # for kernels whose reduction order varies, e.g. on another CPU or thread count).
    for key, va in a["model"].items():
        vb = b["model"][key]
        if va.is_floating_point():
            assert torch.allclose(va, vb, rtol=1e-4, atol=1e-5), key
        else:
            assert torch.equal(va, vb), key
    hist_a, hist_b = read_history(straight.history), read_history(run.history)
    for ra, rb in zip(hist_a, hist_b, strict=True):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
        assert ra["lr"] == pytest.approx(rb["lr"], rel=1e-9)
        assert ra["val_map50_95"] == pytest.approx(rb["val_map50_95"], abs=1e-3)
    assert result["best_map50_95"] == pytest.approx(straight_result["best_map50_95"], abs=1e-3)


@pytest.mark.slow
def test_fine_tune_starts_from_checkpoint_weights(trained: tuple[RunPaths, dict, list], data: Dataset,
                                                  tmp_path: Path, offline: Path) -> None:
    from edgevision.train import torchvision_backend as tb

    straight, _, _ = trained
    model = tb._build_model(len(data.labels), IMGSZ)
    tb._initial_weights(_cfg(model=str(straight.best)), data.labels.names, model)
    best = torch.load(straight.best, map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_fine_tune_with_other_class_count_is_refused(trained: tuple[RunPaths, dict, list], data: Dataset,
                                                     tmp_path: Path) -> None:
    straight, _, _ = trained
    more = Dataset(LabelMap([*data.labels.names, "dent"]), data.images)
    with pytest.raises(ConfigError, match=r"best\.pt: checkpoint has 5 classes .* the dataset has 6") as e:
        train_torchvision(_cfg(model=str(straight.best)), more, RunPaths(tmp_path / "run"))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run" / "weights").exists()


def test_resume_without_last_is_refused(data: Dataset, tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"weights[/\\]last\.pt: not found; nothing to resume"):
        train_torchvision(_cfg(), data, run, resume=True)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"batch": 1}, "batch: the torchvision backend needs at least 2 images per step"),
        ({"model": "yolov8n"}, "builds 'ssdlite320_mobilenet_v3_large' or fine-tunes from a local .pt"),
        ({"device": "0,1"}, "trains on one device"),
    ],
)
def test_bad_settings_are_refused(data: Dataset, tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train_torchvision(_cfg(**kw), data, RunPaths(tmp_path / "run"))


def test_a_dataset_without_val_split_is_refused(data: Dataset, tmp_path: Path) -> None:
    train_only = Dataset(data.labels, [r for r in data.images if r.split == "train"])
    with pytest.raises(ConfigError, match="expected images in split 'val'"):
        train_torchvision(_cfg(), train_only, RunPaths(tmp_path / "run"))


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert not is_torchvision_checkpoint(junk)
    assert not is_torchvision_checkpoint(tmp_path / "missing.pt")
    plain = tmp_path / "plain.pt"
    torch.save({"model": {}}, plain)
    assert not is_torchvision_checkpoint(plain)
    with pytest.raises(ConfigError, match="not a torchvision checkpoint written by EdgeVision"):
        TorchvisionPredictor.load(plain)


def test_read_image_rgb_handles_grey_16bit_and_alpha(tmp_path: Path) -> None:
    g16 = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 300 + 1000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    img = read_image_rgb(tmp_path / "g16.png")
    assert img.shape == (12, 10, 3) and img.dtype == np.uint8
    assert img[0, 0, 0] == 0 and img[-1, -1, 0] == 255 and np.array_equal(img[..., 0], img[..., 2])
    bgra = np.zeros((5, 6, 4), np.uint8)
    bgra[..., 0] = 200  # blue
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    rgb = read_image_rgb(tmp_path / "a.png")
    assert rgb.shape == (5, 6, 3) and rgb[0, 0].tolist() == [0, 0, 200]
    from edgevision.core.errors import DatasetError

    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="not decodable"):
        read_image_rgb(tmp_path / "bad.png")


def test_training_samples_drop_difficult_scale_boxes_and_call_augment(data: Dataset) -> None:
    from edgevision.train import torchvision_backend as tb

    src = next(r for r in data.split("train") if len(r) >= 2)
    attrs = [{"difficult": True}] + [{}] * (len(src) - 1)
    rec = ImageRecord(name=src.name, size_hw=src.size_hw, boxes=src.boxes, class_ids=src.class_ids,
                      path=src.path, attributes=attrs, split="train")
    seen: list[tuple] = []

    def aug(img: np.ndarray, boxes: np.ndarray, ids: np.ndarray) -> tuple:
        seen.append((img.shape, img.dtype, boxes.dtype, boxes.copy(), ids.copy()))
        return img[:, ::-1], boxes[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [img.shape[1], 0, img.shape[1], 0], ids

    cfg = _cfg(imgsz=64, difficult="drop")
    img, target = tb._TrainSet([rec], cfg, aug)[(0, 0)]
    assert tuple(img.shape) == (3, 64, 64) and float(img.min()) >= 0 and float(img.max()) <= 1
    (shape, dtype, bdtype, boxes, ids), = seen
    assert shape == (64, 64, 3) and dtype == np.uint8 and bdtype == np.float32
    assert np.allclose(boxes, src.boxes[1:] * 64 / IMGSZ), "difficult dropped, boxes scaled to imgsz"
    assert target["labels"].tolist() == (src.class_ids[1:] + 1).tolist(), "canonical id c -> label c + 1"
    assert np.allclose(target["boxes"].numpy()[:, [0, 2]], 64 - boxes[:, [2, 0]], atol=1e-4), "augment output used"
    for policy in ("count", "ignore"):  # 'ignore' trains on difficult objects; only evaluation ignores them
        _, counted = tb._TrainSet([rec], _cfg(imgsz=64, difficult=policy, augment="none"), None)[(0, 0)]
        assert len(counted["boxes"]) == len(src) and np.allclose(counted["boxes"].numpy(), src.boxes * 64 / IMGSZ)
    bg = ImageRecord(name=src.name, size_hw=src.size_hw, path=src.path, split="train")
    _, empty = tb._TrainSet([bg], cfg, None)[(0, 0)]
    assert tuple(empty["boxes"].shape) == (0, 4) and tuple(empty["labels"].shape) == (0,)


def test_batches_are_seeded_per_epoch_and_never_of_one_image() -> None:
    from edgevision.train.torchvision_backend import _EpochBatches

    s = _EpochBatches(9, 4, seed=1)
    first = s.batches()
    assert [len(b) for b in first] == [4, 5]
    assert sorted(i for b in first for _, i in b) == list(range(9))
    assert s.batches() == first
    s.epoch = 1
    assert s.batches() != first and all(e == 1 for b in s.batches() for e, _ in b)


@pytest.mark.slow
def test_history_metrics_equal_the_evaluator_on_best_pt(trained: tuple[RunPaths, dict, list], data: Dataset) -> None:
    from edgevision.evaluate.coco import coco_evaluate

    run, result, _ = trained
    val = data.split("val")
    preds = TorchvisionPredictor.load(run.best).predict(val, conf=0.001, max_det=100)
    m = coco_evaluate(val, preds, data.labels, max_dets=100, difficult="ignore")
    row = read_history(run.history)[result["best_epoch"] - 1]
    assert (m.map50_95 or 0.0) == pytest.approx(row["val_map50_95"], abs=1e-6)
    assert (m.map50 or 0.0) == pytest.approx(row["val_map50"], abs=1e-6)
    assert result["best_map50_95"] == pytest.approx(row["val_map50_95"], abs=1e-6)


@pytest.mark.slow
def test_time_budget_stops_after_an_epoch_and_leaves_a_resumable_run(data: Dataset, tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "run")
    result = train_torchvision(_cfg(epochs=3, time_hours=1e-7), data, run)
    assert result["epochs_run"] == 1 and result["stopped_early"] is True
    ck = torch.load(run.last, map_location="cpu", weights_only=True)
    assert ck["edgevision"]["epoch"] == 1 and run.best.is_file()
    assert [r["epoch"] for r in read_history(run.history)] == [1.0]
    assert torch.get_num_threads() >= 1  # restored after the call
