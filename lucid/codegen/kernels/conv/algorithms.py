"""Which algorithm lowers a conv or conv_transpose node: the first in `ALGORITHMS` that takes it.

The node becomes a `ConvProblem`; each algorithm `algorithm(lowering, problem)` lowers it and returns
True, or returns False, emitting nothing, when it does not apply or would not be faster. The direct
algorithm takes every problem, so it comes last.

Sizes known at run time (a graph compiled once for every size; channels, kernel, stride, padding
and dilation stay numbers) take the same rule, each algorithm deciding from what stays a number:
- Winograd decides whether it applies and pays for the symbols' smallest sizes (the batch's 1 and
  the smallest volume a variant serves); with symbolic spatial sizes its work items are rows of
  tiles taken in chunks of a fixed most, tile counts computed per call (winograd.py);
- the direct kernels read their extents, loop bounds and tap offsets from the call's sizes and tile
  each row as a static compile would, choosing the tiles per row (tile.py);
- the over-points path (transposed convs and stride-1 convs with few output channels: the input
  gradient of a stem conv, a segmentation head) decides from the channel count; its rows take tiles
  of the most vectors the registers hold and one last tile of the vectors left, counted per call
  (over_points.py);
- the planes path takes concrete sizes only (the direct kernels take a symbolic one)."""
from __future__ import annotations

import dataclasses
import math

from ....ir import symbolic
from ....ir.graph import Node
from ...lowering import Lowering, lowers
from ..normalization import RowStatistics
from .direct import lower_direct
from .disjoint_blocks import lower_disjoint_blocks
from .over_points import lower_over_points
from .planes import lower_conv_over_planes
from .problem import ConvProblem, Epilogue, Prologue, WeightLayout, geometry_of, kernel_taps, linear_taps
from .weight_grad import lower_direct_weight_grad
from .winograd import lower_winograd
from .winograd_weight_grad import lower_winograd_weight_grad

#: In the order they are tried: transposed convs whose kernel is their stride as one product per output
#: (disjoint_blocks.py), Winograd (convs and transposed convs with 16+ channels and 3- or
#: 2-tap classes, see winograd.py), transposed convs and stride-1 convs with few output channels
#: vectorised over output points (over_points.py), convs of one tap across (h, w) vectorised over
#: their planes' points (planes.py), then the direct algorithm (direct.py).
ALGORITHMS = (lower_disjoint_blocks, lower_winograd, lower_over_points, lower_conv_over_planes, lower_direct)


@lowers("conv", run_time_extents=True)
def lower_conv(lowering: Lowering, node: Node, epilogue: Epilogue | None = None,
               prologue: Prologue | None = None) -> None:
    x, w, bias, y, groups = _operands(node)
    g = geometry_of(x, w.shape[2:], node.attrs, groups, w.shape[1], w.shape[0] // groups)
    k_size = math.prod(w.shape[2:])
    weights = WeightLayout(g.ocg * g.icg * k_size, g.icg * k_size, k_size,
                           tuple(linear_taps(g.kernel, kernel_taps(g.kernel))))
    _lower(lowering, ConvProblem(x, w, bias, y, g, weights, epilogue, prologue=prologue))


@lowers("conv_transpose", run_time_extents=True)
def lower_conv_transpose(lowering: Lowering, node: Node, epilogue: Epilogue | None = None,
                         prologue: Prologue | None = None) -> None:
    x, w, bias, y, groups = _operands(node)
    g = geometry_of(x, w.shape[2:], node.attrs, groups, w.shape[0] // groups, w.shape[1])
    k_size = math.prod(w.shape[2:])
    weights = WeightLayout(g.icg * g.ocg * k_size, k_size, g.ocg * k_size, tuple(range(k_size)))
    _lower(lowering, ConvProblem(x, w, bias, y, g, weights, epilogue, transposed=True, prologue=prologue))


#: Bytes of a conv output from which a norm reading it takes its statistics from the sums of its
#: rows, stored with them (`normalization.RowStatistics`): an output this large has left a core's caches
#: when the norm would read it again (a 16-channel 64^3 output: 16 MiB, read at 8.7 GB/s, 1.8 ms);
#: a smaller one is read again from cache faster than the rows' sums cost the unpacking (MONAI
#: UNet's outputs of at most 2 MiB: its moments 0.65 -> 0.1 ms, its unpacking kernels 0.7 ms slower).
ROW_STATISTICS_BYTES = 8 << 20


@lowers("conv_weight_grad", run_time_extents=True)
def lower_conv_weight_grad(lowering: Lowering, node: Node) -> None:
    """Winograd's weight gradient where it applies (winograd_weight_grad.py), else the direct one
    (weight_grad.py)."""
    if not lower_winograd_weight_grad(lowering, node):
        lower_direct_weight_grad(lowering, node)


def _lower(lowering: Lowering, problem: ConvProblem) -> None:
    """The first algorithm taking `problem`; when a norm takes the stored output's statistics from
    its rows' sums (`Lowering.reads_row_statistics`) and the output is large, every algorithm's
    unpacking stores them as it stores the rows (`normalization.RowStatistics`, the node's first
    scratch), left for the norm."""
    stored = problem.epilogue.output if problem.epilogue else problem.y
    if lowering.reads_row_statistics(stored) and not symbolic.is_symbolic(stored.shape) and \
            tuple(stored.shape) == tuple(problem.y.shape) and \
            math.prod(stored.shape) * stored.dtype.numpy.itemsize >= ROW_STATISTICS_BYTES:
        problem = dataclasses.replace(problem, statistics=RowStatistics.reserve(lowering, stored))
    taken = any(algorithm(lowering, problem) for algorithm in ALGORITHMS)
    assert taken, "the direct algorithm takes every convolution"
    if problem.statistics is not None:
        lowering.leave_in_workspace(stored, problem.statistics)


def _operands(node: Node) -> tuple:
    """Input, weight, bias (or None), output and groups of a conv or conv_transpose node."""
    bias = node.inputs[2] if len(node.inputs) == 3 else None
    return node.inputs[0], node.inputs[1], bias, node.output, node.attrs["groups"]
