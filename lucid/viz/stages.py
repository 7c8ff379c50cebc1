"""The graphs a picture can show, stage by stage through lucid's pipeline.

`stage_graphs(graph, stage)` returns `[(title, graph, memory plan or None)]` for one stage:
- `traced`: the graph as given (what `lucid.trace` returned, or a graph file's graph);
- `shape-inferred`: after the "inference" pipeline (shape inference, constant folding, CSE, dead code);
- `fused`: then fusion and dead code, as `lucid.compile` runs them (fused groups are `fused` nodes);
- `planned`: the fused graph with its memory plan (arena offsets of the intermediates);
- `training`: two graphs side by side, the forward (outputs and saved activations) and the backward
  (saved activations and output seeds in, gradients out), from autodiff with respect to the
  parameters that require grad (every floating-point parameter for a graph read from a file, the
  floating-point inputs when there are none), simplified and partitioned as `lucid.compile` trains.
The input graph is never modified: each pass returns a new graph.
"""
from __future__ import annotations

from ..errors import GraphError
from ..passes import PassManager, autodiff, dead_code, fusion, memory_planning, partition

STAGES = ("traced", "shape-inferred", "fused", "planned", "training")


def stage_graphs(graph, stage: str) -> list:
    if stage not in STAGES:
        raise GraphError(f"lucid.viz: unknown stage {stage!r}; known stages: {', '.join(STAGES)}")
    if stage == "traced":
        return [("traced", graph, None)]
    inferred = PassManager("inference").run(graph)
    if stage == "shape-inferred":
        return [("shape-inferred", inferred, None)]
    if stage == "training":
        return _training(inferred)
    fused = dead_code.run(fusion.run(inferred))
    if stage == "fused":
        return [("fused", fused, None)]
    return [("planned", fused, memory_planning.plan(fused))]


def _training(graph) -> list:
    wrt = _trainable(graph)
    if not wrt:
        raise GraphError(f"lucid.viz: graph {graph.name} has no floating-point parameter or input to "
                         "differentiate, so it has no training stage")
    joint = PassManager("simplify").run(autodiff.run(graph, wrt=wrt))
    seeds = [v.name for v in joint.inputs[len(graph.inputs):]]
    split = partition.run(joint, seeds, forward_outputs=len(graph.outputs))
    return [("forward", split.forward, None), ("backward", split.backward, None)]


def _trainable(graph) -> list:
    if any(hasattr(graph.bindings.get(v.name), "requires_grad") for v in graph.params):
        wrt = autodiff.default_wrt(graph)
    else:
        wrt = [v.name for v in graph.params if v.dtype.is_floating]
    return wrt or [v.name for v in graph.inputs if v.dtype.is_floating]
