"""NaN and infinity as PyTorch does them (docs/guide.md, "NaN and infinity"), eager and compiled alike.

Each case runs the traced graph and its autodiff graph three ways: lucid's interpreter (the eager
reference kernels), the compiled executable, and an independent oracle: PyTorch's own CPU kernels
(skipped when torch is missing; its oneDNN float32 convolutions place NaN differently from its
native kernels in a few cases, so convolutions are compared with oneDNN off) and, where one can be
written, NumPy (tests/oracle.py for convolutions, a loop over the window for max-pool).
Outputs must agree on where NaN, +inf and -inf are, and within rounding elsewhere.
"""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
import oracle
from lucid.ir import ops
from model_helpers import kernel_labels, torch_native_convolutions
from lucid.passes import autodiff, memory_planning
from lucid.runtime.executable import Executable

torch = pytest.importorskip("torch", reason="PyTorch is the oracle of these tests")

SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -2.0, 3.0, -0.25, 1e-30]


# ---------------------------------------------------------------------------------------------
# Helpers


def spec(a: np.ndarray):
    return lucid.spec(*a.shape, dtype=a.dtype.name)


def same_values(got: np.ndarray, want: np.ndarray, what: str, rtol: float = 1e-5) -> None:
    """NaN, +inf and -inf in the same places; finite values within rtol of the largest one."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        np.testing.assert_array_equal(test(got), test(want), err_msg=f"{what}: {name} positions")
    finite = np.isfinite(want)
    scale = float(np.abs(want[finite]).max()) if finite.any() else 0.0
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=rtol * scale + 1e-300, err_msg=what)


def lucid_forward_and_grads(fn, arrays: list, seed: np.ndarray, threads: int = 2) -> dict:
    """{'eager': [y, grads...], 'compiled': [...]} of fn on `arrays` with output gradient `seed`."""
    graph = lucid.trace(fn, *map(spec, arrays), name="nan_case")
    grad = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
    eager = lucid.ir.run(grad, *arrays, seed)
    compiled = Executable(memory_planning.run(grad))(*arrays, seed, threads=threads)
    return {"eager": list(eager), "compiled": list(compiled)}


def torch_forward_and_grads(fn, arrays: list, seed: np.ndarray) -> list:
    leaves = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*leaves)
    y.backward(torch.tensor(seed))
    return [y.detach().numpy()] + [t.grad.numpy() for t in leaves]


def check_against(results: dict, expected: list, names: list, what: str, rtol: float = 1e-5) -> None:
    for mode, outputs in results.items():
        assert len(outputs) == len(expected)
        for name, got, want in zip(names, outputs, expected):
            same_values(got, want, f"{what}: {mode} {name}", rtol)


def seed_like(y_shape: tuple, dtype, rng: np.random.Generator) -> np.ndarray:
    return (rng.integers(1, 8, y_shape) * 0.25).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Elementwise operators


def special_grid(dtype: str) -> np.ndarray:
    """Every special value against every other, in an odd shape: (len(SPECIALS), len(SPECIALS))."""
    values = np.array(SPECIALS, dtype)
    return np.repeat(values[:, None], len(values), axis=1)


UNARY = {
    "relu": (ops.relu, torch.relu),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.1), lambda x: torch.nn.functional.leaky_relu(x, 0.1)),
    # its gradient's mask reads the output for slopes >= 0 and the input for negative ones
    "leaky_relu_flat": (lambda x: ops.leaky_relu(x, 0.0), lambda x: torch.nn.functional.leaky_relu(x, 0.0)),
    "leaky_relu_negative": (lambda x: ops.leaky_relu(x, -0.3), lambda x: torch.nn.functional.leaky_relu(x, -0.3)),
    "clamp": (lambda x: ops.clamp(x, -1.0, 1.0), lambda x: x.clamp(-1.0, 1.0)),
    "clamp_min": (lambda x: ops.clamp(x, min=0.0), lambda x: x.clamp(min=0.0)),
    "clamp_max": (lambda x: ops.clamp(x, max=0.5), lambda x: x.clamp(max=0.5)),
    "clamp_point": (lambda x: ops.clamp(x, 0.5, 0.5), lambda x: x.clamp(0.5, 0.5)),
    "abs": (ops.abs_, torch.abs),
    "sigmoid": (ops.sigmoid, torch.sigmoid),
    "tanh": (ops.tanh, torch.tanh),
    "gelu": (ops.gelu, torch.nn.functional.gelu),
    "exp": (ops.exp, torch.exp),
    "sqrt": (ops.sqrt, torch.sqrt),
    "log": (ops.log, torch.log),
    "cube": (lambda x: ops.pow_scalar(x, 3.0), lambda x: x ** 3.0),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_at_nan_and_infinities(name, dtype):
    """The forward value and the gradient at NaN, +-inf, +-0 and ordinary values, as PyTorch.

    PyTorch computes the oracle in float64: its float32 vector kernels depend on the CPU (torch 2.13's
    GELU of +inf is NaN with AVX-512 and +inf with AVX2, as in float64 and in its scalar code)."""
    ours, theirs = UNARY[name]
    x = np.array(SPECIALS, dtype)[:, None].repeat(3, axis=1)            # (13, 3): odd sizes
    seed = seed_like(x.shape, dtype, np.random.default_rng(1))
    with np.errstate(all="ignore"):
        results = lucid_forward_and_grads(ours, [x], seed)
    expected = torch_forward_and_grads(theirs, [x.astype(np.float64)], seed.astype(np.float64))
    check_against(results, expected, ["y", "dx"], name)


def test_relu_gradient_at_nan_passes_numpy_oracle():
    """A NaN input passes ReLU's gradient (the output is NaN, which is not <= 0); 0 and negatives do not."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.0, -3.0])
    seed = np.arange(1.0, 8.0)
    results = lucid_forward_and_grads(ops.relu, [x], seed)
    for mode, (_, dx) in results.items():
        np.testing.assert_array_equal(dx, [1.0, 2.0, 0.0, 0.0, 0.0, 6.0, 0.0], err_msg=mode)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_at_nan_and_infinities(name, dtype):
    """Every pair of special values: where either is NaN both inputs get the whole gradient, ties
    split it, otherwise the winner takes it (PyTorch's rule)."""
    x = special_grid(dtype)
    y = np.ascontiguousarray(x.T)
    seed = seed_like(x.shape, dtype, np.random.default_rng(2))
    results = lucid_forward_and_grads(getattr(ops, name), [x, y], seed)
    check_against(results, torch_forward_and_grads(getattr(torch, name), [x, y], seed), ["z", "dx", "dy"], name)
    # NumPy oracle of the gradient rule
    loses = np.less if name == "maximum" else np.greater
    with np.errstate(invalid="ignore"):
        dx = np.where(x == y, seed / 2, np.where(loses(x, y), 0.0, seed))
    for mode, outputs in results.items():
        np.testing.assert_array_equal(outputs[1], dx.astype(dtype), err_msg=mode)


# ---------------------------------------------------------------------------------------------
# Max-pool


def max_pool_oracle(x: np.ndarray, gy: np.ndarray, kernel, stride, padding, dilation) -> tuple:
    """(y, dx) by a loop over each window's taps inside the input, in window order: a tap wins if it
    is the first, NaN, or greater than the winner so far; y is the winner's value (NaN if any)."""
    rank = len(kernel)
    y, dx = np.full(gy.shape, -np.inf), np.zeros(x.shape)
    for n, c in np.ndindex(*x.shape[:2]):
        for out in np.ndindex(*gy.shape[2:]):
            best, where, nan = -np.inf, None, False
            for tap in np.ndindex(*kernel):
                at = tuple(o * s - p + t * d for o, s, p, t, d in zip(out, stride, padding, tap, dilation))
                if not all(0 <= i < m for i, m in zip(at, x.shape[2:])):
                    continue
                value = x[(n, c) + at]
                if where is None or np.isnan(value) or value > best:
                    best, where = value, at
                nan = nan or np.isnan(value)
            y[(n, c) + out] = np.nan if nan else best
            if where is not None:
                dx[(n, c) + where] += gy[(n, c) + out]
    assert rank == x.ndim - 2
    return y, dx


POOL_CASES = [   # rank, input shape, kernel, stride, padding, dilation, ceil_mode
    (1, (2, 3, 11), (3,), (2,), (1,), (1,), False),
    (1, (1, 2, 9), (2,), (1,), (1,), (3,), True),
    (2, (2, 2, 7, 5), (3, 2), (2, 1), (1, 1), (1, 2), True),
    (2, (1, 3, 5, 7), (3, 3), (1, 2), (1, 0), (1, 1), False),
    (3, (1, 2, 5, 3, 5), (2, 3, 3), (2, 1, 2), (1, 1, 0), (1, 1, 1), True),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_max_pool_windows_with_nan_and_infinities(case, dtype):
    """Windows of only NaN (the gradient goes to the last), NaN among numbers and infinities (the last
    NaN), all -inf (the first tap inside the input) and ties (the first): forward and gradient, eager
    and compiled, against PyTorch and the loop oracle."""
    rank, shape, kernel, stride, padding, dilation, ceil_mode = POOL_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.choice([np.nan, np.nan, np.inf, -np.inf, -np.inf, 1.0, 1.0, 0.5, -2.0], shape).astype(dtype)
    x.reshape(-1)[: x.size // 4] = np.nan                   # whole windows of NaN
    x.reshape(-1)[x.size // 4: x.size // 2] = -np.inf       # and of -inf

    def ours(t):
        return getattr(F, f"max_pool{rank}d")(t, kernel, stride, padding, dilation, ceil_mode)

    def theirs(t):
        return getattr(torch.nn.functional, f"max_pool{rank}d")(t, kernel, stride, padding, dilation, ceil_mode)

    y_shape = theirs(torch.tensor(x)).shape
    seed = seed_like(tuple(y_shape), dtype, rng)
    results = lucid_forward_and_grads(ours, [x], seed)
    check_against(results, torch_forward_and_grads(theirs, [x], seed), ["y", "dx"], f"max_pool{rank}d")
    check_against(results, list(max_pool_oracle(x, seed, kernel, stride, padding, dilation)), ["y", "dx"],
                  f"max_pool{rank}d vs loop oracle")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_max_pool_all_nan_window_sends_its_gradient_to_the_last_element(rank):
    x = np.full((1, 1) + (3,) * rank, np.nan)
    seed = np.full((1, 1) + (1,) * rank, 5.0)
    results = lucid_forward_and_grads(lambda t: getattr(F, f"max_pool{rank}d")(t, 3), [x], seed)
    for mode, (y, dx) in results.items():
        assert np.isnan(y).all(), mode
        expected = np.zeros(x.shape)
        expected.reshape(-1)[-1] = 5.0
        np.testing.assert_array_equal(dx, expected, err_msg=mode)


# ---------------------------------------------------------------------------------------------
# Convolutions with a weight or an input not finite

CONV_CASES = [   # kind, rank, x shape, w shape, stride, padding, dilation, groups, output_padding, kernels
    ("conv_transpose", 1, (1, 1, 2), (1, 1, 2), 1, 0, 1, 1, 0, "convT_direct"),
    ("conv_transpose", 1, (2, 3, 5), (3, 2, 3), 2, 1, 1, 1, 1, "convT_direct"),
    ("conv_transpose", 2, (1, 4, 5, 7), (4, 3, 3, 3), 3, 1, 2, 2, 0, "convT_direct"),
    ("conv_transpose", 2, (1, 8, 5, 21), (8, 3, 3, 3), 2, 0, 1, 1, 0, "convT_direct_points"),
    ("conv_transpose", 3, (1, 3, 3, 4, 5), (3, 2, 3, 3, 2), 2, 0, 1, 1, 1, "convT_direct"),
    ("conv_transpose", 3, (1, 6, 3, 2, 8), (6, 5, 2, 2, 2), 2, 0, 1, 1, 0, "convT_blocks"),
    ("conv_transpose", 2, (2, 4, 3, 12), (4, 3, 2, 2), 2, 0, 1, 2, 0, "convT_blocks"),
    ("conv_transpose", 2, (1, 32, 6, 7), (32, 32, 4, 4), 2, 1, 1, 1, 0, "wino_conv"),
    ("conv_transpose", 3, (1, 16, 3, 4, 5), (16, 16, 3, 3, 3), 1, 1, 1, 1, 0, "wino_conv"),
    ("conv", 2, (1, 32, 6, 7), (32, 32, 3, 3), 1, 0, 1, 1, 0, "wino_conv"),        # its input gradient
    ("conv", 2, (1, 32, 6, 7), (32, 32, 3, 3), 1, 1, 1, 1, 0, "wino_conv"),
    ("conv", 2, (1, 3, 7, 6), (5, 3, 3, 3), 2, 1, 1, 1, 0, "conv_direct"),
    ("conv", 3, (1, 2, 5, 4, 5), (2, 2, 3, 3, 3), 1, 1, 1, 1, 0, "conv_direct"),
    ("conv", 1, (1, 4, 9), (4, 2, 3), 2, 2, 2, 2, 0, "conv_direct"),
]


def conv_functions(kind: str, rank: int, stride, padding, dilation, groups, output_padding) -> tuple:
    if kind == "conv":
        args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    else:
        args = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    name = f"conv{rank}d" if kind == "conv" else f"conv_transpose{rank}d"
    return (lambda x, w: getattr(F, name)(x, w, **args)), (lambda x, w: getattr(torch.nn.functional, name)(x, w, **args))


def conv_case_arrays(case: int, what: str, dtype: str) -> tuple:
    kind, rank, x_shape, w_shape, *_ = CONV_CASES[case]
    rng = np.random.default_rng(case)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    if what == "weight":
        w.reshape(-1)[rng.choice(w.size, max(1, w.size // 100), replace=False)] = np.inf
        w.reshape(-1)[rng.integers(w.size)] = -np.inf
        w[(0, 0) + (0,) * rank] = np.inf                 # kernel corners: they meet the padding
        w[(-1, -1) + (-1,) * rank] = -np.inf
    else:
        picks = rng.choice(x.size, max(2, x.size // 30), replace=False)
        x.reshape(-1)[picks] = rng.choice([np.nan, np.inf, -np.inf], picks.size)
    return x, w


@pytest.fixture
def winograd_on_small_layers(monkeypatch):
    from lucid.codegen.kernels.conv import winograd

    monkeypatch.setattr(winograd, "MIN_ITEMS_PER_CORE", 0)
    monkeypatch.setattr(winograd, "WEIGHT_TRANSFORM_CYCLES", 0)


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_convolutions_with_values_not_finite(case, winograd_on_small_layers):
    """A conv multiplies its zero padding by the weights (0 * inf is NaN there, as in PyTorch); a
    transposed conv, and so a conv's input gradient, sums only the products that exist: forward and
    every gradient, eager and compiled (with the kernels named in the case), against PyTorch's
    native kernels; a transposed conv's output and a conv's input gradient against the NumPy oracle.
    Each case compiles once and runs with a weight not finite, then with an input not finite."""
    kind, rank, x_shape, w_shape, stride, padding, dilation, groups, output_padding, kernel = CONV_CASES[case]
    dtype = "float64" if case % 3 == 2 else "float32"
    ours, theirs = conv_functions(kind, rank, stride, padding, dilation, groups, output_padding)
    graph = lucid.trace(ours, spec(np.zeros(x_shape, dtype)), spec(np.zeros(w_shape, dtype)), name="nan_conv")
    grad = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
    executable = Executable(memory_planning.run(grad))
    assert kernel in kernel_labels(executable)
    for what in ("weight", "input"):
        check_values_not_finite(case, what, dtype, theirs, grad, executable)


def check_values_not_finite(case: int, what: str, dtype: str, theirs, grad, executable) -> None:
    """Case `case` of CONV_CASES with its `what` not finite: the gradient graph `grad` interpreted
    and compiled (`executable`) against PyTorch, and against the NumPy oracle."""
    kind, rank, _, _, stride, padding, dilation, groups, output_padding, _ = CONV_CASES[case]
    x, w = conv_case_arrays(case, what, dtype)
    with torch_native_convolutions():
        y_shape = tuple(theirs(torch.tensor(x), torch.tensor(w)).shape)
        seed = seed_like(y_shape, dtype, np.random.default_rng(case))
        expected = torch_forward_and_grads(theirs, [x, w], seed)
    with np.errstate(all="ignore"):
        results = {"eager": list(lucid.ir.run(grad, x, w, seed)), "compiled": list(executable(x, w, seed, threads=2))}
    rtol = 1e-4 if dtype == "float32" else 1e-10
    check_against(results, expected, ["y", "dx", "dw"], f"{kind}{rank}d, {what} not finite", rtol)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    with np.errstate(all="ignore"):
        if kind == "conv_transpose":
            want, index = oracle.conv_transpose_nd(x64, w64, None, stride, padding, output_padding, dilation, groups), 0
        else:
            want, index = oracle.conv_nd_vjp(seed.astype(np.float64), x64, w64, None, stride, padding, dilation,
                                             groups)[0], 1
    for mode, outputs in results.items():
        same_values(outputs[index], want, f"{kind}{rank}d {mode} vs the NumPy oracle, {what} not finite", rtol)


def test_transposed_conv_with_an_infinite_weight_and_a_fused_epilogue():
    """The exact sums go through the bias and the fused epilogue like the kernels' results."""
    from lucid.passes import dead_code, fusion

    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 6, 5, 9)).astype("float32"), rng.standard_normal((6, 4, 3, 3)).astype("float32")
    b, r = rng.standard_normal(4).astype("float32"), rng.standard_normal((1, 4, 10, 18)).astype("float32")
    w[2, 1, 0, 2] = np.inf

    def fn(x, w, b, r):
        return ops.sigmoid(ops.relu(F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)) + r)

    graph = lucid.trace(fn, *map(spec, (x, w, b, r)), name="nan_convT_epilogue")
    fused = dead_code.run(fusion.run(graph))
    assert [n.op for n in fused.nodes if not n.is_constant] == ["fused"]
    got = Executable(memory_planning.run(fused))(x, w, b, r, threads=2)[0]
    with torch_native_convolutions():
        want = torch.sigmoid(torch.relu(torch.nn.functional.conv_transpose2d(
            *map(torch.tensor, (x, w, b)), stride=2, padding=1, output_padding=1)) + torch.tensor(r)).numpy()
    same_values(got, want, "fused conv_transpose + bias + relu + add + sigmoid")
    same_values(lucid.ir.run(graph, x, w, b, r), want, "eager")
    assert np.isfinite(want).any() and (want == 1.0).any()
