"""Dropout: dropout, dropout1d/2d/3d (whole channels), alpha_dropout and feature_alpha_dropout.

Each mask is one draw of the `random` operator (`lucid.creation.random_tensor`: eager, or a node of
the traced graph reading its generator parameter), compared with p: an element (or, channel-wise, a
whole (sample, channel) slice) is kept where its uniform number is >= p. The rest is elementwise
operators, so the backward applies the very mask of the forward (the autodiff of `where` reads the
forward's `keep`) and eager, traced and compiled code draw the same masks from the same seed.

PyTorch's semantics: not training, p = 0 or an empty input gives the input itself; p = 1 gives
input * 0; otherwise dropout scales the kept elements by 1 / (1 - p), and alpha dropout sets the
dropped ones to SELU's negative saturation -scale * alpha and applies the affine correction
a * y + b, a = ((1 - p) (1 + p alpha'^2))^-1/2, b = -a alpha' p (alpha' = -scale * alpha), which
keeps zero mean and unit variance. `inplace=True` is accepted and computes out of place.
"""
from __future__ import annotations

import warnings

from ...creation import random_tensor
from ...errors import ShapeError
from ...ir import ops, symbolic
from .activation import SELU_ALPHA, SELU_SCALE
from .arguments import require_tensor

SATURATION = -SELU_SCALE * SELU_ALPHA          # SELU's limit at -infinity, alpha' above

#: The input ranks each channel-wise dropout expects, the one read as unbatched (C, ...) (PyTorch's
#: dropout2d reads a 3-D input as (N, C, L)), and whether another rank is an error (dropout1d) or,
#: as in PyTorch, a warning (the input is then read as (N, C, ...)).
CHANNEL_RANKS = {"dropout1d": ((2, 3), 2, True), "dropout2d": ((3, 4), None, False), "dropout3d": ((4, 5), 4, False)}


def check_probability(p, owner: str) -> float:
    """p as a float; ValueError naming `owner` unless 0 <= p <= 1."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: dropout probability has to be between 0 and 1, but got {p}")
    return float(p)


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the rest by 1 / (1 - p)."""
    return _dropout(input, p, training, "dropout", channelwise=False, alpha=False)


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, L) or (C, L) inputs with probability p (scaling the rest)."""
    return _dropout(input, p, training, "dropout1d", channelwise=True, alpha=False)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, H, W) inputs with probability p (a 3-D input is read as (N, C, L))."""
    return _dropout(input, p, training, "dropout2d", channelwise=True, alpha=False)


def dropout3d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, D, H, W) or (C, D, H, W) inputs with probability p."""
    return _dropout(input, p, training, "dropout3d", channelwise=True, alpha=False)


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Dropout for SELU networks: dropped elements take SELU's saturation value, then the affine
    correction keeps the mean and variance of a standard normal input."""
    return _dropout(input, p, training, "alpha_dropout", channelwise=False, alpha=True)


def feature_alpha_dropout(input, p=0.5, training=False, inplace=False):
    """alpha_dropout of whole channels (one draw per (sample, channel))."""
    return _dropout(input, p, training, "feature_alpha_dropout", channelwise=True, alpha=True)


def _dropout(input, p, training: bool, owner: str, channelwise: bool, alpha: bool):
    x = require_tensor(input, owner)
    p = check_probability(p, owner)
    noise_shape = _channel_shape(x, owner) if channelwise else tuple(x.shape)
    if not training or p == 0.0 or symbolic.same(x.numel(), 0):
        return x
    if p == 1.0:
        return ops.mul(x, 0.0)
    keep = ops.ge(random_tensor(noise_shape, x.dtype, "uniform", owner), p)
    if not alpha:
        return ops.mul(ops.where(keep, x, 0.0), 1.0 / (1.0 - p))
    a = ((1.0 - p) * (1.0 + p * SATURATION ** 2)) ** -0.5
    return ops.add(ops.mul(ops.where(keep, x, SATURATION), a), -a * SATURATION * p)


def _channel_shape(x, owner: str) -> tuple:
    """The noise shape of channel-wise dropout: one draw per (sample, channel), broadcast over the rest."""
    ranks, unbatched, strict = CHANNEL_RANKS.get(owner, ((), None, False))
    if ranks and x.ndim not in ranks:
        message = f"{owner}: expected a {ranks[0]}-D or {ranks[1]}-D input, got shape {tuple(x.shape)}"
        if strict:
            raise ShapeError(message)
        warnings.warn(message + "; its first two axes are read as (N, C)", stacklevel=3)
    if x.ndim < 2:
        raise ShapeError(f"{owner}: expected an input with a channel axis (N, C, ...), got shape {tuple(x.shape)}")
    lead = 1 if x.ndim == unbatched else 2
    return tuple(x.shape[:lead]) + (1,) * (x.ndim - lead)
