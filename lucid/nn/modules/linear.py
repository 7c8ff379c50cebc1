"""Linear layers: Linear, LazyLinear, Identity, Flatten."""
from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ...ir import symbolic
from ...ir.types import as_device, as_dtype, float32
from .. import functional as F
from ..init import default_uniform_, reset_or_defer
from ..module import Module
from ..parameter import Parameter
from .conv import _positive_int


class Linear(Module):
    """y = x @ weight.T + bias; weight (out_features, in_features), init uniform in ±1/sqrt(in_features)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        as_device(device, type(self).__name__)
        self.out_features = _positive_int(out_features, "out_features", type(self).__name__)
        self.use_bias = bool(bias)
        self.dtype = as_dtype(dtype) if dtype is not None else float32
        self.in_features = None
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if in_features is not None:
            self._create_parameters(_positive_int(in_features, "in_features", type(self).__name__))

    def _create_parameters(self, in_features: int) -> None:
        self.in_features = in_features
        self.weight = Parameter(np.zeros((self.out_features, in_features)), dtype=self.dtype)
        self.bias = Parameter(np.zeros(self.out_features), dtype=self.dtype) if self.use_bias else None
        reset_or_defer(self)

    def reset_parameters(self) -> None:
        default_uniform_(self.weight, self.bias)

    def forward(self, x):
        F.require_tensor(x, type(self).__name__)
        if x.ndim == 0 or not symbolic.same(x.shape[-1], self.in_features):
            raise ShapeError(f"expected input with last dimension {self.in_features} (in_features), "
                             f"got shape {x.shape}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.use_bias}"


class LazyLinear(Linear):
    """A Linear layer whose in_features is taken from the first input (or a loaded weight)."""

    def __init__(self, out_features, bias=True, device=None, dtype=None):
        super().__init__(None, out_features, bias, device=device, dtype=dtype)

    def forward(self, x):
        if self.in_features is None:
            F.require_tensor(x, type(self).__name__)
            if x.ndim == 0:
                raise ShapeError(f"expected an input of rank >= 1, got shape {x.shape}")
            self._create_parameters(x.shape[-1])
        return super().forward(x)

    def _in_features_from_state(self, prefix: str, state: dict) -> int | None:
        """The input features `state`'s weight implies, if this layer is still lazy and it has one."""
        weight = state.get(prefix + "weight")
        if self.in_features is not None or weight is None:
            return None
        if np.ndim(weight) != 2:
            raise ShapeError(f"{type(self).__name__}.load_state_dict: expected a 2-D weight, got shape {np.shape(weight)}")
        return _positive_int(np.shape(weight)[1], "in_features", type(self).__name__)

    def _shapes_from_state(self, prefix: str, state: dict) -> dict:
        in_features = self._in_features_from_state(prefix, state)
        if in_features is None:
            return {}
        shapes = {prefix + "weight": (self.out_features, in_features)}
        return shapes | ({prefix + "bias": (self.out_features,)} if self.use_bias else {})

    def _materialize_from_state(self, prefix: str, state: dict) -> None:
        in_features = self._in_features_from_state(prefix, state)
        if in_features is not None:
            self._create_parameters(in_features)


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
