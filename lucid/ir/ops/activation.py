"""Activation operators: each one elementwise operator, so that it reads its input once.

Fusion joins an elementwise node to a chain only through a value with one reader, so an activation
composed of several operators reading x (x * sigmoid(x)) would not fuse into a convolution's epilogue;
as one operator it does. Formulas and gradients follow PyTorch's, including at the kinks (the side
PyTorch's rule takes) and at NaN (NaN passes through the forward; a NaN input's gradient is what
PyTorch's scalar rule gives it).

- `elu(x, alpha, scale, input_scale)`: scale * x for x > 0, else scale * alpha * expm1(x * input_scale).
  ELU, SELU and CELU are this one operator with different constants; expm1 keeps full relative
  accuracy near 0, which exp(x) - 1 would lose.
- `softplus(x, beta, threshold)`: log1p(exp(beta * x)) / beta, or x itself where beta * x > threshold.
- `silu(x)`: x / (1 + exp(-x)); `mish(x)`: x * tanh(log1p(exp(x))).
- `hardtanh(x, min_val, max_val)`: x clipped to [min_val, max_val] (ReLU6 is hardtanh(x, 0, 6)); the
  gradient is 0 at the bounds.
- `hardsigmoid(x)`: min(max(x + 3, 0), 6) / 6; `hardswish(x)`: x * min(max(x + 3, 0), 6) / 6.
- `prelu(x, weight)`: x where x > 0, else weight * x, the weight broadcast against x (the functional
  form reshapes it along the channel axis); its gradient sums over the broadcast axes.
"""
from __future__ import annotations

import numpy as np

from .attributes import Real
from .elementwise import (Binary, Unary, add, clamp, div, exp, gt, le, lt, mul, sigmoid, sub, tanh, where)
from .registry import emit, register


def clip(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """min(max(x, low), high), NaN passing through."""
    return np.minimum(np.maximum(x, low), high)


@register
class Elu(Unary):
    name = "elu"
    attributes = {"alpha": Real(), "scale": Real(), "input_scale": Real()}

    def fn(self, attrs, x):
        with np.errstate(over="ignore", invalid="ignore"):
            negative = np.expm1(x * attrs["input_scale"]) * (attrs["alpha"] * attrs["scale"])
        return np.where(x > 0, x * attrs["scale"], negative).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x, k = inputs[0], attrs["input_scale"]
        # exp sees min(x, 0) only: the branch `where` leaves out stays finite.
        slope = mul(exp(mul(clamp(x, max=0.0), k)), attrs["alpha"] * attrs["scale"] * k)
        return (where(le(x, 0.0), mul(g, slope), mul(g, attrs["scale"])),)


@register
class Softplus(Unary):
    name = "softplus"
    attributes = {"beta": Real(), "threshold": Real()}

    def fn(self, attrs, x):
        scaled = x * attrs["beta"]
        with np.errstate(over="ignore"):
            smooth = np.log1p(np.exp(scaled)) / attrs["beta"]
        return np.where(scaled > attrs["threshold"], x, smooth).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        scaled = mul(inputs[0], attrs["beta"])
        return (where(gt(scaled, attrs["threshold"]), g, mul(g, sigmoid(scaled))),)


@register
class Silu(Unary):
    name = "silu"

    def fn(self, attrs, x):
        with np.errstate(over="ignore"):
            return (x / (1 + np.exp(-x))).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        s = sigmoid(x)
        return (mul(mul(g, s), add(mul(x, sub(1.0, s)), 1.0)),)


@register
class Mish(Unary):
    name = "mish"

    def fn(self, attrs, x):
        with np.errstate(over="ignore"):
            return (x * np.tanh(np.log1p(np.exp(x)))).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        t = tanh(softplus(x))
        return (mul(g, add(t, mul(mul(x, sigmoid(x)), sub(1.0, mul(t, t))))),)


@register
class Hardtanh(Unary):
    name = "hardtanh"
    attributes = {"min_val": Real(), "max_val": Real()}

    def infer(self, attrs, x):
        if attrs["max_val"] < attrs["min_val"]:
            raise self.error(f"max_val ({attrs['max_val']}) must not be less than min_val ({attrs['min_val']})")
        return super().infer(attrs, x)

    def fn(self, attrs, x):
        return clip(x, attrs["min_val"], attrs["max_val"]).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        return (where(le(x, attrs["min_val"]), 0.0, where(lt(x, attrs["max_val"]), g, 0.0)),)


@register
class Hardsigmoid(Unary):
    name = "hardsigmoid"

    def fn(self, attrs, x):
        return (clip(x + 3, 0, 6) / 6).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        return (where(gt(x, -3.0), where(lt(x, 3.0), div(g, 6.0), 0.0), 0.0),)


@register
class Hardswish(Unary):
    name = "hardswish"

    def fn(self, attrs, x):
        return (x * clip(x + 3, 0, 6) / 6).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        inner = mul(g, add(div(x, 3.0), 0.5))
        return (where(le(x, -3.0), 0.0, where(lt(x, 3.0), inner, g)),)


@register
class Prelu(Binary):
    name = "prelu"

    def infer(self, attrs, x, weight):
        self.require_float(x, weight)
        return super().infer(attrs, x, weight)

    def fn(self, x, weight):
        return np.where(x > 0, x, weight * x)

    def local_grads(self, x, weight, y, g):
        positive = gt(x, 0.0)
        # where, not a product with a mask: an infinite x on the positive side adds nothing to the weight's
        return where(positive, g, mul(g, weight)), where(positive, 0.0, mul(g, x))


def elu(x, alpha=1.0, scale=1.0, input_scale=1.0):
    return emit("elu", x, alpha=float(alpha), scale=float(scale), input_scale=float(input_scale))


def softplus(x, beta=1.0, threshold=20.0):
    return emit("softplus", x, beta=float(beta), threshold=float(threshold))


def hardtanh(x, min_val=-1.0, max_val=1.0):
    return emit("hardtanh", x, min_val=float(min_val), max_val=float(max_val))


def silu(x): return emit("silu", x)
def mish(x): return emit("mish", x)
def hardsigmoid(x): return emit("hardsigmoid", x)
def hardswish(x): return emit("hardswish", x)
def prelu(x, weight): return emit("prelu", x, weight)
