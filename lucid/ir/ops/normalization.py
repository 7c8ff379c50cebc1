"""Normalisation operators: moments and normalize (batch, group, instance and layer norm: the
statistics in one pass, then the normalise-scale-shift) and softmax/log_softmax.

The gradient through the statistics comes from `moments`' own rule, so a norm needs no rule of its own.
"""
from __future__ import annotations

import math

import numpy as np

from .. import symbolic
from .elementwise import broadcast_shapes, div, exp, mul, neg, sub, sum_to_shape
from ..types import TensorType
from .reduction import normalize_axes, reduced_shape, sum_
from .attributes import Int, IntTuple
from .registry import OpDef, OpKind, emit, register
from .shape import reshape, slice_
from .size import size_value


@register
class Moments(OpDef):
    """The mean and the biased variance of x over `axes`, stacked: (2,) + the kept axes' shape,
    [0] the means, [1] the variances. Group, instance and layer norm reduce the last axis of a view
    of their input whose rows are the normalised groups; batch norm every axis but the channels."""

    name = "moments"
    kind = OpKind.REDUCTION
    attributes = {"axes": IntTuple(min=0, distinct=True)}

    def infer(self, attrs, x):
        self.require_float(x)
        axes = attrs["axes"]
        if not axes or any(a >= x.ndim or x.shape[a] == 0 for a in axes):
            raise self.error(f"expected axes {axes} of the input, each non-empty, got shape {x.shape}")
        return TensorType((2,) + reduced_shape(x.shape, axes, False), x.dtype)

    def flops(self, attrs, input_types, output_type):
        return 4 * input_types[0].size                  # centre, add, square, add per element

    def compute(self, attrs, x):
        axes = attrs["axes"]
        mean = x.mean(axis=axes, dtype=np.float64, keepdims=True)
        var = np.square(x - mean, dtype=np.float64).mean(axis=axes)
        return np.stack([mean.reshape(var.shape), var]).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        # mean = sum(x) / K and var = sum((x - mean)^2) / K, so
        # d/dx_i = (x_i - mean) * 2 g_var / K + g_mean / K (the var's dependence on mean sums to 0),
        # a normalize: one loop of the backward, nothing of x's size computed (or saved) by the forward
        x, axes = inputs[0], attrs["axes"]
        kept = lambda v: reshape(v, reduced_shape(tuple(x.shape), axes, True))
        mean, _ = split_moments(y)
        g_mean, g_var = split_moments(g)
        count = math.prod(x.shape[a] for a in axes)
        if symbolic.is_symbolic(count):          # divided by the count computed per call
            k = size_value(g_mean, count)
            g_var_share, g_mean_share = div(mul(g_var, 2.0), k), div(g_mean, k)
        else:
            per_element = 1.0 / count
            g_var_share, g_mean_share = mul(g_var, 2 * per_element), mul(g_mean, per_element)
        return (normalize(x, kept(mean), kept(g_var_share), 1.0, kept(g_mean_share)),)


@register
class Normalize(OpDef):
    """y = (x - mean) * rstd * weight + bias, the other operands broadcast to x's shape."""

    name = "normalize"
    kind = OpKind.ELEMENTWISE

    def infer(self, attrs, x, mean, rstd, weight, bias):
        self.require_float(x, mean, rstd, weight, bias)
        for label, v in (("mean", mean), ("rstd", rstd), ("weight", weight), ("bias", bias)):
            if broadcast_shapes(self, v.shape, x.shape) != x.shape or v.dtype != x.dtype:
                raise self.error(f"expected {label} of {x.dtype} broadcasting to the input {x.shape}, "
                                 f"got {v.dtype}{list(v.shape)}")
        return x

    def compute(self, attrs, x, mean, rstd, weight, bias):
        return ((x - mean) * rstd * weight + bias).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        # The sums over x's axes are taken once down to the operands' common broadcast shape (for
        # group and instance norm (N, C, 1...): two reductions of full-size values, g and
        # g * (x - mean)); the operands are constant along the summed axes, so they multiply after.
        x, mean, rstd, weight, bias = inputs
        common = broadcast_shapes(self, *(tuple(v.shape) for v in inputs[1:]))
        common = (1,) * (len(x.shape) - len(common)) + tuple(common)
        g_sum = sum_to_shape(g, common)
        # (x - mean) * g as a normalize: one loop of the backward, where sub(x, mean) alone would be
        # computed (and saved, a tensor of x's size) by the forward
        g_centred_sum = sum_to_shape(normalize(x, mean, g, 1.0, 0.0), common)
        gx = mul(mul(g, rstd), weight)
        g_mean = sum_to_shape(neg(mul(mul(g_sum, rstd), weight)), mean.shape)
        g_rstd = sum_to_shape(mul(g_centred_sum, weight), rstd.shape)
        g_weight = sum_to_shape(mul(g_centred_sum, rstd), weight.shape)
        return gx, g_mean, g_rstd, g_weight, sum_to_shape(g_sum, bias.shape)


class SoftmaxBase(OpDef):
    kind = OpKind.REDUCTION
    attributes = {"axis": Int(min=0)}

    def infer(self, attrs, x):
        self.require_float(x)
        if not 0 <= attrs["axis"] < max(x.ndim, 1):
            raise self.error(f"axis {attrs['axis']} out of range for shape {x.shape}")
        return x

    def shifted(self, attrs, x):
        axis = attrs["axis"] if x.ndim else None
        if x.size == 0:
            return x, np.ones_like(x)
        z = x - np.max(x, axis=axis, keepdims=True)
        return z, np.sum(np.exp(z), axis=axis, keepdims=True)


@register
class Softmax(SoftmaxBase):
    name = "softmax"

    def compute(self, attrs, x):
        z, total = self.shifted(attrs, x)
        return (np.exp(z) / total).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        return (mul(y, sub(g, sum_(mul(g, y), attrs["axis"], keepdims=True))),)


@register
class LogSoftmax(SoftmaxBase):
    name = "log_softmax"

    def compute(self, attrs, x):
        z, total = self.shifted(attrs, x)
        return (z - np.log(total)).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        return (sub(g, mul(exp(y), sum_(g, attrs["axis"], keepdims=True))),)


def moments(x, axes=-1):
    return emit("moments", x, axes=normalize_axes("moments", axes, len(x.shape)))


def split_moments(stats) -> tuple:
    """(mean, var) of a moments result, each of its rows' shape."""
    rest = tuple(stats.shape[1:])
    zeros, stops = (0,) * len(rest), tuple(rest)
    return tuple(reshape(slice_(stats, (k,) + zeros, (k + 1,) + stops), rest) for k in range(2))


def normalize(x, mean, rstd, weight, bias):
    return emit("normalize", x, mean, rstd, weight, bias)


def _axis(x, axis):
    ndim = len(x.shape)
    if ndim == 0 and axis in (0, -1):            # a 0-d tensor has the one axis 0, as in PyTorch
        return 0
    return int(axis) % ndim if ndim and -ndim <= axis < ndim else int(axis)


def softmax(x, axis=-1): return emit("softmax", x, axis=_axis(x, axis))
def log_softmax(x, axis=-1): return emit("log_softmax", x, axis=_axis(x, axis))
