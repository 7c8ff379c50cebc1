"""Transposed convs with few output channels, vectorised over output points.

With fewer output channels than half a vector (the input gradient of a stem conv with 3 input
channels is the case), vectors of output channels would be mostly padding. Instead each stride
phase is a stride-1 direct conv over a planar padded input, whose register tile (the same
`tile_function`) broadcasts a weight and multiplies a vector of consecutive output points; the
phases write a phase-major scratch that the unpacking interleaves into the output."""
from __future__ import annotations

import itertools
import math

from ...irgen import counted_loop, element_type, i64, unravel
from ...lowering import Lowering
from .direct import Phase, transpose_input_layout, transpose_phases
from .nonfinite import exact_sum
from .packing import Padded, emit_pack_input, emit_pack_weight
from .primitives import constant_table, emit_zero, strided_offset
from .problem import Blocking, ConvProblem, Geometry, to_3d
from .tile import tile_function
from .unpack import PhaseMajorScratch, Unpack, emit_unpack


def choose_point_blocking(ocg: int, points: int, lowering: Lowering, dtype) -> Blocking | None:
    """The tile of a transposed conv vectorised over output points along w: rows are its `ocg`
    output channels, vectors hold consecutive points of a phase row. None when vectorising over
    output channels suits the layer better: at least half a vector of output channels, or phase
    rows shorter than a vector (the input gradient of a stem conv with 3 input channels is the case
    this is for)."""
    lanes = lowering.target.lanes(dtype)
    registers = lowering.target.model.vector_registers
    most = (registers - 1) // (ocg + 1)         # ocg x vectors accumulators, the vectors, one broadcast
    if 2 * ocg > lanes or points < lanes or most < 1:
        return None
    needed = math.ceil(points / lanes)
    tiles = math.ceil(needed / most)
    return Blocking(lanes, math.ceil(needed / tiles), ocg)


def lower_transposed_over_points(lowering: Lowering, problem: ConvProblem) -> bool:
    """Lower a transposed conv vectorised over output points if `choose_point_blocking` suits it;
    False, emitting nothing, for a conv or when it does not."""
    if not problem.transposed:
        return False
    phases = transpose_phases(problem.g, to_3d(problem.y.shape[2:], 1))
    block = choose_point_blocking(problem.g.ocg, max(p.counts[2] for p in phases), lowering, problem.x.dtype)
    if block is None:
        return False
    _lower_over_points(lowering, problem, phases, block)
    return True


def _lower_over_points(lowering: Lowering, problem: ConvProblem, phases: list, block: Blocking) -> None:
    """Each stride phase is a stride-1 direct conv over a planar padded input `xc[n][c][d][h][w]`,
    whose register tile broadcasts weights and multiplies input vectors of consecutive points. Phase
    r's rows go to a phase-major scratch `yq[r][n][oc][qd][qh][qw]` (rows padded to whole tiles),
    which the unpacking interleaves into the output."""
    x, w, y, g = problem.x, problem.w, problem.y, problem.g
    itemsize = x.dtype.numpy.itemsize
    row = math.ceil(max(p.counts[2] for p in phases) / block.width) * block.width
    layout = transpose_input_layout(g, [Phase(p.r, p.counts[:2] + (row,), p.kernel_taps, p.taps) for p in phases],
                                     x.shape[1], planar=True)
    counts = tuple(max(-(-n // s), 1) for n, s in zip(to_3d(y.shape[2:], 1), g.stride))
    yq = _phase_major_strides(y.shape[:2], counts[:2] + (row,), math.prod(g.stride))
    all_taps = [tap for phase in phases for tap in phase.kernel_taps]
    x_offset = lowering.scratch(layout.size(g.n) * itemsize)
    w_offset = lowering.scratch(max(g.groups * len(all_taps) * g.icg * g.ocg, 1) * itemsize)
    y_offset = lowering.scratch(yq[0] * math.prod(g.stride) * itemsize)
    emit_pack_input(lowering, x, layout, x_offset, "convT_pack_planar")
    if any(not p.taps for p in phases):
        emit_zero(lowering, y_offset, yq[0] * math.prod(g.stride), x.dtype, "convT_zero")
    weight_blocks = Blocking(lanes=g.ocg, vectors=1, points=1)          # wp[g][0][t][ic][oc]
    flags = emit_pack_weight(lowering, w, g, weight_blocks, problem.weights_of(all_taps), w_offset, "convT_pack_weight",
                             note_finite=True)
    starts = itertools.accumulate((len(p.taps) for p in phases), initial=0)
    active = [(phase, start) for phase, start in zip(phases, starts) if phase.taps]
    for position, (phase, start) in enumerate(active):
        _emit_direct_over_points(lowering, x.dtype, g, block, phase, layout, (start, len(all_taps)), yq,
                                 (x_offset, w_offset, y_offset), waits=position == 0)
    unpack = Unpack(y, problem.bias, y_offset, PhaseMajorScratch(g.stride, yq), problem.epilogue,
                    exact_sum(problem, flags))
    emit_unpack(lowering, unpack, "convT_unpack")


def _phase_major_strides(nc: tuple, counts: tuple, phases: int) -> tuple:
    """Element strides of yq[phase][n][oc][qd][qh][qw] (qw padded): (phase, n, oc, qd, qh)."""
    n, channels = nc
    qd, qh, qw = counts
    return (n * channels * qd * qh * qw, channels * qd * qh * qw, qd * qh * qw, qh * qw, qw)


def _emit_direct_over_points(lowering: Lowering, dtype, g: Geometry, block: Blocking, phase: Phase, layout: Padded,
                             taps: tuple, yq: tuple, offsets: tuple, waits: bool) -> None:
    """One phase: work items (n, qd, qh, group), each a row of whole tiles of block.width points."""
    element = element_type(dtype)
    x_offset, w_offset, y_offset = offsets
    first_tap, tap_total = taps
    sn, sd, sh, sw = layout.strides()
    weights_per_tap = g.icg * g.ocg
    weight_taps = constant_table(lowering, "staps", [(first_tap + t) * weights_per_tap for t in range(len(phase.taps))])
    input_taps = constant_table(lowering, "vtaps", [a * sd + b_ * sh + c * sw for a, b_, c in phase.taps])
    tile = tile_function(lowering, element, block, g.ocg, 1)
    tiles = yq[4] // block.width
    x0 = _dot_constant(layout.origin, (sd, sh, sw))
    phase_index = (phase.r[0] * g.stride[1] + phase.r[1]) * g.stride[2] + phase.r[2]
    rows = (g.n,) + phase.counts[:2]

    def body(k, item):
        b = k.b
        n, qd, qh, grp = unravel(b, item, rows + (g.groups,))
        xc, wp, yp = (k.scratch_pointer(o, element) for o in (x_offset, w_offset, y_offset))
        x_row = strided_offset(b, x0, (n, qd, qh, grp), (sn, sd, sh, g.icg * layout.channel_stride))
        y_row = strided_offset(b, phase_index * yq[0], (n, grp, qd, qh), (yq[1], g.ocg * yq[2], yq[3], yq[4]))
        w_row = b.gep(wp, [b.mul(grp, i64(tap_total * weights_per_tap))])
        tables = [b.gep(t, [i64(0), i64(0)]) for t in (weight_taps, input_taps)]
        steps = [i64(len(phase.taps)), i64(g.icg), i64(g.ocg), i64(layout.channel_stride), i64(yq[2])]
        with counted_loop(b, tiles, name="tile") as t:
            first = b.mul(t, i64(block.width))
            b.call(tile, [w_row, b.gep(xc, [b.add(x_row, first)]), b.gep(yp, [b.add(y_row, first)])] + tables + steps)

    lowering.kernel("convT_direct_points", math.prod(rows) * g.groups, body, waits, compute_bound=True)


def _dot_constant(indices: tuple, strides: tuple) -> int:
    return sum(i * s for i, s in zip(indices, strides))
