"""`SyncBatchNorm`: BatchNorm whose training statistics are those of the batch of every rank together.

In training, when `lucid.distributed` is initialised with more than one rank, the per-channel
statistics are two-pass over the global batch, in float64: the sum of x over every rank (one
allreduce) gives the global mean, then the sum of (x - mean)^2 over every rank (a second one) the
biased variance, without E[x^2] - E[x]^2's cancellation. Each sum over ranks is a tape node whose
gradient is the sum over ranks of its output's gradient, so the input gradient is that of the global
batch; everything else is `F.batch_norm`'s own path (`normalise_batch`): the running statistics'
update with the global count and the `normalize` operator with its gradient rule. The weight and bias
gradients are this rank's (DistributedDataParallel averages them).

Otherwise (eval mode, one process, no process group) it is BatchNorm over an input of any rank >= 2.
The synchronised forward is eager only: tracing it (lucid.compile, lucid.export, lucid.trace) in
training mode on more than one rank raises a TraceError naming SyncBatchNorm.
"""
from __future__ import annotations

import numpy as np

from ... import autograd, distributed
from ...errors import ShapeError, TraceError
from ...tensor import Tensor, is_eager_tensor
from .. import functional as F
from ..module import Module
from ..functional.normalization import normalise_batch
from .normalization import _BatchNorm


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over an input (N, C, ...) of any rank >= 2, with `torch.nn.SyncBatchNorm`'s signature
    and state-dict keys, whose training statistics span every rank. `process_group` must be None
    (every rank)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        if process_group is not None:
            raise ValueError("SyncBatchNorm: process_group must be None; lucid synchronises over every rank")
        self.process_group = None

    def _check_input(self, x) -> None:
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ShapeError(f"expected an input of rank >= 2 with {self.num_features} channels in "
                             f"axis 1, got shape {x.shape}")

    def forward(self, x):
        if not (self.training and distributed.is_initialized() and distributed.get_world_size() > 1):
            return super().forward(x)
        F.require_tensor(x, "SyncBatchNorm")
        if not is_eager_tensor(x):
            raise TraceError("SyncBatchNorm: its statistics are exchanged between ranks in eager mode only, so it "
                             "cannot be traced or compiled in training mode on more than one rank; compile the "
                             "model in eval mode, or train the model eagerly (or use BatchNorm/GroupNorm)")
        self._check_input(x)
        momentum = self._count_batch()
        return normalise_batch(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                               momentum, self.eps, global_statistics)

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group=None) -> Module:
        """`module` with every BatchNorm1d/2d/3d in it replaced by a SyncBatchNorm holding the same
        parameter and buffer tensors and training flag; returns the new module if `module` itself
        is one, else `module` (changed in place)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats, process_group)
            for name in ("weight", "bias"):
                sync.register_parameter(name, module._parameters[name])
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                sync.register_buffer(name, module._buffers[name])
            sync.train(module.training)
            return sync
        for name, child in list(module.named_children()):
            module.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return module


def global_statistics(x: Tensor) -> tuple:
    """(mean, biased variance, count) of each channel of x over (N, spatial) of every rank's batch,
    two-pass in float64, differentiable through both sums over ranks."""
    axes = (0,) + tuple(range(2, x.ndim))
    per_channel = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    count = np.array(float(x.numel() // x.shape[1]))
    distributed.all_reduce(count)
    wide = x.double()
    mean = sum_over_ranks(wide.sum(axes)) / float(count)
    centred = wide - mean.reshape(per_channel)
    var = sum_over_ranks((centred * centred).sum(axes)) / float(count)
    return mean.to(x.dtype), var.to(x.dtype), int(count)


class _SumOverRanks:
    """The tape's rule of a sum over ranks: every rank's output is the same sum, so the gradient of
    each rank's input is the sum over ranks of the output's gradient."""

    name = "sum_over_ranks"
    differentiable = True

    def grad(self, attrs, inputs, output, grad_output) -> tuple:
        total = np.array(grad_output.data, copy=True)
        distributed.all_reduce(total)
        return (Tensor._wrap(total),)


_SUM_OVER_RANKS = _SumOverRanks()


def sum_over_ranks(t: Tensor) -> Tensor:
    """The elementwise sum of `t` over every rank (an allreduce), on the tape when t requires grad."""
    total = np.array(t.data, copy=True)
    distributed.all_reduce(total)
    track = autograd.is_grad_enabled() and t.requires_grad
    return Tensor._wrap(total, track, autograd.Node(_SUM_OVER_RANKS, {}, (t,)) if track else None)
