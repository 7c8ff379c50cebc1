"""The decomposed normalisations exporters emit, recognised and imported as lucid's norms.

Exporters write some norms as chains of elementary nodes rather than one norm node:
- group norm (PyTorch's GroupNorm): `Reshape(x, [N, G, -1])` -> `InstanceNormalization` with unit
  scale and zero bias -> `Reshape` back to x's shape, then a per-channel `Mul` and `Add`;
- layer and instance norm (older opsets, other exporters): `d = Sub(x, ReduceMean(x, axes))`,
  `Div(d, Sqrt(Add(ReduceMean(Pow(d, 2), axes), eps)))`, then an optional `Mul` and `Add`: a layer
  norm when the axes are the trailing ones and the scale fits them, an instance norm when they are
  the spatial axes and the scale is per channel.

`fuse(node, importer)` is tried on each node of `LAST_OPS` once it is converted: when the node ends such a
chain it returns the chain's result computed by `F.group_norm`, `F.layer_norm` or `F.instance_norm`
(the nodes of the chain, already converted, are left to dead-code elimination), else None. The
match is exact: each structural and numeric condition of the chain is checked (the unit scale, zero
bias, the eps inside the square root, the reshape back to x's shape, a scale and bias that broadcast
per channel or over the normalised axes), so a chain that computes anything else is imported node by
node. A trailing `Mul` or `Add` that does not fit is not fused: the norm before it is (when its own
node was converted), and the `Mul` or `Add` stays after it.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import helper

from ..ir import ops
from ..ir.graph import Value, building
from ..nn import functional as F


#: The op types a recognised chain can end with.
LAST_OPS = ("Reshape", "Div", "Mul", "Add")


def fuse(node, importer):
    """The fused norm that node's output is, or None."""
    core, weight, bias = _affine_tail(node.proto, importer)
    for norm in (_group_norm, _moment_norm):
        fused = norm(core, weight, bias, importer)
        if fused is not None:
            return fused
    return None


def _affine_tail(proto, importer) -> tuple:
    """(the node before the tail, weight, bias) for proto = core [* weight] [+ bias], weight and bias
    arrays; without a tail, (proto, None, None)."""
    weight = bias = None
    other, bias = _with_array(proto, "Add", importer)
    if bias is not None:
        proto = other
    other, weight = _with_array(proto, "Mul", importer)
    if weight is not None:
        proto = other
    return proto, weight, bias


def _with_array(proto, op: str, importer) -> tuple:
    """(producer of the graph-value operand, the array operand) of a binary `op` node, or (None, None)."""
    if proto is None or proto.op_type != op or len(proto.input) != 2:
        return None, None
    a, b = (importer.env.get(name) for name in proto.input)
    if isinstance(a, Value) and isinstance(b, np.ndarray):
        return importer.producer(proto.input[0]), b
    if isinstance(b, Value) and isinstance(a, np.ndarray):
        return importer.producer(proto.input[1]), a
    return None, None


def _group_norm(proto, weight, bias, importer):
    """Reshape(x, [N, G, -1]) -> InstanceNormalization(1, 0) -> Reshape to x's shape."""
    if not _is(proto, "Reshape"):
        return None
    normed = importer.producer(proto.input[0])
    if not _is(normed, "InstanceNormalization") or len(normed.input) != 3:
        return None
    grouped = importer.producer(normed.input[0])
    if not _is(grouped, "Reshape"):
        return None
    x, scale, shift = (importer.env.get(name) for name in (grouped.input[0], normed.input[1], normed.input[2]))
    restored = importer.env.get(proto.output[0])
    if not (isinstance(x, Value) and isinstance(scale, np.ndarray) and isinstance(shift, np.ndarray)
            and isinstance(restored, Value) and tuple(restored.shape) == tuple(x.shape) and len(x.shape) >= 2):
        return None
    groups, (n, channels) = scale.size, x.shape[:2]
    if (not np.all(scale == 1) or not np.all(shift == 0) or shift.size != groups or channels % groups
            or tuple(importer.env[grouped.output[0]].shape) != (n, groups, int(np.prod(x.shape)) // (n * groups))):
        return None
    if not _fits(weight, bias, lambda v: _per_channel(v, x)):
        return None
    with building(importer):
        scale, shift = _lifted(importer, (weight, bias), (channels,))
        return F.group_norm(x, groups, scale, shift, _attribute(normed, "epsilon", 1e-5))


def _moment_norm(proto, weight, bias, importer):
    """Div(d, Sqrt(Add(ReduceMean(Pow(d, 2)), eps))) with d = Sub(x, ReduceMean(x)), same axes."""
    if not _is(proto, "Div"):
        return None
    centred, root = (importer.producer(name) for name in proto.input)
    if not (_is(centred, "Sub") and _is(root, "Sqrt") and proto.input[0] == centred.output[0]):
        return None
    mean, padded = importer.producer(centred.input[1]), importer.producer(root.input[0])
    variance, eps = _with_array(padded, "Add", importer)
    if not (_is(mean, "ReduceMean") and _is(variance, "ReduceMean") and eps is not None and eps.size == 1
            and mean.input[0] == centred.input[0]):
        return None
    power = importer.producer(variance.input[0])
    exponent = importer.env.get(power.input[1]) if _is(power, "Pow") else None
    if not (isinstance(exponent, np.ndarray) and exponent.size == 1 and float(exponent) == 2.0
            and power.input[0] == centred.output[0]):
        return None
    x = importer.env.get(centred.input[0])
    axes = _reduced_axes(mean, importer, x)
    if not isinstance(x, Value) or axes is None or axes != _reduced_axes(variance, importer, x):
        return None
    return _normalised(x, axes, float(eps.reshape(())), weight, bias, importer)


def _normalised(x, axes: tuple, eps: float, weight, bias, importer):
    """x normalised over `axes` as an instance norm (spatial axes, per-channel scale and bias) or a
    layer norm (trailing axes, scale and bias over them), or None."""
    rank = len(x.shape)
    if rank >= 3 and axes == tuple(range(2, rank)) and _fits(weight, bias, lambda v: _per_channel(v, x)):
        with building(importer):
            scale, shift = _lifted(importer, (weight, bias), (x.shape[1],))
            return F.instance_norm(x, weight=scale, bias=shift, eps=eps)
    if axes[0] == 0 or axes != tuple(range(axes[0], rank)):
        return None
    shape = tuple(x.shape[axes[0]:])
    if not _fits(weight, bias, lambda v: _trailing(v, x, shape)):
        return None
    with building(importer):
        return F.layer_norm(x, shape, *_lifted(importer, (weight, bias), shape), eps)


def _fits(weight, bias, test) -> bool:
    """Whether each of weight and bias is absent or passes `test`."""
    return all(v is None or test(v) for v in (weight, bias))


def _lifted(importer, arrays, shape: tuple) -> list:
    """Graph values of shape `shape` for the arrays (None stays None; an array's leading sizes of 1
    are dropped, the rest broadcast), initialisers kept as bound parameters."""
    def lift(array):
        if array.size == math.prod(shape):
            return ops.reshape(importer.import_value(array), shape)
        core = np.shape(array)[max(array.ndim - len(shape), 0):]
        value = ops.reshape(importer.import_value(array), core)
        return value if core == shape else ops.broadcast_to(value, shape)
    return [None if a is None else lift(a) for a in arrays]


def _per_channel(array, x) -> bool:
    """Whether array broadcasts against x as one number per channel: shape (C, 1, ...) right-aligned,
    or one number for every channel (sizes of 1, as PyTorch's non-affine GroupNorm exports its scale)."""
    return _trailing(array, x, (x.shape[1],) + (1,) * (len(x.shape) - 2))


def _trailing(array, x, shape: tuple) -> bool:
    """Whether array broadcasts against x only over its trailing axes `shape` (leading sizes of 1)."""
    leading = array.shape[:max(array.ndim - len(shape), 0)]
    core = array.shape[len(leading):]
    return (array.dtype == x.dtype and all(d == 1 for d in leading)
            and all(c in (1, s) for c, s in zip(reversed(core), reversed(shape))))


def _reduced_axes(proto, importer, x):
    """The sorted axes a keepdims ReduceMean over x reduces, or None."""
    if _attribute(proto, "keepdims", 1) != 1 or not isinstance(x, Value):
        return None
    given = importer.env.get(proto.input[1]) if len(proto.input) > 1 and proto.input[1] else \
        _attribute(proto, "axes", None)
    if given is None or isinstance(given, Value):
        return None
    rank = len(x.shape)
    axes = [int(a) for a in np.asarray(given).reshape(-1)]
    if not axes or any(not -rank <= a < rank for a in axes):
        return None
    return tuple(sorted({a % rank for a in axes}))


def _attribute(proto, name: str, default):
    found = [a for a in proto.attribute if a.name == name]
    return helper.get_attribute_value(found[0]) if found else default


def _is(proto, op: str) -> bool:
    return proto is not None and proto.op_type == op and proto.domain in ("", "ai.onnx")
