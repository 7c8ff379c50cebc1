"""The weight gradient by Winograd F(2x2, 3x3) and F(2x2, 2x2): 2.25x and 1.78x fewer multiplications
than `weight_grad.py`.

Applies to `conv_weight_grad` nodes of one group and dilation 1 whose kernel across (h, w) is
stride x r taps, r = 3 or 2 (3 x 3 and 2 x 2 of stride 1, 4 x 4 and 6 x 6 of stride 2: a transposed
conv's k4 s2 weight gradient is a conv weight gradient of this kind), any depth taps and depth
stride, at least `MIN_CHANNELS` input and output channels, concrete sizes and rows of at least
`MIN_ROW` outputs. Kernel index s * m + ph along an axis of stride s reads input s * (o + m) + ph
of output o: each stride phase (ph_h, ph_w) is the weight gradient of a stride-1 conv with r x r
taps over the phase's input positions. With winograd.py's F(2, r) transforms B^T (input), G (weight)
and A^T (output), a conv's 2 x 2 output tile is y = A^T [(G w G^T) * (B^T d B)] A, so the weight
gradient of a tile, the sum over its outputs of dy x d, is G^T [(A dy A^T) * (B^T d B)] G; summed
over tiles, per depth tap kd and phase ph:

    V[xi][t][ic] = (B^T d B)[xi]      d the alpha x alpha patch of tile t's phase ph (its input
                                      positions s apart) at depth s_d * qd + kd, alpha = r + 1
    U[xi][t][oc] = (A dy A^T)[xi]     dy the tile's 2 x 2 output gradient at depth qd
    M[kd][ph][xi][ic][oc] = sum over tiles t (every n, qd, th, tw) of V[xi][t][ic] * U[xi][t][oc]
    dw[oc][ic][kd][s m_h + ph_h][s m_w + ph_w] = (G^T M[kd][ph] G)[m_h][m_w]

The input and the gradient are first packed zero-padded channels-last (`emit_pack_channel_blocks`;
a tile past the output reads zero gradients). A work item of `wgrad_wino` is a part of the rows of
tiles (n, qd, th). It takes a block of them at a time and, one row of the alpha x alpha domain at a
time (alpha positions xi), transforms them into stack arrays small enough for L1 (U once, V once per
phase and depth tap) and sums V x U for each xi with `weight_grad.row_function` (a register tile of
input channels x output-channel vectors, summing the block's tiles from zero and adding that to the
part's copy of M, as the direct weight gradient sums positions). `wgrad_wino_unpack` adds the parts'
copies, applies G^T . G and writes dw (`weight_grad.emit_unpack_weight`).

Guarantees:
- the direct weight gradient up to float rounding (the transforms only add, subtract, negate and
  halve; tests/test_conv_accuracy.py holds it to 2x PyTorch fp32's error);
- its non-finite values: an (oc block, ic) whose sums hold a NaN or an infinity is summed again
  exactly from the unpadded operands (`_exact_sums`: the products of the definition, the padding's
  zeros times the gradient included), since the transforms mix a non-finite value into products
  the definition does not have (inf - inf, or inf times a tile's zero padding).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import llvmlite.ir as ir

from ....ir import symbolic
from ....ir.graph import Node, Value
from ...irgen import as_i64, counted_loop, element_type, i64, load_vector, store_vector, unravel
from ...lowering import Lowering
from .nonfinite import finite_probe, probed_not_finite
from .packing import Padded, emit_pack_channel_blocks
from .primitives import at_most, in_range, sum_of, zero_elements
from .problem import Blocking, Geometry, choose_blocking, geometry_of, oc_blocks, to_3d
from .weight_grad import (WEIGHT_GRAD_COPIES_BYTES, WeightGradOperand, emit_unpack_weight, row_function, share,
                          shared_copy, sum_of_copies)
from .winograd import MIN_CHANNELS, MIN_ROW, TRANSFORMS, Transform, separable, separable_row

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

#: A weight gradient whose sums make fewer parts than the target has cores (few tiles, or copies of
#: M too large for `WEIGHT_GRAD_COPIES_BYTES`) stays direct when one copy of M takes more than this:
#: a single part then sums on one core, reading and writing all of M per block of tiles, while the
#: direct kernels split their work by output-channel block too. A transposed k4 s2 conv 256 -> 128
#: on an 8^3 input (one part, M 18.9 MB), fwd+bwd at two threads: 21.1 ms with Winograd, 16.1 ms
#: direct (one thread: 35.5 and 34.5 ms).
SINGLE_PART_BYTES = 1 << 20

#: Most bytes of stack a work item's transformed input and gradient (one row of xi) take: wider
#: rows stay direct.
STACK_BYTES = 256 << 10


@dataclass(frozen=True)
class _Transposed:
    """F(2, r) run backwards for a weight gradient: `spread` is A (2 output-gradient values ->
    alpha), `gather(b, m, half)` is G^T (alpha sums -> r taps); the input keeps B^T
    (`transform.input`)."""

    transform: Transform
    spread: Callable
    gather: Callable


def _spread_3(b: ir.IRBuilder, dy: list) -> list:
    return [dy[0], b.fadd(dy[0], dy[1]), b.fsub(dy[0], dy[1]), b.fneg(dy[1])]


def _gather_3(b: ir.IRBuilder, m: list, half) -> list:
    middle = b.fmul(b.fadd(m[1], m[2]), half)
    return [b.fadd(m[0], middle), b.fmul(b.fsub(m[1], m[2]), half), b.fadd(middle, m[3])]


#: By taps per phase r. F(2, 2)'s A is its G and its G^T its A^T, so its forward transforms serve.
TRANSPOSED = {3: _Transposed(TRANSFORMS[3], _spread_3, _gather_3),
              2: _Transposed(TRANSFORMS[2], lambda b, dy: TRANSFORMS[2].weight(b, dy, None),
                             lambda b, m, half: TRANSFORMS[2].output(b, m))}


@dataclass(frozen=True)
class _Plan:
    """The sizes the kernels share: the transform `f`, output `windows` (QD, OH, OW) in `tiles`
    (TH, TW) of 2 x 2, `lines` rows of tiles per block, the register tile `block` and its `rows`
    input channels per call, how the packed copies are read (`x`, `gy`: their own, channels padded
    to whole vectors, or a copy the node before left) and `parts`."""

    g: Geometry
    f: _Transposed
    windows: tuple
    tiles: tuple
    lines: int
    block: Blocking
    rows: int
    x: WeightGradOperand
    gy: WeightGradOperand
    parts: int

    @property
    def alpha(self) -> int:
        return self.f.transform.alpha

    @property
    def positions(self) -> int:
        return self.f.transform.positions

    @property
    def phases(self) -> tuple:
        """The stride phases along h and w: one per kernel index modulo the stride."""
        return self.g.stride[1:]

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
        one vector more, so that the alpha^2 streams a transform writes (a power of two apart
        otherwise) fall in different cache sets."""
        return self.block_tiles * layout.channels + self.block.lanes

    @property
    def ic_tiles(self) -> int:
        return math.ceil(self.g.icg / self.rows)

    @property
    def m_size(self) -> int:
        """Elements of one part's copy of M[kd][ph][ob][xi][ic][oc lane]."""
        return self.g.kernel[0] * math.prod(self.phases) * oc_blocks(self.g, self.block) * self.positions * \
            self.g.icg * self.block.width


def lower_winograd_weight_grad(lowering: Lowering, node: Node) -> bool:
    """Lower `node` (a conv_weight_grad) when the Winograd weight gradient applies; else False."""
    x, gy = node.inputs
    groups = node.attrs["groups"]
    if groups != 1 or symbolic.is_symbolic(tuple(x.shape) + tuple(gy.shape)):
        return False
    g = geometry_of(x, node.attrs["kernel_size"], node.attrs, 1, x.shape[1], gy.shape[1])
    windows = to_3d(gy.shape[2:], 1)
    taps = _taps_per_phase(g)
    if taps is None or min(g.icg, g.ocg) < MIN_CHANNELS or windows[1] < 2 or windows[2] < MIN_ROW:
        return False
    p = _plan(lowering, g, TRANSPOSED[taps], windows, x.dtype)
    if p is None:
        return False
    x_shared = _shared(lowering, x, p.x.layout)
    gy_shared = None if x_shared else _shared(lowering, gy, p.gy.layout)
    p = dataclasses.replace(p, x=WeightGradOperand.of(p.x.layout, x_shared),
                            gy=WeightGradOperand.of(p.gy.layout, gy_shared))
    element = element_type(x.dtype)
    itemsize = x.dtype.numpy.itemsize
    sizes = {"x": p.x.layout.size(g.n), "gy": p.gy.layout.size(g.n), "m": p.parts * p.m_size}
    order = ("gy", "x", "m") if gy_shared else ("x", "gy", "m")            # a shared copy stays at offset 0
    offsets = {name: lowering.scratch(sizes[name] * itemsize) for name in order}
    if not x_shared:
        emit_pack_channel_blocks(lowering, x, p.x.layout, 1, offsets["x"], "wgrad_wino_pack_input")
    if not gy_shared:
        emit_pack_channel_blocks(lowering, gy, p.gy.layout, 1, offsets["gy"], "wgrad_wino_pack_gradient",
                                 waits=bool(x_shared))
    _emit_sums(lowering, element, p, (offsets["x"], offsets["gy"], offsets["m"]))
    emit_unpack_weight(lowering, node.output, g, p.block, math.prod(g.kernel), lambda k, grp, ob, ic, summed:
                       _fill_taps(k, element, p, offsets["m"], (x, gy), (ob, ic), summed), "wgrad_wino_unpack")
    return True


def _shared(lowering: Lowering, value: Value, needed: Padded) -> Padded | None:
    """The copy of `value` the node before left in the workspace (`weight_grad.shared_copy`: the
    input gradient's conv packs the output gradient, or for a transposed conv the same input) when
    it holds `needed`'s positions and channels (whole vectors: the transforms load them a vector at
    a time)."""
    shared = shared_copy(lowering, value, needed, 1)
    return shared if shared is not None and shared.channels == needed.channels else None


def _taps_per_phase(g: Geometry) -> int | None:
    """r when every stride phase of the kernel across (h, w) is r x r taps, one phase input apart,
    and F(2, r) is one of `TRANSPOSED` (dilation 1, the kernel stride x r along h and w); else None."""
    taps = g.kernel[1] // g.stride[1]
    if g.dilation != (1, 1, 1) or taps not in TRANSPOSED or g.kernel[1:] != (g.stride[1] * taps, g.stride[2] * taps):
        return None
    return taps


def _plan(lowering: Lowering, g: Geometry, f: _Transposed, windows: tuple, dtype) -> _Plan | None:
    """The plan, or None when one row of tiles' transformed row of xi would take more than
    STACK_BYTES, or when too few parts would sum a large M (`SINGLE_PART_BYTES`)."""
    tiles = (math.ceil(windows[1] / 2), math.ceil(windows[2] / 2))
    block = choose_blocking(g.ocg, g.icg, lowering, dtype)
    rows = math.ceil(g.icg / math.ceil(g.icg / block.points))
    ic_padded = math.ceil(g.icg / block.lanes) * block.lanes
    oc_padded = oc_blocks(g, block) * block.width
    per_xi = STACK_BYTES // (f.transform.alpha * dtype.numpy.itemsize) - 2 * block.lanes        # see `xi_stride`
    stack_lines = per_xi // (tiles[1] * (ic_padded + oc_padded))
    if stack_lines == 0:
        return None
    tile_rows = g.n * windows[0] * tiles[0]
    lines = max(1, min(math.ceil(TILES_PER_BLOCK / tiles[1]), stack_lines, tile_rows))
    taps = f.transform.taps
    extent = ((windows[0] - 1) * g.stride[0] + g.kernel[0],
              *(s * (2 * t + taps - 1) for s, t in zip(g.stride[1:], tiles)))
    x = WeightGradOperand.of(Padded(extent, g.pad_lo, ic_padded), None)
    gy = WeightGradOperand.of(Padded((windows[0], 2 * tiles[0], 2 * tiles[1]), (0, 0, 0), oc_padded), None)
    p = _Plan(g, f, windows, tiles, lines, block, rows, x, gy, 1)
    copy_bytes = p.m_size * dtype.numpy.itemsize
    parts = min(PARTS_PER_CORE * lowering.target.cores, tile_rows * tiles[1] // TILES_PER_PART,
                WEIGHT_GRAD_COPIES_BYTES // copy_bytes, p.blocks_of_lines)
    if parts < lowering.target.cores and copy_bytes > SINGLE_PART_BYTES:
        return None
    return dataclasses.replace(p, parts=max(1, parts))


@dataclass(frozen=True)
class _Source:
    """What `_transform` reads: a packed copy and how (`operand`: its layout, and the shift to the
    positions it is read as), `size` x `size` patches whose values are `steps` (h, w) positions
    apart, and the 1-D transform applied along h and w."""

    packed: ir.Value
    operand: WeightGradOperand
    size: int
    steps: tuple
    transform: Callable


def _emit_sums(lowering: Lowering, element, p: _Plan, offsets: tuple) -> None:
    """M (part `part`'s copy) = the sum over the part's blocks of rows of tiles of V x U, per depth
    tap, phase, xi, input-channel tile and output-channel block."""
    g, block = p.g, p.block
    full = row_function(lowering, element, block, p.rows, p.x.layout.channels)
    last = row_function(lowering, element, block, g.icg - (p.ic_tiles - 1) * p.rows, p.x.layout.channels)

    def body(k, part):
        b = k.b
        xp, gp, m_all = (k.scratch_pointer(offset, element) for offset in offsets)
        m = b.gep(m_all, [b.mul(part, i64(p.m_size))])
        zero_elements(b, m, p.m_size)
        v = k.alloca(element, p.alpha * p.xi_stride(p.x.layout), name="v")
        u = k.alloca(element, p.alpha * p.xi_stride(p.gy.layout), name="u")
        gradient = _Source(gp, p.gy, 2, (1, 1), p.f.spread)
        image = _Source(xp, p.x, p.alpha, p.phases, p.f.transform.input)
        with counted_loop(b, share(b, p.blocks_of_lines, p.parts, b.add(part, i64(1))),
                          share(b, p.blocks_of_lines, p.parts, part), name="lines") as line_block:
            first = b.mul(line_block, i64(p.lines))
            rows = (first, at_most(b, b.sub(i64(p.tile_rows), first), p.lines))
            for xi_row in range(p.alpha):
                _transform(k, p, gradient, u, rows, (1, i64(0), (i64(0), i64(0))), xi_row)
                with counted_loop(b, math.prod(p.phases), name="phase") as phase, \
                        counted_loop(b, g.kernel[0], name="kd") as kd:
                    corner = unravel(b, phase, p.phases)
                    _transform(k, p, image, v, rows, (g.stride[0], kd, corner), xi_row)
                    _products(k, p, (v, u, m), (kd, phase, xi_row), b.mul(rows[1], i64(p.tiles[1])), (full, last))

    lowering.kernel("wgrad_wino", p.parts, body)


def _products(k, p: _Plan, arrays: tuple, at: tuple, positions, functions: tuple) -> None:
    """M[kd][ph][ob][xi][ic][lane] += sum over the block's `positions` tiles t of V[j][t][ic] *
    U[j][t][lane] for the alpha positions xi = xi_row * alpha + j of row `xi_row` (`at` = (kd, ph,
    xi_row)) held in V and U, each input-channel tile and output-channel block: a call of the row
    function (`functions`: the full tile's, the last tile's) each."""
    b = k.b
    (v, u, m), (kd, phase, xi_row), (full, last) = arrays, at, functions
    g, block = p.g, p.block
    blocks = oc_blocks(g, block)
    with counted_loop(b, p.alpha, name="j") as j, counted_loop(b, p.ic_tiles, name="it") as it, \
            counted_loop(b, blocks, name="ob") as ob:
        v_at = b.add(b.mul(j, i64(p.xi_stride(p.x.layout))), b.mul(it, i64(p.rows)))
        u_at = b.add(b.mul(j, i64(p.xi_stride(p.gy.layout))), b.mul(ob, i64(block.width)))
        xi = b.add(j, i64(xi_row * p.alpha))
        kd_ph = b.add(b.mul(kd, i64(math.prod(p.phases))), phase)
        kd_ph_ob_xi = b.add(b.mul(b.add(b.mul(kd_ph, i64(blocks)), ob), i64(p.positions)), xi)
        m_at = b.mul(b.add(b.mul(kd_ph_ob_xi, i64(g.icg)), b.mul(it, i64(p.rows))), i64(block.width))
        arguments = [b.gep(v, [v_at]), b.gep(u, [u_at]), b.gep(m, [m_at]), positions, i64(p.gy.layout.channels),
                     i64(1), i64(0), i64(0)]
        with b.if_else(b.icmp_unsigned("==", it, i64(p.ic_tiles - 1))) as (is_last, is_full):
            with is_last:
                b.call(last, arguments)
            with is_full:
                b.call(full, arguments)


def _transform(k, p: _Plan, source: _Source, out, rows: tuple, at: tuple, xi_row: int) -> None:
    """out[j][t][c] = row `xi_row` of the 2-D transform by `source.transform` (a 1-D one, applied
    along h and w) of the patch at tile t of the block's rows of tiles (`rows`: the first and their
    count), at depth `depth_stride` * qd + `depth_tap` and shifted by `corner` (h, w) positions
    (`at` = (depth_stride, depth_tap, corner)), of the packed copy, one vector of channels at a
    time. A row reads only the patch rows its coefficients name (LLVM drops the other loads)."""
    b = k.b
    depth_stride, depth_tap, corner = at
    layout, lanes = source.operand.layout, p.block.lanes
    sn, sd, sh, sw = layout.strides()
    step_h, step_w = source.steps[0] * sh, source.steps[1] * sw
    first, count = rows
    with counted_loop(b, count, name="row") as row, counted_loop(b, p.tiles[1], name="tw") as tw, \
            counted_loop(b, layout.channels // lanes, name="cv") as cv:
        n, qd, th = unravel(b, b.add(first, row), (p.g.n, p.windows[0], p.tiles[0]))
        depth = b.add(b.mul(qd, i64(depth_stride)), as_i64(depth_tap))
        start = sum_of(b, i64(source.operand.shift), b.mul(n, i64(sn)), b.mul(depth, i64(sd)),
                       b.mul(th, i64(2 * step_h)), b.mul(tw, i64(2 * step_w)), b.mul(corner[0], i64(sh)),
                       b.mul(corner[1], i64(sw)), b.mul(cv, i64(lanes)))
        patch = [[load_vector(b, source.packed, b.add(start, i64(i * step_h + j * step_w)), lanes)
                  for j in range(source.size)] for i in range(source.size)]
        tile = b.add(b.mul(row, i64(p.tiles[1])), tw)
        target = b.add(b.mul(tile, i64(layout.channels)), b.mul(cv, i64(lanes)))
        for j, value in enumerate(separable_row(b, patch, source.transform, xi_row)):
            store_vector(b, value, out, b.add(target, i64(j * p.xi_stride(layout))))


def _fill_taps(k, element, p: _Plan, m_offset: int, operands: tuple, at: tuple, summed) -> None:
    """summed[tap * width + lane] = G^T (the parts' M[kd][ph][ob][.][ic][lane] summed) G at the
    taps of phase ph, for output-channel block `ob` and input channel `ic`; then, if a sum is NaN or
    infinite, every sum of the item again exactly (`_exact_sums`)."""
    b = k.b
    g, block = p.g, p.block
    ob, ic = at
    lanes = block.lanes
    vtype = ir.VectorType(element, lanes)
    half = ir.Constant(vtype, [0.5] * lanes)
    m = k.scratch_pointer(m_offset, element)
    seen = k.alloca(vtype, name="seen")
    b.store(ir.Constant(vtype, [0.0] * lanes), seen)
    taps = p.f.transform.taps
    with counted_loop(b, g.kernel[0], name="kd") as kd, counted_loop(b, math.prod(p.phases), name="phase") as phase, \
            counted_loop(b, block.vectors, name="vec") as vec:
        kd_ph_ob = b.add(b.mul(b.add(b.mul(kd, i64(math.prod(p.phases))), phase), i64(oc_blocks(g, block))), ob)
        first = b.add(b.mul(b.add(b.mul(kd_ph_ob, i64(p.positions * g.icg)), ic), i64(block.width)),
                      b.mul(vec, i64(lanes)))
        grid = [[sum_of_copies(b, m, b.add(first, i64((i * p.alpha + j) * g.icg * block.width)), lanes,
                               (p.parts, p.m_size)) for j in range(p.alpha)] for i in range(p.alpha)]
        phase_h, phase_w = unravel(b, phase, p.phases)
        total = b.load(seen)
        for index, value in enumerate(separable(b, grid, lambda b_, column: p.f.gather(b_, column, half))):
            total = finite_probe(b, total, value)
            kh = b.add(phase_h, i64(g.stride[1] * (index // taps)))
            kw = b.add(phase_w, i64(g.stride[2] * (index % taps)))
            tap = b.add(b.mul(b.add(b.mul(kd, i64(g.kernel[1])), kh), i64(g.kernel[2])), kw)
            store_vector(b, value, summed, b.add(b.mul(tap, i64(block.width)), b.mul(vec, i64(lanes))))
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
                counted_loop(b, math.prod(g.kernel), name="tap") as tap:
            kernel_at = unravel(b, tap, g.kernel)
            b.store(ir.Constant(element, 0.0), total)
            with counted_loop(b, g.n * qd * oh * ow, name="q") as q:
                n, d, h, w = unravel(b, q, (g.n, qd, oh, ow))
                xd, xh, xw = (b.sub(b.add(b.mul(o, i64(s)), t), i64(pad))
                              for o, s, t, pad in zip((d, h, w), g.stride, kernel_at, g.pad_lo))
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
