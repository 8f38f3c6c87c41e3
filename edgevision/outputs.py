"""What ``edgevision predict`` writes into its output folder, written as a stream: ``predictions.json``
(schema ``edgevision.predictions/1``), ``predictions.csv`` and annotated images.

The local command and the cluster run (`edgevision.scale`) write through these functions, so their files are
the same byte for byte. Entries stream through: the cluster run's driver merges millions of images from its
shards without holding them (`write_predictions_json` takes iterables and counts the summary as it goes).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgevision.core.dataset import ImageRecord

__all__ = ["csv_rows", "image_entry", "save_annotated", "write_predictions_csv", "write_predictions_json"]

CSV_HEADER = ["image", "class_id", "class", "score", "x1", "y1", "x2", "y2", "decision"]


def image_entry(rec: ImageRecord, names: list[str], decision: str) -> dict[str, Any]:
    """One image of ``predictions.json``: boxes xyxy in the image's pixels (3 decimals), scores (6 decimals)."""
    return {
        "name": rec.name, "size_hw": [int(v) for v in rec.size_hw],
        "boxes": [[round(v, 3) for v in b] for b in rec.boxes.tolist()],
        "class_ids": rec.class_ids.tolist(),
        "class_names": [names[i] for i in rec.class_ids.tolist()],
        "scores": [round(float(s), 6) for s in (rec.scores if rec.scores is not None else [])],
        "decision": decision,
    }


class _Summary:
    """The ``summary`` of ``predictions.json``, counted from the image entries as they pass."""

    def __init__(self, names: list[str]) -> None:
        self.classes = {n: {"detections": 0, "images": 0} for n in names}
        self.images = self.unreadable = self.rejected = 0

    def image(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.images += 1
        self.rejected += entry["decision"] == "reject"
        for n, c in Counter(entry["class_names"]).items():
            self.classes[n]["detections"] += c
            self.classes[n]["images"] += 1
        return entry

    def bad(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.unreadable += 1
        return entry

    def doc(self) -> dict[str, Any]:
        return {"images": self.images, "unreadable": self.unreadable, "rejected": self.rejected,
                "accepted": self.images - self.rejected, "classes": self.classes}


def write_predictions_json(f: IO[str], header: dict[str, Any], images: Iterable[dict[str, Any]],
                           unreadable: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Write ``predictions.json`` to the text stream ``f``, exactly as ``json.dumps(doc, indent=1,
    ensure_ascii=False)`` would, without holding the image list.

    Args:
        header: the keys before ``images`` (schema, classes, model, model_kind, thresholds, ...);
            its ``classes`` names the summary's classes.
        images: `image_entry` dicts in input order; unreadable: ``{"name", "error"}`` dicts in input order.

    Returns:
        The ``summary`` written last.
    """
    summary = _Summary(list(header["classes"]))
    fields: list[tuple[str, Any]] = [*header.items(), ("images", (summary.image(e) for e in images)),
                                     ("unreadable", (summary.bad(e) for e in unreadable)), ("summary", summary.doc)]
    f.write("{")
    for i, (key, value) in enumerate(fields):
        f.write(("," if i else "") + "\n " + json.dumps(key, ensure_ascii=False) + ": ")
        if callable(value):
            value = value()
        if isinstance(value, Iterator):
            _write_array(f, value)
        else:
            f.write(_indent(json.dumps(value, indent=1, ensure_ascii=False), " "))
    f.write("\n}\n")
    return summary.doc()


def _write_array(f: IO[str], items: Iterator[Any]) -> None:
    first = True
    for item in items:
        f.write(("[\n  " if first else ",\n  ") + _indent(json.dumps(item, indent=1, ensure_ascii=False), "  "))
        first = False
    f.write("[]" if first else "\n ]")


def _indent(text: str, prefix: str) -> str:
    return text.replace("\n", "\n" + prefix)


def csv_rows(entries: Iterable[dict[str, Any]]) -> Iterator[list[Any]]:
    """``predictions.csv`` rows (after `CSV_HEADER`): one per detection, one empty row for an image without."""
    for im in entries:
        for b, c, n, s in zip(im["boxes"], im["class_ids"], im["class_names"], im["scores"]):
            yield [im["name"], c, n, s, *b, im["decision"]]
        if not im["boxes"]:
            yield [im["name"], "", "", "", "", "", "", "", im["decision"]]


def csv_writer(f: IO[str]) -> Any:
    """A ``csv.writer`` on the text stream ``f`` with `CSV_HEADER` written: `csv_rows` go through it."""
    w = csv.writer(f, lineterminator="\n")
    w.writerow(CSV_HEADER)
    return w


def write_predictions_csv(f: IO[str], entries: Iterable[dict[str, Any]]) -> None:
    """Write ``predictions.csv`` (`CSV_HEADER`, `csv_rows`) to the text stream ``f``."""
    csv_writer(f).writerows(csv_rows(entries))


def annotated_path(img_dir: Path, name: str, is_video: bool) -> Path:
    """Where ``--save-images`` puts the annotated copy of input ``name`` (JPEG for frames and JPEG inputs,
    else PNG)."""
    target = img_dir / name.replace("#", "_")
    if is_video:
        return target.with_name(target.name + ".jpg")
    if target.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        return target.with_suffix(".png")
    return target


def save_annotated(img_dir: Path, name: str, image: np.ndarray, rec: ImageRecord, names: list[str],
                   is_video: bool = False, write: Callable[[Path, bytes], Any] | None = None) -> None:
    """Draw ``rec`` on ``image`` and write it to `annotated_path` (``write(path, data)``: default a plain write;
    the cluster run writes atomically, so a retried shard replaces its images)."""
    import cv2

    from edgevision.infer import draw

    target = annotated_path(img_dir, name, is_video)
    target.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(target.suffix, draw(image, rec, names))
    if ok:
        (write or Path.write_bytes)(target, buf.tobytes())
