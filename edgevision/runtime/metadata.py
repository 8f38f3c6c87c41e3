"""The metadata schema inside every ONNX file EdgeVision writes: the only thing the runtime reads.

The ONNX file carries one ``metadata_props`` entry, key ``edgevision``, whose value is a JSON object
(schema ``edgevision.model/1``). `ModelMetadata` is that object in Python. ``edgevision export`` writes
it, `edgevision.runtime.Detector` reads it through ``onnxruntime`` (no ``onnx`` import needed), and
``deploy/PROCESSING.md`` spells out in language-neutral terms what each field means for pre- and
post-processing.

Versioning: the major number after the slash changes when a reader of the old version would
misread a new file (a field changes meaning or becomes required); added optional fields keep the
number. A reader refuses a major it does not know, with a one-line error naming the file.

This module imports only the standard library (and EdgeVision's error classes): the runtime must stay
free of torch and onnx.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgevision.core.errors import EdgeVisionError

__all__ = [
    "DEFAULT_CONF",
    "INFERENCE_DEFAULTS",
    "LAYOUTS",
    "METADATA_KEY",
    "SCHEMA",
    "DecisionThresholds",
    "InputSpec",
    "ModelFormatError",
    "ModelMetadata",
    "OutputSpec",
    "legacy_rule",
]

METADATA_KEY = "edgevision"
"""The ``metadata_props`` key holding the JSON document."""

SCHEMA = "edgevision.model/1"

DEFAULT_CONF = 0.25
"""The confidence a detection must reach when neither the call nor the model's operating points say otherwise
(Ultralytics' predict default); `ModelMetadata.defaults` may set another."""
INFERENCE_DEFAULTS: dict[str, float] = {"conf": DEFAULT_CONF, "iou": 0.7, "max_det": 300}
"""``defaults`` of a model that records none: conf, NMS IoU and detections per image (Ultralytics' values)."""

SCHEMA_FAMILY, SCHEMA_MAJOR = SCHEMA.split("/")

LAYOUTS: dict[str, str] = {
    "yolo-raw": "YOLOv8/11 raw head: one output (B, 4+nc, N); rows cx, cy, w, h (input pixels) then nc class "
                "probabilities; decode + class-aware NMS outside the graph",
    "yolo-end2end": "YOLO26 end-to-end head (Ultralytics 8.4, no NMS node): one output (B, K, 6) of x1, y1, x2, y2 "
                    "(input pixels), score, class id, K fixed (300), sorted by score; no NMS needed",
    "torchvision-postnms": "torchvision detector exported with its own post-processing (batch 1): outputs boxes (K, 4) "
                           "xyxy input pixels, labels (K,) int64 with 0 = background so class = label - 1, "
                           "scores (K,); K variable",
    "nms-in-graph": "decode + ONNX NonMaxSuppression inside the graph (edgevision export --nms-in-graph): outputs "
                    "boxes (K, 4) xyxy input pixels, scores (K,), class_ids (K,) int64, batch_index (K,) int64; "
                    "inputs score_threshold, iou_threshold, max_detections are overridable initializers",
}
"""Every output layout the runtime decodes, with the tensor contract of each."""

RESIZE_MODES = ("letterbox", "stretch")
MONO_MODES = ("replicate",)
UINT16_MODES = ("high_byte", "minmax")
CHANNEL_ORDERS = ("RGB", "BGR")
PRECISIONS = ("fp32", "fp16", "int8")


class ModelFormatError(EdgeVisionError):
    """An ONNX file the runtime cannot use: not ONNX, no EdgeVision metadata, unknown schema or layout."""


@dataclass
class InputSpec:
    """How an image becomes the input tensor.

    Attributes:
        name: the graph input name; size_hw: (H, W) of the tensor; dynamic_batch: the batch axis is symbolic;
        dtype: ``float32`` or ``float16`` (the tensor the graph takes);
        resize: ``letterbox`` (scale = min(H/h, W/w), resized with cv2 INTER_LINEAR to round(w*scale) x
            round(h*scale), padded with ``pad_value`` centred: left = round(dw/2 - 0.1), top = round(dh/2 - 0.1)),
            or ``stretch`` (resized to W x H with INTER_LINEAR, or INTER_AREA when shrinking);
        pad_value: letterbox fill (all channels); channel_order: ``RGB`` or ``BGR`` of the tensor's channels;
        scale, mean, std: tensor = (pixel * scale - mean) / std per channel, after channel ordering;
        mono: how a 1-channel image becomes 3 channels (``replicate``);
        uint16: how a 16-bit image becomes 8-bit first: ``high_byte`` (value >> 8, what Ultralytics trains on)
            or ``minmax`` (stretch each image's min..max to 0..255, what the torchvision backend trains on).
    """

    name: str = "images"
    size_hw: tuple[int, int] = (640, 640)
    dynamic_batch: bool = False
    dtype: str = "float32"
    resize: str = "letterbox"
    pad_value: int = 114
    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    mono: str = "replicate"
    uint16: str = "high_byte"


@dataclass
class OutputSpec:
    """What the graph returns (see `LAYOUTS`).

    Attributes:
        layout: a key of `LAYOUTS`; names: the graph output names in the order the layout lists them;
        max_det: the most detections the graph can return per image (end-to-end / post-NMS layouts) or
            the runtime's default cap (raw layout).
    """

    layout: str = "yolo-raw"
    names: list[str] = field(default_factory=lambda: ["output0"])
    max_det: int = 300


@dataclass
class ModelMetadata:
    """The ``edgevision`` metadata document of an ONNX model.

    Attributes:
        names: class names, index = class id.
        input, output: see `InputSpec`, `OutputSpec`.
        task: ``detect``; stride: the network's largest stride (input sides are multiples of it);
        precision: ``fp32`` / ``fp16`` / ``int8``; opset: the ONNX opset of the default domain;
        thresholds: the operating points (``edgevision.thresholds/2`` document, ``/1`` in older files:
            ``target``, ``value``, ``iou``, ``classes`` {name: threshold}, ``rules`` {name: {rule, text}}, ...)
            or None;
        defaults: ``conf``, ``iou``, ``max_det`` the runtime uses when neither the call nor the
            operating points say otherwise;
        source: provenance: ``backend``, ``arch``, ``weights_sha256``, ``licence``, ``weights_origin``,
            ``dataset_hash``, ``config_sha256``, ``imgsz_trained``, and ``licences``: the licence chain of the
            training code, starting weights and dataset (a list of ``{role, name, licence, category, source,
            note}``, see `edgevision.licences`; added in schema 1 without a version change, as readers ignore
            what they do not know);
        quantization: None for float models; the quantizer's record (target, method, ...) for INT8;
        data_stats: statistics of the validation images the model was evaluated on (image brightness,
            contrast, sharpness; detections per image and their scores at the operating points; see
            `edgevision.runtime.imagestats`), the reference ``edgevision line`` watches for drift; or None;
        edgevision_version, created: writer version and ISO-8601 UTC creation time.
    """

    names: list[str]
    input: InputSpec = field(default_factory=InputSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    task: str = "detect"
    stride: int = 32
    precision: str = "fp32"
    opset: int | None = None
    thresholds: dict[str, Any] | None = None
    defaults: dict[str, float] = field(default_factory=lambda: dict(INFERENCE_DEFAULTS))
    source: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    data_stats: dict[str, Any] | None = None
    edgevision_version: str = ""
    created: str = ""
    schema: str = SCHEMA

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"]["size_hw"] = list(self.input.size_hw)
        d["input"]["mean"] = list(self.input.mean)
        d["input"]["std"] = list(self.input.std)
        return {"schema": self.schema, **{k: v for k, v in d.items() if k != "schema"}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: str = "model") -> ModelMetadata:
        """Parse and check the JSON document.

        Raises:
            ModelFormatError: not JSON, another schema family, an unknown major version, a missing or
                ill-typed field, an unknown layout / resize / conversion.
        """
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ModelFormatError(f"{where}: the '{METADATA_KEY}' metadata is not JSON ({e})") from None
        if not isinstance(d, dict):
            raise ModelFormatError(f"{where}: the '{METADATA_KEY}' metadata is not a JSON object")
        return cls.from_dict(d, where)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model") -> ModelMetadata:
        schema = str(d.get("schema", ""))
        family, _, major = schema.partition("/")
        if family != SCHEMA_FAMILY:
            raise ModelFormatError(f"{where}: metadata schema '{schema}' is not '{SCHEMA_FAMILY}/N'")
        if major != SCHEMA_MAJOR:
            raise ModelFormatError(f"{where}: metadata schema '{schema}' is newer or older than this EdgeVision reads "
                                   f"('{SCHEMA}'); use the EdgeVision version that exported it or re-export")
        try:
            inp = dict(d.get("input") or {})
            if "size_hw" in inp:
                inp["size_hw"] = tuple(int(v) for v in inp["size_hw"])
            for k in ("mean", "std"):
                if k in inp:
                    inp[k] = tuple(float(v) for v in inp[k])
            known_in = set(InputSpec.__dataclass_fields__)
            known_out = set(OutputSpec.__dataclass_fields__)
            meta = cls(
                names=[str(n) for n in d["names"]],
                input=InputSpec(**{k: v for k, v in inp.items() if k in known_in}),
                output=OutputSpec(**{k: v for k, v in dict(d.get("output") or {}).items() if k in known_out}),
                task=str(d.get("task", "detect")),
                stride=int(d.get("stride", 32)),
                precision=str(d.get("precision", "fp32")),
                opset=None if d.get("opset") is None else int(d["opset"]),
                thresholds=d.get("thresholds"),
                defaults={**INFERENCE_DEFAULTS, **dict(d.get("defaults") or {})},
                source=dict(d.get("source") or {}),
                quantization=d.get("quantization"),
                data_stats=d.get("data_stats") if isinstance(d.get("data_stats"), dict) else None,
                edgevision_version=str(d.get("edgevision_version", "")),
                created=str(d.get("created", "")),
                schema=schema,
            )
        except KeyError as e:
            raise ModelFormatError(f"{where}: metadata misses the required field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ModelFormatError(f"{where}: metadata has an ill-typed field ({e})") from None
        meta.check(where)
        return meta

    def check(self, where: str = "model") -> None:
        """Raise `ModelFormatError` when a field has a value the runtime does not implement."""
        def bad(what: str, value: object, options: tuple[str, ...] | list[str]) -> ModelFormatError:
            return ModelFormatError(f"{where}: {what} '{value}' is not supported by this EdgeVision "
                                    f"(supported: {', '.join(options)}); re-export with `edgevision export`")

        if self.task != "detect":
            raise bad("task", self.task, ("detect",))
        if self.output.layout not in LAYOUTS:
            raise bad("output layout", self.output.layout, list(LAYOUTS))
        if self.input.resize not in RESIZE_MODES:
            raise bad("resize mode", self.input.resize, RESIZE_MODES)
        if self.input.mono not in MONO_MODES:
            raise bad("mono conversion", self.input.mono, MONO_MODES)
        if self.input.uint16 not in UINT16_MODES:
            raise bad("16-bit conversion", self.input.uint16, UINT16_MODES)
        if self.input.channel_order not in CHANNEL_ORDERS:
            raise bad("channel order", self.input.channel_order, CHANNEL_ORDERS)
        if self.precision not in PRECISIONS:
            raise bad("precision", self.precision, PRECISIONS)
        if self.input.dtype not in ("float32", "float16"):
            raise bad("input dtype", self.input.dtype, ("float32", "float16"))
        if not self.names:
            raise ModelFormatError(f"{where}: metadata lists no class names")
        h, w = self.input.size_hw
        if h <= 0 or w <= 0:
            raise ModelFormatError(f"{where}: metadata input size {self.input.size_hw} is not positive")

    def class_rules(self) -> dict[str, str] | None:
        """How each class's operating point was chosen, ``{class name: text}`` (e.g. ``"recall >= 0.9 (reached
        0.93)"``, ``"F1-optimal (F1 0.62): recall >= 0.9 not reachable (best 0.71)"``), or None without operating
        points. Files written before the rules were stored get them derived from ``target`` (`legacy_rule`)."""
        if not self.thresholds or not isinstance(self.thresholds.get("classes"), dict):
            return None
        rules = self.thresholds.get("rules") or {}
        return {str(n): str((rules.get(n) or legacy_rule(self.thresholds, str(n))).get("text", ""))
                for n in self.thresholds["classes"]}

    def class_thresholds(self) -> dict[str, float] | None:
        """The operating points as ``{class name: threshold}``, or None when the model has none."""
        if not self.thresholds or not isinstance(self.thresholds.get("classes"), dict):
            return None
        return {str(k): float(v) for k, v in self.thresholds["classes"].items()}

    @property
    def default_conf(self) -> float:
        """The confidence used for a class without an operating point (``defaults.conf``, else `DEFAULT_CONF`)."""
        return float(self.defaults.get("conf", DEFAULT_CONF))

    def decision_thresholds(self) -> DecisionThresholds:
        """The rule every command decides OK / NG by: each class's operating point, else ``defaults.conf``.

        The one place this rule lives: the runtime's `Detector`, ``predict``, ``serve``, ``bench``, ``quantize``,
        ``reliability`` and the line all take their thresholds from here.
        """
        return DecisionThresholds.resolve(self.names, self.class_thresholds(), self.default_conf, self.class_rules())


@dataclass(frozen=True)
class DecisionThresholds:
    """Per-class decision thresholds and where they come from (`ModelMetadata.decision_thresholds`).

    Attributes:
        classes: ``{class name: threshold}`` for every class, in the model's order.
        source: one line for reports (``"the model's operating points"`` / ``"defaults.conf 0.25 (...)"``).
        rules: ``{class name: how its threshold was chosen}``.
        operating: whether the model carries operating points.
    """

    classes: dict[str, float]
    source: str
    rules: dict[str, str]
    operating: bool

    @classmethod
    def resolve(cls, names: Sequence[str], operating: Mapping[str, float] | None, default: float,
                rules: Mapping[str, str] | None = None) -> DecisionThresholds:
        """Each class's operating point (``operating``), else ``default``; ``rules`` say how each was chosen."""
        operating, rules = operating or {}, rules or {}
        return cls({n: float(operating.get(n, default)) for n in names},
                   "the model's operating points" if operating else
                   f"defaults.conf {default:g} (the model has no operating points)",
                   {n: str(rules.get(n, f"defaults.conf {default:g}")) for n in names}, bool(operating))


def legacy_rule(doc: dict[str, Any], name: str) -> dict[str, str]:
    """The rule of class ``name`` in an operating-points document without ``rules`` (``edgevision.thresholds/1``):
    its target, or, for a class listed unreachable, "the lowest score seen", which that version wrote."""
    target, value = doc.get("target"), doc.get("value")
    if target is None:
        return {"rule": "manual", "text": "set by hand (no rule recorded)"}
    if name in (doc.get("unreachable") or []):
        return {"rule": "lowest", "text": f"lowest score seen: {target} >= {value} not reachable (thresholds/1; "
                                          "re-choose with edgevision eval --target ... --save-thresholds)"}
    return {"rule": str(target), "text": f"{target} >= {value}" if value is not None else str(target)}
