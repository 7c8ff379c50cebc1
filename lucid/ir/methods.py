"""The operator methods shared by every tensor-like value kind (eager `lucid.Tensor` and traced
`lucid.ir.Value`): arithmetic, comparisons, reductions, shape changes, basic indexing and the in-place
forms PyTorch code uses.

Each method applies an operator function from `lucid.ir.ops` (or composes several), so the same user
code runs eagerly or records a graph, depending on the kind of value it is given. A subclass provides
`shape` and `dtype`, and may override `_assign_in_place` (see there).
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from ..errors import DTypeError, ShapeError, TraceError
from . import ops, symbolic
from .types import Device, DType, as_device, as_dtype, bool_, float32, float64, int64


class ValuesIndices(NamedTuple):
    """What `max(dim)` and `min(dim)` return, as PyTorch's `torch.return_types.max`: the extreme values
    along the dim and their int64 indices (unpack it, or read `.values` / `.indices`)."""

    values: object
    indices: object


def _in_place(method: str, spelling: str | None = None):
    """The in-place form of tensor method `method` (`x.add_(y)`, `x += y`): its result assigned by
    `_assign_in_place`, which is returned."""
    name = spelling or f"{method}_"

    def in_place(self, *args, **kwargs):
        return self._assign_in_place(name, lambda x: getattr(x, method)(*args, **kwargs))

    in_place.__name__ = in_place.__qualname__ = f"{method}_"
    in_place.__doc__ = f"`{method}` in place: the tensor takes the result (PyTorch's `{name}`)."
    return in_place


def _category(dtype: DType) -> int:
    """bool < integer < floating: an in-place result may not be of a higher category than its target."""
    return 2 if dtype.is_floating else int(dtype != bool_)


def in_place_result(method: str, target, result):
    """`result` cast to `target`'s dtype, once it is known to have `target`'s shape and a dtype that
    can be cast to it (as PyTorch: float into an integer tensor is refused)."""
    if tuple(result.shape) != tuple(target.shape):
        raise ShapeError(f"{method}: the result has shape {tuple(result.shape)}, but an in-place operation keeps "
                         f"the tensor's shape {tuple(target.shape)}")
    if _category(result.dtype) > _category(target.dtype):
        raise DTypeError(f"{method}: a {result.dtype} result cannot be written into a {target.dtype} tensor in place")
    return result.astype(target.dtype)


def _scaled(other, alpha):
    return other if alpha == 1 else other * alpha


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

    is_cuda = False

    def size(self, dim: int | None = None):
        if dim is None:
            return self.shape
        if not self.shape:
            raise ShapeError(f"size: a 0-d tensor has no dim {dim}")
        return self.shape[self._axis(dim, "size")]

    def numel(self) -> int:
        return math.prod(self.shape)

    nelement = numel

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def _axis(self, dim, method: str, extra: int = 0) -> int:
        """`dim` as an axis in [0, rank + extra) (negative dims count from the end; a 0-d tensor takes
        0 and -1, as in PyTorch); a ShapeError naming `method` when it is out of range."""
        rank = max(self.ndim + extra, 1)
        if not isinstance(dim, numbers.Integral) or isinstance(dim, bool) or not -rank <= dim < rank:
            raise ShapeError(f"{method}: dim {dim!r} is out of range for a tensor of shape {tuple(self.shape)} "
                             f"(expected an int from {-rank} to {rank - 1})")
        return int(dim) % rank

    def to(self, *args, **kwargs):
        """PyTorch's forms: to(dtype), to(device), to(device, dtype), to(other), to(device=, dtype=).
        The device must be the CPU; the result is this value itself when the dtype is unchanged."""
        dtype = to_arguments("Tensor.to", args, kwargs)
        return self.astype(dtype) if dtype is not None else self

    def astype(self, dtype):
        return ops.cast(self, dtype) if as_dtype(dtype) != self.dtype else self

    def type_as(self, other):
        return self.astype(other.dtype)

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

    def bool(self):
        return self.to(bool_)

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

    def add(self, other, *, alpha=1):
        """self + alpha * other."""
        return ops.add(self, _scaled(other, alpha))

    def sub(self, other, *, alpha=1):
        """self - alpha * other."""
        return ops.sub(self, _scaled(other, alpha))

    def mul(self, other): return ops.mul(self, other)

    def div(self, other, *, rounding_mode=None):
        if rounding_mode is not None:
            raise DTypeError(f"div: rounding_mode={rounding_mode!r} is not supported (only true division)")
        return ops.div(self, other)

    subtract, multiply, divide, true_divide = sub, mul, div, div
    pow = __pow__

    def neg(self): return ops.neg(self)

    negative = neg

    def maximum(self, other): return ops.maximum(self, other)
    def minimum(self, other): return ops.minimum(self, other)

    def where(self, condition, other):
        """`condition ? self : other` elementwise (PyTorch's `x.where(condition, y)`)."""
        return ops.where(condition, self, other)

    # ------------------------------------------------------------------ elementwise methods
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def rsqrt(self): return ops.pow_scalar(self, -0.5)
    def square(self): return ops.pow_scalar(self, 2.0)
    def reciprocal(self): return ops.div(1.0, self)
    def abs(self): return ops.abs_(self)
    def relu(self): return ops.relu(self)
    def sigmoid(self): return ops.sigmoid(self)
    def tanh(self): return ops.tanh(self)
    def softmax(self, axis=-1, *, dim=None): return ops.softmax(self, _axis_arg(axis, dim))
    def log_softmax(self, axis=-1, *, dim=None): return ops.log_softmax(self, _axis_arg(axis, dim))

    def clamp(self, min=None, max=None):
        """Bounds are numbers (one operator) or tensors, broadcast (a choice per element: the gradient
        goes to the bound where it is taken, to self elsewhere, ties included, as PyTorch's)."""
        if isinstance(min, TensorMethods) or isinstance(max, TensorMethods):
            low = self if min is None else ops.where(ops.lt(self, min), min, self)
            return low if max is None else ops.where(ops.gt(low, max), max, low)
        return ops.clamp(self, min, max)

    clip = clamp

    def isnan(self): return ops.ne(self, self)
    def isinf(self): return ops.eq(ops.abs_(self), math.inf)
    def isfinite(self): return ops.lt(ops.abs_(self), math.inf)

    # ------------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None, dtype=None):
        x = self if dtype is None else self.astype(dtype)
        return ops.sum_(x, _axis_arg(axis, dim), _keep_arg(keepdims, keepdim))

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None, dtype=None):
        x = self if dtype is None else self.astype(dtype)
        return ops.mean(x, _axis_arg(axis, dim), _keep_arg(keepdims, keepdim))

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """PyTorch's forms: max() is the largest element; max(dim, keepdim=False) the named tuple
        (values, indices) along one dim (the gradient goes to the index, as PyTorch's); max(other)
        the elementwise maximum. NumPy's max(axis=..., keepdims=...) reduces over axes (ties share
        the gradient) and returns the values."""
        return self._extreme("max", dim, keepdim, axis, keepdims)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """The forms of `max`, for the smallest elements."""
        return self._extreme("min", dim, keepdim, axis, keepdims)

    def _extreme(self, kind: str, dim, keepdim, axis, keepdims):
        if isinstance(dim, (TensorMethods, np.ndarray)):
            return (ops.maximum if kind == "max" else ops.minimum)(self, dim)
        if dim is None:
            return (ops.max_ if kind == "max" else ops.min_)(self, axis, bool(_keep_arg(keepdim, keepdims)))
        if isinstance(dim, (tuple, list)):
            raise ShapeError(f"{kind}: dim must be one int, got {dim} (a{kind} reduces over several dims)")
        axis = self._axis(dim, kind)
        indices = (self.argmax if kind == "max" else self.argmin)(axis, keepdim=True)
        positions = np.arange(self.shape[axis] if self.ndim else 1).reshape((-1,) + (1,) * (self.ndim - axis - 1))
        values = ops.sum_(ops.where(ops.eq(indices, positions), self, 0), axis, keepdim)
        return ValuesIndices(values, indices if keepdim else indices.squeeze(axis))

    def amax(self, dim=(), keepdim=False):
        """The largest elements over `dim` (an int, a tuple, or () for all); ties share the gradient."""
        return ops.max_(self, None if dim in ((), []) else dim, keepdim)

    def amin(self, dim=(), keepdim=False):
        return ops.min_(self, None if dim in ((), []) else dim, keepdim)

    def var(self, dim=None, unbiased=True, keepdim=False, *, correction=None, axis=None, keepdims=None):
        """Variance over `dim` (None: all) with Bessel's correction: `correction` if given, else 1 when
        `unbiased` (the default) and 0 when not. `axis=`/`keepdims=` are NumPy's names."""
        if isinstance(dim, bool):            # PyTorch's var(unbiased)
            dim, unbiased = None, dim
        correction = (1 if unbiased else 0) if correction is None else correction
        return ops.var(self, _axis_arg(dim, axis), _keep_arg(keepdim, keepdims), correction)

    def std(self, dim=None, unbiased=True, keepdim=False, *, correction=None, axis=None, keepdims=None):
        """The square root of `var` (same arguments)."""
        return ops.sqrt(self.var(dim, unbiased, keepdim, correction=correction, axis=axis, keepdims=keepdims))

    def argmax(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return ops.argmax(self, _axis_arg(axis, dim), _keep_arg(keepdims, keepdim))

    def argmin(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The index of the first smallest element (the first largest of the negation)."""
        negated = ops.neg(self if self.dtype != bool_ else self.astype(int64))
        return ops.argmax(negated, _axis_arg(axis, dim), _keep_arg(keepdims, keepdim))

    # ------------------------------------------------------------------ shape
    def reshape(self, *shape):
        return ops.reshape(self, _shape_arg(shape))

    view = reshape

    def view_as(self, other):
        return ops.reshape(self, other.shape)

    reshape_as = view_as

    def contiguous(self, memory_format=None):
        """This value itself: lucid's tensors are always contiguous."""
        return self

    def clone(self, memory_format=None):
        """A copy (through the gradient); an in-place change of either leaves the other as it was."""
        return ops.cast(self, self.dtype)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        if self.ndim == 0:
            return ops.reshape(self, (1,))
        start, end = self._axis(start_dim, "flatten"), self._axis(end_dim, "flatten")
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
        a, b = (self._axis(d, "transpose") for d in dims)
        perm[a], perm[b] = perm[b], perm[a]
        return ops.permute(self, tuple(perm))

    @property
    def T(self):
        return self.transpose()

    def unsqueeze(self, dim: int):
        dim = self._axis(dim, "unsqueeze", extra=1)
        return ops.reshape(self, self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        """Drop the size-1 axes among `dim` (an int or a tuple; None: all axes); other axes stay."""
        if self.ndim == 0:
            return self
        dims = range(self.ndim) if dim is None else dim if isinstance(dim, (tuple, list)) else (dim,)
        dropped = {self._axis(d, "squeeze") for d in dims}
        return ops.reshape(self, tuple(n for i, n in enumerate(self.shape) if i not in dropped or n != 1))

    def expand(self, *shape):
        shape = _shape_arg(shape)
        lead = len(shape) - self.ndim
        if lead < 0 or any(symbolic.same(n, -1) for n in shape[:lead]):
            raise ShapeError(f"expand: cannot expand a tensor of shape {self.shape} to {shape}")
        full = tuple(self.shape[i - lead] if symbolic.same(n, -1) else n for i, n in enumerate(shape))
        return ops.broadcast_to(self, full)

    broadcast_to = expand

    def expand_as(self, other):
        return ops.broadcast_to(self, other.shape)

    def repeat(self, *repeats):
        """Tile the tensor `repeats[i]` times along axis i (extra leading repeats add axes), as a
        reshape to interleaved size-1 axes, a broadcast and a reshape."""
        repeats = _sizes(repeats, "repeat")
        if len(repeats) < self.ndim:
            raise ShapeError(f"repeat: expected at least {self.ndim} repeat counts for shape {self.shape}, "
                             f"got {repeats}")
        shape = (1,) * (len(repeats) - self.ndim) + tuple(self.shape)
        spread = ops.reshape(self, tuple(d for n in shape for d in (1, n)))
        tiled = ops.broadcast_to(spread, tuple(d for r, n in zip(repeats, shape) for d in (r, n)))
        return ops.reshape(tiled, tuple(r * n for r, n in zip(repeats, shape)))

    def narrow(self, dim: int, start: int, length: int):
        """Elements start .. start + length - 1 along `dim`."""
        axis = self._axis(dim, "narrow")
        size = self.shape[axis] if self.ndim else 1
        start = start + size if start < 0 else start
        if not (0 <= start and length >= 0 and start + length <= size):
            raise ShapeError(f"narrow: start {start} and length {length} do not fit dim {dim} of size {size}")
        starts = tuple(start if i == axis else 0 for i in range(self.ndim))
        stops = tuple(start + length if i == axis else n for i, n in enumerate(self.shape))
        return ops.slice_(self, starts, stops)

    def select(self, dim: int, index: int):
        """The slice at `index` along `dim`, without that axis."""
        axis = self._axis(dim, "select")
        return self[(slice(None),) * axis + (index,)]

    def split(self, split_size_or_sections, dim: int = 0):
        """Pieces along `dim`: of `split_size` each (the last may be smaller), or of the listed sizes."""
        axis = self._axis(dim, "split")
        size = self.shape[axis]
        if symbolic.is_symbolic(size):
            raise ShapeError(f"split: the pieces of the symbolic dimension {size} (axis {axis}) depend on its size; "
                             "split or chunk a concrete axis")
        if isinstance(split_size_or_sections, numbers.Integral):
            step = int(split_size_or_sections)
            if step <= 0 and size:
                raise ShapeError(f"split: split_size must be positive, got {step}")
            sections = [min(step, size - start) for start in range(0, size, step)] if size else [0]
        else:
            sections = list(_sizes(tuple(split_size_or_sections), "split"))
            if sum(sections) != size:
                raise ShapeError(f"split: sections {sections} do not add up to dim {dim} of size {size}")
        starts = np.cumsum([0] + sections[:-1])
        return tuple(self.narrow(axis, int(start), n) for start, n in zip(starts, sections))

    def chunk(self, chunks: int, dim: int = 0):
        """At most `chunks` pieces along `dim`, each of ceil(size / chunks) elements but the last."""
        if not isinstance(chunks, numbers.Integral) or chunks <= 0:
            raise ShapeError(f"chunk: expected a positive number of chunks, got {chunks!r}")
        size = self.shape[self._axis(dim, "chunk")]
        return self.split(max(-(-size // int(chunks)), 1), dim)

    def unbind(self, dim: int = 0):
        """The slices along `dim`, each without that axis."""
        axis = self._axis(dim, "unbind")
        return tuple(self.select(axis, i) for i in range(self.shape[axis]))

    # ------------------------------------------------------------------ new tensors like this one
    def new_full(self, size, fill_value, *, dtype=None, device=None):
        """A tensor of `size` filled with `fill_value`, of this one's dtype unless `dtype` is given
        (a constant of this value's kind: traced, a constant of the graph)."""
        as_device(device, "new_full")
        dtype = as_dtype(dtype) if dtype is not None else self.dtype
        return type(self)._lucid_constant(np.full(_sizes((size,), "new_full"), fill_value, dtype.numpy))

    def new_zeros(self, *size, dtype=None, device=None):
        return self.new_full(_shape_arg(size), 0, dtype=dtype, device=device)

    def new_ones(self, *size, dtype=None, device=None):
        return self.new_full(_shape_arg(size), 1, dtype=dtype, device=device)

    new_empty = new_zeros

    # ------------------------------------------------------------------ in place
    def _assign_in_place(self, method: str, compute):
        """The value of in-place method `method`: `compute(self)`, checked to keep this value's shape
        and cast to its dtype. Graph values are immutable, so the result is a new value that the
        caller rebinds (`x += y` does; `x.add_(y)` returns it); `lucid.Tensor` overrides this to
        write the result into the tensor itself."""
        return in_place_result(method, self, compute(self))

    __iadd__ = _in_place("add", "+=")
    __isub__ = _in_place("sub", "-=")
    __imul__ = _in_place("mul", "*=")
    __itruediv__ = _in_place("div", "/=")
    __ipow__ = _in_place("pow", "**=")
    add_ = _in_place("add")
    sub_ = _in_place("sub")
    mul_ = _in_place("mul")
    div_ = _in_place("div")
    pow_ = _in_place("pow")
    neg_ = _in_place("neg")
    clamp_ = _in_place("clamp")
    clip_ = _in_place("clip")
    relu_ = _in_place("relu")
    sigmoid_ = _in_place("sigmoid")
    tanh_ = _in_place("tanh")
    exp_ = _in_place("exp")
    log_ = _in_place("log")
    sqrt_ = _in_place("sqrt")
    abs_ = _in_place("abs")

    def fill_(self, value):
        """Every element set to `value` (a number or a 0-d tensor), cast to this tensor's dtype."""
        if isinstance(value, TensorMethods):
            return self._assign_in_place("fill_", lambda x: ops.broadcast_to(ops.cast(value, x.dtype), x.shape))
        return self._assign_in_place("fill_", lambda x: x.new_full(x.shape, value))

    def zero_(self):
        return self.fill_(0)

    def copy_(self, src, non_blocking=False):
        """The elements of `src` (broadcast to this shape, cast to this dtype), copied: the two share
        nothing afterwards."""
        def copied(x):
            source = src if isinstance(src, TensorMethods) else type(x)._lucid_constant(np.asarray(src, x.dtype.numpy))
            return ops.broadcast_to(ops.cast(source, x.dtype), x.shape)

        return self._assign_in_place("copy_", copied)

    # ------------------------------------------------------------------ indexing
    def __getitem__(self, key):
        starts, stops, steps, shape = _basic_index(self.shape, key)
        sliced = self
        if not symbolic.same((*starts, *stops, *steps), (0,) * self.ndim + self.shape + (1,) * self.ndim):
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
        if not (isinstance(n, (numbers.Integral, symbolic.Expr))) or isinstance(n, bool):
            raise DTypeError(f"expected integer sizes, got {shape}")
    return tuple(symbolic.as_size(n) for n in shape)


def _sizes(shape: tuple, fn: str) -> tuple:
    """A new tensor's shape, given as `fn(2, 3)` or `fn((2, 3))`; a negative or symbolic size is refused
    naming `fn`."""
    shape = _shape_arg(shape)
    if symbolic.is_symbolic(shape):
        raise TraceError(f"{fn}: the shape {shape} holds a symbolic size; a tensor made while tracing is data (a "
                         "constant of the graph), which needs concrete sizes")
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
            start, stop, step = symbolic.slice_indices(k, n)
            if step < 0:
                raise IndexError(f"Tensor index: negative slice steps are not supported, got step {step}")
            stop = max(stop, start)
            starts.append(start), stops.append(stop), steps.append(step)
            out_shape.append(symbolic.ceil_div(stop - start, step))
        else:
            raise TypeError(f"Tensor index: supported indices are ints, slices, None and ..., got {type(k).__name__}")
        axis += 1
    return starts, stops, steps, tuple(out_shape)
