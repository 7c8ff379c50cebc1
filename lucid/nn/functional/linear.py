"""Linear layers and flatten."""
from __future__ import annotations

from ...errors import ShapeError
from ...ir import ops
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


def flatten(input, start_dim=1, end_dim=-1):
    return require_tensor(input, "flatten").flatten(start_dim, end_dim)
