"""Matrix multiplication: (..., M, K) @ (..., K, N) -> (..., M, N) with broadcast batch axes.

A work item is a block of output rows (or, for long rows, a chunk of COLUMNS columns of one row),
computed in i-k-j order: the row chunk is zeroed, then for each k it accumulates a[m, k] * b[k, j]
over the chunk, so the inner loop runs along contiguous rows of b and of the output and LLVM
vectorises it (the multiply-add may contract to an FMA). Operands of a narrower dtype than the
result are widened as they are loaded.

Symbolic sizes: the sizes and strides become the call's values (`KernelBuilder.size`; ints stay
ints, so a concrete graph's code is unchanged), and the row chunks are counted per call.
"""
from __future__ import annotations

import math

from ...ir import symbolic
from ...ir.graph import Node
from ..irgen import counted_loop, element_type, i64, linear_index, unravel
from ..lowering import Lowering, lowers
from .elementwise import broadcast_strides
from .shape import RowChunks

COLUMNS = 256
CONTRACT = ("contract",)


@lowers("matmul", run_time_extents=True)
def lower_matmul(lowering: Lowering, node: Node) -> None:
    a, b_, y = node.inputs[0], node.inputs[1], node.output
    m, kk, n = a.shape[-2], a.shape[-1], b_.shape[-1]
    batch = y.shape[:-2]
    a_batch = tuple(s * m * kk for s in broadcast_strides(a.shape[:-2], batch))
    b_batch = tuple(s * kk * n for s in broadcast_strides(b_.shape[:-2], batch))
    rows = RowChunks(math.prod(batch) * m, n, COLUMNS)
    out_type = element_type(y.dtype)
    if symbolic.same(rows.items, 0):
        return

    def load(k, value, index):
        v = k.b.load(k.b.gep(k.pointer(value), [index]))
        return v if v.type == out_type else k.b.fpext(v, out_type)

    def body(k, item):
        b = k.b
        yp = k.pointer(y)
        zero = out_type(0.0)
        rows_of, width, depth = k.extent(m), k.extent(n), k.extent(kk)
        sized = lambda sizes: tuple(k.size(s) for s in sizes)

        def row_body(row, start, stop):
            flat, i = b.udiv(row, rows_of), b.urem(row, rows_of)
            index = unravel(b, flat, sized(batch)) if batch else []
            a_row = b.add(linear_index(b, index, sized(a_batch)), b.mul(i, depth))
            b_base = linear_index(b, index, sized(b_batch))
            out_row = b.mul(row, width)
            with counted_loop(b, stop, start, name="j") as j:
                b.store(zero, b.gep(yp, [b.add(out_row, j)]))
            with counted_loop(b, depth, name="k") as p:
                av = load(k, a, b.add(a_row, p))
                b_row = b.add(b_base, b.mul(p, width))
                with counted_loop(b, stop, start, name="j") as j:
                    where = b.gep(yp, [b.add(out_row, j)])
                    product = b.fmul(av, load(k, b_, b.add(b_row, j)), flags=CONTRACT)
                    b.store(b.fadd(b.load(where), product, flags=CONTRACT), where)

        rows.emit(k, item, row_body)

    lowering.kernel("matmul", rows.items, body, compute_bound=True)
