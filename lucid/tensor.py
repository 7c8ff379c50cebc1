"""`lucid.Tensor`: an n-dimensional array (NumPy storage) with eager autograd.

Every arithmetic method applies an operator from `lucid.ir.ops`; the tensor kind's `_lucid_apply`
runs the operator's shape rule and NumPy reference kernel and, in grad mode, records a tape node.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import autograd
from .errors import DTypeError, GradientError, ShapeError
from .ir import ops
from .ir.types import DType, TensorType, as_dtype, float32, float64, int64


def _as_array(data, dtype: DType | None, copy: bool = True) -> np.ndarray:
    """A NumPy array for `data` (fresh unless copy=False): a Tensor keeps its dtype; otherwise floating
    data becomes float32 unless float64 is asked for, integers int64."""
    if isinstance(data, Tensor):
        data, dtype = data.data, dtype if dtype is not None else data.dtype
    try:
        array = np.array(data, copy=copy or None)
    except (TypeError, ValueError) as exc:
        raise DTypeError(f"Tensor: cannot make a tensor from {type(data).__name__}: {exc}") from None
    if array.dtype == object:
        raise DTypeError(f"Tensor: expected numbers or a rectangular nested list, got {type(data).__name__} "
                         "holding ragged or non-numeric items")
    if array.dtype.kind == "c":
        raise DTypeError(f"Tensor: complex data is not supported (got {array.dtype})")
    if dtype is not None:
        target = as_dtype(dtype)
    else:
        target = float32 if array.dtype.kind == "f" else as_dtype(array.dtype)
    return array.astype(target.numpy, copy=False)


class Tensor:
    """An n-dimensional array with autograd.

    Tensor(data, requires_grad=False, dtype=None): data is a scalar, nested lists, a NumPy array or a
    Tensor (copied). Floating data becomes float32 unless dtype=lucid.float64; integers become int64.
    """

    _lucid_priority = 0
    __array_priority__ = 1000          # NumPy defers `ndarray + Tensor` to Tensor.__radd__
    __hash__ = object.__hash__         # == is elementwise, so hash by identity

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self._data = _as_array(data, dtype)
        self._node = None
        self._retains_grad = False
        self.grad: Tensor | None = None
        self.requires_grad = requires_grad

    # ------------------------------------------------------------------ construction internals
    @classmethod
    def _wrap(cls, array: np.ndarray, requires_grad: bool = False, node=None) -> "Tensor":
        """Wrap an array of a lucid dtype without copying (internal)."""
        tensor = Tensor.__new__(Tensor)
        tensor._data, tensor._node, tensor._retains_grad, tensor.grad = array, node, False, None
        tensor._requires_grad = requires_grad
        return tensor

    @classmethod
    def _lucid_constant(cls, array: np.ndarray) -> "Tensor":
        return cls._wrap(array)

    @classmethod
    def _lucid_apply(cls, opdef, inputs: tuple, attrs: dict) -> "Tensor":
        out_type = opdef.infer(attrs, *(TensorType(t.shape, t.dtype) for t in inputs))
        with np.errstate(all="ignore"):     # inf/nan results (log(0), 1/0) are values, as in PyTorch
            result = np.asarray(opdef.compute(attrs, *(t._data for t in inputs)))
        if result.shape != out_type.shape:
            raise RuntimeError(f"{opdef.name}: kernel returned shape {result.shape}, shape rule says {out_type.shape}")
        if result.dtype != out_type.dtype.numpy or not result.flags.writeable:
            result = result.astype(out_type.dtype.numpy)
        track = (autograd.is_grad_enabled() and opdef.differentiable and out_type.dtype.is_floating
                 and any(t.requires_grad for t in inputs))
        node = autograd.Node(opdef, attrs, inputs) if track else None
        return cls._wrap(result, track, node)

    # ------------------------------------------------------------------ attributes
    @property
    def data(self) -> np.ndarray:
        """The underlying NumPy array (shared, not copied). Assigning replaces it by the given data
        cast to this tensor's dtype (shared when it already has that dtype)."""
        return self._data

    @data.setter
    def data(self, value) -> None:
        self._data = _as_array(value, self.dtype, copy=False)

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and not self.dtype.is_floating:
            raise DTypeError(f"Tensor: only floating-point tensors can require grad, got dtype {self.dtype}")
        if not value and self._node is not None:
            raise GradientError("Tensor: requires_grad can only be switched off on a leaf tensor; use detach()")
        self._requires_grad = bool(value)

    @property
    def shape(self) -> tuple:
        return tuple(self._data.shape)

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def dtype(self) -> DType:
        return as_dtype(self._data.dtype)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> str | None:
        """Name of the operator that made this tensor, if it is recorded for autograd."""
        return None if self._node is None else self._node.op.name

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self._data.size)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # ------------------------------------------------------------------ conversion
    def numpy(self) -> np.ndarray:
        return self._data

    def item(self):
        if self._data.size != 1:
            raise ShapeError(f"item: expected a tensor with one element, got shape {self.shape}")
        return self._data.reshape(()).item()

    def tolist(self):
        return self._data.tolist()

    def detach(self) -> "Tensor":
        return Tensor._wrap(self._data)

    def to(self, dtype) -> "Tensor":
        return ops.cast(self, dtype) if as_dtype(dtype) != self.dtype else self

    astype = to

    def float(self) -> "Tensor":
        return self.to(float32)

    def double(self) -> "Tensor":
        return self.to(float64)

    def long(self) -> "Tensor":
        return self.to(int64)

    def __array__(self, dtype=None, copy=None):
        return self._data if dtype is None else self._data.astype(dtype)

    def __bool__(self) -> bool:
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __repr__(self) -> str:
        body = np.array2string(self._data, separator=", ", prefix="Tensor(")
        state = "requires_grad=True" if self.requires_grad and self.is_leaf else (
            f"grad_fn=<{self.grad_fn}>" if self._node is not None else "grad=None")
        return f"Tensor({body}, {state})"

    # ------------------------------------------------------------------ autograd
    def backward(self, grad=None) -> None:
        """Accumulate gradients into the leaves' `.grad`; a non-scalar tensor is seeded with ones."""
        autograd.backward(self, grad)

    def retain_grad(self) -> None:
        """Keep `.grad` of this non-leaf tensor after backward."""
        self._retains_grad = True

    def zero_grad(self) -> None:
        self.grad = None

    def requires_grad_(self, mode: bool = True) -> "Tensor":
        self.requires_grad = mode
        return self

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __matmul__(self, other): return ops.matmul(self, _tensor_operand("matmul", other))
    def __rmatmul__(self, other): return ops.matmul(_tensor_operand("matmul", other), self)
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
    def softmax(self, axis=-1): return ops.softmax(self, axis)
    def log_softmax(self, axis=-1): return ops.log_softmax(self, axis)

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

    def __setitem__(self, key, value):
        if self.requires_grad and autograd.is_grad_enabled():
            raise GradientError("Tensor: in-place assignment to a tensor that requires grad; "
                                "wrap it in lucid.no_grad() or assign to .data")
        self._data[key] = value.data if isinstance(value, Tensor) else value

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # ------------------------------------------------------------------ random
    @staticmethod
    def randn(*shape, requires_grad: bool = False, dtype=None) -> "Tensor":
        from .creation import randn

        return randn(*shape, requires_grad=requires_grad, dtype=dtype)


def _tensor_operand(op: str, value):
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (np.ndarray, list, tuple)):
        return Tensor(value)
    raise DTypeError(f"{op}: expected a tensor operand, got {type(value).__name__}")


def _shape_arg(shape: tuple) -> tuple:
    """Accept both f(2, 3) and f((2, 3))."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for n in shape:
        if not isinstance(n, (numbers.Integral,)) or isinstance(n, bool):
            raise DTypeError(f"expected integer sizes, got {shape}")
    return tuple(int(n) for n in shape)


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
