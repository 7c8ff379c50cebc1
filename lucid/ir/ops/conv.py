"""Convolution operators in 1-D, 2-D and 3-D: `conv`, `conv_transpose` and `conv_weight_grad`.

Attributes (tuples have one entry per spatial axis):
  stride, dilation: tuples of ints >= 1; padding: tuple of (lo, hi) pairs >= 0 (asymmetric allowed,
  which is how 'same' padding with an even extent is represented); groups: int >= 1;
  conv_transpose also has output_padding (each < max(stride, dilation); a symbolic size in the input
  gradient of a strided conv of symbolic size, whose rows past the last window are `(D + 1) % 2`);
  conv_weight_grad also has kernel_size.

Layouts are PyTorch's: input (N, C, *spatial); conv weight (O, C/groups, *k); transposed-conv weight
(C, O/groups, *k); optional bias (O,).

The reference kernels are vectorised NumPy with bounded memory:
- conv and conv_weight_grad gather strided windows (im2col) a chunk of output rows at a time, so the
  column buffer never exceeds `COLUMN_BUDGET` elements, and do one batched matrix product per chunk;
- conv_transpose never multiplies inserted zeros: one matrix product per kernel offset, whose result is
  added into the strided positions of the output it reaches (the data-gradient of a conv).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...errors import DTypeError, ShapeError
from .. import symbolic
from ..types import TensorType
from .attributes import Int, IntTuple, TupleOf
from .registry import OpDef, OpKind, emit, register

#: Largest im2col buffer, in elements, that conv and conv_weight_grad materialise at once.
COLUMN_BUDGET = 1 << 23


def conv_output_size(size: int, k: int, stride: int, lo: int, hi: int, dilation: int) -> int:
    """Number of windows along one axis (may be <= 0 when the dilated kernel does not fit)."""
    return (size + lo + hi - dilation * (k - 1) - 1) // stride + 1


def conv_transpose_output_size(size: int, k: int, stride: int, lo: int, hi: int, dilation: int,
                               output_padding: int) -> int:
    return (size - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1


class ConvBase(OpDef):
    """Shared checks of the convolution family."""

    kind = OpKind.CONTRACTION
    attributes = {"stride": IntTuple(min=1), "padding": TupleOf(IntTuple(min=0, length=2)),
                  "dilation": IntTuple(min=1), "groups": Int(min=1)}

    def takes_prologue(self, attrs, input_types):
        """Yes when the kernel has more than one tap across its last two axes (codegen then packs the
        input into a padded copy, computing the tree as it does) or is one tap in all (1 x 1 x 1:
        each work item over its planes computes its rows first, planes.py); a kernel of one tap
        across but several along d (a (2+1)-D net's 3 x 1 x 1) is read where the input is, which a
        tree would take away."""
        kernel = (1, 1, 1) + tuple(input_types[1].shape[2:])
        return kernel[-1] * kernel[-2] > 1 or math.prod(kernel) == 1

    # Messages of this family start with the rank-specific name (e.g. "conv3d"), so no op prefix.
    def error(self, message):
        return ShapeError(message)

    def dtype_error(self, message):
        return DTypeError(message)

    def display_name(self, rank: int) -> str:
        return f"{self.name}{rank}d"

    def check_attrs(self, attrs, rank: int, display: str) -> None:
        stride, dilation, padding, groups = attrs["stride"], attrs["dilation"], attrs["padding"], attrs["groups"]
        if not (len(stride) == len(dilation) == len(padding) == rank):
            raise self.error(f"{display}: expected {rank} stride/dilation/padding entries, "
                             f"got stride={stride} dilation={dilation} padding={padding}")
        if min(stride) < 1 or min(dilation) < 1:
            raise self.error(f"{display}: stride and dilation must be >= 1, got stride={stride} dilation={dilation}")
        if min(min(p) for p in padding) < 0:
            raise self.error(f"{display}: padding must be >= 0, got {padding}")
        if groups < 1:
            raise self.error(f"{display}: groups must be >= 1, got {groups}")

    def check_tensors(self, display: str, x: TensorType, w: TensorType, b: TensorType | None) -> int:
        if w.ndim < 3 or w.ndim > 5:
            raise self.error(f"{display}: expected a weight of rank 3 to 5, got shape {w.shape}")
        if min(w.shape) < 1:
            raise self.error(f"{display}: expected a weight with sizes >= 1, got shape {w.shape}")
        if x.ndim != w.ndim:
            raise self.error(f"{display}: expected a batched input of rank {w.ndim} (N, C, *spatial), "
                             f"got shape {x.shape}")
        if x.dtype != w.dtype or not x.dtype.is_floating:
            raise self.dtype_error(f"{display}: expected floating input and weight of one dtype, "
                                   f"got input {x.dtype} and weight {w.dtype}")
        if b is not None and b.dtype != x.dtype:
            raise self.dtype_error(f"{display}: expected a {x.dtype} bias, got {b.dtype}")
        return w.ndim - 2

    def check_bias(self, display: str, b: TensorType | None, out_channels: int) -> None:
        if b is not None and b.shape != (out_channels,):
            raise self.error(f"{display}: expected a bias of shape ({out_channels},), got {b.shape}")

    def check_fits(self, display: str, x: TensorType, kernel: tuple, attrs, out_sp: tuple) -> None:
        if any(n < 1 for n in out_sp):
            padded = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[2:], attrs["padding"]))
            dilated = tuple(d * (k - 1) + 1 for k, d in zip(kernel, attrs["dilation"]))
            raise self.error(f"{display}: input spatial size {x.shape[2:]} (padded {padded}) is smaller than "
                             f"the dilated kernel {dilated}; the output would be {out_sp}")


@register
class Conv(ConvBase):
    name = "conv"
    fusion_anchor = True

    def flops(self, attrs, input_types, output_type):
        w = input_types[1]
        return 2 * output_type.size * (w.size // w.shape[0])        # 2 x (outputs x weights per output)

    def infer(self, attrs, x, w, b=None):
        display = self.display_name(w.ndim - 2)
        rank = self.check_tensors(display, x, w, b)
        self.check_attrs(attrs, rank, display)
        groups, out_ch = attrs["groups"], w.shape[0]
        if out_ch % groups:
            raise self.error(f"{display}: out_channels {out_ch} is not divisible by groups {groups}")
        if x.shape[1] != w.shape[1] * groups:
            raise self.error(f"{display}: expected input with {w.shape[1] * groups} channels "
                             f"(weight {w.shape}, groups={groups}), got {x.shape[1]} channels in input of shape {x.shape}")
        self.check_bias(display, b, out_ch)
        out_sp = tuple(conv_output_size(n, k, s, lo, hi, d) for n, k, s, (lo, hi), d in
                       zip(x.shape[2:], w.shape[2:], attrs["stride"], attrs["padding"], attrs["dilation"]))
        self.check_fits(display, x, w.shape[2:], attrs, out_sp)
        return TensorType((x.shape[0], out_ch) + out_sp, x.dtype)

    def compute(self, attrs, x, w, b=None):
        out_type = self.infer(attrs, TensorType(x.shape, x.dtype), TensorType(w.shape, w.dtype))
        groups, out_ch = attrs["groups"], w.shape[0]
        og = out_ch // groups
        w_rows = w.reshape(groups, og, -1)                               # (G, Og, Cg*K)
        y = np.empty(out_type.shape, dtype=x.dtype)
        y_groups = y.reshape((x.shape[0], groups, og) + out_type.shape[2:])
        for batch, rows, cols in _im2col_chunks(x, w.shape[2:], attrs, out_type.shape[2:]):
            block = np.matmul(w_rows, cols).reshape(                     # (G, Og, n, rows, *rest)
                (groups, og, batch.stop - batch.start, rows.stop - rows.start) + out_type.shape[3:])
            y_groups[batch, :, :, rows] = np.moveaxis(block, 2, 0)
        if b is not None:
            y += b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return y

    def grad(self, attrs, inputs, y, g):
        x, w = inputs[0], inputs[1]
        output_padding = tuple(
            n - conv_transpose_output_size(m, k, s, lo, hi, d, 0)
            for n, m, k, s, (lo, hi), d in zip(x.shape[2:], g.shape[2:], w.shape[2:], attrs["stride"],
                                               attrs["padding"], attrs["dilation"]))
        if symbolic.is_symbolic(output_padding):     # a symbolic size's remainder modulo the stride:
            output_padding = tuple(s - 1 if symbolic.is_symbolic(p) else p       # the largest, then slice
                                   for p, s in zip(output_padding, attrs["stride"]))
        gx = emit("conv_transpose", g, w, output_padding=output_padding, **attrs)
        if not symbolic.same(tuple(gx.shape), tuple(x.shape)):
            gx = emit("slice", gx, starts=(0,) * len(x.shape), stops=tuple(x.shape), steps=(1,) * len(x.shape))
        gw = emit("conv_weight_grad", x, g, kernel_size=tuple(w.shape[2:]), **attrs)
        return (gx, gw) + ((_bias_grad(g),) if len(inputs) == 3 else ())


@register
class ConvTranspose(ConvBase):
    name = "conv_transpose"
    fusion_anchor = True
    # symbolic in a strided conv's input gradient: the rows past the last window (`(D + 1) % 2`)
    attributes = {**ConvBase.attributes, "output_padding": IntTuple(min=0, symbolic=True)}

    def flops(self, attrs, input_types, output_type):
        x, w = input_types[0], input_types[1]
        return 2 * x.size * (w.size // w.shape[0])                  # each input element meets its weights

    def infer(self, attrs, x, w, b=None):
        display = self.display_name(w.ndim - 2)
        rank = self.check_tensors(display, x, w, b)
        self.check_attrs(attrs, rank, display)
        groups, output_padding = attrs["groups"], attrs["output_padding"]
        if x.shape[1] != w.shape[0]:
            raise self.error(f"{display}: expected input with {w.shape[0]} channels (weight {w.shape}), "
                             f"got {x.shape[1]} channels in input of shape {x.shape}")
        if w.shape[0] % groups:
            raise self.error(f"{display}: in_channels {w.shape[0]} is not divisible by groups {groups}")
        if len(output_padding) != rank or any(
                not 0 <= p < max(s, d) for p, s, d in zip(output_padding, attrs["stride"], attrs["dilation"])):
            raise self.error(f"{display}: output_padding must be >= 0 and smaller than stride or dilation, "
                             f"got output_padding={output_padding} stride={attrs['stride']} dilation={attrs['dilation']}")
        out_ch = w.shape[1] * groups
        self.check_bias(display, b, out_ch)
        out_sp = tuple(conv_transpose_output_size(n, k, s, lo, hi, d, p) for n, k, s, (lo, hi), d, p in
                       zip(x.shape[2:], w.shape[2:], attrs["stride"], attrs["padding"], attrs["dilation"],
                           output_padding))
        if any(n < 1 for n in out_sp):
            raise self.error(f"{display}: padding {attrs['padding']} removes the whole output of input "
                             f"size {x.shape[2:]}; the output would be {out_sp}")
        return TensorType((x.shape[0], out_ch) + out_sp, x.dtype)

    def compute(self, attrs, x, w, b=None):
        out_type = self.infer(attrs, TensorType(x.shape, x.dtype), TensorType(w.shape, w.dtype))
        y = _conv_transpose_kernel(x, w, attrs, out_type.shape)
        if b is not None:
            y += b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return y

    def grad(self, attrs, inputs, y, g):
        x, w = inputs[0], inputs[1]
        conv_attrs = {k: v for k, v in attrs.items() if k != "output_padding"}
        gx = emit("conv", g, w, **conv_attrs)
        if not symbolic.same(tuple(gx.shape), tuple(x.shape)):  # output_padding >= stride adds windows past the input
            gx = emit("slice", gx, starts=(0,) * len(x.shape), stops=tuple(x.shape), steps=(1,) * len(x.shape))
        gw = emit("conv_weight_grad", g, x, kernel_size=tuple(w.shape[2:]), **conv_attrs)
        return (gx, gw) + ((_bias_grad(g),) if len(inputs) == 3 else ())


@register
class ConvWeightGrad(ConvBase):
    """Gradient of a conv's weight: x (N, C, *in), gy (N, O, *out) -> (O, C/groups, *kernel_size).

    The number of windows along each axis is gy's size, which may be smaller than the conv's output
    (the transposed conv's gradient uses this); each window must lie inside the padded input.
    """

    name = "conv_weight_grad"
    differentiable = False
    attributes = {**ConvBase.attributes, "kernel_size": IntTuple(min=1, length=range(1, 4))}

    def flops(self, attrs, input_types, output_type):
        gy = input_types[1]
        return 2 * output_type.size * (gy.size // gy.shape[1])      # each weight meets its window positions

    def infer(self, attrs, x, gy):
        rank = len(attrs["kernel_size"])
        display = self.display_name(rank)
        self.check_attrs(attrs, rank, display)
        groups = attrs["groups"]
        if x.ndim != rank + 2 or gy.ndim != rank + 2 or x.shape[0] != gy.shape[0]:
            raise self.error(f"{display}: expected input and output gradient of rank {rank + 2} with one batch "
                             f"size, got {x.shape} and {gy.shape}")
        if x.shape[1] % groups or gy.shape[1] % groups:
            raise self.error(f"{display}: channels {x.shape[1]} and {gy.shape[1]} must be divisible by groups {groups}")
        windows = tuple(conv_output_size(n, k, s, lo, hi, d) for n, k, s, (lo, hi), d in
                        zip(x.shape[2:], attrs["kernel_size"], attrs["stride"], attrs["padding"], attrs["dilation"]))
        if any(m > n for m, n in zip(gy.shape[2:], windows)):
            raise self.error(f"{display}: output gradient spatial size {gy.shape[2:]} exceeds the {windows} "
                             f"windows of input {x.shape}")
        return TensorType((gy.shape[1], x.shape[1] // groups) + tuple(attrs["kernel_size"]), x.dtype)

    def compute(self, attrs, x, gy):
        out_type = self.infer(attrs, TensorType(x.shape, x.dtype), TensorType(gy.shape, gy.dtype))
        groups, og = attrs["groups"], gy.shape[1] // attrs["groups"]
        gy_groups = gy.reshape((gy.shape[0], groups, og) + gy.shape[2:])
        gw = np.zeros((groups, og, out_type.size // (groups * og)), dtype=x.dtype)
        for batch, rows, cols in _im2col_chunks(x, attrs["kernel_size"], attrs, gy.shape[2:]):
            g_block = np.moveaxis(gy_groups[batch, :, :, rows], 0, 2)             # (G, Og, n, rows, *rest)
            gw += np.matmul(g_block.reshape(groups, og, -1), cols.transpose(0, 2, 1))
        return gw.reshape(out_type.shape)


def _bias_grad(g):
    from .reduction import sum_

    return sum_(g, (0,) + tuple(range(2, len(g.shape))))


def _im2col_chunks(x: np.ndarray, kernel: tuple, attrs: dict, out_sp: tuple):
    """Yield (batch slice, first-axis row slice, columns) covering all `out_sp` windows of `x`.

    columns has shape (groups, C/groups * prod(kernel), n * rows * prod(out_sp[1:])): rows in (channel,
    kernel offset) order, columns in (batch, output position) order, so the gather copies runs along
    the output's last axis; at most COLUMN_BUDGET elements.
    """
    groups = attrs["groups"]
    pads = ((0, 0), (0, 0)) + tuple(tuple(p) for p in attrs["padding"])
    xp = np.pad(x, pads) if any(map(any, attrs["padding"])) else np.ascontiguousarray(x)
    n_batch, channels = x.shape[:2]
    cg = channels // groups
    sp_strides = xp.strides[2:]
    windows = as_strided(
        xp,
        shape=(n_batch, groups, cg) + tuple(out_sp) + tuple(kernel),
        strides=(xp.strides[0], xp.strides[1] * cg, xp.strides[1])
        + tuple(st * s for st, s in zip(sp_strides, attrs["stride"]))
        + tuple(st * d for st, d in zip(sp_strides, attrs["dilation"])),
        writeable=False)
    rank = len(kernel)
    # (N, G, Cg, *out, *k) -> (G, Cg, *k, N, *out)
    order = (1, 2) + tuple(range(3 + rank, 3 + 2 * rank)) + (0,) + tuple(range(3, 3 + rank))
    windows = windows.transpose(order)
    row_cost = channels * math.prod(kernel) * math.prod(out_sp[1:])
    rows_per_chunk = max(1, COLUMN_BUDGET // max(row_cost, 1))
    for batch, rows in _chunk_rows(n_batch, out_sp[0], rows_per_chunk):
        block = windows[(slice(None),) * (2 + rank) + (batch, rows)]
        yield batch, rows, block.reshape(groups, cg * math.prod(kernel), -1)


def _chunk_rows(n_batch: int, n_rows: int, rows_per_chunk: int):
    """Split (batch, first output axis) into chunks of about rows_per_chunk rows."""
    if rows_per_chunk >= n_rows:
        per_batch = rows_per_chunk // n_rows
        for start in range(0, n_batch, per_batch):
            yield slice(start, min(start + per_batch, n_batch)), slice(0, n_rows)
        return
    for b in range(n_batch):
        for start in range(0, n_rows, rows_per_chunk):
            yield slice(b, b + 1), slice(start, min(start + rows_per_chunk, n_rows))


def _conv_transpose_kernel(x: np.ndarray, w: np.ndarray, attrs: dict, out_shape: tuple) -> np.ndarray:
    """Transposed conv as a scatter of one matrix product per kernel offset (no inserted zeros)."""
    if x.size == 0:
        return np.zeros(out_shape, dtype=x.dtype)
    groups = attrs["groups"]
    n_batch, channels = x.shape[:2]
    cg, og = channels // groups, w.shape[1]
    in_sp, kernel = x.shape[2:], w.shape[2:]
    lows = tuple(lo for lo, _ in attrs["padding"])
    # Uncropped output extent along each axis, enough to hold the cropped window [lo, lo + out).
    full = tuple(max((n - 1) * s + d * (k - 1) + 1, lo + m) for n, s, d, k, lo, m in
                 zip(in_sp, attrs["stride"], attrs["dilation"], kernel, lows, out_shape[2:]))
    x_cols = x.reshape(n_batch, groups, cg, -1).transpose(1, 2, 0, 3).reshape(groups, cg, -1)   # (G, Cg, N*P)
    w_taps = w.reshape((groups, cg, og) + tuple(kernel))
    buf = np.zeros((groups, og, n_batch) + full, dtype=x.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        tap = w_taps[(slice(None),) * 3 + offset].transpose(0, 2, 1)                          # (G, Og, Cg)
        contrib = np.matmul(tap, x_cols).reshape((groups, og, n_batch) + tuple(in_sp))
        target = tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                       for o, d, n, s in zip(offset, attrs["dilation"], in_sp, attrs["stride"]))
        buf[(slice(None),) * 3 + target] += contrib
    crop = tuple(slice(lo, lo + m) for lo, m in zip(lows, out_shape[2:]))
    y = buf[(slice(None),) * 3 + crop]                       # (G, Og, N, *out)
    return np.ascontiguousarray(np.moveaxis(y, 2, 0)).reshape(out_shape)


# ----------------------------------------------------------------------------------------------
# Public operator functions


def conv(x, w, b=None, *, stride, padding, dilation, groups):
    inputs = (x, w) if b is None else (x, w, b)
    return emit("conv", *inputs, stride=tuple(stride), padding=tuple(map(tuple, padding)),
                dilation=tuple(dilation), groups=int(groups))


def conv_transpose(x, w, b=None, *, stride, padding, output_padding, dilation, groups):
    inputs = (x, w) if b is None else (x, w, b)
    return emit("conv_transpose", *inputs, stride=tuple(stride), padding=tuple(map(tuple, padding)),
                output_padding=tuple(output_padding), dilation=tuple(dilation), groups=int(groups))
