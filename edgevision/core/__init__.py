"""Canonical data model, box geometry, shapes, errors and atomic I/O."""

from edgevision.core.dataset import Dataset, ImageRecord, LabelMap, ObjectList
from edgevision.core.errors import ConfigError, DatasetError, EdgeVisionError, UnknownNameError
from edgevision.core.geometry import RLE, Polygon, Polyline
from edgevision.core.report import Finding, OnError, Report

__all__ = [
    "RLE",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "EdgeVisionError",
    "Finding",
    "ImageRecord",
    "LabelMap",
    "ObjectList",
    "OnError",
    "Polygon",
    "Polyline",
    "Report",
    "UnknownNameError",
]
