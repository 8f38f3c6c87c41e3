"""Evaluation: COCO metrics through pycocotools, P/R/F1 and a confusion matrix at one confidence,
operating points (per class, per image or priced; `edgevision.evaluate.operating`), image-level escape /
false-reject rates with exact 95% intervals, and a paired bootstrap over images of the difference between
two models' mAP. Inputs are canonical `ImageRecord` lists (ground truth and predictions, paired by name).

Importing this package does not import pycocotools (it is imported when metrics are computed).
"""

from edgevision.evaluate.bootstrap import BootstrapResult, MatchTable, match_table, paired_bootstrap
from edgevision.evaluate.coco import CocoMetrics, coco_evaluate
from edgevision.evaluate.matching import PRF, ConfusionMatrix
from edgevision.evaluate.operating import (
    OperatingPoints,
    SelectionRule,
    choose_thresholds,
    image_decisions,
    select_operating_points,
)
from edgevision.evaluate.predictions import read_predictions, write_predictions
from edgevision.evaluate.report import EvalReport, evaluate

__all__ = [
    "PRF",
    "BootstrapResult",
    "MatchTable",
    "CocoMetrics",
    "ConfusionMatrix",
    "EvalReport",
    "OperatingPoints",
    "SelectionRule",
    "choose_thresholds",
    "coco_evaluate",
    "evaluate",
    "image_decisions",
    "match_table",
    "paired_bootstrap",
    "read_predictions",
    "select_operating_points",
    "write_predictions",
]
