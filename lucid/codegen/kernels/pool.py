"""Pooling kernels: max_pool, avg_pool and their gradients in 1-D, 2-D and 3-D on (N, C, *spatial).

Semantics are those of the NumPy reference (`lucid/ir/ops/pool.py`):
- windows start at o*s - p on each axis; padding never enters a sum or a maximum, so each window
  loops over its clipped taps only: along an axis of size n, the taps t in [lo, hi) with
  0 <= o*s - p + t*d < n (computed per output position, so nothing is read out of bounds whatever
  the attributes; a window lying wholly in the padding has no taps);
- max_pool: maximum with NaN propagating (`llvm.maximum`), -inf for a window without taps;
- avg_pool: sum (accumulated in float64) divided by the window's divisor: `divisor_override`, else
  the product over axes of min(start+k, n+p) - start (count_include_pad: padding inside the padded
  extent counts, the ceil_mode overhang does not) or min(start+k, n) - max(start, 0);
- max_pool_grad: each output gradient goes to the last NaN of its window in window order, else to
  its first maximum among the taps inside the input (an all -inf window: its first tap inside), as
  in PyTorch; a window wholly in the padding passes nothing; gradients that land on one element
  add up;
- avg_pool_grad: each input element gathers gy/divisor from the windows containing it, in the
  reference's order (kernel offsets lexicographically), in the input's dtype.

Work items: the forward pools and avg_pool_grad write one row (the innermost spatial axis) of their
output per item. max_pool_grad scatters, and overlapping windows of one (n, c) plane can hit one
element, so an item is a whole plane: zero it, then accumulate (in a float64 scratch plane for
float32, like the reference's bincount, then rounded once). Windows that tile the input exactly
(a UNet's 2 x 2 x 2 pool of stride 2, `_disjoint_windows`) give each input element one gradient or
none: an item is an output row, which writes its windows' inputs directly, by vectors of outputs
(UNet3D's (2, 16, 32, 32, 32) pool: 0.95 -> 0.31 ms, its (2, 32, 16, 16, 16) one 0.23 -> 0.07 ms).

Speed: which output positions have their whole window inside the input is known at compile time
(`_interior`); there the tap loops have constant bounds (LLVM unrolls and vectorises them) and
max_pool_grad finds the argmax with a balanced tree of branch-free selects instead of a chain.
max_pool's interior positions along a row go by vectors of outputs (`_VectorRows`: stride 1, or
stride 2 with windows of at most 2 along w, the UNets' 2 x 2 x 2 pools; position by position its
strided loads did not vectorise): UNet3D's (2, 16, 32, 32, 32) pool 1.78 -> 0.16 ms on one thread.

Symbolic sizes: every pooling kernel takes them (`_Geometry.sized`: the spatial sizes, strides and
plane sizes become the call's i64 values, and each row's interior is computed at run time, an empty
segment then running no iteration; max_pool_grad's tap offsets are sizes too, computed once per
call). Ints stay ints, so a concrete graph's code is unchanged.
"""
from __future__ import annotations

import contextlib
import itertools
import math

import llvmlite.ir as ir

from ...ir import symbolic
from ...ir.graph import Node
from ..extents import floor_div
from ..irgen import (F64, I1, as_i64, carried_loop, counted_loop, element_type, float_suffix, i64, intrinsic, linear_index,
                     load_vector, store_vector, unravel)
from ..lowering import Lowering, lowers
from .elementwise import contiguous_strides
from .scalar import Scalars


class _Geometry:
    """The attributes of a pooling node, per spatial axis, and the shapes it works on."""

    def __init__(self, node: Node, in_shape: tuple, out_shape: tuple):
        attrs = node.attrs
        self.rank = len(attrs["kernel"])
        self.kernel, self.stride, self.padding = attrs["kernel"], attrs["stride"], attrs["padding"]
        self.dilation = attrs.get("dilation", (1,) * self.rank)
        self.planes = math.prod(in_shape[:2])
        self.in_sp, self.out_sp = tuple(in_shape[2:]), tuple(out_shape[2:])
        self.in_strides, self.out_strides = contiguous_strides(self.in_sp), contiguous_strides(self.out_sp)
        self.in_plane, self.out_plane = math.prod(self.in_sp), math.prod(self.out_sp)

    def sized(self, size) -> "_Geometry":
        """This geometry with its sizes passed through `size` (`KernelBuilder.size`: symbolic ones
        become this call's i64 values, ints stay)."""
        copy = object.__new__(_Geometry)
        copy.__dict__.update(self.__dict__)
        for name in ("in_sp", "out_sp", "in_strides", "out_strides"):
            setattr(copy, name, tuple(size(n) for n in getattr(self, name)))
        copy.planes, copy.in_plane, copy.out_plane = size(self.planes), size(self.in_plane), size(self.out_plane)
        return copy


def _sub(b: ir.IRBuilder, n, k: int):
    """n - k: an int, or an i64 value when n is one."""
    return b.sub(n, i64(k)) if isinstance(n, ir.Value) else n - k


def _times(b: ir.IRBuilder, n, k: int):
    """n * k: an int, or an i64 value when n is one."""
    return b.mul(n, i64(k)) if isinstance(n, ir.Value) else n * k


def _min(b: ir.IRBuilder, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _max(b: ir.IRBuilder, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _tap_range(b: ir.IRBuilder, start, n: int, k: int, d: int) -> tuple:
    """[lo, hi): the taps t of a window starting at `start` (i64) with 0 <= start + t*d < n."""
    zero = i64(0)
    before = b.sub(zero, start)                                   # elements of padding before the input
    skip = before if d == 1 else b.udiv(b.add(before, i64(d - 1)), i64(d))
    lo = b.select(b.icmp_signed(">", before, zero), skip, zero)
    room = b.sub(as_i64(_sub(b, n, 1)), start)                    # last in-bounds offset from start
    reach = room if d == 1 else b.sdiv(room, i64(d))
    hi = b.select(b.icmp_signed("<", room, zero), zero, _min(b, b.add(reach, i64(1)), i64(k)))
    return lo, hi


def _count(b: ir.IRBuilder, start, n: int, k: int, p: int, include_pad: bool):
    """avg_pool's count along one axis for a window starting at `start` (see `_avg_divisor`)."""
    end = b.add(start, i64(k))
    if include_pad:
        return b.sub(_min(b, end, as_i64(_sub(b, n, -p))), start)
    return b.sub(_min(b, end, as_i64(n)), _max(b, start, i64(0)))


def _nested_taps(b: ir.IRBuilder, ranges: list, values: list, visit, name: str = "t") -> list:
    """Loops over the taps of a window, axis 0 outermost, carrying `values`: `visit(taps, values)`
    returns the new values from the tap indices (one per axis) and the current ones. `ranges` holds
    one (start, stop, step) per axis. Returns the final values."""
    def level(axis, current, taps):
        if axis == len(ranges):
            return visit(taps, current)
        start, stop, step = ranges[axis]
        with carried_loop(b, stop, start, current, step=step, name=f"{name}{axis}") as carry:
            carry.next = level(axis + 1, carry.values, taps + [carry.index])
        return carry.values
    return level(0, list(values), [])


def _row_item(b: ir.IRBuilder, item, planes: int, sp: tuple) -> tuple:
    """(plane, outer spatial indices) of a work item that is one row of a (planes, *sp) array."""
    indices = unravel(b, item, (planes,) + sp[:-1])
    return indices[0], indices[1:]


def _interior(g: _Geometry, axis: int, b: ir.IRBuilder | None = None) -> tuple:
    """[lo, hi): the output positions along `axis` whose window lies wholly inside the input (ints;
    i64 values computed with `b` when the sizes are run-time values)."""
    n, m, k, s, p, d = g.in_sp[axis], g.out_sp[axis], g.kernel[axis], g.stride[axis], g.padding[axis], g.dilation[axis]
    if isinstance(n, ir.Value) or isinstance(m, ir.Value):
        n, m = as_i64(n), as_i64(m)
        lo = _min(b, m, i64(-(-p // s)))
        last = b.add(floor_div(b, b.add(n, i64(p - d * (k - 1) - 1)), s), i64(1))
        return lo, _max(b, lo, _min(b, m, last))
    lo = min(m, -(-p // s))
    return lo, max(lo, min(m, (n - 1 + p - d * (k - 1)) // s + 1))


def _emit_row(b: ir.IRBuilder, g: _Geometry, outer: list, position, vectors=None) -> None:
    """Call `position(o, starts, ranges, whole)` for each output position o of the row `outer` (the
    indices along all spatial axes but the last): `starts` are the window's starts along every axis,
    `ranges` its taps (from, to, step) along every axis. Where the window lies wholly inside the input
    (`whole`: the interior of each axis, known at compile time) the ranges are constants (0, k), so
    LLVM unrolls those loops; elsewhere they are clipped at run time. With `vectors` (a
    `_VectorRows`), the interior's first positions go by vectors of outputs instead:
    `vectors.position(o0, starts, ranges)` for each of its chunks."""
    starts = [b.sub(b.mul(o, i64(g.stride[axis])), i64(g.padding[axis])) for axis, o in enumerate(outer)]
    clipped = [_tap_range(b, start, g.in_sp[axis], g.kernel[axis], g.dilation[axis]) + (1,)
               for axis, start in enumerate(starts)]                    # fixed for the whole row
    whole = [(i64(0), i64(g.kernel[axis]), 1) for axis in range(g.rank)]
    last = g.rank - 1
    lo, hi = _interior(g, last, b)

    def along_last(outer_ranges, outer_whole):
        vectorised = lo
        if vectors is not None and isinstance(lo, int):
            chunks = vectors.chunks()
            with counted_loop(b, chunks, name="ov") as c:
                o0 = b.add(i64(lo), b.mul(c, i64(vectors.lanes)))
                start = b.sub(b.mul(o0, i64(g.stride[last])), i64(g.padding[last]))
                vectors.position(o0, starts + [start], outer_ranges)
            vectorised = lo + chunks * vectors.lanes
        for first, stop, inside in ((0, lo, False), (vectorised, hi, True), (hi, g.out_sp[last], False)):
            if isinstance(first, int) and isinstance(stop, int) and first >= stop:
                continue
            with counted_loop(b, as_i64(stop), as_i64(first), name="o") as o:
                start = b.sub(b.mul(o, i64(g.stride[last])), i64(g.padding[last]))
                taps = whole[last] if inside else \
                    _tap_range(b, start, g.in_sp[last], g.kernel[last], g.dilation[last]) + (1,)
                position(o, starts + [start], outer_ranges + [taps], outer_whole and inside)

    full = ir.Constant(I1, 1)
    for axis, o in enumerate(outer):
        first, stop = _interior(g, axis, b)
        full = b.and_(full, b.and_(b.icmp_signed(">=", o, as_i64(first)), b.icmp_signed("<", o, as_i64(stop))))
    if not outer:
        along_last([], True)
        return
    with b.if_else(full) as (inside, border):
        with inside:
            along_last(whole[:last], True)
        with border:
            along_last(clipped, False)


# ---------------------------------------------------------------------------------------------
# Forward


def _vector_chunks(g: _Geometry, lanes: int) -> int:
    """Vectors of `lanes` outputs from the first of the row's interior on whose windows lie inside
    the input and whose loads (the window starts' `stride x lanes` elements for stride 2) end
    inside the row."""
    last = g.rank - 1
    lo, hi = _interior(g, last)
    reach = g.kernel[last] if g.stride[last] == 1 else g.stride[last]      # elements read per output
    end = (g.in_sp[last] - reach + g.padding[last]) // g.stride[last] + 1    # first output reading past the row
    return max(0, (min(hi, end) - lo) // lanes)


class _VectorRows:
    """max_pool's interior positions along a row by vectors of `lanes` outputs: for stride 1, a
    load per tap along w; for stride 2 and a window of at most 2 along w, two loads of the window
    starts' `2 x lanes` inputs, split into the even and the odd ones by shuffles. Each load reads only
    elements of the row (`chunks` counts the vectors whose loads end inside it). Rows shorter than
    the widest vector take narrower ones (`lanes_for`: an 8-point row, 8 lanes)."""

    def __init__(self, k, g: _Geometry, dtype, lanes: int, pointers: tuple, in_base, out_row):
        self.k, self.g, self.dtype, self.lanes = k, g, dtype, lanes
        (self.xs, self.ys), self.in_base, self.out_row = pointers, in_base, out_row

    @staticmethod
    def lanes_for(g: _Geometry, widest: int) -> int:
        """The vector width for `g`'s rows: the widest of `widest` and its halves down to 4 lanes
        that the row's interior fills at least once; 0 when the rows do not go by vectors (symbolic
        sizes, dilation or another stride along w, or too short an interior)."""
        last = g.rank - 1
        stride, kernel = g.stride[last], g.kernel[last]
        concrete = not any(symbolic.is_symbolic(n) for n in g.in_sp + g.out_sp)
        if not (concrete and g.dilation[last] == 1 and (stride == 1 or (stride == 2 and kernel <= 2))):
            return 0
        lanes = widest
        while lanes > 4 and not _vector_chunks(g, lanes):
            lanes //= 2
        return lanes if _vector_chunks(g, lanes) else 0

    def chunks(self) -> int:
        """Vectors of outputs from the interior's first on (see `_vector_chunks`)."""
        return _vector_chunks(self.g, self.lanes)

    def position(self, o0, starts: list, outer_ranges: list) -> None:
        k, g, lanes = self.k, self.g, self.lanes
        b, last = k.b, g.rank - 1
        vtype = ir.VectorType(self.dtype, lanes)
        maximum = intrinsic(k.module, f"llvm.maximum.v{lanes}{float_suffix(self.dtype)}", vtype, [vtype, vtype])

        def visit(taps, values):
            index = b.add(self.in_base, b.mul(starts[last], as_i64(g.in_strides[last])))
            for axis, t in enumerate(taps):
                index = b.add(index, b.mul(b.add(starts[axis], b.mul(t, i64(g.dilation[axis]))),
                                           as_i64(g.in_strides[axis])))
            best = values[0]
            for vector in self._tap_vectors(b, index):
                best = b.call(maximum, [best, vector])
            return [best]

        initial = ir.Constant(vtype, [-math.inf] * lanes)
        best, = _nested_taps(b, outer_ranges, [initial], visit)
        store_vector(b, best, self.ys, b.add(self.out_row, o0))

    def _tap_vectors(self, b, index) -> list:
        g, lanes = self.g, self.lanes
        kernel = g.kernel[g.rank - 1]
        if g.stride[g.rank - 1] == 1:
            return [load_vector(b, self.xs, b.add(index, i64(t)), lanes) for t in range(kernel)]
        return _even_and_odd(b, self.xs, index, lanes)[:kernel]


def _even_and_odd(b: ir.IRBuilder, xs, index, lanes: int) -> tuple:
    """The `2 x lanes` elements from xs[index] on, as the vector of the even ones and of the odd ones
    (the taps 0 and 1 of `lanes` windows of stride 2 along w)."""
    pair = load_vector(b, xs, index, 2 * lanes)
    undefined = ir.Constant(pair.type, ir.Undefined)
    return tuple(b.shuffle_vector(pair, undefined, ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                             [2 * j + parity for j in range(lanes)]))
                 for parity in (0, 1))


def _emit_forward(lowering: Lowering, node: Node, kind: str) -> None:
    x, y = node.inputs[0], node.output
    symbolic_g = _Geometry(node, x.shape, y.shape)
    attrs, dtype = node.attrs, element_type(x.dtype)
    acc_type = dtype if kind == "max" else F64
    rows = symbolic_g.planes * math.prod(symbolic_g.out_sp[:-1])
    lanes = _VectorRows.lanes_for(symbolic_g, lowering.target.lanes(x.dtype)) if kind == "max" else 0

    def body(k, item):
        g = symbolic_g.sized(k.size)
        b, s = k.b, Scalars(k.b, k.module)
        xs, ys = k.pointer(x), k.pointer(y)
        plane, outer = _row_item(b, item, g.planes, g.out_sp)
        in_base = b.mul(plane, as_i64(g.in_plane))
        out_row = b.mul(item, as_i64(g.out_sp[-1]))

        def position(o, starts, ranges, whole):
            def visit(taps, values):
                index = in_base
                for axis, t in enumerate(taps):
                    spot = b.add(starts[axis], b.mul(t, i64(g.dilation[axis])))
                    index = b.add(index, b.mul(spot, as_i64(g.in_strides[axis])))
                value = b.load(b.gep(xs, [index]))
                if kind == "max":
                    return [s.call("maximum", acc_type, values[0], value)]
                return [b.fadd(values[0], value if acc_type == dtype else b.fpext(value, acc_type))]

            initial = ir.Constant(acc_type, -math.inf if kind == "max" else 0.0)
            result, = _nested_taps(b, ranges, [initial], visit)
            if kind == "avg":
                result = b.fdiv(result, _divisor(b, g, attrs, starts, acc_type))
                if acc_type != dtype:
                    result = b.fptrunc(result, dtype)
            b.store(result, b.gep(ys, [b.add(out_row, o)]))

        vectors = _VectorRows(k, g, dtype, lanes, (xs, ys), in_base, out_row) if lanes else None
        _emit_row(b, g, outer, position, vectors)

    lowering.kernel(node.op, rows, body)


def _divisor(b: ir.IRBuilder, g: _Geometry, attrs: dict, starts: list, ty: ir.Type) -> ir.Value:
    if attrs["divisor_override"] is not None:
        return ir.Constant(ty, float(attrs["divisor_override"]))
    total = None
    for axis, start in enumerate(starts):
        count = _count(b, start, g.in_sp[axis], g.kernel[axis], g.padding[axis], attrs["count_include_pad"])
        total = count if total is None else b.mul(total, count)
    return b.sitofp(total, ty)


@lowers("max_pool", run_time_extents=True)
def lower_max_pool(lowering: Lowering, node: Node) -> None:
    _emit_forward(lowering, node, "max")


@lowers("avg_pool", run_time_extents=True)
def lower_avg_pool(lowering: Lowering, node: Node) -> None:
    _emit_forward(lowering, node, "avg")


# ---------------------------------------------------------------------------------------------
# Gradients


def _unpredictable(b: ir.IRBuilder, condition, x, y) -> ir.Value:
    """`select` marked unpredictable: data-dependent argmax choices must stay conditional moves (as
    branches they would mispredict on most windows)."""
    chosen = b.select(condition, x, y)
    chosen.set_metadata("unpredictable", b.module.add_metadata([]))
    return chosen


UNROLL = 64          # largest window whose argmax is computed unrolled (as a tree)


def _winner(b: ir.IRBuilder, left: tuple, right: tuple) -> tuple:
    """The winner of two adjacent parts of a window, each given as (its winner, where): the right
    one if it is NaN (the last NaN wins) or greater than the left one, else the left one (of equal
    maxima the first wins). Scalars, or vectors of windows lane by lane."""
    take = b.or_(b.fcmp_unordered("uno", right[0], right[0]), b.fcmp_ordered(">", right[0], left[0]))
    return _unpredictable(b, take, right[0], left[0]), _unpredictable(b, take, right[1], left[1])


def _tree_argmax(b: ir.IRBuilder, xs, in_base, origin, offsets: list) -> ir.Value:
    """Where (offset from the plane) the winner of a window wholly inside the input is (its last NaN,
    else its first maximum); the window's first element is `origin` (offset from the plane at
    `in_base`), `offsets` are its taps' offsets from there (ints or i64 values), in window order. A balanced tree of
    `_winner` over adjacent parts keeps the dependency chain short."""
    first = b.gep(xs, [b.add(in_base, origin)])
    parts = [(b.load(b.gep(first, [as_i64(offset)])), as_i64(offset)) for offset in offsets]
    while len(parts) > 1:
        parts = [_winner(b, parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return b.add(origin, parts[0][1])


def _chain_argmax(b: ir.IRBuilder, g: _Geometry, xs, in_base, starts: list, ranges: list) -> ir.Value:
    """Where (offset from the plane) the gradient of a window clipped by the input's bounds goes, or
    -1 if no tap is inside: its last NaN, else its first maximum, else (all -inf) its first tap."""
    def visit(taps, values):
        best, found = values
        index = i64(0)
        for axis, t in enumerate(taps):
            spot = b.add(starts[axis], b.mul(t, i64(g.dilation[axis])))
            index = b.add(index, b.mul(spot, as_i64(g.in_strides[axis])))
        value = b.load(b.gep(xs, [b.add(in_base, index)]))
        # the first tap, then any NaN or a value greater than the best so far
        better = b.or_(b.fcmp_unordered("uno", value, value), b.fcmp_ordered(">", value, best))
        take = b.or_(better, b.icmp_signed("<", found, i64(0)))
        return [_unpredictable(b, take, value, best), _unpredictable(b, take, index, found)]

    initial = [ir.Constant(xs.type.pointee, -math.inf), i64(-1)]
    return _nested_taps(b, ranges, initial, visit)[1]


def _disjoint_windows(g: _Geometry) -> bool:
    """Whether the windows tile the input exactly, without gaps or overlaps (kernel = stride, no
    padding or dilation, the input a whole number of windows: a UNet's 2 x 2 x 2 pool), 2 wide along
    w, at concrete sizes: every input element is then in exactly one window."""
    if any(symbolic.is_symbolic(n) for n in g.in_sp + g.out_sp):
        return False
    return (tuple(g.kernel) == tuple(g.stride) and g.kernel[-1] == 2 and not any(g.padding)
            and all(d == 1 for d in g.dilation)
            and all(o * k == n for o, k, n in zip(g.out_sp, g.kernel, g.in_sp)))


def _emit_disjoint_grad(lowering: Lowering, node: Node, g: _Geometry) -> None:
    """max_pool_grad of windows that tile the input (`_disjoint_windows`): each input element gets
    its window's gradient or 0, so a work item (one output row) writes its windows' inputs directly,
    no scratch, no accumulation. Along w it takes `lanes` outputs at a time: per window row, one load
    of the 2 x lanes inputs split into even and odd taps; the winner per lane in window order (the
    last NaN, else the first maximum, as `_winner`); then each window row's gradients interleaved
    back and stored. The row's last outputs go one at a time (vectors of one lane)."""
    x, gy = node.inputs
    dx = node.output
    element = element_type(x.dtype)
    widest = lowering.target.lanes(x.dtype)
    while widest > 1 and widest > g.out_sp[-1]:                    # a short row: narrower vectors
        widest //= 2
    outer_taps = list(itertools.product(*(range(k) for k in g.kernel[:-1])))
    rows = g.planes * math.prod(g.out_sp[:-1])

    def body(k, item):
        b = k.b
        xs, gys, dxs = k.pointer(x), k.pointer(gy), k.pointer(dx)
        plane, outer = _row_item(b, item, g.planes, g.out_sp)
        in_base = b.mul(plane, i64(g.in_plane))
        firsts = [b.add(in_base, linear_index(b, [b.add(b.mul(o, i64(kk)), i64(t)) for o, kk, t in
                                                  zip(outer, g.kernel[:-1], taps)], g.in_strides[:-1]))
                  for taps in outer_taps]                            # each window row's first input
        out_row = b.mul(item, i64(g.out_sp[-1]))
        chunks, rest = divmod(g.out_sp[-1], widest)
        with counted_loop(b, chunks, name="ov") as c:
            _disjoint_chunk(b, (xs, gys, dxs), firsts, out_row, b.mul(c, i64(widest)), widest, element)
        for o in range(chunks * widest, g.out_sp[-1]):
            _disjoint_chunk(b, (xs, gys, dxs), firsts, out_row, i64(o), 1, element)

    lowering.kernel(node.op, rows, body)


def _disjoint_chunk(b: ir.IRBuilder, pointers: tuple, firsts: list, out_row, o0, lanes: int, element) -> None:
    """Outputs o0 ... o0 + lanes - 1 of one row of `_emit_disjoint_grad`: their windows' inputs
    start at `firsts` (one per window row) + 2 * o0."""
    xs, gys, dxs = pointers
    index_type = ir.VectorType(ir.IntType(32), lanes)
    vtype = ir.VectorType(element, lanes)
    winner = (ir.Constant(vtype, [-math.inf] * lanes), ir.Constant(index_type, [0] * lanes))
    starts = [b.add(first, b.mul(o0, i64(2))) for first in firsts]
    for row, start in enumerate(starts):                             # the taps in window order
        for parity, value in enumerate(_even_and_odd(b, xs, start, lanes)):
            winner = _winner(b, winner, (value, ir.Constant(index_type, [2 * row + parity] * lanes)))
    where = winner[1]
    grad = load_vector(b, gys, b.add(out_row, o0), lanes)
    zero = ir.Constant(vtype, [0.0] * lanes)
    interleave = ir.Constant(ir.VectorType(ir.IntType(32), 2 * lanes), [j // 2 + (j % 2) * lanes for j in range(2 * lanes)])
    for row, start in enumerate(starts):
        even, odd = (b.select(b.icmp_signed("==", where, ir.Constant(index_type, [2 * row + parity] * lanes)), grad, zero)
                     for parity in (0, 1))
        store_vector(b, b.shuffle_vector(even, odd, interleave), dxs, start)


@lowers("max_pool_grad", run_time_extents=True)
def lower_max_pool_grad(lowering: Lowering, node: Node) -> None:
    x, gy = node.inputs
    dx = node.output
    symbolic_g = _Geometry(node, x.shape, gy.shape)
    if _disjoint_windows(symbolic_g):
        _emit_disjoint_grad(lowering, node, symbolic_g)
        return
    dtype = element_type(x.dtype)
    widen = dtype != F64                                    # float32: accumulate in float64 scratch
    scratch = lowering.scratch(symbolic_g.planes * symbolic_g.in_plane * 8) if widen else None
    window = [sum(t * d * st for t, d, st in zip(taps, symbolic_g.dilation, symbolic_g.in_strides))
              for taps in itertools.product(*(range(k) for k in symbolic_g.kernel))]   # window order

    def body(k, plane):
        b, g = k.b, symbolic_g.sized(k.size)
        offsets = [k.size(offset) for offset in window]
        xs, gys, dxs = k.pointer(x), k.pointer(gy), k.pointer(dx)
        sums = k.scratch_pointer(scratch, F64) if widen else dxs
        in_base = b.mul(plane, as_i64(g.in_plane))
        out_base = b.mul(plane, as_i64(g.out_plane))
        with counted_loop(b, as_i64(g.in_plane), name="z") as i:
            b.store(ir.Constant(sums.type.pointee, 0.0), b.gep(sums, [b.add(in_base, i)]))
        with contextlib.ExitStack() as outputs:
            outer = [outputs.enter_context(counted_loop(b, as_i64(g.out_sp[axis]), name=f"o{axis}"))
                     for axis in range(g.rank - 1)]
            out_row = b.add(out_base, linear_index(b, outer, g.out_strides[:-1]))

            def position(o, starts, ranges, whole):
                if whole and len(offsets) <= UNROLL:
                    found = _tree_argmax(b, xs, in_base, linear_index(b, starts, g.in_strides), offsets)
                else:
                    found = _chain_argmax(b, g, xs, in_base, starts, ranges)
                with b.if_then(b.icmp_signed(">=", found, i64(0))):
                    grad = b.load(b.gep(gys, [b.add(out_row, o)]))
                    if widen:
                        grad = b.fpext(grad, F64)
                    target = b.gep(sums, [b.add(in_base, found)])
                    b.store(b.fadd(b.load(target), grad), target)

            _emit_row(b, g, outer, position)
        if widen:
            with counted_loop(b, as_i64(g.in_plane), name="w") as i:
                element = b.add(in_base, i)
                b.store(b.fptrunc(b.load(b.gep(sums, [element])), dtype), b.gep(dxs, [element]))

    lowering.kernel(node.op, symbolic_g.planes, body)


@lowers("avg_pool_grad", run_time_extents=True)
def lower_avg_pool_grad(lowering: Lowering, node: Node) -> None:
    gy, dx = node.inputs[0], node.output
    symbolic_g = _Geometry(node, dx.shape, gy.shape)
    attrs, dtype = node.attrs, element_type(dx.dtype)
    override = attrs["divisor_override"]
    rows = symbolic_g.planes * math.prod(symbolic_g.in_sp[:-1])
    last = symbolic_g.rank - 1

    def taps_of(b, g, i, axis):
        """(i + p, and the kernel offsets t as (from, to, step s)) of the windows o = (i+p-t)/s that
        hold input index i: t = i + p (mod s), 0 <= t < k and 0 <= o < out."""
        k, s, p, m = g.kernel[axis], g.stride[axis], g.padding[axis], g.out_sp[axis]
        q = b.add(i, i64(p))
        lo = _max(b, b.sub(q, as_i64(_times(b, _sub(b, m, 1), s))), i64(0))
        first = lo if s == 1 else b.add(lo, b.urem(b.sub(q, lo), i64(s)))
        return q, (first, _min(b, b.add(q, i64(1)), i64(k)), s)

    def body(k, item):
        b, g = k.b, symbolic_g.sized(k.size)
        gys, dxs = k.pointer(gy), k.pointer(dx)
        plane, outer = _row_item(b, item, g.planes, g.in_sp)
        out_base = b.mul(plane, as_i64(g.out_plane))
        out_row = b.mul(item, as_i64(g.in_sp[-1]))
        spans = [taps_of(b, g, i, axis) for axis, i in enumerate(outer)]
        with counted_loop(b, as_i64(g.in_sp[-1]), name="i") as i:
            all_spans = spans + [taps_of(b, g, i, last)]

            def visit(taps, values):
                index, count = out_base, None
                for axis, t in enumerate(taps):
                    q, s = all_spans[axis][0], g.stride[axis]
                    o = b.sub(q, t) if s == 1 else b.udiv(b.sub(q, t), i64(s))
                    index = b.add(index, b.mul(o, as_i64(g.out_strides[axis])))
                    if override is None:
                        start = b.sub(b.mul(o, i64(s)), i64(g.padding[axis]))
                        c = _count(b, start, g.in_sp[axis], g.kernel[axis], g.padding[axis], attrs["count_include_pad"])
                        count = c if count is None else b.mul(count, c)
                divisor = ir.Constant(dtype, float(override)) if override is not None else b.sitofp(count, dtype)
                return [b.fadd(values[0], b.fdiv(b.load(b.gep(gys, [index])), divisor))]

            total, = _nested_taps(b, [span for _, span in all_spans], [ir.Constant(dtype, 0.0)], visit)
            b.store(total, b.gep(dxs, [b.add(out_row, i)]))

    lowering.kernel(node.op, rows, body)
