"""The operator methods shared by every tensor-like value kind (eager `lucid.Tensor` and traced
`lucid.ir.Value`): arithmetic, comparisons, reductions, shape changes and basic indexing.

Each method applies an operator function from `lucid.ir.ops`, so the same user code runs eagerly or
records a graph, depending on the kind of value it is given. A subclass provides `shape` and `dtype`.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import DTypeError, ShapeError
from . import ops
from .types import Device, DType, as_device, as_dtype, float32, float64, int64


class TensorMethods:
    """Mixin of operator methods; the subclass defines `shape` (a tuple) and `dtype` (a DType)."""

    __hash__ = object.__hash__         # == is elementwise, so values hash by identity

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    ndimension = dim

    @property
    def device(self) -> Device:
        return Device("cpu")

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def to(self, *args, **kwargs):
        """PyTorch's forms: to(dtype), to(device), to(device, dtype), to(other), to(device=, dtype=).
        The device must be the CPU; the result is this value itself when the dtype is unchanged."""
        dtype = to_arguments("Tensor.to", args, kwargs)
        return self.astype(dtype) if dtype is not None else self

    def astype(self, dtype):
        return ops.cast(self, dtype) if as_dtype(dtype) != self.dtype else self

    def cpu(self):
        return self

    def cuda(self, *args, **kwargs):
        as_device("cuda", "Tensor.cuda")

    def float(self):
        return self.to(float32)

    def double(self):
        return self.to(float64)

    def long(self):
        return self.to(int64)

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __matmul__(self, other): return ops.matmul(self, _operand("matmul", other))
    def __rmatmul__(self, other): return ops.matmul(_operand("matmul", other), self)
    def __neg__(self): return ops.neg(self)
    def __pos__(self): return self
    def __abs__(self): return ops.abs_(self)
    def __eq__(self, other): return ops.eq(self, other)
    def __ne__(self, other): return ops.ne(self, other)
    def __lt__(self, other): return ops.lt(self, other)
    def __le__(self, other): return ops.le(self, other)
    def __gt__(self, other): return ops.gt(self, other)
    def __ge__(self, other): return ops.ge(self, other)

    def __pow__(self, exponent):
        if not isinstance(exponent, numbers.Real):
            raise DTypeError(f"pow: expected a real Python number as exponent, got {type(exponent).__name__}")
        return ops.pow_scalar(self, exponent)

    def __rpow__(self, base):
        if not isinstance(base, numbers.Real) or base <= 0:
            raise DTypeError(f"pow: expected a positive real base for a tensor exponent, got {base!r}")
        return ops.exp(ops.mul(self, float(np.log(base))))

    # ------------------------------------------------------------------ elementwise methods
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def abs(self): return ops.abs_(self)
    def relu(self): return ops.relu(self)
    def sigmoid(self): return ops.sigmoid(self)
    def tanh(self): return ops.tanh(self)
    def clamp(self, min=None, max=None): return ops.clamp(self, min, max)
    def softmax(self, axis=-1, *, dim=None): return ops.softmax(self, _axis_arg(axis, dim))
    def log_softmax(self, axis=-1, *, dim=None): return ops.log_softmax(self, _axis_arg(axis, dim))

    # ------------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.sum_(self, _axis_arg(axis, dim), _keep_arg(keepdims, keepdim))

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.mean(self, _axis_arg(axis, dim), _keep_arg(keepdims, keepdim))

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.max_(self, _axis_arg(axis, dim), _keep_arg(keepdims, keepdim))

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.min_(self, _axis_arg(axis, dim), _keep_arg(keepdims, keepdim))

    def var(self, axis=None, keepdims=False, correction=1):
        return ops.var(self, axis, keepdims, correction)

    def argmax(self, axis=None, keepdims=False):
        return ops.argmax(self, axis, keepdims)

    # ------------------------------------------------------------------ shape
    def reshape(self, *shape):
        return ops.reshape(self, _shape_arg(shape))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        if self.ndim == 0:
            return ops.reshape(self, (1,))
        start, end = start_dim % self.ndim, end_dim % self.ndim
        if start > end:
            raise ShapeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {self.shape}")
        return ops.reshape(self, self.shape[:start] + (-1,) + self.shape[end + 1:])

    def permute(self, *dims):
        dims = _shape_arg(dims)
        if sorted(d % max(self.ndim, 1) for d in dims) != list(range(self.ndim)):
            raise ShapeError(f"permute: expected a permutation of {self.ndim} axes, got {dims}")
        return ops.permute(self, dims)

    def transpose(self, *dims):
        """transpose() reverses the axes; transpose(a, b) swaps axes a and b (PyTorch's form)."""
        if not dims:
            return ops.permute(self, tuple(range(self.ndim))[::-1])
        if len(dims) != 2:
            raise ShapeError(f"transpose: expected no axes or two axes, got {dims}")
        perm = list(range(self.ndim))
        a, b = (d % self.ndim for d in dims)
        perm[a], perm[b] = perm[b], perm[a]
        return ops.permute(self, tuple(perm))

    @property
    def T(self):
        return self.transpose()

    def unsqueeze(self, dim: int):
        dim = dim % (self.ndim + 1)
        return ops.reshape(self, self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim: int | None = None):
        if dim is None:
            return ops.reshape(self, tuple(n for n in self.shape if n != 1))
        dim = dim % max(self.ndim, 1)
        if self.ndim == 0 or self.shape[dim] != 1:
            return self
        return ops.reshape(self, self.shape[:dim] + self.shape[dim + 1:])

    def expand(self, *shape):
        shape = _shape_arg(shape)
        lead = len(shape) - self.ndim
        full = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        return ops.broadcast_to(self, full)

    broadcast_to = expand

    # ------------------------------------------------------------------ indexing
    def __getitem__(self, key):
        starts, stops, steps, shape = _basic_index(self.shape, key)
        sliced = self
        if (tuple(starts), tuple(stops), tuple(steps)) != ((0,) * self.ndim, self.shape, (1,) * self.ndim):
            sliced = ops.slice_(self, starts, stops, steps)
        return ops.reshape(sliced, shape)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def to_arguments(owner: str, args: tuple, kwargs: dict) -> DType | None:
    """The dtype asked for by `.to(...)` arguments (None: keep it), after checking that any device
    given is the CPU. Positional arguments are a device, a dtype, both, or a tensor-like value whose
    dtype is taken; keywords are `device`, `dtype` and `non_blocking` (ignored)."""
    unknown = set(kwargs) - {"device", "dtype", "non_blocking"}
    if unknown or len(args) > 2:
        raise TypeError(f"{owner}: expected (device, dtype), (dtype) or (tensor) and the keywords device=, "
                        f"dtype=, non_blocking=; got {len(args)} positional arguments and {sorted(kwargs)}")
    dtype = kwargs.get("dtype")
    as_device(kwargs.get("device"), owner)
    for arg in args:
        if isinstance(arg, TensorMethods):
            dtype = arg.dtype
        elif _names_a_dtype(arg):
            dtype = arg
        else:
            as_device(arg, owner)
    return None if dtype is None else as_dtype(dtype)


def _names_a_dtype(value) -> bool:
    """A dtype (lucid's, NumPy's, a Python type) or a dtype's name; anything else is read as a device."""
    if isinstance(value, (DType, np.dtype, type)):
        return True
    try:
        return isinstance(value, str) and as_dtype(value) is not None
    except TypeError:
        return False


def _operand(op: str, value):
    """A tensor-like value, or an array for a NumPy array or nested list (emit makes it a constant)."""
    if isinstance(value, TensorMethods):
        return value
    if isinstance(value, (np.ndarray, list, tuple)):
        return np.asarray(value)
    raise DTypeError(f"{op}: expected a tensor operand, got {type(value).__name__}")


def _shape_arg(shape: tuple) -> tuple:
    """Accept both f(2, 3) and f((2, 3))."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for n in shape:
        if not isinstance(n, (numbers.Integral,)) or isinstance(n, bool):
            raise DTypeError(f"expected integer sizes, got {shape}")
    return tuple(int(n) for n in shape)


def _sizes(shape: tuple, fn: str) -> tuple:
    """A new tensor's shape, given as `fn(2, 3)` or `fn((2, 3))`; a negative size is refused naming `fn`."""
    shape = _shape_arg(shape)
    if any(n < 0 for n in shape):
        raise ShapeError(f"{fn}: sizes must be non-negative, got {shape}")
    return shape


def _axis_arg(axis, dim):
    return dim if dim is not None else axis


def _keep_arg(keepdims, keepdim):
    return keepdim if keepdim is not None else keepdims


def _basic_index(shape: tuple, key) -> tuple:
    """Turn a basic index (ints, slices with positive step, None, Ellipsis) into slice bounds and
    the shape of the result."""
    key = key if isinstance(key, tuple) else (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("Tensor index: an index can only have a single ellipsis")
    used = sum(k is not None and k is not Ellipsis for k in key)
    if used > len(shape):
        raise IndexError(f"Tensor index: too many indices ({used}) for a tensor of rank {len(shape)}")
    fill = (slice(None),) * (len(shape) - used)
    at = next((i for i, k in enumerate(key) if k is Ellipsis), len(key))
    key = key[:at] + fill + key[at + 1:]
    starts, stops, steps, out_shape, axis = [], [], [], [], 0
    for k in key:
        if k is None:
            out_shape.append(1)
            continue
        n = shape[axis]
        if isinstance(k, (numbers.Integral,)) and not isinstance(k, (bool, np.bool_)):
            i = int(k) + n if k < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"Tensor index: index {k} is out of bounds for axis {axis} with size {n}")
            starts.append(i), stops.append(i + 1), steps.append(1)
        elif isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 0:
                raise IndexError(f"Tensor index: negative slice steps are not supported, got step {step}")
            stop = max(stop, start)
            starts.append(start), stops.append(stop), steps.append(step)
            out_shape.append(len(range(start, stop, step)))
        else:
            raise TypeError(f"Tensor index: supported indices are ints, slices, None and ..., got {type(k).__name__}")
        axis += 1
    return starts, stops, steps, tuple(out_shape)
