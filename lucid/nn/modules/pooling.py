"""Pooling layers: MaxPool1d/2d/3d, AvgPool1d/2d/3d (and the MaxPool3D-style aliases),
AdaptiveAvgPool1d/2d/3d and AdaptiveMaxPool1d/2d/3d."""
from __future__ import annotations

from ...errors import ShapeError
from .. import functional as F
from ..module import Module


class _MaxPoolNd(Module):
    rank = 0

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        owner = type(self).__name__
        args = F.pool_args(self.rank, owner, kernel_size, stride, padding, dilation)
        self.kernel_size, self.stride, self.padding, self.dilation = (
            args["kernel"], args["stride"], args["padding"], args["dilation"])
        self.return_indices, self.ceil_mode = return_indices, bool(ceil_mode)

    def forward(self, x):
        functional = getattr(F, f"max_pool{self.rank}d")
        return functional(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                          self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class _AvgPoolNd(Module):
    rank = 0

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        args = F.pool_args(self.rank, type(self).__name__, kernel_size, stride, padding)
        self.kernel_size, self.stride, self.padding = args["kernel"], args["stride"], args["padding"]
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x):
        functional = getattr(F, f"avg_pool{self.rank}d")
        return functional(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                          self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool1d(_MaxPoolNd):
    rank = 1


class MaxPool2d(_MaxPoolNd):
    rank = 2


class MaxPool3d(_MaxPoolNd):
    rank = 3


class AvgPool1d(_AvgPoolNd):
    rank = 1


class AvgPool2d(_AvgPoolNd):
    rank = 2


class AvgPool3d(_AvgPoolNd):
    rank = 3


MaxPool1D, MaxPool2D, MaxPool3D = MaxPool1d, MaxPool2d, MaxPool3d
AvgPool1D, AvgPool2D, AvgPool3D = AvgPool1d, AvgPool2d, AvgPool3d


class _AdaptivePoolNd(Module):
    """Pools each spatial axis to `output_size` (an int, or a tuple with None keeping that axis)."""

    rank = 0
    kind = ""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        owner = type(self).__name__
        F.adaptive_output_size(output_size, self.rank, owner)
        if return_indices:
            raise ShapeError(f"{owner}: return_indices=True is not supported")
        self.output_size = output_size

    def forward(self, x):
        return getattr(F, f"adaptive_{self.kind}_pool{self.rank}d")(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptivePoolNd):
    rank, kind = 1, "avg"

    def __init__(self, output_size):
        super().__init__(output_size)


class AdaptiveAvgPool2d(AdaptiveAvgPool1d):
    rank = 2


class AdaptiveAvgPool3d(AdaptiveAvgPool1d):
    rank = 3


class AdaptiveMaxPool1d(_AdaptivePoolNd):
    rank, kind = 1, "max"


class AdaptiveMaxPool2d(AdaptiveMaxPool1d):
    rank = 2


class AdaptiveMaxPool3d(AdaptiveMaxPool1d):
    rank = 3
