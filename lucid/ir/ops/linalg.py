"""Matrix multiplication with broadcast batch dimensions."""
from __future__ import annotations

import numpy as np

from ..types import TensorType, promote
from .elementwise import broadcast_shapes, sum_to_shape
from .registry import OpDef, OpKind, emit, register
from .shape import permute, reshape


@register
class Matmul(OpDef):
    """(..., M, K) @ (..., K, N) -> (..., M, N); both inputs have rank >= 2, batch dims broadcast."""

    name = "matmul"
    kind = OpKind.CONTRACTION

    def flops(self, attrs, input_types, output_type):
        return 2 * output_type.size * input_types[0].shape[-1]

    def infer(self, attrs, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise self.error(f"expected inputs of rank >= 2, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2]:
            raise self.error(f"inner dimensions differ: {a.shape} @ {b.shape} "
                             f"(expected {a.shape[-1]} rows in the second operand, got {b.shape[-2]})")
        self.require_float(a, b)
        batch = broadcast_shapes(self, a.shape[:-2], b.shape[:-2])
        return TensorType(batch + (a.shape[-2], b.shape[-1]), promote(a.dtype, b.dtype))

    def compute(self, attrs, a, b):
        return np.matmul(a, b)

    def grad(self, attrs, inputs, y, g):
        a, b = inputs
        return (sum_to_shape(matmul(g, transpose_last(b)), a.shape),
                sum_to_shape(matmul(transpose_last(a), g), b.shape))


def transpose_last(x):
    """Swap the last two axes."""
    n = len(x.shape)
    return permute(x, tuple(range(n - 2)) + (n - 1, n - 2))


def matmul(a, b):
    """Matrix product with NumPy's rules for 1-D operands (a vector is promoted, then squeezed)."""
    a_vec, b_vec = len(a.shape) == 1, len(b.shape) == 1
    if a_vec:
        a = reshape(a, (1,) + tuple(a.shape))
    if b_vec:
        b = reshape(b, tuple(b.shape) + (1,))
    y = emit("matmul", a, b)
    if a_vec or b_vec:
        shape = tuple(y.shape)
        shape = shape[:-2] + (() if a_vec else shape[-2:-1]) + (() if b_vec else shape[-1:])
        y = reshape(y, shape)
    return y
