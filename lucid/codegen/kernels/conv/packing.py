"""Layout and packing: the zero-padded copies of an input (`Padded`: channels-last, planar, or in
blocks of a tile's channels) and the weight blocks `wp[g][oc block][tap][ic][oc lane]` the register
tile reads: the input copies by kernels that transpose squares of vectors in registers, the weight
blocks by gathers."""
from __future__ import annotations

import math
from dataclasses import dataclass

import llvmlite.ir as ir

from ....ir import symbolic
from ....ir.graph import Value
from ...irgen import (as_i64, carried_loop, counted_loop, element_type, i64, masked_gather, masked_load_vector,
                      masked_store_vector, splat, store_vector, transpose, unravel, vector_type)
from ...lowering import Lowering
from .nonfinite import WeightFlags, finite_probe
from .prepared import WeightCheck, when_changed
from .primitives import (at_most, constant_table, element_as, elementwise_at, in_range, positions_inside,
                         region_pointer, sized, strided_offset, transposed_rows)
from .problem import Blocking, Geometry, Prologue, WeightLayout, to_3d


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


def emit_pack_input(lowering: Lowering, x: Value, layout: Padded, offset: int, name: str,
                    prologue: Prologue | None = None) -> None:
    """xp[n][d][h][w][c] (or xp[n][c][d][h][w]) = x[n][c][d - od][h - oh][w - ow] inside the input,
    else 0; a work item is one padded row (n, d, h). The channels-last copy is the one-block case of
    `emit_pack_channel_blocks`; the planar one copies each channel's row a vector of positions at a
    time (masked loads read zeros in the padding, masked stores end at the padded row's end). With a
    `prologue` (x its output), each input row is first computed into a stack array (`prologue_row`)
    and packed from there."""
    if not layout.planar:
        assert layout.channels == x.shape[1], (layout, x.shape)
        emit_pack_channel_blocks(lowering, x, layout, 1, offset, name, prologue=prologue)
        return
    element = element_type(x.dtype)
    lanes = lowering.target.lanes(x.dtype)
    channels = x.shape[1]
    od, oh, ow = layout.origin
    depth, height, width = to_3d(x.shape[2:], 1)
    sizes = (x.shape[0], (depth, height, width), layout.extent, layout.strides(), channels * depth,
             depth * height * width, layout.channel_stride, symbolic.ceil_div(layout.extent[2], lanes))

    def body(k, item):
        b = k.b
        n, (depth, height, width), (dp, hp, wp), (sn, sd, sh, _), batch_planes, plane, channel_stride, w_tiles = \
            sized(k, sizes)
        bn, d, h = unravel(b, item, (n, dp, hp))
        xp = k.scratch_pointer(offset, element)
        row = strided_offset(b, 0, (bn, d, h), (sn, sd, sh))
        xd, xh = b.sub(d, i64(od)), b.sub(h, i64(oh))
        inside_row = b.and_(in_range(b, xd, depth), in_range(b, xh, height))
        row_inside = splat(b, inside_row, lanes)
        if prologue is None:
            src = k.pointer(x)
            first = b.mul(b.add(b.mul(b.add(b.mul(bn, as_i64(batch_planes)), xd), as_i64(height)), xh), as_i64(width))
        else:
            src, first, plane = prologue_row(k, prologue, x, (bn, xd, xh), inside_row), i64(0), width
        with counted_loop(b, channels, name="c") as c, counted_loop(b, w_tiles, name="wt") as wt:
            w0 = b.mul(wt, i64(lanes))
            xw = b.sub(w0, i64(ow))
            inside = b.and_(row_inside, positions_inside(b, xw, lanes, width))
            value = masked_load_vector(b, k.module, src, b.add(b.add(first, xw), b.mul(c, as_i64(plane))), inside)
            masked_store_vector(b, k.module, value, xp, b.add(row, b.add(w0, b.mul(c, as_i64(channel_stride)))),
                                positions_inside(b, w0, lanes, wp))

    lowering.kernel(name, x.shape[0] * layout.extent[0] * layout.extent[1], body, moves_data=True)


def prologue_row(k, prologue: Prologue, x: Value, row: tuple, inside_row, rows: int = 1) -> ir.Value:
    """A stack array [channel][w] of the prologue's values (x its output) on input row (n, d, h), or
    [channel][r * W + w] on the `rows` rows from it, computed when the row lies inside the input
    (`inside_row`; else left unwritten: the packings mask it): an elementwise tree's each element
    as a map computes it, its operands read at its index; a concatenation's rows copied from each
    source in turn."""
    b = k.b
    n, d, h = row
    depth, height, width = sized(k, to_3d(x.shape[2:], 1))
    run = sized(k, rows * to_3d(x.shape[2:], 1)[2])
    buffer = k.alloca(element_type(x.dtype), sized(k, x.shape[1] * rows * to_3d(x.shape[2:], 1)[2]), name="prologue")
    parts = [(source, source.shape[1]) for source in prologue.sources] if prologue.sources else [(None, x.shape[1])]
    first = 0
    with b.if_then(inside_row):
        for source, channels in parts:
            with counted_loop(b, channels, name="pc") as c, counted_loop(b, rows, name="pr") as r, \
                    counted_loop(b, width, name="pw") as w:
                at = b.add(h, r)
                flat = b.add(b.mul(b.add(b.mul(b.add(b.mul(b.add(b.mul(n, i64(channels)), c), as_i64(depth)), d),
                                               as_i64(height)), at), as_i64(width)), w)
                value = elementwise_at(k, prologue.nodes, x.shape, flat, (n, c, d, at, w), {}) if source is None \
                    else element_as(k, source, flat, x.dtype)
                point = b.add(b.mul(r, as_i64(width)), w)
                b.store(value, b.gep(buffer, [b.add(b.mul(b.add(c, i64(first)), as_i64(run)), point)]))
            first += channels
    return buffer


def _store_transposed(k, channel, channels: int, lanes: int, packed, target, sw, positions) -> None:
    """For each square of `lanes` channels: their vectors of `lanes` positions transposed in registers,
    each position's channels stored straight into the packed row (the positions < `positions`)."""
    b = k.b
    with counted_loop(b, channels // lanes, name="rt") as rt:
        first = b.mul(rt, i64(lanes))
        columns = transpose(b, [channel(b.add(first, i64(i))) for i in range(lanes)])
        for j, column in enumerate(columns):
            with b.if_then(b.icmp_signed("<", i64(j), positions)):
                store_vector(b, column, packed, b.add(target, b.add(b.mul(i64(j), as_i64(sw)), first)))


def emit_pack_weight(lowering: Lowering, w: Value, g: Geometry, block: Blocking, layout: WeightLayout,
                     where, name: str, note_finite: bool = False, check: WeightCheck | None = None,
                     waits: bool = False) -> WeightFlags | None:
    """wp[g][ob][t][ic][lane] = w[g, ob*width + lane, ic, taps[t]] (0 past the group's channels), at
    `where` (a workspace offset, or a `Kept` one). With `note_finite` each item also notes whether
    the weights it read are finite; returns those `WeightFlags` (nonfinite.py), else None. With a
    `check` (prepared.py) the blocks are kept between calls (`where` and the flags in the persistent
    memory) and the items run only when the check saw the weights change.

    A work item is (g, ob, ic). For each tap it gathers its block's `width` channels a vector at a time
    (their kernels are contiguous in w, the channels `soc` apart) and writes the block's row whole (so
    a cache line of wp is written at once). A gather per row keeps the kernel a short loop, cheap to
    compile, and weights are few next to activations. It runs alongside the input packing: it waits
    for no kernel, unless `waits` (when no waiting kernel separates it from the check writing its flags)."""
    element = element_type(w.dtype)
    lanes = lowering.target.lanes(w.dtype)
    blocks = math.ceil(g.ocg / block.width)
    tap_count, kernel_size = len(layout.taps), math.prod(w.shape[2:])
    assert max(layout.taps, default=0) < kernel_size, (layout.taps, w.shape)
    table = constant_table(lowering, "wtaps", layout.taps)
    channel_steps = ir.Constant(vector_type(ir.IntType(64), lanes), [lane * layout.soc for lane in range(lanes)])
    row_mask = ir.Constant(vector_type(ir.IntType(1), lanes), [j < block.width % lanes for j in range(lanes)])
    flags = WeightFlags.reserve(lowering, g.groups * blocks * g.icg, kept=check is not None) if note_finite else None

    def body(k, item):
        b = k.b
        grp, ob, ic = unravel(b, item, (g.groups, blocks, g.icg))
        wp, src = region_pointer(k, where, element), k.pointer(w)
        first_channels = [b.add(b.mul(ob, i64(block.width)), i64(first_lane))
                          for first_lane in range(0, block.width, lanes)]
        inside = [positions_inside(b, oc0, lanes, g.ocg) for oc0 in first_channels]
        rows = [splat(b, strided_offset(b, 0, (grp, oc0, ic), (layout.sg, layout.soc, layout.sic)), lanes)
                for oc0 in first_channels]
        dst = b.add(b.mul(b.add(b.mul(grp, i64(blocks)), ob), i64(tap_count * g.icg * block.width)),
                    b.mul(ic, i64(block.width)))
        zero = ir.Constant(vector_type(element, lanes), [0.0] * lanes)
        with carried_loop(b, i64(tap_count), i64(0), [zero], name="t") as carry:
            t = carry.index
            tap = b.load(b.gep(table, [i64(0), t]))
            at = b.add(dst, b.mul(t, i64(g.icg * block.width)))
            probe = carry.values[0]
            for v, (row, mask) in enumerate(zip(rows, inside)):
                indices = b.add(b.add(row, channel_steps), splat(b, tap, lanes))
                vector = masked_gather(b, k.module, src, indices, mask)
                probe = finite_probe(b, probe, vector) if flags is not None else probe
                if (v + 1) * lanes <= block.width:
                    store_vector(b, vector, wp, b.add(at, i64(v * lanes)))
                else:
                    masked_store_vector(b, k.module, vector, wp, b.add(at, i64(v * lanes)), row_mask)
            carry.next = [probe]
        if flags is not None:
            flags.note(k, item, carry.values[0])

    lowering.kernel(name, g.groups * blocks * g.icg, when_changed(check, body), waits=waits, moves_data=True)
    return flags


def emit_pack_channel_blocks(lowering: Lowering, y: Value, layout: Padded, groups: int, offset: int, name: str,
                             waits: bool = True, prologue: Prologue | None = None) -> None:
    """packed[grp][blk][n][d][h][w][r] = y[n][grp*cg + blk*R + r][d - od][h - oh][w - ow] inside `y`
    and inside the group, else 0, for the `cg` = C / groups channels of a group split into blocks of
    R = `layout.channels`; each (grp, blk) is one channels-last `layout` of R channels. A work item is
    one padded row (n, d, h) of every block: for each tile of `lanes` positions it reads a vector
    of positions per channel (masked where it falls in the padding), transposes them in registers
    and writes each position's R channels (straight from the registers when R is a whole number
    of squares: a 16-channel 64^3 packing 2.2-3.1 -> 1.7-2.0 ms, alternating runs; else through a
    stack array). The squares are no wider than R needs (4 x 4 for a 3-channel image), so few
    channels do not load positions they throw away. With a `prologue` (y
    its output) the row is computed first (`prologue_row`) and read from there."""
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
        packed = k.scratch_pointer(offset, element)
        yd, yh = b.sub(d, i64(od)), b.sub(h, i64(oh))
        row_inside = b.and_(in_range(b, yd, size[0]), in_range(b, yh, size[1]))
        row = strided_offset(b, 0, (bn, d, h), (sn, sd, sh))
        src = k.pointer(y) if prologue is None else prologue_row(k, prologue, y, (bn, yd, yh), row_inside)
        with counted_loop(b, groups * blocks, name="block") as channel_block, \
                counted_loop(b, w_tiles, name="wt") as wt:
            grp, blk = b.udiv(channel_block, i64(blocks)), b.urem(channel_block, i64(blocks))
            first = b.add(b.mul(grp, i64(group_channels)), b.mul(blk, i64(layout.channels)))
            group_rest = b.sub(i64(group_channels), b.mul(blk, i64(layout.channels)))
            w0 = b.mul(wt, i64(lanes))
            if prologue is None:
                channel_row = b.add(b.mul(bn, i64(channels)), first)
                source_row = b.add(b.mul(b.add(b.mul(b.add(b.mul(channel_row, as_i64(size[0])), yd), as_i64(size[1])),
                                             yh), as_i64(size[2])), b.sub(w0, i64(ow)))
                channel_step = plane
            else:
                source_row, channel_step = b.add(b.mul(first, as_i64(size[2])), b.sub(w0, i64(ow))), size[2]
            inside = positions_inside(b, b.sub(w0, i64(ow)), lanes, size[2])

            def channel(r):
                ok = b.and_(row_inside, b.icmp_unsigned("<", r, group_rest))
                mask = b.and_(inside, splat(b, ok, lanes))
                return masked_load_vector(b, k.module, src, b.add(source_row, b.mul(r, as_i64(channel_step))), mask)

            target = b.add(b.add(b.mul(channel_block, as_i64(block_size)), row), b.mul(w0, i64(sw)))
            if layout.channels % lanes == 0:            # whole squares: stored from the registers
                _store_transposed(k, channel, layout.channels, lanes, packed, target, sw, b.sub(as_i64(wp), w0))
            else:
                columns, stride = transposed_rows(k, element, layout.channels, lanes, channel)
                with counted_loop(b, at_most(b, b.sub(as_i64(wp), w0), lanes), name="j") as j, \
                        counted_loop(b, layout.channels, name="r") as r:
                    value = b.load(b.gep(columns, [b.add(b.mul(j, i64(stride)), r)]))
                    b.store(value, b.gep(packed, [b.add(target, b.add(b.mul(j, i64(sw)), r))]))

    lowering.kernel(name, y.shape[0] * layout.extent[0] * layout.extent[1], body, waits, moves_data=True)
