"""The batch normalisation layers under ``lucid.nn.modules.batchnorm`` (as ``torch.nn.modules.batchnorm``),
and ``SyncBatchNorm``."""
from __future__ import annotations

from ...errors import ShapeError
from ..module import Module
from .normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d, _BatchNorm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"]


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over an input of any rank >= 2 (N, C, ...), with ``torch.nn.SyncBatchNorm``'s
    signature and state-dict keys. lucid runs in one process, so the statistics are this process's
    batch's: the layer equals BatchNorm1d/2d/3d. It will average them across processes once
    ``lucid.distributed`` exists; `process_group` is accepted for that and unused today."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def _check_input(self, x) -> None:
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ShapeError(f"expected an input of rank >= 2 with {self.num_features} channels in "
                             f"axis 1, got shape {x.shape}")

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
