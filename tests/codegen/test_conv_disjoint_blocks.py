"""Transposed convs whose kernel is their stride (disjoint_blocks.py): one product over the input
channels per output, written straight to the output with the bias and the epilogue.

Which transposed convs take the path (kernel = stride, no padding, dilation 1, no output padding,
concrete sizes, rows of a whole number of vectors of 4 lanes or more, a stride along w of 1, 2 or 4)
and which keep the direct phases; their values against the float64 oracle (`oracle.py`) at odd sizes,
strides of 1 to 4 per axis, groups, no bias, an epilogue reading another tensor, float64, a fused
concatenation, one and two threads; a training step's gradients through one (its tile is
planes.py's, tested in test_conv_planes.py). Non-finite values: test_nan_and_infinity.py; prologues: test_conv_prologue.py; weights changed
between calls: test_weight_reuse.py; AVX2 and SSE hosts: test_cache_and_target.py."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
import oracle
from lucid.passes import dead_code, fusion, memory_planning
from lucid.runtime.executable import Executable
from model_helpers import kernel_labels

TOL = 2e-5

# input shape, output channels, kernel (= stride), groups, bias: odd depths and heights, rows of
# 8, 16, 12, 20, 24 and 4 points (vectors of 8, 16 and 4 lanes; on AVX-512 the last two cases read
# runs of rows in whole 16-lane vectors), 40 channels (a shorter last tile)
CASES = [
    ((2, 12, 3, 5, 8), 10, (2, 2, 2), 1, True),
    ((1, 32, 5, 3, 16), 16, (2, 2, 2), 1, True),
    ((1, 8, 3, 4, 12), 6, (1, 2, 4), 2, False),
    ((1, 16, 2, 3, 20), 40, (2, 2, 2), 1, True),
    ((1, 6, 3, 3, 24), 5, (2, 1, 1), 1, True),
    ((1, 9, 3, 2, 4), 7, (3, 3, 2), 1, True),
    ((2, 10, 3, 4, 8), 6, (2, 2, 2), 1, True),            # runs of 2 rows of 8: whole 16-lane vectors
    ((1, 7, 2, 4, 4), 9, (2, 2, 2), 1, False),            # runs of 4 rows of 4
]


def _arrays(x_shape, oc, kernel, groups, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((x_shape[1], oc // groups) + kernel).astype(dtype)
    return x, w, rng.standard_normal(oc).astype(dtype)


def _executable(fn, arrays, name):
    graph = lucid.trace(fn, *(lucid.spec(*a.shape, dtype=str(a.dtype)) for a in arrays), name=name)
    return Executable(memory_planning.run(dead_code.run(fusion.run(graph))))


def _assert_close(actual, wanted, what, tol=TOL):
    scale = max(float(np.max(np.abs(wanted))), 1e-30)
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - wanted)))
    assert error <= tol * scale, f"{what}: max error {error:.3g} > {tol:g} x {scale:.3g}"


def _takes_the_path(executable) -> bool:
    labels = kernel_labels(executable)
    return "convT_blocks" in labels and not any(label.startswith(("convT_direct", "convT_unpack")) for label in labels)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_values_against_the_oracle(index):
    """With an epilogue adding another tensor of the output's shape and a ReLU."""
    x_shape, oc, kernel, groups, with_bias = CASES[index]
    x, w, b = _arrays(x_shape, oc, kernel, groups, index)
    out_shape = (x_shape[0], oc) + tuple(n * s for n, s in zip(x_shape[2:], kernel))
    r = np.random.default_rng(50 + index).standard_normal(out_shape).astype(np.float32)

    def fn(x, w, b, r):
        return F.relu(F.conv_transpose3d(x, w, b if with_bias else None, stride=kernel, groups=groups) + r)

    executable = _executable(fn, [x, w, b, r], f"blocks_{index}")
    assert _takes_the_path(executable), kernel_labels(executable)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    want = np.maximum(oracle.conv_transpose_nd(x64, w64, b64 if with_bias else None, stride=kernel, groups=groups)
                      + r, 0)
    for threads in (2, 1):
        _assert_close(executable(x, w, b, r, threads=threads)[0], want, f"case {index}, {threads} threads")


# (input shape, weight shape, keyword arguments): transposed convs the path leaves to the direct phases
OTHERS = [
    ((1, 8, 3, 3, 8), (8, 6, 2, 2, 2), dict(stride=2, padding=1)),               # padding
    ((1, 8, 3, 3, 8), (8, 6, 2, 2, 2), dict(stride=2, output_padding=1)),        # output padding
    ((1, 8, 3, 3, 8), (8, 6, 4, 4, 4), dict(stride=2, padding=1)),               # kernel 4, stride 2
    ((1, 8, 3, 3, 8), (8, 6, 2, 2, 2), dict(stride=1)),                          # kernel 2, stride 1
    ((1, 8, 3, 3, 6), (8, 6, 2, 2, 2), dict(stride=2)),                          # rows of 6 points
    ((1, 8, 3, 3, 8), (8, 6, 2, 2, 3), dict(stride=(2, 2, 3))),                  # stride 3 along w
]


@pytest.mark.parametrize("index", range(len(OTHERS)))
def test_other_transposed_convs_keep_the_direct_phases(index):
    x_shape, w_shape, kwargs = OTHERS[index]
    rng = np.random.default_rng(index)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    executable = _executable(lambda x, w: F.conv_transpose3d(x, w, **kwargs), [x, w], f"others_{index}")
    assert "convT_blocks" not in kernel_labels(executable), kernel_labels(executable)
    _assert_close(executable(x, w)[0], oracle.conv_transpose_nd(x.astype(np.float64), w.astype(np.float64), **kwargs),
                  f"{kwargs}")


def test_symbolic_sizes_keep_the_direct_phases():
    """A graph compiled for every size: the direct phases, whose rows take their length per call."""
    lucid.manual_seed(3)
    model = nn.ConvTranspose3d(8, 6, 2, stride=2).eval()
    compiled = lucid.compile(model, dynamic=True)
    w, b = (p.numpy().astype(np.float64) for p in (model.weight, model.bias))
    with lucid.no_grad():
        for volume in [(4, 5, 8), (5, 9, 7), (6, 6, 13)]:
            x = np.random.default_rng(sum(volume)).standard_normal((1, 8) + volume).astype(np.float32)
            _assert_close(compiled(lucid.tensor(x)).numpy(), oracle.conv_transpose_nd(x.astype(np.float64), w, b,
                                                                                      stride=2), f"{volume}")
    labels = [label for variant in compiled.variants.values() for label in kernel_labels(variant.executable)]
    assert compiled.stats()["dynamic_variants"] >= 1 and "convT_blocks" not in labels, labels


def test_float64():
    """Vectors of half the lanes; the sums in float64."""
    x, w, b = _arrays((1, 12, 3, 5, 8), 10, (2, 2, 2), 1, 7, np.float64)
    executable = _executable(lambda x, w, b: F.conv_transpose3d(x, w, b, stride=2), [x, w, b], "blocks_float64")
    assert _takes_the_path(executable), kernel_labels(executable)
    want = oracle.conv_transpose_nd(x, w, b, stride=2)
    np.testing.assert_allclose(executable(x, w, b)[0], want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


def test_a_concatenation_read_from_its_sources():
    """A decoder's upsampling of a skip connection joined to the path below: the concatenation is
    fused in front, each source's rows read where they are."""
    rng = np.random.default_rng(11)
    a, c = (rng.standard_normal((2, channels, 3, 4, 8)).astype(np.float32) for channels in (6, 10))
    w = rng.standard_normal((16, 12, 2, 2, 2)).astype(np.float32)
    executable = _executable(lambda a, c, w: F.conv_transpose3d(lucid.cat([a, c], dim=1), w, stride=2), [a, c, w],
                             "blocks_join")
    labels = kernel_labels(executable)
    assert _takes_the_path(executable) and "concat" not in labels, labels
    joined = np.concatenate([a, c], axis=1).astype(np.float64)
    for threads in (2, 1):
        _assert_close(executable(a, c, w, threads=threads)[0],
                      oracle.conv_transpose_nd(joined, w.astype(np.float64), stride=2), f"{threads} threads")


def test_training_gradients_through_the_path():
    """A compiled training step (weights changed every call: packed on each): the loss's gradients
    against the oracle's vector-Jacobian product, twice."""
    x, w, b = _arrays((2, 12, 3, 5, 8), 10, (2, 2, 2), 1, 13)
    conv = nn.ConvTranspose3d(12, 10, 2, stride=2)
    conv.weight.data, conv.bias.data = lucid.tensor(w), lucid.tensor(b)
    g = np.random.default_rng(14).standard_normal((2, 10, 6, 10, 16)).astype(np.float32)

    def step(x_in):
        return (conv(x_in) * lucid.tensor(g)).sum()

    compiled = lucid.compile(step)
    x_tensor = lucid.tensor(x, requires_grad=True)
    for _ in range(2):
        for p in (conv.weight, conv.bias, x_tensor):
            p.grad = None
        compiled(x_tensor).backward()
    labels = [label for variant in compiled.variants.values() for label in kernel_labels(variant.forward)]
    assert "convT_blocks" in labels, labels
    dx, dw, db = oracle.conv_transpose_nd_vjp(*(a.astype(np.float64) for a in (g, x, w, b)), stride=2)
    _assert_close(x_tensor.grad.numpy(), dx, "dx")
    _assert_close(conv.weight.grad.numpy(), dw, "dw")
    _assert_close(conv.bias.grad.numpy(), db, "db")
