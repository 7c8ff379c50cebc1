"""Small helpers for writing LLVM IR with llvmlite: types, constants, counted loops, vectors, intrinsics.

Every kernel lucid generates has the signature `void kernel(i8** table, i64* slots, i64 lo, i64 hi)`:
`table` holds the buffer addresses of one run (inputs, parameters, outputs, scratch), the kernel's
i-th buffer is `table[slots[i]]`, and [lo, hi) is the range of its work items this thread computes.
"""
from __future__ import annotations

from contextlib import contextmanager

import llvmlite.ir as ir

from ..ir.types import DType

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
F64 = ir.DoubleType()
I8P = I8.as_pointer()
VOID = ir.VoidType()
KERNEL_TYPE = ir.FunctionType(VOID, [I8P.as_pointer(), I64.as_pointer(), I64, I64])

_ELEMENT = {"float32": F32, "float64": F64, "int64": I64, "bool": I8}


def element_type(dtype: DType) -> ir.Type:
    """The LLVM type of one stored element (bool is stored as one byte holding 0 or 1)."""
    return _ELEMENT[dtype.name]


def nbytes(ty: ir.Type) -> int:
    """The bytes of one stored element of type `ty`."""
    return {F32: 4, F64: 8, I64: 8, I8: 1}[ty]


def i64(value: int) -> ir.Constant:
    return ir.Constant(I64, int(value))


def as_i64(value) -> ir.Value:
    """An i64 value as it is; a number as an i64 constant."""
    return value if isinstance(value, ir.Value) else i64(value)


class Carry:
    """The state of a `carried_loop`: its index, the carried values at the top of this iteration,
    and `next`, which the body sets to the values for the next iteration."""

    def __init__(self, index, values):
        self.index, self.values, self.next = index, values, []


@contextmanager
def carried_loop(b: ir.IRBuilder, stop, start, values: list, step: int = 1, name: str = "i", masked_tail: bool = False):
    """`for (i = start; i < stop; i += step)` carrying `values` through the iterations as phis (no
    stack slot needed): the body sets `carry.next`; after the loop, `carry.values` hold the results.
    With `masked_tail`, see `vectorize_masked`."""
    before = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    index = b.phi(I64, name)
    index.add_incoming(as_i64(start), before)
    phis = []
    for value in values:
        phis.append(b.phi(value.type))
        phis[-1].add_incoming(value, before)
    b.cbranch(b.icmp_signed("<", index, as_i64(stop)), body, done)
    b.position_at_end(body)
    carry = Carry(index, phis)
    yield carry
    latch = b.block
    index.add_incoming(b.add(index, i64(step)), latch)
    for phi, value in zip(phis, carry.next):
        phi.add_incoming(value, latch)
    back_edge = b.branch(head)
    if masked_tail:
        vectorize_masked(back_edge)
    b.position_at_end(done)


def vectorize_masked(back_edge: ir.Instruction) -> None:
    """Hint LLVM's loop vectoriser, if it vectorises the loop closed by `back_edge`, to mask its last
    partial vector rather than run a scalar tail: a conv's output row of 28 points becomes two 16-lane
    vectors, where its own choice was six of 4 and 4 scalar iterations. Only a hint: the width
    stays the vectoriser's choice, a loop it cannot vectorise (a libm call) or a target without
    masked loads and stores (no AVX) keeps its scalar code, and floating-point sums keep their order."""
    module = back_edge.parent.parent.module
    hint = module.add_metadata([ir.MetaDataString(module, "llvm.loop.vectorize.predicate.enable"),
                                ir.Constant(ir.IntType(1), 1)])
    # A loop's identifier is a node of its own whose first operand is itself; Module.add_metadata
    # would hand two loops the same node, so it is made here.
    loop_id = ir.values.MDValue(module, [], name=str(len(module.metadata)))
    loop_id.operands = (loop_id, hint)
    back_edge.set_metadata("llvm.loop", loop_id)


@contextmanager
def counted_loop(b: ir.IRBuilder, stop, start=0, step: int = 1, name: str = "i", masked_tail: bool = False):
    """`for (i = start; i < stop; i += step)`; yields the induction variable (i64). With
    `masked_tail`, see `vectorize_masked`."""
    with carried_loop(b, stop, start, [], step, name, masked_tail) as carry:
        yield carry.index


def linear_index(b: ir.IRBuilder, indices: list, strides: list, offset=0) -> ir.Value:
    """offset + sum(index_k * stride_k), skipping zero strides (an int stride; or an i64 value)."""
    total = as_i64(offset)
    for index, stride in zip(indices, strides):
        if isinstance(stride, ir.Value):
            total = b.add(total, b.mul(index, stride))
        elif stride:
            total = b.add(total, index if stride == 1 else b.mul(index, i64(stride)))
    return total


def unravel(b: ir.IRBuilder, flat: ir.Value, shape: tuple) -> list:
    """The multi-index (row-major) of `flat` in an array of `shape` (ints or i64 values)."""
    indices = []
    for n in reversed(shape[1:]):
        indices.append(b.urem(flat, as_i64(n)))
        flat = b.udiv(flat, as_i64(n))
    indices.append(flat)
    return indices[::-1]


def buffer(b: ir.IRBuilder, table: ir.Value, slot: int, element: ir.Type) -> ir.Value:
    """The address held in `table[slot]`, as a pointer to `element`."""
    return b.bitcast(b.load(b.gep(table, [i64(slot)])), element.as_pointer())


def intrinsic(module: ir.Module, name: str, ret: ir.Type, args: list) -> ir.Function:
    """Declare (once) and return an LLVM intrinsic or a C library function."""
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, ir.FunctionType(ret, args), name)


def vector_type(element: ir.Type, lanes: int) -> ir.VectorType:
    return ir.VectorType(element, lanes)


def splat(b: ir.IRBuilder, scalar: ir.Value, lanes: int) -> ir.Value:
    vtype = vector_type(scalar.type, lanes)
    one = b.insert_element(ir.Constant(vtype, ir.Undefined), scalar, i64(0))
    return b.shuffle_vector(one, ir.Constant(vtype, ir.Undefined), ir.Constant(vector_type(I32, lanes), [0] * lanes))


def load_vector(b: ir.IRBuilder, base: ir.Value, index: ir.Value, lanes: int) -> ir.Value:
    pointer = b.bitcast(b.gep(base, [index]), vector_type(base.type.pointee, lanes).as_pointer())
    return b.load(pointer, align=4)


def float_suffix(element: ir.Type) -> str:
    """How LLVM's intrinsic names spell a float element type: "f32" or "f64"."""
    return "f32" if element == F32 else "f64"


def masked_load_vector(b: ir.IRBuilder, module: ir.Module, base: ir.Value, index: ir.Value, mask: ir.Value) -> ir.Value:
    """The vector at base[index...] with the lanes where `mask` (a vector of i1) is false read as 0 and
    never touched in memory (so they may lie outside the buffer)."""
    element, lanes = base.type.pointee, mask.type.count
    vtype = vector_type(element, lanes)
    load = intrinsic(module, f"llvm.masked.load.v{lanes}{float_suffix(element)}.p0", vtype,
                     [vtype.as_pointer(), I32, mask.type, vtype])
    pointer = b.bitcast(b.gep(base, [index]), vtype.as_pointer())
    return b.call(load, [pointer, ir.Constant(I32, 4), mask, ir.Constant(vtype, None)])


def masked_gather(b: ir.IRBuilder, module: ir.Module, base: ir.Value, indices: ir.Value, mask: ir.Value) -> ir.Value:
    """The vector of base[indices[j]] (`indices` a vector of i64), 0 in the lanes where `mask` is false,
    whose addresses are never touched (so they may lie outside the buffer)."""
    element, lanes = base.type.pointee, mask.type.count
    vtype, pointers = vector_type(element, lanes), vector_type(base.type, lanes)
    size = ir.Constant(indices.type, [nbytes(element)] * lanes)
    addresses = b.add(splat(b, b.ptrtoint(base, I64), lanes), b.mul(indices, size))
    gather = intrinsic(module, f"llvm.masked.gather.v{lanes}{float_suffix(element)}.v{lanes}p0", vtype,
                       [pointers, I32, mask.type, vtype])
    return b.call(gather, [b.inttoptr(addresses, pointers), ir.Constant(I32, 4), mask, ir.Constant(vtype, None)])


def masked_store_vector(b: ir.IRBuilder, module: ir.Module, value: ir.Value, base: ir.Value, index: ir.Value,
                        mask: ir.Value) -> None:
    """Store the lanes of `value` where `mask` is true at base[index...]; the others are not touched."""
    vtype = value.type
    store = intrinsic(module, f"llvm.masked.store.v{vtype.count}{float_suffix(vtype.element)}.p0", ir.VoidType(),
                      [vtype, vtype.as_pointer(), I32, mask.type])
    b.call(store, [value, b.bitcast(b.gep(base, [index]), vtype.as_pointer()), ir.Constant(I32, 4), mask])


def store_vector(b: ir.IRBuilder, value: ir.Value, base: ir.Value, index: ir.Value) -> None:
    b.store(value, b.bitcast(b.gep(base, [index]), value.type.as_pointer()), align=4)


def transpose(b: ir.IRBuilder, rows: list) -> list:
    """The columns of the square matrix whose rows are the vectors `rows` (n vectors of n lanes, n a
    power of two): log2(n) rounds of two-vector shuffles, round `step` swapping bit `step` of every
    element's row and column index."""
    n = len(rows)
    step = 1
    while step < n:
        low_mask = ir.Constant(vector_type(I32, n), [n + k - step if k & step else k for k in range(n)])
        high_mask = ir.Constant(vector_type(I32, n), [n + k if k & step else k + step for k in range(n)])
        swapped = list(rows)
        for i in (i for i in range(n) if not i & step):
            swapped[i] = b.shuffle_vector(rows[i], rows[i + step], low_mask)
            swapped[i + step] = b.shuffle_vector(rows[i], rows[i + step], high_mask)
        rows, step = swapped, step * 2
    return rows
