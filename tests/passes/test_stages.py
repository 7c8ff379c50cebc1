"""The stages pass (lucid/passes/stages.py): a backward graph split at given groups of its outputs.

Oracle: the whole graph run by the interpreter. The stages, run in order by the interpreter (each on
the original inputs and what earlier stages carried), give the same outputs; each stage's first
outputs are its group's; nothing but views and constants is computed twice; no view is carried;
an invalid grouping is refused.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lucid
import lucid.nn as nn
from lucid.errors import GraphError
from lucid.passes import PassManager, autodiff, pipeline, stages


class UNetLike(nn.Module):
    """Conv, BatchNorm, pooling, a skip connection and views (flatten, reshape) before a head."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv3d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm3d(4)
        self.pool = nn.MaxPool3d(2)
        self.mid = nn.Conv3d(4, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.out = nn.Conv3d(8, 2, 1)
        self.head = nn.Linear(2 * 8 * 8 * 8, 3)

    def forward(self, x):
        skip = self.norm(self.down(x)).relu()
        y = self.out(lucid.cat([skip, self.up(self.mid(self.pool(skip)).relu())], 1))
        return self.head(y.reshape(y.shape[0], -1))


def mlp(layers: int) -> nn.Module:
    modules = []
    for _ in range(layers):
        modules += [nn.Linear(6, 6), nn.Tanh()]
    return nn.Sequential(nn.Flatten(), *modules, nn.Linear(6, 2))


def backward_graph(model: nn.Module, *shape):
    lucid.manual_seed(0)
    graph = lucid.trace(model.train(), lucid.spec(*shape))
    return PassManager(pipeline.training_steps(graph, autodiff.default_wrt(graph))).run(graph).backward


def random_inputs(graph, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(v.shape).astype(v.dtype.numpy) for v in graph.inputs]


def run_in_stages(graph, split: list, inputs: list) -> list:
    values = {v.name: a for v, a in zip(graph.inputs, inputs)}
    outputs = [None] * len(graph.outputs)
    for stage in split:
        results = lucid.ir.run(stage.graph, *(values[v.name] for v in stage.graph.inputs))
        results = results if isinstance(results, tuple) else (results,)
        assert len(results) == len(stage.outputs) + len(stage.carried)
        for index, array in zip(stage.outputs, results):
            outputs[index] = array
        values.update(zip(stage.carried, results[len(stage.outputs):]))
    return outputs


def computed(graph) -> int:
    return sum(1 for n in graph.nodes if not n.is_constant and not n.opdef.aliases_input)


def check_split(graph, groups: list, seed: int = 0) -> list:
    split = stages.run(graph, groups)
    assert [s.outputs for s in split] == groups
    inputs = random_inputs(graph, seed)
    whole = lucid.ir.run(graph, *inputs)
    whole = whole if isinstance(whole, tuple) else (whole,)
    for ours, expected in zip(run_in_stages(graph, split, inputs), whole):
        np.testing.assert_array_equal(ours, expected)
    assert sum(computed(s.graph) for s in split) == computed(graph)        # nothing computed twice
    for s in split:
        carried = s.graph.outputs[len(s.outputs):]
        assert not any(v.node is not None and v.node.opdef.aliases_input for v in carried), "a view was carried"
    return split


def random_groups(count: int, rng) -> list:
    order = list(rng.permutation(count))
    cuts = sorted(rng.choice(np.arange(1, count), size=rng.integers(0, count), replace=False)) if count > 1 else []
    return [[int(i) for i in part] for part in np.split(np.array(order), cuts) if len(part)]


@pytest.mark.parametrize("model, shape", [(UNetLike(), (2, 1, 8, 8, 8)), (mlp(3), (4, 2, 3))],
                         ids=["unet-like", "mlp"])
def test_stages_in_backward_order_equal_the_whole_backward(model, shape):
    graph = backward_graph(model, *shape)
    count = len(graph.outputs)
    last_first = [[i, i - 1] if i > 0 else [i] for i in range(count - 1, -1, -2)]   # as DDP's buckets
    split = check_split(graph, last_first)
    assert len(split) > 2 and any(s.carried for s in split)
    check_split(graph, [list(range(count))])                                        # one stage: the graph
    check_split(graph, [[i] for i in range(count)])                                 # one per gradient


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_any_grouping_of_a_backward_equals_the_whole(layers, seed):
    graph = backward_graph(mlp(layers), 3, 6)
    check_split(graph, random_groups(len(graph.outputs), np.random.default_rng(seed)), seed)


def test_the_input_graph_is_unchanged_and_bad_groupings_are_refused():
    graph = backward_graph(mlp(1), 3, 6)
    before = [(n.op, tuple(v.name for v in n.inputs)) for n in graph.nodes]
    stages.run(graph, [[0], [1, 2, 3]])
    assert [(n.op, tuple(v.name for v in n.inputs)) for n in graph.nodes] == before
    for bad in ([[0], [1, 2]], [[0, 1], [1, 2, 3]], [[0, 1, 2, 3], []]):
        with pytest.raises(GraphError, match="exactly once"):
            stages.run(graph, bad)
