"""ONNX graph surgery with the ``onnx`` package: pin shapes, detect the layout, append NMS, FP16, metadata."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgevision.core.errors import ConfigError
from edgevision.runtime.metadata import METADATA_KEY

log = logging.getLogger(__name__)

__all__ = [
    "NMS_INPUTS",
    "NMS_OUTPUTS",
    "add_nms",
    "default_opset",
    "detect_layout",
    "pin_spatial",
    "set_metadata",
    "slim",
    "to_fp16",
]

NMS_OUTPUTS = ("boxes", "scores", "class_ids", "batch_index")
"""Output names of an ``nms-in-graph`` model, in the order of ``LAYOUTS["nms-in-graph"]``."""

NMS_INPUTS = ("score_threshold", "iou_threshold", "max_detections")
"""Overridable inputs of an ``nms-in-graph`` model: float32 ``[1]``, float32 ``[1]``, int64 ``[1]``."""


def slim(model: Any) -> Any:
    """onnxslim's constant folding and dead-node removal (what Ultralytics' ``simplify=True`` runs)."""
    import onnxslim

    return onnxslim.slim(model)


def default_opset(model: Any) -> int:
    """The opset of the default ONNX domain."""
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in value_info.type.tensor_type.shape.dim]


def pin_spatial(model: Any, h: int, w: int) -> Any:
    """Fix the input's height and width (dims 2, 3), keep the batch symbolic, fold the shape arithmetic.

    Ultralytics' ``dynamic=True`` frees batch, height and width; EdgeVision's ``--dynamic-batch`` frees
    the batch only, so that anchors and the output length stay constants.
    """
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    dims[0].dim_param = "batch"
    for d, v in ((dims[2], h), (dims[3], w)):
        d.Clear()
        d.dim_value = v
    for out in model.graph.output:  # let shape inference recompute everything but the batch
        od = out.type.tensor_type.shape.dim
        for i, d in enumerate(od):
            if i > 0 and d.dim_param:
                d.Clear()
    del model.graph.value_info[:]
    model = slim(model)
    for out in model.graph.output:
        od = out.type.tensor_type.shape.dim
        if od and (od[0].dim_param or od[0].dim_value in (0, 1)):
            od[0].Clear()
            od[0].dim_param = "batch"
    return model


def detect_layout(model: Any, nc: int, end2end: bool) -> str:
    """The output layout of an Ultralytics graph from its one output's shape.

    Raises:
        ConfigError: an output that is neither ``(B, 4+nc, N)`` nor an end-to-end ``(B, K, 6)``.
    """
    outs = model.graph.output
    shape = _dims(outs[0]) if len(outs) == 1 else []
    if len(shape) == 3 and end2end and shape[2] == 6:
        return "yolo-end2end"
    if len(shape) == 3 and not end2end and shape[1] == 4 + nc:
        return "yolo-raw"
    raise ConfigError(f"the exported graph has outputs {[(o.name, _dims(o)) for o in outs]}; expected one output "
                      f"(B, {4 + nc}, N) (raw YOLO head, {nc} classes) or (B, K, 6) (YOLO26 end-to-end head)")


def add_nms(model: Any, nc: int, conf: float, iou: float, max_det: int) -> Any:
    """Append decode + class-aware ``NonMaxSuppression`` + a per-image top-k to a ``yolo-raw`` graph.

    The raw output ``(B, 4+nc, N)`` (cx, cy, w, h in input pixels, then class probabilities) becomes
    ``boxes (K, 4)`` xyxy, ``scores (K,)``, ``class_ids (K,)`` int64, ``batch_index (K,)`` int64. Each
    anchor competes in its best class only (the first maximum, as Ultralytics' ``multi_label=False`` and
    the runtime's decoder; ONNX NMS alone would let one anchor win in several classes); the
    boxes ONNX NMS keeps for each image and class (score > ``score_threshold``, suppressing IoU >
    ``iou_threshold``, at most ``max_detections`` per class), then sorted by (batch index, score
    descending) and cut to ``max_detections`` per image. For batch 1 this is a global top-k.
    ``score_threshold``, ``iou_threshold``, ``max_detections`` are graph inputs (shape ``[1]``) whose
    initializers hold ``conf``, ``iou``, ``max_det``: overridable per call.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    raw = g.output[0].name
    p = "ev_nms/"
    init = [
        numpy_helper.from_array(np.array([conf], np.float32), "score_threshold"),
        numpy_helper.from_array(np.array([iou], np.float32), "iou_threshold"),
        numpy_helper.from_array(np.array([max_det], np.int64), "max_detections"),
        numpy_helper.from_array(np.array([0], np.int64), p + "c0"),
        numpy_helper.from_array(np.array([1], np.int64), p + "c1"),
        numpy_helper.from_array(np.array([2], np.int64), p + "c2"),
        numpy_helper.from_array(np.array([3], np.int64), p + "c3"),
        numpy_helper.from_array(np.array([4], np.int64), p + "c4"),
        numpy_helper.from_array(np.array([4 + nc], np.int64), p + "cend"),
        numpy_helper.from_array(np.array(0, np.int64), p + "s0"),
        numpy_helper.from_array(np.array(1, np.int64), p + "s1"),
        numpy_helper.from_array(np.array(2.0, np.float32), p + "two"),
        numpy_helper.from_array(np.array(1.0, np.float32), p + "one"),
        numpy_helper.from_array(np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]],
                                         np.float32), p + "cxcywh_to_xyxy"),
        numpy_helper.from_array(np.array([0, 2], np.int64), p + "b_and_box"),
        numpy_helper.from_array(np.array([nc], np.int64), p + "depth"),
        numpy_helper.from_array(np.array([0.0, 1.0], np.float32), p + "off_on"),
    ]
    n = helper.make_node
    nodes = [
        # decode: (B, 4+nc, N) -> boxes (B, N, 4) xyxy, scores (B, nc, N)
        n("Slice", [raw, p + "c0", p + "c4", p + "c1"], [p + "cxcywh"]),
        n("Slice", [raw, p + "c4", p + "cend", p + "c1"], [p + "scores"]),
        n("Transpose", [p + "cxcywh"], [p + "cxcywh_t"], perm=[0, 2, 1]),
        n("MatMul", [p + "cxcywh_t", p + "cxcywh_to_xyxy"], [p + "xyxy"]),
        # one class per anchor, its best (first maximum), as Ultralytics' NMS (multi_label=False) and the runtime
        n("ArgMax", [p + "scores"], [p + "best"], axis=1, keepdims=0),  # (B, N)
        n("OneHot", [p + "best", p + "depth", p + "off_on"], [p + "best_mask"], axis=1),  # (B, nc, N)
        n("Mul", [p + "scores", p + "best_mask"], [p + "best_scores"]),
        n("NonMaxSuppression", [p + "xyxy", p + "best_scores", "max_detections", "iou_threshold", "score_threshold"],
          [p + "selected"], center_point_box=0),  # (M, 3): batch, class, box
        n("GatherND", [p + "scores", p + "selected"], [p + "sel_scores"]),
        n("Gather", [p + "selected", p + "b_and_box"], [p + "sel_b_box"], axis=1),
        n("GatherND", [p + "xyxy", p + "sel_b_box"], [p + "sel_boxes"]),
        n("Gather", [p + "selected", p + "s0"], [p + "sel_batch"], axis=1),
        n("Gather", [p + "selected", p + "s1"], [p + "sel_class"], axis=1),
        # sort by (batch, -score): key = 2 * batch + (1 - score), ascending (scores are in [0, 1])
        n("Cast", [p + "sel_batch"], [p + "sel_batch_f"], to=TensorProto.FLOAT),
        n("Mul", [p + "sel_batch_f", p + "two"], [p + "key_b"]),
        n("Sub", [p + "one", p + "sel_scores"], [p + "key_s"]),
        n("Add", [p + "key_b", p + "key_s"], [p + "key"]),
        n("Shape", [p + "key"], [p + "m"]),
        n("TopK", [p + "key", p + "m"], [p + "key_sorted", p + "order"], axis=0, largest=0, sorted=1),
        n("Gather", [p + "sel_batch", p + "order"], [p + "b_sorted"], axis=0),
        # rank within its image: position - first position of that image's block
        n("Shape", [raw], [p + "raw_shape"]),
        n("Gather", [p + "raw_shape", p + "s0"], [p + "nb"], axis=0),
        n("Range", [p + "s0", p + "nb", p + "s1"], [p + "batches"]),
        n("Unsqueeze", [p + "batches", p + "c1"], [p + "batches_col"]),
        n("Unsqueeze", [p + "b_sorted", p + "c0"], [p + "b_row"]),
        n("Equal", [p + "batches_col", p + "b_row"], [p + "onehot_b"]),
        n("Cast", [p + "onehot_b"], [p + "onehot_i"], to=TensorProto.INT64),
        n("ReduceSum", [p + "onehot_i", p + "c1"], [p + "per_image"], keepdims=0),
        n("CumSum", [p + "per_image", p + "s0"], [p + "starts"], exclusive=1),
        n("Gather", [p + "starts", p + "b_sorted"], [p + "first"], axis=0),
        n("Squeeze", [p + "m", p + "c0"], [p + "m_s"]),
        n("Range", [p + "s0", p + "m_s", p + "s1"], [p + "pos"]),
        n("Sub", [p + "pos", p + "first"], [p + "rank"]),
        n("Less", [p + "rank", "max_detections"], [p + "keep"]),
        n("Compress", [p + "order", p + "keep"], [p + "final"], axis=0),
        n("Gather", [p + "sel_boxes", p + "final"], ["boxes"], axis=0),
        n("Gather", [p + "sel_scores", p + "final"], ["scores"], axis=0),
        n("Gather", [p + "sel_class", p + "final"], ["class_ids"], axis=0),
        n("Gather", [p + "sel_batch", p + "final"], ["batch_index"], axis=0),
    ]
    g.node.extend(nodes)
    g.initializer.extend(init)
    for name, dtype in zip(NMS_INPUTS, (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.INT64), strict=True):
        g.input.append(helper.make_tensor_value_info(name, dtype, [1]))
    del g.output[:]
    g.output.extend([
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["K", 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["K"]),
        helper.make_tensor_value_info("class_ids", TensorProto.INT64, ["K"]),
        helper.make_tensor_value_info("batch_index", TensorProto.INT64, ["K"]),
    ])
    if default_opset(model) < 13:
        raise ConfigError("--nms-in-graph needs opset 13 or higher")
    return onnx.shape_inference.infer_shapes(model)


def to_fp16(model: Any) -> Any:
    """FP16 weights and activations, float32 inputs and outputs (``keep_io_types``).

    onnxruntime's converter (what Ultralytics uses): its block list keeps TopK, Range, NMS, ... in float32
    with casts around them; the runtime feeds float32 as for any model. Called before `add_nms`, so
    decode and NMS stay float32.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    _toposort(model.graph)  # the converter appends its input casts at the end of the node list
    return model


def _subgraph_inputs(node: Any) -> set[str]:
    """Names a node's subgraphs (If / Loop bodies) read, recursively: outer-scope dependencies."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for n in sub.node:
                names.update(n.input)
                names.update(_subgraph_inputs(n))
    return names


def _toposort(graph: Any) -> None:
    """Reorder ``graph.node`` so that every node follows the producers of its inputs (stable)."""
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = [{producer[x] for x in (set(n.input) | _subgraph_inputs(n)) if x in producer and producer[x] != i}
            for i, n in enumerate(nodes)]
    order: list[int] = []
    state = [0] * len(nodes)  # 0 new, 1 visiting, 2 done
    for start in range(len(nodes)):
        stack = [(start, iter(sorted(deps[start])))]
        if state[start]:
            continue
        state[start] = 1
        while stack:
            i, it = stack[-1]
            nxt = next((d for d in it if state[d] == 0), None)
            if nxt is None:
                stack.pop()
                state[i] = 2
                order.append(i)
            else:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(deps[nxt]))))
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def set_metadata(model: Any, document: str) -> None:
    """Set (replace) the ``edgevision`` ``metadata_props`` entry, keeping every other entry."""
    for p in list(model.metadata_props):
        if p.key == METADATA_KEY:
            model.metadata_props.remove(p)
    e = model.metadata_props.add()
    e.key, e.value = METADATA_KEY, document
