"""The statistics of the norms: `moments`, the mean and biased variance of its input over its
reduced axes, in one pass over the data.

The input's axes are merged as for the other reductions (`reduction.Layout`): group, instance and
layer norm reduce contiguous rows; batch norm reduces (N, spatial) for each channel, so a channel's
data is N contiguous runs. A work item is a block of outputs (about CHUNK elements of work), so
outputs spread over the threads. Each output's elements are read once, shifted by the first of them,
s: the loop accumulates sum(d) and sum(d^2), d = x - s, in float64 with reassociable adds (LLVM
vectorises the innermost loop into several partial sums), and mean = s + sum(d)/K,
var = sum(d^2)/K - (sum(d)/K)^2. The shift is one of the values, so (s - mean)^2 <= K var: the
subtraction cancels at most log10(K) of float64's 16 digits, and data far from zero
(x = 1000 + N(0, 1e-2)) keeps float32-accurate statistics.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ...ir.graph import Node
from ..irgen import F64, element_type, i64
from ..lowering import Lowering, lowers
from .reduction import REASSOC, Layout, _for_outputs, _kept_base, _output_blocks, loop_nest


@lowers("moments")
def lower_moments(lowering: Lowering, node: Node) -> None:
    x, y = node.inputs[0], node.output
    layout = Layout(x.shape, node.attrs["axes"])
    outputs, count = layout.outputs, layout.count
    if y.type.size == 0:
        return
    group, items = _output_blocks(outputs, count)
    stored = element_type(y.dtype)

    def body(k, item):
        b = k.b
        xp, yp = k.pointer(x), k.pointer(y)
        total, squares = k.alloca(F64, name="total"), k.alloca(F64, name="squares")

        def output(o):
            base = _kept_base(b, layout, o)
            shift = _wide(b, b.load(b.gep(xp, [base])))
            for acc in (total, squares):
                b.store(ir.Constant(F64, 0.0), acc)

            def step(index):
                d = b.fsub(_wide(b, b.load(b.gep(xp, [index]))), shift)
                b.store(b.fadd(b.load(total), d, flags=REASSOC), total)
                b.store(b.fadd(b.load(squares), b.fmul(d, d), flags=REASSOC), squares)

            loop_nest(b, layout.reduced, base, step)
            offset = b.fdiv(b.load(total), ir.Constant(F64, float(count)))
            var = b.fsub(b.fdiv(b.load(squares), ir.Constant(F64, float(count))), b.fmul(offset, offset))
            var = b.select(b.fcmp_ordered("<", var, ir.Constant(F64, 0.0)), ir.Constant(F64, 0.0), var)
            for k_th, value in enumerate((b.fadd(shift, offset), var)):
                b.store(_narrow(b, value, stored), b.gep(yp, [b.add(o, i64(k_th * outputs))]))

        _for_outputs(k, item, outputs, group, output)

    lowering.kernel("moments", items, body)


def _wide(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    return v if v.type == F64 else b.fpext(v, F64)


def _narrow(b: ir.IRBuilder, v: ir.Value, stored: ir.Type) -> ir.Value:
    return v if stored == F64 else b.fptrunc(v, stored)
