"""Shape inference: every value's shape and dtype, and the resolution of lazy modules.

Guarantees on the returned graph:
- every node's type is the result of its operator's shape rule applied to its inputs' types, computed
  afresh from the graph's input types (a graph is specialised to the shapes it was traced with:
  traced code bakes shape-derived numbers into constants, so other shapes mean tracing again);
- a rule that fails raises its ShapeError/DTypeError naming the node's module path and class, the op,
  the input types and the rule's own message (what was expected, what came in);
- lazy modules recorded by the tracer have their parameters initialised, in declaration order (the
  order of `model.named_modules()`), from lucid's global generator, so a seed gives the same weights
  whatever order the modules ran in; their `in_channels` came from the inferred type of their input
  while tracing, and the graph's parameters are bound to the new tensors;
- the graph passes the verifier.
The input graph is not modified.
"""
from __future__ import annotations

from ..ir.graph import Graph

NAME = "shape_inference"


def run(graph: Graph) -> Graph:
    inferred = graph.copy(reinfer=True)
    for _, module in sorted(inferred.lazy_modules, key=lambda entry: entry[0]):
        module.reset_parameters()
    inferred.lazy_modules = []
    return inferred.verify()
