"""A norm's statistics from the sums a conv stores with its rows (`unpack.RowStatistics`,
`normalization._moments_of_rows`): the conv's unpacking sums each output row as it stores it, and the
norm's `moments` combines the rows' sums instead of reading the conv output again from memory.

Against a float64 NumPy oracle (the convs from tests/oracle.py, the norm written out here): every conv
algorithm (Winograd, direct, planes, over points, disjoint blocks, a transposed conv's phases and
their exact sums), instance and batch norms, 2-D and 3-D, odd sizes, one and two threads; data far
from zero; values not finite against the interpreter's `moments` (the same NaN and infinities); and
when the rows' sums are not used: a conv between the two, a group norm, symbolic sizes, outputs
small enough to be read again from cache (the other tests lower `ROW_STATISTICS_BYTES` to 0); two
identical blocks in one graph (the second conv replayed from the first) both use them."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import oracle
from lucid.codegen.kernels.conv import algorithms
from lucid.ir import ops
from lucid.passes import dead_code, fusion, memory_planning
from lucid.runtime.executable import Executable
from model_helpers import kernel_labels

TOL = 2e-5
SLOPE = 0.1


class ConvNorm(nn.Module):
    def __init__(self, conv: nn.Module, norm: nn.Module):
        super().__init__()
        self.conv, self.norm, self.act = conv, norm, nn.LeakyReLU(SLOPE)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


def _norm_act(y: np.ndarray, weight: np.ndarray, bias: np.ndarray, over_batch: bool, eps: float = 1e-5):
    axes = (0,) + tuple(range(2, y.ndim)) if over_batch else tuple(range(2, y.ndim))
    mean, var = y.mean(axis=axes, keepdims=True), y.var(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (y.ndim - 2)
    out = (y - mean) / np.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)
    return np.where(out > 0, out, SLOPE * out)


def _conv_oracle(conv, x: np.ndarray, attrs: dict) -> np.ndarray:
    w, b = (p.numpy().astype(np.float64) for p in (conv.weight, conv.bias))
    transposed = isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))
    return (oracle.conv_transpose_nd if transposed else oracle.conv_nd)(x.astype(np.float64), w, b, **attrs)


def _assert_close(actual, wanted, what):
    scale = max(float(np.max(np.abs(wanted))), 1e-30)
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - wanted)))
    assert error <= TOL * scale, f"{what}: max error {error:.3g} > {TOL:g} x {scale:.3g}"


def _executable(compiled):
    return list(compiled.variants.values())[-1].executable


@pytest.fixture(autouse=True)
def small_outputs_take_them(monkeypatch):
    """The tests' outputs are small: the rows' sums from any size on (but see the last test)."""
    monkeypatch.setattr(algorithms, "ROW_STATISTICS_BYTES", 0)


@pytest.fixture
def winograd_on_small_layers(monkeypatch):
    from lucid.codegen.kernels.conv import winograd

    monkeypatch.setattr(winograd, "MIN_ITEMS_PER_CORE", 0)
    monkeypatch.setattr(winograd, "WEIGHT_TRANSFORM_CYCLES", 0)


# (the conv, its attributes for the oracle, input shape, the kernel showing the algorithm)
CASES = [
    (lambda: nn.Conv3d(16, 16, 3, padding=1), dict(padding=1), (1, 16, 5, 6, 7), "wino_conv"),
    (lambda: nn.Conv3d(3, 8, 3, stride=2, padding=1), dict(stride=2, padding=1), (2, 3, 7, 9, 10), "conv_direct"),
    (lambda: nn.Conv3d(5, 7, 1), {}, (2, 5, 3, 4, 6), "conv_planes"),
    (lambda: nn.Conv3d(6, 2, 3, padding=1), dict(padding=1), (2, 6, 4, 7, 21), "conv_direct_points"),
    (lambda: nn.ConvTranspose3d(8, 6, 2, stride=2), dict(stride=2), (1, 8, 3, 4, 8), "convT_blocks"),
    (lambda: nn.ConvTranspose3d(6, 4, 4, stride=2, padding=1), dict(stride=2, padding=1), (1, 6, 3, 4, 5),
     "convT_direct"),
    (lambda: nn.Conv2d(4, 12, 3, padding=1), dict(padding=1), (2, 4, 9, 11), "conv_direct"),
]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_instance_norm_after_every_algorithm(index, winograd_on_small_layers):
    conv, attrs, shape, label = CASES[index]
    conv = conv()
    channels = conv.weight.shape[1 if isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0]
    norm = (nn.InstanceNorm3d if len(shape) == 5 else nn.InstanceNorm2d)(channels, affine=True)
    rng = np.random.default_rng(index)
    norm.weight.data = lucid.tensor(rng.uniform(0.5, 1.5, channels).astype(np.float32))
    norm.bias.data = lucid.tensor(rng.uniform(-0.5, 0.5, channels).astype(np.float32))
    model = ConvNorm(conv, norm).eval()
    x = rng.standard_normal(shape).astype(np.float32)
    compiled = lucid.compile(model)
    with lucid.no_grad():
        compiled(lucid.tensor(x))
    executable = _executable(compiled)
    labels = kernel_labels(executable)
    assert any(name.startswith(label) for name in labels) and "moments_of_rows" in labels, labels
    want = _norm_act(_conv_oracle(conv, x, attrs), norm.weight.numpy(), norm.bias.numpy(), over_batch=False)
    for threads in (2, 1):
        _assert_close(executable(x, threads=threads)[0], want, f"case {index}, {threads} threads")


def test_the_sums_of_an_epilogue_s_output():
    """A residual added and a ReLU behind the conv (its epilogue): the norm's statistics are those of
    the stored sum."""
    rng = np.random.default_rng(4)
    x, r = rng.standard_normal((1, 6, 5, 6, 7)).astype(np.float32), rng.standard_normal((1, 8, 5, 6, 7)).astype(np.float32)
    w = rng.standard_normal((8, 6, 3, 3, 3)).astype(np.float32)

    def fn(x, r, w):
        return ops.moments(lucid.nn.functional.relu(lucid.nn.functional.conv3d(x, w, padding=1) + r), axes=(2, 3, 4))

    graph = lucid.trace(fn, *(lucid.spec(*a.shape) for a in (x, r, w)), name="epilogue_sums")
    executable = Executable(memory_planning.run(dead_code.run(fusion.run(graph))))
    assert "moments_of_rows" in kernel_labels(executable)
    y = np.maximum(oracle.conv_nd(x.astype(np.float64), w.astype(np.float64), padding=1) + r, 0)
    for threads in (2, 1):
        got = executable(x, r, w, threads=threads)[0]
        np.testing.assert_allclose(got[0].ravel(), y.mean(axis=(2, 3, 4)).ravel(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1].ravel(), y.var(axis=(2, 3, 4)).ravel(), rtol=1e-5, atol=1e-6)


def test_exact_sums_of_a_transposed_conv_with_an_infinite_weight(winograd_on_small_layers):
    """Its rows are exact sums (nonfinite.py): their sums are stored alike; NaN where eager has them."""
    conv = nn.ConvTranspose3d(6, 4, 4, stride=2, padding=1)
    weight = conv.weight.numpy().copy()
    weight[1, 2, 1, 2, 0] = np.inf
    conv.weight.data = lucid.tensor(weight)
    model = ConvNorm(conv, nn.InstanceNorm3d(4)).eval()
    x = np.random.default_rng(3).standard_normal((1, 6, 3, 4, 5)).astype(np.float32)
    compiled = lucid.compile(model)
    with lucid.no_grad():
        got, eager = compiled(lucid.tensor(x)).numpy(), model(lucid.tensor(x)).numpy()
    assert "moments_of_rows" in kernel_labels(_executable(compiled))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(eager))
    finite = np.isfinite(eager)
    _assert_close(got[finite], eager[finite].astype(np.float64), "the finite outputs")


def test_batch_norm_in_a_training_step():
    """Batch statistics (over the batch too) in a compiled training step: the output, the running
    statistics and the weight's gradient against eager lucid."""
    lucid.manual_seed(5)
    model = ConvNorm(nn.Conv3d(4, 8, 3, padding=1), nn.BatchNorm3d(8)).train()
    twin = ConvNorm(nn.Conv3d(4, 8, 3, padding=1), nn.BatchNorm3d(8)).train()
    twin.load_state_dict(model.state_dict())
    x = lucid.tensor(np.random.default_rng(5).standard_normal((3, 4, 5, 6, 7)).astype(np.float32) + 2.0)
    compiled = lucid.compile(lambda x: model(x).sum())
    compiled(x).backward()
    twin(x).sum().backward()
    labels = [label for variant in compiled.variants.values() for label in kernel_labels(variant.forward)]
    assert "moments_of_rows" in labels, labels
    for name in ("running_mean", "running_var"):
        _assert_close(getattr(model.norm, name).numpy(), getattr(twin.norm, name).numpy().astype(np.float64), name)
    _assert_close(model.conv.weight.grad.numpy(), twin.conv.weight.grad.numpy().astype(np.float64), "dw")


def _moments_graph(shape, w, b, name, padding=1):
    def fn(x):
        y = lucid.nn.functional.conv3d(x, lucid.tensor(w), lucid.tensor(b), padding=padding)
        return ops.moments(y, axes=(2, 3, 4))
    graph = lucid.trace(fn, lucid.spec(*shape), name=name)
    return graph, Executable(memory_planning.run(dead_code.run(fusion.run(graph))))


def _interpreted(graph, *arrays) -> list:
    """The reference interpreter's outputs, as a list."""
    outputs = lucid.ir.run(graph, *arrays)
    return outputs if isinstance(outputs, (list, tuple)) else [outputs]


def test_data_far_from_zero():
    """Each row's sums are taken from its first value: a conv output 1000 + N(0, 1e-2) keeps its
    variance to float32's accuracy."""
    rng = np.random.default_rng(8)
    w = (rng.standard_normal((4, 3, 3, 3, 3)) * 1e-3).astype(np.float32)
    b = np.full(4, 1000.0, np.float32)
    x = rng.standard_normal((1, 3, 6, 7, 9)).astype(np.float32)
    graph, executable = _moments_graph(x.shape, w, b, "far_from_zero")
    assert "moments_of_rows" in kernel_labels(executable)
    got = executable(x)[0]
    y = oracle.conv_nd(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=1)
    np.testing.assert_allclose(got[0].ravel(), y.mean(axis=(2, 3, 4)).ravel(), rtol=1e-6)
    np.testing.assert_allclose(got[1].ravel(), y.var(axis=(2, 3, 4)).ravel(), rtol=1e-3)


@pytest.mark.parametrize("where", ["row start", "both signs", "nan", "channel start"])
def test_values_not_finite_as_the_interpreter(where):
    """An infinity first in a row (not the channel's first), infinities of both signs, a NaN, an
    infinity first in the channel: the mean and variance are NaN or infinite where the
    interpreter's `moments` has them."""
    rng = np.random.default_rng(9)
    w = np.array([1.0, -2.0], np.float32).reshape(2, 1, 1, 1, 1)     # 1 x 1 x 1: no product with padding
    x = rng.standard_normal((1, 1, 3, 4, 5)).astype(np.float32)
    if where == "row start":
        x[0, 0, 1, 2, 0] = np.inf
    elif where == "both signs":
        x[0, 0, 0, 1, 3], x[0, 0, 2, 3, 1] = np.inf, -np.inf
    elif where == "nan":
        x[0, 0, 1, 1, 1] = np.nan
    else:
        x[0, 0, 0, 0, 0] = -np.inf
    graph, executable = _moments_graph(x.shape, w, np.zeros(2, np.float32), f"not_finite_{where.replace(' ', '_')}",
                                       padding=0)
    assert "moments_of_rows" in kernel_labels(executable)
    got, want = executable(x)[0], _interpreted(graph, x)[0]
    assert np.isinf(want).any() == (where in ("row start", "channel start")), want    # a mean of +-inf
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])


def test_when_the_rows_sums_are_not_used():
    """A conv lowered between the conv and its norm (it takes the workspace), a group norm, and a
    graph for every size read the conv output again, with the same values."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((1, 4, 5, 6, 7)).astype(np.float32)
    w1, w2 = (rng.standard_normal((8, 4, 3, 3, 3)).astype(np.float32) for _ in range(2))

    def between(x):
        y = lucid.nn.functional.conv3d(x, lucid.tensor(w1), padding=1)
        z = lucid.nn.functional.conv3d(x, lucid.tensor(w2), padding=1)
        return ops.moments(y, axes=(2, 3, 4)), z

    graph = lucid.trace(between, lucid.spec(*x.shape), name="conv_between")
    executable = Executable(memory_planning.run(dead_code.run(fusion.run(graph))))
    labels = kernel_labels(executable)
    got, want = executable(x)[0], _interpreted(graph, x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    order = [n.op for n in executable.graph.nodes if not n.is_constant]
    assert order == ["conv", "conv", "moments"], order                     # the second conv between
    assert "moments" in labels and "moments_of_rows" not in labels, labels

    lucid.manual_seed(11)
    grouped = ConvNorm(nn.Conv3d(4, 8, 3, padding=1), nn.GroupNorm(2, 8)).eval()
    compiled = lucid.compile(grouped)
    with lucid.no_grad():
        _assert_close(compiled(lucid.tensor(x)).numpy(), grouped(lucid.tensor(x)).numpy().astype(np.float64), "group")
    assert "moments_of_rows" not in kernel_labels(_executable(compiled))

    instance = ConvNorm(nn.Conv3d(4, 8, 3, padding=1), nn.InstanceNorm3d(8)).eval()
    dynamic = lucid.compile(instance, dynamic=True)
    with lucid.no_grad():
        for volume in [(4, 5, 6), (5, 9, 7)]:
            x = rng.standard_normal((1, 4) + volume).astype(np.float32)
            _assert_close(dynamic(lucid.tensor(x)).numpy(), instance(lucid.tensor(x)).numpy().astype(np.float64),
                          f"{volume}")


def test_two_identical_blocks_both_use_them():
    """The second block's conv has the first's `node_key`: replayed, it leaves its rows' sums too."""
    lucid.manual_seed(12)
    model = nn.Sequential(ConvNorm(nn.Conv3d(8, 8, 3, padding=1), nn.InstanceNorm3d(8)),
                          ConvNorm(nn.Conv3d(8, 8, 3, padding=1), nn.InstanceNorm3d(8))).eval()
    x = np.random.default_rng(12).standard_normal((1, 8, 4, 5, 6)).astype(np.float32)
    compiled = lucid.compile(model)
    with lucid.no_grad():
        got, eager = compiled(lucid.tensor(x)).numpy(), model(lucid.tensor(x)).numpy()
    _assert_close(got, eager.astype(np.float64), "two blocks")
    assert kernel_labels(_executable(compiled)).count("moments_of_rows") == 2


def test_small_outputs_are_read_again(monkeypatch):
    """Below `ROW_STATISTICS_BYTES` (8 MiB) the norm reads the output again, from cache."""
    monkeypatch.setattr(algorithms, "ROW_STATISTICS_BYTES", 8 << 20)
    lucid.manual_seed(13)
    model = ConvNorm(nn.Conv3d(4, 8, 3, padding=1), nn.InstanceNorm3d(8)).eval()
    x = np.random.default_rng(13).standard_normal((1, 4, 5, 6, 7)).astype(np.float32)
    compiled = lucid.compile(model)
    with lucid.no_grad():
        _assert_close(compiled(lucid.tensor(x)).numpy(), model(lucid.tensor(x)).numpy().astype(np.float64), "small")
    labels = kernel_labels(_executable(compiled))
    assert "moments" in labels and "moments_of_rows" not in labels, labels
