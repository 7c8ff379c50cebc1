"""Convs and transposed convs with few output channels, vectorised over output points.

With fewer output channels than half a vector (the input gradient of a stem conv with 3 input
channels; a segmentation network's last 3 x 3 x 3 convs into 2 classes), vectors of output channels
would be mostly padding. Instead each stride phase of a transposed conv, or a conv of stride 1 as
one phase, is a stride-1 direct conv over a planar padded input, whose register tile (the same
`tile_function`) broadcasts a weight and multiplies a vector of consecutive output points; the
phases write a phase-major scratch that the unpacking interleaves into the output. A conv of one
tap across (h, w) is left to planes.py, one of another stride to the direct kernels.

Rows of a symbolic length (a graph compiled for every size) take tiles of the most vectors the
registers hold and, per call, one last tile of the vectors left (`emit_tiles_of_row`); every
size, stride and tap offset is this call's value."""
from __future__ import annotations

import itertools
import math

import llvmlite.ir as ir

from ....ir import symbolic
from ...irgen import as_i64, counted_loop, element_type, i64, unravel
from ...lowering import Lowering
from .direct import Phase, transpose_input_layout, transpose_phases
from .nonfinite import exact_sum
from .packing import Padded, emit_pack_input, emit_pack_weight
from .primitives import constant_table, emit_zero, size_table, sized, strided_offset, table_array
from .problem import Blocking, ConvProblem, Geometry, at_least_all, kernel_taps, to_3d
from .tile import call_by_size, term_blocks, tile_function
from .unpack import PhaseMajorScratch, Unpack, emit_unpack


def choose_point_blocking(ocg: int, points: int, lowering: Lowering, dtype) -> Blocking | None:
    """The tile of a transposed conv vectorised over output points along w: rows are its `ocg`
    output channels, vectors hold consecutive points of a phase row. None when vectorising over
    output channels suits the layer better: at least half a vector of output channels, or phase
    rows shorter than a vector (the input gradient of a stem conv with 3 input channels is the case
    this is for). Rows of a symbolic length: tiles of the most vectors (`emit_tiles_of_row`)."""
    lanes = lowering.target.lanes(dtype)
    registers = lowering.target.model.vector_registers
    most = (registers - 1) // (ocg + 1)         # ocg x vectors accumulators, the vectors, one broadcast
    if 2 * ocg > lanes or most < 1:
        return None
    if symbolic.is_symbolic(points):
        return Blocking(lanes, most, ocg)
    if points < lanes:
        return None
    needed = math.ceil(points / lanes)
    tiles = math.ceil(needed / most)
    return Blocking(lanes, math.ceil(needed / tiles), ocg)


def lower_over_points(lowering: Lowering, problem: ConvProblem) -> bool:
    """Lower a transposed conv, or a conv of stride 1 and more than one tap across (h, w),
    vectorised over output points if `choose_point_blocking` suits it; False, emitting nothing,
    when it does not."""
    out_sp = to_3d(problem.y.shape[2:], 1)
    if problem.transposed:
        phases = transpose_phases(problem.g, out_sp)
    elif problem.g.stride == (1, 1, 1) and problem.g.kernel[1:] != (1, 1):
        phases = [_conv_phase(problem.g, out_sp)]
    else:
        return False
    block = choose_point_blocking(problem.g.ocg, at_least_all(p.counts[2] for p in phases), lowering, problem.x.dtype)
    if block is None:
        return False
    _lower_over_points(lowering, problem, phases, block)
    return True


def _conv_phase(g: Geometry, out_sp: tuple) -> Phase:
    """A conv of stride 1 as the one phase the lowering below takes: output q reads input q + c for
    each kernel offset, c = offset x dilation - padding along each axis."""
    taps = kernel_taps(g.kernel)
    shifts = tuple(tuple(t * d - lo for t, d, lo in zip(tap, g.dilation, g.pad_lo)) for tap in taps)
    return Phase((0, 0, 0), tuple(out_sp), tuple(taps), shifts)


def _lower_over_points(lowering: Lowering, problem: ConvProblem, phases: list, block: Blocking) -> None:
    """Each stride phase is a stride-1 direct conv over a planar padded input `xc[n][c][d][h][w]`,
    whose register tile broadcasts weights and multiplies input vectors of consecutive points. Phase
    r's rows go to a phase-major scratch `yq[r][n][oc][qd][qh][qw]` (rows padded to whole tiles),
    which the unpacking interleaves into the output."""
    x, w, y, g = problem.x, problem.w, problem.y, problem.g
    itemsize = x.dtype.numpy.itemsize
    row = _padded_row(at_least_all(p.counts[2] for p in phases), block)
    layout = transpose_input_layout(g, [Phase(p.r, p.counts[:2] + (row,), p.kernel_taps, p.taps) for p in phases],
                                     x.shape[1], planar=True)
    counts = tuple(_phase_positions(n, s) for n, s in zip(to_3d(y.shape[2:], 1), g.stride))
    yq = _phase_major_strides(y.shape[:2], counts[:2] + (row,), math.prod(g.stride))
    all_taps = [tap for phase in phases for tap in phase.kernel_taps]
    x_offset = lowering.scratch(layout.size(g.n) * itemsize)
    w_offset = lowering.scratch(max(g.groups * len(all_taps) * g.icg * g.ocg, 1) * itemsize)
    y_offset = lowering.scratch(yq[0] * math.prod(g.stride) * itemsize)
    kind = "convT" if problem.transposed else "conv"                     # the kernels' labels
    emit_pack_input(lowering, x, layout, x_offset, f"{kind}_pack_planar", problem.prologue)
    if any(not p.taps for p in phases):
        emit_zero(lowering, y_offset, yq[0] * math.prod(g.stride), x.dtype, f"{kind}_zero")
    weight_blocks = Blocking(lanes=g.ocg, vectors=1, points=1)          # wp[g][0][t][ic][oc]
    flags = emit_pack_weight(lowering, w, g, weight_blocks, problem.weights_of(all_taps), w_offset, f"{kind}_pack_weight",
                             note_finite=problem.transposed)
    starts = itertools.accumulate((len(p.taps) for p in phases), initial=0)
    active = [(phase, start) for phase, start in zip(phases, starts) if phase.taps]
    for position, (phase, start) in enumerate(active):
        _emit_direct_over_points(lowering, x.dtype, g, block, phase, layout, (start, len(all_taps)), yq,
                                 (x_offset, w_offset, y_offset), waits=position == 0, name=f"{kind}_direct_points")
    unpack = Unpack(y, problem.bias, y_offset, PhaseMajorScratch(g.stride, yq), problem.epilogue,
                    exact_sum(problem, flags), problem.statistics)
    emit_unpack(lowering, unpack, f"{kind}_unpack")


def _padded_row(points, block: Blocking):
    """The scratch's row length for phase rows of at most `points` points: whole tiles, or with a
    symbolic length (tiles of whole vectors, `emit_tiles_of_row`) whole vectors."""
    if symbolic.is_symbolic(points):
        return symbolic.ceil_div(points, block.lanes) * block.lanes
    return math.ceil(points / block.width) * block.width


def _phase_positions(n, stride: int):
    """Positions per phase along an output axis of `n` (>= 1) points: the most any phase has."""
    return symbolic.ceil_div(n, stride) if symbolic.is_symbolic(n) else max(-(-n // stride), 1)


def _phase_major_strides(nc: tuple, counts: tuple, phases: int) -> tuple:
    """Element strides of yq[phase][n][oc][qd][qh][qw] (qw padded): (phase, n, oc, qd, qh)."""
    n, channels = nc
    qd, qh, qw = counts
    return (n * channels * qd * qh * qw, channels * qd * qh * qw, qd * qh * qw, qh * qw, qw)


def _emit_direct_over_points(lowering: Lowering, dtype, g: Geometry, block: Blocking, phase: Phase, layout: Padded,
                             taps: tuple, yq: tuple, offsets: tuple, waits: bool, name: str) -> None:
    """One phase: work items (n, qd, qh, group), each a row of whole tiles of block.width points."""
    element = element_type(dtype)
    x_offset, w_offset, y_offset = offsets
    first_tap, tap_total = taps
    sn, sd, sh, sw = layout.strides()
    weights_per_tap = g.icg * g.ocg
    weight_taps = constant_table(lowering, "staps", [(first_tap + t) * weights_per_tap for t in range(len(phase.taps))])
    input_taps = size_table(lowering, "vtaps", [a * sd + b_ * sh + c * sw for a, b_, c in phase.taps])
    tile = tile_function(lowering, element, block, g.ocg, 1)
    fewer = {vectors: tile_function(lowering, element, Blocking(block.lanes, vectors, g.ocg), g.ocg, 1)
             for vectors in range(1, block.vectors)} if symbolic.is_symbolic(yq[4]) else None
    phase_index = (phase.r[0] * g.stride[1] + phase.r[1]) * g.stride[2] + phase.r[2]
    sizes = ((g.n,) + phase.counts[:2], _dot_constant(layout.origin, (sd, sh, sw)), (sn, sd, sh, g.icg * layout.channel_stride),
             phase_index * yq[0], (yq[1], g.ocg * yq[2], yq[3], yq[4]), layout.channel_stride, yq[2], phase.counts[2])

    def body(k, item):
        b = k.b
        rows, x0, x_strides, y0, y_strides, channel_stride, channel_step, points = sized(k, sizes)
        n, qd, qh, grp = unravel(b, item, rows + (g.groups,))
        xc, wp, yp = (k.scratch_pointer(o, element) for o in (x_offset, w_offset, y_offset))
        x_row = strided_offset(b, x0, (n, qd, qh, grp), x_strides)
        y_row = strided_offset(b, y0, (n, grp, qd, qh), y_strides)
        w_row = b.gep(wp, [b.mul(grp, i64(tap_total * weights_per_tap))])
        tables = [b.gep(t, [i64(0), i64(0)]) for t in (weight_taps, table_array(k, input_taps))]
        steps = [i64(len(phase.taps)), i64(g.icg), i64(g.ocg), as_i64(channel_stride), as_i64(channel_step),
                 *term_blocks(len(phase.taps), g.icg)]

        def call(function, first):
            b.call(function, [w_row, b.gep(xc, [b.add(x_row, first)]), b.gep(yp, [b.add(y_row, first)])] + tables + steps)

        if fewer is None:
            with counted_loop(b, yq[4] // block.width, name="tile") as t:
                call(tile, b.mul(t, i64(block.width)))
        else:
            emit_tiles_of_row(b, block, points, call, tile, fewer)

    lowering.kernel(name, math.prod(sizes[0]) * g.groups, body, waits)


def emit_tiles_of_row(b: ir.IRBuilder, block: Blocking, points, call, tile: ir.Function, fewer: dict) -> None:
    """A phase row of `points` points (known at run time) in whole vectors: tiles of
    `block.vectors` vectors, then one of the vectors left, `fewer[vectors]`; the last vector's
    points past the row go to the scratch row's padding (`_padded_row`)."""
    vectors = b.udiv(b.add(as_i64(points), i64(block.lanes - 1)), i64(block.lanes))
    full = b.udiv(vectors, i64(block.vectors))
    with counted_loop(b, full, name="tile") as t:
        call(tile, b.mul(t, i64(block.width)))
    call_by_size(b, fewer, b.urem(vectors, i64(block.vectors)), b.mul(full, i64(block.width)), call)


def _dot_constant(indices: tuple, strides: tuple) -> int:
    return sum(i * s for i, s in zip(indices, strides))
