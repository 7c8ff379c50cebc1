"""Functions that create tensors: tensor, zeros, ones, full, arange, *_like, randn, rand, rand_like, randn_like.

Each takes PyTorch's `device=` keyword: None or the CPU (anything else is a DeviceError).
`rand_like`, `randn_like` (and dropout's masks, through `random_tensor`) apply the `random` operator, so
they also work on graph values while tracing (see `lucid/random.py`)."""
from __future__ import annotations

import numbers

import numpy as np

from . import random
from .errors import DTypeError, ShapeError
from .ir import ops
from .ir.graph import active_builder
from .ir.methods import _sizes
from .ir.types import as_device, as_dtype, float32, int64
from .tensor import Tensor


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    as_device(device, "tensor")
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """`data` itself when it is a Tensor of `dtype` (or `dtype` is None), so an in-place change
    (`nn.init.constant_(lucid.as_tensor(m.weight), 1)`) reaches the original; otherwise a new tensor."""
    as_device(device, "as_tensor")
    if isinstance(data, Tensor) and (dtype is None or as_dtype(dtype) == data.dtype):
        return data
    return Tensor(data.numpy() if isinstance(data, Tensor) else data, dtype=dtype)


def linspace(start, end, steps: int, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    """`steps` evenly spaced values from `start` to `end`, both included (float32 unless `dtype`)."""
    as_device(device, "linspace")
    dtype = as_dtype(dtype or float32)
    return Tensor(np.linspace(start, end, steps, dtype=np.float64).astype(dtype.numpy), requires_grad, dtype)


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
    data = random.uniform(shape, dtype)
    return Tensor(data, requires_grad, data.dtype)


def rand_like(input, dtype=None, requires_grad: bool = False, device=None):
    """Uniform samples in [0, 1) of input's shape (and dtype, unless given), from the random operator."""
    as_device(device, "rand_like")
    return _requiring_grad(random_tensor(input.shape, dtype or input.dtype, "uniform", "rand_like"), requires_grad)


def randn_like(input, dtype=None, requires_grad: bool = False, device=None):
    """Standard normal samples of input's shape (and dtype, unless given), from the random operator."""
    as_device(device, "randn_like")
    return _requiring_grad(random_tensor(input.shape, dtype or input.dtype, "normal", "randn_like"), requires_grad)


def random_tensor(shape: tuple, dtype, distribution: str, owner: str):
    """One draw of the `random` operator: an eager tensor from lucid's generator state (advanced by one
    draw), or, while tracing, a node reading the graph's generator parameter."""
    dtype = as_dtype(dtype)
    if not dtype.is_floating:
        raise DTypeError(f"{owner}: expected a floating dtype, got {dtype}")
    builder = active_builder()
    if builder is None:
        generator, draw = Tensor(random.next_draw(), dtype=int64), 0
    else:
        generator, draw = builder.random_draw(random.state())
    return ops.random_values(generator, shape, dtype, distribution, draw)


def _requiring_grad(x, requires_grad: bool):
    if requires_grad:
        x.requires_grad_(True)
    return x
