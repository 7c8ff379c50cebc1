"""Common subexpression elimination.

Guarantees: no two nodes of the returned graph apply the same operator with equal attributes to the
same inputs, and no two constants hold equal data of the same type; each duplicate's readers read the
first occurrence instead. Every lucid operator is pure, so this never changes a result. Node order is
kept. The input graph is not modified.
"""
from __future__ import annotations

from ..ir.graph import Graph

NAME = "common_subexpressions"


def run(graph: Graph) -> Graph:
    result = graph.copy()
    first: dict[tuple, object] = {}
    substitute: dict = {}
    kept = []
    for node in result.nodes:
        node.inputs = tuple(substitute.get(v, v) for v in node.inputs)
        key = _key(node)
        if key in first:
            substitute[node.output] = first[key]
        else:
            first[key] = node.output
            kept.append(node)
    result.rebuild(kept, substitute)
    return result.verify()


def _key(node) -> tuple:
    if node.is_constant:
        return (node.op, node.output.type, node.value.tobytes())
    return (node.op, tuple(id(v) for v in node.inputs), repr(sorted(node.attrs.items())))
