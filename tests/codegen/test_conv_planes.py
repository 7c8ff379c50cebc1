"""Convs of one tap across (h, w) vectorised over their planes' points
(lucid/codegen/kernels/conv/planes.py) against the plain-loop oracle (`oracle.py`, float64) and
PyTorch's numbers where they are written out.

Which convs take the path (`conv_planes` kernels) and which keep the direct kernels; the values of
odd sizes that exercise every tail (planes of 1 to 35 points: tiles of fewer vectors and of 8, 4, 2
and 1 lanes), a last block of fewer output channels, a last item of fewer rows, groups, dilation,
depth strides and padding, bias or none (the tiles then write the output itself), epilogues whose
operands run through a plane's rows and one that does not; one and two threads; the gradients of a
training graph; and the tile each CPU model chooses."""
from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
import oracle
from lucid.codegen.kernels.conv import planes
from lucid.codegen.kernels.conv.planes import choose_plane_blocking
from lucid.codegen.lowering import Lowering
from lucid.codegen.target import host
from lucid.ir.types import float32, float64
from lucid.passes import autodiff, dead_code, fusion, memory_planning
from lucid.runtime.executable import Executable
from model_helpers import kernel_labels

TOL = 1e-5


@pytest.fixture(autouse=True)
def every_plane(monkeypatch):
    """The path for every plane, however short (the choice is tested on its own below)."""
    monkeypatch.setattr(planes, "LEAST_EFFICIENCY", 0.0)

# input shape, output channels, kernel, attributes: odd sizes; every plane size's tail differs
TAKES_THE_PATH = [
    ((2, 36, 8, 28, 28), 16, (3, 1, 1), dict(padding=(1, 0, 0))),          # a (2+1)-D block's temporal conv
    ((1, 5, 4, 5, 7), 21, (3, 1, 1), dict(padding=(1, 0, 0))),             # 35 points; 21 channels
    ((2, 7, 5, 1, 1), 3, (1, 1, 1), {}),                                   # one point per plane
    ((1, 6, 9, 3, 5), 10, (5, 1, 1), dict(padding=(3, 0, 0), dilation=(2, 1, 1))),
    ((2, 8, 7, 6, 3), 12, (3, 1, 1), dict(padding=(1, 0, 0), stride=(2, 1, 1), groups=4)),
    ((1, 3, 2, 17, 13), 40, (2, 1, 1), dict(padding=(1, 0, 0))),           # 221 points: a shorter last item
    ((3, 9, 4, 4, 4), 2, (1, 1, 1), {}),                                   # a UNet's 1x1x1 output conv
    ((1, 4, 1, 9, 11), 33, (3, 1, 1), dict(padding=(1, 0, 0))),            # one depth: only the middle tap
]

KEEPS_THE_DIRECT_KERNELS = [
    ((1, 16, 4, 6, 6), 20, (1, 1, 1), dict(stride=2)),                      # strided across (h, w)
    ((1, 4, 3, 5, 6), 10, (1, 1, 1), dict(padding=(0, 1, 0))),             # padded across h
    ((1, 8, 3, 6, 6), 12, (1, 3, 3), dict(padding=(0, 1, 1))),             # three taps across (h, w)
]


def _arrays(x_shape, oc, kernel, attrs, seed, bias=True, dtype=np.float32, transposed=False):
    rng = np.random.default_rng(seed)
    groups = attrs.get("groups", 1)
    x = rng.standard_normal(x_shape).astype(dtype)
    channels = (x_shape[1], oc // groups) if transposed else (oc, x_shape[1] // groups)
    w = rng.standard_normal(channels + kernel).astype(dtype)
    return [x, w] + ([rng.standard_normal(oc).astype(dtype)] if bias else [])


def _lowered(fn, arrays, name, takes_the_path: bool, direct_label: str = "conv_direct"):
    """`_executable`, asserting which kernels it runs: the planes' or the direct ones."""
    executable = _executable(fn, arrays, name)
    labels = kernel_labels(executable)
    assert ("conv_planes" in labels) == takes_the_path and (direct_label in labels) != takes_the_path, labels
    return executable


def _executable(fn, arrays, name):
    """`fn` traced, its elementwise tail fused behind the conv, planned and compiled."""
    graph = lucid.trace(fn, *(lucid.spec(a.shape, dtype=lucid.ir.types.as_dtype(a.dtype)) for a in arrays), name=name)
    return Executable(memory_planning.run(dead_code.run(fusion.run(graph))))


def assert_close(actual, wanted, what):
    scale = max(float(np.max(np.abs(wanted))), 1e-30)
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - wanted)))
    assert error <= TOL * scale, f"{what}: max error {error:.3g} > {TOL:g} x {scale:.3g}"


def _conv(arrays, attrs):
    return oracle.conv_nd(*(a.astype(np.float64) for a in arrays), **attrs)


@pytest.mark.parametrize("index", range(len(TAKES_THE_PATH)))
@pytest.mark.parametrize("bias, dtype", [(True, np.float32), (False, np.float32), (True, np.float64)])
def test_the_path_matches_the_oracle(index, bias, dtype):
    """The conv alone: with a bias the items unpack their stack sums; without, the tiles write the
    output itself; float64 takes vectors of half the lanes."""
    x_shape, oc, kernel, attrs = TAKES_THE_PATH[index]
    arrays = _arrays(x_shape, oc, kernel, attrs, index, bias, dtype)
    executable = _lowered(lambda x, w, *b: F.conv3d(x, w, *b, **attrs), arrays,
                          f"planes_{index}_{bias}_{np.dtype(dtype).name}", True)
    expected = _conv(arrays, attrs)
    for threads in (2, 1):                 # the first call on two threads: a fresh executable
        assert_close(executable(*arrays, threads=threads)[0], expected, f"{x_shape} {attrs}, {threads} threads")


@pytest.mark.parametrize("index", range(len(KEEPS_THE_DIRECT_KERNELS)))
def test_other_convs_keep_the_direct_kernels(index):
    x_shape, oc, kernel, attrs = KEEPS_THE_DIRECT_KERNELS[index]
    arrays = _arrays(x_shape, oc, kernel, attrs, 50 + index)
    executable = _lowered(lambda x, w, b: F.conv3d(x, w, b, **attrs), arrays, f"not_planes_{index}", False)
    assert_close(executable(*arrays)[0], _conv(arrays, attrs), f"{x_shape} {attrs}")


def _scale_shift_relu(x, w, b, scale, shift):
    """An inference BatchNorm folded behind the conv: per-channel operands (they run through the rows)."""
    return F.relu(F.conv3d(x, w, b, padding=(1, 0, 0)) * scale + shift)


def _along_w(x, w, b, scale, shift):
    """An operand broadcast along w alone (its h stride is 0, not W times its w stride): unpacked
    row by row."""
    return F.conv3d(x, w, b, padding=(1, 0, 0)) * scale - shift


@pytest.mark.parametrize("fn, operand_shapes", [(_scale_shift_relu, [(12, 1, 1, 1), (12, 1, 1, 1)]),
                                                (_along_w, [(7,), (1, 12, 1, 5, 7)])])
def test_fused_epilogues(fn, operand_shapes):
    rng = np.random.default_rng(7)
    arrays = _arrays((2, 6, 4, 5, 7), 12, (3, 1, 1), {}, 8) + [rng.standard_normal(s).astype(np.float32)
                                                              for s in operand_shapes]
    executable = _executable(fn, arrays, f"planes_{fn.__name__}")
    assert "conv_planes" in kernel_labels(executable)
    assert not any(node.op == "conv" for node in executable.graph.nodes), "the epilogue was not fused"
    x, w, b, scale, shift = (a.astype(np.float64) for a in arrays)
    y = _conv([x, w, b], dict(padding=(1, 0, 0)))
    expected = np.maximum(y * scale + shift, 0) if fn is _scale_shift_relu else y * scale - shift
    for threads in (2, 1):
        assert_close(executable(*arrays, threads=threads)[0], expected, f"{fn.__name__}, {threads} threads")


@pytest.mark.parametrize("index", [1, 4, 6])
def test_gradients_of_a_training_graph(index):
    """The forward of a gradient graph takes the path too; its input and weight gradients match the
    oracle's vector-Jacobian product."""
    x_shape, oc, kernel, attrs = TAKES_THE_PATH[index]
    arrays = _arrays(x_shape, oc, kernel, attrs, 100 + index)
    graph = lucid.trace(lambda x, w, b: F.conv3d(x, w, b, **attrs), *(lucid.spec(a.shape) for a in arrays),
                        name=f"planes_grad_{index}")
    grad = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
    seed = np.random.default_rng(index).standard_normal(grad.inputs[-1].shape).astype(np.float32)
    executable = Executable(memory_planning.run(grad))
    assert "conv_planes" in kernel_labels(executable)
    wide = [a.astype(np.float64) for a in arrays]
    expected = (oracle.conv_nd(*wide, **attrs),) + tuple(oracle.conv_nd_vjp(seed.astype(np.float64), *wide, **attrs))
    for name, value, wanted in zip(("y", "dx", "dw", "db"), executable(*arrays, seed), expected):
        assert_close(value, wanted, f"{name} of {x_shape} {attrs}")


def test_a_compiled_module_agrees_with_eager_and_pytorch_numbers():
    """lucid.compile of a temporal Conv3d module against its eager run (the NumPy kernels), and a
    case whose values are written out: all-ones input, weights w[oc, ic, a] = oc + a (so the middle
    depth sums 3 taps x 2 channels, the edges 2 taps), the numbers PyTorch's conv3d gives."""
    lucid.manual_seed(0)
    layer = lucid.nn.Conv3d(5, 7, (3, 1, 1), padding=(1, 0, 0))
    x = lucid.Tensor(np.random.default_rng(1).standard_normal((2, 5, 3, 4, 6)).astype(np.float32))
    compiled = lucid.compile(layer)
    assert_close(compiled(x).numpy(), layer(x).numpy().astype(np.float64), "compiled vs eager")
    w = np.fromfunction(lambda oc, ic, a, h, k: oc + a, (2, 2, 3, 1, 1)).astype(np.float32)
    y = lucid.compile(lambda x, w: F.conv3d(x, w, padding=(1, 0, 0)))(lucid.Tensor(np.ones((1, 2, 3, 2, 2), np.float32)),
                                                                       lucid.Tensor(w)).numpy()
    assert y[0, :, :, 0, 0].tolist() == [[6.0, 6.0, 2.0], [10.0, 12.0, 6.0]]


def _model_target(cpu: str, features: str, monkeypatch):
    monkeypatch.setenv("LUCID_CPU", cpu)
    monkeypatch.setenv("LUCID_CPU_FEATURES", features)
    return types.SimpleNamespace(target=dataclasses.replace(host(), cores=1))


# cpu, features, output channels -> (lanes, vectors, rows), float32. Each step of a tile issues rows
# x vectors FMAs and rows + vectors loads; rows x vectors accumulators, the vectors and a broadcast
# fit the registers; the fewest cycles per vector of points over every channel, then the most rows.
PLANE_TILES = [
    # 32 registers, 2 full-width pipes: 8 rows x 3 vectors (24 FMAs, 11 loads: 12 cycles) twice for
    # 16 channels; 16 rows x 1 vector would load 17 values for 16 FMAs.
    ("skylake-avx512", "+avx,+avx2,+fma,+avx512f,+avx512vl", 16, (16, 3, 8)),
    ("skylake-avx512", "+avx,+avx2,+fma,+avx512f,+avx512vl", 2, (16, 8, 2)),
    # 16 registers: 4 rows x 3 vectors (12 accumulators, 3 vectors, 1 broadcast).
    ("haswell", "+avx,+avx2,+fma,-avx512f", 16, (8, 3, 4)),
    ("haswell", "+avx,+avx2,+fma,-avx512f", 32, (8, 3, 4)),
]


@pytest.mark.parametrize("cpu, features, ocg, expected", PLANE_TILES)
def test_the_plane_tile_each_model_rates_fastest(cpu, features, ocg, expected, monkeypatch):
    block = choose_plane_blocking(ocg, _model_target(cpu, features, monkeypatch), float32)
    assert (block.lanes, block.vectors, block.rows) == expected


@pytest.mark.parametrize("dtype", [float32, float64])
def test_plane_tiles_fit_the_register_file(dtype, monkeypatch):
    for cpu, features, _, _ in PLANE_TILES:
        lowering = _model_target(cpu, features, monkeypatch)
        registers = lowering.target.model.vector_registers
        for ocg in range(1, 70):
            block = choose_plane_blocking(ocg, lowering, dtype)
            assert block.rows * block.vectors + block.vectors + 1 <= registers, (cpu, ocg, block)
            assert block.rows <= ocg and block.lanes == lowering.target.lanes(dtype)


def test_a_tile_of_given_lanes_and_most_vectors(monkeypatch):
    """disjoint_blocks.py's rows: vectors of the lanes dividing the row, no more of them than it has."""
    for cpu, features, _, _ in PLANE_TILES:
        lowering = _model_target(cpu, features, monkeypatch)
        for ocg, lanes, most in [(16, 16, 2), (40, 8, 1), (5, 4, 3), (64, 16, 4)]:
            block = choose_plane_blocking(ocg, lowering, float32, lanes, most)
            assert block.lanes == lanes and 1 <= block.vectors <= most and 1 <= block.rows <= ocg, (cpu, block)
            assert block.rows * block.vectors + block.vectors + 1 <= lowering.target.model.vector_registers


def _skylake(monkeypatch):
    return _model_target("skylake-avx512", "+avx,+avx2,+fma,+avx512f,+avx512vl", monkeypatch)


def test_the_model_rates_short_planes_lower(monkeypatch):
    """A 28 x 28 plane in items of 112 points (tiles of 48, 48 and 16): 0.98 of the FMA rate; a
    7 x 7 plane of 128 channels (a tile of 48 points, then one of 1 lane costing 4.5 cycles a step
    for 8 channels): 0.74."""
    model = _skylake(monkeypatch).target.model
    assert planes.plane_efficiency(model, planes.PlaneBlocking(16, 3, 8), 16, [112] * 7, 4) == pytest.approx(784 / 798)
    assert planes.plane_efficiency(model, planes.PlaneBlocking(16, 3, 8), 128, [49], 4) == pytest.approx(392 / 528)


@pytest.mark.parametrize("x_shape, oc, takes_the_path", [
    ((2, 36, 8, 28, 28), 16, True),
    ((2, 64, 2, 7, 7), 128, False),      # short planes and 8 vectors of channels: the direct kernels
    ((2, 64, 2, 7, 7), 16, True),        # the direct tile would be one vector: its loads outnumber its FMAs
])
def test_the_choice_on_an_avx512_model(x_shape, oc, takes_the_path, monkeypatch):
    monkeypatch.setattr(planes, "LEAST_EFFICIENCY", 0.8)
    target = _skylake(monkeypatch).target
    arrays = _arrays(x_shape, oc, (3, 1, 1), {}, 3)
    graph = memory_planning.run(lucid.trace(lambda x, w, b: F.conv3d(x, w, b, padding=(1, 0, 0)),
                                            *(lucid.spec(a.shape) for a in arrays), name="planes_choice"))
    lowering = Lowering(graph, graph.memory_plan, target)
    lowering.lower()
    labels = [kernel.label for kernel in lowering.kernels]
    assert ("conv_planes" in labels) == takes_the_path, labels


# input shape, output channels, kernel, attributes of transposed convs of stride 1 (the input
# gradients of temporal and 1x1x1 convs): the conv of the kernel flipped along d
TRANSPOSED = [
    ((2, 6, 5, 4, 7), 9, (3, 1, 1), dict(padding=(1, 0, 0))),
    ((1, 6, 5, 3, 4), 4, (3, 1, 1), dict(padding=(2, 0, 0), dilation=(2, 1, 1), groups=2)),
    ((2, 3, 4, 2, 9), 5, (2, 1, 1), {}),
    ((1, 4, 3, 3, 3), 6, (1, 1, 1), {}),
]


@pytest.mark.parametrize("index", range(len(TRANSPOSED)))
def test_transposed_convs_of_stride_one_take_the_path(index):
    x_shape, oc, kernel, attrs = TRANSPOSED[index]
    arrays = _arrays(x_shape, oc, kernel, attrs, 200 + index, transposed=True)
    executable = _lowered(lambda x, w, b: F.conv_transpose3d(x, w, b, **attrs), arrays, f"planes_t_{index}", True,
                          "convT_direct")
    expected = oracle.conv_transpose_nd(*(a.astype(np.float64) for a in arrays), **attrs)
    for threads in (2, 1):
        assert_close(executable(*arrays, threads=threads)[0], expected, f"{x_shape} {attrs}, {threads} threads")


def test_a_transposed_conv_multiplies_no_padding_by_infinite_weights():
    """A transposed conv scatters its inputs: no output sums a weight times padding, so an infinite
    or NaN weight reaches exactly the outputs the oracle's scatter gives it (0 x inf would be NaN)."""
    x_shape, oc, kernel, attrs = TRANSPOSED[0]
    x, w, b = _arrays(x_shape, oc, kernel, attrs, 9, transposed=True)
    w[1, 2, 0] = np.inf
    w[2, 3, 2] = np.nan
    executable = _executable(lambda x, w, b: F.conv_transpose3d(x, w, b, **attrs), [x, w, b], "planes_t_inf")
    assert "conv_planes" in kernel_labels(executable)
    got = executable(x, w, b)[0]
    expected = oracle.conv_transpose_nd(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **attrs)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    assert np.isnan(expected).any() and np.isinf(expected).any() and finite.any()
    assert_close(got[finite], expected[finite], "the finite outputs")
