"""The graphs a picture can show, stage by stage through lucid's pipeline.

`stage_graphs(graph, stage)` returns `[(title, graph, memory plan or None)]` for one stage of
`STAGES`; the passes behind each stage are `lucid/passes/pipeline.py`'s (`pipeline.stage`), the ones
`lucid.compile` runs:
- `traced`: the graph as given (what `lucid.trace` returned, or a graph file's graph);
- `shape-inferred`: after the "inference" pipeline (shape inference, constant folding, CSE, dead code);
- `fused`: then fusion and dead code (fused groups are `fused` nodes);
- `planned`: then memory planning: the graph codegen takes, with its plan (arena offsets);
- `training`: two graphs side by side, the forward (outputs and saved activations) and the backward
  (saved activations and output seeds in, gradients out), from the "training" pipeline and the
  partition, as `lucid.compile` trains, with respect to the parameters that require grad (every
  floating-point parameter for a graph read from a file, the floating-point inputs when there are none).
The input graph is never modified: each pass returns a new graph.
"""
from __future__ import annotations

from ..errors import GraphError
from ..passes import autodiff, pipeline
from ..passes.pipeline import STAGES

__all__ = ["STAGES", "stage_graphs"]


def stage_graphs(graph, stage: str) -> list:
    if stage not in STAGES:
        raise GraphError(f"lucid.viz: unknown stage {stage!r}; known stages: {', '.join(STAGES)}")
    wrt = _trainable(graph) if stage == "training" else None
    if stage == "training" and not wrt:
        raise GraphError(f"lucid.viz: graph {graph.name} has no floating-point parameter or input to "
                         "differentiate, so it has no training stage")
    return [(title, g, g.memory_plan if stage == "planned" else None) for title, g in pipeline.stage(graph, stage, wrt)]


def _trainable(graph) -> list:
    if any(hasattr(graph.bindings.get(v.name), "requires_grad") for v in graph.params):
        wrt = autodiff.default_wrt(graph)
    else:
        wrt = [v.name for v in graph.params if v.dtype.is_floating]
    return wrt or [v.name for v in graph.inputs if v.dtype.is_floating]
