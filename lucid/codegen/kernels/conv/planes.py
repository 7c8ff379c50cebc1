"""Convs of one tap across (h, w), vectorised over the points of their planes.

A conv whose kernel is 1 x 1 across (h, w), of stride 1 and no padding there (a (2+1)-D net's
3 x 1 x 1 temporal conv, a 1 x 1 x 1 conv of stride 1), maps every input plane onto an output plane
of the same points:

    y[n, oc, qd, p] = sum over taps a and input channels ic of w[oc, ic, a] * x[n, ic, d(qd, a), p]

where p runs over a plane's H x W points, contiguous in the NCDHW input and output alike. So the
register tile (tile.py's) takes the weights as its broadcast scalars (rows: output channels) and
consecutive points of the input as its vectors, read where they are, with no packed copy. A work
item is a few rows (h) of one output plane (n, qd) with every output channel: its tiles write the
output itself, or, with a bias or a fused epilogue, a stack array that the item then unpacks while
it is in L1. A 1 x 1 x 1 conv whose input a fused prologue computes (a norm's normalize and
activation in front of a segmentation head) has each item compute its rows of every input channel
into a stack array first (`packing.prologue_row`), and its tiles read them there.

The channel-vectorised direct tiles (direct.py) on such a conv broadcast an input value per output
point and input channel, and with a single vector of output channels (a (2+1)-D block's 16) their
loads outnumber their FMAs; here a tile of `rows` channels x `vectors` vectors loads `vectors + rows`
values for `rows x vectors` FMAs. Output depths whose taps reach the depth padding are classes of
their own (direct.py's `depth_classes`), each a kernel with its taps inside the input. A transposed
conv of stride 1 and one tap across (h, w) (such a conv's input gradient) is the conv of its kernel
flipped along d (`_as_conv`).

Guarantees: only the points and channels of the output are read and written (the tails are tiles
of fewer vectors and lanes, never a vector past a plane's end); the weights are packed once per
weight version (prepared.py); symbolic sizes and convs strided or padded across (h, w) are left to
the direct kernels, and so are short planes with several vectors of channels (`LEAST_EFFICIENCY`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import llvmlite.ir as ir

from ....ir import symbolic
from ...cpu_model import CpuModel
from ...irgen import counted_loop, element_type, i64, unravel
from ...lowering import Lowering
from .direct import DepthClass, depth_classes
from .packing import emit_pack_weight, prologue_row
from .prepared import emit_weight_check
from .primitives import Kept, constant_table, region_pointer, strided_offset
from .problem import Blocking, ConvProblem, Geometry, choose_blocking, step_cycles, to_3d
from .tile import term_blocks, tile_function
from .unpack import Unpack, unpack_rows

#: Most vectors of points in a tile (more would only lengthen the rows' tails).
MOST_VECTORS = 8

#: A work item covers at least this many tiles' points of a plane (whole rows of it), so its
#: tails and unpacking are a small part of it.
TILES_PER_ITEM = 2

#: The least share of the FMA rate (`plane_efficiency`) the tiles must reach on a layer's planes
#: when the direct kernels have a tile of several vectors of channels: a 7 x 7 plane's tiles (48
#: points, then 1) reach 0.74 by the model, and 128 channels ran 0.85 of the direct kernels' speed.
LEAST_EFFICIENCY = 0.8

#: The most bytes of an item's stack array of sums (every output channel of its rows).
MOST_STACK_BYTES = 256 * 1024


@dataclass(frozen=True)
class PlaneBlocking:
    """Tiles of `rows` output channels x `vectors` vectors of `lanes` consecutive points."""

    lanes: int
    vectors: int
    rows: int

    @property
    def points(self) -> int:
        return self.lanes * self.vectors


def choose_plane_blocking(ocg: int, lowering: Lowering, dtype, lanes: int | None = None,
                          most_vectors: int = MOST_VECTORS) -> PlaneBlocking:
    """The tile for `ocg` output channels on the target's CPU model, of vectors of `lanes` (the
    widest if None) and at most `most_vectors` of them: of the (rows, vectors) whose accumulators,
    vectors and one broadcast fit the registers, the one taking the fewest cycles per vector of
    points over all `ocg` channels (`problem.step_cycles`; a last block of fewer rows counted as a
    whole one); on a tie the most rows (the fewest passes over the input), then the most vectors."""
    model, lanes = lowering.target.model, lanes or lowering.target.lanes(dtype)
    slots = model.slots(lanes * dtype.numpy.itemsize // 4)

    def cycles_per_vector(shape):
        rows, vectors = shape
        return math.ceil(ocg / rows) * step_cycles(model, slots, rows, vectors) / vectors

    shapes = [(rows, vectors) for rows in range(1, ocg + 1) for vectors in range(1, most_vectors + 1)
              if rows * vectors + vectors + 1 <= model.vector_registers]
    rows, vectors = min(shapes, key=lambda shape: (cycles_per_vector(shape), -shape[0], -shape[1]))
    return PlaneBlocking(lanes, vectors, rows)


def plane_efficiency(model: CpuModel, block: PlaneBlocking, ocg: int, item_points: list, itemsize: int) -> float:
    """The share of the FMA pipes' full-width rate the tiles of items of `item_points` points reach
    by the CPU model (`problem.step_cycles`): a short plane's tail tiles (few lanes, or one vector) cost
    more than their points."""
    full_slots = model.slots(block.lanes * itemsize // 4)
    cycles = 0.0
    for points in item_points:
        for lanes, vectors, count in _pieces(points, block):
            slots = model.slots(lanes * itemsize // 4)
            blocks, last_rows = divmod(ocg, block.rows)
            per_step = blocks * step_cycles(model, slots, block.rows, vectors)
            cycles += count * (per_step + (step_cycles(model, slots, last_rows, vectors) if last_rows else 0))
    vector_fmas = ocg * sum(item_points) / block.lanes
    return vector_fmas * full_slots / model.fma_pipes / cycles


def _pieces(points: int, block: PlaneBlocking) -> list:
    """How a run of `points` consecutive points is tiled: [(lanes, vectors, count)]: `count` tiles of
    the full shape, a tile of the whole vectors left, then one of each power of two of the points
    left (8, 4, 2, 1 lanes) below a vector."""
    full, rest = divmod(points, block.points)
    pieces = [(block.lanes, block.vectors, full)] if full else []
    if rest // block.lanes:
        pieces.append((block.lanes, rest // block.lanes, 1))
    pieces += [(lanes, 1, 1) for lanes in (8, 4, 2, 1) if lanes < block.lanes and rest % block.lanes & lanes]
    return pieces


def lower_conv_over_planes(lowering: Lowering, problem: ConvProblem) -> bool:
    """Lower a conv of one tap across (h, w) over its planes' points (see the module docstring), or
    a transposed conv of stride 1 that is one (`_as_conv`); False, emitting nothing, for a strided
    transposed conv, a conv of another kernel or padding, a symbolic
    size, or a plane so short that the tiles' tails cost more than `LEAST_EFFICIENCY` allows while
    the direct tile has several vectors of output channels (with one, its loads outnumber its FMAs),
    or items whose sums would take more than `MOST_STACK_BYTES` of stack."""
    problem = _as_conv(problem)
    if problem is None or (problem.prologue is not None and problem.g.kernel != (1, 1, 1)):
        return False
    g, y, dtype = problem.g, problem.y, problem.x.dtype
    out_sp = to_3d(y.shape[2:], 1)
    if symbolic.is_symbolic((g.n,) + tuple(out_sp)) or g.stride[1:] != (1, 1):
        return False
    classes = depth_classes(g, out_sp)
    if not classes or out_sp[1:] != g.in_sp[1:]:
        return False
    block = choose_plane_blocking(g.ocg, lowering, dtype)
    rows, last_rows = _item_rows(out_sp[1], out_sp[2], block)
    prologue_rows = rows + last_rows if problem.prologue is not None else 0
    if (y.shape[1] * rows + problem.x.shape[1] * prologue_rows) * out_sp[2] * dtype.numpy.itemsize > MOST_STACK_BYTES:
        return False
    items = [rows * out_sp[2]] * (math.ceil(out_sp[1] / rows) - 1) + [last_rows * out_sp[2]]
    efficiency = plane_efficiency(lowering.target.model, block, g.ocg, items, dtype.numpy.itemsize)
    if efficiency < LEAST_EFFICIENCY and choose_blocking(g.ocg, out_sp[2], lowering, dtype).vectors > 1:
        return False
    _lower_over_planes(lowering, problem, classes, block)
    return True


def _as_conv(problem: ConvProblem) -> ConvProblem | None:
    """`problem` as a conv: itself, or a transposed conv of stride 1 and one tap across (h, w) (the
    input gradient of a temporal conv) as the conv of its kernel flipped along d: input depth q
    feeds output q - pad + a * dilation for tap a, so output o reads input o + pad - a * dilation,
    a conv of the taps reversed and depth padding (k - 1) * dilation - pad. Taps outside the input
    are skipped (`depth_classes`), as the transposed conv never multiplies them. None otherwise."""
    g = problem.g
    if not problem.transposed:
        return problem
    if g.stride != (1, 1, 1) or g.kernel[1:] != (1, 1):
        return None
    flipped = tuple(d * (k - 1) - p for k, d, p in zip(g.kernel, g.dilation, g.pad_lo))
    weights = dataclasses.replace(problem.weights, taps=tuple(reversed(problem.weights.taps)))
    return dataclasses.replace(problem, g=dataclasses.replace(g, pad_lo=flipped), weights=weights, transposed=False)


def _lower_over_planes(lowering: Lowering, problem: ConvProblem, classes: list, block: PlaneBlocking) -> None:
    """Check and pack the weights as `wp[g][tap][ic][oc]` (kept between calls), then one kernel per
    class of output depths."""
    x, w, g = problem.x, problem.w, problem.g
    check = emit_weight_check(lowering, w)
    w_offset = Kept.reserve(lowering, g.groups * g.kernel[0] * g.icg * g.ocg * x.dtype.numpy.itemsize)
    emit_pack_weight(lowering, w, g, Blocking(lanes=g.ocg, vectors=1, points=1), problem.weights, w_offset,
                     "conv_pack_weight", check=check, waits=True)
    unpack = None
    if any(part is not None for part in (problem.bias, problem.epilogue, problem.statistics)):   # a stack array
        unpack = Unpack(problem.y, problem.bias, offset=None, source=None, epilogue=problem.epilogue,
                        statistics=problem.statistics)
    for position, depths in enumerate(classes):         # the classes write disjoint output planes
        _emit_class(lowering, problem, block, depths, w_offset, unpack, waits=position == 0)


def _emit_class(lowering: Lowering, problem: ConvProblem, block: PlaneBlocking, depths: DepthClass,
                w_offset: Kept, unpack: Unpack | None, waits: bool) -> None:
    """The kernel of the output depths `depths`: items (n, qd, chunk of rows), each every group and
    output channel of its rows. Without bias and epilogue the tiles write the output; else a stack
    array `[oc][point]` of the item's points, which it then unpacks while it is in L1."""
    x, y, g = problem.x, problem.y, problem.g
    element = element_type(x.dtype)
    out_d, height, width = to_3d(y.shape[2:], 1)
    in_plane, out_plane = g.in_sp[0] * height * width, out_d * height * width
    chunk, last_rows = _item_rows(height, width, block)
    chunks = math.ceil(height / chunk)
    taps = depths.hi - depths.lo
    calls = _TileCalls(lowering, element, g, block, taps)
    weight_taps = constant_table(lowering, "staps", [(depths.lo + t) * g.icg * g.ocg for t in range(taps)])
    input_taps = constant_table(lowering, "vtaps", [t * g.dilation[0] * height * width for t in range(taps)])

    def body(k, item):
        b = k.b
        n, q, c = unravel(b, item, (g.n, depths.count, chunks))
        qd = b.add(q, i64(depths.first))
        first_depth = b.add(b.mul(qd, i64(g.stride[0])), i64(depths.lo * g.dilation[0] - g.pad_lo[0]))
        first_point = b.mul(c, i64(chunk * width))
        x_at = strided_offset(b, first_point, (n, first_depth), (x.shape[1] * in_plane, height * width))
        tables = [b.gep(t, [i64(0), i64(0)]) for t in (weight_taps, input_taps)]
        if unpack is None:
            y_at = strided_offset(b, first_point, (n, qd), (y.shape[1] * out_plane, height * width))
            output = (k.pointer(y, element), y_at, out_plane)
        else:
            output = (k.alloca(element, y.shape[1] * chunk * width, name="sums"), i64(0), chunk * width)
        wp = region_pointer(k, w_offset, element)

        def emit(rows):
            if problem.prologue is None:
                frame = _Frame(k.pointer(x, element), wp, x_at, tables, in_plane, output)
            else:                                      # the item's rows of every channel, computed
                computed = prologue_row(k, problem.prologue, x, (n, first_depth, b.mul(c, i64(chunk))),
                                        ir.Constant(ir.IntType(1), 1), rows)
                frame = _Frame(computed, wp, i64(0), tables, rows * width, output)
            calls.emit_points(k, frame, rows * width)

        _by_chunk(b, c, chunks, (chunk, last_rows), emit)
        if unpack is not None:
            first_row = b.add(b.mul(b.add(b.mul(n, i64(out_d)), qd), i64(height)), b.mul(c, i64(chunk)))
            sums = output[0]
            _by_chunk(b, c, chunks, (chunk, last_rows), lambda rows: unpack_rows(
                k, unpack, first_row, rows, lambda oc, p: b.load(b.gep(sums, [b.add(b.mul(oc, i64(chunk * width)), p)]))))

    lowering.kernel("conv_planes", g.n * depths.count * chunks, body, waits)


def _by_chunk(b, c, chunks: int, rows: tuple, emit) -> None:
    """`emit(rows[0])` for an item of a whole chunk of rows, `emit(rows[1])` for the last chunk `c`."""
    if rows[0] == rows[1]:
        emit(rows[0])
        return
    with b.if_else(b.icmp_unsigned("<", c, i64(chunks - 1))) as (whole, last):
        with whole:
            emit(rows[0])
        with last:
            emit(rows[1])


def _item_rows(height: int, width: int, block: PlaneBlocking) -> tuple:
    """Rows of a plane per work item, and in its last item: the fewest holding `TILES_PER_ITEM`
    tiles' points, preferring a whole number of vectors (so only a plane's last item has a tail),
    at most the plane."""
    least = min(math.ceil(TILES_PER_ITEM * block.points / width), height)
    whole = [rows for rows in range(least, min(2 * least, height) + 1) if rows * width % block.lanes == 0]
    rows = whole[0] if whole else least
    return rows, height - (math.ceil(height / rows) - 1) * rows


@dataclass(frozen=True)
class _Frame:
    """Where one work item reads and writes: the input and packed-weight pointers, the input offset
    of its first point, the tap tables, the input's channel stride, and `output` (pointer, offset of
    the first point, channel stride): the output itself or the item's stack array."""

    xp: object
    wp: object
    x_at: object
    tables: list
    in_plane: int
    output: tuple


class _TileCalls:
    """The tile functions one kernel calls: `rows` x `vectors` vectors (and the fewer vectors, the
    narrower vectors of a run's tail, the fewer rows of the last block of output channels)."""

    def __init__(self, lowering: Lowering, element, g: Geometry, block: PlaneBlocking, taps: int):
        self.lowering, self.element, self.g, self.block, self.taps = lowering, element, g, block, taps

    def tile(self, lanes: int, vectors: int, rows: int):
        return tile_function(self.lowering, self.element, Blocking(lanes, vectors, rows), rows, 1)

    def emit_points(self, k, frame: _Frame, points: int) -> None:
        """Every group and output channel of `points` consecutive points from the item's first,
        in the tiles `_pieces` lists: whole tiles in a loop, then the rest one tile each."""
        b = k.b
        first = 0
        for lanes, vectors, count in _pieces(points, self.block):
            if count > 1:
                with counted_loop(b, count, name="tile") as t:
                    self._emit_channels(k, frame, b.add(i64(first), b.mul(t, i64(lanes * vectors))), lanes, vectors)
            else:
                self._emit_channels(k, frame, i64(first), lanes, vectors)
            first += count * lanes * vectors

    def _emit_channels(self, k, frame: _Frame, point, lanes: int, vectors: int) -> None:
        """Tiles of `vectors` vectors of `lanes` points from `point` on, for every group and block of
        output channels (the input's lines read by the first block stay in L1 for the others)."""
        b, g, rows = k.b, self.g, self.block.rows
        blocks, last_rows = divmod(g.ocg, rows)
        yp, y_at, y_step = frame.output
        steps = [i64(self.taps), i64(g.icg), i64(g.ocg), i64(frame.in_plane), i64(y_step),
                 *term_blocks(self.taps, g.icg)]
        x_first, y_first = b.add(frame.x_at, point), b.add(y_at, point)

        def call(function, grp, first_oc):
            weights = b.add(b.mul(grp, i64(g.kernel[0] * g.icg * g.ocg)), first_oc)
            x_at = b.add(x_first, b.mul(grp, i64(g.icg * frame.in_plane)))
            y_at = b.add(y_first, b.mul(b.add(b.mul(grp, i64(g.ocg)), first_oc), i64(y_step)))
            b.call(function, [b.gep(frame.wp, [weights]), b.gep(frame.xp, [x_at]), b.gep(yp, [y_at])]
                   + frame.tables + steps)

        with counted_loop(b, g.groups, name="grp") as grp:
            if blocks:
                tile = self.tile(lanes, vectors, rows)
                with counted_loop(b, blocks, name="ob") as ob:
                    call(tile, grp, b.mul(ob, i64(rows)))
            if last_rows:
                call(self.tile(lanes, vectors, last_rows), grp, i64(blocks * rows))
