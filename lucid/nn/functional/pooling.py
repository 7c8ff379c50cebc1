"""Max and average pooling, and adaptive pooling composed of them."""
from __future__ import annotations

import numbers

from ...errors import ShapeError
from ...ir import ops, symbolic
from .arguments import batched, unbatch, ntuple



def pool_args(rank, owner, kernel_size, stride, padding, dilation=1) -> dict:
    kernel = ntuple(kernel_size, rank, "kernel_size", owner, minimum=1)
    stride = kernel if stride is None or stride == () else ntuple(stride, rank, "stride", owner, minimum=1)
    return dict(kernel=kernel, stride=stride, padding=ntuple(padding, rank, "padding", owner, minimum=0),
                dilation=ntuple(dilation, rank, "dilation", owner, minimum=1))


def _max_pool(rank, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    owner = f"max_pool{rank}d"
    if return_indices:
        raise ShapeError(f"{owner}: return_indices=True is not supported")
    x, added = batched(input, rank, owner)
    args = pool_args(rank, owner, kernel_size, stride, padding, dilation)
    return unbatch(ops.max_pool(x, ceil_mode=ceil_mode, **args), added)


def _avg_pool(rank, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    owner = f"avg_pool{rank}d"
    x, added = batched(input, rank, owner)
    args = pool_args(rank, owner, kernel_size, stride, padding)
    del args["dilation"]
    return unbatch(ops.avg_pool(x, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                                 divisor_override=divisor_override, **args), added)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


# Adaptive pooling: output cell i of an axis of size n pooled to m covers [floor(i*n/m), ceil((i+1)*n/m)).
# Composed of existing operators: a reduction when every output size is 1, one pooling operator over
# the axes where m divides n, and per-cell slices + reductions + a concat along each remaining axis
# (average and maximum are both separable across axes).


def adaptive_output_size(output_size, rank: int, owner: str) -> tuple:
    """`output_size` as a length-`rank` tuple of ints >= 1 or None (None keeps the input's size)."""
    if output_size is None or isinstance(output_size, numbers.Integral) and not isinstance(output_size, bool):
        output_size = (output_size,) * rank
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else None
    valid = sizes is not None and len(sizes) == rank and all(
        s is None or isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes)
    if not valid:
        raise ShapeError(f"{owner}: expected output_size as an int >= 1 or a tuple of {rank} ints >= 1 or None, "
                         f"got {output_size!r}")
    return tuple(None if s is None else int(s) for s in sizes)


def _adaptive_pool(kind: str, rank: int, input, output_size, return_indices: bool = False):
    owner = f"adaptive_{kind}_pool{rank}d"
    if return_indices:
        raise ShapeError(f"{owner}: return_indices=True is not supported")
    x, added = batched(input, rank, owner)
    sizes = adaptive_output_size(output_size, rank, owner)
    in_sp = x.shape[2:]
    out_sp = tuple(n if m is None else m for n, m in zip(in_sp, sizes))
    reduce = ops.mean if kind == "avg" else ops.max_
    if all(symbolic.same(m, 1) for m in out_sp):            # structural: both branches pool alike
        return unbatch(reduce(x, tuple(range(2, rank + 2)), keepdims=True), added)
    kernel = tuple(n // m if not symbolic.is_symbolic(n) and n % m == 0 else 1 for n, m in zip(in_sp, out_sp))
    if any(k > 1 for k in kernel):
        x = _pool_by_kernel(kind, x, kernel)
    for axis, (n, m) in enumerate(zip(x.shape[2:], out_sp), start=2):
        if not symbolic.same(n, m):
            x = _adaptive_axis(reduce, x, axis, m)
    return unbatch(x, added)


def _pool_by_kernel(kind: str, x, kernel: tuple):
    """Non-overlapping pooling with kernel = stride = `kernel`."""
    zeros = (0,) * len(kernel)
    if kind == "avg":
        return ops.avg_pool(x, kernel=kernel, stride=kernel, padding=zeros, ceil_mode=False,
                            count_include_pad=True, divisor_override=None)
    return ops.max_pool(x, kernel=kernel, stride=kernel, padding=zeros, dilation=(1,) * len(kernel), ceil_mode=False)


def _adaptive_axis(reduce, x, axis: int, m: int):
    """Pool `axis` of `x` to `m` cells with PyTorch's adaptive windows."""
    n = x.shape[axis]
    cells = []
    for i in range(m):
        start, stop = i * n // m, -(-(i + 1) * n // m)
        window = axis_slice(x, axis, start, stop)
        cells.append(window if symbolic.same(stop - start, 1) else reduce(window, (axis,), keepdims=True))
    return ops.concat(cells, axis)


def axis_slice(x, axis: int, start: int, stop: int):
    """Elements [start, stop) of `axis`, everything of the other axes."""
    starts = tuple(start if d == axis else 0 for d in range(x.ndim))
    stops = tuple(stop if d == axis else n for d, n in enumerate(x.shape))
    return ops.slice_(x, starts, stops)


def adaptive_avg_pool1d(input, output_size): return _adaptive_pool("avg", 1, input, output_size)


def adaptive_avg_pool2d(input, output_size): return _adaptive_pool("avg", 2, input, output_size)


def adaptive_avg_pool3d(input, output_size): return _adaptive_pool("avg", 3, input, output_size)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    return _adaptive_pool("max", 1, input, output_size, return_indices)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    return _adaptive_pool("max", 2, input, output_size, return_indices)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    return _adaptive_pool("max", 3, input, output_size, return_indices)
