"""Forward correctness of every lucid operator against independent references.

- Elementwise maps, reductions, shape operators and matmul: plain NumPy expressions written here.
- Convolutions: a direct-loop NumPy oracle (a few configurations; tests/nn covers many more).
- Pooling: a direct-loop NumPy oracle (one Python loop step per output position and kernel tap),
  over 90 random max/avg configurations in 1-D/2-D/3-D, forward and input gradient, plus the
  max_pool_grad / avg_pool_grad operators themselves.
- When PyTorch is installed (tests marked by `torch` below, each doing `pytest.importorskip`):
  pools (forward and input gradients), gelu, softmax, log_softmax, batch_norm (training and eval,
  running statistics), mse_loss, cross_entropy, nll_loss and F.pad. Nothing else needs torch.
- Shape rules: bad inputs raise lucid.ShapeError / lucid.DTypeError (ValueError / TypeError) whose
  message names the operator and the offending values.
"""
from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
from lucid.ir import ops

F32, F64 = lucid.float32, lucid.float64


def T(array, dtype=None, requires_grad=False):
    return lucid.Tensor(array, dtype=dtype, requires_grad=requires_grad)


def rng(seed):
    return np.random.default_rng(seed)


def close(actual, expected, dtype=np.float64, **kw):
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-6, atol=2e-6)
    tol.update(kw)
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), **tol)


def _torch():
    return pytest.importorskip("torch")


# ==============================================================================================
# Elementwise unary maps


_erf_ref = np.vectorize(math.erf, otypes=[np.float64])

UNARY = {
    # name: (lucid call, reference, input generator)
    "neg": (ops.neg, lambda x: -x, lambda r, s: r.standard_normal(s)),
    "abs": (ops.abs_, lambda x: np.where(x < 0, -x, x), lambda r, s: r.standard_normal(s)),
    "exp": (ops.exp, np.exp, lambda r, s: r.standard_normal(s) * 3),
    "log": (ops.log, np.log, lambda r, s: r.uniform(0.01, 10, s)),
    "sqrt": (ops.sqrt, lambda x: x ** 0.5, lambda r, s: r.uniform(0, 10, s)),
    "erf": (ops.erf, _erf_ref, lambda r, s: r.standard_normal(s) * 2),
    "tanh": (ops.tanh, lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1), lambda r, s: r.standard_normal(s) * 2),
    "sigmoid": (ops.sigmoid, lambda x: 1 / (1 + np.exp(-x)), lambda r, s: r.standard_normal(s) * 4),
    "relu": (ops.relu, lambda x: x * (x > 0), lambda r, s: r.standard_normal(s)),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x), lambda r, s: r.standard_normal(s)),
    "gelu-none": (lambda x: ops.gelu(x), lambda x: 0.5 * x * (1 + _erf_ref(x / np.sqrt(2))), lambda r, s: r.standard_normal(s) * 2),
    "gelu-tanh": (lambda x: ops.gelu(x, "tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
                  lambda r, s: r.standard_normal(s) * 2),
    "pow_scalar-3": (lambda x: ops.pow_scalar(x, 3), lambda x: x * x * x, lambda r, s: r.standard_normal(s)),
    "pow_scalar-0.5": (lambda x: ops.pow_scalar(x, 0.5), np.sqrt, lambda r, s: r.uniform(0, 4, s)),
    "pow_scalar--2": (lambda x: x ** -2, lambda x: 1 / (x * x), lambda r, s: r.uniform(0.5, 3, s)),
    "clamp": (lambda x: ops.clamp(x, -0.5, 0.8), lambda x: np.where(x < -0.5, -0.5, np.where(x > 0.8, 0.8, x)),
              lambda r, s: r.standard_normal(s)),
    "clamp-min": (lambda x: x.clamp(min=0.2), lambda x: np.where(x < 0.2, 0.2, x), lambda r, s: r.standard_normal(s)),
    "clamp-max": (lambda x: ops.clamp(x, max=-0.1), lambda x: np.where(x > -0.1, -0.1, x), lambda r, s: r.standard_normal(s)),
    "sign": (ops.sign, lambda x: (x > 0).astype(np.float64) - (x < 0), lambda r, s: r.standard_normal(s)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_forward(name, dtype):
    fn, ref, gen = UNARY[name]
    x = gen(rng(zlib.crc32(name.encode())), (3, 4, 5)).astype(dtype)
    y = fn(T(x, dtype=dtype))
    assert y.shape == x.shape and y.dtype == dtype
    close(y.data, ref(x.astype(np.float64)), dtype)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_unary_special_values():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    s = ops.sigmoid(T(x)).data
    assert np.all(np.isfinite(s))
    close(s, [0.0, math.exp(-50.0), 0.5, 1.0, 1.0], np.float32, atol=1e-7)
    close(ops.tanh(T(x)).data, [-1, -1, 0, 1, 1], np.float32)
    assert ops.log(T([0.0])).data[0] == -np.inf
    assert np.isnan(ops.sqrt(T([-1.0])).data[0])
    close(ops.relu(T([-0.0, 0.0, 2.0])).data, [0.0, 0.0, 2.0], np.float32)
    close(ops.gelu(T([-30.0, 30.0])).data, [0.0, 30.0], np.float32)
    close(ops.gelu(T([-30.0, 30.0]), "tanh").data, [0.0, 30.0], np.float32)


@pytest.mark.parametrize("name, fn, expected", [
    ("neg", ops.neg, [1, -2, 3]),
    ("abs", ops.abs_, [1, 2, 3]),
    ("relu", ops.relu, [0, 2, 0]),
    ("sign", ops.sign, [-1, 1, -1]),
])
def test_integer_unary_keeps_int64(name, fn, expected):
    y = fn(T([-1, 2, -3]))
    assert y.dtype == lucid.int64, f"{name}: int64 input gave {y.dtype}"
    np.testing.assert_array_equal(y.data, expected)


def test_clamp_of_integers_with_float_bounds_promotes_like_pytorch():
    # torch.clamp(torch.tensor([1, 2, 3]), min=1.5) -> tensor([1.5, 2., 3.]) (float32).
    y = ops.clamp(T([1, 2, 3]), min=1.5)
    assert y.dtype == F32, f"clamp(int64, min=1.5) gave dtype {y.dtype}"
    np.testing.assert_array_equal(y.data, [1.5, 2.0, 3.0])


def test_clamp_of_integers_with_integer_bounds_stays_int64():
    y = T([-3, 0, 5, 9]).clamp(0, 6)
    np.testing.assert_array_equal(y.data, [0, 0, 5, 6])


# ==============================================================================================
# Broadcasting binary maps and comparisons


BINARY = {
    "add": (ops.add, lambda a, b: a + b),
    "sub": (ops.sub, lambda a, b: a - b),
    "mul": (ops.mul, lambda a, b: a * b),
    "div": (ops.div, lambda a, b: a / b),
    "maximum": (ops.maximum, lambda a, b: np.where(a >= b, a, b)),
    "minimum": (ops.minimum, lambda a, b: np.where(a <= b, a, b)),
    "eq": (ops.eq, lambda a, b: a == b),
    "ne": (ops.ne, lambda a, b: a != b),
    "lt": (ops.lt, lambda a, b: a < b),
    "le": (ops.le, lambda a, b: a <= b),
    "gt": (ops.gt, lambda a, b: a > b),
    "ge": (ops.ge, lambda a, b: a >= b),
}

SHAPE_PAIRS = [((2, 3), (2, 3)), ((2, 3, 4), (3, 1)), ((1, 3, 1), (2, 1, 4)), ((4,), ()), ((), (2, 2)), ((5, 1), (1,))]


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_forward_with_broadcasting(name, shapes):
    fn, ref = BINARY[name]
    r = rng(len(name) * 31 + len(shapes[0]))
    # Few distinct values so that comparisons and maximum/minimum see ties.
    a = r.integers(-2, 3, shapes[0]).astype(np.float64) / 2
    b = r.integers(-2, 3, shapes[1]).astype(np.float64) / 2
    if name == "div":
        b = np.where(b == 0, 1.5, b)
    y = fn(T(a, F64), T(b, F64))
    expected = ref(a, b)
    assert y.shape == np.broadcast_shapes(shapes[0], shapes[1])
    if name in ("eq", "ne", "lt", "le", "gt", "ge"):
        assert y.dtype == lucid.bool_
        np.testing.assert_array_equal(y.data, expected)
    else:
        assert y.dtype == F64
        close(y.data, expected)


def test_binary_operators_with_python_scalars():
    x = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)
    t = T(x)
    close((t + 1.5).data, x + 1.5, np.float32)
    close((1.5 + t).data, x + 1.5, np.float32)
    close((2.0 - t).data, 2.0 - x, np.float32)
    close((t - 2).data, x - 2, np.float32)
    close((3 * t).data, 3 * x, np.float32)
    close((1.0 / t).data, 1.0 / x, np.float32)
    close((t / 4).data, x / 4, np.float32)
    np.testing.assert_array_equal((t > 0).data, x > 0)
    np.testing.assert_array_equal((0.5 == t).data, x == 0.5)
    for y in (t + 1.5, 2 * t, 1.0 / t):
        assert y.dtype == F32


def test_maximum_minimum_propagate_nan():
    a, b = T([np.nan, 1.0, 2.0]), T([0.0, np.nan, 1.0])
    np.testing.assert_array_equal(ops.maximum(a, b).data, [np.nan, np.nan, 2.0])
    np.testing.assert_array_equal(ops.minimum(a, b).data, [np.nan, np.nan, 1.0])


@pytest.mark.parametrize("label, make, expected", [
    ("int64 + int64", lambda: T([1, 2]) + T([3, 4]), lucid.int64),
    ("int64 + python int", lambda: T([1, 2]) + 3, lucid.int64),
    ("int64 + python float", lambda: T([1, 2]) + 2.5, F32),
    ("int64 * float32", lambda: T([1, 2]) * T([0.5, 1.0]), F32),
    ("float32 + float64", lambda: T([1.0], F32) + T([2.0], F64), F64),
    ("float32 + python float", lambda: T([1.0], F32) + 0.1, F32),
    ("float64 * python int", lambda: T([1.0], F64) * 3, F64),
    ("bool + int64", lambda: T([True, False]) + T([1, 2]), lucid.int64),
    ("int64 / int64 (true division)", lambda: T([1, 2]) / T([2, 4]), F32),
    ("int64 / python int (true division)", lambda: T([1, 3]) / 2, F32),
    ("python int / int64", lambda: 1 / T([2, 4]), F32),
    ("sum of bool (counts)", lambda: (T([1.0, -2.0, 3.0]) > 0).sum(), lucid.int64),
    ("where(cond, int64, float32)", lambda: ops.where(T([True, False]), T([1, 2]), T([0.5, 0.5])), F32),
    ("concat int64 and float32", lambda: ops.concat([T([1]), T([0.5])]), F32),
])
def test_dtype_promotion_follows_pytorch(label, make, expected):
    y = make()
    assert y.dtype == expected, f"{label}: got {y.dtype}, PyTorch gives {expected}"


def test_integer_true_division_values():
    # torch.tensor([1, 3]) / torch.tensor([2, 4]) -> tensor([0.5000, 0.7500])
    close((T([1, 3]) / T([2, 4])).data, [0.5, 0.75], np.float32)


def test_sum_of_bool_counts_true_values():
    # (x > 0).sum() is the usual way to count: PyTorch gives int64 2 here.
    y = (T([1.0, -2.0, 3.0]) > 0).sum()
    assert y.item() == 2, f"sum of a bool tensor gave {y.item()!r} ({y.dtype})"


def test_where_forward_with_broadcasting():
    r = rng(3)
    cond = r.random((2, 1, 4)) > 0.5
    x, y = r.standard_normal((3, 1)), r.standard_normal((4,))
    out = ops.where(T(cond), T(x, F64), T(y, F64))
    assert out.shape == (2, 3, 4)
    expected = np.empty((2, 3, 4))
    for i, j, k in np.ndindex(2, 3, 4):
        expected[i, j, k] = x[j, 0] if cond[i, 0, k] else y[k]
    close(out.data, expected)
    close(ops.where(T(cond), T(x, F64), 0.25).data, np.where(cond, x, 0.25))


@pytest.mark.parametrize("src, values, dst, expected", [
    (F32, [-1.7, -0.5, 0.5, 1.7, 2.0], lucid.int64, [-1, 0, 0, 1, 2]),     # truncation toward zero
    (F64, [0.1, -2.5], F32, [0.1, -2.5]),
    (lucid.int64, [3, -4], F64, [3.0, -4.0]),
    (lucid.bool_, [True, False], F32, [1.0, 0.0]),
    (F32, [0.0, -2.0, 0.5], lucid.bool_, [False, True, True]),
])
def test_cast_forward(src, values, dst, expected):
    y = ops.cast(T(values, src), dst)
    assert y.dtype == dst
    np.testing.assert_array_equal(y.data, np.array(expected, dtype=dst.numpy))


# ==============================================================================================
# Reductions


REDUCTIONS = {
    "sum": (ops.sum_, np.sum),
    "mean": (ops.mean, np.mean),
    "max": (ops.max_, np.max),
    "min": (ops.min_, np.min),
}
AXES = [None, 0, 1, -1, (0, 2), (2, 0), (-1, 1), (0, 1, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reductions(name, axes, keepdims):
    fn, ref = REDUCTIONS[name]
    x = rng(5).standard_normal((2, 3, 4))
    y = fn(T(x, F64), axes, keepdims)
    axis = tuple(a % 3 for a in axes) if isinstance(axes, tuple) else axes
    expected = ref(x, axis=axis, keepdims=keepdims)
    assert y.shape == np.shape(expected) and y.dtype == F64
    close(y.data, expected)


def test_reduction_methods_accept_torch_names():
    x = rng(6).standard_normal((3, 4)).astype(np.float32)
    t = T(x)
    close(t.sum(dim=1, keepdim=True).data, x.sum(1, keepdims=True), np.float32)
    close(t.mean(dim=0).data, x.mean(0), np.float32)
    close(t.max(dim=-1).values.data, x.max(-1), np.float32)
    close(t.min().data, x.min(), np.float32)


def test_integer_sum_and_max_keep_int64():
    x = np.array([[1, 5, -2], [4, 0, 3]])
    assert ops.sum_(T(x), 1).dtype == lucid.int64
    np.testing.assert_array_equal(ops.sum_(T(x), 1).data, [4, 7])
    np.testing.assert_array_equal(ops.max_(T(x), 0).data, [4, 5, 3])


def test_reductions_of_a_0d_tensor():
    # PyTorch allows dim 0 / -1 on a 0-d tensor: torch.tensor(2.).sum(0) == 2.
    z = T(2.0, F64)
    assert ops.sum_(z).item() == 2.0
    assert ops.mean(z).item() == 2.0
    assert ops.sum_(z, 0).item() == 2.0
    assert ops.max_(z, -1).item() == 2.0


@pytest.mark.parametrize("axis, keepdims", [(0, False), (1, False), (-1, True), (None, False)])
def test_argmax_picks_the_first_maximum(axis, keepdims):
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 1.0, 2.0], [0.0, 3.0, -1.0, 3.0]])
    y = ops.argmax(T(x), axis, keepdims)
    assert y.dtype == lucid.int64
    if axis is None:
        expected = np.array(1)                     # first 3.0 of the flattened tensor
    else:
        moved = np.moveaxis(x, axis, -1)
        expected = np.array([[int(np.flatnonzero(row == row.max())[0]) for row in moved]]).reshape(moved.shape[:-1])
        if keepdims:
            expected = np.expand_dims(expected, axis)
    np.testing.assert_array_equal(y.data, expected)


@pytest.mark.parametrize("correction", [0, 1])
def test_var(correction):
    x = rng(7).standard_normal((3, 5))
    close(ops.var(T(x, F64), 1, correction=correction).data, np.var(x, axis=1, ddof=correction))


# ==============================================================================================
# Shape operators


def test_reshape_and_flatten():
    x = np.arange(24.0).reshape(2, 3, 4)
    close(ops.reshape(T(x, F64), (4, -1)).data, x.reshape(4, 6))
    close(T(x).reshape(3, 8).data, x.reshape(3, 8), np.float32)
    close(T(x).flatten(1).data, x.reshape(2, 12), np.float32)
    close(T(x).flatten().data, x.ravel(), np.float32)
    assert T(x).unsqueeze(-1).shape == (2, 3, 4, 1)
    assert T(x).reshape(24, 1).squeeze().shape == (24,)


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_permute(perm):
    x = np.arange(24.0).reshape(2, 3, 4)
    y = ops.permute(T(x, F64), perm)
    expected = np.empty([x.shape[p] for p in perm])
    for idx in np.ndindex(*x.shape):
        expected[tuple(idx[p] for p in perm)] = x[idx]
    close(y.data, expected)


def test_transpose_forms():
    x = rng(8).standard_normal((2, 3, 4))
    close(T(x, F64).transpose(0, 2).data, np.swapaxes(x, 0, 2))
    close(T(x, F64).transpose().data, x.transpose(2, 1, 0))
    close(T(x[0], F64).T.data, x[0].T)


@pytest.mark.parametrize("src, dst", [((3, 1), (2, 3, 4)), ((1,), (5,)), ((), (2, 2)), ((2, 1, 3), (2, 4, 3))])
def test_broadcast_to(src, dst):
    x = rng(9).standard_normal(src)
    y = ops.broadcast_to(T(x, F64), dst)
    expected = np.empty(dst)
    lead = len(dst) - len(src)
    for idx in np.ndindex(*dst):
        expected[idx] = x[tuple(0 if n == 1 else i for i, n in zip(idx[lead:], src))]
    close(y.data, expected)


def _pad_ref(x, lo, hi, interior, value):
    shape = tuple(a + b + n + max(n - 1, 0) * i for n, a, b, i in zip(x.shape, lo, hi, interior))
    y = np.full(shape, value, dtype=x.dtype)
    for idx in np.ndindex(*x.shape):
        y[tuple(a + j * (i + 1) for j, a, i in zip(idx, lo, interior))] = x[idx]
    return y


@pytest.mark.parametrize("shape, lo, hi, interior, value", [
    ((3,), (1,), (2,), (0,), 0.0),
    ((2, 3), (0, 2), (1, 0), (1, 2), 0.5),
    ((1, 4), (1, 0), (0, 2), (3, 1), -1.0),
    ((2, 2, 3), (1, 0, 1), (0, 1, 1), (2, 0, 1), 0.0),
    ((0, 2), (1, 0), (1, 0), (1, 1), 3.0),
])
def test_pad_op(shape, lo, hi, interior, value):
    x = rng(10).standard_normal(shape)
    y = ops.pad(T(x, F64), lo, hi, interior, value=value)
    close(y.data, _pad_ref(x, lo, hi, interior, value))


@pytest.mark.parametrize("shape, starts, stops, steps", [
    ((5, 6), (1, 0), (4, 5), (2, 3)),
    ((2, 5, 7), (0, 1, 2), (2, 4, 7), (1, 2, 3)),
    ((4,), (2,), (2,), (1,)),
    ((6,), (0,), (6,), (4,)),
])
def test_slice_op(shape, starts, stops, steps):
    x = rng(11).standard_normal(shape)
    y = ops.slice_(T(x, F64), starts, stops, steps)
    axes = [list(range(a, b, s)) for a, b, s in zip(starts, stops, steps)]
    expected = np.array([x[idx] for idx in itertools.product(*axes)]).reshape([len(a) for a in axes])
    close(y.data, expected)


def test_tensor_indexing():
    x = rng(12).standard_normal((3, 5, 2))
    t = T(x, F64)
    close(t[1].data, x[1])
    close(t[1:, ::2, 1].data, x[1:, ::2, 1])
    close(t[-1, None, 2:4].data, x[-1, None, 2:4])
    close(t[..., 0].data, x[..., 0])
    close(t[0, ...].data, x[0, ...])
    close(t[:, 1:3, ...].data, x[:, 1:3, ...])
    close(t[..., 1:2].data, x[..., 1:2])


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_concat_three_inputs(axis):
    r = rng(13)
    base = [2, 3, 4]
    parts = []
    for n in (1, 3, 2):
        shape = list(base)
        shape[axis] = n
        parts.append(r.standard_normal(shape))
    y = lucid.cat([T(p, F64) for p in parts], dim=axis)
    ax = axis % 3
    total = sum(p.shape[ax] for p in parts)
    expected = np.empty(base[:ax] + [total] + base[ax + 1:])
    offset = 0
    for p in parts:
        for idx in np.ndindex(*p.shape):
            j = list(idx)
            j[ax] += offset
            expected[tuple(j)] = p[idx]
        offset += p.shape[ax]
    close(y.data, expected)


def test_one_hot():
    idx = np.array([[0, 2], [1, 1], [3, 0]])
    y = ops.one_hot(T(idx), 4)
    assert y.shape == (3, 2, 4) and y.dtype == F32
    expected = np.zeros((3, 2, 4))
    for i, j in np.ndindex(3, 2):
        expected[i, j, idx[i, j]] = 1.0
    np.testing.assert_array_equal(y.data, expected)


# ==============================================================================================
# matmul


def _matmul_ref(a, b):
    """Broadcast-multiply-and-sum, with NumPy's 1-D promotion rules."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    y = (a2[..., :, :, None] * b2[..., None, :, :]).sum(axis=-2)
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return y


@pytest.mark.parametrize("sa, sb", [
    ((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (4, 3)), ((3, 4), (4,)),
    ((5,), (5,)), ((3,), (2, 3, 2)), ((2, 3, 4), (4,)), ((1, 2, 3), (4, 3, 1)),
], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul(sa, sb, dtype):
    r = rng(14)
    a, b = r.standard_normal(sa).astype(dtype), r.standard_normal(sb).astype(dtype)
    y = T(a, dtype) @ T(b, dtype)
    expected = _matmul_ref(a.astype(np.float64), b.astype(np.float64))
    assert y.shape == expected.shape and y.dtype == dtype
    close(y.data, expected, dtype, rtol=1e-5 if dtype == np.float32 else 1e-12)


# ==============================================================================================
# Convolutions: direct-loop oracle


def _conv_ref(x, w, b, stride, pads, dilation, groups):
    rank = w.ndim - 2
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    og = o // groups
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(pads))
    out_sp = tuple((xp.shape[2 + i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1 for i in range(rank))
    y = np.zeros((n, o) + out_sp)
    for pos in np.ndindex(*out_sp):
        for tap in np.ndindex(*w.shape[2:]):
            at = tuple(p * s + t * d for p, s, t, d in zip(pos, stride, tap, dilation))
            for g in range(groups):
                patch = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + at]          # (N, Cg)
                y[(slice(None), slice(g * og, (g + 1) * og)) + pos] += patch @ w[(slice(g * og, (g + 1) * og), slice(None)) + tap].T
    if b is not None:
        y += b.reshape((1, -1) + (1,) * rank)
    return y


def _conv_transpose_ref(x, w, b, stride, pads, output_padding, dilation, groups):
    rank = w.ndim - 2
    n, c = x.shape[:2]
    cg, og = c // groups, w.shape[1]
    out_sp = tuple((x.shape[2 + i] - 1) * stride[i] - pads[i][0] - pads[i][1] + dilation[i] * (w.shape[2 + i] - 1)
                   + output_padding[i] + 1 for i in range(rank))
    full = tuple(m + lo + 8 for m, (lo, _) in zip(out_sp, pads))
    buf = np.zeros((n, og * groups) + full)
    for pos in np.ndindex(*x.shape[2:]):
        for tap in np.ndindex(*w.shape[2:]):
            at = tuple(p * s + t * d for p, s, t, d in zip(pos, stride, tap, dilation))
            for g in range(groups):
                contrib = x[(slice(None), slice(g * cg, (g + 1) * cg)) + pos] @ w[(slice(g * cg, (g + 1) * cg), slice(None)) + tap]
                buf[(slice(None), slice(g * og, (g + 1) * og)) + at] += contrib
    y = buf[(slice(None), slice(None)) + tuple(slice(lo, lo + m) for (lo, _), m in zip(pads, out_sp))]
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * rank)
    return y


def _conv_weight_grad_ref(x, gy, kernel, stride, pads, dilation, groups):
    cg, og = x.shape[1] // groups, gy.shape[1] // groups
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(pads))
    gw = np.zeros((gy.shape[1], cg) + tuple(kernel))
    for pos in np.ndindex(*gy.shape[2:]):
        for tap in np.ndindex(*kernel):
            at = tuple(p * s + t * d for p, s, t, d in zip(pos, stride, tap, dilation))
            for g in range(groups):
                gw[(slice(g * og, (g + 1) * og), slice(None)) + tap] += (
                    gy[(slice(None), slice(g * og, (g + 1) * og)) + pos].T @ xp[(slice(None), slice(g * cg, (g + 1) * cg)) + at])
    return gw


CONV_CONFIGS = [
    # x shape, w shape, stride, pads, dilation, groups, bias
    ((2, 3, 9), (4, 3, 3), (2,), ((1, 1),), (2,), 1, True),
    ((1, 4, 5, 6), (2, 2, 2, 3), (1, 2), ((1, 0), (0, 2)), (1, 1), 2, True),
    ((1, 2, 4, 5, 3), (3, 2, 2, 2, 2), (1, 2, 1), ((1, 1), (0, 1), (1, 0)), (1, 1, 2), 1, False),
]


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=lambda c: f"{len(c[0]) - 2}d")
def test_conv_and_its_gradient_ops(cfg):
    xs, ws, stride, pads, dilation, groups, has_bias = cfg
    r = rng(15)
    x, w = r.standard_normal(xs), r.standard_normal(ws)
    b = r.standard_normal(ws[0]) if has_bias else None
    y = ops.conv(T(x, F64), T(w, F64), None if b is None else T(b, F64),
                 stride=stride, padding=pads, dilation=dilation, groups=groups)
    expected = _conv_ref(x, w, b, stride, pads, dilation, groups)
    close(y.data, expected)
    gy = r.standard_normal(expected.shape)
    gw = ops.emit("conv_weight_grad", T(x, F64), T(gy, F64), kernel_size=ws[2:], stride=stride, padding=pads,
                  dilation=dilation, groups=groups)
    close(gw.data, _conv_weight_grad_ref(x, gy, ws[2:], stride, pads, dilation, groups))


CONV_T_CONFIGS = [
    # x shape, w shape (C, O/groups, *k), stride, pads, output_padding, dilation, groups, bias
    ((2, 3, 4), (3, 2, 3), (2,), ((1, 1),), (1,), (1,), 1, True),
    ((1, 4, 3, 2), (4, 1, 2, 2), (2, 3), ((1, 1), (1, 1)), (1, 2), (2, 1), 2, True),
    ((1, 2, 4), (2, 2, 2), (1,), ((0, 0),), (1,), (2,), 1, False),
    ((1, 2, 2, 2, 2), (2, 1, 2, 2, 2), (2, 2, 2), ((0, 0), (1, 1), (0, 0)), (0, 1, 0), (1, 1, 1), 1, False),
]


@pytest.mark.parametrize("cfg", CONV_T_CONFIGS, ids=lambda c: f"{len(c[0]) - 2}d")
def test_conv_transpose(cfg):
    xs, ws, stride, pads, output_padding, dilation, groups, has_bias = cfg
    r = rng(16)
    x, w = r.standard_normal(xs), r.standard_normal(ws)
    b = r.standard_normal(ws[1] * groups) if has_bias else None
    y = ops.conv_transpose(T(x, F64), T(w, F64), None if b is None else T(b, F64), stride=stride, padding=pads,
                           output_padding=output_padding, dilation=dilation, groups=groups)
    close(y.data, _conv_transpose_ref(x, w, b, stride, pads, output_padding, dilation, groups))


def test_conv_spec_example_204():
    x = T(np.arange(1.0, 9.0).reshape(1, 1, 2, 2, 2), F64)
    w = T(np.arange(1.0, 9.0).reshape(1, 1, 2, 2, 2), F64)
    y = ops.conv(x, w, stride=(1, 1, 1), padding=((0, 0),) * 3, dilation=(1, 1, 1), groups=1)
    assert y.shape == (1, 1, 1, 1, 1) and y.item() == 204.0


# ==============================================================================================
# Pooling: direct-loop oracle over random configurations


def _pool_out(n, k, s, p, d, ceil_mode):
    span = n + 2 * p - d * (k - 1) - 1
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:     # the last window must start inside input or left padding
        out -= 1
    return out


def pool_oracle(x, gy, cfg):
    """(y, dL/dx for upstream gradient gy) by looping over output positions and kernel taps."""
    kind, kernel, stride, padding = cfg["kind"], cfg["kernel"], cfg["stride"], cfg["padding"]
    dilation = cfg.get("dilation", (1,) * len(kernel))
    sp = x.shape[2:]
    out_sp = tuple(_pool_out(n, k, s, p, d, cfg["ceil_mode"]) for n, k, s, p, d in zip(sp, kernel, stride, padding, dilation))
    y = np.zeros(x.shape[:2] + out_sp)
    gx = np.zeros_like(x)
    for o in np.ndindex(*out_sp):
        real, padded_count = [], 0
        for t in np.ndindex(*kernel):
            at = tuple(oi * s - p + ti * d for oi, s, p, ti, d in zip(o, stride, padding, t, dilation))
            if all(-p <= a < n + p for a, n, p in zip(at, sp, padding)):
                padded_count += 1
            if all(0 <= a < n for a, n in zip(at, sp)):
                real.append(at)
        if not real:
            # Only possible with dilation (e.g. taps at -1 and +1 of a length-1 axis): PyTorch gives
            # -inf and routes no gradient. avg_pool has no dilation, so its windows always hit the input.
            assert kind == "max"
            y[(slice(None), slice(None)) + o] = -np.inf
            continue
        vals = np.stack([x[(slice(None), slice(None)) + a] for a in real], axis=-1)      # (N, C, taps)
        g = gy[(slice(None), slice(None)) + o] if gy is not None else None
        if kind == "max":
            y[(slice(None), slice(None)) + o] = vals.max(-1)
            first = vals.argmax(-1)                        # first maximum in tap order
            if g is not None:
                for ti, a in enumerate(real):
                    gx[(slice(None), slice(None)) + a] += np.where(first == ti, g, 0.0)
        else:
            if cfg["divisor_override"] is not None:
                divisor = cfg["divisor_override"]
            else:
                divisor = padded_count if cfg["count_include_pad"] else len(real)
            y[(slice(None), slice(None)) + o] = vals.sum(-1) / divisor
            if g is not None:
                for a in real:
                    gx[(slice(None), slice(None)) + a] += g / divisor
    return y, gx


def _random_pool_config(r, kind, index):
    rank = 1 + index % 3
    max_sp = {1: 9, 2: 6, 3: 4}[rank]
    while True:
        kernel = tuple(int(k) for k in r.integers(1, 4, rank))
        stride = tuple(int(s) for s in r.integers(1, 4, rank))
        dilation = tuple(int(d) for d in r.integers(1, 3, rank)) if kind == "max" else (1,) * rank
        # PyTorch's rule, with or without dilation: padding <= kernel_size // 2.
        padding = tuple(int(r.integers(0, k // 2 + 1)) for k in kernel)
        ceil_mode = bool(r.random() < 0.5)
        spatial = tuple(int(r.integers(1, max_sp + 1)) for _ in range(rank))
        out = [_pool_out(n, k, s, p, d, ceil_mode) for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation)]
        if min(out) >= 1:
            break
    cfg = dict(kind=kind, rank=rank, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
               shape=(int(r.integers(1, 3)), int(r.integers(1, 3))) + spatial)
    if kind == "max":
        cfg["dilation"] = dilation
    else:
        cfg["count_include_pad"] = bool(r.random() < 0.5)
        cfg["divisor_override"] = int(r.integers(1, 8)) if r.random() < 0.25 else None
    return cfg


def _pool_configs():
    r = rng(2024)
    configs = [_random_pool_config(r, kind, i) for kind in ("max", "avg") for i in range(45)]
    # Make sure the interesting corners are present whatever the draw.
    configs += [
        dict(kind="max", rank=3, kernel=(2, 2, 2), stride=(2, 2, 2), padding=(1, 0, 1), dilation=(1, 2, 1),
             ceil_mode=True, shape=(1, 2, 5, 5, 4)),
        dict(kind="avg", rank=2, kernel=(3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True,
             count_include_pad=True, divisor_override=None, shape=(1, 1, 6, 6)),
        dict(kind="avg", rank=2, kernel=(3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True,
             count_include_pad=False, divisor_override=None, shape=(1, 1, 6, 6)),
        dict(kind="avg", rank=1, kernel=(4,), stride=(3,), padding=(2,), ceil_mode=True,
             count_include_pad=True, divisor_override=None, shape=(2, 1, 8)),
        dict(kind="avg", rank=3, kernel=(2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0), ceil_mode=False,
             count_include_pad=False, divisor_override=7, shape=(1, 2, 3, 4, 4)),
    ]
    return configs


POOL_CONFIGS = _pool_configs()


def _pool_id(cfg):
    parts = [f"{cfg['kind']}{cfg['rank']}d", f"in{cfg['shape']}", f"k{cfg['kernel']}", f"s{cfg['stride']}",
             f"p{cfg['padding']}"]
    if cfg["kind"] == "max":
        parts.append(f"d{cfg['dilation']}")
    else:
        parts += [f"cip{int(cfg['count_include_pad'])}", f"div{cfg['divisor_override']}"]
    parts.append("ceil" if cfg["ceil_mode"] else "floor")
    return "-".join(parts).replace(" ", "")


def _lucid_pool(x, cfg):
    fn = getattr(F, f"{cfg['kind']}_pool{cfg['rank']}d")
    kw = dict(kernel_size=cfg["kernel"], stride=cfg["stride"], padding=cfg["padding"], ceil_mode=cfg["ceil_mode"])
    if cfg["kind"] == "max":
        kw["dilation"] = cfg["dilation"]
    else:
        kw.update(count_include_pad=cfg["count_include_pad"], divisor_override=cfg["divisor_override"])
    return fn(x, **kw)


def _pool_attrs(cfg):
    attrs = dict(kernel=cfg["kernel"], stride=cfg["stride"], padding=cfg["padding"], ceil_mode=cfg["ceil_mode"])
    if cfg["kind"] == "max":
        attrs["dilation"] = cfg["dilation"]
    else:
        attrs.update(count_include_pad=cfg["count_include_pad"], divisor_override=cfg["divisor_override"])
    return attrs


def test_pool_config_set_is_rich():
    assert len(POOL_CONFIGS) >= 60
    for kind in ("max", "avg"):
        for rank in (1, 2, 3):
            assert any(c["kind"] == kind and c["rank"] == rank for c in POOL_CONFIGS)
    assert any(c["ceil_mode"] for c in POOL_CONFIGS) and any(max(c["padding"]) for c in POOL_CONFIGS)
    assert any(c["kind"] == "max" and max(c["dilation"]) > 1 for c in POOL_CONFIGS)
    assert any(c["kind"] == "avg" and not c["count_include_pad"] for c in POOL_CONFIGS)
    assert any(c["kind"] == "avg" and c["divisor_override"] for c in POOL_CONFIGS)


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=_pool_id)
def test_pool_against_loop_oracle(cfg):
    r = rng(zlib.crc32(_pool_id(cfg).encode()))
    x = r.standard_normal(cfg["shape"])
    y_ref, _ = pool_oracle(x, None, cfg)
    gy = r.standard_normal(y_ref.shape)
    _, gx_ref = pool_oracle(x, gy, cfg)
    # float64: forward and gradient through autograd.
    xt = T(x, F64, requires_grad=True)
    y = _lucid_pool(xt, cfg)
    assert y.shape == y_ref.shape
    close(y.data, y_ref)
    y.backward(T(gy, F64))
    close(xt.grad.data, gx_ref)
    # float32 forward.
    y32 = _lucid_pool(T(x.astype(np.float32)), cfg)
    assert y32.dtype == F32
    close(y32.data, y_ref, np.float32, rtol=1e-5)
    # The gradient operators on their own.
    attrs = _pool_attrs(cfg)
    if cfg["kind"] == "max":
        g_op = ops.emit("max_pool_grad", T(x, F64), T(gy, F64), **attrs)
    else:
        g_op = ops.emit("avg_pool_grad", T(gy, F64), input_shape=tuple(x.shape), **attrs)
    close(g_op.data, gx_ref)


def test_max_pool_window_missing_the_input_gives_minus_inf_and_no_gradient():
    # torch.nn.functional.max_pool1d(torch.ones(1, 1, 1), 2, 1, 1, 2) -> [[[-inf]]], input grad [[[0.]]]:
    # with dilation 2 and padding 1 the only window has taps at -1 and +1, both outside the input.
    x = T(np.ones((1, 1, 1)), F64, requires_grad=True)
    y = F.max_pool1d(x, 2, stride=1, padding=1, dilation=2)
    np.testing.assert_array_equal(y.data, [[[-np.inf]]])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [[[0.0]]])


def test_pool_unbatched_input():
    x = rng(17).standard_normal((2, 5, 5))
    cfg = dict(kind="max", rank=2, kernel=(2, 2), stride=(2, 2), padding=(0, 0), dilation=(1, 1), ceil_mode=True)
    y = F.max_pool2d(T(x, F64), 2, ceil_mode=True)
    assert y.shape == (2, 3, 3)
    close(y.data, pool_oracle(x[None], None, cfg)[0][0])


# ==============================================================================================
# Softmax, batch_norm, losses (NumPy references)


def _log_softmax_ref(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_softmax_and_log_softmax(axis):
    x = rng(18).standard_normal((2, 3, 4)) * 5
    close(ops.log_softmax(T(x, F64), axis).data, _log_softmax_ref(x, axis))
    close(ops.softmax(T(x, F64), axis).data, np.exp(_log_softmax_ref(x, axis)))
    s = ops.softmax(T(x.astype(np.float32)), axis).data
    close(s.sum(axis=axis), np.ones_like(s.sum(axis=axis)), np.float32)


def test_softmax_of_large_logits_is_finite():
    x = T([[1000.0, 0.0, -1000.0], [-5e4, -5e4, -5e4]])
    close(ops.softmax(x).data, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], np.float32)
    close(ops.log_softmax(x).data, [[0, -1000, -2000], [-math.log(3)] * 3], np.float32, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 2, 2), (2, 2, 2, 2, 3)])
def test_functional_batch_norm_eval(shape):
    r = rng(19)
    x = r.standard_normal(shape)
    c = shape[1]
    mean, var, w, b = r.standard_normal(c), r.uniform(0.5, 2, c), r.standard_normal(c), r.standard_normal(c)
    y = F.batch_norm(T(x, F64), T(mean, F64), T(var, F64), T(w, F64), T(b, F64), eps=1e-3)
    expected = np.empty_like(x)
    for ch in range(c):
        expected[:, ch] = (x[:, ch] - mean[ch]) / np.sqrt(var[ch] + 1e-3) * w[ch] + b[ch]
    close(y.data, expected)


def test_functional_batch_norm_training_updates_running_stats():
    r = rng(20)
    x = r.standard_normal((4, 3, 5))
    rm, rv = T(np.full(3, 0.5), F64), T(np.full(3, 2.0), F64)
    y = F.batch_norm(T(x, F64), rm, rv, training=True, momentum=0.2, eps=1e-5)
    mean = x.mean(axis=(0, 2))
    var_b = x.var(axis=(0, 2))
    var_u = x.var(axis=(0, 2), ddof=1)
    close(y.data, (x - mean[None, :, None]) / np.sqrt(var_b[None, :, None] + 1e-5))
    close(rm.data, 0.8 * 0.5 + 0.2 * mean)
    close(rv.data, 0.8 * 2.0 + 0.2 * var_u)


def test_mse_loss():
    r = rng(21)
    a, b = r.standard_normal((3, 4)), r.standard_normal((3, 4))
    close(F.mse_loss(T(a, F64), T(b, F64)).data, ((a - b) ** 2).mean())
    close(F.mse_loss(T(a, F64), T(b, F64), reduction="sum").data, ((a - b) ** 2).sum())
    close(F.mse_loss(T(a, F64), T(b, F64), reduction="none").data, (a - b) ** 2)


def _ce_ref(logits, target, weight=None, ignore_index=-100, reduction="mean"):
    """Cross entropy over axis 1 (or axis 0 of a (C,) input) by explicit loops."""
    if logits.ndim == 1:
        logits, target = logits[None], np.asarray(target)[None]
    logp = _log_softmax_ref(logits, 1)
    c = logits.shape[1]
    w = np.ones(c) if weight is None else weight
    if np.issubdtype(np.asarray(target).dtype, np.floating):
        loss = -(target * w.reshape((1, c) + (1,) * (logits.ndim - 2)) * logp).sum(1)
        return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]
    loss = np.zeros(target.shape)
    total_w = 0.0
    for idx in np.ndindex(*target.shape):
        t = target[idx]
        if t == ignore_index:
            continue
        loss[idx] = -w[t] * logp[(idx[0], t) + idx[1:]]
        total_w += w[t]
    return {"mean": loss.sum() / total_w if total_w else np.nan, "sum": loss.sum(), "none": loss}[reduction]


CE_CASES = [
    # label, logits shape, target kind, weight, ignore_index, reduction
    ("indices mean", (4, 3), "idx", False, None, "mean"),
    ("indices sum", (4, 3), "idx", False, None, "sum"),
    ("indices none", (4, 3), "idx", False, None, "none"),
    ("weight mean", (5, 4), "idx", True, None, "mean"),
    ("weight none", (5, 4), "idx", True, None, "none"),
    ("ignore_index mean", (6, 3), "idx", False, 1, "mean"),
    ("ignore_index -100 weight mean", (6, 3), "idx", True, -100, "mean"),
    ("4-D indices weight ignore mean", (2, 3, 2, 3), "idx", True, 0, "mean"),
    ("4-D indices none", (2, 3, 2, 2), "idx", False, None, "none"),
    ("probabilities mean", (4, 3), "prob", False, None, "mean"),
    ("probabilities weight sum", (4, 3), "prob", True, None, "sum"),
    ("probabilities 4-D none", (2, 3, 2, 2), "prob", False, None, "none"),
    ("unbatched (C,)", (5,), "idx", False, None, "mean"),
]


def _ce_inputs(shape, kind, weighted, ignore_index, seed=22):
    r = rng(seed)
    logits = r.standard_normal(shape) * 2
    c = shape[1] if len(shape) > 1 else shape[0]
    tshape = (shape[:1] + shape[2:]) if len(shape) > 1 else ()
    if kind == "idx":
        target = r.integers(0, c, tshape)
        if ignore_index is not None:
            flat = target.reshape(-1)
            flat[:: 3] = ignore_index
            target = flat.reshape(tshape)
            if ignore_index in range(c):      # keep at least one counted element
                target.reshape(-1)[1] = (ignore_index + 1) % c
    else:
        target = np.exp(_log_softmax_ref(r.standard_normal(shape), 1 if len(shape) > 1 else 0))
    weight = r.uniform(0.2, 2.0, c) if weighted else None
    return logits, target, weight


def _ce_kwargs(weight, ignore_index, reduction, tensor):
    kw = dict(reduction=reduction)
    if weight is not None:
        kw["weight"] = tensor(weight)
    if ignore_index is not None:
        kw["ignore_index"] = ignore_index
    return kw


@pytest.mark.parametrize("case", CE_CASES, ids=lambda c: c[0])
def test_cross_entropy_against_numpy(case):
    _, shape, kind, weighted, ignore_index, reduction = case
    logits, target, weight = _ce_inputs(shape, kind, weighted, ignore_index)
    tgt = T(target, F64) if kind == "prob" else T(target)
    y = F.cross_entropy(T(logits, F64), tgt, **_ce_kwargs(weight, ignore_index, reduction, lambda a: T(a, F64)))
    expected = _ce_ref(logits, target, weight, -100 if ignore_index is None else ignore_index, reduction)
    assert y.shape == np.shape(expected)
    close(y.data, expected)
    # nll_loss on log-probabilities gives the same numbers.
    logp = _log_softmax_ref(logits, 1 if logits.ndim > 1 else 0)
    if kind == "idx":
        y2 = F.nll_loss(T(logp, F64), tgt, **_ce_kwargs(weight, ignore_index, reduction, lambda a: T(a, F64)))
        close(y2.data, expected)


# ==============================================================================================
# F.pad


PAD_CASES = [
    ((2, 3), (1, 2), 0.0),
    ((2, 3, 4), (1, 0, 2, 1), 1.5),
    ((2, 3, 4), (-1, 2, 0, -1), 0.0),
    ((1, 2, 3, 4), (2, 1, -1, -1, 1, 0), -2.0),
    ((3, 5), (-2, -1, 1, 1), 0.0),
    ((4,), (0, 0), 0.0),
    ((2, 2, 3), (1, 1, 1, 1, 1, 1), 0.5),
]


@pytest.mark.parametrize("shape, pad, value", PAD_CASES)
def test_functional_pad(shape, pad, value):
    x = rng(23).standard_normal(shape)
    expected = x
    for i in range(len(pad) // 2):
        axis = x.ndim - 1 - i
        lo, hi = pad[2 * i], pad[2 * i + 1]
        n = expected.shape[axis]
        index = [slice(None)] * x.ndim
        index[axis] = slice(max(-lo, 0), n - max(-hi, 0))
        expected = expected[tuple(index)]
        widths = [(0, 0)] * x.ndim
        widths[axis] = (max(lo, 0), max(hi, 0))
        expected = np.pad(expected, widths, constant_values=value)
    close(F.pad(T(x, F64), pad, value=value).data, expected)


# ==============================================================================================
# PyTorch parity (skipped when torch is not installed)


def _to_torch(torch, a, requires_grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=requires_grad)


def _torch_pool(torch, x, cfg):
    tf = torch.nn.functional
    k, s, p, ceil = cfg["kernel"], cfg["stride"], cfg["padding"], cfg["ceil_mode"]
    if cfg["kind"] == "max":
        return getattr(tf, f"max_pool{cfg['rank']}d")(x, k, s, p, cfg["dilation"], ceil_mode=ceil)
    if cfg["rank"] == 1:
        # torch's avg_pool1d has no divisor_override: pool a (N, C, 1, L) tensor in 2-D instead.
        y = tf.avg_pool2d(x.unsqueeze(2), (1,) + k, (1,) + s, (0,) + p, ceil, cfg["count_include_pad"],
                          cfg["divisor_override"])
        return y.squeeze(2)
    return getattr(tf, f"avg_pool{cfg['rank']}d")(x, k, s, p, ceil, cfg["count_include_pad"], cfg["divisor_override"])




def _max_window_misses_input(cfg):
    """Whether some max-pool window lies wholly in the padding (possible with dilation)."""
    if cfg["kind"] != "max":
        return False
    for n, k, s, p, d in zip(cfg["shape"][2:], cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"]):
        span = n + 2 * p - d * (k - 1) - 1
        out = (-(-span // s) if cfg["ceil_mode"] else span // s) + 1
        if cfg["ceil_mode"] and (out - 1) * s >= n + p:
            out -= 1
        if any(all(not 0 <= o * s - p + t * d < n for t in range(k)) for o in range(out)):
            return True
    return False


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=_pool_id)
def test_pool_against_torch(cfg):
    if _max_window_misses_input(cfg):
        pytest.skip("torch 2.13's max_pool backward writes out of bounds (heap corruption) when a window lies "
                    "wholly in the padding; lucid is checked against the loop oracle for this config")
    torch = _torch()
    if cfg["kind"] == "avg" and cfg["rank"] == 3 and any(n < k for n, k in zip(cfg["shape"][2:], cfg["kernel"])):
        pytest.skip("torch's avg_pool3d (unlike avg_pool1d/2d) refuses an unpadded input smaller than the kernel")
    r = rng(zlib.crc32(_pool_id(cfg).encode()) + 1)
    x = r.standard_normal(cfg["shape"])
    xt_torch = _to_torch(torch, x, True)
    y_torch = _torch_pool(torch, xt_torch, cfg)
    gy = r.standard_normal(tuple(y_torch.shape))
    y_torch.backward(_to_torch(torch, gy))
    xt = T(x, F64, requires_grad=True)
    y = _lucid_pool(xt, cfg)
    assert y.shape == tuple(y_torch.shape)
    close(y.data, y_torch.detach().numpy())
    y.backward(T(gy, F64))
    close(xt.grad.data, xt_torch.grad.numpy())


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_max_pool_ties_route_gradient_like_torch(rank):
    torch = _torch()
    r = rng(24 + rank)
    shape = (2, 2) + (5,) * rank
    x = r.integers(0, 3, shape).astype(np.float64)            # many ties inside each window
    gy_shape = None
    xt_torch = _to_torch(torch, x, True)
    y_torch = getattr(torch.nn.functional, f"max_pool{rank}d")(xt_torch, 3, 2, 1, ceil_mode=True)
    gy = r.standard_normal(tuple(y_torch.shape))
    y_torch.backward(_to_torch(torch, gy))
    xt = T(x, F64, requires_grad=True)
    y = getattr(F, f"max_pool{rank}d")(xt, 3, 2, 1, ceil_mode=True)
    close(y.data, y_torch.detach().numpy())
    y.backward(T(gy, F64))
    close(xt.grad.data, xt_torch.grad.numpy())
    assert gy_shape is None


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_against_torch(approximate):
    torch = _torch()
    x = rng(26).standard_normal((3, 7)) * 3
    xt_torch = _to_torch(torch, x, True)
    y_torch = torch.nn.functional.gelu(xt_torch, approximate=approximate)
    g = rng(27).standard_normal(x.shape)
    y_torch.backward(_to_torch(torch, g))
    xt = T(x, F64, requires_grad=True)
    y = F.gelu(xt, approximate=approximate)
    close(y.data, y_torch.detach().numpy(), rtol=1e-10, atol=1e-12)
    y.backward(T(g, F64))
    close(xt.grad.data, xt_torch.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_against_torch(name, dim):
    torch = _torch()
    x = rng(28).standard_normal((2, 3, 4)) * 3
    xt_torch = _to_torch(torch, x, True)
    y_torch = getattr(torch.nn.functional, name)(xt_torch, dim=dim)
    g = rng(29).standard_normal(x.shape)
    y_torch.backward(_to_torch(torch, g))
    xt = T(x, F64, requires_grad=True)
    y = getattr(F, name)(xt, dim=dim)
    close(y.data, y_torch.detach().numpy())
    y.backward(T(g, F64))
    close(xt.grad.data, xt_torch.grad.numpy())


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 2, 3), (2, 2, 2, 2, 3)], ids=str)
def test_batch_norm_against_torch(shape, training):
    torch = _torch()
    r = rng(30)
    x = r.standard_normal(shape)
    c = shape[1]
    w, b = r.standard_normal(c), r.standard_normal(c)
    rm0, rv0 = r.standard_normal(c), r.uniform(0.5, 2.0, c)
    g = r.standard_normal(shape)
    tx, tw, tb = (_to_torch(torch, a, True) for a in (x, w, b))
    trm, trv = _to_torch(torch, rm0), _to_torch(torch, rv0)
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=training, momentum=0.3, eps=1e-4)
    ty.backward(_to_torch(torch, g))
    lx, lw, lb = (T(a, F64, requires_grad=True) for a in (x, w, b))
    lrm, lrv = T(rm0, F64), T(rv0, F64)
    ly = F.batch_norm(lx, lrm, lrv, lw, lb, training=training, momentum=0.3, eps=1e-4)
    close(ly.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    close(lrm.data, trm.numpy())
    close(lrv.data, trv.numpy())
    ly.backward(T(g, F64))
    for mine, theirs in ((lx, tx), (lw, tw), (lb, tb)):
        close(mine.grad.data, theirs.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_against_torch(reduction):
    torch = _torch()
    r = rng(31)
    a, b = r.standard_normal((3, 4)), r.standard_normal((3, 4))
    ta = _to_torch(torch, a, True)
    ty = torch.nn.functional.mse_loss(ta, _to_torch(torch, b), reduction=reduction)
    ty.sum().backward()
    la = T(a, F64, requires_grad=True)
    ly = F.mse_loss(la, T(b, F64), reduction=reduction)
    close(ly.data, ty.detach().numpy())
    ly.sum().backward()
    close(la.grad.data, ta.grad.numpy())


@pytest.mark.parametrize("case", CE_CASES, ids=lambda c: c[0])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_losses_against_torch(case, loss):
    torch = _torch()
    _, shape, kind, weighted, ignore_index, reduction = case
    if loss == "nll_loss" and kind == "prob":
        pytest.skip("nll_loss takes class indices only")
    logits, target, weight = _ce_inputs(shape, kind, weighted, ignore_index, seed=32)
    inp = logits if loss == "cross_entropy" else _log_softmax_ref(logits, 1 if logits.ndim > 1 else 0)
    tt = _to_torch(torch, target) if kind == "prob" else torch.tensor(target, dtype=torch.int64)
    tx = _to_torch(torch, inp, True)
    ty = getattr(torch.nn.functional, loss)(tx, tt, **_ce_kwargs(weight, ignore_index, reduction,
                                                                  lambda a: _to_torch(torch, a)))
    g = rng(33).standard_normal(tuple(ty.shape))
    ty.backward(_to_torch(torch, g))
    lt = T(target, F64) if kind == "prob" else T(target)
    lx = T(inp, F64, requires_grad=True)
    ly = getattr(F, loss)(lx, lt, **_ce_kwargs(weight, ignore_index, reduction, lambda a: T(a, F64)))
    assert ly.shape == tuple(ty.shape)
    close(ly.data, ty.detach().numpy())
    ly.backward(T(g, F64))
    close(lx.grad.data, tx.grad.numpy())


@pytest.mark.parametrize("shape, pad, value", PAD_CASES)
def test_functional_pad_against_torch(shape, pad, value):
    torch = _torch()
    x = rng(34).standard_normal(shape)
    tx = _to_torch(torch, x, True)
    ty = torch.nn.functional.pad(tx, pad, value=value)
    g = rng(35).standard_normal(tuple(ty.shape))
    ty.backward(_to_torch(torch, g))
    lx = T(x, F64, requires_grad=True)
    ly = F.pad(lx, pad, value=value)
    close(ly.data, ty.detach().numpy())
    ly.backward(T(g, F64))
    close(lx.grad.data, tx.grad.numpy())


# ==============================================================================================
# Shape rules: errors naming the operator and the offending values


def _raises(kind, fn, *fragments):
    with pytest.raises(kind) as info:
        fn()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"error message {message!r} does not mention {fragment!r}"
    return info.value


def test_error_classes_subclass_builtins():
    assert issubclass(lucid.ShapeError, ValueError)
    assert issubclass(lucid.DTypeError, TypeError)


def test_broadcast_mismatch():
    a, b = T(np.zeros((2, 3))), T(np.zeros(4))
    for name, fn in (("add", ops.add), ("mul", ops.mul), ("maximum", ops.maximum), ("lt", ops.lt)):
        _raises(lucid.ShapeError, lambda: fn(a, b), name, "(2, 3)", "(4,)")
    _raises(lucid.ShapeError, lambda: a + b, "add", "(2, 3)", "(4,)")
    _raises(lucid.ShapeError, lambda: ops.where(T(np.ones((2,), bool)), a, a), "where", "(2,)", "(2, 3)")


def test_broadcast_to_mismatch():
    _raises(lucid.ShapeError, lambda: ops.broadcast_to(T(np.zeros((2, 3))), (4, 3)), "broadcast_to", "(2, 3)", "(4, 3)")


def test_matmul_inner_dimension_mismatch():
    _raises(lucid.ShapeError, lambda: ops.matmul(T(np.zeros((2, 3))), T(np.zeros((4, 5)))), "matmul", "(2, 3)", "(4, 5)")
    _raises(lucid.ShapeError, lambda: T(np.zeros((2, 2, 3))) @ T(np.zeros((2, 2))), "matmul", "3", "2")
    _raises(lucid.ShapeError, lambda: ops.matmul(T(np.zeros((3, 2, 3))), T(np.zeros((2, 3, 4)))), "matmul", "(3,)", "(2,)")


def test_bad_permute():
    x = T(np.zeros((2, 3, 4)))
    _raises(lucid.ShapeError, lambda: ops.permute(x, (0, 0, 1)), "permute", "(0, 0, 1)", "(2, 3, 4)")
    _raises(lucid.ShapeError, lambda: ops.permute(x, (0, 1)), "permute", "(0, 1)")
    _raises(lucid.ShapeError, lambda: x.permute(2, 1), "permute", "(2, 1)")


def test_reshape_size_mismatch():
    x = T(np.zeros((2, 3)))
    _raises(lucid.ShapeError, lambda: ops.reshape(x, (4, 2)), "reshape", "(2, 3)", "(4, 2)")
    _raises(lucid.ShapeError, lambda: x.reshape(4, -1), "reshape", "(2, 3)", "(4, -1)")
    _raises(lucid.ShapeError, lambda: x.reshape(-1, -1), "reshape", "(-1, -1)")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_pool_input_too_small(rank):
    x = T(np.zeros((1, 1) + (1,) + (2,) * (rank - 1)))
    for kind in ("max", "avg"):
        name = f"{kind}_pool{rank}d"
        err = _raises(lucid.ShapeError, lambda: getattr(F, name)(x, 2), name, str(x.shape[2:]))
        assert isinstance(err, ValueError)


def test_pool_op_messages_name_the_rank_specific_op():
    x = T(np.zeros((1, 1, 1, 1, 1)))
    _raises(lucid.ShapeError, lambda: ops.max_pool(x, kernel=(2, 2, 2), stride=(2, 2, 2), padding=(0, 0, 0),
                                                  dilation=(1, 1, 1), ceil_mode=False), "max_pool3d", "(1, 1, 1)")
    _raises(lucid.ShapeError, lambda: F.max_pool2d(T(np.zeros((1, 1, 5, 5))), 2, padding=2), "max_pool2d", "padding")
    _raises(lucid.ShapeError, lambda: F.avg_pool2d(T(np.zeros((1, 1, 5, 5))), 2, divisor_override=0),
            "avg_pool2d", "divisor_override", "0")
    _raises(lucid.DTypeError, lambda: F.max_pool1d(T(np.zeros((1, 1, 4), dtype=np.int64)), 2), "max_pool1d", "int64")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_max_pool_padding_limit_ignores_dilation_like_pytorch(rank):
    # PyTorch: "max_pool1d() padding should be at most half of kernel size, but got padding=2 and
    # kernel_size=2" -- even with dilation 3. Accepting it lets a window miss the input entirely
    # (a length-1 input gives windows at -2 and 1 only), and the output would be -inf.
    x = T(np.ones((1, 1) + (1,) * rank))
    name = f"max_pool{rank}d"
    _raises(lucid.ShapeError, lambda: getattr(F, name)(x, 2, stride=1, padding=2, dilation=3), name, "padding", "2")


def test_one_hot_errors():
    _raises(lucid.ShapeError, lambda: ops.one_hot(T([0, 5, 1]), 3), "one_hot", "3", "5")
    _raises(lucid.ShapeError, lambda: ops.one_hot(T([-1, 0]), 3), "one_hot", "-1")
    _raises(lucid.DTypeError, lambda: ops.one_hot(T([0.0, 1.0]), 3), "one_hot", "float32")


def test_concat_shape_mismatch():
    a, b = T(np.zeros((2, 3))), T(np.zeros((3, 4)))
    _raises(lucid.ShapeError, lambda: lucid.cat([a, a, b], 0), "concat", "(3, 4)", "(2, 3)")
    _raises(lucid.ShapeError, lambda: lucid.cat([a, T(np.zeros(3))], 0), "concat", "(3,)")
    _raises(lucid.ShapeError, lambda: lucid.cat([a, a], 2), "concat", "2")
    _raises(lucid.ShapeError, lambda: lucid.cat([], 0), "concat")


def test_other_shape_rule_errors():
    x = T(np.zeros((2, 3)))
    _raises(lucid.ShapeError, lambda: ops.sum_(x, 3), "sum", "3")
    _raises(lucid.ShapeError, lambda: ops.mean(x, (0, 0)), "mean", "(0, 0)")
    _raises(lucid.ShapeError, lambda: ops.softmax(x, 5), "softmax", "5")
    _raises(lucid.ShapeError, lambda: ops.gelu(x, "fast"), "gelu", "'fast'")
    _raises(lucid.ShapeError, lambda: ops.slice_(x, (0, 2), (2, 5)), "slice", "5", "3")
    _raises(lucid.ShapeError, lambda: ops.pad(x, (0, -1), (0, 0)), "pad", "-1")
    _raises(lucid.ShapeError, lambda: F.batch_norm(T(np.zeros((2, 3, 4))), *(T(np.zeros(4)),) * 4),
            "batch_norm", "(3,)", "(4,)")
    _raises(lucid.ShapeError, lambda: ops.moments(T(np.zeros((0, 3))), (0,)), "moments", "(0, 3)")
    _raises(lucid.ShapeError, lambda: ops.max_(T(np.zeros((0, 3))), 0), "max", "(0, 3)")


def test_dtype_rule_errors():
    i = T([1, 2, 3])
    for name, fn in (("log", ops.log), ("exp", ops.exp), ("sqrt", ops.sqrt), ("tanh", ops.tanh),
                     ("sigmoid", ops.sigmoid), ("softmax", ops.softmax)):
        _raises(lucid.DTypeError, lambda: fn(i), name, "int64")
    _raises(lucid.DTypeError, lambda: ops.where(T([1.0, 0.0]), i, i), "where", "float32")
    _raises(lucid.DTypeError, lambda: ops.mean(i), "mean", "int64")
    _raises(lucid.DTypeError, lambda: ops.add(T([1.0]), "a"), "add", "str")


def test_conv_errors_name_the_layer_and_channels():
    x = T(np.zeros((1, 3, 5, 5)))
    w = T(np.zeros((4, 2, 3, 3)))
    _raises(lucid.ShapeError, lambda: F.conv2d(x, w), "conv2d", "2", "3")
    _raises(lucid.ShapeError, lambda: F.conv2d(T(np.zeros((1, 2, 2, 2))), w), "conv2d", "(2, 2)")
