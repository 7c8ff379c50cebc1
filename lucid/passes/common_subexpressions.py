"""Common subexpression elimination.

Guarantees: no two nodes of the returned graph apply the same operator with equal attributes to the
same inputs, and no two constants hold equal data of the same type; each duplicate's readers read the
first occurrence instead. Every lucid operator is pure, so this never changes a result. Node order is
kept. The input graph is not modified.
"""
from __future__ import annotations

from ..ir.graph import Graph
from ..ir.text import format_attributes
from .rewrite import rewrite

NAME = "common_subexpressions"


def run(graph: Graph) -> Graph:
    first: dict[tuple, object] = {}

    def merge(node):
        key = _key(node)
        if key in first:
            return first[key]
        first[key] = node.output
        return None

    return rewrite(graph, merge)


def _key(node) -> tuple:
    if node.is_constant:
        return (node.op, node.output.type, node.value.tobytes())
    return (node.op, tuple(id(v) for v in node.inputs), format_attributes(dict(sorted(node.attrs.items()))))
