"""An elementwise chain ending with a sum (lucid/passes/fusion.py, codegen/kernels/reduction.py).

The fusion pass ends a chain with the sum reading it when the sum is in row order (its axes include
the innermost one of size above 1) and every operand the chain reads from outside has the chain's
shape, one value per output of the sum (size 1 on the summed axes), or one element; codegen then
computes the chain where the sum loads its input. Checked here:
- which graphs fuse and which do not (column order, another broadcast, a second reader, an output);
- compiled results against NumPy (float64 sums of the chain computed apart), float32 and float64,
  odd sizes, the split path (few outputs, long rows), symbolic sizes, a sum over every axis;
- a batch norm's training gradients, compiled against eager, and that its backward sums
  g (x - mean) without storing it.
"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
from lucid.ir import Builder, Graph, TensorType, building
from lucid.ir.ops import elementwise as E
from lucid.ir.ops import normalization as N
from lucid.ir.ops import reduction as R
from lucid.ir.types import float32, float64
from lucid.passes import fusion, memory_planning
from lucid.runtime.executable import Executable


def graph_of(build, shapes: dict, dtype=float32) -> Graph:
    graph = Graph("fused_sum")
    values = [graph.add_input(name, TensorType(shape, dtype)) for name, shape in shapes.items()]
    with building(Builder(graph)):
        result = build(*values)
    graph.set_outputs(list(result) if isinstance(result, tuple) else [result], isinstance(result, tuple))
    return graph.verify()


def fused_bodies(graph: Graph) -> list:
    return [[n.op for n in node.attrs["body"].nodes if not n.is_constant]
            for node in fusion.run(graph).nodes if node.op == "fused"]


def centred_product(x, mean, g):                 # a norm's g (x - mean), summed per channel
    return R.sum_(N.normalize(x, mean, g, 1.0, 0.0), axes=(0, 2, 3))


def scaled_tanh(x, y):
    return R.sum_(E.tanh(E.mul(E.add(x, 0.5), y)), axes=(1,))


def test_a_chain_ending_with_a_row_order_sum_is_one_fused_node():
    graph = graph_of(centred_product, {"x": (2, 5, 3, 7), "mean": (1, 5, 1, 1), "g": (2, 5, 3, 7)})
    assert fused_bodies(graph) == [["normalize", "sum"]]
    graph = graph_of(scaled_tanh, {"x": (4, 9), "y": (4, 9)})
    assert fused_bodies(graph) == [["add", "mul", "tanh", "sum"]]


@pytest.mark.parametrize("case", ["column order", "other broadcast", "second reader", "an output"])
def test_chains_a_sum_does_not_join(case):
    if case == "column order":                   # the innermost axis kept
        graph = graph_of(lambda x, y: R.sum_(E.mul(E.exp(x), y), axes=(0,)), {"x": (4, 9), "y": (4, 9)})
    elif case == "other broadcast":              # one value per row of the summed axis: not per output
        graph = graph_of(lambda x, y: R.sum_(E.mul(E.exp(x), y), axes=(1,)), {"x": (4, 9), "y": (1, 9)})
    else:
        def build(x):
            e = E.exp(E.neg(x))
            return R.sum_(e, axes=(1,)), (E.add(e, 1.0) if case == "second reader" else e)
        graph = graph_of(build, {"x": (4, 9)})
    assert all(body[-1] != "sum" for body in fused_bodies(graph)), case


def test_nothing_joins_after_the_sum():
    graph = graph_of(lambda x: E.exp(R.sum_(E.neg(x), axes=(1,))), {"x": (4, 9)})
    assert fused_bodies(graph) == [["neg", "sum"]]


def compiled(graph: Graph, *arrays):
    return Executable(memory_planning.run(fusion.run(graph)))(*arrays)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (1, 3, 1, 129), (3, 16, 5, 5)])
def test_a_norms_centred_product_sum_matches_numpy(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    x, g = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    mean = rng.standard_normal((1, shape[1], 1, 1)).astype(dtype)
    graph = graph_of(centred_product, {"x": shape, "mean": mean.shape, "g": shape},
                     float32 if dtype == np.float32 else float64)
    got = compiled(graph, x, mean, g)
    want = ((x.astype(np.float64) - mean) * g).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("columns", [5, 40000])            # the second takes the split path (few, long rows)
def test_a_chain_summed_over_rows_matches_numpy(columns):
    rng = np.random.default_rng(columns)
    x, y = (rng.standard_normal((3, columns)).astype(np.float32) for _ in range(2))
    got = compiled(graph_of(scaled_tanh, {"x": x.shape, "y": y.shape}), x, y)
    want = np.tanh((x.astype(np.float64) + 0.5) * y).sum(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_a_chain_summed_over_every_axis_and_non_finite_values():
    x = np.random.default_rng(3).standard_normal((3, 4, 5)).astype(np.float32)
    graph = graph_of(lambda x: R.sum_(E.mul(E.exp(x), 2.0), axes=(0, 1, 2)), {"x": x.shape})
    assert fused_bodies(graph) == [["exp", "mul", "sum"]]
    np.testing.assert_allclose(compiled(graph, x), (2 * np.exp(x.astype(np.float64))).sum(), rtol=1e-6)
    x[1, 2, 3] = np.inf
    assert compiled(graph, x) == np.inf
    x[0, 0, 0] = np.nan
    assert np.isnan(compiled(graph, x))


def test_symbolic_sizes():
    n = lucid.dim("n", min=1)
    graph = lucid.trace(lambda x, mean, g: centred_product(x, mean, g),
                        lucid.spec(n, 4, 3, 5), lucid.spec(1, 4, 1, 1), lucid.spec(n, 4, 3, 5), name="symbolic_sum")
    assert fused_bodies(graph) == [["normalize", "sum"]]
    executable = Executable(memory_planning.run(fusion.run(graph)))
    rng = np.random.default_rng(4)
    mean = rng.standard_normal((1, 4, 1, 1)).astype(np.float32)
    for batch in (1, 3):
        x, g = (rng.standard_normal((batch, 4, 3, 5)).astype(np.float32) for _ in range(2))
        want = ((x.astype(np.float64) - mean) * g).sum(axis=(0, 2, 3))
        np.testing.assert_allclose(executable(x, mean, g)[0], want, rtol=1e-5, atol=1e-5)


def test_batch_norm_training_gradients_match_eager():
    """Conv, batch norm, ReLU, conv, batch norm: the compiled backward (its norms' sums of
    g (x - mean) fused) against eager mode, odd sizes."""
    import lucid.nn as nn

    lucid.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
                          nn.Conv3d(8, 5, 3, padding=1), nn.BatchNorm3d(5)).train()
    rng = np.random.default_rng(0)
    x = lucid.Tensor(rng.standard_normal((2, 3, 5, 7, 9)).astype(np.float32), requires_grad=True)
    weights = lucid.Tensor(rng.standard_normal((2, 5, 5, 7, 9)).astype(np.float32))
    results = []
    fast = lucid.compile(model)
    for run in (model, fast):
        for p in model.parameters():
            p.grad = None
        x.grad = None
        (run(x) * weights).sum().backward()
        results.append([x.grad.numpy()] + [p.grad.numpy() for p in model.parameters()])
    scale = max(float(np.abs(eager).max()) for eager in results[0])      # the convs' biases' gradients are 0 but
    for (name, _), eager, got in zip([("x", None)] + list(model.named_parameters()), *results):     # rounding
        np.testing.assert_allclose(got, eager, rtol=2e-4, atol=1e-5 * scale, err_msg=name)
    variant = [v for v in fast.variants.values() if hasattr(v, "backward")][-1]
    sums = [node for _, node in variant.backward.kernels() if node.op == "fused"
            and [n.op for n in node.attrs["body"].nodes if not n.is_constant] == ["normalize", "sum"]]
    assert len(sums) == 2


def test_a_chain_summed_over_an_empty_axis_is_zero():
    """Sums over an empty axis (the input has no elements, the output some): zeros, as NumPy."""
    graph = graph_of(lambda x, y: R.sum_(E.mul(E.exp(x), y), axes=(1,)), {"x": (3, 0), "y": (3, 0)})
    assert fused_bodies(graph) == [["exp", "mul", "sum"]]
    empty = np.zeros((3, 0), np.float32)
    np.testing.assert_array_equal(compiled(graph, empty, empty), np.zeros(3, np.float32))
