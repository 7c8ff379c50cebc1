"""What partition (lucid/passes/partition.py) keeps from the forward for the backward.

- A ReLU's mask `y <= 0` is not kept: the backward has `y` anyway (the next layer's gradient reads
  it) and computes the mask again; the forward makes no pass over `y` for it.
- Likewise a LeakyReLU's factor with a slope >= 0 (`where(y > 0, 1, slope)`, from its output,
  through several elementwise nodes); with a negative slope the factor needs the input, so the
  forward makes it and keeps it.
- A value whose operands the backward does not have (exp of a matrix product) stays saved.
- Either way, forward then backward give the joint graph's gradients, and they match NumPy's.
"""
from __future__ import annotations

import numpy as np

import lucid
import lucid.nn.functional as F
from lucid.ir import interpreter
from lucid.passes import autodiff, partition


def _split(fn, *shapes):
    graph = lucid.trace(fn, *(lucid.spec(*shape, dtype=lucid.float64) for shape in shapes))
    joint = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
    return joint, partition.run(joint, len(graph.inputs), len(graph.outputs))


def _run_split(split, arrays, seed):
    forward = interpreter.run(split.forward, *arrays)
    saved = forward[len(forward) - len(split.saved):]
    named = dict(zip([v.name for v in split.forward.inputs], arrays))
    return interpreter.run(split.backward, *saved, *(named[name] for name in split.forward_inputs), seed)


def _relu_layers(x, w1, w2):
    return (x @ w1).relu() * w2


def test_a_relu_mask_is_computed_again_in_the_backward_not_saved():
    joint, split = _split(_relu_layers, (5, 4), (4, 6), (5, 6))
    ops = lambda graph: [node.op for node in graph.nodes]
    assert "le" not in ops(split.forward) and "le" in ops(split.backward)
    assert all(v.dtype.name != "bool" for v in split.saved)
    assert any(v.node.op == "relu" for v in split.saved)          # the relu's output: w2's gradient reads it

    rng = np.random.default_rng(0)
    x, w1, w2 = (rng.standard_normal(s).astype(np.float64) for s in ((5, 4), (4, 6), (5, 6)))
    x[0, :] = 0.0                                                  # rows whose relu input is exactly 0
    seed = rng.standard_normal((5, 6))
    got = _run_split(split, (x, w1, w2), seed)
    joint_grads = interpreter.run(joint, x, w1, w2, seed)[1:]
    for a, b in zip(got, joint_grads, strict=True):
        np.testing.assert_array_equal(a, b)
    hidden = x @ w1
    g_hidden = seed * w2 * (hidden > 0)                       # PyTorch's rule: no gradient where y <= 0
    np.testing.assert_allclose(got[0], g_hidden @ w1.T, rtol=1e-12)
    np.testing.assert_allclose(got[1], x.T @ g_hidden, rtol=1e-12)
    np.testing.assert_allclose(got[2], np.maximum(hidden, 0) * seed, rtol=1e-12)


def test_a_leaky_relu_keeps_its_output_not_its_input_when_its_slope_is_not_negative():
    for slope, reads_input in ((0.1, False), (0.0, False), (-0.3, True)):
        joint, split = _split(lambda x, w1, w2: F.leaky_relu(x @ w1, slope) * w2, (5, 4), (4, 6), (5, 6))
        # a negative slope's factor `where(x > 0, 1, slope)` is made by the forward and kept (the
        # backward lacks x); else the backward makes it from the leaky_relu's output
        assert ("gt" in [node.op for node in split.forward.nodes]) == reads_input, slope
        assert {v.node.op for v in split.saved} == {"leaky_relu", "permute"} | ({"where"} if reads_input else set())

        rng = np.random.default_rng(2)
        x, w1, w2 = (rng.standard_normal(s) for s in ((5, 4), (4, 6), (5, 6)))
        x[0, :] = 0.0                                              # a row whose leaky_relu input is exactly 0
        seed = rng.standard_normal((5, 6))
        got = _run_split(split, (x, w1, w2), seed)
        hidden = x @ w1
        g_hidden = seed * w2 * np.where(hidden > 0, 1.0, slope)    # PyTorch's rule: the slope where x <= 0
        np.testing.assert_allclose(got[0], g_hidden @ w1.T, rtol=1e-12)
        np.testing.assert_allclose(got[1], x.T @ g_hidden, rtol=1e-12)


def test_a_value_whose_operands_the_backward_lacks_stays_saved():
    joint, split = _split(lambda x, w: (x @ w).exp(), (3, 4), (4, 2))
    assert "exp" in [v.node.op for v in split.saved]
    assert "exp" not in [node.op for node in split.backward.nodes]
    rng = np.random.default_rng(1)
    x, w, seed = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    got = _run_split(split, (x, w), seed)
    g = seed * np.exp(x @ w)
    np.testing.assert_allclose(got[0], g @ w.T, rtol=1e-12)
    np.testing.assert_allclose(got[1], x.T @ g, rtol=1e-12)
