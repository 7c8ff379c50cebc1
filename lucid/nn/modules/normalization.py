"""BatchNorm1d/2d/3d: batch statistics while training (updating running ones), running ones in eval."""
from __future__ import annotations

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


class _BatchNorm(Module):
    #: Accepted input ranks.
    ranks: tuple = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super().__init__()
        as_device(device, type(self).__name__)
        self.num_features = _positive_int(num_features, "num_features", type(self).__name__)
        self.eps, self.momentum = float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        dtype = as_dtype(dtype) if dtype is not None else float32
        if self.affine:
            self.weight = Parameter(np.ones(num_features), dtype=dtype)
            self.bias = Parameter(np.zeros(num_features), dtype=dtype)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features), dtype=dtype))
            self.register_buffer("running_var", Tensor(np.ones(num_features), dtype=dtype))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0), dtype=int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def _check_input(self, x) -> None:
        if x.ndim not in self.ranks or x.shape[1] != self.num_features:
            raise ShapeError(f"expected a {' or '.join(f'{r}-D' for r in self.ranks)} input with "
                             f"{self.num_features} channels in axis 1, got shape {x.shape}")

    def forward(self, x):
        F._require_tensor(x, type(self).__name__)
        self._check_input(x)
        momentum = self.momentum
        if self.training and self.track_running_stats:
            with no_grad():
                batches = self.num_batches_tracked + 1
            F.assign_state(self.num_batches_tracked, batches)
            if momentum is None:      # cumulative moving average
                momentum = ops.div(1.0, batches)
        # Untracked statistics are None, so batch statistics are used in eval mode too.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats, momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    ranks = (4,)


class BatchNorm3d(_BatchNorm):
    ranks = (5,)
