"""Reductions over axes: sum, mean, max, min, argmax."""
from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from .. import symbolic
from ..types import TensorType, bool_, int64
from .elementwise import cast, div, eq, mul, where
from .attributes import Bool, IntTuple
from .registry import OpDef, OpKind, emit, register
from .size import count_operand


def normalize_axes(op_name: str, axes, ndim: int) -> tuple:
    """Axes as a sorted tuple of non-negative ints (None means every axis)."""
    if axes is None or ndim == 0 and axes in (0, -1, (0,), (-1,)):     # a 0-d tensor reduces over nothing
        return tuple(range(ndim))
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ShapeError(f"{op_name}: axis {a} is out of range for a tensor of rank {ndim}")
        out.append(int(a) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ShapeError(f"{op_name}: repeated axis in {tuple(axes)}")
    return tuple(sorted(out))


def reduced_shape(shape: tuple, axes: tuple, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


class Reduce(OpDef):
    """y = reduce(x) over attribute `axes` (tuple of ints), keeping them as size 1 if `keepdims`."""

    kind = OpKind.REDUCTION
    attributes = {"axes": IntTuple(min=0, distinct=True), "keepdims": Bool()}

    def infer(self, attrs, x):
        axes = attrs["axes"]
        if any(not 0 <= a < max(x.ndim, 1) for a in axes):
            raise self.error(f"axes {axes} out of range for a tensor of rank {x.ndim}")
        if self.needs_elements and any(x.shape[a] == 0 for a in axes if a < x.ndim):
            raise self.error(f"cannot reduce an empty axis of a tensor of shape {x.shape}")
        return TensorType(reduced_shape(x.shape, axes, attrs["keepdims"]), self.result_dtype(x))

    needs_elements = False

    def result_dtype(self, x):
        return x.dtype

    def compute(self, attrs, x):
        return np.asarray(self.fn(x, axis=attrs["axes"], keepdims=attrs["keepdims"]))


def _expand_back(g, x_shape, attrs):
    """Broadcast a reduced gradient (or result) back to the input's shape."""
    from .shape import broadcast_to, reshape

    return broadcast_to(reshape(g, reduced_shape(x_shape, attrs["axes"], True)), x_shape)


@register
class Sum(Reduce):
    name = "sum"
    fn = staticmethod(np.sum)

    def result_dtype(self, x):
        return int64 if x.dtype == bool_ else x.dtype     # a sum of booleans counts them

    def grad(self, attrs, inputs, y, g):
        return (_expand_back(g, inputs[0].shape, attrs),)


@register
class Mean(Reduce):
    name = "mean"
    fn = staticmethod(np.mean)
    needs_elements = True

    def infer(self, attrs, x):
        self.require_float(x)
        return super().infer(attrs, x)

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        count = math.prod(x.shape[a] for a in attrs["axes"])
        return (_expand_back(div(g, count_operand(g, count)), x.shape, attrs),)     # divided before broadcast


class Extreme(Reduce):
    """max/min; the gradient is shared evenly between tied extreme elements."""

    needs_elements = True

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        hit = eq(x, _expand_back(y, x.shape, attrs))
        count = sum_(cast(hit, x.dtype), attrs["axes"], keepdims=True)
        share = div(_expand_back(g, x.shape, attrs), count)
        return (where(hit, share, 0.0),)


@register
class Max(Extreme):
    name = "max"
    fn = staticmethod(np.max)


@register
class Min(Extreme):
    name = "min"
    fn = staticmethod(np.min)


@register
class Argmax(Reduce):
    """Index of the first maximum along one axis (`axes` holds exactly one axis); int64 result."""

    name = "argmax"
    differentiable = False
    needs_elements = True

    def infer(self, attrs, x):
        if len(attrs["axes"]) != 1:
            raise self.error(f"expected exactly one axis, got {attrs['axes']}")
        return super().infer(attrs, x)

    def result_dtype(self, x):
        return int64

    def compute(self, attrs, x):
        return np.argmax(x, axis=attrs["axes"][0], keepdims=attrs["keepdims"]).astype(np.int64)


def _reduce(op_name, x, axes, keepdims):
    return emit(op_name, x, axes=normalize_axes(op_name, axes, len(x.shape)), keepdims=bool(keepdims))


def sum_(x, axes=None, keepdims=False): return _reduce("sum", x, axes, keepdims)
def mean(x, axes=None, keepdims=False): return _reduce("mean", x, axes, keepdims)
def max_(x, axes=None, keepdims=False): return _reduce("max", x, axes, keepdims)
def min_(x, axes=None, keepdims=False): return _reduce("min", x, axes, keepdims)


def argmax(x, axis=None, keepdims=False):
    """Index of the maximum along `axis`; with axis=None, of the flattened tensor."""
    if axis is None:
        from .shape import reshape

        return _reduce("argmax", reshape(x, (-1,)), 0, False)
    return _reduce("argmax", x, axis, keepdims)


def var(x, axes=None, keepdims=False, correction=1):
    """Variance with Bessel's `correction` (1: unbiased, 0: biased), composed of other operators."""
    axes = normalize_axes("var", axes, len(x.shape))
    count = math.prod(x.shape[a] for a in axes)
    centred = emit("sub", x, mean(x, axes, keepdims=True))
    # The square as one operator on `centred` (not centred * centred, two reads of it) lets fusion make
    # the centring and squaring one loop.
    squares = emit("pow_scalar", centred, exponent=2.0)
    if symbolic.is_symbolic(count):
        if correction:
            raise ShapeError(f"var: the unbiased variance does not support the symbolic dimension {count} (its "
                             "divisor would be a number the graph does not know); use correction=0")
        return mean(squares, axes, keepdims)
    return div(sum_(squares, axes, keepdims), float(max(count - correction, 0)))
