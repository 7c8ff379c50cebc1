"""Split a graph into an ordered list of stage graphs, one per given group of its outputs.

`run(graph, groups)` takes a graph and `groups`, a list of non-empty lists of output indices that
together name every output exactly once, and returns a list of `Stage`s, one per group, in order:
- stage k computes the outputs of group k (the first outputs of its graph, in the group's order)
  with the nodes they need that no earlier stage computed;
- a value stage k computes that a later stage reads is *carried*: it is one of stage k's further
  outputs (in `Stage.carried`, by the name the later stages' graph inputs take) and an input of each
  later stage that reads it; a stage's graph inputs are the original inputs it reads, by their
  names, and the carried values it reads;
- nothing is computed twice, except views (operators declaring `aliases_input`, as in
  `partition.py`) and constants: a stage recomputes the views and copies the constants it reads
  rather than carrying them, so a value and a view of it are never both stage outputs;
- every stage graph verifies; it has the parameters it reads and their bindings.
Running the stages in order, each on the original inputs and the values earlier stages carried,
computes exactly the outputs the whole graph computes. The input graph is unchanged.

`lucid.compile` splits the backward graph at DistributedDataParallel's bucket boundaries, so each
bucket's allreduce starts while the later stages still compute (`pipeline.for_staged_training`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import GraphError
from ..ir.graph import Graph, Value
from .partition import _copy_nodes, _is_view, _unique

NAME = "stages"


@dataclass
class Stage:
    graph: Graph
    outputs: list          # indices of the whole graph's outputs this stage computes: its first outputs
    carried: list          # names of the values it hands to later stages: its remaining outputs


def run(graph: Graph, groups: list) -> list:
    _check_groups(graph, groups)
    if graph.state_updates:
        raise GraphError(f"stages: graph {graph.name} updates state; only a backward graph can be split")
    owner: dict = {}                    # value -> the stage computing it (not views nor constants)
    stage_nodes = []
    for k, group in enumerate(groups):
        nodes = _needed(graph, [graph.outputs[i] for i in group], owner)
        owner.update((node.output, k) for node in nodes if not _is_view(node.output) and not node.is_constant)
        stage_nodes.append(nodes)
    reads = [_carried_reads(nodes, [graph.outputs[i] for i in group], owner, k)
             for k, (nodes, group) in enumerate(zip(stage_nodes, groups))]
    names = {v: f"carry_{n}" for n, v in enumerate(_unique(v for read in reads for v in read))}
    return [_stage(graph, k, groups[k], stage_nodes[k], reads[k],
                   [v for read in reads[k + 1:] for v in read if owner[v] == k], names)
            for k in range(len(groups))]


def _check_groups(graph: Graph, groups: list) -> None:
    flat = [i for group in groups for i in group]
    if sorted(flat) != list(range(len(graph.outputs))) or not all(groups):
        raise GraphError(f"stages: the groups {groups} must be non-empty and name each of the "
                         f"{len(graph.outputs)} outputs of {graph.name} exactly once")


def _available(v: Value, owner: dict) -> bool:
    """Whether a stage reads `v` rather than computing it: an input, a parameter or an earlier stage's value."""
    return v.node is None or v in owner


def _needed(graph: Graph, results: list, owner: dict) -> list:
    """Nodes computing `results`, in graph order, not descending past available values."""
    wanted = {v for v in results if not _available(v, owner)}
    for node in reversed(graph.nodes):
        if node.output in wanted:
            wanted.update(v for v in node.inputs if not _available(v, owner))
    return [node for node in graph.nodes if node.output in wanted]


def _carried_reads(nodes: list, results: list, owner: dict, stage: int) -> list:
    """The values earlier stages computed that this stage's nodes (or results) read."""
    reads = [v for node in nodes for v in node.inputs] + results
    return _unique(v for v in reads if owner.get(v, stage) < stage)


def _stage(graph: Graph, k: int, group: list, nodes: list, carried_in: list, carried_out: list, names: dict) -> Stage:
    stage = Graph(f"{graph.name}_stage{k}")
    results = [graph.outputs[i] for i in group]
    reads = {v for node in nodes for v in node.inputs} | set(results)
    mapping = {v: stage.add_input(v.name, v.type) for v in graph.inputs if v in reads}
    mapping.update((v, stage.add_input(names[v], v.type)) for v in carried_in)
    mapping.update((v, stage.add_param(v.name, v.type)) for v in graph.params if v in reads)
    _copy_nodes(stage, nodes, mapping)
    carried_out = _unique(carried_out)
    stage.set_outputs([mapping[v] for v in results + carried_out], as_tuple=True)
    stage.bindings = {name: b for name, b in graph.bindings.items() if any(p.name == name for p in stage.params)}
    return Stage(stage.verify(), list(group), [names[v] for v in carried_out])
