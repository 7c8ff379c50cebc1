"""Reductions over axes: sum, mean, max, min, argmax.

The input's size-1 axes are dropped and adjacent axes of the same kind (kept or reduced) merged, so
the input is a list of axes alternating kept / reduced with known strides. Two loop orders:
- row order, when the innermost input axis is reduced: a work item is a block of output elements,
  each reduced by a loop nest whose innermost loop walks contiguous memory into a register
  accumulator (floating adds carry `reassoc` so LLVM vectorises them). A float32 sum accumulates in
  float64. When there are few outputs and a long contiguous reduction, a first kernel reduces
  chunks of it in parallel into scratch and a second one combines the partial results.
- column order, when the innermost input axis is kept: a work item is a chunk of contiguous output
  elements, accumulated in place in the output (argmax: its best values in scratch) while the loop
  nest walks the reduced axes, the innermost loop running along the contiguous output chunk (this
  is how NumPy itself reduces over outer axes, so float32 results round alike).
argmax in row order makes two passes per output: the maximum (a vectorisable reduction), then a
search for its first occurrence; in column order it keeps the best values in scratch.
Semantics follow NumPy: max/min propagate NaN, argmax returns the first maximum (the first NaN if
there is one), a sum of bool counts in int64, a sum over an empty axis is 0, mean divides the sum
by the count. Every work item writes only its own outputs (and its own slots of scratch).

Symbolic sizes: every reduction (and `moments`, normalization.py) takes them, in either order:
the layout's sizes become the call's i64 values (`Layout.sized`; ints stay ints, so a concrete
graph's code is unchanged), an output whose work is a symbolic size is its own work item, the
column chunks are computed per call (`RowChunks`), and the split path (a test on sizes) is not
taken.
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ...ir import symbolic
from ...ir.graph import Node, Value
from ..irgen import F64, I8, I64, as_i64, counted_loop, element_type, i64, linear_index, nbytes, unravel
from ..lowering import Lowering, lowers
from .elementwise import CHUNK, contiguous_strides, load
from .scalar import Scalars, evaluate
from .shape import Fill, RowChunks, constant_of, kernel_of_parts

REASSOC = ("reassoc",)
SPLIT = 8192                 # elements per partial result of a split reduction


def loop_nest(b: ir.IRBuilder, dims: list, base: ir.Value, body) -> None:
    """Call body(index) for every multi-index of `dims` [(size, stride)], index = base + sum i*stride."""
    if not dims:
        body(base)
        return
    (n, stride), rest = dims[0], dims[1:]
    with counted_loop(b, as_i64(n), name="r") as r:
        loop_nest(b, rest, linear_index(b, [r], [stride], base), body)


class Reducer:
    """How one reduction accumulates: the accumulator type, identity, step and result."""

    def __init__(self, op: str, x: Value, y: Value, count: int, wide: bool):
        self.op, self.x, self.y, self.count = op, x, y, count
        self.stored = element_type(x.dtype)
        if op in ("sum", "mean") and x.dtype.name == "bool":
            self.acc = I64
        elif op in ("sum", "mean") and x.dtype.name == "float32" and wide:
            self.acc = F64
        else:
            self.acc = self.stored
        self.floating = isinstance(self.acc, (ir.FloatType, ir.DoubleType))

    def identity(self) -> ir.Constant:
        if self.op in ("sum", "mean"):
            return ir.Constant(self.acc, 0.0 if self.floating else 0)
        low = self.op == "min"                  # the identity of min is the highest value
        if self.floating:
            return ir.Constant(self.acc, math.inf if low else -math.inf)
        if self.acc == I8:                      # bool: max is or, min is and
            return ir.Constant(I8, 1 if low else 0)
        return ir.Constant(I64, 2**63 - 1 if low else -(2**63))

    def lift(self, b: ir.IRBuilder, v: ir.Value) -> ir.Value:
        if v.type == self.acc:
            return v
        return b.fpext(v, self.acc) if self.floating else b.zext(v, self.acc)

    def step(self, s: Scalars, acc: ir.Value, v: ir.Value) -> ir.Value:
        """acc (op) v, both of the accumulator type."""
        b = s.b
        if self.op in ("sum", "mean"):
            return b.fadd(acc, v, flags=REASSOC) if self.floating else b.add(acc, v)
        if self.floating:
            return s.call("maximum" if self.op == "max" else "minimum", self.acc, acc, v)
        if self.acc == I8:
            return b.or_(acc, v) if self.op == "max" else b.and_(acc, v)
        return b.select(b.icmp_signed(">" if self.op == "max" else "<", acc, v), acc, v)

    def result(self, s: Scalars, acc: ir.Value) -> ir.Value:
        """The stored output value of an accumulator."""
        b, out = s.b, element_type(self.y.dtype)
        if self.op == "mean":
            count = self.count if isinstance(self.count, ir.Value) else None
            acc = b.fdiv(acc, b.sitofp(count, self.acc) if count is not None else ir.Constant(self.acc, float(self.count)))
        if acc.type != out:
            acc = b.fptrunc(acc, out)
        return acc


def better(b: ir.IRBuilder, v: ir.Value, best: ir.Value, dtype) -> ir.Value:
    """Whether `v` replaces `best` in a first-maximum scan (NaN beats every number, as in NumPy)."""
    if dtype.name == "bool":
        return b.icmp_unsigned(">", v, best)
    if not dtype.is_floating:
        return b.icmp_signed(">", v, best)
    nan_over_number = b.and_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", best, best))
    return b.or_(b.fcmp_ordered(">", v, best), nan_over_number)


class Layout:
    """The input's axes after dropping size-1 axes and merging neighbours of the same kind."""

    def __init__(self, shape: tuple, axes: tuple):
        strides = contiguous_strides(shape)
        merged: list = []                                 # [size, stride, reduced]
        for d, n in enumerate(shape):
            if symbolic.same(n, 1):
                continue
            reduced = d in axes
            if merged and merged[-1][2] == reduced and symbolic.same(merged[-1][1], n * strides[d]):
                merged[-1][0] *= n
                merged[-1][1] = strides[d]
            else:
                merged.append([n, strides[d], reduced])
        self.kept = [(n, s) for n, s, r in merged if not r]
        self.reduced = [(n, s) for n, s, r in merged if r]
        self.rows = bool(merged) and merged[-1][2]        # innermost axis reduced: row order
        self.outputs = math.prod(n for n, _ in self.kept)
        self.count = math.prod(n for n, _ in self.reduced)

    def sized(self, size) -> "Layout":
        """This layout with every size passed through `size` (`KernelBuilder.size`: the symbolic
        ones become this call's i64 values; ints stay)."""
        copy = object.__new__(Layout)
        copy.kept = [(size(n), size(s)) for n, s in self.kept]
        copy.reduced = [(size(n), size(s)) for n, s in self.reduced]
        copy.rows, copy.outputs, copy.count = self.rows, size(self.outputs), size(self.count)
        return copy


def _empty(size) -> bool:
    return not symbolic.is_symbolic(size) and size == 0


@lowers("sum", "mean", "max", "min", "argmax", run_time_extents=True)
def lower_reduction(lowering: Lowering, node: Node, element=None) -> None:
    """`node`'s kernels; `element(k, s, index, o)`, if given, computes the input element `index`
    (of output `o`) instead of loading it (a fused chain's value: row order then, `_reduce_rows`
    being right for any layout, the column order only faster)."""
    x, y = node.inputs[0], node.output
    if _empty(y.type.size):
        return
    if _empty(x.type.size):                               # a sum over an empty axis
        kernel_of_parts(lowering, node.op, [Fill(y, constant_of(y.dtype, 0), y.type.size)])
        return
    layout = Layout(x.shape, node.attrs["axes"])
    if node.op == "argmax":
        (_argmax_rows if layout.rows or not layout.kept or not layout.reduced else _argmax_columns)(
            lowering, node, layout)
    elif not symbolic.is_symbolic(x.shape) and layout.rows and layout.outputs < 16 and \
            layout.reduced[-1][0] >= 2 * SPLIT:
        _reduce_split(lowering, node, layout, element)
    elif layout.rows or not layout.kept or element is not None:
        _reduce_rows(lowering, node, layout, element)
    else:
        _reduce_columns(lowering, node, layout)


def lower_reduction_of_chain(lowering: Lowering, node: Node, chain: list, output: Value) -> None:
    """`node`, a sum in row order (the fusion pass checked), of the value of the elementwise `chain`
    (whose outside operands have the chain's shape, one value per output, or one element), computed
    where the sum would load it; the result goes to `output`."""
    x = node.inputs[0]

    def element(k, s, index, o):
        """The chain's value at `index`: an operand of the chain's shape read there, another (one
        value per output, or one element) at the output's index."""
        def operand(n, i):
            v = n.inputs[i]
            return load(k, s, v, index if symbolic.same(v.shape, x.shape) else o)
        return evaluate(s, chain, operand)[x]

    reduction = Node(node.op, [x], node.attrs, node.scope)
    reduction.output = output
    lower_reduction(lowering, reduction, element)


def _output_blocks(outputs, work_per_output) -> tuple:
    """(outputs per work item, items) so that an item has about CHUNK elements of work (one output
    per item when its work is a symbolic size)."""
    group = 1 if symbolic.is_symbolic(work_per_output) else max(1, CHUNK // max(work_per_output, 1))
    return group, symbolic.ceil_div(outputs, group)


def _for_outputs(k, item, outputs, group: int, body) -> None:
    b = k.b
    first = b.mul(item, i64(group))
    last = b.add(first, i64(group))
    last = b.select(b.icmp_signed("<", last, as_i64(outputs)), last, as_i64(outputs))
    with counted_loop(b, last, first, name="out") as o:
        body(o)


def _kept_base(b, layout: Layout, o: ir.Value) -> ir.Value:
    """Input offset of the kept multi-index of output element `o`."""
    if not layout.kept:
        return i64(0)
    return linear_index(b, unravel(b, o, tuple(n for n, _ in layout.kept)), [s for _, s in layout.kept])


def _element_of(x: Value, element):
    """`element(k, s, index, o)`, the input element `index` of the reduction into output `o`: the
    given function (a fused chain's value), else `x`'s element as stored."""
    return element or (lambda k, s, index, o: k.b.load(k.b.gep(k.pointer(x), [index])))


def _reduce_rows(lowering: Lowering, node: Node, layout: Layout, element=None) -> None:
    x, y = node.inputs[0], node.output
    group, items = _output_blocks(layout.outputs, layout.count)
    element = _element_of(x, element)

    def body(k, item):
        sized = layout.sized(k.size)
        reducer = Reducer(node.op, x, y, sized.count, wide=True)
        b, s = k.b, Scalars(k.b, k.module)
        acc = k.alloca(reducer.acc)
        yp = k.pointer(y)

        def output(o):
            b.store(reducer.identity(), acc)

            def step(index):
                b.store(reducer.step(s, b.load(acc), reducer.lift(b, element(k, s, index, o))), acc)

            loop_nest(b, sized.reduced, _kept_base(b, sized, o), step)
            b.store(reducer.result(s, b.load(acc)), b.gep(yp, [o]))

        _for_outputs(k, item, sized.outputs, group, output)

    lowering.kernel(node.op, items, body)


def _reduce_split(lowering: Lowering, node: Node, layout: Layout, element=None) -> None:
    """Few outputs, each a long reduction whose innermost axis is contiguous: partial results of
    SPLIT-element pieces of the innermost axis in parallel, then one combining pass."""
    x, y = node.inputs[0], node.output
    element = _element_of(x, element)
    reducer = Reducer(node.op, x, y, layout.count, wide=True)
    inner_n = layout.reduced[-1][0]
    outer_dims = layout.reduced[:-1]
    pieces = math.ceil(inner_n / SPLIT)
    partials = layout.outputs * pieces
    offset = lowering.scratch(partials * nbytes(reducer.acc))

    def partial(k, item):
        b, s = k.b, Scalars(k.b, k.module)
        acc = k.alloca(reducer.acc)
        o, piece = b.udiv(item, i64(pieces)), b.urem(item, i64(pieces))
        start = b.mul(piece, i64(SPLIT))
        stop = b.add(start, i64(SPLIT))
        stop = b.select(b.icmp_signed("<", stop, i64(inner_n)), stop, i64(inner_n))
        b.store(reducer.identity(), acc)

        def row(base):
            with counted_loop(b, stop, start, name="j") as j:
                v = reducer.lift(b, element(k, s, b.add(base, j), o))
                b.store(reducer.step(s, b.load(acc), v), acc)

        loop_nest(b, outer_dims, _kept_base(b, layout, o), row)
        b.store(b.load(acc), b.gep(k.scratch_pointer(offset, reducer.acc), [item]))

    def combine(k, o):
        b, s = k.b, Scalars(k.b, k.module)
        acc = k.alloca(reducer.acc)
        b.store(reducer.identity(), acc)
        first = b.mul(o, i64(pieces))
        scratch = k.scratch_pointer(offset, reducer.acc)
        with counted_loop(b, i64(pieces), name="p") as p:
            b.store(reducer.step(s, b.load(acc), b.load(b.gep(scratch, [b.add(first, p)]))), acc)
        b.store(reducer.result(s, b.load(acc)), b.gep(k.pointer(y), [o]))

    lowering.kernel(node.op + "_partial", partials, partial)
    lowering.kernel(node.op + "_combine", layout.outputs, combine)


def _reduce_columns(lowering: Lowering, node: Node, layout: Layout) -> None:
    """Accumulate in place in the output: the innermost (contiguous) kept axis is the inner loop."""
    x, y = node.inputs[0], node.output
    rows = RowChunks(math.prod(n for n, _ in layout.kept[:-1]), layout.kept[-1][0])

    def body(k, item):
        sized = layout.sized(k.size)
        reducer = Reducer(node.op, x, y, sized.count, wide=False)
        (inner_n, _), outer = sized.kept[-1], sized.kept[:-1]
        b, s = k.b, Scalars(k.b, k.module)
        xp, yp = k.pointer(x), k.pointer(y)
        acc_p = yp                       # the accumulator type is the output's element type

        def row_body(row, start, stop):
            in_base = linear_index(b, unravel(b, row, tuple(n for n, _ in outer)), [st for _, st in outer]) \
                if outer else i64(0)
            out_base = b.mul(row, as_i64(inner_n))
            with counted_loop(b, stop, start, name="j") as j:
                b.store(reducer.identity(), b.gep(acc_p, [b.add(out_base, j)]))

            def step(index):
                with counted_loop(b, stop, start, name="j") as j:
                    where = b.gep(acc_p, [b.add(out_base, j)])
                    v = reducer.lift(b, b.load(b.gep(xp, [b.add(index, j)])))
                    b.store(reducer.step(s, b.load(where), v), where)

            loop_nest(b, sized.reduced, in_base, step)
            if node.op == "mean":
                with counted_loop(b, stop, start, name="j") as j:
                    where = b.gep(acc_p, [b.add(out_base, j)])
                    b.store(reducer.result(s, b.load(where)), where)

        rows.emit(k, item, row_body)

    lowering.kernel(node.op, rows.items, body)


def _argmax_rows(lowering: Lowering, node: Node, layout: Layout) -> None:
    """One output at a time, in two passes over its (single, possibly strided) reduced axis: the
    maximum (a vectorisable reduction), then a search for its first occurrence (or the first NaN)."""
    x, y = node.inputs[0], node.output
    group, items = _output_blocks(layout.outputs, layout.reduced[0][0] if layout.reduced else 1)

    def body(k, item):
        sized = layout.sized(k.size)
        n, stride = sized.reduced[0] if sized.reduced else (1, 0)
        reducer = Reducer("max", x, y, n, wide=False)
        b, s = k.b, Scalars(k.b, k.module)
        peak = k.alloca(reducer.acc, name="peak")
        xp = k.pointer(x)

        def output(o):
            base = _kept_base(b, sized, o)
            b.store(reducer.identity(), peak)
            with counted_loop(b, as_i64(n), name="r") as r:
                v = b.load(b.gep(xp, [linear_index(b, [r], [stride], base)]))
                b.store(reducer.step(s, b.load(peak), v), peak)
            m = b.load(peak)
            if x.dtype.is_floating:
                m_is_nan = b.fcmp_unordered("uno", m, m)

                def hit(v):
                    return b.select(m_is_nan, b.fcmp_unordered("uno", v, v), b.fcmp_ordered("==", v, m))
            else:
                def hit(v):
                    return b.icmp_unsigned("==", v, m)
            found = _first(b, n, lambda r: hit(b.load(b.gep(xp, [linear_index(b, [r], [stride], base)]))))
            b.store(found, b.gep(k.pointer(y), [o]))

        _for_outputs(k, item, sized.outputs, group, output)

    lowering.kernel("argmax", items, body)


def _first(b: ir.IRBuilder, n, predicate) -> ir.Value:
    """The first r in [0, n) with predicate(r), else 0 (a loop that exits early; n an int or an i64)."""
    before = b.block
    head, check, advance, done = (b.append_basic_block(f"search.{part}") for part in ("head", "check", "next", "done"))
    b.branch(head)
    b.position_at_end(head)
    r = b.phi(I64, "r")
    r.add_incoming(i64(0), before)
    b.cbranch(b.icmp_signed("<", r, as_i64(n)), check, done)
    b.position_at_end(check)
    b.cbranch(predicate(r), done, advance)
    b.position_at_end(advance)
    r.add_incoming(b.add(r, i64(1)), advance)
    b.branch(head)
    b.position_at_end(done)
    return b.select(b.icmp_signed("<", r, as_i64(n)), r, i64(0))


def _argmax_columns(lowering: Lowering, node: Node, layout: Layout) -> None:
    """The reduced axis is outer: scan it for a contiguous chunk of outputs at once, keeping the
    best values in scratch and their indices in the output."""
    x, y = node.inputs[0], node.output
    rows = RowChunks(math.prod(m for m, _ in layout.kept[:-1]), layout.kept[-1][0])
    element = element_type(x.dtype)
    offset = lowering.scratch(layout.outputs * x.dtype.numpy.itemsize)

    def body(k, item):
        sized = layout.sized(k.size)
        (n, stride), = sized.reduced
        (inner_n, _), outer = sized.kept[-1], sized.kept[:-1]
        b = k.b
        xp, yp, bp = k.pointer(x), k.pointer(y), k.scratch_pointer(offset, element)

        def row_body(row, start, stop):
            in_base = linear_index(b, unravel(b, row, tuple(m for m, _ in outer)), [st for _, st in outer]) \
                if outer else i64(0)
            out_base = b.mul(row, as_i64(inner_n))
            with counted_loop(b, stop, start, name="j") as j:
                b.store(b.load(b.gep(xp, [b.add(in_base, j)])), b.gep(bp, [b.add(out_base, j)]))
                b.store(i64(0), b.gep(yp, [b.add(out_base, j)]))
            with counted_loop(b, as_i64(n), 1, name="r") as r:
                base = linear_index(b, [r], [stride], in_base)
                with counted_loop(b, stop, start, name="j") as j:
                    v = b.load(b.gep(xp, [b.add(base, j)]))
                    best_p, index_p = b.gep(bp, [b.add(out_base, j)]), b.gep(yp, [b.add(out_base, j)])
                    best = b.load(best_p)
                    replace = better(b, v, best, x.dtype)
                    b.store(b.select(replace, v, best), best_p)
                    b.store(b.select(replace, r, b.load(index_p)), index_p)

        rows.emit(k, item, row_body)

    lowering.kernel("argmax", rows.items, body)

