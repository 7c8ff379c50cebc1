"""The choices for (2+1)-D convolutions (lucid/codegen/kernels/conv/direct.py, problem.py) against the
plain-loop oracle (`oracle.py`, float64).

A conv of one tap across (h, w) with no padding there (a temporal 3x1x1 conv, a 1x1x1 conv) reads its
NCDHW input where it is, one direct kernel per class of output depths (`depth_classes`); the others
keep the padded channels-last copy. Each case checks the path taken, then the values, forward and
gradients, on one and two threads."""
from __future__ import annotations

import types

import numpy as np
import pytest

import lucid
import lucid.nn.functional as F
import oracle
from lucid.codegen.kernels.conv.direct import DepthClass, depth_classes
from lucid.codegen.kernels.conv.problem import Geometry, choose_blocking
from lucid.codegen.target import host
from lucid.ir.types import float32
from lucid.passes import autodiff, memory_planning
from lucid.runtime.executable import Executable
from model_helpers import kernel_labels

TOL = 1e-5

# input shape, output channels, kernel, attributes; odd sizes throughout
READS_THE_INPUT = [
    ((2, 5, 4, 3, 6), 12, (3, 1, 1), dict(padding=(1, 0, 0))),
    ((2, 36, 7, 5, 9), 16, (3, 1, 1), dict(padding=(1, 0, 0))),
    ((1, 57, 8, 5, 5), 32, (3, 1, 1), dict(padding=(1, 0, 0), stride=(2, 1, 1))),       # a stage's first
    ((1, 16, 7, 6, 5), 20, (1, 1, 1), dict(stride=2)),                                  # a shortcut
    ((1, 8, 9, 4, 5), 12, (5, 1, 1), dict(padding=(3, 0, 0), dilation=(2, 1, 1))),
    ((1, 8, 3, 4, 5), 24, (3, 1, 1), dict(padding=(2, 0, 0))),                          # taps 2; 1, 2; 0, 1, 2
    ((2, 12, 5, 3, 7), 10, (3, 1, 1), dict(padding=(1, 0, 0), groups=2)),
    ((1, 3, 2, 2, 7), 33, (2, 1, 1), dict(padding=(1, 0, 0), stride=(1, 1, 3))),
    ((1, 6, 1, 4, 4), 9, (3, 1, 1), dict(padding=(1, 0, 0))),                           # one depth: one class
]

KEEPS_THE_COPY = [
    ((1, 4, 3, 5, 6), 10, (1, 1, 1), dict(padding=(0, 1, 0))),          # padded across h
    ((1, 4, 3, 5, 6), 10, (3, 1, 1), dict(padding=(3, 0, 0))),          # depth 0 reads only padding
    ((1, 16, 3, 6, 6), 24, (1, 3, 3), dict(padding=(0, 1, 1))),         # a spatial 1x3x3 conv
    ((2, 12, 5, 6), 10, (3, 1), dict(padding=(1, 0))),                  # 2-D: h is the first axis
]


def _case(x_shape, oc, kernel, attrs, seed):
    rng = np.random.default_rng(seed)
    groups = attrs.get("groups", 1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((oc, x_shape[1] // groups) + kernel).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    return [x, w, b]


def _traced(fn, arrays, name):
    return lucid.trace(fn, *(lucid.spec(a.shape) for a in arrays), name=name)


def assert_close(actual, wanted, what):
    scale = max(float(np.max(np.abs(wanted))), 1e-30)
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - wanted)))
    assert error <= TOL * scale, f"{what}: max error {error:.3g} > {TOL:g} x {scale:.3g}"


@pytest.mark.parametrize("index", range(len(READS_THE_INPUT) + len(KEEPS_THE_COPY)))
def test_forward_matches_the_oracle(index):
    """conv + ReLU (the epilogue unpacks rows of each class of depths in place)."""
    reads = index < len(READS_THE_INPUT)
    x_shape, oc, kernel, attrs = (READS_THE_INPUT + KEEPS_THE_COPY)[index]
    arrays = _case(x_shape, oc, kernel, attrs, index)
    conv = getattr(F, f"conv{len(kernel)}d")
    executable = Executable(memory_planning.run(_traced(lambda x, w, b: F.relu(conv(x, w, b, **attrs)), arrays,
                                                        f"two_plus_one_{index}")))
    labels = kernel_labels(executable)
    assert (not any(label.endswith("pack_input") for label in labels)) == reads, labels
    expected = np.maximum(oracle.conv_nd(*(a.astype(np.float64) for a in arrays), **attrs), 0)
    for threads in (2, 1):                 # the first call on two threads: a fresh executable
        assert_close(executable(*arrays, threads=threads)[0], expected, f"{x_shape} {kernel} {attrs}, {threads} threads")


@pytest.mark.parametrize("index", [0, 2, 4, 6])
def test_gradients_match_the_oracle(index):
    """The input and weight gradients of a conv reading its input where it is (the weight gradient
    then packs its own operands: the conv left no packed copy behind)."""
    x_shape, oc, kernel, attrs = READS_THE_INPUT[index]
    arrays = _case(x_shape, oc, kernel, attrs, 100 + index)
    graph = _traced(lambda x, w, b: F.conv3d(x, w, b, **attrs), arrays, f"two_plus_one_grad_{index}")
    grad = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
    seed = np.random.default_rng(index).standard_normal(grad.inputs[-1].shape).astype(np.float32)
    executable = Executable(memory_planning.run(grad))
    assert "conv_pack_input" not in kernel_labels(executable)
    got = executable(*arrays, seed)
    expected = oracle.conv_nd_vjp(seed.astype(np.float64), *(a.astype(np.float64) for a in arrays), **attrs)
    for name, value, wanted in zip(("y", "dx", "dw", "db"), got, (oracle.conv_nd(*(a.astype(np.float64) for a in arrays),
                                                                                  **attrs),) + tuple(expected)):
        assert_close(value, wanted, f"{name} of {x_shape} {kernel} {attrs}")


def _geometry(in_sp, kernel, stride=(1, 1, 1), dilation=(1, 1, 1), pad_lo=(0, 0, 0)):
    return Geometry(1, 1, 4, 4, in_sp, kernel, stride, dilation, pad_lo)


def test_depth_classes():
    """Depth q reads input q * stride - pad + a * dilation for tap a; runs of depths with the same
    taps inside the input are one class."""
    assert depth_classes(_geometry((8, 5, 5), (3, 1, 1), pad_lo=(1, 0, 0)), (8, 5, 5)) == [
        DepthClass(0, 1, 1, 3), DepthClass(1, 6, 0, 3), DepthClass(7, 1, 0, 2)]
    assert depth_classes(_geometry((8, 5, 5), (3, 1, 1), stride=(2, 1, 1), pad_lo=(1, 0, 0)), (4, 5, 5)) == [
        DepthClass(0, 1, 1, 3), DepthClass(1, 3, 0, 3)]
    assert depth_classes(_geometry((4, 6, 6), (1, 1, 1), stride=(2, 2, 2)), (2, 3, 3)) == [DepthClass(0, 2, 0, 1)]
    assert depth_classes(_geometry((4, 6, 6), (1, 3, 3), pad_lo=(0, 1, 1)), (4, 6, 6)) == []
    assert depth_classes(_geometry((4, 6, 6), (1, 1, 1), pad_lo=(1, 0, 0)), (6, 6, 6)) == []   # depth 0: padding


def test_three_vectors_where_two_would_pad_a_quarter():
    """On an AVX2 model (16 registers), 24 output channels are one tile of 3 vectors x 3 points
    rather than 2 blocks of 2 vectors (32 lanes, 8 of them padding); 32 and 64 channels keep 2."""
    target = host()
    if target.vector_floats != 8 or target.model.vector_registers != 16:
        pytest.skip("the tiles asserted are an AVX2 host's")
    lowering = types.SimpleNamespace(target=target)
    shapes = {ocg: choose_blocking(ocg, 28, lowering, float32) for ocg in (24, 32, 64)}
    assert (shapes[24].lanes, shapes[24].vectors, shapes[24].points) == (8, 3, 3)
    assert all(shapes[ocg].vectors == 2 for ocg in (32, 64))


@pytest.mark.parametrize("oc", [24, 23, 47])
def test_three_vector_tiles_match_the_oracle(oc):
    """A stem-like 1x7x7 stride-2 conv of 3 input channels, whose output channels take 3 vectors on
    an AVX2 host (and whatever the host's model rates fastest elsewhere)."""
    attrs = dict(stride=(1, 2, 2), padding=(0, 3, 3))
    arrays = _case((1, 3, 2, 17, 19), oc, (1, 7, 7), attrs, oc)
    executable = Executable(memory_planning.run(_traced(lambda x, w, b: F.conv3d(x, w, b, **attrs), arrays,
                                                        f"stem_{oc}")))
    expected = oracle.conv_nd(*(a.astype(np.float64) for a in arrays), **attrs)
    for threads in (2, 1):                 # the first call on two threads: a fresh executable
        assert_close(executable(*arrays, threads=threads)[0], expected, f"{oc} channels, {threads} threads")
