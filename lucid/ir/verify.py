"""The graph verifier: checks the invariants every pass may rely on and every pass must keep.

- names of inputs and parameters are unique;
- nodes are in topological order and only read values of this graph defined before them (SSA);
- every operator is registered, and each node's recorded type and constraints on symbolic sizes
  equal its shape rule's results;
- one declaration (min, max) per symbolic dimension name;
- constants hold data of their recorded type;
- outputs and state updates read defined values; a state update targets a parameter of its type;
- a bound parameter's tensor has the parameter's shape and dtype.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, LucidError
from . import symbolic
from .graph import Graph, infer_type_and_constraints
from .types import TensorType, as_dtype


def verify(graph: Graph) -> None:
    """Raise GraphError naming the first broken invariant."""
    def fail(message: str):
        raise GraphError(f"graph {graph.name} is malformed: {message}")

    defined = set()
    for v in graph.inputs + graph.params:
        if v.graph is not graph or v.node is not None:
            fail(f"input or parameter %{v.name} does not belong to the graph")
        defined.add(v)
    names = [v.name for v in graph.inputs + graph.params]
    if len(set(names)) != len(names):
        fail(f"duplicate input or parameter names in {names}")
    symbols = {s for v in graph.inputs + graph.params for s in symbolic.free_symbols(v.shape)}
    if len({s.name for s in symbols}) != len(symbols):
        fail(f"a symbolic dimension is declared with two ranges: {sorted(map(repr, symbols))}")
    for i, node in enumerate(graph.nodes):
        _verify_node(node, i, defined, fail)
        defined.add(node.output)
    for v in graph.outputs + list(graph.state_updates.values()):
        if v not in defined:
            fail(f"an output or state update reads an undefined value {v!r}")
    params = {v.name: v for v in graph.params}
    for name, v in graph.state_updates.items():
        if name not in params or params[name].type != v.type:
            fail(f"state update of %{name} ({v.type}) does not match a parameter of that type")
    for name, binding in graph.bindings.items():
        if name not in params:
            fail(f"binding for %{name}, which is not a parameter")
        bound = np.asarray(binding)
        if TensorType(bound.shape, as_dtype(bound.dtype)) != params[name].type:
            fail(f"parameter %{name} is {params[name].type} but is bound to an array of shape {bound.shape} "
                 f"and dtype {bound.dtype}")


def _verify_node(node, index: int, defined: set, fail) -> None:
    where = f"node %{index} ({node.op})"
    if node.output is None or node.output.node is not node:
        fail(f"{where} has no output value of its own")
    for v in node.inputs:
        if v not in defined:
            fail(f"{where} reads {v!r} before it is defined")
    try:
        expected, constraints = infer_type_and_constraints(node)
    except LucidError as exc:
        fail(f"{where}: {exc}")
    if expected != node.output.type:
        fail(f"{where} is recorded as {node.output.type} but its rule gives {expected}")
    if constraints != node.constraints:
        fail(f"{where} records the constraints {[str(c) for c in node.constraints]} but its rule gives "
             f"{[str(c) for c in constraints]}")
