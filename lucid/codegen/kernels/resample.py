"""Resampling kernels: `resample` (one axis of F.interpolate) and its transpose `resample_grad`.

Semantics are those of the NumPy reference (`lucid/ir/ops/resample.py`), whose `resample_table`
gives, per output index o along the axis, the source indices i0[o], i1[o] and the weight w[o] of
i1; the kernels read them from constant tables (the weights in the value's dtype).

Symbolic sizes: sizes become the call's values (`KernelBuilder.extent`; ints stay constants, so a
concrete graph's code is unchanged). When the resampled axis's own sizes are symbolic the tables
depend on the call: a first kernel (a work item per output index) computes them into scratch with
`resample_table`'s formulas in the same float32 / float64 operations, so they hold the same
numbers.

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
import numpy as np

from ...ir import symbolic
from ...ir.graph import Node
from ...ir.ops.resample import BLENDING, resample_table
from ..irgen import F32, F64, I64, counted_loop, element_type, i64
from ..lowering import Lowering, lowers
from .conv.primitives import constant_table
from .scalar import Scalars
from .shape import RowChunks


class _Axis:
    """The (outer, axis, inner) view of a resample node and its tables: constant ones, or (the
    resampled axis's sizes symbolic) scratch ones filled per call by a kernel emitted here."""

    def __init__(self, lowering: Lowering, node: Node, in_shape: tuple, out_shape: tuple):
        attrs, axis = node.attrs, node.attrs["axis"]
        self.linear = attrs["mode"] in BLENDING
        self.n, self.m = in_shape[axis], out_shape[axis]
        self.outer, self.inner = math.prod(in_shape[:axis]), math.prod(in_shape[axis + 1:])
        self.rows = RowChunks(self.outer, self.inner)
        self.dtype = element_type(node.output.dtype)
        self.types = [I64, I64, self.dtype][:3 if self.linear else 1]
        self.per_call = symbolic.is_symbolic((self.n, self.m))
        if self.per_call:
            self.tables = [lowering.scratch(self.m * 8) for _ in self.types]      # byte offsets
            _table_kernel(lowering, node, self)
            return
        i0, i1, w = resample_table(self.n, self.m, attrs["mode"], attrs["align_corners"], attrs["scale"])
        self.tables = [constant_table(lowering, "src0", i0)]
        if self.linear:
            self.tables += [constant_table(lowering, "src1", i1), constant_table(lowering, "weight1", w, self.dtype)]

    def entries(self, k, o) -> list:
        """[i0, i1, w] (or [i0]) at output index o."""
        b = k.b
        if self.per_call:
            return [b.load(b.gep(k.scratch_pointer(offset, ty), [o])) for offset, ty in zip(self.tables, self.types)]
        return [b.load(b.gep(t, [i64(0), o])) for t in self.tables]

    def weights(self, b: ir.IRBuilder, w) -> tuple:
        return b.fsub(ir.Constant(self.dtype, 1.0), w), w


def _table_kernel(lowering: Lowering, node: Node, a: _Axis) -> None:
    """The kernel writing `a`'s scratch tables for this call's sizes, an output index per work item."""
    def body(k, o):
        for entry, offset, ty in zip(_table_entries(k, o, a, node.attrs), a.tables, a.types):
            k.b.store(entry, k.b.gep(k.scratch_pointer(offset, ty), [o]))

    lowering.kernel(node.op + "_table", a.m, body)


def _table_entries(k, o, a: _Axis, attrs: dict) -> list:
    """[i0, i1, w] (or [i0]) at output index o, computed as `resample_table` computes them."""
    b = k.b
    n, m = k.extent(a.n), k.extent(a.m)
    last = b.sub(n, i64(1))
    source = (_linear_source if a.linear else _nearest_source)(b, o, n, m, attrs)
    i0 = _lowest(b, b.fptosi(Scalars(b, k.module).call("floor", source.type, source), I64), last)
    if not a.linear:
        return [i0]
    w = b.fsub(source, b.sitofp(i0, F64))
    w = b.select(b.fcmp_ordered("<", w, ir.Constant(F64, 0.0)), ir.Constant(F64, 0.0), w)
    w = b.select(b.fcmp_ordered(">", w, ir.Constant(F64, 1.0)), ir.Constant(F64, 1.0), w)
    return [i0, _lowest(b, b.add(i0, i64(1)), last), w if a.dtype == F64 else b.fptrunc(w, a.dtype)]


def _nearest_source(b: ir.IRBuilder, o, n, m, attrs: dict) -> ir.Value:
    """The float32 source coordinate of a nearest mode (PyTorch computes nearest indices in float32)."""
    scale = attrs["scale"]
    step = ir.Constant(F32, float(np.float32(scale))) if scale is not None else \
        b.fptrunc(b.fdiv(b.sitofp(n, F64), b.sitofp(m, F64)), F32)
    shift = ir.Constant(F32, 0.5 if attrs["mode"] == "nearest-exact" else 0.0)
    return b.fmul(b.fadd(b.sitofp(o, F32), shift), step)


def _linear_source(b: ir.IRBuilder, o, n, m, attrs: dict) -> ir.Value:
    """The float64 source coordinate of a blending mode."""
    position, scale = b.sitofp(o, F64), attrs["scale"]
    step = ir.Constant(F64, scale) if scale is not None else b.fdiv(b.sitofp(n, F64), b.sitofp(m, F64))
    if attrs["mode"] == "linear-asymmetric":
        return b.fmul(position, step)
    if attrs["align_corners"]:
        ratio = b.fdiv(b.sitofp(b.sub(n, i64(1)), F64), b.sitofp(b.sub(m, i64(1)), F64))
        return b.fmul(position, b.select(b.icmp_signed(">", m, i64(1)), ratio, ir.Constant(F64, 0.0)))
    source = b.fsub(b.fmul(b.fadd(position, ir.Constant(F64, 0.5)), step), ir.Constant(F64, 0.5))
    return b.select(b.fcmp_ordered(">", source, ir.Constant(F64, 0.0)), source, ir.Constant(F64, 0.0))


def _lowest(b: ir.IRBuilder, x, y) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def _row_kernel(lowering: Lowering, node: Node, a: _Axis, row_body) -> None:
    """A kernel calling `row_body(k, x_row, y_row, start, stop)` per row of its work items, with the
    offsets of that row in the input-sized and the output-sized value and its inner element range."""

    def body(k, item):
        b = k.b

        def rows(row, start, stop):
            row_body(k, b.mul(row, k.extent(a.n * a.inner)), b.mul(row, k.extent(a.m * a.inner)), start, stop)

        a.rows.emit(k, item, rows)

    lowering.kernel(node.op, a.rows.items, body)


@lowers("resample", run_time_extents=True)
def lower_resample(lowering: Lowering, node: Node) -> None:
    x, y = node.inputs[0], node.output
    a = _Axis(lowering, node, x.shape, y.shape)

    def row_body(k, x_row, y_row, start, stop):
        b, xs, ys = k.b, k.pointer(x), k.pointer(y)
        inner = k.extent(a.inner)
        with counted_loop(b, k.extent(a.m), name="o") as o:
            entries = a.entries(k, o)
            src0 = b.add(x_row, b.mul(entries[0], inner))
            dst = b.add(y_row, b.mul(o, inner))
            if a.linear:
                src1 = b.add(x_row, b.mul(entries[1], inner))
                w0, w1 = a.weights(b, entries[2])
            with counted_loop(b, stop, start, name="j") as j:
                value = b.load(b.gep(xs, [b.add(src0, j)]))
                if a.linear:
                    other = b.load(b.gep(xs, [b.add(src1, j)]))
                    value = b.fadd(b.fmul(value, w0), b.fmul(other, w1))
                b.store(value, b.gep(ys, [b.add(dst, j)]))

    _row_kernel(lowering, node, a, row_body)


@lowers("resample_grad", run_time_extents=True)
def lower_resample_grad(lowering: Lowering, node: Node) -> None:
    gy, dx = node.inputs[0], node.output
    a = _Axis(lowering, node, dx.shape, gy.shape)

    def row_body(k, x_row, y_row, start, stop):
        b, gys, dxs = k.b, k.pointer(gy), k.pointer(dx)
        inner = k.extent(a.inner)
        with counted_loop(b, k.extent(a.n), name="i") as i:
            base = b.add(x_row, b.mul(i, inner))
            with counted_loop(b, stop, start, name="j") as j:
                b.store(ir.Constant(a.dtype, 0.0), b.gep(dxs, [b.add(base, j)]))
        for side in range(2 if a.linear else 1):
            with counted_loop(b, k.extent(a.m), name="o") as o:
                entries = a.entries(k, o)
                dst = b.add(x_row, b.mul(entries[side], inner))
                src = b.add(y_row, b.mul(o, inner))
                weight = a.weights(b, entries[2])[side] if a.linear else None
                with counted_loop(b, stop, start, name="j") as j:
                    share = b.load(b.gep(gys, [b.add(src, j)]))
                    if weight is not None:
                        share = b.fmul(share, weight)
                    target = b.gep(dxs, [b.add(dst, j)])
                    b.store(b.fadd(b.load(target), share), target)

    _row_kernel(lowering, node, a, row_body)
