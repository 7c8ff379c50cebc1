"""Shape inference: every value's shape and dtype, computed afresh.

Guarantees on the returned graph:
- every node's type is the result of its operator's shape rule applied to its inputs' types, computed
  afresh from the graph's input types (a graph is specialised to the shapes it was traced with:
  traced code bakes shape-derived numbers into constants, so other shapes mean tracing again, or a
  trace with symbolic dimensions, whose types and constraints are computed afresh the same way);
- a rule that fails raises its ShapeError/DTypeError naming the node's module path and class, the op,
  the input types and the rule's own message (what was expected, what came in);
- it has the same parameters, bound to the same tensors, as the input graph;
- the graph passes the verifier.
It is a pure graph pass: the input graph, and the tensors and modules it came from, are not modified
and no random value is drawn. (Lazy modules met while tracing are initialised by the tracer.)
"""
from __future__ import annotations

from ..ir.graph import Graph

NAME = "shape_inference"


def run(graph: Graph) -> Graph:
    return graph.copy(reinfer=True).verify()
