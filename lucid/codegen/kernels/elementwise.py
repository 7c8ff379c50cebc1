"""Elementwise kernels: one loop over the output computing a chain of elementwise operators.

`emit_map` writes a kernel for an output value computed by `nodes` (one operator, or a fused group)
from external operands that it reads with per-operand element strides (0 along broadcast axes).
Adjacent axes along which every operand is laid out alike are merged, the innermost axis is cut in
chunks of CHUNK elements, and each (row, chunk) is one work item, so even a 1-D map splits across
threads; the inner loop is contiguous in the output so LLVM vectorises it. Operands that are
one-element constants become immediates.

Symbolic sizes: shapes, strides, the chunk count and the work items are then sizes computed from the
call's dims (`KernelBuilder.extent`); axes merge only where the strides are the same form, a size-1
axis is one that is the int 1 (a symbol is never taken for 1: where it is 1 at run time, the loops run
once), and nothing about sizes is asked.
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from ...ir import symbolic
from ...ir.graph import Node, Value
from ...ir.ops import OpKind, all_ops
from ..irgen import counted_loop, i64, linear_index, unravel
from ..lowering import Lowering, lowers
from .scalar import Scalars, evaluate, register_type

CHUNK = 2048


def contiguous_strides(shape: tuple) -> tuple:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def broadcast_strides(in_shape: tuple, out_shape: tuple) -> tuple:
    """Element strides of a contiguous `in_shape` array read as broadcast to `out_shape`."""
    own = contiguous_strides(in_shape)
    lead = len(out_shape) - len(in_shape)
    return tuple(0 if i < lead or symbolic.same(in_shape[i - lead], 1) else own[i - lead] for i in range(len(out_shape)))


def operand_strides(node: Node, k: int) -> tuple:
    """How operand k of an elementwise node is indexed by the node's output index."""
    return broadcast_strides(node.inputs[k].shape, node.output.shape)


def simplify(shape: tuple, stride_sets: list) -> tuple[tuple, list] | None:
    """Drop size-1 axes and merge adjacent axes along which every stride set steps alike. None when
    the index space is empty; a 0-d space becomes (1,)."""
    if any(symbolic.same(n, 0) for n in shape):
        return None
    keep = [d for d, n in enumerate(shape) if not symbolic.same(n, 1)]
    if not keep:
        return (1,), [(0,) for _ in stride_sets]
    dims = [(shape[d], [s[d] for s in stride_sets]) for d in keep]
    merged = [list(dims[-1])]
    for n, strides in reversed(dims[:-1]):
        inner_n, inner = merged[-1]
        if all(symbolic.same(outer, s * inner_n) for outer, s in zip(strides, inner)):
            merged[-1] = [n * inner_n, inner]
        else:
            merged.append([n, strides])
    merged.reverse()
    return tuple(n for n, _ in merged), [tuple(d[1][k] for d in merged) for k in range(len(stride_sets))]


def emit_map(lowering: Lowering, name: str, nodes: list, output: Value) -> None:
    """A kernel storing into `output` the value of the last of `nodes`, computed elementwise from the
    nodes' outside operands (read with their broadcast strides)."""
    inside = {n.output for n in nodes}
    operands = [(node, k) for node in nodes for k, v in enumerate(node.inputs) if v not in inside]
    strides = [operand_strides(node, k) for node, k in operands]
    simple = simplify(output.shape, [contiguous_strides(output.shape)] + strides)
    if simple is None:                                   # an empty output: nothing to compute
        return
    shape, merged = simple
    out_strides, strides = merged[0], merged[1:]
    chunks = symbolic.ceil_div(shape[-1], CHUNK)        # shape[-1] >= 1: simplify dropped empty spaces
    rows = math.prod(shape[:-1])

    def body(k, item):
        b = k.b
        row, chunk = b.udiv(item, k.extent(chunks)), b.urem(item, k.extent(chunks))
        outer = unravel(b, row, [k.size(n) for n in shape[:-1]]) if len(shape) > 1 else []
        bases = [linear_index(b, outer, [k.size(n) for n in s[:-1]]) for s in [out_strides] + strides]
        start = b.mul(chunk, i64(CHUNK))
        last = k.extent(shape[-1])
        stop = b.select(b.icmp_signed("<", b.add(start, i64(CHUNK)), last), b.add(start, i64(CHUNK)), last)
        s = Scalars(b, k.module)
        with counted_loop(b, stop, start, name="j") as j:
            loads = {}
            for position, ((node, index), st) in enumerate(zip(operands, strides)):
                loads[(id(node), index)] = _load(k, s, node.inputs[index], bases[position + 1], j, st[-1])
            env = evaluate(s, nodes, lambda node, index: loads[(id(node), index)])
            store(k, env[nodes[-1].output], output, b.add(bases[0], j))

    lowering.kernel(name, rows * chunks, body)


def _load(k, s: Scalars, value: Value, base, j, inner_stride) -> ir.Value:
    b = k.b
    if symbolic.same(inner_stride, 0) or symbolic.same(inner_stride, 1):
        index = base if symbolic.same(inner_stride, 0) else b.add(base, j)
    else:
        index = b.add(base, b.mul(j, k.extent(inner_stride)))
    return load(k, s, value, index)


def load(k, s: Scalars, value: Value, index) -> ir.Value:
    """Element `index` of `value` as a register scalar (a one-element constant becomes an immediate)."""
    node = value.node
    if node is not None and node.is_constant and node.value.size == 1:
        return s.const(register_type(value.dtype), node.value.reshape(()).item())
    loaded = k.b.load(k.b.gep(k.pointer(value), [index]))
    return k.b.icmp_unsigned("!=", loaded, ir.Constant(loaded.type, 0)) if value.dtype.name == "bool" else loaded


def store(k, scalar: ir.Value, output: Value, index) -> None:
    b = k.b
    if output.dtype.name == "bool":
        scalar = b.zext(scalar, ir.IntType(8))
    b.store(scalar, b.gep(k.pointer(output), [index]))


@lowers(*(name for name, op in all_ops().items() if op.kind is OpKind.ELEMENTWISE), run_time_extents=True)
def lower_elementwise(lowering: Lowering, node: Node) -> None:
    emit_map(lowering, node.op, [node], node.output)
