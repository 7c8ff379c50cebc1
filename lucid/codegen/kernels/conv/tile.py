"""The register tile and the rows of tiles a direct kernel calls.

`tile_function` is the innermost loop of every convolution here (the direct and phase kernels, the
kernels vectorised over output points and Winograd's GEMM): a tile of rows x vectors accumulates,
over taps and input channels, a broadcast scalar times a vector with FMA, in blocks of about
`BLOCK_TERMS` terms summed from zero and then added (for accuracy). A `Direct` spec says which
rows of output points one direct kernel convolves; `row_tiles` and `emit_row_block` cover one such
row, for one block of output channels, with calls of the tile. The tile is a shared function
(`Lowering.shared_function`): one object per blocking, whichever kernels, graphs and processes
call it (inlined into each kernel, it made a Winograd kernel's module a third costlier to compile;
out of line it costs 1.5-3.5% of G2's and E's forward in conv.py, against session 21's inlined tile,
alternating runs: a call of 12 arguments, the channels and strides no longer constants in it)."""
from __future__ import annotations

from dataclasses import dataclass, field

import llvmlite.ir as ir

from ....ir import symbolic
from ...irgen import as_i64, counted_loop, float_suffix, i64, intrinsic, load_vector, splat, store_vector
from ...lowering import Lowering
from .primitives import constant_table, region_pointer, size_table, sized, strided_offset, table_array
from .problem import Blocking, Geometry, oc_blocks


@dataclass(frozen=True)
class Direct:
    """One direct-convolution kernel: rows (n, qd, qh) × (g, ob) of `points` points along w.

    Input point (row, p) starts at x0 + n*sx[0] + qd*sx[1] + qh*sx[2] + g*icg*sx_channel + p*sx_point;
    tap t adds taps[t], input channel ic adds ic*sx_channel (1 in a channels-last copy, a plane in
    the NCDHW input itself). Output point goes to y0 + n*sy[0] + qd*sy[1] + qh*sy[2] + (g*blocks +
    ob)*width + p*sy_point. Weights of block (g, ob) start at w0 + (g*blocks + ob)*w_taps*icg*width:
    the packed weights hold w_taps taps per block (those of all the stride phases of a transposed
    conv, this kernel's starting at w0). The rows are output rows from depth `first_depth` on.
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
    sx_channel: int = 1
    first_depth: int = 0


@dataclass(frozen=True)
class RowTiles:
    """What a kernel calls to convolve one row of `spec` for one (group, oc block): `full` calls of
    the register tile `tile`, then `last` (fewer points) if the row does not divide into tiles. A
    row of symbolic length instead has tiles of several sizes, `by_size` (points -> function), and
    chooses them per row (`emit_run_time_row`)."""

    element: ir.Type
    g: Geometry
    block: Blocking
    spec: Direct
    full: int
    tile: ir.Function
    last: ir.Function | None
    taps: object                       # a `size_table`
    weight_taps: ir.GlobalVariable
    by_size: dict = field(default_factory=dict)


def row_tiles(lowering: Lowering, element, g: Geometry, block: Blocking, spec: Direct) -> RowTiles:
    """The tile functions and tap tables of `spec`, made in the module of the next kernel."""
    tile = tile_function(lowering, element, block, block.points, spec.sx_point)
    if symbolic.is_symbolic(spec.points):
        full, last = 0, None
        by_size = {count: tile_function(lowering, element, block, count, spec.sx_point)
                   for count in sorted(set(run_time_tile_sizes(block.points)))}
    else:
        (full, rest), by_size = divmod(spec.points, block.points), {}
        last = tile_function(lowering, element, block, rest, spec.sx_point) if rest else None
    return RowTiles(element, g, block, spec, full, tile, last, size_table(lowering, "taps", spec.taps),
                    constant_table(lowering, "wtaps", [t * g.icg * block.width for t in range(len(spec.taps))]),
                    by_size)


def run_time_tile_sizes(most: int) -> list:
    """The tile sizes a row of symbolic length may take with tiles of at most `most` points: the
    balanced sizes of a row of at least `most` points ((`most` + 1) // 2 ... `most`), and for a
    shorter row its length's bits (8, 4, 2, 1)."""
    return list(range((most + 1) // 2, most + 1)) + [bit for bit in (8, 4, 2, 1) if bit < most]


def emit_row_block(k, tiles: RowTiles, offsets: tuple, n, qd, qh, grp, ob) -> None:
    """Row (n, qd, qh) of `tiles.spec` for channel block (grp, ob): input, packed weights and
    output scratch at `offsets` (workspace offsets; `Kept` ones: the packed weights; a graph value:
    an input read where it is)."""
    b = k.b
    g, block, spec = tiles.g, tiles.block, sized(k, tiles.spec)
    blocks = oc_blocks(g, block)
    xp, wp, yp = (region_pointer(k, o, tiles.element) for o in offsets)
    x_row = strided_offset(b, spec.x0, (n, qd, qh, grp), spec.sx + (g.icg * spec.sx_channel,))
    y_row = b.add(strided_offset(b, spec.y0, (n, qd, qh), spec.sy),
                  b.mul(b.add(b.mul(grp, i64(blocks)), ob), i64(block.width)))
    w_row = b.add(i64(spec.w0), b.mul(b.add(b.mul(grp, i64(blocks)), ob), i64(spec.w_taps * g.icg * block.width)))
    taps = [b.gep(t, [i64(0), i64(0)]) for t in (table_array(k, tiles.taps), tiles.weight_taps)]
    shape = [i64(len(spec.taps)), i64(g.icg), as_i64(spec.sx_channel), i64(block.width), as_i64(spec.sy_point),
             *term_blocks(len(spec.taps), g.icg)]

    def call(function, first):
        x_first = b.gep(xp, [b.add(x_row, b.mul(first, as_i64(spec.sx_point)))])
        y_first = b.gep(yp, [b.add(y_row, b.mul(first, as_i64(spec.sy_point)))])
        b.call(function, [x_first, b.gep(wp, [w_row]), y_first] + taps + shape)

    if tiles.by_size:
        emit_run_time_row(b, tiles, as_i64(spec.points), call)
        return
    with counted_loop(b, tiles.full, name="tile") as p:
        call(tiles.tile, b.mul(p, i64(block.points)))
    if tiles.last is not None:
        call(tiles.last, i64(tiles.full * block.points))


def emit_run_time_row(b: ir.IRBuilder, tiles: RowTiles, points: ir.Value, call) -> None:
    """A row of `points` points (known at run time) as a static compile would tile it: a row of at
    least a tile's points in the fewest tiles, balanced (the first `points` % count one point
    longer), each call going to the tile of its size; a shorter row by the bits of its length (a
    tile of 8, 4, 2, 1 points). `tiles`: a RowTiles, or anything with its `block` and `by_size`
    (Winograd's GEMM)."""
    most = tiles.block.points
    with b.if_else(b.icmp_unsigned(">=", points, i64(most))) as (long_row, short_row):
        with long_row:
            count = b.udiv(b.add(points, i64(most - 1)), i64(most))
            base = b.udiv(points, count)
            longer = b.sub(points, b.mul(count, base))
            with counted_loop(b, count, name="tile") as t:
                is_longer = b.icmp_unsigned("<", t, longer)
                first = b.add(b.mul(t, base), b.select(is_longer, t, longer))
                call_by_size(b, tiles.by_size, b.add(base, b.zext(is_longer, base.type)), first, call)
        with short_row:
            for bit in (8, 4, 2, 1):
                if bit < most:
                    with b.if_then(b.icmp_unsigned("!=", b.and_(points, i64(bit)), i64(0))):
                        call(tiles.by_size[bit], b.and_(points, i64(-2 * bit)))


def call_by_size(b: ir.IRBuilder, by_size: dict, size: ir.Value, first: ir.Value, call) -> None:
    """`call(by_size[size], first)` (tile functions by their size) through a switch: direct calls,
    so the tiles' constant arguments still specialise them; no call for a size not in `by_size`."""
    done = b.append_basic_block("tile_called")
    switch = b.switch(size, done)
    for count, function in by_size.items():
        case = b.append_basic_block(f"tile{count}")
        switch.add_case(i64(count), case)
        b.position_at_end(case)
        call(function, first)
        b.branch(done)
    b.position_at_end(done)


#: The register tile sums its terms (tap, input channel) in blocks of whole taps, about this many
#: terms each (at least one tap), each block from zero, then adds the blocks: the rounding error
#: grows with the terms of a block plus the blocks, not with all the terms of one running sum
#: (27 x 64 of a 3 x 3 x 3 conv: 2.5-4x PyTorch fp32's error, measured by benchmarks/accuracy.py).
#: 64 costs C's forward (Winograd, 32 channels) nothing measurable; 32 cost it 20% of its time.
BLOCK_TERMS = 64


def term_blocks(tap_count: int, icg: int) -> list:
    """The tile's last two arguments: the taps in a block of about BLOCK_TERMS terms (at least one),
    and the blocks of `tap_count` taps (computed here, once: dividing in every call of the tile made
    G2's forward 0.88 of channels-last PyTorch's time instead of 0.85, alternating conv.py runs)."""
    taps_per_block = -(-BLOCK_TERMS // icg)
    return [i64(taps_per_block), i64(-(-tap_count // taps_per_block))]


def tile_function(lowering: Lowering, element, block: Blocking, count: int, s_step: int) -> ir.Function:
    """void tile(s, v, y, s_taps, v_taps, tap_count, icg, s_ic, v_ic, y_step, taps_per_block, blocks)
    (the last two from `term_blocks`): the register tile of
    `count` rows × `block.vectors` vectors with this row step (a constant, so the scalar operands of
    the rows are immediate offsets), compiled once at level 3 in a module of its own
    (`Lowering.shared_function`) that every kernel with this blocking calls: the kernels around it
    only order its calls and move data, and take level 2.

    y[r*y_step + j*lanes + lane] = sum over t < tap_count, ic < icg of
        s[s_taps[t] + ic*s_ic + r*s_step] * v[v_taps[t] + ic*v_ic + j*lanes + lane]
    i.e. a broadcast scalar times a vector, accumulated with FMA, a block of whole taps (about
    BLOCK_TERMS terms) at a time. For a convolution vectorised over
    output channels the scalars are input values (rows: output points) and the vectors weight rows;
    vectorised over output points, the scalars are weights (rows: output channels) and the vectors
    input rows."""
    kind = float_suffix(element)
    name = f"conv_tile_{kind}_{block.lanes}x{block.vectors}x{count}_step{s_step}"
    return lowering.shared_function(name, lambda module, symbol: _define_tile(module, symbol, element, block, count,
                                                                              s_step))


def _define_tile(module: ir.Module, symbol: str, element, block: Blocking, count: int, s_step: int) -> ir.Function:
    """The definition of `tile_function`'s tile in `module`, named `symbol`."""
    kind = float_suffix(element)
    pointer = element.as_pointer()
    i64t = ir.IntType(64)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer] * 3 + [i64t.as_pointer()] * 2 + [i64t] * 7),
                     symbol)
    for argument in fn.args[:3]:
        argument.add_attribute("noalias")
    s, v, y, s_taps, v_taps, tap_count, icg, s_ic, v_ic, y_step, group, blocks = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vtype = ir.VectorType(element, block.lanes)
    fma = intrinsic(module, f"llvm.fma.v{block.lanes}{kind}", vtype, [vtype] * 3)
    slots = count * block.vectors
    totals, accumulators = b.alloca(vtype, slots), b.alloca(vtype, slots)
    _zero_tile(b, totals, slots, vtype)
    with counted_loop(b, blocks, name="tg") as tap_group:
        _zero_tile(b, accumulators, slots, vtype)
        first_tap = b.mul(tap_group, group)
        end = b.add(first_tap, group)
        with counted_loop(b, b.select(b.icmp_unsigned("<", end, tap_count), end, tap_count), first_tap, name="t") as t:
            s_tap = b.gep(s, [b.load(b.gep(s_taps, [t]))])
            v_tap = b.gep(v, [b.load(b.gep(v_taps, [t]))])
            with counted_loop(b, icg, name="ic") as ic:
                s_ic_at, v_ic_at = b.mul(ic, s_ic), b.mul(ic, v_ic)
                vectors = [load_vector(b, v_tap, b.add(v_ic_at, i64(j * block.lanes)), block.lanes)
                           for j in range(block.vectors)]
                for r in range(count):
                    broadcast = splat(b, b.load(b.gep(s_tap, [b.add(s_ic_at, i64(r * s_step))])), block.lanes)
                    for j in range(block.vectors):
                        slot = b.gep(accumulators, [i64(r * block.vectors + j)])
                        b.store(b.call(fma, [broadcast, vectors[j], b.load(slot)]), slot)
        _add_tile(b, totals, accumulators, slots)
    for r in range(count):
        for j in range(block.vectors):
            value = b.load(b.gep(totals, [i64(r * block.vectors + j)]))
            store_vector(b, value, y, b.add(b.mul(i64(r), y_step), i64(j * block.lanes)))
    b.ret_void()
    return fn


def _zero_tile(b: ir.IRBuilder, accumulators, count: int, vtype) -> None:
    zero = ir.Constant(vtype, [0.0] * vtype.count)
    for slot in range(count):
        b.store(zero, b.gep(accumulators, [i64(slot)]))


def _add_tile(b: ir.IRBuilder, totals, partials, count: int) -> None:
    """totals[slot] += partials[slot] for the tile's `count` accumulator slots."""
    for slot in range(count):
        total = b.gep(totals, [i64(slot)])
        b.store(b.fadd(b.load(total), b.load(b.gep(partials, [i64(slot)]))), total)
