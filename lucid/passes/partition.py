"""Partition a gradient graph (from autodiff) into a forward graph and a backward graph.

`run(joint, input_count, output_count)` takes the joint graph autodiff made from a forward graph of
`input_count` inputs and `output_count` outputs (inputs: the forward inputs, then the seeds; outputs:
the forward outputs, then the gradients) and returns `Partition(forward, backward, saved, forward_inputs)`:
- `forward` computes everything that does not depend on a seed: inputs are the forward inputs,
  outputs are the forward outputs followed by the saved values; it keeps the state updates;
- `backward` computes the gradients: its inputs are the saved values (named `saved_<i>`), then the
  forward inputs the backward nodes read (and, with symbolic sizes, those whose shapes bind a
  dimension the backward uses and reads nowhere else), then the seeds; it has the parameters it reads;
- `saved` are the values of the forward graph that backward nodes read (activations), in order.
  A view (the output of an operator declaring `aliases_input`, such as reshape) is not saved: the
  backward recomputes it from the value it views, so a value and a view of it never both become
  forward outputs (which would copy the value). Nor is an elementwise value computed from values the
  backward has anyway (saved values, forward inputs, parameters, constants) by a few elementwise
  nodes, such as a ReLU's mask `y <= 0` beside the saved `y`: the backward computes it again, in the
  kernel that reads it.
Constants read by backward nodes are copied into the backward graph rather than saved. Running
forward then backward computes exactly what the joint graph computes. The input graph is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir import symbolic
from ..ir.graph import Graph, Value
from ..ir.ops.registry import OpKind

NAME = "partition"


@dataclass
class Partition:
    forward: Graph
    backward: Graph
    saved: list               # values of the joint graph that the backward graph takes as inputs
    forward_inputs: list      # names of the forward inputs the backward graph takes


def run(graph: Graph, input_count: int, output_count: int) -> Partition:
    seeds = graph.inputs[input_count:]
    seed_values = set(seeds)
    dependent = _dependent(graph, seed_values)
    gradients = graph.outputs[output_count:]
    forward_inputs = set(graph.inputs) - seed_values
    backward_nodes = _backward_nodes(graph, gradients, dependent)
    saved = _saved(backward_nodes, gradients, dependent)
    recomputed = _recomputable(saved, set(saved) | forward_inputs | set(graph.params))
    if recomputed:
        backward_nodes = _backward_nodes(graph, gradients, dependent, recomputed)
        saved = _saved(backward_nodes, gradients, dependent)
    reads = [v for node in backward_nodes for v in node.inputs] + list(gradients)
    inputs_read = _unique(v for v in reads if v in forward_inputs)
    inputs_read += _inputs_for_sizes(graph, backward_nodes, saved + inputs_read + seeds + list(graph.params))
    forward = _forward(graph, seed_values, graph.outputs[:output_count] + saved)
    backward = _backward(graph, backward_nodes, saved, inputs_read, seeds, gradients)
    return Partition(forward, backward, saved, [v.name for v in inputs_read])


def _inputs_for_sizes(graph: Graph, nodes: list, read: list) -> list:
    """The forward inputs a backward takes for their shapes alone: those binding the symbolic
    dimensions its nodes use (in types and size attributes) that the values it reads do not (the
    gradient of x.sum() with respect to x reads only the seed, yet has x's shape)."""
    used = set().union(*(symbolic.free_symbols((node.output.shape,) + tuple(node.attrs.values())) for node in nodes))
    missing = used - set().union(*(symbolic.free_symbols(v.shape) for v in read))
    taken = []
    for v in graph.inputs:
        if missing & symbolic.free_symbols(v.shape):
            taken.append(v)
            missing -= symbolic.free_symbols(v.shape)
    return taken


def _backward_nodes(graph: Graph, gradients: list, dependent: set, recomputed: frozenset = frozenset()) -> list:
    """The nodes computing the gradients from the seeds and the forward values they read: every
    forward value but constants, views and `recomputed` is read, not computed again."""
    return _needed(graph, gradients, stop=lambda v: v not in dependent and not _is_constant(v)
                   and not _is_view(v) and v not in recomputed)


def _saved(backward_nodes: list, gradients: list, dependent: set) -> list:
    """The forward values the backward nodes read (and gradients that are forward values), in order."""
    reads = [v for node in backward_nodes for v in node.inputs] + list(gradients)
    recomputed = {node.output for node in backward_nodes}
    return _unique(v for v in reads if v not in dependent and v not in recomputed and v.node is not None
                   and not v.node.is_constant)


def _recomputable(saved: list, available: set) -> set:
    """Saved values of elementwise nodes computed from values the backward has anyway (other saved
    values, forward inputs, parameters, constants), directly or through at most `RECOMPUTED_NODES`
    elementwise nodes in all, with those nodes' values: a ReLU's mask `y <= 0` beside the saved `y`,
    a LeakyReLU's factor `where(y > 0, 1, slope)`. The backward computes them again, where fusion
    merges them into the kernel reading them, instead of the forward making another pass over
    activations it has left and keeping the result."""
    recomputed = set()
    for v in saved:
        cone = _elementwise_cone(v, available)
        if cone is not None:
            recomputed |= cone
    return recomputed


#: The most elementwise nodes the backward computes again for one saved value.
RECOMPUTED_NODES = 8


def _elementwise_cone(v: Value, available: set) -> set | None:
    """The values of the elementwise nodes computing `v` from `available` values and constants (v's
    own included), or None when more than RECOMPUTED_NODES or a node of another kind lie between."""
    cone, pending = set(), [v]
    while pending:
        u = pending.pop()
        if u in cone or (u is not v and (u in available or _is_constant(u))):
            continue
        if u.node is None or u.node.is_constant or u.node.opdef.kind is not OpKind.ELEMENTWISE \
                or len(cone) == RECOMPUTED_NODES:
            return None
        cone.add(u)
        pending.extend(u.node.inputs)
    return cone


def _is_constant(v: Value) -> bool:
    return v.node is not None and v.node.is_constant


def _is_view(v: Value) -> bool:
    return v.node is not None and not v.node.is_constant and v.node.opdef.aliases_input


def _dependent(graph: Graph, seeds: set) -> set:
    dependent = set(seeds)
    for node in graph.nodes:
        if any(v in dependent for v in node.inputs):
            dependent.add(node.output)
    return dependent


def _needed(graph: Graph, results: list, stop) -> list:
    """Nodes computing `results`, in graph order, not descending past values where `stop` holds."""
    wanted = {v for v in results if not stop(v)}
    for node in reversed(graph.nodes):
        if node.output in wanted:
            wanted.update(v for v in node.inputs if not stop(v))
    return [node for node in graph.nodes if node.output in wanted]


def _unique(values) -> list:
    seen, result = set(), []
    for v in values:
        if v not in seen:
            seen.add(v)
            result.append(v)
    return result


def _forward(graph: Graph, seeds: set, outputs: list) -> Graph:
    forward = Graph(f"{graph.name}_forward")
    mapping = {v: forward.add_input(v.name, v.type) for v in graph.inputs if v not in seeds}
    mapping.update((v, forward.add_param(v.name, v.type)) for v in graph.params)
    keep = _needed(graph, outputs + list(graph.state_updates.values()), stop=lambda v: v.node is None)
    _copy_nodes(forward, keep, mapping)
    forward.set_outputs([mapping[v] for v in outputs], as_tuple=True)
    forward.state_updates = {name: mapping[v] for name, v in graph.state_updates.items()}
    forward.bindings = dict(graph.bindings)
    return forward.verify()


def _backward(graph: Graph, nodes: list, saved: list, inputs_read: list, seeds: list, gradients: list) -> Graph:
    backward = Graph(f"{graph.name}_backward")
    mapping = {v: backward.add_input(f"saved_{i}", v.type) for i, v in enumerate(saved)}
    mapping.update((v, backward.add_input(v.name, v.type)) for v in inputs_read + seeds)
    params_read = {v for node in nodes for v in node.inputs} | set(gradients)
    mapping.update((v, backward.add_param(v.name, v.type)) for v in graph.params if v in params_read)
    constants = [v.node for node in nodes for v in node.inputs if _is_constant(v)]
    constants += [v.node for v in gradients if _is_constant(v)]
    _copy_nodes(backward, _unique(constants) + nodes, mapping)
    backward.set_outputs([mapping[v] for v in gradients], as_tuple=True)
    backward.bindings = {k: b for k, b in graph.bindings.items() if any(p.name == k for p in backward.params)}
    return backward.verify()


def _copy_nodes(target: Graph, nodes: list, mapping: dict) -> None:
    for node in nodes:
        if node.output in mapping:
            continue
        if node.is_constant:
            mapping[node.output] = target.add_constant(node.value, node.scope)
        else:
            mapping[node.output] = target.add_node(node.op, [mapping[v] for v in node.inputs], node.attrs, node.scope)
