"""Ultralytics backend pieces that need no training run: extra arguments, the CPU optimizer choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevision.core.errors import ConfigError
from edgevision.train.config import TrainConfig
from edgevision.train.ultralytics_backend import check_extra_args, cpu_optimizer


def _data_yaml(tmp_path: Path, nc: int) -> Path:
    p = tmp_path / "data.yaml"
    p.write_text("train: images/train\nval: images/val\nnames:\n" + "".join(f"  {i}: c{i}\n" for i in range(nc)))
    return p


def test_cpu_runs_get_adamw_instead_of_musgd(tmp_path: Path) -> None:
    data = _data_yaml(tmp_path, 6)
    got = cpu_optimizer("cpu", TrainConfig(), data)
    assert got == {"optimizer": "AdamW", "lr0": round(0.002 * 5 / 10, 6), "momentum": 0.9}  # Ultralytics' lr fit
    assert cpu_optimizer("cpu", TrainConfig(lr0=0.003), data)["lr0"] == 0.003
    assert cpu_optimizer("0", TrainConfig(), data) == {}  # GPUs keep Ultralytics' auto choice
    assert cpu_optimizer("cpu", TrainConfig(ultralytics={"optimizer": "SGD"}), data) == {}  # the user's choice wins


def test_extra_arguments_are_checked_against_ultralytics_defaults() -> None:
    check_extra_args({"nbs": 16, "close_mosaic": 5, "optimizer": "SGD"})
    with pytest.raises(ConfigError, match="did you mean 'close_mosaic'"):
        check_extra_args({"close_mosiac": 5})
    with pytest.raises(ConfigError, match="set by EdgeVision"):
        check_extra_args({"imgsz": 320})
