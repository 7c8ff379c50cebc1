"""The weight gradient, `conv_weight_grad`: dw[g*ocg + oc][ic][tap] = sum over output positions of
input x output gradient.

It accumulates, for a tile of input channels x output-channel vectors, input value x output-gradient
vector over every output position, from copies of the input and the gradient packed in blocks of
one tile's channels (`emit_pack_channel_blocks`); work items are (part of the positions, group, oc
block), each part summing into its own copy of the blocked gradient, and a last kernel adds the
copies into dw. The sums are blocked: each call of the row function sums its few rows from zero in
registers and adds that to the copy (see `row_function`). When the input gradient's conv just
packed one of the two operands (`Lowering.leave_in_workspace`), it reads that copy instead of packing its
own. With symbolic sizes the rows per row-function call are computed per call and the number of
parts is fixed (`_reduction_parts`)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import llvmlite.ir as ir

from ....ir import symbolic
from ....ir.graph import Node, Value
from ...irgen import (I64, as_i64, carried_loop, counted_loop, element_type, float_suffix, i64, intrinsic, load_vector,
                      masked_gather, masked_store_vector, splat, store_vector, unravel, vector_type)
from ...lowering import Lowering
from .packing import Padded, emit_pack_channel_blocks
from .primitives import at_most, positions_inside, size_table, sized, strided_offset, table_array, zero_elements
from .problem import Blocking, Geometry, choose_blocking, geometry_of, kernel_taps, oc_blocks, to_3d


def lower_direct_weight_grad(lowering: Lowering, node: Node) -> None:
    """Lower `node`, a conv_weight_grad, with the kernels above: it takes every one."""
    x, gy = node.inputs
    dw = node.output
    groups = node.attrs["groups"]
    kernel = node.attrs["kernel_size"]
    g = geometry_of(x, kernel, node.attrs, groups, x.shape[1] // groups, gy.shape[1] // groups)
    windows = to_3d(gy.shape[2:], 1)
    block = choose_blocking(g.ocg, g.icg, lowering, x.dtype)
    x_needed = Padded(tuple((o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(windows, g.stride, g.kernel, g.dilation)),
                      g.pad_lo, _wgrad_tile_rows(g, block))
    gy_needed = Padded(windows, (0, 0, 0), block.width)
    shared_x = shared_copy(lowering, x, x_needed, groups)
    shared_gy = None if shared_x else shared_copy(lowering, gy, gy_needed, groups)
    layouts = WeightGradLayouts(WeightGradOperand.of(x_needed, shared_x), WeightGradOperand.of(gy_needed, shared_gy),
                                windows)
    taps = kernel_taps(g.kernel)
    itemsize = x.dtype.numpy.itemsize
    sizes = {"x": groups * layouts.x.blocks(g.icg) * layouts.x.layout.size(g.n) * itemsize,
             "gy": groups * layouts.gy.blocks(g.ocg) * layouts.gy.layout.size(g.n) * itemsize}
    order = ("gy", "x") if shared_gy else ("x", "gy")            # a shared copy stays at offset 0
    offsets = {name: lowering.scratch(sizes[name]) for name in order}
    dw_size = groups * oc_blocks(g, block) * len(taps) * g.icg * block.width
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
    _emit_unpack_copies(lowering, dw, g, block, len(taps), dw_offset, parts)


def shared_copy(lowering: Lowering, value: Value, needed: Padded, groups: int) -> Padded | None:
    """The channels-last copy of `value` that the node before left in the workspace (the input
    gradient's conv packs the output gradient, or for a transposed conv the same input), when the
    weight gradient can read it in place of packing `needed` itself: one group, every channel, and
    `needed`'s positions inside it (its origin at least `needed`'s, the extent to match)."""
    shared = lowering.left_in_workspace(value)
    if not isinstance(shared, Padded) or groups != 1 or shared.planar or shared.channels != value.shape[1]:
        return None
    shift = [have - want for have, want in zip(shared.origin, needed.origin)]
    outside = [symbolic.bounds(e + d - have)[1] > 0 for e, d, have in zip(needed.extent, shift, shared.extent)]
    if min(shift) < 0 or any(outside):            # (symbolic sizes: unless it fits at every size)
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
    """(rows per row-function call, blocks of such rows per output plane), for concrete `windows`."""
    depth, height, width = windows
    lines = max(1, min(height, math.ceil(WEIGHT_GRAD_POSITIONS / width)))
    return lines, math.ceil(height / lines)


def _run_time_lines(b: ir.IRBuilder, height, width) -> tuple:
    """`_wgrad_lines` computed in a kernel from this call's height and width (ints or i64 values, >= 1)."""
    height, width = as_i64(height), as_i64(width)
    wanted = b.udiv(b.add(i64(WEIGHT_GRAD_POSITIONS - 1), width), width)
    lines = b.select(b.icmp_unsigned("<", wanted, height), wanted, height)
    return lines, b.udiv(b.add(height, b.sub(lines, i64(1))), lines)


#: ... as long as the parts' copies of the blocked gradient take at most this many bytes together,
#: and each part sums at least this many positions (a copy costs a zeroing and an addition).
WEIGHT_GRAD_COPIES_BYTES = 32 << 20
WEIGHT_GRAD_POSITIONS_PER_PART = 256


def _reduction_parts(g: Geometry, block: Blocking, windows: tuple, copy_bytes: int) -> int:
    """Into how many parts the weight gradient splits its rows (each part sums into its own copy of
    the blocked gradient, of `copy_bytes`; the unpacking adds the copies). With symbolic sizes as
    many as are wanted and fit the bytes (at a size with fewer blocks of rows, some parts sum none)."""
    wanted = math.ceil(WEIGHT_GRAD_ITEMS / (g.groups * oc_blocks(g, block)))
    if symbolic.is_symbolic(windows) or symbolic.is_symbolic(g.n):
        return max(1, min(wanted, WEIGHT_GRAD_COPIES_BYTES // max(copy_bytes, 1)))
    worthwhile = g.n * math.prod(windows) // WEIGHT_GRAD_POSITIONS_PER_PART
    return max(1, min(wanted, worthwhile, WEIGHT_GRAD_COPIES_BYTES // max(copy_bytes, 1),
                      g.n * windows[0] * _wgrad_lines(windows)[1]))


def _wgrad_tile_rows(g: Geometry, block: Blocking) -> int:
    return max(1, min(block.points, g.icg))


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
    blocks = oc_blocks(g, block)
    rows_per_tile = layouts.x.channels
    tiles = math.ceil(g.icg / rows_per_tile)
    rest = g.icg - (tiles - 1) * rows_per_tile
    sc = layouts.x.layout.strides()[3]
    tap_groups = _tap_groups(lowering, g, block, tap_offsets)
    if not tap_groups:
        table = size_table(lowering, "gtaps", tap_offsets)
        full_row = row_function(lowering, element, block, rows_per_tile, g.stride[2] * sc)
        last_row = row_function(lowering, element, block, rest, g.stride[2] * sc)
    tap_block = g.icg * block.width                         # dwp elements per (grp, ob, tap)
    block_size = len(tap_offsets) * tap_block               # per (grp, ob)
    group_size = blocks * block_size
    sn, sd, sh, _ = layouts.x.layout.strides()
    sizes = (g.n, layouts.windows, (sn, g.stride[0] * sd, g.stride[1] * sh), layouts.gy.layout.strides(),
             (layouts.x.shift, layouts.gy.shift),
             (layouts.x.blocks(g.icg) * layouts.x.layout.size(g.n), layouts.x.block_offset(g.n)),
             (layouts.gy.blocks(g.ocg) * layouts.gy.layout.size(g.n), layouts.gy.block_offset(g.n)))
    concrete_lines = None if symbolic.is_symbolic(layouts.windows) else _wgrad_lines(layouts.windows)

    def body(k, item):
        b = k.b
        n_size, (depth, height, width), x_steps, (gn, gd, gh, gw), shifts, x_blocks, gy_blocks = sized(k, sizes)
        lines, line_blocks = concrete_lines or _run_time_lines(b, height, width)
        part, grp, ob = unravel(b, item, (parts, g.groups, blocks))
        xp, gp, dwp_all = (k.scratch_pointer(o, element) for o in (x_offset, gy_offset, dw_offset))
        xp, gp = b.gep(xp, [as_i64(shifts[0])]), b.gep(gp, [as_i64(shifts[1])])
        dwp = b.gep(dwp_all, [strided_offset(b, 0, (part, grp, ob), (g.groups * group_size, group_size, block_size))])
        zero_elements(b, dwp, block_size)
        g_block = b.gep(gp, [b.add(b.mul(grp, as_i64(gy_blocks[0])), b.mul(ob, as_i64(gy_blocks[1])))])
        blocks_of_lines = _product(b, (n_size, depth, line_blocks))
        with counted_loop(b, share(b, blocks_of_lines, parts, b.add(part, i64(1))),
                          share(b, blocks_of_lines, parts, part), name="lines") as line_block:
            n, d, first_line = unravel(b, line_block, (n_size, depth, line_blocks))
            h = b.mul(first_line, as_i64(lines))
            count = b.sub(as_i64(height), h)
            count = b.select(b.icmp_unsigned("<", count, as_i64(lines)), count, as_i64(lines))
            x_row = strided_offset(b, 0, (n, d, h), x_steps)
            g_row = strided_offset(b, 0, (n, d, h), (gn, gd, gh))
            g_at = b.gep(g_block, [g_row])
            arguments = [g_at, None, as_i64(width), as_i64(gw), count, as_i64(x_steps[2]), as_i64(gh)]
            if tap_groups:                   # one input channel: each call applies a group of taps
                x_base = b.add(b.mul(grp, as_i64(x_blocks[0])), x_row)
                for first, group_offsets in tap_groups:
                    row = row_function(lowering, element, block, 1, g.stride[2] * sc, group_offsets, tap_block)
                    arguments[1] = b.gep(dwp, [i64(first * tap_block)])
                    b.call(row, [b.gep(xp, [b.add(x_base, i64(tap_offsets[first]))])] + arguments)
            else:
                _call_rows_by_tap(k, (full_row, last_row), (table, len(tap_offsets)), tiles, (xp, dwp), (grp, x_row),
                                  x_blocks, arguments, rows_per_tile * block.width, tap_block)

    lowering.kernel("wgrad_tiles", parts * g.groups * blocks, body)


def _call_rows_by_tap(k, rows: tuple, taps: tuple, tiles: int, pointers: tuple, at: tuple, x_blocks: tuple,
                      arguments: list, tile_step: int, tap_block: int) -> None:
    """Each ic tile and tap of one block of lines: a call of the full row function (or of `rows[1]`,
    the last tile's) with the tile's input at the tap's offset and its sums' place in dwp. `taps` is
    (the taps' offsets as a `size_table`, their count)."""
    b = k.b
    (full_row, last_row), (table, tap_count), (xp, dwp), (grp, x_row) = rows, taps, pointers, at
    taps = table_array(k, table)
    with counted_loop(b, tiles, name="tile") as tile:
        x_block = b.add(b.mul(grp, as_i64(x_blocks[0])), b.mul(tile, as_i64(x_blocks[1])))
        dw_tile = b.mul(tile, i64(tile_step))
        is_last = b.icmp_unsigned("==", tile, i64(tiles - 1))
        with counted_loop(b, tap_count, name="t") as t:
            x_at = b.gep(xp, [b.add(b.add(x_block, x_row), b.load(b.gep(taps, [i64(0), t])))])
            arguments[1] = b.gep(dwp, [b.add(dw_tile, b.mul(t, i64(tap_block)))])
            with b.if_else(is_last) as (last, full):
                with last:
                    b.call(last_row, [x_at] + arguments)
                with full:
                    b.call(full_row, [x_at] + arguments)


def share(b: ir.IRBuilder, count, parts: int, part) -> ir.Value:
    """Where part `part` of `count` things (an int or an i64 value) split into `parts` near-equal
    parts starts."""
    return b.udiv(b.mul(part, as_i64(count)), i64(parts))


def _product(b: ir.IRBuilder, factors: tuple):
    """The product of ints and i64 values: an int when they are all ints."""
    if not any(isinstance(f, ir.Value) for f in factors):
        return math.prod(factors)
    return functools.reduce(b.mul, (as_i64(f) for f in factors))


def row_function(lowering: Lowering, element, block: Blocking, rows: int, x_step: int, taps: tuple = (0,),
                 tap_step: int = 0) -> ir.Function:
    """void row(x, gy, acc, positions, gy_step, lines, x_line, gy_line): for each of `taps` (offsets
    into x, their sums `tap_step` apart in acc), `rows` input channels × `block.vectors` vectors of
    output channels, acc[i*tap_step + r*width + j*lanes + lane] += sum over l < lines, p < positions
    of x[l*x_line + p*x_step + taps[i] + r] * gy[l*gy_line + p*gy_step + j*lanes + lane] (x_step and
    the taps constant: immediate offsets). The call's sum starts from zero in registers and is added
    to acc once: a blocked sum, whose rounding error grows with the positions of one call plus the
    calls, not with all the positions of a long running sum (3-7x PyTorch fp32's error, measured).
    Several taps per call share each gradient load among them (`_tap_groups`). A shared function
    (`Lowering.shared_function`), like the conv's register tile."""
    kind = float_suffix(element)
    name = (f"wgrad_row_{kind}_{block.lanes}x{block.vectors}x{rows}_step{x_step}"
            f"_taps{'_'.join(map(str, taps))}_{tap_step}")
    return lowering.shared_function(name, lambda module, symbol: _define_row(module, symbol, element, block, rows,
                                                                             x_step, taps, tap_step))


def _define_row(module: ir.Module, symbol: str, element, block: Blocking, rows: int, x_step: int, taps: tuple,
                tap_step: int) -> ir.Function:
    """The definition of `row_function`'s row in `module`, named `symbol`."""
    kind = float_suffix(element)
    pointer, i64t = element.as_pointer(), ir.IntType(64)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer] * 3 + [i64t] * 5), symbol)
    for argument in fn.args[:3]:
        argument.add_attribute("noalias")
    x, gy, acc, positions, gy_step, lines, x_line, gy_line = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vtype = ir.VectorType(element, block.lanes)
    fma = intrinsic(module, f"llvm.fma.v{block.lanes}{kind}", vtype, [vtype] * 3)
    slots = [(tap + r, j, i64(i * tap_step + r * block.width + j * block.lanes))
             for i, tap in enumerate(taps) for r in range(rows) for j in range(block.vectors)]
    accumulators = b.alloca(vtype, len(slots))
    for index in range(len(slots)):
        b.store(ir.Constant(vtype, [0.0] * block.lanes), b.gep(accumulators, [i64(index)]))
    with counted_loop(b, lines, name="l") as line, counted_loop(b, positions, name="p") as p:
        g_at = b.add(b.mul(line, gy_line), b.mul(p, gy_step))
        grads = [load_vector(b, gy, b.add(g_at, i64(j * block.lanes)), block.lanes) for j in range(block.vectors)]
        x_at = b.add(b.mul(line, x_line), b.mul(p, i64(x_step)))
        for index, (offset, j, _) in enumerate(slots):
            broadcast = splat(b, b.load(b.gep(x, [b.add(x_at, i64(offset))])), block.lanes)
            slot = b.gep(accumulators, [i64(index)])
            b.store(b.call(fma, [broadcast, grads[j], b.load(slot)]), slot)
    for index, (_, _, at) in enumerate(slots):
        total = b.fadd(load_vector(b, acc, at, block.lanes), b.load(b.gep(accumulators, [i64(index)])))
        store_vector(b, total, acc, at)
    b.ret_void()
    return fn


def _tap_groups(lowering: Lowering, g: Geometry, block: Blocking, tap_offsets: tuple) -> list | None:
    """For one input channel per group (a network's first conv reads one channel: a tile of one row
    loads a gradient vector per FMA), the taps in groups of as many as the registers hold
    accumulators for, as (first tap, offsets from its offset): each call of the row function then
    applies a gradient vector to every tap of its group. None otherwise, or for symbolic offsets."""
    if g.icg != 1 or symbolic.is_symbolic(tap_offsets):
        return None
    size = max(1, (lowering.target.model.vector_registers - block.vectors - 1) // block.vectors)
    return [(first, tuple(t - tap_offsets[first] for t in tap_offsets[first:first + size]))
            for first in range(0, len(tap_offsets), size)]


def emit_unpack_weight(lowering: Lowering, dw: Value, g: Geometry, block: Blocking, tap_count: int, fill,
                       name: str = "wgrad_unpack") -> None:
    """dw[grp*ocg + oc][ic][t] = the sums `fill(k, grp, ob, ic, summed)` puts in a stack array
    summed[t][width] for block `ob` of output channels (oc = ob * width + lane) and input channel ic.

    A work item is (grp, ob, ic). After `fill`, for each of its block's channels inside the group
    and each vector of `lanes` taps, it gathers the sums (from L1, `width` apart: no cache-set
    conflicts whatever `icg`) and writes the channel's run of contiguous elements of dw. The gathers
    keep the kernel a few short loops, cheap to compile."""
    element = element_type(dw.dtype)
    blocks = oc_blocks(g, block)
    lanes = block.lanes
    tap_steps = ir.Constant(vector_type(I64, lanes), [j * block.width for j in range(lanes)])

    def body(k, item):
        b = k.b
        grp, ob, ic = unravel(b, item, (g.groups, blocks, g.icg))
        out = k.pointer(dw)
        summed = k.alloca(element, tap_count * block.width, name="summed")
        fill(k, grp, ob, ic, summed)
        oc0 = b.mul(ob, i64(block.width))
        with counted_loop(b, at_most(b, b.sub(i64(g.ocg), oc0), block.width), name="lane") as lane, \
                counted_loop(b, math.ceil(tap_count / lanes), name="tt") as tile:
            t0 = b.mul(tile, i64(lanes))
            inside = positions_inside(b, t0, lanes, tap_count)
            taps = b.add(splat(b, b.add(lane, b.mul(t0, i64(block.width))), lanes), tap_steps)
            oc = b.add(b.mul(grp, i64(g.ocg)), b.add(oc0, lane))
            row = b.mul(b.add(b.mul(oc, i64(g.icg)), ic), i64(tap_count))
            masked_store_vector(b, k.module, masked_gather(b, k.module, summed, taps, inside), out, b.add(row, t0),
                                inside)

    lowering.kernel(name, g.groups * blocks * g.icg, body, moves_data=True)


def _emit_unpack_copies(lowering: Lowering, dw: Value, g: Geometry, block: Blocking, tap_count: int, offset: int,
                        parts: int) -> None:
    """dw[grp*ocg + oc][ic][t] = sum over p < parts of dwp[p][grp][oc // width][t][ic][oc % width]."""
    element = element_type(dw.dtype)
    blocks = oc_blocks(g, block)
    copy = g.groups * blocks * tap_count * g.icg * block.width

    def sum_copies(k, grp, ob, ic, summed):
        b = k.b
        first = b.mul(b.add(b.mul(b.add(b.mul(grp, i64(blocks)), ob), i64(tap_count * g.icg)), ic), i64(block.width))
        _sum_copies(k, k.scratch_pointer(offset, element), first, summed, tap_count, g.icg, block, parts, copy)

    emit_unpack_weight(lowering, dw, g, block, tap_count, sum_copies)


def _sum_copies(k, dwp: ir.Value, first: ir.Value, summed: ir.Value, tap_count: int, icg: int, block: Blocking,
                parts: int, copy: int) -> None:
    """summed[t * width + c] = the sum over p < parts of dwp[first + t * icg * width + c + p * copy], for
    t < tap_count and c < block.width, a vector of channels at a time (the copies in order)."""
    b = k.b
    with counted_loop(b, tap_count, name="t") as t:
        at = b.add(first, b.mul(t, i64(icg * block.width)))
        for vector in range(block.vectors):
            total = sum_of_copies(b, dwp, b.add(at, i64(vector * block.lanes)), block.lanes, (parts, copy))
            store_vector(b, total, summed, b.add(b.mul(t, i64(block.width)), i64(vector * block.lanes)))


def sum_of_copies(b: ir.IRBuilder, array: ir.Value, at, lanes: int, copies: tuple) -> ir.Value:
    """The sum of the `lanes`-vectors at `at` of the copies (their count, elements apart) in `array`,
    in order of the copies."""
    count, stride = copies
    with carried_loop(b, i64(count), i64(1), [load_vector(b, array, at, lanes)], name="part") as carry:
        other = load_vector(b, array, b.add(at, b.mul(carry.index, i64(stride))), lanes)
        carry.next = [b.fadd(carry.values[0], other)]
    return carry.values[0]
