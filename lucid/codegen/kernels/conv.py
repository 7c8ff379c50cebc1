"""Convolution kernels: conv, conv_transpose and conv_weight_grad in 1-D/2-D/3-D, as vectorised loops.

Every convolution is handled as 3-D (missing leading spatial axes have size 1). A node first goes,
as a `ConvProblem`, to the faster algorithms registered in `FAST_ALGORITHMS` (winograd.py); if none
takes it, the direct algorithm below runs it in four steps, each a kernel, with scratch in the
node's workspace:
1. pack the input into a zero-padded channels-last copy `xp[n][d][h][w][c]`, so the inner loops
   never test bounds;
2. pack the weight into `wp[g][oc block][tap][ic][oc lane]`, output channels padded with zeros to
   whole vector blocks;
3. the direct convolution: for one row of output points and one block of output channels, a
   register tile of `points` output points × `vectors` vectors of output channels accumulates, over
   every tap and input channel, a broadcast input value times a weight vector (FMA). The result goes
   to a channels-last scratch `yp[n][d][h][w][oc]`;
4. unpack `yp` to the NCDHW output, adding the bias.

Vectors are the target's widest (`Target.vector_floats`, never assumed), narrowed for layers with
few output channels; the register tile is sized to the register file (32 vector registers with
AVX-512, else 16).

A transposed convolution never multiplies inserted zeros: its output splits into stride phases
(positions o = q * stride + r); phase r reads input q + c for each tap whose offset c is whole, so
each phase is a stride-1 direct convolution with its own taps, written to every stride-th output.
The weight gradient accumulates, for a tile of input channels × output-channel vectors, input value
× output-gradient vector over every output position, from copies of the input and the gradient packed
in blocks of one tile's channels; work items are (part of the positions, group, oc block). When the
input gradient's conv just packed one of the two (`Lowering.leave_packed`), it reads that copy.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable

import llvmlite.ir as ir

from ...ir.graph import Node, Value
from ..irgen import (F32, counted_loop, element_type, i64, intrinsic, linear_index, load_vector, masked_load_vector,
                     masked_store_vector, splat, store_vector, transpose, unravel, vector_type)
from ..lowering import Lowering, lowers
from .elementwise import contiguous_strides, load, operand_strides, store
from .scalar import Scalars, evaluate


# ---------------------------------------------------------------------------------------------
# Geometry and blocking


def _three(values, fill) -> tuple:
    values = tuple(values)
    return (fill,) * (3 - len(values)) + values


@dataclass(frozen=True)
class Geometry:
    """A convolution's sizes as 3-D: input (N, C, in_sp), G groups of ICg -> OCg channels."""

    n: int
    groups: int
    icg: int
    ocg: int
    in_sp: tuple
    kernel: tuple
    stride: tuple
    dilation: tuple
    pad_lo: tuple


@dataclass(frozen=True)
class Blocking:
    lanes: int        # elements per vector
    vectors: int      # vectors of output channels per tile
    points: int       # output points per tile

    @property
    def width(self) -> int:
        return self.lanes * self.vectors


#: Most output points in a register tile (with one vector of channels a tile could hold more, but its
#: loads would outnumber its FMAs).
MOST_POINTS = 14


def choose_blocking(ocg: int, points_available: int, lowering: Lowering, dtype) -> Blocking:
    """Vectors of output channels (1 or 2) and points per tile: points x vectors accumulators, one
    register per weight vector and one for the broadcast input value fit the register file (32
    vector registers with AVX-512, else 16). Tiles of a row are balanced."""
    lanes = lowering.target.lanes(dtype)
    while lanes > 4 and lanes // 2 >= ocg:
        lanes //= 2
    vectors = 2 if ocg > lanes else 1
    registers = 32 if lowering.target.vector_floats == 16 else 16
    most = max(1, min((registers - vectors - 2) // vectors, MOST_POINTS))
    tiles = math.ceil(max(points_available, 1) / most)
    return Blocking(lanes, vectors, math.ceil(max(points_available, 1) / tiles))     # balanced tiles


def _geometry(x: Value, kernel: tuple, attrs: dict, groups: int, icg: int, ocg: int) -> Geometry:
    return Geometry(x.shape[0], groups, icg, ocg, _three(x.shape[2:], 1), _three(kernel, 1),
                    _three(attrs["stride"], 1), _three(attrs["dilation"], 1),
                    _three(tuple(lo for lo, _ in attrs["padding"]), 0))


# ---------------------------------------------------------------------------------------------
# Step 1: channels-last, zero-padded input


@dataclass(frozen=True)
class Padded:
    """Layout of a zero-padded copy of an input: extents (Dp, Hp, Wp), where input (0,0,0) sits, the
    channel count, and whether it is channels-last (`xp[n][d][h][w][c]`, the default) or planar
    (`xp[n][c][d][h][w]`, for convolutions vectorised over output points)."""

    extent: tuple
    origin: tuple
    channels: int
    planar: bool = False

    def strides(self) -> tuple:
        """Element strides of (n, d, h, w); see `channel_stride` for c."""
        dp, hp, wp = self.extent
        step = 1 if self.planar else self.channels
        return (dp * hp * wp * self.channels, hp * wp * step, wp * step, step)

    @property
    def channel_stride(self) -> int:
        return math.prod(self.extent) if self.planar else 1

    def size(self, n: int) -> int:
        return n * self.strides()[0]


def emit_pack_input(lowering: Lowering, x: Value, layout: Padded, offset: int, name: str) -> None:
    """xp[n][d][h][w][c] (or xp[n][c][d][h][w]) = x[n][c][d - od][h - oh][w - ow] inside the input,
    else 0; a work item is one padded row (n, d, h). The channels-last copy is the one-block case of
    `emit_pack_channel_blocks`."""
    if not layout.planar:
        assert layout.channels == x.shape[1], (layout, x.shape)
        emit_pack_channel_blocks(lowering, x, layout, 1, offset, name)
        return
    element = element_type(x.dtype)
    n, channels = x.shape[0], x.shape[1]
    depth, height, width = _three(x.shape[2:], 1)
    dp, hp, wp = layout.extent
    od, oh, ow = layout.origin
    sn, sd, sh, sw = layout.strides()
    plane = depth * height * width

    def body(k, item):
        b = k.b
        bn, d, h = unravel(b, item, (n, dp, hp))
        xp, src = k.scratch_pointer(offset, element), k.pointer(x)
        row = _dot(b, 0, (bn, d, h), (sn, sd, sh))
        xd, xh = b.sub(d, i64(od)), b.sub(h, i64(oh))
        row_inside = b.and_(_in_range(b, xd, depth), _in_range(b, xh, height))
        first = b.mul(b.add(b.mul(b.add(b.mul(bn, i64(channels * depth)), xd), i64(height)), xh), i64(width))
        with counted_loop(b, channels, name="c") as c, counted_loop(b, wp, name="w") as w:
            xw = b.sub(w, i64(ow))
            inside = b.and_(row_inside, _in_range(b, xw, width))
            source = b.select(inside, b.add(first, xw), i64(0))
            value = b.load(b.gep(src, [b.add(source, b.mul(c, i64(plane)))]))
            target = b.add(row, b.add(b.mul(w, i64(sw)), b.mul(c, i64(layout.channel_stride))))
            b.store(b.select(inside, value, ir.Constant(element, 0.0)), b.gep(xp, [target]))

    lowering.kernel(name, n * dp * hp, body)


def _in_range(b: ir.IRBuilder, index, size: int):
    return b.icmp_unsigned("<", index, i64(size))     # unsigned: negative indices are huge


# ---------------------------------------------------------------------------------------------
# Step 2: weight blocks


@dataclass(frozen=True)
class WeightLayout:
    """How the weight tensor is read: element (g, oc, ic, tap) is at g*sg + oc*soc + ic*sic + taps[t]."""

    sg: int
    soc: int
    sic: int
    taps: tuple          # linear kernel offsets of the taps, in packing order


def emit_pack_weight(lowering: Lowering, w: Value, g: Geometry, block: Blocking, layout: WeightLayout,
                     offset: int, name: str) -> None:
    """wp[g][ob][t][ic][lane] = w[g, ob*width + lane, ic, taps[t]] (0 past the group's channels).

    A work item is (g, ob, ic). It reads its `width` channels' kernels (contiguous in w) a vector of
    kernel positions at a time, transposes each square of `lanes` channels in registers into a
    stack array kernel[vector][k][lane], then writes its block's rows tap by tap, each row whole (so
    a cache line of wp is written at once). It runs alongside the input packing: it waits for no
    kernel."""
    element = element_type(w.dtype)
    lanes = lowering.target.lanes(w.dtype)
    blocks = math.ceil(g.ocg / block.width)
    tap_count, kernel_size = len(layout.taps), math.prod(w.shape[2:])
    assert max(layout.taps, default=0) < kernel_size, (layout.taps, w.shape)
    k_tiles = math.ceil(kernel_size / lanes)
    vectors = range(0, block.width, lanes)
    table = _table(lowering, "wtaps", layout.taps)
    row_mask = ir.Constant(vector_type(ir.IntType(1), lanes), [j < block.width % lanes for j in range(lanes)])

    def body(k, item):
        b = k.b
        grp, ob, ic = unravel(b, item, (g.groups, blocks, g.icg))
        wp, src = k.scratch_pointer(offset, element), k.pointer(w)
        kernel = k.alloca(element, len(vectors) * k_tiles * lanes * lanes, name="kernel")
        with counted_loop(b, k_tiles, name="kt") as kt:
            k0 = b.mul(kt, i64(lanes))
            in_kernel = _positions_inside(b, k0, lanes, kernel_size)

            def channel_kernel(oc):
                mask = b.and_(in_kernel, splat(b, b.icmp_unsigned("<", oc, i64(g.ocg)), lanes))
                row = _dot(b, 0, (grp, oc, ic), (layout.sg, layout.soc, layout.sic))
                return masked_load_vector(b, k.module, src, b.add(row, k0), mask)
            for v, first_lane in enumerate(vectors):
                oc0 = b.add(b.mul(ob, i64(block.width)), i64(first_lane))
                square = [channel_kernel(b.add(oc0, i64(lane))) for lane in range(lanes)]
                for j, column in enumerate(transpose(b, square)):
                    store_vector(b, column, kernel, b.add(b.mul(b.add(k0, i64(j)), i64(lanes)),
                                                          i64(v * k_tiles * lanes * lanes)))
        dst = b.add(b.mul(b.add(b.mul(grp, i64(blocks)), ob), i64(tap_count * g.icg * block.width)),
                    b.mul(ic, i64(block.width)))
        with counted_loop(b, tap_count, name="t") as t:
            tap = b.load(b.gep(table, [i64(0), t]))
            at = b.add(dst, b.mul(t, i64(g.icg * block.width)))
            for v, first_lane in enumerate(vectors):
                vector = load_vector(b, kernel, b.add(b.mul(tap, i64(lanes)), i64(v * k_tiles * lanes * lanes)), lanes)
                if first_lane + lanes <= block.width:
                    store_vector(b, vector, wp, b.add(at, i64(first_lane)))
                else:
                    masked_store_vector(b, k.module, vector, wp, b.add(at, i64(first_lane)), row_mask)

    lowering.kernel(name, g.groups * blocks * g.icg, body, waits=False)


def _table(lowering: Lowering, name: str, values) -> ir.GlobalVariable:
    """A constant i64 array in the module of the next kernel, named `name` (numbered if taken)."""
    kind = ir.ArrayType(ir.IntType(64), max(len(values), 1))
    module = lowering.module
    name = next(n for n in (f"{name}{i}" if i else name for i in range(len(module.globals) + 1))
                if n not in module.globals)
    table = ir.GlobalVariable(module, kind, name)
    table.initializer = ir.Constant(kind, [int(v) for v in values] or [0])
    table.global_constant = True
    table.linkage = "internal"
    return table


# ---------------------------------------------------------------------------------------------
# Step 3: the direct convolution over rows of output points


@dataclass(frozen=True)
class Direct:
    """One direct-convolution kernel: rows (n, qd, qh) × (g, ob) of `points` points along w.

    Input point (row, p) starts at x0 + n*sx[0] + qd*sx[1] + qh*sx[2] + g*icg + p*sx_point; tap t adds
    taps[t]. Output point goes to y0 + n*sy[0] + qd*sy[1] + qh*sy[2] + (g*blocks + ob)*width + p*sy_point.
    Weights of block (g, ob) start at w0 + (g*blocks + ob)*w_taps*icg*width: the packed weights
    hold w_taps taps per block (those of all the stride phases of a transposed conv, this kernel's
    starting at w0).
    """

    rows: tuple          # (N, Qd, Qh)
    points: int          # Qw
    x0: int
    sx: tuple
    sx_point: int
    taps: tuple
    y0: int
    sy: tuple
    sy_point: int
    w0: int
    w_taps: int


def emit_direct(lowering: Lowering, dtype, g: Geometry, block: Blocking, spec: Direct,
                offsets: tuple, name: str, unpack: Unpack | None = None, waits: bool = True) -> None:
    """The direct convolution of `spec`. Work items are rows × (group, oc block); with `unpack`
    (when the rows are the output's rows, as in a conv) an item is a whole row, all its channel
    blocks, which it then unpacks while the row is still in L1."""
    tiles = row_tiles(lowering, element_type(dtype), g, block, spec)
    blocks = _blocks(g, block)

    def body(k, item):
        if unpack is None:
            emit_row_block(k, tiles, offsets, *unravel(k.b, item, spec.rows + (g.groups, blocks)))
            return
        n, qd, qh = unravel(k.b, item, spec.rows)
        with counted_loop(k.b, g.groups * blocks, name="gob") as gob:
            emit_row_block(k, tiles, offsets, n, qd, qh, *unravel(k.b, gob, (g.groups, blocks)))
        unpack_row(k, unpack, item)

    rows = math.prod(spec.rows)
    lowering.kernel(name, rows if unpack else rows * g.groups * blocks, body, waits)


@dataclass(frozen=True)
class RowTiles:
    """What a kernel calls to convolve one row of `spec` for one (group, oc block): `full` calls of
    the register tile `tile`, then `last` (fewer points) if the row does not divide into tiles."""

    element: ir.Type
    g: Geometry
    block: Blocking
    spec: Direct
    full: int
    tile: ir.Function
    last: ir.Function | None
    taps: ir.GlobalVariable
    weight_taps: ir.GlobalVariable


def row_tiles(lowering: Lowering, element, g: Geometry, block: Blocking, spec: Direct) -> RowTiles:
    """The tile functions and tap tables of `spec`, made in the module of the next kernel."""
    full, rest = divmod(spec.points, block.points)
    tap_count = len(spec.taps)
    return RowTiles(element, g, block, spec, full,
                    tile_function(lowering, element, block, block.points, spec.sx_point),
                    tile_function(lowering, element, block, rest, spec.sx_point) if rest else None,
                    _table(lowering, "taps", spec.taps),
                    _table(lowering, "wtaps", [t * g.icg * block.width for t in range(tap_count)]))


def emit_row_block(k, tiles: RowTiles, offsets: tuple, n, qd, qh, grp, ob) -> None:
    """Row (n, qd, qh) of `tiles.spec` for channel block (grp, ob): input, packed weights and
    output scratch at the workspace `offsets`."""
    b = k.b
    g, block, spec = tiles.g, tiles.block, tiles.spec
    blocks = _blocks(g, block)
    xp, wp, yp = (k.scratch_pointer(o, tiles.element) for o in offsets)
    x_row = _dot(b, spec.x0, (n, qd, qh, grp), spec.sx + (g.icg,))
    y_row = b.add(_dot(b, spec.y0, (n, qd, qh), spec.sy), b.mul(b.add(b.mul(grp, i64(blocks)), ob), i64(block.width)))
    w_row = b.add(i64(spec.w0), b.mul(b.add(b.mul(grp, i64(blocks)), ob), i64(spec.w_taps * g.icg * block.width)))
    taps = [b.gep(t, [i64(0), i64(0)]) for t in (tiles.taps, tiles.weight_taps)]
    shape = [i64(len(spec.taps)), i64(g.icg), i64(1), i64(block.width), i64(spec.sy_point)]

    def call(function, first):
        x_first = b.gep(xp, [b.add(x_row, b.mul(first, i64(spec.sx_point)))])
        y_first = b.gep(yp, [b.add(y_row, b.mul(first, i64(spec.sy_point)))])
        b.call(function, [x_first, b.gep(wp, [w_row]), y_first] + taps + shape)

    with counted_loop(b, tiles.full, name="tile") as p:
        call(tiles.tile, b.mul(p, i64(block.points)))
    if tiles.last is not None:
        call(tiles.last, i64(tiles.full * block.points))


def tile_function(lowering: Lowering, element, block: Blocking, count: int, s_step: int) -> ir.Function:
    """void tile(s, v, y, s_taps, v_taps, tap_count, icg, s_ic, v_ic, y_step): the register tile of
    `count` rows × `block.vectors` vectors, shared by every convolution of the module with this
    blocking and row step (a constant, so the scalar operands of the rows are immediate offsets).

    y[r*y_step + j*lanes + lane] = sum over t < tap_count, ic < icg of
        s[s_taps[t] + ic*s_ic + r*s_step] * v[v_taps[t] + ic*v_ic + j*lanes + lane]
    i.e. a broadcast scalar times a vector, accumulated with FMA. For a convolution vectorised over
    output channels the scalars are input values (rows: output points) and the vectors weight rows;
    vectorised over output points, the scalars are weights (rows: output channels) and the vectors
    input rows."""
    kind = "f32" if element == F32 else "f64"
    name = f"conv_tile_{kind}_{block.lanes}x{block.vectors}x{count}_step{s_step}"
    if name in lowering.module.globals:
        return lowering.module.globals[name]
    pointer = element.as_pointer()
    i64t = ir.IntType(64)
    fn = ir.Function(lowering.module, ir.FunctionType(ir.VoidType(), [pointer] * 3 + [i64t.as_pointer()] * 2 + [i64t] * 5),
                     name)
    fn.linkage = "internal"
    for argument in fn.args[:3]:
        argument.add_attribute("noalias")
    s, v, y, s_taps, v_taps, tap_count, icg, s_ic, v_ic, y_step = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vtype = ir.VectorType(element, block.lanes)
    fma = intrinsic(lowering.module, f"llvm.fma.v{block.lanes}{kind}", vtype, [vtype] * 3)
    accumulators = b.alloca(vtype, count * block.vectors)
    _zero_tile(b, accumulators, count * block.vectors, vtype)
    with counted_loop(b, tap_count, name="t") as t:
        s_tap = b.gep(s, [b.load(b.gep(s_taps, [t]))])
        v_tap = b.gep(v, [b.load(b.gep(v_taps, [t]))])
        with counted_loop(b, icg, name="ic") as ic:
            s_ic_at, v_ic_at = b.mul(ic, s_ic), b.mul(ic, v_ic)
            vectors = [load_vector(b, v_tap, b.add(v_ic_at, i64(j * block.lanes)), block.lanes) for j in range(block.vectors)]
            for r in range(count):
                broadcast = splat(b, b.load(b.gep(s_tap, [b.add(s_ic_at, i64(r * s_step))])), block.lanes)
                for j in range(block.vectors):
                    slot = b.gep(accumulators, [i64(r * block.vectors + j)])
                    b.store(b.call(fma, [broadcast, vectors[j], b.load(slot)]), slot)
    for r in range(count):
        for j in range(block.vectors):
            value = b.load(b.gep(accumulators, [i64(r * block.vectors + j)]))
            store_vector(b, value, y, b.add(b.mul(i64(r), y_step), i64(j * block.lanes)))
    b.ret_void()
    return fn


def _dot(b: ir.IRBuilder, base: int, indices, strides) -> ir.Value:
    total = i64(base)
    for index, stride in zip(indices, strides):
        if stride:
            total = b.add(total, b.mul(index, i64(stride)))
    return total


def _zero_tile(b: ir.IRBuilder, accumulators, count: int, vtype) -> None:
    zero = ir.Constant(vtype, [0.0] * vtype.count)
    for slot in range(count):
        b.store(zero, b.gep(accumulators, [i64(slot)]))


# ---------------------------------------------------------------------------------------------
# Step 4: back to NCDHW, with the bias


@dataclass(frozen=True)
class Epilogue:
    """Elementwise nodes applied to each convolution output element before it is stored: `nodes`
    read the convolution's value `source` and other operands; the last one's value goes to `output`."""

    nodes: tuple
    source: Value
    output: Value


@dataclass(frozen=True)
class Unpack:
    """How the convolution's scratch result (at `offset` in the workspace) becomes the NCDHW output
    `y`, with the bias and the fused epilogue: `source.index(b, n, oc, d, h, w)` is the scratch
    index of output element (n, oc, d, h, w) (see `ChannelsLastScratch`, `PhaseMajorScratch`)."""

    y: Value
    bias: Value | None
    offset: int
    source: ChannelsLastScratch | PhaseMajorScratch
    epilogue: Epilogue | None = None


@dataclass(frozen=True)
class ChannelsLastScratch:
    """The scratch `yp[n][d][h][w][g*blocks*width + ocg]` (strides `_yp_strides`): each group's
    channels start at a multiple of `lanes` and are padded to whole vectors of `lanes`."""

    strides: tuple           # (n, d, h, w)
    group_stride: int        # blocks * width
    ocg: int
    lanes: int

    def index(self, b, n, oc, d, h, w):
        grp, ocg = b.udiv(oc, i64(self.ocg)), b.urem(oc, i64(self.ocg))
        return b.add(_dot(b, 0, (n, d, h, w, grp), self.strides + (self.group_stride,)), ocg)


def channels_last_source(y: Value, g: Geometry, block: Blocking) -> ChannelsLastScratch:
    return ChannelsLastScratch(_yp_strides(y, g, block), _blocks(g, block) * block.width, g.ocg, block.lanes)


def emit_unpack(lowering: Lowering, unpack: Unpack, name: str) -> None:
    """y = epilogue(scratch (+ bias)) as a kernel over the output rows (n, d, h)."""
    depth, height, _ = _three(unpack.y.shape[2:], 1)
    lowering.kernel(name, unpack.y.shape[0] * depth * height, lambda k, row: unpack_row(k, unpack, row))


def unpack_row(k, unpack: Unpack, row) -> None:
    """y[n][oc][d][h][w] = epilogue(scratch[source.index(n, oc, d, h, w)] (+ bias[oc])) for one row
    `row` = (n, d, h): the scratch of a row is small enough to stay in L1 while it is read once per
    output channel. A channels-last scratch is transposed in registers, `lanes` channels by `lanes`
    positions at a time (element-wise it would take a gather or a scatter per vector)."""
    y = unpack.y
    depth, height, width = _three(y.shape[2:], 1)
    n, d, h = unravel(k.b, row, (y.shape[0], depth, height))
    if isinstance(unpack.source, ChannelsLastScratch):
        _unpack_row_by_tiles(k, unpack, unpack.source, (n, d, h))
        return
    scratch = k.scratch_pointer(unpack.offset, element_type(y.dtype))
    with counted_loop(k.b, y.shape[1], name="oc") as oc:
        _emit_channel_row(k, unpack, (n, oc, d, h),
                          lambda w: k.b.load(k.b.gep(scratch, [unpack.source.index(k.b, n, oc, d, h, w)])))


def _unpack_row_by_tiles(k, unpack: Unpack, source: ChannelsLastScratch, row: tuple) -> None:
    """For each group's tile of `lanes` channels: transpose the row's positions into a stack array,
    then write those channels' output rows from it."""
    b, y = k.b, unpack.y
    element = element_type(y.dtype)
    lanes, width, groups = source.lanes, _three(y.shape[2:], 1)[2], y.shape[1] // source.ocg
    channel_tiles = math.ceil(source.ocg / lanes)
    scratch = k.scratch_pointer(unpack.offset, element)
    n, d, h = row
    row_start = _dot(b, 0, row, source.strides[:3])
    with counted_loop(b, groups * channel_tiles, name="tile") as tile:
        grp, ct = unravel(b, tile, (groups, channel_tiles))
        first = b.add(row_start, b.add(b.mul(grp, i64(source.group_stride)), b.mul(ct, i64(lanes))))
        columns, stride = transposed_rows(k, element, width, lanes,
                                          lambda w: load_vector(b, scratch, b.add(first, b.mul(w, i64(source.strides[3]))),
                                                                lanes))
        first_oc = b.add(b.mul(grp, i64(source.ocg)), b.mul(ct, i64(lanes)))
        with counted_loop(b, _at_most(b, b.sub(i64(source.ocg), b.mul(ct, i64(lanes))), lanes), name="j") as j:
            _emit_channel_row(k, unpack, (n, b.add(first_oc, j), d, h),
                              lambda w: b.load(b.gep(columns, [b.add(b.mul(j, i64(stride)), w)])))


def transposed_rows(k, element: ir.Type, rows: int, lanes: int, row_vector: Callable) -> tuple:
    """A stack array `columns` with columns[j * stride + r] = row_vector(r)[j] for r < rows, j < lanes,
    and `stride` (rows rounded up to whole tiles): each tile of `lanes` rows is transposed in
    registers (element by element it would take a gather or a scatter per vector). The last tile
    reads its last row again for the rows past the end."""
    b = k.b
    tiles = math.ceil(rows / lanes)
    columns = k.alloca(element, lanes * tiles * lanes, name="columns")
    with counted_loop(b, tiles, name="rt") as rt:
        first = b.mul(rt, i64(lanes))
        vectors = [row_vector(_at_most(b, b.add(first, i64(i)), rows - 1)) for i in range(lanes)]
        for j, column in enumerate(transpose(b, vectors)):
            store_vector(b, column, columns, b.add(first, i64(j * tiles * lanes)))
    return columns, tiles * lanes


def _at_most(b: ir.IRBuilder, value, most: int):
    return b.select(b.icmp_signed("<", value, i64(most)), value, i64(most))


def _emit_channel_row(k, unpack: Unpack, index: tuple, value_at: Callable) -> None:
    """y[n][oc][d][h][w] = epilogue(value_at(w) (+ bias[oc])) for every w of the row `index` = (n, oc, d, h)."""
    y, bias, epilogue = unpack.y, unpack.bias, unpack.epilogue
    b = k.b
    n, oc, d, h = index
    channels = y.shape[1]
    depth, height, width = _three(y.shape[2:], 1)
    target = epilogue.output if epilogue else y
    first = b.mul(b.add(b.mul(b.add(b.mul(b.add(b.mul(n, i64(channels)), oc), i64(depth)), d), i64(height)), h),
                  i64(width))
    shift = b.load(b.gep(k.pointer(bias), [oc])) if bias is not None else None
    with counted_loop(b, width, name="w") as w:
        value = value_at(w)
        if shift is not None:
            value = b.fadd(value, shift)
        at = b.add(first, w)
        if epilogue is not None:
            value = _apply_epilogue(k, epilogue, value, at, (n, oc, d, h, w))
        store(k, value, target, at)


def _apply_epilogue(k, epilogue: Epilogue, value, flat, index5: tuple):
    """Evaluate the epilogue chain on one element; other operands are read at the element's index."""
    s = Scalars(k.b, k.module)
    shape = epilogue.output.shape
    index = index5[:2] + index5[5 - (len(shape) - 2):]

    def operand(node, position):
        v = node.inputs[position]
        if v is epilogue.source:
            return value
        strides = operand_strides(node, position)
        at = flat if strides == contiguous_strides(shape) else linear_index(k.b, list(index), strides)
        return load(k, s, v, at)

    return evaluate(s, list(epilogue.nodes), operand)[epilogue.nodes[-1].output]


# ---------------------------------------------------------------------------------------------
# The three operators


#: A conv with at least this many output rows unpacks each row in its direct kernel (fewer rows would
#: leave too few work items to share between threads).
ROWS_TO_UNPACK_IN_PLACE = 16


@dataclass(frozen=True)
class ConvProblem:
    """A conv or conv_transpose node as the algorithms see it: input `x` (N, groups * icg, ...),
    output `y`, geometry `g`, and where weight element (g, oc, ic, tap) of `w` lives (`weights`,
    taps in `_kernel_taps(g.kernel)` order)."""

    x: Value
    w: Value
    bias: Value | None
    y: Value
    g: Geometry
    weights: WeightLayout
    epilogue: Epilogue | None
    transposed: bool = False


#: Algorithms faster than the direct one for some convolutions, registered by their modules (see
#: winograd.py). Each `algorithm(lowering, problem)` lowers the problem and returns True, or returns
#: False, emitting nothing, when it does not apply or would not be faster.
FAST_ALGORITHMS: list[Callable] = []


def _lower_fast(lowering: Lowering, problem: ConvProblem) -> bool:
    return any(algorithm(lowering, problem) for algorithm in FAST_ALGORITHMS)


@lowers("conv")
def lower_conv(lowering: Lowering, node: Node, epilogue: Epilogue | None = None) -> None:
    x, w, bias, y, groups = _operands(node)
    g = _geometry(x, w.shape[2:], node.attrs, groups, w.shape[1], w.shape[0] // groups)
    k_size = math.prod(w.shape[2:])
    weights = WeightLayout(g.ocg * g.icg * k_size, g.icg * k_size, k_size,
                           tuple(_linear_taps(g.kernel, _kernel_taps(g.kernel))))
    problem = ConvProblem(x, w, bias, y, g, weights, epilogue)
    if not _lower_fast(lowering, problem):
        _lower_direct_conv(lowering, problem)


def conv_input_layout(g: Geometry, out_sp: tuple, channels: int) -> Padded:
    """The zero-padded channels-last input a direct conv with outputs `out_sp` reads."""
    return Padded(tuple((o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_sp, g.stride, g.kernel, g.dilation)),
                  g.pad_lo, channels)


def conv_direct_spec(g: Geometry, out_sp: tuple, layout: Padded, y_strides: tuple) -> Direct:
    """The direct conv over rows of `out_sp` reading `layout` and writing channels-last scratch of
    element strides `y_strides` (n, d, h, w)."""
    sn, sd, sh, sc = layout.strides()
    return Direct(rows=(g.n,) + out_sp[:2], points=out_sp[2], x0=0,
                  sx=(sn, g.stride[0] * sd, g.stride[1] * sh), sx_point=g.stride[2] * sc,
                  taps=tuple(a * g.dilation[0] * sd + b_ * g.dilation[1] * sh + c * g.dilation[2] * sc
                             for a, b_, c in _kernel_taps(g.kernel)),
                  y0=0, sy=y_strides[:3], sy_point=y_strides[3], w0=0, w_taps=math.prod(g.kernel))


def _lower_direct_conv(lowering: Lowering, problem: ConvProblem) -> None:
    x, y, g = problem.x, problem.y, problem.g
    out_sp = _three(y.shape[2:], 1)
    block = choose_blocking(g.ocg, out_sp[2], lowering, x.dtype)
    layout = conv_input_layout(g, out_sp, x.shape[1])
    itemsize = x.dtype.numpy.itemsize
    x_offset = lowering.scratch(layout.size(g.n) * itemsize)
    w_offset = lowering.scratch(g.groups * _blocks(g, block) * math.prod(g.kernel) * g.icg * block.width * itemsize)
    y_offset = lowering.scratch(_yp_size(y, g, block) * itemsize)
    emit_pack_input(lowering, x, layout, x_offset, "conv_pack_input")
    lowering.leave_packed(x, layout)
    emit_pack_weight(lowering, problem.w, g, block, problem.weights, w_offset, "conv_pack_weight")
    spec = conv_direct_spec(g, out_sp, layout, _yp_strides(y, g, block))
    unpack = Unpack(y, problem.bias, y_offset, channels_last_source(y, g, block), problem.epilogue)
    if math.prod(spec.rows) >= ROWS_TO_UNPACK_IN_PLACE:
        emit_direct(lowering, x.dtype, g, block, spec, (x_offset, w_offset, y_offset), "conv_direct", unpack)
    else:
        emit_direct(lowering, x.dtype, g, block, spec, (x_offset, w_offset, y_offset), "conv_direct")
        emit_unpack(lowering, unpack, "conv_unpack")


def _operands(node: Node) -> tuple:
    """Input, weight, bias (or None), output and groups of a conv or conv_transpose node."""
    bias = node.inputs[2] if len(node.inputs) == 3 else None
    return node.inputs[0], node.inputs[1], bias, node.output, node.attrs["groups"]


def _kernel_taps(kernel: tuple) -> list:
    return list(itertools.product(*(range(k) for k in kernel)))


def _linear_taps(kernel: tuple, taps: list):
    return [(a * kernel[1] + b) * kernel[2] + c for a, b, c in taps]


def _blocks(g: Geometry, block: Blocking) -> int:
    return math.ceil(g.ocg / block.width)


def _yp_size(y: Value, g: Geometry, block: Blocking) -> int:
    return _yp_strides(y, g, block)[0] * y.shape[0]


def _yp_strides(y: Value, g: Geometry, block: Blocking) -> tuple:
    depth, height, width = _three(y.shape[2:], 1)
    padded = g.groups * _blocks(g, block) * block.width
    return (depth * height * width * padded, height * width * padded, width * padded, padded)


@lowers("conv_transpose")
def lower_conv_transpose(lowering: Lowering, node: Node, epilogue: Epilogue | None = None) -> None:
    x, w, bias, y, groups = _operands(node)
    g = _geometry(x, w.shape[2:], node.attrs, groups, w.shape[0] // groups, w.shape[1])
    k_size = math.prod(w.shape[2:])
    weights = WeightLayout(g.icg * g.ocg * k_size, k_size, g.ocg * k_size, tuple(range(k_size)))
    if _lower_fast(lowering, ConvProblem(x, w, bias, y, g, weights, epilogue, transposed=True)):
        return
    phases = transpose_phases(g, _three(y.shape[2:], 1))
    point_block = choose_point_blocking(g.ocg, max(p.counts[2] for p in phases), lowering, x.dtype)
    if point_block is not None:
        _lower_conv_transpose_over_points(lowering, node, g, phases, point_block, epilogue)
        return
    block = choose_blocking(g.ocg, max(p.counts[2] for p in phases), lowering, x.dtype)
    layout = _transpose_input_layout(g, phases, x.shape[1])
    itemsize = x.dtype.numpy.itemsize
    x_offset = lowering.scratch(layout.size(g.n) * itemsize)
    all_taps = [tap for phase in phases for tap in phase.kernel_taps]      # every tap once, phase by phase
    w_offset = lowering.scratch(max(groups * _blocks(g, block) * len(all_taps) * g.icg * block.width, 1) * itemsize)
    y_offset = lowering.scratch(_yp_size(y, g, block) * itemsize)
    emit_pack_input(lowering, x, layout, x_offset, "convT_pack_input")
    lowering.leave_packed(x, layout)
    if any(not p.taps for p in phases):
        _emit_zero(lowering, y_offset, _yp_size(y, g, block), x.dtype, "convT_zero")
    yd = _yp_strides(y, g, block)
    emit_pack_weight(lowering, w, g, block, WeightLayout(weights.sg, weights.soc, weights.sic,
                                                         tuple(_linear_taps(g.kernel, all_taps))),
                     w_offset, "convT_pack_weight")
    starts = itertools.accumulate((len(p.taps) * g.icg * block.width for p in phases), initial=0)
    active = [(phase, w0) for phase, w0 in zip(phases, starts) if phase.taps]
    unpack = Unpack(y, bias, y_offset, channels_last_source(y, g, block), epilogue)
    # with stride 1 the only phase's rows are the output rows: unpack each as soon as it is computed
    in_place = len(active) == len(phases) == 1 and math.prod(active[0][0].counts[:2]) * g.n >= ROWS_TO_UNPACK_IN_PLACE
    for position, (phase, w0) in enumerate(active):          # the phases write disjoint outputs
        spec = phase_direct_spec(g, phase, layout, yd, w0, len(all_taps))
        emit_direct(lowering, x.dtype, g, block, spec, (x_offset, w_offset, y_offset), "convT_direct",
                    unpack if in_place else None, waits=position == 0)
    if not in_place:
        emit_unpack(lowering, unpack, "convT_unpack")


def transpose_phases(g: Geometry, out_sp: tuple) -> list:
    """The stride phases of a transposed conv that have outputs."""
    phases = [_phase(g, out_sp, r) for r in itertools.product(*(range(s) for s in g.stride))]
    return [p for p in phases if min(p.counts) > 0]


def phase_direct_spec(g: Geometry, phase: "Phase", layout: Padded, y_strides: tuple, w0: int, w_taps: int) -> Direct:
    """The direct conv of one stride phase: rows of phase positions q reading the padded input at
    q + shift, writing output q * stride + r of the channels-last scratch (element strides
    `y_strides`); its weights start at w0 of blocks of `w_taps` taps."""
    sn, sd, sh, sc = layout.strides()
    origin, yd = layout.origin, y_strides
    return Direct(rows=(g.n,) + phase.counts[:2], points=phase.counts[2],
                  x0=origin[0] * sd + origin[1] * sh + origin[2] * sc, sx=(sn, sd, sh), sx_point=sc,
                  taps=tuple(a * sd + b_ * sh + c * sc for a, b_, c in phase.taps),
                  y0=phase.r[0] * yd[1] + phase.r[1] * yd[2] + phase.r[2] * yd[3],
                  sy=(yd[0], g.stride[0] * yd[1], g.stride[1] * yd[2]), sy_point=g.stride[2] * yd[3], w0=w0,
                  w_taps=w_taps)


@dataclass(frozen=True)
class Phase:
    """Output positions q * stride + r of a transposed conv: `counts` of q per axis, and per tap the
    kernel offsets and the input shift c (input q + c)."""

    r: tuple
    counts: tuple
    kernel_taps: tuple
    taps: tuple


def _phase(g: Geometry, out_sp: tuple, r: tuple) -> Phase:
    per_axis = []
    for r_a, k, s, d, lo in zip(r, g.kernel, g.stride, g.dilation, g.pad_lo):
        per_axis.append([(kk, (r_a + lo - kk * d) // s) for kk in range(k) if (r_a + lo - kk * d) % s == 0])
    counts = tuple(max(0, -(-(n - r_a) // s)) for n, r_a, s in zip(out_sp, r, g.stride))
    combos = list(itertools.product(*per_axis))
    return Phase(r, counts, tuple(tuple(kk for kk, _ in c) for c in combos), tuple(tuple(cc for _, cc in c) for c in combos))


def _transpose_input_layout(g: Geometry, phases: list, channels: int, planar: bool = False) -> Padded:
    """Padding so that input q + c is inside the padded copy for every phase, tap and q."""
    low, high = [0, 0, 0], [0, 0, 0]
    for p in phases:
        for shift in p.taps:
            for axis in range(3):
                low[axis] = max(low[axis], -shift[axis])
                high[axis] = max(high[axis], p.counts[axis] - 1 + shift[axis] + 1)
    extent = tuple(max(n, h) + lo for n, h, lo in zip(g.in_sp, high, low))
    return Padded(extent, tuple(low), channels, planar)


# ---------------------------------------------------------------------------------------------
# Transposed convs with few output channels: vectorised over output points


def choose_point_blocking(ocg: int, points: int, lowering: Lowering, dtype) -> Blocking | None:
    """The tile of a transposed conv vectorised over output points along w: rows are its `ocg`
    output channels, vectors hold consecutive points of a phase row. None when vectorising over
    output channels suits the layer better: at least half a vector of output channels, or phase
    rows shorter than a vector (the input gradient of a stem conv with 3 input channels is the case
    this is for)."""
    lanes = lowering.target.lanes(dtype)
    registers = 32 if lowering.target.vector_floats == 16 else 16
    most = (registers - 1) // (ocg + 1)         # ocg x vectors accumulators, the vectors, one broadcast
    if 2 * ocg > lanes or points < lanes or most < 1:
        return None
    needed = math.ceil(points / lanes)
    tiles = math.ceil(needed / most)
    return Blocking(lanes, math.ceil(needed / tiles), ocg)


def _lower_conv_transpose_over_points(lowering: Lowering, node: Node, g: Geometry, phases: list, block: Blocking,
                                      epilogue: Epilogue | None) -> None:
    """Each stride phase is a stride-1 direct conv over a planar padded input `xc[n][c][d][h][w]`,
    whose register tile broadcasts weights and multiplies input vectors of consecutive points. Phase
    r's rows go to a phase-major scratch `yq[r][n][oc][qd][qh][qw]` (rows padded to whole tiles),
    which the unpacking interleaves into the output."""
    x, w, bias, y, groups = _operands(node)
    itemsize = x.dtype.numpy.itemsize
    row = math.ceil(max(p.counts[2] for p in phases) / block.width) * block.width
    layout = _transpose_input_layout(g, [Phase(p.r, p.counts[:2] + (row,), p.kernel_taps, p.taps) for p in phases],
                                     x.shape[1], planar=True)
    counts = tuple(max(-(-n // s), 1) for n, s in zip(_three(y.shape[2:], 1), g.stride))
    yq = _phase_major_strides(y.shape[:2], counts[:2] + (row,), math.prod(g.stride))
    all_taps = [tap for phase in phases for tap in phase.kernel_taps]
    x_offset = lowering.scratch(layout.size(g.n) * itemsize)
    w_offset = lowering.scratch(max(groups * len(all_taps) * g.icg * g.ocg, 1) * itemsize)
    y_offset = lowering.scratch(yq[0] * math.prod(g.stride) * itemsize)
    emit_pack_input(lowering, x, layout, x_offset, "convT_pack_planar")
    if any(not p.taps for p in phases):
        _emit_zero(lowering, y_offset, yq[0] * math.prod(g.stride), x.dtype, "convT_zero")
    k_size = math.prod(w.shape[2:])
    weight_blocks = Blocking(lanes=g.ocg, vectors=1, points=1)          # wp[g][0][t][ic][oc]
    emit_pack_weight(lowering, w, g, weight_blocks, WeightLayout(g.icg * g.ocg * k_size, k_size, g.ocg * k_size,
                                                                 tuple(_linear_taps(g.kernel, all_taps))),
                     w_offset, "convT_pack_weight")
    starts = itertools.accumulate((len(p.taps) for p in phases), initial=0)
    active = [(phase, start) for phase, start in zip(phases, starts) if phase.taps]
    for position, (phase, start) in enumerate(active):
        _emit_direct_over_points(lowering, x.dtype, g, block, phase, layout, (start, len(all_taps)), yq,
                                 (x_offset, w_offset, y_offset), waits=position == 0)
    emit_unpack(lowering, Unpack(y, bias, y_offset, PhaseMajorScratch(g.stride, yq), epilogue), "convT_unpack")


def _phase_major_strides(nc: tuple, counts: tuple, phases: int) -> tuple:
    """Element strides of yq[phase][n][oc][qd][qh][qw] (qw padded): (phase, n, oc, qd, qh)."""
    n, channels = nc
    qd, qh, qw = counts
    return (n * channels * qd * qh * qw, channels * qd * qh * qw, qd * qh * qw, qh * qw, qw)


@dataclass(frozen=True)
class PhaseMajorScratch:
    """The scratch yq[phase][n][oc][qd][qh][qw] of the strides `yq` (see `_phase_major_strides`):
    output (d, h, w) is phase (d, h, w) mod stride at q = (d, h, w) // stride."""

    stride: tuple
    yq: tuple

    def index(self, b, n, oc, d, h, w):
        qs = [b.udiv(a, i64(s)) for a, s in zip((d, h, w), self.stride)]
        rs = [b.urem(a, i64(s)) for a, s in zip((d, h, w), self.stride)]
        phase = b.add(b.mul(b.add(b.mul(rs[0], i64(self.stride[1])), rs[1]), i64(self.stride[2])), rs[2])
        return b.add(_dot(b, 0, (phase, n, oc, qs[0], qs[1]), self.yq), qs[2])


def _emit_direct_over_points(lowering: Lowering, dtype, g: Geometry, block: Blocking, phase: Phase, layout: Padded,
                             taps: tuple, yq: tuple, offsets: tuple, waits: bool) -> None:
    """One phase: work items (n, qd, qh, group), each a row of whole tiles of block.width points."""
    element = element_type(dtype)
    x_offset, w_offset, y_offset = offsets
    first_tap, tap_total = taps
    sn, sd, sh, sw = layout.strides()
    weights_per_tap = g.icg * g.ocg
    weight_taps = _table(lowering, "staps", [(first_tap + t) * weights_per_tap for t in range(len(phase.taps))])
    input_taps = _table(lowering, "vtaps", [a * sd + b_ * sh + c * sw for a, b_, c in phase.taps])
    tile = tile_function(lowering, element, block, g.ocg, 1)
    tiles = yq[4] // block.width
    x0 = _dot_constant(layout.origin, (sd, sh, sw))
    phase_index = (phase.r[0] * g.stride[1] + phase.r[1]) * g.stride[2] + phase.r[2]
    rows = (g.n,) + phase.counts[:2]

    def body(k, item):
        b = k.b
        n, qd, qh, grp = unravel(b, item, rows + (g.groups,))
        xc, wp, yp = (k.scratch_pointer(o, element) for o in (x_offset, w_offset, y_offset))
        x_row = _dot(b, x0, (n, qd, qh, grp), (sn, sd, sh, g.icg * layout.channel_stride))
        y_row = _dot(b, phase_index * yq[0], (n, grp, qd, qh), (yq[1], g.ocg * yq[2], yq[3], yq[4]))
        w_row = b.gep(wp, [b.mul(grp, i64(tap_total * weights_per_tap))])
        tables = [b.gep(t, [i64(0), i64(0)]) for t in (weight_taps, input_taps)]
        steps = [i64(len(phase.taps)), i64(g.icg), i64(g.ocg), i64(layout.channel_stride), i64(yq[2])]
        with counted_loop(b, tiles, name="tile") as t:
            first = b.mul(t, i64(block.width))
            b.call(tile, [w_row, b.gep(xc, [b.add(x_row, first)]), b.gep(yp, [b.add(y_row, first)])] + tables + steps)

    lowering.kernel("convT_direct_points", math.prod(rows) * g.groups, body, waits)


def _dot_constant(indices: tuple, strides: tuple) -> int:
    return sum(i * s for i, s in zip(indices, strides))


def _emit_zero(lowering: Lowering, offset: int, count: int, dtype, name: str) -> None:
    element = element_type(dtype)
    _emit_chunks(lowering, offset, count, element, name, lambda b, data, i: b.store(ir.Constant(element, 0.0), b.gep(data, [i])),
                 waits=False)


def _emit_chunks(lowering: Lowering, offset: int, count: int, element, name: str, each, waits: bool = True) -> None:
    """A kernel calling `each(b, data, i)` for i < count over the scratch at `offset`, in chunks of
    4096 elements (its work items), each walked in order."""
    chunk = 4096

    def body(k, item):
        b = k.b
        data = k.scratch_pointer(offset, element)
        start = b.mul(item, i64(chunk))
        stop = b.add(start, i64(chunk))
        stop = b.select(b.icmp_signed("<", stop, i64(count)), stop, i64(count))
        with counted_loop(b, stop, start, name="i") as i:
            each(b, data, i)

    lowering.kernel(name, math.ceil(count / chunk), body, waits)


@lowers("conv_weight_grad")
def lower_conv_weight_grad(lowering: Lowering, node: Node) -> None:
    x, gy = node.inputs
    dw = node.output
    groups = node.attrs["groups"]
    kernel = node.attrs["kernel_size"]
    g = _geometry(x, kernel, node.attrs, groups, x.shape[1] // groups, gy.shape[1] // groups)
    windows = _three(gy.shape[2:], 1)
    block = choose_blocking(g.ocg, g.icg, lowering, x.dtype)
    x_needed = Padded(tuple((o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(windows, g.stride, g.kernel, g.dilation)),
                      g.pad_lo, _wgrad_tile_rows(g, block))
    gy_needed = Padded(windows, (0, 0, 0), block.width)
    shared_x = _shared_copy(lowering, x, x_needed, groups)
    shared_gy = None if shared_x else _shared_copy(lowering, gy, gy_needed, groups)
    layouts = WeightGradLayouts(WeightGradOperand.of(x_needed, shared_x), WeightGradOperand.of(gy_needed, shared_gy),
                                windows)
    taps = _kernel_taps(g.kernel)
    itemsize = x.dtype.numpy.itemsize
    sizes = {"x": groups * layouts.x.blocks(g.icg) * layouts.x.layout.size(g.n) * itemsize,
             "gy": groups * layouts.gy.blocks(g.ocg) * layouts.gy.layout.size(g.n) * itemsize}
    order = ("gy", "x") if shared_gy else ("x", "gy")            # a shared copy stays at offset 0
    offsets = {name: lowering.scratch(sizes[name]) for name in order}
    dw_size = groups * _blocks(g, block) * len(taps) * g.icg * block.width
    parts = _reduction_parts(g, block, windows, dw_size * itemsize)
    dw_offset = lowering.scratch(parts * dw_size * itemsize)
    if not shared_x:
        emit_pack_channel_blocks(lowering, x, layouts.x.layout, groups, offsets["x"], "wgrad_pack_input")
    if not shared_gy:
        emit_pack_channel_blocks(lowering, gy, layouts.gy.layout, groups, offsets["gy"], "wgrad_pack_gradient",
                                 waits=bool(shared_x))
    sn, sd, sh, sc = layouts.x.layout.strides()
    tap_offsets = tuple(a * g.dilation[0] * sd + b_ * g.dilation[1] * sh + c * g.dilation[2] * sc for a, b_, c in taps)
    _emit_weight_grad_tiles(lowering, x.dtype, g, block, layouts, tap_offsets, (offsets["x"], offsets["gy"], dw_offset),
                            parts)
    _emit_unpack_weight(lowering, dw, g, block, len(taps), dw_offset, parts)


def _shared_copy(lowering: Lowering, value: Value, needed: Padded, groups: int) -> Padded | None:
    """The channels-last copy of `value` that the node before left in the workspace (the input
    gradient's conv packs the output gradient, or for a transposed conv the same input), when the
    weight gradient can read it in place of packing `needed` itself: one group, every channel, and
    `needed`'s positions inside it (its origin at least `needed`'s, the extent to match)."""
    shared = lowering.packed_at_start(value)
    if shared is None or groups != 1 or shared.planar or shared.channels != value.shape[1]:
        return None
    shift = [have - want for have, want in zip(shared.origin, needed.origin)]
    if min(shift) < 0 or any(e + d > have for e, d, have in zip(needed.extent, shift, shared.extent)):
        return None
    return shared


@dataclass(frozen=True)
class WeightGradOperand:
    """How the weight gradient reads one operand: `layout`, a register tile's `channels` of it
    (input channels of x, output channels of gy) starting `shift` elements in (where `needed`'s
    origin sits in a shared copy). Packed in blocks of one tile's channels (`blocked`), a tile's data
    is contiguous (its cache lines hold nothing else); a shared copy holds every channel."""

    layout: Padded
    channels: int
    shift: int

    @classmethod
    def of(cls, needed: Padded, shared: Padded | None) -> "WeightGradOperand":
        if shared is None:
            return cls(needed, needed.channels, 0)
        strides = shared.strides()[1:]
        return cls(shared, needed.channels, sum((have - want) * stride for have, want, stride
                                                in zip(shared.origin, needed.origin, strides)))

    @property
    def blocked(self) -> bool:
        return self.layout.channels == self.channels

    def blocks(self, channels: int) -> int:
        """Channel blocks per group in the packed copy."""
        return math.ceil(channels / self.channels) if self.blocked else 1

    def block_offset(self, n: int) -> int:
        """Elements from one tile's channels to the next tile's."""
        return self.layout.size(n) if self.blocked else self.channels


@dataclass(frozen=True)
class WeightGradLayouts:
    """The weight gradient's operands: the input `x` zero-padded and the output gradient `gy` over
    its `windows` (see `emit_pack_channel_blocks`)."""

    x: WeightGradOperand
    gy: WeightGradOperand
    windows: tuple


#: The weight gradient splits its sum over output rows into parts until it has about this many work
#: items (parts x groups x oc blocks), so that both cores get an even share of it...
WEIGHT_GRAD_ITEMS = 16


#: The weight gradient's row function sums at least this many output positions per call (several
#: short rows at once), so loading and storing its accumulators costs little next to the FMAs.
WEIGHT_GRAD_POSITIONS = 64


def _wgrad_lines(windows: tuple) -> tuple:
    """(rows per row-function call, blocks of such rows per output plane)."""
    depth, height, width = windows
    lines = max(1, min(height, math.ceil(WEIGHT_GRAD_POSITIONS / width)))
    return lines, math.ceil(height / lines)


#: ... as long as the parts' copies of the blocked gradient take at most this many bytes together,
#: and each part sums at least this many positions (a copy costs a zeroing and an addition).
WEIGHT_GRAD_COPIES_BYTES = 32 << 20
WEIGHT_GRAD_POSITIONS_PER_PART = 256


def _reduction_parts(g: Geometry, block: Blocking, windows: tuple, copy_bytes: int) -> int:
    """Into how many parts the weight gradient splits its rows (each part sums into its own copy of
    the blocked gradient, of `copy_bytes`; the unpacking adds the copies)."""
    wanted = math.ceil(WEIGHT_GRAD_ITEMS / (g.groups * _blocks(g, block)))
    worthwhile = g.n * math.prod(windows) // WEIGHT_GRAD_POSITIONS_PER_PART
    return max(1, min(wanted, worthwhile, WEIGHT_GRAD_COPIES_BYTES // max(copy_bytes, 1),
                      g.n * windows[0] * _wgrad_lines(windows)[1]))


def _wgrad_tile_rows(g: Geometry, block: Blocking) -> int:
    return max(1, min(block.points, g.icg))


def emit_pack_channel_blocks(lowering: Lowering, y: Value, layout: Padded, groups: int, offset: int, name: str,
                             waits: bool = True) -> None:
    """packed[grp][blk][n][d][h][w][r] = y[n][grp*cg + blk*R + r][d - od][h - oh][w - ow] inside `y`
    and inside the group, else 0, for the `cg` = C / groups channels of a group split into blocks of
    R = `layout.channels`; each (grp, blk) is one channels-last `layout` of R channels. A work item is
    one padded row (n, d, h) of every block: for each tile of `lanes` positions it reads a vector
    of positions per channel (masked where it falls in the padding), transposes them in registers
    and writes each position's R channels. The squares are no wider than R needs (4 x 4 for a
    3-channel image), so few channels do not load positions they throw away."""
    element = element_type(y.dtype)
    widest = lowering.target.lanes(y.dtype)
    lanes = min(widest, max(4, 1 << (layout.channels - 1).bit_length()))
    n, channels = y.shape[0], y.shape[1]
    group_channels = channels // groups
    size = _three(y.shape[2:], 1)
    dp, hp, wp = layout.extent
    od, oh, ow = layout.origin
    sn, sd, sh, sw = layout.strides()
    blocks = math.ceil(group_channels / layout.channels)
    plane = math.prod(size)
    w_tiles = math.ceil(wp / lanes)

    def body(k, item):
        b = k.b
        bn, d, h = unravel(b, item, (n, dp, hp))
        packed, src = k.scratch_pointer(offset, element), k.pointer(y)
        yd, yh = b.sub(d, i64(od)), b.sub(h, i64(oh))
        row_inside = b.and_(_in_range(b, yd, size[0]), _in_range(b, yh, size[1]))
        row = _dot(b, 0, (bn, d, h), (sn, sd, sh))
        with counted_loop(b, groups * blocks, name="block") as channel_block, \
                counted_loop(b, w_tiles, name="wt") as wt:
            grp, blk = b.udiv(channel_block, i64(blocks)), b.urem(channel_block, i64(blocks))
            first = b.add(b.mul(grp, i64(group_channels)), b.mul(blk, i64(layout.channels)))
            group_rest = b.sub(i64(group_channels), b.mul(blk, i64(layout.channels)))
            w0 = b.mul(wt, i64(lanes))
            source_row = b.add(b.mul(b.add(b.mul(b.add(b.mul(b.add(b.mul(bn, i64(channels)), first), i64(size[0])), yd),
                                                 i64(size[1])), yh), i64(size[2])), b.sub(w0, i64(ow)))
            inside = _positions_inside(b, b.sub(w0, i64(ow)), lanes, size[2])

            def channel(r):
                ok = b.and_(row_inside, b.icmp_unsigned("<", r, group_rest))
                mask = b.and_(inside, splat(b, ok, lanes))
                return masked_load_vector(b, k.module, src, b.add(source_row, b.mul(r, i64(plane))), mask)

            columns, stride = transposed_rows(k, element, layout.channels, lanes, channel)
            target = b.add(b.add(b.mul(channel_block, i64(layout.size(n))), row), b.mul(w0, i64(sw)))
            with counted_loop(b, _at_most(b, b.sub(i64(wp), w0), lanes), name="j") as j, \
                    counted_loop(b, layout.channels, name="r") as r:
                value = b.load(b.gep(columns, [b.add(b.mul(j, i64(stride)), r)]))
                b.store(value, b.gep(packed, [b.add(target, b.add(b.mul(j, i64(sw)), r))]))

    lowering.kernel(name, n * dp * hp, body, waits)


def _positions_inside(b: ir.IRBuilder, first, lanes: int, size: int):
    """The vector of i1: first + j inside [0, size), for j < lanes."""
    itype = vector_type(ir.IntType(64), lanes)
    positions = b.add(splat(b, first, lanes), ir.Constant(itype, list(range(lanes))))
    return b.icmp_unsigned("<", positions, ir.Constant(itype, [size] * lanes))


def _emit_weight_grad_tiles(lowering: Lowering, dtype, g: Geometry, block: Blocking, layouts: WeightGradLayouts,
                            tap_offsets: tuple, offsets: tuple, parts: int) -> None:
    """dwp[grp][ob][t][ic][lane] = sum over positions of xp(position, tap, ic) * gyp(position, lane).

    A work item is (part, group, oc block): it sums into part `part`'s copy of dwp and walks its
    share of the output rows once, a few rows at a time (at least WEIGHT_GRAD_POSITIONS positions per
    call of the row function, so its accumulators stay in registers that long). While those rows'
    gradient block and input are in L1/L2 it applies every ic tile and tap to them, so the data
    streams from memory once per part and oc block. The items write disjoint parts of dwp."""
    element = element_type(dtype)
    x_offset, gy_offset, dw_offset = offsets
    blocks = _blocks(g, block)
    rows_per_tile = layouts.x.channels
    tiles = math.ceil(g.icg / rows_per_tile)
    rest = g.icg - (tiles - 1) * rows_per_tile
    sn, sd, sh, sc = layouts.x.layout.strides()
    gn, gd, gh, gw = layouts.gy.layout.strides()
    table = _table(lowering, "gtaps", tap_offsets)
    depth, height, width = layouts.windows
    full_row = _row_function(lowering, element, block, rows_per_tile, g.stride[2] * sc)
    last_row = _row_function(lowering, element, block, rest, g.stride[2] * sc)
    tap_block = g.icg * block.width                         # dwp elements per (grp, ob, tap)
    block_size = len(tap_offsets) * tap_block               # per (grp, ob)
    group_size = blocks * block_size
    lines, line_blocks = _wgrad_lines(layouts.windows)

    def body(k, item):
        b = k.b
        part, grp, ob = unravel(b, item, (parts, g.groups, blocks))
        xp, gp, dwp_all = (k.scratch_pointer(o, element) for o in (x_offset, gy_offset, dw_offset))
        xp, gp = b.gep(xp, [i64(layouts.x.shift)]), b.gep(gp, [i64(layouts.gy.shift)])
        dwp = b.gep(dwp_all, [_dot(b, 0, (part, grp, ob), (g.groups * group_size, group_size, block_size))])
        with counted_loop(b, block_size, name="z") as z:
            b.store(ir.Constant(element, 0.0), b.gep(dwp, [z]))
        g_block = b.gep(gp, [b.add(b.mul(grp, i64(layouts.gy.blocks(g.ocg) * layouts.gy.layout.size(g.n))),
                                   b.mul(ob, i64(layouts.gy.block_offset(g.n))))])
        blocks_of_lines = g.n * depth * line_blocks
        with counted_loop(b, _share(b, blocks_of_lines, parts, b.add(part, i64(1))),
                          _share(b, blocks_of_lines, parts, part), name="lines") as line_block:
            n, d, first_line = unravel(b, line_block, (g.n, depth, line_blocks))
            h = b.mul(first_line, i64(lines))
            count = b.sub(i64(height), h)
            count = b.select(b.icmp_unsigned("<", count, i64(lines)), count, i64(lines))
            x_row = _dot(b, 0, (n, d, h), (sn, g.stride[0] * sd, g.stride[1] * sh))
            g_row = _dot(b, 0, (n, d, h), (gn, gd, gh))
            g_at = b.gep(g_block, [g_row])
            with counted_loop(b, tiles, name="tile") as tile:
                x_block = b.add(b.mul(grp, i64(layouts.x.blocks(g.icg) * layouts.x.layout.size(g.n))),
                                b.mul(tile, i64(layouts.x.block_offset(g.n))))
                dw_tile = b.mul(tile, i64(rows_per_tile * block.width))
                is_last = b.icmp_unsigned("==", tile, i64(tiles - 1))
                with counted_loop(b, len(tap_offsets), name="t") as t:
                    x_at = b.gep(xp, [b.add(b.add(x_block, x_row), b.load(b.gep(table, [i64(0), t])))])
                    acc = b.gep(dwp, [b.add(dw_tile, b.mul(t, i64(tap_block)))])
                    arguments = [x_at, g_at, acc, i64(width), i64(gw), count, i64(g.stride[1] * sh), i64(gh)]
                    with b.if_else(is_last) as (last, full):
                        with last:
                            b.call(last_row, arguments)
                        with full:
                            b.call(full_row, arguments)

    lowering.kernel("wgrad_tiles", parts * g.groups * blocks, body)


def _share(b: ir.IRBuilder, count: int, parts: int, part) -> ir.Value:
    """Where part `part` of `count` things split into `parts` near-equal parts starts."""
    return b.udiv(b.mul(part, i64(count)), i64(parts))


def _row_function(lowering: Lowering, element, block: Blocking, rows: int, x_step: int) -> ir.Function:
    """void row(x, gy, acc, positions, gy_step, lines, x_line, gy_line): for `rows` input channels ×
    `block.vectors` vectors of output channels, acc[r*width + j*lanes + lane] += sum over l < lines,
    p < positions of x[l*x_line + p*x_step + r] * gy[l*gy_line + p*gy_step + j*lanes + lane]
    (x_step constant: immediate offsets)."""
    kind = "f32" if element == F32 else "f64"
    name = f"wgrad_row_{kind}_{block.lanes}x{block.vectors}x{rows}_step{x_step}"
    if name in lowering.module.globals:
        return lowering.module.globals[name]
    pointer, i64t = element.as_pointer(), ir.IntType(64)
    fn = ir.Function(lowering.module, ir.FunctionType(ir.VoidType(), [pointer] * 3 + [i64t] * 5), name)
    fn.linkage = "internal"
    for argument in fn.args[:3]:
        argument.add_attribute("noalias")
    x, gy, acc, positions, gy_step, lines, x_line, gy_line = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vtype = ir.VectorType(element, block.lanes)
    fma = intrinsic(lowering.module, f"llvm.fma.v{block.lanes}{kind}", vtype, [vtype] * 3)
    slots = [(r, j, b.add(i64(r * block.width), i64(j * block.lanes))) for r in range(rows) for j in range(block.vectors)]
    accumulators = b.alloca(vtype, len(slots))
    for index, (_, _, at) in enumerate(slots):
        b.store(load_vector(b, acc, at, block.lanes), b.gep(accumulators, [i64(index)]))
    with counted_loop(b, lines, name="l") as line, counted_loop(b, positions, name="p") as p:
        g_at = b.add(b.mul(line, gy_line), b.mul(p, gy_step))
        grads = [load_vector(b, gy, b.add(g_at, i64(j * block.lanes)), block.lanes) for j in range(block.vectors)]
        x_at = b.add(b.mul(line, x_line), b.mul(p, i64(x_step)))
        for index, (r, j, _) in enumerate(slots):
            broadcast = splat(b, b.load(b.gep(x, [b.add(x_at, i64(r))])), block.lanes)
            slot = b.gep(accumulators, [i64(index)])
            b.store(b.call(fma, [broadcast, grads[j], b.load(slot)]), slot)
    for index, (_, _, at) in enumerate(slots):
        store_vector(b, b.load(b.gep(accumulators, [i64(index)])), acc, at)
    b.ret_void()
    return fn


def _emit_unpack_weight(lowering: Lowering, dw: Value, g: Geometry, block: Blocking, tap_count: int, offset: int,
                        parts: int) -> None:
    """dw[grp*ocg + oc][ic][t] = sum over p < parts of dwp[p][grp][oc // width][t][ic][oc % width].

    A work item is (grp, ob, ic): for each vector of `lanes` channels it transposes the copies' sum,
    taps by lanes, and writes the channels' runs of `tap_count` contiguous elements of dw."""
    element = element_type(dw.dtype)
    blocks = _blocks(g, block)
    copy = g.groups * blocks * tap_count * g.icg * block.width

    def body(k, item):
        b = k.b
        grp, ob, ic = unravel(b, item, (g.groups, blocks, g.icg))
        dwp, out = k.scratch_pointer(offset, element), k.pointer(dw)
        first = b.mul(b.add(b.mul(b.add(b.mul(grp, i64(blocks)), ob), i64(tap_count * g.icg)), ic), i64(block.width))
        for vector in range(block.vectors):
            def total(t, start=b.add(first, i64(vector * block.lanes))):
                at = b.add(start, b.mul(t, i64(g.icg * block.width)))
                return functools.reduce(b.fadd, [load_vector(b, dwp, b.add(at, i64(part * copy)), block.lanes)
                                                 for part in range(parts)])
            columns, stride = transposed_rows(k, element, tap_count, block.lanes, total)
            oc0 = b.add(b.mul(ob, i64(block.width)), i64(vector * block.lanes))
            with counted_loop(b, _at_most(b, b.sub(i64(g.ocg), oc0), block.lanes), name="lane") as lane:
                oc = b.add(b.mul(grp, i64(g.ocg)), b.add(oc0, lane))
                row = b.mul(b.add(b.mul(oc, i64(g.icg)), ic), i64(tap_count))
                with counted_loop(b, tap_count, name="t") as t:
                    value = b.load(b.gep(columns, [b.add(b.mul(lane, i64(stride)), t)]))
                    b.store(value, b.gep(out, [b.add(row, t)]))

    lowering.kernel("wgrad_unpack", g.groups * blocks * g.icg, body)
