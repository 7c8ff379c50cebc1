"""Convolution layers: Conv1d/2d/3d, ConvTranspose1d/2d/3d and their lazy variants.

One class per family carries the logic; the 1-D/2-D/3-D classes only fix the spatial rank.
Lazy variants leave `in_channels`, `weight` and `bias` as None until the first forward call (or
load_state_dict) shows the channel count; afterwards they behave exactly like the eager class.
"""
from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ...ir.types import as_device, as_dtype, float32
from .. import functional as F
from ..init import default_uniform_, reset_or_defer
from ..module import Module
from ..parameter import Parameter


class _ConvNd(Module):
    """Shared by Conv and ConvTranspose: argument checks, parameters, input checks, repr."""

    rank = 0
    transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, output_padding=0, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        owner = type(self).__name__
        as_device(device, owner)
        self.padding_mode = _checked_padding_mode(padding_mode, self.transposed, owner)
        self.out_channels = _positive_int(out_channels, "out_channels", owner)
        self.kernel_size = F.ntuple(kernel_size, self.rank, "kernel_size", owner, minimum=1)
        self.stride = F.ntuple(stride, self.rank, "stride", owner, minimum=1)
        self.dilation = F.ntuple(dilation, self.rank, "dilation", owner, minimum=1)
        self.padding = F.check_padding_arg(padding, self.rank, owner)
        self.groups = _positive_int(groups, "groups", owner)
        self.output_padding = F.ntuple(output_padding, self.rank, "output_padding", owner, minimum=0)
        if self.transposed:
            F.conv_transpose_padding(self.padding, self.output_padding, self.rank, owner,
                                     self.kernel_size, self.stride, self.dilation)
            F.check_output_padding(self.output_padding, self.stride, self.dilation, owner)
        if self.out_channels % self.groups:
            raise ShapeError(f"{owner}: out_channels ({self.out_channels}) must be divisible by groups ({self.groups})")
        self.dtype = as_dtype(dtype) if dtype is not None else float32
        self.use_bias = bool(bias)
        self.in_channels = None
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if in_channels is not None:
            self._create_parameters(in_channels)

    def _create_parameters(self, in_channels: int) -> None:
        self.in_channels = self._checked_in_channels(in_channels)
        self.weight = Parameter(np.zeros(self._weight_shape(in_channels)), dtype=self.dtype)
        self.bias = Parameter(np.zeros(self.out_channels), dtype=self.dtype) if self.use_bias else None
        reset_or_defer(self)

    def _checked_in_channels(self, in_channels: int) -> int:
        owner = type(self).__name__
        in_channels = _positive_int(in_channels, "in_channels", owner)
        if in_channels % self.groups:
            raise ShapeError(f"{owner}: in_channels ({in_channels}) must be divisible by groups ({self.groups})")
        return in_channels

    def _weight_shape(self, in_channels: int) -> tuple:
        if self.transposed:
            return (in_channels, self.out_channels // self.groups) + self.kernel_size
        return (self.out_channels, in_channels // self.groups) + self.kernel_size

    def reset_parameters(self) -> None:
        """Weight, then bias, uniform in ±1/sqrt(fan_in) with fan_in = weight.shape[1] * prod(kernel)."""
        default_uniform_(self.weight, self.bias)

    def _check_input(self, x) -> None:
        F.require_tensor(x, type(self).__name__)
        if x.ndim not in (self.rank + 1, self.rank + 2):
            raise ShapeError(f"expected a {self.rank + 1}-D (unbatched) or {self.rank + 2}-D (batched) input, "
                             f"got a {x.ndim}-D input of shape {x.shape}")
        channels = x.shape[-self.rank - 1]
        if channels != self.in_channels:
            raise ShapeError(f"expected input with {self.in_channels} channels, got {channels} channels "
                             f"(input shape {x.shape})")

    def forward(self, x):
        self._check_input(x)
        if self.transposed:
            functional = getattr(F, f"conv_transpose{self.rank}d")
            return functional(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                              self.groups, self.dilation)
        functional = getattr(F, f"conv{self.rank}d")
        if self.padding_mode != "zeros":
            return functional(self._pad_input(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return functional(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def _pad_input(self, x):
        """`x` padded in `padding_mode` by what `padding` asks of a zero-padded conv."""
        pairs = F.conv_padding(self.padding, self.rank, type(self).__name__, x.shape[-self.rank:],
                               self.kernel_size, self.stride, self.dilation)
        return F.pad(x, [p for pair in reversed(pairs) for p in pair], self.padding_mode)

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}", f"kernel_size={self.kernel_size}",
                 f"stride={self.stride}"]
        if self.padding != (0,) * self.rank:
            parts.append(f"padding={self.padding!r}")
        if self.transposed and any(self.output_padding):
            parts.append(f"output_padding={self.output_padding}")
        if self.dilation != (1,) * self.rank:
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if not self.use_bias:
            parts.append("bias=False")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode}")
        return ", ".join(parts)


class _LazyMixin:
    """Materialises parameters from the first input's channel count, or from a state dict's weight."""

    def forward(self, x):
        if self.in_channels is None:
            F.require_tensor(x, type(self).__name__)
            if x.ndim not in (self.rank + 1, self.rank + 2):
                raise ShapeError(f"expected a {self.rank + 1}-D (unbatched) or {self.rank + 2}-D (batched) "
                                 f"input, got a {x.ndim}-D input of shape {x.shape}")
            self._create_parameters(x.shape[-self.rank - 1])
        return super().forward(x)

    def materialize(self, in_channels: int) -> None:
        """Create the parameters for `in_channels` input channels (what the first forward does)."""
        if self.in_channels is None:
            self._create_parameters(in_channels)
        elif in_channels != self.in_channels:
            raise ShapeError(f"{type(self).__name__}: already materialised with {self.in_channels} input channels, "
                             f"got {in_channels}")

    def _in_channels_from_state(self, prefix: str, state: dict) -> int | None:
        """The input channels `state`'s weight implies, if this layer is still lazy and it has one."""
        weight = state.get(prefix + "weight")
        if self.in_channels is not None or weight is None:
            return None
        if np.ndim(weight) != self.rank + 2:
            raise ShapeError(f"{type(self).__name__}.load_state_dict: expected a {self.rank + 2}-D weight, "
                             f"got shape {np.shape(weight)}")
        shape = np.shape(weight)
        return self._checked_in_channels(shape[0] if self.transposed else shape[1] * self.groups)

    def _shapes_from_state(self, prefix: str, state: dict) -> dict:
        in_channels = self._in_channels_from_state(prefix, state)
        if in_channels is None:
            return {}
        shapes = {prefix + "weight": self._weight_shape(in_channels)}
        return shapes | ({prefix + "bias": (self.out_channels,)} if self.use_bias else {})

    def _materialize_from_state(self, prefix: str, state: dict) -> None:
        in_channels = self._in_channels_from_state(prefix, state)
        if in_channels is not None:
            self.materialize(in_channels)


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _checked_padding_mode(padding_mode, transposed: bool, owner: str) -> str:
    if padding_mode not in PADDING_MODES:
        raise ShapeError(f"{owner}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if transposed and padding_mode != "zeros":
        raise ShapeError(f"{owner}: only padding_mode='zeros' is supported by transposed convolutions, "
                         f"got {padding_mode!r}")
    return padding_mode


def _positive_int(value, what: str, owner: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ShapeError(f"{owner}: {what} must be a positive int, got {value!r}")
    return int(value)


class _Conv(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode=padding_mode, device=device, dtype=dtype)


class _ConvTranspose(_ConvNd):
    transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         output_padding, padding_mode, device=device, dtype=dtype)


class _LazyConv(_LazyMixin, _Conv):
    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):
        super().__init__(None, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)


class _LazyConvTranspose(_LazyMixin, _ConvTranspose):
    def __init__(self, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
                 dilation=1, padding_mode="zeros", device=None, dtype=None):
        super().__init__(None, out_channels, kernel_size, stride, padding, output_padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)


class Conv1d(_Conv):
    rank = 1


class Conv2d(_Conv):
    rank = 2


class Conv3d(_Conv):
    rank = 3


class ConvTranspose1d(_ConvTranspose):
    rank = 1


class ConvTranspose2d(_ConvTranspose):
    rank = 2


class ConvTranspose3d(_ConvTranspose):
    rank = 3


class LazyConv1d(_LazyConv):
    rank = 1


class LazyConv2d(_LazyConv):
    rank = 2


class LazyConv3d(_LazyConv):
    rank = 3


class LazyConvTranspose1d(_LazyConvTranspose):
    rank = 1


class LazyConvTranspose2d(_LazyConvTranspose):
    rank = 2


class LazyConvTranspose3d(_LazyConvTranspose):
    rank = 3
