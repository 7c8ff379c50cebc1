"""Parameter initialisers under PyTorch's names (``torch.nn.init``).

Each one fills a tensor in place and returns it. Only ``tensor.data`` is written, so no gradient is
recorded (as under ``no_grad``), and the tensor object stays the same (optimisers and compiled
functions holding it see the new values). Every draw comes from lucid's global generator
(``lucid.manual_seed``), in float64, then stored in the tensor's dtype.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.graph import active_builder
from ..random import generator
from ..tensor import Tensor

#: Gains of nonlinearities whose gain takes no parameter (PyTorch's recommended values).
_FIXED_GAINS = {"linear": 1.0, "identity": 1.0, "sigmoid": 1.0, "conv1d": 1.0, "conv2d": 1.0,
                "conv3d": 1.0, "conv_transpose1d": 1.0, "conv_transpose2d": 1.0,
                "conv_transpose3d": 1.0, "tanh": 5.0 / 3, "relu": math.sqrt(2.0), "selu": 3.0 / 4}


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The factor by which to scale a layer's initial weights so a `nonlinearity` after it keeps
    the variance of its input: 1 for linear/conv/sigmoid, 5/3 for tanh, sqrt(2) for relu, 3/4 for
    selu, sqrt(2 / (1 + slope**2)) for leaky_relu (`param` is the slope, 0.01 by default)."""
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity not in _FIXED_GAINS:
        raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; expected one of "
                         f"{sorted(_FIXED_GAINS) + ['leaky_relu']}")
    return _FIXED_GAINS[nonlinearity]


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: shape[1] and shape[0], each times the receptive field
    prod(shape[2:]) for a conv weight."""
    if tensor.ndim < 2:
        raise ValueError(f"nn.init: fans need a tensor of at least 2 dimensions, got shape {tuple(tensor.shape)}")
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def _fan(tensor: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"nn.init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _fill(tensor: Tensor, values) -> Tensor:
    tensor.data[...] = values
    return tensor


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill `tensor` with samples from U(a, b)."""
    return _fill(tensor, generator().uniform(a, b, size=tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill `tensor` with samples from N(mean, std**2)."""
    return _fill(tensor, generator().normal(mean, std, size=tensor.shape))


def constant_(tensor: Tensor, val: float) -> Tensor:
    return _fill(tensor, val)


def zeros_(tensor: Tensor) -> Tensor:
    return _fill(tensor, 0)


def ones_(tensor: Tensor) -> Tensor:
    return _fill(tensor, 1)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot: U(-bound, bound) with bound = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot: N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_std(tensor: Tensor, a: float, mode: str, nonlinearity: str) -> float:
    fan = _fan(tensor, mode)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan > 0 else 0.0


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu") -> Tensor:
    """He: U(-bound, bound) with bound = sqrt(3) * gain / sqrt(fan), fan chosen by `mode`, and
    `a` the negative slope of a leaky_relu `nonlinearity`."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu") -> Tensor:
    """He: N(0, std**2) with std = gain / sqrt(fan), as `kaiming_uniform_`."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0) -> Tensor:
    """Fill `tensor` with N(mean, std**2) conditioned on [a, b] (absolute bounds, as PyTorch).

    Exact rejection sampling: proposals from the normal itself or, when the interval holds little of
    its mass (a tail), uniform on [a, b] accepted with the normal's density; the proposal with the
    higher acceptance rate is used, and rejected entries are drawn again."""
    if not (std > 0 and a < b):
        raise ValueError(f"trunc_normal_: expected std > 0 and a < b, got std={std}, a={a}, b={b}")
    values = np.empty(tensor.shape)
    pending = np.ones(tensor.shape, dtype=bool)
    draw = _truncated_proposal(mean, std, a, b)
    while pending.any():
        values[pending] = draw(int(pending.sum()))
        pending &= np.isnan(values)
    return _fill(tensor, values)


def _truncated_proposal(mean: float, std: float, a: float, b: float):
    """A function n -> n samples, NaN where rejected, of N(mean, std**2) restricted to [a, b]."""
    alpha, beta = (a - mean) / std, (b - mean) / std
    mass = 0.5 * (math.erf(beta / math.sqrt(2)) - math.erf(alpha / math.sqrt(2)))
    nearest = min(max(0.0, alpha), beta)       # the interval's point of highest density
    if math.isfinite(beta - alpha):            # the mean acceptance of a uniform proposal
        grid = np.linspace(alpha, beta, 1025)
        uniform_rate = float(np.mean(np.exp((nearest ** 2 - grid ** 2) / 2)))
    else:
        uniform_rate = 0.0

    def from_normal(n):
        z = generator().standard_normal(n)
        return np.where((z >= alpha) & (z <= beta), mean + std * z, np.nan)

    def from_uniform(n):
        z = generator().uniform(alpha, beta, n)
        keep = generator().random(n) <= np.exp((nearest ** 2 - z ** 2) / 2)
        return np.where(keep, mean + std * z, np.nan)

    return from_uniform if uniform_rate > mass else from_normal


def fan_in(weight: Tensor) -> int:
    """Inputs feeding one output: weight.shape[1] * prod(kernel) (PyTorch's convention)."""
    return weight.shape[1] * math.prod(weight.shape[2:]) if weight.ndim > 1 else weight.shape[0]


def default_uniform_(weight: Tensor, bias: Tensor | None) -> None:
    """PyTorch's default for Linear and conv layers: weight and bias uniform in ±1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in(weight)) if fan_in(weight) > 0 else 0.0
    uniform_(weight, -bound, bound)
    if bias is not None:
        uniform_(bias, -bound, bound)


def reset_or_defer(module) -> None:
    """Draw a freshly materialised module's initial values now, or, while tracing, leave them to the
    tracer, which draws them for every lazy module in declaration order when the traced call ends."""
    builder = active_builder()
    if builder is None or not builder.defer_initialisation(module):
        module.reset_parameters()
