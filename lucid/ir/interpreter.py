"""`lucid.ir.run(graph, *inputs)`: execute a graph with the operators' NumPy reference kernels.

This is the semantics every compiled form of a graph must reproduce, and the oracle tests compare
them with. Inputs are checked against the graph's input types before anything runs. Parameters come
from `params` (name -> array) or else from the graph's bindings. Like eager execution, a run writes
the graph's state updates (BatchNorm running statistics) into the bound tensors. A graph with symbolic
dimensions is specialised to the sizes its inputs have (`specialize.sizes_of_inputs`: a dimension in
two inputs must agree; every constraint is checked) before it runs.
"""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, GraphError, ShapeError
from .evaluate import evaluate
from .graph import Graph
from .specialize import sizes_of_inputs, specialize


def run(graph: Graph, *inputs, params: dict | None = None):
    """Outputs as NumPy arrays: one array, or a tuple when the traced function returned a tuple. A
    graph with symbolic dimensions runs specialised to the sizes of the inputs it is given."""
    if graph.symbols():
        inputs = [np.asarray(x) for x in inputs]
        owner = f"lucid.ir.run({graph.name})"
        graph = specialize(graph, sizes_of_inputs(graph, [x.shape for x in inputs], owner))
    env = dict(zip(graph.inputs, _checked_inputs(graph, inputs)))
    env.update(_parameter_arrays(graph, params or {}))
    evaluate(graph, env)
    for name, value in graph.state_updates.items():
        np.copyto(_bound_array(graph, name, params or {}), env[value])
    results = tuple(env[v] for v in graph.outputs)
    return results if graph.returns_tuple else results[0]


def check_arrays(owner: str, values: list, arrays, what: str) -> list:
    """`arrays` as NumPy arrays, after checking their count, shapes and dtypes against `values`' types."""
    arrays = list(arrays)
    if len(arrays) != len(values):
        raise ShapeError(f"{owner}: expected {len(values)} {what}s ({', '.join(v.name for v in values)}), "
                         f"got {len(arrays)}")
    checked = []
    for v, given in zip(values, arrays):
        array = np.asarray(given)
        if array.dtype != v.dtype.numpy:
            raise DTypeError(f"{owner}: {what} {v.name!r} must have dtype {v.dtype}, got {array.dtype}")
        if array.shape != v.shape:
            raise ShapeError(f"{owner}: {what} {v.name!r} must have shape {v.shape}, got {array.shape}")
        checked.append(array)
    return checked


def _checked_inputs(graph: Graph, inputs) -> list:
    return check_arrays(f"lucid.ir.run({graph.name})", graph.inputs, inputs, "input")


def _parameter_arrays(graph: Graph, params: dict) -> dict:
    unknown = set(params) - {v.name for v in graph.params}
    if unknown:
        raise GraphError(f"lucid.ir.run({graph.name}): no parameters named {sorted(unknown)}")
    arrays = [_bound_array(graph, v.name, params) for v in graph.params]
    return dict(zip(graph.params, check_arrays(f"lucid.ir.run({graph.name})", graph.params, arrays, "parameter")))


def _bound_array(graph: Graph, name: str, params: dict) -> np.ndarray:
    if name in params:
        return np.asarray(params[name])
    if name not in graph.bindings:
        raise GraphError(f"lucid.ir.run({graph.name}): parameter {name!r} has no value; pass params={{{name!r}: ...}}")
    return np.asarray(graph.bindings[name])
