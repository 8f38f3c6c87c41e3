"""TrainConfig: CLI beats file beats defaults; bad keys and values give one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgevision.core.errors import ConfigError
from edgevision.train.config import TrainConfig, resolve_train_config


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "train.yaml"
    p.write_text(text)
    return p


def test_precedence_cli_over_file_over_defaults(tmp_path: Path) -> None:
    f = _file(tmp_path, "epochs: 30\nimgsz: 320\nfrom: voc\noperating_point: {target: precision, value: 0.8}\n")
    cfg = resolve_train_config(f, {"epochs": 5, "imgsz": None, "batch": None, "operating_point": {"value": 0.95}})
    assert cfg.epochs == 5                      # CLI
    assert cfg.imgsz == 320                     # file (CLI left it unset)
    assert cfg.from_ == "voc"                   # file, YAML key 'from'
    assert cfg.batch == TrainConfig().batch     # default
    assert (cfg.operating_point.target, cfg.operating_point.value) == ("precision", 0.95)  # merged
    assert resolve_train_config(None, {}) == TrainConfig()


def test_round_trip_through_the_written_yaml(tmp_path: Path) -> None:
    cfg = resolve_train_config(None, {"data": tmp_path, "from": "coco", "model": "yolo11n", "epochs": 3})
    f = tmp_path / "config.yaml"
    f.write_text(yaml.safe_dump(cfg.to_yaml_dict()))
    assert "from" in yaml.safe_load(f.read_text())
    assert resolve_train_config(f, {}) == cfg


@pytest.mark.parametrize(("text", "cli", "expected"), [
    ("epocs: 3\n", {}, "unknown train config field 'epocs'; did you mean 'epochs'?"),
    ("imgsz: big\n", {}, "train config field 'imgsz'"),
    ("backend: detectron\n", {}, "train config field 'backend'"),
    ("operating_point: {value: 1.5}\n", {}, "operating_point.value"),
    ("- a\n- b\n", {}, "expected a mapping"),
    ("epochs: 3\n", {"batch": 0}, "command line: train config field 'batch'"),
])
def test_bad_configs_give_one_line(tmp_path: Path, text: str, cli: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_train_config(_file(tmp_path, text), cli)
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_operating_point_settings_and_their_val_split() -> None:
    """Image-level / priced operating points are refused before training when val cannot measure them."""
    from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
    from edgevision.core.errors import ConfigError
    from edgevision.train.config import OperatingPointConfig, TrainConfig
    from edgevision.train.trainer import _check_operating_split

    rule = OperatingPointConfig(max_escape_rate=0.05).to_rule()
    assert rule.mode == "image" and rule.min_threshold == 0.05 and rule.fallback == "f1"
    assert OperatingPointConfig(cost_escape=50, cost_false_reject=2).to_rule().mode == "cost"
    with pytest.raises(ValueError, match="cost_escape and cost_false_reject go together"):
        OperatingPointConfig(cost_escape=50)
    box = [[0, 0, 8, 8]]
    only_defects = Dataset(LabelMap(["crack"]), [ImageRecord("a.png", (32, 32), box, [0], split="val"),
                                                 ImageRecord("b.png", (32, 32), split="train")])
    cfg = TrainConfig(operating_point=OperatingPointConfig(max_escape_rate=0.05))
    with pytest.raises(ConfigError, match="its 1 images hold no defect-free image"):
        _check_operating_split(cfg, only_defects)
    _check_operating_split(TrainConfig(), only_defects)  # per class: nothing to check
    both = Dataset(LabelMap(["crack"]), [*only_defects.images, ImageRecord("c.png", (32, 32), split="val")])
    _check_operating_split(cfg, both)
