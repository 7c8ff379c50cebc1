"""SPEC section 2: lucid.Tensor — construction, dtypes, creation functions, attributes, methods,
arithmetic, indexing, autograd (seeding, accumulation, zero_grad, no_grad, retain_grad), repr and
user errors. Numerics are compared with plain NumPy; a few tests compare with PyTorch when it is
installed (pytest.importorskip in separate test functions)."""

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid import Tensor

RNG = np.random.default_rng(1234)


def arr(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def close(a, b, tol=1e-5):
    a = a.data if isinstance(a, Tensor) else np.asarray(a)
    b = b.data if isinstance(b, Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# =========================================================================== construction / dtypes
@pytest.mark.parametrize("value, dtype, shape", [
    (3.5, lucid.float32, ()),
    (3, lucid.int64, ()),
    (True, lucid.bool_, ()),
    ([1.0, 2.0], lucid.float32, (2,)),
    ([[1, 2, 3], [4, 5, 6]], lucid.int64, (2, 3)),
    ([[[1.5]], [[2.5]]], lucid.float32, (2, 1, 1)),
    ([True, False], lucid.bool_, (2,)),
    ([1, 2.5], lucid.float32, (2,)),           # mixed ints/floats -> floating default
])
def test_construct_python_data(value, dtype, shape):
    t = Tensor(value)
    assert t.dtype == dtype
    assert t.shape == shape
    np.testing.assert_array_equal(t.data, np.array(value))


def test_construct_empty_list_is_float32():
    t = Tensor([])
    assert t.shape == (0,) and t.dtype == lucid.float32


def test_construct_numpy_float64_becomes_float32():
    a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float64)
    t = Tensor(a)
    assert t.dtype == lucid.float32
    assert t.data.dtype == np.float32
    np.testing.assert_array_equal(t.data, a.astype(np.float32))


def test_construct_float64_kept_when_asked():
    a = np.array([1.0 / 3.0, 2.0], dtype=np.float64)
    t = Tensor(a, dtype=lucid.float64)
    assert t.dtype == lucid.float64 and t.data.dtype == np.float64
    assert t.data[0] == a[0]                     # no float32 rounding on the way
    assert lucid.tensor([0.1, 0.2], dtype=lucid.float64).data.dtype == np.float64
    assert lucid.zeros(2, dtype=lucid.float64).dtype == lucid.float64


@pytest.mark.parametrize("np_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8])
def test_construct_numpy_integers_become_int64(np_dtype):
    t = Tensor(np.arange(4, dtype=np_dtype))
    assert t.dtype == lucid.int64
    np.testing.assert_array_equal(t.data, [0, 1, 2, 3])


def test_construct_numpy_bool_and_float16():
    assert Tensor(np.array([True, False])).dtype == lucid.bool_
    assert Tensor(np.array([1.0], dtype=np.float16)).dtype == lucid.float32


def test_construct_dtype_conversion_on_request():
    t = Tensor([1, 2, 3], dtype=lucid.float32)
    assert t.dtype == lucid.float32
    np.testing.assert_array_equal(t.data, [1.0, 2.0, 3.0])


def test_construct_from_numpy_copies():
    a = np.array([1.0, 2.0], dtype=np.float32)
    t = Tensor(a)
    a[0] = 100.0
    assert t.data[0] == 1.0


def test_construct_from_tensor_copies_and_keeps_dtype():
    src = Tensor([1.0, 2.0], dtype=lucid.float64)
    t = Tensor(src)
    assert t.dtype == lucid.float64
    src.data[0] = 7.0
    assert t.data[0] == 1.0
    assert not t.requires_grad and t.is_leaf
    t32 = Tensor(src, dtype=lucid.float32)
    assert t32.dtype == lucid.float32


def test_tensor_function_matches_constructor():
    t = lucid.tensor([[1.0, 2.0]], requires_grad=True)
    assert isinstance(t, Tensor)
    assert t.requires_grad and t.is_leaf and t.grad is None
    assert t.dtype == lucid.float32 and t.shape == (1, 2)


# =========================================================================== creation functions
@pytest.mark.parametrize("fn, fill", [(lucid.zeros, 0.0), (lucid.ones, 1.0)])
def test_zeros_ones_varargs_and_tuple(fn, fill):
    for t in (fn(2, 3), fn((2, 3)), fn([2, 3])):
        assert t.shape == (2, 3) and t.dtype == lucid.float32
        assert np.all(t.data == fill)
    assert fn(4).shape == (4,)
    assert fn().shape == ()
    assert fn(0, 3).shape == (0, 3)
    assert fn(2, requires_grad=True).requires_grad


def test_full():
    t = lucid.full((2, 3), 1.5)
    assert t.shape == (2, 3) and t.dtype == lucid.float32
    assert np.all(t.data == 1.5)
    ti = lucid.full((3,), 7)
    assert ti.dtype == lucid.int64 and ti.tolist() == [7, 7, 7]
    tf = lucid.full((2,), 2, dtype=lucid.float32)
    assert tf.dtype == lucid.float32 and tf.tolist() == [2.0, 2.0]


def test_arange():
    t = lucid.arange(5)
    assert t.dtype == lucid.int64 and t.tolist() == [0, 1, 2, 3, 4]
    assert lucid.arange(2, 10, 3).tolist() == [2, 5, 8]
    tf = lucid.arange(0, 1, 0.25)
    assert tf.dtype == lucid.float32
    np.testing.assert_allclose(tf.data, [0.0, 0.25, 0.5, 0.75])
    assert lucid.arange(3, dtype=lucid.float32).dtype == lucid.float32


def test_zeros_like_ones_like():
    src = Tensor(np.arange(6).reshape(2, 3))
    z = lucid.zeros_like(src)
    assert z.shape == (2, 3) and z.dtype == lucid.int64 and np.all(z.data == 0)
    o = lucid.ones_like(Tensor([[1.0, 2.0]]))
    assert o.shape == (1, 2) and o.dtype == lucid.float32 and np.all(o.data == 1)
    assert lucid.zeros_like(src, dtype=lucid.float32).dtype == lucid.float32


def test_randn_rand_shapes_and_stats():
    lucid.manual_seed(0)
    for t in (lucid.randn(3, 4), lucid.randn((3, 4))):
        assert t.shape == (3, 4) and t.dtype == lucid.float32
    big = lucid.randn(20000)
    assert abs(big.data.mean()) < 0.05 and abs(big.data.std() - 1.0) < 0.05
    u = lucid.rand(20000)
    assert u.dtype == lucid.float32
    assert u.data.min() >= 0.0 and u.data.max() < 1.0
    assert abs(u.data.mean() - 0.5) < 0.02
    assert lucid.rand((2, 5)).shape == (2, 5)
    assert lucid.randn(2, dtype=lucid.float64).dtype == lucid.float64


def test_tensor_randn_requires_grad():
    t = Tensor.randn(2, 3, requires_grad=True)
    assert isinstance(t, Tensor)
    assert t.shape == (2, 3) and t.requires_grad and t.is_leaf
    assert not Tensor.randn(2).requires_grad
    assert Tensor.randn((4, 1)).shape == (4, 1)


def test_manual_seed_reproducible_random_draws():
    lucid.manual_seed(42)
    a, b = lucid.randn(5), lucid.rand(3)
    lucid.manual_seed(42)
    c, d = lucid.randn(5), lucid.rand(3)
    np.testing.assert_array_equal(a.data, c.data)
    np.testing.assert_array_equal(b.data, d.data)
    lucid.manual_seed(43)
    e = lucid.randn(5)
    assert not np.array_equal(a.data, e.data)
    # consecutive draws differ
    lucid.manual_seed(42)
    assert not np.array_equal(lucid.randn(5).data, lucid.randn(5).data)


def test_manual_seed_reproducible_module_init():
    def build():
        return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Conv1d(2, 3, 2))

    lucid.manual_seed(7)
    m1 = build()
    lucid.manual_seed(7)
    m2 = build()
    lucid.manual_seed(8)
    m3 = build()
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])
    assert not np.array_equal(s1["0.weight"], s3["0.weight"])


def test_manual_seed_rejects_bad_seed():
    with pytest.raises((ValueError, TypeError)):
        lucid.manual_seed(-1)
    with pytest.raises((ValueError, TypeError)):
        lucid.manual_seed("abc")


def test_creation_rejects_negative_sizes():
    with pytest.raises(ValueError):
        lucid.zeros(2, -1)


# =========================================================================== attributes
def test_attributes():
    a = arr(2, 3, 4)
    t = Tensor(a, requires_grad=True)
    assert t.shape == (2, 3, 4)
    assert isinstance(t.shape, tuple) and all(type(n) is int for n in t.shape)
    assert t.ndim == 3
    assert t.dtype == lucid.float32
    assert isinstance(t.data, np.ndarray)
    np.testing.assert_array_equal(t.data, a)
    assert t.grad is None
    assert t.requires_grad is True
    assert t.is_leaf
    y = t * 2
    assert not y.is_leaf and y.requires_grad
    assert Tensor([1.0]).is_leaf and not Tensor([1.0]).requires_grad


def test_requires_grad_setter():
    t = Tensor([1.0, 2.0])
    t.requires_grad = True
    assert t.requires_grad
    (t * t).sum().backward()
    close(t.grad, [2.0, 4.0])


def test_numpy_item_tolist():
    t = Tensor([[1.0, 2.0], [3.0, 4.0]])
    n = t.numpy()
    assert isinstance(n, np.ndarray) and n.dtype == np.float32
    np.testing.assert_array_equal(n, [[1, 2], [3, 4]])
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    s = Tensor(2.5).item()
    assert s == 2.5 and type(s) is float
    i = Tensor([7]).item()
    assert i == 7 and type(i) is int
    assert Tensor([[3.0]]).item() == 3.0
    assert Tensor(True).item() is True


def test_detach():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    d = y.detach()
    assert not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(d.data, [3.0, 6.0])
    (d * 2).sum()                        # no history: cannot reach x
    z = (y * d).sum()
    z.backward()
    close(x.grad, 3 * d.data)            # d treated as a constant


# =========================================================================== shape methods
def test_reshape_flatten():
    a = arr(2, 3, 4)
    t = Tensor(a)
    close(t.reshape(6, 4), a.reshape(6, 4))
    close(t.reshape((4, 6)), a.reshape(4, 6))
    close(t.reshape(-1, 2), a.reshape(-1, 2))
    close(t.reshape(24), a.reshape(24))
    close(t.flatten(), a.reshape(-1))
    close(t.flatten(1), a.reshape(2, 12))
    close(t.flatten(0, 1), a.reshape(6, 4))
    with pytest.raises(ValueError):
        t.reshape(5, 5)


def test_transpose_permute():
    a = arr(2, 3, 4)
    t = Tensor(a)
    close(t.transpose(0, 2), np.swapaxes(a, 0, 2))
    close(t.transpose(-1, 0), np.swapaxes(a, -1, 0))
    close(t.permute(2, 0, 1), a.transpose(2, 0, 1))
    close(t.permute((1, 2, 0)), a.transpose(1, 2, 0))
    m = Tensor(arr(3, 5))
    close(m.T, m.data.T)
    with pytest.raises(ValueError):
        t.permute(0, 1)


def test_shape_ops_gradients():
    a = arr(2, 3, 4)
    x = Tensor(a, requires_grad=True)
    w = arr(4, 3, 2)
    y = (x.permute(2, 1, 0) * Tensor(w)).sum()
    y.backward()
    close(x.grad, w.transpose(2, 1, 0))
    x.zero_grad()
    w2 = arr(6, 4)
    (x.reshape(6, 4) * Tensor(w2)).sum().backward()
    close(x.grad, w2.reshape(2, 3, 4))


# =========================================================================== reductions
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_match_numpy(name, axis, keepdims):
    a = arr(2, 3, 4)
    got = getattr(Tensor(a), name)(axis=axis, keepdims=keepdims)
    want = getattr(np, name if name != "max" else "amax")(a, axis=axis, keepdims=keepdims)
    assert isinstance(got, Tensor)
    close(got, np.asarray(want, dtype=np.float32))


def test_reductions_positional_and_torch_names():
    a = arr(3, 4)
    t = Tensor(a)
    close(t.sum(0), a.sum(0))
    close(t.mean(1, True), a.mean(1, keepdims=True))
    close(t.sum(dim=1, keepdim=True), a.sum(1, keepdims=True))
    close(t.max(dim=0).values, a.max(0))


def test_reduction_gradients():
    a = arr(3, 4)
    x = Tensor(a, requires_grad=True)
    x.sum().backward()
    close(x.grad, np.ones_like(a))
    x.zero_grad()
    x.mean().backward()
    close(x.grad, np.full_like(a, 1 / 12))
    x.zero_grad()
    x.mean(axis=0).sum().backward()
    close(x.grad, np.full_like(a, 1 / 3))
    x.zero_grad()
    x.max(axis=1).sum().backward()
    want = np.zeros_like(a)
    want[np.arange(3), a.argmax(1)] = 1
    close(x.grad, want)


def test_int_sum_stays_int():
    t = Tensor([[1, 2], [3, 4]])
    s = t.sum()
    assert s.dtype == lucid.int64 and s.item() == 10


# =========================================================================== arithmetic and dtypes
def test_arithmetic_broadcasting_matches_numpy():
    a, b, c = arr(2, 3), arr(3), arr(2, 1)
    A, B, C = Tensor(a), Tensor(b), Tensor(c)
    close(A + B, a + b)
    close(A - C, a - c)
    close(B * C, b * c)
    close(A / (Tensor(np.abs(b)) + 1), a / (np.abs(b) + 1))
    close(-A, -a)
    close(A ** 2, a ** 2)
    close(abs(A), np.abs(a))


def test_arithmetic_with_python_scalars_both_sides():
    a = arr(2, 3)
    t = Tensor(a)
    close(t + 2, a + 2)
    close(2 + t, 2 + a)
    close(t - 1.5, a - 1.5)
    close(1.5 - t, 1.5 - a)
    close(t * 3, a * 3)
    close(3 * t, 3 * a)
    close(t / 4, a / 4)
    close(1 / (t * t + 1), 1 / (a * a + 1))
    close(2 ** t, 2.0 ** a, tol=1e-4)


def test_python_scalar_dtype_results():
    f = Tensor([1.0, 2.0])
    for r in (f + 1.5, 1.5 + f, f * 2, 2 * f, f - 1, 3.0 / f, f / 2):
        assert r.dtype == lucid.float32, r.dtype
    i = Tensor([1, 2, 3])
    assert (i + 1).dtype == lucid.int64
    assert (2 * i).dtype == lucid.int64
    r = i + 0.5
    assert r.dtype == lucid.float32
    np.testing.assert_allclose(r.data, [1.5, 2.5, 3.5])
    assert (0.5 * i).dtype == lucid.float32
    d = Tensor([1.0], dtype=lucid.float64)
    assert (d + 1.5).dtype == lucid.float64


def test_int_true_division_is_float():
    # PyTorch: integer tensors under `/` give floating results
    r = Tensor([1, 2, 3]) / 2
    assert r.dtype == lucid.float32
    np.testing.assert_allclose(r.data, [0.5, 1.0, 1.5])
    r2 = Tensor([1, 2]) / Tensor([2, 4])
    assert r2.dtype == lucid.float32
    np.testing.assert_allclose(r2.data, [0.5, 0.5])


def test_tensor_tensor_dtype_promotion():
    i, f, d = Tensor([1, 2]), Tensor([0.5, 0.5]), Tensor([0.25, 0.25], dtype=lucid.float64)
    assert (i + f).dtype == lucid.float32
    assert (f + d).dtype == lucid.float64
    assert (i * d).dtype == lucid.float64


def test_broadcast_gradients():
    a, b = arr(2, 3), arr(3)
    x, y = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    (x * y).sum().backward()
    close(x.grad, np.broadcast_to(b, (2, 3)))
    close(y.grad, a.sum(0))
    c = arr(2, 1)
    p, q = Tensor(c, requires_grad=True), Tensor(b, requires_grad=True)
    (p - q).sum().backward()
    close(p.grad, np.full((2, 1), 3.0))
    close(q.grad, np.full(3, -2.0))


def test_division_and_pow_gradients():
    a = np.abs(arr(4)) + 0.5
    b = np.abs(arr(4)) + 0.5
    x, y = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    (x / y + x ** 3).sum().backward()
    close(x.grad, 1 / b + 3 * a ** 2, tol=1e-4)
    close(y.grad, -a / b ** 2, tol=1e-4)


# =========================================================================== matmul
@pytest.mark.parametrize("sa, sb", [
    ((3,), (3,)),
    ((2, 3), (3,)),
    ((3,), (3, 4)),
    ((2, 3), (3, 4)),
    ((5, 2, 3), (3, 4)),
    ((5, 2, 3), (5, 3, 4)),
    ((1, 2, 3), (5, 3, 4)),
])
def test_matmul_matches_numpy_and_grads(sa, sb):
    a, b = arr(*sa), arr(*sb)
    x, y = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    z = x @ y
    want = a @ b
    close(z, np.asarray(want, np.float32), tol=1e-4)
    g = arr(*np.shape(want))
    z.backward(Tensor(g))
    # gradients by the standard matmul rules (vectors promoted, broadcast dims summed)
    a2 = a[None] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = np.asarray(g).reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
    ga = g2 @ np.swapaxes(b2, -1, -2)
    gb = np.swapaxes(a2, -1, -2) @ g2
    while ga.ndim > a2.ndim:
        ga = ga.sum(0)
    for ax, n in enumerate(a2.shape[:-2]):
        if n == 1:
            ga = ga.sum(ax, keepdims=True)
    while gb.ndim > b2.ndim:
        gb = gb.sum(0)
    for ax, n in enumerate(b2.shape[:-2]):
        if n == 1:
            gb = gb.sum(ax, keepdims=True)
    close(x.grad, ga.reshape(a.shape), tol=1e-4)
    close(y.grad, gb.reshape(b.shape), tol=1e-4)


def test_matmul_1d_dot_is_scalar():
    z = Tensor([1.0, 2.0, 3.0]) @ Tensor([4.0, 5.0, 6.0])
    assert z.shape == () and z.item() == 32.0


def test_matmul_shape_mismatch_raises():
    with pytest.raises(ValueError):
        Tensor(arr(2, 3)) @ Tensor(arr(4, 2))


# =========================================================================== comparisons
def test_comparisons():
    a, b = np.array([1.0, 2.0, 3.0], np.float32), np.array([3.0, 2.0, 1.0], np.float32)
    A, B = Tensor(a), Tensor(b)
    for got, want in [(A == B, a == b), (A != B, a != b), (A < B, a < b), (A <= B, a <= b),
                      (A > B, a > b), (A >= B, a >= b), (A > 1.5, a > 1.5), (2.0 <= A, 2.0 <= a),
                      (A == 2, a == 2)]:
        assert got.dtype == lucid.bool_
        np.testing.assert_array_equal(got.data, want)
    m = Tensor(arr(2, 3)) > Tensor(arr(3))
    assert m.shape == (2, 3)
    np.testing.assert_array_equal((Tensor([1, 2]) > 1.5).data, [False, True])


# =========================================================================== indexing
@pytest.mark.parametrize("key", [
    0, -1, (1, 2), slice(None, None, 2), Ellipsis, (slice(1, None), slice(None, None, 3)),
    (None, 0), (Ellipsis, 1), (0, Ellipsis, None), (slice(None), None, slice(0, 5, 2)),
    (slice(-2, None), -3), (1, slice(0, 0)),
])
def test_indexing_values_and_gradient(key):
    a = arr(3, 4, 5)
    x = Tensor(a, requires_grad=True)
    y = x[key]
    want = a[key]
    close(y, want)
    g = arr(*np.shape(want))
    y.backward(Tensor(g))
    expect = np.zeros_like(a)
    expect[key] += g
    close(x.grad, expect)


def test_indexing_out_of_range():
    with pytest.raises(IndexError):
        Tensor(arr(3))[3]
    with pytest.raises(IndexError):
        Tensor(arr(3))[0, 0]


def test_iteration_and_len():
    t = Tensor(arr(3, 2))
    assert len(t) == 3
    rows = list(t)
    assert len(rows) == 3 and rows[1].shape == (2,)
    close(rows[2], t.data[2])


# =========================================================================== autograd
def test_backward_on_non_scalar_seeds_ones():
    a = arr(2, 3)
    x = Tensor(a, requires_grad=True)
    y = x * x
    y.backward()
    close(x.grad, 2 * a)
    assert isinstance(x.grad, Tensor)
    assert x.grad.shape == x.shape and x.grad.dtype == lucid.float32


def test_backward_explicit_grad():
    a = arr(2, 3)
    g = arr(2, 3)
    x = Tensor(a, requires_grad=True)
    (x * 3).backward(Tensor(g))
    close(x.grad, 3 * g)
    x2 = Tensor(a, requires_grad=True)
    (x2 * 3).backward(g)           # a NumPy array as seed
    close(x2.grad, 3 * g)
    x3 = Tensor(a, requires_grad=True)
    (x3 * 3).sum().backward(Tensor(2.0))
    close(x3.grad, np.full_like(a, 6.0))


def test_backward_seed_wrong_shape_raises():
    x = Tensor(arr(2, 3), requires_grad=True)
    with pytest.raises(ValueError):
        (x * 2).backward(Tensor(arr(3, 2)))


def test_gradients_accumulate_over_two_backward_calls():
    a = arr(3)
    x = Tensor(a, requires_grad=True)
    (x * 2).sum().backward()
    (x * x).sum().backward()
    close(x.grad, 2 + 2 * a)
    x.zero_grad()
    assert x.grad is None or np.all(x.grad.data == 0)
    (x * 5).sum().backward()
    close(x.grad, np.full(3, 5.0))


def test_leaf_without_requires_grad_gets_no_grad():
    x = Tensor(arr(3), requires_grad=True)
    c = Tensor(arr(3))
    (x * c).sum().backward()
    assert c.grad is None
    close(x.grad, c.data)


def test_non_leaf_grad_not_kept_unless_retained():
    x = Tensor(arr(3), requires_grad=True)
    h = x * 2
    k = x * 3
    k.retain_grad()
    (h * k).sum().backward()
    assert h.grad is None
    close(k.grad, h.data)
    close(x.grad, 2 * k.data + 3 * h.data)


def test_uniform_gradients_inside_a_backward_reach_grad_as_arrays_of_their_own():
    """The gradients of sum and mean stay broadcast views while a backward runs (see `autograd`);
    a leaf's and a retained tensor's `.grad` are still writable arrays of their own."""
    x = Tensor(arr(2, 3), requires_grad=True)
    y = x * 2
    y.retain_grad()
    y.mean().backward()
    x.sum().backward()
    close(y.grad, np.full((2, 3), 1 / 6))
    close(x.grad, np.full((2, 3), 2 / 6 + 1))
    for t in (x, y):
        assert t.grad.data.flags.writeable and 0 not in t.grad.data.strides
    x.grad.data[0, 0] = 7.0
    y.grad.data[0, 1] = 8.0
    assert x.grad.data[0, 1] == np.float32(2 / 6 + 1) and y.grad.data[0, 0] == np.float32(1 / 6)


def test_diamond_graph():
    a = arr(4)
    x = Tensor(a, requires_grad=True)
    b1 = x * 3              # branch 1
    b2 = x.exp()            # branch 2
    y = (b1 * b2 + b1).sum()
    y.backward()
    # d/dx [3x e^x + 3x] = 3 e^x + 3x e^x + 3
    close(x.grad, 3 * np.exp(a) + 3 * a * np.exp(a) + 3, tol=1e-4)


def test_diamond_graph_shared_intermediate():
    a = arr(3)
    x = Tensor(a, requires_grad=True)
    h = x * x               # used by two branches that rejoin
    y = (h.relu() + h.sigmoid() * h).sum()
    y.backward()
    s = 1 / (1 + np.exp(-a * a))
    dh = (a * a > 0) + s * (1 - s) * a * a + s
    close(x.grad, dh * 2 * a, tol=1e-4)


def test_same_tensor_used_twice_in_one_op():
    a = arr(3)
    x = Tensor(a, requires_grad=True)
    (x * x).sum().backward()
    close(x.grad, 2 * a)
    y = Tensor(a, requires_grad=True)
    (y + y + y).sum().backward()
    close(y.grad, np.full(3, 3.0))


def test_tensor_zero_grad():
    x = Tensor(arr(3), requires_grad=True)
    (x * 2).sum().backward()
    x.zero_grad()
    assert x.grad is None or np.all(x.grad.data == 0)


def test_module_zero_grad():
    m = nn.Linear(3, 2)
    m(Tensor(arr(4, 3))).sum().backward()
    assert m.weight.grad is not None and m.bias.grad is not None
    m.zero_grad()
    for p in m.parameters():
        assert p.grad is None or np.all(p.grad.data == 0)
    # after zero_grad, the next backward starts from zero
    x = Tensor(arr(4, 3))
    m(x).sum().backward()
    close(m.weight.grad, np.tile(x.data.sum(0), (2, 1)), tol=1e-4)


def test_module_zero_grad_set_to_zero():
    m = nn.Linear(2, 2)
    m(Tensor([[1.0, 2.0]])).sum().backward()
    m.zero_grad(set_to_none=False)
    assert m.weight.grad is not None and not np.any(m.weight.grad.data)


def test_retained_grad_accumulates():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.retain_grad()
    (y * y).sum().backward()
    (y * 3).sum().backward()
    close(y.grad, 2 * np.array([2.0, 4.0]) + 3)
    close(x.grad, 2 * (2 * np.array([2.0, 4.0]) + 3))


def test_optimizer_zero_grad():
    m = nn.Linear(3, 2)
    opt = lucid.optim.SGD(m.parameters(), lr=0.1)
    m(Tensor(arr(4, 3))).sum().backward()
    opt.zero_grad()
    for p in m.parameters():
        assert p.grad is None or np.all(p.grad.data == 0)


def test_sgd_step_uses_grads():
    m = nn.Linear(2, 1)
    w0 = m.weight.data.copy()
    opt = lucid.optim.SGD(m.parameters(), lr=0.5)
    x = Tensor([[1.0, 2.0]])
    m(x).sum().backward()
    opt.step()
    close(m.weight, w0 - 0.5 * np.array([[1.0, 2.0]], np.float32))


def test_no_grad_context_manager():
    x = Tensor(arr(3), requires_grad=True)
    with lucid.no_grad():
        y = x * 2 + 1
        assert not lucid.is_grad_enabled()
    assert lucid.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises((RuntimeError, ValueError, TypeError)):
        y.sum().backward()
    z = x * 2                       # recording again after the block
    assert z.requires_grad and not z.is_leaf


def test_no_grad_decorator():
    @lucid.no_grad()
    def f(t):
        return t * t

    x = Tensor(arr(3), requires_grad=True)
    y = f(x)
    assert not y.requires_grad
    assert lucid.is_grad_enabled()


def test_no_grad_restored_after_exception():
    with pytest.raises(KeyError):
        with lucid.no_grad():
            raise KeyError("x")
    assert lucid.is_grad_enabled()


def test_no_grad_nested_modules():
    m = nn.Linear(3, 2)
    with lucid.no_grad():
        y = m(Tensor(arr(2, 3)))
    assert not y.requires_grad


# =========================================================================== repr
def test_repr():
    t = Tensor([1.5, 2.0, -3.25])
    r = repr(t)
    assert r.startswith("Tensor(")
    assert "1.5" in r and "-3.25" in r
    g = Tensor([1.5, 2.0], requires_grad=True)
    rg = repr(g)
    assert rg.startswith("Tensor(") and "requires_grad=True" in rg
    assert "requires_grad=True" not in r
    y = g * 2
    ry = repr(y)
    assert ry.startswith("Tensor(") and "3." in ry
    assert "grad_fn" in ry or "requires_grad=True" in ry
    s = repr(Tensor(np.arange(6).reshape(2, 3)))
    assert s.startswith("Tensor(") and "5" in s


# =========================================================================== errors
def test_requires_grad_on_int_tensor_is_type_error():
    with pytest.raises(TypeError):
        Tensor([1, 2, 3], requires_grad=True)
    t = Tensor([1, 2])
    with pytest.raises(TypeError):
        t.requires_grad = True
    with pytest.raises(TypeError):
        lucid.tensor([True], requires_grad=True)


def test_backward_without_requires_grad_raises():
    t = Tensor(arr(3))
    with pytest.raises((RuntimeError, ValueError, TypeError)) as info:
        t.sum().backward()
    assert "grad" in str(info.value)


def test_ragged_list_is_type_error():
    with pytest.raises(TypeError):
        Tensor([[1, 2], [3]])
    with pytest.raises(TypeError):
        lucid.tensor([[1.0], [2.0, 3.0]])


def test_non_numeric_data_is_type_error():
    with pytest.raises(TypeError):
        Tensor(["a", "b"])
    with pytest.raises(TypeError):
        Tensor({"a": 1})


def test_item_on_many_elements_is_value_error():
    with pytest.raises(ValueError):
        Tensor([1.0, 2.0]).item()
    with pytest.raises(ValueError):
        Tensor(np.zeros((2, 2))).item()


def test_broadcast_mismatch_raises_value_error():
    with pytest.raises(ValueError):
        Tensor(arr(2, 3)) + Tensor(arr(4))


# =========================================================================== PyTorch parity
def test_torch_parity_composite_forward_backward():
    torch = pytest.importorskip("torch")
    a, b, c = arr(3, 4), arr(4), arr(4, 2)
    x, y, w = (Tensor(v, requires_grad=True) for v in (a, b, c))
    out = ((x * y + 1.5).relu() @ w).sigmoid()
    loss = (out * out).mean() + (x[1:, ::2] * 2).sum() - x.max(axis=1).sum()
    loss.backward()

    tx, ty, tw = (torch.tensor(v, requires_grad=True) for v in (a, b, c))
    tout = ((tx * ty + 1.5).relu() @ tw).sigmoid()
    tloss = (tout * tout).mean() + (tx[1:, ::2] * 2).sum() - tx.max(dim=1).values.sum()
    tloss.backward()

    close(out, tout.detach().numpy(), tol=1e-5)
    close(loss, tloss.detach().numpy(), tol=1e-5)
    close(x.grad, tx.grad.numpy(), tol=1e-5)
    close(y.grad, ty.grad.numpy(), tol=1e-5)
    close(w.grad, tw.grad.numpy(), tol=1e-5)


def test_torch_parity_dtype_results():
    torch = pytest.importorskip("torch")
    cases = [
        (lambda m, t: m.tensor([1, 2]) + 0.5, "float32"),
        (lambda m, t: m.tensor([1.0, 2.0]) + 2, "float32"),
        (lambda m, t: 3 * m.tensor([1, 2]), "int64"),
        (lambda m, t: m.tensor([1, 2]) / 2, "float32"),
        (lambda m, t: m.tensor([1.0, 2.0]) > 1, "bool"),
        (lambda m, t: m.tensor([1, 2]).sum(), "int64"),
    ]
    for build, want in cases:
        assert str(build(torch, torch).dtype) == f"torch.{want}"
        assert build(lucid, None).dtype == getattr(lucid, want if want != "bool" else "bool_")


def test_torch_parity_indexing_grad():
    torch = pytest.importorskip("torch")
    a = arr(3, 4, 5)
    g = arr(4, 1, 2)
    x = Tensor(a, requires_grad=True)
    x[..., None, 1:5:2].sum(0).backward(Tensor(g))
    tx = torch.tensor(a, requires_grad=True)
    tx[..., None, 1:5:2].sum(0).backward(torch.tensor(g))
    close(x.grad, tx.grad.numpy())


# =========================================================================== the kept shape rules
def test_eager_calls_keep_each_signatures_result_type_and_nothing_a_rule_refuses():
    """An eager operator call runs the shape rule once per signature (operator, attributes, input
    shapes and dtypes) and keeps its result; attributes that compare equal but differ in kind (True
    and 1, 0.0 and -0.0) are different signatures, a refused call keeps nothing, and attributes of
    other kinds are never kept."""
    import sys

    from lucid.errors import ShapeError
    from lucid.ir.ops.registry import OpDef
    from lucid.ir.types import TensorType

    apply = sys.modules["lucid.tensor"]._inferred_type

    class Probe(OpDef):
        name = "probe"

        def __init__(self):
            self.calls = 0

        def infer(self, attrs, *types):
            self.calls += 1
            k = attrs["k"]
            if isinstance(k, bool) or (isinstance(k, float) and np.copysign(1.0, k) < 0):
                raise ShapeError(f"probe: k must be a non-negative number, got {k!r}")
            return TensorType((len(np.atleast_1d(k)),) + types[0].shape, types[0].dtype)

    probe, x, y = Probe(), Tensor(arr(2, 3)), Tensor(arr(4))
    assert apply(probe, {"k": 1}, (x,)).shape == (1, 2, 3) and probe.calls == 1
    assert apply(probe, {"k": 1}, (Tensor(arr(2, 3)),)).shape == (1, 2, 3) and probe.calls == 1   # kept
    assert apply(probe, {"k": 1}, (y,)).shape == (1, 4) and probe.calls == 2                      # other shape
    for refused in (True, -0.0):
        for _ in range(2):
            with pytest.raises(ShapeError, match="probe: k must be"):
                apply(probe, {"k": refused}, (x,))
    assert probe.calls == 6
    assert apply(probe, {"k": 0.0}, (x,)).shape == (1, 2, 3) and probe.calls == 7
    for _ in range(2):
        assert apply(probe, {"k": np.arange(3)}, (x,)).shape == (3, 2, 3)                           # never kept
    assert probe.calls == 9


@pytest.mark.parametrize("make", [lambda t: t.broadcast_to((2, 3, 4)), lambda t: t.expand(2, 3, 4)],
                         ids=["broadcast_to", "expand"])
def test_an_eager_broadcast_is_a_writable_copy(make):
    """An eager broadcast's result owns its data (C order): writing it leaves the source alone."""
    source = np.arange(3, dtype=np.float32).reshape(1, 3, 1)
    t = lucid.Tensor(source.copy())
    out = make(t)
    data = out.numpy()
    np.testing.assert_array_equal(data, np.broadcast_to(source, (2, 3, 4)))
    assert data.flags.writeable and data.flags.c_contiguous and 0 not in data.strides
    data[0, 0, 0] = 7.0
    np.testing.assert_array_equal(t.numpy(), source)
