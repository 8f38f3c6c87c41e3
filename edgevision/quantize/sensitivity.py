"""Per-layer INT8 sensitivity, measured: how much closer to FP32 the model gets when one layer stays float.

A **layer** is a Conv with the activation that follows it (Sigmoid + Mul of SiLU, Relu, HardSwish,
...), found from the graph. The error of a model is measured where the quantized body hands over to
the float head: every tensor a head node reads from a body node (the inputs of the decode), as the
normalised squared error ``sum((q - f)^2) / sum(f^2)`` against the FP32 graph, averaged over those
tensors and over the probe images (calibration images of the train split, never the split accuracy
is judged on). A layer's sensitivity is the error of the full INT8 model minus the error with that
layer float: the error it alone adds.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ACTIVATIONS", "LayerSensitivity", "Probe", "conv_layers", "layer_sensitivity"]

ACTIVATIONS = frozenset({"Sigmoid", "Mul", "Relu", "Clip", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Elu",
                         "Selu", "PRelu"})
"""Ops that count as a Conv's activation when they read only the Conv's output (and each other's)."""


def conv_layers(model: Any, keep_float: Sequence[str]) -> dict[str, list[str]]:
    """``{conv node name: [the conv, its activation nodes]}`` for every Conv not in ``keep_float``, in graph order."""
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    skip = set(keep_float)
    layers: dict[str, list[str]] = {}
    for n in graph.node:
        if n.op_type != "Conv" or n.name in skip:
            continue
        members = [n.name]
        values = set(n.output)
        frontier = list(n.output)
        while frontier:
            v = frontier.pop()
            for c in consumers.get(v, []):
                if c.name in members or c.name in skip or c.op_type not in ACTIVATIONS:
                    continue
                dynamic = [i for i in c.input if i and not _is_constant(graph, i)]
                if all(i in values for i in dynamic):
                    members.append(c.name)
                    values.update(c.output)
                    frontier.extend(c.output)
        layers[n.name] = members
    return layers


def _is_constant(graph: Any, name: str) -> bool:
    return any(i.name == name for i in graph.initializer)


def boundary(model: Any, head: Sequence[str]) -> list[tuple[str, int]]:
    """``(head node, input slot)`` of every tensor a head node reads from a non-head node."""
    heads = set(head)
    producer = {o: n for n in model.graph.node for o in n.output if o}
    out = []
    for n in model.graph.node:
        if n.name not in heads:
            continue
        for k, i in enumerate(n.input):
            if i in producer and producer[i].name not in heads:
                out.append((n.name, k))
    return out


def _with_outputs(model: Any, names: Sequence[str]) -> bytes:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return m.SerializeToString()


def _tensors(model: Any, slots: Sequence[tuple[str, int]]) -> list[str]:
    nodes = {n.name: n for n in model.graph.node}
    return [nodes[name].input[k] for name, k in slots]


def _run(model_bytes: bytes, names: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    return [sess.run(list(names), dict(f)) for f in feeds]


class Probe:
    """The FP32 boundary values on a few images, and the error of an INT8 model against them."""

    def __init__(self, fp32: Any, head: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.slots = boundary(fp32, head)
        if not self.slots:
            raise ValueError("no tensor goes from the quantized body to the float head")
        self.feeds = list(feeds)
        names = _tensors(fp32, self.slots)
        self.reference = _run(_with_outputs(fp32, names), names, self.feeds)

    def error(self, int8: Any) -> float:
        """Mean normalised squared error of ``int8``'s boundary tensors against FP32 (0: identical)."""
        names = _tensors(int8, self.slots)
        got = _run(_with_outputs(int8, names), names, self.feeds)
        errs = []
        for ref, q in zip(self.reference, got):
            for f, g in zip(ref, q):
                f64, g64 = f.astype(np.float64), g.astype(np.float64)
                errs.append(float(((g64 - f64) ** 2).sum() / max(float((f64 ** 2).sum()), 1e-12)))
        return float(np.mean(errs))


@dataclass
class LayerSensitivity:
    """One layer's measured sensitivity.

    Attributes:
        layer: the Conv's name; nodes: the Conv and its activation nodes; error_without: the model's error
        with this layer float; gain: full-INT8 error minus ``error_without`` (what this layer adds).
    """

    layer: str
    nodes: list[str]
    error_without: float
    gain: float

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "nodes": self.nodes, "error_without": self.error_without, "gain": self.gain}


def layer_sensitivity(build: Callable[[Sequence[str]], Any], probe: Probe, layers: Mapping[str, Sequence[str]],
                      full_error: float, progress: Callable[[int, int], None] | None = None) -> list[LayerSensitivity]:
    """Measure every layer (``build(keep_float)`` -> INT8 ``ModelProto``), most sensitive first."""
    out = []
    for i, (name, nodes) in enumerate(layers.items()):
        with contextlib.redirect_stdout(io.StringIO()):
            model = build(list(nodes))
        e = probe.error(model)
        out.append(LayerSensitivity(name, list(nodes), e, full_error - e))
        if progress is not None:
            progress(i + 1, len(layers))
    out.sort(key=lambda s: -s.gain)
    return out
