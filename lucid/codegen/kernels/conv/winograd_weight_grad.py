"""The weight gradient by Winograd F(2x2, 3x3): 2.25x fewer multiplications than `weight_grad.py`.

Applies to `conv_weight_grad` nodes of one group, stride and dilation 1, a 3 x 3 kernel across
(h, w) (any depth taps), at least `MIN_CHANNELS` input and output channels, concrete sizes and rows
of at least `MIN_ROW` outputs. With winograd.py's F(2, 3) transforms B^T (input), G (weight) and
A^T (output), a conv's 2 x 2 output tile is y = A^T [(G w G^T) * (B^T d B)] A, so the weight
gradient of a tile, the sum over its outputs of dy x d, is G^T [(A dy A^T) * (B^T d B)] G; summed
over tiles, per depth tap kd:

    V[xi][t][ic] = (B^T d B)[xi]      d the 4 x 4 input patch of tile t at depth qd + kd
    U[xi][t][oc] = (A dy A^T)[xi]     dy the tile's 2 x 2 output gradient at depth qd
    M[kd][xi][ic][oc] = sum over tiles t (every n, qd, th, tw) of V[xi][t][ic] * U[xi][t][oc]
    dw[oc][ic][kd] = G^T M[kd] G      3 x 3 taps from the 4 x 4 positions xi

The input and the gradient are first packed zero-padded channels-last (`emit_pack_channel_blocks`;
a tile past the output reads zero gradients). A work item of `wgrad_wino` is a part of the rows of
tiles (n, qd, th). It takes a block of them at a time and, one row of the ALPHA x ALPHA domain at a
time (ALPHA positions xi), transforms them into stack arrays small enough for L1 (U once, V once per
depth tap) and sums V x U for each xi with `weight_grad.row_function` (a register tile of input
channels x output-channel vectors, summing the block's tiles from zero and adding that to the
part's copy of M, as the direct weight gradient sums positions). `wgrad_wino_unpack` adds
the parts' copies, applies G^T . G and writes dw (`weight_grad.emit_unpack_weight`).

Guarantees:
- the direct weight gradient up to float rounding (the transforms only add, subtract, negate and
  halve; tests/test_conv_accuracy.py holds it to 2x PyTorch fp32's error);
- its non-finite values: an (oc block, ic) whose sums hold a NaN or an infinity is summed again
  exactly from the unpadded operands (`_exact_sums`: the products of the definition, the padding's
  zeros times the gradient included), since the transforms mix a non-finite value into products
  the definition does not have (inf - inf, or inf times a tile's zero padding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import llvmlite.ir as ir

from ....ir import symbolic
from ....ir.graph import Node
from ...irgen import as_i64, counted_loop, element_type, i64, load_vector, store_vector, unravel
from ...lowering import Lowering
from .nonfinite import finite_probe, probed_not_finite
from .packing import Padded, emit_pack_channel_blocks
from .primitives import at_most, in_range
from .problem import Blocking, Geometry, choose_blocking, geometry_of, oc_blocks, to_3d
from .weight_grad import WEIGHT_GRAD_COPIES_BYTES, emit_unpack_weight, row_function, share, sum_of_copies
from .winograd import MIN_CHANNELS, MIN_ROW, TRANSFORMS, separable, separable_row, sum_of

#: Winograd F(2, 3): a tile is 2 x 2 outputs; xi runs over ALPHA x ALPHA transformed positions.
F23 = TRANSFORMS[3]
ALPHA = F23.alpha
POSITIONS = F23.positions

#: A block of rows of tiles holds about this many tiles: each row-function call sums them, so its
#: accumulators' load and store cost little next to its FMAs, and a row of xi's V and U of 32
#: channels each stay in L1 (32 KiB). conv.py's C and D weight gradients (32 and 64 channels, one
#: thread) took 3.8 and 7.3 ms at 32, 4.0 / 7.7 ms at 64 and 4.4 / 7.6 ms at 16.
TILES_PER_BLOCK = 32

#: The sum over tiles is split into this many parts per core of the target (each part sums into its
#: own copy of M, which the unpacking adds: more parts balance the threads better and cost more
#: copies), as long as each part sums at least TILES_PER_PART tiles (a copy costs a zeroing and an
#: addition).
PARTS_PER_CORE = 4
TILES_PER_PART = 64

#: Most bytes of stack a work item's transformed input and gradient (one row of xi) take: wider
#: rows stay direct.
STACK_BYTES = 256 << 10


def _spread(b: ir.IRBuilder, dy: list) -> list:
    """A dy: the transpose of F(2, 3)'s output transform A^T, 2 gradient values -> ALPHA."""
    return [dy[0], b.fadd(dy[0], dy[1]), b.fsub(dy[0], dy[1]), b.fneg(dy[1])]


def _gather(b: ir.IRBuilder, m: list, half) -> list:
    """G^T m: the transpose of F(2, 3)'s weight transform G, ALPHA sums -> 3 taps."""
    middle = b.fmul(b.fadd(m[1], m[2]), half)
    return [b.fadd(m[0], middle), b.fmul(b.fsub(m[1], m[2]), half), b.fadd(middle, m[3])]


@dataclass(frozen=True)
class _Plan:
    """The sizes the kernels share: output `windows` (QD, OH, OW) in `tiles` (TH, TW) of 2 x 2,
    `lines` rows of tiles per block, the register tile `block` and its `rows` input channels per
    call, the packed copies' layouts (channels padded to `ic_padded` / `oc_padded`) and `parts`."""

    g: Geometry
    windows: tuple
    tiles: tuple
    lines: int
    block: Blocking
    rows: int
    x_layout: Padded
    gy_layout: Padded
    parts: int

    @property
    def tile_rows(self) -> int:
        return self.g.n * self.windows[0] * self.tiles[0]

    @property
    def blocks_of_lines(self) -> int:
        return math.ceil(self.tile_rows / self.lines)

    @property
    def block_tiles(self) -> int:
        return self.lines * self.tiles[1]

    def xi_stride(self, layout: Padded) -> int:
        """Elements from one xi's transformed block to the next's: the block's tiles x channels and
        one vector more, so that the ALPHA^2 streams a transform writes (a power of two apart
        otherwise) fall in different cache sets."""
        return self.block_tiles * layout.channels + self.block.lanes

    @property
    def ic_tiles(self) -> int:
        return math.ceil(self.g.icg / self.rows)

    @property
    def m_size(self) -> int:
        """Elements of one part's copy of M[kd][ob][xi][ic][oc lane]."""
        return self.g.kernel[0] * oc_blocks(self.g, self.block) * POSITIONS * self.g.icg * self.block.width


def lower_winograd_weight_grad(lowering: Lowering, node: Node) -> bool:
    """Lower `node` (a conv_weight_grad) when the Winograd weight gradient applies; else False."""
    x, gy = node.inputs
    groups = node.attrs["groups"]
    if groups != 1 or symbolic.is_symbolic(tuple(x.shape) + tuple(gy.shape)):
        return False
    g = geometry_of(x, node.attrs["kernel_size"], node.attrs, 1, x.shape[1], gy.shape[1])
    windows = to_3d(gy.shape[2:], 1)
    if (g.stride, g.dilation, g.kernel[1:]) != ((1, 1, 1), (1, 1, 1), (3, 3)) or min(g.icg, g.ocg) < MIN_CHANNELS \
            or windows[1] < 2 or windows[2] < MIN_ROW:
        return False
    p = _plan(lowering, g, windows, x.dtype)
    if p is None:
        return False
    element = element_type(x.dtype)
    itemsize = x.dtype.numpy.itemsize
    offsets = tuple(lowering.scratch(size * itemsize) for size in
                    (p.x_layout.size(g.n), p.gy_layout.size(g.n), p.parts * p.m_size))
    emit_pack_channel_blocks(lowering, x, p.x_layout, 1, offsets[0], "wgrad_wino_pack_input")
    emit_pack_channel_blocks(lowering, gy, p.gy_layout, 1, offsets[1], "wgrad_wino_pack_gradient", waits=False)
    _emit_sums(lowering, element, p, offsets)
    emit_unpack_weight(lowering, node.output, g, p.block, g.kernel[0] * 9, lambda k, grp, ob, ic, summed:
                       _fill_taps(k, element, p, offsets[2], (x, gy), (ob, ic), summed), "wgrad_wino_unpack")
    return True


def _plan(lowering: Lowering, g: Geometry, windows: tuple, dtype) -> _Plan | None:
    """The plan, or None when one row of tiles' transformed row of xi would take more than STACK_BYTES."""
    tiles = (math.ceil(windows[1] / 2), math.ceil(windows[2] / 2))
    block = choose_blocking(g.ocg, g.icg, lowering, dtype)
    rows = math.ceil(g.icg / math.ceil(g.icg / block.points))
    ic_padded = math.ceil(g.icg / block.lanes) * block.lanes
    oc_padded = oc_blocks(g, block) * block.width
    per_xi = STACK_BYTES // (ALPHA * dtype.numpy.itemsize) - 2 * block.lanes        # see `xi_stride`
    stack_lines = per_xi // (tiles[1] * (ic_padded + oc_padded))
    if stack_lines == 0:
        return None
    tile_rows = g.n * windows[0] * tiles[0]
    lines = max(1, min(math.ceil(TILES_PER_BLOCK / tiles[1]), stack_lines, tile_rows))
    x_layout = Padded((windows[0] + g.kernel[0] - 1, 2 * tiles[0] + 2, 2 * tiles[1] + 2), g.pad_lo, ic_padded)
    gy_layout = Padded((windows[0], 2 * tiles[0], 2 * tiles[1]), (0, 0, 0), oc_padded)
    p = _Plan(g, windows, tiles, lines, block, rows, x_layout, gy_layout, 1)
    copy_bytes = p.m_size * dtype.numpy.itemsize
    parts = min(PARTS_PER_CORE * lowering.target.cores, tile_rows * tiles[1] // TILES_PER_PART,
                WEIGHT_GRAD_COPIES_BYTES // copy_bytes, p.blocks_of_lines)
    return _Plan(g, windows, tiles, lines, block, rows, x_layout, gy_layout, max(1, parts))


def _emit_sums(lowering: Lowering, element, p: _Plan, offsets: tuple) -> None:
    """M (part `part`'s copy) = the sum over the part's blocks of rows of tiles of V x U, per depth
    tap, xi, input-channel tile and output-channel block."""
    g, block = p.g, p.block
    full = row_function(lowering, element, block, p.rows, p.x_layout.channels)
    last = row_function(lowering, element, block, g.icg - (p.ic_tiles - 1) * p.rows, p.x_layout.channels)

    def body(k, part):
        b = k.b
        xp, gp, m_all = (k.scratch_pointer(offset, element) for offset in offsets)
        m = b.gep(m_all, [b.mul(part, i64(p.m_size))])
        with counted_loop(b, p.m_size, name="z") as z:
            b.store(ir.Constant(element, 0.0), b.gep(m, [z]))
        v = k.alloca(element, ALPHA * p.xi_stride(p.x_layout), name="v")
        u = k.alloca(element, ALPHA * p.xi_stride(p.gy_layout), name="u")
        with counted_loop(b, share(b, p.blocks_of_lines, p.parts, b.add(part, i64(1))),
                          share(b, p.blocks_of_lines, p.parts, part), name="lines") as line_block:
            first = b.mul(line_block, i64(p.lines))
            rows = (first, at_most(b, b.sub(i64(p.tile_rows), first), p.lines))
            for xi_row in range(ALPHA):
                _transform(k, p, (gp, p.gy_layout, 2, _spread), u, rows, 0, xi_row)
                with counted_loop(b, g.kernel[0], name="kd") as kd:
                    _transform(k, p, (xp, p.x_layout, ALPHA, F23.input), v, rows, kd, xi_row)
                    _products(k, p, (v, u, m), (kd, xi_row), b.mul(rows[1], i64(p.tiles[1])), (full, last))

    lowering.kernel("wgrad_wino", p.parts, body)


def _products(k, p: _Plan, arrays: tuple, at: tuple, positions, functions: tuple) -> None:
    """M[kd][ob][xi][ic][lane] += sum over the block's `positions` tiles t of V[j][t][ic] * U[j][t][lane]
    for the ALPHA positions xi = xi_row * ALPHA + j of row `xi_row` (`at` = (kd, xi_row)) held in
    V and U, each input-channel tile and output-channel block: a call of the row function (`functions`:
    the full tile's, the last tile's) each."""
    b = k.b
    (v, u, m), (kd, xi_row), (full, last) = arrays, at, functions
    g, block = p.g, p.block
    blocks = oc_blocks(g, block)
    with counted_loop(b, ALPHA, name="j") as j, counted_loop(b, p.ic_tiles, name="it") as it, \
            counted_loop(b, blocks, name="ob") as ob:
        v_at = b.add(b.mul(j, i64(p.xi_stride(p.x_layout))), b.mul(it, i64(p.rows)))
        u_at = b.add(b.mul(j, i64(p.xi_stride(p.gy_layout))), b.mul(ob, i64(block.width)))
        xi = b.add(j, i64(xi_row * ALPHA))
        kd_ob_xi = b.add(b.mul(b.add(b.mul(kd, i64(blocks)), ob), i64(POSITIONS)), xi)
        m_at = b.mul(b.add(b.mul(kd_ob_xi, i64(g.icg)), b.mul(it, i64(p.rows))), i64(block.width))
        arguments = [b.gep(v, [v_at]), b.gep(u, [u_at]), b.gep(m, [m_at]), positions, i64(p.gy_layout.channels),
                     i64(1), i64(0), i64(0)]
        with b.if_else(b.icmp_unsigned("==", it, i64(p.ic_tiles - 1))) as (is_last, is_full):
            with is_last:
                b.call(last, arguments)
            with is_full:
                b.call(full, arguments)


def _transform(k, p: _Plan, source: tuple, out, rows: tuple, depth_tap, xi_row: int) -> None:
    """out[j][t][c] = row `xi_row` of the 2-D transform by `spread` (a 1-D one, applied along h and
    w) of the `size` x `size` patch at tile t of the block's rows of tiles (`rows`: the first and
    their count), at depth qd + `depth_tap`, of the packed copy (pointer, layout), one vector of
    channels at a time. A row reads only the patch rows its coefficients name (LLVM drops the
    other loads)."""
    b = k.b
    packed, layout, size, spread = source
    channels, lanes = layout.channels, p.block.lanes
    sn, sd, sh, sw = layout.strides()
    first, count = rows
    with counted_loop(b, count, name="row") as row, counted_loop(b, p.tiles[1], name="tw") as tw, \
            counted_loop(b, channels // lanes, name="cv") as cv:
        n, qd, th = unravel(b, b.add(first, row), (p.g.n, p.windows[0], p.tiles[0]))
        corner = sum_of(b, b.mul(n, i64(sn)), b.mul(b.add(qd, as_i64(depth_tap)), i64(sd)), b.mul(th, i64(2 * sh)),
                        b.mul(tw, i64(2 * sw)), b.mul(cv, i64(lanes)))
        patch = [[load_vector(b, packed, b.add(corner, i64(i * sh + j * sw)), lanes) for j in range(size)]
                 for i in range(size)]
        tile = b.add(b.mul(row, i64(p.tiles[1])), tw)
        target = b.add(b.mul(tile, i64(channels)), b.mul(cv, i64(lanes)))
        for j, value in enumerate(separable_row(b, patch, spread, xi_row)):
            store_vector(b, value, out, b.add(target, i64(j * p.xi_stride(layout))))


def _fill_taps(k, element, p: _Plan, m_offset: int, operands: tuple, at: tuple, summed) -> None:
    """summed[(kd * 9 + tap) * width + lane] = G^T (the parts' M[kd][ob][.][ic][lane] summed) G, for
    output-channel block `ob` and input channel `ic`; then, if a sum is NaN or infinite, every
    sum of the item again exactly (`_exact_sums`)."""
    b = k.b
    g, block = p.g, p.block
    ob, ic = at
    lanes = block.lanes
    vtype = ir.VectorType(element, lanes)
    half = ir.Constant(vtype, [0.5] * lanes)
    m = k.scratch_pointer(m_offset, element)
    seen = k.alloca(vtype, name="seen")
    b.store(ir.Constant(vtype, [0.0] * lanes), seen)
    with counted_loop(b, g.kernel[0], name="kd") as kd, counted_loop(b, block.vectors, name="vec") as vec:
        kd_ob = b.add(b.mul(kd, i64(oc_blocks(g, block))), ob)
        first = b.add(b.mul(b.add(b.mul(kd_ob, i64(POSITIONS * g.icg)), ic), i64(block.width)), b.mul(vec, i64(lanes)))
        grid = [[sum_of_copies(b, m, b.add(first, i64((i * ALPHA + j) * g.icg * block.width)), lanes, (p.parts, p.m_size)) for j in range(ALPHA)]
                for i in range(ALPHA)]
        taps = separable(b, grid, lambda b_, column: _gather(b_, column, half))
        total = b.load(seen)
        for tap, value in enumerate(taps):
            total = finite_probe(b, total, value)
            store_vector(b, value, summed, b.add(b.mul(b.add(b.mul(kd, i64(9)), i64(tap)), i64(block.width)),
                                                 b.mul(vec, i64(lanes))))
        b.store(total, seen)
    with b.if_then(probed_not_finite(b, b.load(seen)), likely=False):
        _exact_sums(k, element, p, operands, at, summed)


def _exact_sums(k, element, p: _Plan, operands: tuple, at: tuple, summed) -> None:
    """summed[tap * width + lane] = the sum over n and output positions of x at the tap (zero in the
    padding) times gy, for each output channel ob * width + lane of the group and tap (kd, kh, kw):
    the definition, in scalar loops, read from the unpadded operands."""
    b = k.b
    g, block = p.g, p.block
    (x, gy), (ob, ic) = operands, at
    xp, gp = k.pointer(x), k.pointer(gy)
    depth, height, width = g.in_sp
    qd, oh, ow = p.windows
    total = k.alloca(element, name="exact")
    value = k.alloca(element, name="x_value")
    with counted_loop(b, block.width, name="lane") as lane:
        oc = b.add(b.mul(ob, i64(block.width)), lane)
        with b.if_then(b.icmp_unsigned("<", oc, i64(g.ocg))), \
                counted_loop(b, g.kernel[0] * 9, name="tap") as tap:
            kd, kh, kw = unravel(b, tap, (g.kernel[0], 3, 3))
            b.store(ir.Constant(element, 0.0), total)
            with counted_loop(b, g.n * qd * oh * ow, name="q") as q:
                n, d, h, w = unravel(b, q, (g.n, qd, oh, ow))
                xd, xh, xw = (b.sub(b.add(o, t), i64(pad)) for o, t, pad in zip((d, h, w), (kd, kh, kw), g.pad_lo))
                inside = b.and_(b.and_(in_range(b, xd, depth), in_range(b, xh, height)), in_range(b, xw, width))
                b.store(ir.Constant(element, 0.0), value)
                with b.if_then(inside):
                    flat = sum_of(b, b.mul(b.add(b.mul(n, i64(g.icg)), ic), i64(depth * height * width)),
                                  b.mul(xd, i64(height * width)), b.mul(xh, i64(width)), xw)
                    b.store(b.load(b.gep(xp, [flat])), value)
                gy_at = b.add(b.mul(b.add(b.mul(n, i64(g.ocg)), oc), i64(qd * oh * ow)), b.urem(q, i64(qd * oh * ow)))
                product = b.fmul(b.load(value), b.load(b.gep(gp, [gy_at])))
                b.store(b.fadd(b.load(total), product), total)
            b.store(b.load(total), b.gep(summed, [b.add(b.mul(tap, i64(block.width)), lane)]))
