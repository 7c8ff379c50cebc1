"""Autodiff: from a forward graph, the graph that also computes gradients (reverse mode).

`run(graph, wrt)` returns a new graph with
- inputs: the forward graph's inputs, then one seed per forward output, named `grad_<output index>`
  (or `grad_<i>_1`... if that name is taken; the seed is the gradient of the final loss with respect
  to that output: feed ones for a scalar loss);
- the forward graph's parameters, bindings and state updates;
- outputs (a tuple): the forward outputs, then the gradient with respect to each name in `wrt`, in
  that order: sum over outputs i of seed_i · d(output_i)/d(wrt).

Guarantees: gradients are built by the operators' own gradient rules (the ones the eager tape uses),
applied in reverse topological order, each gradient node carrying the module scope of the forward
node it differentiates; contributions to a value read several times are added; only floating-point
values that depend on `wrt` get gradients (as on the eager tape); a name in `wrt` that no output
depends on gets zeros. `wrt` defaults to the parameters bound to tensors that require grad. The
forward graph is not modified.

Symbolic sizes: the gradient graph of a graph with symbolic dimensions serves the same sizes, and
at each of them computes what autodiff of the graph specialised to them computes. The rules write
sizes as sizes: pad amounts, output_paddings and input shapes of gradient operators are size
attributes (`lucid.ir.ops.attributes`), and a count a rule divides by is a `size` node, evaluated
per call (`lucid/ir/ops/size.py`).
"""
from __future__ import annotations

import numpy as np

from ..errors import GradientError, GraphError
from ..ir import ops, symbolic
from ..ir.graph import Builder, Graph, building

NAME = "autodiff"


def run(graph: Graph, wrt: list[str] | None = None) -> Graph:
    wrt = default_wrt(graph) if wrt is None else list(wrt)
    result = graph.copy()
    result.name = f"{graph.name}_grad"
    targets = [result.value(name) for name in wrt]
    for v in targets:
        if not v.dtype.is_floating:
            raise GradientError(f"autodiff: cannot differentiate with respect to {v.name!r} of dtype {v.dtype}")
    seeds = [result.add_input(result.fresh_name(f"grad_{i}"), v.type) for i, v in enumerate(result.outputs)]
    builder = Builder(result)
    with building(builder):
        grads = _backpropagate(result, builder, _depends_on(result, targets), seeds)
        results = [grads[v] if v in grads else _zeros(builder, v) for v in targets]
    result.set_outputs(list(result.outputs) + results, as_tuple=True)
    return result


def default_wrt(graph: Graph) -> list[str]:
    """Names of the parameters bound to tensors that require grad."""
    return [v.name for v in graph.params if getattr(graph.bindings.get(v.name), "requires_grad", False)]


def _depends_on(graph: Graph, targets: list) -> set:
    """Floating-point values that depend on one of `targets` (those that carry gradients)."""
    needed = set(targets)
    for node in graph.nodes:
        if node.output.dtype.is_floating and any(v in needed for v in node.inputs):
            needed.add(node.output)
    return needed


def _backpropagate(graph: Graph, builder: Builder, needed: set, seeds: list) -> dict:
    grads: dict = {}
    for out, seed in zip(graph.outputs, seeds):
        if out in needed:
            _accumulate(grads, out, seed)
    for node in reversed(list(graph.nodes)):
        grad_output = grads.get(node.output)
        if grad_output is None or node.is_constant or not node.opdef.differentiable:
            continue
        builder.scope = node.scope
        input_grads = node.opdef.grad(node.attrs, node.inputs, node.output, grad_output)
        for v, g in zip(node.inputs, input_grads):
            if g is not None and v in needed:
                _accumulate(grads, v, _checked(node, v, g))
    builder.scope = None
    return grads


def _checked(node, v, g):
    if not symbolic.same(g.shape, v.shape):
        raise GraphError(f"autodiff: the gradient rule of {node.op} gave shape {g.shape} for an input of shape {v.shape}")
    return g if g.dtype == v.dtype else ops.cast(g, v.dtype)


def _accumulate(grads: dict, v, g) -> None:
    grads[v] = ops.add(grads[v], g) if v in grads else g


def _zeros(builder: Builder, v):
    return ops.broadcast_to(builder.constant(np.zeros((), v.dtype.numpy)), v.shape)
