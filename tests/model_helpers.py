"""Helpers shared by tests that build models."""
from __future__ import annotations

import numpy as np

import lucid.nn as nn


def randomise_batch_norm(model, seed=7):
    """Give every BatchNorm non-trivial affine parameters and running statistics, so that eval mode
    does more than divide by sqrt(1 + eps)."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            n = module.num_features
            module.weight.data[...] = rng.uniform(0.5, 1.5, n)
            module.bias.data[...] = rng.normal(0, 0.2, n)
            module.running_mean.data[...] = rng.normal(0, 0.2, n)
            module.running_var.data[...] = rng.uniform(0.5, 2.0, n)
            module.num_batches_tracked.data[...] = 3
    return model
