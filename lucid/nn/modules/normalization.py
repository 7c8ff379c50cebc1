"""Normalisation layers. BatchNorm1d/2d/3d: batch statistics while training (updating running ones),
running ones in eval. GroupNorm, InstanceNorm1d/2d/3d, LayerNorm, LocalResponseNorm: per-sample
statistics (InstanceNorm optionally tracks running ones)."""
from __future__ import annotations

import numbers
import warnings

import numpy as np

from ...autograd import no_grad
from ...errors import ShapeError
from ...ir import ops
from ...ir.types import as_device, as_dtype, float32, int64
from .. import functional as F
from ..module import Module
from ..parameter import Parameter
from ...tensor import Tensor
from .conv import _positive_int


def _affine_parameters(module: Module, enabled: bool, shape: tuple, dtype, bias: bool = True) -> None:
    """Register `weight` (ones) and `bias` (zeros) of `shape`, or None for each that is disabled."""
    dtype = as_dtype(dtype) if dtype is not None else float32
    module.register_parameter("weight", Parameter(np.ones(shape), dtype=dtype) if enabled else None)
    module.register_parameter("bias", Parameter(np.zeros(shape), dtype=dtype) if enabled and bias else None)


class _NormBase(Module):
    """The parameters and running-statistics buffers shared by BatchNorm and InstanceNorm."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super().__init__()
        as_device(device, type(self).__name__)
        self.num_features = _positive_int(num_features, "num_features", type(self).__name__)
        self.eps, self.momentum = float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        dtype = as_dtype(dtype) if dtype is not None else float32
        _affine_parameters(self, self.affine, (self.num_features,), dtype)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features), dtype=dtype))
            self.register_buffer("running_var", Tensor(np.ones(num_features), dtype=dtype))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0), dtype=int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    #: Accepted input ranks.
    ranks: tuple = ()

    def _check_input(self, x) -> None:
        if x.ndim not in self.ranks or x.shape[1] != self.num_features:
            raise ShapeError(f"expected a {' or '.join(f'{r}-D' for r in self.ranks)} input with "
                             f"{self.num_features} channels in axis 1, got shape {x.shape}")

    def forward(self, x):
        F.require_tensor(x, type(self).__name__)
        self._check_input(x)
        momentum = self._count_batch()
        # Untracked statistics are None, so batch statistics are used in eval mode too.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats, momentum, self.eps)

    def _count_batch(self):
        """In training with running statistics, count the batch in `num_batches_tracked`; the momentum
        of this batch's running-statistics update (1 / batches for the cumulative average, momentum=None)."""
        momentum = self.momentum
        if self.training and self.track_running_stats:
            with no_grad():
                batches = self.num_batches_tracked + 1
            F.assign_state(self.num_batches_tracked, batches)
            if momentum is None:      # cumulative moving average
                momentum = ops.div(1.0, batches)
        return momentum


class BatchNorm1d(_BatchNorm):
    ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    ranks = (4,)


class BatchNorm3d(_BatchNorm):
    ranks = (5,)


class GroupNorm(Module):
    """Normalise each of `num_groups` channel groups of each sample (over its channels and positions),
    then scale and shift per channel."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None):
        super().__init__()
        as_device(device, "GroupNorm")
        self.num_groups = _positive_int(num_groups, "num_groups", "GroupNorm")
        self.num_channels = _positive_int(num_channels, "num_channels", "GroupNorm")
        if self.num_channels % self.num_groups:
            raise ShapeError(f"GroupNorm: num_channels={num_channels} is not divisible by num_groups={num_groups}")
        self.eps, self.affine = float(eps), bool(affine)
        _affine_parameters(self, self.affine, (self.num_channels,), dtype)

    def forward(self, x):
        F.require_tensor(x, "GroupNorm")
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ShapeError(f"GroupNorm: expected an input of rank >= 2 with {self.num_channels} channels "
                             f"in axis 1, got shape {x.shape}")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(_NormBase):
    """Per-sample, per-channel statistics; running ones (tracked when asked) are used in eval mode.
    An unbatched input (C, *spatial) is accepted. `num_batches_tracked` is kept but not counted, as
    in PyTorch."""

    #: Number of spatial axes.
    spatial: int = 0

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False,
                 device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def forward(self, x):
        name = type(self).__name__
        x, added = F.batched(x, self.spatial, name)
        if x.shape[1] != self.num_features:
            if self.affine or self.track_running_stats:
                raise ShapeError(f"{name}: expected {self.num_features} channels in axis 1 (num_features), "
                                 f"got shape {x.shape}")
            warnings.warn(f"{name}: input has {x.shape[1]} channels but num_features={self.num_features}; "
                          "the statistics are per input channel", stacklevel=2)
        momentum = 0.0 if self.momentum is None else self.momentum
        y = F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats, momentum, self.eps)
        return F.unbatch(y, added)


class InstanceNorm1d(_InstanceNorm):
    spatial = 1


class InstanceNorm2d(_InstanceNorm):
    spatial = 2


class InstanceNorm3d(_InstanceNorm):
    spatial = 3


class LayerNorm(Module):
    """Normalise over the last len(normalized_shape) axes, then scale and shift elementwise."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        as_device(device, "LayerNorm")
        shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
        self.normalized_shape = tuple(_positive_int(n, "normalized_shape", "LayerNorm") for n in shape)
        if not self.normalized_shape:
            raise ShapeError("LayerNorm: normalized_shape must name at least one axis")
        self.eps, self.elementwise_affine = float(eps), bool(elementwise_affine)
        _affine_parameters(self, self.elementwise_affine, self.normalized_shape, dtype, bias)

    def forward(self, x):
        F.require_tensor(x, "LayerNorm")
        rank = len(self.normalized_shape)
        if x.ndim < rank or tuple(x.shape[x.ndim - rank:]) != self.normalized_shape:
            raise ShapeError(f"LayerNorm: expected an input whose last axes are normalized_shape="
                             f"{self.normalized_shape}, got shape {x.shape}")
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class LocalResponseNorm(Module):
    """x / (k + alpha * mean of x^2 over `size` neighbouring channels)^beta."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size = _positive_int(size, "size", "LocalResponseNorm")
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def forward(self, x):
        F.require_tensor(x, "LocalResponseNorm")
        if x.ndim < 3:
            raise ShapeError(f"LocalResponseNorm: expected an input of rank >= 3 (N, C, ...), got shape {x.shape}")
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
