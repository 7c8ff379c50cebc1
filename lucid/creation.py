"""Functions that create tensors: tensor, zeros, ones, full, arange, *_like, randn, rand."""
from __future__ import annotations

import numbers

import numpy as np

from .errors import DTypeError, ShapeError
from .ir.types import as_dtype, float32, int64
from .random import generator
from .ir.methods import _shape_arg
from .tensor import Tensor


def _size(shape: tuple, fn: str) -> tuple:
    shape = _shape_arg(shape)
    if any(n < 0 for n in shape):
        raise ShapeError(f"{fn}: sizes must be non-negative, got {shape}")
    return shape


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def full(shape, fill_value, dtype=None, requires_grad: bool = False) -> Tensor:
    if dtype is None:
        dtype = float32 if isinstance(fill_value, float) else as_dtype(np.asarray(fill_value).dtype)
    return Tensor(np.full(_size((shape,), "full"), fill_value, as_dtype(dtype).numpy), requires_grad, dtype)


def zeros(*shape, dtype=float32, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(_size(shape, "zeros"), as_dtype(dtype).numpy), requires_grad, dtype)


def ones(*shape, dtype=float32, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(_size(shape, "ones"), as_dtype(dtype).numpy), requires_grad, dtype)


def zeros_like(t: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    return zeros(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    return ones(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, requires_grad: bool = False) -> Tensor:
    """Values start, start+step, ... below stop (arange(n) counts 0..n-1); int64 for integer arguments."""
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ShapeError("arange: step must be non-zero")
    if dtype is None:
        integral = all(isinstance(v, numbers.Integral) for v in (start, stop, step))
        dtype = int64 if integral else float32
    return Tensor(np.arange(start, stop, step), requires_grad, dtype)


def _random(shape: tuple, fn: str, dtype, draw) -> np.ndarray:
    dtype = as_dtype(dtype or float32)
    if not dtype.is_floating:
        raise DTypeError(f"{fn}: expected a floating dtype, got {dtype}")
    return draw(_size(shape, fn), dtype.numpy)


def randn(*shape, dtype=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from lucid's global generator (see lucid.manual_seed)."""
    data = _random(shape, "randn", dtype, lambda s, d: generator().standard_normal(s, dtype=d))
    return Tensor(data, requires_grad, data.dtype)


def rand(*shape, dtype=None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1) from lucid's global generator."""
    data = _random(shape, "rand", dtype, lambda s, d: generator().random(s, dtype=d))
    return Tensor(data, requires_grad, data.dtype)
