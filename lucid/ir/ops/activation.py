"""Activation operators that are not a plain composition of the elementwise maps.

- `elu(x, alpha, scale, input_scale)`: scale * x for x > 0, else scale * alpha * expm1(x * input_scale).
  ELU, SELU and CELU are this one operator with different constants; expm1 keeps full relative
  accuracy near 0, which exp(x) - 1 would lose.
- `softplus(x, beta, threshold)`: log1p(exp(beta * x)) / beta, or x itself where beta * x > threshold.
- `hardswish(x)`: x * min(max(x + 3, 0), 6) / 6, whose gradient at x = -3 and x = 3 is PyTorch's
  (-0.5 and 1.5: the inner slopes), which composing clamp and mul would not give.

SiLU, Mish, Hardtanh/ReLU6, Hardsigmoid and PReLU are compositions (`lucid.nn.functional`): their
fused chain is one loop and their composed gradients are PyTorch's.
NaN passes through every one of them, as in PyTorch.
"""
from __future__ import annotations

import numpy as np

from .attributes import Real
from .elementwise import Unary, add, clamp, div, exp, gt, le, lt, mul, sigmoid, where
from .registry import emit, register


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
        return (where(gt(x, 0.0), mul(g, attrs["scale"]), mul(g, slope)),)


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
class Hardswish(Unary):
    name = "hardswish"

    def fn(self, attrs, x):
        return (x * np.minimum(np.maximum(x + 3, 0), 6) / 6).astype(x.dtype)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        inner = mul(g, add(div(x, 3.0), 0.5))
        return (where(lt(x, -3.0), 0.0, where(le(x, 3.0), inner, g)),)


def elu(x, alpha=1.0, scale=1.0, input_scale=1.0):
    return emit("elu", x, alpha=float(alpha), scale=float(scale), input_scale=float(input_scale))


def softplus(x, beta=1.0, threshold=20.0):
    return emit("softplus", x, beta=float(beta), threshold=float(threshold))


def hardswish(x): return emit("hardswish", x)
