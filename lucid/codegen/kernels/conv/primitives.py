"""IR building blocks the conv kernels share: index arithmetic (`strided_offset`, `at_most`,
`positions_inside`), sizes
known at run time (`sized`), constant tables (`constant_table`; `size_table` for sizes that may be
symbolic), the in-register transpose of rows into a stack array (`transposed_rows`), a kernel
zeroing scratch (`emit_zero`), where a kernel's buffer lives (`Kept`, `region_pointer`) and the
test of a row of flag bytes (`any_byte_set`).

Sizes. The Python side of a lowering computes sizes, strides and offsets as ints, or as symbolic
sizes (`lucid.ir.symbolic.Expr`) when the graph has symbolic dimensions (only the batch and spatial
extents are: channels and kernel sizes stay ints). A kernel body turns them into what the IR helpers
take with `sized(k, ...)`: an int stays an int (so a concrete graph's code is what it always was), a
symbolic size becomes its i64 value for this call (`KernelBuilder.extent`). The helpers here and in
irgen take either (`as_i64`)."""
from __future__ import annotations

import dataclasses
from typing import Callable

import llvmlite.ir as ir

from ....ir import symbolic
from ....ir.graph import Value
from ...irgen import as_i64, counted_loop, element_type, i64, linear_index, splat, store_vector, transpose, vector_type
from ...lowering import Lowering
from ..elementwise import contiguous_strides, load, operand_strides
from ..scalar import Scalars, convert, evaluate

I8 = ir.IntType(8)
FLAG_WORD = 8             # flag bytes read per load


@dataclasses.dataclass(frozen=True)
class Kept:
    """A byte offset in the graph's persistent memory (`Lowering.persistent`: kept between calls);
    a plain int offset is in the workspace (this node's scratch, dead after its kernels)."""

    offset: int

    @staticmethod
    def reserve(lowering: Lowering, nbytes: int) -> "Kept":
        return Kept(lowering.persistent(nbytes))


def region_pointer(k, where, element: ir.Type) -> ir.Value:
    """Pointer to `where`, a workspace offset, a `Kept` one, a graph value or already a pointer (a
    stack array), typed as `element`."""
    if isinstance(where, ir.Value):
        return where
    if isinstance(where, Kept):
        return k.persistent_pointer(where.offset, element)
    if isinstance(where, Value):
        return k.pointer(where, element)
    return k.scratch_pointer(where, element)


def aligned_stack_array(k, element: ir.Type, count: int, name: str = "") -> ir.Value:
    """A stack array of `count` elements aligned to a cache line, so its vectors never straddle two."""
    slot = k.alloca(element, count, name=name)
    slot.align = 64
    return slot


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


def sized(k, value):
    """`value` (a size, a tuple of them, or a frozen dataclass of sizes such as `Direct`) with every
    symbolic size replaced by its i64 value in kernel `k`; ints are left as they are."""
    if isinstance(value, symbolic.Expr):
        return k.extent(value)
    if isinstance(value, (tuple, list)):
        return tuple(sized(k, v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: sized(k, getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


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


def size_table(lowering: Lowering, name: str, values):
    """A table of i64 `values`, made just before the kernel reading it: a `constant_table` when they
    are all ints, else the sizes themselves, which `table_array` stores on the kernel's stack."""
    return tuple(values) if symbolic.is_symbolic(tuple(values)) else constant_table(lowering, name, values)


def table_array(k, table) -> ir.Value:
    """The `[n x i64]` array of a `size_table` in kernel `k`: the constant table, or (symbolic sizes)
    a stack array filled with this call's values."""
    if isinstance(table, ir.GlobalVariable):
        return table
    array = k.alloca(ir.ArrayType(ir.IntType(64), max(len(table), 1)), name="sizes")
    for index, value in enumerate(sized(k, table)):
        k.b.store(as_i64(value), k.b.gep(array, [i64(0), i64(index)]))
    return array


def strided_offset(b: ir.IRBuilder, base, indices, strides) -> ir.Value:
    """base + sum of index * stride (terms of int stride 0 left out); base and strides ints or i64
    values (see `sized`)."""
    total = as_i64(base)
    for index, stride in zip(indices, strides):
        if isinstance(stride, ir.Value) or stride:
            total = b.add(total, b.mul(index, as_i64(stride)))
    return total


def transposed_rows(k, element: ir.Type, rows, lanes: int, row_vector: Callable) -> tuple:
    """A stack array `columns` with columns[j * stride + r] = row_vector(r)[j] for r < rows, j < lanes,
    and `stride` (rows rounded up to whole tiles): each tile of `lanes` rows is transposed in
    registers (element by element it would take a gather or a scatter per vector). The last tile
    reads its last row again for the rows past the end. `rows` is an int or a symbolic size (the
    array is then sized per call)."""
    b = k.b
    tiles = symbolic.ceil_div(rows, lanes)
    columns = k.alloca(element, sized(k, lanes * tiles * lanes), name="columns")
    stride = sized(k, tiles * lanes)
    with counted_loop(b, sized(k, tiles), name="rt") as rt:
        first = b.mul(rt, i64(lanes))
        vectors = [row_vector(at_most(b, b.add(first, i64(i)), sized(k, rows - 1))) for i in range(lanes)]
        for j, column in enumerate(transpose(b, vectors)):
            offset = i64(j * stride) if isinstance(stride, int) else b.mul(stride, i64(j))
            store_vector(b, column, columns, b.add(first, offset))
    return columns, stride


def positions_inside(b: ir.IRBuilder, first, lanes: int, size):
    """The vector of i1: first + j inside [0, size), for j < lanes (`size` an int or an i64 value)."""
    itype = vector_type(ir.IntType(64), lanes)
    positions = b.add(splat(b, first, lanes), ir.Constant(itype, list(range(lanes))))
    sizes = splat(b, size, lanes) if isinstance(size, ir.Value) else ir.Constant(itype, [size] * lanes)
    return b.icmp_unsigned("<", positions, sizes)


def in_range(b: ir.IRBuilder, index, size) -> ir.Value:
    """i1: 0 <= index < size (one unsigned compare: negative indices are huge); `size` an int or an
    i64 value."""
    return b.icmp_unsigned("<", index, as_i64(size))


def sum_of(b: ir.IRBuilder, *values) -> ir.Value:
    """The integer sum of `values` (i64 values), added left to right."""
    total = values[0]
    for value in values[1:]:
        total = b.add(total, value)
    return total


def at_most(b: ir.IRBuilder, value, most):
    """min(value, most), signed; `most` an int or an i64 value."""
    return b.select(b.icmp_signed("<", value, as_i64(most)), value, as_i64(most))


def store_zero(b: ir.IRBuilder, data: ir.Value, index) -> None:
    """data[index] = 0 (a float pointer)."""
    b.store(ir.Constant(data.type.pointee, 0.0), b.gep(data, [index]))


def zero_elements(b: ir.IRBuilder, data: ir.Value, count: int) -> None:
    """data[0 .. count) = 0, one element at a time (LLVM vectorises the loop)."""
    with counted_loop(b, count, name="z") as z:
        store_zero(b, data, z)


def emit_zero(lowering: Lowering, offset, count, dtype, name: str) -> None:
    """A kernel writing `count` zeros of `dtype` to the scratch at `offset` (it waits for no kernel)."""
    _emit_chunks(lowering, offset, count, element_type(dtype), name, store_zero, waits=False)


def _emit_chunks(lowering: Lowering, offset, count, element, name: str, each, waits: bool = True) -> None:
    """A kernel calling `each(b, data, i)` for i < count over the scratch at `offset`, in chunks of
    4096 elements (its work items), each walked in order."""
    chunk = 4096

    def body(k, item):
        b = k.b
        data = k.scratch_pointer(offset, element)
        start = b.mul(item, i64(chunk))
        stop = b.add(start, i64(chunk))
        stop = b.select(b.icmp_signed("<", stop, k.extent(count)), stop, k.extent(count))
        with counted_loop(b, stop, start, name="i") as i:
            each(b, data, i)

    lowering.kernel(name, symbolic.ceil_div(count, chunk), body, waits, moves_data=True)


def elementwise_at(k, nodes: tuple, shape: tuple, flat, index5: tuple, known: dict):
    """The last of `nodes` (elementwise, of output `shape`) at one element: its flat index and its
    (n, c, d, h, w) index; values in `known` are given, every other operand is read at the element's
    index (broadcast along its size-1 axes)."""
    s = Scalars(k.b, k.module)
    index = index5[:2] + index5[5 - (len(shape) - 2):]

    def operand(node, position):
        v = node.inputs[position]
        if v in known:
            return known[v]
        strides = operand_strides(node, position)
        contiguous = symbolic.same(strides, contiguous_strides(shape))
        at = flat if contiguous else linear_index(k.b, list(index), sized(k, strides))
        return load(k, s, v, at)

    return evaluate(s, list(nodes), operand)[nodes[-1].output]


def per_channel_operands(k, nodes: tuple, n, c, given) -> dict:
    """{operand: its value}, read once here, for every operand of the elementwise `nodes` that is the
    same at every spatial point of channel `c` of sample `n` (a norm's per-channel scale and
    shift), but those in `given`: for `elementwise_at` in a loop over points, whose stores LLVM
    cannot tell from these loads, so it would read them at every point and leave the loop scalar."""
    s = Scalars(k.b, k.module)
    skipped = set(given) | {node.output for node in nodes}
    operands = {}
    for node in nodes:
        for position, value in enumerate(node.inputs):
            strides = operand_strides(node, position)
            if value in operands or value in skipped or not all(symbolic.same(t, 0) for t in strides[2:]):
                continue
            operands[value] = load(k, s, value, linear_index(k.b, [n, c], sized(k, strides[:2])))
    return operands


def element_as(k, value: Value, at, dtype) -> ir.Value:
    """Element `at` of `value` converted to `dtype` (a concatenation's input, of a dtype its output
    promotes)."""
    s = Scalars(k.b, k.module)
    return convert(s, load(k, s, value, at), value.dtype, dtype)
