"""Convolutions and transposed convolutions in 1-, 2- and 3-D."""
from __future__ import annotations

import numbers

from ...errors import ShapeError
from ...ir import ops
from .arguments import (batched, check_weight, unbatch, check_output_padding, conv_padding,
                        conv_transpose_padding, ntuple)



def _conv(rank, input, weight, bias, stride, padding, dilation, groups):
    owner = f"conv{rank}d"
    x, added = batched(input, rank, owner)
    weight = check_weight(weight, rank, owner)
    stride = ntuple(stride, rank, "stride", owner, minimum=1)
    dilation = ntuple(dilation, rank, "dilation", owner, minimum=1)
    pads = conv_padding(padding, rank, owner, x.shape[2:], weight.shape[2:], stride, dilation)
    y = ops.conv(x, weight, bias, stride=stride, padding=pads, dilation=dilation, groups=_groups(groups, owner))
    return unbatch(y, added)


def _conv_transpose(rank, input, weight, bias, stride, padding, output_padding, groups, dilation):
    owner = f"conv_transpose{rank}d"
    x, added = batched(input, rank, owner)
    weight = check_weight(weight, rank, owner)
    stride = ntuple(stride, rank, "stride", owner, minimum=1)
    dilation = ntuple(dilation, rank, "dilation", owner, minimum=1)
    pads, output_padding = conv_transpose_padding(padding, output_padding, rank, owner, weight.shape[2:], stride, dilation)
    check_output_padding(output_padding, stride, dilation, owner)
    y = ops.conv_transpose(x, weight, bias, stride=stride, padding=pads, output_padding=output_padding,
                           dilation=dilation, groups=_groups(groups, owner))
    return unbatch(y, added)


def _groups(groups, owner: str) -> int:
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ShapeError(f"{owner}: groups must be a positive int, got {groups!r}")
    return int(groups)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(2, input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(3, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation)
