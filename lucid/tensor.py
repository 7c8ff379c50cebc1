"""`lucid.Tensor`: an n-dimensional array (NumPy storage) with eager autograd.

Every arithmetic method applies an operator from `lucid.ir.ops`; the tensor kind's `_lucid_apply`
runs the operator's shape rule and NumPy reference kernel and, in grad mode, records a tape node.

`isinstance(x, lucid.Tensor)` also holds for the graph values traced code receives (model code that
branches on it takes the same branch traced as eager); `is_eager_tensor` is the check for a tensor
that holds data.
"""
from __future__ import annotations


import numpy as np

from . import autograd, random
from .errors import DTypeError, GradientError, ShapeError
from .ir.graph import active_builder
from .ir.methods import TensorMethods, in_place_result
from .ir.types import DType, TensorType, as_dtype, float32


#: The result types of the operator calls eager code has made, by operator, attributes and input
#: shapes and dtypes (`_inferred_type`); emptied when it holds MOST_INFERRED.
_INFERRED: dict = {}
MOST_INFERRED = 4096


def _inferred_type(opdef, attrs: dict, inputs: tuple) -> TensorType:
    """`opdef.infer` at these inputs, kept for the next call of the same signature: a loop calls the
    same operators on the same shapes, and the shape rule with its checks was half of an eager
    operator's time (`x + x` on 1x8x6x6x6 floats, `timeit`: 19-21 us, 9.5 us kept). A call the rule
    refuses raises and keeps nothing; attributes of other kinds than numbers, strings, None and
    tuples or lists of them are never kept."""
    try:
        key = (opdef, tuple((name, _attribute_key(value)) for name, value in attrs.items()),
               tuple((t._data.shape, t._data.dtype) for t in inputs))
    except TypeError:
        key = None
    out_type = _INFERRED.get(key) if key is not None else None
    if out_type is None:
        out_type = opdef.infer(attrs, *(TensorType(t.shape, t.dtype) for t in inputs))
        if key is not None:
            if len(_INFERRED) >= MOST_INFERRED:
                _INFERRED.clear()
            _INFERRED[key] = out_type
    return out_type


def _uniform_gradient(result: np.ndarray) -> bool:
    """Whether a read-only result may stay a view: one value broadcast (every stride zero) made
    while a backward runs, where nothing writes into gradients (see `autograd`)."""
    return not any(result.strides) and autograd.running_backward()


def _attribute_key(value):
    """`value` as a key equal only for values any shape rule treats alike: the type is part of it
    (True is not 1, 1 is not 1.0) and floats are compared by their bits' text (-0.0 is not 0.0)."""
    kind = type(value)
    if kind is float:
        return kind, value.hex()
    if kind in (int, bool, str) or value is None:
        return kind, value
    if kind in (tuple, list):
        return kind, tuple(map(_attribute_key, value))
    raise TypeError(f"not a kept attribute: {kind.__name__}")


def _as_array(data, dtype: DType | None, copy: bool = True) -> np.ndarray:
    """A NumPy array for `data` (fresh unless copy=False): a Tensor keeps its dtype; otherwise floating
    data becomes float32 unless float64 is asked for, integers int64."""
    if is_eager_tensor(data):
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


class _TensorKind(type):
    """The metaclass of `Tensor`: `isinstance(x, Tensor)` holds for every tensor-like value (eager
    tensors and graph values); subclasses such as `nn.Parameter` keep the ordinary check."""

    def __instancecheck__(cls, obj) -> bool:
        if cls is Tensor:
            return isinstance(obj, TensorMethods)
        return super().__instancecheck__(obj)


def is_eager_tensor(obj) -> bool:
    """Whether `obj` is a `Tensor` holding data (not a graph value being traced)."""
    return issubclass(type(obj), Tensor)


class Tensor(TensorMethods, metaclass=_TensorKind):
    """An n-dimensional array with autograd.

    Tensor(data, requires_grad=False, dtype=None): data is a scalar, nested lists, a NumPy array or a
    Tensor (copied). Floating data becomes float32 unless dtype=lucid.float64; integers become int64.
    """

    _lucid_priority = 0
    __array_priority__ = 1000          # NumPy defers `ndarray + Tensor` to Tensor.__radd__
    #: Counts in-place changes; the autograd tape refuses a backward through an operator whose input
    #: changed after the operator read it.
    _version = 0

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
        out_type = _inferred_type(opdef, attrs, inputs)
        with np.errstate(all="ignore"):     # inf/nan results (log(0), 1/0) are values, as in PyTorch
            result = np.asarray(opdef.compute(attrs, *(t._data for t in inputs)))
        if result.shape != out_type.shape:
            raise RuntimeError(f"{opdef.name}: kernel returned shape {result.shape}, shape rule says {out_type.shape}")
        if result.dtype != out_type.dtype.numpy or not (result.flags.writeable or _uniform_gradient(result)):
            # a broadcast view (a zero stride) copies 15x faster in C order than in its own ('K')
            result = result.astype(out_type.dtype.numpy, order="C" if 0 in result.strides else "K")
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
    def dtype(self) -> DType:
        return as_dtype(self._data.dtype)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> str | None:
        """Name of the operator that made this tensor, if it is recorded for autograd."""
        return None if self._node is None else self._node.op.name

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

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self._data, dtype=dtype, copy=True)
        return self._data if dtype is None else self._data.astype(dtype, copy=False)

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
        if not self.requires_grad:
            raise GradientError("backward: the tensor does not require grad and has no gradient history")
        autograd.backward(self, self._gradient_seed(grad))

    def _gradient_seed(self, grad) -> "Tensor":
        """`grad` (a Tensor or array-like; ones by default) as a gradient of this tensor's shape and dtype."""
        if grad is None:
            return Tensor._wrap(np.ones(self.shape, self.dtype.numpy))
        seed = grad if is_eager_tensor(grad) else Tensor(grad, dtype=self.dtype)
        if seed.shape != self.shape:
            raise ShapeError(f"backward: expected a gradient of shape {self.shape}, got {seed.shape}")
        return Tensor._wrap(seed.data.astype(self.dtype.numpy, copy=False))

    def register_post_accumulate_grad_hook(self, hook) -> "autograd.RemovableHandle":
        """Run `hook(self)` after each backward has accumulated into this leaf's `.grad`."""
        return autograd.register_post_accumulate_grad_hook(self, hook)

    def retain_grad(self) -> None:
        """Keep `.grad` of this non-leaf tensor after backward."""
        self._retains_grad = True

    def zero_grad(self) -> None:
        self.grad = None

    def requires_grad_(self, mode: bool = True) -> "Tensor":
        self.requires_grad = mode
        return self

    # ------------------------------------------------------------------ in-place writes
    def __setitem__(self, key, value):
        if self.requires_grad and autograd.is_grad_enabled():
            raise GradientError("Tensor: in-place assignment to a tensor that requires grad; "
                                "wrap it in lucid.no_grad() or assign to .data")
        self._data[key] = value.data if is_eager_tensor(value) else value
        self._version += 1

    def _assign_in_place(self, method: str, compute):
        """PyTorch's in-place semantics: this tensor object takes the result's data and, in grad mode,
        its gradient history (the operator reads a stand-in holding the old ones), so every name
        bound to it sees the change. A leaf that requires grad is refused in grad mode. The data is
        replaced, not written through: views and arrays taken earlier (`reshape`, slices, `numpy()`)
        keep the old values. Inside a trace the tensor keeps its data and the trace reads the result
        wherever it reads this tensor afterwards (a module buffer is updated when the graph runs)."""
        if self.requires_grad and self.is_leaf and autograd.is_grad_enabled():
            raise GradientError(f"{method}: a leaf tensor that requires grad cannot be changed in place in grad "
                                "mode; wrap the change in lucid.no_grad()")
        builder = active_builder()
        if builder is not None:                  # tracing: later reads of this tensor read the result
            builder.assign_in_place(self, in_place_result(method, self, compute(self)))
            return self
        before = Tensor._wrap(self._data, self._requires_grad, self._node)
        result = in_place_result(method, self, compute(before))
        self._data = result._data if result._data.flags.writeable else np.array(result._data)
        if autograd.is_grad_enabled():
            self._node, self._requires_grad = result._node, result._requires_grad
        self._version += 1
        return self

    # ------------------------------------------------------------------ random
    def uniform_(self, a: float = 0.0, b: float = 1.0) -> "Tensor":
        """Fill with samples from U(a, b), drawn from lucid's global generator (see lucid.manual_seed);
        a tensor that requires grad is filled under lucid.no_grad(), as in PyTorch."""
        self[...] = random.generator().uniform(a, b, size=self.shape)
        return self

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> "Tensor":
        """Fill with samples from N(mean, std**2), drawn from lucid's global generator."""
        self[...] = random.generator().normal(mean, std, size=self.shape)
        return self

    @staticmethod
    def randn(*shape, requires_grad: bool = False, dtype=None) -> "Tensor":
        """Standard normal samples from lucid's global generator (see lucid.manual_seed)."""
        data = random.standard_normal(shape, dtype)
        return Tensor(data, requires_grad, data.dtype)
