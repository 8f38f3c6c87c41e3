"""Typed YAML configuration files: read a file into a closed pydantic model with one-line errors.

>>> from pydantic import BaseModel, ConfigDict
>>> class Demo(BaseModel):
...     model_config = ConfigDict(extra="forbid")
...     size: int = 640
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "demo.yaml"
>>> _ = p.write_text("sise: 320")
>>> try:
...     load_yaml_config(p, Demo, "demo")
... except Exception as e:
...     print(str(e).split(": ", 1)[1])
unknown demo field 'sise'; did you mean 'size'?
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edgevision.core.errors import ConfigError, short_text
from edgevision.core.safeload import load_yaml

__all__ = ["describe_validation_error", "load_yaml_config", "read_yaml_mapping"]

M = TypeVar("M", bound=BaseModel)


def read_yaml_mapping(path: Path | str, what: str) -> dict[str, Any]:
    """Parse a YAML file whose top level must be a mapping.

    Args:
        path: the file; what: what it holds, for messages (``"recipe"``, ``"mapping"``).

    Parsed by the bounded loader (`edgevision.core.safeload.load_yaml`): an alias bomb, a huge or
    deeply nested file is refused in well under a second.

    Raises:
        ConfigError: unreadable file, malformed YAML (with the line) or a top level that is not a mapping.
    """
    path = Path(path)
    raw = load_yaml(path, what)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} fields, got {type(raw).__name__}")
    return raw


def describe_validation_error(e: ValidationError, model: type[BaseModel], what: str) -> str:
    """One line for the first validation error, with a did-you-mean for an unknown key."""
    first = e.errors()[0]
    loc = short_text(".".join(str(x) for x in _walk(model, first["loc"])[1]), 100)
    if first["type"] == "extra_forbidden":
        key = str(first["loc"][-1])
        fields = _fields_at(model, first["loc"][:-1])
        close = difflib.get_close_matches(key, fields, n=1) if len(key) <= 200 else []
        hint = f"; did you mean '{close[0]}'?" if close else f"; expected one of: {', '.join(fields)}"
        return f"unknown {what} field '{loc}'{hint}"
    if first["type"] == "missing":
        return f"{what} field '{loc}' is required"
    return f"{what} field '{loc}': {short_text(first['msg'], 160)}"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, dicts, Annotated)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


def _tagged(model: type[BaseModel], tag: str) -> bool:
    """Whether ``model`` is the member a union tag names: its ``type`` / ``protocol`` field is that literal."""
    import typing

    for key in ("type", "protocol"):
        f = model.model_fields.get(key)
        if f is not None and (f.default == tag or tag in typing.get_args(f.annotation)):
            return True
    return False


def _walk(model: type[BaseModel], loc: Any) -> tuple[list[type[BaseModel]], list[Any]]:
    """The candidate models at ``loc`` (a validation error's location) and ``loc`` without the union tags pydantic
    puts in it (``sources.0.folder.trigger`` is ``sources.0.trigger`` in the user's file). List indexes and dict
    keys are kept; several candidate models remain where the location does not say which one."""
    models: list[type[BaseModel]] = [model]
    shown: list[Any] = []
    for part in loc:
        if not isinstance(part, str):
            shown.append(part)  # a list index
            continue
        nxt = [n for m in models if part in m.model_fields for n in _models_in(m.model_fields[part].annotation)]
        if nxt:
            models = nxt
            shown.append(part)
            continue
        tagged = [m for m in models if _tagged(m, part)]
        if tagged:  # a discriminated union's tag (e.g. 'folder'): keep the member it names, not shown
            models = tagged
            continue
        shown.append(part)  # a dict key, or a field holding no model
    return models, shown


def _fields_at(model: type[BaseModel], loc: Any) -> list[str]:
    """The field names of the (nested) model at ``loc`` (a validation error's location without its last part)."""
    models, _ = _walk(model, loc)
    return list(dict.fromkeys(f for m in models for f in m.model_fields))


def load_yaml_config(path: Path | str, model: type[M], what: str) -> M:
    """Read ``path`` into ``model`` (a closed pydantic model).

    Raises:
        ConfigError: one line naming the file and the field (see `read_yaml_mapping`).
    """
    raw = read_yaml_mapping(path, what)
    try:
        return model(**raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {describe_validation_error(e, model, what)}") from e
