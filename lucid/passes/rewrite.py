"""The node-by-node rewrite that CSE and constant folding share (a helper, not a pass).

`rewrite(graph, replace)` copies the graph and visits its nodes in order, each with its inputs
already redirected by earlier decisions. `replace(node)` returns None to keep the node, a Value of
the graph to drop the node and make its readers read that value, or a new Node (with its output)
to put in its place.
"""
from __future__ import annotations

from typing import Callable

from ..ir.graph import Graph, Node, Value


def rewrite(graph: Graph, replace: Callable[[Node], "Node | Value | None"]) -> Graph:
    result = graph.copy()
    substitute: dict = {}
    nodes = []
    for node in result.nodes:
        node.inputs = tuple(substitute.get(v, v) for v in node.inputs)
        decision = replace(node)
        if isinstance(decision, Value):
            substitute[node.output] = decision
            continue
        nodes.append(node if decision is None else decision)
        if decision is not None:
            substitute[node.output] = decision.output
    result.rebuild(nodes, substitute)
    return result
