"""Sizes known at run time: how kernels and the entry point compute a symbolic size from the call's dims.

A graph with symbolic dimensions (`lucid.ir.symbolic`) is compiled once for every size. Each call
passes the values of its symbols as the **dims** array: an `int64` per symbol, in the order of
`BufferTable.symbols` (the names sorted), whose address is in the buffer table's dims slot
(`BufferTable.dims_slot`, the last slot; a concrete graph has none). `emit_size` turns a size into an
i64 value: a constant when the size is an int (so a concrete graph's code is what it always was),
else code evaluating the size's canonical form (`symbolic.Expr`: a polynomial over the symbols and
floor divisions by positive ints) from the dims.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir import symbolic
from .irgen import i64


def emit_size(b: ir.IRBuilder, size, dims: ir.Value | None, symbols: tuple) -> ir.Value:
    """`size` (an int or a symbolic Expr) as an i64; `dims` points at the symbols' values (in the
    order of `symbols`) and may be None when `size` is an int."""
    return symbolic.fold(size, i64, lambda dim: b.load(b.gep(dims, [i64(symbols.index(dim.name))]), name=dim.name),
                         lambda inner, k: floor_div(b, inner, k), b.mul, b.add)


def floor_div(b: ir.IRBuilder, x: ir.Value, divisor: int) -> ir.Value:
    """x // divisor rounded towards minus infinity (divisor > 0), as Python and the Expr forms do."""
    quotient, remainder = b.sdiv(x, i64(divisor)), b.srem(x, i64(divisor))
    return b.sub(quotient, b.zext(b.icmp_signed("<", remainder, i64(0)), quotient.type))
