"""Winograd F(2x2, 3x3) convolution: 3x3 stride-1 convolutions with 2.25x fewer multiplications.

Applies to one-group convolutions (and stride-1 transposed convolutions, in conv form) whose kernel
is 3 x 3 with stride and dilation 1 across (h, w), with at least `MIN_CHANNELS` input and output
channels, input channels a whole number of vectors; along d the kernel, stride and dilation are
anything (each depth tap is a 2-D Winograd product, summed in the same accumulators). Guarantees:

- the same result as the direct convolution up to float rounding (the transforms only add, subtract
  and halve);
- the same non-finite values as the direct convolution: a work item whose transformed result holds
  a NaN or an infinity (a non-finite input or weight, or an overflow inside the transforms) is
  computed again with the direct kernel;
- each work item's transformed input and products live on its thread's stack (at most
  `STACK_BYTES`), so they stay in L2 and never travel to memory.

Output tiles are 2 x 2 points; tile (th, tw) reads the 4 x 4 input patch at (2 th, 2 tw) of the
zero-padded channels-last input `xp`. With xi (0..15) a position of the 4 x 4 transformed domain:

    U[xi] = (G g G^T)[xi]          per weight (oc, ic, depth tap): `wino_weights` kernel
    V[xi] = (B^T d B)[xi]          per input patch and channel vector
    M[xi] = sum over depth taps and ic of V[xi] * U[xi]   (the register tile of conv.py, a GEMM)
    y     = A^T M A                2 x 2 outputs

A work item is (n, od, th): two output rows of one depth slice, which it then unpacks to NCDHW.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import llvmlite.ir as ir

from ..irgen import counted_loop, element_type, i64, load_vector, store_vector, unravel
from ..lowering import Lowering
from .conv import (FAST_ALGORITHMS, Blocking, ConvProblem, Padded, RowTiles, Unpack, _blocks, _table, _three,
                   _yp_size, _yp_strides, channels_last_source, choose_blocking, conv_direct_spec, emit_pack_input,
                   emit_pack_weight, emit_row_block, row_tiles, tile_function, unpack_row)

#: Fewer input or output channels than this leave the transforms too large a share of the work.
MIN_CHANNELS = 16

#: Most bytes of stack a work item uses for its transformed input and products.
STACK_BYTES = 384 << 10

#: Positions of the transformed 4 x 4 domain.
POSITIONS = 16


@dataclass(frozen=True)
class Plan:
    """Tiles (TH, TW) of the output, the GEMM's register blocking and the direct fallback's."""

    tiles: tuple
    gemm: Blocking
    direct: Blocking
    layout: Padded


def plan(lowering: Lowering, problem: ConvProblem) -> Plan | None:
    """The Winograd plan of `problem`, or None when the algorithm does not apply."""
    g, x, y = problem.g, problem.x, problem.y
    out_sp = _three(y.shape[2:], 1)
    if (g.groups != 1 or g.kernel[1:] != (3, 3) or g.stride[1:] != (1, 1) or g.dilation[1:] != (1, 1)
            or min(g.icg, g.ocg) < MIN_CHANNELS or out_sp[1] < 2 or out_sp[2] < 2):
        return None
    tiles = (math.ceil(out_sp[1] / 2), math.ceil(out_sp[2] / 2))
    gemm = choose_blocking(g.ocg, tiles[1], lowering, x.dtype)
    if g.icg % gemm.lanes:
        return None
    itemsize = x.dtype.numpy.itemsize
    stack = POSITIONS * tiles[1] * (g.kernel[0] * g.icg + _blocks(g, gemm) * gemm.width) * itemsize
    if stack > STACK_BYTES:
        return None
    depth = (out_sp[0] - 1) * g.stride[0] + (g.kernel[0] - 1) * g.dilation[0] + 1
    layout = Padded((depth, 2 * tiles[0] + 2, 2 * tiles[1] + 2), g.pad_lo, x.shape[1])
    return Plan(tiles, gemm, choose_blocking(g.ocg, out_sp[2], lowering, x.dtype), layout)


def lower_winograd(lowering: Lowering, problem: ConvProblem) -> bool:
    """Lower `problem` with Winograd F(2x2, 3x3) if it applies (see the module docstring)."""
    p = plan(lowering, problem)
    if p is None:
        return False
    x, y, g = problem.x, problem.y, problem.g
    itemsize = x.dtype.numpy.itemsize
    blocks = _blocks(g, p.gemm)
    x_offset = lowering.scratch(p.layout.size(g.n) * itemsize)
    u_offset = lowering.scratch(blocks * g.kernel[0] * POSITIONS * g.icg * p.gemm.width * itemsize)
    w_offset = lowering.scratch(blocks * math.prod(g.kernel) * g.icg * p.direct.width * itemsize)
    y_offset = lowering.scratch(_yp_size(y, g, p.gemm) * itemsize)
    emit_pack_input(lowering, x, p.layout, x_offset, "wino_pack_input")
    _emit_weight_transform(lowering, problem, p.gemm, u_offset)
    emit_pack_weight(lowering, problem.w, g, p.direct, problem.weights, w_offset, "wino_pack_fallback_weight")
    unpack = Unpack(y, problem.bias, y_offset, channels_last_source(y, g, p.gemm), problem.epilogue)
    _emit_main(lowering, problem, p, (x_offset, u_offset, w_offset, y_offset), unpack)
    return True


FAST_ALGORITHMS.append(lower_winograd)


# ---------------------------------------------------------------------------------------------
# The transforms, on lists of values (scalars or vectors) with the builder's fadd/fsub/fmul


def _weight_rows(b: ir.IRBuilder, g3: list, half) -> list:
    """G g for the three values g3 of one kernel column: [g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2]."""
    outer = b.fadd(g3[0], g3[2])
    return [g3[0], b.fmul(b.fadd(outer, g3[1]), half), b.fmul(b.fsub(outer, g3[1]), half), g3[2]]


def _input_rows(b: ir.IRBuilder, d4: list) -> list:
    """B^T d for four values: [d0 - d2, d1 + d2, d2 - d1, d1 - d3]."""
    return [b.fsub(d4[0], d4[2]), b.fadd(d4[1], d4[2]), b.fsub(d4[2], d4[1]), b.fsub(d4[1], d4[3])]


def _output_rows(b: ir.IRBuilder, m4: list) -> list:
    """A^T m for four values: [m0 + m1 + m2, m1 - m2 - m3]."""
    return [b.fadd(b.fadd(m4[0], m4[1]), m4[2]), b.fsub(b.fsub(m4[1], m4[2]), m4[3])]


def _separable(b: ir.IRBuilder, grid: list, rows) -> list:
    """Apply the 1-D transform `rows` to the columns of the square `grid` (a list of rows), then to
    the rows of the result: T grid T^T, returned flat, row-major."""
    columns = [rows(b, [row[j] for row in grid]) for j in range(len(grid[0]))]
    by_row = [[column[i] for column in columns] for i in range(len(columns[0]))]
    return [value for row in by_row for value in rows(b, row)]


# ---------------------------------------------------------------------------------------------
# Kernels


def _emit_weight_transform(lowering: Lowering, problem: ConvProblem, block: Blocking, offset: int) -> None:
    """U[ob][kd][xi][ic][lane] = (G g G^T)[xi] of weight (oc = ob * width + lane, ic, kd), 0 past the
    output channels. A work item is (ob, kd, ic)."""
    g, w, layout = problem.g, problem.w, problem.weights
    element = element_type(w.dtype)
    blocks = _blocks(g, block)
    depth_taps = g.kernel[0]
    table = _table(lowering, "wtaps", layout.taps)

    def body(k, item):
        b = k.b
        ob, kd, ic = unravel(b, item, (blocks, depth_taps, g.icg))
        src, u = k.pointer(w), k.scratch_pointer(offset, element)
        half = ir.Constant(element, 0.5)
        first = b.mul(b.add(b.mul(b.add(b.mul(ob, i64(depth_taps)), kd), i64(POSITIONS * g.icg)), ic),
                      i64(block.width))
        with counted_loop(b, block.width, name="lane") as lane:
            oc = b.add(b.mul(ob, i64(block.width)), lane)
            inside = b.icmp_unsigned("<", oc, i64(g.ocg))
            row = b.add(b.mul(b.select(inside, oc, i64(0)), i64(layout.soc)), b.mul(ic, i64(layout.sic)))

            def weight(i, j):
                tap = b.load(b.gep(table, [i64(0), b.add(b.mul(kd, i64(9)), i64(3 * i + j))]))
                value = b.load(b.gep(src, [b.add(row, tap)]))
                return b.select(inside, value, ir.Constant(element, 0.0))

            transformed = _separable(b, [[weight(i, j) for j in range(3)] for i in range(3)],
                                     lambda b_, g3: _weight_rows(b_, g3, half))
            for xi, value in enumerate(transformed):
                b.store(value, b.gep(u, [b.add(b.add(first, lane), i64(xi * g.icg * block.width))]))

    lowering.kernel("wino_weights", blocks * depth_taps * g.icg, body, waits=False)


def _emit_main(lowering: Lowering, problem: ConvProblem, p: Plan, offsets: tuple, unpack: Unpack) -> None:
    """Work item (n, od, th): transform the input patches of its tile row, multiply them by U (the
    register tile of conv.py, one call per position xi and oc block), transform the products back to
    two output rows of the channels-last scratch (again with the direct kernel if they are not all
    finite), and unpack those rows."""
    g, y = problem.g, problem.y
    element = element_type(y.dtype)
    out_sp = _three(y.shape[2:], 1)
    assert p.direct.width == p.gemm.width          # both write the same channels-last scratch
    x_offset, u_offset, w_offset, y_offset = offsets
    products = _Products(lowering, element, g, p)
    fallback = row_tiles(lowering, element, g, p.direct, conv_direct_spec(g, out_sp, p.layout, _yp_strides(y, g, p.gemm)))

    def body(k, item):
        b = k.b
        n, od, th = unravel(b, item, (g.n, out_sp[0], p.tiles[0]))
        v, m = _aligned(k.alloca(element, products.v_size)), _aligned(k.alloca(element, products.m_size))
        _transform_input(k, g, p, k.scratch_pointer(x_offset, element), v, (n, od, th))
        products.emit(b, v, k.scratch_pointer(u_offset, element), m)
        nonfinite = _transform_output(k, g, p, y, m, k.scratch_pointer(y_offset, element), (n, od, th))
        rows = [(b.add(b.mul(th, i64(2)), i64(r)), _row_exists(b, th, r, out_sp[1], p.tiles[0])) for r in (0, 1)]
        with b.if_then(nonfinite):
            for h, exists in rows:
                _maybe(b, exists, lambda h=h: _direct_row(k, fallback, (x_offset, w_offset, y_offset), n, od, h))
        for h, exists in rows:
            row = b.add(b.mul(b.add(b.mul(n, i64(out_sp[0])), od), i64(out_sp[1])), h)
            _maybe(b, exists, lambda row=row: unpack_row(k, unpack, row))

    lowering.kernel("wino_conv", g.n * out_sp[0] * p.tiles[0], body)


class _Products:
    """M[xi][tw][oc] = sum over depth taps kd and ic of V[kd][xi][tw][ic] * U[ob][kd][xi][ic][lane]:
    for each oc block and position xi, register tiles of points (tw) x oc vectors."""

    def __init__(self, lowering: Lowering, element, g, p: Plan):
        self.g, self.block, self.tw = g, p.gemm, p.tiles[1]
        self.blocks = _blocks(g, p.gemm)
        self.oc_padded = self.blocks * p.gemm.width
        depth_taps = g.kernel[0]
        self.v_size = depth_taps * POSITIONS * self.tw * g.icg
        self.m_size = POSITIONS * self.tw * self.oc_padded
        self.full, rest = divmod(self.tw, p.gemm.points)
        self.tile = tile_function(lowering, element, p.gemm, p.gemm.points, g.icg)
        self.last = tile_function(lowering, element, p.gemm, rest, g.icg) if rest else None
        self.v_taps = _table(lowering, "vtaps", [kd * POSITIONS * self.tw * g.icg for kd in range(depth_taps)])
        self.u_taps = _table(lowering, "utaps", [kd * POSITIONS * g.icg * p.gemm.width for kd in range(depth_taps)])

    def emit(self, b: ir.IRBuilder, v, u, m) -> None:
        g, block = self.g, self.block
        taps = [b.gep(t, [i64(0), i64(0)]) for t in (self.v_taps, self.u_taps)]
        shape = [i64(g.kernel[0]), i64(g.icg), i64(1), i64(block.width), i64(self.oc_padded)]
        with counted_loop(b, POSITIONS, name="xi") as xi, counted_loop(b, self.blocks, name="ob") as ob:
            v_xi = b.mul(xi, i64(self.tw * g.icg))
            u_block = b.gep(u, [b.mul(b.add(b.mul(ob, i64(g.kernel[0] * POSITIONS)), xi), i64(g.icg * block.width))])
            m_xi = b.add(b.mul(xi, i64(self.tw * self.oc_padded)), b.mul(ob, i64(block.width)))

            def call(function, first):
                v_first = b.gep(v, [b.add(v_xi, b.mul(first, i64(g.icg)))])
                m_first = b.gep(m, [b.add(m_xi, b.mul(first, i64(self.oc_padded)))])
                b.call(function, [v_first, u_block, m_first] + taps + shape)

            with counted_loop(b, self.full, name="tile") as t:
                call(self.tile, b.mul(t, i64(block.points)))
            if self.last is not None:
                call(self.last, i64(self.full * block.points))


def _transform_input(k, g, p: Plan, xp, v, item: tuple) -> None:
    """V[kd][xi][tw][ic] = (B^T d B)[xi], d the 4 x 4 patch at (2 th, 2 tw) of depth slice
    od * stride + kd * dilation, one vector of channels at a time."""
    b = k.b
    n, od, th = item
    lanes, tw_count = p.gemm.lanes, p.tiles[1]
    sn, sd, sh, sw = p.layout.strides()
    first = b.add(b.add(b.mul(n, i64(sn)), b.mul(od, i64(g.stride[0] * sd))), b.mul(th, i64(2 * sh)))
    with counted_loop(b, g.kernel[0], name="kd") as kd, counted_loop(b, tw_count, name="tw") as tw, \
            counted_loop(b, g.icg // lanes, name="cv") as cv:
        corner = b.add(b.add(first, b.mul(kd, i64(g.dilation[0] * sd))),
                       b.add(b.mul(tw, i64(2 * sw)), b.mul(cv, i64(lanes))))
        patch = [[load_vector(b, xp, b.add(corner, i64(i * sh + j * sw)), lanes) for j in range(4)] for i in range(4)]
        target = b.add(b.mul(b.add(b.mul(kd, i64(POSITIONS * tw_count)), tw), i64(g.icg)), b.mul(cv, i64(lanes)))
        for xi, value in enumerate(_separable(b, patch, _input_rows)):
            store_vector(b, value, v, b.add(target, i64(xi * tw_count * g.icg)))


def _transform_output(k, g, p: Plan, y, m, yp, item: tuple) -> ir.Value:
    """yp at the 2 x 2 outputs of each tile of the row = A^T M A, for the outputs inside y; returns
    whether any transformed value (inside y or not) is NaN or infinite."""
    b = k.b
    n, od, th = item
    lanes, tw_count = p.gemm.lanes, p.tiles[1]
    out_sp = _three(y.shape[2:], 1)
    oc_padded = _blocks(g, p.gemm) * p.gemm.width
    yd = _yp_strides(y, g, p.gemm)
    vtype = ir.VectorType(m.type.pointee, lanes)
    zero = ir.Constant(vtype, [0.0] * lanes)
    seen = k.alloca(vtype)
    b.store(zero, seen)
    row0 = b.add(b.add(b.mul(n, i64(yd[0])), b.mul(od, i64(yd[1]))), b.mul(th, i64(2 * yd[2])))
    with counted_loop(b, tw_count, name="tw") as tw, counted_loop(b, math.ceil(g.ocg / lanes), name="ov") as ov:
        at = b.add(b.mul(tw, i64(oc_padded)), b.mul(ov, i64(lanes)))
        grid = [[load_vector(b, m, b.add(at, i64((4 * i + j) * tw_count * oc_padded)), lanes) for j in range(4)]
                for i in range(4)]
        outputs = _separable(b, grid, _output_rows)
        total = b.load(seen)
        for value in outputs:
            total = b.fadd(total, b.fmul(value, zero))     # NaN if any value is NaN or infinite
        b.store(total, seen)
        corner = b.add(b.add(row0, b.mul(tw, i64(2 * yd[3]))), b.mul(ov, i64(lanes)))
        for a in (0, 1):
            for c in (0, 1):
                exists = _both(b, _row_exists(b, th, a, out_sp[1], p.tiles[0]), _row_exists(b, tw, c, out_sp[2], tw_count))
                _maybe(b, exists, lambda a=a, c=c: store_vector(b, outputs[2 * a + c], yp,
                                                                b.add(corner, i64(a * yd[2] + c * yd[3]))))
    total = b.load(seen)
    lane_sum = b.extract_element(total, i64(0))
    for lane in range(1, lanes):
        lane_sum = b.fadd(lane_sum, b.extract_element(total, i64(lane)))
    return b.fcmp_unordered("uno", lane_sum, lane_sum)


def _aligned(slot):
    """A stack array aligned to a cache line, so its vectors never straddle two."""
    slot.align = 64
    return slot


def _direct_row(k, tiles: RowTiles, offsets: tuple, n, od, h) -> None:
    with counted_loop(k.b, _blocks(tiles.g, tiles.block), name="ob") as ob:
        emit_row_block(k, tiles, offsets, n, od, h, i64(0), ob)


def _row_exists(b: ir.IRBuilder, tile, second: int, size: int, tiles: int):
    """Whether point 2 * tile + second is inside an axis of `size` (None: always)."""
    if not second or size % 2 == 0:
        return None
    return b.icmp_unsigned("<", tile, i64(tiles - 1))


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
