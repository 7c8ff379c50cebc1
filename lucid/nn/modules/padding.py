"""Padding layers: ConstantPad, ZeroPad, ReflectionPad, ReplicationPad and CircularPad in 1-D, 2-D and 3-D.

Each applies `F.pad` with its mode; `padding` is an int (every side) or 2 * rank ints, last axis first.
"""
from __future__ import annotations

from .. import functional as F
from ..module import Module


class _PadNd(Module):
    rank = 0
    mode = ""

    def __init__(self, padding):
        super().__init__()
        self.padding = F.ntuple(padding, 2 * self.rank, "padding", type(self).__name__)

    def forward(self, x):
        return F.pad(x, self.padding, self.mode)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    mode = "constant"

    def __init__(self, padding, value):
        super().__init__(padding)
        self.value = value

    def forward(self, x):
        return F.pad(x, self.padding, "constant", self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class _ZeroPadNd(_ConstantPadNd):
    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ConstantPad1d(_ConstantPadNd):
    rank = 1


class ConstantPad2d(_ConstantPadNd):
    rank = 2


class ConstantPad3d(_ConstantPadNd):
    rank = 3


class ZeroPad1d(_ZeroPadNd):
    rank = 1


class ZeroPad2d(_ZeroPadNd):
    rank = 2


class ZeroPad3d(_ZeroPadNd):
    rank = 3


class ReflectionPad1d(_PadNd):
    rank, mode = 1, "reflect"


class ReflectionPad2d(ReflectionPad1d):
    rank = 2


class ReflectionPad3d(ReflectionPad1d):
    rank = 3


class ReplicationPad1d(_PadNd):
    rank, mode = 1, "replicate"


class ReplicationPad2d(ReplicationPad1d):
    rank = 2


class ReplicationPad3d(ReplicationPad1d):
    rank = 3


class CircularPad1d(_PadNd):
    rank, mode = 1, "circular"


class CircularPad2d(CircularPad1d):
    rank = 2


class CircularPad3d(CircularPad1d):
    rank = 3
