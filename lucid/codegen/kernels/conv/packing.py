"""Layout and packing: the zero-padded copies of an input (`Padded`: channels-last, planar, or in
blocks of a tile's channels) and the weight blocks `wp[g][oc block][tap][ic][oc lane]` the register
tile reads, each written by a kernel that transposes squares of vectors in registers."""
from __future__ import annotations

import math
from dataclasses import dataclass

import llvmlite.ir as ir

from ....ir import symbolic
from ....ir.graph import Value
from ...irgen import (as_i64, counted_loop, element_type, i64, load_vector, masked_load_vector, masked_store_vector,
                      splat, store_vector, transpose, unravel, vector_type)
from ...lowering import Lowering
from .nonfinite import WeightFlags, finite_probe
from .prepared import WeightCheck, when_changed
from .primitives import at_most, constant_table, region_pointer, sized, strided_offset, transposed_rows
from .problem import Blocking, Geometry, WeightLayout, to_3d


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
    channels = x.shape[1]
    od, oh, ow = layout.origin
    depth, height, width = to_3d(x.shape[2:], 1)
    sizes = (x.shape[0], (depth, height, width), layout.extent, layout.strides(), channels * depth,
             depth * height * width, layout.channel_stride)

    def body(k, item):
        b = k.b
        n, (depth, height, width), (dp, hp, wp), (sn, sd, sh, sw), batch_planes, plane, channel_stride = sized(k, sizes)
        bn, d, h = unravel(b, item, (n, dp, hp))
        xp, src = k.scratch_pointer(offset, element), k.pointer(x)
        row = strided_offset(b, 0, (bn, d, h), (sn, sd, sh))
        xd, xh = b.sub(d, i64(od)), b.sub(h, i64(oh))
        row_inside = b.and_(_in_range(b, xd, depth), _in_range(b, xh, height))
        first = b.mul(b.add(b.mul(b.add(b.mul(bn, as_i64(batch_planes)), xd), as_i64(height)), xh), as_i64(width))
        with counted_loop(b, channels, name="c") as c, counted_loop(b, wp, name="w") as w:
            xw = b.sub(w, i64(ow))
            inside = b.and_(row_inside, _in_range(b, xw, width))
            source = b.select(inside, b.add(first, xw), i64(0))
            value = b.load(b.gep(src, [b.add(source, b.mul(c, as_i64(plane)))]))
            target = b.add(row, b.add(b.mul(w, as_i64(sw)), b.mul(c, as_i64(channel_stride))))
            b.store(b.select(inside, value, ir.Constant(element, 0.0)), b.gep(xp, [target]))

    lowering.kernel(name, x.shape[0] * layout.extent[0] * layout.extent[1], body, moves_data=True)


def _in_range(b: ir.IRBuilder, index, size):
    return b.icmp_unsigned("<", index, as_i64(size))     # unsigned: negative indices are huge


def emit_pack_weight(lowering: Lowering, w: Value, g: Geometry, block: Blocking, layout: WeightLayout,
                     where, name: str, note_finite: bool = False, check: WeightCheck | None = None,
                     waits: bool = False) -> WeightFlags | None:
    """wp[g][ob][t][ic][lane] = w[g, ob*width + lane, ic, taps[t]] (0 past the group's channels), at
    `where` (a workspace offset, or a `Kept` one). With `note_finite` each item also notes whether
    the weights it read are finite; returns those `WeightFlags` (nonfinite.py), else None. With a
    `check` (prepared.py) the blocks are kept between calls (`where` and the flags in the persistent
    memory) and the items run only when the check saw the weights change.

    A work item is (g, ob, ic). It reads its `width` channels' kernels (contiguous in w) a vector of
    kernel positions at a time, transposes each square of `lanes` channels in registers into a
    stack array kernel[vector][k][lane], then writes its block's rows tap by tap, each row whole (so
    a cache line of wp is written at once). It runs alongside the input packing: it waits for no
    kernel, unless `waits` (when no waiting kernel separates it from the check writing its flags)."""
    element = element_type(w.dtype)
    lanes = lowering.target.lanes(w.dtype)
    blocks = math.ceil(g.ocg / block.width)
    tap_count, kernel_size = len(layout.taps), math.prod(w.shape[2:])
    assert max(layout.taps, default=0) < kernel_size, (layout.taps, w.shape)
    k_tiles = math.ceil(kernel_size / lanes)
    vectors = range(0, block.width, lanes)
    table = constant_table(lowering, "wtaps", layout.taps)
    row_mask = ir.Constant(vector_type(ir.IntType(1), lanes), [j < block.width % lanes for j in range(lanes)])
    flags = WeightFlags.reserve(lowering, g.groups * blocks * g.icg, kept=check is not None) if note_finite else None

    def body(k, item):
        b = k.b
        grp, ob, ic = unravel(b, item, (g.groups, blocks, g.icg))
        wp, src = region_pointer(k, where, element), k.pointer(w)
        kernel = k.alloca(element, len(vectors) * k_tiles * lanes * lanes, name="kernel")
        if flags is not None:
            probe = k.alloca(vector_type(element, lanes), name="probe")
            b.store(ir.Constant(vector_type(element, lanes), [0.0] * lanes), probe)
        with counted_loop(b, k_tiles, name="kt") as kt:
            k0 = b.mul(kt, i64(lanes))
            in_kernel = _positions_inside(b, k0, lanes, kernel_size)

            def channel_kernel(oc):
                mask = b.and_(in_kernel, splat(b, b.icmp_unsigned("<", oc, i64(g.ocg)), lanes))
                row = strided_offset(b, 0, (grp, oc, ic), (layout.sg, layout.soc, layout.sic))
                return masked_load_vector(b, k.module, src, b.add(row, k0), mask)
            for v, first_lane in enumerate(vectors):
                oc0 = b.add(b.mul(ob, i64(block.width)), i64(first_lane))
                square = [channel_kernel(b.add(oc0, i64(lane))) for lane in range(lanes)]
                if flags is not None:
                    for vector in square:
                        b.store(finite_probe(b, b.load(probe), vector), probe)
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
        if flags is not None:
            flags.note(k, item, b.load(probe))

    lowering.kernel(name, g.groups * blocks * g.icg, when_changed(check, body), waits=waits, moves_data=True)
    return flags


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
    channels = y.shape[1]
    group_channels = channels // groups
    od, oh, ow = layout.origin
    blocks = math.ceil(group_channels / layout.channels)
    sizes = (y.shape[0], to_3d(y.shape[2:], 1), layout.extent, layout.strides(), layout.size(y.shape[0]),
             math.prod(y.shape[2:]), symbolic.ceil_div(layout.extent[2], lanes))

    def body(k, item):
        b = k.b
        n, size, (dp, hp, wp), (sn, sd, sh, sw), block_size, plane, w_tiles = sized(k, sizes)
        bn, d, h = unravel(b, item, (n, dp, hp))
        packed, src = k.scratch_pointer(offset, element), k.pointer(y)
        yd, yh = b.sub(d, i64(od)), b.sub(h, i64(oh))
        row_inside = b.and_(_in_range(b, yd, size[0]), _in_range(b, yh, size[1]))
        row = strided_offset(b, 0, (bn, d, h), (sn, sd, sh))
        with counted_loop(b, groups * blocks, name="block") as channel_block, \
                counted_loop(b, w_tiles, name="wt") as wt:
            grp, blk = b.udiv(channel_block, i64(blocks)), b.urem(channel_block, i64(blocks))
            first = b.add(b.mul(grp, i64(group_channels)), b.mul(blk, i64(layout.channels)))
            group_rest = b.sub(i64(group_channels), b.mul(blk, i64(layout.channels)))
            w0 = b.mul(wt, i64(lanes))
            channel_row = b.add(b.mul(bn, i64(channels)), first)
            source_row = b.add(b.mul(b.add(b.mul(b.add(b.mul(channel_row, as_i64(size[0])), yd), as_i64(size[1])), yh),
                                     as_i64(size[2])), b.sub(w0, i64(ow)))
            inside = _positions_inside(b, b.sub(w0, i64(ow)), lanes, size[2])

            def channel(r):
                ok = b.and_(row_inside, b.icmp_unsigned("<", r, group_rest))
                mask = b.and_(inside, splat(b, ok, lanes))
                return masked_load_vector(b, k.module, src, b.add(source_row, b.mul(r, as_i64(plane))), mask)

            columns, stride = transposed_rows(k, element, layout.channels, lanes, channel)
            target = b.add(b.add(b.mul(channel_block, as_i64(block_size)), row), b.mul(w0, i64(sw)))
            with counted_loop(b, at_most(b, b.sub(as_i64(wp), w0), lanes), name="j") as j, \
                    counted_loop(b, layout.channels, name="r") as r:
                value = b.load(b.gep(columns, [b.add(b.mul(j, i64(stride)), r)]))
                b.store(value, b.gep(packed, [b.add(target, b.add(b.mul(j, i64(sw)), r))]))

    lowering.kernel(name, y.shape[0] * layout.extent[0] * layout.extent[1], body, waits, moves_data=True)


def _positions_inside(b: ir.IRBuilder, first, lanes: int, size):
    """The vector of i1: first + j inside [0, size), for j < lanes (`size` an int or an i64 value)."""
    itype = vector_type(ir.IntType(64), lanes)
    positions = b.add(splat(b, first, lanes), ir.Constant(itype, list(range(lanes))))
    sizes = splat(b, size, lanes) if isinstance(size, ir.Value) else ir.Constant(itype, [size] * lanes)
    return b.icmp_unsigned("<", positions, sizes)
