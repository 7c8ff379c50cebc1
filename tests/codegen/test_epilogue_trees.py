"""A conv's epilogue taking in another elementwise chain (lucid/passes/fusion.py): a ReLU's gradient
`where(y <= 0, 0, g)` or a LeakyReLU's `g * where(y > 0, 1, slope)` of a conv's output g with `y`
read from outside, and a residual computed by its own chain, applied as each output element is
stored, in every conv algorithm (Winograd, direct, over planes, transposed). Oracle: the plain-loop
convolutions of `oracle.py` in float64, the elementwise rest in NumPy; the fused graph's bodies are
checked to hold the anchor and the tree."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
import oracle
from lucid.codegen.kernels.conv import winograd
from lucid.passes import fusion, memory_planning
from lucid.runtime.executable import Executable
from model_helpers import kernel_labels

#: name: (x shape, weight shape, conv keyword arguments, transposed, the kernel showing the algorithm)
CASES = {
    "winograd": ((1, 16, 5, 6, 7), (16, 16, 3, 3, 3), dict(padding=1), False, "wino_conv"),
    "direct": ((2, 3, 4, 5, 9), (8, 3, 1, 3, 3), dict(padding=(0, 1, 1)), False, "conv_direct"),
    "planes": ((2, 5, 4, 3, 6), (12, 5, 3, 1, 1), dict(padding=(1, 0, 0)), False, "conv_planes"),
    "transposed": ((1, 8, 3, 3, 4), (8, 6, 3, 3, 3), dict(stride=2, padding=1), True, "convT_direct"),
    "disjoint blocks": ((1, 8, 3, 3, 4), (8, 6, 2, 2, 2), dict(stride=2), True, "convT_blocks"),
}


@pytest.fixture(autouse=True)
def few_items_suffice(monkeypatch):
    """Small shapes on the Winograd path, as in test_winograd.py."""
    monkeypatch.setattr(winograd, "MIN_ITEMS_PER_CORE", 0)
    monkeypatch.setattr(winograd, "WEIGHT_TRANSFORM_CYCLES", 0)


def conv(x, w, transposed, kwargs):
    return (F.conv_transpose3d if transposed else F.conv3d)(x, w, **kwargs)


def oracle_conv(x, w, transposed, kwargs):
    x, w = x.astype(np.float64), w.astype(np.float64)
    return (oracle.conv_transpose_nd if transposed else oracle.conv_nd)(x, w, **kwargs)


#: An activation's gradient of the conv's output g, given the activation's output y: (lucid, NumPy, the
#: operators it adds to the epilogue). LeakyReLU's reads g once, as a factor (exactly 1 or the slope).
GRADIENTS = {
    "relu": (lambda y, g: lucid.where(y <= 0.0, 0.0, g), lambda y, g: np.where(y <= 0, 0.0, g), ["le", "where"]),
    "leaky_relu": (lambda y, g: g * lucid.where(y > 0.0, 1.0, 0.01), lambda y, g: np.where(y > 0, g, 0.01 * g),
                   ["gt", "mul", "where"]),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("activation", list(GRADIENTS))
@pytest.mark.parametrize("name", list(CASES))
def test_an_activation_gradient_and_a_residual_chain_in_the_epilogue(name, activation, threads):
    x_shape, w_shape, kwargs, transposed, kernel = CASES[name]
    rng = np.random.default_rng(len(name))
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    out_shape = oracle_conv(x, w, transposed, kwargs).shape
    y, r = (rng.standard_normal(out_shape).astype(np.float32) for _ in range(2))
    y[..., 0] = 0.0                                               # y <= 0 at exactly 0 too

    def layer(x, w, y, r):
        g = conv(x, w, transposed, kwargs)
        return GRADIENTS[activation][0](y, g) + (r * 0.5).tanh()

    graph = lucid.trace(layer, *(lucid.spec(*a.shape) for a in (x, w, y, r)), name=f"tree_{name}")
    fused = fusion.run(graph)
    (body,) = [[n.op for n in node.attrs["body"].nodes if not n.is_constant] for node in fused.nodes if node.op == "fused"]
    assert body[0] == ("conv_transpose" if transposed else "conv")
    assert sorted(body[1:]) == sorted(["add", "mul", "tanh"] + GRADIENTS[activation][2])
    executable = Executable(memory_planning.run(fused))
    assert kernel in kernel_labels(executable)
    got = executable(x, w, y, r, threads=threads)[0]
    g = oracle_conv(x, w, transposed, kwargs)
    want = GRADIENTS[activation][1](y, g) + np.tanh(r.astype(np.float64) * 0.5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(g).max()))


@pytest.mark.parametrize("name", list(CASES))
def test_per_sample_and_per_channel_operands_in_the_epilogue(name):
    """Operands constant over a channel's points (an inference BatchNorm's scale and shift, a
    squeeze-excitation's per-sample gate), which the unpacking reads once per channel row, beside a
    full-size residual: each channel and sample takes its own value."""
    x_shape, w_shape, kwargs, transposed, kernel = CASES[name]
    rng = np.random.default_rng(len(name) + 50)
    x = rng.standard_normal((2,) + x_shape[1:]).astype(np.float32)     # two samples: the gate differs
    w = rng.standard_normal(w_shape).astype(np.float32)
    out_shape = oracle_conv(x, w, transposed, kwargs).shape
    channels = out_shape[1]
    gate = rng.uniform(0.5, 2.0, (2, channels, 1, 1, 1)).astype(np.float32)
    scale, shift = (rng.standard_normal((channels, 1, 1, 1)).astype(np.float32) for _ in range(2))
    residual = rng.standard_normal(out_shape).astype(np.float32)

    def layer(x, w, gate, scale, shift, residual):
        return F.relu(conv(x, w, transposed, kwargs) * gate * scale + shift + residual)

    arrays = (x, w, gate, scale, shift, residual)
    graph = lucid.trace(layer, *(lucid.spec(*a.shape) for a in arrays), name=f"per_channel_{name}")
    fused = fusion.run(graph)
    assert not any(node.op in ("conv", "conv_transpose") for node in fused.nodes), "the epilogue was not fused"
    executable = Executable(memory_planning.run(fused))
    assert kernel in kernel_labels(executable)
    g = oracle_conv(x, w, transposed, kwargs)
    want = np.maximum(g * gate * scale + shift + residual, 0)
    for threads in (1, 2):
        got = executable(*arrays, threads=threads)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(g).max()),
                                   err_msg=f"{name}, {threads} threads")
