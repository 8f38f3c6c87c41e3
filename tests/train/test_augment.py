"""Augmentation presets: contents, grey stays grey, boxes follow the image, serialisation, seeds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
A = pytest.importorskip("albumentations")

from edgevision.core.dataset import ImageRecord  # noqa: E402
from edgevision.core.errors import DatasetError, UnknownNameError  # noqa: E402
from edgevision.train.augment import (  # noqa: E402
    BoxAugmenter,
    build_transforms,
    describe_preset,
    is_mono_dataset,
    list_presets,
    ultralytics_hyp,
)

REPO = Path(__file__).resolve().parents[2]
COLOUR_ONLY = ("ISONoise", "HueSaturationValue", "ToGray", "ColorJitter", "RGBShift", "ChannelShuffle",
               "ToSepia", "RandomToneCurve", "PlanckianJitter", "FancyPCA")


def _names(transforms: list) -> list[str]:
    """Class names of the transforms, recursing into OneOf / Compose."""
    out = []
    for t in transforms:
        out.append(type(t).__name__)
        if isinstance(t, A.BaseCompose):
            out += _names(list(t.transforms))
    return out


def _scene(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 120, (h, w), dtype=np.uint8)
    img[20:50, 30:70] = 220  # a bright "defect"
    return img


def test_presets_listed_and_described():
    assert list_presets() == ["none", "industrial-light", "industrial", "industrial-strong"]
    for p in list_presets():
        d = describe_preset(p)
        assert d and "\n" not in d


def test_unknown_preset_names_options_and_suggests():
    for call in (lambda: build_transforms("industral", mono=True), lambda: describe_preset("industral"),
                 lambda: ultralytics_hyp("industral", mono=False), lambda: BoxAugmenter("industral", mono=True, seed=0)):
        with pytest.raises(UnknownNameError) as e:
            call()
        msg = str(e.value)
        assert "industrial-strong" in msg and "Did you mean 'industrial'" in msg


@pytest.mark.parametrize("preset", ["industrial-light", "industrial", "industrial-strong"])
def test_presets_cover_the_industrial_effects(preset):
    names = _names(build_transforms(preset, mono=False))
    for needed in ("RandomBrightnessContrast", "RandomGamma", "MotionBlur", "Defocus", "GaussNoise",
                   "ISONoise", "ImageCompression", "Affine"):
        assert needed in names, (preset, needed)
    mono = _names(build_transforms(preset, mono=True))
    assert not set(mono) & set(COLOUR_ONLY)
    assert "Affine" not in _names(build_transforms(preset, mono=True, spatial=False))
    rot = [t for t in build_transforms(preset, mono=True) if isinstance(t, A.Affine)][0]
    assert isinstance(rot, A.DualTransform)
    lo, hi = rot.rotate
    assert lo == -hi and 0 < hi <= 10


def test_strength_increases_with_the_preset():
    def rot(p):
        return [t for t in build_transforms(p, mono=True) if isinstance(t, A.Affine)][0].rotate[1]

    assert rot("industrial-light") < rot("industrial") == 5.0 < rot("industrial-strong")
    probs = [sum(t.p for t in build_transforms(p, mono=True)) for p in list_presets()[1:]]
    assert probs == sorted(probs) and len(set(probs)) == 3
    assert build_transforms("none", mono=True) == [] == build_transforms("none", mono=False)


@pytest.mark.parametrize("preset", ["industrial-light", "industrial", "industrial-strong"])
def test_mono_preset_keeps_a_grey_image_grey(preset):
    """Every mono transform, forced on, keeps R == G == B on a 3-channel grey image."""
    g = _scene()
    grey3 = np.dstack([g, g, g])
    for t in build_transforms(preset, mono=True):
        forced = A.from_dict(A.to_dict(t))
        forced.p = 1.0
        for seed in range(3):
            out = A.Compose([forced], seed=seed)(image=grey3)["image"]
            assert out.shape == grey3.shape and out.dtype == np.uint8
            assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2]), type(t)


@pytest.mark.parametrize("mono", [True, False])
@pytest.mark.parametrize("preset", list_presets())
def test_to_dict_from_dict_round_trip(preset, mono):
    """Ultralytics stores the list as A.to_dict dicts in checkpoints; from_dict must rebuild it exactly."""
    for t in build_transforms(preset, mono=mono):
        d = A.to_dict(t)
        back = A.from_dict(d)
        assert type(back) is type(t)
        assert A.to_dict(back) == d
    # the rebuilt list augments identically for the same seed
    img = np.dstack([_scene()] * 3)
    a = A.Compose(build_transforms(preset, mono=mono), seed=7)(image=img)["image"]
    b = A.Compose([A.from_dict(A.to_dict(t)) for t in build_transforms(preset, mono=mono)], seed=7)(image=img)["image"]
    assert np.array_equal(a, b)


def test_ultralytics_hyp_keys_exist_and_respect_mono():
    import yaml

    spec = __import__("importlib.util").util.find_spec("ultralytics")  # located, not imported
    if spec is None:
        pytest.skip("ultralytics not installed")
    defaults = yaml.safe_load((Path(spec.origin).parent / "cfg" / "default.yaml").read_text())
    for p in list_presets():
        for mono in (True, False):
            hyp = ultralytics_hyp(p, mono=mono)
            assert set(hyp) <= set(defaults), set(hyp) - set(defaults)
            assert all(isinstance(v, float) for v in hyp.values())
            assert hyp["flipud"] == 0.0 and hyp["hsv_v"] == 0.0
            if mono:
                assert hyp["hsv_h"] == 0.0 and hyp["hsv_s"] == 0.0
    assert ultralytics_hyp("industrial", mono=False)["hsv_h"] > 0
    assert ultralytics_hyp("industrial", mono=True)["degrees"] == 5.0
    assert ultralytics_hyp("industrial", mono=True)["fliplr"] == 0.5
    assert ultralytics_hyp("industrial", mono=True)["mosaic"] == 1.0
    off = ultralytics_hyp("none", mono=False)
    assert all(v == 0.0 for v in off.values())


BOXES = np.array([[30.0, 20.0, 70.0, 50.0], [90.0, 60.0, 120.0, 90.0]])
IDS = np.array([3, 1])


def test_none_preset_is_an_exact_passthrough():
    aug = BoxAugmenter("none", mono=False, seed=0)
    img = np.dstack([_scene(), _scene(seed=1), _scene(seed=2)])
    out, boxes, ids = aug(img, BOXES, IDS)
    assert np.array_equal(out, img) and np.array_equal(boxes, BOXES) and np.array_equal(ids, IDS)
    assert boxes.dtype == np.float64 and ids.dtype == np.int64


def test_boxes_unchanged_without_rotation_and_close_with_it():
    aug = BoxAugmenter("industrial", mono=True, seed=3)
    img = np.dstack([_scene()] * 3)
    cx, cy = img.shape[1] / 2, img.shape[0] / 2
    rotated = plain = 0
    for _ in range(40):
        out, boxes, ids = aug(img, BOXES, IDS)
        assert out.shape == img.shape and out.dtype == np.uint8
        if "Affine" in aug.last_applied:
            rotated += 1
            # +-5 degrees about the centre moves a corner at most r * 2 sin(2.5 deg) ~ 0.087 r
            assert len(boxes) <= 2 and set(ids) <= {1, 3}
            k = list(IDS).index(3)
            r = np.hypot(BOXES[k, [0, 2]] - cx, BOXES[k, [1, 3]] - cy).max()
            j = list(ids).index(3)
            assert np.abs(boxes[j] - BOXES[k]).max() <= 0.09 * r + 1.0
        else:
            plain += 1
            assert np.allclose(boxes, BOXES, rtol=0, atol=1e-4) and np.array_equal(ids, IDS)  # float32 inside
    assert rotated > 5 and plain > 5  # p_rotate = 0.5


def test_boxes_leaving_the_image_are_clipped_or_dropped():
    aug = BoxAugmenter("industrial-strong", mono=True, seed=0)
    img = _scene()
    edge = np.array([[0.0, 0.0, 6.0, 6.0], [40.0, 30.0, 60.0, 50.0]])  # a corner box rotates out of view
    seen_drop = False
    for _ in range(60):
        _, boxes, ids = aug(img, edge, [0, 1])
        assert len(boxes) == len(ids) and 1 in ids
        assert (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= img.shape[1]).all() and (boxes[:, 3] <= img.shape[0]).all()
        seen_drop |= 0 not in ids
    assert seen_drop


def test_empty_boxes_and_grey_input():
    aug = BoxAugmenter("industrial", mono=True, seed=0)
    img = _scene()
    for _ in range(5):
        out, boxes, ids = aug(img, np.zeros((0, 4)), np.zeros(0))
        assert out.shape == img.shape and boxes.shape == (0, 4) and ids.shape == (0,)
    with pytest.raises(ValueError, match="mono=True"):
        BoxAugmenter("industrial", mono=False, seed=0)(img, np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="class ids"):
        aug(img, BOXES, [1])


def test_same_seed_same_output_different_seed_differs():
    img = np.dstack([_scene(), _scene(seed=1), _scene(seed=2)])

    def run(seed):
        aug = BoxAugmenter("industrial-strong", mono=False, seed=seed)
        return [aug(img, BOXES, IDS) for _ in range(4)]

    a, b, c = run(5), run(5), run(6)
    for (ia, ba, ca), (ib, bb, cb) in zip(a, b):
        assert np.array_equal(ia, ib) and np.array_equal(ba, bb) and np.array_equal(ca, cb)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    aug = BoxAugmenter("industrial-strong", mono=False, seed=5)
    aug(img, BOXES, IDS)
    aug.reseed(5)
    assert np.array_equal(aug(img, BOXES, IDS)[0], a[0][0])


def _write(path: Path, img: np.ndarray) -> ImageRecord:
    assert cv2.imwrite(str(path), img)
    return ImageRecord(name=path.name, size_hw=img.shape[:2], path=path)


def test_is_mono_dataset_on_real_files(tmp_path):
    g = _scene()
    grey = [_write(tmp_path / f"g{i}.png", g) for i in range(3)]
    grey3 = [_write(tmp_path / "g3 ü.png", np.dstack([g, g, g]))]  # 3 equal channels, unicode name
    grey_alpha = [_write(tmp_path / "ga.png", np.dstack([g, g, g, np.full_like(g, 255)]))]
    c = np.dstack([g, g, g]).copy()
    c[5, 5, 2] = 0  # one pixel with colour
    colour = [_write(tmp_path / "c.png", c)]
    assert is_mono_dataset(grey + grey3 + grey_alpha)
    assert not is_mono_dataset(grey + colour)
    assert not is_mono_dataset([])
    assert is_mono_dataset([ImageRecord(name="x", size_hw=(4, 4))] + grey)  # no file: skipped
    # sampling: with sample=1 only one file is read, chosen by the seed, reproducibly
    answers = {s: is_mono_dataset(grey + colour, sample=1, seed=s) for s in range(12)}
    assert set(answers.values()) == {True, False}
    assert all(is_mono_dataset(grey + colour, sample=1, seed=s) == v for s, v in answers.items())
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="bad.png"):
        is_mono_dataset([ImageRecord(name="bad.png", size_hw=(4, 4), path=tmp_path / "bad.png")])


@pytest.mark.slow
def test_ultralytics_accepts_the_serialised_presets(tmp_path):
    """In a subprocess (Ultralytics patches PIL): its Albumentations wrapper rebuilds our dicts and runs them."""
    code = textwrap.dedent(
        """
        import os, numpy as np
        from edgevision.train.offline import prepare_ultralytics
        prepare_ultralytics()
        import albumentations as A
        from edgevision.train.augment import build_transforms
        from ultralytics.data.augment import Albumentations
        from ultralytics.utils.instance import Instances
        for spatial in (False, True):
            dicts = [A.to_dict(t) for t in build_transforms("industrial-strong", mono=True, spatial=spatial)]
            al = Albumentations(p=1.0, transforms=dicts)
            assert al.transform is not None and al.contains_spatial == spatial
            for _ in range(5):
                g = np.full((64, 64), 100, np.uint8)
                labels = {"img": np.dstack([g, g, g]), "cls": np.array([[0], [1]], np.float32),
                          "instances": Instances(bboxes=np.array([[10, 10, 30, 30], [36, 36, 56, 56]], np.float32),
                                                 segments=np.zeros((0, 1000, 2), np.float32),
                                                 bbox_format="xyxy", normalized=False)}
                out = al(labels)
                assert out["img"].shape == (64, 64, 3)
                assert len(out["cls"]) == len(out["instances"].bboxes) == 2
        print("OK")
        """
    )
    env = dict(os.environ, EDGEVISION_HOME=str(tmp_path / "home"))
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
