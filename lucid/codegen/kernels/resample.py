"""Resampling kernels: `resample` (one axis of F.interpolate) and its transpose `resample_grad`.

Semantics are those of the NumPy reference (`lucid/ir/ops/resample.py`), whose `resample_table`
gives, per output index o along the axis, the source indices i0[o], i1[o] and the weight w[o] of
i1; the kernels read them from constant tables (the weights in the value's dtype).

The value is seen as (outer, axis, inner): the axes before the resampled one, the axis, the axes
after it. A work item is a block of outer rows or a chunk of one row's inner elements (`RowChunks`),
over the whole resampled axis, so the innermost loop runs over contiguous inner elements:
- resample: y[o, j] = x[i0[o], j] * (1 - w[o]) + x[i1[o], j] * w[o] (nearest: a copy of x[i0[o], j]);
- resample_grad: the item zeroes its slice of dx, then adds g[o, j] * (1 - w[o]) into dx[i0[o], j]
  for every o, then g[o, j] * w[o] into dx[i1[o], j], in the reference's order. No other item
  touches that slice, so no atomics are needed.
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ...ir.graph import Node
from ...ir.ops.resample import BLENDING, resample_table
from ..irgen import counted_loop, element_type, i64
from ..lowering import Lowering, lowers
from .conv.primitives import constant_table
from .shape import RowChunks


class _Axis:
    """The (outer, axis, inner) view of a resample node and its constant tables."""

    def __init__(self, lowering: Lowering, node: Node, in_shape: tuple, out_shape: tuple):
        attrs, axis = node.attrs, node.attrs["axis"]
        self.linear = attrs["mode"] in BLENDING
        self.n, self.m = in_shape[axis], out_shape[axis]
        self.outer, self.inner = math.prod(in_shape[:axis]), math.prod(in_shape[axis + 1:])
        self.rows = RowChunks(self.outer, self.inner)
        self.dtype = element_type(node.output.dtype)
        i0, i1, w = resample_table(self.n, self.m, attrs["mode"], attrs["align_corners"], attrs["scale"])
        self.tables = [constant_table(lowering, "src0", i0)]
        if self.linear:
            self.tables += [constant_table(lowering, "src1", i1), constant_table(lowering, "weight1", w, self.dtype)]

    def entries(self, b: ir.IRBuilder, o) -> list:
        """[i0, i1, w] (or [i0]) at output index o."""
        return [b.load(b.gep(t, [i64(0), o])) for t in self.tables]

    def weights(self, b: ir.IRBuilder, w) -> tuple:
        return b.fsub(ir.Constant(self.dtype, 1.0), w), w


def _row_kernel(lowering: Lowering, node: Node, a: _Axis, row_body) -> None:
    """A kernel calling `row_body(k, x_row, y_row, start, stop)` per row of its work items, with the
    offsets of that row in the input-sized and the output-sized value and its inner element range."""

    def body(k, item):
        b = k.b

        def rows(row, start, stop):
            row_body(k, b.mul(row, i64(a.n * a.inner)), b.mul(row, i64(a.m * a.inner)), start, stop)

        a.rows.emit(k, item, rows)

    lowering.kernel(node.op, a.rows.items, body)


@lowers("resample")
def lower_resample(lowering: Lowering, node: Node) -> None:
    x, y = node.inputs[0], node.output
    a = _Axis(lowering, node, x.shape, y.shape)

    def row_body(k, x_row, y_row, start, stop):
        b, xs, ys = k.b, k.pointer(x), k.pointer(y)
        with counted_loop(b, i64(a.m), name="o") as o:
            entries = a.entries(b, o)
            src0 = b.add(x_row, b.mul(entries[0], i64(a.inner)))
            dst = b.add(y_row, b.mul(o, i64(a.inner)))
            if a.linear:
                src1 = b.add(x_row, b.mul(entries[1], i64(a.inner)))
                w0, w1 = a.weights(b, entries[2])
            with counted_loop(b, stop, start, name="j") as j:
                value = b.load(b.gep(xs, [b.add(src0, j)]))
                if a.linear:
                    other = b.load(b.gep(xs, [b.add(src1, j)]))
                    value = b.fadd(b.fmul(value, w0), b.fmul(other, w1))
                b.store(value, b.gep(ys, [b.add(dst, j)]))

    _row_kernel(lowering, node, a, row_body)


@lowers("resample_grad")
def lower_resample_grad(lowering: Lowering, node: Node) -> None:
    gy, dx = node.inputs[0], node.output
    a = _Axis(lowering, node, dx.shape, gy.shape)

    def row_body(k, x_row, y_row, start, stop):
        b, gys, dxs = k.b, k.pointer(gy), k.pointer(dx)
        with counted_loop(b, i64(a.n), name="i") as i:
            base = b.add(x_row, b.mul(i, i64(a.inner)))
            with counted_loop(b, stop, start, name="j") as j:
                b.store(ir.Constant(a.dtype, 0.0), b.gep(dxs, [b.add(base, j)]))
        for side in range(2 if a.linear else 1):
            with counted_loop(b, i64(a.m), name="o") as o:
                entries = a.entries(b, o)
                dst = b.add(x_row, b.mul(entries[side], i64(a.inner)))
                src = b.add(y_row, b.mul(o, i64(a.inner)))
                weight = a.weights(b, entries[2])[side] if a.linear else None
                with counted_loop(b, stop, start, name="j") as j:
                    share = b.load(b.gep(gys, [b.add(src, j)]))
                    if weight is not None:
                        share = b.fmul(share, weight)
                    target = b.gep(dxs, [b.add(dst, j)])
                    b.store(b.fadd(b.load(target), share), target)

    _row_kernel(lowering, node, a, row_body)
