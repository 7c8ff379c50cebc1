"""`SyncBatchNorm`: BatchNorm whose training statistics are those of the batch of every rank together.

In training, when `lucid.distributed` is initialised with more than one rank, each rank computes its
per-channel (count, mean, M2 = sum of squared deviations from its mean), the ranks exchange them
(one all_gather of 3 x C values) and each combines them in rank order with Chan et al.'s pairwise
formula (M2 = sum of M2_r + sum of n_r (mean_r - mean)^2), which stays accurate where
E[x^2] - E[x]^2 cancels. The input is normalised with the global mean and biased variance; the
running statistics take the global mean and unbiased variance (as PyTorch). The backward allreduces
the per-channel sums of g and g * x_hat, so the input gradient is the one of the global batch; the
weight and bias gradients are this rank's sums (DistributedDataParallel averages them).

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
        rule = _SyncBatchNormRule(x.data, self.eps)
        if self.track_running_stats:
            rule.update_running(self.running_mean, self.running_var, float(momentum))
        weight = self.weight if self.weight is not None else Tensor(np.ones(self.num_features), dtype=x.dtype)
        bias = self.bias if self.bias is not None else Tensor(np.zeros(self.num_features), dtype=x.dtype)
        return rule.apply(x, weight, bias)

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


def combine_moments(counts: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> tuple:
    """(count, mean, M2) of the union of groups, from each group's (rows of the arguments; one column
    per channel): Chan, Golub and LeVeque's combination, without E[x^2] - E[x]^2."""
    count = counts.sum(axis=0)
    mean = (counts * means).sum(axis=0) / count
    return count, mean, m2s.sum(axis=0) + (counts * (means - mean) ** 2).sum(axis=0)


class _SyncBatchNormRule:
    """One synchronised batch-norm call: its global statistics, and the tape's gradient rule for it
    (the autograd Node's operator)."""

    name = "sync_batch_norm"
    differentiable = True

    def __init__(self, x: np.ndarray, eps: float):
        channels = x.shape[1]
        self.axes = (0,) + tuple(range(2, x.ndim))
        self.broadcast_shape = (1, channels) + (1,) * (x.ndim - 2)
        local = x.astype(np.float64)
        local_mean = local.mean(axis=self.axes)
        local_m2 = ((local - local_mean.reshape(self.broadcast_shape)) ** 2).sum(axis=self.axes)
        mine = np.stack([np.full(channels, x.size / channels), local_mean, local_m2])
        gathered = np.empty((distributed.get_world_size(),) + mine.shape)
        distributed.all_gather_into_tensor(gathered, mine)
        self.count, self.mean, self.m2 = combine_moments(gathered[:, 0], gathered[:, 1], gathered[:, 2])
        if self.count.min() <= 1:
            raise ShapeError(f"SyncBatchNorm: expected more than 1 value per channel over all ranks when "
                             f"training, got {int(self.count.min())}")
        self.rstd = 1.0 / np.sqrt(self.m2 / self.count + eps)
        self.x_hat = (local - self.mean.reshape(self.broadcast_shape)) * self.rstd.reshape(self.broadcast_shape)

    def update_running(self, running_mean: Tensor, running_var: Tensor, momentum: float) -> None:
        unbiased = self.m2 / (self.count - 1)
        running_mean.data[...] = (1 - momentum) * running_mean.data + momentum * self.mean
        running_var.data[...] = (1 - momentum) * running_var.data + momentum * unbiased

    def apply(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """The normalised, scaled and shifted x, on the tape when a gradient is wanted."""
        out = self.x_hat * weight.data.reshape(self.broadcast_shape) + bias.data.reshape(self.broadcast_shape)
        inputs = (x, weight, bias)
        track = autograd.is_grad_enabled() and any(t.requires_grad for t in inputs)
        node = autograd.Node(self, {}, inputs) if track else None
        return Tensor._wrap(out.astype(x.dtype.numpy), track, node)

    def grad(self, attrs, inputs, output, grad_output) -> tuple:
        x, weight, _ = inputs
        g = grad_output.data.astype(np.float64)
        sums = np.stack([g.sum(axis=self.axes), (g * self.x_hat).sum(axis=self.axes)])
        local_bias_grad, local_weight_grad = sums.copy()
        distributed.all_reduce(sums)
        shape = self.broadcast_shape
        scale = (weight.data.astype(np.float64) * self.rstd).reshape(shape)
        x_grad = scale * (g - (sums[0] / self.count).reshape(shape) - self.x_hat * (sums[1] / self.count).reshape(shape))
        return tuple(Tensor._wrap(a.astype(t.dtype.numpy)) for a, t in
                     zip((x_grad, local_weight_grad, local_bias_grad), inputs))
