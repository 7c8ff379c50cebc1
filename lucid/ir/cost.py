"""Static cost estimates of graph nodes, shared by codegen (one thread or two) and the visualiser.

- `node_flops(node)`: floating-point operations of one node: 2 x multiply-adds for convolutions and
  matrix products, one operation per output element elsewhere, a fused node's body counted node by
  node; constants cost nothing.
- `estimated_flops(graph)`: the sum over the graph's nodes.
- `value_bytes(value)`: bytes of a value's storage (elements x item size).
These are estimates of work, not measurements: they read only shapes and attributes.
"""
from __future__ import annotations


def estimated_flops(graph) -> int:
    """Rough work of a graph: the sum of `node_flops` over its nodes."""
    return sum(node_flops(node) for node in graph.nodes)


def node_flops(node) -> int:
    from .ops.fused import body_graph

    if node.is_constant:
        return 0
    if node.op == "fused":
        return estimated_flops(body_graph(node.attrs["body"]))
    if node.op in ("conv", "conv_transpose", "conv_weight_grad", "matmul"):
        return 2 * _multiply_adds(node)
    return node.output.type.size


def value_bytes(value) -> int:
    return value.type.size * value.dtype.numpy.itemsize


def _multiply_adds(node) -> int:
    x, other = node.inputs[0].type, node.inputs[1].type
    if node.op == "matmul":
        return node.output.type.size * x.shape[-1]
    if node.op == "conv":
        return node.output.type.size * other.size // other.shape[0]
    if node.op == "conv_transpose":
        return x.size * other.size // other.shape[0]
    return node.output.type.size * other.size // other.shape[1]     # weight grad: |dw| x positions
