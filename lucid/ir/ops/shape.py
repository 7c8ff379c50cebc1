"""Operators that move data without arithmetic: reshape, permute, broadcast, pad, slice, concat,
one_hot."""
from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from .. import symbolic
from ..types import TensorType, float32, int64, promote
from .elementwise import sum_to_shape
from .attributes import Int, IntTuple, Real
from .registry import OpDef, OpKind, emit, register


@register
class Reshape(OpDef):
    name = "reshape"
    kind = OpKind.LAYOUT
    aliases_input = True
    attributes = {"shape": IntTuple(min=0, symbolic=True)}

    def infer(self, attrs, x):
        shape = attrs["shape"]
        if any(n < 0 for n in shape) or math.prod(shape) != x.size:
            raise self.error(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) to {shape}")
        return TensorType(shape, x.dtype)

    def compute(self, attrs, x):
        return x.reshape(attrs["shape"])

    def grad(self, attrs, inputs, y, g):
        return (reshape(g, inputs[0].shape),)


@register
class Permute(OpDef):
    name = "permute"
    kind = OpKind.LAYOUT
    attributes = {"perm": IntTuple(min=0, distinct=True)}

    def infer(self, attrs, x):
        perm = attrs["perm"]
        if sorted(perm) != list(range(x.ndim)):
            raise self.error(f"expected a permutation of {list(range(x.ndim))} for shape {x.shape}, got {perm}")
        return TensorType(tuple(x.shape[p] for p in perm), x.dtype)

    def compute(self, attrs, x):
        return np.transpose(x, attrs["perm"])

    def grad(self, attrs, inputs, y, g):
        return (permute(g, tuple(int(i) for i in np.argsort(attrs["perm"]))),)


@register
class BroadcastTo(OpDef):
    name = "broadcast_to"
    kind = OpKind.LAYOUT
    attributes = {"shape": IntTuple(min=0, symbolic=True)}

    def infer(self, attrs, x):
        shape = attrs["shape"]
        lead = len(shape) - x.ndim
        if lead < 0 or not all(symbolic.same(n, 1) or symbolic.same(n, shape[lead + i]) for i, n in enumerate(x.shape)):
            raise self.error(f"cannot broadcast shape {x.shape} to {shape}")
        return TensorType(shape, x.dtype)

    def compute(self, attrs, x):
        return np.broadcast_to(x, attrs["shape"])

    def grad(self, attrs, inputs, y, g):
        return (sum_to_shape(g, inputs[0].shape),)


@register
class Pad(OpDef):
    """Constant padding: per axis `lo` before, `hi` after and `interior` between elements (all >= 0)."""

    name = "pad"
    kind = OpKind.LAYOUT
    attributes = {"lo": IntTuple(min=0, symbolic=True), "hi": IntTuple(min=0, symbolic=True),
                  "interior": IntTuple(min=0), "value": Real()}

    def infer(self, attrs, x):
        lo, hi, interior = attrs["lo"], attrs["hi"], attrs["interior"]
        if not len(lo) == len(hi) == len(interior) == x.ndim:
            raise self.error(f"expected {x.ndim} padding entries per side for shape {x.shape}, got lo={lo} hi={hi}")
        if any(p < 0 for p in lo + hi + interior):
            raise self.error(f"padding must be non-negative, got lo={lo} hi={hi} interior={interior}")
        shape = tuple(a + b + n + max(n - 1, 0) * i for n, a, b, i in zip(x.shape, lo, hi, interior))
        return TensorType(shape, x.dtype)

    def compute(self, attrs, x):
        out_type = self.infer(attrs, TensorType(x.shape, x.dtype))
        y = np.full(out_type.shape, attrs["value"], dtype=x.dtype)
        y[tuple(map(_strided_span, attrs["lo"], x.shape, attrs["interior"]))] = x
        return y

    def grad(self, attrs, inputs, y, g):
        spans = tuple(map(_strided_span, attrs["lo"], inputs[0].shape, attrs["interior"]))
        return (emit("slice", g, starts=tuple(s.start for s in spans), stops=tuple(s.stop for s in spans),
                     steps=tuple(s.step for s in spans)),)


def _strided_span(start: int, count: int, gap: int) -> slice:
    """The positions of `count` elements placed from `start` with `gap` elements between them."""
    return slice(start, start + (count - 1) * (gap + 1) + 1 if count else start, gap + 1)


@register
class Slice(OpDef):
    """Per axis, elements start, start+step, ... below stop (0 <= start <= stop <= size, step >= 1)."""

    name = "slice"
    kind = OpKind.LAYOUT
    attributes = {"starts": IntTuple(min=0, symbolic=True), "stops": IntTuple(min=0, symbolic=True),
                  "steps": IntTuple(min=1)}

    def infer(self, attrs, x):
        starts, stops, steps = attrs["starts"], attrs["stops"], attrs["steps"]
        if not len(starts) == len(stops) == len(steps) == x.ndim:
            raise self.error(f"expected {x.ndim} entries for shape {x.shape}, got starts={starts} stops={stops}")
        for n, a, b, s in zip(x.shape, starts, stops, steps):
            if not (0 <= a <= b <= n and s >= 1):
                raise self.error(f"bad bounds start={a} stop={b} step={s} for an axis of size {n}")
        return TensorType(tuple(symbolic.ceil_div(b - a, s) for a, b, s in zip(starts, stops, steps)), x.dtype)

    def compute(self, attrs, x):
        return x[tuple(slice(a, b, s) for a, b, s in zip(attrs["starts"], attrs["stops"], attrs["steps"]))]

    def grad(self, attrs, inputs, y, g):
        x = inputs[0]
        lo = attrs["starts"]
        interior = tuple(s - 1 for s in attrs["steps"])
        hi = tuple(n - a - (m - 1) * s - 1 if m else n - a
                   for n, a, s, m in zip(x.shape, lo, attrs["steps"], y.shape))
        return (emit("pad", g, lo=lo, hi=hi, interior=interior, value=0.0),)


@register
class Concat(OpDef):
    name = "concat"
    kind = OpKind.LAYOUT
    attributes = {"axis": Int(min=0)}

    def infer(self, attrs, *xs):
        axis = attrs["axis"]
        if not xs:
            raise self.error("expected at least one input")
        first = xs[0]
        if not 0 <= axis < first.ndim:
            raise self.error(f"axis {axis} out of range for rank {first.ndim}")
        for i, x in enumerate(xs):
            same = x.ndim == first.ndim and all(symbolic.equal(a, b, f"{self.name}: axis {d}")
                                                for d, (a, b) in enumerate(zip(x.shape, first.shape)) if d != axis)
            if not same:
                raise self.error(f"input {i} has shape {x.shape}, expected {first.shape} except along axis {axis}")
        shape = list(first.shape)
        shape[axis] = sum(x.shape[axis] for x in xs)
        return TensorType(shape, promote(*(x.dtype for x in xs)))

    def compute(self, attrs, *xs):
        return np.concatenate(xs, axis=attrs["axis"])

    def joins_channels(self, attrs):
        return attrs["axis"] == 1

    def grad(self, attrs, inputs, y, g):
        axis, offset, grads = attrs["axis"], 0, []
        for x in inputs:
            starts = tuple(offset if d == axis else 0 for d in range(len(x.shape)))
            # x's own sizes off the axis: symbolic ones may be other forms of g's (D and 2*(D // 2))
            stops = tuple(offset + n if d == axis else n for d, n in enumerate(x.shape))
            grads.append(emit("slice", g, starts=starts, stops=stops, steps=(1,) * len(x.shape)))
            offset += x.shape[axis]
        return tuple(grads)


@register
class OneHot(OpDef):
    """int64 class indices (...) -> float32 (..., num_classes)."""

    name = "one_hot"
    differentiable = False
    attributes = {"num_classes": Int(min=0)}

    def infer(self, attrs, x):
        if x.dtype != int64:
            raise self.dtype_error(f"expected int64 class indices, got {x.dtype}")
        return TensorType(x.shape + (attrs["num_classes"],), float32)

    def compute(self, attrs, x):
        n = attrs["num_classes"]
        if x.size and (x.min() < 0 or x.max() >= n):
            raise self.error(f"class indices must lie in [0, {n}), got values in [{x.min()}, {x.max()}]")
        return (x[..., None] == np.arange(n)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Public operator functions


def reshape(x, shape):
    """Reshape; one entry of `shape` may be -1."""
    shape = tuple(symbolic.as_size(n) for n in shape)
    inferred = [symbolic.same(n, -1) for n in shape]
    if sum(inferred) > 1:
        raise ShapeError(f"reshape: only one dimension can be -1, got {shape}")
    if any(inferred):
        known = math.prod(n for n, free in zip(shape, inferred) if not free)
        total = math.prod(x.shape)
        if symbolic.is_symbolic((known, total)):
            shape = tuple(symbolic.exact_div(total, known) if free else n for n, free in zip(shape, inferred))
        elif known == 0 or total % known:
            raise ShapeError(f"reshape: cannot reshape a tensor of shape {tuple(x.shape)} ({total} elements) to {shape}")
        else:
            shape = tuple(total // known if free else n for n, free in zip(shape, inferred))
    if symbolic.same(shape, tuple(x.shape)):
        return x
    return emit("reshape", x, shape=shape)


def permute(x, perm):
    perm = tuple(int(p) % max(len(x.shape), 1) for p in perm)
    if perm == tuple(range(len(x.shape))):
        return x
    return emit("permute", x, perm=perm)


def broadcast_to(x, shape):
    shape = tuple(symbolic.as_size(n) for n in shape)
    if symbolic.same(shape, tuple(x.shape)):
        return x
    return emit("broadcast_to", x, shape=shape)


def pad(x, lo, hi, interior=None, value=0.0):
    interior = (0,) * len(x.shape) if interior is None else tuple(interior)
    return emit("pad", x, lo=tuple(lo), hi=tuple(hi), interior=interior, value=float(value))


def slice_(x, starts, stops, steps=None):
    steps = (1,) * len(x.shape) if steps is None else tuple(steps)
    return emit("slice", x, starts=tuple(starts), stops=tuple(stops), steps=steps)


def concat(xs, axis=0):
    xs = list(xs)
    if not xs:
        raise ShapeError("concat: expected a non-empty sequence of tensors")
    ndim = len(xs[0].shape)
    if not -ndim <= axis < ndim:
        raise ShapeError(f"concat: axis {axis} out of range for tensors of rank {ndim}")
    return emit("concat", *xs, axis=int(axis) % ndim)


def one_hot(x, num_classes):
    return emit("one_hot", x, num_classes=int(num_classes))
