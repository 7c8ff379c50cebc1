"""Parameter initialisers; every draw comes from lucid's global generator (lucid.manual_seed)."""
from __future__ import annotations

import math

from ..ir.graph import active_builder
from ..random import generator
from ..tensor import Tensor


def uniform_(tensor: Tensor, low: float, high: float) -> Tensor:
    """Fill `tensor` in place with samples from U(low, high)."""
    tensor.data[...] = generator().uniform(low, high, size=tensor.shape)
    return tensor


def fan_in(weight: Tensor) -> int:
    """Inputs feeding one output: weight.shape[1] * prod(kernel) (PyTorch's convention)."""
    return weight.shape[1] * math.prod(weight.shape[2:]) if weight.ndim > 1 else weight.shape[0]


def default_uniform_(weight: Tensor, bias: Tensor | None) -> None:
    """PyTorch's default for Linear and conv layers: weight and bias uniform in ±1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in(weight)) if fan_in(weight) > 0 else 0.0
    uniform_(weight, -bound, bound)
    if bias is not None:
        uniform_(bias, -bound, bound)


def zeros_(tensor: Tensor) -> Tensor:
    tensor.data[...] = 0
    return tensor


def ones_(tensor: Tensor) -> Tensor:
    tensor.data[...] = 1
    return tensor


def reset_or_defer(module) -> None:
    """Draw a freshly materialised module's initial values now, or, while tracing, leave them to the
    tracer, which draws them for every lazy module in declaration order when the traced call ends."""
    builder = active_builder()
    if builder is None or not builder.defer_initialisation(module):
        module.reset_parameters()
