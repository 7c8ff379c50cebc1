"""softmax and log_softmax along any axis, as the reference computes them:
    z = x - max(x), total = sum(exp(z)), softmax = exp(z) / total, log_softmax = z - log(total)
(max propagates NaN; a 0-d input is its own axis).

The input is seen as (outer, n, inner) around the axis. With inner == 1 a work item is a block of
rows, each reduced with contiguous loops (max, then sum of exp writing exp(z) to the output, then
the division). With inner > 1 a work item is a chunk of contiguous inner positions of one outer
index, whose running maxima and totals live in scratch, and each pass walks the axis with the
chunk as its contiguous inner loop.

Symbolic sizes: both paths take them; the column path's scratch is then sized per call, and a row
of symbolic length is a work item of its own.
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ...ir import symbolic
from ...ir.graph import Node
from ..irgen import counted_loop, element_type, i64
from ..lowering import Lowering, lowers
from .reduction import REASSOC
from .elementwise import CHUNK
from .scalar import Scalars
from .shape import RowChunks


def _split(node: Node) -> tuple:
    """(outer, n, inner): the input's sizes before, along and after the axis."""
    x = node.inputs[0]
    shape = x.shape or (1,)
    axis = node.attrs["axis"] if x.shape else 0
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


@lowers("softmax", "log_softmax", run_time_extents=True)
def lower_softmax(lowering: Lowering, node: Node) -> None:
    outer, n, inner = _split(node)
    if not node.inputs[0].type.is_symbolic and node.inputs[0].type.size == 0:
        return
    (_rows if symbolic.same(inner, 1) else _columns)(lowering, node, outer, n, inner)


def _rows(lowering: Lowering, node: Node, outer: int, n: int, inner: int) -> None:
    x, y = node.inputs[0], node.output
    ty = element_type(x.dtype)
    whole_rows = symbolic.is_symbolic(n)           # a row per item (its length known at run time only)
    rows = None if whole_rows else RowChunks(outer, n, max(CHUNK, n))      # whole rows only
    log = node.op == "log_softmax"

    def body(k, item):
        b, s = k.b, Scalars(k.b, k.module)
        xp, yp = k.pointer(x), k.pointer(y)
        peak, total = k.alloca(ty, name="peak"), k.alloca(ty, name="total")

        def row_body(row, start, stop):
            base = b.mul(row, k.extent(n))
            b.store(ir.Constant(ty, -math.inf), peak)
            with counted_loop(b, k.extent(n), name="i") as i:
                b.store(s.call("maximum", ty, b.load(peak), b.load(b.gep(xp, [b.add(base, i)]))), peak)
            m = b.load(peak)
            b.store(ir.Constant(ty, 0.0), total)
            with counted_loop(b, k.extent(n), name="i") as i:
                e = s.exp(b.fsub(b.load(b.gep(xp, [b.add(base, i)])), m))
                if not log:
                    b.store(e, b.gep(yp, [b.add(base, i)]))
                b.store(b.fadd(b.load(total), e, flags=REASSOC), total)
            t = b.load(total)
            scale = s.call("log", ty, t) if log else t
            with counted_loop(b, k.extent(n), name="i") as i:
                where = b.gep(yp, [b.add(base, i)])
                if log:
                    z = b.fsub(b.load(b.gep(xp, [b.add(base, i)])), m)
                    b.store(b.fsub(z, scale), where)
                else:
                    b.store(b.fdiv(b.load(where), scale), where)

        if whole_rows:
            row_body(item, None, None)
        else:
            rows.emit(k, item, row_body)

    lowering.kernel(node.op, outer if whole_rows else rows.items, body)


def _columns(lowering: Lowering, node: Node, outer: int, n: int, inner: int) -> None:
    x, y = node.inputs[0], node.output
    ty = element_type(x.dtype)
    rows = RowChunks(outer, inner)
    log = node.op == "log_softmax"
    size = outer * inner * x.dtype.numpy.itemsize
    peaks, totals = lowering.scratch(size), lowering.scratch(size)

    def body(k, item):
        b, s = k.b, Scalars(k.b, k.module)
        xp, yp = k.pointer(x), k.pointer(y)
        pp, tp = k.scratch_pointer(peaks, ty), k.scratch_pointer(totals, ty)

        def row_body(row, start, stop):
            base, stats = b.mul(row, k.extent(n * inner)), b.mul(row, k.extent(inner))

            def over_axis(fn):
                with counted_loop(b, k.extent(n), name="i") as i:
                    line = b.add(base, b.mul(i, k.extent(inner)))
                    with counted_loop(b, stop, start, name="j") as j:
                        fn(b.add(line, j), b.gep(pp, [b.add(stats, j)]), b.gep(tp, [b.add(stats, j)]))

            with counted_loop(b, stop, start, name="j") as j:
                b.store(ir.Constant(ty, -math.inf), b.gep(pp, [b.add(stats, j)]))
                b.store(ir.Constant(ty, 0.0), b.gep(tp, [b.add(stats, j)]))

            def find_peak(index, peak, total):
                b.store(s.call("maximum", ty, b.load(peak), b.load(b.gep(xp, [index]))), peak)

            def add_exp(index, peak, total):
                e = s.exp(b.fsub(b.load(b.gep(xp, [index])), b.load(peak)))
                if not log:
                    b.store(e, b.gep(yp, [index]))
                b.store(b.fadd(b.load(total), e), total)

            def write(index, peak, total):
                where = b.gep(yp, [index])
                if log:
                    z = b.fsub(b.load(b.gep(xp, [index])), b.load(peak))
                    b.store(b.fsub(z, b.load(total)), where)
                else:
                    b.store(b.fdiv(b.load(where), b.load(total)), where)

            over_axis(find_peak)
            over_axis(add_exp)
            if log:
                with counted_loop(b, stop, start, name="j") as j:
                    where = b.gep(tp, [b.add(stats, j)])
                    b.store(s.call("log", ty, b.load(where)), where)
            over_axis(write)

        rows.emit(k, item, row_body)

    lowering.kernel(node.op, rows.items, body)
