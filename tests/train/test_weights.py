"""The offline weights registry and the --model resolver: hashes, licences, clear refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgevision.core.errors import ConfigError, UnknownNameError
from edgevision.train.weights import add_weights, buildable_ultralytics, list_weights, remove_weights, resolve_model


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEVISION_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _checkpoint(path: Path, payload: bytes = b"weights") -> Path:
    path.write_bytes(b"PK\x03\x04" + payload)  # torch's zip container starts like this
    return path


def test_add_resolve_list_remove(tmp_path: Path, home: Path) -> None:
    src = _checkpoint(tmp_path / "yolov8n.pt")
    e = add_weights(src, "yolov8n-coco", "AGPL-3.0", origin="https://example.invalid/yolov8n.pt")
    assert e.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    stored = home / "weights" / e.file
    assert stored.read_bytes() == src.read_bytes()
    src.unlink()  # the registry keeps its own copy
    spec = resolve_model("yolov8n-coco")
    assert (spec.kind, spec.path, spec.sha256, spec.licence, spec.registered) == (
        "weights", stored, e.sha256, "AGPL-3.0", "yolov8n-coco")
    assert [w.name for w in list_weights()] == ["yolov8n-coco"]
    registry = json.loads((home / "weights" / "registry.json").read_text())
    assert registry["weights"]["yolov8n-coco"]["origin"] == "https://example.invalid/yolov8n.pt"
    remove_weights("yolov8n-coco")
    assert list_weights() == [] and not stored.exists()
    with pytest.raises(UnknownNameError, match="yolov8n-coco"):
        remove_weights("yolov8n-coco")


def test_local_file_is_matched_to_its_registration(tmp_path: Path) -> None:
    src = _checkpoint(tmp_path / "a.pt")
    add_weights(src, "line3-v2", "proprietary")
    spec = resolve_model(str(src))
    assert spec.registered == "line3-v2" and spec.licence == "proprietary"
    other = _checkpoint(tmp_path / "b.pt", b"other")
    assert resolve_model(str(other)).licence.startswith("unknown")


def test_modified_registered_file_is_refused(tmp_path: Path, home: Path) -> None:
    e = add_weights(_checkpoint(tmp_path / "a.pt"), "w1", "MIT")
    (home / "weights" / e.file).write_bytes(b"PK\x03\x04tampered")
    with pytest.raises(ConfigError, match="changed since it was added"):
        resolve_model("w1")


@pytest.mark.parametrize(("name", "why"), [
    ("yolov8n", "architecture name"),       # would hide the buildable architecture
    ("bad name!", "use letters"),
])
def test_add_refuses_bad_names(tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        add_weights(_checkpoint(tmp_path / "a.pt"), name, "MIT")


def test_add_refuses_non_checkpoints_duplicates_and_empty_licence(tmp_path: Path) -> None:
    txt = tmp_path / "notes.pt"
    txt.write_text("hello")
    with pytest.raises(ConfigError, match="not a PyTorch checkpoint"):
        add_weights(txt, "x1", "MIT")
    with pytest.raises(ConfigError, match="licence"):
        add_weights(_checkpoint(tmp_path / "a.pt"), "x1", "  ")
    add_weights(_checkpoint(tmp_path / "a.pt"), "x1", "MIT")
    with pytest.raises(ConfigError, match="already registered"):
        add_weights(_checkpoint(tmp_path / "b.pt", b"b"), "x1", "MIT")
    e = add_weights(_checkpoint(tmp_path / "b.pt", b"b"), "x1", "MIT", overwrite=True)
    assert resolve_model("x1").sha256 == e.sha256


def test_buildable_names_without_network() -> None:
    assert buildable_ultralytics("yolov8n") == "yolov8n.yaml"
    assert buildable_ultralytics("yolo11s") == "yolo11s.yaml"
    assert buildable_ultralytics("yolov8n-seg") is None  # not a detector
    assert buildable_ultralytics("yolov8") is None  # no scale letter
    spec = resolve_model("yolo11n")
    assert (spec.kind, spec.arch, spec.path) == ("arch", "yolo11n.yaml", None)
    tv = resolve_model("ssdlite320_mobilenet_v3_large", backend="torchvision")
    assert tv.kind == "arch" and tv.licence.startswith("BSD")


@pytest.mark.parametrize("name", ["yolov8n.pt", "yolov8n-coco", "resnet50"])
def test_unknown_model_says_how_to_add_a_local_file(name: str) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_model(name)
    msg = str(e.value)
    assert "\n" not in msg and "nothing is downloaded" in msg
    assert "edgevision weights add FILE --name NAME --licence LICENCE" in msg


def test_yaml_is_for_ultralytics_only(tmp_path: Path) -> None:
    y = tmp_path / "custom.yaml"
    y.write_text("nc: 2\n")
    assert resolve_model(str(y)).kind == "arch"
    with pytest.raises(ConfigError, match="ultralytics backend"):
        resolve_model(str(y), backend="torchvision")
