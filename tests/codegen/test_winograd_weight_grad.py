"""The Winograd F(2x2, 3x3) and F(2x2, 2x2) weight gradient
(lucid/codegen/kernels/conv/winograd_weight_grad.py, kernel `wgrad_wino`) against independent
float64 references.

When it applies: a `conv_weight_grad` of one group and dilation 1 whose kernel across (h, w) is
stride x 3 or stride x 2 taps (3 x 3 and 2 x 2 of stride 1, 4 x 4 and 6 x 6 of stride 2, and so a
transposed conv's k4 s2 weight gradient; any depth taps and depth stride), 16+ input and output
channels, concrete sizes, outputs at least 4 wide and 2 high, float32 or float64; every other weight
gradient stays direct (`wgrad_tiles`). Every compiled case first checks which of the two the
executable runs.

References: `oracle.conv_nd_vjp` (float64 loops) for values, central differences of
`oracle.conv_nd` for one case, and for NaN and infinities `direct_weight_grad` below (the
definition as zero-padded im2col sums: the padding's zeros multiply, so 0 x inf is NaN at the
border) and PyTorch's native kernels (oneDNN off) where torch is installed. Only the module-level
training step compares with lucid itself (its eager model)."""
from __future__ import annotations

import numpy as np
import pytest

import lucid
import lucid.nn as nn
import lucid.nn.functional as F
import oracle
from lucid.codegen.kernels.conv import winograd_weight_grad
from lucid.passes import autodiff, memory_planning
from lucid.runtime.executable import Executable
from model_helpers import kernel_labels, torch_native_convolutions

try:
    import torch
except ImportError:          # the PyTorch comparisons skip
    torch = None

#: Error bound relative to the largest magnitude of the reference: dw by Winograd (its transforms
#: and tile sums round a little more than direct sums; measured at most 3.4e-7 in float32 and 1.7e-15
#: in float64 on these cases), and y, dx (other kernels: test_winograd.py's bounds).
DW_TOL = {"float32": 5e-6, "float64": 1e-10}
TOL = {"float32": 1e-4, "float64": 1e-10}


def assert_close(actual, expected, tol, what):
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - expected)))
    assert error <= tol * scale, f"{what}: max error {error:.3g} > {tol:g} x max magnitude {scale:.3g}"


def gradient_executable(x_shape, w_shape, dtype, attrs, name, bias=False, x_spec=None, transposed=False):
    """(Executable of conv's (or conv_transpose's) forward and gradients: outputs y, dx, dw[, db];
    the output gradient's shape)."""
    rank = len(w_shape) - 2
    conv = getattr(F, f"conv_transpose{rank}d" if transposed else f"conv{rank}d")
    specs = [x_spec or lucid.spec(*x_shape, dtype=dtype), lucid.spec(*w_shape, dtype=dtype)]
    if bias:
        specs.append(lucid.spec(w_shape[0], dtype=dtype))
    graph = lucid.trace(lambda *a: conv(*a, **attrs), *specs, name=name)
    grad = autodiff.run(graph, wrt=[v.name for v in graph.inputs])
    return Executable(memory_planning.run(grad)), grad.inputs[-1].shape


def operands(x_shape, oc, kernel, dtype, rng, groups=1, bias=False, transposed=False):
    x = rng.standard_normal(x_shape).astype(dtype)
    channels = (x_shape[1], oc) if transposed else (oc, x_shape[1] // groups)
    w = (rng.standard_normal(channels + tuple(kernel)) * 0.2).astype(dtype)
    return [x, w] + ([rng.standard_normal(oc).astype(dtype)] if bias else [])


def wgrad_labels(executable) -> list:
    return [label for label in kernel_labels(executable) if label in ("wgrad_wino", "wgrad_tiles")]


# ---------------------------------------------------------------------------------------------
# Where it applies, and values against the oracle

#: Cases Winograd takes: input shape, out channels, kernel, conv attributes, bias. Odd output
#: sizes (half tiles), channel counts not multiples of 16, the smallest sizes it takes.
APPLIES = [
    ((1, 20, 3, 7, 9), 17, (3, 3, 3), dict(padding=1), False),             # outputs 3 x 7 x 9
    ((2, 24, 3, 5, 6), 40, (1, 3, 3), dict(padding=(0, 1, 1)), True),      # 3 x 5 x 6, batch 2
    ((1, 33, 3, 8, 7), 17, (2, 3, 3), dict(padding=(1, 0, 1)), False),     # 4 x 6 x 7, two depth taps
    ((2, 16, 4, 5, 6), 16, (3, 3, 3), dict(padding=0), False),             # 2 x 3 x 4: 16 channels, width 4
    ((2, 20, 7, 9), 24, (3, 3), dict(padding=1), False),                   # 2-D: 7 x 9
    ((1, 17, 2, 6), 33, (3, 3), dict(padding=(1, 0)), True),               # 2 x 4: the smallest height and width
    ((1, 40, 5, 6), 16, (3, 3), dict(padding=0), False),                   # 3 x 4
    # stride phases: F(2x2, 2x2) on each of a k4 s2 kernel's 2 x 2 phases (depth: stride 2, 4 taps)
    ((1, 20, 9, 11, 13), 17, (4, 4, 4), dict(stride=2, padding=1), False),  # 4 x 5 x 6
    ((2, 16, 9, 12), 24, (4, 4), dict(stride=2, padding=(1, 2)), True),     # 2-D: 4 x 7
    ((1, 20, 11, 13), 18, (6, 6), dict(stride=2, padding=2), False),        # F(2x2, 3x3) per phase: 5 x 6
    ((1, 20, 9, 13), 17, (4, 2), dict(stride=(2, 1), padding=(1, 0)), False),  # phases along h only
    ((1, 21, 9, 13), 16, (2, 2), dict(padding=0), False),                   # 2 x 2 of stride 1: 8 x 12
    ((1, 20, 5, 9, 13), 17, (3, 3, 3), dict(stride=(2, 1, 1), padding=1), False),  # depth stride 2
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("index", range(len(APPLIES)))
def test_matches_the_oracle(index, dtype):
    """y, dx and dw (and db) of the gradient graph against `oracle.conv_nd_vjp`, at 1 and 2 threads;
    the weight gradient runs `wgrad_wino` and no `wgrad_tiles`."""
    x_shape, oc, kernel, attrs, bias = APPLIES[index]
    rng = np.random.default_rng(index)
    arrays = operands(x_shape, oc, kernel, dtype, rng, bias=bias)
    executable, gy_shape = gradient_executable(x_shape, arrays[1].shape, dtype, attrs, f"wgw_{index}_{dtype}", bias)
    assert wgrad_labels(executable) == ["wgrad_wino"], kernel_labels(executable)
    gy = rng.standard_normal(gy_shape).astype(dtype)
    _check_against_the_oracle(executable, arrays, gy, attrs, dtype, f"{x_shape} -> {oc} {kernel} {attrs} {dtype}")


def _check_against_the_oracle(executable, arrays, gy, attrs, dtype, what, transposed=False):
    wide = [a.astype(np.float64) for a in arrays]
    forward, vjp = (oracle.conv_transpose_nd, oracle.conv_transpose_nd_vjp) if transposed else \
        (oracle.conv_nd, oracle.conv_nd_vjp)
    y_want = forward(*wide, **attrs)
    grads_want = [g for g in vjp(gy.astype(np.float64), *wide, **attrs) if g is not None]
    for threads in (1, 2):
        y, *grads = executable(*arrays, gy, threads=threads)
        assert y.dtype == np.dtype(dtype) and y.shape == y_want.shape
        assert_close(y, y_want, TOL[dtype], f"{what}: y, {threads} threads")
        assert len(grads) == len(grads_want)
        for name, got, want in zip(("dx", "dw", "db"), grads, grads_want):
            assert got.dtype == np.dtype(dtype) and got.shape == want.shape, name
            tol = DW_TOL[dtype] if name == "dw" else TOL[dtype]
            assert_close(got, want, tol, f"{what}: {name}, {threads} threads")


def test_a_sum_over_many_tiles_in_several_parts():
    """Enough tiles (2 x 6 x 10 x 10) for the sum over positions to be split into several parts
    (work items of `wgrad_wino`), added together at the end."""
    dtype, attrs = "float32", dict(padding=1)
    rng = np.random.default_rng(20)
    arrays = operands((2, 32, 6, 20, 20), 32, (3, 3, 3), dtype, rng)
    executable, gy_shape = gradient_executable(arrays[0].shape, arrays[1].shape, dtype, attrs, "wgw_parts")
    wino = [kernel for kernel, _ in executable.kernels() if kernel.label == "wgrad_wino"]
    assert len(wino) == 1 and "wgrad_tiles" not in kernel_labels(executable)
    assert isinstance(wino[0].items, int) and wino[0].items > 1, f"{wino[0].items} work items"
    gy = rng.standard_normal(gy_shape).astype(dtype)
    _check_against_the_oracle(executable, arrays, gy, attrs, dtype, "(2, 32, 6, 20, 20) -> 32, 3, padding 1")


#: Transposed convs whose weight gradient it takes (a conv weight gradient of kernel 4 and stride 2
#: over the transposed conv's output gradient): input shape, out channels, kernel, attributes.
TRANSPOSED_APPLIES = [
    ((1, 32, 4, 6, 8), 16, (4, 4, 4), dict(stride=2, padding=1)),
    ((2, 20, 3, 5, 7), 17, (4, 4, 4), dict(stride=2, padding=1, output_padding=1)),   # odd outputs 7 x 11 x 15
    ((2, 24, 5, 7), 20, (4, 4), dict(stride=2, padding=1)),                          # 2-D
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("index", range(len(TRANSPOSED_APPLIES)))
def test_transposed_conv_weight_gradients(index, dtype):
    """y, dx and dw of conv_transpose's gradient graph against `oracle.conv_transpose_nd_vjp`, at 1
    and 2 threads, its weight gradient by `wgrad_wino`."""
    x_shape, oc, kernel, attrs = TRANSPOSED_APPLIES[index]
    rng = np.random.default_rng(30 + index)
    arrays = operands(x_shape, oc, kernel, dtype, rng, transposed=True)
    executable, gy_shape = gradient_executable(x_shape, arrays[1].shape, dtype, attrs, f"wgw_t{index}_{dtype}",
                                               transposed=True)
    assert wgrad_labels(executable) == ["wgrad_wino"], kernel_labels(executable)
    gy = rng.standard_normal(gy_shape).astype(dtype)
    _check_against_the_oracle(executable, arrays, gy, attrs, dtype, f"transposed {x_shape} -> {oc} {attrs} {dtype}",
                              transposed=True)


def test_a_large_sum_with_too_few_tiles_for_the_cores_stays_direct():
    """A transposed k4 s2 conv 128 -> 128 on a 4^3 input: its 32 tiles make fewer parts than one per
    core, and one copy of M (4 depth taps x 4 phases x 9 positions x 128 x 128) is 9.4 MB, more than
    SINGLE_PART_BYTES: the direct weight gradient runs, right."""
    x_shape, attrs = (1, 128, 4, 4, 4), dict(stride=2, padding=1)
    assert 4 * 4 * 9 * 128 * 128 * 4 > winograd_weight_grad.SINGLE_PART_BYTES
    rng = np.random.default_rng(50)
    arrays = operands(x_shape, 128, (4, 4, 4), "float32", rng, transposed=True)
    executable, gy_shape = gradient_executable(x_shape, arrays[1].shape, "float32", attrs, "wgw_one_part",
                                               transposed=True)
    assert wgrad_labels(executable) == ["wgrad_tiles"], kernel_labels(executable)
    gy = rng.standard_normal(gy_shape).astype("float32")
    _check_against_the_oracle(executable, arrays, gy, attrs, "float32", "one part, large M", transposed=True)


#: (input shape, out channels, kernel, attributes, transposed, the `wgrad_wino_pack_*` kernels it
#: runs): the input gradient's conv leaves its packed input in the workspace, and where that copy
#: holds the positions and whole vectors of channels the weight gradient needs it reads it instead
#: of packing its own.
SHARED_COPIES = {
    "transposed: its input": ((1, 32, 4, 6, 8), 16, (4, 4, 4), dict(stride=2, padding=1), True,
                              ["wgrad_wino_pack_gradient"]),
    "stride 1: the output gradient": ((1, 32, 6, 8, 8), 32, (3, 3, 3), dict(padding=1), False,
                                      ["wgrad_wino_pack_input"]),
    "stride 2: the output gradient": ((1, 32, 9, 11, 13), 32, (4, 4, 4), dict(stride=2, padding=1), False,
                                      ["wgrad_wino_pack_input"]),
    "20 channels: none": ((1, 20, 6, 8, 8), 20, (3, 3, 3), dict(padding=1), False,
                          ["wgrad_wino_pack_input", "wgrad_wino_pack_gradient"]),
}


@pytest.mark.parametrize("case", list(SHARED_COPIES))
def test_reads_the_copy_the_input_gradient_packed(case):
    x_shape, oc, kernel, attrs, transposed, packs = SHARED_COPIES[case]
    rng = np.random.default_rng(40 + list(SHARED_COPIES).index(case))
    arrays = operands(x_shape, oc, kernel, "float32", rng, transposed=transposed)
    executable, gy_shape = gradient_executable(x_shape, arrays[1].shape, "float32", attrs, "wgw_shared",
                                               transposed=transposed)
    assert [label for label in kernel_labels(executable) if label.startswith("wgrad_wino_pack")] == packs
    gy = rng.standard_normal(gy_shape).astype("float32")
    _check_against_the_oracle(executable, arrays, gy, attrs, "float32", case, transposed=transposed)


#: Cases it must not take (the direct `wgrad_tiles` runs): input shape, out channels, kernel, attributes.
NOT_APPLIED = {
    "stride 2": ((1, 20, 9, 10), 20, (3, 3), dict(stride=2, padding=1)),
    "5x5 stride 2": ((1, 20, 11, 12), 20, (5, 5), dict(stride=2, padding=2)),
    "4x3 stride 2": ((1, 20, 11, 12), 20, (4, 3), dict(stride=2, padding=1)),
    "3x3 stride 3": ((1, 20, 14, 15), 20, (3, 3), dict(stride=3, padding=1)),
    "depth dilation 2": ((1, 20, 5, 6, 7), 20, (3, 3, 3), dict(dilation=(2, 1, 1), padding=(2, 1, 1))),
    "dilation 2": ((1, 20, 8, 9), 20, (3, 3), dict(dilation=2, padding=2)),
    "5x5": ((1, 20, 7, 8), 20, (5, 5), dict(padding=2)),
    "1x1": ((1, 20, 7, 8), 20, (1, 1), dict(padding=0)),
    "groups 2": ((1, 40, 7, 8), 40, (3, 3), dict(padding=1, groups=2)),
    "8 input channels": ((1, 8, 7, 8), 20, (3, 3), dict(padding=1)),
    "8 output channels": ((1, 20, 7, 8), 8, (3, 3), dict(padding=1)),
    "output width 3": ((1, 20, 7, 3), 20, (3, 3), dict(padding=1)),
    "output height 1": ((1, 20, 1, 8), 20, (3, 3), dict(padding=1)),
}


@pytest.mark.parametrize("case", list(NOT_APPLIED))
def test_other_weight_gradients_stay_direct(case):
    x_shape, oc, kernel, attrs = NOT_APPLIED[case]
    rng = np.random.default_rng(list(NOT_APPLIED).index(case))
    arrays = operands(x_shape, oc, kernel, "float32", rng, groups=attrs.get("groups", 1))
    executable, gy_shape = gradient_executable(x_shape, arrays[1].shape, "float32", attrs, "wgw_direct")
    assert wgrad_labels(executable) == ["wgrad_tiles"], kernel_labels(executable)
    gy = rng.standard_normal(gy_shape).astype("float32")
    dw = executable(*arrays, gy, threads=2)[2]
    want = oracle.conv_nd_vjp(gy.astype(np.float64), *(a.astype(np.float64) for a in arrays), **attrs)[1]
    assert_close(dw, want, TOL["float32"], case)


def test_symbolic_sizes_stay_direct():
    """A graph of symbolic batch and spatial sizes (Winograd needs concrete ones) runs the direct
    weight gradient, right at the sizes it is called with."""
    x_spec = lucid.spec(lucid.dim("N"), 20, lucid.dim("D"), lucid.dim("H"), lucid.dim("W"))
    executable, _ = gradient_executable(None, (20, 20, 3, 3, 3), "float32", dict(padding=1), "wgw_symbolic",
                                        x_spec=x_spec)
    assert wgrad_labels(executable) == ["wgrad_tiles"], kernel_labels(executable)
    rng = np.random.default_rng(21)
    x, w = operands((2, 20, 3, 5, 6), 20, (3, 3, 3), "float32", rng)
    gy = rng.standard_normal((2, 20, 3, 5, 6)).astype("float32")
    dw = executable(x, w, gy, threads=2)[2]
    assert_close(dw, oracle.conv_nd_vjp(gy.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                                        padding=1)[1], TOL["float32"], "symbolic sizes")


# ---------------------------------------------------------------------------------------------
# Finite differences


#: (input shape, out channels, kernel, attributes, transposed, weight entries to check beside random ones).
FINITE_DIFFERENCE_CASES = {
    "3x3": ((1, 16, 4, 5), 16, (3, 3), dict(padding=1), False, [(0, 0, 0, 0), (15, 15, 2, 2), (3, 7, 0, 2)]),
    "transposed k4 s2": ((1, 16, 3, 5), 16, (4, 4), dict(stride=2, padding=1), True,
                         [(0, 0, 0, 0), (15, 15, 3, 3), (3, 7, 1, 2)]),
}


@pytest.mark.parametrize("case", list(FINITE_DIFFERENCE_CASES))
def test_finite_differences_float64(case):
    """dw of loss = sum(conv(x, w) * r) at a few random weight entries (the kernel's corners, which
    meet the padding, among them) against central differences of `oracle.conv_nd` (or
    `oracle.conv_transpose_nd`): the loss is linear in w, so the differences are exact up to rounding."""
    x_shape, oc, kernel, attrs, transposed, entries = FINITE_DIFFERENCE_CASES[case]
    dtype = "float64"
    rng = np.random.default_rng(22)
    x, w = operands(x_shape, oc, kernel, dtype, rng, transposed=transposed)
    executable, gy_shape = gradient_executable(x.shape, w.shape, dtype, attrs, "wgw_fd", transposed=transposed)
    assert wgrad_labels(executable) == ["wgrad_wino"], kernel_labels(executable)
    r = rng.standard_normal(gy_shape)
    dw = executable(x, w, r, threads=2)[2]
    entries = entries + [tuple(int(i) for i in np.unravel_index(k, w.shape))
                         for k in rng.choice(w.size, 6, replace=False)]
    step = 1e-3
    forward = oracle.conv_transpose_nd if transposed else oracle.conv_nd

    def loss(weights):
        return float(np.sum(forward(x, weights, **attrs) * r))

    for entry in entries:
        plus, minus = w.copy(), w.copy()
        plus[entry] += step
        minus[entry] -= step
        estimate = (loss(plus) - loss(minus)) / (2 * step)
        assert abs(dw[entry] - estimate) <= 1e-8 * max(1.0, abs(estimate)), f"dw{entry} {dw[entry]!r} vs {estimate!r}"


# ---------------------------------------------------------------------------------------------
# NaN and infinities: where the definition puts them


def direct_weight_grad(x, gy, kernel, padding, stride=1):
    """dw[oc, ic, tap] = sum over n and output positions of x_padded[stride * pos + tap] * gy[oc, pos],
    float64: x padded with zeros (which multiply like any value: 0 x inf is NaN), dilation 1."""
    x, gy = np.asarray(x, np.float64), np.asarray(gy, np.float64)
    rank = x.ndim - 2
    pads = [(p, p) for p in (padding if isinstance(padding, tuple) else (padding,) * rank)]
    steps = stride if isinstance(stride, tuple) else (stride,) * rank
    padded = np.pad(x, [(0, 0), (0, 0)] + pads)
    out = gy.shape[2:]
    dw = np.empty((gy.shape[1], x.shape[1]) + tuple(kernel))
    with np.errstate(all="ignore"):
        for tap in np.ndindex(*kernel):
            window = padded[(slice(None), slice(None)) + tuple(slice(t, t + s * (o - 1) + 1, s)
                                                              for t, o, s in zip(tap, out, steps))]
            # (n, ic, *pos) x (n, oc, *pos) -> (oc, ic): products summed explicitly, no BLAS
            products = window[:, None, :] * gy[:, :, None]
            dw[(slice(None), slice(None)) + tap] = products.sum(axis=(0,) + tuple(range(3, 3 + rank)))
    return dw


def torch_weight_grad(x, w, gy, padding, stride=1):
    conv = getattr(torch.nn.functional, f"conv{x.ndim - 2}d")
    with torch_native_convolutions():
        weight = torch.tensor(w, requires_grad=True)
        conv(torch.tensor(x), weight, padding=padding, stride=stride).backward(torch.tensor(gy))
    return weight.grad.numpy()


def same_values(got, want, rtol, what):
    """NaN, +inf and -inf in the same places, finite values within rtol of the largest finite one."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        np.testing.assert_array_equal(test(got), test(want), err_msg=f"{what}: {name} positions")
    finite = np.isfinite(want)
    assert finite.any() and not finite.all(), f"{what}: the case should mix finite and non-finite entries"
    assert_close(got[finite], want[finite], rtol, f"{what}: finite entries")


#: Where the non-finite values are (`non_finite_case`).
NON_FINITE = ["x", "gy", "x, stride 2"]


def non_finite_case(what, dtype):
    """(x, w, gy, padding, stride): a case Winograd takes, with NaN and infinities in x or in gy."""
    rng = np.random.default_rng(23)
    stride = 1
    if what == "x, stride 2":
        # kernel 4, stride 2: each x meets the taps of one phase per axis
        padding, stride = (1, 1), 2
        x, w = operands((1, 20, 9, 11), 17, (4, 4), dtype, rng)
        x[0, 2, 0, 0] = np.inf             # corner
        x[0, 5, 3, 10] = -np.inf           # right edge
        x[0, 7, 8, 4] = np.nan             # bottom edge
        x[0, 9, 2, 3] = np.inf             # +inf and -inf in one channel, met by tap (3, 2)
        x[0, 9, 4, 5] = -np.inf
    elif what == "x":
        # padding 0 along w: an x at the left or right edge meets one column of taps only
        padding = (1, 0)
        x, w = operands((1, 20, 6, 9), 17, (3, 3), dtype, rng)
        x[0, 2, 0, 0] = np.inf             # corner: taps (0, 0) and (1, 0) only
        x[0, 5, 3, 8] = -np.inf            # right edge
        x[0, 7, 5, 4] = np.nan             # bottom edge
        x[0, 9, 2, 3] = np.inf             # +inf and -inf in one channel: NaN where both meet
        x[0, 9, 4, 5] = -np.inf
        x[0, 11, 0, 8] = np.nan            # top right corner (the other input channels keep Winograd's sums)
    else:
        # 50 output channels, those not finite below 16: an exact sum is redone per (oc block, ic),
        # and blocks are at most 48 channels (3 vectors of 16), so a later oc block keeps Winograd's sums
        padding = (1, 1, 0)
        x, w = operands((1, 16, 3, 4, 6), 50, (3, 3, 3), dtype, rng)
    gy_shape = (1, w.shape[0]) + tuple((s + 2 * p - k) // stride + 1 for s, p, k in zip(x.shape[2:], padding,
                                                                                    w.shape[2:]))
    gy = rng.standard_normal(gy_shape).astype(dtype)
    if what == "gy":
        gy[0, 3, 0, 0, 0] = np.inf         # corner: times the padding's zeros (NaN) for kd = 0 or kh = 0
        gy[0, 3, 2, 2, 2] = -np.inf        # the same output channel: NaN where both meet x
        gy[0, 7, 1, 2, 3] = -np.inf        # the last column (no padding along w)
        gy[0, 11, 2, 3, 1] = np.inf        # the last depth and row: padding for kd = 2 and kh = 2
        gy[0, 13, 1, 3, 0] = np.nan
    return x, w, gy, padding, stride


def test_direct_reference_is_the_oracle_and_pytorch():
    """The NaN reference itself: `oracle.conv_nd_vjp` on finite values; PyTorch native on both
    non-finite cases (where torch is installed)."""
    rng = np.random.default_rng(24)
    x, w = operands((2, 5, 4, 6, 7), 3, (2, 3, 3), "float64", rng)
    gy = rng.standard_normal((2, 3, 5, 4, 7))
    np.testing.assert_allclose(direct_weight_grad(x, gy, (2, 3, 3), (1, 0, 1)),
                               oracle.conv_nd_vjp(gy, x, w, padding=(1, 0, 1))[1], rtol=1e-12, atol=1e-12)
    if torch is None:
        pytest.skip("PyTorch is not installed: the reference checked against the oracle only")
    for what in NON_FINITE:
        x, w, gy, padding, stride = non_finite_case(what, "float64")
        same_values(direct_weight_grad(x, gy, w.shape[2:], padding, stride),
                    torch_weight_grad(x, w, gy, padding, stride), 1e-12, f"non-finite {what}: the reference vs PyTorch")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("what", NON_FINITE)
def test_non_finite_values_where_the_definition_puts_them(what, dtype):
    """NaN and infinities in x (corners and edges, where fewer taps meet them; +inf and -inf in one
    channel) or in the output gradient (at the border the padding's zeros times inf are NaN): dw has
    NaN, +inf and -inf exactly where the zero-padded sums have them, the finite entries close; and
    the same against PyTorch's native kernels."""
    x, w, gy, padding, stride = non_finite_case(what, dtype)
    executable, gy_shape = gradient_executable(x.shape, w.shape, dtype, dict(padding=padding, stride=stride),
                                               f"wgw_nan_{dtype}")
    assert gy_shape == gy.shape
    assert wgrad_labels(executable) == ["wgrad_wino"], kernel_labels(executable)
    want = direct_weight_grad(x, gy, w.shape[2:], padding, stride)
    for threads in (1, 2):
        with np.errstate(all="ignore"):
            dw = executable(x, w, gy, threads=threads)[2]
        same_values(dw, want, DW_TOL[dtype], f"non-finite {what}, {dtype}, {threads} threads: dw vs the definition")
    if torch is not None:
        same_values(dw, torch_weight_grad(x, w, gy, padding, stride), DW_TOL[dtype],
                    f"non-finite {what}, {dtype}: dw vs PyTorch native")


def test_large_finite_inputs_stay_finite():
    """Inputs near float32's largest value: the input transform's sums of 4 x 4 patch values
    overflow where the definition's products do not; dw is the definition's, finite."""
    rng = np.random.default_rng(25)
    x, w = operands((1, 20, 6, 9), 17, (3, 3), "float32", rng)
    x[0, :, 2:4, 3:5] = np.float32(3e38) * np.sign(rng.standard_normal((20, 2, 2))).astype("float32")
    executable, gy_shape = gradient_executable(x.shape, w.shape, "float32", dict(padding=1), "wgw_overflow")
    assert wgrad_labels(executable) == ["wgrad_wino"], kernel_labels(executable)
    gy = (rng.standard_normal(gy_shape) * 1e-4).astype("float32")
    want = direct_weight_grad(x, gy, (3, 3), 1)
    assert np.isfinite(want).all() and np.abs(want).max() < 1e36
    with np.errstate(all="ignore"):
        dw = executable(x, w, gy, threads=2)[2]
    assert np.isfinite(dw).all(), f"{np.count_nonzero(~np.isfinite(dw))} entries not finite"
    assert_close(dw, want, DW_TOL["float32"], "large finite inputs")


# ---------------------------------------------------------------------------------------------
# A module's training step


#: (module factory, input shape, the output gradient's shape, oracle vjp): compiled with
#: lucid.compile, one step against eager.
TRAINING_STEPS = {
    "Conv3d(24, 20, 3, padding=1)": (lambda: nn.Conv3d(24, 20, 3, padding=1), (2, 24, 4, 6, 7), (2, 20, 4, 6, 7),
                                     lambda r, x, w: oracle.conv_nd_vjp(r, x, w, padding=1)[1]),
    "ConvTranspose3d(32, 16, 4, stride=2, padding=1)": (
        lambda: nn.ConvTranspose3d(32, 16, 4, stride=2, padding=1), (2, 32, 3, 5, 6), (2, 16, 6, 10, 12),
        lambda r, x, w: oracle.conv_transpose_nd_vjp(r, x, w, stride=2, padding=1)[1]),
}


@pytest.mark.parametrize("module", list(TRAINING_STEPS))
def test_training_step_matches_eager(module):
    """A conv module compiled with lucid.compile: one step's weight and bias gradients against the
    same model run eagerly (and the weight's against the oracle)."""
    factory, x_shape, r_shape, weight_vjp = TRAINING_STEPS[module]

    def make():
        lucid.manual_seed(3)
        return factory()

    eager, model = make(), make()
    compiled = lucid.compile(model)
    rng = np.random.default_rng(26)
    x = rng.standard_normal(x_shape).astype("float32")
    r = rng.standard_normal(r_shape).astype("float32")
    for run in (compiled, eager):
        (run(lucid.Tensor(x)) * lucid.Tensor(r)).sum().backward()
    training = [v for v in compiled.variants.values() if hasattr(v, "backward")]
    assert len(training) == 1
    assert wgrad_labels(training[0].backward) == ["wgrad_wino"], kernel_labels(training[0].backward)
    for name in ("weight", "bias"):
        got, want = getattr(model, name).grad.numpy(), getattr(eager, name).grad.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()), err_msg=name)
    w = eager.weight.numpy().astype(np.float64)
    assert_close(model.weight.grad.numpy(), weight_vjp(r.astype(np.float64), x.astype(np.float64), w),
                 DW_TOL["float32"], "weight vs oracle")
