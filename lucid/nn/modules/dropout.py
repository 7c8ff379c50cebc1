"""Dropout layers: Dropout, Dropout1d/2d/3d (whole channels), AlphaDropout and FeatureAlphaDropout.

Each calls its function in `lucid.nn.functional` (`functional/dropout.py`) with the layer's training
flag: in training mode a fresh mask per call from lucid's generator (eager or compiled alike), in eval
mode the identity, so inference and exported graphs hold no random operator. `inplace=True` is
accepted and computes out of place.
"""
from __future__ import annotations

from .. import functional as F
from ..module import Module


class _Dropout(Module):
    """A dropout layer: probability p (checked here, naming the layer) and the `inplace` flag."""

    function = staticmethod(F.dropout)

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        self.p = F.check_probability(p, type(self).__name__)
        self.inplace = bool(inplace)

    def forward(self, x):
        return type(self).function(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_Dropout):
    """Zeroes elements with probability p while training, scaling the rest by 1 / (1 - p)."""


class Dropout1d(_Dropout):
    """Zeroes whole channels of (N, C, L) or (C, L) inputs with probability p while training."""

    function = staticmethod(F.dropout1d)


class Dropout2d(_Dropout):
    """Zeroes whole channels of (N, C, H, W) inputs with probability p while training."""

    function = staticmethod(F.dropout2d)


class Dropout3d(_Dropout):
    """Zeroes whole channels of (N, C, D, H, W) or (C, D, H, W) inputs with probability p while training."""

    function = staticmethod(F.dropout3d)


class AlphaDropout(_Dropout):
    """Dropout for SELU networks: keeps a standard normal input's mean and variance."""

    function = staticmethod(F.alpha_dropout)


class FeatureAlphaDropout(_Dropout):
    """AlphaDropout of whole channels."""

    function = staticmethod(F.feature_alpha_dropout)
