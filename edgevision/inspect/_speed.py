"""Make FiftyOne's per-sample saves linear in the number of objects, while EdgeVision evaluates.

FiftyOne's ``evaluate_detections`` sets ``eval`` / ``eval_id`` / ``eval_iou`` on every object and
saves each sample. mongoengine's ``BaseDocument._clear_changed_fields`` (0.29) then walks every
changed path (``predictions.detections.17.eval``, one per object) and, at the ``detections`` list,
clears *every* object of the list: K objects cost K x K. Measured here: 100 detections per image (a
model run at confidence 0.001, as mAP needs) took 1.4 s per image to evaluate, 10 took 0.085 s.

`linear_saves` swaps in the same walk that clears each list or dict once per save (the state left
behind is identical: every object on a changed path has no changed fields), and restores
mongoengine's method on exit. It is used only around EdgeVision's calls into FiftyOne.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def _clear_changed_fields_once(self: Any) -> None:
    """mongoengine's ``_clear_changed_fields``, clearing each nested list / dict at most once."""
    from mongoengine.base.document import BaseDocument
    from mongoengine.common import _import_class
    from mongoengine.fields import LazyReference

    reference_fields = (_import_class("ReferenceField"), _import_class("GenericReferenceField"))
    cleared: set[int] = set()
    for changed in self._get_changed_fields():
        data = self
        for part in changed.split("."):
            if isinstance(data, list):
                try:
                    data = data[int(part)]
                except IndexError:
                    data = None
            elif isinstance(data, dict):
                data = data.get(part, None)
            else:
                data = getattr(data, data._reverse_db_field_map.get(part, part), None)
            if not isinstance(data, LazyReference) and hasattr(data, "_changed_fields"):
                if getattr(data, "_is_document", False):
                    continue
                data._changed_fields = []
            elif isinstance(data, list | tuple | dict):
                if hasattr(data, "field") and isinstance(data.field, reference_fields):
                    continue
                if id(data) not in cleared:
                    cleared.add(id(data))
                    BaseDocument._nestable_types_clear_changed_fields(data)
    self._changed_fields = []


@contextlib.contextmanager
def linear_saves() -> Iterator[None]:
    """Within the block, mongoengine clears changed fields in linear time (see the module docstring)."""
    from mongoengine.base.document import BaseDocument

    original = BaseDocument.__dict__["_clear_changed_fields"]
    BaseDocument._clear_changed_fields = _clear_changed_fields_once  # type: ignore[method-assign]
    try:
        yield
    finally:
        BaseDocument._clear_changed_fields = original  # type: ignore[method-assign]
