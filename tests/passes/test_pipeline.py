"""The one definition of the pipeline (lucid/passes/pipeline.py) and who runs it.

Checked: every pass file of lucid/passes is a pass the manager runs by name; a partition inside a
pipeline splits, and later passes run on both sides; `lucid.compile` hands its executables the graphs
that the passes, composed here by hand in the documented order, give (inference and training); the
viewer's stages are those graphs before codegen; the runtime plans nothing (an unplanned graph is
refused, a planned one keeps its plan).
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid import viz
from lucid.passes import (PASSES, PIPELINES, PassManager, autodiff, dead_code, fusion, memory_planning, partition,
                          pipeline)
from lucid.runtime.executable import Executable


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.norm = nn.BatchNorm3d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        y = self.norm(self.conv(x)).relu()
        return self.head(y.mean((2, 3, 4)) * 2.0 + y.mean((2, 3, 4)) * 2.0)      # a common subexpression


def traced(mode: str):
    lucid.manual_seed(0)
    model = getattr(Block(), mode)()
    return model, lucid.trace(model, lucid.spec(2, 2, 4, 4, 4))


def by_hand_training(graph, wrt):
    """The training order, composed pass by pass: autodiff, simplify, partition, fuse, plan."""
    joint = PassManager("simplify").run(autodiff.run(graph, wrt=wrt))
    split = partition.run(joint, len(graph.inputs), len(graph.outputs))
    return split, [memory_planning.run(dead_code.run(fusion.run(g))) for g in (split.forward, split.backward)]


def test_every_pass_file_is_a_pass_the_manager_runs():
    folder = pathlib.Path(pipeline.__file__).parent
    files = {p.stem for p in folder.glob("*.py")} - {"__init__", "pipeline", "rewrite"}
    assert set(PASSES) == files
    assert PIPELINES["codegen-ready"] == ("fusion", "dead_code", "memory_planning")
    assert all(name in PASSES for steps in PIPELINES.values() for name in steps)


def test_a_partition_in_a_pipeline_splits_and_later_passes_run_on_both_sides():
    _, graph = traced("train")
    wrt = autodiff.default_wrt(graph)
    manager = PassManager(pipeline.training_steps(graph, wrt) + ["fusion"], record=True)
    result = manager.run(graph)
    names = [name for name, _ in manager.history]
    assert names == ["input", "shape_inference", "autodiff", "constant_folding", "common_subexpressions",
                     "dead_code", "partition", "fusion"]
    split = dict(manager.history)["partition"]
    assert isinstance(result, partition.Partition) and result.saved == split.saved
    assert str(result.forward) == str(fusion.run(split.forward))
    assert str(result.backward) == str(fusion.run(split.backward))
    by_hand, _ = by_hand_training(graph, wrt)
    assert str(split.forward) == str(by_hand.forward) and str(split.backward) == str(by_hand.backward)


def test_compiled_inference_runs_the_inference_pipeline_then_codegen_ready():
    model, graph = traced("eval")
    compiled = lucid.compile(model)
    x = lucid.randn(2, 2, 4, 4, 4)
    with lucid.no_grad():
        got = compiled(x)
    (variant,) = compiled.variants.values()
    expected = memory_planning.run(dead_code.run(fusion.run(PassManager("inference").run(graph))))
    assert str(variant.executable.graph) == str(expected)
    assert variant.executable.plan is variant.executable.graph.memory_plan           # planned once, by the pass
    assert variant.executable.plan.offsets.keys() != set()
    np.testing.assert_allclose(got.numpy(), lucid.ir.run(graph, x.numpy()), rtol=1e-5, atol=1e-5)


def test_compiled_training_runs_autodiff_before_simplifying_and_the_viewer_shows_the_same():
    model, graph = traced("train")
    compiled = lucid.compile(model)
    x = lucid.randn(2, 2, 4, 4, 4, requires_grad=True)
    compiled(x).sum().backward()
    (variant,) = compiled.variants.values()
    split, planned = by_hand_training(graph, ["x"] + autodiff.default_wrt(graph))
    assert [str(variant.forward.graph), str(variant.backward.graph)] == [str(g) for g in planned]
    assert x.grad is not None and all(p.grad is not None for p in model.parameters())
    shown = viz.stage_graphs(graph, "training")
    viewer_split, _ = by_hand_training(graph, autodiff.default_wrt(graph))
    assert [(title, str(g)) for title, g, _ in shown] == [("forward", str(viewer_split.forward)),
                                                          ("backward", str(viewer_split.backward))]


def test_viewer_stages_are_prefixes_of_the_inference_pipeline():
    _, graph = traced("eval")
    inferred = PassManager("inference").run(graph)
    fused = dead_code.run(fusion.run(inferred))
    for stage, expected in (("traced", graph), ("shape-inferred", inferred), ("fused", fused), ("planned", fused)):
        ((title, shown, plan),) = viz.stage_graphs(graph, stage)
        assert title == stage and str(shown) == str(expected)
        assert (plan is not None) == (stage == "planned")
    ((_, planned, plan),) = viz.stage_graphs(graph, "planned")
    assert plan.arena_bytes == memory_planning.plan(fused).arena_bytes and plan is planned.memory_plan


def test_the_runtime_refuses_a_graph_nobody_planned():
    _, graph = traced("eval")
    with pytest.raises(lucid.GraphError, match="has no memory plan.*codegen-ready"):
        Executable(graph)
