"""IR building blocks the conv kernels share: index arithmetic (`strided_offset`, `at_most`),
constant tables (`constant_table`), the in-register transpose of rows into a stack array
(`transposed_rows`), a kernel zeroing scratch (`emit_zero`), where a kernel's buffer lives (`Kept`,
`region_pointer`) and the test of a row of flag bytes (`any_byte_set`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import llvmlite.ir as ir

from ....ir.graph import Value
from ...irgen import counted_loop, element_type, i64, store_vector, transpose
from ...lowering import Lowering

I8 = ir.IntType(8)
FLAG_WORD = 8             # flag bytes read per load


@dataclass(frozen=True)
class Kept:
    """A byte offset in the graph's persistent memory (`Lowering.persistent`: kept between calls);
    a plain int offset is in the workspace (this node's scratch, dead after its kernels)."""

    offset: int

    @staticmethod
    def reserve(lowering: Lowering, nbytes: int) -> "Kept":
        return Kept(lowering.persistent(nbytes))


def region_pointer(k, where, element: ir.Type) -> ir.Value:
    """Pointer to `where`, a workspace offset, a `Kept` one or a graph value, typed as `element`."""
    if isinstance(where, Kept):
        return k.persistent_pointer(where.offset, element)
    if isinstance(where, Value):
        return k.pointer(where, element)
    return k.scratch_pointer(where, element)


def any_byte_set(k, flags: ir.Value, count: int) -> ir.Value:
    """i1: some byte of flags[0:count] is not 0 (read FLAG_WORD bytes at a time)."""
    b = k.b
    word = ir.IntType(8 * FLAG_WORD)
    words, rest = divmod(count, FLAG_WORD)
    seen = k.alloca(word, name="flags_seen")
    b.store(ir.Constant(word, 0), seen)
    with counted_loop(b, words, name="fw") as w:
        pointer = b.bitcast(b.gep(flags, [b.mul(w, i64(FLAG_WORD))]), word.as_pointer())
        b.store(b.or_(b.load(seen), b.load(pointer, align=1)), seen)
    total = b.load(seen)
    for i in range(rest):
        total = b.or_(total, b.zext(b.load(b.gep(flags, [i64(words * FLAG_WORD + i)])), word))
    return b.icmp_unsigned("!=", total, ir.Constant(word, 0))


def constant_table(lowering: Lowering, name: str, values, element: ir.Type = ir.IntType(64)) -> ir.GlobalVariable:
    """A constant array (of i64 unless `element` says otherwise) in the module of the next kernel,
    named `name` (numbered if taken)."""
    kind = ir.ArrayType(element, max(len(values), 1))
    module = lowering.module
    name = next(n for n in (f"{name}{i}" if i else name for i in range(len(module.globals) + 1))
                if n not in module.globals)
    table = ir.GlobalVariable(module, kind, name)
    number = int if isinstance(element, ir.IntType) else float
    table.initializer = ir.Constant(kind, [number(v) for v in values] or [0])
    table.global_constant = True
    table.linkage = "internal"
    return table


def strided_offset(b: ir.IRBuilder, base: int, indices, strides) -> ir.Value:
    """base + sum of index * stride (terms of stride 0 left out)."""
    total = i64(base)
    for index, stride in zip(indices, strides):
        if stride:
            total = b.add(total, b.mul(index, i64(stride)))
    return total


def transposed_rows(k, element: ir.Type, rows: int, lanes: int, row_vector: Callable) -> tuple:
    """A stack array `columns` with columns[j * stride + r] = row_vector(r)[j] for r < rows, j < lanes,
    and `stride` (rows rounded up to whole tiles): each tile of `lanes` rows is transposed in
    registers (element by element it would take a gather or a scatter per vector). The last tile
    reads its last row again for the rows past the end."""
    b = k.b
    tiles = math.ceil(rows / lanes)
    columns = k.alloca(element, lanes * tiles * lanes, name="columns")
    with counted_loop(b, tiles, name="rt") as rt:
        first = b.mul(rt, i64(lanes))
        vectors = [row_vector(at_most(b, b.add(first, i64(i)), rows - 1)) for i in range(lanes)]
        for j, column in enumerate(transpose(b, vectors)):
            store_vector(b, column, columns, b.add(first, i64(j * tiles * lanes)))
    return columns, tiles * lanes


def at_most(b: ir.IRBuilder, value, most: int):
    """min(value, most), signed."""
    return b.select(b.icmp_signed("<", value, i64(most)), value, i64(most))


def emit_zero(lowering: Lowering, offset: int, count: int, dtype, name: str) -> None:
    """A kernel writing `count` zeros of `dtype` to the scratch at `offset` (it waits for no kernel)."""
    element = element_type(dtype)
    _emit_chunks(lowering, offset, count, element, name, lambda b, data, i: b.store(ir.Constant(element, 0.0), b.gep(data, [i])),
                 waits=False)


def _emit_chunks(lowering: Lowering, offset: int, count: int, element, name: str, each, waits: bool = True) -> None:
    """A kernel calling `each(b, data, i)` for i < count over the scratch at `offset`, in chunks of
    4096 elements (its work items), each walked in order."""
    chunk = 4096

    def body(k, item):
        b = k.b
        data = k.scratch_pointer(offset, element)
        start = b.mul(item, i64(chunk))
        stop = b.add(start, i64(chunk))
        stop = b.select(b.icmp_signed("<", stop, i64(count)), stop, i64(count))
        with counted_loop(b, stop, start, name="i") as i:
            each(b, data, i)

    lowering.kernel(name, math.ceil(count / chunk), body, waits)
