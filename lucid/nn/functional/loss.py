"""Losses, with PyTorch's `reduction=`."""
from __future__ import annotations

import numbers

import numpy as np

from ...errors import DTypeError, ShapeError
from ...ir import ops
from ...ir.types import int64
from ...tensor import Tensor, is_eager_tensor
from .arguments import require_tensor



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
    input, target = require_tensor(input, owner), require_tensor(target, owner, "target")
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
    if is_eager_tensor(p) and np.any(~((p.data >= 0) & (p.data <= 1))):
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
    value = require_tensor(value, owner, what)
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
    input = require_tensor(input, "cross_entropy")
    if not isinstance(label_smoothing, numbers.Real) or not 0.0 <= label_smoothing <= 1.0:
        raise ShapeError(f"cross_entropy: label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    return _log_likelihood_loss(ops.log_softmax(input, 1 if input.ndim > 1 else 0), target, weight, ignore_index,
                                reduction, "cross_entropy", float(label_smoothing))


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log likelihood of log-probabilities (N, C, *d) or (C,) (see cross_entropy)."""
    return _log_likelihood_loss(input, target, weight, ignore_index, reduction, "nll_loss", 0.0)


def _log_likelihood_loss(logp, target, weight, ignore_index, reduction, owner: str, label_smoothing: float):
    logp = require_tensor(logp, owner)
    target = require_tensor(target, owner, "target")
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
    if is_eager_tensor(target):
        _check_class_indices(target.data, ignore_index, classes, owner)
    valid = ops.reshape(ops.ne(target, ignore_index), target.shape[:1] + (1,) + target.shape[1:])   # (N, 1, *d)
    labels = ops.where(valid, ops.reshape(target, valid.shape), -1)                 # -1: no class
    class_axis = np.arange(classes, dtype=np.int64).reshape((1, classes) + (1,) * (logp.ndim - 2))
    picks = ops.cast(ops.eq(labels, class_axis), logp.dtype)                        # (N, C, *d): 1 at the target
    if class_weight is not None:
        picks = ops.cast(ops.mul(picks, class_weight), logp.dtype)
    mixed = picks
    if label_smoothing:
        valid_mask = ops.cast(valid, logp.dtype)
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
    weight = require_tensor(weight, owner, "weight")
    if weight.shape != (classes,):
        raise ShapeError(f"{owner}: expected a class weight of shape ({classes},), got {weight.shape}")
    return ops.reshape(weight, (1, classes) + (1,) * (logp.ndim - 2))
