"""The direct algorithm: a conv, or each stride phase of a transposed conv, as rows of register tiles.

A conv runs in four steps, each a kernel, with scratch in the node's workspace:
1. pack the input into a zero-padded channels-last copy `xp[n][d][h][w][c]`, so the inner loops
   never test bounds;
2. pack the weight into `wp[g][oc block][tap][ic][oc lane]`, output channels padded with zeros to
   whole vector blocks, kept between calls and packed again only when the weights changed (a check
   kernel before the input packing compares them with a kept copy, prepared.py);
3. the direct convolution (`emit_direct`): for one row of output points and one block of output
   channels, a register tile of `points` output points x `vectors` vectors of output channels
   accumulates, over every tap and input channel, a broadcast input value times a weight vector
   (FMA). The result goes to a channels-last scratch `yp[n][d][h][w][oc]`;
4. unpack `yp` to the NCDHW output, adding the bias (in the direct kernel when there are enough rows).

A transposed convolution never multiplies inserted zeros: its output splits into stride phases
(positions o = q * stride + r); phase r reads input q + c for each tap whose offset c is whole, so
each phase is a stride-1 direct convolution with its own taps (`Phase`, `phase_direct_spec`),
written to every stride-th output. Its weights not all finite, it unpacks exact sums (nonfinite.py).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

from ....ir import symbolic
from ...irgen import counted_loop, element_type, unravel
from ...lowering import Lowering
from .nonfinite import exact_sum
from .packing import Padded, emit_pack_input, emit_pack_weight
from .prepared import emit_weight_check
from .primitives import Kept, aligned_stack_array, emit_zero, sized, strided_offset
from .problem import Blocking, ConvProblem, Geometry, at_least_all, choose_blocking, kernel_taps, oc_blocks, to_3d
from .tile import Direct, emit_row_block, row_tiles
from .unpack import Unpack, channels_last_size, channels_last_source, channels_last_strides, emit_unpack, unpack_row


#: A conv with at least this many output rows unpacks each row in its direct kernel (fewer rows would
#: leave too few work items to share between threads).
ROWS_TO_UNPACK_IN_PLACE = 16

#: Packed weights of one group up to this many bytes stay in a core's L2 cache from one row of a
#: direct kernel to the next (1-2 MiB on the AVX-512 Xeons and Zen 4 and 5; older cores' 256-512 KiB
#: read weights of this size from L3, rows outer as in either order); larger ones are read once per
#: channel block instead (`weights_outer`).
WEIGHTS_IN_CACHE = 1 << 20


#: A direct kernel unpacking each output row as soon as it is computed sums the row (every channel
#: block) into a stack array of at most this many bytes, which stays in L1 and L2, instead of into a
#: channels-last scratch of the whole output, which its rows would leave for memory (conv.py's F: 103
#: MB more workspace, written back and read for ownership; a stack row made R2Plus1dNet's stride-2
#: 16 -> 57 kernel 11% faster, F's 2%).
ROW_BUFFER_BYTES = 128 << 10


def row_buffer_elements(points, y_strides: tuple, itemsize: int) -> int:
    """Elements of the stack array of one output row of `points` points at the channels-last
    scratch's point stride (`y_strides[3]`: every group's padded channels), or 0 when the row's
    length is symbolic or the row outgrows ROW_BUFFER_BYTES (the kernel then sums into the scratch)."""
    if symbolic.is_symbolic(points) or points * y_strides[3] * itemsize > ROW_BUFFER_BYTES:
        return 0
    return points * y_strides[3]


def emit_direct(lowering: Lowering, dtype, g: Geometry, block: Blocking, spec: Direct,
                offsets: tuple, name: str, unpack: Unpack | None = None, waits: bool = True,
                blocks_outer: bool = False, row_buffer: int = 0) -> None:
    """The direct convolution of `spec`. Work items are rows × (group, oc block), the rows outer, or
    with `blocks_outer` (group, oc block) × rows, so that the items one after the other read one
    block's weights (`weights_outer`); with `unpack` (when the rows are the output's rows, as in a
    conv) an item is a whole row, all its channel blocks, which it then unpacks while the row is
    still in L1: with `row_buffer` (its `row_buffer_elements`) the row is summed into a stack array
    of that many elements instead of the scratch at `offsets[2]`."""
    assert not (unpack and blocks_outer) and (unpack or not row_buffer)
    element = element_type(dtype)
    in_row = dataclasses.replace(spec, y0=0, sy=(0, 0, 0)) if row_buffer else spec
    tiles = row_tiles(lowering, element, g, block, in_row)
    blocks = oc_blocks(g, block)
    depth = to_3d(unpack.y.shape[2:], 1)[0] if unpack else None

    def body(k, item):
        rows = sized(k, spec.rows)
        if blocks_outer:
            grp, ob, *row = unravel(k.b, item, (g.groups, blocks) + rows)
            emit_row_block(k, tiles, offsets, *row, grp, ob)
            return
        if unpack is None:
            emit_row_block(k, tiles, offsets, *unravel(k.b, item, rows + (g.groups, blocks)))
            return
        n, qd, qh = unravel(k.b, item, rows)
        buffer = aligned_stack_array(k, element, row_buffer, "row") if row_buffer else None
        with counted_loop(k.b, g.groups * blocks, name="gob") as gob:
            emit_row_block(k, tiles, offsets if buffer is None else offsets[:2] + (buffer,), n, qd, qh,
                           *unravel(k.b, gob, (g.groups, blocks)))
        whole = (spec.first_depth, spec.rows[1]) == (0, depth)          # the rows are all the output's
        row = item if whole else strided_offset(k.b, spec.first_depth * spec.rows[2], (n, qd, qh),
                                                (depth * spec.rows[2], spec.rows[2], 1))
        unpack_row(k, unpack, row, buffer)

    rows = math.prod(spec.rows)
    lowering.kernel(name, rows if unpack else rows * g.groups * blocks, body, waits)


def lower_direct(lowering: Lowering, problem: ConvProblem) -> bool:
    """The direct algorithm, which takes every convolution: a conv as one direct kernel, a transposed
    conv as one per stride phase."""
    if problem.transposed:
        _lower_phases(lowering, problem)
    else:
        _lower_direct_conv(lowering, problem)
    return True


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
                             for a, b_, c in kernel_taps(g.kernel)),
                  y0=0, sy=y_strides[:3], sy_point=y_strides[3], w0=0, w_taps=math.prod(g.kernel))


def _lower_direct_conv(lowering: Lowering, problem: ConvProblem) -> None:
    """A conv in five kernels: check the weights, pack the input (unless the kernels can read it
    where it is, `depth_classes`), pack the weight (if they changed), the direct kernel (one per
    class of depths when it reads the input itself), unpack (in the direct kernels when the output
    has enough rows)."""
    x, y, g = problem.x, problem.y, problem.g
    out_sp = to_3d(y.shape[2:], 1)
    block = choose_blocking(g.ocg, out_sp[2], lowering, x.dtype)
    itemsize = x.dtype.numpy.itemsize
    check = emit_weight_check(lowering, problem.w)
    classes = depth_classes(g, out_sp) if problem.prologue is None else []     # a prologue's x is packed
    y_strides = channels_last_strides(y, g, block)
    if classes:
        specs, source = [planar_direct_spec(g, out_sp, block, y_strides, c) for c in classes], x
    else:
        layout = conv_input_layout(g, out_sp, x.shape[1])
        specs, source = [conv_direct_spec(g, out_sp, layout, y_strides)], lowering.scratch(layout.size(g.n) * itemsize)
    w_offset = Kept.reserve(lowering, g.groups * oc_blocks(g, block) * math.prod(g.kernel) * g.icg * block.width * itemsize)
    rows = g.n * out_sp[0] * out_sp[1]
    outer = weights_outer(g, block, math.prod(g.kernel), rows,
                          (math.prod(x.shape) if classes else layout.size(g.n)) * itemsize, itemsize)
    in_place = _enough_rows(rows) and not outer
    row_buffer = row_buffer_elements(out_sp[2], y_strides, itemsize) if in_place else 0
    y_offset = None if row_buffer else lowering.scratch(channels_last_size(y, g, block) * itemsize)
    if not classes:
        emit_pack_input(lowering, x, layout, source, "conv_pack_input", problem.prologue)
        lowering.leave_in_workspace(x, layout)
    emit_pack_weight(lowering, problem.w, g, block, problem.weights, w_offset, "conv_pack_weight", check=check,
                     waits=bool(classes))                          # no input packing after the check
    unpack = Unpack(y, problem.bias, y_offset, channels_last_source(y, g, block), problem.epilogue,
                    statistics=problem.statistics)
    for position, spec in enumerate(specs):              # the classes of depths write disjoint rows
        emit_direct(lowering, x.dtype, g, block, spec, (source, w_offset, y_offset), "conv_direct",
                    unpack if in_place else None, waits=position == 0, blocks_outer=outer, row_buffer=row_buffer)
    if not in_place:
        emit_unpack(lowering, unpack, "conv_unpack")


@dataclass(frozen=True)
class DepthClass:
    """Output depths first, ..., first + count - 1 of a conv reading the input where it is, whose
    kernel taps along d in [lo, hi) fall inside the input (the others read only zero padding)."""

    first: int
    count: int
    lo: int
    hi: int


def depth_classes(g: Geometry, out_sp: tuple) -> list:
    """A conv whose kernel is one tap across (h, w) and whose output points all lie inside the input
    there (no padding: a (2+1)-D net's 3 x 1 x 1 temporal conv, a 1 x 1 x 1 conv) can read its input
    where it is (NCDHW) instead of a padded channels-last copy: the depth padding is handled by
    giving each run of output depths with the same taps inside the input a kernel of its own. The
    classes, in order; [] when the conv is not such a conv (or some depth has no tap inside), or
    when its spatial sizes are symbolic (those keep the padded copy; a symbolic batch does not)."""
    if symbolic.is_symbolic(tuple(out_sp) + tuple(g.in_sp)):
        return []
    inside = all((count - 1) * stride < size and lo == 0
                 for count, stride, size, lo in zip(out_sp[1:], g.stride[1:], g.in_sp[1:], g.pad_lo[1:]))
    if g.kernel[1:] != (1, 1) or not inside:
        return []
    classes = []
    for q in range(out_sp[0]):
        taps = [a for a in range(g.kernel[0]) if 0 <= q * g.stride[0] - g.pad_lo[0] + a * g.dilation[0] < g.in_sp[0]]
        if not taps:
            return []
        if classes and (classes[-1].lo, classes[-1].hi) == (taps[0], taps[-1] + 1):
            classes[-1] = DepthClass(classes[-1].first, classes[-1].count + 1, taps[0], taps[-1] + 1)
        else:
            classes.append(DepthClass(q, 1, taps[0], taps[-1] + 1))
    return classes


def planar_direct_spec(g: Geometry, out_sp: tuple, block: Blocking, y_strides: tuple, c: DepthClass) -> Direct:
    """The direct conv of the output depths of `c`, reading the NCDHW input itself (a channel's
    plane apart per input channel) and writing the channels-last scratch of strides `y_strides`;
    its weights are the packed blocks' taps from `c.lo` on."""
    depth, height, width = g.in_sp
    plane = depth * height * width
    first_input = c.first * g.stride[0] - g.pad_lo[0] + c.lo * g.dilation[0]
    return Direct(rows=(g.n, c.count, out_sp[1]), points=out_sp[2], x0=first_input * height * width,
                  sx=(g.groups * g.icg * plane, g.stride[0] * height * width, g.stride[1] * width),
                  sx_point=g.stride[2], taps=tuple((a - c.lo) * g.dilation[0] * height * width for a in range(c.lo, c.hi)),
                  y0=c.first * y_strides[1], sy=y_strides[:3], sy_point=y_strides[3],
                  w0=c.lo * g.icg * block.width, w_taps=g.kernel[0],
                  sx_channel=plane, first_depth=c.first)


def _lower_phases(lowering: Lowering, problem: ConvProblem) -> None:
    """A transposed conv as a direct conv per stride phase."""
    x, w, bias, y, g = problem.x, problem.w, problem.bias, problem.y, problem.g
    phases = transpose_phases(g, to_3d(y.shape[2:], 1))
    block = choose_blocking(g.ocg, at_least_all([p.counts[2] for p in phases]), lowering, x.dtype)
    layout = transpose_input_layout(g, phases, x.shape[1])
    itemsize = x.dtype.numpy.itemsize
    check = emit_weight_check(lowering, w)
    x_offset = lowering.scratch(layout.size(g.n) * itemsize)
    all_taps = [tap for phase in phases for tap in phase.kernel_taps]      # every tap once, phase by phase
    w_offset = Kept.reserve(lowering, max(g.groups * oc_blocks(g, block) * len(all_taps) * g.icg * block.width, 1) * itemsize)
    yd = channels_last_strides(y, g, block)
    # with stride 1 the only phase's rows are the output rows: unpack each as soon as it is computed
    in_place = len(phases) == 1 and bool(phases[0].taps) and _enough_rows(math.prod(phases[0].counts[:2]) * g.n)
    row_buffer = row_buffer_elements(phases[0].counts[2], yd, itemsize) if in_place else 0
    y_offset = None if row_buffer else lowering.scratch(channels_last_size(y, g, block) * itemsize)
    emit_pack_input(lowering, x, layout, x_offset, "convT_pack_input", problem.prologue)
    lowering.leave_in_workspace(x, layout)
    if any(not p.taps for p in phases):
        emit_zero(lowering, y_offset, channels_last_size(y, g, block), x.dtype, "convT_zero")
    flags = emit_pack_weight(lowering, w, g, block, problem.weights_of(all_taps), w_offset, "convT_pack_weight",
                             note_finite=True, check=check)
    starts = itertools.accumulate((len(p.taps) * g.icg * block.width for p in phases), initial=0)
    active = [(phase, w0) for phase, w0 in zip(phases, starts) if phase.taps]
    unpack = Unpack(y, bias, y_offset, channels_last_source(y, g, block), problem.epilogue, exact_sum(problem, flags),
                    problem.statistics)
    for position, (phase, w0) in enumerate(active):          # the phases write disjoint outputs
        spec = phase_direct_spec(g, phase, layout, yd, w0, len(all_taps))
        emit_direct(lowering, x.dtype, g, block, spec, (x_offset, w_offset, y_offset), "convT_direct",
                    unpack if in_place else None, waits=position == 0, row_buffer=row_buffer)
    if not in_place:
        emit_unpack(lowering, unpack, "convT_unpack")


def weights_outer(g: Geometry, block: Blocking, taps: int, rows, input_bytes, itemsize: int) -> bool:
    """Whether a direct kernel's items take the channel blocks outermost: when one group's packed
    weights outgrow WEIGHTS_IN_CACHE, rows outer read them all from memory again for every row (the
    256-channel 3 x 3 x 3 convs at the bottom of a 3-D UNet: 7 MB per row), while blocks outer read
    each block's weights once and the (padded) input again per block, which costs less when the
    input stays in cache too or is smaller than the weights times the rows over the blocks."""
    blocks = oc_blocks(g, block)
    weight_bytes = blocks * taps * g.icg * block.width * itemsize
    if symbolic.is_symbolic((rows, input_bytes)) or weight_bytes <= WEIGHTS_IN_CACHE:
        return False
    return input_bytes <= WEIGHTS_IN_CACHE or blocks * input_bytes < rows * weight_bytes


def _enough_rows(rows) -> bool:
    """Whether a kernel over `rows` output rows unpacks each in place (a symbolic count: yes, the
    sizes a graph is compiled for every size of are rarely that small)."""
    return symbolic.is_symbolic(rows) or rows >= ROWS_TO_UNPACK_IN_PLACE


def transpose_phases(g: Geometry, out_sp: tuple) -> list:
    """The stride phases of a transposed conv that have outputs (with symbolic sizes, every phase: one
    without outputs at some size then has no work items)."""
    phases = [_phase(g, out_sp, r) for r in itertools.product(*(range(s) for s in g.stride))]
    return [p for p in phases if symbolic.is_symbolic(p.counts) or min(p.counts) > 0]


def phase_direct_spec(g: Geometry, phase: Phase, layout: Padded, y_strides: tuple, w0: int, w_taps: int) -> Direct:
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
    counts = tuple(_positions(n, r_a, s) for n, r_a, s in zip(out_sp, r, g.stride))
    combos = list(itertools.product(*per_axis))
    return Phase(r, counts, tuple(tuple(kk for kk, _ in c) for c in combos), tuple(tuple(cc for _, cc in c) for c in combos))


def _positions(n, r: int, s: int):
    """How many of the positions 0..n-1 are r modulo s (an output size n >= 1 when symbolic)."""
    return symbolic.ceil_div(n - r, s) if symbolic.is_symbolic(n) else max(0, -(-(n - r) // s))


def transpose_input_layout(g: Geometry, phases: list, channels: int, planar: bool = False) -> Padded:
    """Padding so that input q + c is inside the padded copy for every phase, tap and q."""
    low, high = [0, 0, 0], [[0], [0], [0]]
    for p in phases:
        for shift in p.taps:
            for axis in range(3):
                low[axis] = max(low[axis], -shift[axis])
                high[axis].append(p.counts[axis] - 1 + shift[axis] + 1)
    extent = tuple(at_least_all([n] + h) + lo for n, h, lo in zip(g.in_sp, high, low))
    return Padded(extent, tuple(low), channels, planar)
