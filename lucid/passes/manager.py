"""The pass manager: runs a named pipeline (or a list of passes) and can record every stage.

Each pass is a function `graph -> graph` that leaves its input untouched; the manager verifies the
graph after every pass, and with `record=True` keeps `(stage name, graph)` for the input and after
each pass in `history` (what the visualiser shows stage by stage).
"""
from __future__ import annotations

from typing import Callable, Sequence

from ..errors import GraphError
from ..ir.graph import Graph
from . import autodiff, common_subexpressions, constant_folding, dead_code, shape_inference

PASSES: dict[str, Callable[[Graph], Graph]] = {
    shape_inference.NAME: shape_inference.run,
    autodiff.NAME: autodiff.run,
    constant_folding.NAME: constant_folding.run,
    common_subexpressions.NAME: common_subexpressions.run,
    dead_code.NAME: dead_code.run,
}

SIMPLIFY = (constant_folding.NAME, common_subexpressions.NAME, dead_code.NAME)
PIPELINES: dict[str, tuple[str, ...]] = {
    "simplify": SIMPLIFY,
    "inference": (shape_inference.NAME,) + SIMPLIFY,
    "training": (shape_inference.NAME, autodiff.NAME) + SIMPLIFY,
}


class PassManager:
    """`PassManager("inference", record=True).run(graph)`; a pipeline is a name from PIPELINES or a
    sequence of pass names and `graph -> graph` functions."""

    def __init__(self, pipeline: str | Sequence = "inference", record: bool = False):
        self.passes = [_resolve(p) for p in _pipeline(pipeline)]
        self.record = record
        self.history: list[tuple[str, Graph]] = []

    def run(self, graph: Graph) -> Graph:
        self.history = [("input", graph)] if self.record else []
        for name, fn in self.passes:
            graph = fn(graph).verify()
            if self.record:
                self.history.append((name, graph))
        return graph


def run_pipeline(graph: Graph, pipeline: str | Sequence = "inference") -> Graph:
    return PassManager(pipeline).run(graph)


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
    if step not in PASSES:
        raise GraphError(f"PassManager: unknown pass {step!r}; known: {sorted(PASSES)}")
    return step, PASSES[step]
