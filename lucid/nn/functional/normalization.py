"""Normalisation: batch, group, instance, layer and local response norm, and the state updates of
running statistics."""
from __future__ import annotations

import numbers

from ...autograd import no_grad
from ...errors import ShapeError
from ...ir import ops, symbolic
from ...ir.graph import Value, active_builder
from ...tensor import Tensor
from .arguments import require_tensor


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalise each channel (axis 1) over every other axis. In training, batch statistics are used:
    one `moments` over (N, spatial) (and the running ones, when given, are updated in place with the
    unbiased variance); in eval mode the running ones."""
    return normalise_batch(input, running_mean, running_var, weight, bias, training, momentum, eps, batch_statistics)


def batch_statistics(x) -> tuple:
    """(mean, biased variance, count) of each channel of x over (N, spatial): one `moments`."""
    mean, var = ops.split_moments(ops.moments(x, (0,) + tuple(range(2, x.ndim))))
    return mean, var, x.numel() // max(x.shape[1], 1)


def normalise_batch(input, running_mean, running_var, weight, bias, training, momentum, eps, statistics):
    """`batch_norm` with the training statistics `statistics(x) -> (mean, var, count)` (this batch's,
    or SyncBatchNorm's over every rank's batch)."""
    x = require_tensor(input, "batch_norm")
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: expected an input of rank >= 2 (N, C, ...), got shape {x.shape}")
    channels = x.shape[1]
    for v, what in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"), (bias, "bias")):
        _check_channel_vector(v, channels, what, "batch_norm")
    if training:
        mean, var, count = statistics(x)
        if count <= 1:
            raise ShapeError(f"batch_norm: expected more than 1 value per channel when training, got {count} "
                             f"(input of shape {x.shape})")
        if running_mean is not None and running_var is not None:
            _update_running(running_mean, running_var, mean, var, count, momentum)
    else:
        if running_mean is None or running_var is None:
            raise ShapeError("batch_norm: running_mean and running_var are required in eval mode")
        mean, var = running_mean, running_var
    per_channel = lambda v: _channel_vector(v, x.ndim)
    return _normalise(x, per_channel(mean), per_channel(_rstd(var, eps)), per_channel(weight), per_channel(bias))


def _update_running(running_mean, running_var, mean, var, count, momentum):
    with no_grad():
        if symbolic.is_symbolic(count):      # n / (n - 1) computed per call
            unbiased = ops.div(ops.mul(var, ops.size_value(var, count)), ops.size_value(var, count - 1))
        else:
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


# Batch, group, instance and layer normalisation: the statistics are one `moments` operator (over
# (N, spatial) per channel, or over a view of x whose rows are the normalised groups: one pass over
# x, one kernel), and the
# normalise-scale-shift is one elementwise `normalize` operator of the input's shape, so fusion makes
# it one loop together with a following activation. Gradients come from the operators' own rules.

def _normalise(x, mean, rstd, weight, bias):
    """(x - mean) * rstd [* weight] [+ bias], every operand broadcastable to x's shape."""
    return ops.normalize(x, mean, rstd, 1.0 if weight is None else weight, 0.0 if bias is None else bias)


def _rstd(var, eps: float):
    return ops.pow_scalar(ops.add(var, eps), -0.5)


def _group_statistics(x, groups: int, eps: float) -> tuple:
    """Mean and rstd of each (sample, group) of x (N, C, *), spread to shape (N, C, 1...), and the
    biased (mean, var) per (sample, group) as (N, groups)."""
    n, c = x.shape[0], x.shape[1]
    if groups == c:       # x's own axes: the gradient's normalize has x's shape and fuses with the rest
        mean, var = ops.split_moments(ops.moments(x, tuple(range(2, x.ndim))))
    else:
        mean, var = ops.split_moments(ops.moments(ops.reshape(x, (n, groups, -1))))
    per_channel = (n, c) + (1,) * (x.ndim - 2)
    spread = lambda s: ops.reshape(ops.broadcast_to(ops.reshape(s, (n, groups, 1)), (n, groups, c // groups)),
                                   per_channel)
    return spread(mean), spread(_rstd(var, eps)), mean, var


def _channel_vector(v, ndim: int):
    return None if v is None else ops.reshape(v, (1, -1) + (1,) * (ndim - 2))


def _check_channel_vector(v, channels: int, what: str, owner: str) -> None:
    if v is not None and tuple(require_tensor(v, owner, what).shape) != (channels,):
        raise ShapeError(f"{owner}: expected {what} of shape ({channels},), got {tuple(v.shape)}")


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise each group of num_groups channel groups of each sample over its channels and
    spatial positions, then scale and shift per channel."""
    x = require_tensor(input, "group_norm")
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
    x = require_tensor(input, "instance_norm")
    if x.ndim < 3:
        raise ShapeError(f"instance_norm: expected an input of rank >= 3 (N, C, ...), got shape {x.shape}")
    channels = x.shape[1]
    for v, what in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"), (bias, "bias")):
        _check_channel_vector(v, channels, what, "instance_norm")
    weight, bias = _channel_vector(weight, x.ndim), _channel_vector(bias, x.ndim)
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ShapeError("instance_norm: running_mean and running_var are required when use_input_stats=False")
        return _normalise(x, _channel_vector(running_mean, x.ndim), _channel_vector(_rstd(running_var, eps), x.ndim),
                          weight, bias)
    count = x.numel() // max(x.shape[0] * channels, 1)
    if count <= 1:
        raise ShapeError(f"instance_norm: expected more than 1 spatial element when training, got input of shape {x.shape}")
    mean, rstd, group_mean, group_var = _group_statistics(x, channels, eps)
    if running_mean is not None and running_var is not None:
        batch_mean = lambda s: ops.mean(s, 0)
        _update_running(running_mean, running_var, batch_mean(group_mean), batch_mean(group_var), count, momentum)
    return _normalise(x, mean, rstd, weight, bias)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last len(normalized_shape) axes, then scale and shift elementwise."""
    x = require_tensor(input, "layer_norm")
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    if not shape or len(shape) > x.ndim or tuple(x.shape[x.ndim - len(shape):]) != shape:
        raise ShapeError(f"layer_norm: expected an input whose last axes are normalized_shape={shape}, "
                         f"got shape {x.shape}")
    for v, what in ((weight, "weight"), (bias, "bias")):
        if v is not None and tuple(require_tensor(v, "layer_norm", what).shape) != shape:
            raise ShapeError(f"layer_norm: expected {what} of shape {shape}, got {tuple(v.shape)}")
    lead = tuple(x.shape[:x.ndim - len(shape)])
    mean, var = ops.split_moments(ops.moments(ops.reshape(x, lead + (-1,))))
    column = lead + (1,) * len(shape)
    return _normalise(x, ops.reshape(mean, column), ops.reshape(_rstd(var, eps), column), weight, bias)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """x / (k + alpha * mean of x^2 over `size` neighbouring channels)^beta; the window is centred
    (size // 2 channels before) and zero-padded, the mean always divides by `size`."""
    x = require_tensor(input, "local_response_norm")
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
