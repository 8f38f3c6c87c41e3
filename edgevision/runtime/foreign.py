"""Foreign ONNX files: a detector exported by Ultralytics (or another exporter) without EdgeVision's metadata.

Ultralytics writes its own ``metadata_props`` into every ONNX export, values as Python literals in text:
``names`` (``"{0: 'crack', ...}"``), ``imgsz`` (``"[640, 640]"``), ``stride``, ``task``, ``batch``,
``channels``, ``end2end``, ``args`` (``"{'nms': True, 'dynamic': False, ...}"``), and ``author``,
``version``, ``license``, ``description``, ``date``. `foreign_metadata` turns them and the graph's input
and output shapes into the `ModelMetadata` the runtime uses for its own files:

* layout from the one output's shape: ``(B, 4+nc, N)`` is ``yolo-raw`` (YOLOv5u / v8 / 11, and YOLO26
  exported with its one-to-many head, Ultralytics' default); ``(B, K, 6)`` is ``yolo-end2end`` (YOLO26's
  end-to-end head, exported with ``nms=False``, or any head exported with ``nms=True``, whose graph ends
  in NMS). ``end2end`` or ``args.nms`` decide, as in Ultralytics' ``AutoBackend``; without them the shape
  alone, and a shape that fits both is refused;
* input size from the graph when fixed, else ``imgsz``; input dtype from the graph;
* the pre-processing is not in the file: Ultralytics' predictor's (`ULTRALYTICS_INPUT`: letterbox centred
  with pad 114, RGB, ``pixel / 255``, no mean / std; 16-bit images by their high byte) is assumed and the
  assumption recorded in ``source.assumed``, with ``source.origin = "foreign"``.

A task other than ``detect`` is refused in one line naming the task; outputs of no known layout in one
line naming the shapes found and those EdgeVision reads; a file without class names (another exporter)
in one line giving the ``edgevision adopt`` command that fixes it. ``edgevision adopt``
(`edgevision.adopt`) writes a self-describing copy of such a file.

numpy, onnxruntime and the standard library only (no torch, no ``onnx``): part of the runtime install.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgevision.core.errors import ConfigError, UnknownNameError, short_text
from edgevision.runtime.metadata import (
    LAYOUTS,
    METADATA_KEY,
    InputSpec,
    ModelFormatError,
    ModelMetadata,
    OutputSpec,
)

log = logging.getLogger(__name__)

__all__ = [
    "ULTRALYTICS_INPUT",
    "GraphInfo",
    "detect_layout",
    "foreign_metadata",
    "origin_note",
    "preprocess_text",
]

ULTRALYTICS_INPUT: dict[str, Any] = {
    "resize": "letterbox", "pad_value": 114, "channel_order": "RGB", "scale": 1.0 / 255.0,
    "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "mono": "replicate", "uint16": "high_byte",
}
"""What Ultralytics' predictor does to an image for a fixed-size ONNX model (``LetterBox(auto=False)``,
centred, pad 114; BGR to RGB; ``/ 255``), assumed for a foreign file: the file does not record it."""

PREPROCESS_KEYS = tuple(ULTRALYTICS_INPUT)
"""The `InputSpec` fields ``--preprocess`` sets."""

DEFAULTS = {"conf": 0.25, "iou": 0.7, "max_det": 300}
"""Ultralytics' predict defaults, the runtime's defaults for a foreign file."""

OTHER_TASKS = {"classify": "image classification", "segment": "instance segmentation", "pose": "pose / keypoints",
               "obb": "oriented boxes", "semantic": "semantic segmentation", "depth": "depth estimation"}
"""Ultralytics tasks EdgeVision does not run, with what each is."""

MAX_LITERAL = 1 << 20
"""Longest metadata value parsed (a hostile file could hold a huge ``names``)."""

_SHAPES = {"yolo-raw": "one output (B, 4+nc, N)", "yolo-end2end": "one output (B, K, 6)",
           "torchvision-postnms": "outputs boxes (K, 4), labels (K,), scores (K,)",
           "nms-in-graph": "outputs boxes (K, 4), scores (K,), class_ids (K,), batch_index (K,)"}


# --------------------------------------------------------------------------- the graph


def _dims_text(dims: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in dims) + "]"


@dataclass(frozen=True)
class GraphInfo:
    """A graph's interface as onnxruntime reports it; a dim is an int, a symbolic name or None.

    Attributes:
        inputs: ``[(name, dims, type)]``, e.g. ``("images", [1, 3, 640, 640], "tensor(float)")``;
        outputs: ``[(name, dims)]`` in graph order.
    """

    inputs: list[tuple[str, list[Any], str]]
    outputs: list[tuple[str, list[Any]]]

    @classmethod
    def of(cls, session: Any) -> GraphInfo:
        """The interface of an ``onnxruntime.InferenceSession``."""
        return cls([(i.name, list(i.shape or []), str(i.type)) for i in session.get_inputs()],
                   [(o.name, list(o.shape or [])) for o in session.get_outputs()])

    def outputs_text(self) -> str:
        """``output0 [1, 84, 8400], ...``."""
        return ", ".join(f"{n} {_dims_text(d)}" for n, d in self.outputs) or "none"


# --------------------------------------------------------------------------- Ultralytics' metadata


def _literal(props: Mapping[str, str], key: str, where: str) -> Any:
    """A metadata value written as a Python literal (Ultralytics) or JSON; None when absent."""
    text = props.get(key)
    if text is None:
        return None
    if len(text) > MAX_LITERAL:
        raise ModelFormatError(f"{where}: metadata '{key}' is {len(text):,} characters long; expected at most "
                               f"{MAX_LITERAL:,}")
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ModelFormatError(f"{where}: metadata '{key}' is not a literal: {short_text(text, 80)!r}") from None


def names_list(value: Any) -> list[str]:
    """Class names from a list, or from ``{id: name}`` with ids 0..n-1.

    Raises:
        ValueError: another type, ids that are not 0..n-1, no names, an empty or duplicate name.
    """
    if isinstance(value, Mapping):
        try:
            items = sorted((int(k), str(v)) for k, v in value.items())
        except (TypeError, ValueError):
            raise ValueError("class ids are not integers") from None
        ids = [k for k, _ in items]
        if ids != list(range(len(items))):
            raise ValueError(f"class ids {short_text(str(ids), 60)} are not 0..{len(items) - 1}")
        names = [v for _, v in items]
    elif isinstance(value, (list, tuple)):
        names = [str(v) for v in value]
    else:
        raise ValueError(f"expected a list of names or {{id: name}}, got {type(value).__name__}")
    if not names:
        raise ValueError("no class names")
    if any(not n.strip() for n in names):
        raise ValueError(f"class {next(i for i, n in enumerate(names) if not n.strip())} has an empty name")
    dup = sorted({n for n in names if names.count(n) > 1}) if len(names) < 10_000 else []
    if dup:
        raise ValueError(f"duplicate class name(s) {short_text(', '.join(dup), 80)}")
    return names


def _flag(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def read_ultralytics(props: Mapping[str, str], where: str) -> dict[str, Any]:
    """The Ultralytics metadata keys EdgeVision uses, parsed: ``names`` (list), ``imgsz`` ((h, w)), ``stride``,
    ``batch``, ``channels`` (ints), ``task``, ``end2end`` (True / False / None: ``end2end or args.nms``),
    ``nms`` (``args.nms``), ``dynamic``; ``read``: the keys found. Empty for a file without them.

    Raises:
        ModelFormatError: a present value that does not parse.
    """
    u: dict[str, Any] = {"read": [k for k in ("names", "imgsz", "stride", "task", "batch", "channels", "end2end",
                                              "args") if k in props]}
    if "names" in props:
        try:
            u["names"] = names_list(_literal(props, "names", where))
        except ValueError as e:
            raise ModelFormatError(f"{where}: metadata 'names': {e}") from None
    if "imgsz" in props:
        v = _literal(props, "imgsz", where)
        v = [v, v] if isinstance(v, int) else v
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)):
            raise ModelFormatError(f"{where}: metadata 'imgsz' is {short_text(props['imgsz'], 40)!r}; expected [h, w]")
        u["imgsz"] = (int(v[0]), int(v[1]))
    for key in ("stride", "batch", "channels"):
        if key in props:
            try:
                u[key] = int(float(props[key]))
            except ValueError:
                raise ModelFormatError(f"{where}: metadata '{key}' is {short_text(props[key], 40)!r}; expected an "
                                       "integer") from None
    if "task" in props:
        u["task"] = props["task"].strip()
    args = _literal(props, "args", where) if "args" in props else None
    args = args if isinstance(args, dict) else {}
    u["nms"] = _flag(args.get("nms"))
    u["dynamic"] = _flag(args.get("dynamic"))
    e2e = _flag(_literal(props, "end2end", where)) if "end2end" in props else None
    u["end2end"] = True if (e2e or u["nms"]) else (False if e2e is False or u["nms"] is False else None)
    return u


# --------------------------------------------------------------------------- layout and input


def _could_be(d: Any, want: int) -> bool:
    return not isinstance(d, int) or d == want


def detect_layout(graph: GraphInfo, nc: int | None, end2end: bool | None, where: str,
                  layout: str | None = None) -> str:
    """The output layout of a YOLO graph from its outputs' shapes (see the module doc).

    Args:
        nc: the number of classes (None: unknown, any ``(B, C > 4, N)`` may be raw);
        end2end: what the file's metadata says (None: nothing);
        layout: the layout the user gave (``--layout``): checked against the shapes instead of detected.

    Raises:
        ModelFormatError: no known layout, a shape both layouts fit and nothing to decide, a ``layout`` the
            shapes contradict. UnknownNameError: an unknown ``layout``.
    """
    dims = graph.outputs[0][1] if len(graph.outputs) == 1 else []
    three = len(dims) == 3
    raw = three and (_could_be(dims[1], 4 + nc) if nc is not None else not isinstance(dims[1], int) or dims[1] > 4)
    e2e = three and dims[2] == 6  # an end-to-end head's rows are always 6 wide (a free last axis is N anchors)
    need_raw = f"(B, {4 + nc}, N)" if nc is not None else "(B, 4+nc, N)"
    if layout is not None:
        if layout not in LAYOUTS:
            raise UnknownNameError("layout", layout, LAYOUTS)
        if not {"yolo-raw": raw, "yolo-end2end": e2e}.get(layout, True):  # the Detector checks the others
            need = need_raw if layout == "yolo-raw" else "(B, K, 6)"
            raise ModelFormatError(f"{where}: --layout {layout} needs one output {need}; the graph has "
                                   f"{graph.outputs_text()}")
        return layout
    if end2end is True and e2e:
        return "yolo-end2end"
    if end2end is False and raw:
        return "yolo-raw"
    if end2end is None and raw != e2e:
        return "yolo-raw" if raw else "yolo-end2end"
    if end2end is None and raw and e2e:
        raise ModelFormatError(f"{where}: output {graph.outputs_text()} fits both a raw head {need_raw} and an "
                               "end-to-end one (B, K, 6) and the file does not say which; adopt it with --layout "
                               "yolo-raw or --layout yolo-end2end")
    said = "" if end2end is None else (" (its metadata says end-to-end / nms=True)" if end2end else
                                       " (its metadata says a raw head)")
    raise ModelFormatError(
        f"{where}: unknown output layout: {len(graph.outputs)} output(s) {graph.outputs_text()}{said}; EdgeVision "
        f"reads one output {need_raw} (raw YOLOv5u / v8 / 11 / 26 head: cx, cy, w, h, then "
        f"{nc if nc is not None else 'nc'} class scores) or one output (B, K, 6) (YOLO26 end-to-end head or an "
        "nms=True export: x1, y1, x2, y2, score, class); export the detector so (Ultralytics format='onnx')")


def _input_spec(graph: GraphInfo, u: Mapping[str, Any], imgsz: int | None, pre: Mapping[str, Any],
                where: str) -> InputSpec:
    if not graph.inputs:
        raise ModelFormatError(f"{where}: the graph has no input")
    name, dims, kind = graph.inputs[0]
    if len(graph.inputs) > 1:
        raise ModelFormatError(f"{where}: the graph has inputs {', '.join(n for n, _, _ in graph.inputs)}; EdgeVision "
                               "feeds one image tensor (B, 3, H, W)")
    if len(dims) != 4:
        raise ModelFormatError(f"{where}: input '{name}' has shape {_dims_text(dims)}; EdgeVision feeds (B, 3, H, W)")
    channels = dims[1] if isinstance(dims[1], int) else u.get("channels", 3)
    if channels != 3:
        raise ModelFormatError(f"{where}: input '{name}' takes {channels}-channel images ({_dims_text(dims)}); "
                               "EdgeVision feeds 3 channels (grey images are replicated)")
    dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}.get(kind)
    if dtype is None:
        raise ModelFormatError(f"{where}: input '{name}' is {kind}; EdgeVision feeds float32 or float16")
    fixed = (int(dims[2]), int(dims[3])) if all(isinstance(d, int) and d > 0 for d in dims[2:]) else None
    if imgsz is not None and fixed is not None and (imgsz, imgsz) != fixed:
        raise ConfigError(f"--imgsz {imgsz}: the graph's input is fixed at {fixed[1]}x{fixed[0]} (w x h); drop --imgsz")
    size = fixed or ((imgsz, imgsz) if imgsz is not None else u.get("imgsz"))
    if size is None:
        raise ModelFormatError(f"{where}: input '{name}' {_dims_text(dims)} has a free height and width and the file "
                               "gives no imgsz; adopt it with --imgsz N")
    spec = {**ULTRALYTICS_INPUT, **pre}
    return InputSpec(name=name, size_hw=(int(size[0]), int(size[1])),
                     dynamic_batch=not (isinstance(dims[0], int) and dims[0] > 0), dtype=dtype,
                     resize=str(spec["resize"]), pad_value=int(spec["pad_value"]),
                     channel_order=str(spec["channel_order"]), scale=float(spec["scale"]),
                     mean=tuple(spec["mean"]), std=tuple(spec["std"]), mono=str(spec["mono"]),
                     uint16=str(spec["uint16"]))


def preprocess_text(spec: InputSpec, keys: Sequence[str] = PREPROCESS_KEYS) -> str:
    """The pre-processing fields ``keys`` of ``spec`` in words, e.g. ``letterbox pad 114, RGB, scale 1/255, no
    mean/std`` (the grey-image rule, which has one choice, and the default 16-bit rule are left out)."""
    pad = f"pad {spec.pad_value}" if "pad_value" in keys and spec.resize == "letterbox" else ""
    scale = "1/255" if abs(spec.scale * 255 - 1) < 1e-9 else f"{spec.scale:g}"
    identity = tuple(spec.mean) == (0.0, 0.0, 0.0) and tuple(spec.std) == (1.0, 1.0, 1.0)
    parts = [" ".join(w for w in (spec.resize if "resize" in keys else "", pad) if w),
             spec.channel_order if "channel_order" in keys else "",
             f"scale {scale}" if "scale" in keys else ""]
    if identity and ("mean" in keys or "std" in keys):
        parts.append("no mean/std")
    elif not identity:
        parts += [f"{k} " + ",".join(f"{v:g}" for v in getattr(spec, k)) for k in ("mean", "std") if k in keys]
    if "uint16" in keys and spec.uint16 != "high_byte":
        parts.append(f"16-bit by {spec.uint16}")
    return ", ".join(p for p in parts if p)


# --------------------------------------------------------------------------- foreign -> metadata


def foreign_metadata(props: Mapping[str, str], graph: GraphInfo, where: str, *, names: Sequence[str] | None = None,
                     imgsz: int | None = None, layout: str | None = None,
                     preprocess: Mapping[str, Any] | None = None) -> ModelMetadata:
    """The `ModelMetadata` of a file without EdgeVision's: read from Ultralytics' ``metadata_props`` and the
    graph, what the file lacks assumed (`ULTRALYTICS_INPUT`) or given (the keyword arguments, from
    ``edgevision adopt``). ``source`` records ``origin: foreign``, the exporter, what was read and what assumed.

    Raises:
        ModelFormatError: a non-detection task, an unknown layout, no class names, an unusable input.
        ConfigError: ``imgsz`` contradicting a fixed input size.
    """
    u = read_ultralytics(props, where)
    task = u.get("task")
    if task is not None and task != "detect":
        what = OTHER_TASKS.get(task, "not detection")
        raise ModelFormatError(f"{where}: an Ultralytics '{short_text(task, 40)}' model ({what}); EdgeVision runs "
                               "detection models (task 'detect') only")
    class_names = list(names) if names is not None else u.get("names")
    if not class_names:
        try:
            detect_layout(graph, None, u["end2end"], where, layout)
            fix = (f"export the model with `edgevision export`, or give what it lacks: edgevision adopt {where} "
                   "--classes names.txt --out model.ev.onnx")
        except ModelFormatError:
            fix = ("and those fit no layout EdgeVision reads (one output (B, 4+nc, N) or (B, K, 6)); export the "
                   "model with `edgevision export`")
        raise ModelFormatError(f"{where}: no EdgeVision metadata (key '{METADATA_KEY}') and no class names to read "
                               f"instead (outputs {graph.outputs_text()}); {fix}")
    chosen = detect_layout(graph, len(class_names), u["end2end"], where, layout)
    pre = dict(preprocess or {})
    spec = _input_spec(graph, u, imgsz, pre, where)
    out_dims = graph.outputs[0][1]
    max_det = int(DEFAULTS["max_det"])
    if chosen == "yolo-end2end" and isinstance(out_dims[1], int) and out_dims[1] > 0:
        max_det = int(out_dims[1])
    assumed = [k for k in PREPROCESS_KEYS if k not in pre]
    exporter = " ".join(props[k].strip() for k in ("author", "version") if props.get(k)) or "unknown exporter"
    description = props.get("description", "")
    source: dict[str, Any] = {
        "origin": "foreign",
        "backend": "ultralytics" if props.get("author", "").startswith("Ultralytics") else "unknown",
        "exporter": short_text(exporter, 80),
        "arch": short_text(description.split(" model")[0].replace("Ultralytics ", ""), 60) if description else "",
        "licence": short_text(props.get("license", ""), 120) or None,
        "read": list(u["read"]),
    }
    if assumed:
        source["assumed"] = (f"{preprocess_text(spec, assumed)} (Ultralytics' predictor; the file does not record "
                             "its pre-processing)")
    if not all(isinstance(d, int) for d in graph.inputs[0][1][2:]):
        source["input_note"] = (f"free input height and width: fed at {spec.size_hw[1]}x{spec.size_hw[0]} "
                                "(Ultralytics' predictor pads a dynamic model to a stride multiple instead)")
    if u.get("nms"):
        source["graph_nms"] = ("exported with nms=True: the graph ran NMS and kept only scores above the conf it was "
                               "exported with (0.25 unless set); a lower conf finds nothing more")
    meta = ModelMetadata(
        names=list(class_names),
        input=spec,
        output=OutputSpec(layout=chosen, names=[n for n, _ in graph.outputs], max_det=max_det),
        task="detect",
        stride=int(u.get("stride") or 32),
        precision="fp16" if spec.dtype == "float16" else "fp32",
        defaults=dict(DEFAULTS),
        source=source,
        created=short_text(props.get("date", ""), 40),
    )
    meta.check(where)
    return meta


def origin_note(meta: ModelMetadata) -> str | None:
    """One line on where a model's metadata came from, for files EdgeVision did not export; else None."""
    src = meta.source or {}
    if src.get("origin") == "foreign":
        read = ", ".join(src.get("read") or []) or "nothing"
        note = f"foreign file ({src.get('exporter')}): read {read}"
        if src.get("assumed"):
            note += f"; assumed {src['assumed']}"
        return note
    if src.get("adopted"):
        note = f"adopted from {src.get('adopted_from')} (sha256 {str(src.get('source_sha256'))[:12]}...)"
        return note + (f"; assumed {src['assumed']}" if src.get("assumed") else "")
    return None
