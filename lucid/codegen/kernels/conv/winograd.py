"""Winograd convolution: F(2x2, 3x3) and F(2x2, 2x2), for 2.25x and 1.78x fewer multiplications.

Applies to one-group convolutions and transposed convolutions with at least `MIN_CHANNELS` input
and output channels, input channels a whole number of vectors, when across (h, w) each output
position sums r = 3 or 2 taps of input positions `step` apart, in one or more classes:
- a conv with dilation 1 whose kernel is stride x r taps across (h, w): 3 x 3 of stride 1 (one
  class), 4 x 4 of stride 2 (the even and the odd kernel indices: two classes per axis), 2 x 2 of
  stride 1, 6 x 6 of stride 2;
- each stride phase of a transposed conv (see direct.py) with 3 or 2 consecutive taps per axis
  across (h, w): 3 x 3 of stride 1, 4 x 4 of stride 2 (2 x 2 taps per phase), 6 x 6 of stride 2.
Along d anything goes: each depth tap is a class of its own. Every combination of classes is a term
of the GEMM below, summed in the same accumulators. A layer too small to repay the weight transform
every call does on the target's CPU model (`_saves_time`), or to give every core enough work items,
stays direct; symbolic sizes are decided for at their smallest. With symbolic spatial sizes a work
item is one row of tiles, taken in chunks of at most a fixed number of tiles, so its stack arrays
have fixed sizes (`_chunked_plan`).

Guarantees:
- the direct convolution's result up to float rounding (the transforms only add, subtract and
  halve);
- the direct convolution's non-finite values: a work item runs the direct tiles instead when the
  weights are not all finite (noted once per call by the weight packing, nonfinite.py), and is
  computed again with them when its transformed result holds a NaN or an infinity (a non-finite
  input, or an overflow inside the transforms); a transposed conv whose weights are not all finite
  unpacks the exact sums (nonfinite.py);
- each work item's transformed input (one row of positions) and products live on its thread's
  stack (at most `STACK_BYTES`), so they stay in L1 and L2 and never travel to memory; so do its
  output rows until they are unpacked (`_ItemRows`, at most direct.py's `ROW_BUFFER_BYTES`; with
  symbolic spatial sizes, outputs no phase writes, or larger rows: a channels-last scratch of the
  output).
  conv.py's G2: its kernels 3.04-3.26 -> 2.60-2.75 ms on one thread (its 6.4 MB scratch, written
  and read for ownership, is gone).

A conv, or one phase, is a correlation. Output tiles are 2 x 2 positions q; tile
(th, tw) reads the alpha x alpha patch of the zero-padded channels-last input `xp` at the
correlation's corner + (2 th, 2 tw), alpha = taps + 1. With xi a position of the alpha x alpha
transformed domain:

    U[xi] = (G g G^T)[xi]          per weight (oc, ic, depth tap): `wino_weights` kernel, in
                                   float64 rounded once (the GEMM's error is the larger part)
    V[xi] = (B^T d B)[xi]          per input patch and channel vector
    M[xi] = sum over depth taps and ic of V[xi] * U[xi]   (the register tile of tile.py, a GEMM)
    y     = A^T M A                2 x 2 outputs

One kernel does it all: a work item is (n, qd, a block of tile rows), for every correlation; then
its output rows are whole (the phases of a transposed conv interleave), and it unpacks them to
NCDHW while they are in cache. V is made one row of the alpha x alpha domain at a time (the alpha
positions xi = row * alpha + j, for every depth tap and tile of the item) and multiplied before the
next row: a row of B^T d reads two rows of the patch, so the input is transformed with the same
arithmetic, and V stays in L1 (a 16-channel item's V of every position was 96 KiB, written and read
back through L2: a 16-channel 32^3 layer's `wino_conv` 4.5 -> 3.9-4.2 ms, UNet3D's inference at one
thread 36.1 -> 32.7 ms, fresh processes alternating).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Callable

import llvmlite.ir as ir

from ....ir import symbolic
from ...irgen import F64, counted_loop, element_type, i64, load_vector, store_vector, unravel
from ...lowering import Lowering
from .direct import (ROW_BUFFER_BYTES, conv_direct_spec, conv_input_layout, phase_direct_spec, transpose_input_layout,
                     transpose_phases)
from .nonfinite import WeightFlags, exact_sum, finite_probe, probed_not_finite
from .packing import Padded, emit_pack_input, emit_pack_weight
from .prepared import WeightCheck, emit_weight_check, when_changed
from .primitives import (Kept, aligned_stack_array, constant_table, emit_zero, region_pointer, size_table,
                         strided_offset, sum_of, table_array)
from .problem import Blocking, ConvProblem, at_least_all, choose_blocking, kernel_taps, oc_blocks, to_3d
from .tile import (Direct, RowTiles, emit_row_block, emit_run_time_row, row_tiles, run_time_tile_sizes, term_blocks,
                   tile_function)
from .unpack import Unpack, channels_last_size, channels_last_source, channels_last_strides, unpack_row

#: Fewer input or output channels than this leave the transforms too large a share of the work.
MIN_CHANNELS = 16

#: Fewer positions than this along w make register tiles too short to pay for the transforms.
MIN_ROW = 4

#: Most bytes of stack a work item uses for its transformed input and products.
STACK_BYTES = 384 << 10

#: A work item takes enough rows of tiles for its register tiles to have about this many points
#: (while its stack arrays fit in STACK_BYTES and a kernel keeps enough work items). Fewer points
#: keep an item's transformed input, products and input rows closer to L1: a 16-channel item at
#: 32^3 (16 tiles a row) took two rows at 24 and stalled on L2 in its input transform; 12 (one
#: row) made UNet3D's inference 4-5% faster at one and two threads and a 32-channel 16^3 layer 12%
#: (fresh processes alternating; 8 and 16 measured as 12; the 64^3 layers, one row either way, and
#: MONAI's UNet and R2Plus1dNet unchanged).
POINTS_PER_ITEM = 12

#: Fewer work items than this per core of the target leave the threads too little to share: the
#: direct kernels, with smaller work items, are faster then.
MIN_ITEMS_PER_CORE = 4

#: Cycles `wino_weights` takes per output channel, input channel and GEMM term, on every call (the
#: gathers of the weights dominate, so it hardly depends on the vector width): measured on Zen 3,
#: conv.py's B row (0.14 ms for its 8 phases' 32768 on one core).
WEIGHT_TRANSFORM_CYCLES = 12


# ---------------------------------------------------------------------------------------------
# The 1-D transforms, on lists of values (scalars or vectors) with the builder's arithmetic


@dataclass(frozen=True)
class Transform:
    """F(2, taps): 2 outputs of a `taps`-tap correlation from alpha = taps + 1 products.
    `weight(b, g, half)` is G g, `input(b, d)` is B^T d and `output(b, m)` is A^T m."""

    taps: int
    weight: Callable
    input: Callable
    output: Callable

    @property
    def alpha(self) -> int:
        return self.taps + 1

    @property
    def positions(self) -> int:
        return self.alpha * self.alpha


def _weight_3(b, g, half):
    outer = b.fadd(g[0], g[2])
    return [g[0], b.fmul(b.fadd(outer, g[1]), half), b.fmul(b.fsub(outer, g[1]), half), g[2]]


def _input_4(b, d):
    return [b.fsub(d[0], d[2]), b.fadd(d[1], d[2]), b.fsub(d[2], d[1]), b.fsub(d[1], d[3])]


def _output_4(b, m):
    return [b.fadd(b.fadd(m[0], m[1]), m[2]), b.fsub(b.fsub(m[1], m[2]), m[3])]


def _weight_2(b, g, half):
    return [g[0], b.fadd(g[0], g[1]), g[1]]


def _input_3(b, d):
    return [b.fsub(d[0], d[1]), d[1], b.fsub(d[2], d[1])]


def _output_3(b, m):
    return [b.fadd(m[0], m[1]), b.fadd(m[1], m[2])]


TRANSFORMS = {3: Transform(3, _weight_3, _input_4, _output_4), 2: Transform(2, _weight_2, _input_3, _output_3)}


def separable(b: ir.IRBuilder, grid: list, rows) -> list:
    """Apply the 1-D transform `rows` to the columns of the square `grid` (a list of rows), then to
    the rows of the result: T grid T^T, returned flat, row-major."""
    columns = [rows(b, [row[j] for row in grid]) for j in range(len(grid[0]))]
    by_row = [[column[i] for column in columns] for i in range(len(columns[0]))]
    return [value for row in by_row for value in rows(b, row)]


def separable_row(b: ir.IRBuilder, grid: list, rows, row: int) -> list:
    """Row `row` of `separable(b, grid, rows)`: the 1-D transform of row `row` of (T grid)."""
    column_values = [rows(b, [line[j] for line in grid])[row] for j in range(len(grid[0]))]
    return rows(b, column_values)


# ---------------------------------------------------------------------------------------------
# What the kernels compute


@dataclass(frozen=True)
class Axis:
    """Output positions q along one axis: position q meets input position q * step + offset + step * j
    of the padded input with kernel index kernel[j], for each class (offset, kernel) of `classes`
    (a stride-2 conv has a class of even and one of odd kernel indices; a depth axis a class per
    tap). Output q goes to scratch position q * out_step + out_first."""

    count: int
    step: int
    classes: tuple
    out_step: int
    out_first: int

    @property
    def taps(self) -> int | None:
        """Kernel indices per class (None if the classes differ)."""
        sizes = {len(kernel) for _, kernel in self.classes}
        return sizes.pop() if len(sizes) == 1 else None


@dataclass(frozen=True)
class Correlation:
    """One part of a convolution Winograd computes: axes (d, h, w), and, for the direct fallback,
    the transposed conv's phase it is (None for a conv). Its GEMM sums over `taps`: one term per
    class of each axis, each an r x r Winograd product."""

    axes: tuple
    phase: object = None

    @property
    def transform(self) -> Transform:
        return TRANSFORMS[self.axes[1].taps]

    @property
    def counts(self) -> tuple:
        return tuple(axis.count for axis in self.axes)

    @property
    def tiles(self) -> tuple:
        return tuple(symbolic.ceil_div(axis.count, 2) for axis in self.axes[1:])

    @property
    def taps(self) -> list:
        """The terms of the GEMM: ((offset along d, h, w), the r x r kernel taps (kd, kh, kw),
        row-major)."""
        d, h, w = (axis.classes for axis in self.axes)
        return [((od, oh, ow), tuple((kd[0], a, c) for a in kh for c in kw))
                for od, kd in d for oh, kh in h for ow, kw in w]

    def patch_extent(self, tile_rows: int) -> tuple:
        """Padded input extent (h, w) the last tile's patch needs when the work items cover
        `tile_rows` rows of tiles (rows past the output read zeros)."""
        alpha = self.transform.alpha
        return tuple(max(offset for offset, _ in axis.classes) + axis.step * (2 * (count - 1) + alpha - 1) + 1
                     for axis, count in zip(self.axes[1:], (tile_rows, self.tiles[1])))

    def reach(self) -> tuple:
        """Padded input extent (h, w) the patches of every tile need, for symbolic counts: the tiles
        cover at most count + 1 positions, so this bound, linear in the count, is `patch_extent` of
        the tiles or `step` more."""
        alpha = self.transform.alpha
        return tuple(max(offset for offset, _ in axis.classes) + axis.step * (axis.count + alpha - 2) + 1
                     for axis in self.axes[1:])

    def applies(self) -> bool:
        h, w = self.axes[1:]
        return (h.taps in TRANSFORMS and h.taps == w.taps and self.axes[0].taps == 1
                and _smallest(h.count) >= 2 and _smallest(w.count) >= MIN_ROW)


def _conv_correlations(problem: ConvProblem) -> list:
    """A conv: along d each tap is a class; along h and w, with dilation 1 and a kernel of stride x r
    taps, the kernel indices of each remainder modulo the stride are a class of r."""
    g, out_sp = problem.g, to_3d(problem.y.shape[2:], 1)
    depth = Axis(out_sp[0], g.stride[0], tuple((k * g.dilation[0], (k,)) for k in range(g.kernel[0])), 1, 0)
    axes = [depth]
    for count, stride, dilation, size in zip(out_sp[1:], g.stride[1:], g.dilation[1:], g.kernel[1:]):
        if dilation != 1 or size % stride:
            return []
        axes.append(Axis(count, stride, tuple((r, tuple(range(r, size, stride))) for r in range(stride)), 1, 0))
    return [Correlation(tuple(axes))]


def _phase_correlations(problem: ConvProblem, phases: list, origin: tuple) -> list:
    """The phases as correlations: phase position q reads input q + shift, at q + shift + origin of
    the padded input; along h and w the shifts must be consecutive (one class)."""
    g = problem.g
    correlations = []
    for phase in phases:
        axes = []
        for a in range(3):
            pairs = sorted({(shift[a], kernel[a]) for kernel, shift in zip(phase.kernel_taps, phase.taps)})
            offsets = [shift + origin[a] for shift, _ in pairs]
            if a == 0:
                classes = tuple((offset, (k,)) for offset, (_, k) in zip(offsets, pairs))
            elif offsets == list(range(offsets[0], offsets[0] + len(offsets))):
                classes = ((offsets[0], tuple(k for _, k in pairs)),)
            else:
                return []
            axes.append(Axis(phase.counts[a], 1, classes, g.stride[a], phase.r[a]))
        correlations.append(Correlation(tuple(axes), phase))
    return correlations


@dataclass(frozen=True)
class Plan:
    correlations: list
    layout: Padded
    rows: int            # rows of tiles per work item (of every correlation)
    blocks_of_rows: int  # work items along h
    gemm: Blocking       # the GEMM's register tile
    direct: Blocking     # the fallback's (the same vectors, so the same channels-last scratch)
    empty: bool          # some outputs belong to no phase (they are zeroed first)
    chunk: int = 0       # symbolic sizes: most tiles of a chunk of a tile row (0: concrete sizes)


def plan(lowering: Lowering, problem: ConvProblem) -> Plan | None:
    """The Winograd plan of `problem`, or None when the algorithm does not apply."""
    g, x = problem.g, problem.x
    if g.groups != 1 or min(g.icg, g.ocg) < MIN_CHANNELS:
        return None
    if problem.transposed:
        phases = transpose_phases(g, to_3d(problem.y.shape[2:], 1))
        base = transpose_input_layout(g, phases, x.shape[1])
        empty = any(not p.taps for p in phases)
        correlations = _phase_correlations(problem, [p for p in phases if p.taps], base.origin)
    else:
        base = conv_input_layout(g, to_3d(problem.y.shape[2:], 1), x.shape[1])
        empty, correlations = False, _conv_correlations(problem)
    if not correlations or not all(c.applies() for c in correlations):
        return None
    decided = dataclasses.replace(g, n=_smallest(g.n))      # symbolic sizes: decided for their smallest
    if not _saves_time(lowering, decided, correlations):
        return None
    direct = choose_blocking(g.ocg, at_least_all([c.counts[2] for c in correlations]), lowering, x.dtype)
    chunked = _chunked_plan(lowering, problem, correlations, base, direct, empty)
    if symbolic.is_symbolic(problem.y.shape[2:]) or (chunked and chunked.chunk < max(c.tiles[1] for c in correlations)):
        return chunked                 # rows of a symbolic length, or longer than a chunk
    rows = _rows_per_item(correlations, decided, oc_blocks(g, direct) * direct.width, x.dtype.numpy.itemsize,
                          MIN_ITEMS_PER_CORE * lowering.target.cores)
    gemm = choose_blocking(g.ocg, rows * max(c.tiles[1] for c in correlations), lowering, x.dtype)
    if not rows or g.icg % gemm.lanes:
        return None
    blocks_of_rows = math.ceil(max(c.tiles[0] for c in correlations) / rows)
    needed = [c.patch_extent(rows * blocks_of_rows) for c in correlations]
    extent = (base.extent[0],) + tuple(max([base.extent[a + 1]] + [n[a] for n in needed]) for a in range(2))
    return Plan(correlations, Padded(extent, base.origin, x.shape[1]), rows, blocks_of_rows, gemm, direct, empty)


def _chunked_plan(lowering: Lowering, problem: ConvProblem, correlations: list, base: Padded, direct: Blocking,
                  empty: bool) -> Plan | None:
    """The plan for symbolic spatial sizes, and for rows of more tiles than a chunk: a work item is
    one row of tiles (n, qd, th), taken in chunks of at most `chunk` tiles along w (fixed-size stack
    arrays and GEMM tiles, see `_chunk_tiles`); the padded input reaches every tile's patch
    (`Correlation.reach`). A 16-channel 64^3 layer's rows of 32 tiles in two chunks of 16 (its
    transformed input and products half the size, as POINTS_PER_ITEM wants) took its `wino_conv`
    17.4 -> 15.9 ms (fresh processes alternating); conv.py's G1 (28 tiles, chunks of 14) ran as
    fast either way."""
    g, x = problem.g, problem.x
    items = _smallest(g.n) * min(_smallest(c.counts[0]) * _smallest(c.tiles[0]) for c in correlations)
    gemm = choose_blocking(g.ocg, correlations[0].tiles[1], lowering, x.dtype)
    chunk = _chunk_tiles(correlations, g, oc_blocks(g, direct) * direct.width, x.dtype.numpy.itemsize, gemm.points)
    if not chunk or g.icg % gemm.lanes or items < MIN_ITEMS_PER_CORE * lowering.target.cores:
        return None
    reach = [c.reach() for c in correlations]
    extent = (base.extent[0],) + tuple(at_least_all([base.extent[a + 1]] + [r[a] for r in reach]) for a in range(2))
    blocks_of_rows = at_least_all([c.tiles[0] for c in correlations])
    return Plan(correlations, Padded(extent, base.origin, x.shape[1]), 1, blocks_of_rows, gemm, direct, empty, chunk)


def _saves_time(lowering: Lowering, g, correlations: list) -> bool:
    """Whether the multiply-adds Winograd saves take longer, on the target's CPU model, than its
    weight transform, which every call repeats: per output channel, input channel and GEMM term, a
    tile of 2 x 2 outputs saves 4 r^2 - alpha^2 multiply-adds (20 for r = 3, 7 for r = 2), at the
    model's FMA rate, against WEIGHT_TRANSFORM_CYCLES. (Its input and output transforms cost in
    proportion to the tiles as the savings do; MIN_CHANNELS keeps them a small share.)"""
    model = lowering.target.model
    rate = model.flops_per_cycle / 2
    saved = sum(len(c.taps) * g.n * _smallest(c.counts[0]) * math.prod(_smallest(t) for t in c.tiles)
                * (4 * c.transform.taps ** 2 - c.transform.positions) for c in correlations) / rate
    return saved > WEIGHT_TRANSFORM_CYCLES * sum(len(c.taps) for c in correlations)


def _rows_per_item(correlations: list, g, oc_padded: int, itemsize: int, min_items: int) -> int:
    """Rows of tiles per work item: enough for POINTS_PER_ITEM points, as many in every item (but
    maybe the last), stack arrays within STACK_BYTES, at least `min_items` items per kernel; 0 if no
    number of rows does all that."""
    tiles_h = min(c.tiles[0] for c in correlations)
    wanted = min(math.ceil(POINTS_PER_ITEM / max(c.tiles[1] for c in correlations)), tiles_h)
    for most in range(wanted, 0, -1):
        blocks = math.ceil(tiles_h / most)
        rows = math.ceil(tiles_h / blocks)
        stack = max(_stack_elements(c, g, oc_padded, rows * c.tiles[1]) for c in correlations) * itemsize
        if stack <= STACK_BYTES and g.n * min(c.counts[0] for c in correlations) * blocks >= min_items:
            return rows
    return 0


def _chunk_tiles(correlations: list, g, oc_padded: int, itemsize: int, points: int) -> int:
    """Most tiles of a chunk of a symbolic row: whole register tiles of `points` points, about
    POINTS_PER_ITEM, within STACK_BYTES of stack arrays (fewer if need be); 0 if not even one fits."""
    wanted = points * max(round(POINTS_PER_ITEM / points), 1)
    for tiles in range(wanted, 0, -1):
        stack = max(_stack_elements(c, g, oc_padded, tiles) for c in correlations)
        if stack * itemsize <= STACK_BYTES:
            return tiles
    return 0


def _stack_elements(c: Correlation, g, oc_padded: int, tiles: int) -> int:
    """Elements of an item's stack arrays for `tiles` tiles: V of one row of positions, M of all."""
    return tiles * (c.transform.alpha * len(c.taps) * g.icg + c.transform.positions * oc_padded)


def _smallest(size) -> int:
    """The smallest value of a size (itself if an int) over its symbols' ranges."""
    return symbolic.bounds(size)[0]


def lower_winograd(lowering: Lowering, problem: ConvProblem) -> bool:
    """Lower `problem` with Winograd if it applies (see the module docstring)."""
    p = plan(lowering, problem)
    if p is None:
        return False
    x, y, g = problem.x, problem.y, problem.g
    itemsize = x.dtype.numpy.itemsize
    check = emit_weight_check(lowering, problem.w)
    x_offset = lowering.scratch(p.layout.size(g.n) * itemsize)
    u_sizes = [oc_blocks(g, p.gemm) * len(c.taps) * c.transform.positions * g.icg * p.gemm.width
               for c in p.correlations]
    u_offsets = [Kept.reserve(lowering, size * itemsize) for size in u_sizes]
    fallback_taps = [tap for c in p.correlations for tap in _direct_taps(problem, c)]
    w_offset = Kept.reserve(lowering, oc_blocks(g, p.direct) * len(fallback_taps) * g.icg * p.direct.width * itemsize)
    rows = _item_rows(p, problem)
    y_offset = None if rows else lowering.scratch(channels_last_size(y, g, p.gemm) * itemsize)
    emit_pack_input(lowering, x, p.layout, x_offset, "wino_pack_input", problem.prologue)
    lowering.leave_in_workspace(x, p.layout)
    if p.empty:
        emit_zero(lowering, y_offset, channels_last_size(y, g, p.gemm), x.dtype, "wino_zero")
    for c, offset in zip(p.correlations, u_offsets):
        _emit_weight_transform(lowering, problem, c, p.gemm, offset, check)
    flags = emit_pack_weight(lowering, problem.w, g, p.direct, problem.weights_of(fallback_taps), w_offset,
                             "wino_pack_fallback_weight", note_finite=True, check=check)
    starts = itertools.accumulate((len(_direct_taps(problem, c)) * g.icg * p.direct.width for c in p.correlations),
                                  initial=0)
    y_strides = rows.strides if rows else channels_last_strides(y, g, p.gemm)
    directs = [_direct_spec(problem, c, p.layout, y_strides, w0, len(fallback_taps))
               for c, w0 in zip(p.correlations, starts)]
    _emit_main(lowering, problem, p, list(zip(p.correlations, directs, u_offsets)), (x_offset, w_offset, y_offset),
               Unpack(y, problem.bias, y_offset, channels_last_source(y, g, p.gemm), problem.epilogue,
                      exact_sum(problem, flags), problem.statistics), flags, rows)
    return True


@dataclass(frozen=True)
class _ItemRows:
    """A stack array holding a work item's output rows, channels-last, in place of a scratch of the
    whole output: `depths` depths of rows (d, h) at element strides `strides` (n, d, h, w), n's 0 (an
    item has one n). The item's kernels address it as they would the scratch, through a pointer moved
    back by the item's first position (`origin`), so the same index arithmetic serves both."""

    depths: int
    strides: tuple

    @property
    def elements(self) -> int:
        return self.depths * self.strides[1]

    def origin(self, b: ir.IRBuilder, qd, first_row, d_axis: Axis, h_axis: Axis):
        """The index, at these strides, of the item's first output position (depth qd * step, row
        first_row * step)."""
        steps = (d_axis.out_step * self.strides[1], h_axis.out_step * self.strides[2])
        return strided_offset(b, 0, (qd, first_row), steps)


def _item_rows(p: Plan, problem: ConvProblem) -> _ItemRows | None:
    """The stack rows of an item of plan `p` (see `_ItemRows`); None when the output's spatial sizes
    are symbolic (a symbolic batch is not: an item has one n), some outputs belong to no phase (the
    scratch is zeroed for them first) or the rows outgrow direct.py's ROW_BUFFER_BYTES."""
    y, g = problem.y, problem.g
    if p.empty or symbolic.is_symbolic(y.shape[2:]):
        return None
    d_axis, h_axis = p.correlations[0].axes[:2]
    depths, rows = d_axis.out_step, 2 * p.rows * h_axis.out_step
    point = channels_last_strides(y, g, p.gemm)[3]
    width = to_3d(y.shape[2:], 1)[2]
    item = _ItemRows(depths, (0, rows * width * point, width * point, point))
    return item if item.elements * y.dtype.numpy.itemsize <= ROW_BUFFER_BYTES else None


def _direct_taps(problem: ConvProblem, c: Correlation) -> list:
    """The kernel taps in the order the direct fallback's spec takes them."""
    return kernel_taps(problem.g.kernel) if c.phase is None else list(c.phase.kernel_taps)


def _direct_spec(problem: ConvProblem, c: Correlation, layout: Padded, y_strides: tuple, w0: int, w_taps: int) -> Direct:
    if c.phase is None:
        return conv_direct_spec(problem.g, c.counts, layout, y_strides)
    return phase_direct_spec(problem.g, c.phase, layout, y_strides, w0, w_taps)


# ---------------------------------------------------------------------------------------------
# Kernels


def _emit_weight_transform(lowering: Lowering, problem: ConvProblem, c: Correlation, block: Blocking,
                           where: Kept, check: WeightCheck) -> None:
    """U[ob][t][xi][ic][lane] = (G g G^T)[xi] of the r x r weights (oc = ob * width + lane, ic) of
    GEMM term t, 0 past the output channels, kept at `where` between calls and transformed again
    only when `check` saw the weights change. A work item is (ob, t, ic); a loop over its `width`
    output channels copies their weights to the stack, lane by lane, from which each weight of the
    `width` channels is read as one vector; it transforms the vectors (in float64), so its stores
    are whole vectors. (Gathering lane by lane in straight-line code, 4 instructions per lane and
    weight, made its module three times larger and took 1.45 CPU-s of LLVM for a UNet3D training
    graph's ten against 0.65-0.8 s; it ran no faster, and LLVM's masked gather ran it 8% slower on
    Zen 3.)"""
    g, w, layout, transform = problem.g, problem.w, problem.weights, c.transform
    element = element_type(w.dtype)
    blocks = oc_blocks(g, block)
    depth_taps, taps = len(c.taps), transform.taps
    table = constant_table(lowering, "wtaps", problem.weights_of([tap for _, grid in c.taps for tap in grid]).taps)
    wide = ir.VectorType(F64, block.width)

    def body(k, item):
        b = k.b
        ob, t, ic = unravel(b, item, (blocks, depth_taps, g.icg))
        src, u = k.pointer(w), region_pointer(k, where, element)
        half = ir.Constant(wide, [0.5] * block.width)
        first = b.mul(b.add(b.mul(b.add(b.mul(ob, i64(depth_taps)), t), i64(transform.positions * g.icg)), ic),
                      i64(block.width))
        staged = k.alloca(element, taps * taps * block.width, name="staged")
        offsets = [b.load(b.gep(table, [i64(0), b.add(b.mul(t, i64(taps * taps)), i64(at))])) for at in range(taps * taps)]
        with counted_loop(b, i64(block.width), name="lane") as lane:
            oc = b.add(b.mul(ob, i64(block.width)), lane)
            inside = b.icmp_unsigned("<", oc, i64(g.ocg))
            start = b.add(b.mul(b.select(inside, oc, i64(0)), i64(layout.soc)), b.mul(ic, i64(layout.sic)))
            for at, offset in enumerate(offsets):
                value = b.select(inside, b.load(b.gep(src, [b.add(start, offset)])), ir.Constant(element, 0.0))
                b.store(value, b.gep(staged, [b.add(lane, i64(at * block.width))]))

        def weight(i, j):
            vector = load_vector(b, staged, i64((taps * i + j) * block.width), block.width)
            return vector if element == F64 else b.fpext(vector, wide)

        grid = [[weight(i, j) for j in range(taps)] for i in range(taps)]
        for xi, value in enumerate(separable(b, grid, lambda b_, column: transform.weight(b_, column, half))):
            value = value if element == F64 else b.fptrunc(value, ir.VectorType(element, block.width))
            store_vector(b, value, u, b.add(first, i64(xi * g.icg * block.width)))

    lowering.kernel("wino_weights", blocks * depth_taps * g.icg, when_changed(check, body), waits=False,
                    compute_bound=True)


def _emit_main(lowering: Lowering, problem: ConvProblem, p: Plan, parts: list, offsets: tuple, unpack: Unpack,
               flags: WeightFlags, item_rows: _ItemRows | None) -> None:
    """Work item (n, qd, block of tile rows), for each correlation (c, its direct fallback spec, the
    offset of its U) in `parts`: transform the input patches of its `p.rows` rows of tiles, multiply
    them by U (the register tile of tile.py, one call per position xi and oc block) and transform the
    products back into the channels-last scratch (again with the direct tiles if they are not all
    finite); with weights not all finite (`flags`), only the direct tiles. Then, every correlation
    done, the item's output rows are whole: unpack them. With `item_rows` the scratch is the item's
    stack array."""
    g, y = problem.g, problem.y
    element = element_type(y.dtype)
    assert p.direct.width == p.gemm.width          # both write the same channels-last scratch
    x_offset, w_offset, y_offset = offsets
    kernels = [(c, _Products(lowering, element, g, p, c), _corner_table(lowering, c, p.layout),
                row_tiles(lowering, element, g, p.direct, direct), u_offset) for c, direct, u_offset in parts]
    depth = at_least_all([c.counts[0] for c in p.correlations])
    y_strides = item_rows.strides if item_rows else channels_last_strides(y, g, p.gemm)

    def body(k, item):
        b = k.b
        n, qd, block_of_rows = unravel(b, item, (k.size(g.n), k.size(depth), k.size(p.blocks_of_rows)))
        first_row = b.mul(block_of_rows, i64(2 * p.rows))             # of positions q along h
        size = max(products.v_size for _, products, *_ in kernels), max(products.m_size for _, products, *_ in kernels)
        v, m = (aligned_stack_array(k, element, count) for count in size)
        if item_rows:
            rows = aligned_stack_array(k, element, item_rows.elements, "rows")
            yp = b.gep(rows, [b.neg(item_rows.origin(b, qd, first_row, *p.correlations[0].axes[:2]))])
        else:
            rows, yp = None, k.scratch_pointer(y_offset, element)
        finite_weights = flags.all_finite(k)
        direct = k.alloca(ir.IntType(1), name="direct")
        for c, products, corners, fallback, u_offset in kernels:
            def one(c=c, products=products, corners=table_array(k, corners), fallback=fallback, u_offset=u_offset):
                b.store(b.not_(finite_weights), direct)
                with b.if_then(finite_weights), _each_chunk(k, p, c) as chunk:
                    for group in range(c.transform.alpha):         # V of a row of positions stays in L1
                        _transform_input(k, g, p, c, corners, k.scratch_pointer(x_offset, element), v,
                                         (n, qd, first_row), chunk, group)
                        products.emit(b, v, region_pointer(k, u_offset, element), m, chunk.count, group)
                    nonfinite = _transform_output(k, g, p, c, y_strides, m, yp, (n, qd, first_row), chunk)
                    b.store(nonfinite if chunk.first is None else b.or_(b.load(direct), nonfinite), direct)
                with b.if_then(b.load(direct)):
                    _each_row(k, p, c, first_row, lambda qh: _direct_row(k, fallback, (x_offset, w_offset, yp),
                                                                         n, qd, qh))
            _maybe(b, _in_correlation(k, p, c, depth, qd, block_of_rows), one)
        _unpack_item(k, p, unpack, n, qd, first_row, (rows, item_rows) if item_rows else None)

    lowering.kernel("wino_conv", g.n * depth * p.blocks_of_rows, body)


def _in_correlation(k, p: Plan, c: Correlation, depth, qd, block_of_rows):
    """Whether correlation `c` has the item's positions (None: always): its depth position qd (if
    `c` has fewer than `depth`) and, with symbolic sizes, its row of tiles (if `c` has fewer than
    the items: a phase of a transposed conv with fewer outputs)."""
    b = k.b
    in_depth = None if symbolic.same(c.counts[0], depth) else b.icmp_unsigned("<", qd, k.extent(c.counts[0]))
    if not p.chunk or symbolic.same(c.tiles[0], p.blocks_of_rows):
        return in_depth
    return _both(b, in_depth, b.icmp_unsigned("<", block_of_rows, k.extent(c.tiles[0])))


@dataclass(frozen=True)
class _Chunk:
    """Tiles `first` ... `first` + `count` of an item's tile rows (`first` None: from 0, an int count: the
    whole rows of concrete sizes), at `stride` tiles per row in the stack arrays."""

    first: ir.Value | None
    count: int | ir.Value
    stride: int


@contextlib.contextmanager
def _each_chunk(k, p: Plan, c: Correlation):
    """The chunks of the item's tile rows: with concrete sizes one, the whole rows; a row of symbolic
    length in the fewest chunks of at most `p.chunk` tiles, balanced (the first ones a tile longer)."""
    if not p.chunk:
        yield _Chunk(None, c.tiles[1], c.tiles[1])
        return
    b = k.b
    tiles = k.extent(c.tiles[1])
    count = k.extent(symbolic.ceil_div(c.tiles[1], p.chunk))
    base = b.udiv(tiles, count)
    longer = b.sub(tiles, b.mul(count, base))
    with counted_loop(b, count, name="chunk") as chunk:
        is_longer = b.icmp_unsigned("<", chunk, longer)
        first = b.add(b.mul(chunk, base), b.select(is_longer, chunk, longer))
        yield _Chunk(first, b.add(base, b.zext(is_longer, base.type)), p.chunk)


def _unpack_item(k, p: Plan, unpack: Unpack, n, qd, first_row, stack_rows: tuple | None) -> None:
    """Unpack the output rows of positions (qd, q rows from first_row) of every correlation: depths
    qd * stride + r and rows q * stride + r, r < stride (the same for every correlation); from the
    scratch, or with `stack_rows` (the array, its `_ItemRows`) from the item's stack array."""
    b, y = k.b, unpack.y
    depth, height, _ = (k.extent(size) for size in to_3d(y.shape[2:], 1))
    d_axis, h_axis = p.correlations[0].axes[:2]
    with counted_loop(b, d_axis.out_step, name="rd") as rd, counted_loop(b, 2 * p.rows * h_axis.out_step, name="rh") as rh:
        d = b.add(b.mul(qd, i64(d_axis.out_step)), rd)
        h = b.add(b.mul(first_row, i64(h_axis.out_step)), rh)
        inside = b.and_(b.icmp_unsigned("<", d, depth), b.icmp_unsigned("<", h, height))
        with b.if_then(inside):
            row_buffer = None
            if stack_rows:
                rows, item_rows = stack_rows
                row_buffer = b.gep(rows, [strided_offset(b, 0, (rd, rh), item_rows.strides[1:3])])
            unpack_row(k, unpack, b.add(b.mul(b.add(b.mul(n, depth), d), height), h), row_buffer)


def _each_row(k, p: Plan, c: Correlation, first_row, emit) -> None:
    """emit(qh) for the item's rows of positions qh that exist."""
    b = k.b
    with counted_loop(b, 2 * p.rows, name="r") as r:
        qh = b.add(first_row, r)
        with b.if_then(b.icmp_unsigned("<", qh, k.extent(c.counts[1]))):
            emit(qh)


def _corner_table(lowering: Lowering, c: Correlation, layout: Padded):
    """Element offsets in the padded input of the GEMM terms' patches (of tile (0, 0), position 0): a
    `size_table`."""
    _, sd, sh, sw = layout.strides()
    return size_table(lowering, "ctaps", [od * sd + oh * sh + ow * sw for (od, oh, ow), _ in c.taps])


class _Products:
    """M[xi][tile][oc] = sum over depth taps t and ic of V[t][xi][tile][ic] * U[ob][t][xi][ic][lane]:
    for each position xi and oc block, register tiles of points (the item's tiles, or a chunk's) x oc
    vectors; a chunk (of a symbolic length) in tiles chosen per call, as tile.py tiles such a row."""

    def __init__(self, lowering: Lowering, element, g, p: Plan, c: Correlation):
        block = p.gemm
        self.g, self.block, self.tw = g, block, p.chunk or p.rows * c.tiles[1]     # points: the item's tiles
        self.positions, self.depth_taps = c.transform.positions, len(c.taps)
        self.blocks = oc_blocks(g, block)
        self.oc_padded = self.blocks * block.width
        self.alpha = c.transform.alpha
        self.v_size = self.depth_taps * self.alpha * self.tw * g.icg       # one row group of positions
        self.m_size = self.positions * self.tw * self.oc_padded
        self.full, rest = (0, 0) if p.chunk else divmod(self.tw, block.points)
        self.tile = tile_function(lowering, element, block, block.points, g.icg)
        self.last = tile_function(lowering, element, block, rest, g.icg) if rest else None
        self.by_size = {count: tile_function(lowering, element, block, count, g.icg)
                        for count in sorted(set(run_time_tile_sizes(block.points)))} if p.chunk else {}
        self.v_taps = constant_table(lowering, "vtaps",
                                     [t * self.alpha * self.tw * g.icg for t in range(self.depth_taps)])
        self.u_taps = constant_table(lowering, "utaps",
                                     [t * self.positions * g.icg * block.width for t in range(self.depth_taps)])

    def emit(self, b: ir.IRBuilder, v, u, m, points, group: int) -> None:
        """The products of the first `points` tiles (an int: all of them) at the positions of row
        `group` (xi = group * alpha + j), whose V holds the row alone."""
        g, block = self.g, self.block
        taps = [b.gep(t, [i64(0), i64(0)]) for t in (self.v_taps, self.u_taps)]
        shape = [i64(self.depth_taps), i64(g.icg), i64(1), i64(block.width), i64(self.oc_padded),
                 *term_blocks(self.depth_taps, g.icg)]
        with counted_loop(b, self.alpha, name="j") as j, counted_loop(b, self.blocks, name="ob") as ob:
            xi = b.add(j, i64(group * self.alpha))
            v_xi = b.mul(j, i64(self.tw * g.icg))
            u_block = b.gep(u, [b.mul(b.add(b.mul(ob, i64(self.depth_taps * self.positions)), xi),
                                      i64(g.icg * block.width))])
            m_xi = b.add(b.mul(xi, i64(self.tw * self.oc_padded)), b.mul(ob, i64(block.width)))

            def call(function, first):
                v_first = b.gep(v, [b.add(v_xi, b.mul(first, i64(g.icg)))])
                m_first = b.gep(m, [b.add(m_xi, b.mul(first, i64(self.oc_padded)))])
                b.call(function, [v_first, u_block, m_first] + taps + shape)

            if self.by_size:
                emit_run_time_row(b, self, points, call)
            else:
                with counted_loop(b, self.full, name="tile") as t:
                    call(self.tile, b.mul(t, i64(block.points)))
                if self.last is not None:
                    call(self.last, i64(self.full * block.points))


def _transform_input(k, g, p: Plan, c: Correlation, corners, xp, v, item: tuple, chunk: _Chunk, group: int) -> None:
    """V[t][j][tile][ic] = (B^T d B)[group * alpha + j], d the alpha x alpha patch of GEMM term t for
    tile (row, tw) of the item's rows (its positions start at row `first_row`; tw in `chunk`) in
    depth position qd, its elements `step` input positions apart; one vector of channels at a time.
    Row `group` of B^T d reads only the patch rows its coefficients name (LLVM drops the other loads)."""
    b = k.b
    n, qd, first_row = item
    lanes, alpha = p.gemm.lanes, c.transform.alpha
    points = p.rows * chunk.stride
    sn, sd, sh, sw = p.layout.strides()
    d_axis, h_axis, w_axis = c.axes
    row_step, point_step = h_axis.step * sh, w_axis.step * sw            # between patch elements
    first = sum_of(b, b.mul(n, k.extent(sn)), b.mul(qd, k.extent(d_axis.step * sd)),
                   b.mul(first_row, k.extent(row_step)))
    with counted_loop(b, len(c.taps), name="t") as t, counted_loop(b, p.rows, name="row") as row, \
            counted_loop(b, chunk.count, name="tw") as tw, counted_loop(b, g.icg // lanes, name="cv") as cv:
        corner = sum_of(b, first, b.load(b.gep(corners, [i64(0), t])), b.mul(row, k.extent(2 * row_step)),
                        b.mul(_in_row(b, chunk, tw), k.extent(2 * point_step)), b.mul(cv, i64(lanes)))
        patch = [[load_vector(b, xp, b.add(corner, k.extent(i * row_step + j * point_step)), lanes)
                  for j in range(alpha)] for i in range(alpha)]
        tile = b.add(b.mul(row, i64(chunk.stride)), tw)
        target = b.add(b.mul(b.add(b.mul(t, i64(alpha * points)), tile), i64(g.icg)), b.mul(cv, i64(lanes)))
        for j, value in enumerate(separable_row(b, patch, c.transform.input, group)):
            store_vector(b, value, v, b.add(target, i64(j * points * g.icg)))


def _transform_output(k, g, p: Plan, c: Correlation, y_strides: tuple, m, yp, item: tuple,
                      chunk: _Chunk) -> ir.Value:
    """The scratch (element strides `y_strides`) at the 2 x 2 positions of each tile of the rows
    (those of `chunk`) = A^T M A, for the positions that exist; returns whether any transformed
    value (existing or not) is NaN or infinite."""
    b = k.b
    n, qd, first_row = item
    lanes, alpha = p.gemm.lanes, c.transform.alpha
    points = p.rows * chunk.stride
    oc_padded = oc_blocks(g, p.gemm) * p.gemm.width
    d_axis, h_axis, w_axis = c.axes
    yd = y_strides
    vtype = ir.VectorType(m.type.pointee, lanes)
    zero = ir.Constant(vtype, [0.0] * lanes)
    seen = k.alloca(vtype)
    b.store(zero, seen)
    item_first = sum_of(b, k.extent(d_axis.out_first * yd[1] + h_axis.out_first * yd[2] + w_axis.out_first * yd[3]),
                        b.mul(n, k.extent(yd[0])), b.mul(qd, k.extent(d_axis.out_step * yd[1])),
                        b.mul(first_row, k.extent(h_axis.out_step * yd[2])))
    with counted_loop(b, p.rows, name="row") as row, counted_loop(b, chunk.count, name="tw") as tw, \
            counted_loop(b, math.ceil(g.ocg / lanes), name="ov") as ov:
        qh = b.add(first_row, b.mul(row, i64(2)))
        tw_at = _in_row(b, chunk, tw)
        at = b.add(b.mul(b.add(b.mul(row, i64(chunk.stride)), tw), i64(oc_padded)), b.mul(ov, i64(lanes)))
        grid = [[load_vector(b, m, b.add(at, i64((alpha * i + j) * points * oc_padded)), lanes) for j in range(alpha)]
                for i in range(alpha)]
        outputs = separable(b, grid, c.transform.output)
        total = b.load(seen)
        for value in outputs:
            total = finite_probe(b, total, value)
        b.store(total, seen)
        corner = sum_of(b, item_first, b.mul(row, k.extent(2 * h_axis.out_step * yd[2])),
                        b.mul(tw_at, k.extent(2 * w_axis.out_step * yd[3])), b.mul(ov, i64(lanes)))
        for a in (0, 1):
            for e in (0, 1):
                exists = _both(b, _exists(k, qh, a, h_axis.count, 2 * p.rows * p.blocks_of_rows),
                               _exists(k, b.mul(tw_at, i64(2)), e, w_axis.count, 2 * c.tiles[1]))
                at_output = b.add(corner, k.extent(a * h_axis.out_step * yd[2] + e * w_axis.out_step * yd[3]))
                _maybe(b, exists, lambda value=outputs[2 * a + e], at_output=at_output:
                       store_vector(b, value, yp, at_output))
    return probed_not_finite(b, b.load(seen))


def _direct_row(k, tiles: RowTiles, offsets: tuple, n, qd, qh) -> None:
    with counted_loop(k.b, oc_blocks(tiles.g, tiles.block), name="ob") as ob:
        emit_row_block(k, tiles, offsets, n, qd, qh, i64(0), ob)


def _in_row(b: ir.IRBuilder, chunk: _Chunk, tw):
    """The tile index along w of the chunk's tile `tw`."""
    return tw if chunk.first is None else b.add(chunk.first, tw)


def _exists(k, first, second: int, size, covered):
    """Whether position first + second, of a tile's first position `first`, is inside an axis of
    `size` whose tiles cover `covered` positions (None: always; and for a symbolic size always when
    `second` is 0, since the items hold only the tiles that exist)."""
    if symbolic.is_symbolic(size):
        return None if second == 0 else k.b.icmp_unsigned("<", k.b.add(first, i64(second)), k.extent(size))
    if covered <= size:
        return None
    return k.b.icmp_unsigned("<", k.b.add(first, i64(second)), i64(size))


def _both(b: ir.IRBuilder, first, second):
    if first is None or second is None:
        return second if first is None else first
    return b.and_(first, second)


def _maybe(b: ir.IRBuilder, condition, emit) -> None:
    """emit() under `condition` (unconditionally if None)."""
    if condition is None:
        emit()
        return
    with b.if_then(condition):
        emit()
