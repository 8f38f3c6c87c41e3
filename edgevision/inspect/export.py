"""A FiftyOne dataset, saved view or tag back out through EdgeVision's writers.

``VIEW`` selects the samples (always written with all their labels, also when a saved view shows only
some objects): a saved view of the dataset (``missed``, or one the user saved in the
App), else a sample tag (``relabel``, ``val``, ``escape``), else a label tag (samples holding an object
tagged so). The label field written is ``ground_truth`` unless told otherwise (``predictions``
exports the model's boxes, e.g. as pre-labels). Samples EdgeVision loaded keep their names, splits,
attributes and metadata; samples of any other FiftyOne dataset are named by their path relative to
the images' common folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevision.core.dataset import Dataset, ImageRecord, LabelMap
from edgevision.core.errors import ConfigError, DatasetError, OutputExistsError
from edgevision.core.io import ImageMode, read_image_size
from edgevision.inspect.fo_env import database_dir, import_fiftyone, user_datasets
from edgevision.inspect.samples import GT_FIELD, sample_to_record

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """What `export_from_fiftyone` wrote: ``samples`` images with ``objects`` objects of ``classes``."""

    out: Path
    to: str
    samples: int
    objects: int
    classes: list[str]
    selected_by: str
    dropped_shapes: int = 0
    new_classes: list[str] = field(default_factory=list)
    losses: Any = None


def open_dataset(fo: Any, name: str, db_dir: Path | None) -> Any:
    """``fo.load_dataset(name)`` with a one-line error listing the datasets there are."""
    if name not in fo.list_datasets():
        import difflib

        names = user_datasets(fo)
        close = difflib.get_close_matches(name, names, 1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        have = ", ".join(names) or "none"
        raise ConfigError(f"no FiftyOne dataset '{name}'{hint} in {database_dir(db_dir)}; datasets there: {have}")
    return fo.load_dataset(name)


def select_view(ds: Any, view: str | None) -> tuple[Any, str]:
    """The samples ``view`` names (see the module docstring) and how they were found."""
    if view is None:
        return ds, "the whole dataset"
    if ds.has_saved_view(view):  # its samples with all their labels: `missed` filters the objects it shows
        return ds.select(ds.load_saved_view(view).values("id"), ordered=True), f"saved view '{view}'"
    sample_tags = ds.count_sample_tags()
    if view in sample_tags:
        return ds.match_tags(view), f"sample tag '{view}'"
    label_tags = ds.count_label_tags()
    if view in label_tags:
        return ds.match_labels(tags=view), f"label tag '{view}'"
    known = (f"saved views: {', '.join(ds.list_saved_views()) or 'none'}; sample tags: "
             f"{', '.join(sorted(sample_tags)) or 'none'}; label tags: {', '.join(sorted(label_tags)) or 'none'}")
    raise ConfigError(f"--view {view}: dataset '{ds.name}' has no saved view or tag '{view}' ({known})")


def _names(samples: list[Any]) -> list[str]:
    """Record names: the stored EdgeVision name, else the path below the images' common folder."""
    paths = [Path(s.filepath) for s in samples]
    try:
        root = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path("/")
    except ValueError:  # different drives (Windows)
        root = None
    out = []
    for s, p in zip(samples, paths):
        stored = s["ev_name"] if s.has_field("ev_name") else None
        out.append(stored or (p.relative_to(root).as_posix() if root is not None else p.name))
    return out


def view_to_dataset(ds: Any, view: Any, label_field: str) -> tuple[Dataset, int, list[str]]:
    """The canonical dataset of a view's ``label_field``.

    Returns:
        The dataset, how many shapes were dropped (box edited), and classes not in the stored class list.

    Raises:
        ConfigError: ``label_field`` is not a field of the dataset.
        DatasetError: a label field that is not Detections, an image missing on disk without size metadata.
    """
    schema = ds.get_field_schema()
    if label_field not in schema:
        fields = [f for f, v in schema.items() if "Detections" in type(v).__name__ or
                  "Detections" in str(getattr(v, "document_type", ""))]
        raise ConfigError(f"--field {label_field}: dataset '{ds.name}' has no such field; label fields: "
                          f"{', '.join(fields) or 'none'}")
    info = (ds.info or {}).get("edgevision", {})
    stored = list(info.get("classes") or ds.default_classes or [])
    labels = LabelMap(list(stored))
    samples = list(view.iter_samples())
    records: list[ImageRecord] = []
    dropped = 0
    for s, name in zip(samples, _names(samples)):
        md = s.metadata
        if md is not None and md.width and md.height:
            size_hw = (int(md.height), int(md.width))
        else:
            size_hw = read_image_size(Path(s.filepath), where=name)
        rec, d = sample_to_record(s, label_field, labels, name, size_hw)
        dropped += d
        records.append(rec)
    new = [c for c in labels.names if c not in stored]
    out = Dataset(labels=labels, images=records)
    out.check()  # distinct image names among them
    return out, dropped, new


def export_from_fiftyone(
    name: str, out: Path | str, to: str, *, view: str | None = None, label_field: str = GT_FIELD,
    images: ImageMode = "copy", overwrite: bool = False, db_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ExportResult:
    """Write dataset ``name`` (or the samples ``view`` selects) to ``out`` in format ``to``, atomically.

    Raises:
        ConfigError: unknown dataset, view, field or format; OutputExistsError: ``out`` exists.
        DatasetError: nothing selected, or a sample that cannot be written.
    """
    from edgevision.convert import write_dataset
    from edgevision.formats import get_format

    fmt = get_format(to)
    if not fmt.can_write:
        from edgevision.formats import list_formats

        raise ConfigError(f"--to {to}: format cannot be written; writable: {', '.join(list_formats(writable=True))}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output already exists; choose another path or pass --overwrite")
    fo = import_fiftyone(db_dir)
    ds = open_dataset(fo, name, db_dir)
    selected, how = select_view(ds, view)
    if len(selected) == 0:
        raise DatasetError(f"{how} of dataset '{name}' holds no samples; nothing to export")
    if progress:
        progress("reading samples", 0, 1)
    dataset, dropped, new = view_to_dataset(ds, selected, label_field)
    inside = [r.name for r in dataset.images if r.path is not None and out.resolve() in Path(r.path).resolve().parents]
    if inside:
        raise ConfigError(f"{out}: the images being exported lie inside it (first: {inside[0]}); "
                          "choose an output folder that does not hold the dataset's images")
    if progress:
        progress("writing", 1, 1)
    losses = write_dataset(dataset, out, fmt.name, images=images, overwrite=overwrite)
    if dropped:
        log.warning("%d polygon/mask shape(s) dropped: their box was edited in FiftyOne, so the shape no longer fits",
                    dropped)
    return ExportResult(out=out, to=fmt.name, samples=len(dataset), objects=dataset.num_objects, classes=dataset.labels.names,
                        selected_by=how, dropped_shapes=dropped, new_classes=new, losses=losses)
