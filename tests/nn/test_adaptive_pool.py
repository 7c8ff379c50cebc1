"""Adaptive average and max pooling in 1-3-D: values against a NumPy oracle of PyTorch's windows
(cell i of an axis of n pooled to m covers [floor(i*n/m), ceil((i+1)*n/m))), gradients against finite
differences, PyTorch when installed, the compiled graph's shape and a compiled training step."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
from lucid import ShapeError

F64 = lucid.float64
KINDS = {"avg": np.mean, "max": np.max}

# (kind, input shape, output_size): output 1, divisible, non-divisible, larger than the input, None
CASES = [
    ("avg", (2, 3, 4, 6, 5), 1),
    ("max", (2, 3, 4, 6, 5), 1),
    ("avg", (1, 2, 4, 6, 8), (2, 3, 4)),
    ("max", (1, 2, 4, 6, 8), (2, 3, 4)),
    ("avg", (1, 2, 5, 7, 6), (3, None, 4)),
    ("max", (1, 2, 5, 7, 6), (3, None, 4)),
    ("avg", (2, 3, 7), 5),
    ("max", (2, 3, 7), 3),
    ("avg", (3, 3), 5),                       # unbatched 1-D, more cells than inputs
    ("max", (2, 5, 9), (4, 2)),               # unbatched 2-D
    ("avg", (1, 1, 6, 5), (4, 5)),
]
IDS = [f"{k}-{'x'.join(map(str, s))}-{o}" for k, s, o in CASES]


def rank_of(shape: tuple, output_size) -> int:
    return len(output_size) if isinstance(output_size, tuple) else (len(shape) - 2 if len(shape) > 2 else 1)


def oracle(kind: str, x: np.ndarray, output_size, rank: int) -> np.ndarray:
    in_sp = x.shape[-rank:]
    sizes = output_size if isinstance(output_size, tuple) else (output_size,) * rank
    out_sp = tuple(n if m is None else m for n, m in zip(in_sp, sizes))
    y = np.empty(x.shape[:-rank] + out_sp)
    for cell in itertools.product(*(range(m) for m in out_sp)):
        window = tuple(slice(i * n // m, -(-(i + 1) * n // m)) for i, n, m in zip(cell, in_sp, out_sp))
        y[(Ellipsis,) + cell] = KINDS[kind](x[(Ellipsis,) + window], axis=tuple(range(-rank, 0)))
    return y


def functional(kind: str, rank: int):
    return getattr(F, f"adaptive_{kind}_pool{rank}d")


def module(kind: str, rank: int, output_size):
    return getattr(nn, f"Adaptive{kind.capitalize()}Pool{rank}d")(output_size)


def sample(shape: tuple, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("kind,shape,output_size", CASES, ids=IDS)
def test_module_and_function_match_the_numpy_oracle(kind, shape, output_size):
    rank = rank_of(shape, output_size)
    x = sample(shape)
    expected = oracle(kind, x, output_size, rank)
    np.testing.assert_allclose(module(kind, rank, output_size)(lucid.tensor(x, dtype=F64)).numpy(), expected,
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(functional(kind, rank)(lucid.tensor(x, dtype=F64), output_size).numpy(), expected,
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind,shape,output_size", CASES, ids=IDS)
def test_gradient_matches_finite_differences(kind, shape, output_size):
    rank = rank_of(shape, output_size)
    x = sample(shape, 1)
    seed = sample(oracle(kind, x, output_size, rank).shape, 2)
    xt = lucid.tensor(x, dtype=F64, requires_grad=True)
    (functional(kind, rank)(xt, output_size) * lucid.tensor(seed, dtype=F64)).sum().backward()
    expected = np.zeros_like(x)
    step = 1e-6
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += step
        down[i] -= step
        expected[i] = np.sum(seed * (oracle(kind, up, output_size, rank) - oracle(kind, down, output_size, rank))) / (2 * step)
    np.testing.assert_allclose(xt.grad.numpy(), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind,shape,output_size", CASES, ids=IDS)
def test_matches_pytorch(kind, shape, output_size):
    torch = pytest.importorskip("torch")
    rank = rank_of(shape, output_size)
    x = sample(shape, 3)
    xt = lucid.tensor(x, dtype=F64, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    y = module(kind, rank, output_size)(xt)
    ty = getattr(torch.nn, f"Adaptive{kind.capitalize()}Pool{rank}d")(output_size)(tx)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    seed = sample(y.shape, 4)
    (y * lucid.tensor(seed, dtype=F64)).sum().backward()
    (ty * torch.tensor(seed)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_common_cases_trace_to_one_operator():
    ops = lambda m, shape: [node.op for node in lucid.trace(m, lucid.spec(*shape)).nodes]
    assert ops(nn.AdaptiveAvgPool3d(1), (2, 3, 4, 4, 4)) == ["mean"]
    assert ops(nn.AdaptiveMaxPool2d((1, 1)), (2, 3, 5, 7)) == ["max"]
    assert ops(nn.AdaptiveAvgPool3d((2, 2, 4)), (2, 3, 4, 6, 8)) == ["avg_pool"]
    assert ops(nn.AdaptiveMaxPool1d(2), (2, 3, 6)) == ["max_pool"]
    # a non-divisible axis: one slice (+ reduction when wider than 1) per cell, one concat
    assert ops(nn.AdaptiveAvgPool1d(2), (1, 1, 5)) == ["slice", "mean", "slice", "mean", "concat"]


@pytest.mark.parametrize("kind,output_size", [("avg", 1), ("avg", (2, 3, 2)), ("max", (3, 1, 2))])
def test_compiled_training_step_gradients_equal_eager(kind, output_size):
    lucid.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), module(kind, 3, output_size), nn.Flatten(),
                          nn.LazyLinear(2))
    x = lucid.tensor(sample((2, 2, 5, 6, 4), 5), dtype=lucid.float32)
    model(x)
    loss = lambda inp: (model(inp) ** 2).mean()
    results = []
    for fn in (lucid.compile(loss), loss):
        model.zero_grad()
        value = fn(x)
        value.backward()
        results.append((value.numpy(), [p.grad.numpy().copy() for p in model.parameters()]))
    (compiled, compiled_grads), (eager, eager_grads) = results
    np.testing.assert_allclose(compiled, eager, rtol=1e-5)
    for c, e in zip(compiled_grads, eager_grads):
        np.testing.assert_allclose(c, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("make,x_shape,words", [
    (lambda: nn.AdaptiveAvgPool2d((2, 3, 4)), None, "output_size"),
    (lambda: nn.AdaptiveMaxPool1d(0), None, "output_size"),
    (lambda: nn.AdaptiveAvgPool3d("1"), None, "output_size"),
    (lambda: nn.AdaptiveMaxPool3d(1, return_indices=True), None, "return_indices"),
    (lambda: nn.AdaptiveAvgPool3d(1), (2, 3), r"4-D \(unbatched\) or 5-D"),
])
def test_bad_arguments_raise_clear_errors(make, x_shape, words):
    with pytest.raises(ShapeError, match=words):
        layer = make()
        layer(lucid.zeros(*x_shape))
    with pytest.raises(ShapeError, match="return_indices"):
        F.adaptive_max_pool2d(lucid.zeros(1, 2, 4, 4), 2, return_indices=True)


def test_repr_matches_pytorch():
    assert repr(nn.AdaptiveAvgPool3d(1)) == "AdaptiveAvgPool3d(output_size=1)"
    assert repr(nn.AdaptiveMaxPool2d((None, 3))) == "AdaptiveMaxPool2d(output_size=(None, 3))"
