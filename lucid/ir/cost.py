"""Static cost estimates of graph nodes, shared by codegen (one thread or two) and the visualiser.

- `node_flops(node)`: floating-point operations of one node, as its operator declares them
  (`OpDef.flops`: 2 x multiply-adds for convolutions and matrix products, a fused node's body
  counted node by node, one operation per output element elsewhere); constants cost nothing.
- `estimated_flops(graph)`: the sum over the graph's nodes.
- `value_bytes(value)`: bytes of a value's storage (elements x item size).
These are estimates of work, not measurements: they read only shapes and attributes. Where a symbolic
size is involved the count has no number, and each function returns None (`graph.specialize` first).
"""
from __future__ import annotations

from .symbolic import is_symbolic


def estimated_flops(graph) -> int | None:
    """Rough work of a graph: the sum of `node_flops` over its nodes (None if one is None)."""
    counts = [node_flops(node) for node in graph.nodes]
    return None if None in counts else sum(counts)


def node_flops(node) -> int | None:
    if node.is_constant:
        return 0
    flops = node.opdef.flops(node.attrs, tuple(v.type for v in node.inputs), node.output.type)
    return None if is_symbolic(flops) else flops


def value_bytes(value) -> int | None:
    return None if value.type.is_symbolic else value.type.size * value.dtype.numpy.itemsize
