"""Normalisation operators: moments and normalize (group, instance and layer norm: the statistics
in one pass, then the normalise-scale-shift), batch_norm (the affine normalisation step) and
softmax/log_softmax.

`batch_norm` takes its statistics as inputs: in training they are computed from x by `mean`/`var`
operators, so the gradient through the statistics comes from those operators' own rules.
"""
from __future__ import annotations

import numpy as np

from .elementwise import add, broadcast_shapes, exp, mul, neg, pow_scalar, sub, sum_to_shape
from ..types import TensorType
from .reduction import sum_
from .attributes import Int, Real
from .registry import OpDef, OpKind, emit, register
from .shape import reshape, slice_


def _per_channel(v, ndim: int):
    """Reshape a (C,) vector to broadcast along axis 1 of a rank-`ndim` tensor."""
    return reshape(v, (1, -1) + (1,) * (ndim - 2))


@register
class Moments(OpDef):
    """The mean and the biased variance of each row of x along its last axis, stacked:
    x (..., K) -> (2, ...), [0] the means, [1] the variances. Group, instance and layer norm view
    their input so that each normalised group is one row."""

    name = "moments"
    kind = OpKind.REDUCTION

    def infer(self, attrs, x):
        self.require_float(x)
        if x.ndim < 1 or x.shape[-1] == 0:
            raise self.error(f"expected an input of rank >= 1 with a non-empty last axis, got shape {x.shape}")
        return TensorType((2,) + x.shape[:-1], x.dtype)

    def flops(self, attrs, input_types, output_type):
        return 4 * input_types[0].size                  # centre, add, square, add per element

    def compute(self, attrs, x):
        mean = x.mean(axis=-1, dtype=np.float64, keepdims=True)
        var = np.square(x - mean, dtype=np.float64).mean(axis=-1)
        return np.stack([mean[..., 0], var]).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        # mean = sum(x) / K and var = sum((x - mean)^2) / K, so
        # d/dx_i = (x_i - mean) * 2 g_var / K + g_mean / K (the var's dependence on mean sums to 0),
        # a normalize: one loop of the backward, nothing of x's size computed (or saved) by the forward
        x = inputs[0]
        column = lambda v: reshape(v, tuple(x.shape[:-1]) + (1,))
        mean, _ = split_moments(y)
        g_mean, g_var = split_moments(g)
        per_element = 1.0 / x.shape[-1]
        return (normalize(x, column(mean), column(mul(g_var, 2 * per_element)), 1.0,
                          column(mul(g_mean, per_element))),)


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
        common = np.broadcast_shapes(*(tuple(v.shape) for v in inputs[1:]))
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


@register
class BatchNorm(OpDef):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, statistics per channel (axis 1)."""

    name = "batch_norm"
    kind = OpKind.ELEMENTWISE
    attributes = {"eps": Real(min=0)}

    def infer(self, attrs, x, mean, var, weight, bias):
        if x.ndim < 2:
            raise self.error(f"expected an input of rank >= 2 (N, C, ...), got shape {x.shape}")
        self.require_float(x)
        for label, v in (("running_mean", mean), ("running_var", var), ("weight", weight), ("bias", bias)):
            if v.shape != (x.shape[1],):
                raise self.error(f"expected {label} of shape ({x.shape[1]},) for input {x.shape}, got {v.shape}")
        return x

    def compute(self, attrs, x, mean, var, weight, bias):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = (weight / np.sqrt(var + attrs["eps"])).reshape(shape)
        return ((x - mean.reshape(shape)) * scale + bias.reshape(shape)).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x, mean, var, weight, _ = inputs
        ndim = len(x.shape)
        axes = (0,) + tuple(range(2, ndim))
        inv_std = pow_scalar(add(var, attrs["eps"]), -0.5)
        centred = sub(x, _per_channel(mean, ndim))
        g_sum = sum_(g, axes)
        g_centred_sum = sum_(mul(g, centred), axes)
        scale = mul(weight, inv_std)
        gx = mul(g, _per_channel(scale, ndim))
        g_mean = neg(mul(g_sum, scale))
        g_var = mul(mul(g_centred_sum, weight), mul(pow_scalar(inv_std, 3.0), -0.5))
        g_weight = mul(g_centred_sum, inv_std)
        return gx, g_mean, g_var, g_weight, g_sum


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


def moments(x):
    return emit("moments", x)


def split_moments(stats) -> tuple:
    """(mean, var) of a moments result, each of its rows' shape."""
    rest = tuple(stats.shape[1:])
    zeros, stops = (0,) * len(rest), tuple(rest)
    return tuple(reshape(slice_(stats, (k,) + zeros, (k + 1,) + stops), rest) for k in range(2))


def normalize(x, mean, rstd, weight, bias):
    return emit("normalize", x, mean, rstd, weight, bias)


def batch_norm(x, mean, var, weight, bias, eps):
    return emit("batch_norm", x, mean, var, weight, bias, eps=float(eps))


def _axis(x, axis):
    ndim = len(x.shape)
    if ndim == 0 and axis in (0, -1):            # a 0-d tensor has the one axis 0, as in PyTorch
        return 0
    return int(axis) % ndim if ndim and -ndim <= axis < ndim else int(axis)


def softmax(x, axis=-1): return emit("softmax", x, axis=_axis(x, axis))
def log_softmax(x, axis=-1): return emit("log_softmax", x, axis=_axis(x, axis))
