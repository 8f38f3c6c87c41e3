"""Every shipped training config loads, and default.yaml documents the real defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgevision.train.augment import list_presets
from edgevision.train.config import TrainConfig, resolve_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
FILES = sorted(CONFIGS.glob("*.yaml"))


def test_the_expected_configs_are_shipped():
    assert {"default.yaml", "sample.yaml", "neu-det.yaml", "neu-det-mit.yaml"} <= {f.name for f in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_config_loads_and_names_a_real_preset(path):
    cfg = resolve_train_config(path, {})
    assert cfg.augment in list_presets()
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert "from_" not in raw  # the YAML key is `from`
    assert set(raw) <= set(TrainConfig().to_yaml_dict())


def test_default_yaml_equals_the_code_defaults():
    """default.yaml lists every key with the value TrainConfig uses, so the documentation cannot drift."""
    raw = yaml.safe_load((CONFIGS / "default.yaml").read_text(encoding="utf-8"))
    assert raw == TrainConfig().to_yaml_dict()
    assert resolve_train_config(CONFIGS / "default.yaml", {}) == TrainConfig()


def test_cli_values_beat_the_file():
    cfg = resolve_train_config(CONFIGS / "sample.yaml", {"epochs": 2, "imgsz": None})
    assert cfg.epochs == 2 and cfg.imgsz == 320 and cfg.augment == "industrial-light"


def test_neu_det_settings():
    cfg = resolve_train_config(CONFIGS / "neu-det.yaml", {})
    assert cfg.recipe == "neu-det" and cfg.augment == "industrial" and cfg.imgsz == 320
    recipe = Path(__file__).resolve().parents[2] / "converters" / "neu-det.yaml"
    assert yaml.safe_load(recipe.read_text(encoding="utf-8"))["name"] == cfg.recipe
