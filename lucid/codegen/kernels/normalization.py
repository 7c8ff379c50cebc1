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
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ...ir.graph import Node
from ..irgen import F64, as_i64, counted_loop, element_type, i64, linear_index, unravel
from ..lowering import Lowering, lowers
from .reduction import REASSOC, Layout, _for_outputs, _kept_base, _output_blocks, loop_nest
from .shape import RowChunks


@lowers("moments", run_time_extents=True)
def lower_moments(lowering: Lowering, node: Node) -> None:
    layout = Layout(node.inputs[0].shape, node.attrs["axes"])
    if not node.output.type.is_symbolic and node.output.type.size == 0:
        return
    (_moments_rows if layout.rows or not layout.kept else _moments_columns)(lowering, node, layout)


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
