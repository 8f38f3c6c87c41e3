"""The LibreYOLO (MIT) backend: config and model names, the augmentation mapping, and real tiny training runs through
the CLI offline, then export, parity with LibreYOLO's own model, INT8, the licence chain and the release gate."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from edgevision.core.errors import ConfigError, EdgeVisionError
from edgevision.train.config import TrainConfig
from edgevision.train.run import RunPaths, read_history
from tests.helpers import network_attempts, run_cli
from tests.tiny_models import IMGSZ

libreyolo = pytest.importorskip("libreyolo", reason="the libreyolo extra is not installed")


# --------------------------------------------------------------------------- no training


def test_model_names_resolve_offline_for_the_backend() -> None:
    from edgevision.train.weights import LIBREYOLO_ARCHS, resolve_model

    spec = resolve_model("yolo9-t", "libreyolo")
    assert (spec.kind, spec.arch, spec.path) == ("arch", "yolo9-t", None)
    assert spec.licence.startswith("MIT")
    assert set(LIBREYOLO_ARCHS) == {"yolo9-t", "yolo9-s", "yolo9-m", "yolo9-c"}
    with pytest.raises(ConfigError, match=r"model 'yolov8n': .*libreyolo architecture \(yolo9-t, yolo9-s, "):
        resolve_model("yolov8n", "libreyolo")
    with pytest.raises(ConfigError, match=r"architecture YAML files are for the ultralytics backend, not libreyolo"):
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".yaml") as f:
            resolve_model(f.name, "libreyolo")


def test_extra_arguments_are_checked_against_libreyolo(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edgevision.train.libreyolo_backend import check_extra_args
    from edgevision.train.trainer import prepare_run

    check_extra_args({"eval_interval": 5, "no_aug_epochs": 2, "warmup_epochs": 1})
    with pytest.raises(ConfigError, match=r"unknown train config field 'libreyolo.eval_intervall' .*did you mean "
                                          r"'eval_interval'"):
        check_extra_args({"eval_intervall": 5})
    with pytest.raises(ConfigError, match=r"'libreyolo.epochs': set by EdgeVision"):
        check_extra_args({"epochs": 3})
    with pytest.raises(ConfigError, match=r"'libreyolo.mosaic_prob': set by EdgeVision .*augmentation preset"):
        check_extra_args({"mosaic_prob": 0.0})
    (tmp_path / "data").mkdir()
    cfg = TrainConfig(data=tmp_path / "data", backend="torchvision", model="ssdlite320_mobilenet_v3_large",
                      libreyolo={"eval_interval": 2})
    with pytest.raises(EdgeVisionError):  # the empty dataset is refused after the config is read
        prepare_run(cfg, tmp_path / "run")
    assert "train config field 'libreyolo' (eval_interval) is for the libreyolo backend: ignored by the torchvision " \
           "backend" in caplog.text
    assert not (tmp_path / "run").exists()


def test_presets_map_onto_libreyolos_augmentation() -> None:
    from edgevision.train.libreyolo_backend import libreyolo_hyp

    off = libreyolo_hyp("none", mono=False)
    assert off["mosaic_prob"] == off["flip_prob"] == off["hsv_prob"] == off["degrees"] == off["translate"] == 0.0
    assert off["mosaic_scale"] == (1.0, 1.0)
    grey = libreyolo_hyp("industrial", mono=True)
    assert (grey["mosaic_prob"], grey["flip_prob"], grey["degrees"], grey["translate"], grey["hsv_prob"]) == \
        (1.0, 0.5, 5.0, 0.1, 0.0)
    assert grey["mosaic_scale"] == (0.75, 1.25)
    assert libreyolo_hyp("industrial", mono=False)["hsv_prob"] == 1.0  # hue / saturation only on colour images
    strong = libreyolo_hyp("industrial-strong", mono=True)
    assert strong["degrees"] == 10.0 and strong["mosaic_scale"] == (0.6, 1.4)


def test_pixel_augmentation_wraps_libreyolos_transform_and_pickles() -> None:
    import albumentations as A

    from edgevision.train.augment import build_transforms
    from edgevision.train.libreyolo_backend import _PixelAugment

    dicts = [A.to_dict(t) for t in build_transforms("industrial-strong", mono=True, spatial=False)]
    aug = _PixelAugment(_Inner(), dicts)
    aug = pickle.loads(pickle.dumps(aug))  # what the data-loader workers receive
    assert aug.max_labels == 7  # LibreYOLO reads its transform's attributes through the wrapper
    img = np.full((48, 64, 3), 128, np.uint8)
    targets = np.array([[4.0, 5.0, 20.0, 30.0, 1.0]], np.float32)
    changed = 0
    for _ in range(20):
        out, t = aug(img.copy(), targets.copy(), (64, 64))
        assert out.shape == img.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(t, targets)  # pixel-level only: the boxes stay
        changed += int(not np.array_equal(out, img))
    assert changed >= 10, "industrial-strong changes most images"


def test_pixel_augmentation_stops_with_libreyolos_mosaic() -> None:
    """The run's last no_aug_epochs train on clean images: LibreYOLO's own hook switches the preset off too."""
    import albumentations as A
    from libreyolo.models.yolo9.trainer import YOLO9Trainer

    from edgevision.train.augment import build_transforms
    from edgevision.train.libreyolo_backend import _CountingLoader, _PixelAugment, _trainer_class

    seen: list[int] = []
    dicts = [A.to_dict(t) for t in build_transforms("industrial-strong", mono=True, spatial=False)]
    cls = _trainer_class(YOLO9Trainer, dicts, None, {"epoch": 14})
    trainer = cls.__new__(cls)  # only the hook: LibreYOLO's loop calls it at epochs - no_aug_epochs and on resume

    class Dataset:
        enable_mosaic = True
        preproc = _PixelAugment(_Inner(), dicts)

        def close_mosaic(self) -> None:
            self.enable_mosaic = False

    class Loader:
        dataset, num_workers, persistent_workers = Dataset(), 2, False

        def __len__(self) -> int:
            return 2

        def __iter__(self):  # type: ignore[no-untyped-def]
            yield (np.zeros((8, 3, 4, 4)), None)
            yield (np.zeros((3, 3, 4, 4)), None)  # the last, partial batch

    trainer.train_loader = _CountingLoader(Loader(), lambda d, t, n: seen.append(n))
    assert list(trainer.train_loader) and seen == [8, 3]  # images per batch, not the nominal batch size
    trainer.on_mosaic_disable()
    ds = trainer.train_loader.dataset
    assert ds.enable_mosaic is False and ds.preproc.enabled is False
    img = np.full((48, 64, 3), 128, np.uint8)
    targets = np.array([[4.0, 5.0, 20.0, 30.0, 1.0]], np.float32)
    clone = pickle.loads(pickle.dumps(ds.preproc))  # what the respawned workers get
    for _ in range(10):
        np.testing.assert_array_equal(clone(img.copy(), targets.copy(), (64, 64))[0], img)


def test_checkpoint_recognition_and_one_line_errors(tmp_path: Path) -> None:
    import torch

    from edgevision.train.libreyolo_backend import is_libreyolo_checkpoint, read_checkpoint

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert not is_libreyolo_checkpoint(junk)
    with pytest.raises(ConfigError, match=r"junk.pt: not a loadable LibreYOLO checkpoint"):
        read_checkpoint(junk)
    other = tmp_path / "yolox.pt"
    torch.save({"libreyolo_version": "1.6.0", "model_family": "yolox", "task": "detect", "model": {}}, other)
    assert is_libreyolo_checkpoint(other)
    with pytest.raises(ConfigError, match=r"yolox.pt: a LibreYOLO yolox detect model; .*YOLOv9 detection models"):
        read_checkpoint(other)


# --------------------------------------------------------------------------- training (tiny, cached, offline)


@pytest.mark.slow
def test_run_folder_history_metrics_and_card(ly_run: Path) -> None:
    import torch

    run = RunPaths(ly_run)
    cfg = TrainConfig(**{k: v for k, v in _yaml(run.config).items()})
    assert (cfg.backend, cfg.model, cfg.imgsz) == ("libreyolo", "yolo9-t", IMGSZ)
    rows = read_history(run.history)
    assert [r["epoch"] for r in rows] == [1.0]
    assert rows[0]["val_map50"] is not None and rows[0]["train_loss"] and rows[0]["train_loss"] > 0
    ck = torch.load(run.best, map_location="cpu", weights_only=True)
    assert (ck["model_family"], ck["size"], ck["nc"], ck["imgsz"], ck["letterbox_pad"]) == ("yolo9", "t", 5, IMGSZ,
                                                                                          "center")
    metrics = json.loads(run.metrics.read_text())
    assert metrics["backend"]["name"] == "LibreYOLO" and "coco" in metrics
    assert metrics["train"]["epochs_run"] == 1 and metrics["train"]["threads"] == 2
    assert "LibreYOLO (MIT)" in run.model_card.read_text()
    assert json.loads((run.root / "model.json").read_text())["arch"] == "yolo9-t"
    assert (run.backend / "weights" / "last.pt").is_file() and not list((run.backend / "weights").glob("epoch_*.pt"))


@pytest.mark.slow
def test_export_matches_libreyolos_model_and_goes_through_the_runtime(export_env, ly_run: Path, ly_onnx: Path) -> None:
    import torch

    from edgevision.runtime import Detector, read_metadata
    from edgevision.train.libreyolo_backend import load_model
    from tests.export.quantcheck import load_images

    onnx_path = ly_onnx
    meta = read_metadata(onnx_path)
    assert (meta.output.layout, meta.input.resize, meta.input.pad_value, meta.input.channel_order) == \
        ("yolo-raw", "letterbox", 114, "RGB")
    assert meta.input.size_hw == (IMGSZ, IMGSZ) and meta.stride == 32
    assert meta.source["backend"] == "libreyolo" and meta.source["arch"] == "yolo9-t"
    code = next(i for i in meta.source["licences"] if i["role"] == "code")
    assert (code["name"], code["licence"], code["category"]) == ("libreyolo", "MIT", "permissive")
    assert meta.thresholds and set(meta.thresholds["classes"]) == set(meta.names)

    # raw graph output == LibreYOLO's own model (corners turned into centre / size)
    x = np.concatenate(load_images(export_env["sample"], IMGSZ, 2))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"images": xi[None]})[0] for xi in x])  # the graph takes one image
    net = load_model(ly_run / "weights" / "best.pt").model.eval()
    with torch.no_grad():
        ref = net(torch.from_numpy(x))["predictions"].numpy()
    ref = np.concatenate([(ref[:, :2] + ref[:, 2:4]) / 2, ref[:, 2:4] - ref[:, :2], ref[:, 4:]], 1)
    assert got.shape == ref.shape == (2, 4 + len(meta.names), (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref[:, :4]).max()))

    # the runtime's letterbox and LibreYOLO's centred one (which the model trained with) agree within a pixel on
    # non-square images: LibreYOLO floors the resized side and the pad, EdgeVision rounds them as Ultralytics does
    from libreyolo.preprocess.letterbox import letterbox_geometry as theirs

    from edgevision.runtime.preprocess import letterbox_geometry as ours

    for hw in ((64, 96), (200, 120), (1080, 1920), (37, 500)):
        for size in (64, 224, 640):
            (nw, nh), left, top = ours(hw, (size, size))
            _, th, tw, tleft, ttop = theirs(hw[0], hw[1], size, size, "center")
            assert abs(nw - tw) <= 1 and abs(nh - th) <= 1 and abs(left - tleft) <= 1 and abs(top - ttop) <= 1

    # and the runtime runs it end to end (one box per anchor at most; the untrained scores sit near the -10 prior)
    det = Detector(onnx_path)
    img = np.full((64, 96, 3), 90, np.uint8)
    res = det(img, conf=1e-6, max_det=50)
    assert 0 < len(res) <= 50 and res.image_size == (64, 96)
    assert (res.xyxy[:, 0::2] <= 96).all() and (res.xyxy[:, 1::2] <= 64).all()


@pytest.mark.slow
def test_int8_licence_chain_and_gate_on_the_mit_model(export_env, ly_run: Path, ly_onnx: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from tests.export.quantcheck import load_images

    onnx_path = ly_onnx
    int8 = tmp_path / "int8.onnx"
    block = tmp_path / "block-q"
    r = run_cli("quantize", onnx_path, "--calib", export_env["sample"], "--out", int8, "--n", "8", "--no-eval",
                "--latency-runs", "0", block_network=block)
    assert r.returncode == 0, r.stdout + r.stderr
    assert network_attempts(block) == []
    x = np.concatenate(load_images(export_env["sample"], IMGSZ, 4))
    fp = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"images": x[:1]})[0]
    q = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {"images": x[:1]})[0]
    # box channels (centre / size in pixels) survive INT8 on this nearly untrained model; scores are all near the
    # -10 bias prior and say nothing yet (the NEU-DET benchmark measures INT8 accuracy on a trained one)
    corr = np.corrcoef(fp[0, :4].ravel(), q[0, :4].ravel())[0, 1]
    assert corr > 0.99, corr

    r = run_cli("licences", ly_run, "--json", tmp_path / "chain.json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "chain.json").read_text())
    roles = {i["role"]: i for i in doc["items"] if i["role"] in ("code", "weights", "dataset")}
    assert (roles["code"]["name"], roles["code"]["licence"]) == ("libreyolo", "MIT")
    assert roles["weights"]["category"] == "permissive"  # trained from scratch

    gate = tmp_path / "closed.yaml"
    gate.write_text("licence: {permissive_only: true, accept: [dataset]}\n")  # the sample's licence is not recorded
    r = run_cli("reliability", int8, "--data", export_env["sample"], "--gate", gate, "--suite", "bad-input", "--latency-samples",
                "662", "--out", tmp_path / "rel")
    assert r.returncode == 0, r.stdout + r.stderr
    rel = json.loads((tmp_path / "rel" / "reliability.json").read_text())
    lic = next(c for c in rel["gate"]["checks"] if c["key"] == "licence")
    assert lic["passed"], lic


@pytest.mark.slow
def test_fine_tune_ctrl_c_then_resume_continues_the_run(export_env, ly_run: Path, tmp_path: Path) -> None:
    """Fine-tunes the tiny run's weights (a local LibreYOLO .pt as --model), interrupted in its second epoch."""
    import torch

    from edgevision.train.trainer import prepare_run, train

    start = ly_run / "weights" / "best.pt"
    cfg = TrainConfig(data=export_env["sample"], backend="libreyolo", model=str(start), imgsz=IMGSZ, epochs=2, batch=8,
                      workers=0, threads=1, augment="none", plots=False, libreyolo={"eval_interval": 2})

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "epoch 2/2" and done == 1:
            raise KeyboardInterrupt

    prep = prepare_run(cfg, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(prep, progress=interrupt)
    run = prep.run
    rows = read_history(run.history)
    assert [r["epoch"] for r in rows] == [1.0] and rows[0]["val_map50"] is None  # eval_interval 2: not validated
    assert run.last.is_file() and not run.metrics.exists()
    spec = json.loads((run.root / "model.json").read_text())
    assert spec["kind"] == "weights" and spec["path"] == str(start.resolve())
    # the starting weights were loaded, not re-initialised: one epoch later the model is still near them
    key = next(k for k, v in torch.load(start, weights_only=True)["model"].items() if v.ndim == 4)
    before = torch.load(start, weights_only=True)["model"][key].float()
    after = torch.load(run.last, weights_only=True)["model"][key].float()
    fresh = libreyolo.LibreYOLO9(None, size="t", nb_classes=5, device="cpu").model.state_dict()[key].float()
    assert (after - before).abs().mean() < 0.5 * (fresh - before).abs().mean()
    with pytest.raises(ConfigError, match=r"--resume continues .* epochs cannot change"):
        prepare_run(None, run.root, resume=True, overrides={"epochs": 5})
    result = train(prepare_run(None, run.root, resume=True, overrides={"threads": 1}))
    rows = read_history(run.history)
    assert [r["epoch"] for r in rows] == [1.0, 2.0] and rows[1]["val_map50"] is not None  # the last epoch is
    assert result.train["epochs_this_call"] == 1 and result.train["epochs_run"] == 2
    assert torch.load(run.last, map_location="cpu", weights_only=True)["epoch"] == 1  # 0-based: the second epoch
    with pytest.raises(ConfigError, match=r"training already finished \(2 epochs\); nothing to resume"):
        train(prepare_run(None, run.root, resume=True))


class _Inner:
    """Stands for LibreYOLO's transform: returns the image and targets it was given."""

    max_labels = 7

    def __call__(self, image: np.ndarray, targets: np.ndarray, input_dim: tuple[int, int]) -> tuple:
        return image, targets


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_the_libreyolo_training_install_carries_no_copyleft_code() -> None:
    """What `scripts/install.sh VENV libreyolo` installs, as installed here: no Ultralytics, nothing (A)GPL. The
    weak-copyleft items (certifi, tqdm: MPL-2.0, used unmodified) and NVIDIA's CUDA libraries of this torch build are
    what `edgevision licences` lists for the training machine; none of it goes into the exported model."""
    from edgevision.licences import COPYLEFT, NETWORK, NON_COMMERCIAL, installed_items

    items, used = installed_items(["libreyolo"])
    names = {i.name.lower() for i in items}
    assert "libreyolo" in used and {"libreyolo", "torch", "albumentations"} <= names
    assert "ultralytics" not in names
    bad = [(i.name, i.licence) for i in items if i.category in (COPYLEFT, NETWORK, NON_COMMERCIAL)]
    assert bad == []
    lib = next(i for i in items if i.name.lower() == "libreyolo")
    assert lib.licence == "MIT"
