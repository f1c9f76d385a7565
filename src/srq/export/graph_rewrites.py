"""Exact rewrites of an exported ONNX graph that let runtimes run more of it in integers.

:func:`split_producer_convs`: a channel ``Split`` of a convolution's (activated, requantized) output becomes one
convolution per part. ``Conv → [Q → DQ → LeakyRelu …] → Split(axis 1)`` turns into ``Conv_k → [Q → DQ →
LeakyRelu …]_k``, each ``Conv_k`` with the output channels (weights, per-channel weight scales and zero points,
bias) of part k. The element-wise nodes in between act on each channel alone with per-tensor parameters, so every
part computes exactly what it did. Why: OpenVINO runs ``Split`` with a float reference kernel between two integer
convolutions (IMDN x4 W8A8: 17 % of its time on a CPU with AMX), and its outputs feed quantizers that can then fuse
with the element-wise nodes before them into one integer subgraph.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

__all__ = ["split_producer_convs"]

# Element-wise nodes a Split may sit behind: each output channel depends only on the same input channel, and their
# parameters (beyond the data input) must be scalars for the copy per part to be the same node.
_ELEMENTWISE = {"LeakyRelu", "PRelu", "Relu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
                "QuantizeLinear", "DequantizeLinear"}


class _Graph:
    """Producer/consumer lookup over an ONNX ``GraphProto`` and its initialisers (as numpy arrays)."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.producer = {out: n for n in graph.node for out in n.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for n in graph.node:
            for name in n.input:
                self.consumers[name].append(n)
        self.outputs = {o.name for o in graph.output}
        self._names = set(self.inits) | set(self.producer) | {n.name for n in graph.node}

    def fresh(self, base: str) -> str:
        """A tensor/node name not yet in the graph."""
        k = 0
        while f"{base}_{k}" in self._names:
            k += 1
        self._names.add(f"{base}_{k}")
        return f"{base}_{k}"

    def single_use(self, name: str) -> bool:
        return len(self.consumers[name]) == 1 and name not in self.outputs

    def scalar_params(self, node: Any) -> bool:
        """Whether every input of ``node`` after the first is absent, or a constant of one element."""
        return all(not p or (p in self.inits and self.inits[p].size == 1) for p in node.input[1:])

    def add_init(self, base: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.inits[name] = value
        return name


def _split_sizes(g: _Graph, split: Any, channels: int) -> list[int] | None:
    """The part sizes of a ``Split`` on axis 1 (from its ``split`` input or attribute, or equal parts)."""
    attrs = {a.name: a for a in split.attribute}
    if int(attrs["axis"].i if "axis" in attrs else 0) != 1:
        return None
    if len(split.input) > 1 and split.input[1]:
        if split.input[1] not in g.inits:
            return None
        return [int(v) for v in g.inits[split.input[1]]]
    if "split" in attrs:
        return [int(v) for v in attrs["split"].ints]
    parts = len(split.output)
    return [channels // parts] * parts if channels % parts == 0 else None


def _sliced(g: _Graph, name: str, start: int, stop: int, new_nodes: list[Any]) -> str | None:
    """A tensor holding output channels ``start:stop`` of a Conv weight or bias input ``name``: a sliced
    initialiser, or a new ``DequantizeLinear`` of sliced integers (per-channel scales and zero points sliced too).
    None for any other producer."""
    from onnx import helper

    if name in g.inits:
        return g.add_init(f"{name}_ch{start}", np.ascontiguousarray(g.inits[name][start:stop]))
    dq = g.producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or any(i not in g.inits for i in dq.input if i):
        return None
    values = g.inits[dq.input[0]]
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    per_channel = any(p and g.inits[p].size > 1 for p in dq.input[1:])
    if per_channel and axis not in (0, -values.ndim):
        return None
    inputs = [g.add_init(f"{dq.input[0]}_ch{start}", np.ascontiguousarray(values[start:stop]))]
    for param in dq.input[1:]:
        if param:
            v = g.inits[param]
            inputs.append(param if v.ndim == 0 or v.size == 1 else
                          g.add_init(f"{param}_ch{start}", np.ascontiguousarray(v[start:stop])))
    out = g.fresh(f"{name}_ch{start}")
    new_nodes.append(helper.make_node("DequantizeLinear", inputs, [out], name=g.fresh(f"{dq.name}_ch{start}")))
    new_nodes[-1].attribute.extend(dq.attribute)
    return out


def _rewrite_one(g: _Graph, split: Any) -> tuple[list[Any], list[Any]] | None:
    """The nodes replacing ``split`` and the chain ``Conv → element-wise …`` before it; None where the pattern
    does not hold (the graph is left as it is)."""
    from onnx import helper

    if not all(split.output):  # an unused part: nothing to name the copy after
        return None
    chain: list[Any] = []
    name = split.input[0]
    while True:
        node = g.producer.get(name)
        if node is None or not g.single_use(name):
            return None
        if node.op_type == "Conv":
            conv = node
            break
        if node.op_type not in _ELEMENTWISE or not g.scalar_params(node):
            return None
        chain.insert(0, node)
        name = node.input[0]
    if any(a.name == "group" and a.i != 1 for a in conv.attribute) or len(conv.input) < 2:
        return None
    weight = g.inits.get(conv.input[1])
    if weight is None:
        dq = g.producer.get(conv.input[1])
        weight = g.inits.get(dq.input[0]) if dq is not None and dq.input else None
    if weight is None:
        return None
    sizes = _split_sizes(g, split, weight.shape[0])
    if sizes is None or sum(sizes) != weight.shape[0] or len(sizes) != len(split.output):
        return None
    new_nodes: list[Any] = []
    start = 0
    for size, part_out in zip(sizes, split.output):
        stop = start + size
        inputs = [conv.input[0]]
        for param in conv.input[1:3]:
            sliced = _sliced(g, param, start, stop, new_nodes) if param else ""
            if sliced is None:
                return None
            inputs.append(sliced)
        current = g.fresh(f"{conv.output[0]}_ch{start}")
        new_nodes.append(helper.make_node("Conv", inputs, [current], name=g.fresh(f"{conv.name}_ch{start}")))
        new_nodes[-1].attribute.extend(conv.attribute)
        for i, node in enumerate(chain):
            out = part_out if i == len(chain) - 1 else g.fresh(f"{node.output[0]}_ch{start}")
            copy = helper.make_node(node.op_type, [current, *node.input[1:]], [out],
                                    name=g.fresh(f"{node.name}_ch{start}"))
            copy.attribute.extend(node.attribute)
            new_nodes.append(copy)
            current = out
        if not chain:  # the Conv part itself is the Split's output
            new_nodes[-1].output[0] = part_out
        start = stop
    return [conv, *chain, split], new_nodes


def _prune(graph: Any) -> None:
    """Drop nodes whose outputs nothing uses, then initialisers no node reads."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def split_producer_convs(proto: Any) -> int:
    """Rewrite every ``Conv → element-wise … → Split(axis 1)`` of ``proto``'s graph (in place) into one convolution
    per part; returns how many Splits went. Graphs without the pattern are left unchanged."""
    g = _Graph(proto.graph)
    done, initializers = 0, len(proto.graph.initializer)
    for split in [n for n in proto.graph.node if n.op_type == "Split"]:
        result = _rewrite_one(g, split)
        if result is None:
            continue
        old, new = result
        position = min(list(proto.graph.node).index(n) for n in old)
        for node in old:
            proto.graph.node.remove(node)
        for offset, node in enumerate(new):
            proto.graph.node.insert(position + offset, node)
        g = _Graph(proto.graph)
        done += 1
    if done or len(proto.graph.initializer) != initializers:  # also what an abandoned attempt added
        _prune(proto.graph)
    return done
