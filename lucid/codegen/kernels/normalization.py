"""The statistics of the norms: `moments`, the mean and biased variance of its input over its
reduced axes, in one pass over the data.

The input's axes are merged as for the other reductions (`reduction.Layout`), and each output's
elements are read once, shifted by the first of them, s: the loops accumulate sum(d) and sum(d^2),
d = x - s, in float64, and mean = s + sum(d)/K, var = sum(d^2)/K - (sum(d)/K)^2. The shift is one of
the values, so (s - mean)^2 <= K var: the subtraction cancels at most log10(K) of float64's 16
digits, and data far from zero (x = 1000 + N(0, 1e-2)) keeps float32-accurate statistics.
Two loop orders, as for the reductions:
- rows, when the innermost input axis is reduced (group, instance and layer norm's rows; batch
  norm's (N, C, spatial) input, N contiguous runs per channel): a work item is a block of outputs
  (about CHUNK elements of work), each accumulated in registers by a loop nest whose innermost loop
  walks contiguous memory with reassociable adds (LLVM vectorises it into several partial sums);
- columns, when the innermost input axis is kept (batch norm on (N, C)): a work item is a chunk of
  contiguous outputs, whose two sums accumulate in float64 scratch while the loop nest walks the
  reduced axes, the innermost loop running along the contiguous chunk.
Symbolic sizes: both orders take them, as the reductions do (`Layout.sized`).
A third way: when the conv storing the input summed its rows as it stored them (`RowSums`, for
outputs too large to stay in cache), `_moments_of_rows` combines the rows' means and squared
deviations (Chan's combination, float64) and the input is not read again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import llvmlite.ir as ir

from ...ir import symbolic
from ...ir.graph import Node, Value
from ..irgen import F64, as_i64, counted_loop, element_type, float_suffix, i64, intrinsic, linear_index, unravel
from ..lowering import Lowering, lowers
from .reduction import REASSOC, Layout, _for_outputs, _kept_base, _output_blocks, loop_nest
from .shape import RowChunks


@dataclass(frozen=True)
class RowStatistics:
    """Where the output's rows' sums go as the rows are stored: at workspace `offset`, for each row
    (n, c, d, h) of the output (rows of `width` points), two float64 values, the row's mean and its
    sum of squared deviations from it (each summed from the row's first value, or 0 when that is
    not finite, as `moments` sums from its first value). A norm's `moments` of the output combines
    them (`_moments_of_rows`) instead of reading the output again from memory."""

    offset: int
    rows: int
    width: int

    @staticmethod
    def reserve(lowering: Lowering, y: Value) -> "RowStatistics":
        """The sums of `y`'s rows, as the node's first scratch (where `leave_in_workspace` leaves it)."""
        rows, width = math.prod(y.shape[:-1]), y.shape[-1]          # rows (n, c, d, h) of W points
        offset = lowering.scratch(2 * rows * 8)
        assert offset == 0, "the rows' sums must be the node's first scratch"
        return RowStatistics(offset, rows, width)


class RowSums:
    """A row's sum of d = x - s and of d^2 as a conv stores it (`conv/unpack.py`), s its first value
    (0 if that is not finite: a non-finite shift would turn an infinity into NaN where the pass over
    the data keeps it), in the element type (a row is at most a few hundred values, so float32 sums
    of deviations keep what the data holds, in full-width vectors), stored as float64 for the
    combination (`_moments_of_rows`)."""

    def __init__(self, k, first: ir.Value):
        b = self.b = k.b
        element = first.type
        fabs = intrinsic(k.module, f"llvm.fabs.{float_suffix(element)}", element, [element])
        finite = b.fcmp_ordered("<", b.call(fabs, [first]), ir.Constant(element, math.inf))
        self.origin = b.select(finite, first, ir.Constant(element, 0.0))
        self.total, self.squares = k.alloca(element, name="row_total"), k.alloca(element, name="row_squares")
        for slot in (self.total, self.squares):
            b.store(ir.Constant(element, 0.0), slot)

    def add(self, value: ir.Value) -> None:
        b = self.b
        d = b.fsub(value, self.origin)
        b.store(b.fadd(b.load(self.total), d, flags=REASSOC), self.total)
        b.store(b.fadd(b.load(self.squares), b.fmul(d, d), flags=REASSOC), self.squares)

    def store(self, k, statistics: RowStatistics, row: ir.Value, width) -> None:
        """The row's mean and sum of squared deviations, in float64, at its place in `statistics`."""
        b = self.b
        count = b.sitofp(as_i64(width), F64)
        total = _wide(b, b.load(self.total))
        mean_shift = b.fdiv(total, count)
        deviations = b.fsub(_wide(b, b.load(self.squares)), b.fmul(total, mean_shift))
        sums = k.scratch_pointer(statistics.offset, F64)
        at = b.mul(row, i64(2))
        b.store(b.fadd(_wide(b, self.origin), mean_shift), b.gep(sums, [at]))
        b.store(deviations, b.gep(sums, [b.add(at, i64(1))]))


@lowers("moments", run_time_extents=True)
def lower_moments(lowering: Lowering, node: Node) -> None:
    layout = Layout(node.inputs[0].shape, node.attrs["axes"])
    if not node.output.type.is_symbolic and node.output.type.size == 0:
        return
    sums = lowering.left_in_workspace(node.inputs[0])
    if isinstance(sums, RowStatistics) and _over_rows(node):
        _moments_of_rows(lowering, node, sums)
        return
    (_moments_rows if layout.rows or not layout.kept else _moments_columns)(lowering, node, layout)


def row_statistics_values(graph) -> frozenset:
    """The ids of the values whose `moments` a conv storing them can serve from its rows' sums
    (`_over_rows`: an instance or batch norm's statistics)."""
    return frozenset(id(n.inputs[0]) for n in graph.nodes if n.op == "moments" and _over_rows(n))


def _over_rows(node: Node) -> bool:
    """Whether a `moments` node reduces its input, of concrete sizes and 3 to 5 axes, over every
    spatial axis and maybe the batch, never the channels: each output is whole rows (n, c, d, h)."""
    x = node.inputs[0]
    rank, axes = len(x.shape), set(node.attrs["axes"])
    spatial = set(range(2, rank))
    return 3 <= rank <= 5 and not symbolic.is_symbolic(x.shape) and axes in (spatial, spatial | {0})


def _moments_of_rows(lowering: Lowering, node: Node, sums: RowStatistics) -> None:
    """The mean and variance of each output from the rows' means m_r and sums of squared deviations
    M_r that the conv storing the input left (`conv/unpack.py`): rows of W points, R of them per
    output, mean = sum(m_r) / R and M = sum(M_r) + W sum((m_r - mean)^2), var = M / (R W) (Chan's
    combination, in float64). A work item is one output."""
    x, y = node.inputs[0], node.output
    batch, channels = x.shape[:2]
    rows = sums.rows // (batch * channels)                     # per (n, c)
    images = batch if 0 in node.attrs["axes"] else 1
    outputs = channels if images > 1 else batch * channels
    count = images * rows
    sized = Layout(x.shape, node.attrs["axes"])

    def body(k, o):
        b = k.b
        data = k.scratch_pointer(sums.offset, F64)

        def each_row(step):
            with counted_loop(b, images, name="image") as n, counted_loop(b, rows, name="row") as r:
                first = b.mul(b.add(b.mul(n, i64(channels)), o), i64(rows)) if images > 1 else b.mul(o, i64(rows))
                step(b.mul(b.add(first, r), i64(2)))

        total, squares = k.alloca(F64, name="means"), k.alloca(F64, name="deviations")
        for slot in (total, squares):
            b.store(ir.Constant(F64, 0.0), slot)
        each_row(lambda at: b.store(b.fadd(b.load(total), b.load(b.gep(data, [at])), flags=REASSOC), total))
        mean = b.fdiv(b.load(total), ir.Constant(F64, float(count)))
        width = ir.Constant(F64, float(sums.width))

        def deviations(at):
            apart = b.fsub(b.load(b.gep(data, [at])), mean)
            within = b.load(b.gep(data, [b.add(at, i64(1))]))
            b.store(b.fadd(b.load(squares), b.fadd(within, b.fmul(width, b.fmul(apart, apart))), flags=REASSOC), squares)

        each_row(deviations)
        _store_statistics(k, y, sized, o, mean, ir.Constant(F64, 0.0), b.load(squares))

    lowering.kernel("moments_of_rows", outputs, body)


def _moments_rows(lowering: Lowering, node: Node, layout: Layout) -> None:
    x, y = node.inputs[0], node.output
    group, items = _output_blocks(layout.outputs, layout.count)

    def body(k, item):
        b = k.b
        sized = layout.sized(k.size)
        xp = k.pointer(x)
        total, squares = k.alloca(F64, name="total"), k.alloca(F64, name="squares")

        def output(o):
            base = _kept_base(b, sized, o)
            shift = _wide(b, b.load(b.gep(xp, [base])))
            for acc in (total, squares):
                b.store(ir.Constant(F64, 0.0), acc)

            def step(index):
                d = b.fsub(_wide(b, b.load(b.gep(xp, [index]))), shift)
                b.store(b.fadd(b.load(total), d, flags=REASSOC), total)
                b.store(b.fadd(b.load(squares), b.fmul(d, d), flags=REASSOC), squares)

            loop_nest(b, sized.reduced, base, step)
            _store_statistics(k, y, sized, o, shift, b.load(total), b.load(squares))

        _for_outputs(k, item, sized.outputs, group, output)

    lowering.kernel("moments", items, body)


def _moments_columns(lowering: Lowering, node: Node, layout: Layout) -> None:
    x, y = node.inputs[0], node.output
    rows = RowChunks(math.prod(n for n, _ in layout.kept[:-1]), layout.kept[-1][0])
    sums = lowering.scratch(2 * layout.outputs * 8)          # sum(d), then sum(d^2), per output

    def body(k, item):
        b = k.b
        sized = layout.sized(k.size)
        (inner_n, _), outer = sized.kept[-1], sized.kept[:-1]
        xp, scratch = k.pointer(x), k.scratch_pointer(sums, F64)

        def row_body(row, start, stop):
            in_base = linear_index(b, unravel(b, row, tuple(n for n, _ in outer)), [st for _, st in outer]) \
                if outer else i64(0)
            out_base = b.mul(row, as_i64(inner_n))

            def columns(body_of):
                with counted_loop(b, stop, start, name="j") as j:
                    o = b.add(out_base, j)
                    body_of(j, o, b.gep(scratch, [o]), b.gep(scratch, [b.add(o, as_i64(sized.outputs))]))

            shift_of = lambda j: _wide(b, b.load(b.gep(xp, [b.add(in_base, j)])))
            columns(lambda j, o, total, squares: [b.store(ir.Constant(F64, 0.0), p) for p in (total, squares)])

            def step(index):
                def accumulate(j, o, total, squares):
                    d = b.fsub(_wide(b, b.load(b.gep(xp, [b.add(index, j)]))), shift_of(j))
                    b.store(b.fadd(b.load(total), d), total)
                    b.store(b.fadd(b.load(squares), b.fmul(d, d)), squares)
                columns(accumulate)

            loop_nest(b, sized.reduced, in_base, step)
            columns(lambda j, o, total, squares: _store_statistics(k, y, sized, o, shift_of(j), b.load(total),
                                                                   b.load(squares)))

        rows.emit(k, item, row_body)

    lowering.kernel("moments", rows.items, body)


def _store_statistics(k, y, layout: Layout, o, shift, total, squares) -> None:
    """y[0][o] = the mean, y[1][o] = the biased variance, from the sums of d = x - shift (the
    layout's sizes ints or this call's i64 values)."""
    b = k.b
    count = b.sitofp(layout.count, F64) if isinstance(layout.count, ir.Value) else ir.Constant(F64, float(layout.count))
    offset = b.fdiv(total, count)
    var = b.fsub(b.fdiv(squares, count), b.fmul(offset, offset))
    var = b.select(b.fcmp_ordered("<", var, ir.Constant(F64, 0.0)), ir.Constant(F64, 0.0), var)
    stored = element_type(y.dtype)
    for k_th, value in enumerate((b.fadd(shift, offset), var)):
        narrowed, yp = _narrow(b, value, stored), k.pointer(y)
        at = b.add(o, layout.outputs if k_th else i64(0)) if isinstance(layout.outputs, ir.Value) \
            else b.add(o, i64(k_th * layout.outputs))
        b.store(narrowed, b.gep(yp, [at]))


def _wide(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    return v if v.type == F64 else b.fpext(v, F64)


def _narrow(b: ir.IRBuilder, v: ir.Value, stored: ir.Type) -> ir.Value:
    return v if stored == F64 else b.fptrunc(v, stored)
