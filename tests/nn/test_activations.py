"""The activations of lucid.nn (ELU, SELU, CELU, SiLU, Mish, Softplus, Hardtanh, ReLU6, Hardswish,
Hardsigmoid, PReLU), eager and compiled, against tests/activation_oracle.py and PyTorch.

- Forward, eager, float32 and float64, on odd sizes and special values (0, -0, tiny, the kinks and
  thresholds, large |x|, NaN) against the independent oracle.
- Gradients by central finite differences in float64, away from the kinks.
- Against PyTorch where installed (skipped without it): forward and input gradient on the same
  special values, kinks and NaN included (float32 within ~1e-6 relative, float64 to rounding), the
  modules' constructor signatures, PReLU's weight gradient with 1 and C parameters.
- Compiled: each activation in an elementwise chain (one fused node each) against the oracle, and
  for each activation a Conv3d + activation model whose activation lands in the conv's epilogue,
  inference and a `lucid.compile` training step against eager; an exported library of them all.
- Softmax / LogSoftmax over every dim of a 5-D input, eager and compiled, against PyTorch; the
  implicit dim (dim=None) and `dtype=` as PyTorch.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import pytest

import activation_oracle as oracle
import lucid
import lucid.nn as nn
import lucid.runtime
import lucid.nn.functional as F
from lucid.passes import dead_code, fusion, memory_planning
from lucid.runtime.executable import Executable

SPECIAL = np.array([0.0, -0.0, 1e-7, -1e-7, 1e-3, -1e-3, 0.5, -0.5, 1.0, -1.0, 2.5, -2.5, 3.0, -3.0, 5.0, 6.0,
                    -6.0, 19.5, 20.0, 20.5, 30.0, -30.0, 88.0, -88.0, 100.0, -100.0, 1e4, -1e4, np.nan])
RNG = np.random.default_rng(1818)


@dataclass
class Act:
    """An activation called the same way on lucid and on torch (`nn`/`F` are either's modules)."""

    call: object          # (F, x) -> y
    module: object        # (nn) -> layer
    oracle: object        # x -> y (float64)
    kinks: tuple = ()     # where the derivative jumps: finite differences keep away


ACTIVATIONS = {
    "elu": Act(lambda F, x: F.elu(x), lambda nn: nn.ELU(), oracle.elu, (0.0,)),
    "elu alpha 0.7": Act(lambda F, x: F.elu(x, alpha=0.7), lambda nn: nn.ELU(alpha=0.7, inplace=True),
                         lambda x: oracle.elu(x, 0.7), (0.0,)),
    "selu": Act(lambda F, x: F.selu(x), lambda nn: nn.SELU(inplace=True), oracle.selu, (0.0,)),
    "celu alpha 1.5": Act(lambda F, x: F.celu(x, alpha=1.5), lambda nn: nn.CELU(1.5),
                          lambda x: oracle.celu(x, 1.5), (0.0,)),
    "silu": Act(lambda F, x: F.silu(x), lambda nn: nn.SiLU(), oracle.silu),
    "mish": Act(lambda F, x: F.mish(x), lambda nn: nn.Mish(), oracle.mish),
    "softplus": Act(lambda F, x: F.softplus(x), lambda nn: nn.Softplus(), oracle.softplus, (20.0,)),
    "softplus beta 2 threshold 5": Act(lambda F, x: F.softplus(x, beta=2.0, threshold=5.0),
                                       lambda nn: nn.Softplus(beta=2.0, threshold=5.0),
                                       lambda x: oracle.softplus(x, 2.0, 5.0), (2.5,)),
    "hardtanh": Act(lambda F, x: F.hardtanh(x), lambda nn: nn.Hardtanh(), oracle.hardtanh, (-1.0, 1.0)),
    "hardtanh -2 0.5": Act(lambda F, x: F.hardtanh(x, -2.0, 0.5), lambda nn: nn.Hardtanh(-2.0, 0.5),
                           lambda x: oracle.hardtanh(x, -2.0, 0.5), (-2.0, 0.5)),
    "relu6": Act(lambda F, x: F.relu6(x), lambda nn: nn.ReLU6(inplace=True), oracle.relu6, (0.0, 6.0)),
    "hardswish": Act(lambda F, x: F.hardswish(x), lambda nn: nn.Hardswish(), oracle.hardswish, (-3.0, 3.0)),
    "hardsigmoid": Act(lambda F, x: F.hardsigmoid(x), lambda nn: nn.Hardsigmoid(), oracle.hardsigmoid, (-3.0, 3.0)),
}
NAMES = list(ACTIVATIONS)
TOL = {"float32": dict(rtol=2e-6, atol=1e-35), "float64": dict(rtol=1e-12, atol=1e-300)}


def inputs(dtype: str) -> np.ndarray:
    """The special values then random ones on an odd-sized (3, 5, 7) block."""
    x = np.concatenate([SPECIAL, RNG.standard_normal(3 * 5 * 7 - SPECIAL.size) * 4.0]).reshape(3, 5, 7)
    return x.astype(dtype)


def close(actual, expected, dtype: str, what: str, **override):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               equal_nan=True, err_msg=what, **{**TOL[dtype], **override})


def T(array, requires_grad=False):
    """A lucid tensor of `array`'s dtype."""
    array = np.asarray(array)
    return lucid.Tensor(array, dtype=array.dtype.name, requires_grad=requires_grad)


def torch_or_skip():
    return pytest.importorskip("torch")


# ==============================================================================================
# Eager


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_the_oracle(name, dtype):
    act, x = ACTIVATIONS[name], inputs(dtype)
    y = act.call(F, T(x))
    assert y.dtype.name == dtype and y.shape == x.shape
    close(y.numpy(), act.oracle(x), dtype, name)
    close(act.module(nn)(T(x)).numpy(), act.oracle(x), dtype, f"{name} module")


def away_from(kinks: tuple, shape) -> np.ndarray:
    """Random float64 values at least 0.05 from every kink."""
    x = RNG.standard_normal(shape) * 3.0
    for k in kinks:
        near = np.abs(x - k) < 0.05
        x[near] = k + np.where(x[near] >= k, 0.1, -0.1)
    return x


def finite_difference_gradient(fn, x: np.ndarray, weights: np.ndarray, eps=1e-6) -> np.ndarray:
    grad = np.empty_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = ((fn(x + step) * weights).sum() - (fn(x - step) * weights).sum()) / (2 * eps)
    return grad


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name):
    act = ACTIVATIONS[name]
    x, weights = away_from(act.kinks, (3, 5)), RNG.standard_normal((3, 5))
    t = T(x, requires_grad=True)
    (act.call(F, t) * T(weights)).sum().backward()
    expected = finite_difference_gradient(lambda v: act.call(F, T(v)).numpy(), x, weights)
    np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_and_gradient_match_torch(name, dtype):
    """Special values include every kink and threshold: the gradient there is PyTorch's too."""
    torch = torch_or_skip()
    act, x = ACTIVATIONS[name], inputs(dtype)
    weights = RNG.standard_normal(x.shape).astype(dtype)
    t = T(x, requires_grad=True)
    y = act.module(nn)(t)
    (y * T(weights)).sum().backward()
    tt = torch.tensor(x, requires_grad=True)
    ty = act.module(torch.nn)(tt.clone())          # the clone: PyTorch's inplace=True writes its input
    (ty * torch.tensor(weights)).sum().backward()
    close(y.numpy(), ty.detach().numpy(), dtype, f"{name} forward", rtol=1e-6 if dtype == "float32" else 1e-12)
    # PyTorch's gradients are less exact than the forward: ELU's comes from its rounded output (an
    # absolute error of a few ulps of the incoming gradient), hardsigmoid's float64 one uses a float32
    # 1/6; the oracle and finite-difference tests pin lucid's own accuracy. At NaN inputs PyTorch's
    # gradient differs between its scalar and vector loops: not compared.
    number = ~np.isnan(x)
    ulp = np.finfo(dtype).eps * np.abs(weights).max()
    close(t.grad.numpy()[number], tt.grad.numpy()[number], dtype, f"{name} gradient",
          rtol=1e-6 if dtype == "float32" else 1e-7, atol=4 * ulp)


def test_inplace_flags_leave_the_input_alone_and_return_the_result():
    x = lucid.Tensor(np.array([-2.0, 0.5, 7.0]))
    for layer in (nn.ELU(inplace=True), nn.ReLU6(inplace=True), nn.SiLU(inplace=True), nn.ReLU(inplace=True)):
        y = layer(x)
        np.testing.assert_array_equal(x.numpy(), [-2.0, 0.5, 7.0])
        assert not np.array_equal(y.numpy(), x.numpy())
    np.testing.assert_array_equal(F.hardtanh(x, inplace=True).numpy(), [-1.0, 0.5, 1.0])
    np.testing.assert_array_equal(F.relu(x, inplace=True).numpy(), [0.0, 0.5, 7.0])


LAYERS = ["ELU", "SELU", "CELU", "SiLU", "Mish", "Softplus", "Hardtanh", "ReLU6", "Hardswish", "Hardsigmoid",
          "PReLU", "ReLU", "Softmax", "LogSoftmax"]
FUNCTIONS = ["elu", "selu", "celu", "silu", "mish", "softplus", "hardtanh", "relu6", "hardswish", "hardsigmoid",
             "prelu", "relu", "softmax", "log_softmax"]


def test_layers_and_functions_have_pytorch_signatures():
    torch = torch_or_skip()
    for name in LAYERS:
        ours, theirs = inspect.signature(getattr(nn, name)), inspect.signature(getattr(torch.nn, name))
        assert list(ours.parameters) == [p for p in theirs.parameters if p not in ("min_value", "max_value")], name
        assert all(p.default == theirs.parameters[n].default for n, p in ours.parameters.items()), name
        assert getattr(nn.modules, name) is getattr(nn, name)
    assert repr(nn.ELU(0.5, inplace=True)) == repr(torch.nn.ELU(0.5, inplace=True))
    assert repr(nn.Hardtanh(-2, 2)) == repr(torch.nn.Hardtanh(-2, 2))
    assert repr(nn.ReLU6(inplace=True)) == repr(torch.nn.ReLU6(inplace=True))
    assert repr(nn.ReLU(inplace=True)) == repr(torch.nn.ReLU(inplace=True))
    assert repr(nn.PReLU(4)) == repr(torch.nn.PReLU(4))
    for name in FUNCTIONS:
        theirs = getattr(torch.nn.functional, name)
        if inspect.isbuiltin(theirs):            # a C function (softplus): no signature to read
            continue
        assert list(inspect.signature(getattr(F, name)).parameters) == list(inspect.signature(theirs).parameters), name


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        F.celu(lucid.Tensor([1.0]), alpha=0.0)
    with pytest.raises(ValueError, match="max_val"):
        nn.Hardtanh(1.0, -1.0)
    with pytest.raises(lucid.ShapeError, match="prelu: expected a weight of 1 value or 3"):
        F.prelu(lucid.Tensor(np.zeros((2, 3, 4))), lucid.Tensor(np.ones(2)))
    with pytest.raises(lucid.DTypeError, match="elu"):
        F.elu(lucid.Tensor([1, 2]))


# ==============================================================================================
# PReLU


@pytest.mark.parametrize("shape, channels", [((2, 3, 3, 4, 5), 1), ((2, 3, 3, 4, 5), 3), ((2, 3), 1), ((2, 3), 3),
                                             ((5,), 1)], ids=["NCDHW-1", "NCDHW-3", "NC-1", "NC-3", "1-D"])
def test_prelu_forward_and_weight_gradient(shape, channels):
    x = RNG.standard_normal(shape)
    x.flat[:4] = [0.0, -0.0, np.inf, -np.inf]
    layer = nn.PReLU(channels, init=0.1, dtype=lucid.float64)
    layer.weight.data = RNG.uniform(-0.5, 0.5, channels)
    w = layer.weight.numpy().copy()
    weights = RNG.standard_normal(shape)
    t = T(x, requires_grad=True)
    y = layer(t)
    (y * T(weights)).sum().backward()
    close(y.numpy(), oracle.prelu(x, w), "float64", "forward")
    # d/dw of sum(G * y): G * x summed over every element on the negative side of its channel
    negative = np.where(x > 0, 0.0, weights * x)
    expected_w = negative.sum() if channels == 1 else negative.sum(axis=tuple(i for i in range(x.ndim) if i != 1))
    close(layer.weight.grad.numpy(), np.reshape(expected_w, (channels,)), "float64", "weight gradient")
    slope = w[0] if channels == 1 else w.reshape((-1,) + (1,) * (x.ndim - 2))
    close(t.grad.numpy(), np.where(x > 0, weights, weights * slope), "float64", "input gradient")


@pytest.mark.parametrize("channels", [1, 4])
def test_prelu_matches_torch(channels):
    torch = torch_or_skip()
    x = RNG.standard_normal((2, 4, 3, 2, 3)).astype(np.float32)
    x.flat[:3] = [0.0, np.nan, -5.0]
    ours, theirs = nn.PReLU(channels), torch.nn.PReLU(channels)
    assert ours.weight.shape == tuple(theirs.weight.shape)
    np.testing.assert_array_equal(ours.weight.numpy(), theirs.weight.detach().numpy())
    w = RNG.uniform(-0.5, 0.5, channels).astype(np.float32)
    ours.weight.data = w
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(w))
    weights = RNG.standard_normal(x.shape).astype(np.float32)
    t, tt = T(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = ours(t), theirs(tt)
    (y * T(weights)).sum().backward()
    (ty * torch.tensor(weights)).sum().backward()
    close(y.numpy(), ty.detach().numpy(), "float32", "forward")
    close(t.grad.numpy(), tt.grad.numpy(), "float32", "input gradient")
    close(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), "float32", "weight gradient", rtol=1e-5)


# ==============================================================================================
# Compiled


def compiled(graph):
    """The graph fused (what codegen runs) and its executable."""
    fused = dead_code.run(fusion.run(graph))
    return fused, Executable(memory_planning.run(fused))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_each_activation_in_an_elementwise_chain_is_one_fused_loop(dtype):
    """act(2x) * 0.5 + x for every activation, in one graph: one fused node each, the oracle's values."""
    x = inputs(dtype)
    acts = list(ACTIVATIONS.values())

    def chains(v):
        return tuple(act.call(F, v * 2.0) * 0.5 + v for act in acts)

    graph = lucid.trace(chains, lucid.spec(*x.shape, dtype=dtype), name=f"activation_chains_{dtype}")
    fused, run = compiled(graph)
    assert [n.op for n in fused.nodes if not n.is_constant] == ["fused"] * len(acts), str(fused)
    for name, act, got, reference in zip(NAMES, acts, run(x), lucid.ir.run(graph, x)):
        close(got, act.oracle(2.0 * x) * 0.5 + x, dtype, f"{name} fused chain vs the oracle",
              rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-12)
        close(got, reference, dtype, f"{name} fused chain vs the reference kernels",
              rtol=1e-6 if dtype == "float32" else 1e-13)


class ConvAct(nn.Module):
    """Conv3d then an activation: the activation belongs in the convolution's epilogue."""

    def __init__(self, activation):
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 3, padding=1)
        self.act = activation

    def forward(self, x):
        return self.act(self.conv(x))


LAYER_CASES = {name: act.module for name, act in ACTIVATIONS.items()}
LAYER_CASES["prelu 3"] = lambda nn: nn.PReLU(3, init=0.2)
LAYER_CASES["prelu 1"] = lambda nn: nn.PReLU()


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_conv3d_activation_fuses_into_the_epilogue_and_trains_compiled(name):
    lucid.manual_seed(18)
    model = ConvAct(LAYER_CASES[name](nn))
    if name.startswith("prelu"):
        model.act.weight.data = np.linspace(-0.3, 0.4, model.act.weight.shape[0]).astype(np.float32)
    x = (RNG.standard_normal((1, 2, 3, 4, 5)) * 2.0).astype(np.float32)
    # inference: one fused node whose body starts with the convolution
    with lucid.no_grad():
        graph = lucid.trace(model, lucid.spec(*x.shape))
        eager = model(T(x)).numpy()
    fused, run = compiled(graph)
    (node,) = [n for n in fused.nodes if n.op == "fused"]
    assert node.attrs["body"].nodes[0].op == "conv" and not any(n.op == "conv" for n in fused.nodes), str(fused)
    close(run(x)[0], eager, "float32", f"{name} fused inference", rtol=1e-5, atol=1e-6)
    # a compiled training step: output and every gradient as the eager step's
    step = lucid.compile(model)
    weights = RNG.standard_normal(eager.shape).astype(np.float32)
    results = []
    for forward in (step, model):
        model.zero_grad()
        t = T(x, requires_grad=True)
        y = forward(t)
        (y * T(weights)).sum().backward()
        results.append([y.numpy(), t.grad.numpy()] + [p.grad.numpy() for p in model.parameters()])
    for k, (c, e) in enumerate(zip(*results)):
        close(c, e, "float32", f"{name} compiled training result {k}", rtol=1e-4, atol=1e-5)


# ==============================================================================================
# Softmax and LogSoftmax over any dim


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -4])
@pytest.mark.parametrize("layer", ["Softmax", "LogSoftmax"])
def test_softmax_over_any_dim_matches_torch_eager_and_compiled(layer, dim):
    torch = torch_or_skip()
    x = (RNG.standard_normal((2, 3, 2, 3, 5)) * 3.0).astype(np.float32)
    x.flat[0] = 80.0
    weights = RNG.standard_normal(x.shape).astype(np.float32)
    ours, theirs = getattr(nn, layer)(dim=dim), getattr(torch.nn, layer)(dim=dim)
    t, tt = T(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = ours(t), theirs(tt)
    (y * T(weights)).sum().backward()
    (ty * torch.tensor(weights)).sum().backward()
    close(y.numpy(), ty.detach().numpy(), "float32", f"{layer}({dim}) forward", rtol=1e-5, atol=1e-7)
    close(t.grad.numpy(), tt.grad.numpy(), "float32", f"{layer}({dim}) gradient", rtol=1e-5, atol=1e-6)
    step = lucid.compile(ours)
    tc = T(x, requires_grad=True)
    yc = step(tc)
    (yc * T(weights)).sum().backward()
    close(yc.numpy(), y.numpy(), "float32", f"{layer}({dim}) compiled forward", rtol=1e-5, atol=1e-7)
    close(tc.grad.numpy(), t.grad.numpy(), "float32", f"{layer}({dim}) compiled gradient", rtol=1e-5, atol=1e-6)


def test_softmax_without_dim_and_with_dtype_as_torch():
    torch = torch_or_skip()
    for shape in [(4,), (2, 3), (2, 3, 4), (2, 3, 2, 2)]:
        x = RNG.standard_normal(shape).astype(np.float32)
        with pytest.warns(UserWarning, match="implicit dimension"):
            ours = F.softmax(T(x)).numpy()
        with pytest.warns(UserWarning):
            theirs = torch.nn.functional.softmax(torch.tensor(x)).numpy()
        close(ours, theirs, "float32", f"implicit dim of {shape}")
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    y = F.log_softmax(T(x), dim=1, dtype=lucid.float64)
    assert y.dtype == lucid.float64
    close(y.numpy(), torch.nn.functional.log_softmax(torch.tensor(x), dim=1, dtype=torch.float64).numpy(), "float64",
          "log_softmax dtype float64")


def test_exported_library_runs_the_activations(tmp_path):
    """The C-ABI library links the C math functions the scalar rules call (expm1, log1p, tanh)."""
    lucid.manual_seed(19)
    model = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.SELU(), nn.Conv3d(3, 3, 1), nn.PReLU(3),
                          nn.Conv3d(3, 3, 1), nn.Mish(), nn.Softplus(beta=2.0), nn.SiLU(), nn.Hardswish(),
                          nn.CELU(0.5), nn.ReLU6(), nn.Hardsigmoid())
    x = (RNG.standard_normal((1, 2, 3, 4, 5)) * 2.0).astype(np.float32)
    files = lucid.export(model, lucid.spec(*x.shape), path=tmp_path / "activations.so")
    got = lucid.runtime.load(files.library)(x)
    with lucid.no_grad():
        close(got, model(T(x)).numpy(), "float32", "exported library vs eager", rtol=1e-5, atol=1e-6)
