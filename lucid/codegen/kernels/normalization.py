"""The statistics of group, instance and layer norm: `moments`, the mean and biased variance of
each row of its input (the last axis, contiguous) in one pass over the data.

A work item is a block of rows (about CHUNK elements of work), so rows spread over the threads.
Each row is read once, shifted by its first element s: the loop accumulates sum(d) and sum(d^2),
d = x - s, in float64 with reassociable adds (LLVM vectorises it into several partial sums), and
mean = s + sum(d)/K, var = sum(d^2)/K - (sum(d)/K)^2. The shift is a value of the row, so
(s - mean)^2 <= K var: the subtraction cancels at most log10(K) of float64's 16 digits, and a row
far from zero (x = 1000 + N(0, 1e-2)) keeps float32-accurate statistics.
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ...ir.graph import Node
from ..irgen import F64, carried_loop, element_type, i64
from ..lowering import Lowering, lowers
from .reduction import REASSOC, _for_outputs, _output_blocks


@lowers("moments")
def lower_moments(lowering: Lowering, node: Node) -> None:
    x, y = node.inputs[0], node.output
    length = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    if rows == 0:
        return
    group, items = _output_blocks(rows, length)
    stored = element_type(y.dtype)

    def body(k, item):
        b = k.b
        xp, yp = k.pointer(x), k.pointer(y)

        def row(r):
            base = b.mul(r, i64(length))
            shift = _wide(b, b.load(b.gep(xp, [base])))
            zero = ir.Constant(F64, 0.0)
            with carried_loop(b, i64(length), 0, [zero, zero], name="j") as carry:
                d = b.fsub(_wide(b, b.load(b.gep(xp, [b.add(base, carry.index)]))), shift)
                total, squares = carry.values
                carry.next = [b.fadd(total, d, flags=REASSOC), b.fadd(squares, b.fmul(d, d), flags=REASSOC)]
            total, squares = carry.values
            offset = b.fdiv(total, ir.Constant(F64, float(length)))
            var = b.fsub(b.fdiv(squares, ir.Constant(F64, float(length))), b.fmul(offset, offset))
            var = b.select(b.fcmp_ordered("<", var, ir.Constant(F64, 0.0)), ir.Constant(F64, 0.0), var)
            for k_th, value in enumerate((b.fadd(shift, offset), var)):
                b.store(_narrow(b, value, stored), b.gep(yp, [b.add(r, i64(k_th * rows))]))

        _for_outputs(k, item, rows, group, row)

    lowering.kernel("moments", items, body)


def _wide(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    return v if v.type == F64 else b.fpext(v, F64)


def _narrow(b: ir.IRBuilder, v: ir.Value, stored: ir.Type) -> ir.Value:
    return v if stored == F64 else b.fptrunc(v, stored)
