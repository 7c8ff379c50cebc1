"""Pooling operators in 1-D, 2-D and 3-D: max_pool, avg_pool and their gradients.

Attributes (one entry per spatial axis): kernel, stride, padding (symmetric), dilation (max only),
ceil_mode; avg_pool also count_include_pad and divisor_override (None or int). Shapes follow PyTorch:
out = floor_or_ceil((in + 2p - d(k-1) - 1) / s) + 1, and with ceil_mode the last window must start
inside the input or its left padding. Inputs are batched (N, C, *spatial).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...errors import DTypeError, ShapeError
from ..types import TensorType
from .attributes import Bool, Int, IntTuple, Optional
from .registry import OpDef, OpKind, emit, register


def pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


class PoolBase(OpDef):
    kind = OpKind.POOLING
    attributes = {"kernel": IntTuple(min=1, length=range(1, 4)), "stride": IntTuple(min=1),
                  "padding": IntTuple(min=0), "ceil_mode": Bool()}

    # Messages of this family start with the rank-specific name (e.g. "conv3d"), so no op prefix.
    def error(self, message):
        return ShapeError(message)

    def dtype_error(self, message):
        return DTypeError(message)
    def rank(self, attrs) -> int:
        return len(attrs["kernel"])

    def display(self, attrs) -> str:
        return f"{self.name}{self.rank(attrs)}d"

    def out_spatial(self, attrs, in_sp: tuple) -> tuple:
        return tuple(pool_output_size(n, k, s, p, d, attrs["ceil_mode"]) for n, k, s, p, d in
                     zip(in_sp, attrs["kernel"], attrs["stride"], attrs["padding"], self.dilation(attrs)))

    def dilation(self, attrs) -> tuple:
        return attrs.get("dilation", (1,) * self.rank(attrs))

    def check(self, attrs, x: TensorType) -> tuple:
        """Validate input and attributes; return the output spatial shape."""
        rank, name = self.rank(attrs), self.display(attrs)
        kernel, stride, padding, dilation = attrs["kernel"], attrs["stride"], attrs["padding"], self.dilation(attrs)
        if x.ndim != rank + 2:
            raise self.error(f"{name}: expected a batched input of rank {rank + 2} (N, C, *spatial), got shape {x.shape}")
        if not x.dtype.is_floating:
            raise self.dtype_error(f"{name}: expected a floating-point input, got {x.dtype}")
        if not len(stride) == len(padding) == len(dilation) == rank:
            raise self.error(f"{name}: expected {rank} kernel/stride/padding entries, got "
                             f"kernel={kernel} stride={stride} padding={padding}")
        if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
            raise self.error(f"{name}: kernel, stride and dilation must be >= 1, got "
                             f"kernel={kernel} stride={stride} dilation={dilation}")
        for k, p in zip(kernel, padding):
            if not 0 <= p <= k // 2:
                raise self.error(f"{name}: padding must be >= 0 and at most half the kernel size (kernel // 2), "
                                 f"got padding={padding} for kernel={kernel}")
        out_sp = self.out_spatial(attrs, x.shape[2:])
        if any(n < 1 for n in out_sp):
            raise self.error(f"{name}: input spatial size {x.shape[2:]} is too small for kernel {kernel} "
                             f"(stride {stride}, padding {padding}, dilation {dilation}); the output would be {out_sp}")
        return out_sp


def _windows(x: np.ndarray, attrs: dict, out_sp: tuple, dilation: tuple, fill: float) -> np.ndarray:
    """Strided view (N, C, *out, *kernel) over x padded with `fill` (extra high padding for ceil_mode)."""
    kernel, stride, padding = attrs["kernel"], attrs["stride"], attrs["padding"]
    highs = tuple(max(p, (m - 1) * s + d * (k - 1) + 1 - n - p) for n, m, k, s, p, d in
                  zip(x.shape[2:], out_sp, kernel, stride, padding, dilation))
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(zip(padding, highs)), constant_values=fill)
    sp = xp.strides[2:]
    return as_strided(xp, shape=x.shape[:2] + tuple(out_sp) + tuple(kernel),
                      strides=xp.strides[:2] + tuple(t * s for t, s in zip(sp, stride))
                      + tuple(t * d for t, d in zip(sp, dilation)), writeable=False)


def _kernel_axes(rank: int) -> tuple:
    return tuple(range(2 + rank, 2 + 2 * rank))


@register
class MaxPool(PoolBase):
    name = "max_pool"
    attributes = {**PoolBase.attributes, "dilation": IntTuple(min=1)}

    def infer(self, attrs, x):
        return TensorType(x.shape[:2] + self.check(attrs, x), x.dtype)

    def compute(self, attrs, x):
        out_sp = self.out_spatial(attrs, x.shape[2:])
        return _windows(x, attrs, out_sp, self.dilation(attrs), -np.inf).max(axis=_kernel_axes(self.rank(attrs)))

    def grad(self, attrs, inputs, y, g):
        return (emit("max_pool_grad", inputs[0], g, **attrs),)


@register
class MaxPoolGrad(PoolBase):
    """Routes each output gradient as PyTorch does: to the last NaN of its window if it holds one,
    else to its first maximum among the taps inside the input (an all -inf window: its first tap
    inside); a window wholly in the padding passes nothing."""

    name = "max_pool_grad"
    differentiable = False
    attributes = MaxPool.attributes

    def infer(self, attrs, x, gy):
        out_sp = self.check(attrs, x)
        if gy.shape != x.shape[:2] + out_sp:
            raise self.error(f"{self.display(attrs)}: expected an output gradient of shape {x.shape[:2] + out_sp}, got {gy.shape}")
        return x

    def compute(self, attrs, x, gy):
        if x.size == 0 or gy.size == 0:
            return np.zeros_like(x)
        rank, dilation = self.rank(attrs), self.dilation(attrs)
        out_sp = gy.shape[2:]
        tap = np.unravel_index(_winning_taps(x, attrs, out_sp, dilation), attrs["kernel"])   # kernel offset per output
        grid = np.meshgrid(*(np.arange(m) for m in out_sp), indexing="ij")
        coords = [o * s - p + t * d for o, s, p, t, d in zip(grid, attrs["stride"], attrs["padding"], tap, dilation)]
        inside = np.logical_and.reduce([(c >= 0) & (c < n) for c, n in zip(coords, x.shape[2:])])
        position = np.ravel_multi_index([np.clip(c, 0, n - 1) for c, n in zip(coords, x.shape[2:])], x.shape[2:])
        plane = math.prod(x.shape[2:])
        base = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * rank) * plane
        gx = np.bincount((position + base).ravel(), weights=np.where(inside, gy, 0).ravel(), minlength=x.size)
        return gx.astype(x.dtype).reshape(x.shape)


def _winning_taps(x: np.ndarray, attrs: dict, out_sp: tuple, dilation: tuple) -> np.ndarray:
    """The flat kernel offset each window's gradient goes to (see MaxPoolGrad); a tap in the padding
    only for a window with no tap inside the input."""
    flat_shape = x.shape[:2] + tuple(out_sp) + (-1,)
    values = _windows(x, attrs, out_sp, dilation, -np.inf).reshape(flat_shape)
    real = _windows(np.ones(x.shape, bool), attrs, out_sp, dilation, False).reshape(flat_shape)
    nan = np.isnan(values)
    last_nan = values.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    first_max = np.argmax(np.where(nan, -np.inf, values), axis=-1)
    max_is_real = np.take_along_axis(real, first_max[..., None], axis=-1)[..., 0]
    return np.where(nan.any(axis=-1), last_nan, np.where(max_is_real, first_max, np.argmax(real, axis=-1)))


def _avg_divisor(attrs: dict, in_sp: tuple, out_sp: tuple, dtype) -> np.ndarray:
    """Per-output divisor of avg_pool, shaped (*out) for broadcasting."""
    if attrs["divisor_override"] is not None:
        return np.asarray(attrs["divisor_override"], dtype=dtype)
    counts = []
    for n, m, k, s, p in zip(in_sp, out_sp, attrs["kernel"], attrs["stride"], attrs["padding"]):
        start = np.arange(m) * s - p
        if attrs["count_include_pad"]:
            counts.append(np.minimum(start + k, n + p) - start)
        else:
            counts.append(np.minimum(start + k, n) - np.maximum(start, 0))
    divisor = counts[0]
    for c in counts[1:]:
        divisor = np.multiply.outer(divisor, c)
    return divisor.astype(dtype)


class AvgPoolBase(PoolBase):
    attributes = {**PoolBase.attributes, "count_include_pad": Bool(), "divisor_override": Optional(Int(min=1))}

    def check(self, attrs, x):
        out_sp = super().check(attrs, x)
        override = attrs["divisor_override"]
        if override is not None and override <= 0:
            raise self.error(f"{self.display(attrs)}: divisor_override must be positive, got {override}")
        return out_sp


@register
class AvgPool(AvgPoolBase):
    name = "avg_pool"

    def infer(self, attrs, x):
        return TensorType(x.shape[:2] + self.check(attrs, x), x.dtype)

    def compute(self, attrs, x):
        rank = self.rank(attrs)
        out_sp = self.out_spatial(attrs, x.shape[2:])
        total = _windows(x, attrs, out_sp, (1,) * rank, 0.0).sum(axis=_kernel_axes(rank))
        return (total / _avg_divisor(attrs, x.shape[2:], out_sp, x.dtype)).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        return (emit("avg_pool_grad", g, input_shape=tuple(inputs[0].shape), **attrs),)


@register
class AvgPoolGrad(AvgPoolBase):
    """Spreads each output gradient, divided by its divisor, over its window; attribute input_shape."""

    name = "avg_pool_grad"
    differentiable = False
    attributes = {**AvgPoolBase.attributes, "input_shape": IntTuple(min=0, symbolic=True)}

    def infer(self, attrs, gy):
        x = TensorType(attrs["input_shape"], gy.dtype)
        out_sp = self.check(attrs, x)
        if gy.shape != x.shape[:2] + out_sp:
            raise self.error(f"{self.display(attrs)}: expected an output gradient of shape {x.shape[:2] + out_sp}, got {gy.shape}")
        return x

    def compute(self, attrs, gy):
        in_shape = attrs["input_shape"]
        out_sp = gy.shape[2:]
        share = gy / _avg_divisor(attrs, in_shape[2:], out_sp, gy.dtype)
        kernel, stride, padding = attrs["kernel"], attrs["stride"], attrs["padding"]
        full = tuple(max(n + 2 * p, (m - 1) * s + k) for n, m, k, s, p in zip(in_shape[2:], out_sp, kernel, stride, padding))
        buf = np.zeros(in_shape[:2] + full, dtype=gy.dtype)
        for offset in itertools.product(*(range(k) for k in kernel)):
            target = tuple(slice(o, o + (m - 1) * s + 1, s) for o, m, s in zip(offset, out_sp, stride))
            buf[(slice(None), slice(None)) + target] += share
        crop = tuple(slice(p, p + n) for p, n in zip(padding, in_shape[2:]))
        return np.ascontiguousarray(buf[(slice(None), slice(None)) + crop])


def max_pool(x, *, kernel, stride, padding, dilation, ceil_mode):
    return emit("max_pool", x, kernel=tuple(kernel), stride=tuple(stride), padding=tuple(padding),
                dilation=tuple(dilation), ceil_mode=bool(ceil_mode))


def avg_pool(x, *, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return emit("avg_pool", x, kernel=tuple(kernel), stride=tuple(stride), padding=tuple(padding),
                ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad),
                divisor_override=None if divisor_override is None else int(divisor_override))
