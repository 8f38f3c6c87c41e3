"""The training configuration: one closed pydantic model for ``configs/train/*.yaml`` and the CLI.

Precedence is CLI > file > defaults (`resolve_train_config`); the resolved config is written into the
run folder as ``config.yaml`` so a colleague can rerun it with ``--config RUN/config.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgevision.config import describe_validation_error, read_yaml_mapping
from edgevision.core.errors import ConfigError

__all__ = ["OperatingPointConfig", "TrainConfig", "resolve_train_config"]

Backend = Literal["ultralytics", "torchvision", "libreyolo"]


class OperatingPointConfig(BaseModel):
    """How the confidence thresholds are chosen on the validation split (see `edgevision.evaluate.operating`).

    Attributes:
        target: ``recall`` (the default: QA fixes how many defects may escape) or ``precision``, per class.
        value: the per-class target, e.g. 0.9 recall per class at IoU ``iou``.
        max_escape_rate / max_false_reject_rate: choose per image instead: the thresholds keeping the image-level
            escape rate (and / or false-reject rate) within the limit, minimising the other.
        cost_escape / cost_false_reject: choose priced: the thresholds minimising the expected cost per part
            (both needed; rate limits, if set, still hold).
        defect_rate: the share of defective parts on the line, for the expected cost (default: the val split's).
        fallback: ``f1`` (the default) or ``default``: the rule of a class whose per-class target is unreachable.
        min_threshold: no rule chooses a threshold below this (0.05).
        iou: the IoU at which a detection matches a ground-truth box.
    """

    model_config = ConfigDict(extra="forbid")
    target: Literal["recall", "precision"] = "recall"
    value: float = Field(0.9, gt=0, le=1)
    max_escape_rate: float | None = Field(None, ge=0, le=1)
    max_false_reject_rate: float | None = Field(None, ge=0, le=1)
    cost_escape: float | None = Field(None, gt=0)
    cost_false_reject: float | None = Field(None, gt=0)
    defect_rate: float | None = Field(None, ge=0, le=1)
    fallback: Literal["f1", "default"] = "f1"
    min_threshold: float = Field(0.05, gt=0, lt=1)
    iou: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _costs_in_pairs(self) -> OperatingPointConfig:
        if (self.cost_escape is None) != (self.cost_false_reject is None):
            raise ValueError("cost_escape and cost_false_reject go together (the cost of one escaped defective part "
                             "and of one rejected good part)")
        return self

    def to_rule(self) -> Any:
        """The `edgevision.evaluate.operating.SelectionRule` these settings describe."""
        from edgevision.evaluate.operating import SelectionRule

        return SelectionRule(**self.model_dump())


class TrainConfig(BaseModel):
    """Every training knob; the YAML keys are the field names (``from`` for the input format).

    Attributes:
        data: dataset file or folder in any format EdgeVision reads.
        from_: input format (YAML key ``from``), ``auto`` to detect.
        recipe: public-dataset recipe name (see ``edgevision recipes list``).
        backend: ``ultralytics`` (AGPL-3.0), ``libreyolo`` (MIT, YOLOv9) or ``torchvision`` (BSD, SSDlite).
        model: architecture name (``yolov8n``, ``yolo11n``, ``yolo9-t``, ``ssdlite320_mobilenet_v3_large``), a
            registered weights name (``edgevision weights list``) or a local ``.pt`` / ``.yaml`` path.
        imgsz: training and validation image side in pixels.
        epochs: maximum epochs; patience: epochs without improvement before stopping (0: never).
        batch: images per step; device: ``cpu``, ``0`` or ``0,1`` (DDP on one machine).
        seed: seeds the split, the weights init and the data order.
        workers: data-loader workers (None: EdgeVision chooses); threads: torch CPU threads
            (None: all cores).
        augment: augmentation preset (``edgevision.train.augment.list_presets()``), ``none`` to disable.
        val_fraction: for a dataset without a validation split, the fraction held out by a seeded
            stratified split.
        difficult: how objects flagged ``difficult`` count: ``ignore`` (neither found nor missed, as
            in Pascal VOC), ``count`` (ordinary objects) or ``drop`` (removed before training too).
        time_hours: stop after this much training time (hours), whatever ``epochs`` says.
        lr0: initial learning rate (None: the backend's default).
        plots: write training curves (needs matplotlib).
        operating_point: how per-class thresholds are chosen (see `OperatingPointConfig`).
        ultralytics: extra Ultralytics ``train`` arguments (``nbs``, ``optimizer``, ``mosaic``,
            ``close_mosaic``, ...), checked against Ultralytics' own defaults file; ignored by the
            torchvision backend. Keys EdgeVision sets itself (``data``, ``epochs``, ...) are refused.
        libreyolo: extra LibreYOLO ``train`` arguments for the libreyolo backend (``eval_interval``,
            ``no_aug_epochs``, ``warmup_epochs``, ``optimizer``, ...), checked against LibreYOLO's YOLOv9 config;
            keys EdgeVision sets itself are refused.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    data: Path | None = None
    from_: str = Field("auto", alias="from")
    recipe: str | None = None
    backend: Backend = "ultralytics"
    model: str = "yolov8n"
    imgsz: int = Field(640, ge=32, le=8192)
    epochs: int = Field(100, ge=1)
    batch: int = Field(16, ge=1)
    device: str = "cpu"
    seed: int = Field(0, ge=0)
    patience: int = Field(50, ge=0)
    workers: int | None = Field(None, ge=0)
    threads: int | None = Field(None, ge=1)
    augment: str = "industrial"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    difficult: Literal["ignore", "count", "drop"] = "ignore"
    time_hours: float | None = Field(None, gt=0)
    lr0: float | None = Field(None, gt=0)
    plots: bool = True
    operating_point: OperatingPointConfig = Field(default_factory=OperatingPointConfig)
    ultralytics: dict[str, Any] = Field(default_factory=dict)
    libreyolo: dict[str, Any] = Field(default_factory=dict)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The config as YAML-ready data, keys as in the file (``from``, not ``from_``)."""
        d = self.model_dump(mode="json", by_alias=True)
        return d


def resolve_train_config(file: Path | None, cli: dict[str, Any]) -> TrainConfig:
    """Merge defaults < ``file`` < ``cli`` (only the CLI values that were given, i.e. not None).

    Raises:
        ConfigError: one line naming the file (or ``command line``) and the key, with a did-you-mean.
    """
    merged: dict[str, Any] = {}
    where = "command line"
    if file is not None:
        merged.update(read_yaml_mapping(file, "train config"))
        where = str(file)
    given = {k: v for k, v in cli.items() if v is not None}
    if "operating_point" in given and isinstance(merged.get("operating_point"), dict):
        given["operating_point"] = {**merged["operating_point"], **given["operating_point"]}
    merged.update(given)
    try:
        return TrainConfig(**merged)
    except ValidationError as e:
        src = "command line" if _first_key(e) in given else where
        raise ConfigError(f"{src}: {describe_validation_error(e, TrainConfig, 'train config')}") from e


def _first_key(e: ValidationError) -> str:
    loc = e.errors()[0]["loc"]
    return str(loc[0]) if loc else ""
