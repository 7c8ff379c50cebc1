"""The function namespace PyTorch code calls: `lucid.sum(x, dim=1)`, `lucid.where(c, x, y)`,
`lucid.cat(...)`, `lucid.max(x, 1)`...

Most are a tensor method called on the first argument (`lucid.exp(x)` is `x.exp()`, with the same
arguments), so they trace, compile and differentiate as the methods do; the others compose the
operator functions of `lucid.ir.ops`. `lucid/__init__.py` imports every public name here.
"""
from __future__ import annotations

import functools

import numpy as np

from .creation import full
from .errors import DTypeError, ShapeError
from .ir import ops
from .ir.methods import TensorMethods, _scaled
from .tensor import Tensor


#: A shape: lucid's shapes are plain tuples, so `lucid.Size([2, 3])`, `x.shape[2:]` and comparisons
#: with tuples (or a `torch.Size`) behave as PyTorch's `torch.Size` does.
Size = tuple


def _tensor_argument(value, function: str):
    if not isinstance(value, TensorMethods):
        raise DTypeError(f"lucid.{function}: expected a tensor as first argument, got {type(value).__name__}")
    return value


def _method_function(name: str):
    """`lucid.<name>(input, ...)`: tensor method `name` of `input`, with the method's arguments."""
    method = getattr(TensorMethods, name)

    @functools.wraps(method)
    def function(input, *args, **kwargs):
        return method(_tensor_argument(input, name), *args, **kwargs)

    function.__module__ = __name__
    function.__qualname__ = name
    return function


# Reductions
sum = _method_function("sum")  # noqa: A001  (PyTorch's names shadow builtins in lucid's namespace)
mean = _method_function("mean")
max = _method_function("max")  # noqa: A001
min = _method_function("min")  # noqa: A001
amax = _method_function("amax")
amin = _method_function("amin")
argmax = _method_function("argmax")
argmin = _method_function("argmin")
var = _method_function("var")
std = _method_function("std")
numel = _method_function("numel")

# Elementwise maps
exp = _method_function("exp")
log = _method_function("log")
sqrt = _method_function("sqrt")
rsqrt = _method_function("rsqrt")
square = _method_function("square")
reciprocal = _method_function("reciprocal")
abs = _method_function("abs")  # noqa: A001
neg = negative = _method_function("neg")
sigmoid = _method_function("sigmoid")
tanh = _method_function("tanh")
relu = _method_function("relu")
softmax = _method_function("softmax")
log_softmax = _method_function("log_softmax")
clamp = clip = _method_function("clamp")
pow = _method_function("pow")  # noqa: A001
isnan = _method_function("isnan")
isinf = _method_function("isinf")
isfinite = _method_function("isfinite")

# Shapes
reshape = _method_function("reshape")
flatten = _method_function("flatten")
permute = _method_function("permute")
transpose = _method_function("transpose")
squeeze = _method_function("squeeze")
unsqueeze = _method_function("unsqueeze")
narrow = _method_function("narrow")
select = _method_function("select")
chunk = _method_function("chunk")
split = _method_function("split")
unbind = _method_function("unbind")
clone = _method_function("clone")


# ----------------------------------------------------------------------------------------------
# Functions whose first argument may be a Python number, or that take several tensors


def add(input, other, *, alpha=1):
    """input + alpha * other (either may be a Python number)."""
    return ops.add(input, _scaled(other, alpha))


def sub(input, other, *, alpha=1):
    """input - alpha * other."""
    return ops.sub(input, _scaled(other, alpha))


def mul(input, other):
    return ops.mul(input, other)


def div(input, other, *, rounding_mode=None):
    if rounding_mode is not None:
        raise DTypeError(f"lucid.div: rounding_mode={rounding_mode!r} is not supported (only true division)")
    return ops.div(input, other)


subtract, multiply, divide, true_divide = sub, mul, div, div


def maximum(input, other):
    """Elementwise maximum; where the two are equal each gets half the gradient (as PyTorch)."""
    return ops.maximum(input, other)


def minimum(input, other):
    return ops.minimum(input, other)


def where(condition, input, other):
    """`condition ? input : other` elementwise, broadcast; input and other may be Python numbers."""
    if not isinstance(condition, TensorMethods):
        raise DTypeError(f"lucid.where: expected a bool tensor as condition, got {type(condition).__name__} "
                         "(the one-argument form's result size depends on the data, which a graph cannot hold)")
    return ops.where(condition, input, other)


def matmul(input, other):
    return input @ other


def cat(tensors, dim: int = 0, *, axis: int | None = None) -> Tensor:
    """Concatenate tensors along `dim` (alias `axis`)."""
    return ops.concat(tensors, axis if axis is not None else dim)


concat = concatenate = cat


def meshgrid(*tensors, indexing: str = "ij") -> tuple:
    """Coordinate grids of 1-D tensors (or one sequence of them): grid k holds tensor k's values along
    axis k and is broadcast along the others; `indexing="xy"` swaps the first two axes, as NumPy's
    default. Composed of reshape and expand, so it traces, compiles and differentiates as they do."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    if not tensors or any(len(t.shape) != 1 for t in tensors):
        raise ShapeError(f"meshgrid: expected 1-D tensors, got shapes {[tuple(t.shape) for t in tensors]}")
    axes = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) > 1:
        axes[0], axes[1] = 1, 0
    shape = [0] * len(tensors)
    for axis, t in zip(axes, tensors):
        shape[axis] = t.shape[0]
    return tuple(t.reshape([-1 if i == axis else 1 for i in range(len(shape))]).expand(*shape)
                 for axis, t in zip(axes, tensors))


def stack(tensors, dim: int = 0, *, axis: int | None = None) -> Tensor:
    """Join tensors of one shape along a new axis `dim` (alias `axis`); composed of unsqueeze and
    concat, so it traces, compiles and differentiates as they do."""
    tensors = list(tensors)
    dim = axis if axis is not None else dim
    if not tensors:
        raise ShapeError("stack: expected a non-empty sequence of tensors")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ShapeError(f"stack: expected tensors of one shape, got shapes {[tuple(t.shape) for t in tensors]}")
    rank = len(tensors[0].shape) + 1
    if not -rank <= dim < rank:
        raise ShapeError(f"stack: dim {dim} is out of range for {rank - 1}-D tensors (expected -{rank} to {rank - 1})")
    return ops.concat([t.unsqueeze(dim) for t in tensors], dim % rank)


def full_like(input, fill_value, *, dtype=None, requires_grad: bool = False, device=None) -> Tensor:
    """A tensor of `input`'s shape filled with `fill_value`, of `input`'s dtype unless `dtype` is given."""
    return full(_tensor_argument(input, "full_like").shape, fill_value, dtype=dtype or input.dtype,
                requires_grad=requires_grad, device=device)


def is_tensor(obj) -> bool:
    """Whether `obj` is a lucid tensor (an eager tensor, or a graph value while tracing)."""
    return isinstance(obj, Tensor)


def isclose(input, other, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False):
    """|input - other| <= atol + rtol * |other| elementwise (infinities equal only to themselves)."""
    within = ops.le(ops.abs_(ops.sub(input, other)), ops.add(ops.mul(ops.abs_(other), rtol), atol))
    close = ops.where(ops.eq(input, other), True, ops.where(ops.lt(ops.abs_(other), np.inf), within, False))
    if equal_nan:
        close = ops.where(ops.ne(input, input), ops.ne(other, other), close)
    return close


def allclose(input, other, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> bool:
    """Whether every element is `isclose` (a Python bool: it needs data, so it does not trace)."""
    return bool(np.all(np.asarray(isclose(input, other, rtol, atol, equal_nan))))


def equal(input, other) -> bool:
    """Whether the two have the same shape and elements (a Python bool; it does not trace)."""
    return tuple(input.shape) == tuple(other.shape) and bool(np.all(np.asarray(ops.eq(input, other))))
