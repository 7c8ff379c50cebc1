"""The tensor API real model code hits (issue 18): traced values pass the checks model code makes on
tensors, the PyTorch tensor methods and the `lucid.<function>` namespace (eager against NumPy,
traced and compiled against eager, gradients against finite differences and PyTorch), and the
in-place forms (`out += identity`, `x.add_(y)`, `x.relu_()`...) eagerly and traced."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
from lucid import DTypeError, GradientError, ShapeError, TraceError
from lucid.tensor import is_eager_tensor

RNG = np.random.default_rng(18)


def arr(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def T(a, **kwargs):
    return lucid.tensor(a, **kwargs)


def flat(result):
    """A result (a tensor or a nested tuple of them) as a list of arrays."""
    if isinstance(result, (tuple, list)):
        return [a for item in result for a in flat(item)]
    return [np.asarray(result.numpy() if hasattr(result, "numpy") else result)]


def same(got, want, rtol=1e-6, atol=1e-6):
    got, want = flat(got), flat(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == np.shape(w), (g.shape, np.shape(w))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def compiled_matches_eager(fn, *arrays, rtol=1e-5, atol=1e-6):
    """fn traced and compiled gives what it gives eagerly, output for output."""
    eager = fn(*(T(a) for a in arrays))
    compiled = lucid.compile(fn)(*(T(a) for a in arrays))
    same(compiled, eager, rtol, atol)
    return eager


def numeric_gradient(fn, a, weights, eps=1e-6):
    """d/da sum(fn(a) * weights) by central differences in float64."""
    a = a.astype(np.float64)
    grad = np.zeros_like(a)
    for index in np.ndindex(a.shape):
        up, down = a.copy(), a.copy()
        up[index] += eps
        down[index] -= eps
        grad[index] = (np.sum(fn(T(up, dtype=lucid.float64)).numpy() * weights)
                       - np.sum(fn(T(down, dtype=lucid.float64)).numpy() * weights)) / (2 * eps)
    return grad


def gradient_matches_finite_differences(fn, a):
    x = T(a.astype(np.float64), dtype=lucid.float64, requires_grad=True)
    out = fn(x)
    weights = RNG.standard_normal(out.shape)
    (out * T(weights, dtype=lucid.float64)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), numeric_gradient(fn, a, weights), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Traced values pass model code's checks, or fail loudly


class BranchesOnTensorChecks(nn.Module):
    """The BasicUNet pattern: a skip connection used only when it is a tensor of the right rank."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x, skip):
        y = self.conv(x)
        if isinstance(skip, lucid.Tensor) and skip.dim() == 4 and skip.shape[2:] == y.size()[2:]:
            return y + skip
        return y


def test_a_module_branching_on_isinstance_and_dim_traces_the_tensor_branch():
    model = BranchesOnTensorChecks()
    x, skip = arr(1, 2, 5, 4), arr(1, 2, 5, 4)
    graph = lucid.trace(model, T(x), T(skip))
    assert "add" in {node.op for node in graph.nodes}
    eager = model(T(x), T(skip))
    np.testing.assert_allclose(eager.numpy(), model.conv(T(x)).numpy() + skip, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lucid.compile(model)(T(x), T(skip)).numpy(), eager.numpy(), rtol=1e-5, atol=1e-6)


def test_graph_values_are_tensors_to_isinstance_but_not_eager_tensors():
    seen = {}

    def fn(x):
        seen.update(tensor=isinstance(x, lucid.Tensor), parameter=isinstance(x, nn.Parameter),
                    is_tensor=lucid.is_tensor(x), eager=is_eager_tensor(x), jit=lucid.jit.isinstance(x, lucid.Tensor))
        return x * 2

    lucid.trace(fn, lucid.spec(2, 3))
    assert seen == dict(tensor=True, parameter=False, is_tensor=True, eager=False, jit=True)
    assert is_eager_tensor(lucid.zeros(2)) and is_eager_tensor(nn.Parameter(lucid.zeros(2)))
    assert isinstance(nn.Parameter(lucid.zeros(2)), lucid.Tensor)
    assert not isinstance(np.zeros(2), lucid.Tensor) and not lucid.is_tensor(3.0)


def test_shape_queries_answer_the_same_on_values_and_tensors():
    def queries(x):
        return (tuple(x.shape), x.dim(), x.ndim, x.ndimension(), x.size(), x.size(1), x.size(-1), x.dtype,
                x.device, len(x), x.numel(), lucid.numel(x), x.shape[2:], x.size()[1:], x.is_cuda)

    answers = []
    lucid.trace(lambda x: answers.append(queries(x)) or x, lucid.spec(2, 3, 4, dtype=lucid.float64))
    assert answers[0] == queries(lucid.zeros(2, 3, 4, dtype=lucid.float64))
    assert answers[0][:7] == ((2, 3, 4), 3, 3, 3, (2, 3, 4), 3, 4)
    assert answers[0][-3:] == ((4,), (3, 4), False)


@pytest.mark.parametrize("attempt, words", [
    (lambda x: bool(x.sum() > 0), "bool()"),
    (lambda x: float(x.sum()), "float()"),
    (lambda x: int(x.sum()), "int()"),
    (lambda x: x.sum().item(), "item()"),
    (lambda x: x.numpy(), "numpy()"),
    (lambda x: x.tolist(), "tolist()"),
    (lambda x: x.data, ".data"),
    (lambda x: np.asarray(x), "conversion to a NumPy array"),
    (lambda x: [0, 1, 2][x[0, 0].long()], "index"),
    (lambda x: lucid.allclose(x, x), "conversion to a NumPy array"),
    (lambda x: x.__setitem__(0, 1.0), "item assignment"),
])
def test_data_dependent_python_on_a_traced_value_fails_naming_the_attempt(attempt, words):
    def fn(x):
        attempt(x)
        return x

    with pytest.raises(TraceError) as info:
        lucid.trace(fn, lucid.spec(2, 3))
    assert words in str(info.value)


def test_an_if_on_a_traced_comparison_fails_instead_of_taking_a_branch():
    def fn(x):
        if x.max() > 0:
            return x
        return -x

    with pytest.raises(TraceError, match="bool()"):
        lucid.trace(fn, lucid.spec(3))


def test_iterating_a_value_unbinds_its_first_axis():
    a = arr(3, 2)
    same(compiled_matches_eager(lambda x: tuple(row * 2 for row in x), a), [row * 2 for row in a])


# ----------------------------------------------------------------------------------------------
# Methods against NumPy


a34 = arr(3, 4)
a2345 = arr(2, 3, 4, 5)
b4 = arr(4)

METHOD_CASES = {
    "view": (lambda x: x.view(4, 3), lambda a: a.reshape(4, 3), a34),
    "view -1 tuple": (lambda x: x.view((-1,)), lambda a: a.reshape(-1), a34),
    "view_as": (lambda x: x.view_as(lucid.zeros(2, 6)), lambda a: a.reshape(2, 6), a34),
    "reshape_as": (lambda x: x.reshape_as(lucid.zeros(12)), lambda a: a.reshape(12), a34),
    "chunk 3 of 5": (lambda x: x.chunk(3, dim=3), lambda a: (a[..., :2], a[..., 2:4], a[..., 4:]), a2345),
    "chunk more than size": (lambda x: x.chunk(5, 1), lambda a: (a[:, :1], a[:, 1:2], a[:, 2:]), a2345),
    "split int": (lambda x: x.split(2, dim=-1), lambda a: (a[..., :2], a[..., 2:4], a[..., 4:]), a2345),
    "split list": (lambda x: x.split([1, 3], 2), lambda a: (a[:, :, :1], a[:, :, 1:]), a2345),
    "unbind": (lambda x: x.unbind(1), lambda a: tuple(a[:, i] for i in range(3)), a2345),
    "repeat": (lambda x: x.repeat(2, 1, 3), lambda a: np.tile(a, (2, 1, 3)), a34),
    "repeat same rank": (lambda x: x.repeat(1, 2), lambda a: np.tile(a, (1, 2)), a34),
    "expand_as": (lambda x: x.unsqueeze(1).expand_as(lucid.zeros(3, 2, 4)),
                  lambda a: np.broadcast_to(a[:, None], (3, 2, 4)), a34),
    "expand -1": (lambda x: x.unsqueeze(0).expand(2, -1, -1), lambda a: np.broadcast_to(a, (2, 3, 4)), a34),
    "contiguous": (lambda x: x.contiguous(), lambda a: a, a34),
    "clone": (lambda x: x.clone(), lambda a: a, a34),
    "squeeze all": (lambda x: x.reshape(1, 3, 1, 4).squeeze(), lambda a: a, a34),
    "squeeze int": (lambda x: x.reshape(1, 3, 1, 4).squeeze(-2), lambda a: a.reshape(1, 3, 4), a34),
    "squeeze tuple": (lambda x: x.reshape(1, 3, 1, 4).squeeze((0, 1)), lambda a: a.reshape(3, 1, 4), a34),
    "squeeze non-1": (lambda x: x.squeeze(0), lambda a: a, a34),
    "unsqueeze -1": (lambda x: x.unsqueeze(-1), lambda a: a[..., None], a34),
    "unsqueeze 2": (lambda x: x.unsqueeze(2), lambda a: a[:, :, None], a34),
    "flatten 1": (lambda x: x.flatten(1), lambda a: a.reshape(2, -1), a2345),
    "flatten 1..2": (lambda x: x.flatten(1, 2), lambda a: a.reshape(2, 12, 5), a2345),
    "narrow": (lambda x: x.narrow(1, 1, 2), lambda a: a[:, 1:3], a34),
    "select": (lambda x: x.select(-1, 2), lambda a: a[..., 2], a2345),
    "add alpha": (lambda x: x.add(T(b4), alpha=2.5), lambda a: a + 2.5 * b4, a34),
    "sub alpha": (lambda x: x.sub(1.5, alpha=2), lambda a: a - 3.0, a34),
    "mul": (lambda x: x.mul(T(b4)), lambda a: a * b4, a34),
    "div": (lambda x: x.div(T(b4)), lambda a: a / b4, a34),
    "pow": (lambda x: x.abs().pow(1.5), lambda a: np.abs(a) ** 1.5, a34),
    "neg": (lambda x: x.neg(), lambda a: -a, a34),
    "maximum": (lambda x: x.maximum(T(b4)), lambda a: np.maximum(a, b4), a34),
    "minimum": (lambda x: x.minimum(T(b4)), lambda a: np.minimum(a, b4), a34),
    "where method": (lambda x: x.where(x > 0, T(b4)), lambda a: np.where(a > 0, a, b4), a34),
    "clamp tensors": (lambda x: x.clamp(min=T(b4) - 1, max=T(b4) + 1), lambda a: np.clip(a, b4 - 1, b4 + 1), a34),
    "type_as": (lambda x: x.type_as(lucid.zeros(1, dtype=lucid.float64)), lambda a: a.astype(np.float64), a34),
    "new_zeros": (lambda x: x.new_zeros(2, 3), lambda a: np.zeros((2, 3), np.float32), a34),
    "new_ones": (lambda x: x.new_ones((2,)), lambda a: np.ones(2, np.float32), a34),
    "new_full": (lambda x: x.new_full((2, 2), 7, dtype=lucid.int64), lambda a: np.full((2, 2), 7), a34),
    "sum dims keepdim": (lambda x: x.sum(dim=(1, 3), keepdim=True), lambda a: a.sum((1, 3), keepdims=True), a2345),
    "sum dtype": (lambda x: x.sum(1, dtype=lucid.float64), lambda a: a.astype(np.float64).sum(1), a34),
    "mean dims": (lambda x: x.mean(dim=(0, -1)), lambda a: a.mean((0, -1)), a2345),
    "max all": (lambda x: x.max(), lambda a: a.max(), a34),
    "max dim": (lambda x: x.max(dim=1), lambda a: (a.max(1), a.argmax(1)), a34),
    "max dim keepdim": (lambda x: x.max(0, keepdim=True), lambda a: (a.max(0, keepdims=True),
                                                                    a.argmax(0)[None]), a34),
    "min dim": (lambda x: x.min(-1), lambda a: (a.min(-1), a.argmin(-1)), a2345),
    "max other": (lambda x: x.max(T(b4)), lambda a: np.maximum(a, b4), a34),
    "max axis= (NumPy)": (lambda x: x.max(axis=(0, 2)), lambda a: a.max((0, 2)), a2345),
    "amax": (lambda x: x.amax(dim=(1, 2)), lambda a: a.max((1, 2)), a2345),
    "amin keepdim": (lambda x: x.amin(-1, keepdim=True), lambda a: a.min(-1, keepdims=True), a2345),
    "amax all": (lambda x: x.amax(), lambda a: a.max(), a34),
    "argmin": (lambda x: x.argmin(dim=1), lambda a: a.argmin(1), a34),
    "var unbiased": (lambda x: x.var(1), lambda a: a.var(1, ddof=1), a34),
    "var biased keepdim": (lambda x: x.var((0, 1), unbiased=False, keepdim=True),
                           lambda a: a.var((0, 1), keepdims=True), a2345),
    "var correction": (lambda x: x.var(dim=0, correction=2), lambda a: a.var(0, ddof=2), a34),
    "var(False)": (lambda x: x.var(False), lambda a: a.var(), a34),
    "std": (lambda x: x.std(dim=-1), lambda a: a.std(-1, ddof=1), a2345),
    "std biased": (lambda x: x.std(unbiased=False), lambda a: a.std(), a34),
    "rsqrt": (lambda x: x.abs().rsqrt(), lambda a: 1 / np.sqrt(np.abs(a)), a34),
    "square": (lambda x: x.square(), lambda a: a * a, a34),
    "reciprocal": (lambda x: x.reciprocal(), lambda a: 1 / a, a34),
    "size(dim)": (lambda x: x.new_zeros(x.size(1), x.size(-2)), lambda a: np.zeros((3, 4), np.float32), a2345),
}


@pytest.mark.parametrize("name", METHOD_CASES)
def test_method_matches_numpy(name):
    method, oracle, a = METHOD_CASES[name]
    same(method(T(a)), oracle(a), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", METHOD_CASES)
def test_method_traced_and_compiled_matches_eager(name):
    method, _, a = METHOD_CASES[name]
    compiled_matches_eager(method, a)


def test_max_and_min_along_a_dim_return_values_and_indices_as_pytorch():
    a = np.array([[1.0, 5.0, 5.0], [-2.0, -7.0, 0.0]], np.float32)
    values, indices = T(a).max(1)
    result = T(a).min(dim=1, keepdim=True)
    assert indices.dtype == lucid.int64 and indices.tolist() == [1, 2] and values.tolist() == [5.0, 0.0]
    assert result.values.tolist() == [[1.0], [-7.0]] and result.indices.tolist() == [[0], [1]]


def test_float_checks_and_closeness():
    a = np.array([1.0, np.inf, -np.inf, np.nan, 0.0], np.float32)
    b = np.array([1.0 + 1e-7, np.inf, np.inf, np.nan, 1e-9], np.float32)
    x, y = T(a), T(b)
    assert x.isfinite().tolist() == np.isfinite(a).tolist() == lucid.isfinite(x).tolist()
    assert x.isnan().tolist() == np.isnan(a).tolist() and lucid.isinf(x).tolist() == np.isinf(a).tolist()
    for equal_nan in (False, True):
        assert lucid.isclose(x, y, equal_nan=equal_nan).tolist() == np.isclose(a, b, equal_nan=equal_nan).tolist()
    assert lucid.allclose(T([1.0, 2.0]), T([1.0, 2.0 + 1e-7])) and not lucid.allclose(x, y)
    assert lucid.equal(T([1, 2]), T([1, 2])) and not lucid.equal(T([1, 2]), T([1, 3]))
    same(lucid.compile(lambda p: (p.isfinite(), p.isnan(), p.isinf()))(x),
         (np.isfinite(a), np.isnan(a), np.isinf(a)))


def test_creation_like_functions():
    x = T(arr(2, 3))
    assert lucid.full_like(x, 2.5).tolist() == [[2.5] * 3] * 2 and lucid.full_like(x, 2.5).dtype == lucid.float32
    assert lucid.full_like(x, 3, dtype=lucid.int64).dtype == lucid.int64
    assert lucid.zeros_like(x).shape == lucid.ones_like(x).shape == (2, 3)
    compiled_matches_eager(lambda v: v + lucid.full_like(v, 2.0) + lucid.zeros_like(v) + v.new_ones(v.shape), arr(2, 3))


# ----------------------------------------------------------------------------------------------
# The function namespace


FUNCTION_CASES = {
    "sum": (lambda x: lucid.sum(x, dim=1), lambda a: a.sum(1)),
    "sum all": (lambda x: lucid.sum(x), lambda a: a.sum()),
    "mean keepdim": (lambda x: lucid.mean(x, 0, keepdim=True), lambda a: a.mean(0, keepdims=True)),
    "exp": (lucid.exp, np.exp),
    "log abs": (lambda x: lucid.log(lucid.abs(x)), lambda a: np.log(np.abs(a))),
    "sqrt": (lambda x: lucid.sqrt(x.abs()), lambda a: np.sqrt(np.abs(a))),
    "where": (lambda x: lucid.where(x > 0, x, 0.0), lambda a: np.where(a > 0, a, 0)),
    "where scalars": (lambda x: lucid.where(x > 0, 1.0, -1.0), lambda a: np.where(a > 0, 1.0, -1.0)),
    "clamp": (lambda x: lucid.clamp(x, -0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5)),
    "clip min": (lambda x: lucid.clip(x, min=0.1), lambda a: np.maximum(a, 0.1)),
    "maximum": (lambda x: lucid.maximum(x, -x), np.abs),
    "minimum": (lambda x: lucid.minimum(x, 0.0 * x), lambda a: np.minimum(a, 0)),
    "reshape": (lambda x: lucid.reshape(x, (4, -1)), lambda a: a.reshape(4, -1)),
    "flatten": (lambda x: lucid.flatten(x), lambda a: a.reshape(-1)),
    "matmul": (lambda x: lucid.matmul(x, x.transpose(0, 1)), lambda a: a @ a.T),
    "add": (lambda x: lucid.add(x, 2.0, alpha=3), lambda a: a + 6),
    "add scalar first": (lambda x: lucid.add(1.0, x), lambda a: 1 + a),
    "sub": (lambda x: lucid.sub(x, x * 2, alpha=0.5), lambda a: a - a),
    "mul": (lambda x: lucid.mul(3, x), lambda a: 3 * a),
    "div": (lambda x: lucid.div(x, 4.0), lambda a: a / 4),
    "max": (lambda x: lucid.max(x), lambda a: a.max()),
    "max dim": (lambda x: lucid.max(x, 1), lambda a: (a.max(1), a.argmax(1))),
    "max pair": (lambda x: lucid.max(x, -x), np.abs),
    "min dim": (lambda x: lucid.min(x, dim=0).values, lambda a: a.min(0)),
    "amax": (lambda x: lucid.amax(x, (0, 1)), lambda a: a.max()),
    "amin": (lambda x: lucid.amin(x, 1), lambda a: a.min(1)),
    "sigmoid": (lucid.sigmoid, lambda a: 1 / (1 + np.exp(-a))),
    "tanh": (lucid.tanh, np.tanh),
    "relu": (lucid.relu, lambda a: np.maximum(a, 0)),
    "softmax": (lambda x: lucid.softmax(x, dim=1), lambda a: np.exp(a) / np.exp(a).sum(1, keepdims=True)),
    "permute": (lambda x: lucid.permute(x.unsqueeze(0), (2, 0, 1)), lambda a: a[None].transpose(2, 0, 1)),
    "transpose": (lambda x: lucid.transpose(x, 0, 1), lambda a: a.T),
    "squeeze": (lambda x: lucid.squeeze(x.unsqueeze(1), 1), lambda a: a),
    "unsqueeze": (lambda x: lucid.unsqueeze(x, 0), lambda a: a[None]),
    "chunk": (lambda x: lucid.chunk(x, 2, 1), lambda a: (a[:, :2], a[:, 2:])),
    "split": (lambda x: lucid.split(x, [1, 2], dim=0), lambda a: (a[:1], a[1:])),
    "unbind": (lambda x: lucid.unbind(x, 1), lambda a: tuple(a[:, i] for i in range(4))),
    "cat": (lambda x: lucid.cat([x, x * 2], dim=1), lambda a: np.concatenate([a, 2 * a], 1)),
    "concat axis": (lambda x: lucid.concat([x, x], axis=0), lambda a: np.concatenate([a, a], 0)),
    "stack": (lambda x: lucid.stack([x, -x], dim=-1), lambda a: np.stack([a, -a], -1)),
    "std": (lambda x: lucid.std(x, 1), lambda a: a.std(1, ddof=1)),
    "var": (lambda x: lucid.var(x, unbiased=False), lambda a: a.var()),
    "pow": (lambda x: lucid.pow(x, 2), lambda a: a * a),
    "neg": (lucid.neg, np.negative),
    "argmax": (lambda x: lucid.argmax(x, dim=1), lambda a: a.argmax(1)),
    "clone": (lucid.clone, lambda a: a),
}


@pytest.mark.parametrize("name", FUNCTION_CASES)
def test_function_matches_numpy_and_compiles(name):
    fn, oracle = FUNCTION_CASES[name]
    eager = compiled_matches_eager(fn, a34)
    same(eager, oracle(a34), rtol=2e-6, atol=2e-6)


def test_a_function_needs_a_tensor():
    with pytest.raises(DTypeError, match="lucid.exp: expected a tensor"):
        lucid.exp(2.0)
    with pytest.raises(DTypeError, match="lucid.where"):
        lucid.where([True], 1.0, 2.0)


# ----------------------------------------------------------------------------------------------
# Gradients of the composed methods


GRADIENT_CASES = {
    "repeat": (lambda x: x.repeat(2, 1, 3), arr(3, 2)),
    "chunk": (lambda x: x.chunk(2, 1)[1] * 3, arr(2, 5)),
    "split sections": (lambda x: lucid.cat(x.split([2, 1], dim=0)[::-1], 0), arr(3, 2)),
    "unbind": (lambda x: x.unbind(1)[0] * x.unbind(1)[2], arr(2, 3)),
    "narrow": (lambda x: x.narrow(0, 1, 2), arr(4, 2)),
    "max dim": (lambda x: x.max(1).values, arr(3, 4)),
    "min dim keepdim": (lambda x: x.min(0, keepdim=True)[0], arr(3, 4)),
    "std": (lambda x: x.std(dim=1), arr(3, 4)),
    "var correction 0": (lambda x: x.var(0, correction=0, keepdim=True), arr(3, 4)),
    "clamp tensors": (lambda x: x.clamp(min=x * 0 - 0.5, max=x * 0 + 0.5), arr(3, 4)),
    "expand_as": (lambda x: x.expand_as(lucid.zeros(3, 2, 4, dtype=lucid.float64)), arr(2, 1)),
    "add alpha": (lambda x: x.add(x * x, alpha=-2), arr(3)),
    "where": (lambda x: lucid.where(x > 0, x * 2, x * x), arr(5)),
    "amax": (lambda x: x.amax(dim=(0, 1)), arr(2, 3, 2)),
    "rsqrt": (lambda x: (x * x + 1).rsqrt(), arr(4)),
}


@pytest.mark.parametrize("name", GRADIENT_CASES)
def test_gradient_matches_finite_differences(name):
    fn, a = GRADIENT_CASES[name]
    gradient_matches_finite_differences(fn, a)


@pytest.mark.parametrize("name", ["repeat", "max dim", "std", "unbind", "chunk"])
def test_compiled_gradient_matches_eager(name):
    fn, a = GRADIENT_CASES[name]
    eager, compiled = (T(a, requires_grad=True) for _ in range(2))
    fn(eager).sum().backward()
    lucid.compile(lambda x: fn(x).sum())(compiled).backward()
    np.testing.assert_allclose(compiled.grad.numpy(), eager.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_gradients_of_ties_follow_pytorch():
    torch = pytest.importorskip("torch")
    a = np.array([[1.0, 3.0, 3.0, -1.0], [2.0, 2.0, 2.0, 0.0]], np.float32)
    b = np.array([1.0, 3.0, 0.0, -1.0], np.float32)
    cases = [lambda lib, x, y: lib.maximum(x, y), lambda lib, x, y: lib.minimum(x, y),
             lambda lib, x, y: x.max(1)[0], lambda lib, x, y: x.min(dim=1).values, lambda lib, x, y: x.amax(1),
             lambda lib, x, y: x.max(), lambda lib, x, y: x.clamp(min=y)]
    for case in cases:
        x, y = T(a, requires_grad=True), T(b, requires_grad=True)
        tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        (case(lucid, x, y) * 3).sum().backward()
        (case(torch, tx, ty) * 3).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy())
        if ty.grad is not None:
            np.testing.assert_allclose(y.grad.numpy(), ty.grad.numpy())


def test_methods_against_pytorch():
    torch = pytest.importorskip("torch")
    a = arr(2, 3, 4)
    x, tx = T(a), torch.tensor(a)
    pairs = [(x.repeat(2, 1, 1, 2), tx.repeat(2, 1, 1, 2)), (x.std(1), tx.std(1)),
             (x.var(2, keepdim=True), tx.var(2, keepdim=True)), (x.var(unbiased=False), tx.var(unbiased=False)),
             (x.var(0, correction=0), tx.var(0, correction=0))]
    pairs += list(zip(x.chunk(3, 2), tx.chunk(3, 2))) + list(zip(x.split([1, 2], 1), tx.split([1, 2], 1)))
    pairs += list(zip(x.max(dim=-1), tx.max(dim=-1))) + list(zip(x.min(1, True), tx.min(1, True)))
    pairs += [(x.squeeze((0, 1)), tx.squeeze((0, 1))), (x[:, :1].squeeze((0, 1)), tx[:, :1].squeeze((0, 1)))]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Bad dims and sizes are refused naming the method


@pytest.mark.parametrize("call, method", [
    (lambda x: x.unsqueeze(4), "unsqueeze"),
    (lambda x: x.squeeze(3), "squeeze"),
    (lambda x: x.squeeze((0, 5)), "squeeze"),
    (lambda x: x.chunk(2, dim=3), "chunk"),
    (lambda x: x.chunk(0), "chunk"),
    (lambda x: x.split([1, 2], 0), "split"),
    (lambda x: x.split(2, dim=-4), "split"),
    (lambda x: x.unbind(3), "unbind"),
    (lambda x: x.flatten(0, 5), "flatten"),
    (lambda x: x.size(3), "size"),
    (lambda x: x.narrow(1, 2, 5), "narrow"),
    (lambda x: x.max(dim=(0, 1)), "max"),
    (lambda x: x.min(7), "min"),
    (lambda x: x.transpose(0, 3), "transpose"),
    (lambda x: x.repeat(2, 2), "repeat"),
    (lambda x: x.expand(2, 4, 4), "broadcast_to"),
    (lambda x: x.expand(4), "expand"),
    (lambda x: x.view(5, -1), "reshape"),
])
def test_bad_dims_are_shape_errors_naming_the_method(call, method):
    with pytest.raises(ShapeError, match=method):
        call(T(arr(2, 3, 4)))
    with pytest.raises(ShapeError, match=method):
        lucid.trace(call, lucid.spec(2, 3, 4))


# ----------------------------------------------------------------------------------------------
# In place


def test_in_place_arithmetic_changes_the_tensor_object():
    out, identity = T(arr(2, 3)), T(arr(2, 3))
    alias, before = out, out.numpy().copy()
    out += identity
    assert out is alias
    np.testing.assert_allclose(alias.numpy(), before + identity.numpy())
    out *= 2
    out -= 1
    out /= 4
    np.testing.assert_allclose(alias.numpy(), ((before + identity.numpy()) * 2 - 1) / 4, rtol=1e-6)
    assert out.add_(identity, alpha=2) is out and out.mul_(0.5) is out and out.sub_(1.0) is out
    x = T([-2.0, 0.5, 3.0])
    assert x.clamp_(-1.0, 1.0).tolist() == [-1.0, 0.5, 1.0] and x.tolist() == [-1.0, 0.5, 1.0]
    assert x.relu_().tolist() == [0.0, 0.5, 1.0] and x.neg_().tolist() == [-0.0, -0.5, -1.0]
    assert x.zero_().tolist() == [0.0] * 3 and x.fill_(2.5).tolist() == [2.5] * 3
    assert x.copy_(T([1, 2, 3])).tolist() == [1.0, 2.0, 3.0] and x.dtype == lucid.float32
    assert x.copy_(np.array([4.0])).tolist() == [4.0] * 3 and x.fill_(T(7.0)).tolist() == [7.0] * 3
    source = T([5.0, 6.0, 7.0])
    x.copy_(source)
    x[0] = 0.0
    assert source.tolist() == [5.0, 6.0, 7.0] and x.tolist() == [0.0, 6.0, 7.0]
    counts = T([1, 2, 3])
    counts += 1
    assert counts.fill_(2.7).tolist() == [2, 2, 2] and counts.dtype == lucid.int64


def test_in_place_refusals_follow_pytorch():
    with pytest.raises(DTypeError, match=r"\+=: a float32 result cannot be written into a int64 tensor"):
        counts = T([1, 2])
        counts += 0.5
    with pytest.raises(ShapeError, match="add_: the result has shape"):
        T(arr(3)).add_(T(arr(2, 3)))
    leaf = T(arr(3), requires_grad=True)
    with pytest.raises(GradientError, match="mul_: a leaf tensor that requires grad"):
        leaf.mul_(2)
    with pytest.raises(GradientError, match="leaf"):
        leaf += 1
    with lucid.no_grad():
        leaf.mul_(2).add_(1)
    assert leaf.requires_grad and leaf.is_leaf


def test_in_place_gradients_match_the_out_of_place_computation_and_pytorch():
    a, w = arr(2, 3), arr(2, 3)
    x = T(a, requires_grad=True)
    out = x * T(w)
    out += x
    out.mul_(3).relu_()
    assert out.grad_fn == "relu"
    (out * out).sum().backward()
    reference = T(a, requires_grad=True)
    ((reference * T(w) + reference) * 3).relu().square().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), reference.grad.numpy())
    torch = pytest.importorskip("torch")
    tx = torch.tensor(a, requires_grad=True)
    tout = tx * torch.tensor(w)
    tout += tx
    tout.mul_(3).relu_()
    (tout * tout).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-6)


def test_backward_through_an_input_changed_in_place_afterwards_is_refused():
    x, w = T(arr(3), requires_grad=True), T(arr(3))
    h = x * 2
    y = h * w
    h.add_(1)
    with pytest.raises(GradientError, match="changed by an in-place operation"):
        y.sum().backward()
    y = x * w
    with lucid.no_grad():
        w[0] = 5.0
    with pytest.raises(GradientError, match="in-place"):
        y.sum().backward()


def test_in_place_on_a_tensor_without_grad_takes_the_other_operands_history():
    x, acc = T(arr(3), requires_grad=True), lucid.zeros(3)
    acc += x * x
    assert acc.requires_grad and not acc.is_leaf
    acc.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy(), rtol=1e-6)


def test_clone_is_a_copy_with_history():
    x = T(arr(3), requires_grad=True)
    y = x * 1.0
    copy = y.clone()
    copy.add_(1)
    np.testing.assert_allclose(y.numpy(), x.numpy())
    (copy * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0] * 3)


class ResidualWithInPlace(nn.Module):
    """How torchvision's BasicBlock and MONAI's units write a residual: in-place add and ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x
        out = self.conv(x)
        out += identity
        out = self.relu(out)
        out.mul_(0.5)
        out.add_(identity, alpha=-1.0).clamp_(min=-1.0)
        return out


def test_a_module_written_with_in_place_ops_traces_compiles_and_trains_like_eager():
    model = ResidualWithInPlace()
    a = arr(2, 3, 5, 5)
    eager = model(T(a))
    want = np.maximum(np.maximum(model.conv(T(a)).numpy() + a, 0) * 0.5 - a, -1.0)
    np.testing.assert_allclose(eager.numpy(), want, rtol=1e-5, atol=1e-6)
    compiled = lucid.compile(model)
    np.testing.assert_allclose(compiled(T(a)).numpy(), eager.numpy(), rtol=1e-5, atol=1e-6)
    x_eager, x_compiled = T(a, requires_grad=True), T(a, requires_grad=True)
    model(x_eager).sum().backward()
    eager_grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    model.zero_grad()
    compiled(x_compiled).sum().backward()
    np.testing.assert_allclose(x_compiled.grad.numpy(), x_eager.grad.numpy(), rtol=1e-4, atol=1e-5)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), eager_grads[name], rtol=1e-4, atol=1e-5)


def test_traced_in_place_changes_the_value_for_every_name_bound_to_it():
    def fn(x, y):
        z = x * 1.0
        alias, before = z, z + 0.0
        z += y
        assert z is alias and z.mul_(2) is z
        z.relu_()                       # a statement: its effect is kept, as eagerly
        x.sub_(1.0)                     # an input changed in place: later reads read the new value
        w = lucid.zeros(3)              # an eager tensor: later reads in the trace read the new value
        w.add_(alias)
        return alias, before, w, x

    x, y = arr(3), arr(3)
    want = np.maximum((x + y) * 2, 0)
    eager = fn(T(x), T(y))
    same(eager, (want, x, want, x - 1))
    same(lucid.compile(fn)(T(x), T(y)), eager)


def test_traced_in_place_on_a_module_buffer_updates_it_when_the_graph_runs():
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", lucid.zeros(1))

        def forward(self, x):
            self.calls += 1
            self.calls.mul_(1.0)
            return x * self.calls

    eager, compiled_model = Counter(), Counter()
    compiled = lucid.compile(compiled_model)
    for _ in range(3):
        want = eager(T(np.ones(2, np.float32)))
        same(compiled(T(np.ones(2, np.float32))), want)
    assert eager.calls.tolist() == compiled_model.calls.tolist() == [3.0]


def test_traced_in_place_checks_shape_and_dtype():
    with pytest.raises(ShapeError, match="add_"):
        lucid.trace(lambda x: x.add_(lucid.zeros(2, 3)), lucid.spec(3))
    with pytest.raises(DTypeError, match="mul_"):
        lucid.trace(lambda x: x.mul_(0.5), lucid.spec(3, dtype=lucid.int64))


def test_in_place_on_a_parameter_while_tracing_is_refused_as_eagerly():
    layer = nn.Linear(2, 2)

    def fn(x):
        layer.weight.mul_(2)
        return layer(x)

    with pytest.raises(GradientError, match="leaf"):
        lucid.trace(fn, lucid.spec(1, 2))


# ----------------------------------------------------------------------------------------------
# Shapes as PyTorch code reads them


def test_shape_slicing_and_comparison():
    x = lucid.zeros(2, 3, 4, 5)
    assert x.shape[2:] == (4, 5) and x.size()[2:] == (4, 5) and x.shape[-1] == 5
    assert x.shape == (2, 3, 4, 5) and x.shape != (2, 3) and list(x.shape) == [2, 3, 4, 5]
    assert tuple(x.shape) == x.size() and x.shape[1:] == x.size()[1:]
    assert x.shape == lucid.Size([2, 3, 4, 5]) and isinstance(x.size(), lucid.Size)
    torch = pytest.importorskip("torch")
    assert x.shape == torch.Size([2, 3, 4, 5]) and torch.zeros(*x.shape[1:]).shape == x.size()[1:]
