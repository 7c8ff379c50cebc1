"""Transposed convs whose kernel equals their stride: each input point's outputs are a block of its own.

With kernel == stride, no padding, dilation 1 and no output padding (the 2 x 2 x 2 upsampling of a
3-D UNet's decoder), output (q * stride + r) is the sum over the input channels of input q times the
weights of kernel offset r: one product per output, no two input points reaching the same output.
The direct phases (direct.py) wrote such a conv's result to a channels-last scratch the size of the
output, which a second kernel read back to unpack it (MONAI BasicUNet's last upsampling: 2.6 of its
5.2 ms in that unpacking). Here a work item is a run of consecutive input rows (n, d, h...) of
one plane, contiguous in NCDHW (one row, or enough for a whole vector: `_run_of_rows`), every group:
1. its input channels' runs are read where they are (NCDHW), or computed by the fused prologue
   into a stack array (`packing.prologue_row`);
2. for each of the stride[0] x stride[1] output row phases the run makes, each phase r along w is
   the register tile of `tile.py` (a broadcast weight times a vector of consecutive input points,
   as over_points.py; its shape as planes.py chooses it) over output channels x vectors of the row,
   written to a stack array;
3. the stride[2] phases of each channel are interleaved in registers (`interleave`) into a second
   stack array (each input row's s_w x W values one output row), from which each output row is
   stored with the bias and the epilogue (unpack.py).
Nothing but the output is written to memory. Every output is exactly its input channels' sum of
products, as in PyTorch's, so weights that are not finite need no exact sums (nonfinite.py).

It takes concrete sizes, runs of a whole number of vectors of at least 4 lanes, and a stride along
w of 1, 2 or 4; other transposed convs are left to the direct phases."""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ....ir import symbolic
from ...irgen import counted_loop, element_type, i64, load_vector, store_vector, unravel, vector_type
from ...lowering import Lowering
from .packing import emit_pack_weight, prologue_row
from .prepared import emit_weight_check
from .primitives import Kept, constant_table
from .planes import MOST_VECTORS, PlaneBlocking, choose_plane_blocking
from .problem import Blocking, ConvProblem, kernel_taps, to_3d
from .tile import term_blocks, tile_function
from .unpack import Unpack, emit_channel_row

#: Most bytes of the stack arrays of one work item (the prologue's input row and the two arrays of
#: the output rows); larger rows are left to the direct phases.
STACK_BYTES = 256 << 10

#: Strides along w whose phases `interleave` puts together (a power of two: pairs of pairs).
W_STRIDES = (1, 2, 4)


def lower_disjoint_blocks(lowering: Lowering, problem: ConvProblem) -> bool:
    """Lower a transposed conv whose kernel is its stride as described above; False, emitting
    nothing, when it is not one or its sizes are not ones this path takes."""
    g, x = problem.g, problem.x
    run = _run_of_rows(lowering, problem)
    if run is None:
        return False
    rows, lanes = run
    points, itemsize = rows * g.in_sp[2], x.dtype.numpy.itemsize
    stack = (2 * g.stride[2] * g.ocg * points + (x.shape[1] * points if problem.prologue else 0)) * itemsize
    if stack > STACK_BYTES:
        return False
    tile = _whole_tiles(lowering, problem, lanes, points // lanes)
    taps = kernel_taps(g.kernel)
    check = emit_weight_check(lowering, problem.w)
    weights = Kept.reserve(lowering, g.groups * len(taps) * g.icg * g.ocg * itemsize)
    emit_pack_weight(lowering, problem.w, g, Blocking(lanes=g.ocg, vectors=1, points=1), problem.weights_of(taps),
                     weights, "convT_pack_weight", check=check, waits=True)       # wp[g][tap][ic][oc]
    _emit_blocks(lowering, problem, weights, tile, rows)
    return True


def _whole_tiles(lowering: Lowering, problem: ConvProblem, lanes: int, vectors: int) -> PlaneBlocking:
    """planes.py's tile for the output channels, of a number of vectors dividing a run's `vectors`
    (a last tile of fewer vectors would load as many values as it does FMAs)."""
    most = min(vectors, MOST_VECTORS)
    while True:
        tile = choose_plane_blocking(problem.g.ocg, lowering, problem.x.dtype, lanes, most)
        if vectors % tile.vectors == 0:
            return tile
        most = tile.vectors - 1


def _run_of_rows(lowering: Lowering, problem: ConvProblem) -> tuple | None:
    """(rows, lanes): a work item's run of consecutive input rows of a plane (contiguous in NCDHW)
    and the vector width it is read in: one row in the widest vectors when it is a whole number of
    them, else the fewest rows dividing the plane's that are (UNet3D's 8 x 8 rows of 8 points were
    read in half-width vectors, at half the FMA rate: 0.46 -> 0.28 ms), else one row in the widest
    vectors dividing it, at least 4 lanes. Longer runs than needed ran slower (16 x 16 planes in runs
    of 4 rows: 0.71 -> 0.86 ms). None when `problem` is not a transposed conv this path takes."""
    g, x, y = problem.g, problem.x, problem.y
    if not problem.transposed or symbolic.is_symbolic(tuple(x.shape) + tuple(y.shape)):
        return None
    if not (g.kernel == g.stride and g.pad_lo == (0, 0, 0) and g.dilation == (1, 1, 1) and g.stride[2] in W_STRIDES
            and to_3d(y.shape[2:], 1) == tuple(n * s for n, s in zip(g.in_sp, g.stride))):
        return None
    height, width = g.in_sp[1:]
    widest = lowering.target.lanes(x.dtype)
    for rows in range(1, height + 1):
        if height % rows == 0 and rows * width % widest == 0:
            return rows, widest
    lanes = widest
    while lanes > 4 and width % lanes:
        lanes //= 2
    return (1, lanes) if width % lanes == 0 else None


def interleave(b: ir.IRBuilder, vectors: list) -> ir.Value:
    """One vector holding element q of vectors[r] at q * len(vectors) + r (a power of two of vectors
    of one type): the even vectors' interleaving interleaved with the odd ones'."""
    if len(vectors) == 1:
        return vectors[0]
    even, odd = interleave(b, vectors[0::2]), interleave(b, vectors[1::2])
    count = even.type.count
    mask = ir.Constant(vector_type(ir.IntType(32), 2 * count), [i // 2 + (i % 2) * count for i in range(2 * count)])
    return b.shuffle_vector(even, odd, mask)


def _emit_blocks(lowering: Lowering, problem: ConvProblem, weights: Kept, block: PlaneBlocking, rows: int) -> None:
    """The kernel over runs of `rows` input rows (n, d, h...): every output row they make, every group."""
    g, x, y = problem.g, problem.x, problem.y
    element = element_type(x.dtype)
    lanes, width = block.lanes, g.in_sp[2]
    points = rows * width
    s_d, s_h, s_w = g.stride
    taps = s_d * s_h * s_w
    channel_tiles = _tiles(g.ocg, block.rows)
    vector_tiles = _tiles(points // lanes, block.vectors)
    tiles = {(c, v): tile_function(lowering, element, Blocking(lanes, v, c), c, 1)
             for c, _ in channel_tiles for v, _ in vector_tiles}
    zero_tap = constant_table(lowering, "zero_tap", [0])
    unpack = Unpack(y, problem.bias, 0, None, problem.epilogue, statistics=problem.statistics)
    plane = math.prod(g.in_sp)

    def body(k, item):
        b = k.b
        n, d, run = unravel(b, item, (g.n, g.in_sp[0], g.in_sp[1] // rows))
        h = b.mul(run, i64(rows))
        wp = k.persistent_pointer(weights.offset, element)
        if problem.prologue is None:
            source = k.pointer(x)
            first, channel_step = b.mul(b.add(b.mul(b.add(b.mul(n, i64(x.shape[1] * g.in_sp[0])), d),
                                                     i64(g.in_sp[1])), h), i64(width)), plane
        else:
            source = prologue_row(k, problem.prologue, x, (n, d, h), ir.Constant(ir.IntType(1), 1), rows)
            first, channel_step = i64(0), points
        phases = k.alloca(element, s_w * g.ocg * points, name="phases")         # [r][oc][point]
        interleaved = k.alloca(element, g.ocg * s_w * points, name="rows")     # [oc][point * s_w + r]
        tap_table = b.gep(zero_tap, [i64(0), i64(0)])
        with counted_loop(b, g.groups, name="grp") as grp, counted_loop(b, s_d * s_h, name="dh") as dh:
            v_row = b.add(first, b.mul(grp, i64(g.icg * channel_step)))
            for r in range(s_w):
                w_tap = b.mul(b.add(b.mul(grp, i64(taps)), b.add(b.mul(dh, i64(s_w)), i64(r))), i64(g.icg * g.ocg))
                for (channels, count), first_channel in _starts(channel_tiles):
                    for (vectors, v_count), first_vector in _starts(vector_tiles):
                        tile = tiles[(channels, vectors)]
                        with counted_loop(b, channels * count, step=channels, name="oc") as oc, \
                                counted_loop(b, vectors * v_count, step=vectors, name="v") as v:
                            oc, w0 = b.add(oc, i64(first_channel)), b.mul(b.add(v, i64(first_vector)), i64(lanes))
                            arguments = [b.gep(wp, [b.add(w_tap, oc)]), b.gep(source, [b.add(v_row, w0)]),
                                         b.gep(phases, [b.add(b.mul(b.add(i64(r * g.ocg), oc), i64(points)), w0)]),
                                         tap_table, tap_table, i64(1), i64(g.icg), i64(g.ocg), i64(channel_step),
                                         i64(points), *term_blocks(1, g.icg)]
                            b.call(tile, arguments)
            _interleave_rows(b, phases, interleaved, g.ocg, points, lanes, s_w)
            i, j = b.udiv(dh, i64(s_h)), b.urem(dh, i64(s_h))
            out_d = b.add(b.mul(d, i64(s_d)), i)
            with counted_loop(b, g.ocg, name="oc_row") as oc, counted_loop(b, rows, name="in_row") as r:
                channel = b.add(b.mul(grp, i64(g.ocg)), oc)
                out_h = b.add(b.mul(b.add(h, r), i64(s_h)), j)
                row = b.mul(b.add(b.mul(oc, i64(rows)), r), i64(s_w * width))
                emit_channel_row(k, unpack, (n, channel, out_d, out_h),
                                 lambda w: b.load(b.gep(interleaved, [b.add(row, w)])))

    lowering.kernel("convT_blocks", g.n * g.in_sp[0] * (g.in_sp[1] // rows), body)


def _tiles(total: int, most: int) -> list:
    """[(size, count)]: `total` as `count` tiles of `size` = `most`, then one of the rest."""
    full, rest = divmod(total, most)
    return [(most, full)] * bool(full) + [(rest, 1)] * bool(rest)


def _starts(tiles: list) -> list:
    """Each (size, count) of `tiles` with the index its first tile starts at."""
    starts, at = [], 0
    for size, count in tiles:
        starts.append(((size, count), at))
        at += size * count
    return starts


def _interleave_rows(b: ir.IRBuilder, phases, rows, ocg: int, width: int, lanes: int, s_w: int) -> None:
    """rows[oc][w * s_w + r] = phases[r][oc][w], a vector of each phase at a time."""
    with counted_loop(b, ocg, name="oc_i") as oc, counted_loop(b, width // lanes, name="v_i") as v:
        w0 = b.mul(v, i64(lanes))
        vectors = [load_vector(b, phases, b.add(b.mul(b.add(i64(r * ocg), oc), i64(width)), w0), lanes)
                   for r in range(s_w)]
        store_vector(b, interleave(b, vectors), rows, b.add(b.mul(oc, i64(s_w * width)), b.mul(w0, i64(s_w))))
