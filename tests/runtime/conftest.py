"""Synthetic ONNX models (built with onnx.helper) with EdgeVision metadata, for real onnxruntime sessions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevision.runtime.metadata import METADATA_KEY, InputSpec, ModelMetadata, OutputSpec

OPSET = 17


def save_model(path: Path, nodes: list[Any], outputs: list[Any], meta: ModelMetadata | str | None,
               *, batch: int | str = "batch", extra_inputs: list[Any] = (), initializers: list[Any] = (),
               elem: int = TensorProto.FLOAT) -> Path:
    """Write a graph with input ``meta.input.name`` (B, 3, H, W) and the metadata JSON (or raw text)."""
    spec = meta.input if isinstance(meta, ModelMetadata) else InputSpec()
    h, w = spec.size_hw
    x = helper.make_tensor_value_info(spec.name, elem, [batch, 3, h, w])
    graph = helper.make_graph(nodes, "g", [x, *extra_inputs], outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    if meta is not None:
        entry = model.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = meta.to_json() if isinstance(meta, ModelMetadata) else meta
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def zero_of_input(name: str, out: str = "zero") -> list[Any]:
    """Nodes computing the scalar ``0 * ReduceSum(input)`` (ties a constant output to the input)."""
    return [helper.make_node("ReduceSum", [name], ["rs"], keepdims=0),
            helper.make_node("Constant", [], ["c0"], value=numpy_helper.from_array(np.array(0, np.float32))),
            helper.make_node("Mul", ["rs", "c0"], [out])]


def const_model(path: Path, outputs: dict[str, np.ndarray], meta: ModelMetadata, **kw: Any) -> Path:
    """A model returning fixed tensors (float ones through ``const + 0 * ReduceSum(input)``)."""
    nodes = zero_of_input(meta.input.name)
    outs = []
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if arr.dtype == np.float32:
            nodes += [helper.make_node("Constant", [], [name + "_c"], value=numpy_helper.from_array(arr)),
                      helper.make_node("Add", [name + "_c", "zero"], [name])]
            elem = TensorProto.FLOAT
        else:
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr)))
            elem = TensorProto.INT64
        outs.append(helper.make_tensor_value_info(name, elem, list(arr.shape)))
    return save_model(path, nodes, outs, meta, **kw)


def bbox_model(path: Path, meta: ModelMetadata, score: float = 0.9, **kw: Any) -> Path:
    """yolo-raw, one class, one anchor: the bounding box of all pixels with channel 0 > 0.5, score ``score``.

    Output ``(B, 5, 1)``: cx, cy, w, h, score (0 when no pixel is bright), in input pixels.
    """
    h, w = meta.input.size_hw
    name = meta.input.name
    c = lambda n, a: helper.make_node("Constant", [], [n], value=numpy_helper.from_array(np.asarray(a, np.float32)))  # noqa: E731
    nodes = [
        helper.make_node("Constant", [], ["i0"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", [name, "i0"], ["ch0"], axis=1),  # (B, H, W)
        c("half", 0.5), c("big", 1e6), c("one", 1.0), c("sc", score), c("two", 2.0),
        c("xs", np.arange(w)), c("xs1", np.arange(w) + 1), c("ys", np.arange(h)), c("ys1", np.arange(h) + 1),
        helper.make_node("Greater", ["ch0", "half"], ["mb"]),
        helper.make_node("Cast", ["mb"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["m"], ["col"], axes=[1], keepdims=0),  # (B, W)
        helper.make_node("ReduceMax", ["m"], ["row"], axes=[2], keepdims=0),  # (B, H)
    ]
    for prof, lo, hi, a, b in (("col", "xs", "xs1", "x1", "x2"), ("row", "ys", "ys1", "y1", "y2")):
        nodes += [
            helper.make_node("Sub", ["one", prof], [prof + "_inv"]),
            helper.make_node("Mul", [prof + "_inv", "big"], [prof + "_pen"]),
            helper.make_node("Mul", [prof, lo], [prof + "_lo"]),
            helper.make_node("Add", [prof + "_lo", prof + "_pen"], [prof + "_lo2"]),
            helper.make_node("ReduceMin", [prof + "_lo2"], [a], axes=[1], keepdims=1),  # (B, 1)
            helper.make_node("Mul", [prof, hi], [prof + "_hi"]),
            helper.make_node("ReduceMax", [prof + "_hi"], [b], axes=[1], keepdims=1),
        ]
    nodes += [
        helper.make_node("ReduceMax", ["col"], ["any"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["any", "sc"], ["s"]),
        helper.make_node("Add", ["x1", "x2"], ["xsum"]), helper.make_node("Div", ["xsum", "two"], ["cx"]),
        helper.make_node("Add", ["y1", "y2"], ["ysum"]), helper.make_node("Div", ["ysum", "two"], ["cy"]),
        helper.make_node("Sub", ["x2", "x1"], ["bw0"]), helper.make_node("Mul", ["bw0", "any"], ["bw"]),
        helper.make_node("Sub", ["y2", "y1"], ["bh0"]), helper.make_node("Mul", ["bh0", "any"], ["bh"]),
        helper.make_node("Mul", ["cx", "any"], ["cxa"]), helper.make_node("Mul", ["cy", "any"], ["cya"]),
        helper.make_node("Concat", ["cxa", "cya", "bw", "bh", "s"], ["cat"], axis=1),  # (B, 5)
        helper.make_node("Constant", [], ["ax2"], value=numpy_helper.from_array(np.array([2], np.int64))),
        helper.make_node("Unsqueeze", ["cat", "ax2"], ["output0"]),
    ]
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [kw.get("batch", "batch"), 5, 1])
    return save_model(path, nodes, [out], meta, **kw)


def make_meta(names: list[str] | None = None, layout: str = "yolo-raw", size_hw: tuple[int, int] = (64, 64),
              **input_kw: Any) -> ModelMetadata:
    out_names = {"yolo-raw": ["output0"], "yolo-end2end": ["output0"],
                 "torchvision-postnms": ["boxes", "labels", "scores"],
                 "nms-in-graph": ["boxes", "scores", "class_ids", "batch_index"]}[layout]
    return ModelMetadata(names=names or ["a", "b", "c"], input=InputSpec(size_hw=size_hw, **input_kw),
                         output=OutputSpec(layout=layout, names=out_names))


@pytest.fixture
def build(tmp_path: Path) -> Callable[..., Path]:
    """``build(kind, meta, file=None, **kw)`` -> path of a new model (kind: 'const' or 'bbox')."""
    counter = iter(range(1000))

    def _build(kind: str, meta: ModelMetadata, file: str | None = None, **kw: Any) -> Path:
        path = tmp_path / (file or f"m{next(counter)}.onnx")
        return const_model(path, meta=meta, **kw) if kind == "const" else bbox_model(path, meta, **kw)

    return _build
