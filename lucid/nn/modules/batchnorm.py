"""The batch normalisation layers under ``lucid.nn.modules.batchnorm`` (as ``torch.nn.modules.batchnorm``),
and ``SyncBatchNorm`` (syncbatchnorm.py)."""
from __future__ import annotations

from .normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .syncbatchnorm import SyncBatchNorm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"]
