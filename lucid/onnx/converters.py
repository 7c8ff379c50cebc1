"""The ONNX operators lucid imports: `CONVERTERS`, op type -> `Converter`, the one table of them.

A converter's `build(node, *inputs)` applies lucid's operator functions to graph values (inputs at
its `static` positions arrive as NumPy arrays: numbers it needs at import, such as a reshape's shape)
and returns the output value, or a tuple for several outputs. `fold(node, *arrays)`, where there is
one, computes the node with NumPy when every input is an array: the shape arithmetic exporters emit.
A converter that returns an array from `build` (`Shape`, `Constant`) folds whatever its inputs are.
Attribute values lucid cannot honour are refused naming the node and the attribute, and so is any
attribute a converter did not read (`OnnxNode.check_attributes_read`).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from onnx import TensorProto, helper

from ..errors import OnnxError
from ..ir import ops
from ..nn import functional as F
from . import reader
from .resize import resize, upsample


#: The Python types an attribute of each kind may have.
_ACCEPTED = {float: (float, int), int: int, str: str, tuple: tuple}


class OnnxNode:
    """One ONNX node as converters see it: op type, name, attributes (read through `attr`), opset."""

    def __init__(self, proto, opset: int, source):
        self.proto, self.opset, self.source = proto, opset, source
        self.op, self.name = proto.op_type, proto.name
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self.read: set[str] = set()

    def attr(self, name: str, default=None, kind: type | None = None):
        """Attribute `name` (bytes decoded, lists as tuples), or `default` when the node has none; a
        value not of `kind` (default: the default's type) is refused."""
        self.read.add(name)
        value = self.attrs.get(name, default)
        value = value.decode("utf-8", "replace") if isinstance(value, bytes) else \
            tuple(value) if isinstance(value, list) else value
        kind = kind or (type(default) if default is not None else None)
        if name in self.attrs and kind is not None and not isinstance(value, _ACCEPTED.get(kind, kind)):
            raise self.error(f"attribute {name} must be of type {kind.__name__}, got {value!r}")
        return value

    def ints(self, name: str, default) -> tuple:
        value = self.attr(name, default)
        if not isinstance(value, tuple) or not all(isinstance(v, int) for v in value):
            raise self.error(f"attribute {name} must be a list of ints, got {value!r}")
        return value

    def choice(self, name: str, default, supported: tuple):
        value = self.attr(name, default)
        if value not in supported:
            raise self.error(f"attribute {name}={value!r} is not supported (lucid imports {', '.join(map(repr, supported))})")
        return value

    def error(self, message: str) -> OnnxError:
        return self.source.error(f"node {self.name!r} ({self.op}): {message}")

    def check_attributes_read(self) -> None:
        unread = sorted(set(self.attrs) - self.read)
        if unread:
            raise self.error(f"attribute(s) {', '.join(unread)} are not supported by lucid's import of {self.op}")


class Converter(NamedTuple):
    build: Callable
    fold: Callable | None = None
    static: tuple = ()


# ---------------------------------------------------------------------------------------------- helpers


def _reshape(x, shape):
    """Reshape an array or a graph value."""
    shape = tuple(int(d) for d in shape)
    return x.reshape(shape) if isinstance(x, np.ndarray) else ops.reshape(x, shape)


def _axis(node: OnnxNode, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise node.error(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _axes(node: OnnxNode, axes, rank: int) -> tuple:
    return tuple(_axis(node, int(a), rank) for a in np.asarray(axes).reshape(-1))


def _scalar(node: OnnxNode, array, what: str) -> float:
    if array is None:
        return None
    if np.size(array) != 1:
        raise node.error(f"{what} must be a single number, got shape {np.shape(array)}")
    return np.asarray(array).reshape(()).item()


def _pairs(node: OnnxNode, pads: tuple, rank: int) -> tuple:
    """ONNX pads (all begins, then all ends) as (lo, hi) pairs."""
    if len(pads) != 2 * rank:
        raise node.error(f"attribute pads={pads} must have {2 * rank} entries")
    return tuple(zip(pads[:rank], pads[rank:]))


def _window(node: OnnxNode, in_sp: tuple, kernel: tuple, stride: tuple, dilation: tuple) -> tuple:
    """(lo, hi) padding per spatial axis from auto_pad or pads."""
    auto_pad = node.choice("auto_pad", "NOTSET", ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"))
    pads = node.ints("pads", (0,) * 2 * len(kernel))
    if auto_pad == "NOTSET":
        return _pairs(node, pads, len(kernel))
    if auto_pad == "VALID":
        return ((0, 0),) * len(kernel)
    totals = [max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
              for n, k, s, d in zip(in_sp, kernel, stride, dilation)]
    return tuple((t // 2, t - t // 2) if auto_pad == "SAME_UPPER" else (t - t // 2, t // 2) for t in totals)


def _check_kernel(node: OnnxNode, kernel: tuple) -> None:
    declared = node.ints("kernel_shape", kernel)
    if declared != kernel:
        raise node.error(f"attribute kernel_shape={declared} differs from the weight's kernel {kernel}")


# ---------------------------------------------------------------------------------------------- convolutions


def conv(node, x, w, b=None):
    rank, kernel = len(w.shape) - 2, tuple(w.shape[2:])
    _check_kernel(node, kernel)
    stride, dilation = node.ints("strides", (1,) * rank), node.ints("dilations", (1,) * rank)
    padding = _window(node, x.shape[2:], kernel, stride, dilation)
    return ops.conv(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=node.attr("group", 1))


def conv_transpose(node, x, w, b=None):
    rank, kernel = len(w.shape) - 2, tuple(w.shape[2:])
    _check_kernel(node, kernel)
    stride, dilation = node.ints("strides", (1,) * rank), node.ints("dilations", (1,) * rank)
    extra = node.ints("output_padding", (0,) * rank)
    auto_pad = node.choice("auto_pad", "NOTSET", ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"))
    target = node.ints("output_shape", ())[-rank:] if "output_shape" in node.attrs else None
    if target is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = tuple(n * s for n, s in zip(x.shape[2:], stride))
    if target is not None:
        totals = [s * (n - 1) + e + (k - 1) * d + 1 - t
                  for n, s, e, k, d, t in zip(x.shape[2:], stride, extra, kernel, dilation, target)]
        pairs = tuple((t // 2, t - t // 2) if auto_pad == "SAME_UPPER" else (t - t // 2, t // 2) for t in totals)
    else:
        pairs = ((0, 0),) * rank if auto_pad == "VALID" else _pairs(node, node.ints("pads", (0,) * 2 * rank), rank)
    node.attr("pads")
    if min(lo for lo, _ in pairs) < 0:
        raise node.error(f"output_shape {target} is larger than the transposed convolution can make")
    # lucid's output_padding extends the end; a negative end padding is more of it
    padding = tuple((lo, max(hi - e, 0)) for (lo, hi), e in zip(pairs, extra))
    output_padding = tuple(max(e - hi, 0) for (_, hi), e in zip(pairs, extra))
    return ops.conv_transpose(x, w, b, stride=stride, padding=padding, output_padding=output_padding,
                              dilation=dilation, groups=node.attr("group", 1))


# ---------------------------------------------------------------------------------------------- pooling


def _pool_window(node, x, fill: float):
    """(x padded where lucid's pooling cannot pad it, kernel, stride, padding, dilation, ceil_mode)."""
    kernel = node.ints("kernel_shape", None)
    rank = len(kernel)
    stride, dilation = node.ints("strides", (1,) * rank), node.ints("dilations", (1,) * rank)
    pairs = _window(node, x.shape[2:], kernel, stride, dilation)
    ceil_mode = bool(node.attr("ceil_mode", 0))
    if all(lo == hi and lo <= k // 2 for (lo, hi), k in zip(pairs, kernel)):
        return x, kernel, stride, tuple(lo for lo, _ in pairs), dilation, ceil_mode
    if ceil_mode:
        raise node.error(f"ceil_mode with pads {pairs} (uneven, or over half the kernel {kernel}) is not supported")
    padded = ops.pad(x, (0, 0) + tuple(lo for lo, _ in pairs), (0, 0) + tuple(hi for _, hi in pairs), value=fill)
    return padded, kernel, stride, (0,) * rank, dilation, ceil_mode


def max_pool(node, x):
    node.attr("storage_order")          # only the indices output, which lucid does not make, depends on it
    x, kernel, stride, padding, dilation, ceil_mode = _pool_window(node, x, -np.inf)
    return ops.max_pool(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)


def average_pool(node, x):
    include = bool(node.attr("count_include_pad", 0))
    padded, kernel, stride, padding, dilation, ceil_mode = _pool_window(node, x, 0.0)
    if padded is not x and not include:
        raise node.error("count_include_pad=0 with pads lucid's pooling cannot apply itself (uneven, or over half "
                         "the kernel) is not supported")
    if set(dilation) != {1}:
        raise node.error(f"attribute dilations={dilation} is not supported for AveragePool")
    return ops.avg_pool(padded, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                        count_include_pad=include, divisor_override=None)


def global_pool(reduce):
    return lambda node, x: reduce(x, tuple(range(2, len(x.shape))), keepdims=True)


# ---------------------------------------------------------------------------------------------- normalisation


def batch_norm(node, x, scale, bias, mean, var, *_):
    node.choice("training_mode", 0, (0,))
    node.attr("momentum")
    return F.batch_norm(x, mean, var, scale, bias, eps=node.attr("epsilon", 1e-5))


def instance_norm(node, x, scale, bias):
    return F.instance_norm(x, weight=scale, bias=bias, eps=node.attr("epsilon", 1e-5))


def group_norm(node, x, scale, bias):
    groups, channels = node.attr("num_groups", kind=int), x.shape[1]
    node.choice("stash_type", 1, (1,))
    if tuple(scale.shape) == (groups,) != (channels,):      # opset 18-20: one scale and bias per group
        per_channel = lambda v: ops.reshape(ops.broadcast_to(ops.reshape(v, (groups, 1)), (groups, channels // groups)),
                                            (channels,))
        scale, bias = per_channel(scale), per_channel(bias)
    return F.group_norm(x, groups, scale, bias, node.attr("epsilon", 1e-5))


def layer_norm(node, x, scale, bias=None):
    axis = _axis(node, node.attr("axis", -1), len(x.shape))
    node.choice("stash_type", 1, (1,))
    shape = tuple(x.shape[axis:])
    fitted = lambda v: v if v is None or tuple(v.shape) == shape else ops.broadcast_to(v, shape)
    return F.layer_norm(x, shape, fitted(scale), fitted(bias), node.attr("epsilon", 1e-5))


def softmax(function):
    return lambda node, x: function(x, _axis(node, node.attr("axis", -1), len(x.shape)))


# ---------------------------------------------------------------------------------------------- elementwise


def unary(function):
    return lambda node, x: function(x)


def binary(function):
    return lambda node, a, b: function(a, b)


def divide_arrays(node, a, b):
    _checked_size(node, np.broadcast_shapes(a.shape, b.shape))
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":
        return np.trunc(a / b).astype(np.result_type(a, b))
    return (a / b).astype(np.result_type(a, b))


def power(node, x, exponent):
    return ops.pow_scalar(x, _scalar(node, exponent, "the exponent of Pow (lucid raises to a constant)"))


def clip(node, x, low=None, high=None):
    return ops.clamp(x, _scalar(node, low, "min"), _scalar(node, high, "max"))


def clip_arrays(node, x, low=None, high=None):
    return np.clip(x, -np.inf if low is None else low, np.inf if high is None else high).astype(x.dtype)


def leaky_relu(node, x):
    return ops.leaky_relu(x, node.attr("alpha", 0.01))


def elu(node, x):
    return ops.elu(x, node.attr("alpha", 1.0))


def selu(node, x):
    return ops.elu(x, node.attr("alpha", F.SELU_ALPHA), node.attr("gamma", F.SELU_SCALE))


def celu(node, x):
    return F.celu(x, node.attr("alpha", 1.0))


def hard_sigmoid(node, x):
    alpha, beta = node.attr("alpha", 0.2), node.attr("beta", 0.5)
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return ops.hardsigmoid(x)
    return ops.clamp(ops.add(ops.mul(x, float(alpha)), float(beta)), 0.0, 1.0)


def gelu(node, x):
    return ops.gelu(x, node.choice("approximate", "none", ("none", "tanh")))


def cast(node, x):
    return ops.cast(x, _cast_dtype(node))


def cast_array(node, x):
    return x.astype(_cast_dtype(node))


def _cast_dtype(node) -> np.dtype:
    to = node.attr("to", kind=int)
    node.attr("saturate")
    if to not in reader.DTYPES or to == TensorProto.FLOAT16:
        raise node.error(f"attribute to={to} (a cast to an element type lucid does not hold) is not supported")
    return np.dtype(reader.DTYPES[to])


# ---------------------------------------------------------------------------------------------- linear algebra


def gemm(node, a, b, c=None):
    a = ops.transpose_last(a) if node.attr("transA", 0) else a
    b = ops.transpose_last(b) if node.attr("transB", 0) else b
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    y = ops.matmul(a, b)
    y = y if alpha == 1.0 else ops.mul(y, alpha)
    if c is None:
        return y
    return ops.add(y, c if beta == 1.0 else ops.mul(c, beta))


# ---------------------------------------------------------------------------------------------- shapes


def shape_of(node, x):
    start, end = node.attr("start", 0), node.attr("end", None)
    return np.array(x.shape[slice(start, end)], dtype=np.int64)


def reshape(node, x, shape):
    allow_zero = node.attr("allowzero", 0)
    target = [int(d) for d in np.asarray(shape).reshape(-1)]
    target = [x.shape[i] if d == 0 and not allow_zero else d for i, d in enumerate(target)]
    if target.count(-1) > 1:
        raise node.error(f"shape {target} has more than one -1")
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(x.shape) // known if known else 0
    if math.prod(target) != math.prod(x.shape):
        raise node.error(f"cannot reshape {tuple(x.shape)} to {tuple(target)}")
    return _reshape(x, target)


def flatten(node, x):
    axis = node.attr("axis", 1)
    axis = axis % len(x.shape) if axis < 0 else axis
    return _reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


def squeeze(node, x, axes=None):
    axes = _axes(node, axes, len(x.shape)) if axes is not None else tuple(i for i, d in enumerate(x.shape) if d == 1)
    if any(x.shape[a] != 1 for a in axes):
        raise node.error(f"cannot squeeze axes {axes} of shape {tuple(x.shape)}: they are not all of size 1")
    return _reshape(x, [d for i, d in enumerate(x.shape) if i not in axes])


def unsqueeze(node, x, axes):
    rank = len(x.shape) + np.size(axes)
    axes, sizes = set(_axes(node, axes, rank)), iter(x.shape)
    return _reshape(x, [1 if i in axes else next(sizes) for i in range(rank)])


def transpose(node, x):
    perm = node.ints("perm", tuple(reversed(range(len(x.shape)))))
    return np.transpose(x, perm) if isinstance(x, np.ndarray) else ops.permute(x, perm)


def concat(node, *xs):
    axis = _axis(node, node.attr("axis", kind=int), len(xs[0].shape))
    return np.concatenate(xs, axis) if all(isinstance(x, np.ndarray) for x in xs) else ops.concat(list(xs), axis)


def _spans(node, x, starts, ends, axes, steps) -> list:
    """Per axis of x, the (start, stop, step) Slice selects."""
    rank = len(x.shape)
    axes = _axes(node, axes, rank) if axes is not None else tuple(range(np.size(starts)))
    steps = np.asarray(steps).reshape(-1) if steps is not None else np.ones(len(axes), np.int64)
    spans = [(0, n, 1) for n in x.shape]
    for axis, start, end, step in zip(axes, np.asarray(starts).reshape(-1), np.asarray(ends).reshape(-1), steps):
        if step == 0:
            raise node.error("a slice step of 0")
        clamp = lambda v: int(max(min(int(v), 2 ** 62), -2 ** 62))
        spans[axis] = slice(clamp(start), clamp(end), int(step)).indices(x.shape[axis])
    return spans


def slice_array(node, x, starts, ends, axes=None, steps=None):
    return x[tuple(slice(*span) for span in _spans(node, x, starts, ends, axes, steps))]


def slice_value(node, x, starts, ends, axes=None, steps=None):
    spans = _spans(node, x, starts, ends, axes, steps)
    if any(step < 0 for _, _, step in spans):
        raise node.error("negative slice steps are not supported on graph values")
    return ops.slice_(x, [a for a, _, _ in spans], [max(a, b) for a, b, _ in spans], [s for _, _, s in spans])


def split(node, x, sizes=None):
    axis = _axis(node, node.attr("axis", 0), len(x.shape))
    count, length = len(node.proto.output), x.shape[axis]
    sizes = sizes if sizes is not None else node.attr("split")
    if node.attr("num_outputs", count) != count:
        raise node.error(f"attribute num_outputs={node.attr('num_outputs')} but the node has {count} outputs")
    sizes = [int(s) for s in np.asarray(sizes).reshape(-1)] if sizes is not None else \
        [-(-length // count)] * (count - 1) + [length - -(-length // count) * (count - 1)]
    if len(sizes) != count or sum(sizes) != length or min(sizes) < 0:
        raise node.error(f"split sizes {sizes} do not cut axis {axis} of size {length} into {count} outputs")
    bounds = np.cumsum([0] + sizes)
    return tuple(_axis_slice(x, axis, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]))


def _axis_slice(x, axis: int, start: int, stop: int):
    if isinstance(x, np.ndarray):
        return x[(slice(None),) * axis + (slice(start, stop),)]
    starts, stops = [0] * len(x.shape), list(x.shape)
    starts[axis], stops[axis] = start, stop
    return ops.slice_(x, starts, stops)


def gather(node, x, indices):
    axis = _axis(node, node.attr("axis", 0), len(x.shape))
    if isinstance(x, np.ndarray):
        return np.take(x, indices, axis=axis)
    size = x.shape[axis]
    flat = [int(i) for i in np.asarray(indices).reshape(-1)]
    if any(not -size <= i < size for i in flat):
        raise node.error(f"indices {flat} are out of range for axis {axis} of size {size}")
    flat = [i % size for i in flat]
    picked = ops.concat([_axis_slice(x, axis, i, i + 1) for i in flat], axis) if len(flat) != 1 else \
        _axis_slice(x, axis, flat[0], flat[0] + 1)
    return _reshape(picked, x.shape[:axis] + np.shape(indices) + x.shape[axis + 1:])


def expand(node, x, shape):
    target = _checked_size(node, np.broadcast_shapes(tuple(x.shape), tuple(int(d) for d in np.asarray(shape).reshape(-1))))
    return np.broadcast_to(x, target).copy() if isinstance(x, np.ndarray) else ops.broadcast_to(x, target)


def pad(node, x, pads, value=None, axes=None):
    mode = node.choice("mode", "constant", ("constant", "reflect", "edge", "wrap"))
    rank = len(x.shape)
    axes = _axes(node, axes, rank) if axes is not None else tuple(range(rank))
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise node.error(f"pads {pads} must have {2 * len(axes)} entries")
    lo, hi = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        lo[axis], hi[axis] = pads[k], pads[k + len(axes)]
    first = next((i for i in range(rank) if lo[i] or hi[i]), rank)
    torch_pads = [p for axis in reversed(range(first, rank)) for p in (lo[axis], hi[axis])]
    if not torch_pads:
        return x
    fill = _scalar(node, value, "the constant value") if mode == "constant" else None
    return F.pad(x, torch_pads, {"edge": "replicate", "wrap": "circular"}.get(mode, mode), fill)


def reduce(function):
    def convert(node, x, axes=None):
        axes = axes if axes is not None else node.attr("axes")
        keepdims = bool(node.attr("keepdims", 1))
        if axes is None or np.size(axes) == 0:
            if node.attr("noop_with_empty_axes", 0):
                return x
            axes = range(len(x.shape))
        return function(x, _axes(node, list(axes), len(x.shape)), keepdims=keepdims)
    return convert


# ---------------------------------------------------------------------------------------------- constants


def constant(node):
    kinds = [k for k in ("value", "value_float", "value_floats", "value_int", "value_ints") if k in node.attrs]
    if len(kinds) != 1:
        raise node.error(f"expected exactly one of value, value_float(s), value_int(s); got {sorted(node.attrs)}")
    value = node.attr(kinds[0], kind=TensorProto if kinds[0] == "value" else None)
    if kinds[0] == "value":
        return reader.tensor_array(value, node.source)
    return np.array(value, dtype=np.float32 if "float" in kinds[0] else np.int64)


def constant_of_shape(node, shape):
    value = node.attr("value", kind=TensorProto)
    fill = reader.tensor_array(value, node.source).reshape(-1) if value is not None else np.zeros(1, np.float32)
    dims = tuple(int(d) for d in np.asarray(shape).reshape(-1))
    reader.checked_count(dims, fill.itemsize, f"node {node.name!r} (ConstantOfShape)", node.source)
    return np.full(dims, fill[0], dtype=fill.dtype)


def range_(node, start, limit, delta):
    count = max(math.ceil((float(limit) - float(start)) / float(delta)), 0) if delta else -1
    if count < 0 or count > reader.MAX_TENSOR_BYTES // 8:
        raise node.error(f"Range({start}, {limit}, {delta}) is empty-stepped or too long")
    return np.arange(start, limit, delta, dtype=np.asarray(start).dtype)


def identity(node, x):
    return x


def dropout(node, x, ratio=None, training=None):
    node.attr("seed")
    if training is not None and bool(_scalar(node, training, "training_mode")):
        raise node.error("training_mode=True is not supported (lucid imports models for inference)")
    return x


def each_array(function):
    """A NumPy fold of a broadcasting operator, refusing a result too large to hold."""
    def fold(node, *arrays):
        _checked_size(node, np.broadcast_shapes(*(np.shape(a) for a in arrays if a is not None)))
        return function(*arrays)
    return fold


def _checked_size(node, shape: tuple) -> tuple:
    reader.checked_count(shape, 8, f"node {node.name!r} ({node.op})", node.source)
    return shape


CONVERTERS: dict[str, Converter] = {
    "Conv": Converter(conv),
    "ConvTranspose": Converter(conv_transpose),
    "MaxPool": Converter(max_pool),
    "AveragePool": Converter(average_pool),
    "GlobalAveragePool": Converter(global_pool(ops.mean)),
    "GlobalMaxPool": Converter(global_pool(ops.max_)),
    "BatchNormalization": Converter(batch_norm),
    "InstanceNormalization": Converter(instance_norm),
    "GroupNormalization": Converter(group_norm),
    "LayerNormalization": Converter(layer_norm),
    "Softmax": Converter(softmax(ops.softmax)),
    "LogSoftmax": Converter(softmax(ops.log_softmax)),
    "Relu": Converter(unary(ops.relu)),
    "LeakyRelu": Converter(leaky_relu),
    "PRelu": Converter(binary(ops.prelu)),
    "Elu": Converter(elu),
    "Selu": Converter(selu),
    "Celu": Converter(celu),
    "Sigmoid": Converter(unary(ops.sigmoid)),
    "Tanh": Converter(unary(ops.tanh)),
    "Softplus": Converter(unary(ops.softplus)),
    "HardSigmoid": Converter(hard_sigmoid),
    "HardSwish": Converter(unary(ops.hardswish)),
    "Mish": Converter(unary(ops.mish)),
    "Gelu": Converter(gelu),
    "Clip": Converter(clip, clip_arrays, static=(1, 2)),
    "Add": Converter(binary(ops.add), each_array(np.add)),
    "Sub": Converter(binary(ops.sub), each_array(np.subtract)),
    "Mul": Converter(binary(ops.mul), each_array(np.multiply)),
    "Div": Converter(binary(ops.div), divide_arrays),
    "Pow": Converter(power, each_array(np.power), static=(1,)),
    "Sqrt": Converter(unary(ops.sqrt), each_array(np.sqrt)),
    "Exp": Converter(unary(ops.exp)),
    "Erf": Converter(unary(ops.erf)),
    "Log": Converter(unary(ops.log)),
    "Abs": Converter(unary(ops.abs_), each_array(np.abs)),
    "Neg": Converter(unary(ops.neg), each_array(np.negative)),
    "Where": Converter(lambda node, c, a, b: ops.where(c, a, b), each_array(np.where)),
    "Equal": Converter(binary(ops.eq), each_array(np.equal)),
    "MatMul": Converter(binary(ops.matmul)),
    "Gemm": Converter(gemm),
    "Flatten": Converter(flatten, flatten),
    "Reshape": Converter(reshape, reshape, static=(1,)),
    "Transpose": Converter(transpose, transpose),
    "Concat": Converter(concat, concat),
    "Split": Converter(split, split, static=(1,)),
    "Slice": Converter(slice_value, slice_array, static=(1, 2, 3, 4)),
    "Squeeze": Converter(squeeze, squeeze, static=(1,)),
    "Unsqueeze": Converter(unsqueeze, unsqueeze, static=(1,)),
    "Gather": Converter(gather, gather, static=(1,)),
    "Expand": Converter(expand, expand, static=(1,)),
    "Pad": Converter(pad, static=(1, 2, 3)),
    "Resize": Converter(resize, static=(1, 2, 3)),
    "Upsample": Converter(upsample, static=(1,)),
    "ReduceMean": Converter(reduce(ops.mean), static=(1,)),
    "ReduceSum": Converter(reduce(ops.sum_), static=(1,)),
    "ReduceMax": Converter(reduce(ops.max_), static=(1,)),
    "Cast": Converter(cast, cast_array),
    "Shape": Converter(shape_of, shape_of),
    "Constant": Converter(constant, constant),
    "ConstantOfShape": Converter(constant_of_shape, constant_of_shape, static=(0,)),
    "Range": Converter(range_, range_, static=(0, 1, 2)),
    "Identity": Converter(identity, identity),
    "Dropout": Converter(dropout, static=(1, 2)),
}
