"""Which nodes stay float: the in-graph preprocessing and the head's post-processing, found from the graph
structure (never from node names, which differ between exporters)."""

from __future__ import annotations

from typing import Any

__all__ = ["POSTPROCESS_OPS", "WEIGHT_OPS", "after_postprocess", "float_nodes", "head_nodes", "name_nodes",
           "preprocess_nodes"]

POSTPROCESS_OPS = frozenset({"If", "Loop", "Scan", "NonMaxSuppression", "TopK"})
"""Control-flow / selection ops of a post-NMS graph (torchvision): kept float, with everything after them."""

WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
"""The layers `edgevision quantize` exists for: the in-graph preprocessing is what comes before them."""


def name_nodes(graph: Any) -> None:
    """Give every unnamed node a unique name (``nodes_to_exclude`` matches names)."""
    seen = {n.name for n in graph.node if n.name}
    for i, n in enumerate(graph.node):
        if not n.name:
            name = f"{n.op_type}_ev{i}"
            while name in seen:
                name += "_"
            n.name = name
            seen.add(name)


def head_nodes(model: Any) -> list[str]:
    """Names of the non-Conv nodes between the last Conv layers and the graph outputs: the decode.

    Walks back from every graph output through the producers, stopping at Conv nodes: what it reaches
    is the decode (sigmoid, anchors and strides, concat of boxes and class probabilities, top-k,
    NMS...). Those nodes stay float so that box pixels (0..imgsz) and class probabilities (0..1) never
    share one quantization scale; the last Conv layers themselves are quantized, each with its own
    output scale. Names do not matter, so it holds for every layout and exporter.

    YOLO's DFL (a softmax over distance bins, then a fixed 1x1 Conv taking its expectation) stays
    quantized: keeping it float was measured on NEU-DET (yolov8n, this AVX2 CPU) to cut the relative
    mAP50-95 drop at 320 px from 2.2% to 1.05% but to cost 15 ms of 47 at 640 px (a float Softmax and
    Conv with layout reorders). The accuracy gate decides per model; ``--accuracy-aware`` measures the
    DFL Conv like every other layer and keeps it float when it is among the most sensitive.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output if o}
    seen: set[int] = set()
    order: list[Any] = []
    stack = [producer[o.name] for o in graph.output if o.name in producer]
    while stack:
        node = stack.pop()
        if id(node) in seen or node.op_type == "Conv":
            continue
        seen.add(id(node))
        order.append(node)
        stack.extend(producer[i] for i in node.input if i in producer)
    keep = {id(n) for n in order}
    return [n.name for n in graph.node if id(n) in keep]


def preprocess_nodes(model: Any) -> list[str]:
    """Names of the in-graph preprocessing: the nodes computed from the graph inputs before any weight layer.

    torchvision exports carry their ``GeneralizedRCNNTransform`` in the graph (Gather of the one image, the
    Normalize's Sub and Div, the Resize, the batching Unsqueeze); Ultralytics graphs feed the input straight
    into a Conv, so this is empty for them. A node belongs when it reads a graph input (or such a node's
    output) and none of its ancestors is one of `WEIGHT_OPS`; the weight-free producers of its other inputs
    (constants, shape arithmetic) belong too, so no float node here reads a quantized tensor. The first
    layer's input is then quantized with a scale of its own. Nodes must be in topological order (ONNX's rule).
    """
    graph = model.graph
    inputs = {i.name for i in graph.input}
    producer = {o: n for n in graph.node for o in n.output if o}
    weight_free: set[str] = set(inputs) | {i.name for i in graph.initializer}
    from_input: set[str] = set(inputs)
    keep: set[int] = set()
    for n in graph.node:
        dyn = [i for i in n.input if i]
        if n.op_type not in WEIGHT_OPS and all(i in weight_free or i not in producer for i in dyn):
            weight_free.update(n.output)
            if any(i in from_input for i in dyn):
                from_input.update(n.output)
                keep.add(id(n))
    stack = [producer[i] for n in graph.node if id(n) in keep for i in n.input if i in producer]
    while stack:
        node = stack.pop()
        if id(node) in keep or not all(o in weight_free for o in node.output if o):
            continue
        keep.add(id(node))
        stack.extend(producer[i] for i in node.input if i in producer)
    return [n.name for n in graph.node if id(n) in keep]


def after_postprocess(model: Any) -> list[str]:
    """Names of the nodes at or downstream of a control-flow / NMS op (torchvision's post-processing)."""
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    seen: set[int] = set()
    stack = [n for n in graph.node if n.op_type in POSTPROCESS_OPS]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for o in node.output:
            stack.extend(consumers.get(o, []))
    return [n.name for n in graph.node if id(n) in seen]


def float_nodes(model: Any, layout: str) -> list[str]:
    """Names of the nodes `edgevision quantize` keeps float for a model of output ``layout`` (graph order):
    the in-graph preprocessing (`preprocess_nodes`), the head's decode (`head_nodes`) and, for torchvision
    post-NMS graphs, everything at or after the post-processing (`after_postprocess`).

    For torchvision SSDlite this keeps float the Normalize / Resize of the transform, the anchor decoding
    (Exp, the anchor Mul / Add with their constant priors), the class Softmax, the score threshold, the
    per-class TopK and the If holding the NMS, with everything after it; every Conv of the backbone and of
    the head is quantized. The nodes of control-flow subgraphs (the If's branches) are never quantized.
    """
    keep = set(head_nodes(model)) | set(preprocess_nodes(model))
    if layout == "torchvision-postnms":
        keep |= set(after_postprocess(model))
    return [n.name for n in model.graph.node if n.name in keep]
