"""Independent references for the activations of lucid.nn: each written from its textbook definition,
one Python float at a time with the `math` module (float64), sharing nothing with lucid's kernels.

Every function takes an array and returns a float64 array of the same shape; NaN maps to NaN.
`prelu` takes its weight and applies it along axis 1 (or to every element when it holds one value).
"""
from __future__ import annotations

import math

import numpy as np

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _map(scalar_fn):
    """The array function applying `scalar_fn` to every element (NaN in, NaN out)."""
    def apply(x, *args):
        x = np.asarray(x, dtype=np.float64)
        flat = [math.nan if math.isnan(v) else scalar_fn(v, *args) for v in x.ravel().tolist()]
        return np.array(flat, dtype=np.float64).reshape(x.shape)
    return apply


def _logistic(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _log1p_exp(v: float) -> float:
    """log(1 + e^v), exact to float64 rounding for every v."""
    return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))


def _clip(v: float, low: float, high: float) -> float:
    return low if v < low else high if v > high else v


elu = _map(lambda v, alpha=1.0: v if v > 0 else alpha * math.expm1(v))
selu = _map(lambda v: SELU_SCALE * (v if v > 0 else SELU_ALPHA * math.expm1(v)))
celu = _map(lambda v, alpha=1.0: v if v > 0 else alpha * math.expm1(v / alpha))
silu = _map(lambda v: v * _logistic(v))
mish = _map(lambda v: v * math.tanh(_log1p_exp(v)))
softplus = _map(lambda v, beta=1.0, threshold=20.0: v if v * beta > threshold else _log1p_exp(beta * v) / beta)
hardtanh = _map(lambda v, low=-1.0, high=1.0: _clip(v, low, high))
relu6 = _map(lambda v: _clip(v, 0.0, 6.0))
hardsigmoid = _map(lambda v: _clip(v + 3.0, 0.0, 6.0) / 6.0)
hardswish = _map(lambda v: v * _clip(v + 3.0, 0.0, 6.0) / 6.0)


def prelu(x, weight):
    x, weight = np.asarray(x, dtype=np.float64), np.asarray(weight, dtype=np.float64).ravel()
    slope = weight[0] if weight.size == 1 else weight.reshape((-1,) + (1,) * (x.ndim - 2))
    return np.where(np.isnan(x), np.nan, np.where(x > 0, x, slope * x))
