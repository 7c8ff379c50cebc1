"""A norm's normalize and activation feeding a convolution are computed as the convolution packs its
input (`Prologue`: fusion puts the elementwise tree in front of the anchor, the packings evaluate
it row by row), never stored.

Against a float64 NumPy oracle (the norm and activation written out here, the convs from
tests/oracle.py) and eager lucid: every algorithm that packs its input (Winograd, direct, the
stride phases of a transposed conv, the kernels over output points, transposed or not, a transposed
conv whose kernel is its stride), 2-D and 3-D, odd sizes, one and two threads, a transposed conv with non-finite weights (its exact sums
compute the tree too), symbolic sizes, a 1 x 1 x 1 conv over its planes; and which graphs take it:
not a 3 x 1 x 1 conv (read where its input is), not a tree whose value something else reads too."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import oracle
from lucid.passes import fusion, memory_planning
from lucid.runtime.executable import Executable

TOL = 2e-5
SLOPE = 0.1


def _norm_act(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, groups: int, eps: float = 1e-5) -> np.ndarray:
    """GroupNorm (InstanceNorm when groups == channels) with an affine, then LeakyReLU, in float64."""
    n, c = x.shape[:2]
    grouped = x.reshape(n, groups, -1)
    mean = grouped.mean(axis=2, keepdims=True)
    var = grouped.var(axis=2, keepdims=True)
    y = ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    y = y * weight.reshape(shape) + bias.reshape(shape)
    return np.where(y > 0, y, SLOPE * y)


class NormActConv(nn.Module):
    def __init__(self, channels: int, groups: int, conv: nn.Module):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.act = nn.LeakyReLU(SLOPE)
        self.conv = conv

    def forward(self, x):
        return self.conv(self.act(self.norm(x)))


def _model(channels: int, groups: int, conv: nn.Module, seed: int) -> NormActConv:
    lucid.manual_seed(seed)
    model = NormActConv(channels, groups, conv)
    rng = np.random.default_rng(seed)
    model.norm.weight.data = lucid.tensor(rng.uniform(0.5, 1.5, channels).astype(np.float32))
    model.norm.bias.data = lucid.tensor(rng.uniform(-0.5, 0.5, channels).astype(np.float32))
    return model.eval()


def _expected(model: NormActConv, x: np.ndarray, transposed: bool, attrs: dict) -> np.ndarray:
    h = _norm_act(x.astype(np.float64), model.norm.weight.numpy().astype(np.float64),
                  model.norm.bias.numpy().astype(np.float64), model.norm.num_groups)
    w, b = (p.numpy().astype(np.float64) for p in (model.conv.weight, model.conv.bias))
    return (oracle.conv_transpose_nd if transposed else oracle.conv_nd)(h, w, b, **attrs)


def _executable(compiled):
    return list(compiled.variants.values())[-1].executable


def _assert_close(actual, wanted, what):
    scale = max(float(np.max(np.abs(wanted))), 1e-30)
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - wanted)))
    assert error <= TOL * scale, f"{what}: max error {error:.3g} > {TOL:g} x {scale:.3g}"


# (input shape, groups of the norm, the conv, its attributes for the oracle, transposed, the kernel
# that shows the algorithm)
CASES = [
    ((2, 16, 5, 9, 11), 16, lambda: nn.Conv3d(16, 16, 3, padding=1), dict(padding=1), False, "wino_conv"),
    ((1, 8, 7, 9, 10), 4, lambda: nn.Conv3d(8, 12, 3, stride=2, padding=1), dict(stride=2, padding=1), False,
     "conv_direct"),
    ((1, 6, 3, 5, 4), 3, lambda: nn.ConvTranspose3d(6, 10, 4, stride=2, padding=1), dict(stride=2, padding=1), True,
     "convT_direct"),
    ((2, 6, 4, 7, 21), 6, lambda: nn.Conv3d(6, 2, 3, padding=1), dict(padding=1), False, "conv_direct_points"),
    ((1, 16, 3, 4, 37), 8, lambda: nn.ConvTranspose3d(16, 2, 3, stride=2, padding=1, output_padding=1),
     dict(stride=2, padding=1, output_padding=1), True, "convT_direct_points"),
    ((2, 16, 9, 13), 4, lambda: nn.Conv2d(16, 16, 3, padding=1), dict(padding=1), False, "wino_conv"),
    ((1, 12, 3, 5, 8), 4, lambda: nn.ConvTranspose3d(12, 10, 2, stride=2), dict(stride=2), True, "convT_blocks"),
]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_every_packing_computes_the_tree(index):
    shape, groups, conv, attrs, transposed, label = CASES[index]
    model = _model(shape[1], groups, conv(), index)
    x = np.random.default_rng(100 + index).standard_normal(shape).astype(np.float32)
    compiled = lucid.compile(model)
    with lucid.no_grad():
        eager, got = model(lucid.tensor(x)).numpy(), compiled(lucid.tensor(x)).numpy()
    _assert_close(got, eager.astype(np.float64), f"case {index} against eager")
    executable = _executable(compiled)
    for threads in (2, 1):
        _assert_close(executable(x, threads=threads)[0], _expected(model, x, transposed, attrs),
                      f"case {index}, {threads} threads")
    fused = [n for n in executable.graph.nodes if n.op == "fused"]
    prologued = [n for n in fused if [m.op for m in n.attrs["body"].nodes if not m.is_constant][-1]
                 in ("conv", "conv_transpose")]
    assert prologued and "leaky_relu" in [m.op for m in prologued[0].attrs["body"].nodes], \
        [[m.op for m in n.attrs["body"].nodes] for n in fused]
    maps = [n for n in fused if n not in prologued]
    assert all(n.output.type.size < x.size for n in maps), "a map of the input's size is left"   # the statistics'
    labels = [kernel.label for kernel, _ in executable.kernels()]
    assert any(name.startswith(label) for name in labels), " ".join(labels)


@pytest.mark.parametrize("shape, groups", [((2, 8, 3, 4, 6), 8), ((1, 16, 3, 37, 29), 4)])
def test_a_one_by_one_conv_computes_the_tree_over_its_planes(shape, groups):
    """A 1 x 1 x 1 conv (a segmentation head) over its planes: each item computes its rows of the
    tree first (a plane of 37 x 29: items of whole rows and a shorter last one)."""
    model = _model(shape[1], groups, nn.Conv3d(shape[1], 5, 1), 7)
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    compiled = lucid.compile(model)
    with lucid.no_grad():
        got = compiled(lucid.tensor(x)).numpy()
    _assert_close(got, _expected(model, x, False, {}), "1x1x1")
    executable = _executable(compiled)
    for threads in (2, 1):
        _assert_close(executable(x, threads=threads)[0], _expected(model, x, False, {}), f"{threads} threads")
    labels = [kernel.label for kernel, _ in executable.kernels()]
    assert "conv_planes" in labels and "conv_pack_input" not in labels, labels
    bodies = [[m.op for m in n.attrs["body"].nodes if not m.is_constant] for n in executable.graph.nodes
              if n.op == "fused"]
    assert any(body[-1] == "conv" and "leaky_relu" in body for body in bodies), bodies


def test_a_one_by_one_conv_with_symbolic_sizes():
    """Compiled for every size, the planes path declines: the direct kernels pack the tree."""
    model = _model(8, 4, nn.Conv3d(8, 3, 1), 9)
    compiled = lucid.compile(model, dynamic=True)
    with lucid.no_grad():
        for n, volume in [(1, (4, 5, 6)), (2, (5, 9, 7))]:
            x = np.random.default_rng(sum(volume)).standard_normal((n, 8) + volume).astype(np.float32)
            _assert_close(compiled(lucid.tensor(x)).numpy(), _expected(model, x, False, {}), f"{n} x {volume}")


def test_a_temporal_conv_reads_its_input_where_it_is():
    """A 3 x 1 x 1 conv reads its input's planes at three depths where they are: the tree stays a map."""
    model = _model(8, 8, nn.Conv3d(8, 5, (3, 1, 1), padding=(1, 0, 0)), 8)
    x = np.random.default_rng(8).standard_normal((2, 8, 3, 4, 6)).astype(np.float32)
    compiled = lucid.compile(model)
    with lucid.no_grad():
        got = compiled(lucid.tensor(x)).numpy()
    _assert_close(got, _expected(model, x, False, dict(padding=(1, 0, 0))), "3x1x1")
    labels = [kernel.label for kernel, _ in _executable(compiled).kernels()]
    assert "fused" in labels and "conv_planes" in labels, labels


def test_a_tree_read_twice_is_stored():
    """The activation also returned: fusion leaves it a map, the conv reads the stored value."""
    graph = lucid.trace(lambda x: (lambda h: (lucid.nn.functional.conv3d(h, lucid.ones(4, 4, 3, 3, 3), padding=1),
                                              h))(lucid.nn.functional.relu(x * 2.0)),
                        lucid.spec(1, 4, 5, 5, 5))
    fused = fusion.run(graph)
    bodies = [[m.op for m in n.attrs["body"].nodes if not m.is_constant] for n in fused.nodes if n.op == "fused"]
    assert ["mul", "relu"] in bodies and not any("conv" in body for body in bodies), bodies


def test_a_transposed_conv_with_an_infinite_weight_sums_the_tree_exactly():
    """Weights not all finite: the transposed conv unpacks exact sums, evaluating the tree at each
    input element it reads; NaN and infinities land where eager puts them."""
    model = _model(6, 3, nn.ConvTranspose3d(6, 4, 4, stride=2, padding=1), 3)
    weight = model.conv.weight.numpy().copy()
    weight[1, 2, 1, 2, 0] = np.inf
    model.conv.weight.data = lucid.tensor(weight)
    x = np.random.default_rng(3).standard_normal((1, 6, 3, 4, 5)).astype(np.float32)
    compiled = lucid.compile(model)
    with lucid.no_grad():
        got, eager = compiled(lucid.tensor(x)).numpy(), model(lucid.tensor(x)).numpy()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(eager))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(eager))
    finite = np.isfinite(eager)
    _assert_close(got[finite], eager[finite].astype(np.float64), "the finite outputs")


def test_symbolic_sizes():
    """One compile for every size: the rows of the tree take their length per call."""
    model = _model(16, 4, nn.Conv3d(16, 16, 3, padding=1), 11)
    compiled = lucid.compile(model, dynamic=True)
    with lucid.no_grad():
        for n, volume in [(1, (4, 5, 6)), (2, (5, 9, 7)), (1, (6, 6, 13))]:
            x = np.random.default_rng(sum(volume)).standard_normal((n, 16) + volume).astype(np.float32)
            _assert_close(compiled(lucid.tensor(x)).numpy(), _expected(model, x, False, dict(padding=1)),
                          f"{n} x {volume}")
    assert compiled.stats()["traces"] == 1


# A concatenation along the channels feeding a conv: (the joined inputs' channels, the conv, its
# attributes for the oracle, transposed, the kernel that shows the algorithm)
JOINS = [
    ((16, 16), lambda c: nn.Conv3d(c, 16, 3, padding=1), dict(padding=1), False, "wino_conv"),
    ((5, 3, 8), lambda c: nn.Conv3d(c, 7, 3, stride=2, padding=1), dict(stride=2, padding=1), False, "conv_direct"),
    ((6, 10), lambda c: nn.ConvTranspose3d(c, 4, 4, stride=2, padding=1), dict(stride=2, padding=1), True,
     "convT_direct"),
]


class JoinConv(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, *parts):
        return self.conv(lucid.cat(list(parts), dim=1))


@pytest.mark.parametrize("index", range(len(JOINS)))
def test_a_concatenation_is_read_from_its_sources(index):
    channels, conv, attrs, transposed, label = JOINS[index]
    lucid.manual_seed(20 + index)
    model = JoinConv(conv(sum(channels))).eval()
    rng = np.random.default_rng(20 + index)
    parts = [rng.standard_normal((2, c, 5, 6, 7)).astype(np.float32) for c in channels]
    compiled = lucid.compile(model)
    with lucid.no_grad():
        got = compiled(*(lucid.tensor(p) for p in parts)).numpy()
    w, b = (p.numpy().astype(np.float64) for p in (model.conv.weight, model.conv.bias))
    joined = np.concatenate(parts, axis=1).astype(np.float64)
    _assert_close(got, (oracle.conv_transpose_nd if transposed else oracle.conv_nd)(joined, w, b, **attrs),
                  f"join {index}")
    executable = _executable(compiled)
    for threads in (2, 1):
        _assert_close(executable(*parts, threads=threads)[0], got.astype(np.float64), f"join {index}, {threads} threads")
    labels = [kernel.label for kernel, _ in executable.kernels()]
    assert "concat" not in labels and any(name.startswith(label) for name in labels), " ".join(labels)


def test_a_concatenation_with_an_infinite_weight_and_symbolic_sizes():
    """The exact sums of a transposed conv read the joined input's element from its source; one
    compile for every size."""
    lucid.manual_seed(4)
    model = JoinConv(nn.ConvTranspose3d(9, 3, 4, stride=2, padding=1)).eval()
    weight = model.conv.weight.numpy().copy()
    weight[7, 1, 0, 3, 2] = -np.inf                   # a channel of the second source
    model.conv.weight.data = lucid.tensor(weight)
    compiled = lucid.compile(model, dynamic=True)
    with lucid.no_grad():
        for volume in [(3, 4, 5), (4, 6, 5), (3, 7, 9)]:
            rng = np.random.default_rng(sum(volume))
            parts = [lucid.tensor(rng.standard_normal((1, c) + volume).astype(np.float32)) for c in (4, 5)]
            got, eager = compiled(*parts).numpy(), model(*parts).numpy()
            np.testing.assert_array_equal(np.isnan(got), np.isnan(eager))
            np.testing.assert_array_equal(np.isinf(got), np.isinf(eager))
            finite = np.isfinite(eager)
            _assert_close(got[finite], eager[finite].astype(np.float64), f"{volume}")
    assert compiled.stats()["traces"] == 1


def test_other_concatenations_are_stored():
    """Along another axis, or also read by something else: the concatenation stays a copy."""
    w = lucid.ones(4, 4, 3, 3, 3)
    along_depth = lucid.trace(lambda a, b: lucid.nn.functional.conv3d(lucid.cat([a, b], dim=2), w, padding=1),
                              lucid.spec(1, 4, 3, 5, 5), lucid.spec(1, 4, 3, 5, 5))
    read_twice = lucid.trace(lambda a, b: (lambda x: (lucid.nn.functional.conv3d(x, w, padding=1), x))(
        lucid.cat([a, b], dim=1)), lucid.spec(1, 2, 3, 5, 5), lucid.spec(1, 2, 3, 5, 5))
    for graph in (along_depth, read_twice):
        fused = fusion.run(graph)
        assert "concat" in [n.op for n in fused.nodes], [n.op for n in fused.nodes]


@pytest.mark.parametrize("padding, out_channels", [(1, 16), (0, 2)])
def test_float64_trees(padding, out_channels):
    """float64: the packings' vectors of half the lanes, the tree in float64 (Winograd or over points,
    and the direct kernels)."""
    rng = np.random.default_rng(padding)
    x = rng.standard_normal((1, 16, 4, 6, 19))
    w = rng.standard_normal((out_channels, 16, 3, 3, 3))
    shift = rng.standard_normal((1, 16, 1, 1, 1))

    def fn(x, w, shift):
        return lucid.nn.functional.conv3d(lucid.nn.functional.relu(x - shift) * 0.5, w, padding=padding)

    spec = [lucid.spec(*a.shape, dtype="float64") for a in (x, w, shift)]
    graph = fusion.run(lucid.trace(fn, *spec, name=f"float64_tree_{padding}"))
    assert [n.op for n in graph.nodes if not n.is_constant] == ["fused"]
    got = Executable(memory_planning.run(graph))(x, w, shift)[0]
    want = oracle.conv_nd(np.maximum(x - shift, 0) * 0.5, w, padding=padding)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


def test_a_concatenation_of_two_dtypes():
    """float32 and float64 joined: the output promotes to float64, and the packing converts the
    float32 source's elements as it reads them."""
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((1, 3, 4, 5, 6)).astype(np.float32), rng.standard_normal((1, 5, 4, 5, 6))
    w = rng.standard_normal((4, 8, 3, 3, 3))
    graph = fusion.run(lucid.trace(lambda a, b, w: lucid.nn.functional.conv3d(lucid.cat([a, b], dim=1), w, padding=1),
                                   lucid.spec(*a.shape), lucid.spec(*b.shape, dtype="float64"),
                                   lucid.spec(*w.shape, dtype="float64"), name="two_dtypes"))
    assert [n.op for n in graph.nodes if not n.is_constant] == ["fused"]
    got = Executable(memory_planning.run(graph))(a, b, w)[0]
    want = oracle.conv_nd(np.concatenate([a.astype(np.float64), b], axis=1), w, padding=1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())
