"""Functions that create tensors: tensor, zeros, ones, full, arange, *_like, randn, rand.

Each takes PyTorch's `device=` keyword: None or the CPU (anything else is a DeviceError)."""
from __future__ import annotations

import numbers

import numpy as np

from .errors import ShapeError
from .ir.methods import _sizes
from .ir.types import as_device, as_dtype, float32, int64
from .random import uniform
from .tensor import Tensor


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    as_device(device, "tensor")
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def full(shape, fill_value, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    as_device(device, "full")
    if dtype is None:
        dtype = float32 if isinstance(fill_value, float) else as_dtype(np.asarray(fill_value).dtype)
    return Tensor(np.full(_sizes((shape,), "full"), fill_value, as_dtype(dtype).numpy), requires_grad, dtype)


def zeros(*shape, dtype=float32, requires_grad: bool = False, device=None) -> Tensor:
    as_device(device, "zeros")
    return Tensor(np.zeros(_sizes(shape, "zeros"), as_dtype(dtype).numpy), requires_grad, dtype)


def ones(*shape, dtype=float32, requires_grad: bool = False, device=None) -> Tensor:
    as_device(device, "ones")
    return Tensor(np.ones(_sizes(shape, "ones"), as_dtype(dtype).numpy), requires_grad, dtype)


def zeros_like(t: Tensor, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    return zeros(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, device=device)


def ones_like(t: Tensor, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    return ones(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, device=device)


def arange(start, stop=None, step=1, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    """Values start, start+step, ... below stop (arange(n) counts 0..n-1); int64 for integer arguments."""
    as_device(device, "arange")
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ShapeError("arange: step must be non-zero")
    if dtype is None:
        integral = all(isinstance(v, numbers.Integral) for v in (start, stop, step))
        dtype = int64 if integral else float32
    return Tensor(np.arange(start, stop, step), requires_grad, dtype)


def randn(*shape, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    """Standard normal samples from lucid's global generator (see lucid.manual_seed)."""
    as_device(device, "randn")
    return Tensor.randn(*shape, dtype=dtype, requires_grad=requires_grad)


def rand(*shape, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    """Uniform samples in [0, 1) from lucid's global generator."""
    as_device(device, "rand")
    data = uniform(shape, dtype)
    return Tensor(data, requires_grad, data.dtype)
