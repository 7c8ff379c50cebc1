"""Linear layers, dropout and flatten."""
from __future__ import annotations

from ...errors import ShapeError, TraceError
from ...ir import ops
from ...ir.graph import active_builder
from ...random import generator
from ...tensor import Tensor
from .arguments import require_tensor



def linear(input, weight, bias=None):
    """y = input @ weight.T + bias, weight (out_features, in_features)."""
    input, weight = require_tensor(input, "linear"), require_tensor(weight, "linear", "weight")
    if weight.ndim != 2:
        raise ShapeError(f"linear: expected a weight of shape (out_features, in_features), got {weight.shape}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ShapeError(f"linear: expected input with last dimension {weight.shape[1]} (in_features), "
                         f"got shape {input.shape}")
    y = ops.matmul(input, ops.transpose_last(weight))
    return y if bias is None else ops.add(y, bias)


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity when not training)."""
    x = require_tensor(input, "dropout")
    if not 0.0 <= p <= 1.0:
        raise ShapeError(f"dropout: probability p must lie in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return ops.mul(x, 0.0)
    if active_builder() is not None:
        raise TraceError(f"dropout: random masks cannot be traced yet (dropout with p={p} in training mode); "
                         "trace the model in eval mode")
    keep = generator().random(x.shape) >= p
    return ops.mul(x, Tensor(keep / (1.0 - p), dtype=x.dtype))


def flatten(input, start_dim=1, end_dim=-1):
    return require_tensor(input, "flatten").flatten(start_dim, end_dim)
