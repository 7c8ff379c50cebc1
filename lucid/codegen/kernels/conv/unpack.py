"""Unpacking and epilogues: how a convolution's scratch result becomes its NCDHW output.

The kernels write their result to a scratch, channels-last (`ChannelsLastScratch`) or, vectorised
over output points, phase-major (`PhaseMajorScratch`). Unpacking reads it back one output row at a
time, adds the bias and applies the fused elementwise `Epilogue` (problem.py) to each element as
it is stored. A transposed conv whose weights are not all finite unpacks the exact sum instead
(nonfinite.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import llvmlite.ir as ir

from ....ir.graph import Value
from ...irgen import as_i64, counted_loop, element_type, i64, load_vector, unravel
from ...lowering import Lowering
from ..elementwise import operand_strides, store
from ..normalization import RowStatistics, RowSums
from .nonfinite import ExactSum
from .primitives import at_most, elementwise_at, per_channel_operands, sized, strided_offset, transposed_rows
from .problem import Blocking, Epilogue, Geometry, oc_blocks, to_3d


@dataclass(frozen=True)
class Unpack:
    """How the convolution's scratch result (at `offset` in the workspace; None when every row comes
    in a stack array of its own, `unpack_row`'s `row_buffer`) becomes the NCDHW output `y`, with the
    bias and the fused epilogue: `source.index(b, n, oc, d, h, w)` is the scratch
    index of output element (n, oc, d, h, w) (see `ChannelsLastScratch`, `PhaseMajorScratch`).
    With `exact`, rows are the exact sums instead when a weight is not finite. With `statistics`,
    each row's sums are stored as the row is."""

    y: Value
    bias: Value | None
    offset: int | None
    source: ChannelsLastScratch | PhaseMajorScratch | None     # None: the caller stores the rows itself
    epilogue: Epilogue | None = None
    exact: ExactSum | None = None
    statistics: RowStatistics | None = None


@dataclass(frozen=True)
class ChannelsLastScratch:
    """The scratch `yp[n][d][h][w][g*blocks*width + ocg]` (strides `channels_last_strides`): each group's
    channels start at a multiple of `lanes` and are padded to whole vectors of `lanes`."""

    strides: tuple           # (n, d, h, w)
    group_stride: int        # blocks * width
    ocg: int
    lanes: int

    def index(self, b, n, oc, d, h, w):
        """(In a kernel, of this scratch's `sized` form.)"""
        grp, ocg = b.udiv(oc, i64(self.ocg)), b.urem(oc, i64(self.ocg))
        return b.add(strided_offset(b, 0, (n, d, h, w, grp), self.strides + (self.group_stride,)), ocg)


def channels_last_source(y: Value, g: Geometry, block: Blocking) -> ChannelsLastScratch:
    """The channels-last scratch of output `y` for tiles of `block`."""
    return ChannelsLastScratch(channels_last_strides(y, g, block), oc_blocks(g, block) * block.width, g.ocg,
                               block.lanes)


def channels_last_size(y: Value, g: Geometry, block: Blocking) -> int:
    """Elements of the channels-last scratch of output `y`."""
    return channels_last_strides(y, g, block)[0] * y.shape[0]


def channels_last_strides(y: Value, g: Geometry, block: Blocking) -> tuple:
    """Element strides (n, d, h, w) of the channels-last scratch of output `y`."""
    depth, height, width = to_3d(y.shape[2:], 1)
    padded = g.groups * oc_blocks(g, block) * block.width
    return (depth * height * width * padded, height * width * padded, width * padded, padded)


@dataclass(frozen=True)
class PhaseMajorScratch:
    """The scratch yq[phase][n][oc][qd][qh][qw] of the strides `yq` (see over_points.py):
    output (d, h, w) is phase (d, h, w) mod stride at q = (d, h, w) // stride."""

    stride: tuple
    yq: tuple

    def index(self, b, n, oc, d, h, w):
        qs = [b.udiv(a, i64(s)) for a, s in zip((d, h, w), self.stride)]
        rs = [b.urem(a, i64(s)) for a, s in zip((d, h, w), self.stride)]
        phase = b.add(b.mul(b.add(b.mul(rs[0], i64(self.stride[1])), rs[1]), i64(self.stride[2])), rs[2])
        return b.add(strided_offset(b, 0, (phase, n, oc, qs[0], qs[1]), self.yq), qs[2])


def emit_unpack(lowering: Lowering, unpack: Unpack, name: str) -> None:
    """y = epilogue(scratch (+ bias)) as a kernel over the output rows (n, d, h)."""
    depth, height, _ = to_3d(unpack.y.shape[2:], 1)
    lowering.kernel(name, unpack.y.shape[0] * depth * height, lambda k, row: unpack_row(k, unpack, row),
                    moves_data=True)


def _spatial(k, y: Value) -> tuple:
    """(depth, height, width) of `y` in kernel `k` (see `primitives.sized`)."""
    return sized(k, to_3d(y.shape[2:], 1))


def unpack_row(k, unpack: Unpack, row, row_buffer: ir.Value | None = None) -> None:
    """y[n][oc][d][h][w] = epilogue(scratch[source.index(n, oc, d, h, w)] (+ bias[oc])) for one row
    `row` = (n, d, h): the scratch of a row is small enough to stay in L1 while it is read once per
    output channel. A channels-last scratch is transposed in registers, `lanes` channels by `lanes`
    positions at a time (element-wise it would take a gather or a scatter per vector). With a
    `row_buffer` (a stack array holding this row alone, at the scratch's strides across w and
    channels) the row is read there instead of from the scratch."""
    y = unpack.y
    depth, height, _ = _spatial(k, y)
    n, d, h = unravel(k.b, row, (sized(k, y.shape[0]), depth, height))
    if unpack.exact is None:
        _unpack_scratch_row(k, unpack, (n, d, h), row_buffer)
        return
    with k.b.if_else(unpack.exact.flags.all_finite(k)) as (finite, not_finite):
        with finite:
            _unpack_scratch_row(k, unpack, (n, d, h), row_buffer)
        with not_finite:
            with counted_loop(k.b, y.shape[1], name="oc") as oc:
                emit_channel_row(k, unpack, (n, oc, d, h), lambda w: unpack.exact.value(k, n, oc, (d, h, w)))


def rows_run_together(unpack: Unpack) -> bool:
    """Whether consecutive rows of an output plane can be unpacked as one run of points
    (`unpack_rows`): every other operand of the epilogue steps alike across h and w (its h stride
    is W times its w stride: a per-channel or a full-size operand, not one broadcast along w alone)."""
    if unpack.epilogue is None:
        return True
    width = to_3d(unpack.y.shape[2:], 1)[2]
    for node in unpack.epilogue.nodes:
        for position, value in enumerate(node.inputs):
            if value is not unpack.epilogue.source:
                strides = to_3d(operand_strides(node, position)[2:], 0)
                if strides[1] != width * strides[2]:
                    return False
    return True


def unpack_rows(k, unpack: Unpack, first_row, rows: int, value_at: Callable) -> None:
    """The output rows `first_row` ... `first_row` + `rows` - 1 (flat (n, d, h) indices, consecutive
    rows of one plane), point p of the run in channel oc being `value_at(oc, p)`: one loop over the
    run per output channel when `rows_run_together` (a row of 28 points alone would leave LLVM's
    vectorised loop a scalar tail in each row), else a loop per row."""
    b, y = k.b, unpack.y
    depth, height, width = _spatial(k, y)
    n, d, h = unravel(b, first_row, (sized(k, y.shape[0]), depth, height))
    together = rows_run_together(unpack) and unpack.statistics is None      # the sums are per row
    with counted_loop(b, y.shape[1], name="oc") as oc:
        if together:
            emit_channel_row(k, unpack, (n, oc, d, h), lambda p: value_at(oc, p), b.mul(i64(rows), as_i64(width)))
        else:
            with counted_loop(b, rows, name="row") as r:
                first = b.mul(r, as_i64(width))
                emit_channel_row(k, unpack, (n, oc, d, b.add(h, r)), lambda w: value_at(oc, b.add(first, w)))


def _unpack_scratch_row(k, unpack: Unpack, row: tuple, row_buffer: ir.Value | None) -> None:
    """The row (n, d, h) from the scratch, or from `row_buffer` (a channels-last scratch's row)."""
    y = unpack.y
    n, d, h = row
    if isinstance(unpack.source, ChannelsLastScratch):
        _unpack_row_by_tiles(k, unpack, unpack.source, (n, d, h), row_buffer)
        return
    assert row_buffer is None, "only a channels-last scratch has rows of its own"
    scratch = k.scratch_pointer(unpack.offset, element_type(y.dtype))
    source = sized(k, unpack.source)
    with counted_loop(k.b, y.shape[1], name="oc") as oc:
        emit_channel_row(k, unpack, (n, oc, d, h),
                          lambda w: k.b.load(k.b.gep(scratch, [source.index(k.b, n, oc, d, h, w)])))


def _unpack_row_by_tiles(k, unpack: Unpack, source: ChannelsLastScratch, row: tuple,
                         row_buffer: ir.Value | None) -> None:
    """For each group's tile of `lanes` channels: transpose the row's positions (from the scratch,
    or `row_buffer`) into a stack array, then write those channels' output rows from it."""
    b, y = k.b, unpack.y
    element = element_type(y.dtype)
    lanes, width, groups = source.lanes, to_3d(y.shape[2:], 1)[2], y.shape[1] // source.ocg
    channel_tiles = math.ceil(source.ocg / lanes)
    n, d, h = row
    source = sized(k, source)
    if row_buffer is None:
        scratch, row_start = k.scratch_pointer(unpack.offset, element), strided_offset(b, 0, row, source.strides[:3])
    else:
        scratch, row_start = row_buffer, i64(0)
    with counted_loop(b, groups * channel_tiles, name="tile") as tile:
        grp, ct = unravel(b, tile, (groups, channel_tiles))
        first = b.add(row_start, b.add(b.mul(grp, i64(source.group_stride)), b.mul(ct, i64(lanes))))
        columns, stride = transposed_rows(k, element, width, lanes,
                                          lambda w: load_vector(b, scratch,
                                                                b.add(first, b.mul(w, as_i64(source.strides[3]))),
                                                                lanes))
        first_oc = b.add(b.mul(grp, i64(source.ocg)), b.mul(ct, i64(lanes)))
        with counted_loop(b, at_most(b, b.sub(i64(source.ocg), b.mul(ct, i64(lanes))), lanes), name="j") as j:
            emit_channel_row(k, unpack, (n, b.add(first_oc, j), d, h),
                              lambda w: b.load(b.gep(columns, [b.add(b.mul(j, as_i64(stride)), w)])))


def emit_channel_row(k, unpack: Unpack, index: tuple, value_at: Callable, points=None) -> None:
    """y[n][oc][d][h][w] = epilogue(value_at(w) (+ bias[oc])) for every w of the row `index` = (n, oc, d, h),
    or for w < `points` running on through the rows after it (see `unpack_rows`; not with
    `statistics`, whose sums are the row's); of `unpack` it reads the output, the bias, the
    epilogue and the statistics only."""
    y, bias, epilogue = unpack.y, unpack.bias, unpack.epilogue
    b = k.b
    n, oc, d, h = index
    channels = y.shape[1]
    depth, height, width = _spatial(k, y)
    target = epilogue.output if epilogue else y
    row = b.add(b.mul(b.add(b.mul(b.add(b.mul(n, i64(channels)), oc), as_i64(depth)), d), as_i64(height)), h)
    first = b.mul(row, as_i64(width))
    shift = b.load(b.gep(k.pointer(bias), [oc])) if bias is not None else None
    constants = per_channel_operands(k, epilogue.nodes, n, oc, {epilogue.source}) if epilogue else {}

    def stored(w):
        value = value_at(w)
        if shift is not None:
            value = b.fadd(value, shift)
        return _apply_epilogue(k, epilogue, value, b.add(first, w), (n, oc, d, h, w), constants) if epilogue else value

    sums = RowSums(k, stored(i64(0))) if unpack.statistics is not None else None
    count = width if points is None else points
    with counted_loop(b, count, name="w", masked_tail=_short_tail(k, count, y)) as w:
        value = stored(w)
        store(k, value, target, b.add(first, w))
        if sums is not None:
            sums.add(value)
    if sums is not None:
        sums.store(k, unpack.statistics, row, width)


def _short_tail(k, count, y: Value) -> bool:
    """Whether a row loop of `count` points ends with a part of a vector, in a row short enough for
    that tail to weigh (under four vectors): its last vector is then better masked
    (`irgen.vectorize_masked`: R2Plus1dNet's 16 -> 36 Winograd layer on 28 x 28 planes 6.5-7% faster).
    A row of whole vectors gains nothing, a long row's tail weighs little, and a masked loop loses
    LLVM's interleaving (masking every row: UNet3D's direct and planes kernels, rows of 64 points
    and runs of rows, 12-16% slower in one A/B)."""
    lanes = k.target.lanes(y.dtype)
    return isinstance(count, int) and count % lanes != 0 and count < 4 * lanes


def _apply_epilogue(k, epilogue: Epilogue, value, flat, index5: tuple, constants: dict):
    """Evaluate the epilogue chain on one element; the operands in `constants` are given (read once per
    channel row), the others are read at the element's index."""
    return elementwise_at(k, epilogue.nodes, epilogue.output.shape, flat, index5, {**constants, epilogue.source: value})
