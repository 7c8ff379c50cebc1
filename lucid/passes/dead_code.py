"""Dead code elimination.

Guarantees: the returned graph holds exactly the nodes that its outputs or state updates depend on,
in their original order; inputs and parameters are kept even when unused (the signature does not
change). The input graph is not modified.
"""
from __future__ import annotations

from ..ir.graph import Graph

NAME = "dead_code"


def run(graph: Graph) -> Graph:
    result = graph.copy()
    live = result.live_values()
    result.rebuild([node for node in result.nodes if node.output in live], {})
    return result
