"""Which nodes stay float: the head's post-processing, found from the graph structure."""

from __future__ import annotations

from typing import Any

__all__ = ["POSTPROCESS_OPS", "head_nodes", "name_nodes"]

POSTPROCESS_OPS = frozenset({"If", "Loop", "Scan", "NonMaxSuppression", "TopK"})
"""Control-flow / selection ops of a post-NMS graph (torchvision): kept float, with everything after them."""


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
    """Names of the non-Conv nodes between the last Conv layers and the graph outputs.

    Walks back from every graph output through the producers, stopping at Conv nodes: what it reaches
    is the decode (DFL softmax, sigmoid, anchors and strides, concat of boxes and class probabilities,
    top-k, NMS...). Those nodes stay float so that box pixels (0..imgsz) and class probabilities
    (0..1) never share one quantization scale; the last Conv layers themselves are quantized, each
    with its own output scale. Names do not matter, so it holds for every layout and exporter.
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
