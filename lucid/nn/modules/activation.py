"""Activation layers.

The layers take PyTorch's constructor arguments; `inplace=True` is accepted and computes out of place
(the layer returns its result and leaves its input as it was), which is all model code relies on.
"""
from __future__ import annotations

import numpy as np

from ...ir.types import as_device, as_dtype, float32
from .. import functional as F
from ..module import Module
from ..parameter import Parameter


class _Inplace(Module):
    """An activation with PyTorch's `inplace=` flag (recorded for the repr; the result is out of place)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def arguments(self) -> str:
        """The constructor arguments the repr shows before `inplace`."""
        return ""

    def extra_repr(self) -> str:
        return ", ".join(part for part in (self.arguments(), "inplace=True" * self.inplace) if part)


class ReLU(_Inplace):
    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return F.log_softmax(x, self.dim)


class ELU(_Inplace):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__(inplace)
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)

    def arguments(self) -> str:
        return f"alpha={self.alpha}"


class CELU(ELU):
    def forward(self, x):
        return F.celu(x, self.alpha)


class SELU(_Inplace):
    def forward(self, x):
        return F.selu(x)


class SiLU(_Inplace):
    def forward(self, x):
        return F.silu(x)


class Mish(_Inplace):
    def forward(self, x):
        return F.mish(x)


class Hardswish(_Inplace):
    def forward(self, x):
        return F.hardswish(x)


class Hardsigmoid(_Inplace):
    def forward(self, x):
        return F.hardsigmoid(x)


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardtanh(_Inplace):
    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__(inplace)
        if max_val <= min_val:
            raise ValueError(f"Hardtanh: max_val ({max_val}) must be greater than min_val ({min_val})")
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x):
        return F.hardtanh(x, self.min_val, self.max_val)

    def arguments(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(Hardtanh):
    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def arguments(self) -> str:
        return ""


class PReLU(Module):
    """max(0, x) + weight * min(0, x) with a learnable weight: one value, or one per channel (axis 1)."""

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        as_device(device, "PReLU")
        if int(num_parameters) < 1:
            raise ValueError(f"PReLU: num_parameters must be at least 1, got {num_parameters}")
        self.num_parameters, self.init = int(num_parameters), float(init)
        self.weight = Parameter(np.full(self.num_parameters, self.init),
                                dtype=as_dtype(dtype) if dtype is not None else float32)

    def reset_parameters(self) -> None:
        self.weight.data = np.full(self.num_parameters, self.init, dtype=self.weight.dtype.numpy)

    def forward(self, x):
        return F.prelu(x, self.weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"
