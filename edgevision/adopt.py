"""``edgevision adopt``: a self-describing EdgeVision copy of a foreign ONNX file (`adopt_model`).

From a foreign file (an Ultralytics export, whose own metadata `edgevision.runtime.foreign` reads, or another
exporter's file with no metadata at all) and what the user pins (class names, size, layout, pre-processing,
operating points), `adopt_model` writes a copy with EdgeVision's metadata (schema ``edgevision.model/1``),
``source.adopted`` and the source file's sha256. Only ``metadata_props`` change (`edgevision.runtime.props`):
the graph is copied byte for byte, so no ``onnx`` package is needed (it runs on a runtime-only install). The
result is opened and run once before it is written, atomically; the source file is never modified.

A command-level tool above the runtime (it reads operating points with `edgevision.evaluate.operating`); the
runtime itself imports nothing from here.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevision.core.errors import ConfigError, OutputExistsError, UnknownNameError, short_text
from edgevision.runtime.foreign import PREPROCESS_KEYS, GraphInfo, foreign_metadata, names_list
from edgevision.runtime.metadata import (
    CHANNEL_ORDERS,
    METADATA_KEY,
    MONO_MODES,
    RESIZE_MODES,
    UINT16_MODES,
    ModelFormatError,
    ModelMetadata,
)

log = logging.getLogger(__name__)

__all__ = ["AdoptResult", "adopt_model", "parse_preprocess", "read_class_names"]




def _choice(key: str, options: Sequence[str]) -> Any:
    def parse(value: str) -> str:
        v = value.upper() if key == "channel_order" else value
        if v not in options:
            raise UnknownNameError(f"--preprocess {key}", value, options)
        return v

    return parse


def _scale(value: str) -> float:
    num, sep, den = value.partition("/")
    return float(num) / float(den) if sep else float(value)


def _triple(value: str) -> tuple[float, float, float]:
    v = [float(x) for x in value.split(",")]
    if len(v) == 1:
        v = v * 3
    if len(v) != 3:
        raise ValueError(value)
    return v[0], v[1], v[2]


_PARSERS: dict[str, Any] = {
    "resize": _choice("resize", RESIZE_MODES), "pad_value": int, "channel_order": _choice("channel_order", CHANNEL_ORDERS),
    "scale": _scale, "mean": _triple, "std": _triple, "mono": _choice("mono", MONO_MODES),
    "uint16": _choice("uint16", UINT16_MODES),
}
_EXPECTED = {"pad_value": "an integer 0..255", "scale": "a number or a fraction such as 1/255",
             "mean": "one number or three, comma-separated", "std": "one number or three, comma-separated"}


def parse_preprocess(pairs: Sequence[str]) -> dict[str, Any]:
    """``["channel_order=BGR", "scale=1/255", "mean=0.485,0.456,0.406", ...]`` -> `InputSpec` fields.

    Raises:
        ConfigError: not ``key=value``, a bad value. UnknownNameError: an unknown key or choice.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ConfigError(f"--preprocess '{short_text(pair, 80)}': expected key=value, e.g. --preprocess "
                              "channel_order=BGR")
        if key not in _PARSERS:
            raise UnknownNameError("--preprocess key", key, PREPROCESS_KEYS)
        try:
            out[key] = _PARSERS[key](value)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--preprocess {key}={short_text(value, 60)}: expected {_EXPECTED[key]}") from None
        if key == "pad_value" and not 0 <= out[key] <= 255:
            raise ConfigError(f"--preprocess pad_value={value}: expected {_EXPECTED[key]}")
        if key == "std" and 0.0 in out[key]:
            raise ConfigError(f"--preprocess std={value}: a std of 0 divides by zero")
    return out


MAX_CLASSES_FILE = 1 << 20


def read_class_names(path: Path | str) -> list[str]:
    """Class names from a file: ``.txt`` (one per line, blank lines skipped), or ``.yaml`` / ``.json`` holding a
    list, ``{id: name}``, or a mapping with ``names`` (an Ultralytics ``data.yaml``).

    Raises:
        ConfigError: missing, too large, or no usable list of distinct names.
    """
    from edgevision.core.errors import DatasetError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--classes {p}: file not found")
    if p.stat().st_size > MAX_CLASSES_FILE:
        raise ConfigError(f"--classes {p}: {p.stat().st_size:,} bytes; expected at most {MAX_CLASSES_FILE:,}")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            from edgevision.core.safeload import load_yaml

            data: Any = load_yaml(p, "class names file")
        elif p.suffix.lower() == ".json":
            from edgevision.core.safeload import load_json

            data = load_json(p)
        else:
            data = [ln.strip() for ln in p.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        if isinstance(data, Mapping) and "names" in data:
            data = data["names"]
        return names_list(data)
    except (ValueError, DatasetError) as e:
        raise ConfigError(f"--classes {p}: {e}") from None


@dataclass
class AdoptResult:
    """What `adopt_model` wrote.

    Attributes:
        path: the new file; size_bytes; metadata: the document written into it; source_sha256: of the input;
        notes: what was read, given and assumed; checks: name -> short result of each check that passed.
    """

    path: Path
    size_bytes: int
    metadata: ModelMetadata
    source_sha256: str
    notes: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)


def _check_paths(src: Path, out: Path, overwrite: bool) -> None:
    if not src.is_file():
        raise ModelFormatError(f"{src}: model file not found" if not src.exists() else f"{src}: is not a file")
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out}: expected a file name ending in .onnx")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name ending in .onnx")
    if out.resolve() == src.resolve():
        raise ConfigError(f"--out {out}: is the source model, which adopt never modifies; write another file")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output already exists; choose another path or pass --overwrite")


def _session(data: bytes, where: str) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several types
        raise ModelFormatError(f"{where}: not an ONNX model onnxruntime can load ({short_text(str(e), 200)})") from None


def _pin_edgevision(meta: ModelMetadata, where: str, names: Sequence[str] | None, imgsz: int | None,
                    layout: str | None, pre: Mapping[str, Any]) -> None:
    """Apply what the user gave to a file that has EdgeVision metadata already (the graph cannot change)."""
    if names is not None:
        if len(names) != len(meta.names):
            raise ConfigError(f"--classes: {len(names)} names for a model of {len(meta.names)} classes ({where})")
        meta.names = list(names)
    if imgsz is not None and (imgsz, imgsz) != tuple(meta.input.size_hw):
        raise ConfigError(f"--imgsz {imgsz}: {where} takes {meta.input.size_hw[1]}x{meta.input.size_hw[0]} inputs")
    if layout is not None and layout != meta.output.layout:
        raise ConfigError(f"--layout {layout}: {where} is {meta.output.layout} (its EdgeVision metadata)")
    for k, v in pre.items():
        setattr(meta.input, k, v)


def adopt_model(model: Path | str, out: Path | str, *, classes: Path | str | Sequence[str] | None = None,
                imgsz: int | None = None, layout: str | None = None, preprocess: Mapping[str, Any] | None = None,
                thresholds: Path | str | None = None, overwrite: bool = False) -> AdoptResult:
    """Write a self-describing EdgeVision copy of an ONNX detector (schema ``edgevision.model/1``).

    What the file's metadata says (Ultralytics' keys, or EdgeVision's) is read; what is given here wins;
    what neither says is assumed as in `foreign_metadata`. ``source`` keeps the exporter and records
    ``adopted: true``, ``adopted_from`` and ``source_sha256``. Only ``metadata_props`` change; the result is
    opened and run once by the runtime before it is written, atomically; ``model`` is never modified.

    Args:
        model: the ONNX file; out: the file to write (``.onnx``, not ``model``).
        classes: a class-names file (see `read_class_names`) or the names; imgsz: the square input side (for a
            graph whose height and width are free); layout: a key of `LAYOUTS` (default: detected);
        preprocess: `InputSpec` fields (see `parse_preprocess`); thresholds: a ``thresholds.json`` (``edgevision
            eval --save-thresholds``) whose classes are the model's; overwrite: replace ``out``.

    Raises:
        ModelFormatError: an unusable file, a non-detection task, an unknown layout, no class names.
        ConfigError / UnknownNameError: bad options. OutputExistsError: ``out`` exists.
    """
    from edgevision import __version__
    from edgevision.core.io import write_atomic
    from edgevision.runtime.props import ProtoError, metadata_props, opset, with_metadata

    src, dst = Path(model), Path(out)
    _check_paths(src, dst, overwrite)
    names = (read_class_names(classes) if isinstance(classes, (str, Path)) else
             None if classes is None else _given_names(classes))
    pre = dict(preprocess or {})
    unknown = [k for k in pre if k not in PREPROCESS_KEYS]
    if unknown:
        raise UnknownNameError("--preprocess key", unknown[0], PREPROCESS_KEYS)
    data = src.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        props = metadata_props(data)
        op = opset(data)
    except ProtoError as e:
        raise ModelFormatError(f"{src}: not an ONNX model ({e})") from None
    graph = GraphInfo.of(_session(data, str(src)))
    if METADATA_KEY in props:
        meta = ModelMetadata.from_json(props[METADATA_KEY], where=str(src))
        _pin_edgevision(meta, str(src), names, imgsz, layout, pre)
        notes = [f"EdgeVision metadata kept (layout {meta.output.layout}, exported {meta.created or 'at an unknown time'})"]
    else:
        meta = foreign_metadata(props, graph, str(src), names=names, imgsz=imgsz, layout=layout, preprocess=pre)
        read = meta.source.get("read") or []
        notes = [f"read from {meta.source.get('exporter')} metadata: {', '.join(read)}" if read else
                 "no metadata in the file: class names from --classes, size and layout from the graph"]
        if meta.source.get("assumed"):
            notes.append(f"assumed: {meta.source['assumed']}; pin it with --preprocess KEY=VALUE")
        notes += [meta.source[k] for k in ("input_note", "graph_nms") if meta.source.get(k)]
    given = [k for k, v in (("names", names), ("imgsz", imgsz), ("layout", layout), ("thresholds", thresholds))
             if v is not None] + sorted(pre)
    if names is not None and meta.class_thresholds() and thresholds is None \
            and sorted(meta.class_thresholds() or {}) != sorted(meta.names):
        raise ConfigError(f"--classes: {src} carries operating points for {list(meta.class_thresholds() or {})}; "
                          "renamed classes need them again: pass --thresholds with the new names")
    if thresholds is not None:
        from edgevision.evaluate.operating import OperatingPoints

        pinned = OperatingPoints.load(thresholds)
        if sorted(pinned.classes) != sorted(meta.names):
            raise ConfigError(f"--thresholds {thresholds}: operating points for classes {list(pinned.classes)} but the "
                              f"model has {meta.names}")
        meta.thresholds = pinned.to_dict()
        notes.append(f"operating points from {thresholds}")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    meta.source = {**meta.source, "origin": "adopted", "adopted": True, "adopted_from": src.name,
                   "source_sha256": sha, "adopted_at": now, "given": given}
    meta.opset = meta.opset if meta.opset is not None else op
    meta.edgevision_version, meta.created = __version__, now
    meta.check(str(dst))
    new = with_metadata(data, {METADATA_KEY: meta.to_json()})
    checks = _verify(new, meta, dst)
    write_atomic(dst, new)
    log.info("adopted %s -> %s (layout %s, %d classes)", src, dst, meta.output.layout, len(meta.names))
    return AdoptResult(dst, len(new), meta, sha, notes, checks)


def _given_names(classes: Sequence[str]) -> list[str]:
    try:
        return names_list(list(classes))
    except ValueError as e:
        raise ConfigError(f"--classes: {e}") from None


def _verify(data: bytes, meta: ModelMetadata, out: Path) -> dict[str, str]:
    """Open the new bytes with the `Detector` (every graph-vs-metadata check) and run one grey image."""
    import numpy as np

    from edgevision.runtime.detector import Detector

    with tempfile.TemporaryDirectory(prefix="ev-adopt-") as tmp:
        f = Path(tmp) / out.name
        f.write_bytes(data)
        try:
            det = Detector(f, providers=["CPUExecutionProvider"], threads=1)
            h, w = meta.input.size_hw
            d = det(np.full((h, w, 3), 114, np.uint8))
        except ModelFormatError as e:
            raise ModelFormatError(str(e).replace(str(f), str(out))) from None
    return {"runtime": f"opened and ran a grey {w}x{h} image ({len(d)} detection(s))"}
