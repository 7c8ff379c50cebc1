"""The pipeline: every pass by name, the named pipelines, and the pass manager that runs them.

This is the one place that says which passes run in which order. `lucid.compile`, `lucid.export` and
`lucid.viz` call the functions at the end of this file; codegen receives a *planned* graph (the last
pass is memory planning) and runs no pass itself.

Named pipelines (`PIPELINES`), each a sequence of pass names:
- `simplify`: constant folding, common subexpressions, dead code;
- `inference`: shape inference, then `simplify`;
- `training`: shape inference, autodiff (with respect to the parameters that require grad unless told
  otherwise), then `simplify`: the joint graph of forward and gradients;
- `codegen-ready`: fusion, dead code, memory planning: the form codegen takes.

What the front ends run:
- `for_inference(graph)`: `inference`, then `codegen-ready` (`lucid.compile` without gradients,
  `lucid.export`);
- `for_training(graph, wrt)`: `training` with respect to `wrt`, the partition into forward and
  backward, then `codegen-ready` on each side (`lucid.compile` with gradients);
- `for_staged_training(graph, wrt, groups)`: the same, with the backward split by `stages` into one
  stage graph per group of gradients, each `codegen-ready` (the backward DistributedDataParallel
  overlaps its allreduces with);
- `stage(graph, name, wrt)`: the graphs the viewer shows at one of STAGES, each a prefix of the above.

`PassManager(steps).run(graph)` runs any sequence of steps. A step is a pass name from PASSES, a
`(pass name, options)` pair (the pass is called as `PASSES[name](graph, **options)`: autodiff's `wrt`,
partition's counts), or a function `graph -> graph`. Every pass leaves its input untouched; the
manager verifies the graphs it returns (`verify_each=True`, or `LUCID_VERIFY_PASSES=1` in the
environment, which the test suite sets: each graph after each pass, so a pass that breaks an
invariant is named; verifying 27 graphs of a UNet's training pipeline took 2.5 s of a 3.75 s warm
compile, so by default only the results are verified). Partition is the one pass that splits for the manager: it
returns a `Partition`, and every later step runs on its forward and its backward graph, so `run`
then returns the Partition of the results. (`stages` returns a list of stages: `for_staged_training`
calls it and runs `codegen-ready` on each stage graph.) With `record=True` the manager keeps `(stage name, result)` in
`history` for the input and after each step.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Sequence

from ..errors import GraphError
from ..ir.graph import Graph
from . import (autodiff, common_subexpressions, constant_folding, dead_code, fusion, memory_planning, partition,
               shape_inference, stages)

PASSES: dict[str, Callable] = {
    shape_inference.NAME: shape_inference.run,
    autodiff.NAME: autodiff.run,
    constant_folding.NAME: constant_folding.run,
    common_subexpressions.NAME: common_subexpressions.run,
    dead_code.NAME: dead_code.run,
    fusion.NAME: fusion.run,
    partition.NAME: partition.run,
    memory_planning.NAME: memory_planning.run,
    stages.NAME: stages.run,
}

SIMPLIFY = (constant_folding.NAME, common_subexpressions.NAME, dead_code.NAME)
FUSE = (fusion.NAME, dead_code.NAME)
PIPELINES: dict[str, tuple[str, ...]] = {
    "simplify": SIMPLIFY,
    "inference": (shape_inference.NAME,) + SIMPLIFY,
    "training": (shape_inference.NAME, autodiff.NAME) + SIMPLIFY,
    "codegen-ready": FUSE + (memory_planning.NAME,),
}

#: The stages `lucid.viz` shows, in pipeline order.
STAGES = ("traced", "shape-inferred", "fused", "planned", "training")
_INFERENCE_STAGES = {
    "traced": (),
    "shape-inferred": PIPELINES["inference"],
    "fused": PIPELINES["inference"] + FUSE,
    "planned": PIPELINES["inference"] + PIPELINES["codegen-ready"],
}


class PassManager:
    """`PassManager("inference", record=True).run(graph)`; a pipeline is a name from PIPELINES or a
    sequence of steps (see the module docstring)."""

    def __init__(self, pipeline: str | Sequence = "inference", record: bool = False,
                 verify_each: bool | None = None):
        self.passes = [_resolve(step) for step in _pipeline(pipeline)]
        self.record = record
        self.verify_each = os.environ.get("LUCID_VERIFY_PASSES") == "1" if verify_each is None else verify_each
        self.history: list[tuple[str, Graph | partition.Partition]] = []

    def run(self, graph: Graph) -> Graph | partition.Partition:
        self.history = [("input", graph)] if self.record else []
        for name, fn in self.passes:
            graph = _apply(fn, graph)
            if self.verify_each:
                _verify(graph)
            if self.record:
                self.history.append((name, graph))
        if self.passes and not self.verify_each:
            _verify(graph)
        return graph


def run_pipeline(graph: Graph, pipeline: str | Sequence = "inference") -> Graph | partition.Partition:
    return PassManager(pipeline).run(graph)


def for_inference(graph: Graph) -> Graph:
    """A traced graph optimised for inference, fused and planned: what codegen takes."""
    return PassManager(PIPELINES["inference"] + PIPELINES["codegen-ready"]).run(graph)


def for_training(graph: Graph, wrt: list[str]) -> partition.Partition:
    """The forward and backward graphs that train `graph` with respect to the inputs and parameters
    named in `wrt`, each fused and planned: what codegen takes."""
    return PassManager(training_steps(graph, wrt) + list(PIPELINES["codegen-ready"])).run(graph)


def for_staged_training(graph: Graph, wrt: list[str], groups: list) -> tuple[partition.Partition, list]:
    """`for_training`, but the backward split into `stages.Stage`s, one per group of its outputs (the
    gradients, indexed in `wrt` order), each stage graph fused and planned. Returns the partition
    (its forward fused and planned, its backward as split) and the stages."""
    split = PassManager(training_steps(graph, wrt)).run(graph)
    forward = PassManager(PIPELINES["codegen-ready"]).run(split.forward)
    planned = [dataclasses.replace(stage, graph=PassManager(PIPELINES["codegen-ready"]).run(stage.graph))
               for stage in stages.run(split.backward, groups)]
    return dataclasses.replace(split, forward=forward), planned


def training_steps(graph: Graph, wrt: list[str]) -> list:
    """The `training` pipeline with respect to `wrt`, then the partition into forward and backward."""
    steps = [(name, {"wrt": list(wrt)}) if name == autodiff.NAME else name for name in PIPELINES["training"]]
    counts = {"input_count": len(graph.inputs), "output_count": len(graph.outputs)}
    return steps + [(partition.NAME, counts)]


def stage(graph: Graph, name: str, wrt: list[str] | None = None) -> list[tuple[str, Graph]]:
    """`[(title, graph)]` of stage `name` (one of STAGES): the graph as given (`traced`), after the
    `inference` pipeline (`shape-inferred`), then fused (`fused`), then planned (`planned`: the graph
    codegen takes, with its `memory_plan`); or (`training`, with respect to `wrt`, by default the
    parameters that require grad) the forward and backward graphs as the partition makes them, before
    `codegen-ready`."""
    if name == "training":
        wrt = autodiff.default_wrt(graph) if wrt is None else wrt
        split = PassManager(training_steps(graph, wrt)).run(graph)
        return [("forward", split.forward), ("backward", split.backward)]
    if name not in _INFERENCE_STAGES:
        raise GraphError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}")
    return [(name, PassManager(_INFERENCE_STAGES[name]).run(graph))]


def _apply(fn: Callable, graph):
    """`fn` on a graph, or on both sides of a partition."""
    if isinstance(graph, partition.Partition):
        return dataclasses.replace(graph, forward=_apply(fn, graph.forward), backward=_apply(fn, graph.backward))
    return fn(graph)


def _verify(graph) -> None:
    """Verify a graph, or both sides of a partition."""
    for made in (graph.forward, graph.backward) if isinstance(graph, partition.Partition) else (graph,):
        made.verify()


def _pipeline(pipeline) -> Sequence:
    if isinstance(pipeline, str):
        if pipeline not in PIPELINES:
            raise GraphError(f"PassManager: unknown pipeline {pipeline!r}; known: {sorted(PIPELINES)}")
        return PIPELINES[pipeline]
    return pipeline


def _resolve(step) -> tuple[str, Callable]:
    if callable(step):
        known = next((name for name, fn in PASSES.items() if fn is step), None)
        return known or getattr(step, "__name__", "pass"), step
    name, options = step if isinstance(step, tuple) else (step, {})
    if name not in PASSES:
        raise GraphError(f"PassManager: unknown pass {name!r}; known: {sorted(PASSES)}")
    return name, functools.partial(PASSES[name], **options) if options else PASSES[name]
