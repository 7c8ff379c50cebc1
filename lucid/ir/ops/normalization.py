"""Normalisation operators: batch_norm (the affine normalisation step) and softmax/log_softmax.

`batch_norm` takes its statistics as inputs: in training they are computed from x by `mean`/`var`
operators, so the gradient through the statistics comes from those operators' own rules.
"""
from __future__ import annotations

import numpy as np

from .elementwise import add, exp, mul, neg, pow_scalar, sub
from .reduction import sum_
from .attributes import Int, Real
from .registry import OpDef, OpKind, emit, register
from .shape import reshape


def _per_channel(v, ndim: int):
    """Reshape a (C,) vector to broadcast along axis 1 of a rank-`ndim` tensor."""
    return reshape(v, (1, -1) + (1,) * (ndim - 2))


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


def batch_norm(x, mean, var, weight, bias, eps):
    return emit("batch_norm", x, mean, var, weight, bias, eps=float(eps))


def _axis(x, axis):
    ndim = len(x.shape)
    if ndim == 0 and axis in (0, -1):            # a 0-d tensor has the one axis 0, as in PyTorch
        return 0
    return int(axis) % ndim if ndim and -ndim <= axis < ndim else int(axis)


def softmax(x, axis=-1): return emit("softmax", x, axis=_axis(x, axis))
def log_softmax(x, axis=-1): return emit("log_softmax", x, axis=_axis(x, axis))
