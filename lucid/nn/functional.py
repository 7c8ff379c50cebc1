"""`lucid.nn.functional`: PyTorch's functional API over lucid's operators.

These functions parse user arguments (ints or tuples, padding strings, unbatched inputs), validate
them with messages naming the function, and apply operators from `lucid.ir.ops`.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from ..autograd import no_grad
from ..errors import DTypeError, ShapeError, TraceError
from ..ir import ops
from ..ir.graph import Value, active_builder
from ..ir.methods import TensorMethods
from ..ir.types import int64
from ..random import generator
from ..tensor import Tensor

# ----------------------------------------------------------------------------------------------
# Argument parsing shared with the modules


def ntuple(value, rank: int, what: str, owner: str, minimum: int | None = None) -> tuple:
    """An int or a length-`rank` sequence of ints as a tuple; checks every entry >= minimum."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        values = (int(value),) * rank
    elif isinstance(value, (tuple, list)) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        values = tuple(int(v) for v in value)
        if len(values) != rank:
            raise ShapeError(f"{owner}: expected {what} as an int or a tuple of {rank} ints, got {tuple(value)}")
    else:
        raise ShapeError(f"{owner}: expected {what} as an int or a tuple of {rank} ints, got {value!r}")
    if minimum is not None and min(values) < minimum:
        raise ShapeError(f"{owner}: {what} must be >= {minimum}, got {values}")
    return values


def check_padding_arg(padding, rank: int, owner: str):
    """Validate a padding argument: 'same', 'valid', an int or a tuple of non-negative ints."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ShapeError(f"{owner}: padding must be 'same', 'valid', an int or a tuple of {rank} ints, got {padding!r}")
        return padding
    return ntuple(padding, rank, "padding", owner, minimum=0)


def conv_padding(padding, rank: int, owner: str, in_sp: tuple, kernel: tuple, stride: tuple, dilation: tuple) -> tuple:
    """(lo, hi) pairs for a conv. 'same' keeps ceil(in/stride) outputs, the odd element on the high side."""
    padding = check_padding_arg(padding, rank, owner)
    if padding == "valid":
        return ((0, 0),) * rank
    if padding == "same":
        pairs = []
        for n, k, s, d in zip(in_sp, kernel, stride, dilation):
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
            pairs.append((total // 2, total - total // 2))
        return tuple(pairs)
    return tuple((p, p) for p in padding)


def conv_transpose_padding(padding, output_padding, rank: int, owner: str, kernel: tuple, stride: tuple,
                           dilation: tuple) -> tuple[tuple, tuple]:
    """((lo, hi) pairs, output_padding) for a transposed conv; 'same' gives in*stride outputs."""
    padding = check_padding_arg(padding, rank, owner)
    output_padding = ntuple(output_padding, rank, "output_padding", owner, minimum=0)
    if isinstance(padding, str) and any(output_padding):
        raise ShapeError(f"{owner}: output_padding must be 0 with padding={padding!r}, got {output_padding}")
    if padding == "valid":
        return ((0, 0),) * rank, output_padding
    if padding == "same":
        pairs, extra = [], []
        for k, s, d in zip(kernel, stride, dilation):
            total = d * (k - 1) + 1 - s
            pairs.append((total // 2, total - total // 2) if total >= 0 else (0, 0))
            extra.append(max(-total, 0))
        return tuple(pairs), tuple(extra)
    return tuple((p, p) for p in padding), output_padding


def check_output_padding(output_padding: tuple, stride: tuple, dilation: tuple, owner: str) -> None:
    if any(p >= max(s, d) for p, s, d in zip(output_padding, stride, dilation)):
        raise ShapeError(f"{owner}: output_padding must be smaller than stride or dilation, got "
                         f"output_padding={output_padding} stride={stride} dilation={dilation}")


def _require_tensor(x, owner: str, what: str = "input") -> Tensor:
    if not isinstance(x, TensorMethods):
        raise DTypeError(f"{owner}: expected {what} to be a lucid Tensor, got {type(x).__name__}")
    return x


def _batched(x, rank: int, owner: str) -> tuple[Tensor, bool]:
    """Accept (C, *spatial) or (N, C, *spatial); return the batched tensor and whether a batch axis was added."""
    x = _require_tensor(x, owner)
    if x.ndim == rank + 1:
        return x.unsqueeze(0), True
    if x.ndim != rank + 2:
        raise ShapeError(f"{owner}: expected a {rank + 1}-D (unbatched) or {rank + 2}-D (batched) input, "
                         f"got a {x.ndim}-D input of shape {x.shape}")
    return x, False


def _unbatch(y: Tensor, added: bool) -> Tensor:
    return y.squeeze(0) if added else y


def _check_weight(weight, rank: int, owner: str) -> Tensor:
    weight = _require_tensor(weight, owner, "weight")
    if weight.ndim != rank + 2:
        raise ShapeError(f"{owner}: expected a weight of rank {rank + 2}, got shape {weight.shape}")
    return weight


# ----------------------------------------------------------------------------------------------
# Convolutions


def _conv(rank, input, weight, bias, stride, padding, dilation, groups):
    owner = f"conv{rank}d"
    x, added = _batched(input, rank, owner)
    weight = _check_weight(weight, rank, owner)
    stride = ntuple(stride, rank, "stride", owner, minimum=1)
    dilation = ntuple(dilation, rank, "dilation", owner, minimum=1)
    pads = conv_padding(padding, rank, owner, x.shape[2:], weight.shape[2:], stride, dilation)
    y = ops.conv(x, weight, bias, stride=stride, padding=pads, dilation=dilation, groups=_groups(groups, owner))
    return _unbatch(y, added)


def _conv_transpose(rank, input, weight, bias, stride, padding, output_padding, groups, dilation):
    owner = f"conv_transpose{rank}d"
    x, added = _batched(input, rank, owner)
    weight = _check_weight(weight, rank, owner)
    stride = ntuple(stride, rank, "stride", owner, minimum=1)
    dilation = ntuple(dilation, rank, "dilation", owner, minimum=1)
    pads, output_padding = conv_transpose_padding(padding, output_padding, rank, owner, weight.shape[2:], stride, dilation)
    check_output_padding(output_padding, stride, dilation, owner)
    y = ops.conv_transpose(x, weight, bias, stride=stride, padding=pads, output_padding=output_padding,
                           dilation=dilation, groups=_groups(groups, owner))
    return _unbatch(y, added)


def _groups(groups, owner: str) -> int:
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ShapeError(f"{owner}: groups must be a positive int, got {groups!r}")
    return int(groups)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(2, input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(3, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation)


# ----------------------------------------------------------------------------------------------
# Pooling


def pool_args(rank, owner, kernel_size, stride, padding, dilation=1) -> dict:
    kernel = ntuple(kernel_size, rank, "kernel_size", owner, minimum=1)
    stride = kernel if stride is None or stride == () else ntuple(stride, rank, "stride", owner, minimum=1)
    return dict(kernel=kernel, stride=stride, padding=ntuple(padding, rank, "padding", owner, minimum=0),
                dilation=ntuple(dilation, rank, "dilation", owner, minimum=1))


def _max_pool(rank, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    owner = f"max_pool{rank}d"
    if return_indices:
        raise ShapeError(f"{owner}: return_indices=True is not supported")
    x, added = _batched(input, rank, owner)
    args = pool_args(rank, owner, kernel_size, stride, padding, dilation)
    return _unbatch(ops.max_pool(x, ceil_mode=ceil_mode, **args), added)


def _avg_pool(rank, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    owner = f"avg_pool{rank}d"
    x, added = _batched(input, rank, owner)
    args = pool_args(rank, owner, kernel_size, stride, padding)
    del args["dilation"]
    return _unbatch(ops.avg_pool(x, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                                 divisor_override=divisor_override, **args), added)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


# Adaptive pooling: output cell i of an axis of size n pooled to m covers [floor(i*n/m), ceil((i+1)*n/m)).
# Composed of existing operators: a reduction when every output size is 1, one pooling operator over
# the axes where m divides n, and per-cell slices + reductions + a concat along each remaining axis
# (average and maximum are both separable across axes).


def adaptive_output_size(output_size, rank: int, owner: str) -> tuple:
    """`output_size` as a length-`rank` tuple of ints >= 1 or None (None keeps the input's size)."""
    if output_size is None or isinstance(output_size, numbers.Integral) and not isinstance(output_size, bool):
        output_size = (output_size,) * rank
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else None
    valid = sizes is not None and len(sizes) == rank and all(
        s is None or isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes)
    if not valid:
        raise ShapeError(f"{owner}: expected output_size as an int >= 1 or a tuple of {rank} ints >= 1 or None, "
                         f"got {output_size!r}")
    return tuple(None if s is None else int(s) for s in sizes)


def _adaptive_pool(kind: str, rank: int, input, output_size, return_indices: bool = False):
    owner = f"adaptive_{kind}_pool{rank}d"
    if return_indices:
        raise ShapeError(f"{owner}: return_indices=True is not supported")
    x, added = _batched(input, rank, owner)
    sizes = adaptive_output_size(output_size, rank, owner)
    in_sp = x.shape[2:]
    out_sp = tuple(n if m is None else m for n, m in zip(in_sp, sizes))
    reduce = ops.mean if kind == "avg" else ops.max_
    if all(m == 1 for m in out_sp):
        return _unbatch(reduce(x, tuple(range(2, rank + 2)), keepdims=True), added)
    kernel = tuple(n // m if n % m == 0 else 1 for n, m in zip(in_sp, out_sp))
    if any(k > 1 for k in kernel):
        x = _pool_by_kernel(kind, x, kernel)
    for axis, (n, m) in enumerate(zip(x.shape[2:], out_sp), start=2):
        if n != m:
            x = _adaptive_axis(reduce, x, axis, m)
    return _unbatch(x, added)


def _pool_by_kernel(kind: str, x, kernel: tuple):
    """Non-overlapping pooling with kernel = stride = `kernel`."""
    zeros = (0,) * len(kernel)
    if kind == "avg":
        return ops.avg_pool(x, kernel=kernel, stride=kernel, padding=zeros, ceil_mode=False,
                            count_include_pad=True, divisor_override=None)
    return ops.max_pool(x, kernel=kernel, stride=kernel, padding=zeros, dilation=(1,) * len(kernel), ceil_mode=False)


def _adaptive_axis(reduce, x, axis: int, m: int):
    """Pool `axis` of `x` to `m` cells with PyTorch's adaptive windows."""
    n = x.shape[axis]
    cells = []
    for i in range(m):
        start, stop = i * n // m, -(-(i + 1) * n // m)
        window = _axis_slice(x, axis, start, stop)
        cells.append(window if stop - start == 1 else reduce(window, (axis,), keepdims=True))
    return ops.concat(cells, axis)


def _axis_slice(x, axis: int, start: int, stop: int):
    """Elements [start, stop) of `axis`, everything of the other axes."""
    starts = tuple(start if d == axis else 0 for d in range(x.ndim))
    stops = tuple(stop if d == axis else n for d, n in enumerate(x.shape))
    return ops.slice_(x, starts, stops)


def adaptive_avg_pool1d(input, output_size): return _adaptive_pool("avg", 1, input, output_size)
def adaptive_avg_pool2d(input, output_size): return _adaptive_pool("avg", 2, input, output_size)
def adaptive_avg_pool3d(input, output_size): return _adaptive_pool("avg", 3, input, output_size)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    return _adaptive_pool("max", 1, input, output_size, return_indices)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    return _adaptive_pool("max", 2, input, output_size, return_indices)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    return _adaptive_pool("max", 3, input, output_size, return_indices)


# ----------------------------------------------------------------------------------------------
# Activations, linear, normalisation, dropout, shape


def relu(input, inplace=False): return ops.relu(_require_tensor(input, "relu"))
def sigmoid(input): return ops.sigmoid(_require_tensor(input, "sigmoid"))
def tanh(input): return ops.tanh(_require_tensor(input, "tanh"))
def gelu(input, approximate="none"): return ops.gelu(_require_tensor(input, "gelu"), approximate)
def leaky_relu(input, negative_slope=0.01, inplace=False):
    return ops.leaky_relu(_require_tensor(input, "leaky_relu"), negative_slope)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """softmax along `dim`, of the input cast to `dtype` first if given (PyTorch's arguments)."""
    x, axis = _softmax_arguments(input, dim, dtype, "softmax")
    return ops.softmax(x, axis)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    x, axis = _softmax_arguments(input, dim, dtype, "log_softmax")
    return ops.log_softmax(x, axis)


def _softmax_arguments(input, dim, dtype, owner: str) -> tuple:
    """The input (cast to `dtype`) and the axis; without `dim`, PyTorch's deprecated implicit choice
    (axis 0 for 0-, 1- and 3-D inputs, else 1), with its warning."""
    x = _require_tensor(input, owner)
    if dtype is not None:
        x = ops.cast(x, dtype)
    if dim is None:
        warnings.warn(f"{owner}: implicit dimension choice is deprecated; pass dim", UserWarning, stacklevel=3)
        dim = 0 if len(x.shape) in (0, 1, 3) else 1
    return x, dim


# The activations below take PyTorch's `inplace=` and compute out of place: the result is returned and
# the input is left as it was (model code uses the returned value).

#: SELU's constants (Klambauer et al., "Self-Normalizing Neural Networks").
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def elu(input, alpha=1.0, inplace=False): return ops.elu(_require_tensor(input, "elu"), alpha)
def selu(input, inplace=False): return ops.elu(_require_tensor(input, "selu"), SELU_ALPHA, SELU_SCALE)
def silu(input, inplace=False): return ops.silu(_require_tensor(input, "silu"))
def mish(input, inplace=False): return ops.mish(_require_tensor(input, "mish"))
def hardsigmoid(input, inplace=False): return ops.hardsigmoid(_require_tensor(input, "hardsigmoid"))
def hardswish(input, inplace=False): return ops.hardswish(_require_tensor(input, "hardswish"))
def relu6(input, inplace=False): return hardtanh(input, 0.0, 6.0)


def celu(input, alpha=1.0, inplace=False):
    if alpha == 0:
        raise ValueError("celu: alpha must not be 0 (the negative part is alpha * (exp(x / alpha) - 1))")
    return ops.elu(_require_tensor(input, "celu"), alpha, 1.0, 1.0 / alpha)


def softplus(input, beta=1.0, threshold=20.0):
    return ops.softplus(_require_tensor(input, "softplus"), beta, threshold)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    return ops.hardtanh(_require_tensor(input, "hardtanh"), min_val, max_val)


def prelu(input, weight):
    """max(0, x) + weight * min(0, x), weight (1 or C values) along the channel axis 1."""
    x, w = _require_tensor(input, "prelu"), _require_tensor(weight, "prelu", "weight")
    channels = x.shape[1] if len(x.shape) >= 2 else 1
    count = math.prod(w.shape)
    if count == 1:
        return ops.prelu(x, ops.reshape(w, ()))
    if len(w.shape) == 1 and count == channels:
        return ops.prelu(x, ops.reshape(w, (channels,) + (1,) * (len(x.shape) - 2)))
    raise ShapeError(f"prelu: expected a weight of 1 value or {channels} (the input's channels, axis 1 "
                     f"of shape {tuple(x.shape)}), got shape {tuple(w.shape)}")


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias, weight (out_features, in_features)."""
    input, weight = _require_tensor(input, "linear"), _require_tensor(weight, "linear", "weight")
    if weight.ndim != 2:
        raise ShapeError(f"linear: expected a weight of shape (out_features, in_features), got {weight.shape}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ShapeError(f"linear: expected input with last dimension {weight.shape[1]} (in_features), "
                         f"got shape {input.shape}")
    y = ops.matmul(input, ops.transpose_last(weight))
    return y if bias is None else ops.add(y, bias)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalise over every axis but 1. In training, batch statistics are used (and the running ones,
    when given, are updated in place with the unbiased variance)."""
    x = _require_tensor(input, "batch_norm")
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: expected an input of rank >= 2 (N, C, ...), got shape {x.shape}")
    channels = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    if training:
        count = x.numel() // max(channels, 1)
        if count <= 1:
            raise ShapeError(f"batch_norm: expected more than 1 value per channel when training, got input of shape {x.shape}")
        mean, var = ops.mean(x, axes), ops.var(x, axes, correction=0)
        if running_mean is not None and running_var is not None:
            _update_running(running_mean, running_var, mean, var, count, momentum)
    else:
        if running_mean is None or running_var is None:
            raise ShapeError("batch_norm: running_mean and running_var are required in eval mode")
        mean, var = running_mean, running_var
    weight = weight if weight is not None else Tensor(np.ones(channels), dtype=x.dtype)
    bias = bias if bias is not None else Tensor(np.zeros(channels), dtype=x.dtype)
    return ops.batch_norm(x, mean, var, weight, bias, eps)


def _update_running(running_mean, running_var, mean, var, count, momentum):
    with no_grad():
        unbiased = ops.mul(var, count / (count - 1))
        assign_state(running_mean, (1 - momentum) * running_mean + momentum * mean)
        assign_state(running_var, (1 - momentum) * running_var + momentum * unbiased)


def assign_state(buffer: Tensor, value) -> None:
    """Overwrite a buffer with `value` (cast to the buffer's dtype); while tracing, record it as a
    state update of the graph instead."""
    if isinstance(value, Value):
        active_builder().record_update(buffer, value)
    else:
        buffer.data[...] = value.data


# Group, instance, layer and local response normalisation, composed of graph operators: the
# statistics are mean and var reductions over a reshaped view (two-pass, in the input's dtype), and
# the normalise-scale-shift (x - mean) * rstd * weight + bias keeps the input's shape, so fusion makes
# it one loop together with a following activation. Gradients come from the operators' own rules.

def _normalise(x, mean, rstd, weight, bias):
    """(x - mean) * rstd [* weight] [+ bias], every operand broadcastable to x's shape."""
    y = ops.mul(ops.sub(x, mean), rstd)
    y = y if weight is None else ops.mul(y, weight)
    return y if bias is None else ops.add(y, bias)


def _group_statistics(x, groups: int, eps: float) -> tuple:
    """Biased mean and rstd of each (sample, group) of x (N, C, *), spread back to shape (N, C, 1...)."""
    n, c = x.shape[0], x.shape[1]
    grouped = ops.reshape(x, (n, groups, -1))
    mean = ops.mean(grouped, 2, keepdims=True)
    var = ops.var(grouped, 2, keepdims=True, correction=0)
    rstd = ops.pow_scalar(ops.add(var, eps), -0.5)
    per_channel = (n, c) + (1,) * (x.ndim - 2)
    spread = lambda s: ops.reshape(ops.broadcast_to(s, (n, groups, c // groups)), per_channel)
    return spread(mean), spread(rstd), mean, var


def _channel_vector(v, ndim: int):
    return None if v is None else ops.reshape(v, (1, -1) + (1,) * (ndim - 2))


def _check_channel_vector(v, channels: int, what: str, owner: str) -> None:
    if v is not None and tuple(_require_tensor(v, owner, what).shape) != (channels,):
        raise ShapeError(f"{owner}: expected {what} of shape ({channels},), got {tuple(v.shape)}")


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise each group of num_groups channel groups of each sample over its channels and
    spatial positions, then scale and shift per channel."""
    x = _require_tensor(input, "group_norm")
    if x.ndim < 2:
        raise ShapeError(f"group_norm: expected an input of rank >= 2 (N, C, ...), got shape {x.shape}")
    channels = x.shape[1]
    if not isinstance(num_groups, numbers.Integral) or num_groups < 1 or channels % num_groups:
        raise ShapeError(f"group_norm: the {channels} channels of input shape {x.shape} are not divisible "
                         f"into num_groups={num_groups} groups")
    for v, what in ((weight, "weight"), (bias, "bias")):
        _check_channel_vector(v, channels, what, "group_norm")
    mean, rstd, _, _ = _group_statistics(x, int(num_groups), eps)
    return _normalise(x, mean, rstd, _channel_vector(weight, x.ndim), _channel_vector(bias, x.ndim))


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Normalise each channel of each sample over its spatial positions (use_input_stats), updating
    the running statistics when given (the batch's mean of the per-instance means and unbiased
    variances); or normalise with the running statistics."""
    x = _require_tensor(input, "instance_norm")
    if x.ndim < 3:
        raise ShapeError(f"instance_norm: expected an input of rank >= 3 (N, C, ...), got shape {x.shape}")
    channels = x.shape[1]
    for v, what in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"), (bias, "bias")):
        _check_channel_vector(v, channels, what, "instance_norm")
    weight, bias = _channel_vector(weight, x.ndim), _channel_vector(bias, x.ndim)
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ShapeError("instance_norm: running_mean and running_var are required when use_input_stats=False")
        rstd = ops.pow_scalar(ops.add(running_var, eps), -0.5)
        return _normalise(x, _channel_vector(running_mean, x.ndim), _channel_vector(rstd, x.ndim), weight, bias)
    count = x.numel() // max(x.shape[0] * channels, 1)
    if count <= 1:
        raise ShapeError(f"instance_norm: expected more than 1 spatial element when training, got input of shape {x.shape}")
    mean, rstd, group_mean, group_var = _group_statistics(x, channels, eps)
    if running_mean is not None and running_var is not None:
        batch_mean = lambda s: ops.mean(ops.reshape(s, (x.shape[0], channels)), 0)
        _update_running(running_mean, running_var, batch_mean(group_mean), batch_mean(group_var), count, momentum)
    return _normalise(x, mean, rstd, weight, bias)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last len(normalized_shape) axes, then scale and shift elementwise."""
    x = _require_tensor(input, "layer_norm")
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    if not shape or len(shape) > x.ndim or tuple(x.shape[x.ndim - len(shape):]) != shape:
        raise ShapeError(f"layer_norm: expected an input whose last axes are normalized_shape={shape}, "
                         f"got shape {x.shape}")
    for v, what in ((weight, "weight"), (bias, "bias")):
        if v is not None and tuple(_require_tensor(v, "layer_norm", what).shape) != shape:
            raise ShapeError(f"layer_norm: expected {what} of shape {shape}, got {tuple(v.shape)}")
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mean = ops.mean(x, axes, keepdims=True)
    rstd = ops.pow_scalar(ops.add(ops.var(x, axes, keepdims=True, correction=0), eps), -0.5)
    return _normalise(x, mean, rstd, weight, bias)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + alpha * mean of x^2 over `size` neighbouring channels)^beta; the window is centred
    (size // 2 channels before) and zero-padded, the mean always divides by `size`."""
    x = _require_tensor(input, "local_response_norm")
    if x.ndim < 3:
        raise ShapeError(f"local_response_norm: expected an input of rank >= 3 (N, C, ...), got shape {x.shape}")
    if not isinstance(size, numbers.Integral) or size < 1:
        raise ShapeError(f"local_response_norm: size must be a positive int, got {size!r}")
    n, c = x.shape[0], x.shape[1]
    squares = ops.reshape(ops.mul(x, x), (n, 1, c, -1))
    lo, hi = size // 2, (size - 1) // 2
    if lo or hi:
        squares = ops.pad(squares, (0, 0, lo, 0), (0, 0, hi, 0))
    window = ops.avg_pool(squares, kernel=(int(size), 1), stride=(1, 1), padding=(0, 0),
                          ceil_mode=False, count_include_pad=True, divisor_override=None)
    denominator = ops.pow_scalar(ops.add(ops.mul(ops.reshape(window, x.shape), float(alpha)), float(k)), beta)
    return ops.div(x, denominator)


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity when not training)."""
    x = _require_tensor(input, "dropout")
    if not 0.0 <= p <= 1.0:
        raise ShapeError(f"dropout: probability p must lie in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return ops.mul(x, 0.0)
    if active_builder() is not None:
        raise TraceError(f"dropout: random masks cannot be traced yet (dropout with p={p} in training mode); "
                         "trace the model in eval mode")
    keep = generator().random(x.shape) >= p
    return ops.mul(x, Tensor(keep / (1.0 - p), dtype=x.dtype))


def flatten(input, start_dim=1, end_dim=-1):
    return _require_tensor(input, "flatten").flatten(start_dim, end_dim)


PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad(input, pad, mode="constant", value=None):
    """PyTorch's F.pad: `pad` lists (low, high) pairs starting from the last axis; negative values crop.

    'reflect' mirrors about the edge element, 'replicate' repeats it, 'circular' wraps around; these
    pad the last 1-3 axes of a batched or unbatched input and are composed of slices and a concat.
    Negative padding crops the input before it is padded, except for 'reflect', which crops after.
    """
    x = _require_tensor(input, "pad")
    if mode not in PAD_MODES:
        raise ShapeError(f"pad: mode must be one of {PAD_MODES}, got mode={mode!r}")
    if not isinstance(pad, (tuple, list)) or len(pad) % 2 or len(pad) // 2 > x.ndim or not all(
            isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in pad):
        raise ShapeError(f"pad: expected an even number of ints, at most 2 * rank ({2 * x.ndim}), got {pad!r}")
    if mode != "constant":
        _check_edge_mode(x, pad, mode, value)
    lo, hi = [0] * x.ndim, [0] * x.ndim
    for i in range(len(pad) // 2):
        lo[x.ndim - 1 - i], hi[x.ndim - 1 - i] = int(pad[2 * i]), int(pad[2 * i + 1])
    if mode == "reflect":   # PyTorch mirrors the whole input, then crops
        return _crop(_extend(x, lo, hi, mode, value), lo, hi, pad)
    return _extend(_crop(x, lo, hi, pad), lo, hi, mode, value)


def _extend(x, lo: list, hi: list, mode: str, value):
    """`x` with the positive entries of `lo` and `hi` added to each axis in `mode`."""
    lo, hi = [max(a, 0) for a in lo], [max(b, 0) for b in hi]
    if mode == "constant":
        return ops.pad(x, lo, hi, value=0.0 if value is None else value) if any(lo) or any(hi) else x
    for axis in range(x.ndim):
        if lo[axis] or hi[axis]:
            x = _extend_axis(x, axis, lo[axis], hi[axis], mode)
    return x


def _check_edge_mode(x, pad, mode: str, value) -> None:
    """PyTorch's limits for the non-constant modes: 1-3 padded axes of a (C, *) or (N, C, *) input."""
    axes = len(pad) // 2
    if not 1 <= axes <= 3 or x.ndim not in (axes + 1, axes + 2):
        raise ShapeError(f"pad: mode={mode!r} pads the last 1, 2 or 3 axes of an input with one or two more "
                         f"axes; got {len(pad)} padding values for a {x.ndim}-D input")
    if value is not None and value != 0:
        raise ShapeError(f"pad: mode={mode!r} takes no fill value, got value={value!r}")


def _crop(x, lo: list, hi: list, pad):
    """Remove what negative padding takes off each side."""
    starts = tuple(max(-a, 0) for a in lo)
    stops = tuple(n - max(-b, 0) for n, b in zip(x.shape, hi))
    if any(b < a for a, b in zip(starts, stops)):
        raise ShapeError(f"pad: negative padding {tuple(pad)} removes more than the whole input of shape {x.shape}")
    if starts != (0,) * x.ndim or stops != tuple(x.shape):
        x = ops.slice_(x, starts, stops)
    return x


def _extend_axis(x, axis: int, lo: int, hi: int, mode: str):
    """`x` with `lo` and `hi` elements added along `axis` by reflecting, replicating or wrapping."""
    n = x.shape[axis]
    limit = n - 1 if mode == "reflect" else n
    if max(lo, hi) > limit or n == 0:
        rule = "smaller than" if mode == "reflect" else "at most"
        raise ShapeError(f"pad: mode={mode!r} needs padding {rule} the axis it pads, got padding ({lo}, {hi}) "
                         f"for axis {axis} of size {n} (input shape {x.shape})")
    if mode == "reflect":
        before = [_axis_slice(x, axis, i, i + 1) for i in range(lo, 0, -1)]
        after = [_axis_slice(x, axis, i, i + 1) for i in range(n - 2, n - 2 - hi, -1)]
    elif mode == "replicate":
        before = [_repeat_along(_axis_slice(x, axis, 0, 1), axis, lo)] if lo else []
        after = [_repeat_along(_axis_slice(x, axis, n - 1, n), axis, hi)] if hi else []
    else:
        before = [_axis_slice(x, axis, n - lo, n)] if lo else []
        after = [_axis_slice(x, axis, 0, hi)] if hi else []
    return ops.concat(before + [x] + after, axis)


def _repeat_along(edge, axis: int, count: int):
    return ops.broadcast_to(edge, tuple(count if d == axis else n for d, n in enumerate(edge.shape)))


# ----------------------------------------------------------------------------------------------
# Resampling: interpolate (one `resample` per spatial axis), pixel_shuffle / pixel_unshuffle

INTERPOLATE_RANKS = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _per_axis(value, rank: int, what: str, kind, owner: str = "F.interpolate") -> tuple:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank
    if len(values) != rank or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise ShapeError(f"{owner}: expected {what} as one number or {rank} of them (one per spatial axis), got {value!r}")
    return values


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """PyTorch's F.interpolate for (N, C, *spatial) inputs with 1 to 3 spatial axes."""
    x = _require_tensor(input, "F.interpolate")
    rank = x.ndim - 2
    if mode not in ("nearest", "nearest-exact", *INTERPOLATE_RANKS):
        raise ShapeError(f"F.interpolate: mode must be one of 'nearest', 'nearest-exact', 'linear', 'bilinear', "
                         f"'trilinear', got {mode!r}")
    if not 1 <= rank <= 3 or INTERPOLATE_RANKS.get(mode, rank) != rank:
        wanted = f"a {INTERPOLATE_RANKS[mode] + 2}-D" if mode in INTERPOLATE_RANKS else "a 3-D, 4-D or 5-D"
        raise ShapeError(f"F.interpolate: mode {mode!r} expects {wanted} input (N, C, *spatial), got shape {x.shape}")
    if align_corners is not None and mode not in INTERPOLATE_RANKS:
        raise ShapeError(f"F.interpolate: align_corners can only be set with the interpolating modes "
                         f"'linear', 'bilinear', 'trilinear', not with mode {mode!r}")
    if antialias:
        raise ShapeError(f"F.interpolate: antialias=True is not supported (mode {mode!r})")
    if (size is None) == (scale_factor is None):
        raise ShapeError("F.interpolate: give exactly one of size and scale_factor, "
                         f"got size={size!r} and scale_factor={scale_factor!r}")
    in_sp = x.shape[2:]
    if size is not None:
        out_sp, scales = _per_axis(size, rank, "size", numbers.Integral), (None,) * rank
        if min(out_sp) < 1:
            raise ShapeError(f"F.interpolate: size must be positive, got {size!r}")
    else:
        factors = _per_axis(scale_factor, rank, "scale_factor", numbers.Real)
        out_sp = tuple(math.floor(n * float(f)) for n, f in zip(in_sp, factors))
        if min(out_sp) < 1:
            raise ShapeError(f"F.interpolate: scale_factor {scale_factor!r} makes an empty output from input shape {x.shape}")
        scales = (None,) * rank if recompute_scale_factor else tuple(1.0 / float(f) for f in factors)
    axis_mode = "linear" if mode in INTERPOLATE_RANKS else mode
    for axis, (m, scale) in enumerate(zip(out_sp, scales), start=2):
        x = ops.resample(x, axis=axis, size=int(m), mode=axis_mode, align_corners=bool(align_corners), scale=scale)
    return x


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    return interpolate(input, size, scale_factor, mode, align_corners)


def _shuffle_factor(x, factor, owner: str) -> int:
    if not isinstance(factor, numbers.Integral) or isinstance(factor, bool) or factor < 1:
        raise ShapeError(f"{owner}: expected a positive int factor, got {factor!r}")
    if x.ndim < 3:
        raise ShapeError(f"{owner}: expected an input of at least 3 dimensions (*, C, H, W), got shape {x.shape}")
    return int(factor)


def pixel_shuffle(input, upscale_factor):
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r)."""
    x = _require_tensor(input, "pixel_shuffle")
    r = _shuffle_factor(x, upscale_factor, "pixel_shuffle")
    *batch, c, h, w = x.shape
    if c % (r * r):
        raise ShapeError(f"pixel_shuffle: channels {c} are not divisible by upscale_factor squared ({r * r})")
    lead = len(batch)
    x = x.reshape((*batch, c // (r * r), r, r, h, w))
    x = x.permute(*range(lead), lead, lead + 3, lead + 1, lead + 4, lead + 2)
    return x.reshape((*batch, c // (r * r), h * r, w * r))


def pixel_unshuffle(input, downscale_factor):
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W)."""
    x = _require_tensor(input, "pixel_unshuffle")
    r = _shuffle_factor(x, downscale_factor, "pixel_unshuffle")
    *batch, c, h, w = x.shape
    if h % r or w % r:
        raise ShapeError(f"pixel_unshuffle: height {h} and width {w} must be divisible by downscale_factor {r}")
    lead = len(batch)
    x = x.reshape((*batch, c, h // r, r, w // r, r))
    x = x.permute(*range(lead), lead, lead + 2, lead + 4, lead + 1, lead + 3)
    return x.reshape((*batch, c * r * r, h // r, w // r))


# ----------------------------------------------------------------------------------------------
# Losses


def _reduce_loss(loss: Tensor, reduction: str, owner: str) -> Tensor:
    if reduction == "mean":
        return ops.mean(loss)
    if reduction == "sum":
        return ops.sum_(loss)
    if reduction == "none":
        return loss
    raise ShapeError(f"{owner}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _pair(input, target, owner: str) -> tuple:
    """A loss's floating input and its target of the same shape (cast to the input's dtype)."""
    input, target = _require_tensor(input, owner), _require_tensor(target, owner, "target")
    if not input.dtype.is_floating:
        raise DTypeError(f"{owner}: expected a floating-point input, got {input.dtype}")
    if input.shape != target.shape:
        raise ShapeError(f"{owner}: expected target of the input's shape {input.shape}, got {target.shape}")
    return input, target.to(input.dtype)


def mse_loss(input, target, reduction="mean"):
    """Mean squared error (input - target)**2, reduced by `reduction` ('mean', 'sum' or 'none')."""
    input, target = _pair(input, target, "mse_loss")
    diff = ops.sub(input, target)
    return _reduce_loss(ops.mul(diff, diff), reduction, "mse_loss")


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error |input - target|; its gradient at a zero difference is 0."""
    input, target = _pair(input, target, "l1_loss")
    return _reduce_loss(ops.abs_(ops.sub(input, target)), reduction, "l1_loss")


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """0.5 d**2 / beta where |d| < beta, else |d| - 0.5 beta (d = input - target); beta=0 is l1_loss."""
    input, target = _pair(input, target, "smooth_l1_loss")
    if not isinstance(beta, numbers.Real) or beta < 0:
        raise ShapeError(f"smooth_l1_loss: beta must be a non-negative number, got {beta!r}")
    size = ops.abs_(ops.sub(input, target))
    if beta == 0:
        return _reduce_loss(size, reduction, "smooth_l1_loss")
    loss = ops.where(ops.lt(size, beta), ops.mul(ops.mul(size, size), 0.5 / beta), ops.sub(size, 0.5 * beta))
    return _reduce_loss(loss, reduction, "smooth_l1_loss")


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-weight * (t log p + (1 - t) log(1 - p)) of probabilities p in [0, 1]; each log is clamped at
    -100, so p = 0 or 1 gives a finite loss (and a zero gradient through the clamped log)."""
    p, target = _pair(input, target, "binary_cross_entropy")
    if isinstance(p, Tensor) and np.any(~((p.data >= 0) & (p.data <= 1))):
        raise ShapeError(f"binary_cross_entropy: expected input probabilities in [0, 1], got values in "
                         f"[{np.nanmin(p.data)}, {np.nanmax(p.data)}]")
    log_p, log_q = _clamped_log(p), _clamped_log(ops.sub(1.0, p))
    loss = ops.neg(ops.add(ops.mul(target, log_p), ops.mul(ops.sub(1.0, target), log_q)))
    return _reduce_loss(_weighted(loss, weight, "binary_cross_entropy"), reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """binary_cross_entropy of sigmoid(input), computed stably from the logits:
    (1 - t) x + (1 + (pos_weight - 1) t) softplus(-x); pos_weight scales the positive term per class
    (it broadcasts against the last axis)."""
    x, target = _pair(input, target, "binary_cross_entropy_with_logits")
    owner = "binary_cross_entropy_with_logits"
    positive = target if pos_weight is None else ops.mul(target, _broadcastable(pos_weight, x.shape, "pos_weight", owner))
    scale = ops.add(ops.sub(positive, target), 1.0)
    softplus_of_minus_x = ops.softplus(ops.neg(x), 1.0, _SOFTPLUS_LINEAR_FROM)
    loss = ops.add(ops.mul(ops.sub(1.0, target), x), ops.mul(scale, softplus_of_minus_x))
    return _reduce_loss(_weighted(loss, weight, owner), reduction, owner)


#: Above this, softplus(z) = z to within float64 rounding (log(1 + e**-40) < 5e-18).
_SOFTPLUS_LINEAR_FROM = 40.0


def _clamped_log(p):
    """max(log(p), -100), with a finite (zero) gradient where p = 0."""
    positive = ops.gt(p, 0.0)
    return ops.clamp(ops.where(positive, ops.log(ops.where(positive, p, 1.0)), -100.0), -100.0, None)


def _weighted(loss, weight, owner: str):
    return loss if weight is None else ops.mul(loss, _broadcastable(weight, loss.shape, "weight", owner))


def _broadcastable(value, shape: tuple, what: str, owner: str):
    """`value` (a tensor) after checking that it broadcasts to `shape` without growing it."""
    value = _require_tensor(value, owner, what)
    try:
        fits = np.broadcast_shapes(value.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"{owner}: expected a {what} that broadcasts to the input's shape {shape}, got {value.shape}")
    return value


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross entropy of logits (N, C, *d) or (C,) against class indices (N, *d) (int64) or class
    probabilities of the input's shape. `label_smoothing` e mixes the target with the uniform
    distribution: (1 - e) target + e / C."""
    input = _require_tensor(input, "cross_entropy")
    if not isinstance(label_smoothing, numbers.Real) or not 0.0 <= label_smoothing <= 1.0:
        raise ShapeError(f"cross_entropy: label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    return _log_likelihood_loss(ops.log_softmax(input, 1 if input.ndim > 1 else 0), target, weight, ignore_index,
                                reduction, "cross_entropy", float(label_smoothing))


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log likelihood of log-probabilities (N, C, *d) or (C,) (see cross_entropy)."""
    return _log_likelihood_loss(input, target, weight, ignore_index, reduction, "nll_loss", 0.0)


def _log_likelihood_loss(logp, target, weight, ignore_index, reduction, owner: str, label_smoothing: float):
    logp = _require_tensor(logp, owner)
    target = _require_tensor(target, owner, "target")
    if logp.ndim == 1:
        logp, target = logp.unsqueeze(0), target.unsqueeze(0)
    if logp.ndim < 2:
        raise ShapeError(f"{owner}: expected input of shape (N, C, ...) or (C,), got {logp.shape}")
    classes = logp.shape[1]
    class_weight = _class_weight(weight, classes, logp, owner)
    if target.dtype.is_floating:
        if target.shape != logp.shape:
            raise ShapeError(f"{owner}: expected probability targets of the input's shape {logp.shape}, got {target.shape}")
        if label_smoothing:
            target = ops.add(ops.mul(target, 1.0 - label_smoothing), label_smoothing / classes)
        per_class = ops.mul(target, class_weight) if class_weight is not None else target
        loss = ops.neg(ops.sum_(ops.mul(logp, per_class), 1))
        return _reduce_loss(loss, reduction, owner)
    if target.dtype != int64:
        raise DTypeError(f"{owner}: expected int64 class indices or floating class probabilities as target, "
                         f"got {target.dtype}")
    if target.shape != logp.shape[:1] + logp.shape[2:]:
        raise ShapeError(f"{owner}: expected int64 class indices of shape {logp.shape[:1] + logp.shape[2:]}, "
                         f"got {target.dtype} of shape {target.shape}")
    if isinstance(target, Tensor):
        _check_class_indices(target.data, ignore_index, classes, owner)
    valid = ops.ne(target, ignore_index)
    chosen = ops.one_hot(ops.where(valid, target, 0), classes)         # (N, *d, C)
    valid_mask = ops.cast(ops.reshape(valid, target.shape[:1] + (1,) + target.shape[1:]), logp.dtype)
    picks = ops.mul(ops.permute(chosen, (0, logp.ndim - 1) + tuple(range(1, logp.ndim - 1))), valid_mask)
    if class_weight is not None:
        picks = ops.mul(picks, class_weight)
    picks = ops.cast(picks, logp.dtype)
    mixed = picks
    if label_smoothing:
        uniform = ops.mul(valid_mask, class_weight) if class_weight is not None else valid_mask
        mixed = ops.add(ops.mul(picks, 1.0 - label_smoothing), ops.mul(uniform, label_smoothing / classes))
    loss = ops.neg(ops.sum_(ops.mul(logp, mixed), 1))
    if reduction == "mean":
        return ops.div(ops.sum_(loss), ops.sum_(picks))
    return _reduce_loss(loss, reduction, owner)


def _check_class_indices(labels: np.ndarray, ignore_index: int, classes: int, owner: str) -> None:
    valid = labels != ignore_index
    if np.any((labels[valid] < 0) | (labels[valid] >= classes)):
        raise ShapeError(f"{owner}: class indices must lie in [0, {classes}), got values in "
                         f"[{labels[valid].min()}, {labels[valid].max()}]")


def _class_weight(weight, classes: int, logp: Tensor, owner: str):
    if weight is None:
        return None
    weight = _require_tensor(weight, owner, "weight")
    if weight.shape != (classes,):
        raise ShapeError(f"{owner}: expected a class weight of shape ({classes},), got {weight.shape}")
    return ops.reshape(weight, (1, classes) + (1,) * (logp.ndim - 2))
