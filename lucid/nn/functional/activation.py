"""Activations, each one elementwise operator (`inplace=` is accepted and computes out of place)."""
from __future__ import annotations

import math
import warnings

from ...errors import ShapeError
from ...ir import ops
from .arguments import require_tensor



def relu(input, inplace=False): return ops.relu(require_tensor(input, "relu"))


def sigmoid(input): return ops.sigmoid(require_tensor(input, "sigmoid"))


def tanh(input): return ops.tanh(require_tensor(input, "tanh"))


def gelu(input, approximate="none"): return ops.gelu(require_tensor(input, "gelu"), approximate)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return ops.leaky_relu(require_tensor(input, "leaky_relu"), negative_slope)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """softmax along `dim`, of the input cast to `dtype` first if given (PyTorch's arguments)."""
    x, axis = _softmax_arguments(input, dim, dtype, "softmax")
    return ops.softmax(x, axis)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    x, axis = _softmax_arguments(input, dim, dtype, "log_softmax")
    return ops.log_softmax(x, axis)


def _softmax_arguments(input, dim, dtype, owner: str) -> tuple:
    """The input (cast to `dtype`) and the axis; without `dim`, PyTorch's deprecated implicit choice
    (axis 0 for 0-, 1- and 3-D inputs, else 1), with its warning."""
    x = require_tensor(input, owner)
    if dtype is not None:
        x = ops.cast(x, dtype)
    if dim is None:
        warnings.warn(f"{owner}: implicit dimension choice is deprecated; pass dim", UserWarning, stacklevel=3)
        dim = 0 if len(x.shape) in (0, 1, 3) else 1
    return x, dim


# The activations below take PyTorch's `inplace=` and compute out of place: the result is returned and
# the input is left as it was (model code uses the returned value).

#: SELU's constants (Klambauer et al., "Self-Normalizing Neural Networks").
SELU_ALPHA = 1.6732632423543772848170429916717


SELU_SCALE = 1.0507009873554804934193349852946


def elu(input, alpha=1.0, inplace=False): return ops.elu(require_tensor(input, "elu"), alpha)


def selu(input, inplace=False): return ops.elu(require_tensor(input, "selu"), SELU_ALPHA, SELU_SCALE)


def silu(input, inplace=False): return ops.silu(require_tensor(input, "silu"))


def mish(input, inplace=False): return ops.mish(require_tensor(input, "mish"))


def hardsigmoid(input, inplace=False): return ops.hardsigmoid(require_tensor(input, "hardsigmoid"))


def hardswish(input, inplace=False): return ops.hardswish(require_tensor(input, "hardswish"))


def relu6(input, inplace=False): return hardtanh(input, 0.0, 6.0)


def celu(input, alpha=1.0, inplace=False):
    if alpha == 0:
        raise ValueError("celu: alpha must not be 0 (the negative part is alpha * (exp(x / alpha) - 1))")
    return ops.elu(require_tensor(input, "celu"), alpha, 1.0, 1.0 / alpha)


def softplus(input, beta=1.0, threshold=20.0):
    return ops.softplus(require_tensor(input, "softplus"), beta, threshold)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    return ops.hardtanh(require_tensor(input, "hardtanh"), min_val, max_val)


def prelu(input, weight):
    """max(0, x) + weight * min(0, x), weight (1 or C values) along the channel axis 1."""
    x, w = require_tensor(input, "prelu"), require_tensor(weight, "prelu", "weight")
    channels = x.shape[1] if len(x.shape) >= 2 else 1
    count = math.prod(w.shape)
    if count == 1:
        return ops.prelu(x, ops.reshape(w, ()))
    if len(w.shape) == 1 and count == channels:
        return ops.prelu(x, ops.reshape(w, (channels,) + (1,) * (len(x.shape) - 2)))
    raise ShapeError(f"prelu: expected a weight of 1 value or {channels} (the input's channels, axis 1 "
                     f"of shape {tuple(x.shape)}), got shape {tuple(w.shape)}")
